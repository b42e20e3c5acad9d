//! Scale-out throughput: 1, 2 and 3 `viewpulse run` processes (release binary, through
//! `deploy/local-cluster.sh`) sharing one 6-partition topic of a local Apache Kafka broker (the test fixture's), with a
//! changelog and a coordinator topic per round. The topic is filled before anything is timed;
//! a round is timed from the members' start until a global snapshot on the coordinator topic
//! covers every record (the group forming and the first assignment included, which is why the
//! rate without them, from the first global snapshot to the last, is printed too).
//!
//! `cargo bench --bench cluster` measures 2,000,000 records; under `cargo test` it runs once
//! with 1 process on 20,000 records as a smoke test. `VIEWPULSE_BENCH_RECORDS`,
//! `VIEWPULSE_BENCH_PROCESSES` (the largest count, default 3) and `VIEWPULSE_BENCH_SHARDS`
//! (per process, default 1) change the parameters.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// Read on from `consumer`'s position to the end of the coordinator topic, keeping the record
/// count of the last global snapshot in `last`.
fn last_records(consumer: &BaseConsumer, last: &mut u64) {
    loop {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let v: serde_json::Value =
                    serde_json::from_slice(m.payload().unwrap_or(&[])).expect("a snapshot");
                *last = v["records"].as_u64().unwrap_or(0);
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => return,
            Some(Err(_)) => return,
        }
    }
}

fn script(dir: &Path, broker: &str, topic: &str, round: &str, config: &Path, args: &[&str]) {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local-cluster.sh"))
        .args(args)
        .env("BROKER", broker)
        .env("TOPIC", topic)
        .env("VIEWPULSE_GROUP_ID", round)
        .env("VIEWPULSE_CLUSTER_DIR", dir)
        .env("VIEWPULSE_BIN", env!("CARGO_BIN_EXE_viewpulse"))
        .env("CONFIG", config)
        .env("HTTP_PORT_BASE", "off")
        .env(
            "VIEWPULSE_CHANGELOG",
            format!("kafka://{broker}/{round}-changelog"),
        )
        .env(
            "VIEWPULSE_COORDINATOR",
            format!("kafka://{broker}/{round}-coordinator"),
        )
        .output()
        .expect("local-cluster.sh");
    assert!(
        out.status.success(),
        "local-cluster.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let records = common::env_or(
        "VIEWPULSE_BENCH_RECORDS",
        if bench { 2_000_000 } else { 20_000 },
    );
    let most = common::env_or("VIEWPULSE_BENCH_PROCESSES", if bench { 3 } else { 1 });
    let shards = common::env_or("VIEWPULSE_BENCH_SHARDS", 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = common::bench_data(records);
    let (model, stream) = common::generated_model(dir.path(), &cfg);
    let broker = common::Broker::start();
    broker.create_topic("bench", 6);
    broker.produce("bench", &stream, common::household_key);
    let topic = broker.topic("bench");
    let config = dir.path().join("viewpulse.toml");
    std::fs::write(
        &config,
        format!(
            "model = \"{}\"\n[trigger]\nrecords = 50000\ninterval = \"500ms\"\n[pipeline]\nshards = {shards}\n[sinks]\nstdout = false\n[cluster]\nsession_timeout = \"6s\"\n",
            model.display()
        ),
    )
    .expect("config");
    for processes in 1..=most {
        let run = dir.path().join(format!("run{processes}"));
        let round = broker.topic(&format!("bench{processes}"));
        let coordinator = format!("{round}-coordinator");
        let t = Instant::now();
        script(
            &run,
            &broker.addr,
            &topic,
            &round,
            &config,
            &["start", &processes.to_string()],
        );
        common::wait_for(60, "the coordinator topic", || {
            broker_has_topic(&broker.addr, &coordinator)
        });
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .set("group.id", "bench-reader")
            .set("enable.partition.eof", "true")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&coordinator, 0, Offset::Beginning)
            .expect("tpl");
        consumer.assign(&tpl).expect("assign");
        let (mut last, mut first_at) = (0u64, None);
        let mut first_records = 0;
        while last < records {
            last_records(&consumer, &mut last);
            if first_at.is_none() && last > 0 {
                first_at = Some(Instant::now());
                first_records = last;
            }
            assert!(
                t.elapsed() < Duration::from_secs(600),
                "{processes} processes: {last} of {records} records in 600 s"
            );
        }
        let whole = t.elapsed().as_secs_f64();
        let steady = first_at.map_or(0.0, |f| f.elapsed().as_secs_f64());
        script(&run, &broker.addr, &topic, &round, &config, &["stop"]);
        let steady_rate = if steady > 0.0 {
            (records - first_records) as f64 / steady
        } else {
            0.0
        };
        println!(
            "cluster/records={records}/partitions=6/processes={processes}/shards={shards}: {:.0} records/s from start ({whole:.2} s), {:.0} records/s from the first global snapshot",
            records as f64 / whole,
            steady_rate
        );
    }
}

fn broker_has_topic(addr: &str, topic: &str) -> bool {
    let c: BaseConsumer = match ClientConfig::new().set("bootstrap.servers", addr).create() {
        Ok(c) => c,
        Err(_) => return false,
    };
    c.fetch_metadata(Some(topic), Duration::from_secs(2))
        .is_ok_and(|md| {
            md.topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        })
}
