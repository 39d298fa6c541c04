//! The programs that talk to a server: the load generator (and, later, the
//! interactive and download clients the notes teach).

pub mod bench;
