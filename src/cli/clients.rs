//! The client programs' flags (client, get, bench, top, record, plot) and
//! the code that turns each into its program's options and runs it.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use log::{error, info};

use tcp_reactor::client::bench::{self, BenchConfig};
use tcp_reactor::client::get::{self, GetOptions};
use tcp_reactor::client::interactive::{self, ClientOptions, Ended, Show};
use tcp_reactor::client::record::{self, RecordOptions};
use tcp_reactor::client::top::{self, TopConfig};
use tcp_reactor::client::{Address, Interrupt, Target};
use tcp_reactor::config;
use tcp_reactor::plot::Label;
use tcp_reactor::service::admin::WATCH_MS;
use tcp_reactor::sys;
use tcp_reactor::text::Encoding;

use super::{ClientLogArgs, parse_rate, parse_secs};

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
pub struct ClientArgs {
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
pub struct GetArgs {
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
pub struct BenchArgs {
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
pub struct TopArgs {
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
pub struct RecordArgs {
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
pub struct PlotArgs {
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

/// The address's every address, looked up once; a failure is reported
/// here, as one line.
fn resolve(addr: &Address) -> Result<Target, ExitCode> {
    addr.resolve().map_err(|e| {
        error!("{e}");
        ExitCode::FAILURE
    })
}

pub fn client(args: ClientArgs) -> ExitCode {
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

pub fn get(args: GetArgs) -> ExitCode {
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

pub fn bench(args: BenchArgs) -> ExitCode {
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

pub fn top(args: TopArgs) -> ExitCode {
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

pub fn record(args: RecordArgs) -> ExitCode {
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

pub fn plot(args: PlotArgs) -> ExitCode {
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
