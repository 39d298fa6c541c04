//! The poll loop: one thread, one `mio::Poll`, every listener and connection
//! registered on it.
//!
//! Tokens: a connection's token is its key in the connection slab; listener
//! tokens count down from the top of the token space, so the two never meet.
//! This module is the only one that registers, deregisters and closes
//! sockets. Connections are registered once for both readable and writable
//! events (edge-triggered): what the connection does with an event depends on
//! its own state, so pausing and resuming cost no system call.
//!
//! Fairness: a connection whose turn used up its byte budget with work left
//! goes on the ready queue, which is served after the next poll (polled with a
//! zero timeout while the queue is not empty). No new edge would come for it,
//! so without the queue it would stall.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::buffer::BufPool;
use crate::config::ServerConfig;
use crate::connection::{Connection, Pools, Verdict};
use crate::service::ServiceKind;
use crate::sockopt;
use crate::stats::{CloseReason, Stats};
use crate::timer::{DeadlineList, earliest};

/// Listener `i` has token `LISTENER_TOKEN_TOP - i`.
const LISTENER_TOKEN_TOP: usize = usize::MAX;

/// Most listeners one server opens; keeps listener tokens clear of slab keys.
pub const MAX_LISTENERS: usize = 64;

/// How long a connection whose side we shut may wait for the client to close
/// its side before we close the socket anyway. Long enough for the last
/// bytes in flight on any sane link; short enough that a client that never
/// closes does not hold a slot.
pub const LINGER: Duration = Duration::from_secs(5);

/// Events fetched per poll.
const EVENTS_CAPACITY: usize = 1024;

struct Listener {
    socket: TcpListener,
    addr: SocketAddr,
    kind: ServiceKind,
}

/// A bound, running-ready server.
pub struct Server {
    poll: Poll,
    listeners: Vec<Listener>,
    conns: Slab<Connection>,
    pools: Pools,
    /// Connections to drive again without waiting for an event.
    ready: VecDeque<usize>,
    /// Connections in the `Draining` phase, by when to give up waiting.
    linger: DeadlineList,
    config: ServerConfig,
    stats: Stats,
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
            let mut socket = sockopt::listener(spec.addr).map_err(fail)?;
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
            config,
            stats: Stats::default(),
        })
    }

    /// The bound addresses, with their services, in `--listen` order.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, ServiceKind)> {
        self.listeners.iter().map(|l| (l.addr, l.kind)).collect()
    }

    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Serves until an unrecoverable poll error.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let timeout = if self.ready.is_empty() {
                earliest([self.linger.next_deadline()])
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
                if token > LISTENER_TOKEN_TOP - MAX_LISTENERS {
                    self.accept(LISTENER_TOKEN_TOP - token, now);
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
        }
    }

    /// Accepts every pending connection on listener `index`.
    fn accept(&mut self, index: usize, now: Instant) {
        loop {
            let listener = &self.listeners[index];
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
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    warn!("accept on {} failed: {e}", listener.addr);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr, kind: ServiceKind, now: Instant) {
        if self.config.nodelay
            && let Err(e) = socket.set_nodelay(true)
        {
            debug!("{peer}: cannot set TCP_NODELAY: {e}");
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if key > LISTENER_TOKEN_TOP - MAX_LISTENERS {
            // Unreachable in practice (it needs ~2^64 connections), but a
            // token collision would be silent, so refuse loudly instead.
            warn!("{peer}: connection table full");
            return;
        }
        if let Err(e) = self.poll.registry().register(
            &mut socket,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("{peer}: cannot register connection: {e}");
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
        self.stats.opened(kind);
    }

    /// Gives connection `key` a turn and applies its verdict.
    fn drive(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let report = conn.turn(key, &mut self.pools, &self.config.service, now);
        let counters = self.stats.service(conn.kind);
        counters.bytes_in += report.bytes_in as u64;
        counters.bytes_out += report.bytes_out as u64;
        match report.next {
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

    /// Closes connections whose deadlines have passed.
    fn expire(&mut self, now: Instant) {
        while let Some(key) = self.linger.pop_expired(now) {
            debug!("conn {key}: client did not close within {LINGER:?}");
            self.close(key, CloseReason::Done);
        }
    }

    fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        self.linger.remove(key);
        if let Err(e) = self.poll.registry().deregister(&mut conn.socket) {
            debug!("conn {key}: deregister failed: {e}");
        }
        conn.recv.clear();
        conn.recv.release(&mut self.pools.recv);
        conn.send.clear();
        conn.send.release(&mut self.pools.send);
        self.stats.closed(conn.kind, reason);
        debug!(
            "conn {key} {} ({}): closed ({reason}), {} bytes in, {} bytes out, open {:?}",
            conn.peer,
            conn.kind,
            conn.bytes_in,
            conn.bytes_out,
            conn.opened.elapsed()
        );
    }
}
