//! The daemon's dead-letter sinks: where the malformed records a shard met go, with their
//! source position (`partition P offset O`, or `line N` for a file): a file (the same
//! tab-separated lines as `analyze --dead-letter`) or a Kafka topic (key = the position, value
//! = the record's bytes, header `kind`). The writer thread ([`crate::pipeline::writer`]) owns
//! one and decides when to write, flush and sync.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use tracing::{info, warn};

use super::DeadLetter;
use crate::pipeline::PipelineError;
use crate::record::Malformed;
use crate::source::kafka::{Context, KafkaOptions, KafkaUrl};

/// A malformed record and where it came from.
#[derive(Debug, Clone)]
pub struct DeadRecord {
    /// Input partition (0 for a file).
    pub partition: i32,
    /// Offset in the partition (0-based line index for a file).
    pub offset: i64,
    /// Why it is malformed.
    pub kind: Malformed,
    /// Its bytes.
    pub record: Vec<u8>,
}

/// Where malformed records go.
#[derive(Debug, Clone)]
pub enum DeadLetterTarget {
    /// A file: `position<TAB>kind<TAB>record` lines (the same as `analyze --dead-letter`).
    File(PathBuf),
    /// A Kafka topic (it must exist): key = the position, value = the record's bytes, header
    /// `kind`.
    Kafka {
        /// The topic.
        url: KafkaUrl,
        /// Client settings (security).
        client: KafkaOptions,
    },
}

/// Where a record stood, as the dead-letter sink writes it.
pub fn position(file_source: bool, partition: i32, offset: i64) -> String {
    if file_source {
        format!("line {}", offset + 1)
    } else {
        format!("partition {partition} offset {offset}")
    }
}

/// `(partition, offset)` back from [`position`].
pub fn parse_position(p: &str) -> Option<(i32, i64)> {
    if let Some(line) = p.strip_prefix("line ") {
        return line.parse::<i64>().ok().map(|l| (0, l - 1));
    }
    let rest = p.strip_prefix("partition ")?;
    let (part, off) = rest.split_once(" offset ")?;
    Some((part.parse().ok()?, off.parse().ok()?))
}

/// A producer context that counts undelivered messages in `failed` and says so once; it
/// logs, and tells outages, through the one client context ([`Context`]).
pub struct Delivery {
    /// Messages not delivered so far.
    pub failed: Arc<AtomicU64>,
    /// What a message is, for the warning (`a dead letter`).
    pub what: &'static str,
    /// The client context every Kafka client shares.
    pub client: Context,
}

impl Delivery {
    /// Count the undelivered messages of `what` in `failed`.
    pub fn new(failed: Arc<AtomicU64>, what: &'static str) -> Delivery {
        Delivery {
            failed,
            what,
            client: Context::running(),
        }
    }
}

impl ClientContext for Delivery {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        self.client.log(level, fac, msg)
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.client.error(error, reason)
    }
}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            // a delivered message ends an outage (and says so once)
            Ok(_) => self.client.reachable(),
            Err((e, _)) => {
                if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    warn!(error = %e, "{} could not be delivered", self.what);
                }
            }
        }
    }
}

/// An open dead-letter sink.
pub enum DeadLetterSink {
    File(DeadLetter),
    Kafka {
        producer: BaseProducer<Delivery>,
        topic: String,
        failed: Arc<AtomicU64>,
        url: String,
    },
}

/// A dead-letter file's write error, naming the file and the cause.
pub(crate) fn dead_letter_file(e: crate::sink::SinkError) -> PipelineError {
    let path = e.path().to_path_buf();
    PipelineError::sink("dead letters", &path, e.into_cause())
}

impl DeadLetterSink {
    /// Open the target; `resume` drops the lines past a restored checkpoint from a file.
    pub fn open(
        target: &DeadLetterTarget,
        resume: Option<&BTreeMap<i32, i64>>,
    ) -> Result<DeadLetterSink, PipelineError> {
        match target {
            DeadLetterTarget::File(path) => {
                let err = dead_letter_file;
                let file = match resume {
                    None => DeadLetter::create(path).map_err(err)?,
                    Some(offsets) => {
                        let (d, dropped) = DeadLetter::resume(path, |p| {
                            parse_position(p).is_some_and(|(part, off)| {
                                offsets.get(&part).is_some_and(|&next| off < next)
                            })
                        })
                        .map_err(err)?;
                        if dropped > 0 {
                            info!(path = %path.display(), dropped, "dead letters after the checkpoint dropped; they are met again");
                        }
                        d
                    }
                };
                Ok(DeadLetterSink::File(file))
            }
            DeadLetterTarget::Kafka { url, client } => {
                let failed = Arc::new(AtomicU64::new(0));
                let cfg = crate::source::kafka::client_config(
                    &url.brokers,
                    &[("linger.ms", "20"), ("message.timeout.ms", "30000")],
                    &client.properties,
                );
                let producer = cfg
                    .create_with_context(Delivery::new(failed.clone(), "a dead letter"))
                    .map_err(|e| PipelineError::KafkaConfig {
                        url: url.to_string(),
                        message: format!(
                            "cannot create a producer: {}",
                            crate::secret::client_error(&e, &client.properties)
                        ),
                    })?;
                Ok(DeadLetterSink::Kafka {
                    producer,
                    topic: url.topic.clone(),
                    failed,
                    url: url.to_string(),
                })
            }
        }
    }

    /// Write one record.
    pub fn write(&mut self, r: &DeadRecord, file_source: bool) -> Result<(), PipelineError> {
        let pos = position(file_source, r.partition, r.offset);
        match self {
            DeadLetterSink::File(d) => d
                .write(&pos, r.kind.name(), &r.record)
                .map_err(dead_letter_file),
            DeadLetterSink::Kafka {
                producer, topic, ..
            } => {
                let headers =
                    rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                        key: "kind",
                        value: Some(r.kind.name()),
                    });
                let mut rec = BaseRecord::to(topic.as_str())
                    .key(pos.as_bytes())
                    .payload(&r.record[..])
                    .headers(headers);
                loop {
                    match producer.send(rec) {
                        Ok(()) => return Ok(()),
                        Err((e, back))
                            if e.rdkafka_error_code()
                                == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                        {
                            producer.poll(Duration::from_millis(10));
                            rec = back;
                        }
                        Err((e, _)) => {
                            return Err(PipelineError::KafkaSink {
                                what: "dead letters",
                                url: topic.clone(),
                                message: format!("cannot send a dead letter: {e}"),
                            })
                        }
                    }
                }
            }
        }
    }

    /// Everything written so far is durable.
    pub fn sync(&mut self) -> Result<(), PipelineError> {
        match self {
            DeadLetterSink::File(d) => d.sync().map_err(dead_letter_file),
            DeadLetterSink::Kafka {
                producer,
                failed,
                url,
                ..
            } => {
                producer
                    .flush(Duration::from_secs(30))
                    .map_err(|e| PipelineError::KafkaSink {
                        what: "dead letters",
                        url: url.clone(),
                        message: format!("not acknowledged: {e}"),
                    })?;
                let n = failed.load(Ordering::Relaxed);
                if n > 0 {
                    return Err(PipelineError::KafkaSink {
                        what: "dead letters",
                        url: url.clone(),
                        message: format!("{n} could not be delivered"),
                    });
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        for (file, p, o) in [(true, 0, 0), (true, 0, 41), (false, 3, 0), (false, 12, 99)] {
            assert_eq!(parse_position(&position(file, p, o)), Some((p, o)));
        }
        assert_eq!(parse_position("line x"), None);
        assert_eq!(parse_position("partition 1 offset"), None);
    }
}
