//! No allocation per message in steady state: the server runs in this
//! process, under a counting global allocator, while a client does
//! thousands of round trips on echo and ack, and a chat member says
//! thousands of lines to two others. The clients' own side allocates
//! nothing per message (fixed buffers), so what is counted is the server's.
//!
//! The counter is the whole process's, so the tests take turns
//! ([`one_at_a_time`]): one test's set-up must not land in another's count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tcp_reactor::config::{ListenSpec, ServerConfig, SocketOptions};
use tcp_reactor::hub::room::ChatLimits;
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

/// Held for the whole of a test: the allocation counter is shared by every
/// thread of the process.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    // A test that failed holding it poisons it; the next may still run.
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long any read of a test may wait.
const WAIT: Duration = Duration::from_secs(20);

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
        request_timeout: None,
        operator_idle_timeout: None,
        evict_idle_after: None,
        keepalive: None,
        sockets: SocketOptions::default(),
        shutdown_timeout: Duration::from_secs(1),
        chat: ChatLimits::default(),
        service: ServiceConfig {
            ack_reply: b"ok".to_vec(),
            encoding: Encoding::Utf8,
            short: false,
            root: std::env::temp_dir(),
            sendfile: false,
            hidden: false,
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
    let mut client = connect(addr);
    let mut reply = vec![0u8; reply_len];
    let mut exchange = |client: &mut TcpStream| {
        client.write_all(request).expect("send");
        client.read_exact(&mut reply).expect("the reply");
    };
    counted_after_warm_up(rounds, || exchange(&mut client))
}

/// Runs `step` `rounds` times to warm up, then `rounds` times more, and
/// returns the allocations counted over the second half.
fn counted_after_warm_up(rounds: usize, mut step: impl FnMut()) -> u64 {
    for _ in 0..rounds {
        step();
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..rounds {
        step();
    }
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

/// A client of `addr` whose reads give up after [`WAIT`].
fn connect(addr: SocketAddr) -> TcpStream {
    let client = TcpStream::connect(addr).expect("connect");
    client.set_nodelay(true).expect("nodelay");
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    client
}

/// Reads exactly `expected` from `reader`, into `buf` (its length).
fn read_line_of(reader: &mut TcpStream, buf: &mut [u8], expected: &[u8]) {
    reader.read_exact(buf).expect("the line within the wait");
    assert_eq!(buf, expected);
}

#[test]
fn echo_and_ack_allocate_nothing_per_message_in_steady_state() {
    let _turn = one_at_a_time();
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

#[test]
fn echo_to_many_connections_at_once_allocates_nothing_per_message() {
    // Many connections served in one pass, as under load: a round writes a
    // message on every connection, then reads every echo. The echo trades
    // its receive and send buffers, moving a storage block from the receive
    // pool to the send pool on every message; until the two pools were
    // evened out, the receive pool ran dry and a 64 KiB block was allocated
    // (and zeroed) for every message: 20,000 for 20,000 here.
    let _turn = one_at_a_time();
    const CONNS: usize = 100;
    const ROUNDS: usize = 200;
    let addr = serve(&[ServiceKind::Echo])[0].0;
    let mut conns: Vec<TcpStream> = (0..CONNS).map(|_| connect(addr)).collect();
    let mut reply = [0u8; 64];
    let mut round = |conns: &mut [TcpStream]| {
        for c in conns.iter_mut() {
            c.write_all(&[7u8; 64]).expect("send");
        }
        for c in conns.iter_mut() {
            c.read_exact(&mut reply).expect("the echo");
        }
    };
    let counted = counted_after_warm_up(ROUNDS, || round(&mut conns));
    assert!(
        counted < 20,
        "{counted} allocations for {} messages on {CONNS} connections",
        CONNS * ROUNDS
    );
}

#[test]
fn chat_allocates_nothing_per_broadcast_in_steady_state() {
    let _turn = one_at_a_time();
    const LINES: usize = 3000;
    let addr = serve(&[ServiceKind::Chat])[0].0;
    let mut readers = [connect(addr), connect(addr)];
    let mut sender = connect(addr);
    // Each member sees the joins after its own (accepted in connect order).
    let joined = |c: &TcpStream| format!("* {} joined\n", c.local_addr().expect("bound"));
    let first_sees = joined(&readers[1]) + &joined(&sender);
    let second_sees = joined(&sender);
    for (reader, text) in readers.iter_mut().zip([&first_sees, &second_sees]) {
        let mut buf = vec![0u8; text.len()];
        read_line_of(reader, &mut buf, text.as_bytes());
    }
    let said: &[u8] = b"a line of chat, the same every time\n";
    let line = format!(
        "[{}] {}",
        sender.local_addr().expect("bound"),
        std::str::from_utf8(said).expect("literal text")
    );
    let mut buf = vec![0u8; line.len()];
    let mut say = |sender: &mut TcpStream, readers: &mut [TcpStream]| {
        sender.write_all(said).expect("send");
        for reader in readers {
            read_line_of(reader, &mut buf, line.as_bytes());
        }
    };
    let chat = counted_after_warm_up(LINES, || say(&mut sender, &mut readers));
    assert!(
        chat < 20,
        "chat: {chat} allocations for {LINES} lines to two readers"
    );
}
