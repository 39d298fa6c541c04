//! Deadlines for connections: one [`DeadlineList`] per timeout value.
//!
//! With a single timeout value, the connection that was touched longest ago
//! always expires first, so a list kept in touch order is enough: touching
//! moves a connection to the tail, the head is the next to expire. Every
//! operation is O(1), and no operation ever scans the connections. The links
//! live in a vector indexed by the connection's slab key, so the list
//! allocates nothing per touch, and each link is 16 bytes (32-bit keys, a
//! 64-bit nanosecond stamp): a list over 10,000 connections costs 160 KB.
//!
//! A list with a zero timeout is simply the connections in order of their
//! last touch, the longest untouched first: the reactor's activity order,
//! from which both `--idle-timeout` (the head, once it is that old) and the
//! eviction of the idlest connection at `--max-conns` are read
//! ([`DeadlineList::pop_expired`] with `now` minus the timeout,
//! [`DeadlineList::oldest`]).
//!
//! Pure: no I/O, and time is always passed in as `now`.

use std::time::{Duration, Instant};

/// No key: the end of the list, or an unlinked entry's neighbours.
const NIL: u32 = u32::MAX;

/// The largest key a list takes (the next value marks "no key").
pub const MAX_KEY: usize = NIL as usize - 1;

#[derive(Clone, Copy, Debug)]
struct Link {
    prev: u32,
    next: u32,
    /// The deadline, in nanoseconds since the list's epoch, plus one; 0:
    /// not in the list.
    at: u64,
}

/// Connections ordered by deadline, all with the same timeout.
///
/// Invariant: following `next` from `head` visits every linked key once, in
/// non-decreasing deadline order, and ends at `tail`.
#[derive(Debug)]
pub struct DeadlineList {
    timeout: Duration,
    links: Vec<Link>,
    head: u32,
    tail: u32,
    len: usize,
    /// The first deadline set: stamps count from it. Deadlines never go
    /// backwards, so none is before it.
    epoch: Option<Instant>,
}

impl DeadlineList {
    /// A list whose entries expire `timeout` after their last touch.
    pub fn new(timeout: Duration) -> DeadlineList {
        DeadlineList {
            timeout,
            links: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
            epoch: None,
        }
    }

    /// Entries in the list.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `key` is in the list.
    pub fn contains(&self, key: usize) -> bool {
        self.links.get(key).is_some_and(|l| l.at != 0)
    }

    /// Sets `key`'s deadline to `now + timeout`, adding it if absent.
    ///
    /// `now` must not go backwards between calls (it comes from a monotonic
    /// clock), which keeps the list ordered. `key` is at most [`MAX_KEY`]
    /// (the reactor's keys are: it refuses a connection past it).
    pub fn touch(&mut self, key: usize, now: Instant) {
        assert!(key <= MAX_KEY, "key {key} past the list's 32-bit keys");
        self.remove(key);
        if key >= self.links.len() {
            let filler = Link {
                prev: NIL,
                next: NIL,
                at: 0,
            };
            self.links.resize(key + 1, filler);
        }
        let deadline = now + self.timeout;
        let epoch = *self.epoch.get_or_insert(deadline);
        // 584 years of nanoseconds fit; a deadline before the epoch would
        // be time going backwards, which the assertion below catches.
        let at = u64::try_from(deadline.saturating_duration_since(epoch).as_nanos())
            .unwrap_or(u64::MAX - 1)
            + 1;
        debug_assert!(
            self.tail == NIL || self.links[self.tail as usize].at <= at,
            "time went backwards"
        );
        // `key <= MAX_KEY` was asserted: it fits, and is not NIL.
        let k = key as u32;
        self.links[key] = Link {
            prev: self.tail,
            next: NIL,
            at,
        };
        if self.tail == NIL {
            self.head = k;
        } else {
            self.links[self.tail as usize].next = k;
        }
        self.tail = k;
        self.len += 1;
    }

    /// Takes `key` out of the list, if it is in.
    pub fn remove(&mut self, key: usize) {
        let Some(link) = self.links.get(key).copied().filter(|l| l.at != 0) else {
            return;
        };
        if link.prev == NIL {
            self.head = link.next;
        } else {
            self.links[link.prev as usize].next = link.next;
        }
        if link.next == NIL {
            self.tail = link.prev;
        } else {
            self.links[link.next as usize].prev = link.prev;
        }
        self.links[key].at = 0;
        self.len -= 1;
    }

    /// The deadline a link's stamp stands for.
    fn instant(&self, at: u64) -> Instant {
        // A linked entry's stamp was made after the epoch was set.
        let epoch = self.epoch.expect("a linked entry set the epoch");
        epoch + Duration::from_nanos(at - 1)
    }

    /// The earliest deadline in the list.
    pub fn next_deadline(&self) -> Option<Instant> {
        (self.head != NIL).then(|| self.instant(self.links[self.head as usize].at))
    }

    /// Takes out and returns one key whose deadline is at or before `now`,
    /// earliest first.
    pub fn pop_expired(&mut self, now: Instant) -> Option<usize> {
        let head = self.head as usize;
        if self.head != NIL && self.instant(self.links[head].at) <= now {
            self.remove(head);
            Some(head)
        } else {
            None
        }
    }

    /// The keys and deadlines from the earliest on, in order; take as few
    /// as needed (each step is O(1)).
    pub fn oldest(&self) -> impl Iterator<Item = (usize, Instant)> + '_ {
        let mut key = self.head;
        std::iter::from_fn(move || {
            if key == NIL {
                return None;
            }
            let link = self.links[key as usize];
            let item = (key as usize, self.instant(link.at));
            key = link.next;
            Some(item)
        })
    }
}

/// The nearest of some optional deadlines.
pub fn earliest(deadlines: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    deadlines.into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn empty_list_has_no_deadline() {
        let mut list = DeadlineList::new(secs(5));
        let now = Instant::now();
        assert_eq!(list.next_deadline(), None);
        assert_eq!(list.pop_expired(now + secs(100)), None);
        assert!(list.is_empty());
    }

    #[test]
    fn entries_expire_in_touch_order() {
        let t0 = Instant::now();
        let mut list = DeadlineList::new(secs(10));
        list.touch(3, t0);
        list.touch(1, t0 + secs(1));
        list.touch(7, t0 + secs(2));
        assert_eq!(list.next_deadline(), Some(t0 + secs(10)));
        assert_eq!(list.pop_expired(t0 + secs(9)), None);
        assert_eq!(list.pop_expired(t0 + secs(11)), Some(3));
        assert_eq!(list.pop_expired(t0 + secs(11)), Some(1));
        assert_eq!(list.pop_expired(t0 + secs(11)), None);
        assert_eq!(list.next_deadline(), Some(t0 + secs(12)));
    }

    #[test]
    fn touching_an_entry_moves_it_last() {
        let t0 = Instant::now();
        let mut list = DeadlineList::new(secs(10));
        list.touch(0, t0);
        list.touch(1, t0 + secs(1));
        list.touch(0, t0 + secs(2));
        assert_eq!(list.len(), 2);
        assert_eq!(list.pop_expired(t0 + secs(20)), Some(1));
        assert_eq!(list.pop_expired(t0 + secs(20)), Some(0));
    }

    #[test]
    fn removed_entries_never_expire() {
        let t0 = Instant::now();
        let mut list = DeadlineList::new(secs(1));
        list.touch(0, t0);
        list.touch(1, t0);
        list.touch(2, t0);
        list.remove(1);
        list.remove(1);
        list.remove(99);
        assert!(!list.contains(1));
        let mut expired = Vec::new();
        while let Some(k) = list.pop_expired(t0 + secs(2)) {
            expired.push(k);
        }
        assert_eq!(expired, vec![0, 2]);
        assert!(list.is_empty());
    }

    #[test]
    fn a_link_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Link>(), 16);
    }

    #[test]
    fn with_no_timeout_the_list_is_the_activity_order() {
        let t0 = Instant::now();
        let mut list = DeadlineList::new(Duration::ZERO);
        list.touch(4, t0);
        list.touch(2, t0 + secs(1));
        list.touch(9, t0 + secs(2));
        list.touch(4, t0 + secs(3));
        let order: Vec<(usize, Instant)> = list.oldest().collect();
        assert_eq!(
            order,
            vec![(2, t0 + secs(1)), (9, t0 + secs(2)), (4, t0 + secs(3))]
        );
        // Idle for 1.6 s or more at t0 + 3.5 s: the first one only.
        let idle_for = Duration::from_millis(1600);
        let now = t0 + Duration::from_millis(3500);
        assert_eq!(list.pop_expired(now - idle_for), Some(2));
        assert_eq!(list.pop_expired(now - idle_for), None);
        assert_eq!(list.oldest().take(1).count(), 1);
    }

    #[test]
    fn earliest_ignores_missing_deadlines() {
        let t0 = Instant::now();
        assert_eq!(earliest([None, Some(t0 + secs(2)), Some(t0)]), Some(t0));
        assert_eq!(earliest([None, None]), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        #[derive(Clone, Debug)]
        enum Op {
            /// Time moves on this many milliseconds first (0 included).
            Touch(usize, u64),
            Remove(usize),
            PopExpired(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0usize..10, 0u64..400).prop_map(|(k, dt)| Op::Touch(k, dt)),
                2 => (0usize..12).prop_map(Op::Remove),
                3 => (0u64..1500).prop_map(Op::PopExpired),
            ]
        }

        proptest! {
            #![proptest_config(crate::prop::cases(256))]

            /// Against a map ordered by (deadline, touch order): deadlines
            /// expire in order and only when due, removals are exact, and
            /// `len`, `contains` and `next_deadline` agree.
            #[test]
            fn deadline_list_matches_an_ordered_map(ops in proptest::collection::vec(op(), 0..80)) {
                let timeout = Duration::from_millis(1000);
                let start = Instant::now();
                let mut now = start;
                let mut list = DeadlineList::new(timeout);
                let mut order: BTreeMap<(Instant, u64), usize> = BTreeMap::new();
                let mut entry: BTreeMap<usize, (Instant, u64)> = BTreeMap::new();
                let mut seq = 0;
                for op in ops {
                    match op {
                        Op::Touch(key, dt) => {
                            now += Duration::from_millis(dt);
                            list.touch(key, now);
                            if let Some(old) = entry.remove(&key) {
                                order.remove(&old);
                            }
                            seq += 1;
                            order.insert((now + timeout, seq), key);
                            entry.insert(key, (now + timeout, seq));
                        }
                        Op::Remove(key) => {
                            list.remove(key);
                            if let Some(old) = entry.remove(&key) {
                                order.remove(&old);
                            }
                        }
                        Op::PopExpired(dt) => {
                            now += Duration::from_millis(dt);
                            loop {
                                let due = order.first_key_value().filter(|(at, _)| at.0 <= now).map(|(at, &k)| (*at, k));
                                let popped = list.pop_expired(now);
                                prop_assert_eq!(popped, due.map(|(_, k)| k));
                                let Some((at, key)) = due else { break };
                                order.remove(&at);
                                entry.remove(&key);
                            }
                        }
                    }
                    prop_assert_eq!(list.len(), entry.len());
                    prop_assert_eq!(list.is_empty(), entry.is_empty());
                    prop_assert_eq!(list.next_deadline(), order.keys().next().map(|at| at.0));
                    for key in 0..12 {
                        prop_assert_eq!(list.contains(key), entry.contains_key(&key));
                    }
                }
            }
        }
    }
}
