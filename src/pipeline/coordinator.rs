//! The coordinator actor: on every trigger it asks every shard for its counters, merges them
//! only when all have answered, computes SPEC 4's top-K diff-rank with the pure core, hands
//! the snapshot to the sinks and keeps it as the latest for `GET /snapshot`.

use std::time::Instant;

use actix::fut::{wrap_future, ActorFutureExt};
use actix::{Actor, Addr, AtomicResponse, Context, Handler};
use futures_util::future::join_all;
use tracing::info;

use super::messages::{Collect, Snapshot, SnapshotRow, Trigger};
use super::metrics::Metrics;
use super::shard::Shard;
use super::{PipelineError, SnapshotSink};
use crate::counters::{Counters, Subset};
use crate::ratings;

/// The coordinator.
pub struct Coordinator {
    shards: Vec<Addr<Shard>>,
    subsets: Vec<Subset>,
    top: usize,
    sinks: Vec<Box<dyn SnapshotSink>>,
    metrics: std::sync::Arc<Metrics>,
}

impl Coordinator {
    /// A coordinator over these shards, emitting to these sinks.
    pub fn new(
        shards: Vec<Addr<Shard>>,
        subsets: Vec<Subset>,
        top: usize,
        sinks: Vec<Box<dyn SnapshotSink>>,
        metrics: std::sync::Arc<Metrics>,
    ) -> Coordinator {
        Coordinator {
            shards,
            subsets,
            top,
            sinks,
            metrics,
        }
    }

    fn emit(
        &mut self,
        t: Trigger,
        parts: Vec<Counters>,
        started: Instant,
    ) -> Result<Snapshot, PipelineError> {
        let mut it = parts.into_iter();
        let mut all = it.next().ok_or(PipelineError::NoShard)?;
        for p in it {
            all.merge(&p);
        }
        let snap = snapshot(&all, &self.subsets, self.top, t.trigger, t.offsets);
        debug_assert_eq!(snap.records, t.records);
        let merge = started.elapsed().as_secs_f64();
        self.metrics.merged(merge);
        for s in &mut self.sinks {
            s.emit(&snap)?;
        }
        if let Ok(json) = serde_json::to_string(&snap) {
            self.metrics.set_latest(json.into());
        }
        self.metrics
            .triggers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        info!(
            trigger = snap.trigger,
            records = snap.records,
            valid = snap.valid,
            malformed = snap.malformed,
            by_interval = t.by_interval,
            merge_ms = merge * 1000.0,
            "snapshot emitted"
        );
        Ok(snap)
    }
}

/// The snapshot of merged counters (SPEC 4's top-K diff-rank per subset, SPEC 6's fields),
/// stamped now: the one function both the local coordinator and the global one (scale-out)
/// emit through.
pub fn snapshot(
    all: &Counters,
    subsets: &[Subset],
    top: usize,
    trigger: u64,
    offsets: std::collections::BTreeMap<String, i64>,
) -> Snapshot {
    let rows = ratings::top_diff_rank(all, subsets, top);
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
}

impl Handler<Trigger> for Coordinator {
    type Result = AtomicResponse<Self, Result<Snapshot, PipelineError>>;

    fn handle(&mut self, t: Trigger, _ctx: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        let asks: Vec<_> = self
            .shards
            .iter()
            .map(|s| s.send(Collect { trigger: t.trigger }))
            .collect();
        AtomicResponse::new(Box::pin(wrap_future::<_, Self>(join_all(asks)).map(
            move |answers, act, _ctx| {
                let parts = answers
                    .into_iter()
                    .collect::<Result<Vec<Counters>, _>>()
                    .map_err(|e| PipelineError::Mailbox(e.to_string()))?;
                act.emit(t, parts, started)
            },
        )))
    }
}
