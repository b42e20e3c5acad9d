//! What a person reads: PNG charts drawn with plotters (the PCA scatter of the seed's two
//! plots, households per cluster, top diff-rank stations per cluster) and a self-contained
//! `report.html` with the counts, the seed's side-by-side top-K table and the charts inlined.
//! Text is drawn with the DejaVu Sans font shipped in `assets/fonts`, registered with
//! plotters' ab_glyph backend, so no system font library is needed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use thiserror::Error;

use crate::ratings::{DiffRankRow, Ratings};
use crate::sink::Summary;

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
/// Most points drawn in a scatter; larger inputs take every n-th point.
pub const MAX_POINTS: usize = 50_000;

/// Errors drawing a chart or writing the report.
#[derive(Debug, Error)]
pub enum ReportError {
    /// Drawing failed.
    #[error("cannot draw {path}: {message}")]
    Draw {
        /// The file.
        path: PathBuf,
        /// plotters' message.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The embedded font could not be loaded.
    #[error("the embedded font is unusable")]
    Font,
}

fn font() -> Result<(), ReportError> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(ReportError::Font)
    }
}

fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> ReportError + '_ {
    move |e| ReportError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A point of the PCA plot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PcaPoint {
    /// First component.
    pub x: f64,
    /// Second component.
    pub y: f64,
    /// Cluster of the household.
    pub cluster: u32,
}

fn colour(c: u32) -> RGBColor {
    let p = Palette99::pick(c as usize).to_rgba();
    RGBColor(p.0, p.1, p.2)
}

fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (-1.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad, hi + pad)
}

/// The seed's two PCA plots side by side: every household coloured by cluster, and the same
/// with each cluster's centroid marked and labelled.
pub fn pca_scatter(
    path: &Path,
    points: &[PcaPoint],
    k: u32,
    centroids_2d: &[(f64, f64)],
) -> Result<(), ReportError> {
    font()?;
    let step = points.len().div_ceil(MAX_POINTS).max(1);
    let shown: Vec<&PcaPoint> = points.iter().step_by(step).collect();
    let (x0, x1) = span(
        shown
            .iter()
            .map(|p| p.x)
            .chain(centroids_2d.iter().map(|c| c.0)),
    );
    let (y0, y1) = span(
        shown
            .iter()
            .map(|p| p.y)
            .chain(centroids_2d.iter().map(|c| c.1)),
    );
    let root = BitMapBackend::new(path, (1400, 620)).into_drawing_area();
    let e = draw_err(path);
    root.fill(&WHITE).map_err(&e)?;
    let (left, right) = root.split_horizontally(700);
    let sampled = if step > 1 {
        format!(" (every {step}th of {} households)", points.len())
    } else {
        format!(" ({} households)", points.len())
    };
    for (area, with_centroids) in [(left, false), (right, true)] {
        let title = if with_centroids {
            "PCA with cluster centroids".to_string()
        } else {
            format!("PCA of household features{sampled}")
        };
        let mut chart = ChartBuilder::on(&area)
            .caption(title, (FAMILY, 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .x_desc("pca_x")
            .y_desc("pca_y")
            .label_style((FAMILY, 12))
            .draw()
            .map_err(&e)?;
        for c in 0..k.max(1) {
            let col = colour(c);
            let style = if with_centroids {
                col.mix(0.25).filled()
            } else {
                col.mix(0.6).filled()
            };
            let series = chart
                .draw_series(
                    shown
                        .iter()
                        .filter(|p| p.cluster == c)
                        .map(|p| Circle::new((p.x, p.y), 2, style)),
                )
                .map_err(&e)?;
            if !with_centroids && c < k {
                series
                    .label(format!("cluster {c}"))
                    .legend(move |(x, y)| Circle::new((x, y), 4, col.filled()));
            }
        }
        if with_centroids {
            for (c, &(cx, cy)) in centroids_2d.iter().enumerate() {
                let col = colour(c as u32);
                chart
                    .draw_series(std::iter::once(Cross::new(
                        (cx, cy),
                        9,
                        col.stroke_width(3),
                    )))
                    .map_err(&e)?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("c{c}"),
                        (cx, cy),
                        (FAMILY, 16).into_font().color(&BLACK),
                    )))
                    .map_err(&e)?;
            }
        } else if k > 0 {
            chart
                .configure_series_labels()
                .label_font((FAMILY, 12))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(&e)?;
        }
    }
    root.present().map_err(&e)?;
    Ok(())
}

/// Households per cluster, each bar labelled with its count.
pub fn cluster_sizes(path: &Path, sizes: &[u64]) -> Result<(), ReportError> {
    font()?;
    let e = draw_err(path);
    let root = BitMapBackend::new(path, (800, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let n = sizes.len().max(1) as u32;
    let top = sizes.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption("Households per cluster", (FAMILY, 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((0u32..n).into_segmented(), 0f64..top)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc("cluster")
        .y_desc("households")
        .label_style((FAMILY, 12))
        .disable_x_mesh()
        .draw()
        .map_err(&e)?;
    for (c, &v) in sizes.iter().enumerate() {
        let c = c as u32;
        let col = colour(c);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [
                    (SegmentValue::Exact(c), 0.0),
                    (SegmentValue::Exact(c + 1), v as f64),
                ],
                col.mix(0.8).filled(),
            )))
            .map_err(&e)?;
        chart
            .draw_series(std::iter::once(Text::new(
                v.to_string(),
                (SegmentValue::CenterOf(c), v as f64 + top * 0.02),
                (FAMILY, 14).into_font().color(&BLACK),
            )))
            .map_err(&e)?;
    }
    root.present().map_err(&e)?;
    Ok(())
}

/// Top diff-rank stations of one subset: one panel per cluster, a horizontal bar per station
/// (over-watched in blue, under-watched in red).
pub fn diff_rank_bars(
    path: &Path,
    rows: &[DiffRankRow],
    subset: &str,
    k: u32,
) -> Result<(), ReportError> {
    font()?;
    let e = draw_err(path);
    let k = k.max(1);
    let cols = k.min(3);
    let grid_rows = k.div_ceil(cols);
    let root = BitMapBackend::new(path, (cols * 420, grid_rows * 300 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let (title, body) = root.split_vertically(40);
    title
        .draw(&Text::new(
            format!("Top diff-rank stations per cluster, subset {subset}"),
            (12, 10),
            (FAMILY, 20).into_font().color(&BLACK),
        ))
        .map_err(&e)?;
    let panels = body.split_evenly((grid_rows as usize, cols as usize));
    for (c, panel) in panels.iter().enumerate().take(k as usize) {
        let mine: Vec<&DiffRankRow> = rows.iter().filter(|r| r.cluster == c as u32).collect();
        let n = mine.len().max(1);
        let lo = mine.iter().map(|r| r.diff_rank).fold(0.0f64, f64::min);
        let hi = mine.iter().map(|r| r.diff_rank).fold(0.0f64, f64::max);
        let pad = ((hi - lo) * 0.1).max(0.1);
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("cluster {c}"), (FAMILY, 15))
            .margin(8)
            .x_label_area_size(26)
            .y_label_area_size(8)
            .build_cartesian_2d((lo - pad)..(hi + pad), 0f64..n as f64)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .label_style((FAMILY, 11))
            .draw()
            .map_err(&e)?;
        for (i, r) in mine.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            let col = if r.diff_rank >= 0.0 { BLUE } else { RED };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y + 0.15), (r.diff_rank, y + 0.85)],
                    col.mix(0.6).filled(),
                )))
                .map_err(&e)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{} ({:+.2})", r.station_num, r.diff_rank),
                    (lo - pad * 0.9, y + 0.7),
                    (FAMILY, 12).into_font().color(&BLACK),
                )))
                .map_err(&e)?;
        }
    }
    root.present().map_err(&e)?;
    Ok(())
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Escape text for HTML.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            c => o.push(c),
        }
    }
    o
}

/// What the HTML report shows.
pub struct ReportInput<'a> {
    /// Page title.
    pub title: &'a str,
    /// The ratings.
    pub ratings: &'a Ratings,
    /// The counts.
    pub summary: &'a Summary,
    /// Number of clusters.
    pub k: u32,
    /// Top-K.
    pub top: usize,
    /// The PCA chart, if drawn.
    pub pca_png: Option<&'a Path>,
    /// The cluster-size chart, if drawn.
    pub cluster_sizes_png: Option<&'a Path>,
    /// The diff-rank chart, if drawn.
    pub diff_rank_png: Option<&'a Path>,
    /// Households per cluster.
    pub cluster_sizes: &'a [u64],
}

/// `3` -> `3rd`, `17` -> `17th`, `22` -> `22nd`.
pub fn ordinal(n: u32) -> String {
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
    match label.parse::<u32>() {
        Ok(n) => format!("{}'s", ordinal(n)),
        Err(_) => label.to_string(),
    }
}

/// Subset labels in the seed's column order: `all`, then larger n before smaller.
fn column_order(labels: &[String]) -> Vec<String> {
    let mut v = labels.to_vec();
    v.sort_by_key(|l| match l.parse::<u32>() {
        Ok(n) => (1, u32::MAX - n),
        Err(_) => (0, 0),
    });
    v
}

fn image(out: &mut String, heading: &str, png: Option<&Path>) -> Result<(), ReportError> {
    let Some(p) = png else { return Ok(()) };
    let Ok(bytes) = std::fs::read(p) else {
        return Ok(());
    };
    let _ = write!(
        out,
        "<h2>{}</h2>\n<img alt=\"{}\" src=\"data:image/png;base64,{}\">\n",
        escape(heading),
        escape(heading),
        base64(&bytes)
    );
    Ok(())
}

/// Write `report.html`: self-contained, the PNGs inlined.
pub fn write_html(path: &Path, input: &ReportInput) -> Result<(), ReportError> {
    let s = input.summary;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
body{{font-family:sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:1em 0}}\
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} th{{background:#f0f0f0}}\
td.s{{text-align:left;font-family:monospace}} img{{max-width:100%;border:1px solid #ddd}}\
.cluster{{background:#f7f7ff}}</style></head><body>\n<h1>{t}</h1>\n",
        t = escape(input.title)
    );
    let _ = write!(
        h,
        "<p>Source <code>{}</code>, model <code>{}</code>.</p>\n<table id=\"counts\"><tr><th>records</th><th>valid</th><th>malformed</th><th>unknown households</th><th>clustered views</th><th>households</th><th>clusters</th><th>stations</th><th>seconds</th><th>records/s</th></tr>\n<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.0}</td></tr></table>\n",
        escape(&s.source),
        escape(&s.model),
        s.records,
        s.valid,
        s.malformed,
        s.unknown_household,
        s.clustered_views,
        s.households,
        s.clusters,
        s.stations,
        s.timing.total_ms / 1000.0,
        s.timing.records_per_second
    );
    h.push_str("<table id=\"malformed\"><tr><th>malformed kind</th><th>records</th></tr>\n");
    for (kind, n) in &s.malformed_by_kind {
        let _ = writeln!(
            h,
            "<tr><td class=\"s\">{}</td><td>{n}</td></tr>",
            escape(kind)
        );
    }
    h.push_str("</table>\n");
    if !input.cluster_sizes.is_empty() {
        h.push_str("<table id=\"sizes\"><tr><th>cluster</th><th>households</th></tr>\n");
        for (c, n) in input.cluster_sizes.iter().enumerate() {
            let _ = writeln!(h, "<tr><td>{c}</td><td>{n}</td></tr>");
        }
        h.push_str("</table>\n");
    }
    // the seed's side-by-side table
    let labels = column_order(&s.subsets);
    let _ = write!(
        h,
        "<h2>Top {} stations by diff-rank, per cluster</h2>\n<p>Each cell: station (diff-rank = popularity in the cluster's subset − general population, in points).</p>\n<table id=\"side-by-side\"><tr><th>cluster</th><th>rank</th>",
        input.top
    );
    for l in &labels {
        let _ = write!(h, "<th>{}</th>", escape(&subset_heading(l)));
    }
    h.push_str("</tr>\n");
    for c in 0..input.k {
        for rank in 1..=input.top as u32 {
            let _ = write!(
                h,
                "<tr class=\"cluster\" data-cluster=\"{c}\" data-rank=\"{rank}\"><td>{c}</td><td>{rank}</td>"
            );
            for l in &labels {
                let cell = input
                    .ratings
                    .diff_rank
                    .iter()
                    .find(|d| &d.subset == l && d.cluster == c && d.rank == rank);
                match cell {
                    Some(d) => {
                        let _ = write!(
                            h,
                            "<td class=\"s\" data-subset=\"{}\" title=\"popularity {:.3} %, general population {:.3} %\">{} ({:+.2})</td>",
                            escape(l),
                            d.popularity_rating,
                            d.genpop_rating,
                            escape(&d.station_num),
                            d.diff_rank
                        );
                    }
                    None => {
                        let _ = write!(h, "<td class=\"s\" data-subset=\"{}\"></td>", escape(l));
                    }
                }
            }
            h.push_str("</tr>\n");
        }
    }
    h.push_str("</table>\n");
    image(
        &mut h,
        "Top diff-rank stations per cluster",
        input.diff_rank_png,
    )?;
    image(
        &mut h,
        "Households in the first two principal components",
        input.pca_png,
    )?;
    image(&mut h, "Households per cluster", input.cluster_sizes_png)?;
    h.push_str("</body></html>\n");
    std::fs::write(path, h).map_err(|e| ReportError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratings::DiffRankRow;

    fn png_size(p: &Path) -> (u32, u32) {
        let b = std::fs::read(p).unwrap();
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{}", p.display());
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

    #[test]
    fn charts_are_pngs_of_the_asked_size() {
        let dir = tempfile::tempdir().unwrap();
        let pts: Vec<PcaPoint> = (0..1000)
            .map(|i| PcaPoint {
                x: (i % 37) as f64,
                y: (i % 11) as f64 * 0.5,
                cluster: i % 3,
            })
            .collect();
        let p = dir.path().join("pca.png");
        pca_scatter(&p, &pts, 3, &[(1.0, 1.0), (5.0, 2.0), (9.0, 3.0)]).unwrap();
        assert_eq!(png_size(&p), (1400, 620));
        pca_scatter(&p, &[], 1, &[]).unwrap();
        assert_eq!(png_size(&p), (1400, 620));
        let s = dir.path().join("sizes.png");
        cluster_sizes(&s, &[10, 0, 5]).unwrap();
        assert_eq!(png_size(&s), (800, 420));
        cluster_sizes(&s, &[]).unwrap();
        let d = dir.path().join("diff.png");
        let rows = vec![
            row("all", 0, 1, "123", 2.5),
            row("all", 0, 2, "04321", -0.5),
            row("all", 1, 1, "9", 1.0),
        ];
        diff_rank_bars(&d, &rows, "all", 2).unwrap();
        assert_eq!(png_size(&d), (840, 340));
        diff_rank_bars(&d, &[], "all", 1).unwrap();
        assert_eq!(png_size(&d), (420, 340));
    }

    #[test]
    fn ordinals() {
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
    }

    fn decode64(s: &str) -> Vec<u8> {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let vals: Vec<u32> = s
            .bytes()
            .filter(|&b| b != b'=')
            .map(|b| T.iter().position(|&t| t == b).unwrap() as u32)
            .collect();
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
    fn html_has_the_side_by_side_table_escaped_and_inlined_images() {
        let dir = tempfile::tempdir().unwrap();
        let ratings = Ratings {
            popularity: vec![],
            genpop: vec![],
            diff_rank: vec![
                row("17", 1, 2, "55555", 3.0),
                row("3", 1, 2, "33333", 2.0),
                row("all", 1, 2, "<b>&\"", 1.0),
                row("all", 0, 1, "11111", 0.5),
            ],
        };
        let summary = Summary {
            subsets: vec!["all".into(), "3".into(), "17".into()],
            records: 42,
            ..Summary::default()
        };
        let png = dir.path().join("s.png");
        cluster_sizes(&png, &[3, 4]).unwrap();
        let out = dir.path().join("report.html");
        write_html(
            &out,
            &ReportInput {
                title: "t",
                ratings: &ratings,
                summary: &summary,
                k: 2,
                top: 2,
                pca_png: None,
                cluster_sizes_png: Some(&png),
                diff_rank_png: Some(&dir.path().join("missing.png")),
                cluster_sizes: &[3, 4],
            },
        )
        .unwrap();
        let html = std::fs::read_to_string(&out).unwrap();
        // header order: all, 17th's, 3rd's
        let a = html.find("<th>all</th>").unwrap();
        let b = html.find("<th>17th's</th>").unwrap();
        let c = html.find("<th>3rd's</th>").unwrap();
        assert!(a < b && b < c);
        let tr = html.find("data-cluster=\"1\" data-rank=\"2\"").unwrap();
        let line = &html[tr..tr + html[tr..].find("</tr>").unwrap()];
        let cells: Vec<&str> = line.split("<td").skip(3).collect();
        assert!(cells[0].contains("&lt;b&gt;&amp;&quot;"), "{line}");
        assert!(cells[1].contains("55555"), "{line}");
        assert!(cells[2].contains("33333"), "{line}");
        assert!(!html.contains("<b>&\""));
        let start = html.find("base64,").unwrap() + 7;
        let end = start + html[start..].find('"').unwrap();
        assert_eq!(decode64(&html[start..end]), std::fs::read(&png).unwrap());
        assert_eq!(
            html.matches("<img").count(),
            1,
            "the missing chart is skipped"
        );
    }
}
