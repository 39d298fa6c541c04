//! Admission: caps on open client connections, in total and per client IP,
//! the small reserve the admin service has apart from them, and the
//! descriptor budget that says what cap the process's `RLIMIT_NOFILE` can
//! hold ([`DescriptorBudget`]).
//!
//! The notes say a server holding long connections may cap how many one
//! client holds; the total cap keeps file descriptors and buffer memory for
//! the clients already connected. Admin connections do not count against
//! either cap (an operator needs `stats` most when clients fill the server,
//! as HAProxy keeps its stats socket outside `maxconn`); they have a reserve
//! of their own, [`OPERATOR_RESERVE`]. When the reserve is full, a few more
//! ([`OPERATOR_REFUSALS`]) are held just long enough to be refused in their own
//! protocol. At `--max-conns` the reactor may evict the idlest connection to
//! admit a newcomer ([`Admission::per_ip_allows`] says whether the newcomer
//! would then get in). Pure: no I/O here.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

/// Why a new connection is turned away. `Display` is the line sent to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-conns` reached.
    Full,
    /// `--max-conns-per-ip` reached for this address.
    PerIp(IpAddr),
    /// Every admin slot of the reserve is taken.
    OperatorsFull,
}

/// Admin connections open at once at most, outside `--max-conns`: a few
/// operators and scripts, not a way around the cap (each can ask for a
/// table of every connection).
pub const OPERATOR_RESERVE: usize = 16;

/// Admin clients refused (the reserve full) that are held at once while
/// their first bytes are awaited, so each is refused in its own protocol
/// (an HTTP `503`, or the `ERR` line). A few: a scraper and an operator or
/// two retrying; past it a refusal is decided at once, from whatever bytes
/// have arrived, and each held one costs a descriptor for at most
/// `REFUSAL_WAIT` (see the reactor).
pub const OPERATOR_REFUSALS: usize = 16;

/// Descriptors the process needs besides its connections and listeners:
/// the standard streams, the poller, the signal pipes, the log's own
/// description of stderr, the spare descriptor kept for refusing at the
/// limit, descriptors inherited from the parent, and a few opened in
/// passing (a files name being resolved). Measured at 11 on a server
/// with two listeners; Redis keeps 32 for the same (CONFIG_MIN_RESERVED_FDS).
pub const RESERVED_FDS: u64 = 32;

/// The soft limit asked for when there is no `--max-conns`: all the hard
/// limit allows, but no more than Linux's default `fs.nr_open`, above which
/// setrlimit fails anyway (and an unlimited hard limit is not a number).
pub const NO_CAP_FDS: u64 = 1 << 20;

/// How many descriptors a cap of client connections costs.
///
/// Each client connection holds its socket, and when a files listener runs
/// it may hold one more (the file it sends, or the directory a `LIST` is
/// reading; a walk keeps only the deepest one open), so then it counts
/// twice: a cap that fits the limit never leaves an admitted client
/// without the descriptor its request needs. Admin connections have their
/// [`OPERATOR_RESERVE`]; listeners one each; the rest is [`RESERVED_FDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// Descriptors per client connection: 1, or 2 with a files listener.
    pub per_conn: u64,
    /// Descriptors held whatever the number of clients.
    pub fixed: u64,
}

impl DescriptorBudget {
    /// The budget of a server with `listeners` listeners, `files` if one of
    /// them serves files.
    pub fn new(listeners: usize, files: bool) -> DescriptorBudget {
        DescriptorBudget {
            per_conn: if files { 2 } else { 1 },
            fixed: RESERVED_FDS + listeners as u64 + OPERATOR_RESERVE as u64,
        }
    }

    /// Descriptors needed to hold `conns` client connections.
    pub fn needed(&self, conns: usize) -> u64 {
        self.fixed
            .saturating_add(self.per_conn.saturating_mul(conns as u64))
    }

    /// Most client connections `limit` descriptors hold (0 when not even
    /// the fixed part fits).
    pub fn conns_within(&self, limit: u64) -> usize {
        let n = limit.saturating_sub(self.fixed) / self.per_conn;
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// The soft limit to ask for, from the current `soft` and `hard` ones:
    /// what `max_conns` needs, at most the hard limit (with no cap, all of
    /// it, up to [`NO_CAP_FDS`]). `None` when the soft limit is enough
    /// already, or cannot go higher; never lower than it is.
    pub fn soft_wanted(&self, max_conns: Option<usize>, soft: u64, hard: u64) -> Option<u64> {
        let want = match max_conns {
            Some(cap) => self.needed(cap).min(hard),
            None => hard.min(NO_CAP_FDS),
        };
        (want > soft).then_some(want)
    }
}

impl Refusal {
    /// A short name for counters.
    pub fn cause(self) -> &'static str {
        match self {
            Refusal::Full | Refusal::OperatorsFull => "full",
            Refusal::PerIp(_) => "per-ip",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Full => f.write_str("ERR server full"),
            Refusal::PerIp(ip) => write!(f, "ERR too many connections from {ip}"),
            Refusal::OperatorsFull => f.write_str("ERR too many admin connections"),
        }
    }
}

/// Counts open connections and decides on new ones.
///
/// Invariant: `per_ip` holds exactly the addresses with at least one open
/// connection, with their counts, and `total` is the sum of the counts. An
/// address's entry is removed when its count falls to zero, so the map is
/// bounded by the open connections, not by every address ever seen.
#[derive(Debug, Default)]
pub struct Admission {
    max_total: Option<usize>,
    max_per_ip: Option<usize>,
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Admin connections open, at most [`OPERATOR_RESERVE`].
    admin: usize,
}

impl Admission {
    /// Caps, `None` for no cap.
    pub fn new(max_total: Option<usize>, max_per_ip: Option<usize>) -> Admission {
        Admission {
            max_total,
            max_per_ip,
            ..Admission::default()
        }
    }

    /// Admits a connection from `ip` and counts it, or says why not.
    pub fn admit(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        if self.max_total.is_some_and(|max| self.total >= max) {
            return Err(Refusal::Full);
        }
        if !self.per_ip_allows(ip) {
            return Err(Refusal::PerIp(ip));
        }
        *self.per_ip.entry(ip).or_insert(0) += 1;
        self.total += 1;
        Ok(())
    }

    /// Whether the per-IP cap would let one more connection from `ip` in
    /// (the total cap aside): eviction at `--max-conns` makes room only for
    /// a newcomer that is admitted then.
    pub fn per_ip_allows(&self, ip: IpAddr) -> bool {
        let count = self.per_ip.get(&ip).copied().unwrap_or(0);
        self.max_per_ip.is_none_or(|max| count < max)
    }

    /// Forgets one admitted connection from `ip`.
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count -= 1;
            self.total -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Open connections counted.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Admits an admin connection from the reserve, or refuses it.
    pub fn admit_operator(&mut self) -> Result<(), Refusal> {
        if self.admin >= OPERATOR_RESERVE {
            return Err(Refusal::OperatorsFull);
        }
        self.admin += 1;
        Ok(())
    }

    /// Forgets one admitted admin connection.
    pub fn release_operator(&mut self) {
        self.admin = self.admin.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn admin_connections_have_a_reserve_outside_the_caps() {
        let mut a = Admission::new(Some(1), None);
        a.admit(ip(1)).unwrap();
        assert_eq!(a.admit(ip(2)), Err(Refusal::Full));
        for _ in 0..OPERATOR_RESERVE {
            a.admit_operator().unwrap();
        }
        assert_eq!(a.admit_operator(), Err(Refusal::OperatorsFull));
        a.release_operator();
        assert_eq!(a.admit_operator(), Ok(()));
        assert_eq!(a.total(), 1, "admin connections are not counted");
    }

    #[test]
    fn the_budget_counts_a_socket_per_client_and_a_file_more_with_files() {
        let plain = DescriptorBudget::new(2, false);
        assert_eq!(plain.fixed, RESERVED_FDS + 2 + OPERATOR_RESERVE as u64);
        assert_eq!(plain.needed(10_000), plain.fixed + 10_000);
        assert_eq!(plain.conns_within(plain.needed(10_000)), 10_000);
        assert_eq!(plain.conns_within(plain.needed(10_000) - 1), 9_999);
        let files = DescriptorBudget::new(2, true);
        assert_eq!(files.needed(100), files.fixed + 200);
        assert_eq!(files.conns_within(files.needed(100) + 1), 100);
        // Below the fixed part nothing fits, and nothing underflows.
        assert_eq!(plain.conns_within(0), 0);
        assert_eq!(plain.conns_within(plain.fixed), 0);
        assert_eq!(plain.needed(usize::MAX), u64::MAX);
    }

    #[test]
    fn the_soft_limit_is_raised_to_what_the_cap_needs_within_the_hard_limit() {
        let b = DescriptorBudget::new(1, false);
        let need = b.needed(10_000);
        // The common case: soft 1024, a generous hard limit.
        assert_eq!(b.soft_wanted(Some(10_000), 1024, 524_288), Some(need));
        // The hard limit is the most there is.
        assert_eq!(b.soft_wanted(Some(10_000), 1024, 4096), Some(4096));
        // Already enough, or no higher to go: left alone, never lowered.
        assert_eq!(b.soft_wanted(Some(10_000), need, need), None);
        assert_eq!(b.soft_wanted(Some(10_000), 1 << 20, 1 << 20), None);
        assert_eq!(b.soft_wanted(Some(10_000), 256, 256), None);
        // No cap: everything the hard limit gives, within nr_open's default.
        assert_eq!(b.soft_wanted(None, 1024, 4096), Some(4096));
        assert_eq!(b.soft_wanted(None, 1024, u64::MAX), Some(NO_CAP_FDS));
    }

    #[test]
    fn without_caps_everyone_is_admitted() {
        let mut a = Admission::new(None, None);
        for _ in 0..1000 {
            a.admit(ip(1)).unwrap();
        }
        assert_eq!(a.total(), 1000);
    }

    #[test]
    fn the_total_cap_refuses_past_n_and_frees_on_release() {
        let mut a = Admission::new(Some(2), None);
        a.admit(ip(1)).unwrap();
        a.admit(ip(2)).unwrap();
        assert_eq!(a.admit(ip(3)), Err(Refusal::Full));
        a.release(ip(1));
        a.admit(ip(3)).unwrap();
        assert_eq!(Refusal::Full.to_string(), "ERR server full");
    }

    #[test]
    fn the_per_ip_cap_counts_each_address_apart() {
        let mut a = Admission::new(None, Some(2));
        a.admit(ip(1)).unwrap();
        a.admit(ip(1)).unwrap();
        assert_eq!(a.admit(ip(1)), Err(Refusal::PerIp(ip(1))));
        a.admit(ip(2)).unwrap();
        a.release(ip(1));
        a.admit(ip(1)).unwrap();
        assert_eq!(
            Refusal::PerIp(ip(1)).to_string(),
            "ERR too many connections from 127.0.0.1"
        );
    }

    #[test]
    fn per_ip_allows_says_what_the_per_ip_cap_alone_decides() {
        let mut a = Admission::new(Some(1), Some(1));
        assert!(a.per_ip_allows(ip(1)));
        a.admit(ip(1)).unwrap();
        assert!(!a.per_ip_allows(ip(1)), "at its own cap");
        assert!(a.per_ip_allows(ip(2)), "the total cap is not its business");
        assert_eq!(a.admit(ip(2)), Err(Refusal::Full));
        assert!(Admission::new(None, None).per_ip_allows(ip(1)));
    }

    #[test]
    fn released_addresses_leave_no_entry() {
        let mut a = Admission::new(None, Some(5));
        for last in 0..=255 {
            a.admit(ip(last)).unwrap();
        }
        for last in 0..=255 {
            a.release(ip(last));
        }
        assert_eq!(a.total(), 0);
        assert!(a.per_ip.is_empty());
        a.release(ip(9)); // unknown: ignored
        assert_eq!(a.total(), 0);
    }
}
