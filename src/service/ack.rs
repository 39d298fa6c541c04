//! The ack service: one reply line for every message. No I/O here.
//!
//! A message ends at `\n` (a `\r` before it is dropped), or, when the client
//! sends no newline, at the end of a burst: everything the client had sent
//! when the socket ran dry. That is how the notes' clients, which send text
//! without a newline and wait for the answer, get one reply per send. A
//! message that fills the whole receive buffer without a newline is answered
//! as it stands, since it can grow no further. The message `exit` ends the
//! connection once every earlier reply is flushed.

use std::collections::VecDeque;

use log::info;

use super::{Io, Outcome, ServiceConfig};

/// Per-connection framing state.
#[derive(Debug, Default)]
pub struct Ack {
    /// Stream offset of the first byte still in the receive buffer.
    consumed: u64,
    /// Stream offsets where bursts ended, oldest first, each past `consumed`:
    /// a message ends at the first of them if no newline comes before it.
    /// More than one is pending only while replies wait for send-buffer room;
    /// each marks a distinct buffered byte, so there are never more than the
    /// receive buffer holds.
    burst_ends: VecDeque<u64>,
}

impl Ack {
    /// Answers every complete message that the send buffer has room for.
    pub fn process(&mut self, io: &mut Io<'_>, config: &ServiceConfig) -> Outcome {
        let buffered_end = self.consumed + io.input.len() as u64;
        if io.burst_end && !io.input.is_empty() && self.burst_ends.back() != Some(&buffered_end) {
            self.burst_ends.push_back(buffered_end);
        }
        let reply_len = config.ack_reply.len() + 1;
        loop {
            let data = io.input.data();
            let burst_end = self
                .burst_ends
                .front()
                .map(|&end| (end - self.consumed) as usize);
            let limit = burst_end.unwrap_or(data.len());
            let (message_len, consumed) = match data[..limit].iter().position(|&b| b == b'\n') {
                Some(pos) => (pos, pos + 1),
                None if limit > 0 && (burst_end.is_some() || io.eof || io.input.is_full()) => {
                    (limit, limit)
                }
                None => break,
            };
            if io.output_free() < reply_len {
                return Outcome::proceed(true);
            }
            let mut message = &data[..message_len];
            if let Some(stripped) = message.strip_suffix(b"\r") {
                message = stripped;
            }
            let exit = message == b"exit";
            if !exit {
                info!("ack {}: {:?}", io.peer, config.encoding.decode(message));
            }
            io.input.consume(consumed);
            self.consumed += consumed as u64;
            while self
                .burst_ends
                .front()
                .is_some_and(|&end| end <= self.consumed)
            {
                self.burst_ends.pop_front();
            }
            if exit {
                info!("ack {}: exit", io.peer);
                return Outcome::close_after_flush();
            }
            let written = io.write(&config.ack_reply) + io.write(b"\n");
            debug_assert_eq!(written, reply_len, "room was checked above");
        }
        if io.eof && io.input.is_empty() {
            return Outcome::close_after_flush();
        }
        Outcome::proceed(false)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{random_split, run};
    use super::super::{ServiceConfig, ServiceKind};
    use crate::text::Encoding;

    fn config() -> ServiceConfig {
        ServiceConfig {
            ack_reply: b"ok".to_vec(),
            encoding: Encoding::Utf8,
        }
    }

    fn ack(pieces: &[&[u8]], bursts: bool, eof: bool) -> super::super::testing::Run {
        run(ServiceKind::Ack, &config(), pieces, bursts, eof, 64, 16)
    }

    #[test]
    fn one_reply_per_line() {
        let out = ack(&[b"a\nbb\r\nccc\n"], false, false);
        assert_eq!(out.output, b"ok\nok\nok\n");
        assert!(!out.closed);
    }

    #[test]
    fn a_burst_without_newline_is_one_message() {
        let out = ack(&[b"hello", b"world"], true, false);
        assert_eq!(out.output, b"ok\nok\n");
        assert_eq!(out.left, 0);
    }

    #[test]
    fn without_a_burst_end_a_partial_line_waits() {
        let out = ack(&[b"hel", b"lo"], false, false);
        assert_eq!(out.output, b"");
        assert_eq!(out.left, 5);
    }

    #[test]
    fn bytes_after_the_last_newline_of_a_burst_are_a_message() {
        let out = ack(&[b"one\ntwo"], true, false);
        assert_eq!(out.output, b"ok\nok\n");
    }

    #[test]
    fn a_partial_line_at_half_close_is_a_message_then_close() {
        let out = ack(&[b"one\ntwo"], false, true);
        assert_eq!(out.output, b"ok\nok\n");
        assert!(out.closed);
    }

    #[test]
    fn exit_closes_after_earlier_replies() {
        let out = ack(&[b"a\nexit\nb\n"], false, false);
        assert_eq!(out.output, b"ok\n");
        assert!(out.closed);
        let bare = ack(&[b"exit"], true, false);
        assert_eq!(bare.output, b"");
        assert!(bare.closed);
        let crlf = ack(&[b"exit\r\n"], false, false);
        assert!(crlf.closed);
    }

    #[test]
    fn a_full_buffer_without_newline_is_answered() {
        let long = vec![b'x'; 200];
        let out = run(ServiceKind::Ack, &config(), &[&long], false, false, 64, 16);
        // 200 bytes through a 64-byte buffer: three full buffers answered,
        // the last 8 bytes still waiting for their end.
        assert_eq!(out.output, b"ok\nok\nok\n");
        assert_eq!(out.left, 8);
    }

    #[test]
    fn replies_wait_for_room_in_the_send_buffer() {
        // A 16-byte send buffer holds five 3-byte replies; the harness drains
        // it between calls, so all forty lines are still answered.
        let lines = b"x\n".repeat(40);
        let out = ack(&[&lines], false, false);
        assert_eq!(out.output, b"ok\n".repeat(40));
    }

    #[test]
    fn framing_does_not_depend_on_how_lines_are_split() {
        let text = b"alpha\nbeta\r\n\ngamma delta\nexit\nignored\n";
        let expected = ack(&[text], false, false).output;
        assert_eq!(expected, b"ok\nok\nok\nok\n");
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(ack(&bytes, false, false).output, expected);
        for seed in 1..30 {
            let pieces = random_split(text, seed);
            let out = ack(&pieces, false, false);
            assert_eq!(out.output, expected, "seed {seed}");
            assert!(out.closed);
        }
    }
}
