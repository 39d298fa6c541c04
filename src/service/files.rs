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
//! names (pure checks first, in [`check_name`]) and reads the file in chunks
//! straight into the send buffer, and only while that buffer is below its low
//! watermark, so a 10 GB file costs no more memory than a 10 KB one. Those
//! reads are blocking, which is fine for local files and page-cache hits.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use log::{debug, info, warn};

use super::{Io, Outcome, ServiceConfig};

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

/// Opens `name` under `root` (canonical) for reading, refusing anything that
/// is not a regular file inside the root once symlinks are resolved.
pub fn open_under(root: &Path, name: &[u8]) -> Result<(File, u64), Refusal> {
    let relative = check_name(name)?;
    let resolved = fs::canonicalize(root.join(relative)).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Refusal::NotFound,
        _ => Refusal::Unreadable,
    })?;
    if !resolved.starts_with(root) {
        return Err(Refusal::Outside);
    }
    if !fs::metadata(&resolved)
        .map_err(|_| Refusal::NotFound)?
        .is_file()
    {
        return Err(Refusal::NotRegular);
    }
    // O_NONBLOCK: should the file be swapped for a FIFO after the check, the
    // open must not block the reactor. O_NOFOLLOW: nor for a symlink.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&resolved)
        .map_err(|_| Refusal::Unreadable)?;
    let meta = file.metadata().map_err(|_| Refusal::Unreadable)?;
    if !meta.is_file() {
        return Err(Refusal::NotRegular);
    }
    Ok((file, meta.len()))
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
}
