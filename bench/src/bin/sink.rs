//! `sink ADDR [--request TEXT] [--secs T]`: connects, sends TEXT (with a
//! newline) if given, and reads until the server closes, into a 1 MiB
//! buffer it never looks at. Prints `bytes N secs S` on stdout: the rate a
//! download reached, from the connect to the last byte. The one reader for
//! every download `scripts/bench.sh` times, so they differ only in the
//! sender. Gives up after T seconds (default 60) without a byte.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::exit;
use std::time::{Duration, Instant};

fn main() {
    let addr = tcp_reactor_baselines::addr_arg("sink ADDR [--request TEXT] [--secs T]");
    let request: String = tcp_reactor_baselines::flag("request", Some(String::new()));
    let secs: u64 = tcp_reactor_baselines::flag("secs", Some(60));
    let start = Instant::now();
    let run = || -> std::io::Result<u64> {
        let mut socket = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        socket.set_read_timeout(Some(Duration::from_secs(secs)))?;
        if !request.is_empty() {
            socket.write_all(format!("{request}\n").as_bytes())?;
        }
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match socket.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    };
    match run() {
        Ok(total) => println!("bytes {total} secs {:.6}", start.elapsed().as_secs_f64()),
        Err(e) => {
            eprintln!("error: {addr}: {e}");
            exit(1)
        }
    }
}
