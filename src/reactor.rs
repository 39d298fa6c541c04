//! The poll loop: one thread, one `mio::Poll`, every listener and connection
//! registered on it.
//!
//! The loop names no service: a listener carries its [`Policy`] (is it a
//! room's, is it operators'), picked once from its service, and the work
//! between connections (the chat room, the admin views) is the [`Hub`]'s,
//! whose commands the reactor carries out. Here: the loop, tokens, signals,
//! the ready queue and each connection's turn; in `accept.rs` accepting,
//! admission and refusals; in `deadlines.rs` every deadline, the ends of
//! conversations and the shutdown; in `hub_io.rs` the hub's commands and the
//! read-only view of the server its admin views read.
//!
//! Tokens: a connection's token is its key in the connection slab, tagged in
//! the high bits with the generation of the accept that made it, so an event
//! left over for a closed connection never reaches a new one that reuses its
//! key; listener tokens count down from the top of the token space, and the
//! signal pipe has the next one down, so none of them meet. This module is
//! the only one that registers and closes sockets (closing a socket takes it
//! out of the epoll set). Connections are registered once
//! for both readable and writable events (edge-triggered): what a connection
//! does with an event depends on its own state, so pausing and resuming cost
//! no system call.
//!
//! Fairness: a connection whose turn used up its byte budget with work left
//! goes on the ready queue, which is served after the next poll (polled with a
//! zero timeout while the queue is not empty). No new edge would come for it,
//! so without the queue it would stall. A pass serves the queue only until
//! its turns have moved [`PASS_SLICE`] bytes, then polls again: fresh events
//! (a small request) go before the rest of the bulk work.
//!
//! Time: deadlines (idle, request, admin idle, the deadline of every phase
//! after `Open`, refused admin clients, accept back-off, shutdown) are kept
//! in O(1) structures and the poll timeout is the nearest of them; no event
//! scans all connections. The one periodic check is of the connections the
//! server closed and whose last bytes the client has not yet acknowledged
//! (every 20 ms, only those), since no event says a kernel send queue has
//! drained.
//!
//! # Deadlines
//!
//! Every wait has one, each in a [`DeadlineList`] (one timeout per list, so
//! touch order is expiry order):
//!
//! | waiting for | deadline (default) | then |
//! |---|---|---|
//! | a request to arrive whole (files; admin's HTTP head) | `--request-timeout` (10 s) from when the service starts waiting; activity does not put it off | the service answers (`ERR request timeout`, nothing for a bare name, `408`) and the server finishes the conversation (`timeout`) |
//! | anything, on an admin connection not in `watch` | `--admin-idle-timeout` (60 s) after its last byte | idle close (`idle`) |
//! | room, at `--max-conns` | a newcomer arrives and the idlest open connection (admin aside) has been idle `--evict-idle-after` (60 s) | it is ended as an idle close (`evicted`) and its slot goes to the newcomer at once; otherwise the newcomer gets `ERR server full` |
//! | a refused admin client's first bytes | [`REFUSAL_WAIT`] (1 s) | answered in its protocol: `503` with `Retry-After`, or the `ERR` line |
//! | a peer that vanished without a FIN | `--keepalive` (300 s, then 4 probes 15 s apart), kept by the kernel | the kernel resets it; the next read says so (`error`) |
//! | the peer, after either side ended the conversation | [`LINGER`] (5 s), pushed back while bytes leave | reset if bytes are owed, else closed |
//! | any byte, on any connection | `--idle-timeout` (never) | idle close (`idle`) |
//!
//! A service says whether it awaits a request
//! ([`Connection::awaiting_request`]); the reactor starts and stops the
//! request deadline from that after every turn and names no protocol for it.
//!
//! Accepting: at most [`MAX_ACCEPTS_PER_TURN`] per listener per turn. Out
//! of descriptors (EMFILE/ENFILE), a newcomer is still accepted on a spare
//! descriptor kept for that moment and refused with `ERR server full`,
//! never left in the backlog; other accept failures pause accepting for
//! [`ACCEPT_BACKOFF`]. TCP keepalive is set on the listeners (the kernel
//! copies it to every accepted socket).
//!
//! Closing (see [`crate::connection`] for the phases): the server ends a
//! conversation with [`Connection::finish`] (signal, idle timeout, a room
//! member too slow), never by dropping what it read. A connection whose
//! phase deadline passes with bytes still owed is reset, not closed cleanly.
//! Closes requested while keys are being walked (a leave announced to a
//! member found too slow) look every key up again, never index blindly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

mod accept;
mod deadlines;
mod hub_io;

pub use accept::{ACCEPT_BACKOFF, MAX_ACCEPTS_PER_TURN, REFUSAL_WAIT};

use accept::{Refused, SPARE, open_spare};
use hub_io::View;

use crate::config::ServerConfig;
use crate::connection::{self, Connection, Pools, TurnContext, Verdict};
use crate::hub::{Hub, Policy};
use crate::limits::{self, Admission};
use crate::observe::stats::{CloseReason, Stats};
use crate::service::{Effect, ServiceKind};
use crate::sys;
use crate::timer::DeadlineList;

/// Listener `i` has token `usize::MAX - i`.
const LISTENER_TOKEN_TOP: usize = usize::MAX;

/// Most listeners one server opens; keeps listener tokens clear of the rest.
pub const MAX_LISTENERS: usize = 64;

/// The signal pipes' tokens, just below the listeners': `SIGNAL_TOKEN - i`
/// for the `i`-th of [`STOP_SIGNALS`].
const SIGNAL_TOKEN: usize = LISTENER_TOKEN_TOP - MAX_LISTENERS;

/// The signals that stop the server: the first starts a graceful shutdown,
/// a second one exits at once.
const STOP_SIGNALS: [(libc::c_int, &str); 2] =
    [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")];

/// Refused admin clients' tokens, just below the signal pipes':
/// `REFUSED_TOKEN - i` for key `i` of [`Server::refused`] (fewer than
/// [`limits::OPERATOR_REFUSALS`]).
const REFUSED_TOKEN: usize = SIGNAL_TOKEN - STOP_SIGNALS.len();

/// The deadline of every phase after `Open`: how long a connection may go
/// without sending a byte while it finishes or drains what it owes, and how
/// long one whose side we shut may wait for the client to close its side.
/// Long enough for the last bytes in flight on any sane link; short enough
/// that a client that never reads or never closes does not hold a slot.
pub const LINGER: Duration = Duration::from_secs(5);

/// Bits of a connection token that hold the slab key; the generation sits
/// above them, and the top bit stays clear (listener and signal tokens).
const KEY_BITS: u32 = 32;
const KEY_MASK: usize = (1 << KEY_BITS) - 1;
const GENERATION_MASK: u32 = (1 << 31) - 1;

// The token layout needs 64-bit tokens.
const _: () = assert!(usize::BITS == 64, "tcp-reactor needs a 64-bit target");

/// The poll token of connection `key` of generation `generation`.
fn conn_token(key: usize, generation: u32) -> Token {
    Token(key | ((generation & GENERATION_MASK) as usize) << KEY_BITS)
}

/// Bytes the queued (carried-over) connections may move in one pass before
/// the loop polls again: the poll's fresh events, a small request among
/// them, are served before the rest of the queue. About 100 µs of copying
/// here; the extra poll costs about a microsecond. Measured with 8 bulk and
/// 50 small echo clients: the small ones' p50 went from 0.68-0.74 ms (no
/// slice) to 0.27-0.32 ms (512 KiB: 0.27-0.58), the bulk from 1.12-1.15 to
/// 1.06-1.08 GB/s.
pub const PASS_SLICE: usize = 256 * 1024;

/// Events fetched per poll.
const EVENTS_CAPACITY: usize = 1024;

struct Listener {
    socket: TcpListener,
    addr: SocketAddr,
    kind: ServiceKind,
    /// What its connections are to the server beyond their service.
    policy: Policy,
}

/// Loop-wide counters for `metrics`.
#[derive(Debug, Default)]
struct LoopCounters {
    iterations: u64,
    events: u64,
    pauses: u64,
    slow_consumers: u64,
}

/// How `run` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// A signal asked for a stop and everything owed was flushed (or the
    /// shutdown timeout passed).
    Graceful,
    /// A second signal came during the shutdown.
    Forced,
}

/// A bound, ready-to-run server.
pub struct Server {
    poll: Poll,
    /// Empty once shutdown has begun.
    listeners: Vec<Listener>,
    conns: Slab<Connection>,
    pools: Pools,
    /// Connections to drive again without waiting for an event.
    ready: VecDeque<usize>,
    /// Listeners that stopped at [`MAX_ACCEPTS_PER_TURN`] with clients left
    /// in their backlog: no new edge will come for those, so they are
    /// accepted from again next turn.
    accept_again: Vec<usize>,
    /// Every connection past `Open`, by its phase deadline: touched when it
    /// enters a phase, and while finishing or draining whenever it sends a
    /// byte (a slow reader that keeps reading is not cut off).
    phase_deadlines: DeadlineList,
    /// Connections the server closed that wait in `Closing` for the client
    /// to acknowledge the last byte: checked every [`DRAIN_CHECK`].
    awaiting_ack: HashSet<usize>,
    /// Tags the next accepted connection's token.
    next_generation: u32,
    /// Every open connection in order of its last activity, the longest
    /// idle first (a list with no timeout: see [`crate::timer`]). Its head
    /// is what `--idle-timeout` ends, and, admin aside, what eviction at
    /// `--max-conns` ends. `None` when neither applies.
    activity: Option<DeadlineList>,
    /// Open connections whose service awaits a request, by when it must
    /// have arrived whole (`--request-timeout`): touched once when the wait
    /// starts and never by activity, so a request trickled a byte at a time
    /// (slow loris) times out all the same.
    requests: Option<DeadlineList>,
    /// Open admin connections not in `watch`, by when they have been idle
    /// too long (`--admin-idle-timeout`), so forgotten ones cannot hold the
    /// admin reserve.
    operator_idle: Option<DeadlineList>,
    /// Connections evicted at `--max-conns` whose admission slot went to the
    /// newcomer at once: not to be given back again when they close.
    evicted: HashSet<usize>,
    /// Refused admin clients awaiting their first bytes or their close (at
    /// most [`limits::OPERATOR_REFUSALS`]).
    refused: Slab<Refused>,
    /// Their deadlines, [`REFUSAL_WAIT`] after each step.
    refused_deadlines: DeadlineList,
    admission: Admission,
    /// The work between connections (see [`crate::hub`]).
    hub: Hub,
    /// Connections whose service asked to be called at a time (a `watch`
    /// snapshot due), earliest first, with the generation they were asked
    /// for (a key reused since is not woken).
    wakeups: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    counters: LoopCounters,
    /// Each connection's byte budget in this turn of the loop
    /// ([`connection::turn_budget`] of how many are ready).
    turn_budget: usize,
    /// Bytes the turns of the queued connections moved in this pass.
    pass_bytes: usize,
    /// What the services asked for in the current turn; empty between turns.
    effects: Vec<Effect>,
    /// Accepting is paused until then (out of memory, or out of
    /// descriptors with no spare to refuse with).
    accept_paused_until: Option<Instant>,
    /// A descriptor held for nothing but to be given up when the process
    /// runs out (EMFILE/ENFILE): closing it lets one newcomer be accepted
    /// and told `ERR server full`, instead of waiting in the backlog for a
    /// slot that may never come (libuv's `uv__emfile_trick`; nginx and
    /// HAProxy keep one too). Taken back at once after each refusal; `None`
    /// only if that failed (another process took the system's last file).
    spare: Option<std::fs::File>,
    last_accept_warning: Option<Instant>,
    /// One self-pipe per stop signal: its handler writes one byte per
    /// delivery, so every signal is counted, even two that arrive before
    /// the loop reads the pipe (a flag per signal would merge them).
    signals: Vec<(&'static str, mio::net::UnixStream)>,
    /// Set once a signal asked for a stop: when to give up flushing.
    shutdown_deadline: Option<Instant>,
    /// When to next look at `awaiting_ack`; set while it is not empty.
    next_drain_check: Option<Instant>,
    config: ServerConfig,
    stats: Stats,
    started: Instant,
}

impl Server {
    /// Binds every listener in `config` and registers it. Errors are one
    /// line naming the address that failed. [`Server::run`] logs each bound
    /// address as `listening on ADDR (SERVICE)` when it starts.
    pub fn bind(config: ServerConfig) -> Result<Server, String> {
        if config.listeners.is_empty() || config.listeners.len() > MAX_LISTENERS {
            return Err(format!(
                "between 1 and {MAX_LISTENERS} listeners are needed"
            ));
        }
        let poll = Poll::new().map_err(|e| format!("cannot create the poller: {e}"))?;
        let mut listeners = Vec::new();
        for (i, spec) in config.listeners.iter().enumerate() {
            let fail =
                |e: io::Error| format!("cannot listen on {} ({}): {e}", spec.addr, spec.service);
            let mut socket = sys::listener(
                spec.addr,
                config.reuse_port,
                config.so_rcvbuf,
                config.so_sndbuf,
                config.sockets.backlog,
            )
            .map_err(fail)?;
            if let Some(idle) = config.keepalive {
                sys::keepalive(&socket, idle).map_err(fail)?;
            }
            if let Some(algorithm) = &config.sockets.congestion {
                sys::congestion(&socket, algorithm).map_err(|e| {
                    fail(io::Error::other(format!("--congestion {algorithm}: {e}")))
                })?;
            }
            if let Some(bytes) = config.sockets.notsent_lowat {
                sys::notsent_lowat(&socket, bytes)
                    .map_err(|e| fail(io::Error::other(format!("--notsent-lowat {bytes}: {e}"))))?;
            }
            let addr = socket.local_addr().map_err(fail)?;
            poll.registry()
                .register(
                    &mut socket,
                    Token(LISTENER_TOKEN_TOP - i),
                    Interest::READABLE,
                )
                .map_err(fail)?;
            listeners.push(Listener {
                socket,
                addr,
                kind: spec.service,
                policy: Policy::of(spec.service),
            });
        }
        Ok(Server {
            poll,
            listeners,
            conns: Slab::new(),
            pools: Pools::new(config.recv_buf, config.send_buf),
            ready: VecDeque::new(),
            accept_again: Vec::new(),
            phase_deadlines: DeadlineList::new(LINGER),
            awaiting_ack: HashSet::new(),
            next_generation: 0,
            activity: (config.idle_timeout.is_some()
                || (config.max_conns.is_some() && config.evict_idle_after.is_some()))
            .then(|| DeadlineList::new(Duration::ZERO)),
            requests: config.request_timeout.map(DeadlineList::new),
            operator_idle: config.operator_idle_timeout.map(DeadlineList::new),
            evicted: HashSet::new(),
            refused: Slab::with_capacity(limits::OPERATOR_REFUSALS),
            refused_deadlines: DeadlineList::new(REFUSAL_WAIT),
            admission: Admission::new(config.max_conns, config.max_conns_per_ip),
            hub: Hub::new(&config),
            wakeups: BinaryHeap::new(),
            counters: LoopCounters::default(),
            turn_budget: connection::TURN_BUDGET,
            pass_bytes: 0,
            effects: Vec::new(),
            accept_paused_until: None,
            spare: Some(open_spare().map_err(|e| format!("cannot open {SPARE}: {e}"))?),
            last_accept_warning: None,
            signals: Vec::new(),
            shutdown_deadline: None,
            next_drain_check: None,
            config,
            stats: Stats::default(),
            started: Instant::now(),
        })
    }

    /// Every bound listener's address and service (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<(SocketAddr, ServiceKind)> {
        self.listeners.iter().map(|l| (l.addr, l.kind)).collect()
    }

    /// Makes SIGINT and SIGTERM start a graceful shutdown (and a second one
    /// end the process at once), delivered through the poll loop.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        for (i, (signal, name)) in STOP_SIGNALS.into_iter().enumerate() {
            let (read, write) = std::os::unix::net::UnixStream::pair()?;
            read.set_nonblocking(true)?;
            signal_hook::low_level::pipe::register(signal, write)?;
            let mut read = mio::net::UnixStream::from_std(read);
            self.poll.registry().register(
                &mut read,
                Token(SIGNAL_TOKEN - i),
                Interest::READABLE,
            )?;
            self.signals.push((name, read));
        }
        Ok(())
    }

    /// Serves until a signal stops it, or an unrecoverable poll error. Logs
    /// every bound address first.
    pub fn run(&mut self) -> io::Result<Exit> {
        // Logged only now, after `handle_signals`: a script that reads the
        // port from this line and signals at once must find the handlers
        // in place.
        for listener in &self.listeners {
            info!("listening on {} ({})", listener.addr, listener.kind);
        }
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            crate::logsink::flush();
            let timeout = if self.ready.is_empty() && self.accept_again.is_empty() {
                self.next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            // Log lines waiting for a stalled reader are retried soon.
            let timeout = match timeout {
                _ if !crate::logsink::pending() => timeout,
                Some(t) => Some(t.min(crate::logsink::RETRY)),
                None => Some(crate::logsink::RETRY),
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            self.hub.handle_turn();
            self.counters.iterations += 1;
            // Every connection with an event or queued shares this turn.
            self.turn_budget = connection::turn_budget(events.iter().count() + self.ready.len());
            for event in events.iter() {
                self.counters.events += 1;
                let token = event.token().0;
                if token > SIGNAL_TOKEN {
                    self.accept(LISTENER_TOKEN_TOP - token, now);
                    continue;
                }
                if token > SIGNAL_TOKEN - STOP_SIGNALS.len() {
                    let signals = self.take_signals();
                    // Two signals are a forced stop even when both arrived
                    // before this drain of the pipe.
                    let before = u32::from(self.shutdown_deadline.is_some());
                    if before + signals >= 2 {
                        warn!("second signal: exiting now");
                        info!("{}", self.stats.summary());
                        return Ok(Exit::Forced);
                    }
                    if signals > 0 {
                        self.begin_shutdown(now);
                    }
                    continue;
                }
                if token > REFUSED_TOKEN - limits::OPERATOR_REFUSALS {
                    self.serve_refused(REFUSED_TOKEN - token, now, false);
                    continue;
                }
                let key = token & KEY_MASK;
                let Some(conn) = self
                    .conns
                    .get_mut(key)
                    .filter(|c| conn_token(key, c.generation).0 == token)
                else {
                    // Left over for a connection closed earlier in this pass.
                    continue;
                };
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    conn.readable = true;
                }
                if event.is_read_closed() {
                    conn.peer_closing = true;
                }
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    conn.writable = true;
                }
                self.drive(key, now);
            }
            self.expire(now);
            for index in std::mem::take(&mut self.accept_again) {
                self.accept(index, now);
            }
            // Only the connections queued before this pass: one that is
            // queued again waits for the next poll, behind the others. And
            // only until they have moved PASS_SLICE bytes: the rest wait, at
            // the head of the queue, for one more poll, so a small request
            // that arrived meanwhile waits behind a slice of the bulk work,
            // not behind all of it.
            self.pass_bytes = 0;
            for _ in 0..self.ready.len() {
                if self.pass_bytes >= PASS_SLICE {
                    break;
                }
                let Some(key) = self.ready.pop_front() else {
                    break;
                };
                if let Some(conn) = self.conns.get_mut(key)
                    && conn.queued
                {
                    conn.queued = false;
                    self.drive(key, now);
                }
            }
            self.hub.handle_pass_end(now);
            self.run_hub(now);
            if self.next_drain_check.is_some_and(|t| t <= now) {
                self.close_acknowledged(now);
            }
            if let Some(deadline) = self.shutdown_deadline
                && self.shutdown_done(now, deadline)
            {
                info!("{}", self.stats.summary());
                return Ok(Exit::Graceful);
            }
        }
    }

    /// Drains the signal pipes; how many stop signals arrived.
    fn take_signals(&mut self) -> u32 {
        let mut count = 0;
        let mut bytes = [0u8; 64];
        for (name, pipe) in &mut self.signals {
            loop {
                match pipe.read(&mut bytes) {
                    Ok(0) => break,
                    Ok(n) => {
                        for _ in 0..n {
                            info!("received {name}");
                        }
                        count += n as u32;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // WouldBlock: drained.
                    Err(_) => break,
                }
            }
        }
        count
    }

    /// Gives connection `key` a turn and applies its verdict.
    fn drive(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        // The list is the server's, reused, so a turn with effects (every
        // line shared with a room) allocates nothing for them.
        let mut effects = std::mem::take(&mut self.effects);
        let mut ctx = TurnContext {
            pools: &mut self.pools,
            config: &self.config.service,
            now,
            effects: &mut effects,
            broadcast_room: self.hub.broadcast_room(),
            budget: self.turn_budget,
        };
        let report = conn.turn(key, &mut ctx);
        self.pass_bytes += report.bytes_in + report.bytes_out + report.discarded;
        let counters = self.stats.service(conn.kind);
        counters.bytes_in += report.bytes_in as u64;
        counters.bytes_out += report.bytes_out as u64;
        let phase = conn.phase();
        // Discarded input is not activity: only bytes the service took or
        // sent keep a connection from being idle.
        let moved = report.bytes_in + report.bytes_out > 0;
        let (awaiting, watching) = (conn.awaiting_request(), conn.is_watching());
        let next = report.next;
        if report.paused {
            self.counters.pauses += 1;
        }
        if let Some(at) = report.wake_at
            && conn.wake_at() != Some(at)
        {
            conn.set_wake_at(Some(at));
            self.wakeups.push(Reverse((at, key, conn.generation)));
        } else if report.wake_at.is_none() && conn.wake_at().is_some_and(|t| t <= now) {
            // The wake-up was served (a due one always gets its call) and
            // none was asked again (the watch ended): stop calling.
            conn.set_wake_at(None);
        }
        let (kind, queued_cost) = (conn.kind, conn.shared_cost());
        if phase.is_open() {
            self.track_open(key, kind, moved, awaiting, watching, now);
        }
        self.track_phase(key, phase, report.phase_changed, report.bytes_out > 0, now);
        if Policy::of(kind).room {
            // Judged now that the turn has tried to write to it.
            self.hub
                .handle_sent(key, queued_cost, report.bytes_out, now);
            self.run_hub(now);
        }
        for effect in effects.drain(..) {
            let view = View {
                conns: &self.conns,
                pools: &self.pools,
                stats: &self.stats,
                config: &self.config,
                counters: &self.counters,
                started: self.started,
            };
            self.hub.handle_effect(key, effect, &view, now);
            self.run_hub(now);
        }
        self.effects = effects;
        if !self.conns.contains(key) {
            return;
        }
        match next {
            Verdict::Wait => {}
            Verdict::Requeue => self.queue(key),
            Verdict::Close(reason) => self.close(key, reason, false, now),
            Verdict::Reset(reason) => self.close(key, reason, true, now),
        }
    }

    /// Closes connection `key` (with a reset when `reset`); the hub hears
    /// of it (a room member's leave is announced with the next batch).
    fn close(&mut self, key: usize, reason: CloseReason, reset: bool, now: Instant) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        self.phase_deadlines.remove(key);
        self.awaiting_ack.remove(&key);
        self.forget_open_deadlines(key);
        if !self.evicted.remove(&key) {
            self.release_admission(conn.kind, conn.peer());
        }
        // No `deregister`: closing the socket's only descriptor (accepted
        // with SOCK_CLOEXEC, never duplicated) takes it out of the epoll set,
        // which saves an epoll_ctl per connection. An event already drained
        // for it is dropped by its token's generation.
        if reset && let Err(e) = sys::reset_on_close(&conn.socket) {
            debug!("conn {key}: cannot set SO_LINGER 0: {e}");
        }
        conn.release(&mut self.pools);
        self.stats.closed(conn.kind, reason);
        debug!(
            "conn {key} {} ({}): {} ({reason}), {} bytes in, {} bytes out, open {:?}",
            conn.peer(),
            conn.kind,
            if reset { "reset" } else { "closed" },
            conn.bytes_in,
            conn.bytes_out,
            conn.opened().elapsed()
        );
        if Policy::of(conn.kind).room {
            self.hub.handle_close(key, conn.peer());
            self.run_hub(now);
        }
    }
}
