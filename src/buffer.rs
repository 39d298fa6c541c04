//! Bounded byte buffers with pooled storage: the per-connection receive and
//! send buffers of the buffer model (see the crate docs).
//!
//! A [`ByteBuf`] holds at most `capacity` bytes and owns no storage while it is
//! empty, so an idle connection costs no buffer memory. Storage comes from a
//! [`BufPool`] when bytes arrive or are produced, and goes back to it at the
//! end of the turn: when the buffer is empty, and also when it holds only a
//! few bytes (an unfinished line, a reply the client has not read yet), which
//! then move to storage of their own sized to them. So the pool's blocks act
//! as the reactor's shared scratch space: reads land in a block, the service
//! consumes what it can, and a connection keeps between turns only what is
//! left, in memory that follows the bytes (as Redis's reusable query buffer
//! does), up to its capacity only while that much is really waiting. No I/O here: the reactor reads into [`ByteBuf::spare`] and
//! writes from [`ByteBuf::data`].
//!
//! Output shared between connections (a chat line goes to every member) is
//! a [`Chunk`], held once in memory and queued on each receiver's
//! [`SharedQueue`]. Chunks are filled through a [`ChunkWriter`] taken from a
//! [`ChunkPool`], which hands a chunk out again once every receiver has
//! sent it, so a chat in steady state allocates nothing per line.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

/// `n` bytes cut down to whole TCP segments of `segment` bytes, when they
/// hold at least one (else `n` as it is; also when `segment` is unknown, 0).
///
/// Why: with Nagle's algorithm on, a write a few bytes past a whole number
/// of segments leaves a runt segment that waits for the client's ACK before
/// it goes. On loopback the segment is 65,483 bytes, so a 64 KiB write is
/// one full segment and a 53-byte runt: measured, that halved the rate of a
/// 1 GiB download and of a bulk echo against writes cut to 65,483 bytes.
pub fn whole_segments(n: usize, segment: usize) -> usize {
    if segment == 0 || n < segment {
        return n;
    }
    n - n % segment
}

/// A free list of equally sized storage blocks.
///
/// Keeping a few blocks avoids an allocation (and the zeroing of a fresh
/// block) each time a connection goes from idle to busy. The list is capped in
/// bytes so that a burst of thousands of busy connections, once over, does not
/// leave its peak memory parked here forever.
#[derive(Debug)]
pub struct BufPool {
    block: usize,
    free: Vec<Box<[u8]>>,
    max_free: usize,
}

/// How many bytes of idle blocks a pool keeps at most.
const POOL_KEEP_BYTES: usize = 8 * 1024 * 1024;

impl BufPool {
    /// A pool of blocks of `block` bytes.
    pub fn new(block: usize) -> BufPool {
        let max_free = (POOL_KEEP_BYTES / block.max(1)).max(4);
        BufPool {
            block,
            free: Vec::new(),
            max_free,
        }
    }

    /// Size of every block of this pool.
    pub fn block_size(&self) -> usize {
        self.block
    }

    /// Blocks parked in the pool now.
    pub fn idle_blocks(&self) -> usize {
        self.free.len()
    }

    fn take(&mut self) -> Box<[u8]> {
        self.free
            .pop()
            .unwrap_or_else(|| vec![0u8; self.block].into_boxed_slice())
    }

    fn give(&mut self, block: Box<[u8]>) {
        debug_assert_eq!(block.len(), self.block, "block returned to the wrong pool");
        if self.free.len() < self.max_free {
            self.free.push(block);
        }
    }

    /// Evens out the idle blocks of two pools of one block size. An echo
    /// that trades its receive and send buffers (see
    /// [`crate::service::Io::transfer`]) takes a block from one pool and
    /// gives it back to the other; without this one pool would run dry and
    /// allocate for every message while the other filled up.
    pub fn balance(&mut self, other: &mut BufPool) {
        if self.block != other.block {
            return;
        }
        let (fuller, emptier) = if self.free.len() > other.free.len() {
            (self, other)
        } else {
            (other, self)
        };
        // Until the emptier one has at least as many.
        while fuller.free.len() > emptier.free.len() {
            let Some(block) = fuller.free.pop() else {
                break;
            };
            emptier.free.push(block);
        }
    }
}

/// A bounded FIFO of bytes, contiguous so that parsers and `write` see one
/// slice.
///
/// Invariants: `start <= end <= capacity`; the buffered bytes are
/// `storage[start..end]`; `storage` is `None` only when the buffer holds no
/// bytes; when it is `Some`, it is either a pool block (length `capacity`)
/// or a small block of its own (length below `capacity`), made by
/// [`ByteBuf::release`] to the size of what was buffered then; consuming
/// leaves it partly used, it is dropped once empty, and it is swapped for a
/// pool block before anything is added.
#[derive(Debug)]
pub struct ByteBuf {
    storage: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    capacity: usize,
}

impl ByteBuf {
    /// An empty buffer that will hold at most `capacity` bytes. It takes no
    /// storage until the first byte is put in.
    pub fn new(capacity: usize) -> ByteBuf {
        ByteBuf {
            storage: None,
            start: 0,
            end: 0,
            capacity,
        }
    }

    /// Bytes buffered.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// No bytes buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The most bytes this buffer holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Room left, in bytes.
    pub fn free(&self) -> usize {
        self.capacity - self.len()
    }

    /// No room left.
    pub fn is_full(&self) -> bool {
        self.len() == self.capacity
    }

    /// Whether the buffer holds storage (a pool block or a small one).
    pub fn holds_storage(&self) -> bool {
        self.storage.is_some()
    }

    /// Bytes of storage held now.
    pub fn storage_bytes(&self) -> usize {
        self.storage.as_ref().map_or(0, |s| s.len())
    }

    /// The buffered bytes, oldest first.
    pub fn data(&self) -> &[u8] {
        match &self.storage {
            Some(s) => &s[self.start..self.end],
            None => &[],
        }
    }

    /// Drops the `n` oldest bytes (they were sent, or handled).
    ///
    /// # Panics
    /// If `n` exceeds [`ByteBuf::len`]: that is a bug in the caller, never a
    /// consequence of peer input.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consume {n} of {} bytes", self.len());
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops every buffered byte.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Appends as much of `bytes` as fits and returns how much that was.
    pub fn append(&mut self, pool: &mut BufPool, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.free());
        if n > 0 {
            self.room(pool, n)[..n].copy_from_slice(&bytes[..n]);
            self.commit(n);
        }
        n
    }

    /// The free room after the buffered bytes, to be filled (by `read`, or a
    /// service) and then declared with [`ByteBuf::commit`]. Takes storage
    /// from `pool` if the buffer has none. It is empty only when the buffer
    /// is full, and at least half of [`ByteBuf::free`] otherwise.
    pub fn spare(&mut self, pool: &mut BufPool) -> &mut [u8] {
        // Compacting only when the tail room is under half the free room
        // keeps the copies rare: each moves at most `len` bytes and is paid
        // back by the room it frees, and reads never shrink to slivers at the
        // end of the block.
        let half = self.free().div_ceil(2);
        self.room(pool, half)
    }

    /// The tail room, moved to the front first if it is under `at_least`
    /// bytes (which must not exceed [`ByteBuf::free`]).
    fn room(&mut self, pool: &mut BufPool, at_least: usize) -> &mut [u8] {
        debug_assert_eq!(pool.block_size(), self.capacity, "buffer and pool disagree");
        debug_assert!(at_least <= self.free());
        if self
            .storage
            .as_ref()
            .is_some_and(|s| s.len() < self.capacity)
        {
            // A small block of its own: back into a pool block to grow.
            let mut block = pool.take();
            let len = self.len();
            block[..len].copy_from_slice(self.data());
            self.storage = Some(block);
            self.start = 0;
            self.end = len;
        }
        let storage = self.storage.get_or_insert_with(|| pool.take());
        if self.capacity - self.end < at_least {
            storage.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut storage[self.end..]
    }

    /// Declares that the first `n` bytes of the last [`ByteBuf::spare`] now
    /// hold data.
    ///
    /// # Panics
    /// If `n` exceeds the room [`ByteBuf::spare`] gave: a caller bug.
    pub fn commit(&mut self, n: usize) {
        assert!(
            self.storage.is_some() && self.end + n <= self.capacity,
            "commit {n} past the spare room"
        );
        self.end += n;
    }

    /// Gives the pool block back to `pool` at the end of a turn: when the
    /// buffer is empty (an idle connection holds no storage), and also when
    /// it holds at most a quarter of its capacity, which then moves to a
    /// small block of its own sized to it (a copy of at most that quarter,
    /// paid back by the block freed).
    pub fn release(&mut self, pool: &mut BufPool) {
        let Some(storage) = self.storage.take() else {
            return;
        };
        let len = self.len();
        if len == 0 {
            self.start = 0;
            self.end = 0;
            if storage.len() == self.capacity {
                pool.give(storage);
            }
        } else if storage.len() == self.capacity && len <= self.capacity / 4 {
            self.storage = Some(Box::from(&storage[self.start..self.end]));
            self.start = 0;
            self.end = len;
            pool.give(storage);
        } else {
            self.storage = Some(storage);
        }
    }
}

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
    fn new_buffer_holds_no_storage() {
        let buf = ByteBuf::new(16);
        assert!(!buf.holds_storage());
        assert!(buf.is_empty());
        assert_eq!(buf.free(), 16);
        assert_eq!(buf.data(), b"");
    }

    #[test]
    fn append_stops_at_capacity() {
        let mut pool = BufPool::new(8);
        let mut buf = ByteBuf::new(8);
        assert_eq!(buf.append(&mut pool, b"hello"), 5);
        assert_eq!(buf.append(&mut pool, b"world"), 3);
        assert!(buf.is_full());
        assert_eq!(buf.data(), b"hellowor");
        assert_eq!(buf.append(&mut pool, b"!"), 0);
        assert!(buf.spare(&mut pool).is_empty());
    }

    #[test]
    fn consume_then_append_keeps_fifo_order() {
        let mut pool = BufPool::new(8);
        let mut buf = ByteBuf::new(8);
        buf.append(&mut pool, b"abcdefg");
        buf.consume(5);
        assert_eq!(buf.data(), b"fg");
        // Tail room is 1 byte, free room 6: the append compacts first.
        assert_eq!(buf.append(&mut pool, b"hijklm"), 6);
        assert_eq!(buf.data(), b"fghijklm");
    }

    #[test]
    fn spare_and_commit_fill_like_a_read() {
        let mut pool = BufPool::new(4);
        let mut buf = ByteBuf::new(4);
        let room = buf.spare(&mut pool);
        assert_eq!(room.len(), 4);
        room[..3].copy_from_slice(b"xyz");
        buf.commit(3);
        assert_eq!(buf.data(), b"xyz");
    }

    #[test]
    fn release_returns_storage_only_when_empty() {
        let mut pool = BufPool::new(4);
        let mut buf = ByteBuf::new(4);
        buf.append(&mut pool, b"abc");
        buf.release(&mut pool);
        assert_eq!(
            buf.storage_bytes(),
            4,
            "a well-filled buffer keeps its block"
        );
        buf.consume(3);
        buf.release(&mut pool);
        assert!(!buf.holds_storage());
        assert_eq!(pool.idle_blocks(), 1);
        // The next use takes the pooled block back.
        buf.append(&mut pool, b"c");
        assert_eq!(pool.idle_blocks(), 0);
    }

    #[test]
    fn a_few_bytes_left_between_turns_hold_storage_sized_to_them() {
        let mut pool = BufPool::new(64);
        let mut buf = ByteBuf::new(64);
        buf.append(&mut pool, b"an unfinished li");
        buf.consume(3);
        buf.release(&mut pool);
        assert_eq!(buf.storage_bytes(), 13, "sized to the bytes");
        assert_eq!(pool.idle_blocks(), 1, "the block went back");
        assert_eq!(buf.data(), b"unfinished li");
        // Growing takes a block again, keeping the bytes in order.
        buf.append(&mut pool, b"ne\n");
        assert_eq!(buf.storage_bytes(), 64);
        assert_eq!(buf.data(), b"unfinished line\n");
        let spare = buf.spare(&mut pool).len();
        assert_eq!(spare, 64 - 16);
        buf.consume(16);
        buf.release(&mut pool);
        assert!(!buf.holds_storage());
        // Small storage that empties is dropped, not pooled.
        buf.append(&mut pool, b"x");
        buf.release(&mut pool);
        buf.consume(1);
        buf.release(&mut pool);
        assert!(!buf.holds_storage());
        assert_eq!(pool.idle_blocks(), 1);
    }

    #[test]
    fn pool_keeps_a_bounded_number_of_blocks() {
        let block = POOL_KEEP_BYTES / 2;
        let mut pool = BufPool::new(block);
        let mut bufs: Vec<ByteBuf> = (0..10).map(|_| ByteBuf::new(block)).collect();
        for b in &mut bufs {
            b.append(&mut pool, b"x");
            b.consume(1);
        }
        for b in &mut bufs {
            b.release(&mut pool);
        }
        assert_eq!(pool.idle_blocks(), 4, "the floor of four blocks applies");
    }

    #[test]
    #[should_panic(expected = "consume")]
    fn consuming_more_than_buffered_is_a_bug() {
        let mut buf = ByteBuf::new(4);
        buf.consume(1);
    }

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

    #[test]
    fn random_operations_match_a_vecdeque() {
        // A small deterministic generator: the buffer must behave like an
        // unbounded FIFO truncated at its capacity, whatever the sequence.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut pool = BufPool::new(37);
        let mut buf = ByteBuf::new(37);
        let mut model: std::collections::VecDeque<u8> = std::collections::VecDeque::new();
        let mut counter = 0u8;
        for _ in 0..20_000 {
            match next() % 3 {
                0 => {
                    let n = (next() % 20) as usize;
                    let bytes: Vec<u8> = (0..n)
                        .map(|_| {
                            counter = counter.wrapping_add(1);
                            counter
                        })
                        .collect();
                    let taken = buf.append(&mut pool, &bytes);
                    assert_eq!(taken, n.min(37 - model.len()));
                    model.extend(&bytes[..taken]);
                }
                1 => {
                    let n = (next() as usize) % (model.len() + 1);
                    buf.consume(n);
                    model.drain(..n);
                }
                _ => buf.release(&mut pool),
            }
            assert_eq!(buf.len(), model.len());
            assert!(buf.data().iter().eq(model.iter()));
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::collections::VecDeque;

        #[derive(Clone, Debug)]
        enum BufOp {
            Append(usize),
            /// Fill this share (of 256) of the spare room, then commit it.
            SpareCommit(u8),
            /// Consume this share (of 256) of what is buffered.
            Consume(u8),
            Clear,
            Release,
        }

        fn buf_op() -> impl Strategy<Value = BufOp> {
            prop_oneof![
                3 => (0usize..40).prop_map(BufOp::Append),
                2 => any::<u8>().prop_map(BufOp::SpareCommit),
                3 => any::<u8>().prop_map(BufOp::Consume),
                1 => Just(BufOp::Clear),
                2 => Just(BufOp::Release),
            ]
        }

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

            /// Any sequence of operations: never above capacity, bytes out
            /// in the order they went in, storage as documented (none when
            /// empty, a small block after a release with few bytes left,
            /// the pool block given back), spare room within the bounds
            /// `spare` promises.
            #[test]
            fn byte_buf_is_a_bounded_fifo_whose_storage_follows_the_bytes(
                capacity in 1usize..64,
                ops in proptest::collection::vec(buf_op(), 0..60),
            ) {
                let mut pool = BufPool::new(capacity);
                let mut buf = ByteBuf::new(capacity);
                let mut model = VecDeque::new();
                let mut next = 0u8;
                let mut numbered = |n: usize| -> Vec<u8> {
                    (0..n).map(|_| { next = next.wrapping_add(1); next }).collect()
                };
                let mut pooled = false;
                for op in ops {
                    match op {
                        BufOp::Append(n) => {
                            let bytes = numbered(n);
                            let taken = buf.append(&mut pool, &bytes);
                            prop_assert_eq!(taken, n.min(capacity - model.len()));
                            model.extend(&bytes[..taken]);
                        }
                        BufOp::SpareCommit(share) => {
                            let free = buf.free();
                            let spare = buf.spare(&mut pool);
                            prop_assert!(spare.len() <= free);
                            prop_assert!(spare.len() >= free.div_ceil(2));
                            let n = spare.len() * share as usize / 255;
                            let bytes = numbered(n);
                            spare[..n].copy_from_slice(&bytes);
                            buf.commit(n);
                            model.extend(bytes);
                        }
                        BufOp::Consume(share) => {
                            let n = model.len() * share as usize / 255;
                            buf.consume(n);
                            model.drain(..n);
                        }
                        BufOp::Clear => {
                            buf.clear();
                            model.clear();
                        }
                        BufOp::Release => {
                            let held = buf.storage_bytes();
                            let idle = pool.idle_blocks();
                            buf.release(&mut pool);
                            let len = model.len();
                            if len == 0 {
                                prop_assert!(!buf.holds_storage());
                            } else if held == capacity && len <= capacity / 4 {
                                prop_assert_eq!(buf.storage_bytes(), len, "small storage");
                            } else {
                                prop_assert_eq!(buf.storage_bytes(), held);
                            }
                            if held == capacity && len <= capacity / 4 {
                                prop_assert_eq!(pool.idle_blocks(), idle + 1, "the block went back");
                            }
                        }
                    }
                    pooled |= buf.storage_bytes() == capacity;
                    prop_assert!(buf.len() <= capacity);
                    prop_assert_eq!(buf.len(), model.len());
                    prop_assert_eq!(buf.free(), capacity - model.len());
                    prop_assert_eq!(buf.is_full(), model.len() == capacity);
                    prop_assert!(buf.data().iter().eq(model.iter()));
                    prop_assert!(buf.holds_storage() || model.is_empty());
                    if pooled {
                        // One buffer, one block: in the buffer or the pool.
                        let in_buf = usize::from(buf.storage_bytes() == capacity);
                        prop_assert_eq!(pool.idle_blocks() + in_buf, 1);
                    }
                }
            }

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
