//! One connection as the `clients` command shows it (a [`ClientRow`]),
//! the rule that names what holds its outgoing bytes back ([`Limit`]), and
//! the `clients` answer in its two forms, a table and one JSON line, in
//! parts so it can be rendered in bounded steps. Pure: the rows are filled
//! by whoever holds the sockets; no I/O here.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::tcp::TcpInfo;

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
    /// reading, paused (backpressure), finishing, draining (sending what
    /// is owed before closing) or closing (our side shut, waiting for the
    /// client).
    pub state: &'static str,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The last write to the socket would have blocked: the kernel's send
    /// buffer is full.
    pub write_blocked: bool,
    /// What the kernel knows of the connection (TCP_INFO), if it said.
    pub tcp: Option<TcpInfo>,
    /// Admin connections: `watch` snapshots skipped because the client had
    /// not read the previous one.
    pub snapshots_skipped: Option<u64>,
}

/// What holds a connection's outgoing bytes back right now, from its
/// buffers and the kernel's figures (see [`ClientRow::limit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Limit {
    /// Nothing is waiting to be sent.
    Idle,
    /// The peer's advertised window is full: the client is not reading.
    PeerWindow,
    /// The congestion window is full: the network (or slow start) sets
    /// the pace.
    Congestion,
    /// Our kernel send buffer is full; the peer's window still has room.
    SendBuffer,
    /// Bytes are moving and nothing in particular holds them.
    None,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::Idle => "idle",
            Limit::PeerWindow => "peer-window",
            Limit::Congestion => "congestion",
            Limit::SendBuffer => "send-buffer",
            Limit::None => "none",
        }
    }
}

impl ClientRow {
    /// What holds this connection back: first whether anything waits to be
    /// sent at all; then the peer's window (bytes not yet sent while what is
    /// in flight fills the window the peer advertised), then the congestion
    /// window (as many segments in flight as it allows), then our kernel send
    /// buffer (the last write would have blocked).
    pub fn limit(&self) -> Limit {
        let queued = self.kernel_send_queue.unwrap_or(0);
        if self.send_used == 0 && queued == 0 {
            return Limit::Idle;
        }
        let unsent = self.kernel_unsent.unwrap_or(0);
        let tcp = self.tcp.unwrap_or_default();
        if unsent > 0
            && let Some(window) = tcp.snd_wnd
        {
            let in_flight = queued.saturating_sub(unsent);
            let mss = tcp.snd_mss.unwrap_or(0) as usize;
            if window == 0 || in_flight + mss > window as usize {
                return Limit::PeerWindow;
            }
        }
        if unsent > 0
            && let (Some(unacked), Some(cwnd)) = (tcp.unacked, tcp.snd_cwnd)
            && unacked >= cwnd
        {
            return Limit::Congestion;
        }
        if self.write_blocked {
            return Limit::SendBuffer;
        }
        Limit::None
    }
}

fn opt(n: Option<usize>) -> String {
    n.map_or_else(|| "-".to_string(), |n| n.to_string())
}

/// A row as `clients json` shows it: every field, with TCP_INFO nested.
#[derive(Serialize)]
struct RowJson<'a> {
    id: usize,
    peer: String,
    service: &'a str,
    age_secs: f64,
    idle_secs: f64,
    recv_buf_used: usize,
    recv_buf_capacity: usize,
    send_buf_used: usize,
    send_buf_capacity: usize,
    kernel_recv_queue: Option<usize>,
    kernel_send_queue: Option<usize>,
    kernel_send_unsent: Option<usize>,
    so_rcvbuf: Option<usize>,
    so_sndbuf: Option<usize>,
    state: &'a str,
    limit: Limit,
    bytes_in: u64,
    bytes_out: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshots_skipped: Option<u64>,
    tcp: Option<TcpInfo>,
}

impl<'a> From<&'a ClientRow> for RowJson<'a> {
    fn from(r: &'a ClientRow) -> RowJson<'a> {
        RowJson {
            id: r.id,
            peer: r.peer.to_string(),
            service: r.service,
            age_secs: r.age.as_secs_f64(),
            idle_secs: r.idle.as_secs_f64(),
            recv_buf_used: r.recv_used,
            recv_buf_capacity: r.recv_capacity,
            send_buf_used: r.send_used,
            send_buf_capacity: r.send_capacity,
            kernel_recv_queue: r.kernel_recv_queue,
            kernel_send_queue: r.kernel_send_queue,
            kernel_send_unsent: r.kernel_unsent,
            so_rcvbuf: r.so_rcvbuf,
            so_sndbuf: r.so_sndbuf,
            state: r.state,
            limit: r.limit(),
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            snapshots_skipped: r.snapshots_skipped,
            tcp: r.tcp,
        }
    }
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
        "{:>5} {:<22} {:<6} {:>8} {:>8} {:>15} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:<10} {:>7} {:>5} {:<11}\n",
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
        "state",
        "rtt_ms",
        "cwnd",
        "limit"
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
            // Serialising plain numbers and strings into a String cannot
            // fail.
            out.push_str(&serde_json::to_string(&RowJson::from(r)).expect("a row serialises"));
        } else {
            let _ = writeln!(
                out,
                "{:>5} {:<22} {:<6} {:>8.1} {:>8.1} {:>15} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:<10} {:>7} {:>5} {:<11}",
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
                r.state,
                r.tcp.and_then(|t| t.rtt_us).map_or_else(
                    || "n/a".to_string(),
                    |us| format!("{:.2}", f64::from(us) / 1000.0)
                ),
                r.tcp
                    .and_then(|t| t.snd_cwnd)
                    .map_or_else(|| "n/a".to_string(), |c| c.to_string()),
                r.limit().name()
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

#[cfg(test)]
mod tests {
    use super::*;

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
            write_blocked: false,
            snapshots_skipped: None,
            tcp: Some(TcpInfo {
                rtt_us: Some(1500),
                snd_cwnd: Some(10),
                snd_mss: Some(1000),
                snd_wnd: Some(0),
                unacked: Some(0),
                ..TcpInfo::default()
            }),
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
            "\"limit\":\"peer-window\"",
            "\"rtt_us\":1500",
            "\"rttvar_us\":null",
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
        assert!(lines[1].contains(" paused "));
        assert!(lines[1].contains(" 1.50 ") && lines[1].trim_end().ends_with("peer-window"));
    }

    #[test]
    fn the_limit_names_what_holds_the_bytes_back() {
        let idle = ClientRow {
            send_used: 0,
            kernel_send_queue: Some(0),
            kernel_unsent: Some(0),
            ..row()
        };
        assert_eq!(idle.limit(), Limit::Idle);
        // Unsent bytes and a shut window: the client is not reading.
        assert_eq!(row().limit(), Limit::PeerWindow);
        let open_window = |tcp: TcpInfo| ClientRow {
            tcp: Some(TcpInfo {
                snd_wnd: Some(1 << 20),
                ..tcp
            }),
            ..row()
        };
        let congested = open_window(TcpInfo {
            unacked: Some(10),
            snd_cwnd: Some(10),
            ..row().tcp.unwrap()
        });
        assert_eq!(congested.limit(), Limit::Congestion);
        let moving = open_window(row().tcp.unwrap());
        assert_eq!(moving.limit(), Limit::None);
        let blocked = ClientRow {
            write_blocked: true,
            kernel_unsent: Some(0),
            ..moving.clone()
        };
        assert_eq!(blocked.limit(), Limit::SendBuffer);
        // A kernel that gave no TCP_INFO: judged by what is known.
        let unknown = ClientRow {
            tcp: None,
            ..moving
        };
        assert_eq!(unknown.limit(), Limit::None);
    }
}
