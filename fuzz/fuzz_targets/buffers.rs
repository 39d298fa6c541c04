//! `ByteBuf` and `SharedQueue` under arbitrary operation sequences, each
//! against a plain model (a `VecDeque` of bytes, a list of unsent chunk
//! tails): contents, lengths, the room `spare` gives, the storage an empty
//! buffer holds after `release`, and where `keep_current_line` cuts.
#![no_main]

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use libfuzzer_sys::fuzz_target;
use tcp_reactor::buffer::{BufPool, ByteBuf, Chunk, SharedQueue};
use tcp_reactor_fuzz::Input;

/// A writer that takes at most `limit` bytes, as a kernel send queue does.
struct Sink {
    limit: usize,
    got: Vec<u8>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.limit);
        self.got.extend_from_slice(&buf[..n]);
        self.limit -= n;
        Ok(n)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for b in bufs {
            let n = self.write(b)?;
            total += n;
            if n < b.len() {
                break;
            }
        }
        Ok(total)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn check_buf(buf: &ByteBuf, model: &VecDeque<u8>) {
    let flat: Vec<u8> = model.iter().copied().collect();
    assert_eq!(buf.data(), &flat[..]);
    assert_eq!(buf.len(), model.len());
    assert!(buf.len() <= buf.capacity());
    assert_eq!(buf.free(), buf.capacity() - buf.len());
    assert_eq!(buf.is_full(), buf.len() == buf.capacity());
    assert_eq!(buf.is_empty(), model.is_empty());
}

fn byte_bufs(input: &mut Input<'_>) {
    let cap = 1 + usize::from(input.byte() % 64);
    let mut pool = BufPool::new(cap);
    let mut bufs = [ByteBuf::new(cap), ByteBuf::new(cap)];
    let mut models = [VecDeque::new(), VecDeque::new()];
    while !input.is_empty() {
        let op = input.byte();
        let i = usize::from(op >> 7);
        let (buf, model) = (&mut bufs[i], &mut models[i]);
        match op % 6 {
            0 => {
                let n = usize::from(input.byte() % 80);
                let bytes = input.take(n);
                let took = buf.append(&mut pool, bytes);
                assert_eq!(took, bytes.len().min(cap - model.len()));
                model.extend(&bytes[..took]);
            }
            1 => {
                let free = buf.free();
                let spare = buf.spare(&mut pool);
                if free == 0 {
                    assert!(spare.is_empty(), "spare room in a full buffer");
                } else {
                    assert!(spare.len() >= free.div_ceil(2), "spare under half the room");
                }
                assert!(spare.len() <= free, "spare past the capacity");
                let n = usize::from(input.byte()) % (spare.len() + 1);
                let bytes = input.take(n);
                spare[..bytes.len()].copy_from_slice(bytes);
                buf.commit(bytes.len());
                model.extend(bytes);
            }
            2 => {
                let n = usize::from(input.byte()) % (model.len() + 1);
                buf.consume(n);
                model.drain(..n);
            }
            3 => {
                buf.clear();
                model.clear();
            }
            _ => {
                buf.release(&mut pool);
                if model.is_empty() {
                    assert!(!buf.holds_storage(), "an empty buffer kept storage");
                } else if model.len() <= cap / 4 {
                    // A pool block is swapped for one sized to the bytes; a
                    // small block already held is kept as it is (it may hold
                    // bytes consumed since), never more than a quarter.
                    assert!(
                        buf.storage_bytes() <= cap / 4,
                        "a small remainder kept a block"
                    );
                }
            }
        }
        check_buf(buf, model);
    }
}

/// A queued chunk's unsent bytes, and whether its sending has begun.
struct Piece {
    unsent: Vec<u8>,
    begun: bool,
}

fn shared_queue(input: &mut Input<'_>) {
    let mut queue = SharedQueue::default();
    let mut model: VecDeque<Piece> = VecDeque::new();
    while !input.is_empty() {
        match input.byte() % 6 {
            0 | 1 => {
                let n = usize::from(input.byte() % 40);
                let chunk = Chunk::from(input.take(n));
                // `from` at a line boundary: 0, just past a newline, or the end.
                let bounds: Vec<usize> = std::iter::once(0)
                    .chain(
                        chunk
                            .iter()
                            .enumerate()
                            .filter(|(_, b)| **b == b'\n')
                            .map(|(i, _)| i + 1),
                    )
                    .chain(std::iter::once(chunk.len()))
                    .collect();
                let from = bounds[usize::from(input.byte()) % bounds.len()];
                if from < chunk.len() {
                    model.push_back(Piece {
                        unsent: chunk[from..].to_vec(),
                        begun: false,
                    });
                }
                queue.push_from(chunk, from);
            }
            2 => {
                let len: usize = model.iter().map(|p| p.unsent.len()).sum();
                let mut n = usize::from(input.byte()) % (len + 1);
                queue.consume(n);
                while n > 0 {
                    let front = model.front_mut().expect("n is within len");
                    if n < front.unsent.len() {
                        front.unsent.drain(..n);
                        front.begun = true;
                        n = 0;
                    } else {
                        n -= front.unsent.len();
                        model.pop_front();
                    }
                }
            }
            3 => {
                queue.keep_current_line();
                match model.front_mut() {
                    Some(front) if front.begun => {
                        if let Some(at) = front.unsent.iter().position(|&b| b == b'\n') {
                            front.unsent.truncate(at + 1);
                        }
                        model.truncate(1);
                    }
                    _ => model.clear(),
                }
            }
            4 => {
                queue.clear();
                model.clear();
            }
            _ => {
                let mut sink = Sink {
                    limit: usize::from(input.byte()),
                    got: Vec::new(),
                };
                let n = queue.write_to(&mut sink).expect("the sink never fails");
                assert_eq!(n, sink.got.len());
                let expected: Vec<u8> = model
                    .iter()
                    .take(64)
                    .flat_map(|p| p.unsent.iter().copied())
                    .take(n)
                    .collect();
                assert_eq!(sink.got, expected, "write_to sent other bytes than queued");
                let mut left = n;
                while left > 0 {
                    let front = model.front_mut().expect("written bytes were queued");
                    if left < front.unsent.len() {
                        front.unsent.drain(..left);
                        front.begun = true;
                        left = 0;
                    } else {
                        left -= front.unsent.len();
                        model.pop_front();
                    }
                }
            }
        }
        let len: usize = model.iter().map(|p| p.unsent.len()).sum();
        assert_eq!(queue.len(), len);
        assert_eq!(queue.is_empty(), len == 0);
        assert_eq!(queue.is_mid_chunk(), model.front().is_some_and(|p| p.begun));
        assert!(queue.cost() >= len);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    if input.byte().is_multiple_of(2) {
        byte_bufs(&mut input);
    } else {
        shared_queue(&mut input);
    }
});
