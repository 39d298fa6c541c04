//! The command line: the subcommands and the flags every program shares
//! (log levels, number parsers). Each subcommand's own flags and the code
//! that turns them into a configuration live in [`serve`] (the server) and
//! [`clients`] (client, get, bench, top, record, plot). Nothing here but
//! installing the logger the flags ask for: the programs run elsewhere.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use log::LevelFilter;

use tcp_reactor::logsink;

pub mod clients;
pub mod serve;

use clients::{BenchArgs, ClientArgs, GetArgs, PlotArgs, RecordArgs, TopArgs};
use serve::ServeArgs;

/// A single-threaded TCP server on a hand-written mio reactor, with bounded,
/// observable per-connection buffers.
#[derive(Parser, Debug)]
#[command(name = "tcp-reactor", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
pub struct LogArgs {
    /// More log output: -v debug (open, close, pause), -vv trace (every read
    /// and write). RUST_LOG also works. A log reader that stalls or goes
    /// away never blocks the server: lines are dropped and counted.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Less log output: -q warnings only, -qq errors only.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
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

    pub fn init(&self) {
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
pub struct ClientLogArgs {
    /// More log output: -v debug (each address a name resolved to, each
    /// connection attempt), -vv trace. RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Less output: -q warnings and errors only (get: no progress bar and
    /// no summary line either), -qq errors only.
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
}

impl ClientLogArgs {
    /// Installs `simple_logger` at the level the flags ask for (as
    /// [`LogArgs::level`]).
    pub fn init(&self) {
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

pub fn parse_secs_or_zero(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.0..=86_400.0 * 365.0).contains(&s) => Ok(s),
        _ => Err(format!("'{text}' is not a number of seconds (0 or more)")),
    }
}

/// A `SECS` flag where 0 means never: `None` for 0.
pub fn secs_or_never(secs: f64) -> Option<Duration> {
    (secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

pub fn parse_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(format!(
            "'{text}' is not a number of seconds more than 0 and at most 86400"
        )),
    }
}

pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.001..=100_000_000.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "'{text}' is not a rate of round trips per second (0.001 to 100000000)"
        )),
    }
}
