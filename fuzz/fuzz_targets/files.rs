//! The files service under arbitrary operation sequences against a small
//! tree with symlinks out of it: no byte from outside the root is ever
//! sent, and every whole answer is one the protocol allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcp_reactor::service::ServiceKind;
use tcp_reactor_fuzz::{SECRET_MARKER, State, config, run, tree};

const TOKENS: &[&[u8]] = &[
    b"GET ", b"LIST", b"\n", b"\r\n", b"a.txt", b"d/b.txt", b"d/e/c", b"in", b"out", b"d/e/out",
    b"d/up/", b"proc/", b"fifo", b"../", b"./", b"/", b"secret",
];

const REASONS: &[&str] = &[
    "not found",
    "not a regular file",
    "outside the root",
    "name too long",
    "bad name",
];

fuzz_target!(|data: &[u8]| {
    let tree = tree();
    let driver = run(
        ServiceKind::Files,
        config(&tree.root),
        data,
        1,
        TOKENS,
        |d| {
            let mut out = d.output.clone();
            out.extend_from_slice(d.send.data());
            assert!(
                !out.windows(SECRET_MARKER.len()).any(|w| w == SECRET_MARKER),
                "a byte from outside the root was served"
            );
            assert_ne!(
                d.state,
                State::Aborted,
                "nothing here shrinks or fails to read"
            );
        },
    );
    let out = driver.output;
    let mut allowed: Vec<Vec<u8>> = vec![Vec::new()];
    allowed.extend(REASONS.iter().map(|r| format!("ERR {r}\n").into_bytes()));
    let mut names: Vec<&str> = tree.files.iter().map(|(n, _)| *n).collect();
    names.sort();
    allowed.push(
        names
            .iter()
            .flat_map(|n| format!("{n}\n").into_bytes())
            .collect(),
    );
    for (_, body) in &tree.files {
        allowed.push(body.clone());
        let mut get = format!("OK {}\n", body.len()).into_bytes();
        get.extend_from_slice(body);
        allowed.push(get);
    }
    assert!(
        allowed.contains(&out),
        "not an answer the protocol allows: {:?}",
        String::from_utf8_lossy(&out)
    );
});
