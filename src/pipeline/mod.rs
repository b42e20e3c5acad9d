//! The streaming pipeline (SPEC 5), as actors: an ingestor routes records by a stable hash of
//! the household to shard actors, each on its own arbiter (thread), that count them with the
//! pure core; a coordinator actor merges the shards' counters at every trigger and emits a
//! snapshot to the sinks. However many shards count, the merge is the same sum, so the
//! snapshots are identical for any shard count.

pub mod coordinator;
pub mod ingest;
pub mod messages;
pub mod shard;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::sync::atomic::{AtomicBool, Ordering};

use actix::{Actor, Arbiter};
use thiserror::Error;

use crate::counters::{Membership, Subset};
use crate::source::kafka::{self, KafkaUrl, StreamOptions};
pub use messages::{Snapshot, SnapshotRow};

/// Errors of the pipeline.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// An actor's mailbox closed (the actor stopped).
    #[error("an actor stopped: {0}")]
    Mailbox(String),
    /// No shard configured.
    #[error("shards must be at least 1")]
    NoShard,
    /// Reading the source failed.
    #[error("{source_name}: {message}")]
    Read {
        /// The source.
        source_name: String,
        /// What happened.
        message: String,
    },
    /// Opening the source failed.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// A sink failed.
    #[error("cannot write snapshots to {path}: {message}")]
    Sink {
        /// Where.
        path: String,
        /// What happened.
        message: String,
    },
    /// The runtime failed.
    #[error("the actor runtime failed: {0}")]
    Runtime(String),
}

/// Where snapshots go.
pub trait SnapshotSink: Send {
    /// Emit one snapshot.
    fn emit(&mut self, snapshot: &Snapshot) -> Result<(), PipelineError>;
}

/// One JSON object per line in a file (SPEC 6), flushed at every snapshot.
pub struct JsonLines {
    path: PathBuf,
    w: BufWriter<File>,
}

impl JsonLines {
    /// Create (truncate) the file.
    pub fn create(path: &Path) -> Result<JsonLines, PipelineError> {
        let err = |e: std::io::Error| PipelineError::Sink {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        Ok(JsonLines {
            path: path.to_path_buf(),
            w: BufWriter::new(File::create(path).map_err(err)?),
        })
    }
}

impl SnapshotSink for JsonLines {
    fn emit(&mut self, s: &Snapshot) -> Result<(), PipelineError> {
        let err = |m: String| PipelineError::Sink {
            path: self.path.display().to_string(),
            message: m,
        };
        let line = serde_json::to_string(s).map_err(|e| err(e.to_string()))?;
        writeln!(self.w, "{line}").map_err(|e| err(e.to_string()))?;
        self.w.flush().map_err(|e| err(e.to_string()))
    }
}

/// A readable table per trigger on stdout (the seed's `.show(42)`).
pub struct StdoutTable;

impl SnapshotSink for StdoutTable {
    fn emit(&mut self, s: &Snapshot) -> Result<(), PipelineError> {
        let mut out = format!(
            "trigger {}: {} records ({} valid, {} malformed) at {}\n",
            s.trigger, s.records, s.valid, s.malformed, s.emitted_at
        );
        for (subset, rows) in &s.subsets {
            out.push_str(&format!(
                "subset {subset}\n{:>7} {:>4} {:>11} {:>10} {:>10} {:>10}\n",
                "cluster", "rank", "station_num", "diff_rank", "popularity", "genpop"
            ));
            for r in rows {
                out.push_str(&format!(
                    "{:>7} {:>4} {:>11} {:>10.4} {:>10.4} {:>10.4}\n",
                    r.cluster,
                    r.rank,
                    r.station_num,
                    r.diff_rank,
                    r.popularity_rating,
                    r.genpop_rating
                ));
            }
        }
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(out.as_bytes())
            .and_then(|_| stdout.flush())
            .map_err(|e| PipelineError::Sink {
                path: "stdout".into(),
                message: e.to_string(),
            })
    }
}

/// Now, UTC, as RFC 3339 with seconds (`2026-11-23T19:00:00Z`).
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    rfc3339(secs)
}

/// Unix seconds as RFC 3339 UTC (Howard Hinnant's civil-from-days).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Keeps every snapshot in memory (for tests and short bounded runs).
#[derive(Clone, Default)]
pub struct MemorySink(pub Arc<std::sync::Mutex<Vec<Snapshot>>>);

impl SnapshotSink for MemorySink {
    fn emit(&mut self, s: &Snapshot) -> Result<(), PipelineError> {
        self.0
            .lock()
            .map_err(|_| PipelineError::Runtime("a snapshot sink was poisoned".into()))?
            .push(s.clone());
        Ok(())
    }
}

/// Settings of a pipeline run.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Shard actors.
    pub shards: usize,
    /// Records between triggers.
    pub trigger_records: u64,
    /// Subsets rated.
    pub subsets: Vec<Subset>,
    /// Top-K per cluster.
    pub top: usize,
}

/// Where the records come from.
#[derive(Debug, Clone)]
pub enum RunSource {
    /// A file, one record a line, read to its end.
    File(PathBuf),
    /// A Kafka topic.
    Kafka {
        /// The topic.
        url: KafkaUrl,
        /// How to read it.
        options: StreamOptions,
    },
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Records consumed.
    pub records: u64,
    /// Triggers fired.
    pub triggers: u64,
    /// The last snapshot.
    pub last: Option<Snapshot>,
}

/// Run the pipeline until the source ends (a file; a topic with `until_end`) or `stop` is set
/// (SIGINT and SIGTERM set it too); the shards are drained and a last snapshot is emitted for
/// records after the last trigger.
pub fn run(
    source: RunSource,
    membership: Arc<Membership>,
    s: &PipelineSettings,
    sinks: Vec<Box<dyn SnapshotSink>>,
    stop: Arc<AtomicBool>,
) -> Result<RunOutcome, PipelineError> {
    if s.shards == 0 {
        return Err(PipelineError::NoShard);
    }
    let sys = actix::System::new();
    let s = s.clone();
    sys.block_on(async move {
        let signals = stop.clone();
        actix_rt::spawn(async move {
            wait_for_signal().await;
            tracing::warn!("signal received: draining and emitting a last snapshot");
            signals.store(true, Ordering::Relaxed);
        });
        let mut arbiters = Vec::with_capacity(s.shards);
        let mut shards = Vec::with_capacity(s.shards);
        for i in 0..s.shards {
            let arb = Arbiter::new();
            let m = membership.clone();
            shards.push(shard::Shard::start_in_arbiter(&arb.handle(), move |_| {
                shard::Shard::new(i, m)
            }));
            arbiters.push(arb);
        }
        let coord =
            coordinator::Coordinator::new(shards.clone(), s.subsets.clone(), s.top, sinks).start();
        let mut router = ingest::Router::new(shards, coord, s.trigger_records);
        let joined = match source {
            RunSource::File(path) => {
                actix_rt::task::spawn_blocking(move || {
                    ingest::file(&path, &mut router, &stop).map(|()| router)
                })
                .await
            }
            RunSource::Kafka { url, options } => {
                let (tx, rx) = crossbeam_channel::bounded(8);
                let consumer_stop = stop.clone();
                let consumer = std::thread::Builder::new()
                    .name("kafka-consumer".into())
                    .spawn(move || {
                        let r = kafka::stream_topic(&url, &options, &consumer_stop, &tx);
                        drop(tx);
                        r
                    })
                    .map_err(|e| PipelineError::Runtime(e.to_string()))?;
                let routed = actix_rt::task::spawn_blocking(move || {
                    ingest::kafka(&rx, &mut router).map(|()| router)
                })
                .await;
                match consumer.join() {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => {
                        return Err(PipelineError::Runtime(
                            "the consumer thread panicked".into(),
                        ))
                    }
                }
                routed
            }
        };
        for a in &arbiters {
            a.stop();
        }
        let router = joined.map_err(|e| PipelineError::Runtime(e.to_string()))??;
        Ok(RunOutcome {
            records: router.records,
            triggers: router.triggers,
            last: router.last,
        })
    })
}

/// SIGINT or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use actix_rt::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio_select(actix_rt::signal::ctrl_c(), async move {
                    term.recv().await;
                })
                .await
            }
            Err(_) => {
                let _ = actix_rt::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = actix_rt::signal::ctrl_c().await;
    }
}

/// Wait for whichever of two futures finishes first.
async fn tokio_select<A: std::future::Future, B: std::future::Future>(a: A, b: B) {
    futures_util::pin_mut!(a, b);
    futures_util::future::select(a, b).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_460_400), "2026-11-23T19:00:00Z");
    }
}
