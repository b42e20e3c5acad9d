//! The PNG charts, drawn with plotters and the embedded font: the PCA scatter, households per
//! cluster, the diff-rank bars of each cluster, and the load test's chart.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use super::html::{ordinal, subset_heading};
use super::ReportError;
use crate::ratings::DiffRankRow;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Most points drawn in the PCA scatter; larger inputs take every n-th point.
pub const MAX_POINTS: usize = 50_000;
/// Size in pixels of [`pca_scatter`]'s image.
pub const PCA_SIZE: (u32, u32) = (1400, 660);
/// Size in pixels of [`cluster_sizes`]'s image.
pub const CLUSTER_SIZES_SIZE: (u32, u32) = (800, 440);
/// Most bars drawn in one panel of [`diff_rank_bars`].
pub const MAX_BARS: usize = 30;
const PANEL_W: u32 = 460;
const PANEL_MIN_H: u32 = 300;
const TITLE_H: u32 = 56;
pub(super) const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// Register the embedded font once; every chart calls this first.
fn font(path: &Path) -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(ReportError::Font {
            path: path.to_path_buf(),
        })
    }
}

/// plotters' bitmap backend error (its crate does not re-export the type's name).
type BitmapError = <BitMapBackend<'static> as plotters::backend::DrawingBackend>::ErrorType;

fn draw_err(path: &Path) -> impl Fn(DrawingAreaErrorKind<BitmapError>) -> ReportError + '_ {
    move |e| ReportError::Draw {
        path: path.to_path_buf(),
        message: draw_message(&e),
    }
}

/// plotters' error in one phrase: the I/O error inside the image encoder's error (a full
/// disk: `No space left on device`), not its `Debug` text.
fn draw_message(e: &DrawingAreaErrorKind<BitmapError>) -> String {
    match e {
        DrawingAreaErrorKind::BackendError(plotters_backend::DrawingErrorKind::DrawingError(
            BitmapError::IOError(io),
        )) => io.to_string(),
        DrawingAreaErrorKind::BackendError(plotters_backend::DrawingErrorKind::DrawingError(
            BitmapError::ImageError(img),
        )) => img.to_string(),
        other => other.to_string(),
    }
}

fn text_style(size: u32, colour: &RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(colour).pos(Pos::new(h, v))
}

/// A point of the PCA plot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PcaPoint {
    /// First principal component.
    pub x: f64,
    /// Second principal component.
    pub y: f64,
    /// Cluster of the household.
    pub cluster: u32,
}

/// matplotlib's `tab10`, then plotters' 99-colour palette.
const TAB10: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const POSITIVE: RGBColor = RGBColor(31, 119, 180);
const NEGATIVE: RGBColor = RGBColor(214, 39, 40);
const GREY: RGBColor = RGBColor(90, 90, 90);

/// The colour of cluster `c` in every chart.
fn colour(c: u32) -> RGBColor {
    match TAB10.get(c as usize) {
        Some(&col) => col,
        None => {
            let p = Palette99::pick(c as usize).to_rgba();
            RGBColor(p.0, p.1, p.2)
        }
    }
}

/// `(lo, hi)` padded by 5 %, or `(-1, 1)` when there is nothing finite.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() || !hi.is_finite() {
        return (-1.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad, hi + pad)
}

/// `1234567` -> `1,234,567`.
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Two decimals, never `-0.00`.
pub(super) fn two_decimals(v: f64) -> String {
    let s = format!("{v:.2}");
    if s == "-0.00" {
        "0.00".to_string()
    } else {
        s
    }
}

/// At most `max` characters, an ellipsis marking the cut.
pub(super) fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut o: String = s.chars().take(max.saturating_sub(1)).collect();
        o.push('…');
        o
    }
}

/// Take every `step`-th point so that at most [`MAX_POINTS`] are drawn.
pub fn subsample_step(n: usize) -> usize {
    n.div_ceil(MAX_POINTS).max(1)
}

/// The seed's two PCA plots side by side in one `PCA_SIZE` PNG: (1) every household in the
/// first two principal components coloured by cluster, with a legend `cluster 0` ..
/// `cluster k-1`; (2) the same households faded with each cluster centroid's projection
/// marked by a large dot labelled with its cluster. More than [`MAX_POINTS`] households are
/// subsampled deterministically (every n-th point in input order), as the caption says.
/// Points with a non-finite coordinate are left out and counted in the caption.
pub fn pca_scatter(
    path: &Path,
    points: &[PcaPoint],
    k: u32,
    centroids_2d: &[(f64, f64)],
) -> Result<(), ReportError> {
    font(path)?;
    let e = draw_err(path);
    let finite: Vec<&PcaPoint> = points
        .iter()
        .filter(|p| p.x.is_finite() && p.y.is_finite())
        .collect();
    let step = subsample_step(finite.len());
    let shown: Vec<&PcaPoint> = finite.iter().copied().step_by(step).collect();
    let centroids: Vec<(u32, f64, f64)> = centroids_2d
        .iter()
        .enumerate()
        .filter(|(_, c)| c.0.is_finite() && c.1.is_finite())
        .map(|(i, c)| (i as u32, c.0, c.1))
        .collect();
    // legend entries: clusters 0..k, and any cluster seen beyond it (at most 30 listed)
    let seen = shown.iter().map(|p| p.cluster.saturating_add(1)).max();
    let legend_n = k.max(seen.unwrap_or(0)).min(30);
    let (x0, x1) = span(
        shown
            .iter()
            .map(|p| p.x)
            .chain(centroids.iter().map(|c| c.1)),
    );
    let (y0, y1) = span(
        shown
            .iter()
            .map(|p| p.y)
            .chain(centroids.iter().map(|c| c.2)),
    );

    let root = BitMapBackend::new(path, PCA_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let (head, body) = root.split_vertically(40);
    let mut caption = format!(
        "PCA of the household features, k = {k}: {} households",
        thousands(points.len() as u64)
    );
    if step > 1 {
        let _ = write!(
            caption,
            ", every {} drawn ({} points)",
            ordinal(step as u64),
            thousands(shown.len() as u64)
        );
    } else {
        caption.push_str(", all drawn");
    }
    let skipped = points.len() - finite.len();
    if skipped > 0 {
        let _ = write!(
            caption,
            "; {} without finite coordinates left out",
            thousands(skipped as u64)
        );
    }
    head.draw(&Text::new(
        caption,
        (16, 22),
        text_style(18, &BLACK, HPos::Left, VPos::Center),
    ))
    .map_err(&e)?;

    let radius = if shown.len() > 5_000 { 1 } else { 2 };
    let (left, right) = body.split_horizontally(PCA_SIZE.0 / 2);
    for (area, with_centroids) in [(left, false), (right, true)] {
        let title = if with_centroids {
            "Cluster centroids projected"
        } else {
            "Households coloured by cluster"
        };
        let mut chart = ChartBuilder::on(&area)
            .caption(title, (FAMILY, 16))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .x_desc("PC1")
            .y_desc("PC2")
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 13))
            .light_line_style(RGBColor(238, 238, 238))
            .max_light_lines(2)
            .draw()
            .map_err(&e)?;
        let alpha = if with_centroids { 0.15 } else { 0.7 };
        chart
            .draw_series(
                shown.iter().map(|p| {
                    Circle::new((p.x, p.y), radius, colour(p.cluster).mix(alpha).filled())
                }),
            )
            .map_err(&e)?;
        if with_centroids {
            for &(c, cx, cy) in &centroids {
                let col = colour(c);
                let marker = EmptyElement::at((cx, cy))
                    + Circle::new((0, 0), 9, col.filled())
                    + Circle::new((0, 0), 9, BLACK.stroke_width(2))
                    + Text::new(
                        format!("{c}"),
                        (12, -12),
                        text_style(15, &BLACK, HPos::Left, VPos::Center),
                    );
                chart.draw_series(std::iter::once(marker)).map_err(&e)?;
            }
            if centroids.is_empty() {
                let (w, h) = area.dim_in_pixel();
                area.draw(&Text::new(
                    "(no centroids given)",
                    (w as i32 / 2, h as i32 / 2),
                    text_style(14, &GREY, HPos::Center, VPos::Center),
                ))
                .map_err(&e)?;
            }
        } else if legend_n > 0 {
            for c in 0..legend_n {
                let col = colour(c);
                chart
                    .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                    .map_err(&e)?
                    .label(format!("cluster {c}"))
                    .legend(move |(x, y)| Circle::new((x, y), 5, col.filled()));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FAMILY, 12))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(160, 160, 160))
                .draw()
                .map_err(&e)?;
        }
    }
    root.present().map_err(&e)?;
    Ok(())
}

/// Households per cluster in one `CLUSTER_SIZES_SIZE` PNG: one bar per cluster in the
/// cluster's colour (the PCA scatter's), each labelled with its count; the x axis names the
/// clusters, the y axis counts households.
pub fn cluster_sizes(path: &Path, sizes: &[u64]) -> Result<(), ReportError> {
    font(path)?;
    let e = draw_err(path);
    let root = BitMapBackend::new(path, CLUSTER_SIZES_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let n = sizes.len().max(1);
    let total: u64 = sizes.iter().sum();
    // integer y coordinates, so that the axis never shows fractions of a household
    let most = sizes.iter().copied().max().unwrap_or(0);
    let top = (most.saturating_add(most / 8))
        .max(most.saturating_add(1))
        .max(4);
    let caption = format!(
        "Households per cluster: {} households in {} clusters",
        thousands(total),
        sizes.len()
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FAMILY, 18))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(76)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0u64..top)
        .map_err(&e)?;
    let y_fmt = |v: &u64| thousands(*v);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_desc("cluster")
        .y_desc("households")
        .y_label_formatter(&y_fmt)
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 13))
        .light_line_style(RGBColor(238, 238, 238))
        .max_light_lines(1)
        .draw()
        .map_err(&e)?;
    let label_size = if n > 16 { 10 } else { 13 };
    for (c, &v) in sizes.iter().enumerate() {
        let x = c as f64;
        let col = colour(c as u32);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x - 0.38, 0), (x + 0.38, v)],
                col.mix(0.85).filled(),
            )))
            .map_err(&e)?;
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((x, v))
                    + Text::new(
                        thousands(v),
                        (0, -4),
                        text_style(label_size, &BLACK, HPos::Center, VPos::Bottom),
                    ),
            ))
            .map_err(&e)?;
        // the cluster's name under its bar (plotters' own ticks would not sit on every bar)
        let (px, py) = chart.backend_coord(&(x, 0));
        root.draw(&Text::new(
            c.to_string(),
            (px, py + 6),
            text_style(12, &BLACK, HPos::Center, VPos::Top),
        ))
        .map_err(&e)?;
    }
    if sizes.is_empty() {
        let (px, py) = chart.backend_coord(&(0.0, top / 2));
        root.draw(&Text::new(
            "(no clusters)",
            (px, py),
            text_style(14, &GREY, HPos::Center, VPos::Center),
        ))
        .map_err(&e)?;
    }
    root.present().map_err(&e)?;
    Ok(())
}

/// Size of [`k_selection`]'s image.
pub const K_SELECTION_SIZE: (u32, u32) = (1000, 420);

/// The k range's chart: the inertia against k (the elbow) on the left, the silhouette against
/// k on the right, the recommended k marked on both.
pub fn k_selection(path: &Path, sel: &crate::segment::KSelection) -> Result<(), ReportError> {
    font(path)?;
    let e = draw_err(path);
    let root = BitMapBackend::new(path, K_SELECTION_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let (left, right) = root.split_horizontally(K_SELECTION_SIZE.0 / 2);
    let ks: Vec<f64> = sel.scores.iter().map(|r| r.k as f64).collect();
    let (k0, k1) = span(ks.iter().copied());
    type Panel<'a, 'b> = (
        &'a DrawingArea<BitMapBackend<'b>, Shift>,
        &'static str,
        &'static str,
    );
    let panels: [(Panel, Vec<f64>); 2] = [
        (
            (&left, "Inertia against k (the elbow)", "inertia"),
            sel.scores.iter().map(|r| r.inertia).collect(),
        ),
        (
            (&right, "Silhouette against k", "silhouette"),
            sel.scores.iter().map(|r| r.silhouette).collect(),
        ),
    ];
    for ((area, title, desc), values) in panels {
        let (lo, hi) = span(values.iter().copied().filter(|v| v.is_finite()));
        let pad = ((hi - lo) * 0.08).max(1e-9);
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FAMILY, 16))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(78)
            .build_cartesian_2d((k0 - 0.5)..(k1 + 0.5), (lo - pad)..(hi + pad))
            .map_err(&e)?;
        let y_fmt = |v: &f64| {
            if desc == "inertia" {
                thousands(v.round().max(0.0) as u64)
            } else {
                format!("{v:.3}")
            }
        };
        chart
            .configure_mesh()
            .x_desc("k")
            .y_desc(desc)
            .y_label_formatter(&y_fmt)
            .x_labels(ks.len().min(20))
            .x_label_formatter(&|v: &f64| format!("{v:.0}"))
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 13))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()
            .map_err(&e)?;
        let points: Vec<(f64, f64)> = ks
            .iter()
            .copied()
            .zip(values.iter().copied())
            .filter(|(_, v)| v.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour(0).stroke_width(2),
            ))
            .map_err(&e)?;
        chart
            .draw_series(points.iter().map(|&(k, v)| {
                let chosen = k as u32 == sel.recommended;
                Circle::new(
                    (k, v),
                    if chosen { 7 } else { 4 },
                    if chosen {
                        colour(1).filled()
                    } else {
                        colour(0).filled()
                    },
                )
            }))
            .map_err(&e)?;
        if let Some(&(k, v)) = points.iter().find(|(k, _)| *k as u32 == sel.recommended) {
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((k, v))
                        + Text::new(
                            format!("recommended k = {}", sel.recommended),
                            (8, -10),
                            text_style(13, &BLACK, HPos::Left, VPos::Bottom),
                        ),
                ))
                .map_err(&e)?;
        }
    }
    root.present().map_err(&e)?;
    Ok(())
}

/// One sample of a load test's timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadPoint {
    /// Seconds since the test started.
    pub t: f64,
    /// Records a second produced over the last interval.
    pub produced_rate: f64,
    /// Records a second counted by the daemon over the last interval.
    pub consumed_rate: f64,
    /// Consumer lag, records.
    pub lag: f64,
}

/// Size of the load-test chart.
pub const LOADTEST_SIZE: (u32, u32) = (1000, 640);

/// The load test's chart: throughput (produced and counted, records/s) over time above, the
/// consumer lag over time below.
pub fn loadtest_chart(path: &Path, title: &str, points: &[LoadPoint]) -> Result<(), ReportError> {
    font(path)?;
    let e = draw_err(path);
    let root = BitMapBackend::new(path, LOADTEST_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let root = root.titled(title, (FAMILY, 18)).map_err(&e)?;
    let (upper, lower) = root.split_vertically(LOADTEST_SIZE.1 / 2 - 10);
    let t_max = points.iter().map(|p| p.t).fold(1.0f64, f64::max);
    let rate_max = points
        .iter()
        .map(|p| p.produced_rate.max(p.consumed_rate))
        .fold(1.0f64, f64::max)
        * 1.1;
    let lag_max = points.iter().map(|p| p.lag).fold(1.0f64, f64::max) * 1.1;
    let y_fmt = |v: &f64| thousands(v.max(0.0).round() as u64);
    let mut top = ChartBuilder::on(&upper)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(84)
        .build_cartesian_2d(0.0..t_max, 0.0..rate_max)
        .map_err(&e)?;
    top.configure_mesh()
        .x_desc("seconds")
        .y_desc("records/s")
        .y_label_formatter(&y_fmt)
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 13))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(&e)?;
    let produced = colour(1);
    let consumed = colour(0);
    top.draw_series(LineSeries::new(
        points.iter().map(|p| (p.t, p.produced_rate)),
        produced.stroke_width(2),
    ))
    .map_err(&e)?
    .label("produced")
    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], produced.stroke_width(2)));
    top.draw_series(LineSeries::new(
        points.iter().map(|p| (p.t, p.consumed_rate)),
        consumed.stroke_width(2),
    ))
    .map_err(&e)?
    .label("counted by the daemon")
    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], consumed.stroke_width(2)));
    top.configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(200, 200, 200))
        .label_font((FAMILY, 12))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(&e)?;
    let mut bottom = ChartBuilder::on(&lower)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(84)
        .build_cartesian_2d(0.0..t_max, 0.0..lag_max)
        .map_err(&e)?;
    bottom
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("consumer lag (records)")
        .y_label_formatter(&y_fmt)
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 13))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(&e)?;
    let lag = colour(3);
    bottom
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.t, p.lag)),
            lag.stroke_width(2),
        ))
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}

/// Rows of `subset` per cluster `0..max(k, 1)`, by rank, at most [`MAX_BARS`] each; rows of
/// other subsets or of clusters `>= k` are left out.
fn diff_rank_panels<'a>(
    rows: &'a [DiffRankRow],
    subset: &str,
    k: u32,
) -> Vec<Vec<&'a DiffRankRow>> {
    let n = k.max(1) as usize;
    let mut panels: Vec<Vec<&DiffRankRow>> = vec![Vec::new(); n];
    for r in rows.iter().filter(|r| r.subset == subset) {
        if let Some(p) = panels.get_mut(r.cluster as usize) {
            p.push(r);
        }
    }
    for p in &mut panels {
        p.sort_by(|a, b| {
            a.rank
                .cmp(&b.rank)
                .then_with(|| a.station_num.as_bytes().cmp(b.station_num.as_bytes()))
        });
        p.truncate(MAX_BARS);
    }
    panels
}

fn grid(panels: usize) -> (u32, u32) {
    let cols = panels.clamp(1, 3) as u32;
    (cols, (panels as u32).div_ceil(cols))
}

fn panel_height(panels: &[Vec<&DiffRankRow>]) -> u32 {
    let most = panels.iter().map(Vec::len).max().unwrap_or(0) as u32;
    PANEL_MIN_H.max(90 + 28 * most)
}

/// The size in pixels of [`diff_rank_bars`]'s image for these arguments: `min(k, 3)` panels
/// of 460 pixels across, `⌈k / min(k, 3)⌉` rows of panels, each `max(300, 90 + 28·m)` pixels
/// tall (`m` the most bars in one panel), under a 56-pixel title (`k` taken as at least 1).
pub fn diff_rank_bars_size(rows: &[DiffRankRow], subset: &str, k: u32) -> (u32, u32) {
    let panels = diff_rank_panels(rows, subset, k);
    let (cols, grid_rows) = grid(panels.len());
    (cols * PANEL_W, TITLE_H + grid_rows * panel_height(&panels))
}

/// The top diff-rank stations of one subset, one panel per cluster `0..k` in a grid of up to
/// three columns (size: [`diff_rank_bars_size`]). Each panel has one horizontal bar per
/// station, rank 1 at the top, labelled on the left with its station_num and at the bar's end
/// with its diff-rank (2 decimals); stations watched more than by the general population are
/// blue, less red. Only rows whose `subset` equals `subset` and whose cluster is below `k`
/// are drawn, at most [`MAX_BARS`] per panel.
pub fn diff_rank_bars(
    path: &Path,
    rows: &[DiffRankRow],
    subset: &str,
    k: u32,
) -> Result<(), ReportError> {
    font(path)?;
    let e = draw_err(path);
    let panels = diff_rank_panels(rows, subset, k);
    let (cols, grid_rows) = grid(panels.len());
    let size = (cols * PANEL_W, TITLE_H + grid_rows * panel_height(&panels));
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let (head, body) = root.split_vertically(TITLE_H);
    head.draw(&Text::new(
        format!(
            "Top diff-rank stations per cluster, subset {}",
            subset_heading(subset)
        ),
        (14, 18),
        text_style(18, &BLACK, HPos::Left, VPos::Center),
    ))
    .map_err(&e)?;
    // colour key
    let mut x = 14;
    for (col, what) in [
        (POSITIVE, "watched more than by the general population"),
        (NEGATIVE, "watched less"),
    ] {
        head.draw(&Rectangle::new(
            [(x, 37), (x + 12, 49)],
            col.mix(0.85).filled(),
        ))
        .map_err(&e)?;
        head.draw(&Text::new(
            what,
            (x + 18, 43),
            text_style(12, &BLACK, HPos::Left, VPos::Center),
        ))
        .map_err(&e)?;
        x += 40 + 6 * what.chars().count() as i32;
    }

    // every panel has as many bar slots as the fullest one, so that bars are alike
    let slots = panels.iter().map(Vec::len).max().unwrap_or(0).max(5);
    let areas = body.split_evenly((grid_rows as usize, cols as usize));
    for (c, (mine, area)) in panels.iter().zip(areas.iter()).enumerate() {
        draw_diff_panel(path, &root, area, c, mine, slots)?;
    }
    root.present().map_err(&e)?;
    Ok(())
}

fn draw_diff_panel(
    path: &Path,
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    cluster: usize,
    mine: &[&DiffRankRow],
    slots: usize,
) -> Result<(), ReportError> {
    let e = &draw_err(path);
    if mine.is_empty() {
        let inner = area
            .titled(&format!("cluster {cluster}"), (FAMILY, 15))
            .map_err(e)?;
        let (w, h) = inner.dim_in_pixel();
        inner
            .draw(&Text::new(
                "(no stations in this subset)",
                (w as i32 / 2, h as i32 / 3),
                text_style(13, &GREY, HPos::Center, VPos::Center),
            ))
            .map_err(e)?;
        return Ok(());
    }
    let n = slots.max(mine.len());
    // the axis holds the bars and their intervals' whiskers
    let ends = |r: &&DiffRankRow| {
        [
            Some(r.diff_rank),
            r.intervals.diff_rank_lo,
            r.intervals.diff_rank_hi,
        ]
        .into_iter()
        .flatten()
        .filter(|v| v.is_finite())
        .collect::<Vec<f64>>()
    };
    let lo = mine.iter().flat_map(ends).fold(0.0f64, f64::min);
    let hi = mine.iter().flat_map(ends).fold(0.0f64, f64::max);
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (-1.0, 1.0)
    };
    let width = if hi - lo > 0.0 { hi - lo } else { 1.0 };
    // room for the value labels at the bars' ends
    let pad_hi = if hi > 0.0 { 0.25 } else { 0.05 } * width;
    let pad_lo = if lo < 0.0 { 0.25 } else { 0.05 } * width;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("cluster {cluster}"), (FAMILY, 15))
        .margin(10)
        .x_label_area_size(26)
        .y_label_area_size(96)
        .build_cartesian_2d((lo - pad_lo)..(hi + pad_hi), 0f64..n as f64)
        .map_err(e)?;
    let x_fmt = |v: &f64| two_decimals(*v);
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(5)
        .x_label_formatter(&x_fmt)
        .label_style((FAMILY, 11))
        .light_line_style(RGBColor(240, 240, 240))
        .max_light_lines(1)
        .draw()
        .map_err(e)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 0.0), (0.0, n as f64)],
            GREY.stroke_width(1),
        )))
        .map_err(e)?;
    for (i, r) in mine.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        let d = if r.diff_rank.is_finite() {
            r.diff_rank
        } else {
            0.0
        };
        let (col, anchor, dx) = if d >= 0.0 {
            (POSITIVE, HPos::Left, 4)
        } else {
            (NEGATIVE, HPos::Right, -4)
        };
        // the shade says the rank stability: the share of bootstrap resamples that keep the
        // station in the top-K (a full colour when every one does)
        let alpha = r
            .intervals
            .top_k_share
            .map_or(0.85, |s| 0.2 + 0.7 * s.clamp(0.0, 1.0));
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, y + 0.15), (d, y + 0.85)],
                col.mix(alpha).filled(),
            )))
            .map_err(e)?;
        if let (Some(a), Some(b)) = (r.intervals.diff_rank_lo, r.intervals.diff_rank_hi) {
            if a.is_finite() && b.is_finite() {
                let whisker = BLACK.stroke_width(1);
                chart
                    .draw_series([
                        PathElement::new(vec![(a, y + 0.5), (b, y + 0.5)], whisker),
                        PathElement::new(vec![(a, y + 0.35), (a, y + 0.65)], whisker),
                        PathElement::new(vec![(b, y + 0.35), (b, y + 0.65)], whisker),
                    ])
                    .map_err(e)?;
            }
        }
        let label_at = if d >= 0.0 {
            r.intervals
                .diff_rank_hi
                .filter(|v| v.is_finite())
                .map_or(d, |v| v.max(d))
        } else {
            r.intervals
                .diff_rank_lo
                .filter(|v| v.is_finite())
                .map_or(d, |v| v.min(d))
        };
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((label_at, y + 0.5))
                    + Text::new(
                        two_decimals(r.diff_rank),
                        (dx, 0),
                        text_style(11, &BLACK, anchor, VPos::Center),
                    ),
            ))
            .map_err(e)?;
        // the station's name in the label area, left of the plot
        let (px, py) = chart.backend_coord(&(lo - pad_lo, y + 0.5));
        root.draw(&Text::new(
            shorten(&r.station_num, 13),
            (px - 6, py),
            text_style(12, &BLACK, HPos::Right, VPos::Center),
        ))
        .map_err(e)?;
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testing::{png_size, points, row};
    use tempfile::TempDir;

    #[test]
    fn pca_scatter_writes_a_png_of_its_size() {
        let dir = TempDir::new().unwrap();
        let p = dir.path().join("pca.png");
        pca_scatter(
            &p,
            &points(1000, 6),
            6,
            &[(0.0, 0.0), (1.0, 1.0), (-2.0, 1.5)],
        )
        .unwrap();
        assert_eq!(png_size(&p), PCA_SIZE);
        assert_eq!(PCA_SIZE, (1400, 660));
        // empty, and k = 1 without centroids
        let q = dir.path().join("empty.png");
        pca_scatter(&q, &[], 0, &[]).unwrap();
        assert_eq!(png_size(&q), PCA_SIZE);
        let r = dir.path().join("k1.png");
        pca_scatter(&r, &points(10, 1), 1, &[]).unwrap();
        assert_eq!(png_size(&r), PCA_SIZE);
        // non-finite coordinates are left out, not a panic
        let mut bad = points(5, 2);
        bad[0].x = f64::NAN;
        bad[1].y = f64::INFINITY;
        let s = dir.path().join("nan.png");
        pca_scatter(&s, &bad, 2, &[(f64::NAN, 0.0)]).unwrap();
        assert_eq!(png_size(&s), PCA_SIZE);
    }

    #[test]
    fn pca_scatter_subsamples_large_inputs() {
        assert_eq!(subsample_step(0), 1);
        assert_eq!(subsample_step(MAX_POINTS), 1);
        assert_eq!(subsample_step(MAX_POINTS + 1), 2);
        assert_eq!(subsample_step(120_000), 3);
        for n in [1usize, 49_999, 50_000, 50_001, 100_000, 100_001, 1_234_567] {
            let drawn = n.div_ceil(subsample_step(n));
            assert!(drawn <= MAX_POINTS, "{n} -> {drawn}");
            assert!(drawn * 3 > MAX_POINTS || n <= MAX_POINTS, "{n} -> {drawn}");
        }
        let dir = TempDir::new().unwrap();
        let p = dir.path().join("big.png");
        pca_scatter(&p, &points(60_000, 4), 4, &[(0.0, 0.0)]).unwrap();
        assert_eq!(png_size(&p), PCA_SIZE);
    }

    #[test]
    fn cluster_sizes_writes_a_png_of_its_size() {
        let dir = TempDir::new().unwrap();
        let p = dir.path().join("sizes.png");
        cluster_sizes(&p, &[12_345, 0, 5, 987_654, 3, 44]).unwrap();
        assert_eq!(png_size(&p), CLUSTER_SIZES_SIZE);
        assert_eq!(CLUSTER_SIZES_SIZE, (800, 440));
        let q = dir.path().join("empty.png");
        cluster_sizes(&q, &[]).unwrap();
        assert_eq!(png_size(&q), CLUSTER_SIZES_SIZE);
        let r = dir.path().join("one.png");
        cluster_sizes(&r, &[7]).unwrap();
        assert_eq!(png_size(&r), CLUSTER_SIZES_SIZE);
    }

    #[test]
    fn diff_rank_bars_writes_a_png_of_its_size() {
        let dir = TempDir::new().unwrap();
        let rows = vec![
            row("all", 0, 1, "123", 2.5),
            row("all", 0, 2, "04321", -0.5),
            row("all", 1, 1, "9", 1.0),
            row("3", 0, 1, "other subset", 9.0),
            row("all", 7, 1, "cluster beyond k", 9.0),
        ];
        let p = dir.path().join("diff.png");
        diff_rank_bars(&p, &rows, "all", 2).unwrap();
        assert_eq!(png_size(&p), (920, 356));
        assert_eq!(diff_rank_bars_size(&rows, "all", 2), (920, 356));
        // six clusters: 3 x 2 panels
        let six: Vec<DiffRankRow> = (0..6)
            .flat_map(|c| {
                (1..=7)
                    .map(move |r| row("17", c, r, &format!("{}", 10_000 + r), 1.0 - r as f64 / 3.0))
            })
            .collect();
        let q = dir.path().join("six.png");
        diff_rank_bars(&q, &six, "17", 6).unwrap();
        assert_eq!(png_size(&q), (1380, 56 + 2 * 300));
        // many bars make taller panels
        let many: Vec<DiffRankRow> = (1..=12).map(|r| row("all", 0, r, "s", r as f64)).collect();
        let m = dir.path().join("many.png");
        diff_rank_bars(&m, &many, "all", 1).unwrap();
        assert_eq!(png_size(&m), (460, 56 + 90 + 28 * 12));
        // empty input and k = 1, k = 0
        let e = dir.path().join("empty.png");
        diff_rank_bars(&e, &[], "all", 1).unwrap();
        assert_eq!(png_size(&e), (460, 356));
        diff_rank_bars(&e, &[], "3", 0).unwrap();
        assert_eq!(png_size(&e), (460, 356));
        // all zeros and a non-finite value
        let z = vec![row("all", 0, 1, "0", 0.0), row("all", 0, 2, "n", f64::NAN)];
        diff_rank_bars(&e, &z, "all", 1).unwrap();
        assert_eq!(png_size(&e), (460, 356));
    }

    #[test]
    fn a_chart_in_a_missing_folder_is_an_error_naming_the_file() {
        let dir = TempDir::new().unwrap();
        let p = dir.path().join("no/such/folder/sizes.png");
        let err = cluster_sizes(&p, &[1, 2]).unwrap_err();
        assert!(
            matches!(&err, ReportError::Draw { path, .. } if path == &p),
            "{err:?}"
        );
        assert!(err.to_string().contains("sizes.png"), "{err}");
    }
}
