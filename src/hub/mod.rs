//! The hub: the work between connections. The chat room (fan-out of
//! shared lines, join and leave announcements, flow control) and the admin
//! views over the server (`stats`, `clients`, `watch`, `metrics`) live
//! here, so the reactor names no service (mini-redis keeps pub/sub in
//! `db.rs` for the same reason).
//!
//! Shaped like quinn-proto's `Endpoint`: the reactor feeds it inputs
//! (`handle_*`: a connection opened or closed, an effect a service asked
//! for, what a member's queue costs after a turn, a deadline passed) and
//! carries out its outputs ([`Hub::poll_command`]: queue this connection,
//! share this chunk with it, dismiss it, deliver this answer to it), and
//! asks [`Hub::poll_timeout`] when it wants to be called again. Time is
//! passed in; the hub touches no socket and reads no clock. What it reads
//! of the server (connection rows, counters, pools) it reads through the
//! [`ServerView`] the reactor implements, read-only.
//!
//! Budgets: work for all connections is bounded per turn like work for
//! one. `clients` rows are rendered at most [`ROWS_PER_STEP`] per query
//! step and [`ROWS_PER_TURN`] per turn of the loop, across every admin
//! connection; chat fan-out is one shared chunk per line and member (a
//! reference, not a copy), paced by the room's flow control, and
//! announcements go out at most once per [`room::ANNOUNCE_EVERY`].
//!
//! Which listener's connections belong to the room, and which are
//! operators' (the admin reserve), is a [`Policy`] the listener carries
//! (nginx's listener carries its handler): the reactor asks the policy,
//! never the service's name.

pub mod room;
pub mod view;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use log::warn;

use crate::buffer::Chunk;
use crate::config::ServerConfig;
use crate::service::admin::Query;
use crate::service::{Effect, ServiceKind};
use room::{ChatLimits, ChatRoom, Judgement};
pub use view::{ROWS_PER_STEP, ROWS_PER_TURN, ServerView, refusal_answer, refusal_ready};

/// What a listener's connections are to the server beyond their service:
/// chosen once per listener, from its service, by [`Policy::of`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Its connections are members of the hub's room from their accept on:
    /// they receive each other's lines, their closes are announced, their
    /// queues are judged after each turn, and at shutdown each gets a turn
    /// to send what it read before conversations end.
    pub room: bool,
    /// Operators' connections: admitted against the admin reserve, outside
    /// `--max-conns` (so a full server can still be looked at); refused, when
    /// the reserve is full, in their own protocol; never evicted; idle
    /// after `--admin-idle-timeout`.
    pub operator: bool,
}

impl Policy {
    /// The policy of a listener of `kind`: the one place that says which
    /// services share a room and which are operators'.
    pub const fn of(kind: ServiceKind) -> Policy {
        match kind {
            ServiceKind::Chat => Policy {
                room: true,
                operator: false,
            },
            ServiceKind::Admin => Policy {
                room: false,
                operator: true,
            },
            ServiceKind::Echo | ServiceKind::Ack | ServiceKind::Files => Policy {
                room: false,
                operator: false,
            },
        }
    }
}

/// What the hub asks the reactor to do, in order.
#[derive(Debug)]
pub enum Command {
    /// Give connection `key` a turn soon, without waiting for an event.
    Queue(usize),
    /// Queue `chunk` from byte `from` on for connection `key`, if its
    /// conversation is still open, and give it a turn soon; then report
    /// what its shared queue costs with [`Hub::handle_queued`]. With
    /// `unless_over: Some(limit)`, skipped when the queue's cost plus the
    /// rest of the chunk would pass `limit` (news never congests).
    Share {
        key: usize,
        chunk: Chunk,
        from: usize,
        unless_over: Option<usize>,
    },
    /// `chunk` is queued on every receiver: keep its storage to refill once
    /// they have all sent it.
    Recycle(Chunk),
    /// Connection `key` broadcast a line: if the server is ending its
    /// conversation, that is progress, which puts its phase deadline off
    /// as bytes sent do.
    Progress(usize),
    /// Connection `key` cannot keep up (`why`): it gets the rest of the
    /// line it is reading, `farewell`, and the server's close. Then report
    /// it with [`Hub::handle_dismissed`].
    Dismiss {
        key: usize,
        why: String,
        farewell: &'static [u8],
    },
    /// Hand `answer` to connection `key`'s service, with the query for the
    /// rest of it, and give it a turn to send it.
    Deliver {
        key: usize,
        answer: Vec<u8>,
        next: Option<Query>,
    },
}

/// The line a member dismissed as too slow is sent last.
const FAREWELL: &[u8] = b"* disconnected: too slow\n";

/// The work between connections; see the module docs.
#[derive(Debug)]
pub struct Hub {
    room: ChatRoom,
    /// What the reactor is to do next, oldest first. Drained after every
    /// input; its storage is kept, so a broadcast allocates nothing here.
    commands: VecDeque<Command>,
    /// `clients` rows that may still be rendered in this turn of the loop
    /// (reset to [`ROWS_PER_TURN`] each turn).
    rows_left: usize,
}

impl Hub {
    /// The hub of a server configured as `config` (its room's limits).
    pub fn new(config: &ServerConfig) -> Hub {
        Hub::with_room(config.chat)
    }

    fn with_room(limits: ChatLimits) -> Hub {
        Hub {
            room: ChatRoom::new(limits),
            commands: VecDeque::new(),
            rows_left: ROWS_PER_TURN,
        }
    }

    /// The next thing for the reactor to do, if any.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When the hub wants [`Hub::handle_timeout`] called: a member's
    /// soft-limit clock, the end of a congestion grace, the next batch of
    /// news.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.room.next_deadline()
    }

    /// Bytes a room member may broadcast in its turn (see [`ChatRoom::room`]).
    pub fn broadcast_room(&self) -> usize {
        self.room.room()
    }

    /// A new turn of the loop: the per-turn budgets start again.
    pub fn handle_turn(&mut self) {
        self.rows_left = ROWS_PER_TURN;
    }

    /// Connection `key` from `peer` was accepted on a listener with
    /// `policy`.
    pub fn handle_open(&mut self, key: usize, peer: SocketAddr, policy: Policy) {
        if policy.room {
            self.room.join(key, peer);
        }
    }

    /// Connection `key` from `peer` is closed; a member's leave is news.
    pub fn handle_close(&mut self, key: usize, peer: SocketAddr) {
        if self.room.leave(key, peer, false) {
            self.wake_senders();
        }
    }

    /// Member `key` was dismissed (see [`Command::Dismiss`]): it leaves the
    /// room, as too slow.
    pub fn handle_dismissed(&mut self, key: usize, peer: SocketAddr) {
        if self.room.leave(key, peer, true) {
            self.wake_senders();
        }
    }

    /// Room member `key`'s turn tried to write to it: its shared queue now
    /// costs `cost`, and `wrote` bytes went out. Judged now, never before the
    /// server has tried to write.
    pub fn handle_sent(&mut self, key: usize, cost: usize, wrote: usize, now: Instant) {
        if !self.room.members.contains(&key) {
            return;
        }
        let (judgement, freed) = self.room.judge(key, cost, wrote, now);
        if judgement == Judgement::TooSlow {
            self.dismiss(key, "its queue passed the hard limit".to_string());
        } else if freed {
            self.wake_senders();
        }
    }

    /// A chunk was queued on connection `key` (a [`Command::Share`]): its
    /// shared queue costs `cost` now. One that goes over the soft limit
    /// congests the room at once.
    pub fn handle_queued(&mut self, key: usize, cost: usize, now: Instant) {
        if cost > self.room.limits().soft {
            self.room.note_queued(key, cost, now);
        }
    }

    /// Carries out what connection `key`'s service asked for, reading the
    /// server through `view` where the answer is about it.
    pub fn handle_effect(
        &mut self,
        key: usize,
        effect: Effect,
        view: &dyn ServerView,
        now: Instant,
    ) {
        match effect {
            Effect::Broadcast(chunk) => {
                // A sender's join goes out before its first line, so every
                // member sees it join before it speaks.
                if !self.room.is_announced(key) {
                    self.announce(now, true);
                }
                self.broadcast(key, &chunk);
                self.commands.push_back(Command::Recycle(chunk));
                self.commands.push_back(Command::Progress(key));
            }
            Effect::WaitForRoom => {
                self.room.wait(key);
                // Woken at once if the room freed up in this very turn.
                self.wake_senders();
            }
            Effect::Query(query) => {
                let (answer, next) = view::answer(view, query, &mut self.rows_left, now);
                self.commands.push_back(Command::Deliver {
                    key,
                    answer: answer.into_bytes(),
                    next,
                });
            }
        }
    }

    /// Deadlines that passed: members no longer congesting the room, and
    /// members over the soft limit for too long (dismissed).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.room.expire_congestion(now) {
            self.wake_senders();
        }
        while let Some(key) = self.room.pop_expired(now) {
            let secs = self.room.limits().soft_for.as_secs_f64();
            self.dismiss(key, format!("over the soft limit for {secs} s"));
        }
    }

    /// The end of a pass over the ready connections: the joins and leaves
    /// so far go out as one chunk to every member, when a batch is due.
    pub fn handle_pass_end(&mut self, now: Instant) {
        self.announce(now, false);
    }

    /// The server is shutting down: everyone is leaving, so no
    /// announcements (O(n^2) lines nobody reads) and no flow control
    /// (nothing more is read).
    pub fn handle_shutdown(&mut self) {
        self.room.shut();
    }

    /// Shares `chunk` with every member but `from`, each queued for a write
    /// after this poll round (one vectored write per receiver, with
    /// whatever else arrives in the round). Members are judged after the
    /// server has tried to write to them, not here.
    fn broadcast(&mut self, from: usize, chunk: &Chunk) {
        for &key in &self.room.members {
            if key == from {
                continue;
            }
            self.commands.push_back(Command::Share {
                key,
                chunk: chunk.clone(),
                from: 0,
                unless_over: None,
            });
        }
    }

    /// Queues the joins and leaves not yet announced, as one shared chunk,
    /// to every member that has room for it under its soft limit (news is
    /// not worth congesting the room for); a newcomer gets the part after
    /// its own join. Only when the room says a batch is due (see
    /// [`ChatRoom::take_announcements`]), or at once if `force`.
    fn announce(&mut self, now: Instant, force: bool) {
        let Some(batch) = self.room.take_announcements(now, force) else {
            return;
        };
        let len = batch.lines.len();
        for &key in &self.room.members {
            let from = batch.from(key);
            if from >= len {
                continue;
            }
            self.commands.push_back(Command::Share {
                key,
                chunk: batch.lines.clone(),
                from,
                unless_over: Some(self.room.limits().soft),
            });
        }
    }

    /// Drives again the senders whose lines waited for room, once no member
    /// is over the soft limit.
    fn wake_senders(&mut self) {
        for key in self.room.wake() {
            self.commands.push_back(Command::Queue(key));
        }
    }

    fn dismiss(&mut self, key: usize, why: String) {
        self.commands.push_back(Command::Dismiss {
            key,
            why,
            farewell: FAREWELL,
        });
    }
}

/// Logs a dismissal (the reactor's half of [`Command::Dismiss`]).
pub fn log_dismissal(peer: SocketAddr, why: &str, owed: usize) {
    warn!("chat {peer}: too slow ({why}), {owed} bytes queued; disconnecting");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::observe::clients::ClientRow;
    use crate::observe::metrics::Snapshot;
    use crate::observe::stats::{ServiceStats, Stats};
    use crate::service::admin::Cursor;

    const ROOM: Policy = Policy::of(ServiceKind::Chat);

    fn hub() -> (Hub, Instant) {
        let limits = ChatLimits {
            soft: 100,
            soft_for: Duration::from_secs(5),
            hard: 1000,
        };
        (Hub::with_room(limits), Instant::now())
    }

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn drain(hub: &mut Hub) -> Vec<Command> {
        std::iter::from_fn(|| hub.poll_command()).collect()
    }

    /// A server of `conns` connections, each with a row.
    struct Server {
        stats: Stats,
        conns: usize,
    }

    impl ServerView for Server {
        fn stats(&self) -> &Stats {
            &self.stats
        }
        fn running_services(&self) -> Vec<(&'static str, &ServiceStats)> {
            vec![("echo", &self.stats.services[0])]
        }
        fn uptime(&self, _: Instant) -> Duration {
            Duration::from_secs(1)
        }
        fn max_conns(&self) -> Option<usize> {
            None
        }
        fn key_end(&self) -> usize {
            self.conns
        }
        fn row(&self, key: usize, _: Instant) -> Option<ClientRow> {
            Some(ClientRow {
                id: key,
                peer: peer(5000),
                service: "echo",
                age: Duration::ZERO,
                idle: Duration::ZERO,
                recv_used: 0,
                recv_capacity: 0,
                send_used: 0,
                send_capacity: 0,
                kernel_recv_queue: None,
                kernel_send_queue: None,
                kernel_unsent: None,
                so_rcvbuf: None,
                so_sndbuf: None,
                state: "reading",
                bytes_in: 0,
                bytes_out: 0,
                write_blocked: false,
                tcp: None,
                snapshots_skipped: None,
            })
        }
        fn metrics(&self) -> Snapshot<'_> {
            unreachable!("not asked in these tests")
        }
    }

    #[test]
    fn only_a_room_listener_s_connections_join_and_only_operators_are_reserved() {
        let (room, operators) = (
            Policy::of(ServiceKind::Chat),
            Policy::of(ServiceKind::Admin),
        );
        assert!(room.room && !room.operator);
        assert!(operators.operator && !operators.room);
        for kind in [ServiceKind::Echo, ServiceKind::Ack, ServiceKind::Files] {
            assert_eq!(Policy::of(kind), Policy::default());
        }
        let (mut hub, now) = hub();
        hub.handle_open(0, peer(1), Policy::default());
        hub.handle_pass_end(now);
        assert!(drain(&mut hub).is_empty(), "an echo connection is no news");
    }

    #[test]
    fn from_a_new_sender_its_join_goes_out_before_its_line_and_not_to_itself() {
        let (mut hub, now) = hub();
        hub.handle_open(0, peer(1), ROOM);
        hub.handle_open(1, peer(2), ROOM);
        let view = Server {
            stats: Stats::default(),
            conns: 0,
        };
        let line = Chunk::from(&b"hi\n"[..]);
        hub.handle_effect(0, Effect::Broadcast(line), &view, now);
        let commands = drain(&mut hub);
        let mut news = 0;
        let mut line_to = Vec::new();
        for c in &commands {
            match c {
                Command::Share {
                    key,
                    chunk,
                    from,
                    unless_over,
                } if unless_over.is_some() => {
                    news += 1;
                    // Each newcomer gets the news after its own join.
                    let rest = String::from_utf8_lossy(&chunk[*from..]).to_string();
                    let own = if *key == 0 { "1 joined" } else { "2 joined" };
                    assert!(!rest.contains(own), "{key} sees itself join: {rest}");
                    assert!(line_to.is_empty(), "the news goes before the line");
                }
                Command::Share { key, chunk, .. } => {
                    assert_eq!(&chunk[..], b"hi\n");
                    line_to.push(*key);
                }
                _ => {}
            }
        }
        assert_eq!(news, 1, "only member 0 has news after its own join");
        assert_eq!(line_to, [1], "the sender is not sent its own line");
        assert!(matches!(
            commands[commands.len() - 2..],
            [Command::Recycle(_), Command::Progress(0)]
        ));
    }

    #[test]
    fn a_member_over_the_hard_limit_is_dismissed_and_its_leave_says_too_slow() {
        let (mut hub, now) = hub();
        hub.handle_open(0, peer(1), ROOM);
        hub.handle_open(1, peer(2), ROOM);
        hub.handle_pass_end(now);
        drain(&mut hub);
        hub.handle_sent(0, 1001, 0, now);
        let commands = drain(&mut hub);
        assert!(
            matches!(commands[..], [Command::Dismiss { key: 0, .. }]),
            "{commands:?}"
        );
        hub.handle_dismissed(0, peer(1));
        hub.handle_pass_end(now + room::ANNOUNCE_EVERY);
        let news: Vec<String> = drain(&mut hub)
            .into_iter()
            .filter_map(|c| match c {
                Command::Share { key: 1, chunk, .. } => {
                    Some(String::from_utf8_lossy(&chunk).to_string())
                }
                _ => None,
            })
            .collect();
        assert_eq!(news, ["* 127.0.0.1:1 left (too slow)\n"]);
    }

    #[test]
    fn clients_rows_are_budgeted_per_turn_across_every_query() {
        let (mut hub, now) = hub();
        let view = Server {
            stats: Stats::default(),
            conns: 10 * ROWS_PER_TURN,
        };
        let start = Cursor {
            next_key: 0,
            rows: 0,
            started: false,
        };
        let rows_of = |hub: &mut Hub, key| {
            let query = Query::Clients {
                json: true,
                cursor: start,
            };
            hub.handle_effect(key, Effect::Query(query), &view, now);
            match drain(hub).pop() {
                Some(Command::Deliver { answer, next, .. }) => {
                    assert!(next.is_some(), "the rest is asked for");
                    String::from_utf8(answer)
                        .unwrap()
                        .matches("\"id\":")
                        .count()
                }
                other => panic!("{other:?}"),
            }
        };
        let steps: Vec<usize> = (0..3).map(|key| rows_of(&mut hub, key)).collect();
        assert_eq!(steps, [ROWS_PER_STEP, ROWS_PER_TURN - ROWS_PER_STEP, 0]);
        hub.handle_turn();
        assert_eq!(
            rows_of(&mut hub, 3),
            ROWS_PER_STEP,
            "a new turn, a new budget"
        );
    }
}
