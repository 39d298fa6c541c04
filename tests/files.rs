//! Integration tests of the files service against a real server on port 0.

mod support;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use support::{
    Pattern, Server, TempDir, connect, exchange, read_exact, read_to_end, read_until_closed,
    run_binary, run_binary_in,
};

fn files_server(root: &TempDir, extra: &[&str]) -> Server {
    let mut args = vec!["-l", "127.0.0.1:0=files", "--root", root.arg()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn get_answers_ok_size_then_the_bytes_like_nc_would_see() {
    let root = TempDir::new("files-get");
    fs::write(root.path().join("notes.txt"), "hello notes\n").unwrap();
    let server = files_server(&root, &[]);
    assert_eq!(
        exchange(server.addr("files"), b"GET notes.txt\n"),
        b"OK 12\nhello notes\n"
    );
    // The same request without a half-close: the server closes by itself.
    let mut stream = connect(server.addr("files"));
    stream.write_all(b"GET notes.txt\r\n").unwrap();
    assert_eq!(read_to_end(&mut stream), b"OK 12\nhello notes\n");
}

#[test]
fn a_notes_style_client_gets_an_identical_copy_of_a_large_file() {
    let root = TempDir::new("files-bare");
    let body = Pattern::bytes(8_000_000);
    fs::write(root.path().join("big.bin"), &body).unwrap();
    let server = files_server(&root, &[]);
    // Send the bare name, no newline, no half-close; read until the server
    // closes, as the notes' download client does.
    let mut stream = connect(server.addr("files"));
    stream.write_all(b"big.bin").unwrap();
    let got = read_to_end(&mut stream);
    assert_eq!(got.len(), body.len());
    assert!(got == body, "downloaded bytes differ");
}

#[test]
fn list_names_the_regular_files_under_the_root() {
    let root = TempDir::new("files-list");
    fs::create_dir(root.path().join("sub")).unwrap();
    fs::write(root.path().join("a.txt"), "a").unwrap();
    fs::write(root.path().join("sub/b.txt"), "b").unwrap();
    let server = files_server(&root, &[]);
    assert_eq!(
        exchange(server.addr("files"), b"LIST\n"),
        b"a.txt\nsub/b.txt\n"
    );
}

#[test]
fn nothing_outside_the_root_is_ever_served() {
    let outer = TempDir::new("files-confine");
    let root = outer.path().join("root");
    fs::create_dir_all(root.join("dir")).unwrap();
    fs::write(outer.path().join("secret.txt"), "secret").unwrap();
    fs::write(root.join("ok.txt"), "fine").unwrap();
    std::os::unix::fs::symlink(outer.path().join("secret.txt"), root.join("link-out")).unwrap();
    std::os::unix::fs::symlink(outer.path(), root.join("dir-out")).unwrap();
    std::os::unix::fs::symlink("ok.txt", root.join("link-in")).unwrap();
    let fifo = root.join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let secret_abs = outer.path().join("secret.txt");
    let long = "a/".repeat(2100) + "x";
    let root_arg = root.to_str().unwrap().to_string();
    let server = Server::start(&["-l", "127.0.0.1:0=files", "--root", &root_arg]);
    let addr = server.addr("files");

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            secret_abs.to_str().unwrap().as_bytes().to_vec(),
            "outside the root",
        ),
        (b"../secret.txt".to_vec(), "outside the root"),
        (b"dir/../../secret.txt".to_vec(), "outside the root"),
        (b"link-out".to_vec(), "outside the root"),
        (b"dir-out/secret.txt".to_vec(), "outside the root"),
        (b"ok.txt\0.png".to_vec(), "bad name"),
        (long.into_bytes(), "name too long"),
        (b"dir".to_vec(), "not a regular file"),
        (b"fifo".to_vec(), "not a regular file"),
        (b"/dev/null".to_vec(), "outside the root"),
        (b"missing.txt".to_vec(), "not found"),
    ];
    for (name, reason) in &cases {
        let mut get = b"GET ".to_vec();
        get.extend_from_slice(name);
        get.push(b'\n');
        let answer = exchange(addr, &get);
        assert_eq!(
            String::from_utf8_lossy(&answer),
            format!("ERR {reason}\n"),
            "GET {}",
            String::from_utf8_lossy(name)
        );
        let mut bare = name.clone();
        bare.push(b'\n');
        assert_eq!(
            exchange(addr, &bare),
            b"",
            "bare {}",
            String::from_utf8_lossy(name)
        );
    }
    // A symlink that stays inside the root is fine.
    assert_eq!(exchange(addr, b"GET link-in\n"), b"OK 4\nfine");
    assert!(server.wait_for_log("refused: outside the root"));
}

#[test]
fn a_large_file_to_a_slow_reader_keeps_server_memory_flat() {
    const SIZE: u64 = 300_000_000;
    let root = TempDir::new("files-slow");
    // Sparse: no disk used, reads as zeros.
    fs::File::create(root.path().join("huge.bin"))
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    let mut server = files_server(&root, &["--send-buf", "256K"]);
    let baseline = server.status_field("VmRSS");
    let mut stream = connect(server.addr("files"));
    stream.write_all(b"GET huge.bin\n").unwrap();
    let header = format!("OK {SIZE}\n");
    assert_eq!(read_exact(&mut stream, header.len()), header.as_bytes());
    // Read slowly at first: small reads with pauses, so the kernel queues
    // and the send buffer stay full and the server must wait on us.
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    for _ in 0..50 {
        let n = stream.read(&mut buf[..4096]).unwrap();
        assert!(n > 0 && buf[..n].iter().all(|&b| b == 0));
        got += n as u64;
        thread::sleep(Duration::from_millis(10));
    }
    let while_slow = server.status_field("VmHWM");
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(
            buf[..n].iter().all(|&b| b == 0),
            "non-zero byte near offset {got}"
        );
        got += n as u64;
    }
    assert_eq!(got, SIZE);
    let peak = server.status_field("VmHWM");
    assert!(
        peak.saturating_sub(baseline) < 8 * 1024,
        "server RSS grew from {baseline} KiB to {peak} KiB ({while_slow} KiB while slow)"
    );
    server.assert_alive();
}

#[test]
fn a_hundred_simultaneous_downloads_each_get_their_exact_bytes() {
    let root = TempDir::new("files-many");
    let bodies: Vec<Vec<u8>> = (0..4).map(|i| Pattern::bytes(700_000 + i * 4099)).collect();
    for (i, body) in bodies.iter().enumerate() {
        fs::write(root.path().join(format!("f{i}.bin")), body).unwrap();
    }
    let server = files_server(&root, &["--send-buf", "16K"]);
    let addr = server.addr("files");
    // All 100 requests go out before any answer is read.
    let mut streams: Vec<_> = (0..100)
        .map(|i| {
            let mut s = connect(addr);
            s.write_all(format!("GET f{}.bin\n", i % 4).as_bytes())
                .unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            s
        })
        .collect();
    thread::scope(|scope| {
        for (i, stream) in streams.iter_mut().enumerate() {
            let body = &bodies[i % 4];
            scope.spawn(move || {
                let got = read_to_end(stream);
                let header = format!("OK {}\n", body.len());
                assert!(
                    got.starts_with(header.as_bytes()),
                    "download {i}: bad header"
                );
                assert!(
                    got[header.len()..] == body[..],
                    "download {i}: bytes differ"
                );
            });
        }
    });
}

/// Starts a bare-name download of a 64 MiB file with `extra` server flags,
/// truncates the file to 2 MiB after the first MiB arrived, and checks the
/// transfer ends with a reset, short of the whole file. The notes' client
/// has no size header: a clean close after a short transfer would look like
/// the whole file to it.
fn a_truncated_bare_download_ends_with_a_reset(tag: &str, extra: &[&str]) {
    let root = TempDir::new(tag);
    let path = root.path().join("big.bin");
    fs::File::create(&path).unwrap().set_len(64 << 20).unwrap();
    let mut server = files_server(&root, extra);
    let mut stream = connect(server.addr("files"));
    stream.write_all(b"big.bin").unwrap();
    let _ = read_exact(&mut stream, 1 << 20);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let (rest, ended_by) = read_until_closed(&mut stream);
    assert!(
        ((1 << 20) + rest.len()) < 64 << 20,
        "cannot get the whole file"
    );
    assert_eq!(
        ended_by,
        Some(ErrorKind::ConnectionReset),
        "after {} bytes the download ended with a clean close",
        (1 << 20) + rest.len()
    );
    server.assert_alive();
}

#[test]
fn a_bare_name_download_of_a_file_truncated_mid_transfer_ends_with_a_reset() {
    a_truncated_bare_download_ends_with_a_reset("files-bare-shrink", &[]);
}

#[test]
fn a_file_that_shrinks_while_sent_ends_only_that_connection() {
    let root = TempDir::new("files-shrink");
    let path = root.path().join("shrinking.bin");
    fs::write(&path, Pattern::bytes(20_000_000)).unwrap();
    let mut server = files_server(&root, &[]);
    let mut stream = connect(server.addr("files"));
    stream.write_all(b"GET shrinking.bin\n").unwrap();
    assert_eq!(read_exact(&mut stream, 12), b"OK 20000000\n");
    let _ = read_exact(&mut stream, 100_000);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1_000_000)
        .unwrap();
    let (rest, ended_by) = read_until_closed(&mut stream);
    assert!(
        (rest.len() as u64) < 20_000_000 - 100_000,
        "the connection should end short of the announced size"
    );
    assert_eq!(
        ended_by,
        Some(ErrorKind::ConnectionReset),
        "a short transfer is a reset"
    );
    assert!(server.wait_for_log("shrank while being sent"));
    // A file removed while being sent stays readable (Linux keeps it until
    // closed); the download completes and the server carries on.
    fs::write(&path, Pattern::bytes(3_000_000)).unwrap();
    let mut stream = connect(server.addr("files"));
    stream.write_all(b"GET shrinking.bin\n").unwrap();
    let _ = read_exact(&mut stream, 11);
    fs::remove_file(&path).unwrap();
    assert_eq!(read_to_end(&mut stream).len(), 3_000_000);
    server.assert_alive();
    assert_eq!(
        exchange(server.addr("files"), b"GET shrinking.bin\n"),
        b"ERR not found\n"
    );
}

#[test]
fn the_get_client_downloads_from_the_real_service() {
    let root = TempDir::new("get-real");
    let work = TempDir::new("get-real-cwd");
    let body = Pattern::bytes(3_000_000);
    fs::create_dir(root.path().join("sub")).unwrap();
    fs::write(root.path().join("sub/data.bin"), &body).unwrap();
    let server = files_server(&root, &[]);
    let addr = server.addr("files").to_string();

    let out = run_binary_in(&["get", &addr, "sub/data.bin", "-q"], b"", work.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs::read(work.path().join("data.bin")).unwrap() == body);

    // No overwrite without --force, and the file is left as it was.
    fs::write(work.path().join("data.bin"), b"mine").unwrap();
    let out = run_binary_in(&["get", &addr, "sub/data.bin"], b"", work.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    assert_eq!(fs::read(work.path().join("data.bin")).unwrap(), b"mine");
    let out = run_binary_in(
        &["get", &addr, "sub/data.bin", "--force", "-q"],
        b"",
        work.path(),
    );
    assert!(out.status.success());
    assert!(fs::read(work.path().join("data.bin")).unwrap() == body);

    // To standard output.
    let out = run_binary_in(&["get", &addr, "sub/data.bin", "-o", "-"], b"", work.path());
    assert!(out.status.success());
    assert!(out.stdout == body);

    // A refusal from the server: one line naming the reason, nothing saved.
    let out = run_binary_in(&["get", &addr, "../etc/passwd"], b"", work.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("outside the root"), "{stderr}");
    assert!(!work.path().join("passwd").exists());
    let names: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("data.bin")],
        "no temporary files left"
    );
}

#[test]
fn the_interactive_client_works_in_a_pipe_and_reports_refusal() {
    let server = Server::start(&["-l", "127.0.0.1:0=ack", "--reply", "ok"]);
    let addr = server.addr("ack").to_string();
    let out = run_binary(&["client", &addr], b"a\nb\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"ok\nok\n");

    let gbk = Server::start(&["-l", "127.0.0.1:0=ack", "--encoding", "gbk"]);
    let addr = gbk.addr("ack").to_string();
    let out = run_binary(
        &["client", &addr, "--encoding", "gbk"],
        "你好\nexit\n".as_bytes(),
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "收到请求\n");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let out = run_binary(&["client", &closed], b"a\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
}

#[test]
fn regression_a_fast_download_does_not_flap_pause_and_resume() {
    // The files service fills the send buffer on every refill; that is not
    // backpressure, and once logged a pause/resume pair per 64 KiB.
    let root = TempDir::new("files-flap");
    fs::write(root.path().join("f.bin"), Pattern::bytes(4_000_000)).unwrap();
    let server = files_server(&root, &["-v"]);
    let got = exchange(server.addr("files"), b"GET f.bin\n");
    assert_eq!(got.len(), "OK 4000000\n".len() + 4_000_000);
    assert!(server.wait_for_log("closed (peer)"));
    let pauses = server
        .log()
        .iter()
        .filter(|l| l.contains("pause reading"))
        .count();
    assert_eq!(pauses, 0, "{:?}", server.log());
}

/// Files in the big tree: enough that the old whole-tree LIST held about a
/// mebibyte per connection and stalled the loop for tens of milliseconds.
const BIG_TREE_FILES: usize = 50_000;

/// A root of [`BIG_TREE_FILES`] empty files in 50 directories, with names
/// long enough that the whole answer (about 2 MB) is past the old 1 MiB
/// cut; and the answer a whole-tree sort gives for it.
fn big_tree(tag: &str) -> (TempDir, Vec<u8>) {
    let root = TempDir::new(tag);
    let mut names = Vec::with_capacity(BIG_TREE_FILES);
    for d in 0..50 {
        let dir = format!("directory-{d:02}");
        fs::create_dir(root.path().join(&dir)).unwrap();
        for i in 0..BIG_TREE_FILES / 50 {
            // Created in an order unlike the sorted one.
            let name = format!("{dir}/file-{:05}-of-the-tree", (i * 7919) % 1000);
            fs::File::create(root.path().join(&name)).unwrap();
            names.push(name);
        }
    }
    names.sort();
    let mut answer = Vec::new();
    for name in names {
        answer.extend_from_slice(name.as_bytes());
        answer.push(b'\n');
    }
    (root, answer)
}

#[test]
fn list_of_50000_files_sends_every_name_sorted() {
    let (root, expected) = big_tree("files-list-big");
    let server = files_server(&root, &[]);
    let got = exchange(server.addr("files"), b"LIST\n");
    let lines = got.split(|&b| b == b'\n').count() - 1;
    assert_eq!(lines, BIG_TREE_FILES, "names sent");
    assert!(got == expected, "the names differ from a whole-tree sort");
}

/// A client with a small kernel receive buffer, set before connecting so
/// the window it offers stays small: what it does not read then stays in
/// the server rather than in the kernel (loopback's autotuning would
/// otherwise take megabytes).
fn connect_small(addr: std::net::SocketAddr) -> std::net::TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&addr.into(), support::WAIT).unwrap();
    let stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(support::WAIT)).unwrap();
    stream.set_write_timeout(Some(support::WAIT)).unwrap();
    stream
}

#[test]
fn list_clients_that_never_read_hold_little_server_memory_and_echo_is_served() {
    const CLIENTS: usize = 20;
    let (root, expected) = big_tree("files-list-idle");
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=files",
        "-l",
        "127.0.0.1:0=echo",
        "-l",
        "127.0.0.1:0=admin",
        "--root",
        root.arg(),
        // Small kernel queues, so what a client does not read stays in the
        // server, where RSS shows it, not in the kernel.
        "--so-sndbuf",
        "16K",
    ]);
    let echo = server.addr("echo");
    let baseline = server.status_field("VmRSS");
    let mut listers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut s = connect_small(server.addr("files"));
            s.write_all(b"LIST\n").unwrap();
            s
        })
        .collect();
    // Served while the lists are being walked.
    assert_eq!(exchange(echo, b"meanwhile"), b"meanwhile");
    // Every lister's answer has filled its send buffer (the kernel's queues
    // too), so the server waits on the client: what it holds now is what a
    // client that never reads costs.
    for lister in &listers {
        let peer = lister.local_addr().unwrap();
        support::wait_for_row(&server, peer, "files", |row| {
            row.is_some_and(|r| support::json_text(r, "state") == "paused")
        });
    }
    let held = server.status_field("VmRSS");
    assert_eq!(exchange(echo, b"still here"), b"still here");
    // The old LIST held its whole answer, 1 MiB per connection: RSS grew
    // by about 25 MB here. Now each holds its send buffer (64 KiB) and one
    // directory's names: about 3 MB in all.
    assert!(
        held.saturating_sub(baseline) < 8 * 1024,
        "server RSS grew from {baseline} KiB to {held} KiB with {CLIENTS} idle LIST clients"
    );
    for (i, lister) in listers.iter_mut().enumerate() {
        let got = read_to_end(lister);
        assert!(got == expected, "lister {i}: the names differ");
    }
}

#[test]
fn sendfile_downloads_arrive_byte_exact_and_bypass_the_send_buffer() {
    let root = TempDir::new("files-sendfile");
    let body = Pattern::bytes(20_000_000);
    fs::write(root.path().join("big.bin"), &body).unwrap();
    let server = files_server(&root, &["--sendfile", "-l", "127.0.0.1:0=admin"]);
    let files = server.addr("files");
    let mut expected = b"OK 20000000\n".to_vec();
    expected.extend_from_slice(&body);
    assert!(exchange(files, b"GET big.bin\n") == expected, "GET differs");
    assert!(exchange(files, b"big.bin") == body, "bare download differs");
    // A client that reads nothing: the bytes wait in the kernel, none in
    // the server's send buffer.
    let mut stuck = connect(files);
    stuck.write_all(b"GET big.bin\n").unwrap();
    let row = support::wait_for_row(&server, stuck.local_addr().unwrap(), "files", |row| {
        row.is_some_and(|r| support::json_number(r, "kernel_send_queue") > Some(100_000))
    })
    .unwrap();
    assert_eq!(
        support::json_number(&row, "send_buf_used"),
        Some(0),
        "{row}"
    );
}

#[test]
fn a_sendfile_download_of_a_file_truncated_mid_transfer_ends_with_a_reset() {
    a_truncated_bare_download_ends_with_a_reset("files-sendfile-shrink", &["--sendfile"]);
}

/// The lowest descriptor number free in process `pid`: with its
/// RLIMIT_NOFILE set to it, the process can open nothing more (the kernel
/// hands out the lowest free number, and refuses one at or past the limit).
fn lowest_free_fd(pid: u32) -> u32 {
    let open: std::collections::HashSet<u32> = fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the server's descriptors")
        .map(|e| {
            e.expect("a descriptor entry")
                .file_name()
                .to_str()
                .and_then(|n| n.parse().ok())
                .expect("descriptor entries are numbers")
        })
        .collect();
    (0..)
        .find(|n| !open.contains(n))
        .expect("some number is free")
}

#[test]
fn regression_a_list_out_of_descriptors_ends_with_the_cut_line_and_why() {
    // The old walk skipped a directory it could not open for lack of
    // descriptors as if it were unreadable, and ended cleanly: a short
    // answer that looked whole.
    const NAMES: usize = 2_000;
    let root = TempDir::new("files-list-emfile");
    let mut expected = Vec::new();
    for i in 0..NAMES {
        // Long names: the listing (about 420 KB) is far more than the
        // buffers between the server and a client that does not read can
        // take, so the walk is held among these names until it reads on.
        let name = format!("f{i:05}-{}", "x".repeat(200));
        fs::File::create(root.path().join(&name)).unwrap();
        expected.extend_from_slice(name.as_bytes());
        expected.push(b'\n');
    }
    fs::create_dir(root.path().join("z")).unwrap();
    fs::write(root.path().join("z/inside.txt"), "inside\n").unwrap();
    let server = files_server(&root, &["--send-buf", "4K", "--so-sndbuf", "4K"]);
    let mut client = connect_small(server.addr("files"));
    client.write_all(b"LIST\n").unwrap();
    // The walk has read the root and is held among the root's files.
    let mut answer = read_exact(&mut client, 1);
    // Now the server can open no descriptor: not `z` when the walk gets
    // there. Soft and hard limit alike, so nothing can raise it back.
    let limit = lowest_free_fd(server.pid());
    let lowered = std::process::Command::new("prlimit")
        .args(["--pid", &server.pid().to_string()])
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("run prlimit");
    assert!(lowered.success(), "prlimit failed");
    answer.extend_from_slice(&read_to_end(&mut client));
    expected.extend_from_slice(
        format!("\nERR list cut at {NAMES} names: out of file descriptors\n").as_bytes(),
    );
    let tail = |b: &[u8]| String::from_utf8_lossy(&b[b.len().saturating_sub(120)..]).into_owned();
    assert!(
        answer == expected,
        "the answer ends {:?}, not {:?}",
        tail(&answer),
        tail(&expected)
    );
}

/// A root with dotfiles and dot-directories at every depth beside plain
/// files.
fn dotted_root(tag: &str) -> TempDir {
    let root = TempDir::new(tag);
    for dir in [".git", ".dir", "sub/.cache", "sub/plain"] {
        fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    for (name, body) in [
        (".hidden", "hidden\n"),
        (".git/config", "[core]\n"),
        (".dir/x", "x\n"),
        ("sub/.env", "TOKEN=1\n"),
        ("sub/.cache/y", "y\n"),
        ("sub/plain/ok.txt", "ok\n"),
        ("visible.txt", "visible\n"),
    ] {
        fs::write(root.path().join(name), body).unwrap();
    }
    root
}

#[test]
fn regression_dotfiles_are_neither_listed_nor_served_by_default() {
    // With the default `--root .`, a checkout's .git/config, everything
    // under .git/ and .ci/ was listed and served.
    let root = dotted_root("files-dot");
    let server = files_server(&root, &[]);
    let files = server.addr("files");
    assert_eq!(
        String::from_utf8_lossy(&exchange(files, b"LIST\n")),
        "sub/plain/ok.txt\nvisible.txt\n"
    );
    // Refused as missing names are, so a name's existence is not shown.
    for name in [
        ".hidden",
        ".git/config",
        ".dir/x",
        "sub/.env",
        "sub/.cache/y",
        "./.hidden",
        "sub//.env",
        ".git",
        ".missing",
    ] {
        assert_eq!(
            String::from_utf8_lossy(&exchange(files, format!("GET {name}\n").as_bytes())),
            "ERR not found\n",
            "GET {name}"
        );
        assert_eq!(exchange(files, name.as_bytes()), b"", "bare {name}");
    }
    // A leading `./` is the root itself, not a dotfile.
    assert_eq!(exchange(files, b"GET ./visible.txt\n"), b"OK 8\nvisible\n");
}

#[test]
fn with_hidden_dotfiles_are_listed_and_served() {
    let root = dotted_root("files-dot-hidden");
    let server = files_server(&root, &["--hidden"]);
    let files = server.addr("files");
    assert_eq!(
        String::from_utf8_lossy(&exchange(files, b"LIST\n")),
        ".dir/x\n.git/config\n.hidden\nsub/.cache/y\nsub/.env\nsub/plain/ok.txt\nvisible.txt\n"
    );
    assert_eq!(exchange(files, b"GET .git/config\n"), b"OK 7\n[core]\n");
    assert_eq!(exchange(files, b"sub/.env"), b"TOKEN=1\n");
}
