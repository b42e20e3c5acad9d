//! Seeded synthetic data in the SPEC formats, for demos, tests and load: demographics whose
//! columns are correlated through a few hidden household archetypes, and view records where
//! each archetype over-watches its own few stations on top of a Zipf-like general popularity,
//! with households without demographics and every kind of malformed record mixed in. The
//! planted truth is written next to the data (`archetypes.json`, `households_truth.csv`) so a
//! test can check that segmentation and ratings bring it back. Same seed, same bytes: views
//! are produced in fixed blocks, each with its own generator, on any number of threads, and
//! written in block order.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::progress::{self, Unit};

/// Settings of `viewpulse generate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerateConfig {
    /// Households with demographics.
    pub households: u64,
    /// Records of `views_static.csv`.
    pub static_records: u64,
    /// Records of `views_stream.csv`.
    pub stream_records: u64,
    /// Distinct stations.
    pub stations: u32,
    /// Random seed: the same settings and seed write the same bytes.
    pub seed: u64,
    /// Hidden household archetypes.
    pub archetypes: u32,
    /// Share of malformed view records, in [0, 1).
    pub malformed_fraction: f64,
    /// Share of view records from households without demographics, in [0, 1).
    pub unknown_fraction: f64,
    /// Worker threads for the views (0 = one per core); does not change the bytes.
    pub threads: usize,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            households: 10_000,
            static_records: 200_000,
            stream_records: 100_000,
            stations: 400,
            seed: 42,
            archetypes: 6,
            malformed_fraction: 0.01,
            unknown_fraction: 0.05,
            threads: 0,
        }
    }
}

/// Archetype stations per archetype.
pub const STATIONS_PER_ARCHETYPE: usize = 5;
/// Probability that a household of an archetype watches one of its archetype's stations.
const OVERWATCH: f64 = 0.35;
/// Records per block (the unit of seeding and of parallel work).
const BLOCK: u64 = 1 << 18;

impl GenerateConfig {
    /// Refuse impossible settings, naming the option.
    pub fn validate(&self) -> Result<(), GenerateError> {
        let bad = |m: String| Err(GenerateError::Settings(m));
        if self.households == 0 {
            return bad("--households must be at least 1".into());
        }
        if self.households > 100_000_000 {
            return bad("--households must be at most 100000000".into());
        }
        if self.threads > crate::source::MAX_THREADS {
            return bad(format!(
                "--threads must be at most {} (0 = one per core)",
                crate::source::MAX_THREADS
            ));
        }
        if self.archetypes == 0 || self.archetypes > 64 {
            return bad("--archetypes must be between 1 and 64".into());
        }
        let min_stations = (self.archetypes as usize * STATIONS_PER_ARCHETYPE * 2).max(10);
        if (self.stations as usize) < min_stations || self.stations > 80_000 {
            return bad(format!(
                "--stations must be between {min_stations} and 80000 for {} archetypes",
                self.archetypes
            ));
        }
        for (name, v) in [
            ("--malformed-fraction", self.malformed_fraction),
            ("--unknown-fraction", self.unknown_fraction),
        ] {
            if !(0.0..1.0).contains(&v) {
                return bad(format!("{name} must be in [0, 1), got {v}"));
            }
        }
        Ok(())
    }
}

/// What `generate` wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generated {
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Households with demographics.
    pub households: u64,
    /// Static view records.
    pub static_records: u64,
    /// Stream view records.
    pub stream_records: u64,
    /// Malformed records among both.
    pub malformed: u64,
    /// Bytes of view records written.
    pub bytes: u64,
    /// Wall-clock time.
    pub elapsed_ms: f64,
}

/// Errors of `generate`.
#[derive(Debug, Error)]
pub enum GenerateError {
    /// An impossible setting.
    #[error("{0}")]
    Settings(String),
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing the Parquet file failed.
    #[error("cannot write {path}: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The encoder's message.
        message: String,
    },
    /// A worker thread died.
    #[error("a generator thread panicked while writing {path}")]
    Worker {
        /// The file.
        path: PathBuf,
    },
}

impl GenerateError {
    /// The process exit code this error means.
    pub fn exit_code(&self) -> i32 {
        match self {
            GenerateError::Settings(_) => crate::exit::USAGE,
            GenerateError::Io { .. } | GenerateError::Parquet { .. } => crate::exit::IO,
            GenerateError::Worker { .. } => crate::exit::SOFTWARE,
        }
    }
}

/// One planted archetype, as written to `archetypes.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchetypeTruth {
    /// Archetype number.
    pub id: u32,
    /// A readable name.
    pub name: String,
    /// Share of households drawn from it.
    pub share: f64,
    /// Households of it.
    pub households: u64,
    /// The stations it over-watches.
    pub stations: Vec<String>,
    /// Each numeric column's centre in its own units (before the noise, the rounding and the
    /// clamping to the column's range).
    #[serde(default)]
    pub numeric_centres: std::collections::BTreeMap<String, f64>,
    /// Each categorical column's most likely value.
    #[serde(default)]
    pub modes: std::collections::BTreeMap<String, String>,
}

/// `archetypes.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    /// The seed.
    pub seed: u64,
    /// Households with demographics.
    pub households: u64,
    /// The archetypes.
    pub archetypes: Vec<ArchetypeTruth>,
    /// Every station, most popular first (general population).
    pub stations: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// randomness

struct Rng(Xoshiro256PlusPlus);

impl Rng {
    fn new(seed: u64, stream: u64, index: u64) -> Rng {
        let mix = crate::counters::household_hash(seed as i64)
            ^ crate::counters::household_hash((stream << 40 ^ index) as i64).rotate_left(17);
        Rng(Xoshiro256PlusPlus::seed_from_u64(mix))
    }
    #[inline]
    fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [0, 1).
    #[inline]
    fn f64(&mut self) -> f64 {
        (self.u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Uniform in [0, n).
    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        ((self.u64() as u128 * n as u128) >> 64) as u64
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.f64().max(1e-300);
        let v = self.f64();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    /// Index drawn from cumulative weights.
    #[inline]
    fn pick(&mut self, cumulative: &[f64]) -> usize {
        let total = cumulative.last().copied().unwrap_or(0.0);
        let x = self.f64() * total;
        cumulative
            .partition_point(|&c| c <= x)
            .min(cumulative.len() - 1)
    }
}

fn cumulative(weights: &[f64]) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// the world: archetypes, households, stations

const MARITAL: [&str; 4] = ["M", "S", "B", "A"];
const RACE: [&str; 5] = ["W", "B", "H", "A", "O"];
const DWELLING: [&str; 3] = ["S", "M", "P"];
const OWNER: [&str; 2] = ["O", "R"];
const GENDER: [&str; 3] = ["F", "M", "U"];
/// (low, high) of the numeric columns in the seed's data, in SPEC 2's numeric order.
const RANGES: [(i64, i64); 7] = [(1, 8), (1, 6), (1, 3), (0, 15), (1, 27), (1, 9), (1, 7)];

struct Archetype {
    /// Cumulative weights of each categorical column's values.
    cats: [Vec<f64>; 5],
    /// Centre of each numeric column in [0, 1].
    centre: [f64; 7],
    /// Indices (into the station list) it over-watches.
    stations: Vec<usize>,
    name: String,
}

struct World {
    archetypes: Vec<Archetype>,
    /// Cumulative archetype shares.
    shares: Vec<f64>,
    /// Station numbers, most popular first.
    stations: Vec<String>,
    /// Cumulative Zipf weights over `stations`.
    zipf: Vec<f64>,
    /// Household ids are `1 + (i * mult + add) mod modulus`: distinct, scattered.
    modulus: u64,
    mult: u64,
    add: u64,
    /// Archetype of household i.
    archetype_of: Vec<u8>,
    /// Activity class of household i (views weight 1, 2, 4 or 8).
    activity: Vec<u8>,
}

impl World {
    fn household_id(&self, i: u64) -> i64 {
        (1 + (i.wrapping_mul(self.mult).wrapping_add(self.add) & (self.modulus - 1))) as i64
    }

    /// Ids of households without demographics: above every real id.
    fn unknown_id(&self, j: u64) -> i64 {
        (self.modulus + 1 + j * 3) as i64
    }
}

fn peaked(n: usize, mode: usize, peak: f64, rng: &mut Rng) -> Vec<f64> {
    let mut w: Vec<f64> = (0..n).map(|_| 0.2 + rng.f64()).collect();
    let rest: f64 = w
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != mode)
        .map(|(_, v)| v)
        .sum();
    for (i, v) in w.iter_mut().enumerate() {
        *v = if i == mode {
            peak
        } else {
            (1.0 - peak) * *v / rest
        };
    }
    cumulative(&w)
}

fn build_world(cfg: &GenerateConfig) -> World {
    let mut rng = Rng::new(cfg.seed, 0, 0);
    let n_arch = cfg.archetypes as usize;
    // stations: distinct 5-digit numbers, every 20th a 4-digit one with a leading zero, and
    // one pair that differs only by that zero
    let n_st = cfg.stations as usize;
    let mut seen = HashSet::new();
    let mut stations: Vec<String> = Vec::with_capacity(n_st);
    while stations.len() < n_st {
        let i = stations.len();
        let s = if i == 7 {
            // the twin of station 3 without its leading zero
            stations[3_usize].trim_start_matches('0').to_string()
        } else if i % 20 == 3 {
            format!("0{}", 1000 + rng.below(9000))
        } else {
            format!("{}", 10_000 + rng.below(90_000))
        };
        if seen.insert(s.clone()) {
            stations.push(s);
        } else if i == 7 {
            stations.push(format!("{}", 10_000 + rng.below(90_000)));
        }
    }
    let zipf = cumulative(
        &(0..n_st)
            .map(|r| 1.0 / ((r + 1) as f64).powf(1.1))
            .collect::<Vec<_>>(),
    );
    // archetype stations: disjoint, from the middle and tail of the popularity order
    let lo = n_st / 5;
    let mut pool: Vec<usize> = (lo..n_st).collect();
    for i in (1..pool.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        pool.swap(i, j);
    }
    let names = [
        "married owners in houses",
        "single renters in flats",
        "retired couples",
        "young families",
        "students sharing",
        "empty nesters",
    ];
    let mut archetypes = Vec::with_capacity(n_arch);
    let mut raw_shares = Vec::with_capacity(n_arch);
    for a in 0..n_arch {
        let modes = [
            a % 4,
            (a / 4 + rng.below(2) as usize * (a % 2)) % 5,
            (a / 2) % 3,
            a % 2,
            a % 3,
        ];
        let sizes = [4, 5, 3, 2, 3];
        let peaks = [0.85, 0.6, 0.85, 0.9, 0.7];
        let cats = std::array::from_fn(|j| peaked(sizes[j], modes[j], peaks[j], &mut rng));
        let centre = std::array::from_fn(|_| 0.15 + 0.7 * rng.f64());
        let stations = pool[a * STATIONS_PER_ARCHETYPE..(a + 1) * STATIONS_PER_ARCHETYPE].to_vec();
        let name = match names.get(a) {
            Some(n) => n.to_string(),
            None => format!("archetype {a}"),
        };
        archetypes.push(Archetype {
            cats,
            centre,
            stations,
            name,
        });
        raw_shares.push(0.6 + rng.f64());
    }
    let shares = cumulative(&raw_shares);
    let n = cfg.households;
    let modulus = (n.saturating_mul(10)).max(1 << 23).next_power_of_two();
    let mult = (rng.u64() % modulus) | 1;
    let add = rng.u64() % modulus;
    let mut archetype_of = Vec::with_capacity(n as usize);
    let mut activity = Vec::with_capacity(n as usize);
    for _ in 0..n {
        archetype_of.push(rng.pick(&shares) as u8);
        activity.push(1u8 << rng.below(4));
    }
    World {
        archetypes,
        shares,
        stations,
        zipf,
        modulus,
        mult,
        add,
        archetype_of,
        activity,
    }
}

// ---------------------------------------------------------------------------------------------
// demographics

struct DemoRow {
    id: i64,
    numeric: [i64; 7],
    cats: [usize; 5],
}

fn demographic_rows(cfg: &GenerateConfig, world: &World) -> Vec<DemoRow> {
    let mut rng = Rng::new(cfg.seed, 1, 0);
    (0..cfg.households)
        .map(|i| {
            let a = &world.archetypes[world.archetype_of[i as usize] as usize];
            let numeric = std::array::from_fn(|j| {
                let (lo, hi) = RANGES[j];
                let v = (a.centre[j] + 0.12 * rng.normal()).clamp(0.0, 1.0);
                lo + ((hi - lo) as f64 * v).round() as i64
            });
            let cats = std::array::from_fn(|j| rng.pick(&a.cats[j]));
            DemoRow {
                id: world.household_id(i),
                numeric,
                cats,
            }
        })
        .collect()
}

/// The most likely index of cumulative weights.
fn mode_of(cumulative: &[f64]) -> usize {
    let mut best = (0usize, f64::NEG_INFINITY);
    let mut prev = 0.0;
    for (i, &c) in cumulative.iter().enumerate() {
        if c - prev > best.1 {
            best = (i, c - prev);
        }
        prev = c;
    }
    best.0
}

fn cat_value(j: usize, v: usize) -> &'static str {
    match j {
        0 => MARITAL[v],
        1 => RACE[v],
        2 => DWELLING[v],
        3 => OWNER[v],
        _ => GENDER[v],
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> GenerateError + '_ {
    move |e| GenerateError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn write_demographics_csv(path: &Path, rows: &[DemoRow]) -> Result<(), GenerateError> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io(path))?);
    let mut line = Vec::with_capacity(128);
    w.write_all(b"household_id,household_size,num_adults,num_generations,marital_status,race_code,dwelling_type,home_owner_status,length_residence,home_market_value,net_worth,gender_individual,education_highest\n")
        .map_err(io(path))?;
    for r in rows {
        line.clear();
        push_int(&mut line, r.id);
        for j in 0..3 {
            line.push(b',');
            push_int(&mut line, r.numeric[j]);
        }
        for j in 0..4 {
            line.push(b',');
            line.extend_from_slice(cat_value(j, r.cats[j]).as_bytes());
        }
        for j in 3..6 {
            line.push(b',');
            push_int(&mut line, r.numeric[j]);
        }
        line.push(b',');
        line.extend_from_slice(cat_value(4, r.cats[4]).as_bytes());
        line.push(b',');
        push_int(&mut line, r.numeric[6]);
        line.push(b'\n');
        w.write_all(&line).map_err(io(path))?;
    }
    w.flush().map_err(io(path))
}

fn write_demographics_parquet(path: &Path, rows: &[DemoRow]) -> Result<(), GenerateError> {
    let pq = |e: parquet::errors::ParquetError| GenerateError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let int = |n: &str| Field::new(n, DataType::Int64, false);
    let text = |n: &str| Field::new(n, DataType::Utf8, false);
    let schema = Arc::new(Schema::new(vec![
        int("household_id"),
        int("household_size"),
        int("num_adults"),
        int("num_generations"),
        text("marital_status"),
        text("race_code"),
        text("dwelling_type"),
        text("home_owner_status"),
        int("length_residence"),
        int("home_market_value"),
        int("net_worth"),
        text("gender_individual"),
        text("education_highest"),
    ]));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let file = File::create(path).map_err(io(path))?;
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(pq)?;
    for chunk in rows.chunks(65_536) {
        let ints = |f: &dyn Fn(&DemoRow) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(chunk.iter().map(f)))
        };
        let strs = |j: usize| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| cat_value(j, r.cats[j])),
            ))
        };
        let columns: Vec<ArrayRef> = vec![
            ints(&|r| r.id),
            ints(&|r| r.numeric[0]),
            ints(&|r| r.numeric[1]),
            ints(&|r| r.numeric[2]),
            strs(0),
            strs(1),
            strs(2),
            strs(3),
            ints(&|r| r.numeric[3]),
            ints(&|r| r.numeric[4]),
            ints(&|r| r.numeric[5]),
            strs(4),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| r.numeric[6].to_string()),
            )),
        ];
        let batch =
            RecordBatch::try_new(schema.clone(), columns).map_err(|e| GenerateError::Parquet {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        w.write(&batch).map_err(pq)?;
    }
    w.close().map_err(pq)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// views

#[inline]
fn push_int(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

#[inline]
fn push_padded(out: &mut Vec<u8>, mut v: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for i in (0..width).rev() {
        out[start + i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

#[inline]
fn push_hex12(out: &mut Vec<u8>, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..12).rev() {
        out.push(HEX[((v >> (i * 4)) & 15) as usize]);
    }
}

/// Counts of one block.
#[derive(Default, Clone, Copy)]
struct BlockStats {
    malformed: u64,
}

/// Which records a block holds: `[from, to)` of `total` in file `stream` (0 static, 1 stream).
#[derive(Clone, Copy)]
struct BlockSpan {
    stream: u64,
    block: u64,
    from: u64,
    to: u64,
    total: u64,
}

/// Write the records of one block into `out`.
fn view_block(
    cfg: &GenerateConfig,
    world: &World,
    span: BlockSpan,
    out: &mut Vec<u8>,
) -> BlockStats {
    let BlockSpan {
        stream,
        block,
        from,
        to,
        total,
    } = span;
    let mut rng = Rng::new(cfg.seed, 2 + stream, block);
    let mut stats = BlockStats::default();
    let n = cfg.households;
    let unknown_pool = (n / 10).max(100);
    let date: u64 = if stream == 0 { 20150114 } else { 20150115 };
    const PROGS: [&[u8]; 4] = [b"EP", b"MV", b"SH", b"SP"];
    for i in from..to {
        let secs = i * 86_400 / total.max(1);
        let malformed = rng.f64() < cfg.malformed_fraction;
        let (hid, station): (i64, &str) = if rng.f64() < cfg.unknown_fraction {
            let j = rng.below(unknown_pool);
            (world.unknown_id(j), &world.stations[rng.pick(&world.zipf)])
        } else {
            // a household, more active ones more often (rejection on the activity class)
            let h = loop {
                let h = rng.below(n);
                if rng.below(8) < world.activity[h as usize] as u64 {
                    break h;
                }
            };
            let a = &world.archetypes[world.archetype_of[h as usize] as usize];
            let s = if rng.f64() < OVERWATCH {
                a.stations[rng.below(a.stations.len() as u64) as usize]
            } else {
                rng.pick(&world.zipf)
            };
            (world.household_id(h), &world.stations[s])
        };
        let device = crate::counters::household_hash(hid) & 0xFFFF_FFFF_FFFF;
        let prog = PROGS[rng.below(4) as usize];
        let prog_num = rng.below(1_000_000_000_000);
        let kind = if malformed { rng.below(7) } else { u64::MAX };
        // the fields, possibly broken on purpose
        match kind {
            0 => {
                // empty record
                out.push(b'\n');
                stats.malformed += 1;
                continue;
            }
            2 => {
                // too few fields
                push_hex12(out, device);
                out.push(b',');
                push_padded(out, date, 8);
                out.push(b',');
                out.extend_from_slice(station.as_bytes());
                out.push(b',');
                push_int(out, hid);
                out.push(b'\n');
                stats.malformed += 1;
                continue;
            }
            _ => {}
        }
        push_hex12(out, device);
        out.push(b',');
        push_padded(out, date, 8);
        out.push(b',');
        push_padded(
            out,
            (secs / 3600) * 10_000 + (secs / 60 % 60) * 100 + secs % 60,
            6,
        );
        out.push(b',');
        if kind != 4 {
            out.extend_from_slice(station.as_bytes());
        }
        out.push(b',');
        out.extend_from_slice(prog);
        if kind == 1 {
            // binary junk inside the record (never a newline)
            out.extend_from_slice(&[0xC3, 0xA9, 0xFF, 0x00, 0x9B]);
        }
        push_padded(out, prog_num, 12);
        out.push(b',');
        match kind {
            5 => {
                push_int(out, hid);
                out.extend_from_slice(b"x");
            }
            6 => out.extend_from_slice(b"99999999999999999999"),
            _ => push_int(out, hid),
        }
        if kind == 3 {
            out.extend_from_slice(b",extra");
        }
        out.push(b'\n');
        if malformed {
            stats.malformed += 1;
        }
    }
    stats
}

/// Write one views file in blocks on `threads` workers; returns (bytes, malformed).
fn write_views(
    cfg: &GenerateConfig,
    world: &World,
    stream: u64,
    records: u64,
    path: &Path,
    threads: usize,
    bar: &indicatif::ProgressBar,
) -> Result<(u64, u64), GenerateError> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io(path))?);
    let blocks = records.div_ceil(BLOCK) as usize;
    let next = AtomicUsize::new(0);
    let (tx, rx) = crossbeam_channel::bounded::<(usize, Vec<u8>, BlockStats)>(threads * 2);
    let (free_tx, free_rx) = crossbeam_channel::bounded::<Vec<u8>>(threads * 4);
    let mut bytes = 0u64;
    let mut malformed = 0u64;
    let result = std::thread::scope(|scope| -> Result<(), GenerateError> {
        for _ in 0..threads {
            let (tx, free_rx, next) = (tx.clone(), free_rx.clone(), &next);
            scope.spawn(move || loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= blocks {
                    break;
                }
                let mut buf = free_rx.try_recv().unwrap_or_default();
                buf.clear();
                let from = b as u64 * BLOCK;
                let to = (from + BLOCK).min(records);
                let span = BlockSpan {
                    stream,
                    block: b as u64,
                    from,
                    to,
                    total: records,
                };
                let st = view_block(cfg, world, span, &mut buf);
                if tx.send((b, buf, st)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        // write in block order; at most a few blocks wait out of order
        let mut pending = std::collections::BTreeMap::new();
        let mut want = 0usize;
        for (b, buf, st) in rx.iter() {
            pending.insert(b, (buf, st));
            while let Some((buf, st)) = pending.remove(&want) {
                w.write_all(&buf).map_err(io(path))?;
                bytes += buf.len() as u64;
                malformed += st.malformed;
                bar.inc((BLOCK).min(records - want as u64 * BLOCK));
                let _ = free_tx.try_send(buf);
                want += 1;
            }
        }
        if want != blocks {
            return Err(GenerateError::Worker {
                path: path.to_path_buf(),
            });
        }
        Ok(())
    });
    result?;
    w.flush().map_err(io(path))?;
    Ok((bytes, malformed))
}

/// Write the whole data set into `out`.
pub fn generate(cfg: &GenerateConfig, out: &Path) -> Result<Generated, GenerateError> {
    cfg.validate()?;
    let t = Instant::now();
    std::fs::create_dir_all(out).map_err(io(out))?;
    let world = build_world(cfg);
    let rows = demographic_rows(cfg, &world);
    let files: Vec<PathBuf> = [
        "demographics.parquet",
        "demographics.csv",
        "views_static.csv",
        "views_stream.csv",
        "archetypes.json",
        "households_truth.csv",
    ]
    .iter()
    .map(|f| out.join(f))
    .collect();
    write_demographics_parquet(&files[0], &rows)?;
    write_demographics_csv(&files[1], &rows)?;
    let threads = crate::source::threads(cfg.threads);
    let bar = progress::bar(
        cfg.static_records + cfg.stream_records,
        "generating views",
        Unit::Items,
    );
    let (b1, m1) = write_views(cfg, &world, 0, cfg.static_records, &files[2], threads, &bar)?;
    let (b2, m2) = write_views(cfg, &world, 1, cfg.stream_records, &files[3], threads, &bar)?;
    bar.finish_and_clear();
    // the planted truth
    let mut counts = vec![0u64; world.archetypes.len()];
    for &a in &world.archetype_of {
        counts[a as usize] += 1;
    }
    let total_share = world.shares.last().copied().unwrap_or(1.0);
    let mut prev = 0.0;
    let truth = Truth {
        seed: cfg.seed,
        households: cfg.households,
        archetypes: world
            .archetypes
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let share = (world.shares[i] - prev) / total_share;
                prev = world.shares[i];
                ArchetypeTruth {
                    id: i as u32,
                    name: a.name.clone(),
                    share,
                    households: counts[i],
                    stations: a
                        .stations
                        .iter()
                        .map(|&s| world.stations[s].clone())
                        .collect(),
                    numeric_centres: crate::segment::demographics::NUMERIC
                        .iter()
                        .enumerate()
                        .map(|(j, c)| {
                            let (lo, hi) = RANGES[j];
                            (c.to_string(), lo as f64 + (hi - lo) as f64 * a.centre[j])
                        })
                        .collect(),
                    modes: crate::segment::demographics::CATEGORICAL
                        .iter()
                        .enumerate()
                        .map(|(j, c)| {
                            (c.to_string(), cat_value(j, mode_of(&a.cats[j])).to_string())
                        })
                        .collect(),
                }
            })
            .collect(),
        stations: world.stations.clone(),
    };
    let json = serde_json::to_string_pretty(&truth).map_err(|e| GenerateError::Io {
        path: files[4].clone(),
        source: e.into(),
    })?;
    std::fs::write(&files[4], json + "\n").map_err(io(&files[4]))?;
    let mut w = BufWriter::new(File::create(&files[5]).map_err(io(&files[5]))?);
    w.write_all(b"household_id,archetype\n")
        .map_err(io(&files[5]))?;
    for (r, &a) in rows.iter().zip(&world.archetype_of) {
        writeln!(w, "{},{a}", r.id).map_err(io(&files[5]))?;
    }
    w.flush().map_err(io(&files[5]))?;
    Ok(Generated {
        files,
        households: cfg.households,
        static_records: cfg.static_records,
        stream_records: cfg.stream_records,
        malformed: m1 + m2,
        bytes: b1 + b2,
        elapsed_ms: t.elapsed().as_secs_f64() * 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{parse, Malformed};
    use std::collections::HashMap;

    fn small(threads: usize) -> GenerateConfig {
        GenerateConfig {
            households: 2_000,
            static_records: 300_000,
            stream_records: 20_000,
            stations: 120,
            seed: 9,
            threads,
            ..GenerateConfig::default()
        }
    }

    #[test]
    fn same_seed_same_bytes_on_any_thread_count() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ga = generate(&small(1), a.path()).unwrap();
        let gb = generate(&small(3), b.path()).unwrap();
        for f in &ga.files {
            let name = f.file_name().unwrap();
            assert_eq!(
                std::fs::read(f).unwrap(),
                std::fs::read(b.path().join(name)).unwrap(),
                "{name:?}"
            );
        }
        assert_eq!(ga.malformed, gb.malformed);
        let other = tempfile::tempdir().unwrap();
        generate(
            &GenerateConfig {
                seed: 10,
                ..small(2)
            },
            other.path(),
        )
        .unwrap();
        assert_ne!(
            std::fs::read(a.path().join("views_stream.csv")).unwrap(),
            std::fs::read(other.path().join("views_stream.csv")).unwrap()
        );
    }

    #[test]
    fn records_malformed_kinds_unknowns_and_planted_lift() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = small(2);
        let g = generate(&cfg, dir.path()).unwrap();
        // demographics: unique ids, parquet and CSV agree
        let d = crate::segment::demographics::read(&dir.path().join("demographics.parquet"), true)
            .unwrap();
        let c =
            crate::segment::demographics::read(&dir.path().join("demographics.csv"), true).unwrap();
        assert_eq!(d.len() as u64, cfg.households);
        assert_eq!(d.household_id, c.household_id);
        assert_eq!(d.numeric, c.numeric);
        assert_eq!(d.duplicates, 0);
        let known: HashMap<i64, usize> = d
            .household_id
            .iter()
            .enumerate()
            .map(|(i, &h)| (h, i))
            .collect();
        let truth: Truth = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("archetypes.json")).unwrap(),
        )
        .unwrap();
        let arch_of: HashMap<i64, usize> =
            std::fs::read_to_string(dir.path().join("households_truth.csv"))
                .unwrap()
                .lines()
                .skip(1)
                .map(|l| {
                    let (h, a) = l.split_once(',').unwrap();
                    (h.parse().unwrap(), a.parse().unwrap())
                })
                .collect();
        assert_eq!(arch_of.len() as u64, cfg.households);
        assert!(truth.stations.iter().any(|s| s.starts_with('0')));
        assert!(truth.stations.iter().any(|s| s.starts_with('0')
            && truth
                .stations
                .contains(&s.trim_start_matches('0').to_string())));
        // views
        let text = std::fs::read(dir.path().join("views_static.csv")).unwrap();
        let mut kinds = [0u64; 7];
        let (mut records, mut valid, mut unknown) = (0u64, 0u64, 0u64);
        let mut views: HashMap<(usize, String), u64> = HashMap::new();
        let mut all: HashMap<String, u64> = HashMap::new();
        let mut per_arch = vec![0u64; truth.archetypes.len()];
        for line in text.strip_suffix(b"\n").unwrap().split(|&b| b == b'\n') {
            records += 1;
            match parse(line) {
                Err(k) => kinds[k.index()] += 1,
                Ok(v) => {
                    valid += 1;
                    let s = String::from_utf8(v.station_num.to_vec()).unwrap();
                    *all.entry(s.clone()).or_default() += 1;
                    match known.get(&v.household_id) {
                        None => unknown += 1,
                        Some(_) => {
                            let a = arch_of[&v.household_id];
                            per_arch[a] += 1;
                            *views.entry((a, s)).or_default() += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(records, cfg.static_records);
        for k in Malformed::ALL {
            assert!(kinds[k.index()] > 100, "{k:?}: {}", kinds[k.index()]);
        }
        let bad: u64 = kinds.iter().sum();
        let share = bad as f64 / records as f64;
        assert!((share - cfg.malformed_fraction).abs() < 0.002, "{share}");
        let ushare = unknown as f64 / valid as f64;
        assert!((ushare - cfg.unknown_fraction).abs() < 0.01, "{ushare}");
        // lift: an archetype's stations take a far larger share of its views than of everyone's
        for (i, a) in truth.archetypes.iter().enumerate() {
            let mine: u64 = a
                .stations
                .iter()
                .map(|s| views.get(&(i, s.clone())).copied().unwrap_or(0))
                .sum();
            let theirs: u64 = a
                .stations
                .iter()
                .map(|s| all.get(s).copied().unwrap_or(0))
                .sum();
            let lift = (mine as f64 / per_arch[i] as f64) / (theirs as f64 / valid as f64);
            assert!(lift > 2.0, "archetype {i}: lift {lift}");
        }
        assert_eq!(g.static_records, records);
    }

    #[test]
    fn settings_are_validated() {
        for (cfg, needle) in [
            (
                GenerateConfig {
                    households: 0,
                    ..GenerateConfig::default()
                },
                "--households",
            ),
            (
                GenerateConfig {
                    stations: 5,
                    ..GenerateConfig::default()
                },
                "--stations",
            ),
            (
                GenerateConfig {
                    malformed_fraction: 1.5,
                    ..GenerateConfig::default()
                },
                "--malformed-fraction",
            ),
            (
                GenerateConfig {
                    archetypes: 0,
                    ..GenerateConfig::default()
                },
                "--archetypes",
            ),
        ] {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    #[ignore = "a measurement: cargo test --release --lib generate::tests::speed -- --ignored --nocapture"]
    fn speed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = GenerateConfig {
            households: 1_000_000,
            static_records: 20_000_000,
            stream_records: 0,
            ..GenerateConfig::default()
        };
        let g = generate(&cfg, dir.path()).unwrap();
        println!(
            "20M records + 1M households in {:.1} s ({:.2} M records/s, {} bytes)",
            g.elapsed_ms / 1000.0,
            20.0 / (g.elapsed_ms / 1000.0),
            g.bytes
        );
    }
}
