//! The README's first command, as a newcomer runs it: `tcp-reactor serve`
//! with no flags, in a directory of files, serves all five services on the
//! notes' ports. These ports are fixed, so the test skips (saying so) when
//! any of them is already taken on this machine.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};

use support::{Server, TempDir, connect, exchange, read_to_end};

const DEFAULTS: [(&str, u16); 5] = [
    ("echo", 7788),
    ("ack", 7890),
    ("files", 8000),
    ("chat", 9090),
    ("admin", 7999),
];

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn serve_without_flags_answers_every_service_on_its_default_port() {
    if let Some((service, port)) = DEFAULTS
        .iter()
        .find(|(_, port)| TcpListener::bind(loopback(*port)).is_err())
    {
        eprintln!("SKIPPED: port {port} ({service}) is taken on this machine");
        return;
    }
    let dir = TempDir::new("defaults");
    std::fs::write(dir.path().join("notes.txt"), "hello notes\n").unwrap();
    let mut server = Server::start_in(dir.path(), &[], DEFAULTS.len());
    for (service, port) in DEFAULTS {
        assert_eq!(server.addr(service), loopback(port), "{service}");
    }

    assert_eq!(exchange(loopback(7788), b"hello"), b"hello");
    assert_eq!(
        String::from_utf8(exchange(loopback(7890), b"hi")).unwrap(),
        "收到请求\n"
    );
    assert_eq!(
        exchange(loopback(8000), b"GET notes.txt\n"),
        b"OK 12\nhello notes\n"
    );

    let mut a = connect(loopback(9090));
    let mut b = BufReader::new(connect(loopback(9090)));
    let mut joined = String::new();
    // `a` sees `b` join; once it has, `b` is a member and gets `a`'s line.
    BufReader::new(a.try_clone().unwrap())
        .read_line(&mut joined)
        .unwrap();
    assert!(joined.ends_with("joined\n"), "{joined:?}");
    a.write_all(b"hi there\n").unwrap();
    let mut line = String::new();
    b.read_line(&mut line).unwrap();
    let from = a.local_addr().unwrap();
    assert_eq!(line, format!("[{from}] hi there\n"));

    let mut admin = connect(loopback(7999));
    admin.write_all(b"stats\n").unwrap();
    admin.shutdown(Shutdown::Write).unwrap();
    let stats = String::from_utf8(read_to_end(&mut admin)).unwrap();
    assert!(
        stats.contains("chat") && stats.contains("accepted"),
        "{stats}"
    );

    drop((a, b));
    assert!(server.signal_and_wait("TERM").success());
}
