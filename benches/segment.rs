//! Segmentation's costly steps on synthetic demographics-like features: KMeans (greedy
//! k-means++, Hamerly-bounded Lloyd, the sampled runs then the refinements), the silhouettes of
//! a k range and the PCA covariance. Fixed seeds, inputs built outside the timed part,
//! parameters in the ids. Under `cargo test` the silhouettes run once on a small sample.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ndarray::Array2;
use std::hint::black_box;
use viewpulse::segment::cluster::{self, KMeansSettings};
use viewpulse::segment::{pca, scores};

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
            ..KMeansSettings::default()
        };
        g.bench_function(BenchmarkId::new("k6_default_households", n), |b| {
            b.iter(|| cluster::fit(black_box(x.view()), &ids, &s).map(|c| c.inertia))
        });
    }
    g.finish();
    // the silhouettes of a k range 2..=12 on the largest sample a range scores (20,000); under
    // `cargo test` (a debug build, once) on 1,000
    let n = if std::env::args().any(|a| a == "--bench") {
        20_000
    } else {
        1_000
    };
    let (x, ids) = features(n, 7);
    let labelings: Vec<(usize, Vec<u32>)> = (2..=12)
        .map(|k| {
            let s = KMeansSettings {
                k,
                ..KMeansSettings::default()
            };
            (
                k,
                cluster::fit(x.view(), &ids, &s)
                    .map(|c| c.cluster)
                    .unwrap_or_default(),
            )
        })
        .collect();
    let mut g = c.benchmark_group("silhouettes");
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("k2_to_12_households", n), |b| {
        b.iter(|| scores::silhouettes(black_box(x.view()), &labelings, 2))
    });
    g.finish();
    let (x, _) = features(100_000, 6);
    c.bench_function("pca/households/100000", |b| {
        b.iter(|| pca::fit(black_box(x.view())).explained)
    });
}

criterion_group!(benches, bench_kmeans);
criterion_main!(benches);
