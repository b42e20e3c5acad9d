//! How far to trust a rating: confidence intervals for every popularity and diff-rank row and
//! the top-K's rank stability, from counters that also counted per household group
//! ([`Membership::with_groups`](crate::counters::Membership::with_groups)).
//!
//! The unit of resampling is the household, never the record: a household's views are not
//! independent of each other. Households fall into [`GROUPS`] groups by a stable hash of their
//! id, and every count is also kept per group, so counting stays one pass with one more
//! increment per counted cell, whatever the number of resamples, and the counters of any split of the
//! records still merge exactly. Two intervals come out of the group counts:
//! - **analytic** (the default): the ratio estimators' linearised (delta-method) variance,
//!   cluster-robust over the household groups (the random-group variance estimator), with a
//!   normal quantile: `estimate ± z · se`;
//! - **bootstrap** (`--bootstrap N`): N resamples of the groups with replacement (G draws of
//!   G, seeded, the plan written to `resamples.csv`), the popularity and diff-rank recomputed
//!   on each, percentile intervals (numpy's default quantile), and the share of resamples in
//!   which each top-K station stays in the top-K (`top_k_share`).
//!
//! With at least as many groups as households of a cluster, resampling groups is resampling
//! households; with more households each group is a random sample of them, and the group
//! totals are what the resample draws. A (subset, cluster) whose households all fall in one
//! group gets no interval (its spread cannot be told), rather than a zero-width one; the
//! bootstrap's intervals and `top_k_share` are over the resamples that drew one of its
//! households. Pure functions: no I/O, no threads but the scoped ones
//! that share the (subset, cluster) pairs out.

use ndarray::{Array1, Array2, ArrayView1};
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::counters::{Counters, Subset};
use crate::ratings::{self, RankBy, Ranking, Ratings};

/// Household groups counted when intervals are asked for.
pub const GROUPS: usize = 128;

/// Which interval, if any.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// No interval (no group counters either).
    Off,
    /// The delta-method interval over household groups.
    Analytic,
    /// Percentile intervals and rank stability from `resamples` resamples of the groups.
    Bootstrap {
        /// Number of resamples.
        resamples: usize,
        /// Seed of the resample plan.
        seed: u64,
    },
}

/// What to compute and at what level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalSettings {
    /// The method.
    pub method: Method,
    /// Coverage of the intervals, in (0, 1): 0.95 by default.
    pub confidence: f64,
}

impl Default for IntervalSettings {
    fn default() -> IntervalSettings {
        IntervalSettings {
            method: Method::Analytic,
            confidence: 0.95,
        }
    }
}

impl IntervalSettings {
    /// The household groups the counters must keep (0 when no interval is asked for).
    pub fn groups(&self) -> usize {
        match self.method {
            Method::Off => 0,
            _ => GROUPS,
        }
    }
}

/// A bootstrap plan: for each resample, how many times each group was drawn (G draws with
/// replacement among G groups).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Groups.
    pub groups: usize,
    /// `resamples × groups` multiplicities, each row summing to `groups`.
    pub weights: Array2<f64>,
}

/// The plan of `resamples` resamples of `groups` groups for `seed`: resample `b` draws its
/// groups from its own xoshiro256++ stream seeded by `seed` and `b`, so a plan's first rows do
/// not depend on how many follow.
pub fn plan(seed: u64, resamples: usize, groups: usize) -> Plan {
    let mut weights = Array2::<f64>::zeros((resamples, groups));
    for b in 0..resamples {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(
            seed ^ (b as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        for _ in 0..groups {
            let g = ((rng.next_u64() as u128 * groups as u128) >> 64) as usize;
            weights[[b, g]] += 1.0;
        }
    }
    Plan { groups, weights }
}

/// The `q` quantile of `v` as numpy's default (`linear`) computes it; `v` is sorted in place.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    let h = (n - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

/// The standard normal quantile function (Wichura's AS 241, `PPND16`: about 1e-16 relative).
// the coefficients as AS 241 prints them
#[allow(clippy::inconsistent_digit_grouping, clippy::excessive_precision)]
pub fn normal_quantile(p: f64) -> f64 {
    if !(p > 0.0 && p < 1.0) {
        return if p == 0.0 {
            f64::NEG_INFINITY
        } else if p == 1.0 {
            f64::INFINITY
        } else {
            f64::NAN
        };
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q
            * (((((((2509.080_928_730_122_7 * r + 33430.575_583_588_128) * r
                + 67265.770_927_008_7)
                * r
                + 45921.953_931_549_87)
                * r
                + 13731.693_765_509_461)
                * r
                + 1971.590_950_306_551_3)
                * r
                + 133.141_667_891_784_38)
                * r
                + 3.387_132_872_796_366_5)
            / (((((((5226.495_278_852_545 * r + 28729.085_735_721_943) * r
                + 39307.895_800_092_71)
                * r
                + 21213.794_301_586_597)
                * r
                + 5394.196_021_424_751)
                * r
                + 687.187_007_492_057_9)
                * r
                + 42.313_330_701_600_91)
                * r
                + 1.0);
    }
    let mut r = if q < 0.0 { p } else { 1.0 - p };
    r = (-r.ln()).sqrt();
    let val = if r <= 5.0 {
        r -= 1.6;
        (((((((7.745_450_142_783_414e-4 * r + 0.022_723_844_989_269_184) * r
            + 0.241_780_725_177_450_6)
            * r
            + 1.270_458_252_452_368_4)
            * r
            + 3.647_848_324_763_204_5)
            * r
            + 5.769_497_221_460_691)
            * r
            + 4.630_337_846_156_546)
            * r
            + 1.423_437_110_749_683_5)
            / (((((((1.050_750_071_644_416_9e-9 * r + 5.475_938_084_995_345e-4) * r
                + 0.015_198_666_563_616_457)
                * r
                + 0.148_103_976_427_480_08)
                * r
                + 0.689_767_334_985_1)
                * r
                + 1.676_384_830_183_803_8)
                * r
                + 2.053_191_626_637_759)
                * r
                + 1.0)
    } else {
        r -= 5.0;
        (((((((2.010_334_399_292_288_1e-7 * r + 2.711_555_568_743_487_6e-5) * r
            + 0.001_242_660_947_388_078_4)
            * r
            + 0.026_532_189_526_576_124)
            * r
            + 0.296_560_571_828_504_9)
            * r
            + 1.784_826_539_917_291_3)
            * r
            + 5.463_784_911_164_114)
            * r
            + 6.657_904_643_501_103)
            / (((((((2.044_263_103_389_939_7e-15 * r + 1.421_511_758_316_446e-7) * r
                + 1.846_318_317_510_054_8e-5)
                * r
                + 7.868_691_311_456_133e-4)
                * r
                + 0.014_875_361_290_850_615)
                * r
                + 0.136_929_880_922_735_8)
                * r
                + 0.599_832_206_555_888)
                * r
                + 1.0)
    };
    if q < 0.0 {
        -val
    } else {
        val
    }
}

/// The group counts of one (subset, cluster) and of the general population, for the stations
/// the cluster watched: `x[[g, j]]` the cluster's views of station `ids[j]` in group `g`,
/// `gen[[g, j]]` everyone's, and the per-group totals `t` (the cluster's) and `n` (everyone's).
struct GroupCounts {
    ids: Vec<usize>,
    x: Array2<f64>,
    gen: Array2<f64>,
    t: Array1<f64>,
    n: Array1<f64>,
}

fn group_counts(c: &Counters, si: usize, cl: usize, n: &Array1<f64>) -> GroupCounts {
    let groups = c.groups();
    let stations = c.stations().len();
    let ids: Vec<usize> = (0..stations).filter(|&s| c.views(si, cl, s) > 0).collect();
    let mut x = Array2::<f64>::zeros((groups, ids.len()));
    let mut gen = Array2::<f64>::zeros((groups, ids.len()));
    let mut t = Array1::<f64>::zeros(groups);
    for (j, &s) in ids.iter().enumerate() {
        for g in 0..groups {
            let v = c.group_views(si, cl, s, g) as f64;
            x[[g, j]] = v;
            t[g] += v;
            gen[[g, j]] = c.group_genpop(s, g) as f64;
        }
    }
    GroupCounts {
        ids,
        x,
        gen,
        t,
        n: n.clone(),
    }
}

/// The intervals of one station of one (subset, cluster), in rating points (0 to 100).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StationInterval {
    /// Popularity interval.
    pub popularity: (f64, f64),
    /// Diff-rank interval.
    pub diff_rank: (f64, f64),
    /// Share of resamples with the station in the top-K (bootstrap only).
    pub top_k_share: Option<f64>,
}

/// The analytic intervals of every station of `gc`: the ratio `X/T` linearised around the
/// estimate, its variance summed over the groups (`G/(G−1) Σ_g z_g²`, with
/// `z_g = (X_g − p·T_g)/T` for the popularity and that minus the general population's
/// `(Gen_g − q·N_g)/N` for the diff-rank).
fn analytic(gc: &GroupCounts, z: f64, want: &[bool]) -> Vec<Option<StationInterval>> {
    let groups = gc.t.len() as f64;
    let scale = if groups > 1.0 {
        groups / (groups - 1.0)
    } else {
        0.0
    };
    let t: f64 = gc.t.sum();
    let n: f64 = gc.n.sum();
    // one group holding every household of the pair: the spread between households cannot
    // be told (every z_g is 0), so there is no interval rather than a zero-width one
    let estimable = gc.t.iter().filter(|&&v| v > 0.0).count() >= 2;
    (0..gc.ids.len())
        .map(|j| {
            if !want[j] || !estimable {
                return None;
            }
            let xs = gc.x.column(j);
            let gs = gc.gen.column(j);
            let p = xs.sum() / t;
            let q = gs.sum() / n;
            let (mut vp, mut vd) = (0.0, 0.0);
            for g in 0..gc.t.len() {
                let zp = (xs[g] - p * gc.t[g]) / t;
                let zq = (gs[g] - q * gc.n[g]) / n;
                vp += zp * zp;
                vd += (zp - zq) * (zp - zq);
            }
            let (sp, sd) = (100.0 * (scale * vp).sqrt(), 100.0 * (scale * vd).sqrt());
            let (pop, diff) = (100.0 * p, 100.0 * (p - q));
            Some(StationInterval {
                popularity: (pop - z * sp, pop + z * sp),
                diff_rank: (diff - z * sd, diff + z * sd),
                top_k_share: None,
            })
        })
        .collect()
}

/// The bootstrap intervals of every station of `gc`: `w` the plan's weights, `gen_b` every
/// station's general-population rating in each resample (`resamples × stations`).
fn bootstrap(
    gc: &GroupCounts,
    c: &Counters,
    w: &Array2<f64>,
    gen_b: &Array2<f64>,
    ranking: Ranking,
    confidence: f64,
    want: &[bool],
) -> Vec<Option<StationInterval>> {
    let resamples = w.nrows();
    let xb = w.dot(&gc.x); // resamples × stations of the cluster
    let tb = w.dot(&gc.t);
    let names = c.stations().names();
    let m = gc.ids.len();
    let mut pop = Array2::<f64>::zeros((resamples, m));
    let mut diff = Array2::<f64>::zeros((resamples, m));
    let mut in_top = vec![0usize; m];
    let mut order: Vec<usize> = Vec::with_capacity(m);
    // resamples that drew a household of the pair: the intervals and the stability are over
    // these (in the others the pair has no rating at all)
    let mut drawn = 0usize;
    for b in 0..resamples {
        if tb[b] <= 0.0 {
            // no household of the cluster drawn: no rating in this resample
            for j in 0..m {
                pop[[b, j]] = f64::NAN;
                diff[[b, j]] = f64::NAN;
            }
            continue;
        }
        drawn += 1;
        for j in 0..m {
            let p = 100.0 * xb[[b, j]] / tb[b];
            pop[[b, j]] = p;
            diff[[b, j]] = p - gen_b[[b, gc.ids[j]]];
        }
        order.clear();
        order.extend((0..m).filter(|&j| xb[[b, j]] >= ranking.min_views as f64));
        let key = |j: usize| match ranking.rank_by {
            RankBy::Diff => diff[[b, j]],
            RankBy::Index => pop[[b, j]] / gen_b[[b, gc.ids[j]]],
        };
        let cmp = |a: &usize, b2: &usize| {
            key(*b2).total_cmp(&key(*a)).then_with(|| {
                names[gc.ids[*a]]
                    .as_bytes()
                    .cmp(names[gc.ids[*b2]].as_bytes())
            })
        };
        let k = ranking.top.min(order.len());
        if k == 0 {
            continue;
        }
        if k < order.len() {
            order.select_nth_unstable_by(k - 1, cmp);
        }
        for &j in &order[..k] {
            in_top[j] += 1;
        }
    }
    let (lo_q, hi_q) = ((1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0);
    let interval = |col: ArrayView1<f64>| -> (f64, f64) {
        let mut v: Vec<f64> = col.iter().copied().filter(|x| !x.is_nan()).collect();
        let lo = quantile(&mut v, lo_q);
        (lo, quantile(&mut v, hi_q))
    };
    // as in the analytic case: households of one group only give no interval
    let estimable = gc.t.iter().filter(|&&v| v > 0.0).count() >= 2 && drawn > 0;
    (0..m)
        .map(|j| {
            (want[j] && estimable).then(|| StationInterval {
                popularity: interval(pop.column(j)),
                diff_rank: interval(diff.column(j)),
                top_k_share: Some(in_top[j] as f64 / drawn as f64),
            })
        })
        .collect()
}

/// Fill in the interval columns of `r` (computed from `c` with `subsets` and `ranking`):
/// every popularity row's interval, and every top-K row's popularity and diff-rank intervals
/// and, with the bootstrap, its `top_k_share`. Counters without groups, or `Method::Off`,
/// leave the rows as they are. The (subset, cluster) pairs are shared out over `threads`.
pub fn annotate(
    r: &mut Ratings,
    c: &Counters,
    subsets: &[Subset],
    ranking: Ranking,
    settings: &IntervalSettings,
    threads: usize,
) {
    if c.groups() == 0 || settings.method == Method::Off {
        return;
    }
    let groups = c.groups();
    let stations = c.stations().len();
    let mut n = Array1::<f64>::zeros(groups);
    let mut gen_all = Array2::<f64>::zeros((groups, stations));
    for s in 0..stations {
        for g in 0..groups {
            let v = c.group_genpop(s, g) as f64;
            n[g] += v;
            gen_all[[g, s]] = v;
        }
    }
    let boot = match settings.method {
        Method::Bootstrap { resamples, seed } if resamples > 0 => {
            let p = plan(seed, resamples, groups);
            let nb = p.weights.dot(&n);
            let mut gen_b = p.weights.dot(&gen_all);
            for (b, mut row) in gen_b.rows_mut().into_iter().enumerate() {
                row.mapv_inplace(|v| 100.0 * v / nb[b]);
            }
            Some((p.weights, gen_b))
        }
        _ => None,
    };
    let z = normal_quantile((1.0 + settings.confidence) / 2.0);
    let pairs: Vec<(usize, String, usize)> = ratings::subsets_by_label(subsets)
        .into_iter()
        .flat_map(|(si, label)| (0..c.clusters()).map(move |cl| (si, label.clone(), cl)))
        .collect();
    // the stations each pair's rows ask about (a snapshot has top-K rows only)
    let names = c.stations().names();
    let mut wanted: std::collections::HashMap<(&str, u32), std::collections::HashSet<usize>> =
        std::collections::HashMap::new();
    let sid = |name: &str| c.stations().get(name.as_bytes()).map(|s| s as usize);
    for (subset, cluster, station) in r
        .popularity
        .iter()
        .map(|p| (&p.subset, p.cluster, &p.station_num))
        .chain(
            r.diff_rank
                .iter()
                .map(|d| (&d.subset, d.cluster, &d.station_num)),
        )
    {
        if let Some(s) = sid(station) {
            wanted
                .entry((subset.as_str(), cluster))
                .or_default()
                .insert(s);
        }
    }
    let pairs: Vec<(usize, String, usize)> = pairs
        .into_iter()
        .filter(|(_, label, cl)| wanted.contains_key(&(label.as_str(), *cl as u32)))
        .collect();
    // per pair: the stations it watched and the intervals of those its rows ask about
    let results: Vec<(Vec<usize>, Vec<Option<StationInterval>>)> =
        crate::parallel::jobs(pairs.len(), threads, |i| {
            let (si, label, cl) = &pairs[i];
            let gc = group_counts(c, *si, *cl, &n);
            let asked = &wanted[&(label.as_str(), *cl as u32)];
            let want: Vec<bool> = gc.ids.iter().map(|s| asked.contains(s)).collect();
            let iv = match &boot {
                Some((w, gen_b)) => {
                    bootstrap(&gc, c, w, gen_b, ranking, settings.confidence, &want)
                }
                None => analytic(&gc, z, &want),
            };
            (gc.ids, iv)
        });
    let mut by_pair: std::collections::HashMap<
        (&str, u32),
        std::collections::HashMap<&str, StationInterval>,
    > = std::collections::HashMap::new();
    for ((_, label, cl), (ids, iv)) in pairs.iter().zip(&results) {
        let m = by_pair.entry((label.as_str(), *cl as u32)).or_default();
        for (&s, v) in ids.iter().zip(iv) {
            if let Some(v) = v {
                m.insert(&names[s], *v);
            }
        }
    }
    for row in &mut r.popularity {
        if let Some(v) = by_pair
            .get(&(row.subset.as_str(), row.cluster))
            .and_then(|m| m.get(row.station_num.as_str()))
        {
            row.popularity_lo = Some(v.popularity.0);
            row.popularity_hi = Some(v.popularity.1);
        }
    }
    for row in &mut r.diff_rank {
        if let Some(v) = by_pair
            .get(&(row.subset.as_str(), row.cluster))
            .and_then(|m| m.get(row.station_num.as_str()))
        {
            row.intervals = ratings::Intervals {
                popularity_lo: Some(v.popularity.0),
                popularity_hi: Some(v.popularity.1),
                diff_rank_lo: Some(v.diff_rank.0),
                diff_rank_hi: Some(v.diff_rank.1),
                top_k_share: v.top_k_share,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::{household_group, Membership};

    #[test]
    fn normal_quantiles_match_scipy() {
        // scipy.stats.norm.ppf
        for (p, want) in [
            (0.975, 1.959_963_984_540_054),
            (0.995, 2.575_829_303_548_900_4),
            (0.5, 0.0),
            (0.1, -1.281_551_565_544_600_5),
            (1e-10, -6.361_340_902_404_056),
        ] {
            let got = normal_quantile(p);
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                "{p}: {got}"
            );
        }
    }

    #[test]
    fn quantiles_are_numpys_linear_ones() {
        // numpy.quantile([3, 1, 4, 1, 5], [0.025, 0.5, 0.975])
        let v = [3.0, 1.0, 4.0, 1.0, 5.0];
        for (q, want) in [(0.025, 1.0), (0.5, 3.0), (0.975, 4.9), (0.3, 1.4)] {
            assert!((quantile(&mut v.clone(), q) - want).abs() < 1e-12, "{q}");
        }
    }

    #[test]
    fn a_plan_draws_g_of_g_and_keeps_its_rows_whatever_follows() {
        let p = plan(7, 20, 16);
        for row in p.weights.rows() {
            assert_eq!(row.sum(), 16.0);
        }
        let q = plan(7, 5, 16);
        assert_eq!(q.weights, p.weights.slice(ndarray::s![..5, ..]));
        assert_ne!(plan(8, 5, 16).weights, q.weights);
    }

    /// Households `(id, cluster)` of one subset `all`, and views `(household, station)`.
    fn counters(hh: &[(i64, u32)], views: &[(i64, &str)], groups: usize) -> (Counters, Membership) {
        let m = Membership::new(vec![Subset::All], hh.iter().map(|&(h, c)| (h, c, 1)))
            .unwrap()
            .with_groups(groups);
        let mut c = Counters::for_membership(&m);
        for (h, s) in views {
            c.count(format!("d,20150114,000000,{s},p,{h}").as_bytes(), &m);
        }
        (c, m)
    }

    /// The bootstrap from its definition: each resample's ratings recomputed from the views
    /// themselves, each view weighted by its household group's multiplicity.
    #[test]
    fn bootstrap_intervals_equal_recomputing_every_resample_from_the_views() {
        let hh: Vec<(i64, u32)> = (0..40).map(|h| (h, (h % 2) as u32)).collect();
        let stations = ["1", "2", "3", "04", "5"];
        let mut views = Vec::new();
        for h in 0..45i64 {
            for k in 0..(1 + h % 7) {
                views.push((h, stations[((h * 3 + k * k) % 5) as usize]));
            }
        }
        let groups = 8;
        let (c, _) = counters(&hh, &views, groups);
        let ranking = Ranking::top(2);
        let mut r = ratings::compute_ranked(&c, &[Subset::All], ranking);
        let settings = IntervalSettings {
            method: Method::Bootstrap {
                resamples: 50,
                seed: 3,
            },
            confidence: 0.9,
        };
        annotate(&mut r, &c, &[Subset::All], ranking, &settings, 2);
        let w = plan(3, 50, groups).weights;
        for row in &r.diff_rank {
            let cl = row.cluster;
            let (mut pops, mut diffs, mut tops, mut drawn) = (vec![], vec![], 0, 0);
            for b in 0..50 {
                let wt = |h: i64| w[[b, household_group(h, groups)]];
                let cluster_of = |h: i64| hh.iter().find(|x| x.0 == h).map(|x| x.1);
                let mut per: std::collections::BTreeMap<&str, f64> = Default::default();
                let mut gen: std::collections::BTreeMap<&str, f64> = Default::default();
                let (mut t, mut n) = (0.0, 0.0);
                for &(h, s) in &views {
                    *gen.entry(s).or_default() += wt(h);
                    n += wt(h);
                    if cluster_of(h) == Some(cl) {
                        *per.entry(s).or_default() += wt(h);
                        t += wt(h);
                    }
                }
                if t == 0.0 {
                    continue;
                }
                drawn += 1;
                let p = 100.0 * per.get(row.station_num.as_str()).copied().unwrap_or(0.0) / t;
                let d = p - 100.0 * gen[row.station_num.as_str()] / n;
                pops.push(p);
                diffs.push(d);
                let mut ranked: Vec<(&str, f64)> = per
                    .iter()
                    .filter(|(_, &v)| v >= 1.0)
                    .map(|(s, &v)| (*s, 100.0 * v / t - 100.0 * gen[s] / n))
                    .collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
                if ranked.iter().take(2).any(|x| x.0 == row.station_num) {
                    tops += 1;
                }
            }
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
            assert!(close(
                row.intervals.popularity_lo.unwrap(),
                quantile(&mut pops, 0.05)
            ));
            assert!(close(
                row.intervals.popularity_hi.unwrap(),
                quantile(&mut pops, 0.95)
            ));
            assert!(close(
                row.intervals.diff_rank_lo.unwrap(),
                quantile(&mut diffs, 0.05)
            ));
            assert!(close(
                row.intervals.diff_rank_hi.unwrap(),
                quantile(&mut diffs, 0.95)
            ));
            assert_eq!(row.intervals.top_k_share, Some(tops as f64 / drawn as f64));
        }
        assert!(r.popularity.iter().all(|p| p.popularity_lo.is_some()));
    }

    /// Two households in separate groups, one cluster: the analytic variance by hand.
    #[test]
    fn the_analytic_interval_by_hand() {
        // find two ids in different groups of 2
        let a = 0i64;
        let b = (1..100)
            .find(|&h| household_group(h, 2) != household_group(a, 2))
            .unwrap();
        // a: 3 views of "1", 1 of "2"; b: 1 view of "1", 3 of "2"; both in cluster 0
        let mut views = vec![(a, "1"); 3];
        views.push((a, "2"));
        views.push((b, "1"));
        views.extend(vec![(b, "2"); 3]);
        let (c, _) = counters(&[(a, 0), (b, 0)], &views, 2);
        let ranking = Ranking::top(2);
        let mut r = ratings::compute_ranked(&c, &[Subset::All], ranking);
        annotate(
            &mut r,
            &c,
            &[Subset::All],
            ranking,
            &IntervalSettings::default(),
            1,
        );
        // p("1") = 4/8; z_a = (3 − 0.5·4)/8 = 1/8, z_b = −1/8; var = 2/1 · (2/64) = 1/16;
        // se = 100 · 1/4 = 25. The general population is the cluster: diff's z is 0.
        let row = r.popularity.iter().find(|p| p.station_num == "1").unwrap();
        let z = normal_quantile(0.975);
        assert!((row.popularity_lo.unwrap() - (50.0 - 25.0 * z)).abs() < 1e-9);
        assert!((row.popularity_hi.unwrap() - (50.0 + 25.0 * z)).abs() < 1e-9);
        let d = r.diff_rank.iter().find(|p| p.station_num == "1").unwrap();
        assert!(
            d.intervals.diff_rank_lo.unwrap().abs() < 1e-9
                && d.intervals.diff_rank_hi.unwrap().abs() < 1e-9
        );
        assert_eq!(d.intervals.top_k_share, None);
    }

    /// Coverage by simulation: two clusters of 200 households, each household of one of two
    /// viewing types (80 % of cluster 0's the first, 80 % of cluster 1's the second), 1 to 20
    /// views each, every view a station drawn from its type's distribution. The true
    /// popularity of cluster 0 is then `0.8 q0 + 0.2 q1`, everyone's `(p0 + p1) / 2`. Over 300
    /// seeds, about 95 % of the 95 % intervals hold the truth, for both methods.
    #[test]
    fn about_95_percent_of_95_percent_intervals_hold_the_true_ratings() {
        let q = [[0.4, 0.3, 0.15, 0.1, 0.05], [0.05, 0.1, 0.15, 0.3, 0.4]];
        let p0: Vec<f64> = (0..5).map(|s| 0.8 * q[0][s] + 0.2 * q[1][s]).collect();
        let p1: Vec<f64> = (0..5).map(|s| 0.2 * q[0][s] + 0.8 * q[1][s]).collect();
        let truth_pop = [p0.clone(), p1.clone()];
        let genpop: Vec<f64> = (0..5).map(|s| (p0[s] + p1[s]) / 2.0).collect();
        let names = ["0", "1", "2", "3", "4"];
        let hh: Vec<(i64, u32)> = (0..400).map(|h| (h, (h % 2) as u32)).collect();
        let ranking = Ranking::top(5);
        let methods = [
            Method::Analytic,
            Method::Bootstrap {
                resamples: 200,
                seed: 1,
            },
        ];
        let mut held = [[0usize; 2]; 2]; // [method][popularity, diff]
        let mut total = 0usize;
        for seed in 0..300u64 {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let mut unit = || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let mut views = Vec::new();
            for &(h, cl) in &hh {
                let first = if cl == 0 { 0.8 } else { 0.2 };
                let t = usize::from(unit() >= first);
                let n = 1 + (unit() * 20.0) as usize;
                for _ in 0..n {
                    let (mut u, mut s) = (unit(), 0);
                    while s < 4 && u >= q[t][s] {
                        u -= q[t][s];
                        s += 1;
                    }
                    views.push((h, names[s]));
                }
            }
            let (c, _) = counters(&hh, &views, GROUPS);
            for (mi, method) in methods.iter().enumerate() {
                let mut r = ratings::compute_ranked(&c, &[Subset::All], ranking);
                let settings = IntervalSettings {
                    method: *method,
                    confidence: 0.95,
                };
                annotate(&mut r, &c, &[Subset::All], ranking, &settings, 1);
                for row in &r.diff_rank {
                    let s: usize = row.station_num.parse().unwrap();
                    let cl = row.cluster as usize;
                    let tp = 100.0 * truth_pop[cl][s];
                    let td = tp - 100.0 * genpop[s];
                    let inside = |lo: Option<f64>, hi: Option<f64>, v: f64| {
                        usize::from(lo.unwrap() <= v && v <= hi.unwrap())
                    };
                    held[mi][0] +=
                        inside(row.intervals.popularity_lo, row.intervals.popularity_hi, tp);
                    held[mi][1] +=
                        inside(row.intervals.diff_rank_lo, row.intervals.diff_rank_hi, td);
                    if mi == 0 {
                        total += 1;
                    }
                }
            }
        }
        assert_eq!(total, 300 * 10);
        for (mi, h) in held.iter().enumerate() {
            for (what, &n) in ["popularity", "diff-rank"].iter().zip(h) {
                let share = n as f64 / total as f64;
                eprintln!("{:?} {what}: {share}", methods[mi]);
                assert!(
                    (0.925..=0.975).contains(&share),
                    "{:?} {what}: {share} of the intervals hold the truth",
                    methods[mi]
                );
            }
        }
    }
}
