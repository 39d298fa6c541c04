//! The service's answers through the file system: the whole protocol
//! over [`super::FsSource`], with real directories.

use super::super::testing::{config_with_root, random_split, run};
use super::super::{Next, Service, ServiceKind};
use super::testing::{TempDir, whole_tree_sort};
use super::*;
use crate::buffer::{BufPool, ByteBuf};
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

#[test]
fn regression_slow_loris_a_request_that_times_out_is_answered_in_its_form() {
    let config = config_with_root(Path::new("/nonexistent"));
    let peer = "127.0.0.1:1".parse().unwrap();
    for (received, answer) in [
        (&b"GET a.t"[..], &b"ERR request timeout\n"[..]),
        (b"LIST", b"ERR request timeout\n"),
        (b"a.t", b""),
        (b"GE", b""),
        (b"", b""),
    ] {
        let mut files = Files::default();
        assert!(files.awaiting_request());
        files.time_out_request(received);
        assert!(!files.awaiting_request());
        // Whatever comes after is not a request: only the answer goes
        // out, and the reactor ends the connection.
        let mut pool = BufPool::new(64);
        let mut input = ByteBuf::new(64);
        input.append(&mut pool, b" b.t\n");
        let mut output = ByteBuf::new(64);
        let mut out_pool = BufPool::new(64);
        let mut io = Io::new(&mut input, &mut output, &mut out_pool, peer, Instant::now());
        let outcome = files.process(&mut io, &config);
        assert_eq!(outcome.next, Next::Continue);
        assert!(input.is_empty());
        assert_eq!(output.data(), answer, "{:?}", lossy(received));
        assert!(!files.is_producing());
    }
}

fn fetch(root: &Path, request: &[u8], bursts: bool) -> Vec<u8> {
    let out = run(
        ServiceKind::Files,
        &config_with_root(root),
        &[request],
        bursts,
        true,
        256,
        64,
    );
    assert!(out.closed);
    out.output
}

#[test]
fn requests_parse_into_three_forms() {
    assert_eq!(Request::parse(b"LIST"), Request::List);
    assert_eq!(Request::parse(b"LIST\r"), Request::List);
    assert_eq!(Request::parse(b"GET a.txt"), Request::Get(b"a.txt"));
    assert_eq!(Request::parse(b"a.txt"), Request::Bare(b"a.txt"));
}

#[test]
fn get_sends_header_and_bytes_whatever_the_split() {
    let dir = TempDir::new("get");
    let body: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    fs::write(dir.0.join("data.bin"), &body).unwrap();
    let mut expected = b"OK 1000\n".to_vec();
    expected.extend_from_slice(&body);
    assert_eq!(fetch(&dir.0, b"GET data.bin\n", false), expected);
    let request = b"GET data.bin\n";
    for seed in 1..10 {
        let pieces = random_split(request, seed);
        // Bursts end after every piece: GET must still wait for "\n".
        let out = run(
            ServiceKind::Files,
            &config_with_root(&dir.0),
            &pieces,
            true,
            false,
            256,
            64,
        );
        assert_eq!(out.output, expected, "seed {seed}");
    }
}

#[test]
fn a_bare_name_ends_at_a_burst_and_gets_only_bytes() {
    let dir = TempDir::new("bare");
    fs::write(dir.0.join("notes.txt"), b"hello notes").unwrap();
    let out = run(
        ServiceKind::Files,
        &config_with_root(&dir.0),
        &[b"notes.txt"],
        true,
        false,
        256,
        64,
    );
    assert_eq!(out.output, b"hello notes");
    assert!(out.closed);
}

#[test]
fn failures_answer_err_for_get_and_nothing_for_bare() {
    let dir = TempDir::new("fail");
    fs::create_dir(dir.0.join("sub")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.0.join("escape")).unwrap();
    for (name, reason) in [
        ("missing", "not found"),
        ("sub", "not a regular file"),
        ("escape", "outside the root"),
        ("../x", "outside the root"),
        ("/etc/hostname", "outside the root"),
    ] {
        let get = fetch(&dir.0, format!("GET {name}\n").as_bytes(), false);
        assert_eq!(get, format!("ERR {reason}\n").as_bytes(), "{name}");
        assert_eq!(
            fetch(&dir.0, format!("{name}\n").as_bytes(), false),
            b"",
            "{name}"
        );
    }
}

#[test]
fn list_names_regular_files_recursively() {
    let dir = TempDir::new("list");
    fs::create_dir(dir.0.join("sub")).unwrap();
    fs::write(dir.0.join("b.txt"), b"").unwrap();
    fs::write(dir.0.join("sub/a.txt"), b"").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.0.join("link")).unwrap();
    assert_eq!(fetch(&dir.0, b"LIST\n", false), b"b.txt\nsub/a.txt\n");
}

#[test]
fn regression_list_reads_a_bounded_part_of_a_large_tree_per_call() {
    // The old LIST read, sorted and queued the whole tree in the call
    // that parsed the request, stalling every other client meanwhile.
    let dir = TempDir::new("list-big");
    for d in 0..3 {
        fs::create_dir(dir.0.join(format!("d{d}"))).unwrap();
        for i in 0..400 {
            fs::write(dir.0.join(format!("d{d}/f{i:03}")), b"").unwrap();
        }
    }
    let config = config_with_root(&dir.0);
    let peer: SocketAddr = "127.0.0.1:4000".parse().expect("literal address");
    let mut pool = BufPool::new(1 << 20);
    let mut recv_pool = BufPool::new(256);
    let mut input = ByteBuf::new(256);
    let mut output = ByteBuf::new(1 << 20);
    input.append(&mut recv_pool, b"LIST\n");
    let mut service = Service::new(ServiceKind::Files);
    let mut calls = 0;
    let mut answer = Vec::new();
    loop {
        calls += 1;
        assert!(calls < 10_000, "never finished");
        let mut io = Io::new(&mut input, &mut output, &mut pool, peer, Instant::now());
        io.low_watermark = 1 << 18;
        let outcome = service.process(&mut io, &config);
        let lines = output.data().iter().filter(|&&b| b == b'\n').count();
        assert!(lines <= 512, "{lines} names in one call");
        answer.extend_from_slice(output.data());
        let n = output.len();
        output.consume(n);
        if outcome.next != Next::Continue {
            assert_eq!(outcome.next, Next::CloseAfterFlush);
            break;
        }
        assert!(outcome.yielded, "stopped with room to spare and no yield");
        assert!(service.is_producing());
    }
    assert!(calls > 2, "{calls} calls");
    assert!(answer == whole_tree_sort(&dir.0, false));
}

#[test]
fn file_chunks_are_whole_segments_but_for_the_end() {
    // 64 KiB on loopback: one 65,483-byte segment and a 53-byte runt.
    assert_eq!(file_chunk(65_536, 1 << 30, 65_483), 65_483);
    assert_eq!(file_chunk(262_144, 1 << 30, 65_483), 4 * 65_483);
    // The end of the file goes as it is.
    assert_eq!(file_chunk(65_536, 65_536, 65_483), 65_536);
    assert_eq!(file_chunk(100, 100, 65_483), 100);
    // Less room than a segment, or no segment size known: as it is.
    assert_eq!(file_chunk(16_384, 1 << 30, 65_483), 16_384);
    assert_eq!(file_chunk(65_536, 1 << 30, 0), 65_536);
}

#[test]
fn a_download_told_its_segment_size_reads_whole_segments() {
    // The chunks a download reads are what the connection writes: a
    // chunk a few bytes past whole segments leaves a runt that Nagle's
    // algorithm holds back, which halved a loopback download's rate.
    let dir = TempDir::new("segments");
    let size = 100_000usize;
    fs::write(dir.0.join("f"), vec![7u8; size]).unwrap();
    let config = config_with_root(&dir.0);
    let peer: SocketAddr = "127.0.0.1:4000".parse().expect("literal address");
    let mut pool = BufPool::new(4096);
    let mut recv_pool = BufPool::new(256);
    let mut input = ByteBuf::new(256);
    let mut output = ByteBuf::new(4096);
    input.append(&mut recv_pool, b"GET f\n");
    let mut service = Service::new(ServiceKind::Files);
    let mut chunks = Vec::new();
    let mut first = 0;
    for call in 0.. {
        assert!(call < 10_000, "never finished");
        let mut io = Io::new(&mut input, &mut output, &mut pool, peer, Instant::now());
        io.low_watermark = 1024;
        let outcome = service.process(&mut io, &config);
        if call == 0 {
            // The call that parsed the request: the header and a first
            // chunk, read before the connection could tell the size.
            let header = format!("OK {size}\n");
            assert!(output.data().starts_with(header.as_bytes()));
            first = output.len() - header.len();
            assert!(service.needs_segment());
            service.set_segment(1000);
        } else {
            chunks.push(output.len());
        }
        let n = output.len();
        output.consume(n);
        if outcome.next != Next::Continue {
            break;
        }
    }
    assert_eq!(first + chunks.iter().sum::<usize>(), size);
    let (last, whole) = chunks.split_last().expect("chunks");
    assert!(whole.iter().all(|&c| c == 4000), "{chunks:?}");
    assert_eq!(*last, (size - first) % 4000);
    assert!(!service.needs_segment());
}

#[test]
fn dotfiles_are_refused_as_not_found_unless_hidden() {
    let dir = TempDir::new("dotfiles");
    fs::create_dir_all(dir.0.join(".git")).unwrap();
    fs::write(dir.0.join(".git/config"), b"[core]").unwrap();
    fs::write(dir.0.join("plain"), b"plain").unwrap();
    let fetch_with = |hidden: bool, request: &[u8]| {
        let config = ServiceConfig {
            hidden,
            ..config_with_root(&dir.0)
        };
        let out = run(
            ServiceKind::Files,
            &config,
            &[request],
            false,
            true,
            256,
            64,
        );
        assert!(out.closed);
        out.output
    };
    assert_eq!(fetch_with(false, b"GET .git/config\n"), b"ERR not found\n");
    assert_eq!(fetch_with(false, b"GET .git/missing\n"), b"ERR not found\n");
    assert_eq!(fetch_with(false, b".git/config\n"), b"");
    assert_eq!(fetch_with(false, b"LIST\n"), b"plain\n");
    assert_eq!(fetch_with(true, b"GET .git/config\n"), b"OK 6\n[core]");
    assert_eq!(fetch_with(true, b".git/config\n"), b"[core]");
    assert_eq!(fetch_with(true, b"LIST\n"), b".git/config\nplain\n");
}

mod properties {
    use proptest::prelude::*;
    use proptest::test_runner::TestRunner;

    use super::super::{MAX_NAME, Refusal, Request, check_name};
    use super::TempDir;
    use crate::service::ServiceKind;
    use crate::service::testing::{Step, config_with_root, converse, hops, no_queries, steps};
    use std::fs;

    /// Names made of the pieces that matter to confinement: dots,
    /// slashes, NUL, plain letters; now and then one near MAX_NAME.
    fn name() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"..".to_vec()),
            Just(b".".to_vec()),
            Just(b"/".to_vec()),
            Just(b"//".to_vec()),
            Just(b"\0".to_vec()),
            Just(b"a".to_vec()),
            Just(b"...".to_vec()),
            Just(b"\\".to_vec()),
            Just(b".a".to_vec()),
        ];
        prop_oneof![
            8 => proptest::collection::vec(piece, 0..8).prop_map(|p| p.concat()),
            1 => proptest::collection::vec(any::<u8>(), 0..16),
            1 => (MAX_NAME - 2..MAX_NAME + 3, any::<bool>())
                .prop_map(|(n, dots)| if dots { b"a/..".repeat(n / 4 + 1)[..n].to_vec() } else { vec![b'a'; n] }),
        ]
    }

    /// What the pure checks must answer, said plainly: too long, then
    /// empty or NUL, then absolute or any `..` component.
    fn model(name: &[u8]) -> Result<(), Refusal> {
        if name.len() > MAX_NAME {
            Err(Refusal::TooLong)
        } else if name.is_empty() || name.contains(&0) {
            Err(Refusal::BadName)
        } else if name.starts_with(b"/") || name.split(|&b| b == b'/').any(|c| c == b"..") {
            Err(Refusal::Outside)
        } else {
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(crate::prop::cases(512))]

        /// `check_name` accepts exactly the relative names of normal
        /// components, short enough and without NUL.
        #[test]
        fn check_name_never_accepts_a_way_out(name in name()) {
            prop_assert_eq!(check_name(&name).map(|_| ()), model(&name));
        }

        /// A request line is `LIST`, `GET ` and a name, or a bare name;
        /// one `\r` before the newline is not part of it.
        #[test]
        fn requests_parse_as_their_prefix_says(
            head in prop_oneof![Just(&b""[..]), Just(&b"GET "[..]), Just(&b"LIST"[..]), Just(&b"GET"[..])],
            name in name(),
            cr in any::<bool>(),
        ) {
            let mut line = [head, &name[..]].concat();
            if cr {
                line.push(b'\r');
            }
            let bare = line.strip_suffix(b"\r").unwrap_or(&line);
            let expected = if bare == b"LIST" {
                Request::List
            } else if let Some(name) = bare.strip_prefix(b"GET ") {
                Request::Get(name)
            } else {
                Request::Bare(bare)
            };
            prop_assert_eq!(Request::parse(&line), expected);
        }
    }

    /// A request: its form (0 bare, 1 `GET`, 2 `LIST`), the name,
    /// and whether it ends in `\r\n`.
    fn request() -> impl Strategy<Value = (u8, &'static str, bool)> {
        let names = prop_oneof![
            Just("a.txt"),
            Just("sub/b.bin"),
            Just("./a.txt"),
            Just("missing"),
            Just("sub"),
            Just("escape"),
            Just("../a.txt"),
            Just("sub/../a.txt"),
            Just("/etc/hostname"),
            Just("a\0.txt"),
        ];
        (0u8..3, names, any::<bool>())
    }

    /// The service answers a request with the same bytes whatever
    /// the splits, burst ends (for `GET` and `LIST`, which wait for
    /// their newline) and room, and closes.
    #[test]
    fn the_answer_does_not_depend_on_splits_or_room() {
        let dir = TempDir::new("prop-answer");
        let a: Vec<u8> = (0..300u32).map(|i| (i * 7 % 256) as u8).collect();
        let b: Vec<u8> = (0..1000u32).map(|i| (i * 13 % 256) as u8).collect();
        fs::write(dir.0.join("a.txt"), &a).unwrap();
        fs::create_dir(dir.0.join("sub")).unwrap();
        fs::write(dir.0.join("sub/b.bin"), &b).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.0.join("escape")).unwrap();
        let config = config_with_root(&dir.0);
        let strategy = (
            request(),
            "[a-z\n]{0,10}",
            hops(12),
            any::<bool>(),
            8usize..48,
            1usize..64,
        );
        let mut runner = TestRunner::new(crate::prop::cases(96));
        runner
            .run(
                &strategy,
                |((form, name, crlf), junk, hops, eof, recv_cap, send_cap)| {
                    let mut line = match form {
                        0 => name.as_bytes().to_vec(),
                        1 => format!("GET {name}").into_bytes(),
                        _ => b"LIST".to_vec(),
                    };
                    if crlf {
                        line.push(b'\r');
                    }
                    let mut input = line.clone();
                    input.push(b'\n');
                    let request_len = input.len();
                    input.extend_from_slice(junk.as_bytes());
                    let expected: Vec<u8> = if line.len() >= recv_cap {
                        // Fills the buffer without its newline: refused.
                        if form == 1 {
                            b"ERR name too long\n".to_vec()
                        } else {
                            Vec::new()
                        }
                    } else {
                        let body = match name {
                            "a.txt" | "./a.txt" => Ok(&a),
                            "sub/b.bin" => Ok(&b),
                            "missing" => Err("not found"),
                            "sub" => Err("not a regular file"),
                            "a\0.txt" => Err("bad name"),
                            _ => Err("outside the root"),
                        };
                        match (form, body) {
                            (2, _) => b"a.txt\nsub/b.bin\n".to_vec(),
                            (1, Ok(body)) => {
                                [format!("OK {}\n", body.len()).as_bytes(), body].concat()
                            }
                            (1, Err(why)) => format!("ERR {why}\n").into_bytes(),
                            (_, Ok(body)) => body.clone(),
                            (_, Err(_)) => Vec::new(),
                        }
                    };
                    // A bare name ends at a burst: its client sends it whole.
                    let mut script = Vec::new();
                    let mut rest = &input[..];
                    if form == 0 {
                        script.push(Step::Send(input[..request_len].to_vec()));
                        rest = &input[request_len..];
                    }
                    script.extend(steps(rest, &hops, eof));
                    let run = converse(
                        ServiceKind::Files,
                        &config,
                        &script,
                        recv_cap,
                        send_cap,
                        no_queries,
                    );
                    prop_assert_eq!(
                        run.output,
                        expected,
                        "{:?}",
                        String::from_utf8_lossy(&input)
                    );
                    prop_assert!(run.closed && !run.aborted);
                    Ok(())
                },
            )
            .unwrap();
    }
}
