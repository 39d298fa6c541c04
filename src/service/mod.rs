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

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use crate::buffer::{BufPool, ByteBuf, Chunk, ChunkPool};
use crate::text::Encoding;

pub use crate::observe::stats::ServiceKind;

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
    /// Downloads go from the file to the socket with `sendfile(2)`
    /// (`--sendfile`): zero copy, the send buffer bypassed.
    pub sendfile: bool,
    /// The files service lists and serves names with a component that
    /// starts with `.` (`--hidden`); without it they are neither listed
    /// nor served (see [`files::open_served`]).
    pub hidden: bool,
}

/// One connection's protocol state.
///
/// The larger states are boxed, so every connection's slot in the table
/// stays small (an idle echo or chat connection is mostly this enum):
/// the box is one allocation when the connection opens, none per message.
#[derive(Debug)]
pub enum Service {
    Echo(echo::Echo),
    Ack(Box<ack::Ack>),
    Files(Box<files::Files>),
    Chat(chat::Chat),
    Admin(Box<admin::Admin>),
}

impl Service {
    /// Fresh state for a new connection to a `kind` listener.
    pub fn new(kind: ServiceKind) -> Service {
        match kind {
            ServiceKind::Echo => Service::Echo(echo::Echo::default()),
            ServiceKind::Ack => Service::Ack(Box::default()),
            ServiceKind::Files => Service::Files(Box::default()),
            ServiceKind::Chat => Service::Chat(chat::Chat::default()),
            ServiceKind::Admin => Service::Admin(Box::default()),
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

    /// A file region to send straight to the socket (`--sendfile`): its
    /// descriptor and the bytes still owed; `None` when there is none, or
    /// the service has other output to send first; and the TCP segment size
    /// to cut it to ([`files::file_chunk`]).
    pub fn zero_copy(&self) -> Option<(std::os::fd::BorrowedFd<'_>, u64, usize)> {
        match self {
            Service::Files(s) => s.zero_copy(),
            _ => None,
        }
    }

    /// A download is under way that cuts its chunks to the connection's TCP
    /// segment size ([`Service::set_segment`]).
    pub fn needs_segment(&self) -> bool {
        matches!(self, Service::Files(s) if s.needs_segment())
    }

    /// The connection's TCP segment size (MSS), for file chunks.
    pub fn set_segment(&mut self, segment: usize) {
        if let Service::Files(s) = self {
            s.set_segment(segment);
        }
    }

    /// `n` bytes of the [`Service::zero_copy`] region were sent.
    pub fn zero_copy_sent(&mut self, n: usize) {
        if let Service::Files(s) = self {
            s.zero_copy_sent(n);
        }
    }

    /// The service is waiting for a request to arrive whole (files before
    /// its request, admin inside an HTTP request's head): the reactor holds
    /// that wait to `--request-timeout`. Never true of a conversation that
    /// is simply quiet (echo, ack, chat, admin's text commands).
    pub fn awaiting_request(&self) -> bool {
        match self {
            Service::Files(s) => s.awaiting_request(),
            Service::Admin(s) => s.awaiting_request(),
            Service::Echo(_) | Service::Ack(_) | Service::Chat(_) => false,
        }
    }

    /// The request being awaited did not arrive whole in time; `received`
    /// is what came of it. The service answers in its protocol's way (files
    /// `ERR request timeout`, or nothing for a bare name; HTTP `408`) as
    /// output it produces, and reads nothing more; the reactor then ends
    /// the connection ([`crate::connection::Connection::finish`]).
    pub fn time_out_request(&mut self, received: &[u8]) {
        match self {
            Service::Files(s) => s.time_out_request(received),
            Service::Admin(s) => s.time_out_request(),
            Service::Echo(_) | Service::Ack(_) | Service::Chat(_) => {}
        }
    }

    /// An admin `watch` is on: the connection is quiet by design, and no
    /// idle deadline applies.
    pub fn is_watching(&self) -> bool {
        matches!(self, Service::Admin(s) if s.is_watching())
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
    /// Where chunks to broadcast come from (chat): recycled ones, so a
    /// line costs no allocation. Without it, each chunk is allocated.
    pub chunks: Option<&'a mut ChunkPool>,
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
            chunks: None,
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

    /// Moves as many input bytes as fit straight into the send buffer. Into
    /// an empty send buffer of the same size, the two buffers trade places
    /// instead of the bytes being copied: a bulk echo then copies nothing
    /// in user space (the copy was a tenth of the server's CPU).
    pub fn transfer(&mut self) -> usize {
        if self.output.is_empty() && self.output.capacity() == self.input.capacity() {
            let n = self.input.len();
            std::mem::swap(self.input, self.output);
            return n;
        }
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
    Broadcast(Chunk),
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
            sendfile: false,
            hidden: false,
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

    /// One step of a conversation as the client and the kernel make it.
    #[derive(Clone, Debug)]
    pub enum Step {
        /// The client's bytes reach the kernel's receive queue and the
        /// socket turns readable (empty: a spurious readiness event).
        Send(Vec<u8>),
        /// The client half-closes: its FIN follows the bytes sent so far.
        Close,
        /// The reactor gives the connection a turn, after the client read
        /// `drained` bytes (that much more room in the kernel's send queue)
        /// and with `broadcast_room` bytes of chat room.
        Turn {
            drained: usize,
            broadcast_room: usize,
        },
    }

    /// How one piece of the input travels, for [`steps`]: its length (0:
    /// a spurious readiness event), whether a turn follows it (if not, the
    /// next piece joins it in the kernel's queue, in the same burst), what
    /// the client reads of the output before that turn, and the turn's
    /// broadcast room.
    #[derive(Clone, Copy, Debug)]
    pub struct Hop {
        pub len: usize,
        pub turn: bool,
        pub drained: usize,
        pub broadcast_room: usize,
    }

    /// Hops that cut input into pieces of up to `max_len` bytes, with
    /// turns (and so burst ends) anywhere, the client reading 0 to 24
    /// bytes of output before each, and broadcast room none, a little, or
    /// plenty.
    pub fn hops(max_len: usize) -> impl proptest::strategy::Strategy<Value = Vec<Hop>> {
        use proptest::prelude::*;
        let hop = (
            prop_oneof![1 => Just(0), 8 => 1..=max_len.max(1)],
            any::<bool>(),
            prop_oneof![1 => Just(0), 3 => 1usize..24],
            prop_oneof![2 => Just(0), 2 => 1usize..64, 1 => Just(usize::MAX)],
        )
            .prop_map(|(len, turn, drained, broadcast_room)| Hop {
                len,
                turn,
                drained,
                broadcast_room,
            });
        proptest::collection::vec(hop, 1..12)
    }

    /// The steps that send `input` as `hops` cut it (repeating them until
    /// it is all sent), then, if `eof`, the client's half-close.
    pub fn steps(input: &[u8], hops: &[Hop], eof: bool) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut rest = input;
        let mut cycle = hops.iter().cycle();
        let mut idle = 0;
        while !rest.is_empty() {
            let hop = cycle.next().expect("hops is never empty");
            // Hops that send nothing, a whole cycle of them: send the rest.
            idle = if hop.len == 0 { idle + 1 } else { 0 };
            let n = if idle > hops.len() {
                rest.len()
            } else {
                hop.len.min(rest.len())
            };
            steps.push(Step::Send(rest[..n].to_vec()));
            rest = &rest[n..];
            if hop.turn {
                steps.push(Step::Turn {
                    drained: hop.drained,
                    broadcast_room: hop.broadcast_room,
                });
            }
        }
        if eof {
            steps.push(Step::Close);
        }
        steps
    }

    /// One service call, as the harness saw it.
    #[derive(Clone, Debug)]
    pub struct Call {
        /// Bytes of the receive buffer the call consumed.
        pub consumed: usize,
        /// Bytes the call appended to the send buffer.
        pub produced: usize,
        /// Broadcast room at the start of the call.
        pub broadcast_room: usize,
        pub outcome: Outcome,
    }

    /// A whole conversation, as [`converse`] drove it.
    #[derive(Debug, Default)]
    pub struct Conversation {
        /// Every byte written to the client, in order.
        pub output: Vec<u8>,
        /// Every chunk broadcast, in order: copies, taken as the reactor
        /// queues it, since the chunk itself goes back to the pool at once
        /// and is refilled by a later call (which must not change what
        /// this one broadcast).
        pub broadcasts: Vec<Vec<u8>>,
        /// Every query asked of the reactor, in order.
        pub queries: Vec<admin::Query>,
        pub calls: Vec<Call>,
        /// Stream offsets at which the service was told of a burst end:
        /// the input bytes handed to it by then.
        pub burst_ends: Vec<u64>,
        /// Bytes read from the socket and handed to the service.
        pub taken: u64,
        /// The service asked to close, and all it wrote was sent.
        pub closed: bool,
        /// The service asked for a reset.
        pub aborted: bool,
        /// Bytes left unconsumed in the receive buffer at the end.
        pub left: usize,
    }

    /// Where the simulated connection is; the phases of
    /// [`crate::connection::Phase`] a conversation the client leads goes
    /// through.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum SimPhase {
        Open {
            paused: bool,
        },
        /// The service said its last word: input is discarded, output sent.
        Draining,
        /// Everything was sent; the write side would be shut now.
        Closing,
        Aborted,
    }

    /// A connection whose socket is memory: the reactor's turn
    /// (`Connection::turn_inner`, `run_service`, `fill`, `flush`) step for
    /// step, with the kernel's queues as plain buffers.
    struct Sim<'a> {
        service: Service,
        config: &'a ServiceConfig,
        recv: ByteBuf,
        send: ByteBuf,
        recv_pool: BufPool,
        send_pool: BufPool,
        chunks: ChunkPool,
        phase: SimPhase,
        readable: bool,
        writable: bool,
        peer_closing: bool,
        eof: bool,
        /// The kernel's receive queue, and whether the client's FIN is
        /// behind it.
        kernel_in: std::collections::VecDeque<u8>,
        fin: bool,
        /// Room in the kernel's send queue.
        kernel_room: usize,
        peer: SocketAddr,
        now: Instant,
        run: Conversation,
    }

    impl Sim<'_> {
        fn low_watermark(&self) -> usize {
            (self.send.capacity() / 4).max(1)
        }

        fn takes_input(&self) -> bool {
            matches!(self.phase, SimPhase::Open { .. })
        }

        fn has_work(&self) -> bool {
            !self.recv.is_empty()
                || self.eof
                || (self.service.is_producing() && self.send.len() < self.low_watermark())
        }

        fn wants_read(&self) -> bool {
            if !self.readable || self.eof {
                return false;
            }
            match self.phase {
                SimPhase::Open { paused } => !paused && !self.recv.is_full(),
                SimPhase::Draining | SimPhase::Closing => true,
                SimPhase::Aborted => false,
            }
        }

        fn mark(&self) -> (u64, usize, usize, usize, SimPhase, bool) {
            (
                self.run.taken,
                self.run.output.len(),
                self.recv.len(),
                self.send.len(),
                self.phase,
                self.eof,
            )
        }

        /// One turn, as `Connection::turn` runs it; the effects are
        /// returned for the caller to apply, as the reactor does after the
        /// turn.
        fn turn(&mut self, broadcast_room: usize) -> Vec<Effect> {
            let mut effects = Vec::new();
            let mut room = broadcast_room;
            let mut yielded = false;
            let mut bytes_in = 0;
            loop {
                let before = self.mark();
                if self.takes_input() && self.has_work() && !yielded {
                    yielded = self.call(false, &mut room, &mut effects);
                }
                if self.phase == SimPhase::Aborted {
                    break;
                }
                if self.writable && !self.send.is_empty() {
                    self.flush();
                }
                match self.phase {
                    SimPhase::Open { paused: true } if self.send.len() <= self.low_watermark() => {
                        self.phase = SimPhase::Open { paused: false };
                    }
                    SimPhase::Draining if self.send.is_empty() => {
                        self.phase = SimPhase::Closing;
                        self.run.closed = true;
                        self.recv.clear();
                    }
                    _ => {}
                }
                if self.wants_read() {
                    let budget = crate::connection::TURN_BUDGET - bytes_in;
                    let (n, ran_dry) = self.fill(budget);
                    if self.takes_input() {
                        bytes_in += n;
                        self.run.taken += n as u64;
                        if ran_dry {
                            self.run.burst_ends.push(self.run.taken);
                            yielded |= self.call(true, &mut room, &mut effects);
                        }
                    } else {
                        self.recv.clear();
                    }
                }
                if self.phase == SimPhase::Aborted
                    || (self.phase == SimPhase::Closing && self.eof)
                    || bytes_in >= crate::connection::TURN_BUDGET
                    || self.mark() == before
                {
                    break;
                }
            }
            self.recv.release(&mut self.recv_pool);
            self.send.release(&mut self.send_pool);
            effects
        }

        /// `run_service`: one call; true if the service yielded its turn.
        fn call(&mut self, burst_end: bool, room: &mut usize, effects: &mut Vec<Effect>) -> bool {
            let low_watermark = self.low_watermark();
            let (input_before, output_before) = (self.recv.len(), self.send.len());
            let room_before = *room;
            let mut io = Io::new(
                &mut self.recv,
                &mut self.send,
                &mut self.send_pool,
                self.peer,
                self.now,
            );
            io.low_watermark = low_watermark;
            io.eof = self.eof;
            io.broadcast_room = *room;
            io.chunks = Some(&mut self.chunks);
            let outcome = if burst_end {
                self.service.burst_end(&mut io, self.config)
            } else {
                self.service.process(&mut io, self.config)
            };
            assert!(
                io.broadcast_room <= *room,
                "a service may only lower the broadcast room"
            );
            *room = io.broadcast_room;
            // A service consumes input; it never adds to it (a buffer
            // cleared for a line too long counts as consumed).
            assert!(self.recv.len() <= input_before, "the service added input");
            let consumed = input_before - self.recv.len();
            self.run.calls.push(Call {
                consumed,
                produced: self.send.len().saturating_sub(output_before),
                broadcast_room: room_before,
                outcome: outcome.clone(),
            });
            if let Some(effect) = outcome.effect.clone() {
                effects.push(effect);
            }
            match outcome.next {
                Next::Continue => {
                    if outcome.output_blocked && self.phase == (SimPhase::Open { paused: false }) {
                        self.phase = SimPhase::Open { paused: true };
                    }
                }
                Next::CloseAfterFlush => {
                    if self.takes_input() {
                        self.phase = SimPhase::Draining;
                        self.recv.clear();
                    }
                }
                Next::Abort => {
                    self.phase = SimPhase::Aborted;
                    self.run.aborted = true;
                }
            }
            outcome.yielded
        }

        /// `Connection::fill`: reads until the kernel's queue is empty (a
        /// short read or `WouldBlock`: the burst ended), the buffer is
        /// full, or the client's FIN is read.
        fn fill(&mut self, budget: usize) -> (usize, bool) {
            let mut total = 0;
            while total < budget && !self.recv.is_full() {
                let spare = self.recv.spare(&mut self.recv_pool);
                let asked = spare.len();
                if self.kernel_in.is_empty() {
                    self.readable = false;
                    if self.fin {
                        self.eof = true;
                        return (total, false);
                    }
                    return (total, true);
                }
                let n = asked.min(self.kernel_in.len());
                for (slot, byte) in spare.iter_mut().zip(self.kernel_in.drain(..n)) {
                    *slot = byte;
                }
                self.recv.commit(n);
                total += n;
                if n < asked && !self.peer_closing {
                    self.readable = false;
                    return (total, true);
                }
            }
            (total, false)
        }

        /// `Connection::flush`: writes while the kernel has room.
        fn flush(&mut self) {
            while !self.send.is_empty() {
                if self.kernel_room == 0 {
                    self.writable = false;
                    return;
                }
                let n = self.kernel_room.min(self.send.len());
                self.run.output.extend_from_slice(&self.send.data()[..n]);
                self.send.consume(n);
                self.kernel_room -= n;
            }
        }

        fn done(&self) -> bool {
            matches!(self.phase, SimPhase::Aborted) || (self.phase == SimPhase::Closing && self.eof)
        }
    }

    /// The reactor's side of [`converse`] for services that ask nothing.
    pub fn no_queries(query: admin::Query) -> (Vec<u8>, Option<admin::Query>) {
        panic!("unexpected query {query:?}")
    }

    /// Most turns a conversation may take after its script before it is
    /// declared stuck.
    const MAX_DRAIN_TURNS: usize = 100_000;

    /// Drives a `kind` connection with buffers of `recv_cap` and
    /// `send_cap` bytes through `steps`, the way the reactor would, then
    /// lets the client read everything (unlimited room) until nothing more
    /// moves. `answer` is the reactor's answer to an admin query: the
    /// bytes and the query for the rest, delivered after the turn that
    /// asked, as the reactor does.
    pub fn converse(
        kind: ServiceKind,
        config: &ServiceConfig,
        steps: &[Step],
        recv_cap: usize,
        send_cap: usize,
        mut answer: impl FnMut(admin::Query) -> (Vec<u8>, Option<admin::Query>),
    ) -> Conversation {
        let mut sim = Sim {
            service: Service::new(kind),
            config,
            recv: ByteBuf::new(recv_cap),
            send: ByteBuf::new(send_cap),
            recv_pool: BufPool::new(recv_cap),
            send_pool: BufPool::new(send_cap),
            chunks: ChunkPool::default(),
            phase: SimPhase::Open { paused: false },
            readable: false,
            writable: true,
            peer_closing: false,
            eof: false,
            kernel_in: Default::default(),
            fin: false,
            kernel_room: 0,
            peer: "127.0.0.1:4000".parse().expect("literal address"),
            now: Instant::now(),
            run: Conversation::default(),
        };
        let mut apply = |sim: &mut Sim<'_>, effects: Vec<Effect>| {
            for effect in effects {
                match effect {
                    Effect::Broadcast(chunk) => {
                        sim.run.broadcasts.push(chunk.to_vec());
                        sim.chunks.recycle(chunk);
                    }
                    Effect::WaitForRoom => {}
                    Effect::Query(query) => {
                        sim.run.queries.push(query);
                        let (bytes, next) = answer(query);
                        sim.service.deliver(bytes, next);
                    }
                }
            }
        };
        for step in steps {
            if sim.done() {
                break;
            }
            match step {
                Step::Send(bytes) => {
                    if !sim.fin {
                        sim.kernel_in.extend(bytes);
                    }
                    sim.readable = true;
                }
                Step::Close => {
                    sim.fin = true;
                    sim.peer_closing = true;
                    sim.readable = true;
                }
                &Step::Turn {
                    drained,
                    broadcast_room,
                } => {
                    sim.kernel_room = sim.kernel_room.saturating_add(drained);
                    sim.writable |= drained > 0;
                    let effects = sim.turn(broadcast_room);
                    apply(&mut sim, effects);
                }
            }
        }
        let mut turns = 0;
        while !sim.done() {
            turns += 1;
            assert!(
                turns <= MAX_DRAIN_TURNS,
                "the conversation did not settle within {MAX_DRAIN_TURNS} turns"
            );
            sim.kernel_room = usize::MAX;
            sim.writable = true;
            let (before, calls) = (sim.mark(), sim.run.calls.len());
            let effects = sim.turn(usize::MAX);
            let yielded = sim.run.calls[calls..].iter().any(|c| c.outcome.yielded);
            let quiet = effects.is_empty() && !yielded && sim.mark() == before;
            apply(&mut sim, effects);
            if quiet {
                break;
            }
        }
        sim.run.left = sim.recv.len();
        sim.run
    }
}
