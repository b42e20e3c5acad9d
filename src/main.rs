//! The `viewpulse` binary: parse the command line, start tracing, call the library, and turn
//! errors into exit codes. Everything else lives in the library (`viewpulse::topology`).
//! The parsed command line holds secrets (`--http-token`, `-X` passwords), so its types have
//! no `Debug`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;
use viewpulse::counters::Subset;
use viewpulse::generate::GenerateConfig;
use viewpulse::segment::{KMeansSettings, SegmentSettings};
use viewpulse::topology::{self, AnalyzeSettings, TopologyError};

/// TV audience analytics: household segments and the stations each segment over-watches.
#[derive(Parser)]
#[command(name = "viewpulse", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct LogArgs {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "VIEWPULSE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Log filter (tracing-subscriber EnvFilter syntax); RUST_LOG is used when unset.
    #[arg(long, global = true, env = "VIEWPULSE_LOG")]
    log: Option<String>,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Write synthetic demographics and view records (SPEC formats), seeded.
    #[command(
        after_help = "Example:\n  viewpulse generate --out data --households 20000 --static-records 1000000 --seed 7"
    )]
    Generate {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Households with demographics.
        #[arg(long, default_value_t = 10_000)]
        households: u64,
        /// Records of views_static.csv.
        #[arg(long, default_value_t = 200_000)]
        static_records: u64,
        /// Records of views_stream.csv.
        #[arg(long, default_value_t = 100_000)]
        stream_records: u64,
        /// Distinct stations.
        #[arg(long, default_value_t = 400)]
        stations: u32,
        /// Random seed: the same seed writes the same bytes.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Hidden household archetypes.
        #[arg(long, default_value_t = 6)]
        archetypes: u32,
        /// Share of malformed view records.
        #[arg(long, default_value_t = 0.01)]
        malformed_fraction: f64,
        /// Share of view records from households without demographics.
        #[arg(long, default_value_t = 0.05)]
        unknown_fraction: f64,
        /// Worker threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Features, KMeans, distance, rank and PCA (SPEC 2 and 3); writes the model folder.
    #[command(
        after_help = "Example:\n  viewpulse segment --demographics data/demographics.csv --out model --k 6\n  viewpulse segment --demographics data/demographics.csv --out model --k 2..12"
    )]
    Segment {
        /// Demographics: a Parquet or CSV file, or a folder of part files (a Spark, pyarrow or
        /// Polars dataset; `key=value` partition folders give their column).
        #[arg(long)]
        demographics: PathBuf,
        /// Model folder to write.
        #[arg(long)]
        out: PathBuf,
        /// Number of clusters, or a range `A..B` (both included): each k is fitted and scored
        /// (k_selection.csv, k_selection.png) and the recommended one is kept.
        #[arg(long, default_value = "6")]
        k: viewpulse::segment::KChoice,
        /// KMeans seed.
        #[arg(long, default_value_t = 3)]
        seed: u64,
        /// KMeans runs, each from its own greedy k-means++ start (the lowest inertia wins).
        #[arg(long, default_value_t = KMeansSettings::default().runs)]
        runs: usize,
        /// Above this many households the runs search a seeded sample of this size; the best
        /// are then iterated on samples ten times larger each, up to every household (0 =
        /// every run on every household).
        #[arg(long, default_value_t = KMeansSettings::default().sample)]
        sample: usize,
        /// How many of the first sample's best distinct results go on to the next, larger
        /// sample (2 go on from there).
        #[arg(long, default_value_t = KMeansSettings::default().refine)]
        refine: usize,
        /// Refuse a row with a missing or unparseable value instead of skipping it.
        #[arg(long)]
        strict: bool,
        /// Skip the PNG charts.
        #[arg(long)]
        no_charts: bool,
        /// Write households as csv (households.csv, features.csv), parquet
        /// (households.parquet, with each household's features), or csv,parquet.
        #[arg(long, default_value = "csv")]
        format: viewpulse::dataset::Formats,
    },
    /// Popularity, general population and diff-rank (SPEC 4) over a bounded views source.
    #[command(
        after_help = "Example:\n  viewpulse analyze --model model --views data/views_static.csv --out out"
    )]
    Analyze {
        /// Model folder (from `segment`, or one holding only households.csv).
        #[arg(long)]
        model: PathBuf,
        /// Views: a file (plain, .gz or Parquet with the seed's columns), a folder of such files
        /// (read in name order), or kafka://HOST:PORT/TOPIC (read to its end).
        #[arg(long)]
        views: String,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Subsets: `all` and integers n ≥ 2 (households with rank % n == 0).
        #[arg(long, default_value = "all,3,17")]
        subsets: String,
        /// Diff-rank rows kept per cluster.
        #[arg(long, default_value_t = 7)]
        top: usize,
        /// Counting threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Keep malformed records, with their line numbers, in this file.
        #[arg(long)]
        dead_letter: Option<PathBuf>,
        /// Skip the charts and report.html.
        #[arg(long)]
        no_report: bool,
        /// A librdkafka property for a kafka:// source (security, timeouts), KEY=VALUE;
        /// repeatable. VALUE may be ${env:NAME} or ${file:PATH}.
        #[arg(short = 'X', long = "property", value_parser = property)]
        properties: Vec<(String, String)>,
        /// Write the rating files as csv, parquet (typed: station_num a string) or csv,parquet.
        #[arg(long, default_value = "csv")]
        format: viewpulse::dataset::Formats,
        /// Order the top-K by diff (popularity − genpop, SPEC 4) or index (100 · popularity /
        /// genpop, 100 = like everyone).
        #[arg(long, default_value = "diff")]
        rank_by: viewpulse::ratings::RankBy,
        /// Leave stations with fewer views than this in the cluster out of the top-K.
        #[arg(long, default_value_t = 1)]
        min_views: u64,
        /// Bootstrap intervals and rank stability from N resamples of the households (200
        /// when given alone; 0: no interval at all). Without it the intervals are analytic
        /// (delta method over household groups).
        #[arg(long, num_args = 0..=1, default_missing_value = "200", value_name = "N")]
        bootstrap: Option<usize>,
        /// Coverage of the intervals.
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
        /// Seed of the bootstrap's resamples.
        #[arg(long, default_value_t = 3)]
        seed: u64,
    },
    /// The streaming daemon (SPEC 5): snapshots at every trigger from a file or a Kafka topic.
    #[command(
        after_help = "Example:\n  viewpulse run --model model --source kafka://127.0.0.1:9092/views --http-listen 9898 --state-dir state\n  viewpulse run --config deploy/viewpulse.example.toml --print-config"
    )]
    Run(Box<viewpulse::config::RunFlags>),
    /// Capture every record of a topic (partition, offset, timestamp, key, value) into a file.
    #[command(
        after_help = "Example:\n  viewpulse record --from kafka://127.0.0.1:9092/views --out views.rec --until-end"
    )]
    Record {
        /// The topic, kafka://HOST:PORT/TOPIC.
        #[arg(long)]
        from: String,
        /// The recording to write.
        #[arg(long)]
        out: PathBuf,
        /// Stop at the end each partition had when the capture started.
        #[arg(long, conflicts_with_all = ["duration", "max_records"])]
        until_end: bool,
        /// Stop after this long (500ms, 30s, 10m).
        #[arg(long, conflicts_with = "max_records")]
        duration: Option<String>,
        /// Stop after this many records.
        #[arg(long)]
        max_records: Option<u64>,
        /// A librdkafka property for the consumer (security, timeouts), KEY=VALUE; repeatable.
        /// VALUE may be ${env:NAME} or ${file:PATH}.
        #[arg(short = 'X', long = "property", value_parser = property)]
        properties: Vec<(String, String)>,
    },
    /// Produce a recording (or a views file, a record a line) into a topic.
    #[command(
        after_help = "Example:\n  viewpulse replay --file views.rec --to kafka://127.0.0.1:9092/views --rate 50000/s"
    )]
    Replay {
        /// A recording, or a views file (plain or .gz).
        #[arg(long)]
        file: PathBuf,
        /// The topic, kafka://HOST:PORT/TOPIC.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        pace: PaceArgs,
        /// Send each record to the partition of its household among P (creating the topic
        /// with P partitions if it does not exist).
        #[arg(long)]
        partitions: Option<i32>,
        /// A librdkafka property for the producer (security, timeouts), KEY=VALUE; repeatable.
        /// VALUE may be ${env:NAME} or ${file:PATH}.
        #[arg(short = 'X', long = "property", value_parser = property)]
        properties: Vec<(String, String)>,
    },
    /// Start (or use) a broker, run the daemon, replay a recording into it, and report
    /// throughput, lag, snapshot staleness, merge time and memory.
    #[command(
        after_help = "Example:\n  viewpulse loadtest --model model --file views.rec --out loadtest"
    )]
    Loadtest {
        /// A recording, or a views file.
        #[arg(long, required_unless_present = "fetch_broker")]
        file: Option<PathBuf>,
        /// The model folder.
        #[arg(long, required_unless_present = "fetch_broker")]
        model: Option<PathBuf>,
        /// Use this broker (HOST:PORT) instead of starting Apache Kafka.
        #[arg(long)]
        broker: Option<String>,
        /// Fetch Apache Kafka's jars from Maven Central into the cache (once; needs Maven and
        /// Java 17), so that a load test without --broker can start the broker; alone, only
        /// that.
        #[arg(long)]
        fetch_broker: bool,
        /// Daemon shards.
        #[arg(long, default_value_t = 4)]
        shards: usize,
        /// Partitions of the test topic.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Records between triggers.
        #[arg(long, default_value_t = 50_000)]
        trigger_records: u64,
        /// Interval triggers (so the tail of the replay is snapshotted).
        #[arg(long, default_value = "1s")]
        trigger_interval: String,
        #[command(flatten)]
        pace: PaceArgs,
        /// Subsets rated.
        #[arg(long, default_value = "3")]
        subsets: String,
        /// Where loadtest.json and loadtest.png go.
        #[arg(long, default_value = "loadtest")]
        out: PathBuf,
        /// A librdkafka property for the daemon's consumer (fetch.wait.max.ms=50), KEY=VALUE.
        /// VALUE may be ${env:NAME} or ${file:PATH}.
        #[arg(short = 'X', long = "property", value_parser = property)]
        properties: Vec<(String, String)>,
    },
    /// The whole pipeline on an embedded default data set, no setup needed.
    #[command(after_help = "Example:\n  viewpulse demo")]
    Demo {
        /// Where to write everything.
        #[arg(long, default_value = "viewpulse-demo")]
        out: PathBuf,
        /// Seed of the generated data.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

/// How `replay` and `loadtest` pace the records they produce.
#[derive(Args)]
struct PaceArgs {
    /// A fixed rate, records a second (50000/s).
    #[arg(long)]
    rate: Option<String>,
    /// The recorded pacing, this many times faster.
    #[arg(long)]
    speed: Option<f64>,
    /// As fast as the broker takes them (the default).
    #[arg(long)]
    max: bool,
    /// Play the input this many times.
    #[arg(long = "loop", default_value_t = 1)]
    loops: u32,
}

impl PaceArgs {
    /// The pace these flags ask for (at most one of them).
    fn pace(&self) -> Result<viewpulse::replay::Pace, TopologyError> {
        viewpulse::replay::Pace::from_flags(self.rate.as_deref(), self.speed, self.max)
            .map_err(TopologyError::from)
    }
}

/// `KEY=VALUE` of `--property`.
fn property(s: &str) -> Result<(String, String), String> {
    viewpulse::config::property(s)
}

/// Write to stdout; a failure (a closed pipe, a full disk) is the command's error.
fn emit(text: &str) -> Result<(), TopologyError> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())
        .and_then(|()| o.flush())
        .map_err(TopologyError::Stdout)
}

/// `print!` that returns the command's error instead of panicking.
macro_rules! out {
    ($($t:tt)*) => { emit(&format!($($t)*))? };
}

/// `println!` that returns the command's error instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => { emit(&format!("{}\n", format_args!($($t)*)))? };
}

/// `eprintln!` that cannot panic: a closed stderr loses the line, nothing more.
macro_rules! note {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// `n thing` or `n things`.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Start tracing with `--log` (or `VIEWPULSE_LOG`), else `RUST_LOG`, else `info`; a filter
/// that does not parse is a usage error naming where it came from, not a silent `info`.
fn init_tracing(log: &LogArgs) -> Result<(), String> {
    let bad = |from: &str, f: &str, e: &dyn std::fmt::Display| {
        format!("{from} {f:?} is not a log filter ({e}); examples: info, debug, viewpulse=debug,rdkafka=warn")
    };
    let filter = match &log.log {
        Some(f) => EnvFilter::try_new(f).map_err(|e| bad("--log (VIEWPULSE_LOG)", f, &e))?,
        None => match std::env::var("RUST_LOG") {
            Ok(f) if !f.trim().is_empty() => {
                EnvFilter::try_new(&f).map_err(|e| bad("RUST_LOG", &f, &e))?
            }
            _ => EnvFilter::new("info"),
        },
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match log.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}

fn run(cli: Cli) -> Result<(), TopologyError> {
    match cli.command {
        Command::Generate {
            out,
            households,
            static_records,
            stream_records,
            stations,
            seed,
            archetypes,
            malformed_fraction,
            unknown_fraction,
            threads,
        } => {
            let cfg = GenerateConfig {
                households,
                static_records,
                stream_records,
                stations,
                seed,
                archetypes,
                malformed_fraction,
                unknown_fraction,
                threads,
            };
            let g = topology::generate(&cfg, &out)?;
            outln!(
                "wrote {} households, {} static and {} stream records ({} malformed) to {} in {:.1} s",
                g.households,
                g.static_records,
                g.stream_records,
                g.malformed,
                out.display(),
                g.elapsed_ms / 1000.0
            );
        }
        Command::Segment {
            demographics,
            out,
            k,
            seed,
            runs,
            sample,
            refine,
            strict,
            no_charts,
            format,
        } => {
            let s = SegmentSettings {
                demographics,
                out: out.clone(),
                kmeans: KMeansSettings {
                    k: match k {
                        viewpulse::segment::KChoice::Fixed(k) => k,
                        viewpulse::segment::KChoice::Range(a, _) => a,
                    },
                    seed,
                    runs,
                    sample,
                    refine,
                    ..KMeansSettings::default()
                },
                k_range: match k {
                    viewpulse::segment::KChoice::Fixed(_) => None,
                    viewpulse::segment::KChoice::Range(a, b) => Some((a, b)),
                },
                strict,
                formats: format,
            };
            let seg = topology::segment(&s, !no_charts)?;
            outln!(
                "clustered {} households into {} clusters (sizes {:?}, inertia {:.6}); skipped {}, duplicates {}; model in {}",
                seg.info.households,
                seg.info.k,
                seg.info.cluster_sizes,
                seg.info.inertia,
                seg.info.skipped,
                seg.info.duplicates,
                out.display()
            );
            if let Some(sel) = &seg.info.k_selection {
                outln!(
                    "recommended k = {}: {} (every k in {})",
                    sel.recommended,
                    sel.why,
                    out.join("k_selection.csv").display()
                );
            }
        }
        Command::Analyze {
            model,
            views,
            out,
            subsets,
            top,
            threads,
            dead_letter,
            no_report,
            properties,
            format,
            rank_by,
            min_views,
            bootstrap,
            confidence,
            seed,
        } => {
            use viewpulse::uncertainty::{IntervalSettings, Method};
            let method = match bootstrap {
                None => Method::Analytic,
                Some(0) => Method::Off,
                Some(resamples) => Method::Bootstrap { resamples, seed },
            };
            let subsets = Subset::parse_list(&subsets)
                .map_err(|e| TopologyError::Settings(format!("--subsets {subsets:?}: {e}")))?;
            let a = topology::analyze(&AnalyzeSettings {
                model,
                views,
                out: out.clone(),
                subsets: subsets.clone(),
                top,
                threads,
                dead_letter,
                report: !no_report,
                properties: properties.into_iter().collect(),
                formats: format,
                rank_by,
                min_views,
                intervals: IntervalSettings { method, confidence },
            })?;
            let s = &a.summary;
            out!("{}", topology::side_by_side(&a.ratings, &subsets, top));
            outln!(
                "{} records: {} valid, {} malformed, {} from unknown households; {:.1} M records/s; outputs in {}",
                s.records,
                s.valid,
                s.malformed,
                s.unknown_household,
                s.timing.records_per_second / 1e6,
                out.display()
            );
        }
        Command::Run(args) => {
            let (print, check) = (args.print_config, args.check_config);
            let cfg = args.into_config()?;
            if print {
                out!("{}", cfg.redacted_toml().map_err(TopologyError::from)?);
                return Ok(());
            }
            if check {
                outln!("{}", topology::run::check(&cfg)?);
                return Ok(());
            }
            let out = topology::run(&cfg)?;
            note!(
                "viewpulse: {}, {}",
                count(out.records, "record", "records"),
                count(out.triggers, "snapshot", "snapshots")
            );
        }
        Command::Record {
            from,
            out,
            until_end,
            duration,
            max_records,
            properties,
        } => {
            let bound = if until_end {
                viewpulse::replay::Bound::UntilEnd
            } else if let Some(d) = duration {
                viewpulse::replay::Bound::Duration(viewpulse::config::duration("--duration", &d)?)
            } else if let Some(n) = max_records {
                viewpulse::replay::Bound::MaxRecords(n)
            } else {
                viewpulse::replay::Bound::Never
            };
            let c = topology::record(&from, &out, bound, properties.into_iter().collect())?;
            note!(
                "viewpulse: recorded {} records ({} bytes) from {} partitions in {:.1} s into {}",
                c.records,
                c.bytes,
                c.partitions.len(),
                c.seconds,
                out.display()
            );
        }
        Command::Replay {
            file,
            to,
            pace,
            partitions,
            properties,
        } => {
            let loops = pace.loops;
            let p = topology::replay(
                &file,
                &to,
                pace.pace()?,
                partitions,
                loops,
                properties.into_iter().collect(),
            )?;
            let cut = if p.truncated {
                format!(
                    " (the recording is cut: its {} whole records were read)",
                    p.read
                )
            } else {
                String::new()
            };
            note!(
                "viewpulse: replayed {} records in {:.2} s: {:.0} records/s{cut}",
                p.records,
                p.seconds,
                p.rate
            );
        }
        Command::Loadtest {
            file,
            model,
            broker,
            fetch_broker,
            shards,
            partitions,
            trigger_records,
            trigger_interval,
            pace,
            subsets,
            out,
            properties,
        } => {
            if fetch_broker {
                let libs = viewpulse::kafka_broker::fetch().map_err(|e| {
                    TopologyError::Loadtest(viewpulse::replay::loadtest::LoadtestError::Fixture(e))
                })?;
                note!("Apache Kafka's jars are in {}", libs.display());
            }
            let (Some(file), Some(model)) = (file, model) else {
                return Ok(());
            };
            let loops = pace.loops;
            let pace = pace.pace()?;
            let settings = viewpulse::replay::loadtest::LoadtestSettings {
                input: file,
                model,
                broker,
                partitions,
                shards,
                trigger_records,
                trigger_interval: viewpulse::config::duration(
                    "--trigger-interval",
                    &trigger_interval,
                )?,
                pace,
                loops,
                subsets: Subset::parse_list(&subsets).map_err(TopologyError::from)?,
                out,
                sample_every: std::time::Duration::from_millis(250),
                consumer_properties: properties.into_iter().collect(),
            };
            let r = topology::loadtest(&settings)?;
            out!("{}", viewpulse::replay::loadtest::table(&r));
            outln!(
                "results: {} and {}",
                settings.out.join("loadtest.json").display(),
                settings.out.join("loadtest.png").display()
            );
        }
        Command::Demo { out, seed } => {
            let d = topology::demo(&out, seed)?;
            let subsets = vec![Subset::All, Subset::Every(17), Subset::Every(3)];
            out!(
                "{}",
                topology::side_by_side(&d.analyzed.ratings, &subsets, 7)
            );
            let s = &d.analyzed.summary;
            outln!(
                "demo: {} households in {} clusters; {} view records ({} malformed, {} unknown households)",
                d.segmented.info.households,
                d.segmented.info.k,
                s.records,
                s.malformed,
                s.unknown_household
            );
            outln!(
                "stream: {} through an in-process Kafka, {} in {}",
                count(d.streamed.records, "record", "records"),
                count(d.streamed.triggers, "snapshot", "snapshots"),
                d.out.join("snapshots.jsonl").display()
            );
            if let Some(r) = &d.analyzed.report {
                outln!("report: {}", r.display());
            }
        }
    }
    Ok(())
}

/// `run`'s flags have no clap defaults (a default would override the configuration file's
/// key); their help shows the key's default from [`viewpulse::config::RunConfig`] instead, found
/// by the key each flag's help starts with (`pipeline.shards`, `trigger.records: …`).
fn with_run_defaults(cmd: clap::Command) -> clap::Command {
    let Ok(defaults) = toml::Value::try_from(viewpulse::config::RunConfig::default()) else {
        return cmd;
    };
    let lookup = |key: &str| -> Option<String> {
        let v = key.split('.').try_fold(&defaults, |v, k| v.get(k))?;
        let shown = match v {
            toml::Value::String(s) if s.is_empty() => return None,
            toml::Value::String(s) => s.clone(),
            toml::Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(","),
            toml::Value::Table(_) => return None,
            other => other.to_string(),
        };
        Some(shown)
    };
    cmd.mut_subcommand("run", |run| {
        let ids: Vec<String> = run
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        ids.iter().fold(run, |run, id| {
            run.mut_arg(id, |a| {
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                let key = help.split([':', ' ', ',']).next().unwrap_or_default();
                let valued = matches!(
                    a.get_action(),
                    clap::ArgAction::Set | clap::ArgAction::Append
                );
                match (valued && (key.contains('.') || key == "model"), lookup(key)) {
                    (true, Some(v)) => a.help(format!("{help} [default: {v}]")),
                    _ => a,
                }
            })
        })
    })
}

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let parsed = with_run_defaults(Cli::command())
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are answers (0), anything else a usage error (2); either
            // way the text must reach its reader (`--help > /dev/full` is 74)
            let code = if e.use_stderr() { 2 } else { 0 };
            return match e.print() {
                Ok(()) => ExitCode::from(code),
                Err(_) => ExitCode::from(viewpulse::exit::IO as u8),
            };
        }
    };
    if let Err(e) = init_tracing(&cli.log) {
        note!("viewpulse: error: {e}");
        return ExitCode::from(viewpulse::exit::USAGE as u8);
    }
    let json = matches!(cli.log.log_format, LogFormat::Json);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // the reader of stdout is gone (`| head`): end quietly, as grep and rg do
        Err(e) if e.is_closed_stdout() => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            if json {
                tracing::error!(exit_code = code, error = %e, "viewpulse failed");
            } else {
                note!("viewpulse: error: {e}");
            }
            ExitCode::from(code as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `run --help` shows each key's default, from the configuration's own defaults.
    #[test]
    fn run_help_shows_the_defaults() {
        let mut cmd = with_run_defaults(Cli::command());
        let run = cmd.find_subcommand_mut("run").unwrap();
        let help = run.render_long_help().to_string();
        for want in [
            "pipeline.shards [default: 4]",
            "trigger.records [default: 50000]",
            "[default: 30s]",
        ] {
            assert!(help.contains(want), "{want} not in\n{help}");
        }
        assert!(!help.contains("sinks.stdout = false: no table on stdout [default"));
    }

    /// Every command's `--help` ends with an example, and every example parses.
    #[test]
    fn every_command_has_an_example_that_parses() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            let examples: Vec<&str> = help
                .lines()
                .skip_while(|l| !l.starts_with("Example"))
                .skip(1)
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            assert!(!examples.is_empty(), "{} has no example", sub.get_name());
            for ex in examples {
                let args: Vec<&str> = ex.split_whitespace().collect();
                assert_eq!(args[0], "viewpulse", "{ex}");
                assert_eq!(args[1], sub.get_name(), "{ex}");
                if let Err(e) = Cli::try_parse_from(&args) {
                    panic!("{ex}: {e}");
                }
            }
        }
    }
}
