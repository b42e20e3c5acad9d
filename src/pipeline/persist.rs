//! The persister: one thread that makes the daemon's work durable, in the order it happened.
//! Shards hand it the malformed records they met (for the dead-letter sink, with their source
//! position), the router hands it a checkpoint after each trigger; because both go through one
//! bounded channel, every dead letter of the records a checkpoint counts is written and synced
//! before that checkpoint is, and a persister that falls behind slows the pipeline instead of
//! queueing without bound.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use tracing::{info, warn};

use super::metrics::Metrics;
use super::PipelineError;
use crate::checkpoint::{Checkpoint, Store};
use crate::record::Malformed;
use crate::sink::DeadLetter;
use crate::source::kafka::{KafkaOptions, KafkaUrl};

/// Capacity of the persister's channel, in messages.
pub const QUEUE: usize = 16;

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

/// What the persister is asked to do.
#[derive(Debug)]
pub enum Persist {
    /// Keep these malformed records.
    DeadLetters(Vec<DeadRecord>),
    /// Write this checkpoint (after every dead letter sent before it).
    Checkpoint(Box<Checkpoint>),
    /// Every dead letter of the records before the last trigger has been sent: write them,
    /// in (partition, offset) order.
    Flush,
    /// Sync and stop.
    Finish,
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

/// A producer context that counts undelivered messages in `failed` and says so once.
pub(crate) struct Delivery {
    /// Messages not delivered so far.
    pub failed: Arc<AtomicU64>,
    /// What a message is, for the warning (`a dead letter`).
    pub what: &'static str,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                warn!(error = %e, "{} could not be delivered", self.what);
            }
        }
    }
}

enum Sink {
    File(DeadLetter),
    Kafka {
        producer: BaseProducer<Delivery>,
        topic: String,
        failed: Arc<AtomicU64>,
        url: String,
    },
}

/// A dead-letter file's write error, naming the file and the cause.
fn dead_letter_file(e: crate::sink::SinkError) -> PipelineError {
    PipelineError::Sink {
        what: "dead letters",
        path: e.path().display().to_string(),
        message: e.cause(),
    }
}

impl Sink {
    fn open(
        target: &DeadLetterTarget,
        resume: Option<&BTreeMap<i32, i64>>,
    ) -> Result<Sink, PipelineError> {
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
                Ok(Sink::File(file))
            }
            DeadLetterTarget::Kafka { url, client } => {
                let failed = Arc::new(AtomicU64::new(0));
                let mut cfg = ClientConfig::new();
                cfg.set("bootstrap.servers", &url.brokers)
                    .set("linger.ms", "20")
                    .set("message.timeout.ms", "30000");
                for (k, v) in &client.properties {
                    cfg.set(k, v);
                }
                let producer = cfg
                    .create_with_context(Delivery {
                        failed: failed.clone(),
                        what: "a dead letter",
                    })
                    .map_err(|e| PipelineError::KafkaConfig {
                        url: url.to_string(),
                        message: format!(
                            "cannot create a producer: {}",
                            crate::secret::client_error(&e, &client.properties)
                        ),
                    })?;
                Ok(Sink::Kafka {
                    producer,
                    topic: url.topic.clone(),
                    failed,
                    url: url.to_string(),
                })
            }
        }
    }

    fn write(&mut self, r: &DeadRecord, file_source: bool) -> Result<(), PipelineError> {
        let pos = position(file_source, r.partition, r.offset);
        match self {
            Sink::File(d) => d
                .write(&pos, r.kind.name(), &r.record)
                .map_err(dead_letter_file),
            Sink::Kafka {
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
    fn sync(&mut self) -> Result<(), PipelineError> {
        match self {
            Sink::File(d) => d.sync().map_err(dead_letter_file),
            Sink::Kafka {
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

/// The running persister.
pub struct Persister {
    tx: Sender<Persist>,
    handle: JoinHandle<Result<(), PipelineError>>,
}

impl Persister {
    /// Start the thread. `resume` is the restored checkpoint's offsets (dead letters past
    /// them are dropped from a file sink: the restored run meets those records again).
    pub fn start(
        store: Option<Store>,
        dead: Option<&DeadLetterTarget>,
        resume: Option<&BTreeMap<i32, i64>>,
        file_source: bool,
        metrics: Arc<Metrics>,
    ) -> Result<Persister, PipelineError> {
        let sink = match dead {
            Some(t) => Some(Sink::open(t, resume)?),
            None => None,
        };
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let handle = std::thread::Builder::new()
            .name("persister".into())
            .spawn(move || run(rx, store, sink, file_source, &metrics))
            .map_err(|e| PipelineError::Runtime(e.to_string()))?;
        Ok(Persister { tx, handle })
    }

    /// A sender for shards and the router.
    pub fn sender(&self) -> Sender<Persist> {
        self.tx.clone()
    }

    /// Sync everything and stop.
    pub fn finish(self) -> Result<(), PipelineError> {
        let _ = self.tx.send(Persist::Finish);
        match self.handle.join() {
            Ok(r) => r,
            Err(_) => Err(PipelineError::Runtime("the persister panicked".into())),
        }
    }
}

fn run(
    rx: Receiver<Persist>,
    mut store: Option<Store>,
    mut sink: Option<Sink>,
    file_source: bool,
    metrics: &Metrics,
) -> Result<(), PipelineError> {
    // The shards send their dead letters as they count, in an order that differs from run to
    // run; they wait here and are written in (partition, offset) order at every trigger,
    // checkpoint and stop (the points where every record before them has been counted), so
    // that the file is the same on every run. Past WAITING records they are written early.
    const WAITING: usize = 1 << 16;
    let mut waiting: Vec<DeadRecord> = Vec::new();
    let write_waiting =
        |sink: &mut Option<Sink>, waiting: &mut Vec<DeadRecord>| -> Result<(), PipelineError> {
            if let Some(s) = sink {
                waiting.sort_by_key(|r| (r.partition, r.offset));
                for r in waiting.iter() {
                    s.write(r, file_source)?;
                }
                metrics
                    .dead_letters
                    .fetch_add(waiting.len() as u64, Ordering::Relaxed);
            }
            waiting.clear();
            Ok(())
        };
    while let Ok(msg) = rx.recv() {
        match msg {
            Persist::DeadLetters(records) => {
                if sink.is_some() {
                    waiting.extend(records);
                    if waiting.len() >= WAITING {
                        write_waiting(&mut sink, &mut waiting)?;
                    }
                }
            }
            Persist::Flush => {
                write_waiting(&mut sink, &mut waiting)?;
                // a file gets the trigger's dead letters now (a failed write later cuts it
                // back to here, not to its header)
                if let Some(Sink::File(d)) = &mut sink {
                    d.flush().map_err(dead_letter_file)?;
                }
            }
            Persist::Checkpoint(c) => {
                let t = Instant::now();
                write_waiting(&mut sink, &mut waiting)?;
                if let Some(s) = &mut sink {
                    s.sync()?;
                }
                if let Some(st) = &mut store {
                    st.write(&c)?;
                    metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
                    metrics
                        .checkpoint_nanos
                        .store(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
            }
            Persist::Finish => break,
        }
    }
    write_waiting(&mut sink, &mut waiting)?;
    if let Some(s) = &mut sink {
        s.sync()?;
    }
    Ok(())
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
