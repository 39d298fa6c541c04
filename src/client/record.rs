//! `tcp-reactor record`: sample where every byte of some connections sits,
//! over time, into a CSV file (one row per connection per snapshot).
//!
//! It asks the admin service for `watch MS` and turns each JSON snapshot
//! into rows: the time since the first snapshot (by the server's own clock,
//! `uptime_secs`, so a late read on our side does not skew it), the
//! connection's identity, state and `limit`, every buffer and kernel queue
//! figure and every TCP_INFO field. A figure the server gave as `null` (the
//! kernel did not say) is an empty cell, never 0.
//!
//! The parsing ([`Snapshot`], [`rows`]) is pure; [`record`] does the I/O.
//! The file is created only after a first snapshot has parsed, so an
//! address that is not an admin service is an error and an existing file
//! is left as it was. Rows are flushed after each snapshot and the loop
//! stops on SIGINT or SIGTERM, at `--secs`, or when the server closes, so
//! the file always ends at a whole snapshot. A `--conn` id the first
//! snapshot does not list is a warning. Plotting is in [`crate::plot`],
//! not here.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::warn;
use serde::{Deserialize, Serialize};

use super::snapshot::{Row, Snapshot};
use super::{ClientError, Target, connect, socket_error};

/// Longest snapshot line accepted: 100,000 connections (the most `bench`
/// opens) at about 900 bytes a row is 90 MB. A peer that sends more without
/// a newline is not an admin service, and must not grow our memory without
/// bound.
pub const MAX_LINE: u64 = 128 * 1024 * 1024;

/// How often the read loop wakes to look at the deadline and the signal
/// flag when no snapshot is arriving (a snapshot is at most 60 s apart).
const POLL: Duration = Duration::from_millis(100);

/// What to record, and where to.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// An admin listener.
    pub admin: Target,
    /// Connection ids to record; empty means every connection but the
    /// admin ones. Ids are the server's slab keys, so a closed connection's
    /// id can be given to a newer one: rows carry the peer too.
    pub conns: Vec<usize>,
    /// Milliseconds between snapshots (the admin service takes 50..=60000).
    pub interval_ms: u64,
    /// How long to record.
    pub duration: Duration,
    pub output: PathBuf,
}

/// Why the recording ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Deadline,
    ServerClosed,
    Signal,
}

/// A finished recording.
#[derive(Clone, Debug)]
pub struct RecordSummary {
    pub snapshots: u64,
    pub rows: u64,
    /// Distinct (id, peer) pairs seen.
    pub connections: usize,
    pub stop: Stop,
    pub output: PathBuf,
}

impl std::fmt::Display for RecordSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.stop {
            Stop::Deadline => "time was up",
            Stop::ServerClosed => "the server closed the connection",
            Stop::Signal => "interrupted",
        };
        write!(
            f,
            "recorded {} rows ({} snapshots, {} connections) to '{}'; stopped: {why}",
            self.rows,
            self.snapshots,
            self.connections,
            self.output.display()
        )
    }
}

/// One CSV row: one connection at one snapshot, flat (TCP_INFO fields
/// prefixed `tcp_`). The field order is the column order; `None` is an
/// empty cell. [`crate::plot`] reads the same struct back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the recording's first snapshot.
    pub time_secs: f64,
    pub id: usize,
    pub peer: String,
    pub service: String,
    pub state: String,
    pub limit: String,
    pub age_secs: f64,
    pub idle_secs: f64,
    pub recv_buf_used: u64,
    pub recv_buf_capacity: u64,
    pub send_buf_used: u64,
    pub send_buf_capacity: u64,
    pub kernel_recv_queue: Option<u64>,
    pub kernel_send_queue: Option<u64>,
    pub kernel_send_unsent: Option<u64>,
    pub so_rcvbuf: Option<u64>,
    pub so_sndbuf: Option<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub tcp_rtt_us: Option<u64>,
    pub tcp_rttvar_us: Option<u64>,
    pub tcp_snd_cwnd: Option<u64>,
    pub tcp_snd_ssthresh: Option<u64>,
    pub tcp_snd_mss: Option<u64>,
    pub tcp_snd_wnd: Option<u64>,
    pub tcp_unacked: Option<u64>,
    pub tcp_total_retrans: Option<u64>,
    pub tcp_notsent_bytes: Option<u64>,
    pub tcp_bytes_acked: Option<u64>,
    pub tcp_busy_time_us: Option<u64>,
    pub tcp_rwnd_limited_us: Option<u64>,
    pub tcp_sndbuf_limited_us: Option<u64>,
}

/// The CSV header: [`Sample`]'s fields, in order (a test holds them equal).
/// Written before the first row, so a recording of nothing still says what
/// its columns are.
pub const HEADER: [&str; 32] = [
    "time_secs",
    "id",
    "peer",
    "service",
    "state",
    "limit",
    "age_secs",
    "idle_secs",
    "recv_buf_used",
    "recv_buf_capacity",
    "send_buf_used",
    "send_buf_capacity",
    "kernel_recv_queue",
    "kernel_send_queue",
    "kernel_send_unsent",
    "so_rcvbuf",
    "so_sndbuf",
    "bytes_in",
    "bytes_out",
    "tcp_rtt_us",
    "tcp_rttvar_us",
    "tcp_snd_cwnd",
    "tcp_snd_ssthresh",
    "tcp_snd_mss",
    "tcp_snd_wnd",
    "tcp_unacked",
    "tcp_total_retrans",
    "tcp_notsent_bytes",
    "tcp_bytes_acked",
    "tcp_busy_time_us",
    "tcp_rwnd_limited_us",
    "tcp_sndbuf_limited_us",
];

/// Which connections a recording keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every connection but the admin service's (the recorder's own among
    /// them).
    AllButAdmin,
    Ids(BTreeSet<usize>),
}

impl Selection {
    pub fn new(ids: &[usize]) -> Selection {
        if ids.is_empty() {
            Selection::AllButAdmin
        } else {
            Selection::Ids(ids.iter().copied().collect())
        }
    }

    fn keeps(&self, client: &Row) -> bool {
        match self {
            Selection::AllButAdmin => client.service != "admin",
            Selection::Ids(ids) => usize::try_from(client.id).is_ok_and(|id| ids.contains(&id)),
        }
    }
}

/// The rows of one snapshot, taken `uptime_secs - start` seconds into the
/// recording (`start`: the first snapshot's uptime), for the connections
/// `selection` keeps, in the server's order.
pub fn rows(snapshot: &Snapshot, start: f64, selection: &Selection) -> Vec<Sample> {
    let time = (snapshot.stats.uptime_secs - start).max(0.0);
    snapshot
        .clients
        .iter()
        .filter(|c| selection.keeps(c))
        .map(|c| {
            let tcp = c.tcp.unwrap_or_default();
            Sample {
                // Microseconds are as fine as the server's figures mean.
                time_secs: (time * 1e6).round() / 1e6,
                id: usize::try_from(c.id).unwrap_or(usize::MAX),
                peer: c.peer.clone(),
                service: c.service.clone(),
                state: c.state.clone(),
                limit: c.limit.clone(),
                age_secs: c.age_secs,
                idle_secs: c.idle_secs,
                recv_buf_used: c.recv_buf_used,
                recv_buf_capacity: c.recv_buf_capacity,
                send_buf_used: c.send_buf_used,
                send_buf_capacity: c.send_buf_capacity,
                kernel_recv_queue: c.kernel_recv_queue,
                kernel_send_queue: c.kernel_send_queue,
                kernel_send_unsent: c.kernel_send_unsent,
                so_rcvbuf: c.so_rcvbuf,
                so_sndbuf: c.so_sndbuf,
                bytes_in: c.bytes_in,
                bytes_out: c.bytes_out,
                tcp_rtt_us: tcp.rtt_us,
                tcp_rttvar_us: tcp.rttvar_us,
                tcp_snd_cwnd: tcp.snd_cwnd,
                tcp_snd_ssthresh: tcp.snd_ssthresh,
                tcp_snd_mss: tcp.snd_mss,
                tcp_snd_wnd: tcp.snd_wnd,
                tcp_unacked: tcp.unacked,
                tcp_total_retrans: tcp.total_retrans,
                tcp_notsent_bytes: tcp.notsent_bytes,
                tcp_bytes_acked: tcp.bytes_acked,
                tcp_busy_time_us: tcp.busy_time_us,
                tcp_rwnd_limited_us: tcp.rwnd_limited_us,
                tcp_sndbuf_limited_us: tcp.sndbuf_limited_us,
            }
        })
        .collect()
}

/// Parses one `watch` line. An `ERR ...` line or anything else that is not
/// a snapshot means the address is not an admin service (or refused us).
pub fn parse_snapshot(line: &[u8]) -> Result<Snapshot, ClientError> {
    serde_json::from_slice(line).map_err(|e| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        if text.starts_with("ERR") {
            ClientError::new(format!("the admin service said: {text}"))
        } else {
            let shown: String = text.chars().take(60).collect();
            ClientError::new(format!(
                "not an admin watch snapshot ({e}): '{shown}'; is this an admin address?"
            ))
        }
    })
}

/// A CSV writer on `out` with the header already written.
pub fn csv_writer<W: Write>(out: W) -> csv::Result<csv::Writer<W>> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(out);
    writer.write_record(HEADER)?;
    Ok(writer)
}

/// How long the first snapshot may take before the address is judged not
/// to be an admin service (a chat or ack service, say, reads `watch` as a
/// message and never answers). An admin service sends its first snapshot at
/// once; one with many connections renders it in steps between its other
/// work, which `top` allows 10 s for too.
pub const FIRST_SNAPSHOT: Duration = Duration::from_secs(10);

/// Records `opts.admin` into `opts.output` until the deadline, the server
/// closes, or SIGINT/SIGTERM.
///
/// The output is created (or replaced) only once a first snapshot has
/// parsed: an address that is not an admin service, or one that sends
/// nothing, is an error and leaves an existing file as it was.
pub fn record(opts: &RecordOptions) -> Result<RecordSummary, ClientError> {
    let stop_signal = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop_signal))
            .map_err(|e| ClientError::new(format!("cannot install a signal handler: {e}")))?;
    }
    let started = Instant::now();
    let deadline = started + opts.duration;
    let first_deadline = started + FIRST_SNAPSHOT;
    let mut stream = connect(&opts.admin)?;
    stream
        .write_all(format!("watch {}\n", opts.interval_ms).as_bytes())
        .map_err(|e| socket_error(&e))?;
    // Created at the first snapshot.
    let mut csv: Option<csv::Writer<io::BufWriter<File>>> = None;
    let mut reader = BufReader::new(stream);
    let selection = Selection::new(&opts.conns);
    let mut line = Vec::new();
    let mut start = None;
    let mut seen = BTreeSet::new();
    let (mut snapshots, mut written) = (0u64, 0u64);
    let stop = loop {
        if stop_signal.load(Ordering::Relaxed) {
            break Stop::Signal;
        }
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            break Stop::Deadline;
        }
        if csv.is_none() && now >= first_deadline {
            break Stop::Deadline;
        }
        reader
            .get_ref()
            .set_read_timeout(Some(left.min(POLL)))
            .map_err(|e| socket_error(&e))?;
        // A timeout keeps what was read of the line in `line`; the next
        // call goes on from there.
        let room = MAX_LINE.saturating_sub(line.len() as u64);
        match (&mut reader).take(room).read_until(b'\n', &mut line) {
            Ok(0) if line.is_empty() => break Stop::ServerClosed,
            Ok(_) if line.last() == Some(&b'\n') => {}
            Ok(_) if line.len() as u64 >= MAX_LINE => {
                return Err(ClientError::new(format!(
                    "a snapshot line is longer than {MAX_LINE} bytes"
                )));
            }
            // Closed in the middle of a line: that snapshot is incomplete.
            Ok(_) => break Stop::ServerClosed,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(socket_error(&e)),
        }
        let snapshot = parse_snapshot(&line)?;
        line.clear();
        let csv = match &mut csv {
            Some(csv) => csv,
            None => {
                warn_unknown(&opts.conns, &snapshot);
                let file = File::create(&opts.output).map_err(|e| file_error(&opts.output, &e))?;
                csv.insert(
                    csv_writer(io::BufWriter::new(file)).map_err(|e| csv_error(&opts.output, e))?,
                )
            }
        };
        let start = *start.get_or_insert(snapshot.stats.uptime_secs);
        for row in rows(&snapshot, start, &selection) {
            seen.insert((row.id, row.peer.clone()));
            csv.serialize(&row)
                .map_err(|e| csv_error(&opts.output, e))?;
            written += 1;
        }
        snapshots += 1;
        // Whole snapshots on disk: a recording cut short by a kill still
        // parses up to its last flush.
        csv.flush().map_err(|e| file_error(&opts.output, &e))?;
    };
    let Some(mut csv) = csv else {
        return Err(no_snapshot(opts, stop, started.elapsed()));
    };
    csv.flush().map_err(|e| file_error(&opts.output, &e))?;
    Ok(RecordSummary {
        snapshots,
        rows: written,
        connections: seen.len(),
        stop,
        output: opts.output.clone(),
    })
}

/// Warns of each `--conn` id the first snapshot does not list: the user
/// most likely mistyped it, or it closed, and its rows would be none.
fn warn_unknown(ids: &[usize], snapshot: &Snapshot) {
    let listed: BTreeSet<u64> = snapshot.clients.iter().map(|c| c.id).collect();
    for id in ids {
        if !listed.contains(&(*id as u64)) {
            let now: Vec<String> = listed.iter().map(u64::to_string).collect();
            warn!(
                "--conn {id}: no such connection now (ids: {}); it gets rows only if a connection with that id opens",
                if now.is_empty() {
                    "none".to_string()
                } else {
                    now.join(", ")
                }
            );
        }
    }
}

/// The error for a recording that ended before any snapshot came.
fn no_snapshot(opts: &RecordOptions, stop: Stop, waited: Duration) -> ClientError {
    let admin = &opts.admin;
    ClientError::new(match stop {
        Stop::ServerClosed => format!(
            "{admin} closed the connection without a snapshot: is this an admin address? ('{}' not written)",
            opts.output.display()
        ),
        Stop::Deadline => format!(
            "no snapshot from {admin} in {:.1} s: is this an admin address? ('{}' not written)",
            waited.as_secs_f64(),
            opts.output.display()
        ),
        Stop::Signal => format!(
            "interrupted before the first snapshot; '{}' not written",
            opts.output.display()
        ),
    })
}

fn file_error(path: &Path, e: &io::Error) -> ClientError {
    ClientError::new(format!("cannot write '{}': {e}", path.display()))
}

fn csv_error(path: &Path, e: csv::Error) -> ClientError {
    ClientError::new(format!("cannot write '{}': {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT: &str = r#"{"stats":{"uptime_secs":12.5,"services":{}},"clients":[
        {"id":3,"peer":"127.0.0.1:5000","service":"echo","age_secs":1.5,"idle_secs":0.25,
         "recv_buf_used":0,"recv_buf_capacity":65536,"send_buf_used":65483,"send_buf_capacity":65536,
         "kernel_recv_queue":472876,"kernel_send_queue":4067328,"kernel_send_unsent":4067328,
         "so_rcvbuf":477001,"so_sndbuf":4194304,"state":"paused","limit":"peer-window",
         "bytes_in":4605687,"bytes_out":4067328,
         "tcp":{"rtt_us":13,"rttvar_us":6,"snd_cwnd":10,"snd_ssthresh":2147483647,"snd_mss":32768,
                "snd_wnd":0,"unacked":0,"total_retrans":0,"notsent_bytes":4067328,"bytes_acked":4067328,
                "busy_time_us":900,"rwnd_limited_us":null,"sndbuf_limited_us":null}},
        {"id":4,"peer":"127.0.0.1:5001","service":"admin","age_secs":0.5,"idle_secs":0.0,
         "recv_buf_used":0,"recv_buf_capacity":65536,"send_buf_used":0,"send_buf_capacity":65536,
         "kernel_recv_queue":null,"kernel_send_queue":null,"kernel_send_unsent":null,
         "so_rcvbuf":null,"so_sndbuf":null,"state":"reading","limit":"idle",
         "bytes_in":10,"bytes_out":0,"snapshots_skipped":0,"tcp":null}]}"#;

    fn snapshot() -> Snapshot {
        parse_snapshot(SNAPSHOT.replace('\n', "").as_bytes()).expect("the sample parses")
    }

    fn csv_of(rows: &[Sample]) -> String {
        let mut csv = csv_writer(Vec::new()).unwrap();
        for row in rows {
            csv.serialize(row).unwrap();
        }
        String::from_utf8(csv.into_inner().unwrap()).unwrap()
    }

    #[test]
    fn the_header_names_every_sample_field_in_order() {
        // Serialised with its own header, a Sample names its fields.
        let mut derived = csv::Writer::from_writer(Vec::new());
        derived
            .serialize(&rows(&snapshot(), 12.0, &Selection::new(&[3]))[0])
            .unwrap();
        let derived = String::from_utf8(derived.into_inner().unwrap()).unwrap();
        assert_eq!(derived.lines().next(), Some(HEADER.join(",").as_str()));
        assert_eq!(csv_of(&[]), format!("{}\n", HEADER.join(",")));
    }

    #[test]
    fn a_snapshot_becomes_one_row_per_connection_but_admin_ones() {
        let rows = rows(&snapshot(), 12.0, &Selection::AllButAdmin);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.time_secs, 0.5);
        assert_eq!(
            (r.id, r.peer.as_str(), r.limit.as_str()),
            (3, "127.0.0.1:5000", "peer-window")
        );
        assert_eq!(r.kernel_send_unsent, Some(4_067_328));
        assert_eq!(r.tcp_snd_wnd, Some(0));
        assert_eq!(r.tcp_rwnd_limited_us, None);
    }

    #[test]
    fn nulls_become_empty_cells() {
        let rows = rows(&snapshot(), 12.0, &Selection::new(&[4]));
        let text = csv_of(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(
            lines[1],
            "0.5,4,127.0.0.1:5001,admin,reading,idle,0.5,0.0,0,65536,0,65536,,,,,,10,0,,,,,,,,,,,,,"
        );
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let back: Sample = reader.deserialize().next().unwrap().unwrap();
        assert_eq!(back, rows[0], "empty cells read back as None");
    }

    #[test]
    fn given_ids_select_those_connections_admin_or_not() {
        let snap = snapshot();
        assert_eq!(rows(&snap, 12.0, &Selection::new(&[4]))[0].id, 4);
        assert_eq!(rows(&snap, 12.0, &Selection::new(&[3, 4])).len(), 2);
        assert!(rows(&snap, 12.0, &Selection::new(&[9])).is_empty());
    }

    #[test]
    fn a_line_that_is_not_a_snapshot_is_one_clear_error() {
        let err = parse_snapshot(b"ERR watch takes milliseconds, 50 to 60000\n").unwrap_err();
        assert!(
            err.message().contains("admin service said: ERR watch"),
            "{err}"
        );
        let err = parse_snapshot(b"watch 100\n").unwrap_err();
        assert!(err.message().contains("is this an admin address?"), "{err}");
        assert_eq!(err.message().lines().count(), 1);
    }
}
