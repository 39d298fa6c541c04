//! A `LIST` answer: the walk of the tree in the order of path components,
//! its bounds (names, bytes held, depth, reads per call) and its cut line,
//! over a [`DirSource`] that does the reading.
//!
//! No I/O here: the directories are opened and read through the
//! [`DirSource`] (the file system's is [`super::fs::FsDirs`]), and the
//! names go into the send buffer through [`Io`]. So every bound and cut is
//! tested in memory.

use std::ffi::{CStr, CString};
use std::io;
use std::net::SocketAddr;

use log::{debug, warn};

use super::source::{DirRead, DirSource, MAX_NAME, lossy};
use crate::service::Io;

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
/// Confinement is the [`DirSource`]'s: each subdirectory is opened
/// through it from its parent as read (the file system's opens it
/// relative to the parent's descriptor, without following a symlink; see
/// [`super::fs::FsDirs`]).
///
/// Memory: the send buffer, what the source reads with (the file system's:
/// one buffer of directory records, 8 KiB), plus the names of the
/// directories on the current path (one arena a directory and a 24-byte
/// index entry a name), never the whole answer. Bounded: what is held never passes
/// [`ListLimits::held_bytes`] (counted by length; the vectors' growth can
/// add as much again), a directory that would pass it ending the answer
/// there, since its names cannot be sent in order without all of them.
///
/// Descriptors: one open [`DirSource::Dir`] for each directory on the path
/// that still has a subdirectory to open (a directory lets it go once its
/// last subdirectory is opened), so at most [`ListLimits::depth`].
///
/// What is skipped: what the source skips ([`DirRead::Skipped`]: symlinks,
/// anything but directories and regular files, dotfiles without
/// `--hidden`), paths over [`MAX_NAME`] bytes (no `GET` could fetch them), and directories
/// that cannot be opened (no permission, gone, or no longer a directory;
/// logged at debug). What cuts the answer, with [`list_cut_line`] and its
/// reason: more than [`ListLimits::names`] names, more than
/// [`ListLimits::held_bytes`] held, a directory deeper than
/// [`ListLimits::depth`], and a directory that cannot be opened for lack
/// of descriptors (`EMFILE`, `ENFILE`), since skipping it would make a
/// short answer look whole.
#[derive(Debug)]
pub struct ListWalk<D: DirSource> {
    /// Opens and reads the directories.
    dirs: D,
    /// The directories on the current path, the root first. All but the
    /// last are fully read and sorted; the last may still be being read.
    /// Empty before the root is opened and once the walk is over.
    path: Vec<Level<D::Dir>>,
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
struct Level<T> {
    /// `ListWalk::current[..prefix_len]` is this directory's path.
    prefix_len: usize,
    /// The directory, open: read while `reading`, then kept to open its
    /// subdirectories from. `None` once no subdirectory is left to open.
    dir: Option<T>,
    /// The names read, back to back; `entries` index into it.
    names: Vec<u8>,
    entries: Vec<Entry>,
    /// The directory is still being read (through `ListWalk::dirs`).
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
pub(crate) struct Entry {
    start: usize,
    end: usize,
    dir: bool,
}

impl<T> Level<T> {
    fn new(prefix_len: usize, dir: T) -> Level<T> {
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

impl<D: DirSource> ListWalk<D> {
    /// A walk through `dirs` within `limits` (a `reads_per_call` or `depth`
    /// of 0 counts as 1). Touches nothing yet.
    pub fn new(dirs: D, limits: ListLimits) -> ListWalk<D> {
        ListWalk {
            dirs,
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
            // A DirSource's names hold no NUL (on the file system, they
            // come from the kernel's records, which end at one).
            let name = CString::new(level.name(entry)).expect("directory entry names hold no NUL");
            self.current.extend_from_slice(name.as_bytes());
            self.current.push(b'/');
            self.open(peer, Some(&name));
        } else if self.sent == self.limits.names {
            warn!(
                "files {peer}: LIST of {} cut at {} names",
                self.dirs.root().display(),
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

    /// One read of the last directory on the path: keeps the entry read
    /// if it is one the answer may hold; at the directory's end (or a
    /// failed read), sorts it.
    fn read_entry(&mut self, peer: SocketAddr) {
        let Some(level) = self.path.last_mut() else {
            return;
        };
        // A directory being read is open: `dir` goes only once it is read.
        let Some(dir) = level.dir.as_ref() else {
            level.read_to_end();
            return;
        };
        let (name, is_dir) = match self.dirs.read(dir) {
            Ok(DirRead::Entry { name, dir }) => (name, dir),
            Ok(DirRead::Skipped) => return,
            Ok(DirRead::End) => {
                level.read_to_end();
                return;
            }
            Err(e) => {
                debug!(
                    "files {peer}: LIST: reading {:?} failed: {e}; listing what was read",
                    lossy(&self.current)
                );
                level.read_to_end();
                return;
            }
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
    /// root when `name` is `None`, else `name` in the last directory on the
    /// path, from it. If it cannot be opened, takes `current` back to the
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
                // A parent keeps its directory open while it has
                // subdirectories to open, this one counted until now.
                let opened = match parent.dir.as_ref() {
                    Some(at) => self.dirs.open_dir(at, name),
                    None => Err(io::Error::from_raw_os_error(libc::EBADF)),
                };
                if parent.dirs_left == 0 {
                    parent.dir = None;
                }
                opened
            }
            _ => self.dirs.open_root(),
        };
        match opened {
            Ok(dir) => {
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

    /// Directories the walk holds open (descriptors, on the file system):
    /// what [`ListLimits::depth`] bounds.
    #[cfg(test)]
    pub(crate) fn descriptors(&self) -> usize {
        self.path.iter().filter(|level| level.dir.is_some()).count()
    }

    /// Directories on the current path, the root counting as one.
    #[cfg(test)]
    pub(crate) fn depth(&self) -> usize {
        self.path.len()
    }

    /// Reads the last call made.
    #[cfg(test)]
    pub(crate) fn reads(&self) -> usize {
        self.reads
    }

    /// Ends the answer with the cut line (saying `why` if given); what the
    /// path held, descriptors included, is let go.
    fn cut(&mut self, why: Option<&str>) {
        self.line = list_cut_line(self.sent, why);
        self.line_sent = 0;
        self.path.clear();
        self.current.clear();
        self.dirs.release();
        self.held = 0;
        self.finished = true;
    }
}

/// The walk over a tree in memory ([`super::testing::MemDirs`]): its
/// order, every bound and every cut, with no file touched.
#[cfg(test)]
mod tests {
    use super::super::FileSource;
    use super::super::testing::{MemSource, drive, limits};
    use super::*;

    /// `source`'s `LIST` within `limits`, through a send buffer of
    /// `send_cap` bytes drained by `drain` after each call.
    fn listed(source: &MemSource, limits: ListLimits, send_cap: usize, drain: usize) -> String {
        lossy(&drive(ListWalk::new(source.dirs(), limits), send_cap, drain).output)
    }

    /// A tree whose order by path component (`a/x` < `a-b` < `a.txt`) is
    /// not the byte order of the whole paths (`a-b` < `a.txt` < `a/x`),
    /// with an empty directory.
    fn tree() -> MemSource {
        let mut source = MemSource::with_files(&["a.txt", "a-b", "a/x", "a/y/z", "B", "c/d"]);
        source.dirs.insert(b"empty".to_vec());
        source
    }

    const ALL: &str = "B\na/x\na/y/z\na-b\na.txt\nc/d\n";

    #[test]
    fn names_come_in_the_order_of_their_path_components_whatever_the_room() {
        for (send_cap, drain, reads) in [(1, 1, 1), (3, 2, 2), (16, 5, 3), (4096, 4096, 512)] {
            let walked = listed(&tree(), limits(MAX_LIST_NAMES, reads), send_cap, drain);
            assert_eq!(walked, ALL, "send buffer {send_cap}, {reads} reads a call");
        }
    }

    #[test]
    fn a_list_past_its_names_ends_with_the_cut_line() {
        let lines: Vec<&str> = ALL.split_inclusive('\n').collect();
        for cap in [0, 1, 4, 5] {
            let walked = listed(&tree(), limits(cap, 2), 32, 7);
            let want = format!("{}\nERR list cut at {cap} names\n", lines[..cap].concat());
            assert_eq!(walked, want, "cap {cap}");
        }
        // At exactly as many names as the tree holds, nothing is cut.
        assert_eq!(listed(&tree(), limits(6, 2), 32, 7), ALL);
    }

    #[test]
    fn a_list_with_a_directory_larger_than_it_may_hold_is_cut_before_it() {
        // `a` then `b`, whose ten one-byte names are all read before any is
        // sent: what is held is the root's two names and b's ten.
        let names: Vec<String> = (0..10).map(|i| format!("b/{i}")).collect();
        let mut paths: Vec<&str> = names.iter().map(String::as_str).collect();
        paths.push("a");
        let source = MemSource::with_files(&paths);
        let entry = size_of::<Entry>();
        let all = 2 + 2 * entry + 10 * (1 + entry);
        let held = |held_bytes| ListLimits {
            held_bytes,
            ..limits(MAX_LIST_NAMES, 4)
        };
        assert_eq!(
            listed(&source, held(all - 1), 64, 64),
            "a\n\nERR list cut at 1 names\n"
        );
        let whole: String = ["a"]
            .iter()
            .chain(&paths[..10])
            .map(|n| format!("{n}\n"))
            .collect();
        assert_eq!(listed(&source, held(all), 64, 64), whole);
    }

    #[test]
    fn a_list_cut_lets_go_of_what_it_held() {
        let mut walk = ListWalk::new(tree().dirs(), limits(1, 1));
        let walked = drive_by_hand(&mut walk);
        assert_eq!(walked, "B\n\nERR list cut at 1 names\n");
        assert!(walk.dirs.released);
        assert_eq!((walk.descriptors(), walk.held), (0, 0));
    }

    /// Drives `walk` to its end, one read a call, through a roomy buffer.
    fn drive_by_hand(walk: &mut ListWalk<super::super::testing::MemDirs>) -> String {
        let peer = "127.0.0.1:4000".parse().expect("literal address");
        let mut pool = crate::buffer::BufPool::new(4096);
        let mut input = crate::buffer::ByteBuf::new(16);
        let mut output = crate::buffer::ByteBuf::new(4096);
        for _ in 0..10_000 {
            let now = std::time::Instant::now();
            let mut io = Io::new(&mut input, &mut output, &mut pool, peer, now);
            if walk.step(&mut io) == ListStep::Done {
                return lossy(output.data());
            }
        }
        panic!("the walk never ended");
    }

    #[test]
    fn a_directory_that_cannot_be_opened_for_lack_of_descriptors_cuts_the_answer() {
        for errno in [libc::EMFILE, libc::ENFILE] {
            let mut source = tree();
            source.open_errors.insert(b"a".to_vec(), errno);
            assert_eq!(
                listed(&source, limits(MAX_LIST_NAMES, 3), 64, 64),
                "B\n\nERR list cut at 1 names: out of file descriptors\n",
                "errno {errno}"
            );
        }
        // Out of descriptors at the root: nothing sent but the cut line.
        let mut source = tree();
        source.open_errors.insert(Vec::new(), libc::EMFILE);
        assert_eq!(
            listed(&source, limits(MAX_LIST_NAMES, 3), 64, 64),
            "\nERR list cut at 0 names: out of file descriptors\n"
        );
    }

    #[test]
    fn a_directory_that_cannot_be_opened_otherwise_is_skipped() {
        let mut source = tree();
        source.open_errors.insert(b"a/y".to_vec(), libc::EACCES);
        assert_eq!(
            listed(&source, limits(MAX_LIST_NAMES, 3), 64, 64),
            "B\na/x\na-b\na.txt\nc/d\n"
        );
        // A root that cannot be read: an empty answer, as before the split.
        let mut source = tree();
        source.open_errors.insert(Vec::new(), libc::ENOENT);
        assert_eq!(listed(&source, limits(MAX_LIST_NAMES, 3), 64, 64), "");
    }

    #[test]
    fn a_directory_whose_read_fails_lists_what_was_read() {
        // The source gives entries in reverse order: `y` is read, then the
        // read fails before `x`.
        let mut source = tree();
        source.read_errors.insert(b"a".to_vec(), 1);
        assert_eq!(
            listed(&source, limits(MAX_LIST_NAMES, 3), 64, 64),
            "B\na/y/z\na-b\na.txt\nc/d\n"
        );
    }

    #[test]
    fn a_list_deeper_than_its_depth_is_cut_where_the_deep_directory_sorts() {
        let source = MemSource::with_files(&["a/0", "a/b/c/f", "a/x", "z"]);
        let depth = |depth| ListLimits {
            depth,
            ..limits(MAX_LIST_NAMES, 2)
        };
        assert_eq!(
            listed(&source, depth(2), 64, 64),
            "a/0\n\nERR list cut at 1 names: deeper than 2 directories\n"
        );
        assert_eq!(listed(&source, depth(4), 64, 64), "a/0\na/b/c/f\na/x\nz\n");
    }

    #[test]
    fn no_call_reads_more_than_its_bound_and_a_walk_holds_a_directory_a_level() {
        for bound in [1, 4, 33] {
            let walked = drive(
                ListWalk::new(tree().dirs(), limits(MAX_LIST_NAMES, bound)),
                4096,
                4096,
            );
            assert_eq!(lossy(&walked.output), ALL, "bound {bound}");
            assert!(walked.most_reads <= bound, "bound {bound}");
            let spent = walked
                .steps
                .iter()
                .filter(|s| **s == ListStep::Spent)
                .count();
            assert_eq!(spent, walked.steps.len() - 1, "bound {bound}");
        }
        // At most two held open: while in `a/y`, the root (still to come
        // back to for `c` and `empty`) and `a/y` itself; `a` is let go once
        // its last subdirectory is open.
        let mut walk = ListWalk::new(tree().dirs(), limits(MAX_LIST_NAMES, 1));
        let mut most = 0;
        let peer = "127.0.0.1:4000".parse().expect("literal address");
        let mut pool = crate::buffer::BufPool::new(4096);
        let mut input = crate::buffer::ByteBuf::new(16);
        let mut output = crate::buffer::ByteBuf::new(4096);
        for _ in 0..10_000 {
            let now = std::time::Instant::now();
            let mut io = Io::new(&mut input, &mut output, &mut pool, peer, now);
            let step = walk.step(&mut io);
            most = most.max(walk.descriptors());
            if step == ListStep::Done {
                break;
            }
        }
        assert_eq!(lossy(output.data()), ALL);
        assert_eq!(most, 2);
    }
}
