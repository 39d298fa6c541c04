//! Accepting, and refusing: at most [`MAX_ACCEPTS_PER_TURN`] per listener
//! per turn; admission against the caps (and eviction of the idlest at
//! `--max-conns`); out of descriptors, the spare descriptor that lets a
//! newcomer be told `ERR server full`; back-off after other failures; and
//! refused operators, held until their first bytes say which protocol to
//! refuse them in. Part of the reactor: registers sockets; names no
//! service (a listener's [`Policy`] says what its connections are).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::{GENERATION_MASK, KEY_MASK, REFUSED_TOKEN, Server, conn_token};
use crate::connection::Connection;
use crate::hub::{self, Policy};
use crate::limits;
use crate::observe::stats::{CloseReason, RefuseReason};
use crate::service::ServiceKind;
use crate::timer::DeadlineList;

/// How long a refused admin client may take to send its first bytes, which
/// say whether it speaks HTTP (a `503`) or text (the `ERR` line); and then
/// how long it may take to close after the answer. An HTTP client sends its
/// request with its first packet; one second is many round trips, and a
/// client that sends nothing gets the `ERR` line then.
pub const REFUSAL_WAIT: Duration = Duration::from_secs(1);

/// How long accepting pauses after the process or system ran out of file
/// descriptors or memory: long enough not to spin on a failing `accept`,
/// short enough to take new clients soon after others leave.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connections one listener accepts in one turn at most (Redis takes 1,000
/// per call too). A burst of thousands of connects would otherwise hold up
/// every open connection while they are all accepted and greeted; the rest
/// wait in the backlog for the next turn.
pub const MAX_ACCEPTS_PER_TURN: usize = 1000;

/// An admin client refused because the reserve is full, held (outside the
/// connection table, with a descriptor of its own) until its first bytes
/// say which protocol to refuse it in, and then until it closes, for at
/// most [`REFUSAL_WAIT`] each.
pub(super) struct Refused {
    pub(super) socket: TcpStream,
    pub(super) peer: SocketAddr,
    /// The first bytes, up to [`FIRST_BYTES`]: enough to tell an HTTP
    /// method ([`hub::refusal_ready`]).
    pub(super) first: Vec<u8>,
    /// The answer was written and our side shut: input is read and dropped
    /// until the client closes, so the close does not reset the answer.
    pub(super) answered: bool,
}

/// The longest HTTP method and its space: what deciding the protocol of a
/// refused admin client takes.
const FIRST_BYTES: usize = 8;

/// What the spare descriptor is opened on.
pub(super) const SPARE: &str = "/dev/null";

/// The spare descriptor (see `Server::spare`).
pub(super) fn open_spare() -> io::Result<std::fs::File> {
    std::fs::File::open(SPARE)
}

/// Whether accept failed for want of a descriptor, the process's (EMFILE)
/// or the system's (ENFILE).
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Tells a client it is refused, then closes. What it already sent is read
/// and dropped first, so the close is not a reset that destroys the line.
fn refuse(socket: &mut TcpStream, line: &str) {
    refuse_with(socket, |_| format!("{line}\n").into_bytes());
}

/// As [`refuse`], with the answer made from the client's first bytes (up
/// to [`FIRST_BYTES`] of what has arrived).
fn refuse_with(socket: &mut TcpStream, answer: impl FnOnce(&[u8]) -> Vec<u8>) {
    let mut sink = [0u8; 4096];
    let mut first = Vec::new();
    for _ in 0..16 {
        match socket.read(&mut sink) {
            Ok(n) if n > 0 => {
                let room = FIRST_BYTES.saturating_sub(first.len());
                first.extend_from_slice(&sink[..n.min(room)]);
            }
            _ => break,
        }
    }
    // A fresh socket's send queue is empty: this write does not block.
    let _ = socket.write_all(&answer(&first));
    let _ = socket.shutdown(Shutdown::Write);
}

impl Server {
    /// Accepts the pending connections on listener `index`, at most
    /// [`MAX_ACCEPTS_PER_TURN`] (then it is queued to go on next turn),
    /// unless accepting is paused.
    pub(super) fn accept(&mut self, index: usize, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.socket.accept() {
                Ok((socket, peer)) => {
                    let (kind, policy) = (listener.kind, listener.policy);
                    self.admit(socket, peer, kind, policy, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // The client gave up between its SYN and our accept, or a
                // signal interrupted us: nothing to do for that one.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    let e = if out_of_descriptors(&e) && self.spare.is_some() {
                        match self.refuse_with_spare(index, now) {
                            Ok(true) => continue,
                            // The backlog is empty.
                            Ok(false) => return,
                            Err(again) => again,
                        }
                    } else {
                        e
                    };
                    self.pause_accepting(index, &e, now);
                    return;
                }
            }
        }
        if !self.accept_again.contains(&index) {
            self.accept_again.push(index);
        }
    }

    /// Out of descriptors: gives up the spare, accepts one newcomer on
    /// listener `index`, tells it `ERR server full` and closes it, then
    /// takes the spare back. `Ok(false)` when nobody was waiting; an error
    /// when the accept failed even so, or the spare could not be taken back
    /// (accepting then pauses, as for any other failure).
    pub(super) fn refuse_with_spare(&mut self, index: usize, now: Instant) -> io::Result<bool> {
        let Some(listener) = self.listeners.get(index) else {
            return Ok(false);
        };
        let (kind, addr) = (listener.kind, listener.addr);
        // Closed here: its number is the one the accept below gets.
        self.spare = None;
        let accepted = listener.socket.accept();
        let refused = match accepted {
            Ok((mut socket, peer)) => {
                self.stats.refused(kind, RefuseReason::Full);
                debug!("{peer} ({kind}): refused: out of descriptors");
                refuse(&mut socket, &limits::Refusal::Full.to_string());
                // Dropped here, before the spare is reopened.
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            // Gone before the accept: nobody to tell.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(true)
            }
            Err(e) => Err(e),
        };
        self.spare = open_spare().ok();
        if refused.as_ref().is_ok_and(|&r| r)
            && self
                .last_accept_warning
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_accept_warning = Some(now);
            warn!(
                "out of descriptors: refusing newcomers on {addr} with 'ERR server full' ({} connections open)",
                self.conns.len()
            );
        }
        if self.spare.is_none() {
            return Err(io::Error::other(format!(
                "out of descriptors, and {SPARE} cannot be reopened as the spare"
            )));
        }
        refused
    }

    /// After accepting on listener `index` failed with `e` (out of memory,
    /// out of descriptors without a spare, or anything unexpected):
    /// retrying at once would spin, so accepting pauses for
    /// [`ACCEPT_BACKOFF`]; the connections already open go on. Clients left
    /// in the backlog raise no new edge, so the back-off's end accepts by
    /// itself (see `expire`).
    pub(super) fn pause_accepting(&mut self, index: usize, e: &io::Error, now: Instant) {
        self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
        if self
            .last_accept_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_accept_warning = Some(now);
            let addr = self.listeners.get(index).map(|l| l.addr);
            warn!(
                "accept on {} failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?} ({} connections open)",
                addr.map_or("?".to_string(), |a| a.to_string()),
                self.conns.len()
            );
        }
    }

    pub(super) fn admit(
        &mut self,
        mut socket: TcpStream,
        peer: SocketAddr,
        kind: ServiceKind,
        policy: Policy,
        now: Instant,
    ) {
        let mut admitted = if policy.operator {
            self.admission.admit_operator()
        } else {
            self.admission.admit(peer.ip())
        };
        if admitted == Err(limits::Refusal::Full) && self.evict_idlest(peer.ip(), now) {
            admitted = self.admission.admit(peer.ip());
        }
        if let Err(refusal) = admitted {
            let reason = match refusal {
                limits::Refusal::Full | limits::Refusal::OperatorsFull => RefuseReason::Full,
                limits::Refusal::PerIp(_) => RefuseReason::PerIp,
            };
            self.stats.refused(kind, reason);
            warn!("{peer} ({kind}): refused: {refusal}");
            if refusal == limits::Refusal::OperatorsFull {
                self.refuse_operator(socket, peer, now);
            } else {
                refuse(&mut socket, &refusal.to_string());
            }
            return;
        }
        if self.config.nodelay
            && let Err(e) = socket.set_nodelay(true)
        {
            debug!("{peer}: cannot set TCP_NODELAY: {e}");
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1) & GENERATION_MASK;
        let registered = if key > KEY_MASK.min(crate::timer::MAX_KEY) {
            // Unreachable in practice (it needs 2^32 open connections), but
            // a token collision would be silent, so refuse loudly instead.
            Err(io::Error::other("connection table full"))
        } else {
            self.poll.registry().register(
                &mut socket,
                conn_token(key, generation),
                Interest::READABLE | Interest::WRITABLE,
            )
        };
        if let Err(e) = registered {
            warn!("{peer}: cannot register connection: {e}");
            self.release_admission(kind, peer);
            return;
        }
        debug!("conn {key} {peer} ({kind}): opened");
        let conn = entry.insert(Connection::new(socket, peer, kind, generation, now));
        let awaiting = conn.awaiting_request();
        // The accept is its first activity.
        self.track_open(key, kind, true, awaiting, false, now);
        self.stats.opened(kind);
        self.hub.handle_open(key, peer, policy);
    }

    /// Gives back the admission slot of a connection of `kind` from `peer`.
    pub(super) fn release_admission(&mut self, kind: ServiceKind, peer: SocketAddr) {
        if Policy::of(kind).operator {
            self.admission.release_operator();
        } else {
            self.admission.release(peer.ip());
        }
    }

    /// At `--max-conns`: ends the connection idle the longest, admin aside,
    /// if it has been idle for `--evict-idle-after`, as an idle close
    /// (answered, flushed, closed), and gives its admission slot to the
    /// newcomer from `ip` at once; the evicted one finishes outside the cap,
    /// within its phase deadlines. Only for a newcomer the per-IP cap lets
    /// in. True if one was evicted.
    pub(super) fn evict_idlest(&mut self, ip: IpAddr, now: Instant) -> bool {
        let (Some(activity), Some(after)) = (&self.activity, self.config.evict_idle_after) else {
            return false;
        };
        if !self.admission.per_ip_allows(ip) {
            return false;
        }
        // Admin connections (at most the reserve) are in the activity order
        // too but hold no slot of the cap: passed over, a bounded walk.
        let idlest = activity
            .oldest()
            .take(limits::OPERATOR_RESERVE + 1)
            .find(|(key, _)| {
                self.conns
                    .get(*key)
                    .is_some_and(|c| !Policy::of(c.kind).operator)
            });
        let Some((key, last_active)) = idlest.filter(|(_, last)| *last + after <= now) else {
            return false;
        };
        let Some(conn) = self.conns.get(key) else {
            return false;
        };
        warn!(
            "conn {key} {} ({}): idle for {:?} at --max-conns: evicted to admit a newcomer",
            conn.peer(),
            conn.kind,
            now.saturating_duration_since(last_active)
        );
        self.admission.release(conn.peer().ip());
        self.evicted.insert(key);
        self.finish(key, CloseReason::Evicted, now);
        true
    }

    /// Refuses admin client `socket` (the reserve is full) in its own
    /// protocol: held in [`Server::refused`] until its first bytes come, or
    /// at once, from whatever has arrived, when that is full too.
    pub(super) fn refuse_operator(
        &mut self,
        mut socket: TcpStream,
        peer: SocketAddr,
        now: Instant,
    ) {
        let retry_after = self.retry_after(now);
        if self.refused.len() >= limits::OPERATOR_REFUSALS {
            refuse_with(&mut socket, |first| hub::refusal_answer(first, retry_after));
            return;
        }
        let key = self.refused.vacant_key();
        if let Err(e) = self.poll.registry().register(
            &mut socket,
            Token(REFUSED_TOKEN - key),
            Interest::READABLE,
        ) {
            debug!("{peer}: cannot register a refused admin client: {e}");
            refuse_with(&mut socket, |first| hub::refusal_answer(first, retry_after));
            return;
        }
        self.refused.insert(Refused {
            socket,
            peer,
            first: Vec::new(),
            answered: false,
        });
        self.refused_deadlines.touch(key, now);
        // Its first bytes may be here already.
        self.serve_refused(key, now, false);
    }

    /// Reads what refused admin client `key` sent; answers it once its
    /// first bytes tell its protocol, it ended, or its wait is over
    /// (`expired`); closes it once it closes too, or its wait after the
    /// answer is over.
    pub(super) fn serve_refused(&mut self, key: usize, now: Instant, expired: bool) {
        let retry_after = self.retry_after(now);
        let Some(r) = self.refused.get_mut(key) else {
            return;
        };
        let was_answered = r.answered;
        let mut sink = [0u8; 4096];
        let mut ended = false;
        // Bounded: a client that floods is cut off by its deadline, not
        // served for ever in one turn.
        for _ in 0..16 {
            match r.socket.read(&mut sink) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => {
                    let room = FIRST_BYTES.saturating_sub(r.first.len());
                    r.first.extend_from_slice(&sink[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // Reset by the client: nobody to answer.
                    r.answered = true;
                    ended = true;
                    break;
                }
            }
        }
        let known = hub::refusal_ready(&r.first);
        if !r.answered && (known || ended || expired) {
            // A fresh socket's send queue is empty: this short write does
            // not block.
            let _ = r
                .socket
                .write_all(&hub::refusal_answer(&r.first, retry_after));
            let _ = r.socket.shutdown(Shutdown::Write);
            r.answered = true;
            debug!("{}: refused admin client answered", r.peer);
            self.refused_deadlines.touch(key, now);
        }
        if ended || (expired && was_answered) {
            // Closing the only descriptor takes it out of the epoll set.
            self.refused.remove(key);
            self.refused_deadlines.remove(key);
        }
    }

    /// The `Retry-After` a refused admin client is told, in seconds: until
    /// the admin connection idle the longest reaches
    /// `--admin-idle-timeout` and frees its slot, or 1 when none is idle
    /// (commands take moments).
    pub(super) fn retry_after(&self, now: Instant) -> u64 {
        self.operator_idle
            .as_ref()
            .and_then(DeadlineList::next_deadline)
            .map_or(1, |at| {
                at.saturating_duration_since(now).as_secs_f64().ceil() as u64
            })
            .max(1)
    }
}
