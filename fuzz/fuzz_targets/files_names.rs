//! Names and request lines straight into the parsers and the opener:
//! `Request::parse` keeps its three forms apart, `check_name` passes only
//! short relative names of normal components without NUL, and whatever
//! `open_under` opens is one of the root's own regular files.
#![no_main]

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use tcp_reactor::service::files::{MAX_NAME, Request, check_name, open_under};
use tcp_reactor_fuzz::{SECRET_MARKER, tree};

fuzz_target!(|data: &[u8]| {
    let tree = tree();
    let line = data.strip_suffix(b"\r").unwrap_or(data);
    match Request::parse(data) {
        Request::List => assert_eq!(line, b"LIST"),
        Request::Get(name) => assert_eq!([b"GET ".as_slice(), name].concat(), line),
        Request::Bare(name) => {
            assert!(name == line && !line.starts_with(b"GET ") && line != b"LIST")
        }
    }
    if let Ok(path) = check_name(data) {
        assert!(!data.is_empty() && data.len() <= MAX_NAME && !data.contains(&0));
        assert!(
            path.components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)),
            "check_name passed {path:?}"
        );
    }
    if let Ok((mut file, size)) = open_under(&tree.root, data) {
        let meta = file.metadata().expect("fstat an open file");
        let inside = tree.files.iter().any(|(name, _)| {
            let m = std::fs::metadata(tree.root.join(Path::new(name))).expect("a tree file");
            (m.dev(), m.ino()) == (meta.dev(), meta.ino())
        });
        assert!(
            inside,
            "opened a file that is not the root's: {:?}",
            String::from_utf8_lossy(data)
        );
        let mut body = Vec::new();
        file.read_to_end(&mut body).expect("read a tree file");
        assert_eq!(body.len() as u64, size);
        assert!(
            !body
                .windows(SECRET_MARKER.len())
                .any(|w| w == SECRET_MARKER)
        );
    }
});
