//! The admin views over the server: the answers to `stats`, `clients`,
//! `watch` and `metrics`, made from what the reactor shows through the
//! read-only [`ServerView`], and the answer a refused operator gets in its
//! own protocol. The admin service parses the commands
//! ([`crate::service::admin`]); [`crate::observe`] renders rows and
//! counters; this module puts the two together over the live server, in
//! bounded steps. No I/O here: the view's rows carry whatever system calls
//! filling them took.

use std::time::{Duration, Instant};

use crate::limits;
use crate::observe::clients::{self, ClientRow};
use crate::observe::metrics::{self, Snapshot};
use crate::observe::stats::{self, ServiceStats, Stats};
use crate::service::admin::{self, Cursor, Query};

/// Rows of a `clients` answer rendered in one step, for one admin
/// connection: each row costs five system calls (the kernel queues and
/// buffer sizes), so an answer for thousands of connections is spread over
/// turns instead of stalling every client at once.
pub const ROWS_PER_STEP: usize = 128;

/// Rows rendered in one turn of the loop, across every admin connection:
/// concurrent `clients` queries share it, so more operators do not mean a
/// longer stall for everyone else.
pub const ROWS_PER_TURN: usize = 256;

/// What the admin views read of the server. The reactor implements it over
/// its connection table, counters and pools; nothing here can change them.
pub trait ServerView {
    /// Every counter.
    fn stats(&self) -> &Stats;
    /// The counters of the services that have a listener, by name.
    fn running_services(&self) -> Vec<(&'static str, &ServiceStats)>;
    /// How long the server has been up at `now`.
    fn uptime(&self, now: Instant) -> Duration;
    /// The connection cap in force (`None`: no cap).
    fn max_conns(&self) -> Option<usize>;
    /// One past the highest connection key there may be: rows are looked
    /// for below it.
    fn key_end(&self) -> usize;
    /// Connection `key` as `clients` shows it (a handful of system calls),
    /// or `None` for a free key.
    fn row(&self, key: usize, now: Instant) -> Option<ClientRow>;
    /// Everything `metrics` shows.
    fn metrics(&self) -> Snapshot<'_>;
}

/// The two tables rendered in steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    Clients {
        json: bool,
    },
    /// A `watch` snapshot: stats and clients, one JSON line.
    Watch,
}

/// The answer to `query`, and the query for the rest of it, if any; rows
/// rendered are taken from `rows_left`, this turn's budget.
pub fn answer(
    view: &dyn ServerView,
    query: Query,
    rows_left: &mut usize,
    now: Instant,
) -> (String, Option<Query>) {
    match query {
        Query::Stats { json } => (render_stats(view, json, now), None),
        Query::Clients { json, cursor } => {
            clients_step(view, Table::Clients { json }, cursor, rows_left, now)
        }
        Query::Watch { cursor } => clients_step(view, Table::Watch, cursor, rows_left, now),
        Query::Metrics => (
            metrics::render(&view.metrics(), metrics::Format::OpenMetrics),
            None,
        ),
    }
}

/// The `stats` answer, as a table or one JSON line.
fn render_stats(view: &dyn ServerView, json: bool, now: Instant) -> String {
    stats::render_stats(
        view.stats(),
        &view.running_services(),
        view.uptime(now),
        crate::logsink::dropped(),
        view.max_conns(),
        json,
    )
}

/// One step of a `clients` answer: at most [`ROWS_PER_STEP`] rows from
/// `cursor` on (fewer once this turn's `rows_left` are spent), and the
/// query for the rest, if any. The table is live, not a snapshot: a
/// connection opened or closed meanwhile may or may not show.
fn clients_step(
    view: &dyn ServerView,
    table: Table,
    cursor: Cursor,
    rows_left: &mut usize,
    now: Instant,
) -> (String, Option<Query>) {
    let json = table != (Table::Clients { json: false });
    let mut out = match table {
        _ if cursor.started => String::new(),
        Table::Clients { json } => clients::clients_head(json),
        Table::Watch => {
            // One JSON line: the stats, then the rows as `clients json`.
            let stats = render_stats(view, true, now);
            format!("{{\"stats\":{},\"clients\":[", stats.trim_end())
        }
    };
    let most = ROWS_PER_STEP.min(*rows_left);
    let mut rows = Vec::with_capacity(most);
    let mut key = cursor.next_key;
    // Vacant slots cost a look each: bounded too.
    let mut looked = 0;
    let end = view.key_end();
    while key < end && rows.len() < most && looked < 4 * ROWS_PER_STEP {
        if let Some(row) = view.row(key, now) {
            rows.push(row);
        }
        key += 1;
        looked += 1;
    }
    *rows_left -= rows.len();
    out.push_str(&clients::clients_rows(&rows, json, cursor.rows == 0));
    let total = cursor.rows + rows.len();
    if key >= end {
        match table {
            Table::Clients { json } => out.push_str(&clients::clients_tail(json, total)),
            Table::Watch => out.push_str("]}\n"),
        }
        return (out, None);
    }
    let rest = Cursor {
        next_key: key,
        rows: total,
        started: true,
    };
    let next = match table {
        Table::Clients { json } => Query::Clients { json, cursor: rest },
        Table::Watch => Query::Watch { cursor: rest },
    };
    (out, Some(next))
}

/// Whether a refused operator's `first` bytes say which protocol to refuse
/// it in (an HTTP method, or plainly not one).
pub fn refusal_ready(first: &[u8]) -> bool {
    admin::first_bytes(first) != admin::FirstBytes::Unknown
}

/// What a refused operator is told, in the protocol its `first` bytes
/// speak: HTTP gets `503` with `Retry-After` (headers only for `HEAD`),
/// anything else the `ERR` line.
pub fn refusal_answer(first: &[u8], retry_after: u64) -> Vec<u8> {
    if admin::first_bytes(first) != admin::FirstBytes::Http {
        return format!("{}\n", limits::Refusal::OperatorsFull).into_bytes();
    }
    admin::http_response(
        "503 Service Unavailable",
        &format!("Retry-After: {retry_after}\r\n"),
        "text/plain; charset=utf-8",
        b"too many admin connections\n",
        first.starts_with(b"HEAD "),
    )
}
