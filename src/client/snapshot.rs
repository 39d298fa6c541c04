//! The admin service's `watch` snapshots as its clients read them (`top`,
//! `record`): one JSON line of `stats` and every `clients` row. Unknown
//! fields are ignored and missing ones default, so a server that adds
//! fields stays readable; a kernel figure the server gives as `null` stays
//! `None`. Pure: parsing only.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// A JSON number the server may send as `null`: read as 0. Counters are
/// never null today; the tolerance costs nothing and keeps an older or
/// newer server readable.
fn zero_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.unwrap_or(0))
}

fn zero_if_null_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(0.0))
}

fn empty_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// One line of `watch MS`. Unknown fields are ignored and missing ones
/// default, so a server that adds fields stays readable.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Snapshot {
    pub stats: Stats,
    pub clients: Vec<Row>,
}

impl Snapshot {
    /// Parses one `watch` line.
    pub fn parse(line: &str) -> Result<Snapshot, serde_json::Error> {
        serde_json::from_str(line)
    }
}

/// The `stats` half of a snapshot.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Stats {
    #[serde(deserialize_with = "zero_if_null_f64")]
    pub uptime_secs: f64,
    /// By service name (sorted, so the header keeps one order).
    pub services: BTreeMap<String, Counters>,
    pub total: Counters,
    #[serde(deserialize_with = "zero_if_null")]
    pub log_lines_dropped: u64,
}

/// One service's counters, or the total.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Counters {
    #[serde(deserialize_with = "zero_if_null")]
    pub accepted: u64,
    #[serde(deserialize_with = "zero_if_null")]
    pub active: u64,
    /// Refusals by cause (`full`, `per_ip`).
    pub refused: BTreeMap<String, Option<u64>>,
    /// Closes by cause (`peer`, `idle`, `error`, `limit`, `shutdown`).
    pub closed: Causes,
    #[serde(deserialize_with = "zero_if_null")]
    pub bytes_in: u64,
    #[serde(deserialize_with = "zero_if_null")]
    pub bytes_out: u64,
}

impl Counters {
    pub fn refused_total(&self) -> u64 {
        self.refused.values().map(|n| n.unwrap_or(0)).sum()
    }
}

/// Counts by cause, in the order the server sent them (the order of its
/// enum, which reads better than alphabetical: peer, idle, error, ...).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Causes(pub Vec<(String, u64)>);

impl Causes {
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    pub fn of(&self, cause: &str) -> u64 {
        self.0
            .iter()
            .find(|(name, _)| name == cause)
            .map_or(0, |(_, n)| *n)
    }
}

impl<'de> Deserialize<'de> for Causes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Causes, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Causes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of counts by cause")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Causes, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Option<u64>>()? {
                    out.push((k, v.unwrap_or(0)));
                }
                Ok(Causes(out))
            }
            fn visit_unit<E>(self) -> Result<Causes, E> {
                Ok(Causes::default())
            }
        }
        d.deserialize_any(Visit)
    }
}

/// One connection, as `clients json` gives it. Kernel figures are `None`
/// where the kernel gave none.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Row {
    #[serde(deserialize_with = "zero_if_null")]
    pub id: u64,
    #[serde(deserialize_with = "empty_if_null")]
    pub peer: String,
    #[serde(deserialize_with = "empty_if_null")]
    pub service: String,
    #[serde(deserialize_with = "zero_if_null_f64")]
    pub age_secs: f64,
    #[serde(deserialize_with = "zero_if_null_f64")]
    pub idle_secs: f64,
    #[serde(deserialize_with = "zero_if_null")]
    pub recv_buf_used: u64,
    #[serde(deserialize_with = "zero_if_null")]
    pub recv_buf_capacity: u64,
    #[serde(deserialize_with = "zero_if_null")]
    pub send_buf_used: u64,
    #[serde(deserialize_with = "zero_if_null")]
    pub send_buf_capacity: u64,
    pub kernel_recv_queue: Option<u64>,
    /// Sent and unacknowledged plus not yet sent (SIOCOUTQ).
    pub kernel_send_queue: Option<u64>,
    /// Of the kernel send queue, the bytes not sent yet (SIOCOUTQNSD).
    pub kernel_send_unsent: Option<u64>,
    pub so_rcvbuf: Option<u64>,
    pub so_sndbuf: Option<u64>,
    #[serde(deserialize_with = "empty_if_null")]
    pub state: String,
    #[serde(deserialize_with = "empty_if_null")]
    pub limit: String,
    #[serde(deserialize_with = "zero_if_null")]
    pub bytes_in: u64,
    #[serde(deserialize_with = "zero_if_null")]
    pub bytes_out: u64,
    pub snapshots_skipped: Option<u64>,
    pub tcp: Option<Tcp>,
}

/// TCP_INFO as the server reports it; every figure may be missing.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Tcp {
    pub rtt_us: Option<u64>,
    pub rttvar_us: Option<u64>,
    pub snd_cwnd: Option<u64>,
    pub snd_ssthresh: Option<u64>,
    pub snd_mss: Option<u64>,
    pub snd_wnd: Option<u64>,
    pub unacked: Option<u64>,
    pub total_retrans: Option<u64>,
    pub notsent_bytes: Option<u64>,
    pub bytes_acked: Option<u64>,
    pub busy_time_us: Option<u64>,
    pub rwnd_limited_us: Option<u64>,
    pub sndbuf_limited_us: Option<u64>,
}
