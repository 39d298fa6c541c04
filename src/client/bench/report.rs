//! What a bench run measured: [`BenchReport`], as text and as one JSON
//! line, and its [`Latencies`], a fixed-size histogram. No I/O here.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::BenchConfig;

/// What was measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub config: BenchConfig,
    /// From the first connect call until every connection was established.
    pub connect_time: Duration,
    /// Connections established (with `short`, over the whole run).
    pub connected: usize,
    /// From the end of connecting until the last connection finished.
    pub elapsed: Duration,
    pub round_trips: u64,
    /// Latency of every round trip.
    pub latencies: Latencies,
    /// With `short`, the time each connection took to be established; empty
    /// otherwise (the connect phase is `connect_time`).
    pub connects: Latencies,
    /// Connections that failed (refused, reset, wrong bytes echoed).
    pub failures: Vec<String>,
}

impl BenchReport {
    /// The `p`th percentile latency (0.0 to 1.0).
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        self.latencies.percentile(p)
    }

    /// Round trips per second over the measuring time (with `short`, also
    /// connections per second: one round trip each).
    pub fn rate(&self) -> f64 {
        self.round_trips as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Bytes echoed, each way.
    pub fn bytes(&self) -> u64 {
        self.round_trips * self.config.size as u64
    }

    /// Every figure of the report as one JSON object, on one line: rates per
    /// second, latencies in microseconds (null when nothing was measured),
    /// bytes each way, the number of failed connections and the first few
    /// reasons.
    pub fn to_json(&self) -> String {
        let c = &self.config;
        let mut report = serde_json::json!({
            "addr": c.addr.to_string(),
            "mode": if c.short { "short" } else { "echo" },
            "conns": c.conns,
            "size": c.size,
            "rate": c.rate,
            "connect_ms": ms(self.connect_time),
            "connected": self.connected,
            "secs": self.elapsed.as_secs_f64(),
            "round_trips": self.round_trips,
            "msgs_per_sec": self.rate(),
            "bytes": self.bytes(),
            "latency_us": self.latencies.summary_us(),
            "errors": self.failures.len(),
            "failures": self.failures.iter().take(5).collect::<Vec<_>>(),
        });
        if c.short {
            report["conns_per_sec"] = self.rate().into();
            report["connect_latency_us"] = self.connects.summary_us();
        }
        report.to_string()
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        if c.short {
            return self.fmt_short(f);
        }
        write!(
            f,
            "bench {}: {} connections, {}-byte messages",
            c.addr, c.conns, c.size
        )?;
        match c.rate {
            Some(rate) => writeln!(f, ", paced at {rate:.0} round trips/s")?,
            None => writeln!(f)?,
        }
        writeln!(
            f,
            "connected {} in {:.1} ms",
            self.connected,
            ms(self.connect_time)
        )?;
        let mib = (self.round_trips as f64 * c.size as f64) / (1024.0 * 1024.0);
        writeln!(
            f,
            "round trips: {} in {:.2} s = {:.0}/s, {:.1} MiB/s each way",
            self.round_trips,
            self.elapsed.as_secs_f64(),
            self.rate(),
            mib / self.elapsed.as_secs_f64().max(1e-9)
        )?;
        write_percentiles(f, "latency", &self.latencies)?;
        self.fmt_failures(f)
    }
}

impl BenchReport {
    /// The text report of a `short` run.
    fn fmt_short(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "bench {}: {} loops of short connections (connect, one {}-byte round trip, close)",
            c.addr, c.conns, c.size
        )?;
        writeln!(
            f,
            "connections: {} in {:.2} s = {:.0}/s",
            self.round_trips,
            self.elapsed.as_secs_f64(),
            self.rate()
        )?;
        write_percentiles(f, "connect latency", &self.connects)?;
        write_percentiles(f, "round-trip latency", &self.latencies)?;
        self.fmt_failures(f)
    }

    fn fmt_failures(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "failed connections: {}", self.failures.len())?;
        for failure in self.failures.iter().take(5) {
            write!(f, "\n  {failure}")?;
        }
        if self.connected > 0
            && self.round_trips == 0
            && self.failures.len() >= self.connected
            && self
                .failures
                .iter()
                .all(|failure| failure.contains(WRONG_BYTES))
        {
            write!(
                f,
                "\nevery connection had wrong bytes echoed: is {} an echo service?",
                self.config.addr
            )?;
        }
        Ok(())
    }
}

/// `NAME: p50 … ms, p90 … ms, p99 … ms, max … ms` and a newline; nothing if
/// nothing was recorded.
fn write_percentiles(f: &mut fmt::Formatter<'_>, name: &str, l: &Latencies) -> fmt::Result {
    if let (Some(p50), Some(p90), Some(p99), Some(max)) = (
        l.percentile(0.5),
        l.percentile(0.9),
        l.percentile(0.99),
        l.percentile(1.0),
    ) {
        writeln!(
            f,
            "{name}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            ms(p50),
            ms(p90),
            ms(p99),
            ms(max)
        )?;
    }
    Ok(())
}

/// How a connection that got other bytes back than it sent fails.
pub(super) const WRONG_BYTES: &str = "wrong bytes echoed";

/// Round-trip latencies, counted in a histogram whose size is fixed when it
/// is made: recording costs no memory, however many round trips a run does
/// (a list of samples took 16 bytes each, and a long run ran out of memory).
#[derive(Clone, Debug)]
pub struct Latencies {
    /// Counts per latency range, in microseconds. Invariant: its storage is
    /// allocated in `new` and never grows (values above the highest
    /// trackable one are clamped to it, never resized for).
    histogram: Histogram<u64>,
}

impl Latencies {
    /// Lowest latency told apart, in microseconds: the report shows
    /// milliseconds with three decimals, so a finer unit would not show,
    /// and a loopback round trip is tens of microseconds.
    pub const LOWEST_US: u64 = 1;
    /// Highest latency tracked, 60 s in microseconds; a slower round trip
    /// counts as 60 s. Enough for any server that is not stalled, and the
    /// table costs about 120 KiB.
    pub const HIGHEST_US: u64 = 60_000_000;
    /// Significant digits kept: a latency is reported within 0.1 % (and
    /// exactly, to the microsecond, below 2.048 ms), finer than the run to
    /// run noise of any benchmark.
    pub const SIGNIFICANT_DIGITS: u8 = 3;

    /// An empty record.
    pub fn new() -> Latencies {
        let histogram =
            Histogram::new_with_bounds(Self::LOWEST_US, Self::HIGHEST_US, Self::SIGNIFICANT_DIGITS)
                // The bounds are constants that satisfy hdrhistogram's
                // rules: low >= 1, high >= 2 * low, digits <= 5.
                .expect("valid histogram bounds");
        Latencies { histogram }
    }

    /// Counts one round trip of `latency`.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(us);
    }

    /// Round trips recorded.
    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// The `p`th percentile (0.0 to 1.0; 1.0 is the maximum), to the
    /// histogram's precision; `None` if nothing was recorded.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.is_empty() {
            return None;
        }
        Some(Duration::from_micros(self.histogram.value_at_quantile(p)))
    }

    /// p50, p90, p99 and max in whole microseconds, as JSON; null if
    /// nothing was recorded.
    pub fn summary_us(&self) -> serde_json::Value {
        let us = |p| self.percentile(p).map(|d| d.as_micros() as u64);
        match (us(0.5), us(0.9), us(0.99), us(1.0)) {
            (Some(p50), Some(p90), Some(p99), Some(max)) => {
                serde_json::json!({ "p50": p50, "p90": p90, "p99": p99, "max": max })
            }
            _ => serde_json::Value::Null,
        }
    }

    /// Counters the histogram holds: fixed by the bounds, whatever was
    /// recorded. Each is a `u64`.
    pub fn counters(&self) -> usize {
        self.histogram.distinct_values()
    }
}

impl Default for Latencies {
    fn default() -> Latencies {
        Latencies::new()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_latencies_hold_ten_million_samples_in_fixed_storage() {
        let mut latencies = Latencies::new();
        let counters = latencies.counters();
        // The fixed table: about 120 KiB of u64 counters.
        assert!(counters * 8 < 256 * 1024, "{counters} counters");
        for i in 0..10_000_000u64 {
            latencies.record(Duration::from_micros(10 + i % 5_000));
        }
        assert_eq!(latencies.len(), 10_000_000);
        assert_eq!(latencies.counters(), counters);
    }

    #[test]
    fn percentiles_are_exact_below_two_milliseconds() {
        let mut latencies = Latencies::new();
        assert_eq!(latencies.percentile(0.5), None);
        for us in 1..=1000 {
            latencies.record(Duration::from_micros(us));
        }
        let p = |q| latencies.percentile(q).unwrap();
        assert_eq!(p(0.5), Duration::from_micros(500));
        assert_eq!(p(0.9), Duration::from_micros(900));
        assert_eq!(p(0.99), Duration::from_micros(990));
        assert_eq!(p(1.0), Duration::from_micros(1000));
    }

    #[test]
    fn percentiles_stay_within_a_tenth_of_a_percent_and_clamp_at_the_top() {
        let mut latencies = Latencies::new();
        latencies.record(Duration::from_millis(1234));
        let got = latencies.percentile(1.0).unwrap().as_secs_f64();
        assert!((got - 1.234).abs() <= 1.234e-3, "{got}");
        latencies.record(Duration::from_secs(3600));
        let top = latencies.percentile(1.0).unwrap().as_secs_f64();
        assert!((top - 60.0).abs() <= 60e-3, "{top}");
        assert_eq!(latencies.len(), 2);
    }
}
