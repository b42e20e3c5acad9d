//! SPEC section 4 over merged [`Counters`]: popularity per subset and cluster, the general
//! population's ratings, and the top-K diff-rank per cluster. Pure functions of the counters,
//! used unchanged by `analyze` and by every streaming trigger.
//!
//! Beside SPEC 4's figures, each top-K row carries the media planners' `index`
//! (`100 · popularity / genpop`: 100 is "like everyone"); `--rank-by index` ranks by it
//! instead of the difference, and `--min-views N` leaves stations with fewer than N views in
//! the cluster out of the top-K. The interval columns are filled in by `uncertainty`.
//!
//! Orders are decided on exact integers, never on rounded floats: within one subset and cluster
//! `popularity(s) > popularity(s')` iff `views(s) > views(s')`, and
//! `diff(s) > diff(s')` iff `v·N − g·T > v'·N − g'·T` (T the cluster's total, N = |V|), so
//! stations that are tied in exact arithmetic are ordered by station_num, as SPEC 4 says.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::counters::{Counters, Subset};

/// One row of `popularity.csv`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PopularityRow {
    /// Subset label (`all`, `3`, …).
    pub subset: String,
    /// Cluster number.
    pub cluster: u32,
    /// Station number.
    pub station_num: String,
    /// `views(c, s)`.
    pub views: u64,
    /// `100 · views(c, s) / Σ views(c, ·)`.
    pub popularity_rating: f64,
    /// 1-based rank inside (subset, cluster) by rating descending, ties by station_num.
    pub rank: u32,
    /// Lower end of the popularity rating's confidence interval (`uncertainty`), if asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub popularity_lo: Option<f64>,
    /// Upper end of that interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub popularity_hi: Option<f64>,
}

/// One row of `genpop.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenpopRow {
    /// Station number.
    pub station_num: String,
    /// Valid records for the station.
    pub views: u64,
    /// `100 · views / |V|`.
    pub genpop_rating: f64,
}

/// One row of `diff_rank.csv` (and of a snapshot).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiffRankRow {
    /// Subset label.
    pub subset: String,
    /// Cluster number.
    pub cluster: u32,
    /// 1-based rank inside (subset, cluster), at most K.
    pub rank: u32,
    /// Station number.
    pub station_num: String,
    /// `popularity_rating − genpop_rating`.
    pub diff_rank: f64,
    /// The cluster's popularity rating of the station.
    pub popularity_rating: f64,
    /// The general population's rating of the station.
    pub genpop_rating: f64,
    /// `100 · popularity_rating / genpop_rating` (100: watched like everyone watches it).
    #[serde(default)]
    pub index: f64,
    /// The row's confidence intervals and top-K stability, if asked.
    #[serde(flatten)]
    pub intervals: Intervals,
}

/// What `uncertainty` says of a top-K row: its confidence intervals and rank stability, each
/// absent when not computed (a row of `diff_rank.csv` and of a snapshot both carry them, the
/// JSON fields beside the row's own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Intervals {
    /// Lower end of the popularity rating's confidence interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub popularity_lo: Option<f64>,
    /// Upper end of that interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub popularity_hi: Option<f64>,
    /// Lower end of the diff-rank's confidence interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_rank_lo: Option<f64>,
    /// Upper end of that interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_rank_hi: Option<f64>,
    /// The share of bootstrap resamples in which the station is in the cluster's top-K.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k_share: Option<f64>,
}

/// What orders the top-K.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RankBy {
    /// `diff_rank` descending (SPEC 4, the seed's).
    #[default]
    Diff,
    /// `index` descending.
    Index,
}

impl std::str::FromStr for RankBy {
    type Err = String;
    fn from_str(s: &str) -> Result<RankBy, String> {
        match s {
            "diff" => Ok(RankBy::Diff),
            "index" => Ok(RankBy::Index),
            _ => Err(format!("--rank-by {s:?}: expected diff or index")),
        }
    }
}

impl std::fmt::Display for RankBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RankBy::Diff => "diff",
            RankBy::Index => "index",
        })
    }
}

/// How the top-K is chosen: its size, its order, and the fewest views a station needs in the
/// cluster to be ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranking {
    /// K.
    pub top: usize,
    /// The order.
    pub rank_by: RankBy,
    /// Stations with fewer views in the cluster are not ranked (1: SPEC 4's `views ≥ 1`).
    pub min_views: u64,
}

impl Ranking {
    /// SPEC 4's ranking: the top `top` by diff-rank, every station with a view.
    pub fn top(top: usize) -> Ranking {
        Ranking {
            top,
            rank_by: RankBy::Diff,
            min_views: 1,
        }
    }
}

/// The exact order of the top-K of one (subset, cluster), best first (`Less`: `a` ranks
/// before `b`): by the key descending, ties by station name. With `v` the station's views in the cluster, `g` its
/// general-population views, `t` the cluster's total and `n` = |V|: diff-rank compares
/// `v·n − g·t` (the difference times `t·n`), the index compares `v / g` by cross-multiplying.
#[inline]
pub fn rank_order(
    rank_by: RankBy,
    a: (u64, u64, &str),
    b: (u64, u64, &str),
    t: u64,
    n: u64,
) -> Ordering {
    let ord = match rank_by {
        RankBy::Diff => {
            let ka = a.0 as i128 * n as i128 - a.1 as i128 * t as i128;
            let kb = b.0 as i128 * n as i128 - b.1 as i128 * t as i128;
            kb.cmp(&ka)
        }
        RankBy::Index => (b.0 as u128 * a.1 as u128).cmp(&(a.0 as u128 * b.1 as u128)),
    };
    ord.then_with(|| a.2.as_bytes().cmp(b.2.as_bytes()))
}

/// Everything SPEC 4 defines, for every configured subset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ratings {
    /// Popularity of every station with views ≥ 1, by subset label (byte order), cluster, rank.
    pub popularity: Vec<PopularityRow>,
    /// General population, by station_num (byte order).
    pub genpop: Vec<GenpopRow>,
    /// Top-K diff-rank rows, by subset label (byte order), cluster, rank.
    pub diff_rank: Vec<DiffRankRow>,
}

/// `100 · part / whole` as Spark computes `lit(100) * a / b`.
#[inline]
pub(crate) fn rating(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole as f64
}

/// `100 · popularity / genpop`, the planners' index (a ranked station has views, so genpop
/// is never 0).
#[inline]
pub fn index(popularity: f64, genpop: f64) -> f64 {
    100.0 * popularity / genpop
}

/// Subset indices ordered by label in byte order (the order of the output files).
pub(crate) fn subsets_by_label(subsets: &[Subset]) -> Vec<(usize, String)> {
    let mut v: Vec<(usize, String)> = subsets
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s.label()))
        .collect();
    v.sort_by(|a, b| a.1.as_bytes().cmp(b.1.as_bytes()));
    v
}

/// The general population's ratings, by station_num.
pub fn genpop(c: &Counters) -> Vec<GenpopRow> {
    let names = c.stations().names();
    let mut ids: Vec<usize> = (0..names.len()).filter(|&s| c.genpop(s) > 0).collect();
    ids.sort_by(|&a, &b| names[a].as_bytes().cmp(names[b].as_bytes()));
    ids.into_iter()
        .map(|s| GenpopRow {
            station_num: names[s].to_string(),
            views: c.genpop(s),
            genpop_rating: rating(c.genpop(s), c.valid),
        })
        .collect()
}

/// Compute everything for the subsets `subsets` (the ones the counters were built with, in
/// that order), keeping the top `top` diff-rank rows per cluster.
pub fn compute(c: &Counters, subsets: &[Subset], top: usize) -> Ratings {
    compute_with(c, subsets, Ranking::top(top), true)
}

/// [`compute`] with a ranking of the caller's ([`Ranking`]).
pub fn compute_ranked(c: &Counters, subsets: &[Subset], ranking: Ranking) -> Ratings {
    compute_with(c, subsets, ranking, true)
}

/// Like [`compute`], but only the top-K diff-rank rows (what a snapshot needs), skipping the
/// full popularity table.
pub fn top_diff_rank(c: &Counters, subsets: &[Subset], top: usize) -> Vec<DiffRankRow> {
    compute_with(c, subsets, Ranking::top(top), false).diff_rank
}

/// [`top_diff_rank`] with a ranking of the caller's.
pub fn top_ranked(c: &Counters, subsets: &[Subset], ranking: Ranking) -> Vec<DiffRankRow> {
    compute_with(c, subsets, ranking, false).diff_rank
}

fn compute_with(c: &Counters, subsets: &[Subset], ranking: Ranking, full: bool) -> Ratings {
    let top = ranking.top;
    assert_eq!(
        subsets.len(),
        c.n_subsets(),
        "subsets do not match the counters"
    );
    let names = c.stations().names();
    let n_stations = names.len();
    let big_n = c.valid;
    let mut out = Ratings {
        genpop: if full { genpop(c) } else { Vec::new() },
        ..Ratings::default()
    };
    let mut ids: Vec<usize> = Vec::with_capacity(n_stations);
    for (si, label) in subsets_by_label(subsets) {
        for cl in 0..c.clusters() {
            ids.clear();
            let mut total = 0u64;
            for s in 0..n_stations {
                let v = c.views(si, cl, s);
                if v > 0 {
                    ids.push(s);
                    total += v;
                }
            }
            if ids.is_empty() {
                continue;
            }
            if full {
                ids.sort_by(|&a, &b| {
                    c.views(si, cl, b)
                        .cmp(&c.views(si, cl, a))
                        .then_with(|| names[a].as_bytes().cmp(names[b].as_bytes()))
                });
                out.popularity
                    .extend(ids.iter().enumerate().map(|(r, &s)| PopularityRow {
                        subset: label.clone(),
                        cluster: cl as u32,
                        station_num: names[s].to_string(),
                        views: c.views(si, cl, s),
                        popularity_rating: rating(c.views(si, cl, s), total),
                        rank: r as u32 + 1,
                        ..PopularityRow::default()
                    }));
            }
            if ranking.min_views > 1 {
                ids.retain(|&s| c.views(si, cl, s) >= ranking.min_views);
            }
            let station = |s: usize| (c.views(si, cl, s), c.genpop(s), &*names[s]);
            let by_diff = |a: &usize, b: &usize| -> Ordering {
                rank_order(ranking.rank_by, station(*a), station(*b), total, big_n)
            };
            let k = top.min(ids.len());
            if k == 0 {
                continue;
            }
            if k < ids.len() {
                ids.select_nth_unstable_by(k - 1, by_diff);
                ids.truncate(k);
            }
            ids.sort_by(by_diff);
            out.diff_rank.extend(ids.iter().enumerate().map(|(r, &s)| {
                let pop = rating(c.views(si, cl, s), total);
                let gen = rating(c.genpop(s), c.valid);
                DiffRankRow {
                    subset: label.clone(),
                    cluster: cl as u32,
                    rank: r as u32 + 1,
                    station_num: names[s].to_string(),
                    diff_rank: pop - gen,
                    popularity_rating: pop,
                    genpop_rating: gen,
                    index: index(pop, gen),
                    ..DiffRankRow::default()
                }
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Membership;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    /// Brute force straight from SPEC 4, over a list of (household, station) views.
    fn brute(
        views: &[(i64, String)],
        households: &HashMap<i64, (u32, u32)>,
        subsets: &[Subset],
        top: usize,
    ) -> Ratings {
        let n = views.len() as f64;
        let mut gen: BTreeMap<String, u64> = BTreeMap::new();
        for (_, s) in views {
            *gen.entry(s.clone()).or_default() += 1;
        }
        let genpop: Vec<GenpopRow> = gen
            .iter()
            .map(|(s, &v)| GenpopRow {
                station_num: s.clone(),
                views: v,
                genpop_rating: 100.0 * v as f64 / n,
            })
            .collect();
        let mut labels: Vec<(Subset, String)> = subsets.iter().map(|s| (*s, s.label())).collect();
        labels.sort_by(|a, b| a.1.cmp(&b.1));
        let k = households.values().map(|h| h.0 + 1).max().unwrap_or(0);
        let mut popularity = vec![];
        let mut diff_rank = vec![];
        for (subset, label) in labels {
            for cl in 0..k {
                let mut per: BTreeMap<String, u64> = BTreeMap::new();
                for (h, s) in views {
                    if let Some(&(c, rank)) = households.get(h) {
                        if c == cl && subset.contains(rank) {
                            *per.entry(s.clone()).or_default() += 1;
                        }
                    }
                }
                let total: u64 = per.values().sum();
                let mut rows: Vec<(String, u64, f64)> = per
                    .iter()
                    .map(|(s, &v)| (s.clone(), v, 100.0 * v as f64 / total as f64))
                    .collect();
                rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                for (r, (s, v, p)) in rows.iter().enumerate() {
                    popularity.push(PopularityRow {
                        subset: label.clone(),
                        cluster: cl,
                        station_num: s.clone(),
                        views: *v,
                        popularity_rating: *p,
                        rank: r as u32 + 1,
                        ..PopularityRow::default()
                    });
                }
                // Exact order via rationals: diff = 100 (v/T - g/N).
                let mut d: Vec<(String, f64, f64, i128)> = rows
                    .iter()
                    .map(|(s, v, p)| {
                        let g = gen[s];
                        let gr = 100.0 * g as f64 / n;
                        (
                            s.clone(),
                            *p,
                            gr,
                            *v as i128 * views.len() as i128 - g as i128 * total as i128,
                        )
                    })
                    .collect();
                d.sort_by(|a, b| b.3.cmp(&a.3).then(a.0.cmp(&b.0)));
                for (r, (s, p, g, _)) in d.into_iter().take(top).enumerate() {
                    diff_rank.push(DiffRankRow {
                        subset: label.clone(),
                        cluster: cl,
                        rank: r as u32 + 1,
                        station_num: s,
                        diff_rank: p - g,
                        popularity_rating: p,
                        genpop_rating: g,
                        index: 100.0 * p / g,
                        ..DiffRankRow::default()
                    });
                }
            }
        }
        Ratings {
            popularity,
            genpop,
            diff_rank,
        }
    }

    fn count_all(lines: &[String], m: &Membership) -> Counters {
        let mut c = Counters::for_membership(m);
        for l in lines {
            c.count(l.as_bytes(), m);
        }
        c
    }

    /// Households `(id, cluster, rank)`, views `(household, station)`, and a split point.
    type Scenario = (Vec<(i64, u32, u32)>, Vec<(i64, String)>, usize);

    fn scenario() -> impl Strategy<Value = Scenario> {
        // up to 4 clusters, 40 households with ids 0..60 (some views from unknown ones),
        // stations from a small pool (with a leading-zero twin) so ties happen.
        let hh = prop::collection::vec((0u32..4, 1u32..30), 1..40).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (c, r))| (i as i64, c, r))
                .collect::<Vec<_>>()
        });
        let station = prop::sample::select(vec!["1", "01", "2", "10", "9", "33", "034", "5"])
            .prop_map(String::from);
        let views = prop::collection::vec((0i64..60, station), 1..400);
        (hh, views, 1usize..9)
    }

    proptest! {
        #[test]
        fn matches_brute_force_and_any_split_merges((hh, views, top) in scenario(), split in 0usize..400) {
            let subsets = vec![Subset::All, Subset::Every(3), Subset::Every(2)];
            let m = Membership::new(subsets.clone(), hh.clone()).unwrap();
            let households: HashMap<i64, (u32, u32)> = hh.iter().map(|&(h, c, r)| (h, (c, r))).collect();
            let lines: Vec<String> = views.iter().map(|(h, s)| format!("d,20150114,000000,{s},p,{h}")).collect();

            let whole = count_all(&lines, &m);
            // Counters built for a membership size their clusters by the largest cluster seen;
            // the brute force does likewise.
            let got = compute(&whole, &subsets, top);
            let want = brute(&views, &households, &subsets, top);
            prop_assert_eq!(&got.genpop, &want.genpop);
            prop_assert_eq!(got.popularity.len(), want.popularity.len());
            for (g, w) in got.popularity.iter().zip(&want.popularity) {
                prop_assert_eq!((&g.subset, g.cluster, &g.station_num, g.views, g.rank), (&w.subset, w.cluster, &w.station_num, w.views, w.rank));
                prop_assert!((g.popularity_rating - w.popularity_rating).abs() <= 1e-9 * w.popularity_rating.abs());
            }
            prop_assert_eq!(got.diff_rank.len(), want.diff_rank.len());
            for (g, w) in got.diff_rank.iter().zip(&want.diff_rank) {
                prop_assert_eq!((&g.subset, g.cluster, g.rank, &g.station_num), (&w.subset, w.cluster, w.rank, &w.station_num));
                prop_assert!((g.diff_rank - w.diff_rank).abs() <= 1e-9 * w.popularity_rating.abs().max(1.0));
            }

            // Popularity sums to 100 per (subset, cluster); genpop to 100.
            let mut sums: BTreeMap<(String, u32), f64> = BTreeMap::new();
            for r in &got.popularity {
                *sums.entry((r.subset.clone(), r.cluster)).or_default() += r.popularity_rating;
            }
            for s in sums.values() {
                prop_assert!((s - 100.0).abs() < 1e-9);
            }
            let g: f64 = got.genpop.iter().map(|r| r.genpop_rating).sum();
            prop_assert!((g - 100.0).abs() < 1e-9);

            // Any split merges to the whole.
            let cut = split.min(lines.len());
            let mut a = count_all(&lines[..cut], &m);
            let b = count_all(&lines[cut..], &m);
            a.merge(&b);
            prop_assert_eq!(compute(&a, &subsets, top), got.clone());
            // And in the other order (station ids interned differently).
            let mut b2 = count_all(&lines[cut..], &m);
            b2.merge(&count_all(&lines[..cut], &m));
            prop_assert_eq!(compute(&b2, &subsets, top), got.clone());
            prop_assert_eq!(top_diff_rank(&b2, &subsets, top), got.diff_rank);
        }
    }

    #[test]
    fn diff_rank_ties_break_by_station_num() {
        // Two stations with identical counts everywhere: exact tie, so "10" before "9".
        let m = Membership::new(vec![Subset::All], vec![(1, 0, 1)]).unwrap();
        let mut c = Counters::for_membership(&m);
        for line in ["d,x,t,9,p,1", "d,x,t,10,p,1", "d,x,t,9,p,2", "d,x,t,10,p,2"] {
            c.count(line.as_bytes(), &m);
        }
        let r = compute(&c, &[Subset::All], 7);
        let order: Vec<&str> = r.diff_rank.iter().map(|d| d.station_num.as_str()).collect();
        assert_eq!(order, ["10", "9"]);
        assert_eq!(r.diff_rank[0].popularity_rating, 50.0);
        assert_eq!(r.diff_rank[0].genpop_rating, 50.0);
        assert_eq!(r.diff_rank[0].diff_rank, 0.0);
    }
}
