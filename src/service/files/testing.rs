//! Helpers for the files service's tests: a temporary directory, the
//! reference `LIST` of a real tree, and [`MemSource`], a [`FileSource`]
//! in memory that the protocol's own tests run on.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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
