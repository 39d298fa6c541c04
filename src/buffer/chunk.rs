//! Output shared between connections: a [`Chunk`] is held once and queued
//! on each receiver's [`SharedQueue`]; chunks are filled through a
//! [`ChunkWriter`] from a [`ChunkPool`], which refills one only once every
//! receiver has sent it. No I/O here: [`SharedQueue::write_to`] takes the
//! writer.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

/// Bytes shared, immutable, between the connections that send them alike:
/// cloning one is a reference count, not a copy.
///
/// An `Rc<Vec<u8>>` rather than an `Rc<[u8]>`: a slice's length is fixed
/// when it is made, so every line would be a fresh allocation, while a
/// vector behind the `Rc` can be refilled once nobody else holds it (see
/// [`ChunkPool`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chunk(Rc<Vec<u8>>);

impl std::ops::Deref for Chunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Chunk {
    /// Shares `bytes` as they are (one small allocation for the count; the
    /// bytes are not copied).
    fn from(bytes: Vec<u8>) -> Chunk {
        Chunk(Rc::new(bytes))
    }
}

impl From<&[u8]> for Chunk {
    fn from(bytes: &[u8]) -> Chunk {
        Chunk::from(bytes.to_vec())
    }
}

/// A chunk being filled: nobody else holds it yet, so it can be written.
///
/// Invariant: the only reference to its `Rc` (it is made from a fresh one
/// or from one the pool found unshared, and it is not `Clone`), so
/// [`Rc::get_mut`] always succeeds on it.
#[derive(Debug)]
pub struct ChunkWriter(Rc<Vec<u8>>);

impl ChunkWriter {
    /// An empty chunk of its own, allocated (and its bytes as they grow):
    /// what [`ChunkPool::take`] falls back to.
    pub fn fresh() -> ChunkWriter {
        ChunkWriter(Rc::new(Vec::new()))
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends `parts`, one after another, growing the chunk at most once.
    #[cfg(test)]
    pub fn append(&mut self, parts: &[&[u8]]) {
        let bytes = Rc::get_mut(&mut self.0).expect("a chunk being written is not shared yet");
        bytes.reserve(parts.iter().map(|p| p.len()).sum());
        for part in parts {
            bytes.extend_from_slice(part);
        }
    }

    /// Appends `[PEER] `, `line` and a newline, reserving room for them at
    /// once (the longest address, an IPv6 one with a scope, is 55 bytes).
    pub fn append_line(&mut self, peer: std::net::SocketAddr, line: &[u8]) {
        use std::io::Write;
        let bytes = Rc::get_mut(&mut self.0).expect("a chunk being written is not shared yet");
        bytes.reserve(60 + line.len());
        // Writing to a Vec cannot fail.
        let _ = write!(bytes, "[{peer}] ");
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    }

    /// The chunk as written, ready to be queued on its receivers; a refilled
    /// chunk first gives back storage past [`SHARED_CHUNK_SLACK`].
    pub fn share(mut self) -> Chunk {
        let bytes = Rc::get_mut(&mut self.0).expect("a chunk being written is not shared yet");
        if bytes.capacity() > (2 * bytes.len()).max(SHARED_CHUNK_SLACK) {
            bytes.shrink_to(bytes.len().max(SHARED_CHUNK_SLACK));
        }
        Chunk(self.0)
    }
}

/// A shared chunk keeps at most twice its bytes of storage, or this much.
/// Receivers' limits count a chunk's bytes, not its storage, so a chunk
/// refilled with one short line after it carried a paste must not take
/// 8 KiB into the queue of every member that lags, charged for 50 bytes. A
/// chunk grown for what it holds stays within twice that (a vector
/// doubles), so only such a refill pays the shrink; the floor is above a
/// typical chat line, so lines of varying length do not shrink and regrow
/// a chunk over and over.
pub const SHARED_CHUNK_SLACK: usize = 256;

/// Most chunks a [`ChunkPool`] keeps. A chat line is sent to every member
/// within a turn or two, so a handful of chunks cover steady chatting; the
/// rest of the 64 absorb a burst of lines while some receivers lag. Past
/// that, chunks are allocated, and freed with their last receiver, as if
/// there were no pool.
pub const POOLED_CHUNKS: usize = 64;

/// Most bytes of storage a chunk may have to be kept by a [`ChunkPool`]:
/// twice chat's 4 KiB of lines per chunk, which a chunk of short lines stays
/// within as its vector grows. A chunk grown past it for one long line is
/// not kept, so one paste does not hold its peak memory here forever; so
/// the pool parks at most `POOLED_CHUNKS * POOLED_CHUNK_BYTES` (512 KiB).
pub const POOLED_CHUNK_BYTES: usize = 8 * 1024;

/// Chunks recently shared, handed out again to be refilled once nobody
/// else holds them (every receiver sent its part and let it go), so
/// broadcasting allocates nothing once the pool is warm.
///
/// Receivers send their queues in order, so the oldest chunk is the first
/// to come free: only it is looked at, which makes taking a chunk O(1). A
/// chunk held by a receiver that lags behind the others is dropped from
/// the pool once [`POOLED_CHUNKS`] newer ones are in (it is freed with its
/// last receiver), so a stuck receiver cannot stop the pool from working.
///
/// Invariants: at most [`POOLED_CHUNKS`] chunks, oldest first, each with at
/// most [`POOLED_CHUNK_BYTES`] of storage. A chunk in the pool may still be
/// queued on receivers; it is only ever written after [`Rc::get_mut`] shows
/// that the pool holds the only reference.
#[derive(Debug, Default)]
pub struct ChunkPool {
    recent: VecDeque<Rc<Vec<u8>>>,
}

impl ChunkPool {
    /// An empty chunk to fill: the oldest pooled one if nobody else holds
    /// it any more, else a fresh one.
    pub fn take(&mut self) -> ChunkWriter {
        if let Some(mut oldest) = self.recent.pop_front() {
            if let Some(bytes) = Rc::get_mut(&mut oldest) {
                bytes.clear();
                return ChunkWriter(oldest);
            }
            // Still being sent: it stays the oldest.
            self.recent.push_front(oldest);
        }
        ChunkWriter::fresh()
    }

    /// Keeps `chunk`, just queued on its receivers, to be refilled once they
    /// have all sent it; unless its storage grew too large to keep.
    pub fn recycle(&mut self, chunk: Chunk) {
        if chunk.0.capacity() > POOLED_CHUNK_BYTES {
            return;
        }
        if self.recent.len() == POOLED_CHUNKS {
            // The oldest was not free when last looked at: let it go with
            // its last receiver.
            self.recent.pop_front();
        }
        self.recent.push_back(chunk.0);
    }

    /// Chunks kept now (some may still be queued on receivers).
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

/// A queue of shared, immutable chunks: output that several connections send
/// alike (a chat line goes to every member), held once in memory and counted
/// against each receiver's limit.
///
/// Invariant: `len` is the sum of the unsent parts (`sent..end`) of the
/// pieces, and every piece in the queue has at least one unsent byte.
#[derive(Debug, Default)]
pub struct SharedQueue {
    pieces: VecDeque<Piece>,
    len: usize,
}

/// What one queued chunk costs a [`SharedQueue`] beyond its bytes (see
/// [`SharedQueue::cost`]): its entry.
pub const ENTRY_COST: usize = std::mem::size_of::<Piece>();

/// One queued chunk and how much of it is still to send: `chunk[sent..end]`,
/// where `start <= sent` is where this receiver's part of it began (a line
/// boundary).
#[derive(Debug)]
struct Piece {
    chunk: Chunk,
    start: usize,
    sent: usize,
    end: usize,
}

/// Most chunks a write hands to the kernel in one vectored call.
const MAX_SLICES: usize = 64;

impl SharedQueue {
    /// Unsent bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What the queue costs in memory for limits: its unsent bytes plus the
    /// entry each chunk takes, so a queue of many tiny chunks is not counted
    /// as nearly free.
    pub fn cost(&self) -> usize {
        self.len + self.pieces.len() * ENTRY_COST
    }

    /// The oldest chunk is partly sent: anything written before the rest of
    /// it would land inside it.
    pub fn is_mid_chunk(&self) -> bool {
        self.pieces.front().is_some_and(|p| p.sent > p.start)
    }

    /// Queues `chunk` (which stays shared with whoever else holds it).
    pub fn push(&mut self, chunk: Chunk) {
        self.push_from(chunk, 0);
    }

    /// Queues the part of `chunk` from byte `from` on (which must be at a
    /// line boundary, or the chunk's end).
    pub fn push_from(&mut self, chunk: Chunk, from: usize) {
        let end = chunk.len();
        if from < end {
            self.len += end - from;
            self.pieces.push_back(Piece {
                chunk,
                start: from,
                sent: from,
                end,
            });
        }
    }

    /// Drops everything queued except the rest of the line the receiver is
    /// in the middle of (the oldest chunk's unsent bytes up to and including
    /// its next newline), so what the receiver gets ends at a line boundary.
    pub fn keep_current_line(&mut self) {
        let Some(front) = self.pieces.front_mut().filter(|p| p.sent > p.start) else {
            return self.clear();
        };
        let rest = &front.chunk[front.sent..front.end];
        if let Some(newline) = first_newline(rest) {
            front.end = front.sent + newline + 1;
        }
        self.len = front.end - front.sent;
        self.pieces.truncate(1);
    }

    /// Writes the unsent bytes, oldest first, with one vectored write of at
    /// most 64 chunks (the slices live on the stack: nothing is allocated
    /// per write), and drops what the writer took. Returns that count.
    pub fn write_to(&mut self, writer: &mut impl Write) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut count = 0;
        for (piece, slot) in self.pieces.iter().zip(slices.iter_mut()) {
            *slot = IoSlice::new(&piece.chunk[piece.sent..piece.end]);
            count += 1;
        }
        let n = writer.write_vectored(&slices[..count])?;
        self.consume(n);
        Ok(n)
    }

    /// Drops the `n` oldest unsent bytes.
    ///
    /// # Panics
    /// If `n` exceeds [`SharedQueue::len`]: a caller bug.
    pub fn consume(&mut self, mut n: usize) {
        assert!(n <= self.len, "consume {n} of {} bytes", self.len);
        self.len -= n;
        while n > 0 {
            let piece = self.pieces.front_mut().expect("len counts queued bytes");
            let left = piece.end - piece.sent;
            if n < left {
                piece.sent += n;
                return;
            }
            n -= left;
            self.pieces.pop_front();
        }
        self.shrink_if_empty();
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.pieces.clear();
        self.len = 0;
        self.shrink_if_empty();
    }

    /// An empty queue gives back a large ring, so an idle connection holds
    /// next to nothing.
    fn shrink_if_empty(&mut self) {
        if self.pieces.is_empty() && self.pieces.capacity() > 16 {
            self.pieces = VecDeque::new();
        }
    }
}

fn first_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dismissed_receiver_keeps_only_the_rest_of_its_current_line() {
        let mut q = SharedQueue::default();
        q.push(Chunk::from(&b"one\ntwo\n"[..]));
        q.push(Chunk::from(&b"three\n"[..]));
        q.consume(1);
        assert!(q.is_mid_chunk());
        q.keep_current_line();
        let mut out = Vec::new();
        while !q.is_empty() {
            q.write_to(&mut out).unwrap();
        }
        assert_eq!(out, b"ne\n");
        // At a chunk boundary nothing is begun, so nothing is kept.
        q.push(Chunk::from(&b"four\n"[..]));
        assert!(!q.is_mid_chunk());
        q.keep_current_line();
        assert!(q.is_empty());
    }

    #[test]
    fn shared_chunks_are_consumed_across_chunk_boundaries() {
        let a = Chunk::from(&b"hello "[..]);
        let b = Chunk::from(&b"world"[..]);
        let mut q = SharedQueue::default();
        q.push(a.clone());
        q.push(Chunk::default());
        q.push(b);
        assert_eq!(q.len(), 11);
        assert_eq!(Rc::strong_count(&a.0), 2, "queued, not copied");
        q.consume(8);
        assert_eq!(Rc::strong_count(&a.0), 1, "a sent chunk is let go");
        let mut out = Vec::new();
        assert_eq!(q.write_to(&mut out).unwrap(), 3);
        assert_eq!(out, b"rld");
        assert!(q.is_empty());
        assert_eq!(q.write_to(&mut out).unwrap(), 0);
    }

    /// A chunk written through the pool, queued on `queues`, recycled.
    fn broadcast(pool: &mut ChunkPool, bytes: &[u8], queues: &mut [SharedQueue]) -> *const Vec<u8> {
        let mut writer = pool.take();
        assert!(writer.is_empty(), "a chunk is handed out empty");
        writer.append(&[bytes]);
        let chunk = writer.share();
        for q in queues.iter_mut() {
            q.push(chunk.clone());
        }
        let at = Rc::as_ptr(&chunk.0);
        pool.recycle(chunk);
        at
    }

    fn drain(q: &mut SharedQueue) -> Vec<u8> {
        let mut out = Vec::new();
        while !q.is_empty() {
            q.write_to(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn a_pooled_chunk_is_refilled_only_once_every_receiver_sent_it() {
        let mut pool = ChunkPool::default();
        let mut queues = [SharedQueue::default(), SharedQueue::default()];
        let first = broadcast(&mut pool, b"one\n", &mut queues);
        // Both receivers still hold it: the next line gets a chunk of its own.
        let second = broadcast(&mut pool, b"two\n", &mut queues);
        assert_ne!(first, second);
        assert_eq!(drain(&mut queues[0]), b"one\ntwo\n");
        let third = broadcast(&mut pool, b"three\n", &mut queues);
        assert_ne!(third, first, "one receiver has not sent it yet");
        assert_eq!(drain(&mut queues[1]), b"one\ntwo\nthree\n");
        assert_eq!(drain(&mut queues[0]), b"three\n");
        // All sent: the oldest is refilled, and the bytes it held are gone.
        assert_eq!(broadcast(&mut pool, b"four\n", &mut queues), first);
        assert_eq!(broadcast(&mut pool, b"five\n", &mut []), second);
        assert_eq!(pool.len(), 3);
        assert_eq!(drain(&mut queues[0]), b"four\n");
        assert_eq!(drain(&mut queues[1]), b"four\n");
    }

    #[test]
    fn the_pool_is_bounded_and_a_lagging_receiver_does_not_stop_it() {
        let mut pool = ChunkPool::default();
        let mut lagging = [SharedQueue::default()];
        let held = broadcast(&mut pool, b"unread\n", &mut lagging);
        // The oldest is held: every line is a fresh chunk, kept up to the
        // bound, then the held one is let go from the pool.
        for _ in 0..POOLED_CHUNKS {
            broadcast(&mut pool, b"x\n", &mut []);
        }
        assert_eq!(pool.len(), POOLED_CHUNKS);
        // The free ones are refilled now, in turn; the held one never.
        for _ in 0..3 * POOLED_CHUNKS {
            assert_ne!(broadcast(&mut pool, b"y\n", &mut []), held);
        }
        assert_eq!(pool.len(), POOLED_CHUNKS);
        assert_eq!(drain(&mut lagging[0]), b"unread\n", "still whole");
    }

    #[test]
    fn a_chunk_grown_past_the_bound_is_not_kept() {
        let mut pool = ChunkPool::default();
        let long = vec![b'x'; POOLED_CHUNK_BYTES + 1];
        broadcast(&mut pool, &long, &mut []);
        assert!(pool.is_empty());
        broadcast(&mut pool, &long[..POOLED_CHUNK_BYTES], &mut []);
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn a_chunk_refilled_with_less_gives_back_its_storage_before_it_is_shared() {
        let mut pool = ChunkPool::default();
        let paste = vec![b'p'; 4000];
        broadcast(&mut pool, &paste, &mut []);
        let mut writer = pool.take();
        assert!(writer.0.capacity() >= 4000, "the paste's chunk, refilled");
        writer.append(&[b"a short line\n"]);
        let chunk = writer.share();
        assert_eq!(&*chunk, b"a short line\n");
        assert!(
            chunk.0.capacity() <= SHARED_CHUNK_SLACK,
            "{}",
            chunk.0.capacity()
        );
        // Within the slack nothing is given back, so lines of varying
        // length do not shrink and regrow it.
        pool.recycle(chunk);
        let mut writer = pool.take();
        writer.append(&[b"x\n"]);
        assert_eq!(writer.share().0.capacity(), SHARED_CHUNK_SLACK);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::collections::VecDeque;

        #[derive(Clone, Debug)]
        enum QueueOp {
            /// A chunk of these lines (each its length, then `\n`).
            Push(Vec<u8>),
            /// The same, queued from the start of line `from` (or the end).
            PushFrom(Vec<u8>, usize),
            Consume(u8),
            /// A writer that takes at most this many bytes (`None`: one
            /// that would block).
            WriteTo(Option<usize>),
            KeepCurrentLine,
            Clear,
        }

        fn lines() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(0u8..6, 0..5)
        }

        fn queue_op() -> impl Strategy<Value = QueueOp> {
            prop_oneof![
                3 => lines().prop_map(QueueOp::Push),
                2 => (lines(), 0usize..6).prop_map(|(l, from)| QueueOp::PushFrom(l, from)),
                2 => any::<u8>().prop_map(QueueOp::Consume),
                3 => proptest::option::weighted(0.9, 0usize..30).prop_map(QueueOp::WriteTo),
                1 => Just(QueueOp::KeepCurrentLine),
                1 => Just(QueueOp::Clear),
            ]
        }

        /// A writer that takes up to `limit` bytes, across slices.
        struct Taker {
            limit: Option<usize>,
            out: Vec<u8>,
        }

        impl Write for Taker {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.write_vectored(&[IoSlice::new(bytes)])
            }

            fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
                let Some(mut left) = self.limit else {
                    return Err(io::ErrorKind::WouldBlock.into());
                };
                let mut n = 0;
                for slice in slices {
                    let take = slice.len().min(left);
                    self.out.extend_from_slice(&slice[..take]);
                    left -= take;
                    n += take;
                }
                Ok(n)
            }

            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }

        /// The queue, plainly: each chunk's unsent bytes, and whether it is
        /// begun.
        #[derive(Default)]
        struct Model {
            pieces: VecDeque<(Vec<u8>, bool)>,
        }

        impl Model {
            fn bytes(&self) -> Vec<u8> {
                self.pieces
                    .iter()
                    .flat_map(|(p, _)| p.iter().copied())
                    .collect()
            }

            fn consume(&mut self, mut n: usize) {
                while n > 0 {
                    let (front, begun) = self.pieces.front_mut().expect("n within the model");
                    if n < front.len() {
                        front.drain(..n);
                        *begun = true;
                        return;
                    }
                    n -= front.len();
                    self.pieces.pop_front();
                }
            }
        }

        /// The bytes of a chunk of lines of the given lengths (bytes
        /// numbered by `next`, so that order shows), and where lines start.
        fn chunk(lengths: &[u8], next: &mut u8) -> (Vec<u8>, Vec<usize>) {
            let mut bytes = Vec::new();
            let mut starts = Vec::new();
            for &len in lengths {
                starts.push(bytes.len());
                for _ in 0..len {
                    *next = next.wrapping_add(1) % 200 + 1;
                    bytes.push(*next);
                }
                bytes.push(b'\n');
            }
            starts.push(bytes.len());
            (bytes, starts)
        }

        proptest! {
            #![proptest_config(crate::prop::cases(256))]

            /// Any sequence of operations against a plain model: the same
            /// bytes in the same order whatever the writer takes, `len` and
            /// `cost` agree with the queue, and after `keep_current_line`
            /// the receiver's output ends at a line boundary.
            #[test]
            fn shared_queue_matches_a_model(ops in proptest::collection::vec(queue_op(), 0..40)) {
                let mut queue = SharedQueue::default();
                let mut model = Model::default();
                let mut written = Vec::new();
                let mut next = 0u8;
                for op in ops {
                    match op {
                        QueueOp::Push(lengths) => {
                            let (bytes, _) = chunk(&lengths, &mut next);
                            queue.push(Chunk::from(&bytes[..]));
                            if !bytes.is_empty() {
                                model.pieces.push_back((bytes, false));
                            }
                        }
                        QueueOp::PushFrom(lengths, from) => {
                            let (bytes, starts) = chunk(&lengths, &mut next);
                            let from = starts[from.min(starts.len() - 1)];
                            queue.push_from(Chunk::from(&bytes[..]), from);
                            if from < bytes.len() {
                                model.pieces.push_back((bytes[from..].to_vec(), false));
                            }
                        }
                        QueueOp::Consume(share) => {
                            let n = queue.len() * share as usize / 255;
                            written.extend_from_slice(&model.bytes()[..n]);
                            queue.consume(n);
                            model.consume(n);
                        }
                        QueueOp::WriteTo(limit) => {
                            let mut taker = Taker { limit, out: Vec::new() };
                            let expected = model.bytes();
                            match queue.write_to(&mut taker) {
                                Ok(n) => {
                                    prop_assert_eq!(&taker.out[..], &expected[..n]);
                                    written.extend_from_slice(&taker.out);
                                    model.consume(n);
                                }
                                Err(e) => prop_assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
                            }
                        }
                        QueueOp::KeepCurrentLine => {
                            queue.keep_current_line();
                            match model.pieces.pop_front() {
                                Some((mut front, true)) => {
                                    if let Some(at) = front.iter().position(|&b| b == b'\n') {
                                        front.truncate(at + 1);
                                    }
                                    model.pieces = VecDeque::from([(front, true)]);
                                }
                                _ => model.pieces.clear(),
                            }
                            let mut all = written.clone();
                            all.extend(model.bytes());
                            prop_assert!(all.is_empty() || all.ends_with(b"\n"), "cut mid-line");
                        }
                        QueueOp::Clear => {
                            // Dropped mid-line, on purpose: the receiver's
                            // output starts afresh for the line check.
                            queue.clear();
                            model.pieces.clear();
                            written.clear();
                        }
                    }
                    let bytes = model.bytes();
                    prop_assert_eq!(queue.len(), bytes.len());
                    prop_assert_eq!(queue.is_empty(), bytes.is_empty());
                    prop_assert_eq!(queue.pieces.len(), model.pieces.len());
                    prop_assert_eq!(
                        queue.cost(),
                        bytes.len() + model.pieces.len() * std::mem::size_of::<Piece>()
                    );
                    prop_assert_eq!(queue.is_mid_chunk(), model.pieces.front().is_some_and(|p| p.1));
                }
                // What is left drains in order.
                let mut taker = Taker { limit: Some(usize::MAX), out: Vec::new() };
                while !queue.is_empty() {
                    let n = queue.write_to(&mut taker).unwrap();
                    prop_assert!(n > 0, "{} bytes queued but none to write", queue.len());
                }
                prop_assert_eq!(taker.out, model.bytes());
            }
        }
    }
}
