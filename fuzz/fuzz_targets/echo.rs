//! Echo under arbitrary reads, burst ends, partial drains and a half-close:
//! every byte comes back once, in order, and nothing is lost in between.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcp_reactor::service::ServiceKind;
use tcp_reactor_fuzz::{State, config, run};

fuzz_target!(|data: &[u8]| {
    let root = std::path::Path::new("/nonexistent");
    let driver = run(ServiceKind::Echo, config(root), data, 1, &[], |d| {
        // Every byte taken in is in exactly one place: read by the client,
        // in the send buffer, or still in the receive buffer.
        let mut seen = d.output.clone();
        seen.extend_from_slice(d.send.data());
        seen.extend_from_slice(d.recv.data());
        assert_eq!(
            seen, d.input_log,
            "echo lost, duplicated or reordered bytes"
        );
        assert_ne!(d.state, State::Aborted);
    });
    assert_eq!(
        driver.output, driver.input_log,
        "echo output differs from its input"
    );
    assert_eq!(
        driver.state,
        State::Draining,
        "echo did not close after the half-close"
    );
});
