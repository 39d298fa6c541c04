//! One client connection: its socket, its two bounded buffers, its readiness
//! hints and its phase, and the turn that moves bytes between them.
//!
//! A turn reads from the socket into the receive buffer, lets the service turn
//! input into output, and writes the send buffer to the socket, until nothing
//! moves, the socket would block, or the turn's byte budget is spent. It never
//! registers or closes the socket, and it never reads the clock:
//! it tells the reactor what to do next, and the reactor keeps the deadlines.
//!
//! Readiness is edge-triggered, so the connection remembers what the last
//! event said (`readable`, `writable`) and clears a hint only when the socket
//! proves it stale (`WouldBlock`, or a short read). A connection that stops
//! early, because its budget ran out or its receive buffer was full, keeps the
//! hint and must be driven again without waiting for a new edge.
//!
//! # Closing
//!
//! Stopping input and discarding input are different things, and the
//! [`Phase`] says which applies:
//! - the **server** ends a conversation (signal, idle timeout, request
//!   timeout, eviction at `--max-conns`, a chat receiver that cannot keep
//!   up) with [`Connection::finish`]: nothing more is read,
//!   but the service still consumes what was already read (echo echoes it, ack
//!   answers every complete message, chat broadcasts every complete line,
//!   waiting for broadcast room if it must) and every reply is flushed
//!   ([`Phase::Finishing`]);
//! - the **client** ends it (its half-close, `exit`, a download answered):
//!   the service has said its last word, so input from then on is read and
//!   discarded while what is owed is sent ([`Phase::Draining`]).
//!
//! Either way the write side is then shut and the connection waits in
//! [`Phase::Closing`] for the client's FIN (or, when the server ended it, for
//! the client to acknowledge our last byte, which the reactor checks), so a
//! close never turns unread input into a reset that destroys replies still in
//! flight.
//!
//! Invariant, enforced in [`Connection::turn`]: every byte read from the
//! socket while the conversation is open is handed to the service, which
//! consumes it or holds it as an unfinished message, unless the connection
//! failed; bytes are discarded only in `Draining` and `Closing`, after the
//! client ended the conversation. A read that fails after bytes arrived (a
//! reset after data) still delivers those bytes to the service first: the
//! failure is kept (the sticky `failure` field) and acted on once the service
//! has had them. Discarded input is not activity: it never refreshes the idle
//! timer (it is reported apart, in [`TurnReport::discarded`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Instant;

use log::{debug, trace, warn};
use mio::net::TcpStream;

use crate::buffer::{self, BufPool, ByteBuf, Chunk, ChunkPool, SharedQueue};
use crate::observe::stats::CloseReason;
use crate::service::{Effect, Io, Next, Service, ServiceConfig, ServiceKind, files};
use crate::sys;

/// Bytes a connection may read plus write in one turn. Past it the connection
/// is queued again behind the others, so that a bulk transfer cannot starve a
/// thousand interactive clients; large enough that a bulk transfer still
/// moves in big steps.
pub const TURN_BUDGET: usize = 256 * 1024;

/// What all the connections ready in one turn of the loop may move
/// together before any of them waits for the next poll.
pub const ROUND_BYTES: usize = 2 * 1024 * 1024;

/// The smallest budget a turn gets: enough for a few full buffers, so a
/// bulk transfer still moves in sizeable steps however many are ready.
pub const MIN_TURN_BUDGET: usize = 16 * 1024;

/// The byte budget of each turn when `ready` connections have work in this
/// turn of the loop: [`ROUND_BYTES`] shared between them, within
/// [`MIN_TURN_BUDGET`] and [`TURN_BUDGET`]. Fair by design: with a few
/// connections each moves up to 256 KiB a turn (bulk throughput); with many
/// ready, each moves less, so a small request waits behind at most about
/// 2 MiB of other connections' bytes, not 256 KiB for each of them.
pub fn turn_budget(ready: usize) -> usize {
    (ROUND_BYTES / ready.max(1)).clamp(MIN_TURN_BUDGET, TURN_BUDGET)
}

/// What a turn needs from the reactor besides the connection itself.
pub struct TurnContext<'a> {
    pub pools: &'a mut Pools,
    pub config: &'a ServiceConfig,
    pub now: Instant,
    /// What the service asks of the reactor is appended here.
    pub effects: &'a mut Vec<Effect>,
    /// Bytes the service may broadcast in this turn (chat flow control),
    /// lowered as it does.
    pub broadcast_room: usize,
    /// Bytes this turn may read plus write (see [`turn_budget`]).
    pub budget: usize,
}

/// The buffer pools: storage blocks of each size, the boxes that hold a
/// connection's buffers, and the chunks chat lines are broadcast in.
#[derive(Debug)]
pub struct Pools {
    pub recv: BufPool,
    pub send: BufPool,
    pub chunks: ChunkPool,
    /// Empty [`Buffers`] boxes given back by connections gone quiet, taken
    /// again by the next connection with bytes to move: in steady state no
    /// turn allocates one. Boxed here too: a box moves to a connection and
    /// back whole, so taking one never allocates.
    #[allow(clippy::vec_box)]
    buffers: Vec<Box<Buffers>>,
}

/// At most this many empty [`Buffers`] boxes are kept for reuse (about
/// 120 KiB); more are freed.
const SPARE_BUFFERS: usize = 1024;

impl Pools {
    /// Pools for buffers of `recv` and `send` bytes.
    pub fn new(recv: usize, send: usize) -> Pools {
        Pools {
            recv: BufPool::new(recv),
            send: BufPool::new(send),
            chunks: ChunkPool::default(),
            buffers: Vec::new(),
        }
    }

    fn take_buffers(&mut self) -> Box<Buffers> {
        self.buffers.pop().unwrap_or_else(|| {
            Box::new(Buffers {
                recv: ByteBuf::new(self.recv.block_size()),
                send: ByteBuf::new(self.send.block_size()),
                shared: SharedQueue::default(),
            })
        })
    }

    /// Gives back a connection's buffers: their storage to the block pools,
    /// the box itself to the spares if it is empty.
    fn give_buffers(&mut self, mut buffers: Box<Buffers>) -> Option<Box<Buffers>> {
        buffers.recv.release(&mut self.recv);
        buffers.send.release(&mut self.send);
        self.recv.balance(&mut self.send);
        if !buffers.is_empty() {
            return Some(buffers);
        }
        if self.buffers.len() < SPARE_BUFFERS {
            self.buffers.push(buffers);
        }
        None
    }
}

/// A connection's buffers. They are boxed apart from the connection and held
/// only while bytes are in them: a quiet connection is a small slab entry
/// (its buffers' storage was already given back at every turn's end), which
/// is what keeps 10,000 idle connections at about a hundred bytes each.
#[derive(Debug)]
pub struct Buffers {
    /// Received bytes the service has not consumed; bounded by `--recv-buf`.
    pub recv: ByteBuf,
    /// Bytes produced and not yet taken by the kernel; bounded by
    /// `--send-buf`.
    pub send: ByteBuf,
    /// Output shared with other connections (chat lines), sent after
    /// `send`; `send` and this together stay within `--send-buf`.
    pub shared: SharedQueue,
}

impl Buffers {
    /// Bytes produced for the client and not yet taken by the kernel: the
    /// send buffer plus the shared chunks queued behind it. Both count
    /// against `--send-buf`.
    pub fn owed(&self) -> usize {
        self.send.len() + self.shared.len()
    }

    /// Below this many buffered bytes, a paused connection reads again. A gap
    /// between pausing (full) and resuming stops the connection from
    /// flapping between the two on every small write.
    pub fn low_watermark(&self) -> usize {
        (self.send.capacity() / 4).max(1)
    }

    fn is_empty(&self) -> bool {
        self.recv.is_empty() && self.send.is_empty() && self.shared.is_empty()
    }
}

/// Where a connection is in its life. Every phase but `Open` has a deadline,
/// kept by the reactor and started when the phase is entered (see
/// [`TurnReport::phase_changed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading requests and answering them. `paused`: reading is held back
    /// because the service left input waiting for send-buffer room
    /// (backpressure); it resumes once the send buffer drains below its low
    /// watermark.
    Open { paused: bool },
    /// The server ended the conversation: nothing more is read, the service
    /// consumes what it already read, and what is owed is sent.
    Finishing,
    /// The client ended the conversation (or the service finished answering
    /// it): input is read and discarded, and what is owed is sent.
    Draining,
    /// Everything owed is with the kernel and our write side is shut: waiting
    /// for the client to close its side. `discard`: the client ended the
    /// conversation, so input is read and thrown away; otherwise (the server
    /// ended it) nothing is read until the client's FIN, and the client's
    /// acknowledgement of our last byte ends the wait too.
    Closing { discard: bool },
}

impl Phase {
    /// The conversation is still open.
    pub fn is_open(self) -> bool {
        matches!(self, Phase::Open { .. })
    }
}

/// What the reactor should do with a connection after its turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Wait for the next readiness event (or the phase's deadline).
    Wait,
    /// The budget ran out with work left: drive it again soon.
    Requeue,
    /// Close the socket now: the conversation ended cleanly.
    Close(CloseReason),
    /// Close with a reset (SO_LINGER 0): a transfer that cannot complete
    /// (or a failed socket) must not look like a complete one to the client.
    Reset(CloseReason),
}

/// The result of one turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TurnReport {
    pub next: Verdict,
    /// Bytes read and handed to the service.
    pub bytes_in: usize,
    /// Bytes read and thrown away (after the client ended the conversation).
    pub discarded: usize,
    pub bytes_out: usize,
    /// The phase changed during the turn: its deadline starts now.
    pub phase_changed: bool,
    /// The turn paused reading for backpressure.
    pub paused: bool,
    /// The service asked to be called again at this time.
    pub wake_at: Option<Instant>,
}

/// One accepted client.
#[derive(Debug)]
pub struct Connection {
    pub socket: TcpStream,
    peer: Peer,
    pub kind: ServiceKind,
    /// Which accept this is: tags the connection's poll token, so an event
    /// left over for a closed connection never reaches a new one that reuses
    /// its slab key.
    pub generation: u32,
    service: Service,
    /// The buffers, held only while bytes are in them (see [`Buffers`]).
    io: Option<Box<Buffers>>,
    phase: Phase,
    /// The socket may have bytes to read (last event said so, and no read has
    /// seen it empty since).
    pub readable: bool,
    /// The socket may take bytes (as `readable`, for writes).
    pub writable: bool,
    /// An event said the client closed its side: a short read then is not
    /// the end of the data, so read on until a read returns 0.
    pub peer_closing: bool,
    /// A read returned 0: the client sent everything it will send.
    pub eof: bool,
    /// A socket call failed: sticky, so no later step of any turn reads or
    /// writes again. The turn that sets it lets the service take the bytes
    /// read before the failure, then asks for a reset.
    failure: Option<Failure>,
    /// Sitting in the reactor's ready queue.
    pub queued: bool,
    /// Uses left before [`Connection::segment`] asks the kernel again.
    segment_turns: u8,
    /// How many uses the last answer was trusted for: doubled while the
    /// answer stays the same, back to 1 when it changes.
    segment_every: u8,
    /// The TCP segment size (MSS) last asked, 0 before the first bulk
    /// transfer: reads and writes of bulk data are cut to whole segments
    /// (see [`Connection::flush`]).
    segment: u32,
    /// The last time the service asked to be woken at, as the reactor
    /// queued it (so one request is queued once, not once per turn).
    wake_at: Option<Stamp>,
    /// The cause counted when this connection closes.
    pub close_reason: CloseReason,
    opened: Stamp,
    last_active: Stamp,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Why a connection cannot go on. Sticky: once set, nothing more is read or
/// written, and the connection ends with a reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// A socket call failed (the client reset the connection, say).
    Socket(io::ErrorKind),
    /// The service cannot complete what it promised (a file shrank or failed
    /// to read mid-download).
    Aborted,
}

/// A send buffer or a read at least this large is bulk: cut to whole TCP
/// segments (see [`Connection::flush`]). Smaller messages are never cut, and
/// cost no `getsockopt`.
const BULK_WRITE: usize = 32 * 1024;

/// The most bulk reads and writes that use the segment size
/// [`Connection::segment`] last asked before it asks again.
const SEGMENT_TURNS: u8 = 64;

/// A client's address in 16 bytes (a `SocketAddr` takes 32): an IPv6 one,
/// with its flow and scope fields, is boxed.
#[derive(Debug)]
enum Peer {
    V4(SocketAddrV4),
    V6(Box<SocketAddrV6>),
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Peer {
        match addr {
            SocketAddr::V4(v4) => Peer::V4(v4),
            SocketAddr::V6(v6) => Peer::V6(Box::new(v6)),
        }
    }
}

/// An instant in 8 bytes (an `Instant` takes 16): nanoseconds since the
/// process's first stamp, plus one so that `Option<Stamp>` takes 8 bytes
/// too. Exact to the nanosecond for 584 years. An instant before the first
/// stamp (another thread's, a moment earlier) counts as the first stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Stamp(std::num::NonZeroU64);

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

impl Stamp {
    fn of(at: Instant) -> Stamp {
        let epoch = *EPOCH.get_or_init(|| at);
        let nanos =
            u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX - 1);
        Stamp(std::num::NonZeroU64::MIN.saturating_add(nanos))
    }

    fn instant(self) -> Instant {
        let epoch = *EPOCH.get().expect("a stamp was made, so the epoch is set");
        epoch + std::time::Duration::from_nanos(self.0.get() - 1)
    }
}

/// What one service call showed the turn.
#[derive(Clone, Copy, Debug)]
struct ServiceCall {
    /// Given input and an empty send buffer, it consumed and produced
    /// nothing, and waits for nothing but more input: an unfinished
    /// message.
    stuck: bool,
    /// It asked to be called again next turn ([`crate::service::Outcome::yielded`]).
    yielded: bool,
    /// It asked to be called again at this time.
    wake_at: Option<Instant>,
}

impl Connection {
    /// A connection for an accepted socket, with empty buffers that hold no
    /// storage yet.
    pub fn new(
        socket: TcpStream,
        peer: SocketAddr,
        kind: ServiceKind,
        generation: u32,
        now: Instant,
    ) -> Connection {
        let now = Stamp::of(now);
        Connection {
            socket,
            peer: Peer::from(peer),
            kind,
            generation,
            service: Service::new(kind),
            io: None,
            phase: Phase::Open { paused: false },
            readable: false,
            writable: false,
            peer_closing: false,
            eof: false,
            failure: None,
            queued: false,
            segment_turns: 0,
            segment_every: 0,
            segment: 0,
            wake_at: None,
            close_reason: CloseReason::Peer,
            opened: now,
            last_active: now,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        match &self.peer {
            Peer::V4(addr) => SocketAddr::V4(*addr),
            Peer::V6(addr) => SocketAddr::V6(**addr),
        }
    }

    /// Where the connection is in its life.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When the connection was accepted.
    pub fn opened(&self) -> Instant {
        self.opened.instant()
    }

    /// When a turn last moved a byte (or the accept, before any).
    pub fn last_active(&self) -> Instant {
        self.last_active.instant()
    }

    /// The last time the service asked to be woken at, as the reactor
    /// queued it (so one request is queued once, not once per turn).
    pub fn wake_at(&self) -> Option<Instant> {
        self.wake_at.map(Stamp::instant)
    }

    /// See [`Connection::wake_at`].
    pub fn set_wake_at(&mut self, at: Option<Instant>) {
        self.wake_at = at.map(Stamp::of);
    }

    /// The server ends the conversation, counted as `reason`: nothing more
    /// is read, the service consumes what was already read, what is owed is
    /// sent, then the connection closes. A download in progress runs to its
    /// end. Does nothing once the conversation has already ended. True if
    /// the phase changed (its deadline starts now).
    pub fn finish(&mut self, reason: CloseReason) -> bool {
        if !self.phase.is_open() {
            return false;
        }
        self.close_reason = reason;
        self.phase = Phase::Finishing;
        true
    }

    /// The service is waiting for a request to arrive whole (see
    /// [`Service::awaiting_request`]); only while the conversation is open.
    pub fn awaiting_request(&self) -> bool {
        self.phase.is_open() && self.service.awaiting_request()
    }

    /// An admin `watch` is on (see [`Service::is_watching`]).
    pub fn is_watching(&self) -> bool {
        self.service.is_watching()
    }

    /// The request the service awaited did not arrive whole in time: the
    /// unfinished request is dropped (it timed out; nothing more is read),
    /// the service answers as its protocol says, and the server ends the
    /// conversation as [`Connection::finish`] does, counted as a timeout.
    /// True if the phase changed (its deadline starts now).
    pub fn time_out_request(&mut self) -> bool {
        if !self.awaiting_request() {
            return false;
        }
        let received = self.io.as_ref().map_or(&[][..], |b| b.recv.data());
        self.service.time_out_request(received);
        if let Some(b) = &mut self.io {
            b.recv.clear();
        }
        self.finish(CloseReason::Timeout)
    }

    /// The state the admin view shows: reading, paused (by backpressure, or
    /// a download waiting for its send buffer to drain), finishing (the
    /// server ended the conversation and is answering what it read),
    /// draining (sending what is owed before closing) or closing (our side
    /// shut, waiting for the client's).
    pub fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Open { paused: true } => "paused",
            Phase::Open { paused: false }
                if self.service.is_producing()
                    && self
                        .io
                        .as_ref()
                        .is_some_and(|b| b.owed() >= b.low_watermark()) =>
            {
                "paused"
            }
            Phase::Open { .. } => "reading",
            Phase::Finishing => "finishing",
            Phase::Draining => "draining",
            Phase::Closing { .. } => "closing",
        }
    }

    /// Hands the answer to a query back to the service.
    pub fn deliver(&mut self, answer: Vec<u8>, next: Option<crate::service::admin::Query>) {
        self.service.deliver(answer, next);
    }

    /// `watch` snapshots skipped for this (admin) connection.
    pub fn skipped_snapshots(&self) -> Option<u64> {
        self.service.skipped_snapshots()
    }

    /// Whether a read now could do anything useful.
    fn wants_read(&self, b: &Buffers) -> bool {
        if !self.readable || self.eof || self.failure.is_some() {
            return false;
        }
        match self.phase {
            Phase::Open { paused } => !paused && !b.recv.is_full(),
            Phase::Finishing => false,
            Phase::Draining | Phase::Closing { discard: true } => true,
            // The client's FIN came: it ended its side too, so what is left
            // is read to the end and dropped, and the close is clean.
            Phase::Closing { discard: false } => self.peer_closing,
        }
    }

    /// Whether what is read goes to the service (rather than being
    /// discarded).
    fn service_takes_input(&self) -> bool {
        matches!(self.phase, Phase::Open { .. } | Phase::Finishing)
    }

    /// Moves bytes until nothing more can move, the sockets would block, or
    /// the budget is spent; then says what the reactor should do next.
    pub fn turn(&mut self, key: usize, ctx: &mut TurnContext<'_>) -> TurnReport {
        let phase = self.phase;
        let mut report = TurnReport {
            next: Verdict::Wait,
            bytes_in: 0,
            discarded: 0,
            bytes_out: 0,
            phase_changed: false,
            paused: false,
            wake_at: None,
        };
        if self.service.needs_segment() {
            let segment = self.segment();
            self.service.set_segment(segment);
        }
        let mut buffers = self.io.take().unwrap_or_else(|| ctx.pools.take_buffers());
        report.next = self.turn_inner(key, ctx, &mut buffers, &mut report);
        report.phase_changed = self.phase != phase;
        let paused = Phase::Open { paused: true };
        report.paused = phase != paused && self.phase == paused;
        if report.bytes_in + report.bytes_out > 0 {
            self.last_active = Stamp::of(ctx.now);
        }
        self.bytes_in += report.bytes_in as u64;
        self.bytes_out += report.bytes_out as u64;
        // An idle connection holds no buffers.
        self.io = ctx.pools.give_buffers(buffers);
        report
    }

    fn turn_inner(
        &mut self,
        key: usize,
        ctx: &mut TurnContext<'_>,
        b: &mut Buffers,
        report: &mut TurnReport,
    ) -> Verdict {
        // The service asked to be called again next turn, not in this one.
        let mut yielded = false;
        // Nothing more came after a runt was held back: send it too.
        let mut flush_all = false;
        loop {
            let before = self.progress_mark(b, report);

            // The service first: after a failed read it still gets the bytes
            // read before the failure.
            let mut stuck = false;
            let due = self.wake_at().is_some_and(|t| t <= ctx.now);
            if self.service_takes_input() && (self.service_has_work(b) || due) && !yielded {
                let call = self.run_service(key, ctx, b, false);
                stuck = call.stuck;
                yielded = call.yielded;
                if call.wake_at.is_some() {
                    report.wake_at = call.wake_at;
                }
            }
            if let Some(failure) = self.failure {
                debug!(
                    "conn {key} {}: ending with a reset: {failure:?}",
                    self.peer()
                );
                return Verdict::Reset(CloseReason::Error);
            }

            if self.writable && b.owed() > 0 {
                let whole = !flush_all && self.more_coming(b);
                match self.flush(key, b, whole) {
                    Ok(n) => report.bytes_out += n,
                    Err(e) => {
                        self.fail(key, "write", &e);
                        continue;
                    }
                }
            }
            if self.writable && b.owed() == 0 {
                let room = ctx
                    .budget
                    .saturating_sub(report.bytes_in + report.bytes_out);
                report.bytes_out += self.send_zero_copy(key, room);
            }
            self.step_phase(key, b, stuck);

            if self.wants_read(b) {
                let budget = ctx.budget - report.bytes_in.min(ctx.budget);
                let (n, ran_dry) = self.fill(key, b, &mut ctx.pools.recv, budget);
                if self.service_takes_input() {
                    report.bytes_in += n;
                    if ran_dry {
                        // The end of a burst is an input of its own: told at
                        // once, whatever the buffer holds, so it is never
                        // lost.
                        let call = self.run_service(key, ctx, b, true);
                        yielded |= call.yielded;
                    }
                } else {
                    report.discarded += n;
                    b.recv.clear();
                }
            }
            if self.failure.is_some() {
                continue;
            }
            if matches!(self.phase, Phase::Closing { .. }) && self.eof {
                return Verdict::Close(self.close_reason);
            }
            if report.bytes_in + report.bytes_out + report.discarded >= ctx.budget {
                return Verdict::Requeue;
            }
            if self.progress_mark(b, report) == before {
                if !flush_all && self.writable && b.owed() > 0 {
                    // What was held back for bytes that did not come.
                    flush_all = true;
                    continue;
                }
                return if yielded {
                    Verdict::Requeue
                } else {
                    Verdict::Wait
                };
            }
        }
    }

    /// The phase changes that follow from the buffers' state; `stuck`: the
    /// service was just given input and a whole send buffer of room and
    /// took none of it (an unfinished message that can never be finished
    /// now that nothing more is read).
    fn step_phase(&mut self, key: usize, b: &mut Buffers, stuck: bool) {
        match self.phase {
            Phase::Open { paused: true } if b.owed() <= b.low_watermark() => {
                self.phase = Phase::Open { paused: false };
                debug!(
                    "conn {key}: resume reading, send buffer {} bytes",
                    b.send.len()
                );
            }
            Phase::Finishing
                if b.owed() == 0
                    && !self.service.is_producing()
                    && (b.recv.is_empty() || stuck) =>
            {
                if !b.recv.is_empty() {
                    debug!(
                        "conn {key}: {} bytes of an unfinished message left at the server's close",
                        b.recv.len()
                    );
                }
                self.shut_write(key, b, false);
            }
            Phase::Draining if b.owed() == 0 => self.shut_write(key, b, true),
            _ => {}
        }
    }

    /// Everything owed is with the kernel: shutting the write side sends FIN
    /// after it, and the kernel delivers it all even after the socket is
    /// closed, provided no unread input makes the close a reset; hence the
    /// wait in `Closing`.
    ///
    /// Once the client's FIN has been read, the connection closes in this
    /// same turn, and the close sends our FIN after what is queued: so no
    /// `shutdown` call then (one system call fewer for every short
    /// connection, where the client closes first).
    fn shut_write(&mut self, key: usize, b: &mut Buffers, discard: bool) {
        if !self.eof {
            match self.socket.shutdown(Shutdown::Write) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return self.fail(key, "shutdown", &e),
            }
        }
        b.recv.clear();
        self.phase = Phase::Closing { discard };
    }

    /// What changes whenever a step of the turn did something; the turn ends
    /// when a whole pass leaves it unchanged.
    fn progress_mark(
        &self,
        b: &Buffers,
        report: &TurnReport,
    ) -> (usize, usize, usize, usize, usize, Phase, bool) {
        (
            report.bytes_in,
            report.discarded,
            report.bytes_out,
            b.recv.len(),
            b.owed(),
            self.phase,
            self.eof,
        )
    }

    /// Input to handle, an end of input to act on, or output to produce
    /// now that the send buffer has room for it.
    fn service_has_work(&self, b: &Buffers) -> bool {
        !b.recv.is_empty()
            || self.eof
            || (self.service.is_producing() && b.owed() < b.low_watermark())
    }

    /// One call of the service (`burst_end`: the socket just ran dry).
    fn run_service(
        &mut self,
        key: usize,
        ctx: &mut TurnContext<'_>,
        b: &mut Buffers,
        burst_end: bool,
    ) -> ServiceCall {
        let low_watermark = b.low_watermark();
        let full_room = b.owed() == 0;
        let (input_before, output_before) = (b.recv.len(), b.send.len());
        let mut io = Io::new(
            &mut b.recv,
            &mut b.send,
            &mut ctx.pools.send,
            self.peer(),
            ctx.now,
        );
        io.low_watermark = low_watermark;
        io.eof = self.eof;
        io.broadcast_room = ctx.broadcast_room;
        io.chunks = Some(&mut ctx.pools.chunks);
        let outcome = if burst_end {
            self.service.burst_end(&mut io, ctx.config)
        } else {
            self.service.process(&mut io, ctx.config)
        };
        ctx.broadcast_room = io.broadcast_room;
        // Complete lines that wait for broadcast room are not an unfinished
        // message: they go out once the room has room (or the phase
        // deadline passes), never dropped as one.
        let waiting = outcome.effect == Some(Effect::WaitForRoom);
        if let Some(effect) = outcome.effect {
            ctx.effects.push(effect);
        }
        let call = ServiceCall {
            stuck: full_room
                && !waiting
                && input_before > 0
                && b.recv.len() == input_before
                && b.send.len() == output_before,
            yielded: outcome.yielded,
            wake_at: outcome.wake_at,
        };
        match outcome.next {
            Next::Continue => {
                // Only a service that left input waiting for room pauses
                // reading: a download filling the buffer is not backpressure
                // on the client.
                if outcome.output_blocked && self.phase == (Phase::Open { paused: false }) {
                    self.phase = Phase::Open { paused: true };
                    debug!(
                        "conn {key}: pause reading, send buffer full ({} bytes)",
                        b.send.len()
                    );
                }
            }
            Next::CloseAfterFlush => {
                if matches!(self.phase, Phase::Open { .. } | Phase::Finishing) {
                    debug!("conn {key}: service finished, flushing {} bytes", b.owed());
                    // The client ended the conversation: whatever it sends
                    // from now on is read and dropped.
                    self.phase = Phase::Draining;
                    b.recv.clear();
                }
            }
            Next::Abort => {
                self.failure.get_or_insert(Failure::Aborted);
            }
        }
        call
    }

    /// Reads into the receive buffer until the socket runs dry, the buffer
    /// fills, or `budget` bytes have come in. Returns the bytes read and
    /// whether the socket ran dry (the end of a burst). A failing read keeps
    /// what came before it and marks the connection failed.
    fn fill(
        &mut self,
        key: usize,
        b: &mut Buffers,
        pool: &mut BufPool,
        budget: usize,
    ) -> (usize, bool) {
        let mut total = 0;
        while total < budget && !b.recv.is_full() {
            // Bulk input is read in whole segments too, so that an echo of it
            // writes whole segments (see `flush`).
            let free = b.recv.free();
            let segment = if total >= BULK_WRITE {
                self.segment()
            } else {
                self.segment as usize
            };
            if total > 0 && segment > 0 && free < segment.min(BULK_WRITE) {
                // A sliver of room after a bulk read: the service makes
                // room first, then a whole segment is read.
                return (total, false);
            }
            let want = if free >= BULK_WRITE {
                buffer::whole_segments(free, segment)
            } else {
                free
            };
            let spare = b.recv.spare(pool);
            let asked = want.min(spare.len());
            match (&self.socket).read(&mut spare[..asked]) {
                Ok(0) => {
                    trace!("conn {key}: read 0 bytes (end of input)");
                    self.eof = true;
                    self.readable = false;
                    return (total, false);
                }
                Ok(n) => {
                    b.recv.commit(n);
                    total += n;
                    trace!(
                        "conn {key}: read {n} bytes, recv buffer {}/{}",
                        b.recv.len(),
                        b.recv.capacity()
                    );
                    if n < asked && !self.peer_closing {
                        trace!("conn {key}: short read, socket drained");
                        // A short read emptied the kernel's queue; asking
                        // again would only return WouldBlock.
                        self.readable = false;
                        return (total, true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    trace!(
                        "conn {key}: read would block, recv buffer {}/{}",
                        b.recv.len(),
                        b.recv.capacity()
                    );
                    self.readable = false;
                    return (total, true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(key, "read", &e);
                    return (total, false);
                }
            }
        }
        (total, false)
    }

    /// Writes the send buffer and the shared chunks until both are empty or
    /// the socket would block. Returns the bytes written.
    ///
    /// Order keeps lines whole: a shared chunk already begun is finished
    /// first, then the service's own output, then the next shared chunks.
    /// The service writes whole lines and each chunk holds whole lines, so a
    /// client's output is only ever interleaved at line boundaries.
    ///
    /// `whole_segments` (more bytes are coming in this turn): a bulk send
    /// buffer is written in whole TCP segments, and the runt after them
    /// waits for the bytes behind it. A runt sent on its own is a packet of
    /// its own, which Nagle's algorithm holds until the client's ACK: with
    /// 64 KiB buffers on loopback (65,483-byte segments), every write was a
    /// segment and a 53-byte runt, and a bulk echo ran at half the rate.
    fn flush(&mut self, key: usize, b: &mut Buffers, whole_segments: bool) -> io::Result<usize> {
        let mut total = 0;
        while b.owed() > 0 {
            let written = if b.send.is_empty() || b.shared.is_mid_chunk() {
                b.shared.write_to(&mut &self.socket)
            } else {
                let len = b.send.len();
                let mut take = len;
                if whole_segments && len >= BULK_WRITE {
                    let segment = self.segment();
                    if segment > 0 {
                        take = buffer::whole_segments(len, segment);
                    }
                }
                let written = (&self.socket).write(&b.send.data()[..take]);
                if let Ok(n) = written {
                    b.send.consume(n);
                    if n == take && take < len {
                        total += n;
                        trace!("conn {key}: wrote {n} bytes, {} held back", len - take);
                        break;
                    }
                }
                written
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    total += n;
                    trace!(
                        "conn {key}: wrote {n} bytes, send buffer {}/{}",
                        b.owed(),
                        b.send.capacity()
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    trace!(
                        "conn {key}: write would block, send buffer {}/{}",
                        b.owed(),
                        b.send.capacity()
                    );
                    self.writable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Sends the service's zero-copy region (`--sendfile`), up to `room`
    /// bytes, with `sendfile(2)`; returns the bytes sent. A file that ends
    /// before what was announced, or fails, makes the connection fail: the
    /// transfer cannot complete, so it ends with a reset.
    fn send_zero_copy(&mut self, key: usize, room: usize) -> usize {
        let mut total = 0;
        while total < room {
            let Some((file, left, segment)) = self.service.zero_copy() else {
                break;
            };
            let count = files::file_chunk(
                (room - total).min(usize::try_from(left).unwrap_or(usize::MAX)),
                left,
                segment,
            );
            if total > 0 && count < segment && (count as u64) < left {
                // Only a runt would fit in this turn's budget: it waits for
                // the next turn, which starts with whole segments.
                break;
            }
            match sys::sendfile(&self.socket, file, count) {
                Ok(0) => {
                    warn!(
                        "conn {key} {}: the file ended {left} bytes short of its size; resetting",
                        self.peer()
                    );
                    self.failure.get_or_insert(Failure::Aborted);
                    break;
                }
                Ok(n) => {
                    trace!("conn {key}: sendfile {n} bytes");
                    self.service.zero_copy_sent(n);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    break;
                }
                Err(e) => {
                    // EIO and the like from the file, or a socket error:
                    // either way this transfer cannot complete.
                    self.fail(key, "sendfile", &e);
                    break;
                }
            }
        }
        total
    }

    /// The connection's TCP segment size (MSS), asked only by a bulk
    /// transfer (small messages cost no system call). It changes under way:
    /// on loopback it starts at 47,616 bytes and grows to 65,483 as the
    /// client's window opens in the first few turns, then seldom changes.
    /// So an answer is trusted for 1, 2, 4, ... up to [`SEGMENT_TURNS`]
    /// uses while it stays the same, and for 1 again once it changes. 0 when
    /// the kernel will not say.
    fn segment(&mut self) -> usize {
        if self.segment_turns == 0 {
            let before = self.segment;
            self.segment = socket2::SockRef::from(&self.socket).tcp_mss().unwrap_or(0);
            self.segment_every = if self.segment != before {
                1
            } else {
                self.segment_every.saturating_mul(2).clamp(1, SEGMENT_TURNS)
            };
            self.segment_turns = self.segment_every;
        } else {
            self.segment_turns -= 1;
        }
        self.segment as usize
    }

    /// More bytes are about to join the send buffer in this turn: the socket
    /// has input to read, or a download has more to produce. Then a runt
    /// after the whole segments waits for them (see [`Connection::flush`]).
    fn more_coming(&self, b: &Buffers) -> bool {
        self.wants_read(b) || self.service.is_producing()
    }

    /// Bytes produced for the client and not yet taken by the kernel: the
    /// send buffer plus the shared chunks queued behind it. Both count
    /// against `--send-buf`.
    pub fn owed(&self) -> usize {
        self.io.as_ref().map_or(0, |b| b.owed())
    }

    /// Bytes received and not yet consumed by the service.
    pub fn received(&self) -> usize {
        self.io.as_ref().map_or(0, |b| b.recv.len())
    }

    /// What the shared chunks queued for this connection cost (see
    /// [`SharedQueue::cost`]).
    pub fn shared_cost(&self) -> usize {
        self.io.as_ref().map_or(0, |b| b.shared.cost())
    }

    /// Queues a shared chunk (chat) from byte `from` on; returns what the
    /// shared queue costs now.
    pub fn share(&mut self, pools: &mut Pools, chunk: Chunk, from: usize) -> usize {
        let b = self.io.get_or_insert_with(|| pools.take_buffers());
        b.shared.push_from(chunk, from);
        b.shared.cost()
    }

    /// Drops what the connection holds and gives its buffers back, as it
    /// closes.
    pub fn release(&mut self, pools: &mut Pools) {
        if let Some(mut b) = self.io.take() {
            b.recv.clear();
            b.send.clear();
            b.shared.clear();
            pools.give_buffers(b);
        }
    }

    /// Ends a chat receiver that cannot keep up: what is queued for it is
    /// dropped, except the rest of a line already begun, so its output is
    /// cut at a line boundary; then `line` (the farewell) and the server's
    /// close. True if the phase changed.
    pub fn dismiss(&mut self, line: &[u8], pools: &mut Pools, reason: CloseReason) -> bool {
        let b = self.io.get_or_insert_with(|| pools.take_buffers());
        b.shared.keep_current_line();
        b.send.clear();
        b.send.append(&mut pools.send, line);
        self.finish(reason)
    }

    /// The one place socket errors become a failure: a reset or any other
    /// error ends this connection (with a reset), logged at debug.
    fn fail(&mut self, key: usize, what: &str, error: &io::Error) {
        debug!("conn {key} {}: {what} failed: {error}", self.peer());
        self.failure.get_or_insert(Failure::Socket(error.kind()));
    }
}

#[cfg(test)]
mod tests {
    /// Every open connection holds one of these in the table, idle or not,
    /// so it is kept small: the buffers are boxed and held only while bytes
    /// are in them, instants take 8 bytes, an IPv6 peer is boxed, and a
    /// service state that grows past its share goes behind a box (see
    /// `Service`). The target is 128 bytes of memory per idle
    /// connection; a test build's socket carries 8 bytes more than a
    /// release build's (mio's selector check).
    #[test]
    fn a_connection_slot_stays_small() {
        let size = std::mem::size_of::<super::Connection>();
        assert!(size <= 128, "Connection is {size} bytes");
        assert!(std::mem::size_of::<crate::service::Service>() <= 24);
        assert!(std::mem::size_of::<super::Buffers>() <= 128);
    }

    /// A chat connection on a real loopback socket, with the client end.
    fn chat_pair() -> (super::Connection, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("bound")).expect("connect");
        let (accepted, peer) = listener.accept().expect("accept");
        accepted.set_nonblocking(true).expect("nonblocking");
        let socket = mio::net::TcpStream::from_std(accepted);
        let now = std::time::Instant::now();
        let conn = super::Connection::new(socket, peer, super::ServiceKind::Chat, 0, now);
        (conn, client)
    }

    /// One turn of `conn` with `room` bytes of broadcast room; the effects
    /// it asked for.
    fn chat_turn(
        conn: &mut super::Connection,
        pools: &mut super::Pools,
        room: usize,
    ) -> Vec<super::Effect> {
        let config = crate::service::testing::config();
        let mut effects = Vec::new();
        let mut ctx = super::TurnContext {
            pools,
            config: &config,
            now: std::time::Instant::now(),
            effects: &mut effects,
            broadcast_room: room,
            budget: super::TURN_BUDGET,
        };
        conn.readable = true;
        conn.writable = true;
        conn.turn(0, &mut ctx);
        effects
    }

    #[test]
    fn regression_a_finishing_chat_member_drops_the_lines_waiting_for_room() {
        // The server ended the conversation (idle timeout, dismissal) while
        // the sender's complete lines waited for broadcast room: the turn
        // took them for an unfinished message and closed without them.
        use std::io::Write;
        let (mut conn, mut client) = chat_pair();
        let mut pools = super::Pools::new(4096, 4096);
        let said = b"one\ntwo\nthree\n";
        client.write_all(said).expect("send");
        // Loopback hands the bytes over at once; a few turns at most.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while conn.received() < said.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "the lines never arrived"
            );
            let effects = chat_turn(&mut conn, &mut pools, 0);
            assert!(
                !effects
                    .iter()
                    .any(|e| matches!(e, super::Effect::Broadcast(_)))
            );
        }
        assert!(conn.finish(super::CloseReason::Idle));
        let effects = chat_turn(&mut conn, &mut pools, 0);
        assert_eq!(effects, vec![super::Effect::WaitForRoom]);
        assert_eq!(conn.phase(), super::Phase::Finishing, "waits for room");
        assert_eq!(conn.received(), said.len(), "nothing dropped");
        // Room again: every line goes out, then the server's close.
        let effects = chat_turn(&mut conn, &mut pools, 1 << 20);
        let sent: Vec<u8> = effects
            .iter()
            .flat_map(|e| match e {
                super::Effect::Broadcast(chunk) => chunk.to_vec(),
                other => panic!("{other:?}"),
            })
            .collect();
        let peer = conn.peer();
        assert_eq!(
            sent,
            format!("[{peer}] one\n[{peer}] two\n[{peer}] three\n").into_bytes()
        );
        assert_eq!(conn.phase(), super::Phase::Closing { discard: false });
    }

    #[test]
    fn a_stamp_gives_back_its_instant() {
        // The epoch is set before `now` is taken, so `now` is not before it.
        super::Stamp::of(std::time::Instant::now());
        let now = std::time::Instant::now();
        let stamp = super::Stamp::of(now);
        assert_eq!(stamp.instant(), now);
        let later = now + std::time::Duration::from_secs(86_400 * 365);
        assert_eq!(super::Stamp::of(later).instant(), later);
        assert!(super::Stamp::of(later) > stamp);
        assert_eq!(std::mem::size_of::<Option<super::Stamp>>(), 8);
    }
}
