//! Integration tests of the chat service against a real server on port 0.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::{Server, WAIT, connect};

/// A chat client reading whole lines.
struct Member {
    stream: TcpStream,
    lines: BufReader<TcpStream>,
}

impl Member {
    fn join(addr: SocketAddr) -> Member {
        let stream = connect(addr);
        let lines = BufReader::new(stream.try_clone().unwrap());
        Member { stream, lines }
    }

    fn addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    fn say(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    fn next_line(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .lines
            .read_line(&mut line)
            .expect("a line within the wait");
        assert!(n > 0, "the server closed the connection");
        line
    }
}

/// How many joins an announcement line tells of: one by name
/// (`* PEER joined`), or N in a burst's summary (`* N joined, M left`).
fn joins_in(line: &str) -> usize {
    let Some(news) = line.strip_prefix("* ") else {
        return 0;
    };
    if let Some((joined, _)) = news.split_once(" joined, ") {
        return joined.parse().unwrap_or(0);
    }
    usize::from(news.ends_with(" joined\n"))
}

#[test]
fn three_members_exchange_lines_and_see_joins_and_leaves() {
    let server = Server::start(&["-l", "127.0.0.1:0=chat"]);
    let addr = server.addr("chat");
    let mut a = Member::join(addr);
    let mut b = Member::join(addr);
    assert_eq!(a.next_line(), format!("* {} joined\n", b.addr()));
    let mut c = Member::join(addr);
    assert_eq!(a.next_line(), format!("* {} joined\n", c.addr()));
    assert_eq!(b.next_line(), format!("* {} joined\n", c.addr()));

    a.say("hello from a");
    let from_a = format!("[{}] hello from a\n", a.addr());
    assert_eq!(b.next_line(), from_a);
    assert_eq!(c.next_line(), from_a);
    c.say("and c\r");
    let from_c = format!("[{}] and c\n", c.addr());
    assert_eq!(a.next_line(), from_c);
    assert_eq!(b.next_line(), from_c);

    // A partial line waits for its newline...
    b.stream.write_all(b"half ").unwrap();
    b.stream.write_all(b"a line\npartial").unwrap();
    let half = format!("[{}] half a line\n", b.addr());
    assert_eq!(a.next_line(), half);
    assert_eq!(c.next_line(), half);
    // ...or for the sender's half-close, after which it leaves.
    let b_addr = b.addr();
    b.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(a.next_line(), format!("[{b_addr}] partial\n"));
    assert_eq!(a.next_line(), format!("* {b_addr} left\n"));
    assert_eq!(c.next_line(), format!("[{b_addr}] partial\n"));
    assert_eq!(c.next_line(), format!("* {b_addr} left\n"));

    let c_addr = c.addr();
    drop(c);
    assert_eq!(a.next_line(), format!("* {c_addr} left\n"));
}

#[test]
fn a_line_longer_than_the_receive_buffer_is_refused() {
    let server = Server::start(&["-l", "127.0.0.1:0=chat", "--recv-buf", "1K"]);
    let mut listener = Member::join(server.addr("chat"));
    let mut talker = Member::join(server.addr("chat"));
    let _ = listener.next_line(); // the talker's join
    talker.stream.write_all(&[b'x'; 3000]).unwrap();
    assert_eq!(talker.next_line(), "ERR line too long\n");
    let talker_addr = talker.addr();
    let mut rest = String::new();
    // Then the server's end of stream: it shut its side after the ERR line.
    assert_eq!(talker.lines.read_line(&mut rest).unwrap(), 0);
    drop(talker);
    assert_eq!(listener.next_line(), format!("* {talker_addr} left\n"));
}

/// Sends `count` numbered lines of `pad` bytes each from `member`, in
/// batches, waiting after each batch until every reader has seen it, so
/// that only a bounded amount is in flight to the readers that keep up.
fn send_numbered(
    stream: &mut TcpStream,
    name: usize,
    count: u64,
    pad: usize,
    batch: u64,
    progress: &[Arc<AtomicU64>],
) {
    let padding = "p".repeat(pad);
    let mut out = Vec::new();
    for i in 0..count {
        out.extend_from_slice(format!("{name} {i} {padding}\n").as_bytes());
        if (i + 1) % batch == 0 || i + 1 == count {
            stream.write_all(&out).unwrap();
            out.clear();
            let deadline = Instant::now() + WAIT;
            while progress.iter().any(|p| p.load(Ordering::Acquire) < i + 1) {
                assert!(Instant::now() < deadline, "readers stalled");
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

#[test]
fn a_member_that_never_reads_is_disconnected_and_the_others_get_every_line() {
    const LINES: u64 = 160_000; // per sender, ~104 bytes each: 50 MB in all
    const PAD: usize = 90;
    let mut server = Server::start(&[
        "-l",
        "127.0.0.1:0=chat",
        "--send-buf",
        "256K",
        "--recv-buf",
        "64K",
    ]);
    let addr = server.addr("chat");
    let baseline = server.status_field("VmRSS");
    let mut members: Vec<Member> = (0..3).map(|_| Member::join(addr)).collect();
    let sleeper = connect(addr); // joins and never reads
    let sleeper_addr = sleeper.local_addr().unwrap();
    let names: Vec<String> = members.iter().map(|m| m.addr().to_string()).collect();

    // progress[reader][sender]: lines of `sender` that `reader` has seen.
    let progress: Vec<Vec<Arc<AtomicU64>>> = (0..3)
        .map(|_| (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect())
        .collect();
    thread::scope(|s| {
        for (me, member) in members.iter_mut().enumerate() {
            let names = &names;
            let mine = &progress[me];
            let mut lines = BufReader::with_capacity(1 << 16, member.stream.try_clone().unwrap());
            s.spawn(move || {
                let mut line = String::new();
                let mut left_seen = false;
                while mine
                    .iter()
                    .enumerate()
                    .any(|(i, p)| i != me && p.load(Ordering::Acquire) < LINES)
                    || !left_seen
                {
                    line.clear();
                    assert!(
                        lines.read_line(&mut line).unwrap() > 0,
                        "reader {me} was closed"
                    );
                    if line.starts_with("* ") {
                        left_seen |= line == format!("* {sleeper_addr} left (too slow)\n");
                        continue;
                    }
                    // "[PEER] NAME SEQ PAD": in order, nothing lost.
                    let (peer, rest) = line[1..].split_once("] ").unwrap();
                    let mut words = rest.split(' ');
                    let sender: usize = words.next().unwrap().parse().unwrap();
                    let seq: u64 = words.next().unwrap().parse().unwrap();
                    assert_eq!(peer, names[sender]);
                    assert_eq!(
                        seq,
                        mine[sender].load(Ordering::Relaxed),
                        "reader {me}, sender {sender}"
                    );
                    mine[sender].store(seq + 1, Ordering::Release);
                }
            });
        }
        for (me, member) in members.iter_mut().enumerate() {
            let mut stream = member.stream.try_clone().unwrap();
            let watchers: Vec<Arc<AtomicU64>> = (0..3)
                .filter(|&r| r != me)
                .map(|r| Arc::clone(&progress[r][me]))
                .collect();
            s.spawn(move || send_numbered(&mut stream, me, LINES, PAD, 500, &watchers));
        }
    });
    assert!(server.wait_for_log("too slow"));
    // Ours saw the sleeper leave as too slow; it got at most a bounded part.
    drop(sleeper);
    let peak = server.status_field("VmHWM");
    let limit = 4 * (256 + 64) + 8 * 1024;
    assert!(
        peak.saturating_sub(baseline) < limit,
        "server RSS grew from {baseline} to {peak} KiB (limit {limit} KiB growth)"
    );
    server.assert_alive();
}

#[test]
fn five_hundred_members_all_receive_every_line_of_one_sender() {
    const LINES: usize = 200;
    let server = Server::start(&["-l", "127.0.0.1:0=chat"]);
    let addr = server.addr("chat");
    let mut sender = Member::join(addr);
    let mut receivers: Vec<Member> = (0..499).map(|_| Member::join(addr)).collect();
    // Members from their accept on: once the sender has heard of every
    // join (by name or in a burst's count), every receiver is one.
    let mut joins = 0;
    while joins < receivers.len() {
        joins += joins_in(&sender.next_line());
    }
    for i in 0..LINES {
        sender.say(&format!("line {i}"));
    }
    let prefix = format!("[{}] ", sender.addr());
    for (r, member) in receivers.iter_mut().enumerate() {
        let mut expected = 0;
        while expected < LINES {
            let line = member.next_line();
            if line.starts_with("* ") {
                continue;
            }
            assert_eq!(line, format!("{prefix}line {expected}\n"), "receiver {r}");
            expected += 1;
        }
    }
}

/// Reads chat lines on a thread until `lines` from `sender` have arrived in
/// order (any other line is skipped, but a `too slow` farewell fails);
/// returns the join handle.
fn read_lines_from(
    member: &Member,
    sender: std::net::SocketAddr,
    lines: usize,
) -> thread::JoinHandle<Result<(), String>> {
    let mut reader = BufReader::with_capacity(1 << 16, member.stream.try_clone().unwrap());
    let prefix = format!("[{sender}] ");
    thread::spawn(move || {
        let mut line = String::new();
        let mut next = 1;
        while next <= lines {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => return Err(format!("closed after {} lines", next - 1)),
                Ok(_) => {}
                Err(e) => return Err(format!("after {} lines: {e}", next - 1)),
            }
            if line == "* disconnected: too slow\n" {
                return Err(format!("dropped as too slow after {} lines", next - 1));
            }
            if let Some(text) = line.strip_prefix(&prefix) {
                if text != format!("{next}\n") {
                    return Err(format!("line {next} out of order: {line:?}"));
                }
                next += 1;
            }
        }
        Ok(())
    })
}

#[test]
fn regression_a_20000_line_paste_disconnects_every_reader() {
    let server = Server::start(&["-l", "127.0.0.1:0=chat"]);
    let addr = server.addr("chat");
    let mut readers: Vec<Member> = (0..2).map(|_| Member::join(addr)).collect();
    let mut paster = Member::join(addr);
    for reader in &mut readers {
        while reader.next_line() != format!("* {} joined\n", paster.addr()) {}
    }
    let handles: Vec<_> = readers
        .iter()
        .map(|r| read_lines_from(r, paster.addr(), 20_000))
        .collect();
    // `seq 1 20000 | nc`: the whole paste in as few writes as the kernel
    // takes, while the readers read as fast as they can.
    let paste: String = (1..=20_000).map(|i| format!("{i}\n")).collect();
    paster.stream.write_all(paste.as_bytes()).unwrap();
    for (i, handle) in handles.into_iter().enumerate() {
        handle
            .join()
            .expect("reader thread")
            .unwrap_or_else(|e| panic!("reader {i}: {e}"));
    }
    assert!(
        !server.log().iter().any(|l| l.contains("too slow")),
        "nobody is dropped"
    );
}

#[test]
fn regression_3500_joins_at_once_disconnect_readers_that_keep_up() {
    const JOINERS: usize = 3500;
    let server = Server::start(&["-l", "127.0.0.1:0=chat"]);
    let addr = server.addr("chat");
    let readers: Vec<Member> = (0..2).map(|_| Member::join(addr)).collect();
    let mut announced = Vec::new();
    for (i_reader, r) in readers.iter().enumerate() {
        let mut lines = BufReader::with_capacity(1 << 16, r.stream.try_clone().unwrap());
        announced.push(thread::spawn(move || {
            let mut line = String::new();
            let mut joins = 0;
            // Reader 0 also sees reader 1 join.
            while joins < JOINERS + 1 - i_reader {
                line.clear();
                if lines.read_line(&mut line).unwrap_or(0) == 0 {
                    return Err(format!("closed after {joins} joins"));
                }
                if line == "* disconnected: too slow\n" {
                    return Err(format!("dropped as too slow after {joins} joins"));
                }
                joins += joins_in(&line);
            }
            Ok(())
        }));
    }
    // Connected as fast as the loop goes; they never read.
    let joiners: Vec<TcpStream> = (0..JOINERS).map(|_| connect(addr)).collect();
    for (i, handle) in announced.into_iter().enumerate() {
        handle
            .join()
            .expect("reader thread")
            .unwrap_or_else(|e| panic!("reader {i}: {e}"));
    }
    drop(joiners);
}

/// What one chat member of an [`Audience`] has received.
#[derive(Clone, Debug, Default)]
struct Heard {
    bytes: u64,
    lines: u64,
    /// Lines starting with `* ` (joins, leaves, their summaries).
    announcements: u64,
    /// It got `* disconnected: too slow`.
    too_slow: bool,
    /// The server closed or reset it.
    closed: bool,
    /// It got the line the audience was told to watch for.
    saw_needle: bool,
}

/// What an [`Audience`] heard, per member, and the line it watches for.
type Hearing = (Vec<Heard>, Option<Vec<u8>>);

/// Chat members read as fast as one thread can (mio, edge-triggered),
/// counting what each receives; the test reads the counts while it runs.
struct Audience {
    state: Arc<std::sync::Mutex<Hearing>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Audience {
    /// Starts reading `members` (clones of them: the caller keeps its own).
    fn listen(members: &[TcpStream]) -> Audience {
        use mio::{Events, Interest, Poll, Token};
        use std::io::Read;
        let hearing: Hearing = (vec![Heard::default(); members.len()], None);
        let state = Arc::new(std::sync::Mutex::new(hearing));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut poll = Poll::new().unwrap();
        let mut socks: Vec<mio::net::TcpStream> = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let clone = m.try_clone().unwrap();
                clone.set_nonblocking(true).unwrap();
                let mut s = mio::net::TcpStream::from_std(clone);
                poll.registry()
                    .register(&mut s, Token(i), Interest::READABLE)
                    .unwrap();
                s
            })
            .collect();
        let (shared, stopped) = (Arc::clone(&state), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut events = Events::with_capacity(256);
            let mut tails: Vec<Vec<u8>> = vec![Vec::new(); socks.len()];
            let mut buf = vec![0u8; 1 << 16];
            while !stopped.load(Ordering::Acquire) {
                poll.poll(&mut events, Some(Duration::from_millis(50)))
                    .unwrap();
                let mut guard = shared.lock().unwrap();
                let (heard, needle) = &mut *guard;
                for event in events.iter() {
                    let i = event.token().0;
                    loop {
                        match socks[i].read(&mut buf) {
                            Ok(0) => {
                                heard[i].closed = true;
                                break;
                            }
                            Ok(n) => {
                                heard[i].bytes += n as u64;
                                tails[i].extend_from_slice(&buf[..n]);
                                let whole = tails[i].iter().rposition(|&b| b == b'\n');
                                let Some(end) = whole else { continue };
                                let rest = tails[i].split_off(end + 1);
                                for line in tails[i].split(|&b| b == b'\n') {
                                    if line.is_empty() {
                                        continue;
                                    }
                                    heard[i].lines += 1;
                                    if line.starts_with(b"* ") {
                                        heard[i].announcements += 1;
                                    }
                                    heard[i].too_slow |= line == b"* disconnected: too slow";
                                    heard[i].saw_needle |= needle.as_deref() == Some(line);
                                }
                                tails[i] = rest;
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => {
                                heard[i].closed = true;
                                break;
                            }
                        }
                    }
                }
            }
        });
        Audience {
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn heard(&self) -> Vec<Heard> {
        self.state.lock().unwrap().0.clone()
    }

    /// From now on, notes which members receive `line` (without its `\n`).
    fn watch_for(&self, line: &str) {
        self.state.lock().unwrap().1 = Some(line.as_bytes().to_vec());
    }

    /// Waits (at most `WAIT`) until `done` holds for what was heard.
    fn wait_until(&self, what: &str, done: impl Fn(&[Heard]) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.heard()) {
            assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Audience {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `chat` part of admin `stats json`.
fn chat_stats(server: &Server) -> String {
    let json = support::admin(server, "stats json");
    let at = json.find("\"chat\":").expect("a chat entry in stats");
    json[at..].to_string()
}

#[test]
fn regression_a_connect_close_storm_floods_every_chat_member() {
    // The issue: against 1,500 idle members, a storm of connects and
    // closes (no byte sent) had every join and leave queued to every member,
    // outside flow control: gigabytes written, every member dismissed.
    const MEMBERS: usize = 200;
    const CYCLES: usize = 20_000;
    const STORM: Duration = Duration::from_secs(5);
    let server = Server::start(&["-l", "127.0.0.1:0=chat", "-l", "127.0.0.1:0=admin"]);
    let addr = server.addr("chat");
    let members: Vec<TcpStream> = (0..MEMBERS).map(|_| connect(addr)).collect();
    let audience = Audience::listen(&members);
    let active = |server: &Server| support::json_number(&chat_stats(server), "active");
    let deadline = Instant::now() + WAIT;
    while active(&server) != Some(MEMBERS as u64) {
        assert!(Instant::now() < deadline, "the members never all joined");
        thread::sleep(Duration::from_millis(10));
    }
    let before = audience.heard();

    // The storm: connect and close (every other one with a reset), as fast
    // as one thread goes, for CYCLES or STORM, whichever ends first.
    let start = Instant::now();
    let mut cycles = 0;
    while cycles < CYCLES && start.elapsed() < STORM {
        let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            break;
        };
        if cycles % 2 == 1 {
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
        drop(s);
        cycles += 1;
    }
    assert!(cycles >= 1000, "only {cycles} connect/close cycles ran");
    let deadline = Instant::now() + WAIT;
    while active(&server) != Some(MEMBERS as u64) {
        assert!(
            Instant::now() < deadline,
            "the storm's connections never all closed"
        );
        thread::sleep(Duration::from_millis(10));
    }

    // Members still learn of a join at a human rate, by name. The first
    // newcomer's batch also carries whatever the storm left; the second's
    // is its own.
    let seen = audience.heard()[0].announcements;
    let first = connect(addr);
    audience.wait_until("an announcement after the first newcomer", |h| {
        h[0].announcements > seen
    });
    let second = connect(addr);
    audience.watch_for(&format!("* {} joined", second.local_addr().unwrap()));
    audience.wait_until("every member sees the second newcomer by name", |h| {
        h.iter().all(|m| m.saw_needle)
    });

    let heard = audience.heard();
    for (i, (m, b)) in heard.iter().zip(&before).enumerate() {
        assert!(!m.too_slow && !m.closed, "member {i} was dropped: {m:?}");
        let (lines, bytes) = (m.lines - b.lines, m.bytes - b.bytes);
        assert!(
            lines * 10 < cycles as u64 && bytes < cycles as u64,
            "member {i} got {lines} lines ({bytes} bytes) for {cycles} connect/close cycles"
        );
    }
    let stats = chat_stats(&server);
    assert_eq!(support::json_number(&stats, "limit"), Some(0), "{stats}");
    drop((first, second));
}

/// A chat server with a small soft limit, for [`congestible_room`].
fn small_soft_limit(extra: &[&str]) -> Server {
    let mut args = vec![
        "-l",
        "127.0.0.1:0=chat",
        "-l",
        "127.0.0.1:0=admin",
        "--chat-soft-limit",
        "8K",
        "--chat-hard-limit",
        "1M",
        "--chat-soft-secs",
        "60",
        "--so-sndbuf",
        "4K",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A chat member that never reads, through a small kernel buffer: it goes
/// over a small soft limit after a few dozen kilobytes.
fn congester(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    TcpStream::from(socket)
}

/// A chat server with a small soft limit, and in it a reader, a
/// [`congester`] and a sender; returned once the reader has heard the
/// other two join.
fn congestible_room(extra: &[&str]) -> (Server, Member, TcpStream, Member) {
    let server = small_soft_limit(extra);
    let addr = server.addr("chat");
    let mut reader = Member::join(addr);
    let congester = congester(addr);
    let sender = Member::join(addr);
    let (c, s) = (congester.local_addr().unwrap(), sender.addr());
    let mut joined = 0;
    while joined < 2 {
        let line = reader.next_line();
        if line == format!("* {c} joined\n") || line == format!("* {s} joined\n") {
            joined += 1;
        }
    }
    (server, reader, congester, sender)
}

/// 500 lines of about 100 bytes (a congestible room congests partway
/// through them), then 3 short ones.
fn paste_lines() -> Vec<String> {
    let mut lines: Vec<String> = (0..500)
        .map(|i| format!("bulk {i} {}", "b".repeat(90)))
        .collect();
    lines.extend((1..=3).map(|i| format!("last {i}")));
    lines
}

/// Waits until the server has read every one of `lines` from `sender` (not
/// some still in the kernel's receive queue, which a server ending the
/// conversation rightly never reads), some of them still waiting for room
/// in its receive buffer, and, if given, the sender is in `state`.
fn wait_until_read(server: &Server, sender: SocketAddr, lines: &[String], state: Option<&str>) {
    let total: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    support::wait_for_row(server, sender, "chat", |row| {
        row.is_some_and(|r| {
            support::json_number(r, "bytes_in") == Some(total)
                && support::json_number(r, "recv_buf_used").unwrap_or(0) > 0
                && state.is_none_or(|s| support::json_text(r, "state") == s)
        })
    });
}

/// Reads `reader`'s lines from `sender` on a thread, until `count` came or
/// the stream ends; returns their text.
fn lines_from(
    reader: &Member,
    sender: SocketAddr,
    count: usize,
) -> thread::JoinHandle<Vec<String>> {
    let stream = reader.stream.try_clone().unwrap();
    let prefix = format!("[{sender}] ");
    thread::spawn(move || {
        let mut lines_in = BufReader::new(stream);
        let mut got = Vec::new();
        let mut line = String::new();
        while got.len() < count {
            line.clear();
            match lines_in.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if let Some(text) = line.strip_prefix(&prefix) {
                got.push(text.trim_end().to_string());
            }
        }
        got
    })
}

fn sigterm(server: &Server) {
    std::process::Command::new("kill")
        .args(["-s", "TERM", &server.pid().to_string()])
        .status()
        .expect("run kill");
}

#[test]
fn regression_lines_read_before_a_shutdown_are_dropped() {
    // A sender's complete lines that wait for room (a member over the soft
    // limit congests the room) were dropped when the server ended the
    // conversation: here by SIGTERM.
    let (server, reader, congester, mut sender) = congestible_room(&[]);
    let lines = paste_lines();
    let got = lines_from(&reader, sender.addr(), lines.len());
    for line in &lines {
        sender.say(line);
    }
    // Lines read and waiting for room: now the server ends everything.
    wait_until_read(&server, sender.addr(), &lines, None);
    sigterm(&server);
    let got = got.join().expect("reader thread");
    assert_eq!(
        got.len(),
        lines.len(),
        "the reader got {} of {} lines",
        got.len(),
        lines.len()
    );
    assert_eq!(got, lines);
    drop(congester);
}

#[test]
fn regression_a_sender_ended_before_a_shutdown_loses_its_waiting_lines() {
    // The idle timeout ends the sender while its lines wait for room; then
    // a shutdown begins, and the room forgets who waits for it: the
    // sender was never driven again.
    // An idle timeout shorter than the congestion's grace: quiet members
    // go within it, so no one waits for the join lines here (a member is
    // one from its accept on, and the server accepts in connect order).
    let server = small_soft_limit(&["--idle-timeout", "0.2"]);
    let addr = server.addr("chat");
    let reader = Member::join(addr);
    // The reader types a line it never ends (a byte each 50 ms, bounded),
    // so the idle timeout spares it.
    let typing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let typist = {
        let typing = Arc::clone(&typing);
        let mut stream = reader.stream.try_clone().unwrap();
        thread::spawn(move || {
            for _ in 0..400 {
                if !typing.load(Ordering::Acquire) || stream.write_all(b"x").is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let congester = congester(addr);
    let mut sender = Member::join(addr);
    let lines = paste_lines();
    let got = lines_from(&reader, sender.addr(), lines.len());
    for line in &lines {
        sender.say(line);
    }
    // Lines read and waiting for room, and the sender ended: now the
    // server ends everything.
    wait_until_read(&server, sender.addr(), &lines, Some("finishing"));
    sigterm(&server);
    let got = got.join().expect("reader thread");
    typing.store(false, Ordering::Release);
    typist.join().expect("typist thread");
    assert_eq!(
        got.len(),
        lines.len(),
        "the reader got {} of {} lines",
        got.len(),
        lines.len()
    );
    assert_eq!(got, lines);
    let _ = reader.stream.shutdown(Shutdown::Both);
    drop(congester);
}

#[test]
fn regression_chat_limits_are_not_checked_against_each_other() {
    // A hard limit less than the soft limit plus one turn's broadcast drops
    // members that read as fast as they can: refused at start.
    let out = support::run_binary(
        &[
            "serve",
            "-l",
            "127.0.0.1:0=chat",
            "--chat-soft-limit",
            "256K",
            "--chat-hard-limit",
            "300K",
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--chat-hard-limit"), "{stderr}");
}

#[test]
fn regression_chat_limits_refused_a_server_without_chat() {
    // The chat limits were checked whatever the listeners: an echo server
    // with a 1M --recv-buf (a demonstration does this) refused to start.
    let server = Server::start(&["-l", "127.0.0.1:0=echo", "--recv-buf", "1M"]);
    assert_eq!(support::exchange(server.addr("echo"), b"hello"), b"hello");
}
