//! The load generator's memory, measured in-process: `bench::run` drives the
//! real echo server (a separate process, on port 0) and this process's own
//! anonymous memory is read from `/proc/self/status` around it.
//!
//! One test in this binary on purpose: another test running beside it
//! would allocate in the same process and blur the figure.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::Server;
use tcp_reactor::client::bench::{self, BenchConfig, BenchReport};

/// This process's resident anonymous memory (heap and stacks), in KiB.
/// Anonymous only: the resident share of the executable grows as more of
/// its code runs, by a megabyte or more between a short and a long run,
/// which says nothing about what the run keeps.
fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("/proc/self/status has an RssAnon line in kB")
}

/// A run of exactly `conns * rounds` round trips: the count is fixed by
/// `rounds`, so the figures do not depend on how fast the machine is;
/// `duration` only bounds a run on a machine far slower than expected.
fn run(addr: SocketAddr, conns: usize, rounds: u64) -> BenchReport {
    let report = bench::run(BenchConfig {
        addr: addr.into(),
        conns,
        size: 16,
        duration: Duration::from_secs(120),
        rounds: Some(rounds),
        short: false,
        rate: None,
    })
    .expect("the poller works");
    assert!(report.failures.is_empty(), "{report}");
    assert_eq!(report.round_trips, conns as u64 * rounds, "{report}");
    report
}

#[test]
fn regression_bench_memory_does_not_grow_with_the_number_of_round_trips() {
    let server = Server::start(&["-l", "127.0.0.1:0=echo"]);
    let addr = server.addr("echo");
    // The short run warms up everything a run allocates once; its report
    // stays alive, as the long one's will.
    let short = run(addr, 4, 100);
    let before = rss_anon_kib();
    // 100,000 samples: 1.6 MB as a list of 16-byte samples, which the
    // bound below would catch; the histogram stays at its fixed ~120 KiB.
    let long = run(addr, 4, 25_000);
    let after = rss_anon_kib();
    let grown = after.saturating_sub(before);
    assert!(
        grown < 512,
        "anonymous memory grew by {grown} KiB ({before} -> {after} KiB) over {} more round trips",
        long.round_trips - short.round_trips
    );
    assert!(long.percentile(0.5).is_some() && long.percentile(1.0) >= long.percentile(0.5));
}
