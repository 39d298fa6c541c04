//! The files service: download a file from under `--root`.
//!
//! Requests (one per connection), ending at `\n`, at the client's half-close,
//! or, for a bare name only, at the end of a burst:
//! - `NAME`: the file's bytes, then close; on any failure, close with no
//!   bytes (the notes' client then saves nothing) and log why;
//!
//! A request longer than the receive buffer is refused as `name too long`
//! (never cut to what fits). A download that cannot complete (the file
//! shrank, a read failed) ends with [`Outcome::abort`]: a reset, so a client
//! with no size header cannot save a truncated file as a whole one.
//!
//! - `GET NAME`: `OK <size>\n`, the bytes, close; or `ERR <reason>\n`, close;
//! - `LIST`: the regular files under the root, one relative path a line,
//!   sorted by path component, then close; past [`MAX_LIST_NAMES`] names,
//!   or when the server cannot go on (out of descriptors, a tree deeper
//!   than [`MAX_LIST_DEPTH`]), the answer ends with an empty line and
//!   `ERR list cut at N names`, with the reason after a colon in the second
//!   case (see [`list_cut_line`]).
//!
//! Dotfiles: a name with a component that starts with `.` (`.git/config`,
//! `sub/.env`) is neither listed nor served unless `--hidden`
//! ([`ServiceConfig::hidden`]); asked for, it gets `ERR not found` (the
//! bare form: nothing), as a missing file does, so whether it exists is not
//! shown. With the default `--root .`, a checkout's `.git/` and CI
//! settings would otherwise be downloadable.
//!
//! `GET` and `LIST` wait for their newline (or half-close) even when the
//! socket runs dry, so a request split across packets is never cut short;
//! only the bare form, whose client sends no newline, ends at a burst (and
//! not while what arrived could still be the start of `GET ` or `LIST`).
//!
//! Two halves:
//! - this module and [`list`]: the protocol (requests, answers, the `LIST`
//!   walk's order, bounds and cut line, streaming), over a [`FileSource`]
//!   ([`source`]). No I/O here: tested in memory with a fake source.
//! - [`fs`]: the file system ([`FsSource`]), the only part that touches
//!   files: names resolved beneath the root (pure checks first, in
//!   [`check_name`], then the kernel's own resolution, in
//!   [`open_beneath`]), the dotfile rule on names, and the walk by
//!   descriptors ([`FsDirs`]): each directory opened relative to its
//!   parent's, without following a symlink, and read through its own
//!   descriptor, so a directory swapped for a symlink mid-walk cannot lead
//!   it out.
//!
//! A download is read in chunks straight into the send buffer, and only
//! while that buffer is below its low watermark, so a 10 GB file costs no
//! more memory than a 10 KB one (or, with `--sendfile`, the connection
//! sends it from the file's descriptor). A `LIST`'s names are produced only
//! while the send buffer is below its low watermark, and at most
//! [`LIST_READS_PER_CALL`] entries are read per call before the service
//! yields its turn, so a large tree neither stalls the other clients nor
//! sits in memory. Those reads are blocking, which is fine for local files
//! and page-cache hits.

pub mod fs;
pub mod list;
pub mod source;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;

use log::{debug, info, warn};

pub use self::fs::{
    FsDirs, FsSource, Resolution, check_name, is_hidden, open_beneath, open_served, open_under,
};
pub use self::list::{
    LIST_READS_PER_CALL, ListLimits, ListStep, ListWalk, MAX_LIST_DEPTH, MAX_LIST_HELD_BYTES,
    MAX_LIST_NAMES, list_cut_line,
};
use self::source::lossy;
pub use self::source::{DirRead, DirSource, FileSource, MAX_NAME, Refusal, SourceFile};
use super::{Io, Outcome, ServiceConfig};

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// The notes' protocol: the bare name.
    Bare(&'a [u8]),
    Get(&'a [u8]),
    List,
}

impl<'a> Request<'a> {
    /// Parses one request line (without its newline).
    pub fn parse(line: &'a [u8]) -> Request<'a> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line == b"LIST" {
            Request::List
        } else if let Some(name) = line.strip_prefix(b"GET ") {
            Request::Get(name)
        } else {
            Request::Bare(line)
        }
    }
}

/// Per-connection state: the protocol over files of type `F` and a `LIST`
/// reader `D`, the file system's unless in tests (see [`FileSource`]).
#[derive(Debug)]
pub struct Files<F = File, D = FsDirs>
where
    D: DirSource,
{
    /// Set once the request has been read; later input is ignored.
    answered: bool,
    /// Small output still to send before the file (header, error).
    pending: Vec<u8>,
    pending_sent: usize,
    stream: Option<Stream<F>>,
    /// A `LIST` still walking the tree.
    list: Option<ListWalk<D>>,
    /// Leading bytes of the request already searched and found to hold no
    /// newline, so a request sent a byte at a time is not searched again
    /// from its start on every read.
    scanned: usize,
    /// The request did not arrive whole within `--request-timeout`: only
    /// `pending` (the `ERR` line, or nothing) is sent, and the reactor
    /// ends the connection.
    timed_out: bool,
}

impl<F, D: DirSource> Default for Files<F, D> {
    fn default() -> Self {
        Files {
            answered: false,
            pending: Vec::new(),
            pending_sent: 0,
            stream: None,
            list: None,
            scanned: 0,
            timed_out: false,
        }
    }
}

#[derive(Debug)]
struct Stream<F> {
    file: F,
    /// Bytes still owed: the size found at open time, so a file that grows
    /// while being sent still matches the size announced.
    left: u64,
    name: String,
    /// Sent with `sendfile(2)` by the connection (see [`Files::zero_copy`])
    /// instead of read into the send buffer here: `--sendfile`, and the
    /// file has a descriptor.
    zero_copy: bool,
    /// The connection's TCP segment size (MSS) as the connection last told
    /// it ([`Files::set_segment`]); 0 until then. Chunks are cut to whole
    /// segments (see [`file_chunk`]). It changes under way: on loopback
    /// it starts at 47,616 bytes and grows to 65,483 as the client's window
    /// opens, so the connection asks again before each batch of chunks.
    segment: usize,
}

impl<F: SourceFile> Stream<F> {
    /// A download of `file`, `size` bytes, asked for as `name`; sent with
    /// `sendfile(2)` if `sendfile` and the file has a descriptor.
    fn new(file: F, size: u64, name: &[u8], sendfile: bool) -> Stream<F> {
        Stream {
            zero_copy: sendfile && file.descriptor().is_some(),
            file,
            left: size,
            name: lossy(name),
            segment: 0,
        }
    }
}

/// How much of `want` bytes of a download to read or send in one go, with
/// `left` still owed: whole TCP segments of `segment` bytes
/// ([`crate::buffer::whole_segments`]), but for the end of the file, which
/// goes as it is.
pub fn file_chunk(want: usize, left: u64, segment: usize) -> usize {
    if left <= want as u64 {
        return want;
    }
    crate::buffer::whole_segments(want, segment)
}

impl Files {
    /// Reads the request, then produces the answer as room allows, from
    /// the files beneath `config.root`.
    pub fn process(&mut self, io: &mut Io<'_>, config: &ServiceConfig) -> Outcome {
        let source = FsSource {
            root: &config.root,
            hidden: config.hidden,
        };
        self.serve(io, &source, config.sendfile)
    }
}

impl<F: SourceFile, D: DirSource> Files<F, D> {
    /// The file region the connection is to send with `sendfile(2)`, once
    /// the header before it is out: the file's descriptor (its offset is
    /// where the next byte comes from) and the bytes still owed.
    pub fn zero_copy(&self) -> Option<(BorrowedFd<'_>, u64, usize)> {
        let stream = self.stream.as_ref().filter(|s| s.zero_copy && s.left > 0)?;
        if self.pending_sent < self.pending.len() {
            return None;
        }
        Some((stream.file.descriptor()?, stream.left, stream.segment))
    }

    /// A download is under way: it cuts its chunks to the connection's
    /// segment size.
    pub fn needs_segment(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.left > 0)
    }

    /// The connection's TCP segment size, for [`file_chunk`].
    pub fn set_segment(&mut self, segment: usize) {
        if let Some(stream) = &mut self.stream {
            stream.segment = segment.max(1);
        }
    }

    /// `n` bytes of the zero-copy region went to the socket.
    pub fn zero_copy_sent(&mut self, n: usize) {
        if let Some(stream) = &mut self.stream {
            stream.left = stream.left.saturating_sub(n as u64);
        }
    }

    /// The answer is not all in the send buffer yet.
    pub fn is_producing(&self) -> bool {
        self.pending_sent < self.pending.len() || self.stream.is_some() || self.list.is_some()
    }

    /// No request has arrived whole yet: the reactor holds this wait to
    /// `--request-timeout`.
    pub fn awaiting_request(&self) -> bool {
        !self.answered
    }

    /// The request did not arrive whole in time; `received` is what came.
    /// A `GET` or `LIST` is answered `ERR request timeout`; anything else is
    /// taken for a bare name, whose client gets no bytes, as on any failure.
    pub fn time_out_request(&mut self, received: &[u8]) {
        if received.starts_with(b"GET ") || received.starts_with(b"LIST") {
            self.pending = b"ERR request timeout\n".to_vec();
        }
        self.answered = true;
        self.timed_out = true;
    }

    /// Reads the request, then produces the answer as room allows, from
    /// `source`; downloads go by `sendfile(2)` if `sendfile` and the file
    /// has a descriptor.
    pub fn serve<S>(&mut self, io: &mut Io<'_>, source: &S, sendfile: bool) -> Outcome
    where
        S: FileSource<File = F, Dirs = D>,
    {
        if self.timed_out {
            // Only the timeout's answer is sent; the reactor ends the
            // connection once it is out.
            io.input.clear();
            self.pending_sent += io.write(&self.pending[self.pending_sent..]);
            return Outcome::proceed(false);
        }
        if self.answered {
            let n = io.input.len();
            io.input.consume(n);
        } else {
            match self.take_request(io, source, sendfile) {
                Some(()) => self.answered = true,
                None if io.eof => return Outcome::close_after_flush(),
                None => return Outcome::proceed(false),
            }
        }
        self.produce(io)
    }

    /// Answers the request if it is complete; `None` if more bytes are needed.
    fn take_request<S>(&mut self, io: &mut Io<'_>, source: &S, sendfile: bool) -> Option<()>
    where
        S: FileSource<File = F, Dirs = D>,
    {
        let data = io.input.data();
        let peer = io.peer;
        let from = self.scanned.min(data.len());
        let newline = memchr::memchr(b'\n', &data[from..]).map(|at| from + at);
        self.scanned = data.len();
        let line = match newline {
            Some(pos) => &data[..pos],
            None if data.is_empty() => return None,
            // A request that fills the receive buffer without ending is
            // longer than the server holds: refused, never cut to fit.
            None if io.input.is_full() => {
                if data.starts_with(b"GET ") {
                    info!("files {peer}: GET refused: {}", Refusal::TooLong);
                    self.pending = format!("ERR {}\n", Refusal::TooLong).into_bytes();
                } else {
                    info!(
                        "files {peer}: request refused: {}; closing with no bytes",
                        Refusal::TooLong
                    );
                }
                io.input.clear();
                return Some(());
            }
            None if io.eof => data,
            None if io.burst_end && may_be_bare(data) => data,
            None => return None,
        };
        match Request::parse(line) {
            Request::List => {
                info!("files {peer}: LIST");
                self.list = Some(ListWalk::new(source.dirs(), ListLimits::SERVED));
            }
            Request::Get(name) => match source.open(name, peer) {
                Ok((file, size)) => {
                    info!("files {peer}: GET {:?}: {size} bytes", lossy(name));
                    self.pending = format!("OK {size}\n").into_bytes();
                    self.stream = Some(Stream::new(file, size, name, sendfile));
                }
                Err(refusal) => {
                    info!("files {peer}: GET {:?} refused: {refusal}", lossy(name));
                    self.pending = format!("ERR {refusal}\n").into_bytes();
                }
            },
            Request::Bare(name) => match source.open(name, peer) {
                Ok((file, size)) => {
                    info!("files {peer}: {:?}: {size} bytes", lossy(name));
                    self.stream = Some(Stream::new(file, size, name, sendfile));
                }
                Err(refusal) => {
                    info!(
                        "files {peer}: {:?} refused: {refusal}; closing with no bytes",
                        lossy(name)
                    );
                }
            },
        }
        let n = io.input.len();
        io.input.consume(n);
        Some(())
    }

    fn produce(&mut self, io: &mut Io<'_>) -> Outcome {
        if self.pending_sent < self.pending.len() {
            self.pending_sent += io.write(&self.pending[self.pending_sent..]);
            if self.pending_sent < self.pending.len() {
                return Outcome::proceed(false);
            }
        }
        self.pending = Vec::new();
        if let Some(list) = &mut self.list {
            return match list.step(io) {
                ListStep::Done => {
                    debug!("files {}: LIST queued in full", io.peer);
                    self.list = None;
                    Outcome::close_after_flush()
                }
                ListStep::Full => Outcome::proceed(false),
                ListStep::Spent => Outcome::yield_turn(),
            };
        }
        let Some(stream) = &mut self.stream else {
            return Outcome::close_after_flush();
        };
        if stream.zero_copy {
            // The connection sends it; done once nothing is owed.
            if stream.left > 0 {
                return Outcome::proceed(false);
            }
            debug!("files {}: {:?} sent in full", io.peer, stream.name);
            self.stream = None;
            return Outcome::close_after_flush();
        }
        while stream.left > 0 && io.output_len() < io.low_watermark {
            let room = io.output_spare();
            let want = file_chunk(
                room.len()
                    .min(usize::try_from(stream.left).unwrap_or(usize::MAX)),
                stream.left,
                stream.segment,
            );
            match stream.file.read(&mut room[..want]) {
                Ok(0) => {
                    warn!(
                        "files {}: {:?} shrank while being sent, {} bytes short; resetting",
                        io.peer, stream.name, stream.left
                    );
                    self.stream = None;
                    return Outcome::abort();
                }
                Ok(n) => {
                    io.commit_output(n);
                    stream.left -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!(
                        "files {}: reading {:?} failed: {e}; resetting",
                        io.peer, stream.name
                    );
                    self.stream = None;
                    return Outcome::abort();
                }
            }
        }
        if stream.left > 0 && io.output_len() >= io.low_watermark {
            return Outcome::proceed(false);
        }
        debug!("files {}: {:?} queued in full", io.peer, stream.name);
        self.stream = None;
        Outcome::close_after_flush()
    }
}

/// Whether `data`, which ended a burst, is a whole bare-name request: not a
/// `GET`/`LIST` request, nor the first packet of one.
fn may_be_bare(data: &[u8]) -> bool {
    matches!(Request::parse(data), Request::Bare(_))
        && !b"GET ".starts_with(data)
        && !b"LIST".starts_with(data)
}

/// The protocol over a source in memory ([`testing::MemSource`]): every
/// answer, failure and cut, with no file touched.
#[cfg(test)]
mod in_memory {
    use super::testing::{MemSource, serve};
    use super::*;
    use crate::service::Next;

    #[test]
    fn get_answers_ok_with_the_size_then_the_bytes_whatever_the_send_buffer() {
        let mut source = MemSource::with_files(&[]);
        let body: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
        source.files.insert(b"sub/data.bin".to_vec(), body.clone());
        let expected = [&b"OK 3000\n"[..], &body].concat();
        for send_cap in [1, 2, 7, 64, 4096] {
            let served = serve(&source, b"GET sub/data.bin\n", false, send_cap, |_| {});
            assert_eq!(served.next, Next::CloseAfterFlush, "send buffer {send_cap}");
            assert!(served.output == expected, "send buffer {send_cap}");
            // A bare name gets the bytes alone.
            let served = serve(&source, b"sub/data.bin", false, send_cap, |_| {});
            assert_eq!(served.next, Next::CloseAfterFlush, "send buffer {send_cap}");
            assert!(served.output == body, "send buffer {send_cap}");
        }
    }

    #[test]
    fn failures_answer_err_and_the_reason_for_get_and_nothing_for_a_bare_name() {
        let mut source = MemSource::with_files(&["sub/a.txt"]);
        let refusals = [
            Refusal::NotFound,
            Refusal::NotRegular,
            Refusal::Outside,
            Refusal::TooLong,
            Refusal::BadName,
            Refusal::Unreadable,
        ];
        for refusal in refusals {
            source
                .refusals
                .insert(format!("{refusal:?}").into_bytes(), refusal);
        }
        let mut cases: Vec<(String, &str)> =
            refusals.iter().map(|r| (format!("{r:?}"), "")).collect();
        cases.push(("missing".into(), "not found"));
        cases.push(("sub".into(), "not a regular file"));
        for (name, reason) in cases {
            let reason = match reason {
                "" => source.refusals[name.as_bytes()].to_string(),
                reason => reason.to_string(),
            };
            let get = serve(
                &source,
                format!("GET {name}\n").as_bytes(),
                false,
                64,
                |_| {},
            );
            assert_eq!(get.next, Next::CloseAfterFlush, "{name}");
            assert_eq!(lossy(&get.output), format!("ERR {reason}\n"), "{name}");
            for bare in [format!("{name}\n"), name.clone()] {
                let served = serve(&source, bare.as_bytes(), false, 64, |_| {});
                assert_eq!(served.next, Next::CloseAfterFlush, "{bare:?}");
                assert_eq!(served.output, b"", "{bare:?}");
            }
        }
    }

    #[test]
    fn get_and_list_wait_for_their_newline_where_a_bare_name_ends_at_a_burst() {
        let source = MemSource::with_files(&["GET", "LIS", "x"]);
        // The start of a GET or LIST request is not taken for a bare name.
        for partial in [&b"GET x"[..], b"GE", b"LIS", b"LIST"] {
            let served = serve(&source, partial, false, 64, |_| {});
            assert_eq!(served.next, Next::Continue, "{}", lossy(partial));
            assert_eq!(served.output, b"", "{}", lossy(partial));
        }
        // The client's half-close ends them.
        let served = serve(&source, b"GET x", true, 64, |_| {});
        assert_eq!(served.output, b"OK 1\nx");
        let served = serve(&source, b"LIST", true, 64, |_| {});
        assert_eq!(served.output, b"GET\nLIS\nx\n");
        let served = serve(&source, b"x", false, 64, |_| {});
        assert_eq!(served.output, b"x");
    }

    #[test]
    fn regression_slow_loris_a_timed_out_request_is_answered_in_its_form_without_a_lookup() {
        // Everything in the tree would be served, were it asked for.
        let source = MemSource::with_files(&["a.t", "GE"]);
        for (received, answer) in [
            (&b"GET a.t"[..], &b"ERR request timeout\n"[..]),
            (b"LIST", b"ERR request timeout\n"),
            (b"a.t", b""),
            (b"GE", b""),
            (b"", b""),
        ] {
            let served = serve(&source, received, false, 64, |files| {
                files.time_out_request(received)
            });
            assert_eq!(served.output, answer, "{:?}", lossy(received));
        }
    }

    #[test]
    fn a_download_that_comes_up_short_is_aborted_after_what_it_had() {
        let mut source = MemSource::with_files(&["f"]);
        source.files.insert(b"f".to_vec(), vec![b'x'; 100]);
        source.shrunk_by.insert(b"f".to_vec(), 5);
        let served = serve(&source, b"GET f\n", false, 32, |_| {});
        assert_eq!(served.next, Next::Abort);
        assert!(served.output == [&b"OK 105\n"[..], &[b'x'; 100]].concat());
        let served = serve(&source, b"f", false, 32, |_| {});
        assert_eq!(served.next, Next::Abort);
        assert_eq!(served.output, [b'x'; 100]);
    }

    #[test]
    fn a_file_without_a_descriptor_goes_through_the_send_buffer_even_with_sendfile() {
        // `serve` runs with --sendfile on: a file in memory has nothing for
        // sendfile(2) to read, so it is read into the send buffer instead.
        let source = MemSource::with_files(&["f"]);
        let served = serve(&source, b"GET f\n", false, 64, |files| {
            assert!(files.zero_copy().is_none());
        });
        assert_eq!(served.output, b"OK 1\nf");
    }

    #[test]
    fn a_list_out_of_descriptors_ends_with_the_cut_line_and_why() {
        let mut source = MemSource::with_files(&["a", "b/1", "b/2", "c"]);
        source.open_errors.insert(b"b".to_vec(), libc::EMFILE);
        let served = serve(&source, b"LIST\n", false, 64, |_| {});
        assert_eq!(served.next, Next::CloseAfterFlush);
        assert_eq!(
            lossy(&served.output),
            "a\n\nERR list cut at 1 names: out of file descriptors\n"
        );
        // Out of descriptors for the whole system, likewise.
        source.open_errors.insert(b"b".to_vec(), libc::ENFILE);
        let served = serve(&source, b"LIST\n", false, 64, |_| {});
        assert_eq!(
            lossy(&served.output),
            "a\n\nERR list cut at 1 names: out of file descriptors\n"
        );
        // Any other failure skips the directory: the answer is whole but
        // for it, and does not say it is cut.
        source.open_errors.insert(b"b".to_vec(), libc::EACCES);
        let served = serve(&source, b"LIST\n", false, 64, |_| {});
        assert_eq!(lossy(&served.output), "a\nc\n");
    }

    #[test]
    fn a_list_deeper_than_the_served_depth_is_cut_where_it_sorts() {
        // MAX_LIST_DEPTH directories, the root counting as one, are walked;
        // one more is too deep.
        let deep = |levels: usize| {
            let mut path = vec!["d"; levels].join("/");
            path.push_str("/f");
            path
        };
        let fits = deep(MAX_LIST_DEPTH - 1);
        let too_deep = deep(MAX_LIST_DEPTH);
        let source = MemSource::with_files(&[fits.as_str(), "z"]);
        let served = serve(&source, b"LIST\n", false, 4096, |_| {});
        assert_eq!(lossy(&served.output), format!("{fits}\nz\n"));
        let source = MemSource::with_files(&["a", too_deep.as_str(), "z"]);
        let served = serve(&source, b"LIST\n", false, 4096, |_| {});
        assert_eq!(
            lossy(&served.output),
            format!("a\n\nERR list cut at 1 names: deeper than {MAX_LIST_DEPTH} directories\n")
        );
    }

    #[test]
    fn a_list_yields_its_turn_after_its_reads_and_names_every_file_in_order() {
        let names: Vec<String> = (0..LIST_READS_PER_CALL * 3)
            .map(|i| format!("d{}/f{i:05}", i % 3))
            .collect();
        let paths: Vec<&str> = names.iter().map(String::as_str).collect();
        let source = MemSource::with_files(&paths);
        let mut sorted = names.clone();
        sorted.sort();
        let expected: String = sorted.iter().map(|n| format!("{n}\n")).collect();
        let served = serve(&source, b"LIST\n", false, 1 << 20, |_| {});
        assert_eq!(served.next, Next::CloseAfterFlush);
        assert!(lossy(&served.output) == expected);
        // Each yield follows a call that spent its reads: more names than
        // one call's reads, so at least three.
        assert!(served.yields >= 3, "{} yields", served.yields);
    }

    #[test]
    fn a_list_past_the_served_names_ends_with_the_cut_line() {
        let names: Vec<String> = (0..=MAX_LIST_NAMES).map(|i| format!("{i:06}")).collect();
        let paths: Vec<&str> = names.iter().map(String::as_str).collect();
        let source = MemSource::with_files(&paths);
        let served = serve(&source, b"LIST\n", false, 1 << 20, |_| {});
        assert_eq!(served.next, Next::CloseAfterFlush);
        let mut expected: String = names[..MAX_LIST_NAMES]
            .iter()
            .map(|n| format!("{n}\n"))
            .collect();
        expected.push_str(&format!("\nERR list cut at {MAX_LIST_NAMES} names\n"));
        assert!(lossy(&served.output) == expected);
    }
}
