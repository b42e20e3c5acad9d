//! Shared helpers of the integration tests: the Apache Kafka broker (one per test binary,
//! started by the fixture `deploy/kafka/broker.sh` on free loopback ports, topics unique per
//! test; or a broker of a test's own that it can kill and restart; or the cluster that
//! `VIEWPULSE_TEST_BOOTSTRAP=HOST:PORT` names), small producer/admin helpers, and the pipeline
//! run and snapshot comparison that several test files share.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// The broker of a test: Apache Kafka, started by the fixture (`deploy/kafka/broker.sh`) on
/// free loopback ports, or the cluster `VIEWPULSE_TEST_BOOTSTRAP=HOST:PORT` names. Every
/// handle has topic names of its own (a prefix), so tests can share one broker.
pub struct Broker {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    prefix: String,
    /// A broker of this handle's own (restartable); none for the shared one.
    own: Option<viewpulse::kafka_broker::LocalBroker>,
    _dir: Option<tempfile::TempDir>,
}

/// The shared broker of this test binary: (address, log), or why it could not start.
static SHARED: std::sync::OnceLock<Result<(String, String), String>> = std::sync::OnceLock::new();
static HANDLES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn unique_prefix() -> String {
    let n = HANDLES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("t{}-{n}-", std::process::id())
}

/// Start a broker of our own in `dir` by the fixture, panicking with the fixture's message
/// (which names the broker's log) when it cannot.
fn start_local(
    dir: &std::path::Path,
    opts: &viewpulse::kafka_broker::BrokerOptions,
) -> viewpulse::kafka_broker::LocalBroker {
    match viewpulse::kafka_broker::LocalBroker::start(dir, opts) {
        Ok(b) => {
            eprintln!("kafka broker {} (log: {})", b.addr, b.log().display());
            b
        }
        Err(e) => panic!("{e}"),
    }
}

/// `name`'s value from the environment as a number, or `default` (bench parameters).
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The data set the Kafka benches stream: 200,000 households, 2,000 stations, seed 5, and
/// `records` stream records.
pub fn bench_data(records: u64) -> viewpulse::generate::GenerateConfig {
    viewpulse::generate::GenerateConfig {
        households: 200_000,
        static_records: 1_000,
        stream_records: records,
        stations: 2_000,
        seed: 5,
        ..viewpulse::generate::GenerateConfig::default()
    }
}

/// A loopback port nothing listens on (as of now), below the ephemeral range
/// ([`free_port_run`]).
pub fn free_port() -> u16 {
    free_port_run(1)
}

/// The first of `n` consecutive loopback ports that are free now, below the kernel's
/// ephemeral range (32768 and up here), where no outgoing connection can take one of them
/// between this check and the bind (an ephemeral base plus an offset once collided with a
/// Kafka client's connection: `Address already in use`). Tests of one binary run in
/// parallel: each call starts its search at a different place.
pub fn free_port_run(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = 12_000u16;
    let start = (std::process::id() as u16).wrapping_mul(97) % span;
    for attempt in 0..span / n {
        let offset = (start + (NEXT.fetch_add(n, Ordering::Relaxed) + attempt * n) % span) % span;
        let base = 20_000 + offset;
        let bound: Vec<_> = (0..n)
            .map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if bound.len() == n as usize {
            return base;
        }
    }
    panic!("no {n} consecutive free loopback ports between 20000 and 32000")
}

/// Run the binary with `args` (no progress bars, warnings only), expect success and return
/// its stdout; a failure shows the command and its stderr.
pub fn viewpulse_ok(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(args)
        .env("VIEWPULSE_NO_PROGRESS", "1")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "viewpulse {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A path as the `&str` a command line takes.
pub fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// `GET path` from `addr` over plain HTTP/1.1: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        // de-chunk: size line, data, CRLF ...
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// Poll `until` every 50 ms for at most `secs` seconds; panic with `what` when it never holds.
pub fn wait_for(secs: u64, what: &str, mut until: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !until() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Broker {
    /// A handle on this test binary's shared broker (started at the first call, ended by the
    /// fixture's watchdog when the binary exits), or on `VIEWPULSE_TEST_BOOTSTRAP`'s cluster.
    pub fn start() -> Broker {
        let shared = SHARED.get_or_init(|| {
            if let Ok(addr) = std::env::var("VIEWPULSE_TEST_BOOTSTRAP") {
                return Ok((addr, "(the cluster of VIEWPULSE_TEST_BOOTSTRAP)".into()));
            }
            let dir =
                std::env::temp_dir().join(format!("viewpulse-kafka-test-{}", std::process::id()));
            let opts = viewpulse::kafka_broker::BrokerOptions {
                cleanup: true,
                ..Default::default()
            };
            let b = viewpulse::kafka_broker::LocalBroker::start(&dir, &opts)
                .map_err(|e| e.to_string())?;
            let out = (b.addr.clone(), b.log().display().to_string());
            // the watchdog ends it (and deletes its folder) once this process has ended
            std::mem::forget(b);
            Ok(out)
        });
        let (addr, log) = match shared {
            Ok(x) => x.clone(),
            Err(e) => panic!("{e}"),
        };
        let prefix = unique_prefix();
        eprintln!("kafka broker {addr}, topics {prefix}* (log: {log})");
        Broker {
            addr,
            prefix,
            own: None,
            _dir: None,
        }
    }

    /// A broker of this test's own (always started by the fixture, even with
    /// `VIEWPULSE_TEST_BOOTSTRAP`), which it can kill and restart.
    pub fn dedicated() -> Broker {
        Broker::dedicated_with(&viewpulse::kafka_broker::BrokerOptions::default())
    }

    /// [`Broker::dedicated`] on `port`.
    pub fn dedicated_on(port: u16) -> Broker {
        Broker::dedicated_with(&viewpulse::kafka_broker::BrokerOptions {
            port: Some(port),
            ..Default::default()
        })
    }

    /// [`Broker::dedicated`] with TLS/SASL listeners or users.
    pub fn dedicated_with(opts: &viewpulse::kafka_broker::BrokerOptions) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let b = start_local(dir.path(), opts);
        Broker {
            addr: b.addr.clone(),
            // the broker is the test's alone: topics keep their names
            prefix: String::new(),
            own: Some(b),
            _dir: Some(dir),
        }
    }

    /// The fixture's broker behind a dedicated handle.
    pub fn local(&self) -> &viewpulse::kafka_broker::LocalBroker {
        self.own.as_ref().expect("a dedicated broker")
    }

    /// `kill -9` the dedicated broker (its data stays).
    pub fn kill(&mut self) {
        let b = self.own.as_mut().expect("a dedicated broker");
        b.kill().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Start the dedicated broker again on its data folder and ports.
    pub fn restart(&mut self) {
        let b = self.own.as_mut().expect("a dedicated broker");
        b.restart().unwrap_or_else(|e| panic!("{e}"));
    }

    /// This handle's name for `topic` on the broker.
    pub fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }

    /// `kafka://ADDR/TOPIC`.
    pub fn url(&self, topic: &str) -> String {
        format!("kafka://{}/{}", self.addr, self.topic(topic))
    }

    /// Create a topic with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .unwrap();
        let name = self.topic(topic);
        let new = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
        let res = futures_executor::block_on(admin.create_topics(&[new], &AdminOptions::new()))
            .expect("create_topics answered");
        for r in res {
            r.expect("topic created");
        }
    }

    /// Produce `values` in order, keyed by `key(value)`, and wait until all are delivered.
    pub fn produce(&self, topic: &str, values: &[Vec<u8>], key: impl Fn(&[u8]) -> Vec<u8>) {
        self.produce_to(topic, values, key, |_| None)
    }

    /// Produce `values` in order, keyed by `key(value)`, each to partition `partition(value)`
    /// (None: the producer's partitioner), and wait until all are delivered.
    pub fn produce_to(
        &self,
        topic: &str,
        values: &[Vec<u8>],
        key: impl Fn(&[u8]) -> Vec<u8>,
        partition: impl Fn(&[u8]) -> Option<i32>,
    ) {
        produce_at(&self.addr, &self.topic(topic), values, key, partition)
    }
}

/// [`Broker::produce_to`] for a broker known by its address only (from another thread).
pub fn produce_at(
    addr: &str,
    topic: &str,
    values: &[Vec<u8>],
    key: impl Fn(&[u8]) -> Vec<u8>,
    partition: impl Fn(&[u8]) -> Option<i32>,
) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("linger.ms", "5")
        .set("enable.idempotence", "false")
        .create()
        .unwrap();
    for v in values {
        let k = key(v);
        let mut rec = BaseRecord::to(topic)
            .payload(v.as_slice())
            .key(k.as_slice());
        if let Some(p) = partition(v) {
            rec = rec.partition(p);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(10));
                    rec = back;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("every record delivered");
}

/// The household id field of a record (its key, so that a household's records share a
/// partition), or the whole record when it has no comma.
pub fn household_key(v: &[u8]) -> Vec<u8> {
    v.rsplit(|&b| b == b',').next().unwrap_or(v).to_vec()
}

/// The lines of a file, without their newlines (a last empty line dropped).
pub fn lines(path: &std::path::Path) -> Vec<Vec<u8>> {
    let text = std::fs::read(path).unwrap();
    let mut v: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(|l| l.to_vec()).collect();
    if text.ends_with(b"\n") {
        v.pop();
    }
    v
}

/// Pipeline settings for a test run: `shards`, a trigger every `trigger` records, top 7.
pub fn settings(
    shards: usize,
    trigger: u64,
    subsets: &[viewpulse::counters::Subset],
) -> viewpulse::pipeline::PipelineSettings {
    viewpulse::pipeline::PipelineSettings {
        shards,
        trigger_records: trigger,
        trigger_interval: None,
        http: None,
        http_token: None,
        probes: Default::default(),
        subsets: subsets.to_vec(),
        top: 7,
        rating: Default::default(),
        durability: Default::default(),
        slow_shard: None,
    }
}

/// Runs the pipeline into a memory sink, to the end of `source` or until `stop` is set, and
/// returns every snapshot.
pub fn collect(
    source: viewpulse::pipeline::RunSource,
    membership: viewpulse::counters::Membership,
    settings: &viewpulse::pipeline::PipelineSettings,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<viewpulse::pipeline::Snapshot> {
    let sink = viewpulse::pipeline::MemorySink::default();
    viewpulse::topology::run::daemon(
        source,
        std::sync::Arc::new(membership),
        settings,
        vec![Box::new(sink.clone())],
        stop,
    )
    .expect("pipeline run");
    let snaps = sink.0.lock().expect("sink lock").clone();
    snaps
}

/// A diff-rank row as the tests compare it: subset, cluster, rank, station, diff_rank,
/// popularity and genpop rating. Ratings come from integer counts by the same code on both
/// sides, so they are compared exactly.
pub type Row = (String, u32, u32, String, f64, f64, f64);

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    rows
}

/// A snapshot's rows, sorted by subset, cluster and rank.
pub fn snapshot_rows(s: &viewpulse::pipeline::Snapshot) -> Vec<Row> {
    sorted(
        s.subsets
            .iter()
            .flat_map(|(label, rows)| {
                rows.iter().map(move |r| {
                    (
                        label.clone(),
                        r.cluster,
                        r.rank,
                        r.station_num.clone(),
                        r.diff_rank,
                        r.popularity_rating,
                        r.genpop_rating,
                    )
                })
            })
            .collect(),
    )
}

/// The pure core's rows (the brute-force side), sorted like [`snapshot_rows`].
pub fn core_rows(rows: &[viewpulse::ratings::DiffRankRow]) -> Vec<Row> {
    sorted(
        rows.iter()
            .map(|d| {
                (
                    d.subset.clone(),
                    d.cluster,
                    d.rank,
                    d.station_num.clone(),
                    d.diff_rank,
                    d.popularity_rating,
                    d.genpop_rating,
                )
            })
            .collect(),
    )
}

/// Generates a data set by `cfg` into `dir/data`, segments it into `dir/model`, and returns
/// the model folder and the stream's records, one a line.
pub fn generated_model(
    dir: &std::path::Path,
    cfg: &viewpulse::generate::GenerateConfig,
) -> (PathBuf, Vec<Vec<u8>>) {
    viewpulse::topology::generate(cfg, &dir.join("data")).expect("generate");
    let model = dir.join("model");
    viewpulse::topology::segment(
        &viewpulse::segment::SegmentSettings {
            demographics: dir.join("data/demographics.parquet"),
            out: model.clone(),
            kmeans: viewpulse::segment::KMeansSettings::default(),
            k_range: None,
            strict: false,
            formats: Default::default(),
        },
        false,
    )
    .expect("segment");
    let stream = lines(&dir.join("data/views_stream.csv"));
    (model, stream)
}

/// A generated data set and its model, in a temporary folder that lives as long as it does.
pub struct Generated {
    _dir: tempfile::TempDir,
    /// The model folder.
    pub model: PathBuf,
    /// The stream's records, one a line.
    pub stream: Vec<Vec<u8>>,
}

/// [`generated_model`] in a fresh temporary folder.
pub fn generated(cfg: &viewpulse::generate::GenerateConfig) -> Generated {
    let dir = tempfile::tempdir().expect("temp dir");
    let (model, stream) = generated_model(dir.path(), cfg);
    Generated {
        _dir: dir,
        model,
        stream,
    }
}

/// The interop tests' Python (pyarrow, Polars, pandas, confluent-kafka), made once from PyPI
/// by `tests/python/venv.sh` (which `.ci/run` also calls first).
pub fn python() -> PathBuf {
    static PY: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let got = PY.get_or_init(|| {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/venv.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    match got {
        Ok(p) => p.clone(),
        Err(e) => panic!("the interop tests need their Python packages: {e}"),
    }
}

/// Run `tests/python/interop.py` with `args`; its stdout, or a panic with its stderr.
pub fn interop<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    python_script("interop.py", args)
}

/// Run `tests/python/SCRIPT` with `args` in the tests' Python; its stdout, or a panic with its
/// output.
pub fn python_script<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = std::process::Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} {:?}: {}{}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Kafka's own `kafka-consumer-groups --describe --group GROUP` (ConsumerGroupCommand, from
/// the broker's jars), its rows for `topic`, split on blanks: GROUP TOPIC PARTITION
/// CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID. Empty when the tool fails.
pub fn group_offsets(addr: &str, group: &str, topic: &str) -> Vec<Vec<String>> {
    let out = viewpulse::kafka_broker::tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        &["--bootstrap-server", addr, "--describe", "--group", group],
    )
    .unwrap_or_default();
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|cols| cols.len() >= 6 && cols[1] == topic)
        .collect()
}
