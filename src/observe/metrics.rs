//! The server's figures for the admin `metrics` command and `GET /metrics`,
//! in either of the two text formats scrapers read: OpenMetrics 1.0, or the
//! older Prometheus text format 0.0.4, which many tools still speak only.
//! Aggregates only: no label per connection, so the answer's size does not
//! grow with the clients.
//!
//! The encoding is the official `prometheus-client` crate's (OpenMetrics);
//! this module copies a [`Snapshot`] of the counters into a fresh registry
//! per scrape, and rewrites the answer into format 0.0.4 when that is
//! asked for (see [`to_text_format`]). Series come in a fixed order, so two
//! scrapes can be compared line by line. Pure: no I/O here.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::observe::process::ProcessFigures;
use crate::observe::stats::{CloseReason, RefuseReason, ServiceStats};

/// The two text formats an answer can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0: counters are families named without `_total`, and
    /// the answer ends with `# EOF`.
    OpenMetrics,
    /// The Prometheus text format 0.0.4: a counter's HELP and TYPE lines
    /// name it with its `_total`, and there is no `# EOF`. What a scraper
    /// gets unless it asks for OpenMetrics.
    Text,
}

impl Format {
    /// The format an HTTP scraper asked for with its `Accept` header (its
    /// value, or `None` without one): OpenMetrics when it names
    /// `application/openmetrics-text` (Prometheus itself does), otherwise
    /// the text format 0.0.4, which every scraper reads.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let wants_open_metrics = accept.is_some_and(|value| {
            value.split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or("");
                let refused = parts.any(|p| {
                    p.strip_prefix("q=")
                        .is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0))
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants_open_metrics {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The answer's media type, for the `Content-Type` header.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

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
    /// The process's memory, descriptors and CPU time.
    pub process: ProcessFigures,
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

/// The answer to one scrape, in `format`.
pub fn render(snapshot: &Snapshot<'_>, format: Format) -> String {
    let mut root = Registry::default();
    register_process(&mut root, &snapshot.process);
    let registry = root.sub_registry_with_prefix("tcp_reactor");
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
    encode(&mut out, &root).expect("metrics encode into a String");
    let out = in_stable_order(&out);
    match format {
        Format::OpenMetrics => out,
        Format::Text => to_text_format(&out),
    }
}

/// The `process_*` series, under the names the Prometheus client libraries
/// use; a figure that could not be read is left out.
fn register_process(registry: &mut Registry, process: &ProcessFigures) {
    let gauges = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            process.resident_memory_bytes.map(|b| b as f64),
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            process.virtual_memory_bytes.map(|b| b as f64),
        ),
        (
            "process_open_fds",
            "Number of open file descriptors",
            process.open_fds.map(|n| n as f64),
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors",
            process.max_fds.map(|n| n as f64),
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            process.start_time_seconds,
        ),
    ];
    for (name, help, value) in gauges {
        if let Some(value) = value {
            let gauge = Gauge::<f64, AtomicU64>::default();
            gauge.set(value);
            registry.register(name, help, gauge);
        }
    }
    if let Some(seconds) = process.cpu_seconds {
        let counter = Counter::<f64, AtomicU64>::default();
        counter.inc_by(seconds);
        registry.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            counter,
        );
    }
}

/// `exposition` with the samples of each family sorted: the encoder walks
/// a family's series in hash order, which changes from scrape to scrape.
/// Families keep the order they were registered in.
fn in_stable_order(exposition: &str) -> String {
    let mut out = String::with_capacity(exposition.len());
    let mut samples: Vec<&str> = Vec::new();
    for line in exposition.lines() {
        if line.starts_with('#') {
            samples.sort_unstable();
            for sample in samples.drain(..) {
                out.push_str(sample);
                out.push('\n');
            }
            out.push_str(line);
        } else {
            samples.push(line);
            continue;
        }
        out.push('\n');
    }
    samples.sort_unstable();
    for sample in samples {
        out.push_str(sample);
        out.push('\n');
    }
    out
}

/// An OpenMetrics exposition rewritten in the Prometheus text format 0.0.4.
/// The samples are the same lines; what differs is the metadata: a
/// counter's family is named with its `_total` suffix in 0.0.4 (a reader of
/// 0.0.4 given the OpenMetrics names sees an empty counter family and one
/// untyped family per sample), `unknown` is `untyped`, and there are no
/// `# UNIT` or `# EOF` lines.
pub fn to_text_format(open_metrics: &str) -> String {
    let mut counters: Vec<&str> = Vec::new();
    for line in open_metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.push(name);
        }
    }
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(&name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(if tail == "unknown" { "untyped" } else { tail });
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
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
        let text = render(
            &Snapshot {
                services: vec![("echo", &echo)],
                user_buffer_bytes: 4096,
                poll_iterations: 9,
                log_lines_dropped: 3,
                ..Snapshot::default()
            },
            Format::OpenMetrics,
        );
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

    fn two_services() -> (ServiceStats, ServiceStats) {
        let echo = ServiceStats {
            accepted: 7,
            bytes_in: 100,
            ..ServiceStats::default()
        };
        let chat = ServiceStats {
            accepted: 2,
            ..ServiceStats::default()
        };
        (echo, chat)
    }

    #[test]
    fn series_come_in_the_same_order_every_scrape() {
        let (echo, chat) = two_services();
        let snapshot = Snapshot {
            services: vec![("echo", &echo), ("chat", &chat)],
            ..Snapshot::default()
        };
        let first = render(&snapshot, Format::Text);
        // The encoder's hash order differs between families built anew;
        // a few dozen scrapes would show any difference.
        for _ in 0..32 {
            assert_eq!(render(&snapshot, Format::Text), first);
        }
        let closed: Vec<&str> = first
            .lines()
            .filter(|l| l.starts_with("tcp_reactor_closed_total"))
            .collect();
        let mut sorted = closed.clone();
        sorted.sort_unstable();
        assert_eq!(closed, sorted);
    }

    #[test]
    fn the_text_format_names_counters_with_their_total() {
        let (echo, _) = two_services();
        let text = render(
            &Snapshot {
                services: vec![("echo", &echo)],
                ..Snapshot::default()
            },
            Format::Text,
        );
        assert!(
            text.contains("# TYPE tcp_reactor_accepted_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP tcp_reactor_accepted_total Connections accepted"),
            "{text}"
        );
        assert!(text.contains("# TYPE tcp_reactor_connections gauge\n"));
        assert!(text.contains("tcp_reactor_accepted_total{service=\"echo\"} 7\n"));
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# UNIT"));
    }

    #[test]
    fn process_figures_are_exported_under_the_usual_names() {
        let text = render(
            &Snapshot {
                process: ProcessFigures {
                    resident_memory_bytes: Some(4096),
                    open_fds: Some(9),
                    cpu_seconds: Some(1.5),
                    ..ProcessFigures::default()
                },
                ..Snapshot::default()
            },
            Format::Text,
        );
        for line in [
            "process_resident_memory_bytes 4096.0",
            "process_open_fds 9.0",
            "process_cpu_seconds_total 1.5",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(
            !text.contains("process_max_fds"),
            "unknown figures are left out"
        );
    }

    #[test]
    fn the_accept_header_chooses_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
        assert_eq!(Format::from_accept(None), Format::Text);
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
    }
}
