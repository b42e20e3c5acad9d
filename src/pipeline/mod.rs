//! The streaming pipeline (SPEC 5), as actors: an ingestor routes records by a stable hash of
//! the household to shard actors, each on its own arbiter (thread), that count them with the
//! pure core; at every trigger a barrier follows the batches into every shard and a
//! coordinator actor merges the shards' answers into a snapshot for the writer thread (the
//! sinks). However many shards count, the merge is the same sum, so the snapshots are
//! identical for any shard count. This module holds the stages, their messages and their
//! settings; [`crate::topology::run`] starts them.

pub mod coordinator;
pub mod health;
pub mod ingest;
pub mod messages;
pub mod metrics;
pub mod scaleout;
pub mod shard;
pub mod writer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::counters::Subset;
use crate::secret::Secret;
pub use crate::sink::snapshot::{JsonLines, KafkaTopic, MemorySink, SnapshotSink, StdoutTable};
use crate::source::kafka::{KafkaUrl, StreamOptions};
pub use messages::{Snapshot, SnapshotRow};
pub use metrics::Metrics;

/// Errors of the pipeline.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// An actor's mailbox closed before it answered.
    #[error("an actor stopped: {0}")]
    Mailbox(#[source] actix::MailboxError),
    /// A shard stopped before it answered a trigger's or a checkpoint's barrier.
    #[error("a shard stopped before it answered a barrier")]
    ShardGone,
    /// A thread could not be started.
    #[error("cannot start the {what} thread: {source}")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint cannot be made or written.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The writer thread is gone; the error it ended with is the one to report.
    #[error("the writer stopped")]
    PersisterStopped,
    /// The writer failed with this reason (it ends with the error itself, the one to report).
    #[error("{0}")]
    WriterFailed(String),
    /// A checkpoint does not fit this run.
    #[error("restoring state: {0}")]
    Restore(String),
    /// A restored input partition's counters do not fit the model (another shape, totals
    /// that do not add up).
    #[error("restoring state: partition {partition}: {source}")]
    RestoredPartition {
        /// The input partition.
        partition: i32,
        /// What is wrong with its counters.
        #[source]
        source: crate::counters::CountersError,
    },
    /// `shards` is 0.
    #[error("shards must be at least 1")]
    NoShard,
    /// Reading the source failed.
    #[error("{source_name}: {message}")]
    Read {
        /// The source.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// The source failed.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// A file output (snapshots, dead letters) cannot be written.
    #[error("cannot write {what} to {path}: {source}")]
    Sink {
        /// What was being written: `snapshots`, `dead letters`.
        what: &'static str,
        /// The file.
        path: String,
        /// The cause (an I/O or encoding error).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Standard output cannot be written (a closed pipe, a full disk).
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    /// A Kafka output topic cannot be reached or refuses the records.
    #[error("cannot write {what} to {url}: {message}")]
    KafkaSink {
        /// What was being written: `snapshots`, `dead letters`.
        what: &'static str,
        /// The topic.
        url: String,
        /// The cause.
        message: String,
    },
    /// A Kafka client's configuration (a `-X` property) is refused by librdkafka.
    #[error("{url}: {message}")]
    KafkaConfig {
        /// The topic.
        url: String,
        /// librdkafka's reason.
        message: String,
    },
    /// A scale-out topic (the input's metadata, the changelog, the coordinator topic) cannot
    /// be reached, or refuses a request.
    #[error("{url}: {message}")]
    ScaleOut {
        /// The topic.
        url: String,
        /// What failed, with the client's reason.
        message: String,
        /// The client's error, when there is one.
        #[source]
        source: Option<Box<rdkafka::error::KafkaError>>,
    },
    /// The actix system failed.
    #[error("the actor runtime failed: {0}")]
    Runtime(String),
    /// The HTTP endpoint cannot bind.
    #[error("http.listen: cannot serve HTTP on {addr}: {source}")]
    Http {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl PipelineError {
    /// A file output (`what`: `snapshots`, `dead letters`) that cannot be written to `path`.
    pub fn sink(
        what: &'static str,
        path: &std::path::Path,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> PipelineError {
        PipelineError::Sink {
            what,
            path: path.display().to_string(),
            source: source.into(),
        }
    }

    /// The process exit code this error means.
    pub fn exit_code(&self) -> i32 {
        use crate::exit;
        match self {
            PipelineError::Mailbox(_)
            | PipelineError::ShardGone
            | PipelineError::Spawn { .. }
            | PipelineError::Runtime(_)
            | PipelineError::PersisterStopped
            | PipelineError::WriterFailed(_) => exit::SOFTWARE,
            PipelineError::Checkpoint(e) => e.exit_code(),
            PipelineError::Restore(_)
            | PipelineError::RestoredPartition { .. }
            | PipelineError::Read { .. } => exit::DATA,
            PipelineError::NoShard | PipelineError::KafkaConfig { .. } => exit::USAGE,
            PipelineError::Source(e) => e.exit_code(),
            PipelineError::Sink { .. } | PipelineError::Stdout(_) => exit::IO,
            PipelineError::KafkaSink { .. }
            | PipelineError::ScaleOut { .. }
            | PipelineError::Http { .. } => exit::UNAVAILABLE,
        }
    }

    /// Whether this is a write to a closed pipe on stdout (`viewpulse run | head`): the
    /// reader is gone, which ends the command quietly.
    pub fn is_closed_stdout(&self) -> bool {
        matches!(self, PipelineError::Stdout(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
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

/// Settings of a pipeline run.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Shard actors.
    pub shards: usize,
    /// Records between triggers.
    pub trigger_records: u64,
    /// Also a trigger whenever this much time passed and records came.
    pub trigger_interval: Option<Duration>,
    /// Serve `/snapshot`, `/metrics` and the probes here.
    pub http: Option<SocketAddr>,
    /// Require `Authorization: Bearer TOKEN` on `/snapshot` and `/metrics`.
    pub http_token: Option<Secret>,
    /// The probes' bounds (`/livez`, `/readyz`).
    pub probes: crate::sink::http::Probes,
    /// Subsets rated.
    pub subsets: Vec<Subset>,
    /// Top-K per cluster.
    pub top: usize,
    /// How the top-K is ordered and what the snapshot rows say about their uncertainty.
    pub rating: SnapshotRating,
    /// Checkpoints, restore and dead letters.
    pub durability: Durability,
    /// For benchmarks of back-pressure only: shard `.0` sleeps `.1` before each batch it
    /// counts (no configuration key or flag sets it).
    pub slow_shard: Option<(usize, Duration)>,
}

/// How a snapshot's top-K is ordered (`pipeline.rank_by`, `pipeline.min_views`) and whether
/// its rows carry intervals and the top-K stability (`pipeline.bootstrap`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnapshotRating {
    /// The order of the top-K.
    pub rank_by: crate::ratings::RankBy,
    /// Fewest views in the cluster for a station to be ranked.
    pub min_views: u64,
    /// The intervals: `Method::Off` (the default) or a bootstrap.
    pub intervals: crate::uncertainty::IntervalSettings,
}

impl Default for SnapshotRating {
    fn default() -> SnapshotRating {
        SnapshotRating {
            rank_by: crate::ratings::RankBy::Diff,
            min_views: 1,
            intervals: crate::uncertainty::IntervalSettings {
                method: crate::uncertainty::Method::Off,
                confidence: 0.95,
            },
        }
    }
}

impl SnapshotRating {
    /// The ranking of a top `top`.
    pub fn ranking(&self, top: usize) -> crate::ratings::Ranking {
        crate::ratings::Ranking {
            top,
            rank_by: self.rank_by,
            min_views: self.min_views,
        }
    }
}

/// What makes a run survive a crash: checkpoints (and the one restored), and where malformed
/// records go.
#[derive(Debug, Clone, Default)]
pub struct Durability {
    /// The checkpoint store (`state.dir`); none = no checkpoints.
    pub store: Option<crate::checkpoint::Store>,
    /// Also checkpoint this often between triggers.
    pub interval: Option<Duration>,
    /// The checkpoint to go on from.
    pub restored: Option<crate::checkpoint::Checkpoint>,
    /// Fingerprint of the model, stamped on checkpoints.
    pub model: u64,
    /// The source as configured, stamped on checkpoints.
    pub source: String,
    /// Where malformed records go, with their positions.
    pub dead_letter: Option<writer::DeadLetterTarget>,
}

/// Where the records come from.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // made once a run
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
    /// A Kafka topic shared with the other processes of a consumer group (scale-out).
    Group {
        /// The topic.
        url: KafkaUrl,
        /// How to read it.
        options: crate::source::kafka::group::GroupOptions,
        /// The changelog and the coordinator.
        cluster: scaleout::ClusterSettings,
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
    /// The live metrics, as they stood at the end.
    pub metrics: Arc<Metrics>,
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
