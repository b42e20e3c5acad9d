//! How good a clustering is, for choosing k: the silhouette (on a seeded sample), the
//! Calinski-Harabasz and the Davies-Bouldin scores, defined exactly as scikit-learn's
//! `silhouette_score`, `calinski_harabasz_score` and `davies_bouldin_score`, and the rule that
//! recommends a k from them. Pure functions over the feature rows and labels, no I/O.

use ndarray::{Array2, ArrayView2};

/// The scores of one clustering.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// Mean silhouette over the sampled rows (0 when every sampled row is in one cluster).
    pub silhouette: f64,
    /// Between-cluster over within-cluster dispersion, each per degree of freedom (larger is
    /// better; 1 when within-cluster dispersion is 0, as scikit-learn).
    pub calinski_harabasz: f64,
    /// Mean over clusters of the worst ratio of spreads to centroid distance (smaller is
    /// better).
    pub davies_bouldin: f64,
}

/// Euclidean distance, summed in a fixed order (the clustering's kernel).
#[inline]
fn dist(a: &[f64], b: &[f64]) -> f64 {
    super::cluster::sq(a, b).sqrt()
}

/// Cluster means of `x` under `labels` (k rows; a cluster without rows has a zero mean) and
/// the row count of each.
fn means(x: ArrayView2<f64>, labels: &[u32], k: usize) -> (Array2<f64>, Vec<usize>) {
    let d = x.ncols();
    let mut sums = Array2::<f64>::zeros((k, d));
    let mut counts = vec![0usize; k];
    for (row, &c) in x.rows().into_iter().zip(labels) {
        let c = c as usize;
        counts[c] += 1;
        let mut s = sums.row_mut(c);
        s += &row;
    }
    for (mut s, &n) in sums.rows_mut().into_iter().zip(&counts) {
        if n > 0 {
            s /= n as f64;
        }
    }
    (sums, counts)
}

/// scikit-learn's `calinski_harabasz_score(x, labels)`.
pub fn calinski_harabasz(x: ArrayView2<f64>, labels: &[u32], k: usize) -> f64 {
    let n = x.nrows();
    let (centres, counts) = means(x, labels, k);
    let used = counts.iter().filter(|&&c| c > 0).count();
    if used < 2 || n <= used {
        return f64::NAN;
    }
    let mean = x.mean_axis(ndarray::Axis(0)).unwrap_or_default();
    let mut between = 0.0;
    let mut within = 0.0;
    for (c, &count) in counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let m = centres.row(c);
        between += counts[c] as f64
            * m.iter()
                .zip(&mean)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>();
    }
    for (row, &c) in x.rows().into_iter().zip(labels) {
        let m = centres.row(c as usize);
        within += row
            .iter()
            .zip(m)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>();
    }
    if within == 0.0 {
        1.0
    } else {
        between * (n - used) as f64 / (within * (used - 1) as f64)
    }
}

/// scikit-learn's `davies_bouldin_score(x, labels)`.
pub fn davies_bouldin(x: ArrayView2<f64>, labels: &[u32], k: usize) -> f64 {
    let (centres, counts) = means(x, labels, k);
    let used: Vec<usize> = (0..k).filter(|&c| counts[c] > 0).collect();
    // scikit-learn refuses fewer than 2 labels, or as many labels as rows
    if used.len() < 2 || used.len() >= x.nrows() {
        return f64::NAN;
    }
    let mut spread = vec![0f64; k];
    for (row, &c) in x.rows().into_iter().zip(labels) {
        let c = c as usize;
        spread[c] += row
            .iter()
            .zip(centres.row(c))
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt();
    }
    for &c in &used {
        spread[c] /= counts[c] as f64;
    }
    // scikit-learn answers 0 when every spread is (close to) 0
    if used.iter().all(|&c| spread[c].abs() <= 1e-8) {
        return 0.0;
    }
    let between = |i: usize, j: usize| {
        centres
            .row(i)
            .iter()
            .zip(centres.row(j))
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt()
    };
    // and 0 when every centroid distance is (close to) 0
    if used
        .iter()
        .all(|&i| used.iter().all(|&j| between(i, j) <= 1e-8))
    {
        return 0.0;
    }
    let mut total = 0.0;
    for &i in &used {
        let mut worst = 0f64;
        for &j in &used {
            if i == j {
                continue;
            }
            let dij = between(i, j);
            // scikit-learn makes a zero centroid distance infinite: the pair counts 0
            let r = if dij == 0.0 {
                0.0
            } else {
                (spread[i] + spread[j]) / dij
            };
            worst = worst.max(r);
        }
        total += worst;
    }
    total / used.len() as f64
}

/// scikit-learn's `silhouette_score(x, labels)` for every labelling in `labelings` at once
/// (each a k and one label per row of `x`): the row-to-row distances, the costly part, are
/// computed once. Rows are split over `threads` threads; each row's sums run in row order, so
/// the result does not depend on the thread count.
pub fn silhouettes(
    x: ArrayView2<f64>,
    labelings: &[(usize, Vec<u32>)],
    threads: usize,
) -> Vec<f64> {
    let m = x.nrows();
    if m == 0 || labelings.is_empty() {
        return vec![0.0; labelings.len()];
    }
    let owned = x.as_standard_layout().into_owned();
    let d = owned.ncols();
    let flat = owned.as_slice().unwrap_or_default();
    let row = |i: usize| &flat[i * d..(i + 1) * d];
    let counts: Vec<Vec<usize>> = labelings
        .iter()
        .map(|(k, l)| {
            let mut c = vec![0usize; *k];
            for &v in l {
                c[v as usize] += 1;
            }
            c
        })
        .collect();
    // offsets of each labelling's per-cluster sums in one buffer
    let mut offsets = Vec::with_capacity(labelings.len());
    let mut width = 0;
    for (k, _) in labelings {
        offsets.push(width);
        width += k;
    }
    // for each row, where its distance is added in the sums of each labelling
    let lanes = labelings.len();
    let mut slot = vec![0usize; m * lanes];
    for (l, (_, labels)) in labelings.iter().enumerate() {
        for (j, &c) in labels.iter().enumerate() {
            slot[j * lanes + l] = offsets[l] + c as usize;
        }
    }
    let per_row = |i: usize, sums: &mut [f64]| -> Vec<f64> {
        sums.fill(0.0);
        let xi = row(i);
        for (j, slots) in slot.chunks_exact(lanes).enumerate() {
            if j == i {
                continue;
            }
            let v = dist(xi, row(j));
            for &o in slots {
                sums[o] += v;
            }
        }
        labelings
            .iter()
            .enumerate()
            .map(|(l, (k, labels))| {
                let own = labels[i] as usize;
                let n_own = counts[l][own];
                if n_own <= 1 {
                    return 0.0;
                }
                let a = sums[offsets[l] + own] / (n_own - 1) as f64;
                let mut b = f64::INFINITY;
                for c in 0..*k {
                    if c != own && counts[l][c] > 0 {
                        b = b.min(sums[offsets[l] + c] / counts[l][c] as f64);
                    }
                }
                if !b.is_finite() {
                    return 0.0;
                }
                let top = a.max(b);
                if top == 0.0 {
                    0.0
                } else {
                    (b - a) / top
                }
            })
            .collect()
    };
    let threads = threads.clamp(1, m);
    let chunk = m.div_ceil(threads);
    let per: Vec<Vec<f64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let per_row = &per_row;
                scope.spawn(move || {
                    let mut sums = vec![0f64; width];
                    (t * chunk..((t + 1) * chunk).min(m))
                        .map(|i| per_row(i, &mut sums))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| crate::parallel::joined(h.join()))
            .collect()
    });
    (0..labelings.len())
        .map(|l| {
            if counts[l].iter().filter(|&&c| c > 0).count() < 2 {
                return 0.0;
            }
            per.iter().map(|s| s[l]).sum::<f64>() / m as f64
        })
        .collect()
}

/// One k of a k range, as `k_selection.csv` lists it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KScore {
    /// Number of clusters.
    pub k: usize,
    /// Sum of squared distances to the centroids.
    pub inertia: f64,
    /// The scores.
    pub scores: Scores,
}

/// The recommended k and the reason in words: the highest silhouette (the smallest k of
/// equals, to 1e-12), with where the inertia curve bends (the elbow: the k farthest below the
/// chord from the first to the last k, each axis scaled to [0, 1]) and what the other two
/// scores prefer, said beside it.
pub fn recommend(scores: &[KScore]) -> Option<(usize, String)> {
    let best = scores.iter().fold(None::<&KScore>, |b, s| match b {
        Some(b) if s.scores.silhouette <= b.scores.silhouette + 1e-12 => Some(b),
        _ => Some(s),
    })?;
    let mut why = format!(
        "k = {} has the highest silhouette ({:.4}) of k = {}..{}",
        best.k,
        best.scores.silhouette,
        scores.first().map_or(0, |s| s.k),
        scores.last().map_or(0, |s| s.k)
    );
    if let Some(e) = elbow(scores) {
        why.push_str(&format!("; the inertia curve bends most at k = {e}"));
    }
    let ch = scores
        .iter()
        .filter(|s| s.scores.calinski_harabasz.is_finite())
        .max_by(|a, b| {
            a.scores
                .calinski_harabasz
                .total_cmp(&b.scores.calinski_harabasz)
        });
    let db = scores
        .iter()
        .filter(|s| s.scores.davies_bouldin.is_finite())
        .min_by(|a, b| a.scores.davies_bouldin.total_cmp(&b.scores.davies_bouldin));
    if let (Some(ch), Some(db)) = (ch, db) {
        why.push_str(&format!(
            "; Calinski-Harabasz is highest at k = {}, Davies-Bouldin lowest at k = {}",
            ch.k, db.k
        ));
    }
    Some((best.k, why))
}

/// The elbow of the inertia curve (None with fewer than three ks).
pub fn elbow(scores: &[KScore]) -> Option<usize> {
    if scores.len() < 3 {
        return None;
    }
    let (first, last) = (scores.first()?, scores.last()?);
    let (k0, k1) = (first.k as f64, last.k as f64);
    let (hi, lo) = (first.inertia, last.inertia);
    if hi <= lo || k1 <= k0 {
        return None;
    }
    scores
        .iter()
        .map(|s| {
            let x = (s.k as f64 - k0) / (k1 - k0);
            let y = (s.inertia - lo) / (hi - lo);
            // distance below the chord from (0, 1) to (1, 0)
            (s.k, (1.0 - x) - y)
        })
        .filter(|(_, gap)| *gap > 0.0)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// The silhouette by its definition, one labelling, one row at a time.
    fn brute_silhouette(x: ArrayView2<f64>, labels: &[u32], k: usize) -> f64 {
        let n = x.nrows();
        let mut total = 0.0;
        for i in 0..n {
            let mut sums = vec![0.0; k];
            let mut counts = vec![0usize; k];
            for j in 0..n {
                counts[labels[j] as usize] += 1;
                if i != j {
                    let d: f64 = x
                        .row(i)
                        .iter()
                        .zip(x.row(j))
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum::<f64>()
                        .sqrt();
                    sums[labels[j] as usize] += d;
                }
            }
            let own = labels[i] as usize;
            if counts[own] == 1 {
                continue;
            }
            let a = sums[own] / (counts[own] - 1) as f64;
            let b = (0..k)
                .filter(|&c| c != own && counts[c] > 0)
                .map(|c| sums[c] / counts[c] as f64)
                .fold(f64::INFINITY, f64::min);
            total += (b - a) / a.max(b);
        }
        total / n as f64
    }

    #[test]
    fn hand_computed_two_by_two() {
        // two pairs on a line: {0, 1} and {10, 11}
        let x = array![[0.0], [1.0], [10.0], [11.0]];
        let labels = [0, 0, 1, 1];
        // a = 1 for every row; b = mean of 10, 11 (row 0) = 10.5, 9.5 (row 1), 9.5, 10.5
        let want = ((9.5 / 10.5) + (8.5 / 9.5) + (8.5 / 9.5) + (9.5 / 10.5)) / 4.0;
        let got = silhouettes(x.view(), &[(2, labels.to_vec())], 1)[0];
        assert!((got - want).abs() < 1e-15, "{got} {want}");
        // CH: means 0.5 and 10.5, overall 5.5: B = 2*25 + 2*25 = 100, W = 4 * 0.25 = 1;
        // (100 / 1) / (1 / 2) = 200
        assert!((calinski_harabasz(x.view(), &labels, 2) - 200.0).abs() < 1e-12);
        // DB: spreads 0.5 each, centroid distance 10: (0.5 + 0.5) / 10 = 0.1
        assert!((davies_bouldin(x.view(), &labels, 2) - 0.1).abs() < 1e-15);
    }

    #[test]
    fn silhouettes_match_the_definition_for_every_labelling_and_thread_count() {
        let mut s = 7u64;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as f64 / (1u64 << 31) as f64
        };
        let x = Array2::from_shape_fn((120, 5), |_| next());
        let labelings: Vec<(usize, Vec<u32>)> = (2..6)
            .map(|k| (k, (0..120).map(|i| ((i * 7 + i / 3) % k) as u32).collect()))
            .collect();
        let one = silhouettes(x.view(), &labelings, 1);
        let three = silhouettes(x.view(), &labelings, 3);
        assert_eq!(one, three);
        for ((k, l), got) in labelings.iter().zip(&one) {
            let want = brute_silhouette(x.view(), l, *k);
            assert!((got - want).abs() < 1e-12, "k={k}: {got} {want}");
        }
        // one cluster only: 0, as scikit-learn refuses it
        assert_eq!(silhouettes(x.view(), &[(1, vec![0; 120])], 2), vec![0.0]);
    }

    #[test]
    fn the_highest_silhouette_is_recommended_and_the_elbow_named() {
        let row = |k, inertia, sil| KScore {
            k,
            inertia,
            scores: Scores {
                silhouette: sil,
                calinski_harabasz: 100.0 / k as f64,
                davies_bouldin: k as f64,
            },
        };
        let rows = [
            row(2, 100.0, 0.30),
            row(3, 40.0, 0.50),
            row(4, 30.0, 0.50),
            row(5, 25.0, 0.20),
        ];
        let (k, why) = recommend(&rows).unwrap();
        assert_eq!(k, 3, "{why}");
        assert!(why.contains("highest silhouette (0.5000)"), "{why}");
        assert!(why.contains("bends most at k = 3"), "{why}");
        assert!(
            why.contains("Calinski-Harabasz is highest at k = 2"),
            "{why}"
        );
        assert_eq!(elbow(&rows[..2]), None);
        assert_eq!(recommend(&[]), None);
    }
}
