//! The reactor's side of the hub: the commands it carries out (queue a
//! connection, share a chunk with it, dismiss it, deliver an answer to it)
//! and the read-only [`View`] of the server the hub's admin views read.

use std::time::{Duration, Instant};

use slab::Slab;

use super::{LoopCounters, Server};
use crate::config::ServerConfig;
use crate::connection::{Connection, Phase, Pools};
use crate::hub::{self, Command, ServerView};
use crate::observe::clients::ClientRow;
use crate::observe::stats::{CloseReason, ServiceStats, Stats};
use crate::observe::{metrics, tcp};
use crate::service::ServiceKind;
use crate::sys;

impl Server {
    /// Gives connection `key` a turn soon, without waiting for an event
    /// (once: a connection already queued keeps its place).
    pub(super) fn queue(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.queued
        {
            conn.queued = true;
            self.ready.push_back(key);
        }
    }

    /// Carries out what the hub asks, until it asks nothing more.
    pub(super) fn run_hub(&mut self, now: Instant) {
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
pub(super) struct View<'a> {
    pub(super) conns: &'a Slab<Connection>,
    pub(super) pools: &'a Pools,
    pub(super) stats: &'a Stats,
    pub(super) config: &'a ServerConfig,
    pub(super) counters: &'a LoopCounters,
    pub(super) started: Instant,
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
