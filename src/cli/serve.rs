//! The server's flags, checked and resolved into a `ServerConfig`, and the
//! descriptor limit fitted to the connection cap before the server binds.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use log::{debug, error, warn};

use tcp_reactor::config::{self, ListenSpec, ServerConfig, SocketOptions};
use tcp_reactor::hub::room::ChatLimits;
use tcp_reactor::limits::DescriptorBudget;
use tcp_reactor::reactor::{Exit, Server};
use tcp_reactor::service::{ServiceConfig, ServiceKind};
use tcp_reactor::sys::{self, LISTEN_BACKLOG, MAX_KEEPALIVE_IDLE_SECS};
use tcp_reactor::text::Encoding;

use super::{LogArgs, parse_secs, parse_secs_or_zero, secs_or_never};

#[derive(Args, Debug)]
#[command(after_help = "\
Services:
  echo   every byte back, in order
  ack    one reply line per message; a message ends at a newline or, for a
         client that sends none, at the end of what it sent in one go;
         'exit' closes the connection
  files  download from --root: 'NAME' gets the bytes then close (nothing if
         refused); 'GET NAME' gets 'OK <size>' or 'ERR <reason>' first;
         'LIST' names the files, sorted by path component; a list cut at its
         bounds (100,000 names) ends with an empty line and
         'ERR list cut at N names' (': out of file descriptors' and the like
         when the server, not the list, stopped it). Names with a component
         starting with '.' are neither listed nor served without --hidden
  chat   each line goes to every other chat client as '[PEER] line'; joins and
         leaves are announced (twice a second at most; a burst as
         '* N joined, M left'; never to a member that is behind); a paste
         goes out at the pace of the members that keep up; a member that
         stays behind (--chat-soft-limit for --chat-soft-secs, or past
         --chat-hard-limit) is disconnected
  admin  'stats', 'clients' (buffers, kernel queues, TCP_INFO and what limits
         each connection), either with 'json'; 'metrics' (Prometheus text,
         also as HTTP GET or HEAD /metrics: a connection that opens with an
         HTTP request line gets HTTP answers only); 'watch MS' (a JSON
         snapshot every MS milliseconds); 'help'. Loopback only without
         --admin-anywhere

Without --listen: echo on 127.0.0.1:7788, ack on 127.0.0.1:7890, files on
127.0.0.1:8000, chat on 127.0.0.1:9090 and admin on 127.0.0.1:7999, all on
loopback.
Port 0 picks a free port; the log says 'listening on ADDR (SERVICE)' for each.

Closing: when the server ends a conversation (SIGINT/SIGTERM, --idle-timeout,
--request-timeout, --admin-idle-timeout, an eviction at --max-conns)
it reads nothing more but answers every byte it already read, flushes, and
closes once the client has acknowledged the last byte. A download that cannot
complete (the file shrank) ends with a reset, never a clean close.

Examples:
  tcp-reactor serve
  tcp-reactor serve -l 127.0.0.1:0=echo -l [::1]:7890=ack --reply OK
  printf 'hello' | nc -N 127.0.0.1 7788")]
pub struct ServeArgs {
    /// Listen on ADDR for SERVICE (echo, ack, files, chat, admin); repeatable.
    #[arg(short, long = "listen", value_name = "ADDR=SERVICE", value_parser = config::parse_listen)]
    listen: Vec<ListenSpec>,

    /// Directory the files service serves; nothing outside it is ever sent.
    #[arg(long, value_name = "DIR", default_value = ".")]
    root: PathBuf,

    /// Reply text of the ack service, sent with a newline.
    #[arg(long, value_name = "TEXT", default_value = "收到请求")]
    reply: String,

    /// Encoding of the ack reply and of client text in logs.
    #[arg(long, value_name = "utf-8|gbk", default_value = "utf-8")]
    encoding: Encoding,

    /// Most bytes buffered per connection on the way in; reading stops
    /// while it is full. Suffixes K, M, G.
    #[arg(long, value_name = "BYTES", default_value = "64K", value_parser = config::parse_size)]
    recv_buf: usize,

    /// Most bytes buffered per connection on the way out; the connection
    /// stops reading while it is full, until it drains below a quarter.
    #[arg(long, value_name = "BYTES", default_value = "64K", value_parser = config::parse_size)]
    send_buf: usize,

    /// SO_RCVBUF for accepted sockets (set on the listener, so the TCP window
    /// scale fits it); Linux doubles the figure. Default: kernel autotuning.
    #[arg(long, value_name = "BYTES", value_parser = config::parse_size)]
    so_rcvbuf: Option<usize>,

    /// SO_SNDBUF for accepted sockets; Linux doubles the figure. Default:
    /// kernel autotuning. A tiny one makes the server wait for an ACK before
    /// most writes: a 4 MiB download over loopback with 4K took 7-50 ms
    /// (median 8) against 3-9 ms (median 4) with the default (README,
    /// Kernel buffer sizes).
    #[arg(long, value_name = "BYTES", value_parser = config::parse_size)]
    so_sndbuf: Option<usize>,

    /// Allow the admin service on a non-loopback address (it shows every
    /// client's address and traffic).
    #[arg(long)]
    admin_anywhere: bool,

    /// Set TCP_NODELAY on accepted connections (no Nagle delay).
    #[arg(long)]
    nodelay: bool,

    /// Most client connections open at once; past it a new client gets
    /// 'ERR server full' and is closed. 0 = no cap. At start the soft
    /// descriptor limit (ulimit -n) is raised to what the cap needs (a
    /// descriptor per client, two with a files listener, plus a reserve);
    /// where the hard limit does not allow it, the cap is lowered to what
    /// fits, with a warning naming both numbers.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_conns: usize,

    /// Most connections open at once from one IP address; past it a new one
    /// gets 'ERR too many connections from ADDR'. 0 = no cap.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_conns_per_ip: usize,

    /// End a connection after this many seconds with no byte read or
    /// written: nothing more is read, what was read is answered and
    /// flushed, then it closes. 0 = never.
    #[arg(long, value_name = "SECS", default_value_t = 0.0, value_parser = parse_secs_or_zero)]
    idle_timeout: f64,

    /// A files request, or an HTTP request on admin, must arrive whole (to
    /// its newline, or its blank line) within this many seconds; then files
    /// answers 'ERR request timeout' (a bare name: nothing), HTTP '408
    /// Request Timeout', and the connection closes. 10 s is dozens of round
    /// trips on the worst link, while without it a client that trickles its
    /// request (slow loris) holds its slot for ever (nginx's
    /// client_header_timeout). 0 = never.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_secs_or_zero)]
    request_timeout: f64,

    /// Close an admin connection that is not in 'watch' after this many
    /// seconds with no byte read or written. 60 s outlasts any operator's
    /// pause between commands, while without it 16 forgotten connections
    /// take the whole admin reserve for ever and lock the operator and the
    /// scraper out. 0 = never.
    #[arg(long, value_name = "SECS", default_value_t = 60.0, value_parser = parse_secs_or_zero)]
    admin_idle_timeout: f64,

    /// When --max-conns is reached, the connection idle the longest, if idle
    /// for at least this many seconds, is ended (an idle close, counted
    /// 'evicted') to admit the newcomer. 60 s: a connection that quiet
    /// yields to one that wants to talk now (Envoy's overload manager
    /// shortens idle timeouts the same way). 0 = never evict.
    #[arg(long, value_name = "SECS", default_value_t = 60.0, value_parser = parse_secs_or_zero)]
    evict_idle_after: f64,

    /// TCP keepalive: after SECS without traffic on a connection the kernel
    /// probes the peer (4 probes, 15 s apart) and resets the connection if
    /// none is answered, so a peer that vanished without a FIN (a crash, a
    /// pulled cable, a NAT that forgot it) does not hold its slot forever.
    /// Default 300, as Redis's tcp-keepalive: a dead peer is found within
    /// about 6 minutes, for a few bytes per idle connection each 5 minutes.
    /// 0 = off. At most 32767 (Linux's limit).
    #[arg(long, value_name = "SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(0..=MAX_KEEPALIVE_IDLE_SECS))]
    keepalive: u64,

    /// Short connections: close each connection once its first reply is
    /// sent (ack: one message; echo: the first burst).
    #[arg(long)]
    short: bool,

    /// files: send downloads with sendfile(2), from the file to the socket in
    /// the kernel (zero copy). The send buffer is bypassed: the admin view
    /// then shows 0 bytes there and everything in the kernel's send queue.
    #[arg(long)]
    sendfile: bool,

    /// files: list and serve names with a component that starts with '.'
    /// (.git/, .env, .ssh/). Off by default: with the default --root . a
    /// checkout's .git/config and CI settings would be downloadable. Without
    /// it such a name gets 'ERR not found', as a missing one does, so its
    /// existence is not shown.
    #[arg(long)]
    hidden: bool,

    /// Set SO_REUSEPORT, so several processes can listen on one port and the
    /// kernel spreads clients between them (one process per core).
    #[arg(long)]
    reuse_port: bool,

    /// The accept queue each listener asks for: connections the kernel has
    /// completed but the server has not yet accepted. Default 4096, so a
    /// burst of a thousand connects is not dropped; the kernel caps it at
    /// net.core.somaxconn (ss -lnt shows the result as Send-Q). Once the
    /// queue is full a client's SYN is dropped and its connect waits 1 s,
    /// then 3 s, for the retries.
    #[arg(long, value_name = "N", default_value_t = LISTEN_BACKLOG,
          value_parser = clap::value_parser!(i32).range(1..))]
    backlog: i32,

    /// TCP congestion control for accepted connections (TCP_CONGESTION, set
    /// on the listeners and read back), e.g. cubic or bbr; checked at start
    /// against /proc/sys/net/ipv4/tcp_available_congestion_control. Default:
    /// the system's (net.ipv4.tcp_congestion_control). Without root only
    /// the algorithms in tcp_allowed_congestion_control may be set.
    #[arg(long, value_name = "ALG")]
    congestion: Option<String>,

    /// TCP_NOTSENT_LOWAT for accepted connections: a socket with more than
    /// BYTES written but not yet sent is not writable, so the rest waits in
    /// the server's send buffer, where backpressure sees it, instead of in
    /// an autotuned kernel buffer of megabytes. Default: unset (the kernel
    /// takes all its send buffer holds). Suffixes K, M, G.
    #[arg(long, value_name = "BYTES", value_parser = config::parse_size)]
    notsent_lowat: Option<usize>,

    /// Chat: while a member's queue of lines waiting for it is over this many
    /// bytes, senders wait (a paste goes out at the pace of the members that
    /// keep up), a member that stays over it for --chat-soft-secs is
    /// disconnected as too slow, and joins and leaves that would take a
    /// member over it are skipped for that member. It is also what one
    /// sender may broadcast in one turn. Default 256K: thousands of lines of
    /// slack for a reader that is briefly behind, at a bounded cost in
    /// memory per member. Suffixes K, M, G.
    #[arg(long, value_name = "BYTES", default_value = "256K", value_parser = config::parse_size)]
    chat_soft_limit: usize,

    /// Chat: how many seconds a member may stay over --chat-soft-limit.
    /// Default 5: a reader on a slow link catches up from one paste within
    /// it; one that has stopped reading is gone soon.
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = parse_secs)]
    chat_soft_secs: f64,

    /// Chat: a member whose queue passes this many bytes, after the server
    /// tried to write to it, is disconnected at once. It must be at least
    /// the soft limit plus one turn's broadcast (the soft limit again, plus
    /// the longest line: --recv-buf and its prefix), or members that read
    /// as fast as they can are dropped; checked at start. Default 1M: room
    /// for the defaults' 576K, and a bound on a member's memory.
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = config::parse_size)]
    chat_hard_limit: usize,

    /// On SIGINT/SIGTERM the server reads nothing more, answers what it has
    /// read, finishes downloads and flushes; this bounds how many seconds
    /// that may take before it exits anyway. A second signal exits at once.
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = parse_secs_or_zero)]
    shutdown_timeout: f64,

    #[command(flatten)]
    log: LogArgs,
}

pub fn serve(args: ServeArgs) -> ExitCode {
    args.log.init();
    let ack_reply = args.encoding.encode(&args.reply);
    // The longest line a service writes whole (chat's and admin's error
    // lines are under 64 bytes): a smaller send buffer would cut it.
    const MIN_SEND_BUF: usize = 64;
    if args.send_buf < MIN_SEND_BUF {
        eprintln!(
            "error: --send-buf {} is below {MIN_SEND_BUF} bytes, too small for one reply line",
            args.send_buf
        );
        return ExitCode::from(2);
    }
    if ack_reply.len() + 1 > args.send_buf {
        eprintln!(
            "error: --send-buf {} cannot hold one ack reply of {} bytes",
            args.send_buf,
            ack_reply.len() + 1
        );
        return ExitCode::from(2);
    }
    let chat = ChatLimits {
        soft: args.chat_soft_limit,
        soft_for: Duration::from_secs_f64(args.chat_soft_secs),
        hard: args.chat_hard_limit,
    };
    let root = match std::fs::canonicalize(&args.root) {
        Ok(root) if root.is_dir() => root,
        Ok(_) => {
            eprintln!("error: --root {}: not a directory", args.root.display());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: --root {}: {e}", args.root.display());
            return ExitCode::from(2);
        }
    };
    let listeners = if args.listen.is_empty() {
        config::default_listeners()
    } else {
        args.listen
    };
    // Only a running chat service needs its limits to fit each other: an
    // echo server with a 1M --recv-buf must not be refused over chat.
    if listeners.iter().any(|l| l.service == ServiceKind::Chat)
        && let Err(e) = chat.check(args.recv_buf)
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if !args.admin_anywhere
        && let Some(open) = listeners
            .iter()
            .find(|l| l.service == ServiceKind::Admin && !l.addr.ip().is_loopback())
    {
        eprintln!(
            "error: --listen {}=admin is not a loopback address (add --admin-anywhere to allow it)",
            open.addr
        );
        return ExitCode::from(2);
    }
    if let Some(name) = &args.congestion {
        let checked = std::fs::read_to_string(config::AVAILABLE_CONGESTION)
            .map_err(|e| format!("--congestion {name}: {}: {e}", config::AVAILABLE_CONGESTION))
            .and_then(|available| config::check_congestion(name, &available));
        if let Err(e) = checked {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let max_conns =
        match fit_descriptor_limit(&listeners, (args.max_conns > 0).then_some(args.max_conns)) {
            Ok(max_conns) => max_conns,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
    let config = ServerConfig {
        listeners,
        recv_buf: args.recv_buf,
        send_buf: args.send_buf,
        nodelay: args.nodelay,
        reuse_port: args.reuse_port,
        so_rcvbuf: args.so_rcvbuf,
        so_sndbuf: args.so_sndbuf,
        max_conns,
        max_conns_per_ip: (args.max_conns_per_ip > 0).then_some(args.max_conns_per_ip),
        idle_timeout: secs_or_never(args.idle_timeout),
        request_timeout: secs_or_never(args.request_timeout),
        operator_idle_timeout: secs_or_never(args.admin_idle_timeout),
        evict_idle_after: secs_or_never(args.evict_idle_after),
        keepalive: (args.keepalive > 0).then(|| Duration::from_secs(args.keepalive)),
        sockets: SocketOptions {
            backlog: args.backlog,
            congestion: args.congestion,
            // parse_size caps sizes at 1G, which fits in a u32.
            notsent_lowat: args
                .notsent_lowat
                .map(|b| u32::try_from(b).unwrap_or(u32::MAX)),
        },
        shutdown_timeout: Duration::from_secs_f64(args.shutdown_timeout),
        chat,
        service: ServiceConfig {
            ack_reply,
            encoding: args.encoding,
            short: args.short,
            root,
            sendfile: args.sendfile,
            hidden: args.hidden,
        },
    };
    let mut server = match Server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = server.handle_signals() {
        eprintln!("error: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    match server.run() {
        Ok(Exit::Graceful) => ExitCode::SUCCESS,
        Ok(Exit::Forced) => ExitCode::from(130),
        Err(e) => {
            error!("poll failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Fits the descriptor limit and the connection cap to each other, as
/// Redis's `adjustOpenFilesLimit` does: raises the soft `RLIMIT_NOFILE`
/// toward the hard one, as far as `max_conns` needs (all of it with no
/// cap); if the cap still does not fit, lowers it to what does, with one
/// warning naming both numbers. The cap to run with, or an error when the
/// limit holds no client at all.
fn fit_descriptor_limit(
    listeners: &[ListenSpec],
    max_conns: Option<usize>,
) -> Result<Option<usize>, String> {
    let files = listeners.iter().any(|l| l.service == ServiceKind::Files);
    let budget = DescriptorBudget::new(listeners.len(), files);
    let (soft, hard) = match sys::nofile_limit() {
        Ok(limits) => limits,
        Err(e) => {
            warn!("cannot read the descriptor limit: {e}; --max-conns left as it is");
            return Ok(max_conns);
        }
    };
    let mut limit = soft;
    if let Some(want) = budget.soft_wanted(max_conns, soft, hard) {
        match sys::set_nofile_soft(want) {
            Ok(()) => {
                debug!("descriptor limit raised from {soft} to {want}");
                limit = want;
            }
            Err(e) => debug!("cannot raise the descriptor limit from {soft} to {want}: {e}"),
        }
    }
    let Some(cap) = max_conns else {
        return Ok(None);
    };
    let fits = budget.conns_within(limit);
    if fits >= cap {
        return Ok(Some(cap));
    }
    let hard = if hard == u64::MAX {
        "unlimited".to_string()
    } else {
        hard.to_string()
    };
    if fits == 0 {
        return Err(format!(
            "the descriptor limit {limit} (hard {hard}) holds no client connection: \
             one needs {}; raise it with ulimit -n",
            budget.needed(1)
        ));
    }
    warn!(
        "--max-conns lowered from {cap} to {fits}: the descriptor limit {limit} (hard {hard}) \
         holds {fits} client connections; {cap} need {} descriptors; raise the hard limit (ulimit -Hn, \
         systemd's LimitNOFILE=) to serve more",
        budget.needed(cap)
    );
    Ok(Some(fits))
}
