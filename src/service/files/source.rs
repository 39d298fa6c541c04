//! What the files protocol needs of the files it serves: the
//! [`FileSource`] (open a name, walk the tree) and the answers it gives.
//!
//! Traits and plain types only, no I/O here: the file system's
//! implementation is [`super::fs`], the only part of the service that
//! touches files; the protocol's tests use one in memory.

use std::ffi::CStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

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

/// Where the files service finds what it serves: the files a `GET` (or a
/// bare name) downloads, and the directories a `LIST` walks.
pub trait FileSource {
    /// A file opened for a download.
    type File: SourceFile;
    /// A `LIST`'s reader of directories.
    type Dirs: DirSource;

    /// Opens `name`, as the client sent it, for a download: the file and
    /// its size now, or why it is refused. `peer` is for logs.
    fn open(&self, name: &[u8], peer: SocketAddr) -> Result<(Self::File, u64), Refusal>;

    /// A reader for one `LIST`, touching nothing yet.
    fn dirs(&self) -> Self::Dirs;
}

/// A file being downloaded: read into the send buffer, or sent by the
/// connection with `sendfile(2)` when it has a descriptor.
pub trait SourceFile: Read + fmt::Debug {
    /// The descriptor `sendfile(2)` reads from (its offset is where the
    /// next byte comes from); `None` if the file has none (in memory), and
    /// then it is read into the send buffer whatever `--sendfile` says.
    fn descriptor(&self) -> Option<BorrowedFd<'_>>;
}

impl SourceFile for File {
    fn descriptor(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

/// What a `LIST` reads the tree through, one directory at a time: only the
/// directory opened last is ever read (the walk reads a directory to its
/// end before it opens another), so a reader holds one directory's
/// reading state, whatever the depth.
pub trait DirSource: fmt::Debug {
    /// An open directory. On the file system it is a descriptor, so the
    /// ones a walk holds are what [`super::ListLimits::depth`] bounds.
    type Dir: fmt::Debug;

    /// The root's path, for logs.
    fn root(&self) -> &Path;

    /// Opens the root, to be read next.
    fn open_root(&mut self) -> io::Result<Self::Dir>;

    /// Opens `name`, a subdirectory read from `parent`, to be read next.
    /// Errors are the system's (`EMFILE`, `ENFILE`: out of descriptors;
    /// anything else: the directory is skipped).
    fn open_dir(&mut self, parent: &Self::Dir, name: &CStr) -> io::Result<Self::Dir>;

    /// One read of `dir`, the directory opened last: one entry, or
    /// nothing (an entry the answer never holds), or its end.
    fn read(&mut self, dir: &Self::Dir) -> io::Result<DirRead<'_>>;

    /// The walk is over, or cut: let go of the reading state's memory.
    fn release(&mut self);
}

/// What one [`DirSource::read`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirRead<'a> {
    /// A directory or a regular file the answer may hold: its name (one
    /// component, without NUL).
    Entry { name: &'a [u8], dir: bool },
    /// An entry the answer never holds: `.`, `..`, a dotfile without
    /// `--hidden`, a symlink, anything but a directory or a regular file.
    Skipped,
    /// The directory is read to its end.
    End,
}

/// A name as text for logs.
pub(crate) fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}
