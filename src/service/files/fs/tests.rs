//! The file system half on real directories: confinement under races,
//! and the `LIST` walk's order, bounds and descriptors through [`FsDirs`].

use super::super::testing::{TempDir, drive, generated_tree, limits, whole_tree_sort};
use super::super::{ListLimits, ListStep, ListWalk, MAX_LIST_NAMES, list_cut_line};
use super::*;
use crate::buffer::{BufPool, ByteBuf};
use crate::service::testing::{config_with_root, run};
use crate::service::{Io, ServiceKind};
use std::fs;
use std::io::Read;
use std::time::Instant;

#[test]
fn names_that_could_leave_the_root_are_refused_before_any_lookup() {
    assert_eq!(check_name(b"/etc/passwd"), Err(Refusal::Outside));
    assert_eq!(check_name(b"../x"), Err(Refusal::Outside));
    assert_eq!(check_name(b"a/../../x"), Err(Refusal::Outside));
    assert_eq!(check_name(b"a\0b"), Err(Refusal::BadName));
    assert_eq!(check_name(b""), Err(Refusal::BadName));
    assert_eq!(check_name(&[b'a'; MAX_NAME + 1]), Err(Refusal::TooLong));
    assert!(check_name(b"./sub/file.txt").is_ok());
}

#[test]
fn list_sends_what_a_whole_tree_sort_gives_whatever_the_send_buffer_room() {
    let dir = TempDir::new("list-order");
    generated_tree(&dir.0);
    let expected = whole_tree_sort(&dir.0, false);
    assert_eq!(expected.split(|&b| b == b'\n').count() - 1, 48);
    // Through the service, output drained after every call.
    for send_cap in [1, 2, 3, 7, 16, 64, 4096] {
        let out = run(
            ServiceKind::Files,
            &config_with_root(&dir.0),
            &[b"LIST\n"],
            false,
            true,
            256,
            send_cap,
        );
        assert!(out.closed, "send buffer {send_cap}");
        assert!(out.output == expected, "send buffer {send_cap}");
    }
    // By hand: a slow peer, and walks that stop after every few reads;
    // with dotfiles and without.
    let with_dotfiles = whole_tree_sort(&dir.0, true);
    assert_eq!(with_dotfiles.split(|&b| b == b'\n').count() - 1, 51);
    for (send_cap, drain, reads, hidden) in [
        (8, 1, 1, true),
        (16, 3, 2, false),
        (64, 64, 5, true),
        (4096, 100, 512, false),
    ] {
        let walk = ListWalk::new(FsDirs::new(&dir.0, hidden), limits(MAX_LIST_NAMES, reads));
        let expected = if hidden { &with_dotfiles } else { &expected };
        let walked = drive(walk, send_cap, drain);
        assert!(
            walked.output == *expected,
            "send buffer {send_cap}, drain {drain}, {reads} reads a call, hidden {hidden}"
        );
    }
}

#[test]
fn no_list_call_reads_more_than_its_bound() {
    let dir = TempDir::new("list-bound");
    generated_tree(&dir.0);
    let expected = whole_tree_sort(&dir.0, true);
    for bound in [1, 4, 33] {
        let walk = ListWalk::new(FsDirs::new(&dir.0, true), limits(MAX_LIST_NAMES, bound));
        let walked = drive(walk, 1 << 16, 1 << 16);
        assert!(walked.output == expected, "bound {bound}");
        assert_eq!(walked.most_reads, bound, "bound {bound}");
        // A buffer never full: every stop but the last is the bound.
        let spent = walked
            .steps
            .iter()
            .filter(|s| **s == ListStep::Spent)
            .count();
        assert_eq!(spent, walked.steps.len() - 1, "bound {bound}");
    }
}

#[test]
fn a_list_past_its_cap_ends_with_the_cut_line() {
    let dir = TempDir::new("list-cut");
    generated_tree(&dir.0);
    let expected = whole_tree_sort(&dir.0, true);
    let lines: Vec<&[u8]> = expected.split_inclusive(|&b| b == b'\n').collect();
    for cap in [0, 1, 5, 12] {
        let walked = drive(
            ListWalk::new(FsDirs::new(&dir.0, true), limits(cap, 3)),
            32,
            7,
        );
        let mut want = lines[..cap].concat();
        want.extend_from_slice(format!("\nERR list cut at {cap} names\n").as_bytes());
        assert_eq!(lossy(&walked.output), lossy(&want), "cap {cap}");
    }
    // At exactly as many names as the tree holds, nothing is cut.
    let walked = drive(
        ListWalk::new(FsDirs::new(&dir.0, true), limits(lines.len(), 3)),
        32,
        7,
    );
    assert!(walked.output == expected);
    assert_eq!(list_cut_line(3, None), b"\nERR list cut at 3 names\n");
    assert_eq!(
        list_cut_line(3, Some("out of file descriptors")),
        b"\nERR list cut at 3 names: out of file descriptors\n"
    );
}

#[test]
fn a_list_with_a_directory_larger_than_it_may_hold_is_cut_before_it() {
    // A directory's names are sent only once all are read and sorted:
    // one that takes what is held past the bound ends the answer where
    // it starts, having sent the names that come before it.
    let dir = TempDir::new("list-wide");
    fs::write(dir.0.join("a"), b"").unwrap();
    fs::create_dir(dir.0.join("b")).unwrap();
    for i in 0..10 {
        fs::write(dir.0.join(format!("b/{i}")), b"").unwrap();
    }
    // The root holds `a` and `b`; `b` holds ten one-byte names.
    let entry = size_of::<crate::service::files::list::Entry>();
    let held_bytes = 2 + 2 * entry + 9 * (1 + entry);
    let walk = ListWalk::new(
        FsDirs::new(&dir.0, true),
        ListLimits {
            held_bytes,
            ..limits(MAX_LIST_NAMES, 4)
        },
    );
    let walked = drive(walk, 64, 64);
    assert_eq!(lossy(&walked.output), "a\n\nERR list cut at 1 names\n");
    // With room for the tenth, all are sent.
    let walk = ListWalk::new(
        FsDirs::new(&dir.0, true),
        ListLimits {
            held_bytes: held_bytes + 1 + entry,
            ..limits(MAX_LIST_NAMES, 4)
        },
    );
    assert!(drive(walk, 64, 64).output == whole_tree_sort(&dir.0, true));
}

#[test]
fn a_list_of_a_root_that_cannot_be_read_is_empty() {
    let walked = drive(
        ListWalk::new(
            FsDirs::new(Path::new("/nonexistent/root"), false),
            ListLimits::SERVED,
        ),
        64,
        64,
    );
    assert_eq!(walked.output, b"");
}

#[test]
fn a_list_deeper_than_its_depth_is_cut_where_the_deep_directory_sorts() {
    let dir = TempDir::new("list-depth");
    fs::create_dir_all(dir.0.join("a/b/c")).unwrap();
    for file in ["a/0", "a/b/c/f", "a/x", "z"] {
        fs::write(dir.0.join(file), b"").unwrap();
    }
    let depth = |depth| ListLimits {
        depth,
        ..limits(MAX_LIST_NAMES, 2)
    };
    // The root and `a` are two directories: `a/b` is one too deep.
    let walked = drive(ListWalk::new(FsDirs::new(&dir.0, false), depth(2)), 64, 64);
    assert_eq!(
        lossy(&walked.output),
        "a/0\n\nERR list cut at 1 names: deeper than 2 directories\n"
    );
    let walked = drive(ListWalk::new(FsDirs::new(&dir.0, false), depth(4)), 64, 64);
    assert!(walked.output == whole_tree_sort(&dir.0, false));
}

/// The most descriptors `walk` held between any two of its calls, one
/// read a call, and what it sent.
fn most_descriptors(mut walk: ListWalk<FsDirs>) -> (usize, Vec<u8>) {
    let peer: SocketAddr = "127.0.0.1:4000".parse().expect("literal address");
    let mut pool = BufPool::new(1 << 16);
    let mut input = ByteBuf::new(16);
    let mut output = ByteBuf::new(1 << 16);
    let mut most = 0;
    for _ in 0..100_000 {
        let mut io = Io::new(&mut input, &mut output, &mut pool, peer, Instant::now());
        io.low_watermark = 1 << 14;
        let step = walk.step(&mut io);
        most = most.max(walk.descriptors());
        if step == ListStep::Done {
            return (most, output.data().to_vec());
        }
    }
    panic!("the walk never ended");
}

#[test]
fn a_list_holds_a_descriptor_only_for_directories_it_must_come_back_to() {
    // A chain: each directory has one subdirectory, let go as soon as
    // that is opened, so the walk holds one descriptor at a time.
    let chain = TempDir::new("list-fds-chain");
    fs::create_dir_all(chain.0.join("1/2/3/4/5/6")).unwrap();
    fs::write(chain.0.join("1/2/3/4/5/6/f"), b"").unwrap();
    fs::write(chain.0.join("1/f"), b"").unwrap();
    let walk = ListWalk::new(FsDirs::new(&chain.0, false), limits(MAX_LIST_NAMES, 1));
    let (most, output) = most_descriptors(walk);
    assert_eq!(lossy(&output), "1/2/3/4/5/6/f\n1/f\n");
    assert_eq!(most, 1);
    // Each directory with two subdirectories: while in the first, the
    // walk must come back for the second, so it holds one a level.
    let forks = TempDir::new("list-fds-forks");
    let mut path = forks.0.clone();
    for _ in 0..6 {
        fs::create_dir_all(path.join("b")).unwrap();
        fs::write(path.join("b/f"), b"").unwrap();
        path = path.join("a");
    }
    fs::create_dir(&path).unwrap();
    let walk = ListWalk::new(FsDirs::new(&forks.0, false), limits(MAX_LIST_NAMES, 1));
    let (most, output) = most_descriptors(walk);
    assert!(output == whole_tree_sort(&forks.0, false));
    assert_eq!(most, 7, "the root and six levels of `a`");
}

#[test]
fn regression_a_list_does_not_follow_a_subdirectory_swapped_for_a_symlink_after_its_parent_was_read()
 {
    // The old walk opened `z` by its path when it came to it: a symlink
    // put there after the root was read led it out.
    let outer = TempDir::new("list-swap");
    let root = outer.0.join("root");
    fs::create_dir_all(root.join("a")).unwrap();
    fs::create_dir_all(root.join("z")).unwrap();
    fs::create_dir(outer.0.join("secret")).unwrap();
    fs::write(root.join("a/f"), b"").unwrap();
    fs::write(root.join("z/f"), b"").unwrap();
    fs::write(outer.0.join("secret/SECRET"), b"").unwrap();
    let peer: SocketAddr = "127.0.0.1:4000".parse().expect("literal address");
    let mut pool = BufPool::new(1 << 16);
    let mut input = ByteBuf::new(16);
    let mut output = ByteBuf::new(1 << 16);
    let mut walk = ListWalk::new(FsDirs::new(&root, false), limits(MAX_LIST_NAMES, 1));
    let mut swapped = false;
    for _ in 0..1_000 {
        let mut io = Io::new(&mut input, &mut output, &mut pool, peer, Instant::now());
        io.low_watermark = 1 << 14;
        if walk.step(&mut io) == ListStep::Done {
            break;
        }
        // Once the root is read (and the walk in `a`), `z` goes.
        if !swapped && walk.depth() == 2 {
            fs::rename(root.join("z"), outer.0.join("z-away")).unwrap();
            std::os::unix::fs::symlink(outer.0.join("secret"), root.join("z")).unwrap();
            swapped = true;
        }
    }
    assert!(swapped, "the walk never entered `a`");
    assert_eq!(lossy(output.data()), "a/f\n");
}

#[test]
fn dotfiles_are_hidden_by_any_component_but_a_leading_dot_slash() {
    for (name, hidden) in [
        (&b".env"[..], true),
        (b".git/config", true),
        (b"sub/.git/config", true),
        (b"sub/.x/y", true),
        (b"...", true),
        (b"./.env", true),
        (b"a//.b", true),
        (b"./a.txt", false),
        (b".", false),
        (b"a.b/c.d", false),
        (b"sub/file.", false),
    ] {
        let path = check_name(name).expect("a name check_name passes");
        assert_eq!(is_hidden(path), hidden, "{}", lossy(name));
    }
}

/// What opening a name gave: the file's bytes, or the refusal.
fn outcome(root: &Path, name: &[u8], resolution: Resolution) -> Result<Vec<u8>, Refusal> {
    let (mut file, size) = open_beneath(root, name, resolution)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes.len() as u64, size, "{}", lossy(name));
    Ok(bytes)
}

#[test]
fn both_resolutions_confine_names_to_the_root() {
    use std::os::unix::fs::symlink;
    let outer = TempDir::new("beneath");
    let root = outer.0.join("root");
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(outer.0.join("secret.txt"), b"secret").unwrap();
    fs::write(root.join("ok.txt"), b"fine").unwrap();
    fs::write(root.join("sub/nested.txt"), b"nested").unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(root.join("fifo"))
            .status()
            .unwrap()
            .success()
    );
    symlink("ok.txt", root.join("link-in")).unwrap();
    symlink("../ok.txt", root.join("sub/link-up")).unwrap();
    symlink("sub", root.join("dir-in")).unwrap();
    symlink(outer.0.join("secret.txt"), root.join("link-out")).unwrap();
    symlink("../../secret.txt", root.join("sub/link-out")).unwrap();
    symlink(&outer.0, root.join("dir-out")).unwrap();
    symlink("nowhere", root.join("dangling")).unwrap();
    symlink("/nonexistent/x", root.join("dangling-abs")).unwrap();
    symlink("loop-b", root.join("loop-a")).unwrap();
    symlink("loop-a", root.join("loop-b")).unwrap();
    let long = "n".repeat(256);

    use Refusal::*;
    type Expected = Result<&'static [u8], Refusal>;
    let fine: Expected = Ok(b"fine");
    // (name, through openat2, through the walk)
    let cases: Vec<(&[u8], Expected, Expected)> = vec![
        (b"ok.txt", fine, fine),
        (b"./ok.txt", fine, fine),
        (b"sub/nested.txt", Ok(b"nested"), Ok(b"nested")),
        (b"sub//nested.txt", Ok(b"nested"), Ok(b"nested")),
        (b"missing", Err(NotFound), Err(NotFound)),
        (b"sub/missing", Err(NotFound), Err(NotFound)),
        (b"ok.txt/x", Err(NotFound), Err(NotFound)),
        (b"ok.txt/", Err(NotFound), Err(NotFound)),
        (b"sub", Err(NotRegular), Err(NotRegular)),
        (b"sub/", Err(NotRegular), Err(NotRegular)),
        (b".", Err(NotRegular), Err(NotRegular)),
        (b"fifo", Err(NotRegular), Err(NotRegular)),
        // Symlinks that stay inside: served by openat2, refused by the
        // walk, which follows none.
        (b"link-in", fine, Err(Outside)),
        (b"sub/link-up", fine, Err(Outside)),
        (b"dir-in/nested.txt", Ok(b"nested"), Err(Outside)),
        (b"dangling", Err(NotFound), Err(Outside)),
        // Symlinks leading out, at depth 0 and 1, and as a directory.
        (b"link-out", Err(Outside), Err(Outside)),
        (b"sub/link-out", Err(Outside), Err(Outside)),
        (b"dir-out/secret.txt", Err(Outside), Err(Outside)),
        (b"dir-out/root/ok.txt", Err(Outside), Err(Outside)),
        (b"dangling-abs", Err(Outside), Err(Outside)),
        (b"loop-a", Err(Outside), Err(Outside)),
        // Refused by check_name before any lookup.
        (b"../secret.txt", Err(Outside), Err(Outside)),
        (b"sub/../../secret.txt", Err(Outside), Err(Outside)),
        (b"/etc/hostname", Err(Outside), Err(Outside)),
        (b"ok.txt\0", Err(BadName), Err(BadName)),
        (long.as_bytes(), Err(TooLong), Err(TooLong)),
    ];
    for (name, kernel, walk) in cases {
        for (resolution, expected) in [(Resolution::Kernel, kernel), (Resolution::Walk, walk)] {
            assert_eq!(
                outcome(&root, name, resolution),
                expected.map(<[u8]>::to_vec),
                "{:?} through {resolution:?}",
                lossy(name)
            );
        }
    }
}

#[test]
fn magic_links_are_refused_by_both_resolutions() {
    // /proc/PID as the root: its exe, cwd, root and fd/N entries are the
    // magic links that jump anywhere whatever their text says.
    let root = fs::canonicalize("/proc/self").unwrap();
    for resolution in [Resolution::Kernel, Resolution::Walk] {
        for name in [
            &b"exe"[..],
            b"fd/0",
            b"cwd/Cargo.toml",
            b"root/etc/hostname",
        ] {
            assert_eq!(
                outcome(&root, name, resolution),
                Err(Refusal::Outside),
                "{:?} through {resolution:?}",
                lossy(name)
            );
        }
        // Its size reads as 0, so `outcome`'s size check does not apply.
        assert!(
            open_beneath(&root, b"status", resolution).is_ok(),
            "a plain /proc file is served through {resolution:?}"
        );
    }
}

#[test]
fn regression_a_unix_socket_is_not_a_regular_file_rather_than_unreadable() {
    // Opening a socket fails with ENXIO, which read `cannot read`.
    let dir = TempDir::new("socket");
    let _socket = std::os::unix::net::UnixListener::bind(dir.0.join("sock")).unwrap();
    for resolution in [Resolution::Kernel, Resolution::Walk] {
        assert_eq!(
            open_beneath(&dir.0, b"sock", resolution).map(|(_, size)| size),
            Err(Refusal::NotRegular),
            "through {resolution:?}"
        );
    }
}

#[test]
fn regression_a_directory_swapped_for_a_symlink_after_a_check_is_not_followed() {
    // What the old code did: canonicalise, check the prefix, then open
    // the checked path. The check passes while `d` is a directory...
    let outer = TempDir::new("swap-once");
    let root = outer.0.join("root");
    fs::create_dir_all(root.join("d")).unwrap();
    fs::create_dir(outer.0.join("secret")).unwrap();
    fs::write(root.join("d/f"), b"inside").unwrap();
    fs::write(outer.0.join("secret/f"), b"secret").unwrap();
    let checked = fs::canonicalize(root.join("d/f")).unwrap();
    assert!(checked.starts_with(&root));
    // ...then `d` becomes a symlink out, and the checked path now leads
    // to the secret: a string check says nothing about the next open.
    fs::rename(root.join("d"), root.join("d-was")).unwrap();
    std::os::unix::fs::symlink(outer.0.join("secret"), root.join("d")).unwrap();
    assert_eq!(fs::read(&checked).unwrap(), b"secret");
    for resolution in [Resolution::Kernel, Resolution::Walk] {
        assert_eq!(
            outcome(&root, b"d/f", resolution),
            Err(Refusal::Outside),
            "{resolution:?}"
        );
    }
}

#[test]
fn regression_open_under_never_serves_outside_while_a_directory_is_swapped() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    // Another local user flips `d` between a directory and a symlink out
    // as fast as it can while requests for d/f are served. The old
    // check-then-open served the secret within a few thousand requests.
    let outer = TempDir::new("swap-race");
    let root = outer.0.join("root");
    fs::create_dir_all(root.join("d")).unwrap();
    fs::create_dir(outer.0.join("secret")).unwrap();
    fs::write(root.join("d/f"), b"inside").unwrap();
    fs::write(outer.0.join("secret/f"), b"secret").unwrap();
    std::os::unix::fs::symlink(outer.0.join("secret"), root.join("link")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (root, stop) = (root.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (d, real, link) = (root.join("d"), root.join("d-real"), root.join("link"));
            while !stop.load(Ordering::Relaxed) {
                fs::rename(&d, &real).unwrap();
                fs::rename(&link, &d).unwrap();
                fs::rename(&d, &link).unwrap();
                fs::rename(&real, &d).unwrap();
            }
        })
    };
    // Bounded in requests and in time; ends early once the race has been
    // seen both ways enough times to have caught the old code.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut inside, mut refused, mut leaked) = (0u32, 0u32, 0u32);
    for _ in 0..2_000_000 {
        match open_under(&root, b"d/f") {
            Ok((mut file, _)) => {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).unwrap();
                if bytes == b"secret" {
                    leaked += 1;
                } else {
                    inside += 1;
                }
            }
            Err(_) => refused += 1,
        }
        if leaked > 0 || (inside >= 2_000 && refused >= 2_000) || Instant::now() > deadline {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert_eq!(
        leaked, 0,
        "served the secret ({inside} inside, {refused} refused)"
    );
    assert!(
        inside > 0 && refused > 0,
        "the swap never raced a request ({inside} inside, {refused} refused)"
    );
}
