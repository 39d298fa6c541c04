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
use std::time::{Duration, Instant};

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
    /// Leading bytes of the receive buffer already searched and found to
    /// hold no newline: a long partial line is not searched again from its
    /// first byte on every read.
    scanned: usize,
    /// How many of its messages the log may still show.
    log_budget: LogBudget,
}

/// Most characters of a message the log shows: a client sending megabytes
/// must not make the log grow faster than its own traffic.
const LOG_CHARS: usize = 200;

impl Ack {
    /// Answers every complete message that the send buffer has room for.
    pub fn process(&mut self, io: &mut Io<'_>, config: &ServiceConfig) -> Outcome {
        let buffered_end = self.consumed + io.input.len() as u64;
        if !self.lines {
            let data = io.input.data();
            match memchr::memchr(b'\n', &data[self.scanned.min(data.len())..]) {
                Some(_) => {
                    self.lines = true;
                    self.burst_ends.clear();
                }
                None => self.scanned = data.len(),
            }
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
            let from = self.scanned.min(limit);
            let (message_len, consumed) = match memchr::memchr(b'\n', &data[from..limit]) {
                Some(at) => {
                    // No newline before this one: it is consumed next.
                    self.scanned = from + at;
                    (from + at, from + at + 1)
                }
                None if limit > 0 && (burst_end.is_some() || io.eof || io.input.is_full()) => {
                    (limit, limit)
                }
                None => {
                    self.scanned = limit;
                    break;
                }
            };
            if io.output_free() < reply_len {
                return Outcome::proceed(true);
            }
            let mut message = &data[..message_len];
            if let Some(stripped) = message.strip_suffix(b"\r") {
                message = stripped;
            }
            let exit = message == b"exit";
            if !exit && let Some(skipped) = self.log_budget.admit(io.now) {
                info!(
                    "ack {}: {}{}",
                    io.peer,
                    loggable(&config.encoding.decode(message)),
                    not_logged(skipped)
                );
            }
            io.input.consume(consumed);
            self.consumed += consumed as u64;
            self.scanned = self.scanned.saturating_sub(consumed);
            while self
                .burst_ends
                .front()
                .is_some_and(|&end| end <= self.consumed)
            {
                self.burst_ends.pop_front();
            }
            if exit {
                // Always shown (once per connection), with the count of
                // the messages the budget held back since the last line.
                let skipped = std::mem::take(&mut self.log_budget.suppressed);
                info!("ack {}: exit{}", io.peer, not_logged(skipped));
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

/// Messages of one connection the log shows at once, and how fast that
/// allowance comes back (one line per [`LOG_REFILL`]: 10 a second): a client
/// must not make the log grow faster than its own traffic, and 64 KiB of
/// bare newlines would otherwise be 65,536 log lines. The count of messages
/// held back is in the next line shown.
const LOG_BURST: u32 = 20;
const LOG_REFILL: Duration = Duration::from_millis(100);

/// A token bucket for one connection's message lines; time is passed in.
#[derive(Debug, Default)]
struct LogBudget {
    /// Lines shown that the refill has not yet paid back: at most
    /// [`LOG_BURST`]; the bucket holds `LOG_BURST - spent` tokens.
    spent: u32,
    /// The time from which the next refill is counted; `None` while the
    /// bucket is full (`spent == 0`), so idle time earns nothing past full.
    since: Option<Instant>,
    /// Messages not shown since the last line that was.
    suppressed: u64,
}

impl LogBudget {
    /// Whether a message at `now` may be logged: if so, the count of
    /// messages held back before it, for that line to mention.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if let Some(since) = self.since {
            let refills = now.saturating_duration_since(since).as_nanos() / LOG_REFILL.as_nanos();
            let refills = u32::try_from(refills).unwrap_or(u32::MAX);
            if refills >= self.spent {
                self.spent = 0;
                self.since = None;
            } else if refills > 0 {
                self.spent -= refills;
                self.since = Some(since + LOG_REFILL * refills);
            }
        }
        if self.spent >= LOG_BURST {
            self.suppressed += 1;
            return None;
        }
        if self.spent == 0 {
            self.since = Some(now);
        }
        self.spent += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The tail of a log line that follows `skipped` messages not logged.
fn not_logged(skipped: u64) -> String {
    match skipped {
        0 => String::new(),
        1 => " (1 message not logged)".to_string(),
        n => format!(" ({n} messages not logged)"),
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
    fn a_fresh_connection_logs_a_burst_then_holds_back_and_counts() {
        let start = std::time::Instant::now();
        let mut budget = super::LogBudget::default();
        for _ in 0..super::LOG_BURST {
            assert_eq!(budget.admit(start), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(budget.admit(start), None);
        }
        // One refill later exactly one line is allowed, and it carries the
        // count of the five held back.
        let later = start + super::LOG_REFILL;
        assert_eq!(budget.admit(later), Some(5));
        assert_eq!(budget.admit(later), None);
        assert_eq!(budget.admit(later + super::LOG_REFILL), Some(1));
    }

    #[test]
    fn an_idle_connection_earns_no_more_than_one_burst() {
        let start = std::time::Instant::now();
        let mut budget = super::LogBudget::default();
        assert_eq!(budget.admit(start), Some(0));
        let much_later = start + std::time::Duration::from_secs(3600);
        let shown = (0..100)
            .filter(|_| budget.admit(much_later).is_some())
            .count();
        assert_eq!(shown, super::LOG_BURST as usize);
    }

    #[test]
    fn a_steady_sender_is_logged_at_the_refill_rate() {
        let start = std::time::Instant::now();
        let mut budget = super::LogBudget::default();
        // 1000 messages a second for ten seconds: the burst, then ten a
        // second; every message is either shown or counted in a shown line.
        let (mut shown, mut counted) = (0u64, 0u64);
        for ms in 0..10_000u64 {
            if let Some(skipped) = budget.admit(start + std::time::Duration::from_millis(ms)) {
                shown += 1;
                counted += skipped;
            }
        }
        assert!((115..=121).contains(&shown), "{shown}");
        assert_eq!(shown + counted + budget.suppressed, 10_000);
    }

    #[test]
    fn an_ack_flood_logs_a_bounded_number_of_lines() {
        // Replies are counted through the harness; log lines through the
        // budget the service kept.
        let flood = vec![b'\n'; 4096];
        let mut pool = BufPool::new(8192);
        let mut out_pool = BufPool::new(16384);
        let mut input = ByteBuf::new(8192);
        let mut output = ByteBuf::new(16384);
        let mut ack = super::Ack::default();
        let peer = "127.0.0.1:1".parse().unwrap();
        let now = std::time::Instant::now();
        input.append(&mut pool, &flood);
        let mut io = Io::new(&mut input, &mut output, &mut out_pool, peer, now);
        ack.process(&mut io, &config());
        assert_eq!(output.len(), 4096 * 3, "every message still answered");
        assert_eq!(
            ack.log_budget.suppressed,
            4096 - u64::from(super::LOG_BURST)
        );
    }

    #[test]
    fn not_logged_names_the_count() {
        assert_eq!(super::not_logged(0), "");
        assert_eq!(super::not_logged(1), " (1 message not logged)");
        assert_eq!(super::not_logged(7), " (7 messages not logged)");
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

    mod properties {
        use proptest::prelude::*;

        use crate::service::testing::{Step, config, converse, hops, no_queries, steps};
        use crate::service::{ServiceConfig, ServiceKind};
        use crate::text::Encoding;

        /// An ack configuration replying `ok`, or `收到` in GBK.
        fn reply_config() -> impl Strategy<Value = ServiceConfig> {
            any::<bool>().prop_map(|gbk| {
                let mut config = config();
                if gbk {
                    config.encoding = Encoding::Gbk;
                    config.ack_reply = Encoding::Gbk.encode("收到");
                    assert_eq!(config.ack_reply, [0xca, 0xd5, 0xb5, 0xbd]);
                }
                config
            })
        }

        /// A line's text (no newline): short words, sometimes `exit`.
        fn line_text() -> impl Strategy<Value = String> {
            prop_oneof![8 => "[a-z \\r]{0,12}", 1 => Just("exit".to_string())]
        }

        /// The reply the client sees for `n` messages.
        fn replies(config: &ServiceConfig, n: usize) -> Vec<u8> {
            let mut one = config.ack_reply.clone();
            one.push(b'\n');
            one.repeat(n)
        }

        fn is_exit(message: &[u8]) -> bool {
            message.strip_suffix(b"\r").unwrap_or(message) == b"exit"
        }

        proptest! {
            #![proptest_config(crate::prop::cases(96))]

            /// A line client (its first burst holds its first newline):
            /// one reply per line up to `exit`, whatever the splits, burst
            /// ends and room, then a close after `exit` or the half-close.
            #[test]
            fn a_line_client_gets_one_reply_per_line(
                lines in proptest::collection::vec((line_text(), any::<bool>()), 1..24),
                hops in hops(30),
                eof in any::<bool>(),
                config in reply_config(),
                recv_cap in 16usize..64,
                send_cap in 5usize..40,
            ) {
                let mut input = Vec::new();
                let mut first_line = 0;
                for (text, crlf) in &lines {
                    input.extend_from_slice(text.as_bytes());
                    input.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
                    if first_line == 0 {
                        first_line = input.len();
                    }
                }
                let mut script = vec![Step::Send(input[..first_line].to_vec())];
                script.extend(steps(&input[first_line..], &hops, eof));
                let run = converse(ServiceKind::Ack, &config, &script, recv_cap, send_cap, no_queries);
                // What the service sees of a line: its text, and the `\r`
                // before its newline (of which it drops one).
                let answered = lines
                    .iter()
                    .take_while(|(text, crlf)| {
                        let mut message = text.clone().into_bytes();
                        if *crlf {
                            message.push(b'\r');
                        }
                        !is_exit(&message)
                    })
                    .count();
                prop_assert_eq!(run.output, replies(&config, answered));
                prop_assert_eq!(run.closed, answered < lines.len() || eof);
                prop_assert_eq!(run.left, 0);
            }

            /// A client that never sends a newline: one reply per message,
            /// a message being the bytes that came between two burst ends
            /// (and, at the half-close, the bytes since the last one), up to
            /// `exit`. Counted against the bursts the reactor delivered, so
            /// no message is lost or merged.
            #[test]
            fn a_client_without_newlines_gets_one_reply_per_burst(
                input in "[a-z\\r]{0,60}",
                exit_at in proptest::option::of(0usize..60),
                hops in hops(12),
                eof in any::<bool>(),
                config in reply_config(),
                send_cap in 5usize..40,
            ) {
                let mut input = input.into_bytes();
                if let Some(at) = exit_at {
                    let at = at.min(input.len());
                    input.splice(at..at, *b"exit");
                }
                // Larger than the input: no message is cut by a full buffer.
                let recv_cap = input.len() + 1;
                let script = steps(&input, &hops, eof);
                let run = converse(ServiceKind::Ack, &config, &script, recv_cap, send_cap, no_queries);
                let mut ends = run.burst_ends.clone();
                if eof {
                    ends.push(run.taken);
                }
                let mut messages = 0;
                let mut exited = false;
                let mut start = 0;
                for end in ends {
                    let message = &input[start as usize..end as usize];
                    if message.is_empty() {
                        continue;
                    }
                    start = end;
                    if is_exit(message) {
                        exited = true;
                        break;
                    }
                    messages += 1;
                }
                prop_assert_eq!(run.output, replies(&config, messages));
                prop_assert_eq!(run.closed, exited || eof);
            }
        }
    }
}
