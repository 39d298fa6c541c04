//! The chat service: every complete line a client sends goes to every other
//! chat client as `[PEER] line`.
//!
//! A partial line waits for its newline, or is sent at the client's
//! half-close. A line that fills the whole receive buffer without a newline is
//! refused with `ERR line too long` and the connection closes: the buffer is
//! the longest line the server will hold.
//!
//! The lines of one call become one shared chunk, handed to the reactor as
//! [`Effect::Broadcast`]; the reactor queues that one allocation on every
//! receiver, so a line to 500 clients is not copied 500 times. Joins, leaves
//! and slow receivers are the reactor's business (it knows the members). No
//! I/O here.

use std::rc::Rc;

use log::debug;

use super::{Effect, Io, Outcome};

/// Chat keeps no state between calls: the receive buffer holds any partial
/// line.
#[derive(Debug, Default)]
pub struct Chat;

/// What a chat client that sent too long a line is told before it is closed.
pub const LINE_TOO_LONG: &[u8] = b"ERR line too long\n";

impl Chat {
    /// Turns the complete lines in the input into one broadcast.
    pub fn process(&mut self, io: &mut Io<'_>) -> Outcome {
        let mut message = Vec::new();
        let mut consumed = 0;
        {
            let data = io.input.data();
            let complete = match data.iter().rposition(|&b| b == b'\n') {
                _ if io.eof => data.len(),
                Some(last) => last + 1,
                None => 0,
            };
            if complete > 0 {
                // Built only when a line is complete: a partial line costs
                // nothing per read.
                let prefix = format!("[{}] ", io.peer);
                for line in data[..complete]
                    .strip_suffix(b"\n")
                    .unwrap_or(&data[..complete])
                    .split(|&b| b == b'\n')
                {
                    push_line(&mut message, &prefix, line);
                }
                consumed = complete;
            }
        }
        io.input.consume(consumed);
        let outcome = if io.input.is_full() {
            debug!(
                "chat {}: line longer than {} bytes",
                io.peer,
                io.input.capacity()
            );
            io.input.clear();
            io.write(LINE_TOO_LONG);
            Outcome::close_after_flush()
        } else if io.eof {
            Outcome::close_after_flush()
        } else {
            Outcome::proceed(false)
        };
        if message.is_empty() {
            outcome
        } else {
            outcome.with_effect(Effect::Broadcast(Rc::from(message)))
        }
    }
}

fn push_line(out: &mut Vec<u8>, prefix: &str, line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(line);
    out.push(b'\n');
}

/// The announcement of a join.
pub fn joined(peer: std::net::SocketAddr) -> Rc<[u8]> {
    Rc::from(format!("* {peer} joined\n").into_bytes())
}

/// The announcement of a leave; `too_slow` when the server disconnected it.
pub fn left(peer: std::net::SocketAddr, too_slow: bool) -> Rc<[u8]> {
    let why = if too_slow { " (too slow)" } else { "" };
    Rc::from(format!("* {peer} left{why}\n").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{BufPool, ByteBuf};
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
        let mut service = Chat;
        let mut broadcast = Vec::new();
        let last = pieces.len();
        for (i, piece) in pieces.iter().enumerate() {
            input.append(&mut pool, piece);
            let mut io = Io::new(&mut input, &mut output, &mut out_pool, peer, now);
            io.eof = eof && i + 1 == last;
            let outcome = service.process(&mut io);
            if let Some(Effect::Broadcast(chunk)) = &outcome.effect {
                broadcast.extend_from_slice(chunk);
            }
            if outcome.next == Next::CloseAfterFlush {
                return (broadcast, output.data().to_vec(), true);
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
    fn announcements() {
        let peer = "127.0.0.1:5".parse().unwrap();
        assert_eq!(&*joined(peer), b"* 127.0.0.1:5 joined\n");
        assert_eq!(&*left(peer, true), b"* 127.0.0.1:5 left (too slow)\n");
    }
}
