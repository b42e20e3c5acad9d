//! The counting core's hot paths: parsing a record, counting records against a 1 M-household
//! membership, merging shard counters, and rating them. Inputs are built outside the timed
//! part from fixed seeds; parameters are in the benchmark ids.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use viewpulse::counters::{Counters, Membership, Subset};
use viewpulse::ratings;
use viewpulse::record;

/// SplitMix64, a fixed-seed generator for inputs.
struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn subsets() -> Vec<Subset> {
    vec![Subset::All, Subset::Every(3), Subset::Every(17)]
}

fn membership(households: u64, k: u32) -> Membership {
    let mut r = Mix(1);
    Membership::new(
        subsets(),
        (0..households).map(|i| {
            (
                (i * 7 + 1000) as i64,
                (r.next() % k as u64) as u32,
                (i / k as u64 + 1) as u32,
            )
        }),
    )
    .expect("valid membership")
}

fn records(n: usize, households: u64, stations: u64) -> Vec<Vec<u8>> {
    let mut r = Mix(2);
    (0..n)
        .map(|i| {
            // 5 % of households without demographics, 1 % malformed
            let h = r.next() % (households + households / 20);
            let s = 10_000 + (r.next() % stations) * (r.next() % stations) / stations;
            if i % 100 == 0 {
                b"bad,record".to_vec()
            } else {
                format!(
                    "0000{:08x},20150114,{:06},{},EP{:012},{}",
                    h,
                    i % 240000,
                    s,
                    i,
                    h * 7 + 1000
                )
                .into_bytes()
            }
        })
        .collect()
}

fn bench_parse(c: &mut Criterion) {
    let recs = records(100_000, 1_000_000, 500);
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function(BenchmarkId::new("records", recs.len()), |b| {
        b.iter(|| {
            let mut ok = 0u64;
            for r in &recs {
                ok += record::parse(black_box(r)).is_ok() as u64;
            }
            ok
        })
    });
    g.finish();
}

fn bench_count(c: &mut Criterion) {
    let mut g = c.benchmark_group("count");
    for households in [10_000u64, 1_000_000] {
        let m = membership(households, 6);
        let recs = records(200_000, households, 500);
        g.throughput(Throughput::Elements(recs.len() as u64));
        g.bench_function(BenchmarkId::new("one_by_one/households", households), |b| {
            b.iter(|| {
                let mut cnt = Counters::for_membership(&m);
                for r in &recs {
                    cnt.count(black_box(r), &m);
                }
                cnt.valid
            })
        });
        let slices: Vec<&[u8]> = recs.iter().map(|r| r.as_slice()).collect();
        g.bench_function(BenchmarkId::new("batched/households", households), |b| {
            b.iter(|| {
                let mut cnt = Counters::for_membership(&m);
                cnt.count_batch(black_box(&slices), &m, |_, _| {});
                cnt.valid
            })
        });
    }
    g.finish();
}

fn counted(m: &Membership, seed: u64, n: usize, stations: u64) -> Counters {
    let mut r = Mix(seed);
    let mut c = Counters::for_membership(m);
    for _ in 0..n {
        let h = (r.next() % 1_000_000) as i64 * 7 + 1000;
        let s = format!("{}", 10_000 + r.next() % stations);
        c.add_valid(s.as_bytes(), m.lookup(h));
    }
    c
}

fn bench_merge_and_rate(c: &mut Criterion) {
    let m = membership(1_000_000, 6);
    let mut g = c.benchmark_group("merge");
    for shards in [4usize, 64] {
        let parts: Vec<Counters> = (0..shards)
            .map(|i| counted(&m, 10 + i as u64, 20_000, 2_000))
            .collect();
        g.bench_function(BenchmarkId::new("shards_2000_stations", shards), |b| {
            b.iter(|| {
                let mut all = Counters::for_membership(&m);
                for p in &parts {
                    all.merge(black_box(p));
                }
                all.valid
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("rate");
    for stations in [500u64, 5_000] {
        let all = counted(&m, 99, 500_000, stations);
        g.bench_function(
            BenchmarkId::new("top7_3subsets_6clusters_stations", stations),
            |b| b.iter(|| ratings::top_diff_rank(black_box(&all), &subsets(), 7).len()),
        );
        g.bench_function(
            BenchmarkId::new("full_3subsets_6clusters_stations", stations),
            |b| {
                b.iter(|| {
                    ratings::compute(black_box(&all), &subsets(), 7)
                        .popularity
                        .len()
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench_parse, bench_count, bench_merge_and_rate);
criterion_main!(benches);
