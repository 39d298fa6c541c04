//! The free list of equally sized storage blocks that
//! [`ByteBuf`](super::ByteBuf)s borrow while they hold bytes. No I/O here.

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

    pub(super) fn take(&mut self) -> Box<[u8]> {
        self.free
            .pop()
            .unwrap_or_else(|| vec![0u8; self.block].into_boxed_slice())
    }

    pub(super) fn give(&mut self, block: Box<[u8]>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::ByteBuf;

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
}
