//! The chat room's bookkeeping: who is a member, who is behind, who waits
//! to broadcast, and the join and leave lines not yet sent. Pure: no I/O and
//! no sockets; the reactor queues the lines and closes the connections.
//!
//! Flow control, after Redis's `client-output-buffer-limit`: a member's
//! queue (bytes of shared lines not yet written to it, plus what each queued
//! entry costs) is judged after the server has tried to write to it. Over the
//! hard limit it is disconnected at once; over the soft limit it may stay for
//! [`ChatLimits::soft_for`], continuously, before it is. While a member over
//! the soft limit is still reading fast enough to catch up (the server wrote
//! it an eighth of the soft limit within the last [`CONGESTION_GRACE`]), the
//! room is congested: senders may broadcast
//! nothing ([`ChatRoom::room`] is 0), their lines wait in their own receive
//! buffers, and they are woken when no member congests it any more. So a
//! paste goes out at the pace of the members that keep up, and a member that
//! drains its queue is never dropped. A member that stops reading, or reads
//! a trickle, holds the others back for at most `CONGESTION_GRACE` (then it
//! only waits to be dropped), so clients that join and never read, or read a
//! byte at a time, cannot stall the room.
//!
//! Joins and leaves are batched: the lines of one turn go out as one shared
//! chunk, so thousands of joins cost each member one queue entry per turn,
//! not one per join; a member joins the room once its own join went out, so
//! it does not see it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::buffer::Chunk;
use crate::timer::DeadlineList;

/// How long a member over the soft limit may go without the server writing
/// to it and still hold senders back: long enough for a slow reader's next
/// read (many round trips), short enough that a member that has stopped
/// reading stalls a paste only briefly.
pub const CONGESTION_GRACE: Duration = Duration::from_millis(500);

/// The per-member queue limits (`--chat-soft-limit`, `--chat-soft-secs`,
/// `--chat-hard-limit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatLimits {
    /// Over this a member congests the room and its clock starts.
    pub soft: usize,
    /// How long a member may stay over `soft`.
    pub soft_for: Duration,
    /// Over this a member is disconnected at once. At least `soft` plus a
    /// turn's broadcasts, so a member that keeps up never reaches it.
    pub hard: usize,
}

impl Default for ChatLimits {
    fn default() -> ChatLimits {
        ChatLimits {
            soft: 256 * 1024,
            soft_for: Duration::from_secs(5),
            hard: 1024 * 1024,
        }
    }
}

/// What [`ChatRoom::judge`] decided about a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    Keep,
    /// Over the hard limit: disconnect it.
    TooSlow,
}

/// Membership and flow-control state of the one chat room.
///
/// Invariants: `over_soft`, `waiting` and `joining` hold only keys of chat
/// connections that are open; `members` and `joining` are disjoint.
#[derive(Debug)]
pub struct ChatRoom {
    limits: ChatLimits,
    /// Open chat connections that receive broadcasts.
    pub members: HashSet<usize>,
    /// Accepted chat connections whose join line is in `announcements`,
    /// each with the offset just past its join line: it receives the rest
    /// of the batch (the joins and leaves after its own).
    joining: Vec<(usize, usize)>,
    /// Join and leave lines not yet queued to the members.
    announcements: Vec<u8>,
    /// Members over the soft limit, by when they have been over it too long.
    pub over_soft: DeadlineList,
    /// Members over the soft limit that are still reading, by when they
    /// stop counting as such: while any is here, the room is congested.
    pub congesting: DeadlineList,
    /// Bytes written to each member over the soft limit since its
    /// congestion was last extended; an eighth of the soft limit extends it.
    drained: HashMap<usize, usize>,
    /// Senders with lines waiting for room.
    waiting: HashSet<usize>,
}

impl ChatRoom {
    pub fn new(limits: ChatLimits) -> ChatRoom {
        ChatRoom {
            limits,
            members: HashSet::new(),
            joining: Vec::new(),
            announcements: Vec::new(),
            over_soft: DeadlineList::new(limits.soft_for),
            congesting: DeadlineList::new(CONGESTION_GRACE),
            drained: HashMap::new(),
            waiting: HashSet::new(),
        }
    }

    pub fn limits(&self) -> ChatLimits {
        self.limits
    }

    /// Bytes a sender may broadcast in its turn: the soft limit while no
    /// member congests the room, else nothing.
    pub fn room(&self) -> usize {
        if self.congesting.is_empty() {
            self.limits.soft
        } else {
            0
        }
    }

    /// A new chat connection: its join is announced with the next batch.
    pub fn join(&mut self, key: usize, peer: SocketAddr) {
        self.announcements
            .extend_from_slice(format!("* {peer} joined\n").as_bytes());
        self.joining.push((key, self.announcements.len()));
    }

    /// Connection `key` leaves (closed, or dismissed as `too_slow`); its
    /// leave is announced if it was in the room. True if the room has room
    /// again because of it (see [`ChatRoom::wake`]).
    pub fn leave(&mut self, key: usize, peer: SocketAddr, too_slow: bool) -> bool {
        let was_member = self.members.remove(&key);
        let was_joining = self.joining.iter().position(|&(k, _)| k == key).map(|i| {
            self.joining.swap_remove(i);
        });
        self.waiting.remove(&key);
        self.over_soft.remove(key);
        let freed = self.uncongest(key);
        if was_member || was_joining.is_some() {
            let why = if too_slow { " (too slow)" } else { "" };
            self.announcements
                .extend_from_slice(format!("* {peer} left{why}\n").as_bytes());
        }
        freed
    }

    /// `key` no longer congests the room; true if the room has room again
    /// because of it.
    fn uncongest(&mut self, key: usize) -> bool {
        self.drained.remove(&key);
        let was = self.congesting.contains(key);
        self.congesting.remove(key);
        was && self.congesting.is_empty()
    }

    /// The batch of join and leave lines to queue to the current members,
    /// if any. Then call [`ChatRoom::admit_joined`] to queue to each new
    /// member the part of the batch after its own join.
    pub fn take_announcements(&mut self) -> Option<Chunk> {
        (!self.announcements.is_empty())
            .then(|| Chunk::from(std::mem::take(&mut self.announcements)))
    }

    /// Those whose join went out with the last batch become members; each
    /// with the offset in that batch from which it is to receive it.
    pub fn admit_joined(&mut self) -> std::vec::Drain<'_, (usize, usize)> {
        for &(key, _) in &self.joining {
            self.members.insert(key);
        }
        self.joining.drain(..)
    }

    /// A member's queue grew to `cost`: on going over the soft limit its
    /// clock starts and it congests the room (for at most the grace, unless
    /// it keeps reading).
    pub fn note_queued(&mut self, key: usize, cost: usize, now: Instant) {
        if cost > self.limits.soft && !self.over_soft.contains(key) {
            self.over_soft.touch(key, now);
            self.congesting.touch(key, now);
        }
    }

    /// Judges member `key` after the server tried to write to it, its queue
    /// now `cost`; `wrote`: the bytes the server wrote it in this turn.
    /// Returns the judgement, and whether the room has room again because of
    /// it (see [`ChatRoom::wake`]).
    pub fn judge(
        &mut self,
        key: usize,
        cost: usize,
        wrote: usize,
        now: Instant,
    ) -> (Judgement, bool) {
        if cost > self.limits.hard {
            return (Judgement::TooSlow, false);
        }
        if cost > self.limits.soft {
            self.note_queued(key, cost, now);
            let drained = self.drained.entry(key).or_default();
            *drained += wrote;
            if *drained >= self.limits.soft / 8 {
                // Reading fast enough to catch up: the paste waits for it.
                *drained = 0;
                self.congesting.touch(key, now);
            }
            return (Judgement::Keep, false);
        }
        self.over_soft.remove(key);
        (Judgement::Keep, self.uncongest(key))
    }

    /// A member over the soft limit for too long, if any (then leave it).
    pub fn pop_expired(&mut self, now: Instant) -> Option<usize> {
        self.over_soft.pop_expired(now)
    }

    /// Members over the soft limit that have not been written to for the
    /// grace stop congesting the room; true if it has room again.
    pub fn expire_congestion(&mut self, now: Instant) -> bool {
        let mut freed = false;
        while self.congesting.pop_expired(now).is_some() {
            freed = self.congesting.is_empty();
        }
        freed
    }

    /// The next time something here is due: a member's soft-limit clock or
    /// the end of its grace.
    pub fn next_deadline(&self) -> Option<Instant> {
        crate::timer::earliest([
            self.over_soft.next_deadline(),
            self.congesting.next_deadline(),
        ])
    }

    /// Sender `key` has lines waiting for room.
    pub fn wait(&mut self, key: usize) {
        self.waiting.insert(key);
    }

    /// The senders to drive again now that no member congests the room
    /// (empty while one still does).
    pub fn wake(&mut self) -> Vec<usize> {
        if self.congesting.is_empty() {
            self.waiting.drain().collect()
        } else {
            Vec::new()
        }
    }

    /// Everyone is leaving (shutdown): no more announcements or judging.
    pub fn clear(&mut self) {
        self.members.clear();
        self.joining.clear();
        self.announcements.clear();
        self.waiting.clear();
        self.drained.clear();
        while self.over_soft.pop_expired(far_future()).is_some() {}
        while self.congesting.pop_expired(far_future()).is_some() {}
    }
}

/// A time past every deadline, to empty a deadline list.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn a_new_member_joins_after_its_own_announcement() {
        let (mut r, _) = room();
        r.join(1, peer(1));
        assert!(!r.members.contains(&1), "not a receiver of its own join");
        r.join(2, peer(2));
        let batch = r.take_announcements().unwrap();
        assert_eq!(&*batch, b"* 127.0.0.1:1 joined\n* 127.0.0.1:2 joined\n");
        let joined: Vec<(usize, usize)> = r.admit_joined().collect();
        // The first sees the second join; the second sees nothing of it.
        assert_eq!(&batch[joined[0].1..], b"* 127.0.0.1:2 joined\n");
        assert_eq!(joined[1].1, batch.len());
        assert!(r.members.contains(&1) && r.members.contains(&2));
        assert!(r.take_announcements().is_none());
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

    #[test]
    fn a_leave_is_announced_once_and_frees_the_room() {
        let (mut r, now) = room();
        r.members.insert(1);
        r.note_queued(1, 500, now);
        assert!(r.leave(1, peer(1), true));
        assert_eq!(
            &*r.take_announcements().unwrap(),
            b"* 127.0.0.1:1 left (too slow)\n"
        );
        assert!(!r.leave(1, peer(1), false), "not a member any more");
        assert!(r.take_announcements().is_none());
        assert_eq!(r.room(), 100);
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
            /// `take_announcements` then `admit_joined`, as the reactor
            /// always does them.
            Announce,
            /// Time moves on this many seconds, then expired members are
            /// dismissed.
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
                2 => Just(Op::Announce),
                2 => (0u64..4).prop_map(Op::PopExpired),
            ]
        }

        fn peer_of(key: usize) -> SocketAddr {
            peer(1000 + key as u16)
        }

        /// The room, plainly.
        #[derive(Default)]
        struct Model {
            members: BTreeSet<usize>,
            joining: Vec<usize>,
            waiting: BTreeSet<usize>,
            /// Over the soft limit: since when, and in which order.
            over: BTreeMap<usize, (Instant, u64)>,
            /// Over the soft limit and still reading: when last written to
            /// (or when it went over). Congests the room for the grace.
            congesting: BTreeMap<usize, Instant>,
            /// Bytes written since the congestion was last extended.
            drained: BTreeMap<usize, usize>,
            seq: u64,
            announcements: String,
            /// Leaves of keys that were in the room, per key.
            leaves_in: BTreeMap<usize, usize>,
        }

        impl Model {
            fn leave(&mut self, key: usize, too_slow: bool) -> bool {
                let was_in = self.members.remove(&key) || {
                    let at = self.joining.iter().position(|&k| k == key);
                    at.map(|i| self.joining.remove(i)).is_some()
                };
                self.waiting.remove(&key);
                self.over.remove(&key);
                self.drained.remove(&key);
                let was_congesting = self.congesting.remove(&key).is_some();
                if was_in {
                    let why = if too_slow { " (too slow)" } else { "" };
                    self.announcements += &format!("* {} left{why}\n", peer_of(key));
                    *self.leaves_in.entry(key).or_default() += 1;
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
        }

        proptest! {
            #![proptest_config(crate::prop::cases(256))]

            /// Any sequence of what the reactor does, against a plain
            /// model: members and joiners disjoint, the room closed exactly
            /// while some member is over the soft limit, senders woken
            /// only when it opens, and every leave announced once.
            #[test]
            fn chat_room_matches_a_model(ops in proptest::collection::vec(op(), 0..60)) {
                let (mut room, start) = room();
                let limits = room.limits();
                let mut model = Model::default();
                let mut now = start;
                // Every batch the room gave out.
                let mut seen = Vec::new();
                for op in ops {
                    match op {
                        Op::Join(key) => {
                            // The reactor joins only a connection just opened.
                            if model.members.contains(&key) || model.joining.contains(&key) {
                                continue;
                            }
                            room.join(key, peer_of(key));
                            model.joining.push(key);
                            model.announcements += &format!("* {} joined\n", peer_of(key));
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
                            if !model.members.contains(&key) && !model.joining.contains(&key) {
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
                        Op::Announce => {
                            let batch = room.take_announcements();
                            let text = std::mem::take(&mut model.announcements);
                            prop_assert_eq!(batch.as_deref(), (!text.is_empty()).then_some(text.as_bytes()));
                            seen.extend_from_slice(text.as_bytes());
                            let admitted: Vec<(usize, usize)> = room.admit_joined().collect();
                            // In any order: each carries its own offset.
                            prop_assert_eq!(
                                admitted.iter().map(|a| a.0).collect::<BTreeSet<_>>(),
                                std::mem::take(&mut model.joining).into_iter().collect::<BTreeSet<_>>()
                            );
                            for (key, from) in admitted {
                                // Each gets the batch after its own join.
                                let own = format!("* {} joined\n", peer_of(key));
                                prop_assert!(text.as_bytes()[..from].ends_with(own.as_bytes()));
                                model.members.insert(key);
                            }
                        }
                        Op::PopExpired(secs) => {
                            now += Duration::from_secs(secs);
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
                    prop_assert!(room.members.iter().all(|k| !room.joining.iter().any(|j| j.0 == *k)));
                    prop_assert_eq!(room.members.iter().copied().collect::<BTreeSet<_>>(), model.members.clone());
                    prop_assert_eq!(room.room() == 0, !model.congesting.is_empty());
                    prop_assert!(model.congesting.keys().all(|k| model.over.contains_key(k)));
                    prop_assert!(room.room() == 0 || room.room() == limits.soft);
                    prop_assert_eq!(room.over_soft.len(), model.over.len());
                    prop_assert!(model.over.keys().all(|k| model.members.contains(k)));
                }
                // Every leave of a key in the room was announced, once.
                if let Some(batch) = room.take_announcements() {
                    seen.extend_from_slice(&batch);
                }
                let seen = String::from_utf8(seen).expect("announcements are text");
                for key in 0..6 {
                    let line = format!("* {} left", peer_of(key));
                    let announced = seen.matches(&line).count();
                    prop_assert_eq!(announced, model.leaves_in.get(&key).copied().unwrap_or(0));
                }
            }
        }
    }
}
