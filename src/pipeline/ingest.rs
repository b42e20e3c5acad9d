//! The ingestor: the actor between the sources and the shards. A source thread (the Kafka
//! `BaseConsumer`'s polling thread through its bounded channel, a file reader, a scale-out
//! group member through its [`GroupFeed`], which also asks for the revocations and
//! assignments) hands it batches of records through a [`Feed`], which keeps a few in flight
//! in the ingestor's bounded mailbox. The ingestor routes each record by a stable hash of its
//! household id to a shard ([`Router`], the pure part: batching, trigger and checkpoint
//! decisions) and sends each shard its batches with up to [`WINDOW`] messages in flight, waiting
//! for a shard only when its window is full: the windows, inside bounded mailboxes, do the
//! back-pressure.
//!
//! A trigger is a barrier: after exactly every `trigger_records` records (and, with an interval,
//! whenever that much time passed and records came) the ingestor sends every shard a
//! [`Barrier`] behind the batches before it and hands the coordinator the shards' answers to
//! await, so the coordinator merges counters that cover exactly the records up to the trigger
//! while the ingestor goes on routing. A checkpoint travels the same way.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::fut::{wrap_future, ActorFutureExt};
use actix::{
    Actor, ActorFuture, Addr, AsyncContext, AtomicResponse, Context, Handler, MailboxError, Message,
};
use tracing::debug;

use super::coordinator::Coordinator;
use super::messages::{
    Adopt, Assign, Barrier, CheckpointAt, Count, Finish, Ingest, Merge, Progress, RecordBatch,
    Release, Revoke, StateBarrier, SyncChangelog, TakeCheckpoint, Trigger,
};
use super::metrics::Metrics;
use super::shard::Shard;
use super::PipelineError;
use crate::checkpoint::{Checkpoint, PartitionState};
use crate::counters::{route, Counters, CountersState};
use crate::source::kafka::group::Handoff;
use crate::source::kafka::PolledBatch;

/// Records buffered for one shard before they are sent.
pub const BATCH: usize = 8192;

/// Messages in flight per shard: the ingestor waits for a shard's oldest only when this many
/// are unanswered. Each actor here has one sender and a mailbox larger than its window, so no
/// send ever finds a full mailbox: actix would park such a send, and its request would not
/// wake when room is made (actix 0.13's `MsgRequest`), a silent hang.
pub const WINDOW: usize = 4;

/// Requests (merges, checkpoints) in flight to the coordinator.
pub const COORDINATOR_WINDOW: usize = 2;

/// Batches in flight from a source to the ingestor.
pub const FEED_WINDOW: usize = 4;

/// How often the ingestor checks the trigger interval and sends every partial batch it holds
/// (so that a quiet source's last records are counted within this time).
pub const TICK: Duration = Duration::from_millis(100);

/// What the router asks of the actors, in order.
#[derive(Debug)]
pub enum Out {
    /// Count these records (to a shard).
    Count(usize, RecordBatch),
    /// A trigger: a barrier to every shard, then a merge by the coordinator.
    Trigger(Trigger),
    /// A checkpoint: a state barrier to every shard, then the coordinator sums and writes it.
    Checkpoint(CheckpointAt),
    /// Wait until the changelog acknowledged every checkpoint before.
    Sync,
    /// Every shard forgets these partitions, once everything before is done.
    Release(Vec<i32>),
    /// A shard takes over these partitions' counters.
    Adopt(usize, BTreeMap<i32, Counters>),
}

/// When the router checkpoints.
#[derive(Debug, Clone)]
struct Plan {
    /// Also between triggers, this often.
    interval: Option<Duration>,
    /// When the last checkpoint was taken.
    last: Instant,
    /// Records at the last checkpoint.
    records_at_last: u64,
}

/// The ingestor's pure part: routes records into per-shard batches and decides triggers and
/// checkpoints, as a sequence of [`Out`]s for the actors. No I/O, no actix.
pub struct Router {
    shards: usize,
    trigger_records: u64,
    interval: Option<Duration>,
    last_fire: Instant,
    records_at_fire: u64,
    batches: Vec<RecordBatch>,
    pending: usize,
    /// Records consumed.
    pub records: u64,
    /// Triggers fired.
    pub triggers: u64,
    /// Next offset per input partition.
    pub offsets: BTreeMap<i32, i64>,
    checkpoints: Option<Plan>,
    /// Whether triggers emit snapshots here (not when a global coordinator does).
    local_snapshots: bool,
    out: Vec<Out>,
}

impl Router {
    /// A router over `shards` shards: a trigger every `trigger_records` records and, if
    /// `interval` is set, every `interval` in which records came.
    pub fn new(shards: usize, trigger_records: u64, interval: Option<Duration>) -> Router {
        Router {
            shards: shards.max(1),
            trigger_records: trigger_records.max(1),
            interval,
            last_fire: Instant::now(),
            records_at_fire: 0,
            batches: vec![RecordBatch::default(); shards.max(1)],
            pending: 0,
            records: 0,
            triggers: 0,
            offsets: BTreeMap::new(),
            checkpoints: None,
            local_snapshots: true,
            out: Vec::new(),
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
    }

    /// Checkpoint after every trigger (and every `interval` between them).
    pub fn checkpoint_with(&mut self, interval: Option<Duration>) {
        self.checkpoints = Some(Plan {
            interval,
            last: Instant::now(),
            records_at_last: self.records,
        });
    }

    /// Scale-out: emit no snapshot here (the global coordinator does); every trigger is a
    /// checkpoint, which the writer publishes to the changelog.
    pub fn publish_only(&mut self) {
        self.local_snapshots = false;
    }

    /// What the actors are to do, in order, since the last call.
    pub fn take(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.out)
    }

    /// Take one record at `(partition, offset)`.
    #[inline]
    pub fn push(&mut self, record: &[u8], partition: i32, offset: i64) {
        let s = route(record, self.shards);
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
            self.fire(false);
        } else if self.batches[s].len() >= BATCH {
            let b = std::mem::take(&mut self.batches[s]);
            self.pending -= b.len();
            self.out.push(Out::Count(s, b));
        }
    }

    /// Fire an interval trigger if the interval has passed and records came since the last
    /// trigger, and checkpoint if one is due.
    pub fn tick(&mut self) {
        if let Some(iv) = self.interval {
            if self.last_fire.elapsed() >= iv {
                if self.records > self.records_at_fire {
                    self.fire(true);
                } else {
                    self.last_fire = Instant::now();
                }
            }
        }
        if self.checkpoint_due() {
            self.checkpoint();
        }
    }

    /// Send every buffered batch.
    pub fn flush(&mut self) {
        if self.pending == 0 {
            return;
        }
        for (s, b) in self.batches.iter_mut().enumerate() {
            if !b.is_empty() {
                self.out.push(Out::Count(s, std::mem::take(b)));
            }
        }
        self.pending = 0;
    }

    /// Flush, then fire a trigger (and checkpoint after it).
    pub fn fire(&mut self, by_interval: bool) {
        self.fire_then(by_interval, true)
    }

    fn fire_then(&mut self, by_interval: bool, checkpoint: bool) {
        self.flush();
        self.triggers += 1;
        if !self.local_snapshots {
            self.last_fire = Instant::now();
            self.records_at_fire = self.records;
            self.checkpoint();
            return;
        }
        self.out.push(Out::Trigger(Trigger {
            trigger: self.triggers,
            records: self.records,
            offsets: self
                .offsets
                .iter()
                .map(|(p, o)| (p.to_string(), *o))
                .collect(),
            by_interval,
        }));
        self.last_fire = Instant::now();
        self.records_at_fire = self.records;
        if checkpoint {
            self.checkpoint();
        }
    }

    /// Take a checkpoint now (when checkpoints are on): flush, then the state barrier.
    pub fn checkpoint(&mut self) {
        if self.checkpoints.is_none() {
            return;
        }
        self.flush();
        self.out.push(Out::Checkpoint(CheckpointAt {
            triggers: self.triggers,
            records: self.records,
            records_at_fire: self.records_at_fire,
            offsets: self.offsets.clone(),
        }));
        if let Some(k) = &mut self.checkpoints {
            k.last = Instant::now();
            k.records_at_last = self.records;
        }
    }

    fn checkpoint_due(&self) -> bool {
        self.checkpoints.as_ref().is_some_and(|k| {
            self.records > k.records_at_last && k.interval.is_some_and(|iv| k.last.elapsed() >= iv)
        })
    }

    /// The end of the source or a stop: a last snapshot only if records came after the last
    /// trigger. With checkpoints on, the checkpoint is taken before that snapshot, at the
    /// last trigger's number: a restart (after a stop, or with more records in the topic)
    /// goes on with the numbers of a run that never stopped (the next record trigger is still
    /// the next multiple of `trigger.records`), and the last snapshot, past the checkpoint,
    /// is dropped from the JSON-lines file at the restart like any snapshot after the
    /// checkpoint, and emitted again with the records that came since.
    pub fn finish(&mut self) {
        let partial = self.local_snapshots
            && self.checkpoints.is_some()
            && self.records > self.records_at_fire;
        if partial {
            self.checkpoint();
            self.fire_then(false, false);
        } else if self.records > self.records_at_fire {
            self.fire(false);
        } else if self
            .checkpoints
            .as_ref()
            .is_some_and(|k| self.records > k.records_at_last)
        {
            self.checkpoint();
        }
    }

    /// The consumer group takes `partitions` away: count what is buffered, publish the state
    /// of every partition owned, wait until the changelog has it, then forget `partitions`.
    pub fn revoke(&mut self, partitions: &[i32]) {
        self.flush();
        self.checkpoint();
        self.out.push(Out::Sync);
        self.out.push(Out::Release(partitions.to_vec()));
        for p in partitions {
            self.offsets.remove(p);
        }
    }

    /// The consumer group gives these partitions, with the state the changelog held for
    /// them: their counters go to the shards (partition p to shard p mod shards) and their
    /// offsets here.
    pub fn adopt(
        &mut self,
        states: BTreeMap<i32, PartitionState>,
        shape: (usize, usize, usize),
    ) -> Result<(), PipelineError> {
        let per_shard = spread(
            states.iter().map(|(&p, st)| (p, &st.counters)),
            self.shards,
            shape,
        )?;
        for (p, st) in states {
            self.offsets.insert(p, st.next_offset);
        }
        for (i, m) in per_shard.into_iter().enumerate() {
            if !m.is_empty() {
                self.out.push(Out::Adopt(i, m));
            }
        }
        Ok(())
    }
}

/// Restored counters of input partitions spread over `shards` shards, partition p to shard
/// p mod shards (any shard may hold them: the merge is a sum), each checked against the
/// model's `shape` (subsets, clusters, household groups).
pub fn spread<'a>(
    states: impl IntoIterator<Item = (i32, &'a CountersState)>,
    shards: usize,
    shape: (usize, usize, usize),
) -> Result<Vec<BTreeMap<i32, Counters>>, PipelineError> {
    let mut per_shard = vec![BTreeMap::new(); shards.max(1)];
    let n = per_shard.len() as i32;
    for (partition, state) in states {
        let c = Counters::from_state(state, shape.0, shape.1, shape.2)
            .map_err(|source| PipelineError::RestoredPartition { partition, source })?;
        per_shard[partition.rem_euclid(n) as usize].insert(partition, c);
    }
    Ok(per_shard)
}

type Pending<T> = Pin<Box<dyn Future<Output = Result<T, MailboxError>>>>;

fn stopped(e: MailboxError) -> PipelineError {
    PipelineError::Mailbox(e)
}

/// The ingestor's sending side: the shards' and the coordinator's addresses with the requests
/// in flight to each. Every message to a shard goes through its window, so a mailbox never
/// holds more than [`WINDOW`] of them and every send is queued at once, in order.
struct Lanes {
    shards: Vec<Addr<Shard>>,
    windows: Vec<VecDeque<Pending<()>>>,
    coordinator: Addr<Coordinator>,
    asked: VecDeque<Pending<Result<(), PipelineError>>>,
    metrics: Arc<Metrics>,
}

impl Lanes {
    async fn send_shard<M>(&mut self, s: usize, msg: M) -> Result<(), PipelineError>
    where
        M: Message<Result = ()> + Send + 'static,
        Shard: Handler<M>,
    {
        while self.windows[s].len() >= WINDOW {
            if let Some(oldest) = self.windows[s].pop_front() {
                oldest.await.map_err(stopped)?;
            }
        }
        self.windows[s].push_back(Box::pin(self.shards[s].send(msg)));
        Ok(())
    }

    async fn ask_coordinator<M>(&mut self, msg: M) -> Result<(), PipelineError>
    where
        M: Message<Result = Result<(), PipelineError>> + Send + 'static,
        Coordinator: Handler<M>,
    {
        while self.asked.len() >= COORDINATOR_WINDOW {
            if let Some(oldest) = self.asked.pop_front() {
                oldest.await.map_err(stopped)??;
            }
        }
        self.asked.push_back(Box::pin(self.coordinator.send(msg)));
        Ok(())
    }

    /// Wait until every shard and then the coordinator did all they were sent.
    async fn drain(&mut self) -> Result<(), PipelineError> {
        for w in &mut self.windows {
            while let Some(f) = w.pop_front() {
                f.await.map_err(stopped)?;
            }
        }
        while let Some(f) = self.asked.pop_front() {
            f.await.map_err(stopped)??;
        }
        Ok(())
    }

    async fn execute(&mut self, outs: Vec<Out>) -> Result<(), PipelineError> {
        for o in outs {
            match o {
                Out::Count(s, b) => {
                    self.metrics.queue(s, b.len() as i64);
                    self.send_shard(s, Count(b)).await?;
                }
                Out::Trigger(t) => {
                    let mut parts = Vec::with_capacity(self.shards.len());
                    for s in 0..self.shards.len() {
                        let (reply, part) = futures_channel::oneshot::channel();
                        let trigger = t.trigger;
                        self.send_shard(s, Barrier { trigger, reply }).await?;
                        parts.push(part);
                    }
                    self.ask_coordinator(Merge { trigger: t, parts }).await?;
                }
                Out::Checkpoint(at) => {
                    let mut parts = Vec::with_capacity(self.shards.len());
                    for s in 0..self.shards.len() {
                        let (reply, part) = futures_channel::oneshot::channel();
                        self.send_shard(s, StateBarrier { reply }).await?;
                        parts.push(part);
                    }
                    self.ask_coordinator(TakeCheckpoint { at, parts }).await?;
                }
                Out::Sync => {
                    let (reply, synced) = futures_channel::oneshot::channel();
                    self.ask_coordinator(SyncChangelog { reply }).await?;
                    self.drain().await?;
                    match synced.await {
                        Ok(Ok(())) => {}
                        Ok(Err(why)) => return Err(PipelineError::WriterFailed(why)),
                        Err(_) => return Err(PipelineError::PersisterStopped),
                    }
                }
                Out::Release(ps) => {
                    for s in 0..self.shards.len() {
                        self.send_shard(s, Release(ps.clone())).await?;
                    }
                    self.drain().await?;
                }
                Out::Adopt(s, m) => self.send_shard(s, Adopt(m)).await?,
            }
        }
        Ok(())
    }
}

/// The ingestor actor.
pub struct Ingestor {
    router: Router,
    lanes: Option<Lanes>,
    metrics: Arc<Metrics>,
    shape: (usize, usize, usize),
    /// An error met between messages (at a tick), answered to the next one.
    failed: Option<PipelineError>,
    /// Set once anything failed: every later message is refused (what the failure left
    /// undone cannot be made up).
    broken: bool,
    /// Set at [`Finish`]: no tick fires anything after it.
    finished: bool,
}

impl Ingestor {
    /// An ingestor routing to `shards` (which the router was made for) and asking
    /// `coordinator` to merge; `shape` is (subsets, clusters, household groups) of the counters it adopts.
    pub fn new(
        router: Router,
        shards: Vec<Addr<Shard>>,
        coordinator: Addr<Coordinator>,
        shape: (usize, usize, usize),
        metrics: Arc<Metrics>,
    ) -> Ingestor {
        let windows = shards.iter().map(|_| VecDeque::new()).collect();
        Ingestor {
            router,
            lanes: Some(Lanes {
                shards,
                windows,
                coordinator,
                asked: VecDeque::new(),
                metrics: metrics.clone(),
            }),
            metrics,
            shape,
            failed: None,
            broken: false,
            finished: false,
        }
    }

    /// Carry out what the router decided; the lanes go with the future and come back after
    /// it (the ingestor handles nothing else meanwhile: every handler is atomic).
    fn execute(
        &mut self,
        outs: Vec<Out>,
        drain: bool,
    ) -> impl ActorFuture<Self, Output = Result<(), PipelineError>> {
        let lanes = self.lanes.take();
        wrap_future::<_, Self>(async move {
            let Some(mut lanes) = lanes else {
                return (
                    None,
                    Err(PipelineError::Runtime("the ingestor lost its lanes".into())),
                );
            };
            let mut r = lanes.execute(outs).await;
            if r.is_ok() && drain {
                r = lanes.drain().await;
            }
            (Some(lanes), r)
        })
        .map(|(lanes, r), act, _ctx| {
            if lanes.is_some() {
                act.lanes = lanes;
            }
            if r.is_err() {
                act.broken = true;
            }
            act.progress();
            r
        })
    }

    /// Where the router stands, for `/metrics`.
    fn progress(&self) {
        self.metrics.consumed(self.router.records);
        for (&p, &o) in &self.router.offsets {
            self.metrics.set_next(p, o);
        }
    }

    fn failed(&mut self) -> Result<(), PipelineError> {
        match self.failed.take() {
            Some(e) => Err(e),
            None if self.broken => Err(PipelineError::Runtime(
                "the pipeline stopped after an earlier error".into(),
            )),
            None => Ok(()),
        }
    }
}

impl Actor for Ingestor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(FEED_WINDOW + 2);
        ctx.run_interval(TICK, |act, ctx| {
            // the event loop runs: /livez's heartbeat (none while a handler waits)
            act.metrics.beat(act.metrics.shards());
            // busy (a handler's future holds the lanes: actix polls interval items before it
            // merges a wait registered in the same poll) or failed: the next tick will do
            if act.broken || act.finished || act.lanes.is_none() || ctx.waiting() {
                return;
            }
            act.router.tick();
            // a quiet source: count what is buffered now rather than at the next batch
            act.router.flush();
            let outs = act.router.take();
            if outs.is_empty() {
                return;
            }
            ctx.wait(act.execute(outs, false).map(|r, act, _ctx| {
                if let Err(e) = r {
                    act.failed = Some(e);
                }
            }));
        });
    }
}

/// The answer of a handler that refuses its message.
fn refused<T: 'static>(e: PipelineError) -> AtomicResponse<Ingestor, Result<T, PipelineError>> {
    AtomicResponse::new(Box::pin(actix::fut::ready(Err(e))))
}

impl Handler<Ingest> for Ingestor {
    type Result = AtomicResponse<Self, Result<(), PipelineError>>;

    fn handle(&mut self, msg: Ingest, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.failed() {
            return refused(e);
        }
        let b = msg.0;
        let mut start = 0;
        for (&end, &(p, o)) in b.ends.iter().zip(&b.positions) {
            self.router.push(&b.data[start..end], p, o);
            start = end;
        }
        self.router.tick();
        let outs = self.router.take();
        AtomicResponse::new(Box::pin(self.execute(outs, false)))
    }
}

impl Handler<Finish> for Ingestor {
    type Result = AtomicResponse<Self, Result<Progress, PipelineError>>;

    fn handle(&mut self, msg: Finish, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.failed() {
            return refused(e);
        }
        self.metrics.draining.store(true, Ordering::Relaxed);
        self.finished = true;
        if msg.last_trigger {
            self.router.finish();
        }
        let outs = self.router.take();
        AtomicResponse::new(Box::pin(self.execute(outs, true).map(|r, act, _ctx| {
            r.map(|()| Progress {
                records: act.router.records,
                triggers: act.router.triggers,
            })
        })))
    }
}

impl Handler<Revoke> for Ingestor {
    type Result = AtomicResponse<Self, Result<(), PipelineError>>;

    fn handle(&mut self, msg: Revoke, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.failed() {
            return refused(e);
        }
        self.router.revoke(&msg.0);
        let outs = self.router.take();
        let partitions = msg.0;
        AtomicResponse::new(Box::pin(self.execute(outs, true).map(
            move |r, act, _ctx| {
                for p in &partitions {
                    act.metrics.forget(*p);
                }
                r
            },
        )))
    }
}

impl Handler<Assign> for Ingestor {
    type Result = AtomicResponse<Self, Result<(), PipelineError>>;

    fn handle(&mut self, msg: Assign, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.failed() {
            return refused(e);
        }
        if let Err(e) = self.router.adopt(msg.0, self.shape) {
            return refused(e);
        }
        let outs = self.router.take();
        AtomicResponse::new(Box::pin(self.execute(outs, true)))
    }
}

/// A source's side of the hand-off to the ingestor, on the source's own thread: up to
/// [`FEED_WINDOW`] batches in flight in the ingestor's bounded mailbox; the source waits for
/// the oldest when the window is full, and a slow pipeline slows the source.
pub struct Feed {
    ingestor: Addr<Ingestor>,
    window: VecDeque<actix::dev::Request<Ingestor, Ingest>>,
}

impl Feed {
    /// A feed into `ingestor`.
    pub fn new(ingestor: Addr<Ingestor>) -> Feed {
        Feed {
            ingestor,
            window: VecDeque::new(),
        }
    }

    /// Hand over a batch.
    pub fn push(&mut self, batch: PolledBatch) -> Result<(), PipelineError> {
        if batch.ends.is_empty() {
            return Ok(());
        }
        while self.window.len() >= FEED_WINDOW {
            self.oldest()?;
        }
        self.window.push_back(self.ingestor.send(Ingest(batch)));
        Ok(())
    }

    fn oldest(&mut self) -> Result<(), PipelineError> {
        match self.window.pop_front() {
            Some(r) => futures_executor::block_on(r).map_err(stopped)?,
            None => Ok(()),
        }
    }

    /// Ask the ingestor something, after every batch before it, and wait for the answer.
    fn ask<M>(&mut self, msg: M) -> Result<M::Result, PipelineError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Ingestor: Handler<M>,
    {
        while !self.window.is_empty() {
            self.oldest()?;
        }
        futures_executor::block_on(self.ingestor.send(msg)).map_err(stopped)
    }

    /// The source is done: the last trigger (if `last_trigger`) and checkpoint, then wait
    /// until the pipeline did everything.
    pub fn finish(&mut self, last_trigger: bool) -> Result<Progress, PipelineError> {
        self.ask(Finish { last_trigger })?
    }
}

/// Read a file source (one record a line, plain, gzip, Parquet or a folder of them) into the
/// pipeline, to its end or until `stop` is set; a restored run skips the lines before
/// `resume_at`.
pub fn file(
    path: &Path,
    feed: &mut Feed,
    resume_at: i64,
    stop: &AtomicBool,
) -> Result<Progress, PipelineError> {
    let opened = crate::source::open(path)?;
    let mut r = BufReader::with_capacity(1 << 20, opened.reader);
    let mut line = Vec::with_capacity(256);
    let mut offset = 0i64;
    let mut batch = PolledBatch::default();
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
        batch.data.extend_from_slice(rec);
        batch.ends.push(batch.data.len());
        batch.positions.push((0, offset));
        offset += 1;
        if batch.ends.len() >= BATCH {
            feed.push(std::mem::take(&mut batch))?;
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
    }
    feed.push(batch)?;
    if offset < resume_at {
        return Err(PipelineError::Read {
            source_name: path.display().to_string(),
            message: format!(
                "the checkpoint counted {resume_at} lines but the file has only {offset}"
            ),
        });
    }
    let done = feed.finish(true)?;
    debug!(
        records = done.records,
        triggers = done.triggers,
        "file source done"
    );
    Ok(done)
}

/// Hand the batches polled from Kafka (by [`crate::source::kafka::stream_topic`] on its own
/// thread, through a bounded channel) to the pipeline until the channel closes.
pub fn kafka(
    rx: &crossbeam_channel::Receiver<PolledBatch>,
    feed: &mut Feed,
) -> Result<Progress, PipelineError> {
    while let Ok(batch) = rx.recv() {
        feed.push(batch)?;
    }
    let done = feed.finish(true)?;
    debug!(
        records = done.records,
        triggers = done.triggers,
        "kafka source done"
    );
    Ok(done)
}

/// Scale-out: the group reader ([`crate::source::kafka::group::stream_group`]) hands its
/// records, revocations and assignments to the feed on its own thread, each revocation and
/// assignment answered once the ingestor has done it. The first failure is kept, as the
/// pipeline's error, and refuses every later call (the reader gets its text and leaves the
/// group).
pub struct GroupFeed {
    feed: Feed,
    failed: Option<PipelineError>,
}

impl GroupFeed {
    /// A group reader's hand-off into `feed`.
    pub fn new(feed: Feed) -> GroupFeed {
        GroupFeed { feed, failed: None }
    }

    fn keep<T>(&mut self, r: Result<T, PipelineError>) -> Result<T, String> {
        if let Some(e) = &self.failed {
            return Err(e.to_string());
        }
        r.map_err(|e| {
            let why = e.to_string();
            self.failed = Some(e);
            why
        })
    }

    /// The group reader left (it published every owned partition's state as it left): wait
    /// until the pipeline did everything, or give its first failure.
    pub fn finish(&mut self) -> Result<Progress, PipelineError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let done = self.feed.finish(false)?;
        debug!(
            records = done.records,
            triggers = done.triggers,
            "group source done"
        );
        Ok(done)
    }
}

impl Handoff for GroupFeed {
    fn records(&mut self, batch: PolledBatch) -> Result<(), String> {
        let r = match self.failed {
            Some(_) => Ok(()),
            None => self.feed.push(batch),
        };
        self.keep(r)
    }

    fn revoke(&mut self, partitions: &[i32]) -> Result<(), String> {
        let r = match self.failed {
            Some(_) => Ok(()),
            None => self.feed.ask(Revoke(partitions.to_vec())).and_then(|r| r),
        };
        self.keep(r)
    }

    fn assign(&mut self, states: BTreeMap<i32, PartitionState>) -> Result<(), String> {
        let r = match self.failed {
            Some(_) => Ok(()),
            None => self.feed.ask(Assign(states)).and_then(|r| r),
        };
        self.keep(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Restored partitions go to shard p mod shards, whole; counters of another shape are
    /// refused naming the partition (the error keeps the counters' own as its source).
    #[test]
    fn restored_partitions_spread_over_the_shards_and_a_misfit_is_named() {
        let mut c = Counters::new(1, 2);
        c.add_valid(b"10", Some((1, 1)));
        c.records += 1;
        let states: BTreeMap<i32, CountersState> = [0, 1, 4, 5, 7]
            .into_iter()
            .map(|p| (p, c.to_state()))
            .collect();
        let per = spread(states.iter().map(|(&p, s)| (p, s)), 3, (1, 2, 0)).unwrap();
        let keys: Vec<Vec<i32>> = per.iter().map(|m| m.keys().copied().collect()).collect();
        assert_eq!(keys, vec![vec![0], vec![1, 4, 7], vec![5]]);
        assert!(per.iter().flat_map(|m| m.values()).all(|x| x.records == 1));
        let e = spread(states.iter().map(|(&p, s)| (p, s)), 3, (1, 3, 0)).unwrap_err();
        assert!(
            matches!(e, PipelineError::RestoredPartition { partition: 0, .. }),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.to_string().contains("partition 0"), "{e}");
    }

    /// Apply a router's outs to per-shard record lists, in order, as the shards' mailboxes
    /// would: at every trigger and checkpoint, what the shards hold is what it covers.
    #[derive(Default)]
    struct Replayed {
        per_shard: Vec<Vec<Vec<u8>>>,
        /// (trigger number, records it says it covers, records the shards hold)
        triggers: Vec<(u64, u64, usize)>,
        /// (records it says it covers, records the shards hold)
        checkpoints: Vec<(u64, usize)>,
    }

    fn replay(outs: Vec<Out>, r: &mut Replayed, shards: usize) {
        r.per_shard.resize_with(shards, Vec::new);
        let held = |r: &Replayed| r.per_shard.iter().map(|v| v.len()).sum::<usize>();
        for o in outs {
            match o {
                Out::Count(s, b) => r.per_shard[s].extend(b.records().iter().map(|x| x.to_vec())),
                Out::Trigger(t) => {
                    let h = held(r);
                    r.triggers.push((t.trigger, t.records, h));
                }
                Out::Checkpoint(at) => {
                    let h = held(r);
                    r.checkpoints.push((at.records, h));
                }
                _ => {}
            }
        }
    }

    fn record(id: u32) -> Vec<u8> {
        format!("d,1,2,{},p,{id}", 100 + id % 7).into_bytes()
    }

    proptest! {
        #[test]
        fn every_barrier_follows_exactly_the_records_before_it(
            ids in proptest::collection::vec(0u32..5_000, 0..3_000),
            shards in 1usize..9,
            every in 1u64..400,
            checkpoints in any::<bool>(),
        ) {
            let mut router = Router::new(shards, every, None);
            if checkpoints {
                router.checkpoint_with(None);
            }
            let mut r = Replayed::default();
            for (i, &id) in ids.iter().enumerate() {
                router.push(&record(id), 0, i as i64);
                if i % 97 == 0 {
                    replay(router.take(), &mut r, shards);
                }
            }
            router.finish();
            replay(router.take(), &mut r, shards);
            let n = ids.len() as u64;
            // a trigger at every multiple of `every`, and one for the rest
            let mut want: Vec<u64> = (1..=n / every).map(|k| k * every).collect();
            if n % every != 0 {
                want.push(n);
            }
            prop_assert_eq!(r.triggers.iter().map(|t| t.1).collect::<Vec<_>>(), want);
            for (k, &(number, says, held)) in r.triggers.iter().enumerate() {
                prop_assert_eq!(number, k as u64 + 1);
                prop_assert_eq!(says, held as u64, "trigger {} covers what the shards hold", number);
            }
            for &(says, held) in &r.checkpoints {
                prop_assert_eq!(says, held as u64);
            }
            if checkpoints && n > 0 {
                // the last checkpoint covers every record (before the last trigger if it is partial)
                prop_assert_eq!(r.checkpoints.last().map(|c| c.0), Some(n));
            }
            // every record on the shard its household routes to, in order
            let mut all: Vec<Vec<u8>> = Vec::new();
            for (s, recs) in r.per_shard.iter().enumerate() {
                for x in recs {
                    prop_assert_eq!(route(x, shards), s);
                }
                all.extend(recs.iter().cloned());
            }
            prop_assert_eq!(all.len() as u64, n);
        }
    }

    #[test]
    fn a_revocation_checkpoints_then_syncs_then_releases_and_forgets_the_offsets() {
        let mut router = Router::new(2, 1_000, None);
        router.publish_only();
        router.checkpoint_with(None);
        router.push(b"d,1,2,100,p,1", 0, 10);
        router.push(b"d,1,2,100,p,2", 3, 20);
        router.revoke(&[3]);
        let outs = router.take();
        let kinds: Vec<&str> = outs
            .iter()
            .map(|o| match o {
                Out::Count(..) => "count",
                Out::Checkpoint(at) => {
                    assert_eq!(at.offsets, BTreeMap::from([(0, 11), (3, 21)]));
                    "checkpoint"
                }
                Out::Sync => "sync",
                Out::Release(ps) => {
                    assert_eq!(ps, &vec![3]);
                    "release"
                }
                Out::Trigger(_) => "trigger",
                Out::Adopt(..) => "adopt",
            })
            .collect();
        let counts = kinds.iter().filter(|k| **k == "count").count();
        assert!((1..=2).contains(&counts), "{kinds:?}");
        assert_eq!(&kinds[counts..], ["checkpoint", "sync", "release"]);
        assert_eq!(router.offsets, BTreeMap::from([(0, 11)]));
    }

    #[test]
    fn routing_is_stable_and_by_household() {
        use crate::counters::household_hash;
        let a = route(b"d,1,2,100,p,12345", 16);
        assert_eq!(a, route(b"x,9,9,200,q,12345\r", 16));
        assert_eq!(a, (household_hash(12345) % 16) as usize);
        assert_eq!(route(b"garbage", 16), 0);
        assert_eq!(route(b"d,1,2,100,p,abc", 16), 0);
        assert_eq!(route(b"d,1,2,100,p,7", 1), 0);
    }
}
