//! Recording a topic and playing it back (`viewpulse record`, `viewpulse replay`): what users
//! size a deployment with. [`capture`] copies partition, offset, timestamp, key and value of
//! every record of a topic into a recording ([`recording`]); [`replay`] produces a recording,
//! or a plain views file (a record a line), into a topic at a fixed rate, at the recorded
//! pacing times a speed, or as fast as the broker takes them, and says what rate it reached.
//! A recording keeps its keys and partitions; a views file is keyed by household id, and with
//! `partitions` every record goes to the partition of a stable hash of its household, as the
//! daemon routes its shards. Used by the demo to fill its topic, and by `loadtest`.

pub mod loadtest;
pub mod recording;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, Timestamp};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::Offset;
use thiserror::Error;
use tracing::{info, warn};

use crate::secret::{client_error, Properties};
use crate::source::kafka::read::{Flow, Limits, Reader, Record, Take};
use crate::source::kafka::{Context, KafkaUrl};
use crate::source::SourceError;
use recording::{Entry, Header, RecordingError};

/// Errors of recording and replaying.
#[derive(Debug, Error)]
pub enum ReplayError {
    /// The recording file.
    #[error(transparent)]
    Recording(#[from] RecordingError),
    /// Opening or reading a views file.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The broker or the topic.
    #[error("{url}: {message}")]
    Kafka {
        /// The topic.
        url: String,
        /// What happened.
        message: String,
    },
    /// Settings that cannot work together.
    #[error("{0}")]
    Usage(String),
}

impl ReplayError {
    /// The process exit code this error means.
    pub fn exit_code(&self) -> i32 {
        match self {
            ReplayError::Recording(e) => e.exit_code(),
            ReplayError::Source(e) => e.exit_code(),
            ReplayError::Kafka { .. } => crate::exit::UNAVAILABLE,
            ReplayError::Usage(_) => crate::exit::USAGE,
        }
    }
}

/// The key of a record: its last field (the household id), or the whole record.
#[inline]
pub fn household_key(record: &[u8]) -> &[u8] {
    let record = record.strip_suffix(b"\r").unwrap_or(record);
    match memchr::memrchr(b',', record) {
        Some(p) => &record[p + 1..],
        None => record,
    }
}

/// The partition of a record among `partitions` by a stable hash of its household id (the
/// daemon's routing hash); records without a readable id go to partition 0.
#[inline]
pub fn household_partition(record: &[u8], partitions: i32) -> i32 {
    crate::counters::route(record, partitions.max(1) as usize) as i32
}

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as the broker takes them.
    Max,
    /// This many records a second.
    Rate(f64),
    /// The recorded pacing (record timestamps) sped up this many times.
    Speed(f64),
}

impl Pace {
    /// From the command line's `--rate N/s`, `--speed X` and `--max` (at most one).
    pub fn from_flags(
        rate: Option<&str>,
        speed: Option<f64>,
        max: bool,
    ) -> Result<Pace, ReplayError> {
        let given = rate.is_some() as u8 + speed.is_some() as u8 + max as u8;
        if given > 1 {
            return Err(ReplayError::Usage(
                "give at most one of --rate, --speed and --max".into(),
            ));
        }
        if let Some(r) = rate {
            let n = r.trim().trim_end_matches("/s").replace('_', "");
            let v: f64 = n.parse().map_err(|_| {
                ReplayError::Usage(format!(
                    "--rate {r:?} is not a number of records a second like 50000/s"
                ))
            })?;
            if !(v.is_finite() && v > 0.0) {
                return Err(ReplayError::Usage(format!("--rate {r:?} must be above 0")));
            }
            return Ok(Pace::Rate(v));
        }
        if let Some(x) = speed {
            if !(x.is_finite() && x > 0.0) {
                return Err(ReplayError::Usage(format!("--speed {x} must be above 0")));
            }
            return Ok(Pace::Speed(x));
        }
        Ok(Pace::Max)
    }
}

/// A replay's settings.
#[derive(Debug, Clone)]
pub struct ReplaySettings {
    /// How fast.
    pub pace: Pace,
    /// Route every record to the partition of its household among this many (and create the
    /// topic with as many partitions if it does not exist).
    pub partitions: Option<i32>,
    /// Play the input this many times.
    pub loops: u32,
    /// librdkafka properties for the producer.
    pub properties: Properties,
}

impl Default for ReplaySettings {
    fn default() -> Self {
        ReplaySettings {
            pace: Pace::Max,
            partitions: None,
            loops: 1,
            properties: Properties::new(),
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq)]
pub struct Produced {
    /// Records delivered.
    pub records: u64,
    /// Seconds from the first send to the last delivery.
    pub seconds: f64,
    /// Records a second reached.
    pub rate: f64,
    /// Whole records read from the input (per loop).
    pub read: u64,
    /// The input recording was cut inside a record (everything before was replayed).
    pub truncated: bool,
}

/// When each delivered record was produced: per partition, by offset, the record's
/// timestamp (Unix ms, set by the producer). `loadtest` measures staleness with it.
#[derive(Debug, Default)]
pub struct DeliveryLog {
    inner: Mutex<BTreeMap<i32, (i64, Vec<i64>)>>,
    delivered: AtomicU64,
}

impl DeliveryLog {
    /// `offset` of `partition`, produced at `ts` (Unix ms), was delivered.
    pub fn delivered(&self, partition: i32, offset: i64, ts: i64) {
        if let Ok(mut m) = self.inner.lock() {
            let (base, v) = m.entry(partition).or_insert((offset, Vec::new()));
            if offset >= *base {
                let i = (offset - *base) as usize;
                if v.len() <= i {
                    v.resize(i + 1, -1);
                }
                v[i] = ts;
            }
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Records delivered so far.
    pub fn count(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// The production time (Unix ms) of `offset` in `partition`, if it was delivered.
    pub fn produced_at(&self, partition: i32, offset: i64) -> Option<i64> {
        let m = self.inner.lock().ok()?;
        let (base, v) = m.get(&partition)?;
        let t = *v.get(usize::try_from(offset - base).ok()?)?;
        (t >= 0).then_some(t)
    }
}

/// The producer's context: delivery failures are counted (the first kept as the reason),
/// deliveries go to the log when there is one, and client errors to tracing.
struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    log: Option<Arc<DeliveryLog>>,
    client: Context,
}

impl ClientContext for Deliveries {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        self.client.log(level, fac, msg)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.client.error(error, reason)
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(m) => {
                self.client.reachable();
                if let Some(log) = &self.log {
                    let ts = match m.timestamp() {
                        Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
                        Timestamp::NotAvailable => -1,
                    };
                    log.delivered(m.partition(), m.offset(), ts);
                }
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut f) = self.first_error.lock() {
                    f.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// The partitions of `url`'s topic; when it does not exist and `create` is given, create it
/// with that many partitions.
pub fn ensure_topic(
    url: &KafkaUrl,
    create: Option<i32>,
    properties: &Properties,
) -> Result<Vec<i32>, ReplayError> {
    let kafka = |message: String| ReplayError::Kafka {
        url: url.to_string(),
        message,
    };
    let cfg = crate::source::kafka::client_config(
        &url.brokers,
        // a look-up must not create the topic (with the broker's default partition count)
        // on a broker with auto.create.topics.enable, Kafka's default
        &[("allow.auto.create.topics", "false")],
        properties,
    );
    let admin: AdminClient<Context> = cfg.create_with_context(Context::default()).map_err(|e| {
        ReplayError::Usage(format!(
            "{url}: cannot create a client: {}",
            client_error(&e, properties)
        ))
    })?;
    let partitions = |admin: &AdminClient<Context>| -> Result<Option<Vec<i32>>, ReplayError> {
        let md = admin
            .inner()
            .fetch_metadata(Some(&url.topic), Duration::from_secs(10))
            .map_err(|e| {
                kafka(format!(
                    "no metadata within 10 s (is a broker listening at {}?): {e}",
                    url.brokers
                ))
            })?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == url.topic && t.error().is_none())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
            .filter(|p| !p.is_empty()))
    };
    if let Some(p) = partitions(&admin)? {
        if let Some(n) = create.filter(|&n| (p.len() as i32) < n) {
            return Err(kafka(format!(
                "the topic exists with {} partitions, fewer than --partitions {n} routes to (give --partitions {}, or add partitions to the topic)",
                p.len(),
                p.len()
            )));
        }
        return Ok(p);
    }
    let Some(n) = create else {
        return Err(kafka(
            "the topic does not exist (create it, or give --partitions to have it created)".into(),
        ));
    };
    let new = NewTopic::new(&url.topic, n, TopicReplication::Fixed(1));
    let res = futures_executor::block_on(admin.create_topics(&[new], &AdminOptions::new()))
        .map_err(|e| kafka(format!("cannot create the topic: {e}")))?;
    for r in res {
        if let Err((_, code)) = r {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                return Err(kafka(format!("cannot create the topic: {code}")));
            }
        }
    }
    info!(%url, partitions = n, "topic created");
    for _ in 0..50 {
        if let Some(p) = partitions(&admin)? {
            return Ok(p);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(kafka(
        "the topic was created but does not show in metadata".into(),
    ))
}

/// One input record: value, key, source partition and timestamp.
struct Input {
    recording: Option<recording::Reader>,
    lines: Option<(PathBuf, BufReader<Box<dyn std::io::Read + Send>>)>,
    line: Vec<u8>,
}

impl Input {
    fn open(path: &Path) -> Result<Input, ReplayError> {
        if path.is_dir() {
            // a folder of views files, read one after the other in name order
            let opened = crate::source::open(path)?;
            return Ok(Input {
                recording: None,
                lines: Some((
                    path.to_path_buf(),
                    BufReader::with_capacity(1 << 20, opened.reader),
                )),
                line: Vec::with_capacity(256),
            });
        }
        if recording::is_recording(path)? {
            Ok(Input {
                recording: Some(recording::Reader::open(path)?),
                lines: None,
                line: Vec::new(),
            })
        } else {
            // a views file is text: refuse binary junk rather than replay it as "lines"
            let mut head = [0u8; 4096];
            let n = std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
                .map_err(|e| SourceError::Io {
                    path: path.to_path_buf(),
                    source: e,
                })?;
            // gzip and Parquet (whose rows are read as lines) are binary by design
            let binary_format =
                head[..n].starts_with(&[0x1f, 0x8b]) || head[..n].starts_with(b"PAR1");
            if !binary_format && head[..n].contains(&0) {
                return Err(RecordingError::NotARecording {
                    path: path.to_path_buf(),
                }
                .into());
            }
            let opened = crate::source::open(path)?;
            Ok(Input {
                recording: None,
                lines: Some((
                    path.to_path_buf(),
                    BufReader::with_capacity(1 << 20, opened.reader),
                )),
                line: Vec::with_capacity(256),
            })
        }
    }

    fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    #[inline]
    fn next(&mut self) -> Result<Option<Entry<'_>>, ReplayError> {
        if let Some(r) = &mut self.recording {
            return Ok(r.next_entry()?);
        }
        let Some((path, r)) = &mut self.lines else {
            return Ok(None);
        };
        self.line.clear();
        let n = r
            .read_until(b'\n', &mut self.line)
            .map_err(|e| crate::source::read_error(path, None, e))?;
        if n == 0 {
            return Ok(None);
        }
        let v = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
        Ok(Some(Entry {
            partition: -1,
            offset: -1,
            timestamp_ms: -1,
            key: None,
            value: v,
        }))
    }
}

/// Produce `input` (a recording or a views file) into `url`'s topic, paced as `s` says,
/// until it is played `s.loops` times or `stop` is set, and wait until every record is
/// delivered. Deliveries go to `log` when given.
pub fn replay(
    input: &Path,
    url: &KafkaUrl,
    s: &ReplaySettings,
    stop: &AtomicBool,
    log: Option<Arc<DeliveryLog>>,
) -> Result<Produced, ReplayError> {
    let kafka = |message: String| ReplayError::Kafka {
        url: url.to_string(),
        message,
    };
    let mut first = Input::open(input)?;
    if matches!(s.pace, Pace::Speed(_)) && !first.is_recording() {
        return Err(ReplayError::Usage(format!(
            "{}: --speed needs a recording (a views file has no timestamps); use --rate",
            input.display()
        )));
    }
    // a missing topic is created with --partitions, or with a recording's partitions
    let create = s.partitions.or_else(|| {
        first
            .recording
            .as_ref()
            .and_then(|r| r.header.partitions.iter().max().map(|&m| m + 1))
    });
    let topic_partitions = ensure_topic(url, create, &s.properties)?;
    let known: BTreeSet<i32> = topic_partitions.iter().copied().collect();
    let cfg = crate::source::kafka::client_config(
        &url.brokers,
        &[
            ("linger.ms", "5"),
            ("batch.num.messages", "10000"),
            ("queue.buffering.max.messages", "500000"),
            ("message.timeout.ms", "30000"),
            ("enable.idempotence", "false"),
        ],
        &s.properties,
    );
    let ctx = Deliveries {
        failed: AtomicU64::new(0),
        first_error: Mutex::new(None),
        log,
        client: Context::running(),
    };
    let producer: BaseProducer<Deliveries> = cfg.create_with_context(ctx).map_err(|e| {
        ReplayError::Usage(format!(
            "{url}: cannot create a producer: {}",
            client_error(&e, &s.properties)
        ))
    })?;
    let failed = |p: &BaseProducer<Deliveries>| p.context().failed.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut read = 0u64;
    let mut truncated = false;
    let mut loop_base = 0.0f64;
    'loops: for l in 0..s.loops.max(1) {
        let mut inp = if l == 0 {
            std::mem::replace(&mut first, Input::open(input)?)
        } else {
            Input::open(input)?
        };
        let (mut t0, mut t_last) = (None::<i64>, 0i64);
        let mut n = 0u64;
        while let Some(e) = inp.next()? {
            n += 1;
            // pacing: how long after the start this record is due
            let due = match s.pace {
                Pace::Max => None,
                Pace::Rate(r) => Some(sent as f64 / r),
                Pace::Speed(x) => {
                    let t = e.timestamp_ms.max(0);
                    let base = *t0.get_or_insert(t);
                    t_last = t_last.max(t);
                    Some(loop_base + (t - base).max(0) as f64 / 1000.0 / x)
                }
            };
            if let Some(due) = due {
                let now = started.elapsed().as_secs_f64();
                if due > now + 0.000_5 {
                    producer.poll(Duration::ZERO);
                    std::thread::sleep(Duration::from_secs_f64(due - now));
                }
            }
            let key = e.key.unwrap_or_else(|| household_key(e.value));
            let partition = match s.partitions {
                Some(p) => Some(household_partition(e.value, p)),
                None if e.partition >= 0 && known.contains(&e.partition) => Some(e.partition),
                None => None,
            };
            let mut msg = BaseRecord::to(&url.topic).payload(e.value).key(key);
            if let Some(p) = partition {
                msg = msg.partition(p);
            }
            loop {
                match producer.send(msg) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        producer.poll(Duration::from_millis(5));
                        if failed(&producer) > 0 || stop.load(Ordering::Relaxed) {
                            break 'loops;
                        }
                        msg = back;
                    }
                    Err((e, _)) => return Err(kafka(format!("record {}: {e}", sent + 1))),
                }
            }
            sent += 1;
            if sent % 1024 == 0 {
                producer.poll(Duration::ZERO);
                if failed(&producer) > 0 || stop.load(Ordering::Relaxed) {
                    break 'loops;
                }
            }
        }
        read = n;
        if let Some(r) = &inp.recording {
            truncated = r.end == Some(recording::End::Truncated);
        }
        if let (Pace::Speed(x), Some(base)) = (s.pace, t0) {
            // the next loop starts one record-gap after this one's last record
            loop_base += ((t_last - base) as f64 / 1000.0 + 0.001) / x;
        }
    }
    if truncated {
        warn!(
            file = %input.display(),
            records = read,
            "the recording is cut inside a record; replayed its {read} whole records"
        );
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| kafka(format!("not every record was delivered within 60 s: {e}")))?;
    let lost = failed(&producer);
    if lost > 0 {
        let why = producer
            .context()
            .first_error
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        return Err(kafka(format!(
            "{lost} of {sent} records were not delivered (did the broker go away?): {why}"
        )));
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = sent as f64 / seconds.max(1e-9);
    info!(%url, records = sent, seconds, rate, "replayed");
    Ok(Produced {
        records: sent,
        seconds,
        rate,
        read,
        truncated,
    })
}

/// Produce every line of `path` into `url`'s topic as fast as it goes (the demo's filler).
pub fn produce_file(
    path: &Path,
    url: &KafkaUrl,
    properties: &Properties,
) -> Result<Produced, ReplayError> {
    replay(
        path,
        url,
        &ReplaySettings {
            properties: properties.clone(),
            ..ReplaySettings::default()
        },
        &AtomicBool::new(false),
        None,
    )
}

/// When a capture stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// At the end each partition had when the capture started.
    UntilEnd,
    /// After this long.
    Duration(Duration),
    /// After this many records.
    MaxRecords(u64),
    /// Only when stopped (a signal).
    Never,
}

/// What a capture wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Captured {
    /// Records written.
    pub records: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// The topic's partitions.
    pub partitions: Vec<i32>,
}

/// What a capture does with each record: write it to the recording, until its bound.
struct Capturing<'a> {
    w: recording::Writer,
    bound: Bound,
    started: Instant,
    failed: Option<ReplayError>,
    bar: indicatif::ProgressBar,
    url: &'a KafkaUrl,
}

impl Take for Capturing<'_> {
    fn record(&mut self, r: Record<'_>) {
        if self.failed.is_some() {
            return;
        }
        if let Bound::MaxRecords(n) = self.bound {
            if self.w.records >= n {
                return; // the rest of the last batch is not part of the capture
            }
        }
        let written = self.w.write(&Entry {
            partition: r.partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms.unwrap_or(-1),
            key: r.key,
            value: r.payload,
        });
        match written {
            Ok(()) if self.w.records % 4096 == 0 => self.bar.set_message(format!(
                "recording {}: {} records",
                self.url, self.w.records
            )),
            Ok(()) => {}
            Err(e) => self.failed = Some(e.into()),
        }
    }

    fn round(&mut self) -> Flow {
        let over = match self.bound {
            Bound::Duration(d) => self.started.elapsed() >= d,
            Bound::MaxRecords(n) => self.w.records >= n,
            Bound::UntilEnd | Bound::Never => false,
        };
        if over || self.failed.is_some() {
            Flow::Stop
        } else {
            Flow::Go
        }
    }
}

/// Copy every record of `url`'s topic, from the beginning of each partition, into a
/// recording at `out`, until `bound` or `stop`. The file is readable whatever stops it.
pub fn capture(
    url: &KafkaUrl,
    out: &Path,
    bound: Bound,
    properties: &Properties,
    stop: &AtomicBool,
) -> Result<Captured, ReplayError> {
    let partitions = ensure_topic(url, None, properties)?;
    let mut reader: Reader<Context> = Reader::new(
        url,
        &[
            ("group.id", "viewpulse-record"),
            ("enable.auto.commit", "false"),
            (
                "fetch.queue.backoff.ms",
                crate::source::kafka::FETCH_QUEUE_BACKOFF_MS,
            ),
            (
                "enable.partition.eof",
                if bound == Bound::UntilEnd {
                    "true"
                } else {
                    "false"
                },
            ),
        ],
        properties,
        Context::default(),
    )?;
    reader.context().started(false);
    let starts: Vec<(i32, Offset)> = partitions.iter().map(|&p| (p, Offset::Beginning)).collect();
    reader.assign(&starts, 8192)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let w = recording::Writer::create(
        out,
        &Header {
            version: recording::VERSION,
            source: url.to_string(),
            partitions: partitions.clone(),
            created_unix_ms: now_ms,
            writer: format!("viewpulse {}", env!("CARGO_PKG_VERSION")),
        },
    )?;
    // --until-end: each partition's high watermark as the capture starts (EOF the fallback)
    if bound == Bound::UntilEnd {
        reader.until_end(|_, low| Some(low), Duration::from_secs(10));
    }
    let mut capturing = Capturing {
        w,
        bound,
        started: Instant::now(),
        failed: None,
        bar: crate::progress::spinner(&format!("recording {url}")),
        url,
    };
    let limits = Limits {
        wait: Duration::from_millis(100),
        idle: None,
        outage: None,
    };
    let read = reader.run(stop, &limits, &mut capturing);
    capturing.bar.finish_and_clear();
    if let Some(e) = capturing.failed.take() {
        return Err(e);
    }
    read?;
    let bytes = capturing.w.bytes;
    let records = capturing.w.finish()?;
    let seconds = capturing.started.elapsed().as_secs_f64();
    info!(%url, records, bytes, seconds, file = %out.display(), "recorded");
    Ok(Captured {
        records,
        bytes,
        seconds,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_from_flags() {
        assert_eq!(Pace::from_flags(None, None, false).unwrap(), Pace::Max);
        assert_eq!(Pace::from_flags(None, None, true).unwrap(), Pace::Max);
        assert_eq!(
            Pace::from_flags(Some("50_000/s"), None, false).unwrap(),
            Pace::Rate(50_000.0)
        );
        assert_eq!(
            Pace::from_flags(None, Some(10.0), false).unwrap(),
            Pace::Speed(10.0)
        );
        for (r, x, m) in [
            (Some("fast"), None, false),
            (Some("0/s"), None, false),
            (None, Some(-1.0), false),
            (Some("5/s"), None, true),
        ] {
            assert!(Pace::from_flags(r, x, m).is_err());
        }
    }

    #[test]
    fn household_partitions_are_stable() {
        use crate::counters::household_hash;
        let p = household_partition(b"a,b,c,d,e,12345", 8);
        assert_eq!(p, (household_hash(12345) % 8) as i32);
        assert_eq!(household_partition(b"junk", 8), 0);
    }

    #[test]
    fn delivery_log_finds_production_times() {
        let l = DeliveryLog::default();
        l.delivered(0, 5, 100);
        l.delivered(0, 7, 300);
        l.delivered(1, 0, 50);
        assert_eq!(l.produced_at(0, 5), Some(100));
        assert_eq!(l.produced_at(0, 6), None);
        assert_eq!(l.produced_at(0, 7), Some(300));
        assert_eq!(l.produced_at(0, 4), None);
        assert_eq!(l.produced_at(1, 0), Some(50));
        assert_eq!(l.count(), 3);
    }

    #[test]
    fn keys_are_household_ids() {
        assert_eq!(household_key(b"a,b,c,d,e,12345\r"), b"12345");
        assert_eq!(household_key(b"junk"), b"junk");
        assert_eq!(household_key(b""), b"");
    }
}
