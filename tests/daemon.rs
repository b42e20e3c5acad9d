//! The daemon against Apache Kafka (the test fixture's broker): SPEC 5's identity on a generated stream (every
//! snapshot equals a brute-force recomputation over exactly the records its offsets cover,
//! for 1 and 4 partitions and 1, 4 and 16 shards), interval triggers, the Kafka output topic,
//! and a broker that is not there at start.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use viewpulse::counters::{household_hash, Counters, Membership, Subset};
use viewpulse::generate::GenerateConfig;
use viewpulse::pipeline::{PipelineSettings, RunSource, Snapshot};
use viewpulse::ratings;
use viewpulse::source::kafka::{KafkaOptions, KafkaUrl, StartAt, StreamOptions};
use viewpulse::topology;

/// A generated data set and its model, made once for the whole file.
fn data() -> &'static common::Generated {
    static D: OnceLock<common::Generated> = OnceLock::new();
    D.get_or_init(|| {
        common::generated(&GenerateConfig {
            households: 3_000,
            static_records: 1_000,
            stream_records: 24_000,
            stations: 120,
            seed: 11,
            ..GenerateConfig::default()
        })
    })
}

fn subsets() -> Vec<Subset> {
    vec![Subset::All, Subset::Every(3), Subset::Every(17)]
}

fn membership(model: &Path) -> Membership {
    topology::load_membership(model, &subsets()).unwrap().1
}

fn stream_options(until_end: bool) -> StreamOptions {
    StreamOptions {
        client: KafkaOptions::default(),
        group_id: "viewpulse-test".into(),
        start: StartAt::Earliest,
        until_end,
        batch_records: 1000,
        batch_wait: Duration::from_millis(20),
        context: None,
        resume: Default::default(),
    }
}

/// Run the pipeline on a topic and keep every snapshot.
fn run(
    url: &str,
    shards: usize,
    trigger: u64,
    interval: Option<Duration>,
    stop: Arc<AtomicBool>,
    until_end: bool,
) -> Vec<Snapshot> {
    let settings = PipelineSettings {
        trigger_interval: interval,
        ..common::settings(shards, trigger, &subsets())
    };
    common::collect(
        RunSource::Kafka {
            url: KafkaUrl::parse(url).unwrap(),
            options: stream_options(until_end),
        },
        membership(&data().model),
        &settings,
        stop,
    )
}

/// Brute force: SPEC 4 from scratch over the first `offsets[p]` records of each partition,
/// compared with the snapshot.
fn assert_snapshot_is_brute_force(
    s: &Snapshot,
    by_partition: &BTreeMap<i32, Vec<Vec<u8>>>,
    m: &Membership,
    what: &str,
) {
    let mut c = Counters::for_membership(m);
    let mut n = 0u64;
    for (p, next) in &s.offsets {
        let recs = &by_partition[&p.parse::<i32>().unwrap()];
        for r in &recs[..*next as usize] {
            c.count(r, m);
            n += 1;
        }
    }
    assert_eq!(s.records, n, "{what}: records = sum of offsets");
    assert_eq!(
        (s.valid, s.malformed),
        (c.valid, c.malformed.total()),
        "{what}: trigger {}",
        s.trigger
    );
    let want = ratings::top_diff_rank(&c, &subsets(), 7);
    assert_eq!(
        common::snapshot_rows(s),
        common::core_rows(&want),
        "{what}: trigger {}",
        s.trigger
    );
}

/// Which partition a record goes to: by household, as the daemon's users would key it.
fn partition_of(v: &[u8], partitions: i32) -> i32 {
    let id = std::str::from_utf8(&common::household_key(v))
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0);
    (household_hash(id) % partitions as u64) as i32
}

#[test]
fn generated_stream_every_snapshot_equals_brute_force() {
    let d = data();
    let m = membership(&d.model);
    let malformed = d.stream.iter().filter(|r| {
        let mut c = Counters::for_membership(&m);
        c.count(r, &m);
        c.malformed.total() == 1
    });
    assert!(malformed.count() > 0, "the stream has malformed records");
    let broker = common::Broker::start();
    for partitions in [1, 4] {
        let topic = format!("gen{partitions}");
        broker.create_topic(&topic, partitions);
        broker.produce_to(&topic, &d.stream, common::household_key, |v| {
            Some(partition_of(v, partitions))
        });
        let mut by_partition: BTreeMap<i32, Vec<Vec<u8>>> = BTreeMap::new();
        for r in &d.stream {
            by_partition
                .entry(partition_of(r, partitions))
                .or_default()
                .push(r.clone());
        }
        let mut lasts = Vec::new();
        for shards in [1, 4, 16] {
            let what = format!("{partitions} partitions, {shards} shards");
            let snaps = run(
                &broker.url(&topic),
                shards,
                5_000,
                None,
                Arc::new(AtomicBool::new(false)),
                true,
            );
            assert_eq!(
                snaps.len(),
                5,
                "{what}: 24,000 records, a trigger every 5,000"
            );
            for (i, s) in snaps.iter().enumerate() {
                assert_eq!(s.trigger, i as u64 + 1);
                let want = ((i as u64 + 1) * 5_000).min(d.stream.len() as u64);
                assert_eq!(s.records, want, "{what}");
                if partitions == 1 {
                    assert_eq!(s.offsets["0"] as u64, want, "{what}: first t x 5,000");
                }
                assert_snapshot_is_brute_force(s, &by_partition, &m, &what);
            }
            let mut last = snaps.last().unwrap().clone();
            last.emitted_at.clear();
            lasts.push(last);
        }
        assert!(
            lasts.windows(2).all(|w| w[0].subsets == w[1].subsets),
            "{partitions} partitions: 1, 4 and 16 shards end at the same snapshot"
        );
    }
}

/// A trickling producer with `trigger.records` out of reach: the interval fires, and every
/// snapshot still covers exactly the records its offsets say.
#[test]
fn interval_triggers_cover_exactly_their_offsets() {
    let d = data();
    let m = membership(&d.model);
    let broker = common::Broker::start();
    broker.create_topic("trickle", 1);
    let stop = Arc::new(AtomicBool::new(false));
    let url = broker.url("trickle");
    let daemon = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            run(
                &url,
                4,
                1_000_000_000,
                Some(Duration::from_millis(200)),
                stop,
                false,
            )
        })
    };
    let part = &d.stream[..6_000];
    for chunk in part.chunks(1_000) {
        broker.produce("trickle", chunk, common::household_key);
        std::thread::sleep(Duration::from_millis(400));
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let snaps = daemon.join().unwrap();
    assert!(
        snaps.len() >= 2,
        "interval triggers fired: {} snapshots",
        snaps.len()
    );
    let by_partition = BTreeMap::from([(0, part.to_vec())]);
    let mut prev = 0;
    for s in &snaps {
        assert!(s.records > prev, "no snapshot without new records");
        prev = s.records;
        assert_snapshot_is_brute_force(s, &by_partition, &m, "interval");
    }
    assert_eq!(snaps.last().unwrap().records, 6_000);
}

/// Every snapshot also goes to a Kafka output topic, keyed by trigger number, its value the
/// same JSON line as the snapshots file.
#[test]
fn kafka_output_topic_carries_every_snapshot() {
    let d = data();
    let broker = common::Broker::start();
    broker.create_topic("in", 1);
    broker.create_topic("out", 1);
    broker.produce("in", &d.stream[..7_000], common::household_key);
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("s.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(["--log", "warn", "run", "--until-end", "--no-stdout"])
        .arg("--model")
        .arg(&d.model)
        .args(["--source", &broker.url("in"), "--trigger-records", "2000"])
        .args(["--kafka-sink", &broker.url("out"), "--snapshots"])
        .arg(&snaps)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = std::fs::read_to_string(&snaps)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 4, "2,000 x 3 and a last 1,000");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "check")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&broker.topic("out"), 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => got.push((
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
            )),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) if got.len() == 4 => break,
            _ => {}
        }
    }
    assert_eq!(got.len(), 4);
    for (i, ((k, v), line)) in got.iter().zip(&lines).enumerate() {
        assert_eq!(k, &(i + 1).to_string());
        assert_eq!(v, line);
    }
}

/// No broker at start: with no wait, a clear error naming the broker and exit code 69; with a
/// wait, the daemon retries until the broker comes up and then reads the topic.
#[test]
fn broker_not_there_at_start_fails_clearly_or_is_waited_for() {
    let d = data();
    let port = common::free_port();
    let url = format!("kafka://127.0.0.1:{port}/late");
    let out = Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(["--log", "warn", "run", "--until-end", "--no-stdout"])
        .arg("--model")
        .arg(&d.model)
        .args(["--source", &url, "--startup-wait", "0s"])
        .args(["--connect-timeout", "1s"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("late"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear message: {err}");

    // (not --until-end: the topic is created before its records are produced)
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("s.jsonl");
    let child = Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(["--log", "warn", "run", "--no-stdout"])
        .arg("--model")
        .arg(&d.model)
        .args(["--source", &url, "--startup-wait", "60s"])
        .args(["--connect-timeout", "1s", "--trigger-records", "500"])
        .arg("--snapshots")
        .arg(&snaps)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let _broker = common::Broker::dedicated_on(port);
    let broker = &_broker;
    broker.create_topic("late", 1);
    broker.produce("late", &d.stream[..2_500], common::household_key);
    let lines = || {
        std::fs::read_to_string(&snaps)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    common::wait_for(60, "5 snapshots after the broker came up", || lines() == 5);
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.matches("retrying").count(),
        1,
        "the wait is logged once: {err}"
    );
    let text = std::fs::read_to_string(&snaps).unwrap();
    assert_eq!(text.lines().count(), 5, "no snapshot without new records");
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["records"], 2_500);
}
