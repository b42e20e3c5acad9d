//! Recording and replay hot paths (issue 4's targets).
//!
//! 1. Allocations: a counting global allocator shows that writing entries to a recording and
//!    reading them back allocate nothing per record (the counts over 200,000 records are
//!    printed; they are the buffers' first growth only). Criterion times both loops.
//! 2. `replay --max` against a bare rdkafka `BaseProducer` loop sending the same records
//!    (pre-loaded in memory) into the same local Apache Kafka broker (the test fixture's) in the same run; the target is
//!    at least 80 %.
//!
//! `cargo bench --bench replay`; under `cargo test` it runs small as a smoke test.

#[path = "../tests/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use viewpulse::replay::recording::{Entry, Header, Reader, Writer, VERSION};
use viewpulse::replay::{self, household_key, Pace, ReplaySettings};
use viewpulse::source::kafka::KafkaUrl;

/// Counts every allocation made through the global allocator.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// SplitMix64 for fixed-seed inputs.
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

fn records(n: usize) -> Vec<Vec<u8>> {
    let mut r = Mix(7);
    (0..n)
        .map(|i| {
            let h = r.next() % 1_000_000;
            format!(
                "0000{h:08x},20150114,{:06},{},EP{:012},{}",
                i % 240_000,
                10_000 + r.next() % 2_000,
                i,
                h * 7 + 1000
            )
            .into_bytes()
        })
        .collect()
}

fn header() -> Header {
    Header {
        version: VERSION,
        source: "bench".into(),
        partitions: vec![0, 1, 2, 3],
        created_unix_ms: 0,
        writer: "bench".into(),
    }
}

fn write_all(path: &std::path::Path, recs: &[Vec<u8>]) -> u64 {
    let mut w = Writer::create(path, &header()).expect("writer");
    for (i, v) in recs.iter().enumerate() {
        w.write(&Entry {
            partition: (i % 4) as i32,
            offset: (i / 4) as i64,
            timestamp_ms: 1_795_460_400_000 + i as i64,
            key: Some(household_key(v)),
            value: v,
        })
        .expect("write");
    }
    w.finish().expect("finish")
}

fn read_all(path: &std::path::Path) -> u64 {
    let mut r = Reader::open(path).expect("reader");
    let mut bytes = 0u64;
    while let Some(e) = r.next_entry().expect("entry") {
        bytes += e.value.len() as u64;
    }
    black_box(bytes);
    r.records
}

fn allocations(recs: &[Vec<u8>], dir: &std::path::Path) {
    let path = dir.join("alloc.vprec");
    let before = ALLOCS.load(Ordering::Relaxed);
    let n = write_all(&path, recs);
    let written = ALLOCS.load(Ordering::Relaxed) - before;
    let before = ALLOCS.load(Ordering::Relaxed);
    let m = read_all(&path);
    let read = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!((n, m), (recs.len() as u64, recs.len() as u64));
    println!(
        "allocations/records_{}: write {written} ({:.5} per record), read {read} ({:.5} per record)",
        recs.len(),
        written as f64 / n as f64,
        read as f64 / m as f64
    );
}

fn criterion_benches(c: &mut Criterion, recs: &[Vec<u8>], dir: &std::path::Path) {
    let path = dir.join("crit.vprec");
    let mut g = c.benchmark_group("recording");
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function(BenchmarkId::new("write/records", recs.len()), |b| {
        b.iter(|| write_all(&path, recs))
    });
    write_all(&path, recs);
    g.bench_function(BenchmarkId::new("read/records", recs.len()), |b| {
        b.iter(|| read_all(&path))
    });
    g.finish();
}

/// The bare producer: the same records, keyed the same way, from memory, as fast as it goes.
fn bare_producer(addr: &str, topic: &str, recs: &[Vec<u8>], partitions: i32) -> f64 {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("enable.idempotence", "false")
        .create()
        .expect("producer");
    let t = Instant::now();
    for v in recs {
        let mut m = BaseRecord::to(topic)
            .payload(v.as_slice())
            .key(household_key(v))
            .partition(replay::household_partition(v, partitions));
        loop {
            match p.send(m) {
                Ok(()) => break,
                Err((_, back)) => {
                    p.poll(Duration::from_millis(5));
                    m = back;
                }
            }
        }
    }
    p.flush(Duration::from_secs(120)).expect("flush");
    recs.len() as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let dir = tempfile::tempdir().expect("temp dir");
    let small = records(if bench { 200_000 } else { 5_000 });
    allocations(&small, dir.path());
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c, &small, dir.path());
    c.final_summary();

    let n = if bench { 2_000_000 } else { 20_000 };
    let recs = records(n);
    let views = dir.path().join("views.csv");
    let mut text = Vec::with_capacity(n * 64);
    for r in &recs {
        text.extend_from_slice(r);
        text.push(b'\n');
    }
    std::fs::write(&views, text).expect("views file");
    let broker = common::Broker::start();
    let partitions = 4;
    let rounds = if bench { 3 } else { 1 };
    let (mut best_bare, mut best_replay) = (0f64, 0f64);
    for round in 1..=rounds {
        let bare_topic = format!("bare{round}");
        broker.create_topic(&bare_topic, partitions);
        let bare = bare_producer(&broker.addr, &broker.topic(&bare_topic), &recs, partitions);
        let topic = format!("replay{round}");
        let url = KafkaUrl::parse(&broker.url(&topic)).expect("url");
        let p = replay::replay(
            &views,
            &url,
            &ReplaySettings {
                pace: Pace::Max,
                partitions: Some(partitions),
                ..ReplaySettings::default()
            },
            &AtomicBool::new(false),
            None,
        )
        .expect("replay");
        assert_eq!(p.records, n as u64);
        println!(
            "round {round}: bare producer {bare:.0} records/s, replay --max {:.0} records/s, ratio {:.2}",
            p.rate,
            p.rate / bare
        );
        best_bare = best_bare.max(bare);
        best_replay = best_replay.max(p.rate);
    }
    println!(
        "replay/records={n}/partitions={partitions}: best bare {best_bare:.0}/s, best replay --max {best_replay:.0}/s, ratio {:.2} (target >= 0.80)",
        best_replay / best_bare
    );
}
