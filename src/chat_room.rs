//! The chat room's bookkeeping: who is a member, who is behind, who waits
//! to broadcast, and the join and leave lines not yet sent. Pure: no I/O and
//! no sockets; the reactor queues the lines and closes the connections.
//!
//! Flow control, after Redis's `client-output-buffer-limit`: a member's
//! queue (bytes of shared lines not yet written to it, plus what each queued
//! entry costs) is judged after the server has tried to write to it. Over the
//! hard limit it is disconnected at once; over the soft limit it may stay for
//! [`ChatLimits::soft_for`], continuously, before it is. Meanwhile the room
//! is congested: senders may broadcast nothing ([`ChatRoom::room`] is 0),
//! their lines wait in their own receive buffers, and they are woken when no
//! member is over the soft limit any more. So a paste goes out at the pace
//! of the members that keep up, a member that drains its queue is never
//! dropped, and one that does not holds the others back for at most
//! `soft_for`.
//!
//! Joins and leaves are batched: the lines of one turn go out as one shared
//! chunk, so thousands of joins cost each member one queue entry per turn,
//! not one per join; a member joins the room once its own join went out, so
//! it does not see it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::timer::DeadlineList;

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
            waiting: HashSet::new(),
        }
    }

    pub fn limits(&self) -> ChatLimits {
        self.limits
    }

    /// Bytes a sender may broadcast in its turn: the soft limit while no
    /// member is over it, else nothing.
    pub fn room(&self) -> usize {
        if self.over_soft.is_empty() {
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
        let was_over = self.over_soft.contains(key);
        self.over_soft.remove(key);
        if was_member || was_joining.is_some() {
            let why = if too_slow { " (too slow)" } else { "" };
            self.announcements
                .extend_from_slice(format!("* {peer} left{why}\n").as_bytes());
        }
        was_over && self.over_soft.is_empty()
    }

    /// The batch of join and leave lines to queue to the current members,
    /// if any. Then call [`ChatRoom::admit_joined`] to queue to each new
    /// member the part of the batch after its own join.
    pub fn take_announcements(&mut self) -> Option<Rc<[u8]>> {
        (!self.announcements.is_empty()).then(|| Rc::from(std::mem::take(&mut self.announcements)))
    }

    /// Those whose join went out with the last batch become members; each
    /// with the offset in that batch from which it is to receive it.
    pub fn admit_joined(&mut self) -> std::vec::Drain<'_, (usize, usize)> {
        for &(key, _) in &self.joining {
            self.members.insert(key);
        }
        self.joining.drain(..)
    }

    /// A member's queue grew to `cost`: over the soft limit, the room is
    /// congested and its clock starts (if not already running).
    pub fn note_queued(&mut self, key: usize, cost: usize, now: Instant) {
        if cost > self.limits.soft && !self.over_soft.contains(key) {
            self.over_soft.touch(key, now);
        }
    }

    /// Judges member `key` after the server tried to write to it, its queue
    /// now `cost`. Returns the judgement, and whether the room has room again
    /// because of it (see [`ChatRoom::wake`]).
    pub fn judge(&mut self, key: usize, cost: usize, now: Instant) -> (Judgement, bool) {
        if cost > self.limits.hard {
            return (Judgement::TooSlow, false);
        }
        if cost > self.limits.soft {
            self.note_queued(key, cost, now);
            return (Judgement::Keep, false);
        }
        let was_over = self.over_soft.contains(key);
        self.over_soft.remove(key);
        (Judgement::Keep, was_over && self.over_soft.is_empty())
    }

    /// A member over the soft limit for too long, if any (then leave it).
    pub fn pop_expired(&mut self, now: Instant) -> Option<usize> {
        self.over_soft.pop_expired(now)
    }

    /// Sender `key` has lines waiting for room.
    pub fn wait(&mut self, key: usize) {
        self.waiting.insert(key);
    }

    /// The senders to drive again now that no member is over the soft limit
    /// (empty while one still is).
    pub fn wake(&mut self) -> Vec<usize> {
        if self.over_soft.is_empty() {
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
        while self.over_soft.pop_expired(far_future()).is_some() {}
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
        assert_eq!(r.judge(1, 120, now), (Judgement::Keep, false));
        assert_eq!(r.judge(1, 40, now), (Judgement::Keep, true), "drained");
        assert_eq!(r.room(), 100);
        assert_eq!(r.wake(), vec![7]);
    }

    #[test]
    fn over_the_soft_limit_for_too_long_or_over_the_hard_limit_is_too_slow() {
        let (mut r, now) = room();
        r.members.insert(1);
        r.members.insert(2);
        r.note_queued(1, 150, now);
        // Draining and refilling restarts the clock: only a continuous
        // excess counts.
        r.judge(1, 50, now + Duration::from_secs(3));
        r.note_queued(1, 150, now + Duration::from_secs(4));
        assert_eq!(r.pop_expired(now + Duration::from_secs(6)), None);
        assert_eq!(r.pop_expired(now + Duration::from_secs(9)), Some(1));
        assert_eq!(r.judge(2, 1001, now).0, Judgement::TooSlow);
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
}
