//! How much two subsets' rankings of the same cluster agree: the seed puts the top-K of all
//! households, of every 3rd and of every 17th side by side; this says how alike they are. Per
//! cluster and pair of subsets: the overlap of their top-K, Kendall's tau-b and Spearman's
//! rho over the stations both rank (their positions in each ranking), and the extrapolated
//! rank-biased overlap of the two whole rankings (Webber, Moffat and Zobel 2010, eq. 32,
//! persistence 0.9: the first ten ranks weigh 86 %). Pure functions of the counters.

use std::collections::HashMap;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::counters::{Counters, Subset};
use crate::ratings::{self, Ranking};

/// Items in the first `k` of both lists.
pub fn overlap<T: Eq + Hash>(a: &[T], b: &[T], k: usize) -> usize {
    let top: std::collections::HashSet<&T> = a.iter().take(k).collect();
    b.iter().take(k).filter(|x| top.contains(x)).count()
}

/// Positions (1-based) in `a` and in `b` of every item both lists hold, in `a`'s order.
pub fn common_ranks<T: Eq + Hash>(a: &[T], b: &[T]) -> (Vec<f64>, Vec<f64>) {
    let pos: HashMap<&T, usize> = b.iter().enumerate().map(|(i, x)| (x, i + 1)).collect();
    a.iter()
        .enumerate()
        .filter_map(|(i, x)| pos.get(x).map(|&j| ((i + 1) as f64, j as f64)))
        .unzip()
}

/// Kendall's tau-b of paired values (scipy.stats.kendalltau's default); NaN under 2 pairs or
/// when one side is constant. O(n²): the lists here are a few thousand stations at most.
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len();
    if n < 2 {
        return f64::NAN;
    }
    let (mut conc, mut disc, mut tx, mut ty) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            let dx = (x[i] - x[j]).signum() as i64 * i64::from(x[i] != x[j]);
            let dy = (y[i] - y[j]).signum() as i64 * i64::from(y[i] != y[j]);
            match (dx, dy) {
                (0, 0) => {}
                (0, _) => tx += 1,
                (_, 0) => ty += 1,
                _ if dx == dy => conc += 1,
                _ => disc += 1,
            }
        }
    }
    let denom = (((conc + disc + tx) * (conc + disc + ty)) as f64).sqrt();
    if denom == 0.0 {
        f64::NAN
    } else {
        (conc - disc) as f64 / denom
    }
}

/// Kendall's tau of two rankings without ties, `y` given in the order of `x` ascending (as
/// [`common_ranks`] returns them): the discordant pairs are `y`'s inversions, counted by a
/// merge sort in O(n log n), where [`kendall_tau_b`] takes O(n²) (a second at 5,000 common
/// stations for the 18 pairs of the default subsets).
pub fn kendall_tau_sorted(y: &[f64]) -> f64 {
    let n = y.len();
    if n < 2 {
        return f64::NAN;
    }
    fn sort_count(v: &mut [f64], buf: &mut Vec<f64>) -> u64 {
        let n = v.len();
        if n < 2 {
            return 0;
        }
        let mid = n / 2;
        let mut inv = sort_count(&mut v[..mid], buf) + sort_count(&mut v[mid..], buf);
        buf.clear();
        let (mut i, mut j) = (0, mid);
        while i < mid && j < n {
            if v[i] <= v[j] {
                buf.push(v[i]);
                i += 1;
            } else {
                buf.push(v[j]);
                inv += (mid - i) as u64;
                j += 1;
            }
        }
        buf.extend_from_slice(&v[i..mid]);
        buf.extend_from_slice(&v[j..n]);
        v.copy_from_slice(buf);
        inv
    }
    let mut v = y.to_vec();
    let discordant = sort_count(&mut v, &mut Vec::with_capacity(n)) as f64;
    let pairs = (n * (n - 1) / 2) as f64;
    (pairs - 2.0 * discordant) / pairs
}

/// Average ranks (ties share the mean of their positions), as scipy.stats.rankdata.
fn rankdata(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            r[o] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rho (scipy.stats.spearmanr): Pearson's correlation of the average ranks.
pub fn spearman_rho(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len();
    if n < 2 {
        return f64::NAN;
    }
    let (rx, ry) = (rankdata(x), rankdata(y));
    let mean = (n as f64 + 1.0) / 2.0;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (a, b) = (rx[i] - mean, ry[i] - mean);
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    if sxx == 0.0 || syy == 0.0 {
        f64::NAN
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Persistence of the rank-biased overlap.
pub const RBO_P: f64 = 0.9;

/// Extrapolated rank-biased overlap of two rankings without repeats (RBO_ext, eq. 32 of
/// Webber et al.: lists of different lengths), persistence `p`. 1 for identical lists, 0 for
/// disjoint ones; NaN when either is empty.
pub fn rbo_ext<T: Eq + Hash>(a: &[T], b: &[T], p: f64) -> f64 {
    let (s, l) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let (sl, ll) = (s.len(), l.len());
    if sl == 0 {
        return f64::NAN;
    }
    let mut seen_s = std::collections::HashSet::new();
    let mut seen_l = std::collections::HashSet::new();
    let mut x = 0usize; // overlap at depth d
    let mut x_s = 0usize; // overlap at depth sl
    let mut sum = 0.0;
    let mut extra = 0.0;
    let mut pd = 1.0;
    for d in 1..=ll {
        pd *= p;
        let li = &l[d - 1];
        if d <= sl {
            let si = &s[d - 1];
            if si == li {
                x += 1;
            } else {
                x += usize::from(seen_l.contains(si)) + usize::from(seen_s.contains(li));
            }
            seen_s.insert(si);
        } else if seen_s.contains(li) {
            x += 1;
        }
        seen_l.insert(li);
        if d == sl {
            x_s = x;
        }
        sum += x as f64 / d as f64 * pd;
        if d > sl {
            extra += x_s as f64 * (d - sl) as f64 / (sl as f64 * d as f64) * pd;
        }
    }
    let (x_l, xs) = (x as f64, x_s as f64);
    (1.0 - p) / p * (sum + extra) + ((x_l - xs) / ll as f64 + xs / sl as f64) * pd
}

/// One row of `agreement.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgreementRow {
    /// Cluster number.
    pub cluster: u32,
    /// The first subset's label (labels in byte order: `17` before `3` before `all`).
    pub subset_a: String,
    /// The second subset's label.
    pub subset_b: String,
    /// K.
    pub top_k: usize,
    /// Stations in both top-K.
    pub overlap: usize,
    /// `overlap / min(K, stations each ranks)`: the share of the top-K that could be shared
    /// (NaN when either ranks none).
    pub overlap_share: f64,
    /// Stations both subsets rank.
    pub common_stations: usize,
    /// Kendall's tau-b of their positions (NaN under two common stations).
    pub kendall_tau: f64,
    /// Spearman's rho of their positions.
    pub spearman_rho: f64,
    /// Extrapolated rank-biased overlap of the two whole rankings.
    pub rbo: f64,
}

/// The whole ranking of every (subset label, cluster): station names, best first, by the
/// ranking's exact order, stations with at least `min_views` views.
pub fn rankings(
    c: &Counters,
    subsets: &[Subset],
    ranking: Ranking,
) -> Vec<(String, u32, Vec<String>)> {
    let names = c.stations().names();
    let mut out = Vec::new();
    for (si, label) in ratings::subsets_by_label(subsets) {
        for cl in 0..c.clusters() {
            let mut ids: Vec<usize> = (0..names.len())
                .filter(|&s| {
                    let v = c.views(si, cl, s);
                    v > 0 && v >= ranking.min_views
                })
                .collect();
            let total: u64 = (0..names.len()).map(|s| c.views(si, cl, s)).sum();
            let station = |s: usize| (c.views(si, cl, s), c.genpop(s), &*names[s]);
            ids.sort_by(|&a, &b| {
                ratings::rank_order(ranking.rank_by, station(a), station(b), total, c.valid)
            });
            out.push((
                label.clone(),
                cl as u32,
                ids.iter().map(|&s| names[s].to_string()).collect(),
            ));
        }
    }
    out
}

/// Agreement of every pair of subsets, per cluster, from their whole rankings.
pub fn agreement(rankings: &[(String, u32, Vec<String>)], top: usize) -> Vec<AgreementRow> {
    let mut rows = Vec::new();
    let clusters: std::collections::BTreeSet<u32> = rankings.iter().map(|r| r.1).collect();
    for cl in clusters {
        let of: Vec<&(String, u32, Vec<String>)> = rankings.iter().filter(|r| r.1 == cl).collect();
        for i in 0..of.len() {
            for j in i + 1..of.len() {
                let (a, b) = (&of[i].2, &of[j].2);
                let (x, y) = common_ranks(a, b);
                let k = top.min(a.len()).min(b.len());
                let ov = overlap(a, b, top);
                rows.push(AgreementRow {
                    cluster: cl,
                    subset_a: of[i].0.clone(),
                    subset_b: of[j].0.clone(),
                    top_k: top,
                    overlap: ov,
                    overlap_share: if k == 0 {
                        f64::NAN
                    } else {
                        ov as f64 / k as f64
                    },
                    common_stations: x.len(),
                    kendall_tau: kendall_tau_sorted(&y),
                    spearman_rho: spearman_rho(&x, &y),
                    rbo: rbo_ext(a, b, RBO_P),
                });
            }
        }
    }
    rows
}

/// One sentence per cluster in plain words: how alike its subsets' top-K are, the least alike
/// pair named (pairs where a subset ranks no station are left out of the comparison).
pub fn sentences(rows: &[AgreementRow]) -> Vec<(u32, String)> {
    let clusters: std::collections::BTreeSet<u32> = rows.iter().map(|r| r.cluster).collect();
    let num = |v: f64| {
        if v.is_finite() {
            format!("{v:.2}")
        } else {
            "–".to_string()
        }
    };
    clusters
        .into_iter()
        .map(|cl| {
            let of: Vec<&AgreementRow> = rows
                .iter()
                .filter(|r| r.cluster == cl && !r.overlap_share.is_nan())
                .collect();
            let Some(worst) = of
                .iter()
                .min_by(|a, b| a.overlap_share.total_cmp(&b.overlap_share).then(a.rbo.total_cmp(&b.rbo)))
            else {
                return (
                    cl,
                    format!("Cluster {cl}: a subset ranks no station of it, so there is nothing to compare."),
                );
            };
            let k = if worst.overlap_share > 0.0 {
                (worst.overlap as f64 / worst.overlap_share).round() as usize
            } else {
                worst.top_k
            };
            let word = |share: f64| match share {
                s if s >= 0.85 => "agree closely",
                s if s >= 0.6 => "mostly agree",
                s if s >= 0.3 => "agree only in part",
                _ => "disagree",
            };
            let name = |l: &str| match l {
                "all" => "all households".to_string(),
                n => format!("the 1-in-{n} sample"),
            };
            let text = format!(
                "Cluster {cl}: the samples {} on its top {}; the least alike, {} and {}, share {} of them (rank-biased overlap {}, Kendall's tau {} over the {} stations both rank){}.",
                word(worst.overlap_share),
                k,
                name(&worst.subset_a),
                name(&worst.subset_b),
                worst.overlap,
                num(worst.rbo),
                num(worst.kendall_tau),
                worst.common_stations,
                if worst.overlap_share < 0.6 {
                    ": read its top stations as noisy"
                } else {
                    ""
                }
            );
            (cl, text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rbo_by_hand() {
        let a = ["1", "2", "3"];
        assert!((rbo_ext(&a, &a, 0.9) - 1.0).abs() < 1e-12);
        assert_eq!(rbo_ext(&["1", "2"], &["3", "4"], 0.9), 0.0);
        // X1 = 0, X2 = 2: (0.1/0.9)(0 + 1 · 0.81) + 1 · 0.81 = 0.9
        assert!((rbo_ext(&["1", "2"], &["2", "1"], 0.9) - 0.9).abs() < 1e-12);
        // uneven: s = [1], l = [1, 2]: X1 = 1, X2 = 1 (X_s = 1)
        // (1/9)(1·0.9 + 0.5·0.81 + 1·1/(1·2)·0.81) + ((1 − 1)/2 + 1/1)·0.81
        let want = (0.1 / 0.9) * (0.9 + 0.5 * 0.81 + 0.5 * 0.81) + 0.81;
        assert!((rbo_ext(&["1"], &["1", "2"], 0.9) - want).abs() < 1e-12);
        assert!(
            (want - 1.0).abs() < 1e-12,
            "a prefix of the other list: its extrapolation is 1"
        );
    }

    #[test]
    fn the_merge_sort_tau_is_the_pairwise_one_without_ties() {
        let mut state = 12345u64;
        for n in [2usize, 3, 10, 101, 500] {
            let mut y: Vec<f64> = (1..=n).map(|i| i as f64).collect();
            for i in (1..n).rev() {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                y.swap(i, (state >> 33) as usize % (i + 1));
            }
            let x: Vec<f64> = (1..=n).map(|i| i as f64).collect();
            let (a, b) = (kendall_tau_sorted(&y), kendall_tau_b(&x, &y));
            assert!((a - b).abs() < 1e-12, "{n}: {a} {b}");
        }
    }

    #[test]
    fn kendall_and_spearman_by_hand() {
        // scipy.stats.kendalltau([1,2,3,4], [1,3,2,4]) = 0.6666…, spearmanr = 0.8
        let (x, y) = ([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]);
        assert!((kendall_tau_b(&x, &y) - 2.0 / 3.0).abs() < 1e-12);
        assert!((spearman_rho(&x, &y) - 0.8).abs() < 1e-12);
        // with ties: kendalltau([1,1,2,3], [1,2,2,3]) = 0.8 (tau-b), spearmanr = 5/6
        let (x, y) = ([1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 2.0, 3.0]);
        assert!(
            (kendall_tau_b(&x, &y) - 0.8).abs() < 1e-12,
            "{}",
            kendall_tau_b(&x, &y)
        );
        assert!((spearman_rho(&x, &y) - 5.0 / 6.0).abs() < 1e-12);
        assert!(kendall_tau_b(&[1.0], &[1.0]).is_nan());
    }

    /// The seed's own printed tables (cluster 0, top 7 by diff-rank): all households against
    /// every 17th. They share two stations, 14902 and 11221, third and fourth in one and first
    /// and second in the other.
    #[test]
    fn the_seeds_cluster_0_top_7_of_all_and_of_every_17th() {
        let all = [
            "16374", "60179", "14902", "11221", "49788", "61522", "11069",
        ];
        let s17 = [
            "14902", "11221", "74796", "11066", "12131", "12574", "10335",
        ];
        assert_eq!(overlap(&all, &s17, 7), 2);
        let (x, y) = common_ranks(&all, &s17);
        assert_eq!((x.clone(), y.clone()), (vec![3.0, 4.0], vec![1.0, 2.0]));
        assert_eq!(kendall_tau_b(&x, &y), 1.0);
        assert_eq!(spearman_rho(&x, &y), 1.0);
        // X_d for d = 1..7: 0, 0, 1, 2, 2, 2, 2
        let xs = [0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0];
        let p: f64 = 0.9;
        let sum: f64 = xs
            .iter()
            .enumerate()
            .map(|(i, x)| x / (i + 1) as f64 * p.powi(i as i32 + 1))
            .sum();
        let want = (1.0 - p) / p * sum + 2.0 / 7.0 * p.powi(7);
        let got = rbo_ext(&all, &s17, p);
        assert!((got - want).abs() < 1e-12, "{got} {want}");
        let rows = agreement(
            &[
                ("17".into(), 0, s17.iter().map(|s| s.to_string()).collect()),
                ("all".into(), 0, all.iter().map(|s| s.to_string()).collect()),
            ],
            7,
        );
        assert_eq!(rows[0].overlap, 2);
        let text = &sentences(&rows)[0].1;
        assert!(
            text.contains("disagree") && text.contains("share 2 of them"),
            "{text}"
        );
    }
}
