//! The ingestor: reads records from a source, routes each by a stable hash of its household
//! id to a shard, sends the shards their batches through bounded mailboxes (waiting for them,
//! so a slow shard slows the reader instead of growing memory), and fires a trigger to the
//! coordinator after exactly every `trigger_records` records and, when an interval is set,
//! whenever that much time passed since the last trigger and records came since.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use futures_util::future::join_all;
use tracing::debug;

use super::coordinator::Coordinator;
use super::messages::{Count, RecordBatch, Snapshot, State, Trigger};
use super::metrics::Metrics;
use super::persist::Persist;
use super::shard::Shard;
use super::PipelineError;
use crate::checkpoint::{Checkpoint, PartitionState};
use crate::counters::{household_hash, Counters};
use crate::source::group::GroupEvent;
use crate::source::kafka::PolledBatch;
use std::sync::atomic::{AtomicBool, Ordering};

/// Records buffered across all shards before they are sent.
pub const BATCH: usize = 8192;

/// The shard of a raw record: a stable hash of its household id (the last field), so that a
/// household always lands on the same shard; records without a readable id go to shard 0
/// (they are malformed, and a shard counts them as such).
#[inline]
pub fn route(record: &[u8], shards: usize) -> usize {
    let record = record.strip_suffix(b"\r").unwrap_or(record);
    let tail = match memchr::memrchr(b',', record) {
        Some(p) => &record[p + 1..],
        None => return 0,
    };
    match std::str::from_utf8(tail)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        Some(id) => (household_hash(id) % shards as u64) as usize,
        None => 0,
    }
}

/// Routes records and fires triggers.
pub struct Router {
    shards: Vec<Addr<Shard>>,
    coordinator: Addr<Coordinator>,
    trigger_records: u64,
    interval: Option<Duration>,
    last_fire: Instant,
    records_at_fire: u64,
    batches: Vec<RecordBatch>,
    pending: usize,
    /// The live metrics it updates.
    pub metrics: Arc<Metrics>,
    /// Records consumed.
    pub records: u64,
    /// Triggers fired.
    pub triggers: u64,
    /// Next offset per input partition.
    pub offsets: BTreeMap<i32, i64>,
    /// The last snapshot emitted.
    pub last: Option<Snapshot>,
    checkpoints: Option<Checkpoints>,
    /// Scale-out: the changelog every checkpoint is published to, per partition.
    changelog: Option<super::cluster::Changelog>,
    /// Whether triggers emit snapshots here (not when a global coordinator does).
    local_snapshots: bool,
    /// The persister, told at every trigger that the dead letters before it are all sent.
    dead_letters: Option<crossbeam_channel::Sender<Persist>>,
}

/// When and how the router checkpoints.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    /// The persister (none when the changelog is where the state goes).
    pub tx: Option<crossbeam_channel::Sender<Persist>>,
    /// Also between triggers, this often.
    pub interval: Option<Duration>,
    /// Stamped on every checkpoint: model fingerprint, subset labels, source.
    pub model: u64,
    /// See `model`.
    pub subsets: Vec<String>,
    /// See `model`.
    pub source: String,
    /// When the last checkpoint was taken.
    pub last: Instant,
    /// Records at the last checkpoint.
    pub records_at_last: u64,
}

impl Router {
    /// A router over these shards: a trigger every `trigger_records` records and, if
    /// `interval` is set, every `interval` in which records came.
    pub fn new(
        shards: Vec<Addr<Shard>>,
        coordinator: Addr<Coordinator>,
        trigger_records: u64,
        interval: Option<Duration>,
        metrics: Arc<Metrics>,
    ) -> Router {
        let n = shards.len();
        Router {
            shards,
            coordinator,
            trigger_records: trigger_records.max(1),
            interval,
            last_fire: Instant::now(),
            records_at_fire: 0,
            batches: vec![RecordBatch::default(); n],
            pending: 0,
            metrics,
            records: 0,
            triggers: 0,
            offsets: BTreeMap::new(),
            last: None,
            checkpoints: None,
            changelog: None,
            local_snapshots: true,
            dead_letters: None,
        }
    }

    /// Go on from a restored checkpoint: its record and trigger counts and offsets.
    pub fn resume(&mut self, c: &Checkpoint) {
        self.records = c.records;
        self.triggers = c.triggers;
        self.records_at_fire = c.records_at_fire;
        self.offsets = c.offsets();
        if let Some(k) = &mut self.checkpoints {
            k.records_at_last = c.records;
        }
        self.metrics
            .triggers
            .store(c.triggers, std::sync::atomic::Ordering::Relaxed);
        for (&p, &o) in &self.offsets {
            self.metrics.set_next(p, o);
        }
    }

    /// Tell the persister at every trigger that the dead letters before it are all sent, so
    /// that it writes them in order.
    pub fn dead_letters_to(&mut self, tx: crossbeam_channel::Sender<Persist>) {
        self.dead_letters = Some(tx);
    }

    /// Checkpoint after every trigger (and every `interval` between them) through `k`.
    pub fn checkpoint_with(&mut self, mut k: Checkpoints) {
        k.records_at_last = self.records;
        self.checkpoints = Some(k);
    }

    /// Take a checkpoint now: count everything buffered, collect every shard's counters
    /// per input partition, and hand the sum per partition, with its next offset, to the
    /// persister (which waits for the dead letters before it).
    pub fn checkpoint(&mut self) -> Result<(), PipelineError> {
        if self.checkpoints.is_none() {
            return Ok(());
        }
        self.flush()?;
        let asks: Vec<_> = self.shards.iter().map(|s| s.send(State)).collect();
        let mut sums: BTreeMap<i32, Counters> = BTreeMap::new();
        for state in futures_executor::block_on(join_all(asks)) {
            let state = state.map_err(|e| PipelineError::Mailbox(e.to_string()))?;
            for (p, c) in state {
                match sums.get_mut(&p) {
                    Some(sum) => sum.merge(&c),
                    None => {
                        sums.insert(p, c);
                    }
                }
            }
        }
        let Some(k) = &mut self.checkpoints else {
            return Ok(());
        };
        let mut partitions = BTreeMap::new();
        for (&p, &next_offset) in &self.offsets {
            let counters = match sums.remove(&p) {
                Some(c) => c.to_state(),
                None => continue,
            };
            partitions.insert(
                p,
                PartitionState {
                    next_offset,
                    counters,
                },
            );
        }
        let c = Checkpoint {
            model: k.model,
            subsets: k.subsets.clone(),
            source: k.source.clone(),
            triggers: self.triggers,
            records: self.records,
            records_at_fire: self.records_at_fire,
            partitions,
            written_at: super::rfc3339_now(),
        };
        if let Some(changelog) = &mut self.changelog {
            changelog.publish(&c)?;
        }
        if let Some(tx) = &k.tx {
            tx.send(Persist::Checkpoint(Box::new(c)))
                .map_err(|_| PipelineError::PersisterStopped)?;
        }
        k.last = Instant::now();
        k.records_at_last = self.records;
        Ok(())
    }

    fn checkpoint_due(&self) -> bool {
        self.checkpoints.as_ref().is_some_and(|k| {
            self.records > k.records_at_last && k.interval.is_some_and(|iv| k.last.elapsed() >= iv)
        })
    }

    /// Scale-out: publish every checkpoint (each trigger's) to `changelog`, one entry per
    /// input partition, and emit no snapshot here (the global coordinator does).
    pub fn publish_to(&mut self, changelog: super::cluster::Changelog) {
        self.changelog = Some(changelog);
        self.local_snapshots = false;
    }

    /// The consumer group takes `partitions` away: count what is buffered, publish the state
    /// of every partition owned, wait until the changelog has it, then forget `partitions`.
    pub fn revoke(&mut self, partitions: &[i32]) -> Result<(), PipelineError> {
        self.flush()?;
        self.checkpoint()?;
        if let Some(c) = &self.changelog {
            c.sync(Duration::from_secs(30))?;
        }
        let asks: Vec<_> = self
            .shards
            .iter()
            .map(|s| s.send(super::messages::Release(partitions.to_vec())))
            .collect();
        for r in futures_executor::block_on(join_all(asks)) {
            r.map_err(|e| PipelineError::Mailbox(e.to_string()))?;
        }
        for p in partitions {
            self.offsets.remove(p);
            self.metrics.forget(*p);
        }
        Ok(())
    }

    /// The consumer group gives these partitions, with the state the changelog held for
    /// them: their counters go to the shards (partition p to shard p mod shards) and their
    /// offsets here.
    pub fn adopt(
        &mut self,
        states: BTreeMap<i32, PartitionState>,
        shape: (usize, usize),
    ) -> Result<(), PipelineError> {
        let n = self.shards.len();
        let mut per_shard = vec![BTreeMap::new(); n];
        for (p, st) in states {
            let c = Counters::from_state(&st.counters, shape.0, shape.1)
                .map_err(|e| PipelineError::Restore(format!("partition {p}: {e}")))?;
            per_shard[p.rem_euclid(n as i32) as usize].insert(p, c);
            self.offsets.insert(p, st.next_offset);
            self.metrics.set_next(p, st.next_offset);
        }
        let asks: Vec<_> = per_shard
            .into_iter()
            .enumerate()
            .filter(|(_, m)| !m.is_empty())
            .map(|(i, m)| self.shards[i].send(super::messages::Adopt(m)))
            .collect();
        for r in futures_executor::block_on(join_all(asks)) {
            r.map_err(|e| PipelineError::Mailbox(e.to_string()))?;
        }
        Ok(())
    }

    /// Take one record at `(partition, offset)`.
    #[inline]
    pub fn push(
        &mut self,
        record: &[u8],
        partition: i32,
        offset: i64,
    ) -> Result<(), PipelineError> {
        let s = route(record, self.shards.len());
        self.batches[s].push(record, partition, offset);
        self.pending += 1;
        self.records += 1;
        match self.offsets.get_mut(&partition) {
            Some(o) => *o = offset + 1,
            None => {
                self.offsets.insert(partition, offset + 1);
            }
        }
        if self.records % self.trigger_records == 0 {
            self.fire(false)?;
        } else if self.pending >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Fire an interval trigger if the interval has passed and records came since the last
    /// trigger (called between batches and when the source is idle).
    pub fn tick(&mut self) -> Result<(), PipelineError> {
        if let Some(iv) = self.interval {
            if self.last_fire.elapsed() >= iv {
                if self.records > self.records_at_fire {
                    self.fire(true)?;
                } else {
                    self.last_fire = Instant::now();
                }
            }
        }
        if self.checkpoint_due() {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Send every buffered batch and wait until each shard has counted it.
    pub fn flush(&mut self) -> Result<(), PipelineError> {
        if self.pending == 0 {
            return Ok(());
        }
        let mut sends = Vec::new();
        for (s, b) in self.batches.iter_mut().enumerate() {
            if !b.is_empty() {
                self.metrics.queue(s, b.len() as i64);
                sends.push(self.shards[s].send(Count(std::mem::take(b))));
            }
        }
        for r in futures_executor::block_on(join_all(sends)) {
            r.map_err(|e| PipelineError::Mailbox(e.to_string()))?;
        }
        self.pending = 0;
        self.metrics
            .records
            .store(self.records, std::sync::atomic::Ordering::Relaxed);
        for (&p, &o) in &self.offsets {
            self.metrics.set_next(p, o);
        }
        Ok(())
    }

    /// Flush, then fire a trigger and wait for its snapshot.
    pub fn fire(&mut self, by_interval: bool) -> Result<(), PipelineError> {
        self.fire_then(by_interval, true)
    }

    fn fire_then(&mut self, by_interval: bool, checkpoint: bool) -> Result<(), PipelineError> {
        self.flush()?;
        self.triggers += 1;
        if !self.local_snapshots {
            self.last_fire = Instant::now();
            self.records_at_fire = self.records;
            return self.checkpoint();
        }
        let t = Trigger {
            trigger: self.triggers,
            records: self.records,
            offsets: self
                .offsets
                .iter()
                .map(|(p, o)| (p.to_string(), *o))
                .collect(),
            by_interval,
        };
        let snap = futures_executor::block_on(self.coordinator.send(t))
            .map_err(|e| PipelineError::Mailbox(e.to_string()))??;
        self.last = Some(snap);
        if let Some(tx) = &self.dead_letters {
            // the shards answered the trigger, so every dead letter before it was sent
            tx.send(Persist::Flush)
                .map_err(|_| PipelineError::PersisterStopped)?;
        }
        self.last_fire = Instant::now();
        self.records_at_fire = self.records;
        if checkpoint {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// The end of the source or a stop: a last snapshot only if records came after the last
    /// trigger. With checkpoints on, the checkpoint is taken before that snapshot, at the
    /// last trigger's number: a restart (after a stop, or with more records in the topic)
    /// goes on with the numbers of a run that never stopped (the next record trigger is still
    /// the next multiple of `trigger.records`), and the last snapshot, past the checkpoint,
    /// is dropped from the JSON-lines file at the restart like any snapshot after the
    /// checkpoint, and emitted again with the records that came since.
    pub fn finish(&mut self) -> Result<(), PipelineError> {
        self.metrics
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let partial = self.local_snapshots
            && self.checkpoints.is_some()
            && self.records > self.records_at_fire;
        if partial {
            self.checkpoint()?;
            self.fire_then(false, false)?;
        } else if self.records > self.records_at_fire {
            self.fire(false)?;
        } else if self
            .checkpoints
            .as_ref()
            .is_some_and(|k| self.records > k.records_at_last)
        {
            self.checkpoint()?;
        }
        Ok(())
    }
}

/// Feed a file source (one record a line, plain or gzip) through the router, to its end or
/// until `stop` is set.
pub fn file(path: &Path, router: &mut Router, stop: &AtomicBool) -> Result<(), PipelineError> {
    let opened = crate::source::open(path)?;
    let mut r = BufReader::with_capacity(1 << 20, opened.reader);
    let mut line = Vec::with_capacity(256);
    let mut offset = 0i64;
    // a restored run goes on after the lines its checkpoint counted
    let resume_at = router.offsets.get(&0).copied().unwrap_or(0);
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(|e| crate::source::read_error(path, None, e))?;
        if n == 0 {
            break;
        }
        if offset < resume_at {
            offset += 1;
            continue;
        }
        let rec = line.strip_suffix(b"\n").unwrap_or(&line);
        let rec = rec.strip_suffix(b"\r").unwrap_or(rec);
        router.push(rec, 0, offset)?;
        offset += 1;
        if offset % 4096 == 0 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            router.tick()?;
        }
    }
    if offset < resume_at {
        return Err(PipelineError::Read {
            source_name: path.display().to_string(),
            message: format!(
                "the checkpoint counted {resume_at} lines but the file has only {offset}"
            ),
        });
    }
    router.finish()?;
    debug!(
        records = router.records,
        triggers = router.triggers,
        "file source done"
    );
    Ok(())
}

/// Push every record of a polled batch, at its position.
fn push_polled(router: &mut Router, batch: &PolledBatch) -> Result<(), PipelineError> {
    let mut start = 0;
    for (&end, &(p, o)) in batch.ends.iter().zip(&batch.positions) {
        router.push(&batch.data[start..end], p, o)?;
        start = end;
    }
    Ok(())
}

/// Feed batches polled from Kafka (by [`crate::source::kafka::stream_topic`] on its own
/// thread) through the router until the channel closes; interval triggers are checked
/// between batches and while the topic is idle.
pub fn kafka(
    rx: &crossbeam_channel::Receiver<PolledBatch>,
    router: &mut Router,
) -> Result<(), PipelineError> {
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(batch) => push_polled(router, &batch)?,
            // a quiet topic: count what is buffered now rather than at the next batch
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => router.flush()?,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        router.tick()?;
    }
    router.finish()?;
    debug!(
        records = router.records,
        triggers = router.triggers,
        "kafka source done"
    );
    Ok(())
}

/// Scale-out: feed what the group reader hands on ([`crate::source::group::stream_group`],
/// on its own thread) through the router, in order: records, and the revocations and
/// assignments of partitions, each answered once done.
pub fn group(
    rx: &crossbeam_channel::Receiver<GroupEvent>,
    router: &mut Router,
    shape: (usize, usize),
) -> Result<(), PipelineError> {
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(GroupEvent::Records(batch)) => push_polled(router, &batch)?,
            Ok(GroupEvent::Revoke { partitions, done }) => {
                let r = router.revoke(&partitions);
                let _ = done.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                r?;
            }
            Ok(GroupEvent::Assign { states, done, .. }) => {
                let r = router.adopt(states, shape);
                let _ = done.send(());
                r?;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => router.flush()?,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        router.tick()?;
    }
    // the group reader published every owned partition's state when it left
    debug!(
        records = router.records,
        triggers = router.triggers,
        "group source done"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_stable_and_by_household() {
        let a = route(b"d,1,2,100,p,12345", 16);
        assert_eq!(a, route(b"x,9,9,200,q,12345\r", 16));
        assert_eq!(a, (household_hash(12345) % 16) as usize);
        assert_eq!(route(b"garbage", 16), 0);
        assert_eq!(route(b"d,1,2,100,p,abc", 16), 0);
        assert_eq!(route(b"d,1,2,100,p,7", 1), 0);
    }
}
