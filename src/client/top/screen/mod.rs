//! The full-screen view of `top`, with `ratatui` on `crossterm`.
//!
//! [`draw`] turns a [`Top`] into a frame and does nothing else (the tests
//! draw into ratatui's in-memory backend); what fits where is decided by
//! [`layout`](super::layout), so that nothing is shown cut at any size. [`View`] is what
//! the screen keeps between frames (the table's scroll, its page);
//! [`command_for`] turns a key into a [`Command`]. [`run`] owns the
//! terminal: raw mode and the alternate screen on the way in, and
//! restoring both on the way out, on an error (the server gone ends the
//! view at once, see [`take_snapshots`]), and from a panic hook. Snapshots
//! are read on a thread of their own (the read blocks) and handed over on
//! a channel; the loop waits for a key at most [`TICK`] at a time, so a
//! snapshot is shown within that.
//!
//! The drawing itself is in `draw.rs`; this file holds the keys and the
//! terminal loop.

use std::io::{self, Stdout};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::Duration;

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{cursor, execute, terminal};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

use crate::client::ClientError;
use crate::client::top::model::{Command, Snapshot, Sort, Top};
use crate::client::top::{Feed, top_for};

mod draw;

pub use draw::{View, draw};

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

/// Applies every snapshot waiting on the channel; whether any was. The
/// feed's failure (the server closed or stalled) ends the view: it is
/// returned as the error, at once, with any snapshots before it applied.
pub fn take_snapshots(
    top: &mut Top,
    snapshots: &Receiver<Result<Snapshot, ClientError>>,
) -> Result<bool, ClientError> {
    let mut applied = false;
    loop {
        match snapshots.try_recv() {
            Ok(Ok(snapshot)) => {
                top.apply(snapshot);
                applied = true;
            }
            Ok(Err(e)) => return Err(e),
            Err(TryRecvError::Empty) => return Ok(applied),
            // The reader ends the channel with an error, so this is a
            // reader that panicked.
            Err(TryRecvError::Disconnected) => {
                return Err(ClientError::new("the snapshot reader stopped"));
            }
        }
    }
}

/// The live view until `q`, or until the feed fails: then the terminal is
/// restored at once and the failure returned, for `main` to print as its
/// one line (and exit 1). A view frozen on a server that is gone would
/// only look alive.
pub fn run(feed: Feed, addr: &str) -> Result<(), ClientError> {
    let mut top = top_for(&feed);
    let snapshots = spawn_reader(feed);
    let (guard, mut terminal) =
        enter().map_err(|e| ClientError::new(format!("cannot set up the terminal: {e}")))?;
    let mut view = View::default();
    let mut dirty = true;
    let result = loop {
        match take_snapshots(&mut top, &snapshots) {
            Ok(applied) => dirty |= applied,
            Err(e) => break Err(e),
        }
        if dirty {
            if let Err(e) = terminal.draw(|f| draw(f, &top, addr, &mut view)) {
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
                        break Ok(());
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
    use super::super::model::tests::line;
    use super::*;

    #[test]
    fn regression_the_view_froze_when_the_server_went_away() {
        let (tx, rx) = mpsc::sync_channel(4);
        let mut top = Top::new();
        assert_eq!(take_snapshots(&mut top, &rx), Ok(false), "nothing yet");
        tx.send(Ok(Snapshot::parse(&line(1.0, 1, &[])).unwrap()))
            .unwrap();
        assert_eq!(take_snapshots(&mut top, &rx), Ok(true));
        tx.send(Ok(Snapshot::parse(&line(2.0, 1, &[])).unwrap()))
            .unwrap();
        tx.send(Err(ClientError::new("connection closed by server")))
            .unwrap();
        assert_eq!(
            take_snapshots(&mut top, &rx),
            Err(ClientError::new("connection closed by server")),
            "the failure ends the view"
        );
        assert_eq!(
            top.snapshot().unwrap().stats.uptime_secs,
            2.0,
            "after the last snapshot"
        );
        drop(tx);
        assert_eq!(
            take_snapshots(&mut top, &rx),
            Err(ClientError::new("the snapshot reader stopped"))
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
