//! What one snapshot row says about its connection: its identity across
//! snapshots ([`Key`]), where its bytes sit layer by layer ([`Layers`]),
//! and the bar drawn from them ([`bar`]). Pure: no I/O.

use super::Row;

impl Row {
    /// The connection's identity across snapshots. The server's `id` is a
    /// slot that a later connection reuses, so the peer address and the
    /// service are part of it.
    pub fn key(&self) -> Key {
        Key {
            id: self.id,
            peer: self.peer.clone(),
            service: self.service.clone(),
        }
    }

    pub fn rtt_us(&self) -> Option<u64> {
        self.tcp.and_then(|t| t.rtt_us)
    }

    /// Where this connection's bytes sit, layer by layer.
    pub fn layers(&self) -> Layers {
        let queued = self.kernel_send_queue.unwrap_or(0);
        // SIOCOUTQNSD can run ahead of SIOCOUTQ between the two ioctls;
        // the unsent part is never more than the whole queue.
        let unsent = self.kernel_send_unsent.unwrap_or(0).min(queued);
        Layers {
            used: [
                self.kernel_recv_queue.unwrap_or(0),
                self.recv_buf_used,
                self.send_buf_used,
                unsent,
                queued - unsent,
            ],
            capacity: [
                self.so_rcvbuf,
                Some(self.recv_buf_capacity),
                Some(self.send_buf_capacity),
                self.so_sndbuf,
            ],
        }
    }

    /// Bytes the server still owes the peer: its send buffer and
    /// everything in the kernel's send queue (unsent or unacknowledged).
    pub fn owed(&self) -> u64 {
        self.send_buf_used + self.kernel_send_queue.unwrap_or(0)
    }
}

/// A connection's identity: see [`Row::key`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub id: u64,
    pub peer: String,
    pub service: String,
}

/// The layers of a connection's byte path, in the order a byte crosses
/// them: in from the peer, through the service, out to the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    KernelRecv,
    RecvBuf,
    SendBuf,
    Unsent,
    InFlight,
}

impl Layer {
    pub const ALL: [Layer; 5] = [
        Layer::KernelRecv,
        Layer::RecvBuf,
        Layer::SendBuf,
        Layer::Unsent,
        Layer::InFlight,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Layer::KernelRecv => "kernel receive queue",
            Layer::RecvBuf => "receive buffer",
            Layer::SendBuf => "send buffer",
            Layer::Unsent => "kernel unsent",
            Layer::InFlight => "in flight",
        }
    }

    /// The letter that stands for the layer in a bar.
    pub fn glyph(self) -> char {
        match self {
            Layer::KernelRecv => 'K',
            Layer::RecvBuf => 'R',
            Layer::SendBuf => 'S',
            Layer::Unsent => 'U',
            Layer::InFlight => 'F',
        }
    }

    /// Which capacity the layer is measured against: the last two share
    /// the kernel's send buffer.
    pub fn part(self) -> usize {
        match self {
            Layer::KernelRecv => 0,
            Layer::RecvBuf => 1,
            Layer::SendBuf => 2,
            Layer::Unsent | Layer::InFlight => 3,
        }
    }
}

/// Bytes per layer (indexed as [`Layer::ALL`]) and the four capacities
/// they are measured against: SO_RCVBUF, the receive buffer's limit, the
/// send buffer's limit, SO_SNDBUF (`None`: the kernel gave none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layers {
    pub used: [u64; 5],
    pub capacity: [Option<u64>; 4],
}

impl Layers {
    pub fn of(&self, layer: Layer) -> u64 {
        self.used[layer as usize]
    }

    pub fn capacity_of(&self, layer: Layer) -> Option<u64> {
        self.capacity[layer.part()]
    }

    pub fn total(&self) -> u64 {
        self.used.iter().sum()
    }
}

/// One cell run of a bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    Layer(Layer),
    /// Room left in that part.
    Free,
    /// Between two parts.
    Separator,
}

/// Cells, of `width`, that `used` bytes of `capacity` fill: rounded up, so
/// a single byte shows; at most `width`. An unknown or zero capacity with
/// bytes in it shows full (the kernel holds them; how much room is left is
/// not known).
pub fn cells(used: u64, capacity: Option<u64>, width: usize) -> usize {
    if used == 0 || width == 0 {
        return 0;
    }
    match capacity {
        Some(cap) if cap > 0 => {
            let n = (u128::from(used) * width as u128).div_ceil(u128::from(cap));
            (n as usize).clamp(1, width)
        }
        _ => width,
    }
}

/// The bar of a connection: four parts of `part_width` cells each (one per
/// capacity, in the byte's order), each filled as far as its bytes fill
/// its capacity, as runs of cells. Parts are of equal width rather than
/// sized to their capacities, because SO_SNDBUF (megabytes) would
/// otherwise squeeze a 64 KiB receive buffer to nothing. The kernel send
/// part holds two layers: unsent, then in flight, split in proportion with
/// at least one cell for each that has bytes while the part has room.
pub fn bar(layers: &Layers, part_width: usize) -> Vec<(Cell, usize)> {
    let mut runs = Vec::new();
    let mut push = |cell: Cell, n: usize| {
        if n > 0 {
            runs.push((cell, n));
        }
    };
    for part in 0..4 {
        if part > 0 {
            push(Cell::Separator, 1);
        }
        let cap = layers.capacity[part];
        let filled = if part < 3 {
            let layer = Layer::ALL[part];
            let n = cells(layers.of(layer), cap, part_width);
            push(Cell::Layer(layer), n);
            n
        } else {
            let unsent = layers.of(Layer::Unsent);
            let flight = layers.of(Layer::InFlight);
            let total = cells(unsent + flight, cap, part_width);
            let mut u = if unsent == 0 {
                0
            } else {
                let share =
                    (u128::from(unsent) * total as u128 / u128::from(unsent + flight)) as usize;
                share.max(1)
            };
            if flight > 0 && u == total && total > 1 {
                u -= 1;
            }
            push(Cell::Layer(Layer::Unsent), u);
            push(Cell::Layer(Layer::InFlight), total - u);
            total
        };
        push(Cell::Free, part_width - filled);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(used: [u64; 5], capacity: [Option<u64>; 4]) -> Layers {
        Layers { used, capacity }
    }

    fn text(runs: &[(Cell, usize)]) -> String {
        runs.iter()
            .map(|(c, n)| {
                let ch = match c {
                    Cell::Layer(l) => l.glyph(),
                    Cell::Free => '.',
                    Cell::Separator => '|',
                };
                ch.to_string().repeat(*n)
            })
            .collect()
    }

    #[test]
    fn the_bar_scales_each_layer_to_its_capacity() {
        assert_eq!(cells(0, Some(100), 8), 0);
        assert_eq!(cells(1, Some(1 << 30), 8), 1, "one byte shows");
        assert_eq!(cells(50, Some(100), 8), 4);
        assert_eq!(cells(51, Some(100), 8), 5, "rounded up");
        assert_eq!(cells(500, Some(100), 8), 8, "never past the part");
        assert_eq!(cells(5, None, 8), 8, "unknown capacity: full");
        let cap = [Some(100), Some(100), Some(100), Some(100)];
        assert_eq!(text(&bar(&layers([0; 5], cap), 4)), "....|....|....|....");
        assert_eq!(
            text(&bar(&layers([25, 100, 50, 25, 25], cap), 4)),
            "K...|RRRR|SS..|UF.."
        );
        // One byte unsent beside much in flight still shows both.
        assert_eq!(
            text(&bar(&layers([0, 0, 0, 1, 99], cap), 4)),
            "....|....|....|UFFF"
        );
        assert_eq!(
            text(&bar(&layers([0, 0, 0, 99, 1], cap), 4)),
            "....|....|....|UUUF"
        );
        assert_eq!(
            text(&bar(&layers([0, 0, 0, 1, 0], cap), 4)),
            "....|....|....|U..."
        );
    }

    #[test]
    fn layers_split_the_kernel_send_queue_into_unsent_and_in_flight() {
        let r = Row {
            kernel_recv_queue: Some(1),
            recv_buf_used: 2,
            send_buf_used: 3,
            kernel_send_queue: Some(10),
            kernel_send_unsent: Some(4),
            so_sndbuf: Some(99),
            ..Row::default()
        };
        assert_eq!(r.layers().used, [1, 2, 3, 4, 6]);
        assert_eq!(r.layers().capacity_of(Layer::InFlight), Some(99));
        assert_eq!(r.owed(), 13);
        let racing = Row {
            kernel_send_queue: Some(3),
            kernel_send_unsent: Some(5),
            ..Row::default()
        };
        assert_eq!(racing.layers().used[3..], [3, 0]);
    }
}
