//! The daemon's configuration (`viewpulse run --config FILE`): serde structs that refuse
//! unknown keys, with a default for every value, validated before anything starts. Every key
//! is also a command-line flag and an environment variable (see `main.rs`); flags win over the
//! file. `deploy/viewpulse.example.toml` documents every key and a test loads it. Secret values
//! (`kafka.properties`, `http.token`) may be `${env:NAME}` or `${file:PATH}` references, which
//! [`RunConfig::resolved`] replaces by what they refer to (see [`crate::secret`]); `Debug`
//! prints them as `***`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::counters::Subset;
use crate::secret::{Properties, Secret, SecretError};
use crate::source::kafka::StartAt;

/// Errors loading or validating a configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or holds an unknown key or a wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the key and the line).
        message: String,
    },
    /// A value is impossible.
    #[error("{key}: {message}")]
    Invalid {
        /// The key, dotted (`pipeline.shards`).
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A `${env:...}` or `${file:...}` reference cannot be resolved.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A `kafka://` URL is malformed.
    #[error(transparent)]
    Url(#[from] crate::source::SourceError),
    /// A file or folder a key names does not exist.
    #[error("{key}: {message}")]
    Missing {
        /// The key.
        key: &'static str,
        /// What is missing.
        message: String,
    },
}

impl ConfigError {
    /// The process exit code this error means: a config file or an input it names that is
    /// not there is [`crate::exit::NO_INPUT`], anything else a setting ([`crate::exit::USAGE`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Io { source, .. } => crate::exit::reading(source),
            ConfigError::Missing { .. } => crate::exit::NO_INPUT,
            ConfigError::Parse { .. } | ConfigError::Invalid { .. } => crate::exit::USAGE,
            ConfigError::Secret(e) => e.exit_code(),
            ConfigError::Url(e) => e.exit_code(),
        }
    }
}

/// Everything `viewpulse run` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// The model folder written by `viewpulse segment` (or one holding households.csv).
    pub model: PathBuf,
    /// The source: a file (one record a line, plain or gzip) or `kafka://HOST:PORT/TOPIC`.
    pub source: String,
    /// Stop once every record the source held at the start is consumed.
    pub until_end: bool,
    /// Triggers.
    pub trigger: TriggerConfig,
    /// Sharding and ratings.
    pub pipeline: PipelineConfig,
    /// Kafka client settings.
    pub kafka: KafkaConfig,
    /// Where snapshots go.
    pub sinks: SinksConfig,
    /// The HTTP endpoint.
    pub http: HttpConfig,
    /// Checkpoints and restore.
    pub state: StateConfig,
    /// Scale-out: several processes sharing the input topic through a consumer group.
    pub cluster: ClusterConfig,
}

/// Scale-out across processes: processes with the same `kafka.group_id` split the input
/// topic's partitions through Kafka's consumer-group protocol and publish each owned
/// partition's counters and next offset to a changelog topic; the process the group gave input
/// partition 0 merges them into global snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The changelog topic, `kafka://HOST:PORT/TOPIC` (created, compacted, with as many
    /// partitions as the input topic, when missing). Empty = one process owns every partition.
    pub changelog: String,
    /// The coordinator topic, `kafka://HOST:PORT/TOPIC` (created with one partition when
    /// missing): the coordinator (the process that owns input partition 0) writes every global
    /// snapshot to it (key = trigger number, value = the JSON line), and the next coordinator
    /// continues the sequence from its last one. Required with `changelog`.
    pub coordinator: String,
    /// The consumer-group session timeout: how soon a dead process's partitions (and with
    /// partition 0 the coordinator role) move to the others (`10s`).
    pub session_timeout: String,
    /// This process's name in logs, metrics and changelog entries (empty = `HOSTNAME-PID`).
    pub member: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            changelog: String::new(),
            coordinator: String::new(),
            session_timeout: "10s".into(),
            member: String::new(),
        }
    }
}

/// Checkpoints: the counters per input partition with their offsets, so that a restarted
/// daemon goes on exactly where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Folder of the checkpoints; none = no checkpoints (a restart starts from `kafka.start`).
    pub dir: Option<PathBuf>,
    /// How many checkpoints to keep (the newest; at least 1).
    pub keep: usize,
    /// Also checkpoint this often between triggers (`30s`; empty = at triggers only).
    pub interval: String,
    /// Discard the stored state at start (needed after a model or subset change).
    pub reset: bool,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: None,
            keep: 3,
            interval: String::new(),
            reset: false,
        }
    }
}

/// When snapshots are emitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TriggerConfig {
    /// A trigger every this many records consumed (malformed ones count), as the seed's
    /// `maxOffsetsPerTrigger`.
    pub records: u64,
    /// Also a trigger whenever this much processing time passed since the last one and
    /// records came meanwhile (`500ms`, `10s`, `1m`; empty = records only).
    pub interval: String,
}

/// How the work is split and what is rated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Shard actors counting in parallel (any number gives the same snapshots).
    pub shards: usize,
    /// Subsets rated: `all` and integers n >= 2 (households with rank % n == 0).
    pub subsets: Vec<String>,
    /// Diff-rank rows per cluster in a snapshot.
    pub top: usize,
    /// What orders the top-K: `diff` (popularity − genpop, SPEC 4) or `index`
    /// (100 · popularity / genpop).
    pub rank_by: String,
    /// Stations with fewer views in the cluster are left out of the top-K.
    pub min_views: u64,
    /// Bootstrap resamples of the households behind each snapshot's intervals and top-K
    /// stability (0: none, the snapshot rows carry no interval).
    pub bootstrap: usize,
    /// Coverage of the intervals.
    pub confidence: f64,
    /// Seed of the bootstrap's resamples.
    pub bootstrap_seed: u64,
}

/// Kafka client settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Consumer group id.
    pub group_id: String,
    /// Where to start: `earliest`, `latest` or `stored` (the group's committed offsets).
    pub start: String,
    /// Extra librdkafka properties, passed through as they are (security: `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location`, ...). A value may
    /// be `${env:NAME}` or `${file:PATH}`; sensitive values are never logged.
    pub properties: Properties,
    /// How long one metadata request may wait for the broker.
    pub connect_timeout: String,
    /// How long to keep retrying at start while no broker answers, before giving up with
    /// exit code 69 (`0s` = one attempt).
    pub startup_wait: String,
    /// A broker outage in mid-stream longer than this ends the run cleanly (last snapshot,
    /// last checkpoint, exit code 69); `0s` = wait for the broker however long it takes.
    pub outage_limit: String,
    /// Fetch a partition resumed from a checkpoint or the changelog this many records before
    /// its stored offset (and drop those records): 0 for Apache Kafka, which starts a fetch
    /// where it is asked; about 20000 for tansu 0.6.0, which skips the rest of a record batch
    /// when a fetch starts inside it.
    pub resume_rewind: u64,
}

/// Snapshot sinks; any combination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// A JSON-lines file, one snapshot a line (SPEC 6).
    pub snapshots: Option<PathBuf>,
    /// A readable table per trigger on stdout.
    pub stdout: bool,
    /// A Kafka output topic, `kafka://HOST:PORT/TOPIC`: one message per snapshot, key = the
    /// trigger number, value = the JSON line. The topic must exist.
    pub kafka: Option<String>,
    /// A dead-letter file for malformed records: `position<TAB>kind<TAB>record` lines.
    pub dead_letter: Option<PathBuf>,
    /// A dead-letter Kafka topic, `kafka://HOST:PORT/TOPIC` (it must exist): key = the
    /// record's position, value = its bytes, header `kind`.
    pub dead_letter_topic: Option<String>,
    /// Without `state.dir`, a run starts over and `snapshots` is written anew: a file that
    /// already holds snapshots is refused unless this is set (then it is replaced).
    pub overwrite: bool,
}

/// The HTTP endpoint: `GET /snapshot`, `GET /metrics` (Prometheus), the probes `GET /livez`,
/// `GET /readyz` and `GET /healthz` (the readiness summary).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `HOST:PORT` to listen on, or a bare port (on 127.0.0.1); empty or `off` = no server.
    pub listen: String,
    /// When set, `/snapshot` and `/metrics` answer only requests with
    /// `Authorization: Bearer TOKEN` (the probes stay open); `${env:NAME}` or `${file:PATH}`
    /// keep it out of the file. Empty = no authentication.
    pub token: String,
    /// `/livez` fails when the ingestor's or a shard actor's heartbeat is older than this.
    pub live_timeout: String,
    /// `/readyz` fails when records wait and the last trigger is older than this many
    /// trigger intervals (`trigger.interval`, or 10 s without one).
    pub ready_trigger_factor: f64,
    /// `/readyz` fails when a consumer group rebalance lasts longer than this.
    pub ready_rebalance_grace: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: String::new(),
            token: String::new(),
            live_timeout: "30s".into(),
            ready_trigger_factor: 3.0,
            ready_rebalance_grace: "30s".into(),
        }
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = if self.token.is_empty() {
            ""
        } else {
            crate::secret::REDACTED
        };
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("token", &token)
            .field("live_timeout", &self.live_timeout)
            .field("ready_trigger_factor", &self.ready_trigger_factor)
            .field("ready_rebalance_grace", &self.ready_rebalance_grace)
            .finish()
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            model: PathBuf::from("model"),
            source: String::new(),
            until_end: false,
            trigger: TriggerConfig::default(),
            pipeline: PipelineConfig::default(),
            kafka: KafkaConfig::default(),
            sinks: SinksConfig::default(),
            http: HttpConfig::default(),
            state: StateConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl Default for TriggerConfig {
    fn default() -> Self {
        TriggerConfig {
            records: 50_000,
            interval: String::new(),
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            shards: 4,
            subsets: vec!["3".into()],
            top: 7,
            rank_by: "diff".into(),
            min_views: 1,
            bootstrap: 0,
            confidence: 0.95,
            bootstrap_seed: 3,
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            group_id: "viewpulse".into(),
            start: "earliest".into(),
            properties: Properties::new(),
            connect_timeout: "10s".into(),
            startup_wait: "30s".into(),
            outage_limit: "0s".into(),
            resume_rewind: 0,
        }
    }
}

impl Default for SinksConfig {
    fn default() -> Self {
        SinksConfig {
            snapshots: None,
            stdout: true,
            kafka: None,
            dead_letter: None,
            dead_letter_topic: None,
            overwrite: false,
        }
    }
}

/// Where the daemon reads its records, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceAt {
    /// A file or a folder of files.
    File(PathBuf),
    /// A Kafka topic.
    Kafka(crate::source::kafka::KafkaUrl),
}

/// A [`RunConfig`] parsed once into typed values, validated and with its secrets resolved:
/// what `viewpulse run` starts from. Nothing in it is parsed again.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The configuration as given (secrets resolved), for what needs no parsing.
    pub raw: RunConfig,
    /// `source`.
    pub source: SourceAt,
    /// `pipeline.subsets`.
    pub subsets: Vec<Subset>,
    /// `pipeline.top`, `pipeline.rank_by` and `pipeline.min_views`.
    pub ranking: crate::ratings::Ranking,
    /// `pipeline.bootstrap`, `pipeline.confidence` and `pipeline.bootstrap_seed`.
    pub intervals: crate::uncertainty::IntervalSettings,
    /// `kafka.start`.
    pub start: StartAt,
    /// `trigger.interval`; none = record triggers only.
    pub trigger_interval: Option<Duration>,
    /// `kafka.connect_timeout`.
    pub connect_timeout: Duration,
    /// `kafka.startup_wait`.
    pub startup_wait: Duration,
    /// `kafka.outage_limit`; none = no limit.
    pub outage_limit: Option<Duration>,
    /// `state.interval`; none = at triggers only.
    pub checkpoint_interval: Option<Duration>,
    /// `http.listen`; none = no endpoint.
    pub http_listen: Option<SocketAddr>,
    /// `http.token`; none = no token.
    pub http_token: Option<Secret>,
    /// The probes' bounds (`http.live_timeout`, `http.ready_*`).
    pub probes: crate::sink::http::Probes,
    /// `sinks.kafka`.
    pub kafka_sink: Option<crate::source::kafka::KafkaUrl>,
    /// `sinks.dead_letter_topic`.
    pub dead_letter_topic: Option<crate::source::kafka::KafkaUrl>,
    /// Scale-out (`cluster.changelog` set): the changelog, the coordinator topic and the
    /// session timeout.
    pub cluster: Option<(
        crate::source::kafka::KafkaUrl,
        crate::source::kafka::KafkaUrl,
        Duration,
    )>,
}

impl RunConfig {
    /// Validate, resolve the secrets and parse every value once, before anything starts.
    pub fn parse(&self) -> Result<Validated, ConfigError> {
        use crate::source::kafka::KafkaUrl;
        let c = self.resolved()?;
        let url = |s: &Option<String>| s.as_deref().map(KafkaUrl::parse).transpose();
        let source = if KafkaUrl::is_kafka(&c.source) {
            SourceAt::Kafka(KafkaUrl::parse(&c.source)?)
        } else {
            SourceAt::File(PathBuf::from(&c.source))
        };
        let cluster = if c.clustered() {
            Some((
                KafkaUrl::parse(&c.cluster.changelog)?,
                KafkaUrl::parse(&c.cluster.coordinator)?,
                c.session_timeout()?,
            ))
        } else {
            None
        };
        Ok(Validated {
            source,
            subsets: c.subsets()?,
            ranking: c.ranking()?,
            intervals: c.intervals()?,
            start: c.start()?,
            trigger_interval: c.trigger_interval()?,
            connect_timeout: c.connect_timeout()?,
            startup_wait: c.startup_wait()?,
            outage_limit: c.outage_limit()?,
            checkpoint_interval: c.checkpoint_interval()?,
            http_listen: c.http_listen()?,
            http_token: c.http_token(),
            probes: c.probes()?,
            kafka_sink: url(&c.sinks.kafka)?,
            dead_letter_topic: url(&c.sinks.dead_letter_topic)?,
            cluster,
            raw: c,
        })
    }

    /// The configuration as TOML, every secret (`http.token`, the sensitive
    /// `kafka.properties`) shown as `***`, whether given as a value or a reference.
    pub fn redacted_toml(&self) -> Result<String, ConfigError> {
        let mut c = self.clone();
        if !c.http.token.is_empty() {
            c.http.token = crate::secret::REDACTED.into();
        }
        let mut props = Properties::new();
        for (k, v) in c.kafka.properties.iter() {
            let v = if crate::secret::is_sensitive(k) {
                crate::secret::REDACTED
            } else {
                v.as_str()
            };
            props.insert(k.clone(), v);
        }
        c.kafka.properties = props;
        toml::to_string(&c).map_err(|e| ConfigError::Invalid {
            key: "config",
            message: format!("cannot be written as TOML: {e}"),
        })
    }

    /// Read a TOML file.
    pub fn load(path: &Path) -> Result<RunConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The subsets, parsed.
    pub fn subsets(&self) -> Result<Vec<Subset>, ConfigError> {
        Subset::parse_list(&self.pipeline.subsets.join(",")).map_err(|e| ConfigError::Invalid {
            key: "pipeline.subsets",
            message: e.to_string(),
        })
    }
}

/// A [`ConfigError::Invalid`] of `key`.
fn invalid<T>(key: &'static str, message: &str) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        key,
        message: message.to_string(),
    })
}

impl RunConfig {
    /// The top-K's ranking (`pipeline.top`, `pipeline.rank_by`, `pipeline.min_views`).
    pub fn ranking(&self) -> Result<crate::ratings::Ranking, ConfigError> {
        let rank_by = self
            .pipeline
            .rank_by
            .parse()
            .map_err(|_| ConfigError::Invalid {
                key: "pipeline.rank_by",
                message: format!("{:?} is not diff or index", self.pipeline.rank_by),
            })?;
        if self.pipeline.min_views == 0 {
            return invalid(
                "pipeline.min_views",
                "must be at least 1 (a station needs a view to be ranked)",
            );
        }
        Ok(crate::ratings::Ranking {
            top: self.pipeline.top,
            rank_by,
            min_views: self.pipeline.min_views,
        })
    }

    /// The snapshots' intervals (`pipeline.bootstrap`, `pipeline.confidence`,
    /// `pipeline.bootstrap_seed`): none unless `pipeline.bootstrap` is above 0.
    pub fn intervals(&self) -> Result<crate::uncertainty::IntervalSettings, ConfigError> {
        use crate::uncertainty::{IntervalSettings, Method};
        let p = &self.pipeline;
        if !(p.confidence > 0.0 && p.confidence < 1.0) {
            return invalid(
                "pipeline.confidence",
                &format!("{} is not between 0 and 1 (such as 0.95)", p.confidence),
            );
        }
        if p.bootstrap > 100_000 {
            return invalid("pipeline.bootstrap", "must be at most 100000 resamples");
        }
        Ok(IntervalSettings {
            method: if p.bootstrap == 0 {
                Method::Off
            } else {
                Method::Bootstrap {
                    resamples: p.bootstrap,
                    seed: p.bootstrap_seed,
                }
            },
            confidence: p.confidence,
        })
    }

    /// Where to start reading Kafka.
    pub fn start(&self) -> Result<StartAt, ConfigError> {
        StartAt::parse(&self.kafka.start).ok_or_else(|| ConfigError::Invalid {
            key: "kafka.start",
            message: format!("{:?} is not earliest, latest or stored", self.kafka.start),
        })
    }

    /// `trigger.interval`, parsed.
    pub fn trigger_interval(&self) -> Result<Option<Duration>, ConfigError> {
        if self.trigger.interval.trim().is_empty() {
            return Ok(None);
        }
        let d = duration("trigger.interval", &self.trigger.interval)?;
        if d.is_zero() {
            return Err(ConfigError::Invalid {
                key: "trigger.interval",
                message: "must be longer than 0".into(),
            });
        }
        Ok(Some(d))
    }

    /// The probes' bounds, parsed: `http.live_timeout`, `http.ready_trigger_factor` (times
    /// `trigger.interval`, or 10 s) and `http.ready_rebalance_grace`.
    pub fn probes(&self) -> Result<crate::sink::http::Probes, ConfigError> {
        let live = duration("http.live_timeout", &self.http.live_timeout)?;
        if live.is_zero() {
            return Err(ConfigError::Invalid {
                key: "http.live_timeout",
                message: "must be longer than 0".into(),
            });
        }
        let factor = self.http.ready_trigger_factor;
        if !(factor.is_finite() && factor >= 1.0) {
            return Err(ConfigError::Invalid {
                key: "http.ready_trigger_factor",
                message: format!("{factor} is not a number of at least 1"),
            });
        }
        let interval = self.trigger_interval()?;
        let ready = crate::pipeline::health::ReadyBounds {
            trigger_age: interval.unwrap_or(Duration::from_secs(10)).mul_f64(factor),
            interval_triggers: interval.is_some(),
            rebalance_grace: duration(
                "http.ready_rebalance_grace",
                &self.http.ready_rebalance_grace,
            )?,
        };
        Ok(crate::sink::http::Probes::new(ready, live))
    }

    /// `kafka.connect_timeout`, parsed.
    pub fn connect_timeout(&self) -> Result<Duration, ConfigError> {
        let d = duration("kafka.connect_timeout", &self.kafka.connect_timeout)?;
        if d.is_zero() {
            return Err(ConfigError::Invalid {
                key: "kafka.connect_timeout",
                message: "must be longer than 0".into(),
            });
        }
        Ok(d)
    }

    /// `kafka.startup_wait`, parsed.
    pub fn startup_wait(&self) -> Result<Duration, ConfigError> {
        duration("kafka.startup_wait", &self.kafka.startup_wait)
    }

    /// `kafka.outage_limit`, parsed: none = no limit.
    pub fn outage_limit(&self) -> Result<Option<Duration>, ConfigError> {
        let d = duration("kafka.outage_limit", &self.kafka.outage_limit)?;
        Ok((!d.is_zero()).then_some(d))
    }

    /// `state.interval`, parsed: none = at triggers only.
    pub fn checkpoint_interval(&self) -> Result<Option<Duration>, ConfigError> {
        if self.state.interval.trim().is_empty() {
            return Ok(None);
        }
        let d = duration("state.interval", &self.state.interval)?;
        if d.is_zero() {
            return Err(ConfigError::Invalid {
                key: "state.interval",
                message: "must be longer than 0".into(),
            });
        }
        Ok(Some(d))
    }

    /// `http.listen`, parsed.
    pub fn http_listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        crate::sink::http::parse_listen(&self.http.listen).map_err(|message| ConfigError::Invalid {
            key: "http.listen",
            message,
        })
    }

    /// `http.token` as a secret, once [`RunConfig::resolved`]; none when empty.
    pub fn http_token(&self) -> Option<Secret> {
        (!self.http.token.is_empty()).then(|| Secret::new(self.http.token.clone()))
    }

    /// The configuration a run uses: [`RunConfig::validate`]d, then every secret reference
    /// (`kafka.properties`, `http.token`) replaced by what it refers to, once, before anything
    /// starts. A missing variable or unreadable file is refused naming the key.
    pub fn resolved(&self) -> Result<RunConfig, ConfigError> {
        self.validate()?;
        let mut c = self.clone();
        c.kafka.properties = self.kafka.properties.resolve("kafka.properties.")?;
        c.http.token = crate::secret::resolve("http.token", &self.http.token)?;
        if !c.http.token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::Invalid {
                key: "http.token",
                message: "must be printable ASCII without spaces (it goes in an HTTP header)"
                    .into(),
            });
        }
        Ok(c)
    }

    /// Refuse impossible values, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        if self.source.is_empty() {
            return invalid("source", "is required (a file or kafka://HOST:PORT/TOPIC)");
        }
        if self.source.starts_with("kafka://") {
            crate::source::kafka::KafkaUrl::parse(&self.source).map_err(|e| {
                ConfigError::Invalid {
                    key: "source",
                    message: e.to_string(),
                }
            })?;
        } else if !Path::new(&self.source).exists() {
            return Err(ConfigError::Missing {
                key: "source",
                message: format!("{} is not a file or a folder of views files", self.source),
            });
        } else if self.start()? == StartAt::Latest {
            return invalid(
                "kafka.start",
                "latest applies to a kafka:// source; a file is always read from its first line",
            );
        }
        if !self.model.is_dir() {
            return Err(ConfigError::Missing {
                key: "model",
                message: format!(
                    "{} is not a model folder; run viewpulse segment",
                    self.model.display()
                ),
            });
        }
        if self.trigger.records == 0 {
            return invalid("trigger.records", "must be at least 1");
        }
        if self.pipeline.shards == 0 {
            return invalid("pipeline.shards", "must be at least 1");
        }
        if self.pipeline.shards > 1024 {
            return invalid("pipeline.shards", "must be at most 1024");
        }
        if self.pipeline.top == 0 {
            return invalid("pipeline.top", "must be at least 1");
        }
        self.subsets()?;
        self.ranking()?;
        self.intervals()?;
        self.start()?;
        if self.kafka.group_id.is_empty() {
            return invalid("kafka.group_id", "must not be empty");
        }
        self.trigger_interval()?;
        self.connect_timeout()?;
        self.startup_wait()?;
        self.http_listen()?;
        self.probes()?;
        if let Some(k) = &self.sinks.kafka {
            crate::source::kafka::KafkaUrl::parse(k).map_err(|e| ConfigError::Invalid {
                key: "sinks.kafka",
                message: e.to_string(),
            })?;
        }
        if self.sinks.dead_letter.is_some() && self.sinks.dead_letter_topic.is_some() {
            return invalid(
                "sinks.dead_letter_topic",
                "give either sinks.dead_letter (a file) or sinks.dead_letter_topic, not both",
            );
        }
        if let Some(k) = &self.sinks.dead_letter_topic {
            crate::source::kafka::KafkaUrl::parse(k).map_err(|e| ConfigError::Invalid {
                key: "sinks.dead_letter_topic",
                message: e.to_string(),
            })?;
        }
        self.outage_limit()?;
        self.checkpoint_interval()?;
        if self.state.keep == 0 {
            return invalid("state.keep", "must be at least 1");
        }
        if let Some(d) = &self.state.dir {
            if d.exists() && !d.is_dir() {
                return invalid("state.dir", &format!("{} is not a folder", d.display()));
            }
        }
        self.validate_cluster()
    }

    /// Whether this process is one of several sharing the input topic (`cluster.changelog`).
    pub fn clustered(&self) -> bool {
        !self.cluster.changelog.trim().is_empty()
    }

    /// `cluster.session_timeout`, parsed.
    pub fn session_timeout(&self) -> Result<Duration, ConfigError> {
        let d = duration("cluster.session_timeout", &self.cluster.session_timeout)?;
        if d < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                key: "cluster.session_timeout",
                message: "must be at least 1s".into(),
            });
        }
        Ok(d)
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        self.session_timeout()?;
        if !self.clustered() {
            if !self.cluster.coordinator.trim().is_empty() {
                return invalid("cluster.coordinator", "needs cluster.changelog");
            }
            return Ok(());
        }
        for (key, v) in [
            ("cluster.changelog", &self.cluster.changelog),
            ("cluster.coordinator", &self.cluster.coordinator),
        ] {
            if v.trim().is_empty() {
                return invalid(key, "is required with cluster.changelog");
            }
            crate::source::kafka::KafkaUrl::parse(v).map_err(|e| ConfigError::Invalid {
                key,
                message: e.to_string(),
            })?;
        }
        if !self.source.starts_with("kafka://") {
            return invalid("cluster.changelog", "scale-out needs a kafka:// source");
        }
        if self.trigger_interval()?.is_none() {
            return invalid(
                "trigger.interval",
                "is required with cluster.changelog: the coordinator emits a global snapshot every interval",
            );
        }
        if self.start()? != StartAt::Earliest {
            return invalid(
                "kafka.start",
                "must be earliest with cluster.changelog (a partition without changelog state is read from its start)",
            );
        }
        if self.pipeline.bootstrap > 0 {
            return invalid(
                "pipeline.bootstrap",
                "is not supported with cluster.changelog yet: every changelog entry would carry 128 times the cells (tens of MB a partition, above a broker's message limit)",
            );
        }
        if self.until_end {
            return invalid(
                "until_end",
                "is not supported with cluster.changelog (the processes of a group run until stopped)",
            );
        }
        if self.state.dir.is_some() {
            return invalid(
                "state.dir",
                "give either state.dir (one process) or cluster.changelog (the changelog is the state)",
            );
        }
        Ok(())
    }
}

/// Parse a duration: a number and a unit, `ms`, `s`, `m` or `h` (`500ms`, `10s`, `1.5m`).
pub fn duration(key: &'static str, s: &str) -> Result<Duration, ConfigError> {
    let t = s.trim();
    let bad = || ConfigError::Invalid {
        key,
        message: format!("{s:?} is not a duration like 500ms, 10s, 1m30s or 1h"),
    };
    // humantime's forms (`1m30s`, `500ms`, `2h`, `1day`); a plain number is refused (no unit)
    if let Ok(d) = humantime::parse_duration(t) {
        if t.bytes().any(|b| b.is_ascii_alphabetic()) {
            return Ok(d);
        }
    }
    // a decimal count of one unit (`1.5m`), which humantime does not read
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// `KEY=VALUE` of a `-X`/`--property` flag.
pub fn property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Flags of `viewpulse run`; each overrides the same key of `--config`.
#[derive(clap::Args, Debug, Default)]
pub struct RunFlags {
    /// A TOML configuration (see deploy/viewpulse.example.toml).
    #[arg(long, env = "VIEWPULSE_CONFIG")]
    pub config: Option<PathBuf>,
    /// model: the model folder.
    #[arg(long, env = "VIEWPULSE_MODEL")]
    pub model: Option<PathBuf>,
    /// source: a file or kafka://HOST:PORT/TOPIC.
    #[arg(long, env = "VIEWPULSE_SOURCE")]
    pub source: Option<String>,
    /// sinks.snapshots: a JSON-lines file of snapshots.
    #[arg(long, env = "VIEWPULSE_SNAPSHOTS")]
    pub snapshots: Option<PathBuf>,
    /// pipeline.shards.
    #[arg(long, env = "VIEWPULSE_SHARDS")]
    pub shards: Option<usize>,
    /// trigger.records.
    #[arg(long, env = "VIEWPULSE_TRIGGER_RECORDS")]
    pub trigger_records: Option<u64>,
    /// pipeline.subsets, comma-separated.
    #[arg(long, env = "VIEWPULSE_SUBSETS")]
    pub subsets: Option<String>,
    /// pipeline.top.
    #[arg(long, env = "VIEWPULSE_TOP")]
    pub top: Option<usize>,
    /// pipeline.rank_by: diff or index.
    #[arg(long, env = "VIEWPULSE_RANK_BY")]
    pub rank_by: Option<String>,
    /// pipeline.min_views.
    #[arg(long, env = "VIEWPULSE_MIN_VIEWS")]
    pub min_views: Option<u64>,
    /// pipeline.bootstrap: resamples behind each snapshot's intervals (200 when given alone).
    #[arg(long, env = "VIEWPULSE_BOOTSTRAP", num_args = 0..=1, default_missing_value = "200", value_name = "N")]
    pub bootstrap: Option<usize>,
    /// pipeline.confidence.
    #[arg(long, env = "VIEWPULSE_CONFIDENCE")]
    pub confidence: Option<f64>,
    /// pipeline.bootstrap_seed.
    #[arg(long, env = "VIEWPULSE_BOOTSTRAP_SEED")]
    pub bootstrap_seed: Option<u64>,
    /// until_end: stop after every record the source held at the start.
    #[arg(long, env = "VIEWPULSE_UNTIL_END")]
    pub until_end: bool,
    /// kafka.start: earliest, latest or stored.
    #[arg(long, env = "VIEWPULSE_START")]
    pub start: Option<String>,
    /// kafka.group_id.
    #[arg(long, env = "VIEWPULSE_GROUP_ID")]
    pub group_id: Option<String>,
    /// sinks.stdout = false: no table on stdout.
    #[arg(long, env = "VIEWPULSE_NO_STDOUT")]
    pub no_stdout: bool,
    /// trigger.interval: also a trigger every this much time (500ms, 10s, 1m).
    #[arg(long, env = "VIEWPULSE_TRIGGER_INTERVAL")]
    pub trigger_interval: Option<String>,
    /// http.listen: HOST:PORT or a port (127.0.0.1) for /snapshot, /healthz, /metrics; off.
    #[arg(long, env = "VIEWPULSE_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// http.token: require Authorization: Bearer TOKEN on /snapshot and /metrics. Prefer
    /// ${file:PATH} or the environment variable: a flag's value shows in `ps`.
    #[arg(long, env = "VIEWPULSE_HTTP_TOKEN", hide_env_values = true)]
    pub http_token: Option<String>,
    /// sinks.kafka: a Kafka output topic for snapshots, kafka://HOST:PORT/TOPIC.
    #[arg(long, env = "VIEWPULSE_KAFKA_SINK")]
    pub kafka_sink: Option<String>,
    /// kafka.connect_timeout: how long one metadata request may wait.
    #[arg(long, env = "VIEWPULSE_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<String>,
    /// kafka.startup_wait: how long to retry at start while no broker answers.
    #[arg(long, env = "VIEWPULSE_STARTUP_WAIT")]
    pub startup_wait: Option<String>,
    /// kafka.outage_limit: end the run cleanly after a broker outage this long (0s = never).
    #[arg(long, env = "VIEWPULSE_OUTAGE_LIMIT")]
    pub outage_limit: Option<String>,
    /// kafka.resume_rewind: fetch a resumed partition this many records early (0 = exactly at
    /// its stored offset, right for Apache Kafka).
    #[arg(long, env = "VIEWPULSE_RESUME_REWIND")]
    pub resume_rewind: Option<u64>,
    /// state.dir: the checkpoint folder (restored from at start).
    #[arg(long, env = "VIEWPULSE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// state.keep: checkpoints kept.
    #[arg(long, env = "VIEWPULSE_CHECKPOINT_KEEP")]
    pub checkpoint_keep: Option<usize>,
    /// state.interval: also checkpoint this often between triggers.
    #[arg(long, env = "VIEWPULSE_CHECKPOINT_INTERVAL")]
    pub checkpoint_interval: Option<String>,
    /// state.reset: discard the stored state at start.
    #[arg(long, env = "VIEWPULSE_RESET_STATE")]
    pub reset_state: bool,
    /// sinks.overwrite: without state.dir, replace a snapshots file that already holds
    /// snapshots (refused otherwise).
    #[arg(long, env = "VIEWPULSE_OVERWRITE_SNAPSHOTS")]
    pub overwrite_snapshots: bool,
    /// sinks.dead_letter: a dead-letter file for malformed records.
    #[arg(long, env = "VIEWPULSE_DEAD_LETTER")]
    pub dead_letter: Option<PathBuf>,
    /// sinks.dead_letter_topic: a dead-letter Kafka topic, kafka://HOST:PORT/TOPIC.
    #[arg(long, env = "VIEWPULSE_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// kafka.properties: a librdkafka property KEY=VALUE (repeatable), over the config file's;
    /// the value may be ${env:NAME} or ${file:PATH}, which keeps a secret out of `ps`.
    #[arg(short = 'X', long = "property", value_parser = property)]
    pub properties: Vec<(String, String)>,
    /// Print the effective configuration (file, environment and flags merged; secrets shown
    /// as ***) as TOML, and exit.
    #[arg(long, conflicts_with = "check_config")]
    pub print_config: bool,
    /// Validate the configuration and the model it names, and exit: 0 when `run` would start.
    #[arg(long)]
    pub check_config: bool,
    /// cluster.changelog: share the input topic with the group's other processes, publishing
    /// partition state to this topic, kafka://HOST:PORT/TOPIC.
    #[arg(long, env = "VIEWPULSE_CHANGELOG")]
    pub changelog: Option<String>,
    /// cluster.coordinator: the one-partition topic whose owner emits the global snapshots.
    #[arg(long, env = "VIEWPULSE_COORDINATOR")]
    pub coordinator: Option<String>,
    /// cluster.session_timeout: how soon a dead process's partitions move (10s).
    #[arg(long, env = "VIEWPULSE_SESSION_TIMEOUT")]
    pub session_timeout: Option<String>,
    /// cluster.member: this process's name (HOSTNAME-PID).
    #[arg(long, env = "VIEWPULSE_MEMBER")]
    pub member: Option<String>,
}

impl RunFlags {
    /// The one place where the configuration file, the environment (each flag's
    /// `VIEWPULSE_*` variable, read by clap) and the flags are merged: the file's keys, each
    /// overridden by its flag or variable when given.
    pub fn into_config(self) -> Result<RunConfig, ConfigError> {
        let mut c = match &self.config {
            Some(p) => RunConfig::load(p)?,
            None => RunConfig::default(),
        };
        if let Some(v) = self.model {
            c.model = v;
        }
        if let Some(v) = self.source {
            c.source = v;
        }
        if let Some(v) = self.snapshots {
            c.sinks.snapshots = Some(v);
        }
        if let Some(v) = self.shards {
            c.pipeline.shards = v;
        }
        if let Some(v) = self.trigger_records {
            c.trigger.records = v;
        }
        if let Some(v) = self.subsets {
            c.pipeline.subsets = v.split(',').map(|s| s.trim().to_string()).collect();
        }
        if let Some(v) = self.top {
            c.pipeline.top = v;
        }
        if let Some(v) = self.rank_by {
            c.pipeline.rank_by = v;
        }
        if let Some(v) = self.min_views {
            c.pipeline.min_views = v;
        }
        if let Some(v) = self.bootstrap {
            c.pipeline.bootstrap = v;
        }
        if let Some(v) = self.confidence {
            c.pipeline.confidence = v;
        }
        if let Some(v) = self.bootstrap_seed {
            c.pipeline.bootstrap_seed = v;
        }
        if self.until_end {
            c.until_end = true;
        }
        if let Some(v) = self.start {
            c.kafka.start = v;
        }
        if let Some(v) = self.group_id {
            c.kafka.group_id = v;
        }
        if self.no_stdout {
            c.sinks.stdout = false;
        }
        if let Some(v) = self.trigger_interval {
            c.trigger.interval = v;
        }
        if let Some(v) = self.http_listen {
            c.http.listen = v;
        }
        if let Some(v) = self.http_token {
            c.http.token = v;
        }
        if let Some(v) = self.kafka_sink {
            c.sinks.kafka = Some(v);
        }
        if let Some(v) = self.connect_timeout {
            c.kafka.connect_timeout = v;
        }
        if let Some(v) = self.startup_wait {
            c.kafka.startup_wait = v;
        }
        if let Some(v) = self.outage_limit {
            c.kafka.outage_limit = v;
        }
        if let Some(v) = self.resume_rewind {
            c.kafka.resume_rewind = v;
        }
        if let Some(v) = self.state_dir {
            c.state.dir = Some(v);
        }
        if let Some(v) = self.checkpoint_keep {
            c.state.keep = v;
        }
        if let Some(v) = self.checkpoint_interval {
            c.state.interval = v;
        }
        if self.reset_state {
            c.state.reset = true;
        }
        if let Some(v) = self.dead_letter {
            c.sinks.dead_letter = Some(v);
        }
        if let Some(v) = self.dead_letter_topic {
            c.sinks.dead_letter_topic = Some(v);
        }
        if self.overwrite_snapshots {
            c.sinks.overwrite = true;
        }
        for (k, v) in self.properties {
            c.kafka.properties.insert(k, v);
        }
        if let Some(v) = self.changelog {
            c.cluster.changelog = v;
        }
        if let Some(v) = self.coordinator {
            c.cluster.coordinator = v;
        }
        if let Some(v) = self.session_timeout {
            c.cluster.session_timeout = v;
        }
        if let Some(v) = self.member {
            c.cluster.member = v;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[trigger]\nrecords = 10\ninterval = \"1m30s\"\n[pipeline]\nshards = 3\n",
        )
        .unwrap();
        let flags = RunFlags {
            config: Some(path),
            trigger_records: Some(20),
            properties: vec![("security.protocol".into(), "ssl".into())],
            ..Default::default()
        };
        let c = flags.into_config().unwrap();
        assert_eq!(c.trigger.records, 20, "the flag wins");
        assert_eq!(c.pipeline.shards, 3, "the file's key stays");
        assert_eq!(c.trigger_interval().unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(c.kafka.properties.get("security.protocol"), Some("ssl"));
        let none = RunFlags::default().into_config().unwrap();
        assert_eq!(
            none,
            RunConfig::default(),
            "no file and no flag: the defaults"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration("k", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("k", "10s").unwrap(), Duration::from_secs(10));
        assert_eq!(duration("k", " 1.5m ").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("k", "2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(duration("k", "0s").unwrap(), Duration::ZERO);
        assert_eq!(duration("k", "1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("k", "1h 2m").unwrap(), Duration::from_secs(3720));
        assert_eq!(duration("k", "250 ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "10", "s", "10 parsecs", "-1s", "1e400s"] {
            let e = duration("trigger.interval", bad).unwrap_err().to_string();
            assert!(e.starts_with("trigger.interval"), "{e}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = toml::from_str::<RunConfig>("[pipeline]\nshardz = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("shardz"), "{e}");
        let c: RunConfig = toml::from_str("source = \"x\"\n[pipeline]\nshards = 0\n").unwrap();
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
        let c = RunConfig {
            model: golden.clone(),
            source: golden.join("input/views_stream.csv").display().to_string(),
            ..c
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("pipeline.shards"));
        let mut ok = RunConfig {
            pipeline: PipelineConfig::default(),
            ..c.clone()
        };
        ok.validate().unwrap();
        ok.kafka.start = "yesterday".into();
        assert!(ok
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("kafka.start"));
        ok.kafka.start = "latest".into();
        let err = ok.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("kafka.start") && err.contains("file"),
            "{err}"
        );
        ok.kafka.start = "earliest".into();
        ok.pipeline.subsets = vec!["1".into()];
        assert!(ok
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("pipeline.subsets"));
        ok.pipeline.subsets = vec!["all".into()];
        // the ranking and the intervals: each bad value named by its key
        type Set = fn(&mut PipelineConfig);
        let cases: [(&str, Set); 5] = [
            ("pipeline.rank_by", |p| p.rank_by = "lift".into()),
            ("pipeline.min_views", |p| p.min_views = 0),
            ("pipeline.confidence", |p| p.confidence = 1.0),
            ("pipeline.confidence", |p| p.confidence = f64::NAN),
            ("pipeline.bootstrap", |p| p.bootstrap = 100_001),
        ];
        for (key, set) in cases {
            let mut bad = ok.clone();
            set(&mut bad.pipeline);
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.starts_with(key), "{key}: {err}");
        }
        let mut boot = ok.clone();
        boot.pipeline.bootstrap = 200;
        boot.pipeline.rank_by = "index".into();
        let v = boot.parse().unwrap();
        assert_eq!(v.ranking.rank_by, crate::ratings::RankBy::Index);
        assert_eq!(
            v.intervals.method,
            crate::uncertainty::Method::Bootstrap {
                resamples: 200,
                seed: 3
            }
        );
        ok.model = golden.join("nope");
        assert!(ok.validate().unwrap_err().to_string().starts_with("model"));
    }

    /// A valid configuration over the golden data, holding `properties` and `token`.
    fn with_secrets(properties: &[(&str, &str)], token: &str) -> RunConfig {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
        let mut c = RunConfig {
            model: golden.clone(),
            source: golden.join("input/views_stream.csv").display().to_string(),
            ..RunConfig::default()
        };
        c.kafka.properties = properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        c.http.token = token.into();
        c
    }

    #[test]
    fn secrets_are_resolved_once_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "hunter2\n").unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t0k3n-from-a-file\n").unwrap();
        let c = with_secrets(
            &[
                ("sasl.username", "viewpulse"),
                ("sasl.password", &format!("${{file:{}}}", pass.display())),
            ],
            &format!("${{file:{}}}", token.display()),
        );
        let r = c.resolved().unwrap();
        assert_eq!(r.kafka.properties.get("sasl.password"), Some("hunter2"));
        assert_eq!(r.kafka.properties.get("sasl.username"), Some("viewpulse"));
        assert_eq!(
            r.http_token().map(|t| t.expose().to_string()),
            Some("t0k3n-from-a-file".to_string())
        );
        let shown = format!("{r:?} {r:#?} {:?}", r.http_token());
        for secret in ["hunter2", "t0k3n"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("viewpulse") && shown.contains("***"),
            "{shown}"
        );
        // nothing set: no token, and the empty one prints as empty
        let plain = with_secrets(&[], "").resolved().unwrap();
        assert_eq!(plain.http_token(), None);
        assert!(format!("{plain:?}").contains(r#"token: """#));
    }

    #[test]
    fn unresolvable_secrets_are_refused_naming_the_key() {
        let unset = "${env:VIEWPULSE_TEST_VARIABLE_THAT_IS_NEVER_SET}";
        let e = with_secrets(&[("sasl.password", unset)], "")
            .resolved()
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "kafka.properties.sasl.password: environment variable \
             VIEWPULSE_TEST_VARIABLE_THAT_IS_NEVER_SET is not set"
        );
        let e = with_secrets(&[], "${file:/nonexistent/viewpulse/token}")
            .resolved()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("http.token: cannot read /nonexistent/viewpulse/token: "),
            "{e}"
        );
        let e = with_secrets(&[], "two words")
            .resolved()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("http.token: must be printable ASCII") && !e.contains("words"),
            "{e}"
        );
        // validation comes first: an impossible value is named before any secret is read
        let mut c = with_secrets(&[("sasl.password", unset)], "");
        c.pipeline.shards = 0;
        assert!(c
            .resolved()
            .unwrap_err()
            .to_string()
            .starts_with("pipeline.shards"));
    }
}
