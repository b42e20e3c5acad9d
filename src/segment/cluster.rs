//! KMeans (linfa-clustering, seeded KMeans++ with several runs), then SPEC 3's own
//! definitions computed here in f64: each household's nearest centroid, its squared distance,
//! and its rank inside the cluster by distance ascending, ties by household_id ascending.

use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::{Array2, ArrayView1, ArrayView2, Axis};
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256Plus;

use super::SegmentError;
use crate::counters::household_hash;

/// KMeans settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KMeansSettings {
    /// Number of clusters.
    pub k: usize,
    /// Random seed of the initialisation.
    pub seed: u64,
    /// Independent runs; the one with the lowest inertia wins.
    pub runs: usize,
    /// Convergence tolerance on the centroids' movement.
    pub tolerance: f64,
    /// Iteration cap per run.
    pub max_iterations: u64,
    /// Above this many households, the runs search on a seeded sample of this size and one
    /// final run refines the winner's centroids on every household (0 = always use all).
    pub sample: usize,
}

impl Default for KMeansSettings {
    fn default() -> Self {
        KMeansSettings {
            k: 6,
            seed: 3,
            runs: 10,
            tolerance: 1e-4,
            max_iterations: 300,
            sample: 50_000,
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
    a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Fit KMeans on `x` and assign every row.
pub fn fit(
    x: ArrayView2<f64>,
    ids: &[i64],
    s: &KMeansSettings,
) -> Result<Clustering, SegmentError> {
    let n = x.nrows();
    if s.k == 0 {
        return Err(SegmentError::Settings("--k must be at least 1".into()));
    }
    if s.k > n {
        return Err(SegmentError::KTooLarge {
            k: s.k,
            households: n,
        });
    }
    let run = |data: Array2<f64>, runs: usize, init: KMeansInit<f64>| {
        KMeans::params_with_rng(s.k, Xoshiro256Plus::seed_from_u64(s.seed))
            .n_runs(runs)
            .tolerance(s.tolerance)
            .max_n_iterations(s.max_iterations.max(1))
            .init_method(init)
            .fit(&DatasetBase::from(data))
            .map(|m| m.centroids().clone())
            .map_err(|e| SegmentError::KMeans(e.to_string()))
    };
    let runs = s.runs.max(1);
    let centroids = match sample_rows(ids, s.sample, s.seed) {
        Some(rows) if rows.len() >= s.k => {
            let searched = run(x.select(Axis(0), &rows), runs, KMeansInit::KMeansPlusPlus)?;
            run(x.to_owned(), 1, KMeansInit::Precomputed(searched))?
        }
        _ => run(x.to_owned(), runs, KMeansInit::KMeansPlusPlus)?,
    };
    Ok(assign(x, ids, centroids))
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

    #[test]
    fn samples_are_seeded_sized_and_order_free() {
        let ids: Vec<i64> = (0..100_000).map(|i| i * 13 + 5).collect();
        let a = sample_rows(&ids, 10_000, 3).unwrap();
        assert!((9_000..11_000).contains(&a.len()), "{}", a.len());
        assert_eq!(Some(a.clone()), sample_rows(&ids, 10_000, 3));
        assert_ne!(Some(a.clone()), sample_rows(&ids, 10_000, 4));
        let rev: Vec<i64> = ids.iter().rev().copied().collect();
        let mut chosen: Vec<i64> = sample_rows(&rev, 10_000, 3)
            .unwrap()
            .iter()
            .map(|&i| rev[i])
            .collect();
        chosen.sort();
        assert_eq!(chosen, a.iter().map(|&i| ids[i]).collect::<Vec<_>>());
        assert_eq!(sample_rows(&ids, 0, 3), None);
        assert_eq!(sample_rows(&ids[..50], 100, 3), None);
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
}
