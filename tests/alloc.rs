//! No allocation per message in steady state: the server runs in this
//! process, under a counting global allocator, while a client does
//! thousands of round trips on echo and ack. The client's own side allocates
//! nothing per round trip (fixed buffers), so what is counted is the
//! server's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tcp_reactor::chat_room::ChatLimits;
use tcp_reactor::config::{ListenSpec, ServerConfig};
use tcp_reactor::reactor::Server;
use tcp_reactor::service::{ServiceConfig, ServiceKind};
use tcp_reactor::text::Encoding;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; it only
// counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Starts a server on port 0 for `services`, on a thread of its own (it
/// runs until the test process ends); returns the bound addresses.
fn serve(services: &[ServiceKind]) -> Vec<(SocketAddr, ServiceKind)> {
    let config = ServerConfig {
        listeners: services
            .iter()
            .map(|&service| ListenSpec {
                addr: "127.0.0.1:0".parse().expect("literal address"),
                service,
            })
            .collect(),
        recv_buf: 64 * 1024,
        send_buf: 64 * 1024,
        nodelay: true,
        reuse_port: false,
        so_rcvbuf: None,
        so_sndbuf: None,
        max_conns: None,
        max_conns_per_ip: None,
        idle_timeout: None,
        shutdown_timeout: Duration::from_secs(1),
        chat: ChatLimits::default(),
        service: ServiceConfig {
            ack_reply: b"ok".to_vec(),
            encoding: Encoding::Utf8,
            short: false,
            root: std::env::temp_dir(),
            sendfile: false,
        },
    };
    // The server is one thread's (it holds `Rc`s): built on its own.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut server = Server::bind(config).expect("bind on loopback");
        tx.send(server.local_addrs())
            .expect("the test waits for the addresses");
        server.run()
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the server binds")
}

/// Allocations counted while `client` does `rounds` exchanges of
/// `request`, each answered by `reply_len` bytes, after a warm-up of as
/// many.
fn allocations_over(addr: SocketAddr, request: &[u8], reply_len: usize, rounds: usize) -> u64 {
    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_nodelay(true).expect("nodelay");
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut reply = vec![0u8; reply_len];
    let mut exchange = |client: &mut TcpStream| {
        client.write_all(request).expect("send");
        client.read_exact(&mut reply).expect("the reply");
    };
    for _ in 0..rounds {
        exchange(&mut client);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..rounds {
        exchange(&mut client);
    }
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[test]
fn echo_and_ack_allocate_nothing_per_message_in_steady_state() {
    const ROUNDS: usize = 5000;
    let addrs = serve(&[ServiceKind::Echo, ServiceKind::Ack]);
    let addr = |kind| {
        addrs
            .iter()
            .find(|(_, k)| *k == kind)
            .expect("a listener of that service")
            .0
    };
    let echo = allocations_over(addr(ServiceKind::Echo), &[7u8; 64], 64, ROUNDS);
    // Ack logs each message only within its log budget (a few lines a
    // second); no logger is installed here, so none is formatted.
    let ack = allocations_over(addr(ServiceKind::Ack), b"hello\n", 3, ROUNDS);
    assert!(
        echo < 20,
        "echo: {echo} allocations for {ROUNDS} round trips"
    );
    assert!(ack < 20, "ack: {ack} allocations for {ROUNDS} round trips");
}
