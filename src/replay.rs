//! Producing records into Kafka: a views file (one record a line) produced into a topic,
//! each record keyed by its household id so that a household's records share a partition, as
//! fast as the broker takes them. Used by the demo to fill its topic; recorded replays at a set
//! rate build on it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tracing::info;

use crate::source::kafka::KafkaUrl;
use crate::source::SourceError;

/// The key of a record: its last field (the household id), or the whole record.
#[inline]
pub fn household_key(record: &[u8]) -> &[u8] {
    let record = record.strip_suffix(b"\r").unwrap_or(record);
    match memchr::memrchr(b',', record) {
        Some(p) => &record[p + 1..],
        None => record,
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Produced {
    /// Records delivered.
    pub records: u64,
    /// Seconds from the first send to the last delivery.
    pub seconds: f64,
}

/// Produce every line of `path` into `url`'s topic and wait until all are delivered.
pub fn produce_file(
    path: &Path,
    url: &KafkaUrl,
    properties: &BTreeMap<String, String>,
) -> Result<Produced, SourceError> {
    let kafka = |message: String| SourceError::Kafka {
        url: url.to_string(),
        message,
    };
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &url.brokers)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000");
    for (k, v) in properties {
        cfg.set(k, v);
    }
    let producer: BaseProducer = cfg
        .create()
        .map_err(|e| kafka(format!("cannot create a producer: {e}")))?;
    let opened = crate::source::open(path)?;
    let mut r = BufReader::with_capacity(1 << 20, opened.reader);
    let mut line = Vec::with_capacity(256);
    let started = Instant::now();
    let mut records = 0u64;
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(|e| SourceError::Io {
                path: path.to_path_buf(),
                source: e,
            })?;
        if n == 0 {
            break;
        }
        let rec = line.strip_suffix(b"\n").unwrap_or(&line);
        let mut msg = BaseRecord::to(&url.topic)
            .payload(rec)
            .key(household_key(rec));
        loop {
            match producer.send(msg) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    producer.poll(Duration::from_millis(5));
                    msg = back;
                }
                Err((e, _)) => return Err(kafka(format!("record {}: {e}", records + 1))),
            }
        }
        records += 1;
        if records % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| kafka(format!("not every record was delivered: {e}")))?;
    let seconds = started.elapsed().as_secs_f64();
    info!(%url, records, seconds, "file produced");
    Ok(Produced { records, seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_household_ids() {
        assert_eq!(household_key(b"a,b,c,d,e,12345\r"), b"12345");
        assert_eq!(household_key(b"junk"), b"junk");
        assert_eq!(household_key(b""), b"");
    }
}
