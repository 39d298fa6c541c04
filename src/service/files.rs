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
//! - `LIST`: the regular files under the root, one relative path a line,
//!   sorted by path component, then close; past [`MAX_LIST_NAMES`] names,
//!   or when the server cannot go on (out of descriptors, a tree deeper
//!   than [`MAX_LIST_DEPTH`]), the answer ends with an empty line and
//!   `ERR list cut at N names`, with the reason after a colon in the second
//!   case (see [`list_cut_line`]).
//!
//! Dotfiles: a name with a component that starts with `.` (`.git/config`,
//! `sub/.env`) is neither listed nor served unless `--hidden`
//! ([`ServiceConfig::hidden`]); asked for, it gets `ERR not found` (the
//! bare form: nothing), as a missing file does, so whether it exists is not
//! shown. With the default `--root .`, a checkout's `.git/` and CI
//! settings would otherwise be downloadable.
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
//! A `LIST` walks the tree by descriptors ([`ListWalk`]): each directory
//! opened relative to its parent's, without following a symlink, and read
//! through its own descriptor, so a directory swapped for a symlink
//! mid-walk cannot lead it out. Names are produced
//! only while the send buffer is below its low watermark, and at most
//! [`LIST_READS_PER_CALL`] entries are read per call before the service
//! yields its turn, so a large tree neither stalls the other clients nor
//! sits in memory. Those reads are blocking, which is fine for local files
//! and page-cache hits.

use std::ffi::{CStr, CString, OsStr};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use log::{debug, info, warn};

use super::{Io, Outcome, ServiceConfig};
use crate::sys::{self, EntryKind};

/// Longest name accepted, in bytes (Linux's PATH_MAX).
pub const MAX_NAME: usize = 4096;

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

/// Whether `path` (as [`check_name`] passed it) names a dotfile, or
/// something under a dot-directory: a component that starts with `.`. A
/// leading `./` is the root itself, not one.
pub fn is_hidden(path: &Path) -> bool {
    path.components()
        .any(|c| matches!(c, Component::Normal(part) if part.as_bytes().starts_with(b".")))
}

/// Opens `name` as the service serves it: [`open_under`] the root, but a
/// dotfile ([`is_hidden`]) is refused as `not found` without `--hidden`,
/// before any lookup, so the answer does not tell whether it exists.
///
/// The rule is on the name asked for: a symlink of the root's whose own
/// name is plain is served wherever inside the root it leads, dotfiles
/// included, as a link the operator made.
pub fn open_served(
    config: &ServiceConfig,
    name: &[u8],
    peer: SocketAddr,
) -> Result<(File, u64), Refusal> {
    let path = check_name(name)?;
    if !config.hidden && is_hidden(path) {
        info!(
            "files {peer}: {:?} is a dotfile; refused as not found (--hidden serves it)",
            lossy(name)
        );
        return Err(Refusal::NotFound);
    }
    open_under(&config.root, name)
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
        match sys::openat2(root, &path, FILE_FLAGS, resolve) {
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
            let dir = File::from(sys::openat(at, &part, libc::O_PATH | libc::O_NOFOLLOW)?);
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
            current = Some(File::from(sys::openat(at, &part, flags)?));
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
        // A read-only open gives ENXIO for a Unix socket and for a device
        // with no driver behind it: neither is a regular file.
        Some(libc::ENXIO) => Refusal::NotRegular,
        _ => Refusal::Unreadable,
    }
}

/// Most directory entries a `LIST` reads, counting each directory opened
/// as one (an empty directory costs an open and no entry), in one service
/// call. The whole walk of 50,000 files took the one thread about 50 ms
/// (about 1 µs an entry); 512 keeps one call near half a millisecond, so
/// every other client waits at most that long per LIST connection per turn.
pub const LIST_READS_PER_CALL: usize = 512;

/// Most names one `LIST` sends. Bounds the time (a read, a sort and a line
/// a name) and the bytes sent (a path a name) one request can make the
/// server spend, whatever the tree holds.
pub const MAX_LIST_NAMES: usize = 100_000;

/// Most bytes of names (and their index) one `LIST` holds at once: the
/// directories on its current path (see [`ListWalk`]). Many LIST clients
/// may each hold this at the same time, since they walk across turns;
/// 4 MiB holds a directory of about 100,000 names of 16 bytes.
pub const MAX_LIST_HELD_BYTES: usize = 4 << 20;

/// Most directories on a `LIST`'s current path, the root counting as one;
/// a directory deeper than that cuts the answer where it sorts. Every
/// directory on the path that still has a subdirectory to open holds its
/// descriptor (the walk opens each directory relative to its parent's,
/// never by a path string), so this bounds the descriptors one `LIST`
/// holds: a few such clients must not take the descriptors every other
/// connection needs. 64 is several times the depth of a Linux source
/// tree (13) or a `node_modules` (about 20).
pub const MAX_LIST_DEPTH: usize = 64;

/// Bytes of directory records one `LIST` reads per `getdents64` call: one
/// buffer a walk, since only the deepest directory on its path is ever
/// being read. 8 KiB holds about 250 records of 16-byte names (glibc's
/// `readdir`, which the walk used before, takes 32 KiB a directory), and
/// is far above the one record (280 bytes at most) a call needs.
const LIST_RECORD_BYTES: usize = 8 << 10;

/// Flags of a subdirectory's open during a `LIST` (the call adds
/// `O_CLOEXEC`). `O_NOFOLLOW`: a subdirectory swapped for a symlink since
/// its parent was read fails to open (`ELOOP`, or `ENOTDIR` as
/// `O_DIRECTORY` reports it) instead of leading out; the name is one
/// component, taken from the parent's own records, so no other part of it
/// could be a link.
const LIST_DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

/// The bounds of one [`ListWalk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListLimits {
    /// Names sent before the answer is cut.
    pub names: usize,
    /// Bytes of names (with their index entries) held at once; a directory
    /// that would take the walk past it cuts the answer.
    pub held_bytes: usize,
    /// Entries read, and directories opened, per call.
    pub reads_per_call: usize,
    /// Directories on the current path, the root included; one deeper
    /// cuts the answer.
    pub depth: usize,
}

impl ListLimits {
    /// What the server uses.
    pub const SERVED: ListLimits = ListLimits {
        names: MAX_LIST_NAMES,
        held_bytes: MAX_LIST_HELD_BYTES,
        reads_per_call: LIST_READS_PER_CALL,
        depth: MAX_LIST_DEPTH,
    };
}

/// A `LIST` in progress: a depth-first walk of the tree under the root, each
/// directory read in full, sorted by name (bytes), and its entries emitted
/// in that order, descending into each directory where it sorts. So the
/// names come out in the order of their path components (what sorting the
/// whole list of paths gives), while the server holds only the directories
/// on the current path.
///
/// Confinement: every subdirectory is opened relative to its parent's
/// descriptor, one component at a time and without following a symlink
/// (`O_NOFOLLOW`), and read from its own descriptor; no path string
/// is ever resolved but the root's. So a directory renamed away and
/// replaced by a symlink while a `LIST` runs cannot lead the walk out of
/// the root: the open fails and the entry is skipped.
///
/// Memory: the send buffer, one buffer of directory records
/// (8 KiB), plus the names of the directories on the
/// current path (one arena a directory and a 24-byte index entry a name),
/// never the whole answer. Bounded: what is held never passes
/// [`ListLimits::held_bytes`] (counted by length; the vectors' growth can
/// add as much again), a directory that would pass it ending the answer
/// there, since its names cannot be sent in order without all of them.
///
/// Descriptors: one for each directory on the path that still has a
/// subdirectory to open (a directory lets its descriptor go once its last
/// subdirectory is opened), so at most [`ListLimits::depth`].
///
/// What is skipped, all as the entry's own type says (the record's
/// `d_type`, or `fstatat` without following where the file system has
/// none): symlinks (never followed), anything but directories and regular
/// files, names starting with `.` (unless `hidden`: `--hidden`), paths
/// over [`MAX_NAME`] bytes (no `GET` could fetch them), and directories
/// that cannot be opened (no permission, gone, or no longer a directory;
/// logged at debug). What cuts the answer, with [`list_cut_line`] and its
/// reason: more than [`ListLimits::names`] names, more than
/// [`ListLimits::held_bytes`] held, a directory deeper than
/// [`ListLimits::depth`], and a directory that cannot be opened for lack
/// of descriptors (`EMFILE`, `ENFILE`), since skipping it would make a
/// short answer look whole.
#[derive(Debug)]
pub struct ListWalk {
    root: PathBuf,
    /// List and descend into names starting with `.` (`--hidden`).
    hidden: bool,
    /// The directories on the current path, the root first. All but the
    /// last are fully read and sorted; the last may still be being read.
    /// Empty before the root is opened and once the walk is over.
    path: Vec<Level>,
    /// The last directory's path relative to the root, ending in `/` (empty
    /// for the root itself): what each of its names is prefixed with.
    /// Under [`MAX_NAME`] bytes, since no deeper directory is entered.
    current: Vec<u8>,
    /// The root has been opened (or failed to): an empty `path` then means
    /// the walk is over.
    started: bool,
    /// Bytes of names and index entries held in `path`, never more than
    /// `limits.held_bytes`.
    held: usize,
    /// Names emitted so far, never more than `limits.names`.
    sent: usize,
    /// [`ListLimits::SERVED`] but in tests.
    limits: ListLimits,
    /// Entries read and directories opened in the current call, never more
    /// than `limits.reads_per_call`.
    reads: usize,
    /// Directory records of the last directory on `path` while it is
    /// being read: `records[records_at..records_len]` are not taken apart
    /// yet. [`LIST_RECORD_BYTES`] long once the root is opened, empty
    /// before.
    records: Vec<u8>,
    records_at: usize,
    records_len: usize,
    /// The line being emitted (a name and its newline, or the cut line);
    /// `line[line_sent..]` is not yet in the send buffer. One line's worth
    /// (about `PATH_MAX` bytes at most), reused for each name.
    line: Vec<u8>,
    line_sent: usize,
    /// Nothing left to emit once `line` is sent: the walk ended or was cut.
    finished: bool,
}

/// One directory on the current path.
#[derive(Debug)]
struct Level {
    /// `ListWalk::current[..prefix_len]` is this directory's path.
    prefix_len: usize,
    /// The directory, open: read while `reading`, then kept to open its
    /// subdirectories from. `None` once no subdirectory is left to open.
    dir: Option<OwnedFd>,
    /// The names read, back to back; `entries` index into it.
    names: Vec<u8>,
    entries: Vec<Entry>,
    /// The directory is still being read (through `ListWalk::records`).
    /// Once it is read to its end, `entries` are sorted.
    reading: bool,
    /// Directories among `entries[next..]`: when it reaches 0 with the
    /// directory read, `dir` is let go.
    dirs_left: usize,
    /// Entries before this one are emitted (or descended into); only moves
    /// once `reading` is over.
    next: usize,
}

/// A name in [`Level::names`]: `names[start..end]`, a directory or a
/// regular file (nothing else is kept).
#[derive(Clone, Copy, Debug)]
struct Entry {
    start: usize,
    end: usize,
    dir: bool,
}

impl Level {
    fn new(prefix_len: usize, dir: OwnedFd) -> Level {
        Level {
            prefix_len,
            dir: Some(dir),
            names: Vec::new(),
            entries: Vec::new(),
            reading: true,
            dirs_left: 0,
            next: 0,
        }
    }

    fn name(&self, entry: Entry) -> &[u8] {
        &self.names[entry.start..entry.end]
    }

    /// The directory is read to its end: its entries are sorted, and its
    /// descriptor let go if it has no subdirectory to open.
    fn read_to_end(&mut self) {
        self.reading = false;
        let names = &self.names;
        self.entries
            .sort_unstable_by(|a, b| names[a.start..a.end].cmp(&names[b.start..b.end]));
        if self.dirs_left == 0 {
            self.dir = None;
        }
    }
}

/// The last line of a `LIST` cut after `names` names: an empty line (never
/// a name, since every name listed is a non-empty path), then `ERR list cut
/// at N names`, followed by `: WHY` when the cut is not one of the
/// answer's own bounds (names, bytes held) but the server's state, such as
/// `out of file descriptors`. The empty line is what tells it from a file
/// of that name.
pub fn list_cut_line(names: usize, why: Option<&str>) -> Vec<u8> {
    match why {
        None => format!("\nERR list cut at {names} names\n").into_bytes(),
        Some(why) => format!("\nERR list cut at {names} names: {why}\n").into_bytes(),
    }
}

/// Why [`ListWalk::step`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListStep {
    /// The whole answer is in the send buffer.
    Done,
    /// The send buffer is at its low watermark: call again once it drains.
    Full,
    /// This call's reads are spent: call again next turn.
    Spent,
}

impl ListWalk {
    /// A walk of `root` within `limits` (a `reads_per_call` or `depth` of 0
    /// counts as 1), naming dotfiles only if `hidden`. Touches nothing yet.
    pub fn new(root: &Path, limits: ListLimits, hidden: bool) -> ListWalk {
        ListWalk {
            root: root.to_path_buf(),
            hidden,
            path: Vec::new(),
            current: Vec::new(),
            started: false,
            held: 0,
            sent: 0,
            limits: ListLimits {
                reads_per_call: limits.reads_per_call.max(1),
                depth: limits.depth.max(1),
                ..limits
            },
            reads: 0,
            records: Vec::new(),
            records_at: 0,
            records_len: 0,
            line: Vec::new(),
            line_sent: 0,
            finished: false,
        }
    }

    /// Walks on, emitting names into the send buffer while it is below its
    /// low watermark (a call that finds it at or above emits nothing), for
    /// at most `limits.reads_per_call` reads.
    pub fn step(&mut self, io: &mut Io<'_>) -> ListStep {
        self.reads = 0;
        loop {
            let line_left = self.line_sent < self.line.len();
            if self.finished && !line_left {
                return ListStep::Done;
            }
            if io.output_len() >= io.low_watermark {
                return ListStep::Full;
            }
            if line_left {
                self.line_sent += io.write(&self.line[self.line_sent..]);
                if self.line_sent < self.line.len() {
                    // The buffer is full (whatever the watermark says).
                    return ListStep::Full;
                }
                continue;
            }
            if self.reads >= self.limits.reads_per_call {
                return ListStep::Spent;
            }
            self.advance(io.peer);
        }
    }

    /// One move of the walk: read one entry, emit one name (into `line`),
    /// open one directory, or leave one that is done.
    fn advance(&mut self, peer: SocketAddr) {
        let Some(level) = self.path.last_mut() else {
            if self.started {
                self.finished = true;
            } else {
                self.started = true;
                self.open(peer, None);
            }
            return;
        };
        if level.reading {
            self.reads += 1;
            self.read_entry(peer);
            return;
        }
        let Some(&entry) = level.entries.get(level.next) else {
            self.held -= level.names.len() + level.entries.len() * size_of::<Entry>();
            self.path.pop();
            self.current
                .truncate(self.path.last().map_or(0, |parent| parent.prefix_len));
            return;
        };
        level.next += 1;
        if entry.dir {
            level.dirs_left -= 1;
            // Names come from the kernel's records, which end at a NUL.
            let name = CString::new(level.name(entry)).expect("directory entry names hold no NUL");
            self.current.extend_from_slice(name.as_bytes());
            self.current.push(b'/');
            self.open(peer, Some(&name));
        } else if self.sent == self.limits.names {
            warn!(
                "files {peer}: LIST of {} cut at {} names",
                self.root.display(),
                self.sent
            );
            self.cut(None);
        } else {
            self.sent += 1;
            self.line.clear();
            self.line.extend_from_slice(&self.current);
            self.line.extend_from_slice(level.name(entry));
            self.line.push(b'\n');
            self.line_sent = 0;
        }
    }

    /// Takes the next record of the last directory on the path (reading
    /// more records first if none is left), and keeps its name if it is
    /// one the answer may hold; at the directory's end, sorts it.
    fn read_entry(&mut self, peer: SocketAddr) {
        let Some(level) = self.path.last_mut() else {
            return;
        };
        // A directory being read is open: `dir` goes only once it is read.
        let Some(dir) = level.dir.as_ref().map(AsFd::as_fd) else {
            level.read_to_end();
            return;
        };
        if self.records_at >= self.records_len {
            self.records_at = 0;
            self.records_len = 0;
            match sys::read_dir_entries(dir, &mut self.records) {
                Ok(0) => {
                    level.read_to_end();
                    return;
                }
                Ok(n) => self.records_len = n,
                Err(e) => {
                    debug!(
                        "files {peer}: LIST: reading {:?} failed: {e}; listing what was read",
                        lossy(&self.current)
                    );
                    level.read_to_end();
                    return;
                }
            }
        }
        let Some((record, len)) =
            sys::next_dir_entry(&self.records[self.records_at..self.records_len])
        else {
            // Never from the kernel; taken as the end of these records.
            self.records_at = self.records_len;
            return;
        };
        self.records_at += len;
        let name = record.name.to_bytes();
        if name == b"." || name == b".." || (!self.hidden && name.starts_with(b".")) {
            return;
        }
        let kind = match record.kind {
            EntryKind::Unknown => sys::kind_at(dir, record.name).unwrap_or(EntryKind::Other),
            kind => kind,
        };
        let is_dir = match kind {
            EntryKind::Dir => true,
            EntryKind::File => false,
            EntryKind::Other | EntryKind::Unknown => return,
        };
        // A file's path, or a directory's with `/` and at least one byte
        // of a name under it, past MAX_NAME: no GET could fetch it.
        if self.current.len() + name.len() + if is_dir { 2 } else { 0 } > MAX_NAME {
            debug!(
                "files {peer}: LIST: skipping {:?}{:?}: its path is over {MAX_NAME} bytes",
                lossy(&self.current),
                lossy(name)
            );
            return;
        }
        let cost = name.len() + size_of::<Entry>();
        if self.held + cost > self.limits.held_bytes {
            warn!(
                "files {peer}: LIST: {:?} takes the walk past {} bytes held; \
                 cut after {} names",
                lossy(&self.current),
                self.limits.held_bytes,
                self.sent
            );
            self.cut(None);
            return;
        }
        let start = level.names.len();
        level.names.extend_from_slice(name);
        level.entries.push(Entry {
            start,
            end: level.names.len(),
            dir: is_dir,
        });
        level.dirs_left += usize::from(is_dir);
        self.held += cost;
    }

    /// Opens the directory at `current` as the new end of the path: the
    /// root (by its path, the operator's) when `name` is `None`, else
    /// `name` in the last directory on the path, relative to its
    /// descriptor. If it cannot be opened, takes `current` back to the
    /// last one, or cuts the answer (see [`ListWalk`]). One read.
    fn open(&mut self, peer: SocketAddr, name: Option<&CStr>) {
        self.reads += 1;
        if self.path.len() >= self.limits.depth {
            warn!(
                "files {peer}: LIST: {:?} is deeper than {} directories; cut after {} names",
                lossy(&self.current),
                self.limits.depth,
                self.sent
            );
            let why = format!("deeper than {} directories", self.limits.depth);
            self.cut(Some(&why));
            return;
        }
        let opened = match (name, self.path.last_mut()) {
            (Some(name), Some(parent)) => {
                // A parent keeps its descriptor while it has
                // subdirectories to open, this one counted until now.
                let at = parent.dir.as_ref().map(AsFd::as_fd);
                let opened = at
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
                    .and_then(|at| sys::openat(at, name, LIST_DIR_FLAGS));
                if parent.dirs_left == 0 {
                    parent.dir = None;
                }
                opened
            }
            _ => OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY)
                .open(&self.root)
                .map(OwnedFd::from),
        };
        match opened {
            Ok(dir) => {
                if self.records.is_empty() {
                    self.records = vec![0; LIST_RECORD_BYTES];
                }
                self.records_at = 0;
                self.records_len = 0;
                self.path.push(Level::new(self.current.len(), dir));
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                warn!(
                    "files {peer}: LIST: cannot open {:?}: {e}; cut after {} names",
                    lossy(&self.current),
                    self.sent
                );
                self.cut(Some("out of file descriptors"));
            }
            Err(e) => {
                debug!(
                    "files {peer}: LIST: skipping {:?}: {e}",
                    lossy(&self.current)
                );
                self.current
                    .truncate(self.path.last().map_or(0, |parent| parent.prefix_len));
            }
        }
    }

    /// Descriptors the walk holds: what [`ListLimits::depth`] bounds.
    #[cfg(test)]
    fn descriptors(&self) -> usize {
        self.path.iter().filter(|level| level.dir.is_some()).count()
    }

    /// Ends the answer with the cut line (saying `why` if given); what the
    /// path held, descriptors included, is let go.
    fn cut(&mut self, why: Option<&str>) {
        self.line = list_cut_line(self.sent, why);
        self.line_sent = 0;
        self.path.clear();
        self.current.clear();
        self.records = Vec::new();
        self.held = 0;
        self.finished = true;
    }
}

/// Per-connection state.
#[derive(Debug, Default)]
pub struct Files {
    /// Set once the request has been read; later input is ignored.
    answered: bool,
    /// Small output still to send before the file (header, error).
    pending: Vec<u8>,
    pending_sent: usize,
    stream: Option<Stream>,
    /// A `LIST` still walking the tree.
    list: Option<ListWalk>,
    /// Leading bytes of the request already searched and found to hold no
    /// newline, so a request sent a byte at a time is not searched again
    /// from its start on every read.
    scanned: usize,
    /// The request did not arrive whole within `--request-timeout`: only
    /// `pending` (the `ERR` line, or nothing) is sent, and the reactor
    /// ends the connection.
    timed_out: bool,
}

#[derive(Debug)]
struct Stream {
    file: File,
    /// Bytes still owed: the size found at open time, so a file that grows
    /// while being sent still matches the size announced.
    left: u64,
    name: String,
    /// Sent with `sendfile(2)` by the connection (see [`Files::zero_copy`])
    /// instead of read into the send buffer here.
    zero_copy: bool,
    /// The connection's TCP segment size (MSS) as the connection last told
    /// it ([`Files::set_segment`]); 0 until then. Chunks are cut to whole
    /// segments (see [`file_chunk`]). It changes under way: on loopback
    /// it starts at 47,616 bytes and grows to 65,483 as the client's window
    /// opens, so the connection asks again before each batch of chunks.
    segment: usize,
}

/// How much of `want` bytes of a download to read or send in one go, with
/// `left` still owed: whole TCP segments of `segment` bytes
/// ([`crate::buffer::whole_segments`]), but for the end of the file, which
/// goes as it is.
pub fn file_chunk(want: usize, left: u64, segment: usize) -> usize {
    if left <= want as u64 {
        return want;
    }
    crate::buffer::whole_segments(want, segment)
}

impl Files {
    /// The file region the connection is to send with `sendfile(2)`, once
    /// the header before it is out: the file's descriptor (its offset is
    /// where the next byte comes from) and the bytes still owed.
    pub fn zero_copy(&self) -> Option<(std::os::fd::BorrowedFd<'_>, u64, usize)> {
        use std::os::fd::AsFd;
        let stream = self.stream.as_ref().filter(|s| s.zero_copy && s.left > 0)?;
        (self.pending_sent >= self.pending.len())
            .then(|| (stream.file.as_fd(), stream.left, stream.segment))
    }

    /// A download is under way: it cuts its chunks to the connection's
    /// segment size.
    pub fn needs_segment(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.left > 0)
    }

    /// The connection's TCP segment size, for [`file_chunk`].
    pub fn set_segment(&mut self, segment: usize) {
        if let Some(stream) = &mut self.stream {
            stream.segment = segment.max(1);
        }
    }

    /// `n` bytes of the zero-copy region went to the socket.
    pub fn zero_copy_sent(&mut self, n: usize) {
        if let Some(stream) = &mut self.stream {
            stream.left = stream.left.saturating_sub(n as u64);
        }
    }

    /// The answer is not all in the send buffer yet.
    pub fn is_producing(&self) -> bool {
        self.pending_sent < self.pending.len() || self.stream.is_some() || self.list.is_some()
    }

    /// No request has arrived whole yet: the reactor holds this wait to
    /// `--request-timeout`.
    pub fn awaiting_request(&self) -> bool {
        !self.answered
    }

    /// The request did not arrive whole in time; `received` is what came.
    /// A `GET` or `LIST` is answered `ERR request timeout`; anything else is
    /// taken for a bare name, whose client gets no bytes, as on any failure.
    pub fn time_out_request(&mut self, received: &[u8]) {
        if received.starts_with(b"GET ") || received.starts_with(b"LIST") {
            self.pending = b"ERR request timeout\n".to_vec();
        }
        self.answered = true;
        self.timed_out = true;
    }

    /// Reads the request, then produces the answer as room allows.
    pub fn process(&mut self, io: &mut Io<'_>, config: &ServiceConfig) -> Outcome {
        if self.timed_out {
            // Only the timeout's answer is sent; the reactor ends the
            // connection once it is out.
            io.input.clear();
            self.pending_sent += io.write(&self.pending[self.pending_sent..]);
            return Outcome::proceed(false);
        }
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
        let from = self.scanned.min(data.len());
        let newline = memchr::memchr(b'\n', &data[from..]).map(|at| from + at);
        self.scanned = data.len();
        let line = match newline {
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
                self.list = Some(ListWalk::new(
                    &config.root,
                    ListLimits::SERVED,
                    config.hidden,
                ));
            }
            Request::Get(name) => match open_served(config, name, peer) {
                Ok((file, size)) => {
                    info!("files {peer}: GET {:?}: {size} bytes", lossy(name));
                    self.pending = format!("OK {size}\n").into_bytes();
                    self.stream = Some(Stream {
                        file,
                        left: size,
                        name: lossy(name),
                        zero_copy: config.sendfile,
                        segment: 0,
                    });
                }
                Err(refusal) => {
                    info!("files {peer}: GET {:?} refused: {refusal}", lossy(name));
                    self.pending = format!("ERR {refusal}\n").into_bytes();
                }
            },
            Request::Bare(name) => match open_served(config, name, peer) {
                Ok((file, size)) => {
                    info!("files {peer}: {:?}: {size} bytes", lossy(name));
                    self.stream = Some(Stream {
                        file,
                        left: size,
                        name: lossy(name),
                        zero_copy: config.sendfile,
                        segment: 0,
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
        if let Some(list) = &mut self.list {
            return match list.step(io) {
                ListStep::Done => {
                    debug!("files {}: LIST queued in full", io.peer);
                    self.list = None;
                    Outcome::close_after_flush()
                }
                ListStep::Full => Outcome::proceed(false),
                ListStep::Spent => Outcome::yield_turn(),
            };
        }
        let Some(stream) = &mut self.stream else {
            return Outcome::close_after_flush();
        };
        if stream.zero_copy {
            // The connection sends it; done once nothing is owed.
            if stream.left > 0 {
                return Outcome::proceed(false);
            }
            debug!("files {}: {:?} sent in full", io.peer, stream.name);
            self.stream = None;
            return Outcome::close_after_flush();
        }
        while stream.left > 0 && io.output_len() < io.low_watermark {
            let room = io.output_spare();
            let want = file_chunk(
                room.len()
                    .min(usize::try_from(stream.left).unwrap_or(usize::MAX)),
                stream.left,
                stream.segment,
            );
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
    use super::super::testing::{config_with_root, random_split, run};
    use super::super::{Next, Service, ServiceKind};
    use super::*;
    use crate::buffer::{BufPool, ByteBuf};
    use std::fs;
    use std::time::Instant;

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

    /// The old `LIST`: the whole tree read, every path sorted, then sent
    /// (without its byte cap), dotfiles only if `hidden`. The reference
    /// the walk must match.
    fn whole_tree_sort(root: &Path, hidden: bool) -> Vec<u8> {
        let mut names = Vec::new();
        let mut dirs = vec![PathBuf::new()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = fs::read_dir(root.join(&dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if !hidden && entry.file_name().as_bytes().starts_with(b".") {
                    continue;
                }
                let relative = dir.join(entry.file_name());
                if kind.is_dir() {
                    dirs.push(relative);
                } else if kind.is_file() {
                    names.push(relative);
                }
            }
        }
        names.sort();
        let mut out = Vec::new();
        for name in names {
            out.extend_from_slice(name.as_os_str().as_bytes());
            out.push(b'\n');
        }
        out
    }

    /// A tree whose sorted order is not the byte order of whole paths
    /// (`a/x` before `a.txt`, `a-b` before both), with nested and empty
    /// directories, a symlink to a file and one to a directory (neither
    /// followed), a FIFO (not regular), a name that is not UTF-8, dotfiles
    /// (one that starts with `...`, one in a dot-directory), and 40 files
    /// in one directory.
    fn generated_tree(root: &Path) {
        use std::os::unix::fs::symlink;
        for dir in [
            "a",
            "a/deeper/deepest",
            "b",
            "empty",
            "c/empty-too",
            "many",
            ".dot",
        ] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        for file in [
            "a.txt",
            "a-b",
            "B",
            "a/x",
            "a/deeper/y",
            "a/deeper/deepest/z",
            "b/...list cut",
            "top",
            ".top",
            ".dot/inner",
        ] {
            fs::write(root.join(file), b"").unwrap();
        }
        fs::write(root.join(OsStr::from_bytes(b"b/\xffbytes")), b"").unwrap();
        for i in 0..40 {
            fs::write(root.join(format!("many/f{}", (i * 17) % 40)), b"").unwrap();
        }
        symlink("top", root.join("link-to-file")).unwrap();
        symlink("a", root.join("link-to-dir")).unwrap();
        assert!(
            std::process::Command::new("mkfifo")
                .arg(root.join("b/fifo"))
                .status()
                .unwrap()
                .success()
        );
    }

    /// The served limits with `names` and `reads_per_call` as given.
    fn limits(names: usize, reads_per_call: usize) -> ListLimits {
        ListLimits {
            names,
            reads_per_call,
            ..ListLimits::SERVED
        }
    }

    /// What driving a walk by hand showed.
    struct Walked {
        output: Vec<u8>,
        steps: Vec<ListStep>,
        /// The most reads any one call made.
        most_reads: usize,
    }

    /// Drives `walk` to its end with a send buffer of `send_cap` bytes,
    /// moving `drain` bytes out of it after each call (a slow peer), and
    /// checks on every call that nothing is produced at or above the low
    /// watermark.
    fn drive(mut walk: ListWalk, send_cap: usize, drain: usize) -> Walked {
        let peer: SocketAddr = "127.0.0.1:4000".parse().expect("literal address");
        let mut pool = BufPool::new(send_cap);
        let mut input = ByteBuf::new(16);
        let mut output = ByteBuf::new(send_cap);
        let low_watermark = send_cap / 4 + 1;
        let mut walked = Walked {
            output: Vec::new(),
            steps: Vec::new(),
            most_reads: 0,
        };
        for _ in 0..1_000_000 {
            let before = output.len();
            let mut io = Io::new(&mut input, &mut output, &mut pool, peer, Instant::now());
            io.low_watermark = low_watermark;
            let step = walk.step(&mut io);
            if before >= low_watermark {
                assert_eq!(output.len(), before, "produced at the watermark");
            }
            walked.most_reads = walked.most_reads.max(walk.reads);
            walked.steps.push(step);
            let n = output.len().min(drain);
            walked.output.extend_from_slice(&output.data()[..n]);
            output.consume(n);
            if step == ListStep::Done {
                walked.output.extend_from_slice(output.data());
                return walked;
            }
        }
        panic!("the walk never ended");
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
            let walk = ListWalk::new(&dir.0, limits(MAX_LIST_NAMES, reads), hidden);
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
            let walk = ListWalk::new(&dir.0, limits(MAX_LIST_NAMES, bound), true);
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
    fn a_list_past_its_cap_ends_with_the_cut_line() {
        let dir = TempDir::new("list-cut");
        generated_tree(&dir.0);
        let expected = whole_tree_sort(&dir.0, true);
        let lines: Vec<&[u8]> = expected.split_inclusive(|&b| b == b'\n').collect();
        for cap in [0, 1, 5, 12] {
            let walked = drive(ListWalk::new(&dir.0, limits(cap, 3), true), 32, 7);
            let mut want = lines[..cap].concat();
            want.extend_from_slice(format!("\nERR list cut at {cap} names\n").as_bytes());
            assert_eq!(lossy(&walked.output), lossy(&want), "cap {cap}");
        }
        // At exactly as many names as the tree holds, nothing is cut.
        let walked = drive(ListWalk::new(&dir.0, limits(lines.len(), 3), true), 32, 7);
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
        let entry = size_of::<Entry>();
        let held_bytes = 2 + 2 * entry + 9 * (1 + entry);
        let walk = ListWalk::new(
            &dir.0,
            ListLimits {
                held_bytes,
                ..limits(MAX_LIST_NAMES, 4)
            },
            true,
        );
        let walked = drive(walk, 64, 64);
        assert_eq!(lossy(&walked.output), "a\n\nERR list cut at 1 names\n");
        // With room for the tenth, all are sent.
        let walk = ListWalk::new(
            &dir.0,
            ListLimits {
                held_bytes: held_bytes + 1 + entry,
                ..limits(MAX_LIST_NAMES, 4)
            },
            true,
        );
        assert!(drive(walk, 64, 64).output == whole_tree_sort(&dir.0, true));
    }

    #[test]
    fn a_list_of_a_root_that_cannot_be_read_is_empty() {
        let walked = drive(
            ListWalk::new(Path::new("/nonexistent/root"), ListLimits::SERVED, false),
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
        let walked = drive(ListWalk::new(&dir.0, depth(2), false), 64, 64);
        assert_eq!(
            lossy(&walked.output),
            "a/0\n\nERR list cut at 1 names: deeper than 2 directories\n"
        );
        let walked = drive(ListWalk::new(&dir.0, depth(4), false), 64, 64);
        assert!(walked.output == whole_tree_sort(&dir.0, false));
    }

    /// The most descriptors `walk` held between any two of its calls, one
    /// read a call, and what it sent.
    fn most_descriptors(mut walk: ListWalk) -> (usize, Vec<u8>) {
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
        let walk = ListWalk::new(&chain.0, limits(MAX_LIST_NAMES, 1), false);
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
        let walk = ListWalk::new(&forks.0, limits(MAX_LIST_NAMES, 1), false);
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
        let mut walk = ListWalk::new(&root, limits(MAX_LIST_NAMES, 1), false);
        let mut swapped = false;
        for _ in 0..1_000 {
            let mut io = Io::new(&mut input, &mut output, &mut pool, peer, Instant::now());
            io.low_watermark = 1 << 14;
            if walk.step(&mut io) == ListStep::Done {
                break;
            }
            // Once the root is read (and the walk in `a`), `z` goes.
            if !swapped && walk.path.len() == 2 {
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
}
