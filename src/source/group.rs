//! Reading the input topic as one member of a consumer group (scale-out, `cluster.changelog`):
//! Kafka's group protocol decides which process owns which partition. On a revocation the
//! records already polled are handed on, then the pipeline is asked to publish the state of
//! the partitions it gives up and the partitions are let go only once it has answered; on an
//! assignment the state of the new partitions is read from the changelog first, handed to the
//! pipeline, and the partitions are assigned at the offsets that state reached (the state's
//! own offsets, not the group's committed ones).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::TopicPartitionList;
use tracing::{info, warn};

use super::kafka::{resume_at, Context, KafkaOptions, KafkaUrl, PolledBatch};
use super::SourceError;
use crate::checkpoint::PartitionState;

/// What the group reader hands the pipeline, in order, through one bounded channel.
#[derive(Debug)]
pub enum GroupEvent {
    /// Records, with their positions.
    Records(PolledBatch),
    /// These partitions are being revoked: count every record sent before, publish their
    /// state, forget it, then answer (the partitions are let go after the answer).
    Revoke {
        /// The partitions.
        partitions: Vec<i32>,
        /// The answer: `Err` with the reason if the state could not be published.
        done: Sender<Result<(), String>>,
    },
    /// These partitions are assigned, with the state the changelog holds for them (none for
    /// a partition never counted): take it, then answer (records follow the answer).
    Assign {
        /// The state of each assigned partition that has one.
        states: BTreeMap<i32, PartitionState>,
        /// The answer.
        done: Sender<()>,
    },
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
    /// Where to keep each partition's high watermark, for consumer lag.
    pub highs: Option<Arc<dashmap::DashMap<i32, i64>>>,
    /// Set while this process owns input partition 0, which makes it the coordinator.
    pub owns_first: Arc<AtomicBool>,
}

/// The consumer's context: the usual one (logs, outages, watermarks) plus the rebalance
/// handling.
struct GroupContext {
    inner: Context,
    topic: String,
    tx: Sender<GroupEvent>,
    pending: Arc<Mutex<PolledBatch>>,
    resume: Arc<Mutex<BTreeMap<i32, i64>>>,
    restore: Arc<Restore>,
    fatal: Arc<Mutex<Option<String>>>,
    member: String,
    owns_first: Arc<AtomicBool>,
    resume_rewind: i64,
}

impl GroupContext {
    fn fail(&self, why: String) {
        tracing::error!(member = %self.member, "{why}");
        if let Ok(mut f) = self.fatal.lock() {
            f.get_or_insert(why);
        }
    }

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
        // the records polled so far go first, so that the published state covers them
        let batch = self
            .pending
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default();
        if !batch.ends.is_empty() && self.tx.send(GroupEvent::Records(batch)).is_err() {
            return self.fail("the pipeline stopped during a revocation".into());
        }
        let (done, answer) = crossbeam_channel::bounded(1);
        if self
            .tx
            .send(GroupEvent::Revoke {
                partitions: partitions.clone(),
                done,
            })
            .is_err()
        {
            return self.fail("the pipeline stopped during a revocation".into());
        }
        match answer.recv() {
            Ok(Ok(())) => {
                info!(member = %self.member, ?partitions, "partitions revoked; their state is published")
            }
            Ok(Err(e)) => self.fail(format!(
                "partitions {partitions:?} revoked but their state could not be published: {e}"
            )),
            Err(_) => self.fail("the pipeline stopped during a revocation".into()),
        }
        if let Ok(mut r) = self.resume.lock() {
            for p in &partitions {
                r.remove(p);
            }
        }
    }

    /// The offsets to assign at, after handing the restored state to the pipeline.
    fn assign(&self, tpl: &mut TopicPartitionList) {
        let partitions = self.partitions(tpl);
        let states = match (self.restore)(&partitions) {
            Ok(s) => s,
            Err(e) => {
                return self.fail(format!(
                    "partitions {partitions:?} assigned but their state cannot be read: {e}"
                ))
            }
        };
        let (done, answer) = crossbeam_channel::bounded(1);
        let event = GroupEvent::Assign {
            states: states.clone(),
            done,
        };
        if self.tx.send(event).is_err() || answer.recv().is_err() {
            return self.fail("the pipeline stopped during an assignment".into());
        }
        let mut resume = self.resume.lock().unwrap_or_else(|e| e.into_inner());
        for &p in &partitions {
            let next = states.get(&p).map_or(0, |s| s.next_offset);
            resume.insert(p, next);
            // at `next` exactly, or `resume_rewind` earlier (see `stream_topic`)
            let at = resume_at(next, self.resume_rewind);
            if let Err(e) = tpl.set_partition_offset(&self.topic, p, at) {
                return self.fail(format!("cannot assign partition {p} at {next}: {e}"));
            }
        }
        if partitions.contains(&0) {
            self.owns_first.store(true, Ordering::Relaxed);
        }
        info!(member = %self.member, ?partitions, restored = states.len(), "partitions assigned");
    }
}

impl ClientContext for GroupContext {
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

impl ConsumerContext for GroupContext {
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
                    self.fail(format!("cannot assign partitions: {e}"));
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

/// Join the group, poll the partitions it assigns on the calling thread and hand records and
/// rebalances to `tx`, until `stop` is set or the receiver is gone. At the end every
/// partition still owned is revoked (its state published) before the group is left.
pub fn stream_group(
    url: &KafkaUrl,
    opts: &GroupOptions,
    restore: Arc<Restore>,
    stop: &AtomicBool,
    tx: &Sender<GroupEvent>,
) -> Result<(), SourceError> {
    let kafka = |message: String| SourceError::Kafka {
        url: url.to_string(),
        message,
    };
    let session = opts.session_timeout.as_millis().max(1000);
    let (session_ms, heartbeat_ms) = (session.to_string(), (session / 4).max(250).to_string());
    let cfg = super::kafka::client_config(
        &url.brokers,
        &[
            ("group.id", opts.group_id.as_str()),
            ("client.id", opts.member.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", session_ms.as_str()),
            ("heartbeat.interval.ms", heartbeat_ms.as_str()),
            ("statistics.interval.ms", "1000"),
            ("fetch.wait.max.ms", "100"),
            ("queued.max.messages.kbytes", "16384"),
            (
                "fetch.queue.backoff.ms",
                super::kafka::FETCH_QUEUE_BACKOFF_MS,
            ),
        ],
        &opts.client.properties,
    );
    let mut inner = Context::default();
    if let Some(h) = &opts.highs {
        inner.highs = h.clone();
    }
    let pending = Arc::new(Mutex::new(PolledBatch::default()));
    let resume = Arc::new(Mutex::new(BTreeMap::new()));
    let fatal = Arc::new(Mutex::new(None));
    let ctx = GroupContext {
        inner,
        topic: url.topic.clone(),
        tx: tx.clone(),
        pending: pending.clone(),
        resume: resume.clone(),
        restore,
        fatal: fatal.clone(),
        member: opts.member.clone(),
        owns_first: opts.owns_first.clone(),
        resume_rewind: opts.client.resume_rewind,
    };
    let consumer: BaseConsumer<GroupContext> = cfg
        .create_with_context(ctx)
        .map_err(|e| SourceError::consumer_config(url, &e, &opts.client.properties))?;
    super::kafka::wait_for_topic(
        &consumer,
        &consumer.context().inner,
        url,
        &opts.client,
        stop,
    )?;
    consumer.context().inner.started(false);
    consumer
        .subscribe(&[&url.topic])
        .map_err(|e| kafka(format!("cannot join group {}: {e}", opts.group_id)))?;
    info!(member = %opts.member, group = %opts.group_id, %url, "joined the group");
    let mut since = Instant::now();
    let fatal_now = || fatal.lock().ok().and_then(|f| f.clone());
    let send = |b: &Mutex<PolledBatch>| -> bool {
        let batch = match b.lock() {
            Ok(mut b) if !b.ends.is_empty() => std::mem::take(&mut *b),
            _ => return true,
        };
        tx.send(GroupEvent::Records(batch)).is_ok()
    };
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(why) = fatal_now() {
            return Err(kafka(why));
        }
        if let (Some(limit), Some(lasted)) = (
            opts.client.outage_limit,
            consumer.context().inner.outage_lasted(),
        ) {
            if lasted >= limit {
                break;
            }
        }
        match consumer.poll(Duration::from_millis(20)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => consumer.context().inner.reachable(),
            Some(Err(KafkaError::MessageConsumption(code)))
                if super::kafka::is_undecodable(code) =>
            {
                return Err(kafka(super::kafka::undecodable(None, code, "")));
            }
            Some(Err(e)) => consumer.context().inner.consumer_error(url, &e),
            Some(Ok(m)) => {
                consumer.context().inner.reachable();
                let p = m.partition();
                let from = resume
                    .lock()
                    .ok()
                    .and_then(|r| r.get(&p).copied())
                    .unwrap_or(0);
                if m.offset() < from {
                    continue;
                }
                if let Ok(mut b) = pending.lock() {
                    b.data.extend_from_slice(m.payload().unwrap_or(&[]));
                    let end = b.data.len();
                    b.ends.push(end);
                    b.positions.push((p, m.offset()));
                }
            }
        }
        let full = pending.lock().map_or(0, |b| b.ends.len());
        if full >= opts.batch_records || (full > 0 && since.elapsed() >= opts.batch_wait) {
            if !send(&pending) {
                return Ok(());
            }
            since = Instant::now();
        }
    }
    // leave cleanly: hand on what was polled, publish the state of every owned partition
    send(&pending);
    consumer.unsubscribe();
    let leaving = Instant::now();
    while leaving.elapsed() < opts.session_timeout {
        // the revocation comes through the rebalance callback, inside poll
        let _ = consumer.poll(Duration::from_millis(100));
        if consumer.assignment().map_or(true, |a| a.count() == 0) {
            break;
        }
    }
    opts.owns_first.store(false, Ordering::Relaxed);
    match fatal_now() {
        Some(why) => Err(kafka(why)),
        None => Ok(()),
    }
}
