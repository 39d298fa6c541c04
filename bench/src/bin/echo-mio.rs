//! A minimal mio echo server: one loop, edge-triggered, a fixed 64 KiB
//! buffer per connection; read until `WouldBlock`, write back, and while a
//! write would block, read nothing more until the writable event. No
//! fairness budget, no limits, no timers, no accounting: the floor a
//! readiness reactor can reach, for comparison.

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// The listener's token; connections use their table index.
const LISTENER: Token = Token(usize::MAX);

struct Conn {
    socket: TcpStream,
    /// Invariant: `buf[start..end]` is read but not yet written back; when
    /// it is not empty, the connection reads nothing until it is.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

fn main() -> io::Result<()> {
    let listener = tcp_reactor_baselines::listener(tcp_reactor_baselines::listen_addr())?;
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    tcp_reactor_baselines::announce(listener.local_addr()?);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn> = Slab::new();
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut socket, _)) => {
                            let key = conns.vacant_key();
                            poll.registry().register(
                                &mut socket,
                                Token(key),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            conns.insert(Conn {
                                socket,
                                buf: vec![0u8; tcp_reactor_baselines::BUF].into_boxed_slice(),
                                start: 0,
                                end: 0,
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if !pump(conn) {
                // `get_mut` just found the key, so it is occupied.
                let mut conn = conns.remove(key);
                // Deregistering a socket about to be closed cannot matter.
                let _ = poll.registry().deregister(&mut conn.socket);
            }
        }
    }
}

/// Echoes as far as the socket allows; false once the connection is over.
fn pump(conn: &mut Conn) -> bool {
    loop {
        while conn.start < conn.end {
            match conn.socket.write(&conn.buf[conn.start..conn.end]) {
                Ok(n) => conn.start += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        conn.start = 0;
        conn.end = 0;
        match conn.socket.read(&mut conn.buf) {
            Ok(0) => return false,
            Ok(n) => conn.end = n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}
