//! What `top` knows: the admin service's `watch` snapshots parsed, the rates
//! between two of them, the sort, the service filter, the selection, and a
//! minute of history per connection.
//!
//! Pure: no I/O and no clock. Time is the server's own `uptime_secs`, read
//! from each snapshot, so rates are over the interval the server measured
//! (a snapshot the server skipped widens the interval instead of doubling a
//! rate). Drawing is elsewhere (`text` for plain text, `screen` for the
//! terminal); both read what this module computes.
//!
//! The parts: `row.rs` (a connection's key, layers and bar) and `history.rs`
//! (its minute of samples); this file holds the session state, [`Top`].

use std::collections::{BTreeSet, HashMap};

pub use crate::client::snapshot::{Causes, Counters, Row, Snapshot, Stats, Tcp};

mod history;
mod row;

pub use history::{HISTORY_CONNECTIONS, HISTORY_SAMPLES, HISTORY_SECS, History};
pub use row::{Cell, Key, Layer, Layers, bar, cells};

/// Bytes per second in and out over the last interval; `None` before a
/// second snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rate {
    pub bytes_in: Option<f64>,
    pub bytes_out: Option<f64>,
}

impl Rate {
    pub fn sum(&self) -> f64 {
        self.bytes_in.unwrap_or(0.0) + self.bytes_out.unwrap_or(0.0)
    }
}

/// Rates of the whole server over the last interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TotalRates {
    pub accepted: f64,
    pub bytes_in: f64,
    pub bytes_out: f64,
    pub closed: f64,
    /// The interval they are over, in seconds.
    pub over_secs: f64,
}

/// What the rows are sorted by, largest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Bytes owed to the peer (send buffer and kernel send queue).
    Owed,
    /// Bytes per second, in and out together.
    Rate,
    /// Oldest first.
    Age,
    /// Longest round-trip time first; none known last.
    Rtt,
}

impl Sort {
    pub fn name(self) -> &'static str {
        match self {
            Sort::Owed => "owed",
            Sort::Rate => "rate",
            Sort::Age => "age",
            Sort::Rtt => "rtt",
        }
    }
}

/// A key, as the terminal hands it over (the terminal's own key type stays
/// in `screen`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Sort(Sort),
    CycleFilter,
    TogglePause,
    Up,
    Down,
    /// Up by a page of this many rows (the screen knows how many show).
    PageUp(usize),
    /// Down by a page of this many rows.
    PageDown(usize),
    /// The first row.
    Home,
    /// The last row.
    End,
    Open,
    Close,
    Quit,
}
/// The whole state of a `top` session.
#[derive(Debug)]
pub struct Top {
    /// The latest snapshot applied.
    current: Option<Snapshot>,
    /// Uptime and totals of the snapshot before it, for the header's rates.
    previous_total: Option<(f64, Counters)>,
    /// Per connection of `current`: its rate. Only connections in
    /// `current` are here.
    rates: HashMap<Key, Rate>,
    /// Per connection of `current` (at most [`HISTORY_CONNECTIONS`]).
    history: HashMap<Key, History>,
    pub sort: Sort,
    /// Only this service's rows are shown.
    pub filter: Option<String>,
    /// The selected connection. Once a row is shown it is always one of
    /// the rows shown (see [`Top::settle`]), so the selection follows its
    /// connection when the rows re-sort, rather than staying on a screen
    /// row.
    selected: Option<Key>,
    /// Where the selected row was shown last: when its connection goes,
    /// the row that takes its place is selected, not the top one.
    selected_at: usize,
    pub detail: bool,
    pub paused: bool,
    /// Snapshots that arrived while paused and were not applied.
    pub skipped_while_paused: u64,
    /// The peer address of this program's own admin connection, as the
    /// server sees it, to mark that row.
    pub own_peer: Option<String>,
}

/// A row as shown: the connection, its rate, and whether it is ours.
#[derive(Clone, Debug)]
pub struct Shown<'a> {
    pub row: &'a Row,
    pub rate: Rate,
    pub own: bool,
}

impl Default for Top {
    fn default() -> Top {
        Top::new()
    }
}

impl Top {
    pub fn new() -> Top {
        Top {
            current: None,
            previous_total: None,
            rates: HashMap::new(),
            history: HashMap::new(),
            sort: Sort::Owed,
            filter: None,
            selected: None,
            selected_at: 0,
            detail: false,
            paused: false,
            skipped_while_paused: 0,
            own_peer: None,
        }
    }

    /// Takes in a snapshot (unless paused): rates against the last one,
    /// a history sample per connection, and connections that have gone
    /// dropped from both.
    pub fn apply(&mut self, snapshot: Snapshot) {
        if self.paused {
            self.skipped_while_paused += 1;
            return;
        }
        let uptime = snapshot.stats.uptime_secs;
        let previous = self.current.take();
        let dt = previous
            .as_ref()
            .map(|p| uptime - p.stats.uptime_secs)
            .filter(|dt| *dt > 0.0);
        let before: HashMap<Key, (u64, u64)> = previous
            .iter()
            .flat_map(|p| &p.clients)
            .map(|r| (r.key(), (r.bytes_in, r.bytes_out)))
            .collect();
        let mut rates = HashMap::with_capacity(snapshot.clients.len());
        for row in &snapshot.clients {
            let key = row.key();
            let rate = match dt {
                None => Rate::default(),
                Some(dt) => {
                    // A connection new since the last snapshot moved all
                    // its bytes within the interval.
                    let (was_in, was_out) = before.get(&key).copied().unwrap_or((0, 0));
                    let per_s = |now: u64, was: u64| Some(now.saturating_sub(was) as f64 / dt);
                    Rate {
                        bytes_in: per_s(row.bytes_in, was_in),
                        bytes_out: per_s(row.bytes_out, was_out),
                    }
                }
            };
            rates.insert(key, rate);
        }
        self.rates = rates;
        self.history.retain(|key, _| self.rates.contains_key(key));
        for row in &snapshot.clients {
            let key = row.key();
            if !self.history.contains_key(&key) && self.history.len() >= HISTORY_CONNECTIONS {
                continue;
            }
            self.history
                .entry(key)
                .or_default()
                .push(uptime, row.layers().used);
        }
        self.previous_total = previous.map(|p| (p.stats.uptime_secs, p.stats.total));
        self.current = Some(snapshot);
        self.settle();
    }

    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.current.as_ref()
    }

    /// The header's rates; `None` before a second snapshot.
    pub fn total_rates(&self) -> Option<TotalRates> {
        let now = self.current.as_ref()?;
        let (then_uptime, then) = self.previous_total.as_ref()?;
        let dt = now.stats.uptime_secs - then_uptime;
        if dt <= 0.0 {
            return None;
        }
        let total = &now.stats.total;
        let per_s = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
        Some(TotalRates {
            accepted: per_s(total.accepted, then.accepted),
            bytes_in: per_s(total.bytes_in, then.bytes_in),
            bytes_out: per_s(total.bytes_out, then.bytes_out),
            closed: per_s(total.closed.total(), then.closed.total()),
            over_secs: dt,
        })
    }

    pub fn history(&self, key: &Key) -> Option<&History> {
        self.history.get(key)
    }

    /// How many connections have a history (at most
    /// [`HISTORY_CONNECTIONS`]).
    pub fn tracked(&self) -> usize {
        self.history.len()
    }

    /// The rows shown: filtered, then sorted (largest first, ties by id).
    pub fn rows(&self) -> Vec<Shown<'_>> {
        let Some(snapshot) = &self.current else {
            return Vec::new();
        };
        let mut rows: Vec<Shown<'_>> = snapshot
            .clients
            .iter()
            .filter(|r| self.filter.as_deref().is_none_or(|f| r.service == f))
            .map(|row| Shown {
                row,
                rate: self.rates.get(&row.key()).copied().unwrap_or_default(),
                own: self.own_peer.as_deref() == Some(row.peer.as_str()) && row.service == "admin",
            })
            .collect();
        let sort = self.sort;
        rows.sort_by(|a, b| {
            let order = match sort {
                Sort::Owed => b
                    .row
                    .owed()
                    .cmp(&a.row.owed())
                    .then(b.row.layers().total().cmp(&a.row.layers().total())),
                Sort::Rate => b.rate.sum().total_cmp(&a.rate.sum()),
                Sort::Age => b.row.age_secs.total_cmp(&a.row.age_secs),
                // Some(x) > None, so unknown round trips sort last.
                Sort::Rtt => b.row.rtt_us().cmp(&a.row.rtt_us()),
            };
            order.then(a.row.id.cmp(&b.row.id))
        });
        rows
    }

    /// The services with a connection in the current snapshot, in name
    /// order, that the filter cycles through. A service the server runs
    /// with nobody connected is left out: filtering by it would show an
    /// empty table.
    pub fn services(&self) -> Vec<String> {
        let Some(s) = &self.current else {
            return Vec::new();
        };
        let names: BTreeSet<&str> = s.clients.iter().map(|r| r.service.as_str()).collect();
        names.into_iter().map(str::to_string).collect()
    }

    /// The index, among [`Top::rows`], of the selected row; `None` when
    /// no row is shown.
    pub fn selected_index(&self, rows: &[Shown<'_>]) -> Option<usize> {
        let last = rows.len().checked_sub(1)?;
        let found = self
            .selected
            .as_ref()
            .and_then(|key| rows.iter().position(|r| r.row.key() == *key));
        Some(found.unwrap_or(self.selected_at.min(last)))
    }

    /// The selected connection, if any row is shown.
    pub fn selected_row(&self) -> Option<Shown<'_>> {
        let rows = self.rows();
        let at = self.selected_index(&rows)?;
        rows.into_iter().nth(at)
    }

    /// Pins the selection to a shown row after the rows changed (a new
    /// snapshot, a sort, a filter): the same connection wherever it now
    /// sorts, or, when it is gone, the row now where it was. With no row
    /// shown the selection is kept, for when its rows come back.
    fn settle(&mut self) {
        let rows = self.rows();
        let pinned = self
            .selected_index(&rows)
            .map(|at| (at, rows[at].row.key()));
        drop(rows);
        if let Some((at, key)) = pinned {
            self.selected_at = at;
            self.selected = Some(key);
        }
    }

    /// Selects the row at `to` (clamped to the rows shown).
    fn select(&mut self, to: impl FnOnce(usize, usize) -> usize) {
        let rows = self.rows();
        if let Some(at) = self.selected_index(&rows) {
            let last = rows.len() - 1;
            self.selected_at = to(at, last).min(last);
            // settle() pins the key of the row now at `selected_at`.
            self.selected = None;
        }
    }

    /// Acts on a key; false when it asks to quit.
    pub fn command(&mut self, command: Command) -> bool {
        match command {
            Command::Quit => return false,
            Command::Sort(sort) => self.sort = sort,
            Command::CycleFilter => {
                let services = self.services();
                self.filter = match &self.filter {
                    None => services.first().cloned(),
                    // The next in name order, even when the current one
                    // has no connection left and so is not in the list.
                    Some(now) => services.iter().find(|s| *s > now).cloned(),
                };
            }
            Command::TogglePause => self.paused = !self.paused,
            Command::Up => self.select(|at, _| at.saturating_sub(1)),
            Command::Down => self.select(|at, _| at + 1),
            // A page of no rows (a screen too small to show any) still
            // moves by one, so the key is never dead.
            Command::PageUp(page) => self.select(|at, _| at.saturating_sub(page.max(1))),
            Command::PageDown(page) => self.select(|at, _| at.saturating_add(page.max(1))),
            Command::Home => self.select(|_, _| 0),
            Command::End => self.select(|_, last| last),
            Command::Open => self.detail = self.selected_row().is_some(),
            Command::Close => self.detail = false,
        }
        self.settle();
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A snapshot line as the server writes it, with rows given as
    /// `(id, port, service, bytes_in, bytes_out)` and the rest of each row
    /// from [`row_json`].
    pub(crate) fn line(uptime: f64, accepted: u64, rows: &[String]) -> String {
        format!(
            concat!(
                r#"{{"stats":{{"uptime_secs":{},"services":{{"echo":{{"accepted":{},"active":{},"#,
                r#""refused":{{"full":1,"per_ip":0}},"closed":{{"peer":2,"idle":0,"error":0,"limit":0,"shutdown":0}},"#,
                r#""bytes_in":100,"bytes_out":100}}}},"total":{{"accepted":{},"active":{},"#,
                r#""refused":{{"full":1,"per_ip":0}},"closed":{{"peer":2,"idle":0,"error":0,"limit":0,"shutdown":0}},"#,
                r#""bytes_in":{},"bytes_out":{}}},"log_lines_dropped":3}},"clients":[{}]}}"#
            ),
            uptime,
            accepted,
            rows.len(),
            accepted,
            rows.len(),
            accepted * 1000,
            accepted * 2000,
            rows.join(",")
        )
    }

    pub(crate) fn row_json(
        id: u64,
        port: u16,
        service: &str,
        bytes_in: u64,
        extra: &str,
    ) -> String {
        format!(
            concat!(
                r#"{{"id":{},"peer":"127.0.0.1:{}","service":"{}","age_secs":{}.5,"idle_secs":0.1,"#,
                r#""recv_buf_used":0,"recv_buf_capacity":65536,"send_buf_used":0,"send_buf_capacity":65536,"#,
                r#""kernel_recv_queue":0,"kernel_send_queue":0,"kernel_send_unsent":0,"so_rcvbuf":131072,"#,
                r#""so_sndbuf":2626560,"state":"reading","limit":"idle","bytes_in":{},"bytes_out":{},"#,
                r#""tcp":{{"rtt_us":{},"rttvar_us":null,"snd_cwnd":10}}{}}}"#
            ),
            id,
            port,
            service,
            id,
            bytes_in,
            bytes_in,
            100 * (id + 1),
            extra
        )
    }

    fn top_of(lines: &[String]) -> Top {
        let mut top = Top::new();
        for l in lines {
            top.apply(Snapshot::parse(l).unwrap());
        }
        top
    }

    #[test]
    fn a_watch_line_parses_with_nulls_and_unknown_fields() {
        let text = line(
            1.5,
            4,
            &[row_json(
                7,
                4000,
                "echo",
                10,
                r#","kernel_recv_queue":null,"future_field":[1,2],"snapshots_skipped":2"#,
            )],
        );
        // A field given twice is an error, so the null replaces the 0.
        let text = text.replace(r#""kernel_recv_queue":0,"#, "");
        let s = Snapshot::parse(&text).unwrap();
        assert_eq!(s.stats.uptime_secs, 1.5);
        assert_eq!(s.stats.log_lines_dropped, 3);
        assert_eq!(s.stats.total.accepted, 4);
        assert_eq!(s.stats.total.refused_total(), 1);
        assert_eq!(s.stats.total.closed.of("peer"), 2);
        assert_eq!(
            s.stats.total.closed.0[0].0, "peer",
            "causes keep the server's order"
        );
        let r = &s.clients[0];
        assert_eq!(
            (r.id, r.peer.as_str(), r.service.as_str()),
            (7, "127.0.0.1:4000", "echo")
        );
        assert_eq!(r.kernel_recv_queue, None);
        assert_eq!(r.snapshots_skipped, Some(2));
        assert_eq!(r.tcp.unwrap().rtt_us, Some(800));
        assert_eq!(r.tcp.unwrap().rttvar_us, None);
        // Whole objects null or missing.
        let bare = Snapshot::parse(r#"{"stats":{"uptime_secs":null,"total":{"closed":null}},"clients":[{"id":1,"tcp":null,"peer":null}]}"#).unwrap();
        assert_eq!(bare.clients[0].tcp, None);
        assert_eq!(bare.clients[0].layers().total(), 0);
        assert!(Snapshot::parse("ERR unknown command, try help").is_err());
    }

    #[test]
    fn rates_are_over_the_servers_interval_and_new_connections_count_from_zero() {
        let a = line(10.0, 4, &[row_json(1, 4000, "echo", 1000, "")]);
        let b = line(
            10.5,
            6,
            &[
                row_json(1, 4000, "echo", 3000, ""),
                row_json(2, 4001, "echo", 50, ""),
            ],
        );
        let mut top = top_of(std::slice::from_ref(&a));
        assert_eq!(top.total_rates(), None, "one snapshot: no rates yet");
        assert_eq!(top.rows()[0].rate, Rate::default());
        top.apply(Snapshot::parse(&b).unwrap());
        let t = top.total_rates().unwrap();
        assert_eq!(
            (t.accepted, t.bytes_in, t.bytes_out, t.over_secs),
            (4.0, 4000.0, 8000.0, 0.5)
        );
        let rows = top.rows();
        let one = rows.iter().find(|r| r.row.id == 1).unwrap();
        assert_eq!(one.rate.bytes_in, Some(4000.0));
        let two = rows.iter().find(|r| r.row.id == 2).unwrap();
        assert_eq!(two.rate.bytes_out, Some(100.0));
    }

    #[test]
    fn a_reused_slot_is_a_new_connection() {
        let a = line(1.0, 1, &[row_json(1, 4000, "echo", 1000, "")]);
        let b = line(2.0, 2, &[row_json(1, 4999, "echo", 10, "")]);
        let top = top_of(&[a, b]);
        assert_eq!(top.rows()[0].rate.bytes_in, Some(10.0), "not 10 - 1000");
        assert_eq!(top.history(&top.rows()[0].row.key()).unwrap().len(), 1);
    }

    #[test]
    fn sorting_by_each_key() {
        let hog = row_json(
            1,
            4001,
            "echo",
            10,
            r#","send_buf_used":65536,"kernel_send_queue":9000,"kernel_send_unsent":1000"#,
        )
        .replace(r#""send_buf_used":0,"#, "")
        .replace(r#""kernel_send_queue":0,"kernel_send_unsent":0,"#, "");
        let fast = row_json(2, 4002, "echo", 900_000, "");
        let old =
            row_json(3, 4003, "echo", 1, "").replace(r#""age_secs":3.5"#, r#""age_secs":99.0"#);
        let none = row_json(0, 4000, "admin", 1, "").replace(r#""rtt_us":100"#, r#""rtt_us":null"#);
        let rows = [hog, fast, old, none];
        let zero: Vec<String> = rows
            .iter()
            .map(|r| {
                r.replace(
                    r#""bytes_in":900000,"bytes_out":900000"#,
                    r#""bytes_in":0,"bytes_out":0"#,
                )
            })
            .collect();
        let mut top = top_of(&[line(1.0, 4, &zero), line(2.0, 4, &rows)]);
        let ids = |top: &Top| top.rows().iter().map(|r| r.row.id).collect::<Vec<_>>();
        assert_eq!(ids(&top), [1, 0, 2, 3], "owed, then ties by id");
        top.command(Command::Sort(Sort::Rate));
        assert_eq!(ids(&top)[0], 2);
        top.command(Command::Sort(Sort::Age));
        assert_eq!(ids(&top), [3, 2, 1, 0]);
        top.command(Command::Sort(Sort::Rtt));
        assert_eq!(ids(&top), [3, 2, 1, 0], "rtt 400, 300, 200; unknown last");
    }

    #[test]
    fn the_filter_cycles_through_the_services_and_back_to_all() {
        let rows = [
            row_json(0, 4000, "admin", 1, ""),
            row_json(1, 4001, "echo", 1, ""),
        ];
        let mut top = top_of(&[line(1.0, 2, &rows)]);
        assert_eq!(top.services(), ["admin", "echo"]);
        assert_eq!(top.rows().len(), 2);
        top.command(Command::CycleFilter);
        assert_eq!(top.filter.as_deref(), Some("admin"));
        assert_eq!(top.rows().len(), 1);
        top.command(Command::CycleFilter);
        assert_eq!(top.rows()[0].row.service, "echo");
        top.command(Command::CycleFilter);
        assert_eq!(top.filter, None);
        assert_eq!(top.rows().len(), 2);
    }

    #[test]
    fn the_selection_follows_its_connection_and_pause_freezes() {
        let rows = [
            row_json(1, 4001, "echo", 1, ""),
            row_json(2, 4002, "echo", 1, ""),
        ];
        let mut top = top_of(&[line(1.0, 2, &rows)]);
        assert_eq!(
            top.selected_row().unwrap().row.id,
            1,
            "the first row at first"
        );
        top.command(Command::Sort(Sort::Age));
        assert_eq!(top.rows()[0].row.id, 2, "the older one first");
        assert_eq!(
            top.selected_row().unwrap().row.id,
            1,
            "re-sorted, same connection"
        );
        top.command(Command::Down);
        assert_eq!(
            top.selected_row().unwrap().row.id,
            1,
            "stops at the last row"
        );
        top.command(Command::Up);
        top.command(Command::Up);
        assert_eq!(
            top.selected_row().unwrap().row.id,
            2,
            "stops at the first row"
        );
        top.command(Command::Down);
        top.command(Command::Open);
        assert!(top.detail);
        top.command(Command::Sort(Sort::Rtt));
        assert_eq!(
            top.selected_row().unwrap().row.id,
            1,
            "re-sorted, same connection"
        );
        top.command(Command::Up);
        assert_eq!(top.selected_row().unwrap().row.id, 2);
        top.command(Command::Close);
        assert!(!top.detail);
        top.command(Command::TogglePause);
        top.apply(Snapshot::parse(&line(2.0, 9, &rows)).unwrap());
        assert_eq!(
            top.snapshot().unwrap().stats.total.accepted,
            2,
            "paused: not applied"
        );
        assert_eq!(top.skipped_while_paused, 1);
        assert!(!top.command(Command::Quit));
    }

    #[test]
    fn history_keeps_a_minute_and_forgets_connections_that_vanish() {
        let one = [row_json(1, 4001, "echo", 1, "")];
        let both = [
            row_json(1, 4001, "echo", 1, ""),
            row_json(2, 4002, "echo", 1, ""),
        ];
        let mut top = Top::new();
        for i in 0..300 {
            let rows: &[String] = if i < 290 { &both } else { &one };
            top.apply(Snapshot::parse(&line(f64::from(i) * 0.25, 2, rows)).unwrap());
        }
        let key = top.rows()[0].row.key();
        let h = top.history(&key).unwrap();
        assert_eq!(h.len(), 241, "60 s at 250 ms, both ends");
        assert_eq!(h.span_secs(), 60.0);
        assert_eq!(
            top.tracked(),
            1,
            "the vanished connection's history is gone"
        );
        // A server whose clock stands still cannot grow it without bound.
        let mut top = Top::new();
        for _ in 0..HISTORY_SAMPLES + 10 {
            top.current = None;
            top.apply(Snapshot::parse(&line(5.0, 2, &one)).unwrap());
        }
        assert_eq!(
            top.history(&top.rows()[0].row.key()).unwrap().len(),
            HISTORY_SAMPLES
        );
    }

    #[test]
    fn history_is_kept_for_a_bounded_number_of_connections() {
        let rows: Vec<String> = (0..HISTORY_CONNECTIONS as u64 + 5)
            .map(|i| row_json(i, 1000 + i as u16, "echo", 1, ""))
            .collect();
        let top = top_of(&[line(1.0, 1, &rows)]);
        assert_eq!(top.tracked(), HISTORY_CONNECTIONS);
    }

    /// Rows `(id, send_buf_used)`: owed decides the default order.
    fn owing(rows: &[(u64, u64)]) -> Vec<String> {
        rows.iter()
            .map(|&(id, owed)| {
                row_json(id, 4000 + id as u16, "echo", 1, "").replace(
                    r#""send_buf_used":0"#,
                    &format!(r#""send_buf_used":{owed}"#),
                )
            })
            .collect()
    }

    #[test]
    fn regression_selection_stayed_on_a_screen_row_across_re_sorts() {
        let mut top = top_of(&[line(1.0, 2, &owing(&[(1, 0), (2, 0)]))]);
        assert_eq!(
            top.selected_row().unwrap().row.id,
            1,
            "the first row at first"
        );
        // No key pressed; connection 2 now owes the most and sorts first.
        top.apply(Snapshot::parse(&line(2.0, 2, &owing(&[(1, 0), (2, 500)]))).unwrap());
        assert_eq!(top.rows()[0].row.id, 2, "re-sorted");
        assert_eq!(
            top.selected_row().unwrap().row.id,
            1,
            "the selection follows its connection, not the top row"
        );
    }

    #[test]
    fn when_the_selected_connection_goes_its_neighbour_is_selected() {
        let mut top = top_of(&[line(1.0, 3, &owing(&[(1, 0), (2, 0), (3, 0)]))]);
        top.command(Command::Down);
        assert_eq!(top.selected_row().unwrap().row.id, 2);
        top.apply(Snapshot::parse(&line(2.0, 3, &owing(&[(1, 0), (3, 0)]))).unwrap());
        assert_eq!(
            top.selected_row().unwrap().row.id,
            3,
            "the row now where it was, not the top"
        );
    }

    #[test]
    fn regression_paging_keys_did_nothing() {
        let rows: Vec<(u64, u64)> = (0..30).map(|id| (id, 0)).collect();
        let mut top = top_of(&[line(1.0, 30, &owing(&rows))]);
        let at = |top: &Top| top.selected_row().unwrap().row.id;
        top.command(Command::PageDown(10));
        assert_eq!(at(&top), 10);
        top.command(Command::PageDown(10));
        top.command(Command::PageDown(10));
        assert_eq!(at(&top), 29, "stops at the last row");
        top.command(Command::PageUp(10));
        assert_eq!(at(&top), 19);
        top.command(Command::Home);
        assert_eq!(at(&top), 0);
        top.command(Command::PageUp(10));
        assert_eq!(at(&top), 0, "stops at the first row");
        top.command(Command::End);
        assert_eq!(at(&top), 29);
        // A page of zero rows (a screen too small for any) still moves.
        top.command(Command::PageUp(0));
        assert_eq!(at(&top), 28);
    }
    #[test]
    fn regression_f_showed_services_without_connections() {
        let rows = [
            row_json(0, 4000, "admin", 1, ""),
            row_json(1, 4001, "echo", 1, ""),
        ];
        // The server also runs chat and files, with nobody connected.
        let text = line(1.0, 2, &rows).replace(
            r#""services":{"echo":"#,
            r#""services":{"admin":{"active":1},"chat":{"active":0},"files":{},"echo":"#,
        );
        let mut top = top_of(&[text]);
        let mut seen = Vec::new();
        for _ in 0..4 {
            top.command(Command::CycleFilter);
            seen.push(top.filter.clone());
            assert!(
                top.filter.is_none() || !top.rows().is_empty(),
                "filter {:?} shows no connection",
                top.filter
            );
        }
        assert_eq!(
            seen,
            [
                Some("admin".into()),
                Some("echo".into()),
                None,
                Some("admin".into())
            ]
        );
    }
}
