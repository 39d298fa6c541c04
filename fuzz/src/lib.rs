//! What the fuzz targets share: a decoder of fuzz input into operations, and
//! a driver that runs a service through them the way
//! `Connection::turn_inner` does, through the library's public API only.
//!
//! The driver owns the two bounded buffers and their pools, calls the
//! service when the reactor would (input buffered, an end of input, output
//! to produce below the low watermark, the end of a burst), applies the
//! [`Outcome`] (pause on `output_blocked`, stop feeding input after a
//! close, stop everything after an abort), and releases the buffers'
//! storage at the end of each operation, as a turn does. No sockets and no
//! clock: `now` is fixed.
//!
//! Not modelled: the server ending a conversation (`Finishing`), other chat
//! members, and kernel queues (a drain is the client reading).

use std::net::SocketAddr;
use std::time::Instant;

use tcp_reactor::buffer::{BufPool, ByteBuf, Chunk};
use tcp_reactor::service::admin::{Cursor, Query};
use tcp_reactor::service::{Effect, Io, Next, Outcome, Service, ServiceConfig, ServiceKind};
use tcp_reactor::text::Encoding;

/// The peer address every driven service sees; chat prefixes lines with it.
pub const PEER: &str = "127.0.0.1:4000";

/// Most service calls one operation may cause. A service that keeps asking
/// to be called without input, room or a drain past this is livelocked.
const CALLS_PER_OP: usize = 100_000;

/// Reads the fuzz input as a byte stream; past its end every read is 0.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(bytes: &'a [u8]) -> Input<'a> {
        Input { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, rest)) => {
                self.bytes = rest;
                b
            }
            None => 0,
        }
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.bytes.len());
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        head
    }
}

/// One thing that happens to a connection.
#[derive(Clone, Debug)]
pub enum Op {
    /// A read: these bytes arrive (as many as the receive buffer takes).
    Append(Vec<u8>),
    /// The socket ran dry: the end of a burst.
    BurstEnd,
    /// The client reads `k` bytes of output.
    Drain(usize),
    /// The client half-closes.
    Eof,
    /// The broadcast room of the following calls (chat flow control).
    Room(usize),
}

impl Op {
    /// The next operation; `tokens` are byte strings the service's parser
    /// cares about, offered whole so the fuzzer need not guess them.
    pub fn decode(input: &mut Input<'_>, tokens: &[&[u8]]) -> Op {
        match input.byte() % 8 {
            0 | 1 => {
                let n = 1 + usize::from(input.byte() % 64);
                Op::Append(input.take(n).to_vec())
            }
            2 if !tokens.is_empty() => {
                let t = tokens[usize::from(input.byte()) % tokens.len()];
                Op::Append(t.to_vec())
            }
            2 | 3 => Op::BurstEnd,
            4 => Op::Drain(usize::from(input.byte())),
            5 => Op::Eof,
            6 => Op::Room(match input.byte() {
                0 => 0,
                255 => usize::MAX,
                n => usize::from(n) * 8,
            }),
            // A big read that is also the end of its burst.
            _ => {
                let n = 1 + usize::from(input.byte()) * 4;
                Op::Append(input.take(n).to_vec())
            }
        }
    }
}

/// Where the driven connection is (the part of `Phase` that matters here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Open {
        paused: bool,
    },
    /// The service said its last word: input is discarded, output flushed.
    Draining,
    /// The service aborted: nothing more happens.
    Aborted,
}

/// What one service call looked like, for the targets' checks.
pub struct Call {
    /// The receive buffer's bytes before the call.
    pub before: Vec<u8>,
    /// Bytes left in the receive buffer after the call (before any clear a
    /// close makes).
    pub after_len: usize,
    pub outcome: Outcome,
    pub eof: bool,
    pub burst_end: bool,
}

/// One connection's service and buffers, driven as the reactor does.
pub struct Driver {
    pub service: Service,
    pub config: ServiceConfig,
    recv_pool: BufPool,
    send_pool: BufPool,
    pub recv: ByteBuf,
    pub send: ByteBuf,
    pub state: State,
    pub eof: bool,
    room: usize,
    /// An admin query asked and not yet answered (delivered at the start of
    /// the next operation, as the reactor answers after the turn).
    pending_query: Option<Query>,
    /// Bytes handed to the service (taken into the receive buffer while
    /// the conversation was open), in order.
    pub input_log: Vec<u8>,
    /// Bytes the client has read, in order.
    pub output: Vec<u8>,
    /// Every chunk broadcast.
    pub broadcasts: Vec<Chunk>,
    /// Every service call, for the target's check (cleared by the target).
    pub calls: Vec<Call>,
}

impl Driver {
    /// A connection to a `kind` service with these buffer capacities.
    pub fn new(kind: ServiceKind, config: ServiceConfig, recv_cap: usize, send_cap: usize) -> Self {
        Driver {
            service: Service::new(kind),
            config,
            recv_pool: BufPool::new(recv_cap),
            send_pool: BufPool::new(send_cap),
            recv: ByteBuf::new(recv_cap),
            send: ByteBuf::new(send_cap),
            state: State::Open { paused: false },
            eof: false,
            room: usize::MAX,
            pending_query: None,
            input_log: Vec::new(),
            output: Vec::new(),
            broadcasts: Vec::new(),
            calls: Vec::new(),
        }
    }

    /// As `Connection::low_watermark`.
    pub fn low_watermark(&self) -> usize {
        (self.send.capacity() / 4).max(1)
    }

    fn takes_input(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Applies one operation, then releases storage as a turn's end does.
    pub fn apply(&mut self, op: &Op) {
        if self.state == State::Aborted {
            return;
        }
        if let Some(query) = self.pending_query.take() {
            let (answer, next) = canned_answer(query);
            self.service.deliver(answer, next);
        }
        match op {
            Op::Append(bytes) => match self.state {
                State::Open { paused: false } if !self.eof => {
                    let n = self.recv.append(&mut self.recv_pool, bytes);
                    self.input_log.extend_from_slice(&bytes[..n]);
                    self.drive(false);
                }
                // Read and dropped: the client ended the conversation.
                State::Draining => {}
                _ => self.drive(false),
            },
            Op::BurstEnd => {
                if matches!(self.state, State::Open { paused: false }) && !self.eof {
                    self.drive(true);
                }
            }
            Op::Drain(k) => {
                let k = (*k).min(self.send.len());
                self.output.extend_from_slice(&self.send.data()[..k]);
                self.send.consume(k);
                if self.state == (State::Open { paused: true })
                    && self.send.len() <= self.low_watermark()
                {
                    self.state = State::Open { paused: false };
                }
                self.drive(false);
            }
            Op::Eof => {
                self.eof = true;
                self.drive(false);
            }
            Op::Room(n) => self.room = *n,
        }
        self.check_capacity();
        self.recv.release(&mut self.recv_pool);
        self.send.release(&mut self.send_pool);
        self.check_capacity();
    }

    /// The client half-closes and reads everything, and the other chat
    /// members catch up (the broadcast room is unlimited again), until
    /// nothing moves.
    pub fn finish(&mut self) {
        self.room = usize::MAX;
        self.apply(&Op::Eof);
        for _ in 0..CALLS_PER_OP {
            let mark = (self.output.len(), self.send.len(), self.state);
            let k = self.send.len();
            self.apply(&Op::Drain(k));
            if self.pending_query.is_some() {
                continue;
            }
            if (self.output.len(), self.send.len(), self.state) == mark {
                return;
            }
        }
        panic!("the conversation never ends after a half-close and full reads");
    }

    fn check_capacity(&self) {
        assert!(
            self.recv.len() <= self.recv.capacity(),
            "receive buffer over capacity"
        );
        assert!(
            self.send.len() <= self.send.capacity(),
            "send buffer over capacity"
        );
        assert_eq!(self.recv.data().len(), self.recv.len());
        assert_eq!(self.send.data().len(), self.send.len());
    }

    fn has_work(&self) -> bool {
        !self.recv.is_empty()
            || self.eof
            || (self.service.is_producing() && self.send.len() < self.low_watermark())
    }

    /// Calls the service until a call changes nothing (the reactor's turn
    /// loop, with a yielded service called again as a requeued turn would).
    fn drive(&mut self, mut burst_end: bool) {
        for _ in 0..CALLS_PER_OP {
            if !self.takes_input() || self.pending_query.is_some() {
                return;
            }
            if !burst_end && !self.has_work() {
                return;
            }
            let mark = (
                self.recv.len(),
                self.send.len(),
                self.service.is_producing(),
            );
            let outcome = self.call(burst_end);
            let was_burst_end = burst_end;
            burst_end = false;
            if !outcome.yielded
                && !was_burst_end
                && (
                    self.recv.len(),
                    self.send.len(),
                    self.service.is_producing(),
                ) == mark
            {
                return;
            }
        }
        panic!("service livelock: {CALLS_PER_OP} calls in one operation");
    }

    fn call(&mut self, burst_end: bool) -> Outcome {
        let peer: SocketAddr = PEER.parse().expect("a literal address");
        let before = self.recv.data().to_vec();
        let low_watermark = self.low_watermark();
        let mut io = Io::new(
            &mut self.recv,
            &mut self.send,
            &mut self.send_pool,
            peer,
            Instant::now(),
        );
        io.low_watermark = low_watermark;
        io.eof = self.eof;
        io.broadcast_room = self.room;
        let outcome = if burst_end {
            self.service.burst_end(&mut io, &self.config)
        } else {
            self.service.process(&mut io, &self.config)
        };
        assert!(
            io.broadcast_room <= self.room,
            "broadcast room grew in a call"
        );
        self.room = io.broadcast_room;
        let after_len = self.recv.len();
        self.check_capacity();
        match &outcome.effect {
            Some(Effect::Broadcast(chunk)) => self.broadcasts.push(chunk.clone()),
            Some(Effect::Query(query)) => {
                assert!(
                    self.pending_query.is_none(),
                    "a second query before the answer"
                );
                self.pending_query = Some(*query);
            }
            Some(Effect::WaitForRoom) | None => {}
        }
        match outcome.next {
            Next::Continue => {
                if outcome.output_blocked && self.state == (State::Open { paused: false }) {
                    self.state = State::Open { paused: true };
                }
            }
            Next::CloseAfterFlush => {
                self.state = State::Draining;
                self.recv.clear();
            }
            Next::Abort => self.state = State::Aborted,
        }
        self.calls.push(Call {
            before,
            after_len,
            outcome: outcome.clone(),
            eof: self.eof,
            burst_end,
        });
        outcome
    }
}

/// What the driver's reactor answers to an admin query: a stats line, a
/// metrics end, or a `clients` table or `watch` snapshot in three parts, so
/// multi-part answers are exercised.
fn canned_answer(query: Query) -> (Vec<u8>, Option<Query>) {
    match query {
        Query::Stats { .. } => (b"STATS 1 2 3\n".to_vec(), None),
        Query::Clients { json, cursor } => {
            let next = (cursor.rows < 2).then_some(Query::Clients {
                json,
                cursor: Cursor {
                    next_key: cursor.next_key + 1,
                    rows: cursor.rows + 1,
                    started: true,
                },
            });
            (format!("ROW {}\n", cursor.rows).into_bytes(), next)
        }
        Query::Metrics => (b"# EOF\n".to_vec(), None),
        Query::Watch { cursor } => {
            let next = (cursor.rows < 2).then_some(Query::Watch {
                cursor: Cursor {
                    next_key: cursor.next_key + 1,
                    rows: cursor.rows + 1,
                    started: true,
                },
            });
            (format!("{{\"part\":{}}}", cursor.rows).into_bytes(), next)
        }
    }
}

/// Settings for the driven services: ack replies `ok`, files from `root`.
pub fn config(root: &std::path::Path) -> ServiceConfig {
    ServiceConfig {
        sendfile: false,
        ack_reply: b"ok".to_vec(),
        encoding: Encoding::Utf8,
        short: false,
        root: root.to_path_buf(),
        hidden: false,
    }
}

/// The first bytes of the input pick the buffers' capacities: small, so
/// every boundary (full, a quarter, one byte) is reached quickly.
pub fn capacities(input: &mut Input<'_>, min_send: usize) -> (usize, usize) {
    let recv = 1 + usize::from(input.byte() % 64);
    let send = min_send.max(1 + usize::from(input.byte() % 64));
    (recv, send)
}

/// Runs `kind` through the operations the input encodes, calling `check`
/// after each one, then half-closes and drains everything.
pub fn run(
    kind: ServiceKind,
    config: ServiceConfig,
    data: &[u8],
    min_send: usize,
    tokens: &[&[u8]],
    mut check: impl FnMut(&mut Driver),
) -> Driver {
    let mut input = Input::new(data);
    let (recv_cap, send_cap) = capacities(&mut input, min_send);
    let mut driver = Driver::new(kind, config, recv_cap, send_cap);
    while !input.is_empty() {
        let op = Op::decode(&mut input, tokens);
        driver.apply(&op);
        check(&mut driver);
    }
    driver.finish();
    check(&mut driver);
    driver
}

/// A tree for the files targets: a root with files, a directory, symlinks
/// in and out, a FIFO; and beside it, outside the root, a secret whose
/// marker must never be served.
pub struct Tree {
    pub root: std::path::PathBuf,
    /// Every regular file in the root: its name relative to the root and
    /// its bytes.
    pub files: Vec<(&'static str, Vec<u8>)>,
}

/// Bytes that occur only in the file outside the root.
pub const SECRET_MARKER: &[u8] = b"SECRET-7f3a9c-OUTSIDE";

/// The tree, made once per process under the temp dir.
pub fn tree() -> &'static Tree {
    static TREE: std::sync::OnceLock<Tree> = std::sync::OnceLock::new();
    TREE.get_or_init(|| {
        use std::os::unix::fs::symlink;
        let base = std::env::temp_dir().join(format!("tcp-reactor-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("d/e")).expect("make the fuzz root");
        let root = std::fs::canonicalize(&root).expect("canonical root");
        std::fs::write(base.join("secret"), SECRET_MARKER).expect("write the secret");
        let files: Vec<(&'static str, Vec<u8>)> = vec![
            ("a.txt", b"alpha\n".to_vec()),
            (
                "d/b.txt",
                b"bravo bravo bravo bravo bravo bravo\n".repeat(5),
            ),
            ("d/e/c", Vec::new()),
        ];
        for (name, body) in &files {
            std::fs::write(root.join(name), body).expect("write a fuzz file");
        }
        symlink("a.txt", root.join("in")).expect("symlink");
        symlink("../secret", root.join("out")).expect("symlink");
        symlink("../../../secret", root.join("d/e/out")).expect("symlink");
        symlink("..", root.join("d/up")).expect("symlink");
        symlink("/proc/self/root", root.join("proc")).expect("symlink");
        let _ = std::process::Command::new("mkfifo")
            .arg(root.join("fifo"))
            .status();
        Tree { root, files }
    })
}
