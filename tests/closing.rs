//! The closing model against a real server: when the server ends a
//! conversation (signal, idle timeout) it stops reading but answers what it
//! read; a transfer that cannot complete ends with a reset; output is cut
//! only at line boundaries. Each test is named after the defect it pins.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{
    Pattern, Server, WAIT, admin, connect, json_number, json_text, read_until_closed, wait_for_row,
};

/// Writes the pattern until the server stops taking it (the client would
/// block); returns how many bytes were taken.
fn fill_pattern_until_blocked(stream: &mut TcpStream, pattern: &Pattern) -> u64 {
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut sent = 0u64;
    loop {
        match stream.write(pattern.slice(sent, 60_000)) {
            Ok(n) => sent += n as u64,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                stream.set_write_timeout(Some(WAIT)).unwrap();
                return sent;
            }
            Err(e) => panic!("write: {e}"),
        }
        assert!(sent < 1 << 30, "never blocked");
    }
}

/// Waits until the server has paused reading `client` and stopped taking
/// bytes from its kernel queue; returns the bytes it has read from it so
/// far. A paused connection can still resume before the signal lands (the
/// client's kernel may take more of what the server sends, read or not, as
/// it compacts its queue), so what the server read in all comes from its
/// close line ([`closed_bytes_in`]).
fn paused_bytes_in(server: &Server, client: SocketAddr, service: &str) -> u64 {
    let row = wait_for_row(server, client, service, |row| {
        row.is_some_and(|r| {
            json_text(r, "state") == "paused" && json_number(r, "kernel_recv_queue") > Some(0)
        })
    })
    .expect("the connection is open");
    json_number(&row, "bytes_in").expect("bytes_in is a number")
}

/// The bytes the server read from `client` in all, from the line it logs
/// at debug level (`-v`) when it closes the connection.
fn closed_bytes_in(server: &Server, client: SocketAddr, service: &str) -> u64 {
    let needle = format!(" {client} ({service}): closed (");
    assert!(server.wait_for_log(&needle), "no close line for {client}");
    let line = server
        .log()
        .into_iter()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no close line for {client}"));
    let before = line.split(" bytes in, ").next().expect("split");
    before
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {line:?}"))
}

fn kill(signal: &str, pid: u32) {
    assert!(
        Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .expect("run kill")
            .success()
    );
}

#[test]
fn regression_sigterm_drops_input_read_from_an_echo_client_paused_by_backpressure() {
    // Fixed kernel buffers: autotuning could otherwise grow the send buffer
    // after the pause is seen, let the server write, resume and read more.
    let mut server = Server::start(&[
        "-l",
        "127.0.0.1:0=echo",
        "-l",
        "127.0.0.1:0=admin",
        "--so-sndbuf",
        "64K",
        "--so-rcvbuf",
        "64K",
        "-v",
    ]);
    let pattern = Pattern::new();
    let mut client = connect(server.addr("echo"));
    fill_pattern_until_blocked(&mut client, &pattern);
    let peer = client.local_addr().unwrap();
    let paused = paused_bytes_in(&server, peer, "echo");
    kill("TERM", server.pid());
    let (echoed, ended_by) = read_until_closed(&mut client);
    assert_eq!(ended_by, None, "a clean close");
    let taken = closed_bytes_in(&server, peer, "echo");
    assert!(taken >= paused, "read {taken} in all, {paused} when paused");
    assert_eq!(
        echoed.len() as u64,
        taken,
        "every byte the server read comes back"
    );
    assert!(pattern.matches(0, &echoed), "in order, unchanged");
    assert_eq!(server.signal_and_wait("0").code(), Some(0));
}

#[test]
fn regression_sigterm_drops_complete_lines_read_from_a_paused_ack_client() {
    let mut server = Server::start(&[
        "-l",
        "127.0.0.1:0=ack",
        "-l",
        "127.0.0.1:0=admin",
        "--reply",
        "ok",
        "--so-sndbuf",
        "64K",
        "--so-rcvbuf",
        "64K",
        "-v",
    ]);
    let mut client = connect(server.addr("ack"));
    client
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let lines = b"0123456\n".repeat(8192);
    loop {
        match client.write(&lines) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    let peer = client.local_addr().unwrap();
    let paused = paused_bytes_in(&server, peer, "ack");
    kill("TERM", server.pid());
    let (replies, ended_by) = read_until_closed(&mut client);
    assert_eq!(ended_by, None, "a clean close");
    let taken = closed_bytes_in(&server, peer, "ack");
    assert!(taken >= paused, "read {taken} in all, {paused} when paused");
    assert_eq!(
        replies.len() as u64 / 3,
        taken / 8,
        "one reply for each complete line the server read"
    );
    assert_eq!(server.signal_and_wait("0").code(), Some(0));
}

#[test]
fn regression_idle_timeout_reads_and_discards_from_a_paused_echo_client() {
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=echo",
        "-l",
        "127.0.0.1:0=admin",
        "--idle-timeout",
        "1",
    ]);
    let pattern = Pattern::new();
    let mut client = connect(server.addr("echo"));
    fill_pattern_until_blocked(&mut client, &pattern);
    let peer = client.local_addr().unwrap();
    // The idle deadline passes with the client blocked: the server ends the
    // conversation, and reads nothing more.
    let row = wait_for_row(&server, peer, "echo", |row| {
        row.is_none_or(|r| !matches!(json_text(r, "state"), "paused" | "reading"))
    })
    .expect("still open: the client has not read its echo yet");
    let taken = json_number(&row, "bytes_in").unwrap();
    let (echoed, ended_by) = read_until_closed(&mut client);
    assert_eq!(ended_by, None, "a clean close");
    assert_eq!(echoed.len() as u64, taken, "every byte read is echoed");
    assert!(pattern.matches(0, &echoed));
    let stats = admin(&server, "stats json");
    let echo = &stats[stats.find("\"echo\":").unwrap()..];
    assert_eq!(
        json_number(echo, "bytes_in"),
        Some(taken),
        "nothing read after the deadline"
    );
}

#[test]
fn regression_short_echo_with_a_first_message_of_exactly_the_buffer_never_closes() {
    let server = Server::start(&["-l", "127.0.0.1:0=echo", "--short", "--recv-buf", "64K"]);
    let mut client = connect(server.addr("echo"));
    // The whole message waits in the server's kernel queue before it reads:
    // its first read then fills the receive buffer exactly, and the socket
    // runs dry only on the next read, with the buffer already empty.
    kill("STOP", server.pid());
    let message = Pattern::bytes(64 * 1024);
    client.write_all(&message).unwrap();
    let deadline = Instant::now() + WAIT;
    while tcp_reactor::sys::send_queue(&client).unwrap() > 0 {
        assert!(Instant::now() < deadline, "loopback never took the message");
        std::thread::sleep(Duration::from_millis(5));
    }
    kill("CONT", server.pid());
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (echoed, ended_by) = read_until_closed(&mut client);
    assert_eq!(ended_by, None, "closed after the first burst");
    assert_eq!(echoed, message);
}

#[test]
fn regression_a_files_request_longer_than_the_receive_buffer_is_cut_to_fit() {
    let root = support::TempDir::new("closing-long-name");
    std::fs::write(root.path().join("abcdefghijkl"), "wrong file").unwrap();
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=files",
        "--root",
        root.arg(),
        "--recv-buf",
        "16",
    ]);
    let files = server.addr("files");
    let (answer, _) = exchange_until_closed(files, b"GET abcdefghijklmnopqrstuvwxyz.txt\n");
    assert_eq!(answer, b"ERR name too long\n");
    let (bare, _) = exchange_until_closed(files, b"abcdefghijklmnopqrstuvwxyz.txt");
    assert_eq!(bare, b"", "the bare form closes with no bytes");
}

fn exchange_until_closed(addr: SocketAddr, request: &[u8]) -> (Vec<u8>, Option<ErrorKind>) {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    let _ = stream.shutdown(Shutdown::Write);
    read_until_closed(&mut stream)
}

#[test]
fn regression_bytes_read_before_a_reset_never_reach_the_service() {
    // A chat line followed at once by the client's reset: the server reads
    // the line and then the reset, in one turn (it was stopped while both
    // arrived). The line must still be broadcast.
    let server = Server::start(&["-l", "127.0.0.1:0=chat"]);
    let chat = server.addr("chat");
    let mut listener = BufReader::new(connect(chat));
    let sender = connect(chat);
    let mut line = String::new();
    listener.read_line(&mut line).unwrap();
    assert!(line.ends_with("joined\n"), "{line:?}");
    let from = sender.local_addr().unwrap();
    kill("STOP", server.pid());
    (&sender).write_all(b"last words\n").unwrap();
    let deadline = Instant::now() + WAIT;
    while tcp_reactor::sys::send_queue(&sender).unwrap() > 0 {
        assert!(Instant::now() < deadline, "loopback never took the line");
        std::thread::sleep(Duration::from_millis(5));
    }
    tcp_reactor::sys::reset_on_close(&sender).unwrap();
    drop(sender);
    kill("CONT", server.pid());
    line.clear();
    listener.read_line(&mut line).unwrap();
    assert_eq!(line, format!("[{from}] last words\n"));
}

/// Reads a chat stream to its end; every line must be whole and be one of
/// the forms the server sends. Returns the lines.
fn whole_lines(stream: &mut TcpStream) -> Vec<String> {
    let (bytes, ended_by) = read_until_closed(stream);
    assert_eq!(ended_by, None, "a clean close");
    let text = String::from_utf8(bytes).expect("chat text");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "output cut inside a line: ...{:?}",
        &text[text.len().saturating_sub(80)..]
    );
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    for l in &lines {
        let ok = (l.starts_with("[127.0.0.1:") && l.ends_with(" flood line"))
            || (l.starts_with("* ") && (l.ends_with(" joined") || l.contains(" left")))
            || l == "* disconnected: too slow"
            || l == "ERR line too long";
        assert!(ok, "a line broken by another: {l:?}");
    }
    lines
}

/// Sends flood lines from `flooder` until `until` holds (checked every
/// batch), bounded in count.
fn flood(flooder: &mut TcpStream, until: impl Fn() -> bool) {
    let batch = b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx flood line\n".repeat(64);
    for _ in 0..20_000 {
        if until() {
            return;
        }
        flooder.write_all(&batch).unwrap();
    }
    panic!("the condition never held");
}

#[test]
fn regression_the_too_slow_farewell_lands_inside_a_half_sent_line() {
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=chat",
        "-l",
        "127.0.0.1:0=admin",
        "--send-buf",
        "16K",
    ]);
    let chat = server.addr("chat");
    let mut slow = connect(chat);
    let mut flooder = connect(chat);
    let slow_peer = slow.local_addr().unwrap();
    flood(&mut flooder, || {
        let clients = admin(&server, "clients json");
        !clients.contains(&format!("\"peer\":\"{slow_peer}\""))
            || server.log().iter().any(|l| l.contains("too slow"))
    });
    let lines = whole_lines(&mut slow);
    assert_eq!(
        lines.last().map(String::as_str),
        Some("* disconnected: too slow")
    );
}

#[test]
fn regression_err_line_too_long_lands_inside_a_half_sent_line() {
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=chat",
        "-l",
        "127.0.0.1:0=admin",
        "--recv-buf",
        "1K",
        "--send-buf",
        "1M",
    ]);
    let chat = server.addr("chat");
    let mut reader = connect(chat);
    let mut flooder = connect(chat);
    let peer = reader.local_addr().unwrap();
    // Flood until the reader's kernel queue is full and lines wait for it in
    // the server: the oldest of them is then most likely half sent.
    flood(&mut flooder, || {
        let row = support::client_json(&admin(&server, "clients json"), peer);
        json_number(&row, "send_buf_used") > Some(0)
            && json_number(&row, "kernel_send_unsent") > Some(0)
    });
    reader.write_all(&[b'y'; 4096]).unwrap();
    let lines = whole_lines(&mut reader);
    assert!(lines.iter().any(|l| l == "ERR line too long"), "{lines:?}");
}

#[test]
fn regression_two_signals_drained_at_once_start_a_graceful_shutdown() {
    let mut server = Server::start(&["-l", "127.0.0.1:0=echo", "--shutdown-timeout", "60"]);
    // A client that owes nothing but never closes keeps a shutdown waiting.
    let mut hog = connect(server.addr("echo"));
    hog.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    hog.read_exact(&mut byte).unwrap();
    // Stopped, the server takes both signals in one drain of its pipe.
    kill("STOP", server.pid());
    kill("INT", server.pid());
    kill("TERM", server.pid());
    kill("CONT", server.pid());
    let status = server.signal_and_wait("0");
    assert_eq!(status.code(), Some(130), "log: {:?}", server.log());
}

#[test]
fn regression_an_admin_answer_nobody_reads_holds_the_shutdown_until_its_timeout() {
    let mut server = Server::start(&[
        "-l",
        "127.0.0.1:0=admin",
        "-l",
        "127.0.0.1:0=echo",
        "--shutdown-timeout",
        "60",
        "--send-buf",
        "4K",
        "--so-sndbuf",
        "4K",
    ]);
    // Enough connections that the `clients` table outgrows every buffer on
    // its way to an operator who does not read it.
    let idle: Vec<TcpStream> = (0..300).map(|_| connect(server.addr("echo"))).collect();
    let operator =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    operator.set_recv_buffer_size(4096).unwrap();
    operator.connect(&server.addr("admin").into()).unwrap();
    let mut operator = TcpStream::from(operator);
    operator.write_all(b"clients\n").unwrap();
    let peer = operator.local_addr().unwrap();
    wait_for_row(&server, peer, "admin", |row| {
        row.is_some_and(|r| json_number(r, "send_buf_used") > Some(0))
    });
    // Waits at most `WAIT` (20 s), well short of the 60 s timeout.
    let status = server.signal_and_wait("TERM");
    assert_eq!(status.code(), Some(0), "log: {:?}", server.log());
    drop(idle);
}
