//! The README's exit-code table, row by row, through the real binary: every command's
//! failures of each kind end with one `error:` line and the code the table gives (2 a
//! command-line mistake or an impossible setting, 65 unusable data, 66 a missing input, 69 a
//! service that cannot be reached, 74 an output that cannot be written).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The binary under test: this build's, or `VIEWPULSE_TEST_BIN` (to run these checks
/// against another build, such as the one before a fix).
fn bin() -> String {
    std::env::var("VIEWPULSE_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_viewpulse").into())
}

/// A small data set and its model, made once.
struct Data {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

fn data() -> &'static Data {
    static D: OnceLock<Data> = OnceLock::new();
    D.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let d = root.join("d");
        let m = root.join("m");
        for args in [
            vec![
                "generate",
                "--out",
                d.to_str().unwrap(),
                "--households",
                "400",
                "--static-records",
                "4000",
                "--stream-records",
                "2000",
                "--stations",
                "100",
            ],
            vec![
                "segment",
                "--demographics",
                d.join("demographics.parquet").to_str().unwrap(),
                "--out",
                m.to_str().unwrap(),
                "--no-charts",
            ],
        ] {
            let out = viewpulse(&args, None);
            assert!(out.0 == 0, "{args:?}: {}", out.1);
        }
        std::fs::write(root.join("junk.csv"), "a,b\n1,2\n").unwrap();
        std::fs::write(
            root.join("junk.bin"),
            [0xffu8, 0xfe, 0, 1, 2, 0x80, 0x81, b'\n'].repeat(64),
        )
        .unwrap();
        std::fs::write(root.join("all-bad.csv"), "x\ny\nz\n").unwrap();
        std::fs::write(root.join("bad.toml"), "shards = [\n").unwrap();
        std::fs::write(root.join("unknown.toml"), "no_such_key = 1\n").unwrap();
        Data { _dir: dir, root }
    })
}

fn p(name: &str) -> String {
    data().root.join(name).display().to_string()
}

/// Run with `args`, stdin closed, stdout discarded; (exit code, stderr).
fn viewpulse(args: &[&str], cwd: Option<&Path>) -> (i32, String) {
    let mut c = Command::new(bin());
    c.args(args)
        .env("VIEWPULSE_NO_PROGRESS", "1")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    let out = c.output().expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each case: what it is, the arguments, the code the README's table gives.
fn check(cases: &[(&str, Vec<String>, i32)]) {
    let mut wrong = Vec::new();
    for (what, args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, err) = viewpulse(&args, None);
        let one_message = err.contains("error:") && err.matches("viewpulse: error:").count() <= 1;
        if code != *want || err.contains("panicked") || !one_message {
            wrong.push(format!("{what}: exit {code}, want {want}: {err}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn v(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// A loopback port nothing listens on (bound, then released).
fn refused() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("127.0.0.1:{port}")
}

#[test]
fn generate_and_segment_exit_codes_match_the_readme() {
    let (demo, model) = (p("d/demographics.parquet"), p("new-model"));
    check(&[
        (
            "generate --households 0 (a setting)",
            v(&["generate", "--out", &p("g"), "--households", "0"]),
            2,
        ),
        (
            "generate into /dev/full/x (an output)",
            v(&["generate", "--out", "/dev/full/x", "--households", "100"]),
            74,
        ),
        ("an unknown flag", v(&["generate", "--no-such-flag"]), 2),
        (
            "segment a missing file",
            v(&[
                "segment",
                "--demographics",
                &p("none.parquet"),
                "--out",
                &model,
            ]),
            66,
        ),
        (
            "segment a CSV without the columns (data)",
            v(&["segment", "--demographics", &p("junk.csv"), "--out", &model]),
            65,
        ),
        (
            "segment junk bytes (data: not Parquet, not UTF-8 CSV)",
            v(&["segment", "--demographics", &p("junk.bin"), "--out", &model]),
            65,
        ),
        (
            "segment --k above the households (a setting)",
            v(&[
                "segment",
                "--demographics",
                &demo,
                "--out",
                &model,
                "--k",
                "100000",
            ]),
            2,
        ),
        (
            "segment into /dev/full/x (an output)",
            v(&["segment", "--demographics", &demo, "--out", "/dev/full/x"]),
            74,
        ),
    ]);
}

#[test]
fn analyze_exit_codes_match_the_readme() {
    let (m, views, out) = (p("m"), p("d/views_static.csv"), p("a"));
    let kafka = format!("kafka://{}/t", refused());
    let an = |extra: &[&str]| {
        let mut a = v(&["analyze", "--model", &m, "--views", &views, "--out", &out]);
        a.extend(v(extra));
        a
    };
    check(&[
        (
            "a missing model",
            v(&[
                "analyze",
                "--model",
                &p("none"),
                "--views",
                &views,
                "--out",
                &out,
            ]),
            66,
        ),
        (
            "missing views",
            v(&[
                "analyze",
                "--model",
                &m,
                "--views",
                &p("none.csv"),
                "--out",
                &out,
            ]),
            66,
        ),
        ("a bad --subsets", an(&["--subsets", "1"]), 2),
        ("--top 0", an(&["--top", "0"]), 2),
        (
            "no valid record (data)",
            v(&[
                "analyze",
                "--model",
                &m,
                "--views",
                &p("all-bad.csv"),
                "--out",
                &out,
            ]),
            65,
        ),
        (
            "--out the model folder",
            v(&["analyze", "--model", &m, "--views", &views, "--out", &m]),
            2,
        ),
        (
            "--out the model folder, spelt with ..",
            v(&[
                "analyze",
                "--model",
                &m,
                "--views",
                &views,
                "--out",
                &format!("{m}/x/.."),
            ]),
            2,
        ),
        (
            "--dead-letter the views file",
            an(&["--dead-letter", &views]),
            2,
        ),
        (
            "--dead-letter a file of the model",
            an(&["--dead-letter", &format!("{m}/model.bin")]),
            2,
        ),
        ("--threads beyond 1024", an(&["--threads", "100000"]), 2),
        (
            "an output under /dev/full",
            v(&[
                "analyze",
                "--model",
                &m,
                "--views",
                &views,
                "--out",
                "/dev/full/x",
            ]),
            74,
        ),
        (
            "a dead-letter file under /dev/full",
            an(&["--dead-letter", "/dev/full/x.tsv"]),
            74,
        ),
        (
            "an unknown -X key (a setting)",
            v(&[
                "analyze",
                "--model",
                &m,
                "--views",
                &kafka,
                "--out",
                &out,
                "-X",
                "no.such.key=1",
            ]),
            2,
        ),
        (
            "a broker that is not there",
            v(&["analyze", "--model", &m, "--views", &kafka, "--out", &out]),
            69,
        ),
        (
            "an unknown -X key with a file source (a setting all the same)",
            an(&["-X", "no.such.key=1"]),
            2,
        ),
    ]);
}

#[test]
fn run_exit_codes_match_the_readme() {
    let (m, views) = (p("m"), p("d/views_stream.csv"));
    let kafka = format!("kafka://{}/t", refused());
    let base = |extra: &[&str]| {
        let mut a = v(&[
            "run",
            "--model",
            &m,
            "--source",
            &views,
            "--until-end",
            "--no-stdout",
        ]);
        a.extend(v(extra));
        a
    };
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().map(|a| a.to_string()).unwrap_or_default();
    check(&[
        (
            "a missing model",
            v(&[
                "run",
                "--model",
                &p("none"),
                "--source",
                &views,
                "--until-end",
            ]),
            66,
        ),
        (
            "a missing source file",
            v(&[
                "run",
                "--model",
                &m,
                "--source",
                &p("none.csv"),
                "--until-end",
            ]),
            66,
        ),
        (
            "a missing --config",
            v(&["run", "--config", &p("none.toml")]),
            66,
        ),
        (
            "a config that does not parse",
            v(&["run", "--config", &p("bad.toml")]),
            2,
        ),
        (
            "a config with an unknown key",
            v(&["run", "--config", &p("unknown.toml")]),
            2,
        ),
        ("--shards 0", base(&["--shards", "0"]), 2),
        (
            "an unknown -X key with a file source",
            base(&["-X", "no.such.key=1"]),
            2,
        ),
        ("--start latest on a file", base(&["--start", "latest"]), 2),
        (
            "dead letters into the source file",
            base(&["--dead-letter", &views]),
            2,
        ),
        (
            "snapshots into the source file",
            base(&["--snapshots", &views]),
            2,
        ),
        (
            "snapshots and dead letters into one file",
            base(&["--snapshots", &p("same.x"), "--dead-letter", &p("same.x")]),
            2,
        ),
        (
            "an unknown -X key",
            v(&[
                "run",
                "--model",
                &m,
                "--source",
                &kafka,
                "--startup-wait",
                "0s",
                "-X",
                "no.such.key=1",
            ]),
            2,
        ),
        (
            "a source broker that is not there",
            v(&[
                "run",
                "--model",
                &m,
                "--source",
                &kafka,
                "--startup-wait",
                "0s",
            ]),
            69,
        ),
        (
            "a --kafka-sink broker that is not there",
            base(&["--kafka-sink", &kafka, "--connect-timeout", "1s"]),
            69,
        ),
        ("an HTTP port in use", base(&["--http-listen", &busy]), 69),
        (
            "snapshots under /dev/full",
            base(&["--snapshots", "/dev/full/x.jsonl"]),
            74,
        ),
        (
            "dead letters into /dev/full",
            base(&["--dead-letter", "/dev/full"]),
            74,
        ),
    ]);
}

#[test]
fn record_replay_loadtest_demo_exit_codes_match_the_readme() {
    let kafka = format!("kafka://{}/t", refused());
    let rec = p("r.vprec");
    check(&[
        (
            "record from a broker that is not there",
            v(&["record", "--from", &kafka, "--out", &rec, "--until-end"]),
            69,
        ),
        (
            "record a bad URL",
            v(&[
                "record",
                "--from",
                "kafka:///",
                "--out",
                &rec,
                "--until-end",
            ]),
            2,
        ),
        (
            "replay a missing file",
            v(&["replay", "--file", &p("none.vprec"), "--to", &kafka]),
            66,
        ),
        (
            "replay --partitions 0",
            v(&[
                "replay",
                "--file",
                &p("d/views_stream.csv"),
                "--to",
                &kafka,
                "--partitions",
                "0",
            ]),
            2,
        ),
        (
            "replay to a broker that is not there",
            v(&["replay", "--file", &p("d/views_stream.csv"), "--to", &kafka]),
            69,
        ),
        (
            "loadtest --shards 0",
            v(&[
                "loadtest",
                "--file",
                &p("d/views_stream.csv"),
                "--model",
                &p("m"),
                "--shards",
                "0",
            ]),
            2,
        ),
        (
            "loadtest a missing file",
            v(&["loadtest", "--file", &p("none.csv"), "--model", &p("m")]),
            66,
        ),
        (
            "demo into /dev/full/x",
            v(&["demo", "--out", "/dev/full/x"]),
            74,
        ),
    ]);
}
