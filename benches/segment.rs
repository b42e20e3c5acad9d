//! Segmentation's costly steps on synthetic demographics-like features: KMeans (linfa,
//! k-means++, several runs) and the PCA covariance. Fixed seeds, inputs built outside the
//! timed part, parameters in the ids.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ndarray::Array2;
use std::hint::black_box;
use viewpulse::segment::cluster::{self, KMeansSettings};
use viewpulse::segment::pca;

/// Blobs in 19 dimensions: 7 scaled numeric columns and 12 one-hot cells, like SPEC 2's.
fn features(n: usize, seed: u64) -> (Array2<f64>, Vec<i64>) {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut x = Array2::zeros((n, 19));
    for i in 0..n {
        let a = (next() % 6) as usize;
        for j in 0..7 {
            x[[i, j]] = ((a * 3 + j) % 7) as f64 / 7.0 + (next() % 1000) as f64 / 4000.0;
        }
        for j in 7..19 {
            x[[i, j]] = if (next() % 10) < if (j + a) % 3 == 0 { 8 } else { 2 } {
                1.0
            } else {
                0.0
            };
        }
    }
    (x, (0..n as i64).collect())
}

fn bench_kmeans(c: &mut Criterion) {
    let mut g = c.benchmark_group("kmeans");
    g.sample_size(10);
    for n in [10_000usize, 100_000] {
        let (x, ids) = features(n, 5);
        let s = KMeansSettings {
            k: 6,
            seed: 3,
            runs: 10,
            ..KMeansSettings::default()
        };
        g.bench_function(BenchmarkId::new("k6_runs10_households", n), |b| {
            b.iter(|| cluster::fit(black_box(x.view()), &ids, &s).map(|c| c.inertia))
        });
    }
    g.finish();
    let (x, _) = features(100_000, 6);
    c.bench_function("pca/households/100000", |b| {
        b.iter(|| pca::fit(black_box(x.view())).explained)
    });
}

criterion_group!(benches, bench_kmeans);
criterion_main!(benches);
