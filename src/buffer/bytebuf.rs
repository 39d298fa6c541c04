//! [`ByteBuf`]: a bounded FIFO of bytes whose storage comes from a
//! [`BufPool`] while it holds bytes and follows them between turns (see the
//! module docs of [`crate::buffer`]). No I/O here.

use super::BufPool;

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
    #[should_panic(expected = "consume")]
    fn consuming_more_than_buffered_is_a_bug() {
        let mut buf = ByteBuf::new(4);
        buf.consume(1);
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
        }
    }
}
