//! `report.html`: one self-contained page (no external CSS or JavaScript) with the counts, the
//! seed's side-by-side top-K table per cluster, and the charts inlined as base64 PNGs.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::charts::{thousands, two_decimals, PNG_SIGNATURE};
use super::ReportError;
use crate::ratings::{DiffRankRow, Ratings};
use crate::sink::Summary;

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
    /// Who each cluster is (empty for a model made elsewhere).
    pub profiles: &'a [crate::segment::profile::Profile],
    /// How alike the subsets' rankings are, per cluster (empty with one subset).
    pub agreement: &'a [crate::agreement::AgreementRow],
}

/// The agreement section: one sentence per cluster, then the table.
fn agreement_section(h: &mut String, rows: &[crate::agreement::AgreementRow]) {
    if rows.is_empty() {
        return;
    }
    let num = |v: f64| {
        if v.is_finite() {
            format!("{v:.2}")
        } else {
            "–".to_string()
        }
    };
    h.push_str(
        "<section id=\"agreement\">\n<h2>How far the samples agree</h2>\n\
         <p>Per cluster and pair of subsets: the stations both top-K share, Kendall's tau and \
         Spearman's rho over the stations both rank, and the rank-biased overlap of the whole \
         rankings (1 = the same order, 0 = nothing in common; the first ten ranks weigh 86 %).</p>\n<ul>\n",
    );
    for (_, text) in crate::agreement::sentences(rows) {
        h.push_str(&format!("<li>{}</li>\n", escape(&text)));
    }
    h.push_str(
        "</ul>\n<table id=\"agreement-table\">\n<thead><tr><th>cluster</th><th>subsets</th>\
         <th>top-K overlap</th><th>Kendall's tau</th><th>Spearman's rho</th><th>RBO</th>\
         <th>stations both rank</th></tr></thead>\n<tbody>\n",
    );
    for r in rows {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{} / {}</td><td>{} of {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            r.cluster,
            escape(&r.subset_a),
            escape(&r.subset_b),
            r.overlap,
            r.top_k,
            num(r.kendall_tau),
            num(r.spearman_rho),
            num(r.rbo),
            r.common_stations
        ));
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
}

/// A profile statistic with two decimals, `–` when it has none (an empty cluster).
fn stat(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "–".to_string()
    }
}

/// A cluster's profile as a table: each numeric column's mean and median against the
/// population's, then its distinctive categories with their lift.
fn profile_table(h: &mut String, p: &crate::segment::profile::Profile) {
    let c = p.cluster;
    let _ = writeln!(
        h,
        "<table class=\"profile\" id=\"profile-cluster-{c}\" data-cluster=\"{c}\"><caption>Who they are: {} ({:.1} % of households)</caption>\n\
<thead><tr><th>column</th><th>mean</th><th>everyone</th><th>median</th><th>everyone</th></tr></thead><tbody>",
        escape(&p.label),
        100.0 * p.share
    );
    for n in &p.numeric {
        let _ = writeln!(
            h,
            "<tr data-column=\"{0}\"><th>{0}</th><td class=\"n\">{1}</td><td class=\"n\">{2}</td><td class=\"n\">{3}</td><td class=\"n\">{4}</td></tr>",
            escape(&n.column),
            stat(n.mean),
            stat(n.population_mean),
            stat(n.median),
            stat(n.population_median)
        );
    }
    h.push_str("<tr class=\"sub\"><th>category</th><th>share</th><th>everyone</th><th colspan=\"2\">lift</th></tr>\n");
    for d in &p.distinctive {
        let _ = writeln!(
            h,
            "<tr data-category=\"{0}={1}\"><th>{0} = {1}</th><td class=\"n\">{2:.1} %</td><td class=\"n\">{3:.1} %</td><td class=\"n\" colspan=\"2\">{4:.2}</td></tr>",
            escape(&d.column),
            escape(&d.value),
            100.0 * d.share,
            100.0 * d.population_share,
            d.lift
        );
    }
    h.push_str("</tbody></table>\n");
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
table.profile { margin-top: 0.6em; font-size: 0.9em; }
table.profile caption { text-align: left; font-weight: bold; }
table.profile tr.sub th { font-weight: bold; background: #f0f0f0; text-align: center; }
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
        let profile = input.profiles.iter().find(|p| p.cluster == c);
        let label = profile
            .map(|p| format!(": {}", escape(&p.label)))
            .unwrap_or_default();
        let _ = write!(
            h,
            "<div class=\"cluster\" id=\"cluster-{c}\">\n<h3>Cluster {c}{label}{size}</h3>\n\
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
                        let mut trust = format!(" · index {:.0}", d.index);
                        if let (Some(a), Some(b)) =
                            (d.intervals.diff_rank_lo, d.intervals.diff_rank_hi)
                        {
                            trust.push_str(&format!(" · interval {a:.4} to {b:.4}"));
                        }
                        if let Some(sh) = d.intervals.top_k_share {
                            trust.push_str(&format!(
                                " · in the top {} of {:.0} % of resamples",
                                input.top,
                                100.0 * sh
                            ));
                        }
                        let _ = write!(
                            h,
                            "<td class=\"{class}\" data-subset=\"{}\" title=\"popularity {:.4} % in this subset · general population {:.4} % · diff-rank {:.4}{trust}\">{} (<span>{}</span>)</td>",
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
        h.push_str("</tbody></table>\n");
        if let Some(p) = profile {
            profile_table(&mut h, p);
        }
        h.push_str("</div>\n");
    }
    h.push_str("</div>\n</section>\n");
    agreement_section(&mut h, input.agreement);

    // ---- charts
    for (label, png) in input.diff_rank_pngs {
        figure(
            &mut h,
            &format!("diff-rank-chart-{}", escape(label)),
            &format!(
                "Top diff-rank stations per cluster: subset {}",
                subset_heading(label)
            ),
            "Blue: watched more by the cluster than by the general population; red: less. \
Whiskers: the diff-rank's confidence interval; shade: the share of bootstrap resamples that \
keep the station in the top-K (full colour when all do, or without a bootstrap).",
            Some(png),
        );
    }
    if !input.profiles.is_empty() {
        h.push_str(
            "<section id=\"segments\">\n<h2>The segments</h2>\n<table id=\"segment-labels\">\
<thead><tr><th>cluster</th><th>label</th><th>households</th><th>sets it apart (lift)</th></tr></thead><tbody>\n",
        );
        for p in input.profiles {
            let apart: Vec<String> = p
                .distinctive
                .iter()
                .map(|d| {
                    format!(
                        "{} = {} ({:.2})",
                        escape(&d.column),
                        escape(&d.value),
                        d.lift
                    )
                })
                .collect();
            let _ = writeln!(
                h,
                "<tr data-cluster=\"{}\"><th>{}</th><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                p.cluster,
                p.cluster,
                escape(&p.label),
                thousands(p.households),
                apart.join(", ")
            );
        }
        h.push_str("</tbody></table>\n</section>\n");
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
    use crate::report::charts::{cluster_sizes, diff_rank_bars, pca_scatter, shorten};
    use crate::report::testing::{points, row};
    use crate::sink::Timing;
    use tempfile::TempDir;

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
                profiles: &[],
                agreement: &[crate::agreement::AgreementRow {
                    cluster: 0,
                    subset_a: "3".into(),
                    subset_b: "all".into(),
                    top_k: 3,
                    overlap: 0,
                    overlap_share: 0.0,
                    common_stations: 1,
                    kendall_tau: f64::NAN,
                    spearman_rho: f64::NAN,
                    rbo: 0.0,
                }],
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
        assert!(html.contains("title=\"popularity 4.0000 % in this subset · general population 1.0000 % · diff-rank 3.0000 · index 400\">55555"));

        // the agreement: a sentence per cluster and the table, the data's labels escaped
        assert!(html.contains("<li>Cluster 0: the samples disagree on its top 3; the least alike, the 1-in-3 sample and all households, share 0 of them"), "{html}");
        assert!(html.contains("<tr><td>0</td><td>3 / all</td><td>0 of 3</td><td>–</td><td>–</td><td>0.00</td><td>1</td></tr>"));

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
                profiles: &[],
                agreement: &[],
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
                profiles: &[],
                agreement: &[],
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
                        index: 100.0 * (d + 1.2) / 1.2,
                        intervals: crate::ratings::Intervals {
                            diff_rank_lo: Some(d - 0.1),
                            diff_rank_hi: Some(d + 0.15),
                            top_k_share: Some(1.0 - 0.1 * r as f64),
                            ..Default::default()
                        },
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
                profiles: &[],
                agreement: &[],
            },
        )
        .unwrap();
    }
}
