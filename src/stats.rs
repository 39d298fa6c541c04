//! Counters the server keeps: per service, what was accepted, refused and
//! closed (by cause), and the bytes moved. Pure: no I/O here.

use std::fmt;

use crate::service::ServiceKind;

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The conversation ended normally: the client closed its side, said
    /// `exit`, or its download was sent in full.
    Peer,
    /// No byte moved for `--idle-timeout`.
    Idle,
    /// A socket error, such as a reset by the client.
    Error,
    /// A limit ended it: a receiver too slow for its send buffer.
    Limit,
    /// The server was shutting down.
    Shutdown,
    /// A request did not arrive whole within `--request-timeout` (a slow
    /// loris, a stalled HTTP request on admin).
    Timeout,
    /// `--max-conns` was reached and this connection, idle the longest (for
    /// at least `--evict-idle-after`), made room for a newcomer.
    Evicted,
}

impl CloseReason {
    pub const ALL: [CloseReason; 7] = [
        CloseReason::Peer,
        CloseReason::Idle,
        CloseReason::Error,
        CloseReason::Limit,
        CloseReason::Shutdown,
        CloseReason::Timeout,
        CloseReason::Evicted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CloseReason::Peer => "peer",
            CloseReason::Idle => "idle",
            CloseReason::Error => "error",
            CloseReason::Limit => "limit",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Timeout => "timeout",
            CloseReason::Evicted => "evicted",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a connection was turned away at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// `--max-conns` reached.
    Full,
    /// `--max-conns-per-ip` reached.
    PerIp,
}

impl RefuseReason {
    pub const ALL: [RefuseReason; 2] = [RefuseReason::Full, RefuseReason::PerIp];

    pub fn name(self) -> &'static str {
        match self {
            RefuseReason::Full => "full",
            RefuseReason::PerIp => "per-ip",
        }
    }
}

/// Counters for one service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    pub accepted: u64,
    pub active: u64,
    pub refused: [u64; RefuseReason::ALL.len()],
    pub closed: [u64; CloseReason::ALL.len()],
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Counters for the whole server, one row per service.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub services: [ServiceStats; ServiceKind::ALL.len()],
}

impl Stats {
    pub fn service(&mut self, kind: ServiceKind) -> &mut ServiceStats {
        &mut self.services[kind.index()]
    }

    pub fn opened(&mut self, kind: ServiceKind) {
        let s = self.service(kind);
        s.accepted += 1;
        s.active += 1;
    }

    pub fn refused(&mut self, kind: ServiceKind, reason: RefuseReason) {
        self.service(kind).refused[reason as usize] += 1;
    }

    pub fn closed(&mut self, kind: ServiceKind, reason: CloseReason) {
        let s = self.service(kind);
        s.active -= 1;
        s.closed[reason as usize] += 1;
    }

    /// The sum over all services.
    pub fn total(&self) -> ServiceStats {
        let mut t = ServiceStats::default();
        for s in &self.services {
            t.accepted += s.accepted;
            t.active += s.active;
            for (sum, n) in t.refused.iter_mut().zip(s.refused) {
                *sum += n;
            }
            for (sum, n) in t.closed.iter_mut().zip(s.closed) {
                *sum += n;
            }
            t.bytes_in += s.bytes_in;
            t.bytes_out += s.bytes_out;
        }
        t
    }

    /// One line for the log at exit.
    pub fn summary(&self) -> String {
        let t = self.total();
        let closed: Vec<String> = CloseReason::ALL
            .iter()
            .map(|r| format!("{} {}", r.name(), t.closed[*r as usize]))
            .collect();
        let refused: u64 = t.refused.iter().sum();
        format!(
            "served {} connections ({} still open, {} refused), {} bytes in, {} bytes out; closed: {}",
            t.accepted,
            t.active,
            refused,
            t.bytes_in,
            t.bytes_out,
            closed.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_across_services() {
        let mut stats = Stats::default();
        stats.opened(ServiceKind::Echo);
        stats.opened(ServiceKind::Ack);
        stats.service(ServiceKind::Echo).bytes_in += 10;
        stats.service(ServiceKind::Ack).bytes_out += 5;
        stats.closed(ServiceKind::Echo, CloseReason::Error);
        let t = stats.total();
        assert_eq!(
            (t.accepted, t.active, t.bytes_in, t.bytes_out),
            (2, 1, 10, 5)
        );
        assert_eq!(t.closed[CloseReason::Error as usize], 1);
        stats.refused(ServiceKind::Ack, RefuseReason::PerIp);
        assert_eq!(stats.total().refused, [0, 1]);
        assert!(
            stats
                .summary()
                .contains("served 2 connections (1 still open, 1 refused)")
        );
    }
}
