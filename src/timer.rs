//! Deadlines for connections: one [`DeadlineList`] per timeout value.
//!
//! With a single timeout value, the connection that was touched longest ago
//! always expires first, so a list kept in touch order is enough: touching
//! moves a connection to the tail, the head is the next to expire. Every
//! operation is O(1), and no operation ever scans the connections. The links
//! live in a vector indexed by the connection's slab key, so the list
//! allocates nothing per touch.
//!
//! Pure: no I/O, and time is always passed in as `now`.

use std::time::{Duration, Instant};

const NIL: usize = usize::MAX;

#[derive(Clone, Copy, Debug)]
struct Link {
    prev: usize,
    next: usize,
    deadline: Instant,
    linked: bool,
}

/// Connections ordered by deadline, all with the same timeout.
///
/// Invariant: following `next` from `head` visits every linked key once, in
/// non-decreasing deadline order, and ends at `tail`.
#[derive(Debug)]
pub struct DeadlineList {
    timeout: Duration,
    links: Vec<Link>,
    head: usize,
    tail: usize,
    len: usize,
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
        self.links.get(key).is_some_and(|l| l.linked)
    }

    /// Sets `key`'s deadline to `now + timeout`, adding it if absent.
    ///
    /// `now` must not go backwards between calls (it comes from a monotonic
    /// clock), which keeps the list ordered.
    pub fn touch(&mut self, key: usize, now: Instant) {
        self.remove(key);
        if key >= self.links.len() {
            let filler = Link {
                prev: NIL,
                next: NIL,
                deadline: now,
                linked: false,
            };
            self.links.resize(key + 1, filler);
        }
        let deadline = now + self.timeout;
        debug_assert!(
            self.tail == NIL || self.links[self.tail].deadline <= deadline,
            "time went backwards"
        );
        self.links[key] = Link {
            prev: self.tail,
            next: NIL,
            deadline,
            linked: true,
        };
        if self.tail == NIL {
            self.head = key;
        } else {
            self.links[self.tail].next = key;
        }
        self.tail = key;
        self.len += 1;
    }

    /// Takes `key` out of the list, if it is in.
    pub fn remove(&mut self, key: usize) {
        let Some(link) = self.links.get(key).copied().filter(|l| l.linked) else {
            return;
        };
        if link.prev == NIL {
            self.head = link.next;
        } else {
            self.links[link.prev].next = link.next;
        }
        if link.next == NIL {
            self.tail = link.prev;
        } else {
            self.links[link.next].prev = link.prev;
        }
        self.links[key].linked = false;
        self.len -= 1;
    }

    /// The earliest deadline in the list.
    pub fn next_deadline(&self) -> Option<Instant> {
        (self.head != NIL).then(|| self.links[self.head].deadline)
    }

    /// Takes out and returns one key whose deadline is at or before `now`,
    /// earliest first.
    pub fn pop_expired(&mut self, now: Instant) -> Option<usize> {
        let head = self.head;
        if head != NIL && self.links[head].deadline <= now {
            self.remove(head);
            Some(head)
        } else {
            None
        }
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
