//! Integration tests of the connection lifecycle: idle timeouts, admission
//! caps, short connections, running out of file descriptors, and graceful
//! shutdown on a signal.

mod support;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use support::{
    Pattern, Server, TempDir, WAIT, connect, fill_until_blocked, json_number, read_exact,
    read_to_end, run_binary, wait_for_row, write_pattern,
};

fn echo_once(stream: &mut TcpStream, text: &[u8]) {
    stream.write_all(text).unwrap();
    assert_eq!(read_exact(stream, text.len()), text);
}

#[test]
fn an_idle_connection_is_closed_after_the_timeout_and_an_active_one_kept() {
    let server = Server::start(&["-l", "127.0.0.1:0=echo", "--idle-timeout", "1", "-v"]);
    let addr = server.addr("echo");
    let started = Instant::now();
    let mut idle = connect(addr);
    let mut active = connect(addr);
    // The active client talks every 200 ms for 3 s: five times per timeout.
    while started.elapsed() < Duration::from_secs(3) {
        echo_once(&mut active, b"tick");
        thread::sleep(Duration::from_millis(200));
    }
    // The idle one was closed meanwhile (it sees end of stream, not a reset).
    assert_eq!(read_to_end(&mut idle), b"");
    echo_once(&mut active, b"still open");
    // Once quiet, the active one goes the same way, no sooner than 1 s.
    let quiet = Instant::now();
    assert_eq!(read_to_end(&mut active), b"");
    assert!(
        quiet.elapsed() >= Duration::from_millis(900),
        "closed after {:?}",
        quiet.elapsed()
    );
    assert!(server.wait_for_log("closed (idle)"));
}

#[test]
fn past_max_conns_a_new_client_gets_err_server_full() {
    let server = Server::start(&["-l", "127.0.0.1:0=echo", "--max-conns", "3"]);
    let addr = server.addr("echo");
    let mut open: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    for s in &mut open {
        echo_once(s, b"in");
    }
    let mut extra = connect(addr);
    assert_eq!(read_to_end(&mut extra), b"ERR server full\n");
    for s in &mut open {
        echo_once(s, b"unaffected");
    }
    // A slot freed is a slot taken again.
    drop(open.pop());
    let mut next = connect(addr);
    // The close of the dropped one may still be in flight: retry briefly.
    let deadline = Instant::now() + WAIT;
    loop {
        next.write_all(b"x").unwrap();
        let mut b = [0u8; 32];
        let n = next.read(&mut b).unwrap();
        if &b[..n] == b"x" {
            break;
        }
        assert_eq!(&b[..n], b"ERR server full\n");
        assert!(Instant::now() < deadline, "slot never freed");
        next = connect(addr);
    }
}

#[test]
fn regression_when_clients_fill_max_conns_the_operator_gets_err_server_full() {
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=echo",
        "-l",
        "127.0.0.1:0=admin",
        "--max-conns",
        "2",
    ]);
    let addr = server.addr("echo");
    let mut open: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
    for s in &mut open {
        echo_once(s, b"in");
    }
    assert_eq!(read_to_end(&mut connect(addr)), b"ERR server full\n");
    // Admin connections have a reserve of their own, outside the cap.
    let stats = support::admin(&server, "stats");
    assert!(stats.contains("accepted"), "{stats}");
    // The reserve is bounded too.
    let operators: Vec<TcpStream> = (0..tcp_reactor::limits::OPERATOR_RESERVE)
        .map(|_| {
            let mut s = connect(server.addr("admin"));
            s.write_all(b"help\n").unwrap();
            let mut first = [0u8; 9];
            s.read_exact(&mut first).unwrap();
            s
        })
        .collect();
    assert_eq!(
        read_to_end(&mut connect(server.addr("admin"))),
        b"ERR too many admin connections\n"
    );
    drop(operators);
}

#[test]
fn more_clients_at_once_than_one_turn_accepts_are_all_served() {
    // Past MAX_ACCEPTS_PER_TURN the listener is taken up again next turn:
    // no new edge would come for the clients left in the backlog.
    let server = Server::start(&["-l", "127.0.0.1:0=echo"]);
    let addr = server.addr("echo");
    let count = tcp_reactor::reactor::MAX_ACCEPTS_PER_TURN * 2 + 500;
    // All in the backlog at once: the server is stopped while they connect
    // (the kernel completes handshakes for a stopped listener).
    let pid = server.pid().to_string();
    let signal = |s: &str| {
        assert!(
            std::process::Command::new("kill")
                .args(["-s", s, &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    signal("STOP");
    let mut clients: Vec<TcpStream> = (0..count).map(|_| connect(addr)).collect();
    signal("CONT");
    for s in &mut clients {
        echo_once(s, b"hi");
    }
}

fn connect_from(local: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&local.parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.connect_timeout(&addr.into(), WAIT).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

#[test]
fn past_max_conns_per_ip_that_address_is_refused_and_others_are_not() {
    let server = Server::start(&["-l", "127.0.0.1:0=echo", "--max-conns-per-ip", "2"]);
    let addr = server.addr("echo");
    let mut a1 = connect_from("127.0.0.1:0", addr);
    let mut a2 = connect_from("127.0.0.1:0", addr);
    echo_once(&mut a1, b"1");
    echo_once(&mut a2, b"2");
    let mut a3 = connect_from("127.0.0.1:0", addr);
    assert_eq!(
        read_to_end(&mut a3),
        b"ERR too many connections from 127.0.0.1\n"
    );
    let mut b1 = connect_from("127.0.0.2:0", addr);
    echo_once(&mut b1, b"other address");
    echo_once(&mut a1, b"unaffected");
}

#[test]
fn short_connections_close_after_the_first_reply() {
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=ack",
        "-l",
        "127.0.0.1:0=echo",
        "--short",
        "--reply",
        "ok",
    ]);
    let mut ack = connect(server.addr("ack"));
    ack.write_all(b"first\nsecond\n").unwrap();
    assert_eq!(read_to_end(&mut ack), b"ok\n");
    // The notes' way: one message, no newline, then wait for the answer.
    let mut ack = connect(server.addr("ack"));
    ack.write_all(b"hello").unwrap();
    assert_eq!(read_to_end(&mut ack), b"ok\n");
    let mut echo = connect(server.addr("echo"));
    echo.write_all(b"hello").unwrap();
    assert_eq!(read_to_end(&mut echo), b"hello");

    // Without --short the same conversation stays open.
    let long = Server::start(&["-l", "127.0.0.1:0=ack", "--reply", "ok"]);
    let mut ack = connect(long.addr("ack"));
    ack.write_all(b"first\nsecond\n").unwrap();
    assert_eq!(read_exact(&mut ack, 6), b"ok\nok\n");
    ack.write_all(b"third\n").unwrap();
    assert_eq!(read_exact(&mut ack, 3), b"ok\n");
}

#[test]
fn out_of_file_descriptors_the_server_keeps_serving_and_recovers() {
    // No cap, so the process runs out of descriptors before any cap is met
    // (with one, the cap is fitted to the limit: tests/descriptors.rs).
    let mut server = Server::start_under(
        &["prlimit", "--nofile=64:64", "--"],
        &["-l", "127.0.0.1:0=echo", "--max-conns", "0"],
    );
    let addr = server.addr("echo");
    let mut first: Vec<TcpStream> = (0..10).map(|_| connect(addr)).collect();
    for s in &mut first {
        echo_once(s, b"before");
    }
    // 200 more: the kernel completes every handshake (the backlog is deep),
    // but the server can accept only as many as it has descriptors for;
    // each of the rest is accepted on the spare descriptor and refused in
    // words, none left waiting.
    let mut crowd: Vec<TcpStream> = (0..200).map(|_| connect(addr)).collect();
    let (mut served, mut refused) = (Vec::new(), 0);
    for (i, mut s) in crowd.drain(..).enumerate() {
        s.write_all(b"q").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b)
            .unwrap_or_else(|e| panic!("crowd client {i} got no answer: {e}"));
        if &b == b"q" {
            served.push(s);
        } else {
            let rest = read_to_end(&mut s);
            assert_eq!([&b[..], &rest].concat(), b"ERR server full\n");
            refused += 1;
        }
    }
    assert!(refused > 100, "{refused} of 200 refused in 64 descriptors");
    assert!(
        server.wait_for_log("out of descriptors"),
        "log: {:?}",
        server.log()
    );
    // Those already connected are served as before.
    for s in &mut first {
        echo_once(s, b"during");
    }
    // Saturated, it must not spin: measure its CPU over two seconds while
    // newcomers keep coming (each refused).
    let cpu_before = server.cpu_time();
    let window = Instant::now();
    let mut more = 0;
    while window.elapsed() < Duration::from_secs(2) {
        let mut s = connect(addr);
        assert_eq!(read_to_end(&mut s), b"ERR server full\n");
        more += 1;
        thread::sleep(Duration::from_millis(20));
    }
    let cpu = server.cpu_time() - cpu_before;
    assert!(
        cpu < window.elapsed() / 4,
        "server used {cpu:?} of CPU in {:?} while out of descriptors",
        window.elapsed()
    );
    let warnings = server.log().iter().filter(|l| l.contains(" WARN ")).count();
    assert!(
        warnings <= 5,
        "{warnings} warnings for {} refusals in about 2 s: not rate-limited",
        refused + more
    );
    // Clients leave; newcomers get their places.
    drop(served);
    let deadline = Instant::now() + WAIT;
    let mut again = loop {
        let mut s = connect(addr);
        s.write_all(b"z").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).expect("an answer");
        if &b == b"z" {
            break s;
        }
        assert!(Instant::now() < deadline, "no place freed within {WAIT:?}");
        thread::sleep(Duration::from_millis(20));
    };
    echo_once(&mut again, b"after");
    server.assert_alive();
}

#[test]
fn sigterm_flushes_a_50_mb_download_in_progress_then_exits_0() {
    const SIZE: usize = 50_000_000;
    let root = TempDir::new("shutdown");
    let pattern = Pattern::new();
    let body = Pattern::bytes(SIZE);
    fs::write(root.path().join("big.bin"), &body).unwrap();
    let mut server = Server::start(&[
        "-l",
        "127.0.0.1:0=files",
        "-l",
        "127.0.0.1:0=echo",
        "-l",
        "127.0.0.1:0=admin",
        "--root",
        root.arg(),
        "--shutdown-timeout",
        "20",
    ]);
    let files = server.addr("files");
    let mut download = connect(files);
    download.write_all(b"GET big.bin\n").unwrap();
    let header = format!("OK {SIZE}\n");
    assert_eq!(read_exact(&mut download, header.len()), header.as_bytes());
    let mut got = read_exact(&mut download, 1000);

    // An echo client owed what it sent, which it has not read yet.
    let mut echo = connect(server.addr("echo"));
    write_pattern(&mut echo, &pattern, 100_000);
    echo.shutdown(Shutdown::Write).unwrap();
    // The server ends conversations by reading no more: only what it has
    // read is owed, so wait until it has read all of it.
    wait_for_row(&server, echo.local_addr().unwrap(), "echo", |row| {
        row.is_none_or(|row| json_number(row, "bytes_in") == Some(100_000))
    });

    // The signal arrives while nearly all 50 MB are still owed.
    let pid = server.pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(server.wait_for_log("shutting down"));
    // No new clients once the listeners are closed.
    let refused = TcpStream::connect_timeout(&files, Duration::from_secs(2));
    assert!(refused.is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused));

    download
        .read_to_end(&mut got)
        .expect("the download ends cleanly");
    assert_eq!(got.len(), SIZE, "bytes received after the signal");
    assert!(got == body, "downloaded bytes differ");
    let echoed = read_to_end(&mut echo);
    assert_eq!(echoed.len(), 100_000);
    assert!(pattern.matches(0, &echoed));

    let status = server.signal_and_wait("0");
    assert_eq!(status.code(), Some(0), "log: {:?}", server.log());
    assert!(
        server.wait_for_log("connections (0 still open"),
        "log: {:?}",
        server.log()
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut server = Server::start(&["-l", "127.0.0.1:0=echo", "--shutdown-timeout", "60"]);
    // A client that owes nothing but never closes keeps the shutdown waiting.
    let mut hog = connect(server.addr("echo"));
    fill_until_blocked(&mut hog);
    let pid = server.pid().to_string();
    let kill = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
    };
    kill("-INT");
    assert!(server.wait_for_log("shutting down"));
    let started = Instant::now();
    kill("-INT");
    let status = server.signal_and_wait("0");
    assert_eq!(status.code(), Some(130));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        exchange_refused(server.addr("echo")),
        ErrorKind::ConnectionRefused
    );
}

fn exchange_refused(addr: SocketAddr) -> ErrorKind {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map(|_| ())
        .unwrap_err()
        .kind()
}

#[test]
fn reuse_port_lets_two_servers_share_a_port_and_both_get_clients() {
    let first = Server::start(&["-l", "127.0.0.1:0=echo", "--reuse-port", "-v"]);
    let addr = first.addr("echo");
    let spec = format!("{addr}=echo");
    let second = Server::start(&["-l", &spec, "--reuse-port", "-v"]);
    assert_eq!(second.addr("echo"), addr);
    let mut clients: Vec<TcpStream> = (0..64).map(|_| connect(addr)).collect();
    for c in &mut clients {
        echo_once(c, b"shared");
    }
    let opened = |s: &Server| s.log().iter().filter(|l| l.contains(": opened")).count();
    // The log reaches us through a pipe: wait for the last lines.
    let deadline = Instant::now() + WAIT;
    while opened(&first) + opened(&second) < 64 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(opened(&first) + opened(&second), 64);
    // The kernel hashes connections across the two: each gets some.
    assert!(opened(&first) > 0 && opened(&second) > 0);
    // Without --reuse-port the port stays taken.
    let out = run_binary(&["serve", "-l", &spec], b"");
    assert!(!out.status.success());
}

#[test]
fn regression_a_sigterm_right_after_the_listening_lines_kills_the_server() {
    // A script reads the port from the log and may signal at once: the
    // handlers must be in place before the first listening line.
    for attempt in 0..20 {
        let mut server = Server::start(&["-l", "127.0.0.1:0=echo", "-l", "127.0.0.1:0=ack"]);
        let status = server.signal_and_wait("TERM");
        assert_eq!(
            status.code(),
            Some(0),
            "attempt {attempt}: {status}; log: {:?}",
            server.log()
        );
    }
}
