//! What the baseline servers and helpers under `bench/` share: their tiny
//! command lines (`--listen ADDR` and a few numbers) and the `listening on
//! ADDR` line on stderr that `scripts/bench.sh` reads the port from, as it
//! does tcp-reactor's.
//!
//! These programs exist to be measured against tcp-reactor; they are not
//! part of it, and none is meant to face anything but loopback. No clap:
//! each takes two or three flags, and a baseline should carry no more code
//! than its design needs.

use std::net::SocketAddr;
use std::process::exit;

/// The value of `--NAME VALUE` in the program's arguments, parsed; the
/// default when the flag is absent. A bad value is one line on stderr and
/// exit code 2, as tcp-reactor does.
pub fn flag<T: std::str::FromStr>(name: &str, default: Option<T>) -> T {
    let args: Vec<String> = std::env::args().collect();
    let long = format!("--{name}");
    let found = args
        .iter()
        .position(|a| *a == long)
        .map(|i| args.get(i + 1));
    match (found, default) {
        (Some(Some(value)), _) => value.parse().unwrap_or_else(|_| {
            eprintln!("error: invalid value '{value}' for {long}");
            exit(2)
        }),
        (Some(None), _) => {
            eprintln!("error: {long} needs a value");
            exit(2)
        }
        (None, Some(default)) => default,
        (None, None) => {
            eprintln!("error: {long} is required");
            exit(2)
        }
    }
}

/// The address given as the first argument; without a valid one, `usage`
/// on stderr and exit code 2.
pub fn addr_arg(usage: &str) -> SocketAddr {
    match std::env::args().nth(1).map(|a| a.parse::<SocketAddr>()) {
        Some(Ok(addr)) => addr,
        _ => {
            eprintln!("usage: {usage}");
            exit(2)
        }
    }
}

/// The `--listen` address (default `127.0.0.1:0`).
pub fn listen_addr() -> SocketAddr {
    flag("listen", Some(SocketAddr::from(([127, 0, 0, 1], 0))))
}

/// Accept backlog: tcp-reactor's (`sys::LISTEN_BACKLOG`), so that no
/// server loses the 10,000 connections of a run to SYN retransmission
/// because its library's default is shallower (std's is 128).
pub const BACKLOG: i32 = 4096;

/// A listening socket on `addr` with the same backlog as tcp-reactor's and
/// `SO_REUSEADDR`, blocking (the async servers set it non-blocking).
pub fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Tells the script the bound address, as tcp-reactor's log line does.
pub fn announce(addr: SocketAddr) {
    eprintln!("listening on {addr}");
}

/// Bytes each baseline reads at once and holds per connection: the minimal
/// mio server's fixed buffer, used by the others too, so that the servers
/// differ in their design, not in how much one system call may move.
pub const BUF: usize = 64 * 1024;
