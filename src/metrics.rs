//! The server's figures in the Prometheus / OpenMetrics text format, for the
//! admin `metrics` command and `GET /metrics`. Aggregates only: no label per
//! connection, so the answer's size does not grow with the clients.
//!
//! The encoding is the official `prometheus-client` crate's; this module only
//! copies a [`Snapshot`] of the counters into a fresh registry per scrape.
//! Pure: no I/O here.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::stats::{CloseReason, RefuseReason, ServiceStats};

/// The media type of the answer (OpenMetrics 1.0, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The figures one scrape reports.
#[derive(Clone, Debug, Default)]
pub struct Snapshot<'a> {
    /// Counters of each running service, by name.
    pub services: Vec<(&'a str, &'a ServiceStats)>,
    /// Bytes held in connections' receive and send buffers, in all and in
    /// the fullest connection.
    pub user_buffer_bytes: u64,
    pub user_buffer_max_bytes: u64,
    /// Idle blocks parked in the two buffer pools.
    pub pool_blocks_recv: u64,
    pub pool_blocks_send: u64,
    /// Times a connection stopped reading because its send buffer was full.
    pub backpressure_pauses: u64,
    /// Chat members disconnected for not keeping up.
    pub slow_consumer_disconnects: u64,
    pub log_lines_dropped: u64,
    /// Turns of the poll loop, and readiness events they handled.
    pub poll_iterations: u64,
    pub poll_events: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    service: String,
    cause: String,
}

/// The answer to one scrape, in the OpenMetrics text format.
pub fn render(snapshot: &Snapshot<'_>) -> String {
    let mut registry = Registry::with_prefix("tcp_reactor");
    let active = Family::<ServiceLabel, Gauge>::default();
    let accepted = Family::<ServiceLabel, Counter>::default();
    let refused = Family::<CauseLabels, Counter>::default();
    let closed = Family::<CauseLabels, Counter>::default();
    let bytes_in = Family::<ServiceLabel, Counter>::default();
    let bytes_out = Family::<ServiceLabel, Counter>::default();
    for (name, s) in &snapshot.services {
        let service = ServiceLabel {
            service: name.to_string(),
        };
        active.get_or_create(&service).set(s.active as i64);
        accepted.get_or_create(&service).inc_by(s.accepted);
        bytes_in.get_or_create(&service).inc_by(s.bytes_in);
        bytes_out.get_or_create(&service).inc_by(s.bytes_out);
        for r in RefuseReason::ALL {
            let labels = CauseLabels {
                service: name.to_string(),
                cause: r.name().to_string(),
            };
            refused.get_or_create(&labels).inc_by(s.refused[r as usize]);
        }
        for r in CloseReason::ALL {
            let labels = CauseLabels {
                service: name.to_string(),
                cause: r.name().to_string(),
            };
            closed.get_or_create(&labels).inc_by(s.closed[r as usize]);
        }
    }
    registry.register("connections", "Open connections", active);
    registry.register("accepted", "Connections accepted", accepted);
    registry.register(
        "refused",
        "Connections refused at accept, by cause",
        refused,
    );
    registry.register("closed", "Connections closed, by cause", closed);
    registry.register("received_bytes", "Bytes read from clients", bytes_in);
    registry.register("sent_bytes", "Bytes written to clients", bytes_out);
    let gauge = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    let counter = |v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        c
    };
    registry.register(
        "user_buffer_bytes",
        "Bytes held in connections' receive and send buffers",
        gauge(snapshot.user_buffer_bytes),
    );
    registry.register(
        "user_buffer_max_bytes",
        "Bytes held in the buffers of the fullest connection",
        gauge(snapshot.user_buffer_max_bytes),
    );
    let pools = Family::<PoolLabel, Gauge>::default();
    pools
        .get_or_create(&PoolLabel {
            pool: "recv".to_string(),
        })
        .set(snapshot.pool_blocks_recv as i64);
    pools
        .get_or_create(&PoolLabel {
            pool: "send".to_string(),
        })
        .set(snapshot.pool_blocks_send as i64);
    registry.register(
        "pool_idle_blocks",
        "Idle buffer blocks kept for reuse",
        pools,
    );
    registry.register(
        "backpressure_pauses",
        "Times a connection stopped reading because its send buffer was full",
        counter(snapshot.backpressure_pauses),
    );
    registry.register(
        "slow_consumer_disconnects",
        "Chat members disconnected for not keeping up",
        counter(snapshot.slow_consumer_disconnects),
    );
    registry.register(
        "log_lines_dropped",
        "Log lines dropped while the log's reader was stalled or gone",
        counter(snapshot.log_lines_dropped),
    );
    registry.register(
        "poll_iterations",
        "Turns of the poll loop",
        counter(snapshot.poll_iterations),
    );
    registry.register(
        "poll_events",
        "Readiness events handled by the poll loop",
        counter(snapshot.poll_events),
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    encode(&mut out, &registry).expect("metrics encode into a String");
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_is_in_the_exposition_with_its_labels() {
        let echo = ServiceStats {
            accepted: 7,
            active: 2,
            bytes_in: 100,
            ..ServiceStats::default()
        };
        let text = render(&Snapshot {
            services: vec![("echo", &echo)],
            user_buffer_bytes: 4096,
            poll_iterations: 9,
            log_lines_dropped: 3,
            ..Snapshot::default()
        });
        for line in [
            "tcp_reactor_connections{service=\"echo\"} 2",
            "tcp_reactor_accepted_total{service=\"echo\"} 7",
            "tcp_reactor_received_bytes_total{service=\"echo\"} 100",
            "tcp_reactor_closed_total{service=\"echo\",cause=\"idle\"} 0",
            "tcp_reactor_user_buffer_bytes 4096",
            "tcp_reactor_poll_iterations_total 9",
            "tcp_reactor_log_lines_dropped_total 3",
            "tcp_reactor_pool_idle_blocks{pool=\"recv\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
