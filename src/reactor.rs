//! The poll loop: one thread, one `mio::Poll`, every listener and connection
//! registered on it.
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
//! conversation with [`Connection::finish`] (signal, idle timeout, a chat
//! receiver too slow), never by dropping what it read. A connection whose
//! phase deadline passes with bytes still owed is reset, not closed cleanly.
//! Closes requested while keys are being walked (a chat leave announced to a
//! receiver found too slow) look every key up again, never index blindly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::config::ServerConfig;
use crate::connection::{self, Connection, Phase, Pools, TurnContext, Verdict};
use crate::hub::{self, Command, Hub, Policy, ServerView};
use crate::limits::{self, Admission};
use crate::observe::clients::ClientRow;
use crate::observe::stats::{CloseReason, RefuseReason, ServiceStats, Stats};
use crate::observe::{metrics, tcp};
use crate::service::{Effect, ServiceKind};
use crate::sys;
use crate::timer::{DeadlineList, earliest};

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
/// [`limits::ADMIN_REFUSALS`]).
const REFUSED_TOKEN: usize = SIGNAL_TOKEN - STOP_SIGNALS.len();

/// How long a refused admin client may take to send its first bytes, which
/// say whether it speaks HTTP (a `503`) or text (the `ERR` line); and then
/// how long it may take to close after the answer. An HTTP client sends its
/// request with its first packet; one second is many round trips, and a
/// client that sends nothing gets the `ERR` line then.
pub const REFUSAL_WAIT: Duration = Duration::from_secs(1);

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

/// How long accepting pauses after the process or system ran out of file
/// descriptors or memory: long enough not to spin on a failing `accept`,
/// short enough to take new clients soon after others leave.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How often connections the server closed are checked for an empty kernel
/// send queue (there is no event for it).
const DRAIN_CHECK: Duration = Duration::from_millis(20);

/// Connections one listener accepts in one turn at most (Redis takes 1,000
/// per call too). A burst of thousands of connects would otherwise hold up
/// every open connection while they are all accepted and greeted; the rest
/// wait in the backlog for the next turn.
pub const MAX_ACCEPTS_PER_TURN: usize = 1000;

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

/// An admin client refused because the reserve is full, held (outside the
/// connection table, with a descriptor of its own) until its first bytes
/// say which protocol to refuse it in, and then until it closes, for at
/// most [`REFUSAL_WAIT`] each.
struct Refused {
    socket: TcpStream,
    peer: SocketAddr,
    /// The first bytes, up to [`FIRST_BYTES`]: enough to tell an HTTP
    /// method ([`hub::refusal_ready`]).
    first: Vec<u8>,
    /// The answer was written and our side shut: input is read and dropped
    /// until the client closes, so the close does not reset the answer.
    answered: bool,
}

/// The longest HTTP method and its space: what deciding the protocol of a
/// refused admin client takes.
const FIRST_BYTES: usize = 8;

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
    admin_idle: Option<DeadlineList>,
    /// Connections evicted at `--max-conns` whose admission slot went to the
    /// newcomer at once: not to be given back again when they close.
    evicted: HashSet<usize>,
    /// Refused admin clients awaiting their first bytes or their close (at
    /// most [`limits::ADMIN_REFUSALS`]).
    refused: Slab<Refused>,
    /// Their deadlines, [`REFUSAL_WAIT`] after each step.
    refused_deadlines: DeadlineList,
    admission: Admission,
    /// The work between connections: the chat room, the admin views.
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
            )
            .map_err(fail)?;
            if let Some(idle) = config.keepalive {
                sys::keepalive(&socket, idle).map_err(fail)?;
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
            admin_idle: config.admin_idle_timeout.map(DeadlineList::new),
            evicted: HashSet::new(),
            refused: Slab::with_capacity(limits::ADMIN_REFUSALS),
            refused_deadlines: DeadlineList::new(REFUSAL_WAIT),
            admission: Admission::new(config.max_conns, config.max_conns_per_ip),
            hub: Hub::new(config.chat),
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
                if token > REFUSED_TOKEN - limits::ADMIN_REFUSALS {
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

    fn next_deadline(&self) -> Option<Instant> {
        earliest([
            self.wakeups.peek().map(|Reverse((at, _, _))| *at),
            self.phase_deadlines.next_deadline(),
            self.hub.poll_timeout(),
            self.shutdown_deadline,
            self.idle_deadline(),
            self.requests.as_ref().and_then(|l| l.next_deadline()),
            self.admin_idle.as_ref().and_then(|l| l.next_deadline()),
            self.refused_deadlines.next_deadline(),
            self.accept_paused_until,
            self.next_drain_check,
        ])
    }

    /// When the connection idle the longest reaches `--idle-timeout`.
    fn idle_deadline(&self) -> Option<Instant> {
        let timeout = self.config.idle_timeout?;
        let last = self.activity.as_ref()?.next_deadline()?;
        Some(last + timeout)
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

    /// Accepts the pending connections on listener `index`, at most
    /// [`MAX_ACCEPTS_PER_TURN`] (then it is queued to go on next turn),
    /// unless accepting is paused.
    fn accept(&mut self, index: usize, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.socket.accept() {
                Ok((socket, peer)) => {
                    let (kind, policy) = (listener.kind, listener.policy);
                    self.admit(socket, peer, kind, policy, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // The client gave up between its SYN and our accept, or a
                // signal interrupted us: nothing to do for that one.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    let e = if out_of_descriptors(&e) && self.spare.is_some() {
                        match self.refuse_with_spare(index, now) {
                            Ok(true) => continue,
                            // The backlog is empty.
                            Ok(false) => return,
                            Err(again) => again,
                        }
                    } else {
                        e
                    };
                    self.pause_accepting(index, &e, now);
                    return;
                }
            }
        }
        if !self.accept_again.contains(&index) {
            self.accept_again.push(index);
        }
    }

    /// Out of descriptors: gives up the spare, accepts one newcomer on
    /// listener `index`, tells it `ERR server full` and closes it, then
    /// takes the spare back. `Ok(false)` when nobody was waiting; an error
    /// when the accept failed even so, or the spare could not be taken back
    /// (accepting then pauses, as for any other failure).
    fn refuse_with_spare(&mut self, index: usize, now: Instant) -> io::Result<bool> {
        let Some(listener) = self.listeners.get(index) else {
            return Ok(false);
        };
        let (kind, addr) = (listener.kind, listener.addr);
        // Closed here: its number is the one the accept below gets.
        self.spare = None;
        let accepted = listener.socket.accept();
        let refused = match accepted {
            Ok((mut socket, peer)) => {
                self.stats.refused(kind, RefuseReason::Full);
                debug!("{peer} ({kind}): refused: out of descriptors");
                refuse(&mut socket, &limits::Refusal::Full.to_string());
                // Dropped here, before the spare is reopened.
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            // Gone before the accept: nobody to tell.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(true)
            }
            Err(e) => Err(e),
        };
        self.spare = open_spare().ok();
        if refused.as_ref().is_ok_and(|&r| r)
            && self
                .last_accept_warning
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_accept_warning = Some(now);
            warn!(
                "out of descriptors: refusing newcomers on {addr} with 'ERR server full' ({} connections open)",
                self.conns.len()
            );
        }
        if self.spare.is_none() {
            return Err(io::Error::other(format!(
                "out of descriptors, and {SPARE} cannot be reopened as the spare"
            )));
        }
        refused
    }

    /// After accepting on listener `index` failed with `e` (out of memory,
    /// out of descriptors without a spare, or anything unexpected):
    /// retrying at once would spin, so accepting pauses for
    /// [`ACCEPT_BACKOFF`]; the connections already open go on. Clients left
    /// in the backlog raise no new edge, so the back-off's end accepts by
    /// itself (see `expire`).
    fn pause_accepting(&mut self, index: usize, e: &io::Error, now: Instant) {
        self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
        if self
            .last_accept_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_accept_warning = Some(now);
            let addr = self.listeners.get(index).map(|l| l.addr);
            warn!(
                "accept on {} failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?} ({} connections open)",
                addr.map_or("?".to_string(), |a| a.to_string()),
                self.conns.len()
            );
        }
    }

    fn admit(
        &mut self,
        mut socket: TcpStream,
        peer: SocketAddr,
        kind: ServiceKind,
        policy: Policy,
        now: Instant,
    ) {
        let mut admitted = if policy.operator {
            self.admission.admit_admin()
        } else {
            self.admission.admit(peer.ip())
        };
        if admitted == Err(limits::Refusal::Full) && self.evict_idlest(peer.ip(), now) {
            admitted = self.admission.admit(peer.ip());
        }
        if let Err(refusal) = admitted {
            let reason = match refusal {
                limits::Refusal::Full | limits::Refusal::AdminFull => RefuseReason::Full,
                limits::Refusal::PerIp(_) => RefuseReason::PerIp,
            };
            self.stats.refused(kind, reason);
            warn!("{peer} ({kind}): refused: {refusal}");
            if refusal == limits::Refusal::AdminFull {
                self.refuse_admin(socket, peer, now);
            } else {
                refuse(&mut socket, &refusal.to_string());
            }
            return;
        }
        if self.config.nodelay
            && let Err(e) = socket.set_nodelay(true)
        {
            debug!("{peer}: cannot set TCP_NODELAY: {e}");
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1) & GENERATION_MASK;
        let registered = if key > KEY_MASK.min(crate::timer::MAX_KEY) {
            // Unreachable in practice (it needs 2^32 open connections), but
            // a token collision would be silent, so refuse loudly instead.
            Err(io::Error::other("connection table full"))
        } else {
            self.poll.registry().register(
                &mut socket,
                conn_token(key, generation),
                Interest::READABLE | Interest::WRITABLE,
            )
        };
        if let Err(e) = registered {
            warn!("{peer}: cannot register connection: {e}");
            self.release_admission(kind, peer);
            return;
        }
        debug!("conn {key} {peer} ({kind}): opened");
        let conn = entry.insert(Connection::new(socket, peer, kind, generation, now));
        let awaiting = conn.awaiting_request();
        // The accept is its first activity.
        self.track_open(key, kind, true, awaiting, false, now);
        self.stats.opened(kind);
        self.hub.handle_open(key, peer, policy);
    }

    /// Gives back the admission slot of a connection of `kind` from `peer`.
    fn release_admission(&mut self, kind: ServiceKind, peer: SocketAddr) {
        if Policy::of(kind).operator {
            self.admission.release_admin();
        } else {
            self.admission.release(peer.ip());
        }
    }

    /// Gives connection `key` a turn and applies its verdict.
    fn drive(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        // The list is the server's, reused, so a turn with effects (every
        // chat line) allocates nothing for them.
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

    /// Keeps the deadlines in step with connection `key`'s phase: the phase
    /// deadline starts when a phase after `Open` is entered and is pushed
    /// back whenever a finishing or draining connection sends a byte; a
    /// connection the server closed waits for the client's acknowledgement
    /// of its last byte.
    fn track_phase(&mut self, key: usize, phase: Phase, changed: bool, sent: bool, now: Instant) {
        if phase.is_open() {
            return;
        }
        let progressing = sent && matches!(phase, Phase::Finishing | Phase::Draining);
        if changed || progressing {
            self.phase_deadlines.touch(key, now);
        }
        if changed {
            self.forget_open_deadlines(key);
            if phase == (Phase::Closing { discard: false }) {
                self.awaiting_ack.insert(key);
                self.next_drain_check.get_or_insert(now + DRAIN_CHECK);
            }
        }
    }

    /// Keeps the deadlines of open connection `key` (of `kind`) in step with
    /// its last turn: activity (`moved`) makes it the most recently active
    /// and puts off its idle deadlines; the request deadline starts when its
    /// service starts waiting for a request (`awaiting`) and ends when the
    /// request has come, never pushed back meanwhile; an admin connection in
    /// `watch` (`watching`) has no idle deadline of its own.
    fn track_open(
        &mut self,
        key: usize,
        kind: ServiceKind,
        moved: bool,
        awaiting: bool,
        watching: bool,
        now: Instant,
    ) {
        if moved && let Some(activity) = &mut self.activity {
            activity.touch(key, now);
        }
        if Policy::of(kind).operator
            && let Some(admin_idle) = &mut self.admin_idle
        {
            if watching {
                admin_idle.remove(key);
            } else if moved || !admin_idle.contains(key) {
                admin_idle.touch(key, now);
            }
        }
        if let Some(requests) = &mut self.requests {
            if !awaiting {
                requests.remove(key);
            } else if !requests.contains(key) {
                requests.touch(key, now);
            }
        }
    }

    /// Connection `key`'s conversation is over (or the connection is): the
    /// deadlines of an open one no longer apply.
    fn forget_open_deadlines(&mut self, key: usize) {
        for list in [&mut self.activity, &mut self.requests, &mut self.admin_idle]
            .into_iter()
            .flatten()
        {
            list.remove(key);
        }
    }

    /// At `--max-conns`: ends the connection idle the longest, admin aside,
    /// if it has been idle for `--evict-idle-after`, as an idle close
    /// (answered, flushed, closed), and gives its admission slot to the
    /// newcomer from `ip` at once; the evicted one finishes outside the cap,
    /// within its phase deadlines. Only for a newcomer the per-IP cap lets
    /// in. True if one was evicted.
    fn evict_idlest(&mut self, ip: IpAddr, now: Instant) -> bool {
        let (Some(activity), Some(after)) = (&self.activity, self.config.evict_idle_after) else {
            return false;
        };
        if !self.admission.per_ip_allows(ip) {
            return false;
        }
        // Admin connections (at most the reserve) are in the activity order
        // too but hold no slot of the cap: passed over, a bounded walk.
        let idlest = activity
            .oldest()
            .take(limits::ADMIN_RESERVE + 1)
            .find(|(key, _)| {
                self.conns
                    .get(*key)
                    .is_some_and(|c| !Policy::of(c.kind).operator)
            });
        let Some((key, last_active)) = idlest.filter(|(_, last)| *last + after <= now) else {
            return false;
        };
        let Some(conn) = self.conns.get(key) else {
            return false;
        };
        warn!(
            "conn {key} {} ({}): idle for {:?} at --max-conns: evicted to admit a newcomer",
            conn.peer(),
            conn.kind,
            now.saturating_duration_since(last_active)
        );
        self.admission.release(conn.peer().ip());
        self.evicted.insert(key);
        self.finish(key, CloseReason::Evicted, now);
        true
    }

    /// Ends connection `key`, whose request did not arrive whole within
    /// `--request-timeout`: its service answers as its protocol says, then
    /// the server finishes the conversation.
    fn time_out_request(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.time_out_request() {
            warn!(
                "conn {key} {} ({}): request not complete within {:?}; ending",
                conn.peer(),
                conn.kind,
                self.config.request_timeout.unwrap_or_default()
            );
            self.track_phase(key, Phase::Finishing, true, false, now);
        }
        self.drive(key, now);
    }

    /// Refuses admin client `socket` (the reserve is full) in its own
    /// protocol: held in [`Server::refused`] until its first bytes come, or
    /// at once, from whatever has arrived, when that is full too.
    fn refuse_admin(&mut self, mut socket: TcpStream, peer: SocketAddr, now: Instant) {
        let retry_after = self.retry_after(now);
        if self.refused.len() >= limits::ADMIN_REFUSALS {
            refuse_with(&mut socket, |first| hub::refusal_answer(first, retry_after));
            return;
        }
        let key = self.refused.vacant_key();
        if let Err(e) = self.poll.registry().register(
            &mut socket,
            Token(REFUSED_TOKEN - key),
            Interest::READABLE,
        ) {
            debug!("{peer}: cannot register a refused admin client: {e}");
            refuse_with(&mut socket, |first| hub::refusal_answer(first, retry_after));
            return;
        }
        self.refused.insert(Refused {
            socket,
            peer,
            first: Vec::new(),
            answered: false,
        });
        self.refused_deadlines.touch(key, now);
        // Its first bytes may be here already.
        self.serve_refused(key, now, false);
    }

    /// Reads what refused admin client `key` sent; answers it once its
    /// first bytes tell its protocol, it ended, or its wait is over
    /// (`expired`); closes it once it closes too, or its wait after the
    /// answer is over.
    fn serve_refused(&mut self, key: usize, now: Instant, expired: bool) {
        let retry_after = self.retry_after(now);
        let Some(r) = self.refused.get_mut(key) else {
            return;
        };
        let was_answered = r.answered;
        let mut sink = [0u8; 4096];
        let mut ended = false;
        // Bounded: a client that floods is cut off by its deadline, not
        // served for ever in one turn.
        for _ in 0..16 {
            match r.socket.read(&mut sink) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => {
                    let room = FIRST_BYTES.saturating_sub(r.first.len());
                    r.first.extend_from_slice(&sink[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // Reset by the client: nobody to answer.
                    r.answered = true;
                    ended = true;
                    break;
                }
            }
        }
        let known = hub::refusal_ready(&r.first);
        if !r.answered && (known || ended || expired) {
            // A fresh socket's send queue is empty: this short write does
            // not block.
            let _ = r
                .socket
                .write_all(&hub::refusal_answer(&r.first, retry_after));
            let _ = r.socket.shutdown(Shutdown::Write);
            r.answered = true;
            debug!("{}: refused admin client answered", r.peer);
            self.refused_deadlines.touch(key, now);
        }
        if ended || (expired && was_answered) {
            // Closing the only descriptor takes it out of the epoll set.
            self.refused.remove(key);
            self.refused_deadlines.remove(key);
        }
    }

    /// The `Retry-After` a refused admin client is told, in seconds: until
    /// the admin connection idle the longest reaches
    /// `--admin-idle-timeout` and frees its slot, or 1 when none is idle
    /// (commands take moments).
    fn retry_after(&self, now: Instant) -> u64 {
        self.admin_idle
            .as_ref()
            .and_then(DeadlineList::next_deadline)
            .map_or(1, |at| {
                at.saturating_duration_since(now).as_secs_f64().ceil() as u64
            })
            .max(1)
    }

    /// Acts on every deadline that has passed.
    fn expire(&mut self, now: Instant) {
        while let Some(key) = self.phase_deadlines.pop_expired(now) {
            let Some(conn) = self.conns.get(key) else {
                continue;
            };
            let (reason, phase, owed) = (conn.close_reason, conn.phase(), conn.owed());
            // Closing with nothing owed: the client was sent everything and
            // merely did not close; anything else is a transfer that cannot
            // complete, and must not look complete to the client.
            let clean = matches!(phase, Phase::Closing { .. }) && owed == 0;
            if clean {
                debug!("conn {key}: client did not close within {LINGER:?}");
            } else {
                warn!(
                    "conn {key} {}: no progress for {LINGER:?} while {}, {owed} bytes owed; resetting",
                    conn.peer(),
                    conn.state_name()
                );
            }
            self.close(key, reason, !clean, now);
        }
        while let Some(Reverse((at, key, generation))) = self.wakeups.peek().copied()
            && at <= now
        {
            self.wakeups.pop();
            if self
                .conns
                .get(key)
                .is_some_and(|c| c.generation == generation)
            {
                self.queue(key);
            }
        }
        self.hub.handle_timeout(now);
        self.run_hub(now);
        if let Some(timeout) = self.config.idle_timeout
            && let Some(idle_since) = now.checked_sub(timeout)
        {
            while let Some(key) = self
                .activity
                .as_mut()
                .and_then(|l| l.pop_expired(idle_since))
            {
                self.finish(key, CloseReason::Idle, now);
            }
        }
        while let Some(key) = self.requests.as_mut().and_then(|l| l.pop_expired(now)) {
            self.time_out_request(key, now);
        }
        while let Some(key) = self.admin_idle.as_mut().and_then(|l| l.pop_expired(now)) {
            self.finish(key, CloseReason::Idle, now);
        }
        while let Some(key) = self.refused_deadlines.pop_expired(now) {
            self.serve_refused(key, now, true);
        }
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            for index in 0..self.listeners.len() {
                self.accept(index, now);
            }
        }
    }

    /// The server ends connection `key`'s conversation (see
    /// [`Connection::finish`]) and gives it a turn to answer what it read.
    fn finish(&mut self, key: usize, reason: CloseReason, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.finish(reason) {
            debug!("conn {key} {}: ending ({reason})", conn.peer());
            self.track_phase(key, Phase::Finishing, true, false, now);
        }
        self.drive(key, now);
    }

    /// Stops accepting, ends every conversation (a download in progress
    /// still runs to its end, and every reply owed is flushed), and starts
    /// the clock on all of it.
    fn begin_shutdown(&mut self, now: Instant) {
        let timeout = self.config.shutdown_timeout;
        self.shutdown_deadline = Some(now + timeout);
        // Closed before the log line, so a script that saw it knows no new
        // client gets in.
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener.socket);
        }
        info!(
            "shutting down: {} connections to flush, for at most {timeout:?}",
            self.conns.len()
        );
        self.accept_paused_until = None;
        // Everyone is leaving: no announcements (O(n^2) lines nobody reads)
        // and no flow control (nothing more is read).
        self.hub.handle_shutdown();
        self.broadcast_what_was_read(now);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            // `finish` looks the key up again: driving one connection can
            // close another.
            self.finish(key, CloseReason::Shutdown, now);
        }
    }

    /// At shutdown, before any conversation ends: every room member
    /// holding lines it has read (open, or already being ended) gets a turn
    /// that reads nothing (its readiness hint set aside for it), in which
    /// its service broadcasts
    /// them, so they reach the other members while all of them still
    /// listen. (Ended one by one instead, a member whose side was shut
    /// first would miss the lines of those ended after it.)
    fn broadcast_what_was_read(&mut self, now: Instant) {
        let talkers: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| Policy::of(c.kind).room && c.received() > 0)
            // One the server was already ending may wait for room too: the
            // room forgets its waiters now, so it gets its turn here.
            .filter(|(_, c)| c.phase().is_open() || c.phase() == Phase::Finishing)
            .map(|(k, _)| k)
            .collect();
        for key in talkers {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let readable = std::mem::replace(&mut conn.readable, false);
            self.drive(key, now);
            if let Some(conn) = self.conns.get_mut(key) {
                conn.readable |= readable;
            }
        }
    }

    /// During shutdown: true once no connection is left; past `deadline`,
    /// closes what is left first (with a reset where bytes are still owed).
    fn shutdown_done(&mut self, now: Instant, deadline: Instant) -> bool {
        if now >= deadline && !self.conns.is_empty() {
            warn!(
                "shutdown timeout: closing {} connections that have not finished",
                self.conns.len()
            );
            let left: Vec<(usize, bool)> = self
                .conns
                .iter()
                .map(|(k, c)| {
                    let clean = matches!(c.phase(), Phase::Closing { .. }) && c.owed() == 0;
                    (k, clean)
                })
                .collect();
            for (key, clean) in left {
                let reason = self
                    .conns
                    .get(key)
                    .map_or(CloseReason::Shutdown, |c| c.close_reason);
                self.close(key, reason, !clean, now);
            }
        }
        self.conns.is_empty()
    }

    /// Closes the connections the server ended whose last byte the client
    /// has acknowledged (an empty kernel send queue): all it was owed has
    /// arrived, so the close cannot destroy any of it.
    fn close_acknowledged(&mut self, now: Instant) {
        let done: Vec<usize> = self
            .awaiting_ack
            .iter()
            .copied()
            .filter(|&key| {
                self.conns
                    .get(key)
                    .is_none_or(|c| sys::send_queue(&c.socket).is_ok_and(|q| q == 0))
            })
            .collect();
        for key in done {
            self.awaiting_ack.remove(&key);
            if let Some(reason) = self.conns.get(key).map(|c| c.close_reason) {
                self.close(key, reason, false, now);
            }
        }
        self.next_drain_check = (!self.awaiting_ack.is_empty()).then(|| now + DRAIN_CHECK);
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

    /// Gives connection `key` a turn soon, without waiting for an event
    /// (once: a connection already queued keeps its place).
    fn queue(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.queued
        {
            conn.queued = true;
            self.ready.push_back(key);
        }
    }

    /// Carries out what the hub asks, until it asks nothing more.
    fn run_hub(&mut self, now: Instant) {
        while let Some(command) = self.hub.poll_command() {
            match command {
                Command::Queue(key) => self.queue(key),
                Command::Share {
                    key,
                    chunk,
                    from,
                    unless_over,
                } => {
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    let rest = chunk.len().saturating_sub(from);
                    if !conn.phase().is_open()
                        || unless_over
                            .is_some_and(|limit| conn.shared_cost().saturating_add(rest) > limit)
                    {
                        continue;
                    }
                    let cost = conn.share(&mut self.pools, chunk, from);
                    self.queue(key);
                    if unless_over.is_none() {
                        self.hub.handle_queued(key, cost, now);
                    }
                }
                Command::Recycle(chunk) => self.pools.chunks.recycle(chunk),
                Command::Progress(key) => {
                    if self.conns.get(key).map(Connection::phase) == Some(Phase::Finishing) {
                        self.phase_deadlines.touch(key, now);
                    }
                }
                Command::Dismiss { key, why, farewell } => {
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    self.counters.slow_consumers += 1;
                    let peer = conn.peer();
                    hub::log_dismissal(peer, &why, conn.owed());
                    conn.dismiss(farewell, &mut self.pools, CloseReason::Limit);
                    self.queue(key);
                    self.track_phase(key, Phase::Finishing, true, false, now);
                    self.hub.handle_dismissed(key, peer);
                }
                Command::Deliver { key, answer, next } => {
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.deliver(answer, next);
                        // The answer waits in the service; a turn sends it.
                        self.queue(key);
                    }
                }
            }
        }
    }
}

/// The server as the hub's admin views read it.
struct View<'a> {
    conns: &'a Slab<Connection>,
    pools: &'a Pools,
    stats: &'a Stats,
    config: &'a ServerConfig,
    counters: &'a LoopCounters,
    started: Instant,
}

impl ServerView for View<'_> {
    fn stats(&self) -> &Stats {
        self.stats
    }

    fn running_services(&self) -> Vec<(&'static str, &ServiceStats)> {
        ServiceKind::ALL
            .iter()
            .filter(|k| self.config.listeners.iter().any(|l| l.service == **k))
            .map(|k| (k.name(), &self.stats.services[k.index()]))
            .collect()
    }

    fn uptime(&self, now: Instant) -> Duration {
        now - self.started
    }

    fn max_conns(&self) -> Option<usize> {
        self.config.max_conns
    }

    fn key_end(&self) -> usize {
        self.conns.capacity()
    }

    fn row(&self, key: usize, now: Instant) -> Option<ClientRow> {
        let c = self.conns.get(key)?;
        Some(client_row(key, c, self.config, now))
    }

    /// The buffer figures are summed over every connection: a walk of
    /// memory only (no system call), done once per scrape.
    fn metrics(&self) -> metrics::Snapshot<'_> {
        let (mut sum, mut max) = (0u64, 0u64);
        for (_, c) in self.conns {
            let held = (c.received() + c.owed()) as u64;
            sum += held;
            max = max.max(held);
        }
        metrics::Snapshot {
            services: self.running_services(),
            user_buffer_bytes: sum,
            user_buffer_max_bytes: max,
            pool_blocks_recv: self.pools.recv.idle_blocks() as u64,
            pool_blocks_send: self.pools.send.idle_blocks() as u64,
            backpressure_pauses: self.counters.pauses,
            slow_consumer_disconnects: self.counters.slow_consumers,
            log_lines_dropped: crate::logsink::dropped(),
            poll_iterations: self.counters.iterations,
            poll_events: self.counters.events,
            process: crate::observe::process::ProcessFigures::read(),
        }
    }
}

/// Connection `key` as the `clients` command shows it, with the kernel's
/// view of its socket (six system calls).
fn client_row(id: usize, c: &Connection, config: &ServerConfig, now: Instant) -> ClientRow {
    let (so_rcvbuf, so_sndbuf) = sys::buffer_sizes(&c.socket);
    ClientRow {
        id,
        peer: c.peer(),
        service: c.kind.name(),
        age: now.saturating_duration_since(c.opened()),
        idle: now.saturating_duration_since(c.last_active()),
        recv_used: c.received(),
        recv_capacity: config.recv_buf,
        send_used: c.owed(),
        send_capacity: config.send_buf,
        kernel_recv_queue: sys::recv_queue(&c.socket).ok(),
        kernel_send_queue: sys::send_queue(&c.socket).ok(),
        kernel_unsent: sys::send_queue_unsent(&c.socket).ok(),
        so_rcvbuf,
        so_sndbuf,
        state: c.state_name(),
        bytes_in: c.bytes_in,
        bytes_out: c.bytes_out,
        write_blocked: !c.writable && c.owed() > 0,
        tcp: tcp::tcp_info(&c.socket).ok(),
        snapshots_skipped: c.skipped_snapshots(),
    }
}

/// What the spare descriptor is opened on.
const SPARE: &str = "/dev/null";

/// The spare descriptor (see `Server::spare`).
fn open_spare() -> io::Result<std::fs::File> {
    std::fs::File::open(SPARE)
}

/// Whether accept failed for want of a descriptor, the process's (EMFILE)
/// or the system's (ENFILE).
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Tells a client it is refused, then closes. What it already sent is read
/// and dropped first, so the close is not a reset that destroys the line.
fn refuse(socket: &mut TcpStream, line: &str) {
    refuse_with(socket, |_| format!("{line}\n").into_bytes());
}

/// As [`refuse`], with the answer made from the client's first bytes (up
/// to [`FIRST_BYTES`] of what has arrived).
fn refuse_with(socket: &mut TcpStream, answer: impl FnOnce(&[u8]) -> Vec<u8>) {
    let mut sink = [0u8; 4096];
    let mut first = Vec::new();
    for _ in 0..16 {
        match socket.read(&mut sink) {
            Ok(n) if n > 0 => {
                let room = FIRST_BYTES.saturating_sub(first.len());
                first.extend_from_slice(&sink[..n.min(room)]);
            }
            _ => break,
        }
    }
    // A fresh socket's send queue is empty: this write does not block.
    let _ = socket.write_all(&answer(&first));
    let _ = socket.shutdown(Shutdown::Write);
}
