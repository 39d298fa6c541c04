//! `--congestion`, `--notsent-lowat` and `--backlog`, seen from outside as
//! the kernel shows them: `ss -ti` names each accepted socket's congestion
//! control and its bytes not yet sent (`notsent:`), and `ss -lnt` shows a
//! listener's backlog as its Send-Q. (`ss` does not show the low-water mark
//! itself, only what it does to the unsent bytes.) Skipped, with one line,
//! where `ss` is missing. That the options reach accepted sockets through
//! the listener is unit-tested in `src/sys.rs`.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use support::{Server, connect, fill_until_blocked};

/// `ss ARGS... ( sport = :PORT )` with no header, or `None` when `ss`
/// cannot run.
fn ss(args: &[&str], port: u16) -> Option<String> {
    let filter = format!("( sport = :{port} )");
    let out = Command::new("ss").args(args).arg(&filter).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
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

/// `ss -ti` of the server's side of its one established connection on
/// `server`'s port: the socket line and the line of TCP details, joined.
fn server_side_info(server: SocketAddr) -> String {
    let text = ss(&["-tinH", "state", "established"], server.port()).expect("ss runs");
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(!joined.is_empty(), "one established connection: {text}");
    joined
}

/// The system's default congestion control, and another this process may
/// set: `None` when there is no other.
fn default_and_other_congestion() -> Option<(String, String)> {
    let read = |name: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).ok();
    let default = read("tcp_congestion_control")?.trim().to_string();
    // Without root only the allowed ones may be set; root may set any loaded.
    let allowed = read("tcp_allowed_congestion_control")?;
    let available = read("tcp_available_congestion_control")?;
    let root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")));
    let pool = if root { available } else { allowed };
    let other = pool.split_whitespace().find(|a| *a != default)?.to_string();
    Some((default, other))
}

/// The figure after `key:` in an `ss -ti` line (`notsent:4096`).
fn ss_figure(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix(':')?.parse().ok())
}

#[test]
fn congestion_flag_sets_the_algorithm_ss_shows_on_accepted_sockets() {
    if !ss_works() {
        return;
    }
    let Some((default, other)) = default_and_other_congestion() else {
        eprintln!("SKIPPED: no congestion control here besides the default");
        return;
    };
    for (args, want) in [
        (vec!["--congestion", other.as_str()], other.as_str()),
        (vec![], default.as_str()),
    ] {
        let mut all = vec!["-l", "127.0.0.1:0=echo"];
        all.extend_from_slice(&args);
        let server = Server::start(&all);
        let addr = server.addr("echo");
        // The handshake is complete on return from connect; the server's
        // side exists in the kernel, with the listener's options, whether or
        // not the server has accepted it yet.
        let _client = connect(addr);
        let info = server_side_info(addr);
        assert!(
            info.split_whitespace().any(|w| w == want),
            "{args:?}: ss -ti should name {want}: {info}"
        );
    }
}

#[test]
fn congestion_flag_not_available_is_one_line_and_exit_code_2() {
    let out = support::run_binary(
        &[
            "serve",
            "-l",
            "127.0.0.1:0=echo",
            "--congestion",
            "no-such-cc",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--congestion no-such-cc: not available here (available: "),
        "{err}"
    );
}

#[test]
fn notsent_lowat_keeps_unsent_bytes_out_of_the_kernel_send_queue() {
    if !ss_works() {
        return;
    }
    const LOWAT: u64 = 16 * 1024;
    // What one write may add past the mark: the kernel checks the mark
    // before each segment it builds, and a loopback segment is up to 64K;
    // twice that, for a wide margin.
    const ONE_WRITE: u64 = 128 * 1024;
    let unsent = |args: &[&str]| {
        let mut all = vec!["-l", "127.0.0.1:0=echo"];
        all.extend_from_slice(args);
        let server = Server::start(&all);
        let addr = server.addr("echo");
        // The client writes and never reads: the echo backs up into the
        // server's kernel send queue, until everything stops.
        let mut client = connect(addr);
        fill_until_blocked(&mut client);
        let info = server_side_info(addr);
        ss_figure(&info, "notsent").unwrap_or(0)
    };
    let with = unsent(&["--notsent-lowat", "16K"]);
    assert!(
        with <= LOWAT + ONE_WRITE,
        "--notsent-lowat 16K: {with} bytes unsent in the kernel"
    );
    let without = unsent(&[]);
    assert!(
        without > LOWAT + ONE_WRITE,
        "without --notsent-lowat the kernel holds more than {}: {without} unsent",
        LOWAT + ONE_WRITE
    );
}

#[test]
fn backlog_flag_is_the_listeners_send_q_in_ss() {
    if !ss_works() {
        return;
    }
    let somaxconn: u64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    for (args, want) in [(vec!["--backlog", "7"], 7), (vec![], somaxconn.min(4096))] {
        let mut all = vec!["-l", "127.0.0.1:0=echo"];
        all.extend_from_slice(&args);
        let server = Server::start(&all);
        let text = ss(&["-lntH"], server.addr("echo").port()).expect("ss runs");
        // State, Recv-Q, Send-Q, ...: for a listener Send-Q is its backlog.
        let send_q: Option<u64> = text.split_whitespace().nth(2).and_then(|w| w.parse().ok());
        assert_eq!(send_q, Some(want), "{args:?}: {text}");
    }
}

#[test]
fn backlog_flag_out_of_range_is_one_line_and_exit_code_2() {
    for bad in ["0", "-1", "x", "4294967296"] {
        let flag = format!("--backlog={bad}");
        let out = support::run_binary(&["serve", "-l", "127.0.0.1:0=echo", &flag], b"");
        assert_eq!(out.status.code(), Some(2), "--backlog {bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--backlog"), "{err}");
    }
}

#[test]
fn congestion_not_allowed_without_privilege_is_one_line_naming_the_allowed_list() {
    let read = |name: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).ok();
    let (Some(available), Some(allowed)) = (
        read("tcp_available_congestion_control"),
        read("tcp_allowed_congestion_control"),
    ) else {
        eprintln!("SKIPPED: no congestion control lists in /proc");
        return;
    };
    let root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")));
    let Some(forbidden) = available
        .split_whitespace()
        .find(|a| !allowed.split_whitespace().any(|b| b == *a))
    else {
        eprintln!("SKIPPED: every available algorithm is allowed to everyone here");
        return;
    };
    // Run as nobody: only root can drop to another user, with setpriv.
    let setpriv = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    if !root || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIPPED: needs root and setpriv to run the server unprivileged");
        return;
    }
    let mut child = Command::new("setpriv")
        .args(setpriv)
        .arg(support::binary())
        .args(["serve", "-l", "127.0.0.1:0=echo", "--congestion", forbidden])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn setpriv");
    let status = support::wait_bounded(&mut child);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut err)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("--congestion {forbidden}: not permitted"))
            && err.contains("tcp_allowed_congestion_control"),
        "{err}"
    );
}
