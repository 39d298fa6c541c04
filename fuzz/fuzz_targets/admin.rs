//! Admin under arbitrary operation sequences, its queries answered by a
//! stand-in reactor: no panic, one query at a time (the driver checks), and
//! every answer is one the service or the reactor gave.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcp_reactor::service::ServiceKind;
use tcp_reactor_fuzz::{State, config, run};

const TOKENS: &[&[u8]] = &[
    b"stats", b"clients", b" json", b"help", b"quit", b"exit", b"\n", b"\r\n", b" ",
];

fuzz_target!(|data: &[u8]| {
    let root = std::path::Path::new("/nonexistent");
    let driver = run(ServiceKind::Admin, config(root), data, 1, TOKENS, |d| {
        assert_ne!(d.state, State::Aborted);
    });
    let text = String::from_utf8(driver.output).expect("admin answers are text");
    for line in text.lines() {
        assert!(
            line.starts_with("STATS ")
                || line.starts_with("ROW ")
                || line.starts_with("ERR ")
                || line.starts_with("commands:")
                || line.starts_with("  "),
            "unexpected admin line {line:?}"
        );
    }
});
