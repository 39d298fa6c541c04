//! The poll loop: one thread, one `mio::Poll`, every listener and connection
//! registered on it.
//!
//! Tokens: a connection's token is its key in the connection slab; listener
//! tokens count down from the top of the token space, and the signal pipe has
//! the next one down, so none of them meet. This module is the only one that
//! registers, deregisters and closes sockets. Connections are registered once
//! for both readable and writable events (edge-triggered): what a connection
//! does with an event depends on its own state, so pausing and resuming cost
//! no system call.
//!
//! Fairness: a connection whose turn used up its byte budget with work left
//! goes on the ready queue, which is served after the next poll (polled with a
//! zero timeout while the queue is not empty). No new edge would come for it,
//! so without the queue it would stall.
//!
//! Time: deadlines (idle, linger, accept back-off, shutdown) are kept in
//! O(1) structures and the poll timeout is the nearest of them; no event
//! scans all connections. The one scan is at shutdown, once per drain check
//! (every 20 ms), since no event says a kernel send queue has drained.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::buffer::BufPool;
use crate::config::ServerConfig;
use crate::connection::{Connection, Phase, Pools, Verdict};
use crate::limits::{self, Admission};
use crate::service::admin::{self, ClientRow, Query};
use crate::service::chat;
use crate::service::{Effect, ServiceKind};
use crate::sockopt;
use crate::stats::{CloseReason, RefuseReason, ServiceStats, Stats};
use crate::timer::{DeadlineList, earliest};

/// Listener `i` has token `usize::MAX - i`.
const LISTENER_TOKEN_TOP: usize = usize::MAX;

/// Most listeners one server opens; keeps listener tokens clear of the rest.
pub const MAX_LISTENERS: usize = 64;

/// The signal pipe's token, just below the listeners'.
const SIGNAL_TOKEN: usize = LISTENER_TOKEN_TOP - MAX_LISTENERS;

/// How long a connection whose side we shut may wait for the client to close
/// its side before we close the socket anyway. Long enough for the last
/// bytes in flight on any sane link; short enough that a client that never
/// closes does not hold a slot.
pub const LINGER: Duration = Duration::from_secs(5);

/// How long accepting pauses after the process or system ran out of file
/// descriptors or memory: long enough not to spin on a failing `accept`,
/// short enough to take new clients soon after others leave.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// During shutdown, how often closing connections are checked for an empty
/// kernel send queue (there is no event for it).
const DRAIN_CHECK: Duration = Duration::from_millis(20);

/// Events fetched per poll.
const EVENTS_CAPACITY: usize = 1024;

struct Listener {
    socket: TcpListener,
    addr: SocketAddr,
    kind: ServiceKind,
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
    /// Connections in the `Closing` phase, by when to give up waiting.
    linger: DeadlineList,
    /// Every connection, by when it has been idle too long.
    idle: Option<DeadlineList>,
    admission: Admission,
    /// Keys of the open chat connections, the receivers of a broadcast.
    chat_members: HashSet<usize>,
    /// What the services asked for in the current turn; empty between turns.
    effects: Vec<Effect>,
    /// Accepting is paused until then (out of descriptors or memory).
    accept_paused_until: Option<Instant>,
    last_accept_warning: Option<Instant>,
    signals: Option<Signals>,
    /// Set once a signal asked for a stop: when to give up flushing.
    shutdown_deadline: Option<Instant>,
    /// During shutdown, when to next look for connections whose kernel send
    /// queue has drained (a scan of all of them, so not on every event).
    next_drain_check: Option<Instant>,
    config: ServerConfig,
    stats: Stats,
    started: Instant,
}

impl Server {
    /// Binds every listener in `config` and registers it. Logs each bound
    /// address as `listening on ADDR (SERVICE)`. Errors are one line naming
    /// the address that failed.
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
            let mut socket = sockopt::listener(
                spec.addr,
                config.reuse_port,
                config.so_rcvbuf,
                config.so_sndbuf,
            )
            .map_err(fail)?;
            let addr = socket.local_addr().map_err(fail)?;
            poll.registry()
                .register(
                    &mut socket,
                    Token(LISTENER_TOKEN_TOP - i),
                    Interest::READABLE,
                )
                .map_err(fail)?;
            info!("listening on {addr} ({})", spec.service);
            listeners.push(Listener {
                socket,
                addr,
                kind: spec.service,
            });
        }
        Ok(Server {
            poll,
            listeners,
            conns: Slab::new(),
            pools: Pools {
                recv: BufPool::new(config.recv_buf),
                send: BufPool::new(config.send_buf),
            },
            ready: VecDeque::new(),
            linger: DeadlineList::new(LINGER),
            idle: config.idle_timeout.map(DeadlineList::new),
            admission: Admission::new(config.max_conns, config.max_conns_per_ip),
            chat_members: HashSet::new(),
            effects: Vec::new(),
            accept_paused_until: None,
            last_accept_warning: None,
            signals: None,
            shutdown_deadline: None,
            next_drain_check: None,
            config,
            stats: Stats::default(),
            started: Instant::now(),
        })
    }

    /// Makes SIGINT and SIGTERM start a graceful shutdown (and a second one
    /// end the process at once), delivered through the poll loop.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let mut signals = Signals::new([libc::SIGINT, libc::SIGTERM])?;
        self.poll
            .registry()
            .register(&mut signals, Token(SIGNAL_TOKEN), Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Serves until a signal stops it, or an unrecoverable poll error.
    pub fn run(&mut self) -> io::Result<Exit> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let timeout = if self.ready.is_empty() {
                self.next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for event in events.iter() {
                let token = event.token().0;
                if token > SIGNAL_TOKEN {
                    self.accept(LISTENER_TOKEN_TOP - token, now);
                    continue;
                }
                if token == SIGNAL_TOKEN {
                    if self.take_signals() {
                        if self.shutdown_deadline.is_some() {
                            warn!("second signal: exiting now");
                            info!("{}", self.stats.summary());
                            return Ok(Exit::Forced);
                        }
                        self.begin_shutdown(now);
                    }
                    continue;
                }
                let Some(conn) = self.conns.get_mut(token) else {
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
                self.drive(token, now);
            }
            self.expire(now);
            // Only the connections queued before this pass: one that is
            // queued again waits for the next poll, behind the others.
            for _ in 0..self.ready.len() {
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
            if let Some(deadline) = self.shutdown_deadline
                && self.next_drain_check.is_some_and(|t| t <= now)
                && self.shutdown_step(now, deadline)
            {
                info!("{}", self.stats.summary());
                return Ok(Exit::Graceful);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        earliest([
            self.linger.next_deadline(),
            self.idle.as_ref().and_then(|l| l.next_deadline()),
            self.accept_paused_until,
            self.next_drain_check,
        ])
    }

    /// Drains the signal pipe; true if SIGINT or SIGTERM arrived.
    fn take_signals(&mut self) -> bool {
        let Some(signals) = &mut self.signals else {
            return false;
        };
        let mut stop = false;
        for signal in signals.pending() {
            info!("received signal {signal}");
            stop = true;
        }
        stop
    }

    /// Accepts every pending connection on listener `index`, unless
    /// accepting is paused.
    fn accept(&mut self, index: usize, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.socket.accept() {
                Ok((socket, peer)) => {
                    let kind = listener.kind;
                    self.admit(socket, peer, kind, now);
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
                    // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
                    // ENOMEM), or anything unexpected: retrying at once would
                    // spin, so pause; the connections already open go on.
                    // Clients left in the backlog raise no new edge, so the
                    // back-off's end accepts by itself (see `expire`).
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    if self
                        .last_accept_warning
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
                    {
                        self.last_accept_warning = Some(now);
                        warn!(
                            "accept on {} failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?} ({} connections open)",
                            listener.addr,
                            self.conns.len()
                        );
                    }
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr, kind: ServiceKind, now: Instant) {
        if let Err(refusal) = self.admission.admit(peer.ip()) {
            let reason = match refusal {
                limits::Refusal::Full => RefuseReason::Full,
                limits::Refusal::PerIp(_) => RefuseReason::PerIp,
            };
            self.stats.refused(kind, reason);
            warn!("{peer} ({kind}): refused: {refusal}");
            refuse(&mut socket, &refusal.to_string());
            return;
        }
        if self.config.nodelay
            && let Err(e) = socket.set_nodelay(true)
        {
            debug!("{peer}: cannot set TCP_NODELAY: {e}");
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let registered = if key >= SIGNAL_TOKEN {
            // Unreachable in practice (it needs ~2^64 connections), but a
            // token collision would be silent, so refuse loudly instead.
            Err(io::Error::other("connection table full"))
        } else {
            self.poll.registry().register(
                &mut socket,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )
        };
        if let Err(e) = registered {
            warn!("{peer}: cannot register connection: {e}");
            self.admission.release(peer.ip());
            return;
        }
        debug!("conn {key} {peer} ({kind}): opened");
        entry.insert(Connection::new(
            socket,
            peer,
            kind,
            self.config.recv_buf,
            self.config.send_buf,
            now,
        ));
        if let Some(idle) = &mut self.idle {
            idle.touch(key, now);
        }
        self.stats.opened(kind);
        if kind == ServiceKind::Chat {
            self.broadcast(Some(key), chat::joined(peer));
            self.chat_members.insert(key);
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
        let report = conn.turn(
            key,
            &mut self.pools,
            &self.config.service,
            now,
            &mut effects,
        );
        let counters = self.stats.service(conn.kind);
        counters.bytes_in += report.bytes_in as u64;
        counters.bytes_out += report.bytes_out as u64;
        if report.bytes_in + report.bytes_out > 0
            && let Some(idle) = &mut self.idle
        {
            idle.touch(key, now);
        }
        let next = report.next;
        for effect in effects.drain(..) {
            self.apply(key, effect, now);
        }
        self.effects = effects;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match next {
            Verdict::Wait => {}
            Verdict::Requeue => {
                if !conn.queued {
                    conn.queued = true;
                    self.ready.push_back(key);
                }
            }
            Verdict::Linger => {
                if !self.linger.contains(key) {
                    self.linger.touch(key, now);
                }
            }
            Verdict::Close(reason) => self.close(key, reason),
        }
    }

    /// Carries out what connection `key`'s service asked for.
    fn apply(&mut self, key: usize, effect: Effect, now: Instant) {
        match effect {
            Effect::Broadcast(chunk) => self.broadcast(Some(key), chunk),
            Effect::Query(query) => {
                let answer = match query {
                    Query::Stats { json } => {
                        let running: Vec<(&str, &ServiceStats)> = ServiceKind::ALL
                            .iter()
                            .filter(|k| self.config.listeners.iter().any(|l| l.service == **k))
                            .map(|k| (k.name(), &self.stats.services[k.index()]))
                            .collect();
                        admin::render_stats(&self.stats, &running, now - self.started, json)
                    }
                    Query::Clients { json } => admin::render_clients(&self.client_rows(now), json),
                };
                let conn = &mut self.conns[key];
                conn.deliver(answer.into_bytes());
                // The answer waits in the service; a turn sends it.
                if !conn.queued {
                    conn.queued = true;
                    self.ready.push_back(key);
                }
            }
        }
    }

    /// Queues `chunk` on every open chat connection but `from`. A receiver
    /// whose queued output would pass its send limit is too slow: it is told
    /// so (best effort), closed, and its leave announced in turn; that
    /// announcement can find more receivers too slow, hence the list of
    /// leaves still to announce.
    fn broadcast(&mut self, from: Option<usize>, chunk: Rc<[u8]>) {
        // Leaves to announce; allocated only when someone was too slow.
        let mut leaves = Vec::new();
        let mut next = Some((from, chunk));
        while let Some((from, chunk)) = next.take().or_else(|| leaves.pop()) {
            let mut too_slow = Vec::new();
            for &key in &self.chat_members {
                let Some(conn) = self.conns.get_mut(key) else {
                    continue;
                };
                if Some(key) == from || conn.phase != Phase::Open {
                    continue;
                }
                if !conn.queue_shared(&chunk) {
                    too_slow.push(key);
                } else if !conn.queued {
                    // Written after this poll round, with whatever else
                    // arrives in it: one vectored write per receiver.
                    conn.queued = true;
                    self.ready.push_back(key);
                }
            }
            for key in too_slow {
                let conn = &mut self.conns[key];
                let peer = conn.peer;
                warn!(
                    "chat {peer}: too slow, {} bytes already queued; disconnecting",
                    conn.owed()
                );
                conn.farewell(b"* disconnected: too slow\n");
                self.close_quietly(key, CloseReason::Limit);
                leaves.push((None, chat::left(peer, true)));
            }
        }
    }

    /// One row per connection, with the kernel's view of its socket.
    fn client_rows(&self, now: Instant) -> Vec<ClientRow> {
        self.conns
            .iter()
            .map(|(id, c)| {
                let (so_rcvbuf, so_sndbuf) = sockopt::buffer_sizes(&c.socket);
                ClientRow {
                    id,
                    peer: c.peer,
                    service: c.kind.name(),
                    age: now.saturating_duration_since(c.opened),
                    idle: now.saturating_duration_since(c.last_active),
                    recv_used: c.recv.len(),
                    recv_capacity: c.recv.capacity(),
                    send_used: c.owed(),
                    send_capacity: c.send.capacity(),
                    kernel_recv_queue: sockopt::recv_queue(&c.socket).ok(),
                    kernel_send_queue: sockopt::send_queue(&c.socket).ok(),
                    kernel_unsent: sockopt::send_queue_unsent(&c.socket).ok(),
                    so_rcvbuf,
                    so_sndbuf,
                    state: c.state_name(),
                    bytes_in: c.bytes_in,
                    bytes_out: c.bytes_out,
                }
            })
            .collect()
    }

    /// Acts on every deadline that has passed.
    fn expire(&mut self, now: Instant) {
        while let Some(key) = self.linger.pop_expired(now) {
            debug!("conn {key}: client did not close within {LINGER:?}");
            let reason = self
                .conns
                .get(key)
                .map_or(CloseReason::Peer, |c| c.close_reason);
            self.close(key, reason);
        }
        while let Some(key) = self.idle.as_mut().and_then(|l| l.pop_expired(now)) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            debug!("conn {key} {}: idle, closing", conn.peer);
            if conn.phase == Phase::Open {
                // Flush what is owed, then close; the linger bounds how long
                // that may take for a client that reads nothing.
                conn.begin_close(CloseReason::Idle);
                self.linger.touch(key, now);
                self.drive(key, now);
            } else {
                self.close(key, CloseReason::Idle);
            }
        }
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            for index in 0..self.listeners.len() {
                self.accept(index, now);
            }
        }
    }

    /// Stops accepting, ends every conversation that is not owed a download
    /// in progress, and starts the clock on flushing.
    fn begin_shutdown(&mut self, now: Instant) {
        let timeout = self.config.shutdown_timeout;
        info!(
            "shutting down: {} connections to flush, for at most {timeout:?}",
            self.conns.len()
        );
        self.shutdown_deadline = Some(now + timeout);
        self.next_drain_check = Some(now);
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener.socket);
        }
        self.accept_paused_until = None;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            if conn.is_producing() {
                conn.stop_input();
            } else {
                conn.begin_close(CloseReason::Shutdown);
            }
            self.drive(key, now);
        }
    }

    /// One shutdown check: closes the connections whose last bytes the
    /// client has acknowledged, or all of them once `deadline` passes.
    /// True when none is left.
    fn shutdown_step(&mut self, now: Instant, deadline: Instant) -> bool {
        let past = now >= deadline;
        self.next_drain_check = Some((now + DRAIN_CHECK).min(deadline));
        let done: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                past || (c.phase == Phase::Closing
                    && sockopt::send_queue(&c.socket).is_ok_and(|q| q == 0))
            })
            .map(|(k, _)| k)
            .collect();
        if past && !done.is_empty() {
            warn!(
                "shutdown timeout: closing {} connections still owed bytes",
                done.len()
            );
        }
        for key in done {
            let reason = self.conns[key].close_reason;
            self.close(key, reason);
        }
        self.conns.is_empty()
    }

    /// Closes connection `key`; a chat member's leave is announced.
    fn close(&mut self, key: usize, reason: CloseReason) {
        if let Some(peer) = self.close_quietly(key, reason) {
            self.broadcast(None, chat::left(peer, false));
        }
    }

    /// Closes connection `key` without announcing it; returns the peer if it
    /// was a chat member, whose leave is then the caller's to announce.
    fn close_quietly(&mut self, key: usize, reason: CloseReason) -> Option<SocketAddr> {
        let mut conn = self.conns.try_remove(key)?;
        self.linger.remove(key);
        if let Some(idle) = &mut self.idle {
            idle.remove(key);
        }
        self.admission.release(conn.peer.ip());
        if let Err(e) = self.poll.registry().deregister(&mut conn.socket) {
            debug!("conn {key}: deregister failed: {e}");
        }
        conn.recv.clear();
        conn.recv.release(&mut self.pools.recv);
        conn.send.clear();
        conn.send.release(&mut self.pools.send);
        conn.shared.clear();
        self.stats.closed(conn.kind, reason);
        debug!(
            "conn {key} {} ({}): closed ({reason}), {} bytes in, {} bytes out, open {:?}",
            conn.peer,
            conn.kind,
            conn.bytes_in,
            conn.bytes_out,
            conn.opened.elapsed()
        );
        self.chat_members.remove(&key).then_some(conn.peer)
    }
}

/// Tells a client it is refused, then closes. What it already sent is read
/// and dropped first, so the close is not a reset that destroys the line.
fn refuse(socket: &mut TcpStream, line: &str) {
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match socket.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    // A fresh socket's send queue is empty: this write does not block.
    let _ = socket.write_all(format!("{line}\n").as_bytes());
    let _ = socket.shutdown(Shutdown::Write);
}
