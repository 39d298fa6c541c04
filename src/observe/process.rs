//! The server process's own figures for `/metrics`, read from `/proc` once
//! per scrape: resident and virtual memory, open and allowed descriptors,
//! CPU time, and when the process started. These are the series the
//! Prometheus client libraries export as `process_*`, so dashboards built
//! for them work here too.
//!
//! The parsers are pure and tested on captured text; [`ProcessFigures::read`]
//! is the only part that touches the file system. Nothing here is on a
//! connection's path: a scrape costs a few small reads and one directory
//! listing (`/proc/self/fd`, one entry per open descriptor).

use std::fs;

use crate::sys;

/// What one scrape reports about the process. A figure that cannot be read
/// is `None` and left out of the answer, never shown as 0.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessFigures {
    pub resident_memory_bytes: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub cpu_seconds: Option<f64>,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessFigures {
    /// Reads the figures of this process from `/proc`.
    pub fn read() -> ProcessFigures {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let boot = fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks = sys::clock_ticks_per_second();
        let times = stat_times(&stat);
        let boot_time = boot_time(&boot);
        ProcessFigures {
            resident_memory_bytes: status_kib(&status, "VmRSS:").map(|k| k * 1024),
            virtual_memory_bytes: status_kib(&status, "VmSize:").map(|k| k * 1024),
            open_fds: fs::read_dir("/proc/self/fd")
                .ok()
                // One entry is the directory being listed.
                .map(|d| (d.count() as u64).saturating_sub(1)),
            max_fds: sys::nofile_limit()
                .ok()
                .map(|(soft, _)| soft)
                .filter(|&soft| soft != u64::MAX),
            cpu_seconds: times
                .zip(ticks)
                .map(|((user, system, _), t)| (user + system) as f64 / t as f64),
            start_time_seconds: times
                .zip(ticks)
                .zip(boot_time)
                .map(|(((_, _, start), t), boot)| boot as f64 + start as f64 / t as f64),
        }
    }
}

/// A `NAME:  VALUE kB` line of `/proc/PID/status`, in KiB.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// User and system CPU time and the start time, in clock ticks, from
/// `/proc/PID/stat` (fields 14, 15 and 22). The command name (field 2) is
/// in parentheses and may hold spaces and parentheses itself, so fields are
/// counted from the last `)`.
fn stat_times(stat: &str) -> Option<(u64, u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (the state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)?, field(15)?, field(22)?))
}

/// The boot time, in seconds since the epoch, from `/proc/stat`'s `btime`.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_lines_give_memory_in_bytes() {
        let status = "Name:\ttcp-reactor\nVmSize:\t   12340 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(2048));
        assert_eq!(status_kib(status, "VmSize:"), Some(12340));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn a_command_name_with_parentheses_does_not_shift_the_fields() {
        // Fields 3..=22 after the name; utime 14 = 7, stime 15 = 3, start 22 = 900.
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 900 1000 200";
        assert_eq!(stat_times(stat), Some((7, 3, 900)));
        assert_eq!(stat_times("garbage"), None);
    }

    #[test]
    fn the_boot_time_is_read_from_btime() {
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        assert_eq!(boot_time("cpu 1 2 3\n"), None);
    }

    #[test]
    fn this_process_has_figures() {
        let figures = ProcessFigures::read();
        assert!(figures.resident_memory_bytes.is_some_and(|b| b > 0));
        assert!(figures.open_fds.is_some_and(|n| n >= 3));
        assert!(figures.start_time_seconds.is_some_and(|s| s > 1.0e9));
    }
}
