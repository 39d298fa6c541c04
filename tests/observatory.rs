//! The observatory against a real server: `watch` streams whole JSON
//! snapshots and skips them for a reader that does not keep up; `metrics`
//! and `GET /metrics` answer the Prometheus text format. (A real HTTP client
//! and a real parser of the format check the same in
//! `scripts/check-metrics.sh`.)

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use support::{Server, connect, read_to_end};

#[test]
fn watch_streams_a_json_snapshot_of_stats_and_clients_per_interval() {
    let server = Server::start(&["-l", "127.0.0.1:0=admin", "-l", "127.0.0.1:0=echo"]);
    let _idle: Vec<TcpStream> = (0..3).map(|_| connect(server.addr("echo"))).collect();
    let mut watcher = connect(server.addr("admin"));
    watcher.write_all(b"watch 50\n").unwrap();
    let mut lines = BufReader::new(watcher.try_clone().unwrap());
    for _ in 0..3 {
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        let snapshot: serde_json::Value =
            serde_json::from_str(&line).expect("one JSON object a line");
        assert!(
            snapshot["stats"]["services"]["echo"]["active"].as_u64() == Some(3),
            "{line}"
        );
        let clients = snapshot["clients"].as_array().expect("clients");
        assert_eq!(clients.len(), 4, "three echo clients and the watcher");
        assert!(
            clients
                .iter()
                .all(|c| c["limit"].is_string() && c["tcp"].is_object())
        );
    }
    // Any line ends the watch; the connection goes on with commands.
    watcher.write_all(b"\nquit\n").unwrap();
    let mut rest = String::new();
    lines.read_to_string(&mut rest).unwrap();
    assert!(
        rest.lines().all(|l| l.starts_with('{')),
        "only whole snapshots: {rest}"
    );
}

#[test]
fn a_watcher_that_does_not_read_is_skipped_not_queued() {
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=admin",
        "-l",
        "127.0.0.1:0=echo",
        "--send-buf",
        "4K",
        "--so-sndbuf",
        "4K",
    ]);
    let _idle: Vec<TcpStream> = (0..50).map(|_| connect(server.addr("echo"))).collect();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&server.addr("admin").into()).unwrap();
    let mut watcher = TcpStream::from(sock);
    watcher.set_read_timeout(Some(support::WAIT)).unwrap();
    watcher.write_all(b"watch 50\n").unwrap();
    let peer = watcher.local_addr().unwrap();
    // Not reading: the buffers fill, and the server holds at most the
    // snapshot it is sending (one send buffer), while the snapshots due meanwhile are
    // skipped.
    let row = support::wait_for_row(&server, peer, "admin", |row| {
        row.is_some_and(|r| support::json_number(r, "snapshots_skipped") > Some(2))
    })
    .unwrap();
    assert!(
        support::json_number(&row, "send_buf_used").unwrap() <= 4096,
        "{row}"
    );
    // What does arrive, once read, is whole snapshots.
    watcher.write_all(b"\n").unwrap();
    watcher.shutdown(std::net::Shutdown::Write).unwrap();
    let text = String::from_utf8(read_to_end(&mut watcher)).unwrap();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("a whole snapshot");
    }
}

#[test]
fn metrics_answer_the_prometheus_text_format_as_a_command_and_over_http() {
    let server = Server::start(&["-l", "127.0.0.1:0=admin", "-l", "127.0.0.1:0=echo"]);
    support::exchange(server.addr("echo"), b"hello");
    let text = support::admin(&server, "metrics");
    assert!(
        text.lines()
            .any(|l| l == "tcp_reactor_received_bytes_total{service=\"echo\"} 5"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
    let mut http = connect(server.addr("admin"));
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let answer = String::from_utf8(read_to_end(&mut http)).unwrap();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .expect("headers, then the body");
    assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
    // No Accept: the text format 0.0.4, which every scraper reads.
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(head.contains(&format!("Content-Length: {}", body.len())));
    assert!(body.contains("tcp_reactor_connections{service=\"admin\"}"));
    assert!(body.contains("# TYPE tcp_reactor_accepted_total counter\n"));
}
