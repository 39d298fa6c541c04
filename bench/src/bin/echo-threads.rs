//! A thread-per-connection echo server: std's blocking sockets, one thread
//! per client doing blocking reads and writes into a 64 KiB buffer. The
//! classic design, whose cost is a thread (a stack, a scheduler entry, a
//! context switch per message) for every client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;

fn main() -> std::io::Result<()> {
    let listener = tcp_reactor_baselines::listener(tcp_reactor_baselines::listen_addr())?;
    tcp_reactor_baselines::announce(listener.local_addr()?);
    for socket in listener.incoming() {
        match socket {
            Ok(socket) => {
                // A thread that cannot be made loses its client, not the server.
                if let Err(e) = thread::Builder::new().spawn(move || echo(socket)) {
                    eprintln!("spawn: {e}");
                }
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    Ok(())
}

fn echo(mut socket: TcpStream) {
    let mut buf = vec![0u8; tcp_reactor_baselines::BUF];
    loop {
        let n = match socket.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if socket.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
