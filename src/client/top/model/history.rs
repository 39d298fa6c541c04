//! A minute of history per connection, for the sparklines: samples of
//! server uptime and bytes per layer, bounded in time and in count. Pure.

use std::collections::VecDeque;

use super::Layer;

/// One minute of samples (server uptime, and bytes per layer) of one
/// connection.
#[derive(Clone, Debug, Default)]
pub struct History {
    samples: VecDeque<(f64, [u64; 5])>,
}

/// How far back history goes, in seconds of server uptime.
pub const HISTORY_SECS: f64 = 60.0;

/// Most samples per connection: a minute at the shortest `watch`
/// interval (50 ms). Keeps memory bounded even if the server's clock
/// misbehaves and the time pruning never fires.
pub const HISTORY_SAMPLES: usize = 1200;

/// Most connections with a history. One sample is 48 bytes; a minute at
/// the default 250 ms is 240 of them, 11.5 KB a connection, so a thousand
/// connections cost about 12 MB (57 MB at 50 ms). Connections past this
/// count get no sparkline; those already tracked keep theirs, which
/// favours the long-lived ones.
pub const HISTORY_CONNECTIONS: usize = 1000;

impl History {
    pub(super) fn push(&mut self, uptime: f64, used: [u64; 5]) {
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| *t < uptime - HISTORY_SECS)
            || self.samples.len() >= HISTORY_SAMPLES
        {
            self.samples.pop_front();
        }
        self.samples.push_back((uptime, used));
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The bytes of `layer`, oldest first.
    pub fn series(&self, layer: Layer) -> Vec<u64> {
        self.samples
            .iter()
            .map(|(_, used)| used[layer as usize])
            .collect()
    }

    /// Seconds of uptime the samples span.
    pub fn span_secs(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((a, _)), Some((b, _))) => b - a,
            _ => 0.0,
        }
    }
}
