//! `run`'s source in one process: the topic's partitions assigned by hand at the restored
//! checkpoint's offsets (or `start`), polled on the calling thread by the one poll loop
//! ([`super::read`]) and handed on in batches through a bounded channel, the known fast path
//! (a slow pipeline slows the poll loop). `--until-end` makes it bounded.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::read::{Flow, Limits, PolledBatch, Reader, Record, Take};
use super::{resume_at, Context, KafkaOptions, KafkaUrl, StartAt, DAEMON_CONSUMER};
use crate::source::SourceError;

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
    /// The client context to use, when the caller watches it (the daemon's metrics and
    /// probes read its watermarks, outages and assignment); none: a context of its own.
    pub context: Option<Context>,
    /// Next offset per partition of a restored checkpoint: those partitions are assigned at
    /// these offsets (the state's own, not the group's committed ones), the others at `start`.
    pub resume: BTreeMap<i32, i64>,
}

/// Batches handed to the channel when full or old enough.
struct Sending<'a> {
    batch: PolledBatch,
    since: Instant,
    limit: usize,
    wait: Duration,
    tx: &'a Sender<PolledBatch>,
}

impl Sending<'_> {
    /// Hand the batch over (an empty one is not sent); `false` when the receiver is gone.
    fn send(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        self.since = Instant::now();
        self.tx.send(std::mem::take(&mut self.batch)).is_ok()
    }
}

impl Take for Sending<'_> {
    #[inline]
    fn record(&mut self, r: Record<'_>) {
        self.batch.push(&r);
    }

    fn round(&mut self) -> Flow {
        let due = self.batch.len() >= self.limit
            || (!self.batch.is_empty() && self.since.elapsed() >= self.wait);
        if due && !self.send() {
            return Flow::Stop; // the pipeline is gone
        }
        Flow::Go
    }
}

/// Poll a topic on the calling thread and hand batches to `tx` (a bounded channel: a slow
/// pipeline slows the poll loop). Ends when every partition reached its end (`until_end`),
/// when `stop` is set, or when the receiver is gone; returns the next offset of each
/// partition read.
pub fn stream_topic(
    url: &KafkaUrl,
    opts: &StreamOptions,
    stop: &AtomicBool,
    tx: &Sender<PolledBatch>,
) -> Result<BTreeMap<i32, i64>, SourceError> {
    let ctx = opts.context.clone().unwrap_or_default();
    let own = [
        ("group.id", opts.group_id.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        (
            "enable.partition.eof",
            if opts.until_end { "true" } else { "false" },
        ),
        ("auto.offset.reset", "earliest"),
    ];
    let mut reader: Reader<Context> = Reader::new(
        url,
        &[&own[..], DAEMON_CONSUMER].concat(),
        &opts.client.properties,
        ctx,
    )?;
    let (partitions, warned) = reader.topic_partitions(&opts.client, stop)?;
    reader.context().started(warned);
    // a resumed partition starts at its stored offset exactly (or `resume_rewind` records
    // earlier, for a broker that needs it; what is before the offset is dropped by the
    // reader, and a broker that starts after it is reported)
    let starts: Vec<(i32, Offset)> = partitions
        .iter()
        .map(|&p| match opts.resume.get(&p) {
            Some(&o) => (p, resume_at(o, opts.client.resume_rewind)),
            None => (p, opts.start.offset()),
        })
        .collect();
    {
        let positions = reader.positions();
        let mut positions = positions.lock().unwrap_or_else(|e| e.into_inner());
        for (&p, &from) in &opts.resume {
            positions.resume(p, from);
        }
    }
    reader.assign(&starts, opts.batch_records)?;
    if opts.until_end {
        reader.until_end(
            |p, low| match (opts.resume.get(&p), opts.start) {
                (Some(&next), _) => Some(next),
                (None, StartAt::Earliest) => Some(low),
                // latest and stored: the end of partition event tells
                (None, _) => None,
            },
            opts.client.metadata_timeout,
        );
    }
    let mut sending = Sending {
        batch: PolledBatch::default(),
        since: Instant::now(),
        limit: opts.batch_records,
        wait: opts.batch_wait,
        tx,
    };
    let limits = Limits {
        wait: Duration::from_millis(20),
        idle: None,
        outage: opts.client.outage_limit,
    };
    match reader.run(stop, &limits, &mut sending) {
        Err(e) => {
            sending.send();
            return Err(e);
        }
        Ok(super::read::Ended::Told) => return Ok(reader.offsets()),
        Ok(_) => {}
    }
    let offsets = reader.offsets();
    // commit only what the pipeline took: a receiver gone (a failed pipeline) took nothing
    // more, and what it left in the channel was never counted
    let taken = if sending.batch.is_empty() {
        tx.send(PolledBatch::default()).is_ok()
    } else {
        sending.send()
    };
    if !taken {
        return Ok(offsets);
    }
    if opts.start == StartAt::Stored && !offsets.is_empty() {
        let mut commit = TopicPartitionList::new();
        for (&p, &o) in &offsets {
            let _ = commit.add_partition_offset(&url.topic, p, Offset::Offset(o));
        }
        if let Err(e) = reader.consumer().commit(&commit, CommitMode::Sync) {
            warn!(%url, error = %e, "could not commit offsets at the end");
        }
    }
    Ok(offsets)
}
