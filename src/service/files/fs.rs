//! The files service's file system half: confinement beneath the root
//! (the pure name checks, then the kernel's own resolution), the dotfile
//! rule as it applies to names, and the descriptor-based walk a `LIST`
//! reads the tree through. The only part of the service that touches
//! files; the raw calls (`openat2`, `openat`, `getdents64`, `fstatat`)
//! are [`crate::sys`]'s.
//!
//! [`FsSource`] is the [`FileSource`] the server runs with; the protocol
//! ([`super`]) knows nothing of descriptors but [`super::SourceFile::descriptor`],
//! for `sendfile(2)`. Reads are blocking, which is fine for local files and
//! page-cache hits; a `LIST` reads a bounded number of entries per call
//! (see [`super::ListLimits`]).

use std::ffi::{CStr, CString, OsStr};
use std::fs::{File, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use log::{info, warn};

use super::source::{DirRead, DirSource, FileSource, MAX_NAME, Refusal, lossy};
use crate::sys::{self, EntryKind};

#[cfg(test)]
mod tests;

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
    root: &Path,
    hidden: bool,
    name: &[u8],
    peer: SocketAddr,
) -> Result<(File, u64), Refusal> {
    let path = check_name(name)?;
    if !hidden && is_hidden(path) {
        info!(
            "files {peer}: {:?} is a dotfile; refused as not found (--hidden serves it)",
            lossy(name)
        );
        return Err(Refusal::NotFound);
    }
    open_under(root, name)
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
/// keeps [`crate::service::ServiceConfig`] a plain path that is `Clone`, `Debug` and free
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

/// The files the server serves: those beneath `--root`, dotfiles only
/// with `--hidden`. Borrowed from the settings for one call of the
/// service, so it costs nothing to make.
#[derive(Clone, Copy, Debug)]
pub struct FsSource<'a> {
    /// The root, canonical (absolute, no symlinks).
    pub root: &'a Path,
    /// Serve and list names with a component that starts with `.`.
    pub hidden: bool,
}

impl FileSource for FsSource<'_> {
    type File = File;
    type Dirs = FsDirs;

    fn open(&self, name: &[u8], peer: SocketAddr) -> Result<(File, u64), Refusal> {
        open_served(self.root, self.hidden, name, peer)
    }

    fn dirs(&self) -> FsDirs {
        FsDirs::new(self.root, self.hidden)
    }
}

/// A `LIST`'s reader of the tree beneath a root: each subdirectory opened
/// relative to its parent's descriptor, one component at a time and
/// without following a symlink (`O_NOFOLLOW`), and read from its own
/// descriptor with `getdents64`; no path string is ever resolved but the
/// root's, which is the operator's. So a directory renamed away and
/// replaced by a symlink while a `LIST` runs cannot lead the walk out of
/// the root: the open fails and the entry is skipped.
///
/// An entry's kind is its own, never a symlink's target's: the record's
/// `d_type`, or `fstatat` without following where the file system gives
/// none.
#[derive(Debug)]
pub struct FsDirs {
    root: PathBuf,
    /// List and descend into names starting with `.` (`--hidden`).
    hidden: bool,
    /// Directory records of the directory opened last, while it is read:
    /// `records[records_at..records_len]` are not taken apart yet.
    /// [`LIST_RECORD_BYTES`] long once a directory is opened, empty before
    /// and once released.
    records: Vec<u8>,
    records_at: usize,
    records_len: usize,
}

impl FsDirs {
    /// A reader of the tree under `root`, naming dotfiles only if
    /// `hidden`. Touches nothing yet.
    pub fn new(root: &Path, hidden: bool) -> FsDirs {
        FsDirs {
            root: root.to_path_buf(),
            hidden,
            records: Vec::new(),
            records_at: 0,
            records_len: 0,
        }
    }

    /// `dir` was just opened, to be read next.
    fn opened(&mut self, dir: OwnedFd) -> OwnedFd {
        if self.records.is_empty() {
            self.records = vec![0; LIST_RECORD_BYTES];
        }
        self.records_at = 0;
        self.records_len = 0;
        dir
    }
}

impl DirSource for FsDirs {
    type Dir = OwnedFd;

    fn root(&self) -> &Path {
        &self.root
    }

    fn open_root(&mut self) -> io::Result<OwnedFd> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&self.root)?;
        Ok(self.opened(dir.into()))
    }

    fn open_dir(&mut self, parent: &OwnedFd, name: &CStr) -> io::Result<OwnedFd> {
        let dir = sys::openat(parent.as_fd(), name, LIST_DIR_FLAGS)?;
        Ok(self.opened(dir))
    }

    /// Takes the next record (reading more records first if none is
    /// left).
    fn read(&mut self, dir: &OwnedFd) -> io::Result<DirRead<'_>> {
        let dir = dir.as_fd();
        if self.records_at >= self.records_len {
            self.records_at = 0;
            self.records_len = 0;
            match sys::read_dir_entries(dir, &mut self.records)? {
                0 => return Ok(DirRead::End),
                n => self.records_len = n,
            }
        }
        let Some((record, len)) =
            sys::next_dir_entry(&self.records[self.records_at..self.records_len])
        else {
            // Never from the kernel; taken as the end of these records.
            self.records_at = self.records_len;
            return Ok(DirRead::Skipped);
        };
        self.records_at += len;
        let name = record.name.to_bytes();
        if name == b"." || name == b".." || (!self.hidden && name.starts_with(b".")) {
            return Ok(DirRead::Skipped);
        }
        let kind = match record.kind {
            EntryKind::Unknown => sys::kind_at(dir, record.name).unwrap_or(EntryKind::Other),
            kind => kind,
        };
        Ok(match kind {
            EntryKind::Dir => DirRead::Entry { name, dir: true },
            EntryKind::File => DirRead::Entry { name, dir: false },
            EntryKind::Other | EntryKind::Unknown => DirRead::Skipped,
        })
    }

    fn release(&mut self) {
        self.records = Vec::new();
    }
}
