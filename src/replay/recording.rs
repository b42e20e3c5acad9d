//! The recording file format: what `viewpulse record` writes and `viewpulse replay` reads.
//!
//! ```text
//! magic  "VPREC\0\1\n"                       8 bytes
//! u32 LE header length, then the header      bincode (standard config): Header
//! then, per record:
//!   u32 LE entry length, then the entry      bincode: Entry (partition, offset,
//!                                            timestamp ms, key, value)
//! ```
//!
//! Records are appended one whole record at a time through a buffer, so a file cut anywhere
//! (an interrupted capture, a full disk, `kill -9`) stays readable up to its last whole
//! record; the reader says how many it read when it meets a cut. Encoding and decoding reuse
//! one buffer: no allocation per record (see `benches/replay.rs`).

use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The first bytes of a recording.
pub const MAGIC: &[u8; 8] = b"VPREC\x00\x01\n";

/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

/// Largest entry accepted when reading (a corrupt length must not allocate gigabytes).
pub const MAX_ENTRY: usize = 64 << 20;

/// Largest header accepted when reading, and the most its decoding may allocate: a real
/// header is a source name and a partition list, a few hundred bytes. Without the bound, a
/// length prefix inside a corrupt header (a string or partition count of 2^40) made bincode
/// allocate that much up front and abort the process.
pub const MAX_HEADER: usize = 1 << 20;

/// Errors reading or writing a recording.
#[derive(Debug, Error)]
pub enum RecordingError {
    /// Reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing a recording failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The recording.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file does not start with the magic bytes.
    #[error("{path}: not a viewpulse recording (no VPREC header) nor a text views file")]
    NotARecording {
        /// The file.
        path: PathBuf,
    },
    /// The header cannot be decoded or has another version.
    #[error("{path}: bad recording header: {message}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An entry cannot be decoded.
    #[error("{path}: record {record} (byte {byte}) cannot be decoded: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based record number.
        record: u64,
        /// Its byte position.
        byte: u64,
        /// What is wrong.
        message: String,
    },
    /// Encoding failed (cannot happen for well-formed entries; kept so nothing panics).
    #[error("{path}: cannot encode record {record}: {message}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// 1-based record number.
        record: u64,
        /// What happened.
        message: String,
    },
}

impl RecordingError {
    /// The process exit code this error means.
    pub fn exit_code(&self) -> i32 {
        match self {
            RecordingError::Io { source, .. } => crate::exit::reading(source),
            RecordingError::Write { .. } | RecordingError::Encode { .. } => crate::exit::IO,
            RecordingError::NotARecording { .. }
            | RecordingError::Header { .. }
            | RecordingError::Corrupt { .. } => crate::exit::DATA,
        }
    }
}

/// What a recording says about itself.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Header {
    /// Format version.
    pub version: u32,
    /// Where the records came from (`kafka://HOST:PORT/TOPIC`, or a file).
    pub source: String,
    /// The source's partitions.
    pub partitions: Vec<i32>,
    /// When the capture started, Unix milliseconds.
    pub created_unix_ms: i64,
    /// The program that wrote it.
    pub writer: String,
}

/// One recorded record, borrowing its key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::BorrowDecode)]
pub struct Entry<'a> {
    /// Source partition.
    pub partition: i32,
    /// Offset in that partition.
    pub offset: i64,
    /// The record's timestamp, Unix milliseconds (-1 when it had none).
    pub timestamp_ms: i64,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// [`config`] for decoding a header: the same encoding, allocating at most [`MAX_HEADER`]
/// bytes whatever its length prefixes claim. (Entries need no limit: they borrow their bytes
/// from the buffer, so a length beyond it is an error, not an allocation.)
fn header_config() -> impl bincode::config::Config {
    config().with_limit::<MAX_HEADER>()
}

/// Writes a recording.
pub struct Writer {
    path: PathBuf,
    w: BufWriter<File>,
    buf: Vec<u8>,
    /// Records written.
    pub records: u64,
    /// Bytes written, header included.
    pub bytes: u64,
}

impl Writer {
    /// Create (truncate) `path` and write the header.
    pub fn create(path: &Path, header: &Header) -> Result<Writer, RecordingError> {
        let io = |e| RecordingError::Write {
            path: path.to_path_buf(),
            source: e,
        };
        let file = File::create(path).map_err(io)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let head =
            bincode::encode_to_vec(header, config()).map_err(|e| RecordingError::Header {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        w.write_all(MAGIC).map_err(io)?;
        w.write_all(&(head.len() as u32).to_le_bytes())
            .map_err(io)?;
        w.write_all(&head).map_err(io)?;
        Ok(Writer {
            path: path.to_path_buf(),
            w,
            buf: Vec::with_capacity(4096),
            records: 0,
            bytes: (MAGIC.len() + 4 + head.len()) as u64,
        })
    }

    /// Append one record.
    #[inline]
    pub fn write(&mut self, e: &Entry<'_>) -> Result<(), RecordingError> {
        self.buf.clear();
        bincode::encode_into_std_write(e, &mut self.buf, config()).map_err(|err| {
            RecordingError::Encode {
                path: self.path.clone(),
                record: self.records + 1,
                message: err.to_string(),
            }
        })?;
        let io = |err| RecordingError::Write {
            path: self.path.clone(),
            source: err,
        };
        self.w
            .write_all(&(self.buf.len() as u32).to_le_bytes())
            .map_err(io)?;
        self.w.write_all(&self.buf).map_err(io)?;
        self.records += 1;
        self.bytes += 4 + self.buf.len() as u64;
        Ok(())
    }

    /// Flush everything to the file (and to the disk).
    pub fn finish(mut self) -> Result<u64, RecordingError> {
        let io = |err| RecordingError::Write {
            path: self.path.clone(),
            source: err,
        };
        self.w.flush().map_err(io)?;
        self.w.get_ref().sync_all().map_err(io)?;
        Ok(self.records)
    }
}

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// At the end of the last whole record.
    Clean,
    /// The file was cut inside a record; everything before it was read.
    Truncated,
}

/// Reads a recording one entry at a time, reusing one buffer.
pub struct Reader {
    path: PathBuf,
    r: BufReader<File>,
    buf: Vec<u8>,
    /// The header.
    pub header: Header,
    /// Whole records read so far.
    pub records: u64,
    byte: u64,
    /// Set when the read has ended.
    pub end: Option<End>,
}

/// Whether `path` starts with the recording magic (false for a file too short to have it).
pub fn is_recording(path: &Path) -> Result<bool, RecordingError> {
    let mut f = File::open(path).map_err(|e| RecordingError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut m = [0u8; 8];
    match f.read_exact(&mut m) {
        Ok(()) => Ok(&m == MAGIC),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(RecordingError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Read exactly `buf.len()` bytes; `Ok(false)` on a clean end before the first byte, an
/// `UnexpectedEof` error when the end comes after some bytes.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl Reader {
    /// Open `path` and read its header.
    pub fn open(path: &Path) -> Result<Reader, RecordingError> {
        let io = |e| RecordingError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let mut r = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
        let mut m = [0u8; 8];
        let not = || RecordingError::NotARecording {
            path: path.to_path_buf(),
        };
        match read_full(&mut r, &mut m) {
            Ok(true) if &m == MAGIC => {}
            Ok(_) => return Err(not()),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Err(not()),
            Err(e) => return Err(io(e)),
        }
        let bad = |message: String| RecordingError::Header {
            path: path.to_path_buf(),
            message,
        };
        let mut len = [0u8; 4];
        if !read_full(&mut r, &mut len).map_err(|e| bad(e.to_string()))? {
            return Err(bad("the file ends before the header".into()));
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_HEADER {
            return Err(bad(format!("header length {len} is implausible")));
        }
        let mut head = vec![0u8; len];
        if !read_full(&mut r, &mut head).map_err(|e| bad(e.to_string()))? && len > 0 {
            return Err(bad("the file ends inside the header".into()));
        }
        let (header, _): (Header, usize) =
            bincode::decode_from_slice(&head, header_config()).map_err(|e| bad(e.to_string()))?;
        if header.version != VERSION {
            return Err(bad(format!(
                "format version {} (this build reads {VERSION})",
                header.version
            )));
        }
        Ok(Reader {
            path: path.to_path_buf(),
            r,
            buf: Vec::with_capacity(4096),
            header,
            records: 0,
            byte: (MAGIC.len() + 4 + len) as u64,
            end: None,
        })
    }

    /// The next entry, or `None` at the end (clean or at a cut: see [`Reader::end`]).
    #[inline]
    pub fn next_entry(&mut self) -> Result<Option<Entry<'_>>, RecordingError> {
        if self.end.is_some() {
            return Ok(None);
        }
        let io = |e| RecordingError::Io {
            path: self.path.clone(),
            source: e,
        };
        let mut len = [0u8; 4];
        match read_full(&mut self.r, &mut len) {
            Ok(true) => {}
            Ok(false) => {
                self.end = Some(End::Clean);
                return Ok(None);
            }
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                self.end = Some(End::Truncated);
                return Ok(None);
            }
            Err(e) => return Err(io(e)),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_ENTRY {
            return Err(RecordingError::Corrupt {
                path: self.path.clone(),
                record: self.records + 1,
                byte: self.byte,
                message: format!("entry length {len} is implausible"),
            });
        }
        self.buf.resize(len, 0);
        match read_full(&mut self.r, &mut self.buf) {
            Ok(true) => {}
            Ok(false) if len > 0 => {
                self.end = Some(End::Truncated);
                return Ok(None);
            }
            Ok(false) => {}
            // only the file's end is a cut; a failing disk is an error, not a shorter file
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                self.end = Some(End::Truncated);
                return Ok(None);
            }
            Err(e) => return Err(io(e)),
        }
        let at = self.byte;
        self.byte += 4 + len as u64;
        self.records += 1;
        let (e, used): (Entry<'_>, usize) = bincode::borrow_decode_from_slice(&self.buf, config())
            .map_err(|err| RecordingError::Corrupt {
                path: self.path.clone(),
                record: self.records,
                byte: at,
                message: err.to_string(),
            })?;
        if used != len {
            return Err(RecordingError::Corrupt {
                path: self.path.clone(),
                record: self.records,
                byte: at,
                message: format!("{} bytes left over", len - used),
            });
        }
        Ok(Some(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> Header {
        Header {
            version: VERSION,
            source: "kafka://h:1/t".into(),
            partitions: vec![0, 1],
            created_unix_ms: 1_795_460_400_000,
            writer: "test".into(),
        }
    }

    proptest! {
        /// Whatever is written reads back the same, and a file cut at any byte reads back
        /// exactly its whole records and says it was cut.
        #[test]
        fn round_trip_and_any_cut(
            recs in proptest::collection::vec(
                (0i32..8, 0i64..1_000_000, -1i64..2_000_000_000_000,
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                 proptest::collection::vec(any::<u8>(), 0..200)),
                0..40),
            cut_frac in 0.0f64..1.0,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r.vprec");
            let mut w = Writer::create(&path, &header()).unwrap();
            let mut ends = Vec::new();
            for (p, o, t, k, v) in &recs {
                w.write(&Entry { partition: *p, offset: *o, timestamp_ms: *t, key: k.as_deref(), value: v }).unwrap();
                ends.push(w.bytes);
            }
            assert_eq!(w.finish().unwrap(), recs.len() as u64);
            let mut r = Reader::open(&path).unwrap();
            assert_eq!(r.header, header());
            let mut n = 0;
            while let Some(e) = r.next_entry().unwrap() {
                let (p, o, t, k, v) = &recs[n];
                prop_assert_eq!((e.partition, e.offset, e.timestamp_ms), (*p, *o, *t));
                prop_assert_eq!(e.key, k.as_deref());
                prop_assert_eq!(e.value, v.as_slice());
                n += 1;
            }
            prop_assert_eq!(n, recs.len());
            prop_assert_eq!(r.end, Some(End::Clean));

            // cut somewhere after the header
            let full = std::fs::read(&path).unwrap();
            let start = 12 + u32::from_le_bytes(full[8..12].try_into().unwrap()) as usize;
            let cut = start + ((full.len() - start) as f64 * cut_frac) as usize;
            std::fs::write(&path, &full[..cut]).unwrap();
            let whole = ends.iter().filter(|&&e| e as usize <= cut).count();
            let mut r = Reader::open(&path).unwrap();
            let mut m = 0;
            while r.next_entry().unwrap().is_some() {
                m += 1;
            }
            prop_assert_eq!(m, whole);
            let expect = if ends.iter().any(|&e| e as usize == cut) || cut == start { End::Clean } else { End::Truncated };
            prop_assert_eq!(r.end, Some(expect));
        }
    }

    /// Regression: a header whose source-name length (or partition count) claimed 2^40
    /// bytes made bincode allocate that much before noticing the header is 10 bytes long, and
    /// the reader aborted the process ("memory allocation of 1099511627776 bytes failed"), or
    /// panicked with "capacity overflow" for 2^63 partitions. Found by tests/fuzz_corpus.rs.
    #[test]
    fn header_with_a_huge_length_prefix_is_refused_not_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.vprec");
        // version 1, then a varint length (253 = a u64 follows) where the source name starts,
        // or after an empty source where the partition list starts
        for (prefix, len) in [
            (&[1u8][..], 1u64 << 40),
            (&[1u8][..], u64::MAX),
            (&[1u8, 0][..], 1u64 << 40),
            (&[1u8, 0][..], u64::MAX / 2),
        ] {
            let mut head = prefix.to_vec();
            head.push(253);
            head.extend_from_slice(&len.to_le_bytes());
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&(head.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&head);
            std::fs::write(&path, &bytes).unwrap();
            let e = Reader::open(&path).err().unwrap();
            assert!(matches!(e, RecordingError::Header { .. }), "{e}");
        }
        // and a real header still reads back under the limit
        Writer::create(&path, &header()).unwrap().finish().unwrap();
        assert_eq!(Reader::open(&path).unwrap().header, header());
    }

    #[test]
    fn other_files_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("views.csv");
        std::fs::write(&p, "a,b,c\n").unwrap();
        assert!(!is_recording(&p).unwrap());
        let e = Reader::open(&p).err().unwrap().to_string();
        assert!(
            e.contains("views.csv") && e.contains("not a viewpulse recording"),
            "{e}"
        );
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&7u32.to_le_bytes());
        bytes.extend_from_slice(b"xx");
        std::fs::write(&p, &bytes).unwrap();
        let e = Reader::open(&p).err().unwrap().to_string();
        assert!(e.contains("header"), "{e}");
        // an absurd entry length is an error naming the record and byte, not an allocation
        let path = dir.path().join("r.vprec");
        let w = Writer::create(&path, &header()).unwrap();
        w.finish().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 16]);
        std::fs::write(&path, &bytes).unwrap();
        let mut r = Reader::open(&path).unwrap();
        let e = r.next_entry().err().unwrap().to_string();
        assert!(
            e.contains("record 1") && e.contains(&format!("byte {at}")),
            "{e}"
        );
    }
}
