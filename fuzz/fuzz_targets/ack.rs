//! Ack under arbitrary operation sequences: its output is only whole or
//! partly read `ok\n` replies, never more replies than bytes consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcp_reactor::service::ServiceKind;
use tcp_reactor_fuzz::{State, config, run};

const TOKENS: &[&[u8]] = &[b"\n", b"\r\n", b"exit", b"exit\n", b"x"];

fuzz_target!(|data: &[u8]| {
    let root = std::path::Path::new("/nonexistent");
    // The server refuses a send buffer that cannot hold one reply.
    let driver = run(ServiceKind::Ack, config(root), data, 3, TOKENS, |d| {
        let mut out = d.output.clone();
        out.extend_from_slice(d.send.data());
        assert!(
            out.chunks(3).all(|c| b"ok\n".starts_with(c)),
            "ack wrote something but replies: {out:?}"
        );
        let replies = out.len().div_ceil(3);
        let consumed = d.input_log.len() - d.recv.len();
        assert!(
            replies <= consumed,
            "{replies} replies for {consumed} bytes"
        );
        assert_ne!(d.state, State::Aborted);
    });
    assert_eq!(driver.output.len() % 3, 0, "a reply left half-sent");
});
