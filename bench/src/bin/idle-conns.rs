//! `idle-conns ADDR --conns N --secs T`: opens N connections to ADDR and
//! holds them without sending a byte, for `scripts/bench.sh` to read what
//! an idle connection costs a server. Prints `open N` on stdout once all
//! are established, then waits until T seconds have passed or stdin ends,
//! whichever comes first, and exits (closing them all).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::exit;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

fn main() {
    let addr = tcp_reactor_baselines::addr_arg("idle-conns ADDR --conns N --secs T");
    let conns: usize = tcp_reactor_baselines::flag("conns", Some(10_000));
    let secs: u64 = tcp_reactor_baselines::flag("secs", Some(60));
    let mut open = Vec::with_capacity(conns);
    for i in 0..conns {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(socket) => open.push(socket),
            Err(e) => {
                eprintln!("error: connection {i}: {e}");
                exit(1)
            }
        }
    }
    println!("open {}", open.len());
    // The script may read the line while we wait.
    let _ = std::io::stdout().flush();
    let (ended, wait) = mpsc::channel();
    thread::spawn(move || {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        let _ = ended.send(());
    });
    let _ = wait.recv_timeout(Duration::from_secs(secs));
    drop(open);
}
