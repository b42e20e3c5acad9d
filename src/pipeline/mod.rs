//! The streaming pipeline (SPEC 5), as actors: an ingestor routes records by a stable hash of
//! the household to shard actors, each on its own arbiter (thread), that count them with the
//! pure core; a coordinator actor merges the shards' counters at every trigger and emits a
//! snapshot to the sinks. However many shards count, the merge is the same sum, so the
//! snapshots are identical for any shard count.

pub mod cluster;
pub mod coordinator;
pub mod http;
pub mod ingest;
pub mod messages;
pub mod metrics;
pub mod persist;
pub mod shard;
pub mod sinks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use actix::{Actor, Arbiter};
use thiserror::Error;

use crate::counters::{Membership, Subset};
use crate::secret::Secret;
use crate::source::kafka::{self, KafkaUrl, StreamOptions};
pub use messages::{Snapshot, SnapshotRow};
pub use metrics::Metrics;
pub use sinks::{JsonLines, KafkaTopic, MemorySink, SnapshotSink, StdoutTable};

/// Errors of the pipeline.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// An actor's mailbox closed before it answered.
    #[error("an actor stopped: {0}")]
    Mailbox(String),
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
    #[error("cannot write {what} to {path}: {message}")]
    Sink {
        /// What was being written: `snapshots`, `dead letters`.
        what: &'static str,
        /// The file.
        path: String,
        /// The cause.
        message: String,
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
    /// The actix system failed.
    #[error("the actor runtime failed: {0}")]
    Runtime(String),
    /// The HTTP endpoint cannot bind.
    #[error("http.listen: cannot serve HTTP on {addr}: {message}")]
    Http {
        /// The address.
        addr: String,
        /// The cause.
        message: String,
    },
}

impl PipelineError {
    /// The process exit code this error means.
    pub fn exit_code(&self) -> i32 {
        use crate::exit;
        match self {
            PipelineError::Mailbox(_)
            | PipelineError::Runtime(_)
            | PipelineError::PersisterStopped
            | PipelineError::WriterFailed(_) => exit::SOFTWARE,
            PipelineError::Checkpoint(e) => e.exit_code(),
            PipelineError::Restore(_) | PipelineError::Read { .. } => exit::DATA,
            PipelineError::NoShard | PipelineError::KafkaConfig { .. } => exit::USAGE,
            PipelineError::Source(e) => e.exit_code(),
            PipelineError::Sink { .. } | PipelineError::Stdout(_) => exit::IO,
            PipelineError::KafkaSink { .. } | PipelineError::Http { .. } => exit::UNAVAILABLE,
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
    /// Serve `/snapshot`, `/healthz` and `/metrics` here.
    pub http: Option<SocketAddr>,
    /// Require `Authorization: Bearer TOKEN` on `/snapshot` and `/metrics`.
    pub http_token: Option<Secret>,
    /// Subsets rated.
    pub subsets: Vec<Subset>,
    /// Top-K per cluster.
    pub top: usize,
    /// Checkpoints, restore and dead letters.
    pub durability: Durability,
    /// For benchmarks of back-pressure only: shard `.0` sleeps `.1` before each batch it
    /// counts (no configuration key or flag sets it).
    pub slow_shard: Option<(usize, Duration)>,
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
    pub dead_letter: Option<persist::DeadLetterTarget>,
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
        options: crate::source::group::GroupOptions,
        /// The changelog and the coordinator.
        cluster: cluster::ClusterSettings,
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
    let metrics = Arc::new(Metrics::new(s.shards));
    run_with(source, membership, s, sinks, stop, metrics)
}

/// [`run`], updating `metrics` (made with `Metrics::new(s.shards)`) that the caller can watch
/// while it runs.
pub fn run_with(
    source: RunSource,
    membership: Arc<Membership>,
    s: &PipelineSettings,
    sinks: Vec<Box<dyn SnapshotSink>>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> Result<RunOutcome, PipelineError> {
    if s.shards == 0 || metrics.shards() != s.shards {
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
        let server = match s.http {
            Some(addr) => {
                let auth = if s.http_token.is_some() {
                    "bearer token on /snapshot and /metrics"
                } else {
                    "none"
                };
                let (server, bound) = http::serve(addr, metrics.clone(), s.http_token.clone())?;
                for a in &bound {
                    tracing::info!(addr = %a, auth, "http endpoint listening (/snapshot, /healthz, /metrics)");
                }
                let handle = server.handle();
                actix_rt::spawn(server);
                Some(handle)
            }
            None => None,
        };
        let d = &s.durability;
        let file_source = matches!(source, RunSource::File(_));
        let restored = restored_state(d, &membership, s.shards)?;
        if let Some((_, total)) = &restored {
            metrics.restored(total);
        }
        let labels: Vec<String> = s.subsets.iter().map(|x| x.label()).collect();
        // scale-out: the global coordinator, not this process's triggers, emits to the sinks,
        // and the writer publishes every checkpoint to the changelog
        let (sinks, global_sinks, changelog) = match &source {
            RunSource::Group { url, cluster, .. } => {
                cluster::ensure_topics(url, cluster)?;
                (Vec::new(), sinks, Some(cluster::Changelog::open(cluster)?))
            }
            _ => (sinks, Vec::new(), None),
        };
        let scale_out = changelog.is_some();
        let writer = persist::Persister::start(
            persist::Outputs {
                sinks,
                store: d.store.clone(),
                dead: d.dead_letter.clone(),
                changelog,
            },
            d.restored.as_ref().map(|c| c.offsets()).as_ref(),
            file_source,
            metrics.clone(),
            stop.clone(),
        )?;
        let dead_tx = d.dead_letter.as_ref().map(|_| writer.sender());
        let mut per_shard = restored.map(|(p, _)| p).unwrap_or_default();
        per_shard.resize_with(s.shards, Default::default);
        // every actor on its own arbiter (thread): shards, the coordinator, the ingestor
        let mut arbiters = Vec::with_capacity(s.shards + 2);
        let mut shards = Vec::with_capacity(s.shards);
        for (i, state) in per_shard.into_iter().enumerate() {
            let arb = Arbiter::new();
            let m = membership.clone();
            let mx = metrics.clone();
            let tx = dead_tx.clone();
            let delay = s.slow_shard.filter(|&(slow, _)| slow == i).map(|(_, d)| d);
            shards.push(shard::Shard::start_in_arbiter(&arb.handle(), move |_| {
                shard::Shard::new(i, m, mx)
                    .with_state(state)
                    .with_dead_letters(tx)
                    .with_delay(delay)
            }));
            arbiters.push(arb);
        }
        drop(dead_tx);
        let shape = (membership.subsets().len(), membership.clusters() as usize);
        let stamps = coordinator::Stamps {
            model: d.model,
            subsets: labels.clone(),
            source: match &source {
                RunSource::Group { url, .. } => url.topic.clone(),
                _ => d.source.clone(),
            },
        };
        let coord = {
            let arb = Arbiter::new();
            let (subsets, top, tx, mx) = (s.subsets.clone(), s.top, writer.sender(), metrics.clone());
            let dead = d.dead_letter.is_some();
            let c = coordinator::Coordinator::start_in_arbiter(&arb.handle(), move |_| {
                coordinator::Coordinator::new(subsets, top, tx, stamps, dead, mx)
            });
            arbiters.push(arb);
            c
        };
        let mut router = ingest::Router::new(s.shards, s.trigger_records, s.trigger_interval);
        if scale_out {
            router.publish_only();
        }
        if scale_out || d.store.is_some() {
            router.checkpoint_with(d.store.as_ref().and(d.interval));
        }
        if let Some(c) = &d.restored {
            router.resume(c);
            metrics.triggers.store(c.triggers, Ordering::Relaxed);
            for (p, o) in c.offsets() {
                metrics.set_next(p, o);
            }
        }
        let resume_at = router.offsets.get(&0).copied().unwrap_or(0);
        let ingestor = {
            let arb = Arbiter::new();
            let mx = metrics.clone();
            let i = ingest::Ingestor::start_in_arbiter(&arb.handle(), move |_| {
                ingest::Ingestor::new(router, shards, coord, shape, mx)
            });
            arbiters.push(arb);
            i
        };
        let mut feed = ingest::Feed::new(ingestor);
        let joined = match source {
            RunSource::File(path) => {
                actix_rt::task::spawn_blocking(move || ingest::file(&path, &mut feed, resume_at, &stop))
                    .await
            }
            RunSource::Kafka { url, mut options } => {
                options.highs = Some(metrics.highs());
                if let Some(c) = &d.restored {
                    options.resume = c.offsets();
                }
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
                let routed =
                    actix_rt::task::spawn_blocking(move || ingest::kafka(&rx, &mut feed)).await;
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
            RunSource::Group {
                url,
                mut options,
                cluster,
            } => {
                options.highs = Some(metrics.highs());
                let stamp = cluster::Stamp {
                    model: d.model,
                    subsets: labels.clone(),
                    topic: url.topic.clone(),
                };
                let global = cluster::GlobalSettings {
                    cluster: cluster.clone(),
                    stamp: stamp.clone(),
                    subsets: s.subsets.clone(),
                    top: s.top,
                    shape,
                    interval: s.trigger_interval.unwrap_or(std::time::Duration::from_secs(10)),
                };
                let coordinating = Arc::new(AtomicBool::new(false));
                let coordinator = {
                    let (m, done, stop) = (metrics.clone(), coordinating.clone(), stop.clone());
                    let elected = options.owns_first.clone();
                    std::thread::Builder::new()
                        .name("global-coordinator".into())
                        .spawn(move || {
                            let r = cluster::coordinate(global, elected, global_sinks, m, done);
                            if r.is_err() {
                                stop.store(true, Ordering::Relaxed);
                            }
                            r
                        })
                        .map_err(|e| PipelineError::Runtime(e.to_string()))?
                };
                let (tx, rx) = crossbeam_channel::bounded(8);
                let consumer_stop = stop.clone();
                let restore_settings = cluster.clone();
                let restore: Arc<crate::source::group::Restore> = Arc::new(move |ps: &[i32]| {
                    cluster::read_states(&restore_settings, &stamp, ps)
                });
                let consumer = std::thread::Builder::new()
                    .name("kafka-group-consumer".into())
                    .spawn(move || {
                        let r = crate::source::group::stream_group(
                            &url,
                            &options,
                            restore,
                            &consumer_stop,
                            &tx,
                        );
                        drop(tx);
                        r
                    })
                    .map_err(|e| PipelineError::Runtime(e.to_string()))?;
                let routed =
                    actix_rt::task::spawn_blocking(move || ingest::group(&rx, &mut feed)).await;
                coordinating.store(true, Ordering::Relaxed);
                let consumed = consumer.join();
                let coordinated = coordinator.join();
                match consumed {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => {
                        return Err(PipelineError::Runtime(
                            "the consumer thread panicked".into(),
                        ))
                    }
                }
                match coordinated {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(PipelineError::Runtime(
                            "the coordinator thread panicked".into(),
                        ))
                    }
                }
                routed
            }
        };
        // shutdown order: the source stopped and the ingestor drained (the last trigger and
        // checkpoint went through the shards and the coordinator); now the actors stop, then
        // the HTTP endpoint, and the writer syncs and flushes every sink last
        for a in &arbiters {
            a.stop();
        }
        if let Some(h) = server {
            h.stop(true).await;
        }
        let written = writer.finish();
        let done = match (joined.map_err(|e| PipelineError::Runtime(e.to_string()))?, written) {
            // the pipeline saw the writer's channel close: the writer's error says why
            (
                Err(PipelineError::PersisterStopped | PipelineError::WriterFailed(_)),
                Err(e),
            ) => return Err(e),
            (routed, written) => {
                let done = routed?;
                (done, written?)
            }
        };
        Ok(RunOutcome {
            records: done.0.records,
            triggers: done.0.triggers,
            last: done.1,
            metrics,
        })
    })
}

/// The restored counters, spread over `shards` shards (input partition p to shard
/// p mod shards: any shard may hold them, the merge is a sum), and their total.
#[allow(clippy::type_complexity)]
fn restored_state(
    d: &Durability,
    membership: &Membership,
    shards: usize,
) -> Result<
    Option<(
        Vec<std::collections::BTreeMap<i32, crate::counters::Counters>>,
        crate::counters::Counters,
    )>,
    PipelineError,
> {
    let Some(c) = &d.restored else {
        return Ok(None);
    };
    let (n, k) = (membership.subsets().len(), membership.clusters() as usize);
    let mut per_shard = vec![std::collections::BTreeMap::new(); shards];
    let mut total = crate::counters::Counters::new(n, k);
    for (&p, st) in &c.partitions {
        let counters = crate::counters::Counters::from_state(&st.counters, n, k)
            .map_err(|e| PipelineError::Restore(format!("partition {p}: {e}")))?;
        total.merge(&counters);
        per_shard[p.rem_euclid(shards as i32) as usize].insert(p, counters);
    }
    if total.records != c.records {
        return Err(PipelineError::Restore(format!(
            "the partitions hold {} records, the checkpoint says {}",
            total.records, c.records
        )));
    }
    Ok(Some((per_shard, total)))
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
