//! Kafka as a bounded source (SPEC 6: `kafka://HOST:PORT/TOPIC`): every record the topic holds
//! when the read starts, from the beginning of each partition. The consumer is a `BaseConsumer`
//! polled on the calling thread with partitions assigned by hand (no group rebalances), and
//! the end of each partition is its high watermark when the read starts (ListOffsets), with
//! the partition EOF event as the fallback where the broker gives no watermark. Records are
//! copied into a batch arena and counted with the batched core.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use super::batch::{BatchQueue, Failure, Polled};
use super::SourceError;
use crate::counters::{Counters, Membership};
use crate::secret::{client_error, Properties};
use crate::sink::DeadLetter;

/// The clients' context: librdkafka's errors and logs go to tracing, except the
/// end-of-partition events that bounded reads ask for (they are not errors). A broker that
/// cannot be reached is logged once per outage, with its reason, not once per retry; while
/// the caller is still starting (and says so itself) it is not logged at all. When
/// `statistics.interval.ms` is set it keeps each partition's high watermark from the
/// statistics (they come from fetch responses, which some brokers get right where ListOffsets
/// is wrong), for consumer lag.
#[derive(Clone)]
pub struct Context {
    /// High watermark by partition, from the last statistics.
    pub highs: Arc<dashmap::DashMap<i32, i64>>,
    /// The brokers are unreachable (an outage was logged).
    down: Arc<AtomicBool>,
    /// The caller is still connecting for the first time and reports failures itself.
    starting: Arc<AtomicBool>,
    /// When the current outage began.
    down_since: Arc<std::sync::Mutex<Option<Instant>>>,
    /// librdkafka's last connection failure (a refused TLS certificate, a failed SASL
    /// handshake), for the message of a start that gives up.
    last_failure: Arc<std::sync::Mutex<Option<String>>>,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            highs: Arc::default(),
            down: Arc::new(AtomicBool::new(false)),
            starting: Arc::new(AtomicBool::new(true)),
            down_since: Arc::default(),
            last_failure: Arc::default(),
        }
    }
}

impl Context {
    /// A consumer's error while reading `url`: the start or continuation of an outage when
    /// the brokers cannot be reached, otherwise a warning; librdkafka retries either way.
    pub fn consumer_error(&self, url: &dyn std::fmt::Display, e: &KafkaError) {
        if Context::is_transport(e) {
            self.outage(e, "poll");
        } else {
            warn!(%url, error = %e, "consumer error; retrying");
        }
    }

    /// A message librdkafka could not deliver: the sentence that stops the read when its
    /// batch cannot be decompressed ([`undecodable`]), else logged like any consumer error.
    pub fn failed(&self, url: &dyn std::fmt::Display, f: &Failure) -> Option<String> {
        if is_undecodable(f.code) {
            return Some(undecodable(Some((f.partition, f.offset)), f.code, &f.text));
        }
        self.consumer_error(url, &KafkaError::MessageConsumption(f.code));
        None
    }

    /// Whether `e` means the brokers cannot be reached (rather than a bad request).
    pub fn is_transport(e: &KafkaError) -> bool {
        matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::BrokerTransportFailure
                    | RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::Resolve
                    | RDKafkaErrorCode::BrokerNotAvailable
                    | RDKafkaErrorCode::NetworkException
                    | RDKafkaErrorCode::RequestTimedOut
                    | RDKafkaErrorCode::OperationTimedOut
            )
        )
    }

    /// The context of a client that reports no start of its own (a producer, an admin
    /// client): outages and connection failures are logged from the first.
    pub fn running() -> Context {
        let c = Context::default();
        c.started(false);
        c
    }

    /// The first connection succeeded: from now on outages are logged here. When the caller
    /// already reported failures while starting, the errors librdkafka still has queued from
    /// then count as that outage, which ends with the first record.
    pub fn started(&self, failures_reported: bool) {
        self.down.store(failures_reported, Ordering::Relaxed);
        self.starting.store(false, Ordering::Relaxed);
    }

    /// A transport failure: logged at WARN once per outage.
    pub fn outage(&self, error: &dyn std::fmt::Display, reason: &str) {
        if let Ok(mut since) = self.down_since.lock() {
            since.get_or_insert_with(Instant::now);
        }
        if self.starting.load(Ordering::Relaxed) || self.down.swap(true, Ordering::Relaxed) {
            debug!(error = %error, reason, "broker still unreachable");
        } else {
            warn!(error = %error, reason, "broker unreachable; retrying until it is back");
        }
    }

    /// Something came from the broker: an outage, if any, is over.
    #[inline]
    pub fn reachable(&self) {
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
            let lasted = self
                .down_since
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .map(|t| t.elapsed());
            tracing::info!(outage = ?lasted, "broker reachable again");
        } else if let Ok(mut s) = self.down_since.try_lock() {
            *s = None;
        }
    }

    /// librdkafka's last connection failure, if any.
    pub fn last_failure(&self) -> Option<String> {
        self.last_failure.lock().ok().and_then(|f| f.clone())
    }

    /// How long the current outage has lasted, if the brokers are unreachable.
    pub fn outage_lasted(&self) -> Option<Duration> {
        self.down_since
            .lock()
            .ok()
            .and_then(|s| s.map(|t| t.elapsed()))
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        // connection failures come again through `error`, once per outage
        if fac == "FAIL" {
            debug!(facility = fac, "librdkafka: {log_message}");
            if let Ok(mut f) = self.last_failure.lock() {
                *f = Some(log_message.to_string());
            }
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(facility = fac, "librdkafka: {log_message}")
            }
            RDKafkaLogLevel::Warning => warn!(facility = fac, "librdkafka: {log_message}"),
            _ => debug!(facility = fac, "librdkafka: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            return;
        }
        if Context::is_transport(&error) {
            self.outage(&error, reason);
            return;
        }
        warn!(error = %error, reason, "librdkafka error");
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        // a broker that the client is connected to ends an outage even on an idle topic
        if !self.starting.load(Ordering::Relaxed)
            && statistics
                .brokers
                .values()
                .any(|b| b.nodeid >= 0 && b.state == "UP")
        {
            self.reachable();
        }
        for t in statistics.topics.values() {
            for (&p, s) in &t.partitions {
                if p >= 0 && s.hi_offset >= 0 {
                    self.highs.insert(p, s.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for Context {}

/// A producer whose deliveries its caller checks another way (a transaction's commit, a
/// delivery future) takes this context as it is; one that counts its deliveries wraps it
/// ([`crate::sink::dead_letter::Delivery`]). Every Kafka client logs through it.
impl rdkafka::producer::ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

/// A parsed `kafka://HOST:PORT[,HOST:PORT…]/TOPIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaUrl {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The topic.
    pub topic: String,
}

impl KafkaUrl {
    /// Whether `s` names a Kafka source.
    pub fn is_kafka(s: &str) -> bool {
        s.starts_with("kafka://")
    }

    /// Parse a source URL.
    pub fn parse(s: &str) -> Result<KafkaUrl, SourceError> {
        let bad = |why: &str| SourceError::BadUrl {
            url: s.to_string(),
            why: why.to_string(),
        };
        let rest = s
            .strip_prefix("kafka://")
            .ok_or_else(|| bad("does not start with kafka://"))?;
        let (brokers, topic) = rest
            .split_once('/')
            .ok_or_else(|| bad("has no /TOPIC after the brokers"))?;
        if brokers.is_empty() {
            return Err(bad("names no broker"));
        }
        if topic.is_empty() || topic.contains('/') {
            return Err(bad("needs exactly one topic name after the brokers"));
        }
        Ok(KafkaUrl {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
        })
    }
}

impl std::fmt::Display for KafkaUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kafka://{}/{}", self.brokers, self.topic)
    }
}

/// How to read a topic.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// Extra librdkafka properties (security, timeouts), applied last; already resolved
    /// (see [`crate::secret`]).
    pub properties: Properties,
    /// How long to wait for the broker's metadata.
    pub metadata_timeout: Duration,
    /// Give up when nothing (no record, no end of partition) arrives for this long.
    pub idle_timeout: Duration,
    /// Records counted per batch.
    pub batch: usize,
    /// A daemon keeps retrying this long at start while no broker answers (zero: one try).
    pub startup_wait: Duration,
    /// A daemon ends its read (an error) after a mid-stream outage this long; none = never.
    pub outage_limit: Option<Duration>,
    /// A resumed partition is fetched from this many records before its stored offset (the
    /// records before it are dropped here): 0 on a broker that starts a fetch where it is
    /// asked, as Apache Kafka does. tansu 0.6.0 needs about 20,000: it answers a fetch that
    /// starts inside a record batch with the batches after it.
    pub resume_rewind: i64,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            properties: Properties::new(),
            metadata_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            batch: 8192,
            startup_wait: Duration::ZERO,
            outage_limit: None,
            resume_rewind: 0,
        }
    }
}

/// What a bounded topic read produced.
#[derive(Debug, Clone)]
pub struct TopicCount {
    /// Counters over every record read.
    pub counters: Counters,
    /// Bytes of record values.
    pub bytes: u64,
    /// Malformed records written to the dead-letter file.
    pub dead_letters: u64,
    /// Next offset of each partition: the read covers `[0, next)` of each.
    pub offsets: BTreeMap<i32, i64>,
}

/// Records waiting to be counted, with their positions.
struct Batch {
    data: Vec<u8>,
    ends: Vec<usize>,
    positions: Vec<(i32, i64)>,
}

impl Batch {
    fn flush(
        &mut self,
        counters: &mut Counters,
        membership: &Membership,
        dead: &mut Option<DeadLetter>,
    ) -> Result<(), SourceError> {
        let mut records: Vec<&[u8]> = Vec::with_capacity(self.ends.len());
        let mut start = 0;
        for &end in &self.ends {
            records.push(&self.data[start..end]);
            start = end;
        }
        let mut bad = Vec::new();
        counters.count_batch(&records, membership, |i, kind| bad.push((i, kind)));
        if let Some(d) = dead {
            for (i, kind) in bad {
                let (p, o) = self.positions[i];
                d.write(
                    &format!("partition {p} offset {o}"),
                    kind.name(),
                    records[i],
                )?;
            }
        }
        self.data.clear();
        self.ends.clear();
        self.positions.clear();
        Ok(())
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
}

/// Read and count every record `url`'s topic holds, from the beginning of each partition.
pub fn count_topic(
    url: &KafkaUrl,
    membership: &Membership,
    opts: &KafkaOptions,
    dead_letter: Option<&Path>,
) -> Result<TopicCount, SourceError> {
    let kafka = |message: String| SourceError::Kafka {
        url: url.to_string(),
        message,
    };
    let cfg = client_config(
        &url.brokers,
        &[
            ("group.id", "viewpulse-bounded-read"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", "earliest"),
            ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
        ],
        &opts.properties,
    );
    let consumer: BaseConsumer<Context> = cfg
        .create_with_context(Context::default())
        .map_err(|e| SourceError::consumer_config(url, &e, &opts.properties))?;
    let md = consumer
        .fetch_metadata(Some(&url.topic), opts.metadata_timeout)
        .map_err(|e| {
            let failed = failure_suffix(&consumer, consumer.context());
            kafka(format!(
                "no metadata within {:?} (is a broker listening at {}?): {e}{failed}",
                opts.metadata_timeout, url.brokers
            ))
        })?;
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == url.topic)
        .ok_or_else(|| kafka("the broker does not know the topic".into()))?;
    if let Some(err) = topic.error() {
        return Err(kafka(format!(
            "topic error {err:?} (does the topic exist?)"
        )));
    }
    let partitions: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    if partitions.is_empty() {
        return Err(kafka("the topic has no partitions (does it exist?)".into()));
    }
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(&url.topic, p, Offset::Beginning)
            .map_err(|e| kafka(format!("cannot assign partition {p}: {e}")))?;
    }
    let mut queue = BatchQueue::assign(&consumer, &url.topic, &tpl, opts.batch).map_err(kafka)?;
    consumer.context().started(false);
    debug!(%url, partitions = partitions.len(), "bounded read started");

    let mut dead = match dead_letter {
        Some(p) => Some(DeadLetter::create(p)?),
        None => None,
    };
    let mut counters = Counters::for_membership(membership);
    let mut offsets: BTreeMap<i32, i64> = partitions.iter().map(|&p| (p, 0)).collect();
    let mut ends = Ends::query(
        &consumer,
        &url.topic,
        &partitions,
        |_, low| Some(low),
        opts.metadata_timeout,
    );
    let mut batch = Batch {
        data: Vec::with_capacity(opts.batch * 64),
        ends: Vec::with_capacity(opts.batch),
        positions: Vec::with_capacity(opts.batch),
    };
    let mut bytes = 0u64;
    let mut last_progress = Instant::now();
    let bar = crate::progress::spinner(&format!("reading {url}"));
    while !ends.all(partitions.len()) {
        let ctx = consumer.context();
        let mut heard = false;
        let mut fatal: Option<String> = None;
        queue.poll(Duration::from_millis(100), |polled| match polled {
            Polled::End(p) => {
                ends.eof(p);
                heard = true;
            }
            Polled::Error(e) => ctx.consumer_error(url, &e),
            Polled::Failed(f) => {
                if let Some(m) = ctx.failed(url, &f) {
                    fatal.get_or_insert(m);
                }
            }
            Polled::Record {
                partition: p,
                offset,
                payload,
            } => {
                ctx.reachable();
                heard = true;
                if !ends.take(p, offset) {
                    return; // written after the read started
                }
                bytes += payload.len() as u64;
                batch.data.extend_from_slice(payload);
                batch.ends.push(batch.data.len());
                batch.positions.push((p, offset));
                offsets.insert(p, offset + 1);
            }
        });
        if let Some(m) = fatal {
            return Err(kafka(m));
        }
        if heard {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > opts.idle_timeout {
            let waiting: Vec<i32> = partitions
                .iter()
                .copied()
                .filter(|p| !ends.done.contains(p))
                .collect();
            return Err(kafka(format!(
                "nothing arrived for {:?}; partitions {waiting:?} never reached their end",
                opts.idle_timeout
            )));
        }
        if batch.ends.len() >= opts.batch {
            batch.flush(&mut counters, membership, &mut dead)?;
            bar.set_message(format!("reading {url}: {} records", counters.records));
        }
    }
    batch.flush(&mut counters, membership, &mut dead)?;
    bar.finish_and_clear();
    let dead_letters = match dead {
        Some(d) => d.finish()?,
        None => 0,
    };
    Ok(TopicCount {
        counters,
        bytes,
        dead_letters,
        offsets,
    })
}

/// The compression codecs this build's librdkafka decompresses, from its `builtin.features`
/// (every codec Kafka has: rdkafka is built with `zstd`, and gzip, snappy and lz4 are built in).
pub fn codecs() -> String {
    let features = ClientConfig::new()
        .create_native_config()
        .and_then(|c| c.get("builtin.features"))
        .unwrap_or_default();
    let have: Vec<&str> = features.split(',').collect();
    let mut names = vec!["none"];
    names.extend(
        ["gzip", "snappy", "lz4", "zstd"]
            .into_iter()
            .filter(|c| have.contains(c)),
    );
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// The name of Kafka's compression codec `id` (the attribute bits of a record batch).
pub fn codec_name(id: u32) -> Option<&'static str> {
    match id {
        0 => Some("none"),
        1 => Some("gzip"),
        2 => Some("snappy"),
        3 => Some("lz4"),
        4 => Some("zstd"),
        _ => None,
    }
}

/// Whether a message error means librdkafka could not decompress its record batch.
pub fn is_undecodable(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::BadCompression | RDKafkaErrorCode::NotImplemented
    )
}

/// One sentence for a record batch librdkafka could not decompress, at `at` (partition,
/// offset) when known, naming the codec from librdkafka's `text` (`… codec 0xN …`).
pub fn undecodable(at: Option<(i32, i64)>, code: RDKafkaErrorCode, text: &str) -> String {
    let codec = text
        .split_once("codec 0x")
        .and_then(|(_, rest)| {
            let hex: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            u32::from_str_radix(&hex, 16).ok()
        })
        .map(|id| match codec_name(id) {
            Some(name) => format!("{name} (codec {id})"),
            None => format!("an unknown codec {id}"),
        })
        .unwrap_or_else(|| "a codec librdkafka did not name".into());
    let text = if text.is_empty() {
        code.to_string()
    } else {
        text.to_string()
    };
    let at = at.map_or(String::new(), |(p, o)| {
        format!("partition {p} at offset {o}: ")
    });
    format!(
        "{at}a record batch compressed with {codec} cannot be decompressed ({text}); this build reads {}: a corrupt batch, or a producer with another codec",
        codecs()
    )
}

/// Serve the client's queued events (logs, errors: rdkafka routes them through the queue
/// that `poll` serves) for `time`, on a consumer that is not reading yet.
fn serve<C: ConsumerContext>(consumer: &BaseConsumer<C>, time: Duration) {
    let until = Instant::now() + time;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        let _ = consumer.poll(left);
    }
}

/// `; the last connection failed: …` with librdkafka's last connection failure, if any. The
/// failure arrives as a queued event, so the queue is served first, or the failure of the
/// attempt that just timed out may still sit in it.
fn failure_suffix<C: ConsumerContext>(consumer: &BaseConsumer<C>, ctx: &Context) -> String {
    serve(consumer, Duration::from_millis(100));
    ctx.last_failure()
        .map(|f| format!("; the last connection failed: {f}"))
        .unwrap_or_default()
}

/// The partitions of `url`'s topic, once a broker answers: at start the broker may not be up
/// yet (a deploy starting everything at once), so this retries for `client.startup_wait`,
/// saying so once, then gives up with the last reason (and librdkafka's last connection
/// failure). Also says whether it had to wait.
pub fn wait_for_topic<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    ctx: &Context,
    url: &KafkaUrl,
    client: &KafkaOptions,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(Vec<i32>, bool), SourceError> {
    let kafka = |message: String| SourceError::Kafka {
        url: url.to_string(),
        message,
    };
    let began = Instant::now();
    let mut warned = false;
    let mut last_note = began;
    // One metadata request blocks up to its timeout, so the wait is made of short requests
    // (librdkafka connects in the background meanwhile): `startup_wait` then means what it
    // says, a refused connection ends a `0s` wait (one try) at once, and the wait is logged
    // as it goes.
    let slice = Duration::from_millis(250);
    let partitions: Vec<i32> = loop {
        let waited = began.elapsed();
        let timeout = if client.startup_wait.is_zero() {
            slice.min(client.metadata_timeout.saturating_sub(waited))
        } else {
            slice.min(client.startup_wait.saturating_sub(waited))
        }
        .max(Duration::from_millis(10));
        let attempt = consumer
            .fetch_metadata(Some(&url.topic), timeout)
            .map_err(|e| {
                format!(
                    "no metadata (is a broker listening at {}?): {e}",
                    url.brokers
                )
            })
            .and_then(|md| {
                let topic = md
                    .topics()
                    .iter()
                    .find(|t| t.name() == url.topic)
                    .ok_or_else(|| "the broker does not know the topic".to_string())?;
                if let Some(err) = topic.error() {
                    return Err(format!("topic error {err:?} (does the topic exist?)"));
                }
                let ps: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
                if ps.is_empty() {
                    return Err("the topic has no partitions (does it exist?)".into());
                }
                Ok(ps)
            });
        match attempt {
            Ok(ps) => break ps,
            Err(why) => {
                let waited = began.elapsed();
                let answered = !why.starts_with("no metadata");
                let over = if client.startup_wait.is_zero() {
                    // one try: it ends with an answer, a failed connection or the timeout
                    answered || ctx.last_failure().is_some() || waited >= client.metadata_timeout
                } else {
                    waited >= client.startup_wait
                };
                if over || stop.load(Ordering::Relaxed) {
                    let why = format!("{why}{}", failure_suffix(consumer, ctx));
                    return Err(kafka(if client.startup_wait.is_zero() {
                        why
                    } else {
                        format!("gave up after {:.1}s: {why}", waited.as_secs_f64())
                    }));
                }
                if client.startup_wait.is_zero() {
                    // one try, still under way: no wait to announce
                } else if !warned {
                    warn!(%url, reason = %why, wait = ?client.startup_wait, "source not ready; retrying");
                    warned = true;
                    last_note = Instant::now();
                } else if last_note.elapsed() >= Duration::from_secs(5) {
                    tracing::info!(
                        %url,
                        reason = %why,
                        waited_s = waited.as_secs(),
                        wait = ?client.startup_wait,
                        "still waiting for the source"
                    );
                    last_note = Instant::now();
                }
                if answered {
                    // the broker answered (the topic is missing): ask again in a while
                    serve(consumer, slice);
                } else {
                    // librdkafka's events (a refused connection) arrive when it is served
                    serve(consumer, Duration::from_millis(10));
                }
            }
        }
    };
    if warned {
        tracing::info!(%url, waited = ?began.elapsed(), "source ready");
    }
    Ok((partitions, warned))
}

/// Whether librdkafka accepts these properties (an unknown key or a bad value is refused),
/// checked by creating a client that connects to nothing: a `-X` given with a file source
/// is refused like one given with a topic, before anything starts.
pub fn check_properties(properties: &Properties) -> Result<(), String> {
    if properties.is_empty() {
        return Ok(());
    }
    // no brokers: only librdkafka's check of the properties
    client_config("", &[], properties)
        .create_with_context::<_, BaseConsumer<Context>>(Context::default())
        .map(drop)
        .map_err(|e| client_error(&e, properties))
}

/// Every Kafka client's configuration is built here: the brokers, then the client's own
/// defaults, then the user's properties (`-X`, `kafka.properties`: security settings and
/// their secrets), which win over the defaults.
pub fn client_config(
    brokers: &str,
    defaults: &[(&str, &str)],
    properties: &Properties,
) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers);
    for (k, v) in defaults {
        cfg.set(*k, *v);
    }
    for (k, v) in properties {
        cfg.set(k, v);
    }
    cfg
}

/// How long librdkafka waits before fetching a partition again once its local queue is full
/// (`fetch.queue.backoff.ms`). Its default, 1 s, made a reader that drains its queue fast
/// (the batch path of [`crate::source::batch`]) wait up to a second for more now and then:
/// on the daemon bench, consecutive rounds ran at 0.7 and at 1.7 M records/s.
pub const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// Where a daemon starts reading each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The beginning of each partition.
    Earliest,
    /// Only records written after the start.
    Latest,
    /// The consumer group's committed offsets (earliest where none).
    Stored,
}

impl StartAt {
    /// Parse `earliest`, `latest` or `stored`.
    pub fn parse(s: &str) -> Option<StartAt> {
        match s {
            "earliest" => Some(StartAt::Earliest),
            "latest" => Some(StartAt::Latest),
            "stored" => Some(StartAt::Stored),
            _ => None,
        }
    }

    fn offset(self) -> Offset {
        match self {
            StartAt::Earliest => Offset::Beginning,
            StartAt::Latest => Offset::End,
            StartAt::Stored => Offset::Stored,
        }
    }
}

/// Where to fetch a partition resumed at `next` from: `rewind` records earlier (see
/// [`KafkaOptions::resume_rewind`]), the beginning for a partition never read.
pub fn resume_at(next: i64, rewind: i64) -> Offset {
    if next <= 0 {
        Offset::Beginning
    } else {
        Offset::Offset((next - rewind.max(0)).max(0))
    }
}

/// Records of one poll round with their `(partition, offset)`.
#[derive(Debug, Default, Clone)]
pub struct PolledBatch {
    /// The records' bytes, back to back.
    pub data: Vec<u8>,
    /// End of each record in `data`.
    pub ends: Vec<usize>,
    /// Partition and offset of each record.
    pub positions: Vec<(i32, i64)>,
}

/// Settings of a streaming read.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Client settings.
    pub client: KafkaOptions,
    /// Consumer group id (offsets are committed there only when `start` is `Stored`).
    pub group_id: String,
    /// Where to start.
    pub start: StartAt,
    /// Stop each partition at its end as of the start of the read (`--until-end`).
    pub until_end: bool,
    /// Send a batch after this many records or this much time, whichever comes first.
    pub batch_records: usize,
    /// See `batch_records`.
    pub batch_wait: Duration,
    /// Where to keep each partition's high watermark (from the client's statistics, every
    /// second), for consumer lag; none when nobody asks.
    pub highs: Option<Arc<dashmap::DashMap<i32, i64>>>,
    /// Next offset per partition of a restored checkpoint: those partitions are assigned at
    /// these offsets (the state's own, not the group's committed ones), the others at `start`.
    pub resume: BTreeMap<i32, i64>,
}

/// Poll a topic on the calling thread and hand batches to `tx` (a bounded channel: a slow
/// pipeline slows the poll loop). Ends when every partition reached its end (`until_end`),
/// when `stop` is set, or when the receiver is gone.
pub fn stream_topic(
    url: &KafkaUrl,
    opts: &StreamOptions,
    stop: &std::sync::atomic::AtomicBool,
    tx: &crossbeam_channel::Sender<PolledBatch>,
) -> Result<BTreeMap<i32, i64>, SourceError> {
    let kafka = |message: String| SourceError::Kafka {
        url: url.to_string(),
        message,
    };
    let cfg = client_config(
        &url.brokers,
        &[
            ("group.id", opts.group_id.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            (
                "enable.partition.eof",
                if opts.until_end { "true" } else { "false" },
            ),
            ("auto.offset.reset", "earliest"),
            ("statistics.interval.ms", "1000"),
            // a snapshot daemon wants fresh records more than full fetches: Apache Kafka
            // answers a fetch as soon as a byte is there, but a broker that holds each fetch
            // until the wait runs out (tansu 0.6.0 did) made snapshots half a second stale at
            // the 500 ms default
            ("fetch.wait.max.ms", "100"),
            // librdkafka prefetches up to 64 MB a partition by default; a daemon behind a fast
            // producer should hold less (the broker keeps the rest)
            ("queued.max.messages.kbytes", "16384"),
            ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
        ],
        &opts.client.properties,
    );
    let mut ctx = Context::default();
    if let Some(h) = &opts.highs {
        ctx.highs = h.clone();
    }
    let consumer: BaseConsumer<Context> = cfg
        .create_with_context(ctx)
        .map_err(|e| SourceError::consumer_config(url, &e, &opts.client.properties))?;
    let (partitions, warned) =
        wait_for_topic(&consumer, consumer.context(), url, &opts.client, stop)?;
    consumer.context().started(warned);
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        // a resumed partition starts at its stored offset exactly (or `resume_rewind` records
        // earlier, for a broker that needs it; what is before the offset is dropped below,
        // and a broker that starts after it is reported)
        let at = match opts.resume.get(&p) {
            Some(&o) => resume_at(o, opts.client.resume_rewind),
            None => opts.start.offset(),
        };
        tpl.add_partition_offset(&url.topic, p, at)
            .map_err(|e| kafka(format!("cannot assign partition {p}: {e}")))?;
    }
    let mut queue =
        BatchQueue::assign(&consumer, &url.topic, &tpl, opts.batch_records).map_err(kafka)?;
    let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
    let mut ends = if opts.until_end {
        Ends::query(
            &consumer,
            &url.topic,
            &partitions,
            |p, low| match (opts.resume.get(&p), opts.start) {
                (Some(&next), _) => Some(next),
                (None, StartAt::Earliest) => Some(low),
                // latest and stored: the end of partition event tells
                (None, _) => None,
            },
            opts.client.metadata_timeout,
        )
    } else {
        Ends::default()
    };
    let mut batch = PolledBatch::default();
    let mut since = Instant::now();
    let send = |b: &mut PolledBatch| -> bool {
        if b.ends.is_empty() {
            return true;
        }
        tx.send(std::mem::take(b)).is_ok()
    };
    loop {
        if stop.load(Ordering::Relaxed) || (opts.until_end && ends.all(partitions.len())) {
            break;
        }
        if let (Some(limit), Some(lasted)) =
            (opts.client.outage_limit, consumer.context().outage_lasted())
        {
            if lasted >= limit {
                send(&mut batch);
                return Err(SourceError::Outage {
                    url: url.to_string(),
                    lasted,
                    offsets,
                });
            }
        }
        let ctx = consumer.context();
        let mut fatal: Option<String> = None;
        queue.poll(Duration::from_millis(20), |polled| match polled {
            Polled::End(p) => {
                ctx.reachable();
                ends.eof(p);
            }
            Polled::Error(e) => ctx.consumer_error(url, &e),
            Polled::Failed(f) => {
                if let Some(m) = ctx.failed(url, &f) {
                    fatal.get_or_insert(m);
                }
            }
            Polled::Record {
                partition: p,
                offset,
                payload,
            } => {
                ctx.reachable();
                if let Some(&from) = opts.resume.get(&p) {
                    if offset < from {
                        return;
                    }
                    if !offsets.contains_key(&p) && offset > from {
                        tracing::error!(%url, partition = p, expected = from, got = offset, "the broker skipped records on resume: offsets {from}..{offset} are missing");
                    }
                }
                if opts.until_end && !ends.take(p, offset) {
                    return;
                }
                batch.data.extend_from_slice(payload);
                batch.ends.push(batch.data.len());
                batch.positions.push((p, offset));
                offsets.insert(p, offset + 1);
            }
        });
        if let Some(message) = fatal {
            send(&mut batch);
            return Err(SourceError::Kafka {
                url: url.to_string(),
                message,
            });
        }
        if batch.ends.len() >= opts.batch_records
            || (!batch.ends.is_empty() && since.elapsed() >= opts.batch_wait)
        {
            if !send(&mut batch) {
                return Ok(offsets);
            }
            since = Instant::now();
        }
    }
    // commit only what the pipeline took: a receiver gone (a failed pipeline) took nothing
    // more, and what it left in the channel was never counted
    let taken = if batch.ends.is_empty() {
        tx.send(PolledBatch::default()).is_ok()
    } else {
        send(&mut batch)
    };
    if !taken {
        return Ok(offsets);
    }
    if opts.start == StartAt::Stored && !offsets.is_empty() {
        let mut commit = TopicPartitionList::new();
        for (&p, &o) in &offsets {
            let _ = commit.add_partition_offset(&url.topic, p, Offset::Offset(o));
        }
        if let Err(e) = consumer.commit(&commit, rdkafka::consumer::CommitMode::Sync) {
            warn!(%url, error = %e, "could not commit offsets at the end");
        }
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undecodable_batch_names_its_codec_and_position() {
        let text = "Decompression (codec 0x4) of message at 12 of 345 bytes failed: Local: Not implemented";
        assert!(is_undecodable(RDKafkaErrorCode::NotImplemented));
        assert!(is_undecodable(RDKafkaErrorCode::BadCompression));
        assert!(!is_undecodable(RDKafkaErrorCode::BrokerTransportFailure));
        let m = undecodable(Some((3, 12)), RDKafkaErrorCode::NotImplemented, text);
        assert!(m.starts_with("partition 3 at offset 12: "), "{m}");
        assert!(m.contains("compressed with zstd (codec 4)"), "{m}");
        assert!(m.contains(text), "{m}");
        let m = undecodable(None, RDKafkaErrorCode::BadCompression, "codec 0x9 bad");
        assert!(
            m.starts_with("a record batch compressed with an unknown codec 9"),
            "{m}"
        );
        let m = undecodable(None, RDKafkaErrorCode::BadCompression, "");
        assert!(m.contains("a codec librdkafka did not name"), "{m}");
        assert_eq!(codec_name(1), Some("gzip"));
        // librdkafka is built with every codec Kafka has
        assert_eq!(codecs(), "none, gzip, snappy, lz4 and zstd");
    }

    #[test]
    fn urls() {
        let u = KafkaUrl::parse("kafka://127.0.0.1:9092,h2:9093/viewstatic").unwrap();
        assert_eq!(u.brokers, "127.0.0.1:9092,h2:9093");
        assert_eq!(u.topic, "viewstatic");
        assert_eq!(u.to_string(), "kafka://127.0.0.1:9092,h2:9093/viewstatic");
        for bad in [
            "kafka://",
            "kafka://h:1",
            "kafka://h:1/",
            "kafka:///t",
            "kafka://h/a/b",
            "http://h/t",
        ] {
            let e = KafkaUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
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

    /// A loopback port nothing listens on, and a topic URL there.
    fn nowhere() -> (u16, KafkaUrl) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        (
            port,
            KafkaUrl::parse(&format!("kafka://127.0.0.1:{port}/t")).unwrap(),
        )
    }

    #[test]
    fn a_broker_that_is_not_there_is_a_clear_error() {
        let (port, url) = nowhere();
        let m = Membership::new(vec![crate::counters::Subset::All], vec![(1, 0, 1)]).unwrap();
        let opts = KafkaOptions {
            metadata_timeout: Duration::from_secs(2),
            ..KafkaOptions::default()
        };
        let e = count_topic(&url, &m, &opts, None).unwrap_err().to_string();
        assert!(
            e.contains(&format!("127.0.0.1:{port}")) && e.contains("metadata"),
            "{e}"
        );
    }

    /// Regression: the failure that made a start give up sat, now and then, unread in the
    /// client's event queue (nothing polled it), and the error said only "transport failure".
    #[test]
    fn regression_the_last_connection_failure_is_read_before_giving_up() {
        let (port, url) = nowhere();
        let m = Membership::new(vec![crate::counters::Subset::All], vec![(1, 0, 1)]).unwrap();
        let opts = KafkaOptions {
            metadata_timeout: Duration::from_secs(1),
            ..KafkaOptions::default()
        };
        let e = count_topic(&url, &m, &opts, None).unwrap_err().to_string();
        assert!(
            e.contains("the last connection failed")
                && e.contains(&format!("127.0.0.1:{port}"))
                && e.contains("refused"),
            "{e}"
        );
    }

    /// TLS and SASL/SCRAM need librdkafka built with OpenSSL (rdkafka's `ssl` feature);
    /// without it the client is refused at creation ("not supported by this build"). With it,
    /// a SASL_SSL/SCRAM client is created and fails only for want of a broker.
    #[test]
    fn tls_and_scram_properties_make_a_client() {
        let (_, url) = nowhere();
        let m = Membership::new(vec![crate::counters::Subset::All], vec![(1, 0, 1)]).unwrap();
        let mut properties = Properties::new();
        for (k, v) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "viewpulse"),
            ("sasl.password", "not-logged"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ] {
            properties.insert(k, v);
        }
        let opts = KafkaOptions {
            metadata_timeout: Duration::from_secs(1),
            properties,
            ..KafkaOptions::default()
        };
        let e = count_topic(&url, &m, &opts, None).unwrap_err().to_string();
        assert!(!e.contains("cannot create"), "{e}");
        assert!(e.contains("metadata") && !e.contains("not-logged"), "{e}");
    }
}
