//! The client programs (`get`, `client`) driven in-process against small
//! scripted fake servers on loopback port 0, and once against the real
//! server. Every wait is bounded by `WAIT`.

mod support;

use std::fs;
use std::io::{self, BufRead, BufReader, Cursor, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use tcp_reactor::client::ClientError;
use tcp_reactor::client::get::{self, GetOptions};
use tcp_reactor::client::interactive::{self, ClientOptions, Ended, Show};
use tcp_reactor::text::Encoding;

use support::WAIT;

// ---- helpers ----

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "tcp-reactor-clients-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Names of the entries, sorted: shows leftover temporary files too.
    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .expect("list the temp dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A fake server for one connection: `script` runs on it in a thread. The
/// returned receiver yields once the script has finished (it disconnects
/// instead if the script panicked).
fn fake_server(script: impl FnOnce(TcpStream) + Send + 'static) -> (SocketAddr, Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback port 0");
    let addr = listener.local_addr().expect("bound address");
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept the client");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        script(stream);
        let _ = done.send(());
    });
    (addr, finished)
}

/// Waits (bounded) for a fake server's script to finish without panicking.
fn wait_script(finished: &Receiver<()>) {
    finished
        .recv_timeout(WAIT)
        .expect("the fake server's script finished without panicking");
}

/// Runs `f` on a thread and waits for its result, at most `WAIT`.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(WAIT)
        .expect("finished in time (or panicked: see above)")
}

/// Everything the client sends until it half-closes.
fn request(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .expect("read the request up to the client's half-close");
    bytes
}

/// `len` bytes that show any shift, drop or duplication.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251 % 256) as u8)
        .collect()
}

/// A files-protocol fake: checks the request is `GET name` and then the
/// half-close, and answers `reply`.
fn files_server(name: &str, reply: Vec<u8>) -> (SocketAddr, Receiver<()>) {
    let expected = format!("GET {name}\n").into_bytes();
    fake_server(move |mut stream| {
        assert_eq!(request(&mut stream), expected);
        stream.write_all(&reply).expect("send the reply");
    })
}

fn ok_reply(body: &[u8]) -> Vec<u8> {
    let mut reply = format!("OK {}\n", body.len()).into_bytes();
    reply.extend_from_slice(body);
    reply
}

fn get_to(addr: SocketAddr, name: &str, output: &Path) -> GetOptions {
    GetOptions {
        output: Some(output.to_path_buf()),
        quiet: true,
        ..GetOptions::new(addr, name)
    }
}

fn run_get(opts: GetOptions) -> Result<get::GetSummary, ClientError> {
    bounded(move || get::get(&opts))
}

/// An address nothing listens on: a port just bound and released.
fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback port 0");
    listener.local_addr().expect("bound address")
}

/// Input that yields what the test sends, when it sends it: reads block
/// until then (at most `WAIT`), and dropping the sender is end of input.
struct ChannelReader {
    lines: Receiver<Vec<u8>>,
    pending: Cursor<Vec<u8>>,
}

impl ChannelReader {
    fn new() -> (Sender<Vec<u8>>, ChannelReader) {
        let (tx, lines) = mpsc::channel();
        let reader = ChannelReader {
            lines,
            pending: Cursor::new(Vec::new()),
        };
        (tx, reader)
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.pending.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            match self.lines.recv_timeout(WAIT) {
                Ok(bytes) => self.pending = Cursor::new(bytes),
                Err(RecvTimeoutError::Disconnected) => return Ok(0),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(io::Error::other("test input waited too long"));
                }
            }
        }
    }
}

/// Output that hands each write to the test as it happens.
struct ChannelWriter(Sender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.0.send(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Collects a [`ChannelWriter`]'s output.
struct Screen {
    writes: Receiver<Vec<u8>>,
    bytes: Vec<u8>,
}

impl Screen {
    fn new() -> (ChannelWriter, Screen) {
        let (tx, writes) = mpsc::channel();
        let screen = Screen {
            writes,
            bytes: Vec::new(),
        };
        (ChannelWriter(tx), screen)
    }

    fn text(&self) -> String {
        String::from_utf8(self.bytes.clone()).expect("output is UTF-8")
    }

    /// Waits until the output so far contains `needle`; panics after `WAIT`.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        while !self.text().contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.writes.recv_timeout(left) {
                Ok(bytes) => self.bytes.extend_from_slice(&bytes),
                Err(_) => panic!("no {needle:?} in the output; got {:?}", self.text()),
            }
        }
        self.text()
    }

    /// All output, once the writer is gone.
    fn rest(&mut self) -> String {
        while let Ok(bytes) = self.writes.recv_timeout(WAIT) {
            self.bytes.extend_from_slice(&bytes);
        }
        self.text()
    }
}

type Session = Receiver<Result<Ended, ClientError>>;

/// Starts `interactive` on a thread; the receiver yields its result.
fn start_session(
    addr: SocketAddr,
    encoding: Encoding,
    input: impl Read + Send + 'static,
    output: impl Write + Send + 'static,
) -> Session {
    let (tx, result) = mpsc::channel();
    thread::spawn(move || {
        let opts = ClientOptions {
            encoding,
            ..ClientOptions::new(addr)
        };
        let _ = tx.send(interactive::interactive(&opts, input, output));
    });
    result
}

fn finish(session: &Session) -> Result<Ended, ClientError> {
    session
        .recv_timeout(WAIT)
        .expect("the session ended in time")
}

/// Answers each line with `ok <line>`, closes at the client's half-close.
fn line_ack_server(stream: TcpStream) {
    let mut writer = stream.try_clone().expect("clone the stream");
    for line in BufReader::new(stream).lines() {
        let line = line.expect("read a line");
        writer
            .write_all(format!("ok {line}\n").as_bytes())
            .expect("reply");
    }
}

/// Sends every byte back, closes at the client's half-close.
fn echo_server(stream: TcpStream) {
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = stream;
    io::copy(&mut reader, &mut writer).expect("echo");
}

// ---- get ----

#[test]
fn get_saves_the_exact_bytes_under_the_names_last_component_and_no_temp_file() {
    let dir = TempDir::new();
    let body = pattern(3 * 1024 * 1024 + 17);
    let (addr, script) = files_server("sub/big.bin", ok_reply(&body));
    // An existing directory as the output: the file goes inside it.
    let summary = run_get(get_to(addr, "sub/big.bin", dir.path())).expect("download");
    wait_script(&script);
    let target = dir.path().join("big.bin");
    assert_eq!(summary.bytes, body.len() as u64);
    assert_eq!(summary.path.as_deref(), Some(target.as_path()));
    assert!(fs::read(&target).expect("read the download") == body);
    assert_eq!(dir.entries(), ["big.bin"]);
    assert!(summary.to_string().contains("big.bin"), "{summary}");
}

#[test]
fn get_saves_an_empty_file() {
    let dir = TempDir::new();
    let (addr, script) = files_server("empty", b"OK 0\n".to_vec());
    let target = dir.path().join("out");
    run_get(get_to(addr, "empty", &target)).expect("download");
    wait_script(&script);
    assert_eq!(fs::read(&target).expect("read the download"), b"");
    assert_eq!(dir.entries(), ["out"]);
}

#[test]
fn get_download_writes_to_any_writer_like_stdout() {
    let body = pattern(1024 * 1024);
    let (addr, script) = files_server("a.bin", ok_reply(&body));
    let opts = GetOptions {
        quiet: true,
        ..GetOptions::new(addr, "a.bin")
    };
    let out = bounded(move || {
        let mut out = Vec::new();
        get::download(&opts, &mut out).map(|n| (n, out))
    });
    let (n, out) = out.expect("download");
    wait_script(&script);
    assert_eq!(n, body.len() as u64);
    assert!(out == body);
}

#[test]
fn get_reports_the_servers_refusal_and_creates_no_file() {
    let dir = TempDir::new();
    let (addr, script) = files_server("missing.txt", b"ERR not found\n".to_vec());
    let err =
        run_get(get_to(addr, "missing.txt", &dir.path().join("missing.txt"))).expect_err("refused");
    wait_script(&script);
    assert_eq!(err.to_string(), "server refused 'missing.txt': not found");
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

#[test]
fn get_short_transfer_is_an_error_and_leaves_no_file() {
    let dir = TempDir::new();
    let mut reply = b"OK 1000\n".to_vec();
    reply.extend_from_slice(&pattern(500));
    let (addr, script) = files_server("f", reply);
    let err = run_get(get_to(addr, "f", &dir.path().join("f"))).expect_err("short");
    wait_script(&script);
    assert_eq!(err.to_string(), "short transfer: got 500 of 1000 bytes");
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

#[test]
fn get_more_bytes_than_announced_is_an_error_and_leaves_no_file() {
    let dir = TempDir::new();
    let (addr, script) = files_server("f", b"OK 5\nabcdefgh".to_vec());
    let err = run_get(get_to(addr, "f", &dir.path().join("f"))).expect_err("long");
    wait_script(&script);
    assert_eq!(
        err.to_string(),
        "server sent more than the 5 bytes it announced"
    );
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

#[test]
fn get_refuses_an_existing_file_without_force_before_connecting() {
    let dir = TempDir::new();
    let target = dir.path().join("f");
    fs::write(&target, b"old").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback port 0");
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();

    let err = run_get(get_to(addr, "f", &target)).expect_err("exists");
    assert_eq!(
        err.to_string(),
        format!("{} exists (use --force to overwrite)", target.display())
    );
    // A connect would have completed into the accept queue before `get`
    // returned.
    match listener.accept() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        other => panic!("the server was contacted: {other:?}"),
    }
    assert_eq!(fs::read(&target).unwrap(), b"old");
    assert_eq!(dir.entries(), ["f"]);
}

#[test]
fn get_with_force_replaces_an_existing_file() {
    let dir = TempDir::new();
    let target = dir.path().join("f");
    fs::write(&target, b"old contents, longer than the new").unwrap();
    let (addr, script) = files_server("f", ok_reply(b"new"));
    let opts = GetOptions {
        force: true,
        ..get_to(addr, "f", &target)
    };
    run_get(opts).expect("download");
    wait_script(&script);
    assert_eq!(fs::read(&target).unwrap(), b"new");
    assert_eq!(dir.entries(), ["f"]);
}

#[test]
fn get_refused_connection_is_one_line_and_creates_no_file() {
    let dir = TempDir::new();
    let addr = refused_addr();
    let err = run_get(get_to(addr, "f", &dir.path().join("f"))).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot connect to {addr}: ")) && text.contains("refused"),
        "{text}"
    );
    assert!(!text.contains('\n'));
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

#[test]
fn get_gives_up_on_a_stalled_server_and_leaves_no_file() {
    let dir = TempDir::new();
    let (release, held) = mpsc::channel::<()>();
    let (addr, script) = fake_server(move |mut stream| {
        assert_eq!(request(&mut stream), b"GET f\n");
        stream.write_all(b"OK 10\n12345").unwrap();
        // Hold the connection open, silent, until the test has its answer.
        let _ = held.recv_timeout(WAIT);
    });
    let opts = GetOptions {
        idle_timeout: Duration::from_millis(300),
        ..get_to(addr, "f", &dir.path().join("f"))
    };
    let err = run_get(opts).expect_err("stalled");
    release.send(()).unwrap();
    wait_script(&script);
    assert_eq!(err.to_string(), "server sent nothing for 0.3 s");
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

#[test]
fn get_reset_in_the_middle_is_an_error_and_leaves_no_file() {
    let dir = TempDir::new();
    let (addr, script) = fake_server(|mut stream| {
        assert_eq!(request(&mut stream), b"GET f\n");
        stream.write_all(b"OK 100000\n0123456789").unwrap();
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let err = run_get(get_to(addr, "f", &dir.path().join("f"))).expect_err("reset");
    wait_script(&script);
    // The reset may overtake the ten bytes, or follow them.
    assert_eq!(err.to_string(), "connection reset by server");
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

#[test]
fn get_refuses_answers_that_are_not_the_files_protocol() {
    for (reply, expected) in [
        (b"GET f\n".to_vec(), "does not speak the files protocol"),
        (vec![b'x'; 5000], "no header line in 4200 bytes"),
        (b"OK lots\n".to_vec(), "bad size"),
        (Vec::new(), "closed the connection without answering"),
    ] {
        let dir = TempDir::new();
        let (addr, script) = files_server("f", reply);
        let err = run_get(get_to(addr, "f", &dir.path().join("f"))).expect_err("garbage");
        wait_script(&script);
        assert!(err.to_string().contains(expected), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
        assert!(dir.entries().is_empty(), "{:?}", dir.entries());
    }
}

// ---- interactive ----

#[test]
fn client_sends_each_piped_line_and_shows_every_reply() {
    let (addr, script) = fake_server(line_ack_server);
    let result = bounded(move || {
        let mut output = Vec::new();
        let opts = ClientOptions::new(addr);
        interactive::interactive(&opts, Cursor::new(b"a\nb\n".to_vec()), &mut output)
            .map(|ended| (ended, output))
    });
    let (ended, output) = result.expect("session");
    wait_script(&script);
    assert_eq!(ended, Ended::InputEnded);
    assert_eq!(String::from_utf8(output).unwrap(), "ok a\nok b\n");
}

/// Sends another user's hostile bytes (a title change, an OSC 52 clipboard
/// write, a C1 CSI) and closes once the client half-closes.
fn hostile_server(mut stream: TcpStream) {
    stream
        .write_all("\x1b]0;owned\x07hi\t\x1b]52;c;aGk=\x07\u{9b}2J\n".as_bytes())
        .expect("send");
    let _ = request(&mut stream);
}

fn session_output(show: Show) -> Vec<u8> {
    let (addr, script) = fake_server(hostile_server);
    let (ended, output) = bounded(move || {
        let mut output = Vec::new();
        let opts = ClientOptions {
            show,
            ..ClientOptions::new(addr)
        };
        interactive::interactive(&opts, Cursor::new(Vec::new()), &mut output)
            .map(|ended| (ended, output))
    })
    .expect("session");
    wait_script(&script);
    assert_eq!(ended, Ended::InputEnded);
    output
}

#[test]
fn client_on_a_terminal_shows_control_characters_escaped() {
    assert_eq!(
        String::from_utf8(session_output(Show::Escaped)).unwrap(),
        "\\x1b]0;owned\\x07hi\t\\x1b]52;c;aGk=\\x07\\u{9b}2J\n"
    );
}

#[test]
fn client_in_a_pipe_passes_control_characters_untouched() {
    assert_eq!(
        session_output(Show::Raw),
        "\x1b]0;owned\x07hi\t\x1b]52;c;aGk=\x07\u{9b}2J\n".as_bytes()
    );
}

#[test]
fn client_shows_the_reply_before_the_input_ends() {
    let (addr, script) = fake_server(echo_server);
    let (lines, input) = ChannelReader::new();
    let (output, mut screen) = Screen::new();
    let session = start_session(addr, Encoding::Utf8, input, output);

    lines.send(b"a\n".to_vec()).unwrap();
    assert_eq!(screen.wait_for("a\n"), "a\n");
    lines.send(b"b\n".to_vec()).unwrap();
    assert_eq!(screen.wait_for("b\n"), "a\nb\n");
    drop(lines);

    assert_eq!(finish(&session), Ok(Ended::InputEnded));
    wait_script(&script);
    assert_eq!(screen.rest(), "a\nb\n");
}

#[test]
fn client_decodes_gbk_split_in_the_middle_of_a_character() {
    let gbk = Encoding::Gbk.encode("收到请求\n");
    // 收 is two bytes; the cut falls inside 到.
    let (first, second) = (gbk[..3].to_vec(), gbk[3..].to_vec());
    let (go, wait_go) = mpsc::channel::<()>();
    let (addr, script) = fake_server(move |mut stream| {
        stream.write_all(&first).unwrap();
        wait_go
            .recv_timeout(WAIT)
            .expect("the test saw the first part");
        stream.write_all(&second).unwrap();
    });
    let (lines, input) = ChannelReader::new();
    let (output, mut screen) = Screen::new();
    let session = start_session(addr, Encoding::Gbk, input, output);

    // The first read ended mid-character: only the whole one is shown.
    assert_eq!(screen.wait_for("收"), "收");
    go.send(()).unwrap();
    assert_eq!(screen.wait_for("\n"), "收到请求\n");
    assert_eq!(finish(&session), Ok(Ended::ServerClosed));
    wait_script(&script);
    drop(lines);
}

#[test]
fn client_returns_when_the_server_closes_first_while_input_is_open() {
    let (addr, script) = fake_server(|stream| {
        let mut writer = stream.try_clone().unwrap();
        let mut line = Vec::new();
        BufReader::new(stream)
            .read_until(b'\n', &mut line)
            .expect("read a line");
        // The input was encoded to GBK on the way out.
        assert_eq!(line, Encoding::Gbk.encode("你好\n"));
        writer.write_all(&Encoding::Gbk.encode("再见\n")).unwrap();
    });
    let (lines, input) = ChannelReader::new();
    let (output, mut screen) = Screen::new();
    let session = start_session(addr, Encoding::Gbk, input, output);

    lines.send("你好\n".as_bytes().to_vec()).unwrap();
    // `lines` stays open: the input has not ended, as at a quiet terminal.
    assert_eq!(finish(&session), Ok(Ended::ServerClosed));
    wait_script(&script);
    assert_eq!(screen.rest(), "再见\n");
    drop(lines);
}

#[test]
fn client_reports_a_reset_as_one_line() {
    let (addr, script) = fake_server(|stream| {
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let (lines, input) = ChannelReader::new();
    let (output, _screen) = Screen::new();
    let session = start_session(addr, Encoding::Utf8, input, output);
    let err = finish(&session).expect_err("reset");
    wait_script(&script);
    assert_eq!(err.to_string(), "connection reset by server");
    drop(lines);
}

#[test]
fn client_refused_connection_is_one_line() {
    let addr = refused_addr();
    let (lines, input) = ChannelReader::new();
    let (output, _screen) = Screen::new();
    let session = start_session(addr, Encoding::Utf8, input, output);
    let err = finish(&session).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot connect to {addr}: ")) && text.contains("refused"),
        "{text}"
    );
    drop(lines);
}

#[test]
fn client_talks_gbk_to_the_real_ack_server_until_exit() {
    let server = support::Server::start(&["-l", "127.0.0.1:0=ack", "--encoding", "gbk"]);
    let (lines, input) = ChannelReader::new();
    let (output, mut screen) = Screen::new();
    let session = start_session(server.addr("ack"), Encoding::Gbk, input, output);

    lines.send("你好\n".as_bytes().to_vec()).unwrap();
    assert_eq!(screen.wait_for("\n"), "收到请求\n");
    lines.send(b"exit\n".to_vec()).unwrap();
    assert_eq!(finish(&session), Ok(Ended::ServerClosed));
    assert!(server.wait_for_log("你好"), "log: {:?}", server.log());
    drop(lines);
}

// ---- get: signals and unwritable outputs ----

/// Runs the `get` binary into `dir` against a server that announces a
/// megabyte, sends 100 KB and then stalls; once the partial file is on
/// disk, sends `signal`. Returns the exit status, stderr and what is left
/// in `dir`.
fn get_interrupted_by(signal: &str) -> (std::process::ExitStatus, String, Vec<String>) {
    let dir = TempDir::new();
    let (release, held) = mpsc::channel::<()>();
    let (addr, script) = fake_server(move |mut stream| {
        assert_eq!(request(&mut stream), b"GET big.bin\n");
        let mut reply = b"OK 1000000\n".to_vec();
        reply.extend_from_slice(&pattern(100_000));
        stream.write_all(&reply).unwrap();
        // Stall, the download half done, until the test is over.
        let _ = held.recv_timeout(WAIT);
    });
    let mut child = std::process::Command::new(support::binary())
        .args(["get", &addr.to_string(), "big.bin", "-q"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run get");
    let deadline = Instant::now() + WAIT;
    // The partial file holds every byte sent so far (the write that puts
    // them there happens before `get` waits on the socket again).
    let partial = |dir: &TempDir| {
        dir.entries().iter().any(|n| {
            n.starts_with(".big.bin.part.")
                && fs::metadata(dir.path().join(n)).is_ok_and(|m| m.len() == 100_000)
        })
    };
    while !partial(&dir) {
        assert!(
            Instant::now() < deadline,
            "no partial file: {:?}",
            dir.entries()
        );
        thread::sleep(Duration::from_millis(10));
    }
    std::process::Command::new("kill")
        .args(["-s", signal, &child.id().to_string()])
        .status()
        .expect("run kill");
    let status = support::wait_bounded(&mut child);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr was piped")
        .read_to_string(&mut stderr)
        .unwrap();
    release.send(()).unwrap();
    wait_script(&script);
    (status, stderr, dir.entries())
}

#[test]
fn regression_get_interrupted_by_sigint_removes_its_partial_file_and_exits_130() {
    let (status, stderr, left) = get_interrupted_by("INT");
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(status.code(), Some(130), "{status}: {stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
}

#[test]
fn regression_get_interrupted_by_sigterm_removes_its_partial_file_and_exits_143() {
    let (status, stderr, left) = get_interrupted_by("TERM");
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(status.code(), Some(143), "{status}: {stderr}");
}

#[test]
fn regression_an_unwritable_output_is_named_as_the_user_gave_it() {
    let dir = TempDir::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback port 0");
    let addr = listener.local_addr().unwrap();
    let output = dir.path().join("no-such-dir").join("out.bin");
    let err = run_get(get_to(addr, "f", &output)).expect_err("unwritable");
    let text = err.to_string();
    assert!(
        text.contains(&output.display().to_string()),
        "names {}: {text}",
        output.display()
    );
    assert!(!text.contains(".part"), "{text}");
}
