//! Inputs and outputs the way other tools hand them over. An input path is a file or a folder:
//! a folder is a dataset of part files as Spark, pyarrow, Polars and Hive write them
//! (`part-*.parquet`, `_SUCCESS`, `.crc` files, `key=value/` partition folders), read in the
//! order of their relative paths. [`files`] lists the parts with the partition values their
//! folders carry; [`sniff`] tells a part's format by its first bytes. [`write_parquet`]
//! writes the typed Parquet outputs (snappy, as Spark writes by default) that pandas, pyarrow,
//! Polars and Spark read with no options.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use thiserror::Error;

/// Errors of listing a dataset or writing a Parquet file.
#[derive(Debug, Error)]
pub enum DatasetError {
    /// The path or a folder of the dataset cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A folder with no data file in it.
    #[error("{path}: the folder holds no data file ({skipped} ignored: names starting with `.` or `_`, such as _SUCCESS and .crc files)")]
    Empty {
        /// The folder.
        path: PathBuf,
        /// Entries ignored.
        skipped: usize,
    },
    /// A file or folder reached twice through symbolic links (a link to an ancestor loops
    /// for ever; a link to a sibling would read its files twice).
    #[error("{path}: {first} is reached twice through symbolic links, so its files would be read twice (or for ever); remove the link or give the folder it points to")]
    Twice {
        /// The dataset folder.
        path: PathBuf,
        /// The entry reached again, relative to the folder.
        first: String,
    },
    /// A Parquet output could not be written.
    #[error("{path}: cannot write Parquet: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The writer's message.
        message: String,
    },
}

impl DatasetError {
    /// The process exit code this error means.
    pub fn exit_code(&self) -> i32 {
        match self {
            DatasetError::Io { source, .. } => crate::exit::reading(source),
            DatasetError::Empty { .. } => crate::exit::NO_INPUT,
            DatasetError::Twice { .. } => crate::exit::DATA,
            DatasetError::Write { .. } => crate::exit::IO,
        }
    }

    /// The file or folder it is about.
    pub fn path(&self) -> &Path {
        match self {
            DatasetError::Io { path, .. }
            | DatasetError::Empty { path, .. }
            | DatasetError::Twice { path, .. }
            | DatasetError::Write { path, .. } => path,
        }
    }

    /// Why, in one phrase (the error without its path).
    pub fn cause(&self) -> String {
        match self {
            DatasetError::Io { source, .. } => source.to_string(),
            DatasetError::Empty { .. } => "the folder holds no data file".into(),
            DatasetError::Twice { first, .. } => {
                format!("{first} is reached twice through symbolic links")
            }
            DatasetError::Write { message, .. } => message.clone(),
        }
    }
}

/// One data file of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The file.
    pub path: PathBuf,
    /// Its path relative to the dataset folder (its file name for a single file), for messages.
    pub name: String,
    /// Partition values from `key=value` folders above it, outermost first; `None` for Hive's
    /// `__HIVE_DEFAULT_PARTITION__` (a null).
    pub partition: Vec<(String, Option<String>)>,
}

impl Part {
    /// The value of partition column `key`, if a folder above the part sets it: `Some(None)`
    /// for a null partition.
    pub fn partition_value(&self, key: &str) -> Option<Option<&str>> {
        self.partition
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref())
    }
}

/// Whether a folder entry is bookkeeping, not data: Spark's `_SUCCESS`, `_temporary`,
/// `_committed_…`, Hadoop's `.part-….crc`, editors' and the OS's hidden files.
pub fn ignored(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

/// Decode Hive's `%XX` escapes of a partition value.
fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(n) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(n);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The data files of `path`: the file itself, or every file under the folder in the order of
/// their relative paths (byte order, as Spark lists part files), skipping [`ignored`] names
/// at every level; `key=value` folders give their parts a partition value.
pub fn files(path: &Path) -> Result<Vec<Part>, DatasetError> {
    let meta = std::fs::metadata(path).map_err(|e| DatasetError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    if !meta.is_dir() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        return Ok(vec![Part {
            path: path.to_path_buf(),
            name,
            partition: Vec::new(),
        }]);
    }
    let mut out = Vec::new();
    let mut walk_state = Walk {
        root: path,
        skipped: 0,
        seen: std::collections::HashSet::new(),
    };
    if let Ok(c) = std::fs::canonicalize(path) {
        walk_state.seen.insert(c);
    }
    walk_state.walk(path, "", &mut Vec::new(), &mut out)?;
    let skipped = walk_state.skipped;
    if out.is_empty() {
        return Err(DatasetError::Empty {
            path: path.to_path_buf(),
            skipped,
        });
    }
    Ok(out)
}

/// The state of listing one dataset folder.
struct Walk<'a> {
    root: &'a Path,
    /// Entries ignored as bookkeeping.
    skipped: usize,
    /// Canonical paths of the folders and files listed so far.
    seen: std::collections::HashSet<PathBuf>,
}

impl Walk<'_> {
    fn walk(
        &mut self,
        dir: &Path,
        prefix: &str,
        partition: &mut Vec<(String, Option<String>)>,
        out: &mut Vec<Part>,
    ) -> Result<(), DatasetError> {
        let io = |e| DatasetError::Io {
            path: dir.to_path_buf(),
            source: e,
        };
        let mut entries: Vec<(Vec<u8>, String, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io)? {
            let e = e.map_err(io)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if ignored(&name) {
                self.skipped += 1;
                continue;
            }
            entries.push((name.as_bytes().to_vec(), name, e.path()));
        }
        entries.sort();
        for (_, name, p) in entries {
            let meta = std::fs::metadata(&p).map_err(|e| DatasetError::Io {
                path: p.clone(),
                source: e,
            })?;
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let canonical = std::fs::canonicalize(&p).map_err(|e| DatasetError::Io {
                path: p.clone(),
                source: e,
            })?;
            if !self.seen.insert(canonical) {
                return Err(DatasetError::Twice {
                    path: self.root.to_path_buf(),
                    first: rel,
                });
            }
            if meta.is_dir() {
                let pushed = match name.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        let v = (v != "__HIVE_DEFAULT_PARTITION__").then(|| unescape(v));
                        partition.push((unescape(k), v));
                        true
                    }
                    _ => false,
                };
                self.walk(&p, &rel, partition, out)?;
                if pushed {
                    partition.pop();
                }
            } else {
                out.push(Part {
                    path: p,
                    name: rel,
                    partition: partition.clone(),
                });
            }
        }
        Ok(())
    }
}

/// A data file's format, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// Starts with `PAR1`.
    Parquet,
    /// Starts with gzip's magic bytes.
    Gzip,
    /// Anything else: text.
    Text,
}

/// Tell `path`'s format by its first bytes.
pub fn sniff(path: &Path) -> io::Result<Sniffed> {
    let mut f = File::open(path)?;
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(if n == 4 && &head == b"PAR1" {
        Sniffed::Parquet
    } else if n >= 2 && head[..2] == [0x1f, 0x8b] {
        Sniffed::Gzip
    } else {
        Sniffed::Text
    })
}

/// Which files an output is written as (`--format csv`, `parquet` or `csv,parquet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formats {
    /// The SPEC's CSV files.
    pub csv: bool,
    /// Typed Parquet files beside (or instead of) them.
    pub parquet: bool,
}

impl Default for Formats {
    fn default() -> Self {
        Formats {
            csv: true,
            parquet: false,
        }
    }
}

impl std::str::FromStr for Formats {
    type Err = String;

    fn from_str(s: &str) -> Result<Formats, String> {
        let mut f = Formats {
            csv: false,
            parquet: false,
        };
        for part in s.split(',').map(str::trim) {
            match part.to_ascii_lowercase().as_str() {
                "csv" => f.csv = true,
                "parquet" => f.parquet = true,
                other => {
                    return Err(format!(
                        "unknown format {other:?}: give csv, parquet or csv,parquet"
                    ))
                }
            }
        }
        Ok(f)
    }
}

impl std::fmt::Display for Formats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.csv, self.parquet) {
            (true, true) => write!(f, "csv,parquet"),
            (false, true) => write!(f, "parquet"),
            _ => write!(f, "csv"),
        }
    }
}

/// A non-null string column.
pub fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(arrow_array::StringArray::from_iter_values(values))
}

/// A non-null int32 column.
pub fn int32(values: impl Iterator<Item = i32>) -> ArrayRef {
    Arc::new(arrow_array::Int32Array::from_iter_values(values))
}

/// A non-null int64 column.
pub fn int64(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(arrow_array::Int64Array::from_iter_values(values))
}

/// A non-null double column.
pub fn doubles(values: impl Iterator<Item = f64>) -> ArrayRef {
    Arc::new(arrow_array::Float64Array::from_iter_values(values))
}

/// Write one Parquet file of `columns` (name, nullable, values), snappy-compressed, in row
/// groups of at most a million rows. The file is created at `path` (callers stage it).
pub fn write_parquet(
    path: &Path,
    columns: Vec<(&str, bool, ArrayRef)>,
) -> Result<(), DatasetError> {
    let err = |message: String| DatasetError::Write {
        path: path.to_path_buf(),
        message,
    };
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, nullable, a)| Field::new(*name, a.data_type().clone(), *nullable))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|c| c.2).collect())
        .map_err(|e| err(e.to_string()))?;
    let file = File::create(path).map_err(|e| err(e.to_string()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_size(1 << 20)
        .build();
    let mut w = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| err(e.to_string()))?;
    w.write(&batch).map_err(|e| err(e.to_string()))?;
    let file = w.into_inner().map_err(|e| err(e.to_string()))?;
    file.sync_all().map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn a_spark_folder_lists_its_parts_in_order_without_bookkeeping() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for n in [
            "part-00001-abc.snappy.parquet",
            "part-00000-abc.snappy.parquet",
            "_SUCCESS",
            ".part-00000-abc.snappy.parquet.crc",
            "_temporary/0/part-9.parquet",
            "dwelling_type=S/part-0.parquet",
            "dwelling_type=A%2FB/part-0.parquet",
            "dwelling_type=__HIVE_DEFAULT_PARTITION__/part-0.parquet",
            "sub/part-0.parquet",
        ] {
            touch(&root.join(n));
        }
        let got = files(root).unwrap();
        let names: Vec<&str> = got.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dwelling_type=A%2FB/part-0.parquet",
                "dwelling_type=S/part-0.parquet",
                "dwelling_type=__HIVE_DEFAULT_PARTITION__/part-0.parquet",
                "part-00000-abc.snappy.parquet",
                "part-00001-abc.snappy.parquet",
                "sub/part-0.parquet",
            ]
        );
        assert_eq!(got[0].partition_value("dwelling_type"), Some(Some("A/B")));
        assert_eq!(got[1].partition_value("dwelling_type"), Some(Some("S")));
        assert_eq!(got[2].partition_value("dwelling_type"), Some(None));
        assert_eq!(got[3].partition_value("dwelling_type"), None);
        assert!(got[5].partition.is_empty());
    }

    #[test]
    fn an_empty_folder_and_a_missing_path_are_named() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("_SUCCESS"));
        let err = files(d.path()).unwrap_err();
        assert!(matches!(err, DatasetError::Empty { skipped: 1, .. }));
        assert!(err.to_string().contains("holds no data file"), "{err}");
        assert_eq!(err.exit_code(), crate::exit::NO_INPUT);
        let err = files(&d.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert_eq!(err.exit_code(), crate::exit::NO_INPUT);
    }

    #[test]
    fn regression_a_symlink_loop_or_a_second_way_to_a_folder_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("set");
        touch(&root.join("a/part-0.parquet"));
        std::os::unix::fs::symlink(&root, root.join("a/up")).unwrap();
        let err = files(&root).unwrap_err();
        assert!(matches!(err, DatasetError::Twice { .. }), "{err}");
        assert!(err.to_string().contains("a/up is reached twice"), "{err}");
        assert_eq!(err.exit_code(), crate::exit::DATA);
        std::fs::remove_file(root.join("a/up")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("b")).unwrap();
        let err = files(&root).unwrap_err();
        assert!(err.to_string().contains("b is reached twice"), "{err}");
        std::fs::remove_file(root.join("b")).unwrap();
        // a link to data outside the folder is read once, like a file of the folder
        touch(&d.path().join("outside/part-9.parquet"));
        std::os::unix::fs::symlink(d.path().join("outside"), root.join("c")).unwrap();
        let names: Vec<String> = files(&root).unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["a/part-0.parquet", "c/part-9.parquet"]);
    }

    #[test]
    fn one_file_is_its_own_dataset_and_sniffing_tells_formats() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v.csv");
        std::fs::write(&p, b"a,b\n").unwrap();
        let got = files(&p).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "v.csv");
        assert_eq!(sniff(&p).unwrap(), Sniffed::Text);
        std::fs::write(&p, b"PAR1....").unwrap();
        assert_eq!(sniff(&p).unwrap(), Sniffed::Parquet);
        std::fs::write(&p, [0x1f, 0x8b, 8]).unwrap();
        assert_eq!(sniff(&p).unwrap(), Sniffed::Gzip);
        std::fs::write(&p, b"").unwrap();
        assert_eq!(sniff(&p).unwrap(), Sniffed::Text);
    }

    #[test]
    fn formats_parse_and_refuse() {
        let f: Formats = "csv,parquet".parse().unwrap();
        assert!(f.csv && f.parquet);
        assert_eq!(f.to_string(), "csv,parquet");
        let f: Formats = "Parquet".parse().unwrap();
        assert!(!f.csv && f.parquet);
        assert_eq!(Formats::default().to_string(), "csv");
        let err = "csv,json".parse::<Formats>().unwrap_err();
        assert!(err.contains("\"json\""), "{err}");
        assert!("".parse::<Formats>().is_err());
    }

    #[test]
    fn hive_escapes_are_decoded() {
        assert_eq!(unescape("a%3Db"), "a=b");
        assert_eq!(unescape("100%"), "100%");
        assert_eq!(unescape("%zz"), "%zz");
        assert_eq!(unescape("x%2"), "x%2");
    }
}
