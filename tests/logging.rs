//! The log never blocks or kills the server: its stderr closed, its stderr
//! a pipe nobody reads, a terminal nobody reads, and a client that sends a
//! flood of tiny messages.
//! Each test drives the real binary on loopback port 0, every wait bounded,
//! every process killed at the end. Not covered here: the queue's own rules
//! (unit tests in `src/logsink.rs`).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{Server, WAIT, admin_at, binary, connect, json_number, wait_bounded};

/// The longest one round trip may take while the log reader misbehaves:
/// far above a loaded machine's latency, far below "blocked for good".
const ROUND_TRIP: Duration = Duration::from_secs(5);

/// A server whose stderr the test holds itself, killed on drop.
struct Piped {
    child: Child,
    addr: SocketAddr,
}

impl Piped {
    /// Starts `serve args` (one listener) with stderr piped, and reads the
    /// log only up to the `listening on` line; returns the rest of the pipe
    /// unread, for the test to close or to leave alone.
    fn start(args: &[&str]) -> (Piped, BufReader<ChildStderr>) {
        let mut child = Command::new(binary())
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the server");
        let stderr = child.stderr.take().expect("stderr was piped");
        // Read on a thread, so that a server that never logs its address
        // fails the test after WAIT instead of hanging it.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return tx.send(None),
                    Ok(_) => {}
                }
                if let Some(rest) = line.trim_end().split("listening on ").nth(1) {
                    let addr = rest.split(" (").next().expect("split yields one item");
                    let addr: SocketAddr = addr.parse().expect("bound address");
                    return tx.send(Some((addr, reader)));
                }
            }
        });
        let got = rx.recv_timeout(WAIT);
        let Ok(Some((addr, reader))) = got else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not log its address");
        };
        (Piped { child, addr }, reader)
    }

    /// Panics if the server has exited.
    fn assert_alive(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().expect("query the server") {
            panic!("{when}: server exited with {status}");
        }
    }

    /// How the server exited, if it does within a second (a server that
    /// closed a client by dying is still exiting when the client notices).
    fn status_soon(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return format!("exited with {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        "still running".to_string()
    }

    fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        wait_bounded(&mut self.child)
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `lines` newline-terminated messages on `stream` and reads the
/// `OK` reply of each; the error names what went wrong (the old server,
/// killed by its log, closes the connection instead).
fn round_trips(stream: &mut TcpStream, tag: &str, lines: usize) -> Result<(), String> {
    stream
        .set_read_timeout(Some(ROUND_TRIP))
        .expect("set timeout");
    let text: String = (0..lines).map(|i| format!("{tag} message {i}\n")).collect();
    stream
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let expected = b"OK\n".repeat(lines);
    let mut got = vec![0; expected.len()];
    let started = Instant::now();
    stream
        .read_exact(&mut got)
        .map_err(|e| format!("{tag}: no replies within {ROUND_TRIP:?}: {e}"))?;
    assert_eq!(got, expected, "{tag}");
    assert!(started.elapsed() <= ROUND_TRIP + Duration::from_secs(1));
    Ok(())
}

#[test]
fn a_closed_log_pipe_does_not_kill_the_server() {
    let (mut server, log) = Piped::start(&["-l", "127.0.0.1:0=ack", "--reply", "OK"]);
    // The reader goes away, as `serve 2>&1 | head -1` does.
    drop(log);
    for n in 0..3 {
        let mut client = connect(server.addr);
        if let Err(e) = round_trips(&mut client, &format!("client{n}"), 5) {
            panic!("{e}; server: {}", server.status_soon());
        }
    }
    server.assert_alive("after logging to a closed pipe");
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status}");
}

#[test]
fn a_stalled_log_pipe_does_not_block_the_server() {
    // -v logs every open and close as well as the messages: each
    // connection below is about two kilobytes of log, and 200 of them many
    // times what a pipe (64 KiB) and the sink's queue (64 KiB) hold.
    let (mut server, log) = Piped::start(&["-v", "-l", "127.0.0.1:0=ack", "--reply", "OK"]);
    for n in 0..200 {
        let mut client = connect(server.addr);
        if let Err(e) = round_trips(&mut client, &format!("client{n}"), 25) {
            panic!(
                "with nobody reading the log: {e}; server: {}",
                server.status_soon()
            );
        }
    }
    server.assert_alive("with a full log pipe");
    assert_eq!(threads(server.child.id()), 1, "no writer thread");
    // Now read the log: the backlog comes out, then the report of what the
    // full queue dropped.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in log.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let report = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("log lines dropped") => break line,
            Ok(_) => {}
            Err(_) => panic!("no dropped-lines report within {WAIT:?}"),
        }
    };
    assert!(
        report.contains(" WARN  [tcp_reactor::logsink] "),
        "report in the usual format: {report}"
    );
    let count: u64 = report
        .split_once("] ")
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("count in {report}"));
    assert!(count > 0, "{report}");
    // And it still serves, and logs, once the reader is back.
    let mut client = connect(server.addr);
    round_trips(&mut client, "after", 1).expect("serve after the stall");
    server.assert_alive("after the stall");
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status}");
    let summary = rx
        .iter()
        .find(|l| l.contains("served "))
        .expect("the summary line reaches the reader");
    assert!(summary.contains("connections"), "{summary}");
}

/// `Threads:` of /proc/PID/status.
fn threads(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads in /proc status")
}

#[test]
fn an_ack_flood_of_bare_newlines_logs_a_bounded_number_of_lines() {
    let server = Server::start(&["-l", "127.0.0.1:0=ack", "--reply", "OK"]);
    let addr = server.addr("ack");
    let mut client = connect(addr);
    let mut writer = client.try_clone().expect("clone the stream");
    // Write from a thread while this one reads the replies, so neither side
    // waits for the other's buffers.
    let sender = std::thread::spawn(move || {
        writer.write_all(&[b'\n'; 65_536]).expect("send the flood");
        writer.write_all(b"exit\n").expect("send exit");
    });
    let replies = support::read_to_end(&mut client);
    sender.join().expect("sender thread");
    assert_eq!(replies.len(), 3 * 65_536, "one reply per message");
    assert!(
        server.wait_for_log(": exit"),
        "exit line: {:?}",
        server.log()
    );
    let prefix = format!("] ack {}: ", client.local_addr().expect("local address"));
    let lines: Vec<String> = server
        .log()
        .into_iter()
        .filter(|l| l.contains(&prefix))
        .collect();
    let shown = lines.iter().filter(|l| !l.contains(": exit")).count() as u64;
    let not_logged: u64 = lines
        .iter()
        .filter_map(|l| {
            let (_, tail) = l.rsplit_once(" (")?;
            let count = tail
                .strip_suffix(" messages not logged)")
                .or_else(|| tail.strip_suffix(" message not logged)"))?;
            count.parse::<u64>().ok()
        })
        .sum();
    assert!(
        shown < 100,
        "{shown} ack lines for one client's flood: the log grows with it"
    );
    assert_eq!(
        shown + not_logged,
        65_536,
        "every message is either logged or counted: {lines:?}"
    );
}

#[test]
fn a_stalled_terminal_does_not_block_the_server() {
    // A terminal whose reader stopped reading (an ssh session behind a dead
    // link): the pty's buffers fill, `poll` still says POLLOUT while a few
    // bytes fit, and a blocking write of a 4 KiB chunk then waits for a
    // reader that never comes.
    let (master, slave) = tcp_reactor::sys::open_pty().expect("a pseudo-terminal");
    let child = Command::new(binary())
        .args(["serve", "-v", "--reply", "OK"])
        .args(["-l", "127.0.0.1:0=ack", "-l", "127.0.0.1:0=admin"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("spawn the server");
    let mut server = Piped {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    // Read the terminal only up to the two `listening on` lines, on a
    // thread so that a silent server fails the test after WAIT; from then
    // on nobody reads it (the master stays open here).
    let reader = std::fs::File::from(master.try_clone().expect("clone the master"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut found, mut private) = (Vec::new(), false);
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            private |= line.contains("through a private non-blocking description");
            if let Some(rest) = line.trim_end().split("listening on ").nth(1) {
                let (addr, service) = rest.split_once(" (").expect("listening line format");
                let addr: SocketAddr = addr.parse().expect("bound address");
                found.push((service.trim_end_matches(')').to_string(), addr));
                if found.len() == 2 {
                    break;
                }
            }
        }
        let _ = tx.send((found, private));
    });
    let (found, private) = rx
        .recv_timeout(WAIT)
        .expect("the server logs its addresses");
    let addr_of = |service: &str| {
        found
            .iter()
            .find(|(s, _)| s == service)
            .unwrap_or_else(|| panic!("no {service} in {found:?}"))
            .1
    };
    let (ack, admin) = (addr_of("ack"), addr_of("admin"));
    server.addr = ack;
    // Each connection is about two kilobytes of log (-v: open, close, and
    // every message): 200 of them are many times what the terminal's
    // buffers and the sink's queue hold.
    for n in 0..200 {
        let mut client = connect(ack);
        if let Err(e) = round_trips(&mut client, &format!("client{n}"), 25) {
            panic!(
                "with nobody reading the terminal: {e}; server: {}",
                server.status_soon()
            );
        }
    }
    server.assert_alive("with a stalled terminal");
    let stats = admin_at(admin, "stats json");
    let dropped = json_number(&stats, "log_lines_dropped").expect("a count");
    assert!(
        dropped > 0,
        "the stalled terminal's lines are dropped: {stats}"
    );
    assert!(private, "the sink writes through a description of its own");
    // The terminal's shared description (fd 2, which the shell and every
    // other process on the terminal use) stays blocking.
    let fdinfo = std::fs::read_to_string(format!("/proc/{}/fdinfo/2", server.child.id()))
        .expect("read fdinfo");
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .expect("flags in fdinfo");
    assert_eq!(flags & 0o4000, 0, "O_NONBLOCK set on fd 2: {fdinfo}");
    drop(master);
}
