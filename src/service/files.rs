//! The files service: download a file from under `--root`.
//!
//! Requests (one per connection), ending at `\n`, at the client's half-close,
//! or, for a bare name only, at the end of a burst:
//! - `NAME`: the file's bytes, then close; on any failure, close with no
//!   bytes (the notes' client then saves nothing) and log why;
//!
//! A request longer than the receive buffer is refused as `name too long`
//! (never cut to what fits). A download that cannot complete (the file
//! shrank, a read failed) ends with [`Outcome::abort`]: a reset, so a client
//! with no size header cannot save a truncated file as a whole one.
//!
//! - `GET NAME`: `OK <size>\n`, the bytes, close; or `ERR <reason>\n`, close;
//! - `LIST`: the regular files under the root, one relative path a line.
//!
//! `GET` and `LIST` wait for their newline (or half-close) even when the
//! socket runs dry, so a request split across packets is never cut short;
//! only the bare form, whose client sends no newline, ends at a burst (and
//! not while what arrived could still be the start of `GET ` or `LIST`).
//!
//! No socket I/O here. This service does read the file system: it resolves
//! names (pure checks first, in [`check_name`], then the kernel's own
//! resolution beneath the root, in [`open_beneath`]) and reads the file in
//! chunks straight into the send buffer, and only while that buffer is below
//! its low watermark, so a 10 GB file costs no more memory than a 10 KB one.
//! Those reads are blocking, which is fine for local files and page-cache
//! hits.

use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use log::{debug, info, warn};

use super::{Io, Outcome, ServiceConfig};
use crate::sockopt;

/// Longest name accepted, in bytes (Linux's PATH_MAX).
pub const MAX_NAME: usize = 4096;

/// Most bytes a `LIST` answer may take. The answer is built in memory, so it
/// is capped to keep a connection's memory bounded whatever the tree holds.
pub const MAX_LIST_BYTES: usize = 1 << 20;

/// Why a name is not served. `Display` gives the reason sent after `ERR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    NotRegular,
    Outside,
    TooLong,
    BadName,
    Unreadable,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NotFound => "not found",
            Refusal::NotRegular => "not a regular file",
            Refusal::Outside => "outside the root",
            Refusal::TooLong => "name too long",
            Refusal::BadName => "bad name",
            Refusal::Unreadable => "cannot read",
        })
    }
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// The notes' protocol: the bare name.
    Bare(&'a [u8]),
    Get(&'a [u8]),
    List,
}

impl<'a> Request<'a> {
    /// Parses one request line (without its newline).
    pub fn parse(line: &'a [u8]) -> Request<'a> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line == b"LIST" {
            Request::List
        } else if let Some(name) = line.strip_prefix(b"GET ") {
            Request::Get(name)
        } else {
            Request::Bare(line)
        }
    }
}

/// The checks that need no file system: a relative path of normal
/// components, not too long, no NUL.
pub fn check_name(name: &[u8]) -> Result<&Path, Refusal> {
    if name.len() > MAX_NAME {
        return Err(Refusal::TooLong);
    }
    if name.is_empty() || name.contains(&0) {
        return Err(Refusal::BadName);
    }
    let path = Path::new(OsStr::from_bytes(name));
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => {
                return Err(Refusal::Outside);
            }
        }
    }
    Ok(path)
}

/// How [`open_beneath`] resolves a name under the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The kernel resolves the whole name beneath the root in one call
    /// (`openat2` with `RESOLVE_BENEATH`), following symlinks that stay
    /// inside; on a kernel without `openat2` (or a sandbox that forbids
    /// it), the same as [`Resolution::Walk`].
    Kernel,
    /// One `openat` per component, each relative to the directory opened
    /// before it, none following a symlink. Stricter than `openat2`: every
    /// symlink is refused as `outside the root`, even one that would lead
    /// to a file inside, since telling the two apart would mean resolving
    /// the link in user space, which is the race this avoids.
    Walk,
}

/// Flags of the final open. `O_NONBLOCK`: opening a FIFO must not block
/// the reactor (it is then refused as not regular). No `O_NOFOLLOW` for
/// `openat2`: `RESOLVE_BENEATH` already keeps a trailing symlink inside the
/// root, and `O_NOFOLLOW` would refuse the ones that stay inside.
const FILE_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_NONBLOCK;

/// Times `openat2` is tried when it answers `EAGAIN`, which it does when a
/// rename elsewhere raced a `..` in a symlink's target and the kernel could
/// not prove the walk stayed beneath the root. Bounded so a client cannot
/// keep the reactor retrying; past it the request gets `cannot read`.
const OPENAT2_TRIES: usize = 4;

/// Opens `name` under `root` (canonical) for reading, refusing anything that
/// is not a regular file inside the root. Same as [`open_beneath`] with
/// [`Resolution::Kernel`].
pub fn open_under(root: &Path, name: &[u8]) -> Result<(File, u64), Refusal> {
    open_beneath(root, name, Resolution::Kernel)
}

/// Opens `name` beneath `root` for reading, resolving it as `resolution`
/// says, then refuses anything but a regular file (checked with `fstat` on
/// the opened file, so it is the file that will be read).
///
/// Confinement is the kernel's, done during the open itself: no check of
/// a path string comes before it, so swapping a directory for a symlink
/// while a request is served cannot lead the open outside the root.
///
/// The root is opened afresh for each request: one more `open` per
/// connection, which is nothing next to the connection itself, and it
/// keeps [`ServiceConfig`] a plain path that is `Clone`, `Debug` and free
/// of fds. (Holding an fd would pin the directory the server started with
/// should the root path later be renamed; the operator owns that path, a
/// client cannot change it.)
pub fn open_beneath(
    root: &Path,
    name: &[u8],
    resolution: Resolution,
) -> Result<(File, u64), Refusal> {
    let relative = check_name(name)?;
    let root_dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(root)
        .map_err(|e| {
            warn!("files: cannot open the root {}: {e}", root.display());
            Refusal::Unreadable
        })?;
    let fd = match resolution {
        Resolution::Kernel => resolve_in_kernel(root_dir.as_fd(), name)
            .unwrap_or_else(|| walk(root_dir.as_fd(), relative, name.ends_with(b"/"))),
        Resolution::Walk => walk(root_dir.as_fd(), relative, name.ends_with(b"/")),
    }
    .map_err(|e| refusal_for(&e))?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|_| Refusal::Unreadable)?;
    if !meta.is_file() {
        return Err(Refusal::NotRegular);
    }
    Ok((file, meta.len()))
}

/// `openat2(root, name)` beneath `root`, without magic links (`/proc`'s
/// fd and exe links, which jump anywhere); `None` if the kernel lacks
/// `openat2` (`ENOSYS`) or a seccomp filter refuses it (`EPERM`). Not
/// remembered: on such a kernel each request pays one failed system call.
fn resolve_in_kernel(root: BorrowedFd<'_>, name: &[u8]) -> Option<io::Result<OwnedFd>> {
    // check_name has refused names containing NUL.
    let path = CString::new(name).expect("check_name refuses NUL bytes");
    let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    let mut tries = 0;
    loop {
        tries += 1;
        match sockopt::openat2(root, &path, FILE_FLAGS, resolve) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => return None,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < OPENAT2_TRIES => {}
            other => return Some(other),
        }
    }
}

/// The fallback: each directory component opened relative to the one
/// before it, with `O_PATH | O_NOFOLLOW` and checked by `fstat` to be a
/// directory (a symlink gives `ELOOP`, anything else `ENOTDIR`), the last
/// with `O_NOFOLLOW` (a symlink gives `ELOOP`). `O_PATH` rather than
/// `O_DIRECTORY | O_NOFOLLOW`, because with `O_DIRECTORY` the kernel reports
/// a symlink as `ENOTDIR`, and a symlink out would read `not found`.
/// `dir_wanted`: the name ended in `/`, so its last component must be a
/// directory (and is then refused as not regular), as for `openat2`.
fn walk(root: BorrowedFd<'_>, relative: &Path, dir_wanted: bool) -> io::Result<OwnedFd> {
    let mut parts = relative
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part),
            _ => None,
        })
        .peekable();
    let mut current: Option<File> = None;
    while let Some(part) = parts.next() {
        let at = current.as_ref().map_or(root, |dir| dir.as_fd());
        // check_name has refused names containing NUL.
        let part = CString::new(part.as_bytes()).expect("check_name refuses NUL bytes");
        if parts.peek().is_some() {
            let dir = File::from(sockopt::openat(at, &part, libc::O_PATH | libc::O_NOFOLLOW)?);
            let kind = dir.metadata()?.file_type();
            if kind.is_symlink() {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            if !kind.is_dir() {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            current = Some(dir);
        } else {
            let flags = FILE_FLAGS | libc::O_NOFOLLOW;
            current = Some(File::from(sockopt::openat(at, &part, flags)?));
        }
    }
    // No component but `.`: the root itself (then refused as not regular).
    let file = match current {
        Some(file) => file,
        None => File::from(root.try_clone_to_owned()?),
    };
    if dir_wanted && !file.metadata()?.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    Ok(file.into())
}

/// The refusal an open's error stands for.
fn refusal_for(e: &io::Error) -> Refusal {
    match e.raw_os_error() {
        // ENOTDIR: a component is not a directory, so no such file.
        Some(libc::ENOENT | libc::ENOTDIR) => Refusal::NotFound,
        // EXDEV: RESOLVE_BENEATH met a way out (a symlink out, an absolute
        // symlink). ELOOP: a magic link, a symlink the walk will not
        // follow, or a symlink loop.
        Some(libc::EXDEV | libc::ELOOP) => Refusal::Outside,
        // A component over NAME_MAX (255) bytes.
        Some(libc::ENAMETOOLONG) => Refusal::TooLong,
        _ => Refusal::Unreadable,
    }
}

/// The regular files under `root`, as sorted relative paths, one a line,
/// cut at [`MAX_LIST_BYTES`]. Symlinks are not followed.
pub fn list(root: &Path) -> Vec<u8> {
    let mut names = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    let mut bytes = 0;
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let relative = dir.join(entry.file_name());
            if kind.is_dir() {
                dirs.push(relative);
            } else if kind.is_file() {
                bytes += relative.as_os_str().len() + 1;
                if bytes > MAX_LIST_BYTES {
                    warn!("LIST of {} cut at {MAX_LIST_BYTES} bytes", root.display());
                    dirs.clear();
                    break;
                }
                names.push(relative);
            }
        }
    }
    names.sort();
    let mut out = Vec::with_capacity(bytes);
    for name in names {
        out.extend_from_slice(name.as_os_str().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Per-connection state.
#[derive(Debug, Default)]
pub struct Files {
    /// Set once the request has been read; later input is ignored.
    answered: bool,
    /// Small output still to send before the file (header, error, list).
    pending: Vec<u8>,
    pending_sent: usize,
    stream: Option<Stream>,
}

#[derive(Debug)]
struct Stream {
    file: File,
    /// Bytes still owed: the size found at open time, so a file that grows
    /// while being sent still matches the size announced.
    left: u64,
    name: String,
}

impl Files {
    /// The answer is not all in the send buffer yet.
    pub fn is_producing(&self) -> bool {
        self.pending_sent < self.pending.len() || self.stream.is_some()
    }

    /// Reads the request, then produces the answer as room allows.
    pub fn process(&mut self, io: &mut Io<'_>, config: &ServiceConfig) -> Outcome {
        if self.answered {
            let n = io.input.len();
            io.input.consume(n);
        } else {
            match self.take_request(io, config) {
                Some(()) => self.answered = true,
                None if io.eof => return Outcome::close_after_flush(),
                None => return Outcome::proceed(false),
            }
        }
        self.produce(io)
    }

    /// Answers the request if it is complete; `None` if more bytes are needed.
    fn take_request(&mut self, io: &mut Io<'_>, config: &ServiceConfig) -> Option<()> {
        let data = io.input.data();
        let peer = io.peer;
        let line = match data.iter().position(|&b| b == b'\n') {
            Some(pos) => &data[..pos],
            None if data.is_empty() => return None,
            // A request that fills the receive buffer without ending is
            // longer than the server holds: refused, never cut to fit.
            None if io.input.is_full() => {
                if data.starts_with(b"GET ") {
                    info!("files {peer}: GET refused: {}", Refusal::TooLong);
                    self.pending = format!("ERR {}\n", Refusal::TooLong).into_bytes();
                } else {
                    info!(
                        "files {peer}: request refused: {}; closing with no bytes",
                        Refusal::TooLong
                    );
                }
                io.input.clear();
                return Some(());
            }
            None if io.eof => data,
            None if io.burst_end && may_be_bare(data) => data,
            None => return None,
        };
        match Request::parse(line) {
            Request::List => {
                info!("files {peer}: LIST");
                self.pending = list(&config.root);
            }
            Request::Get(name) => match open_under(&config.root, name) {
                Ok((file, size)) => {
                    info!("files {peer}: GET {:?}: {size} bytes", lossy(name));
                    self.pending = format!("OK {size}\n").into_bytes();
                    self.stream = Some(Stream {
                        file,
                        left: size,
                        name: lossy(name),
                    });
                }
                Err(refusal) => {
                    info!("files {peer}: GET {:?} refused: {refusal}", lossy(name));
                    self.pending = format!("ERR {refusal}\n").into_bytes();
                }
            },
            Request::Bare(name) => match open_under(&config.root, name) {
                Ok((file, size)) => {
                    info!("files {peer}: {:?}: {size} bytes", lossy(name));
                    self.stream = Some(Stream {
                        file,
                        left: size,
                        name: lossy(name),
                    });
                }
                Err(refusal) => {
                    info!(
                        "files {peer}: {:?} refused: {refusal}; closing with no bytes",
                        lossy(name)
                    );
                }
            },
        }
        let n = io.input.len();
        io.input.consume(n);
        Some(())
    }

    fn produce(&mut self, io: &mut Io<'_>) -> Outcome {
        if self.pending_sent < self.pending.len() {
            self.pending_sent += io.write(&self.pending[self.pending_sent..]);
            if self.pending_sent < self.pending.len() {
                return Outcome::proceed(false);
            }
        }
        self.pending = Vec::new();
        let Some(stream) = &mut self.stream else {
            return Outcome::close_after_flush();
        };
        while stream.left > 0 && io.output_len() < io.low_watermark {
            let room = io.output_spare();
            let want = room
                .len()
                .min(usize::try_from(stream.left).unwrap_or(usize::MAX));
            match stream.file.read(&mut room[..want]) {
                Ok(0) => {
                    warn!(
                        "files {}: {:?} shrank while being sent, {} bytes short; resetting",
                        io.peer, stream.name, stream.left
                    );
                    self.stream = None;
                    return Outcome::abort();
                }
                Ok(n) => {
                    io.commit_output(n);
                    stream.left -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!(
                        "files {}: reading {:?} failed: {e}; resetting",
                        io.peer, stream.name
                    );
                    self.stream = None;
                    return Outcome::abort();
                }
            }
        }
        if stream.left > 0 && io.output_len() >= io.low_watermark {
            return Outcome::proceed(false);
        }
        debug!("files {}: {:?} queued in full", io.peer, stream.name);
        self.stream = None;
        Outcome::close_after_flush()
    }
}

/// Whether `data`, which ended a burst, is a whole bare-name request: not a
/// `GET`/`LIST` request, nor the first packet of one.
fn may_be_bare(data: &[u8]) -> bool {
    matches!(Request::parse(data), Request::Bare(_))
        && !b"GET ".starts_with(data)
        && !b"LIST".starts_with(data)
}

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::super::ServiceKind;
    use super::super::testing::{config_with_root, random_split, run};
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("tcp-reactor-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(fs::canonicalize(&dir).unwrap())
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
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
}
