//! Everything that talks to Kafka starts here (SPEC 6: `kafka://HOST:PORT/TOPIC`):
//! - [`client_config`], the one client factory: every consumer, producer and admin client
//!   is configured by it, the user's properties (security settings and their secrets) last;
//! - [`Context`], the one client context ([`context`]);
//! - [`read`], the one poll loop, with its modes: bounded ([`count_topic`], `record`'s
//!   capture, the scale-out changelog reads), streaming ([`stream_topic`]) and group
//!   ([`group::stream_group`]);
//! - the source URL, the read settings and the messages a start that gives up prints.
//!
//! Producers (the dead-letter topic, the Kafka snapshot sink, `replay`, the scale-out
//! changelog) build on the factory and the context where they write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::Offset;
use tracing::warn;

use super::SourceError;
use crate::secret::{client_error, Properties};

pub mod batch;
pub mod context;
mod count;
pub mod group;
pub mod read;
mod stream;

pub use context::Context;
pub use count::{count_topic, TopicCount};
pub use read::PolledBatch;
pub use stream::{stream_topic, StreamOptions};

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
    stop: &AtomicBool,
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

/// The settings a daemon's consumer (one process or a group member) adds to its own.
pub const DAEMON_CONSUMER: &[(&str, &str)] = &[
    ("statistics.interval.ms", "1000"),
    // a snapshot daemon wants fresh records more than full fetches: Apache Kafka answers a
    // fetch as soon as a byte is there, but a broker that holds each fetch until the wait runs
    // out (tansu 0.6.0 did) made snapshots half a second stale at the 500 ms default
    ("fetch.wait.max.ms", "100"),
    // librdkafka prefetches up to 64 MB a partition by default; a daemon behind a fast
    // producer should hold less (the broker keeps the rest)
    ("queued.max.messages.kbytes", "16384"),
    ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
];

/// How long librdkafka waits before fetching a partition again once its local queue is full
/// (`fetch.queue.backoff.ms`). Its default, 1 s, made a reader that drains its queue fast
/// (the batch path of [`batch`]) wait up to a second for more now and then:
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Membership;

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
