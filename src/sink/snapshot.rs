//! Where snapshots go, any combination: a JSON-lines file (SPEC 6), a readable table on
//! stdout (the seed's `.show(42)`), a Kafka output topic (key = trigger number, value = the
//! snapshot's JSON line), and memory (tests and short bounded runs). The HTTP endpoint is not
//! a sink: it reads the latest snapshot the writer keeps in [`crate::pipeline::Metrics`].

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::pipeline::{PipelineError, Snapshot};
use crate::source::kafka::{KafkaOptions, KafkaUrl};

/// Where snapshots go.
pub trait SnapshotSink: Send {
    /// Emit one snapshot.
    fn emit(&mut self, snapshot: &Snapshot) -> Result<(), PipelineError>;
}

/// One JSON object per line in a file (SPEC 6), flushed at every snapshot (and synced to
/// disk when the daemon checkpoints, so that no snapshot a checkpoint follows is lost).
pub struct JsonLines {
    path: PathBuf,
    w: BufWriter<File>,
    durable: bool,
    /// Bytes of whole lines in the file (a regular file only): a failed write is cut back to
    /// it, so that a full disk leaves no torn line.
    whole: Option<u64>,
}

impl JsonLines {
    /// Create (truncate) the file.
    pub fn create(path: &Path) -> Result<JsonLines, PipelineError> {
        let err = |e: std::io::Error| PipelineError::sink("snapshots", path, e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let whole = crate::sink::is_regular(path).then_some(0);
        Ok(JsonLines {
            path: path.to_path_buf(),
            w: BufWriter::new(File::create(path).map_err(err)?),
            durable: false,
            whole,
        })
    }

    /// Go on with the file of a run restored from the checkpoint taken after trigger
    /// `upto`: keep its whole lines of triggers up to `upto`, drop the rest (snapshots emitted
    /// after that checkpoint, which the restored run emits again, and a line cut by a crash),
    /// and append from there. Every snapshot is synced to disk from then on.
    pub fn resume(path: &Path, upto: u64) -> Result<(JsonLines, usize), PipelineError> {
        let err = |e: std::io::Error| PipelineError::sink("snapshots", path, e);
        if !crate::sink::is_regular(path) {
            // `/dev/null` or a pipe: nothing to keep or cut, and nothing to sync
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(err)?;
            return Ok((
                JsonLines {
                    path: path.to_path_buf(),
                    w: BufWriter::new(f),
                    durable: false,
                    whole: None,
                },
                0,
            ));
        }
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(e)),
        };
        let mut keep = 0usize;
        let mut dropped = 0usize;
        for line in text.split_inclusive(|&b| b == b'\n') {
            let whole = line.ends_with(b"\n");
            let trigger = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("trigger").and_then(|t| t.as_u64()));
            match trigger {
                Some(t) if whole && t <= upto && dropped == 0 => keep += line.len(),
                _ => dropped += 1,
            }
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(err)?;
        f.set_len(keep as u64).map_err(err)?;
        f.sync_all().map_err(err)?;
        let mut w = BufWriter::new(f);
        std::io::Seek::seek(&mut w, std::io::SeekFrom::End(0)).map_err(err)?;
        Ok((
            JsonLines {
                path: path.to_path_buf(),
                w,
                durable: true,
                whole: Some(keep as u64),
            },
            dropped,
        ))
    }

    /// Sync every snapshot to disk (on when the daemon checkpoints; not for `/dev/null` or a
    /// pipe).
    pub fn durable(mut self) -> JsonLines {
        self.durable = self.whole.is_some();
        self
    }
}

impl SnapshotSink for JsonLines {
    fn emit(&mut self, s: &Snapshot) -> Result<(), PipelineError> {
        let mut line = serde_json::to_string(s)
            .map_err(|e| PipelineError::sink("snapshots", &self.path, e))?;
        let err = |e: std::io::Error| PipelineError::sink("snapshots", &self.path, e);
        line.push('\n');
        let written = self
            .w
            .write_all(line.as_bytes())
            .and_then(|()| self.w.flush())
            .and_then(|()| {
                if self.durable {
                    self.w.get_ref().sync_data()
                } else {
                    Ok(())
                }
            });
        match (written, self.whole) {
            (Ok(()), whole) => {
                self.whole = whole.map(|w| w + line.len() as u64);
                Ok(())
            }
            (Err(e), Some(whole)) => {
                // cut the torn line off: the file ends with the last whole snapshot
                crate::sink::cut_back(&mut self.w, whole);
                Err(err(e))
            }
            (Err(e), None) => Err(err(e)),
        }
    }
}

/// A readable table per trigger on stdout (the seed's `.show(42)`).
pub struct StdoutTable;

impl SnapshotSink for StdoutTable {
    fn emit(&mut self, s: &Snapshot) -> Result<(), PipelineError> {
        let mut out = format!(
            "trigger {}: {} records ({} valid, {} malformed) at {}\n",
            s.trigger, s.records, s.valid, s.malformed, s.emitted_at
        );
        for (subset, rows) in &s.subsets {
            out.push_str(&format!(
                "subset {subset}\n{:>7} {:>4} {:>11} {:>10} {:>10} {:>10}\n",
                "cluster", "rank", "station_num", "diff_rank", "popularity", "genpop"
            ));
            for r in rows {
                out.push_str(&format!(
                    "{:>7} {:>4} {:>11} {:>10.4} {:>10.4} {:>10.4}\n",
                    r.cluster,
                    r.rank,
                    r.station_num,
                    r.diff_rank,
                    r.popularity_rating,
                    r.genpop_rating
                ));
            }
        }
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(out.as_bytes())
            .and_then(|_| stdout.flush())
            .map_err(PipelineError::Stdout)
    }
}

/// A Kafka output topic: one message per snapshot, key = the trigger number in decimal, value
/// = the snapshot's JSON line. Each snapshot is acknowledged by the broker before the next
/// trigger goes on, so an output topic never runs behind by more than one snapshot.
pub struct KafkaTopic {
    url: KafkaUrl,
    producer: FutureProducer<crate::source::kafka::Context>,
    timeout: Duration,
}

impl KafkaTopic {
    /// Connect to the topic's brokers and check that the topic exists.
    pub fn connect(url: &KafkaUrl, opts: &KafkaOptions) -> Result<KafkaTopic, PipelineError> {
        let err = |m: String| PipelineError::KafkaSink {
            what: "snapshots",
            url: url.to_string(),
            message: m,
        };
        let cfg = crate::source::kafka::client_config(
            &url.brokers,
            &[("message.timeout.ms", "30000"), ("linger.ms", "5")],
            &opts.properties,
        );
        let producer: FutureProducer<crate::source::kafka::Context> = cfg
            .create_with_context(crate::source::kafka::Context::default())
            .map_err(|e| PipelineError::KafkaConfig {
                url: url.to_string(),
                message: format!(
                    "cannot create a producer: {}",
                    crate::secret::client_error(&e, &opts.properties)
                ),
            })?;
        let md = producer
            .client()
            .fetch_metadata(Some(&url.topic), opts.metadata_timeout)
            .map_err(|e| {
                err(format!(
                    "no metadata within {:?} (is a broker listening at {}?): {e}",
                    opts.metadata_timeout, url.brokers
                ))
            })?;
        match md.topics().iter().find(|t| t.name() == url.topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {}
            Some(t) => {
                return Err(err(format!(
                    "the output topic is not usable ({:?}); create it first",
                    t.error()
                )))
            }
            None => return Err(err("the broker does not know the output topic".into())),
        }
        Ok(KafkaTopic {
            url: url.clone(),
            producer,
            timeout: Duration::from_secs(30),
        })
    }
}

impl SnapshotSink for KafkaTopic {
    fn emit(&mut self, s: &Snapshot) -> Result<(), PipelineError> {
        let err = |m: String| PipelineError::KafkaSink {
            what: "snapshots",
            url: self.url.to_string(),
            message: m,
        };
        let value = serde_json::to_string(s).map_err(|e| err(e.to_string()))?;
        let key = s.trigger.to_string();
        let record = FutureRecord::to(&self.url.topic).key(&key).payload(&value);
        let delivery = self
            .producer
            .send_result(record)
            .map_err(|(e, _)| err(format!("cannot queue snapshot {}: {e}", s.trigger)))?;
        self.producer
            .flush(self.timeout)
            .map_err(|e| err(format!("snapshot {} not flushed: {e}", s.trigger)))?;
        match futures_executor::block_on(delivery) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(err(format!("snapshot {} not delivered: {e}", s.trigger))),
            Err(_) => Err(err(format!(
                "snapshot {} not delivered: the producer stopped",
                s.trigger
            ))),
        }
    }
}

/// Keeps every snapshot in memory (for tests and short bounded runs).
#[derive(Clone, Default)]
pub struct MemorySink(pub Arc<std::sync::Mutex<Vec<Snapshot>>>);

impl SnapshotSink for MemorySink {
    fn emit(&mut self, s: &Snapshot) -> Result<(), PipelineError> {
        self.0
            .lock()
            .map_err(|_| PipelineError::Runtime("a snapshot sink was poisoned".into()))?
            .push(s.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshots file that cannot be created names itself and keeps the I/O error as the
    /// source (exit 74).
    #[test]
    fn a_snapshots_file_that_cannot_be_created_names_it_and_keeps_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = match JsonLines::create(&file.join("s.jsonl")) {
            Err(e) => e,
            Ok(_) => panic!("a file under a file was created"),
        };
        assert!(e.to_string().contains("s.jsonl"), "{e}");
        let cause = std::error::Error::source(&e).expect("a source");
        assert!(cause.downcast_ref::<std::io::Error>().is_some(), "{cause}");
        assert_eq!(e.exit_code(), crate::exit::IO);
    }
}
