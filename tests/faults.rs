//! Faults injected into a real server, each while a well-behaved client is
//! served beside it, byte-exact: a file read that fails with `EIO`
//! mid-download, the process out of descriptors (`EMFILE`) with transfers in
//! progress, and clients whose receive window stays shut. Loopback only,
//! every wait bounded, every process killed at the end.
//!
//! The log sink's faults are in `tests/logging.rs`, which already serves
//! well-behaved clients exactly meanwhile: `a_closed_log_pipe_does_not_kill_the_server`
//! (its stderr reader gone) and `a_stalled_log_pipe_does_not_block_the_server`
//! (a pipe nobody reads), each checking every reply of every client.

mod support;

use std::fs;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use support::{
    Pattern, Server, TempDir, WAIT, admin, client_json_of, connect, json_number, json_text,
    read_exact, read_pattern, read_to_end, read_until_closed, wait_for_row, write_pattern,
};

/// An `LD_PRELOAD` shim over `read(2)`: a read of a regular file whose path
/// contains `$EIO_SHIM_MARKER` fails with `EIO` once the file offset reaches
/// `$EIO_SHIM_AFTER` bytes (a read across that offset is cut short at it),
/// as a disk with a bad sector there would. Every other read goes to libc.
/// The server's `File::read` is libc's `read`, so the shim sits exactly
/// where a failing device would show. (Device-mapper's `error` target would
/// be the real thing, but a container has no `/dev/mapper`; FUSE needs a
/// daemon. The shim needs only `cc`.)
const EIO_SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

ssize_t read(int fd, void *buf, size_t count) {
    static ssize_t (*real_read)(int, void *, size_t);
    if (!real_read) real_read = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    const char *marker = getenv("EIO_SHIM_MARKER");
    const char *after = getenv("EIO_SHIM_AFTER");
    struct stat st;
    if (marker && after && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        char link[64], path[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, path, sizeof path - 1);
        if (n > 0) {
            path[n] = 0;
            if (strstr(path, marker)) {
                off_t limit = (off_t)strtoll(after, NULL, 10);
                off_t at = lseek(fd, 0, SEEK_CUR);
                if (at >= limit) {
                    errno = EIO;
                    return -1;
                }
                if ((off_t)count > limit - at) count = (size_t)(limit - at);
            }
        }
    }
    return real_read(fd, buf, count);
}
"#;

/// Compiles [`EIO_SHIM`] into `dir`; returns the shared object's path.
fn build_eio_shim(dir: &TempDir) -> String {
    let source = dir.path().join("eio_shim.c");
    let object = dir.path().join("eio_shim.so");
    fs::write(&source, EIO_SHIM).unwrap();
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&object)
        .arg(&source)
        .arg("-ldl")
        .output()
        .expect("run cc (the EIO shim needs a C compiler)");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    object.to_str().expect("temp paths are UTF-8").to_string()
}

fn kill(signal: &str, pid: u32) {
    assert!(
        Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .expect("run kill")
            .success()
    );
}

/// Starts `GET name` and checks the header; returns the stream.
fn start_download(addr: SocketAddr, name: &str, size: usize) -> TcpStream {
    let mut s = connect(addr);
    s.write_all(format!("GET {name}\n").as_bytes()).unwrap();
    let header = format!("OK {size}\n");
    assert_eq!(read_exact(&mut s, header.len()), header.as_bytes());
    s
}

/// Reads the rest of a download whose first `already` body bytes were
/// read, to a clean close, checking every byte and the total.
fn finish_download(s: &mut TcpStream, already: usize, size: usize, what: &str) {
    let (rest, ended_by) = read_until_closed(s);
    assert_eq!(ended_by, None, "{what}: a clean close");
    assert_eq!(already + rest.len(), size, "{what}: bytes received");
    assert!(
        Pattern::new().matches(already as u64, &rest),
        "{what}: bytes differ"
    );
}

#[test]
fn a_file_read_failing_with_eio_mid_download_resets_it_and_another_download_completes() {
    const SIZE: usize = 16 << 20;
    const FAILS_AT: usize = 5 << 20;
    let tools = TempDir::new("faults-eio-shim");
    let shim = build_eio_shim(&tools);
    let root = TempDir::new("faults-eio");
    let body = Pattern::bytes(SIZE);
    fs::write(root.path().join("bad-sector.bin"), &body).unwrap();
    fs::write(root.path().join("good.bin"), &body).unwrap();
    let preload = format!("LD_PRELOAD={shim}");
    let after = format!("EIO_SHIM_AFTER={FAILS_AT}");
    let mut server = Server::start_under(
        &["env", &preload, "EIO_SHIM_MARKER=bad-sector", &after],
        &["-l", "127.0.0.1:0=files", "--root", root.arg()],
    );
    let files = server.addr("files");

    // The good download is under way when the other one fails.
    let mut good = start_download(files, "good.bin", SIZE);
    let first = read_exact(&mut good, 1 << 20);
    assert!(Pattern::new().matches(0, &first));

    let mut bad = start_download(files, "bad-sector.bin", SIZE);
    let (got, ended_by) = read_until_closed(&mut bad);
    assert!(
        server.wait_for_log("reading \"bad-sector.bin\" failed: Input/output error"),
        "the shim's EIO reached the server: {:?}",
        server.log()
    );
    assert_eq!(
        ended_by,
        Some(ErrorKind::ConnectionReset),
        "after {} of {SIZE} bytes the failed download ended with a clean close",
        got.len()
    );
    assert!(
        got.len() <= FAILS_AT,
        "{} bytes: more than was read",
        got.len()
    );
    assert!(Pattern::new().matches(0, &got), "what did arrive is intact");

    finish_download(&mut good, first.len(), SIZE, "the good download");
    // The same file name again fails the same way: the fault is in the
    // file, not in a connection the server broke.
    let mut again = start_download(files, "bad-sector.bin", SIZE);
    assert_eq!(
        read_until_closed(&mut again).1,
        Some(ErrorKind::ConnectionReset)
    );
    server.assert_alive();
}

#[test]
fn out_of_descriptors_a_download_and_an_echo_in_progress_lose_nothing() {
    // tests/lifecycle.rs `out_of_file_descriptors_the_server_keeps_serving_and_recovers`
    // checks a short echo, the back-off and the recovery; here transfers
    // larger than every buffer run through the whole saturation.
    const SIZE: usize = 32 << 20;
    const ECHOED: u64 = 8 << 20;
    let root = TempDir::new("faults-emfile");
    fs::write(root.path().join("big.bin"), Pattern::bytes(SIZE)).unwrap();
    fs::write(root.path().join("small.txt"), b"small file\n").unwrap();
    let mut server = Server::start_under(
        &["prlimit", "--nofile=64:64", "--"],
        &[
            "-l",
            "127.0.0.1:0=files",
            "-l",
            "127.0.0.1:0=echo",
            "--root",
            root.arg(),
            // No cap: the process itself runs out of descriptors.
            "--max-conns",
            "0",
        ],
    );
    let (files, echo) = (server.addr("files"), server.addr("echo"));
    let mut download = start_download(files, "big.bin", SIZE);
    let first = read_exact(&mut download, 1 << 20);
    let mut echoer = connect(echo);
    echoer.write_all(b"x").unwrap();
    assert_eq!(read_exact(&mut echoer, 1), b"x");
    let mut asker = connect(files);

    let crowd: Vec<TcpStream> = (0..200).map(|_| connect(echo)).collect();
    assert!(
        server.wait_for_log("out of descriptors"),
        "log: {:?}",
        server.log()
    );

    // Out of descriptors: the echo of 8 MB comes back whole, in order.
    let mut reader = echoer.try_clone().unwrap();
    let check = thread::spawn(move || read_pattern(&mut reader, &Pattern::new()));
    write_pattern(&mut echoer, &Pattern::new(), ECHOED);
    echoer.shutdown(Shutdown::Write).unwrap();
    let (got, intact) = check.join().unwrap();
    assert!(intact && got == ECHOED, "echo returned {got} intact bytes");
    // A request that needs a descriptor of its own is refused in words,
    // never answered with a truncated file or silence.
    asker.write_all(b"GET small.txt\n").unwrap();
    let answer = read_to_end(&mut asker);
    assert!(
        answer == b"OK 11\nsmall file\n" || answer == b"ERR cannot read\n",
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // The download begun before goes on to its last byte.
    finish_download(&mut download, first.len(), SIZE, "the download");
    server.assert_alive();
    drop(crowd);
}

/// A client socket with a small receive buffer, so that its window shuts
/// after a few kilobytes.
fn connect_small_window(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&addr.into(), WAIT).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

#[test]
fn a_client_whose_window_stays_shut_is_kept_while_serving_and_reset_at_the_shutdown_deadline() {
    const SIZE: usize = 32 << 20;
    const STUCK: usize = 16;
    let linger = tcp_reactor::reactor::LINGER;
    let root = TempDir::new("faults-window");
    fs::write(root.path().join("big.bin"), Pattern::bytes(SIZE)).unwrap();
    let mut server = Server::start(&[
        "-l",
        "127.0.0.1:0=files",
        "-l",
        "127.0.0.1:0=echo",
        "-l",
        "127.0.0.1:0=admin",
        "--root",
        root.arg(),
        "--shutdown-timeout",
        "60",
    ]);
    let (files, echo) = (server.addr("files"), server.addr("echo"));
    let baseline_kib = server.status_field("VmRSS");

    // Clients that ask for 32 MB and never read a byte.
    let stuck: Vec<TcpStream> = (0..STUCK)
        .map(|_| {
            let mut s = connect_small_window(files);
            s.write_all(b"GET big.bin\n").unwrap();
            s
        })
        .collect();
    // And one that connects and says nothing.
    let mut idle = connect(echo);
    let stuck_peers: Vec<SocketAddr> = stuck.iter().map(|s| s.local_addr().unwrap()).collect();
    // Each is stuck once the server's kernel holds bytes it cannot send:
    // the client's window is shut.
    for &peer in &stuck_peers {
        wait_for_row(&server, peer, "files", |row| {
            row.is_some_and(|r| {
                json_text(r, "state") == "paused" && json_number(r, "kernel_send_unsent") > Some(0)
            })
        });
    }
    let stalled = Instant::now();

    // Others are served meanwhile, exactly.
    let mut download = start_download(files, "big.bin", SIZE);
    finish_download(&mut download, 0, SIZE, "a reader's download");
    let mut echoer = connect(echo);
    let mut reader = echoer.try_clone().unwrap();
    let check = thread::spawn(move || read_pattern(&mut reader, &Pattern::new()));
    write_pattern(&mut echoer, &Pattern::new(), 4 << 20);
    echoer.shutdown(Shutdown::Write).unwrap();
    assert_eq!(check.join().unwrap(), (4 << 20, true), "echo of 4 MB");

    // Memory follows the buffers, not the 32 MB each stuck one asked for:
    // a 64 KiB send buffer each (the receive buffer holds no storage once
    // the request is read), plus pool and allocator slack.
    let growth = server.status_field("VmRSS").saturating_sub(baseline_kib);
    eprintln!("VmRSS {baseline_kib} kB at start, {growth} kB more with {STUCK} stuck");
    assert!(
        growth < (STUCK as u64) * 64 + 4 * 1024,
        "RSS grew by {growth} KiB for {STUCK} stuck downloads"
    );

    // While the server runs there is no deadline on an open conversation:
    // past LINGER the stuck ones and the idle one are all still there.
    let past =
        (stalled + linger + Duration::from_secs(1)).saturating_duration_since(Instant::now());
    thread::sleep(past);
    let clients = admin(&server, "clients json");
    for &peer in &stuck_peers {
        let row = client_json_of(&clients, peer, "files")
            .unwrap_or_else(|| panic!("stuck download {peer} ended while serving"));
        assert_eq!(json_text(&row, "state"), "paused", "{row}");
    }
    let idle_peer = idle.local_addr().unwrap();
    assert!(
        client_json_of(&clients, idle_peer, "echo").is_some(),
        "the idle client was ended: {clients}"
    );

    // At shutdown the idle one is closed cleanly at once, and the stuck
    // ones, which make no progress, are reset at the phase deadline.
    let signalled = Instant::now();
    kill("TERM", server.pid());
    assert_eq!(read_until_closed(&mut idle), (Vec::new(), None));
    let status = server.signal_and_wait("0");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "log: {:?}", server.log());
    assert!(
        took >= linger - Duration::from_millis(500) && took < linger * 3,
        "exited {took:?} after the signal; LINGER is {linger:?}"
    );
    assert!(
        server.wait_for_log("while finishing"),
        "the reset is logged: {:?}",
        server.log()
    );
    for mut s in stuck {
        let (got, ended_by) = read_until_closed(&mut s);
        assert_eq!(
            ended_by,
            Some(ErrorKind::ConnectionReset),
            "after {} bytes",
            got.len()
        );
        assert!(got.len() < SIZE);
        // Header, then the file's first bytes, intact.
        let header = format!("OK {SIZE}\n");
        assert!(got.starts_with(header.as_bytes()));
        assert!(Pattern::new().matches(0, &got[header.len()..]));
    }
}
