//! How the full-screen view of `top` fits its terminal: which table
//! columns show and in which form, how wide the bar is, how fields wrap
//! into lines, and how the screen's lines are shared out.
//!
//! The rule everywhere: a number or a name is shown whole or not at all. A
//! column that does not fit first switches to a shorter form (`28s` for
//! `27.7s`, `3M` for `2.5M`), then gives way to the bar, in a fixed order
//! (rates, then the peer, then rtt, ...); a header field moves to the next
//! line; a key in the footer is left out. Pure: widths in, choices out; the
//! drawing is `screen`'s.

use std::ops::Range;

use super::text::COLUMNS;

/// Columns, as indices into [`COLUMNS`].
pub const ID: usize = 0;
pub const PEER: usize = 1;
pub const SVC: usize = 2;
pub const STATE: usize = 3;
pub const LIMIT: usize = 4;
pub const AGE: usize = 5;
pub const IN: usize = 6;
pub const OUT: usize = 7;
pub const RTT: usize = 8;
pub const OWED: usize = 9;

/// Cells the selection marker takes in front of every row.
pub const HIGHLIGHT: usize = 2;

/// Fewest cells per part of a bar before columns give way: at four a
/// part still shows a quarter, half or three quarters full, which is what
/// the bar is read for. (At 80 columns this costs the rates and the peer.)
pub const MIN_PART: usize = 4;

/// Most cells per part: past 16 a wider bar says nothing more, and the
/// room is better left blank than spent on a stretched bar.
pub const MAX_PART: usize = 16;

/// The cells a bar of `part` cells per part takes: four parts, three
/// separators and two brackets.
pub fn bar_width(part: usize) -> usize {
    4 * part + 5
}

/// What a table narrower than its full form gives up, one step at a time,
/// until the bar fits at [`MIN_PART`]. Rates change every snapshot and are
/// the header's too; the peer is in the detail pane; the bar and the
/// `limit` that explains it stay longest.
#[derive(Clone, Copy, Debug)]
enum Step {
    Shorten(&'static [usize]),
    Drop(&'static [usize]),
}

const STEPS: [Step; 10] = [
    Step::Shorten(&[IN, OUT]),
    Step::Drop(&[IN, OUT]),
    Step::Drop(&[PEER]),
    Step::Shorten(&[AGE, OWED]),
    Step::Drop(&[RTT]),
    Step::Drop(&[AGE]),
    Step::Drop(&[STATE]),
    Step::Drop(&[LIMIT]),
    Step::Drop(&[OWED]),
    Step::Drop(&[SVC]),
];

/// One column as shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shown {
    /// Index into [`COLUMNS`].
    pub column: usize,
    /// Its short form is shown.
    pub short: bool,
    /// Cells: its widest cell or its name, whichever is wider, so that no
    /// cell is cut.
    pub width: usize,
}

/// The table's columns for one width.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Columns {
    /// In [`COLUMNS`] order.
    pub shown: Vec<Shown>,
    /// Cells per part of the bar. Below [`MIN_PART`] only when even the
    /// id column and the bar at its minimum do not fit.
    pub part: usize,
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// The columns that fit `width` cells, for rows whose cells are given in
/// full and short forms (each row a [`COLUMNS`]-long slice; a column with
/// no short form repeats its full one). Columns are as wide as their
/// widest cell, over every row, so that paging does not move them.
pub fn columns<C: AsRef<[String]>>(full: &[C], short: &[C], width: usize) -> Columns {
    let widest = |rows: &[C], column: usize| {
        rows.iter()
            .map(|r| chars(&r.as_ref()[column]))
            .max()
            .unwrap_or(0)
            .max(chars(COLUMNS[column]))
    };
    let full_width: Vec<usize> = (0..COLUMNS.len()).map(|c| widest(full, c)).collect();
    let short_width: Vec<usize> = (0..COLUMNS.len()).map(|c| widest(short, c)).collect();
    let mut dropped = [false; COLUMNS.len()];
    let mut shortened = [false; COLUMNS.len()];
    let used = |dropped: &[bool], shortened: &[bool]| {
        (0..COLUMNS.len())
            .filter(|c| !dropped[*c])
            .map(|c| {
                let w = if shortened[c] {
                    short_width[c]
                } else {
                    full_width[c]
                };
                // A column and the space after it.
                w + 1
            })
            .sum::<usize>()
            + HIGHLIGHT
    };
    let mut steps = STEPS.iter();
    while used(&dropped, &shortened) + bar_width(MIN_PART) > width {
        match steps.next() {
            Some(Step::Shorten(cs)) => cs.iter().for_each(|c| shortened[*c] = true),
            Some(Step::Drop(cs)) => cs.iter().for_each(|c| dropped[*c] = true),
            None => break,
        }
    }
    // A column shortened with another but no narrower for it (owed, whose
    // `2.5M` is as wide as its name) shows in full: the short form bought
    // nothing.
    for c in 0..COLUMNS.len() {
        if full_width[c] <= short_width[c] {
            shortened[c] = false;
        }
    }
    let left = width.saturating_sub(used(&dropped, &shortened));
    let part = (left.saturating_sub(bar_width(0)) / 4).clamp(1, MAX_PART);
    let shown = (0..COLUMNS.len())
        .filter(|c| !dropped[*c])
        .map(|c| Shown {
            column: c,
            short: shortened[c],
            width: if shortened[c] {
                short_width[c]
            } else {
                full_width[c]
            },
        })
        .collect();
    Columns { shown, part }
}

/// Fields laid out in lines of at most `width` cells, `sep` cells between
/// two on a line, in order: the fields of each line, as a range. A field
/// wider than a line has one of its own.
pub fn wrap(widths: &[usize], width: usize, sep: usize) -> Vec<Range<usize>> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, w) in widths.iter().enumerate() {
        if i > start && used + sep + w > width {
            lines.push(start..i);
            start = i;
            used = 0;
        }
        used += if i > start { sep + w } else { *w };
    }
    if start < widths.len() {
        lines.push(start..widths.len());
    }
    lines
}

/// Which items fit a `budget`, taken in `priority` order (indices into
/// `costs`; those past its end are ignored, those missing never chosen),
/// each costing its cost plus `sep` after the first. An item that does not
/// fit is skipped, and a cheaper one after it may still fit.
pub fn choose(costs: &[usize], priority: &[usize], budget: usize, sep: usize) -> Vec<bool> {
    let mut chosen = vec![false; costs.len()];
    let mut used = 0;
    for &i in priority.iter().filter(|i| **i < costs.len()) {
        let cost = if used == 0 { costs[i] } else { costs[i] + sep };
        if used + cost <= budget {
            used += cost;
            chosen[i] = true;
        }
    }
    chosen
}

/// Fewest rows the table keeps, its column names aside, before header
/// lines are given up: enough to see the selection among its neighbours.
pub const TABLE_MIN_ROWS: usize = 5;

/// How the screen's lines are shared out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heights {
    /// Per header group: shown or not.
    pub groups: Vec<bool>,
    /// Lines of the table, its column names included.
    pub table: usize,
    /// Lines of the detail pane (0 when closed), its border included.
    pub detail: usize,
    /// Lines per layer in the detail pane: 2 (a label line, a figures
    /// line, and a sparkline two lines high) when there is room, else 1.
    pub layer_lines: usize,
}

/// Shares `height` lines out: the footer's one line first, then the table
/// (its column names and [`TABLE_MIN_ROWS`] rows, or all its rows if
/// fewer), then the detail pane when open (`detail`: its lines of figures;
/// then a line per layer and the border), then the header groups (lines
/// each, in display order) in `priority` order until one does not fit
/// (indices past the end ignored); what is
/// left goes to taller sparklines, then to the table.
pub fn heights(
    height: usize,
    groups: &[usize],
    priority: &[usize],
    rows: usize,
    detail: Option<usize>,
) -> Heights {
    const LAYERS: usize = 5;
    let mut left = height.saturating_sub(1);
    let table_min = (1 + rows.min(TABLE_MIN_ROWS)).min(left);
    left -= table_min;
    let detail_min = detail.map_or(0, |figures| (2 + figures + LAYERS).min(left));
    left -= detail_min;
    // Strictly by priority: a group that does not fit ends the header, so
    // a low one never shows without the ones above it.
    let mut chosen = vec![false; groups.len()];
    for &g in priority.iter().filter(|g| **g < groups.len()) {
        if groups[g] > left {
            break;
        }
        left -= groups[g];
        chosen[g] = true;
    }
    let mut layer_lines = 1;
    let mut detail_height = detail_min;
    if detail.is_some() && left >= LAYERS {
        layer_lines = 2;
        detail_height += LAYERS;
        left -= LAYERS;
    }
    Heights {
        groups: chosen,
        table: table_min + left,
        detail: detail_height,
        layer_lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: [&str; 10]) -> Vec<String> {
        cells.map(str::to_string).to_vec()
    }

    /// The hog of the issue: every cell at its widest.
    fn rows() -> (Vec<Vec<String>>, Vec<Vec<String>>) {
        let full = vec![row([
            "1",
            "127.0.0.1:38429",
            "admin*",
            "paused",
            "peer-window",
            "27.7s",
            "123.4K",
            "5.9K",
            "0.54",
            "2.5M",
        ])];
        let short = vec![row([
            "1",
            "127.0.0.1:38429",
            "admin*",
            "paused",
            "peer-window",
            "28s",
            "123K",
            "6K",
            "0.54",
            "3M",
        ])];
        (full, short)
    }

    fn names(c: &Columns) -> Vec<&'static str> {
        c.shown.iter().map(|s| COLUMNS[s.column]).collect()
    }

    #[test]
    fn at_160_columns_everything_shows_in_full() {
        let (full, short) = rows();
        let c = columns(&full, &short, 160);
        assert_eq!(names(&c), COLUMNS);
        assert!(c.shown.iter().all(|s| !s.short));
        assert_eq!(c.shown[PEER].width, 15, "the widest peer");
        assert_eq!(c.shown[AGE].width, 5, "27.7s, wider than its name");
        assert_eq!(c.shown[ID].width, 2, "its name, wider than 1");
    }

    #[test]
    fn at_80_columns_the_rates_and_the_peer_give_way_to_the_bar() {
        let (full, short) = rows();
        let c = columns(&full, &short, 80);
        assert_eq!(
            names(&c),
            ["id", "svc", "state", "limit", "age", "rtt_ms", "owed"]
        );
        assert!(c.part >= MIN_PART, "{c:?}");
        let used: usize = c.shown.iter().map(|s| s.width + 1).sum::<usize>() + HIGHLIGHT;
        assert!(used + bar_width(c.part) <= 80, "{c:?}");
    }

    #[test]
    fn narrower_a_number_switches_to_its_short_form_before_it_goes() {
        let (full, short) = rows();
        let at = |width| columns(&full, &short, width);
        let age = |c: &Columns| c.shown.iter().find(|s| s.column == AGE).copied();
        // Somewhere between 80 and 40 columns, age is short, then gone;
        // it is never narrower than its short form.
        let mut seen_short = false;
        for width in (40..=80).rev() {
            let c = at(width);
            match age(&c) {
                Some(s) if s.short => {
                    seen_short = true;
                    assert_eq!(s.width, 3, "28s");
                }
                Some(s) => assert!(!seen_short && s.width == 5, "at {width}: {c:?}"),
                None => assert!(seen_short, "age went at {width} before it was short"),
            }
            let used: usize = c.shown.iter().map(|s| s.width + 1).sum::<usize>() + HIGHLIGHT;
            assert!(used + bar_width(c.part) <= width, "fits {width}: {c:?}");
            assert!(c.part >= MIN_PART, "at {width}: {c:?}");
        }
        assert!(seen_short);
        assert_eq!(names(&at(40)), ["id", "svc", "owed"]);
    }

    #[test]
    fn a_column_no_narrower_for_its_short_form_shows_in_full() {
        let (full, short) = rows();
        for width in [40, 50, 60] {
            let c = columns(&full, &short, width);
            let owed = c.shown.iter().find(|s| s.column == OWED).unwrap();
            assert!(!owed.short, "2.5M is as wide as 'owed': at {width}: {c:?}");
        }
    }

    #[test]
    fn the_bar_grows_with_the_room_up_to_its_most() {
        let (full, short) = rows();
        assert_eq!(columns(&full, &short, 1000).part, MAX_PART);
        // Too narrow for anything but the id: the bar takes what is left.
        let tiny = columns(&full, &short, 20);
        assert_eq!(names(&tiny), ["id"]);
        assert_eq!(tiny.part, 2);
    }

    #[test]
    fn no_rows_size_columns_by_their_names() {
        let none: Vec<Vec<String>> = Vec::new();
        let c = columns(&none, &none, 160);
        assert_eq!(c.shown[PEER].width, 4);
    }

    #[test]
    fn fields_wrap_whole() {
        assert_eq!(wrap(&[3, 3, 3], 20, 2), vec![0..3]);
        assert_eq!(wrap(&[3, 3, 3], 8, 2), [0..2, 2..3]);
        assert_eq!(wrap(&[3, 3, 3], 7, 2), [0..1, 1..2, 2..3]);
        assert_eq!(wrap(&[30, 3], 10, 2), [0..1, 1..2], "too wide: alone");
        assert!(wrap(&[], 10, 2).is_empty());
    }

    #[test]
    fn choosing_by_priority_skips_what_does_not_fit() {
        // Widths 6, 10, 4; the last first, then the first, then the middle.
        let chosen = choose(&[6, 10, 4], &[2, 0, 1], 12, 2);
        assert_eq!(chosen, [true, false, true]);
        assert_eq!(choose(&[6, 10, 4], &[1, 0, 2], 10, 2), [false, true, false]);
        assert_eq!(
            choose(&[1, 1], &[0, 4, 1], 10, 0),
            [true, true],
            "4 ignored"
        );
    }

    #[test]
    fn lines_go_to_the_footer_the_table_the_pane_then_the_header() {
        // 24 lines; header groups of 2, 2, 2, 2, 1 in priority 0, 1, 4, 2, 3.
        let groups = [2, 2, 2, 2, 1];
        let priority = [0, 1, 4, 2, 3];
        let h = heights(24, &groups, &priority, 3, None);
        assert_eq!(h.groups, [true; 5]);
        assert_eq!(h.table, 24 - 1 - 9);
        assert_eq!(h.detail, 0);
        // Open, with two lines of figures: the header gives way, last in
        // priority first.
        let h = heights(20, &groups, &priority, 3, Some(2));
        assert_eq!(h.detail, 2 + 2 + 5);
        assert_eq!(h.groups, [true, true, false, false, true]);
        assert_eq!(h.table, 20 - 1 - 9 - 5, "the line left over");
        assert_eq!(h.layer_lines, 1);
        // Taller: the sparklines get two lines each.
        let h = heights(40, &groups, &priority, 3, Some(2));
        assert_eq!((h.detail, h.layer_lines), (14, 2));
        assert_eq!(h.groups, [true; 5]);
        assert_eq!(h.table + h.detail + 9 + 1, 40);
        // The title does not fit: nothing below it in priority shows.
        let h = heights(7, &[3, 1], &[0, 1], 3, None);
        assert_eq!(h.groups, [false, false]);
        // Too small for everything: the footer and the table first.
        let h = heights(3, &groups, &priority, 10, Some(2));
        assert_eq!((h.table, h.detail), (2, 0));
        assert_eq!(h.groups, [false; 5]);
    }
}
