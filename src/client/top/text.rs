//! `top` as plain text: the header's fields (shared with the full-screen
//! view, which wraps them), the connection table of `--once`, the lines of
//! `--stat`, and the number formats they use, each number with a short
//! form for a narrow column. Pure: strings from a [`Top`], no I/O.

use std::fmt::Write as _;

use super::model::{Cell, Layer, Shown, Top, TotalRates, bar};

/// Cells per part of a bar in the plain-text table: four parts of 8 and
/// their separators keep a row within 150 columns.
pub const TEXT_PART_WIDTH: usize = 8;

/// A byte count with a binary suffix: `512`, `1.5K`, `64.0K`, `2.5M`.
pub fn bytes(n: u64) -> String {
    amount(n as f64)
}

fn amount(n: f64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if n < 1024.0 {
        return format!("{n:.0}");
    }
    let mut value = n / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// Bytes per second, or `-` when not known yet.
pub fn per_sec(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_string(), amount)
}

/// [`bytes`] without the decimal, for a narrow column: `3M` for `2.5M`,
/// rounded, never cut.
pub fn bytes_short(n: u64) -> String {
    amount_short(n as f64)
}

fn amount_short(n: f64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if n.round() < 1024.0 {
        return format!("{n:.0}");
    }
    let mut value = n / 1024.0;
    let mut unit = 0;
    // Rounded, 1023.6K would print as 1024K: that is 1M.
    while value.round() >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.0}{}", UNITS[unit])
}

/// [`per_sec`] without the decimal.
pub fn per_sec_short(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_string(), amount_short)
}

/// [`duration`] in its largest unit only, for a narrow column: `28s` for
/// `27.7s`, `5m` for `5m02s`, `3h` for `3h04m`, `12d` past 99 hours.
pub fn duration_short(secs: f64) -> String {
    let whole = secs.max(0.0).round() as u64;
    if whole < 60 {
        format!("{whole}s")
    } else if whole < 3600 {
        format!("{}m", whole / 60)
    } else if whole < 100 * 3600 {
        format!("{}h", whole / 3600)
    } else {
        format!("{}d", whole / 86400)
    }
}

/// Seconds as `4.2s`, `5m02s` or `3h04m`.
pub fn duration(secs: f64) -> String {
    let secs = secs.max(0.0);
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        let s = secs as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = secs as u64 / 60;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

/// A round-trip time in milliseconds, or `-`.
pub fn rtt(us: Option<u64>) -> String {
    us.map_or_else(
        || "-".to_string(),
        |us| format!("{:.2}", us as f64 / 1000.0),
    )
}

/// `n thing` or `n things`.
pub fn count(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// The kernel's TCP_INFINITE_SSTHRESH (0x7fffffff): the slow-start
/// threshold of a connection that has not yet lost a packet.
pub const INFINITE_SSTHRESH: u64 = 0x7fff_ffff;

/// A slow-start threshold in segments: `∞` for the kernel's initial
/// "none yet" value, `-` when not known.
pub fn ssthresh(segments: Option<u64>) -> String {
    match segments {
        None => "-".to_string(),
        Some(n) if n >= INFINITE_SSTHRESH => "∞".to_string(),
        Some(n) => n.to_string(),
    }
}

/// One field of the header: its text, and a shorter one for a screen too
/// narrow for it (`None`: the same).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub full: String,
    pub short: Option<String>,
}

impl Field {
    fn new(full: String) -> Field {
        Field { full, short: None }
    }

    /// The full text if it fits `width` cells, else the short one.
    pub fn fitting(&self, width: usize) -> &str {
        match &self.short {
            Some(short) if self.full.chars().count() > width => short,
            _ => &self.full,
        }
    }
}

/// The header, as groups of fields (a line each in plain text): what is
/// watched; the totals and their rates; refusals, closes by cause and
/// dropped log lines; the active connections per service.
pub fn header_fields(top: &Top, addr: &str) -> Vec<Vec<Field>> {
    let Some(s) = top.snapshot() else {
        return vec![vec![Field::new(format!(
            "tcp-reactor top {addr}: waiting for the first snapshot"
        ))]];
    };
    let stats = &s.stats;
    let total = &stats.total;
    let rates = top.total_rates();
    let rate = |f: fn(&TotalRates) -> f64| per_sec(rates.as_ref().map(f));
    let mut first = vec![
        format!("tcp-reactor top {addr}"),
        format!("uptime {}", duration(stats.uptime_secs)),
        count(s.clients.len() as u64, "connection"),
        match &rates {
            Some(r) => format!("rates over {:.2}s", r.over_secs),
            None => "rates after the next snapshot".to_string(),
        },
        format!("sort {}", top.sort.name()),
        format!("filter {}", top.filter.as_deref().unwrap_or("all")),
    ];
    if top.paused {
        first.push("PAUSED".to_string());
    }
    let totals = vec![
        format!(
            "total: accepted {} ({}/s)",
            total.accepted,
            rate(|r| r.accepted)
        ),
        format!("active {}", total.active),
        format!("in {}/s", rate(|r| r.bytes_in)),
        format!("out {}/s", rate(|r| r.bytes_out)),
        format!(
            "({} in, {} out since start)",
            bytes(total.bytes_in),
            bytes(total.bytes_out)
        ),
    ];
    let refused: Vec<String> = total
        .refused
        .iter()
        .map(|(cause, n)| format!("{cause} {}", n.unwrap_or(0)))
        .collect();
    let closed = |all: bool| {
        let causes: Vec<String> = total
            .closed
            .0
            .iter()
            .filter(|(_, n)| all || *n > 0)
            .map(|(cause, n)| format!("{cause} {n}"))
            .collect();
        let sep = if causes.is_empty() { "" } else { ": " };
        format!(
            "closed {} ({}/s{sep}{})",
            total.closed.total(),
            rate(|r| r.closed),
            causes.join(", ")
        )
    };
    let causes = vec![
        Field {
            full: format!("refused {} ({})", total.refused_total(), refused.join(", ")),
            short: Some(format!("refused {}", total.refused_total())),
        },
        // Narrow, the causes that closed nothing are left out.
        Field {
            full: closed(true),
            short: Some(closed(false)),
        },
        Field::new(format!("log lines dropped {}", stats.log_lines_dropped)),
    ];
    let mut active: Vec<String> = stats
        .services
        .iter()
        .map(|(name, c)| format!("{name} {}", c.active))
        .collect();
    if let Some(first) = active.first_mut() {
        *first = format!("active by service: {first}");
    } else {
        active.push("active by service: none".to_string());
    }
    let plain = |v: Vec<String>| v.into_iter().map(Field::new).collect();
    vec![plain(first), plain(totals), causes, plain(active)]
}

/// The header as lines of text, every field in full: the plain view's
/// first lines.
pub fn header_lines(top: &Top, addr: &str) -> Vec<String> {
    header_fields(top, addr)
        .into_iter()
        .map(|group| {
            group
                .into_iter()
                .map(|f| f.full)
                .collect::<Vec<_>>()
                .join("  ")
        })
        .collect()
}

/// The cells of a table row but the bar, in column order, with the header
/// names (shared with the full-screen table).
pub const COLUMNS: [&str; 10] = [
    "id", "peer", "svc", "state", "limit", "age", "in/s", "out/s", "rtt_ms", "owed",
];

/// A row's cells but the bar, in [`COLUMNS`] order. The row of this
/// program's own admin connection has `*` after its service.
pub fn cells(shown: &Shown<'_>) -> [String; 10] {
    let r = shown.row;
    [
        r.id.to_string(),
        r.peer.clone(),
        if shown.own {
            format!("{}*", r.service)
        } else {
            r.service.clone()
        },
        r.state.clone(),
        r.limit.clone(),
        duration(r.age_secs),
        per_sec(shown.rate.bytes_in),
        per_sec(shown.rate.bytes_out),
        rtt(r.rtt_us()),
        bytes(r.owed()),
    ]
}

/// A row's cells in their short forms (those that have one: age, rates
/// and owed; the rest as in [`cells`]), for a narrow screen.
pub fn short_cells(shown: &Shown<'_>) -> [String; 10] {
    let mut cells = cells(shown);
    let r = shown.row;
    cells[5] = duration_short(r.age_secs);
    cells[6] = per_sec_short(shown.rate.bytes_in);
    cells[7] = per_sec_short(shown.rate.bytes_out);
    cells[9] = bytes_short(r.owed());
    cells
}

/// A bar as text: a layer's letter per cell it fills, `.` for room left,
/// `|` between parts.
pub fn bar_text(shown: &Shown<'_>, part_width: usize) -> String {
    let mut out = String::from("[");
    for (cell, n) in bar(&shown.row.layers(), part_width) {
        let c = match cell {
            Cell::Layer(layer) => layer.glyph(),
            Cell::Free => '.',
            Cell::Separator => '|',
        };
        out.extend(std::iter::repeat_n(c, n));
    }
    out.push(']');
    out
}

/// What the bar's letters mean.
pub fn legend() -> String {
    let layers: Vec<String> = Layer::ALL
        .iter()
        .map(|l| format!("{} {}", l.glyph(), l.name()))
        .collect();
    format!(
        "bar: {}; parts scaled to SO_RCVBUF | receive buffer | send buffer | SO_SNDBUF",
        layers.join(", ")
    )
}

/// Which columns hold numbers, which are right-aligned.
pub const NUMERIC: [bool; 10] = [
    true, false, false, false, false, true, true, true, true, true,
];

const WIDTHS: [usize; 10] = [5, 21, 7, 9, 11, 7, 7, 7, 7, 7];

fn table_line(cells: &[String; 10], bar: &str) -> String {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(WIDTHS).enumerate() {
        if NUMERIC[i] {
            let _ = write!(line, "{cell:>width$} ");
        } else {
            let _ = write!(line, "{cell:<width$} ");
        }
    }
    line.push_str(bar);
    line.trim_end().to_string()
}

/// The whole plain-text view: header, one table row per connection shown,
/// the legend.
pub fn render(top: &Top, addr: &str) -> String {
    let mut out = String::new();
    for line in header_lines(top, addr) {
        out.push_str(&line);
        out.push('\n');
    }
    out.push('\n');
    let names = COLUMNS.map(str::to_string);
    out.push_str(&table_line(&names, "bar"));
    out.push('\n');
    let rows = top.rows();
    for shown in &rows {
        out.push_str(&table_line(
            &cells(shown),
            &bar_text(shown, TEXT_PART_WIDTH),
        ));
        out.push('\n');
    }
    let _ = writeln!(out, "{}", legend());
    if rows.iter().any(|r| r.own) {
        out.push_str("* this top's own admin connection\n");
    }
    out
}

/// The column names of `--stat`, printed first and again every
/// [`STAT_HEADER_EVERY`] lines, as `redis-cli --stat` does.
pub fn stat_header() -> String {
    format!(
        "{:>9} {:>7} {:>11} {:>9} {:>9} {:>8} {:>8}",
        "uptime", "active", "accepted/s", "in/s", "out/s", "closed", "dropped"
    )
}

pub const STAT_HEADER_EVERY: usize = 20;

/// One `--stat` line: the latest snapshot's figures and the rates since
/// the one before; `None` until there are two.
pub fn stat_line(top: &Top) -> Option<String> {
    let s = top.snapshot()?;
    let r = top.total_rates()?;
    let t = &s.stats.total;
    Some(format!(
        "{:>9} {:>7} {:>11.1} {:>9} {:>9} {:>8} {:>8}",
        duration(s.stats.uptime_secs),
        t.active,
        r.accepted,
        amount(r.bytes_in),
        amount(r.bytes_out),
        t.closed.total(),
        s.stats.log_lines_dropped
    ))
}

#[cfg(test)]
mod tests {
    use super::super::model::tests::{line, row_json};
    use super::super::model::{Snapshot, Top};
    use super::*;

    #[test]
    fn numbers_are_short() {
        assert_eq!(bytes(0), "0");
        assert_eq!(bytes(1023), "1023");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(64 << 20), "64.0M");
        assert_eq!(per_sec(None), "-");
        assert_eq!(duration(4.25), "4.2s");
        assert_eq!(duration(302.0), "5m02s");
        assert_eq!(duration(3.0 * 3600.0 + 240.0), "3h04m");
        assert_eq!(rtt(Some(1500)), "1.50");
        assert_eq!(count(1, "connection"), "1 connection");
        // Short forms round to their largest unit; they are never a cut.
        assert_eq!(bytes_short(1023), "1023");
        assert_eq!(bytes_short(1536), "2K");
        assert_eq!(bytes_short(2_626_560), "3M");
        assert_eq!(bytes_short(1_048_000), "1023K");
        assert_eq!(bytes_short(1_048_500), "1M", "1023.9K: not 1024K");
        assert_eq!(per_sec_short(Some(7475.2)), "7K");
        assert_eq!(duration_short(27.7), "28s");
        assert_eq!(duration_short(59.7), "1m");
        assert_eq!(duration_short(302.0), "5m");
        assert_eq!(duration_short(3.0 * 3600.0 + 240.0), "3h");
        assert_eq!(duration_short(12.0 * 86400.0), "12d");
        assert_eq!(count(2, "sample"), "2 samples");
        assert_eq!(ssthresh(Some(0x7fff_ffff)), "∞");
        assert_eq!(ssthresh(Some(42)), "42");
        assert_eq!(ssthresh(None), "-");
    }

    fn two_snapshots() -> Top {
        let hog = row_json(
            1,
            4001,
            "echo",
            10,
            concat!(
                r#","recv_buf_used":65536,"kernel_recv_queue":65536,"send_buf_used":32768,"#,
                r#""kernel_send_queue":2626560,"kernel_send_unsent":2600000"#
            ),
        )
        .replace(r#""recv_buf_used":0,"#, "")
        .replace(r#""kernel_recv_queue":0,"#, "")
        .replace(r#""send_buf_used":0,"#, "")
        .replace(r#""kernel_send_queue":0,"kernel_send_unsent":0,"#, "")
        .replace(
            r#""state":"reading","limit":"idle""#,
            r#""state":"paused","limit":"peer-window""#,
        );
        let own = row_json(0, 4000, "admin", 10, "");
        let idle = row_json(2, 4002, "echo", 2, "");
        let mut top = Top::new();
        top.own_peer = Some("127.0.0.1:4000".to_string());
        top.apply(Snapshot::parse(&line(1.0, 3, &[own.clone(), idle.clone()])).unwrap());
        top.apply(Snapshot::parse(&line(1.25, 4, &[own, hog, idle])).unwrap());
        top
    }

    #[test]
    fn the_plain_view_has_the_header_and_a_row_per_connection() {
        let top = two_snapshots();
        let text = render(&top, "127.0.0.1:7999");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("tcp-reactor top 127.0.0.1:7999  uptime 1.2s  3 connections  rates over 0.25s  sort owed"), "{text}");
        assert!(
            lines[1].starts_with("total: accepted 4 (4/s)  active 3  in 3.9K/s  out 7.8K/s"),
            "{text}"
        );
        assert!(
            lines[2].contains("refused 1 (full 1, per_ip 0)  closed 2 (0/s: peer 2, idle 0,"),
            "{text}"
        );
        assert!(lines[2].ends_with("log lines dropped 3"), "{text}");
        assert_eq!(lines[3], "active by service: echo 3");
        assert!(
            lines[5].starts_with("   id peer ") && lines[5].ends_with("owed bar"),
            "{text}"
        );
        // Sorted by owed: the hog first, its bar full on every part.
        assert_eq!(
            lines[6],
            "    1 127.0.0.1:4001        echo    paused    peer-window    1.5s      40      40    0.20    2.5M [KKKK....|RRRRRRRR|SSSS....|UUUUUUUF]"
        );
        assert!(
            lines[7].contains(" admin*  reading   idle ")
                && lines[7].ends_with("[........|........|........|........]"),
            "{text}"
        );
        assert!(lines[8].contains("127.0.0.1:4002"), "{text}");
        assert!(
            lines[9].starts_with("bar: K kernel receive queue, R receive buffer"),
            "{text}"
        );
        assert_eq!(lines[10], "* this top's own admin connection");
        assert_eq!(lines.len(), 11);
    }

    #[test]
    fn a_stat_line_needs_two_snapshots() {
        let mut top = Top::new();
        top.apply(Snapshot::parse(&line(1.0, 3, &[])).unwrap());
        assert_eq!(stat_line(&top), None);
        top.apply(Snapshot::parse(&line(2.0, 5, &[])).unwrap());
        let stat = stat_line(&top).unwrap();
        let header = stat_header();
        assert_eq!(
            stat.len(),
            header.len(),
            "columns line up:\n{header}\n{stat}"
        );
        let fields: Vec<&str> = stat.split_whitespace().collect();
        assert_eq!(fields, ["2.0s", "0", "2.0", "2.0K", "3.9K", "2", "3"]);
    }

    #[test]
    fn before_any_snapshot_the_header_says_so() {
        let text = render(&Top::new(), "127.0.0.1:1");
        assert!(
            text.starts_with("tcp-reactor top 127.0.0.1:1: waiting"),
            "{text}"
        );
    }

    #[test]
    fn regression_one_connection_was_plural() {
        let mut top = Top::new();
        top.apply(Snapshot::parse(&line(1.0, 1, &[row_json(0, 4000, "admin", 1, "")])).unwrap());
        let text = render(&top, "127.0.0.1:7999");
        assert!(text.contains("  1 connection  "), "{text}");
        top.apply(Snapshot::parse(&line(2.0, 1, &[])).unwrap());
        assert!(render(&top, "127.0.0.1:7999").contains("  0 connections  "));
    }
}
