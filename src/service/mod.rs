//! The protocols, as sans-IO state machines.
//!
//! A service never touches a socket. The reactor hands it an [`Io`]: the
//! connection's receive buffer (bytes to consume), its send buffer (room to
//! produce into) and what is known about the input's end. The service consumes
//! what it can handle, produces what fits, and answers with an [`Outcome`]
//! saying what the reactor should do next. So each protocol is tested with
//! plain byte slices, and all I/O stays in the reactor.

pub mod ack;
pub mod admin;
pub mod chat;
pub mod echo;
pub mod files;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::str::FromStr;
use std::time::Instant;

use crate::buffer::{BufPool, ByteBuf};
use crate::text::Encoding;

/// The services a listener can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    Echo,
    Ack,
    Files,
    Chat,
    Admin,
}

impl ServiceKind {
    /// Every service, in the order `stats` lists them.
    pub const ALL: [ServiceKind; 5] = [
        ServiceKind::Echo,
        ServiceKind::Ack,
        ServiceKind::Files,
        ServiceKind::Chat,
        ServiceKind::Admin,
    ];

    /// The service's name on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Echo => "echo",
            ServiceKind::Ack => "ack",
            ServiceKind::Files => "files",
            ServiceKind::Chat => "chat",
            ServiceKind::Admin => "admin",
        }
    }

    /// Position in [`ServiceKind::ALL`], for per-service tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ServiceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<ServiceKind, String> {
        ServiceKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ServiceKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown service '{s}' (one of: {})", names.join(", "))
            })
    }
}

/// Settings the services read; fixed for the server's life.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The ack reply, already encoded, without its newline.
    pub ack_reply: Vec<u8>,
    /// How client text is decoded for logs.
    pub encoding: Encoding,
    /// Short connections (`--short`): close once the first reply is sent.
    pub short: bool,
    /// The files service's root, canonical (absolute, no symlinks). Names
    /// are resolved beneath it by the kernel, per request (see
    /// [`files::open_beneath`]), not by comparing path strings.
    pub root: PathBuf,
}

/// One connection's protocol state.
#[derive(Debug)]
pub enum Service {
    Echo(echo::Echo),
    Ack(ack::Ack),
    Files(files::Files),
    Chat(chat::Chat),
    Admin(admin::Admin),
}

impl Service {
    /// Fresh state for a new connection to a `kind` listener.
    pub fn new(kind: ServiceKind) -> Service {
        match kind {
            ServiceKind::Echo => Service::Echo(echo::Echo::default()),
            ServiceKind::Ack => Service::Ack(ack::Ack::default()),
            ServiceKind::Files => Service::Files(files::Files::default()),
            ServiceKind::Chat => Service::Chat(chat::Chat::default()),
            ServiceKind::Admin => Service::Admin(admin::Admin::default()),
        }
    }

    /// Whether the service has output to produce that needs no input (a file
    /// being streamed): the reactor calls it again whenever the send buffer
    /// drains below its low watermark.
    pub fn is_producing(&self) -> bool {
        match self {
            Service::Files(s) => s.is_producing(),
            Service::Admin(s) => s.is_producing(),
            Service::Chat(s) => s.is_producing(),
            Service::Echo(_) | Service::Ack(_) => false,
        }
    }

    /// Hands the reactor's answer to an [`Effect::Query`] back to the
    /// service that asked.
    pub fn deliver(&mut self, answer: Vec<u8>, next: Option<admin::Query>) {
        if let Service::Admin(s) = self {
            s.deliver(answer, next);
        }
    }

    /// The socket ran dry: every byte the client had sent is in the input,
    /// so what is buffered ends a burst. An input of its own, delivered
    /// whatever the buffer holds (even nothing), then processed as usual.
    pub fn burst_end(&mut self, io: &mut Io<'_>, config: &ServiceConfig) -> Outcome {
        io.burst_end = true;
        let outcome = self.process(io, config);
        io.burst_end = false;
        outcome
    }

    /// `watch` snapshots skipped for a reader that did not keep up (admin).
    pub fn skipped_snapshots(&self) -> Option<u64> {
        match self {
            Service::Admin(s) => Some(s.skipped_snapshots()),
            _ => None,
        }
    }

    /// Consumes input and produces output as far as both allow.
    pub fn process(&mut self, io: &mut Io<'_>, config: &ServiceConfig) -> Outcome {
        match self {
            Service::Echo(s) => s.process(io, config),
            Service::Ack(s) => s.process(io, config),
            Service::Files(s) => s.process(io, config),
            Service::Chat(s) => s.process(io),
            Service::Admin(s) => s.process(io),
        }
    }
}

/// What a service sees of its connection for one call.
pub struct Io<'a> {
    /// Received bytes not yet consumed. The service consumes what it handles.
    pub input: &'a mut ByteBuf,
    output: &'a mut ByteBuf,
    pool: &'a mut BufPool,
    /// This call is [`Service::burst_end`]: the socket was drained just now,
    /// so the bytes buffered form the end of a burst. Never carried over to
    /// a later call.
    pub burst_end: bool,
    /// The client half-closed and every byte it sent is in `input`.
    pub eof: bool,
    /// The client's address, for logs.
    pub peer: SocketAddr,
    /// The time of this call.
    pub now: Instant,
    /// Bytes the service may still broadcast in this call (chat); the service
    /// lowers it by what it broadcasts. Unlimited unless the caller says.
    pub broadcast_room: usize,
    /// Produce bulk output (file chunks) only while the send buffer holds
    /// fewer bytes than this, so a large file costs no more memory than the
    /// buffer and the reactor is not asked to write in slivers.
    pub low_watermark: usize,
}

impl<'a> Io<'a> {
    /// Bundles a connection's buffers for one service call.
    pub fn new(
        input: &'a mut ByteBuf,
        output: &'a mut ByteBuf,
        pool: &'a mut BufPool,
        peer: SocketAddr,
        now: Instant,
    ) -> Io<'a> {
        Io {
            input,
            output,
            pool,
            burst_end: false,
            eof: false,
            peer,
            now,
            broadcast_room: usize::MAX,
            low_watermark: usize::MAX,
        }
    }

    /// Bytes in the send buffer.
    pub fn output_len(&self) -> usize {
        self.output.len()
    }

    /// The send buffer's free room, to fill and then declare with
    /// [`Io::commit_output`] (lets a file be read straight into it).
    pub fn output_spare(&mut self) -> &mut [u8] {
        self.output.spare(self.pool)
    }

    /// Declares `n` bytes of the last [`Io::output_spare`] as output.
    pub fn commit_output(&mut self, n: usize) {
        self.output.commit(n);
    }

    /// Room left in the send buffer.
    pub fn output_free(&self) -> usize {
        self.output.free()
    }

    /// Appends as much of `bytes` as fits in the send buffer; returns how many.
    pub fn write(&mut self, bytes: &[u8]) -> usize {
        self.output.append(self.pool, bytes)
    }

    /// Moves as many input bytes as fit straight into the send buffer.
    pub fn transfer(&mut self) -> usize {
        let n = self.output.append(self.pool, self.input.data());
        self.input.consume(n);
        n
    }
}

/// What the reactor should do after a service call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Keep the connection.
    Continue,
    /// Send everything owed, then close.
    CloseAfterFlush,
    /// What was promised cannot be delivered (a file shrank or failed to
    /// read mid-transfer): end with a reset, so the client cannot take a
    /// truncated answer for a whole one.
    Abort,
}

/// Something a service asks of the reactor beyond its own connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Admin: gather server-wide figures and [`Service::deliver`] the answer.
    Query(admin::Query),
    /// Chat: queue this chunk, shared, on every other chat connection.
    Broadcast(Rc<[u8]>),
    /// Chat: complete lines wait for broadcast room; drive this connection
    /// again once the receivers have caught up.
    WaitForRoom,
}

/// A service call's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub next: Next,
    /// The service left input it could handle unconsumed because the send
    /// buffer had no room: the reactor should stop reading until it drains.
    pub output_blocked: bool,
    /// The service did a bounded step of work that depends on the client (a
    /// directory of a `LIST`, rows of a `clients` table) and has more: call
    /// it again next turn, after every other connection has had its turn,
    /// not again in this one.
    pub yielded: bool,
    /// Call the service again at this time even if nothing else happens (a
    /// `watch` snapshot is due).
    pub wake_at: Option<Instant>,
    pub effect: Option<Effect>,
}

impl Outcome {
    /// Keep going; `output_blocked` as given.
    pub fn proceed(output_blocked: bool) -> Outcome {
        Outcome {
            next: Next::Continue,
            output_blocked,
            yielded: false,
            wake_at: None,
            effect: None,
        }
    }

    /// Flush, then close.
    pub fn close_after_flush() -> Outcome {
        Outcome {
            next: Next::CloseAfterFlush,
            output_blocked: false,
            yielded: false,
            wake_at: None,
            effect: None,
        }
    }

    /// Keep going, and call again next turn (see [`Outcome::yielded`]).
    pub fn yield_turn() -> Outcome {
        Outcome {
            yielded: true,
            ..Outcome::proceed(false)
        }
    }

    /// Reset the connection: the answer cannot be completed.
    pub fn abort() -> Outcome {
        Outcome {
            next: Next::Abort,
            output_blocked: false,
            yielded: false,
            wake_at: None,
            effect: None,
        }
    }

    /// The same, and call again at `at`.
    pub fn wake_at(self, at: Instant) -> Outcome {
        Outcome {
            wake_at: Some(at),
            ..self
        }
    }

    /// The same, with `effect` for the reactor to carry out.
    pub fn with_effect(self, effect: Effect) -> Outcome {
        Outcome {
            effect: Some(effect),
            ..self
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Drives a service through memory, the way the reactor would, with the
    //! input delivered in chosen pieces.

    use super::*;

    /// Settings for unit tests: ack replies `ok`, files served from `root`.
    pub fn config_with_root(root: &std::path::Path) -> ServiceConfig {
        ServiceConfig {
            ack_reply: b"ok".to_vec(),
            encoding: Encoding::Utf8,
            short: false,
            root: root.to_path_buf(),
        }
    }

    /// Settings for services that touch no files.
    pub fn config() -> ServiceConfig {
        config_with_root(std::path::Path::new("/nonexistent"))
    }

    /// Result of feeding a whole conversation to a service.
    pub struct Run {
        pub output: Vec<u8>,
        pub closed: bool,
        /// Bytes left unconsumed in the receive buffer at the end.
        pub left: usize,
    }

    /// Feeds `pieces` one after another, each as its own burst, then EOF
    /// when `eof`. Output is drained after every call, like a fast peer.
    pub fn run(
        kind: ServiceKind,
        config: &ServiceConfig,
        pieces: &[&[u8]],
        bursts: bool,
        eof: bool,
        recv_cap: usize,
        send_cap: usize,
    ) -> Run {
        let peer: SocketAddr = "127.0.0.1:4000".parse().expect("literal address");
        let now = Instant::now();
        let mut service = Service::new(kind);
        let mut recv_pool = BufPool::new(recv_cap);
        let mut send_pool = BufPool::new(send_cap);
        let mut input = ByteBuf::new(recv_cap);
        let mut output = ByteBuf::new(send_cap);
        let mut out = Vec::new();
        let mut closed = false;
        let mut call = |input: &mut ByteBuf, out: &mut Vec<u8>, burst_end: bool, eof: bool| loop {
            let mut io = Io::new(input, &mut output, &mut send_pool, peer, now);
            io.low_watermark = send_cap / 4 + 1;
            io.eof = eof;
            let outcome = if burst_end {
                service.burst_end(&mut io, config)
            } else {
                service.process(&mut io, config)
            };
            out.extend_from_slice(output.data());
            let moved = output.len();
            output.consume(moved);
            if outcome.next != Next::Continue {
                return true;
            }
            if !outcome.output_blocked && !outcome.yielded && !service.is_producing() {
                return false;
            }
        };
        for piece in pieces {
            let mut rest: &[u8] = piece;
            while !rest.is_empty() && !closed {
                let n = input.append(&mut recv_pool, rest);
                rest = &rest[n..];
                // A piece larger than the buffer arrives in several reads;
                // only the last read of it ends the burst.
                closed = call(&mut input, &mut out, bursts && rest.is_empty(), false);
                if n == 0 && !closed {
                    panic!("service stalled with a full receive buffer");
                }
            }
        }
        if eof && !closed {
            closed = call(&mut input, &mut out, false, true);
        }
        Run {
            output: out,
            closed,
            left: input.len(),
        }
    }

    /// Splits `bytes` into pieces at pseudo-random points.
    pub fn random_split(bytes: &[u8], seed: u64) -> Vec<&[u8]> {
        let mut state = seed | 1;
        let mut pieces = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let n = 1 + (state as usize) % rest.len().min(9);
            pieces.push(&rest[..n]);
            rest = &rest[n..];
        }
        pieces
    }
}
