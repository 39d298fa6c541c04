//! The server's resolved configuration, and the parsers for the values the
//! command line takes (sizes with suffixes, `ADDR=SERVICE`). Pure: no I/O.

use std::net::SocketAddr;
use std::time::Duration;

use crate::service::{ServiceConfig, ServiceKind};

/// The per-member queue limits (`--chat-soft-limit`, `--chat-soft-secs`,
/// `--chat-hard-limit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatLimits {
    /// Over this a member congests the room and its clock starts.
    pub soft: usize,
    /// How long a member may stay over `soft`.
    pub soft_for: Duration,
    /// Over this a member is disconnected at once. At least `soft` plus a
    /// turn's broadcasts ([`ChatLimits::check`]), so a member that keeps up
    /// never reaches it.
    pub hard: usize,
}

impl Default for ChatLimits {
    fn default() -> ChatLimits {
        ChatLimits {
            soft: 256 * 1024,
            soft_for: Duration::from_secs(5),
            hard: 1024 * 1024,
        }
    }
}

impl ChatLimits {
    /// The most one sender's turn can add to a member's queue, with receive
    /// buffers of `recv_buf` bytes: its broadcast room (the soft limit),
    /// overshot by at most one line (see [`crate::service::chat`]).
    pub fn turn_broadcast(&self, recv_buf: usize) -> usize {
        self.soft
            .saturating_add(crate::service::chat::longest_line_cost(recv_buf))
    }

    /// Checks that the hard limit is at least the soft limit plus one
    /// turn's broadcast. A member that keeps up is at most at the soft limit
    /// when a sender's turn begins (past it, the room is congested and no
    /// one broadcasts), so then it never reaches the hard limit; with less,
    /// one paste drops members that read as fast as they can. The error is
    /// one line naming the flags.
    pub fn check(&self, recv_buf: usize) -> Result<(), String> {
        let turn = self.turn_broadcast(recv_buf);
        let least = self.soft.saturating_add(turn);
        if self.hard >= least {
            return Ok(());
        }
        Err(format!(
            "--chat-hard-limit {} is below --chat-soft-limit plus one turn's broadcast \
             ({} + {turn} = {least} bytes with --recv-buf {recv_buf}): members that keep up \
             would be dropped",
            self.hard, self.soft
        ))
    }
}

/// One listener to open: where, and what it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    pub addr: SocketAddr,
    pub service: ServiceKind,
}

/// Everything `serve` needs, validated.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listeners: Vec<ListenSpec>,
    /// Most bytes a connection's receive buffer holds (`--recv-buf`).
    pub recv_buf: usize,
    /// Most bytes a connection's send buffer holds (`--send-buf`); reading
    /// pauses while it is full and resumes below a quarter of it.
    pub send_buf: usize,
    /// TCP_NODELAY on accepted sockets.
    pub nodelay: bool,
    /// SO_REUSEPORT on listeners.
    pub reuse_port: bool,
    /// SO_RCVBUF / SO_SNDBUF for accepted sockets (`--so-rcvbuf`,
    /// `--so-sndbuf`); `None` leaves the kernel's autotuning alone.
    pub so_rcvbuf: Option<usize>,
    pub so_sndbuf: Option<usize>,
    /// Most open client connections (`--max-conns`), `None` for no cap.
    pub max_conns: Option<usize>,
    /// Most open connections from one IP (`--max-conns-per-ip`).
    pub max_conns_per_ip: Option<usize>,
    /// Close connections with no traffic for this long (`--idle-timeout`).
    pub idle_timeout: Option<Duration>,
    /// A request (files, or HTTP on admin) must arrive whole within this
    /// long of the connection starting to wait for it
    /// (`--request-timeout`); `None`: no limit.
    pub request_timeout: Option<Duration>,
    /// Close an admin connection not in `watch` with no traffic for this
    /// long (`--admin-idle-timeout`); `None`: never.
    pub operator_idle_timeout: Option<Duration>,
    /// At `--max-conns`, the connection idle the longest is ended to admit a
    /// newcomer if it has been idle this long (`--evict-idle-after`);
    /// `None`: never.
    pub evict_idle_after: Option<Duration>,
    /// TCP keepalive's idle time before the first probe (`--keepalive`),
    /// `None` for no keepalive.
    pub keepalive: Option<Duration>,
    /// The listen backlog and the TCP options every accepted socket gets.
    pub sockets: SocketOptions,
    /// How long a graceful shutdown may flush before it gives up.
    pub shutdown_timeout: Duration,
    /// Chat members' queue limits.
    pub chat: ChatLimits,
    pub service: ServiceConfig,
}

/// How listeners are opened, and the TCP options set on them for every
/// socket they accept (Linux copies them from the listener).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    /// The accept queue `listen(2)` asks for (`--backlog`); the kernel caps
    /// it at `net.core.somaxconn`.
    pub backlog: i32,
    /// TCP_CONGESTION (`--congestion`), checked against the kernel's list;
    /// `None` keeps the system's default.
    pub congestion: Option<String>,
    /// TCP_NOTSENT_LOWAT (`--notsent-lowat`); `None` leaves it unset.
    pub notsent_lowat: Option<u32>,
}

impl Default for SocketOptions {
    fn default() -> SocketOptions {
        SocketOptions {
            backlog: crate::sys::LISTEN_BACKLOG,
            congestion: None,
            notsent_lowat: None,
        }
    }
}

/// Where Linux lists the congestion control algorithms it has loaded.
pub const AVAILABLE_CONGESTION: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";

/// Checks `--congestion NAME` against `available` (the contents of
/// [`AVAILABLE_CONGESTION`]: names separated by spaces).
pub fn check_congestion(name: &str, available: &str) -> Result<(), String> {
    if available.split_whitespace().any(|a| a == name) {
        return Ok(());
    }
    let list = available.split_whitespace().collect::<Vec<_>>().join(" ");
    Err(format!(
        "--congestion {name}: not available here (available: {list}; \
         a missing one may need its module loaded, e.g. modprobe tcp_{name})"
    ))
}

/// The listeners `serve` opens when given no `--listen`: loopback only, on
/// the ports the notes use.
pub fn default_listeners() -> Vec<ListenSpec> {
    [
        ("127.0.0.1:7788", ServiceKind::Echo),
        ("127.0.0.1:7890", ServiceKind::Ack),
        ("127.0.0.1:8000", ServiceKind::Files),
        ("127.0.0.1:9090", ServiceKind::Chat),
        ("127.0.0.1:7999", ServiceKind::Admin),
    ]
    .into_iter()
    .map(|(addr, service)| ListenSpec {
        addr: addr.parse().expect("literal socket address"),
        service,
    })
    .collect()
}

/// Largest size any buffer flag accepts: a typo such as `64G` should be an
/// error, not an attempt to allocate it per connection.
pub const MAX_BUFFER: usize = 1 << 30;

/// Parses a byte count: digits with an optional `K`, `M` or `G` suffix
/// (binary multiples; a trailing `B` or `iB` is allowed), between 1 and
/// [`MAX_BUFFER`].
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (digits, multiplier) = match body.char_indices().last() {
        Some((i, 'k')) => (&body[..i], 1usize << 10),
        Some((i, 'm')) => (&body[..i], 1 << 20),
        Some((i, 'g')) => (&body[..i], 1 << 30),
        _ => (body, 1),
    };
    let bad = || format!("'{text}' is not a size (examples: 4096, 64K, 1M)");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: usize = digits.parse().map_err(|_| bad())?;
    let bytes = n
        .checked_mul(multiplier)
        .filter(|&b| b <= MAX_BUFFER)
        .ok_or_else(|| format!("'{text}' is larger than the limit of 1G"))?;
    if bytes == 0 {
        return Err(format!("'{text}' must be at least 1 byte"));
    }
    Ok(bytes)
}

/// Parses `ADDR=SERVICE`, e.g. `127.0.0.1:0=echo` or `[::1]:7788=ack`.
pub fn parse_listen(text: &str) -> Result<ListenSpec, String> {
    let (addr, service) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("'{text}' is not ADDR=SERVICE (example: 127.0.0.1:7788=echo)"))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("'{addr}' is not an IP:PORT address (example: 127.0.0.1:7788)"))?;
    Ok(ListenSpec {
        addr,
        service: service.parse()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2KB"), Ok(2048));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
    }

    #[test]
    fn bad_sizes_are_refused_with_the_text() {
        for bad in [
            "",
            "K",
            "-1",
            "1.5M",
            "12Q",
            "0",
            "2G",
            "99999999999999999999",
        ] {
            let err = parse_size(bad).expect_err(bad);
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }

    #[test]
    fn listen_specs_name_an_address_and_a_service() {
        let spec = parse_listen("127.0.0.1:0=echo").unwrap();
        assert_eq!(spec.addr, "127.0.0.1:0".parse().unwrap());
        assert_eq!(spec.service, ServiceKind::Echo);
        assert_eq!(
            parse_listen("[::1]:7890=ack").unwrap().service,
            ServiceKind::Ack
        );
        assert!(
            parse_listen("127.0.0.1:0")
                .unwrap_err()
                .contains("ADDR=SERVICE")
        );
        assert!(
            parse_listen("localhost:1=echo")
                .unwrap_err()
                .contains("IP:PORT")
        );
        assert!(
            parse_listen("127.0.0.1:1=gopher")
                .unwrap_err()
                .contains("unknown service")
        );
    }

    #[test]
    fn congestion_is_checked_against_the_kernels_list() {
        assert_eq!(check_congestion("bbr", "reno bbr cubic\n"), Ok(()));
        let err = check_congestion("vegas", "reno cubic\n").unwrap_err();
        assert!(
            err.starts_with("--congestion vegas: not available"),
            "{err}"
        );
        assert!(err.contains("available: reno cubic;"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        assert!(
            check_congestion("bb", "reno bbr").is_err(),
            "whole names only"
        );
    }

    #[test]
    fn defaults_are_every_service_on_loopback() {
        let defaults = default_listeners();
        assert!(defaults.iter().all(|l| l.addr.ip().is_loopback()));
        for kind in ServiceKind::ALL {
            assert!(defaults.iter().any(|l| l.service == kind), "{kind}");
        }
    }
}
