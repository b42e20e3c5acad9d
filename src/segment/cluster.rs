//! KMeans, then SPEC 3's own definitions computed here in f64: each household's nearest
//! centroid, its squared distance, and its rank inside the cluster by distance ascending, ties
//! by household_id ascending.
//!
//! The fit is scikit-learn's recipe made cheaper where the data allows it. Each run starts
//! from greedy k-means++ (2 + ⌊ln k⌋ candidates per centre, the one that lowers the potential
//! most is kept) and runs Lloyd's iterations. Above `sample` households the runs search a
//! seeded sample, measuring every row against every centre until the assignment has settled
//! ([`Until::Settled`]); the `refine` best distinct results are iterated on a sample ten times
//! larger, and the best of those through larger samples up to every household, with Hamerly's
//! bounds (the same steps as Lloyd, skipping the distances the triangle inequality proves
//! useless) until no household changes cluster; the lowest full inertia wins. A cluster left
//! empty gets the row farthest from its centre, as scikit-learn does.
//!
//! What the data allows: SPEC 2's one-hot cells hold only 0 and 1, so a row's squared distance
//! is its 7 numeric coordinates plus one lookup in a table of (pattern of cells × centre)
//! ([`Split`]); the loops over centres vectorise, and run as AVX-512 or AVX2 code where the CPU
//! has it ([`crate::simd`]). Runs go to worker threads, but each run's arithmetic is
//! sequential and fixed (explicit lanes, no fused multiply-add), so the result is the same for
//! a seed whatever the thread count, instruction set or machine.

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
#[inline(always)]
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

/// Rows prepared for fast distances. The columns that hold only 0 and 1 (SPEC 2's one-hot
/// cells) are replaced by the row's pattern of them: a squared distance is then the sum over
/// the other columns plus one entry of a table computed once per set of centres (pattern ×
/// centre), so that 19 coordinates cost 7 and a lookup. Where the patterns are too many for
/// the table to pay (more than one for [`ROWS_PER_PATTERN`] rows), every column stays dense.
/// Each coordinate's term is the same as in the dense sum; only the order of the terms
/// differs, and it is fixed.
struct Split<'a> {
    /// The rows themselves (the sums, the relocation and the final inertia use them).
    rows: Rows<'a>,
    /// The columns that are not binary, row-major, `dn` per row (the rows themselves when
    /// every column is).
    dense: std::borrow::Cow<'a, [f64]>,
    dn: usize,
    /// Indices of the dense columns in a row.
    dense_cols: Vec<usize>,
    /// Indices of the binary columns in a row.
    binary_cols: Vec<usize>,
    /// Each row's pattern.
    pattern: Vec<u32>,
    /// Each pattern's values of the binary columns (0 or 1), `binary_cols.len()` per pattern.
    bits: Vec<u8>,
}

/// The binary columns are split off only where there are at least this many rows per
/// distinct pattern.
const ROWS_PER_PATTERN: usize = 8;

/// At most this many binary columns make a pattern (the key is a `u64`).
const MAX_BINARY_COLUMNS: usize = 64;

impl<'a> Split<'a> {
    fn new(rows: Rows<'a>) -> Self {
        let (n, d) = (rows.n(), rows.d);
        // one pass in row order (a column at a time would stride through the whole matrix)
        let mut is_binary = vec![true; d];
        for i in 0..n {
            for (b, &v) in is_binary.iter_mut().zip(rows.row(i)) {
                *b &= v == 0.0 || v == 1.0;
            }
        }
        let mut binary: Vec<usize> = (0..d).filter(|&j| is_binary[j]).collect();
        binary.truncate(MAX_BINARY_COLUMNS);
        // pattern ids by key: an array for up to 16 binary columns, else a map
        let mut by_key: Vec<u32> = vec![
            u32::MAX;
            if binary.len() <= 16 {
                1 << binary.len()
            } else {
                0
            }
        ];
        let mut by_map: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
        let mut pattern = Vec::with_capacity(n);
        let mut bits = Vec::new();
        let mut patterns = 0usize;
        let most = n.max(ROWS_PER_PATTERN) / ROWS_PER_PATTERN;
        if !binary.is_empty() {
            for i in 0..n {
                let x = rows.row(i);
                let key = binary
                    .iter()
                    .enumerate()
                    .fold(0u64, |k, (b, &j)| k | (u64::from(x[j] == 1.0) << b));
                let slot = match by_key.get_mut(key as usize) {
                    Some(slot) => slot,
                    None => by_map.entry(key).or_insert(u32::MAX),
                };
                if *slot == u32::MAX {
                    *slot = patterns as u32;
                    patterns += 1;
                    bits.extend(binary.iter().map(|&j| u8::from(x[j] == 1.0)));
                    if patterns > most {
                        break;
                    }
                }
                pattern.push(*slot);
            }
        }
        if pattern.len() < n || binary.is_empty() {
            return Split::dense(rows);
        }
        let dense_cols: Vec<usize> = (0..d).filter(|j| !binary.contains(j)).collect();
        let dn = dense_cols.len();
        let mut dense = Vec::with_capacity(n * dn);
        for i in 0..n {
            let x = rows.row(i);
            dense.extend(dense_cols.iter().map(|&j| x[j]));
        }
        Split {
            rows,
            dense: std::borrow::Cow::Owned(dense),
            dn,
            dense_cols,
            binary_cols: binary,
            pattern,
            bits,
        }
    }

    /// Every column dense: nothing to build (also [`Split::new`]'s answer where no column is
    /// binary or the patterns are too many).
    fn dense(rows: Rows<'a>) -> Self {
        Split {
            rows,
            dense: std::borrow::Cow::Borrowed(rows.x),
            dn: rows.d,
            dense_cols: (0..rows.d).collect(),
            binary_cols: Vec::new(),
            pattern: vec![0; rows.n()],
            bits: Vec::new(),
        }
    }

    fn n(&self) -> usize {
        self.rows.n()
    }

    fn patterns(&self) -> usize {
        if self.binary_cols.is_empty() {
            1
        } else {
            self.bits.len() / self.binary_cols.len()
        }
    }

    /// Row `i`'s dense columns and pattern.
    #[inline(always)]
    fn row(&self, i: usize) -> (&[f64], usize) {
        (
            &self.dense[i * self.dn..(i + 1) * self.dn],
            self.pattern[i] as usize,
        )
    }
}

/// Points (full rows of d coordinates) laid out to measure a row of a [`Split`] against all
/// of them in one pass: dense coordinate j of point c at `j * width + c`, and the binary
/// columns' part of the distance of pattern p to point c at `p * width + c`, `width` being
/// the count rounded up to 4 (padding points are never read back), so that the inner loop
/// runs over points and vectorises.
struct Layout {
    t: Vec<f64>,
    table: Vec<f64>,
    /// The points' dense coordinates, row-major (`dn` per point).
    dense: Vec<f64>,
    k: usize,
    width: usize,
}

impl Layout {
    #[inline(always)]
    fn new(s: &Split, points: &[f64], k: usize) -> Self {
        let d = s.rows.d;
        let width = k.div_ceil(4) * 4;
        let mut t = vec![0f64; width * s.dn];
        let mut dense = Vec::with_capacity(k * s.dn);
        for c in 0..k {
            let p = &points[c * d..(c + 1) * d];
            for (j, &col) in s.dense_cols.iter().enumerate() {
                t[j * width + c] = p[col];
                dense.push(p[col]);
            }
        }
        // each binary column's term for a 0 and for a 1, per point: the table's entries are
        // sums of them, vectorised over the points
        let nb = s.binary_cols.len();
        let mut terms = vec![0f64; nb * 2 * width];
        for (b, &col) in s.binary_cols.iter().enumerate() {
            for c in 0..k {
                let v = points[c * d + col];
                let (zero, one) = (0.0 - v, 1.0 - v);
                terms[(b * 2) * width + c] = zero * zero;
                terms[(b * 2 + 1) * width + c] = one * one;
            }
        }
        let mut table = vec![0f64; width * s.patterns()];
        if nb > 0 {
            match width {
                4 => table_rows::<4>(&s.bits, nb, &terms, &mut table),
                8 => table_rows::<8>(&s.bits, nb, &terms, &mut table),
                12 => table_rows::<12>(&s.bits, nb, &terms, &mut table),
                16 => table_rows::<16>(&s.bits, nb, &terms, &mut table),
                _ => {
                    for (pat, row) in s.bits.chunks_exact(nb).zip(table.chunks_exact_mut(width)) {
                        for (b, &bit) in pat.iter().enumerate() {
                            let at = (b * 2 + usize::from(bit)) * width;
                            for (acc, &v) in row.iter_mut().zip(&terms[at..at + width]) {
                                *acc += v;
                            }
                        }
                    }
                }
            }
        }
        Layout {
            t,
            table,
            dense,
            k,
            width,
        }
    }

    /// Squared distances of a split row to every point into `out[..width]`: the binary
    /// columns' part from the table, then the dense coordinates in order (the same on every
    /// machine).
    #[inline(always)]
    fn distances(&self, x: &[f64], pattern: usize, out: &mut [f64]) {
        match self.width {
            4 => self.fixed::<4>(x, pattern, out),
            8 => self.fixed::<8>(x, pattern, out),
            12 => self.fixed::<12>(x, pattern, out),
            16 => self.fixed::<16>(x, pattern, out),
            w => {
                let out = &mut out[..w];
                out.copy_from_slice(&self.table[pattern * w..(pattern + 1) * w]);
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
    fn fixed<const W: usize>(&self, x: &[f64], pattern: usize, out: &mut [f64]) {
        let mut acc = [0f64; W];
        acc.copy_from_slice(&self.table[pattern * W..(pattern + 1) * W]);
        for (row, &xj) in self.t.chunks_exact(W).zip(x) {
            for l in 0..W {
                let t = xj - row[l];
                acc[l] += t * t;
            }
        }
        out[..W].copy_from_slice(&acc);
    }

    /// The squared distance of a split row to point `c`, the same sum as [`Self::distances`].
    #[inline(always)]
    fn one(&self, x: &[f64], pattern: usize, c: usize) -> f64 {
        let dn = x.len();
        let mut acc = self.table[pattern * self.width + c];
        for (&a, &b) in x.iter().zip(&self.dense[c * dn..(c + 1) * dn]) {
            let t = a - b;
            acc += t * t;
        }
        acc
    }

    /// The nearest point, its distance and the second-nearest distance (Euclidean).
    #[inline(always)]
    fn nearest2(&self, x: &[f64], pattern: usize, scratch: &mut [f64]) -> (usize, f64, f64) {
        self.distances(x, pattern, scratch);
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

/// [`Layout`]'s table for a width known at compile time: each pattern's sums stay in
/// registers (the terms of its bits, in column order).
#[inline(always)]
fn table_rows<const W: usize>(bits: &[u8], nb: usize, terms: &[f64], table: &mut [f64]) {
    for (pat, row) in bits.chunks_exact(nb).zip(table.chunks_exact_mut(W)) {
        let mut acc = [0f64; W];
        for (b, &bit) in pat.iter().enumerate() {
            let at = (b * 2 + usize::from(bit)) * W;
            for l in 0..W {
                acc[l] += terms[at + l];
            }
        }
        row.copy_from_slice(&acc);
    }
}

/// A uniform f64 in [0, 1).
fn unit(rng: &mut Xoshiro256PlusPlus) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Greedy k-means++ (Arthur and Vassilvitskii, with scikit-learn's 2 + ⌊ln k⌋ local trials):
/// the first centre uniformly, each next one among candidates drawn in proportion to the
/// squared distance to the nearest centre so far, keeping the candidate that lowers the total
/// the most. Returns k × d centres, row-major, with each row's nearest of them.
fn plus_plus(s: &Split, k: usize, rng: &mut Xoshiro256PlusPlus) -> Start {
    crate::simd::dispatch!(plus_plus_body(s: &Split, k: usize, rng: &mut Xoshiro256PlusPlus) -> Start)
}

/// The start of a run: the centres (k × d, row-major) and each row's nearest of them (the
/// first of equals, from the same sums as [`Layout::distances`]: what a first pass of
/// [`lloyd`] would find).
struct Start {
    centres: Vec<f64>,
    nearest: Vec<u32>,
}

#[inline(always)]
fn plus_plus_body(s: &Split, k: usize, rng: &mut Xoshiro256PlusPlus) -> Start {
    let rows = s.rows;
    let n = rows.n();
    let d = rows.d;
    let mut centres = Vec::with_capacity(k * d);
    let first = (rng.next_u64() % n as u64) as usize;
    centres.extend_from_slice(rows.row(first));
    let one = Layout::new(s, rows.row(first), 1);
    let mut closest: Vec<f64> = (0..n)
        .map(|i| {
            let (x, p) = s.row(i);
            one.one(x, p, 0)
        })
        .collect();
    let mut nearest = vec![0u32; n];
    let trials = 2 + (k as f64).ln().floor() as usize;
    let width = trials.div_ceil(4) * 4;
    let mut cumulative = vec![0f64; n];
    // each row's distance to each candidate of the step, to update `closest` by the one kept
    let mut to_candidates = vec![0f64; n * trials];
    let mut scratch = vec![0f64; width];
    for step in 1..k {
        // the running total in a local of its own, so that it stays in a register
        let run = {
            let mut total = 0.0;
            for (c, v) in cumulative.iter_mut().zip(&closest) {
                total += v;
                *c = total;
            }
            total
        };
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
        let cands = Layout::new(s, &flat, trials);
        let mut pots = vec![0f64; trials];
        for (i, (&old, to)) in closest
            .iter()
            .zip(to_candidates.chunks_exact_mut(trials))
            .enumerate()
        {
            let (x, p) = s.row(i);
            cands.distances(x, p, &mut scratch);
            for ((pot, &v), slot) in pots.iter_mut().zip(&scratch).zip(to.iter_mut()) {
                *pot += old.min(v);
                *slot = v;
            }
        }
        // the candidate that lowers the potential most (the first of equals)
        let t = (0..trials).fold(0, |b, t| if pots[t] < pots[b] { t } else { b });
        for ((c, near), to) in closest
            .iter_mut()
            .zip(nearest.iter_mut())
            .zip(to_candidates.chunks_exact(trials))
        {
            if to[t] < *c {
                *c = to[t];
                *near = step as u32;
            }
        }
        centres.extend_from_slice(rows.row(picks[t]));
    }
    Start { centres, nearest }
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

/// How Lloyd's iterations find each row's nearest centre.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pass {
    /// Measure every row against every centre: the cheapest from a k-means++ start, where
    /// most rows change cluster in the first iterations and bounds would cost more than they
    /// save (7 dense coordinates and a table lookup per centre, vectorised over the centres).
    Every,
    /// Hamerly's bounds: an upper bound on each row's distance to its centre and a lower bound
    /// on its distance to every other centre, moved by how far the centres move, so that a row
    /// is looked at only when the bounds no longer prove its cluster: the cheapest near a
    /// fixed point, where they skip nearly every row.
    Bounded,
}

/// When Lloyd's iterations stop.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Until {
    /// No row changes cluster: a true fixed point.
    FixedPoint,
    /// At most one row in [`SETTLED`] changes cluster. The sample's search stops there: its
    /// runs only rank basins and hand their centres to the next level, which iterates them to
    /// a fixed point; the last iterations, each moving a handful of rows, change neither
    /// (the same inertia ratios to scikit-learn on 30 fits of 10,000 to 300,000 households,
    /// in about 40 % of the search's iterations).
    Settled,
}

/// See [`Until::Settled`].
const SETTLED: usize = 200;

impl Until {
    fn done(self, changed: u64, rows: usize) -> bool {
        changed == 0 || (self == Until::Settled && changed as usize * SETTLED <= rows)
    }
}

/// How the levels after the first refine: bounded passes to a fixed point.
const REFINE: (Pass, Until) = (Pass::Bounded, Until::FixedPoint);

/// Lloyd's iterations from `centres` until `how.1` says (or `max_iterations`), each pass
/// found as `how.0` says. `first`, when given with [`Pass::Every`], is each row's nearest of
/// `centres`, which the first pass then need not measure. Both passes find the same nearest
/// centres (up to exact ties, where the bounded pass keeps a row's centre and the other takes
/// the lower number); empty clusters keep their centre. Returns the centres as the means of
/// the final clusters.
fn lloyd(
    s: &Split,
    k: usize,
    centres: Vec<f64>,
    first: Option<&[u32]>,
    how: (Pass, Until),
    max_iterations: u64,
) -> Run {
    crate::simd::dispatch!(lloyd_body(
        s: &Split,
        k: usize,
        centres: Vec<f64>,
        first: Option<&[u32]>,
        how: (Pass, Until),
        max_iterations: u64,
    ) -> Run)
}

// the bounds, assignments and sums are parallel arrays indexed by row and by cluster
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn lloyd_body(
    s: &Split,
    k: usize,
    mut centres: Vec<f64>,
    first: Option<&[u32]>,
    (pass, until): (Pass, Until),
    max_iterations: u64,
) -> Run {
    let rows = s.rows;
    let n = rows.n();
    let d = rows.d;
    let mut assign = vec![0u32; n];
    let mut upper = vec![0f64; n];
    let mut lower = vec![0f64; n];
    let mut sums = vec![0f64; k * d];
    let mut counts = vec![0u64; k];
    let mut scratch = vec![0f64; k.div_ceil(4) * 4];
    let mut layout = Layout::new(s, &centres, k);
    for i in 0..n {
        let (c, u, l) = match (first, pass) {
            (Some(first), Pass::Every) => (first[i] as usize, 0.0, 0.0),
            _ => {
                let (xs, p) = s.row(i);
                layout.nearest2(xs, p, &mut scratch)
            }
        };
        assign[i] = c as u32;
        upper[i] = u;
        lower[i] = l;
        counts[c] += 1;
        for (s, v) in sums[c * d..(c + 1) * d].iter_mut().zip(rows.row(i)) {
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
        layout = Layout::new(s, &centres, k);
        let mut changed = 0u64;
        if pass == Pass::Every {
            for i in 0..n {
                let (xs, p) = s.row(i);
                layout.distances(xs, p, &mut scratch);
                let (mut best, mut c) = (scratch[0], 0usize);
                for (o, &v) in scratch[..k].iter().enumerate().skip(1) {
                    let lt = v < best;
                    best = if lt { v } else { best };
                    c = if lt { o } else { c };
                }
                let a = assign[i] as usize;
                if c != a {
                    changed += 1;
                    assign[i] = c as u32;
                    move_row(rows.row(i), a, c, &mut counts, &mut sums);
                }
            }
            if until.done(changed, n) {
                break;
            }
            continue;
        }
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
        for i in 0..n {
            let a = assign[i] as usize;
            upper[i] += moved[a];
            lower[i] -= if a == m1c { m2 } else { m1 };
            let bound = half[a].max(lower[i]);
            if upper[i] <= bound {
                continue;
            }
            let (xs, p) = s.row(i);
            upper[i] = layout.one(xs, p, a).sqrt();
            if upper[i] <= bound {
                continue;
            }
            let (c, u, l) = layout.nearest2(xs, p, &mut scratch);
            upper[i] = u;
            lower[i] = l;
            if c != a {
                changed += 1;
                assign[i] = c as u32;
                move_row(rows.row(i), a, c, &mut counts, &mut sums);
            }
        }
        if until.done(changed, n) {
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

/// Row `x` leaves cluster `a` for `c`: the counts and the running sums follow.
#[inline(always)]
fn move_row(x: &[f64], a: usize, c: usize, counts: &mut [u64], sums: &mut [f64]) {
    let d = x.len();
    counts[a] -= 1;
    counts[c] += 1;
    for (j, &v) in x.iter().enumerate() {
        sums[a * d + j] -= v;
        sums[c * d + j] += v;
    }
}

/// [`lloyd`], then, while a cluster is left empty and some row is away from its centre, the
/// empty cluster's centre moved onto the row farthest from its own (as scikit-learn
/// relocates empty clusters) and the iterations run again; at most k times.
fn lloyd_relocating(
    s: &Split,
    k: usize,
    start: Vec<f64>,
    first: Option<&[u32]>,
    how: (Pass, Until),
    max_iterations: u64,
) -> Run {
    let rows = s.rows;
    let mut run = lloyd(s, k, start, first, how, max_iterations);
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
        run = lloyd(s, k, centres, None, how, max_iterations);
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
        // the table of patterns pays where most rows are measured, the sample's search; near a
        // fixed point the bounds skip nearly every row, and building it for every household
        // costs more than it saves
        let data = &if level == 0 {
            Split::new(data)
        } else {
            Split::dense(data)
        };
        runs = if level == 0 {
            // the search settles, and a level after it iterates to a fixed point; when it is
            // the only level (every household in it), it goes to the fixed point itself
            let until = if levels.len() > 1 {
                Until::Settled
            } else {
                Until::FixedPoint
            };
            let search = (Pass::Every, until);
            crate::parallel::jobs(s.runs, threads, |r| {
                let mut rng = run_rng(s.seed, r);
                let start = plus_plus(data, k, &mut rng);
                let first = Some(start.nearest.as_slice());
                lloyd_relocating(data, k, start.centres, first, search, max_it)
            })
        } else {
            let starts = best_distinct(runs, levels[level - 1].1);
            crate::parallel::jobs(starts.len(), threads, |j| {
                lloyd_relocating(data, k, starts[j].clone(), None, REFINE, max_it)
            })
        };
        tracing::debug!(
            level,
            households = data.n(),
            runs = runs.len(),
            iterations = runs.iter().map(|r| r.iterations).sum::<u64>(),
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
    fn both_passes_reach_what_plain_lloyd_reaches() {
        for seed in 0..6 {
            let x = rows(2_000, seed);
            let flat = x.as_slice().unwrap();
            let split = Split::new(Rows { x: flat, d: 9 });
            assert_eq!(split.binary_cols, (3..9).collect::<Vec<_>>());
            let mut rng = run_rng(seed, 0);
            let start = plus_plus(&split, 5, &mut rng);
            let want = plain_lloyd(
                &x,
                Array2::from_shape_vec((5, 9), start.centres.clone()).unwrap(),
            );
            let inertia = assign(x.view(), &vec![0; 2_000], want.clone()).inertia;
            let bounded = lloyd(&split, 5, start.centres.clone(), None, REFINE, 1_000);
            let first = Some(start.nearest.as_slice());
            let every = (Pass::Every, Until::FixedPoint);
            let every = lloyd(&split, 5, start.centres.clone(), first, every, 1_000);
            for (name, ours) in [("bounded", &bounded), ("every", &every)] {
                let got = Array2::from_shape_vec((5, 9), ours.centres.clone()).unwrap();
                let gap = (&got - &want).iter().fold(0f64, |m, v| m.max(v.abs()));
                assert!(gap < 1e-12, "seed {seed}, {name}: centres differ by {gap}");
                assert!((ours.inertia - inertia).abs() <= 1e-9 * inertia);
            }
            assert_eq!(bounded.centres, every.centres, "seed {seed}");
        }
    }

    #[test]
    fn split_distances_are_the_dense_ones_and_too_many_patterns_stay_dense() {
        let x = rows(1_000, 2);
        let flat = x.as_slice().unwrap();
        let split = Split::new(Rows { x: flat, d: 9 });
        assert_eq!(split.dn, 3);
        assert!(split.patterns() <= 64, "{}", split.patterns());
        let points: Vec<f64> = (0..7 * 9).map(|v| ((v * 37) % 11) as f64 / 10.0).collect();
        let layout = Layout::new(&split, &points, 7);
        let mut out = vec![0f64; 8];
        for i in 0..1_000 {
            let (xs, p) = split.row(i);
            layout.distances(xs, p, &mut out);
            for c in 0..7 {
                let want = sq(x.row(i).as_slice().unwrap(), &points[c * 9..(c + 1) * 9]);
                assert!((out[c] - want).abs() <= 1e-12, "row {i}, point {c}");
                assert_eq!(layout.one(xs, p, c), out[c]);
            }
        }
        // 40 rows of 12 binary cells each: nearly every row its own pattern, so every column
        // stays dense
        let many = Array2::from_shape_fn((40, 12), |(i, j)| {
            f64::from(((i as u64 * 2_654_435_761) >> j) & 1 == 1)
        });
        let split = Split::new(Rows {
            x: many.as_slice().unwrap(),
            d: 12,
        });
        assert!(split.binary_cols.is_empty());
        assert_eq!((split.dn, split.patterns()), (12, 1));
        assert_eq!(split.dense, many.as_slice().unwrap());
    }

    #[test]
    fn plus_plus_hands_over_each_rows_nearest_centre() {
        let x = rows(3_000, 5);
        let split = Split::new(Rows {
            x: x.as_slice().unwrap(),
            d: 9,
        });
        let start = plus_plus(&split, 6, &mut run_rng(5, 2));
        let layout = Layout::new(&split, &start.centres, 6);
        let mut scratch = vec![0f64; 8];
        for i in 0..3_000 {
            let (xs, p) = split.row(i);
            assert_eq!(
                layout.nearest2(xs, p, &mut scratch).0,
                start.nearest[i] as usize
            );
        }
    }

    #[test]
    fn the_wider_instructions_compute_the_same_bits() {
        // `plus_plus` and `lloyd` dispatch to AVX-512 or AVX2 where the CPU has them; their
        // bodies called here directly are compiled for the baseline target (vectorised only
        // under optimisation: `cargo test --release` makes this the real comparison)
        let x = rows(4_000, 8);
        let split = Split::new(Rows {
            x: x.as_slice().unwrap(),
            d: 9,
        });
        let wide = plus_plus(&split, 6, &mut run_rng(8, 1));
        let base = plus_plus_body(&split, 6, &mut run_rng(8, 1));
        assert_eq!(
            (&wide.centres, &wide.nearest),
            (&base.centres, &base.nearest)
        );
        for pass in [Pass::Every, Pass::Bounded] {
            let first = (pass == Pass::Every).then_some(base.nearest.as_slice());
            let how = (pass, Until::FixedPoint);
            let wide = lloyd(&split, 6, base.centres.clone(), first, how, 300);
            let narrow = lloyd_body(&split, 6, base.centres.clone(), first, how, 300);
            assert_eq!(wide.centres, narrow.centres, "{pass:?}");
            assert_eq!(wide.inertia.to_bits(), narrow.inertia.to_bits(), "{pass:?}");
        }
    }

    #[test]
    fn the_result_is_a_fixed_point_of_linfas_kmeans() {
        let gap = linfa_moves(3_000, 4, 1_000, false);
        assert!(gap < 1e-9, "linfa moved our centres by {gap}");
    }

    #[test]
    fn regression_a_fit_of_one_level_still_ends_at_a_fixed_point() {
        // with every household in the first level (no sample, or a sample as large as the
        // data), no later level iterates the search's settled runs to a fixed point: the
        // search must go there itself
        for sample in [0, 20_000] {
            let gap = linfa_moves(20_000, 7, sample, true);
            assert!(
                gap < 1e-9,
                "sample {sample}: linfa moved our centres by {gap}"
            );
        }
    }

    /// How far linfa's Lloyd iterations move our centres on `n` rows of [`rows`] (with the
    /// numeric columns continuous when `smooth`: no gaps between values, so the assignment
    /// keeps changing by a few rows for many iterations), `k`, `sample`.
    fn linfa_moves(n: usize, k: usize, sample: usize, smooth: bool) -> f64 {
        use linfa::traits::Fit;
        let mut x = rows(n, 9);
        if smooth {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(77);
            x.columns_mut()
                .into_iter()
                .take(3)
                .flatten()
                .for_each(|v| *v = unit(&mut rng));
        }
        let ids: Vec<i64> = (0..n as i64).collect();
        let s = KMeansSettings {
            k,
            sample,
            runs: 4,
            ..KMeansSettings::default()
        };
        let ours = fit(x.view(), &ids, &s).unwrap();
        let linfa =
            linfa_clustering::KMeans::params_with_rng(k, Xoshiro256PlusPlus::seed_from_u64(1))
                .n_runs(1)
                .tolerance(1e-12)
                .init_method(linfa_clustering::KMeansInit::Precomputed(
                    ours.centroids.clone(),
                ))
                .fit(&linfa::DatasetBase::from(x.clone()))
                .unwrap();
        (linfa.centroids() - &ours.centroids)
            .iter()
            .fold(0f64, |m, v| m.max(v.abs()))
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
        let r = Split::new(Rows { x: &v, d: 2 });
        let start = vec![0.0, 0.0, 0.0, 0.0, 7.0, 0.0];
        assert!(lloyd(&r, 3, start.clone(), None, REFINE, 100)
            .counts
            .contains(&0));
        let run = lloyd_relocating(&r, 3, start, None, REFINE, 100);
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
        let r = Split::new(Rows { x: &v, d: 2 });
        let c = plus_plus(&r, 4, &mut run_rng(3, 0)).centres;
        let mut blobs: Vec<i64> = c.chunks(2).map(|p| (p[0] / 100.0).floor() as i64).collect();
        blobs.sort();
        assert_eq!(blobs, vec![0, 1, 2, 3]);
        // as many identical rows as k: still k centres, no NaN
        let same = vec![1.0; 10];
        let c = plus_plus(&Split::new(Rows { x: &same, d: 2 }), 3, &mut run_rng(3, 0)).centres;
        assert_eq!(c, vec![1.0; 6]);
    }
}
