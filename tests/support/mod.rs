//! Helpers for the integration tests: a real server process on port 0, with
//! its log captured, every wait bounded, and the process killed on drop.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tcp-reactor")
}

/// A running `tcp-reactor serve`.
pub struct Server {
    child: Child,
    /// Service names and bound addresses, in the order the log gave them.
    addrs: Vec<(String, SocketAddr)>,
    log: Arc<Mutex<Vec<String>>>,
    lines: Receiver<String>,
}

impl Server {
    /// Starts `serve` with `args`, and waits until every listener has logged
    /// its address. Use port 0 in every `--listen`.
    pub fn start(args: &[&str]) -> Server {
        Server::start_under(&[], args)
    }

    /// As [`Server::start`], run under `wrapper` (a command and its
    /// arguments that ends by running the rest, such as `prlimit ... --`).
    pub fn start_under(wrapper: &[&str], args: &[&str]) -> Server {
        let listeners = args
            .iter()
            .filter(|a| **a == "-l" || **a == "--listen")
            .count();
        Server::spawn(wrapper, args, None, listeners.max(1))
    }

    /// `serve` with `args` in the directory `cwd`, waiting for `listeners`
    /// addresses in the log (for runs without `--listen`, which open the
    /// default listeners).
    pub fn start_in(cwd: &std::path::Path, args: &[&str], listeners: usize) -> Server {
        Server::spawn(&[], args, Some(cwd), listeners)
    }

    fn spawn(
        wrapper: &[&str],
        args: &[&str],
        cwd: Option<&std::path::Path>,
        listeners: usize,
    ) -> Server {
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let mut child = command
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the server");
        let stderr = child.stderr.take().expect("stderr was piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child,
            addrs: Vec::new(),
            log,
            lines,
        };
        let deadline = Instant::now() + WAIT;
        while server.addrs.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = server.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("server did not log its addresses; log: {:?}", server.log())
            });
            if let Some(rest) = line.split("listening on ").nth(1) {
                let (addr, service) = rest.split_once(" (").expect("listening line format");
                let service = service.trim_end_matches(')').to_string();
                server
                    .addrs
                    .push((service, addr.parse().expect("bound address")));
            }
        }
        server
    }

    /// The address the first `service` listener is bound to.
    pub fn addr(&self, service: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(s, _)| s == service)
            .unwrap_or_else(|| panic!("no {service} listener"))
            .1
    }

    /// Every bound address with its service.
    pub fn addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`; false after `WAIT`.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        self.wait_for_any_log(&[needle])
    }

    /// Waits until a log line contains one of `needles`; false after `WAIT`.
    pub fn wait_for_any_log(&self, needles: &[&str]) -> bool {
        let deadline = Instant::now() + WAIT;
        loop {
            if self
                .log()
                .iter()
                .any(|l| needles.iter().any(|n| l.contains(n)))
            {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)));
        }
    }

    /// A field of /proc/PID/status, in kB (VmRSS, VmHWM) or as a count
    /// (Threads).
    pub fn status_field(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// CPU time (user + system) the server has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("read /proc stat");
        // The fields after the parenthesised command name; utime and stime
        // are fields 14 and 15 of the line, in clock ticks (100 a second).
        let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        Duration::from_millis((fields[11] + fields[12]) * 10)
    }

    /// Panics if the server has exited (it must survive every client).
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("query the server") {
            panic!("server exited with {status}; log: {:?}", self.log());
        }
    }

    /// Sends `signal` and waits (bounded) for the exit status.
    pub fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        let pid = self.pid().to_string();
        Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .expect("run kill");
        wait_bounded(&mut self.child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a child to exit; kills it and panics after `WAIT`.
pub fn wait_bounded(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("query child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A connected client whose every read and write is bounded by `WAIT`.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

/// Reads until the server closes; panics on error or timeout.
pub fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    stream
        .read_to_end(&mut out)
        .expect("read until the server closes");
    out
}

/// Reads until the server closes or resets the connection: the bytes that
/// arrived, and the error that ended them (`None` for a clean close).
pub fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Option<std::io::ErrorKind>) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (out, Some(e.kind())),
        }
    }
}

/// Sends `bytes`, half-closes, and returns everything the server sends back
/// until it closes.
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(bytes).expect("send");
    stream.shutdown(Shutdown::Write).expect("half-close");
    read_to_end(&mut stream)
}

/// Reads exactly `n` bytes.
pub fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream
        .read_exact(&mut buf)
        .expect("read the expected bytes");
    buf
}

/// A byte stream that cannot be shifted, dropped or duplicated without the
/// comparison noticing: byte `i` is `TABLE[i % P]` with `P` prime, so any
/// offset error shows, and the caller checks the total length.
pub struct Pattern {
    table: Vec<u8>,
}

const PERIOD: usize = 65_521;

impl Pattern {
    /// The first `len` bytes of the pattern, as one vector (a file body).
    pub fn bytes(len: usize) -> Vec<u8> {
        let pattern = Pattern::new();
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let n = (len - out.len()).min(60_000);
            out.extend_from_slice(pattern.slice(out.len() as u64, n));
        }
        out
    }

    pub fn new() -> Pattern {
        let mut x: u32 = 2_463_534_242;
        let table = (0..PERIOD * 2)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect::<Vec<u8>>();
        // The second copy lets any window of up to PERIOD bytes be one slice.
        let mut table = table;
        let (a, b) = table.split_at_mut(PERIOD);
        b.copy_from_slice(a);
        Pattern { table }
    }

    /// The `len` (at most 65 521) pattern bytes starting at stream offset
    /// `offset`.
    pub fn slice(&self, offset: u64, len: usize) -> &[u8] {
        assert!(len <= PERIOD);
        let start = (offset % PERIOD as u64) as usize;
        &self.table[start..start + len]
    }

    /// Whether `bytes` are the pattern at `offset`.
    pub fn matches(&self, offset: u64, bytes: &[u8]) -> bool {
        let mut at = offset;
        bytes.chunks(PERIOD).all(|chunk| {
            let ok = chunk == self.slice(at, chunk.len());
            at += chunk.len() as u64;
            ok
        })
    }
}

/// Writes `total` pattern bytes to `stream`.
pub fn write_pattern(stream: &mut TcpStream, pattern: &Pattern, total: u64) {
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(60_000) as usize;
        stream
            .write_all(pattern.slice(sent, n))
            .expect("send pattern");
        sent += n as u64;
    }
}

/// Reads until EOF, checking every byte against the pattern; returns the
/// count of bytes that matched before the first mismatch or EOF, and whether
/// all matched.
pub fn read_pattern(stream: &mut TcpStream, pattern: &Pattern) -> (u64, bool) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let n = stream.read(&mut buf).expect("read echoed pattern");
        if n == 0 {
            return (got, true);
        }
        if !pattern.matches(got, &buf[..n]) {
            return (got, false);
        }
        got += n as u64;
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "tcp-reactor-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The path as a string, for command lines.
    pub fn arg(&self) -> &str {
        self.path.to_str().expect("temp paths are UTF-8")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes to an echo connection without reading until our own send blocks
/// (no progress for half a second), which leaves every queue on the path
/// non-empty and still. Returns the bytes the kernel took.
pub fn fill_until_blocked(stream: &mut TcpStream) -> u64 {
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![b'z'; 64 * 1024];
    let mut sent = 0u64;
    loop {
        match stream.write(&chunk) {
            Ok(n) => sent += n as u64,
            // A signal to the test process (a child exiting) is no reason
            // to stop.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return sent;
            }
            Err(e) => panic!("write: {e}"),
        }
        assert!(sent < 1 << 30, "never blocked");
    }
}

/// Runs the binary with `args` and `stdin` in the temp directory; kills it
/// and panics if it has not finished within `WAIT`.
pub fn run_binary(args: &[&str], stdin: &[u8]) -> std::process::Output {
    run_binary_in(args, stdin, &std::env::temp_dir())
}

/// As [`run_binary`], in the directory `cwd`.
pub fn run_binary_in(args: &[&str], stdin: &[u8], cwd: &std::path::Path) -> std::process::Output {
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the binary");
    let mut input = child.stdin.take().expect("stdin was piped");
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx.recv_timeout(WAIT).unwrap_or_else(|_| {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("{args:?} did not finish within {WAIT:?}")
    });
    feeder.join().expect("stdin feeder");
    output.expect("collect output")
}

/// Sends one admin command to `server`'s admin listener and returns the
/// answer (the service closes after our half-close).
pub fn admin(server: &Server, command: &str) -> String {
    admin_at(server.addr("admin"), command)
}

/// Sends one admin command to the admin listener at `addr`.
pub fn admin_at(addr: SocketAddr, command: &str) -> String {
    let answer = exchange(addr, format!("{command}\n").as_bytes());
    String::from_utf8(answer).expect("admin answers in UTF-8")
}

/// The JSON object of the client whose peer is `peer`, as text. A client
/// of two listeners can have the same local address for both: see
/// [`client_json_of`].
pub fn client_json(clients: &str, peer: SocketAddr) -> String {
    row_at(clients, &format!("\"peer\":\"{peer}\""))
        .unwrap_or_else(|| panic!("{peer} not in {clients}"))
}

/// The JSON object of the `service` client whose peer is `peer`, if any.
pub fn client_json_of(clients: &str, peer: SocketAddr, service: &str) -> Option<String> {
    row_at(
        clients,
        &format!("\"peer\":\"{peer}\",\"service\":\"{service}\""),
    )
}

fn row_at(clients: &str, key: &str) -> Option<String> {
    let at = clients.find(key)?;
    // The peer is a row's second field, so the row opens just before it.
    let start = clients[..at].rfind('{').expect("a row is an object");
    // Rows nest an object (TCP_INFO): match braces to find the row's end.
    let mut depth = 0;
    for (i, c) in clients[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(clients[start..=start + i].to_string());
                }
            }
            _ => {}
        }
    }
    panic!("a row is an object: {clients}")
}

/// The number after `"field":` in `json`, or `None` for null.
pub fn json_number(json: &str, field: &str) -> Option<u64> {
    let key = format!("\"{field}\":");
    let at = json
        .find(&key)
        .unwrap_or_else(|| panic!("{field} not in {json}"))
        + key.len();
    let digits: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Polls the admin `clients json` row of the `service` connection from
/// `peer` until `done` holds for it (every 10 ms, at most `WAIT`); `done` is
/// given `None` once the connection is gone. Returns the last row, if any.
pub fn wait_for_row(
    server: &Server,
    peer: SocketAddr,
    service: &str,
    done: impl Fn(Option<&str>) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let row = client_json_of(&admin(server, "clients json"), peer, service);
        if done(row.as_deref()) {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "condition never held; last row: {row:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The string after `"field":"` in `json`.
pub fn json_text<'a>(json: &'a str, field: &str) -> &'a str {
    let key = format!("\"{field}\":\"");
    let at = json
        .find(&key)
        .unwrap_or_else(|| panic!("{field} not in {json}"))
        + key.len();
    let len = json[at..].find('"').expect("a JSON string ends");
    &json[at..at + len]
}
