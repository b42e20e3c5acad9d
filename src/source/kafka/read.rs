//! The one poll loop of every Kafka read: `analyze`'s bounded count ([`super::count_topic`]),
//! `run`'s stream in one process ([`super::stream_topic`]) or as a group member
//! ([`super::group::stream_group`]), `record`'s capture, and the scale-out reads of the
//! changelog and the coordinator topic. A [`Reader`] owns the consumer and, for partitions
//! assigned by hand, their split-off batch queue ([`super::batch`]); a group member's messages
//! come through the consumer's own queue, with its rebalances. What the modes share is here
//! once:
//! - where a bounded read ends ([`Ends`]: each partition's high watermark as the read starts,
//!   the partition EOF event as the fallback);
//! - the records before a resumed partition's stored offset dropped, and a broker that starts
//!   past it reported ([`Positions`]);
//! - outages logged once each, undecodable batches named by partition, offset and codec;
//! - [`Reader::run`]'s stop signal, idle limit (a bounded read whose broker went quiet) and
//!   outage limit (a daemon that gives up).
//!
//! What a read does with its records is its [`Take`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::batch::{serve, BatchQueue, Polled};
use super::{client_config, is_undecodable, undecodable, wait_for_topic};
use super::{Context, KafkaOptions, KafkaUrl};
use crate::secret::Properties;
use crate::source::SourceError;

/// A record that belongs to the read.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its value (empty for a null value).
    pub payload: &'a [u8],
    /// Its key, if any.
    pub key: Option<&'a [u8]>,
    /// Its timestamp in milliseconds since the epoch, if any.
    pub timestamp_ms: Option<i64>,
}

/// Records with their `(partition, offset)`, their bytes back to back: what the readers hand
/// the counters and the pipeline.
#[derive(Debug, Default, Clone)]
pub struct PolledBatch {
    /// The records' bytes, back to back.
    pub data: Vec<u8>,
    /// End of each record in `data`.
    pub ends: Vec<usize>,
    /// Partition and offset of each record.
    pub positions: Vec<(i32, i64)>,
}

impl PolledBatch {
    /// Add a record.
    #[inline]
    pub fn push(&mut self, r: &Record<'_>) {
        self.data.extend_from_slice(r.payload);
        self.ends.push(self.data.len());
        self.positions.push((r.partition, r.offset));
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Each record's bytes, in order.
    pub fn records(&self) -> Vec<&[u8]> {
        crate::record::split(&self.data, &self.ends)
    }

    /// Empty it, keeping its buffers.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.positions.clear();
    }
}

/// Where a bounded read ends: each partition's high watermark as the read starts (Apache
/// Kafka reports it right, through ListOffsets), with the partition EOF event as the fallback
/// for a partition whose watermark the broker did not give (or whose last offsets hold no
/// record, as after a transaction marker).
#[derive(Debug, Default)]
pub struct Ends {
    high: BTreeMap<i32, i64>,
    done: BTreeSet<i32>,
}

impl Ends {
    /// Ask for every partition's watermarks; `start[p]`, where known, is the first offset
    /// the read takes (a partition that starts at or past its end is done at once).
    pub fn query<C: ConsumerContext>(
        consumer: &BaseConsumer<C>,
        topic: &str,
        partitions: &[i32],
        start: impl Fn(i32, i64) -> Option<i64>,
        timeout: Duration,
    ) -> Ends {
        let mut ends = Ends::default();
        for &p in partitions {
            match consumer.fetch_watermarks(topic, p, timeout) {
                Ok((low, high)) if high >= low && high >= 0 => {
                    ends.high.insert(p, high);
                    if start(p, low).is_some_and(|s| s >= high) {
                        ends.done.insert(p);
                    }
                }
                Ok((low, high)) => {
                    warn!(topic, partition = p, low, high, "the broker's watermarks make no sense; reading this partition to its end of partition event")
                }
                Err(e) => {
                    warn!(topic, partition = p, error = %e, "no high watermark; reading this partition to its end of partition event")
                }
            }
        }
        ends
    }

    /// Whether a record at `offset` of `p` belongs to the read (it was there when the read
    /// started); marks `p` done when it is the last one.
    pub fn take(&mut self, p: i32, offset: i64) -> bool {
        if self.done.contains(&p) {
            return false;
        }
        match self.high.get(&p) {
            Some(&high) if offset >= high => {
                self.done.insert(p);
                false
            }
            Some(&high) => {
                if offset + 1 >= high {
                    self.done.insert(p);
                }
                true
            }
            None => true,
        }
    }

    /// The end of `p` was reached (EOF event).
    pub fn eof(&mut self, p: i32) {
        self.done.insert(p);
    }

    /// Whether all of `partitions` partitions are done.
    pub fn all(&self, partitions: usize) -> bool {
        self.done.len() >= partitions
    }

    /// Whether `p` is done.
    pub fn is_done(&self, p: i32) -> bool {
        self.done.contains(&p)
    }
}

/// Where each partition's read stands. A group member's rebalance callback shares it: a
/// partition assigned with a stored state resumes at the state's offset, one revoked is
/// forgotten.
#[derive(Debug, Default)]
pub struct Positions {
    /// The first offset taken of each resumed partition (its stored offset).
    from: BTreeMap<i32, i64>,
    /// The next offset of each partition after the last record taken.
    next: BTreeMap<i32, i64>,
}

impl Positions {
    /// The read of `p` resumes at `from`: records before it are dropped (a partition fetched
    /// from earlier, see [`KafkaOptions::resume_rewind`]), and a first record after it means
    /// the broker skipped some (reported).
    pub fn resume(&mut self, p: i32, from: i64) {
        self.from.insert(p, from);
        self.next.remove(&p);
    }

    /// `p` is no longer read (a revoked partition).
    pub fn forget(&mut self, p: i32) {
        self.from.remove(&p);
        self.next.remove(&p);
    }

    /// The next offset of each partition after the last record taken: the read covers each
    /// partition up to there.
    pub fn next(&self) -> &BTreeMap<i32, i64> {
        &self.next
    }
}

/// What a read does with what it polls.
pub trait Take {
    /// A record that belongs to the read.
    fn record(&mut self, r: Record<'_>);

    /// After each round of polling: go on, or end the read.
    fn round(&mut self) -> Flow {
        Flow::Go
    }
}

/// A [`Take`] that hands each record to a closure; the read ends after the round in which
/// the closure says [`Flow::Stop`] (the records after that one are not handed on).
pub struct Each<F> {
    f: F,
    flow: Flow,
}

impl<F: FnMut(Record<'_>) -> Flow> Each<F> {
    /// Hand each record to `f`.
    pub fn new(f: F) -> Each<F> {
        Each { f, flow: Flow::Go }
    }
}

impl<F: FnMut(Record<'_>) -> Flow> Take for Each<F> {
    fn record(&mut self, r: Record<'_>) {
        if self.flow == Flow::Go {
            self.flow = (self.f)(r);
        }
    }

    fn round(&mut self) -> Flow {
        self.flow
    }
}

/// Whether [`Reader::run`] goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Go,
    /// End the read.
    Stop,
}

/// What ends [`Reader::run`] besides the end of a bounded read and the stop signal.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a round waits for messages.
    pub wait: Duration,
    /// Give up when nothing (no record, no end of partition) arrives for this long.
    pub idle: Option<Duration>,
    /// Give up after a broker outage this long ([`SourceError::Outage`]).
    pub outage: Option<Duration>,
}

/// Why [`Reader::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every partition of a bounded read reached its end.
    AtEnd,
    /// The stop signal was set.
    Stopped,
    /// The [`Take`] ended the read.
    Told,
}

/// A group member takes this many messages off the consumer's queue a round at the most.
const SUBSCRIBED_ROUND: usize = 4096;

/// Where the messages come from.
enum Messages {
    /// Nothing assigned yet: only the client's events.
    Idle,
    /// Partitions assigned by hand, read from a queue of their own a batch at a time.
    Split(BatchQueue),
    /// A group member: messages and rebalances come through the consumer's queue.
    Subscribed,
}

/// A consumer of one topic and where its read stands.
pub struct Reader<C: ConsumerContext + AsRef<Context> + 'static> {
    // dropped before the consumer (a split queue's contract): see the `Drop` below
    messages: Messages,
    consumer: std::mem::ManuallyDrop<BaseConsumer<C>>,
    url: KafkaUrl,
    ends: Option<Ends>,
    partitions: Vec<i32>,
    /// Partitions whose end was reached at least once (with `enable.partition.eof`).
    reached: BTreeSet<i32>,
    positions: Arc<Mutex<Positions>>,
}

/// The [`Context`] inside a consumer's context.
fn base<C: ConsumerContext + AsRef<Context>>(consumer: &BaseConsumer<C>) -> &Context {
    let ctx: &C = consumer.context();
    ctx.as_ref()
}

fn lock(positions: &Mutex<Positions>) -> MutexGuard<'_, Positions> {
    positions.lock().unwrap_or_else(|e| e.into_inner())
}

impl<C: ConsumerContext + AsRef<Context> + 'static> Reader<C> {
    /// A consumer of `url`'s topic with `ctx`, configured by [`client_config`] (`defaults`,
    /// then the user's `properties`).
    pub fn new(
        url: &KafkaUrl,
        defaults: &[(&str, &str)],
        properties: &Properties,
        ctx: C,
    ) -> Result<Reader<C>, SourceError> {
        Reader::from_config(
            url,
            &client_config(&url.brokers, defaults, properties),
            properties,
            ctx,
        )
    }

    /// A consumer of `url`'s topic configured by `cfg` (built by [`client_config`], with
    /// settings the reader cannot do without set after the user's `properties`).
    pub fn from_config(
        url: &KafkaUrl,
        cfg: &rdkafka::ClientConfig,
        properties: &Properties,
        ctx: C,
    ) -> Result<Reader<C>, SourceError> {
        let consumer: BaseConsumer<C> = cfg
            .create_with_context(ctx)
            .map_err(|e| SourceError::consumer_config(url, &e, properties))?;
        Ok(Reader {
            messages: Messages::Idle,
            consumer: std::mem::ManuallyDrop::new(consumer),
            url: url.clone(),
            ends: None,
            partitions: Vec::new(),
            reached: BTreeSet::new(),
            positions: Arc::default(),
        })
    }

    /// Share `positions` with the client's context (a group's rebalance callback).
    pub fn sharing(mut self, positions: Arc<Mutex<Positions>>) -> Reader<C> {
        self.positions = positions;
        self
    }

    /// The consumer.
    pub fn consumer(&self) -> &BaseConsumer<C> {
        &self.consumer
    }

    /// The client's context.
    pub fn context(&self) -> &Context {
        base(&self.consumer)
    }

    /// Where each partition's read stands (shared with a group's rebalance callback).
    pub fn positions(&self) -> Arc<Mutex<Positions>> {
        self.positions.clone()
    }

    /// The next offset of each partition after the last record taken.
    pub fn offsets(&self) -> BTreeMap<i32, i64> {
        lock(&self.positions).next.clone()
    }

    fn kafka(&self, message: String) -> SourceError {
        SourceError::Kafka {
            url: self.url.to_string(),
            message,
        }
    }

    /// The topic's partitions once a broker answers, retrying for `client.startup_wait`
    /// ([`wait_for_topic`]); also says whether it had to wait.
    pub fn topic_partitions(
        &self,
        client: &KafkaOptions,
        stop: &AtomicBool,
    ) -> Result<(Vec<i32>, bool), SourceError> {
        wait_for_topic(&self.consumer, self.context(), &self.url, client, stop)
    }

    /// Assign partitions by hand at `starts`, their messages read from a queue of their own
    /// `batch` at a time.
    pub fn assign(&mut self, starts: &[(i32, Offset)], batch: usize) -> Result<(), SourceError> {
        let mut tpl = TopicPartitionList::new();
        for &(p, at) in starts {
            tpl.add_partition_offset(&self.url.topic, p, at)
                .map_err(|e| self.kafka(format!("cannot assign partition {p}: {e}")))?;
        }
        let partitions: Vec<i32> = starts.iter().map(|&(p, _)| p).collect();
        // SAFETY: the queue lives in `self.messages`, which is dropped before the consumer
        let queue =
            unsafe { BatchQueue::split(&self.consumer, &self.url.topic, &partitions, batch) }
                .map_err(|e| self.kafka(e))?;
        self.messages = Messages::Split(queue);
        self.consumer
            .assign(&tpl)
            .map_err(|e| self.kafka(format!("cannot assign partitions: {e}")))?;
        base(&self.consumer).assigned(partitions.len());
        self.partitions = partitions;
        Ok(())
    }

    /// Join the consumer group (`group.id`): the group assigns the partitions, through the
    /// context's rebalance callback.
    pub fn subscribe(&mut self) -> Result<(), SourceError> {
        self.consumer
            .subscribe(&[&self.url.topic])
            .map_err(|e| self.kafka(format!("cannot join the consumer group: {e}")))?;
        self.messages = Messages::Subscribed;
        Ok(())
    }

    /// Make the read bounded: each assigned partition ends at its high watermark as of now;
    /// `start(p, low)`, where known, is the first offset the read takes of `p`.
    pub fn until_end(&mut self, start: impl Fn(i32, i64) -> Option<i64>, timeout: Duration) {
        self.ends = Some(Ends::query(
            &self.consumer,
            &self.url.topic,
            &self.partitions,
            start,
            timeout,
        ));
    }

    /// Make the read bounded by the end of partition events alone (no ListOffsets request):
    /// for topics read whole where a watermark adds nothing, such as a changelog.
    pub fn until_eof(&mut self) {
        self.ends = Some(Ends::default());
    }

    /// Whether every partition of a bounded read reached its end.
    pub fn at_end(&self) -> bool {
        self.ends
            .as_ref()
            .is_some_and(|e| e.all(self.partitions.len()))
    }

    /// Whether every assigned partition reached its end at least once (the read caught up
    /// with what the topic held; `enable.partition.eof` must be set).
    pub fn caught_up(&self) -> bool {
        self.partitions.iter().all(|p| self.reached.contains(p))
    }

    /// One round: serve the client's events, wait up to `wait` for messages, and hand every
    /// record that belongs to the read to `take`. Says whether anything (a record, the end of
    /// a partition) arrived; an undecodable batch ends the read with an error.
    pub fn poll(&mut self, wait: Duration, take: &mut impl Take) -> Result<bool, SourceError> {
        let Reader {
            messages,
            consumer,
            url,
            ends,
            reached,
            positions,
            ..
        } = self;
        let mut round = Round {
            ctx: base(consumer),
            url,
            ends,
            reached,
            fatal: None,
            heard: false,
        };
        match messages {
            Messages::Split(queue) => {
                serve(consumer, Duration::ZERO, usize::MAX, |polled| {
                    round.one(&mut lock(positions), polled, take)
                });
                let mut pos = lock(positions);
                queue.batch(wait, |polled| round.one(&mut pos, polled, take));
            }
            Messages::Subscribed => {
                serve(consumer, wait, SUBSCRIBED_ROUND, |polled| {
                    round.one(&mut lock(positions), polled, take)
                });
            }
            Messages::Idle => {
                serve(consumer, wait, usize::MAX, |polled| {
                    round.one(&mut lock(positions), polled, take)
                });
            }
        }
        let (heard, fatal) = (round.heard, round.fatal);
        match fatal {
            Some(m) => Err(self.kafka(m)),
            None => Ok(heard),
        }
    }

    /// The loop: [`Reader::poll`] rounds until a bounded read is at its end, `stop` is set,
    /// `take` ends it, or a limit is passed.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        limits: &Limits,
        take: &mut impl Take,
    ) -> Result<Ended, SourceError> {
        let mut last_heard = Instant::now();
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(Ended::Stopped);
            }
            if self.at_end() {
                return Ok(Ended::AtEnd);
            }
            if let (Some(limit), Some(lasted)) = (limits.outage, self.context().outage_lasted()) {
                if lasted >= limit {
                    return Err(SourceError::Outage {
                        url: self.url.to_string(),
                        lasted,
                        offsets: self.offsets(),
                    });
                }
            }
            if self.poll(limits.wait, take)? {
                last_heard = Instant::now();
            } else if let Some(idle) = limits.idle {
                if last_heard.elapsed() > idle {
                    let waiting: Vec<i32> = self
                        .partitions
                        .iter()
                        .copied()
                        .filter(|&p| !self.ends.as_ref().is_some_and(|e| e.is_done(p)))
                        .collect();
                    return Err(self.kafka(format!(
                        "nothing arrived for {idle:?}; partitions {waiting:?} never reached their end"
                    )));
                }
            }
            if take.round() == Flow::Stop {
                return Ok(Ended::Told);
            }
            if let Some(next) = self.context().take_covered() {
                // no commit into an outage: it would only wait for the coordinator
                if self.context().outage_lasted().is_none() {
                    self.commit(&next);
                }
            }
        }
    }

    /// Commit `next` to the consumer group, asynchronously, for the partitions this consumer
    /// holds now (a partition another member took is that member's to commit). Advisory: a
    /// refused commit (a rebalance under way) is logged at DEBUG and the next one catches up.
    pub fn commit(&self, next: &BTreeMap<i32, i64>) {
        let held: BTreeSet<i32> = match self.consumer.assignment() {
            Ok(a) => a
                .elements()
                .iter()
                .filter(|e| e.topic() == self.url.topic)
                .map(|e| e.partition())
                .collect(),
            Err(_) => return,
        };
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in next {
            if held.contains(&p) && o >= 0 {
                let _ = tpl.add_partition_offset(&self.url.topic, p, Offset::Offset(o));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = self
            .consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Async)
        {
            tracing::debug!(url = %self.url, error = %e, "offsets not committed (advisory); the next commit catches up");
        }
    }
}

impl<C: ConsumerContext + AsRef<Context> + 'static> Drop for Reader<C> {
    fn drop(&mut self) {
        // the split queue goes first (it must not outlive its consumer)
        self.messages = Messages::Idle;
        if self.context().outage_lasted().is_some() {
            // librdkafka's consumer close waits for the group coordinator (its outstanding
            // offset commits), which a broker outage keeps away for good: a reader dropped
            // in an outage (the outage limit, a stop signal) leaves the client to the
            // process's exit rather than hang it
            tracing::debug!(url = %self.url, "the consumer is not closed: the brokers are unreachable");
            return;
        }
        // SAFETY: dropped once, here, and never used again
        unsafe { std::mem::ManuallyDrop::drop(&mut self.consumer) };
    }
}

/// What one round found, besides the records handed on.
struct Round<'a> {
    ctx: &'a Context,
    url: &'a KafkaUrl,
    ends: &'a mut Option<Ends>,
    reached: &'a mut BTreeSet<i32>,
    fatal: Option<String>,
    heard: bool,
}

impl Round<'_> {
    #[inline]
    fn one(&mut self, pos: &mut Positions, polled: Polled<'_>, take: &mut impl Take) {
        match polled {
            Polled::Record {
                partition: p,
                offset,
                payload,
                key,
                timestamp_ms,
            } => {
                self.ctx.reachable();
                self.heard = true;
                if let Some(&from) = pos.from.get(&p) {
                    if offset < from {
                        return;
                    }
                    // one offset may be a transaction's marker; more were removed (retention,
                    // compaction, aborted transactions) or skipped by the broker
                    if offset > from + 1 && !pos.next.contains_key(&p) {
                        warn!(url = %self.url, partition = p, expected = from, got = offset, "the read resumed past its stored offset: offsets {from}..{offset} hold no record it was given (removed by retention or compaction, aborted transactions, or skipped by the broker)");
                    }
                }
                if let Some(e) = self.ends.as_mut() {
                    if !e.take(p, offset) {
                        return; // written after the read started
                    }
                }
                pos.next.insert(p, offset + 1);
                take.record(Record {
                    partition: p,
                    offset,
                    payload,
                    key,
                    timestamp_ms,
                });
            }
            Polled::End(p) => {
                self.ctx.reachable();
                self.heard = true;
                self.reached.insert(p);
                if let Some(e) = self.ends.as_mut() {
                    e.eof(p);
                }
            }
            Polled::Error(KafkaError::MessageConsumption(code)) if is_undecodable(code) => {
                self.fatal.get_or_insert(undecodable(None, code, ""));
            }
            Polled::Error(e) => self.ctx.consumer_error(self.url, &e),
            Polled::Failed(f) => {
                if let Some(m) = self.ctx.failed(self.url, &f) {
                    self.fatal.get_or_insert(m);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kafka::batch::Failure;
    use rdkafka::error::RDKafkaErrorCode;

    /// Every record handed on, as (partition, offset, payload).
    #[derive(Default)]
    struct Collect(Vec<(i32, i64, Vec<u8>)>);

    impl Take for Collect {
        fn record(&mut self, r: Record<'_>) {
            self.0.push((r.partition, r.offset, r.payload.to_vec()));
        }
    }

    fn rec(partition: i32, offset: i64) -> Polled<'static> {
        Polled::Record {
            partition,
            offset,
            payload: b"v",
            key: None,
            timestamp_ms: None,
        }
    }

    fn taken(t: &Collect) -> Vec<(i32, i64)> {
        t.0.iter().map(|(p, o, _)| (*p, *o)).collect()
    }

    /// One round's rules, without a broker: a resumed partition's records before its stored
    /// offset are dropped, a bounded read's records past the end are, and what is taken moves
    /// the next offset; a partition forgotten (revoked) and resumed again starts over.
    #[test]
    fn a_round_takes_only_what_belongs_to_the_read() {
        let ctx = Context::running();
        let url = KafkaUrl::parse("kafka://h:1/t").unwrap();
        let mut ends = Some(Ends {
            high: BTreeMap::from([(0, 5), (1, 3)]),
            done: BTreeSet::new(),
        });
        let mut reached = BTreeSet::new();
        let mut pos = Positions::default();
        pos.resume(0, 2);
        let mut take = Collect::default();
        let mut round = Round {
            ctx: &ctx,
            url: &url,
            ends: &mut ends,
            reached: &mut reached,
            fatal: None,
            heard: false,
        };
        for (p, o) in [
            (0, 0),
            (0, 1),
            (0, 2),
            (0, 3),
            (1, 0),
            (1, 1),
            (1, 2),
            (1, 3),
        ] {
            round.one(&mut pos, rec(p, o), &mut take);
        }
        round.one(&mut pos, rec(0, 4), &mut take);
        round.one(&mut pos, rec(0, 5), &mut take);
        round.one(&mut pos, Polled::End(2), &mut take);
        assert!(round.heard && round.fatal.is_none());
        assert_eq!(
            taken(&take),
            [(0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (0, 4)]
        );
        assert_eq!(pos.next(), &BTreeMap::from([(0, 5), (1, 3)]));
        assert!(reached.contains(&2) && !reached.contains(&0));
        let ends = ends.unwrap();
        assert!(ends.is_done(0) && ends.is_done(1) && ends.is_done(2) && ends.all(3));

        // a streaming read (no ends): a partition revoked and assigned again at a new offset
        let mut none = None;
        let mut reached = BTreeSet::new();
        let mut take = Collect::default();
        let mut round = Round {
            ctx: &ctx,
            url: &url,
            ends: &mut none,
            reached: &mut reached,
            fatal: None,
            heard: false,
        };
        pos.forget(0);
        assert!(!pos.next().contains_key(&0));
        round.one(&mut pos, rec(0, 0), &mut take);
        pos.resume(0, 10);
        round.one(&mut pos, rec(0, 9), &mut take);
        round.one(&mut pos, rec(0, 10), &mut take);
        assert_eq!(taken(&take), [(0, 0), (0, 10)]);
        assert_eq!(pos.next()[&0], 11);
    }

    /// A batch that cannot be decompressed ends the read with the sentence that names where
    /// it is and its codec, from either path (a split queue's message, a group's error);
    /// other message errors are retried.
    #[test]
    fn an_undecodable_batch_ends_the_read_and_says_where() {
        let ctx = Context::running();
        let url = KafkaUrl::parse("kafka://h:1/t").unwrap();
        let (mut none, mut reached, mut pos) = (None, BTreeSet::new(), Positions::default());
        let mut take = Collect::default();
        let mut round = Round {
            ctx: &ctx,
            url: &url,
            ends: &mut none,
            reached: &mut reached,
            fatal: None,
            heard: false,
        };
        round.one(
            &mut pos,
            Polled::Error(KafkaError::MessageConsumption(
                RDKafkaErrorCode::RequestTimedOut,
            )),
            &mut take,
        );
        assert!(round.fatal.is_none());
        round.one(
            &mut pos,
            Polled::Failed(Failure {
                partition: 3,
                offset: 12,
                code: RDKafkaErrorCode::NotImplemented,
                text: "Decompression (codec 0x4) of message at 12 failed".into(),
            }),
            &mut take,
        );
        let m = round.fatal.clone().unwrap();
        assert!(
            m.starts_with("partition 3 at offset 12: ") && m.contains("zstd"),
            "{m}"
        );
        round.fatal = None;
        round.one(
            &mut pos,
            Polled::Error(KafkaError::MessageConsumption(
                RDKafkaErrorCode::BadCompression,
            )),
            &mut take,
        );
        assert!(round.fatal.unwrap().contains("cannot be decompressed"));
        assert!(take.0.is_empty());
    }

    #[test]
    fn each_stops_after_the_record_that_says_so() {
        let mut seen = Vec::new();
        let mut each = Each::new(|r: Record<'_>| {
            seen.push(r.offset);
            if r.offset == 1 {
                Flow::Stop
            } else {
                Flow::Go
            }
        });
        for offset in 0..4 {
            each.record(Record {
                partition: 0,
                offset,
                payload: b"",
                key: None,
                timestamp_ms: None,
            });
        }
        assert_eq!(each.round(), Flow::Stop);
        assert_eq!(seen, [0, 1]);
    }

    #[test]
    fn a_polled_batch_keeps_records_apart() {
        let mut b = PolledBatch::default();
        for (o, v) in [(7, &b"ab"[..]), (8, b""), (9, b"xyz")] {
            b.push(&Record {
                partition: 2,
                offset: o,
                payload: v,
                key: None,
                timestamp_ms: None,
            });
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.records(), [&b"ab"[..], b"", b"xyz"]);
        assert_eq!(b.positions, [(2, 7), (2, 8), (2, 9)]);
        b.clear();
        assert!(b.is_empty() && b.data.is_empty());
    }

    /// The end of a bounded read: at the high watermark where one is known (a record at or
    /// past it is refused and ends the partition), at the EOF event where none is.
    #[test]
    fn ends_stop_at_the_high_watermark_and_fall_back_to_eof() {
        let mut e = Ends {
            high: BTreeMap::from([(0, 3), (1, 0)]),
            done: BTreeSet::from([1]),
        };
        // partition 2: no watermark
        assert!(e.take(0, 0) && e.take(0, 1) && !e.all(3));
        assert!(
            e.take(0, 2),
            "the last record before the watermark is taken"
        );
        assert!(e.done.contains(&0));
        assert!(!e.take(0, 3), "written after the read started");
        assert!(!e.take(1, 0), "an empty partition is done at once");
        assert!(e.take(2, 1_000_000) && !e.all(3));
        e.eof(2);
        assert!(e.all(3) && !e.take(2, 1_000_001));
        // a partition whose last offsets hold no record (a transaction marker) ends at EOF
        let mut e = Ends {
            high: BTreeMap::from([(0, 10)]),
            done: BTreeSet::new(),
        };
        assert!(e.take(0, 8) && !e.all(1));
        e.eof(0);
        assert!(e.all(1));
    }
}
