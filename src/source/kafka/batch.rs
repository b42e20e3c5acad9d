//! The fast read path of a consumer whose partitions are assigned by hand: their fetched
//! messages are taken off the consumer's queue into a queue of their own and consumed a batch
//! at a time with librdkafka's `rd_kafka_consume_batch_queue` (one lock and one call per batch),
//! where rdkafka's `BaseConsumer::poll` costs a queue pop, an event and an allocation per
//! message. Measured on the daemon bench (README, Performance): a bare per-message poll loop
//! reads about 1.0 M records/s here, an upper bound for a daemon polling that way; the daemon
//! on this path reads 1.7-2.2 M records/s, counting included.
//! The consumer's own queue (logs, statistics, errors, and a group's messages and rebalances)
//! is served by [`serve`]. The unsafe code is confined here: a queue must not outlive its
//! consumer (its owner, [`super::read::Reader`], drops it first), and each message is destroyed
//! right after the callback that borrows its bytes.

use std::ffi::CString;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;

/// One thing a poll found.
#[derive(Debug)]
pub enum Polled<'a> {
    /// A record of `partition` at `offset`.
    Record {
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// Its value (empty for a null value).
        payload: &'a [u8],
        /// Its key, if any.
        key: Option<&'a [u8]>,
        /// Its timestamp in milliseconds since the epoch, if any.
        timestamp_ms: Option<i64>,
    },
    /// The end of `partition` was reached (with `enable.partition.eof`).
    End(i32),
    /// An error from the client or a partition.
    Error(KafkaError),
    /// A message that could not be delivered (a batch that does not decompress says so here).
    Failed(Failure),
}

/// A message of `partition` at `offset` that librdkafka could not deliver, with its text.
#[derive(Debug)]
pub struct Failure {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The error.
    pub code: RDKafkaErrorCode,
    /// librdkafka's description.
    pub text: String,
}

/// Serve the consumer's own queue: wait up to `timeout` for the first event, then take what
/// comes without waiting, `limit` events at the most (a poll that served only a callback,
/// such as a rebalance or statistics, ends the call early); hand each to `f` (the lock `f` may
/// take is not held while librdkafka runs callbacks, such as a group's rebalances). Returns
/// how many events it served.
pub fn serve<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    timeout: Duration,
    limit: usize,
    mut f: impl FnMut(Polled<'_>),
) -> usize {
    let mut served = 0;
    let mut wait = timeout;
    while served < limit {
        let Some(r) = consumer.poll(wait) else { break };
        wait = Duration::ZERO;
        served += 1;
        match r {
            Ok(m) => f(Polled::Record {
                partition: m.partition(),
                offset: m.offset(),
                payload: m.payload().unwrap_or(&[]),
                key: m.key(),
                timestamp_ms: m.timestamp().to_millis(),
            }),
            Err(KafkaError::PartitionEOF(p)) => f(Polled::End(p)),
            Err(e) => f(Polled::Error(e)),
        }
    }
    served
}

/// The split-off queue of some partitions of one consumer.
pub struct BatchQueue {
    queue: *mut rdsys::rd_kafka_queue_t,
    buf: Vec<*mut rdsys::rd_kafka_message_t>,
}

impl BatchQueue {
    /// Move `partitions` of `topic` off `consumer`'s queue into a new one, consumed `batch`
    /// messages at a time at the most. Call before assigning them, so that no message lands
    /// on the consumer's queue first.
    ///
    /// # Safety
    /// The queue must be dropped before `consumer`.
    pub unsafe fn split<C: ConsumerContext>(
        consumer: &BaseConsumer<C>,
        topic: &str,
        partitions: &[i32],
        batch: usize,
    ) -> Result<BatchQueue, String> {
        let name = CString::new(topic).map_err(|_| format!("topic {topic:?} holds a NUL byte"))?;
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk` is the live client handle of `consumer`, which outlives the queue.
        let queue = unsafe { rdsys::rd_kafka_queue_new(rk) };
        if queue.is_null() {
            return Err("librdkafka made no queue".into());
        }
        let q = BatchQueue {
            queue,
            buf: vec![std::ptr::null_mut(); batch.max(1)],
        };
        for &p in partitions {
            // SAFETY: a valid handle and a NUL-terminated name; the partition's queue handle
            // is released right after it is forwarded (forwarding holds its own reference).
            unsafe {
                let pq = rdsys::rd_kafka_queue_get_partition(rk, name.as_ptr(), p);
                if pq.is_null() {
                    return Err(format!("librdkafka has no queue for partition {p}"));
                }
                rdsys::rd_kafka_queue_forward(pq, q.queue);
                rdsys::rd_kafka_queue_destroy(pq);
            }
        }
        Ok(q)
    }

    /// Wait up to `timeout` for a batch of messages and hand each to `f`. Returns how many
    /// messages the batch held.
    pub fn batch(&mut self, timeout: Duration, mut f: impl FnMut(Polled<'_>)) -> usize {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the queue is live and `buf` has room for `buf.len()` message pointers.
        let n = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue,
                ms,
                self.buf.as_mut_ptr(),
                self.buf.len(),
            )
        };
        let n = usize::try_from(n).unwrap_or(0).min(self.buf.len());
        // what is not handed on yet is destroyed even if `f` panics: a client closed while
        // it still has messages out may wait for them
        let mut rest = Rest {
            messages: &self.buf[..n],
            next: 0,
        };
        for (i, &m) in self.buf[..n].iter().enumerate() {
            rest.next = i;
            // SAFETY: librdkafka filled `n` valid message pointers; each is read, handed on as
            // a borrow that ends with `f`, and destroyed once (here, or by `rest` on a panic).
            unsafe {
                let msg = &*m;
                match msg.err {
                    rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => {
                        let payload = if msg.payload.is_null() {
                            &[][..]
                        } else {
                            std::slice::from_raw_parts(msg.payload as *const u8, msg.len)
                        };
                        let key = if msg.key.is_null() {
                            None
                        } else {
                            Some(std::slice::from_raw_parts(
                                msg.key as *const u8,
                                msg.key_len,
                            ))
                        };
                        let ts = rdsys::rd_kafka_message_timestamp(m, std::ptr::null_mut());
                        f(Polled::Record {
                            partition: msg.partition,
                            offset: msg.offset,
                            payload,
                            key,
                            timestamp_ms: (ts != -1).then_some(ts),
                        })
                    }
                    rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                        f(Polled::End(msg.partition))
                    }
                    err => {
                        // librdkafka puts its error text in the payload of an error message
                        let text = if msg.payload.is_null() {
                            String::new()
                        } else {
                            String::from_utf8_lossy(std::slice::from_raw_parts(
                                msg.payload as *const u8,
                                msg.len,
                            ))
                            .into_owned()
                        };
                        f(Polled::Failed(Failure {
                            partition: msg.partition,
                            offset: msg.offset,
                            code: RDKafkaErrorCode::from(err),
                            text,
                        }))
                    }
                }
                rdsys::rd_kafka_message_destroy(m);
            }
            rest.next = i + 1;
        }
        n
    }
}

/// The messages of a batch from `next` on, destroyed when it is dropped (by a panic while
/// they were handed on; after a whole batch there are none).
struct Rest<'a> {
    messages: &'a [*mut rdsys::rd_kafka_message_t],
    next: usize,
}

impl Drop for Rest<'_> {
    fn drop(&mut self) {
        for &m in self.messages.get(self.next..).unwrap_or(&[]) {
            // SAFETY: these were filled by librdkafka and not destroyed yet
            unsafe { rdsys::rd_kafka_message_destroy(m) };
        }
    }
}

impl Drop for BatchQueue {
    fn drop(&mut self) {
        // SAFETY: created in `split`, destroyed once, before the consumer (`split`'s contract).
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue) };
    }
}
