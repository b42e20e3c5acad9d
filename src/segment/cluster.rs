//! KMeans, then SPEC 3's own definitions computed here in f64: each household's nearest
//! centroid, its squared distance, and its rank inside the cluster by distance ascending, ties
//! by household_id ascending.
//!
//! The fit is scikit-learn's recipe made cheaper where the data allows it. Each run starts
//! from greedy k-means++ (2 + ⌊ln k⌋ candidates per centre, the one that lowers the potential
//! most is kept) and runs Lloyd's iterations with Hamerly's bounds (the same steps as Lloyd,
//! skipping the distances the triangle inequality proves useless) until no household changes
//! cluster. Above `sample` households the runs search a seeded sample, the `refine` best
//! distinct results are iterated on a sample ten times larger, and the best of those through
//! larger samples up to every household; the lowest full inertia wins. A cluster left empty
//! gets the row farthest from its centre, as scikit-learn does. Runs
//! go to worker threads, but each run's arithmetic is sequential and fixed, so the result is
//! the same for a seed whatever the thread count or machine.

use ndarray::{Array2, ArrayView1, ArrayView2};
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::SegmentError;
use crate::counters::household_hash;

/// KMeans settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KMeansSettings {
    /// Number of clusters.
    pub k: usize,
    /// Random seed of the initialisation.
    pub seed: u64,
    /// Independent runs (each from its own greedy k-means++ start).
    pub runs: usize,
    /// Iteration cap per run.
    pub max_iterations: u64,
    /// Above this many households, the runs search on a seeded sample of this size, and the
    /// best results are iterated on samples ten times larger each, then on every household
    /// (0 = always use all).
    pub sample: usize,
    /// How many of the first sample's best distinct results go on to the next level (the
    /// levels after it pass on [`FINAL_CANDIDATES`]).
    pub refine: usize,
    /// Worker threads for the runs (0 = one per core); the result does not depend on it.
    pub threads: usize,
}

impl Default for KMeansSettings {
    fn default() -> Self {
        KMeansSettings {
            k: 6,
            seed: 3,
            runs: 40,
            max_iterations: 300,
            sample: 5_000,
            refine: 8,
            threads: 0,
        }
    }
}

/// The clustering of every household, in input order.
#[derive(Debug, Clone)]
pub struct Clustering {
    /// Centroids, one row per cluster.
    pub centroids: Array2<f64>,
    /// Cluster of each household.
    pub cluster: Vec<u32>,
    /// Squared distance of each household to its centroid.
    pub distance: Vec<f64>,
    /// 1-based rank of each household inside its cluster.
    pub rank: Vec<u32>,
    /// Households per cluster.
    pub sizes: Vec<u64>,
    /// Sum of `distance`.
    pub inertia: f64,
}

/// Squared Euclidean distance.
#[inline]
pub fn sq_dist(a: ArrayView1<f64>, b: ArrayView1<f64>) -> f64 {
    match (a.as_slice(), b.as_slice()) {
        (Some(a), Some(b)) => sq(a, b),
        _ => a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum(),
    }
}

/// Squared Euclidean distance of two slices, summed in four fixed lanes (the same order on
/// every machine, and fast enough for the compiler to vectorise).
#[inline]
pub(crate) fn sq(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..4 {
            let t = x[l] - y[l];
            acc[l] += t * t;
        }
    }
    let mut tail = 0.0;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        let t = x - y;
        tail += t * t;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Rows of a matrix as one row-major slice.
#[derive(Clone, Copy)]
struct Rows<'a> {
    x: &'a [f64],
    d: usize,
}

impl<'a> Rows<'a> {
    fn n(&self) -> usize {
        self.x.len() / self.d
    }
    #[inline]
    fn row(&self, i: usize) -> &'a [f64] {
        &self.x[i * self.d..(i + 1) * self.d]
    }
}

/// Points laid out to measure a row against all of them in one pass: coordinate j of point c
/// at `j * width + c`, `width` being the count rounded up to 4 (padding points at the origin
/// are never read back), so the inner loop runs over points and vectorises.
struct Transposed {
    t: Vec<f64>,
    k: usize,
    width: usize,
}

impl Transposed {
    fn new(points: &[f64], k: usize, d: usize) -> Self {
        let width = k.div_ceil(4) * 4;
        let mut t = vec![0f64; width * d];
        for c in 0..k {
            for j in 0..d {
                t[j * width + c] = points[c * d + j];
            }
        }
        Transposed { t, k, width }
    }

    /// Squared distances of `x` to every point into `out[..width]` (each summed over the
    /// coordinates in order, the same on every machine).
    #[inline]
    fn distances(&self, x: &[f64], out: &mut [f64]) {
        match self.width {
            4 => self.fixed::<4>(x, out),
            8 => self.fixed::<8>(x, out),
            12 => self.fixed::<12>(x, out),
            16 => self.fixed::<16>(x, out),
            w => {
                let out = &mut out[..w];
                out.fill(0.0);
                for (row, &xj) in self.t.chunks_exact(w).zip(x) {
                    for (o, &c) in out.iter_mut().zip(row) {
                        let t = xj - c;
                        *o += t * t;
                    }
                }
            }
        }
    }

    /// [`Self::distances`] for a width known at compile time: the sums stay in registers.
    #[inline(always)]
    fn fixed<const W: usize>(&self, x: &[f64], out: &mut [f64]) {
        let mut acc = [0f64; W];
        for (row, &xj) in self.t.chunks_exact(W).zip(x) {
            for l in 0..W {
                let t = xj - row[l];
                acc[l] += t * t;
            }
        }
        out[..W].copy_from_slice(&acc);
    }

    /// The nearest point, its distance and the second-nearest distance (Euclidean).
    #[inline]
    fn nearest2(&self, x: &[f64], scratch: &mut [f64]) -> (usize, f64, f64) {
        self.distances(x, scratch);
        let mut b = (f64::INFINITY, 0usize);
        let mut second = f64::INFINITY;
        for (c, &v) in scratch[..self.k].iter().enumerate() {
            if v < b.0 {
                second = b.0;
                b = (v, c);
            } else if v < second {
                second = v;
            }
        }
        (b.1, b.0.sqrt(), second.sqrt())
    }
}

/// A uniform f64 in [0, 1).
fn unit(rng: &mut Xoshiro256PlusPlus) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Greedy k-means++ (Arthur and Vassilvitskii, with scikit-learn's 2 + ⌊ln k⌋ local trials):
/// the first centre uniformly, each next one among candidates drawn in proportion to the
/// squared distance to the nearest centre so far, keeping the candidate that lowers the total
/// the most. Returns k × d centres, row-major.
fn plus_plus(rows: Rows, k: usize, rng: &mut Xoshiro256PlusPlus) -> Vec<f64> {
    let n = rows.n();
    let d = rows.d;
    let mut centres = Vec::with_capacity(k * d);
    let first = (rng.next_u64() % n as u64) as usize;
    centres.extend_from_slice(rows.row(first));
    let mut closest: Vec<f64> = (0..n).map(|i| sq(rows.row(i), rows.row(first))).collect();
    let trials = 2 + (k as f64).ln().floor() as usize;
    let mut cumulative = vec![0f64; n];
    let mut best = vec![0f64; n];
    let mut scratch = vec![0f64; trials.div_ceil(4) * 4];
    for _ in 1..k {
        let mut run = 0.0;
        for (c, v) in cumulative.iter_mut().zip(&closest) {
            run += v;
            *c = run;
        }
        let picks: Vec<usize> = (0..trials)
            .map(|_| {
                let target = unit(rng) * run;
                cumulative.partition_point(|&c| c <= target).min(n - 1)
            })
            .collect();
        let mut flat = Vec::with_capacity(trials * d);
        for &p in &picks {
            flat.extend_from_slice(rows.row(p));
        }
        let cands = Transposed::new(&flat, trials, d);
        let mut pots = vec![0f64; trials];
        for (i, &old) in closest.iter().enumerate() {
            cands.distances(rows.row(i), &mut scratch);
            for (pot, &v) in pots.iter_mut().zip(&scratch) {
                *pot += old.min(v);
            }
        }
        // the candidate that lowers the potential most (the first of equals)
        let t = (0..trials).fold(0, |b, t| if pots[t] < pots[b] { t } else { b });
        let p = rows.row(picks[t]);
        for (i, slot) in best.iter_mut().enumerate() {
            *slot = closest[i].min(sq(rows.row(i), p));
        }
        centres.extend_from_slice(p);
        std::mem::swap(&mut closest, &mut best);
    }
    centres
}

/// The outcome of one run.
#[derive(Debug, Clone)]
struct Run {
    centres: Vec<f64>,
    inertia: f64,
    iterations: u64,
    /// Rows per cluster.
    counts: Vec<u64>,
    /// The row farthest from its centre (the first of equals) and its squared distance.
    farthest: (usize, f64),
}

/// Lloyd's iterations from `centres` until no row changes cluster (or `max_iterations`), with
/// Hamerly's bounds: an upper bound on each row's distance to its centre and a lower bound on
/// its distance to every other centre, moved by how far the centres move, so that a row is
/// looked at only when the bounds no longer prove its cluster. Empty clusters keep their
/// centre. Returns the centres as the means of the final clusters.
// the bounds, assignments and sums are parallel arrays indexed by row and by cluster
#[allow(clippy::needless_range_loop)]
fn lloyd(rows: Rows, k: usize, mut centres: Vec<f64>, max_iterations: u64) -> Run {
    let n = rows.n();
    let d = rows.d;
    let mut assign = vec![0u32; n];
    let mut upper = vec![0f64; n];
    let mut lower = vec![0f64; n];
    let mut sums = vec![0f64; k * d];
    let mut counts = vec![0u64; k];
    let mut scratch = vec![0f64; k.div_ceil(4) * 4];
    let mut layout = Transposed::new(&centres, k, d);
    for i in 0..n {
        let x = rows.row(i);
        let (c, u, l) = layout.nearest2(x, &mut scratch);
        assign[i] = c as u32;
        upper[i] = u;
        lower[i] = l;
        counts[c] += 1;
        for (s, v) in sums[c * d..(c + 1) * d].iter_mut().zip(x) {
            *s += v;
        }
    }
    let mut moved = vec![0f64; k];
    let mut half = vec![0f64; k];
    let mut next = centres.clone();
    let mut iterations = 0;
    while iterations < max_iterations {
        iterations += 1;
        for c in 0..k {
            if counts[c] > 0 {
                let inv = 1.0 / counts[c] as f64;
                for j in 0..d {
                    next[c * d + j] = sums[c * d + j] * inv;
                }
            }
            moved[c] = sq(&centres[c * d..(c + 1) * d], &next[c * d..(c + 1) * d]).sqrt();
        }
        std::mem::swap(&mut centres, &mut next);
        next.copy_from_slice(&centres);
        layout = Transposed::new(&centres, k, d);
        let (mut m1, mut m1c, mut m2) = (0f64, 0usize, 0f64);
        for (c, &m) in moved.iter().enumerate() {
            if m > m1 {
                m2 = m1;
                m1 = m;
                m1c = c;
            } else if m > m2 {
                m2 = m;
            }
        }
        for c in 0..k {
            let mut closest = f64::INFINITY;
            for o in 0..k {
                if o != c {
                    closest = closest.min(sq(
                        &centres[c * d..(c + 1) * d],
                        &centres[o * d..(o + 1) * d],
                    ));
                }
            }
            half[c] = 0.5 * closest.sqrt();
        }
        let mut changed = 0u64;
        for i in 0..n {
            let a = assign[i] as usize;
            upper[i] += moved[a];
            lower[i] -= if a == m1c { m2 } else { m1 };
            let bound = half[a].max(lower[i]);
            if upper[i] <= bound {
                continue;
            }
            let x = rows.row(i);
            upper[i] = sq(x, &centres[a * d..(a + 1) * d]).sqrt();
            if upper[i] <= bound {
                continue;
            }
            let (c, u, l) = layout.nearest2(x, &mut scratch);
            upper[i] = u;
            lower[i] = l;
            if c != a {
                changed += 1;
                assign[i] = c as u32;
                counts[a] -= 1;
                counts[c] += 1;
                for j in 0..d {
                    sums[a * d + j] -= x[j];
                    sums[c * d + j] += x[j];
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    // the centres as the exact means of the final clusters (the running sums drift), and
    // the inertia of the final assignment
    sums.iter_mut().for_each(|s| *s = 0.0);
    for i in 0..n {
        let c = assign[i] as usize;
        for (s, v) in sums[c * d..(c + 1) * d].iter_mut().zip(rows.row(i)) {
            *s += v;
        }
    }
    for c in 0..k {
        if counts[c] > 0 {
            let inv = 1.0 / counts[c] as f64;
            for j in 0..d {
                centres[c * d + j] = sums[c * d + j] * inv;
            }
        }
    }
    let mut inertia = 0.0;
    let mut farthest = (0usize, f64::NEG_INFINITY);
    for i in 0..n {
        let c = assign[i] as usize;
        let v = sq(rows.row(i), &centres[c * d..(c + 1) * d]);
        inertia += v;
        if v > farthest.1 {
            farthest = (i, v);
        }
    }
    Run {
        centres,
        inertia,
        iterations,
        counts,
        farthest,
    }
}

/// [`lloyd`], then, while a cluster is left empty and some row is away from its centre, the
/// empty cluster's centre moved onto the row farthest from its own (as scikit-learn
/// relocates empty clusters) and the iterations run again; at most k times.
fn lloyd_relocating(rows: Rows, k: usize, start: Vec<f64>, max_iterations: u64) -> Run {
    let mut run = lloyd(rows, k, start, max_iterations);
    for _ in 0..k {
        let Some(empty) = run.counts.iter().position(|&c| c == 0) else {
            break;
        };
        if run.farthest.1 <= 0.0 {
            break;
        }
        let d = rows.d;
        let mut centres = std::mem::take(&mut run.centres);
        centres[empty * d..(empty + 1) * d].copy_from_slice(rows.row(run.farthest.0));
        let iterations = run.iterations;
        run = lloyd(rows, k, centres, max_iterations);
        run.iterations += iterations;
    }
    run
}

/// The seed of run `r`: runs are independent streams of one seeded generator.
fn run_rng(seed: u64, r: usize) -> Xoshiro256PlusPlus {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    for _ in 0..r {
        rng.jump();
    }
    rng
}

fn threads(s: &KMeansSettings) -> usize {
    crate::source::threads(s.threads)
}

/// Fit KMeans on `x` and assign every row.
pub fn fit(
    x: ArrayView2<f64>,
    ids: &[i64],
    s: &KMeansSettings,
) -> Result<Clustering, SegmentError> {
    let centroids = fit_centres(x, ids, s)?;
    Ok(assign(x, ids, centroids))
}

/// The centres of the best run (see the module's paragraph).
pub fn fit_centres(
    x: ArrayView2<f64>,
    ids: &[i64],
    s: &KMeansSettings,
) -> Result<Array2<f64>, SegmentError> {
    let n = x.nrows();
    let d = x.ncols();
    if s.k == 0 {
        return Err(SegmentError::Settings("--k must be at least 1".into()));
    }
    if s.k > n {
        return Err(SegmentError::KTooLarge {
            k: s.k,
            households: n,
        });
    }
    if s.runs == 0 {
        return Err(SegmentError::Settings("--runs must be at least 1".into()));
    }
    let k = s.k;
    let max_it = s.max_iterations.max(1);
    let owned;
    let all = match x.as_slice() {
        Some(v) => v,
        None => {
            owned = x.as_standard_layout().into_owned();
            owned.as_slice().unwrap_or_default()
        }
    };
    let full = Rows {
        x: all,
        d: d.max(1),
    };
    if d == 0 {
        return Ok(Array2::zeros((k, 0)));
    }
    let threads = threads(s);
    // the levels: the runs on the smallest sample, then the best distinct results on a sample
    // ten times larger, then the best of those on every household (a level is skipped where
    // its sample would hold every household)
    let mut levels: Vec<(Option<Vec<usize>>, usize)> = Vec::new();
    let mut size = s.sample;
    let mut keep = s.refine.max(1);
    loop {
        match sample_rows(ids, size, s.seed) {
            Some(rows) if rows.len() >= k => levels.push((Some(rows), keep)),
            _ => {
                levels.push((None, keep));
                break;
            }
        }
        size = size.saturating_mul(LEVEL_GROWTH);
        keep = FINAL_CANDIDATES.min(keep);
    }
    let mut runs: Vec<Run> = Vec::new();
    for (level, (rows, _)) in levels.iter().enumerate() {
        let gathered;
        let data = match rows {
            Some(rows) => {
                let mut sub = Vec::with_capacity(rows.len() * d);
                for &i in rows {
                    sub.extend_from_slice(full.row(i));
                }
                gathered = sub;
                Rows { x: &gathered, d }
            }
            None => full,
        };
        runs = if level == 0 {
            crate::parallel::jobs(s.runs, threads, |r| {
                let mut rng = run_rng(s.seed, r);
                let start = plus_plus(data, k, &mut rng);
                lloyd_relocating(data, k, start, max_it)
            })
        } else {
            let starts = best_distinct(runs, levels[level - 1].1);
            crate::parallel::jobs(starts.len(), threads, |j| {
                lloyd_relocating(data, k, starts[j].clone(), max_it)
            })
        };
        tracing::debug!(
            level,
            households = data.n(),
            runs = runs.len(),
            "kmeans level"
        );
    }
    let best = pick(runs);
    Array2::from_shape_vec((k, d), best.centres).map_err(|e| SegmentError::KMeans(e.to_string()))
}

/// Each sample level is this many times the one before.
const LEVEL_GROWTH: usize = 10;

/// How many results go on from the second level to the next ones (one per core here).
const FINAL_CANDIDATES: usize = 2;

/// The centres of the `keep` best runs, best first (the earlier run of equals), counting runs
/// that ended in the same optimum (inertia equal to 1e-9) once.
fn best_distinct(mut runs: Vec<Run>, keep: usize) -> Vec<Vec<f64>> {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| runs[a].inertia.total_cmp(&runs[b].inertia).then(a.cmp(&b)));
    let mut kept: Vec<usize> = Vec::new();
    for &r in &order {
        let same = kept
            .iter()
            .any(|&o| (runs[o].inertia - runs[r].inertia).abs() <= 1e-9 * runs[o].inertia.abs());
        if !same && kept.len() < keep {
            kept.push(r);
        }
    }
    kept.iter()
        .map(|&r| std::mem::take(&mut runs[r].centres))
        .collect()
}

/// The run with the lowest inertia (the first of equals).
fn pick(runs: Vec<Run>) -> Run {
    let mut best: Option<Run> = None;
    for r in runs {
        tracing::debug!(inertia = r.inertia, iterations = r.iterations, "kmeans run");
        if best.as_ref().is_none_or(|b| r.inertia < b.inertia) {
            best = Some(r);
        }
    }
    best.unwrap_or(Run {
        centres: Vec::new(),
        inertia: 0.0,
        iterations: 0,
        counts: Vec::new(),
        farthest: (0, 0.0),
    })
}

/// A seeded sample of about `size` rows, chosen by a stable hash of the household id (so the
/// same households are chosen whatever the row order), in row order; `None` when every row
/// should be used.
pub fn sample_rows(ids: &[i64], size: usize, seed: u64) -> Option<Vec<usize>> {
    let n = ids.len();
    if size == 0 || n <= size {
        return None;
    }
    let threshold = ((size as u128) << 64) / n as u128;
    let salt = household_hash(seed as i64);
    Some(
        (0..n)
            .filter(|&i| (household_hash(ids[i] ^ salt as i64) as u128) < threshold)
            .collect(),
    )
}

/// Exactly `size` rows, the ones whose stable hash of household id (salted by the seed) is
/// smallest (ties by id), in row order: the same households whatever the row order; `None`
/// when every row should be used.
pub fn sample_exact(ids: &[i64], size: usize, seed: u64) -> Option<Vec<usize>> {
    let n = ids.len();
    if size == 0 || n <= size {
        return None;
    }
    let salt = household_hash(seed as i64);
    let mut keys: Vec<(u64, i64)> = ids
        .iter()
        .map(|&id| (household_hash(id ^ salt as i64), id))
        .collect();
    let (_, &mut cut, _) = keys.select_nth_unstable(size);
    Some(
        (0..n)
            .filter(|&i| (household_hash(ids[i] ^ salt as i64), ids[i]) < cut)
            .collect(),
    )
}

/// Assign every row to its nearest centroid (ties to the lower cluster number) and rank.
pub fn assign(x: ArrayView2<f64>, ids: &[i64], centroids: Array2<f64>) -> Clustering {
    let n = x.nrows();
    let k = centroids.nrows();
    let mut cluster = vec![0u32; n];
    let mut distance = vec![0f64; n];
    for (i, row) in x.rows().into_iter().enumerate() {
        let mut best = (0usize, f64::INFINITY);
        for (c, cent) in centroids.rows().into_iter().enumerate() {
            let d = sq_dist(row, cent);
            if d < best.1 {
                best = (c, d);
            }
        }
        cluster[i] = best.0 as u32;
        distance[i] = best.1;
    }
    let rank = ranks(&cluster, &distance, ids);
    let mut sizes = vec![0u64; k];
    for &c in &cluster {
        sizes[c as usize] += 1;
    }
    let inertia = distance.iter().sum();
    Clustering {
        centroids,
        cluster,
        distance,
        rank,
        sizes,
        inertia,
    }
}

/// SPEC 3's rank: inside each cluster, by distance ascending, ties by household_id ascending.
pub fn ranks(cluster: &[u32], distance: &[f64], ids: &[i64]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..cluster.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        cluster[a]
            .cmp(&cluster[b])
            .then_with(|| distance[a].total_cmp(&distance[b]))
            .then_with(|| ids[a].cmp(&ids[b]))
    });
    let mut rank = vec![0u32; cluster.len()];
    let mut prev = u32::MAX;
    let mut r = 0u32;
    for i in order {
        if cluster[i] != prev {
            prev = cluster[i];
            r = 0;
        }
        r += 1;
        rank[i] = r;
    }
    rank
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// The households `sample` picks from `ids` in reverse order, sorted, to compare with
    /// what it picks from `ids` in order: a sample chooses by household, not by position.
    fn chosen_from_reversed(
        sample: fn(&[i64], usize, u64) -> Option<Vec<usize>>,
        ids: &[i64],
        size: usize,
        seed: u64,
    ) -> Vec<i64> {
        let rev: Vec<i64> = ids.iter().rev().copied().collect();
        let mut chosen: Vec<i64> = sample(&rev, size, seed)
            .unwrap()
            .iter()
            .map(|&i| rev[i])
            .collect();
        chosen.sort();
        chosen
    }

    #[test]
    fn samples_are_seeded_sized_and_order_free() {
        let ids: Vec<i64> = (0..100_000).map(|i| i * 13 + 5).collect();
        let a = sample_rows(&ids, 10_000, 3).unwrap();
        assert!((9_000..11_000).contains(&a.len()), "{}", a.len());
        assert_eq!(Some(a.clone()), sample_rows(&ids, 10_000, 3));
        assert_ne!(Some(a.clone()), sample_rows(&ids, 10_000, 4));
        assert_eq!(
            chosen_from_reversed(sample_rows, &ids, 10_000, 3),
            a.iter().map(|&i| ids[i]).collect::<Vec<_>>()
        );
        assert_eq!(sample_rows(&ids, 0, 3), None);
        assert_eq!(sample_rows(&ids[..50], 100, 3), None);
    }

    #[test]
    fn exact_samples_have_their_size_whatever_the_order() {
        let ids: Vec<i64> = (0..50_000).map(|i| i * 11 + 3).collect();
        let a = sample_exact(&ids, 20_000, 3).unwrap();
        assert_eq!(a.len(), 20_000);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            chosen_from_reversed(sample_exact, &ids, 20_000, 3),
            a.iter().map(|&i| ids[i]).collect::<Vec<_>>()
        );
        assert_ne!(Some(a), sample_exact(&ids, 20_000, 4));
        assert_eq!(sample_exact(&ids, 50_000, 3), None);
    }

    #[test]
    fn ties_in_distance_break_by_household_id() {
        let cluster = [0, 0, 0, 1, 1, 0];
        let distance = [0.5, 0.25, 0.5, 1.0, 1.0, 0.5];
        let ids = [30, 99, 10, 7, 3, 20];
        assert_eq!(ranks(&cluster, &distance, &ids), vec![4, 1, 2, 2, 1, 3]);
    }

    #[test]
    fn assign_is_nearest_and_squared() {
        let x = array![[0.0, 0.0], [1.0, 1.0], [10.0, 10.0], [9.0, 10.0]];
        let c = array![[10.0, 10.0], [0.0, 0.0]];
        let got = assign(x.view(), &[1, 2, 3, 4], c);
        assert_eq!(got.cluster, vec![1, 1, 0, 0]);
        assert_eq!(got.distance, vec![0.0, 2.0, 0.0, 1.0]);
        assert_eq!(got.rank, vec![1, 2, 1, 2]);
        assert_eq!(got.sizes, vec![2, 2]);
        assert_eq!(got.inertia, 3.0);
    }

    #[test]
    fn kmeans_finds_separated_blobs_and_is_deterministic() {
        let mut rows = Vec::new();
        let mut ids = Vec::new();
        for b in 0..3 {
            for i in 0..50 {
                let t = i as f64 / 50.0;
                rows.push([b as f64 * 10.0 + t, b as f64 * -5.0 + t * 0.5]);
                ids.push((b * 100 + i) as i64);
            }
        }
        let x = Array2::from_shape_vec((150, 2), rows.concat()).unwrap();
        let s = KMeansSettings {
            k: 3,
            ..KMeansSettings::default()
        };
        let a = fit(x.view(), &ids, &s).unwrap();
        let b = fit(x.view(), &ids, &s).unwrap();
        assert_eq!(a.cluster, b.cluster);
        assert_eq!(a.centroids, b.centroids);
        let mut sizes = a.sizes.clone();
        sizes.sort();
        assert_eq!(sizes, vec![50, 50, 50]);
        for blob in 0..3 {
            let c = a.cluster[blob * 50];
            assert!(a.cluster[blob * 50..blob * 50 + 50].iter().all(|&x| x == c));
        }
        let err = fit(x.view(), &ids, &KMeansSettings { k: 151, ..s }).unwrap_err();
        assert!(err.to_string().contains("151"), "{err}");
    }

    /// Seeded blob-like rows in 9 dimensions: three numeric columns and one-hot cells.
    fn rows(n: usize, seed: u64) -> Array2<f64> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        Array2::from_shape_fn((n, 9), |(_, j)| {
            let u = unit(&mut rng);
            if j < 3 {
                (u * 8.0).round() / 8.0
            } else {
                f64::from(u < 0.3)
            }
        })
    }

    /// Lloyd's algorithm as written in the textbook: every distance, every iteration.
    fn plain_lloyd(x: &Array2<f64>, mut c: Array2<f64>) -> Array2<f64> {
        loop {
            let a = assign(x.view(), &vec![0; x.nrows()], c.clone());
            let mut next = c.clone();
            for k in 0..c.nrows() {
                let members: Vec<usize> = (0..x.nrows())
                    .filter(|&i| a.cluster[i] == k as u32)
                    .collect();
                if !members.is_empty() {
                    let m = x
                        .select(ndarray::Axis(0), &members)
                        .mean_axis(ndarray::Axis(0))
                        .unwrap();
                    next.row_mut(k).assign(&m);
                }
            }
            let again = assign(x.view(), &vec![0; x.nrows()], next.clone());
            if again.cluster == a.cluster {
                return next;
            }
            c = next;
        }
    }

    #[test]
    fn hamerly_bounds_reach_what_plain_lloyd_reaches() {
        for seed in 0..6 {
            let x = rows(2_000, seed);
            let flat = x.as_slice().unwrap();
            let r = Rows { x: flat, d: 9 };
            let mut rng = run_rng(seed, 0);
            let start = plus_plus(r, 5, &mut rng);
            let ours = lloyd(r, 5, start.clone(), 1_000);
            let want = plain_lloyd(&x, Array2::from_shape_vec((5, 9), start).unwrap());
            let got = Array2::from_shape_vec((5, 9), ours.centres).unwrap();
            let gap = (&got - &want).iter().fold(0f64, |m, v| m.max(v.abs()));
            assert!(gap < 1e-12, "seed {seed}: centres differ by {gap}");
            let inertia = assign(x.view(), &vec![0; 2_000], want).inertia;
            assert!((ours.inertia - inertia).abs() <= 1e-9 * inertia);
        }
    }

    #[test]
    fn the_result_is_a_fixed_point_of_linfas_kmeans() {
        use linfa::traits::Fit;
        let x = rows(3_000, 9);
        let ids: Vec<i64> = (0..3_000).collect();
        let s = KMeansSettings {
            k: 4,
            sample: 1_000,
            ..KMeansSettings::default()
        };
        let ours = fit(x.view(), &ids, &s).unwrap();
        let linfa =
            linfa_clustering::KMeans::params_with_rng(4, Xoshiro256PlusPlus::seed_from_u64(1))
                .n_runs(1)
                .tolerance(1e-12)
                .init_method(linfa_clustering::KMeansInit::Precomputed(
                    ours.centroids.clone(),
                ))
                .fit(&linfa::DatasetBase::from(x.clone()))
                .unwrap();
        let gap = (linfa.centroids() - &ours.centroids)
            .iter()
            .fold(0f64, |m, v| m.max(v.abs()));
        assert!(gap < 1e-9, "linfa moved our centres by {gap}");
    }

    #[test]
    fn the_same_seed_gives_the_same_centres_on_any_thread_count() {
        let x = rows(20_000, 4);
        let ids: Vec<i64> = (0..20_000).map(|i| i * 7 + 1).collect();
        let base = KMeansSettings {
            k: 6,
            sample: 2_000,
            ..KMeansSettings::default()
        };
        let one = fit_centres(x.view(), &ids, &KMeansSettings { threads: 1, ..base }).unwrap();
        let three = fit_centres(x.view(), &ids, &KMeansSettings { threads: 3, ..base }).unwrap();
        assert_eq!(one, three);
        let other = fit_centres(x.view(), &ids, &KMeansSettings { seed: 4, ..base }).unwrap();
        assert_ne!(one, other);
    }

    #[test]
    fn an_empty_cluster_takes_the_farthest_row() {
        // three distinct rows, two starting centres on the same one: Lloyd alone leaves a
        // cluster empty, the relocation gives each row its own cluster
        let v = vec![0.0, 0.0, 0.0, 0.0, 5.0, 0.0, 9.0, 0.0];
        let r = Rows { x: &v, d: 2 };
        let start = vec![0.0, 0.0, 0.0, 0.0, 7.0, 0.0];
        assert!(lloyd(r, 3, start.clone(), 100).counts.contains(&0));
        let run = lloyd_relocating(r, 3, start, 100);
        let mut counts = run.counts.clone();
        counts.sort();
        assert_eq!(counts, vec![1, 1, 2], "{:?}", run.centres);
        assert_eq!(run.inertia, 0.0);
    }

    #[test]
    fn greedy_plus_plus_picks_distinct_rows_and_spreads_them() {
        // four far blobs: the four centres land one in each
        let mut v = Vec::new();
        for b in 0..4 {
            for i in 0..50 {
                v.extend_from_slice(&[b as f64 * 100.0 + (i % 5) as f64, (i / 5) as f64]);
            }
        }
        let r = Rows { x: &v, d: 2 };
        let c = plus_plus(r, 4, &mut run_rng(3, 0));
        let mut blobs: Vec<i64> = c.chunks(2).map(|p| (p[0] / 100.0).floor() as i64).collect();
        blobs.sort();
        assert_eq!(blobs, vec![0, 1, 2, 3]);
        // as many identical rows as k: still k centres, no NaN
        let same = vec![1.0; 10];
        let c = plus_plus(Rows { x: &same, d: 2 }, 3, &mut run_rng(3, 0));
        assert_eq!(c, vec![1.0; 6]);
    }
}
