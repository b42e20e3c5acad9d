//! Every message that moves between the pipeline's actors, in one file. Hot paths move
//! batches (an arena of record bytes with their ends), never single records.

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
        let mut out = Vec::with_capacity(self.ends.len());
        let mut start = 0;
        for &end in &self.ends {
            out.push(&self.data[start..end]);
            start = end;
        }
        out
    }
}

/// Count these records (to a shard). Answered once counted, so the sender knows.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Count(pub RecordBatch);

/// Hand over your counters, summed over your input partitions (to a shard, at a trigger).
#[derive(Message)]
#[rtype(result = "Counters")]
pub struct Collect {
    /// The trigger asking.
    pub trigger: u64,
}

/// A trigger fired (to the coordinator): every record up to `records` has been counted.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Snapshot, super::PipelineError>")]
pub struct Trigger {
    /// 1-based trigger number.
    pub trigger: u64,
    /// Records consumed so far, malformed included.
    pub records: u64,
    /// Next offset per input partition.
    pub offsets: std::collections::BTreeMap<String, i64>,
    /// Whether the interval (not the record count) fired it.
    pub by_interval: bool,
}

/// Hand over a copy of your counters per input partition (to a shard): the state that a
/// checkpoint stores and that moves with a partition.
#[derive(Message)]
#[rtype(result = "std::collections::BTreeMap<i32, Counters>")]
pub struct State;

/// Take over these input partitions' counters (to a shard, when the consumer group assigns
/// partitions whose state the changelog held).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Adopt(pub std::collections::BTreeMap<i32, Counters>);

/// Forget these input partitions' counters (to every shard, once their state is published
/// and the consumer group takes them away).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release(pub Vec<i32>);

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
