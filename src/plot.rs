//! `tcp-reactor plot`: a picture of a `record` CSV, as SVG.
//!
//! One panel per connection (at most [`MAX_PANELS`], those that held the
//! most bytes first): a stacked area of the bytes waiting in each place on
//! the connection's path, bottom to top in the order a byte travels
//! ([`LAYERS`]), and above it a strip coloured by the `limit` column, so
//! what held the bytes back reads off the same time axis. Each sample is
//! drawn as a step held until the next one ([`steps`]): a snapshot says
//! nothing of the moments between two. One legend for all panels; a
//! [`Label`] names a connection's panel (`client A`).
//!
//! Reading the CSV ([`read_samples`]), turning rows into series
//! ([`series`]), choosing panels ([`select_panels`]) and drawing
//! ([`render_svg`], into a string) are separate; only [`plot`] touches
//! files. Recording is in [`crate::client::record`], not here.

use std::collections::HashMap;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::client::ClientError;
use crate::client::record::Sample;

/// Most panels in one picture: past six, each gets too short to read on a
/// screen, and the smallest connections say least.
pub const MAX_PANELS: usize = 6;

/// One place a byte can wait, as drawn.
#[derive(Clone, Copy, Debug)]
pub struct Layer {
    /// The legend's words.
    pub name: &'static str,
    pub colour: RGBColor,
}

/// The places a byte waits, in the order it passes them (the stacking
/// order, bottom first). `in flight` is the kernel send queue less its
/// unsent part: sent, not yet acknowledged.
pub const LAYERS: [Layer; 5] = [
    Layer {
        name: "kernel receive queue",
        colour: RGBColor(158, 202, 225),
    },
    Layer {
        name: "receive buffer",
        colour: RGBColor(49, 130, 189),
    },
    Layer {
        name: "send buffer",
        colour: RGBColor(230, 85, 13),
    },
    Layer {
        name: "kernel send queue, unsent",
        colour: RGBColor(253, 174, 107),
    },
    Layer {
        name: "in flight: sent, not yet acknowledged",
        colour: RGBColor(116, 196, 118),
    },
];

/// The `limit` values the server gives, what each means, and its colour.
const LIMITS: [(&str, &str, RGBColor); 5] = [
    (
        "peer-window",
        "the client is not reading",
        RGBColor(222, 45, 38),
    ),
    (
        "congestion",
        "the congestion window is full",
        RGBColor(117, 107, 177),
    ),
    (
        "send-buffer",
        "our kernel send buffer is full",
        RGBColor(255, 153, 0),
    ),
    (
        "none",
        "moving, nothing holds them",
        RGBColor(120, 198, 121),
    ),
    ("idle", "nothing to send", RGBColor(217, 217, 217)),
];

/// A limit name the server gave that this build does not know.
const OTHER_LIMIT: RGBColor = RGBColor(150, 150, 150);

fn limit_colour(limit: &str) -> RGBColor {
    LIMITS
        .iter()
        .find(|(name, _, _)| *name == limit)
        .map_or(OTHER_LIMIT, |(_, _, c)| *c)
}

/// One sample of one connection, ready to draw.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub time: f64,
    /// Bytes in each of [`LAYERS`], in order.
    pub bytes: [u64; 5],
    pub limit: String,
}

impl Point {
    pub fn total(&self) -> u64 {
        self.bytes.iter().sum()
    }
}

/// Every sample of one connection, in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub id: usize,
    pub peer: String,
    pub service: String,
    /// A name for the panel's title, from [`Label`]s (the demos call their
    /// clients A, B, C).
    pub label: Option<String>,
    /// The last SO_SNDBUF figure seen: it tells recordings of servers with
    /// different `--so-sndbuf` apart.
    pub so_sndbuf: Option<u64>,
    pub points: Vec<Point>,
}

impl Series {
    /// The most bytes waiting at any one sample.
    pub fn peak(&self) -> u64 {
        self.points.iter().map(Point::total).max().unwrap_or(0)
    }
}

/// The bytes in each layer of one row. A figure the kernel did not give
/// counts as 0 here (the CSV keeps it empty).
pub fn layers_of(s: &Sample) -> [u64; 5] {
    let queued = s.kernel_send_queue.unwrap_or(0);
    let unsent = s.kernel_send_unsent.unwrap_or(0);
    [
        s.kernel_recv_queue.unwrap_or(0),
        s.recv_buf_used,
        s.send_buf_used,
        unsent,
        // SIOCOUTQ and SIOCOUTQNSD are two ioctls: unsent can be read
        // after more was acknowledged, so it may exceed the queue.
        queued.saturating_sub(unsent),
    ]
}

/// The rows grouped by connection, in the order connections first appear.
/// A connection is its id and peer: the server reuses the id of a closed
/// connection for a later one.
pub fn series(samples: &[Sample]) -> Vec<Series> {
    let mut index: HashMap<(usize, &str), usize> = HashMap::new();
    let mut out: Vec<Series> = Vec::new();
    for s in samples {
        let at = *index.entry((s.id, s.peer.as_str())).or_insert_with(|| {
            out.push(Series {
                id: s.id,
                peer: s.peer.clone(),
                service: s.service.clone(),
                label: None,
                so_sndbuf: None,
                points: Vec::new(),
            });
            out.len() - 1
        });
        let series = &mut out[at];
        series.so_sndbuf = s.so_sndbuf.or(series.so_sndbuf);
        series.points.push(Point {
            time: s.time_secs,
            bytes: layers_of(s),
            limit: s.limit.clone(),
        });
    }
    for s in &mut out {
        s.points.sort_by(|a, b| a.time.total_cmp(&b.time));
    }
    out
}

/// A name for the panels of one connection: `PEER=NAME` (the peer as the
/// recording gives it, `127.0.0.1:5000`) or `ID=NAME` (a connection id,
/// which names every connection that had it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    key: String,
    name: String,
}

impl std::str::FromStr for Label {
    type Err = String;

    fn from_str(text: &str) -> Result<Label, String> {
        match text.split_once('=') {
            Some((key, name)) if !key.is_empty() && !name.is_empty() => Ok(Label {
                key: key.to_string(),
                name: name.to_string(),
            }),
            _ => Err(format!(
                "'{text}' is not PEER=NAME or ID=NAME (example: 127.0.0.1:5000=client A)"
            )),
        }
    }
}

/// Gives each series the name the first matching label has for it.
pub fn apply_labels(all: &mut [Series], labels: &[Label]) {
    for s in all {
        s.label = labels
            .iter()
            .find(|l| l.key == s.peer || l.key == s.id.to_string())
            .map(|l| l.name.clone());
    }
}

/// A series' samples as a step line: each value held from its sample to
/// the next, the last one until `last_until`; consecutive points share an
/// x or a y, never a slope, since the server's figures are snapshots and
/// nothing is known of the bytes between two of them.
pub fn steps(points: &[(f64, f64)], last_until: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (i, &(x, y)) in points.iter().enumerate() {
        out.push((x, y));
        let until = points.get(i + 1).map_or(last_until.max(x), |next| next.0);
        out.push((until, y));
    }
    out
}

/// The connections to draw: at most `cap`, those with the highest peak
/// first (ties: the one that appeared first).
pub fn select_panels(mut all: Vec<Series>, cap: usize) -> Vec<Series> {
    // A stable sort keeps the order of appearance among equal peaks.
    all.sort_by_key(|s| std::cmp::Reverse(s.peak()));
    all.truncate(cap);
    all
}

/// Runs of equal `limit` in `points`: (from, to, limit), each run lasting
/// until the next sample, the last one `step` past its sample.
pub fn limit_runs(points: &[Point], step: f64) -> Vec<(f64, f64, &str)> {
    let mut runs: Vec<(f64, f64, &str)> = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let end = points.get(i + 1).map_or(p.time + step, |next| next.time);
        match runs.last_mut() {
            Some(run) if run.2 == p.limit => run.1 = end,
            _ => runs.push((p.time, end, p.limit.as_str())),
        }
    }
    runs
}

/// The usual time between snapshots: the median gap between one
/// connection's consecutive samples (0.1 s when no connection has two).
/// Gaps are taken per connection, not across all times: recordings merged
/// onto one time axis (the demos put a server per recording, each from its
/// own start) interleave their times, and the gaps between those are not
/// the sampling interval.
pub fn sampling_step(samples: &[Sample]) -> f64 {
    let mut gaps: Vec<f64> = series(samples)
        .iter()
        .flat_map(|s| {
            s.points
                .windows(2)
                .map(|w| w[1].time - w[0].time)
                .filter(|gap| *gap > 0.0)
                .collect::<Vec<f64>>()
        })
        .collect();
    gaps.sort_by(f64::total_cmp);
    gaps.get(gaps.len() / 2).copied().unwrap_or(0.1)
}

/// A byte count as a person reads it: `512 B`, `64 KiB`, `3.9 MiB`.
pub fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract().abs() < 0.05 || value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Reads a `record` CSV. A missing file, a header without the recording's
/// columns, a malformed cell or an empty file is one line of error; a
/// header with no rows is a recording in which no connection was open.
pub fn read_samples(path: &Path) -> Result<Vec<Sample>, ClientError> {
    let shown = path.display();
    let mut reader = csv::Reader::from_path(path)
        .map_err(|e| ClientError::new(format!("cannot read '{shown}': {}", csv_message(&e))))?;
    let mut samples = Vec::new();
    for row in reader.deserialize::<Sample>() {
        let row = row.map_err(|e| {
            ClientError::new(format!(
                "'{shown}' is not a tcp-reactor recording: {}",
                csv_message(&e)
            ))
        })?;
        samples.push(row);
    }
    if samples.is_empty() && reader.headers().map_or(true, |h| h.is_empty()) {
        return Err(ClientError::new(format!(
            "'{shown}' is empty: not a tcp-reactor recording"
        )));
    }
    Ok(samples)
}

/// A csv error on one line (its I/O errors say which file themselves).
fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Io(io) => io.to_string(),
        _ => e.to_string().replace('\n', " "),
    }
}

/// What [`plot`] drew.
#[derive(Clone, Debug)]
pub struct PlotSummary {
    pub panels: usize,
    pub connections: usize,
}

/// Reads the recording `input` and writes its picture to `output`, each
/// panel named by the first of `labels` that matches it.
pub fn plot(input: &Path, output: &Path, labels: &[Label]) -> Result<PlotSummary, ClientError> {
    let samples = read_samples(input)?;
    let name = input.file_name().map_or_else(
        || input.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut all = series(&samples);
    apply_labels(&mut all, labels);
    let connections = all.len();
    let step = sampling_step(&samples);
    let end = samples.iter().map(|s| s.time_secs).fold(0.0, f64::max);
    let panels = select_panels(all, MAX_PANELS);
    let svg = render_svg(&name, &panels, connections, end, step)?;
    std::fs::write(output, svg)
        .map_err(|e| ClientError::new(format!("cannot write '{}': {e}", output.display())))?;
    Ok(PlotSummary {
        panels: panels.len(),
        connections,
    })
}

const WIDTH: u32 = 1100;
const HEADER_HEIGHT: u32 = 150;
const PANEL_HEIGHT: u32 = 270;
/// Pixels left of the plot area for the byte labels; the limit strip
/// uses the same, so both share one time axis.
const Y_LABELS: u32 = 80;
const MARGIN: u32 = 12;
const STRIP: u32 = 22;

/// Draws `panels` (from a recording named `name` of `connections`
/// connections, ending at `end` seconds, sampled every `step`) as SVG.
pub fn render_svg(
    name: &str,
    panels: &[Series],
    connections: usize,
    end: f64,
    step: f64,
) -> Result<String, ClientError> {
    let mut svg = String::new();
    let height = HEADER_HEIGHT + PANEL_HEIGHT * panels.len().max(1) as u32;
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        draw(&root, name, panels, connections, end, step).map_err(|e| {
            ClientError::new(format!("cannot draw the picture: {e}").replace('\n', " "))
        })?;
        root.present()
            .map_err(|e| ClientError::new(format!("cannot draw the picture: {e}")))?;
    }
    Ok(svg)
}

type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

fn draw(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    name: &str,
    panels: &[Series],
    connections: usize,
    end: f64,
    step: f64,
) -> DrawResult {
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER_HEIGHT);
    draw_header(&header, name, panels.len(), connections, end, step)?;
    // A recording of one snapshot still gets a time axis of one step.
    let x_end = if panels.iter().any(|s| s.points.len() == 1) || end <= 0.0 {
        end + step
    } else {
        end
    };
    if panels.is_empty() {
        body.draw(&Text::new(
            "No connection was open at any snapshot: whatever happened began and ended between two samples.",
            (MARGIN as i32, 40),
            ("sans-serif", 15).into_font().color(&BLACK),
        ))?;
    }
    for (area, series) in body
        .split_evenly((panels.len().max(1), 1))
        .iter()
        .zip(panels)
    {
        draw_panel(area, series, x_end, step)?;
    }
    Ok(())
}

fn draw_header(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    name: &str,
    shown: usize,
    connections: usize,
    end: f64,
    step: f64,
) -> DrawResult {
    let text = |size: u32| ("sans-serif", size).into_font().color(&BLACK);
    let grey = ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90));
    area.draw(&Text::new(
        "Where each connection's bytes wait, over time",
        (MARGIN as i32, 10),
        text(22),
    ))?;
    let which = if shown < connections {
        format!("the {shown} that held the most bytes, of {connections} connections")
    } else {
        format!(
            "{connections} connection{}",
            if connections == 1 { "" } else { "s" }
        )
    };
    area.draw(&Text::new(
        format!(
            "{name}: {which}, {end:.1} s, a sample every {:.0} ms. Stacked in the order a byte travels through the server, bottom first.",
            step * 1000.0
        ),
        (MARGIN as i32, 40),
        grey.clone(),
    ))?;
    // Layers, in path order, joined by arrows.
    let mut x = MARGIN as i32;
    let y = 66;
    area.draw(&Text::new("bytes in:", (x, y), text(14)))?;
    x += 70;
    for (i, layer) in LAYERS.iter().enumerate() {
        area.draw(&Rectangle::new(
            [(x, y), (x + 14, y + 14)],
            layer.colour.filled(),
        ))?;
        let label = layer.name;
        area.draw(&Text::new(label, (x + 19, y), text(14)))?;
        x += 19 + (label.len() as i32) * 7 + 6;
        if i + 1 < LAYERS.len() {
            area.draw(&Text::new("→", (x, y - 1), text(15)))?;
            x += 22;
        }
    }
    // Limits: what held the bytes back.
    let y = 94;
    area.draw(&Text::new(
        "top strip, what holds the bytes back:",
        (MARGIN as i32, y),
        text(14),
    ))?;
    // A grid of three columns: the SVG backend cannot measure text, so
    // columns keep labels apart whatever the viewer's font.
    let left = MARGIN as i32 + 262;
    let column = (WIDTH as i32 - left - MARGIN as i32) / 3;
    for (i, (limit, meaning, colour)) in LIMITS.iter().enumerate() {
        let x = left + column * (i as i32 % 3);
        let row_y = y + 22 * (i as i32 / 3);
        area.draw(&Rectangle::new(
            [(x, row_y), (x + 14, row_y + 14)],
            colour.filled(),
        ))?;
        area.draw(&Text::new(
            format!("{limit}: {meaning}"),
            (x + 19, row_y),
            text(13),
        ))?;
    }
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    series: &Series,
    x_end: f64,
    step: f64,
) -> DrawResult {
    let peak = series.peak();
    let sndbuf = series
        .so_sndbuf
        .map(|b| format!(", SO_SNDBUF {}", human_bytes(b as f64)))
        .unwrap_or_default();
    let label = series
        .label
        .as_ref()
        .map(|l| format!("{l}: "))
        .unwrap_or_default();
    let title = format!(
        "{label}connection {} ({}, peer {}{sndbuf}): at most {} waiting",
        series.id,
        series.service,
        series.peer,
        human_bytes(peak as f64)
    );
    let (title_area, rest) = area.split_vertically(24);
    let (strip_area, chart_area) = rest.split_vertically(STRIP + 4);
    title_area.draw(&Text::new(
        title,
        (MARGIN as i32, 6),
        ("sans-serif", 15)
            .into_font()
            .style(FontStyle::Bold)
            .color(&BLACK),
    ))?;

    // The limit strip, on the chart's time axis.
    let mut strip = ChartBuilder::on(&strip_area)
        .margin_left(MARGIN)
        .margin_right(MARGIN + 8)
        .y_label_area_size(Y_LABELS)
        .build_cartesian_2d(0f64..x_end, 0f64..1f64)?;
    let runs = limit_runs(&series.points, step);
    strip.draw_series(runs.iter().map(|(from, to, limit)| {
        Rectangle::new([(*from, 0.0), (*to, 1.0)], limit_colour(limit).filled())
    }))?;
    let plot_width = (WIDTH - 2 * MARGIN - 8 - Y_LABELS) as f64;
    strip.draw_series(runs.iter().filter_map(|(from, to, limit)| {
        let pixels = (to - from) / x_end * plot_width;
        (pixels > limit.len() as f64 * 7.0 + 8.0).then(|| {
            Text::new(
                limit.to_string(),
                (*from + 4.0 / plot_width * x_end, 0.85),
                ("sans-serif", 13).into_font().color(&BLACK),
            )
        })
    }))?;
    strip_area.draw(&Text::new(
        "held back by",
        (MARGIN as i32, 4),
        ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
    ))?;

    // The stacked bytes: each cumulative total painted over the one above.
    // Ticks fall on round numbers of the unit the peak is best read in.
    let (unit, unit_name) = match peak {
        1..1024 => (1.0, "B"),
        0 => (1024.0, "KiB"),
        1024..1_048_576 => (1024.0, "KiB"),
        _ => (1_048_576.0, "MiB"),
    };
    let y_end = (peak.max(1) as f64 / unit).max(1.0) * 1.08;
    let mut chart = ChartBuilder::on(&chart_area)
        .margin_left(MARGIN)
        .margin_right(MARGIN + 8)
        .margin_bottom(6)
        .x_label_area_size(34)
        .y_label_area_size(Y_LABELS)
        .build_cartesian_2d(0f64..x_end, 0f64..y_end)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .y_labels(5)
        .x_labels(10)
        .y_label_formatter(&|v| {
            if v.fract().abs() < 1e-9 {
                format!("{v:.0} {unit_name}")
            } else {
                format!("{v:.1} {unit_name}")
            }
        })
        .x_label_formatter(&|v| match x_end {
            ..1.0 => format!("{v:.2}"),
            ..20.0 => format!("{v:.1}"),
            _ => format!("{v:.0}"),
        })
        .x_desc("seconds since the recording started")
        .y_desc("bytes waiting")
        .label_style(("sans-serif", 12))
        .draw()?;
    if peak == 0 {
        chart.draw_series(std::iter::once(Text::new(
            "nothing waited in the server or its kernel (the client's kernel may hold bytes)",
            (x_end * 0.15, 0.6),
            ("sans-serif", 15).into_font().color(&RGBColor(90, 90, 90)),
        )))?;
    }
    // Each sample holds until the next (and the last for one step, as in
    // the limit strip): steps, not slopes between snapshots.
    let last_until = series
        .points
        .last()
        .map_or(x_end, |p| (p.time + step).min(x_end));
    for layer in (0..LAYERS.len()).rev() {
        let stacked = |p: &Point| p.bytes[..=layer].iter().sum::<u64>() as f64 / unit;
        let data: Vec<(f64, f64)> = series.points.iter().map(|p| (p.time, stacked(p))).collect();
        chart.draw_series(AreaSeries::new(
            steps(&data, last_until),
            0.0,
            LAYERS[layer].colour.filled(),
        ))?;
    }
    // A connection whose samples stop before the recording does closed
    // (written over the areas, which would hide it).
    if let Some(last) = series.points.last()
        && last.time + 1.5 * step < x_end
        && last.time < x_end * 0.94
    {
        chart.draw_series(std::iter::once(Text::new(
            "closed",
            (last.time, y_end * 0.06),
            ("sans-serif", 13).into_font().color(&BLACK),
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time: f64, id: usize, peer: &str) -> Sample {
        Sample {
            time_secs: time,
            id,
            peer: peer.to_string(),
            service: "echo".to_string(),
            state: "paused".to_string(),
            limit: "peer-window".to_string(),
            age_secs: time,
            idle_secs: 0.0,
            recv_buf_used: 10,
            recv_buf_capacity: 65536,
            send_buf_used: 200,
            send_buf_capacity: 65536,
            kernel_recv_queue: Some(1),
            kernel_send_queue: Some(5000),
            kernel_send_unsent: Some(3000),
            so_rcvbuf: Some(131072),
            so_sndbuf: Some(8192),
            bytes_in: 0,
            bytes_out: 0,
            tcp_rtt_us: None,
            tcp_rttvar_us: None,
            tcp_snd_cwnd: None,
            tcp_snd_ssthresh: None,
            tcp_snd_mss: None,
            tcp_snd_wnd: None,
            tcp_unacked: None,
            tcp_total_retrans: None,
            tcp_notsent_bytes: None,
            tcp_bytes_acked: None,
            tcp_busy_time_us: None,
            tcp_rwnd_limited_us: None,
            tcp_sndbuf_limited_us: None,
        }
    }

    #[test]
    fn in_flight_is_the_kernel_send_queue_less_what_is_unsent() {
        let s = sample(0.0, 0, "p");
        assert_eq!(layers_of(&s), [1, 10, 200, 3000, 2000]);
        let point = &series(&[s])[0].points[0];
        assert_eq!(
            point.total(),
            1 + 10 + 200 + 5000,
            "the layers sum to every byte held"
        );
    }

    #[test]
    fn missing_kernel_figures_count_as_nothing_and_unsent_past_the_queue_as_none_in_flight() {
        let mut s = sample(0.0, 0, "p");
        s.kernel_recv_queue = None;
        s.kernel_send_queue = None;
        assert_eq!(layers_of(&s), [0, 10, 200, 3000, 0]);
        s.kernel_send_unsent = None;
        assert_eq!(layers_of(&s), [0, 10, 200, 0, 0]);
    }

    #[test]
    fn rows_group_by_id_and_peer_in_time_order() {
        let rows = [
            sample(0.2, 0, "a"),
            sample(0.0, 0, "a"),
            sample(0.1, 1, "b"),
            // Id 0 given again to a later connection.
            sample(0.3, 0, "c"),
        ];
        let all = series(&rows);
        let keys: Vec<(usize, &str, usize)> = all
            .iter()
            .map(|s| (s.id, s.peer.as_str(), s.points.len()))
            .collect();
        assert_eq!(keys, [(0, "a", 2), (1, "b", 1), (0, "c", 1)]);
        assert_eq!(all[0].points[0].time, 0.0);
    }

    #[test]
    fn panels_are_the_largest_first_up_to_the_cap() {
        let mut rows = Vec::new();
        for id in 0..9 {
            let mut s = sample(0.0, id, &format!("p{id}"));
            s.send_buf_used = [5, 9, 1, 7, 3, 8, 2, 6, 4][id] * 1000;
            rows.push(s);
        }
        let ids: Vec<usize> = select_panels(series(&rows), MAX_PANELS)
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, [1, 5, 3, 7, 0, 8]);
    }

    #[test]
    fn equal_peaks_keep_the_order_connections_appeared_in() {
        let rows = [sample(0.0, 4, "x"), sample(0.0, 2, "y")];
        let ids: Vec<usize> = select_panels(series(&rows), 6)
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, [4, 2]);
    }

    #[test]
    fn limit_runs_merge_equal_neighbours() {
        let mut rows = vec![
            sample(0.0, 0, "a"),
            sample(0.1, 0, "a"),
            sample(0.2, 0, "a"),
        ];
        rows[2].limit = "idle".to_string();
        let points = &series(&rows)[0].points;
        assert_eq!(
            limit_runs(points, 0.1),
            [(0.0, 0.2, "peer-window"), (0.2, 0.2 + 0.1, "idle")]
        );
    }

    #[test]
    fn bytes_read_as_a_person_says_them() {
        assert_eq!(human_bytes(0.0), "0 B");
        assert_eq!(human_bytes(65536.0), "64 KiB");
        assert_eq!(human_bytes(4_067_328.0), "3.9 MiB");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
    }

    #[test]
    fn the_picture_is_svg_with_the_legend_and_a_panel_per_connection() {
        let rows = [sample(0.0, 0, "127.0.0.1:1"), sample(0.1, 0, "127.0.0.1:1")];
        let svg = render_svg("t.csv", &series(&rows), 1, 0.1, 0.1).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        for layer in LAYERS {
            assert!(svg.contains(layer.name), "{} in the legend", layer.name);
        }
        assert!(svg.contains("connection 0 (echo, peer 127.0.0.1:1"));
        assert!(svg.contains("bytes waiting") && svg.contains("seconds"));
    }

    #[test]
    fn steps_hold_each_value_until_the_next_sample() {
        assert_eq!(
            steps(&[(0.0, 1.0), (0.5, 3.0), (1.0, 2.0)], 1.25),
            [
                (0.0, 1.0),
                (0.5, 1.0),
                (0.5, 3.0),
                (1.0, 3.0),
                (1.0, 2.0),
                (1.25, 2.0)
            ]
        );
        assert_eq!(steps(&[(2.0, 5.0)], 2.5), [(2.0, 5.0), (2.5, 5.0)]);
        assert!(steps(&[], 1.0).is_empty());
    }

    #[test]
    fn labels_name_panels_by_peer_or_id() {
        let mut all = series(&[sample(0.0, 3, "127.0.0.1:5000"), sample(0.0, 4, "x")]);
        let labels: Vec<Label> = ["127.0.0.1:5000=client C", "4=the other"]
            .iter()
            .map(|l| l.parse().unwrap())
            .collect();
        apply_labels(&mut all, &labels);
        assert_eq!(all[0].label.as_deref(), Some("client C"));
        assert_eq!(all[1].label.as_deref(), Some("the other"));
        for bad in ["nolabel", "=x", "x="] {
            assert!(bad.parse::<Label>().unwrap_err().contains(bad));
        }
        let svg = render_svg("t.csv", &all, 2, 0.0, 0.1).unwrap();
        assert!(svg.contains("client C: connection 3 (echo"), "{svg}");
    }

    #[test]
    fn regression_merged_recordings_say_their_own_interval() {
        // Two recordings of 50 ms each, put on one time axis 20 ms apart
        // (as the demos merge a server per recording): the distinct times
        // are 20 and 30 ms apart, the sampling is not.
        let mut rows = Vec::new();
        for i in 0..10 {
            rows.push(sample(i as f64 * 0.05, 1, "a"));
            rows.push(sample(0.02 + i as f64 * 0.05, 1, "b"));
        }
        let step = sampling_step(&rows);
        assert!((step - 0.05).abs() < 1e-9, "step {step}");
    }

    /// Every `points="x,y x,y ..."` list of polygons in `svg`.
    fn polygons(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.split("<polygon")
            .skip(1)
            .map(|rest| {
                let at = rest.find("points=\"").expect("a polygon has points") + 8;
                let list = &rest[at..at + rest[at..].find('"').expect("closing quote")];
                list.split_whitespace()
                    .map(|xy| {
                        let (x, y) = xy.split_once(',').expect("x,y");
                        (x.parse().expect("x"), y.parse().expect("y"))
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn regression_samples_are_drawn_as_steps_not_joined_by_slopes() {
        let mut rows = vec![
            sample(0.0, 0, "p"),
            sample(0.5, 0, "p"),
            sample(1.0, 0, "p"),
        ];
        rows[1].send_buf_used = 60_000;
        let svg = render_svg("t.csv", &series(&rows), 1, 1.0, 0.5).unwrap();
        let shapes = polygons(&svg);
        assert!(!shapes.is_empty(), "the layers are polygons");
        for shape in shapes {
            for pair in shape.windows(2) {
                let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
                assert!(
                    x0 == x1 || y0 == y1,
                    "a sloping edge from {:?} to {:?}",
                    pair[0],
                    pair[1]
                );
            }
        }
    }
}
