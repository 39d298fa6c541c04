//! Integration tests of the admin service and the kernel buffer options,
//! against a real server on port 0.

mod support;

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::process::Command;
use std::time::Duration;

use support::{
    Server, admin, client_json, connect, exchange, fill_until_blocked, json_number, read_exact,
    read_to_end, run_binary,
};

#[test]
fn stats_count_connections_and_bytes_per_service() {
    let server = Server::start(&["-l", "127.0.0.1:0=echo", "-l", "127.0.0.1:0=admin"]);
    for _ in 0..3 {
        assert_eq!(exchange(server.addr("echo"), b"12345"), b"12345");
    }
    let json = admin(&server, "stats json");
    assert_eq!(json.lines().count(), 1, "{json}");
    let echo = &json[json.find("\"echo\":").unwrap()..];
    assert_eq!(json_number(echo, "accepted"), Some(3));
    assert_eq!(json_number(echo, "bytes_in"), Some(15));
    assert_eq!(json_number(echo, "bytes_out"), Some(15));
    assert_eq!(
        json_number(echo, "peer"),
        Some(3),
        "three closed by the peer: {json}"
    );
    let text = admin(&server, "stats");
    assert!(
        text.lines()
            .any(|l| l.starts_with("echo ") && l.contains(" 3 ")),
        "{text}"
    );
    assert!(
        text.contains("closed:idle") && text.contains("refused:full"),
        "{text}"
    );
}

#[test]
fn clients_show_each_connection_with_buffers_and_state() {
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=echo",
        "-l",
        "127.0.0.1:0=admin",
        "--send-buf",
        "32K",
    ]);
    let mut quiet = connect(server.addr("echo"));
    quiet.write_all(b"hi").unwrap();
    assert_eq!(read_exact(&mut quiet, 2), b"hi");
    let mut hog = connect(server.addr("echo"));
    fill_until_blocked(&mut hog);

    let json = admin(&server, "clients json");
    assert_eq!(json.lines().count(), 1);
    let q = client_json(&json, quiet.local_addr().unwrap());
    assert!(
        q.contains("\"state\":\"reading\"") && q.contains("\"service\":\"echo\""),
        "{q}"
    );
    assert_eq!(json_number(&q, "bytes_in"), Some(2));
    assert_eq!(json_number(&q, "send_buf_used"), Some(0));
    let h = client_json(&json, hog.local_addr().unwrap());
    assert!(h.contains("\"state\":\"paused\""), "{h}");
    assert_eq!(json_number(&h, "send_buf_used"), Some(32 * 1024), "{h}");
    assert_eq!(json_number(&h, "send_buf_capacity"), Some(32 * 1024));
    assert!(json_number(&h, "kernel_recv_queue").unwrap() > 0, "{h}");
    assert!(json_number(&h, "kernel_send_queue").unwrap() > 0, "{h}");

    let table = admin(&server, "clients");
    let header = table.lines().next().unwrap();
    for column in [
        "recv_buf", "send_buf", "kern_rq", "kern_sq", "unsent", "rcvbuf", "sndbuf", "state",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = table
        .lines()
        .find(|l| l.contains(&hog.local_addr().unwrap().to_string()))
        .unwrap();
    assert!(row.contains(" paused "), "{row}");
    // The client reads nothing and its window is shut.
    assert!(row.trim_end().ends_with("peer-window"), "{row}");
    assert_eq!(support::json_text(&h, "limit"), "peer-window", "{h}");
    assert!(
        table.contains("doubles"),
        "the table says how to read SO_RCVBUF/SO_SNDBUF"
    );
}

/// Recv-Q and Send-Q of the established socket from `local` to `peer`, as
/// `ss` shows them.
fn ss_queues(local: SocketAddr, peer: SocketAddr) -> (u64, u64) {
    let out = Command::new("ss")
        .args(["-tnH", "state", "established"])
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 4 && f[2] == local.to_string() && f[3] == peer.to_string()
        })
        .unwrap_or_else(|| panic!("no {local} -> {peer} in ss output:\n{text}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[0].parse().unwrap(), f[1].parse().unwrap())
}

#[test]
fn kernel_queue_figures_equal_what_ss_shows() {
    let server = Server::start(&["-l", "127.0.0.1:0=echo", "-l", "127.0.0.1:0=admin"]);
    let mut hog = connect(server.addr("echo"));
    fill_until_blocked(&mut hog);
    let client = hog.local_addr().unwrap();
    let server_side = server.addr("echo");
    // The queues are held still by the blocked client; read them both ways,
    // a few times in case a last segment was still moving.
    let mut last = None;
    for _ in 0..10 {
        let before = ss_queues(server_side, client);
        let json = admin(&server, "clients json");
        let row = client_json(&json, client);
        let ours = (
            json_number(&row, "kernel_recv_queue").unwrap(),
            json_number(&row, "kernel_send_queue").unwrap(),
        );
        let after = ss_queues(server_side, client);
        if before == after && ours == after {
            assert!(
                ours.0 > 0 && ours.1 > 0,
                "queues should be held non-empty: {ours:?}"
            );
            return;
        }
        last = Some((before, ours, after));
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("admin and ss never agreed (ss before, admin, ss after): {last:?}");
}

#[test]
fn kernel_buffer_options_reach_accepted_sockets_doubled() {
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=echo",
        "-l",
        "127.0.0.1:0=admin",
        "--so-rcvbuf",
        "64K",
        "--so-sndbuf",
        "4K",
    ]);
    let stream = connect(server.addr("echo"));
    let json = admin(&server, "clients json");
    let row = client_json(&json, stream.local_addr().unwrap());
    assert_eq!(json_number(&row, "so_rcvbuf"), Some(2 * 64 * 1024), "{row}");
    assert_eq!(json_number(&row, "so_sndbuf"), Some(2 * 4 * 1024), "{row}");

    let default = Server::start(&["-l", "127.0.0.1:0=echo", "-l", "127.0.0.1:0=admin"]);
    let stream = connect(default.addr("echo"));
    let json = admin(&default, "clients json");
    let row = client_json(&json, stream.local_addr().unwrap());
    assert_ne!(
        json_number(&row, "so_sndbuf"),
        Some(8192),
        "the default is the kernel's own: {row}"
    );
}

#[test]
fn help_unknown_commands_and_a_long_conversation() {
    let server = Server::start(&["-l", "127.0.0.1:0=admin"]);
    let mut s = connect(server.addr("admin"));
    s.write_all(b"help\nwhat\nstats json\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let text = String::from_utf8(read_to_end(&mut s)).unwrap();
    assert!(text.starts_with("commands:"), "{text}");
    assert!(text.contains("ERR unknown command, try help\n"), "{text}");
    assert!(
        text.trim_end().ends_with('}') && text.contains("\"log_lines_dropped\":"),
        "answers come in order: {text}"
    );
}

#[test]
fn admin_refuses_a_non_loopback_address_without_admin_anywhere() {
    let out = run_binary(&["serve", "-l", "0.0.0.0:0=admin"], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--admin-anywhere"), "{stderr}");
}

#[test]
fn trace_logging_shows_each_read_and_write_and_when_the_socket_ran_dry() {
    let server = Server::start(&["-l", "127.0.0.1:0=echo", "-vv", "--recv-buf", "1K"]);
    let mut s = connect(server.addr("echo"));
    s.write_all(&[7u8; 5000]).unwrap();
    assert_eq!(read_exact(&mut s, 5000), vec![7u8; 5000]);
    assert!(
        server.wait_for_log("read 1024 bytes, recv buffer 1024/1024"),
        "{:?}",
        server.log()
    );
    assert!(server.wait_for_log("wrote "));
    // 5000 bytes in 1 KiB reads: the last read is short or would block.
    assert!(
        server.wait_for_any_log(&["socket drained", "read would block"]),
        "{:?}",
        server.log()
    );
}

#[test]
fn regression_clients_answers_for_thousands_of_connections_are_held_whole_per_operator() {
    const IDLE: usize = 3000;
    // One admin slot stays free for the test's own queries.
    const OPERATORS: usize = tcp_reactor::limits::OPERATOR_RESERVE - 1;
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=echo",
        "-l",
        "127.0.0.1:0=admin",
        "--so-sndbuf",
        "16K",
    ]);
    let idle: Vec<std::net::TcpStream> = (0..IDLE).map(|_| connect(server.addr("echo"))).collect();
    let baseline = server.status_field("VmRSS");
    // Operators who ask for the table and do not read it yet, with small
    // kernel buffers so the answer cannot hide in them.
    let mut operators: Vec<std::net::TcpStream> = (0..OPERATORS)
        .map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_recv_buffer_size(4096).unwrap();
            s.connect(&server.addr("admin").into()).unwrap();
            let mut s = std::net::TcpStream::from(s);
            s.set_read_timeout(Some(support::WAIT)).unwrap();
            s.write_all(b"clients json\n").unwrap();
            s
        })
        .collect();
    // Every operator's answer is under way once each shows output waiting.
    for op in &operators {
        support::wait_for_row(&server, op.local_addr().unwrap(), "admin", |row| {
            row.is_some_and(|r| json_number(r, "send_buf_used") > Some(0))
        });
    }
    let grown = server.status_field("VmRSS").saturating_sub(baseline);
    // The whole answer is about 1 MB; fifteen of them held at once, 15 MB.
    assert!(
        grown < 6 * 1024,
        "{OPERATORS} unread 'clients' answers grew the server by {grown} KiB"
    );
    for op in &mut operators {
        op.shutdown(std::net::Shutdown::Write).unwrap();
        let answer = String::from_utf8(read_to_end(op)).unwrap();
        assert!(answer.starts_with("{\"clients\":[") && answer.ends_with("]}\n"));
        assert_eq!(answer.lines().count(), 1);
        let rows = answer.matches("{\"id\":").count();
        assert!(rows > IDLE, "{rows} rows");
    }
    drop(idle);
}
