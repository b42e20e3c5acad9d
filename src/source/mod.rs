//! Bounded view sources for batch runs: a views file (plain or gzip, one record a line) read in
//! large blocks by one thread and counted by worker threads, each with its own [`Counters`],
//! merged at the end; or a Kafka topic read to its end ([`kafka`]). Blocks travel through bounded crossbeam channels and their buffers are
//! recycled, so memory stays at a few blocks per thread whatever the file's size.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::bounded;
use flate2::read::MultiGzDecoder;
use thiserror::Error;
use tracing::debug;

use crate::counters::{Counters, Membership};
use crate::progress::{self, Unit};
use crate::sink::{DeadLetter, SinkError};

pub mod kafka;
pub mod parquet;

/// Errors of a bounded source.
#[derive(Debug, Error)]
pub enum SourceError {
    /// A source URL that cannot be understood.
    #[error("source {url}: {why}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The Kafka client or broker failed.
    #[error("{url}: {message}")]
    Kafka {
        /// The source.
        url: String,
        /// What happened.
        message: String,
    },
    /// The broker stayed unreachable longer than `kafka.outage_limit` in mid-stream.
    #[error("{url}: the broker was unreachable for {lasted:?}, longer than kafka.outage_limit; stopped at offsets {offsets:?} (partition: next offset)")]
    Outage {
        /// The source.
        url: String,
        /// How long the outage had lasted.
        lasted: std::time::Duration,
        /// The next offset per partition when it stopped.
        offsets: std::collections::BTreeMap<i32, i64>,
    },
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The gzip stream is corrupt.
    #[error("{path}: corrupt gzip data{}: {message}", after_bytes(*offset))]
    Gzip {
        /// The file.
        path: PathBuf,
        /// Uncompressed bytes read before the error, when the reader counted them.
        offset: Option<u64>,
        /// The decoder's message.
        message: String,
    },
    /// A Parquet views file cannot be read as views.
    #[error("{0}")]
    Parquet(parquet::ParquetFault),
    /// The views folder cannot be listed or holds no data file.
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    /// The dead-letter file failed.
    #[error(transparent)]
    DeadLetter(#[from] SinkError),
    /// librdkafka refuses the client's configuration (an unknown or bad `-X` property).
    #[error("{url}: {message}")]
    Config {
        /// The source.
        url: String,
        /// librdkafka's reason.
        message: String,
    },
    /// A worker thread died.
    #[error("a counting thread panicked while reading {path}")]
    Worker {
        /// The file.
        path: PathBuf,
    },
}

/// ` after N uncompressed bytes`, when known.
fn after_bytes(offset: Option<u64>) -> String {
    offset.map_or(String::new(), |n| format!(" after {n} uncompressed bytes"))
}

impl SourceError {
    /// librdkafka refused to create a consumer for `url` with these properties (an unknown
    /// or bad `-X` key): a setting, named without the secrets' values.
    pub fn consumer_config(
        url: &kafka::KafkaUrl,
        e: &rdkafka::error::KafkaError,
        properties: &crate::secret::Properties,
    ) -> SourceError {
        SourceError::Config {
            url: url.to_string(),
            message: format!(
                "cannot create a consumer: {}",
                crate::secret::client_error(e, properties)
            ),
        }
    }

    /// The process exit code this error means.
    pub fn exit_code(&self) -> i32 {
        match self {
            SourceError::BadUrl { .. } | SourceError::Config { .. } => crate::exit::USAGE,
            SourceError::Kafka { .. } | SourceError::Outage { .. } => crate::exit::UNAVAILABLE,
            SourceError::Io { source, .. } => crate::exit::reading(source),
            SourceError::Gzip { .. } | SourceError::Parquet(_) => crate::exit::DATA,
            SourceError::Dataset(e) => e.exit_code(),
            SourceError::DeadLetter(e) => e.exit_code(),
            SourceError::Worker { .. } => crate::exit::SOFTWARE,
        }
    }
}

/// How to read a file source.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Counting threads (0 = one per core).
    pub threads: usize,
    /// Bytes per block.
    pub block_bytes: usize,
    /// Where to keep malformed records with their line numbers.
    pub dead_letter: Option<PathBuf>,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            threads: 0,
            block_bytes: 4 << 20,
            dead_letter: None,
        }
    }
}

/// What a file read produced.
#[derive(Debug, Clone)]
pub struct FileCount {
    /// Merged counters over every record of the file.
    pub counters: Counters,
    /// Bytes of records read (uncompressed).
    pub bytes: u64,
    /// Malformed records written to the dead-letter file.
    pub dead_letters: u64,
    /// Counting threads used.
    pub threads: usize,
}

/// The most counting or generating threads a command starts (`--threads`).
pub const MAX_THREADS: usize = 1024;

/// Threads to use for `requested` (0 = one per available core).
pub fn threads(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// Counts compressed bytes read, for the progress bar.
struct Metered<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

struct Block {
    /// Position of the block in its file: dead letters are written in this order.
    seq: u64,
    first_line: u64,
    data: Vec<u8>,
}

/// A malformed record on its way to the dead-letter file: line, kind, bytes.
type Bad = (u64, &'static str, Vec<u8>);

/// The dead-letter file of a multi-threaded read: the workers finish blocks (and the files
/// of a folder) in any order, and each block's malformed records wait here until the blocks
/// before it are written, so that the file is in line order (files in name order) whatever
/// the threads do.
struct InOrder {
    file: DeadLetter,
    /// How each file's positions begin: empty for a single file (`line 7`), else its name
    /// in the folder (`part-2.csv.gz line 7`).
    labels: Vec<String>,
    /// The next (file, block) to write.
    next: (usize, u64),
    waiting: std::collections::BTreeMap<(usize, u64), Vec<Bad>>,
    /// Blocks of each file whose reading ended.
    blocks: std::collections::HashMap<usize, u64>,
}

impl InOrder {
    fn new(file: DeadLetter, labels: Vec<String>) -> InOrder {
        InOrder {
            file,
            labels,
            next: (0, 0),
            waiting: Default::default(),
            blocks: Default::default(),
        }
    }

    fn block_done(&mut self, file: usize, seq: u64, bad: Vec<Bad>) -> Result<(), SinkError> {
        self.waiting.insert((file, seq), bad);
        self.advance()
    }

    /// File `file` was read to its end in `blocks` blocks.
    fn file_done(&mut self, file: usize, blocks: u64) -> Result<(), SinkError> {
        self.blocks.insert(file, blocks);
        self.advance()
    }

    fn advance(&mut self) -> Result<(), SinkError> {
        loop {
            if let Some(bad) = self.waiting.remove(&self.next) {
                let label = self.labels.get(self.next.0).map_or("", String::as_str);
                for (l, kind, rec) in bad {
                    let at = if label.is_empty() {
                        format!("line {l}")
                    } else {
                        format!("{label} line {l}")
                    };
                    self.file.write(&at, kind, &rec)?;
                }
                self.next.1 += 1;
            } else if self.blocks.get(&self.next.0) == Some(&self.next.1) {
                self.next = (self.next.0 + 1, 0);
            } else {
                return Ok(());
            }
        }
    }
}

/// An opened views source.
pub struct Opened {
    /// The records' bytes, decompressed (Parquet rows as lines; a folder's files one after
    /// the other).
    pub reader: Box<dyn Read + Send>,
    /// The size on disk.
    pub len: u64,
    /// Bytes read from disk so far (compressed bytes for gzip), for progress.
    pub read: Arc<AtomicU64>,
}

/// A read error of a folder's file, naming it.
#[derive(Debug)]
struct InPart {
    path: PathBuf,
    /// Bytes the file had given before the error.
    offset: u64,
    inner: io::Error,
}

impl std::fmt::Display for InPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.inner)
    }
}

impl std::error::Error for InPart {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.inner)
    }
}

/// The files of a folder read one after the other, a newline put between two where the
/// first does not end with one, so that no record spans two files.
struct Chain {
    parts: std::collections::VecDeque<crate::dataset::Part>,
    current: Option<(PathBuf, Box<dyn Read + Send>)>,
    /// The last byte the current file gave (b'\n' before any).
    last: u8,
    /// Bytes the current file gave.
    at: u64,
    read: Arc<AtomicU64>,
}

impl Read for Chain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.current.is_none() {
                let Some(part) = self.parts.pop_front() else {
                    return Ok(0);
                };
                let opened = open_file(&part.path, &part.partition).map_err(|e| match e {
                    SourceError::Io { path, source } => io::Error::new(
                        source.kind(),
                        InPart {
                            path,
                            offset: 0,
                            inner: source,
                        },
                    ),
                    SourceError::Parquet(f) => io::Error::new(io::ErrorKind::InvalidData, f),
                    other => io::Error::other(other.to_string()),
                })?;
                self.current = Some((part.path, opened.reader));
                self.last = b'\n';
                self.at = 0;
            }
            let Some((path, r)) = self.current.as_mut() else {
                continue;
            };
            match r.read(buf) {
                Ok(0) => {
                    self.current = None;
                    if self.last != b'\n' {
                        self.last = b'\n';
                        buf[0] = b'\n';
                        return Ok(1);
                    }
                }
                Ok(n) => {
                    self.last = buf[n - 1];
                    self.at += n as u64;
                    self.read.fetch_add(n as u64, Ordering::Relaxed);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        InPart {
                            path: path.clone(),
                            offset: self.at,
                            inner: e,
                        },
                    ))
                }
            }
        }
    }
}

/// Open a views source: a file (plain, gzip or Parquet, told by its first bytes), or a folder
/// of such files ([`crate::dataset::files`]) read one after the other in name order, its
/// lines numbered on across the files.
pub fn open(path: &Path) -> Result<Opened, SourceError> {
    if !path.is_dir() {
        return open_file(path, &[]);
    }
    let parts = crate::dataset::files(path)?;
    let len = parts
        .iter()
        .map(|p| std::fs::metadata(&p.path).map(|m| m.len()).unwrap_or(0))
        .sum();
    let read = Arc::new(AtomicU64::new(0));
    Ok(Opened {
        reader: Box::new(Chain {
            parts: parts.into(),
            current: None,
            last: b'\n',
            at: 0,
            read: read.clone(),
        }),
        len,
        read,
    })
}

/// Open one views file, transparently decompressing gzip and turning Parquet rows into lines
/// (`partition`: the values its `key=value` folders give the columns a Parquet file lacks).
fn open_file(path: &Path, partition: &[(String, Option<String>)]) -> Result<Opened, SourceError> {
    let io_err = |e| SourceError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let f = File::open(path).map_err(io_err)?;
    let len = f.metadata().map_err(io_err)?.len();
    let kind = crate::dataset::sniff(path).map_err(io_err)?;
    let read = Arc::new(AtomicU64::new(0));
    let metered = Metered {
        inner: f,
        read: read.clone(),
    };
    let r: Box<dyn Read + Send> = match kind {
        crate::dataset::Sniffed::Gzip => Box::new(MultiGzDecoder::new(
            io::BufReader::with_capacity(1 << 20, metered),
        )),
        crate::dataset::Sniffed::Parquet => {
            drop(metered);
            read.store(len, Ordering::Relaxed);
            Box::new(parquet::ParquetLines::open(path, partition).map_err(SourceError::Parquet)?)
        }
        crate::dataset::Sniffed::Text => Box::new(metered),
    };
    Ok(Opened {
        reader: r,
        len,
        read,
    })
}

/// The source error a failed read of `path` means, `offset` bytes into its records (when the
/// reader counts them): a
/// Parquet fault, a corrupt gzip stream, or an I/O error, naming the folder's file it
/// happened in.
pub fn read_error(path: &Path, offset: Option<u64>, e: io::Error) -> SourceError {
    let kind = e.kind();
    if let Some(f) = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<parquet::ParquetFault>())
    {
        return SourceError::Parquet(parquet::ParquetFault {
            path: f.path.clone(),
            message: f.message.clone(),
        });
    }
    if e.get_ref().is_some_and(|i| i.is::<InPart>()) {
        if let Some(Ok(part)) = e.into_inner().map(|b| b.downcast::<InPart>()) {
            return read_error(&part.path, Some(part.offset), part.inner);
        }
        return SourceError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(kind, "a file of the folder failed"),
        };
    }
    if matches!(
        kind,
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
    ) {
        return SourceError::Gzip {
            path: path.to_path_buf(),
            offset,
            message: e.to_string(),
        };
    }
    SourceError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Read and count every record of a views file or folder. The files of a folder are counted
/// several at a time (one per counting thread, each decompressed on a thread of its own),
/// so that a folder of gzip files reads faster than one file of the same records.
pub fn count_file(
    path: &Path,
    membership: &Membership,
    opts: &FileOptions,
) -> Result<FileCount, SourceError> {
    let n_threads = threads(opts.threads);
    if !path.is_dir() {
        let dead = match &opts.dead_letter {
            Some(p) => Some(Mutex::new(InOrder::new(DeadLetter::create(p)?, Vec::new()))),
            None => None,
        };
        let bar = progress::bar(0, &format!("counting {}", path.display()), Unit::Bytes);
        let (parts, bytes) = count_opened(
            open_file(path, &[])?,
            path,
            membership,
            n_threads,
            opts.block_bytes,
            dead.as_ref().map(|d| (d, 0)),
            &bar,
        )?;
        bar.finish_and_clear();
        return finish(parts, bytes, dead, path, membership, n_threads);
    }
    let files = crate::dataset::files(path)?;
    let at_once = n_threads.min(files.len()).max(1);
    let per_file = (n_threads / at_once).max(1);
    let dead = match &opts.dead_letter {
        Some(p) => Some(Mutex::new(InOrder::new(
            DeadLetter::create(p)?,
            files.iter().map(|f| f.name.clone()).collect(),
        ))),
        None => None,
    };
    let total: u64 = files
        .iter()
        .map(|p| std::fs::metadata(&p.path).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = progress::bar(total, &format!("counting {}", path.display()), Unit::Bytes);
    let next = AtomicU64::new(0);
    let results = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..at_once)
            .map(|_| {
                let (files, next, dead, bar) = (&files, &next, dead.as_ref(), &bar);
                scope.spawn(move || -> Result<(Vec<Counters>, u64), SourceError> {
                    let mut counted = Vec::new();
                    let mut bytes = 0;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some(file) = files.get(i) else {
                            return Ok((counted, bytes));
                        };
                        let (c, b) = count_opened(
                            open_file(&file.path, &file.partition)?,
                            &file.path,
                            membership,
                            per_file,
                            opts.block_bytes,
                            dead.map(|d| (d, i)),
                            bar,
                        )?;
                        counted.extend(c);
                        bytes += b;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(SourceError::Worker {
                        path: path.to_path_buf(),
                    })
                })
            })
            .collect::<Vec<_>>()
    });
    bar.finish_and_clear();
    let mut parts = Vec::new();
    let mut bytes = 0;
    for r in results {
        let (c, b) = r?;
        parts.extend(c);
        bytes += b;
    }
    finish(parts, bytes, dead, path, membership, n_threads)
}

/// Merge the counting threads' counters and close the dead-letter file.
fn finish(
    parts: Vec<Counters>,
    bytes: u64,
    dead: Option<Mutex<InOrder>>,
    path: &Path,
    membership: &Membership,
    threads: usize,
) -> Result<FileCount, SourceError> {
    let mut it = parts.into_iter();
    let mut counters = it
        .next()
        .unwrap_or_else(|| Counters::for_membership(membership));
    for p in it {
        counters.merge(&p);
    }
    let dead_letters = match dead {
        Some(d) => match d.into_inner() {
            Ok(d) => d.file.finish()?,
            Err(_) => {
                return Err(SourceError::Worker {
                    path: path.to_path_buf(),
                })
            }
        },
        None => 0,
    };
    debug!(records = counters.records, bytes, "views counted");
    Ok(FileCount {
        counters,
        bytes,
        dead_letters,
        threads,
    })
}

/// Count every record of one opened file (`path` names it in errors) on `n_threads`
/// counting threads, its malformed records handed to `dead` as file number `.1`; returns
/// the threads' counters and the bytes of records read. The time is linear in the input
/// whatever its lines: a line longer than a block is read on into the same buffer, doubled
/// each time, and only the new bytes are searched for its end.
fn count_opened(
    opened: Opened,
    path: &Path,
    membership: &Membership,
    n_threads: usize,
    block_bytes: usize,
    dead: Option<(&Mutex<InOrder>, usize)>,
    bar: &indicatif::ProgressBar,
) -> Result<(Vec<Counters>, u64), SourceError> {
    let Opened {
        mut reader,
        len,
        read: read_bytes,
    } = opened;
    if bar.length() == Some(0) {
        bar.set_length(len);
    }
    let bar_base = bar.position();
    let keep_lines = dead.is_some();
    let block_bytes = block_bytes.max(4096);
    let (tx, rx) = bounded::<Block>(n_threads * 2);
    let (free_tx, free_rx) = bounded::<Vec<u8>>(n_threads * 3 + 2);

    std::thread::scope(|scope| -> Result<(Vec<Counters>, u64), SourceError> {
        let mut workers = Vec::with_capacity(n_threads);
        for _ in 0..n_threads {
            let rx = rx.clone();
            let free_tx = free_tx.clone();
            workers.push(scope.spawn(move || -> Result<Counters, SourceError> {
                let mut c = Counters::for_membership(membership);
                let mut bad: Vec<Bad> = Vec::new();
                for block in rx.iter() {
                    let data = &block.data;
                    let mut lines: Vec<&[u8]> = Vec::with_capacity(data.len() / 48 + 1);
                    let mut start = 0usize;
                    for end in memchr::memchr_iter(b'\n', data) {
                        lines.push(&data[start..end]);
                        start = end + 1;
                    }
                    if start < data.len() {
                        // the file's last line, without a newline
                        lines.push(&data[start..]);
                    }
                    c.count_batch(&lines, membership, |i, kind| {
                        if dead.is_some() {
                            // a CRLF file's record, like the counters see it: without its \r
                            let rec = lines[i].strip_suffix(b"\r").unwrap_or(lines[i]);
                            bad.push((block.first_line + i as u64, kind.name(), rec.to_vec()));
                        }
                    });
                    if let Some((d, file)) = dead {
                        let mut d = d.lock().map_err(|_| SourceError::Worker {
                            path: path.to_path_buf(),
                        })?;
                        d.block_done(file, block.seq, std::mem::take(&mut bad))?;
                    }
                    let mut buf = block.data;
                    buf.clear();
                    let _ = free_tx.try_send(buf);
                }
                Ok(c)
            }));
        }
        drop(rx);
        let reading = (|| -> Result<(u64, u64), SourceError> {
            let mut total = 0u64;
            let mut line = 1u64;
            let mut next_seq = 0u64;
            let mut carry: Vec<u8> = Vec::new();
            let mut eof = false;
            while !eof {
                let mut buf = free_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(block_bytes + 4096));
                buf.clear();
                buf.extend_from_slice(&carry);
                carry.clear();
                let mut filled = buf.len();
                // the carry is the tail after the last newline: no newline in it
                let mut searched = filled;
                let mut target = block_bytes.max(filled + 4096);
                loop {
                    buf.resize(target, 0);
                    while filled < buf.len() {
                        match reader.read(&mut buf[filled..]) {
                            Ok(0) => {
                                eof = true;
                                break;
                            }
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(read_error(path, Some(total + filled as u64), e)),
                        }
                    }
                    buf.truncate(filled);
                    if eof || memchr::memchr(b'\n', &buf[searched..]).is_some() {
                        break;
                    }
                    // a line longer than the block: read on into the same buffer, doubling it,
                    // and search only the new bytes, so that time stays linear in the line
                    searched = filled;
                    target = filled.saturating_mul(2);
                }
                if !eof {
                    if let Some(p) = memchr::memrchr(b'\n', &buf) {
                        carry.extend_from_slice(&buf[p + 1..]);
                        buf.truncate(p + 1);
                    }
                }
                if buf.is_empty() {
                    continue;
                }
                total += buf.len() as u64;
                let first_line = line;
                let seq = next_seq;
                next_seq += 1;
                if keep_lines {
                    line += memchr::memchr_iter(b'\n', &buf).count() as u64;
                }
                bar.set_position(bar_base + read_bytes.load(Ordering::Relaxed));
                if tx
                    .send(Block {
                        seq,
                        first_line,
                        data: buf,
                    })
                    .is_err()
                {
                    break; // every worker stopped: their error is reported below
                }
            }
            Ok((total, next_seq))
        })();
        drop(tx);
        let mut parts = Vec::with_capacity(n_threads);
        let mut worker_err = None;
        for w in workers {
            match w.join() {
                Ok(Ok(c)) => parts.push(c),
                Ok(Err(e)) => worker_err = Some(e),
                Err(_) => {
                    worker_err = Some(SourceError::Worker {
                        path: path.to_path_buf(),
                    })
                }
            }
        }
        let (total, blocks) = reading?;
        if let Some(e) = worker_err {
            return Err(e);
        }
        if let Some((d, file)) = dead {
            let mut d = d.lock().map_err(|_| SourceError::Worker {
                path: path.to_path_buf(),
            })?;
            d.file_done(file, blocks)?;
        }
        Ok((parts, total))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Subset;
    use std::io::Write;

    fn membership() -> Membership {
        Membership::new(
            vec![Subset::All, Subset::Every(2)],
            vec![(1, 0, 1), (2, 0, 2), (3, 1, 1)],
        )
        .unwrap()
    }

    fn brute(text: &[u8], m: &Membership) -> Counters {
        let mut c = Counters::for_membership(m);
        let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        if text.ends_with(b"\n") {
            lines.pop();
        }
        for l in lines {
            c.count(l, m);
        }
        c
    }

    /// Small blocks, so that a test file spans many, and `threads` counting threads.
    fn small_blocks(threads: usize, dead_letter: Option<PathBuf>) -> FileOptions {
        FileOptions {
            threads,
            block_bytes: 4096,
            dead_letter,
        }
    }

    fn same(a: &Counters, b: &Counters) {
        assert_eq!(a.records, b.records);
        assert_eq!(a.valid, b.valid);
        assert_eq!(a.unknown_household, b.unknown_household);
        assert_eq!(a.malformed, b.malformed);
        let ra = crate::ratings::compute(a, &[Subset::All, Subset::Every(2)], 5);
        let rb = crate::ratings::compute(b, &[Subset::All, Subset::Every(2)], 5);
        assert_eq!(ra, rb);
    }

    fn sample(n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..n {
            match i % 13 {
                5 => v.extend_from_slice(b"bad,record\n"),
                7 => v.extend_from_slice(b"\n"),
                9 => v.extend_from_slice(b"d,20150114,000001,04321,EP1,2\r\n"),
                _ => writeln!(v, "d{i},20150114,000001,{},EP1,{}", 100 + i % 17, i % 5).unwrap(),
            }
        }
        v
    }

    #[test]
    fn blocks_threads_and_gzip_count_like_brute_force() {
        let m = membership();
        let dir = tempfile::tempdir().unwrap();
        let mut text = sample(5000);
        text.extend_from_slice(b"last,line,without,newline,x,3");
        let plain = dir.path().join("v.csv");
        std::fs::write(&plain, &text).unwrap();
        let gz = dir.path().join("v.csv.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&text).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let want = brute(&text, &m);
        for file in [&plain, &gz] {
            for (threads, block) in [(1, 4096), (3, 4096), (2, 1 << 20)] {
                let got = count_file(
                    file,
                    &m,
                    &FileOptions {
                        threads,
                        block_bytes: block,
                        dead_letter: None,
                    },
                )
                .unwrap();
                same(&got.counters, &want);
                assert_eq!(got.bytes, text.len() as u64);
            }
        }
        assert_eq!(want.records, 5001);
    }

    #[test]
    fn dead_letters_keep_line_numbers() {
        let m = membership();
        let dir = tempfile::tempdir().unwrap();
        let text = sample(3000);
        let plain = dir.path().join("v.csv");
        std::fs::write(&plain, &text).unwrap();
        let dl = dir.path().join("dead.tsv");
        let got = count_file(&plain, &m, &small_blocks(2, Some(dl.clone()))).unwrap();
        let body = std::fs::read_to_string(&dl).unwrap();
        let mut lines: Vec<u64> = body
            .lines()
            .skip(1)
            .map(|l| {
                l.split('\t')
                    .next()
                    .unwrap()
                    .trim_start_matches("line ")
                    .parse()
                    .unwrap()
            })
            .collect();
        lines.sort();
        let want: Vec<u64> = (0..3000u64)
            .filter(|i| i % 13 == 5 || i % 13 == 7)
            .map(|i| i + 1)
            .collect();
        assert_eq!(lines, want);
        assert_eq!(got.dead_letters, want.len() as u64);
        assert_eq!(got.counters.malformed.total(), want.len() as u64);
        assert!(body.contains("\ttoo_few_fields\tbad,record"), "{body}");
    }

    #[test]
    fn regression_dead_letters_are_in_line_order_with_any_threads_and_without_cr() {
        let m = membership();
        let dir = tempfile::tempdir().unwrap();
        let mut text = sample(20_000);
        text.extend_from_slice(b"bad,crlf,record\r\n");
        let plain = dir.path().join("v.csv");
        std::fs::write(&plain, &text).unwrap();
        let dl = dir.path().join("dead.tsv");
        let mut first: Option<String> = None;
        for threads in [4, 3, 1] {
            count_file(&plain, &m, &small_blocks(threads, Some(dl.clone()))).unwrap();
            let body = std::fs::read_to_string(&dl).unwrap();
            let lines: Vec<u64> = body
                .lines()
                .skip(1)
                .map(|l| l.split('\t').next().unwrap()[5..].parse().unwrap())
                .collect();
            assert!(lines.windows(2).all(|w| w[0] < w[1]), "in line order");
            assert_eq!(*lines.last().unwrap(), 20_001);
            // the CRLF record as the counters saw it, without its \r
            assert!(
                body.ends_with("line 20001\ttoo_few_fields\tbad,crlf,record\n"),
                "{body}"
            );
            match &first {
                None => first = Some(body),
                Some(f) => assert_eq!(&body, f, "the same file with {threads} threads"),
            }
        }
    }

    /// Counts the reads made of it.
    struct CountingReader {
        inner: std::io::Cursor<Vec<u8>>,
        reads: Arc<AtomicU64>,
    }

    impl Read for CountingReader {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.read(buf)
        }
    }

    #[test]
    fn regression_a_line_without_newlines_is_read_in_doubling_blocks() {
        // 8 MiB in one line, 4 KiB blocks: the old loop read (and copied the line so far)
        // 4 KiB at a time, 2,048 reads and quadratic copying; doubling needs about a dozen
        let m = membership();
        let line = vec![b'x'; 8 << 20];
        let reads = Arc::new(AtomicU64::new(0));
        let opened = Opened {
            reader: Box::new(CountingReader {
                inner: std::io::Cursor::new(line.clone()),
                reads: reads.clone(),
            }),
            len: line.len() as u64,
            read: Arc::new(AtomicU64::new(0)),
        };
        let (counters, bytes) = count_opened(
            opened,
            Path::new("one-line.csv"),
            &m,
            1,
            4096,
            None,
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap();
        assert_eq!(counters[0].records, 1);
        assert_eq!(counters[0].malformed.total(), 1);
        assert_eq!(bytes, line.len() as u64);
        let n = reads.load(Ordering::Relaxed);
        assert!(n < 40, "{n} reads for one 8 MiB line");
    }

    #[test]
    fn a_folder_counts_like_its_files_joined_with_dead_letters_in_file_order() {
        let m = membership();
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("views");
        std::fs::create_dir(&folder).unwrap();
        let text = sample(4000);
        // four files, split mid-way through the text, the first without a final newline
        // (its last record must not run into the next file's first), one gzip
        let cuts = [0, 999, 2100, 3000, text.len()];
        let mut joined = Vec::new();
        for i in 0..4 {
            let mut part = text[cuts[i]..cuts[i + 1]].to_vec();
            if i == 0 {
                while part.last() == Some(&b'\n') {
                    part.pop();
                }
            }
            joined.extend_from_slice(&part);
            if !joined.ends_with(b"\n") {
                joined.push(b'\n');
            }
            let name = format!("part-{i}.csv{}", if i == 2 { ".gz" } else { "" });
            let bytes = if i == 2 {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&part).unwrap();
                enc.finish().unwrap()
            } else {
                part
            };
            std::fs::write(folder.join(name), bytes).unwrap();
        }
        std::fs::write(folder.join("_SUCCESS"), b"").unwrap();
        std::fs::write(folder.join(".part-0.csv.crc"), b"\x00\x01junk").unwrap();
        let want = brute(&joined, &m);
        let single = dir.path().join("dead-single.tsv");
        let joined_path = dir.path().join("joined.csv");
        std::fs::write(&joined_path, &joined).unwrap();
        count_file(&joined_path, &m, &small_blocks(1, Some(single.clone()))).unwrap();
        let single_records: Vec<String> = std::fs::read_to_string(&single)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split_once('\t').unwrap().1.to_string())
            .collect();
        for threads in [1, 2, 5] {
            let dl = dir.path().join(format!("dead-{threads}.tsv"));
            let got = count_file(&folder, &m, &small_blocks(threads, Some(dl.clone()))).unwrap();
            same(&got.counters, &want);
            let body = std::fs::read_to_string(&dl).unwrap();
            let positions: Vec<(String, u64)> = body
                .lines()
                .skip(1)
                .map(|l| {
                    let at = l.split('\t').next().unwrap();
                    let (file, line) = at.split_once(" line ").unwrap();
                    (file.to_string(), line.parse().unwrap())
                })
                .collect();
            assert!(
                positions.windows(2).all(|w| w[0] < w[1]),
                "in file, line order"
            );
            assert!(positions.iter().any(|p| p.0 == "part-2.csv.gz"));
            let records: Vec<String> = body
                .lines()
                .skip(1)
                .map(|l| l.split_once('\t').unwrap().1.to_string())
                .collect();
            assert_eq!(records, single_records, "{threads} threads");
        }
        // the joined reader (the daemon's and replay's) gives the same bytes
        let mut r = open(&folder).unwrap().reader;
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, joined);
    }

    #[test]
    fn regression_hive_partitioned_parquet_views_and_binary_cells() {
        // pyarrow's write_to_dataset(partition_cols=["event_date"]) leaves event_date out of
        // the files: the folder names give it
        use crate::dataset::{int64, strings, write_parquet};
        use arrow_array::ArrayRef;
        let m = membership();
        let dir = tempfile::tempdir().unwrap();
        let text = b"d1,20150114,000001,04321,EP1,1\nd2,20150115,000002,4321,EP1,2\nd3,20150114,000003,777,EP2,3\nd4,20150114,000004,\xff1,EP2,1\n";
        let want = brute(text, &m);
        let root = dir.path().join("views");
        for (date, rows) in [("20150114", vec![0usize, 2, 3]), ("20150115", vec![1])] {
            let folder = root.join(format!("event_date={date}"));
            std::fs::create_dir_all(&folder).unwrap();
            let lines: Vec<Vec<&[u8]>> = text
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| l.split(|&b| b == b',').collect())
                .collect();
            let (lines, rows) = (&lines, &rows);
            let pick = |j: usize| rows.iter().map(move |&r| lines[r][j]);
            let as_str = |j: usize| -> ArrayRef {
                strings(pick(j).map(|b| std::str::from_utf8(b).unwrap_or("?")))
            };
            // station_num as binary, so that the non-UTF-8 cell is kept as its bytes
            let stations: ArrayRef = std::sync::Arc::new(arrow_array::BinaryArray::from(
                pick(3).collect::<Vec<&[u8]>>(),
            ));
            let ids = int64(pick(5).map(|b| std::str::from_utf8(b).unwrap().parse().unwrap()));
            write_parquet(
                &folder.join("part-0.parquet"),
                vec![
                    ("device_id", false, as_str(0)),
                    ("event_time", false, as_str(2)),
                    ("station_num", false, stations),
                    ("prog_code", false, as_str(4)),
                    ("household_id", false, ids),
                ],
            )
            .unwrap();
        }
        let dl = dir.path().join("dead.tsv");
        let got = count_file(&root, &m, &small_blocks(2, Some(dl.clone()))).unwrap();
        same(&got.counters, &want);
        assert_eq!(got.counters.malformed.total(), 1);
        let body = std::fs::read_to_string(&dl).unwrap();
        assert!(
            body.contains("event_date=20150114/part-0.parquet line 3\tnon_ascii\td4,20150114,000004,\\xff1,EP2,1"),
            "{body}"
        );
    }

    #[test]
    fn missing_and_corrupt_files_are_named() {
        let m = membership();
        let dir = tempfile::tempdir().unwrap();
        let err = count_file(&dir.path().join("nope.csv"), &m, &FileOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.csv"), "{err}");
        let gz = dir.path().join("bad.gz");
        std::fs::write(
            &gz,
            [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7],
        )
        .unwrap();
        let err = count_file(&gz, &m, &FileOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.gz"), "{err}");
    }
}
