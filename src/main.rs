//! Command-line parsing and dispatch only: flags become a resolved
//! configuration, which goes to the part of the crate that runs it.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use log::{LevelFilter, debug, error, info, warn};

use tcp_reactor::client::bench::{self, BenchConfig};
use tcp_reactor::client::get::{self, GetOptions};
use tcp_reactor::client::interactive::{self, ClientOptions, Ended, Show};
use tcp_reactor::client::record::{self, RecordOptions};
use tcp_reactor::client::top::{self, TopConfig};
use tcp_reactor::client::{Address, Interrupt, Target};
use tcp_reactor::config::{self, ListenSpec, ServerConfig};
use tcp_reactor::hub::room::ChatLimits;
use tcp_reactor::limits::DescriptorBudget;
use tcp_reactor::logsink;
use tcp_reactor::plot::Label;
use tcp_reactor::reactor::{Exit, Server};
use tcp_reactor::service::admin::WATCH_MS;
use tcp_reactor::service::{ServiceConfig, ServiceKind};
use tcp_reactor::sys::{self, MAX_KEEPALIVE_IDLE_SECS};
use tcp_reactor::text::Encoding;

/// A single-threaded TCP server on a hand-written mio reactor, with bounded,
/// observable per-connection buffers.
#[derive(Parser, Debug)]
#[command(name = "tcp-reactor", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: every listener on one thread.
    Serve(ServeArgs),
    /// Interactive line client: sends each input line, shows what the
    /// server sends as soon as it arrives.
    Client(ClientArgs),
    /// Download one file from a files service, with a progress bar.
    Get(GetArgs),
    /// Load an echo server: many connections, each sending a message and
    /// waiting for it to come back, for a bounded time.
    Bench(BenchArgs),
    /// Live view of every connection of a server, from its admin service:
    /// where each connection's bytes sit, layer by layer, and its rates.
    Top(TopArgs),
    /// Record where the bytes of some connections sit, over time, from an
    /// admin service's snapshots into a CSV file.
    Record(RecordArgs),
    /// Draw a recording as an SVG picture: bytes waiting in each place on
    /// each connection's path, over time.
    Plot(PlotArgs),
}

#[derive(Args, Debug)]
#[command(after_help = "\
End of input (Ctrl-D, or the end of a pipe) half-closes the connection; every
reply still on its way is shown before the client exits.

On a terminal, lines are edited with the usual keys (arrows, Home/End,
Ctrl-A/E/W/U, Backspace) and Up/Down recall this session's lines; what the
server sends is printed above the line being typed. Ctrl-C closes the
connection at once (exit 130). Piped input is sent line by line as it comes.

On a terminal, control characters the server sends (another chat user's
escape sequences, say) are shown escaped rather than obeyed: C0 controls but
newline and tab, and DEL, as \\x and two hex digits (ESC is \\x1b, CR is
\\x0d); C1 controls as \\u{80} to \\u{9f}. Malformed text shows as U+FFFD.
Piped or redirected, the bytes are written exactly as they came.

Examples:
  tcp-reactor client 127.0.0.1:7890
  printf 'a\\nb\\n' | tcp-reactor client 127.0.0.1:7890")]
struct ClientArgs {
    /// Server address: HOST:PORT, e.g. 127.0.0.1:7890, localhost:7890 or
    /// [::1]:7890 (each address of a name is tried in turn).
    addr: Address,

    /// Encoding of the text on the wire (the terminal stays UTF-8).
    #[arg(long, value_name = "utf-8|gbk", default_value = "utf-8")]
    encoding: Encoding,

    /// Seconds to wait for each of the server's addresses to answer the
    /// connect. Default 10: long enough for a busy server's full accept
    /// queue (the kernel retries a dropped SYN after 1 s and 3 s), short
    /// enough to tell you about a host that is down while you wait.
    #[arg(short, long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_secs)]
    wait: f64,

    /// End each line sent with CR LF instead of LF, for servers that want
    /// it. Default off: LF is what the services here and the notes' client
    /// expect.
    #[arg(long)]
    crlf: bool,

    #[command(flatten)]
    log: ClientLogArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "\
The file is written under a temporary name and renamed only when every byte
has arrived, so a failed download leaves nothing behind. Ctrl-C or SIGTERM
removes the partial file too, and exits 130 or 143 as the signal would.

Examples:
  tcp-reactor get 127.0.0.1:8000 notes.txt
  tcp-reactor get 127.0.0.1:8000 sub/data.bin -o /tmp/data.bin --force
  tcp-reactor get 127.0.0.1:8000 notes.txt -o - | less")]
struct GetArgs {
    /// Address of a files service: HOST:PORT, e.g. 127.0.0.1:8000 or
    /// localhost:8000.
    addr: Address,

    /// File name, relative to the server's root.
    name: String,

    /// Where to save: a file, a directory, or '-' for standard output
    /// [default: the name's last component, in the current directory].
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,

    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,

    #[command(flatten)]
    log: ClientLogArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Every echoed byte is checked. Stops after --secs, or after --rounds round trips
per connection if that comes first. Only point it at servers you run.
With --short, every round is a connection of its own (connect, one round
trip, close); --conns says how many such loops run at once.

Example:
  tcp-reactor bench 127.0.0.1:7788 --conns 1000 --size 64 --secs 5")]
struct BenchArgs {
    /// Address of an echo service: HOST:PORT, e.g. 127.0.0.1:7788 or
    /// localhost:7788.
    addr: Address,

    /// Connections open at once.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    conns: u32,

    /// Bytes per message. Suffixes K, M, G.
    #[arg(long, value_name = "BYTES", default_value = "64", value_parser = config::parse_size)]
    size: usize,

    /// How long to run, in seconds.
    #[arg(long, default_value_t = 5.0, value_parser = parse_secs)]
    secs: f64,

    /// Stop each connection after this many round trips (with --short,
    /// each loop after this many connections).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: Option<u64>,

    /// Short connections: each of the --conns loops connects, does one
    /// round trip of --size bytes, closes, and starts again. Reports
    /// connections per second and the connect and round-trip latencies.
    #[arg(long)]
    short: bool,

    /// Paced load: this many round trips per second over all connections,
    /// on a fixed schedule (each connection sends every --conns / --rate
    /// seconds), instead of each sending again the moment its echo is back.
    /// Every server then gets the same load, so its latency and the other
    /// clients' share of the machine can be compared. Latency is counted
    /// from a message's first write. Not with --short.
    #[arg(long, value_name = "PER_SEC", value_parser = parse_rate, conflicts_with = "short")]
    rate: Option<f64>,

    /// Print the report as one JSON line (every figure; latencies in µs).
    #[arg(long)]
    json: bool,

    /// After the report, keep the echo connections open until standard
    /// input ends: a script measuring the server can stop counting before
    /// they close (scripts/bench.sh does), so closing is not counted as load.
    #[arg(long)]
    hold: bool,

    #[command(flatten)]
    log: ClientLogArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Keys (live view):
  o        sort by bytes owed to the peer (send buffer + kernel send queue)
  r        sort by rate (bytes/s in + out)
  a        sort by age, oldest first
  t        sort by round-trip time, longest first
  f        show one service at a time (those with a connection), then all
  space    pause (snapshots that arrive meanwhile are not applied)
  up/down  select a connection (j/k too); the selection follows it when
           the rows re-sort; Enter opens its detail pane, with a
           sparkline of each layer over the last minute; Esc closes it
  PgUp/PgDn  a page up or down; Home/End (g/G) the first or last row
  q        quit (Ctrl-C too); the terminal is restored

Each connection's bar shows where its bytes are, in the order a byte
crosses them: K kernel receive queue | R receive buffer | S send buffer |
U kernel unsent, F in flight (kernel send queue - unsent). The four parts
are scaled to SO_RCVBUF, the receive buffer's limit, the send buffer's
limit and SO_SNDBUF. Rates are over the server's own clock between two
snapshots. Your own admin connection is marked with '*'.

Nothing is shown cut. On a narrow terminal (80x24 and below) columns give
way to the bar: the rates first, then the peer, then rtt; a number that
does not fit shows in a shorter unit (28s, 3M) or its column goes.

If the server goes away, top restores the terminal at once, prints one
line and exits 1. When standard output is not a terminal, top prints one
snapshot as plain text (as --once does) and exits.

Examples:
  tcp-reactor top 127.0.0.1:7999
  tcp-reactor top 127.0.0.1:7999 --once
  tcp-reactor top 127.0.0.1:7999 --stat --interval 1000")]
struct TopArgs {
    /// Address of an admin service: HOST:PORT, e.g. 127.0.0.1:7999 or
    /// localhost:7999.
    addr: Address,

    /// Milliseconds between snapshots (50 to 60000).
    #[arg(long, value_name = "MS", default_value_t = 250,
          value_parser = clap::value_parser!(u64).range(*WATCH_MS.start()..=*WATCH_MS.end()))]
    interval: u64,

    /// Print one snapshot (the header and a row per connection, with rates
    /// over one interval) as plain text, and exit.
    #[arg(long, conflicts_with = "stat")]
    once: bool,

    /// Print one line of totals per interval (uptime, active, accepted/s,
    /// in/s, out/s, closed, dropped log lines), like redis-cli --stat, until
    /// the server closes or Ctrl-C.
    #[arg(long)]
    stat: bool,

    #[command(flatten)]
    log: ClientLogArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "\
One row per connection per snapshot: seconds since the first snapshot (the
server's clock), id, peer, service, state, limit (what holds its bytes back),
every buffer and kernel queue figure and every TCP_INFO field (tcp_*). An
empty cell is a figure the kernel did not give. Rows are written after each
snapshot; Ctrl-C stops the recording and keeps them. No snapshot (not an
admin address, or none in 10 s) is an error, exit 1, and no file; a --conn
id the server does not list is a warning.

Example:
  tcp-reactor record 127.0.0.1:7999 --secs 30 -o run.csv
  tcp-reactor plot run.csv -o run.svg")]
struct RecordArgs {
    /// Address of an admin service: HOST:PORT, e.g. 127.0.0.1:7999 or
    /// localhost:7999.
    addr: Address,

    /// Record only the connection with this id (from the admin 'clients'
    /// table); repeatable [default: every connection but admin ones].
    #[arg(long = "conn", value_name = "ID")]
    conns: Vec<usize>,

    /// Milliseconds between snapshots.
    #[arg(long, value_name = "MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    interval: u64,

    /// How long to record, in seconds.
    #[arg(long, default_value_t = 10.0, value_parser = parse_secs)]
    secs: f64,

    /// The CSV file to write: created, or replaced if it exists, once the
    /// first snapshot has come (an address that sends none leaves it as it
    /// was).
    #[arg(short, long, value_name = "FILE.csv")]
    output: PathBuf,

    #[command(flatten)]
    log: ClientLogArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "\
One panel per connection, at most 6 (those that held the most bytes first):
a stacked area of the bytes in the kernel receive queue, the receive buffer,
the send buffer, the kernel send queue (unsent, and in flight), and a strip
coloured by what held the bytes back (the limit column). Each sample holds
until the next: snapshots are drawn as steps, not joined by slopes.

Example:
  tcp-reactor plot run.csv -o run.svg")]
struct PlotArgs {
    /// A CSV file written by 'record'.
    input: PathBuf,

    /// The SVG file to write (replaced if it exists).
    #[arg(short, long, value_name = "FILE.svg")]
    output: PathBuf,

    /// Name a connection's panel, by its peer or its id: '127.0.0.1:5000=client
    /// A' titles it "client A: connection ...". Repeatable. Default: panels
    /// are titled by the server's connection id and peer only.
    #[arg(long = "label", value_name = "PEER=NAME")]
    labels: Vec<Label>,

    #[command(flatten)]
    log: ClientLogArgs,
}

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
struct ServeArgs {
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

#[derive(Args, Debug)]
struct LogArgs {
    /// More log output: -v debug (open, close, pause), -vv trace (every read
    /// and write). RUST_LOG also works. A log reader that stalls or goes
    /// away never blocks the server: lines are dropped and counted.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Less log output: -q warnings only, -qq errors only.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    quiet: u8,
}

impl LogArgs {
    /// The level the flags ask for; with neither -v nor -q, `RUST_LOG` (a
    /// single level name, as simple_logger read it) when it parses.
    fn level(&self) -> LevelFilter {
        let level = match i16::from(self.verbose) - i16::from(self.quiet) {
            i16::MIN..=-2 => LevelFilter::Error,
            -1 => LevelFilter::Warn,
            0 => LevelFilter::Info,
            1 => LevelFilter::Debug,
            _ => LevelFilter::Trace,
        };
        if self.verbose == 0 && self.quiet == 0 {
            let env = std::env::var("RUST_LOG").ok();
            if let Some(from_env) = env.and_then(|v| v.parse().ok()) {
                return from_env;
            }
        }
        level
    }

    fn init(&self) {
        // Only fails if a logger is already set, which nothing here does.
        if let Ok(route) = logsink::init(self.level()) {
            log::debug!("logging to stderr through {route}");
        }
    }
}

/// `-v`/`-q` of the client programs. They log through `simple_logger`, in
/// the server's line format: a client that blocks on a stalled stderr
/// stalls only itself.
#[derive(Args, Debug)]
struct ClientLogArgs {
    /// More log output: -v debug (each address a name resolved to, each
    /// connection attempt), -vv trace. RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Less output: -q warnings and errors only (get: no progress bar and
    /// no summary line either), -qq errors only.
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    quiet: u8,
}

impl ClientLogArgs {
    /// Installs `simple_logger` at the level the flags ask for (as
    /// [`LogArgs::level`]).
    fn init(&self) {
        let level = LogArgs {
            verbose: self.verbose,
            quiet: self.quiet,
        }
        .level();
        // The line editor's own debug lines say nothing about the server.
        let logger = simple_logger::SimpleLogger::new()
            .with_level(level)
            .with_module_level("rustyline", level.min(LevelFilter::Warn))
            .with_utc_timestamps();
        // Only fails if a logger is already set, which nothing here does.
        let _ = logger.init();
    }
}

/// How long the last flush at exit may wait for a slow log reader, so the
/// summary line is not lost; a reader stalled for good costs no more.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let code = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Client(args) => client(args),
        Command::Get(args) => get(args),
        Command::Bench(args) => bench(args),
        Command::Record(args) => record(args),
        Command::Top(args) => top(args),
        Command::Plot(args) => plot(args),
    };
    logsink::finish(FINAL_FLUSH);
    code
}

/// The address's every address, looked up once; a failure is reported
/// here, as one line.
fn resolve(addr: &Address) -> Result<Target, ExitCode> {
    addr.resolve().map_err(|e| {
        error!("{e}");
        ExitCode::FAILURE
    })
}

fn client(args: ClientArgs) -> ExitCode {
    args.log.init();
    let addr = match resolve(&args.addr) {
        Ok(addr) => addr,
        Err(code) => return code,
    };
    let opts = ClientOptions {
        encoding: args.encoding,
        show: Show::for_stdout(),
        crlf: args.crlf,
        connect_timeout: Duration::from_secs_f64(args.wait),
        ..ClientOptions::new(addr)
    };
    let ended = if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        // The line editor may still hold the terminal raw when the server
        // ends the session: put it back as it was.
        let stdin = std::io::stdin();
        let saved = sys::terminal_mode(stdin.as_fd()).ok();
        let ended = interactive::interactive_on_terminal(&opts);
        if let Some(mode) = &saved {
            let _ = sys::restore_terminal(stdin.as_fd(), mode);
        }
        if ended == Ok(Ended::ServerClosed) {
            // Off the prompt line the editor left, before the log line.
            println!();
        }
        ended
    } else {
        interactive::interactive(&opts, std::io::stdin(), std::io::stdout())
    };
    match ended {
        Ok(Ended::ServerClosed) => {
            info!("connection closed by server");
            ExitCode::SUCCESS
        }
        Ok(Ended::InputEnded) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn get(args: GetArgs) -> ExitCode {
    args.log.init();
    let quiet = args.log.quiet > 0;
    let addr = match resolve(&args.addr) {
        Ok(addr) => addr,
        Err(code) => return code,
    };
    let interrupt = match Interrupt::catch() {
        Ok(interrupt) => interrupt,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = GetOptions {
        interrupt: Some(interrupt),
        output: args.output,
        force: args.force,
        quiet,
        ..GetOptions::new(addr, args.name)
    };
    match get::get(&opts) {
        Ok(summary) => {
            // The report of the download, not a diagnostic.
            if !quiet {
                eprintln!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn parse_secs_or_zero(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.0..=86_400.0 * 365.0).contains(&s) => Ok(s),
        _ => Err(format!("'{text}' is not a number of seconds (0 or more)")),
    }
}

/// A `SECS` flag where 0 means never: `None` for 0.
fn secs_or_never(secs: f64) -> Option<Duration> {
    (secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

fn parse_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(format!(
            "'{text}' is not a number of seconds more than 0 and at most 86400"
        )),
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.001..=100_000_000.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "'{text}' is not a rate of round trips per second (0.001 to 100000000)"
        )),
    }
}

fn bench(args: BenchArgs) -> ExitCode {
    args.log.init();
    let addr = match resolve(&args.addr) {
        Ok(addr) => addr,
        Err(code) => return code,
    };
    let config = BenchConfig {
        addr,
        conns: args.conns as usize,
        size: args.size,
        duration: Duration::from_secs_f64(args.secs),
        rounds: args.rounds,
        short: args.short,
        rate: args.rate,
    };
    match bench::run_holding(config) {
        Ok((report, held)) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                println!("{report}");
            }
            if args.hold {
                // Report first, close after: a script measuring the server
                // stops once the report is out, then closes stdin.
                let _ = std::io::Write::flush(&mut std::io::stdout());
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            }
            drop(held);
            if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn top(args: TopArgs) -> ExitCode {
    args.log.init();
    let mode = if args.stat {
        top::Mode::Stat
    } else if args.once || !std::io::stdout().is_terminal() {
        top::Mode::Once
    } else {
        top::Mode::Live
    };
    let addr = match resolve(&args.addr) {
        Ok(addr) => addr,
        Err(code) => return code,
    };
    let config = TopConfig {
        addr,
        interval: Duration::from_millis(args.interval),
        mode,
    };
    match top::run(&config, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn record(args: RecordArgs) -> ExitCode {
    args.log.init();
    let admin = match resolve(&args.addr) {
        Ok(addr) => addr,
        Err(code) => return code,
    };
    let opts = RecordOptions {
        admin,
        conns: args.conns,
        interval_ms: args.interval,
        duration: Duration::from_secs_f64(args.secs),
        output: args.output,
    };
    match record::record(&opts) {
        Ok(summary) => {
            eprintln!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn plot(args: PlotArgs) -> ExitCode {
    args.log.init();
    match tcp_reactor::plot::plot(&args.input, &args.output, &args.labels) {
        Ok(summary) => {
            eprintln!(
                "drew {} of {} connections to '{}'",
                summary.panels,
                summary.connections,
                args.output.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints help and version as clap formats them, and any other parse error
/// as one line naming the flag, with exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    // No subcommand at all: the help is the answer, as a usage error.
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(2);
    }
    eprintln!("{} (see --help)", one_line(&e.render().to_string()));
    ExitCode::from(2)
}

/// The first paragraph of a clap error (what is wrong, before its tip and
/// usage), on one line. The first line alone is not enough: a missing
/// argument's names are on the lines below "the following required
/// arguments were not provided:".
fn one_line(text: &str) -> String {
    let words: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    match words.join(" ") {
        line if line.is_empty() => "error: invalid arguments".to_string(),
        line => line,
    }
}

fn serve(args: ServeArgs) -> ExitCode {
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
