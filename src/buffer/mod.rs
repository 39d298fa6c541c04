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
//!
//! The parts: [`ByteBuf`] (in `bytebuf.rs`), its [`BufPool`] (`pool.rs`),
//! and the shared output, [`Chunk`], [`ChunkWriter`], [`ChunkPool`] and
//! [`SharedQueue`] (`chunk.rs`).

mod bytebuf;
mod chunk;
mod pool;

pub use bytebuf::ByteBuf;
pub use chunk::{
    Chunk, ChunkPool, ChunkWriter, ENTRY_COST, POOLED_CHUNK_BYTES, POOLED_CHUNKS,
    SHARED_CHUNK_SLACK, SharedQueue,
};
pub use pool::BufPool;

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
