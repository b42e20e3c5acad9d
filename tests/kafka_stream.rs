//! The daemon's pipeline reading Apache Kafka (the test fixture's broker): the golden stream from a
//! one-partition topic equals Spark's snapshots; from four partitions with 1 and 4 shards, every
//! snapshot covers exactly its trigger's records and the last equals a brute-force count.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use viewpulse::counters::{Counters, Subset};
use viewpulse::pipeline::{RunSource, Snapshot};
use viewpulse::ratings;
use viewpulse::source::kafka::{KafkaOptions, KafkaUrl, StartAt, StreamOptions};
use viewpulse::topology;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden")
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn run_topic(url: &str, shards: usize, subsets: &[Subset], trigger: u64) -> Vec<Snapshot> {
    let (_, m) = topology::load_membership(&golden(), subsets).unwrap();
    common::collect(
        RunSource::Kafka {
            url: KafkaUrl::parse(url).unwrap(),
            options: StreamOptions {
                client: KafkaOptions::default(),
                group_id: "viewpulse-test".into(),
                start: StartAt::Earliest,
                until_end: true,
                batch_records: 1000,
                batch_wait: Duration::from_millis(20),
                context: None,
                resume: Default::default(),
            },
        },
        m,
        &common::settings(shards, trigger, subsets),
        Default::default(),
    )
}

#[test]
fn golden_stream_from_a_topic_equals_spark() {
    let broker = common::Broker::start();
    let records = common::lines(&golden().join("input/views_stream.csv"));
    broker.create_topic("viewstream", 1);
    broker.produce("viewstream", &records, common::household_key);
    let want: Vec<serde_json::Value> =
        std::fs::read_to_string(golden().join("expected/stream_snapshots_subset3_every500.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let got = run_topic(&broker.url("viewstream"), 2, &[Subset::Every(3)], 500);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.records, w["records"].as_u64().unwrap());
        assert_eq!(
            g.offsets["0"] as u64, g.records,
            "single partition: offsets = records"
        );
        let top = w["top"].as_array().unwrap();
        let rows = &g.subsets["3"];
        assert_eq!(rows.len(), top.len());
        for (r, t) in rows.iter().zip(top) {
            assert_eq!(
                (r.cluster as u64, r.rank as u64, r.station_num.as_str()),
                (
                    t["cluster"].as_u64().unwrap(),
                    t["rank"].as_u64().unwrap(),
                    t["station_num"].as_str().unwrap()
                )
            );
            assert!(close(r.diff_rank, t["diff_rank"].as_f64().unwrap()));
            assert!(close(
                r.popularity_rating,
                t["popularity_rating"].as_f64().unwrap()
            ));
            assert!(close(r.genpop_rating, t["genpop_rating"].as_f64().unwrap()));
        }
    }
}

#[test]
fn four_partitions_any_shards_end_at_brute_force() {
    let broker = common::Broker::start();
    let records = common::lines(&golden().join("input/views_static.csv"));
    broker.create_topic("views4", 4);
    broker.produce("views4", &records, common::household_key);
    let subsets = [Subset::All, Subset::Every(3), Subset::Every(17)];
    let (_, m) = topology::load_membership(&golden(), &subsets).unwrap();
    let mut c = Counters::for_membership(&m);
    for r in &records {
        c.count(r, &m);
    }
    let want = ratings::top_diff_rank(&c, &subsets, 7);
    for shards in [1, 4] {
        let snaps = run_topic(&broker.url("views4"), shards, &subsets, 1000);
        assert_eq!(snaps.len(), 6);
        for (i, s) in snaps.iter().enumerate() {
            assert_eq!(s.records, (i as u64 + 1) * 1000);
            let covered: i64 = s.offsets.values().sum();
            assert_eq!(
                covered as u64, s.records,
                "offsets cover exactly the records"
            );
        }
        let last = snaps.last().unwrap();
        assert_eq!(
            common::snapshot_rows(last),
            common::core_rows(&want),
            "{shards} shards"
        );
        assert_eq!((last.valid, last.malformed), (c.valid, c.malformed.total()));
    }
}

/// The daemon on a live topic (no `--until-end`), with its HTTP endpoint: `/healthz` shows
/// progress, `/snapshot` the latest snapshot, `/metrics` the counters, queues and lag; SIGTERM
/// stops consuming, drains the shards, emits a last snapshot for the records after the last
/// trigger, and exits 0.
#[test]
fn http_endpoint_then_sigterm_drains_and_emits_a_last_snapshot() {
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let broker = common::Broker::start();
    let records = common::lines(&golden().join("input/views_stream.csv"));
    broker.create_topic("live", 1);
    broker.produce("live", &records, common::household_key);
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps.jsonl");
    let http = format!("127.0.0.1:{}", common::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(["--log", "warn", "run", "--model"])
        .arg(golden())
        .args([
            "--source",
            &broker.url("live"),
            "--trigger-records",
            "700",
            "--subsets",
            "3",
            "--shards",
            "3",
            "--no-stdout",
            "--http-listen",
            &http,
            "--snapshots",
        ])
        .arg(&snaps)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // /healthz is the readiness summary: 503 until the broker is connected and the
    // partition held, 200 from then on
    let health = || -> Option<(u16, serde_json::Value)> {
        let (code, body) = common::http_get(&http, "/healthz").ok()?;
        Some((code, serde_json::from_str(&body).ok()?))
    };
    common::wait_for(60, "/healthz shows every record counted", || {
        health().is_some_and(|(_, h)| h["records"] == 3000 && h["triggers"] == 4)
    });
    let (code, h) = health().unwrap();
    assert_eq!((code, &h["status"]), (200, &serde_json::json!("ok")), "{h}");
    // the latest snapshot is the 4th line of the snapshots file, byte for byte
    let (code, body) = common::http_get(&http, "/snapshot").unwrap();
    assert_eq!(code, 200);
    let text = std::fs::read_to_string(&snaps).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert_eq!(body, text.lines().nth(3).unwrap());
    // metrics: counters agree with the snapshot, every shard's queue is empty, lag reaches 0
    // once the broker's high watermark has come with the statistics
    let snap: serde_json::Value = serde_json::from_str(&body).unwrap();
    let metrics = || common::http_get(&http, "/metrics").unwrap().1;
    common::wait_for(30, "consumer lag 0 in /metrics", || {
        metrics()
            .lines()
            .any(|l| l == "viewpulse_consumer_lag_records{partition=\"0\"} 0")
    });
    let m = metrics();
    let value = |name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in\n{m}"))
    };
    assert_eq!(value("viewpulse_records_total"), 3000.0);
    assert_eq!(value("viewpulse_triggers_total"), 4.0);
    assert_eq!(value("viewpulse_trigger_merge_seconds_count"), 4.0);
    assert_eq!(
        value("viewpulse_partition_next_offset{partition=\"0\"}"),
        3000.0
    );
    for shard in 0..3 {
        assert_eq!(
            value(&format!(
                "viewpulse_shard_queue_records{{shard=\"{shard}\"}}"
            )),
            0.0
        );
    }
    // valid + malformed of the metrics cover every record; the snapshot's (at 2,800) fewer
    let malformed: f64 = m
        .lines()
        .filter_map(|l| l.strip_prefix("viewpulse_malformed_records_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(value("viewpulse_valid_records_total") + malformed, 3000.0);
    assert!(malformed >= snap["malformed"].as_f64().unwrap());
    let (code, _) = common::http_get(&http, "/nothing").unwrap();
    assert_eq!(code, 404);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let text = std::fs::read_to_string(&snaps).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(text.lines().count(), 5, "4 triggers and a last snapshot");
    assert_eq!(last["records"], 3000);
    assert_eq!(last["offsets"]["0"], 3000);
    assert!(
        common::http_get(&http, "/healthz").is_err(),
        "the endpoint stops with the daemon"
    );
}

/// Offsets where the ecosystem looks: the daemon commits what its snapshots cover to its
/// consumer group (advisory), so Kafka's own `kafka-consumer-groups` (ConsumerGroupCommand,
/// run from the broker's jars) describes the group with every partition of the topic, and
/// their lag goes to 0 once the daemon has caught up.
#[test]
fn kafka_consumer_groups_shows_the_daemon_caught_up() {
    use std::process::{Command, Stdio};
    let broker = common::Broker::start();
    let records = common::lines(&golden().join("input/views_stream.csv"));
    broker.create_topic("grouped", 2);
    broker.produce("grouped", &records, common::household_key);
    let topic = broker.topic("grouped");
    let group = broker.topic("viewpulse-grouped");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(["--log", "warn", "run", "--model"])
        .arg(golden())
        .args([
            "--source",
            &broker.url("grouped"),
            "--group-id",
            &group,
            "--trigger-records",
            "700",
            "--trigger-interval",
            "500ms",
            "--subsets",
            "3",
            "--no-stdout",
            "--snapshots",
        ])
        .arg(dir.path().join("s.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rows = Vec::new();
    common::wait_for(90, "the group's lag is 0 on every partition", || {
        assert!(child.try_wait().unwrap().is_none(), "the daemon ended");
        rows = common::group_offsets(&broker.addr, &group, &topic);
        rows.len() == 2 && rows.iter().all(|r| r[5] == "0" && r[3] == r[4])
    });
    let committed: u64 = rows.iter().map(|r| r[3].parse::<u64>().unwrap()).sum();
    assert_eq!(committed, records.len() as u64, "{rows:?}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
