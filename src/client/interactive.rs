//! `tcp-reactor client`: the notes' line client, done properly.
//!
//! Every line of input is sent with a `\n`, and everything the server sends
//! is shown as soon as it arrives, not only after the next line is typed.
//! Text is sent and shown in the chosen encoding: with `gbk`, input (UTF-8)
//! is encoded to GBK and the server's GBK is decoded to UTF-8 by a streaming
//! decoder, so a character split across two reads still comes out whole.
//! With `utf-8`, bytes pass through untouched, unless they are shown on a
//! terminal.
//!
//! On a terminal ([`Show::Escaped`]) the server's text, decoded the same
//! streaming way (UTF-8 too; malformed bytes become U+FFFD), is shown with
//! its control characters escaped ([`escape_controls`]): on a chat server
//! the bytes are another user's, and raw they could retitle the window or
//! write the clipboard. In a pipe ([`Show::Raw`]) they are passed on as
//! they came, for scripts. Which one is the caller's choice, made once from
//! whether standard output is a terminal ([`Show::for_stdout`]).
//!
//! On a terminal ([`interactive_on_terminal`]) the lines come from
//! `rustyline` instead, with line editing and this session's history, and
//! the server's text is printed above the line being typed. `--crlf` ends
//! lines with CR LF ([`ClientOptions::crlf`]).
//!
//! Two threads share the connection:
//! - the calling thread reads the socket and writes to the output, until the
//!   server closes or the connection fails;
//! - a detached sender thread reads the input and writes the socket. At the
//!   end of input it half-closes, and the calling thread then shows every
//!   remaining byte until the server closes.
//!
//! The sender is the detached one because it may be blocked reading a
//! terminal when the server closes: no portable call interrupts that read.
//! [`interactive`] returns anyway, and the sender ends with the process (or,
//! with an input that ends, when that input next yields a line or EOF and
//! its write fails). That is why the input must be `'static`.

use std::fmt;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::thread;
use std::time::Duration;

use encoding_rs::{CoderResult, Decoder};
use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};
use signal_hook::consts::SIGINT;

use super::{CONNECT_TIMEOUT, ClientError, Target, connect_within, socket_error};
use crate::text::{Encoding, escape_controls};

/// Where to connect, the encoding of the text on the wire, how lines end,
/// and how to show what the server sends.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub addr: Target,
    pub encoding: Encoding,
    pub show: Show,
    /// End each line sent with `\r\n` (a line that already ends so is
    /// not given a second `\r`), for servers that want CRLF.
    pub crlf: bool,
    /// How long each connection attempt may take.
    pub connect_timeout: Duration,
}

impl ClientOptions {
    /// UTF-8, shown raw, lines ending `\n`, [`CONNECT_TIMEOUT`].
    pub fn new(addr: impl Into<Target>) -> ClientOptions {
        ClientOptions {
            addr: addr.into(),
            encoding: Encoding::Utf8,
            show: Show::Raw,
            crlf: false,
            connect_timeout: CONNECT_TIMEOUT,
        }
    }
}

/// How the server's text is written to the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    /// As it came (decoded from GBK with `--encoding gbk`): for a pipe or a
    /// file, where the bytes are data.
    Raw,
    /// Decoded, with control characters but `\n` and `\t` escaped (see
    /// [`escape_controls`]): for a terminal, which would obey them.
    Escaped,
}

impl Show {
    /// [`Show::Escaped`] when standard output is a terminal, else
    /// [`Show::Raw`].
    pub fn for_stdout() -> Show {
        if io::stdout().is_terminal() {
            Show::Escaped
        } else {
            Show::Raw
        }
    }
}

/// How a session ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The input ended; the server then answered everything and closed.
    InputEnded,
    /// The server closed the connection first.
    ServerClosed,
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ended::InputEnded => "end of input; the server closed the connection",
            Ended::ServerClosed => "the server closed the connection",
        })
    }
}

/// What the sender thread saw last.
enum SenderEvent {
    /// Input ended; the write side is being shut down.
    InputEnded,
    /// Reading the input failed; the connection is being shut down.
    InputFailed(io::Error),
    /// Ctrl-C at the line editor; the connection is being shut down.
    Interrupted,
    /// Writing the socket failed.
    SendFailed(io::Error),
}

/// Bytes per socket read: a screenful or so, and shown at once.
const READ_CHUNK: usize = 16 * 1024;

/// Runs a session: sends every line of `input`, shows everything the server
/// sends on `output` (flushed after each read). Returns when the server has
/// closed, whether or not the input has ended.
pub fn interactive(
    opts: &ClientOptions,
    input: impl Read + Send + 'static,
    mut output: impl Write,
) -> Result<Ended, ClientError> {
    let (encoding, ending) = (opts.encoding, LineEnding::new(opts.crlf));
    session(
        opts,
        move |socket, events| send_lines(BufReader::new(input), socket, encoding, ending, &events),
        &mut output,
    )
}

/// Runs a session on a terminal: each line is read with `rustyline` (line
/// editing, and this session's lines as history: Up recalls them), and
/// what the server sends is printed above the line being typed, as soon
/// as it arrives (a read that does not end a line is shown as one). The
/// prompt is [`PROMPT`]; Ctrl-D on an empty line ends the input (a
/// half-close, as at the end of a pipe), Ctrl-C ends the session at once
/// ([`ClientError::interrupted`]).
///
/// The editor puts the terminal in raw mode while it waits for a line. If
/// the server closes meanwhile, this returns with the editor still waiting,
/// so the caller must put the terminal back as it was before it exits
/// ([`crate::sys::terminal_mode`]).
pub fn interactive_on_terminal(opts: &ClientOptions) -> Result<Ended, ClientError> {
    let config = rustyline::Config::builder()
        .auto_add_history(true)
        // A paste of several lines sends them as lines, one by one, as it
        // would in a pipe.
        .bracketed_paste(false)
        .build();
    let editor_error =
        |e: ReadlineError| ClientError::new(format!("cannot edit lines on this terminal: {e}"));
    let mut editor = DefaultEditor::with_config(config).map_err(editor_error)?;
    let printer = editor.create_external_printer().map_err(editor_error)?;
    let (encoding, ending) = (opts.encoding, LineEnding::new(opts.crlf));
    session(
        opts,
        move |socket, events| edit_lines(editor, socket, encoding, ending, &events),
        &mut Printed(printer),
    )
}

/// What the line editor shows before the line being typed.
pub const PROMPT: &str = "> ";

/// Connects, runs `sender` on its own thread with a clone of the socket,
/// and shows the server's bytes on `output` until it closes.
fn session(
    opts: &ClientOptions,
    sender: impl FnOnce(TcpStream, Sender<SenderEvent>) + Send + 'static,
    output: &mut dyn Write,
) -> Result<Ended, ClientError> {
    let socket = connect_within(&opts.addr, opts.connect_timeout)?;
    let sender_socket = socket
        .try_clone()
        .map_err(|e| ClientError::new(format!("cannot share the connection: {e}")))?;
    let (events, sender_events) = mpsc::channel();
    let render = Render::new(opts.encoding, opts.show);
    thread::Builder::new()
        .name("client-input".to_string())
        .spawn(move || sender(sender_socket, events))
        .map_err(|e| ClientError::new(format!("cannot start the input thread: {e}")))?;

    show_replies(socket, render, output)?;

    // The server has closed. Whatever the sender reported happened before
    // that close was seen, except for the race documented on `SendFailed`
    // below.
    match sender_events.try_recv() {
        Ok(SenderEvent::InputEnded) => Ok(Ended::InputEnded),
        Ok(SenderEvent::Interrupted) => Err(ClientError::interrupted(SIGINT)),
        Ok(SenderEvent::InputFailed(e)) => {
            Err(ClientError::new(format!("cannot read the input: {e}")))
        }
        // A reset is reported to whichever call comes first; if the sender
        // took it, the reader saw only the end of the stream.
        Ok(SenderEvent::SendFailed(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
            Err(socket_error(&e))
        }
        Ok(SenderEvent::SendFailed(_)) | Err(_) => Ok(Ended::ServerClosed),
    }
}

/// The line editor's printer as an output: each write (one read from the
/// server, rendered) is printed above the line being edited.
struct Printed<P: ExternalPrinter>(P);

impl<P: ExternalPrinter> Write for Printed<P> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !buf.is_empty() {
            self.0
                .print(String::from_utf8_lossy(buf).into_owned())
                .map_err(io::Error::other)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The sender thread on a terminal: as [`send_lines`], with lines from the
/// editor. Ctrl-C closes the connection both ways, which ends the session.
fn edit_lines(
    mut editor: DefaultEditor,
    mut socket: TcpStream,
    encoding: Encoding,
    ending: LineEnding,
    events: &Sender<SenderEvent>,
) {
    loop {
        let line = match editor.readline(PROMPT) {
            Ok(line) => line,
            Err(ReadlineError::Eof) => {
                let _ = events.send(SenderEvent::InputEnded);
                // Fails only if the connection is already gone, which the
                // calling thread sees for itself.
                let _ = socket.shutdown(Shutdown::Write);
                return;
            }
            Err(ReadlineError::Interrupted) => {
                let _ = events.send(SenderEvent::Interrupted);
                let _ = socket.shutdown(Shutdown::Both);
                return;
            }
            Err(e) => {
                let _ = events.send(SenderEvent::InputFailed(io::Error::other(e)));
                let _ = socket.shutdown(Shutdown::Both);
                return;
            }
        };
        let mut wire = match encoding {
            Encoding::Utf8 => line.into_bytes(),
            Encoding::Gbk => encoding.encode(&line),
        };
        wire.extend_from_slice(ending.bytes());
        if let Err(e) = socket.write_all(&wire) {
            let _ = events.send(SenderEvent::SendFailed(e));
            return;
        }
    }
}

/// Copies the socket to `output`, as `render` shows it, until the server
/// closes.
fn show_replies(
    mut socket: TcpStream,
    mut render: Render,
    output: &mut dyn Write,
) -> Result<(), ClientError> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let (bytes, last) = match socket.read(&mut buf) {
            Ok(0) => (&buf[..0], true),
            Ok(n) => (&buf[..n], false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(socket_error(&e)),
        };
        output
            .write_all(render.shown(bytes, last))
            .and_then(|()| output.flush())
            .map_err(|e| ClientError::new(format!("cannot write the output: {e}")))?;
        if last {
            return Ok(());
        }
    }
}

/// Turns the server's bytes, read by read, into what the output gets.
struct Render {
    /// Present unless bytes pass untouched (UTF-8 in a pipe). It keeps a
    /// character cut at the end of one read until the next, so escaping,
    /// which looks at whole characters, never sees half of one.
    decoder: Option<Decoder>,
    show: Show,
    /// The last read, decoded.
    text: String,
    /// The last read, decoded and escaped (used with [`Show::Escaped`]).
    escaped: String,
}

impl Render {
    fn new(encoding: Encoding, show: Show) -> Render {
        let decoder = match (encoding, show) {
            (Encoding::Utf8, Show::Raw) => None,
            (Encoding::Utf8, Show::Escaped) => {
                Some(encoding_rs::UTF_8.new_decoder_without_bom_handling())
            }
            (Encoding::Gbk, _) => Some(encoding_rs::GBK.new_decoder_without_bom_handling()),
        };
        Render {
            decoder,
            show,
            text: String::new(),
            escaped: String::new(),
        }
    }

    /// What to write for `bytes`, the next read; `last` at the end of the
    /// stream, when an unfinished character becomes U+FFFD.
    fn shown<'a>(&'a mut self, bytes: &'a [u8], last: bool) -> &'a [u8] {
        let Some(decoder) = self.decoder.as_mut() else {
            return bytes;
        };
        decode(decoder, bytes, last, &mut self.text);
        match self.show {
            Show::Raw => self.text.as_bytes(),
            Show::Escaped => {
                self.escaped.clear();
                escape_controls(&self.text, &mut self.escaped);
                self.escaped.as_bytes()
            }
        }
    }
}

/// Decodes `bytes` into `text` (cleared first). A character cut at the end
/// of `bytes` stays in the decoder for the next call; with `last`, an
/// unfinished one becomes U+FFFD.
fn decode(decoder: &mut Decoder, mut bytes: &[u8], last: bool, text: &mut String) {
    text.clear();
    loop {
        // `None` only if the length overflows usize; a read is far smaller.
        let room = decoder
            .max_utf8_buffer_length(bytes.len())
            .unwrap_or(bytes.len());
        text.reserve(room);
        let (result, read, _) = decoder.decode_to_string(bytes, text, last);
        bytes = &bytes[read..];
        if result == CoderResult::InputEmpty {
            return;
        }
    }
}

/// How each line sent ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineEnding {
    /// `\n`, after the line exactly as it came (a `\r` before its `\n`
    /// stays): what the client always sent.
    Lf,
    /// `\r\n`, after the line without any `\r\n` or `\n` it ended with.
    CrLf,
}

impl LineEnding {
    fn new(crlf: bool) -> LineEnding {
        if crlf {
            LineEnding::CrLf
        } else {
            LineEnding::Lf
        }
    }

    /// Takes the line's own ending off `line` (as read, `\n` included).
    fn strip(self, line: &mut Vec<u8>) {
        if line.last() == Some(&b'\n') {
            line.pop();
            if self == LineEnding::CrLf && line.last() == Some(&b'\r') {
                line.pop();
            }
        }
    }

    fn bytes(self) -> &'static [u8] {
        match self {
            LineEnding::Lf => b"\n",
            LineEnding::CrLf => b"\r\n",
        }
    }
}

/// The sender thread: each input line, encoded, with its `ending`; at the
/// end of input, a half-close. Reports how it ended on `events` before
/// acting on it, so the calling thread knows by the time the server's close
/// arrives.
fn send_lines(
    mut input: impl BufRead,
    mut socket: TcpStream,
    encoding: Encoding,
    ending: LineEnding,
    events: &Sender<SenderEvent>,
) {
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => {
                let _ = events.send(SenderEvent::InputEnded);
                // Fails only if the connection is already gone, which the
                // calling thread sees for itself.
                let _ = socket.shutdown(Shutdown::Write);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = events.send(SenderEvent::InputFailed(e));
                // Wakes the calling thread, blocked on a read, to report it.
                let _ = socket.shutdown(Shutdown::Both);
                return;
            }
        }
        ending.strip(&mut line);
        let mut wire = match encoding {
            Encoding::Utf8 => std::mem::take(&mut line),
            Encoding::Gbk => encoding.encode(&String::from_utf8_lossy(&line)),
        };
        wire.extend_from_slice(ending.bytes());
        let sent = socket.write_all(&wire);
        if encoding == Encoding::Utf8 {
            // Keep the allocation for the next line.
            line = wire;
        }
        if let Err(e) = sent {
            let _ = events.send(SenderEvent::SendFailed(e));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gbk_character_split_across_reads_decodes_whole() {
        let bytes = Encoding::Gbk.encode("收到请求\n");
        for split in 0..=bytes.len() {
            let mut decoder = encoding_rs::GBK.new_decoder_without_bom_handling();
            let mut text = String::new();
            let mut all = String::new();
            decode(&mut decoder, &bytes[..split], false, &mut text);
            all.push_str(&text);
            decode(&mut decoder, &bytes[split..], false, &mut text);
            all.push_str(&text);
            decode(&mut decoder, &[], true, &mut text);
            all.push_str(&text);
            assert_eq!(all, "收到请求\n", "split at {split}");
        }
    }

    #[test]
    fn an_unfinished_gbk_character_at_the_end_is_replaced() {
        let mut decoder = encoding_rs::GBK.new_decoder_without_bom_handling();
        let mut text = String::new();
        decode(&mut decoder, &[b'a', 0xca], false, &mut text);
        assert_eq!(text, "a");
        decode(&mut decoder, &[], true, &mut text);
        assert_eq!(text, "\u{fffd}");
    }

    /// Everything `render` shows for `pieces`, read one after another.
    fn render_all(mut render: Render, pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in pieces {
            out.extend_from_slice(render.shown(piece, false));
        }
        out.extend_from_slice(render.shown(&[], true));
        out
    }

    #[test]
    fn a_pipe_gets_the_servers_bytes_untouched() {
        let bytes = b"\x1b]0;title\x07\xc2\x9b2J\xff\r\n";
        let render = Render::new(Encoding::Utf8, Show::Raw);
        assert_eq!(render_all(render, &[bytes]), bytes);
    }

    #[test]
    fn a_terminal_gets_controls_escaped_whatever_the_split() {
        // An OSC 52 clipboard write, a C1 CSI (U+009B as UTF-8: C2 9B), a
        // bare \r and a malformed byte; \n and \t stay as they are.
        let bytes = "\x1b]52;c;aGk=\x07\t\u{9b}2J收\r\n".as_bytes();
        let expected = "\\x1b]52;c;aGk=\\x07\t\\u{9b}2J收\\x0d\n";
        for split in 0..=bytes.len() {
            let render = Render::new(Encoding::Utf8, Show::Escaped);
            let out = render_all(render, &[&bytes[..split], &bytes[split..]]);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "split at {split}"
            );
        }
        let render = Render::new(Encoding::Utf8, Show::Escaped);
        let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(render_all(render, &pieces), expected.as_bytes());
        let render = Render::new(Encoding::Utf8, Show::Escaped);
        assert_eq!(
            render_all(render, &[b"a\xffb\xc2"]),
            "a\u{fffd}b\u{fffd}".as_bytes()
        );
    }

    #[test]
    fn a_terminal_gets_gbk_decoded_then_escaped() {
        let mut bytes = Encoding::Gbk.encode("收到");
        bytes.splice(2..2, *b"\x1b[2J");
        for split in 0..=bytes.len() {
            let render = Render::new(Encoding::Gbk, Show::Escaped);
            let out = render_all(render, &[&bytes[..split], &bytes[split..]]);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "收\\x1b[2J到",
                "split at {split}"
            );
        }
        let render = Render::new(Encoding::Gbk, Show::Raw);
        assert_eq!(render_all(render, &[&bytes]), "收\x1b[2J到".as_bytes());
    }
}
