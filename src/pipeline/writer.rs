//! The writer: one thread that does the daemon's blocking output, in the order it happened,
//! off every actor's event loop. Shards hand it the malformed records they met (for the
//! dead-letter sink, with their source position); the coordinator hands it each trigger's
//! snapshot (for the snapshot sinks: JSON lines, stdout, a Kafka topic) and each checkpoint
//! (for `state.dir` and, in scale-out, the changelog topic). Because all of it goes through one
//! bounded channel, a snapshot is written before the checkpoint that follows it, every dead
//! letter of the records a checkpoint counts is written and synced before that checkpoint is,
//! and a writer that falls behind (a slow disk, a slow broker) slows the pipeline instead of
//! queueing without bound.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tracing::info;

use super::messages::Snapshot;
use super::metrics::Metrics;
use super::scaleout::Changelog;
use super::{PipelineError, SnapshotSink};
use crate::checkpoint::{Checkpoint, Store};
use crate::sink::dead_letter::dead_letter_file;
pub use crate::sink::dead_letter::{
    parse_position, position, DeadLetterSink, DeadLetterTarget, DeadRecord, Delivery,
};

/// Capacity of the writer's queue, in messages.
pub const QUEUE: usize = 16;

/// A snapshot to emit, with what its log line says.
#[derive(Debug)]
pub struct Emitted {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Whether the interval (not the record count) fired it.
    pub by_interval: bool,
    /// How long the merge took.
    pub merge_seconds: f64,
}

/// What the writer is asked to do.
#[derive(Debug)]
pub enum Persist {
    /// Keep these malformed records.
    DeadLetters(Vec<DeadRecord>),
    /// Emit this snapshot to every sink.
    Snapshot(Box<Emitted>),
    /// Answer once the changelog acknowledged every entry published so far.
    Sync(futures_channel::oneshot::Sender<Result<(), String>>),
    /// Write this checkpoint (after every dead letter sent before it).
    Checkpoint(Box<Checkpoint>),
    /// Every dead letter of the records before these next offsets (a trigger's) has been
    /// sent: write them, in (partition, offset) order.
    Flush(BTreeMap<i32, i64>),
    /// Sync and stop.
    Finish,
}

/// Where the writer writes.
pub struct Outputs {
    /// Snapshot sinks.
    pub sinks: Vec<Box<dyn SnapshotSink>>,
    /// The checkpoint store (`state.dir`).
    pub store: Option<Store>,
    /// Where malformed records go.
    pub dead: Option<DeadLetterTarget>,
    /// Scale-out: the changelog every checkpoint is published to, per partition.
    pub changelog: Option<Changelog>,
}

/// The running writer.
pub struct Persister {
    tx: Sender<Persist>,
    handle: JoinHandle<Result<Option<Snapshot>, PipelineError>>,
}

impl Persister {
    /// Start the thread. `resume` is the restored checkpoint's offsets (dead letters past
    /// them are dropped from a file sink: the restored run meets those records again).
    /// When it fails it sets `stop`, so that the source stops too.
    pub fn start(
        out: Outputs,
        resume: Option<&BTreeMap<i32, i64>>,
        file_source: bool,
        metrics: Arc<Metrics>,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Persister, PipelineError> {
        let sink = match &out.dead {
            Some(t) => Some(DeadLetterSink::open(t, resume)?),
            None => None,
        };
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let handle = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                let w = Writer {
                    sinks: out.sinks,
                    store: out.store,
                    sink,
                    changelog: out.changelog,
                    file_source,
                    last: None,
                };
                let mut finished = false;
                let r = w.run(&rx, &metrics, &mut finished);
                if let (Err(e), false) = (&r, finished) {
                    stop.store(true, Ordering::Relaxed);
                    // keep taking what the pipeline sends until it finishes, so that nothing
                    // waits for an answer a dead writer would never give (a revocation's
                    // changelog sync), and sends never block on a full queue
                    let why = e.to_string();
                    while let Ok(msg) = rx.recv() {
                        match msg {
                            Persist::Sync(reply) => {
                                let _ = reply.send(Err(why.clone()));
                            }
                            Persist::Finish => break,
                            _ => {}
                        }
                    }
                }
                r
            })
            .map_err(|source| PipelineError::Spawn {
                what: "writer",
                source,
            })?;
        Ok(Persister { tx, handle })
    }

    /// A sender for the shards and the coordinator.
    pub fn sender(&self) -> Sender<Persist> {
        self.tx.clone()
    }

    /// Sync everything and stop; the last snapshot emitted.
    pub fn finish(self) -> Result<Option<Snapshot>, PipelineError> {
        let _ = self.tx.send(Persist::Finish);
        match self.handle.join() {
            Ok(r) => r,
            Err(_) => Err(PipelineError::Runtime("the writer panicked".into())),
        }
    }
}

struct Writer {
    sinks: Vec<Box<dyn SnapshotSink>>,
    store: Option<Store>,
    sink: Option<DeadLetterSink>,
    changelog: Option<Changelog>,
    file_source: bool,
    last: Option<Snapshot>,
}

impl Writer {
    /// `finished` is set once [`Persist::Finish`] came (the last writes follow it).
    fn run(
        mut self,
        rx: &Receiver<Persist>,
        metrics: &Metrics,
        finished: &mut bool,
    ) -> Result<Option<Snapshot>, PipelineError> {
        // The shards send their dead letters as they count, in an order that differs from run
        // to run, and go on counting past a trigger's barrier before the coordinator says the
        // trigger is whole; they wait here and those before the trigger's (or checkpoint's)
        // offsets are written in (partition, offset) order then, and the rest at the stop, so
        // that the file is the same on every run. Past WAITING records they are written early.
        const WAITING: usize = 1 << 16;
        let mut waiting: Vec<DeadRecord> = Vec::new();
        let file_source = self.file_source;
        let write_waiting = |sink: &mut Option<DeadLetterSink>,
                             waiting: &mut Vec<DeadRecord>,
                             upto: Option<&BTreeMap<i32, i64>>|
         -> Result<(), PipelineError> {
            let Some(s) = sink else {
                waiting.clear();
                return Ok(());
            };
            waiting.sort_by_key(|r| (r.partition, r.offset));
            let before = |r: &DeadRecord| {
                upto.is_none_or(|u| u.get(&r.partition).is_some_and(|&next| r.offset < next))
            };
            let mut kept = Vec::new();
            let mut written = 0u64;
            for r in waiting.drain(..) {
                if before(&r) {
                    s.write(&r, file_source)?;
                    written += 1;
                } else {
                    kept.push(r);
                }
            }
            *waiting = kept;
            metrics.dead_letters.fetch_add(written, Ordering::Relaxed);
            Ok(())
        };
        while let Ok(msg) = rx.recv() {
            match msg {
                Persist::DeadLetters(records) => {
                    if self.sink.is_some() {
                        waiting.extend(records);
                        if waiting.len() >= WAITING {
                            write_waiting(&mut self.sink, &mut waiting, None)?;
                        }
                    }
                }
                Persist::Snapshot(e) => self.emit(*e, metrics)?,
                Persist::Flush(upto) => {
                    write_waiting(&mut self.sink, &mut waiting, Some(&upto))?;
                    // a file gets the trigger's dead letters now (a failed write later cuts it
                    // back to here, not to its header)
                    if let Some(DeadLetterSink::File(d)) = &mut self.sink {
                        d.flush().map_err(dead_letter_file)?;
                    }
                }
                Persist::Checkpoint(c) => {
                    let t = Instant::now();
                    write_waiting(&mut self.sink, &mut waiting, Some(&c.offsets()))?;
                    if let Some(s) = &mut self.sink {
                        s.sync()?;
                    }
                    if let Some(changelog) = &mut self.changelog {
                        changelog.publish(&c)?;
                        metrics.last_checkpoint.mark();
                        // scale-out: the pipeline's triggers are its changelog entries
                        metrics.triggered(c.records);
                    }
                    if let Some(st) = &mut self.store {
                        st.write(&c)?;
                        metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
                        metrics
                            .checkpoint_nanos
                            .store(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        metrics.last_checkpoint.mark();
                    }
                    if self.changelog.is_some() || self.store.is_some() {
                        // what the state covers, for the consumer group's tools
                        if let Some(k) = metrics.kafka() {
                            k.cover(c.offsets());
                        }
                    }
                }
                Persist::Sync(reply) => {
                    let r = match &self.changelog {
                        Some(c) => c.sync(Duration::from_secs(30)),
                        None => Ok(()),
                    };
                    let _ = reply.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                    r?;
                }
                Persist::Finish => {
                    *finished = true;
                    break;
                }
            }
        }
        write_waiting(&mut self.sink, &mut waiting, None)?;
        if let Some(s) = &mut self.sink {
            s.sync()?;
        }
        Ok(self.last)
    }

    /// Emit a snapshot to every sink; once they all took it, it is the latest for
    /// `GET /snapshot`.
    fn emit(&mut self, e: Emitted, metrics: &Metrics) -> Result<(), PipelineError> {
        let snap = e.snapshot;
        for s in &mut self.sinks {
            s.emit(&snap)?;
        }
        // in scale-out a process's own snapshot covers its partitions only: the global
        // coordinator's is the one served
        if self.changelog.is_none() {
            if let Ok(json) = serde_json::to_string(&snap) {
                metrics.set_latest(json.into());
            }
        }
        metrics.triggers.fetch_add(1, Ordering::Relaxed);
        metrics.triggered(snap.records);
        if self.store.is_none() && self.changelog.is_none() {
            // no checkpoint: the snapshot is what covers the records
            if let Some(k) = metrics.kafka() {
                k.cover(
                    snap.offsets
                        .iter()
                        .filter_map(|(p, &o)| p.parse().ok().map(|p| (p, o)))
                        .collect(),
                );
            }
        }
        info!(
            trigger = snap.trigger,
            records = snap.records,
            valid = snap.valid,
            malformed = snap.malformed,
            by_interval = e.by_interval,
            merge_ms = e.merge_seconds * 1000.0,
            "snapshot emitted"
        );
        self.last = Some(snap);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Malformed;

    #[test]
    fn regression_a_writer_failing_after_finish_still_ends() {
        // the last writes come after Finish; a failure there sent the writer back to wait for
        // another Finish that never came, and the daemon hung at its exit
        let out = Outputs {
            sinks: Vec::new(),
            store: None,
            dead: Some(DeadLetterTarget::File("/dev/full".into())),
            changelog: None,
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w = Persister::start(out, None, false, Arc::new(Metrics::new(1)), stop).unwrap();
        let dead = DeadRecord {
            partition: 0,
            offset: 1,
            kind: Malformed::Empty,
            record: vec![b'x'; 100],
        };
        w.sender().send(Persist::DeadLetters(vec![dead])).unwrap();
        let e = w.finish().unwrap_err();
        assert!(e.to_string().contains("/dev/full"), "{e}");
    }

    #[test]
    fn regression_dead_letters_past_a_trigger_wait_for_their_own() {
        // shards go on counting past a trigger's barrier, so the dead letter of a record after
        // the trigger (offset 12) may reach the writer before one before it (offset 3) and
        // before the trigger is whole; written in order, it once came before offset 11
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.tsv");
        let out = Outputs {
            sinks: Vec::new(),
            store: None,
            dead: Some(DeadLetterTarget::File(path.clone())),
            changelog: None,
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let metrics = Arc::new(Metrics::new(1));
        let w = Persister::start(out, None, false, metrics.clone(), stop).unwrap();
        let dead = |offset: i64| DeadRecord {
            partition: 0,
            offset,
            kind: Malformed::Empty,
            record: Vec::new(),
        };
        let tx = w.sender();
        tx.send(Persist::DeadLetters(vec![dead(12)])).unwrap();
        tx.send(Persist::DeadLetters(vec![dead(3)])).unwrap();
        tx.send(Persist::Flush(BTreeMap::from([(0, 10)]))).unwrap();
        tx.send(Persist::DeadLetters(vec![dead(11)])).unwrap();
        drop(tx);
        assert!(w.finish().unwrap().is_none());
        let text = std::fs::read_to_string(&path).unwrap();
        let offsets: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("partition 0 offset "))
            .map(|l| l.split('\t').next().unwrap_or(""))
            .collect();
        assert_eq!(offsets, ["3", "11", "12"]);
        assert_eq!(metrics.dead_letters.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn regression_a_failed_writer_still_answers_a_changelog_sync() {
        // a revocation waits for the writer's answer to its sync; a writer that had failed
        // once left the request in its queue unanswered, and the revocation waited forever
        struct Broken;
        impl SnapshotSink for Broken {
            fn emit(&mut self, _: &Snapshot) -> Result<(), PipelineError> {
                Err(PipelineError::Stdout(std::io::Error::other("disk gone")))
            }
        }
        let out = Outputs {
            sinks: vec![Box::new(Broken)],
            store: None,
            dead: None,
            changelog: None,
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w =
            Persister::start(out, None, false, Arc::new(Metrics::new(1)), stop.clone()).unwrap();
        let snapshot = crate::pipeline::coordinator::snapshot(
            &crate::counters::Counters::new(1, 1),
            &[crate::counters::Subset::All],
            crate::ratings::Ranking::top(7),
            &crate::pipeline::SnapshotRating::default().intervals,
            1,
            BTreeMap::new(),
        );
        let tx = w.sender();
        tx.send(Persist::Snapshot(Box::new(Emitted {
            snapshot,
            by_interval: false,
            merge_seconds: 0.0,
        })))
        .unwrap();
        let (reply, answer) = futures_channel::oneshot::channel();
        tx.send(Persist::Sync(reply)).unwrap();
        let answered =
            futures_executor::block_on(answer).expect("an answer, not a dropped request");
        assert!(answered.unwrap_err().contains("disk gone"));
        assert!(
            stop.load(Ordering::Relaxed),
            "a failed writer stops the source"
        );
        drop(tx);
        let e = w.finish().unwrap_err();
        assert!(e.to_string().contains("disk gone"), "{e}");
    }
}
