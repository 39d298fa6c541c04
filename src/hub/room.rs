//! The chat room's bookkeeping: who is a member, who is behind, who waits
//! to broadcast, and the join and leave news not yet sent. Pure: no I/O, no
//! sockets and no clock (`now` is passed in); the [hub](super) turns what
//! it decides into commands, and the reactor queues the lines and closes
//! the connections.
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
//! Joins and leaves are information, not obligations (as IRC servers limit
//! join floods, and Redis pub/sub announces nothing at all):
//! - a join or a leave costs O(1) when it happens; the news waits here;
//! - it goes out in batches, one per [`ANNOUNCE_EVERY`] at most (the first
//!   after a quiet spell at once), and a batch of more than
//!   [`ANNOUNCE_NAMES`] joins and leaves is the one line `* N joined, M left`;
//! - a connection that joins and leaves between two batches was never seen,
//!   and is announced to no one;
//! - a member whose queue is over the soft limit, or would go over it, skips
//!   a batch rather than queue it ([`ChatRoom::skips_announcement`]), so
//!   news never congests the room nor brings a member nearer its limits.
//!
//! So a connect/close storm costs each member a line or two a second, and a
//! join at a human rate is still announced by name. A connection is a
//! member (it receives lines) from its accept on; a batch that names its
//! join is queued to it from just past its own join line, so it does not
//! see itself join (a summary it gets whole: the count of those who came
//! with it). A sender's join goes out before its first line (the
//! hub asks for the batch at once then, [`ChatRoom::is_announced`]).
//!
//! At shutdown ([`ChatRoom::shut`]) the room announces nothing more and
//! judges no one: nothing more is read, so what is left to broadcast is what
//! members have already read, bounded by their receive buffers.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::buffer::Chunk;
pub use crate::config::ChatLimits;
use crate::timer::DeadlineList;

/// How long a member over the soft limit may go without the server writing
/// to it and still hold senders back: long enough for a slow reader's next
/// read (many round trips), short enough that a member that has stopped
/// reading stalls a paste only briefly.
pub const CONGESTION_GRACE: Duration = Duration::from_millis(500);

/// Most joins and leaves one batch names; a batch with more is summarised as
/// `* N joined, M left`. About as many lines as a person takes in at a
/// glance; past it, names are noise, and the one summary line keeps a burst
/// from costing each member more than one short line.
pub const ANNOUNCE_NAMES: usize = 32;

/// The least time between two batches of announcements. Half a second is a
/// delay a person barely notices (and the first news after a quiet spell
/// goes out at once); it bounds a connect/close storm to two batches a
/// second per member, and a connection that comes and goes within it is
/// never announced at all.
pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(500);

/// What [`ChatRoom::judge`] decided about a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    Keep,
    /// Over the hard limit: disconnect it.
    TooSlow,
}

/// A batch of join and leave lines to queue to the members.
#[derive(Debug)]
pub struct Batch {
    pub lines: Chunk,
    /// The members whose own join is named in this batch, each with the
    /// offset in `lines` from which it receives them: just past its own
    /// join line. (A summary goes to everyone whole.)
    newcomers: HashMap<usize, usize>,
}

impl Batch {
    /// Where member `key`'s part of the batch begins.
    pub fn from(&self, key: usize) -> usize {
        self.newcomers.get(&key).copied().unwrap_or(0)
    }
}

/// Membership and flow-control state of the one chat room.
///
/// Invariants: `members` holds only keys of open chat connections, and
/// `unannounced`, `over_soft`, `congesting`, `drained` and `waiting` only
/// keys of `members` (`waiting` also of senders dismissed, still open);
/// `leaves` holds at most [`ANNOUNCE_NAMES`] names and `left` counts them all.
#[derive(Debug)]
pub struct ChatRoom {
    limits: ChatLimits,
    /// Open chat connections: each receives every other's lines.
    pub members: HashSet<usize>,
    /// Members whose join is not announced yet: their peer, and the order
    /// of the join among the news.
    unannounced: HashMap<usize, (SocketAddr, u64)>,
    /// Leaves not announced yet, of members whose join was: their order,
    /// peer and whether they were dismissed as too slow. Only the first
    /// [`ANNOUNCE_NAMES`] are kept: a batch with more is summarised.
    leaves: Vec<(u64, SocketAddr, bool)>,
    /// Every leave not announced yet (of announced members).
    left: usize,
    /// Orders the news within a batch.
    next_event: u64,
    /// When the last batch went out; `None` before the first.
    last_batch: Option<Instant>,
    /// The server is shutting down: see [`ChatRoom::shut`].
    shut: bool,
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
            unannounced: HashMap::new(),
            leaves: Vec::new(),
            left: 0,
            next_event: 0,
            last_batch: None,
            shut: false,
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
    /// member congests the room, else nothing; at shutdown, everything it
    /// has read.
    pub fn room(&self) -> usize {
        if self.shut {
            usize::MAX
        } else if self.congesting.is_empty() {
            self.limits.soft
        } else {
            0
        }
    }

    /// A new chat connection: a member at once; its join is news.
    pub fn join(&mut self, key: usize, peer: SocketAddr) {
        if self.shut {
            return;
        }
        self.members.insert(key);
        self.unannounced.insert(key, (peer, self.next_event));
        self.next_event += 1;
    }

    /// Connection `key` leaves (closed, or dismissed as `too_slow`); its
    /// leave is news if its join was announced (otherwise no one ever heard
    /// of it, and no one will). True if the room has room again because of
    /// it (see [`ChatRoom::wake`]).
    pub fn leave(&mut self, key: usize, peer: SocketAddr, too_slow: bool) -> bool {
        let was_member = self.members.remove(&key);
        let unseen = self.unannounced.remove(&key).is_some();
        self.waiting.remove(&key);
        self.over_soft.remove(key);
        let freed = self.uncongest(key);
        if was_member && !unseen && !self.shut {
            self.left += 1;
            if self.leaves.len() < ANNOUNCE_NAMES {
                self.leaves.push((self.next_event, peer, too_slow));
            }
            self.next_event += 1;
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

    /// Whether member `key`'s join has been announced.
    pub fn is_announced(&self, key: usize) -> bool {
        !self.unannounced.contains_key(&key)
    }

    /// Joins and leaves waiting to be announced.
    fn news(&self) -> usize {
        self.unannounced.len() + self.left
    }

    /// The batch of news to queue to the members, if there is news and
    /// [`ANNOUNCE_EVERY`] has passed since the last batch (or `force`: a
    /// sender's join must precede its line). Its joiners are announced
    /// members from now on.
    pub fn take_announcements(&mut self, now: Instant, force: bool) -> Option<Batch> {
        if self.news() == 0 || (!force && self.news_due().is_some_and(|due| now < due)) {
            return None;
        }
        self.last_batch = Some(now);
        let mut newcomers = HashMap::new();
        let text = if self.news() > ANNOUNCE_NAMES {
            let text = format!("* {} joined, {} left\n", self.unannounced.len(), self.left);
            // Newcomers get all of it: it tells them of the others who came
            // with them, which they would not learn otherwise.
            self.unannounced.clear();
            text
        } else {
            // At most ANNOUNCE_NAMES lines, in the order they happened.
            let mut news: Vec<(u64, SocketAddr, Option<usize>, bool)> = self
                .unannounced
                .drain()
                .map(|(key, (peer, at))| (at, peer, Some(key), false))
                .chain(
                    self.leaves
                        .iter()
                        .map(|&(at, peer, slow)| (at, peer, None, slow)),
                )
                .collect();
            news.sort_unstable_by_key(|n| n.0);
            let mut text = String::new();
            for (_, peer, joined, too_slow) in news {
                match joined {
                    Some(key) => {
                        text.push_str(&format!("* {peer} joined\n"));
                        newcomers.insert(key, text.len());
                    }
                    None if too_slow => text.push_str(&format!("* {peer} left (too slow)\n")),
                    None => text.push_str(&format!("* {peer} left\n")),
                }
            }
            text
        };
        self.leaves.clear();
        self.left = 0;
        Some(Batch {
            lines: Chunk::from(text.into_bytes()),
            newcomers,
        })
    }

    /// When the news waiting may go out; `None` if there is none, or it may
    /// go now (no batch yet).
    fn news_due(&self) -> Option<Instant> {
        if self.news() == 0 {
            return None;
        }
        self.last_batch.map(|at| at + ANNOUNCE_EVERY)
    }

    /// Whether a member whose queue costs `cost` skips a batch of `len`
    /// bytes: it would be over the soft limit with it. News is not worth
    /// congesting the room for, nor a step towards a member's dismissal.
    pub fn skips_announcement(&self, cost: usize, len: usize) -> bool {
        cost.saturating_add(len) > self.limits.soft
    }

    /// A member's queue grew to `cost`: on going over the soft limit its
    /// clock starts and it congests the room (for at most the grace, unless
    /// it keeps reading).
    pub fn note_queued(&mut self, key: usize, cost: usize, now: Instant) {
        if !self.shut && cost > self.limits.soft && !self.over_soft.contains(key) {
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
        if self.shut {
            // Everyone is leaving, with what was already read: no one is
            // dropped for it.
            return (Judgement::Keep, false);
        }
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

    /// The next time something here is due: a member's soft-limit clock,
    /// the end of its grace, or the next batch of news.
    pub fn next_deadline(&self) -> Option<Instant> {
        crate::timer::earliest([
            self.over_soft.next_deadline(),
            self.congesting.next_deadline(),
            self.news_due(),
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

    /// The server is shutting down: everyone is leaving, so announcing each
    /// leave to the others would be O(n^2) lines nobody reads; nothing more
    /// is read, so there is nothing to pace. From now on the room announces
    /// nothing, judges no one and always has room; members stay members,
    /// so what was read reaches them before their conversations end.
    pub fn shut(&mut self) {
        self.shut = true;
        self.unannounced.clear();
        self.leaves.clear();
        self.left = 0;
        self.waiting.clear();
        self.drained.clear();
        self.over_soft = DeadlineList::new(self.limits.soft_for);
        self.congesting = DeadlineList::new(CONGESTION_GRACE);
    }
}

#[cfg(test)]
mod tests;
