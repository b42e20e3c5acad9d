//! Reliability against Apache Kafka (the test fixture's broker): `kill -9` at random points (one of them in the
//! middle of a checkpoint write) and restarts give exactly the snapshots and dead letters of
//! an uninterrupted run; a damaged newest checkpoint falls back to the one before with the
//! same result; a model change is refused unless `--reset-state`; a broker restarted on its
//! kept storage (sqlite) loses and repeats nothing; a long outage ends the run cleanly with a
//! last checkpoint; and a flood from a producer at full speed keeps the daemon's memory bounded.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use viewpulse::counters::{Counters, Subset};
use viewpulse::generate::GenerateConfig;
use viewpulse::pipeline::{self, Metrics, RunSource};
use viewpulse::ratings;
use viewpulse::source::kafka::{KafkaOptions, KafkaUrl, StartAt, StreamOptions};
use viewpulse::topology;

const TRIGGER: u64 = 1000;

/// A generated data set and its model, made once for the whole file.
fn data() -> &'static common::Generated {
    static D: OnceLock<common::Generated> = OnceLock::new();
    D.get_or_init(|| {
        common::generated(&GenerateConfig {
            households: 3_000,
            static_records: 1_000,
            stream_records: 24_000,
            stations: 150,
            seed: 21,
            malformed_fraction: 0.02,
            ..GenerateConfig::default()
        })
    })
}

/// A broker holding the data set's stream in a one-partition topic, and its URL.
fn broker_with_stream() -> (common::Broker, String) {
    let broker = common::Broker::start();
    broker.create_topic("views", 1);
    broker.produce("views", &data().stream, common::household_key);
    let url = broker.url("views");
    (broker, url)
}

/// `viewpulse run` on `url` with checkpoints in `state` (none: no checkpoints).
fn daemon(url: &str, snaps: &Path, dead: &Path, state: Option<&Path>) -> Command {
    daemon_of(&data().model, url, snaps, dead, state)
}

/// [`daemon`] with another model.
fn daemon_of(model: &Path, url: &str, snaps: &Path, dead: &Path, state: Option<&Path>) -> Command {
    // VIEWPULSE_TEST_BIN: another build under test (the one before a fix)
    let bin = std::env::var("VIEWPULSE_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_viewpulse").to_string());
    let mut c = Command::new(bin);
    c.args(["--log", "warn", "run", "--model"])
        .arg(model)
        .args(["--source", url, "--snapshots"])
        .arg(snaps)
        .arg("--dead-letter")
        .arg(dead)
        .args([
            "--trigger-records",
            &TRIGGER.to_string(),
            "--shards",
            "4",
            "--until-end",
            "--no-stdout",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(s) = state {
        c.arg("--state-dir").arg(s);
        // every checkpoint write pauses halfway, so that kills land in one too
        c.env("VIEWPULSE_FAULT_CHECKPOINT_PAUSE_MS", "25");
    }
    c
}

/// Snapshots of a JSON-lines file, without their emission time.
fn snapshots(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("emitted_at");
            v
        })
        .collect()
}

/// Dead-letter lines as written (header left out): the writer writes them in offset
/// order whatever the shards do, so files are compared as they are.
fn dead_letters(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// The highest checkpoint sequence number in `dir`, if any.
fn newest_seq(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.strip_prefix("checkpoint-")?
                .strip_suffix(".vpck")?
                .parse()
                .ok()
        })
        .max()
}

fn newest_file(dir: &Path) -> PathBuf {
    dir.join(format!(
        "checkpoint-{:012}.vpck",
        newest_seq(dir).expect("a checkpoint")
    ))
}

fn has_tmp(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
    })
}

/// Poll until `until` holds or the child exits; true if the child is still running.
fn wait_running(child: &mut Child, secs: u64, mut until: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if until() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("no progress in {secs} s; the daemon said:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn stderr_of(child: Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A small deterministic generator for the kill points (xorshift).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// An uninterrupted run over `url`: its snapshots and dead letters.
fn reference(url: &str, dir: &Path) -> (Vec<serde_json::Value>, Vec<String>) {
    let (s, d) = (dir.join("ref.jsonl"), dir.join("ref-dead.tsv"));
    let (code, err) = stderr_of(daemon(url, &s, &d, None).spawn().unwrap());
    assert_eq!(code, 0, "{err}");
    let snaps = snapshots(&s);
    assert_eq!(
        snaps.len() as u64,
        (data().stream.len() as u64).div_ceil(TRIGGER)
    );
    (snaps, dead_letters(&d))
}

#[test]
fn kill_nine_at_random_points_then_restart_equals_an_uninterrupted_run() {
    let (_broker, url) = broker_with_stream();
    let dir = tempfile::tempdir().unwrap();
    let (want, want_dead) = reference(&url, dir.path());
    let malformed = want.last().unwrap()["malformed"].as_u64().unwrap();
    assert!(malformed > 100, "the data has malformed records");
    assert_eq!(want_dead.len() as u64, malformed);

    let state = dir.path().join("state");
    let (snaps, dead) = (dir.path().join("s.jsonl"), dir.path().join("dead.tsv"));
    let seed = 0x5eed_0001;
    let mut rng = Rng(seed);
    let (mut kills, mut in_write) = (0, 0);
    while kills < 6 {
        let during_write = kills == 2 || kills == 4;
        if during_write {
            for e in std::fs::read_dir(&state).unwrap().flatten() {
                if e.file_name().to_string_lossy().ends_with(".tmp") {
                    std::fs::remove_file(e.path()).unwrap();
                }
            }
        }
        let before = newest_seq(&state).map_or(0, |s| s + 1);
        let ahead = 1 + rng.below(3);
        let mut child = daemon(&url, &snaps, &dead, Some(&state)).spawn().unwrap();
        let running = if during_write {
            // the next checkpoint's temporary file: kill while it is half written
            wait_running(&mut child, 60, || {
                newest_seq(&state).map_or(0, |s| s + 1) > before && has_tmp(&state)
            })
        } else {
            wait_running(&mut child, 60, || {
                newest_seq(&state).map_or(0, |s| s + 1) >= before + ahead
            })
        };
        assert!(
            running,
            "the run ended before kill {kills} (seed {seed:#x})"
        );
        if !during_write {
            std::thread::sleep(Duration::from_millis(rng.below(30)));
        }
        let tmp_at_kill = has_tmp(&state);
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        if during_write && tmp_at_kill {
            in_write += 1;
        }
    }
    assert!(in_write >= 1, "a kill landed in a checkpoint write");
    let (code, err) = stderr_of(daemon(&url, &snaps, &dead, Some(&state)).spawn().unwrap());
    assert_eq!(code, 0, "{err}");
    let got = snapshots(&snaps);
    assert_eq!(got.len(), want.len(), "seed {seed:#x}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "trigger {} (seed {seed:#x})", w["trigger"]);
    }
    assert_eq!(dead_letters(&dead), want_dead, "every dead letter once");
}

#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_one_before() {
    let (_broker, url) = broker_with_stream();
    let dir = tempfile::tempdir().unwrap();
    let (want, want_dead) = reference(&url, dir.path());
    let state = dir.path().join("state");
    let (snaps, dead) = (dir.path().join("s.jsonl"), dir.path().join("dead.tsv"));
    for damage in ["flip", "truncate"] {
        let before = newest_seq(&state).map_or(0, |s| s + 1);
        let mut child = daemon(&url, &snaps, &dead, Some(&state)).spawn().unwrap();
        assert!(wait_running(&mut child, 60, || {
            newest_seq(&state).map_or(0, |s| s + 1) >= before + 3 && !has_tmp(&state)
        }));
        child.kill().unwrap();
        child.wait().unwrap();
        let newest = newest_file(&state);
        let mut bytes = std::fs::read(&newest).unwrap();
        if damage == "flip" {
            let n = bytes.len();
            bytes[n / 2] ^= 0x10;
        } else {
            bytes.truncate(bytes.len() / 3);
        }
        std::fs::write(&newest, &bytes).unwrap();
        if damage == "truncate" {
            let (code, err) = stderr_of(daemon(&url, &snaps, &dead, Some(&state)).spawn().unwrap());
            assert_eq!(code, 0, "{err}");
            assert!(err.contains("damaged checkpoint"), "{err}");
        }
    }
    let got = snapshots(&snaps);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!(g == w, "trigger {}: {g:?}", w["trigger"]);
    }
    assert_eq!(dead_letters(&dead), want_dead);

    // another model: refused, naming the way out; --reset-state starts over
    let other = dir.path().join("other-model");
    std::fs::create_dir_all(&other).unwrap();
    let text = std::fs::read_to_string(data().model.join("households.csv")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut f: Vec<String> = lines[1].split(',').map(str::to_string).collect();
    f[1] = if f[1] == "0" { "1".into() } else { "0".into() };
    lines[1] = f.join(",");
    std::fs::write(other.join("households.csv"), lines.join("\n") + "\n").unwrap();
    let run_other = |reset: bool| {
        let mut c = daemon_of(&other, &url, &snaps, &dead, Some(&state));
        if reset {
            c.arg("--reset-state");
        }
        stderr_of(c.spawn().unwrap())
    };
    let (code, err) = run_other(false);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("another model") && err.contains("--reset-state"),
        "{err}"
    );
    let (code, err) = run_other(true);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        snapshots(&snaps).len(),
        want.len(),
        "a fresh run from the start"
    );
}

/// The daemon in-process on `url` (no end), its metrics, and its stop flag.
fn run_in_process(
    url: &str,
) -> (
    std::thread::JoinHandle<Vec<pipeline::Snapshot>>,
    Arc<Metrics>,
    Arc<AtomicBool>,
) {
    let subsets = vec![Subset::Every(3)];
    let (_, m) = topology::load_membership(&data().model, &subsets).unwrap();
    let settings = common::settings(1, TRIGGER, &subsets);
    let metrics = Arc::new(Metrics::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let sink = pipeline::MemorySink::default();
    let source = RunSource::Kafka {
        url: KafkaUrl::parse(url).unwrap(),
        options: StreamOptions {
            client: KafkaOptions::default(),
            group_id: "recovery".into(),
            start: StartAt::Earliest,
            until_end: false,
            batch_records: 1000,
            batch_wait: Duration::from_millis(20),
            context: None,
            resume: Default::default(),
        },
    };
    let (mx, st) = (metrics.clone(), stop.clone());
    let h = std::thread::spawn(move || {
        viewpulse::topology::run::daemon_with(
            source,
            Arc::new(m),
            &settings,
            vec![Box::new(sink.clone())],
            st,
            mx,
        )
        .unwrap();
        let snaps = sink.0.lock().unwrap().clone();
        snaps
    });
    (h, metrics, stop)
}

/// The fixture's broker once failed to start in CI: a port it had chosen by `bind(0)`, in the
/// ephemeral range, went to a client's outgoing connection while the JVM started (`BindException:
/// Address already in use`). Its ports now come from below that range, where no outgoing
/// connection takes one, and a start that still loses a port chooses others.
#[test]
fn regression_the_broker_fixture_chooses_ports_no_outgoing_connection_can_take() {
    let broker = common::Broker::dedicated();
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .map(|r| {
            r.split_whitespace()
                .next()
                .unwrap_or("32768")
                .parse()
                .unwrap()
        })
        .unwrap_or(32768);
    let ports = std::fs::read_to_string(broker.local().dir().join("ports")).unwrap();
    let ports: Vec<u16> = ports
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 4, "{ports:?}");
    for p in &ports {
        assert!(
            (10_000..20_000.min(low)).contains(p),
            "port {p} of {ports:?}"
        );
    }
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "{ports:?}");
    assert_eq!(broker.addr, format!("127.0.0.1:{}", ports[0]));
}

#[test]
fn a_broker_restarted_on_its_storage_loses_and_repeats_nothing() {
    let mut broker = common::Broker::dedicated();
    broker.create_topic("views", 1);
    let stream = &data().stream;
    let half = stream.len() / 2;
    broker.produce("views", &stream[..half], common::household_key);
    let url = broker.url("views");
    let (h, metrics, stop) = run_in_process(&url);
    let counted = |n: usize| {
        let m = metrics.clone();
        move || m.records.load(Ordering::Relaxed) >= n as u64
    };
    common::wait_for(60, "the first half counted", counted(half));
    // kill -9 the broker mid-stream and start it again on the same data folder and port
    broker.kill();
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    broker.produce("views", &stream[half..], common::household_key);
    common::wait_for(120, "the second half counted", counted(stream.len()));
    stop.store(true, Ordering::Relaxed);
    let snaps = h.join().unwrap();
    assert_eq!(metrics.records.load(Ordering::Relaxed), stream.len() as u64);
    assert_eq!(snaps.len() as u64, stream.len() as u64 / TRIGGER);
    let subsets = vec![Subset::Every(3)];
    let (_, m) = topology::load_membership(&data().model, &subsets).unwrap();
    let mut c = Counters::for_membership(&m);
    for (i, s) in snaps.iter().enumerate() {
        let upto = (i as u64 + 1) * TRIGGER;
        for r in &stream[(upto - TRIGGER) as usize..upto as usize] {
            c.count(r, &m);
        }
        assert_eq!(s.records, upto);
        assert_eq!(s.offsets["0"], upto as i64);
        assert_eq!(
            common::snapshot_rows(s),
            common::core_rows(&ratings::top_diff_rank(&c, &subsets, 7)),
            "trigger {}",
            s.trigger
        );
    }
    drop(broker);
}

#[test]
fn a_long_outage_ends_the_run_cleanly_with_a_last_checkpoint() {
    let broker = common::Broker::dedicated();
    broker.create_topic("views", 1);
    let n = 5_000;
    broker.produce("views", &data().stream[..n], common::household_key);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut c = daemon(
        &broker.url("views"),
        &dir.path().join("s.jsonl"),
        &dir.path().join("d.tsv"),
        Some(&state),
    );
    let args: Vec<std::ffi::OsString> = c
        .get_args()
        .filter(|a| *a != "--until-end")
        .map(|a| a.to_owned())
        .collect();
    c = Command::new(env!("CARGO_BIN_EXE_viewpulse"));
    c.args(args)
        .args(["--outage-limit", "2s", "--log", "info"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    assert!(wait_running(&mut child, 60, || {
        newest_seq(&state).is_some_and(|s| s + 1 >= (n as u64 / TRIGGER))
    }));
    drop(broker);
    let began = Instant::now();
    let (code, err) = stderr_of(child);
    assert_eq!(code, 69, "{err}");
    assert!(began.elapsed() < Duration::from_secs(60));
    assert!(err.contains("outage_limit"), "{err}");
    assert_eq!(
        err.matches("broker unreachable; retrying").count(),
        1,
        "the outage is logged once: {err}"
    );
    let bytes = std::fs::read(newest_file(&state)).unwrap();
    let last = viewpulse::checkpoint::decode(&bytes, Path::new("newest")).unwrap();
    assert_eq!(last.records, n as u64);
    assert_eq!(last.offsets()[&0], n as i64);
}

/// Resident-memory high-water mark of a process, from /proc, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// The stated bound: the daemon with one shard, 3,000 households and a producer at the
/// broker's full speed stays under 200 MB resident (librdkafka's prefetch is capped at
/// 16 MB a partition, every queue after it is bounded).
const FLOOD_PEAK_BYTES: u64 = 200 << 20;

#[test]
fn a_flood_keeps_the_daemon_memory_bounded() {
    let broker = common::Broker::start();
    broker.create_topic("flood", 1);
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("s.jsonl");
    let total: usize = 600_000;
    let mut child = Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(["--log", "warn", "run", "--model"])
        .arg(&data().model)
        .args(["--source", &broker.url("flood"), "--snapshots"])
        .arg(&snaps)
        .args([
            "--trigger-records",
            "100000",
            "--shards",
            "1",
            "--no-stdout",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // a producer at full speed, concurrently with the daemon
    let stream = &data().stream;
    let records: Vec<Vec<u8>> = (0..total)
        .map(|i| stream[i % stream.len()].clone())
        .collect();
    broker.produce("flood", &records, common::household_key);
    let done = || {
        std::fs::read_to_string(&snaps)
            .is_ok_and(|t| t.lines().filter(|l| !l.is_empty()).count() == total / 100_000)
    };
    assert!(wait_running(&mut child, 120, done));
    let peak = peak_rss(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!("flood: peak resident {:.1} MB", peak as f64 / 1e6);
    assert!(
        peak < FLOOD_PEAK_BYTES,
        "peak resident {peak} bytes over the bound {FLOOD_PEAK_BYTES}"
    );
    let last = snapshots(&snaps);
    assert_eq!(last.last().unwrap()["records"], total as u64);
}

#[test]
fn regression_sigterm_then_restart_keeps_the_trigger_numbers_and_the_files() {
    // A run that ends between two triggers (at the end of the topic, then by SIGTERM while
    // it follows the topic) and is started again once more records came must give the
    // files of one run over the whole topic: same trigger numbers, same snapshots, same
    // dead letters. The stops land 345 records past a trigger, so each leaves a last
    // snapshot for a part of a trigger.
    let broker = common::Broker::start();
    broker.create_topic("views", 1);
    let url = broker.url("views");
    let all = &data().stream;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (snaps, dead) = (dir.path().join("s.jsonl"), dir.path().join("dead.tsv"));
    let last = |path: &Path| snapshots(path).pop().unwrap();

    broker.produce("views", &all[..12_345], common::household_key);
    let (code, err) = stderr_of(daemon(&url, &snaps, &dead, Some(&state)).spawn().unwrap());
    assert_eq!(code, 0, "{err}");
    assert_eq!(last(&snaps)["records"], 12_345);
    assert_eq!(last(&snaps)["trigger"], 13);

    broker.produce("views", &all[12_345..18_345], common::household_key);
    let follow = daemon(&url, &snaps, &dead, Some(&state));
    let args: Vec<_> = follow
        .get_args()
        .filter(|a| *a != "--until-end")
        .map(|a| a.to_owned())
        .collect();
    let mut follow = Command::new(follow.get_program());
    follow
        .args(args)
        .env("VIEWPULSE_FAULT_CHECKPOINT_PAUSE_MS", "25")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = follow.spawn().unwrap();
    let running = wait_running(&mut child, 60, || {
        std::fs::read_to_string(&snaps).is_ok_and(|t| t.contains("\"trigger\":18,"))
    });
    assert!(running, "the daemon follows the topic");
    // the 345 records after trigger 18 are counted well within a second
    std::thread::sleep(Duration::from_millis(1500));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let (code, err) = stderr_of(child);
    assert_eq!(code, 0, "a stop is a clean end: {err}");
    assert_eq!(last(&snaps)["records"], 18_345, "{err}");
    assert_eq!(last(&snaps)["trigger"], 19);

    broker.produce("views", &all[18_345..], common::household_key);
    let (code, err) = stderr_of(daemon(&url, &snaps, &dead, Some(&state)).spawn().unwrap());
    assert_eq!(code, 0, "{err}");

    let (want, _) = reference(&url, dir.path());
    let want_dead = dead_letters(&dir.path().join("ref-dead.tsv"));
    let got = snapshots(&snaps);
    assert_eq!(
        got.len(),
        want.len(),
        "the trigger numbers of a run that never stopped"
    );
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "trigger {}", w["trigger"]);
    }
    assert_eq!(dead_letters(&dead), want_dead, "the same dead-letter file");
}

/// The probes through the real binary against Apache Kafka: `/livez` and `/readyz` answer
/// 200 while the daemon runs; with the broker killed, `/readyz` turns 503 naming the broker
/// within seconds while `/livez` stays 200 (the actors still answer); with the broker back,
/// `/readyz` is 200 again. The daemon keeps running throughout.
#[test]
fn readyz_follows_a_broker_outage_while_livez_stays_up() {
    let mut broker = common::Broker::dedicated();
    broker.create_topic("views", 1);
    let n = 3_000;
    broker.produce("views", &data().stream[..n], common::household_key);
    let dir = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", common::free_port());
    let mut c = daemon(
        &broker.url("views"),
        &dir.path().join("s.jsonl"),
        &dir.path().join("d.tsv"),
        None,
    );
    let args: Vec<std::ffi::OsString> = c
        .get_args()
        .filter(|a| *a != "--until-end")
        .map(|a| a.to_owned())
        .collect();
    c = Command::new(env!("CARGO_BIN_EXE_viewpulse"));
    c.args(args)
        .args(["--http-listen", &http, "--trigger-interval", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let probe = |path: &str| common::http_get(&http, path).unwrap_or((0, String::new()));
    common::wait_for(60, "every record counted", || {
        assert!(child.try_wait().unwrap().is_none(), "the daemon ended");
        probe("/healthz").1.contains(r#""records":3000"#)
    });
    let (code, body) = probe("/readyz");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""status":"ready""#), "{body}");
    let (code, body) = probe("/livez");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("shard 3 beat") && body.contains("the ingestor beat"),
        "{body}"
    );

    broker.kill();
    let killed = Instant::now();
    common::wait_for(30, "/readyz 503 naming the broker", || {
        let (code, body) = probe("/readyz");
        code == 503 && body.contains(r#""failing":["broker"]"#)
    });
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "503 only {took:?} after the kill"
    );
    let (code, body) = probe("/livez");
    assert_eq!(
        code, 200,
        "the actors still answer during the outage: {body}"
    );
    let (code, body) = probe("/healthz");
    assert_eq!(code, 503, "/healthz is the readiness summary: {body}");
    assert!(body.contains(r#""records":3000"#), "{body}");

    broker.restart();
    common::wait_for(60, "/readyz 200 again with the broker back", || {
        probe("/readyz").0 == 200
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon kept running"
    );
    let (_, metrics) = probe("/metrics");
    for family in [
        "viewpulse_broker_up 1",
        "viewpulse_assigned_partitions 1",
        "viewpulse_coordinator 1",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "viewpulse_build_info{version=",
        "viewpulse_snapshot_age_seconds",
    ] {
        assert!(metrics.contains(family), "{family} missing from\n{metrics}");
    }
    // SIGTERM: drains and exits 0
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let (code, err) = stderr_of(child);
    assert_eq!(code, 0, "{err}");
    eprintln!(
        "/readyz turned 503 {:.1} s after the broker was killed",
        took.as_secs_f64()
    );
    drop(broker);
}
