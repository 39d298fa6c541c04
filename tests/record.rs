//! Integration tests of `record` and `plot` against a real server on port
//! 0, with a client held still by backpressure.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;

use support::{
    Server, TempDir, admin, client_json, connect, fill_until_blocked, json_number, read_exact,
    run_binary,
};
use tcp_reactor::client::record::{HEADER, Sample};
use tcp_reactor::plot::LAYERS;

fn server() -> Server {
    Server::start(&["-l", "127.0.0.1:0=echo", "-l", "127.0.0.1:0=admin"])
}

/// An echo client that wrote until its own send blocked and reads nothing:
/// the server holds it paused, its window shut.
fn paused_client(server: &Server) -> TcpStream {
    let mut hog = connect(server.addr("echo"));
    fill_until_blocked(&mut hog);
    hog
}

/// `record --secs 1 --interval 100` of `server`, plus `extra` flags, into
/// `out`; asserts it succeeded.
fn record(server: &Server, out: &Path, extra: &[&str]) {
    let addr = server.addr("admin").to_string();
    let out_arg = out.to_str().expect("temp paths are UTF-8");
    let mut args = vec![
        "record",
        &addr,
        "--secs",
        "1",
        "--interval",
        "100",
        "-o",
        out_arg,
    ];
    args.extend_from_slice(extra);
    let run = run_binary(&args, b"");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("stopped: time was up"), "{stderr}");
}

fn samples(path: &Path) -> Vec<Sample> {
    csv::Reader::from_path(path)
        .expect("open the CSV")
        .deserialize()
        .collect::<Result<_, _>>()
        .expect("every row parses")
}

#[test]
fn a_recording_of_a_paused_echo_client_shows_it_held_by_the_peer_window_then_plots() {
    let server = server();
    let hog = paused_client(&server);
    let peer = hog.local_addr().unwrap().to_string();
    let dir = TempDir::new("record");
    let csv = dir.path().join("run.csv");
    record(&server, &csv, &[]);

    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().next(), Some(HEADER.join(",").as_str()));
    let rows = samples(&csv);
    // One a snapshot, every 100 ms for a second (the first comes at once).
    let mine: Vec<&Sample> = rows.iter().filter(|r| r.peer == peer).collect();
    assert!(mine.len() >= 5, "{} rows for {peer}:\n{text}", mine.len());
    for r in &mine {
        assert_eq!(r.service, "echo");
        assert_eq!(r.limit, "peer-window", "{r:?}");
        assert_eq!(r.state, "paused", "{r:?}");
        assert!(r.send_buf_used > 0, "{r:?}");
        assert!(r.kernel_send_queue > Some(0), "{r:?}");
    }
    assert!(
        rows.iter().all(|r| r.service != "admin"),
        "admin connections are left out without --conn"
    );
    let times: Vec<f64> = mine.iter().map(|r| r.time_secs).collect();
    assert_eq!(times[0], 0.0);
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");

    let svg = dir.path().join("run.svg");
    let run = run_binary(
        &["plot", csv.to_str().unwrap(), "-o", svg.to_str().unwrap()],
        b"",
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg"), "{}", &picture[..80]);
    assert!(picture.trim_end().ends_with("</svg>"));
    for layer in LAYERS {
        assert!(picture.contains(layer.name), "legend names {}", layer.name);
    }
    assert!(picture.contains("peer-window") && picture.contains(&peer));
    assert!(picture.contains("bytes waiting") && picture.contains("seconds"));
}

#[test]
fn conn_limits_the_recording_to_that_connection() {
    let server = server();
    let mut quiet = connect(server.addr("echo"));
    quiet.write_all(b"hi").unwrap();
    assert_eq!(read_exact(&mut quiet, 2), b"hi");
    let hog = paused_client(&server);
    let json = admin(&server, "clients json");
    let row = client_json(&json, hog.local_addr().unwrap());
    let id = json_number(&row, "id")
        .expect("a row has an id")
        .to_string();

    let dir = TempDir::new("record-conn");
    let csv = dir.path().join("one.csv");
    record(&server, &csv, &["--conn", &id]);
    let rows = samples(&csv);
    assert!(!rows.is_empty());
    let peer = hog.local_addr().unwrap().to_string();
    assert!(
        rows.iter()
            .all(|r| r.id.to_string() == id && r.peer == peer),
        "{rows:?}"
    );
}

#[test]
fn record_of_an_address_that_is_not_admin_fails_in_one_line() {
    let server = server();
    let dir = TempDir::new("record-bad");
    let csv = dir.path().join("x.csv");
    let run = run_binary(
        &[
            "record",
            &server.addr("echo").to_string(),
            "--secs",
            "5",
            "-o",
            csv.to_str().unwrap(),
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("admin"), "{stderr}");
}

#[test]
fn plot_of_a_missing_or_malformed_csv_fails_in_one_line() {
    let dir = TempDir::new("plot-bad");
    let svg = dir.path().join("out.svg");
    let malformed = dir.path().join("bad.csv");
    std::fs::write(&malformed, format!("{}\n0.0,zero,peer\n", HEADER.join(","))).unwrap();
    let zero = dir.path().join("zero.csv");
    std::fs::write(&zero, "").unwrap();
    let other = dir.path().join("other.csv");
    std::fs::write(&other, "a,b\n1,2\n").unwrap();
    let missing = dir.path().join("missing.csv");
    for (input, says) in [
        (&missing, "cannot read"),
        (&malformed, "not a tcp-reactor recording"),
        (&other, "not a tcp-reactor recording"),
        (&zero, "empty"),
    ] {
        let run = run_binary(
            &["plot", input.to_str().unwrap(), "-o", svg.to_str().unwrap()],
            b"",
        );
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{input:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{input:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(says),
            "{stderr}"
        );
    }
    assert!(!svg.exists(), "no picture is written for a bad recording");

    // A header and no rows: a recording in which nothing was open.
    let nothing = dir.path().join("nothing.csv");
    std::fs::write(&nothing, format!("{}\n", HEADER.join(","))).unwrap();
    let run = run_binary(
        &[
            "plot",
            nothing.to_str().unwrap(),
            "-o",
            svg.to_str().unwrap(),
        ],
        b"",
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.contains("No connection was open"));
}
