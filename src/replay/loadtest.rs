//! `viewpulse loadtest`: size a deployment by replaying traffic. One command starts a broker
//! (Apache Kafka from the fixture's cached jars, unless one is given), creates a fresh topic,
//! runs the daemon in-process on it, replays a recording (or a views file) into it at the
//! asked pace, and measures: records per second produced and counted, consumer lag over time,
//! the staleness of snapshots (from a record's production, its Kafka timestamp, to the
//! emission of the first snapshot that counts it) in an HDR histogram, trigger merge times,
//! and peak resident memory. It writes `loadtest.json`, `loadtest.png` (throughput and lag
//! over time) and prints a short table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;
use thiserror::Error;
use tracing::info;

use crate::counters::{Membership, Subset};
use crate::kafka_broker::{BrokerError, BrokerOptions, LocalBroker};
use crate::pipeline::{self, Metrics, PipelineError, PipelineSettings, RunSource, Snapshot};
use crate::replay::{self, DeliveryLog, Pace, ReplayError, ReplaySettings};
use crate::secret::Properties;
use crate::source::kafka::{KafkaOptions, KafkaUrl, StartAt, StreamOptions};

/// Errors of a load test.
#[derive(Debug, Error)]
pub enum LoadtestError {
    /// The broker could not be started.
    #[error("cannot start a broker: {0}")]
    Broker(String),
    /// The fixture's Apache Kafka could not be started (or its jars are not fetched).
    #[error("cannot start Apache Kafka: {0}")]
    Fixture(#[from] BrokerError),
    /// Replaying failed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The daemon failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The daemon did not count every record in time.
    #[error("the daemon counted {counted} of {produced} records within {waited:?}")]
    Behind {
        /// Records counted.
        counted: u64,
        /// Records produced.
        produced: u64,
        /// How long it was given.
        waited: Duration,
    },
    /// Writing the results failed.
    #[error("{path}: {message}")]
    Output {
        /// The file.
        path: PathBuf,
        /// What happened.
        message: String,
    },
}

impl LoadtestError {
    /// The process exit code this error means.
    pub fn exit_code(&self) -> i32 {
        match self {
            LoadtestError::Broker(_) | LoadtestError::Behind { .. } => crate::exit::UNAVAILABLE,
            LoadtestError::Fixture(e) => e.exit_code(),
            LoadtestError::Replay(e) => e.exit_code(),
            LoadtestError::Pipeline(e) => e.exit_code(),
            LoadtestError::Output { .. } => crate::exit::IO,
        }
    }
}

/// A load test's parameters.
#[derive(Debug, Clone)]
pub struct LoadtestSettings {
    /// A recording or a views file.
    pub input: PathBuf,
    /// The model folder.
    pub model: PathBuf,
    /// `HOST:PORT` of a broker to use; none starts Apache Kafka from the fixture's cached
    /// jars ([`crate::kafka_broker`]).
    pub broker: Option<String>,
    /// Partitions of the test topic.
    pub partitions: i32,
    /// Shards of the daemon.
    pub shards: usize,
    /// Records between triggers.
    pub trigger_records: u64,
    /// Interval triggers (so the last records are snapshotted without a stop).
    pub trigger_interval: Duration,
    /// Replay pace.
    pub pace: Pace,
    /// Times the input is played.
    pub loops: u32,
    /// Subsets rated.
    pub subsets: Vec<Subset>,
    /// Where the results go.
    pub out: PathBuf,
    /// Timeline sampling period.
    pub sample_every: Duration,
    /// librdkafka properties of the daemon's consumer.
    pub consumer_properties: Properties,
}

/// Percentiles of a distribution, milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// Trigger merge times, milliseconds (from the daemon's metrics).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MergeTimes {
    /// Triggers merged.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Largest.
    pub max: f64,
}

/// One timeline sample.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    /// Seconds since the replay started.
    pub t: f64,
    /// Records delivered to the broker so far.
    pub produced: u64,
    /// Records counted by the daemon so far.
    pub counted: u64,
    /// Consumer lag, records.
    pub lag: i64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
}

/// The results (`loadtest.json`).
#[derive(Debug, Clone, Serialize)]
pub struct LoadtestResult {
    /// The input.
    pub input: String,
    /// The broker used.
    pub broker: String,
    /// Whether the load test started it.
    pub broker_started: bool,
    /// The test topic.
    pub topic: String,
    /// Its partitions.
    pub partitions: i32,
    /// Daemon shards.
    pub shards: usize,
    /// Records between triggers.
    pub trigger_records: u64,
    /// Interval trigger, ms.
    pub trigger_interval_ms: u64,
    /// The pace asked (`max`, `rate 50000/s`, `speed 10x`).
    pub pace: String,
    /// Records produced (delivered).
    pub records_produced: u64,
    /// Seconds the replay took.
    pub produce_seconds: f64,
    /// Records a second the replay reached.
    pub produce_rate: f64,
    /// Records the daemon counted (its own counter).
    pub records_counted: u64,
    /// Valid records, from the daemon's last snapshot.
    pub valid: u64,
    /// Malformed records, from the daemon's last snapshot.
    pub malformed: u64,
    /// Seconds from the start of the replay until the daemon had counted every record.
    pub count_seconds: f64,
    /// Records a second the daemon sustained over that time.
    pub sustained_rate: f64,
    /// Snapshots emitted.
    pub snapshots: u64,
    /// Staleness: record production to the first snapshot that counts it, ms.
    pub staleness_ms: Percentiles,
    /// Trigger merge time, ms.
    pub merge_ms: MergeTimes,
    /// Largest consumer lag sampled.
    pub max_lag: i64,
    /// Peak resident memory of the process (daemon and replayer), bytes.
    pub peak_rss_bytes: u64,
    /// The timeline.
    pub timeline: Vec<Sample>,
}

/// Start the fixture's Apache Kafka broker in a fresh temporary folder (deleted when it
/// ends), once its jars are in the cache.
fn start_kafka() -> Result<LocalBroker, LoadtestError> {
    let dir = std::env::temp_dir().join(format!(
        "viewpulse-loadtest-kafka-{}-{}",
        std::process::id(),
        now_ms()
    ));
    let b = LocalBroker::start(
        &dir,
        &BrokerOptions {
            cleanup: true,
            ..Default::default()
        },
    )?;
    info!(broker = %b.addr, log = %b.log().display(), "Apache Kafka started");
    Ok(b)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Resident and peak resident memory of this process, bytes (0 where /proc is missing).
pub fn rss_bytes() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Keeps each snapshot with the time it was emitted.
#[derive(Clone, Default)]
struct Timed(Arc<Mutex<Vec<(i64, Snapshot)>>>);

impl pipeline::SnapshotSink for Timed {
    fn emit(&mut self, s: &Snapshot) -> Result<(), PipelineError> {
        let t = now_ms();
        self.0
            .lock()
            .map_err(|_| PipelineError::Runtime("the load-test sink was poisoned".into()))?
            .push((t, s.clone()));
        Ok(())
    }
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles {
            count: 0,
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            max: 0.0,
            mean: 0.0,
        };
    }
    Percentiles {
        count: h.len(),
        p50: h.value_at_quantile(0.5) as f64,
        p90: h.value_at_quantile(0.9) as f64,
        p99: h.value_at_quantile(0.99) as f64,
        max: h.max() as f64,
        mean: h.mean(),
    }
}

/// Staleness of every record counted by `snaps`: for each snapshot, the records its offsets
/// cover that the previous one did not, each from its production time to the emission.
fn staleness(
    snaps: &[(i64, Snapshot)],
    log: &DeliveryLog,
) -> Result<Histogram<u64>, LoadtestError> {
    let mut h = Histogram::<u64>::new(3).map_err(|e| LoadtestError::Output {
        path: PathBuf::from("staleness histogram"),
        message: e.to_string(),
    })?;
    let mut prev: BTreeMap<String, i64> = BTreeMap::new();
    for (emitted, s) in snaps {
        for (p, &next) in &s.offsets {
            let from = prev.get(p).copied().unwrap_or(0);
            let Ok(part) = p.parse::<i32>() else { continue };
            for o in from..next {
                if let Some(t) = log.produced_at(part, o) {
                    h.record((emitted - t).max(0) as u64)
                        .map_err(|e| LoadtestError::Output {
                            path: PathBuf::from("staleness histogram"),
                            message: e.to_string(),
                        })?;
                }
            }
        }
        prev = s.offsets.clone();
    }
    Ok(h)
}

/// Run the load test.
pub fn loadtest(
    s: &LoadtestSettings,
    membership: Membership,
) -> Result<LoadtestResult, LoadtestError> {
    let out_err = |path: &Path, e: String| LoadtestError::Output {
        path: path.to_path_buf(),
        message: e,
    };
    std::fs::create_dir_all(&s.out).map_err(|e| out_err(&s.out, e.to_string()))?;
    let (_kafka, addr, started_broker) = match &s.broker {
        Some(a) => (None, a.clone(), false),
        None => {
            let b = start_kafka()?;
            let a = b.addr.clone();
            (Some(b), a, true)
        }
    };
    let topic = format!("viewpulse-loadtest-{}", now_ms());
    let url = KafkaUrl {
        brokers: addr.clone(),
        topic: topic.clone(),
    };
    replay::ensure_topic(&url, Some(s.partitions), &Properties::new())?;
    info!(broker = %addr, %topic, partitions = s.partitions, shards = s.shards, "load test starting");

    let metrics = Arc::new(Metrics::new(s.shards));
    let stop = Arc::new(AtomicBool::new(false));
    let sink = Timed::default();
    let daemon = {
        let (url, metrics, stop, sink) = (url.clone(), metrics.clone(), stop.clone(), sink.clone());
        let settings = PipelineSettings {
            shards: s.shards,
            trigger_records: s.trigger_records,
            trigger_interval: Some(s.trigger_interval),
            http: None,
            http_token: None,
            probes: Default::default(),
            subsets: s.subsets.clone(),
            top: 7,
            rating: Default::default(),
            durability: Default::default(),
            slow_shard: None,
        };
        let membership = Arc::new(membership);
        let consumer_properties = s.consumer_properties.clone();
        std::thread::Builder::new()
            .name("daemon".into())
            .spawn(move || {
                crate::topology::run::daemon_with(
                    RunSource::Kafka {
                        url,
                        options: StreamOptions {
                            client: KafkaOptions {
                                properties: consumer_properties,
                                ..KafkaOptions::default()
                            },
                            group_id: "viewpulse-loadtest".into(),
                            start: StartAt::Earliest,
                            until_end: false,
                            batch_records: 8192,
                            batch_wait: Duration::from_millis(20),
                            context: None,
                            resume: Default::default(),
                        },
                    },
                    membership,
                    &settings,
                    vec![Box::new(sink)],
                    stop,
                    metrics,
                )
            })
            .map_err(|e| LoadtestError::Broker(format!("cannot start the daemon thread: {e}")))?
    };

    let log = Arc::new(DeliveryLog::default());
    let started = Instant::now();
    let timeline = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (log, metrics, timeline, sampling) = (
            log.clone(),
            metrics.clone(),
            timeline.clone(),
            sampling.clone(),
        );
        let every = s.sample_every;
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                let sample = Sample {
                    t: started.elapsed().as_secs_f64(),
                    produced: log.count(),
                    counted: metrics.records.load(Ordering::Relaxed),
                    lag: (log.count() as i64 - metrics.records.load(Ordering::Relaxed) as i64)
                        .max(metrics.lag()),
                    rss_bytes: rss_bytes().0,
                };
                if let Ok(mut t) = timeline.lock() {
                    t.push(sample);
                }
                std::thread::sleep(every);
            }
        })
    };
    let produced = replay::replay(
        &s.input,
        &url,
        &ReplaySettings {
            pace: s.pace,
            partitions: Some(s.partitions),
            loops: s.loops,
            properties: Properties::new(),
        },
        &AtomicBool::new(false),
        Some(log.clone()),
    );
    // whatever happened, the daemon and the sampler stop before we report
    let finish = |stop: &AtomicBool| {
        stop.store(true, Ordering::Relaxed);
        sampling.store(false, Ordering::Relaxed);
    };
    let produced = match produced {
        Ok(p) => p,
        Err(e) => {
            finish(&stop);
            let _ = daemon.join();
            let _ = sampler.join();
            return Err(e.into());
        }
    };
    // wait until a snapshot counts every record (interval triggers take the tail)
    let wait = Duration::from_secs(120) + s.trigger_interval * 2;
    let deadline = Instant::now() + wait;
    let covered = || {
        sink.0
            .lock()
            .ok()
            .and_then(|v| v.last().map(|(_, s)| s.records))
            .unwrap_or(0)
    };
    let mut count_seconds = None;
    while covered() < produced.records {
        if count_seconds.is_none() && metrics.records.load(Ordering::Relaxed) >= produced.records {
            count_seconds = Some(started.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline || daemon.is_finished() {
            finish(&stop);
            let _ = sampler.join();
            let counted = metrics.records.load(Ordering::Relaxed);
            if let Ok(Err(e)) = daemon.join() {
                return Err(e.into());
            }
            return Err(LoadtestError::Behind {
                counted,
                produced: produced.records,
                waited: wait,
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let count_seconds = count_seconds.unwrap_or_else(|| started.elapsed().as_secs_f64());
    finish(&stop);
    let _ = sampler.join();
    let outcome = daemon
        .join()
        .map_err(|_| PipelineError::Runtime("the daemon thread panicked".into()))??;
    let snaps = sink.0.lock().map(|v| v.clone()).unwrap_or_default();
    let stale = staleness(&snaps, &log)?;
    let (merges, merge_mean, merge_max) = metrics.merge_stats();
    let timeline = timeline.lock().map(|t| t.clone()).unwrap_or_default();
    let last = outcome.last.as_ref();
    let result = LoadtestResult {
        input: s.input.display().to_string(),
        broker: addr,
        broker_started: started_broker,
        topic,
        partitions: s.partitions,
        shards: s.shards,
        trigger_records: s.trigger_records,
        trigger_interval_ms: s.trigger_interval.as_millis() as u64,
        pace: match s.pace {
            Pace::Max => "max".into(),
            Pace::Rate(r) => format!("rate {r}/s"),
            Pace::Speed(x) => format!("speed {x}x"),
        },
        records_produced: produced.records,
        produce_seconds: produced.seconds,
        produce_rate: produced.rate,
        records_counted: outcome.records,
        valid: last.map_or(0, |l| l.valid),
        malformed: last.map_or(0, |l| l.malformed),
        count_seconds,
        sustained_rate: outcome.records as f64 / count_seconds.max(1e-9),
        snapshots: outcome.triggers,
        staleness_ms: percentiles(&stale),
        merge_ms: MergeTimes {
            count: merges,
            mean: merge_mean * 1e3,
            max: merge_max * 1e3,
        },
        max_lag: timeline.iter().map(|t| t.lag).max().unwrap_or(0),
        peak_rss_bytes: rss_bytes().1,
        timeline,
    };
    write_outputs(&s.out, &result)?;
    Ok(result)
}

fn write_outputs(out: &Path, r: &LoadtestResult) -> Result<(), LoadtestError> {
    let json = out.join("loadtest.json");
    let text = serde_json::to_string_pretty(r).map_err(|e| LoadtestError::Output {
        path: json.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&json, text).map_err(|e| LoadtestError::Output {
        path: json.clone(),
        message: e.to_string(),
    })?;
    let mut points = Vec::with_capacity(r.timeline.len());
    for w in r.timeline.windows(2) {
        let dt = (w[1].t - w[0].t).max(1e-9);
        points.push(crate::report::LoadPoint {
            t: w[1].t,
            produced_rate: (w[1].produced.saturating_sub(w[0].produced)) as f64 / dt,
            consumed_rate: (w[1].counted.saturating_sub(w[0].counted)) as f64 / dt,
            lag: w[1].lag.max(0) as f64,
        });
    }
    let png = out.join("loadtest.png");
    crate::report::loadtest_chart(
        &png,
        &format!(
            "viewpulse load test: {} shards, {} partitions, {}",
            r.shards, r.partitions, r.pace
        ),
        &points,
    )
    .map_err(|e| LoadtestError::Output {
        path: png,
        message: e.to_string(),
    })
}

/// The short table printed at the end.
pub fn table(r: &LoadtestResult) -> String {
    let s = &r.staleness_ms;
    format!(
        "load test: {shards} shards, {parts} partitions, trigger {trig} records / {iv} ms, pace {pace}\n\
         {:<28} {:>14}\n{:<28} {:>14.0}\n{:<28} {:>14}\n{:<28} {:>14.0}\n{:<28} {:>14}\n\
         {:<28} {:>14}\n{:<28} {:>14}\n{:<28} {:>14.2}\n{:<28} {:>14.1}\n",
        "records produced",
        r.records_produced,
        "produce rate (records/s)",
        r.produce_rate,
        "records counted",
        r.records_counted,
        "sustained rate (records/s)",
        r.sustained_rate,
        "snapshots",
        r.snapshots,
        "staleness p50/p90/p99/max",
        format!("{}/{}/{}/{} ms", s.p50, s.p90, s.p99, s.max),
        "max consumer lag",
        r.max_lag,
        "trigger merge mean (ms)",
        r.merge_ms.mean,
        "peak resident memory (MB)",
        r.peak_rss_bytes as f64 / 1048576.0,
        shards = r.shards,
        parts = r.partitions,
        trig = r.trigger_records,
        iv = r.trigger_interval_ms,
        pace = r.pace,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_counts_each_record_once_at_its_first_snapshot() {
        let log = DeliveryLog::default();
        // partition 0: offsets 0..4 produced at 100, 110, 120, 130; partition 1: 0..2 at 105, 115
        for (o, t) in [(0, 100), (1, 110), (2, 120), (3, 130)] {
            log.delivered(0, o, t);
        }
        for (o, t) in [(0, 105), (1, 115)] {
            log.delivered(1, o, t);
        }
        let snap = |offsets: &[(&str, i64)]| Snapshot {
            trigger: 1,
            records: 0,
            valid: 0,
            malformed: 0,
            malformed_by_kind: Default::default(),
            offsets: offsets.iter().map(|(p, o)| (p.to_string(), *o)).collect(),
            emitted_at: String::new(),
            subsets: Default::default(),
        };
        let snaps = vec![
            (200, snap(&[("0", 2), ("1", 1)])),
            (300, snap(&[("0", 4), ("1", 2)])),
        ];
        let h = staleness(&snaps, &log).unwrap();
        // 100, 90, 95 at the first; 180, 170, 185 at the second
        assert_eq!(h.len(), 6);
        assert_eq!(h.max(), 185);
        assert_eq!(h.min(), 90);
        assert_eq!(h.value_at_quantile(0.5), 100);
    }
}
