//! `analyze` and `replay`'s checks read a topic as a bounded source (SPEC 6:
//! `kafka://HOST:PORT/TOPIC`): every record the topic holds when the read starts, from the
//! beginning of each partition, with partitions assigned by hand (no group rebalances) and
//! read to their ends ([`super::read::Ends`]). Records are copied into a batch arena and
//! counted with the batched core.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rdkafka::Offset;
use tracing::debug;

use super::read::{Flow, Limits, PolledBatch, Reader, Record, Take};
use super::{Context, KafkaOptions, KafkaUrl, FETCH_QUEUE_BACKOFF_MS};
use crate::counters::{Counters, Membership};
use crate::sink::DeadLetter;
use crate::source::SourceError;

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

/// Records counted a batch at a time, the malformed ones written to the dead-letter file.
struct Counting<'a> {
    batch: PolledBatch,
    limit: usize,
    counters: Counters,
    membership: &'a Membership,
    dead: Option<DeadLetter>,
    bytes: u64,
    failed: Option<SourceError>,
    bar: indicatif::ProgressBar,
    url: &'a KafkaUrl,
}

impl Counting<'_> {
    fn flush(&mut self) -> Result<(), SourceError> {
        let records = self.batch.records();
        let mut bad = Vec::new();
        self.counters
            .count_batch(&records, self.membership, |i, kind| bad.push((i, kind)));
        if let Some(d) = &mut self.dead {
            for (i, kind) in bad {
                let (p, o) = self.batch.positions[i];
                d.write(
                    &format!("partition {p} offset {o}"),
                    kind.name(),
                    records[i],
                )?;
            }
        }
        self.batch.clear();
        Ok(())
    }
}

impl Take for Counting<'_> {
    #[inline]
    fn record(&mut self, r: Record<'_>) {
        self.bytes += r.payload.len() as u64;
        self.batch.push(&r);
    }

    fn round(&mut self) -> Flow {
        if self.batch.len() < self.limit {
            return Flow::Go;
        }
        match self.flush() {
            Ok(()) => {
                self.bar.set_message(format!(
                    "reading {}: {} records",
                    self.url, self.counters.records
                ));
                Flow::Go
            }
            Err(e) => {
                self.failed = Some(e);
                Flow::Stop
            }
        }
    }
}

/// Read and count every record `url`'s topic holds, from the beginning of each partition.
pub fn count_topic(
    url: &KafkaUrl,
    membership: &Membership,
    opts: &KafkaOptions,
    dead_letter: Option<&Path>,
) -> Result<TopicCount, SourceError> {
    let mut reader: Reader<Context> = Reader::new(
        url,
        &[
            ("group.id", "viewpulse-bounded-read"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", "earliest"),
            ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
        ],
        &opts.properties,
        Context::default(),
    )?;
    let never = AtomicBool::new(false);
    let (partitions, warned) = reader.topic_partitions(opts, &never)?;
    let starts: Vec<(i32, Offset)> = partitions.iter().map(|&p| (p, Offset::Beginning)).collect();
    reader.assign(&starts, opts.batch)?;
    reader.context().started(warned);
    reader.until_end(|_, low| Some(low), opts.metadata_timeout);
    debug!(%url, partitions = partitions.len(), "bounded read started");

    let mut counting = Counting {
        batch: PolledBatch {
            data: Vec::with_capacity(opts.batch * 64),
            ends: Vec::with_capacity(opts.batch),
            positions: Vec::with_capacity(opts.batch),
        },
        limit: opts.batch,
        counters: Counters::for_membership(membership),
        membership,
        dead: match dead_letter {
            Some(p) => Some(DeadLetter::create(p)?),
            None => None,
        },
        bytes: 0,
        failed: None,
        bar: crate::progress::spinner(&format!("reading {url}")),
        url,
    };
    let limits = Limits {
        wait: Duration::from_millis(100),
        idle: Some(opts.idle_timeout),
        outage: None,
    };
    reader.run(&never, &limits, &mut counting)?;
    if let Some(e) = counting.failed.take() {
        return Err(e);
    }
    counting.flush()?;
    counting.bar.finish_and_clear();
    let dead_letters = match counting.dead {
        Some(d) => d.finish()?,
        None => 0,
    };
    // every partition is covered from 0, those without a record too
    let mut offsets: BTreeMap<i32, i64> = partitions.iter().map(|&p| (p, 0)).collect();
    offsets.extend(reader.offsets());
    Ok(TopicCount {
        counters: counting.counters,
        bytes: counting.bytes,
        dead_letters,
        offsets,
    })
}
