//! Socket set-up that `mio` does not offer: listening sockets with a deep
//! accept backlog and optional `SO_REUSEPORT`, and the kernel queue ioctls.
//! Every `unsafe` of the crate is here.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Accept backlog requested for listeners (the kernel caps it at
/// `net.core.somaxconn`). `mio`'s default of 128 overflows when a thousand
/// clients connect at once, and each overflow costs that client a one-second
/// SYN retransmission.
pub const LISTEN_BACKLOG: i32 = 4096;

/// A non-blocking listener on `addr`, with `SO_REUSEADDR` (so a restarted
/// server can bind while old connections sit in TIME_WAIT), and with
/// `SO_REUSEPORT` when `reuse_port` (so several processes can share the port
/// and the kernel spreads connections between them). An IPv6 address listens
/// on IPv6 only, so that `[::]` and `0.0.0.0` can be separate listeners.
pub fn listener(addr: SocketAddr, reuse_port: bool) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Bytes in the kernel's send queue of `socket`: sent but not yet
/// acknowledged, plus not yet sent (ioctl SIOCOUTQ).
pub fn send_queue(socket: &impl AsRawFd) -> io::Result<usize> {
    let mut bytes: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ for sockets) writes one c_int through the
    // pointer, which points at a live c_int; the fd is open for the duration.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut bytes) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(bytes).unwrap_or(0))
}
