//! Counters the server keeps: per service, what was accepted, refused and
//! closed (by cause), and the bytes moved; the names they are kept under
//! ([`ServiceKind`], [`CloseReason`], [`RefuseReason`]); and the `stats`
//! answer they make. Pure: no I/O here, and nothing above `observe`
//! imported ([`ServiceKind`] lives here, below the services, so the
//! counters need not import them).

use std::fmt;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

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

/// One service's counters as `stats json` shows them, causes in the order
/// of their enums.
struct ServiceJson<'a>(&'a ServiceStats);

impl Serialize for ServiceJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let s = self.0;
        let mut map = serializer.serialize_map(Some(6))?;
        map.serialize_entry("accepted", &s.accepted)?;
        map.serialize_entry("active", &s.active)?;
        map.serialize_entry(
            "refused",
            &Causes(
                RefuseReason::ALL
                    .iter()
                    .map(|r| (r.name().replace('-', "_"), s.refused[*r as usize]))
                    .collect(),
            ),
        )?;
        map.serialize_entry(
            "closed",
            &Causes(
                CloseReason::ALL
                    .iter()
                    .map(|r| (r.name().to_string(), s.closed[*r as usize]))
                    .collect(),
            ),
        )?;
        map.serialize_entry("bytes_in", &s.bytes_in)?;
        map.serialize_entry("bytes_out", &s.bytes_out)?;
        map.end()
    }
}

/// Counts by cause, as a JSON object in the given order.
struct Causes(Vec<(String, u64)>);

impl Serialize for Causes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// The whole `stats json` answer.
struct StatsJson<'a> {
    uptime: Duration,
    services: &'a [(&'a str, &'a ServiceStats)],
    total: &'a ServiceStats,
    log_lines_dropped: u64,
    /// The cap in force (`--max-conns`, or lower if the descriptor limit
    /// could not hold it); `None` for no cap.
    max_conns: Option<usize>,
}

impl Serialize for StatsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("uptime_secs", &self.uptime.as_secs_f64())?;
        map.serialize_entry("services", &ServicesJson(self.services))?;
        map.serialize_entry("total", &ServiceJson(self.total))?;
        map.serialize_entry("log_lines_dropped", &self.log_lines_dropped)?;
        map.serialize_entry("max_conns", &self.max_conns)?;
        map.end()
    }
}

struct ServicesJson<'a>(&'a [(&'a str, &'a ServiceStats)]);

impl Serialize for ServicesJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, s)| (*name, ServiceJson(s))))
    }
}

/// The `stats` answer: a table, or one JSON line. `services` are the names
/// and counters of the services this server runs; `max_conns` the
/// connection cap in force (`None`: no cap).
pub fn render_stats(
    stats: &Stats,
    services: &[(&str, &ServiceStats)],
    uptime: Duration,
    log_lines_dropped: u64,
    max_conns: Option<usize>,
    json: bool,
) -> String {
    let total = stats.total();
    if json {
        let answer = StatsJson {
            uptime,
            services,
            total: &total,
            log_lines_dropped,
            max_conns,
        };
        // Plain numbers and strings: serialising into a String cannot fail.
        let mut line = serde_json::to_string(&answer).expect("stats serialise");
        line.push('\n');
        return line;
    }
    let cap = max_conns.map_or("none".to_string(), |n| n.to_string());
    let mut out = format!(
        "uptime {:.1} s, log lines dropped {log_lines_dropped}, max-conns {cap}\n",
        uptime.as_secs_f64()
    );
    let mut header = format!("{:<8} {:>9} {:>7}", "service", "accepted", "active");
    for r in RefuseReason::ALL {
        let _ = write!(header, " {:>14}", format!("refused:{}", r.name()));
    }
    for r in CloseReason::ALL {
        let _ = write!(header, " {:>15}", format!("closed:{}", r.name()));
    }
    let _ = writeln!(out, "{header} {:>13} {:>13}", "bytes_in", "bytes_out");
    for (name, s) in services.iter().copied().chain([("total", &total)]) {
        let _ = write!(out, "{name:<8} {:>9} {:>7}", s.accepted, s.active);
        for r in RefuseReason::ALL {
            let _ = write!(out, " {:>14}", s.refused[r as usize]);
        }
        for r in CloseReason::ALL {
            let _ = write!(out, " {:>15}", s.closed[r as usize]);
        }
        let _ = writeln!(out, " {:>13} {:>13}", s.bytes_in, s.bytes_out);
    }
    out
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

    #[test]
    fn stats_show_each_service_and_the_total() {
        let mut stats = Stats::default();
        stats.opened(ServiceKind::Echo);
        stats.refused(ServiceKind::Echo, RefuseReason::Full);
        stats.closed(ServiceKind::Echo, CloseReason::Idle);
        let echo = stats.services[ServiceKind::Echo.index()].clone();
        let json = render_stats(
            &stats,
            &[("echo", &echo)],
            Duration::from_secs(2),
            0,
            Some(9),
            true,
        );
        assert_eq!(json.lines().count(), 1);
        assert!(json.contains("\"echo\":{\"accepted\":1,\"active\":0,\"refused\":{\"full\":1,\"per_ip\":0},\"closed\":{\"peer\":0,\"idle\":1"), "{json}");
        assert!(json.contains("\"total\":{\"accepted\":1"), "{json}");
        assert!(json.contains("\"max_conns\":9}"), "{json}");
        let text = render_stats(
            &stats,
            &[("echo", &echo)],
            Duration::from_secs(2),
            0,
            None,
            false,
        );
        assert!(text.lines().any(|l| l.starts_with("echo ")));
        assert!(text.lines().any(|l| l.starts_with("total ")));
        assert!(text.contains("closed:idle"));
        assert!(text.starts_with("uptime 2.0 s, log lines dropped 0, max-conns none\n"));
    }
}
