//! Segmentation (SPEC 2 and 3): read the demographics table, build Spark's feature vectors,
//! cluster them with KMeans, compute each household's distance and rank, project on two PCA
//! components for the plots, and write the model folder that `analyze` and the daemon load.

pub mod cluster;
pub mod demographics;
pub mod features;
pub mod model;
pub mod pca;
pub mod profile;
pub mod scores;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use thiserror::Error;
use tracing::{info, warn};

pub use cluster::KMeansSettings;
pub use model::{Household, KSelection, KSelectionRow, LoadedModel, ModelBin, ModelInfo};

/// Everything that can go wrong while segmenting or loading a model.
#[derive(Debug, Error)]
pub enum SegmentError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A Parquet file could not be decoded.
    #[error("{path}: not a readable Parquet file: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// A required column is absent.
    #[error("{path}: missing column {column}")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
    },
    /// A column has a type that cannot be converted.
    #[error("{path}: column {column} has unusable type {found}")]
    BadColumnType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// Its type.
        found: String,
    },
    /// A CSV row is broken.
    #[error("{path}: line {line}: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A value is missing or unparseable (under `--strict`).
    #[error("{path}: {at}: column {column} value {value:?} {why}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// `line N` (CSV) or `row N` (Parquet).
        at: String,
        /// The column.
        column: String,
        /// The value as read.
        value: String,
        /// Why it is unusable.
        why: String,
    },
    /// A row of a table that cannot be used, said in words.
    #[error("{path}: {at}: {message}")]
    Row {
        /// The file.
        path: PathBuf,
        /// `row N`.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// The table has no data row.
    #[error("{path}: the table has no data rows")]
    EmptyTable {
        /// The file.
        path: PathBuf,
    },
    /// Every row was skipped.
    #[error(
        "{path}: no usable household among {rows} rows ({skipped} skipped; first: {examples})"
    )]
    NoHouseholds {
        /// The file.
        path: PathBuf,
        /// Rows read.
        rows: u64,
        /// Rows skipped.
        skipped: u64,
        /// The first problems.
        examples: String,
    },
    /// The demographics folder cannot be listed, or a Parquet output not written.
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    /// A setting is impossible.
    #[error("{0}")]
    Settings(String),
    /// More clusters than households.
    #[error("--k {k} is larger than the number of usable households ({households})")]
    KTooLarge {
        /// Requested k.
        k: usize,
        /// Households available.
        households: usize,
    },
    /// linfa refused the fit.
    #[error("KMeans failed: {0}")]
    KMeans(String),
    /// A model file is corrupt or of another version.
    #[error("{path}: {message}")]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file of the model folder cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The files of a model folder come from different runs.
    #[error("{dir}: {first} and {second} do not belong together ({what}); the folder mixes two models: segment again")]
    Mixed {
        /// The folder.
        dir: PathBuf,
        /// One file.
        first: String,
        /// The file it disagrees with.
        second: String,
        /// How.
        what: String,
    },
    /// The model folder is missing or holds none of model.bin, households.csv, households.parquet.
    #[error("{path}: not a model folder (no model.bin, households.csv or households.parquet); run `viewpulse segment` first")]
    NoModel {
        /// The folder.
        path: PathBuf,
    },
}

impl SegmentError {
    /// The process exit code this error means.
    pub fn exit_code(&self) -> i32 {
        match self {
            SegmentError::Io { source, .. } => crate::exit::reading(source),
            SegmentError::NoModel { .. } => crate::exit::NO_INPUT,
            SegmentError::Dataset(e) => e.exit_code(),
            SegmentError::Write { .. } => crate::exit::IO,
            SegmentError::Settings(_) | SegmentError::KTooLarge { .. } => crate::exit::USAGE,
            _ => crate::exit::DATA,
        }
    }
}

/// Settings of `viewpulse segment`.
#[derive(Debug, Clone)]
pub struct SegmentSettings {
    /// Demographics: a file (Parquet or CSV) or a folder of part files.
    pub demographics: PathBuf,
    /// Model folder to write.
    pub out: PathBuf,
    /// KMeans settings (`kmeans.k` is the k when `k_range` is `None`).
    pub kmeans: KMeansSettings,
    /// Fit every k of this range, score each (`k_selection.csv`) and keep the recommended one.
    pub k_range: Option<(usize, usize)>,
    /// Refuse rows with missing or unparseable values instead of skipping them.
    pub strict: bool,
    /// `households` (and `features`) as CSV, `households.parquet`, or both.
    pub formats: crate::dataset::Formats,
}

/// What `segment` produced.
#[derive(Debug, Clone)]
pub struct Segmented {
    /// The fit (also in `model.json`).
    pub info: ModelInfo,
    /// Every household, by cluster then rank.
    pub households: Vec<Household>,
    /// Milliseconds per step: read, features, kmeans, pca, write.
    pub timing: BTreeMap<String, f64>,
}

/// How many distinct feature rows there are (bit-exact).
fn distinct_rows(x: ndarray::ArrayView2<f64>) -> usize {
    let rows: std::collections::HashSet<Vec<u64>> = x
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|v| v.to_bits()).collect())
        .collect();
    rows.len()
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Run SPEC sections 2 and 3 and write the model folder `s.out`, all at once.
pub fn segment(s: &SegmentSettings) -> Result<Segmented, SegmentError> {
    let staged = model::Staged::new(&s.out)?;
    let seg = segment_into(s, staged.path(), |_, _| Ok::<(), SegmentError>(()))?;
    staged.commit()?;
    Ok(seg)
}

/// Run SPEC sections 2 and 3 and write the model's files into `dir` (a
/// [`model::Staged`] folder that the caller commits). `alongside` gets the fit and the
/// households (by cluster then rank) as soon as they are known, and runs on a thread of its
/// own while the model's files are written (the charts).
pub fn segment_into<E, F>(s: &SegmentSettings, dir: &Path, alongside: F) -> Result<Segmented, E>
where
    E: From<SegmentError> + Send,
    F: FnOnce(&ModelInfo, &[Household]) -> Result<(), E> + Send,
{
    let mut timing = BTreeMap::new();
    let t = Instant::now();
    let spin = crate::progress::spinner("reading demographics");
    let d = demographics::read(&s.demographics, s.strict)?;
    spin.finish_and_clear();
    timing.insert("read_ms".to_string(), ms(t));
    if d.skipped > 0 || d.duplicates > 0 {
        warn!(
            file = %s.demographics.display(),
            skipped = d.skipped,
            duplicates = d.duplicates,
            first = %d.skipped_examples.join("; "),
            "demographics rows skipped"
        );
    }
    info!(
        households = d.len(),
        rows = d.rows_read,
        "demographics read"
    );

    let t = Instant::now();
    let spec = features::fit(&d);
    let x = features::transform(&d, &spec);
    timing.insert("features_ms".to_string(), ms(t));

    // features.csv (the largest file) and the PCA need only the features: each is done on a
    // thread of its own while KMeans runs (whose sample search and refinements leave a core
    // idle part of the time); the other files follow
    std::thread::scope(|scope| {
        let features = s.formats.csv.then(|| {
            let (dir, ids, x) = (dir, &d.household_id, x.view());
            scope.spawn(move || model::write_features(&dir.join("features.csv"), ids, x))
        });
        let pca = {
            let x = x.view();
            scope.spawn(move || {
                let t = Instant::now();
                (pca::fit(x), ms(t))
            })
        };
        let pca = || crate::parallel::joined(pca.join());
        let seg = cluster_and_write(s, dir, &d, &spec, x.view(), timing, pca, alongside);
        if let Some(f) = features {
            crate::parallel::joined(f.join())?;
        }
        seg
    })
}

/// KMeans and every file of the model but features.csv, with `alongside` (see
/// [`segment_into`]) on a thread of its own while the files are written. `pca` gives the
/// PCA (fitted beside KMeans) and the milliseconds it took.
#[allow(clippy::too_many_arguments)]
fn cluster_and_write<E, F>(
    s: &SegmentSettings,
    dir: &Path,
    d: &demographics::Demographics,
    spec: &features::FeatureSpec,
    x: ndarray::ArrayView2<f64>,
    mut timing: BTreeMap<String, f64>,
    pca: impl FnOnce() -> (pca::Pca, f64),
    alongside: F,
) -> Result<Segmented, E>
where
    E: From<SegmentError> + Send,
    F: FnOnce(&ModelInfo, &[Household]) -> Result<(), E> + Send,
{
    let t = Instant::now();
    let spin = crate::progress::spinner(&match s.k_range {
        None => format!(
            "KMeans k={} over {} households ({} runs)",
            s.kmeans.k,
            d.len(),
            s.kmeans.runs
        ),
        Some((a, b)) => format!("KMeans k={a}..{b} over {} households", d.len()),
    });
    let (cl, k_selection) = match s.k_range {
        None => (cluster::fit(x.view(), &d.household_id, &s.kmeans)?, None),
        Some(range) => {
            let (cl, selection) = choose_k(x, &d.household_id, &s.kmeans, range)?;
            write_k_selection(&dir.join("k_selection.csv"), &selection)?;
            (cl, Some(selection))
        }
    };
    spin.finish_and_clear();
    let kmeans = KMeansSettings {
        k: cl.centroids.nrows(),
        ..s.kmeans
    };
    let kmeans_ms = ms(t);
    timing.insert("kmeans_ms".to_string(), kmeans_ms);
    info!(k = kmeans.k, inertia = cl.inertia, sizes = ?cl.sizes, kmeans_ms, "clustered");
    let empty: Vec<usize> = (0..cl.sizes.len()).filter(|&c| cl.sizes[c] == 0).collect();
    if !empty.is_empty() {
        warn!(
            k = kmeans.k,
            empty = ?empty,
            distinct_rows = distinct_rows(x.view()),
            "some clusters have no household: the households have fewer distinct feature rows than k; choose a smaller --k"
        );
    }

    let t = Instant::now();
    let profiles = profile::profiles(d, &cl.cluster, kmeans.k, &spec.categories);
    profile::write_csv(&dir.join("profiles.csv"), &profiles)?;
    timing.insert("profiles_ms".to_string(), ms(t));
    for p in &profiles {
        info!(cluster = p.cluster, households = p.households, label = %p.label, "profile");
    }

    let (p, pca_ms) = pca();
    timing.insert("pca_ms".to_string(), pca_ms);

    // each household with its row in the feature matrix, by cluster then rank
    let mut rows: Vec<(Household, usize)> = (0..d.len())
        .map(|i| {
            let (px, py) = p.project(x.row(i));
            let h = Household {
                household_id: d.household_id[i],
                cluster: cl.cluster[i],
                distance: cl.distance[i],
                rank: cl.rank[i],
                pca_x: px,
                pca_y: py,
            };
            (h, i)
        })
        .collect();
    rows.sort_unstable_by_key(|(h, _)| (h.cluster, h.rank));

    let mut info = ModelInfo {
        viewpulse: env!("CARGO_PKG_VERSION").to_string(),
        demographics: s.demographics.display().to_string(),
        k: kmeans.k as u32,
        seed: s.kmeans.seed,
        runs: s.kmeans.runs as u32,
        refine: s.kmeans.refine as u32,
        sample: cluster::sample_rows(&d.household_id, s.kmeans.sample, s.kmeans.seed)
            .map_or(0, |r| r.len() as u64),
        inertia: cl.inertia,
        households: d.len() as u64,
        cluster_sizes: cl.sizes.clone(),
        feature_names: spec.names(),
        centroids: cl
            .centroids
            .rows()
            .into_iter()
            .map(|r| r.to_vec())
            .collect(),
        centroids_pca: cl
            .centroids
            .rows()
            .into_iter()
            .map(|r| {
                let (a, b) = p.project(r);
                [a, b]
            })
            .collect(),
        pca_components: p
            .components
            .rows()
            .into_iter()
            .map(|r| [r[0], r[1]])
            .collect(),
        pca_explained: p.explained,
        category_orders: demographics::CATEGORICAL
            .iter()
            .zip(&spec.categories)
            .map(|(c, v)| (c.to_string(), v.clone()))
            .collect(),
        max_abs: demographics::NUMERIC
            .iter()
            .zip(&spec.max_abs)
            .map(|(c, v)| (c.to_string(), *v))
            .collect(),
        rows_read: d.rows_read,
        skipped: d.skipped,
        duplicates: d.duplicates,
        skipped_examples: d.skipped_examples.clone(),
        households_csv: None,
        k_selection,
        profiles,
    };

    let (households, feature_rows): (Vec<Household>, Vec<usize>) = rows.into_iter().unzip();
    let t = Instant::now();
    let spin = crate::progress::spinner("writing the model");
    std::thread::scope(|scope| {
        // `alongside` gets its own copy: the files below complete `info` with the CSV's digest
        let (shown, households) = (info.clone(), &households);
        let beside = scope.spawn(move || alongside(&shown, households));
        let written =
            write_households_files(s, dir, households, &feature_rows, x).and_then(|csv| {
                info.households_csv = csv;
                write_json(&dir.join("model.json"), &info)?;
                model::write_bin(&dir.join("model.bin"), &info, households)
            });
        let charts = beside.join();
        // the model's files' error first: the charts' is likely the same (a full disk)
        written?;
        crate::parallel::joined(charts)
    })?;
    spin.finish_and_clear();
    timing.insert("write_ms".to_string(), ms(t));
    info!(timing = ?timing, "model written");
    Ok(Segmented {
        info,
        households,
        timing,
    })
}

/// `households.parquet` and `households.csv` as the formats ask; the CSV's digest.
fn write_households_files(
    s: &SegmentSettings,
    dir: &Path,
    households: &[Household],
    feature_rows: &[usize],
    x: ndarray::ArrayView2<f64>,
) -> Result<Option<model::Digest>, SegmentError> {
    if s.formats.parquet {
        model::write_households_parquet(
            &dir.join("households.parquet"),
            households,
            feature_rows,
            x,
        )?;
    }
    if s.formats.csv {
        return Ok(Some(model::write_households(
            &dir.join("households.csv"),
            households,
        )?));
    }
    Ok(None)
}

fn write_json(path: &Path, info: &ModelInfo) -> Result<(), SegmentError> {
    let text = serde_json::to_string_pretty(info).map_err(|e| SegmentError::ModelFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(path, text + "\n").map_err(|e| SegmentError::Write {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Households the silhouette of a k range is computed on, at most (a seeded sample above it).
pub const SILHOUETTE_SAMPLE: usize = 20_000;

/// Fit every k of `first..=last` with the same settings (each exactly as `--k` alone would),
/// score each, and return the clustering of the recommended k with the table.
pub fn choose_k(
    x: ndarray::ArrayView2<f64>,
    ids: &[i64],
    kmeans: &KMeansSettings,
    (first, last): (usize, usize),
) -> Result<(cluster::Clustering, KSelection), SegmentError> {
    if last > ids.len() {
        return Err(SegmentError::Settings(format!(
            "--k {first}..{last}: {last} is larger than the number of usable households ({})",
            ids.len()
        )));
    }
    // each k's centroids, inertia and labels (the chosen k's households are assigned again at
    // the end: the same nearest-centroid pass `fit` ends with)
    let picked = cluster::sample_exact(ids, SILHOUETTE_SAMPLE, kmeans.seed);
    let mut fits: Vec<(ndarray::Array2<f64>, f64)> = Vec::new();
    let mut labelings: Vec<(usize, Vec<u32>)> = Vec::new();
    let mut ch_db = Vec::new();
    for k in first..=last {
        let cl = cluster::fit(x, ids, &KMeansSettings { k, ..*kmeans })?;
        info!(k, inertia = cl.inertia, "k range: fitted");
        ch_db.push((
            scores::calinski_harabasz(x, &cl.cluster, k),
            scores::davies_bouldin(x, &cl.cluster, k),
        ));
        let labels = match &picked {
            Some(rows) => rows.iter().map(|&i| cl.cluster[i]).collect(),
            None => cl.cluster.clone(),
        };
        labelings.push((k, labels));
        fits.push((cl.centroids, cl.inertia));
    }
    let sample = match &picked {
        Some(rows) => x.select(ndarray::Axis(0), rows),
        None => x.to_owned(),
    };
    let threads = crate::source::threads(0);
    let silhouettes = scores::silhouettes(sample.view(), &labelings, threads);
    let rows: Vec<scores::KScore> = fits
        .iter()
        .zip(&silhouettes)
        .zip(&ch_db)
        .map(
            |(((centroids, inertia), &silhouette), &(ch, db))| scores::KScore {
                k: centroids.nrows(),
                inertia: *inertia,
                scores: scores::Scores {
                    silhouette,
                    calinski_harabasz: ch,
                    davies_bouldin: db,
                },
            },
        )
        .collect();
    let (recommended, why) = scores::recommend(&rows)
        .ok_or_else(|| SegmentError::Settings(format!("--k {first}..{last} holds no k to fit")))?;
    info!(recommended, why = %why, "k range: recommended");
    let centroids = fits
        .into_iter()
        .map(|(c, _)| c)
        .find(|c| c.nrows() == recommended)
        .ok_or_else(|| SegmentError::Settings(format!("k = {recommended} was not fitted")))?;
    let chosen = cluster::assign(x, ids, centroids);
    Ok((
        chosen,
        KSelection {
            recommended: recommended as u32,
            why,
            silhouette_sample: sample.nrows() as u64,
            scores: rows
                .iter()
                .map(|r| KSelectionRow {
                    k: r.k as u32,
                    inertia: r.inertia,
                    silhouette: r.scores.silhouette,
                    calinski_harabasz: r.scores.calinski_harabasz,
                    davies_bouldin: r.scores.davies_bouldin,
                })
                .collect(),
        },
    ))
}

/// Write `k_selection.csv`: `k,inertia,silhouette,calinski_harabasz,davies_bouldin,recommended`.
fn write_k_selection(path: &Path, sel: &KSelection) -> Result<(), SegmentError> {
    let mut text =
        String::from("k,inertia,silhouette,calinski_harabasz,davies_bouldin,recommended\n");
    let mut f = ryu::Buffer::new();
    for r in &sel.scores {
        text.push_str(&r.k.to_string());
        for v in [
            r.inertia,
            r.silhouette,
            r.calinski_harabasz,
            r.davies_bouldin,
        ] {
            text.push(',');
            text.push_str(f.format(v));
        }
        text.push_str(if r.k == sel.recommended {
            ",true\n"
        } else {
            ",false\n"
        });
    }
    std::fs::write(path, text).map_err(|e| SegmentError::Write {
        path: path.to_path_buf(),
        source: e,
    })
}

/// `--k`: one k, or an inclusive range `A..B` to choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KChoice {
    /// This k.
    Fixed(usize),
    /// Every k from the first to the last, both included.
    Range(usize, usize),
}

impl std::str::FromStr for KChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let number = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("{text:?} is not a number of clusters (N) or a range (A..B)"))
        };
        match text.split_once("..") {
            None => match number(text)? {
                0 => Err("k must be at least 1".into()),
                k => Ok(KChoice::Fixed(k)),
            },
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b.trim_start_matches('='))?);
                if a == b && a > 0 {
                    Err(format!(
                        "the range {text:?} holds one k: give it alone (--k {a}) or a wider range (for example 2..12)"
                    ))
                } else if a < 2 || b <= a {
                    Err(format!(
                        "the range {text:?} must go from at least 2 up to a larger k (for example 2..12): a silhouette needs two clusters"
                    ))
                } else {
                    Ok(KChoice::Range(a, b))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KChoice;

    #[test]
    fn k_is_a_number_or_a_range_and_each_mistake_is_said() {
        assert_eq!("6".parse::<KChoice>(), Ok(KChoice::Fixed(6)));
        assert_eq!("2..12".parse::<KChoice>(), Ok(KChoice::Range(2, 12)));
        assert_eq!("2..=12".parse::<KChoice>(), Ok(KChoice::Range(2, 12)));
        let err = |t: &str| t.parse::<KChoice>().unwrap_err();
        assert!(err("0").contains("at least 1"), "{}", err("0"));
        assert!(
            err("five").contains("not a number of clusters"),
            "{}",
            err("five")
        );
        assert!(err("5..5").contains("--k 5"), "{}", err("5..5"));
        assert!(err("1..6").contains("at least 2"), "{}", err("1..6"));
        assert!(err("8..3").contains("larger k"), "{}", err("8..3"));
    }
}
