//! The client programs' command lines, run as a user runs them: the real
//! binary against a real server (or a small fake) on loopback port 0. What
//! each names when an argument is missing, host names, the log lines their
//! errors are, `client --crlf`/`--wait` and line editing on a terminal,
//! `bench`'s end and its one-line failures, and the scripts the README
//! sends users to. Every wait is bounded by `WAIT`.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use support::{Server, TempDir, WAIT, run_binary};

/// Whether `line` is one line of the server's log format (simple_logger's):
/// `2025-01-31T12:34:56.789Z LEVEL [target] message`, at `level`.
fn is_log_line(line: &str, level: &str) -> bool {
    let Some((stamp, rest)) = line.split_once(' ') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let stamp_ok = stamp.len() == 24
        && stamp.ends_with('Z')
        && digits(&stamp[0..4])
        && &stamp[4..5] == "-"
        && &stamp[10..11] == "T"
        && digits(&stamp[20..23]);
    let padded = format!("{level:<5} [tcp_reactor");
    stamp_ok && rest.starts_with(&padded) && rest.contains("] ")
}

/// An address nothing listens on: a port just bound and released.
fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback port 0");
    listener.local_addr().expect("bound address")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---- arguments ----

#[test]
fn regression_a_missing_argument_is_named_in_one_line() {
    for (args, missing) in [
        (&["get", "127.0.0.1:8000"][..], "<NAME>"),
        (&["client"], "<ADDR>"),
        (&["record", "127.0.0.1:7999"], "--output <FILE.csv>"),
        (&["plot"], "<INPUT>"),
        (&["top"], "<ADDR>"),
        (&["bench"], "<ADDR>"),
    ] {
        let out = run_binary(args, b"");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(missing),
            "{args:?} should name {missing}: {stderr}"
        );
    }
}

#[test]
fn regression_secs_0_is_refused_with_a_message_that_does_not_contradict_itself() {
    for args in [
        &["record", "127.0.0.1:1", "--secs", "0", "-o", "x.csv"][..],
        &["bench", "127.0.0.1:1", "--secs", "0"],
    ] {
        let out = run_binary(args, b"");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("'0'"), "{stderr}");
        assert!(!stderr.contains("between 0 and"), "{stderr}");
    }
}

// ---- host names ----

#[test]
fn regression_every_client_takes_a_host_name() {
    let root = TempDir::new("hostnames");
    std::fs::write(root.path().join("hello.txt"), b"hello\n").unwrap();
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=echo",
        "-l",
        "127.0.0.1:0=files",
        "-l",
        "127.0.0.1:0=admin",
        "--root",
        root.arg(),
    ]);
    let named = |service: &str| format!("localhost:{}", server.addr(service).port());
    let (echo, files, admin) = (named("echo"), named("files"), named("admin"));

    let out = run_binary(&["client", &echo], b"hi\n");
    assert!(out.status.success(), "client: {}", text(&out.stderr));
    assert_eq!(out.stdout, b"hi\n");

    let out = run_binary(&["get", &files, "hello.txt", "-o", "-", "-q"], b"");
    assert!(out.status.success(), "get: {}", text(&out.stderr));
    assert_eq!(out.stdout, b"hello\n");

    let out = run_binary(&["top", &admin, "--once"], b"");
    assert!(out.status.success(), "top: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&admin), "{}", text(&out.stdout));

    let csv = root.path().join("run.csv");
    let out = run_binary(
        &[
            "record",
            &admin,
            "--secs",
            "0.2",
            "--interval",
            "50",
            "-o",
            csv.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "record: {}", text(&out.stderr));
    assert!(csv.exists());

    let out = run_binary(
        &[
            "bench", &echo, "--conns", "2", "--rounds", "3", "--secs", "20",
        ],
        b"",
    );
    assert!(out.status.success(), "bench: {}", text(&out.stdout));
    assert!(text(&out.stdout).contains("round trips: 6 in"));

    // An address without a port is still a usage error.
    let out = run_binary(&["client", "localhost"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).lines().count(), 1);
}

#[test]
fn a_bracketed_ipv6_address_reaches_a_server_on_ipv6_loopback() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let server = Server::start(&["-l", "[::1]:0=echo"]);
    let addr = server.addr("echo");
    let out = run_binary(&["client", &format!("[::1]:{}", addr.port())], b"six\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"six\n");
}

// ---- log lines ----

#[test]
fn regression_client_errors_are_log_lines_and_q_hides_nothing_but_warnings() {
    let refused = refused_addr().to_string();
    for args in [
        vec!["get", &refused, "f", "-o", "-"],
        vec!["client", &refused],
        vec!["top", &refused, "--once"],
        vec!["record", &refused, "-o", "never.csv"],
        vec!["bench", &refused, "--conns", "2", "--secs", "1"],
        vec!["plot", "no-such-recording.csv", "-o", "never.svg"],
    ] {
        for quiet in [None, Some("-q")] {
            let mut args = args.clone();
            args.extend(quiet);
            let out = run_binary(&args, b"");
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
            assert!(
                is_log_line(stderr.trim_end(), "ERROR"),
                "{args:?} should log its error: {stderr}"
            );
        }
    }
}

// ---- client ----

/// A fake server for one connection: everything the client sends until it
/// half-closes, then `reply` and close.
fn recording_server(reply: &'static [u8]) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback port 0");
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        let _ = stream.write_all(reply);
        let _ = tx.send(got);
    });
    (addr, rx)
}

#[test]
fn client_crlf_ends_every_line_with_cr_lf() {
    let (addr, got) = recording_server(b"done\n");
    let out = run_binary(&["client", &addr.to_string(), "--crlf"], b"a\nb\r\nc");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"done\n");
    assert_eq!(got.recv_timeout(WAIT).unwrap(), b"a\r\nb\r\nc\r\n");

    // Without it, piped lines go as they always did.
    let (addr, got) = recording_server(b"");
    let out = run_binary(&["client", &addr.to_string()], b"a\nb\r\nc");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(got.recv_timeout(WAIT).unwrap(), b"a\nb\r\nc\n");
}

#[test]
fn client_wait_bounds_the_connect_to_a_server_that_does_not_answer() {
    // A listener whose accept queue is full drops new SYNs: the connect
    // gets no answer at all, as from a host that is down.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    let deadline = Instant::now() + WAIT;
    // Fill the queue: connects succeed until it is full, then time out.
    loop {
        assert!(Instant::now() < deadline, "the accept queue never filled");
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
    }
    let started = Instant::now();
    let out = run_binary(&["client", &addr.to_string(), "--wait", "0.5"], b"x\n");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no answer in 0.5 s"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "--wait was ignored"
    );
    drop(fillers);
}

/// Runs `client ADDR` on a pseudo-terminal (`script`), typing `keys`.
/// `None` when `script` is missing.
fn client_on_a_terminal(addr: SocketAddr, keys: &'static [u8]) -> Option<std::process::Output> {
    let command = format!("{} client {addr}", support::binary());
    let mut child = match Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(_) => return None,
    };
    let mut input = child.stdin.take().expect("stdin was piped");
    thread::spawn(move || {
        // One key at a time, as typed; the line editor reads them raw.
        for key in keys.chunks(1) {
            if input.write_all(key).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        // Keep the terminal open until the client has ended by itself.
        thread::sleep(WAIT);
    });
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx.recv_timeout(WAIT).unwrap_or_else(|_| {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("client on a terminal did not finish within {WAIT:?}")
    });
    Some(output.expect("collect output"))
}

#[test]
fn client_on_a_terminal_edits_lines_and_recalls_history() {
    let (addr, got) = recording_server(b"");
    // "abc", Backspace, "d", Enter; Up arrow (the last line), Enter;
    // Ctrl-D on an empty line ends the input.
    let Some(out) = client_on_a_terminal(addr, b"abc\x7fd\r\x1b[A\r\x04") else {
        eprintln!("skipped: no `script` to make a terminal");
        return;
    };
    let sent = got.recv_timeout(WAIT).expect("the client half-closed");
    assert_eq!(
        text(&sent),
        "abd\nabd\n",
        "terminal output: {}",
        text(&out.stdout)
    );
    assert!(out.status.success(), "{}", text(&out.stdout));
}

// ---- bench ----

/// The echo service's `closed` counts from the admin `stats json`, once no
/// echo connection is active (bounded by `WAIT`).
fn echo_closes(server: &Server) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats: serde_json::Value =
            serde_json::from_str(&support::admin(server, "stats json")).expect("stats json");
        let echo = &stats["services"]["echo"];
        if echo["active"] == 0 {
            return echo["closed"].clone();
        }
        assert!(Instant::now() < deadline, "echo connections stay open");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn regression_a_timed_bench_ends_its_connections_cleanly_not_with_resets() {
    let server = Server::start(&["-l", "127.0.0.1:0=echo", "-l", "127.0.0.1:0=admin"]);
    let echo = server.addr("echo").to_string();
    // Timed, not counted: at the deadline every connection has a message
    // on its way, whose echo must be read before the close.
    let out = run_binary(
        &[
            "bench", &echo, "--conns", "20", "--size", "64", "--secs", "0.5",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stdout));
    let closed = echo_closes(&server);
    assert_eq!(closed["error"], 0, "closes: {closed}");
    assert_eq!(closed["peer"], 20, "closes: {closed}");

    // The same for short connections cut by the deadline mid-round.
    let out = run_binary(
        &[
            "bench", &echo, "--short", "--conns", "10", "--size", "64", "--secs", "0.5",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stdout));
    let closed = echo_closes(&server);
    assert_eq!(closed["error"], 0, "closes: {closed}");
}

#[test]
fn regression_bench_at_a_refused_port_is_one_line_and_exit_1() {
    let refused = refused_addr().to_string();
    for extra in [None, Some("--short")] {
        let mut args = vec!["bench", &refused, "--conns", "5", "--secs", "5"];
        args.extend(extra);
        let out = run_binary(&args, b"");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "no report: {}", text(&out.stdout));
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!("cannot connect to {refused}")) && stderr.contains("refused"),
            "{stderr}"
        );
    }
}

#[test]
fn regression_bench_at_a_service_that_is_not_echo_reports_wrong_bytes_not_no_connections() {
    let server = Server::start(&["-l", "127.0.0.1:0=ack"]);
    let ack = server.addr("ack").to_string();
    let out = run_binary(
        &[
            "bench", &ack, "--conns", "5", "--rounds", "1", "--secs", "20",
        ],
        b"",
    );
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("connected 5 in"), "{report}");
    assert!(report.contains("wrong bytes echoed"), "{report}");
}

// ---- scripts and help ----

#[test]
fn regression_every_script_the_readme_names_is_there_and_executable() {
    use std::os::unix::fs::PermissionsExt;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("read README.md");
    let mut named: Vec<String> = readme
        .split("scripts/")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect();
            name.ends_with(".sh").then_some(name)
        })
        .collect();
    named.sort();
    named.dedup();
    assert!(named.len() >= 10, "README names scripts: {named:?}");
    for name in &named {
        let path = repo.join("scripts").join(name);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            meta.permissions().mode() & 0o111 == 0o111,
            "scripts/{name} is not executable: {:o}",
            meta.permissions().mode()
        );
        let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(syntax.status.success(), "{name}: {}", text(&syntax.stderr));
    }
}

#[test]
fn regression_serve_help_says_what_a_4k_so_sndbuf_costs_now() {
    let out = run_binary(&["serve", "--help"], b"");
    let help = text(&out.stdout);
    assert!(out.status.success());
    let flag = help
        .split("--so-sndbuf")
        .nth(1)
        .expect("--so-sndbuf in serve --help");
    let flag = &flag[..flag.find("--admin-anywhere").unwrap_or(flag.len())];
    assert!(!flag.contains("1.9 s"), "stale figure: {flag}");
    assert!(flag.contains("ms"), "{flag}");
}
