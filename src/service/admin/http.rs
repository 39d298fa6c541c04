//! The admin service's HTTP face: a connection whose first bytes are an
//! HTTP method and a space ([`first_bytes`]) speaks HTTP to the end, one
//! request, then close: `GET` and `HEAD` of `/metrics` get the Prometheus
//! text (`HEAD`: the headers only; OpenMetrics when `Accept` asks for it),
//! any other path `404`, any other method `405` with `Allow: GET, HEAD`, a
//! request line that is not `METHOD TARGET HTTP/1.x` `400`, a head over
//! [`MAX_HTTP_HEAD`] bytes or [`MAX_HTTP_HEADERS`] lines `431` (`414` for
//! the request line alone), and one that does not arrive whole within
//! `--request-timeout` `408`. Whatever follows the head (a `POST` body) is
//! never read as commands: the answer closes the conversation. The text
//! commands are in the parent module. No I/O here.

use super::{Admin, Effect, Io, Outcome, Query};
use crate::observe::metrics::Format;

/// Most header lines of an HTTP request read before the answer: a scraper
/// sends a handful; anything that keeps sending is not one (`431`).
pub const MAX_HTTP_HEADERS: usize = 64;

/// Most bytes of an HTTP request's head, request line and headers: a
/// scrape's is a few hundred; nginx allows 32 KiB by default
/// (`large_client_header_buffers 4 8k`). Past it the answer is `431` (`414`
/// for a request line alone that long), rather than reading on.
pub const MAX_HTTP_HEAD: usize = 32 * 1024;

/// The methods a connection's first bytes are checked against: one of
/// them and a space make it an HTTP connection ([`first_bytes`]).
const HTTP_METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
];

/// What a connection's first bytes say about the protocol it speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstBytes {
    /// An HTTP method and a space.
    Http,
    /// Anything else: the text commands.
    Text,
    /// Too few bytes to tell (none, or the start of a method).
    Unknown,
}

/// Decides from a connection's first bytes whether it speaks HTTP. Methods
/// are case-sensitive in HTTP, and no text command is a method in capitals,
/// so an operator typing `stats` is never taken for a browser.
pub fn first_bytes(head: &[u8]) -> FirstBytes {
    let mut unknown = false;
    for method in HTTP_METHODS {
        let token = method.iter().chain(b" ");
        let matched = head.iter().zip(token).take_while(|(a, b)| a == b).count();
        if matched == method.len() + 1 {
            return FirstBytes::Http;
        }
        unknown |= matched == head.len();
    }
    if unknown {
        FirstBytes::Unknown
    } else {
        FirstBytes::Text
    }
}

/// An HTTP request (a Prometheus scrape) being read or answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Http {
    /// Reading the request: its line (`ask` is `None` until it has come),
    /// then header lines up to the blank one. `head`: the method was
    /// `HEAD`, so no answer has a body. `lines` and `bytes` of the head so
    /// far, bounded by [`MAX_HTTP_HEADERS`] and [`MAX_HTTP_HEAD`].
    Request {
        ask: Option<Ask>,
        head: bool,
        lines: usize,
        bytes: usize,
        /// An `Accept` header asked for OpenMetrics.
        open_metrics: bool,
    },
    /// The answer is asked for or being written; close once it is sent.
    /// `head`: the headers only. `open_metrics`: the request's `Accept`
    /// asked for OpenMetrics (otherwise the text format 0.0.4).
    Answering { head: bool, open_metrics: bool },
    /// The request did not arrive whole in time: the `408` goes out, then
    /// the reactor closes the connection. Nothing more is read.
    TimedOut,
}

/// What an HTTP request line asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ask {
    Metrics,
    NotFound,
    NotAllowed,
}

/// The text of an answer that is not the metrics.
pub(super) const PLAIN: &str = "text/plain; charset=utf-8";

impl Admin {
    /// Reads the HTTP request's head a line at a time; `Some` to return
    /// that outcome, `None` to go on (an answer is pending, or a line was
    /// taken).
    pub(super) fn read_http(&mut self, io: &mut Io<'_>) -> Option<Outcome> {
        let Some(Http::Request {
            ask,
            head,
            lines,
            bytes,
            open_metrics,
        }) = self.http
        else {
            return None;
        };
        let data = io.input.data();
        let from = self.scanned.min(data.len());
        let Some(pos) = memchr::memchr(b'\n', &data[from..]).map(|at| from + at) else {
            self.scanned = data.len();
            if bytes + data.len() > MAX_HTTP_HEAD || io.input.is_full() {
                // This line cannot end within the limit: answered now, and
                // the rest is never read as anything.
                io.input.clear();
                self.scanned = 0;
                let status = match ask {
                    None => "414 URI Too Long",
                    Some(_) => "431 Request Header Fields Too Large",
                };
                self.answer_http(status, "", b"request head too large\n", head);
            } else if io.eof {
                io.input.clear();
                self.scanned = 0;
                self.answer_http(
                    "400 Bad Request",
                    "",
                    b"the request ended inside its head\n",
                    head,
                );
            } else {
                return Some(Outcome::proceed(false));
            }
            return None;
        };
        self.scanned = 0;
        let line = &data[..pos];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let bytes = bytes + pos + 1;
        enum Step {
            Line(Http),
            Answer(Ask, bool, bool),
            Refuse(&'static str, &'static [u8], bool),
        }
        let step = match ask {
            _ if bytes > MAX_HTTP_HEAD => Step::Refuse(
                match ask {
                    None => "414 URI Too Long",
                    Some(_) => "431 Request Header Fields Too Large",
                },
                b"request head too large\n",
                head,
            ),
            None => match parse_request_line(line) {
                Some((ask, head)) => Step::Line(Http::Request {
                    ask: Some(ask),
                    head,
                    lines: 0,
                    bytes,
                    open_metrics,
                }),
                None => Step::Refuse("400 Bad Request", b"not a request line\n", false),
            },
            Some(ask) if line.is_empty() => Step::Answer(ask, head, open_metrics),
            Some(_) if lines >= MAX_HTTP_HEADERS => Step::Refuse(
                "431 Request Header Fields Too Large",
                b"too many header lines\n",
                head,
            ),
            Some(ask) => Step::Line(Http::Request {
                ask: Some(ask),
                head,
                lines: lines + 1,
                bytes,
                open_metrics: open_metrics || asks_for_open_metrics(line),
            }),
        };
        io.input.consume(pos + 1);
        match step {
            Step::Line(next) => self.http = Some(next),
            Step::Refuse(status, body, head) => {
                // What follows is never read as anything: the answer
                // closes the conversation.
                io.input.clear();
                self.answer_http(status, "", body, head);
            }
            Step::Answer(Ask::Metrics, head, open_metrics) => {
                self.http = Some(Http::Answering { head, open_metrics });
                self.awaiting = true;
                return Some(Outcome::proceed(false).with_effect(Effect::Query(Query::Metrics)));
            }
            Step::Answer(Ask::NotFound, head, _) => {
                self.answer_http("404 Not Found", "", b"try /metrics\n", head);
            }
            Step::Answer(Ask::NotAllowed, head, _) => self.answer_http(
                "405 Method Not Allowed",
                "Allow: GET, HEAD\r\n",
                b"only GET and HEAD\n",
                head,
            ),
        }
        None
    }

    /// Answers the HTTP request with `status` (and `headers`, each ending
    /// in CRLF), then the conversation is over.
    fn answer_http(&mut self, status: &str, headers: &str, body: &[u8], head: bool) {
        self.pending = http_response(status, headers, PLAIN, body, head);
        self.sent = 0;
        self.http = Some(Http::Answering {
            head,
            open_metrics: false,
        });
    }
}

/// Whether header line `line` is an `Accept` that asks for OpenMetrics
/// (see [`Format::from_accept`]).
fn asks_for_open_metrics(line: &[u8]) -> bool {
    let Some((name, value)) = std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.split_once(':'))
    else {
        return false;
    };
    name.trim().eq_ignore_ascii_case("accept")
        && Format::from_accept(Some(value.trim())) == Format::OpenMetrics
}

/// An HTTP request line, `METHOD TARGET HTTP/1.x` with single spaces: what
/// it asks, and whether it is `HEAD`; `None` if it is not one.
fn parse_request_line(line: &[u8]) -> Option<(Ask, bool)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    let target_ok =
        (target.starts_with('/') || target == "*") && !target.bytes().any(|b| b.is_ascii_control());
    if !method_ok || !target_ok || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return None;
    }
    let head = method == "HEAD";
    let path = target.split('?').next().unwrap_or(target);
    let ask = if method != "GET" && !head {
        Ask::NotAllowed
    } else if path == "/metrics" {
        Ask::Metrics
    } else {
        Ask::NotFound
    };
    Some((ask, head))
}

/// An HTTP/1.0 response, closing the connection: `status`, then `headers`
/// (each ending in CRLF), the body's type and length, and the body unless
/// `head_only` (the answer to `HEAD` says the length a `GET` would get).
pub fn http_response(
    status: &str,
    headers: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.0 {status}\r\n{headers}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::tests::{Operator, converse_with};
    use super::*;

    #[test]
    fn an_http_get_of_metrics_is_answered_as_http_then_closed() {
        let mut op = Operator::new();
        let asked = op.call(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n",
            Instant::now(),
        );
        assert_eq!(asked.effect, None, "headers are still coming");
        let asked = op.call(b"\r\n", Instant::now());
        assert_eq!(asked.effect, Some(Effect::Query(Query::Metrics)));
        op.admin.deliver(b"a 1\n".to_vec(), None);
        let done = op.call(b"", Instant::now());
        let text = String::from_utf8(op.send.data().to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 4\r\n") && text.ends_with("\r\n\r\na 1\n"));
        assert_eq!(done.next, crate::service::Next::CloseAfterFlush);
        let mut other = Operator::new();
        other.call(b"GET / HTTP/1.0\r\n\r\n", Instant::now());
        let text = String::from_utf8(other.send.data().to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.0 404 Not Found"), "{text}");
    }

    #[test]
    fn regression_a_plain_scraper_got_openmetrics_it_cannot_read() {
        let open_metrics = "# TYPE x counter\n# HELP x X.\nx_total 1\n# EOF\n";
        let scrape = |request: &[u8]| {
            let (out, _) = converse_with(request, 65536, |_| open_metrics.as_bytes().to_vec());
            String::from_utf8(out).unwrap()
        };
        let plain = scrape(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
        assert!(
            plain.contains("Content-Type: text/plain; version=0.0.4"),
            "{plain}"
        );
        assert!(
            plain.ends_with("\r\n\r\n# TYPE x_total counter\n# HELP x_total X.\nx_total 1\n"),
            "{plain}"
        );
        let asked = scrape(
            b"GET /metrics HTTP/1.1\r\naccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
        );
        assert!(
            asked.contains("Content-Type: application/openmetrics-text"),
            "{asked}"
        );
        assert!(asked.ends_with(open_metrics), "{asked}");
    }

    /// The answer to `request`, as text; metrics are answered `m\n`.
    fn http(request: &[u8], recv_cap: usize) -> String {
        let (out, closed) = converse_with(request, recv_cap, |q| match q {
            Query::Metrics => b"m\n".to_vec(),
            other => panic!("{other:?} asked by an HTTP request"),
        });
        assert!(closed, "an HTTP connection closes after its answer");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn first_bytes_tell_http_from_text() {
        use FirstBytes::{Http, Text, Unknown};
        for (bytes, kind) in [
            (&b""[..], Unknown),
            (b"G", Unknown),
            (b"GET", Unknown),
            (b"CONNEC", Unknown),
            (b"GET ", Http),
            (b"HEAD /metrics", Http),
            (b"OPTIONS * HTTP/1.1", Http),
            (b"POST /", Http),
            (b"stats\n", Text),
            (b"GETX", Text),
            (b"get /metrics HTTP/1.1", Text),
            (b"\n", Text),
            (b"Host: x", Text),
            (b"  STATS", Text),
        ] {
            assert_eq!(
                first_bytes(bytes),
                kind,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn regression_http_head_of_metrics_gets_the_length_a_get_would_and_no_body() {
        let answer = http(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 64);
        assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
        assert!(answer.contains("\r\nContent-Length: 2\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n"), "no body: {answer}");
    }

    #[test]
    fn regression_an_http_post_is_refused_and_its_body_never_run_as_commands() {
        let answer = http(
            b"POST /metrics HTTP/1.1\r\nContent-Length: 12\r\n\r\nstats\nhelp\n",
            64,
        );
        assert!(
            answer.starts_with("HTTP/1.0 405 Method Not Allowed\r\nAllow: GET, HEAD\r\n"),
            "{answer}"
        );
        assert!(!answer.contains("commands:"), "{answer}");
        let answer = http(b"DELETE /x HTTP/1.1\r\n\r\n", 64);
        assert!(answer.starts_with("HTTP/1.0 405 "), "{answer}");
    }

    #[test]
    fn regression_http_other_paths_get_404_and_bad_request_lines_400() {
        assert!(http(b"GET / HTTP/1.0\r\n\r\n", 64).starts_with("HTTP/1.0 404 Not Found\r\n"));
        let answer = http(b"HEAD /x HTTP/1.0\r\n\r\n", 64);
        assert!(
            answer.starts_with("HTTP/1.0 404 ") && answer.ends_with("\r\n\r\n"),
            "{answer}"
        );
        assert!(http(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n", 64).ends_with("\r\n\r\nm\n"));
        for bad in [
            &b"GET /metrics HTTX/1.1\r\n\r\n"[..],
            b"GET /metrics\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 x\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /m\x01 HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: x",
        ] {
            let answer = http(bad, 64);
            assert!(
                answer.starts_with("HTTP/1.0 400 Bad Request\r\n"),
                "{:?}: {answer}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn regression_http_heads_past_their_limits_get_431_or_414_and_nothing_else() {
        // A header line longer than the receive buffer.
        let mut long_header = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long_header.extend([b'a'; 200]);
        long_header.extend_from_slice(b"\r\n\r\nstats\n");
        let answer = http(&long_header, 64);
        assert!(
            answer.starts_with("HTTP/1.0 431 Request Header Fields Too Large\r\n"),
            "{answer}"
        );
        assert_eq!(answer.matches("HTTP/").count(), 1, "{answer}");
        // Too many header lines.
        let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for _ in 0..=MAX_HTTP_HEADERS {
            many.extend_from_slice(b"X: y\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert!(http(&many, 64).starts_with("HTTP/1.0 431 "));
        // More bytes of head than the limit, in lines that each fit.
        let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for _ in 0..MAX_HTTP_HEADERS {
            big.extend_from_slice(format!("X: {}\r\n", "b".repeat(MAX_HTTP_HEAD / 40)).as_bytes());
        }
        big.extend_from_slice(b"\r\n");
        assert!(http(&big, 4096).starts_with("HTTP/1.0 431 "));
        // A request line alone longer than the buffer.
        let mut long_line = b"GET /".to_vec();
        long_line.extend([b'm'; 200]);
        long_line.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        assert!(http(&long_line, 64).starts_with("HTTP/1.0 414 URI Too Long\r\n"));
    }

    #[test]
    fn regression_an_http_request_that_stalls_is_answered_408_when_timed_out() {
        let t0 = Instant::now();
        let mut op = Operator::new();
        op.call(b"GET /met", t0);
        assert!(
            op.admin.awaiting_request(),
            "the first bytes make it an HTTP request"
        );
        op.call(b"rics HTTP/1.1\r\nHost: x\r\n", t0);
        assert!(op.admin.awaiting_request(), "the head has not ended");
        op.admin.time_out_request();
        assert!(!op.admin.awaiting_request());
        let after = op.call(b"\r\n", t0);
        assert_eq!(
            (after.next, after.effect),
            (crate::service::Next::Continue, None),
            "nothing more is read; the reactor ends the connection"
        );
        let text = String::from_utf8(op.send.data().to_vec()).unwrap();
        assert!(
            text.starts_with("HTTP/1.0 408 Request Timeout\r\n"),
            "{text}"
        );
        // A text connection never awaits a request: it is merely quiet.
        let mut text_op = Operator::new();
        text_op.call(b"stat", t0);
        assert!(!text_op.admin.awaiting_request());
        text_op.admin.time_out_request();
        assert!(text_op.send.is_empty());
    }
}
