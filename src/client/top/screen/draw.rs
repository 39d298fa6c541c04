//! Drawing the full-screen view: [`draw`] turns a [`Top`] into a frame and
//! does nothing else (the tests draw into ratatui's in-memory backend);
//! what fits where is decided by [`layout`]. No terminal I/O here.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell as TableCell, HighlightSpacing, Paragraph, Row, Sparkline, Table,
    TableState,
};

use crate::client::top::layout;
use crate::client::top::model::{Cell, Layer, Shown, Top, bar};
use crate::client::top::text::{self, COLUMNS};

fn color(layer: Layer) -> Color {
    match layer {
        Layer::KernelRecv => Color::Blue,
        Layer::RecvBuf => Color::Cyan,
        Layer::SendBuf => Color::Yellow,
        Layer::Unsent => Color::Red,
        Layer::InFlight => Color::Magenta,
    }
}

/// A connection's bar: each layer's letter in its colour, `·` for room.
fn bar_line(shown: &Shown<'_>, part_width: usize) -> Line<'static> {
    let mut spans = vec![Span::raw("[")];
    for (cell, n) in bar(&shown.row.layers(), part_width) {
        spans.push(match cell {
            Cell::Layer(layer) => Span::styled(
                layer.glyph().to_string().repeat(n),
                Style::new().fg(color(layer)).add_modifier(Modifier::BOLD),
            ),
            Cell::Free => Span::styled("·".repeat(n), Style::new().fg(Color::DarkGray)),
            Cell::Separator => Span::raw("|"),
        });
    }
    spans.push(Span::raw("]"));
    Line::from(spans)
}

const HIGHLIGHT: &str = "> ";
/// Cells the layer names take in the detail pane with two lines a layer.
const LABEL_WIDTH: usize = 34;

/// What the screen keeps between two frames: where the table is scrolled
/// to, and how many rows it showed (a page, for PageUp and PageDown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// The first row shown. Kept, so the table scrolls only when the
    /// selection leaves what is shown, as a pager does.
    pub offset: usize,
    /// Rows the table had room for, its column names aside.
    pub page: usize,
}

/// What the bar's letters mean, as fields that wrap: the last one, the
/// scale, has a short form for a narrow screen.
fn legend(width: usize) -> Vec<Vec<Span<'static>>> {
    let mut fields: Vec<Vec<Span<'static>>> = Layer::ALL
        .into_iter()
        .map(|layer| {
            vec![
                Span::styled(
                    layer.glyph().to_string(),
                    Style::new().fg(color(layer)).add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!(" {}", layer.name())),
            ]
        })
        .collect();
    fields[0].insert(0, Span::raw("bar: "));
    let scale = "(parts scaled to SO_RCVBUF | recv buffer | send buffer | SO_SNDBUF)";
    let scale = if scale.chars().count() <= width {
        scale
    } else {
        "(each part scaled to its limit)"
    };
    fields.push(vec![Span::raw(scale)]);
    fields
}

/// Styled fields laid out in lines of at most `width` cells, two spaces
/// apart, never split (see [`layout::wrap`]). A field wider than a whole
/// line is left out: cut, an address or a figure would read as another.
fn wrapped(fields: &[Vec<Span<'static>>], width: usize) -> Vec<Line<'static>> {
    let cells = |f: &Vec<Span<'static>>| f.iter().map(|s| s.content.chars().count()).sum();
    let fields: Vec<&Vec<Span<'static>>> = fields.iter().filter(|f| cells(f) <= width).collect();
    let widths: Vec<usize> = fields.iter().map(|f| cells(f)).collect();
    layout::wrap(&widths, width, 2)
        .into_iter()
        .map(|range| {
            let mut spans = Vec::new();
            for i in range.clone() {
                if i > range.start {
                    spans.push(Span::raw("  "));
                }
                spans.extend(fields[i].iter().cloned());
            }
            Line::from(spans)
        })
        .collect()
}

fn plain(fields: impl IntoIterator<Item = String>) -> Vec<Vec<Span<'static>>> {
    fields.into_iter().map(|f| vec![Span::raw(f)]).collect()
}

/// The header groups in display order (title, totals, causes, services,
/// legend) and the order they give way in when lines are short: the
/// legend, which `--help` repeats, outlasts the causes and the services.
const HEADER_PRIORITY: [usize; 5] = [0, 1, 4, 2, 3];

/// The footer's keys, in display order, and the order they are kept in
/// when the line is short: quitting, moving and opening first.
const KEYS: [&str; 11] = [
    "o owed",
    "r rate",
    "a age",
    "t rtt",
    "f filter",
    "space pause",
    "↑↓ select",
    "PgUp/PgDn page",
    "Enter detail",
    "Esc close",
    "q quit",
];
const KEY_PRIORITY: [usize; 11] = [10, 6, 8, 4, 0, 1, 2, 3, 5, 7, 9];
/// With the pane open, closing it comes before opening.
const KEY_PRIORITY_OPEN: [usize; 11] = [10, 6, 9, 8, 4, 0, 1, 2, 3, 5, 7];

fn footer(width: usize, open: bool) -> Line<'static> {
    let costs: Vec<usize> = KEYS.iter().map(|k| k.chars().count()).collect();
    let priority = if open {
        &KEY_PRIORITY_OPEN
    } else {
        &KEY_PRIORITY
    };
    let chosen = layout::choose(&costs, priority, width, 2);
    let keys: Vec<&str> = KEYS
        .iter()
        .zip(chosen)
        .filter(|(_, c)| *c)
        .map(|(k, _)| *k)
        .collect();
    Line::from(Span::styled(
        keys.join("  "),
        Style::new().add_modifier(Modifier::DIM),
    ))
}

/// Draws the whole view. Nothing is cut: fields wrap whole, columns
/// give way, and lines are shared out by [`layout::heights`].
pub fn draw(frame: &mut Frame<'_>, top: &Top, addr: &str, view: &mut View) {
    let area = frame.area();
    let width = usize::from(area.width);
    let mut groups: Vec<Vec<Line<'static>>> = text::header_fields(top, addr)
        .iter()
        .map(|group| plain(group.iter().map(|f| f.fitting(width).to_string())))
        .map(|fields| wrapped(&fields, width))
        .collect();
    groups.push(wrapped(&legend(width), width));
    let selected = top.selected_row().filter(|_| top.detail);
    // The pane's inside: its border takes a cell each side.
    let inner = width.saturating_sub(2);
    let figures = selected
        .as_ref()
        .map(|s| wrapped(&plain(detail_figures(top, s)), inner));
    let lines: Vec<usize> = groups.iter().map(Vec::len).collect();
    // Before the first snapshot there are two groups: a line saying so,
    // and the legend.
    let priority: &[usize] = if groups.len() == HEADER_PRIORITY.len() {
        &HEADER_PRIORITY
    } else {
        &[0, 1]
    };
    let heights = layout::heights(
        usize::from(area.height),
        &lines,
        priority,
        top.rows().len(),
        figures.as_ref().map(Vec::len),
    );
    let header: Vec<Line<'static>> = groups
        .into_iter()
        .zip(&heights.groups)
        .filter(|(_, shown)| **shown)
        .flat_map(|(g, _)| g)
        .collect();
    // Top to bottom: header, table, pane; the footer on the last line.
    // Every height fits `area` (layout::heights shares out no more).
    let mut y = area.y;
    let mut take = |n: usize| {
        let n = u16::try_from(n).unwrap_or(u16::MAX);
        let rect = Rect::new(area.x, y, area.width, n).intersection(area);
        y = y.saturating_add(n);
        rect
    };
    let head = take(header.len());
    let table = take(heights.table);
    let pane = take(heights.detail);
    frame.render_widget(Paragraph::new(header), head);
    draw_table(frame, top, table, view);
    if let (Some(shown), Some(figures)) = (selected, figures)
        && heights.detail > 0
    {
        draw_detail(frame, top, &shown, figures, heights.layer_lines, pane);
    }
    if area.height > 0 {
        let foot = Rect::new(area.x, area.bottom() - 1, area.width, 1);
        frame.render_widget(Paragraph::new(footer(width, top.detail)), foot);
    }
}

fn draw_table(frame: &mut Frame<'_>, top: &Top, area: Rect, view: &mut View) {
    let rows = top.rows();
    let full: Vec<[String; 10]> = rows.iter().map(text::cells).collect();
    let short: Vec<[String; 10]> = rows.iter().map(text::short_cells).collect();
    let fit = layout::columns(&full, &short, usize::from(area.width));
    let aligned = |s: String, column: usize| {
        let line = Line::from(s);
        TableCell::from(if text::NUMERIC[column] {
            line.right_aligned()
        } else {
            line
        })
    };
    let names = fit
        .shown
        .iter()
        .map(|c| aligned(COLUMNS[c.column].to_string(), c.column));
    let header = Row::new(names.chain([TableCell::from("bar")]))
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let body = rows.iter().enumerate().map(|(i, shown)| {
        let cells = fit.shown.iter().map(|c| {
            let forms = if c.short { &short[i] } else { &full[i] };
            aligned(forms[c.column].clone(), c.column)
        });
        let bar = TableCell::from(bar_line(shown, fit.part));
        Row::new(cells.chain([bar]))
    });
    let widths = fit
        .shown
        .iter()
        .map(|c| c.width)
        .chain([layout::bar_width(fit.part)])
        .map(|w| Constraint::Length(u16::try_from(w).unwrap_or(u16::MAX)));
    let table = Table::new(body, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol(HIGHLIGHT)
        // The symbol's room is kept with no row selected (an empty
        // table), or the column names would shift left of their columns.
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default()
        .with_offset(view.offset)
        .with_selected(top.selected_index(&rows));
    frame.render_stateful_widget(table, area, &mut state);
    view.offset = state.offset();
    // The column names take a line.
    view.page = usize::from(area.height.saturating_sub(1));
}

/// The detail pane's figures, as fields that wrap: the connection's state,
/// how much history there is, and its TCP_INFO.
fn detail_figures(top: &Top, shown: &Shown<'_>) -> Vec<String> {
    let r = shown.row;
    let history = top.history(&r.key());
    let samples = history.map_or(0, |h| h.len());
    let span = history.map_or(0.0, |h| h.span_secs());
    let tcp = r.tcp.unwrap_or_default();
    let n = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    vec![
        format!("state {}", r.state),
        format!("limit {}", r.limit),
        format!(
            "last {} ({})",
            text::duration(span),
            text::count(samples as u64, "sample")
        ),
        format!(
            "rtt {} ms (var {})",
            text::rtt(tcp.rtt_us),
            text::rtt(tcp.rttvar_us)
        ),
        format!("cwnd {}", n(tcp.snd_cwnd)),
        format!("ssthresh {}", text::ssthresh(tcp.snd_ssthresh)),
        format!("mss {}", n(tcp.snd_mss)),
        format!("peer window {}", n(tcp.snd_wnd)),
        format!("unacked {}", n(tcp.unacked)),
        format!("retrans {}", n(tcp.total_retrans)),
        format!("in {}", text::bytes(r.bytes_in)),
        format!("out {}", text::bytes(r.bytes_out)),
    ]
}

/// Fewest cells a sparkline keeps beside its label before the label
/// drops the layer's name (the letter stays).
const MIN_SPARK: usize = 12;

fn draw_detail(
    frame: &mut Frame<'_>,
    top: &Top,
    shown: &Shown<'_>,
    figures: Vec<Line<'static>>,
    layer_lines: usize,
    area: Rect,
) {
    let r = shown.row;
    let inner_width = usize::from(area.width.saturating_sub(2));
    // The title's parts, kept whole, the id and the service first.
    let parts = [
        format!("connection {}", r.id),
        r.peer.clone(),
        format!("({})", r.service),
        "Esc closes".to_string(),
    ];
    let costs: Vec<usize> = parts.iter().map(|p| p.chars().count()).collect();
    let chosen = layout::choose(&costs, &[0, 2, 1, 3], inner_width.saturating_sub(2), 1);
    let title: Vec<&str> = parts
        .iter()
        .zip(chosen)
        .filter(|(_, c)| *c)
        .map(|(p, _)| p.as_str())
        .collect();
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" {} ", title.join(" ")));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let per_layer = u16::try_from(layer_lines).unwrap_or(1);
    // Short of lines, the figures give way (whole lines) to the layers: a
    // layer left out would read as an empty one.
    let figure_lines = u16::try_from(figures.len())
        .unwrap_or(u16::MAX)
        .min(inner.height.saturating_sub(5 * per_layer));
    let [info, layers_area] =
        Layout::vertical([Constraint::Length(figure_lines), Constraint::Fill(1)]).areas(inner);
    frame.render_widget(Paragraph::new(figures), info);
    let lines = Layout::vertical([Constraint::Length(per_layer); 5]).split(layers_area);
    let layers = r.layers();
    let history = top.history(&r.key());
    let series: Vec<Vec<u64>> = Layer::ALL
        .into_iter()
        .map(|layer| history.map(|h| h.series(layer)).unwrap_or_default())
        .collect();
    let figures_of = |i: usize, layer: Layer| {
        let peak = series[i].iter().copied().max().unwrap_or(0);
        format!(
            "now {} peak {} of {}",
            text::bytes(layers.of(layer)),
            text::bytes(peak),
            layers
                .capacity_of(layer)
                .map_or_else(|| "?".to_string(), text::bytes)
        )
    };
    // Two lines a layer: the name above its figures. One line: both on it,
    // or the letter alone before the figures when the name leaves the
    // sparkline too little room.
    let labels: Vec<Vec<Line<'static>>> = {
        let named: Vec<(Layer, String)> = Layer::ALL
            .into_iter()
            .enumerate()
            .map(|(i, layer)| (layer, figures_of(i, layer)))
            .collect();
        let name = |layer: Layer, with_name: bool| {
            let text = if with_name {
                format!("{} {}", layer.glyph(), layer.name())
            } else {
                layer.glyph().to_string()
            };
            Span::styled(
                text,
                Style::new().fg(color(layer)).add_modifier(Modifier::BOLD),
            )
        };
        if layer_lines >= 2 {
            named
                .into_iter()
                .map(|(layer, f)| vec![Line::from(name(layer, true)), Line::from(format!("  {f}"))])
                .collect()
        } else {
            let longest = named
                .iter()
                .map(|(l, f)| l.name().chars().count() + f.chars().count() + 4)
                .max()
                .unwrap_or(0);
            let with_name = longest + MIN_SPARK <= inner_width;
            named
                .into_iter()
                .map(|(layer, f)| {
                    let sep = if with_name { "  " } else { " " };
                    vec![Line::from(vec![
                        name(layer, with_name),
                        Span::raw(format!("{sep}{f}")),
                    ])]
                })
                .collect()
        }
    };
    let label_width = labels
        .iter()
        .flatten()
        .map(Line::width)
        .max()
        .unwrap_or(0)
        .max(LABEL_WIDTH)
        .min(inner_width) as u16;
    for (i, layer) in Layer::ALL.into_iter().enumerate() {
        let [label, spark] =
            Layout::horizontal([Constraint::Length(label_width + 1), Constraint::Fill(1)])
                .areas(lines[i]);
        frame.render_widget(Paragraph::new(labels[i].clone()), label);
        // The newest samples that fit, scaled to the layer's capacity so
        // a full buffer reads as full.
        let data = &series[i];
        let peak = data.iter().copied().max().unwrap_or(0);
        let from = data.len().saturating_sub(usize::from(spark.width));
        let cap = layers.capacity_of(layer);
        let max = cap.filter(|c| *c > 0).unwrap_or(peak).max(1);
        let widget = Sparkline::default()
            .data(&data[from..])
            .max(max)
            .style(Style::new().fg(color(layer)));
        frame.render_widget(widget, spark);
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::top::model::tests::{line, row_json};
    use crate::client::top::model::{Command, Snapshot};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn screen(top: &Top) -> String {
        let mut terminal = Terminal::new(TestBackend::new(160, 40)).unwrap();
        terminal
            .draw(|f| draw(f, top, "127.0.0.1:7999", &mut View::default()))
            .unwrap();
        let buffer = terminal.backend().buffer();
        let mut out = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                out.push_str(buffer[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    fn busy_top() -> Top {
        let hog = row_json(
            1,
            4001,
            "echo",
            10,
            r#","recv_buf_used":65536,"send_buf_used":65536"#,
        )
        .replace(r#""recv_buf_used":0,"#, "")
        .replace(r#""send_buf_used":0,"#, "");
        let quiet = row_json(2, 4002, "echo", 1, "");
        let own = row_json(0, 4000, "admin", 1, "");
        let mut top = Top::new();
        top.own_peer = Some("127.0.0.1:4000".into());
        for i in 0..8 {
            let rows = [own.clone(), hog.clone(), quiet.clone()];
            top.apply(Snapshot::parse(&line(1.0 + f64::from(i) * 0.25, 3, &rows)).unwrap());
        }
        top
    }

    #[test]
    fn the_screen_has_the_header_a_row_per_connection_and_the_keys() {
        let top = busy_top();
        let text = screen(&top);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("tcp-reactor top 127.0.0.1:7999  uptime 2.8s  3 connections"),
            "{text}"
        );
        assert!(
            lines[4].starts_with("bar: K kernel receive queue"),
            "{text}"
        );
        assert!(
            lines[5].contains("id peer") && lines[5].contains("bar"),
            "{text}"
        );
        // The hog first (most owed), selected, its buffers full.
        assert!(
            lines[6].starts_with("> ") && lines[6].contains("127.0.0.1:4001"),
            "{text}"
        );
        assert!(
            lines[6].contains("|RRRRRRRRRRRRRRRR|SSSSSSSSSSSSSSSS|"),
            "{text}"
        );
        assert!(lines[7].contains("admin*"), "{text}");
        assert!(
            lines[39].contains("o owed") && lines[39].contains("q quit"),
            "{text}"
        );
        assert!(!text.contains("connection 1 "), "no detail pane yet");
    }

    #[test]
    fn enter_opens_the_detail_pane_with_a_sparkline_per_layer() {
        let mut top = busy_top();
        top.command(Command::Open);
        let text = screen(&top);
        assert!(
            text.contains("connection 1 127.0.0.1:4001 (echo) Esc closes"),
            "{text}"
        );
        assert!(
            text.contains("state reading  limit idle  last 1.8s (8 samples)  rtt 0.20 ms"),
            "{text}"
        );
        for layer in Layer::ALL {
            assert!(text.contains(layer.name()), "{} in\n{text}", layer.name());
        }
        assert!(text.contains("now 64.0K peak 64.0K of 64.0K"), "{text}");
        assert!(
            text.contains("████████"),
            "a full buffer's sparkline: {text}"
        );
        top.command(Command::Close);
        assert!(!screen(&top).contains("connection 1 "));
    }
    /// The screen at `width` x `height`, a string per line.
    fn screen_at(top: &Top, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal
            .draw(|f| draw(f, top, "127.0.0.1:7999", &mut View::default()))
            .unwrap();
        let buffer = terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect()
    }

    /// The table's lines: its column names, then a line per row shown.
    fn table_lines(lines: &[String]) -> (usize, Vec<&String>) {
        let at = lines
            .iter()
            .position(|l| l.split_whitespace().any(|w| w == "id") && l.contains("bar"))
            .unwrap_or_else(|| panic!("no column names in\n{}", lines.join("\n")));
        let rows = lines[at + 1..]
            .iter()
            .take_while(|l| {
                l.trim_start()
                    .starts_with(|c: char| c.is_ascii_digit() || c == '>')
            })
            .collect();
        (at, rows)
    }

    #[test]
    fn regression_an_empty_filter_shifted_the_header() {
        let mut top = busy_top();
        let id_at = |top: &Top| {
            let lines = screen_at(top, 160, 40);
            let (at, _) = table_lines(&lines);
            lines[at].find("id").unwrap()
        };
        let with_rows = id_at(&top);
        top.filter = Some("files".into());
        assert!(top.rows().is_empty());
        assert_eq!(id_at(&top), with_rows, "the column names stay put");
    }
    /// A server with what made the view cut things: an age of 27.7 s, an
    /// owed figure in megabytes, rates in kilobytes, a limit of 11
    /// letters, and a connection with the initial (infinite) ssthresh.
    fn crowded_top() -> Top {
        let hog = |bytes: u64| {
            row_json(
                1,
                4001,
                "echo",
                bytes,
                concat!(
                    r#","recv_buf_used":65536,"kernel_recv_queue":65536,"send_buf_used":32768,"#,
                    r#""kernel_send_queue":2626560,"kernel_send_unsent":2600000"#
                ),
            )
            .replace(r#""recv_buf_used":0,"#, "")
            .replace(r#""kernel_recv_queue":0,"#, "")
            .replace(r#""send_buf_used":0,"#, "")
            .replace(r#""kernel_send_queue":0,"kernel_send_unsent":0,"#, "")
            .replace(r#""age_secs":1.5"#, r#""age_secs":27.7"#)
            .replace(
                r#""state":"reading","limit":"idle""#,
                r#""state":"paused","limit":"peer-window""#,
            )
            .replace(
                r#""snd_cwnd":10}"#,
                r#""snd_cwnd":10,"snd_ssthresh":2147483647}"#,
            )
        };
        let own = row_json(0, 4000, "admin", 10, "");
        let idle = row_json(12345, 4002, "echo", 2, "");
        let mut top = Top::new();
        top.own_peer = Some("127.0.0.1:4000".to_string());
        top.apply(Snapshot::parse(&line(1.0, 3, &[own.clone(), hog(0), idle.clone()])).unwrap());
        top.apply(Snapshot::parse(&line(1.25, 3, &[own, hog(3_000_000), idle])).unwrap());
        top
    }

    #[test]
    fn regression_ssthresh_showed_2147483647() {
        let mut top = crowded_top();
        top.command(Command::Home);
        let hog = top.rows().iter().position(|r| r.row.id == 1).unwrap();
        for _ in 0..hog {
            top.command(Command::Down);
        }
        top.command(Command::Open);
        let text = screen_at(&top, 160, 40).join("\n");
        assert!(text.contains("ssthresh ∞"), "{text}");
        assert!(!text.contains("2147483647"), "{text}");
    }

    /// The bar of a table line: its four parts, each of the same width.
    fn bar_parts(row: &str) -> Vec<String> {
        let (Some(open), Some(close)) = (row.find('['), row.rfind(']')) else {
            panic!("no bar in {row:?}");
        };
        let parts: Vec<String> = row[open + 1..close]
            .split('|')
            .map(str::to_string)
            .collect();
        assert_eq!(parts.len(), 4, "four parts in {row:?}");
        let width = parts[0].chars().count();
        assert!(
            parts.iter().all(|p| p.chars().count() == width),
            "parts of one width in {row:?}"
        );
        parts
    }

    #[test]
    fn regression_at_80x24_the_bar_was_cut_off() {
        let top = crowded_top();
        let lines = screen_at(&top, 80, 24);
        let text = lines.join("\n");
        let (_, rows) = table_lines(&lines);
        assert_eq!(rows.len(), 3, "{text}");
        for row in &rows {
            let parts = bar_parts(row);
            assert!(parts[0].chars().count() >= 4, "a readable bar: {row:?}");
        }
        // The hog's: its receive buffer and the send buffers full.
        let hog = rows.iter().find(|r| r.contains("peer-window")).unwrap();
        let parts = bar_parts(hog);
        assert!(parts[1].chars().all(|c| c == 'R'), "{hog:?}");
        assert!(parts[2].starts_with('S'), "{hog:?}");
        assert!(parts[3].chars().all(|c| c == 'U' || c == 'F'), "{hog:?}");
    }

    /// Every word of every table line, the bar aside, is a whole cell of
    /// some row or a whole column name: never a cut one.
    fn assert_nothing_cut(top: &Top, lines: &[String], width: u16) {
        let text = lines.join("\n");
        let mut whole: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
        whole.extend(["bar", ">"].map(String::from));
        for shown in top.rows() {
            whole.extend(text::cells(&shown));
            whole.extend(text::short_cells(&shown));
        }
        let (at, rows) = table_lines(lines);
        for line in std::iter::once(&lines[at]).chain(rows) {
            let before_bar = line.split('[').next().unwrap_or("");
            for word in before_bar.split_whitespace() {
                assert!(
                    whole.iter().any(|w| w == word),
                    "at {width} columns, {word:?} is cut in {line:?}:\n{text}"
                );
            }
        }
    }

    #[test]
    fn regression_numbers_lost_their_leading_digits_at_40_columns() {
        let top = crowded_top();
        for width in [40, 50, 60, 80, 100, 120, 160] {
            let lines = screen_at(&top, width, 24);
            assert_nothing_cut(&top, &lines, width);
            let (_, rows) = table_lines(&lines);
            assert_eq!(rows.len(), 3, "at {width}: {}", lines.join("\n"));
            for row in rows {
                bar_parts(row);
            }
        }
        // Every width from 40 on keeps the bar and cuts nothing.
        for width in 40..=160 {
            let lines = screen_at(&top, width, 24);
            assert_nothing_cut(&top, &lines, width);
        }
    }

    #[test]
    fn the_header_and_the_footer_wrap_or_drop_whole_fields_at_80_columns() {
        let top = crowded_top();
        let lines = screen_at(&top, 80, 24);
        let text = lines.join("\n");
        let header = text::header_lines(&top, "127.0.0.1:7999");
        for line in &header[..2] {
            for field in line.split("  ") {
                assert!(text.contains(field), "{field:?} is cut or missing:\n{text}");
            }
        }
        let footer = lines.last().unwrap();
        assert!(footer.trim_end().ends_with("q quit"), "{text}");
    }

    #[test]
    fn the_detail_pane_fits_80x24_with_its_row_still_shown() {
        let mut top = crowded_top();
        top.command(Command::Open);
        let lines = screen_at(&top, 80, 24);
        let text = lines.join("\n");
        let (_, rows) = table_lines(&lines);
        assert!(
            rows.iter().any(|r| r.starts_with('>')),
            "the selected row shows:\n{text}"
        );
        for layer in Layer::ALL {
            assert!(text.contains(layer.name()), "{} in\n{text}", layer.name());
        }
        assert!(text.contains("ssthresh"), "{text}");
    }

    #[test]
    fn a_short_detail_pane_gives_up_figures_not_layers() {
        let mut top = crowded_top();
        top.command(Command::Open);
        let text = screen_at(&top, 40, 15).join("\n");
        for layer in Layer::ALL {
            assert!(
                text.contains(&format!("│{} now ", layer.glyph())),
                "{} in\n{text}",
                layer.name()
            );
        }
    }

    #[test]
    fn a_header_field_wider_than_the_screen_is_left_out_not_cut() {
        let top = crowded_top();
        let text = screen_at(&top, 30, 24).join("\n");
        // 31 cells, one too many.
        assert!(!text.contains("since start"), "{text}");
        assert!(text.contains("uptime 1.2s"), "{text}");
        // 30 cells: whole at 30 columns, gone at 29.
        assert!(text.contains("tcp-reactor top 127.0.0.1:7999"), "{text}");
        let text = screen_at(&top, 29, 24).join("\n");
        assert!(!text.contains("tcp-reactor top"), "{text}");
        assert!(text.contains("uptime 1.2s"), "{text}");
    }

    #[test]
    fn before_the_first_snapshot_the_screen_says_so() {
        let lines = screen_at(&Top::new(), 80, 24);
        assert_eq!(
            lines[0].trim_end(),
            "tcp-reactor top 127.0.0.1:7999: waiting for the first snapshot"
        );
    }

    #[test]
    fn no_size_is_too_small_to_draw() {
        let mut open = crowded_top();
        open.command(Command::Open);
        for top in [&Top::new(), &crowded_top(), &open] {
            for width in [0, 1, 2, 5, 10, 20, 30] {
                for height in [0, 1, 2, 3, 5, 8, 12] {
                    screen_at(top, width, height);
                }
            }
        }
    }
}
