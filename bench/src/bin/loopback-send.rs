//! `loopback-send --listen ADDR --bytes N`: accepts one connection and
//! writes N zero bytes to it in 1 MiB blocking writes, then closes and
//! exits. Raw loopback TCP with no server logic at all: the ceiling any
//! download over loopback can approach, in `scripts/bench.sh`.

use std::io::Write;
use std::net::TcpListener;

fn main() -> std::io::Result<()> {
    let bytes: u64 = tcp_reactor_baselines::flag("bytes", Some(1 << 30));
    let listener = TcpListener::bind(tcp_reactor_baselines::listen_addr())?;
    tcp_reactor_baselines::announce(listener.local_addr()?);
    let (mut socket, _) = listener.accept()?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        socket.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    Ok(())
}
