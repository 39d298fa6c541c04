//! The admin service: line commands that show the server's counters and,
//! per connection, where its bytes sit: kernel receive queue, receive buffer,
//! send buffer, kernel send queue.
//!
//! Commands: `stats`, `clients` (each also as `stats json` / `clients json`,
//! one JSON line), `metrics`, `watch MS`, `help`, `quit`. The service only
//! parses commands; figures about other connections are the hub's: a
//! `stats` or `clients` command becomes an [`Effect::Query`], the hub renders
//! the answer from the server's view, and hands it back with
//! [`Admin::deliver`]. No I/O here.
//!
//! # The HTTP face
//!
//! A connection whose first bytes are an HTTP method and a space
//! ([`first_bytes`]) speaks HTTP to the end, one request, then close: see
//! the `http` module (a child of this one). Its request deadline is the
//! reactor's, from [`Admin::awaiting_request`], ended with
//! [`Admin::time_out_request`].
//!
//! A text connection that sends `POST` or `Host:` as a command is a web
//! page talking across protocols (a browser can post to any local port):
//! it is closed and logged, as Redis does (`securityWarningCommand`).

use std::time::{Duration, Instant};

use log::warn;

mod http;

pub use http::{FirstBytes, MAX_HTTP_HEAD, MAX_HTTP_HEADERS, first_bytes, http_response};
use http::{Http, PLAIN};

use super::{Effect, Io, Outcome};
use crate::observe::metrics::{self, Format};

/// A question only the reactor can answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    Stats {
        json: bool,
    },
    /// The next rows of a `clients` answer, from `cursor` on: the table is
    /// rendered in bounded steps (each row costs five system calls), one
    /// step per turn of the asking connection.
    Clients {
        json: bool,
        cursor: Cursor,
    },
    /// The counters in the Prometheus text format.
    Metrics,
    /// One `watch` snapshot (stats and every connection, one JSON line),
    /// rendered in steps like `clients`.
    Watch {
        cursor: Cursor,
    },
}

/// Shortest and longest `watch` interval, in milliseconds: below 50 ms the
/// snapshots of a busy server would be most of its work; above a minute a
/// watch is not live any more.
pub const WATCH_MS: std::ops::RangeInclusive<u64> = 50..=60_000;

/// A `watch` in progress.
#[derive(Debug)]
struct Watch {
    interval: Duration,
    /// When the next snapshot is due.
    due: Option<Instant>,
    /// Snapshots skipped because the client had not read the last one.
    skipped: u64,
}

/// Where a `clients` answer stands: the next connection key to look at,
/// and how many rows were sent so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub next_key: usize,
    pub rows: usize,
    /// The header has been sent.
    pub started: bool,
}

const HELP: &str = "\
commands:
  stats          totals per service: accepted, active, refused, closed by cause, bytes
  clients        one row per connection: buffers, kernel queues, TCP_INFO, limit
  stats json     the same as one JSON line (likewise clients json)
  metrics        the counters in the Prometheus text format (also HTTP GET /metrics)
  watch MS       a JSON snapshot of stats and clients every MS milliseconds
                 (50 to 60000), skipped while the last one is unread; any line ends it
  help           this text
  quit           close this connection
";

/// Per-connection state.
#[derive(Debug, Default)]
pub struct Admin {
    /// A query was handed to the reactor and its answer has not come back:
    /// no further command is read until it has.
    awaiting: bool,
    /// An answer still to go into the send buffer. Answers can exceed the
    /// send buffer (a `clients` table of thousands of rows), so they are fed
    /// in as room allows. Admin is loopback-only by default and answers one
    /// command at a time, which bounds this to one snapshot.
    pending: Vec<u8>,
    sent: usize,
    /// The query for the rest of the answer, asked once `pending` is out.
    next: Option<Query>,
    /// Leading bytes of the input already searched and found to hold no
    /// newline (a command sent a byte at a time is not searched again).
    scanned: usize,
    /// A `watch` in progress.
    watch: Option<Watch>,
    /// An HTTP request in progress.
    http: Option<Http>,
    /// The rest of a line longer than the buffer is being dropped, up to
    /// its newline: none of it is a command.
    discarding: bool,
    /// The first bytes have been judged text ([`first_bytes`]): lines are
    /// commands from now on.
    spoken: bool,
}

impl Admin {
    /// An answer is on its way (asked of the reactor) or still being
    /// written out: the connection is not done even with no input left.
    pub fn is_producing(&self) -> bool {
        self.awaiting || self.sent < self.pending.len() || self.next.is_some()
    }

    /// An HTTP request is being read: the reactor holds it to
    /// `--request-timeout`.
    pub fn awaiting_request(&self) -> bool {
        matches!(self.http, Some(Http::Request { .. }))
    }

    /// The request did not arrive whole in time: a `408` is all that is
    /// sent from now on. The reactor then ends the connection.
    pub fn time_out_request(&mut self) {
        if let Some(Http::Request { head, .. }) = self.http {
            self.pending =
                http_response("408 Request Timeout", "", PLAIN, b"request timeout\n", head);
            self.sent = 0;
            self.http = Some(Http::TimedOut);
        }
    }

    /// A `watch` is on: the connection is quiet by design, never idle.
    pub fn is_watching(&self) -> bool {
        self.watch.is_some()
    }

    /// Snapshots a `watch` skipped because its client had not read the
    /// previous one yet.
    pub fn skipped_snapshots(&self) -> u64 {
        self.watch.as_ref().map_or(0, |w| w.skipped)
    }

    /// The reactor's answer to the last query: the whole of it, or a part
    /// and the query for the rest (`next`), asked once this part is sent.
    pub fn deliver(&mut self, answer: Vec<u8>, next: Option<Query>) {
        self.awaiting = false;
        self.sent = 0;
        self.next = next;
        self.pending = match self.http {
            Some(Http::Answering { head, open_metrics }) => {
                // The reactor renders OpenMetrics (what the text command
                // gets); a scraper that did not ask for it gets format 0.0.4.
                let format = if open_metrics {
                    Format::OpenMetrics
                } else {
                    Format::Text
                };
                let body = match format {
                    Format::OpenMetrics => answer,
                    Format::Text => {
                        metrics::to_text_format(&String::from_utf8_lossy(&answer)).into_bytes()
                    }
                };
                http_response("200 OK", "", format.content_type(), &body, head)
            }
            _ => answer,
        };
    }

    /// Answers commands one at a time.
    pub fn process(&mut self, io: &mut Io<'_>) -> Outcome {
        loop {
            if self.sent < self.pending.len() {
                self.sent += io.write(&self.pending[self.sent..]);
                if self.sent < self.pending.len() {
                    // A snapshot still on its way: one due meanwhile is
                    // skipped, never queued behind it.
                    if let Some(watch) = &mut self.watch
                        && let Some(due) = watch.due
                    {
                        if io.now >= due {
                            watch.skipped += 1;
                            watch.due = Some(io.now + watch.interval);
                        }
                        return Outcome::proceed(false).wake_at(watch.due.unwrap_or(due));
                    }
                    return Outcome::proceed(false);
                }
                self.pending = Vec::new();
                self.sent = 0;
            }
            if self.awaiting {
                return Outcome::proceed(false);
            }
            if let Some(next) = self.next.take() {
                self.awaiting = true;
                return Outcome::proceed(false).with_effect(Effect::Query(next));
            }
            match self.http {
                Some(Http::TimedOut) => {
                    // The reactor ends the connection once the 408 is out.
                    io.input.clear();
                    return Outcome::proceed(false);
                }
                Some(Http::Answering { .. }) => return Outcome::close_after_flush(),
                Some(Http::Request { .. }) => match self.read_http(io) {
                    Some(outcome) => return outcome,
                    None => continue,
                },
                None => {}
            }
            if let Some(watch) = &mut self.watch {
                if io.eof && io.input.is_empty() {
                    // The client half-closed: the conversation is over.
                    self.watch = None;
                    return Outcome::close_after_flush();
                }
                if !io.input.is_empty() {
                    // Any line from the client ends the watch; commands
                    // after it are read as usual.
                    self.watch = None;
                    let line_end =
                        memchr::memchr(b'\n', io.input.data()).map_or(io.input.len(), |at| at + 1);
                    io.input.consume(line_end);
                    self.scanned = 0;
                    continue;
                }
                let due = *watch.due.get_or_insert(io.now);
                if io.now < due {
                    return Outcome::proceed(false).wake_at(due);
                }
                watch.due = Some(io.now + watch.interval);
                if io.output_len() > 0 {
                    // The last snapshot is still waiting for the client:
                    // skip this one rather than queue without bound.
                    watch.skipped += 1;
                    return Outcome::proceed(false).wake_at(io.now + watch.interval);
                }
                self.awaiting = true;
                return Outcome::proceed(false).with_effect(Effect::Query(Query::Watch {
                    cursor: Cursor::default(),
                }));
            }
            if !self.spoken {
                match first_bytes(io.input.data()) {
                    FirstBytes::Http => {
                        self.http = Some(Http::Request {
                            ask: None,
                            head: false,
                            lines: 0,
                            bytes: 0,
                            open_metrics: false,
                        });
                        continue;
                    }
                    // At most a method's length, with no newline: more
                    // bytes will tell (or the end of input).
                    FirstBytes::Unknown
                        if !io.eof && memchr::memchr(b'\n', io.input.data()).is_none() =>
                    {
                        return Outcome::proceed(false);
                    }
                    _ => self.spoken = true,
                }
            }
            let data = io.input.data();
            let from = self.scanned.min(data.len());
            let newline = memchr::memchr(b'\n', &data[from..]).map(|at| from + at);
            self.scanned = if newline.is_some() { 0 } else { data.len() };
            if self.discarding {
                // Drop up to the end of the over-long line, refused already.
                match newline {
                    Some(pos) => {
                        io.input.consume(pos + 1);
                        self.discarding = false;
                        self.scanned = 0;
                    }
                    None => {
                        io.input.clear();
                        self.scanned = 0;
                        if io.eof {
                            return Outcome::close_after_flush();
                        }
                        return Outcome::proceed(false);
                    }
                }
                continue;
            }
            let (line, consumed) = match newline {
                Some(pos) => (&data[..pos], pos + 1),
                None if io.input.is_full() => {
                    io.input.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    self.pending = b"ERR line too long\n".to_vec();
                    continue;
                }
                None if io.eof && !data.is_empty() => {
                    self.scanned = 0;
                    (data, data.len())
                }
                None if io.eof => return Outcome::close_after_flush(),
                None => return Outcome::proceed(false),
            };
            let command = String::from_utf8_lossy(line).trim().to_ascii_lowercase();
            io.input.consume(consumed);
            let words: Vec<&str> = command.split_whitespace().collect();
            if words.first() == Some(&"post") || command.starts_with("host:") {
                warn!(
                    "admin {}: '{}' sent as a command: a cross-protocol attempt (HTTP from a web page?); closing",
                    io.peer,
                    words.first().copied().unwrap_or_default()
                );
                io.input.clear();
                self.scanned = 0;
                return Outcome::close_after_flush();
            }
            let query = match words.as_slice() {
                [] => continue,
                ["help"] => {
                    self.pending = HELP.as_bytes().to_vec();
                    continue;
                }
                ["quit"] | ["exit"] => return Outcome::close_after_flush(),
                ["stats"] => Query::Stats { json: false },
                ["stats", "json"] => Query::Stats { json: true },
                ["clients"] => Query::Clients {
                    json: false,
                    cursor: Cursor::default(),
                },
                ["clients", "json"] => Query::Clients {
                    json: true,
                    cursor: Cursor::default(),
                },
                ["metrics"] => Query::Metrics,
                ["watch", ms] => match ms.parse::<u64>() {
                    Ok(ms) if WATCH_MS.contains(&ms) => {
                        self.watch = Some(Watch {
                            interval: Duration::from_millis(ms),
                            due: None,
                            skipped: 0,
                        });
                        continue;
                    }
                    _ => {
                        self.pending = b"ERR watch takes milliseconds, 50 to 60000\n".to_vec();
                        continue;
                    }
                },
                _ => {
                    self.pending = b"ERR unknown command, try help\n".to_vec();
                    continue;
                }
            };
            self.awaiting = true;
            return Outcome::proceed(false).with_effect(Effect::Query(query));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{BufPool, ByteBuf};

    /// Feeds `input` to an admin connection, answering each query with
    /// `answer(query)`; returns everything written back.
    pub(super) fn converse(input: &[u8], answer: impl Fn(Query) -> Vec<u8>) -> (Vec<u8>, bool) {
        converse_with(input, 64, answer)
    }

    /// As [`converse`], with a receive buffer of `recv_cap` bytes.
    pub(super) fn converse_with(
        input: &[u8],
        recv_cap: usize,
        answer: impl Fn(Query) -> Vec<u8>,
    ) -> (Vec<u8>, bool) {
        let mut pool = BufPool::new(recv_cap);
        let mut out_pool = BufPool::new(32);
        let mut recv = ByteBuf::new(recv_cap);
        let mut send = ByteBuf::new(32);
        let mut admin = Admin::default();
        let peer = "127.0.0.1:1".parse().unwrap();
        let now = std::time::Instant::now();
        let mut written = Vec::new();
        let mut rest = input;
        for _ in 0..10_000 {
            let n = recv.append(&mut pool, rest);
            rest = &rest[n..];
            let mut io = Io::new(&mut recv, &mut send, &mut out_pool, peer, now);
            io.eof = rest.is_empty();
            let outcome = admin.process(&mut io);
            written.extend_from_slice(send.data());
            send.clear();
            if let Some(Effect::Query(q)) = outcome.effect {
                admin.deliver(answer(q), None);
                continue;
            }
            if outcome.next == super::super::Next::CloseAfterFlush {
                return (written, true);
            }
        }
        (written, false)
    }

    #[test]
    fn commands_become_queries_and_answers_come_back_whole() {
        let long = vec![b'x'; 500];
        let (out, closed) = converse(b"stats\nclients json\n", |q| match q {
            Query::Stats { json: false } => long.clone(),
            Query::Clients { json: true, .. } => b"{}\n".to_vec(),
            other => panic!("unexpected {other:?}"),
        });
        let mut expected = long.clone();
        expected.extend_from_slice(b"{}\n");
        assert_eq!(
            out, expected,
            "an answer larger than the send buffer arrives whole"
        );
        assert!(closed, "closes at the client's half-close");
    }

    #[test]
    fn help_unknown_and_blank_lines() {
        let (out, _) = converse(b"\n  HELP \nfrobnicate\n", |_| unreachable!());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("commands:"));
        assert!(text.ends_with("ERR unknown command, try help\n"));
    }

    #[test]
    fn quit_closes() {
        let (out, closed) = converse(b"quit\nstats\n", |_| unreachable!());
        assert!(out.is_empty() && closed);
    }

    #[test]
    fn a_line_longer_than_the_buffer_is_refused() {
        let mut input = vec![b'a'; 100];
        input.extend_from_slice(b"\nhelp\n");
        let (out, _) = converse(&input, |_| unreachable!());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("ERR line too long\n"), "{text}");
        // The rest of the long line is dropped as it comes, not read as a
        // command; the next command is found.
        assert!(text.contains("commands:"), "{text}");
        assert_eq!(text.matches("ERR").count(), 1, "{text}");
        let mut spaces = vec![b' '; 300];
        spaces.extend_from_slice(b"stats\n");
        let (out, _) = converse(&spaces, |_| panic!("the tail of a long line is no command"));
        assert_eq!(out, b"ERR line too long\n");
    }

    /// One admin call at `now` with `input` appended and `room` bytes free
    /// in the send buffer (what is already there stays: the client has not
    /// read it).
    pub(super) struct Operator {
        pub(super) admin: Admin,
        pub(super) recv: ByteBuf,
        pub(super) send: ByteBuf,
        pub(super) pool: BufPool,
        pub(super) out_pool: BufPool,
    }

    impl Operator {
        pub(super) fn new() -> Operator {
            Operator {
                admin: Admin::default(),
                recv: ByteBuf::new(256),
                send: ByteBuf::new(4096),
                pool: BufPool::new(256),
                out_pool: BufPool::new(4096),
            }
        }

        pub(super) fn call(&mut self, input: &[u8], now: Instant) -> Outcome {
            self.recv.append(&mut self.pool, input);
            let peer = "127.0.0.1:1".parse().unwrap();
            let mut io = Io::new(
                &mut self.recv,
                &mut self.send,
                &mut self.out_pool,
                peer,
                now,
            );
            self.admin.process(&mut io)
        }
    }

    #[test]
    fn a_watch_sends_a_snapshot_per_interval_and_skips_for_a_slow_reader() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut op = Operator::new();
        let first = op.call(b"watch 100\n", t0);
        assert_eq!(
            first.effect,
            Some(Effect::Query(Query::Watch {
                cursor: Cursor::default()
            }))
        );
        op.admin.deliver(b"{snapshot}\n".to_vec(), None);
        let written = op.call(b"", t0);
        assert_eq!(op.send.data(), b"{snapshot}\n");
        assert_eq!(written.wake_at, Some(t0 + ms(100)), "next one is due then");
        // Not yet due: only a wake-up time.
        let early = op.call(b"", t0 + ms(50));
        assert_eq!((early.effect, early.wake_at), (None, Some(t0 + ms(100))));
        // Due, but the client has not read the last one: skipped.
        let due = op.call(b"", t0 + ms(100));
        assert_eq!(due.effect, None);
        assert_eq!(op.admin.skipped_snapshots(), 1);
        // Once it has read, the next one is asked for.
        op.send.clear();
        let next = op.call(b"", t0 + ms(200));
        assert!(matches!(
            next.effect,
            Some(Effect::Query(Query::Watch { .. }))
        ));
        op.admin.deliver(b"{s}\n".to_vec(), None);
        // Any line ends the watch.
        op.call(b"\n", t0 + ms(250));
        assert_eq!(op.call(b"", t0 + ms(400)).effect, None);
        // So does the client's half-close.
        let mut closer = Operator::new();
        closer.call(b"watch 100\n", t0);
        closer.admin.deliver(b"{s}\n".to_vec(), None);
        let peer = "127.0.0.1:1".parse().unwrap();
        let mut io = Io::new(
            &mut closer.recv,
            &mut closer.send,
            &mut closer.out_pool,
            peer,
            t0,
        );
        io.eof = true;
        assert_eq!(
            closer.admin.process(&mut io).next,
            super::super::Next::CloseAfterFlush
        );
    }

    #[test]
    fn regression_a_text_connection_sending_post_or_host_is_closed() {
        let (out, closed) = converse(b"help\nPOST /x HTTP/1.1\r\nstats\n", |q| {
            panic!("a command after POST was run: {q:?}")
        });
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("commands:") && !text.contains("ERR"),
            "{text}"
        );
        assert!(closed);
        let (out, closed) = converse(b"Host: a\r\nstats\n", |q| {
            panic!("a command after Host: was run: {q:?}")
        });
        assert!(out.is_empty() && closed);
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::{Cursor, HELP, Query};
        use crate::service::ServiceKind;
        use crate::service::testing::{config, converse, hops, steps};

        /// A command line's text: every command, in odd case and spacing,
        /// blank lines and unknown commands.
        fn command() -> impl Strategy<Value = &'static str> {
            prop_oneof![
                Just("stats"),
                Just("stats json"),
                Just("  STATS  "),
                Just("clients"),
                Just("Clients JSON"),
                Just("help"),
                Just(""),
                Just("   "),
                Just("frobnicate"),
                Just("stats xml"),
                Just("metrics"),
                Just("watch 5"),
                Just("quit"),
                Just("exit"),
            ]
        }

        /// How many parts a `clients` answer comes in.
        const PARTS: usize = 3;

        /// The reactor of these tests: `stats` answered whole, `clients`
        /// in [`PARTS`] parts, each naming its query.
        fn answer(query: Query) -> (Vec<u8>, Option<Query>) {
            match query {
                Query::Stats { json } => (
                    format!("stats json={json} {}\n", "s".repeat(40)).into_bytes(),
                    None,
                ),
                Query::Clients { json, cursor } => {
                    let part = format!("clients json={json} part {}\n", cursor.rows).into_bytes();
                    let next = (cursor.rows + 1 < PARTS).then_some(Query::Clients {
                        json,
                        cursor: Cursor {
                            next_key: cursor.next_key + 10,
                            rows: cursor.rows + 1,
                            started: true,
                        },
                    });
                    (part, next)
                }
                Query::Metrics => (b"# metrics\n".to_vec(), None),
                // No `watch` is started here (the case below is refused).
                Query::Watch { .. } => unreachable!("no watch in these tests"),
            }
        }

        /// The queries a command asks, in order, and what comes back;
        /// `None` for `quit`.
        fn expected(command: &str) -> Option<(Vec<Query>, Vec<u8>)> {
            let words = command.trim().to_ascii_lowercase();
            let first = |json| {
                let mut queries = vec![Query::Clients {
                    json,
                    cursor: Cursor::default(),
                }];
                let mut out = Vec::new();
                while let (part, Some(next)) = answer(*queries.last().expect("one at least")) {
                    out.extend(part);
                    queries.push(next);
                }
                out.extend(answer(*queries.last().expect("one at least")).0);
                (queries, out)
            };
            Some(match words.as_str() {
                "quit" | "exit" => return None,
                "" => (Vec::new(), Vec::new()),
                "help" => (Vec::new(), HELP.as_bytes().to_vec()),
                "stats" => (
                    vec![Query::Stats { json: false }],
                    answer(Query::Stats { json: false }).0,
                ),
                "stats json" => (
                    vec![Query::Stats { json: true }],
                    answer(Query::Stats { json: true }).0,
                ),
                "clients" => first(false),
                "clients json" => first(true),
                "metrics" => (vec![Query::Metrics], answer(Query::Metrics).0),
                "watch 5" => (
                    Vec::new(),
                    b"ERR watch takes milliseconds, 50 to 60000\n".to_vec(),
                ),
                _ => (Vec::new(), b"ERR unknown command, try help\n".to_vec()),
            })
        }

        /// An HTTP request, and the answer it gets from [`answer`].
        fn http_request() -> impl Strategy<Value = (&'static [u8], Vec<u8>, bool)> {
            use super::super::{PLAIN, http_response};
            let metrics = answer(Query::Metrics).0;
            let ct = crate::observe::metrics::Format::Text.content_type();
            prop_oneof![
                Just((
                    &b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"[..],
                    http_response("200 OK", "", ct, &metrics, false),
                    true
                )),
                Just((
                    &b"HEAD /metrics HTTP/1.0\r\n\r\n"[..],
                    http_response("200 OK", "", ct, &metrics, true),
                    true
                )),
                Just((
                    &b"POST /metrics HTTP/1.1\r\nContent-Length: 6\r\n\r\nstats\n"[..],
                    http_response(
                        "405 Method Not Allowed",
                        "Allow: GET, HEAD\r\n",
                        PLAIN,
                        b"only GET and HEAD\n",
                        false
                    ),
                    false
                )),
                Just((
                    &b"GET /x HTTP/1.1\r\n\r\nhelp\n"[..],
                    http_response("404 Not Found", "", PLAIN, b"try /metrics\n", false),
                    false
                )),
                Just((
                    &b"GET /metrics HTTX/1.1\r\n\r\n"[..],
                    http_response("400 Bad Request", "", PLAIN, b"not a request line\n", false),
                    false
                )),
            ]
        }

        proptest! {
            #![proptest_config(crate::prop::cases(96))]

            /// Whatever the splits, the room and the half-close, an HTTP
            /// request gets its one answer, asks only what a scrape asks,
            /// and closes; nothing after its head is run.
            #[test]
            fn an_http_request_is_answered_the_same_whatever_the_splits(
                (request, expected, scrape) in http_request(),
                hops in hops(16),
                eof in any::<bool>(),
                send_cap in 1usize..40,
            ) {
                let run = converse(ServiceKind::Admin, &config(), &steps(request, &hops, eof), 64, send_cap, answer);
                prop_assert_eq!(String::from_utf8_lossy(&run.output), String::from_utf8_lossy(&expected));
                let asked = if scrape { vec![Query::Metrics] } else { Vec::new() };
                prop_assert_eq!(run.queries, asked);
                prop_assert!(run.closed);
            }

            /// Whatever the splits and room, each command asks the right
            /// queries in order, and the answers, some delivered in
            /// parts, come out whole and in order; `quit` or the
            /// half-close ends the connection.
            #[test]
            fn commands_become_queries_and_answers_whatever_the_splits(
                commands in proptest::collection::vec((command(), any::<bool>()), 0..10),
                hops in hops(16),
                eof in any::<bool>(),
                send_cap in 1usize..40,
            ) {
                let mut input = Vec::new();
                let mut queries = Vec::new();
                let mut output = Vec::new();
                let mut quit = false;
                for (command, crlf) in &commands {
                    input.extend_from_slice(command.as_bytes());
                    input.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
                    match expected(command) {
                        _ if quit => {}
                        None => quit = true,
                        Some((asked, answered)) => {
                            queries.extend(asked);
                            output.extend(answered);
                        }
                    }
                }
                let run = converse(ServiceKind::Admin, &config(), &steps(&input, &hops, eof), 64, send_cap, answer);
                prop_assert_eq!(String::from_utf8_lossy(&run.output), String::from_utf8_lossy(&output));
                prop_assert_eq!(run.queries, queries);
                prop_assert_eq!(run.closed, quit || eof);
            }
        }
    }
}
