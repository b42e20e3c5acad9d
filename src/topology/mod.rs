//! The wiring of every command, in one place: which stages run in which order, with which
//! settings, and where their outputs go. Each stage lives in its own module (`segment`,
//! `source`, `counters`, `ratings`, `sink`, `report`, `generate`, `pipeline`); this module
//! only connects them, times them, and turns their errors into one error type with a
//! meaningful exit code. The daemon (`run`), which starts threads and actors, has its own file,
//! [`run`], where every one of them is started.

pub mod run;

pub use run::run;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use thiserror::Error;
use tracing::{info, warn};

use crate::config::{ConfigError, RunConfig};
use crate::counters::{Counters, CountersError, Membership, Subset};
use crate::generate::{self, GenerateConfig, GenerateError, Generated};
use crate::pipeline::{PipelineError, RunOutcome};
use crate::ratings::{self, Ratings};
use crate::replay::recording::RecordingError;
use crate::replay::ReplayError;
use crate::report::{self, PcaPoint, ReportError, ReportInput};
use crate::secret::{Properties, SecretError};
use crate::segment::{
    self, Household, LoadedModel, ModelInfo, SegmentError, SegmentSettings, Segmented,
};
use crate::sink::{self, SinkError, Summary, Timing};
use crate::source::kafka::{self, KafkaOptions, KafkaUrl};
use crate::source::{self, FileOptions, SourceError};

/// Any failure of a command.
#[derive(Debug, Error)]
pub enum TopologyError {
    /// Segmentation or model loading failed.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// Reading the views failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Writing an output failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The subsets or the model's shape are unusable.
    #[error(transparent)]
    Counters(#[from] CountersError),
    /// A chart or the report could not be written.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// Generating data failed.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// The views hold no valid record, so no rating exists.
    #[error("{source_name}: no valid view record among {records} records ({malformed} malformed: {kinds}); see SPEC 1.2 for the format")]
    NoValidRecord {
        /// The views source.
        source_name: String,
        /// Records read.
        records: u64,
        /// Malformed records.
        malformed: u64,
        /// Malformed records by kind (`too_few_fields 2, empty 1`).
        kinds: String,
    },
    /// A setting is impossible.
    #[error("{0}")]
    Settings(String),
    /// The daemon's configuration is refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The streaming pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Recording or replaying failed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The load test failed.
    #[error(transparent)]
    Loadtest(#[from] crate::replay::loadtest::LoadtestError),
    /// The checkpoint store failed or holds another run's state.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// A `${env:...}` or `${file:...}` reference of a `-X` property cannot be resolved.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// Standard output cannot be written (a closed pipe, a full disk).
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

impl TopologyError {
    /// The process exit code this error means (the README's table; `crate::exit`).
    pub fn exit_code(&self) -> i32 {
        match self {
            TopologyError::Segment(e) => e.exit_code(),
            TopologyError::Source(e) => e.exit_code(),
            TopologyError::Sink(e) => e.exit_code(),
            TopologyError::Counters(e) => e.exit_code(),
            TopologyError::Report(e) => e.exit_code(),
            TopologyError::Generate(e) => e.exit_code(),
            TopologyError::NoValidRecord { .. } => crate::exit::DATA,
            TopologyError::Settings(_) => crate::exit::USAGE,
            TopologyError::Config(e) => e.exit_code(),
            TopologyError::Pipeline(e) => e.exit_code(),
            TopologyError::Replay(e) => e.exit_code(),
            TopologyError::Loadtest(e) => e.exit_code(),
            TopologyError::Checkpoint(e) => e.exit_code(),
            TopologyError::Secret(e) => e.exit_code(),
            TopologyError::Stdout(_) => crate::exit::IO,
        }
    }

    /// Whether the command wrote to a closed pipe on stdout (`viewpulse analyze … | head`):
    /// its reader is gone, so it ends quietly, as `grep` and `rg` do.
    pub fn is_closed_stdout(&self) -> bool {
        match self {
            TopologyError::Stdout(e) => e.kind() == std::io::ErrorKind::BrokenPipe,
            TopologyError::Pipeline(e) => e.is_closed_stdout(),
            _ => false,
        }
    }
}

/// Settings of `viewpulse analyze`.
#[derive(Debug, Clone)]
pub struct AnalyzeSettings {
    /// The model folder.
    pub model: PathBuf,
    /// The views source: a file (plain, gzip or Parquet), a folder of them, or
    /// `kafka://HOST:PORT/TOPIC`.
    pub views: String,
    /// Output folder.
    pub out: PathBuf,
    /// Subsets to rate.
    pub subsets: Vec<Subset>,
    /// Top-K per cluster.
    pub top: usize,
    /// Counting threads (0 = one per core).
    pub threads: usize,
    /// Where to keep malformed records.
    pub dead_letter: Option<PathBuf>,
    /// Write the charts and `report.html`.
    pub report: bool,
    /// librdkafka properties for a `kafka://` source (`-X`; references resolved here).
    pub properties: Properties,
    /// The rating files as CSV, Parquet or both.
    pub formats: crate::dataset::Formats,
    /// What orders the top-K (`--rank-by`).
    pub rank_by: ratings::RankBy,
    /// Fewest views in the cluster for a station to be ranked (`--min-views`).
    pub min_views: u64,
    /// The confidence intervals (`--bootstrap`, `--confidence`).
    pub intervals: crate::uncertainty::IntervalSettings,
}

impl AnalyzeSettings {
    /// The top-K's ranking these settings ask for.
    pub fn ranking(&self) -> ratings::Ranking {
        ratings::Ranking {
            top: self.top,
            rank_by: self.rank_by,
            min_views: self.min_views,
        }
    }
}

/// What `analyze` produced.
#[derive(Debug, Clone)]
pub struct Analyzed {
    /// `summary.json`'s content.
    pub summary: Summary,
    /// The ratings.
    pub ratings: Ratings,
    /// The subsets' agreement, per cluster (`agreement.csv`).
    pub agreement: Vec<crate::agreement::AgreementRow>,
    /// `report.html`, when written.
    pub report: Option<PathBuf>,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Load a model folder into the membership table the counters need.
pub fn load_membership(
    model: &Path,
    subsets: &[Subset],
) -> Result<(LoadedModel, Membership), TopologyError> {
    let m = segment::model::load(model)?;
    let deepest = m.households.iter().map(|h| h.rank).max().unwrap_or(0);
    for s in subsets {
        if let Subset::Every(n) = s {
            if *n > deepest {
                warn!(
                    subset = %s.label(),
                    largest_rank = deepest,
                    model = %model.display(),
                    "the subset holds no household (no cluster has a rank that is a multiple of it): its ratings stay empty"
                );
            }
        }
    }
    let membership = Membership::new(
        subsets.to_vec(),
        m.households
            .iter()
            .map(|h| (h.household_id, h.cluster, h.rank)),
    )?;
    Ok((m, membership))
}

/// A path as the file system will take it: an existing one with its links resolved; else
/// absolute, with `.` and `..` taken away, under its longest existing (resolved) prefix. Two
/// spellings of one file (`m`, `m/x/..`, a link to `m`) come out equal.
pub fn resolved(p: &Path) -> PathBuf {
    if let Ok(r) = std::fs::canonicalize(p) {
        return r;
    }
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut clean = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::CurDir => {}
            c => clean.push(c),
        }
    }
    let mut existing = clean.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match existing.file_name() {
            Some(n) => {
                rest.push(n.to_owned());
                existing.pop();
            }
            None => break,
        }
    }
    let mut r = std::fs::canonicalize(&existing).unwrap_or(existing);
    for n in rest.iter().rev() {
        r.push(n);
    }
    r
}

/// The files `analyze` writes in its `--out` folder.
fn analysis_file(name: &str) -> bool {
    [
        "popularity.csv",
        "genpop.csv",
        "diff_rank.csv",
        "popularity.parquet",
        "genpop.parquet",
        "diff_rank.parquet",
        "agreement.csv",
        "resamples.csv",
        "summary.json",
        "report.html",
    ]
    .contains(&name)
        || name.ends_with(".png")
}

/// Refuse (exit 2, before any work) an analysis whose outputs would overwrite its inputs or
/// one another: `--out` the model folder or inside it, a views file or a dead-letter file
/// that is one of the files it writes, a dead-letter file that is the views file, a file of
/// the model, or the `--out` folder.
fn check_analyze_paths(s: &AnalyzeSettings) -> Result<(), TopologyError> {
    let refuse = |m: String| Err(TopologyError::Settings(m));
    let (out, model) = (resolved(&s.out), resolved(&s.model));
    if out.starts_with(&model) {
        return refuse(format!(
            "--out {} is the model folder {} or inside it: give the analysis a folder of its own",
            s.out.display(),
            s.model.display()
        ));
    }
    if out.exists() && !out.is_dir() {
        return refuse(format!(
            "--out {}: exists and is not a folder",
            s.out.display()
        ));
    }
    let in_out = |p: &Path| {
        p.parent() == Some(out.as_path())
            && p.file_name()
                .is_some_and(|n| analysis_file(&n.to_string_lossy()))
    };
    let views = (!KafkaUrl::is_kafka(&s.views)).then(|| resolved(Path::new(&s.views)));
    if views
        .as_deref()
        .is_some_and(|v| v.is_dir() && out.starts_with(v))
    {
        return refuse(format!(
            "--views {} is a folder that holds --out {}: the analysis's files would become views; give the analysis another folder",
            s.views,
            s.out.display()
        ));
    }
    if views.as_deref().is_some_and(in_out) {
        return refuse(format!(
            "--views {} is a file the analysis writes in --out {}: give the analysis another folder",
            s.views,
            s.out.display()
        ));
    }
    if let Some(dl) = &s.dead_letter {
        let dead = resolved(dl);
        let clash = if Some(&dead) == views.as_ref() {
            Some("the views file")
        } else if views
            .as_ref()
            .is_some_and(|v| v.is_dir() && dead.starts_with(v))
        {
            Some("inside the views folder, where it would replace or become views")
        } else if dead.starts_with(&model) {
            Some("in the model folder")
        } else if dead == out {
            Some("the --out folder")
        } else if in_out(&dead) {
            Some("a file the analysis writes")
        } else {
            None
        };
        if let Some(what) = clash {
            return refuse(format!(
                "--dead-letter {} is {what}: give the dead letters a file of their own",
                dl.display()
            ));
        }
    }
    Ok(())
}

/// SPEC section 4 over a bounded source: count, rate, write the files and the report.
pub fn analyze(s: &AnalyzeSettings) -> Result<Analyzed, TopologyError> {
    let total = Instant::now();
    if s.top == 0 {
        return Err(TopologyError::Settings("--top must be at least 1".into()));
    }
    if s.min_views == 0 {
        return Err(TopologyError::Settings(
            "--min-views must be at least 1 (a station needs a view to be ranked)".into(),
        ));
    }
    let confidence = s.intervals.confidence;
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(TopologyError::Settings(format!(
            "--confidence {confidence}: must be between 0 and 1, such as 0.95"
        )));
    }
    if s.threads > source::MAX_THREADS {
        return Err(TopologyError::Settings(format!(
            "--threads must be at most {} (0 = one per core)",
            source::MAX_THREADS
        )));
    }
    let url = if KafkaUrl::is_kafka(&s.views) {
        Some(KafkaUrl::parse(&s.views)?)
    } else {
        None
    };
    let properties = s.properties.resolve("-X ")?;
    kafka::check_properties(&properties)
        .map_err(|m| TopologyError::Settings(format!("-X: {m}")))?;
    check_analyze_paths(s)?;
    if !s.formats.csv && !s.formats.parquet {
        return Err(TopologyError::Settings("--format names no format".into()));
    }
    // the dead-letter file goes in place only if the whole analysis succeeds
    let dead = s.dead_letter.as_deref().map(sink::Staged::new);
    let dead_path = dead.as_ref().map(|d| d.path().to_path_buf());
    let t = Instant::now();
    let (model, membership) = load_membership(&s.model, &s.subsets)?;
    let membership = membership.with_groups(s.intervals.groups());
    let load_model_ms = ms(t);
    info!(
        households = membership.len(),
        clusters = membership.clusters(),
        "model loaded"
    );

    let t = Instant::now();
    let (counters, threads) = match &url {
        Some(url) => {
            let read = kafka::count_topic(
                url,
                &membership,
                &KafkaOptions {
                    properties,
                    ..KafkaOptions::default()
                },
                dead_path.as_deref(),
            )?;
            info!(%url, offsets = ?read.offsets, "topic read to its end");
            (read.counters, 1)
        }
        None => {
            let read = source::count_file(
                Path::new(&s.views),
                &membership,
                &FileOptions {
                    threads: s.threads,
                    dead_letter: dead_path.clone(),
                    ..FileOptions::default()
                },
            )?;
            (read.counters, read.threads)
        }
    };
    let count_ms = ms(t);
    let c: &Counters = &counters;
    info!(
        records = c.records,
        valid = c.valid,
        malformed = c.malformed.total(),
        unknown_household = c.unknown_household,
        ms = count_ms,
        "views counted"
    );
    if c.malformed.total() > 0 {
        warn!(
            malformed = c.malformed.total(),
            by_kind = ?c.malformed.by_kind().filter(|(_, v)| *v > 0).collect::<Vec<_>>(),
            dead_letter = ?s.dead_letter,
            "malformed view records skipped"
        );
    }
    if c.valid == 0 {
        // the outputs, the dead letters included, change only when the analysis succeeds:
        // the message says what the malformed records were
        return Err(TopologyError::NoValidRecord {
            source_name: s.views.clone(),
            records: c.records,
            malformed: c.malformed.total(),
            kinds: c
                .malformed
                .by_kind()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }

    let t = Instant::now();
    let ranking = s.ranking();
    let mut r = ratings::compute_ranked(c, &s.subsets, ranking);
    let rate_ms = ms(t);
    let t = Instant::now();
    let interval_threads = source::threads(s.threads);
    crate::uncertainty::annotate(
        &mut r,
        c,
        &s.subsets,
        ranking,
        &s.intervals,
        interval_threads,
    );
    let agreement =
        crate::agreement::agreement(&crate::agreement::rankings(c, &s.subsets, ranking), s.top);
    let intervals_ms = ms(t);
    info!(
        method = ?s.intervals.method,
        groups = c.groups(),
        ms = intervals_ms,
        "intervals and agreement computed"
    );

    let t = Instant::now();
    std::fs::create_dir_all(&s.out).map_err(|e| SinkError::Io {
        path: s.out.clone(),
        source: e,
    })?;
    sink::write_ratings(&s.out, &r, s.formats)?;
    sink::write_agreement(&s.out.join("agreement.csv"), &agreement)?;
    let resamples = s.out.join("resamples.csv");
    match s.intervals.method {
        crate::uncertainty::Method::Bootstrap { resamples: n, seed } if n > 0 => {
            sink::write_resamples(&resamples, &crate::uncertainty::plan(seed, n, c.groups()))?;
        }
        _ => sink::remove_old_file(&resamples)?,
    }
    let mut summary = Summary {
        source: s.views.clone(),
        model: s.model.display().to_string(),
        records: c.records,
        valid: c.valid,
        unknown_household: c.unknown_household,
        clustered_views: c.valid - c.unknown_household,
        households: membership.len() as u64,
        clusters: membership.clusters(),
        stations: c.stations().len() as u64,
        subsets: s.subsets.iter().map(|x| x.label()).collect(),
        top: s.top,
        threads,
        ..Summary::default()
    };
    summary.set_malformed(&c.malformed);
    let charts = if s.report {
        Some(write_charts(&s.out, &model, &r, &summary)?)
    } else {
        None
    };
    // the timing is complete before the report shows it (the report and summary.json
    // themselves, a few milliseconds, are the only writes it leaves out)
    let write_ms = ms(t);
    summary.timing = Timing {
        load_model_ms,
        count_ms,
        rate_ms,
        intervals_ms,
        write_ms,
        total_ms: ms(total),
        records_per_second: c.records as f64 / (count_ms / 1000.0).max(1e-9),
    };
    let report_path = match &charts {
        Some(ch) => Some(write_report_html(
            &s.out, &model, &r, &summary, s.top, ch, &agreement,
        )?),
        None => None,
    };
    sink::write_json(&s.out.join("summary.json"), &summary)?;
    if let Some(d) = dead {
        d.commit()?;
    }
    Ok(Analyzed {
        summary,
        ratings: r,
        agreement,
        report: report_path,
    })
}

/// The PCA points of a model (empty when it has none).
fn pca_points(households: &[Household]) -> Vec<PcaPoint> {
    households
        .iter()
        .filter(|h| h.pca_x.is_finite() && h.pca_y.is_finite())
        .map(|h| PcaPoint {
            x: h.pca_x,
            y: h.pca_y,
            cluster: h.cluster,
        })
        .collect()
}

fn centroids_2d(info: Option<&ModelInfo>) -> Vec<(f64, f64)> {
    info.map(|i| i.centroids_pca.iter().map(|c| (c[0], c[1])).collect())
        .unwrap_or_default()
}

/// The charts of a fit: `pca.png`, `cluster_sizes.png` and, for a k range,
/// `k_selection.png`; the PCA plot, the largest, on a thread of its own.
pub fn model_charts(
    dir: &Path,
    info: &ModelInfo,
    households: &[Household],
) -> Result<(), TopologyError> {
    std::thread::scope(|scope| {
        let pca = scope.spawn(|| {
            let points = pca_points(households);
            if points.is_empty() {
                return Ok(());
            }
            report::pca_scatter(
                &dir.join("pca.png"),
                &points,
                info.k,
                &centroids_2d(Some(info)),
            )
        });
        let others = report::cluster_sizes(&dir.join("cluster_sizes.png"), &info.cluster_sizes)
            .and_then(|()| match &info.k_selection {
                Some(sel) => report::k_selection(&dir.join("k_selection.png"), sel),
                None => Ok(()),
            });
        crate::parallel::joined(pca.join())?;
        Ok(others?)
    })
}

fn write_charts(
    out: &Path,
    model: &LoadedModel,
    r: &Ratings,
    summary: &Summary,
) -> Result<Charts, TopologyError> {
    let k = model.k();
    let points = pca_points(&model.households);
    let pca = out.join("pca.png");
    let pca_png = if points.is_empty() {
        None
    } else {
        report::pca_scatter(&pca, &points, k, &centroids_2d(model.info.as_ref()))?;
        Some(pca.as_path())
    };
    let sizes = model.cluster_sizes();
    let sizes_path = out.join("cluster_sizes.png");
    report::cluster_sizes(&sizes_path, &sizes)?;
    // one diff-rank chart per subset, every one in the report
    let mut diff_pngs = Vec::new();
    for label in report::column_order(&summary.subsets) {
        let rows: Vec<_> = r
            .diff_rank
            .iter()
            .filter(|d| d.subset == label)
            .cloned()
            .collect();
        let png = out.join(format!("diff_rank_{label}.png"));
        report::diff_rank_bars(&png, &rows, &label, k)?;
        diff_pngs.push((label, png));
    }
    Ok(Charts {
        pca_png: pca_png.map(Path::to_path_buf),
        sizes_path,
        sizes,
        diff_pngs,
    })
}

/// The charts of an analysis, drawn before the timing is known.
struct Charts {
    pca_png: Option<PathBuf>,
    sizes_path: PathBuf,
    sizes: Vec<u64>,
    diff_pngs: Vec<(String, PathBuf)>,
}

/// `report.html`, with the charts and the summary (its timing complete).
fn write_report_html(
    out: &Path,
    model: &LoadedModel,
    r: &Ratings,
    summary: &Summary,
    top: usize,
    charts: &Charts,
    agreement: &[crate::agreement::AgreementRow],
) -> Result<PathBuf, TopologyError> {
    let k = model.k();
    let html = out.join("report.html");
    report::write_html(
        &html,
        &ReportInput {
            title: "viewpulse: station diff-rank by household segment",
            ratings: r,
            summary,
            k,
            top,
            pca_png: charts.pca_png.as_deref(),
            cluster_sizes_png: Some(&charts.sizes_path),
            diff_rank_pngs: &charts.diff_pngs,
            cluster_sizes: &charts.sizes,
            profiles: model.info.as_ref().map_or(&[], |i| i.profiles.as_slice()),
            agreement,
        },
    )?;
    Ok(html)
}

/// `viewpulse segment`, with its charts. The model folder changes all at once: every file, the charts included, is written into a
/// hidden folder beside it that replaces it at the end ([`segment::model::Staged`]).
pub fn segment(s: &SegmentSettings, charts: bool) -> Result<Segmented, TopologyError> {
    let demographics = resolved(&s.demographics);
    if demographics.is_dir() && resolved(&s.out).starts_with(&demographics) {
        return Err(TopologyError::Settings(format!(
            "--out {} is inside the demographics folder {}: its files would be read as demographics next time; give the model a folder of its own",
            s.out.display(),
            s.demographics.display()
        )));
    }
    if !s.formats.csv && !s.formats.parquet {
        return Err(TopologyError::Settings("--format names no format".into()));
    }
    let staged = segment::model::Staged::new(&s.out)?;
    let dir = staged.path();
    let seg = segment::segment_into(s, dir, |info, households| {
        if charts {
            model_charts(dir, info, households)?;
        }
        Ok::<(), TopologyError>(())
    })?;
    staged.commit()?;
    Ok(seg)
}

/// `viewpulse generate`.
pub fn generate(cfg: &GenerateConfig, out: &Path) -> Result<Generated, TopologyError> {
    cfg.validate()?;
    Ok(generate::generate(cfg, out)?)
}

/// Stop flag set by SIGINT and SIGTERM (for the commands that are not actix systems).
fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            tracing::warn!(error = %e, "cannot handle signal {sig}: it will stop the process at once");
        }
    }
    stop
}

/// `viewpulse record`: capture a topic into a recording; SIGINT/SIGTERM stop it cleanly.
pub fn record(
    from: &str,
    out: &Path,
    bound: crate::replay::Bound,
    properties: Properties,
) -> Result<crate::replay::Captured, TopologyError> {
    let url = KafkaUrl::parse(from)?;
    let properties = properties.resolve("-X ")?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            TopologyError::Replay(ReplayError::Recording(RecordingError::Write {
                path: out.to_path_buf(),
                source: e,
            }))
        })?;
    }
    let stop = stop_on_signals();
    Ok(crate::replay::capture(
        &url,
        out,
        bound,
        &properties,
        &stop,
    )?)
}

/// `viewpulse replay`: produce a recording or a views file into a topic.
pub fn replay(
    file: &Path,
    to: &str,
    pace: crate::replay::Pace,
    partitions: Option<i32>,
    loops: u32,
    properties: Properties,
) -> Result<crate::replay::Produced, TopologyError> {
    let url = KafkaUrl::parse(to)?;
    let properties = properties.resolve("-X ")?;
    if partitions.is_some_and(|p| p < 1) {
        return Err(TopologyError::Settings(
            "--partitions must be at least 1".into(),
        ));
    }
    if loops == 0 {
        return Err(TopologyError::Settings("--loop must be at least 1".into()));
    }
    let stop = stop_on_signals();
    Ok(crate::replay::replay(
        file,
        &url,
        &crate::replay::ReplaySettings {
            pace,
            partitions,
            loops,
            properties,
        },
        &stop,
        None,
    )?)
}

/// `viewpulse loadtest`.
pub fn loadtest(
    s: &crate::replay::loadtest::LoadtestSettings,
) -> Result<crate::replay::loadtest::LoadtestResult, TopologyError> {
    if s.shards == 0 || s.partitions < 1 || s.trigger_records == 0 || s.loops == 0 {
        return Err(TopologyError::Settings(
            "--shards, --partitions, --trigger-records and --loop must be at least 1".into(),
        ));
    }
    if !s.input.is_file() {
        return Err(TopologyError::Replay(ReplayError::Recording(
            RecordingError::Io {
                path: s.input.clone(),
                source: std::io::Error::from_raw_os_error(2), // ENOENT: "No such file or directory"
            },
        )));
    }
    let s = &crate::replay::loadtest::LoadtestSettings {
        consumer_properties: s.consumer_properties.resolve("-X ")?,
        ..s.clone()
    };
    let (_, membership) = load_membership(&s.model, &s.subsets)?;
    Ok(crate::replay::loadtest::loadtest(s, membership)?)
}

/// What the demo did.
#[derive(Debug, Clone)]
pub struct Demo {
    /// The generated data.
    pub generated: Generated,
    /// The model.
    pub segmented: Segmented,
    /// The batch analysis of the static views.
    pub analyzed: Analyzed,
    /// The streaming run over the stream views, through an in-process Kafka.
    pub streamed: RunOutcome,
    /// Where everything is.
    pub out: PathBuf,
}

/// `viewpulse demo`: generate a small data set, segment it, analyze the static views.
pub fn demo(out: &Path, seed: u64) -> Result<Demo, TopologyError> {
    let data = out.join("data");
    let cfg = GenerateConfig {
        households: 20_000,
        static_records: 1_000_000,
        stream_records: 200_000,
        stations: 300,
        seed,
        ..GenerateConfig::default()
    };
    info!(out = %out.display(), "demo: generating data");
    let generated = generate(&cfg, &data)?;
    let model_dir = out.join("model");
    info!("demo: segmenting households");
    let segmented = segment(
        &SegmentSettings {
            demographics: data.join("demographics.parquet"),
            out: model_dir.clone(),
            kmeans: segment::KMeansSettings::default(),
            k_range: None,
            strict: false,
            formats: crate::dataset::Formats {
                csv: true,
                parquet: true,
            },
        },
        true,
    )?;
    info!("demo: analyzing the static views");
    let analyzed = analyze(&AnalyzeSettings {
        model: model_dir,
        views: data.join("views_static.csv").display().to_string(),
        out: out.join("analysis"),
        subsets: vec![Subset::All, Subset::Every(3), Subset::Every(17)],
        top: 7,
        threads: 0,
        dead_letter: Some(out.join("analysis").join("dead_letter.tsv")),
        report: true,
        properties: Properties::new(),
        formats: crate::dataset::Formats {
            csv: true,
            parquet: true,
        },
        rank_by: ratings::RankBy::Diff,
        min_views: 1,
        intervals: crate::uncertainty::IntervalSettings {
            method: crate::uncertainty::Method::Bootstrap {
                resamples: 200,
                seed,
            },
            confidence: 0.95,
        },
    })?;
    info!(
        "demo: streaming the stream views through an in-process Kafka (librdkafka's mock cluster)"
    );
    let mock_err = |e: rdkafka::error::KafkaError| {
        TopologyError::Source(SourceError::Kafka {
            url: "mock cluster".into(),
            message: e.to_string(),
        })
    };
    let cluster = rdkafka::mocking::MockCluster::new(1).map_err(mock_err)?;
    cluster.create_topic("viewstream", 4, 1).map_err(mock_err)?;
    let url = KafkaUrl {
        brokers: cluster.bootstrap_servers(),
        topic: "viewstream".into(),
    };
    crate::replay::produce_file(&data.join("views_stream.csv"), &url, &Default::default())?;
    let mut cfg = RunConfig {
        model: out.join("model"),
        source: url.to_string(),
        until_end: true,
        ..RunConfig::default()
    };
    cfg.pipeline.subsets = vec!["3".into()];
    cfg.sinks.snapshots = Some(out.join("snapshots.jsonl"));
    // the demo writes its folder anew each time
    cfg.sinks.overwrite = true;
    cfg.sinks.stdout = true;
    let streamed = run(&cfg)?;
    drop(cluster);
    Ok(Demo {
        generated,
        segmented,
        analyzed,
        streamed,
        out: out.to_path_buf(),
    })
}

/// The seed's side-by-side table (all / 17th's / 3rd's per cluster and rank) as text.
/// Columns in the order the subsets were given; rows `1..=top` per cluster, but no deeper
/// than the deepest rank that has a row ([`report::table_ranks`]).
pub fn side_by_side(r: &Ratings, subsets: &[Subset], top: usize) -> String {
    use std::fmt::Write;
    let labels: Vec<String> = subsets.iter().map(|s| s.label()).collect();
    let labels = report::column_order(&labels);
    let clusters = r.diff_rank.iter().map(|d| d.cluster + 1).max().unwrap_or(0);
    let cells: std::collections::HashMap<(&str, u32, u32), &ratings::DiffRankRow> = r
        .diff_rank
        .iter()
        .map(|d| ((d.subset.as_str(), d.cluster, d.rank), d))
        .collect();
    let mut out = String::new();
    let _ = write!(out, "{:>7} {:>4}", "cluster", "rank");
    for l in &labels {
        let head = report::subset_heading(l);
        let _ = write!(out, "  {head:>18}");
    }
    out.push('\n');
    for c in 0..clusters {
        for rank in report::table_ranks(&r.diff_rank, top) {
            let _ = write!(out, "{c:>7} {rank:>4}");
            for l in &labels {
                let cell = cells
                    .get(&(l.as_str(), c, rank))
                    .map(|d| format!("{} ({:+.2})", d.station_num, d.diff_rank))
                    .unwrap_or_default();
                let _ = write!(out, "  {cell:>18}");
            }
            out.push('\n');
        }
    }
    out
}
