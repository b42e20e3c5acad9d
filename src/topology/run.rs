//! `viewpulse run`, the daemon: [`run`] validates the configuration and builds the sinks,
//! the durability (checkpoint store, restored state, dead letters) and the source from it;
//! [`daemon_with`] starts every thread and actor of the pipeline and stops them in order.
//! What runs, for a Kafka source (SPEC 5):
//!
//! | what | where | fed by |
//! |---|---|---|
//! | consumer (the one poll loop, [`kafka::read`], on a `BaseConsumer`) | thread `kafka-consumer` | the broker |
//! | feed (hands batches to the ingestor) | a blocking task | the consumer's bounded channel (8 batches) |
//! | scale-out: group member (poll loop and feed in one, rebalances answered by the ingestor) | a blocking task | the broker, the changelog on assignment |
//! | ingestor actor (routing, triggers, barriers) | its own arbiter | its mailbox: [`ingest::FEED_WINDOW`] batches in flight |
//! | shard actors (counting) | one arbiter each | their mailboxes: [`ingest::WINDOW`] messages in flight |
//! | coordinator actor (merge, snapshot, checkpoint) | its own arbiter | [`ingest::COORDINATOR_WINDOW`] requests in flight |
//! | writer (sinks, dead letters, checkpoints, changelog) | thread `writer` | a bounded queue ([`pipeline::writer::QUEUE`]) |
//! | global coordinator (scale-out only) | thread `global-coordinator` | the changelog topic |
//! | HTTP endpoint, signal handler | the system arbiter (actix-web workers) | requests, SIGINT/SIGTERM |
//!
//! A file source is read by the feed itself; a group member's poll loop calls the feed itself. One stop signal (an `AtomicBool`, set by SIGINT,
//! SIGTERM, the caller, or a failure of the writer, the feed or the global coordinator) ends
//! the source; then the shutdown order, on every path, errors included: the feed's last batch,
//! the ingestor's last trigger and checkpoint through the shards and the coordinator
//! (drained), the actors stopped, the HTTP endpoint stopped, and the writer synced and joined
//! last. The error reported is the root cause as far as the threads tell it: the writer's own
//! error when the pipeline saw the writer stop, then the feed's, then the consumer's or the
//! global coordinator's, then the writer's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::{Actor, Arbiter};
use tracing::info;

use super::{load_membership, resolved, TopologyError};
use crate::config::{RunConfig, SourceAt};
use crate::counters::Membership;
use crate::pipeline::{
    self, coordinator, ingest, shard, Durability, JsonLines, Metrics, PipelineError,
    PipelineSettings, RunOutcome, RunSource, SnapshotSink, StdoutTable,
};
use crate::source::kafka::{self, KafkaOptions, KafkaUrl};

/// What `run` checks before it starts anything: the configuration parsed and validated, the
/// librdkafka properties accepted, the output paths writable, the model loaded.
fn prepare(
    cfg: &RunConfig,
) -> Result<
    (
        crate::config::Validated,
        crate::segment::LoadedModel,
        Membership,
    ),
    TopologyError,
> {
    let v = cfg.parse()?;
    kafka::check_properties(&v.raw.kafka.properties)
        .map_err(|m| TopologyError::Settings(format!("kafka.properties: {m}")))?;
    check_run_paths(&v.raw)?;
    let (model, membership) = load_membership(&v.raw.model, &v.subsets)?;
    Ok((v, model, membership))
}

/// `viewpulse run --check-config`: everything `run` checks before it starts, and a line
/// saying what it would run.
pub fn check(cfg: &RunConfig) -> Result<String, TopologyError> {
    let (v, _, membership) = prepare(cfg)?;
    let subsets: Vec<String> = v.subsets.iter().map(|s| s.label()).collect();
    Ok(format!(
        "configuration valid: source {}, model {} ({} households, {} clusters), subsets {}, {} shards{}",
        v.raw.source,
        v.raw.model.display(),
        membership.len(),
        membership.clusters(),
        subsets.join(","),
        v.raw.pipeline.shards,
        if v.cluster.is_some() { ", scale-out" } else { "" }
    ))
}

/// `viewpulse run`: validate the configuration, load the model, and run the pipeline until
/// the source ends (`until_end`, or a file) or a signal stops it.
pub fn run(cfg: &RunConfig) -> Result<RunOutcome, TopologyError> {
    let (v, model, membership) = prepare(cfg)?;
    let cfg = &v.raw;
    let subsets = v.subsets.clone();
    info!(households = membership.len(), source = %cfg.source, shards = cfg.pipeline.shards, "daemon starting");
    let mut durability = pipeline::Durability {
        interval: v.checkpoint_interval,
        model: crate::checkpoint::fingerprint(
            model
                .households
                .iter()
                .map(|h| (h.household_id, h.cluster, h.rank)),
        ),
        source: cfg.source.clone(),
        ..Default::default()
    };
    // the loaded model (a row of floats and strings per household) is not needed once the
    // membership table and the fingerprint are made: keeping it cost about 40 bytes a
    // household for the whole run (seen: 73 instead of 33 bytes a household resident)
    drop(model);
    if let Some(dir) = &cfg.state.dir {
        let mut store = crate::checkpoint::Store::open(dir, cfg.state.keep)?;
        if cfg.state.reset {
            let removed = store.clear()?;
            tracing::warn!(dir = %dir.display(), removed, "stored state discarded (--reset-state)");
        } else if let Some(r) = store.newest()? {
            let labels: Vec<String> = subsets.iter().map(|s| s.label()).collect();
            crate::checkpoint::check(&r, dir, durability.model, &labels, &cfg.source)?;
            info!(
                checkpoint = %r.path.display(),
                records = r.checkpoint.records,
                triggers = r.checkpoint.triggers,
                skipped_damaged = r.skipped,
                offsets = ?r.checkpoint.offsets(),
                "state restored"
            );
            durability.restored = Some(r.checkpoint);
        }
        durability.store = Some(store);
    }
    let mut sinks: Vec<Box<dyn SnapshotSink>> = Vec::new();
    if let Some(p) = &cfg.sinks.snapshots {
        let sink = match &durability.restored {
            Some(c) => {
                let (sink, dropped) = JsonLines::resume(p, c.triggers)?;
                if dropped > 0 {
                    info!(path = %p.display(), dropped, "snapshots after the checkpoint dropped; they are emitted again");
                }
                sink
            }
            None if durability.store.is_some() => JsonLines::create(p)?.durable(),
            None => JsonLines::create(p)?,
        };
        sinks.push(Box::new(sink));
    }
    if cfg.sinks.stdout {
        sinks.push(Box::new(StdoutTable));
    }
    let client = KafkaOptions {
        properties: cfg.kafka.properties.clone(),
        metadata_timeout: v.connect_timeout,
        startup_wait: v.startup_wait,
        outage_limit: v.outage_limit,
        resume_rewind: i64::try_from(cfg.kafka.resume_rewind).unwrap_or(i64::MAX),
        ..KafkaOptions::default()
    };
    durability.dead_letter = match (&cfg.sinks.dead_letter, &v.dead_letter_topic) {
        (Some(p), _) => Some(pipeline::writer::DeadLetterTarget::File(p.clone())),
        (None, Some(url)) => Some(pipeline::writer::DeadLetterTarget::Kafka {
            url: url.clone(),
            client: client.clone(),
        }),
        (None, None) => None,
    };
    if let Some(url) = &v.kafka_sink {
        sinks.push(Box::new(pipeline::KafkaTopic::connect(url, &client)?));
    }
    let source = if let (Some((changelog, coordinator, session_timeout)), SourceAt::Kafka(url)) =
        (&v.cluster, &v.source)
    {
        let member = if cfg.cluster.member.is_empty() {
            let host = std::env::var("HOSTNAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "viewpulse".into());
            format!("{host}-{}", std::process::id())
        } else {
            cfg.cluster.member.clone()
        };
        info!(%member, group = %cfg.kafka.group_id, changelog = %cfg.cluster.changelog, coordinator = %cfg.cluster.coordinator, "scale-out member");
        let session_timeout = *session_timeout;
        RunSource::Group {
            url: url.clone(),
            options: kafka::group::GroupOptions {
                client: client.clone(),
                group_id: cfg.kafka.group_id.clone(),
                member: member.clone(),
                session_timeout,
                batch_records: 8192,
                batch_wait: std::time::Duration::from_millis(50),
                context: None,
                owns_first: Default::default(),
            },
            cluster: pipeline::scaleout::ClusterSettings {
                changelog: changelog.clone(),
                coordinator: coordinator.clone(),
                group_id: cfg.kafka.group_id.clone(),
                session_timeout,
                member,
                client,
            },
        }
    } else if let SourceAt::Kafka(url) = &v.source {
        RunSource::Kafka {
            url: url.clone(),
            options: kafka::StreamOptions {
                client,
                group_id: cfg.kafka.group_id.clone(),
                start: v.start,
                until_end: cfg.until_end,
                batch_records: 8192,
                batch_wait: std::time::Duration::from_millis(50),
                context: None,
                resume: Default::default(),
            },
        }
    } else {
        RunSource::File(PathBuf::from(&cfg.source))
    };
    let out = daemon(
        source,
        std::sync::Arc::new(membership),
        &PipelineSettings {
            shards: cfg.pipeline.shards,
            trigger_records: cfg.trigger.records,
            trigger_interval: v.trigger_interval,
            http: v.http_listen,
            http_token: v.http_token.clone(),
            probes: v.probes.clone(),
            subsets,
            top: cfg.pipeline.top,
            rating: pipeline::SnapshotRating {
                rank_by: v.ranking.rank_by,
                min_views: v.ranking.min_views,
                intervals: v.intervals,
            },
            durability,
            slow_shard: None,
        },
        sinks,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )?;
    info!(
        records = out.records,
        triggers = out.triggers,
        "daemon stopped"
    );
    Ok(out)
}

/// Refuse (exit 2, before anything starts) a daemon whose outputs would overwrite its source
/// file, its model or one another.
fn check_run_paths(cfg: &RunConfig) -> Result<(), TopologyError> {
    let model = resolved(&cfg.model);
    let source = (!KafkaUrl::is_kafka(&cfg.source)).then(|| resolved(Path::new(&cfg.source)));
    let outputs: Vec<(&str, PathBuf)> = [
        ("sinks.snapshots", cfg.sinks.snapshots.as_deref()),
        ("sinks.dead_letter", cfg.sinks.dead_letter.as_deref()),
        ("state.dir", cfg.state.dir.as_deref()),
    ]
    .into_iter()
    .filter_map(|(k, p)| p.map(|p| (k, resolved(p))))
    .collect();
    for (i, (key, p)) in outputs.iter().enumerate() {
        let special = std::fs::metadata(p).is_ok_and(|m| !m.is_file() && !m.is_dir());
        let clash = if source.as_ref() == Some(p) {
            Some("the source file".to_string())
        } else if source
            .as_ref()
            .is_some_and(|s| s.is_dir() && p.starts_with(s))
        {
            Some("inside the source folder, where it would be read as views".to_string())
        } else if p.starts_with(&model) {
            Some("in the model folder".to_string())
        } else {
            outputs[..i]
                .iter()
                .find(|(_, q)| q == p && !special)
                .map(|(k, _)| format!("the file of {k} too"))
        };
        if let Some(what) = clash {
            return Err(TopologyError::Settings(format!(
                "{key} {} is {what}: give it a file of its own",
                p.display()
            )));
        }
    }
    // no silent loss of history: without state.dir a run starts over (trigger 1, counts from
    // nothing), so an earlier run's snapshots would be truncated
    // (scale-out continues through the changelog and the coordinator topic instead)
    if let (Some(p), None, false, false) = (
        &cfg.sinks.snapshots,
        &cfg.state.dir,
        cfg.sinks.overwrite,
        cfg.clustered(),
    ) {
        let held = std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() > 0);
        if held {
            return Err(TopologyError::Settings(format!(
                "sinks.snapshots {} already holds snapshots of an earlier run; without state.dir this run starts over and would replace them: set state.dir (--state-dir) to continue that run, move the file away, or pass --overwrite-snapshots (sinks.overwrite = true) to replace it",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Run the pipeline until the source ends (a file; a topic with `until_end`) or `stop` is set
/// (SIGINT and SIGTERM set it too); the shards are drained and a last snapshot is emitted for
/// records after the last trigger.
pub fn daemon(
    source: RunSource,
    membership: Arc<Membership>,
    s: &PipelineSettings,
    sinks: Vec<Box<dyn SnapshotSink>>,
    stop: Arc<AtomicBool>,
) -> Result<RunOutcome, PipelineError> {
    let metrics = Arc::new(Metrics::new(s.shards));
    daemon_with(source, membership, s, sinks, stop, metrics)
}

/// [`daemon`], updating `metrics` (made with `Metrics::new(s.shards)`) that the caller can watch
/// while it runs.
pub fn daemon_with(
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
    // the household groups the snapshots' intervals resample are counted by every shard
    let groups = s.rating.intervals.groups();
    let membership = if membership.groups() == groups {
        membership
    } else {
        // the caller's table is not kept beside the regrouped one (34 MB at 1 M households)
        let m = Arc::try_unwrap(membership).unwrap_or_else(|shared| shared.as_ref().clone());
        Arc::new(m.with_groups(groups))
    };
    let sys = actix::System::new();
    let s = s.clone();
    sys.block_on(async move {
        if !matches!(source, RunSource::File(_)) {
            // the probes know from the start that a broker is to be reached
            metrics.watch_kafka();
        }
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
                let (server, bound) = crate::sink::http::serve(
                    addr,
                    metrics.clone(),
                    s.http_token.clone(),
                    s.probes.clone(),
                )?;
                for a in &bound {
                    tracing::info!(addr = %a, auth, "http endpoint listening (/snapshot, /metrics, /livez, /readyz, /healthz)");
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
                pipeline::scaleout::ensure_topics(url, cluster)?;
                (Vec::new(), sinks, Some(pipeline::scaleout::Changelog::open(cluster)?))
            }
            _ => (sinks, Vec::new(), None),
        };
        let scale_out = changelog.is_some();
        // the global coordinator says when this process takes the role
        metrics.coordinator.store(!scale_out, Ordering::Relaxed);
        let writer = pipeline::writer::Persister::start(
            pipeline::writer::Outputs {
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
        let shape = (
            membership.subsets().len(),
            membership.clusters() as usize,
            membership.groups(),
        );
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
            let (dead, rating) = (d.dead_letter.is_some(), s.rating);
            let c = coordinator::Coordinator::start_in_arbiter(&arb.handle(), move |_| {
                coordinator::Coordinator::new(subsets, top, rating, tx, stamps, dead, mx)
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
        // what the feed did, and what the consumer and the global coordinator threads did; a
        // failure anywhere sets the one stop signal, and the shutdown below always runs
        let (joined, threads): (_, Result<(), PipelineError>) = match source {
            RunSource::File(path) => {
                let stop = stop.clone();
                let fed = actix_rt::task::spawn_blocking(move || {
                    ingest::file(&path, &mut feed, resume_at, &stop)
                })
                .await;
                (fed, Ok(()))
            }
            RunSource::Kafka { url, mut options } => {
                options.context = Some(metrics.watch_kafka());
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
                    .map_err(|source| PipelineError::Spawn { what: "kafka-consumer", source });
                let feed_stop = stop.clone();
                let routed = actix_rt::task::spawn_blocking(move || {
                    let r = ingest::kafka(&rx, &mut feed);
                    // the receiver goes first, so that a consumer told to stop sees that the
                    // pipeline took nothing more (and commits nothing it did not count)
                    drop(rx);
                    if r.is_err() {
                        feed_stop.store(true, Ordering::Relaxed);
                    }
                    r
                })
                .await;
                if !matches!(routed, Ok(Ok(_))) {
                    // a feed that failed or panicked: the consumer of a quiet topic would
                    // never find out by itself
                    stop.store(true, Ordering::Relaxed);
                }
                let consumed = match consumer.map(|c| c.join()) {
                    Ok(Ok(r)) => r.map(drop).map_err(PipelineError::from),
                    Ok(Err(_)) => {
                        Err(PipelineError::Runtime("the consumer thread panicked".into()))
                    }
                    Err(e) => Err(e),
                };
                (routed, consumed)
            }
            RunSource::Group {
                url,
                mut options,
                cluster,
            } => {
                options.context = Some(metrics.watch_kafka());
                let stamp = pipeline::scaleout::Stamp {
                    model: d.model,
                    subsets: labels.clone(),
                    topic: url.topic.clone(),
                };
                let global = pipeline::scaleout::GlobalSettings {
                    cluster: cluster.clone(),
                    stamp: stamp.clone(),
                    subsets: s.subsets.clone(),
                    top: s.top,
                    rating: s.rating,
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
                            let r = pipeline::scaleout::coordinate(global, elected, global_sinks, m, done);
                            if r.is_err() {
                                stop.store(true, Ordering::Relaxed);
                            }
                            r
                        })
                        .map_err(|source| PipelineError::Spawn { what: "global-coordinator", source })
                };
                if coordinator.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                let consumer_stop = stop.clone();
                let restore_settings = cluster.clone();
                let restore: Arc<kafka::group::Restore> = Arc::new(move |ps: &[i32]| {
                    pipeline::scaleout::read_states(&restore_settings, &stamp, ps)
                });
                // the group reader hands records and rebalances to the feed itself, on its
                // own thread; the feed's first failure is the pipeline's error
                let handoff = Arc::new(std::sync::Mutex::new(ingest::GroupFeed::new(feed)));
                let joined = actix_rt::task::spawn_blocking(move || {
                    let read = kafka::group::stream_group(
                        &url,
                        &options,
                        restore,
                        &consumer_stop,
                        handoff.clone(),
                    );
                    let fed = handoff.lock().unwrap_or_else(|e| e.into_inner()).finish();
                    (fed, read)
                })
                .await;
                let (routed, consumed) = match joined {
                    // an outage past its limit is the root cause of what failed after it (the
                    // state published as the member left, which no broker acknowledged, and
                    // so the writer too): deliberately ahead of the writer's own error
                    Ok((Err(fed), Err(read @ crate::source::SourceError::Outage { .. }))) => {
                        tracing::warn!(error = %fed, "while leaving the group after the outage");
                        (Ok(Err(PipelineError::from(read))), Ok(()))
                    }
                    Ok((fed, read)) => (Ok(fed), read.map_err(PipelineError::from)),
                    Err(e) => (Err(e), Ok(())),
                };
                if !matches!(routed, Ok(Ok(_))) {
                    stop.store(true, Ordering::Relaxed);
                }
                coordinating.store(true, Ordering::Relaxed);
                let coordinated = match coordinator.map(|c| c.join()) {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err(PipelineError::Runtime(
                        "the coordinator thread panicked".into(),
                    )),
                    Err(e) => Err(e),
                };
                (routed, consumed.and(coordinated))
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
        let routed = joined
            .map_err(|e| PipelineError::Runtime(format!("the feed task failed: {e}")))
            .and_then(|r| r);
        // the first cause: the writer's own error when the pipeline saw it stop, then the
        // pipeline's, then the consumer's or the global coordinator's, then the writer's
        let (done, last) = match (routed, threads, written) {
            (Err(PipelineError::PersisterStopped | PipelineError::WriterFailed(_)), _, Err(e)) => {
                return Err(e)
            }
            (Err(e), _, _) | (Ok(_), Err(e), _) | (Ok(_), Ok(()), Err(e)) => return Err(e),
            (Ok(done), Ok(()), Ok(last)) => (done, last),
        };
        Ok(RunOutcome {
            records: done.records,
            triggers: done.triggers,
            last,
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
    let (n, k, g) = (
        membership.subsets().len(),
        membership.clusters() as usize,
        membership.groups(),
    );
    let per_shard = ingest::spread(
        c.partitions.iter().map(|(&p, st)| (p, &st.counters)),
        shards,
        (n, k, g),
    )?;
    let mut total = crate::counters::Counters::new(n, k).with_groups(g);
    for counters in per_shard.iter().flat_map(|m| m.values()) {
        total.merge(counters);
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
