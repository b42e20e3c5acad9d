//! Shared helpers of the integration tests: a real Kafka-protocol broker (tansu 0.6.0) started
//! on a free loopback port and stopped when dropped, and small producer/admin helpers.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Where the tansu binary is: `$VIEWPULSE_TANSU`, `tansu` on the PATH, or `~/.cargo/bin/tansu`.
pub fn tansu() -> PathBuf {
    if let Ok(p) = std::env::var("VIEWPULSE_TANSU") {
        return PathBuf::from(p);
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("tansu");
            if p.is_file() {
                return p;
            }
        }
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = PathBuf::from(home).join(".cargo/bin/tansu");
    assert!(
        p.is_file(),
        "tansu is not installed: run .ci/run, or `cargo install tansu --version 0.6.0 --locked --features dynostore,libsql`"
    );
    p
}

/// A tansu broker process on a free loopback port, killed on drop.
pub struct Broker {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

/// A loopback port nothing listens on (as of now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    /// Start a broker with in-memory storage and wait until it accepts connections.
    pub fn start() -> Broker {
        Broker::start_on(free_port())
    }

    /// Start a broker with in-memory storage on `port`.
    pub fn start_on(port: u16) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu())
            .args([
                "broker",
                "--storage-engine=memory://tansu/",
                &format!("--listener-url={url}"),
                &format!("--advertised-listener-url={url}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {addr} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, addr }
    }

    /// `kafka://ADDR/TOPIC`.
    pub fn url(&self, topic: &str) -> String {
        format!("kafka://{}/{topic}", self.addr)
    }

    /// Create a topic with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .unwrap();
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
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
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
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
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
