//! The daemon's pipeline reading Kafka on a real broker (tansu): the golden stream from a
//! one-partition topic equals Spark's snapshots; from four partitions with 1 and 4 shards, every
//! snapshot covers exactly its trigger's records and the last equals a brute-force count.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use viewpulse::counters::{Counters, Subset};
use viewpulse::pipeline::{self, MemorySink, PipelineSettings, RunSource, Snapshot};
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
    let sink = MemorySink::default();
    pipeline::run(
        RunSource::Kafka {
            url: KafkaUrl::parse(url).unwrap(),
            options: StreamOptions {
                client: KafkaOptions::default(),
                group_id: "viewpulse-test".into(),
                start: StartAt::Earliest,
                until_end: true,
                batch_records: 1000,
                batch_wait: Duration::from_millis(20),
            },
        },
        Arc::new(m),
        &PipelineSettings {
            shards,
            trigger_records: trigger,
            subsets: subsets.to_vec(),
            top: 7,
        },
        vec![Box::new(sink.clone())],
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    let snaps = sink.0.lock().unwrap().clone();
    snaps
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
        let mut got = Vec::new();
        for (label, rows) in &last.subsets {
            for r in rows {
                got.push((
                    label.clone(),
                    r.cluster,
                    r.rank,
                    r.station_num.clone(),
                    r.diff_rank,
                ));
            }
        }
        let mut exp: Vec<_> = want
            .iter()
            .map(|d| {
                (
                    d.subset.clone(),
                    d.cluster,
                    d.rank,
                    d.station_num.clone(),
                    d.diff_rank,
                )
            })
            .collect();
        got.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
        exp.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
        assert_eq!(got, exp, "{shards} shards");
        assert_eq!((last.valid, last.malformed), (c.valid, c.malformed.total()));
    }
}
