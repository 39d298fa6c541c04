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
            stderr.contains(" ERROR ") && stderr.contains(says),
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

/// `record ADDR --secs SECS -o out` plus `extra`: the exit code and stderr.
fn record_run(addr: &str, secs: &str, out: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec![
        "record",
        addr,
        "--secs",
        secs,
        "--interval",
        "100",
        "-o",
        out.to_str().expect("temp paths are UTF-8"),
    ];
    args.extend_from_slice(extra);
    let run = run_binary(&args, b"");
    (
        run.status.code(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )
}

#[test]
fn regression_record_at_an_echo_port_keeps_the_existing_file() {
    let server = server();
    let dir = TempDir::new("record-keep");
    let csv = dir.path().join("precious.csv");
    std::fs::write(&csv, "a recording worth keeping\n").unwrap();
    let (code, stderr) = record_run(&server.addr("echo").to_string(), "5", &csv, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        "a recording worth keeping\n"
    );
}

#[test]
fn regression_record_at_a_files_or_chat_port_fails_and_writes_nothing() {
    let root = TempDir::new("record-files-root");
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=files",
        "-l",
        "127.0.0.1:0=chat",
        "--root",
        root.arg(),
    ]);
    let dir = TempDir::new("record-files");
    for service in ["files", "chat"] {
        let csv = dir.path().join(format!("{service}.csv"));
        let (code, stderr) = record_run(&server.addr(service).to_string(), "1", &csv, &[]);
        assert_eq!(code, Some(1), "{service}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{service}: {stderr}");
        assert!(stderr.contains("snapshot"), "{service}: {stderr}");
        assert!(!csv.exists(), "{service}: a file was written");
    }
}

#[test]
fn regression_record_of_an_unknown_conn_warns() {
    let server = server();
    let dir = TempDir::new("record-unknown");
    let csv = dir.path().join("none.csv");
    let admin = server.addr("admin").to_string();
    let (code, stderr) = record_run(&admin, "0.3", &csv, &["--conn", "999"]);
    assert_eq!(code, Some(0), "{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains(" WARN "))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(warning.contains("999"), "{warning}");
    // -qq: errors only.
    let (code, stderr) = record_run(&admin, "0.3", &csv, &["--conn", "999", "-qq"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains(" WARN "), "{stderr}");
}

#[test]
fn plot_labels_name_the_panels() {
    let dir = TempDir::new("plot-label");
    let csv = dir.path().join("two.csv");
    let svg = dir.path().join("two.svg");
    let mut rows = HEADER.join(",");
    rows.push('\n');
    for (id, peer) in [(3, "127.0.0.1:5000"), (1, "127.0.0.1:5001")] {
        for t in ["0.0", "0.05"] {
            rows.push_str(&format!(
                "{t},{id},{peer},files,paused,peer-window,1.0,0.0,0,65536,100,65536,,4000,4000,,,0,0,,,,,,,,,,,,,\n"
            ));
        }
    }
    std::fs::write(&csv, rows).unwrap();
    let run = run_binary(
        &[
            "plot",
            csv.to_str().unwrap(),
            "-o",
            svg.to_str().unwrap(),
            "--label",
            "127.0.0.1:5000=client C",
            "--label",
            "127.0.0.1:5001=client A",
        ],
        b"",
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.contains("client C: connection 3"), "{picture}");
    assert!(picture.contains("client A: connection 1"));
}
