//! Reading the input topic as one member of a consumer group (scale-out, `cluster.changelog`):
//! Kafka's group protocol decides which process owns which partition. The records go through
//! the one poll loop ([`super::read`]) to a [`Handoff`] (the pipeline's feed), called on this
//! thread, in order. On a revocation the records already polled are handed on, then the
//! pipeline is asked to publish the state of the partitions it gives up, and the partitions
//! are let go only once it has answered; on an assignment the state of the new partitions is
//! read from the changelog first, handed to the pipeline, and the partitions are assigned at
//! the offsets that state reached (the state's own offsets, not the group's committed ones).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::TopicPartitionList;
use tracing::{info, warn};

use super::read::{Each, Flow, Limits, PolledBatch, Positions, Reader, Record, Take};
use super::{resume_at, Context, KafkaOptions, KafkaUrl, DAEMON_CONSUMER};
use crate::checkpoint::PartitionState;
use crate::source::SourceError;

/// Where a group member hands what it reads, in order; each call returns once done. An
/// `Err` carries the reason the pipeline cannot go on (the member then leaves the group).
pub trait Handoff: Send + 'static {
    /// Count these records.
    fn records(&mut self, batch: PolledBatch) -> Result<(), String>;
    /// These partitions are being revoked: count every record handed on before, publish
    /// their state and forget it (the partitions are let go after the answer).
    fn revoke(&mut self, partitions: &[i32]) -> Result<(), String>;
    /// These partitions are assigned, with the state the changelog holds for them (none for
    /// a partition never counted): take it (records follow the answer).
    fn assign(&mut self, states: BTreeMap<i32, PartitionState>) -> Result<(), String>;
}

/// Reads the stored state of partitions (from the changelog) when they are assigned.
pub type Restore = dyn Fn(&[i32]) -> Result<BTreeMap<i32, PartitionState>, String> + Send + Sync;

/// Settings of a group read.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// Client settings.
    pub client: KafkaOptions,
    /// The consumer group shared by every process of the deployment.
    pub group_id: String,
    /// This process's name (`group.instance.id` is not used: a restarted process is new).
    pub member: String,
    /// Session timeout of the group.
    pub session_timeout: Duration,
    /// Send a batch after this many records or this much time, whichever comes first.
    pub batch_records: usize,
    /// See `batch_records`.
    pub batch_wait: Duration,
    /// The client context to use, when the caller watches it (see
    /// [`super::StreamOptions::context`]).
    pub context: Option<Context>,
    /// Set while this process owns input partition 0, which makes it the coordinator.
    pub owns_first: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the poll loop and the rebalance callback share: the records polled and not handed
/// on yet, the pipeline, and the first reason to stop.
struct Shared<H> {
    pending: PolledBatch,
    since: Instant,
    handoff: Arc<Mutex<H>>,
    fatal: Option<String>,
}

impl<H: Handoff> Shared<H> {
    /// Hand the pending records on; `false` (the reason kept) when the pipeline refused.
    fn hand_on(&mut self) -> bool {
        self.since = Instant::now();
        if self.pending.is_empty() {
            return true;
        }
        let batch = std::mem::take(&mut self.pending);
        let handed = lock(&self.handoff).records(batch);
        match handed {
            Ok(()) => true,
            Err(e) => {
                self.fail(format!("the pipeline stopped: {e}"));
                false
            }
        }
    }

    fn fail(&mut self, why: String) {
        tracing::error!("{why}");
        self.fatal.get_or_insert(why);
    }
}

/// The consumer's context: the usual one (logs, outages, watermarks) plus the rebalance
/// handling.
struct GroupContext<H> {
    inner: Context,
    topic: String,
    shared: Arc<Mutex<Shared<H>>>,
    positions: Arc<Mutex<Positions>>,
    restore: Arc<Restore>,
    member: String,
    owns_first: Arc<AtomicBool>,
    resume_rewind: i64,
}

impl<H: Handoff> GroupContext<H> {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        let mut ps: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect();
        ps.sort_unstable();
        ps
    }

    fn revoke(&self, partitions: Vec<i32>) {
        if partitions.is_empty() {
            return;
        }
        if partitions.contains(&0) {
            self.owns_first.store(false, Ordering::Relaxed);
        }
        self.inner.revoking();
        let mut shared = lock(&self.shared);
        // the records polled so far go first, so that the published state covers them
        if shared.fatal.is_none() && shared.hand_on() {
            let revoked = lock(&shared.handoff).revoke(&partitions);
            match revoked {
                Ok(()) => {
                    info!(member = %self.member, ?partitions, "partitions revoked; their state is published")
                }
                Err(e) => shared.fail(format!(
                    "partitions {partitions:?} revoked but their state could not be published: {e}"
                )),
            }
        }
        drop(shared);
        let mut positions = lock(&self.positions);
        for &p in &partitions {
            positions.forget(p);
        }
    }

    /// The offsets to assign at, after handing the restored state to the pipeline.
    fn assign(&self, tpl: &mut TopicPartitionList) {
        let partitions = self.partitions(tpl);
        let mut shared = lock(&self.shared);
        if shared.fatal.is_some() {
            return;
        }
        let states = match (self.restore)(&partitions) {
            Ok(s) => s,
            Err(e) => {
                return shared.fail(format!(
                    "partitions {partitions:?} assigned but their state cannot be read: {e}"
                ))
            }
        };
        let assigned = lock(&shared.handoff).assign(states.clone());
        if let Err(e) = assigned {
            return shared.fail(format!("the pipeline stopped during an assignment: {e}"));
        }
        // the poll loop takes `positions` before `shared`: so does this, never both at once
        drop(shared);
        let mut failed = None;
        {
            let mut positions = lock(&self.positions);
            for &p in &partitions {
                let next = match states.get(&p) {
                    Some(s) => {
                        positions.resume(p, s.next_offset);
                        s.next_offset
                    }
                    None => {
                        positions.forget(p);
                        0
                    }
                };
                // at `next` exactly, or `resume_rewind` earlier (see `stream_topic`)
                let at = resume_at(next, self.resume_rewind);
                if let Err(e) = tpl.set_partition_offset(&self.topic, p, at) {
                    failed = Some(format!("cannot assign partition {p} at {next}: {e}"));
                    break;
                }
            }
        }
        if let Some(why) = failed {
            return lock(&self.shared).fail(why);
        }
        if partitions.contains(&0) {
            self.owns_first.store(true, Ordering::Relaxed);
        }
        self.inner.assigned(partitions.len());
        info!(member = %self.member, ?partitions, restored = states.len(), "partitions assigned");
    }
}

impl<H> AsRef<Context> for GroupContext<H> {
    fn as_ref(&self) -> &Context {
        &self.inner
    }
}

impl<H: Handoff> ClientContext for GroupContext<H> {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.inner.log(level, fac, log_message)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.inner.error(error, reason)
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.inner.stats(statistics)
    }
}

impl<H: Handoff> ConsumerContext for GroupContext<H> {
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(tpl);
                if let Err(e) = base_consumer.assign(tpl) {
                    lock(&self.shared).fail(format!("cannot assign partitions: {e}"));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(self.partitions(tpl));
                if let Err(e) = base_consumer.unassign() {
                    warn!(error = %e, "cannot unassign partitions");
                }
            }
            other => {
                warn!(error = ?other, "rebalance error; letting every partition go");
                self.revoke(self.partitions(tpl));
                let _ = base_consumer.unassign();
            }
        }
    }
}

/// The member's records, pending until a batch is full or old enough.
struct Member<'a, H> {
    shared: &'a Mutex<Shared<H>>,
    limit: usize,
    wait: Duration,
}

impl<H: Handoff> Take for Member<'_, H> {
    #[inline]
    fn record(&mut self, r: Record<'_>) {
        lock(self.shared).pending.push(&r);
    }

    fn round(&mut self) -> Flow {
        let mut shared = lock(self.shared);
        if shared.fatal.is_some() {
            return Flow::Stop;
        }
        let n = shared.pending.len();
        let due = n >= self.limit || (n > 0 && shared.since.elapsed() >= self.wait);
        if due && !shared.hand_on() {
            return Flow::Stop;
        }
        Flow::Go
    }
}

/// Join the group, poll the partitions it assigns on the calling thread and hand records and
/// rebalances to `handoff`, until `stop` is set, the pipeline refuses, a rebalance fails (a
/// state that cannot be read or taken), a batch cannot be decompressed, or an outage lasts
/// `outage_limit`. At the end every partition still owned is revoked before the group is
/// left: its state published, unless a failure came first (the records of a failed
/// assignment may sit at the wrong offsets; the next owner resumes from the last entry).
pub fn stream_group<H: Handoff>(
    url: &KafkaUrl,
    opts: &GroupOptions,
    restore: Arc<Restore>,
    stop: &AtomicBool,
    handoff: Arc<Mutex<H>>,
) -> Result<(), SourceError> {
    let kafka = |message: String| SourceError::Kafka {
        url: url.to_string(),
        message,
    };
    let session = opts.session_timeout.as_millis().max(1000);
    let (session_ms, heartbeat_ms) = (session.to_string(), (session / 4).max(250).to_string());
    let inner = opts.context.clone().unwrap_or_default();
    let shared = Arc::new(Mutex::new(Shared {
        pending: PolledBatch::default(),
        since: Instant::now(),
        handoff,
        fatal: None,
    }));
    let positions = Arc::new(Mutex::new(Positions::default()));
    let ctx = GroupContext {
        inner,
        topic: url.topic.clone(),
        shared: shared.clone(),
        positions: positions.clone(),
        restore,
        member: opts.member.clone(),
        owns_first: opts.owns_first.clone(),
        resume_rewind: opts.client.resume_rewind,
    };
    let own = [
        ("group.id", opts.group_id.as_str()),
        ("client.id", opts.member.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("session.timeout.ms", session_ms.as_str()),
        ("heartbeat.interval.ms", heartbeat_ms.as_str()),
    ];
    let mut reader = Reader::new(
        url,
        &[&own[..], DAEMON_CONSUMER].concat(),
        &opts.client.properties,
        ctx,
    )?
    .sharing(positions);
    let (_, warned) = reader.topic_partitions(&opts.client, stop)?;
    reader.context().started(warned);
    reader.subscribe()?;
    info!(member = %opts.member, group = %opts.group_id, %url, "joined the group");
    let mut member = Member {
        shared: &shared,
        limit: opts.batch_records,
        wait: opts.batch_wait,
    };
    let limits = Limits {
        wait: Duration::from_millis(20),
        idle: None,
        outage: opts.client.outage_limit,
    };
    let read = reader.run(stop, &limits, &mut member);
    // leave cleanly: hand on what was polled, publish the state of every owned partition
    {
        let mut shared = lock(&shared);
        if shared.fatal.is_none() {
            shared.hand_on();
        }
    }
    reader.consumer().unsubscribe();
    let leaving = Instant::now();
    while leaving.elapsed() < opts.session_timeout {
        // the revocation comes through the rebalance callback, inside the poll; what the
        // poll still brings is not counted, and the next owner reads it again
        if let Err(e) = reader.poll(
            Duration::from_millis(100),
            &mut Each::new(|_: Record<'_>| Flow::Go),
        ) {
            warn!(member = %opts.member, error = %e, "while leaving the group");
        }
        if reader
            .consumer()
            .assignment()
            .map_or(true, |a| a.count() == 0)
        {
            break;
        }
    }
    opts.owns_first.store(false, Ordering::Relaxed);
    let fatal = lock(&shared).fatal.take();
    match (fatal, read) {
        // the read ended with an error (an outage past its limit, an undecodable batch):
        // what failed as the member left (the state it published, which no broker may have
        // acknowledged) followed from it
        (_, Err(e)) => Err(e),
        (Some(why), Ok(_)) => Err(kafka(why)),
        (None, Ok(_)) => Ok(()),
    }
}
