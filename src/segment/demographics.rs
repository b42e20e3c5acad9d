//! Reading the demographics table (SPEC 1.1) from Parquet or CSV into plain columns: the
//! household id, the seven numeric feature columns as f64, and the five categorical columns as
//! interned codes. Rows with a missing or unparseable feature value are skipped and counted
//! (or refused under `strict`); a repeated household id keeps its first usable row.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::SegmentError;
use crate::counters::StableBuild;

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
    index: HashMap<String, u32>,
}

impl Categorical {
    fn push(&mut self, value: &str) {
        let code = match self.index.get(value) {
            Some(&c) => c,
            None => {
                let c = self.values.len() as u32;
                self.values.push(value.to_string());
                self.index.insert(value.to_string(), c);
                c
            }
        };
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
    }
}

fn to_id(c: &Cell) -> Option<i64> {
    match *c {
        Cell::Int(v) => Some(v),
        Cell::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Some(f as i64),
        Cell::Str(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

fn to_number(c: &Cell) -> Option<f64> {
    let v = match *c {
        Cell::Int(v) => v as f64,
        Cell::Float(f) => f,
        Cell::Str(s) => s.trim().parse::<f64>().ok()?,
        Cell::Null => return None,
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
        let id = to_id(&row.id).ok_or_else(|| {
            let v = cell_text(&row.id);
            let why = if v.is_empty() {
                "is missing"
            } else {
                "is not a 64-bit integer"
            };
            (KEY, v, why)
        })?;
        let mut nums = [0.0; 7];
        for (i, c) in row.numeric.iter().enumerate() {
            nums[i] = to_number(c).ok_or_else(|| {
                let v = cell_text(c);
                let why = if v.is_empty() {
                    "is missing"
                } else {
                    "is not a number"
                };
                (NUMERIC[i], v, why)
            })?;
        }
        for (i, c) in row.categorical.iter().enumerate() {
            let empty = match c {
                Cell::Null => true,
                Cell::Str(s) => s.is_empty(),
                _ => false,
            };
            if empty {
                return Err((CATEGORICAL[i], String::new(), "is missing"));
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

    /// `position` names the row for messages (`line 7`, `row 6`).
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

/// Read a demographics table; Parquet when the file starts with `PAR1`, CSV otherwise.
pub fn read(path: &Path, strict: bool) -> Result<Demographics, SegmentError> {
    let mut file = File::open(path).map_err(|e| SegmentError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut magic = [0u8; 4];
    let is_parquet = {
        use std::io::Read;
        matches!(file.read(&mut magic), Ok(4)) && &magic == b"PAR1"
    };
    drop(file);
    if is_parquet {
        read_parquet(path, strict)
    } else {
        read_csv(path, strict)
    }
}

/// Split one CSV line into fields, honouring double quotes (`""` inside quotes is a quote).
fn split_csv(line: &str, out: &mut Vec<String>) -> Result<(), &'static str> {
    out.clear();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(ch) = chars.next() {
        if quoted {
            if ch == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                }
            } else {
                field.push(ch);
            }
        } else if ch == '"' && at_start {
            quoted = true;
            at_start = false;
        } else if ch == ',' {
            out.push(std::mem::take(&mut field));
            at_start = true;
        } else {
            field.push(ch);
            at_start = false;
        }
    }
    if quoted {
        return Err("has an unterminated quoted field");
    }
    out.push(field);
    Ok(())
}

fn read_csv(path: &Path, strict: bool) -> Result<Demographics, SegmentError> {
    let io = |e| SegmentError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let file = File::open(path).map_err(io)?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut fields = Vec::new();
    if reader.read_line(&mut line).map_err(io)? == 0 {
        return Err(SegmentError::EmptyTable {
            path: path.to_path_buf(),
        });
    }
    let header = line
        .trim_end_matches(['\n', '\r'])
        .trim_start_matches('\u{feff}');
    split_csv(header, &mut fields).map_err(|why| SegmentError::Csv {
        path: path.to_path_buf(),
        line: 1,
        message: format!("header {why}"),
    })?;
    let find = |name: &str| -> Result<usize, SegmentError> {
        fields
            .iter()
            .position(|f| f.trim() == name)
            .ok_or_else(|| SegmentError::MissingColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
            })
    };
    let id_col = find(KEY)?;
    let mut num_cols = [0usize; 7];
    for (i, name) in NUMERIC.iter().enumerate() {
        num_cols[i] = find(name)?;
    }
    let mut cat_cols = [0usize; 5];
    for (i, name) in CATEGORICAL.iter().enumerate() {
        cat_cols[i] = find(name)?;
    }
    let width = fields.len();
    let mut b = Builder::new(path, strict);
    let mut lineno = 1u64;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(|e| SegmentError::Csv {
            path: path.to_path_buf(),
            line: lineno + 1,
            message: e.to_string(),
        })? == 0
        {
            break;
        }
        lineno += 1;
        let text = line.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            continue;
        }
        split_csv(text, &mut fields).map_err(|why| SegmentError::Csv {
            path: path.to_path_buf(),
            line: lineno,
            message: format!("the row {why}"),
        })?;
        if fields.len() != width {
            b.out.rows_read += 1;
            let problem = (
                "(row)",
                text.to_string(),
                "has a field count unlike the header's",
            );
            b.reject(format!("line {lineno}"), problem)?;
            continue;
        }
        let cell = |i: usize| {
            if fields[i].is_empty() {
                Cell::Null
            } else {
                Cell::Str(fields[i].as_str())
            }
        };
        let row = Row {
            id: cell(id_col),
            numeric: num_cols.map(cell),
            categorical: cat_cols.map(cell),
        };
        b.push(row, || format!("line {lineno}"))?;
    }
    if b.out.rows_read == 0 {
        return Err(SegmentError::EmptyTable {
            path: path.to_path_buf(),
        });
    }
    b.finish()
}

/// A column of a record batch, its type resolved once per batch.
enum Col {
    I64(ArrayRef),
    F64(ArrayRef),
    Str(ArrayRef),
}

fn col_of(path: &Path, name: &str, arr: &ArrayRef) -> Result<Col, SegmentError> {
    let cast = |to: &DataType| {
        arrow_cast::cast(arr, to).map_err(|e| SegmentError::BadColumnType {
            path: path.to_path_buf(),
            column: name.to_string(),
            found: format!("{} ({e})", arr.data_type()),
        })
    };
    Ok(match arr.data_type() {
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
        DataType::Decimal128(..) | DataType::Decimal256(..) => Col::F64(cast(&DataType::Float64)?),
        _ => Col::Str(cast(&DataType::Utf8)?),
    })
}

impl Col {
    fn get(&self, i: usize) -> Cell<'_> {
        match self {
            Col::I64(a) if a.is_null(i) => Cell::Null,
            Col::F64(a) if a.is_null(i) => Cell::Null,
            Col::Str(a) if a.is_null(i) => Cell::Null,
            Col::I64(a) => Cell::Int(a.as_primitive::<Int64Type>().value(i)),
            Col::F64(a) => Cell::Float(a.as_primitive::<Float64Type>().value(i)),
            Col::Str(a) => Cell::Str(a.as_string::<i32>().value(i)),
        }
    }
}

fn read_parquet(path: &Path, strict: bool) -> Result<Demographics, SegmentError> {
    let pq = |e: parquet::errors::ParquetError| SegmentError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let file = File::open(path).map_err(|e| SegmentError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
    let schema = builder.schema().clone();
    let mut names: Vec<&str> = vec![KEY];
    names.extend(NUMERIC);
    names.extend(CATEGORICAL);
    for n in &names {
        if schema.field_with_name(n).is_err() {
            return Err(SegmentError::MissingColumn {
                path: path.to_path_buf(),
                column: n.to_string(),
            });
        }
    }
    let mask = ProjectionMask::columns(builder.parquet_schema(), names.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(pq)?;
    let mut b = Builder::new(path, strict);
    let mut row_base = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| SegmentError::Parquet {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let get = |name: &str| -> Result<Col, SegmentError> {
            let arr = batch
                .column_by_name(name)
                .ok_or_else(|| SegmentError::MissingColumn {
                    path: path.to_path_buf(),
                    column: name.to_string(),
                })?;
            col_of(path, name, arr)
        };
        let id = get(KEY)?;
        let mut nums = Vec::with_capacity(7);
        for n in NUMERIC {
            nums.push(get(n)?);
        }
        let mut cats = Vec::with_capacity(5);
        for n in CATEGORICAL {
            cats.push(get(n)?);
        }
        for i in 0..batch.num_rows() {
            let row = Row {
                id: id.get(i),
                numeric: std::array::from_fn(|j| nums[j].get(i)),
                categorical: std::array::from_fn(|j| cats[j].get(i)),
            };
            let n = row_base + i as u64 + 1;
            b.push(row, || format!("row {n}"))?;
        }
        row_base += batch.num_rows() as u64;
    }
    if b.out.rows_read == 0 {
        return Err(SegmentError::EmptyTable {
            path: path.to_path_buf(),
        });
    }
    b.finish()
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
    fn not_parquet_with_magic_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad.parquet", "PAR1 this is not parquet at all");
        let err = read(&p, false).unwrap_err().to_string();
        assert!(err.contains("bad.parquet"), "{err}");
    }
}
