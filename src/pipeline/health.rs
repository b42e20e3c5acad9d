//! What the readiness probe says, from the live [`Metrics`]: a plain function of them and the
//! configured bounds, with no I/O and no actix (the HTTP endpoint, `sink::http`, serves it as
//! `/readyz` and `/healthz`, and asks the actors themselves for `/livez`). Ready means:
//! - not draining (a signal or the end of a bounded source stops the process);
//! - for a Kafka source, the brokers are reachable (connected once, no outage on);
//! - the process holds its partitions, or has been rebalancing for less than a bound;
//! - the pipeline keeps up: with interval triggers, records counted since the last trigger
//!   wait no longer than the bound (a multiple of the trigger interval); and records still
//!   in the broker (a consumer lag of more than one offset a partition, which a
//!   transaction's commit marker can leave) do not wait while nothing is consumed for that
//!   long. A quiet topic, or a busy one read as fast as it comes, stays ready.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use super::metrics::Metrics;

/// The bounds of readiness.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadyBounds {
    /// The last trigger may be this old while records wait.
    pub trigger_age: Duration,
    /// Whether interval triggers are on (then records counted and not triggered wait too).
    pub interval_triggers: bool,
    /// A rebalance may last this long.
    pub rebalance_grace: Duration,
}

/// One check of a probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// Whether it passes.
    pub ok: bool,
    /// What was found, in words.
    pub detail: String,
}

fn check(name: &'static str, ok: bool, detail: String) -> Check {
    Check { name, ok, detail }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Every readiness check, passing or not, in a fixed order.
pub fn readiness(m: &Metrics, b: &ReadyBounds) -> Vec<Check> {
    let mut out = Vec::with_capacity(4);
    let draining = m.draining.load(Ordering::Relaxed);
    out.push(check(
        "running",
        !draining,
        if draining { "draining" } else { "running" }.into(),
    ));
    if let Some(k) = m.kafka() {
        out.push(match (k.is_starting(), k.outage_lasted()) {
            (true, _) => check("broker", false, "not connected yet".into()),
            (false, Some(d)) => check("broker", false, format!("unreachable for {}", secs(d))),
            (false, None) => check("broker", true, "reachable".into()),
        });
        out.push(match (k.holding(), k.rebalancing_for()) {
            (None, _) => check("partitions", false, "no partition assigned yet".into()),
            (Some(_), Some(d)) if d > b.rebalance_grace => check(
                "partitions",
                false,
                format!(
                    "rebalancing for {} (grace {})",
                    secs(d),
                    secs(b.rebalance_grace)
                ),
            ),
            (Some(_), Some(d)) => check("partitions", true, format!("rebalancing for {}", secs(d))),
            (Some(n), None) => check("partitions", true, format!("{n} held")),
        });
    }
    let consumed = m.records.load(Ordering::Relaxed);
    let since_trigger = consumed.saturating_sub(m.records_at_trigger.load(Ordering::Relaxed));
    let since_start = || Duration::from_secs_f64(m.uptime());
    let trigger_age = m.last_trigger.age().unwrap_or_else(since_start);
    let idle = m.last_progress.age().unwrap_or_else(since_start);
    let positions = m.positions();
    let lag = m.lag();
    // a commit marker leaves one offset a partition that no record fills
    let slack = i64::try_from(positions.len()).unwrap_or(i64::MAX);
    out.push(
        if b.interval_triggers && since_trigger > 0 && trigger_age > b.trigger_age {
            check(
                "snapshots",
                false,
                format!(
                    "{since_trigger} records counted but the last trigger was {} ago (bound {})",
                    secs(trigger_age),
                    secs(b.trigger_age)
                ),
            )
        } else if lag > slack && idle > b.trigger_age {
            check(
                "snapshots",
                false,
                format!(
                    "lag {lag} but nothing consumed for {} (bound {})",
                    secs(idle),
                    secs(b.trigger_age)
                ),
            )
        } else {
            check(
                "snapshots",
                true,
                format!(
                    "last trigger {} ago, last record consumed {} ago, lag {lag}",
                    secs(trigger_age),
                    secs(idle)
                ),
            )
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> ReadyBounds {
        ReadyBounds {
            trigger_age: Duration::from_millis(50),
            interval_triggers: true,
            rebalance_grace: Duration::from_millis(50),
        }
    }

    fn failing(m: &Metrics, b: &ReadyBounds) -> Vec<&'static str> {
        readiness(m, b)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect()
    }

    /// A file source: ready while running and fresh; stale once records wait past the bound;
    /// fresh again at the next trigger; never ready while draining.
    #[test]
    fn a_file_source_is_ready_while_its_snapshots_are_fresh() {
        let m = Metrics::new(1);
        let b = bounds();
        assert!(failing(&m, &b).is_empty(), "nothing waits yet");
        m.consumed(10);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(failing(&m, &b), ["snapshots"]);
        let quiet = ReadyBounds {
            interval_triggers: false,
            ..b
        };
        assert!(
            failing(&m, &quiet).is_empty(),
            "without interval triggers, counted records wait for the next record trigger"
        );
        m.triggered(10);
        assert!(failing(&m, &b).is_empty());
        m.draining.store(true, Ordering::Relaxed);
        assert_eq!(failing(&m, &b), ["running"]);
    }

    /// A Kafka source: not ready before it connects and holds partitions, during an outage,
    /// or in a rebalance longer than the grace; lag counts as waiting records.
    #[test]
    fn a_kafka_source_is_ready_while_connected_and_holding_its_partitions() {
        let m = Metrics::new(1);
        let b = bounds();
        let k = m.watch_kafka();
        assert_eq!(failing(&m, &b), ["broker", "partitions"]);
        k.started(false);
        k.assigned(3);
        assert!(failing(&m, &b).is_empty());
        k.outage(&"gone", "test");
        assert_eq!(failing(&m, &b), ["broker"]);
        let detail = &readiness(&m, &b)[1].detail;
        assert!(detail.starts_with("unreachable for"), "{detail}");
        k.reachable();
        k.revoking();
        assert!(failing(&m, &b).is_empty(), "a short rebalance is fine");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(failing(&m, &b), ["partitions"]);
        k.assigned(0);
        assert!(
            failing(&m, &b).is_empty(),
            "no partition after a rebalance is fine"
        );
        m.set_next(0, 5);
        m.set_high(0, 6);
        assert!(
            failing(&m, &b).is_empty(),
            "one offset a partition may be a commit marker"
        );
        m.set_high(0, 9);
        assert_eq!(failing(&m, &b), ["snapshots"], "lag, and nothing consumed");
        m.consumed(5);
        m.triggered(5);
        assert!(
            failing(&m, &b).is_empty(),
            "consuming and triggering: keeping up"
        );
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(failing(&m, &b), ["snapshots"]);
    }
}
