//! The counting core's hot paths: parsing a record, counting records against a 1 M-household
//! membership, merging shard counters, and rating them. Inputs are built outside the timed
//! part from fixed seeds; parameters are in the benchmark ids.

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
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

/// Routing: the router's per-record work (the stable household hash, and appending the record
/// to its shard's batch), over 16 shards.
fn bench_route(c: &mut Criterion) {
    use viewpulse::counters::route;
    use viewpulse::pipeline::messages::RecordBatch;
    let recs = records(100_000, 1_000_000, 500);
    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(recs.len() as u64));
    let shards = 16;
    let mut batches = vec![RecordBatch::default(); shards];
    g.bench_function(BenchmarkId::new("records_to_batches/shards", shards), |b| {
        b.iter(|| {
            for bt in batches.iter_mut() {
                bt.data.clear();
                bt.ends.clear();
                bt.runs.clear();
            }
            for r in &recs {
                batches[route(black_box(r), shards)].push(r, 0, 0);
            }
            batches[0].len()
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

/// The 16 shards' counters of a trigger at 1 M households and 5,000 stations: each shard
/// counted 250,000 views, so every shard holds nearly every (subset, cluster, station) cell,
/// and each interned its stations in its own order, as real shards do.
fn trigger_shards(households: u64, shards: usize, per_shard: usize) -> (Membership, Vec<Counters>) {
    let m = membership(households, 6);
    let parts = (0..shards)
        .map(|i| counted(&m, 1_000 + i as u64, per_shard, 5_000))
        .collect();
    (m, parts)
}

/// What the coordinator does at a trigger: take each shard's counters (a clone: the shard
/// keeps counting), merge them, rate SPEC 4's top 7 for three subsets.
fn trigger(parts: &[Counters]) -> usize {
    let mut collected: Vec<Counters> = parts.iter().map(|p| black_box(p).clone()).collect();
    let mut all = collected.swap_remove(0);
    for p in &collected {
        all.merge(p);
    }
    ratings::top_diff_rank(&all, &subsets(), 7).len()
}

fn bench_trigger(c: &mut Criterion) {
    let (_m, parts) = trigger_shards(1_000_000, 16, 250_000);
    let mut g = c.benchmark_group("trigger");
    g.sample_size(30);
    g.bench_function(
        BenchmarkId::new(
            "collect_merge_rate/households_1000000/stations_5000/shards",
            16,
        ),
        |b| b.iter(|| trigger(&parts)),
    );
    g.finish();
}

/// The 99th percentile the issue asks for (criterion reports means): 300 timed triggers.
fn trigger_percentiles(bench: bool) {
    let (households, per_shard, runs) = if bench {
        (1_000_000, 250_000, 300)
    } else {
        (10_000, 2_000, 3)
    };
    let (_m, parts) = trigger_shards(households, 16, per_shard);
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| {
            let t = std::time::Instant::now();
            black_box(trigger(&parts));
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let q = |f: f64| ms[((ms.len() - 1) as f64 * f).round() as usize];
    println!(
        "trigger/collect_merge_rate/households_{households}/stations_5000/shards_16: \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {runs} triggers (target p99 < 50 ms)",
        q(0.5),
        q(0.99),
        q(1.0)
    );
}

/// The same trigger through the actors, as the daemon runs it: 16 shard actors (each on its
/// own arbiter) holding the counters above, a barrier to each, the coordinator awaiting their
/// answers (each shard clones its counters on its own thread), merging and rating, and handing
/// the snapshot to the writer's queue. Timed from the barriers' sending to the coordinator's
/// answer; 300 triggers (3 in a smoke run).
fn trigger_actors_percentiles(bench: bool) {
    use std::sync::Arc;
    use viewpulse::pipeline::coordinator::{Coordinator, Stamps};
    use viewpulse::pipeline::messages::{Barrier, Merge, Trigger};
    use viewpulse::pipeline::shard::Shard;
    use viewpulse::pipeline::writer::Persist;
    use viewpulse::pipeline::Metrics;
    let (households, per_shard, runs) = if bench {
        (1_000_000, 250_000, 300)
    } else {
        (10_000, 2_000, 3)
    };
    let (m, parts) = trigger_shards(households, 16, per_shard);
    let m = Arc::new(m);
    let metrics = Arc::new(Metrics::new(16));
    let (writer, written) = crossbeam_channel::bounded::<Persist>(16);
    let drained = std::thread::spawn(move || written.iter().count());
    let sys = actix::System::new();
    let mut ms: Vec<f64> = sys.block_on(async move {
        use actix::Actor;
        let mut arbiters = Vec::new();
        let mut shards = Vec::new();
        for (i, c) in parts.into_iter().enumerate() {
            let arb = actix::Arbiter::new();
            let (m, mx) = (m.clone(), metrics.clone());
            shards.push(Shard::start_in_arbiter(&arb.handle(), move |_| {
                Shard::new(i, m, mx).with_state([(i as i32, c)].into())
            }));
            arbiters.push(arb);
        }
        let arb = actix::Arbiter::new();
        let mx = metrics.clone();
        let coordinator = Coordinator::start_in_arbiter(&arb.handle(), move |_| {
            let stamps = Stamps {
                model: 0,
                subsets: Vec::new(),
                source: String::new(),
            };
            Coordinator::new(subsets(), 7, Default::default(), writer, stamps, false, mx)
        });
        arbiters.push(arb);
        let mut ms = Vec::with_capacity(runs);
        for trigger in 1..=runs as u64 {
            let t = std::time::Instant::now();
            let mut answers = Vec::new();
            let mut sent = Vec::new();
            for s in &shards {
                let (reply, answer) = futures_channel::oneshot::channel();
                sent.push(s.send(Barrier { trigger, reply }));
                answers.push(answer);
            }
            let merged = coordinator.send(Merge {
                trigger: Trigger {
                    trigger,
                    records: 0,
                    offsets: Default::default(),
                    by_interval: false,
                },
                parts: answers,
            });
            merged.await.expect("coordinator").expect("merge");
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            for s in sent {
                s.await.expect("shard");
            }
        }
        for a in &arbiters {
            a.stop();
        }
        ms
    });
    drop(sys);
    let emitted = drained.join().expect("writer");
    assert_eq!(emitted, runs, "one snapshot a trigger");
    ms.sort_by(f64::total_cmp);
    let q = |f: f64| ms[((ms.len() - 1) as f64 * f).round() as usize];
    println!(
        "trigger/actors/households_{households}/stations_5000/shards_16: \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {runs} triggers (target: p99 no worse than 21-26 ms)",
        q(0.5),
        q(0.99),
        q(1.0)
    );
}

criterion_group!(
    benches,
    bench_parse,
    bench_route,
    bench_count,
    bench_merge_and_rate,
    bench_trigger
);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    trigger_percentiles(std::env::args().any(|a| a == "--bench"));
    trigger_actors_percentiles(std::env::args().any(|a| a == "--bench"));
}
