//! Socket set-up that `mio` does not offer: listening sockets with a deep
//! accept backlog. Later, kernel buffer sizes and queue ioctls live here too,
//! so that every socket option is set in one place.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Accept backlog requested for listeners (the kernel caps it at
/// `net.core.somaxconn`). `mio`'s default of 128 overflows when a thousand
/// clients connect at once, and each overflow costs that client a one-second
/// SYN retransmission.
pub const LISTEN_BACKLOG: i32 = 4096;

/// A non-blocking listener on `addr`, with `SO_REUSEADDR` (so a restarted
/// server can bind while old connections sit in TIME_WAIT). An IPv6 address
/// listens on IPv6 only, so that `[::]` and `0.0.0.0` can be separate
/// listeners.
pub fn listener(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}
