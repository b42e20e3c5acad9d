//! Where results go: the CSV files and `summary.json` of SPEC 6 for a batch run, the
//! dead-letter file that keeps malformed records with their source position, and the daemon's
//! sinks: snapshots pushed ([`snapshot`]: JSON lines, stdout, a Kafka topic, memory) or served
//! ([`http`]: `/snapshot`, `/metrics`, `/healthz`), and dead letters ([`dead_letter`]: a file
//! or a Kafka topic). Writers only
//! format what the pure core computed; floats are printed to full round-trip precision
//! (Rust's shortest representation that parses back to the same f64).

pub mod dead_letter;
pub mod http;
pub mod snapshot;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ratings::{DiffRankRow, GenpopRow, PopularityRow, Ratings};
use crate::record::MalformedCounts;

/// Errors writing outputs.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Creating or writing a file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Serialising JSON failed.
    #[error("cannot encode {path} as JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A Parquet output cannot be written.
    #[error(transparent)]
    Parquet(#[from] crate::dataset::DatasetError),
}

impl SinkError {
    /// The process exit code this error means: an output that cannot be written.
    pub fn exit_code(&self) -> i32 {
        crate::exit::IO
    }

    /// The file that cannot be written.
    pub fn path(&self) -> &Path {
        match self {
            SinkError::Io { path, .. } | SinkError::Json { path, .. } => path,
            SinkError::Parquet(e) => e.path(),
        }
    }

    /// The cause without its file, as an error of its own (for an error that names the
    /// file itself).
    pub fn into_cause(self) -> Box<dyn std::error::Error + Send + Sync> {
        match self {
            SinkError::Io { source, .. } => Box::new(source),
            SinkError::Json { source, .. } => Box::new(source),
            SinkError::Parquet(e) => e.cause().into(),
        }
    }

    /// Why, in one phrase (the error without its file).
    pub fn cause(&self) -> String {
        match self {
            SinkError::Io { source, .. } => source.to_string(),
            SinkError::Json { source, .. } => source.to_string(),
            SinkError::Parquet(e) => e.cause(),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Create `path` (and its parent folder) for buffered writing.
pub fn create(path: &Path) -> Result<BufWriter<File>, SinkError> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
    }
    let f = File::create(path).map_err(io_err(path))?;
    Ok(BufWriter::with_capacity(1 << 16, f))
}

/// Write a file through `body`, naming the file in any error.
pub fn write_file(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<(), SinkError> {
    let mut w = create(path)?;
    body(&mut w).map_err(io_err(path))?;
    w.flush().map_err(io_err(path))
}

/// Write `value` as pretty JSON to `path`.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), SinkError> {
    let mut w = create(path)?;
    serde_json::to_writer_pretty(&mut w, value).map_err(|source| SinkError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    w.write_all(b"\n").map_err(io_err(path))?;
    w.flush().map_err(io_err(path))
}

/// `popularity.csv`: `subset,cluster,station_num,views,popularity_rating,rank`.
pub fn write_popularity(path: &Path, rows: &[PopularityRow]) -> Result<(), SinkError> {
    write_file(path, |w| {
        writeln!(
            w,
            "subset,cluster,station_num,views,popularity_rating,rank,popularity_lo,popularity_hi"
        )?;
        for r in rows {
            writeln!(
                w,
                "{},{},{},{},{},{},{},{}",
                r.subset,
                r.cluster,
                r.station_num,
                r.views,
                r.popularity_rating,
                r.rank,
                Opt(r.popularity_lo),
                Opt(r.popularity_hi)
            )?;
        }
        Ok(())
    })
}

/// A nullable double column.
fn optional(values: impl Iterator<Item = Option<f64>>) -> arrow_array::ArrayRef {
    std::sync::Arc::new(arrow_array::Float64Array::from_iter(
        values.map(|v| v.filter(|x| !x.is_nan())),
    ))
}

/// An optional figure in a CSV: the number, or nothing (for none and for NaN, as the
/// Parquet files hold a null).
struct Opt(Option<f64>);

impl std::fmt::Display for Opt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) if !v.is_nan() => write!(f, "{v}"),
            _ => Ok(()),
        }
    }
}

/// `genpop.csv`: `station_num,views,genpop_rating`.
pub fn write_genpop(path: &Path, rows: &[GenpopRow]) -> Result<(), SinkError> {
    write_file(path, |w| {
        writeln!(w, "station_num,views,genpop_rating")?;
        for r in rows {
            writeln!(w, "{},{},{}", r.station_num, r.views, r.genpop_rating)?;
        }
        Ok(())
    })
}

/// `diff_rank.csv`: SPEC's `subset,cluster,rank,station_num,diff_rank,popularity_rating,
/// genpop_rating`, then `index` and the intervals (`popularity_lo,popularity_hi,
/// diff_rank_lo,diff_rank_hi,top_k_share`, empty when not computed): SPEC's columns keep
/// their names and places, so a reader of SPEC's file reads this one.
pub fn write_diff_rank(path: &Path, rows: &[DiffRankRow]) -> Result<(), SinkError> {
    write_file(path, |w| {
        writeln!(
            w,
            "subset,cluster,rank,station_num,diff_rank,popularity_rating,genpop_rating,index,popularity_lo,popularity_hi,diff_rank_lo,diff_rank_hi,top_k_share"
        )?;
        for r in rows {
            writeln!(
                w,
                "{},{},{},{},{},{},{},{},{},{},{},{},{}",
                r.subset,
                r.cluster,
                r.rank,
                r.station_num,
                r.diff_rank,
                r.popularity_rating,
                r.genpop_rating,
                r.index,
                Opt(r.intervals.popularity_lo),
                Opt(r.intervals.popularity_hi),
                Opt(r.intervals.diff_rank_lo),
                Opt(r.intervals.diff_rank_hi),
                Opt(r.intervals.top_k_share)
            )?;
        }
        Ok(())
    })
}

/// `agreement.csv`: per cluster and pair of subsets, how alike their rankings are
/// ([`crate::agreement::AgreementRow`]; NaN written as nothing).
pub fn write_agreement(
    path: &Path,
    rows: &[crate::agreement::AgreementRow],
) -> Result<(), SinkError> {
    let num = |v: f64| Opt(Some(v));
    write_file(path, |w| {
        writeln!(
            w,
            "cluster,subset_a,subset_b,top_k,overlap,overlap_share,common_stations,kendall_tau,spearman_rho,rbo"
        )?;
        for r in rows {
            writeln!(
                w,
                "{},{},{},{},{},{},{},{},{},{}",
                r.cluster,
                r.subset_a,
                r.subset_b,
                r.top_k,
                r.overlap,
                r.overlap_share,
                r.common_stations,
                num(r.kendall_tau),
                num(r.spearman_rho),
                num(r.rbo)
            )?;
        }
        Ok(())
    })
}

/// `resamples.csv`: the bootstrap's plan, `resample,group,draws` for every group drawn at
/// least once, so that another implementation can resample exactly the same households (a
/// household's group is `counters::household_group`).
pub fn write_resamples(path: &Path, plan: &crate::uncertainty::Plan) -> Result<(), SinkError> {
    write_file(path, |w| {
        writeln!(w, "resample,group,draws")?;
        for (b, row) in plan.weights.rows().into_iter().enumerate() {
            for (g, &d) in row.iter().enumerate() {
                if d > 0.0 {
                    writeln!(w, "{b},{g},{d}")?;
                }
            }
        }
        Ok(())
    })
}

/// Remove `path` if it is a file (an earlier run's output this run does not write).
pub fn remove_old_file(path: &Path) -> Result<(), SinkError> {
    if path.is_file() {
        std::fs::remove_file(path).map_err(io_err(path))?;
    }
    Ok(())
}

/// The three rating files into `dir`, as CSV and/or Parquet.
pub fn write_ratings(
    dir: &Path,
    ratings: &Ratings,
    formats: crate::dataset::Formats,
) -> Result<(), SinkError> {
    if formats.csv {
        write_popularity(&dir.join("popularity.csv"), &ratings.popularity)?;
        write_genpop(&dir.join("genpop.csv"), &ratings.genpop)?;
        write_diff_rank(&dir.join("diff_rank.csv"), &ratings.diff_rank)?;
    }
    if formats.parquet {
        write_ratings_parquet(dir, ratings)?;
    }
    // a format not written this time must not leave an earlier run's files beside the new
    for (written, ext) in [(formats.csv, "csv"), (formats.parquet, "parquet")] {
        if written {
            continue;
        }
        for name in ["popularity", "genpop", "diff_rank"] {
            let stale = dir.join(format!("{name}.{ext}"));
            if stale.is_file() {
                std::fs::remove_file(&stale).map_err(io_err(&stale))?;
            }
        }
    }
    Ok(())
}

/// `popularity.parquet`, `genpop.parquet`, `diff_rank.parquet`: the CSVs' columns, typed
/// (`station_num` and `subset` strings, `cluster` and `rank` int32, `views` int64, ratings
/// double), so that no reader turns station `04321` into `4321`.
pub fn write_ratings_parquet(dir: &Path, ratings: &Ratings) -> Result<(), SinkError> {
    use crate::dataset::{doubles, int32, int64, strings, write_parquet};

    let p = &ratings.popularity;
    write_parquet(
        &dir.join("popularity.parquet"),
        vec![
            (
                "subset",
                false,
                strings(p.iter().map(|r| r.subset.as_str())),
            ),
            ("cluster", false, int32(p.iter().map(|r| r.cluster as i32))),
            (
                "station_num",
                false,
                strings(p.iter().map(|r| r.station_num.as_str())),
            ),
            ("views", false, int64(p.iter().map(|r| r.views as i64))),
            (
                "popularity_rating",
                false,
                doubles(p.iter().map(|r| r.popularity_rating)),
            ),
            ("rank", false, int32(p.iter().map(|r| r.rank as i32))),
            (
                "popularity_lo",
                true,
                optional(p.iter().map(|r| r.popularity_lo)),
            ),
            (
                "popularity_hi",
                true,
                optional(p.iter().map(|r| r.popularity_hi)),
            ),
        ],
    )?;
    let g = &ratings.genpop;
    write_parquet(
        &dir.join("genpop.parquet"),
        vec![
            (
                "station_num",
                false,
                strings(g.iter().map(|r| r.station_num.as_str())),
            ),
            ("views", false, int64(g.iter().map(|r| r.views as i64))),
            (
                "genpop_rating",
                false,
                doubles(g.iter().map(|r| r.genpop_rating)),
            ),
        ],
    )?;
    let d = &ratings.diff_rank;
    write_parquet(
        &dir.join("diff_rank.parquet"),
        vec![
            (
                "subset",
                false,
                strings(d.iter().map(|r| r.subset.as_str())),
            ),
            ("cluster", false, int32(d.iter().map(|r| r.cluster as i32))),
            ("rank", false, int32(d.iter().map(|r| r.rank as i32))),
            (
                "station_num",
                false,
                strings(d.iter().map(|r| r.station_num.as_str())),
            ),
            ("diff_rank", false, doubles(d.iter().map(|r| r.diff_rank))),
            (
                "popularity_rating",
                false,
                doubles(d.iter().map(|r| r.popularity_rating)),
            ),
            (
                "genpop_rating",
                false,
                doubles(d.iter().map(|r| r.genpop_rating)),
            ),
            ("index", false, doubles(d.iter().map(|r| r.index))),
            (
                "popularity_lo",
                true,
                optional(d.iter().map(|r| r.intervals.popularity_lo)),
            ),
            (
                "popularity_hi",
                true,
                optional(d.iter().map(|r| r.intervals.popularity_hi)),
            ),
            (
                "diff_rank_lo",
                true,
                optional(d.iter().map(|r| r.intervals.diff_rank_lo)),
            ),
            (
                "diff_rank_hi",
                true,
                optional(d.iter().map(|r| r.intervals.diff_rank_hi)),
            ),
            (
                "top_k_share",
                true,
                optional(d.iter().map(|r| r.intervals.top_k_share)),
            ),
        ],
    )?;
    Ok(())
}

/// Wall-clock time of each step of a batch run, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Loading the model (household memberships).
    pub load_model_ms: f64,
    /// Reading, parsing and counting the records.
    pub count_ms: f64,
    /// Merging the per-thread counters and computing the ratings.
    pub rate_ms: f64,
    /// The confidence intervals and the subsets' agreement.
    #[serde(default)]
    pub intervals_ms: f64,
    /// Writing the output files and the report.
    pub write_ms: f64,
    /// The whole command.
    pub total_ms: f64,
    /// `records / count time`.
    pub records_per_second: f64,
}

/// `summary.json` of a batch run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The views source as given.
    pub source: String,
    /// The model folder.
    pub model: String,
    /// Records read (valid + malformed).
    pub records: u64,
    /// Valid records (the general population).
    pub valid: u64,
    /// Malformed records.
    pub malformed: u64,
    /// Malformed records by kind (every kind listed, zeros included).
    pub malformed_by_kind: BTreeMap<String, u64>,
    /// Valid records from households without demographics.
    pub unknown_household: u64,
    /// Valid records from clustered households.
    pub clustered_views: u64,
    /// Households in the model.
    pub households: u64,
    /// Clusters in the model.
    pub clusters: u32,
    /// Distinct stations among valid records.
    pub stations: u64,
    /// Subsets rated, as configured.
    pub subsets: Vec<String>,
    /// Top-K kept per cluster.
    pub top: usize,
    /// Worker threads used for counting.
    pub threads: usize,
    /// Step timings.
    pub timing: Timing,
}

impl Summary {
    /// Fill the malformed counts from counters.
    pub fn set_malformed(&mut self, m: &MalformedCounts) {
        self.malformed = m.total();
        self.malformed_by_kind = m.by_kind().map(|(k, v)| (k.to_string(), v)).collect();
    }
}

/// Dead-letter file: one line per malformed record, `position<TAB>kind<TAB>record`, where the
/// record's bytes are escaped so that any byte survives on one line (`\\`, `\t`, `\n`, `\r` and
/// non-printable or non-ASCII bytes as `\xHH`).
pub struct DeadLetter {
    path: PathBuf,
    w: BufWriter<File>,
    written: u64,
    /// Bytes of whole lines handed to the writer.
    lines: u64,
    /// Bytes known to be in the file at the last successful flush (a regular file only): a
    /// failed write cuts the file back to it, so a full disk leaves no torn line (the daemon
    /// syncs at every checkpoint, so this is also what its checkpoint counts).
    flushed: Option<u64>,
}

/// Whether `path` is a regular file, or is not there yet (and will be one): not `/dev/null`,
/// a FIFO or a terminal, which can be neither cut back nor synced.
pub fn is_regular(path: &Path) -> bool {
    std::fs::metadata(path).map_or(true, |m| m.is_file())
}

/// After a failed write, cut the file behind `w` back to `len` bytes (its last whole line)
/// and drop what `w` still buffers, so that it is not flushed again later; `w` then writes
/// at `len`.
pub fn cut_back(w: &mut BufWriter<File>, len: u64) {
    if let Ok(f) = w.get_ref().try_clone() {
        let old = std::mem::replace(w, BufWriter::with_capacity(w.capacity(), f));
        let (f, _unwritten) = old.into_parts();
        let _ = f.set_len(len);
        let _ = w.seek(io::SeekFrom::Start(len));
    }
}

/// The name of a hidden file or folder beside `name` (`.NAME.KIND-PID`), kept within the
/// 255-byte limit of a file name: a long name is cut (at a character boundary) before the
/// suffix is added.
pub fn hidden_name(name: &str, kind: &str, pid: u32) -> String {
    let mut keep = name.len().min(200);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(".{}.{kind}-{pid}", &name[..keep])
}

/// Remove the hidden files and folders of `name` (`kinds`: `staging`, `old`, `partial`)
/// left beside it by a command that was killed: their process is gone (no `/proc/PID`).
pub fn remove_stale(parent: &Path, name: &str, kinds: &[&str]) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let pid = kinds.iter().find_map(|kind| {
            let prefix = hidden_name(name, kind, 0);
            let prefix = prefix.strip_suffix('0').unwrap_or(&prefix);
            n.strip_prefix(prefix).and_then(|p| p.parse::<u32>().ok())
        });
        let Some(pid) = pid else { continue };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let p = e.path();
        let removed = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        match removed {
            Ok(()) => tracing::info!(path = %p.display(), "removed what a killed run left behind"),
            Err(err) => {
                tracing::warn!(path = %p.display(), error = %err, "cannot remove what a killed run left behind")
            }
        }
    }
}

/// An output file a command writes beside its target and puts in place only when the whole
/// command succeeded ([`Staged::commit`]); dropped uncommitted (the command failed), the
/// hidden file is removed and the target is as it was. A target that is not a regular file
/// (`/dev/null`, `/dev/full`, a FIFO) or is a symbolic link is written in place: renaming
/// over it would replace the device or the link with a plain file.
#[derive(Debug)]
pub struct Staged {
    target: PathBuf,
    write_to: PathBuf,
    committed: bool,
}

impl Staged {
    /// Stage `target`. A symbolic link is followed: the file it names is staged beside that
    /// file and replaced, the link stays.
    pub fn new(target: &Path) -> Staged {
        let target = match std::fs::canonicalize(target) {
            Ok(real) => real,
            Err(_) => target.to_path_buf(), // not there yet, or a dangling link
        };
        let in_place = match std::fs::symlink_metadata(&target) {
            Ok(m) => !m.file_type().is_file(),
            Err(_) => false,
        };
        let write_to = if in_place {
            target.clone()
        } else {
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(parent) = target.parent() {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                remove_stale(parent, &name, &["partial"]);
            }
            target.with_file_name(hidden_name(&name, "partial", std::process::id()))
        };
        Staged {
            target,
            write_to,
            committed: false,
        }
    }

    /// Where to write until the commit.
    pub fn path(&self) -> &Path {
        &self.write_to
    }

    /// Put the written file in the target's place.
    pub fn commit(mut self) -> Result<(), SinkError> {
        self.committed = true;
        if self.write_to != self.target {
            std::fs::rename(&self.write_to, &self.target).map_err(io_err(&self.target))?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed && self.write_to != self.target {
            let _ = std::fs::remove_file(&self.write_to);
        }
    }
}

/// The dead-letter file's header line.
const HEADER: &[u8] = b"position\tkind\trecord\n";

impl DeadLetter {
    /// Create the file with its header line.
    pub fn create(path: &Path) -> Result<DeadLetter, SinkError> {
        let mut w = create(path)?;
        w.write_all(HEADER).map_err(io_err(path))?;
        Ok(DeadLetter {
            path: path.to_path_buf(),
            w,
            written: 0,
            lines: HEADER.len() as u64,
            flushed: is_regular(path).then_some(0),
        })
    }

    /// Turn a write error into the error to report, cutting a regular file back to its last
    /// flushed whole line (the lines after it are dropped from the buffer, not written later).
    fn failed(&mut self, e: io::Error) -> SinkError {
        if let Some(len) = self.flushed {
            cut_back(&mut self.w, len);
        }
        io_err(&self.path)(e)
    }

    /// Flush the buffer; the file then holds every whole line handed over.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        match self.w.flush() {
            Ok(()) => {
                if self.flushed.is_some() {
                    self.flushed = Some(self.lines);
                }
                Ok(())
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Keep one record.
    pub fn write(&mut self, position: &str, kind: &str, record: &[u8]) -> Result<(), SinkError> {
        let mut line = Vec::with_capacity(record.len() + position.len() + kind.len() + 8);
        line.extend_from_slice(position.as_bytes());
        line.push(b'\t');
        line.extend_from_slice(kind.as_bytes());
        line.push(b'\t');
        escape_into(record, &mut line);
        line.push(b'\n');
        if let Err(e) = self.w.write_all(&line) {
            return Err(self.failed(e));
        }
        self.lines += line.len() as u64;
        self.written += 1;
        Ok(())
    }

    /// Go on with the file of a restored run: keep its header and the whole lines whose
    /// position `keep` accepts (records before the checkpoint's offsets), drop the rest (the
    /// restored run meets those records again) and a line cut by a crash, and append.
    /// Returns the file and how many lines were dropped.
    pub fn resume(
        path: &Path,
        keep: impl Fn(&str) -> bool,
    ) -> Result<(DeadLetter, usize), SinkError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Self::create(path)?, 0)),
            Err(e) => return Err(io_err(path)(e)),
        };
        if !text.starts_with(HEADER) {
            return Ok((Self::create(path)?, 0));
        }
        let mut len = HEADER.len();
        let (mut written, mut dropped) = (0u64, 0usize);
        for line in text[HEADER.len()..].split_inclusive(|&b| b == b'\n') {
            let position = line
                .split(|&b| b == b'\t')
                .next()
                .and_then(|p| std::str::from_utf8(p).ok());
            match position {
                Some(p) if line.ends_with(b"\n") && dropped == 0 && keep(p) => {
                    len += line.len();
                    written += 1;
                }
                _ => dropped += 1,
            }
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        f.set_len(len as u64).map_err(io_err(path))?;
        let mut w = BufWriter::with_capacity(1 << 16, f);
        w.seek(io::SeekFrom::End(0)).map_err(io_err(path))?;
        Ok((
            DeadLetter {
                path: path.to_path_buf(),
                w,
                written,
                lines: len as u64,
                flushed: Some(len as u64),
            },
            dropped,
        ))
    }

    /// Flush and sync to disk (before a checkpoint that counts these records is written).
    pub fn sync(&mut self) -> Result<(), SinkError> {
        self.flush()?;
        if let Err(e) = self.w.get_ref().sync_data() {
            // a device (`/dev/null`) cannot be synced, and needs not be
            if self.flushed.is_some() {
                return Err(self.failed(e));
            }
        }
        Ok(())
    }

    /// Records written so far (kept lines of a resumed file included).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flush to disk.
    pub fn finish(mut self) -> Result<u64, SinkError> {
        self.flush()?;
        Ok(self.written)
    }
}

/// Escape bytes for a one-line text field (see [`DeadLetter`]).
pub fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0x20..=0x7e => out.push(b),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'x',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 15) as usize],
                ]);
            }
        }
    }
}

/// Reverse of [`escape_into`].
pub fn unescape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\\' && i + 1 < text.len() {
            match text[i + 1] {
                b'\\' => out.push(b'\\'),
                b't' => out.push(b'\t'),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b'x' if i + 3 < text.len() => {
                    let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                    out.push(hex(text[i + 2]) << 4 | hex(text[i + 3]));
                    i += 4;
                    continue;
                }
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
            i += 2;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn escape_roundtrip(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let mut e = Vec::new();
            escape_into(&bytes, &mut e);
            proptest::prop_assert!(!e.contains(&b'\n') && !e.contains(&b'\t'));
            proptest::prop_assert_eq!(unescape(&e), bytes);
        }
    }
}
