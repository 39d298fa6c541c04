//! Helpers for the files service's tests: a temporary directory, the
//! reference `LIST` of a real tree, and [`MemSource`], a [`FileSource`]
//! in memory that the protocol's own tests run on.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, OsStr};
use std::fs;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{
    DirRead, DirSource, FileSource, Files, ListLimits, ListStep, ListWalk, Refusal, SourceFile,
};
use crate::buffer::{BufPool, ByteBuf};
use crate::service::{Io, Next};

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("tcp-reactor-{tag}-{}", std::process::id()));
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

/// The old `LIST`: the whole tree read, every path sorted, then sent
/// (without its byte cap), dotfiles only if `hidden`. The reference
/// the walk must match.
pub(crate) fn whole_tree_sort(root: &Path, hidden: bool) -> Vec<u8> {
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
pub(crate) fn generated_tree(root: &Path) {
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
pub(crate) fn limits(names: usize, reads_per_call: usize) -> ListLimits {
    ListLimits {
        names,
        reads_per_call,
        ..ListLimits::SERVED
    }
}

/// What driving a walk by hand showed.
pub(crate) struct Walked {
    pub(crate) output: Vec<u8>,
    pub(crate) steps: Vec<ListStep>,
    /// The most reads any one call made.
    pub(crate) most_reads: usize,
}

/// Drives `walk` to its end with a send buffer of `send_cap` bytes,
/// moving `drain` bytes out of it after each call (a slow peer), and
/// checks on every call that nothing is produced at or above the low
/// watermark.
pub(crate) fn drive<D: DirSource>(mut walk: ListWalk<D>, send_cap: usize, drain: usize) -> Walked {
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
        walked.most_reads = walked.most_reads.max(walk.reads());
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

/// A tree in memory, and the faults a test puts in it: the [`FileSource`]
/// the protocol's tests run on. Directories are those the files' paths
/// pass through, and `dirs`.
#[derive(Clone, Debug, Default)]
pub(crate) struct MemSource {
    /// Regular files by path (components joined by `/`), with their bytes.
    pub(crate) files: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Directories with nothing in them.
    pub(crate) dirs: BTreeSet<Vec<u8>>,
    /// Names whose open is refused so, whatever the tree holds.
    pub(crate) refusals: BTreeMap<Vec<u8>, Refusal>,
    /// Files whose size is announced this much larger than their bytes:
    /// they shrink while being sent.
    pub(crate) shrunk_by: BTreeMap<Vec<u8>, u64>,
    /// Directories (the root is the empty path) whose open fails with this
    /// `errno`.
    pub(crate) open_errors: BTreeMap<Vec<u8>, i32>,
    /// Directories whose read fails (`EIO`) after this many entries.
    pub(crate) read_errors: BTreeMap<Vec<u8>, usize>,
}

impl MemSource {
    /// A tree of these files, each holding its own path as bytes.
    pub(crate) fn with_files(paths: &[&str]) -> MemSource {
        let files = paths
            .iter()
            .map(|p| (p.as_bytes().to_vec(), p.as_bytes().to_vec()))
            .collect();
        MemSource {
            files,
            ..MemSource::default()
        }
    }

    /// The entries of the directory at `path` (empty for the root): each
    /// name once, and whether it is a directory; in reverse order, so the
    /// walk's own sort is what puts them in order.
    fn children(&self, path: &[u8]) -> Vec<(Vec<u8>, bool)> {
        let mut children = BTreeMap::new();
        for full in self.files.keys().chain(self.dirs.iter()) {
            let rest = if path.is_empty() {
                &full[..]
            } else if let Some(rest) = full
                .strip_prefix(path)
                .and_then(|rest| rest.strip_prefix(b"/"))
            {
                rest
            } else {
                continue;
            };
            if rest.is_empty() {
                continue;
            }
            let (name, below) = match rest.iter().position(|&b| b == b'/') {
                Some(at) => (&rest[..at], true),
                None => (rest, self.dirs.contains(full)),
            };
            let dir = children.entry(name.to_vec()).or_insert(false);
            *dir |= below;
        }
        children.into_iter().rev().collect()
    }

    fn is_dir(&self, path: &[u8]) -> bool {
        path.is_empty()
            || self.dirs.contains(path)
            || self
                .files
                .keys()
                .any(|f| f.strip_prefix(path).is_some_and(|r| r.starts_with(b"/")))
    }
}

impl FileSource for MemSource {
    type File = MemFile;
    type Dirs = MemDirs;

    fn open(&self, name: &[u8], _peer: SocketAddr) -> Result<(MemFile, u64), Refusal> {
        if let Some(&refusal) = self.refusals.get(name) {
            return Err(refusal);
        }
        match self.files.get(name) {
            Some(bytes) => {
                let size = bytes.len() as u64 + self.shrunk_by.get(name).copied().unwrap_or(0);
                let file = MemFile {
                    bytes: bytes.clone(),
                    at: 0,
                };
                Ok((file, size))
            }
            None if self.is_dir(name) => Err(Refusal::NotRegular),
            None => Err(Refusal::NotFound),
        }
    }

    fn dirs(&self) -> MemDirs {
        MemDirs {
            tree: self.clone(),
            reading: Vec::new(),
            at: 0,
            read_error_at: None,
            released: false,
        }
    }
}

/// A file in memory: no descriptor, so never sent by `sendfile(2)`.
#[derive(Debug)]
pub(crate) struct MemFile {
    bytes: Vec<u8>,
    at: usize,
}

impl Read for MemFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.bytes.len() - self.at);
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl SourceFile for MemFile {
    fn descriptor(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// A [`MemSource`]'s directories as a `LIST` reads them.
#[derive(Debug)]
pub(crate) struct MemDirs {
    tree: MemSource,
    /// The entries of the directory opened last; `reading[at..]` not read.
    reading: Vec<(Vec<u8>, bool)>,
    at: usize,
    /// The read that fails with `EIO`, if the directory has one.
    read_error_at: Option<usize>,
    /// [`DirSource::release`] was called.
    pub(crate) released: bool,
}

/// An open directory in memory: its path from the root.
#[derive(Debug)]
pub(crate) struct MemDir(Vec<u8>);

impl MemDirs {
    fn open(&mut self, path: Vec<u8>) -> io::Result<MemDir> {
        if let Some(&errno) = self.tree.open_errors.get(&path) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.reading = self.tree.children(&path);
        self.at = 0;
        self.read_error_at = self.tree.read_errors.get(&path).copied();
        Ok(MemDir(path))
    }
}

impl DirSource for MemDirs {
    type Dir = MemDir;

    fn root(&self) -> &Path {
        Path::new("(memory)")
    }

    fn open_root(&mut self) -> io::Result<MemDir> {
        self.open(Vec::new())
    }

    fn open_dir(&mut self, parent: &MemDir, name: &CStr) -> io::Result<MemDir> {
        let mut path = parent.0.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name.to_bytes());
        self.open(path)
    }

    fn read(&mut self, _dir: &MemDir) -> io::Result<DirRead<'_>> {
        if self.read_error_at == Some(self.at) {
            self.at = self.reading.len();
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let Some((name, dir)) = self.reading.get(self.at) else {
            return Ok(DirRead::End);
        };
        self.at += 1;
        Ok(DirRead::Entry { name, dir: *dir })
    }

    fn release(&mut self) {
        self.reading = Vec::new();
        self.released = true;
    }
}

/// What serving one connection from a [`MemSource`] gave.
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) output: Vec<u8>,
    /// How it ended: `CloseAfterFlush`, `Abort`, or `Continue` if it is
    /// still waiting for input.
    pub(crate) next: Next,
    /// Calls that yielded their turn with more to do.
    pub(crate) yields: usize,
}

/// Serves `request` from `source` as the reactor would: the request
/// arrives in one read that ends a burst, then (if `eof`) the client
/// half-closes; output drained after every call through a send buffer of
/// `send_cap` bytes. `before` runs on the state first (a timeout). With
/// `--sendfile` on, which a file in memory (no descriptor) never uses.
pub(crate) fn serve(
    source: &MemSource,
    request: &[u8],
    eof: bool,
    send_cap: usize,
    before: impl FnOnce(&mut Files<MemFile, MemDirs>),
) -> Served {
    let peer: SocketAddr = "127.0.0.1:4000".parse().expect("literal address");
    let mut files = Files::<MemFile, MemDirs>::default();
    before(&mut files);
    let mut recv_pool = BufPool::new(256);
    let mut send_pool = BufPool::new(send_cap);
    let mut input = ByteBuf::new(256);
    let mut output = ByteBuf::new(send_cap);
    assert_eq!(input.append(&mut recv_pool, request), request.len());
    let mut served = Served {
        output: Vec::new(),
        next: Next::Continue,
        yields: 0,
    };
    // Bounded: a 64 KiB answer through a 1-byte buffer, and then some.
    for call in 0..200_000 {
        let mut io = Io::new(
            &mut input,
            &mut output,
            &mut send_pool,
            peer,
            Instant::now(),
        );
        io.low_watermark = send_cap / 4 + 1;
        io.burst_end = call == 0;
        io.eof = eof && call > 0;
        let outcome = files.serve(&mut io, source, true);
        served.output.extend_from_slice(output.data());
        let n = output.len();
        output.consume(n);
        served.next = outcome.next;
        served.yields += usize::from(outcome.yielded);
        if outcome.next != Next::Continue {
            return served;
        }
        let more = outcome.output_blocked || outcome.yielded || files.is_producing();
        if !more && (!eof || call > 0) {
            return served;
        }
    }
    panic!("the service never finished");
}
