//! TCP keepalive on accepted connections, seen from outside as the kernel
//! shows it: `ss -o` lists a `keepalive` timer on each of the server's
//! established sockets. A peer that vanishes without a FIN is then found
//! and reset by the kernel, instead of holding its slot forever. Skipped
//! (with one line) where `ss` is missing. That the options reach accepted
//! sockets through the listener is unit-tested in `src/sys.rs`.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use support::{Server, connect};

/// The `ss -tnoH` line of the server's side of the one established
/// connection on `server`'s port, or `None` when `ss` cannot run.
fn server_side(server: SocketAddr) -> Option<String> {
    let filter = format!("( sport = :{} )", server.port());
    let out = Command::new("ss")
        .args(["-tnoH", "state", "established", &filter])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one established connection: {text}");
    Some(lines[0].to_string())
}

/// The keepalive timer on the server's side of a fresh connection to the
/// echo service of a server started with `args`: `Some(line)` if the timer
/// is there, `None` if not; `Err` when `ss` cannot run.
fn keepalive_timer(args: &[&str]) -> Result<Option<String>, ()> {
    let mut all = vec!["-l", "127.0.0.1:0=echo"];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    let addr = server.addr("echo");
    let _client = connect(addr);
    // The handshake is complete on return from connect; the server's side
    // is established in the kernel whether or not it has accepted it yet,
    // and the options were copied from the listener at that moment.
    let line = server_side(addr).ok_or(())?;
    Ok(line.contains("timer:(keepalive,").then_some(line))
}

fn ss_works() -> bool {
    let ok = Command::new("ss")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: `ss` (iproute2) is not available");
    }
    ok
}

#[test]
fn keepalive_is_on_by_default_so_a_vanished_peer_cannot_hold_its_slot() {
    if !ss_works() {
        return;
    }
    let line = keepalive_timer(&[])
        .expect("ss runs")
        .expect("a keepalive timer on an accepted socket with default flags");
    // The first probe after 300 s idle: the timer shows 4min and some
    // seconds (5min, 0sec just after the connect, on a slow ss).
    assert!(
        line.contains("timer:(keepalive,4min") || line.contains("timer:(keepalive,5min"),
        "{line}"
    );
}

#[test]
fn keepalive_secs_sets_the_idle_time_and_zero_turns_it_off() {
    if !ss_works() {
        return;
    }
    let line = keepalive_timer(&["--keepalive", "20"])
        .expect("ss runs")
        .expect("a keepalive timer with --keepalive 20");
    let timer = line
        .split("timer:(keepalive,")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .expect("the timer's time");
    // At most 20 s, and not in minutes.
    assert!(
        timer.ends_with("sec") && !timer.contains("min"),
        "{timer} in {line}"
    );
    let secs: f64 = timer
        .trim_end_matches("sec")
        .parse()
        .unwrap_or_else(|_| panic!("seconds in {timer}"));
    assert!(secs <= 20.0, "{line}");
    assert_eq!(
        keepalive_timer(&["--keepalive", "0"]).expect("ss runs"),
        None,
        "--keepalive 0 turns it off"
    );
}

#[test]
fn keepalive_flag_out_of_range_is_one_line_and_exit_code_2() {
    for bad in ["-1", "32768", "5m", ""] {
        let flag = format!("--keepalive={bad}");
        let out = support::run_binary(&["serve", &flag], b"");
        assert_eq!(out.status.code(), Some(2), "--keepalive {bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--keepalive"), "{err}");
    }
}
