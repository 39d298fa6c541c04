//! The programs that talk to a server: `client` (the notes' interactive line
//! client), `get` (the download client), `bench` (an echo load generator),
//! `top` (a live view of the admin service's snapshots) and `record` (those
//! snapshots, sampled to CSV). Unlike the server they are plain blocking
//! programs, except `bench`, which runs its connections on one mio loop.
//!
//! What they share is here: [`Address`] (`HOST:PORT` as given, checked for
//! form only) and [`Target`] (its addresses, resolved once), [`connect`],
//! which tries each address in turn, [`ClientError`], one line with the
//! exit status it asks for, and [`Interrupt`], SIGINT/SIGTERM caught for a
//! program that must clean up. No logging set-up: `main` installs
//! `simple_logger` for them.

pub mod bench;
pub mod get;
pub mod interactive;
pub mod record;
pub mod snapshot;
pub mod top;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};

use log::debug;

/// A client program's failure, as one line for the user (no level or
/// prefix; `main` logs it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientError {
    message: String,
    /// The signal that ended the program, for its exit status.
    signal: Option<i32>,
}

impl ClientError {
    pub fn new(message: impl Into<String>) -> ClientError {
        ClientError {
            message: message.into(),
            signal: None,
        }
    }

    /// The program stopped because `signal` (SIGINT or SIGTERM) arrived.
    pub fn interrupted(signal: i32) -> ClientError {
        let name = match signal {
            SIGINT => "SIGINT".to_string(),
            SIGTERM => "SIGTERM".to_string(),
            other => format!("signal {other}"),
        };
        ClientError {
            message: format!("interrupted by {name}"),
            signal: Some(signal),
        }
    }

    /// The same failure, said with more words after it.
    pub fn and(mut self, more: &str) -> ClientError {
        self.message.push_str(more);
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The exit status that tells a shell what happened: 128 + the signal
    /// for an interruption (130 for SIGINT, 143 for SIGTERM), as if the
    /// signal had ended the program; 1 for any other failure.
    pub fn exit_code(&self) -> u8 {
        self.signal
            .and_then(|s| u8::try_from(128 + s).ok())
            .unwrap_or(1)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// SIGINT and SIGTERM, caught, for a program that must clean up before it
/// ends (`get` removes its partial file). The first of either is only
/// noted: the program looks at [`Interrupt::signal`] wherever it waits, at
/// least every [`Interrupt::CHECK_EVERY`]. A second one ends the process at
/// once with 128 + its number, as an uncaught signal would, for a program
/// stuck somewhere it does not look (a connect, a blocked write).
#[derive(Clone, Debug)]
pub struct Interrupt {
    /// The first signal's number, 0 until one arrives.
    signal: Arc<AtomicUsize>,
}

impl Interrupt {
    /// How often a waiting program looks for a signal: quick enough that a
    /// Ctrl-C feels immediate, rare enough to cost nothing.
    pub const CHECK_EVERY: Duration = Duration::from_millis(100);

    /// Installs the handlers (process-wide, for the rest of the process).
    pub fn catch() -> io::Result<Interrupt> {
        let caught = Arc::new(AtomicBool::new(false));
        let signal = Arc::new(AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM] {
            // Registered first, so it sees the flag as the earlier signal
            // left it: set means this is the second.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&caught))?;
            signal_hook::flag::register(sig, Arc::clone(&caught))?;
            // Signal numbers are small and positive.
            signal_hook::flag::register_usize(sig, Arc::clone(&signal), sig as usize)?;
        }
        Ok(Interrupt { signal })
    }

    /// The signal that arrived, if one did.
    pub fn signal(&self) -> Option<i32> {
        match self.signal.load(Ordering::Relaxed) {
            0 => None,
            n => i32::try_from(n).ok(),
        }
    }

    /// An error if a signal arrived.
    pub fn check(&self) -> Result<(), ClientError> {
        self.signal()
            .map_or(Ok(()), |s| Err(ClientError::interrupted(s)))
    }
}

impl std::error::Error for ClientError {}

/// How long a connection attempt to one address may take, unless the
/// program is told otherwise (`client --wait`): long enough for a loaded
/// server's full accept queue to clear (the kernel retries a dropped SYN
/// after 1 s and 3 s), short enough that a host that is down is reported
/// while the user still waits for an answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A server address as the user gave it: `HOST:PORT`, where `HOST` is a
/// name (`localhost`), an IPv4 address, or an IPv6 address in brackets
/// (`[::1]`). Parsing checks only the form, so a typo is a usage error;
/// [`Address::resolve`] looks the name up, once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// As given, for messages.
    text: String,
    /// The host, without brackets.
    host: String,
    port: u16,
}

/// The examples every address error ends with.
const ADDRESS_EXAMPLES: &str = "examples: 127.0.0.1:7999, localhost:7999, [::1]:7999";

impl FromStr for Address {
    type Err = String;

    fn from_str(text: &str) -> Result<Address, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Address {
                text: text.to_string(),
                host: addr.ip().to_string(),
                port: addr.port(),
            });
        }
        let bad = || format!("'{text}' is not HOST:PORT ({ADDRESS_EXAMPLES})");
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        // A name: letters, digits, '-', '_' and dots (an IPv6 address
        // without brackets, or a bracketed text that is not one, is not).
        let name_like = |h: &str| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if !name_like(host) {
            return Err(bad());
        }
        Ok(Address {
            text: text.to_string(),
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Address {
    /// Looks the host up (a literal IP needs no lookup): every address it
    /// has, in the resolver's order, which [`connect`] tries in turn.
    pub fn resolve(&self) -> Result<Target, ClientError> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| ClientError::new(format!("cannot resolve '{}': {e}", self.host)))?
            .collect();
        if addrs.is_empty() {
            return Err(ClientError::new(format!(
                "'{}' has no address to connect to",
                self.host
            )));
        }
        debug!(
            "{} is {}",
            self.text,
            addrs
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Target {
            name: self.text.clone(),
            addrs,
        })
    }
}

/// A server to connect to: the name the user gave and every address it
/// resolved to (at least one), tried in this order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    name: String,
    addrs: Vec<SocketAddr>,
}

impl Target {
    /// The resolved addresses, in the order they are tried.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Target {
        Target {
            name: addr.to_string(),
            addrs: vec![addr],
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Connects to `target`'s first address that answers, each within
/// [`CONNECT_TIMEOUT`].
pub fn connect(target: &Target) -> Result<TcpStream, ClientError> {
    connect_within(target, CONNECT_TIMEOUT)
}

/// Connects to `target`'s first address that answers, trying each in turn
/// (a name such as `localhost` may have an IPv6 and an IPv4 address, and
/// the server listen on one of them), each within `timeout`.
pub fn connect_within(target: &Target, timeout: Duration) -> Result<TcpStream, ClientError> {
    let mut failures = Vec::new();
    for &addr in target.addrs() {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            // The handshake completed and the server then reset the
            // connection before the connect call returned: not a failure
            // to connect, and no reason to try another address.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Err(socket_error(&e)),
            Err(e) => {
                let why = match e.kind() {
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                        format!("no answer in {} s", timeout.as_secs_f64())
                    }
                    _ => e.to_string(),
                };
                debug!("cannot connect to {addr}: {why}");
                failures.push((addr, why));
            }
        }
    }
    Err(connect_error(target, &failures))
}

/// One line for every address that failed: `cannot connect to NAME: WHY`,
/// with the address when the name is not it, and each address's reason
/// when there were several.
fn connect_error(target: &Target, failures: &[(SocketAddr, String)]) -> ClientError {
    let name = &target.name;
    match failures {
        [(addr, why)] if addr.to_string() == *name => {
            ClientError::new(format!("cannot connect to {name}: {why}"))
        }
        [(addr, why)] => ClientError::new(format!("cannot connect to {name} ({addr}): {why}")),
        _ => ClientError::new(format!(
            "cannot connect to {name}: {}",
            failures
                .iter()
                .map(|(addr, why)| format!("{addr}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        )),
    }
}

/// A failed read or write on an established connection, as one line.
pub(crate) fn socket_error(e: &io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::ConnectionReset => ClientError::new("connection reset by server"),
        io::ErrorKind::ConnectionAborted => ClientError::new("connection aborted"),
        io::ErrorKind::BrokenPipe => ClientError::new("connection closed by server"),
        _ => ClientError::new(format!("connection failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn addresses_take_names_ipv4_and_bracketed_ipv6() {
        for (text, host, port) in [
            ("127.0.0.1:7999", "127.0.0.1", 7999),
            ("localhost:7999", "localhost", 7999),
            ("[::1]:80", "::1", 80),
            ("my-host.example_1:1", "my-host.example_1", 1),
        ] {
            let addr: Address = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((addr.host.as_str(), addr.port), (host, port), "{text}");
            assert_eq!(addr.to_string(), text);
        }
    }

    #[test]
    fn addresses_without_a_port_or_with_a_bad_host_are_refused() {
        for bad in [
            "localhost",
            "localhost:",
            ":7999",
            "localhost:70000",
            "::1:80",
            "[::1]",
            "[nope]:80",
            "a b:80",
            "not-an-address",
        ] {
            let err = bad.parse::<Address>().expect_err(bad);
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }

    #[test]
    fn an_ip_address_resolves_to_itself() {
        let target = "127.0.0.1:9".parse::<Address>().unwrap().resolve().unwrap();
        assert_eq!(target.addrs(), ["127.0.0.1:9".parse().unwrap()]);
        assert_eq!(target.to_string(), "127.0.0.1:9");
    }

    /// A port nothing listens on: bound and released.
    fn refused() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[test]
    fn each_address_is_tried_in_turn() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let good = listener.local_addr().unwrap();
        let target = Target {
            name: "both:1".to_string(),
            addrs: vec![refused(), good],
        };
        let stream = connect(&target).expect("the second address answers");
        assert_eq!(stream.peer_addr().unwrap(), good);
    }

    #[test]
    fn when_every_address_fails_each_is_named_on_one_line() {
        let (a, b) = (refused(), refused());
        let target = Target {
            name: "both:1".to_string(),
            addrs: vec![a, b],
        };
        let text = connect(&target).unwrap_err().to_string();
        assert!(text.starts_with("cannot connect to both:1: "), "{text}");
        assert!(text.contains(&format!("{a}: ")) && text.contains(&format!("; {b}: ")));
        assert!(!text.contains('\n'));
        let one = Target::from(a);
        let text = connect(&one).unwrap_err().to_string();
        assert!(
            text.starts_with(&format!("cannot connect to {a}: ")),
            "{text}"
        );
        assert!(text.contains("refused"), "{text}");
    }
}
