//! View records from Parquet files with the seed's `SCHEMA` columns (`device_id, event_date,
//! event_time, station_num, prog_code, household_id`), turned into the comma-separated lines
//! that every other source hands on, so that one parser applies SPEC 1.2 to all of them: a
//! null cell is an empty field, and a record is as valid or malformed as its line would be.
//! Columns of any type Spark, pandas or Polars write for them are printed as text (integers
//! exactly, a double holding an integer as that integer, decimals as written). A cell holding
//! a line break cannot be one line: its break becomes the byte 0xFF, so the row stays one
//! record and is counted malformed (`not_ascii`) with its row number, rather than split.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

/// The columns of a view record, in record order (the seed's `SCHEMA`).
pub const COLUMNS: [&str; 6] = [
    "device_id",
    "event_date",
    "event_time",
    "station_num",
    "prog_code",
    "household_id",
];

/// A Parquet file that cannot be read as views, or a batch of it that does not decode: the
/// reader's error, found by [`crate::source`] to name the file in its message.
#[derive(Debug)]
pub struct ParquetFault {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for ParquetFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for ParquetFault {}

impl ParquetFault {
    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

/// A Parquet views file read as lines, one per row.
pub struct ParquetLines {
    path: PathBuf,
    batches: ParquetRecordBatchReader,
    /// Lines made from the last batch, not yet read.
    buf: Vec<u8>,
    at: usize,
    /// Rows turned into lines so far.
    pub rows: u64,
    /// Per column, the value a `key=value` folder gives it (`Some(None)`: a null), for the
    /// columns the file lacks.
    fixed: Vec<Option<Option<String>>>,
}

impl ParquetLines {
    /// Open `path`; a column missing from the file may come from a `key=value` folder above it
    /// (`partition`), else it is refused here, before any record is read.
    pub fn open(
        path: &Path,
        partition: &[(String, Option<String>)],
    ) -> Result<ParquetLines, ParquetFault> {
        let fault = |message: String| ParquetFault {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|e| fault(e.to_string()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| fault(format!("not a readable Parquet file: {e}")))?;
        let schema = builder.schema().clone();
        let fixed = |c: &str| {
            partition
                .iter()
                .rev()
                .find(|(k, _)| k == c)
                .map(|(_, v)| v.clone())
        };
        let missing: Vec<&str> = COLUMNS
            .iter()
            .copied()
            .filter(|c| schema.field_with_name(c).is_err() && fixed(c).is_none())
            .collect();
        if !missing.is_empty() {
            let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(fault(format!(
                "a Parquet views file needs the columns {} (the seed's SCHEMA); missing {}, found {}",
                COLUMNS.join(", "),
                missing.join(", "),
                have.join(", ")
            )));
        }
        let fixed: Vec<Option<Option<String>>> = COLUMNS
            .iter()
            .map(|c| {
                if schema.field_with_name(c).is_ok() {
                    None
                } else {
                    fixed(c)
                }
            })
            .collect();
        let present = COLUMNS
            .iter()
            .copied()
            .filter(|c| schema.field_with_name(c).is_ok());
        let mask = ProjectionMask::columns(builder.parquet_schema(), present);
        let batches = builder
            .with_projection(mask)
            .with_batch_size(16_384)
            .build()
            .map_err(|e| fault(e.to_string()))?;
        Ok(ParquetLines {
            path: path.to_path_buf(),
            batches,
            buf: Vec::with_capacity(1 << 20),
            at: 0,
            rows: 0,
            fixed,
        })
    }

    /// Turn the next batch into lines; false at the end.
    fn refill(&mut self) -> Result<bool, ParquetFault> {
        let fault = |message: String| ParquetFault {
            path: self.path.clone(),
            message,
        };
        let Some(batch) = self.batches.next() else {
            return Ok(false);
        };
        let batch = batch
            .map_err(|e| fault(format!("corrupt Parquet data after row {}: {e}", self.rows)))?;
        self.buf.clear();
        self.at = 0;
        lines_of(&batch, &self.fixed, &mut self.buf).map_err(fault)?;
        self.rows += batch.num_rows() as u64;
        Ok(true)
    }
}

impl Read for ParquetLines {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buf.len() {
            if !self.refill().map_err(ParquetFault::into_io)? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// One column of a batch, ready to print.
enum Text<'a> {
    Str(ArrayRef),
    /// Bytes as they are (not UTF-8 text: counted malformed, kept in the dead letter).
    Bin(ArrayRef),
    F64(ArrayRef),
    F32(ArrayRef),
    /// The same value on every row, from a `key=value` folder.
    Fixed(Option<&'a str>),
}

fn text_of(name: &str, a: &ArrayRef) -> Result<Text<'static>, String> {
    let cast = |to: &DataType| {
        arrow_cast::cast(a, to).map_err(|e| {
            format!(
                "column {name} of type {} cannot be read as text: {e}",
                a.data_type()
            )
        })
    };
    Ok(match a.data_type() {
        DataType::Utf8 => Text::Str(a.clone()),
        DataType::Float64 => Text::F64(a.clone()),
        DataType::Float32 => Text::F32(a.clone()),
        DataType::Float16 => Text::F64(cast(&DataType::Float64)?),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => Text::Bin(cast(&DataType::Binary)?),
        _ => Text::Str(cast(&DataType::Utf8)?),
    })
}

/// A double as a record field: an integral value as that integer (pandas writes a nullable
/// integer column as doubles), anything else in the shortest round-trip form.
fn push_float(v: f64, out: &mut Vec<u8>) {
    // from 2^53 on a double stands for several integers: printed as a double, it is malformed
    if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        out.extend_from_slice((v as i64).to_string().as_bytes());
    } else {
        out.extend_from_slice(ryu::Buffer::new().format(v).as_bytes());
    }
}

/// A cell's bytes, its line breaks made 0xFF so that the row stays one record.
fn push_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(bytes);
    for b in &mut out[start..] {
        if *b == b'\n' || *b == b'\r' {
            *b = 0xFF;
        }
    }
}

/// Append one line per row of `batch` to `out`; `fixed` gives the columns the file lacks.
fn lines_of(
    batch: &RecordBatch,
    fixed: &[Option<Option<String>>],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let cols: Vec<Text> = COLUMNS
        .iter()
        .zip(fixed)
        .map(|(name, fixed)| match fixed {
            Some(v) => Ok(Text::Fixed(v.as_deref())),
            None => {
                let a = batch
                    .column_by_name(name)
                    .ok_or_else(|| format!("column {name} is missing from a row group"))?;
                text_of(name, a)
            }
        })
        .collect::<Result<_, _>>()?;
    for i in 0..batch.num_rows() {
        for (j, c) in cols.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            match c {
                Text::Str(a) if a.is_null(i) => {}
                Text::F64(a) if a.is_null(i) => {}
                Text::F32(a) if a.is_null(i) => {}
                Text::Bin(a) if a.is_null(i) => {}
                Text::Fixed(None) => {}
                Text::Fixed(Some(v)) => push_bytes(v.as_bytes(), out),
                Text::Str(a) => push_bytes(a.as_string::<i32>().value(i).as_bytes(), out),
                Text::Bin(a) => push_bytes(a.as_binary::<i32>().value(i), out),
                Text::F64(a) => push_float(a.as_primitive::<Float64Type>().value(i), out),
                Text::F32(a) => {
                    push_float(f64::from(a.as_primitive::<Float32Type>().value(i)), out)
                }
            }
        }
        out.push(b'\n');
    }
    Ok(())
}
