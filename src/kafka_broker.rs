//! A local Apache Kafka broker for the load test, the tests and the benches: the fixture
//! script `deploy/kafka/broker.sh` (embedded in the binary, with the POM that lists the
//! broker's jars), driven from Rust. One KRaft node on free loopback ports, its data and log in
//! a folder of its own, stopped when dropped and, should this process die first, by the
//! script's watchdog. The jars come from Maven Central once, into a cache folder
//! (`broker.sh fetch`; `viewpulse loadtest --fetch-broker` does the same).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use thiserror::Error;

/// The fixture script, as in the repository.
pub const SCRIPT: &str = include_str!("../deploy/kafka/broker.sh");
/// The POM that lists the broker's jars.
pub const POM: &str = include_str!("../deploy/kafka/pom.xml");

/// A failure of the fixture.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// The broker's jars are not in the cache (nothing is fetched without being asked).
    #[error("Apache Kafka's jars are not in {cache}: fetch them once with `viewpulse loadtest --fetch-broker` (or `deploy/kafka/broker.sh fetch` in a checkout; both need Maven and Java 17), or give --broker HOST:PORT")]
    NotFetched {
        /// The cache folder looked in.
        cache: PathBuf,
    },
    /// The script could not be run at all.
    #[error("cannot run the broker fixture (bash {action}): {source}")]
    Spawn {
        /// What it was asked to do.
        action: String,
        /// Why it could not run.
        #[source]
        source: std::io::Error,
    },
    /// The script ran and failed; its message (which names the broker's log) follows.
    #[error("the broker fixture failed to {action}: {message}")]
    Failed {
        /// What it was asked to do.
        action: String,
        /// Its standard error, trimmed.
        message: String,
    },
}

impl BrokerError {
    /// The process exit code this error means: the broker is a service that is not there.
    pub fn exit_code(&self) -> i32 {
        crate::exit::UNAVAILABLE
    }
}

/// How to start a broker.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// Also an SSL and a SASL_SSL (SCRAM-SHA-512) listener, with a test CA (`tls/ca.pem`).
    pub tls: bool,
    /// SCRAM-SHA-512 users (name, password), created at format time by Kafka's StorageTool.
    pub scram_users: Vec<(String, String)>,
    /// Delete the folder when the broker ends (at drop, or by the watchdog).
    pub cleanup: bool,
    /// JVM heap flags (default: the script's).
    pub heap: Option<String>,
    /// The PLAINTEXT listener's port (default: a free one).
    pub port: Option<u16>,
}

/// A running (or stopped, restartable) local broker.
#[derive(Debug)]
pub struct LocalBroker {
    dir: PathBuf,
    opts: BrokerOptions,
    /// `127.0.0.1:PORT` of the PLAINTEXT listener.
    pub addr: String,
    running: bool,
}

/// The embedded POM, written once into the temp folder (the script reads the version and the
/// jar list from a file).
fn pom_file() -> Result<PathBuf, BrokerError> {
    let path = std::env::temp_dir().join(format!(
        "viewpulse-kafka-{:08x}.pom.xml",
        crc32fast::hash(POM.as_bytes())
    ));
    if !path.is_file() {
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        std::fs::write(&tmp, POM)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| BrokerError::Spawn {
                action: format!("write {}", path.display()),
                source: e,
            })?;
    }
    Ok(path)
}

/// Run the embedded script with `args`; its standard output on success.
fn script(args: &[&str], env: &[(&str, String)]) -> Result<String, BrokerError> {
    let action = args.join(" ");
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(SCRIPT)
        .arg("broker.sh")
        .args(args)
        .env("VIEWPULSE_KAFKA_POM", pom_file()?)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().map_err(|e| BrokerError::Spawn {
        action: action.clone(),
        source: e,
    })?;
    if !out.status.success() {
        return Err(BrokerError::Failed {
            action,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The jar folder, and whether it is complete (fetched).
pub fn cache() -> Result<(PathBuf, bool), BrokerError> {
    let out = script(&["cache"], &[])?;
    let (dir, state) = out.split_once('\t').unwrap_or((&out, "missing"));
    Ok((PathBuf::from(dir), state == "complete"))
}

/// Fetch the jars into the cache (a no-op when they are there); the jar folder.
pub fn fetch() -> Result<PathBuf, BrokerError> {
    script(&["fetch"], &[]).map(PathBuf::from)
}

/// Run one of Kafka's own tools from the same jars (e.g.
/// `org.apache.kafka.tools.consumer.group.ConsumerGroupCommand`); its standard output.
pub fn tool(class: &str, args: &[&str]) -> Result<String, BrokerError> {
    let mut all = vec!["tool", class];
    all.extend_from_slice(args);
    script(&all, &[])
}

impl LocalBroker {
    /// Start a broker with its data and log in `dir` (formatted first unless it holds a
    /// node), once its jars are in the cache; returns when it logged `Kafka Server started`.
    pub fn start(dir: &Path, opts: &BrokerOptions) -> Result<LocalBroker, BrokerError> {
        let (libs, complete) = cache()?;
        if !complete {
            return Err(BrokerError::NotFetched { cache: libs });
        }
        let mut b = LocalBroker {
            dir: dir.to_path_buf(),
            opts: opts.clone(),
            addr: String::new(),
            running: false,
        };
        b.restart()?;
        Ok(b)
    }

    /// Start the broker again on the same folder and ports (after [`LocalBroker::kill`] or
    /// [`LocalBroker::stop`]): its data, topics and offsets are kept.
    pub fn restart(&mut self) -> Result<(), BrokerError> {
        let mut env = vec![("WATCH_PID", std::process::id().to_string())];
        if self.opts.tls {
            env.push(("TLS", "1".into()));
        }
        if self.opts.cleanup {
            env.push(("CLEANUP", "1".into()));
        }
        if !self.opts.scram_users.is_empty() {
            let users: Vec<String> = self
                .opts
                .scram_users
                .iter()
                .map(|(u, p)| format!("{u}:{p}"))
                .collect();
            env.push(("SCRAM_USERS", users.join(",")));
        }
        if let Some(p) = self.opts.port {
            env.push(("PORT", p.to_string()));
        }
        if let Some(h) = &self.opts.heap {
            env.push(("KAFKA_HEAP", h.clone()));
        }
        let dir = self.dir.to_string_lossy().to_string();
        self.addr = script(&["start", &dir], &env)?;
        self.running = true;
        Ok(())
    }

    /// The broker's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The broker's own log (name it when a test fails).
    pub fn log(&self) -> PathBuf {
        self.dir.join("broker.log")
    }

    /// `127.0.0.1:PORT` of the SSL listener (with `tls`).
    pub fn ssl_addr(&self) -> Option<String> {
        self.read("ssl.addr")
    }

    /// `127.0.0.1:PORT` of the SASL_SSL listener (with `tls`).
    pub fn sasl_ssl_addr(&self) -> Option<String> {
        self.read("sasl_ssl.addr")
    }

    /// The CA certificate (PEM) that signed the broker's (with `tls`).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.read("broker.pid").and_then(|p| p.parse().ok())
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// SIGKILL, as a crash (data stays for [`LocalBroker::restart`]).
    pub fn kill(&mut self) -> Result<(), BrokerError> {
        let dir = self.dir.to_string_lossy().to_string();
        script(&["kill", &dir], &[])?;
        self.running = false;
        Ok(())
    }

    /// A clean shutdown (SIGTERM; SIGKILL after 30 s).
    pub fn stop(&mut self) -> Result<(), BrokerError> {
        let dir = self.dir.to_string_lossy().to_string();
        script(&["stop", &dir], &[])?;
        self.running = false;
        Ok(())
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        if self.running {
            // a broker that is thrown away needs no clean shutdown
            let _ = self.kill();
        }
        if self.opts.cleanup {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_script_and_pom_agree_on_the_version() {
        let v = POM
            .split("<kafka.version>")
            .nth(1)
            .and_then(|s| s.split('<').next())
            .unwrap();
        assert!(v.starts_with('4'), "{v}");
        // the cache folder is per version, as the script names it
        let (dir, _) = cache().unwrap();
        assert!(
            dir.to_string_lossy().ends_with(&format!("kafka-{v}/libs"))
                || std::env::var_os("VIEWPULSE_KAFKA_CACHE").is_some(),
            "{}",
            dir.display()
        );
    }
}
