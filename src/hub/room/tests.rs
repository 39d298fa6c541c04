//! The room's unit tests: each behaviour from the state it starts in,
//! and a model-based property test of any sequence of what the hub does.

use super::*;

fn room() -> (ChatRoom, Instant) {
    let limits = ChatLimits {
        soft: 100,
        soft_for: Duration::from_secs(5),
        hard: 1000,
    };
    (ChatRoom::new(limits), Instant::now())
}

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn text(batch: &Batch) -> &str {
    std::str::from_utf8(&batch.lines).expect("announcements are text")
}

#[test]
fn a_newcomer_is_a_member_at_once_and_gets_the_news_after_its_own_join() {
    let (mut r, now) = room();
    r.join(1, peer(1));
    r.join(2, peer(2));
    assert!(r.members.contains(&1) && r.members.contains(&2));
    assert!(!r.is_announced(1));
    let batch = r.take_announcements(now, false).unwrap();
    assert_eq!(text(&batch), "* 127.0.0.1:1 joined\n* 127.0.0.1:2 joined\n");
    // The first sees the second join; the second sees nothing of it.
    assert_eq!(&batch.lines[batch.from(1)..], b"* 127.0.0.1:2 joined\n");
    assert_eq!(batch.from(2), batch.lines.len());
    assert_eq!(batch.from(7), 0, "an older member gets all of it");
    assert!(r.is_announced(1) && r.is_announced(2));
    assert!(r.take_announcements(now, true).is_none(), "no news");
}

#[test]
fn news_goes_out_once_per_interval_at_most_unless_a_sender_needs_it() {
    let (mut r, now) = room();
    r.join(1, peer(1));
    assert!(
        r.take_announcements(now, false).is_some(),
        "the first at once"
    );
    let soon = now + ANNOUNCE_EVERY / 5;
    r.join(2, peer(2));
    assert!(r.take_announcements(soon, false).is_none());
    assert_eq!(r.next_deadline(), Some(now + ANNOUNCE_EVERY));
    r.join(3, peer(3));
    let batch = r.take_announcements(now + ANNOUNCE_EVERY, false).unwrap();
    assert_eq!(text(&batch), "* 127.0.0.1:2 joined\n* 127.0.0.1:3 joined\n");
    assert_eq!(r.next_deadline(), None, "nothing due");
    // A sender's join goes before its first line, whatever the time.
    r.join(4, peer(4));
    let forced = r.take_announcements(now + ANNOUNCE_EVERY, true).unwrap();
    assert_eq!(text(&forced), "* 127.0.0.1:4 joined\n");
}

#[test]
fn regression_a_connect_close_storm_floods_every_member() {
    // Every join and leave was queued to every member: a storm of
    // connect/close cycles cost each member two lines per cycle.
    let (mut r, now) = room();
    r.members.insert(0);
    // Connections that come and go between two batches: never seen.
    for key in 1..=10_000 {
        r.join(key, peer(1));
        r.leave(key, peer(1), false);
    }
    assert!(r.take_announcements(now, true).is_none(), "nothing to say");
    assert_eq!(r.members.len(), 1);
    // A burst that stays, then leaves: one summary line each time.
    for key in 1..=100 {
        r.join(key, peer(key as u16));
    }
    r.join(500, peer(500));
    r.leave(500, peer(500), false);
    let joined = r.take_announcements(now, true).unwrap();
    assert_eq!(text(&joined), "* 100 joined, 0 left\n");
    assert_eq!(joined.from(5), 0, "newcomers learn of the others too");
    assert_eq!(joined.from(0), 0);
    for key in 1..=100 {
        r.leave(key, peer(key as u16), key % 2 == 0);
    }
    r.join(200, peer(200));
    let left = r.take_announcements(now, true).unwrap();
    assert_eq!(text(&left), "* 1 joined, 100 left\n");
    // Back to a human rate: names again.
    r.join(300, peer(300));
    r.leave(200, peer(200), false);
    let named = r.take_announcements(now + ANNOUNCE_EVERY, false).unwrap();
    assert_eq!(
        text(&named),
        "* 127.0.0.1:300 joined\n* 127.0.0.1:200 left\n"
    );
}

#[test]
fn a_batch_of_as_many_names_as_allowed_is_named() {
    let (mut r, now) = room();
    for key in 0..ANNOUNCE_NAMES {
        r.join(key, peer(key as u16));
    }
    let batch = r.take_announcements(now, true).unwrap();
    assert_eq!(
        batch.lines.iter().filter(|&&b| b == b'\n').count(),
        ANNOUNCE_NAMES
    );
    assert!(text(&batch).ends_with(&format!("* 127.0.0.1:{} joined\n", ANNOUNCE_NAMES - 1)));
}

#[test]
fn a_member_over_the_soft_limit_skips_announcements() {
    let (r, _) = room();
    assert!(!r.skips_announcement(0, 100), "up to the soft limit");
    assert!(!r.skips_announcement(60, 40));
    assert!(r.skips_announcement(61, 40), "it would go over");
    assert!(r.skips_announcement(101, 1), "already over");
    assert!(r.skips_announcement(usize::MAX, 1));
}

#[test]
fn a_leave_is_announced_once_by_name_and_frees_the_room() {
    let (mut r, now) = room();
    r.join(1, peer(1));
    let _ = r.take_announcements(now, true);
    r.note_queued(1, 500, now);
    assert_eq!(r.room(), 0);
    assert!(r.leave(1, peer(1), true));
    let batch = r.take_announcements(now, true).unwrap();
    assert_eq!(text(&batch), "* 127.0.0.1:1 left (too slow)\n");
    assert!(!r.leave(1, peer(1), false), "not a member any more");
    assert!(r.take_announcements(now, true).is_none());
    assert_eq!(r.room(), 100);
}

#[test]
fn at_shutdown_the_room_announces_nothing_and_judges_no_one() {
    let (mut r, now) = room();
    r.join(1, peer(1));
    r.join(2, peer(2));
    let _ = r.take_announcements(now, true);
    r.join(3, peer(3));
    r.note_queued(1, 500, now);
    r.wait(2);
    r.shut();
    assert_eq!(r.room(), usize::MAX, "what was read all goes out");
    assert!(r.members.contains(&1) && r.members.contains(&3));
    assert_eq!(r.judge(1, 5000, 0, now), (Judgement::Keep, false));
    assert_eq!(r.pop_expired(now + Duration::from_secs(60)), None);
    r.leave(2, peer(2), false);
    r.join(4, peer(4));
    assert!(r.take_announcements(now + ANNOUNCE_EVERY, true).is_none());
    assert_eq!(r.next_deadline(), None);
}

#[test]
fn the_hard_limit_must_hold_the_soft_limit_and_one_turn() {
    assert_eq!(ChatLimits::default().check(64 * 1024), Ok(()));
    let limits = ChatLimits {
        soft: 256 * 1024,
        soft_for: Duration::from_secs(5),
        hard: 300 * 1024,
    };
    let err = limits.check(64 * 1024).unwrap_err();
    assert!(err.starts_with("--chat-hard-limit 307200 "), "{err}");
    assert!(!err.contains('\n'));
    let least = limits.soft + limits.turn_broadcast(64 * 1024);
    let edge = |hard| ChatLimits { hard, ..limits }.check(64 * 1024);
    assert_eq!(edge(least), Ok(()));
    assert!(edge(least - 1).is_err());
    // No overflow, whatever the figures.
    assert!(
        ChatLimits {
            hard: 1,
            soft: usize::MAX,
            ..limits
        }
        .check(usize::MAX)
        .is_err()
    );
}

#[test]
fn a_member_over_the_soft_limit_congests_the_room_until_it_drains() {
    let (mut r, now) = room();
    r.members.insert(1);
    assert_eq!(r.room(), 100);
    r.note_queued(1, 150, now);
    assert_eq!(r.room(), 0, "senders wait");
    r.wait(7);
    assert!(r.wake().is_empty(), "still congested");
    assert_eq!(r.judge(1, 120, 20, now), (Judgement::Keep, false));
    assert_eq!(r.judge(1, 40, 20, now), (Judgement::Keep, true), "drained");
    assert_eq!(r.room(), 100);
    assert_eq!(r.wake(), vec![7]);
}

#[test]
fn a_member_that_stops_reading_congests_the_room_only_for_the_grace() {
    let (mut r, now) = room();
    r.members.insert(1);
    r.members.insert(2);
    r.note_queued(1, 150, now);
    r.wait(7);
    // Member 1 reads on, slowly: the paste keeps waiting for it.
    let later = now + CONGESTION_GRACE / 2;
    r.judge(1, 140, 20, later);
    assert!(!r.expire_congestion(now + CONGESTION_GRACE));
    assert_eq!(r.room(), 0);
    // Member 2 goes over and never reads: it holds the room for the
    // grace only, then merely waits to be dropped.
    r.judge(1, 10, 20, later);
    r.note_queued(2, 150, later);
    assert_eq!(r.room(), 0);
    assert!(r.expire_congestion(later + CONGESTION_GRACE));
    assert_eq!(r.room(), 100);
    assert_eq!(r.wake(), vec![7]);
    assert_eq!(r.pop_expired(later + Duration::from_secs(5)), Some(2));
}

#[test]
fn over_the_soft_limit_for_too_long_or_over_the_hard_limit_is_too_slow() {
    let (mut r, now) = room();
    r.members.insert(1);
    r.members.insert(2);
    r.note_queued(1, 150, now);
    // Draining and refilling restarts the clock: only a continuous
    // excess counts.
    r.judge(1, 50, 20, now + Duration::from_secs(3));
    r.note_queued(1, 150, now + Duration::from_secs(4));
    assert_eq!(r.pop_expired(now + Duration::from_secs(6)), None);
    assert_eq!(r.pop_expired(now + Duration::from_secs(9)), Some(1));
    assert_eq!(r.judge(2, 1001, 20, now).0, Judgement::TooSlow);
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Clone, Debug)]
    enum Op {
        Join(usize),
        Leave(usize, bool),
        NoteQueued(usize, usize),
        /// A member judged after a turn: its cost, and whether the
        /// turn wrote to it.
        Judge(usize, usize, usize),
        Wait(usize),
        Wake,
        /// `take_announcements`, forced (a sender's join) or not.
        Announce(bool),
        /// Time moves on this many tenths of a second, then expired
        /// members are dismissed.
        PopExpired(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = 0usize..6;
        let cost = prop_oneof![0usize..100, 100usize..1000, 1000usize..1200];
        prop_oneof![
            3 => key.clone().prop_map(Op::Join),
            2 => (key.clone(), any::<bool>()).prop_map(|(k, slow)| Op::Leave(k, slow)),
            3 => (key.clone(), cost.clone()).prop_map(|(k, c)| Op::NoteQueued(k, c)),
            3 => (key.clone(), cost, prop_oneof![Just(0usize), 0usize..30]).prop_map(|(k, c, w)| Op::Judge(k, c, w)),
            2 => key.prop_map(Op::Wait),
            1 => Just(Op::Wake),
            2 => any::<bool>().prop_map(Op::Announce),
            2 => (0u64..40).prop_map(Op::PopExpired),
        ]
    }

    fn peer_of(key: usize) -> SocketAddr {
        peer(1000 + key as u16)
    }

    /// The room, plainly.
    #[derive(Default)]
    struct Model {
        members: BTreeSet<usize>,
        /// Members whose join is news, with its order.
        unannounced: BTreeMap<usize, u64>,
        /// Leaves that are news: order, key, too slow.
        leaves: Vec<(u64, usize, bool)>,
        order: u64,
        last_batch: Option<Instant>,
        waiting: BTreeSet<usize>,
        /// Over the soft limit: since when, and in which order.
        over: BTreeMap<usize, (Instant, u64)>,
        /// Over the soft limit and still reading: when last written to
        /// (or when it went over). Congests the room for the grace.
        congesting: BTreeMap<usize, Instant>,
        /// Bytes written since the congestion was last extended.
        drained: BTreeMap<usize, usize>,
        seq: u64,
    }

    impl Model {
        fn leave(&mut self, key: usize, too_slow: bool) -> bool {
            let was_in = self.members.remove(&key);
            let unseen = self.unannounced.remove(&key).is_some();
            self.waiting.remove(&key);
            self.over.remove(&key);
            self.drained.remove(&key);
            let was_congesting = self.congesting.remove(&key).is_some();
            if was_in && !unseen {
                self.leaves.push((self.order, key, too_slow));
                self.order += 1;
            }
            was_congesting && self.congesting.is_empty()
        }

        fn over_since(&mut self, key: usize, now: Instant) {
            if !self.over.contains_key(&key) {
                self.seq += 1;
                self.over.insert(key, (now, self.seq));
                self.congesting.insert(key, now);
            }
        }

        /// The batch due now: its text and each newcomer's offset.
        fn announce(
            &mut self,
            now: Instant,
            force: bool,
        ) -> Option<(String, BTreeMap<usize, usize>)> {
            let news = self.unannounced.len() + self.leaves.len();
            if news == 0 || (!force && self.last_batch.is_some_and(|t| now < t + ANNOUNCE_EVERY)) {
                return None;
            }
            self.last_batch = Some(now);
            let mut from = BTreeMap::new();
            let mut text = String::new();
            if news > ANNOUNCE_NAMES {
                text = format!(
                    "* {} joined, {} left\n",
                    self.unannounced.len(),
                    self.leaves.len()
                );
            } else {
                let mut lines: Vec<(u64, String, Option<usize>)> = self
                    .unannounced
                    .iter()
                    .map(|(&k, &at)| (at, format!("* {} joined\n", peer_of(k)), Some(k)))
                    .collect();
                for &(at, k, slow) in &self.leaves {
                    let why = if slow { " (too slow)" } else { "" };
                    lines.push((at, format!("* {} left{why}\n", peer_of(k)), None));
                }
                lines.sort();
                for (_, line, joined) in lines {
                    text += &line;
                    if let Some(k) = joined {
                        from.insert(k, text.len());
                    }
                }
            }
            self.unannounced.clear();
            self.leaves.clear();
            Some((text, from))
        }
    }

    proptest! {
        #![proptest_config(crate::prop::cases(256))]

        /// Any sequence of what the reactor does, against a plain
        /// model: the room closed exactly while some member is over
        /// the soft limit, senders woken only when it opens, and the
        /// news exactly the model's: in order, named or summarised,
        /// nothing of a connection never announced.
        #[test]
        fn chat_room_matches_a_model(ops in proptest::collection::vec(op(), 0..60)) {
            let (mut room, start) = room();
            let limits = room.limits();
            let mut model = Model::default();
            let mut now = start;
            for op in ops {
                match op {
                    Op::Join(key) => {
                        // The reactor joins only a connection just opened.
                        if model.members.contains(&key) {
                            continue;
                        }
                        room.join(key, peer_of(key));
                        model.members.insert(key);
                        model.unannounced.insert(key, model.order);
                        model.order += 1;
                    }
                    Op::Leave(key, too_slow) => {
                        prop_assert_eq!(room.leave(key, peer_of(key), too_slow), model.leave(key, too_slow));
                    }
                    Op::NoteQueued(key, cost) => {
                        // Only members are queued to.
                        if !model.members.contains(&key) {
                            continue;
                        }
                        room.note_queued(key, cost, now);
                        if cost > limits.soft {
                            model.over_since(key, now);
                        }
                    }
                    Op::Judge(key, cost, wrote) => {
                        if !model.members.contains(&key) {
                            continue;
                        }
                        let (judgement, freed) = room.judge(key, cost, wrote, now);
                        if cost > limits.hard {
                            prop_assert_eq!((judgement, freed), (Judgement::TooSlow, false));
                            // Dismissed: it leaves when it closes.
                            let a = room.leave(key, peer_of(key), true);
                            prop_assert_eq!(a, model.leave(key, true));
                        } else if cost > limits.soft {
                            prop_assert_eq!((judgement, freed), (Judgement::Keep, false));
                            model.over_since(key, now);
                            let drained = model.drained.entry(key).or_default();
                            *drained += wrote;
                            if *drained >= limits.soft / 8 {
                                *drained = 0;
                                model.congesting.insert(key, now);
                            }
                        } else {
                            model.over.remove(&key);
                            model.drained.remove(&key);
                            let was = model.congesting.remove(&key).is_some();
                            prop_assert_eq!(judgement, Judgement::Keep);
                            prop_assert_eq!(freed, was && model.congesting.is_empty());
                        }
                    }
                    Op::Wait(key) => {
                        if !model.members.contains(&key) {
                            continue;
                        }
                        room.wait(key);
                        model.waiting.insert(key);
                    }
                    Op::Wake => {
                        let mut woken = room.wake();
                        woken.sort_unstable();
                        let expected: Vec<usize> = if model.congesting.is_empty() {
                            std::mem::take(&mut model.waiting).into_iter().collect()
                        } else {
                            Vec::new()
                        };
                        prop_assert_eq!(woken, expected);
                    }
                    Op::Announce(force) => {
                        let members_before = model.members.clone();
                        let batch = room.take_announcements(now, force);
                        match (batch, model.announce(now, force)) {
                            (None, None) => {}
                            (Some(batch), Some((text, from))) => {
                                prop_assert_eq!(&*batch.lines, text.as_bytes());
                                for key in members_before {
                                    let want = from.get(&key).copied().unwrap_or(0);
                                    prop_assert_eq!(batch.from(key), want);
                                }
                            }
                            (got, want) => prop_assert!(false, "{:?} against {:?}", got, want),
                        }
                    }
                    Op::PopExpired(tenths) => {
                        now += Duration::from_millis(100 * tenths);
                        let before = model.congesting.len();
                        model.congesting.retain(|_, at| *at + CONGESTION_GRACE > now);
                        let freed = before > 0 && model.congesting.is_empty();
                        prop_assert_eq!(room.expire_congestion(now), freed);
                        loop {
                            let due = model
                                .over
                                .iter()
                                .filter(|(_, (since, _))| *since + limits.soft_for <= now)
                                .min_by_key(|(_, at)| **at)
                                .map(|(&k, _)| k);
                            prop_assert_eq!(room.pop_expired(now), due);
                            let Some(key) = due else { break };
                            model.over.remove(&key);
                            // Dismissed, so it leaves.
                            let _ = room.leave(key, peer_of(key), true);
                            model.leave(key, true);
                        }
                    }
                }
                prop_assert_eq!(room.members.iter().copied().collect::<BTreeSet<_>>(), model.members.clone());
                for &key in &model.members {
                    prop_assert_eq!(room.is_announced(key), !model.unannounced.contains_key(&key));
                }
                prop_assert_eq!(room.room() == 0, !model.congesting.is_empty());
                prop_assert!(model.congesting.keys().all(|k| model.over.contains_key(k)));
                prop_assert!(room.room() == 0 || room.room() == limits.soft);
                prop_assert_eq!(room.over_soft.len(), model.over.len());
                prop_assert!(model.over.keys().all(|k| model.members.contains(k)));
            }
        }
    }
}
