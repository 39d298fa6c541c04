//! `tcp-reactor bench`: an echo load generator on one thread.
//!
//! It opens `--conns` connections at once and runs a closed loop on each:
//! send a `--size`-byte message, wait until the same bytes come back (checked),
//! send the next. It stops by itself after `--secs` seconds, or after
//! `--rounds` round trips per connection if that comes first, and reports the
//! connect time, the rate of round trips and their latency percentiles.
//!
//! With `short`, each of the `--conns` loops instead does one whole short
//! connection per round: connect, one round trip of `--size` bytes, close,
//! then the next connection; the report counts connections per second, with
//! the connect and round-trip latencies apart. [`BenchReport::to_json`] gives
//! every figure as one JSON line, for scripts.
//!
//! Every connection ends cleanly (`close_cleanly`): its write side shut,
//! the echoes still on their way read up to the server's close, then
//! closed, so a run cut by its deadline costs the server no resets. A run
//! in which no connection could be made is an error, not a report.
//!
//! Like the server, it is a mio readiness loop, so thousands of connections
//! cost no threads and the generator stays cheap next to the server it
//! measures. Latencies go into a fixed-size histogram ([`Latencies`]), so
//! its memory is the same for a one-second run and a one-day run.
//!
//! The load loops are here; what they measured, and how it is shown, is in
//! `report.rs`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::Target;

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// The echo server; when its name has several addresses, the first
    /// that accepts a connection is used for the whole run.
    pub addr: Target,
    pub conns: usize,
    pub size: usize,
    pub duration: Duration,
    /// Round trips per connection, at most (with `short`, connections per
    /// loop).
    pub rounds: Option<u64>,
    /// Each round is a connection of its own: connect, one round trip, close.
    pub short: bool,
    /// Round trips per second over all connections, on a fixed schedule
    /// (each connection sends every `conns / rate` seconds, the
    /// connections staggered evenly), instead of each sending again as soon
    /// as its echo is back. Not with `short`.
    pub rate: Option<f64>,
}

impl BenchConfig {
    /// The time between one connection's sends when paced.
    fn interval(&self) -> Option<Duration> {
        self.rate
            .map(|rate| Duration::from_secs_f64(self.conns as f64 / rate))
    }
}
mod report;

use report::WRONG_BYTES;
pub use report::{BenchReport, Latencies};

struct Conn {
    socket: TcpStream,
    /// Its token with the run's poller.
    token: Token,
    connected: bool,
    /// Bytes of the current message written / echoed back so far.
    sent: usize,
    echoed: usize,
    /// When the current message's first byte was written (or, unpaced,
    /// when the previous echo was complete: the same moment).
    started: Instant,
    /// Paced: when the next message is due; it is not sent before.
    due: Option<Instant>,
    /// Paced: `due` is in the run's queue of waiting connections.
    queued: bool,
    rounds: u64,
    done: bool,
}

/// Runs the benchmark; errors only if the poller itself fails (or, for a
/// long-connection run, if a connect call fails at once).
pub fn run(config: BenchConfig) -> io::Result<BenchReport> {
    run_holding(config).map(|(report, _held)| report)
}

/// The connections of a finished echo run, still open: a measuring script
/// can read the report while the server has not yet seen them close, so
/// the closing is not counted as load. Dropping it closes them cleanly
/// (`close_cleanly`).
pub struct Held {
    /// The run's poller, with `conns` registered; `None` holding none.
    poll: Option<Poll>,
    conns: Vec<Conn>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(poll) = &mut self.poll {
            close_cleanly(poll, std::mem::take(&mut self.conns));
        }
    }
}

/// How long the clean close of a finished run may wait for the server's
/// last echoes and its FIN: a live echo server sends them within a round
/// trip; one that does not by then is closed anyway (with a reset, as
/// before).
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Ends every connection the way a polite client does: shut the write
/// side, read (and discard) what the server still echoes until its FIN,
/// then close. Dropping a socket with unread echo in its receive queue, as
/// a timed run's connections had at the deadline, makes the kernel send a
/// reset, and the server counted each as `closed: error`. Bounded by
/// [`CLOSE_WAIT`].
fn close_cleanly(poll: &mut Poll, mut conns: Vec<Conn>) {
    let deadline = Instant::now() + CLOSE_WAIT;
    let mut scratch = vec![0u8; 64 * 1024];
    // Still waiting for the server's FIN.
    let mut open = 0;
    for conn in &mut conns {
        conn.done = !conn.connected || conn.socket.shutdown(Shutdown::Write).is_err();
        // Edge-triggered: what is readable already gives no new event.
        if !conn.done {
            conn.done = drain(conn, &mut scratch);
        }
        if !conn.done {
            open += 1;
        }
    }
    let by_token: HashMap<Token, usize> = conns
        .iter()
        .enumerate()
        .map(|(at, conn)| (conn.token, at))
        .collect();
    let mut events = Events::with_capacity(1024);
    while open > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || poll.poll(&mut events, Some(left)).is_err() {
            break;
        }
        for event in events.iter() {
            let Some(conn) = by_token.get(&event.token()).map(|&at| &mut conns[at]) else {
                continue;
            };
            if !conn.done && drain(conn, &mut scratch) {
                conn.done = true;
                open -= 1;
            }
        }
    }
}

/// Reads and discards until the socket would block (false) or the server
/// closed or failed (true).
fn drain(conn: &mut Conn, scratch: &mut [u8]) -> bool {
    loop {
        match conn.socket.read(scratch) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// [`run`], but the echo connections are handed back open instead of
/// closed (a `short` run holds none: its connections close as it goes).
pub fn run_holding(config: BenchConfig) -> io::Result<(BenchReport, Held)> {
    if config.short {
        let held = Held {
            poll: None,
            conns: Vec::new(),
        };
        return run_short(config).map(|report| (report, held));
    }
    let addr = pick_address(&config.addr)?;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let (message, mut scratch) = message_and_scratch(config.size);
    let mut failures = Vec::new();
    let mut conns: Vec<Conn> = Vec::with_capacity(config.conns);

    let start = Instant::now();
    for i in 0..config.conns {
        let conn = open(&poll, i, addr).map_err(|e| cannot_connect(&config.addr, &e))?;
        conns.push(conn);
    }
    // The first connect failure: when no connection is established, it is
    // the whole run's error, one line instead of a report of nothing.
    let mut refused: Option<io::Error> = None;
    let mut connected = 0;

    // Connect phase: wait for every connection's first writable event.
    let connect_deadline = start + config.duration.max(Duration::from_secs(10));
    let mut pending = conns.len();
    while pending > 0 {
        let left = connect_deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            failures.push(format!("{pending} connections not established in time"));
            break;
        }
        poll.poll(&mut events, Some(left))?;
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            if conn.connected || conn.done {
                continue;
            }
            match conn.socket.take_error() {
                Ok(None) if conn.socket.peer_addr().is_ok() => {
                    conn.connected = true;
                    connected += 1;
                    pending -= 1;
                }
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    failures.push(format!("connection {}: {e}", event.token().0));
                    refused.get_or_insert(e);
                    conn.done = true;
                    pending -= 1;
                }
            }
        }
    }
    let connect_time = start.elapsed();
    if connected == 0
        && let Some(e) = refused
    {
        return Err(cannot_connect(&config.addr, &e));
    }

    // Load phase.
    let begin = Instant::now();
    let deadline = begin + config.duration;
    let interval = config.interval();
    let mut latencies = Latencies::new();
    let mut active = 0;
    // Paced connections waiting for their next send, soonest first.
    let mut waiting: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut load = Load {
        message: &message,
        scratch: &mut scratch,
        config: &config,
        interval,
        deadline,
        latencies: &mut latencies,
        failures: &mut failures,
    };
    let count = conns.len() as u32;
    for (i, conn) in conns.iter_mut().enumerate() {
        if conn.connected && !conn.done {
            conn.started = Instant::now();
            // Paced: the connections' first sends spread over one interval.
            conn.due = interval.map(|every| begin + every * i as u32 / count);
            // A fast server can finish every round before the first poll.
            if !load.step(i, conn, &mut waiting) {
                active += 1;
            }
        }
    }
    while active > 0 {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            break;
        }
        let timeout = match waiting.peek() {
            Some(Reverse((due, _))) => left.min(due.saturating_duration_since(now)),
            None => left,
        };
        poll.poll(&mut events, Some(timeout))?;
        for event in events.iter() {
            let i = event.token().0;
            let conn = &mut conns[i];
            if !conn.done && conn.connected && load.step(i, conn, &mut waiting) {
                active -= 1;
            }
        }
        let now = Instant::now();
        while let Some(&Reverse((due, i))) = waiting.peek() {
            if due > now {
                break;
            }
            waiting.pop();
            let conn = &mut conns[i];
            conn.queued = false;
            if !conn.done && load.step(i, conn, &mut waiting) {
                active -= 1;
            }
        }
    }
    let elapsed = begin.elapsed();
    let report = BenchReport {
        round_trips: latencies.len(),
        config,
        connect_time,
        connected,
        elapsed,
        latencies,
        connects: Latencies::new(),
        failures,
    };
    let held = Held {
        poll: Some(poll),
        conns,
    };
    Ok((report, held))
}

/// One loop of a `short` run: the connection of its current round, if any.
struct ShortLoop {
    conn: Option<Conn>,
    /// When the current connection's connect call was made.
    connecting_since: Instant,
    rounds: u64,
}

/// A `short` run: `conns` loops, each doing connect, one round trip, close,
/// again, until the deadline or `rounds` connections each. A loop whose
/// connection fails stops there (its failure is reported), so a server that
/// refuses every connection ends the run at once rather than spinning.
fn run_short(config: BenchConfig) -> io::Result<BenchReport> {
    let addr = pick_address(&config.addr)?;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let (message, mut scratch) = message_and_scratch(config.size);
    let mut failures = Vec::new();
    let mut latencies = Latencies::new();
    let mut connects = Latencies::new();
    // A round of its own for every loop: no `rounds` limit per connection.
    let one_round = BenchConfig {
        rounds: Some(1),
        ..config.clone()
    };

    let begin = Instant::now();
    let deadline = begin + config.duration;
    let mut loops: Vec<ShortLoop> = (0..config.conns)
        .map(|_| ShortLoop {
            conn: None,
            connecting_since: begin,
            rounds: 0,
        })
        .collect();
    let mut active = 0;
    // As in a long run: with no connection ever established, the first
    // failure is the run's error.
    let mut refused: Option<io::Error> = None;
    for (i, l) in loops.iter_mut().enumerate() {
        match open(&poll, i, addr) {
            Ok(conn) => {
                l.conn = Some(conn);
                l.connecting_since = Instant::now();
                active += 1;
            }
            Err(e) => {
                failures.push(format!("connection {i}: connect: {e}"));
                refused.get_or_insert(e);
            }
        }
    }
    while active > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        poll.poll(&mut events, Some(left))?;
        for event in events.iter() {
            let i = event.token().0;
            let l = &mut loops[i];
            // An event for a connection already closed in this batch.
            let Some(conn) = l.conn.as_mut() else {
                continue;
            };
            if !conn.connected {
                match conn.socket.take_error() {
                    Ok(None) if conn.socket.peer_addr().is_ok() => {
                        let now = Instant::now();
                        connects.record(now - l.connecting_since);
                        conn.connected = true;
                        conn.started = now;
                    }
                    Ok(None) => continue,
                    Ok(Some(e)) | Err(e) => {
                        failures.push(format!("connection {i}: connect: {e}"));
                        refused.get_or_insert(e);
                        conn.done = true;
                    }
                }
            }
            if !conn.done {
                let moved = pump(
                    conn,
                    &message,
                    &mut scratch,
                    &one_round,
                    None,
                    deadline,
                    &mut latencies,
                );
                if let Err(e) = moved {
                    failures.push(format!("connection {i}: {e}"));
                    conn.done = true;
                }
            }
            if !conn.done {
                continue;
            }
            // The round is over (or failed): close, and start the next one.
            if conn.rounds == 1 {
                l.rounds += 1;
            } else {
                l.rounds = u64::MAX;
            }
            if let Some(mut old) = l.conn.take() {
                // Deregistering a socket about to be dropped cannot matter.
                let _ = poll.registry().deregister(&mut old.socket);
            }
            let more = l.rounds != u64::MAX
                && Instant::now() < deadline
                && config.rounds.is_none_or(|r| l.rounds < r);
            if !more {
                active -= 1;
                continue;
            }
            match open(&poll, i, addr) {
                Ok(conn) => {
                    l.conn = Some(conn);
                    l.connecting_since = Instant::now();
                }
                Err(e) => {
                    failures.push(format!("connection {i}: connect: {e}"));
                    refused.get_or_insert(e);
                    active -= 1;
                }
            }
        }
    }
    let elapsed = begin.elapsed();
    // The connections of rounds the deadline cut short.
    let unfinished: Vec<Conn> = loops.into_iter().filter_map(|l| l.conn).collect();
    close_cleanly(&mut poll, unfinished);
    if connects.is_empty()
        && let Some(e) = refused
    {
        return Err(cannot_connect(&config.addr, &e));
    }
    Ok(BenchReport {
        round_trips: latencies.len(),
        connected: connects.len() as usize,
        config,
        connect_time: Duration::ZERO,
        elapsed,
        latencies,
        connects,
        failures,
    })
}

/// A connect failure as the run's error: `cannot connect to ADDR: WHY`.
fn cannot_connect(target: &Target, e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot connect to {target}: {e}"))
}

/// The address a run connects to: the target's only one or, when a name
/// has several, the first that accepts a connection. That probe is closed
/// at once, before the run, and not measured.
fn pick_address(target: &Target) -> io::Result<SocketAddr> {
    if let [only] = target.addrs() {
        return Ok(*only);
    }
    let probe = super::connect(target).map_err(|e| io::Error::other(e.to_string()))?;
    probe.peer_addr()
}

/// The message every round sends (`size` bytes counting up modulo 251, so
/// bytes echoed out of place seldom match), and a buffer to read echoes
/// into.
fn message_and_scratch(size: usize) -> (Vec<u8>, Vec<u8>) {
    let message = (0..size).map(|i| (i % 251) as u8).collect();
    (message, vec![0u8; size.clamp(1, 64 * 1024)])
}

/// Starts a non-blocking connect for connection (or `short` loop) `i`.
fn open(poll: &Poll, i: usize, addr: SocketAddr) -> io::Result<Conn> {
    let mut socket = TcpStream::connect(addr)?;
    poll.registry().register(
        &mut socket,
        Token(i),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    Ok(Conn {
        socket,
        token: Token(i),
        connected: false,
        sent: 0,
        echoed: 0,
        started: Instant::now(),
        due: None,
        queued: false,
        rounds: 0,
        done: false,
    })
}

/// What every connection's loop shares.
struct Load<'a> {
    message: &'a [u8],
    scratch: &'a mut [u8],
    config: &'a BenchConfig,
    interval: Option<Duration>,
    deadline: Instant,
    latencies: &'a mut Latencies,
    failures: &'a mut Vec<String>,
}

impl Load<'_> {
    /// Moves connection `i` on; true once it is done (finished or failed).
    /// A paced connection whose next send is not yet due goes into
    /// `waiting` (once).
    fn step(
        &mut self,
        i: usize,
        conn: &mut Conn,
        waiting: &mut BinaryHeap<Reverse<(Instant, usize)>>,
    ) -> bool {
        let moved = pump(
            conn,
            self.message,
            self.scratch,
            self.config,
            self.interval,
            self.deadline,
            self.latencies,
        );
        match moved {
            Ok(Some(due)) if !conn.queued => {
                conn.queued = true;
                waiting.push(Reverse((due, i)));
            }
            Ok(_) => {}
            Err(e) => {
                self.failures.push(format!("connection {i}: {e}"));
                conn.done = true;
            }
        }
        conn.done
    }
}

/// Moves one connection's closed loop as far as the socket allows; with
/// `interval` (paced), `Ok(Some(due))` when the next message is not due yet.
fn pump(
    conn: &mut Conn,
    message: &[u8],
    scratch: &mut [u8],
    config: &BenchConfig,
    interval: Option<Duration>,
    deadline: Instant,
    latencies: &mut Latencies,
) -> Result<Option<Instant>, String> {
    loop {
        if conn.sent == 0
            && let Some(due) = conn.due
        {
            let now = Instant::now();
            if now < due {
                return Ok(Some(due));
            }
            conn.started = now;
        }
        if conn.sent < message.len() {
            match conn.socket.write(&message[conn.sent..]) {
                Ok(n) => conn.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        let want = (conn.sent - conn.echoed).min(scratch.len());
        if want == 0 {
            return Ok(None);
        }
        match conn.socket.read(&mut scratch[..want]) {
            Ok(0) => return Err("server closed the connection".to_string()),
            Ok(n) => {
                if scratch[..n] != message[conn.echoed..conn.echoed + n] {
                    return Err(format!("{WRONG_BYTES} at offset {}", conn.echoed));
                }
                conn.echoed += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read: {e}")),
        }
        if conn.echoed == message.len() {
            let now = Instant::now();
            latencies.record(now - conn.started);
            conn.rounds += 1;
            conn.sent = 0;
            conn.echoed = 0;
            conn.started = now;
            // Paced: the next send is due one interval after this one was,
            // on a fixed schedule, so a late echo does not slow the rate.
            if let (Some(due), Some(every)) = (conn.due, interval) {
                conn.due = Some(due + every);
            }
            if now >= deadline || config.rounds.is_some_and(|r| conn.rounds >= r) {
                conn.done = true;
                return Ok(None);
            }
        }
    }
}
