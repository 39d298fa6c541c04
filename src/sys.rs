//! System calls the standard library and `mio` do not offer: listening
//! sockets with a deep (or a chosen) accept backlog, optional `SO_REUSEPORT`,
//! TCP keepalive, congestion control and `TCP_NOTSENT_LOWAT`, the kernel queue ioctls, the two directory-relative opens
//! (`openat2`, `openat`) the files service resolves names with, and the
//! directory reads of its `LIST` walk (`getdents64`, and `fstatat` where an
//! entry's record has no type); the descriptor limit (`RLIMIT_NOFILE`); the
//! raw calls the log sink makes on standard error (what kind of file it is,
//! a private non-blocking open of it, a zero-wait `poll` for `POLLOUT`, a
//! `write` or a `send` that cannot block); a pseudo-terminal, for the tests
//! that stand in for a stalled terminal; saving and restoring a terminal's
//! settings, for the interactive client; and the clock tick the process
//! figures are counted in.
//!
//! Every `unsafe` of the crate is here, each behind a safe function; no
//! policy (what to open, what a failure means) is decided here.

use std::ffi::CStr;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Accept backlog requested for listeners unless `--backlog` says
/// otherwise (the kernel caps it at `net.core.somaxconn`). `mio`'s default
/// of 128 overflows when a thousand clients connect at once, and each
/// overflow costs that client a one-second SYN retransmission.
pub const LISTEN_BACKLOG: i32 = 4096;

/// A non-blocking listener on `addr`, with `SO_REUSEADDR` (so a restarted
/// server can bind while old connections sit in TIME_WAIT), and with
/// `SO_REUSEPORT` when `reuse_port` (so several processes can share the port
/// and the kernel spreads connections between them). An IPv6 address listens
/// on IPv6 only, so that `[::]` and `0.0.0.0` can be separate listeners.
///
/// `so_rcvbuf` / `so_sndbuf` set the kernel buffer sizes on the listener, so
/// every accepted socket inherits them from its first packet: the receive
/// size must be known before the handshake, which fixes the TCP window
/// scale, so setting it on the accepted socket would be too late.
///
/// `backlog` is what `listen(2)` asks for: the longest accept queue of
/// handshakes completed but not yet accepted; the kernel caps it at
/// `net.core.somaxconn`.
pub fn listener(
    addr: SocketAddr,
    reuse_port: bool,
    so_rcvbuf: Option<usize>,
    so_sndbuf: Option<usize>,
    backlog: i32,
) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if let Some(size) = so_rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(size) = so_sndbuf {
        socket.set_send_buffer_size(size)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Seconds between two keepalive probes once the first went unanswered.
/// With [`KEEPALIVE_PROBES`], a peer that vanished is given up about a
/// minute after the first probe: long enough to ride out a short outage,
/// short beside the idle time before probing starts (Redis sends its
/// probes a third of its 300 s apart, Linux's default is 75 s x 9).
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

/// Unanswered probes after which the kernel resets the connection.
pub const KEEPALIVE_PROBES: u32 = 4;

/// Largest idle time TCP_KEEPIDLE takes on Linux (`MAX_TCP_KEEPIDLE`).
pub const MAX_KEEPALIVE_IDLE_SECS: u64 = 32_767;

/// Turns on TCP keepalive for the sockets `listener` accepts: SO_KEEPALIVE,
/// with the first probe after `idle` without traffic, then
/// [`KEEPALIVE_PROBES`] more [`KEEPALIVE_INTERVAL`] apart. Set on the
/// listener, since Linux copies these options to every socket it accepts
/// (as nginx's `listen ... so_keepalive=` does): no system call per
/// connection. The tests read the options back from an accepted socket.
pub fn keepalive(listener: &impl AsFd, idle: std::time::Duration) -> io::Result<()> {
    let params = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    SockRef::from(listener).set_tcp_keepalive(&params)
}

/// Sets the congestion control algorithm (TCP_CONGESTION) of the sockets
/// `listener` accepts, by setting it on the listener: Linux copies it to
/// every socket it accepts, so no system call per connection (the tests read
/// it back from an accepted socket). The option is read back after setting,
/// and a kernel that reports another algorithm is an error: a silent
/// fallback would make every figure measured under the flag a lie.
pub fn congestion(listener: &impl AsFd, algorithm: &str) -> io::Result<()> {
    let s = SockRef::from(listener);
    s.set_tcp_congestion(algorithm.as_bytes()).map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            io::Error::new(
                e.kind(),
                "not permitted: without CAP_NET_ADMIN only the algorithms in \
                 /proc/sys/net/ipv4/tcp_allowed_congestion_control may be set",
            )
        } else {
            e
        }
    })?;
    let now = congestion_of(listener)?;
    if now != algorithm {
        return Err(io::Error::other(format!(
            "TCP_CONGESTION {algorithm} reads back as {now}"
        )));
    }
    Ok(())
}

/// The congestion control algorithm of `socket` (TCP_CONGESTION).
pub fn congestion_of(socket: &impl AsFd) -> io::Result<String> {
    let name = SockRef::from(socket).tcp_congestion()?;
    // The kernel fills a fixed-size field and pads the name with NULs.
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// Sets TCP_NOTSENT_LOWAT on `listener`, which Linux copies to every
/// socket it accepts: a socket with more than `bytes` not yet sent is not
/// writable, so unsent bytes wait in the server's buffer, where flow
/// control sees them, rather than in the kernel's. Read back after setting.
pub fn notsent_lowat(listener: &impl AsFd, bytes: u32) -> io::Result<()> {
    let s = SockRef::from(listener);
    s.set_tcp_notsent_lowat(bytes)?;
    let now = notsent_lowat_of(listener)?;
    if now != bytes {
        return Err(io::Error::other(format!(
            "TCP_NOTSENT_LOWAT {bytes} reads back as {now}"
        )));
    }
    Ok(())
}

/// TCP_NOTSENT_LOWAT of `socket` (Linux reports `u32::MAX` when unset).
pub fn notsent_lowat_of(socket: &impl AsFd) -> io::Result<u32> {
    SockRef::from(socket).tcp_notsent_lowat()
}

/// The keepalive idle time of `socket`, or `None` when SO_KEEPALIVE is off.
pub fn keepalive_idle(socket: &impl AsFd) -> io::Result<Option<std::time::Duration>> {
    let s = SockRef::from(socket);
    if !s.keepalive()? {
        return Ok(None);
    }
    s.tcp_keepalive_time().map(Some)
}

/// Makes closing `socket` send a reset (SO_LINGER with a zero timeout), and
/// drop whatever it still holds: for a transfer that cannot complete, so
/// the client cannot mistake a truncated answer for a whole one.
pub fn reset_on_close(socket: &impl AsFd) -> io::Result<()> {
    SockRef::from(socket).set_linger(Some(std::time::Duration::ZERO))
}

/// Bytes in the kernel's send queue of `socket`: sent but not yet
/// acknowledged, plus not yet sent (ioctl SIOCOUTQ, which is TIOCOUTQ).
pub fn send_queue(socket: &impl AsRawFd) -> io::Result<usize> {
    int_ioctl(socket, libc::TIOCOUTQ)
}

/// Bytes in the kernel's receive queue of `socket` not yet read (ioctl
/// SIOCINQ, which is FIONREAD).
pub fn recv_queue(socket: &impl AsRawFd) -> io::Result<usize> {
    int_ioctl(socket, libc::FIONREAD)
}

/// Bytes in the kernel's send queue not yet sent at all (ioctl
/// SIOCOUTQNSD): the rest of [`send_queue`] is sent and waiting for the
/// peer's acknowledgement.
pub fn send_queue_unsent(socket: &impl AsRawFd) -> io::Result<usize> {
    int_ioctl(socket, libc::SIOCOUTQNSD as libc::Ioctl)
}

/// Runs an ioctl that reports one `int`.
fn int_ioctl(socket: &impl AsRawFd, request: libc::Ioctl) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    // SAFETY: each request passed here (FIONREAD, TIOCOUTQ, SIOCOUTQNSD)
    // writes exactly one c_int through the pointer, which points at a live
    // c_int; the fd stays open for the duration of the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), request, &mut value) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(value).unwrap_or(0))
}

/// SO_RCVBUF and SO_SNDBUF as the kernel reports them (Linux doubles what
/// setsockopt asked for).
pub fn buffer_sizes(socket: &impl AsFd) -> (Option<usize>, Option<usize>) {
    let s = SockRef::from(socket);
    (s.recv_buffer_size().ok(), s.send_buffer_size().ok())
}

/// `sendfile(2)`: up to `count` bytes from `file` (from its current offset,
/// which it advances) to `socket`. `Ok(0)` means the file ended first.
pub fn sendfile(socket: &impl AsRawFd, file: BorrowedFd<'_>, count: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are open for the call; a null offset
        // makes the kernel use and advance the file's own offset.
        let rc = unsafe {
            libc::sendfile(
                socket.as_raw_fd(),
                file.as_raw_fd(),
                std::ptr::null_mut(),
                count,
            )
        };
        if rc >= 0 {
            // Non-negative and at most `count`.
            return Ok(rc as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `getsockopt(TCP_INFO)` on `socket`: the kernel's `struct tcp_info` and
/// how many of its bytes the kernel filled (an older kernel fills a
/// shorter one). The observe module reads the fields from it.
pub fn tcp_info(socket: &impl AsRawFd) -> io::Result<(libc::tcp_info, usize)> {
    // SAFETY: `tcp_info` is plain integers, for which all zeros is valid.
    let mut raw: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `raw` is a live `tcp_info` and `len` its size; the kernel
    // writes at most `len` bytes into it and stores the length it wrote.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut raw).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((raw, len as usize))
}

/// `openat2(2)`: opens `path` relative to the directory `dir` with `flags`
/// (`O_CLOEXEC` is always added) and the `RESOLVE_*` bits of `resolve`. An
/// `ENOSYS` error means the kernel (before 5.6) lacks the call; a sandbox's
/// seccomp filter may answer `EPERM` instead. Retried on `EINTR`.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    // SAFETY: `open_how` is plain integers, for which all zeros is valid
    // (and is what the kernel requires of the fields not set here). The
    // struct is `non_exhaustive`, so it cannot be built by a literal.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    loop {
        // SAFETY: `path` is NUL-terminated and `how` is a live `open_how`
        // whose size is passed with it; both outlive the call, which only
        // reads them. `dir` is an open fd borrowed for the call. On
        // success the kernel returns a new fd that nothing else owns.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &raw const how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if let Some(fd) = new_fd(rc as libc::c_int)? {
            return Ok(fd);
        }
    }
}

/// `openat(2)`: opens `path` relative to the directory `dir` with `flags`
/// (`O_CLOEXEC` is always added). Retried on `EINTR`.
pub fn openat(dir: BorrowedFd<'_>, path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: `path` is NUL-terminated and outlives the call; `dir` is
        // an open fd borrowed for the call; no mode is read without
        // O_CREAT, which callers here never pass. On success the kernel
        // returns a new fd that nothing else owns.
        let rc = unsafe { libc::openat(dir.as_raw_fd(), path.as_ptr(), flags | libc::O_CLOEXEC) };
        if let Some(fd) = new_fd(rc)? {
            return Ok(fd);
        }
    }
}

/// What a directory entry is, as its record or `fstatat` says. Nothing is
/// followed: a symlink is `Other`, whatever it points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Other,
    /// The file system does not say in the record (`DT_UNKNOWN`): ask
    /// [`kind_at`].
    Unknown,
}

/// One record of a [`read_dir_entries`] buffer: the entry's name (never
/// empty, never containing `/` or NUL; `.` and `..` included) and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirEntry<'a> {
    pub name: &'a CStr,
    pub kind: EntryKind,
}

/// Offsets in the kernel's `struct linux_dirent64`: `d_ino` (u64),
/// `d_off` (i64), `d_reclen` (u16), `d_type` (u8), then `d_name`,
/// NUL-terminated and padded to the record's length.
const DIRENT_RECLEN: usize = 16;
const DIRENT_TYPE: usize = 18;
const DIRENT_NAME: usize = 19;

/// `getdents64(2)`: reads the next entries of the directory open as `dir`
/// into `buf`, as the kernel's records (take them apart with
/// [`next_dir_entry`]); the bytes filled, 0 at the directory's end. A
/// buffer too small for one record (a name is at most 255 bytes, so 280
/// always does) is `EINVAL`. Retried on `EINTR`.
pub fn read_dir_entries(dir: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length describe one live, writable
        // slice, of which the kernel writes at most `buf.len()` bytes; the
        // borrowed fd stays open for the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if rc >= 0 {
            // Non-negative and at most `buf.len()`.
            return Ok(rc as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The first record of `records` (what [`read_dir_entries`] filled, or the
/// rest of it) and its length, by which to advance; `None` when no whole
/// record is left. Safe code over bytes: a malformed record ends the buffer
/// rather than reading past it.
pub fn next_dir_entry(records: &[u8]) -> Option<(DirEntry<'_>, usize)> {
    let reclen_bytes = records.get(DIRENT_RECLEN..DIRENT_RECLEN + 2)?;
    let reclen = usize::from(u16::from_ne_bytes([reclen_bytes[0], reclen_bytes[1]]));
    let record = records.get(..reclen)?;
    let name = CStr::from_bytes_until_nul(record.get(DIRENT_NAME..)?).ok()?;
    if name.is_empty() {
        return None;
    }
    let kind = match record[DIRENT_TYPE] {
        libc::DT_DIR => EntryKind::Dir,
        libc::DT_REG => EntryKind::File,
        libc::DT_UNKNOWN => EntryKind::Unknown,
        _ => EntryKind::Other,
    };
    Some((DirEntry { name, kind }, reclen))
}

/// `fstatat(2)` with `AT_SYMLINK_NOFOLLOW`: the kind of `name` in the
/// directory `dir`, for the file systems whose records say
/// [`EntryKind::Unknown`].
pub fn kind_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<EntryKind> {
    // SAFETY: `stat` is plain integers, for which all zeros is valid.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `name` is NUL-terminated and `stat` a live `stat`, both
        // outliving the call, which writes only `stat`; the borrowed fd
        // stays open for the call.
        let rc = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &raw mut stat,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(match stat.st_mode & libc::S_IFMT {
        libc::S_IFDIR => EntryKind::Dir,
        libc::S_IFREG => EntryKind::File,
        _ => EntryKind::Other,
    })
}

/// Takes ownership of the fd an open call returned: `Ok(None)` to retry
/// after `EINTR`, the error for any other failure.
fn new_fd(rc: libc::c_int) -> io::Result<Option<OwnedFd>> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(None)
        } else {
            Err(e)
        };
    }
    // SAFETY: `rc` is a fresh fd just returned by the kernel to this
    // thread and handed to no one else, so this is its only owner.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(rc) }))
}

/// Whether `fd` can take a write without blocking, waiting at most
/// `timeout_ms` milliseconds (0: just ask; negative: no limit, which the
/// crate never passes). `POLLERR` and `POLLHUP` count as ready: a write then
/// fails at once (`EPIPE` for a pipe whose reader is gone), and that error is
/// what the caller needs to see. A closed fd (`POLLNVAL`) is `EBADF`.
pub fn poll_writable(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1; the borrowed fd stays open for the
    // duration of the call.
    let rc = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if pollfd.revents & libc::POLLNVAL != 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(pollfd.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0)
}

/// One `write(2)` of `bytes` to `fd`: the count written, or the error
/// (`EAGAIN`, `EINTR` and `EPIPE` included; Rust ignores SIGPIPE, so a
/// closed pipe is an error here, not a signal).
pub fn write_fd(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe one live, initialised slice;
    // write only reads from it; the borrowed fd stays open for the call.
    let rc = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // rc is non-negative here and at most bytes.len().
    Ok(rc as usize)
}

/// The process's descriptor limit, `RLIMIT_NOFILE`: (soft, hard), with
/// `u64::MAX` for no limit.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live rlimit the call fills in.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Sets the soft descriptor limit to `soft`, keeping the hard one. Fails
/// (EINVAL) above the hard limit, which only a privileged process may raise,
/// and (EPERM) above `fs.nr_open`.
pub fn set_nofile_soft(soft: u64) -> io::Result<()> {
    let (_, hard) = nofile_limit()?;
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `limit` is a live rlimit the call only reads.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What kind of file a descriptor names, as far as the log sink cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdKind {
    /// A regular file or a block device: a write never waits for a reader.
    File,
    /// A pipe or FIFO.
    Pipe,
    /// A character device: a terminal, or `/dev/null`.
    CharDevice,
    Socket,
    Other,
}

/// The kind of file `fd` names (`fstat`).
pub fn fd_kind(fd: BorrowedFd<'_>) -> io::Result<FdKind> {
    // SAFETY: `stat` is plain integers, for which all zeros is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live stat the call fills in; the borrowed fd stays
    // open for the call.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match st.st_mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFBLK => FdKind::File,
        libc::S_IFIFO => FdKind::Pipe,
        libc::S_IFCHR => FdKind::CharDevice,
        libc::S_IFSOCK => FdKind::Socket,
        _ => FdKind::Other,
    })
}

/// A new open file description of whatever `fd` names, for writing, with
/// `O_NONBLOCK` (and `O_NOCTTY`, so a terminal never becomes the process's
/// controlling terminal by it): opened through `/proc/self/fd/N`, which for
/// a pipe or a terminal makes a new description of the same pipe or
/// terminal, not a duplicate of `fd`'s. So its non-blocking flag is this
/// process's alone: the shell and every other process writing to the same
/// terminal or pipe keep their blocking writes. Fails with `ENXIO` for a
/// socket, and with `ENOENT` where `/proc` is not mounted.
pub fn reopen_nonblocking(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = libc::O_WRONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    loop {
        // SAFETY: `path` is NUL-terminated and outlives the call; no mode
        // is read without O_CREAT. On success the kernel returns a new fd
        // that nothing else owns.
        let rc = unsafe { libc::open(path.as_ptr(), flags) };
        if let Some(fd) = new_fd(rc)? {
            return Ok(fd);
        }
    }
}

/// One `send(2)` of `bytes` on the socket `fd` with `MSG_DONTWAIT`: never
/// waits, whatever the socket's own blocking mode, and changes nothing
/// shared with other processes. `MSG_NOSIGNAL`: a reader gone is `EPIPE`.
pub fn send_dontwait(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe one live, initialised slice;
    // send only reads from it; the borrowed fd stays open for the call.
    let rc = unsafe {
        libc::send(
            fd.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // rc is non-negative here and at most bytes.len().
    Ok(rc as usize)
}

/// A new pseudo-terminal: its master and its slave, both close-on-exec,
/// the slave opened without becoming anyone's controlling terminal. For
/// tests and measurements that give the server a terminal nobody reads
/// (what a terminal behind a dead ssh link is).
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: posix_openpt takes flags only; on success it returns a new fd
    // that nothing else owns.
    let master = new_fd(unsafe { libc::posix_openpt(flags) })?
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINTR))?;
    // SAFETY: `master` is an open pty master for both calls.
    if unsafe { libc::grantpt(master.as_raw_fd()) } < 0
        || unsafe { libc::unlockpt(master.as_raw_fd()) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TIOCGPTPEER (Linux 4.13) takes open flags by value and
    // returns a new fd for the slave, which nothing else owns.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    let slave = new_fd(rc)?.ok_or_else(|| io::Error::from_raw_os_error(libc::EINTR))?;
    Ok((master, slave))
}

/// The kernel's clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of
/// the CPU times and start time in `/proc/self/stat`; `None` if unknown.
pub fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf takes a plain integer and reads no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0)
}

/// A terminal's settings (`termios`), taken by [`terminal_mode`] to be put
/// back by [`restore_terminal`]: the interactive client's line editor puts
/// the terminal in raw mode while it waits for a line, and a session the
/// server ends meanwhile must not leave the user's terminal raw.
pub struct TerminalMode(libc::termios);

/// The settings of the terminal `fd`; an error if it is not a terminal.
pub fn terminal_mode(fd: BorrowedFd<'_>) -> io::Result<TerminalMode> {
    // SAFETY: termios is plain integers and arrays; all zeros is valid,
    // and tcgetattr overwrites it.
    let mut mode: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to one termios; the borrowed fd stays open
    // for the call.
    if unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut mode) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TerminalMode(mode))
}

/// Puts the terminal `fd` back as `mode` was, at once (`TCSANOW`).
pub fn restore_terminal(fd: BorrowedFd<'_>, mode: &TerminalMode) -> io::Result<()> {
    // SAFETY: a valid pointer to one termios read by the call; the borrowed
    // fd stays open for the call.
    if unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &mode.0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A `tcp_info` with every field 0, for tests of its decoding.
pub fn empty_tcp_info() -> libc::tcp_info {
    // SAFETY: plain integers; all zeros is valid.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `linux_dirent64` record of `name` and `d_type`, padded to 8 bytes.
    fn record(name: &[u8], d_type: u8) -> Vec<u8> {
        let len = (DIRENT_NAME + name.len() + 1).next_multiple_of(8);
        let mut r = vec![0u8; len];
        r[DIRENT_RECLEN..DIRENT_RECLEN + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        r[DIRENT_TYPE] = d_type;
        r[DIRENT_NAME..DIRENT_NAME + name.len()].copy_from_slice(name);
        r
    }

    #[test]
    fn directory_records_are_taken_apart_and_a_malformed_one_ends_them() {
        let mut records = record(b"a-directory", libc::DT_DIR);
        records.extend(record(b"f", libc::DT_REG));
        records.extend(record(b"unknown", libc::DT_UNKNOWN));
        records.extend(record(b"link", libc::DT_LNK));
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some((entry, len)) = next_dir_entry(&records[at..]) {
            seen.push((entry.name.to_bytes().to_vec(), entry.kind));
            at += len;
        }
        assert_eq!(at, records.len());
        assert_eq!(
            seen,
            [
                (b"a-directory".to_vec(), EntryKind::Dir),
                (b"f".to_vec(), EntryKind::File),
                (b"unknown".to_vec(), EntryKind::Unknown),
                (b"link".to_vec(), EntryKind::Other),
            ]
        );
        // Cut short, a length past the end, no NUL, an empty name: none
        // is read past, none panics.
        let whole = record(b"name", libc::DT_REG);
        assert_eq!(next_dir_entry(&whole[..whole.len() - 1]), None);
        assert_eq!(next_dir_entry(&whole[..DIRENT_RECLEN + 1]), None);
        let mut no_nul = whole.clone();
        no_nul[DIRENT_NAME..].fill(b'x');
        assert_eq!(next_dir_entry(&no_nul), None);
        assert_eq!(next_dir_entry(&record(b"", libc::DT_REG)), None);
        let mut zero_len = whole;
        zero_len[DIRENT_RECLEN..DIRENT_RECLEN + 2].fill(0);
        assert_eq!(next_dir_entry(&zero_len), None);
    }

    #[test]
    fn a_directory_read_through_its_descriptor_gives_every_entry_and_kind() {
        let dir = std::env::temp_dir().join(format!("tcp-reactor-dents-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("file"), b"").unwrap();
        std::os::unix::fs::symlink("file", dir.join("link")).unwrap();
        let fd = OwnedFd::from(std::fs::File::open(&dir).unwrap());
        // A buffer that holds one record at a time, so it takes many calls.
        let mut buf = vec![0u8; 40];
        let mut seen = Vec::new();
        loop {
            let n = read_dir_entries(fd.as_fd(), &mut buf).unwrap();
            if n == 0 {
                break;
            }
            let mut at = 0;
            while let Some((entry, len)) = next_dir_entry(&buf[at..n]) {
                let kind = match entry.kind {
                    EntryKind::Unknown => kind_at(fd.as_fd(), entry.name).unwrap(),
                    kind => kind,
                };
                assert_eq!(kind, kind_at(fd.as_fd(), entry.name).unwrap());
                seen.push((entry.name.to_bytes().to_vec(), kind));
                at += len;
            }
            assert_eq!(at, n, "whole records");
        }
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        // Too small for one record (a fresh descriptor: at the end there
        // is no record left to fit).
        let fresh = OwnedFd::from(std::fs::File::open(&dir).unwrap());
        let e = read_dir_entries(fresh.as_fd(), &mut [0u8; 8]).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        assert_eq!(
            seen,
            [
                (b".".to_vec(), EntryKind::Dir),
                (b"..".to_vec(), EntryKind::Dir),
                (b"file".to_vec(), EntryKind::File),
                (b"link".to_vec(), EntryKind::Other),
                (b"sub".to_vec(), EntryKind::Dir),
            ]
        );
    }

    /// Accepts one connection on `l`, whose handshake is done (the accept
    /// is non-blocking), within 5 s.
    fn accept_within(l: &mio::net::TcpListener) -> mio::net::TcpStream {
        (0..1000)
            .find_map(|_| {
                l.accept().ok().map(|(s, _)| s).or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    None
                })
            })
            .expect("the connection is accepted within 5 s")
    }

    #[test]
    fn keepalive_set_on_the_listener_reaches_every_accepted_socket() {
        let addr = "127.0.0.1:0".parse().unwrap();
        let on = listener(addr, false, None, None, LISTEN_BACKLOG).unwrap();
        keepalive(&on, std::time::Duration::from_secs(20)).unwrap();
        let off = listener(addr, false, None, None, LISTEN_BACKLOG).unwrap();
        for (l, want) in [(&on, Some(20)), (&off, None)] {
            let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let accepted = accept_within(l);
            let idle = keepalive_idle(&accepted).unwrap();
            assert_eq!(idle.map(|d| d.as_secs()), want);
            if want.is_some() {
                let s = SockRef::from(&accepted);
                assert_eq!(s.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
                assert_eq!(s.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
            }
        }
    }

    #[test]
    fn congestion_and_notsent_lowat_set_on_the_listener_reach_every_accepted_socket() {
        let addr = "127.0.0.1:0".parse().unwrap();
        let plain = listener(addr, false, None, None, LISTEN_BACKLOG).unwrap();
        let default = congestion_of(&plain).unwrap();
        // reno is built into every kernel and allowed to everyone; when it
        // is the default, the test would not tell set from unset.
        if default == "reno" {
            eprintln!("SKIPPED: reno is the default congestion control here");
            return;
        }
        let set = listener(addr, false, None, None, LISTEN_BACKLOG).unwrap();
        congestion(&set, "reno").unwrap();
        notsent_lowat(&set, 16384).unwrap();
        for (l, algorithm, lowat) in [(&set, "reno", 16384), (&plain, default.as_str(), u32::MAX)] {
            let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let accepted = accept_within(l);
            assert_eq!(congestion_of(&accepted).unwrap(), algorithm);
            // Unset reads as 0 on some kernels, u32::MAX (no limit) on others.
            let got = notsent_lowat_of(&accepted).unwrap();
            if lowat == u32::MAX {
                assert!(got == 0 || got == u32::MAX, "unset notsent_lowat: {got}");
            } else {
                assert_eq!(got, lowat);
            }
        }
    }

    #[test]
    fn an_unknown_congestion_algorithm_is_an_error_not_a_fallback() {
        let l = listener("127.0.0.1:0".parse().unwrap(), false, None, None, 4).unwrap();
        assert!(congestion(&l, "no-such-algorithm").is_err());
    }
}
