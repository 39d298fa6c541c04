//! The chat service: every complete line a client sends goes to every other
//! chat client as `[PEER] line`.
//!
//! A partial line waits for its newline, or is sent at the client's
//! half-close. A line that fills the whole receive buffer without a newline is
//! refused with `ERR line too long` and the connection closes: the buffer is
//! the longest line the server will hold.
//!
//! Complete lines become shared chunks of whole lines (at most
//! [`CHUNK_BYTES`], or one longer line), written straight into a chunk from
//! [`Io::chunks`] and handed to the reactor as [`Effect::Broadcast`]; the
//! reactor queues that one chunk on every receiver, so a line to 500 clients
//! is not copied 500 times, and gives it back to the pool, which refills it
//! once every receiver has sent it, so steady chatting allocates nothing
//! per line.
//!
//! Flow control: each call may broadcast at most `io.broadcast_room` bytes
//! (each chunk's queue entry counted too, as receivers' queues count it),
//! which the reactor sets to nothing while some receiver is behind (over its
//! soft limit). A line goes out whenever some room is left, so a call
//! overshoots the room by at most one line ([`longest_line_cost`]). Lines
//! that do not fit stay in the receive buffer, unread by
//! the service, and the service answers [`Effect::WaitForRoom`]: the sender's
//! reading stops once its buffer is full, TCP pushes back on it, and a paste
//! goes out at the pace of the receivers that keep up. Joins, leaves and
//! judging receivers are the reactor's business (it knows the members). No
//! I/O here.

use log::debug;

use super::{Effect, Io, Outcome};
use crate::buffer::ChunkWriter;

/// Most bytes of lines in one shared chunk: small enough that receivers are
/// judged, and pasters paced, in fine steps; large enough that a paste is not
/// one allocation per line.
pub const CHUNK_BYTES: usize = 4096;

/// The most bytes a line takes in the room beyond its text: the `[PEER] `
/// prefix (at most 61 bytes: an IPv6 address with a scope id, and a port)
/// and the newline.
pub const LINE_OVERHEAD: usize = 62;

/// The most one broadcast line can add to a receiver's queue (see
/// [`crate::buffer::SharedQueue::cost`]) with receive buffers of `recv_buf`
/// bytes: the longest complete line a buffer holds (its newline included),
/// its prefix, and the entry of a chunk of its own.
pub fn longest_line_cost(recv_buf: usize) -> usize {
    recv_buf.saturating_add(LINE_OVERHEAD + crate::buffer::ENTRY_COST)
}

/// Per-connection state: the receive buffer holds any partial line.
#[derive(Debug, Default)]
pub struct Chat {
    /// Leading bytes of the input already searched and found to hold no
    /// newline, so a long partial line is not searched again on every read.
    scanned: usize,
    /// A line was too long: the bytes of [`LINE_TOO_LONG`] written so far.
    /// The send buffer may be smaller than the refusal, so it goes out as
    /// room allows, and the close comes once all of it is out. A `u8` (the
    /// refusal is shorter than 256 bytes) keeps the connection slot small.
    refused: Option<u8>,
}

/// What a chat client that sent too long a line is told before it is closed.
pub const LINE_TOO_LONG: &[u8] = b"ERR line too long\n";

// `Chat::refused` counts its bytes in a `u8`.
const _: () = assert!(LINE_TOO_LONG.len() <= u8::MAX as usize);

impl Chat {
    /// The refusal of a line too long is not all in the send buffer yet.
    pub fn is_producing(&self) -> bool {
        self.refused
            .is_some_and(|sent| usize::from(sent) < LINE_TOO_LONG.len())
    }

    /// Turns complete lines of the input into one broadcast chunk, as far as
    /// the broadcast room allows.
    pub fn process(&mut self, io: &mut Io<'_>) -> Outcome {
        if let Some(sent) = &mut self.refused {
            // Nothing after the refused line is read.
            io.input.clear();
            let written = io.write(&LINE_TOO_LONG[usize::from(*sent)..]);
            // At most the rest of the refusal, whose length fits in a u8.
            *sent += written as u8;
            return if usize::from(*sent) == LINE_TOO_LONG.len() {
                Outcome::close_after_flush()
            } else {
                Outcome::proceed(false)
            };
        }
        let mut chunk: Option<ChunkWriter> = None;
        let mut consumed = 0;
        let mut waiting = false;
        {
            let data = io.input.data();
            while chunk.as_ref().map_or(0, ChunkWriter::len) < CHUNK_BYTES {
                let rest = &data[consumed..];
                let from = self.scanned.min(rest.len());
                let line = match memchr::memchr(b'\n', &rest[from..]) {
                    Some(at) => &rest[..from + at + 1],
                    // At half-close, a partial line is a line too.
                    None if io.eof && !rest.is_empty() => rest,
                    None => {
                        self.scanned = rest.len();
                        break;
                    }
                };
                if io.broadcast_room == 0 {
                    waiting = true;
                    break;
                }
                // Both only once a line is complete: a partial line costs
                // nothing per read, and takes no chunk from the pool.
                if chunk.is_none() {
                    // A chunk costs each receiver an entry in its queue.
                    io.broadcast_room = io.broadcast_room.saturating_sub(crate::buffer::ENTRY_COST);
                }
                let chunk = chunk.get_or_insert_with(|| match io.chunks.as_deref_mut() {
                    Some(pool) => pool.take(),
                    None => ChunkWriter::fresh(),
                });
                let before = chunk.len();
                push_line(chunk, io.peer, line.strip_suffix(b"\n").unwrap_or(line));
                io.broadcast_room = io.broadcast_room.saturating_sub(chunk.len() - before);
                consumed += line.len();
                self.scanned = 0;
            }
        }
        io.input.consume(consumed);
        let outcome = if io.input.is_full() && self.scanned == io.input.len() {
            debug!(
                "chat {}: line longer than {} bytes",
                io.peer,
                io.input.capacity()
            );
            io.input.clear();
            self.scanned = 0;
            self.refused = Some(0);
            self.process(io)
        } else if io.eof && io.input.is_empty() {
            Outcome::close_after_flush()
        } else {
            Outcome::proceed(false)
        };
        if let Some(chunk) = chunk {
            outcome.with_effect(Effect::Broadcast(chunk.share()))
        } else if waiting {
            outcome.with_effect(Effect::WaitForRoom)
        } else {
            outcome
        }
    }
}

/// Appends `line` (its `\r` dropped) to `chunk` as the room sees it, after
/// the `[PEER] ` prefix. The prefix is formatted straight into the chunk,
/// whose storage a refilled chunk already has: no allocation, and no
/// per-connection copy of it to keep.
fn push_line(chunk: &mut ChunkWriter, peer: std::net::SocketAddr, line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    chunk.append_line(peer, line);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{BufPool, ByteBuf, Chunk};
    use crate::service::Next;
    use crate::service::testing::random_split;

    /// Feeds `pieces`; returns what was broadcast, what was written back to
    /// the sender, and whether the service asked to close.
    fn chat(pieces: &[&[u8]], eof: bool) -> (Vec<u8>, Vec<u8>, bool) {
        let mut pool = BufPool::new(32);
        let mut out_pool = BufPool::new(64);
        let mut input = ByteBuf::new(32);
        let mut output = ByteBuf::new(64);
        let peer = "127.0.0.1:9".parse().unwrap();
        let now = std::time::Instant::now();
        let mut service = Chat::default();
        let mut broadcast = Vec::new();
        let last = pieces.len();
        for (i, piece) in pieces.iter().enumerate() {
            input.append(&mut pool, piece);
            let mut io = Io::new(&mut input, &mut output, &mut out_pool, peer, now);
            io.eof = eof && i + 1 == last;
            loop {
                let outcome = service.process(&mut io);
                if outcome.next == Next::CloseAfterFlush {
                    if let Some(Effect::Broadcast(chunk)) = &outcome.effect {
                        broadcast.extend_from_slice(chunk);
                    }
                    return (broadcast, output.data().to_vec(), true);
                }
                match &outcome.effect {
                    Some(Effect::Broadcast(chunk)) => broadcast.extend_from_slice(chunk),
                    _ => break,
                }
            }
        }
        (broadcast, output.data().to_vec(), false)
    }

    #[test]
    fn complete_lines_are_broadcast_with_the_sender_prefix() {
        let (sent, back, closed) = chat(&[b"hi\nthere\r\npart"], false);
        assert_eq!(sent, b"[127.0.0.1:9] hi\n[127.0.0.1:9] there\n");
        assert!(back.is_empty() && !closed);
    }

    #[test]
    fn a_partial_line_goes_out_at_half_close() {
        let (sent, _, closed) = chat(&[b"a\nlast words"], true);
        assert_eq!(sent, b"[127.0.0.1:9] a\n[127.0.0.1:9] last words\n");
        assert!(closed);
    }

    #[test]
    fn the_split_of_the_input_does_not_change_the_lines() {
        let text = b"one\ntwo two\n\nthree\n";
        let (expected, _, _) = chat(&[text], false);
        for seed in 1..20 {
            let (sent, _, _) = chat(&random_split(text, seed), false);
            assert_eq!(sent, expected, "seed {seed}");
        }
    }

    #[test]
    fn a_line_longer_than_the_buffer_is_refused_and_closes() {
        let long = [b'x'; 40];
        let (sent, back, closed) = chat(&[&long[..20], &long[20..]], false);
        assert!(sent.is_empty());
        assert_eq!(back, LINE_TOO_LONG);
        assert!(closed);
    }

    #[test]
    fn a_refusal_larger_than_the_send_buffer_goes_out_whole() {
        // Found by the property tests: with a send buffer of one byte, the
        // refusal was cut to "E" and the connection closed.
        let long = [b'x'; 20];
        let pieces: Vec<&[u8]> = vec![&long];
        let out = crate::service::testing::run(
            crate::service::ServiceKind::Chat,
            &crate::service::testing::config(),
            &pieces,
            true,
            false,
            8,
            1,
        );
        assert_eq!(out.output, LINE_TOO_LONG);
        assert!(out.closed);
    }

    #[test]
    fn without_room_lines_wait_in_the_input_and_the_sender_waits() {
        let mut pool = BufPool::new(64);
        let mut out_pool = BufPool::new(64);
        let mut input = ByteBuf::new(64);
        let mut output = ByteBuf::new(64);
        let peer = "127.0.0.1:9".parse().unwrap();
        let now = std::time::Instant::now();
        let mut service = Chat::default();
        input.append(&mut pool, b"one\ntwo\n");
        let mut io = Io::new(&mut input, &mut output, &mut out_pool, peer, now);
        io.broadcast_room = 0;
        let outcome = service.process(&mut io);
        assert_eq!(outcome.effect, Some(Effect::WaitForRoom));
        assert_eq!(io.input.len(), 8, "nothing consumed");
        // Room for one line: one goes, the other waits.
        io.broadcast_room = 1;
        let outcome = service.process(&mut io);
        assert_eq!(
            outcome.effect,
            Some(Effect::Broadcast(Chunk::from(&b"[127.0.0.1:9] one\n"[..])))
        );
        assert_eq!(io.broadcast_room, 0);
        assert_eq!(io.input.data(), b"two\n");
        // A buffer full of complete lines waiting for room is not a line
        // too long.
        io.input.append(&mut pool, &[b'z'; 59]);
        io.input.append(&mut pool, b"\n");
        assert!(io.input.is_full());
        let outcome = service.process(&mut io);
        assert_eq!(outcome.effect, Some(Effect::WaitForRoom));
        assert_eq!(outcome.next, Next::Continue);
    }

    #[test]
    fn the_longest_prefix_is_within_the_line_overhead() {
        let peer: std::net::SocketAddr =
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535"
                .parse()
                .unwrap();
        let mut chunk = ChunkWriter::fresh();
        push_line(&mut chunk, peer, b"");
        assert_eq!(chunk.len(), LINE_OVERHEAD);
    }

    #[test]
    fn a_turn_overshoots_its_room_by_one_line_at_most() {
        // Calls share the room as the calls of one turn do; what they queue
        // on a receiver (bytes and one entry per chunk) stays within the
        // room plus the cost of one line.
        let mut pool = BufPool::new(1024);
        let mut out_pool = BufPool::new(64);
        let mut input = ByteBuf::new(1024);
        let mut output = ByteBuf::new(64);
        let peer = "127.0.0.1:9".parse().unwrap();
        let now = std::time::Instant::now();
        for room in [1, 50, 100, 333, 1000] {
            let mut service = Chat::default();
            input.clear();
            input.append(&mut pool, b"a\n");
            input.append(&mut pool, &[b'x'; 900]);
            input.append(&mut pool, b"\nb\nc\n");
            let mut io = Io::new(&mut input, &mut output, &mut out_pool, peer, now);
            io.broadcast_room = room;
            let mut queued = 0;
            while let Some(Effect::Broadcast(chunk)) = service.process(&mut io).effect {
                queued += chunk.len() + crate::buffer::ENTRY_COST;
            }
            assert!(queued > 0, "some room, some line");
            assert!(
                queued <= room + longest_line_cost(1024),
                "room {room}: {queued} queued"
            );
        }
    }

    #[test]
    fn chunks_hold_whole_lines_and_stay_near_the_chunk_size() {
        let mut pool = BufPool::new(64 * 1024);
        let mut out_pool = BufPool::new(64);
        let mut input = ByteBuf::new(64 * 1024);
        let mut output = ByteBuf::new(64);
        let peer = "127.0.0.1:9".parse().unwrap();
        let now = std::time::Instant::now();
        let mut service = Chat::default();
        let lines: Vec<u8> = (0..2000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        input.append(&mut pool, &lines);
        let mut all = Vec::new();
        loop {
            let mut io = Io::new(&mut input, &mut output, &mut out_pool, peer, now);
            let Some(Effect::Broadcast(chunk)) = service.process(&mut io).effect else {
                break;
            };
            assert!(chunk.ends_with(b"\n"));
            assert!(chunk.len() < CHUNK_BYTES + 64, "{}", chunk.len());
            all.extend_from_slice(&chunk);
        }
        let expected: Vec<u8> = (0..2000)
            .flat_map(|i| format!("[127.0.0.1:9] {i}\n").into_bytes())
            .collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn with_a_pool_the_next_line_refills_the_chunk_every_receiver_let_go() {
        let mut pool = BufPool::new(64);
        let mut out_pool = BufPool::new(64);
        let mut chunks = crate::buffer::ChunkPool::default();
        let mut input = ByteBuf::new(64);
        let mut output = ByteBuf::new(64);
        let peer = "127.0.0.1:9".parse().unwrap();
        let now = std::time::Instant::now();
        let mut service = Chat::default();
        let mut say = |line: &[u8], chunks: &mut crate::buffer::ChunkPool| {
            input.append(&mut pool, line);
            let mut io = Io::new(&mut input, &mut output, &mut out_pool, peer, now);
            io.chunks = Some(chunks);
            match service.process(&mut io).effect {
                Some(Effect::Broadcast(chunk)) => chunk,
                other => panic!("{other:?}"),
            }
        };
        let first = say(b"one\n", &mut chunks);
        let held = first.clone();
        chunks.recycle(first);
        // A receiver still holds the first chunk: the next is another.
        let second = say(b"two\n", &mut chunks);
        assert_eq!(&*second, b"[127.0.0.1:9] two\n");
        assert_ne!(second.as_ptr(), held.as_ptr());
        assert_eq!(&*held, b"[127.0.0.1:9] one\n", "untouched while held");
        let at = held.as_ptr();
        drop(held);
        chunks.recycle(second);
        // Let go: the oldest is written again, in place.
        let third = say(b"six\n", &mut chunks);
        assert_eq!(&*third, b"[127.0.0.1:9] six\n");
        assert_eq!(third.as_ptr(), at);
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::{CHUNK_BYTES, LINE_TOO_LONG};
        use crate::service::testing::{Conversation, config, converse, hops, no_queries, steps};
        use crate::service::{Effect, ServiceKind};

        const PREFIX: &[u8] = b"[127.0.0.1:4000] ";

        /// What the room should receive from `input` through a receive
        /// buffer of `recv_cap` bytes: every complete line prefixed (its
        /// `\r` dropped), and the partial last line too at the half-close;
        /// but nothing from a line that fills the buffer without a newline
        /// on, which is refused. Returns the broadcast bytes, the offsets
        /// where lines end in them, and whether a line was too long.
        fn expected(input: &[u8], recv_cap: usize, eof: bool) -> (Vec<u8>, Vec<usize>, bool) {
            let mut out = Vec::new();
            let mut ends = Vec::new();
            let mut rest = input;
            while !rest.is_empty() {
                let newline = rest.iter().position(|&b| b == b'\n');
                let content_len = newline.unwrap_or(rest.len());
                if content_len >= recv_cap {
                    return (out, ends, true);
                }
                if newline.is_none() && !eof {
                    break;
                }
                let content = &rest[..content_len];
                out.extend_from_slice(PREFIX);
                out.extend_from_slice(content.strip_suffix(b"\r").unwrap_or(content));
                out.push(b'\n');
                ends.push(out.len());
                rest = &rest[(content_len + 1).min(rest.len())..];
            }
            (out, ends, false)
        }

        /// Checks a conversation against [`expected`] and the flow-control
        /// rules.
        fn check(
            run: &Conversation,
            input: &[u8],
            recv_cap: usize,
            eof: bool,
        ) -> Result<(), TestCaseError> {
            let (lines, ends, too_long) = expected(input, recv_cap, eof);
            let sent: Vec<u8> = run
                .broadcasts
                .iter()
                .flat_map(|c| c.iter().copied())
                .collect();
            prop_assert_eq!(&sent, &lines);
            // Each chunk is whole lines: it ends where a line ends, and it
            // passes CHUNK_BYTES only by its last line.
            let mut at = 0;
            for chunk in &run.broadcasts {
                let start = at;
                at += chunk.len();
                prop_assert!(
                    ends.binary_search(&at).is_ok(),
                    "chunk ends mid-line at {}",
                    at
                );
                let last_line_start = ends
                    .iter()
                    .rev()
                    .find(|&&e| e < at)
                    .copied()
                    .unwrap_or(0)
                    .max(start);
                prop_assert!(
                    last_line_start - start < CHUNK_BYTES,
                    "chunk of {} bytes",
                    chunk.len()
                );
            }
            // No room, no broadcast and nothing consumed; waiting for room
            // is only ever for want of it. (Until a refusal: the only
            // output the service writes to its sender.)
            for call in run.calls.iter().take_while(|c| c.produced == 0) {
                if call.broadcast_room == 0 {
                    prop_assert_eq!(call.consumed, 0);
                    prop_assert!(!matches!(call.outcome.effect, Some(Effect::Broadcast(_))));
                }
                if call.outcome.effect == Some(Effect::WaitForRoom) {
                    prop_assert_eq!(call.broadcast_room, 0);
                    prop_assert_eq!(call.consumed, 0);
                }
            }
            if too_long {
                prop_assert_eq!(&run.output, LINE_TOO_LONG);
                prop_assert!(run.closed);
            } else {
                prop_assert_eq!(&run.output, b"");
                prop_assert_eq!(run.closed, eof);
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(crate::prop::cases(96))]

            /// Whatever the splits, burst ends, send room and broadcast room
            /// (none for a while, then some), the chunks together are the
            /// prefixed lines in order; a line as long as the receive buffer
            /// is refused and closes.
            #[test]
            fn broadcasts_are_the_prefixed_lines_whatever_the_splits_and_room(
                input in "([a-z\r]{0,14}\n){0,20}[a-z]{0,40}",
                hops in hops(30),
                eof in any::<bool>(),
                recv_cap in 8usize..48,
                send_cap in 1usize..40,
            ) {
                let input = input.into_bytes();
                let run = converse(ServiceKind::Chat, &config(), &steps(&input, &hops, eof), recv_cap, send_cap, no_queries);
                check(&run, &input, recv_cap, eof)?;
            }
        }

        proptest! {
            #![proptest_config(crate::prop::cases(12))]

            /// A paste of hundreds of lines through a large buffer: chunks
            /// stay within CHUNK_BYTES but for their last line.
            #[test]
            fn a_paste_goes_out_in_chunks_of_whole_lines(
                input in "([a-z]{0,30}\n){200,500}",
                hops in hops(3000),
                eof in any::<bool>(),
            ) {
                let input = input.into_bytes();
                let run = converse(ServiceKind::Chat, &config(), &steps(&input, &hops, eof), 8192, 64, no_queries);
                prop_assert!(run.broadcasts.len() >= 2 || input.len() < CHUNK_BYTES);
                check(&run, &input, 8192, eof)?;
            }
        }
    }
}
