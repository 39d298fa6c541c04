//! `tcp-reactor top`: where every byte of every connection sits, from the
//! admin service's `watch` snapshots.
//!
//! - [`model`]: the snapshots parsed, rates, sort, filter, selection and a
//!   minute of history per connection (pure).
//! - [`text`]: the plain-text view and the `--stat` lines (pure).
//! - [`layout`]: how the full-screen view fits its terminal: columns that
//!   give way, fields that wrap, lines shared out (pure).
//! - [`screen`]: the full-screen view (`ratatui` on `crossterm`).
//!
//! This module does the I/O of the plain modes: it asks the admin service
//! for `watch MS` and reads one JSON line per interval ([`Feed`]), then
//! prints one view (`--once`, or whenever standard output is not a
//! terminal) or a line per interval (`--stat`).

pub mod layout;
pub mod model;
pub mod screen;
pub mod text;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{ClientError, Target, connect, socket_error};
use model::{Snapshot, Top};

/// What `top` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The full-screen view, on a terminal.
    Live,
    /// One plain-text view, then exit.
    Once,
    /// One line of totals per interval.
    Stat,
}

/// A resolved `top` command line.
#[derive(Clone, Debug)]
pub struct TopConfig {
    pub addr: Target,
    /// Between snapshots; within the admin service's `watch` range.
    pub interval: Duration,
    pub mode: Mode,
}

/// Longest snapshot line read. A row is about 900 bytes, so this holds
/// some 250,000 connections, beyond any `--max-conns` that fits in memory
/// here; it exists so that a peer that is not an admin service and streams
/// bytes without a newline cannot grow this program without bound.
pub const MAX_LINE: u64 = 256 << 20;

/// How long a silence from the server may last before `top` gives up:
/// generous, since a server with many connections renders a snapshot in
/// steps between its other work.
pub fn stall_timeout(interval: Duration) -> Duration {
    (interval * 4).max(Duration::from_secs(10))
}

/// The stream of snapshots from one admin connection.
pub struct Feed {
    addr: Target,
    reader: BufReader<TcpStream>,
    /// This end's address as the server sees it, to mark our own row.
    local: Option<SocketAddr>,
    /// A snapshot has been read: later parse failures are not "this is not
    /// an admin service".
    started: bool,
    stall: Duration,
    line: Vec<u8>,
}

impl Feed {
    /// Connects to `addr` and asks for a snapshot every `interval`.
    pub fn open(addr: &Target, interval: Duration) -> Result<Feed, ClientError> {
        let mut stream = connect(addr)?;
        let stall = stall_timeout(interval);
        stream
            .set_read_timeout(Some(stall))
            .and_then(|()| stream.set_write_timeout(Some(stall)))
            .map_err(|e| socket_error(&e))?;
        writeln!(stream, "watch {}", interval.as_millis()).map_err(|e| socket_error(&e))?;
        Ok(Feed {
            addr: addr.clone(),
            local: stream.local_addr().ok(),
            reader: BufReader::new(stream),
            started: false,
            stall,
            line: Vec::new(),
        })
    }

    /// This end of the connection, as the server lists it.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// The next snapshot; an error when the server closed, stalled, or
    /// sent something that is not one.
    pub fn next_snapshot(&mut self) -> Result<Snapshot, ClientError> {
        self.line.clear();
        let read = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut self.line);
        match read {
            Ok(0) if self.started => {
                return Err(ClientError::new("connection closed by server"));
            }
            Ok(0) => {
                return Err(ClientError::new(format!(
                    "{} closed the connection without a snapshot: not a tcp-reactor admin service?",
                    self.addr
                )));
            }
            Ok(_) if self.line.last() != Some(&b'\n') && self.line.len() as u64 == MAX_LINE => {
                return Err(ClientError::new(format!(
                    "{} sent a line longer than {} MiB: not a tcp-reactor admin service?",
                    self.addr,
                    MAX_LINE >> 20
                )));
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ClientError::new(format!(
                    "no snapshot from {} in {} s",
                    self.addr,
                    self.stall.as_secs()
                )));
            }
            Err(e) => return Err(socket_error(&e)),
        }
        let text = String::from_utf8_lossy(&self.line);
        match Snapshot::parse(text.trim_end()) {
            Ok(snapshot) => {
                self.started = true;
                Ok(snapshot)
            }
            Err(e) if self.started => Err(ClientError::new(format!(
                "a snapshot from {} does not parse: {e}",
                self.addr
            ))),
            Err(_) => {
                let shown: String = text.trim_end().chars().take(60).collect();
                Err(ClientError::new(format!(
                    "{} is not a tcp-reactor admin service with watch (it answered {shown:?})",
                    self.addr
                )))
            }
        }
    }
}

/// A fresh [`Top`] that knows which row is its own connection.
pub fn top_for(feed: &Feed) -> Top {
    let mut top = Top::new();
    top.own_peer = feed.local_addr().map(|a| a.to_string());
    top
}

/// Runs `top` as configured. The plain modes write to `out`; `Live` takes
/// the terminal (the caller checks that standard output is one).
pub fn run(config: &TopConfig, out: &mut impl Write) -> Result<(), ClientError> {
    let mut feed = Feed::open(&config.addr, config.interval)?;
    let result = match config.mode {
        Mode::Live => return screen::run(feed, &config.addr.to_string()),
        Mode::Once => once(config, &mut feed, out),
        Mode::Stat => stat(&mut feed, out),
    };
    match result {
        // The reader went away (`top --stat | head`): that ends the
        // program, quietly.
        Err(Ended::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(Ended::Output(e)) => Err(ClientError::new(format!("cannot write output: {e}"))),
        Err(Ended::Feed(e)) => Err(e),
        Ok(()) => Ok(()),
    }
}

/// Why a plain mode stopped.
enum Ended {
    Feed(ClientError),
    Output(io::Error),
}

impl From<ClientError> for Ended {
    fn from(e: ClientError) -> Ended {
        Ended::Feed(e)
    }
}

impl From<io::Error> for Ended {
    fn from(e: io::Error) -> Ended {
        Ended::Output(e)
    }
}

/// One view. It waits for a second snapshot, one interval after the
/// first, so that the rates are there.
fn once(config: &TopConfig, feed: &mut Feed, out: &mut impl Write) -> Result<(), Ended> {
    let mut top = top_for(feed);
    top.apply(feed.next_snapshot()?);
    top.apply(feed.next_snapshot()?);
    out.write_all(text::render(&top, &config.addr.to_string()).as_bytes())?;
    out.flush()?;
    Ok(())
}

/// A line per snapshot, from the second on (each needs rates), with the
/// column names every [`text::STAT_HEADER_EVERY`] lines.
fn stat(feed: &mut Feed, out: &mut impl Write) -> Result<(), Ended> {
    let mut top = top_for(feed);
    let mut printed = 0usize;
    loop {
        top.apply(feed.next_snapshot()?);
        let Some(line) = text::stat_line(&top) else {
            continue;
        };
        if printed.is_multiple_of(text::STAT_HEADER_EVERY) {
            writeln!(out, "{}", text::stat_header())?;
        }
        writeln!(out, "{line}")?;
        out.flush()?;
        printed += 1;
    }
}
