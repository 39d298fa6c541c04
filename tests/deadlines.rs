//! A deadline for every wait, room under pressure, and the admin service's
//! HTTP face, against a real server on port 0: a files request that never
//! ends (slow loris) is answered `ERR request timeout` and closed; idle admin
//! connections are closed so a scrape gets in, and a full admin reserve
//! answers a scrape with `503`; at `--max-conns` the idlest connection makes
//! room for a newcomer; an HTTP request on admin gets HTTP answers only, and
//! its body is never run as commands.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use support::{
    Server, TempDir, WAIT, connect, exchange, json_number, read_exact, read_until_closed,
    run_binary,
};

/// A scrape as Prometheus sends it.
const SCRAPE: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n";

/// Sends `request` and reads the answer until the server closes (no
/// half-close from us: the server must end the conversation itself).
fn ask_until_closed(addr: SocketAddr, request: &[u8]) -> (String, Option<std::io::ErrorKind>) {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    let (bytes, error) = read_until_closed(&mut stream);
    (String::from_utf8_lossy(&bytes).into_owned(), error)
}

/// The counter `cause` of the `closed` object of `service` in `stats json`.
fn closed_by(server: &Server, service: &str, cause: &str) -> Option<u64> {
    let json = support::admin(server, "stats json");
    let of_service = &json[json.find(&format!("\"{service}\":")).expect("service")..];
    let closed = &of_service[of_service.find("\"closed\":").expect("closed")..];
    json_number(closed, cause)
}

/// Waits until `closed_by` reaches `count`: a close is counted once the
/// server has completed it, a moment after the client saw its end.
fn wait_closed_by(server: &Server, service: &str, cause: &str, count: u64) {
    retry(&format!("{count} {service} closed by {cause}"), || {
        let now = closed_by(server, service, cause).expect("a count");
        assert!(now <= count, "{now} {service} closed by {cause}");
        (now == count).then_some(())
    });
}

/// Tries `attempt` until it gives `Some`, for at most `WAIT`: a slot freed
/// by a close the server is still completing.
fn retry<T>(what: &str, mut attempt: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(done) = attempt() {
            return done;
        }
        assert!(Instant::now() < deadline, "{what}: never within {WAIT:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn regression_slow_loris_files_requests_that_never_end_are_timed_out_and_closed() {
    let dir = TempDir::new("loris");
    std::fs::write(dir.path().join("a.t"), "hello\n").unwrap();
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=files",
        "-l",
        "127.0.0.1:0=admin",
        "--root",
        dir.arg(),
        "--max-conns",
        "20",
        "--request-timeout",
        "1",
    ]);
    let files = server.addr("files");
    let mut loris: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect(files);
            s.write_all(b"GET a.t").unwrap();
            s
        })
        .collect();
    // Each is answered in its own form and closed cleanly (not reset).
    for s in &mut loris {
        assert_eq!(
            read_until_closed(s),
            (b"ERR request timeout\n".to_vec(), None)
        );
    }
    drop(loris);
    // Their slots are free again: a newcomer is served.
    retry("a newcomer served", || {
        let answer = exchange(files, b"GET a.t\n");
        if answer == b"ERR server full\n" {
            return None;
        }
        assert_eq!(answer, b"OK 6\nhello\n");
        Some(())
    });
    wait_closed_by(&server, "files", "timeout", 20);
}

#[test]
fn regression_slow_loris_a_bare_name_that_never_ends_is_closed_with_no_bytes() {
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=files",
        "--root",
        ".",
        "--request-timeout",
        "1",
    ]);
    // The notes' client sends the bare name with no newline; one whose
    // burst could still be the start of `GET ` waits, and times out.
    let (answer, error) = ask_until_closed(server.addr("files"), b"GE");
    assert_eq!((answer.as_str(), error), ("", None));
}

#[test]
fn the_deadline_flags_show_their_defaults_in_help() {
    let out = run_binary(&["serve", "--help"], b"");
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, default) in [
        ("--request-timeout", "[default: 10]"),
        ("--admin-idle-timeout", "[default: 60]"),
        ("--evict-idle-after", "[default: 60]"),
    ] {
        let at = help
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} in {help}"));
        let entry = &help[at..];
        let end = entry[2..].find("\n  -").map_or(entry.len(), |e| e + 2);
        assert!(entry[..end].contains(default), "{flag}: {}", &entry[..end]);
    }
    assert_eq!(
        run_binary(&["serve", "--request-timeout", "soon"], b"")
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn regression_idle_admin_connections_are_closed_so_a_scrape_gets_in() {
    let server = Server::start(&["-l", "127.0.0.1:0=admin", "--admin-idle-timeout", "1"]);
    let addr = server.addr("admin");
    let mut idle: Vec<TcpStream> = (0..tcp_reactor::limits::OPERATOR_RESERVE)
        .map(|_| connect(addr))
        .collect();
    for s in &mut idle {
        assert_eq!(read_until_closed(s), (Vec::new(), None));
    }
    drop(idle);
    let answer = retry("a scrape answered 200", || {
        let (answer, _) = ask_until_closed(addr, SCRAPE);
        (!answer.starts_with("HTTP/1.0 503 ")).then_some(answer)
    });
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    // The whole exposition, in the text format 0.0.4 a plain scrape gets.
    assert!(
        answer.contains("\r\n\r\n# HELP ") && answer.contains("\ntcp_reactor_connections{"),
        "{answer}"
    );
    wait_closed_by(&server, "admin", "idle", 16);
}

#[test]
fn an_admin_connection_in_watch_is_not_closed_as_idle() {
    let server = Server::start(&["-l", "127.0.0.1:0=admin", "--admin-idle-timeout", "1"]);
    let mut watcher = connect(server.addr("admin"));
    watcher.write_all(b"watch 60000\n").unwrap();
    // The first snapshot comes at once; the next one only in a minute.
    let mut first = [0u8; 1];
    watcher.read_exact(&mut first).unwrap();
    let mut idle = connect(server.addr("admin"));
    assert_eq!(read_until_closed(&mut idle), (Vec::new(), None));
    // The idle one was closed after 1 s; the watcher, silent as long, not.
    watcher.set_nonblocking(true).unwrap();
    let mut rest = [0u8; 65536];
    loop {
        match watcher.read(&mut rest) {
            Ok(0) => panic!("the watcher was closed"),
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
                break;
            }
        }
    }
}

#[test]
fn regression_a_full_admin_reserve_answers_a_scrape_with_503_and_retry_after() {
    let server = Server::start(&["-l", "127.0.0.1:0=admin"]);
    let addr = server.addr("admin");
    let operators: Vec<TcpStream> = (0..tcp_reactor::limits::OPERATOR_RESERVE)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(b"help\n").unwrap();
            read_exact(&mut s, 9);
            s
        })
        .collect();
    let (answer, error) = ask_until_closed(addr, SCRAPE);
    assert_eq!(error, None, "{answer}");
    assert!(
        answer.starts_with("HTTP/1.0 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nRetry-After: "), "{answer}");
    // A text client still gets the ERR line it always did.
    assert_eq!(
        exchange(addr, b"stats\n"),
        b"ERR too many admin connections\n"
    );
    drop(operators);
}

/// The head and body of an HTTP answer.
fn split_answer(answer: &str) -> (&str, &str) {
    answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {answer:?}"))
}

#[test]
fn regression_http_head_of_metrics_gets_the_headers_only() {
    let server = Server::start(&["-l", "127.0.0.1:0=admin"]);
    let (answer, error) = ask_until_closed(
        server.addr("admin"),
        b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(error, None);
    let (head, body) = split_answer(&answer);
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("a Content-Length")
        .parse()
        .unwrap();
    assert!(length > 100, "the length a GET would get: {head}");
    assert_eq!(body, "", "no body for HEAD");
}

#[test]
fn regression_http_post_is_refused_and_its_body_never_run_as_commands() {
    let server = Server::start(&["-l", "127.0.0.1:0=admin"]);
    let (answer, error) = ask_until_closed(
        server.addr("admin"),
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nstats\nhelp\n",
    );
    assert_eq!(error, None, "{answer}");
    let (head, body) = split_answer(&answer);
    assert!(
        head.starts_with("HTTP/1.0 405 Method Not Allowed\r\n"),
        "{answer}"
    );
    assert!(head.contains("\r\nAllow: GET, HEAD\r\n"), "{answer}");
    assert!(
        !body.contains("uptime") && !body.contains("commands:") && !body.contains("ERR"),
        "the body ran as commands: {answer}"
    );
}

#[test]
fn regression_http_other_paths_get_404_and_garbage_gets_400() {
    let server = Server::start(&["-l", "127.0.0.1:0=admin"]);
    let addr = server.addr("admin");
    let (answer, _) = ask_until_closed(addr, b"GET /other HTTP/1.0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.0 404 Not Found\r\n"), "{answer}");
    for garbage in [
        &b"GET /metrics HTTX/1.1\r\n\r\n"[..],
        b"GET /metrics\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1 extra\r\n\r\n",
    ] {
        let (answer, error) = ask_until_closed(addr, garbage);
        assert_eq!(error, None);
        assert!(
            answer.starts_with("HTTP/1.0 400 Bad Request\r\n"),
            "{:?}: {answer}",
            String::from_utf8_lossy(garbage)
        );
        assert_eq!(answer.matches("HTTP/").count(), 1, "{answer}");
    }
}

#[test]
fn regression_http_headers_over_the_limit_get_431_and_nothing_else() {
    let server = Server::start(&["-l", "127.0.0.1:0=admin"]);
    let mut request = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 70 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    let mut stream = connect(server.addr("admin"));
    stream.write_all(&request).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let (bytes, error) = read_until_closed(&mut stream);
    let answer = String::from_utf8_lossy(&bytes);
    assert_eq!(error, None, "{answer}");
    assert!(
        answer.starts_with("HTTP/1.0 431 Request Header Fields Too Large\r\n"),
        "{answer}"
    );
    assert_eq!(answer.matches("HTTP/").count(), 1, "one answer: {answer}");
    assert!(!answer.contains("ERR"), "{answer}");
}

#[test]
fn regression_an_http_request_that_stalls_gets_408_after_the_request_timeout() {
    let server = Server::start(&["-l", "127.0.0.1:0=admin", "--request-timeout", "1"]);
    let started = Instant::now();
    let (answer, error) = ask_until_closed(
        server.addr("admin"),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
    );
    assert_eq!(error, None, "{answer}");
    assert!(
        answer.starts_with("HTTP/1.0 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn regression_a_text_admin_connection_sending_post_or_host_is_closed_and_logged() {
    let server = Server::start(&["-l", "127.0.0.1:0=admin"]);
    let addr = server.addr("admin");
    let (answer, error) = ask_until_closed(addr, b"help\nPOST /x HTTP/1.1\r\nstats\n");
    assert_eq!(error, None, "{answer}");
    assert!(answer.starts_with("commands:"), "{answer}");
    assert!(
        !answer.contains("ERR") && !answer.contains("uptime"),
        "nothing after POST is run: {answer}"
    );
    let (answer, error) = ask_until_closed(addr, b"Host: a\r\nstats\n");
    assert_eq!((answer.as_str(), error), ("", None));
    assert!(server.wait_for_log("cross-protocol"), "{:?}", server.log());
}

#[test]
fn regression_at_max_conns_the_idlest_connection_is_evicted_for_a_newcomer() {
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=echo",
        "-l",
        "127.0.0.1:0=admin",
        "--max-conns",
        "5",
        "--evict-idle-after",
        "1",
    ]);
    let addr = server.addr("echo");
    let mut open: Vec<TcpStream> = (0..5).map(|_| connect(addr)).collect();
    let echo = |s: &mut TcpStream, text: &[u8]| {
        s.write_all(text).unwrap();
        assert_eq!(read_exact(s, text.len()), text);
    };
    echo(&mut open[0], b"first");
    // Idle for more than --evict-idle-after, while the others talk after
    // it: the first is the idlest.
    thread::sleep(Duration::from_millis(1200));
    for s in &mut open[1..] {
        echo(s, b"later");
    }
    let mut newcomer = connect(addr);
    echo(&mut newcomer, b"admitted");
    // The idlest was ended as an idle close: end of stream, not a reset.
    assert_eq!(read_until_closed(&mut open[0]), (Vec::new(), None));
    for s in &mut open[1..] {
        echo(s, b"unaffected");
    }
    wait_closed_by(&server, "echo", "evicted", 1);
    let metrics = support::admin(&server, "metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "tcp_reactor_closed_total{service=\"echo\",cause=\"evicted\"} 1"),
        "{metrics}"
    );
}

#[test]
fn at_max_conns_a_newcomer_is_refused_when_no_connection_is_idle_long_enough() {
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=echo",
        "--max-conns",
        "2",
        "--evict-idle-after",
        "600",
    ]);
    let addr = server.addr("echo");
    let mut open: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
    for s in &mut open {
        s.write_all(b"in").unwrap();
        assert_eq!(read_exact(s, 2), b"in");
    }
    assert_eq!(
        support::read_to_end(&mut connect(addr)),
        b"ERR server full\n"
    );
}
