//! Recording and replaying against Apache Kafka (the test fixture's broker): a record-then-replay round trip keeps
//! every byte of keys and values, partitions and order within a partition; a paced replay lands
//! near its rate; a load test's JSON has every field and agrees with the daemon's counters;
//! bad input (not a recording, a cut recording, a missing topic, a broker that goes away) gets
//! one clear message and the right exit code.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use viewpulse::replay::recording::{End, Reader};
use viewpulse::replay::{self, Pace, ReplaySettings};
use viewpulse::source::kafka::KafkaUrl;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden")
}

fn viewpulse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(["--log", "warn"])
        .args(args)
        .output()
        .unwrap()
}

type Part = BTreeMap<i32, Vec<(Option<Vec<u8>>, Vec<u8>)>>;

/// Every record of a topic, per partition in offset order.
fn read_topic(addr: &str, topic: &str, partitions: i32) -> Part {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "check")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out: Part = BTreeMap::new();
    let mut done = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.len() < partitions as usize {
        assert!(Instant::now() < deadline, "{topic} not read within 60 s");
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.entry(m.partition()).or_default().push((
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or(&[]).to_vec(),
            )),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                done.insert(p);
            }
            _ => {}
        }
    }
    out
}

#[test]
fn record_then_replay_round_trips_keys_values_partitions_and_order() {
    let broker = common::Broker::start();
    broker.create_topic("orig", 3);
    // keys of every kind of byte, values of every length, spread over 3 partitions by hand
    let values: Vec<Vec<u8>> = (0..2_000u32)
        .map(|i| {
            let mut v = format!("value {i} ").into_bytes();
            v.extend((0..(i % 97)).map(|j| (i * 31 + j) as u8));
            v
        })
        .collect();
    broker.produce_to(
        "orig",
        &values,
        |v| {
            let mut k = vec![0u8, 255, b','];
            k.extend_from_slice(&v[..v.len().min(12)]);
            k
        },
        |v| Some((v.len() % 3) as i32),
    );
    let want = read_topic(&broker.addr, &broker.topic("orig"), 3);
    assert_eq!(want.values().map(Vec::len).sum::<usize>(), 2_000);

    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("orig.vprec");
    let out = viewpulse(&[
        "record",
        "--from",
        &broker.url("orig"),
        "--out",
        rec.to_str().unwrap(),
        "--until-end",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("recorded 2000 records"));

    // the file itself: header, and every record with its partition, offset and bytes
    let mut r = Reader::open(&rec).unwrap();
    assert_eq!(r.header.partitions, vec![0, 1, 2]);
    assert_eq!(r.header.source, broker.url("orig"));
    let mut from_file: Part = BTreeMap::new();
    let mut next_offset: BTreeMap<i32, i64> = BTreeMap::new();
    while let Some(e) = r.next_entry().unwrap() {
        let o = next_offset.entry(e.partition).or_insert(0);
        assert_eq!(
            e.offset, *o,
            "offsets in order within partition {}",
            e.partition
        );
        *o += 1;
        assert!(e.timestamp_ms > 1_700_000_000_000, "a real timestamp");
        from_file
            .entry(e.partition)
            .or_default()
            .push((e.key.map(<[u8]>::to_vec), e.value.to_vec()));
    }
    assert_eq!(r.end, Some(End::Clean));
    assert_eq!(from_file, want);

    // replayed into a topic that does not exist yet: created with the recorded partitions
    let out = viewpulse(&[
        "replay",
        "--file",
        rec.to_str().unwrap(),
        "--to",
        &broker.url("copy"),
        "--max",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("replayed 2000 records"));
    assert_eq!(read_topic(&broker.addr, &broker.topic("copy"), 3), want);

    // --loop 2 plays it twice, in the same order
    let out = viewpulse(&[
        "replay",
        "--file",
        rec.to_str().unwrap(),
        "--to",
        &broker.url("twice"),
        "--loop",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let twice = read_topic(&broker.addr, &broker.topic("twice"), 3);
    for (p, recs) in &want {
        let mut doubled = recs.clone();
        doubled.extend(recs.iter().cloned());
        assert_eq!(&twice[p], &doubled);
    }
}

/// A paced replay never runs ahead of its rate: 9,000 records at 3,000 a second take at
/// least 3 s (less the one pacing tick it may start early). How close it comes to the rate
/// from above depends on the machine and the broker, so that is the load test's and the
/// benches' figure, not an assertion here (regression: the upper bound of 10 % failed in CI
/// on 2 busy cores, 1,872 records/s with nothing wrong).
#[test]
fn regression_a_paced_replay_never_runs_ahead_of_its_rate() {
    let broker = common::Broker::start();
    broker.create_topic("paced", 2);
    let dir = tempfile::tempdir().unwrap();
    // a views file of 9,000 records (the golden stream three times)
    let views = dir.path().join("views.csv");
    let mut text = Vec::new();
    for _ in 0..3 {
        for l in common::lines(&golden().join("input/views_stream.csv")) {
            text.extend_from_slice(&l);
            text.push(b'\n');
        }
    }
    std::fs::write(&views, text).unwrap();
    let url = KafkaUrl::parse(&broker.url("paced")).unwrap();
    let started = Instant::now();
    let p = replay::replay(
        &views,
        &url,
        &ReplaySettings {
            pace: Pace::Rate(3_000.0),
            partitions: Some(2),
            ..ReplaySettings::default()
        },
        &AtomicBool::new(false),
        None,
    )
    .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(p.records, 9_000);
    let rate = p.records as f64 / seconds;
    assert!(
        rate <= 3_300.0,
        "{rate:.0} records/s over {seconds:.2} s, asked 3,000: ahead of its pace"
    );
    // keyed by household: every record of a household is in one partition, the one of its
    // stable hash
    let got = read_topic(&broker.addr, &broker.topic("paced"), 2);
    for (p, recs) in &got {
        for (k, v) in recs {
            assert_eq!(k.as_deref(), Some(replay::household_key(v)));
            assert_eq!(replay::household_partition(v, 2), *p);
        }
    }
}

#[test]
fn loadtest_json_has_every_field_and_agrees_with_the_daemon() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("lt");
    let out = viewpulse(&[
        "loadtest",
        "--file",
        golden().join("input/views_stream.csv").to_str().unwrap(),
        "--model",
        golden().to_str().unwrap(),
        "--broker",
        &broker.addr,
        "--shards",
        "2",
        "--partitions",
        "3",
        "--trigger-records",
        "500",
        "--trigger-interval",
        "300ms",
        "--rate",
        "6000/s",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("staleness p50/p90/p99/max"), "{stdout}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("loadtest.json")).unwrap())
            .unwrap();
    for field in [
        "input",
        "broker",
        "broker_started",
        "topic",
        "partitions",
        "shards",
        "trigger_records",
        "trigger_interval_ms",
        "pace",
        "records_produced",
        "produce_seconds",
        "produce_rate",
        "records_counted",
        "valid",
        "malformed",
        "count_seconds",
        "sustained_rate",
        "snapshots",
        "staleness_ms",
        "merge_ms",
        "max_lag",
        "peak_rss_bytes",
        "timeline",
    ] {
        assert!(!j[field].is_null(), "{field} missing in {j}");
    }
    // the golden stream: 3,000 records, 2,940 valid (SPEC's malformed ones counted apart)
    let lines = common::lines(&golden().join("input/views_stream.csv")).len() as u64;
    assert_eq!(j["records_produced"], lines);
    assert_eq!(j["records_counted"], lines);
    assert_eq!(
        j["valid"].as_u64().unwrap() + j["malformed"].as_u64().unwrap(),
        lines
    );
    let stale = &j["staleness_ms"];
    assert_eq!(
        stale["count"], lines,
        "every record's staleness measured once"
    );
    let (p50, p99, max) = (
        stale["p50"].as_f64().unwrap(),
        stale["p99"].as_f64().unwrap(),
        stale["max"].as_f64().unwrap(),
    );
    assert!(p50 <= p99 && p99 <= max && max < 120_000.0, "{stale}");
    let snapshots = j["snapshots"].as_u64().unwrap();
    assert!(snapshots >= lines / 500, "{snapshots} snapshots");
    assert_eq!(j["merge_ms"]["count"], snapshots, "one merge per snapshot");
    assert!(j["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    let timeline = j["timeline"].as_array().unwrap();
    assert!(!timeline.is_empty());
    assert!(timeline
        .windows(2)
        .all(|w| w[0]["counted"].as_u64() <= w[1]["counted"].as_u64()));
    let png = std::fs::read(out_dir.join("loadtest.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
}

#[test]
fn bad_input_gets_one_clear_message() {
    let broker = common::Broker::start();
    broker.create_topic("t", 1);
    let dir = tempfile::tempdir().unwrap();

    // binary junk is neither a recording nor a views file
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, [0u8, 1, 2, 3, 0, 9, 9]).unwrap();
    let out = viewpulse(&[
        "replay",
        "--file",
        junk.to_str().unwrap(),
        "--to",
        &broker.url("t"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("junk.bin") && err.contains("not a viewpulse recording"),
        "{err}"
    );

    // a recording cut inside a record: replayed up to its last whole record, and said so
    broker.produce(
        "t",
        &common::lines(&golden().join("input/views_stream.csv")),
        common::household_key,
    );
    let rec = dir.path().join("t.vprec");
    let out = viewpulse(&[
        "record",
        "--from",
        &broker.url("t"),
        "--out",
        rec.to_str().unwrap(),
        "--max-records",
        "1000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bytes = std::fs::read(&rec).unwrap();
    bytes.truncate(bytes.len() - 5);
    std::fs::write(&rec, &bytes).unwrap();
    let out = viewpulse(&[
        "replay",
        "--file",
        rec.to_str().unwrap(),
        "--to",
        &broker.url("cut"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("replayed 999 records") && err.contains("999 whole records"),
        "{err}"
    );

    // a recording of a future format version
    let mut future = std::fs::read(&rec).unwrap();
    future[12] = 9; // the header's first byte: its version (varint)
    let fut = dir.path().join("future.vprec");
    std::fs::write(&fut, &future).unwrap();
    let out = viewpulse(&[
        "replay",
        "--file",
        fut.to_str().unwrap(),
        "--to",
        &broker.url("x"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("future.vprec") && err.contains("version 9"),
        "{err}"
    );

    // a topic that does not exist
    let out = viewpulse(&[
        "record",
        "--from",
        &broker.url("nope"),
        "--out",
        dir.path().join("n.vprec").to_str().unwrap(),
        "--until-end",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains("nope") && err.contains("does not exist"),
        "{err}"
    );

    // --speed needs timestamps
    let out = viewpulse(&[
        "replay",
        "--file",
        golden().join("input/views_stream.csv").to_str().unwrap(),
        "--to",
        &broker.url("t"),
        "--speed",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

/// The broker goes away in the middle of a paced replay: the replay ends with one message
/// saying how many records were not delivered, and exit code 69.
#[test]
fn a_broker_that_goes_away_mid_replay_is_a_clear_error() {
    let broker = common::Broker::dedicated();
    broker.create_topic("gone", 1);
    let views = golden().join("input/views_stream.csv");
    let child = Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(["--log", "error", "replay", "--file"])
        .arg(&views)
        .args(["--to", &broker.url("gone"), "--rate", "1000/s"])
        .args(["-X", "message.timeout.ms=2000"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    drop(broker);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains("not delivered") && err.contains("broker"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// `loadtest` without `--broker` starts Apache Kafka itself from the fixture's cached jars
/// (`.ci/run` fetched them) and stops it at the end; with an empty cache it says, in one
/// line, which command fetches them.
#[test]
fn loadtest_without_a_broker_starts_apache_kafka_or_names_the_fetch_command() {
    let dir = tempfile::tempdir().unwrap();
    let views = golden().join("input/views_stream.csv");
    let args = |out: &Path| -> Vec<String> {
        [
            "loadtest",
            "--file",
            views.to_str().unwrap(),
            "--model",
            golden().to_str().unwrap(),
            "--partitions",
            "2",
            "--shards",
            "2",
            "--trigger-records",
            "500",
            "--trigger-interval",
            "300ms",
            "--rate",
            "10000/s",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let empty = dir.path().join("no-jars");
    let out = Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(["--log", "warn"])
        .args(args(&dir.path().join("lt0")))
        .env("VIEWPULSE_KAFKA_CACHE", &empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains("viewpulse loadtest --fetch-broker") && err.contains(empty.to_str().unwrap()),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out_dir = dir.path().join("lt");
    let a = args(&out_dir);
    let out = viewpulse(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("loadtest.json")).unwrap())
            .unwrap();
    assert_eq!(j["broker_started"], true, "{j}");
    let records = common::lines(&views).len() as u64;
    assert_eq!(j["records_counted"], records, "{j}");
}
