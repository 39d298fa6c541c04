//! The log sink: a [`log::Log`] that writes to standard error without ever
//! blocking the server's one thread and without ever panicking, whoever
//! reads (or stops reading) the other end.
//!
//! Each record is formatted exactly as `simple_logger` 5.2 printed it with
//! the `stderr` and `timestamps` features (scripts and tests grep these
//! lines):
//!
//! ```text
//! 2025-01-31T12:34:56.789Z INFO  [tcp_reactor::reactor] listening on 127.0.0.1:7788 (echo)
//! ```
//!
//! The line goes into a bounded in-memory [`LineQueue`]; bytes leave the
//! queue only when fd 2 is writable. Writes happen in [`log::Log::log`]
//! itself (a non-blocking attempt), in [`flush`], which the reactor calls
//! once per poll-loop turn, and in [`finish`] at exit, the one call that
//! may wait (for a bounded time).
//!
//! # Why a write never blocks
//!
//! Standard error itself stays a blocking descriptor: setting `O_NONBLOCK`
//! on fd 2 would change the open file description it shares with the shell
//! and every other process writing to the same terminal or pipe. And
//! `poll` saying `POLLOUT` is not enough: for a terminal it promises some
//! room, not a chunk's worth, so a blocking write of 4 KiB to a terminal
//! whose reader stalled (an ssh session behind a dead link) waits for that
//! reader, and the server's one thread with it. So [`init`] chooses, once,
//! by what fd 2 is ([`sys::fd_kind`]):
//!
//! - a pipe, FIFO or terminal: the sink opens its own open file
//!   description of it, through `/proc/self/fd/2`, with `O_NONBLOCK`
//!   ([`sys::reopen_nonblocking`]). The flag is then the sink's alone;
//!   a full pipe or terminal answers `EAGAIN` or takes part of a chunk,
//!   never waits.
//! - a socket (a supervisor's log stream, systemd's journal): each write is
//!   a `send` with `MSG_DONTWAIT`, which never waits and changes nothing
//!   shared.
//! - a regular file or block device: fd 2 itself (a write there does not
//!   wait for any reader; a private description would also have an offset
//!   of its own, and overwrite what others write through fd 2).
//! - otherwise, or when the private open fails (no `/proc`; a pipe whose
//!   reader is already gone): fd 2 after `poll(fd 2, POLLOUT, 0)`. For a
//!   pipe that pair cannot block (Linux reports `POLLOUT` on a pipe only
//!   while it has a free page, and a write of at most [`PIPE_BUF`] bytes
//!   needs at most one); for a terminal it can, as said above.
//!
//! Every write is at most [`PIPE_BUF`] (4096) bytes and ends at a newline:
//! to a pipe such writes are atomic, so a line is never torn by another
//! writer on the same pipe. A short write (a terminal with little room)
//! leaves the rest of the line at the front of the queue.
//!
//! # What happens when the reader stalls or goes away
//!
//! - A full queue ([`QUEUE_BYTES`]) drops new lines and counts them. When it
//!   has room again, the first line it takes says how many were dropped.
//! - A line longer than [`MAX_LINE`] is cut, with [`CUT_MARKER`] at the end.
//! - A write error other than `EAGAIN`/`EINTR` (`EPIPE`: the reader is gone)
//!   makes the sink dead for good: every later line is counted as dropped
//!   and never formatted into the queue.
//!
//! What it does not do: no thread (the server must stay one thread), no
//! filtering by module (one level for everything, as before), no
//! timestamps other than UTC, no file output or rotation.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;

use crate::sys::{self, FdKind};

/// Most bytes queued for a reader that is not keeping up: enough for a burst
/// of several hundred lines, small beside the server's buffers. Past it new
/// lines are dropped, so a stalled reader costs memory once, not forever.
pub const QUEUE_BYTES: usize = 64 * 1024;

/// Most bytes per `write(2)`: `PIPE_BUF` on Linux, the size up to which a
/// pipe write is atomic and, after `POLLOUT`, cannot block (module docs).
pub const PIPE_BUF: usize = 4096;

/// Most bytes of one line, newline included. One line always fits in one
/// [`PIPE_BUF`] write, so every chunk can end at a newline; and one huge
/// record (a long peer message, a big `Debug` dump) cannot fill the queue.
pub const MAX_LINE: usize = PIPE_BUF;

/// The end of a line that was cut at [`MAX_LINE`].
pub const CUT_MARKER: &str = " ... (log line cut)";

/// How soon the reactor should come back to write a backlog (see
/// [`pending`]): quick enough that the log keeps up once its reader drains,
/// rare enough that a reader stalled for good costs 20 wake-ups a second.
pub const RETRY: Duration = Duration::from_millis(50);

/// The target of the sink's own lines (the dropped-lines report), as the
/// module path a `warn!` here would have.
const TARGET: &str = "tcp_reactor::logsink";

/// The timestamp `simple_logger` 5.2 printed with UTC timestamps (its
/// default), kept byte for byte.
const TIMESTAMP_FORMAT: &[BorrowedFormatItem<'_>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// Where queued bytes go: standard error in the server, a fake in tests.
pub trait Output {
    /// Whether a write of up to [`PIPE_BUF`] bytes would not block now,
    /// waiting at most `wait` for that.
    fn ready(&mut self, wait: Duration) -> io::Result<bool>;
    /// One write: how many bytes were taken.
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize>;
}

/// How the sink reaches standard error (module docs, "Why a write never
/// blocks"): chosen once, by [`init`].
#[derive(Debug)]
pub enum Route {
    /// A private, non-blocking open file description of the pipe, FIFO or
    /// terminal on fd 2.
    Private(OwnedFd),
    /// fd 2 is a socket: `send` with `MSG_DONTWAIT`.
    Socket,
    /// fd 2 itself, written after `poll` says `POLLOUT`: a regular file,
    /// or the fallback when no private description could be opened.
    Polled,
}

impl Route {
    /// The route for fd 2 as it is now.
    fn for_stderr() -> Route {
        let fd = io::stderr();
        match sys::fd_kind(fd.as_fd()) {
            Ok(FdKind::Pipe | FdKind::CharDevice) => {
                sys::reopen_nonblocking(fd.as_fd()).map_or(Route::Polled, Route::Private)
            }
            Ok(FdKind::Socket) => Route::Socket,
            Ok(FdKind::File | FdKind::Other) | Err(_) => Route::Polled,
        }
    }

    /// A short name for the start-up log line.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Private(_) => "a private non-blocking description",
            Route::Socket => "non-blocking sends",
            Route::Polled => "poll, then write",
        }
    }
}

/// The route [`init`] chose; unset (so [`Route::Polled`]) before it runs.
static ROUTE: OnceLock<Route> = OnceLock::new();

/// File descriptor 2, by the [`ROUTE`] chosen. (The Rust runtime opens
/// `/dev/null` on fd 2 if the process started with it closed, so it never
/// names some other file.)
struct Stderr;

impl Output for Stderr {
    fn ready(&mut self, wait: Duration) -> io::Result<bool> {
        let stderr = io::stderr();
        let fd = match ROUTE.get() {
            // A write that cannot block says for itself whether there was
            // room: no poll needed unless the caller wants to wait.
            Some(Route::Private(_) | Route::Socket) if wait.is_zero() => return Ok(true),
            Some(Route::Private(own)) => own.as_fd(),
            _ => stderr.as_fd(),
        };
        // Round up, so a wait of a few microseconds is not a busy loop.
        let ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        sys::poll_writable(fd, ms)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match ROUTE.get() {
            Some(Route::Private(own)) => sys::write_fd(own.as_fd(), bytes),
            Some(Route::Socket) => sys::send_dontwait(io::stderr().as_fd(), bytes),
            Some(Route::Polled) | None => sys::write_fd(io::stderr().as_fd(), bytes),
        }
    }
}

/// Formatted lines on their way out, bounded in bytes.
#[derive(Debug)]
pub struct LineQueue {
    /// Whole lines, each ending in `\n` and at most [`MAX_LINE`] bytes,
    /// oldest first, at most [`QUEUE_BYTES`] in all; only the front line may
    /// have been partly written already (a short write to a terminal).
    bytes: VecDeque<u8>,
    /// Lines dropped that no queued line has reported yet.
    unreported: u64,
    /// Lines never written, since the start: dropped at a full queue, given
    /// to a dead sink, or still queued when it died.
    dropped: u64,
    /// A write failed for good (the reader is gone): nothing is queued or
    /// written again. Sticky, so no path can carry on after it.
    dead: bool,
}

impl Default for LineQueue {
    fn default() -> Self {
        LineQueue::new()
    }
}

impl LineQueue {
    pub const fn new() -> LineQueue {
        LineQueue {
            bytes: VecDeque::new(),
            unreported: 0,
            dropped: 0,
            dead: false,
        }
    }

    /// Queues `line` (a [`format_line`] result, without its newline), or
    /// drops and counts it if the queue cannot take it. After drops the
    /// report comes first; a line is taken only if the report fits too, so
    /// no line ever appears after a gap that is not announced. `stamp` is
    /// the timestamp for that report.
    pub fn push(&mut self, line: &str, stamp: &str) {
        if self.dead || line.len() >= MAX_LINE {
            // A line at MAX_LINE or longer breaks format_line's promise;
            // dropping it keeps every queued line within one write.
            self.drop_lines(1);
            return;
        }
        let report = (self.unreported > 0).then(|| self.report(stamp));
        let report_len = report.as_ref().map_or(0, |r| r.len() + 1);
        if !self.fits(report_len + line.len()) {
            self.drop_lines(1);
            return;
        }
        if let Some(report) = report {
            self.append(&report);
            self.unreported = 0;
        }
        self.append(line);
    }

    /// Counts `n` lines that never reached the queue.
    pub fn drop_lines(&mut self, n: u64) {
        self.dropped += n;
        if !self.dead {
            self.unreported += n;
        }
    }

    /// Whether bytes wait to be written (or a drop waits to be reported).
    pub fn pending(&self) -> bool {
        !self.dead && (!self.bytes.is_empty() || self.unreported > 0)
    }

    /// Lines never written, since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether a write failed for good.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Bytes waiting to be written.
    pub fn queued(&self) -> usize {
        self.bytes.len()
    }

    /// Writes queued bytes to `out` while it is ready, in chunks of at most
    /// [`PIPE_BUF`] bytes that end at a newline. With no `deadline` it never
    /// waits; with one it waits for readiness until then. `stamp` gives the
    /// timestamp for a dropped-lines report, queued as soon as there is
    /// room for it.
    pub fn write_to(
        &mut self,
        out: &mut impl Output,
        stamp: &mut dyn FnMut() -> String,
        deadline: Option<Instant>,
    ) {
        loop {
            if self.dead {
                return;
            }
            if self.unreported > 0 {
                let report = self.report(&stamp());
                if self.fits(report.len()) {
                    self.append(&report);
                    self.unreported = 0;
                }
            }
            if self.bytes.is_empty() {
                return;
            }
            let wait = deadline.map_or(Duration::ZERO, |d| {
                d.saturating_duration_since(Instant::now())
            });
            match out.ready(wait) {
                Ok(true) => {}
                Err(e) if e.kind() != io::ErrorKind::Interrupted => return self.die(),
                // Not writable (or a signal): try again only while a
                // deadline allows waiting.
                Ok(false) | Err(_) if wait.is_zero() => return,
                Ok(false) | Err(_) => continue,
            }
            let chunk = self.chunk();
            match out.write(chunk) {
                Ok(0) => return,
                Ok(n) => {
                    self.bytes.drain(..n.min(self.bytes.len()));
                }
                // Full (a private non-blocking description, a socket, or
                // fd 2 made non-blocking by someone else): like Ok(false)
                // above. With a deadline, `ready` polls before the next try.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if wait.is_zero() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if deadline.is_none() {
                        return;
                    }
                }
                Err(_) => return self.die(),
            }
        }
    }

    /// The front of the queue up to [`PIPE_BUF`] bytes, cut after its last
    /// newline.
    fn chunk(&mut self) -> &[u8] {
        let bytes = self.bytes.make_contiguous();
        if bytes.len() <= PIPE_BUF {
            return bytes;
        }
        let window = &bytes[..PIPE_BUF];
        // Every line is at most MAX_LINE == PIPE_BUF bytes, newline
        // included, so the window holds a newline; the fallback only keeps
        // a broken invariant from stalling the queue.
        let end = window
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(PIPE_BUF, |i| i + 1);
        &bytes[..end]
    }

    /// Whether `len` more bytes and a newline stay within [`QUEUE_BYTES`].
    fn fits(&self, len: usize) -> bool {
        self.bytes.len() + len < QUEUE_BYTES
    }

    fn append(&mut self, line: &str) {
        self.bytes.extend(line.as_bytes());
        self.bytes.push_back(b'\n');
    }

    /// The line that reports the unreported drops.
    fn report(&self, stamp: &str) -> String {
        let n = self.unreported;
        let lines = if n == 1 { "line" } else { "lines" };
        format_line(
            stamp,
            Level::Warn,
            TARGET,
            format_args!("{n} log {lines} dropped: the log's reader was not keeping up"),
        )
    }

    /// The reader is gone: nothing queued will be written.
    fn die(&mut self) {
        self.dead = true;
        let lost = self.bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        self.dropped += lost;
        self.unreported = 0;
        self.bytes = VecDeque::new();
    }
}

/// One log line as `simple_logger` 5.2 formats it, without the newline:
/// `{stamp} {level:<5} [{target}] {args}`, cut with [`CUT_MARKER`] so that
/// it and its newline fit in [`MAX_LINE`]. Formatting stops at the cut, so a
/// huge record costs no more memory than a line.
pub fn format_line(stamp: &str, level: Level, target: &str, args: fmt::Arguments<'_>) -> String {
    let mut line = Bounded {
        text: String::new(),
        room: MAX_LINE - 1 - CUT_MARKER.len(),
        cut: false,
    };
    // An error here is Bounded stopping at its limit (or a Display impl
    // failing): either way the text so far is the line.
    let _ = write!(line, "{stamp} {:<5} [{target}] {args}", level.as_str());
    if line.cut {
        line.text.push_str(CUT_MARKER);
    }
    line.text
}

/// A string that takes at most `room` more bytes, cut at a char boundary.
struct Bounded {
    text: String,
    room: usize,
    cut: bool,
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if s.len() <= self.room {
            self.text.push_str(s);
            self.room -= s.len();
            return Ok(());
        }
        let mut end = self.room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.text.push_str(&s[..end]);
        self.room = 0;
        self.cut = true;
        Err(fmt::Error)
    }
}

/// The current UTC time as `simple_logger` printed it.
fn timestamp() -> String {
    // Formatting fails only if the description names a component the value
    // lacks, which an OffsetDateTime never does; an empty stamp beats a
    // panic in the logger.
    OffsetDateTime::now_utc()
        .format(TIMESTAMP_FORMAT)
        .unwrap_or_default()
}

/// The process's one queue.
static QUEUE: Mutex<LineQueue> = Mutex::new(LineQueue::new());

/// Lines dropped because the queue was locked (only another thread logging
/// at that moment, or a record's `Display` logging from inside the sink);
/// added to the queue's count at its next use, since waiting for the lock
/// would be blocking.
static CONTENDED: AtomicU64 = AtomicU64::new(0);

/// The queue, or `None` if it is busy. A poisoned lock is still used: a
/// panic elsewhere while holding it leaves a queue that is valid between
/// any two of its calls.
fn queue() -> Option<MutexGuard<'static, LineQueue>> {
    let mut queue = match QUEUE.try_lock() {
        Ok(q) => q,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => return None,
    };
    let missed = CONTENDED.swap(0, Ordering::Relaxed);
    if missed > 0 {
        queue.drop_lines(missed);
    }
    Some(queue)
}

/// The installed logger: formats, queues, and tries a non-blocking write.
struct Sink;

static SINK: Sink = Sink;

impl Log for Sink {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Some(mut queue) = queue() else {
            CONTENDED.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if queue.is_dead() {
            queue.drop_lines(1);
            return;
        }
        let target = match record.target() {
            "" => record.module_path().unwrap_or_default(),
            target => target,
        };
        let stamp = timestamp();
        let line = format_line(&stamp, record.level(), target, *record.args());
        queue.push(&line, &stamp);
        queue.write_to(&mut Stderr, &mut timestamp, None);
    }

    fn flush(&self) {
        flush();
    }
}

/// Installs the sink as the `log` logger, at `level`, and chooses how it
/// reaches fd 2 (module docs); returns that [`Route`]'s name. Fails only if
/// a logger is already installed.
pub fn init(level: LevelFilter) -> Result<&'static str, log::SetLoggerError> {
    log::set_logger(&SINK)?;
    log::set_max_level(level);
    Ok(ROUTE.get_or_init(Route::for_stderr).name())
}

/// Writes what fd 2 takes now, without waiting. Cheap when nothing is
/// pending; the reactor calls it once per poll-loop turn.
pub fn flush() {
    if let Some(mut queue) = queue()
        && queue.pending()
    {
        queue.write_to(&mut Stderr, &mut timestamp, None);
    }
}

/// Whether lines wait for fd 2: while they do, the reactor's poll timeout
/// is at most [`RETRY`], so the backlog goes out soon after the reader
/// drains. False once the sink is dead, so a departed reader costs nothing.
pub fn pending() -> bool {
    // A busy queue means another thread is writing it: no need to hurry.
    queue().is_some_and(|q| q.pending())
}

/// Lines never written since the start (for the admin `stats`).
pub fn dropped() -> u64 {
    let contended = CONTENDED.load(Ordering::Relaxed);
    queue().map_or(0, |q| q.dropped()) + contended
}

/// At exit: writes the backlog, waiting for fd 2 for at most `limit` in
/// all, so the summary reaches a reader that is slow but alive.
pub fn finish(limit: Duration) {
    if let Some(mut queue) = queue() {
        queue.write_to(&mut Stderr, &mut timestamp, Some(Instant::now() + limit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: &str = "2025-01-31T12:34:56.789Z";

    /// A pipe in memory: takes bytes up to `room`, records every write.
    struct FakePipe {
        taken: Vec<u8>,
        room: usize,
        writes: Vec<usize>,
        /// The reader is gone: every write fails with EPIPE.
        closed: bool,
    }

    impl FakePipe {
        fn new(room: usize) -> FakePipe {
            FakePipe {
                taken: Vec::new(),
                room,
                writes: Vec::new(),
                closed: false,
            }
        }

        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.taken.clone())
                .expect("the queue writes whole UTF-8 lines")
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    impl Output for FakePipe {
        fn ready(&mut self, _wait: Duration) -> io::Result<bool> {
            // As a Linux pipe: POLLERR once the reader is gone, else POLLOUT
            // while a whole PIPE_BUF fits.
            Ok(self.closed || self.room >= PIPE_BUF)
        }

        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.closed {
                return Err(io::Error::from_raw_os_error(libc::EPIPE));
            }
            assert!(bytes.len() <= PIPE_BUF, "write of {} bytes", bytes.len());
            assert!(bytes.len() <= self.room, "write would have blocked");
            self.taken.extend_from_slice(bytes);
            self.room -= bytes.len();
            self.writes.push(bytes.len());
            Ok(bytes.len())
        }
    }

    fn line(n: usize) -> String {
        format_line(STAMP, Level::Info, "t", format_args!("line {n:04}"))
    }

    fn stamp() -> String {
        STAMP.to_string()
    }

    #[test]
    fn lines_have_simple_loggers_format() {
        let info = format_line(
            STAMP,
            Level::Info,
            "tcp_reactor::reactor",
            format_args!("listening on {} ({})", "127.0.0.1:7788", "echo"),
        );
        assert_eq!(
            info,
            "2025-01-31T12:34:56.789Z INFO  [tcp_reactor::reactor] listening on 127.0.0.1:7788 (echo)"
        );
        let error = format_line(STAMP, Level::Error, "m", format_args!("x"));
        assert_eq!(error, "2025-01-31T12:34:56.789Z ERROR [m] x");
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let stamp = timestamp();
        // 2025-01-31T12:34:56.789Z
        assert_eq!(stamp.len(), 24, "{stamp}");
        assert_eq!(&stamp[10..11], "T");
        assert_eq!(&stamp[19..20], ".");
        assert!(stamp.ends_with('Z'));
    }

    #[test]
    fn a_long_line_is_cut_with_the_marker_at_a_char_boundary() {
        let long = "é".repeat(3000);
        let cut = format_line(STAMP, Level::Info, "t", format_args!("{long}"));
        assert!(cut.len() < MAX_LINE, "{}", cut.len());
        assert!(cut.len() > MAX_LINE - 8, "{}", cut.len());
        assert!(cut.ends_with(CUT_MARKER));
        let short = format_line(STAMP, Level::Info, "t", format_args!("short"));
        assert!(!short.contains(CUT_MARKER));
    }

    #[test]
    fn a_ready_output_gets_every_line_in_order() {
        let mut queue = LineQueue::new();
        let mut pipe = FakePipe::new(1 << 20);
        for n in 0..10 {
            queue.push(&line(n), STAMP);
        }
        queue.write_to(&mut pipe, &mut stamp, None);
        let lines = pipe.lines();
        assert_eq!(lines.len(), 10);
        assert_eq!(lines[3], line(3));
        assert!(!queue.pending());
        assert_eq!(queue.dropped(), 0);
    }

    #[test]
    fn writes_are_at_most_pipe_buf_and_end_at_a_newline() {
        let mut queue = LineQueue::new();
        let mut pipe = FakePipe::new(1 << 20);
        for n in 0..2000 {
            queue.push(&line(n), STAMP);
        }
        queue.write_to(&mut pipe, &mut stamp, None);
        assert!(pipe.writes.len() > 1);
        let mut at = 0;
        for &n in &pipe.writes {
            at += n;
            assert!(n <= PIPE_BUF);
            assert_eq!(pipe.taken[at - 1], b'\n', "a write ended mid-line");
        }
    }

    #[test]
    fn a_full_queue_holds_at_most_its_cap_and_counts_drops() {
        let mut queue = LineQueue::new();
        let per_line = line(0).len() + 1;
        let fits = QUEUE_BYTES / per_line;
        for n in 0..fits + 50 {
            queue.push(&line(n), STAMP);
        }
        assert!(queue.queued() <= QUEUE_BYTES);
        assert_eq!(queue.queued(), fits * per_line);
        assert_eq!(queue.dropped(), 50);
        assert!(queue.pending());
    }

    #[test]
    fn a_stalled_output_is_never_written() {
        let mut queue = LineQueue::new();
        let mut pipe = FakePipe::new(PIPE_BUF - 1);
        queue.push(&line(0), STAMP);
        queue.write_to(&mut pipe, &mut stamp, None);
        assert!(pipe.writes.is_empty());
        assert!(queue.pending());
    }

    #[test]
    fn after_drops_the_first_line_written_reports_them() {
        let mut queue = LineQueue::new();
        let mut pipe = FakePipe::new(0);
        let mut n = 0;
        while queue.dropped() < 7 {
            queue.push(&line(n), STAMP);
            n += 1;
        }
        let kept = n - 7;
        // The reader drains: the backlog goes out, then the report, then
        // lines logged after it.
        pipe.room = 1 << 20;
        queue.write_to(&mut pipe, &mut stamp, None);
        queue.push(&line(n), STAMP);
        queue.write_to(&mut pipe, &mut stamp, None);
        let lines = pipe.lines();
        assert_eq!(lines.len(), kept + 2);
        assert_eq!(lines[kept - 1], line(kept - 1));
        assert_eq!(
            lines[kept],
            "2025-01-31T12:34:56.789Z WARN  [tcp_reactor::logsink] 7 log lines dropped: the log's reader was not keeping up"
        );
        assert_eq!(lines[kept + 1], line(n));
        assert!(!queue.pending());
        assert_eq!(queue.dropped(), 7);
    }

    #[test]
    fn a_line_taken_after_drops_comes_after_the_report() {
        let mut queue = LineQueue::new();
        let mut n = 0;
        while queue.dropped() == 0 {
            queue.push(&line(n), STAMP);
            n += 1;
        }
        // Room for a few lines appears without a flush having queued the
        // report: the next push must put the report first.
        queue.bytes.drain(..6 * (line(0).len() + 1));
        queue.push(&line(n), STAMP);
        let all = String::from_utf8(queue.bytes.iter().copied().collect()).unwrap();
        let tail: Vec<&str> = all.lines().rev().take(2).collect();
        assert_eq!(tail[0], line(n));
        assert!(tail[1].contains("1 log line dropped"), "{}", tail[1]);
    }

    #[test]
    fn a_closed_reader_makes_the_queue_dead_and_every_line_dropped() {
        let mut queue = LineQueue::new();
        let mut pipe = FakePipe::new(1 << 20);
        pipe.closed = true;
        queue.push(&line(0), STAMP);
        queue.push(&line(1), STAMP);
        queue.write_to(&mut pipe, &mut stamp, None);
        assert!(queue.is_dead());
        assert!(!queue.pending(), "a dead sink must not keep the loop awake");
        assert_eq!(queue.dropped(), 2);
        queue.push(&line(2), STAMP);
        queue.write_to(&mut pipe, &mut stamp, Some(Instant::now() + RETRY));
        assert_eq!(queue.dropped(), 3);
        assert_eq!(queue.queued(), 0);
    }

    #[test]
    fn a_non_blocking_output_that_is_full_is_left_until_the_next_try() {
        /// Always says ready (a non-blocking route asks the write itself),
        /// but the first `full` writes find no room.
        struct Full(FakePipe, u32);
        impl Output for Full {
            fn ready(&mut self, _wait: Duration) -> io::Result<bool> {
                Ok(true)
            }
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                if self.1 > 0 {
                    self.1 -= 1;
                    return Err(io::Error::from(io::ErrorKind::WouldBlock));
                }
                self.0.write(bytes)
            }
        }
        let mut queue = LineQueue::new();
        queue.push(&line(0), STAMP);
        let mut out = Full(FakePipe::new(1 << 20), 3);
        queue.write_to(&mut out, &mut stamp, None);
        assert_eq!(out.1, 2, "no deadline: one try, then back to the loop");
        assert!(queue.pending() && !queue.is_dead());
        queue.write_to(&mut out, &mut stamp, Some(Instant::now() + RETRY));
        assert_eq!(out.0.lines(), vec![line(0)], "with a deadline: tried again");
    }

    #[test]
    fn a_deadline_flush_waits_for_a_reader_that_drains() {
        /// Not ready for the first few polls, then ready.
        struct Slow(FakePipe, u32);
        impl Output for Slow {
            fn ready(&mut self, _wait: Duration) -> io::Result<bool> {
                self.1 = self.1.saturating_sub(1);
                Ok(self.1 == 0)
            }
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.0.write(bytes)
            }
        }
        let mut queue = LineQueue::new();
        queue.push(&line(0), STAMP);
        let mut slow = Slow(FakePipe::new(1 << 20), 3);
        queue.write_to(&mut slow, &mut stamp, None);
        assert!(queue.pending(), "no deadline: one try, no waiting");
        queue.write_to(&mut slow, &mut stamp, Some(Instant::now() + RETRY));
        assert_eq!(slow.0.lines(), vec![line(0)]);
    }
}
