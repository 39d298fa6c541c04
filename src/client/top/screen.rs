//! The full-screen view of `top`, with `ratatui` on `crossterm`.
//!
//! [`draw`] turns a [`Top`] into a frame and does nothing else (the tests
//! draw into ratatui's in-memory backend); [`command_for`] turns a key
//! into a [`Command`]. [`run`] owns the terminal: raw mode and the
//! alternate screen on the way in, and restoring both on the way out, on
//! an error, and from a panic hook. Snapshots are read on a thread of their
//! own (the read blocks) and handed over on a channel; the loop waits for a
//! key at most [`TICK`] at a time, so a snapshot is shown within that.

use std::io::{self, Stdout};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::Duration;

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{cursor, execute, terminal};
use ratatui::Frame;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell as TableCell, HighlightSpacing, Paragraph, Row, Sparkline, Table,
    TableState,
};

use super::model::{Cell, Command, Layer, Shown, Snapshot, Sort, Top, bar};
use super::text::{self, COLUMNS};
use super::{Feed, top_for};
use crate::client::ClientError;

/// Longest wait for a key before looking for a new snapshot: short enough
/// that a 50 ms interval still shows every snapshot.
pub const TICK: Duration = Duration::from_millis(25);

/// The key's command, if it has one; `page` is how many rows the table
/// showed last, what PageUp and PageDown move by. Ctrl-C quits too: raw
/// mode turns it into a key rather than a signal.
pub fn command_for(key: KeyEvent, page: usize) -> Option<Command> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return (key.code == KeyCode::Char('c')).then_some(Command::Quit);
    }
    Some(match key.code {
        KeyCode::Char('o') => Command::Sort(Sort::Owed),
        KeyCode::Char('r') => Command::Sort(Sort::Rate),
        KeyCode::Char('a') => Command::Sort(Sort::Age),
        KeyCode::Char('t') => Command::Sort(Sort::Rtt),
        KeyCode::Char('f') => Command::CycleFilter,
        KeyCode::Char(' ') => Command::TogglePause,
        KeyCode::Up | KeyCode::Char('k') => Command::Up,
        KeyCode::Down | KeyCode::Char('j') => Command::Down,
        KeyCode::PageUp => Command::PageUp(page),
        KeyCode::PageDown => Command::PageDown(page),
        KeyCode::Home | KeyCode::Char('g') => Command::Home,
        KeyCode::End | KeyCode::Char('G') => Command::End,
        KeyCode::Enter => Command::Open,
        KeyCode::Esc => Command::Close,
        KeyCode::Char('q') => Command::Quit,
        _ => return None,
    })
}

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

fn legend() -> Line<'static> {
    let mut spans = vec![Span::raw("bar: ")];
    for layer in Layer::ALL {
        spans.push(Span::styled(
            layer.glyph().to_string(),
            Style::new().fg(color(layer)).add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::raw(format!(" {}  ", layer.name())));
    }
    spans.push(Span::raw(
        "(parts scaled to SO_RCVBUF | recv buffer | send buffer | SO_SNDBUF)",
    ));
    Line::from(spans)
}

const WIDTHS: [u16; 10] = [5, 21, 7, 9, 11, 6, 7, 7, 7, 7];
const HIGHLIGHT: &str = "> ";
/// Rows the detail pane takes: a line of TCP figures, two per layer and
/// the border.
const DETAIL_HEIGHT: u16 = 1 + 2 * 5 + 2;
const LABEL_WIDTH: u16 = 34;

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

/// Draws the whole view; `status` is a line for the footer (an error, or
/// the server having closed).
pub fn draw(frame: &mut Frame<'_>, top: &Top, addr: &str, status: Option<&str>, view: &mut View) {
    let header: Vec<Line<'_>> = text::header_lines(top, addr)
        .into_iter()
        .map(Line::from)
        .chain([legend()])
        .collect();
    let detail = if top.detail { DETAIL_HEIGHT } else { 0 };
    let [head, table, pane, foot] = Layout::vertical([
        Constraint::Length(header.len() as u16),
        Constraint::Min(3),
        Constraint::Length(detail),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header), head);
    draw_table(frame, top, table, view);
    if top.detail {
        draw_detail(frame, top, pane);
    }
    let keys = "o owed  r rate  a age  t rtt  f filter  space pause  ↑↓ select  Enter detail  Esc close  q quit";
    let footer = match status {
        Some(status) => Line::from(vec![
            Span::styled(
                status.to_string(),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
            Span::raw("  q quits"),
        ]),
        None => Line::from(Span::styled(keys, Style::new().add_modifier(Modifier::DIM))),
    };
    frame.render_widget(Paragraph::new(footer), foot);
}

fn draw_table(frame: &mut Frame<'_>, top: &Top, area: Rect, view: &mut View) {
    let rows = top.rows();
    let fixed: u16 = WIDTHS.iter().sum::<u16>() + WIDTHS.len() as u16 + HIGHLIGHT.len() as u16;
    // Four parts, three separators and the brackets.
    let part_width =
        (usize::from(area.width.saturating_sub(fixed)).saturating_sub(5) / 4).clamp(2, 16);
    let names = COLUMNS.iter().zip(text::NUMERIC).map(|(name, numeric)| {
        let line = Line::from(*name);
        TableCell::from(if numeric { line.right_aligned() } else { line })
    });
    let header = Row::new(names.chain([TableCell::from("bar")]))
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let body = rows.iter().map(|shown| {
        let mut cells: Vec<TableCell<'_>> = text::cells(shown)
            .into_iter()
            .zip(text::NUMERIC)
            .map(|(cell, numeric)| {
                let line = Line::from(cell);
                TableCell::from(if numeric { line.right_aligned() } else { line })
            })
            .collect();
        cells.push(TableCell::from(bar_line(shown, part_width)));
        Row::new(cells)
    });
    let mut widths: Vec<Constraint> = WIDTHS.iter().map(|w| Constraint::Length(*w)).collect();
    widths.push(Constraint::Fill(1));
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

fn draw_detail(frame: &mut Frame<'_>, top: &Top, area: Rect) {
    let Some(shown) = top.selected_row() else {
        return;
    };
    let r = shown.row;
    let history = top.history(&r.key());
    let samples = history.map_or(0, |h| h.len());
    let span = history.map_or(0.0, |h| h.span_secs());
    let title = format!(
        " connection {} {} ({}) {} {}, last {} ({})  Esc closes ",
        r.id,
        r.peer,
        r.service,
        r.state,
        r.limit,
        text::duration(span),
        text::count(samples as u64, "sample")
    );
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let mut constraints = vec![Constraint::Length(1)];
    constraints.extend([Constraint::Length(2); 5]);
    let lines = Layout::vertical(constraints).split(inner);
    let tcp = r.tcp.unwrap_or_default();
    let n = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let info = format!(
        "rtt {} ms (var {})  cwnd {}  ssthresh {}  mss {}  peer window {}  unacked {}  retrans {}  in {}  out {}",
        text::rtt(tcp.rtt_us),
        text::rtt(tcp.rttvar_us),
        n(tcp.snd_cwnd),
        text::ssthresh(tcp.snd_ssthresh),
        n(tcp.snd_mss),
        n(tcp.snd_wnd),
        n(tcp.unacked),
        n(tcp.total_retrans),
        text::bytes(r.bytes_in),
        text::bytes(r.bytes_out),
    );
    frame.render_widget(Paragraph::new(info), lines[0]);
    let layers = r.layers();
    for (i, layer) in Layer::ALL.into_iter().enumerate() {
        let [label, spark] =
            Layout::horizontal([Constraint::Length(LABEL_WIDTH), Constraint::Fill(1)])
                .areas(lines[i + 1]);
        let series = history.map(|h| h.series(layer)).unwrap_or_default();
        let peak = series.iter().copied().max().unwrap_or(0);
        let cap = layers.capacity_of(layer);
        let label_text = vec![
            Line::from(Span::styled(
                format!("{} {}", layer.glyph(), layer.name()),
                Style::new().fg(color(layer)).add_modifier(Modifier::BOLD),
            )),
            Line::from(format!(
                "  now {} peak {} of {}",
                text::bytes(layers.of(layer)),
                text::bytes(peak),
                cap.map_or_else(|| "?".to_string(), text::bytes)
            )),
        ];
        frame.render_widget(Paragraph::new(label_text), label);
        // The newest samples that fit, scaled to the layer's capacity so
        // a full buffer reads as full.
        let from = series.len().saturating_sub(usize::from(spark.width));
        let max = cap.filter(|c| *c > 0).unwrap_or(peak).max(1);
        let widget = Sparkline::default()
            .data(&series[from..])
            .max(max)
            .style(Style::new().fg(color(layer)));
        frame.render_widget(widget, spark);
    }
}

/// Leaves raw mode and the alternate screen; safe to call twice.
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
}

/// Restores the terminal when dropped: on return, on `?`, and on unwind.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        restore();
    }
}

fn enter() -> io::Result<(Restore, Terminal<CrosstermBackend<Stdout>>)> {
    // A panic message printed on the alternate screen in raw mode would be
    // lost and leave the terminal unusable: restore first, then report.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
    terminal::enable_raw_mode()?;
    let guard = Restore;
    execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)?;
    let terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    Ok((guard, terminal))
}

/// Reads snapshots on a thread until the feed fails; the channel ends
/// with that failure.
fn spawn_reader(mut feed: Feed) -> Receiver<Result<Snapshot, ClientError>> {
    let (tx, rx) = mpsc::sync_channel(4);
    std::thread::spawn(move || {
        loop {
            let next = feed.next_snapshot();
            let failed = next.is_err();
            if tx.send(next).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// The live view until `q`. A failed feed (the server closed) stays on
/// screen with its reason until `q`, and is then returned, for `main` to
/// print once the terminal is back.
pub fn run(feed: Feed, addr: &str) -> Result<(), ClientError> {
    let mut top = top_for(&feed);
    let snapshots = spawn_reader(feed);
    let (guard, mut terminal) =
        enter().map_err(|e| ClientError::new(format!("cannot set up the terminal: {e}")))?;
    let mut failure: Option<ClientError> = None;
    let mut view = View::default();
    let mut dirty = true;
    let result = loop {
        if failure.is_none() {
            loop {
                match snapshots.try_recv() {
                    Ok(Ok(snapshot)) => top.apply(snapshot),
                    Ok(Err(e)) => failure = Some(e),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        failure
                            .get_or_insert_with(|| ClientError::new("the snapshot reader stopped"));
                    }
                }
                dirty = true;
                if failure.is_some() {
                    break;
                }
            }
        }
        if dirty {
            let status = failure.as_ref().map(|e| format!("error: {e}"));
            if let Err(e) = terminal.draw(|f| draw(f, &top, addr, status.as_deref(), &mut view)) {
                break Err(ClientError::new(format!("cannot draw: {e}")));
            }
            dirty = false;
        }
        match event::poll(TICK).and_then(|ready| {
            if ready {
                event::read().map(Some)
            } else {
                Ok(None)
            }
        }) {
            Ok(Some(Event::Key(key))) => {
                if let Some(command) = command_for(key, view.page) {
                    dirty = true;
                    if !top.command(command) {
                        break failure.map_or(Ok(()), Err);
                    }
                }
            }
            Ok(Some(Event::Resize(..))) => dirty = true,
            Ok(_) => {}
            Err(e) => break Err(ClientError::new(format!("cannot read the terminal: {e}"))),
        }
    };
    drop(terminal);
    drop(guard);
    result
}

#[cfg(test)]
mod tests {
    use super::super::model::tests::{line, row_json};
    use super::*;
    use ratatui::backend::TestBackend;

    fn screen(top: &Top, status: Option<&str>) -> String {
        let mut terminal = Terminal::new(TestBackend::new(160, 40)).unwrap();
        terminal
            .draw(|f| draw(f, top, "127.0.0.1:7999", status, &mut View::default()))
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
        let text = screen(&top, None);
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
            lines[6].contains("|RRRRRRRRRRRRRR|SSSSSSSSSSSSSS|"),
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
        let text = screen(&top, None);
        assert!(
            text.contains("connection 1 127.0.0.1:4001 (echo) reading idle, last 1.8s (8 samples)"),
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
        assert!(!screen(&top, None).contains("connection 1 "));
    }

    #[test]
    fn a_failure_shows_in_the_footer() {
        let text = screen(&busy_top(), Some("error: connection closed by server"));
        assert!(
            text.lines()
                .last()
                .unwrap()
                .starts_with("error: connection closed by server  q quits")
        );
    }

    #[test]
    fn keys_map_to_commands() {
        let key = |code| KeyEvent::new(code, KeyModifiers::NONE);
        assert_eq!(
            command_for(key(KeyCode::Char('o')), 10),
            Some(Command::Sort(Sort::Owed))
        );
        assert_eq!(
            command_for(key(KeyCode::Char('t')), 10),
            Some(Command::Sort(Sort::Rtt))
        );
        assert_eq!(command_for(key(KeyCode::Enter), 10), Some(Command::Open));
        assert_eq!(command_for(key(KeyCode::Esc), 10), Some(Command::Close));
        assert_eq!(command_for(key(KeyCode::Char('x')), 10), None);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(command_for(ctrl_c, 10), Some(Command::Quit));
    }

    /// The screen at `width` x `height`, a string per line.
    fn screen_at(top: &Top, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal
            .draw(|f| draw(f, top, "127.0.0.1:7999", None, &mut View::default()))
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

    #[test]
    fn paging_keys_map_to_a_page_of_the_table() {
        let key = |code| KeyEvent::new(code, KeyModifiers::NONE);
        assert_eq!(
            command_for(key(KeyCode::PageDown), 7),
            Some(Command::PageDown(7))
        );
        assert_eq!(
            command_for(key(KeyCode::PageUp), 7),
            Some(Command::PageUp(7))
        );
        assert_eq!(command_for(key(KeyCode::Home), 7), Some(Command::Home));
        assert_eq!(command_for(key(KeyCode::End), 7), Some(Command::End));
    }
}
