//! The programs that talk to a server: `client` (the notes' interactive line
//! client), `get` (the download client), `bench` (an echo load generator),
//! `top` (a live view of the admin service's snapshots) and `record` (those
//! snapshots, sampled to CSV). Unlike the server they are plain blocking
//! programs, except `bench`, which runs its connections on one mio loop.

pub mod bench;
pub mod get;
pub mod interactive;
pub mod record;
pub mod snapshot;
pub mod top;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A client program's failure, as one line for the user (no `error:`
/// prefix; `main` adds it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientError(String);

impl ClientError {
    pub fn new(message: impl Into<String>) -> ClientError {
        ClientError(message.into())
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `addr` within [`CONNECT_TIMEOUT`].
pub fn connect(addr: SocketAddr) -> Result<TcpStream, ClientError> {
    TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ClientError::new(format!(
            "cannot connect to {addr}: no answer in {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
        // The handshake completed and the server then reset the connection
        // before the connect call returned: not a failure to connect.
        io::ErrorKind::ConnectionReset => socket_error(&e),
        _ => ClientError::new(format!("cannot connect to {addr}: {e}")),
    })
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
