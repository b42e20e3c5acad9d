//! Scale-out across processes through Kafka itself (`cluster.changelog`), the way Kafka
//! Streams applications share work: no home-made cluster protocol.
//!
//! - **Partition ownership** is the consumer group's (see [`crate::source::group`]).
//! - **The changelog**: at every local trigger, and before it lets a partition go, a process
//!   publishes the state of each input partition it owns (the counters of that partition's
//!   records and the next offset) to the changelog topic, key = the partition number, value =
//!   a checkpoint of that one partition (bincode with a magic, a version and a CRC, as
//!   [`crate::checkpoint`] writes files). A process given a partition reads the changelog and
//!   goes on from the entry with the highest next offset. Counting is deterministic, so two
//!   entries with the same offset hold the same counters, whoever wrote them: a process that
//!   died between two entries costs a recount, never a double count.
//! - **The coordinator** is the process the consumer group gave input partition 0 (Kafka
//!   chooses it; when it dies, partition 0 and the role move together within the session
//!   timeout). It reads the whole changelog, keeps the latest entry of every input partition, and every
//!   `trigger.interval` merges them (the pure core) into a global snapshot that states the
//!   offsets it covers. It writes the snapshot to its sinks and to the coordinator topic, from
//!   which the next coordinator learns where the sequence stands.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset};
use tracing::{debug, error, info, warn};

use super::coordinator;
use super::messages::Snapshot;
use super::metrics::Metrics;
use super::writer::Delivery;
use super::{PipelineError, SnapshotSink};
use crate::checkpoint::{self, Checkpoint, PartitionState};
use crate::counters::{Counters, Subset};
use crate::source::kafka::read::{self, Each, Flow, Record};
use crate::source::kafka::{Context, KafkaOptions, KafkaUrl};

/// How a process takes part in a scaled-out deployment.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The changelog topic.
    pub changelog: KafkaUrl,
    /// The one-partition coordinator topic: the log of global snapshots.
    pub coordinator: KafkaUrl,
    /// The consumer group of the processes.
    pub group_id: String,
    /// Session timeout of both groups.
    pub session_timeout: Duration,
    /// This process's name.
    pub member: String,
    /// Client settings (security).
    pub client: KafkaOptions,
}

/// What every changelog entry is stamped with, and checked against when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// Model fingerprint.
    pub model: u64,
    /// Subset labels.
    pub subsets: Vec<String>,
    /// The input topic's name.
    pub topic: String,
}

impl Stamp {
    fn check(&self, c: &Checkpoint, at: &str) -> Result<(), String> {
        if c.model != self.model {
            return Err(format!("{at}: made with another model (fingerprint {:016x}, this one {:016x}); use another changelog topic, or delete it, after a model change", c.model, self.model));
        }
        if c.subsets != self.subsets {
            return Err(format!(
                "{at}: made for subsets {:?}, this run rates {:?}",
                c.subsets, self.subsets
            ));
        }
        if c.source != self.topic {
            return Err(format!(
                "{at}: made for the input topic {:?}, this run reads {:?}",
                c.source, self.topic
            ));
        }
        Ok(())
    }
}

/// The factory's configuration with the user's properties; the cluster's own settings are
/// set after them (`acks`, transactional ids: the protocol needs them as they are).
fn client_config(brokers: &str, client: &KafkaOptions) -> ClientConfig {
    crate::source::kafka::client_config(brokers, &[], &client.properties)
}

/// A scale-out topic failed in a way the client did not put in an error of its own.
fn kafka_err(url: &KafkaUrl, message: impl std::fmt::Display) -> PipelineError {
    PipelineError::ScaleOut {
        url: url.to_string(),
        message: message.to_string(),
        source: None,
    }
}

/// `what` failed on a scale-out topic with the client's error `e` (kept as the source).
fn client_err(url: &KafkaUrl, what: impl std::fmt::Display, e: KafkaError) -> PipelineError {
    PipelineError::ScaleOut {
        url: url.to_string(),
        message: format!("{what}: {e}"),
        source: Some(Box::new(e)),
    }
}

/// Partitions of a topic (none if it does not exist), from a metadata request.
fn topic_partitions<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    url: &KafkaUrl,
    timeout: Duration,
) -> Result<Option<usize>, String> {
    let md = client
        .fetch_metadata(Some(&url.topic), timeout)
        .map_err(|e| format!("no metadata within {timeout:?}: {e}"))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == url.topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len()))
}

/// Create the changelog (as many partitions as the input topic, compacted) and the
/// coordinator topic (one partition) when missing; returns the input topic's partitions.
/// Several processes starting at once may race to create them: "already exists" is fine.
pub fn ensure_topics(input: &KafkaUrl, s: &ClusterSettings) -> Result<usize, PipelineError> {
    let admin: AdminClient<Context> = client_config(&input.brokers, &s.client)
        .create_with_context(Context::running())
        .map_err(|e| client_err(input, "cannot create an admin client", e))?;
    let timeout = s.client.metadata_timeout;
    let began = Instant::now();
    let partitions = loop {
        match topic_partitions(admin.inner(), input, timeout).map_err(|e| kafka_err(input, e)) {
            Ok(Some(n)) => break n,
            Ok(None) if began.elapsed() >= s.client.startup_wait => {
                return Err(kafka_err(input, "the topic does not exist"))
            }
            Err(e) if began.elapsed() >= s.client.startup_wait => return Err(e),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    for (url, n, compact) in [(&s.changelog, partitions, true), (&s.coordinator, 1, false)] {
        if topic_partitions(admin.inner(), url, timeout)
            .map_err(|e| kafka_err(url, e))?
            .is_some()
        {
            continue;
        }
        let mut t = NewTopic::new(&url.topic, n as i32, TopicReplication::Fixed(1));
        if compact {
            t = t.set("cleanup.policy", "compact");
        }
        let opts = AdminOptions::new().operation_timeout(Some(timeout));
        let created = futures_executor::block_on(admin.create_topics([&t], &opts))
            .map_err(|e| client_err(url, "cannot create the topic", e))?;
        for r in created {
            match r {
                Ok(_) => info!(topic = %url.topic, partitions = n, "topic created"),
                Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, e)) => return Err(kafka_err(url, format!("cannot create the topic: {e}"))),
            }
        }
    }
    Ok(partitions)
}

/// The changelog writer.
pub struct Changelog {
    producer: BaseProducer<Delivery>,
    url: KafkaUrl,
    partitions: i32,
    failed: Arc<AtomicU64>,
}

impl Changelog {
    /// A producer to the changelog topic (which must exist: see [`ensure_topics`]).
    pub fn open(s: &ClusterSettings) -> Result<Changelog, PipelineError> {
        let failed = Arc::new(AtomicU64::new(0));
        let mut cfg = client_config(&s.changelog.brokers, &s.client);
        cfg.set("linger.ms", "5")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .set("message.max.bytes", "100000000");
        let producer: BaseProducer<Delivery> = cfg
            .create_with_context(Delivery::new(failed.clone(), "a changelog entry"))
            .map_err(|e| client_err(&s.changelog, "cannot create a producer", e))?;
        let partitions =
            topic_partitions(producer.client(), &s.changelog, s.client.metadata_timeout)
                .map_err(|e| kafka_err(&s.changelog, e))?
                .ok_or_else(|| kafka_err(&s.changelog, "the changelog topic does not exist"))?
                as i32;
        Ok(Changelog {
            producer,
            url: s.changelog.clone(),
            partitions,
            failed,
        })
    }

    /// Publish one entry per partition of `c` (asynchronously; [`Changelog::sync`] waits).
    pub fn publish(&mut self, c: &Checkpoint) -> Result<(), PipelineError> {
        for (&p, state) in &c.partitions {
            let entry = entry(c, p, state);
            let bytes = checkpoint::encode(&entry)?;
            let key = p.to_string();
            let mut rec = BaseRecord::to(&self.url.topic)
                .key(key.as_bytes())
                .payload(&bytes[..])
                .partition(p.rem_euclid(self.partitions));
            loop {
                match self.producer.send(rec) {
                    Ok(()) => break,
                    Err((e, back))
                        if e.rdkafka_error_code()
                            == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                    {
                        self.producer.poll(Duration::from_millis(10));
                        rec = back;
                    }
                    Err((e, _)) => {
                        return Err(client_err(
                            &self.url,
                            format!("cannot publish partition {p}"),
                            e,
                        ))
                    }
                }
            }
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Wait until every entry published so far is acknowledged.
    pub fn sync(&self, timeout: Duration) -> Result<(), PipelineError> {
        self.producer
            .flush(timeout)
            .map_err(|e| client_err(&self.url, "entries not acknowledged", e))?;
        match self.failed.swap(0, Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(kafka_err(&self.url, format!("{n} entries not delivered"))),
        }
    }
}

/// The changelog entry of partition `p`: `c`'s stamps with that one partition.
fn entry(c: &Checkpoint, p: i32, state: &PartitionState) -> Checkpoint {
    Checkpoint {
        model: c.model,
        subsets: c.subsets.clone(),
        source: c.source.clone(),
        triggers: 0,
        records: state.counters.records,
        records_at_fire: 0,
        partitions: BTreeMap::from([(p, state.clone())]),
        written_at: c.written_at.clone(),
    }
}

/// Decode a changelog message: `(input partition, its state)`.
fn decode_entry(bytes: &[u8], at: &str, stamp: &Stamp) -> Result<(i32, PartitionState), String> {
    let c = checkpoint::decode(bytes, Path::new(at)).map_err(|e| e.to_string())?;
    stamp.check(&c, at)?;
    let mut parts = c.partitions.into_iter();
    match (parts.next(), parts.next()) {
        (Some(one), None) => Ok(one),
        _ => Err(format!("{at}: not one partition's entry")),
    }
}

/// A bounded or following read of a changelog or coordinator topic, by the one poll loop
/// (entries are whole partitions' states: up to 100 MB each).
type Reader = read::Reader<Context>;

/// The reader's own settings come after the user's properties (those are the input's: a
/// `fetch.wait.max.ms` tuned for it, or `enable.partition.eof`, must not change these reads).
fn reader(url: &KafkaUrl, client: &KafkaOptions, group: &str) -> Result<Reader, String> {
    let mut cfg = client_config(&url.brokers, client);
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "50")
        .set("fetch.message.max.bytes", "100000000");
    Reader::from_config(url, &cfg, &client.properties, Context::default())
        .map_err(|e| e.to_string())
}

/// Entries taken a round at the most, so that a follower checks its role often.
const ENTRIES: usize = 256;

/// The partitions `wanted` of `r`'s topic, each read from its beginning to its end as of now.
fn read_to_end(
    mut r: Reader,
    client: &KafkaOptions,
    wanted: &[i32],
    mut entry: impl FnMut(Record<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let starts: Vec<(i32, Offset)> = wanted.iter().map(|&p| (p, Offset::Beginning)).collect();
    r.assign(&starts, ENTRIES).map_err(|e| e.to_string())?;
    // the end of partition event: the coordinator topic ends with a transaction marker,
    // which a watermark would wait for in vain, and no ListOffsets request slows a restore
    r.until_eof();
    let mut failed = None;
    let limits = read::Limits {
        wait: Duration::from_millis(100),
        idle: Some(client.idle_timeout),
        outage: None,
    };
    let never = AtomicBool::new(false);
    r.run(
        &never,
        &limits,
        &mut Each::new(|m: Record<'_>| match entry(m) {
            Ok(()) => Flow::Go,
            Err(e) => {
                failed = Some(e);
                Flow::Stop
            }
        }),
    )
    .map_err(|e| e.to_string())?;
    failed.map_or(Ok(()), Err)
}

/// The newest state of each of `partitions` in the changelog (the entry with the highest
/// next offset), read from the start of the changelog partitions that hold them to their end.
pub fn read_states(
    s: &ClusterSettings,
    stamp: &Stamp,
    partitions: &[i32],
) -> Result<BTreeMap<i32, PartitionState>, String> {
    let mut out: BTreeMap<i32, PartitionState> = BTreeMap::new();
    if partitions.is_empty() {
        return Ok(out);
    }
    let r = reader(&s.changelog, &s.client, &format!("{}.restore", s.group_id))?;
    let n = topic_partitions(
        r.consumer().client(),
        &s.changelog,
        s.client.metadata_timeout,
    )
    .map_err(|e| format!("{}: {e}", s.changelog))?
    .ok_or_else(|| format!("{}: the changelog topic does not exist", s.changelog))?
        as i32;
    let mut wanted: Vec<i32> = partitions.iter().map(|p| p.rem_euclid(n)).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let began = Instant::now();
    read_to_end(r, &s.client, &wanted, |m| {
        let at = format!(
            "{} partition {} offset {}",
            s.changelog, m.partition, m.offset
        );
        let (p, state) = decode_entry(m.payload, &at, stamp)?;
        if partitions.contains(&p)
            && out
                .get(&p)
                .is_none_or(|o| state.next_offset > o.next_offset)
        {
            out.insert(p, state);
        }
        Ok(())
    })?;
    debug!(partitions = ?partitions, restored = out.len(), took_ms = began.elapsed().as_millis() as u64, "changelog read");
    Ok(out)
}

/// What the global coordinator needs.
pub struct GlobalSettings {
    /// The deployment.
    pub cluster: ClusterSettings,
    /// Stamps to check entries against.
    pub stamp: Stamp,
    /// Subsets rated.
    pub subsets: Vec<Subset>,
    /// Rows per cluster.
    pub top: usize,
    /// The top-K's order and the rows' intervals.
    pub rating: super::SnapshotRating,
    /// Shape of the counters: subsets, clusters and household groups.
    pub shape: (usize, usize, usize),
    /// A global snapshot every this much time (when something changed).
    pub interval: Duration,
}

/// The coordinator's view while it leads.
struct Leading {
    out: GlobalLog,
    changelog: Reader,
    latest: BTreeMap<i32, (i64, Counters)>,
    last_trigger: u64,
    last_offsets: BTreeMap<i32, i64>,
    last_emit: Instant,
}

/// The last global snapshot written to the coordinator topic, if any.
fn last_global(s: &ClusterSettings) -> Result<Option<Snapshot>, String> {
    let mut last = None;
    let r = reader(
        &s.coordinator,
        &s.client,
        &format!("{}.coordinator-log", s.group_id),
    )?;
    read_to_end(r, &s.client, &[0], |m| {
        match serde_json::from_slice::<Snapshot>(m.payload) {
            Ok(snap) => last = Some(snap),
            Err(e) => {
                warn!(topic = %s.coordinator, offset = m.offset, error = %e, "not a snapshot in the coordinator topic; skipped")
            }
        }
        Ok(())
    })?;
    Ok(last)
}

/// The global coordinator: runs on its own thread in every process until `stop`, emitting
/// global snapshots while `elected` is set (while the consumer group has given this process
/// input partition 0). Each leadership writes through a transactional producer with one
/// `transactional.id` per group: taking the role fences the previous holder's producer, so a
/// zombie (a process that was paused past its session timeout and still believes it leads)
/// cannot commit a global snapshot, and a snapshot reaches the sinks only once committed.
pub fn coordinate(
    g: GlobalSettings,
    elected: Arc<AtomicBool>,
    mut sinks: Vec<Box<dyn SnapshotSink>>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<(), PipelineError> {
    let s = &g.cluster;
    let mut leading: Option<Leading> = None;
    // after being fenced, wait for the group to take partition 0 away before leading again
    let mut fenced_at: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let owns = elected.load(Ordering::Relaxed)
            && fenced_at.is_none_or(|t| t.elapsed() >= s.session_timeout);
        if leading.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        match (owns, leading.is_some()) {
            (true, false) => match lead(&g) {
                Ok(l) => {
                    info!(member = %s.member, last_trigger = l.last_trigger, "this process is the coordinator");
                    metrics.triggers.store(l.last_trigger, Ordering::Relaxed);
                    metrics.coordinator.store(true, Ordering::Relaxed);
                    leading = Some(l);
                    fenced_at = None;
                }
                Err(e) => {
                    error!(member = %s.member, error = %e, "cannot take the coordinator role; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
            },
            (false, true) => {
                info!(member = %s.member, "no longer the coordinator");
                metrics.coordinator.store(false, Ordering::Relaxed);
                leading = None;
            }
            _ => {}
        }
        if let Some(l) = &mut leading {
            follow(&g, l)?;
            if let Emitted::Fenced = emit_if_due(&g, l, &mut sinks, &metrics)? {
                info!(member = %s.member, "no longer the coordinator: another process took the role (this one was fenced)");
                metrics.coordinator.store(false, Ordering::Relaxed);
                leading = None;
                fenced_at = Some(Instant::now());
            }
        }
    }
    Ok(())
}

/// The coordinator topic as one leadership writes it: a transactional producer whose
/// `transactional.id` is the group's, so that opening it fences every earlier holder's.
pub struct GlobalLog {
    out: BaseProducer<Context>,
}

impl GlobalLog {
    /// Open the producer and fence the previous coordinator (`init_transactions`).
    pub fn open(s: &ClusterSettings) -> Result<GlobalLog, String> {
        let out: BaseProducer<Context> = client_config(&s.coordinator.brokers, &s.client)
            .set("transactional.id", format!("{}.coordinator", s.group_id))
            .set("linger.ms", "0")
            .set("message.max.bytes", "100000000")
            .create_with_context(Context::running())
            .map_err(|e| format!("{}: cannot create a producer: {e}", s.coordinator))?;
        out.init_transactions(s.session_timeout.max(Duration::from_secs(10)))
            .map_err(|e| {
                format!(
                    "{}: cannot fence the previous coordinator: {e}",
                    s.coordinator
                )
            })?;
        Ok(GlobalLog { out })
    }

    /// Write `snap` (its JSON, `json`) in a transaction of its own: `Ok(false)` when a newer
    /// coordinator has fenced this one (a fatal transaction error; nothing was written).
    pub fn commit(
        &self,
        s: &ClusterSettings,
        snap: &Snapshot,
        json: &str,
    ) -> Result<bool, PipelineError> {
        let out = &self.out;
        let timeout = s.session_timeout.max(Duration::from_secs(10));
        let fatal = |e: &KafkaError| matches!(e, KafkaError::Transaction(t) if t.is_fatal());
        let attempt = || -> Result<(), KafkaError> {
            out.begin_transaction()?;
            let key = snap.trigger.to_string();
            out.send(
                BaseRecord::to(&s.coordinator.topic)
                    .key(key.as_bytes())
                    .payload(json.as_bytes())
                    .partition(0),
            )
            .map_err(|(e, _)| e)?;
            out.commit_transaction(timeout)
        };
        match attempt() {
            Ok(()) => {
                // a committed transaction ends an outage of this producer (and says so once)
                self.out.context().reachable();
                Ok(true)
            }
            Err(e) if fatal(&e) => {
                warn!(topic = %s.coordinator, error = %e, trigger = snap.trigger, "the global snapshot was not committed: this coordinator was fenced");
                Ok(false)
            }
            Err(e) => {
                let _ = out.abort_transaction(timeout);
                Err(client_err(
                    &s.coordinator,
                    format!("cannot commit global snapshot {}", snap.trigger),
                    e,
                ))
            }
        }
    }
}

fn lead(g: &GlobalSettings) -> Result<Leading, String> {
    let s = &g.cluster;
    // fence first, then read: whatever an earlier coordinator still had in flight is either
    // committed before this read or never
    let out = GlobalLog::open(s)?;
    let last = last_global(s)?;
    let mut changelog = reader(
        &s.changelog,
        &s.client,
        &format!("{}.coordinator-changelog", s.group_id),
    )?;
    // a changelog that went missing leaves nothing to follow (and nothing is emitted)
    let n = topic_partitions(
        changelog.consumer().client(),
        &s.changelog,
        s.client.metadata_timeout,
    )
    .map_err(|e| format!("{}: {e}", s.changelog))?
    .unwrap_or(0);
    let starts: Vec<(i32, Offset)> = (0..n as i32).map(|cp| (cp, Offset::Beginning)).collect();
    changelog
        .assign(&starts, ENTRIES)
        .map_err(|e| e.to_string())?;
    let (last_trigger, last_offsets) = match last {
        Some(snap) => (
            snap.trigger,
            snap.offsets
                .iter()
                .filter_map(|(p, &o)| p.parse::<i32>().ok().map(|p| (p, o)))
                .collect(),
        ),
        None => (0, BTreeMap::new()),
    };
    Ok(Leading {
        out,
        changelog,
        latest: BTreeMap::new(),
        last_trigger,
        last_offsets,
        last_emit: Instant::now(),
    })
}

/// Read what the changelog has for now (one round of at most [`ENTRIES`] entries, so that
/// the role is checked often).
fn follow(g: &GlobalSettings, l: &mut Leading) -> Result<(), PipelineError> {
    let s = &g.cluster;
    let latest = &mut l.latest;
    let mut failed = None;
    let mut take = Each::new(|m: Record<'_>| {
        let at = format!(
            "{} partition {} offset {}",
            s.changelog, m.partition, m.offset
        );
        let entry = decode_entry(m.payload, &at, &g.stamp).and_then(|(p, state)| {
            if latest.get(&p).is_some_and(|(o, _)| *o >= state.next_offset) {
                return Ok(());
            }
            let counters = Counters::from_state(&state.counters, g.shape.0, g.shape.1, g.shape.2)
                .map_err(|e| format!("{at}: {e}"))?;
            latest.insert(p, (state.next_offset, counters));
            Ok(())
        });
        match entry {
            Ok(()) => Flow::Go,
            Err(e) => {
                failed = Some(e);
                Flow::Stop
            }
        }
    });
    if let Err(e) = l.changelog.poll(Duration::from_millis(20), &mut take) {
        debug!(error = %e, "changelog read");
    }
    match failed {
        Some(e) => Err(PipelineError::Restore(e)),
        None => Ok(()),
    }
}

/// The offsets the latest entries cover.
fn covered(l: &Leading) -> BTreeMap<i32, i64> {
    l.latest.iter().map(|(&p, (o, _))| (p, *o)).collect()
}

/// What [`emit_if_due`] did.
enum Emitted {
    /// A snapshot was committed and written to the sinks, or none was due.
    Done,
    /// Another process has taken the role: nothing was written.
    Fenced,
}

fn emit_if_due(
    g: &GlobalSettings,
    l: &mut Leading,
    sinks: &mut [Box<dyn SnapshotSink>],
    metrics: &Metrics,
) -> Result<Emitted, PipelineError> {
    if !l.changelog.caught_up() || l.last_emit.elapsed() < g.interval {
        return Ok(Emitted::Done);
    }
    let offsets = covered(l);
    // nothing new, or behind what the previous coordinator already emitted
    if offsets == l.last_offsets
        || l.last_offsets
            .iter()
            .any(|(p, o)| offsets.get(p).is_none_or(|x| x < o))
    {
        return Ok(Emitted::Done);
    }
    let started = Instant::now();
    let mut all = Counters::new(g.shape.0, g.shape.1).with_groups(g.shape.2);
    for (_, c) in l.latest.values() {
        all.merge(c);
    }
    let snap = coordinator::snapshot(
        &all,
        &g.subsets,
        g.rating.ranking(g.top),
        &g.rating.intervals,
        l.last_trigger + 1,
        offsets.iter().map(|(p, o)| (p.to_string(), *o)).collect(),
    );
    let merge = started.elapsed().as_secs_f64();
    metrics.merged(merge);
    let json = serde_json::to_string(&snap)
        .map_err(|e| PipelineError::Runtime(format!("cannot encode a snapshot: {e}")))?;
    let s = &g.cluster;
    match l.out.commit(s, &snap, &json) {
        Ok(true) => {}
        Ok(false) => return Ok(Emitted::Fenced),
        Err(e) => {
            // not committed, not fenced (the broker away, say): try again next interval
            warn!(error = %e, "global snapshot not written; retrying");
            l.last_emit = Instant::now();
            return Ok(Emitted::Done);
        }
    }
    for sink in sinks.iter_mut() {
        sink.emit(&snap)?;
    }
    metrics.set_latest(json.into());
    metrics.triggers.store(snap.trigger, Ordering::Relaxed);
    info!(
        trigger = snap.trigger,
        records = snap.records,
        partitions = offsets.len(),
        merge_ms = merge * 1000.0,
        "global snapshot emitted"
    );
    l.last_trigger = snap.trigger;
    l.last_offsets = offsets;
    l.last_emit = Instant::now();
    Ok(Emitted::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Membership;

    fn state() -> (Checkpoint, Stamp) {
        let m = Membership::new(vec![Subset::All], vec![(1, 0, 1), (2, 1, 2)]).unwrap();
        let mut a = Counters::for_membership(&m);
        let mut b = Counters::for_membership(&m);
        for r in [&b"d,1,2,100,p,1"[..], b"d,1,2,200,p,2", b"junk"] {
            a.count(r, &m);
        }
        b.count(b"d,1,2,100,p,2", &m);
        let stamp = Stamp {
            model: 7,
            subsets: vec!["all".into()],
            topic: "views".into(),
        };
        let c = Checkpoint {
            model: 7,
            subsets: vec!["all".into()],
            source: "views".into(),
            triggers: 3,
            records: 4,
            records_at_fire: 4,
            partitions: BTreeMap::from([
                (
                    0,
                    PartitionState {
                        next_offset: 3,
                        counters: a.to_state(),
                    },
                ),
                (
                    5,
                    PartitionState {
                        next_offset: 1,
                        counters: b.to_state(),
                    },
                ),
            ]),
            written_at: "2026-11-26T00:00:00Z".into(),
        };
        (c, stamp)
    }

    #[test]
    fn a_changelog_entry_holds_one_partition_and_round_trips() {
        let (c, stamp) = state();
        for (&p, st) in &c.partitions {
            let e = entry(&c, p, st);
            assert_eq!(e.records, st.counters.records);
            let bytes = checkpoint::encode(&e).unwrap();
            let (q, back) = decode_entry(&bytes, "here", &stamp).unwrap();
            assert_eq!((q, &back), (p, st));
        }
        // a damaged entry is refused, naming where it was
        let mut bytes = checkpoint::encode(&entry(&c, 0, &c.partitions[&0])).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let e = decode_entry(&bytes, "changelog partition 0 offset 9", &stamp).unwrap_err();
        assert!(e.contains("changelog partition 0 offset 9"), "{e}");
        // the whole checkpoint (two partitions) is not an entry
        let e = decode_entry(&checkpoint::encode(&c).unwrap(), "x", &stamp).unwrap_err();
        assert!(e.contains("not one partition"), "{e}");
    }

    #[test]
    fn entries_of_another_model_subsets_or_topic_are_refused() {
        let (c, stamp) = state();
        let bytes = checkpoint::encode(&entry(&c, 0, &c.partitions[&0])).unwrap();
        for (other, what) in [
            (
                Stamp {
                    model: 8,
                    ..stamp.clone()
                },
                "another model",
            ),
            (
                Stamp {
                    subsets: vec!["3".into()],
                    ..stamp.clone()
                },
                "subsets",
            ),
            (
                Stamp {
                    topic: "other".into(),
                    ..stamp.clone()
                },
                "input topic",
            ),
        ] {
            let e = decode_entry(&bytes, "cl partition 0 offset 1", &other).unwrap_err();
            assert!(e.contains(what) && e.contains("offset 1"), "{e}");
        }
    }
}
