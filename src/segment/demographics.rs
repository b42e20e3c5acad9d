//! Reading the demographics table (SPEC 1.1) from Parquet or CSV into plain columns: the
//! household id, the seven numeric feature columns as f64, and the five categorical columns as
//! interned codes. Rows with a missing or unparseable feature value are skipped and counted
//! (or refused under `strict`); a repeated household id keeps its first usable row.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::SegmentError;
use crate::counters::StableBuild;
use crate::dataset::{self, Part, Sniffed};

/// The numeric feature columns, in feature order (SPEC 2).
pub const NUMERIC: [&str; 7] = [
    "household_size",
    "num_adults",
    "num_generations",
    "length_residence",
    "home_market_value",
    "net_worth",
    "education_highest",
];

/// The categorical feature columns, in feature order (SPEC 2).
pub const CATEGORICAL: [&str; 5] = [
    "marital_status",
    "race_code",
    "dwelling_type",
    "home_owner_status",
    "gender_individual",
];

/// The key column.
pub const KEY: &str = "household_id";

/// How many offending rows are kept as examples.
const EXAMPLES: usize = 5;

/// One categorical column: distinct values in first-seen order, and each row's code into them.
#[derive(Debug, Clone, Default)]
pub struct Categorical {
    /// Distinct values, indexed by code.
    pub values: Vec<String>,
    /// Code of each kept row.
    pub codes: Vec<u32>,
    index: HashMap<String, u32, StableBuild>,
}

impl Categorical {
    /// The code of `value`, interned on first sight.
    fn code(&mut self, value: &str) -> u32 {
        match self.index.get(value) {
            Some(&c) => c,
            None => {
                let c = self.values.len() as u32;
                self.values.push(value.to_string());
                self.index.insert(value.to_string(), c);
                c
            }
        }
    }

    fn push(&mut self, value: &str) {
        let code = self.code(value);
        self.codes.push(code);
    }
}

/// The usable rows of a demographics table.
#[derive(Debug, Clone, Default)]
pub struct Demographics {
    /// Where it was read from.
    pub path: PathBuf,
    /// Household id of each kept row.
    pub household_id: Vec<i64>,
    /// The seven numeric columns (outer index: column in [`NUMERIC`] order).
    pub numeric: [Vec<f64>; 7],
    /// The five categorical columns (in [`CATEGORICAL`] order).
    pub categorical: [Categorical; 5],
    /// Rows read, header excluded.
    pub rows_read: u64,
    /// Rows skipped for a missing or unparseable value.
    pub skipped: u64,
    /// Rows skipped because their household id was already kept.
    pub duplicates: u64,
    /// The first few skipped rows, described.
    pub skipped_examples: Vec<String>,
}

impl Demographics {
    /// Number of kept households.
    pub fn len(&self) -> usize {
        self.household_id.len()
    }

    /// Whether no household was kept.
    pub fn is_empty(&self) -> bool {
        self.household_id.is_empty()
    }
}

/// A cell as read, before conversion.
enum Cell<'a> {
    Null,
    Int(i64),
    Float(f64),
    Str(&'a str),
    /// Bytes that are not UTF-8, shown lossily.
    NotUtf8(String),
    /// A number written exactly (a decimal, an unsigned integer above i64's range).
    Exact(String),
}

/// One parsed row, borrowed from the input.
struct Row<'a> {
    id: Cell<'a>,
    numeric: [Cell<'a>; 7],
    categorical: [Cell<'a>; 5],
}

/// Why a row is unusable: (column, value as text, reason).
type Problem = (&'static str, String, &'static str);

fn cell_text(c: &Cell) -> String {
    match c {
        Cell::Null => String::new(),
        Cell::Int(v) => v.to_string(),
        Cell::Float(v) => v.to_string(),
        Cell::Str(s) => s.to_string(),
        Cell::NotUtf8(s) | Cell::Exact(s) => s.clone(),
    }
}

/// 2^53: below it every integer is a double of its own; from it on a double stands for
/// several ids (`9007199254740993.0` reads as 2^53), so a double id there is refused.
const EXACT_IN_DOUBLE: f64 = 9_007_199_254_740_992.0;

fn integral_double(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f.abs() < EXACT_IN_DOUBLE).then_some(f as i64)
}

fn to_id(c: &Cell) -> Option<i64> {
    match *c {
        Cell::Int(v) => Some(v),
        Cell::Float(f) => integral_double(f),
        // pandas writes an integer column holding a null as doubles: `657209.0`
        Cell::Str(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(integral_double))
        }
        Cell::Exact(ref s) => s.parse::<i64>().ok(),
        _ => None,
    }
}

fn to_number(c: &Cell) -> Option<f64> {
    let v = match *c {
        Cell::Int(v) => v as f64,
        Cell::Float(f) => f,
        Cell::Str(s) => s.trim().parse::<f64>().ok()?,
        Cell::Exact(ref s) => s.parse::<f64>().ok()?,
        Cell::Null | Cell::NotUtf8(_) => return None,
    };
    v.is_finite().then_some(v)
}

/// Accumulates rows, applying the skip and duplicate rules.
struct Builder {
    out: Demographics,
    strict: bool,
    seen: HashMap<i64, (), StableBuild>,
}

impl Builder {
    fn new(path: &Path, strict: bool) -> Builder {
        Builder {
            out: Demographics {
                path: path.to_path_buf(),
                ..Demographics::default()
            },
            strict,
            seen: HashMap::default(),
        }
    }

    fn check(row: &Row) -> Result<(i64, [f64; 7]), Problem> {
        // why a cell that did not convert is unusable
        let why = |c: &Cell, otherwise: &'static str| match c {
            Cell::Null => "is missing",
            Cell::Str("") => "is missing",
            Cell::NotUtf8(_) => "is not UTF-8 text",
            _ => otherwise,
        };
        let id = to_id(&row.id).ok_or_else(|| {
            (
                KEY,
                cell_text(&row.id),
                why(&row.id, "is not a 64-bit integer"),
            )
        })?;
        let mut nums = [0.0; 7];
        for (i, c) in row.numeric.iter().enumerate() {
            nums[i] = to_number(c)
                .ok_or_else(|| (NUMERIC[i], cell_text(c), why(c, "is not a number")))?;
        }
        for (i, c) in row.categorical.iter().enumerate() {
            let bad = match c {
                Cell::Null | Cell::NotUtf8(_) => true,
                Cell::Str(s) => s.is_empty(),
                _ => false,
            };
            if bad {
                return Err((CATEGORICAL[i], cell_text(c), why(c, "is missing")));
            }
        }
        Ok((id, nums))
    }

    /// Skip an unusable row (or refuse it under `strict`); the row is already counted read.
    fn reject(&mut self, at: String, problem: Problem) -> Result<(), SegmentError> {
        let (column, value, why) = problem;
        if self.strict {
            return Err(SegmentError::BadValue {
                path: self.out.path.clone(),
                at,
                column: column.to_string(),
                value,
                why: why.to_string(),
            });
        }
        self.out.skipped += 1;
        if self.out.skipped_examples.len() < EXAMPLES {
            self.out
                .skipped_examples
                .push(format!("{at}: column {column} value {value:?} {why}"));
        }
        Ok(())
    }

    /// `position` names the row for messages (`line 7`, `row 6`, `part-1.parquet row 6`).
    fn push(&mut self, row: Row, position: impl FnOnce() -> String) -> Result<(), SegmentError> {
        self.out.rows_read += 1;
        match Self::check(&row) {
            Err(problem) => self.reject(position(), problem),
            Ok((id, nums)) => {
                if self.seen.insert(id, ()).is_some() {
                    self.out.duplicates += 1;
                    return Ok(());
                }
                self.out.household_id.push(id);
                for (i, v) in nums.into_iter().enumerate() {
                    self.out.numeric[i].push(v);
                }
                for (i, c) in row.categorical.iter().enumerate() {
                    match c {
                        Cell::Str(s) => self.out.categorical[i].push(s),
                        other => self.out.categorical[i].push(&cell_text(other)),
                    }
                }
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<Demographics, SegmentError> {
        if self.out.is_empty() {
            return Err(SegmentError::NoHouseholds {
                path: self.out.path.clone(),
                rows: self.out.rows_read,
                skipped: self.out.skipped,
                examples: self.out.skipped_examples.join("; "),
            });
        }
        Ok(self.out)
    }
}

/// Read a demographics table: a file or a folder of part files ([`dataset::files`]), each
/// Parquet when it starts with `PAR1`, else CSV (plain or gzip). Worker threads decode the
/// parts and apply the row rules to each ([`read_part`]); the parts are then merged in their
/// order ([`merge`]), so that counts, examples, the first row of a repeated household and
/// the first error under `strict` are those of reading the parts one after the other.
pub fn read(path: &Path, strict: bool) -> Result<Demographics, SegmentError> {
    let parts = dataset::files(path)?;
    let many = path.is_dir();
    let mut out = Demographics {
        path: path.to_path_buf(),
        ..Demographics::default()
    };
    let mut seen: HashMap<i64, (), StableBuild> = HashMap::default();
    let threads = crate::source::threads(0).min(parts.len()).max(1);
    std::thread::scope(|scope| -> Result<(), SegmentError> {
        // worker w reads parts w, w + threads, …; each hands its parts over in order through
        // a channel of its own, so that at most two parts a worker are held in memory
        let mut rxs = Vec::with_capacity(threads);
        for w in 0..threads {
            let (tx, rx) = crossbeam_channel::bounded::<Result<Demographics, SegmentError>>(1);
            rxs.push(rx);
            let parts = &parts;
            scope.spawn(move || {
                for part in parts.iter().skip(w).step_by(threads) {
                    if tx.send(read_part(path, part, many, strict)).is_err() {
                        break;
                    }
                }
            });
        }
        for (i, part) in parts.iter().enumerate() {
            let chunk = rxs[i % threads]
                .recv()
                .map_err(|_| SegmentError::Parquet {
                    path: part.path.clone(),
                    message: "the reading thread stopped".into(),
                })??;
            if parts.len() == 1 {
                // one part: its rows are the table's, nothing to merge
                out = Demographics {
                    path: path.to_path_buf(),
                    ..chunk
                };
            } else {
                merge(&mut out, &mut seen, chunk);
            }
        }
        Ok(())
    })?;
    if out.rows_read == 0 {
        return Err(SegmentError::EmptyTable {
            path: path.to_path_buf(),
        });
    }
    Builder {
        out,
        strict,
        seen: HashMap::default(),
    }
    .finish()
}

/// Decode one part and apply the row rules to it on its own (duplicates inside the part
/// already dropped); rows are named `row N` / `line N`, prefixed by the part's name (its
/// path in the folder `root`) when `many`.
fn read_part(
    root: &Path,
    part: &Part,
    many: bool,
    strict: bool,
) -> Result<Demographics, SegmentError> {
    let mut b = Builder::new(if many { root } else { &part.path }, strict);
    let label = |n: u64, unit: &str| {
        if many {
            format!("{} {unit} {n}", part.name)
        } else {
            format!("{unit} {n}")
        }
    };
    match decode(part)? {
        Decoded::Parquet(batches) => push_batches(&mut b, part, &batches, &label)?,
        Decoded::Csv(reader) => push_csv(&mut b, part, many, reader, &label)?,
    }
    Ok(b.out)
}

/// Append `chunk` (the next part, read by [`read_part`]) to `out`: a household already kept
/// from an earlier part is a duplicate, category codes are re-interned into `out`'s.
fn merge(out: &mut Demographics, seen: &mut HashMap<i64, (), StableBuild>, chunk: Demographics) {
    out.rows_read += chunk.rows_read;
    out.skipped += chunk.skipped;
    out.duplicates += chunk.duplicates;
    for e in chunk.skipped_examples {
        if out.skipped_examples.len() < EXAMPLES {
            out.skipped_examples.push(e);
        }
    }
    out.household_id.reserve(chunk.household_id.len());
    for j in 0..7 {
        out.numeric[j].reserve(chunk.household_id.len());
    }
    for j in 0..5 {
        out.categorical[j].codes.reserve(chunk.household_id.len());
    }
    // chunk code → out code, filled on first use so that values keep their first-seen order
    let mut remap: [Vec<Option<u32>>; 5] =
        std::array::from_fn(|j| vec![None; chunk.categorical[j].values.len()]);
    for (i, &id) in chunk.household_id.iter().enumerate() {
        if seen.insert(id, ()).is_some() {
            out.duplicates += 1;
            continue;
        }
        out.household_id.push(id);
        for j in 0..7 {
            out.numeric[j].push(chunk.numeric[j][i]);
        }
        for (j, m) in remap.iter_mut().enumerate() {
            let code = chunk.categorical[j].codes[i] as usize;
            let global = match m[code] {
                Some(g) => g,
                None => {
                    let g = out.categorical[j].code(&chunk.categorical[j].values[code]);
                    m[code] = Some(g);
                    g
                }
            };
            out.categorical[j].codes.push(global);
        }
    }
}

/// A part as a worker hands it over.
enum Decoded {
    /// The projected record batches of a Parquet file.
    Parquet(Vec<RecordBatch>),
    /// A CSV file opened (and decompressed when gzip), read by the caller.
    Csv(Box<dyn Read + Send>),
}

fn decode(part: &Part) -> Result<Decoded, SegmentError> {
    let io = |e| SegmentError::Io {
        path: part.path.clone(),
        source: e,
    };
    match dataset::sniff(&part.path).map_err(io)? {
        Sniffed::Parquet => decode_parquet(part).map(Decoded::Parquet),
        Sniffed::Gzip => {
            let f = File::open(&part.path).map_err(io)?;
            Ok(Decoded::Csv(Box::new(flate2::read::MultiGzDecoder::new(
                std::io::BufReader::with_capacity(1 << 20, f),
            ))))
        }
        Sniffed::Text => Ok(Decoded::Csv(Box::new(File::open(&part.path).map_err(io)?))),
    }
}

/// Whether `path` is a gzip file (its reading errors are the stream's).
fn part_is_gzip(path: &Path) -> bool {
    dataset::sniff(path).is_ok_and(|k| k == Sniffed::Gzip)
}

/// Every column [`read`] needs, key first.
fn needed() -> impl Iterator<Item = &'static str> {
    std::iter::once(KEY).chain(NUMERIC).chain(CATEGORICAL)
}

fn push_csv(
    b: &mut Builder,
    part: &Part,
    many: bool,
    reader: Box<dyn Read + Send>,
    label: &dyn Fn(u64, &str) -> String,
) -> Result<(), SegmentError> {
    let path = &part.path;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        // Spark writes a quote inside a quoted field as \" (its default escape); "" works too
        .escape(Some(b'\\'))
        .buffer_capacity(1 << 20)
        .from_reader(reader);
    // `line` is where the reader stood when the error has no position of its own (a gzip
    // stream cut short)
    let csv_err = |e: csv::Error, line: u64| {
        let line = e.position().map_or(line, |p| p.line());
        let message = match e.into_kind() {
            csv::ErrorKind::Io(e) if part_is_gzip(path) => format!("corrupt gzip data: {e}"),
            csv::ErrorKind::Io(e) => format!("cannot be read: {e}"),
            other => format!("{other:?}"),
        };
        SegmentError::Csv {
            path: path.clone(),
            line,
            message,
        }
    };
    let mut header = csv::ByteRecord::new();
    let has_header = match rdr.read_byte_record(&mut header) {
        Ok(h) => h,
        Err(e) => return Err(csv_err(e, rdr.position().line())),
    };
    // an empty part (a zero-byte file, an empty gzip, a lone BOM) adds no row to a folder,
    // as Spark reads one; a file given on its own must have rows
    let blank = !has_header
        || (header.len() == 1
            && header
                .get(0)
                .is_some_and(|f| f.is_empty() || f == "\u{feff}".as_bytes()));
    if blank {
        return if many {
            Ok(())
        } else {
            Err(SegmentError::EmptyTable { path: path.clone() })
        };
    }
    let names: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let f = String::from_utf8_lossy(f);
            let f = if i == 0 {
                f.trim_start_matches('\u{feff}')
            } else {
                &f
            };
            f.trim().to_string()
        })
        .collect();
    // a column absent from the file may come from a `key=value` folder above it
    enum Source<'p> {
        Field(usize),
        Fixed(Option<&'p str>),
    }
    let find = |name: &str| -> Result<Source, SegmentError> {
        match names.iter().position(|f| f == name) {
            Some(i) => Ok(Source::Field(i)),
            None => part
                .partition_value(name)
                .map(Source::Fixed)
                .ok_or_else(|| SegmentError::MissingColumn {
                    path: path.clone(),
                    column: name.to_string(),
                }),
        }
    };
    let id_col = find(KEY)?;
    let num_cols: Vec<Source> = NUMERIC.iter().map(|n| find(n)).collect::<Result<_, _>>()?;
    let cat_cols: Vec<Source> = CATEGORICAL
        .iter()
        .map(|n| find(n))
        .collect::<Result<_, _>>()?;
    let width = names.len();
    let mut rec = csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_err(e, rdr.position().line())),
        }
        let (line, next_line) = (
            rec.position().map(|p| p.line()).unwrap_or(0),
            rdr.position().line(),
        );
        if rec.len() == 1 && rec.get(0).is_some_and(|f| f.is_empty()) {
            continue; // a blank line
        }
        if rec.len() != width {
            b.out.rows_read += 1;
            let spans = next_line.saturating_sub(line);
            let why = if spans > 1 {
                "has a field count unlike the header's, and a quoted field that runs on over several lines (a quote that is not closed?)"
            } else {
                "has a field count unlike the header's"
            };
            let text = String::from_utf8_lossy(rec.as_slice()).into_owned();
            b.reject(label(line, "line"), ("(row)", text, why))?;
            continue;
        }
        fn cell<'a>(s: &Source<'a>, rec: &'a csv::ByteRecord) -> Cell<'a> {
            match s {
                Source::Fixed(None) => Cell::Null,
                Source::Fixed(Some(v)) => Cell::Str(v),
                Source::Field(i) => match rec.get(*i).map(std::str::from_utf8) {
                    None | Some(Ok("")) => Cell::Null,
                    Some(Ok(t)) => Cell::Str(t),
                    Some(Err(_)) => Cell::NotUtf8(String::from_utf8_lossy(&rec[*i]).into_owned()),
                },
            }
        }
        let row = Row {
            id: cell(&id_col, &rec),
            numeric: std::array::from_fn(|j| cell(&num_cols[j], &rec)),
            categorical: std::array::from_fn(|j| cell(&cat_cols[j], &rec)),
        };
        b.push(row, || label(line, "line"))?;
    }
    Ok(())
}

/// A column of a record batch, its type resolved once per batch.
enum Col {
    I64(ArrayRef),
    F64(ArrayRef),
    Str(ArrayRef),
    /// Bytes, UTF-8 or not (Parquet `binary` without a string annotation).
    Bin(ArrayRef),
    /// Unsigned 64-bit integers, exact (the key column).
    U64(ArrayRef),
    /// 128-bit decimals, exact (the key column): precision, scale.
    Dec(ArrayRef, u8, i8),
    /// A value from a `key=value` folder, the same on every row.
    Fixed(Option<String>),
}

fn col_of(path: &Path, name: &str, arr: &ArrayRef) -> Result<Col, SegmentError> {
    let opts = arrow_cast::CastOptions {
        safe: false,
        ..Default::default()
    };
    let exact = name == KEY;
    let cast = |to: &DataType| {
        arrow_cast::cast(arr, to).map_err(|e| SegmentError::BadColumnType {
            path: path.to_path_buf(),
            column: name.to_string(),
            found: format!("{} ({e})", arr.data_type()),
        })
    };
    Ok(match arr.data_type() {
        // an id must stay exact: no detour through doubles
        DataType::UInt64 if exact => Col::U64(arr.clone()),
        DataType::Decimal128(p, sc) if exact => Col::Dec(arr.clone(), *p, *sc),
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal256(..) if exact => {
            let a = arrow_cast::cast_with_options(arr, &DataType::Decimal128(38, 0), &opts)
                .map_err(|e| SegmentError::BadColumnType {
                    path: path.to_path_buf(),
                    column: name.to_string(),
                    found: format!("{} ({e})", arr.data_type()),
                })?;
            Col::Dec(a, 38, 0)
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => Col::Bin(cast(&DataType::Binary)?),
        DataType::Int64 => Col::I64(arr.clone()),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => Col::I64(cast(&DataType::Int64)?),
        DataType::UInt64 | DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            Col::F64(cast(&DataType::Float64)?)
        }
        DataType::Utf8 => Col::Str(arr.clone()),
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => Col::F64(cast(&DataType::Float64)?),
        // large strings, string views, dictionaries (pandas' categoricals), booleans, nulls
        _ => Col::Str(cast(&DataType::Utf8)?),
    })
}

impl Col {
    fn get(&self, i: usize) -> Cell<'_> {
        match self {
            Col::Fixed(None) => Cell::Null,
            Col::Fixed(Some(v)) => Cell::Str(v),
            Col::I64(a) if a.is_null(i) => Cell::Null,
            Col::F64(a) if a.is_null(i) => Cell::Null,
            Col::Str(a) if a.is_null(i) => Cell::Null,
            Col::Bin(a) | Col::U64(a) | Col::Dec(a, ..) if a.is_null(i) => Cell::Null,
            Col::Bin(a) => {
                let b = a.as_binary::<i32>().value(i);
                match std::str::from_utf8(b) {
                    Ok(t) => Cell::Str(t),
                    Err(_) => Cell::NotUtf8(String::from_utf8_lossy(b).into_owned()),
                }
            }
            Col::U64(a) => {
                let v = a.as_primitive::<arrow_array::types::UInt64Type>().value(i);
                match i64::try_from(v) {
                    Ok(v) => Cell::Int(v),
                    Err(_) => Cell::Exact(v.to_string()),
                }
            }
            Col::Dec(a, p, sc) => {
                let v = a
                    .as_primitive::<arrow_array::types::Decimal128Type>()
                    .value(i);
                match (*sc, i64::try_from(v)) {
                    (0, Ok(v)) => Cell::Int(v),
                    _ => Cell::Exact(<arrow_array::types::Decimal128Type as arrow_array::types::DecimalType>::format_decimal(v, *p, *sc)),
                }
            }
            Col::I64(a) => Cell::Int(a.as_primitive::<Int64Type>().value(i)),
            Col::F64(a) => Cell::Float(a.as_primitive::<Float64Type>().value(i)),
            Col::Str(a) => Cell::Str(a.as_string::<i32>().value(i)),
        }
    }
}

fn parquet_err(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> SegmentError + '_ {
    move |e| SegmentError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Decode the columns [`read`] needs of one Parquet part (those a `key=value` folder gives
/// are not in the file).
fn decode_parquet(part: &Part) -> Result<Vec<RecordBatch>, SegmentError> {
    let path = &part.path;
    let file = File::open(path).map_err(|e| SegmentError::Io {
        path: path.clone(),
        source: e,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(path))?;
    let schema = builder.schema().clone();
    let mut present = Vec::new();
    for n in needed() {
        if schema.field_with_name(n).is_ok() {
            present.push(n);
        } else if part.partition_value(n).is_none() {
            return Err(SegmentError::MissingColumn {
                path: path.clone(),
                column: n.to_string(),
            });
        }
    }
    let mask = ProjectionMask::columns(builder.parquet_schema(), present.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(parquet_err(path))?;
    reader
        .map(|batch| {
            batch.map_err(|e| SegmentError::Parquet {
                path: path.clone(),
                message: e.to_string(),
            })
        })
        .collect()
}

fn push_batches(
    b: &mut Builder,
    part: &Part,
    batches: &[RecordBatch],
    label: &dyn Fn(u64, &str) -> String,
) -> Result<(), SegmentError> {
    let path = &part.path;
    let mut row_base = 0u64;
    for batch in batches {
        let get = |name: &str| -> Result<Col, SegmentError> {
            match batch.column_by_name(name) {
                Some(arr) => col_of(path, name, arr),
                None => match part.partition_value(name) {
                    Some(v) => Ok(Col::Fixed(v.map(str::to_string))),
                    None => Err(SegmentError::MissingColumn {
                        path: path.clone(),
                        column: name.to_string(),
                    }),
                },
            }
        };
        let id = get(KEY)?;
        let nums: Vec<Col> = NUMERIC.iter().map(|n| get(n)).collect::<Result<_, _>>()?;
        let cats: Vec<Col> = CATEGORICAL
            .iter()
            .map(|n| get(n))
            .collect::<Result<_, _>>()?;
        for i in 0..batch.num_rows() {
            let row = Row {
                id: id.get(i),
                numeric: std::array::from_fn(|j| nums[j].get(i)),
                categorical: std::array::from_fn(|j| cats[j].get(i)),
            };
            let n = row_base + i as u64 + 1;
            b.push(row, || label(n, "row"))?;
        }
        row_base += batch.num_rows() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        let mut f = File::create(&p).unwrap();
        f.write_all(body.as_bytes()).unwrap();
        p
    }

    const HEADER: &str = "household_id,household_size,num_adults,num_generations,marital_status,race_code,dwelling_type,home_owner_status,length_residence,home_market_value,net_worth,gender_individual,education_highest\n";

    #[test]
    fn csv_skips_counts_and_keeps_first_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let body = format!(
            "{HEADER}1,4,2,2,M,W,S,O,10,15,8,M,3\n2,x,1,1,S,A,M,R,0,5,1,M,3\n1,1,1,1,S,A,M,R,0,5,1,M,3\n3,2,1,1,S,A,M,R,0,5,1,,3\n4,2,1,1,\"S\",A,M,R,0,5,1,F,7\n5,1,1\n"
        );
        let p = write(dir.path(), "d.csv", &body);
        let d = read(&p, false).unwrap();
        assert_eq!(d.household_id, vec![1, 4]);
        assert_eq!(d.rows_read, 6);
        assert_eq!(d.skipped, 3);
        assert_eq!(d.duplicates, 1);
        assert!(
            d.skipped_examples[0].contains("line 3"),
            "{:?}",
            d.skipped_examples
        );
        assert!(d.skipped_examples[0].contains("household_size"));
        assert_eq!(d.numeric[6], vec![3.0, 7.0]);
        assert_eq!(d.categorical[0].values, vec!["M", "S"]);
        let err = read(&p, true).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("household_size"),
            "{err}"
        );
    }

    #[test]
    fn csv_errors_name_file_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "a.csv", "household_id,household_size\n1,2\n");
        let err = read(&p, false).unwrap_err().to_string();
        assert!(err.contains("a.csv") && err.contains("num_adults"), "{err}");
        let p = write(dir.path(), "e.csv", "");
        assert!(matches!(
            read(&p, false),
            Err(SegmentError::EmptyTable { .. })
        ));
        let p = write(dir.path(), "h.csv", HEADER);
        assert!(matches!(
            read(&p, false),
            Err(SegmentError::EmptyTable { .. })
        ));
        let p = write(
            dir.path(),
            "s.csv",
            &format!("{HEADER}1,a,2,2,M,W,S,O,10,15,8,M,3\n"),
        );
        let err = read(&p, false).unwrap_err().to_string();
        assert!(err.contains("no usable household"), "{err}");
        let missing = dir.path().join("nope.csv");
        let err = read(&missing, false).unwrap_err().to_string();
        assert!(err.contains("nope.csv"), "{err}");
    }

    #[test]
    fn golden_parquet_and_csv_agree() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/input");
        let a = read(&root.join("demographics.parquet"), true).unwrap();
        let b = read(&root.join("demographics.csv"), true).unwrap();
        assert_eq!(a.len(), 300);
        assert_eq!(a.household_id, b.household_id);
        assert_eq!(a.numeric, b.numeric);
        for i in 0..5 {
            let va: Vec<&str> = a.categorical[i]
                .codes
                .iter()
                .map(|&c| a.categorical[i].values[c as usize].as_str())
                .collect();
            let vb: Vec<&str> = b.categorical[i]
                .codes
                .iter()
                .map(|&c| b.categorical[i].values[c as usize].as_str())
                .collect();
            assert_eq!(va, vb);
        }
    }

    #[test]
    fn csv_quotes_line_breaks_bom_crlf_and_backslash_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let header = HEADER.trim_end();
        let body = format!(
            "\u{feff}{header}\r\n1,4,2,2,\"M\r\nX\",W,S,O,10,15,8,M,3\r\n2,1,1,1,\"S \\\"q\\\"\",A,M,R,0,5,1,F,7\r\n3,1,1,1,\"S \"\"q\"\"\",A,M,R,0,5,1,F,7\r\n"
        );
        let p = write(dir.path(), "q.csv", &body);
        let d = read(&p, true).unwrap();
        assert_eq!(d.household_id, vec![1, 2, 3]);
        // a BOM before the header, a line break inside quotes, Spark's \" and CSV's ""
        assert_eq!(d.categorical[0].values, vec!["M\r\nX", "S \"q\""]);
        assert_eq!(d.categorical[0].codes, vec![0, 1, 1]);
        assert_eq!(d.numeric[6], vec![3.0, 7.0, 7.0]);
    }

    #[test]
    fn an_unclosed_quote_and_bytes_that_are_not_utf8_are_named_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = HEADER.as_bytes().to_vec();
        body.extend_from_slice(b"1,4,2,2,M,W,S,O,10,15,8,M,3\n2,1,1,1,\xff\xfe,A,M,R,0,5,1,F,7\n");
        body.extend_from_slice(b"3,1,1,1,\"S,A,M,R,0,5,1,F,7\n4,1,1,1,S,A,M,R,0,5,1,F,7\n");
        let p = dir.path().join("bad.csv");
        std::fs::write(&p, &body).unwrap();
        let d = read(&p, false).unwrap();
        assert_eq!(d.household_id, vec![1]);
        assert_eq!(d.skipped, 2);
        assert!(
            d.skipped_examples[0].contains("line 3") && d.skipped_examples[0].contains("UTF-8"),
            "{:?}",
            d.skipped_examples
        );
        // the quote opened on line 4 runs to the end: one row, named, and said why
        assert!(
            d.skipped_examples[1].contains("line 4")
                && d.skipped_examples[1].contains("quote that is not closed"),
            "{:?}",
            d.skipped_examples
        );
        let err = read(&p, true).unwrap_err().to_string();
        assert!(err.contains("bad.csv: line 3"), "{err}");
    }

    #[test]
    fn a_folder_of_parts_reads_like_its_rows_in_one_file() {
        // duplicates inside a part and across parts, bad rows in several parts: the merge
        // keeps the first row of a household, counts and examples as one file would
        let dir = tempfile::tempdir().unwrap();
        let mut rows = Vec::new();
        for i in 0..400u32 {
            let id = (i * 7919) % 250; // every id below 150 appears twice
            let size = if i % 37 == 5 {
                "x".to_string()
            } else {
                (i % 6 + 1).to_string()
            };
            let marital = ["M", "S", "D", "W"][(i % 4) as usize];
            rows.push(format!(
                "{id},{size},2,1,{marital},W,S,O,{},15,8,M,{}\n",
                i % 11,
                i % 5
            ));
        }
        let single = write(dir.path(), "one.csv", &format!("{HEADER}{}", rows.concat()));
        let folder = dir.path().join("parts");
        std::fs::create_dir(&folder).unwrap();
        for (k, chunk) in rows.chunks(57).enumerate() {
            write(
                &folder,
                &format!("part-{k:05}.csv"),
                &format!("{HEADER}{}", chunk.concat()),
            );
        }
        write(&folder, "_SUCCESS", "");
        let a = read(&single, false).unwrap();
        let b = read(&folder, false).unwrap();
        assert_eq!(a.household_id, b.household_id);
        assert_eq!(a.numeric, b.numeric);
        for j in 0..5 {
            assert_eq!(a.categorical[j].values, b.categorical[j].values);
            assert_eq!(a.categorical[j].codes, b.categorical[j].codes);
        }
        assert_eq!(
            (a.rows_read, a.skipped, a.duplicates),
            (b.rows_read, b.skipped, b.duplicates)
        );
        assert!(
            a.duplicates > 100 && a.skipped > 5,
            "{} {}",
            a.duplicates,
            a.skipped
        );
        assert_eq!(a.skipped_examples.len(), b.skipped_examples.len());
        // the folder's examples name the part and its line
        assert!(
            b.skipped_examples[0].starts_with("part-00000.csv line 7:"),
            "{:?}",
            b.skipped_examples
        );
        // under --strict, the first bad row in part order is the error, named by its part
        let err = read(&folder, true).unwrap_err().to_string();
        assert!(
            err.contains("part-00000.csv") && err.contains("line 7"),
            "{err}"
        );
    }

    /// A Parquet file of the golden columns, `id` and `race_code` replaced.
    fn parquet_with(dir: &Path, name: &str, id: ArrayRef, race: Option<ArrayRef>) -> PathBuf {
        use crate::dataset::{doubles, strings, write_parquet};
        let n = id.len();
        let mut cols: Vec<(&str, bool, ArrayRef)> = vec![(KEY, true, id)];
        for c in NUMERIC {
            cols.push((c, false, doubles((0..n).map(|i| (i % 5) as f64))));
        }
        for c in CATEGORICAL {
            let a = match (c, &race) {
                ("race_code", Some(r)) => r.clone(),
                _ => strings((0..n).map(|i| ["A", "B"][i % 2])),
            };
            cols.push((c, true, a));
        }
        let p = dir.join(name);
        write_parquet(&p, cols).unwrap();
        p
    }

    #[test]
    fn regression_unsigned_and_decimal_ids_stay_exact() {
        // above 2^53 a double cannot tell neighbouring ids apart: they were merged as duplicates
        let dir = tempfile::tempdir().unwrap();
        let base = 1u64 << 53;
        let mut ids: Vec<u64> = (0..6).map(|i| base + i).collect();
        ids.push(u64::MAX);
        let p = parquet_with(
            dir.path(),
            "u.parquet",
            std::sync::Arc::new(arrow_array::UInt64Array::from(ids.clone())),
            None,
        );
        let d = read(&p, false).unwrap();
        let want: Vec<i64> = ids[..6].iter().map(|&v| v as i64).collect();
        assert_eq!(d.household_id, want);
        assert_eq!((d.duplicates, d.skipped), (0, 1));
        assert!(
            d.skipped_examples[0].contains("\"18446744073709551615\" is not a 64-bit integer"),
            "{:?}",
            d.skipped_examples
        );
        let dec = arrow_array::Decimal128Array::from(vec![
            base as i128,
            base as i128 + 1,
            i64::MAX as i128 + 1,
        ])
        .with_precision_and_scale(20, 0)
        .unwrap();
        let p = parquet_with(dir.path(), "d.parquet", std::sync::Arc::new(dec), None);
        let d = read(&p, false).unwrap();
        assert_eq!(d.household_id, vec![base as i64, base as i64 + 1]);
        assert!(
            d.skipped_examples[0].contains("9223372036854775808"),
            "{:?}",
            d.skipped_examples
        );
    }

    #[test]
    fn regression_bytes_that_are_not_utf8_are_named_not_missing() {
        let dir = tempfile::tempdir().unwrap();
        let race: ArrayRef = std::sync::Arc::new(arrow_array::BinaryArray::from(vec![
            &b"W"[..],
            &b"\xff\xfe"[..],
            &b"B"[..],
        ]));
        let ids = std::sync::Arc::new(arrow_array::Int64Array::from(vec![1, 2, 3]));
        let p = parquet_with(dir.path(), "b.parquet", ids, Some(race));
        let d = read(&p, false).unwrap();
        assert_eq!(d.household_id, vec![1, 3]);
        assert_eq!(d.categorical[1].values, vec!["W", "B"]);
        assert!(
            d.skipped_examples[0].contains("row 2: column race_code")
                && d.skipped_examples[0].contains("is not UTF-8 text"),
            "{:?}",
            d.skipped_examples
        );
    }

    #[test]
    fn regression_an_empty_part_adds_no_row_and_pandas_float_ids_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("parts");
        std::fs::create_dir(&folder).unwrap();
        write(&folder, "part-0.csv", &format!("{HEADER}657209.0,4,2,2,M,W,S,O,10,15,8,M,3\n9007199254740993.0,4,2,2,M,W,S,O,10,15,8,M,3\n"));
        write(&folder, "part-1.csv", "");
        write(&folder, "part-2.csv", "\u{feff}");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, b"").unwrap();
        std::fs::write(folder.join("part-3.csv.gz"), enc.finish().unwrap()).unwrap();
        write(
            &folder,
            "part-4.csv",
            &format!("{HEADER}5,1,1,1,S,A,M,R,0,5,1,F,7\n"),
        );
        let d = read(&folder, false).unwrap();
        // a double above 2^53 stands for several ids: refused
        assert_eq!(d.household_id, vec![657209, 5]);
        assert_eq!(d.skipped, 1);
        // on its own, an empty file is still an empty table
        assert!(matches!(
            read(&folder.join("part-1.csv"), false),
            Err(SegmentError::EmptyTable { .. })
        ));
    }

    #[test]
    fn regression_a_cut_gzip_csv_names_the_line_it_reached() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = HEADER.to_string();
        for i in 0..2000 {
            body.push_str(&format!("{i},4,2,2,M,W,S,O,10,15,8,M,3\n"));
        }
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, body.as_bytes()).unwrap();
        let gz = enc.finish().unwrap();
        let p = dir.path().join("d.csv.gz");
        std::fs::write(&p, &gz[..gz.len() - 6]).unwrap();
        let err = read(&p, false).unwrap_err().to_string();
        assert!(err.contains("corrupt gzip data"), "{err}");
        assert!(!err.contains("line 0:"), "{err}");
    }

    #[test]
    fn not_parquet_with_magic_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad.parquet", "PAR1 this is not parquet at all");
        let err = read(&p, false).unwrap_err().to_string();
        assert!(err.contains("bad.parquet"), "{err}");
    }
}
