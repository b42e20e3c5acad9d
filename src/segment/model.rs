//! The model folder (SPEC 6): `households.csv`, `features.csv`, `model.json`, and `model.bin`
//! (a magic header, a format version, then the bincode-encoded model with every household),
//! which `analyze` and the daemon load. A folder holding only a `households.csv` with
//! `household_id,cluster,distance,rank` is a model too: segments assigned by another system.
//!
//! A model folder changes all at once: [`Staged`] writes the files into a hidden folder beside
//! the target and renames it over the target when every file is whole. `model.json` and
//! `model.bin` record the length and CRC-32 of the `households.csv` written with them, and
//! [`load`] refuses a folder whose files disagree (a copy mixed from two runs).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SegmentError;

/// First bytes of `model.bin`.
pub const MAGIC: &[u8; 8] = b"VPMODEL\0";
/// Format version of `model.bin`; bump on any change of [`ModelBin`].
pub const VERSION: u32 = 3;

/// The files `segment` writes into a model folder: a folder holding anything else is not
/// replaced.
pub const MODEL_FILES: &[&str] = &[
    "households.csv",
    "households.parquet",
    "features.csv",
    "model.json",
    "model.bin",
    "pca.png",
    "cluster_sizes.png",
    "profiles.csv",
    "k_selection.csv",
    "k_selection.png",
];

/// Length and CRC-32 of a file, to tell that two files were written together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the bytes.
    pub crc32: u32,
}

impl Digest {
    /// The digest of a file, read in 1 MiB blocks.
    pub fn of_file(path: &Path) -> Result<Digest, SegmentError> {
        let mut f = File::open(path).map_err(io_err(path))?;
        let mut h = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(io_err(path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            bytes += n as u64;
        }
        Ok(Digest {
            bytes,
            crc32: h.finalize(),
        })
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes, CRC-32 {:08x}", self.bytes, self.crc32)
    }
}

/// A writer that keeps the [`Digest`] of what went through it.
struct Digesting<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A model folder being written. Files go into a hidden folder beside the target
/// (`.NAME.staging-PID`); [`Staged::commit`] renames it over the target, so that a reader sees
/// the old model or the new one, never a mix. Dropped without a commit (a failed segment),
/// the hidden folder is removed and the target is as it was.
#[derive(Debug)]
pub struct Staged {
    dir: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Staged {
    /// Prepare to replace `target`, which must not exist or be a folder holding only model
    /// files (a folder holding anything else is refused rather than replaced).
    pub fn new(target: &Path) -> Result<Staged, SegmentError> {
        // an existing target is resolved (`.`, `m/./`, a symbolic link to a folder: the
        // folder it names is replaced, the link stays)
        let abs = match std::fs::canonicalize(target) {
            Ok(real) => real,
            Err(_) => std::path::absolute(target).map_err(write_err(target))?,
        };
        let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
            return Err(SegmentError::Settings(format!(
                "--out {}: give the model folder a name (not / or ..)",
                target.display()
            )));
        };
        if std::env::current_dir()
            .and_then(std::fs::canonicalize)
            .is_ok_and(|cwd| cwd.starts_with(&abs))
        {
            return Err(SegmentError::Settings(format!(
                "--out {}: is the current folder or holds it; a model folder is replaced whole, so give it a folder of its own",
                target.display()
            )));
        }
        let target = &abs;
        if target.exists() {
            if !target.is_dir() {
                return Err(SegmentError::Settings(format!(
                    "--out {}: exists and is not a folder",
                    target.display()
                )));
            }
            let entries = std::fs::read_dir(target).map_err(io_err(target))?;
            for e in entries {
                let e = e.map_err(io_err(target))?;
                let n = e.file_name();
                let n = n.to_string_lossy();
                if !MODEL_FILES.contains(&n.as_ref()) {
                    return Err(SegmentError::Settings(format!(
                        "--out {}: holds {n}, which is not a model file; a model folder is replaced whole, so give a new folder or one holding only a model",
                        target.display()
                    )));
                }
            }
        }
        std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        let name = name.to_string_lossy();
        crate::sink::remove_stale(parent, &name, &["staging", "old"]);
        let dir = parent.join(crate::sink::hidden_name(
            &name,
            "staging",
            std::process::id(),
        ));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(write_err(&dir))?;
        }
        std::fs::create_dir(&dir).map_err(write_err(&dir))?;
        Ok(Staged {
            dir,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    /// Where the files go until the commit.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Sync every file (each on a thread of its own, so that the file system can commit them
    /// together), then put the folder in the target's place (the old model, if any, is
    /// renamed aside first and removed after).
    pub fn commit(mut self) -> Result<(), SegmentError> {
        let entries = std::fs::read_dir(&self.dir).map_err(write_err(&self.dir))?;
        let paths = entries
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(write_err(&self.dir))?;
        std::thread::scope(|scope| {
            let syncs: Vec<_> = paths
                .iter()
                .map(|p| scope.spawn(move || File::open(p).and_then(|f| f.sync_all())))
                .collect();
            for (p, sync) in paths.iter().zip(syncs) {
                crate::parallel::joined(sync.join()).map_err(write_err(p))?;
            }
            Ok::<(), SegmentError>(())
        })?;
        let name = self
            .target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let old =
            self.dir
                .with_file_name(crate::sink::hidden_name(&name, "old", std::process::id()));
        let had_old = self.target.exists();
        if had_old {
            std::fs::rename(&self.target, &old).map_err(write_err(&self.target))?;
        }
        if let Err(e) = std::fs::rename(&self.dir, &self.target) {
            if had_old {
                let _ = std::fs::rename(&old, &self.target);
            }
            return Err(write_err(&self.target)(e));
        }
        self.committed = true;
        // the target is absolute (see `new`): its parent holds the renames
        if let Some(d) = self.target.parent().and_then(|p| File::open(p).ok()) {
            let _ = d.sync_all();
        }
        if had_old {
            if let Err(e) = std::fs::remove_dir_all(&old) {
                tracing::warn!(path = %old.display(), error = %e, "cannot remove the replaced model");
            }
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One clustered household.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Household {
    /// Household id.
    pub household_id: i64,
    /// Cluster number.
    pub cluster: u32,
    /// Squared distance to the cluster's centroid.
    pub distance: f64,
    /// 1-based rank inside the cluster (SPEC 3).
    pub rank: u32,
    /// First PCA coordinate (NaN when unknown).
    pub pca_x: f64,
    /// Second PCA coordinate (NaN when unknown).
    pub pca_y: f64,
}

/// `model.json`: everything about the fit except the per-household rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// viewpulse version that wrote it.
    pub viewpulse: String,
    /// The demographics file.
    pub demographics: String,
    /// Number of clusters.
    pub k: u32,
    /// KMeans seed.
    pub seed: u64,
    /// KMeans runs.
    pub runs: u32,
    /// How many of the first sample's best results went on to the next level (`--refine`).
    #[serde(default)]
    pub refine: u32,
    /// Households in the runs' search sample (0: the runs used every household).
    pub sample: u64,
    /// Sum of every household's `distance`.
    pub inertia: f64,
    /// Clustered households.
    pub households: u64,
    /// Households per cluster.
    pub cluster_sizes: Vec<u64>,
    /// Feature names, in vector order.
    pub feature_names: Vec<String>,
    /// Centroids, one per cluster, in feature order.
    pub centroids: Vec<Vec<f64>>,
    /// Centroids projected on the two PCA components.
    pub centroids_pca: Vec<[f64; 2]>,
    /// PCA components (feature-major: one `[pc1, pc2]` per feature).
    pub pca_components: Vec<[f64; 2]>,
    /// Explained variance ratio of the two components.
    pub pca_explained: [f64; 2],
    /// Category order of each categorical column (StringIndexer `frequencyDesc`).
    pub category_orders: BTreeMap<String, Vec<String>>,
    /// Largest absolute value of each numeric column.
    pub max_abs: BTreeMap<String, f64>,
    /// Rows read from the demographics file.
    pub rows_read: u64,
    /// Rows skipped for a missing or unparseable value.
    pub skipped: u64,
    /// Rows skipped as repeated household ids.
    pub duplicates: u64,
    /// The first skipped rows, described.
    pub skipped_examples: Vec<String>,
    /// The `households.csv` written with this model (none in a model made elsewhere).
    #[serde(default)]
    pub households_csv: Option<Digest>,
    /// With `--k A..B`: every k's scores and the one kept (also in `k_selection.csv`).
    #[serde(default)]
    pub k_selection: Option<KSelection>,
    /// Who each cluster is, in the demographics' units (also in `profiles.csv`).
    #[serde(default)]
    pub profiles: Vec<super::profile::Profile>,
}

/// serde for an f64 that may be NaN (an empty cluster's median, a score a labelling with one
/// cluster does not have): `null` in JSON, which reads back as NaN.
pub mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Write NaN and the infinities as `None`.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_some(v)
        } else {
            s.serialize_none()
        }
    }

    /// Read `None` as NaN.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// How `--k A..B` chose k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KSelection {
    /// The k kept (the model's k).
    pub recommended: u32,
    /// Why, in words.
    pub why: String,
    /// Households the silhouettes were computed on (every household up to 20,000; above, a
    /// seeded sample of exactly 20,000).
    pub silhouette_sample: u64,
    /// One row per k, ascending.
    pub scores: Vec<KSelectionRow>,
}

/// One k of `k_selection.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KSelectionRow {
    /// Number of clusters.
    pub k: u32,
    /// Sum of squared distances to the centroids.
    pub inertia: f64,
    /// Mean silhouette on the sample.
    #[serde(with = "nan_as_null")]
    pub silhouette: f64,
    /// Calinski-Harabasz score over every household (`null` when undefined).
    #[serde(with = "nan_as_null")]
    pub calinski_harabasz: f64,
    /// Davies-Bouldin score over every household (`null` when undefined).
    #[serde(with = "nan_as_null")]
    pub davies_bouldin: f64,
}

/// The content of `model.bin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelBin {
    /// The fit.
    pub info: ModelInfo,
    /// Every clustered household, by cluster then rank.
    pub households: Vec<Household>,
}

/// A model as loaded for counting.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// The folder.
    pub dir: PathBuf,
    /// The fit, when the folder has one (not for a households.csv-only model).
    pub info: Option<ModelInfo>,
    /// Every clustered household.
    pub households: Vec<Household>,
}

impl LoadedModel {
    /// Number of clusters: from the fit, else the largest cluster number + 1.
    pub fn k(&self) -> u32 {
        match &self.info {
            Some(i) => i.k,
            None => self
                .households
                .iter()
                .map(|h| h.cluster + 1)
                .max()
                .unwrap_or(0),
        }
    }

    /// Households per cluster.
    pub fn cluster_sizes(&self) -> Vec<u64> {
        let mut v = vec![0u64; self.k() as usize];
        for h in &self.households {
            if let Some(s) = v.get_mut(h.cluster as usize) {
                *s += 1;
            }
        }
        v
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SegmentError + '_ {
    move |e| SegmentError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> SegmentError + '_ {
    move |e| SegmentError::Write {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Write `households.csv` (by cluster then rank); returns its digest.
pub fn write_households(path: &Path, rows: &[Household]) -> Result<Digest, SegmentError> {
    let f = File::create(path).map_err(write_err(path))?;
    let mut w = BufWriter::with_capacity(
        1 << 20,
        Digesting {
            inner: f,
            hasher: crc32fast::Hasher::new(),
            bytes: 0,
        },
    );
    let mut f = ryu::Buffer::new();
    let body = (|| -> std::io::Result<()> {
        writeln!(w, "household_id,cluster,distance,rank,pca_x,pca_y")?;
        for h in rows {
            write!(w, "{},{},", h.household_id, h.cluster)?;
            w.write_all(f.format(h.distance).as_bytes())?;
            write!(w, ",{},", h.rank)?;
            w.write_all(f.format(h.pca_x).as_bytes())?;
            w.write_all(b",")?;
            w.write_all(f.format(h.pca_y).as_bytes())?;
            w.write_all(b"\n")?;
        }
        w.flush()
    })();
    body.map_err(write_err(path))?;
    let d = w
        .into_inner()
        .map_err(|e| write_err(path)(e.into_error()))?;
    Ok(Digest {
        bytes: d.bytes,
        crc32: d.hasher.finalize(),
    })
}

/// Write `households.parquet` (by cluster then rank): the seed's `ranked_df` columns
/// `household_id` (int64), `cluster` (int32, Spark's prediction type), `distance` (double),
/// `rank` (int32), then `pca_x`, `pca_y` and `features_for_cluster` (a list of doubles, in
/// feature order). `features` holds each household's vector: household `i`'s is row
/// `feature_rows[i]`.
pub fn write_households_parquet(
    path: &Path,
    households: &[Household],
    feature_rows: &[usize],
    features: ndarray::ArrayView2<f64>,
) -> Result<(), SegmentError> {
    use arrow_array::builder::{Float64Builder, ListBuilder};
    use std::sync::Arc;
    let mut list = ListBuilder::with_capacity(
        Float64Builder::with_capacity(households.len() * features.ncols()),
        households.len(),
    )
    .with_field(Arc::new(arrow_schema::Field::new(
        "element",
        arrow_schema::DataType::Float64,
        false,
    )));
    for &i in feature_rows {
        for &v in features.row(i) {
            list.values().append_value(v);
        }
        list.append(true);
    }
    use crate::dataset::{doubles, int32, int64};
    let h = || households.iter();
    crate::dataset::write_parquet(
        path,
        vec![
            ("household_id", false, int64(h().map(|h| h.household_id))),
            ("cluster", false, int32(h().map(|h| h.cluster as i32))),
            ("distance", false, doubles(h().map(|h| h.distance))),
            ("rank", false, int32(h().map(|h| h.rank as i32))),
            ("pca_x", false, doubles(h().map(|h| h.pca_x))),
            ("pca_y", false, doubles(h().map(|h| h.pca_y))),
            ("features_for_cluster", false, Arc::new(list.finish()) as _),
        ],
    )?;
    Ok(())
}

/// Give households without a `rank` column theirs (SPEC 3): by `distance` ascending inside
/// each cluster, ties (and households without a distance) by household_id ascending.
pub fn rank_by_distance(households: &mut [Household]) {
    let mut order: Vec<usize> = (0..households.len()).collect();
    let key = |h: &Household| {
        if h.distance.is_nan() {
            f64::INFINITY
        } else {
            h.distance
        }
    };
    order.sort_by(|&a, &b| {
        let (x, y) = (&households[a], &households[b]);
        x.cluster
            .cmp(&y.cluster)
            .then(key(x).total_cmp(&key(y)))
            .then(x.household_id.cmp(&y.household_id))
    });
    let mut rank = 0u32;
    let mut cluster = None;
    for i in order {
        if cluster != Some(households[i].cluster) {
            cluster = Some(households[i].cluster);
            rank = 0;
        }
        rank += 1;
        households[i].rank = rank;
    }
}

/// Read a `households.parquet` made by another system (a Spark job's `ranked_df`, pandas):
/// `household_id` and `cluster` (integer columns of any width, or integral decimals),
/// `distance` and `rank` when present (without `rank`, households are ranked by distance as
/// SPEC 3 says), `pca_x`/`pca_y` when present. Every other column is ignored.
pub fn read_households_parquet(path: &Path) -> Result<Vec<Household>, SegmentError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use arrow_array::Array;
    use arrow_schema::DataType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let pq = |message: String| SegmentError::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(io_err(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq(e.to_string()))?;
    let schema = builder.schema().clone();
    let has = |n: &str| schema.field_with_name(n).is_ok();
    for need in ["household_id", "cluster"] {
        if !has(need) {
            return Err(SegmentError::MissingColumn {
                path: path.to_path_buf(),
                column: need.to_string(),
            });
        }
    }
    let wanted: Vec<&str> = [
        "household_id",
        "cluster",
        "distance",
        "rank",
        "pca_x",
        "pca_y",
    ]
    .into_iter()
    .filter(|n| has(n))
    .collect();
    let mask = ProjectionMask::columns(builder.parquet_schema(), wanted.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(|e| pq(e.to_string()))?;
    let bad = |row: u64, message: String| SegmentError::Row {
        path: path.to_path_buf(),
        at: format!("row {row}"),
        message,
    };
    let cast = |name: &str, a: &arrow_array::ArrayRef, to: &DataType| {
        let opts = arrow_cast::CastOptions {
            safe: false,
            ..Default::default()
        };
        arrow_cast::cast_with_options(a, to, &opts).map_err(|e| SegmentError::BadColumnType {
            path: path.to_path_buf(),
            column: name.to_string(),
            found: format!("{} ({e})", a.data_type()),
        })
    };
    let mut out = Vec::new();
    let mut seen: std::collections::HashMap<i64, u64> = std::collections::HashMap::new();
    let mut row = 0u64;
    let has_rank = has("rank");
    for batch in reader {
        let batch = batch.map_err(|e| pq(format!("corrupt data after row {row}: {e}")))?;
        // an integer column as written, as exact int64 (null where a value does not fit), and
        // as doubles when it holds floats (whose fractions must be refused, not truncated)
        type Ints = Option<(
            arrow_array::ArrayRef,
            arrow_array::ArrayRef,
            Option<arrow_array::ArrayRef>,
        )>;
        let ints = |n: &str| -> Result<Ints, SegmentError> {
            let Some(a) = batch.column_by_name(n) else {
                return Ok(None);
            };
            let exact =
                arrow_cast::cast(a, &DataType::Int64).map_err(|e| SegmentError::BadColumnType {
                    path: path.to_path_buf(),
                    column: n.to_string(),
                    found: format!("{} ({e})", a.data_type()),
                })?;
            let floats = if a.data_type().is_floating() {
                Some(cast(n, a, &DataType::Float64)?)
            } else {
                None
            };
            Ok(Some((a.clone(), exact, floats)))
        };
        let floats = |n: &str| -> Result<Option<arrow_array::ArrayRef>, SegmentError> {
            batch
                .column_by_name(n)
                .map(|a| cast(n, a, &DataType::Float64))
                .transpose()
        };
        let (ids, clusters, ranks) = (ints("household_id")?, ints("cluster")?, ints("rank")?);
        let (dist, px, py) = (floats("distance")?, floats("pca_x")?, floats("pca_y")?);
        let float_at = |a: &Option<arrow_array::ArrayRef>, i: usize| match a {
            Some(a) if !a.is_null(i) => a.as_primitive::<Float64Type>().value(i),
            _ => f64::NAN,
        };
        for i in 0..batch.num_rows() {
            row += 1;
            let int_at = |c: &Ints, name: &str| -> Result<i64, SegmentError> {
                let Some((orig, exact, floats)) = c else {
                    return Err(bad(row, format!("column {name} is missing")));
                };
                if orig.is_null(i) {
                    return Err(bad(row, format!("column {name} is null")));
                }
                let fraction = floats.as_ref().is_some_and(|f| {
                    let v = f.as_primitive::<Float64Type>().value(i);
                    v.fract() != 0.0 || !v.is_finite()
                });
                if exact.is_null(i) || fraction {
                    let shown = arrow_cast::display::array_value_to_string(orig, i)
                        .unwrap_or_else(|_| "?".into());
                    return Err(bad(
                        row,
                        format!("column {name}: {shown} is not a 64-bit integer"),
                    ));
                }
                Ok(exact.as_primitive::<Int64Type>().value(i))
            };
            let id = int_at(&ids, "household_id")?;
            let cluster = int_at(&clusters, "cluster")?;
            if !(0..i64::from(u16::MAX)).contains(&cluster) {
                return Err(bad(
                    row,
                    format!("column cluster: {cluster} is out of range 0..65534"),
                ));
            }
            let rank = if has_rank {
                let r = int_at(&ranks, "rank")?;
                if !(1..=i64::from(u32::MAX)).contains(&r) {
                    return Err(bad(
                        row,
                        format!("column rank: {r} is out of range 1..=4294967295"),
                    ));
                }
                r as u32
            } else {
                0
            };
            if let Some(first) = seen.insert(id, row) {
                return Err(bad(
                    row,
                    format!("household_id {id} is already on row {first}; a household is in one cluster"),
                ));
            }
            out.push(Household {
                household_id: id,
                cluster: cluster as u32,
                distance: float_at(&dist, i),
                rank,
                pca_x: float_at(&px, i),
                pca_y: float_at(&py, i),
            });
        }
    }
    if out.is_empty() {
        return Err(SegmentError::EmptyTable {
            path: path.to_path_buf(),
        });
    }
    if !has_rank {
        rank_by_distance(&mut out);
    }
    Ok(out)
}

/// Write `features.csv`: `household_id,f0,…`, by household_id ascending.
pub fn write_features(
    path: &Path,
    ids: &[i64],
    x: ndarray::ArrayView2<f64>,
) -> Result<(), SegmentError> {
    let f = File::create(path).map_err(write_err(path))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_unstable_by_key(|&i| ids[i]);
    let mut f = ryu::Buffer::new();
    let body = (|| -> std::io::Result<()> {
        write!(w, "household_id")?;
        for j in 0..x.ncols() {
            write!(w, ",f{j}")?;
        }
        writeln!(w)?;
        for i in order {
            write!(w, "{}", ids[i])?;
            for &v in x.row(i) {
                // most cells are a one-hot 0 or 1: written as ryu writes them, without it
                if v == 0.0 && v.is_sign_positive() {
                    w.write_all(b",0.0")?;
                } else if v == 1.0 {
                    w.write_all(b",1.0")?;
                } else {
                    w.write_all(b",")?;
                    w.write_all(f.format(v).as_bytes())?;
                }
            }
            w.write_all(b"\n")?;
        }
        w.flush()
    })();
    body.map_err(write_err(path))
}

/// [`ModelBin`] borrowed, for writing: the same encoding.
#[derive(Serialize)]
struct ModelBinRef<'a> {
    info: &'a ModelInfo,
    households: &'a [Household],
}

/// Write `model.bin`.
pub fn write_bin(
    path: &Path,
    info: &ModelInfo,
    households: &[Household],
) -> Result<(), SegmentError> {
    let model = ModelBinRef { info, households };
    let f = File::create(path).map_err(write_err(path))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    w.write_all(MAGIC).map_err(write_err(path))?;
    w.write_all(&VERSION.to_le_bytes())
        .map_err(write_err(path))?;
    bincode::serde::encode_into_std_write(&model, &mut w, bincode::config::standard()).map_err(
        |e| SegmentError::ModelFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    )?;
    w.flush().map_err(write_err(path))
}

/// Read `model.bin`.
pub fn read_bin(path: &Path) -> Result<ModelBin, SegmentError> {
    let f = File::open(path).map_err(io_err(path))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut head = [0u8; 12];
    r.read_exact(&mut head)
        .map_err(|_| SegmentError::ModelFile {
            path: path.to_path_buf(),
            message: "too short to be a viewpulse model".into(),
        })?;
    if &head[..8] != MAGIC {
        return Err(SegmentError::ModelFile {
            path: path.to_path_buf(),
            message: "not a viewpulse model (bad magic bytes)".into(),
        });
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if version != VERSION {
        return Err(SegmentError::ModelFile {
            path: path.to_path_buf(),
            message: format!(
                "model format version {version}, this build reads {VERSION}: segment again"
            ),
        });
    }
    bincode::serde::decode_from_std_read(&mut r, bincode::config::standard()).map_err(|e| {
        SegmentError::ModelFile {
            path: path.to_path_buf(),
            message: decode_message(&e),
        }
    })
}

/// One sentence for a `model.bin` that does not decode.
fn decode_message(e: &bincode::error::DecodeError) -> String {
    use bincode::error::DecodeError;
    match e {
        DecodeError::Io { inner, .. } if inner.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the file is cut short: it ends inside the model (a partial copy, or a disk that filled up); segment again".into()
        }
        DecodeError::Io { inner, .. } => format!("cannot be read: {inner}"),
        other => format!("corrupt model ({other}); segment again"),
    }
}

/// Read a `households.csv`: needs `household_id` and `cluster` columns (by name);
/// `distance`, `rank`, `pca_x`, `pca_y` are read when present (without `rank`, households
/// are ranked by distance as SPEC 3 says).
pub fn read_households_csv(path: &Path) -> Result<Vec<Household>, SegmentError> {
    let f = File::open(path).map_err(io_err(path))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut line = String::new();
    let bad = |line: u64, message: String| SegmentError::Csv {
        path: path.to_path_buf(),
        line,
        message,
    };
    if r.read_line(&mut line).map_err(io_err(path))? == 0 {
        return Err(SegmentError::EmptyTable {
            path: path.to_path_buf(),
        });
    }
    let header: Vec<String> = line
        .trim_end_matches(['\n', '\r'])
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let need = |name: &str| {
        col(name).ok_or_else(|| SegmentError::MissingColumn {
            path: path.to_path_buf(),
            column: name.to_string(),
        })
    };
    let (ci, cc, cr) = (need("household_id")?, need("cluster")?, col("rank"));
    let (cd, cx, cy) = (col("distance"), col("pca_x"), col("pca_y"));
    let mut out = Vec::new();
    let mut seen: std::collections::HashMap<i64, u64> = std::collections::HashMap::new();
    let mut lineno = 1u64;
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(io_err(path))? == 0 {
            break;
        }
        lineno += 1;
        let text = line.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            continue;
        }
        let fields: Vec<&str> = text.split(',').collect();
        if fields.len() != header.len() {
            return Err(bad(
                lineno,
                format!("{} fields, the header has {}", fields.len(), header.len()),
            ));
        }
        let int = |i: usize, name: &str| -> Result<i64, SegmentError> {
            fields[i].trim().parse::<i64>().map_err(|_| {
                bad(
                    lineno,
                    format!("column {name}: {:?} is not an integer", fields[i]),
                )
            })
        };
        let float = |i: Option<usize>, name: &str| -> Result<f64, SegmentError> {
            match i {
                None => Ok(f64::NAN),
                Some(i) => fields[i].trim().parse::<f64>().map_err(|_| {
                    bad(
                        lineno,
                        format!("column {name}: {:?} is not a number", fields[i]),
                    )
                }),
            }
        };
        let id = int(ci, "household_id")?;
        let cluster = int(cc, "cluster")?;
        let rank = match cr {
            Some(cr) => int(cr, "rank")?,
            None => 1, // ranked by distance below
        };
        if !(0..i64::from(u16::MAX)).contains(&cluster) {
            return Err(bad(
                lineno,
                format!("column cluster: {cluster} is out of range 0..65534"),
            ));
        }
        if !(1..=i64::from(u32::MAX)).contains(&rank) {
            return Err(bad(
                lineno,
                format!("column rank: {rank} must be at least 1"),
            ));
        }
        if let Some(first) = seen.insert(id, lineno) {
            return Err(bad(
                lineno,
                format!(
                    "household_id {id} is already on line {first}; a household is in one cluster"
                ),
            ));
        }
        out.push(Household {
            household_id: id,
            cluster: cluster as u32,
            distance: float(cd, "distance")?,
            rank: rank as u32,
            pca_x: float(cx, "pca_x")?,
            pca_y: float(cy, "pca_y")?,
        });
    }
    if out.is_empty() {
        return Err(SegmentError::EmptyTable {
            path: path.to_path_buf(),
        });
    }
    if cr.is_none() {
        rank_by_distance(&mut out);
    }
    Ok(out)
}

/// Load a model folder: `model.bin` when present, else `households.csv` (plus `model.json`
/// when present).
pub fn load(dir: &Path) -> Result<LoadedModel, SegmentError> {
    if !dir.is_dir() {
        return Err(SegmentError::NoModel {
            path: dir.to_path_buf(),
        });
    }
    let bin = dir.join("model.bin");
    let csv = dir.join("households.csv");
    let json = dir.join("model.json");
    let json_info = if json.is_file() {
        let text = std::fs::read_to_string(&json).map_err(io_err(&json))?;
        Some(
            serde_json::from_str::<ModelInfo>(&text).map_err(|e| SegmentError::ModelFile {
                path: json.clone(),
                message: e.to_string(),
            })?,
        )
    } else {
        None
    };
    let mixed = |a: &Path, b: &Path, what: String| SegmentError::Mixed {
        dir: dir.to_path_buf(),
        first: a
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        second: b
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        what,
    };
    let check_csv = |info: &ModelInfo, from: &Path| -> Result<(), SegmentError> {
        if let (Some(want), true) = (info.households_csv, csv.is_file()) {
            let got = Digest::of_file(&csv)?;
            if got != want {
                return Err(mixed(
                    &csv,
                    from,
                    format!("households.csv has {got}, the model was written with {want}"),
                ));
            }
        }
        Ok(())
    };
    if bin.is_file() {
        let m = read_bin(&bin)?;
        if let Some(j) = &json_info {
            let same = j.k == m.info.k
                && j.households == m.info.households
                && j.cluster_sizes == m.info.cluster_sizes
                && j.households_csv == m.info.households_csv;
            if !same {
                return Err(mixed(
                    &json,
                    &bin,
                    format!(
                        "model.json has k = {} over {} households, model.bin k = {} over {}",
                        j.k, j.households, m.info.k, m.info.households
                    ),
                ));
            }
        }
        check_csv(&m.info, &bin)?;
        check_shape(&m.info, &m.households).map_err(|w| SegmentError::ModelFile {
            path: bin.clone(),
            message: format!("its households disagree with its fit: {w}"),
        })?;
        return Ok(LoadedModel {
            dir: dir.to_path_buf(),
            info: Some(m.info),
            households: m.households,
        });
    }
    let parquet = dir.join("households.parquet");
    let households = if csv.is_file() {
        if let Some(j) = &json_info {
            check_csv(j, &json)?;
        }
        read_households_csv(&csv)?
    } else if parquet.is_file() {
        read_households_parquet(&parquet)?
    } else {
        return Err(SegmentError::NoModel {
            path: dir.to_path_buf(),
        });
    };
    let csv = if csv.is_file() { csv } else { parquet };
    if let Some(j) = &json_info {
        check_shape(j, &households).map_err(|w| mixed(&csv, &json, w))?;
    }
    let info = json_info;
    Ok(LoadedModel {
        dir: dir.to_path_buf(),
        info,
        households,
    })
}

/// Whether the households agree with the fit's k, count and cluster sizes.
fn check_shape(info: &ModelInfo, households: &[Household]) -> Result<(), String> {
    let mut sizes = vec![0u64; info.k as usize];
    for h in households {
        match sizes.get_mut(h.cluster as usize) {
            Some(s) => *s += 1,
            None => {
                return Err(format!(
                    "household {} is in cluster {}, but the model has k = {}",
                    h.household_id, h.cluster, info.k
                ))
            }
        }
    }
    if households.len() as u64 != info.households || sizes != info.cluster_sizes {
        return Err(format!(
            "{} households in clusters of {:?}, the fit says {} in {:?}",
            households.len(),
            sizes,
            info.households,
            info.cluster_sizes
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_households_csv_is_a_model() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
        let m = load(&dir).unwrap();
        assert_eq!(m.households.len(), 300);
        assert!(m.info.is_none());
        assert_eq!(m.k(), 6);
        assert_eq!(m.cluster_sizes().iter().sum::<u64>(), 300);
        assert!(m.households[0].pca_x.is_nan());
    }

    #[test]
    fn bin_round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let info = ModelInfo {
            viewpulse: "test".into(),
            demographics: "d.csv".into(),
            k: 2,
            seed: 3,
            runs: 10,
            refine: 8,
            sample: 0,
            inertia: 1.5,
            households: 2,
            cluster_sizes: vec![1, 1],
            feature_names: vec!["a".into()],
            centroids: vec![vec![0.0], vec![1.0]],
            centroids_pca: vec![[0.0, 0.0], [1.0, 0.0]],
            pca_components: vec![[1.0, 0.0]],
            pca_explained: [1.0, 0.0],
            category_orders: BTreeMap::new(),
            max_abs: BTreeMap::new(),
            rows_read: 2,
            skipped: 0,
            duplicates: 0,
            skipped_examples: vec![],
            households_csv: None,
            k_selection: None,
            profiles: Vec::new(),
        };
        let m = ModelBin {
            info,
            households: vec![
                Household {
                    household_id: -5,
                    cluster: 0,
                    distance: 0.25,
                    rank: 1,
                    pca_x: 0.1,
                    pca_y: 0.2,
                },
                Household {
                    household_id: 7,
                    cluster: 1,
                    distance: 1.25,
                    rank: 1,
                    pca_x: 1.0,
                    pca_y: -0.5,
                },
            ],
        };
        let p = dir.path().join("model.bin");
        write_bin(&p, &m.info, &m.households).unwrap();
        assert_eq!(read_bin(&p).unwrap(), m);
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.households, m.households);
        // truncated
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
        let err = read_bin(&p).unwrap_err().to_string();
        // one sentence naming the file and the cause, not bincode's Debug text
        assert!(
            err.contains("model.bin") && err.contains("cut short") && !err.contains("Io {"),
            "{err}"
        );
        std::fs::write(&p, b"hello world, not a model").unwrap();
        assert!(read_bin(&p).unwrap_err().to_string().contains("magic"));
        let err = load(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn without_a_rank_column_households_are_ranked_by_distance_then_id() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("households.csv");
        // cluster 0: 9 and 4 tie at 0.5 (4 first), 7 at 0.1; without distances, by id
        std::fs::write(
            &p,
            "household_id,cluster,distance\n9,0,0.5\n4,0,0.5\n7,0,0.1\n8,1,2.0\n3,1,1.0\n",
        )
        .unwrap();
        let got = read_households_csv(&p).unwrap();
        let ranks: Vec<(i64, u32)> = got.iter().map(|h| (h.household_id, h.rank)).collect();
        assert_eq!(ranks, [(9, 3), (4, 2), (7, 1), (8, 2), (3, 1)]);
        let mut hs = got.clone();
        for h in &mut hs {
            h.distance = f64::NAN;
        }
        rank_by_distance(&mut hs);
        let ranks: Vec<(i64, u32)> = hs.iter().map(|h| (h.household_id, h.rank)).collect();
        assert_eq!(ranks, [(9, 3), (4, 1), (7, 2), (8, 2), (3, 1)]);
    }

    #[test]
    fn regression_a_households_parquet_with_fractions_or_repeats_is_refused_by_row() {
        use crate::dataset::{doubles, int64, write_parquet};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("households.parquet");
        let write = |ids: Vec<i64>, clusters: Vec<f64>| {
            write_parquet(
                &p,
                vec![
                    ("household_id", false, int64(ids.into_iter())),
                    ("cluster", false, doubles(clusters.into_iter())),
                ],
            )
            .unwrap()
        };
        write(vec![1, 2, 3], vec![0.0, 1.0, 1.0]);
        let got = read_households_parquet(&p).unwrap();
        assert_eq!(got.iter().map(|h| h.cluster).collect::<Vec<_>>(), [0, 1, 1]);
        write(vec![1, 2, 3], vec![0.0, 1.5, 1.0]);
        let err = read_households_parquet(&p).unwrap_err().to_string();
        assert!(
            err.ends_with("households.parquet: row 2: column cluster: 1.5 is not a 64-bit integer"),
            "{err}"
        );
        write(vec![1, 2, 1], vec![0.0, 1.0, 1.0]);
        let err = read_households_parquet(&p).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "row 3: household_id 1 is already on row 1; a household is in one cluster"
            ),
            "{err}"
        );
    }

    #[test]
    fn households_csv_errors_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("households.csv");
        std::fs::write(
            &p,
            "household_id,cluster,distance,rank\n1,0,0.5,1\n2,x,0.5,1\n",
        )
        .unwrap();
        let err = read_households_csv(&p).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("cluster"), "{err}");
        std::fs::write(&p, "household_id,cluster\n1\n").unwrap();
        let err = read_households_csv(&p).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        std::fs::write(&p, "household_id,cluster,distance,rank\n1,0,0.5,0\n").unwrap();
        let err = read_households_csv(&p).unwrap_err().to_string();
        assert!(err.contains("rank"), "{err}");
    }
}
