//! The one context of every Kafka client (consumers, producers, the admin client): logs and
//! errors to tracing, outages reported once each, the last connection failure for the message
//! of a start that gives up, and the partitions' high watermarks from the statistics. Clients
//! that need callbacks of their own wrap it and delegate to it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{debug, warn};

use super::batch::Failure;
use super::{is_undecodable, undecodable};

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
    /// Partitions the consumer holds now; -1 before its first assignment.
    assigned: Arc<AtomicI64>,
    /// Group rebalances this consumer went through (each revocation starts one).
    rebalances: Arc<AtomicU64>,
    /// Since when a rebalance has been under way (a revocation, not yet followed by the
    /// next assignment).
    rebalancing_since: Arc<std::sync::Mutex<Option<Instant>>>,
    /// The next offset of each partition that the daemon's state now covers (a checkpoint, a
    /// changelog entry, or a snapshot when neither is kept), for the consumer to commit to
    /// its group; the newest replaces one not committed yet.
    covered: Arc<std::sync::Mutex<Option<BTreeMap<i32, i64>>>>,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            highs: Arc::default(),
            down: Arc::new(AtomicBool::new(false)),
            starting: Arc::new(AtomicBool::new(true)),
            down_since: Arc::default(),
            last_failure: Arc::default(),
            assigned: Arc::new(AtomicI64::new(-1)),
            rebalances: Arc::new(AtomicU64::new(0)),
            rebalancing_since: Arc::default(),
            covered: Arc::default(),
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

    /// Whether the first connection has not succeeded yet.
    pub fn is_starting(&self) -> bool {
        self.starting.load(Ordering::Relaxed)
    }

    /// The consumer now holds `n` partitions; a rebalance under way, if any, is over.
    pub fn assigned(&self, n: usize) {
        self.assigned
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
        if let Ok(mut since) = self.rebalancing_since.lock() {
            *since = None;
        }
    }

    /// The group takes the consumer's partitions away: a rebalance begins.
    pub fn revoking(&self) {
        self.rebalances.fetch_add(1, Ordering::Relaxed);
        self.assigned.store(0, Ordering::Relaxed);
        if let Ok(mut since) = self.rebalancing_since.lock() {
            since.get_or_insert_with(Instant::now);
        }
    }

    /// Partitions held now, once the consumer has had its first assignment.
    pub fn holding(&self) -> Option<usize> {
        usize::try_from(self.assigned.load(Ordering::Relaxed)).ok()
    }

    /// Rebalances so far.
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Relaxed)
    }

    /// How long the rebalance under way has lasted, if one is.
    pub fn rebalancing_for(&self) -> Option<Duration> {
        self.rebalancing_since
            .lock()
            .ok()
            .and_then(|s| s.map(|t| t.elapsed()))
    }

    /// The daemon's state now covers every partition up to `next` (exclusive): the consumer
    /// commits it to its group at its next round (advisory: the state's own offsets stay
    /// the truth on a restore), so that the group's tools show where the daemon stands.
    pub fn cover(&self, next: BTreeMap<i32, i64>) {
        if let Ok(mut c) = self.covered.lock() {
            *c = Some(next);
        }
    }

    /// What to commit, if something new is covered.
    pub fn take_covered(&self) -> Option<BTreeMap<i32, i64>> {
        self.covered.lock().ok().and_then(|mut c| c.take())
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

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("starting", &self.is_starting())
            .field("outage", &self.outage_lasted())
            .field("holding", &self.holding())
            .field("rebalances", &self.rebalances())
            .finish_non_exhaustive()
    }
}

impl AsRef<Context> for Context {
    fn as_ref(&self) -> &Context {
        self
    }
}
