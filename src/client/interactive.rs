//! `tcp-reactor client`: the notes' line client, done properly.
//!
//! Every line of input is sent with a `\n`, and everything the server sends
//! is shown as soon as it arrives, not only after the next line is typed.
//! Text is sent and shown in the chosen encoding: with `gbk`, input (UTF-8)
//! is encoded to GBK and the server's GBK is decoded to UTF-8 by a streaming
//! decoder, so a character split across two reads still comes out whole.
//! With `utf-8`, bytes pass through untouched.
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
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::thread;

use encoding_rs::{CoderResult, Decoder};

use super::{ClientError, connect, socket_error};
use crate::text::Encoding;

/// Where to connect, and the encoding of the text on the wire.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    pub addr: SocketAddr,
    pub encoding: Encoding,
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
    let socket = connect(opts.addr)?;
    let sender_socket = socket
        .try_clone()
        .map_err(|e| ClientError::new(format!("cannot share the connection: {e}")))?;
    let (events, sender_events) = mpsc::channel();
    let encoding = opts.encoding;
    thread::Builder::new()
        .name("client-input".to_string())
        .spawn(move || send_lines(BufReader::new(input), sender_socket, encoding, &events))
        .map_err(|e| ClientError::new(format!("cannot start the input thread: {e}")))?;

    show_replies(socket, encoding, &mut output)?;

    // The server has closed. Whatever the sender reported happened before
    // that close was seen, except for the race documented on `SendFailed`
    // below.
    match sender_events.try_recv() {
        Ok(SenderEvent::InputEnded) => Ok(Ended::InputEnded),
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

/// Copies the socket to `output` until the server closes.
fn show_replies(
    mut socket: TcpStream,
    encoding: Encoding,
    output: &mut dyn Write,
) -> Result<(), ClientError> {
    let mut decoder = match encoding {
        Encoding::Utf8 => None,
        Encoding::Gbk => Some(encoding_rs::GBK.new_decoder_without_bom_handling()),
    };
    let mut text = String::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let (bytes, last) = match socket.read(&mut buf) {
            Ok(0) => (&buf[..0], true),
            Ok(n) => (&buf[..n], false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(socket_error(&e)),
        };
        let shown = match decoder.as_mut() {
            Some(decoder) => {
                decode(decoder, bytes, last, &mut text);
                text.as_bytes()
            }
            None => bytes,
        };
        output
            .write_all(shown)
            .and_then(|()| output.flush())
            .map_err(|e| ClientError::new(format!("cannot write the output: {e}")))?;
        if last {
            return Ok(());
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

/// The sender thread: each input line, encoded, with `\n`; at the end of
/// input, a half-close. Reports how it ended on `events` before acting on
/// it, so the calling thread knows by the time the server's close arrives.
fn send_lines(
    mut input: impl BufRead,
    mut socket: TcpStream,
    encoding: Encoding,
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
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let mut wire = match encoding {
            Encoding::Utf8 => std::mem::take(&mut line),
            Encoding::Gbk => encoding.encode(&String::from_utf8_lossy(&line)),
        };
        wire.push(b'\n');
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
}
