//! The echo service: every byte back, in order, exactly once. No I/O here.

use super::{Io, Outcome, ServiceConfig};

/// Whatever is in the receive buffer goes to the send buffer as room allows.
#[derive(Debug, Default)]
pub struct Echo {
    /// A burst has ended: with `--short`, the connection closes once it has
    /// been echoed.
    burst_seen: bool,
}

impl Echo {
    /// Moves input to output; closes once the client has half-closed and
    /// everything it sent has been moved (or, with `--short`, once its first
    /// burst has been).
    pub fn process(&mut self, io: &mut Io<'_>, config: &ServiceConfig) -> Outcome {
        self.burst_seen |= io.burst_end;
        io.transfer();
        if io.input.is_empty() {
            if io.eof || (config.short && self.burst_seen) {
                return Outcome::close_after_flush();
            }
            Outcome::proceed(false)
        } else {
            Outcome::proceed(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::ServiceKind;
    use super::super::testing::{config, random_split, run};

    #[test]
    fn a_transfer_into_an_empty_buffer_trades_places_with_no_copy() {
        use crate::buffer::{BufPool, ByteBuf};
        use crate::service::Io;
        let peer = "127.0.0.1:9".parse().expect("literal address");
        let (mut recv_pool, mut send_pool) = (BufPool::new(64), BufPool::new(64));
        let (mut input, mut output) = (ByteBuf::new(64), ByteBuf::new(64));
        let mut transfer = |input: &mut ByteBuf, output: &mut ByteBuf| {
            Io::new(input, output, &mut send_pool, peer, Instant::now()).transfer()
        };
        input.append(&mut recv_pool, b"first");
        let before = input.data().as_ptr();
        assert_eq!(transfer(&mut input, &mut output), 5);
        assert!(input.is_empty());
        assert_eq!(output.data(), b"first");
        assert_eq!(
            output.data().as_ptr(),
            before,
            "the same storage, not a copy"
        );
        // Behind bytes still owed, input is appended as far as room allows.
        input.append(&mut recv_pool, &[b'x'; 64]);
        assert_eq!(transfer(&mut input, &mut output), 59);
        assert_eq!(input.len(), 5);
        assert_eq!(output.len(), 64);
    }

    #[test]
    fn echoes_every_byte_whatever_the_split() {
        let message: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = run(
            ServiceKind::Echo,
            &config(),
            &[&message],
            true,
            true,
            64,
            32,
        );
        assert_eq!(whole.output, message);
        assert!(whole.closed);
        let bytes: Vec<&[u8]> = message.chunks(1).collect();
        let by_byte = run(ServiceKind::Echo, &config(), &bytes, true, true, 64, 32);
        assert_eq!(by_byte.output, message);
        for seed in 1..20 {
            let pieces = random_split(&message, seed);
            let split = run(
                ServiceKind::Echo,
                &config(),
                &pieces,
                seed % 2 == 0,
                true,
                16,
                8,
            );
            assert_eq!(split.output, message, "seed {seed}");
        }
    }

    #[test]
    fn short_connections_close_after_the_first_burst() {
        let mut short = config();
        short.short = true;
        let out = run(
            ServiceKind::Echo,
            &short,
            &[b"abc", b"def"],
            true,
            false,
            64,
            64,
        );
        assert_eq!(out.output, b"abc");
        assert!(out.closed);
    }

    #[test]
    fn stays_open_until_the_client_half_closes() {
        let open = run(ServiceKind::Echo, &config(), &[b"abc"], true, false, 64, 64);
        assert_eq!(open.output, b"abc");
        assert!(!open.closed);
    }

    mod properties {
        use proptest::prelude::*;

        use crate::service::ServiceKind;
        use crate::service::testing::{config, converse, hops, no_queries, steps};

        proptest! {
            #![proptest_config(crate::prop::cases(96))]

            /// Whatever the reads, burst ends, receive-buffer size and room
            /// the client leaves in the send queue: every byte back once, in
            /// order, and a close exactly when the client half-closed.
            #[test]
            fn echo_returns_the_input_whatever_the_splits_and_room(
                input in proptest::collection::vec(any::<u8>(), 0..400),
                hops in hops(40),
                eof in any::<bool>(),
                recv_cap in 1usize..48,
                send_cap in 1usize..48,
            ) {
                let script = steps(&input, &hops, eof);
                let run = converse(ServiceKind::Echo, &config(), &script, recv_cap, send_cap, no_queries);
                prop_assert_eq!(&run.output, &input);
                prop_assert_eq!(run.closed, eof);
                prop_assert_eq!(run.left, 0);
                prop_assert!(!run.aborted);
            }
        }
    }
}
