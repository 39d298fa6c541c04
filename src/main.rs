//! Command-line parsing and dispatch only: flags become a resolved
//! configuration, which goes to the part of the crate that runs it. The
//! flags themselves live in [`cli`]: the server's in `cli/serve.rs`, the
//! client programs' in `cli/clients.rs`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tcp_reactor::logsink;

mod cli;

use cli::{Cli, Command};

/// How long the last flush at exit may wait for a slow log reader, so the
/// summary line is not lost; a reader stalled for good costs no more.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let code = match cli.command {
        Command::Serve(args) => cli::serve::serve(args),
        Command::Client(args) => cli::clients::client(args),
        Command::Get(args) => cli::clients::get(args),
        Command::Bench(args) => cli::clients::bench(args),
        Command::Record(args) => cli::clients::record(args),
        Command::Top(args) => cli::clients::top(args),
        Command::Plot(args) => cli::clients::plot(args),
    };
    logsink::finish(FINAL_FLUSH);
    code
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
