//! Scale-out against Apache Kafka (the test fixture's broker): several `viewpulse run` processes, started and
//! killed with `deploy/local-cluster.sh`, share a 6-partition topic through Kafka's consumer
//! group protocol, publish partition state to a changelog topic, and one of them (elected by
//! a second group) emits global snapshots to the coordinator topic. Every global snapshot is
//! checked against SPEC 4 recomputed by brute force over exactly the records its offsets
//! cover, the trigger numbers must only grow, and the last one must cover every record and
//! equal a single-process run over the same topic — with no disruption, with a worker killed
//! by `kill -9` mid-stream, with the coordinator killed, and with a fourth process added.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use viewpulse::counters::{household_hash, Counters, Membership, Subset};
use viewpulse::generate::GenerateConfig;
use viewpulse::pipeline::{RunSource, Snapshot};
use viewpulse::ratings;
use viewpulse::source::kafka::{KafkaOptions, KafkaUrl, StartAt, StreamOptions};

const PARTITIONS: i32 = 6;

/// One cluster at a time: each runs a broker and three or four daemons on 2 cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn data() -> &'static common::Generated {
    static D: OnceLock<common::Generated> = OnceLock::new();
    D.get_or_init(|| {
        common::generated(&GenerateConfig {
            households: 3_000,
            static_records: 1_000,
            stream_records: 60_000,
            stations: 120,
            seed: 33,
            malformed_fraction: 0.01,
            ..GenerateConfig::default()
        })
    })
}

fn subsets() -> Vec<Subset> {
    vec![Subset::Every(3)]
}

fn membership() -> &'static Membership {
    static M: OnceLock<Membership> = OnceLock::new();
    M.get_or_init(|| {
        viewpulse::topology::load_membership(&data().model, &subsets())
            .unwrap()
            .1
    })
}

/// The partition a record goes to: by a stable hash of its household key.
fn partition_of(v: &[u8]) -> i32 {
    let key = common::household_key(v);
    let id = std::str::from_utf8(&key)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0);
    (household_hash(id) % PARTITIONS as u64) as i32
}

/// The stream's records per partition, in the order they are produced (offset order).
fn per_partition(records: &[Vec<u8>]) -> BTreeMap<i32, Vec<Vec<u8>>> {
    let mut out: BTreeMap<i32, Vec<Vec<u8>>> = BTreeMap::new();
    for r in records {
        out.entry(partition_of(r)).or_default().push(r.clone());
    }
    out
}

/// SPEC 4 by brute force over the first `offsets[p]` records of every partition, checked
/// against a global snapshot.
fn check_against_brute_force(s: &Snapshot, parts: &BTreeMap<i32, Vec<Vec<u8>>>) {
    let m = membership();
    let mut c = Counters::for_membership(m);
    for (p, &o) in &s.offsets {
        let p: i32 = p.parse().unwrap();
        let records = &parts[&p];
        assert!(
            o as usize <= records.len(),
            "trigger {}: partition {p} offset {o} beyond the {} records produced",
            s.trigger,
            records.len()
        );
        for r in &records[..o as usize] {
            c.count(r, m);
        }
    }
    assert_eq!(s.records, c.records, "trigger {}: records", s.trigger);
    assert_eq!(s.valid, c.valid, "trigger {}: valid", s.trigger);
    assert_eq!(
        common::snapshot_rows(s),
        common::core_rows(&ratings::top_diff_rank(&c, &subsets(), 7)),
        "trigger {}: rows",
        s.trigger
    );
}

/// Every global snapshot written to the coordinator topic so far, in order.
fn global_snapshots(broker: &str, topic: &str) -> Vec<Snapshot> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", "cluster-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let exists = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .is_ok_and(|md| {
            md.topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        });
    if !exists {
        return Vec::new();
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    loop {
        match consumer.poll(Duration::from_secs(20)) {
            Some(Ok(m)) => out.push(serde_json::from_slice(m.payload().unwrap()).unwrap()),
            Some(Err(KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => panic!("reading {topic}: nothing for 20 s"),
        }
    }
}

/// The daemons of one test, driven through `deploy/local-cluster.sh`.
struct Cluster {
    dir: tempfile::TempDir,
    broker: common::Broker,
    topic: String,
    /// Member I serves HTTP on 127.0.0.1:http_base+I-1 (local-cluster.sh's HTTP_PORT_BASE).
    http_base: u16,
}

impl Cluster {
    fn new(topic: &str) -> Cluster {
        let broker = common::Broker::start();
        broker.create_topic(topic, PARTITIONS);
        // the topic's name on the (shared) broker; its changelog and coordinator topics
        // (local-cluster.sh names them after it) are this test's too
        let topic = &broker.topic(topic);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("viewpulse.toml"), config(topic)).unwrap();
        Cluster {
            dir,
            broker,
            topic: topic.to_string(),
            http_base: common::free_port_run(8),
        }
    }

    fn script(&self, args: &[&str]) -> String {
        let out = Command::new(script_path())
            .args(args)
            .env("BROKER", &self.broker.addr)
            .env("TOPIC", &self.topic)
            .env("VIEWPULSE_CLUSTER_DIR", self.dir.path().join("run"))
            .env("VIEWPULSE_BIN", env!("CARGO_BIN_EXE_viewpulse"))
            .env("CONFIG", self.dir.path().join("viewpulse.toml"))
            .env("VIEWPULSE_LOG", "info")
            .env("HTTP_PORT_BASE", self.http_base.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "local-cluster.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self, member: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join("run")
                .join(format!("member-{member}.log")),
        )
        .unwrap_or_default()
    }

    fn logs(&self) -> String {
        (1..=4)
            .map(|i| format!("--- member-{i}\n{}", self.log(i)))
            .collect()
    }

    fn snapshots(&self) -> Vec<Snapshot> {
        global_snapshots(&self.broker.addr, &format!("{}-coordinator", self.topic))
    }

    /// Wait until a global snapshot covers `records` records.
    fn wait_covered(&self, records: u64, secs: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if self
                .snapshots()
                .last()
                .is_some_and(|s| s.records >= records)
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no global snapshot covered {records} records within {secs} s\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The member that is the coordinator now (the one whose log says it took the role and
    /// has not said it lost it), waiting for a rebalance of the coordinator group to settle.
    fn coordinator(&self, members: usize, dead: &[usize]) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let holders: Vec<usize> = (1..=members)
                .filter(|i| !dead.contains(i))
                .filter(|&i| {
                    let log = self.log(i);
                    let took = log.rfind("this process is the coordinator");
                    let left = log.rfind("no longer the coordinator");
                    took.is_some() && took > left
                })
                .collect();
            if holders.len() == 1 {
                return holders[0];
            }
            assert!(
                std::time::Instant::now() < deadline,
                "coordinators {holders:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Produce `records` in chunks in the background (so that daemons work while the test
    /// disrupts them).
    fn produce_slowly(&self, records: Vec<Vec<u8>>) -> std::thread::JoinHandle<()> {
        let addr = self.broker.addr.clone();
        let topic = self.topic.clone();
        std::thread::spawn(move || {
            for chunk in records.chunks(1500) {
                common::produce_at(&addr, &topic, chunk, common::household_key, |v| {
                    Some(partition_of(v))
                });
                std::thread::sleep(Duration::from_millis(120));
            }
        })
    }

    /// A cluster on `topic` with the first third of the stream produced, three members
    /// started and that third counted.
    fn started(topic: &str) -> Cluster {
        let c = Cluster::new(topic);
        let third = third();
        c.produce(&data().stream[..third]);
        c.script(&["start", "3"]);
        c.wait_covered(third as u64, 90);
        c
    }

    /// Produce the rest of the stream in the background, call `disrupt` once 6,000 more
    /// records are counted, and end with [`check_all`].
    fn rest_with(&self, disrupt: impl FnOnce(&Cluster)) {
        let all = &data().stream;
        let producing = self.produce_slowly(all[third()..].to_vec());
        self.wait_covered(third() as u64 + 6_000, 90);
        disrupt(self);
        producing.join().unwrap();
        check_all(self, all);
    }

    fn produce(&self, records: &[Vec<u8>]) {
        common::produce_at(
            &self.broker.addr,
            &self.topic,
            records,
            common::household_key,
            |v| Some(partition_of(v)),
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script_path())
            .arg("stop")
            .env("VIEWPULSE_CLUSTER_DIR", self.dir.path().join("run"))
            .env("BROKER", &self.broker.addr)
            .output();
    }
}

/// The members' configuration.
fn config(topic: &str) -> String {
    format!(
        r#"model = "{model}"

[trigger]
records = 1000
interval = "300ms"

[pipeline]
shards = 2
subsets = ["3"]
top = 7

[kafka]
group_id = "viewpulse-{topic}"
startup_wait = "30s"

[sinks]
stdout = false

[cluster]
session_timeout = "6s"
"#,
        model = data().model.display()
    )
}

/// The records produced before the members start.
fn third() -> usize {
    data().stream.len() / 3
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local-cluster.sh")
}

/// The last snapshot of one process reading the same topic (its full name) to its end.
fn single_process(broker: &common::Broker, topic: &str) -> Snapshot {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let snaps = common::collect(
        RunSource::Kafka {
            url: KafkaUrl::parse(&format!("kafka://{}/{topic}", broker.addr)).unwrap(),
            options: StreamOptions {
                client: KafkaOptions::default(),
                group_id: "single".into(),
                start: StartAt::Earliest,
                until_end: true,
                batch_records: 4096,
                batch_wait: Duration::from_millis(20),
                context: None,
                resume: Default::default(),
            },
        },
        membership().clone(),
        &common::settings(4, 10_000, &subsets()),
        stop,
    );
    snaps.last().cloned().unwrap()
}

/// The checks every scenario ends with: every global snapshot equals brute force over its
/// offsets, triggers only grow, and the last one covers everything and equals one process.
fn check_all(c: &Cluster, all: &[Vec<u8>]) {
    let parts = per_partition(all);
    c.wait_covered(all.len() as u64, 120);
    let snaps = c.snapshots();
    assert!(snaps.len() >= 3, "{} global snapshots", snaps.len());
    for w in snaps.windows(2) {
        assert_eq!(
            w[1].trigger,
            w[0].trigger + 1,
            "trigger {} after {}: no gap, no regress",
            w[1].trigger,
            w[0].trigger
        );
        for (p, o) in &w[0].offsets {
            assert!(
                w[1].offsets.get(p).is_some_and(|n| n >= o),
                "trigger {}: partition {p} went back from offset {o} to {:?}",
                w[1].trigger,
                w[1].offsets.get(p)
            );
        }
    }
    for s in &snaps {
        check_against_brute_force(s, &parts);
    }
    let last = snaps.last().unwrap();
    assert_eq!(last.records, all.len() as u64);
    let expected: BTreeMap<String, i64> = parts
        .iter()
        .map(|(p, r)| (p.to_string(), r.len() as i64))
        .collect();
    assert_eq!(last.offsets, expected);
    let one = single_process(&c.broker, &c.topic);
    assert_eq!(one.records, last.records);
    assert_eq!(common::snapshot_rows(&one), common::snapshot_rows(last));
}

#[test]
fn three_processes_share_six_partitions_and_match_one_process() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::started("views-three");
    c.rest_with(|_| {});
    // every process owned some partitions
    for i in 1..=3 {
        assert!(
            c.log(i).contains("partitions assigned"),
            "member-{i} was given no partition\n{}",
            c.logs()
        );
    }
    let status = c.script(&["status"]);
    assert_eq!(status.matches(" running").count(), 3, "{status}");
    // the members' metrics: exactly one coordinator, the six partitions spread over the three
    let metric = |i: u16, name: &str| -> f64 {
        let addr = format!("127.0.0.1:{}", c.http_base + i - 1);
        let (_, m) = common::http_get(&addr, "/metrics").unwrap();
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("member-{i}: no {name} in\n{m}"))
    };
    let coordinators: f64 = (1..=3).map(|i| metric(i, "viewpulse_coordinator")).sum();
    assert_eq!(coordinators, 1.0, "one member is the coordinator");
    let held: f64 = (1..=3)
        .map(|i| metric(i, "viewpulse_assigned_partitions"))
        .sum();
    assert_eq!(held, f64::from(PARTITIONS));
    // Kafka's own tool lists the three members of the group and a lag of 0 on every partition
    let group = format!("viewpulse-{}", c.topic);
    let members = viewpulse::kafka_broker::tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        &[
            "--bootstrap-server",
            &c.broker.addr,
            "--describe",
            "--group",
            &group,
            "--members",
        ],
    )
    .unwrap();
    for i in 1..=3 {
        assert!(members.contains(&format!("member-{i}")), "{members}");
    }
    common::wait_for(60, "the group's lag is 0 on every partition", || {
        let rows = common::group_offsets(&c.broker.addr, &group, &c.topic);
        rows.len() == PARTITIONS as usize && rows.iter().all(|r| r[5] == "0")
    });
}

#[test]
fn a_worker_killed_mid_stream_loses_and_repeats_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::started("views-kill");
    let coordinator = c.coordinator(3, &[]);
    let victim = (1..=3).find(|&i| i != coordinator).unwrap();
    let survivors: Vec<usize> = (1..=3).filter(|&i| i != victim).collect();
    let assigned = |c: &Cluster| -> usize {
        survivors
            .iter()
            .map(|&i| c.log(i).matches("partitions assigned").count())
            .sum()
    };
    c.rest_with(|c| {
        let before = assigned(c);
        c.script(&["kill", &victim.to_string()]);
        // the victim's partitions go to the survivors once its session (6 s) expires
        common::wait_for(
            60,
            "the survivors were given the victim's partitions",
            || assigned(c) >= before + 2,
        );
    });
    let status = c.script(&["status"]);
    assert!(
        status.contains(&format!("member-{victim} stopped")),
        "{status}"
    );
}

#[test]
fn the_coordinator_killed_is_replaced_and_the_sequence_goes_on() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::started("views-coord");
    let first = c.coordinator(3, &[]);
    let before = c.snapshots().last().unwrap().trigger;
    c.rest_with(|c| {
        c.script(&["kill", &first.to_string()]);
    });
    let second = c.coordinator(3, &[first]);
    assert_ne!(first, second, "another process took over\n{}", c.logs());
    assert!(c.snapshots().last().unwrap().trigger > before + 1);
}

/// A member paused with SIGSTOP past its session timeout (the group gives its partitions,
/// and the coordinator role, to the others) and then continued: the zombie still believes
/// it owns them, but cannot move a partition backwards in the global snapshots nor write a
/// trigger the new coordinator has written (its coordinator producer is fenced).
#[test]
fn a_zombie_member_continued_after_its_session_timeout_moves_nothing_backwards() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::started("views-zombie");
    // the coordinator is the zombie: the strongest case, it also writes global snapshots
    let zombie = c.coordinator(3, &[]);
    c.rest_with(|c| {
        let others: Vec<usize> = (1..=3).filter(|&i| i != zombie).collect();
        let took = |i: usize| c.log(i).matches("this process is the coordinator").count();
        let before: Vec<usize> = others.iter().map(|&i| took(i)).collect();
        c.script(&["kill", &zombie.to_string(), "STOP"]);
        // the session timeout is 6 s: another member takes its partitions and the role
        // meanwhile (a new line in its log: one from before the pause does not count)
        common::wait_for(60, "another member took the coordinator role", || {
            others.iter().zip(&before).any(|(&i, &b)| took(i) > b)
        });
        std::thread::sleep(Duration::from_secs(2));
        c.script(&["kill", &zombie.to_string(), "CONT"]);
        // continued, it steps down: told by the group, or fenced when it tries to write
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !c.log(zombie).contains("no longer the coordinator") {
            assert!(
                std::time::Instant::now() < deadline,
                "the zombie, member-{zombie}, kept the coordinator role for 60 s\n{}",
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    for line in c.log(zombie).lines() {
        if line.contains("no longer the coordinator") || line.contains("fenced") {
            eprintln!("zombie member-{zombie}: {line}");
        }
    }
    let status = c.script(&["status"]);
    assert!(
        status.contains(&format!("member-{zombie} running")),
        "the zombie lives on as a member: {status}"
    );
}

#[test]
fn a_fourth_process_added_mid_stream_takes_partitions_and_nothing_is_lost() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::started("views-add");
    c.rest_with(|c| {
        c.script(&["add"]);
    });
    assert!(
        c.log(4).contains("partitions assigned"),
        "the fourth process was given no partition\n{}",
        c.logs()
    );
}

/// The fence itself, without waiting for a race: a coordinator's log writer opened after
/// another one's fences it, so the older one's next snapshot is refused (`Ok(false)`, nothing
/// written) while the newer one's is committed; a reader sees exactly the committed ones.
#[test]
fn a_newer_coordinator_fences_the_older_one_s_writes() {
    use viewpulse::pipeline::scaleout::{ClusterSettings, GlobalLog};
    let broker = common::Broker::start();
    broker.create_topic("fence-coordinator", 1);
    let topic = broker.topic("fence-coordinator");
    let s = ClusterSettings {
        changelog: KafkaUrl::parse(&broker.url("fence-changelog")).unwrap(),
        coordinator: KafkaUrl::parse(&broker.url("fence-coordinator")).unwrap(),
        group_id: broker.topic("fence-group"),
        session_timeout: Duration::from_secs(6),
        member: "test".into(),
        client: KafkaOptions::default(),
    };
    let snap = |trigger: u64, records: u64| Snapshot {
        trigger,
        records,
        valid: records,
        malformed: 0,
        malformed_by_kind: Default::default(),
        offsets: BTreeMap::from([("0".to_string(), records as i64)]),
        emitted_at: String::new(),
        subsets: Default::default(),
    };
    let json = |s: &Snapshot| serde_json::to_string(s).unwrap();
    let old = GlobalLog::open(&s).expect("the first writer");
    let one = snap(1, 10);
    assert!(old.commit(&s, &one, &json(&one)).unwrap(), "committed");
    let new = GlobalLog::open(&s).expect("the second writer fences the first");
    let stale = snap(2, 15);
    assert!(
        !old.commit(&s, &stale, &json(&stale)).unwrap(),
        "the fenced writer's snapshot is refused"
    );
    let two = snap(2, 20);
    assert!(new.commit(&s, &two, &json(&two)).unwrap(), "committed");
    let got: Vec<(u64, u64)> = global_snapshots(&broker.addr, &topic)
        .iter()
        .map(|s| (s.trigger, s.records))
        .collect();
    assert_eq!(got, vec![(1, 10), (2, 20)]);
}

/// Regression: a group member whose broker stayed away past `--outage-limit` left the group
/// and exited 0, as if it had finished; it exits 69 (unavailable) as one process does, and
/// says why.
#[test]
fn regression_a_member_past_its_outage_limit_exits_unavailable() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let broker = common::Broker::dedicated();
    broker.create_topic("views", PARTITIONS);
    let records = &data().stream[..3_000];
    common::produce_at(
        &broker.addr,
        &broker.topic("views"),
        records,
        common::household_key,
        |v| Some(partition_of(v)),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("viewpulse.toml");
    std::fs::write(&cfg, config(&broker.topic("views"))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .args(["--member", "m1", "--outage-limit", "2s", "--log", "info"])
        .env("VIEWPULSE_SOURCE", broker.url("views"))
        .env("VIEWPULSE_CHANGELOG", broker.url("views-changelog"))
        .env("VIEWPULSE_COORDINATOR", broker.url("views-coordinator"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let coordinator = broker.topic("views-coordinator");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while global_snapshots(&broker.addr, &coordinator)
        .last()
        .is_none_or(|s| s.records < records.len() as u64)
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the member ended early"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no global snapshot covered every record"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(broker);
    let began = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains("outage_limit"), "{err}");
    assert!(began.elapsed() < Duration::from_secs(90), "{err}");
}
