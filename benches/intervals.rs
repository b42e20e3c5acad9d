//! The cost of the confidence intervals a trigger (or `analyze`) adds: `uncertainty::annotate`
//! over counters that kept the 128 household groups, for a snapshot's top-K rows (what the
//! daemon computes at every trigger with `--bootstrap`) and for every popularity row (what
//! `analyze` computes). Synthetic counters: households in 6 clusters of subset `3`, views of
//! a skewed station pool, all built outside the timed part; fixed seeds; the households,
//! stations and resamples in the ids.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use viewpulse::counters::{Counters, Membership, Subset};
use viewpulse::ratings::{self, Ranking};
use viewpulse::uncertainty::{self, IntervalSettings, Method, GROUPS};

fn counters(households: i64, stations: u64, records: u64) -> (Counters, Vec<Subset>) {
    let subsets = vec![Subset::Every(3)];
    let m = Membership::new(
        subsets.clone(),
        (0..households).map(|h| (h, (h % 6) as u32, 1 + (h / 6) as u32)),
    )
    .expect("membership")
    .with_groups(GROUPS);
    let mut c = Counters::for_membership(&m);
    let mut s = 7u64;
    for _ in 0..records {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let h = (s >> 33) as i64 % households;
        // a skewed pool: low station numbers far more often, and each cluster its favourites
        let r = (s >> 13) % 1000;
        let st = (r * r / 1000 * stations / 1000 + (h % 6) as u64 * 7) % stations;
        c.add_view(format!("{st}").as_bytes(), h, m.lookup(h));
    }
    (c, subsets)
}

fn bench_annotate(c: &mut Criterion) {
    let mut g = c.benchmark_group("intervals");
    g.sample_size(10);
    let quick = std::env::args().any(|a| a == "--bench");
    let sizes: &[(i64, u64, u64)] = if quick {
        &[(100_000, 2_000, 2_000_000), (1_000_000, 5_000, 5_000_000)]
    } else {
        &[(2_000, 200, 20_000)]
    };
    for &(households, stations, records) in sizes {
        let (counters, subsets) = counters(households, stations, records);
        let ranking = Ranking::top(7);
        for (name, method) in [
            ("analytic", Method::Analytic),
            (
                "bootstrap_200",
                Method::Bootstrap {
                    resamples: 200,
                    seed: 3,
                },
            ),
        ] {
            let settings = IntervalSettings {
                method,
                confidence: 0.95,
            };
            let id = format!("{name}/households_{households}/stations_{stations}");
            let top = ratings::top_ranked(&counters, &subsets, ranking);
            g.bench_function(BenchmarkId::new("snapshot_rows", &id), |b| {
                b.iter(|| {
                    let mut r = ratings::Ratings {
                        diff_rank: top.clone(),
                        ..Default::default()
                    };
                    uncertainty::annotate(&mut r, &counters, &subsets, ranking, &settings, 2);
                    black_box(r)
                })
            });
            let full = ratings::compute_ranked(&counters, &subsets, ranking);
            g.bench_function(BenchmarkId::new("every_row", &id), |b| {
                b.iter(|| {
                    let mut r = full.clone();
                    uncertainty::annotate(&mut r, &counters, &subsets, ranking, &settings, 2);
                    black_box(r)
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_annotate);
criterion_main!(benches);
