//! Path confinement of the files service, case by case, against the real
//! binary on port 0: a table of hostile names, each sent as `GET NAME\n`
//! (which must get exactly its `ERR <reason>\n`, or the file when the case
//! is one that is served) and in the bare form `NAME` (the file's bytes or
//! nothing), with a secret beside the root whose marker must never appear
//! in any answer; then `LIST`, which must name only the root's own regular
//! files, also while a directory of the root is swapped for a symlink out
//! of it mid-walk.
//!
//! A hard link in the root to a file outside it is served: it is a
//! directory entry of the root, put there by whoever can write the root,
//! and the same file as much as any other name of it (an inode has no
//! "real" location). The server cannot tell it from a file created in the
//! root, and the README says so.

mod support;

use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Server, TempDir, exchange};

/// Occurs only in the file outside the root.
const MARKER: &[u8] = b"SECRET-c0nf1ne-MARKER";

/// What a name must get.
#[derive(Clone, Debug)]
enum Answer {
    /// `ERR <reason>\n` to `GET`, nothing to the bare form.
    Refused(&'static str),
    /// The file: `OK <size>\n` and these bytes to `GET`, the bytes bare.
    Served(Vec<u8>),
}

use Answer::{Refused, Served};

/// A name as sent, and what it must get.
type Case = (Vec<u8>, Answer);

fn has_marker(bytes: &[u8]) -> bool {
    bytes.windows(MARKER.len()).any(|w| w == MARKER)
}

/// `mknod` a character device; false (and a message) if not permitted.
fn mknod(path: &Path, major: u32, minor: u32) -> bool {
    let made = Command::new("mknod")
        .arg(path)
        .args(["c", &major.to_string(), &minor.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        eprintln!(
            "skipping device {}: mknod not permitted (needs root)",
            path.display()
        );
    }
    made
}

/// The tree: `outer/secret.txt` (the marker) and `outer/shared.txt` beside
/// `outer/root`, which holds files, symlinks out at every depth, chains,
/// a hard link to `shared.txt`, a FIFO, a socket and devices. Returns the
/// cases and the regular files a `LIST` must name.
fn build(outer: &Path) -> (Vec<Case>, Vec<Vec<u8>>) {
    let root = outer.join("root");
    let secret = outer.join("secret.txt");
    fs::create_dir_all(root.join("dir/sub")).unwrap();
    fs::write(&secret, MARKER).unwrap();
    fs::write(outer.join("shared.txt"), "shared by a hard link\n").unwrap();
    fs::write(root.join("ok.txt"), "fine\n").unwrap();
    fs::write(root.join("dir/sub/deep.txt"), "deep\n").unwrap();
    let non_utf8 = b"caf\xe9.txt";
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(non_utf8)),
        "latin-1\n",
    )
    .unwrap();

    // Symlinks out of the root at depth 0, 1 and 2, absolute and relative.
    symlink(&secret, root.join("abs-out")).unwrap();
    symlink("../secret.txt", root.join("rel-out")).unwrap();
    symlink("../../secret.txt", root.join("dir/out1")).unwrap();
    symlink("../../../secret.txt", root.join("dir/sub/out2")).unwrap();
    symlink(outer, root.join("dir-out")).unwrap();
    symlink("../..", root.join("dir/sub/top")).unwrap();
    // Chains: out and back in (still a way out, so refused), and one that
    // stays inside (served).
    symlink("../root/ok.txt", root.join("back-in")).unwrap();
    symlink("..", root.join("parent")).unwrap();
    symlink("parent/root/ok.txt", root.join("hop-back-in")).unwrap();
    symlink("ok.txt", root.join("hop2")).unwrap();
    symlink("hop2", root.join("hop1")).unwrap();
    symlink("loop-b", root.join("loop-a")).unwrap();
    symlink("loop-a", root.join("loop-b")).unwrap();
    // Magic links placed in the root as symlinks.
    symlink("/proc/self/root", root.join("proc-root")).unwrap();
    symlink("/proc/self/cwd", root.join("proc-cwd")).unwrap();
    symlink("/proc/self/fd/0", root.join("proc-fd")).unwrap();
    symlink(
        "../../../../../../../../proc/self/root",
        root.join("proc-rel"),
    )
    .unwrap();
    // A hard link to a file outside: a real entry of the root.
    fs::hard_link(outer.join("shared.txt"), root.join("hard")).unwrap();
    // Not regular files.
    assert!(
        Command::new("mkfifo")
            .arg(root.join("fifo"))
            .status()
            .unwrap()
            .success()
    );
    let socket = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    std::mem::forget(socket); // the file stays; the fd lives as long as the test
    let null = mknod(&root.join("null"), 1, 3);
    let zero = mknod(&root.join("zero"), 1, 5);
    // A device number with no driver behind it: opening it fails (ENXIO).
    let nodriver = mknod(&root.join("nodriver"), 240, 7);

    let secret_abs = secret.as_os_str().as_bytes().to_vec();
    let n = |s: &str| s.as_bytes().to_vec();
    let mut cases: Vec<Case> = vec![
        (n("../secret.txt"), Refused("outside the root")),
        (n(".."), Refused("outside the root")),
        (n("../"), Refused("outside the root")),
        (n("dir/../../secret.txt"), Refused("outside the root")),
        // `..` is refused even where it would stay inside.
        (n("dir/../ok.txt"), Refused("outside the root")),
        (n("./../secret.txt"), Refused("outside the root")),
        (n("..\\secret.txt"), Refused("not found")),
        (n("dir\\..\\..\\secret.txt"), Refused("not found")),
        (secret_abs.clone(), Refused("outside the root")),
        (n("/etc/passwd"), Refused("outside the root")),
        (n("//etc/passwd"), Refused("outside the root")),
        (n("%2e%2e/secret.txt"), Refused("not found")),
        (n("%2e%2e%2fsecret.txt"), Refused("not found")),
        (n("abs-out"), Refused("outside the root")),
        (n("rel-out"), Refused("outside the root")),
        (n("dir/out1"), Refused("outside the root")),
        (n("dir/sub/out2"), Refused("outside the root")),
        (n("dir-out/secret.txt"), Refused("outside the root")),
        (n("dir-out/root/ok.txt"), Refused("outside the root")),
        (
            n("dir/sub/top/parent/secret.txt"),
            Refused("outside the root"),
        ),
        (n("dir/sub/top/ok.txt"), Served(b"fine\n".to_vec())),
        (n("back-in"), Refused("outside the root")),
        (n("hop-back-in"), Refused("outside the root")),
        (n("hop1"), Served(b"fine\n".to_vec())),
        (n("loop-a"), Refused("outside the root")),
        (n("proc-root"), Refused("outside the root")),
        (n("proc-root/etc/passwd"), Refused("outside the root")),
        (
            [b"proc-root".as_slice(), &secret_abs].concat(),
            Refused("outside the root"),
        ),
        (n("proc-cwd/ok.txt"), Refused("outside the root")),
        (n("proc-fd"), Refused("outside the root")),
        (n("proc-rel/etc/passwd"), Refused("outside the root")),
        (
            [b"/proc/self/root".as_slice(), &secret_abs].concat(),
            Refused("outside the root"),
        ),
        (n("hard"), Served(b"shared by a hard link\n".to_vec())),
        (n("ok.txt\0"), Refused("bad name")),
        (n("\0"), Refused("bad name")),
        (n("ok.txt\0../secret.txt"), Refused("bad name")),
        (vec![b'a'; 4097], Refused("name too long")),
        (
            [b"dir/".as_slice(), &[b'a'; 4093]].concat(),
            Refused("name too long"),
        ),
        (vec![b'a'; 256], Refused("name too long")),
        (vec![b'a'; 255], Refused("not found")),
        (b"\xff\xfe.txt".to_vec(), Refused("not found")),
        (non_utf8.to_vec(), Served(b"latin-1\n".to_vec())),
        (n("ok.txt/"), Refused("not found")),
        (n("dir/"), Refused("not a regular file")),
        (n("dir"), Refused("not a regular file")),
        (n("."), Refused("not a regular file")),
        (n("./"), Refused("not a regular file")),
        (n("./ok.txt"), Served(b"fine\n".to_vec())),
        (n(""), Refused("bad name")),
        (n("fifo"), Refused("not a regular file")),
        (n("sock"), Refused("not a regular file")),
        (n("missing"), Refused("not found")),
    ];
    if null {
        cases.push((n("null"), Refused("not a regular file")));
    }
    if zero {
        cases.push((n("zero"), Refused("not a regular file")));
    }
    if nodriver {
        cases.push((n("nodriver"), Refused("not a regular file")));
    }
    let mut listed = vec![
        non_utf8.to_vec(),
        n("dir/sub/deep.txt"),
        n("hard"),
        n("ok.txt"),
    ];
    listed.sort();
    (cases, listed)
}

#[test]
fn no_hostile_name_gets_a_byte_from_outside_the_root() {
    let outer = TempDir::new("confine");
    let outer_path = fs::canonicalize(outer.path()).unwrap();
    let (cases, _) = build(&outer_path);
    let root = outer_path.join("root");
    let server = Server::start(&["-l", "127.0.0.1:0=files", "--root", root.to_str().unwrap()]);
    let addr = server.addr("files");
    let mut wrong = Vec::new();
    for (name, answer) in &cases {
        let shown = String::from_utf8_lossy(name).into_owned();
        let shown = if shown.len() > 60 {
            format!("{}... ({} bytes)", &shown[..40], name.len())
        } else {
            shown
        };
        let get = exchange(addr, &[b"GET ".as_slice(), name, b"\n"].concat());
        let bare = exchange(addr, name);
        assert!(!has_marker(&get), "GET {shown:?} served the secret");
        assert!(!has_marker(&bare), "bare {shown:?} served the secret");
        let (want_get, want_bare) = match answer {
            Refused(reason) => (format!("ERR {reason}\n").into_bytes(), Vec::new()),
            Served(body) => (
                [format!("OK {}\n", body.len()).as_bytes(), body].concat(),
                body.clone(),
            ),
        };
        if get != want_get || bare != want_bare {
            wrong.push(format!(
                "{shown:?}: GET got {:?}, want {:?}; bare got {:?}, want {:?}",
                String::from_utf8_lossy(&get),
                String::from_utf8_lossy(&want_get),
                String::from_utf8_lossy(&bare),
                String::from_utf8_lossy(&want_bare),
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
}

#[test]
fn list_names_only_the_roots_own_regular_files() {
    let outer = TempDir::new("confine-list");
    let outer_path = fs::canonicalize(outer.path()).unwrap();
    let (_, listed) = build(&outer_path);
    let root = outer_path.join("root");
    let server = Server::start(&["-l", "127.0.0.1:0=files", "--root", root.to_str().unwrap()]);
    let answer = exchange(server.addr("files"), b"LIST\n");
    assert!(!has_marker(&answer));
    let want: Vec<u8> = listed
        .iter()
        .flat_map(|n| [n.as_slice(), b"\n"].concat())
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&answer),
        String::from_utf8_lossy(&want),
        "LIST must name the regular files under the root and nothing else"
    );
}

/// A client with a small kernel receive buffer, set before connecting so
/// the window it offers stays small: what it does not read stays in the
/// server, whose walk then waits for it (loopback's autotuning would
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

/// Files in `a/` of the swap tests: their listing (about 420 KB) is far
/// more than the buffers between the server and a client that does not
/// read can take (tens of KB with the small buffers used), so the walk is
/// held inside `a/` until the client reads on.
const FILLER: usize = 2_000;

/// `a/` with [`FILLER`] long names, and the answer they make.
fn filler(root: &Path) -> Vec<u8> {
    fs::create_dir_all(root.join("a")).unwrap();
    let mut answer = Vec::new();
    for i in 0..FILLER {
        let name = format!("a/{i:05}-{}", "x".repeat(200));
        fs::File::create(root.join(&name)).unwrap();
        answer.extend_from_slice(name.as_bytes());
        answer.push(b'\n');
    }
    answer
}

/// `outer/secret/`, a directory outside the root whose only entry is a
/// file named with the marker, and holding it: a listing of it would name
/// the marker.
fn secret_dir(outer: &Path) -> std::path::PathBuf {
    let secret = outer.join("secret");
    fs::create_dir(&secret).unwrap();
    fs::write(secret.join(std::ffi::OsStr::from_bytes(MARKER)), MARKER).unwrap();
    secret
}

#[test]
fn regression_list_does_not_follow_a_directory_swapped_for_a_symlink_mid_walk() {
    // The old walk read the root, then opened each subdirectory by its
    // path when it came to it: `z` renamed away and replaced by a symlink
    // out after the root was read, and the answer named the entries of
    // the directory the symlink led to.
    let outer = TempDir::new("confine-list-swap");
    let outer_path = fs::canonicalize(outer.path()).unwrap();
    let root = outer_path.join("root");
    let expected = filler(&root);
    fs::create_dir(root.join("z")).unwrap();
    fs::write(root.join("z/inside.txt"), "inside\n").unwrap();
    let secret = secret_dir(&outer_path);
    let server = Server::start(&[
        "-l",
        "127.0.0.1:0=files",
        "--root",
        root.to_str().unwrap(),
        "--send-buf",
        "4K",
        "--so-sndbuf",
        "4K",
    ]);
    let mut client = connect_small(server.addr("files"));
    client.write_all(b"LIST\n").unwrap();
    // A first byte: the root has been read, and the walk is in `a/`, held
    // there by this client, which reads nothing more for now.
    let mut answer = support::read_exact(&mut client, 1);
    fs::rename(root.join("z"), outer_path.join("z-away")).unwrap();
    symlink(&secret, root.join("z")).unwrap();
    answer.extend_from_slice(&support::read_to_end(&mut client));
    assert!(
        !has_marker(&answer),
        "LIST named an entry outside the root: {:?}",
        String::from_utf8_lossy(&answer[answer.len().saturating_sub(300)..])
    );
    // `z` is now a symlink, not followed; `a/` is whole.
    assert!(answer == expected, "the answer is not a/'s names alone");
}

#[test]
fn regression_list_never_names_outside_while_a_directory_is_swapped_for_a_symlink() {
    // Another local user flips `d` between a directory and a symlink out
    // as fast as it can while LISTs walk the tree; many directories sort
    // before `d`, so the walk reaches it well after it read the root.
    let outer = TempDir::new("confine-list-race");
    let outer_path = fs::canonicalize(outer.path()).unwrap();
    let root = outer_path.join("root");
    for i in 0..100 {
        fs::create_dir_all(root.join(format!("b{i:02}"))).unwrap();
        fs::write(root.join(format!("b{i:02}/f")), "").unwrap();
    }
    fs::create_dir(root.join("d")).unwrap();
    fs::write(root.join("d/f"), "").unwrap();
    let secret = secret_dir(&outer_path);
    let server = Server::start(&["-l", "127.0.0.1:0=files", "--root", root.to_str().unwrap()]);
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (root, outer, stop) = (root.clone(), outer_path.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (d, away) = (root.join("d"), outer.join("d-away"));
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                fs::rename(&d, &away).unwrap();
                symlink(&secret, &d).unwrap();
                fs::remove_file(&d).unwrap();
                fs::rename(&away, &d).unwrap();
                flips += 1;
            }
            flips
        })
    };
    // Bounded in rounds and in time; ends early once the race has been
    // seen both ways enough times to have caught the old walk.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut through, mut around, mut leaked) = (0u32, 0u32, 0u32);
    for _ in 0..500 {
        let answer = exchange(server.addr("files"), b"LIST\n");
        if has_marker(&answer) {
            leaked += 1;
            break;
        }
        if answer.windows(4).any(|w| w == b"d/f\n") {
            through += 1;
        } else {
            around += 1;
        }
        if (through >= 20 && around >= 20) || Instant::now() > deadline {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flips = swapper.join().expect("the swapper ran");
    assert_eq!(
        leaked, 0,
        "LIST named an entry outside the root ({through} through d, {around} around it)"
    );
    assert!(
        through > 0 && around > 0,
        "the swap never raced a LIST ({through} through d, {around} around it, {flips} flips)"
    );
}
