//! `tcp-reactor top` against a real server on port 0: the plain-text view
//! in a pipe, `--stat` lines at the interval, and the one-line errors.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use support::{Server, WAIT, connect, fill_until_blocked, read_exact, run_binary, wait_bounded};

fn server() -> Server {
    Server::start(&[
        "-l",
        "127.0.0.1:0=echo",
        "-l",
        "127.0.0.1:0=admin",
        "--send-buf",
        "32K",
    ])
}

/// The table rows of a plain-text view: the lines after the column names
/// up to the legend.
fn table_rows(text: &str) -> Vec<&str> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("id peer"))
        .skip(1)
        .take_while(|l| !l.starts_with("bar:"))
        .collect()
}

#[test]
fn once_in_a_pipe_shows_the_header_and_every_connection_with_a_hog_paused() {
    let server = server();
    let admin = server.addr("admin").to_string();
    let mut quiet = connect(server.addr("echo"));
    quiet.write_all(b"hi").unwrap();
    assert_eq!(read_exact(&mut quiet, 2), b"hi");
    let mut hog = connect(server.addr("echo"));
    fill_until_blocked(&mut hog);

    // With --once, and without it: standard output is a pipe either way.
    for args in [vec!["top", &admin, "--once"], vec!["top", &admin]] {
        let out = run_binary(&args, b"");
        let text = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}\n{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with(&format!("tcp-reactor top {admin}  uptime "))
                && lines[0].contains(" connections  rates over "),
            "{text}"
        );
        let count: usize = lines[0]
            .split("  ")
            .find_map(|f| {
                f.strip_suffix(" connections")
                    .or(f.strip_suffix(" connection"))
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a connection count: {text}"));
        assert!(lines[1].starts_with("total: accepted "), "{text}");
        // The first run's admin connection may have closed by the second.
        assert!(
            lines[2].starts_with("refused 0 (")
                && lines[2].contains(" closed ")
                && lines[2].contains("log lines dropped 0"),
            "{text}"
        );
        assert!(
            lines[3].contains("echo 2") && lines[3].contains("admin "),
            "{text}"
        );

        let rows = table_rows(&text);
        // The second run may still list the first one's admin connection,
        // on its way out.
        assert!(count >= 3, "{text}");
        assert_eq!(rows.len(), count, "one row per connection:\n{text}");
        let row_of = |peer: std::net::SocketAddr| {
            let peer = format!(" {peer} ");
            *rows
                .iter()
                .find(|r| r.contains(&peer))
                .unwrap_or_else(|| panic!("no row for{peer}in\n{text}"))
        };
        let q = row_of(quiet.local_addr().unwrap());
        assert!(
            q.contains(" echo ") && q.contains(" reading ") && q.contains(" idle "),
            "{q}"
        );
        assert!(q.ends_with("[........|........|........|........]"), "{q}");
        let h = row_of(hog.local_addr().unwrap());
        assert!(h.contains(" paused ") && h.contains(" peer-window "), "{h}");
        // Its send buffer (32K of 32K) is full; its kernel queues hold bytes.
        assert!(h.contains("|SSSSSSSS|") && h.contains("[K"), "{h}");
        assert_eq!(rows[0], h, "sorted by bytes owed, the hog first");
        assert!(
            rows.iter().any(|r| r.contains(" admin* ")),
            "its own connection is marked:\n{text}"
        );
    }
}

/// `top ARGS` with standard output piped: its lines as they come.
fn spawn_top(args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(support::binary())
        .arg("top")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run top");
    let stdout = child.stdout.take().expect("stdout was piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Seconds in an uptime as `--stat` prints it (`4.2s`, `1m05s`).
fn uptime_secs(field: &str) -> f64 {
    match field.split_once('m') {
        Some((m, s)) => {
            m.parse::<f64>().unwrap() * 60.0 + s.trim_end_matches('s').parse::<f64>().unwrap()
        }
        None => field.trim_end_matches('s').parse().unwrap(),
    }
}

#[test]
fn stat_prints_a_line_per_interval() {
    let server = server();
    let admin = server.addr("admin").to_string();
    let (mut child, lines) = spawn_top(&[&admin, "--stat", "--interval", "200"]);
    let deadline = Instant::now() + WAIT;
    let next = || {
        let left = deadline.saturating_duration_since(Instant::now());
        lines
            .recv_timeout(left)
            .expect("a --stat line within the wait")
    };
    let header = next();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "uptime",
            "active",
            "accepted/s",
            "in/s",
            "out/s",
            "closed",
            "dropped"
        ]
    );
    let started = Instant::now();
    let rows: Vec<Vec<String>> = (0..3)
        .map(|_| next().split_whitespace().map(str::to_string).collect())
        .collect();
    let took = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    for row in &rows {
        assert_eq!(row.len(), 7, "{rows:?}");
        assert_eq!(row[1], "1", "only top's own connection is active: {rows:?}");
    }
    let uptimes: Vec<f64> = rows.iter().map(|r| uptime_secs(&r[0])).collect();
    for pair in uptimes.windows(2) {
        let step = pair[1] - pair[0];
        assert!((0.1..=1.0).contains(&step), "200 ms apart: {uptimes:?}");
    }
    assert!(
        took.as_millis() >= 300,
        "three lines in {took:?}: not paced"
    );
}

#[test]
fn the_server_closing_ends_top_with_one_line_and_status_1() {
    let mut server = server();
    let admin = server.addr("admin").to_string();
    let (mut child, lines) = spawn_top(&[&admin, "--stat", "--interval", "50"]);
    for _ in 0..2 {
        lines.recv_timeout(WAIT).expect("top is running");
    }
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));
    let status = wait_bounded(&mut child);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    // One ERROR line in the log format (simple_logger's, as the server's).
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(" ERROR ") && stderr.ends_with("] connection closed by server\n"),
        "{stderr}"
    );
}

#[test]
fn a_refused_address_is_one_line_and_status_1() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let out = run_binary(&["top", &addr.to_string(), "--once"], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(" ERROR ") && stderr.contains(&format!("] cannot connect to {addr}")),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_service_that_is_not_admin_is_one_line_and_status_1() {
    let server = server();
    let out = run_binary(&["top", &server.addr("echo").to_string(), "--once"], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("is not a tcp-reactor admin service"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_exit_2() {
    for args in [
        &["top", "127.0.0.1:1", "--once", "--stat"][..],
        &["top", "127.0.0.1:1", "--interval", "10"],
        &["top", "not-an-address"],
    ] {
        let out = run_binary(args, b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let help = run_binary(&["top", "--help"], b"");
    let text = String::from_utf8_lossy(&help.stdout);
    for key in [
        "sort by bytes owed",
        "Enter opens",
        "Esc closes",
        "q        quit",
    ] {
        assert!(text.contains(key), "--help tells the keys: {text}");
    }
}
