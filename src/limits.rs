//! Admission: caps on open client connections, in total and per client IP,
//! and the small reserve the admin service has apart from them.
//!
//! The notes say a server holding long connections may cap how many one
//! client holds; the total cap keeps file descriptors and buffer memory for
//! the clients already connected. Admin connections do not count against
//! either cap (an operator needs `stats` most when clients fill the server,
//! as HAProxy keeps its stats socket outside `maxconn`); they have a reserve
//! of their own, [`ADMIN_RESERVE`]. When the reserve is full, a few more
//! ([`ADMIN_REFUSALS`]) are held just long enough to be refused in their own
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
    AdminFull,
}

/// Admin connections open at once at most, outside `--max-conns`: a few
/// operators and scripts, not a way around the cap (each can ask for a
/// table of every connection).
pub const ADMIN_RESERVE: usize = 16;

/// Admin clients refused (the reserve full) that are held at once while
/// their first bytes are awaited, so each is refused in its own protocol
/// (an HTTP `503`, or the `ERR` line). A few: a scraper and an operator or
/// two retrying; past it a refusal is decided at once, from whatever bytes
/// have arrived, and each held one costs a descriptor for at most
/// `REFUSAL_WAIT` (see the reactor).
pub const ADMIN_REFUSALS: usize = 16;

impl Refusal {
    /// A short name for counters.
    pub fn cause(self) -> &'static str {
        match self {
            Refusal::Full | Refusal::AdminFull => "full",
            Refusal::PerIp(_) => "per-ip",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Full => f.write_str("ERR server full"),
            Refusal::PerIp(ip) => write!(f, "ERR too many connections from {ip}"),
            Refusal::AdminFull => f.write_str("ERR too many admin connections"),
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
    /// Admin connections open, at most [`ADMIN_RESERVE`].
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
    pub fn admit_admin(&mut self) -> Result<(), Refusal> {
        if self.admin >= ADMIN_RESERVE {
            return Err(Refusal::AdminFull);
        }
        self.admin += 1;
        Ok(())
    }

    /// Forgets one admitted admin connection.
    pub fn release_admin(&mut self) {
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
        for _ in 0..ADMIN_RESERVE {
            a.admit_admin().unwrap();
        }
        assert_eq!(a.admit_admin(), Err(Refusal::AdminFull));
        a.release_admin();
        assert_eq!(a.admit_admin(), Ok(()));
        assert_eq!(a.total(), 1, "admin connections are not counted");
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
