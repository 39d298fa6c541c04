//! What is observed of the server, in one place: the counters
//! ([`stats`]), their Prometheus form ([`metrics`]), the process's own
//! figures ([`process`]), one connection as `clients` shows it and the
//! rule naming what holds it back ([`clients`]), and the kernel's view of a
//! TCP connection ([`tcp`]).
//!
//! Below the services and the hub: it imports nothing of theirs (only
//! [`crate::sys`] for the two reads of the kernel, `TCP_INFO` and
//! `/proc`'s descriptor limit), so the admin service and the hub can both
//! use it without a cycle. It decides nothing: it counts, reads and
//! renders.

pub mod clients;
pub mod metrics;
pub mod process;
pub mod stats;
pub mod tcp;
