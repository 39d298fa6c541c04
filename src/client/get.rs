//! `tcp-reactor get`: download one file from the files service.
//!
//! Protocol (the `GET` form of the files service): send `GET NAME\n` and
//! half-close; the server answers `OK <size>\n` and exactly `size` bytes, or
//! `ERR <reason>\n`, then closes. A download counts only when exactly `size`
//! bytes arrived and then the server closed: a short or long transfer, a
//! reset or a stall is an error, never a file.
//!
//! Files are written to a hidden temporary file next to the target
//! (`.NAME.part.PID`) and renamed over it only on success, so a failed
//! download leaves neither a partial target nor the temporary file. With
//! an [`Interrupt`] (the command line sets one), SIGINT or SIGTERM is a
//! failure too: the wait for the server's next bytes notices it within
//! [`Interrupt::CHECK_EVERY`], the temporary file is removed, and the error
//! carries the signal for the exit status (130, 143). Only SIGKILL, or a
//! second signal while the first is being handled, can leave the temporary
//! file. An existing target is kept unless `force` is set, and that is
//! checked before the server is contacted.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{ClientError, Interrupt, Target, connect, socket_error};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long `get` waits for the next byte before giving up on a stalled
/// server.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest header line accepted: `ERR ` and a reason that may quote a name
/// of up to 4096 bytes, with room to spare. A server that sends more without
/// a newline is not speaking this protocol, and the client must not buffer
/// it without bound.
pub const HEADER_LIMIT: usize = 4200;

/// Read size, and so the most body bytes handled per step.
const CHUNK: usize = 64 * 1024;

/// What to download, and where to.
#[derive(Clone, Debug)]
pub struct GetOptions {
    pub addr: Target,
    /// The name the server resolves inside its root.
    pub name: String,
    /// Where to save: `None` is the last component of `name` in the current
    /// directory; an existing directory receives that name inside it; `-`
    /// is standard output.
    pub output: Option<PathBuf>,
    /// Replace an existing file.
    pub force: bool,
    /// No progress bar.
    pub quiet: bool,
    /// Longest silence from the server before giving up (non-zero).
    pub idle_timeout: Duration,
    /// SIGINT/SIGTERM, watched while waiting for the server; `None` leaves
    /// signals to the caller.
    pub interrupt: Option<Interrupt>,
}

impl GetOptions {
    /// Options with the defaults: save under the name's last component, keep
    /// existing files, show progress on a terminal, [`IDLE_TIMEOUT`].
    pub fn new(addr: impl Into<Target>, name: impl Into<String>) -> GetOptions {
        GetOptions {
            addr: addr.into(),
            name: name.into(),
            output: None,
            force: false,
            quiet: false,
            idle_timeout: IDLE_TIMEOUT,
            interrupt: None,
        }
    }
}

/// A finished download.
#[derive(Clone, Debug)]
pub struct GetSummary {
    pub bytes: u64,
    /// Where the file was saved; `None` for standard output.
    pub path: Option<PathBuf>,
    /// From the connect call until the server closed.
    pub elapsed: Duration,
}

impl fmt::Display for GetSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "saved '{}': ", path.display())?,
            None => write!(f, "wrote to stdout: ")?,
        }
        let secs = self.elapsed.as_secs_f64();
        let mib = self.bytes as f64 / (1024.0 * 1024.0);
        write!(
            f,
            "{} bytes ({mib:.1} MiB) in {secs:.2} s ({:.1} MiB/s)",
            self.bytes,
            mib / secs.max(1e-9)
        )
    }
}

/// Downloads `opts.name` to the file or stream `opts.output` names.
pub fn get(opts: &GetOptions) -> Result<GetSummary, ClientError> {
    check_name(&opts.name)?;
    let started = Instant::now();
    if opts.output.as_deref() == Some(Path::new("-")) {
        let stdout = io::stdout();
        let mut sink = stdout.lock();
        let bytes = download(opts, &mut sink)?;
        sink.flush()
            .map_err(|e| ClientError::new(format!("cannot write to stdout: {e}")))?;
        return Ok(GetSummary {
            bytes,
            path: None,
            elapsed: started.elapsed(),
        });
    }

    let target = target_path(&opts.name, opts.output.as_deref())?;
    check_target(&target, opts.force)?;
    let mut part = PartFile::create(&target)?;
    // On any failure `part` is dropped here, which removes its file.
    let bytes = download(opts, &mut part).map_err(|e| match opts.interrupt {
        Some(_) if e.exit_code() != 1 => e.and("; the partial file was removed"),
        _ => e,
    })?;
    part.commit(opts.force)?;
    Ok(GetSummary {
        bytes,
        path: Some(target),
        elapsed: started.elapsed(),
    })
}

/// Downloads `opts.name` into `sink` (`output` and `force` are not used) and
/// returns the byte count. `sink` may have received bytes even on error; the
/// caller decides what to keep.
pub fn download(opts: &GetOptions, sink: &mut dyn Write) -> Result<u64, ClientError> {
    check_name(&opts.name)?;
    let mut stream = connect(&opts.addr)?;
    if let Some(interrupt) = &opts.interrupt {
        interrupt.check()?;
    }
    // Reads wake at least every CHECK_EVERY to look for a signal; the idle
    // timeout is counted across them.
    stream
        .set_read_timeout(Some(opts.idle_timeout.min(Interrupt::CHECK_EVERY)))
        .and_then(|()| stream.set_write_timeout(Some(opts.idle_timeout)))
        .map_err(|e| socket_error(&e))?;
    let request = format!("GET {}\n", opts.name);
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.shutdown(Shutdown::Write))
        .map_err(|e| socket_error(&e))?;

    let mut receiver = Receiver {
        stream,
        idle_timeout: opts.idle_timeout,
        interrupt: opts.interrupt.clone(),
        buf: vec![0; CHUNK],
    };
    let (size, header_end, filled) = receiver.header(&opts.name)?;
    let progress = progress_bar(size, !opts.quiet && io::stderr().is_terminal());
    let result = receiver.body(size, header_end, filled, sink, &progress);
    progress.finish_and_clear();
    result?;
    Ok(size)
}

/// The name goes on one request line: a line break would end it early.
fn check_name(name: &str) -> Result<(), ClientError> {
    if name.is_empty() {
        return Err(ClientError::new("the file name is empty"));
    }
    if name.contains(['\n', '\r']) {
        return Err(ClientError::new(format!(
            "the file name {name:?} contains a line break"
        )));
    }
    Ok(())
}

/// Where to save `name`: `output`, or inside it if it is a directory, or the
/// last component of `name` in the current directory.
fn target_path(name: &str, output: Option<&Path>) -> Result<PathBuf, ClientError> {
    let base = || {
        Path::new(name)
            .file_name()
            .map(PathBuf::from)
            .ok_or_else(|| {
                ClientError::new(format!(
                    "'{name}' has no file name to save as (use -o PATH)"
                ))
            })
    };
    match output {
        None => base(),
        Some(dir) if dir.is_dir() => Ok(dir.join(base()?)),
        Some(path) => Ok(path.to_path_buf()),
    }
}

/// Refuses to replace an existing file without `force`, and never replaces a
/// directory. A dangling symlink counts as existing.
fn check_target(target: &Path, force: bool) -> Result<(), ClientError> {
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ClientError::new(format!(
            "cannot check {}: {e}",
            target.display()
        ))),
        Ok(meta) if meta.is_dir() => Err(ClientError::new(format!(
            "{} is a directory",
            target.display()
        ))),
        Ok(_) if force => Ok(()),
        Ok(_) => Err(exists_error(target)),
    }
}

fn exists_error(target: &Path) -> ClientError {
    ClientError::new(format!(
        "{} exists (use --force to overwrite)",
        target.display()
    ))
}

/// A temporary file beside the target. Its name is removed on drop, which
/// after a commit is a no-op (rename) or drops the spare link (hard link).
struct PartFile {
    file: File,
    path: PathBuf,
    target: PathBuf,
}

impl PartFile {
    fn create(target: &Path) -> Result<PartFile, ClientError> {
        // `target_path` and `check_target` guarantee a file name.
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let path = target.with_file_name(format!(".{name}.part.{}", std::process::id()));
        // The error names the file the user asked for: the temporary name
        // is ours, and means nothing to them.
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| ClientError::new(format!("cannot write {}: {e}", target.display())))?;
        Ok(PartFile {
            file,
            path,
            target: target.to_path_buf(),
        })
    }

    /// Moves the finished file to the target. Without `force`, a hard link
    /// makes "create only if absent" atomic, so a file that appeared during
    /// the download is not replaced; where hard links are unsupported, the
    /// target is checked again just before the rename.
    fn commit(self, force: bool) -> Result<(), ClientError> {
        let failed =
            |e: io::Error| ClientError::new(format!("cannot save {}: {e}", self.target.display()));
        if force {
            fs::rename(&self.path, &self.target).map_err(failed)?;
        } else {
            match fs::hard_link(&self.path, &self.target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(exists_error(&self.target));
                }
                Err(_) => {
                    check_target(&self.target, false)?;
                    fs::rename(&self.path, &self.target).map_err(failed)?;
                }
            }
        }
        Ok(())
    }
}

impl Write for PartFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn progress_bar(size: u64, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    bar.set_style(progress_style());
    bar
}

/// Bytes so far and in all, rate and time left.
/// The progress line: bytes so far of the total, a bar, the rate and the
/// time left.
const PROGRESS_TEMPLATE: &str =
    "{bytes}/{total_bytes} [{wide_bar}] {binary_bytes_per_sec} ETA {eta}";

fn progress_style() -> ProgressStyle {
    ProgressStyle::with_template(PROGRESS_TEMPLATE)
        // A literal, checked by the unit test below.
        .expect("valid progress template")
        .progress_chars("=> ")
}

/// The reading half of a download.
struct Receiver {
    /// Its read timeout is at most [`Interrupt::CHECK_EVERY`].
    stream: TcpStream,
    idle_timeout: Duration,
    interrupt: Option<Interrupt>,
    /// Holds the header and any body bytes that came with it, then each
    /// chunk of body in turn.
    buf: Vec<u8>,
}

impl Receiver {
    /// Reads into `buf[from..]`; 0 means the server closed. Fails after
    /// `idle_timeout` without a byte, or when a signal arrived.
    fn read(&mut self, from: usize) -> Result<usize, ClientError> {
        let deadline = Instant::now() + self.idle_timeout;
        loop {
            if let Some(interrupt) = &self.interrupt {
                interrupt.check()?;
            }
            match self.stream.read(&mut self.buf[from..]) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A read timeout is `WouldBlock` on Unix, `TimedOut` on Windows.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() < deadline {
                        continue;
                    }
                    return Err(ClientError::new(format!(
                        "server sent nothing for {} s",
                        self.idle_timeout.as_secs_f64()
                    )));
                }
                Err(e) => return Err(socket_error(&e)),
            }
        }
    }

    /// Reads the header line; returns the announced size, the offset of the
    /// first body byte in `buf`, and how much of `buf` is filled.
    fn header(&mut self, name: &str) -> Result<(u64, usize, usize), ClientError> {
        let mut filled = 0;
        let line_end = loop {
            let n = self.read(filled)?;
            if n == 0 {
                return Err(ClientError::new(if filled == 0 {
                    "server closed the connection without answering".to_string()
                } else {
                    format!(
                        "server closed the connection in the middle of its answer {}",
                        quote(&self.buf[..filled])
                    )
                }));
            }
            let searched = filled;
            filled += n;
            if let Some(i) = self.buf[searched..filled].iter().position(|&b| b == b'\n') {
                break searched + i;
            }
            if filled >= HEADER_LIMIT {
                return Err(ClientError::new(format!(
                    "server sent no header line in {HEADER_LIMIT} bytes"
                )));
            }
        };
        if line_end >= HEADER_LIMIT {
            return Err(ClientError::new(format!(
                "server sent no header line in {HEADER_LIMIT} bytes"
            )));
        }
        let line = &self.buf[..line_end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let size = parse_header(line, name)?;
        Ok((size, line_end + 1, filled))
    }

    /// Copies exactly `size` body bytes to `sink` (the first of them are
    /// already in `buf[start..filled]`), then requires the server to close.
    fn body(
        &mut self,
        size: u64,
        start: usize,
        filled: usize,
        sink: &mut dyn Write,
        progress: &ProgressBar,
    ) -> Result<(), ClientError> {
        let mut got = 0u64;
        let (mut start, mut filled) = (start, filled);
        loop {
            let n = (filled - start) as u64;
            if got + n > size {
                return Err(ClientError::new(format!(
                    "server sent more than the {size} bytes it announced"
                )));
            }
            sink.write_all(&self.buf[start..filled])
                .map_err(|e| ClientError::new(format!("cannot write the output: {e}")))?;
            got += n;
            progress.inc(n);
            start = 0;
            filled = self.read(0)?;
            if filled == 0 {
                break;
            }
        }
        if got < size {
            return Err(ClientError::new(format!(
                "short transfer: got {got} of {size} bytes"
            )));
        }
        sink.flush()
            .map_err(|e| ClientError::new(format!("cannot write the output: {e}")))
    }
}

/// `OK <size>` gives the size; `ERR <reason>` is the server's refusal.
fn parse_header(line: &[u8], name: &str) -> Result<u64, ClientError> {
    if let Some(size) = line.strip_prefix(b"OK ") {
        let size = std::str::from_utf8(size).ok().and_then(|s| s.parse().ok());
        return size
            .ok_or_else(|| ClientError::new(format!("server sent a bad size: {}", quote(line))));
    }
    if line == b"ERR" || line.starts_with(b"ERR ") {
        let reason = String::from_utf8_lossy(&line[3..]);
        let reason = match reason.trim() {
            "" => "no reason given",
            reason => reason,
        };
        return Err(ClientError::new(format!(
            "server refused '{name}': {reason}"
        )));
    }
    Err(ClientError::new(format!(
        "server does not speak the files protocol; it answered {}",
        quote(line)
    )))
}

/// Peer bytes for an error line: escaped, and cut short, so they cannot
/// spoil the terminal or run on for kilobytes.
fn quote(bytes: &[u8]) -> String {
    const MAX: usize = 60;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
    let more = if bytes.len() > MAX { "..." } else { "" };
    format!("\"{}{more}\"", text.escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_give_a_size_or_the_server_reason() {
        assert_eq!(parse_header(b"OK 0", "a"), Ok(0));
        assert_eq!(parse_header(b"OK 12345678901", "a"), Ok(12_345_678_901));
        assert_eq!(
            parse_header(b"ERR not found", "a/b").unwrap_err().message(),
            "server refused 'a/b': not found"
        );
        assert_eq!(
            parse_header(b"ERR", "x").unwrap_err().message(),
            "server refused 'x': no reason given"
        );
        for bad in [&b"OK"[..], b"OK -1", b"OK 1x", b"hello", b"ERRNO"] {
            assert!(parse_header(bad, "x").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_default_target_is_the_last_component_of_the_name() {
        assert_eq!(target_path("a/b/c.txt", None), Ok(PathBuf::from("c.txt")));
        assert_eq!(target_path("c.txt", None), Ok(PathBuf::from("c.txt")));
        assert!(target_path("..", None).is_err());
        assert_eq!(
            target_path("a/c.txt", Some(Path::new("out.bin"))),
            Ok(PathBuf::from("out.bin"))
        );
    }

    #[test]
    fn the_progress_template_parses_and_shows_bytes_rate_and_eta() {
        assert!(ProgressStyle::with_template(PROGRESS_TEMPLATE).is_ok());
        for key in ["{bytes}", "{total_bytes}", "_per_sec}", "{eta}"] {
            assert!(PROGRESS_TEMPLATE.contains(key), "{key}");
        }
    }

    #[test]
    fn names_with_line_breaks_are_refused() {
        assert!(check_name("a\nb").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("ok name.txt").is_ok());
    }

    #[test]
    fn quoted_peer_bytes_are_escaped_and_bounded() {
        assert_eq!(quote(b"a\x1b[2J"), "\"a\\u{1b}[2J\"");
        assert!(quote(&[b'x'; 500]).len() < 70);
    }
}
