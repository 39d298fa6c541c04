//! The admin service: line commands that show the server's counters and,
//! per connection, where its bytes sit: kernel receive queue, receive buffer,
//! send buffer, kernel send queue.
//!
//! Commands: `stats`, `clients` (each also as `stats json` / `clients json`,
//! one JSON line), `help`, `quit`. The service only parses commands and
//! formats answers. Figures about other connections are the reactor's: a
//! `stats` or `clients` command becomes an [`Effect::Query`], the reactor
//! gathers a snapshot, and hands the formatted answer back with
//! [`Admin::deliver`]. No I/O here.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Effect, Io, Outcome};
use crate::stats::{CloseReason, RefuseReason, ServiceStats, Stats};

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
  clients        one row per connection: buffers and kernel queues
  stats json     the same as one JSON line (likewise clients json)
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
}

impl Admin {
    /// An answer is on its way (asked of the reactor) or still being
    /// written out: the connection is not done even with no input left.
    pub fn is_producing(&self) -> bool {
        self.awaiting || self.sent < self.pending.len() || self.next.is_some()
    }

    /// The reactor's answer to the last query: the whole of it, or a part
    /// and the query for the rest (`next`), asked once this part is sent.
    pub fn deliver(&mut self, answer: Vec<u8>, next: Option<Query>) {
        self.awaiting = false;
        self.pending = answer;
        self.sent = 0;
        self.next = next;
    }

    /// Answers commands one at a time.
    pub fn process(&mut self, io: &mut Io<'_>) -> Outcome {
        loop {
            if self.sent < self.pending.len() {
                self.sent += io.write(&self.pending[self.sent..]);
                if self.sent < self.pending.len() {
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
            let data = io.input.data();
            let from = self.scanned.min(data.len());
            let newline = memchr::memchr(b'\n', &data[from..]).map(|at| from + at);
            self.scanned = if newline.is_some() { 0 } else { data.len() };
            let (line, consumed) = match newline {
                Some(pos) => (&data[..pos], pos + 1),
                None if io.input.is_full() => {
                    io.input.clear();
                    self.scanned = 0;
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

/// One connection as the `clients` command shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRow {
    pub id: usize,
    pub peer: SocketAddr,
    pub service: &'static str,
    pub age: Duration,
    pub idle: Duration,
    pub recv_used: usize,
    pub recv_capacity: usize,
    pub send_used: usize,
    pub send_capacity: usize,
    /// Bytes the kernel received that the server has not read (SIOCINQ).
    pub kernel_recv_queue: Option<usize>,
    /// Bytes written to the kernel and not yet acknowledged by the peer,
    /// sent or not (SIOCOUTQ).
    pub kernel_send_queue: Option<usize>,
    /// Of those, the bytes not even sent yet (SIOCOUTQNSD).
    pub kernel_unsent: Option<usize>,
    /// The kernel's buffer sizes as it reports them (Linux doubles the size
    /// asked for with setsockopt, to leave room for its bookkeeping).
    pub so_rcvbuf: Option<usize>,
    pub so_sndbuf: Option<usize>,
    /// reading, paused (backpressure), draining (sending what is owed
    /// before closing) or closing (our side shut, waiting for the client).
    pub state: &'static str,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

fn opt(n: Option<usize>) -> String {
    n.map_or_else(|| "-".to_string(), |n| n.to_string())
}

fn json_opt(n: Option<usize>) -> String {
    n.map_or_else(|| "null".to_string(), |n| n.to_string())
}

/// The `clients` answer: a table, or one JSON line. Whole, as the parts
/// [`clients_head`], [`clients_rows`] and [`clients_tail`] make it.
pub fn render_clients(rows: &[ClientRow], json: bool) -> String {
    let mut out = clients_head(json);
    out.push_str(&clients_rows(rows, json, true));
    out.push_str(&clients_tail(json, rows.len()));
    out
}

/// What a `clients` answer starts with: the table header, or the JSON
/// opening.
pub fn clients_head(json: bool) -> String {
    if json {
        return "{\"clients\":[".to_string();
    }
    format!(
        "{:>5} {:<22} {:<6} {:>8} {:>8} {:>15} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:<8}\n",
        "id",
        "peer",
        "svc",
        "age_s",
        "idle_s",
        "recv_buf",
        "send_buf",
        "kern_rq",
        "kern_sq",
        "unsent",
        "rcvbuf",
        "sndbuf",
        "state"
    )
}

/// Rows of a `clients` answer; `first`: no row came before them (so JSON
/// needs no comma first).
pub fn clients_rows(rows: &[ClientRow], json: bool, first: bool) -> String {
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        if json {
            if i > 0 || !first {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"id\":{},\"peer\":\"{}\",\"service\":\"{}\",\"age_secs\":{:.3},\"idle_secs\":{:.3},\
                 \"recv_buf_used\":{},\"recv_buf_capacity\":{},\"send_buf_used\":{},\"send_buf_capacity\":{},\
                 \"kernel_recv_queue\":{},\"kernel_send_queue\":{},\"kernel_send_unsent\":{},\
                 \"so_rcvbuf\":{},\"so_sndbuf\":{},\"state\":\"{}\",\"bytes_in\":{},\"bytes_out\":{}}}",
                r.id,
                r.peer,
                r.service,
                r.age.as_secs_f64(),
                r.idle.as_secs_f64(),
                r.recv_used,
                r.recv_capacity,
                r.send_used,
                r.send_capacity,
                json_opt(r.kernel_recv_queue),
                json_opt(r.kernel_send_queue),
                json_opt(r.kernel_unsent),
                json_opt(r.so_rcvbuf),
                json_opt(r.so_sndbuf),
                r.state,
                r.bytes_in,
                r.bytes_out
            );
        } else {
            let _ = writeln!(
                out,
                "{:>5} {:<22} {:<6} {:>8.1} {:>8.1} {:>15} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:<8}",
                r.id,
                r.peer.to_string(),
                r.service,
                r.age.as_secs_f64(),
                r.idle.as_secs_f64(),
                format!("{}/{}", r.recv_used, r.recv_capacity),
                r.send_used,
                opt(r.kernel_recv_queue),
                opt(r.kernel_send_queue),
                opt(r.kernel_unsent),
                opt(r.so_rcvbuf),
                opt(r.so_sndbuf),
                r.state
            );
        }
    }
    out
}

/// What a `clients` answer of `rows` rows ends with.
pub fn clients_tail(json: bool, rows: usize) -> String {
    if json {
        return "]}\n".to_string();
    }
    format!(
        "({rows} connections; path of a byte in: kern_rq -> recv_buf -> service; out: send_buf -> kern_sq -> peer; \
         kern_sq counts sent-but-unacknowledged bytes too, unsent is the part not yet sent; \
         rcvbuf/sndbuf are the kernel's sizes, which Linux doubles from what was asked)\n"
    )
}

fn stats_json(s: &ServiceStats) -> String {
    let refused: Vec<String> = RefuseReason::ALL
        .iter()
        .map(|r| {
            format!(
                "\"{}\":{}",
                r.name().replace('-', "_"),
                s.refused[*r as usize]
            )
        })
        .collect();
    let closed: Vec<String> = CloseReason::ALL
        .iter()
        .map(|r| format!("\"{}\":{}", r.name(), s.closed[*r as usize]))
        .collect();
    format!(
        "{{\"accepted\":{},\"active\":{},\"refused\":{{{}}},\"closed\":{{{}}},\"bytes_in\":{},\"bytes_out\":{}}}",
        s.accepted,
        s.active,
        refused.join(","),
        closed.join(","),
        s.bytes_in,
        s.bytes_out
    )
}

/// The `stats` answer: a table, or one JSON line. `services` are the names
/// and counters of the services this server runs.
pub fn render_stats(
    stats: &Stats,
    services: &[(&str, &ServiceStats)],
    uptime: Duration,
    json: bool,
) -> String {
    let total = stats.total();
    if json {
        let per: Vec<String> = services
            .iter()
            .map(|(name, s)| format!("\"{name}\":{}", stats_json(s)))
            .collect();
        return format!(
            "{{\"uptime_secs\":{:.3},\"services\":{{{}}},\"total\":{}}}\n",
            uptime.as_secs_f64(),
            per.join(","),
            stats_json(&total)
        );
    }
    let mut out = format!("uptime {:.1} s\n", uptime.as_secs_f64());
    let mut header = format!("{:<8} {:>9} {:>7}", "service", "accepted", "active");
    for r in RefuseReason::ALL {
        let _ = write!(header, " {:>14}", format!("refused:{}", r.name()));
    }
    for r in CloseReason::ALL {
        let _ = write!(header, " {:>15}", format!("closed:{}", r.name()));
    }
    let _ = writeln!(out, "{header} {:>13} {:>13}", "bytes_in", "bytes_out");
    for (name, s) in services.iter().copied().chain([("total", &total)]) {
        let _ = write!(out, "{name:<8} {:>9} {:>7}", s.accepted, s.active);
        for r in RefuseReason::ALL {
            let _ = write!(out, " {:>14}", s.refused[r as usize]);
        }
        for r in CloseReason::ALL {
            let _ = write!(out, " {:>15}", s.closed[r as usize]);
        }
        let _ = writeln!(out, " {:>13} {:>13}", s.bytes_in, s.bytes_out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{BufPool, ByteBuf};
    use crate::service::ServiceKind;

    /// Feeds `input` to an admin connection, answering each query with
    /// `answer(query)`; returns everything written back.
    fn converse(input: &[u8], answer: impl Fn(Query) -> Vec<u8>) -> (Vec<u8>, bool) {
        let mut pool = BufPool::new(64);
        let mut out_pool = BufPool::new(32);
        let mut recv = ByteBuf::new(64);
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
        // The rest of the long line is dropped as it comes; the next
        // command is found, however far the search had got before.
        assert!(text.contains("commands:"), "{text}");
    }

    fn row() -> ClientRow {
        ClientRow {
            id: 3,
            peer: "127.0.0.1:5000".parse().unwrap(),
            service: "echo",
            age: Duration::from_millis(1500),
            idle: Duration::from_millis(250),
            recv_used: 10,
            recv_capacity: 65536,
            send_used: 20,
            send_capacity: 65536,
            kernel_recv_queue: Some(30),
            kernel_send_queue: Some(40),
            kernel_unsent: Some(5),
            so_rcvbuf: Some(131072),
            so_sndbuf: None,
            state: "paused",
            bytes_in: 100,
            bytes_out: 90,
        }
    }

    #[test]
    fn clients_json_is_one_line_with_every_field() {
        let text = render_clients(&[row(), row()], true);
        assert_eq!(text.lines().count(), 1);
        for field in [
            "\"id\":3",
            "\"peer\":\"127.0.0.1:5000\"",
            "\"recv_buf_used\":10",
            "\"kernel_recv_queue\":30",
            "\"kernel_send_queue\":40",
            "\"kernel_send_unsent\":5",
            "\"so_rcvbuf\":131072",
            "\"so_sndbuf\":null",
            "\"state\":\"paused\"",
        ] {
            assert!(text.contains(field), "{field} in {text}");
        }
        assert!(text.starts_with("{\"clients\":[{") && text.ends_with("}]}\n"));
    }

    #[test]
    fn clients_table_has_a_header_and_a_row_per_connection() {
        let text = render_clients(&[row()], false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("kern_rq") && lines[0].contains("state"));
        assert!(lines[1].contains("127.0.0.1:5000") && lines[1].contains("10/65536"));
        assert!(lines[1].trim_end().ends_with("paused"));
    }

    #[test]
    fn stats_show_each_service_and_the_total() {
        let mut stats = Stats::default();
        stats.opened(ServiceKind::Echo);
        stats.refused(ServiceKind::Echo, RefuseReason::Full);
        stats.closed(ServiceKind::Echo, CloseReason::Idle);
        let echo = stats.services[ServiceKind::Echo.index()].clone();
        let json = render_stats(&stats, &[("echo", &echo)], Duration::from_secs(2), true);
        assert_eq!(json.lines().count(), 1);
        assert!(json.contains("\"echo\":{\"accepted\":1,\"active\":0,\"refused\":{\"full\":1,\"per_ip\":0},\"closed\":{\"peer\":0,\"idle\":1"), "{json}");
        assert!(json.contains("\"total\":{\"accepted\":1"), "{json}");
        let text = render_stats(&stats, &[("echo", &echo)], Duration::from_secs(2), false);
        assert!(text.lines().any(|l| l.starts_with("echo ")));
        assert!(text.lines().any(|l| l.starts_with("total ")));
        assert!(text.contains("closed:idle"));
    }
}
