//! The descriptor limit: the server fits `--max-conns` to what its
//! `RLIMIT_NOFILE` allows (raising the soft limit, or lowering the cap and
//! saying so), and a newcomer at the limit is refused in words, never left
//! hanging in the backlog. Each test runs the real binary under `prlimit`
//! on loopback port 0, every wait bounded, every process killed at the end.
//! Not covered here: the arithmetic of the budget (unit tests in
//! `src/limits.rs`).

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::{Server, admin, connect, json_number};

/// How long a newcomer may wait for its first byte before it counts as
/// hung: far above a loaded machine's latency, far below a test's patience.
const ANSWER: Duration = Duration::from_secs(5);

/// What one new client got for its byte `x`.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// Its byte echoed: it is being served.
    Served,
    /// A line from the server, then the close.
    Refused(String),
    /// Nothing within [`ANSWER`].
    Hung,
}

/// Connects a new client to the echo service at `addr`, sends one byte,
/// and waits (bounded) for what comes back. The stream is returned so a
/// served client stays open.
fn newcomer(addr: SocketAddr) -> (TcpStream, Fate) {
    let mut stream = connect(addr);
    stream.set_read_timeout(Some(ANSWER)).unwrap();
    stream.write_all(b"x").expect("send one byte");
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got == b"x" {
                    return (stream, Fate::Served);
                }
                if got.ends_with(b"\n") {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (stream, Fate::Hung);
            }
            // A reset after the line: the line is what counts.
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&got).trim_end().to_string();
    (stream, Fate::Refused(text))
}

/// Opens clients until one is not served, at most `most`: the served ones
/// (still open) and the fate of the first that was not (`None` if all were).
fn fill(addr: SocketAddr, most: usize) -> (Vec<TcpStream>, Option<Fate>) {
    let mut served = Vec::new();
    for _ in 0..most {
        match newcomer(addr) {
            (stream, Fate::Served) => served.push(stream),
            (_, fate) => return (served, Some(fate)),
        }
    }
    (served, None)
}

/// `Max open files` (soft, hard) of process `pid`, from /proc.
fn open_files_limit(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc limits");
    let mut numbers = line
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    let soft = numbers.next().expect("soft limit");
    let hard = numbers.next().expect("hard limit");
    (soft, hard)
}

/// Makes sure this test process can hold `n` more sockets, raising its own
/// soft limit if needed; false (the test then skips) if the hard limit is
/// too low.
fn can_hold(n: u64) -> bool {
    let (soft, hard) = tcp_reactor::sys::nofile_limit().expect("getrlimit");
    let want = n + 256;
    if soft >= want {
        return true;
    }
    if hard < want {
        eprintln!("SKIPPED: this process's hard descriptor limit {hard} is below {want}");
        return false;
    }
    tcp_reactor::sys::set_nofile_soft(want).expect("raise the soft limit");
    true
}

#[test]
fn descriptor_limit_too_low_for_max_conns_lowers_the_cap_and_refuses_in_words() {
    if !can_hold(300) {
        return;
    }
    // soft = hard = 256: no raising possible; the default --max-conns 10000
    // cannot be held.
    let mut server = Server::start_under(
        &["prlimit", "--nofile=256:256", "--"],
        &["-l", "127.0.0.1:0=echo", "-l", "127.0.0.1:0=admin"],
    );
    let echo = server.addr("echo");
    let (served, fate) = fill(echo, 300);
    assert_eq!(
        fate,
        Some(Fate::Refused("ERR server full".into())),
        "after {} clients were served",
        served.len()
    );
    // The operator can still ask, with every client slot taken.
    let stats = admin(&server, "stats json");
    let cap = json_number(&stats, "max_conns").expect("a cap, not null");
    assert_eq!(served.len() as u64, cap, "served up to the cap: {stats}");
    assert!(
        cap > 100 && cap < 256,
        "{cap} connections in 256 descriptors"
    );
    assert!(
        admin(&server, "stats").contains(&format!("max-conns {cap}")),
        "the table names the cap too"
    );
    let warnings: Vec<String> = server
        .log()
        .into_iter()
        .filter(|l| l.contains(" WARN ") && l.contains("10000"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {:?}", server.log());
    assert!(
        warnings[0].contains(&cap.to_string()) && warnings[0].contains("256"),
        "the warning names both numbers and the limit: {}",
        warnings[0]
    );
    // And those admitted are still served.
    let mut first = served.into_iter().next().expect("one client served");
    first.write_all(b"y").unwrap();
    let mut b = [0u8; 1];
    first.read_exact(&mut b).expect("still served");
    assert_eq!(&b, b"y");
    server.assert_alive();
}

#[test]
fn descriptor_limit_soft_1024_is_raised_and_1200_clients_are_served() {
    const CLIENTS: usize = 1200;
    if !can_hold(CLIENTS as u64) {
        return;
    }
    let mut server = Server::start_under(
        &["prlimit", "--nofile=1024:20000", "--"],
        &["-l", "127.0.0.1:0=echo", "-l", "127.0.0.1:0=admin"],
    );
    let (served, fate) = fill(server.addr("echo"), CLIENTS);
    assert_eq!(fate, None, "after {} clients were served", served.len());
    assert_eq!(served.len(), CLIENTS);
    let (soft, hard) = open_files_limit(server.pid());
    assert_eq!(hard, 20_000);
    assert!(
        soft > 10_000,
        "soft limit {soft} not raised for 10,000 clients"
    );
    let stats = admin(&server, "stats json");
    assert_eq!(json_number(&stats, "max_conns"), Some(10_000), "{stats}");
    assert!(
        !server.log().iter().any(|l| l.contains(" WARN ")),
        "no warning when the limit could be raised: {:?}",
        server.log()
    );
    server.assert_alive();
}

#[test]
fn descriptor_limit_reached_without_a_cap_the_spare_descriptor_refuses_the_newcomer() {
    if !can_hold(100) {
        return;
    }
    // No cap: the process runs out of descriptors before any cap is met.
    let mut server = Server::start_under(
        &["prlimit", "--nofile=64:64", "--"],
        &[
            "-l",
            "127.0.0.1:0=echo",
            "-l",
            "127.0.0.1:0=admin",
            "--max-conns",
            "0",
        ],
    );
    let echo = server.addr("echo");
    let (mut served, fate) = fill(echo, 100);
    assert_eq!(
        fate,
        Some(Fate::Refused("ERR server full".into())),
        "after {} clients were served",
        served.len()
    );
    assert!(
        served.len() > 20,
        "{} served in 64 descriptors",
        served.len()
    );
    // Again: the spare is back after each refusal.
    let (_, again) = newcomer(echo);
    assert_eq!(again, Fate::Refused("ERR server full".into()));
    assert!(
        server.wait_for_log("out of descriptors"),
        "log: {:?}",
        server.log()
    );
    // One leaves: the next newcomer gets its place.
    drop(served.pop());
    let deadline = std::time::Instant::now() + support::WAIT;
    loop {
        let (stream, fate) = newcomer(echo);
        if fate == Fate::Served {
            served.push(stream);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a freed descriptor never admitted anyone: {fate:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.assert_alive();
}
