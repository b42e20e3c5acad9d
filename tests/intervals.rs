//! How far to trust a top-K, through the real binary: `analyze`'s bootstrap and analytic
//! intervals recomputed by numpy from the views, the model and the resample plan the run
//! wrote (to 1e-9); its agreement table against scipy; `--rank-by index` and `--min-views`
//! against their definitions; `--bootstrap 0` leaving the interval columns empty.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{path_str as s, viewpulse_ok as ok};

/// 3,000 households, 60,000 static records over 80 stations, and their model.
fn data(dir: &Path) -> (PathBuf, PathBuf) {
    ok(&[
        "generate",
        "--out",
        s(&dir.join("data")),
        "--households",
        "3000",
        "--static-records",
        "60000",
        "--stream-records",
        "100",
        "--stations",
        "80",
        "--seed",
        "19",
    ]);
    let model = dir.join("model");
    ok(&[
        "segment",
        "--demographics",
        s(&dir.join("data/demographics.csv")),
        "--out",
        s(&model),
    ]);
    (dir.join("data/views_static.csv"), model)
}

fn analyze(views: &Path, model: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "analyze",
        "--model",
        s(model),
        "--views",
        s(views),
        "--out",
        s(out),
        "--no-report",
    ];
    args.extend_from_slice(extra);
    ok(&args);
}

fn rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let head = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            head.iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn bootstrap_and_analytic_intervals_equal_numpys_and_the_agreement_scipys() {
    let dir = tempfile::tempdir().unwrap();
    let (views, model) = data(dir.path());
    let boot = dir.path().join("boot");
    analyze(
        &views,
        &model,
        &boot,
        &["--bootstrap", "150", "--confidence", "0.9", "--seed", "5"],
    );
    let out = common::python_script(
        "intervals_check.py",
        &["bootstrap", s(&views), s(&model), s(&boot), "0.9", "7"],
    );
    assert!(out.contains("agree to 1e-9"), "{out}");
    let out = common::python_script("intervals_check.py", &["agreement", s(&boot), "7"]);
    assert!(out.contains("agree with scipy"), "{out}");
    // every top-K station is in the top-K of some resamples; the intervals hold the estimate
    for r in rows(&boot.join("diff_rank.csv")) {
        let share: f64 = r["top_k_share"].parse().unwrap();
        assert!(share > 0.0 && share <= 1.0, "{r:?}");
        let (lo, d, hi): (f64, f64, f64) = (
            r["diff_rank_lo"].parse().unwrap(),
            r["diff_rank"].parse().unwrap(),
            r["diff_rank_hi"].parse().unwrap(),
        );
        assert!(lo <= hi && lo < d + 1e-9 && d < hi + 1e-9, "{r:?}");
    }

    let analytic = dir.path().join("analytic");
    analyze(&views, &model, &analytic, &[]);
    let out = common::python_script(
        "intervals_check.py",
        &["analytic", s(&views), s(&model), s(&analytic), "0.95"],
    );
    assert!(out.contains("agree to 1e-9"), "{out}");
    assert!(!analytic.join("resamples.csv").exists());

    // --bootstrap 0: SPEC's figures, the interval columns empty, the same top-K
    let off = dir.path().join("off");
    analyze(&views, &model, &off, &["--bootstrap", "0"]);
    let (a, b) = (
        rows(&analytic.join("diff_rank.csv")),
        rows(&off.join("diff_rank.csv")),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        for col in [
            "subset",
            "cluster",
            "rank",
            "station_num",
            "diff_rank",
            "index",
        ] {
            assert_eq!(x[col], y[col]);
        }
        for col in [
            "diff_rank_lo",
            "diff_rank_hi",
            "popularity_lo",
            "top_k_share",
        ] {
            assert_eq!(y[col], "", "{col}");
        }
    }
}

/// `--rank-by index --min-views 30`: the top-K is the K stations with at least 30 views in
/// the cluster of largest `popularity / genpop` (cross-multiplied views: exact), ties by
/// station_num, rebuilt here from popularity.csv and genpop.csv.
#[test]
fn rank_by_index_with_min_views_is_its_definition() {
    let dir = tempfile::tempdir().unwrap();
    let (views, model) = data(dir.path());
    let out = dir.path().join("index");
    analyze(
        &views,
        &model,
        &out,
        &[
            "--rank-by",
            "index",
            "--min-views",
            "30",
            "--bootstrap",
            "0",
        ],
    );
    let gen: std::collections::HashMap<String, u64> = rows(&out.join("genpop.csv"))
        .into_iter()
        .map(|r| (r["station_num"].clone(), r["views"].parse().unwrap()))
        .collect();
    let mut by: std::collections::BTreeMap<(String, u32), Vec<(String, u64)>> = Default::default();
    for r in rows(&out.join("popularity.csv")) {
        by.entry((r["subset"].clone(), r["cluster"].parse().unwrap()))
            .or_default()
            .push((r["station_num"].clone(), r["views"].parse().unwrap()));
    }
    let mut want = Vec::new();
    for ((subset, cluster), mut st) in by {
        st.retain(|x| x.1 >= 30);
        st.sort_by(|a, b| {
            (b.1 as u128 * gen[&a.0] as u128)
                .cmp(&(a.1 as u128 * gen[&b.0] as u128))
                .then(a.0.as_bytes().cmp(b.0.as_bytes()))
        });
        for (i, (station, _)) in st.into_iter().take(7).enumerate() {
            want.push((subset.clone(), cluster, i as u32 + 1, station));
        }
    }
    let got: Vec<(String, u32, u32, String)> = rows(&out.join("diff_rank.csv"))
        .into_iter()
        .map(|r| {
            let index: f64 = r["index"].parse().unwrap();
            let pop: f64 = r["popularity_rating"].parse().unwrap();
            let genpop: f64 = r["genpop_rating"].parse().unwrap();
            assert!((index - 100.0 * pop / genpop).abs() <= 1e-9 * index);
            (
                r["subset"].clone(),
                r["cluster"].parse().unwrap(),
                r["rank"].parse().unwrap(),
                r["station_num"].clone(),
            )
        })
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

/// The daemon with `--bootstrap`: its last snapshot (every record, three shards) carries the
/// same intervals and stability as `analyze` over the same file with the same settings, and
/// without the flag its rows have no interval field at all (SPEC 5's rows).
#[test]
fn the_daemons_snapshots_carry_the_intervals_analyze_gives() {
    let dir = tempfile::tempdir().unwrap();
    let (views, model) = data(dir.path());
    let out = dir.path().join("a");
    let common = ["--subsets", "3", "--top", "5", "--min-views", "3"];
    let mut args = common.to_vec();
    args.extend([
        "--rank-by",
        "index",
        "--bootstrap",
        "80",
        "--seed",
        "9",
        "--confidence",
        "0.8",
    ]);
    analyze(&views, &model, &out, &args);
    let want = rows(&out.join("diff_rank.csv"));
    let snaps = |extra: &[&str], name: &str| -> serde_json::Value {
        let path = dir.path().join(name);
        let mut a = vec![
            "--log",
            "warn",
            "run",
            "--model",
            s(&model),
            "--source",
            s(&views),
            "--until-end",
            "--no-stdout",
            "--shards",
            "3",
            "--trigger-records",
            "25000",
            "--snapshots",
            s(&path),
        ];
        a.extend_from_slice(&common);
        a.extend_from_slice(extra);
        ok(&a);
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    };
    let last = snaps(
        &[
            "--rank-by",
            "index",
            "--bootstrap",
            "80",
            "--bootstrap-seed",
            "9",
            "--confidence",
            "0.8",
        ],
        "boot.jsonl",
    );
    assert_eq!(last["records"], 60_000);
    let got = last["subsets"]["3"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["station_num"].as_str().unwrap(), w["station_num"]);
        // ranked by the index, the rows carry it
        let index: f64 = w["index"].parse().unwrap();
        assert!((g["index"].as_f64().unwrap() - index).abs() <= 1e-12 * index);
        assert_eq!(g["cluster"].to_string(), w["cluster"]);
        for col in [
            "popularity_lo",
            "popularity_hi",
            "diff_rank_lo",
            "diff_rank_hi",
            "top_k_share",
        ] {
            let (a, b): (f64, f64) = (g[col].as_f64().unwrap(), w[col].parse().unwrap());
            assert!(
                (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                "{col}: {a} vs {b}"
            );
        }
    }
    let plain = snaps(&["--rank-by", "diff"], "plain.jsonl");
    let row = &plain["subsets"]["3"][0];
    assert!(row.get("diff_rank").is_some());
    for col in ["popularity_lo", "diff_rank_lo", "top_k_share", "index"] {
        assert!(row.get(col).is_none(), "{col} in {row}");
    }
}

/// A state made with `--bootstrap` holds the household groups: the daemon goes on from it
/// with the same setting, and refuses it without, saying what to do.
#[test]
fn a_state_made_with_the_bootstrap_restores_with_it_and_is_refused_without() {
    let dir = tempfile::tempdir().unwrap();
    let (views, model) = data(dir.path());
    let state = dir.path().join("state");
    let run = |extra: &[&str]| {
        let mut a = vec![
            "--log".to_string(),
            "warn".into(),
            "run".into(),
            "--model".into(),
            s(&model).into(),
            "--source".into(),
            s(&views).into(),
            "--until-end".into(),
            "--no-stdout".into(),
            "--trigger-records".into(),
            "20000".into(),
            "--state-dir".into(),
            s(&state).into(),
        ];
        a.extend(extra.iter().map(|x| x.to_string()));
        Command::new(env!("CARGO_BIN_EXE_viewpulse"))
            .args(&a)
            .env("VIEWPULSE_NO_PROGRESS", "1")
            .output()
            .unwrap()
    };
    let first = run(&["--bootstrap", "20"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let again = run(&["--bootstrap", "20"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let without = run(&[]);
    let err = String::from_utf8_lossy(&without.stderr);
    assert!(!without.status.success());
    assert!(
        err.contains("household groups") && err.contains("--reset-state"),
        "{err}"
    );
}
