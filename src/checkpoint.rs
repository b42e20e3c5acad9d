//! Checkpoints of the daemon's state: per input partition, the counters of its records and
//! the next offset to read, with the trigger count, in one file per checkpoint under
//! `state.dir`. A file is written whole or not at all (write a temporary file, fsync, rename,
//! fsync the folder) and carries a magic, a format version, its length and a CRC-32 of the
//! bincode payload, so a torn or damaged file is recognised and skipped on restore in favour
//! of the one before it. The newest `keep` files are kept.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{debug, warn};

use crate::counters::{CountersState, CountersStateV1};

/// First bytes of every checkpoint file.
pub const MAGIC: &[u8; 8] = b"VPCKPT\r\n";
/// Format version written. Version 1 (before the counters kept household groups) is still
/// read; others are refused.
pub const VERSION: u32 = 2;
const HEADER: usize = 8 + 4 + 8 + 4;
const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".vpck";

/// Errors of checkpointing.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// The state folder or a file in it could not be read or written.
    #[error("state.dir {path}: {message}")]
    Io {
        /// The file or folder.
        path: String,
        /// What happened.
        message: String,
    },
    /// A checkpoint cannot be written (a full disk, a read-only folder).
    #[error("cannot write the checkpoint {}: {source}", path.display())]
    Write {
        /// The checkpoint file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A checkpoint file is not whole or not one.
    #[error("checkpoint {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The stored state belongs to another model, subsets or source.
    #[error("state.dir {dir}: the checkpoint {path} was made {message}; start with --reset-state to discard the stored state")]
    Mismatch {
        /// The folder.
        dir: String,
        /// The checkpoint.
        path: String,
        /// What differs.
        message: String,
    },
}

impl CheckpointError {
    /// The process exit code this error means.
    pub fn exit_code(&self) -> i32 {
        match self {
            CheckpointError::Io { .. } | CheckpointError::Write { .. } => crate::exit::IO,
            CheckpointError::Invalid { .. } => crate::exit::DATA,
            CheckpointError::Mismatch { .. } => crate::exit::USAGE,
        }
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The state of one input partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The next offset to read: every record before it is in `counters`.
    pub next_offset: i64,
    /// The counters of this partition's records, summed over the shards.
    pub counters: CountersState,
}

/// [`PartitionState`] of format 1.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct PartitionStateV1 {
    next_offset: i64,
    counters: CountersStateV1,
}

/// [`Checkpoint`] of format 1: the same fields, counters without household groups.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct CheckpointV1 {
    model: u64,
    subsets: Vec<String>,
    source: String,
    triggers: u64,
    records: u64,
    records_at_fire: u64,
    partitions: BTreeMap<i32, PartitionStateV1>,
    written_at: String,
}

impl From<CheckpointV1> for Checkpoint {
    fn from(v: CheckpointV1) -> Checkpoint {
        Checkpoint {
            model: v.model,
            subsets: v.subsets,
            source: v.source,
            triggers: v.triggers,
            records: v.records,
            records_at_fire: v.records_at_fire,
            partitions: v
                .partitions
                .into_iter()
                .map(|(p, s)| {
                    (
                        p,
                        PartitionState {
                            next_offset: s.next_offset,
                            counters: CountersState::from_v1(s.counters),
                        },
                    )
                })
                .collect(),
            written_at: v.written_at,
        }
    }
}

/// Everything a restarted daemon needs to go on as if it had never stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Fingerprint of the model (households, clusters, ranks) the counters were made with.
    pub model: u64,
    /// Subset labels, in order.
    pub subsets: Vec<String>,
    /// The source, as configured (`kafka://HOST:PORT/TOPIC` or a file path).
    pub source: String,
    /// Triggers fired so far.
    pub triggers: u64,
    /// Records consumed so far.
    pub records: u64,
    /// Records consumed at the last trigger.
    pub records_at_fire: u64,
    /// State per input partition.
    pub partitions: BTreeMap<i32, PartitionState>,
    /// When it was written, RFC 3339.
    pub written_at: String,
}

impl Checkpoint {
    /// The next offset of every partition.
    pub fn offsets(&self) -> BTreeMap<i32, i64> {
        self.partitions
            .iter()
            .map(|(&p, s)| (p, s.next_offset))
            .collect()
    }
}

/// The bytes of a checkpoint file.
pub fn encode(c: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
    let payload = bincode::serde::encode_to_vec(c, bincode::config::standard()).map_err(|e| {
        CheckpointError::Invalid {
            path: "(encoding)".into(),
            message: e.to_string(),
        }
    })?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// A checkpoint from the bytes of a file named `path` (for messages).
pub fn decode(bytes: &[u8], path: &Path) -> Result<Checkpoint, CheckpointError> {
    let bad = |message: String| CheckpointError::Invalid {
        path: path.display().to_string(),
        message,
    };
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(bad("not a viewpulse checkpoint (bad magic)".into()));
    }
    let word = |from: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[from..from + 4]);
        u32::from_le_bytes(b)
    };
    let version = word(8);
    if version != VERSION && version != 1 {
        return Err(bad(format!(
            "format version {version}, this build reads 1 and {VERSION}"
        )));
    }
    let mut l = [0u8; 8];
    l.copy_from_slice(&bytes[12..20]);
    let len = u64::from_le_bytes(l);
    let crc = word(20);
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != len {
        return Err(bad(format!(
            "torn: {} payload bytes of {len}",
            payload.len()
        )));
    }
    if crc32fast::hash(payload) != crc {
        return Err(bad("checksum mismatch (damaged)".into()));
    }
    let config = bincode::config::standard();
    let (c, used): (Checkpoint, usize) = if version == 1 {
        let (v1, used): (CheckpointV1, usize) = bincode::serde::decode_from_slice(payload, config)
            .map_err(|e| bad(format!("cannot decode: {e}")))?;
        (v1.into(), used)
    } else {
        bincode::serde::decode_from_slice(payload, config)
            .map_err(|e| bad(format!("cannot decode: {e}")))?
    };
    if used != payload.len() {
        return Err(bad(format!(
            "{} bytes after the state",
            payload.len() - used
        )));
    }
    Ok(c)
}

/// The checkpoints of one daemon: a folder of numbered files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    keep: usize,
    next: u64,
}

/// A checkpoint found on restore, with where it came from.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The state.
    pub checkpoint: Checkpoint,
    /// Its file.
    pub path: PathBuf,
    /// Newer files that were skipped as damaged.
    pub skipped: usize,
}

impl Store {
    /// The store in `dir` (created if missing), keeping the newest `keep` (at least 1)
    /// checkpoints. Leftover temporary files of an interrupted write are removed.
    pub fn open(dir: &Path, keep: usize) -> Result<Store, CheckpointError> {
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut next = 0;
        for (seq, _) in list(dir)? {
            next = next.max(seq + 1);
        }
        for entry in fs::read_dir(dir).map_err(|e| io(dir, e))?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            keep: keep.max(1),
            next,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The newest checkpoint that reads whole, skipping (with a warning) damaged ones.
    pub fn newest(&self) -> Result<Option<Restored>, CheckpointError> {
        let mut files = list(&self.dir)?;
        files.reverse();
        let mut skipped = 0;
        for (_, path) in files {
            let bytes = fs::read(&path).map_err(|e| io(&path, e))?;
            match decode(&bytes, &path) {
                Ok(checkpoint) => {
                    return Ok(Some(Restored {
                        checkpoint,
                        path,
                        skipped,
                    }))
                }
                Err(e) => {
                    warn!(error = %e, "skipping a damaged checkpoint; trying the one before");
                    skipped += 1;
                }
            }
        }
        Ok(None)
    }

    /// Write `c` as the newest checkpoint, atomically, then drop the oldest beyond `keep`.
    pub fn write(&mut self, c: &Checkpoint) -> Result<PathBuf, CheckpointError> {
        let bytes = encode(c)?;
        let name = format!("{PREFIX}{:012}{SUFFIX}", self.next);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let written = (|| {
            let mut f = File::create(&tmp)?;
            let half = bytes.len() / 2;
            f.write_all(&bytes[..half])?;
            fault_pause();
            f.write_all(&bytes[half..])?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(source) = written {
            // a full disk must not leave a torn temporary file behind
            let _ = fs::remove_file(&tmp);
            return Err(CheckpointError::Write { path, source });
        }
        if let Ok(d) = File::open(&self.dir) {
            // the rename itself is durable only once the folder is
            let _ = d.sync_all();
        }
        self.next += 1;
        let files = list(&self.dir)?;
        if files.len() > self.keep {
            for (_, old) in &files[..files.len() - self.keep] {
                if let Err(e) = fs::remove_file(old) {
                    warn!(path = %old.display(), error = %e, "cannot remove an old checkpoint");
                }
            }
        }
        debug!(path = %path.display(), bytes = bytes.len(), records = c.records, "checkpoint written");
        Ok(path)
    }

    /// Remove every checkpoint (`--reset-state`).
    pub fn clear(&mut self) -> Result<usize, CheckpointError> {
        let files = list(&self.dir)?;
        for (_, p) in &files {
            fs::remove_file(p).map_err(|e| io(p, e))?;
        }
        Ok(files.len())
    }
}

/// Fault injection for the crash tests: `VIEWPULSE_FAULT_CHECKPOINT_PAUSE_MS` makes every
/// checkpoint write pause this long halfway through its temporary file, so that a test can
/// kill the process in the middle of a write. Unset in production.
fn fault_pause() {
    if let Some(ms) = std::env::var("VIEWPULSE_FAULT_CHECKPOINT_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// `(sequence, path)` of every checkpoint file, oldest first.
fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io(dir, e))?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(seq) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_suffix(SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A stable fingerprint (FNV-1a, 64 bits) of a model's `(household, cluster, rank)` rows in
/// the order given.
pub fn fingerprint(rows: impl Iterator<Item = (i64, u32, u32)>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (id, cluster, rank) in rows {
        eat(&id.to_le_bytes());
        eat(&cluster.to_le_bytes());
        eat(&rank.to_le_bytes());
    }
    h
}

/// Check that a restored checkpoint belongs to this model, these subsets and this source.
pub fn check(
    r: &Restored,
    dir: &Path,
    model: u64,
    subsets: &[String],
    source: &str,
) -> Result<(), CheckpointError> {
    let c = &r.checkpoint;
    let message = if c.model != model {
        Some(format!(
            "with another model (fingerprint {:016x}, this model {model:016x})",
            c.model
        ))
    } else if c.subsets != subsets {
        Some(format!(
            "for subsets {:?}, this run rates {subsets:?}",
            c.subsets
        ))
    } else if c.source != source {
        Some(format!("from source {}, this run reads {source}", c.source))
    } else {
        None
    };
    match message {
        Some(message) => Err(CheckpointError::Mismatch {
            dir: dir.display().to_string(),
            path: r.path.display().to_string(),
            message,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::{Counters, Membership, Subset};

    /// A checkpoint of format 1 (before the household groups) still restores: the same
    /// state, with no groups.
    #[test]
    fn a_format_1_checkpoint_reads_as_counters_without_groups() {
        let now = sample(7);
        let v1 = CheckpointV1 {
            model: now.model,
            subsets: now.subsets.clone(),
            source: now.source.clone(),
            triggers: now.triggers,
            records: now.records,
            records_at_fire: now.records_at_fire,
            partitions: now
                .partitions
                .iter()
                .map(|(&p, st)| {
                    let c = &st.counters;
                    (
                        p,
                        PartitionStateV1 {
                            next_offset: st.next_offset,
                            counters: CountersStateV1 {
                                n_subsets: c.n_subsets,
                                clusters: c.clusters,
                                stations: c.stations.clone(),
                                cells: c.cells.clone(),
                                records: c.records,
                                valid: c.valid,
                                unknown_household: c.unknown_household,
                                malformed: c.malformed.clone(),
                            },
                        },
                    )
                })
                .collect(),
            written_at: now.written_at.clone(),
        };
        let payload = bincode::serde::encode_to_vec(&v1, bincode::config::standard()).unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        assert!(now.partitions.values().all(|p| p.counters.groups == 0));
        assert_eq!(decode(&bytes, Path::new("v1")).unwrap(), now);
        bytes[8] = 3;
        let e = decode(&bytes, Path::new("v3")).unwrap_err().to_string();
        assert!(
            e.contains("format version 3, this build reads 1 and 2"),
            "{e}"
        );
    }

    fn sample(records: u64) -> Checkpoint {
        let m = Membership::new(vec![Subset::All], vec![(1, 0, 1), (2, 1, 1)]).unwrap();
        let mut c = Counters::for_membership(&m);
        for i in 0..records {
            c.count(
                format!("d,1,2,{},p,{}", 100 + i % 3, 1 + i % 3).as_bytes(),
                &m,
            );
        }
        Checkpoint {
            model: 7,
            subsets: vec!["all".into()],
            source: "kafka://h:1/t".into(),
            triggers: 2,
            records,
            records_at_fire: records,
            partitions: [(
                0,
                PartitionState {
                    next_offset: records as i64,
                    counters: c.to_state(),
                },
            )]
            .into(),
            written_at: "2026-11-25T00:00:00Z".into(),
        }
    }

    #[test]
    fn round_trip_and_every_damage_is_caught() {
        let c = sample(10);
        let bytes = encode(&c).unwrap();
        let p = Path::new("x.vpck");
        assert_eq!(decode(&bytes, p).unwrap(), c);
        for cut in [0, 5, HEADER - 1, HEADER, bytes.len() - 1] {
            assert!(decode(&bytes[..cut], p).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode(&b, p).is_err(), "flip at byte {i}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, p).is_err());
    }

    #[test]
    fn store_keeps_the_newest_and_falls_back_past_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), 3).unwrap();
        for n in 1..=5 {
            s.write(&sample(n)).unwrap();
        }
        assert_eq!(list(dir.path()).unwrap().len(), 3);
        assert_eq!(s.newest().unwrap().unwrap().checkpoint.records, 5);
        // damage the newest: the one before is restored
        let newest = list(dir.path()).unwrap().last().unwrap().1.clone();
        let mut b = fs::read(&newest).unwrap();
        let n = b.len();
        b[n - 3] ^= 1;
        fs::write(&newest, &b).unwrap();
        let r = s.newest().unwrap().unwrap();
        assert_eq!((r.checkpoint.records, r.skipped), (4, 1));
        // a torn one too
        fs::write(&r.path, &fs::read(&r.path).unwrap()[..20]).unwrap();
        assert_eq!(s.newest().unwrap().unwrap().checkpoint.records, 3);
        // a reopened store numbers on after the newest file and drops temp leftovers
        fs::write(dir.path().join(".checkpoint-000000000009.vpck.tmp"), b"x").unwrap();
        let mut s2 = Store::open(dir.path(), 3).unwrap();
        assert!(!dir
            .path()
            .join(".checkpoint-000000000009.vpck.tmp")
            .exists());
        let p = s2.write(&sample(6)).unwrap();
        assert!(
            p.ends_with("checkpoint-000000000005.vpck"),
            "{}",
            p.display()
        );
        assert_eq!(s2.newest().unwrap().unwrap().checkpoint.records, 6);
        assert_eq!(s2.clear().unwrap(), 3);
        assert!(s2.newest().unwrap().is_none());
    }

    #[test]
    fn a_checkpoint_of_another_model_subsets_or_source_is_refused() {
        let r = Restored {
            checkpoint: sample(3),
            path: "c".into(),
            skipped: 0,
        };
        let d = Path::new("d");
        let all = vec!["all".to_string()];
        assert!(check(&r, d, 7, &all, "kafka://h:1/t").is_ok());
        let e = check(&r, d, 8, &all, "kafka://h:1/t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("another model") && e.contains("--reset-state"),
            "{e}"
        );
        assert!(check(&r, d, 7, &["3".to_string()], "kafka://h:1/t").is_err());
        assert!(check(&r, d, 7, &all, "kafka://h:1/u").is_err());
        assert_ne!(
            fingerprint([(1, 0, 1), (2, 1, 1)].into_iter()),
            fingerprint([(1, 0, 1), (2, 0, 1)].into_iter())
        );
    }
}
