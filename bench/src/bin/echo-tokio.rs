//! A tokio `current_thread` echo server: one task per connection, each
//! reading into its own 64 KiB buffer and writing back what it read. The
//! idiomatic async design, on one thread like tcp-reactor, for comparison.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let addr = tcp_reactor_baselines::listen_addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = tcp_reactor_baselines::listener(addr)?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        tcp_reactor_baselines::announce(listener.local_addr()?);
        loop {
            match listener.accept().await {
                Ok((socket, _)) => {
                    tokio::spawn(echo(socket));
                }
                // Out of descriptors and the like: the connection is lost,
                // the server goes on (as tcp-reactor does, without its pause).
                Err(e) => eprintln!("accept: {e}"),
            }
        }
    })
}

async fn echo(mut socket: TcpStream) {
    let mut buf = vec![0u8; tcp_reactor_baselines::BUF];
    loop {
        let n = match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if socket.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
