//! Live counters of a running pipeline, shared by the actors that update them and the HTTP
//! endpoint that reads them: records consumed, valid and malformed (by kind), records queued
//! per shard, trigger merge times, and consumer lag per input partition. Everything is an
//! atomic or a concurrent map, updated per batch (never per record), so reading them never
//! stops the pipeline. [`Metrics::prometheus`] renders the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::counters::Counters;
use crate::record::{Malformed, MalformedCounts};
use crate::source::kafka::Context;

/// When something last happened, if it did.
#[derive(Debug, Default)]
pub struct When(Mutex<Option<Instant>>);

impl When {
    /// It happened now.
    pub fn mark(&self) {
        if let Ok(mut w) = self.0.lock() {
            *w = Some(Instant::now());
        }
    }

    /// How long ago it last happened.
    pub fn age(&self) -> Option<Duration> {
        self.0.lock().ok().and_then(|w| w.map(|t| t.elapsed()))
    }
}

/// Upper bounds (seconds) of the trigger merge-time histogram's buckets.
pub const MERGE_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Where one input partition stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionPosition {
    /// The next offset the pipeline will count (one past the last counted record); -1 when
    /// nothing was counted yet.
    pub next: i64,
    /// The partition's high watermark as the broker last reported it in a fetch; -1 unknown.
    pub high: i64,
}

impl PartitionPosition {
    /// Records in the partition not counted yet, when both ends are known.
    pub fn lag(&self) -> Option<i64> {
        (self.next >= 0 && self.high >= 0).then(|| (self.high - self.next).max(0))
    }
}

/// The pipeline's live metrics.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// Records consumed (routed), malformed included.
    pub records: AtomicU64,
    /// Records counted as valid by the shards.
    pub valid: AtomicU64,
    /// Valid records whose household has no segment.
    pub unknown_household: AtomicU64,
    malformed: [AtomicU64; 7],
    /// Triggers fired.
    pub triggers: AtomicU64,
    /// Records sent to each shard and not counted yet.
    queued: Vec<AtomicI64>,
    merge_buckets: [AtomicU64; MERGE_BUCKETS.len()],
    merge_count: AtomicU64,
    merge_nanos: AtomicU64,
    last_merge_nanos: AtomicU64,
    max_merge_nanos: AtomicU64,
    next: DashMap<i32, i64>,
    high: Arc<DashMap<i32, i64>>,
    latest: RwLock<Option<Arc<str>>>,
    /// Set when the pipeline is stopping (a signal, or the end of a bounded source).
    pub draining: AtomicBool,
    /// Checkpoints written.
    pub checkpoints: AtomicU64,
    /// Time the last checkpoint took to write, nanoseconds.
    pub checkpoint_nanos: AtomicU64,
    /// Malformed records handed to the dead-letter sink.
    pub dead_letters: AtomicU64,
    /// The Kafka consumer's context, when the source is a topic: its outages, assignment and
    /// rebalances, and the partitions' watermarks.
    kafka: OnceLock<Context>,
    /// When the writer last took a trigger's snapshot (the pipeline's own triggers).
    pub last_trigger: When,
    /// Records consumed as of the last trigger.
    pub records_at_trigger: AtomicU64,
    /// When a snapshot was last emitted to the sinks (by this process).
    pub last_snapshot: When,
    /// When the last checkpoint (or changelog entry) was written.
    pub last_checkpoint: When,
    /// Whether this process emits the snapshots: always in one process, while it holds input
    /// partition 0 in scale-out.
    pub coordinator: AtomicBool,
    /// Seconds since the Unix epoch when the process started.
    start_unix: f64,
    /// Each actor's last heartbeat, milliseconds since `started` (+1; 0 = none yet): the
    /// shards by index, then the ingestor. Each beats from its own event loop.
    beats: Vec<AtomicU64>,
    /// When the records consumed last grew.
    pub last_progress: When,
}

/// How often each actor beats (its own interval on its event loop).
pub const HEARTBEAT: Duration = Duration::from_millis(500);

impl Metrics {
    /// Metrics of a pipeline with `shards` shards.
    pub fn new(shards: usize) -> Metrics {
        Metrics {
            started: Instant::now(),
            records: AtomicU64::new(0),
            valid: AtomicU64::new(0),
            unknown_household: AtomicU64::new(0),
            malformed: Default::default(),
            triggers: AtomicU64::new(0),
            queued: (0..shards).map(|_| AtomicI64::new(0)).collect(),
            merge_buckets: Default::default(),
            merge_count: AtomicU64::new(0),
            merge_nanos: AtomicU64::new(0),
            last_merge_nanos: AtomicU64::new(0),
            max_merge_nanos: AtomicU64::new(0),
            next: DashMap::new(),
            high: Arc::new(DashMap::new()),
            latest: RwLock::new(None),
            draining: AtomicBool::new(false),
            checkpoints: AtomicU64::new(0),
            checkpoint_nanos: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            kafka: OnceLock::new(),
            last_trigger: When::default(),
            records_at_trigger: AtomicU64::new(0),
            last_snapshot: When::default(),
            last_checkpoint: When::default(),
            coordinator: AtomicBool::new(true),
            start_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            beats: (0..=shards).map(|_| AtomicU64::new(0)).collect(),
            last_progress: When::default(),
        }
    }

    /// Actor `i` (a shard's index; [`Metrics::shards`] for the ingestor) is alive now.
    pub fn beat(&self, i: usize) {
        if let Some(b) = self.beats.get(i) {
            let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            b.store(ms.saturating_add(1), Ordering::Relaxed);
        }
    }

    /// How long ago each actor last beat, by name (none: it never did).
    pub fn heartbeats(&self) -> Vec<(String, Option<Duration>)> {
        let now = self.started.elapsed();
        self.beats
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let name = if i == self.shards() {
                    "the ingestor".to_string()
                } else {
                    format!("shard {i}")
                };
                let at = b.load(Ordering::Relaxed);
                let age = (at > 0).then(|| now.saturating_sub(Duration::from_millis(at - 1)));
                (name, age)
            })
            .collect()
    }

    /// The ingestor has routed `records` records in all.
    pub fn consumed(&self, records: u64) {
        if self.records.swap(records, Ordering::Relaxed) != records {
            self.last_progress.mark();
        }
    }

    /// The context for the Kafka consumer of this pipeline's source: it shares its state
    /// (watermarks, outages, assignment) with these metrics and the probes.
    pub fn watch_kafka(&self) -> Context {
        let ctx = self.kafka.get_or_init(|| {
            let mut c = Context::default();
            c.highs = self.high.clone();
            c
        });
        ctx.clone()
    }

    /// The Kafka consumer's context, when the source is a topic.
    pub fn kafka(&self) -> Option<&Context> {
        self.kafka.get()
    }

    /// A trigger's snapshot went through the writer, covering `records` records.
    pub fn triggered(&self, records: u64) {
        self.records_at_trigger.store(records, Ordering::Relaxed);
        self.last_trigger.mark();
    }

    /// Start from restored counters: their totals become the counted ones.
    pub fn restored(&self, total: &Counters) {
        self.records.store(total.records, Ordering::Relaxed);
        // the restored state is as good as a trigger: nothing waits for one yet
        self.records_at_trigger
            .store(total.records, Ordering::Relaxed);
        self.valid.store(total.valid, Ordering::Relaxed);
        self.unknown_household
            .store(total.unknown_household, Ordering::Relaxed);
        for (i, m) in self.malformed.iter().enumerate() {
            m.store(total.malformed.0[i], Ordering::Relaxed);
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.queued.len()
    }

    /// `n` records were sent to `shard` (positive) or counted by it (negative).
    pub fn queue(&self, shard: usize, n: i64) {
        if let Some(q) = self.queued.get(shard) {
            q.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Records queued at `shard`.
    pub fn queued(&self, shard: usize) -> i64 {
        self.queued
            .get(shard)
            .map_or(0, |q| q.load(Ordering::Relaxed))
    }

    /// Add what a shard counted in one batch: the difference of its counters before and after.
    pub fn counted(
        &self,
        valid: u64,
        unknown_household: u64,
        malformed_before: &MalformedCounts,
        after: &Counters,
    ) {
        self.valid.fetch_add(valid, Ordering::Relaxed);
        self.unknown_household
            .fetch_add(unknown_household, Ordering::Relaxed);
        for (i, m) in self.malformed.iter().enumerate() {
            let d = after.malformed.0[i].saturating_sub(malformed_before.0[i]);
            if d > 0 {
                m.fetch_add(d, Ordering::Relaxed);
            }
        }
    }

    /// Malformed records, all kinds.
    pub fn malformed(&self) -> u64 {
        self.malformed
            .iter()
            .map(|m| m.load(Ordering::Relaxed))
            .sum()
    }

    /// One trigger's merge and rating took `seconds`.
    pub fn merged(&self, seconds: f64) {
        let nanos = (seconds * 1e9) as u64;
        self.merge_count.fetch_add(1, Ordering::Relaxed);
        self.merge_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.last_merge_nanos.store(nanos, Ordering::Relaxed);
        self.max_merge_nanos.fetch_max(nanos, Ordering::Relaxed);
        for (b, &le) in self.merge_buckets.iter().zip(MERGE_BUCKETS.iter()) {
            if seconds <= le {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Trigger merge times: how many, their mean and their maximum, in seconds.
    pub fn merge_stats(&self) -> (u64, f64, f64) {
        let n = self.merge_count.load(Ordering::Relaxed);
        let sum = self.merge_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let max = self.max_merge_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (n, if n > 0 { sum / n as f64 } else { 0.0 }, max)
    }

    /// The pipeline has counted every record of `partition` before `next`.
    pub fn set_next(&self, partition: i32, next: i64) {
        self.next.insert(partition, next);
    }

    /// `partition` is no longer read here (scale-out: the group moved it).
    pub fn forget(&self, partition: i32) {
        self.next.remove(&partition);
        self.high.remove(&partition);
    }

    /// The broker reported `high` as the high watermark of `partition`.
    pub fn set_high(&self, partition: i32, high: i64) {
        self.high.insert(partition, high);
    }

    /// The map of high watermarks, for a source to keep up to date (the Kafka client's
    /// statistics callback writes into it).
    pub fn highs(&self) -> Arc<DashMap<i32, i64>> {
        self.high.clone()
    }

    /// Where every partition stands, by partition.
    pub fn positions(&self) -> Vec<(i32, PartitionPosition)> {
        let mut v: std::collections::BTreeMap<i32, PartitionPosition> = Default::default();
        let unknown = PartitionPosition { next: -1, high: -1 };
        for e in self.next.iter() {
            v.entry(*e.key()).or_insert(unknown).next = *e.value();
        }
        for e in self.high.iter() {
            v.entry(*e.key()).or_insert(unknown).high = *e.value();
        }
        v.into_iter().collect()
    }

    /// Consumer lag summed over partitions whose ends are known.
    pub fn lag(&self) -> i64 {
        self.positions().iter().filter_map(|(_, p)| p.lag()).sum()
    }

    /// Keep the latest snapshot, serialized, for `GET /snapshot`.
    pub fn set_latest(&self, json: Arc<str>) {
        if let Ok(mut l) = self.latest.write() {
            *l = Some(json);
        }
        self.last_snapshot.mark();
    }

    /// The latest snapshot as JSON, if any was emitted.
    pub fn latest(&self) -> Option<Arc<str>> {
        self.latest.read().ok().and_then(|l| l.clone())
    }

    /// Seconds since the pipeline started.
    pub fn uptime(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        family(
            &mut out,
            "viewpulse_records_total",
            "counter",
            "Records consumed, malformed included.",
        );
        let _ = writeln!(out, "viewpulse_records_total {}", load(&self.records));
        family(
            &mut out,
            "viewpulse_valid_records_total",
            "counter",
            "Records counted as valid.",
        );
        let _ = writeln!(out, "viewpulse_valid_records_total {}", load(&self.valid));
        family(
            &mut out,
            "viewpulse_unknown_household_records_total",
            "counter",
            "Valid records whose household has no segment.",
        );
        let _ = writeln!(
            out,
            "viewpulse_unknown_household_records_total {}",
            load(&self.unknown_household)
        );
        family(
            &mut out,
            "viewpulse_malformed_records_total",
            "counter",
            "Malformed records, by kind.",
        );
        for k in Malformed::ALL {
            let _ = writeln!(
                out,
                "viewpulse_malformed_records_total{{kind=\"{}\"}} {}",
                k.name(),
                load(&self.malformed[k.index()])
            );
        }
        family(
            &mut out,
            "viewpulse_checkpoints_total",
            "counter",
            "Checkpoints written to state.dir.",
        );
        let _ = writeln!(
            out,
            "viewpulse_checkpoints_total {}",
            load(&self.checkpoints)
        );
        family(
            &mut out,
            "viewpulse_checkpoint_last_seconds",
            "gauge",
            "Time the last checkpoint took to encode, write and sync.",
        );
        let _ = writeln!(
            out,
            "viewpulse_checkpoint_last_seconds {}",
            load(&self.checkpoint_nanos) as f64 / 1e9
        );
        family(
            &mut out,
            "viewpulse_dead_letters_total",
            "counter",
            "Malformed records handed to the dead-letter sink.",
        );
        let _ = writeln!(
            out,
            "viewpulse_dead_letters_total {}",
            load(&self.dead_letters)
        );
        family(
            &mut out,
            "viewpulse_triggers_total",
            "counter",
            "Triggers fired (snapshots emitted).",
        );
        let _ = writeln!(out, "viewpulse_triggers_total {}", load(&self.triggers));
        family(
            &mut out,
            "viewpulse_shard_queue_records",
            "gauge",
            "Records sent to a shard and not counted yet.",
        );
        for s in 0..self.queued.len() {
            let _ = writeln!(
                out,
                "viewpulse_shard_queue_records{{shard=\"{s}\"}} {}",
                self.queued(s).max(0)
            );
        }
        family(
            &mut out,
            "viewpulse_trigger_merge_seconds",
            "histogram",
            "Time to collect, merge and rate the shards' counters at a trigger.",
        );
        for (b, le) in self.merge_buckets.iter().zip(MERGE_BUCKETS.iter()) {
            let _ = writeln!(
                out,
                "viewpulse_trigger_merge_seconds_bucket{{le=\"{le}\"}} {}",
                load(b)
            );
        }
        let count = load(&self.merge_count);
        let _ = writeln!(
            out,
            "viewpulse_trigger_merge_seconds_bucket{{le=\"+Inf\"}} {count}\n\
             viewpulse_trigger_merge_seconds_sum {}\n\
             viewpulse_trigger_merge_seconds_count {count}",
            load(&self.merge_nanos) as f64 / 1e9
        );
        family(
            &mut out,
            "viewpulse_trigger_last_merge_seconds",
            "gauge",
            "The last trigger's merge time.",
        );
        let _ = writeln!(
            out,
            "viewpulse_trigger_last_merge_seconds {}",
            load(&self.last_merge_nanos) as f64 / 1e9
        );
        let positions = self.positions();
        family(
            &mut out,
            "viewpulse_partition_next_offset",
            "gauge",
            "Next offset to count, per input partition.",
        );
        for (p, pos) in &positions {
            let _ = writeln!(
                out,
                "viewpulse_partition_next_offset{{partition=\"{p}\"}} {}",
                pos.next
            );
        }
        family(
            &mut out,
            "viewpulse_consumer_lag_records",
            "gauge",
            "High watermark minus next offset to count, per input partition.",
        );
        for (p, pos) in &positions {
            if let Some(l) = pos.lag() {
                let _ = writeln!(
                    out,
                    "viewpulse_consumer_lag_records{{partition=\"{p}\"}} {l}"
                );
            }
        }
        family(
            &mut out,
            "viewpulse_uptime_seconds",
            "gauge",
            "Seconds since the pipeline started.",
        );
        let _ = writeln!(out, "viewpulse_uptime_seconds {:.3}", self.uptime());
        family(
            &mut out,
            "viewpulse_snapshot_age_seconds",
            "gauge",
            "Seconds since this process last emitted a snapshot (since the start, before the first).",
        );
        let age = self
            .last_snapshot
            .age()
            .map_or(self.uptime(), |a| a.as_secs_f64());
        let _ = writeln!(out, "viewpulse_snapshot_age_seconds {age:.3}");
        if let Some(age) = self.last_checkpoint.age() {
            family(
                &mut out,
                "viewpulse_checkpoint_age_seconds",
                "gauge",
                "Seconds since the last checkpoint or changelog entry was written.",
            );
            let _ = writeln!(
                out,
                "viewpulse_checkpoint_age_seconds {:.3}",
                age.as_secs_f64()
            );
        }
        family(
            &mut out,
            "viewpulse_coordinator",
            "gauge",
            "1 on the process that emits the snapshots (scale-out: the owner of input partition 0).",
        );
        let _ = writeln!(
            out,
            "viewpulse_coordinator {}",
            u8::from(self.coordinator.load(Ordering::Relaxed))
        );
        if let Some(k) = self.kafka() {
            family(
                &mut out,
                "viewpulse_assigned_partitions",
                "gauge",
                "Input partitions this process holds now.",
            );
            let _ = writeln!(
                out,
                "viewpulse_assigned_partitions {}",
                k.holding().unwrap_or(0)
            );
            family(
                &mut out,
                "viewpulse_rebalances_total",
                "counter",
                "Consumer group rebalances this process went through.",
            );
            let _ = writeln!(out, "viewpulse_rebalances_total {}", k.rebalances());
            family(
                &mut out,
                "viewpulse_broker_up",
                "gauge",
                "1 while the brokers are reachable (0 during an outage or before the first connection).",
            );
            let up = !k.is_starting() && k.outage_lasted().is_none();
            let _ = writeln!(out, "viewpulse_broker_up {}", u8::from(up));
        }
        family(
            &mut out,
            "viewpulse_build_info",
            "gauge",
            "Always 1; the labels say which build runs.",
        );
        let _ = writeln!(
            out,
            "viewpulse_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out.push_str(&process_metrics(self.start_unix));
        out
    }
}

/// The process metrics every Prometheus client exports by convention
/// (`process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`,
/// `process_start_time_seconds`, ...), from the `prometheus` crate's Linux process collector,
/// which reads `/proc/self`; elsewhere only the start time.
fn process_metrics(start_unix: f64) -> String {
    #[cfg(target_os = "linux")]
    {
        use prometheus::core::Collector;
        use prometheus::Encoder;
        let families = prometheus::process_collector::ProcessCollector::for_self().collect();
        let mut buf = Vec::new();
        if prometheus::TextEncoder::new()
            .encode(&families, &mut buf)
            .is_ok()
        {
            if let Ok(text) = String::from_utf8(buf) {
                if text.contains("process_start_time_seconds") {
                    return text;
                }
            }
        }
    }
    let mut out = String::new();
    family(
        &mut out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
    );
    let _ = writeln!(out, "process_start_time_seconds {start_unix:.3}");
    out
}

/// A metric family's HELP and TYPE lines; its samples follow.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_every_family_and_right_values() {
        let m = Metrics::new(2);
        m.records.store(10, Ordering::Relaxed);
        m.queue(1, 5);
        m.queue(1, -2);
        m.merged(0.003);
        m.merged(0.2);
        m.set_next(0, 7);
        m.set_high(0, 10);
        m.set_high(1, 4);
        let mut c = Counters::new(1, 1);
        c.add_malformed(Malformed::Empty);
        c.add_malformed(Malformed::Empty);
        m.counted(6, 1, &MalformedCounts::default(), &c);
        let t = m.prometheus();
        for line in [
            "viewpulse_records_total 10",
            "viewpulse_valid_records_total 6",
            "viewpulse_unknown_household_records_total 1",
            "viewpulse_malformed_records_total{kind=\"empty\"} 2",
            "viewpulse_shard_queue_records{shard=\"0\"} 0",
            "viewpulse_shard_queue_records{shard=\"1\"} 3",
            "viewpulse_trigger_merge_seconds_bucket{le=\"0.0025\"} 0",
            "viewpulse_trigger_merge_seconds_bucket{le=\"0.005\"} 1",
            "viewpulse_trigger_merge_seconds_bucket{le=\"0.25\"} 2",
            "viewpulse_trigger_merge_seconds_bucket{le=\"+Inf\"} 2",
            "viewpulse_trigger_merge_seconds_count 2",
            "viewpulse_consumer_lag_records{partition=\"0\"} 3",
            "viewpulse_partition_next_offset{partition=\"1\"} -1",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        // partition 1 has no counted record yet: no lag sample
        assert!(!t.contains("viewpulse_consumer_lag_records{partition=\"1\"}"));
        assert_eq!(m.lag(), 3);
        assert_eq!(m.malformed(), 2);
        // every sample line belongs to a family declared before it
        let mut declared = std::collections::HashSet::new();
        for l in t.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                let base = name
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_sum")
                    .trim_end_matches("_count");
                assert!(declared.contains(name) || declared.contains(base), "{l}");
            }
        }
    }
}
