//! One client connection: its socket, its two bounded buffers, its readiness
//! hints and its phase, and the turn that moves bytes between them.
//!
//! A turn reads from the socket into the receive buffer, lets the service turn
//! input into output, and writes the send buffer to the socket, until nothing
//! moves, the socket would block, or the turn's byte budget is spent. It never
//! registers or closes the socket: it tells the reactor what to do next.
//!
//! Readiness is edge-triggered, so the connection remembers what the last
//! event said (`readable`, `writable`) and clears a hint only when the socket
//! proves it stale (`WouldBlock`, or a short read). A connection that stops
//! early, because its budget ran out or its receive buffer was full, keeps the
//! hint and must be driven again without waiting for a new edge.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

use log::{debug, trace};
use mio::net::TcpStream;

use crate::buffer::{BufPool, ByteBuf, SharedQueue};
use crate::service::{Effect, Io, Next, Service, ServiceConfig, ServiceKind};
use crate::stats::CloseReason;

/// Bytes a connection may read plus write in one turn. Past it the connection
/// is queued again behind the others, so that a bulk transfer cannot starve a
/// thousand interactive clients; large enough that a bulk transfer still
/// moves in big steps.
pub const TURN_BUDGET: usize = 256 * 1024;

/// The two buffer pools, one per buffer size.
#[derive(Debug)]
pub struct Pools {
    pub recv: BufPool,
    pub send: BufPool,
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading requests and answering them.
    Open,
    /// The service is finished: input is discarded, what is owed is sent.
    Draining,
    /// Everything was sent and our side is shut: waiting for the client to
    /// close its side, so that closing the socket cannot turn late input into
    /// a reset that destroys replies still in flight.
    Closing,
}

/// What the reactor should do with a connection after its turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Wait for the next readiness event.
    Wait,
    /// The budget ran out with work left: drive it again soon.
    Requeue,
    /// Our side is shut; close when the client closes, or after a linger.
    Linger,
    /// Close the socket now.
    Close(CloseReason),
}

/// The result of one turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TurnReport {
    pub next: Verdict,
    pub bytes_in: usize,
    pub bytes_out: usize,
}

/// One accepted client.
#[derive(Debug)]
pub struct Connection {
    pub socket: TcpStream,
    pub peer: SocketAddr,
    pub kind: ServiceKind,
    service: Service,
    /// Received bytes the service has not consumed; bounded by `--recv-buf`.
    pub recv: ByteBuf,
    /// Bytes produced and not yet taken by the kernel; bounded by
    /// `--send-buf`.
    pub send: ByteBuf,
    /// Output shared with other connections (chat lines), sent after
    /// `send`; `send` and this together stay within `--send-buf`.
    pub shared: SharedQueue,
    pub phase: Phase,
    /// The socket may have bytes to read (last event said so, and no read has
    /// seen it empty since).
    pub readable: bool,
    /// The socket may take bytes (as `readable`, for writes).
    pub writable: bool,
    /// An event said the client closed its side: a short read then is not
    /// the end of the data, so read on until a read returns 0.
    pub peer_closing: bool,
    /// A read returned 0: the client sent everything it will send.
    pub eof: bool,
    /// Reading is paused by backpressure: the send buffer filled up, and
    /// reading resumes only once it drains below its low watermark.
    pub paused: bool,
    /// The socket ran dry after the last read, and the service has not been
    /// told yet.
    burst_end_pending: bool,
    /// Sitting in the reactor's ready queue.
    pub queued: bool,
    /// No more input is read (shutdown), though a service still producing
    /// output (a download) runs to its end.
    input_stopped: bool,
    /// The cause counted when this connection closes without an error.
    pub close_reason: CloseReason,
    pub opened: Instant,
    pub last_active: Instant,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Connection {
    /// A connection for an accepted socket, with empty buffers that hold no
    /// storage yet.
    pub fn new(
        socket: TcpStream,
        peer: SocketAddr,
        kind: ServiceKind,
        recv_buf: usize,
        send_buf: usize,
        now: Instant,
    ) -> Connection {
        Connection {
            socket,
            peer,
            kind,
            service: Service::new(kind),
            recv: ByteBuf::new(recv_buf),
            send: ByteBuf::new(send_buf),
            shared: SharedQueue::default(),
            phase: Phase::Open,
            readable: false,
            writable: false,
            peer_closing: false,
            eof: false,
            paused: false,
            burst_end_pending: false,
            queued: false,
            input_stopped: false,
            close_reason: CloseReason::Peer,
            opened: now,
            last_active: now,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// Below this many buffered bytes, a paused connection reads again. A gap
    /// between pausing (full) and resuming stops the connection from
    /// flapping between the two on every small write.
    pub fn low_watermark(&self) -> usize {
        (self.send.capacity() / 4).max(1)
    }

    /// Ends the conversation: input from now on is discarded, what is owed
    /// is sent, then the connection closes, counted as `reason`.
    pub fn begin_close(&mut self, reason: CloseReason) {
        self.close_reason = reason;
        if self.phase == Phase::Open {
            self.phase = Phase::Draining;
            self.recv.clear();
        }
    }

    /// Reads no more input, but lets a service that is producing output
    /// finish it (shutdown: a download in progress is owed in full).
    pub fn stop_input(&mut self) {
        self.input_stopped = true;
    }

    /// The state the admin view shows: reading, paused (by backpressure, or
    /// a download waiting for its send buffer to drain),
    /// draining (sending what is owed before closing) or closing (our side
    /// shut, waiting for the client's).
    pub fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Open
                if self.paused
                    || (self.service.is_producing() && self.owed() >= self.low_watermark()) =>
            {
                "paused"
            }
            Phase::Open => "reading",
            Phase::Draining => "draining",
            Phase::Closing => "closing",
        }
    }

    /// Hands the answer to a query back to the service.
    pub fn deliver(&mut self, answer: Vec<u8>) {
        self.service.deliver(answer);
    }

    /// The service has output to produce without further input.
    pub fn is_producing(&self) -> bool {
        self.phase == Phase::Open && self.service.is_producing()
    }

    /// Whether a read now could do anything useful.
    fn wants_read(&self) -> bool {
        self.readable
            && !self.eof
            && match self.phase {
                Phase::Open => !self.input_stopped && !self.paused && !self.recv.is_full(),
                Phase::Draining | Phase::Closing => true,
            }
    }

    /// Moves bytes until nothing more can move, the sockets would block, or
    /// the budget is spent; then says what the reactor should do next.
    /// What the service asks of the reactor is appended to `effects`.
    pub fn turn(
        &mut self,
        key: usize,
        pools: &mut Pools,
        config: &ServiceConfig,
        now: Instant,
        effects: &mut Vec<Effect>,
    ) -> TurnReport {
        let mut report = TurnReport {
            next: Verdict::Wait,
            bytes_in: 0,
            bytes_out: 0,
        };
        report.next = self.turn_inner(key, pools, config, now, effects, &mut report);
        if report.bytes_in + report.bytes_out > 0 {
            self.last_active = now;
        }
        self.bytes_in += report.bytes_in as u64;
        self.bytes_out += report.bytes_out as u64;
        // An idle connection holds no buffer storage.
        self.recv.release(&mut pools.recv);
        self.send.release(&mut pools.send);
        report
    }

    fn turn_inner(
        &mut self,
        key: usize,
        pools: &mut Pools,
        config: &ServiceConfig,
        now: Instant,
        effects: &mut Vec<Effect>,
        report: &mut TurnReport,
    ) -> Verdict {
        loop {
            let before = self.progress_mark(report);

            if self.phase == Phase::Open && self.service_has_work() {
                self.run_service(key, pools, config, now, effects);
            }

            if self.writable && self.owed() > 0 {
                match self.flush(key) {
                    Ok(n) => report.bytes_out += n,
                    Err(e) => return self.fail(key, "write", &e),
                }
            }
            if self.paused && self.owed() <= self.low_watermark() {
                self.paused = false;
                debug!(
                    "conn {key}: resume reading, send buffer {} bytes",
                    self.send.len()
                );
            }

            if self.phase == Phase::Draining && self.owed() == 0 {
                // Everything owed is with the kernel. Shutting the write side
                // sends FIN after it; the kernel delivers it all even after
                // the socket is closed, provided no unread input makes the
                // close a reset.
                match self.socket.shutdown(Shutdown::Write) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                    Err(e) => return self.fail(key, "shutdown", &e),
                }
                // Input may still be in flight: from here on it is read and
                // discarded until the client closes its side.
                self.phase = Phase::Closing;
            }

            if self.wants_read() {
                match self.fill(
                    key,
                    &mut pools.recv,
                    TURN_BUDGET - report.bytes_in.min(TURN_BUDGET),
                ) {
                    Ok(n) => report.bytes_in += n,
                    Err(e) => return self.fail(key, "read", &e),
                }
                if self.phase != Phase::Open {
                    self.recv.clear();
                }
            }
            if self.phase == Phase::Closing && self.eof {
                return Verdict::Close(self.close_reason);
            }

            if report.bytes_in + report.bytes_out >= TURN_BUDGET {
                return Verdict::Requeue;
            }
            if self.progress_mark(report) == before {
                return if self.phase == Phase::Closing {
                    Verdict::Linger
                } else {
                    Verdict::Wait
                };
            }
        }
    }

    /// What changes whenever a step of the turn did something; the turn ends
    /// when a whole pass leaves it unchanged.
    fn progress_mark(&self, report: &TurnReport) -> (usize, usize, usize, usize, Phase, bool) {
        (
            report.bytes_in,
            report.bytes_out,
            self.recv.len(),
            self.owed(),
            self.phase,
            self.eof,
        )
    }

    /// Input to handle, an end of input to act on, or output to produce
    /// now that the send buffer has room for it.
    fn service_has_work(&self) -> bool {
        !self.recv.is_empty()
            || self.eof
            || (self.service.is_producing() && self.owed() < self.low_watermark())
    }

    fn run_service(
        &mut self,
        key: usize,
        pools: &mut Pools,
        config: &ServiceConfig,
        now: Instant,
        effects: &mut Vec<Effect>,
    ) {
        let low_watermark = self.low_watermark();
        let mut io = Io::new(
            &mut self.recv,
            &mut self.send,
            &mut pools.send,
            self.peer,
            now,
        );
        io.burst_end = std::mem::take(&mut self.burst_end_pending);
        io.low_watermark = low_watermark;
        io.eof = self.eof;
        let outcome = self.service.process(&mut io, config);
        if let Some(effect) = outcome.effect {
            effects.push(effect);
        }
        // Only a service that left input waiting for room pauses reading: a
        // download filling the buffer is not backpressure on the client.
        if outcome.output_blocked && !self.paused {
            self.paused = true;
            debug!(
                "conn {key}: pause reading, send buffer full ({} bytes)",
                self.send.len()
            );
        }
        if outcome.next == Next::CloseAfterFlush {
            debug!(
                "conn {key}: service finished, flushing {} bytes",
                self.send.len()
            );
            self.phase = Phase::Draining;
            self.recv.clear();
        }
    }

    /// Reads into the receive buffer until the socket runs dry, the buffer
    /// fills, or `budget` bytes have come in. Returns the bytes read.
    fn fill(&mut self, key: usize, pool: &mut BufPool, budget: usize) -> io::Result<usize> {
        let mut total = 0;
        while total < budget && !self.recv.is_full() {
            let spare = self.recv.spare(pool);
            let asked = spare.len();
            match (&self.socket).read(spare) {
                Ok(0) => {
                    trace!("conn {key}: read 0 bytes (end of input)");
                    self.eof = true;
                    self.readable = false;
                    break;
                }
                Ok(n) => {
                    self.recv.commit(n);
                    total += n;
                    trace!(
                        "conn {key}: read {n} bytes, recv buffer {}/{}",
                        self.recv.len(),
                        self.recv.capacity()
                    );
                    if n < asked && !self.peer_closing {
                        trace!("conn {key}: short read, socket drained");
                        // A short read emptied the kernel's queue; asking
                        // again would only return WouldBlock.
                        self.readable = false;
                        self.burst_end_pending = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    trace!(
                        "conn {key}: read would block, recv buffer {}/{}",
                        self.recv.len(),
                        self.recv.capacity()
                    );
                    self.readable = false;
                    self.burst_end_pending = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Writes the send buffer, then the shared chunks, until both are empty
    /// or the socket would block. Returns the bytes written.
    fn flush(&mut self, key: usize) -> io::Result<usize> {
        let mut total = 0;
        while self.owed() > 0 {
            // The service's own output first, then the shared chunks; each
            // holds whole lines, so the two never split a message.
            let written = if self.send.is_empty() {
                self.shared.write_to(&mut &self.socket)
            } else {
                (&self.socket)
                    .write(self.send.data())
                    .inspect(|&n| self.send.consume(n))
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    total += n;
                    trace!(
                        "conn {key}: wrote {n} bytes, send buffer {}/{}",
                        self.owed(),
                        self.send.capacity()
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    trace!(
                        "conn {key}: write would block, send buffer {}/{}",
                        self.owed(),
                        self.send.capacity()
                    );
                    self.writable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Bytes produced for the client and not yet taken by the kernel: the
    /// send buffer plus the shared chunks queued behind it. Both count
    /// against `--send-buf`.
    pub fn owed(&self) -> usize {
        self.send.len() + self.shared.len()
    }

    /// A last line sent straight to the socket, best effort, before the
    /// connection is dropped (nothing queued will be sent any more).
    pub fn farewell(&mut self, line: &[u8]) {
        self.send.clear();
        self.shared.clear();
        let _ = (&self.socket).write(line);
    }

    /// Queues a chunk shared with other connections, if the send limit
    /// allows; false if it would pass the limit (the receiver is too slow).
    pub fn queue_shared(&mut self, chunk: &Rc<[u8]>) -> bool {
        if self.owed() + chunk.len() > self.send.capacity() {
            return false;
        }
        self.shared.push(Rc::clone(chunk));
        true
    }

    /// The one place socket errors become a close: a reset or any other
    /// error ends this connection, logged at debug, and nothing else.
    fn fail(&self, key: usize, what: &str, error: &io::Error) -> Verdict {
        debug!("conn {key} {}: {what} failed: {error}", self.peer);
        Verdict::Close(CloseReason::Error)
    }
}
