//! `tcp-reactor top`: where every byte of every connection sits, from the
//! admin service's `watch` snapshots.
//!
//! - [`model`]: the snapshots parsed, rates, sort, filter, selection and a
//!   minute of history per connection (pure).
//! - [`text`]: the plain-text view and the `--stat` lines (pure).

pub mod model;
pub mod text;
