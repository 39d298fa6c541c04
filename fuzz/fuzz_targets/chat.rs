//! Chat under arbitrary operation sequences and broadcast room: every
//! broadcast chunk is whole `[PEER] ` lines, each the next line the client
//! sent (its `\r\n` or `\n` made `\n`, a partial line only at half-close),
//! the sender itself is told nothing but `ERR line too long`, and input is
//! consumed exactly as far as the chunk's lines reach.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcp_reactor::service::chat::LINE_TOO_LONG;
use tcp_reactor::service::{Effect, Next, ServiceKind};
use tcp_reactor_fuzz::{Driver, PEER, State, config, run};

const TOKENS: &[&[u8]] = &[b"\n", b"\r\n", b"\r", b"hello"];

fn check(d: &mut Driver) {
    let prefix = format!("[{PEER}] ");
    for call in d.calls.drain(..) {
        let Some(Effect::Broadcast(chunk)) = &call.outcome.effect else {
            if call.outcome.next == Next::Continue {
                assert_eq!(
                    call.after_len,
                    call.before.len(),
                    "input dropped unbroadcast"
                );
            }
            continue;
        };
        assert!(!chunk.is_empty(), "an empty broadcast");
        assert!(chunk.ends_with(b"\n"), "a chunk cut inside a line");
        let mut rest: &[u8] = &call.before;
        for line in chunk[..chunk.len() - 1].split(|&b| b == b'\n') {
            let body = line
                .strip_prefix(prefix.as_bytes())
                .unwrap_or_else(|| panic!("a line without the sender's prefix: {line:?}"));
            // The input line this one stands for.
            let sent = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => &rest[..=at],
                None => {
                    assert!(call.eof, "a partial line broadcast before half-close");
                    rest
                }
            };
            rest = &rest[sent.len()..];
            let sent = sent.strip_suffix(b"\n").unwrap_or(sent);
            let sent = sent.strip_suffix(b"\r").unwrap_or(sent);
            // A line may hold a newline of its own only as its last byte, so
            // the split above stands for the input's lines.
            assert_eq!(body, sent, "a broadcast line differs from the line sent");
        }
        // Consumed exactly the lines broadcast (a refusal clears the rest).
        if call.outcome.next == Next::Continue || call.eof {
            assert_eq!(
                call.after_len,
                rest.len(),
                "input consumed past the lines broadcast"
            );
        }
    }
    let mut out = d.output.clone();
    out.extend_from_slice(d.send.data());
    assert!(
        LINE_TOO_LONG.starts_with(&out),
        "chat wrote {out:?} to its sender"
    );
    assert_ne!(d.state, State::Aborted);
}

fuzz_target!(|data: &[u8]| {
    let root = std::path::Path::new("/nonexistent");
    // Send buffers too small for the refusal cut it (`--send-buf` below 18
    // bytes): not what this target checks.
    let driver = run(
        ServiceKind::Chat,
        config(root),
        data,
        LINE_TOO_LONG.len(),
        TOKENS,
        check,
    );
    assert_eq!(
        driver.state,
        State::Draining,
        "chat did not close at half-close"
    );
});
