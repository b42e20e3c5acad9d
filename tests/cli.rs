//! The real binary, end to end: `generate` then `segment` then `analyze` must bring the
//! planted signal back, and bad input must give one clear message and a meaningful exit code.

use std::path::Path;
use std::process::{Command, Output};

fn viewpulse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(args)
        .env("VIEWPULSE_NO_PROGRESS", "1")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = viewpulse(args);
    assert!(
        out.status.success(),
        "viewpulse {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run, expect failure with `code`, return stderr.
fn fails(args: &[&str], code: i32) -> String {
    let out = viewpulse(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "viewpulse {args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "one message: {err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn generate_segment_analyze_recovers_planted_archetypes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let model = dir.path().join("model");
    let out = dir.path().join("out");
    ok(&[
        "generate",
        "--out",
        s(&data),
        "--households",
        "3000",
        "--static-records",
        "300000",
        "--stream-records",
        "1000",
        "--stations",
        "200",
        "--seed",
        "7",
    ]);
    ok(&[
        "segment",
        "--demographics",
        s(&data.join("demographics.parquet")),
        "--out",
        s(&model),
    ]);
    for f in [
        "households.csv",
        "features.csv",
        "model.json",
        "model.bin",
        "pca.png",
        "cluster_sizes.png",
    ] {
        assert!(model.join(f).is_file(), "{f}");
    }
    let dead = dir.path().join("dead.tsv");
    ok(&[
        "analyze",
        "--model",
        s(&model),
        "--views",
        s(&data.join("views_static.csv")),
        "--out",
        s(&out),
        "--dead-letter",
        s(&dead),
    ]);
    for f in [
        "popularity.csv",
        "genpop.csv",
        "diff_rank.csv",
        "summary.json",
        "report.html",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["records"], 300_000);
    let malformed = summary["malformed"].as_u64().unwrap();
    assert!(malformed > 0 && summary["unknown_household"].as_u64().unwrap() > 0);
    let dead_lines = std::fs::read_to_string(&dead).unwrap().lines().count() as u64;
    assert_eq!(
        dead_lines,
        malformed + 1,
        "a dead letter per malformed record, plus the header"
    );

    // the planted truth
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("archetypes.json")).unwrap())
            .unwrap();
    let archetypes = truth["archetypes"].as_array().unwrap();
    let diff = std::fs::read_to_string(out.join("diff_rank.csv")).unwrap();
    let mut top: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in diff.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f[0] == "all" {
            top.entry(f[1].to_string())
                .or_default()
                .push(f[3].to_string());
        }
    }
    let mut recovered = 0;
    for a in archetypes {
        let planted: Vec<String> = a["stations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let best = top
            .values()
            .map(|t| planted.iter().filter(|p| t.contains(p)).count())
            .max()
            .unwrap_or(0);
        if best * 2 > planted.len() {
            recovered += 1;
        }
    }
    assert!(
        recovered * 2 > archetypes.len(),
        "only {recovered} of {} archetypes came back in some cluster's top 7",
        archetypes.len()
    );
}

#[test]
fn generate_is_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for (d, t) in [(&a, "1"), (&b, "2")] {
        ok(&[
            "generate",
            "--out",
            s(d),
            "--households",
            "500",
            "--static-records",
            "20000",
            "--stream-records",
            "5000",
            "--seed",
            "11",
            "--threads",
            t,
        ]);
    }
    for f in [
        "demographics.csv",
        "demographics.parquet",
        "views_static.csv",
        "views_stream.csv",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}"
        );
    }
}

const HEADER: &str = "household_id,household_size,num_adults,num_generations,marital_status,race_code,dwelling_type,home_owner_status,length_residence,home_market_value,net_worth,gender_individual,education_highest\n";

#[test]
fn bad_demographics_are_named_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    let w = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    // missing file
    let err = fails(
        &[
            "segment",
            "--demographics",
            s(&dir.path().join("nope.parquet")),
            "--out",
            s(&m),
        ],
        66,
    );
    assert!(err.contains("nope.parquet"), "{err}");
    // unreadable parquet
    let p = w("broken.parquet", "PAR1garbagegarbagePAR1");
    let err = fails(&["segment", "--demographics", s(&p), "--out", s(&m)], 65);
    assert!(
        err.contains("broken.parquet") && err.contains("Parquet"),
        "{err}"
    );
    // missing column
    let p = w("nocol.csv", "household_id,household_size\n1,2\n");
    let err = fails(&["segment", "--demographics", s(&p), "--out", s(&m)], 65);
    assert!(err.contains("num_adults"), "{err}");
    // non-numeric value, strict
    let p = w(
        "nan.csv",
        &format!("{HEADER}1,4,2,2,M,W,S,O,10,15,8,M,3\n2,4,two,2,M,W,S,O,10,15,8,M,3\n"),
    );
    let err = fails(
        &[
            "segment",
            "--demographics",
            s(&p),
            "--out",
            s(&m),
            "--k",
            "1",
            "--strict",
        ],
        65,
    );
    assert!(
        err.contains("line 3") && err.contains("num_adults") && err.contains("two"),
        "{err}"
    );
    // ...and without --strict it is skipped and counted
    let out = ok(&[
        "segment",
        "--demographics",
        s(&p),
        "--out",
        s(&m),
        "--k",
        "1",
        "--no-charts",
    ]);
    assert!(out.contains("skipped 1"), "{out}");
    // empty table
    let p = w("empty.csv", HEADER);
    let err = fails(&["segment", "--demographics", s(&p), "--out", s(&m)], 65);
    assert!(
        err.contains("empty.csv") && err.contains("no data rows"),
        "{err}"
    );
    // k larger than the households
    let p = w(
        "two.csv",
        &format!("{HEADER}1,4,2,2,M,W,S,O,10,15,8,M,3\n2,1,1,1,S,A,M,R,0,5,1,M,3\n"),
    );
    let err = fails(
        &[
            "segment",
            "--demographics",
            s(&p),
            "--out",
            s(&m),
            "--k",
            "3",
        ],
        2,
    );
    assert!(err.contains("--k 3") && err.contains("(2)"), "{err}");
}

#[test]
fn bad_views_and_models_are_named_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    let out = dir.path().join("out");
    let junk = dir.path().join("junk.csv");
    std::fs::write(&junk, "a,b\n\n1,2,3,4,5,notanumber\n").unwrap();
    let err = fails(
        &[
            "analyze",
            "--model",
            s(&golden),
            "--views",
            s(&junk),
            "--out",
            s(&out),
        ],
        65,
    );
    assert!(
        err.contains("junk.csv") && err.contains("no valid view record among 3"),
        "{err}"
    );
    let err = fails(
        &[
            "analyze",
            "--model",
            s(&golden),
            "--views",
            s(&dir.path().join("none.csv")),
            "--out",
            s(&out),
        ],
        66,
    );
    assert!(err.contains("none.csv"), "{err}");
    let err = fails(
        &[
            "analyze",
            "--model",
            s(&dir.path().join("nomodel")),
            "--views",
            s(&junk),
            "--out",
            s(&out),
        ],
        66,
    );
    assert!(err.contains("nomodel") && err.contains("segment"), "{err}");
    let err = fails(
        &[
            "analyze",
            "--model",
            s(&golden),
            "--views",
            s(&junk),
            "--out",
            s(&out),
            "--subsets",
            "all,1",
        ],
        2,
    );
    assert!(err.contains("--subsets"), "{err}");
}

#[test]
fn run_writes_the_golden_snapshots_and_refuses_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    let snaps = dir.path().join("snapshots.jsonl");
    let views = golden.join("input/views_stream.csv");
    ok(&[
        "run",
        "--model",
        s(&golden),
        "--source",
        s(&views),
        "--snapshots",
        s(&snaps),
        "--trigger-records",
        "500",
        "--subsets",
        "3",
        "--shards",
        "3",
        "--until-end",
        "--no-stdout",
    ]);
    let got: Vec<serde_json::Value> = std::fs::read_to_string(&snaps)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want: Vec<serde_json::Value> =
        std::fs::read_to_string(golden.join("expected/stream_snapshots_subset3_every500.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["records"], w["records"]);
        assert_eq!(g["offsets"]["0"], w["records"]);
        assert_eq!(
            g["valid"].as_u64().unwrap() + g["malformed"].as_u64().unwrap(),
            w["records"].as_u64().unwrap()
        );
        assert!(g["emitted_at"].as_str().unwrap().ends_with('Z'));
        let stations = |rows: &serde_json::Value| -> Vec<String> {
            rows.as_array()
                .unwrap()
                .iter()
                .map(|r| r["station_num"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(stations(&g["subsets"]["3"]), stations(&w["top"]));
    }
    // the example config loads, and impossible values are refused naming the key
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/viewpulse.example.toml");
    let cfg = viewpulse::config::RunConfig::load(&example).unwrap();
    assert_eq!(cfg.pipeline.shards, 4);
    assert_eq!(cfg.trigger.records, 50_000);
    assert_eq!(
        cfg.trigger_interval().unwrap(),
        Some(std::time::Duration::from_secs(10))
    );
    assert_eq!(
        cfg.http_listen().unwrap(),
        Some("127.0.0.1:9898".parse().unwrap())
    );
    assert_eq!(
        cfg.startup_wait().unwrap(),
        std::time::Duration::from_secs(30)
    );
    // the example documents every key there is (set, or commented out)
    let text = std::fs::read_to_string(&example).unwrap();
    let mut full = viewpulse::config::RunConfig::default();
    full.sinks.kafka = Some("kafka://h:1/t".into());
    full.sinks.snapshots = Some("x".into());
    let defaults: toml::Table = toml::from_str(&toml::to_string(&full).unwrap()).unwrap();
    for (k, v) in &defaults {
        let keys: Vec<String> = match v.as_table() {
            Some(t) => {
                assert!(text.contains(&format!("[{k}]")), "[{k}] not in the example");
                t.keys().cloned().collect()
            }
            None => vec![k.clone()],
        };
        for key in keys {
            assert!(
                text.contains(&format!("[{k}.{key}]"))
                    || text.lines().any(|l| l
                        .trim_start_matches(['#', ' '])
                        .starts_with(&format!("{key} = "))),
                "{k}.{key} is not documented in the example"
            );
        }
    }
    let err = fails(
        &[
            "run",
            "--model",
            s(&golden),
            "--source",
            s(&views),
            "--trigger-interval",
            "soon",
        ],
        2,
    );
    assert!(err.contains("trigger.interval"), "{err}");
    let err = fails(
        &[
            "run",
            "--model",
            s(&golden),
            "--source",
            s(&views),
            "--http-listen",
            "localhost:99999",
        ],
        2,
    );
    assert!(err.contains("http.listen"), "{err}");
    let err = fails(
        &[
            "run",
            "--config",
            s(&example),
            "--model",
            s(&golden),
            "--source",
            s(&views),
            "--shards",
            "0",
        ],
        2,
    );
    assert!(err.contains("pipeline.shards"), "{err}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "source = \"x\"\n[pipeline]\nshards = 2\nshard_count = 3\n",
    )
    .unwrap();
    let err = fails(&["run", "--config", s(&bad)], 2);
    assert!(
        err.contains("shard_count") && err.contains("bad.toml"),
        "{err}"
    );
    let err = fails(
        &[
            "run",
            "--model",
            s(&dir.path().join("nomodel")),
            "--source",
            s(&views),
        ],
        66,
    );
    assert!(err.contains("model"), "{err}");
}

#[test]
fn demo_runs_batch_and_stream_with_no_setup() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let stdout = ok(&["demo", "--out", s(&out)]);
    assert!(stdout.contains("report: "), "{stdout}");
    assert!(stdout.contains("trigger 4: 200000 records"), "{stdout}");
    assert!(out.join("analysis/report.html").is_file());
    let snaps = std::fs::read_to_string(out.join("snapshots.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(snaps.lines().last().unwrap()).unwrap();
    assert_eq!(snaps.lines().count(), 4);
    assert_eq!(last["records"], 200_000);
    let covered: i64 = last["offsets"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(covered, 200_000);
    assert_eq!(last["subsets"]["3"].as_array().unwrap().len(), 42);
}

/// Secret references (`${env:…}`, `${file:…}`) in `[kafka.properties]`, `-X` and
/// `--http-token` are resolved before anything starts, a missing one is refused naming its
/// key, and a resolved secret never shows in the logs, even at debug level.
#[test]
fn secret_references_are_resolved_or_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    let views = golden.join("input/views_stream.csv");
    let unset = "${env:VIEWPULSE_TEST_VARIABLE_THAT_IS_NEVER_SET}";
    let run = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["run", "--model", s(&golden), "--source", s(&views)]
            .iter()
            .map(|x| x.to_string())
            .collect();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let args = run(&["--http-token", unset]);
    let err = fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), 2);
    assert!(
        err.contains(
            "http.token: environment variable VIEWPULSE_TEST_VARIABLE_THAT_IS_NEVER_SET is not set"
        ),
        "{err}"
    );
    let config = dir.path().join("secret.toml");
    let missing = dir.path().join("no-such-password-file");
    std::fs::write(
        &config,
        format!(
            "[kafka.properties]\n\"sasl.password\" = \"${{file:{}}}\"\n",
            missing.display()
        ),
    )
    .unwrap();
    let args = run(&["--config", s(&config)]);
    // a secret file that is not there is a missing input
    let err = fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), 66);
    assert!(
        err.contains(&format!(
            "kafka.properties.sasl.password: cannot read {}",
            missing.display()
        )),
        "{err}"
    );
    let prop = format!("sasl.password={unset}");
    for cmd in [
        vec![
            "record",
            "--from",
            "kafka://127.0.0.1:1/t",
            "--out",
            "x.vprec",
        ],
        vec![
            "replay",
            "--file",
            s(&views),
            "--to",
            "kafka://127.0.0.1:1/t",
        ],
        vec![
            "analyze",
            "--model",
            s(&golden),
            "--views",
            "kafka://127.0.0.1:1/t",
            "--out",
            s(dir.path()),
        ],
    ] {
        let mut args = cmd.clone();
        args.extend(["-X", &prop]);
        let err = fails(&args, 2);
        assert!(
            err.contains("-X sasl.password: environment variable VIEWPULSE_TEST_VARIABLE_THAT_IS_NEVER_SET is not set"),
            "{cmd:?}: {err}"
        );
    }
    // `run -X` lands in kafka.properties, over the config file, and is resolved the same way
    let args = run(&["--config", s(&config), "-X", &prop]);
    let err = fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), 2);
    assert!(
        err.contains("kafka.properties.sasl.password: environment variable VIEWPULSE_TEST_VARIABLE_THAT_IS_NEVER_SET is not set"),
        "{err}"
    );

    // resolved secrets run, and neither debug logs nor --help show them
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "Hunter2-from-a-file\n").unwrap();
    std::fs::write(
        &config,
        format!(
            "[kafka.properties]\n\"sasl.password\" = \"${{file:{}}}\"\n[http]\ntoken = \"${{env:VP_TEST_TOKEN}}\"\nlisten = \"0\"\n",
            pass.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(run(&["--config", s(&config), "--until-end", "--no-stdout"]))
        .args(["--log", "debug"])
        .env("VIEWPULSE_NO_PROGRESS", "1")
        .env("VP_TEST_TOKEN", "T0ken-from-the-environment")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("http endpoint listening"), "{err}");
    for secret in ["Hunter2", "T0ken"] {
        assert!(!err.contains(secret), "{secret} in the logs: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(["run", "--help"])
        .env("VIEWPULSE_HTTP_TOKEN", "T0ken-in-help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("VIEWPULSE_HTTP_TOKEN") && !help.contains("T0ken"),
        "{help}"
    );
}

/// The small things people reach for first: `run --print-config` shows the merged
/// configuration with every secret as `***`; `--check-config` validates (the model too) and
/// says what it would run, exiting 0 or with the error `run` would give; a `--log` filter
/// that does not parse is an error; `http.listen` takes `localhost:PORT` and `:PORT`.
#[test]
fn print_and_check_config_and_a_bad_log_filter() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    let views = golden.join("input/views_stream.csv");
    let shown = ok(&[
        "run",
        "--print-config",
        "--model",
        s(&golden),
        "--source",
        s(&views),
        "--http-token",
        "t0k3n-s3cret",
        "-X",
        "sasl.password=hunter2",
        "-X",
        "client.id=me",
        "--http-listen",
        "localhost:9898",
        "--shards",
        "5",
    ]);
    let cfg: toml::Value = toml::from_str(&shown).unwrap();
    assert_eq!(cfg["http"]["token"].as_str(), Some("***"));
    assert_eq!(
        cfg["kafka"]["properties"]["sasl.password"].as_str(),
        Some("***")
    );
    assert_eq!(cfg["kafka"]["properties"]["client.id"].as_str(), Some("me"));
    assert_eq!(cfg["pipeline"]["shards"].as_integer(), Some(5));
    assert_eq!(cfg["http"]["listen"].as_str(), Some("localhost:9898"));
    assert!(
        !shown.contains("hunter2") && !shown.contains("t0k3n"),
        "{shown}"
    );

    let said = ok(&[
        "run",
        "--check-config",
        "--model",
        s(&golden),
        "--source",
        s(&views),
        "--http-listen",
        ":0",
        "--subsets",
        "all,3",
    ]);
    assert!(
        said.starts_with("configuration valid: source ") && said.contains("subsets all,3"),
        "{said}"
    );
    let err = fails(
        &[
            "run",
            "--check-config",
            "--model",
            "/nonexistent/model",
            "--source",
            s(&views),
        ],
        66,
    );
    assert!(err.contains("/nonexistent/model"), "{err}");
    let err = fails(
        &[
            "--log",
            "viewpulse=loud",
            "run",
            "--check-config",
            "--model",
            s(&golden),
            "--source",
            s(&views),
        ],
        2,
    );
    assert!(
        err.contains("--log") && err.contains("viewpulse=loud"),
        "{err}"
    );
}

/// No silent loss of history: without state.dir, a second run onto a snapshots file that
/// holds the first run's snapshots is refused (exit 2, naming the file and the flag), and
/// `--overwrite-snapshots` replaces it.
#[test]
fn a_snapshots_file_of_an_earlier_run_is_not_truncated_silently() {
    let dir = tempfile::tempdir().unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    let views = golden.join("input/views_stream.csv");
    let snaps = dir.path().join("s.jsonl");
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "run",
            "--model",
            s(&golden),
            "--source",
            s(&views),
            "--snapshots",
            s(&snaps),
            "--trigger-records",
            "1000",
            "--no-stdout",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let plain = args(&[]);
    let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
    ok(&plain);
    let first = std::fs::read_to_string(&snaps).unwrap();
    assert_eq!(first.lines().count(), 3);
    let err = fails(&plain, 2);
    assert!(
        err.contains(s(&snaps))
            && err.contains("--overwrite-snapshots")
            && err.contains("state.dir"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&snaps).unwrap(), first, "untouched");
    let over = args(&["--overwrite-snapshots"]);
    ok(&over.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(std::fs::read_to_string(&snaps).unwrap().lines().count(), 3);
}
