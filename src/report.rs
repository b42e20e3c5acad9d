//! What a person reads instead of the CSVs: PNG charts drawn with plotters (the seed's PCA
//! scatter of the households coloured by cluster, households per cluster, and the top
//! diff-rank stations of each cluster) and a self-contained `report.html` holding the counts,
//! the seed's side-by-side top-K table (all / 17th's / 3rd's) per cluster and the charts
//! inlined as base64 PNGs, with no external CSS or JavaScript. Text is drawn with the DejaVu
//! Sans font shipped in `assets/fonts`, registered once with plotters' ab_glyph backend under
//! the family `sans-serif`, so no system font library is needed.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};
use thiserror::Error;

use crate::ratings::{DiffRankRow, Ratings};
use crate::sink::Summary;

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
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
const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// Errors drawing a chart or writing the report; each names the file being written.
#[derive(Debug, Error)]
pub enum ReportError {
    /// plotters failed to draw or save the chart.
    #[error("cannot draw {}: {message}", path.display())]
    Draw {
        /// The file being written.
        path: PathBuf,
        /// plotters' message.
        message: String,
    },
    /// Writing the file failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The embedded font could not be loaded.
    #[error("cannot draw {}: the embedded font DejaVuSans.ttf is unusable", path.display())]
    Font {
        /// The file being written.
        path: PathBuf,
    },
}

impl ReportError {
    /// The process exit code this error means.
    pub fn exit_code(&self) -> i32 {
        match self {
            ReportError::Draw { .. } | ReportError::Io { .. } => crate::exit::IO,
            ReportError::Font { .. } => crate::exit::SOFTWARE,
        }
    }
}

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
fn thousands(n: u64) -> String {
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
fn two_decimals(v: f64) -> String {
    let s = format!("{v:.2}");
    if s == "-0.00" {
        "0.00".to_string()
    } else {
        s
    }
}

/// At most `max` characters, an ellipsis marking the cut.
fn shorten(s: &str, max: usize) -> String {
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
    let lo = mine.iter().map(|r| r.diff_rank).fold(0.0f64, f64::min);
    let hi = mine.iter().map(|r| r.diff_rank).fold(0.0f64, f64::max);
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
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, y + 0.15), (d, y + 0.85)],
                col.mix(0.85).filled(),
            )))
            .map_err(e)?;
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((d, y + 0.5))
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

/// Standard base64 (RFC 4648 section 4, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(chunk[0]) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Escape text for HTML content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// What the HTML report shows.
pub struct ReportInput<'a> {
    /// Page title.
    pub title: &'a str,
    /// The ratings; the side-by-side table is built from `diff_rank`.
    pub ratings: &'a Ratings,
    /// The counts.
    pub summary: &'a Summary,
    /// Number of clusters.
    pub k: u32,
    /// Top-K: the table has ranks `1..=top`.
    pub top: usize,
    /// The PCA chart, if drawn.
    pub pca_png: Option<&'a Path>,
    /// The cluster-size chart, if drawn.
    pub cluster_sizes_png: Option<&'a Path>,
    /// The diff-rank charts, one per subset (label, chart), in column order.
    pub diff_rank_pngs: &'a [(String, PathBuf)],
    /// Households per cluster.
    pub cluster_sizes: &'a [u64],
}

/// `3` -> `3rd`, `17` -> `17th`, `22` -> `22nd`, `111` -> `111th`.
pub fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// The seed's column heading of a subset: `all`, `17th's`, `3rd's`.
pub fn subset_heading(label: &str) -> String {
    match label.parse::<u64>() {
        Ok(n) => format!("{}'s", ordinal(n)),
        Err(_) => label.to_string(),
    }
}

/// Subset labels as columns: each once, in the order given (`--subsets all,17,3` gives the
/// seed's columns; the user's order is kept rather than re-sorted).
pub fn column_order<S: AsRef<str>>(labels: &[S]) -> Vec<String> {
    let mut v: Vec<String> = Vec::with_capacity(labels.len());
    for l in labels {
        if !v.iter().any(|x| x == l.as_ref()) {
            v.push(l.as_ref().to_string());
        }
    }
    v
}

/// The rank rows a top-K table shows: `1..=top`, but no further than the deepest rank that
/// has a row (a `--top` beyond the stations adds no empty rows).
pub fn table_ranks(rows: &[DiffRankRow], top: usize) -> std::ops::RangeInclusive<u32> {
    let deepest = rows.iter().map(|r| r.rank).max().unwrap_or(0);
    1..=deepest.min(u32::try_from(top).unwrap_or(u32::MAX))
}

/// Append a figure with the PNG at `png` inlined; nothing when it is not given, unreadable or
/// not a PNG.
fn figure(out: &mut String, id: &str, heading: &str, note: &str, png: Option<&Path>) {
    let Some(p) = png else { return };
    let bytes = match std::fs::read(p) {
        Ok(b) => b,
        Err(err) => {
            tracing::warn!(path = %p.display(), error = %err, "chart left out of the report");
            return;
        }
    };
    if !bytes.starts_with(PNG_SIGNATURE) {
        tracing::warn!(path = %p.display(), "not a PNG, left out of the report");
        return;
    }
    let _ = write!(
        out,
        "<section id=\"{id}\">\n<h2>{h}</h2>\n<figure><img alt=\"{h}\" src=\"data:image/png;base64,{b}\">\n<figcaption>{n}</figcaption></figure>\n</section>\n",
        h = escape(heading),
        b = base64(&bytes),
        n = escape(note),
    );
}

/// A duration for the timing table: milliseconds below a second (`0.4 ms`, `123.4 ms`), else
/// seconds (`1.234 s`).
fn seconds(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.3} s", ms / 1000.0)
    }
}

const STYLE: &str = "
body { font-family: 'DejaVu Sans', Verdana, sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
h3 { font-size: 1em; margin: 0 0 0.4em 0; }
h3 small { font-weight: normal; color: #666; }
.meta { color: #555; margin-top: 0; }
.boxes { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
table { border-collapse: collapse; font-size: 0.9em; }
caption { text-align: left; font-weight: bold; padding-bottom: 0.3em; }
th, td { border: 1px solid #d4d4d4; padding: 3px 9px; }
thead th { background: #f0f0f0; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tbody th { text-align: left; font-weight: normal; background: #fafafa; }
table.topk td { font-family: 'DejaVu Sans Mono', monospace; white-space: nowrap; min-width: 9em; }
table.topk td.pos span { color: #1f77b4; }
table.topk td.neg span { color: #d62728; }
table.topk tbody th { text-align: right; }
td[title] { cursor: help; }
figure { margin: 0.5em 0; }
figure img { max-width: 100%; border: 1px solid #e4e4e4; }
figcaption { color: #555; font-size: 0.9em; }
footer { margin-top: 3em; color: #888; font-size: 0.85em; }
";

/// Write `report.html`: self-contained (no external CSS, JavaScript or images). It shows the
/// counts (records, valid, malformed and malformed by kind, unknown households, households,
/// clusters, stations, timing), households per cluster, then per cluster the seed's
/// side-by-side top-K table (a column per subset: `all`, then the numeric subsets from the
/// largest n to the smallest; rows rank 1..K; each cell `station_num (diff_rank)` with the
/// popularity and general-population ratings in its tooltip; a missing row an empty cell),
/// then the diff-rank, PCA and cluster-size charts inlined as `data:image/png;base64` URLs. A
/// chart whose path is `None`, missing or not a PNG is left out without error. Every string
/// taken from the data is HTML-escaped.
pub fn write_html(path: &Path, input: &ReportInput) -> Result<(), ReportError> {
    let html = render_html(input);
    std::fs::write(path, html).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn render_html(input: &ReportInput) -> String {
    let s = input.summary;
    let rows = &input.ratings.diff_rank;
    let mut h = String::with_capacity(64 * 1024);
    let title = escape(input.title);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    );
    let _ = writeln!(
        h,
        "<p class=\"meta\">Views <code>{}</code> · model <code>{}</code> · top {} per cluster · {} counting threads</p>",
        escape(&s.source),
        escape(&s.model),
        input.top,
        s.threads
    );

    // ---- counts
    h.push_str("<section id=\"summary\">\n<h2>Counts</h2>\n<div class=\"boxes\">\n");
    h.push_str("<table id=\"counts\"><caption>Records and model</caption><tbody>\n");
    let counts: [(&str, String, &str); 9] = [
        (
            "records",
            thousands(s.records),
            "records read, valid and malformed",
        ),
        ("valid", thousands(s.valid), "the general population"),
        (
            "malformed",
            thousands(s.malformed),
            "dropped, counted by kind",
        ),
        (
            "unknown households",
            thousands(s.unknown_household),
            "valid records of households without demographics",
        ),
        (
            "clustered views",
            thousands(s.clustered_views),
            "valid records of clustered households",
        ),
        ("households", thousands(s.households), "in the model"),
        ("clusters", thousands(u64::from(s.clusters)), "k"),
        (
            "stations",
            thousands(s.stations),
            "distinct, among valid records",
        ),
        (
            "subsets",
            column_order(&s.subsets)
                .iter()
                .map(|l| subset_heading(l))
                .collect::<Vec<_>>()
                .join(", "),
            "households whose rank in their cluster is a multiple of n",
        ),
    ];
    for (name, value, note) in counts {
        let class = if name == "subsets" {
            ""
        } else {
            " class=\"n\""
        };
        let _ = writeln!(
            h,
            "<tr><th title=\"{}\">{name}</th><td{class}>{}</td></tr>",
            escape(note),
            escape(&value)
        );
    }
    h.push_str("</tbody></table>\n");

    h.push_str(
        "<table id=\"malformed-by-kind\"><caption>Malformed records by kind</caption>\n\
<thead><tr><th>kind</th><th>records</th></tr></thead><tbody>\n",
    );
    if s.malformed_by_kind.is_empty() {
        h.push_str("<tr><td colspan=\"2\">none</td></tr>\n");
    }
    for (kind, n) in &s.malformed_by_kind {
        let _ = writeln!(
            h,
            "<tr><th>{}</th><td class=\"n\">{}</td></tr>",
            escape(kind),
            thousands(*n)
        );
    }
    h.push_str("</tbody></table>\n");

    let t = &s.timing;
    let _ = writeln!(
        h,
        "<table id=\"timing\"><caption>Timing</caption><tbody>\n\
<tr><th>load model</th><td class=\"n\">{}</td></tr>\n\
<tr><th>read and count</th><td class=\"n\">{}</td></tr>\n\
<tr><th>ratings</th><td class=\"n\">{}</td></tr>\n\
<tr><th>write</th><td class=\"n\">{}</td></tr>\n\
<tr><th>total</th><td class=\"n\">{}</td></tr>\n\
<tr><th>records per second</th><td class=\"n\">{}</td></tr>\n</tbody></table>",
        seconds(t.load_model_ms),
        seconds(t.count_ms),
        seconds(t.rate_ms),
        seconds(t.write_ms),
        seconds(t.total_ms),
        if t.records_per_second.is_finite() && t.records_per_second >= 0.0 {
            thousands(t.records_per_second.round() as u64)
        } else {
            "–".to_string()
        }
    );

    let total: u64 = input.cluster_sizes.iter().sum();
    if !input.cluster_sizes.is_empty() {
        h.push_str(
            "<table id=\"cluster-sizes\"><caption>Households per cluster</caption>\n\
<thead><tr><th>cluster</th><th>households</th><th>share</th></tr></thead><tbody>\n",
        );
        for (c, n) in input.cluster_sizes.iter().enumerate() {
            let share = if total > 0 {
                100.0 * *n as f64 / total as f64
            } else {
                0.0
            };
            let _ = writeln!(
                h,
                "<tr><th>{c}</th><td class=\"n\">{}</td><td class=\"n\">{share:.1} %</td></tr>",
                thousands(*n)
            );
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("</div>\n</section>\n");

    // ---- the seed's side-by-side top-K tables
    let mut labels: Vec<String> = s.subsets.clone();
    labels.extend(rows.iter().map(|r| r.subset.clone()));
    let labels = column_order(&labels);
    let mut clusters: BTreeSet<u32> = (0..input.k).collect();
    clusters.extend(rows.iter().map(|r| r.cluster));
    let ranks = table_ranks(rows, input.top);
    let mut cell: HashMap<(&str, u32, u32), &DiffRankRow> = HashMap::new();
    for r in rows {
        cell.entry((r.subset.as_str(), r.cluster, r.rank))
            .or_insert(r);
    }
    let _ = writeln!(
        h,
        "<section id=\"top-k\">\n<h2>Top {} stations by diff-rank, per cluster</h2>\n\
<p>Each cell is <code>station (diff-rank)</code>: the station's popularity among the cluster's \
households in that subset minus its rating in the general population, in percentage points. \
Hover a cell for both ratings. Columns: {}.</p>\n<div class=\"boxes\">",
        input.top,
        labels
            .iter()
            .map(|l| escape(&subset_heading(l)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for &c in &clusters {
        let size = input
            .cluster_sizes
            .get(c as usize)
            .map(|n| format!(" <small>· {} households</small>", thousands(*n)))
            .unwrap_or_default();
        let _ = write!(
            h,
            "<div class=\"cluster\" id=\"cluster-{c}\">\n<h3>Cluster {c}{size}</h3>\n\
<table class=\"topk\" id=\"topk-cluster-{c}\" data-cluster=\"{c}\">\n<thead><tr><th>rank</th>"
        );
        for l in &labels {
            let _ = write!(
                h,
                "<th data-subset=\"{}\">{}</th>",
                escape(l),
                escape(&subset_heading(l))
            );
        }
        h.push_str("</tr></thead>\n<tbody>\n");
        for rank in ranks.clone() {
            let _ = write!(h, "<tr data-rank=\"{rank}\"><th>{rank}</th>");
            for l in &labels {
                match cell.get(&(l.as_str(), c, rank)) {
                    Some(d) => {
                        let class = if d.diff_rank < 0.0 { "neg" } else { "pos" };
                        let _ = write!(
                            h,
                            "<td class=\"{class}\" data-subset=\"{}\" title=\"popularity {:.4} % in this subset · general population {:.4} % · diff-rank {:.4}\">{} (<span>{}</span>)</td>",
                            escape(l),
                            d.popularity_rating,
                            d.genpop_rating,
                            d.diff_rank,
                            escape(&d.station_num),
                            two_decimals(d.diff_rank)
                        );
                    }
                    None => {
                        let _ = write!(h, "<td data-subset=\"{}\"></td>", escape(l));
                    }
                }
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody></table>\n</div>\n");
    }
    h.push_str("</div>\n</section>\n");

    // ---- charts
    for (label, png) in input.diff_rank_pngs {
        figure(
            &mut h,
            &format!("diff-rank-chart-{}", escape(label)),
            &format!(
                "Top diff-rank stations per cluster: subset {}",
                subset_heading(label)
            ),
            "Blue: watched more by the cluster than by the general population; red: less.",
            Some(png),
        );
    }
    figure(
        &mut h,
        "pca-chart",
        "Households in the first two principal components",
        "Left: every household coloured by its cluster. Right: the cluster centroids' projections.",
        input.pca_png,
    );
    figure(
        &mut h,
        "cluster-sizes-chart",
        "Households per cluster",
        "",
        input.cluster_sizes_png,
    );
    let _ = writeln!(
        h,
        "<footer>viewpulse {}</footer>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION")
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Timing;
    use tempfile::TempDir;

    /// Checks the PNG signature and returns IHDR's width and height.
    fn png_size(p: &Path) -> (u32, u32) {
        let b = std::fs::read(p).unwrap();
        assert!(b.len() > 33, "{} is too short", p.display());
        assert_eq!(&b[..8], PNG_SIGNATURE, "{}", p.display());
        assert_eq!(&b[12..16], b"IHDR");
        let w = u32::from_be_bytes([b[16], b[17], b[18], b[19]]);
        let h = u32::from_be_bytes([b[20], b[21], b[22], b[23]]);
        (w, h)
    }

    fn row(subset: &str, cluster: u32, rank: u32, station: &str, d: f64) -> DiffRankRow {
        DiffRankRow {
            subset: subset.into(),
            cluster,
            rank,
            station_num: station.into(),
            diff_rank: d,
            popularity_rating: d + 1.0,
            genpop_rating: 1.0,
        }
    }

    fn points(n: usize, k: u32) -> Vec<PcaPoint> {
        (0..n)
            .map(|i| PcaPoint {
                x: ((i * 7919) % 1000) as f64 / 100.0 - 5.0,
                y: ((i * 104_729) % 997) as f64 / 200.0 - 2.5,
                cluster: i as u32 % k.max(1),
            })
            .collect()
    }

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

    #[test]
    fn ordinals_and_headings() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 17, 21, 22, 23, 111]
            .iter()
            .map(|&n| ordinal(n))
            .collect();
        assert_eq!(
            got,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "17th", "21st", "22nd", "23rd",
                "111th"
            ]
        );
        assert_eq!(subset_heading("17"), "17th's");
        assert_eq!(subset_heading("all"), "all");
        assert_eq!(
            column_order(&["3", "all", "17", "2", "3"]),
            ["3", "all", "17", "2"]
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(two_decimals(-0.001), "0.00");
        assert_eq!(two_decimals(0.5663), "0.57");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }

    #[test]
    fn base64_known_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd, 0x00]), "//79AA==");
    }

    fn decode64(s: &str) -> Vec<u8> {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        assert_eq!(s.len() % 4, 0, "padded base64");
        let vals: Vec<u32> = s
            .bytes()
            .filter(|&b| b != b'=')
            .map(|b| T.iter().position(|&t| t == b).unwrap() as u32)
            .collect();
        let mut out = Vec::new();
        for ch in vals.chunks(4) {
            let mut n = 0u32;
            for (i, v) in ch.iter().enumerate() {
                n |= v << (18 - 6 * i);
            }
            for i in 0..ch.len() - 1 {
                out.push((n >> (16 - 8 * i)) as u8);
            }
        }
        out
    }

    #[test]
    fn base64_round_trips_every_length() {
        let data: Vec<u8> = (0..=255u8).rev().collect();
        for len in 0..data.len() {
            assert_eq!(decode64(&base64(&data[..len])), &data[..len]);
        }
    }

    /// The text of the cells of `<tr data-rank="rank">` in the table `topk-cluster-c`, each
    /// with the heading of its column (the rank column left out), unescaped.
    fn table_row(html: &str, cluster: u32, rank: u32) -> Vec<(String, String)> {
        let start = html
            .find(&format!("id=\"topk-cluster-{cluster}\""))
            .unwrap();
        let table = &html[start..start + html[start..].find("</table>").unwrap()];
        let cells_of = |tr: &str| -> Vec<String> {
            let tr = tr.replace("</td>", "</th>");
            let mut v: Vec<String> = tr
                .split("</th>")
                .map(|c| unescape(&strip_tags(c)))
                .collect();
            v.pop(); // after the last cell
            v
        };
        let h = table.find("<thead><tr>").unwrap() + "<thead><tr>".len();
        let headings = cells_of(&table[h..h + table[h..].find("</tr>").unwrap()]);
        let r = table.find(&format!("<tr data-rank=\"{rank}\">")).unwrap();
        let r = r + table[r..].find('>').unwrap() + 1;
        let cells = cells_of(&table[r..r + table[r..].find("</tr>").unwrap()]);
        assert_eq!(headings.len(), cells.len(), "{headings:?} {cells:?}");
        assert_eq!(headings[0], "rank");
        assert_eq!(cells[0], rank.to_string());
        headings.into_iter().zip(cells).skip(1).collect()
    }

    fn strip_tags(s: &str) -> String {
        let mut out = String::new();
        let mut inside = false;
        for ch in s.chars() {
            match ch {
                '<' => inside = true,
                '>' => inside = false,
                c if !inside => out.push(c),
                _ => {}
            }
        }
        out.trim().to_string()
    }

    fn unescape(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    }

    #[test]
    fn html_has_the_side_by_side_tables_escaped_and_the_charts_inlined() {
        let dir = TempDir::new().unwrap();
        let ratings = Ratings {
            popularity: vec![],
            genpop: vec![],
            diff_rank: vec![
                row("17", 1, 2, "55555", 3.0),
                row("3", 1, 2, "33333", -2.0),
                row("all", 1, 2, "<b>&\"", 1.0),
                row("all", 0, 1, "11111", 0.5),
                row("17", 0, 1, "17017", 0.25),
            ],
        };
        let mut by_kind = std::collections::BTreeMap::new();
        by_kind.insert("too_few_fields".to_string(), 3u64);
        by_kind.insert("<script>".to_string(), 1u64);
        let summary = Summary {
            source: "views & more.csv".into(),
            subsets: vec!["all".into(), "3".into(), "17".into()],
            records: 1_234_567,
            valid: 1_234_563,
            malformed: 4,
            malformed_by_kind: by_kind,
            households: 9,
            clusters: 2,
            timing: Timing {
                total_ms: 1500.0,
                records_per_second: 823_045.0,
                ..Timing::default()
            },
            ..Summary::default()
        };
        let sizes_png = dir.path().join("sizes.png");
        cluster_sizes(&sizes_png, &[4, 5]).unwrap();
        let diff_png = dir.path().join("diff.png");
        diff_rank_bars(&diff_png, &ratings.diff_rank, "all", 2).unwrap();
        let out = dir.path().join("report.html");
        write_html(
            &out,
            &ReportInput {
                title: "t <&>",
                ratings: &ratings,
                summary: &summary,
                k: 2,
                top: 3,
                pca_png: Some(&dir.path().join("missing.png")),
                cluster_sizes_png: Some(&sizes_png),
                diff_rank_pngs: &[("all".to_string(), diff_png.clone())],
                cluster_sizes: &[4, 5],
            },
        )
        .unwrap();
        let html = std::fs::read_to_string(&out).unwrap();

        // counts, with the data's strings escaped
        assert!(html.contains("<title>t &lt;&amp;&gt;</title>"));
        assert!(html.contains("1,234,567"));
        assert!(html.contains("views &amp; more.csv"));
        assert!(html.contains("<th>&lt;script&gt;</th><td class=\"n\">1</td>"));
        assert!(html.contains("1.500 s"));
        assert!(!html.contains("<script"));

        // one table per cluster, columns in the order given (all / 3rd's / 17th's), ranks 1..3
        let c1r2 = table_row(&html, 1, 2);
        let headings: Vec<&str> = c1r2.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(headings, ["all", "3rd's", "17th's"]);
        assert_eq!(c1r2[0].1, "<b>&\" (1.00)");
        assert_eq!(c1r2[1].1, "33333 (-2.00)");
        assert_eq!(c1r2[2].1, "55555 (3.00)");
        assert!(html.contains("&lt;b&gt;&amp;&quot; ("));
        assert!(!html.contains("<b>&\""));
        let c0r1 = table_row(&html, 0, 1);
        assert_eq!(c0r1[0].1, "11111 (0.50)");
        assert_eq!(c0r1[1].1, "", "no row: empty cell");
        assert_eq!(c0r1[2].1, "17017 (0.25)");
        // no cluster has a rank-3 row: --top 3 adds no empty row past the deepest rank
        assert!(!html.contains("data-rank=\"3\""));
        assert!(html.contains("title=\"popularity 4.0000 % in this subset · general population 1.0000 % · diff-rank 3.0000\">55555"));

        // the two charts that exist are inlined, in order, and decode to the files' bytes
        let imgs: Vec<&str> = html.split("src=\"data:image/png;base64,").skip(1).collect();
        assert_eq!(imgs.len(), 2, "the missing PCA chart is skipped");
        let decoded: Vec<Vec<u8>> = imgs
            .iter()
            .map(|s| decode64(&s[..s.find('"').unwrap()]))
            .collect();
        assert_eq!(decoded[0], std::fs::read(&diff_png).unwrap());
        assert_eq!(decoded[1], std::fs::read(&sizes_png).unwrap());
        assert!(!html.contains("id=\"pca-chart\""));
        // self-contained
        assert!(!html.contains("<link") && !html.contains("http://") && !html.contains("https://"));
    }

    #[test]
    fn html_without_charts_or_rows_still_lists_every_cluster() {
        let dir = TempDir::new().unwrap();
        let ratings = Ratings::default();
        let summary = Summary {
            subsets: vec!["17".into(), "all".into()],
            ..Summary::default()
        };
        let out = dir.path().join("report.html");
        write_html(
            &out,
            &ReportInput {
                title: "empty",
                ratings: &ratings,
                summary: &summary,
                k: 3,
                top: 7,
                pca_png: None,
                cluster_sizes_png: None,
                diff_rank_pngs: &[],
                cluster_sizes: &[],
            },
        )
        .unwrap();
        let html = std::fs::read_to_string(&out).unwrap();
        assert!(!html.contains("<img"));
        for c in 0..3 {
            // every cluster's table, with its columns in the order given and no rank rows:
            // there is no row to show (and --top adds no empty ones)
            let at = html.find(&format!("id=\"topk-cluster-{c}\"")).unwrap();
            let table = &html[at..at + html[at..].find("</table>").unwrap()];
            assert!(table.find("17th&#39;s").unwrap() < table.find("\">all</th>").unwrap());
            assert!(!table.contains("data-rank"));
        }
        assert!(!html.contains("topk-cluster-3"));
        let err = write_html(
            &dir.path().join("missing/report.html"),
            &ReportInput {
                title: "x",
                ratings: &ratings,
                summary: &summary,
                k: 1,
                top: 1,
                pca_png: None,
                cluster_sizes_png: None,
                diff_rank_pngs: &[],
                cluster_sizes: &[],
            },
        )
        .unwrap_err();
        assert!(matches!(err, ReportError::Io { .. }));
        assert!(err.to_string().contains("report.html"));
    }

    /// Writes the charts and the report into `$VIEWPULSE_REPORT_PREVIEW` to look at them.
    #[test]
    #[ignore]
    fn preview() {
        let Ok(dir) = std::env::var("VIEWPULSE_REPORT_PREVIEW") else {
            return;
        };
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pts = points(80_000, 6);
        let cents: Vec<(f64, f64)> = (0..6)
            .map(|c| (c as f64 - 2.5, (c % 3) as f64 - 1.0))
            .collect();
        pca_scatter(&dir.join("pca.png"), &pts, 6, &cents).unwrap();
        let sizes = [12_345, 8_000, 23_456, 999, 15_000, 40_321];
        cluster_sizes(&dir.join("cluster_sizes.png"), &sizes).unwrap();
        let mut rows = Vec::new();
        for label in ["all", "3", "17"] {
            for c in 0..6u32 {
                for r in 1..=7u32 {
                    let d = 0.6 - 0.11 * r as f64 + 0.05 * c as f64;
                    rows.push(DiffRankRow {
                        subset: label.into(),
                        cluster: c,
                        rank: r,
                        station_num: format!("{}", 10_000 + 977 * r + 131 * c),
                        diff_rank: d,
                        popularity_rating: d + 1.2,
                        genpop_rating: 1.2,
                    });
                }
            }
        }
        diff_rank_bars(&dir.join("diff_rank_all.png"), &rows, "all", 6).unwrap();
        diff_rank_bars(&dir.join("diff_rank_empty.png"), &rows[..3], "all", 2).unwrap();
        cluster_sizes(&dir.join("cluster_sizes_empty.png"), &[]).unwrap();
        pca_scatter(&dir.join("pca_small.png"), &points(40, 1), 1, &[]).unwrap();
        let ratings = Ratings {
            popularity: vec![],
            genpop: vec![],
            diff_rank: rows,
        };
        let summary = Summary {
            source: "views_static.csv".into(),
            model: "model".into(),
            subsets: vec!["all".into(), "3".into(), "17".into()],
            records: 1_000_000,
            valid: 999_000,
            malformed: 1_000,
            households: sizes.iter().sum(),
            clusters: 6,
            stations: 321,
            top: 7,
            threads: 2,
            ..Summary::default()
        };
        write_html(
            &dir.join("report.html"),
            &ReportInput {
                title: "viewpulse preview",
                ratings: &ratings,
                summary: &summary,
                k: 6,
                top: 7,
                pca_png: Some(&dir.join("pca.png")),
                cluster_sizes_png: Some(&dir.join("cluster_sizes.png")),
                diff_rank_pngs: &[("all".to_string(), dir.join("diff_rank_all.png"))],
                cluster_sizes: &sizes,
            },
        )
        .unwrap();
    }
}
