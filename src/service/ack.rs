//! The ack service: one reply line for every message. No I/O here.
//!
//! A message ends at `\n` (a `\r` before it is dropped), or, for a client
//! that sends no newlines, at the end of a burst: everything the client had
//! sent when the socket ran dry. That is how the notes' clients, which send
//! text without a newline and wait for the answer, get one reply per send.
//! Once a client has sent a newline it is a line client, and burst ends no
//! longer cut its messages: TCP may deliver a line in pieces, and a pause
//! between two pieces must not make two messages of one. A message that fills
//! the whole receive buffer without a newline is answered as it stands, since
//! it can grow no further. The message `exit` ends the connection once every
//! earlier reply is flushed.

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
    /// The client has sent a newline: it frames by lines, not by bursts.
    lines: bool,
}

/// Most characters of a message the log shows: a client sending megabytes
/// must not make the log grow faster than its own traffic.
const LOG_CHARS: usize = 200;

impl Ack {
    /// Answers every complete message that the send buffer has room for.
    pub fn process(&mut self, io: &mut Io<'_>, config: &ServiceConfig) -> Outcome {
        let buffered_end = self.consumed + io.input.len() as u64;
        if !self.lines && io.input.data().contains(&b'\n') {
            self.lines = true;
            self.burst_ends.clear();
        }
        if io.burst_end
            && !self.lines
            && !io.input.is_empty()
            && self.burst_ends.back() != Some(&buffered_end)
        {
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
                info!(
                    "ack {}: {}",
                    io.peer,
                    loggable(&config.encoding.decode(message))
                );
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
            if config.short {
                return Outcome::close_after_flush();
            }
        }
        if io.eof && io.input.is_empty() {
            return Outcome::close_after_flush();
        }
        Outcome::proceed(false)
    }
}

/// `text` quoted and escaped for a log line, cut at [`LOG_CHARS`].
fn loggable(text: &str) -> String {
    match text.char_indices().nth(LOG_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{config, random_split, run};
    use super::super::{Io, ServiceKind};
    use crate::buffer::{BufPool, ByteBuf};

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
    fn once_a_client_sends_newlines_bursts_no_longer_cut_lines() {
        let out = ack(&[b"one\ntw", b"o\nthr", b"ee\n"], true, false);
        assert_eq!(out.output, b"ok\nok\nok\n");
    }

    #[test]
    fn replies_queued_behind_a_full_send_buffer_keep_their_burst_ends() {
        // One reply fits in the send buffer and the harness does not drain
        // it between the two bursts, so the second burst arrives while the
        // first still waits: each must still get its own reply.
        let mut pool = BufPool::new(8);
        let mut out_pool = BufPool::new(3);
        let mut input = ByteBuf::new(8);
        let mut output = ByteBuf::new(3);
        let mut ack = super::Ack::default();
        let peer = "127.0.0.1:1".parse().unwrap();
        let now = std::time::Instant::now();
        let mut replies = Vec::new();
        for burst in [&b"first"[..], b"x", b""] {
            input.append(&mut pool, burst);
            let mut io = Io::new(&mut input, &mut output, &mut out_pool, peer, now);
            io.burst_end = !burst.is_empty();
            ack.process(&mut io, &config());
            replies.extend_from_slice(output.data());
            output.clear();
        }
        let mut io = Io::new(&mut input, &mut output, &mut out_pool, peer, now);
        ack.process(&mut io, &config());
        replies.extend_from_slice(output.data());
        assert_eq!(replies, b"ok\nok\n");
        assert!(input.is_empty());
    }

    #[test]
    fn long_messages_are_cut_in_the_log() {
        assert_eq!(super::loggable("a\u{13}"), "\"a\\u{13}\"");
        let long = "x".repeat(1000);
        let shown = super::loggable(&long);
        assert!(
            shown.len() < 250 && shown.ends_with("(1000 bytes)"),
            "{shown}"
        );
    }

    #[test]
    fn without_a_burst_end_a_partial_line_waits() {
        let out = ack(&[b"hel", b"lo"], false, false);
        assert_eq!(out.output, b"");
        assert_eq!(out.left, 5);
    }

    #[test]
    fn a_line_clients_partial_line_waits_for_its_newline_despite_the_burst() {
        let out = ack(&[b"one\ntwo"], true, false);
        assert_eq!(out.output, b"ok\n");
        assert_eq!(out.left, 3);
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
    fn short_connections_close_after_the_first_reply() {
        let mut short = config();
        short.short = true;
        let out = run(ServiceKind::Ack, &short, &[b"a\nb\n"], false, false, 64, 16);
        assert_eq!(out.output, b"ok\n");
        assert!(out.closed);
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
