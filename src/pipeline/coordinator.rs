//! The coordinator actor: at every trigger it awaits every shard's counters (each shard
//! answers the trigger's barrier once it has counted the batches before it), merges them,
//! computes SPEC 4's top-K diff-rank with the pure core and hands the snapshot to the writer
//! thread (the sinks); at every checkpoint it sums the shards' counters per input partition
//! and hands the checkpoint to the writer behind that snapshot. It runs on its own arbiter and
//! handles one message at a time, so snapshots and checkpoints reach the writer in trigger
//! order; the writer's bounded queue is its back-pressure.

use std::collections::BTreeMap;
use std::time::Instant;

use actix::fut::{wrap_future, ActorFutureExt};
use actix::{Actor, AtomicResponse, Context, Handler};
use crossbeam_channel::Sender;
use futures_util::future::join_all;

use super::messages::{Merge, Snapshot, SnapshotRow, SyncChangelog, TakeCheckpoint, Trigger};
use super::metrics::Metrics;
use super::writer::{Emitted, Persist};
use super::PipelineError;
use crate::checkpoint::{Checkpoint, PartitionState};
use crate::counters::{Counters, Subset};
use crate::ratings;

/// Mailbox capacity of the coordinator: above the ingestor's window of requests in flight to
/// it ([`super::ingest::COORDINATOR_WINDOW`]).
pub const MAILBOX: usize = super::ingest::COORDINATOR_WINDOW + 2;

/// What every checkpoint is stamped with.
#[derive(Debug, Clone)]
pub struct Stamps {
    /// Fingerprint of the model.
    pub model: u64,
    /// Subset labels.
    pub subsets: Vec<String>,
    /// The source as configured.
    pub source: String,
}

/// The coordinator.
pub struct Coordinator {
    subsets: Vec<Subset>,
    top: usize,
    rating: super::SnapshotRating,
    writer: Sender<Persist>,
    stamps: Stamps,
    dead_letters: bool,
    metrics: std::sync::Arc<Metrics>,
}

impl Coordinator {
    /// A coordinator that hands snapshots and checkpoints to `writer`; `dead_letters` says
    /// whether the writer keeps dead letters (then it is told at every trigger that those
    /// before it are all sent).
    pub fn new(
        subsets: Vec<Subset>,
        top: usize,
        rating: super::SnapshotRating,
        writer: Sender<Persist>,
        stamps: Stamps,
        dead_letters: bool,
        metrics: std::sync::Arc<Metrics>,
    ) -> Coordinator {
        Coordinator {
            subsets,
            top,
            rating,
            writer,
            stamps,
            dead_letters,
            metrics,
        }
    }

    fn emit(
        &mut self,
        t: Trigger,
        parts: Vec<Counters>,
        started: Instant,
    ) -> Result<(), PipelineError> {
        let mut it = parts.into_iter();
        let mut all = it.next().ok_or(PipelineError::NoShard)?;
        for p in it {
            all.merge(&p);
        }
        let upto: BTreeMap<i32, i64> = t
            .offsets
            .iter()
            .filter_map(|(p, &o)| p.parse().ok().map(|p| (p, o)))
            .collect();
        let snap = snapshot(
            &all,
            &self.subsets,
            self.rating.ranking(self.top),
            &self.rating.intervals,
            t.trigger,
            t.offsets,
        );
        debug_assert_eq!(snap.records, t.records);
        let merge = started.elapsed().as_secs_f64();
        self.metrics.merged(merge);
        self.send(Persist::Snapshot(Box::new(Emitted {
            snapshot: snap,
            by_interval: t.by_interval,
            merge_seconds: merge,
        })))?;
        if self.dead_letters {
            // every shard answered the barrier, so every dead letter before it was sent
            self.send(Persist::Flush(upto))?;
        }
        Ok(())
    }

    fn checkpoint(
        &mut self,
        at: super::messages::CheckpointAt,
        parts: Vec<BTreeMap<i32, Counters>>,
    ) -> Result<(), PipelineError> {
        let mut sums: BTreeMap<i32, Counters> = BTreeMap::new();
        for state in parts {
            for (p, c) in state {
                match sums.get_mut(&p) {
                    Some(sum) => sum.merge(&c),
                    None => {
                        sums.insert(p, c);
                    }
                }
            }
        }
        let mut partitions = BTreeMap::new();
        for (&p, &next_offset) in &at.offsets {
            if let Some(c) = sums.remove(&p) {
                partitions.insert(
                    p,
                    PartitionState {
                        next_offset,
                        counters: c.to_state(),
                    },
                );
            }
        }
        let c = Checkpoint {
            model: self.stamps.model,
            subsets: self.stamps.subsets.clone(),
            source: self.stamps.source.clone(),
            triggers: at.triggers,
            records: at.records,
            records_at_fire: at.records_at_fire,
            partitions,
            written_at: super::rfc3339_now(),
        };
        self.send(Persist::Checkpoint(Box::new(c)))
    }

    /// Hand `p` to the writer; a full queue blocks this arbiter (the coordinator's own) until
    /// the writer catches up: the back-pressure that slows the ingestor through its window.
    fn send(&self, p: Persist) -> Result<(), PipelineError> {
        self.writer
            .send(p)
            .map_err(|_| PipelineError::PersisterStopped)
    }
}

/// The snapshot of merged counters (SPEC 4's top-K diff-rank per subset, SPEC 6's fields),
/// stamped now: the one function both the local coordinator and the global one (scale-out)
/// emit through. With a bootstrap in `intervals` (and counters that kept household groups),
/// each row also carries its intervals and top-K stability, computed here on the
/// coordinator's own arbiter (the writer's bounded queue behind it is the back-pressure), on
/// as many threads as the machine has cores.
pub fn snapshot(
    all: &Counters,
    subsets: &[Subset],
    ranking: ratings::Ranking,
    intervals: &crate::uncertainty::IntervalSettings,
    trigger: u64,
    offsets: std::collections::BTreeMap<String, i64>,
) -> Snapshot {
    let mut r = ratings::Ratings {
        diff_rank: ratings::top_ranked(all, subsets, ranking),
        ..ratings::Ratings::default()
    };
    let threads = crate::source::threads(0);
    crate::uncertainty::annotate(&mut r, all, subsets, ranking, intervals, threads);
    let rows = r.diff_rank;
    let mut by_subset: std::collections::BTreeMap<String, Vec<SnapshotRow>> =
        subsets.iter().map(|s| (s.label(), Vec::new())).collect();
    for r in rows {
        if let Some(v) = by_subset.get_mut(&r.subset) {
            v.push(SnapshotRow {
                cluster: r.cluster,
                rank: r.rank,
                station_num: r.station_num,
                diff_rank: r.diff_rank,
                popularity_rating: r.popularity_rating,
                genpop_rating: r.genpop_rating,
                intervals: r.intervals,
                index: (ranking.rank_by == ratings::RankBy::Index).then_some(r.index),
            });
        }
    }
    Snapshot {
        trigger,
        records: all.records,
        valid: all.valid,
        malformed: all.malformed.total(),
        malformed_by_kind: all
            .malformed
            .by_kind()
            .filter(|&(_, n)| n > 0)
            .map(|(k, n)| (k.to_string(), n))
            .collect(),
        offsets,
        emitted_at: super::rfc3339_now(),
        subsets: by_subset,
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
    }
}

/// Every shard's answer, or the error that one of them is gone.
async fn answers<T>(
    parts: Vec<futures_channel::oneshot::Receiver<T>>,
) -> Result<Vec<T>, PipelineError> {
    join_all(parts)
        .await
        .into_iter()
        .collect::<Result<Vec<T>, _>>()
        .map_err(|_| PipelineError::ShardGone)
}

impl Handler<Merge> for Coordinator {
    type Result = AtomicResponse<Self, Result<(), PipelineError>>;

    fn handle(&mut self, m: Merge, _ctx: &mut Self::Context) -> Self::Result {
        let t = m.trigger;
        let waited = answers(m.parts);
        // the merge time starts when the last shard answered: the time the barrier spent
        // behind batches in the mailboxes is counting, not merging
        AtomicResponse::new(Box::pin(
            wrap_future::<_, Self>(waited)
                .map(move |parts, act, _ctx| act.emit(t, parts?, Instant::now())),
        ))
    }
}

impl Handler<TakeCheckpoint> for Coordinator {
    type Result = AtomicResponse<Self, Result<(), PipelineError>>;

    fn handle(&mut self, m: TakeCheckpoint, _ctx: &mut Self::Context) -> Self::Result {
        let at = m.at;
        AtomicResponse::new(Box::pin(
            wrap_future::<_, Self>(answers(m.parts))
                .map(move |parts, act, _ctx| act.checkpoint(at, parts?)),
        ))
    }
}

impl Handler<SyncChangelog> for Coordinator {
    type Result = Result<(), PipelineError>;

    fn handle(&mut self, m: SyncChangelog, _ctx: &mut Self::Context) -> Self::Result {
        self.send(Persist::Sync(m.reply))
    }
}
