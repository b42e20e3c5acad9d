//! Data in and out the way other tools hand it over (issue 15): demographics and views
//! written by pyarrow, Polars, pandas and Python's csv and gzip modules (Spark-style folders
//! with part files, `_SUCCESS` and `.crc` files, Hive partitions, every Parquet codec, Spark's
//! and pandas' column types, CSV with quotes, line breaks, a BOM, CRLF and Spark's escapes),
//! each run through the real binary and compared with the same data from one plain file;
//! and the Parquet outputs read back by pyarrow, Polars and pandas and compared with the
//! CSVs (`tests/python/interop.py` does the writing and the reading).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden")
}

fn vp<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(args)
        .env("VIEWPULSE_NO_PROGRESS", "1")
        .output()
        .expect("run viewpulse")
}

/// Run viewpulse and expect success.
fn ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = vp(args);
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    assert!(
        out.status.success(),
        "viewpulse {shown:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run viewpulse and expect exit `code`; its stderr.
fn fails<S: AsRef<std::ffi::OsStr>>(code: i32, args: &[S]) -> String {
    let out = vp(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{err}");
    err
}

/// `analyze --model GOLDEN --views VIEWS --out OUT`, expected to exit `code`; its stderr.
fn analyze_fails(code: i32, views: &str, out: &Path) -> String {
    fails(
        code,
        &[
            "analyze",
            "--model",
            &s(&golden()),
            "--views",
            views,
            "--out",
            &s(out),
        ],
    )
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn segment(demographics: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "segment".to_string(),
        "--demographics".into(),
        s(demographics),
        "--out".into(),
        s(out),
        "--no-charts".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    ok(&args)
}

fn analyze(model: &Path, views: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "analyze".to_string(),
        "--model".into(),
        s(model),
        "--views".into(),
        s(views),
        "--out".into(),
        s(out),
        "--no-report".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    ok(&args)
}

fn same_ratings(a: &Path, b: &Path, what: &str) {
    for f in ["popularity.csv", "genpop.csv", "diff_rank.csv"] {
        assert!(read(&a.join(f)) == read(&b.join(f)), "{f} differs: {what}");
    }
}

#[test]
fn demographics_datasets_from_pyarrow_polars_pandas_and_spark_folders_segment_like_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = golden().join("input/demographics.parquet");
    let sets = dir.path().join("sets");
    common::interop(&[s(Path::new("demographics-datasets")), s(&src), s(&sets)]);
    let reference = dir.path().join("reference");
    segment(&src, &reference, &[]);
    let codecs = ["snappy", "gzip", "zstd", "lz4", "brotli", "none"];
    let mut names: Vec<String> = codecs.iter().map(|c| format!("spark-{c}")).collect();
    names.extend(["types", "polars", "pandas"].map(String::from));
    for name in &names {
        let model = dir.path().join(format!("m-{name}"));
        let said = segment(&sets.join(name), &model, &[]);
        assert!(said.contains("clustered 300 households"), "{name}: {said}");
        // same rows in the same order: the same features and the same clusters, byte for byte
        for f in ["features.csv", "households.csv"] {
            assert!(
                read(&model.join(f)) == read(&reference.join(f)),
                "{name}: {f} differs from the single file's"
            );
        }
    }
    // Hive partitions: dwelling_type comes from the folder names, and the rows come grouped
    // by it, so the features are the same (features.csv is by household) but not the order
    let model = dir.path().join("m-hive");
    segment(&sets.join("hive"), &model, &[]);
    assert!(read(&model.join("features.csv")) == read(&reference.join("features.csv")));
}

#[test]
fn csv_demographics_with_quotes_line_breaks_bom_crlf_and_spark_escapes_read_like_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let csvs = dir.path().join("csvs");
    common::interop(&[
        "demographics-csvs".to_string(),
        s(&golden().join("input/demographics.parquet")),
        s(&csvs),
    ]);
    let reference = dir.path().join("reference");
    segment(&csvs.join("reference.parquet"), &reference, &["--strict"]);
    let json: serde_json::Value =
        serde_json::from_slice(&read(&reference.join("model.json"))).unwrap();
    // the value with a quote, a comma and a line break is one category of its own
    let orders = json["category_orders"]["marital_status"]
        .as_array()
        .unwrap();
    assert!(orders.iter().any(|v| v == "M, \"or\"\nS"), "{orders:?}");
    for name in [
        "pandas.csv",
        "bom-crlf.csv",
        "spark-escape.csv",
        "spark-folder",
    ] {
        let model = dir.path().join(format!("m-{name}"));
        segment(&csvs.join(name), &model, &["--strict"]);
        for f in ["features.csv", "households.csv"] {
            assert!(
                read(&model.join(f)) == read(&reference.join(f)),
                "{name}: {f} differs from the Parquet file's"
            );
        }
    }
}

#[test]
fn views_from_parquet_and_from_a_folder_of_gzip_files_count_like_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let views = golden().join("input/views_static.csv");
    let model = golden();
    // string columns, nulls for empty fields, malformed rows included, zstd row groups
    common::interop(&[
        "views-parquet".to_string(),
        s(&views),
        s(&d.join("v.parquet")),
        s(&d.join("v.csv")),
    ]);
    // the seed's SCHEMA types (household_id LONG), brotli
    common::interop(&[
        "views-typed-parquet".to_string(),
        s(&views),
        s(&d.join("t.parquet")),
        s(&d.join("t.csv")),
    ]);
    // eight gzip files written by Python's gzip, the last without a final newline
    common::interop(&[
        "views-gzip-folder".to_string(),
        s(&views),
        s(&d.join("gz")),
        "8".into(),
    ]);
    for (from, same_as) in [
        (d.join("v.parquet"), d.join("v.csv")),
        (d.join("t.parquet"), d.join("t.csv")),
        (d.join("gz"), views.clone()),
    ] {
        let (a, b) = (d.join("a"), d.join("b"));
        let (da, db) = (d.join("a.dead"), d.join("b.dead"));
        let said = analyze(&model, &from, &a, &["--dead-letter", &s(&da)]);
        analyze(&model, &same_as, &b, &["--dead-letter", &s(&db)]);
        same_ratings(&a, &b, &s(&from));
        let summary = |p: &Path| -> serde_json::Value {
            serde_json::from_slice(&read(&p.join("summary.json"))).unwrap()
        };
        for key in ["records", "valid", "malformed", "unknown_household"] {
            assert_eq!(summary(&a)[key], summary(&b)[key], "{key}: {}", s(&from));
        }
        assert!(said.contains("records"), "{said}");
        // the same malformed records in the same order; a folder's positions name the file
        let dead = |p: &Path| -> Vec<(String, String)> {
            String::from_utf8_lossy(&read(p))
                .lines()
                .skip(1)
                .map(|l| {
                    let mut f = l.splitn(2, '\t');
                    (
                        f.next().unwrap().to_string(),
                        f.next().unwrap_or("").to_string(),
                    )
                })
                .collect()
        };
        let (ga, gb) = (dead(&da), dead(&db));
        assert_eq!(
            ga.iter().map(|x| &x.1).collect::<Vec<_>>(),
            gb.iter().map(|x| &x.1).collect::<Vec<_>>(),
            "{}",
            s(&from)
        );
        if from.is_dir() {
            // 750 lines a file: line 1 of the second file is line 751 of the whole
            for ((pa, _), (pb, _)) in ga.iter().zip(&gb) {
                let whole: u64 = pb.trim_start_matches("line ").parse().unwrap();
                let want = format!(
                    "part-{:05}.csv.gz line {}",
                    (whole - 1) / 750,
                    (whole - 1) % 750 + 1
                );
                assert_eq!(pa, &want);
            }
        } else {
            assert_eq!(ga, gb);
        }
    }
    // the daemon and replay read a folder too, its lines numbered on across the files
    let snaps = d.join("snaps.jsonl");
    ok(&[
        "run".to_string(),
        "--model".into(),
        s(&model),
        "--source".into(),
        s(&d.join("gz")),
        "--snapshots".into(),
        s(&snaps),
        "--trigger-records".into(),
        "1000".into(),
        "--until-end".into(),
    ]);
    let last: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&read(&snaps))
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["records"], 6000);
    assert_eq!(last["offsets"]["0"], 6000);
}

#[test]
fn parquet_outputs_read_back_in_pyarrow_polars_and_pandas_as_the_csvs_say() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("model");
    segment(
        &golden().join("input/demographics.parquet"),
        &model,
        &["--format", "csv,parquet"],
    );
    let said = common::interop(&["check-households".to_string(), s(&model)]);
    assert!(said.contains("\"households\": 300"), "{said}");
    let out = d.join("out");
    analyze(
        &model,
        &golden().join("input/views_static.csv"),
        &out,
        &["--format", "csv,parquet"],
    );
    let said = common::interop(&["check-ratings".to_string(), s(&out)]);
    let report: serde_json::Value = serde_json::from_str(said.trim()).unwrap();
    // stations with a leading zero survive in Parquet; pandas reads the CSV's as numbers
    assert!(
        report["parquet_stations_with_leading_zero"]
            .as_u64()
            .unwrap()
            >= 1,
        "{said}"
    );
    // --format parquet alone: no CSV, and the model still loads (from model.bin)
    let only = d.join("only");
    segment(
        &golden().join("input/demographics.parquet"),
        &only,
        &["--format", "parquet"],
    );
    assert!(!only.join("households.csv").exists() && !only.join("features.csv").exists());
    assert!(only.join("households.parquet").is_file());
    let out2 = d.join("out2");
    analyze(
        &only,
        &golden().join("input/views_static.csv"),
        &out2,
        &["--format", "parquet"],
    );
    assert!(!out2.join("diff_rank.csv").exists());
    assert!(read(&out2.join("diff_rank.parquet")) == read(&out.join("diff_rank.parquet")));
    let err = fails(
        2,
        &[
            "analyze",
            "--model",
            &s(&model),
            "--views",
            "x",
            "--out",
            "y",
            "--format",
            "json",
        ],
    );
    assert!(err.contains("unknown format \"json\""), "{err}");
}

#[test]
fn a_households_parquet_of_another_system_is_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let views = golden().join("input/views_static.csv");
    let want = d.join("want");
    analyze(&golden(), &views, &want, &[]);
    for (name, extra) in [("ranked", ""), ("unranked", "--no-rank")] {
        let model = d.join(name);
        let mut args = vec![
            "households-parquet".to_string(),
            s(&golden().join("households.csv")),
            s(&model),
        ];
        if !extra.is_empty() {
            args.push(extra.into());
        }
        common::interop(&args);
        assert!(!model.join("households.csv").exists());
        let out = d.join(format!("out-{name}"));
        analyze(&model, &views, &out, &[]);
        // without a rank column, SPEC 3's rank (distance, ties by id) gives Spark's subsets
        same_ratings(&out, &want, name);
    }
}

#[test]
fn unreadable_datasets_are_named_with_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // a folder of nothing but bookkeeping
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("_SUCCESS"), "").unwrap();
    let err = fails(
        66,
        &[
            "segment",
            "--demographics",
            &s(&empty),
            "--out",
            &s(&d.join("m")),
        ],
    );
    assert!(err.contains("holds no data file"), "{err}");
    let err = analyze_fails(66, &s(&empty), &d.join("o"));
    assert!(err.contains("holds no data file"), "{err}");
    // a Parquet views file without the seed's columns names what is missing
    common::interop(&[
        "households-parquet".to_string(),
        s(&golden().join("households.csv")),
        s(&d.join("hh")),
    ]);
    let err = analyze_fails(65, &s(&d.join("hh/households.parquet")), &d.join("o"));
    assert!(
        err.contains("households.parquet") && err.contains("missing device_id"),
        "{err}"
    );
    // a corrupt part in a folder is named, not the folder
    let gz = d.join("gz");
    common::interop(&[
        "views-gzip-folder".to_string(),
        s(&golden().join("input/views_static.csv")),
        s(&gz),
        "3".into(),
    ]);
    let part = gz.join("part-00001.csv.gz");
    let mut bytes = read(&part);
    let n = bytes.len();
    bytes.truncate(n / 2);
    std::fs::write(&part, &bytes).unwrap();
    let err = analyze_fails(65, &s(&gz), &d.join("o"));
    assert!(
        err.contains("part-00001.csv.gz") && err.contains("corrupt gzip"),
        "{err}"
    );
    // a demographics part without a column names that part
    let sets = d.join("sets");
    common::interop(&[
        "demographics-datasets".to_string(),
        s(&golden().join("input/demographics.parquet")),
        s(&sets),
    ]);
    let mixed = sets.join("spark-zstd");
    std::fs::copy(
        d.join("hh/households.parquet"),
        mixed.join("part-00009-other.parquet"),
    )
    .unwrap();
    let err = fails(
        65,
        &[
            "segment",
            "--demographics",
            &s(&mixed),
            "--out",
            &s(&d.join("m")),
        ],
    );
    assert!(
        err.contains("part-00009-other.parquet") && err.contains("missing column household_size"),
        "{err}"
    );
    // the model written inside the dataset it reads would be read back as demographics
    let err = fails(
        2,
        &[
            "segment",
            "--demographics",
            &s(&sets.join("spark-gzip")),
            "--out",
            &s(&sets.join("spark-gzip/model")),
        ],
    );
    assert!(err.contains("inside the demographics folder"), "{err}");
}

#[test]
fn regression_analysis_outputs_never_land_in_or_linger_beside_their_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let views = d.join("views");
    common::interop(&[
        "views-gzip-folder".to_string(),
        s(&golden().join("input/views_static.csv")),
        s(&views),
        "2".into(),
    ]);
    let part = views.join("part-00000.csv.gz");
    let before = read(&part);
    // a dead-letter file inside the views folder would replace a part or become views
    for dead in [part.clone(), views.join("dead.tsv")] {
        let err = fails(
            2,
            &[
                "analyze",
                "--model",
                &s(&golden()),
                "--views",
                &s(&views),
                "--out",
                &s(&d.join("o")),
                "--dead-letter",
                &s(&dead),
            ],
        );
        assert!(err.contains("inside the views folder"), "{err}");
    }
    assert!(read(&part) == before && !views.join("dead.tsv").exists());
    // --out inside the views folder is refused; the views inside --out are fine
    let err = analyze_fails(2, &s(&views), &views.join("o"));
    assert!(err.contains("is a folder that holds --out"), "{err}");
    analyze(&golden(), &views, d, &[]);
    assert!(d.join("diff_rank.csv").is_file() && read(&part) == before);
    // --format parquet into a folder holding an earlier run's CSVs: no stale CSV is left
    let out = d.join("out");
    analyze(
        &golden(),
        &golden().join("input/views_static.csv"),
        &out,
        &[],
    );
    analyze(
        &golden(),
        &golden().join("input/views_stream.csv"),
        &out,
        &["--format", "parquet"],
    );
    for f in ["popularity", "genpop", "diff_rank"] {
        assert!(!out.join(format!("{f}.csv")).exists(), "{f}.csv left over");
        assert!(out.join(format!("{f}.parquet")).is_file());
    }
    // no valid record: the analysis fails, its message says what the records were, and
    // the outputs (the dead letters too) change only when an analysis succeeds
    let bad = d.join("bad.csv");
    std::fs::write(&bad, "x,y\n,,,,,\n").unwrap();
    let dead = d.join("bad.dead");
    let err = fails(
        65,
        &[
            "analyze",
            "--model",
            &s(&golden()),
            "--views",
            &s(&bad),
            "--out",
            &s(&d.join("o2")),
            "--dead-letter",
            &s(&dead),
        ],
    );
    assert!(
        err.contains(
            "no valid view record among 2 records (2 malformed: too_few_fields 1, empty_field 1)"
        ),
        "{err}"
    );
    assert!(!dead.exists());
}
