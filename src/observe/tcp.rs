//! The kernel's view of one TCP connection (`TCP_INFO`), as the server
//! shows it: the fields the kernel filled, never a made-up 0 for the ones
//! an older kernel leaves out. The system call is [`crate::sys::tcp_info`];
//! this module only reads its answer.

use std::io;
use std::os::fd::AsRawFd;

use crate::sys;

/// What the kernel knows of one TCP connection (`getsockopt(TCP_INFO)`). A
/// field is `None` when the kernel's `struct tcp_info` is too short to hold
/// it (older kernels fill a shorter one): never a made-up 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TcpInfo {
    /// Smoothed round-trip time and its variation, in microseconds.
    pub rtt_us: Option<u32>,
    pub rttvar_us: Option<u32>,
    /// Congestion window and slow-start threshold, in segments.
    pub snd_cwnd: Option<u32>,
    pub snd_ssthresh: Option<u32>,
    /// Sending segment size, in bytes.
    pub snd_mss: Option<u32>,
    /// The window the peer advertised last, in bytes: how much more it is
    /// ready to receive (0: it is not reading).
    pub snd_wnd: Option<u32>,
    /// Segments sent and not yet acknowledged.
    pub unacked: Option<u32>,
    /// Segments retransmitted over the connection's life.
    pub total_retrans: Option<u32>,
    /// Bytes written to the socket and not yet sent at all.
    pub notsent_bytes: Option<u32>,
    /// Bytes the peer has acknowledged so far.
    pub bytes_acked: Option<u64>,
    /// Segments received that carried data, over the connection's life.
    pub data_segs_in: Option<u32>,
    /// Microseconds spent sending, and of those, limited by the peer's
    /// receive window and by our send buffer.
    pub busy_time_us: Option<u64>,
    pub rwnd_limited_us: Option<u64>,
    pub sndbuf_limited_us: Option<u64>,
}

/// What the kernel knows of `socket` (one system call).
pub fn tcp_info(socket: &impl AsRawFd) -> io::Result<TcpInfo> {
    let (raw, filled) = sys::tcp_info(socket)?;
    Ok(decode_tcp_info(&raw, filled))
}

/// The fields of `raw` that lie within the `filled` bytes the kernel wrote;
/// the others are `None`.
fn decode_tcp_info(raw: &libc::tcp_info, filled: usize) -> TcpInfo {
    macro_rules! field {
        ($name:ident) => {{
            let end =
                std::mem::offset_of!(libc::tcp_info, $name) + std::mem::size_of_val(&raw.$name);
            (end <= filled).then_some(raw.$name)
        }};
    }
    TcpInfo {
        rtt_us: field!(tcpi_rtt),
        rttvar_us: field!(tcpi_rttvar),
        snd_cwnd: field!(tcpi_snd_cwnd),
        snd_ssthresh: field!(tcpi_snd_ssthresh),
        snd_mss: field!(tcpi_snd_mss),
        snd_wnd: field!(tcpi_snd_wnd),
        unacked: field!(tcpi_unacked),
        total_retrans: field!(tcpi_total_retrans),
        notsent_bytes: field!(tcpi_notsent_bytes),
        bytes_acked: field!(tcpi_bytes_acked),
        data_segs_in: field!(tcpi_data_segs_in),
        busy_time_us: field!(tcpi_busy_time),
        rwnd_limited_us: field!(tcpi_rwnd_limited),
        sndbuf_limited_us: field!(tcpi_sndbuf_limited),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shorter_tcp_info_leaves_the_later_fields_unknown() {
        let mut raw = crate::sys::empty_tcp_info();
        raw.tcpi_rtt = 1500;
        raw.tcpi_snd_wnd = 65535;
        raw.tcpi_bytes_acked = 7;
        let full = decode_tcp_info(&raw, std::mem::size_of::<libc::tcp_info>());
        assert_eq!(full.rtt_us, Some(1500));
        assert_eq!(full.snd_wnd, Some(65535));
        assert_eq!(full.bytes_acked, Some(7));
        // Linux 4.6 filled up to tcpi_bytes_received; tcpi_snd_wnd came in 5.4.
        let old = decode_tcp_info(&raw, std::mem::offset_of!(libc::tcp_info, tcpi_segs_out));
        assert_eq!(old.rtt_us, Some(1500));
        assert_eq!(old.bytes_acked, Some(7));
        assert_eq!(old.notsent_bytes, None, "never a made-up 0");
        assert_eq!(old.snd_wnd, None);
        assert_eq!(decode_tcp_info(&raw, 0), TcpInfo::default());
    }

    #[test]
    fn the_kernel_fills_tcp_info_for_a_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let info = tcp_info(&client).expect("TCP_INFO on a connected socket");
        assert!(info.rtt_us.is_some() && info.snd_cwnd.is_some_and(|c| c > 0));
        assert!(info.snd_mss.is_some_and(|m| m > 0));
    }
}
