//! Deadlines and the ends of conversations: the poll timeout (the nearest
//! deadline), what passes when one expires, the deadlines of open
//! connections kept in step with their turns (activity, request, operator
//! idle) and of the phases after `Open`, the server ending a
//! conversation, the shutdown, and the drain check of connections waiting
//! for their last byte's acknowledgement. Part of the reactor; every list
//! is O(1) per touch and expiry (see [`crate::timer`]).

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::{LINGER, Server};
use crate::connection::Phase;
use crate::hub::Policy;
use crate::observe::stats::CloseReason;
use crate::service::ServiceKind;
use crate::sys;
use crate::timer::earliest;

/// How often connections the server closed are checked for an empty kernel
/// send queue (there is no event for it).
const DRAIN_CHECK: Duration = Duration::from_millis(20);

impl Server {
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        earliest([
            self.wakeups.peek().map(|Reverse((at, _, _))| *at),
            self.phase_deadlines.next_deadline(),
            self.hub.poll_timeout(),
            self.shutdown_deadline,
            self.idle_deadline(),
            self.requests.as_ref().and_then(|l| l.next_deadline()),
            self.operator_idle.as_ref().and_then(|l| l.next_deadline()),
            self.refused_deadlines.next_deadline(),
            self.accept_paused_until,
            self.next_drain_check,
        ])
    }

    /// When the connection idle the longest reaches `--idle-timeout`.
    pub(super) fn idle_deadline(&self) -> Option<Instant> {
        let timeout = self.config.idle_timeout?;
        let last = self.activity.as_ref()?.next_deadline()?;
        Some(last + timeout)
    }

    /// Keeps the deadlines in step with connection `key`'s phase: the phase
    /// deadline starts when a phase after `Open` is entered and is pushed
    /// back whenever a finishing or draining connection sends a byte; a
    /// connection the server closed waits for the client's acknowledgement
    /// of its last byte.
    pub(super) fn track_phase(
        &mut self,
        key: usize,
        phase: Phase,
        changed: bool,
        sent: bool,
        now: Instant,
    ) {
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
    pub(super) fn track_open(
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
            && let Some(operator_idle) = &mut self.operator_idle
        {
            if watching {
                operator_idle.remove(key);
            } else if moved || !operator_idle.contains(key) {
                operator_idle.touch(key, now);
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
    pub(super) fn forget_open_deadlines(&mut self, key: usize) {
        for list in [
            &mut self.activity,
            &mut self.requests,
            &mut self.operator_idle,
        ]
        .into_iter()
        .flatten()
        {
            list.remove(key);
        }
    }

    /// Ends connection `key`, whose request did not arrive whole within
    /// `--request-timeout`: its service answers as its protocol says, then
    /// the server finishes the conversation.
    pub(super) fn time_out_request(&mut self, key: usize, now: Instant) {
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

    /// Acts on every deadline that has passed.
    pub(super) fn expire(&mut self, now: Instant) {
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
        while let Some(key) = self.operator_idle.as_mut().and_then(|l| l.pop_expired(now)) {
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
    pub(super) fn finish(&mut self, key: usize, reason: CloseReason, now: Instant) {
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
    pub(super) fn begin_shutdown(&mut self, now: Instant) {
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
    pub(super) fn broadcast_what_was_read(&mut self, now: Instant) {
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
    pub(super) fn shutdown_done(&mut self, now: Instant, deadline: Instant) -> bool {
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
    pub(super) fn close_acknowledged(&mut self, now: Instant) {
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
}
