//! Every message that moves between the pipeline's actors, in one file. Hot paths move
//! batches (an arena of record bytes with their ends), never single records.

use std::collections::BTreeMap;

use actix::Message;
use serde::{Deserialize, Serialize};

use crate::counters::Counters;

/// Records routed to one shard: their bytes back to back, where each ends, and the input
/// partition of each run of records (a shard keeps its counters per input partition).
#[derive(Debug, Default, Clone)]
pub struct RecordBatch {
    /// The records' bytes.
    pub data: Vec<u8>,
    /// End of each record in `data`.
    pub ends: Vec<usize>,
    /// `(input partition, number of records so far)` at the end of each run of records from
    /// one partition, in order.
    pub runs: Vec<(i32, usize)>,
    /// Offset of each record in its partition (for dead letters).
    pub offsets: Vec<i64>,
}

impl RecordBatch {
    /// Append one record at `offset` of input partition `partition`.
    #[inline]
    pub fn push(&mut self, record: &[u8], partition: i32, offset: i64) {
        self.data.extend_from_slice(record);
        self.ends.push(self.data.len());
        self.offsets.push(offset);
        let n = self.ends.len();
        match self.runs.last_mut() {
            Some((p, end)) if *p == partition => *end = n,
            _ => self.runs.push((partition, n)),
        }
    }

    /// The records of each run: `(partition, index of its first record, records)`.
    pub fn partitions(&self) -> Vec<(i32, usize, Vec<&[u8]>)> {
        let all = self.records();
        let mut out = Vec::with_capacity(self.runs.len());
        let mut from = 0;
        for &(p, end) in &self.runs {
            out.push((p, from, all[from..end].to_vec()));
            from = end;
        }
        out
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The records as slices.
    pub fn records(&self) -> Vec<&[u8]> {
        crate::record::split(&self.data, &self.ends)
    }
}

/// Count these records (to a shard). Answered once counted: the ingestor keeps a few of these
/// in flight per shard and waits for the oldest only when its window is full.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Count(pub RecordBatch);

/// A trigger's barrier (to a shard, behind the batches before the trigger, as a Flink
/// checkpoint barrier travels): hand your counters, summed over your input partitions, to
/// `reply`, which the coordinator awaits. The shard answers the ingestor at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Barrier {
    /// The trigger asking.
    pub trigger: u64,
    /// Where the counters go.
    pub reply: futures_channel::oneshot::Sender<Counters>,
}

/// A checkpoint's barrier (to a shard, behind the batches before the checkpoint): hand a copy
/// of your counters per input partition (the state that a checkpoint stores and that moves
/// with a partition) to `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StateBarrier {
    /// Where the counters go.
    pub reply: futures_channel::oneshot::Sender<BTreeMap<i32, Counters>>,
}

/// Take over these input partitions' counters (to a shard, when the consumer group assigns
/// partitions whose state the changelog held).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Adopt(pub BTreeMap<i32, Counters>);

/// Forget these input partitions' counters (to every shard, once their state is published
/// and the consumer group takes them away).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release(pub Vec<i32>);

/// A trigger fired (to the coordinator): the counters of every record up to `records` arrive
/// on `parts`, one per shard.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), super::PipelineError>")]
pub struct Merge {
    /// What the trigger covers.
    pub trigger: Trigger,
    /// One per shard, answered at the trigger's barrier.
    pub parts: Vec<futures_channel::oneshot::Receiver<Counters>>,
}

/// What a trigger covers.
#[derive(Debug, Clone)]
pub struct Trigger {
    /// 1-based trigger number.
    pub trigger: u64,
    /// Records consumed so far, malformed included.
    pub records: u64,
    /// Next offset per input partition.
    pub offsets: BTreeMap<String, i64>,
    /// Whether the interval (not the record count) fired it.
    pub by_interval: bool,
}

/// Take a checkpoint (to the coordinator): the shards' counters per input partition arrive on
/// `parts`, one per shard; the coordinator sums them, stamps them with `at` and hands the
/// checkpoint to the writer, after the snapshots before it.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), super::PipelineError>")]
pub struct TakeCheckpoint {
    /// Where the ingestor stood.
    pub at: CheckpointAt,
    /// One per shard, answered at the checkpoint's barrier.
    pub parts: Vec<futures_channel::oneshot::Receiver<BTreeMap<i32, Counters>>>,
}

/// Where the ingestor stood when it asked for a checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointAt {
    /// Triggers fired.
    pub triggers: u64,
    /// Records consumed.
    pub records: u64,
    /// Records at the last trigger.
    pub records_at_fire: u64,
    /// Next offset per input partition.
    pub offsets: BTreeMap<i32, i64>,
}

/// Wait until the changelog acknowledged every entry published so far (to the coordinator,
/// which asks the writer behind the checkpoints before it); answered on `reply`.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), super::PipelineError>")]
pub struct SyncChangelog {
    /// The writer's answer.
    pub reply: futures_channel::oneshot::Sender<Result<(), String>>,
}

/// Records from a source (to the ingestor), with their positions.
#[derive(Message)]
#[rtype(result = "Result<(), super::PipelineError>")]
pub struct Ingest(pub crate::source::kafka::PolledBatch);

/// The source ended or a stop was asked (to the ingestor): if `last_trigger`, fire the last
/// trigger and take the last checkpoint; answer once every shard and the coordinator have
/// done all they were sent.
#[derive(Message)]
#[rtype(result = "Result<Progress, super::PipelineError>")]
pub struct Finish {
    /// Whether a last trigger is due for records after the last one (not in scale-out, where
    /// the group reader published every partition's state when it left).
    pub last_trigger: bool,
}

/// Where the ingestor ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Records consumed.
    pub records: u64,
    /// Triggers fired.
    pub triggers: u64,
}

/// The consumer group takes these partitions away (to the ingestor): count what came before,
/// publish their state, wait for the changelog, forget them; answered when done.
#[derive(Message)]
#[rtype(result = "Result<(), super::PipelineError>")]
pub struct Revoke(pub Vec<i32>);

/// The consumer group gives these partitions, with the state the changelog held for them (to
/// the ingestor); answered when the shards hold it.
#[derive(Message)]
#[rtype(result = "Result<(), super::PipelineError>")]
pub struct Assign(pub BTreeMap<i32, crate::checkpoint::PartitionState>);

/// One row of a snapshot (SPEC 6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRow {
    /// Cluster.
    pub cluster: u32,
    /// Rank inside the cluster, 1-based.
    pub rank: u32,
    /// Station number.
    pub station_num: String,
    /// Popularity minus general population.
    pub diff_rank: f64,
    /// The cluster's popularity rating.
    pub popularity_rating: f64,
    /// The general population's rating.
    pub genpop_rating: f64,
    /// The intervals and top-K stability (with `pipeline.bootstrap` only), as fields of the
    /// row.
    #[serde(flatten)]
    pub intervals: crate::ratings::Intervals,
    /// `100 · popularity / genpop`, when the top-K is ranked by it (`pipeline.rank_by =
    /// "index"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<f64>,
}

/// What every trigger emits (one JSON line of the snapshots file, SPEC 6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// 1-based trigger number.
    pub trigger: u64,
    /// Records consumed, malformed included.
    pub records: u64,
    /// Valid records.
    pub valid: u64,
    /// Malformed records.
    pub malformed: u64,
    /// Malformed records by kind (kinds with none left out; absent when there are none).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub malformed_by_kind: std::collections::BTreeMap<String, u64>,
    /// Next offset per input partition.
    pub offsets: std::collections::BTreeMap<String, i64>,
    /// UTC time of emission, RFC 3339.
    pub emitted_at: String,
    /// Top-K rows per configured subset, by cluster then rank.
    pub subsets: std::collections::BTreeMap<String, Vec<SnapshotRow>>,
}
