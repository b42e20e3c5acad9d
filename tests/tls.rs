//! Kafka over TLS and SASL/SCRAM, end to end against Apache Kafka itself: the fixture starts a
//! broker of this test's own with an SSL and a SASL_SSL listener (a CA and a certificate for
//! 127.0.0.1 made by the fixture) and a SCRAM-SHA-512 user created by Kafka's own StorageTool.
//! `viewpulse replay` writes the golden stream over SASL_SSL, `viewpulse record` captures it
//! back over SASL_SSL, and `viewpulse run` reads it over SASL_SSL: the recording holds every
//! record and the final snapshot equals a run over the same file. A wrong password and an
//! untrusted certificate each end with one clear message naming the broker and the reason,
//! and the password appears in no log line or error.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use viewpulse::kafka_broker::BrokerOptions;

const USER: &str = "alice";
/// Long and unusual, so that a grep for it cannot match anything else.
const PASSWORD: &str = "pw-7f3a9c1e-never-logged";

fn viewpulse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_viewpulse"))
        .args(args)
        .env("VIEWPULSE_NO_PROGRESS", "1")
        .env("VIEWPULSE_TEST_SASL_PASSWORD", PASSWORD)
        .output()
        .expect("viewpulse runs")
}

/// Runs `args`, asserts success and that the password is not in what it printed; its
/// standard error.
fn ok(args: &[&str]) -> String {
    let out = viewpulse(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {err}");
    assert_no_password(&out);
    err
}

fn assert_no_password(out: &Output) {
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !String::from_utf8_lossy(text).contains(PASSWORD),
            "the password was printed: {}",
            String::from_utf8_lossy(text)
        );
    }
}

/// The last snapshot of a JSON-lines file, without its time.
fn last_snapshot(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("snapshots");
    let line = text.lines().last().expect("a snapshot");
    let mut v: serde_json::Value = serde_json::from_str(line).expect("JSON");
    let o = v.as_object_mut().expect("an object");
    for k in ["emitted_at", "trigger", "offsets"] {
        o.remove(k);
    }
    v
}

fn golden() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden")
}

#[test]
fn sasl_ssl_replay_record_and_run_end_to_end_and_bad_credentials_are_named() {
    let broker = common::Broker::dedicated_with(&BrokerOptions {
        tls: true,
        scram_users: vec![(USER.into(), PASSWORD.into())],
        ..Default::default()
    });
    let local = broker.local();
    let sasl = local.sasl_ssl_addr().expect("a SASL_SSL listener");
    let ssl = local.ssl_addr().expect("an SSL listener");
    let ca = format!("ssl.ca.location={}", local.ca().display());
    let dir = tempfile::tempdir().unwrap();
    let views = golden().join("input/views_stream.csv");
    let (model, views) = (
        golden().to_str().unwrap().to_string(),
        views.to_str().unwrap().to_string(),
    );
    let url = format!("kafka://{sasl}/views");
    let user = format!("sasl.username={USER}");
    // the password from the environment, as a deployment passes it
    let secure: Vec<&str> = vec![
        "-X",
        "security.protocol=SASL_SSL",
        "-X",
        "sasl.mechanism=SCRAM-SHA-512",
        "-X",
        &user,
        "-X",
        "sasl.password=${env:VIEWPULSE_TEST_SASL_PASSWORD}",
        "-X",
        &ca,
    ];

    let mut args = vec![
        "--log",
        "debug",
        "replay",
        "--file",
        &views,
        "--to",
        &url,
        "--partitions",
        "2",
    ];
    args.extend(&secure);
    ok(&args);

    let rec = dir.path().join("views.vprec");
    let mut args = vec![
        "--log",
        "debug",
        "record",
        "--from",
        &url,
        "--out",
        rec.to_str().unwrap(),
        "--until-end",
    ];
    args.extend(&secure);
    let err = ok(&args);
    let lines = common::lines(Path::new(&views)).len();
    assert!(
        err.contains(&format!("recorded {lines} records")),
        "the recording holds every record: {err}"
    );

    let (over_tls, from_file) = (dir.path().join("tls.jsonl"), dir.path().join("file.jsonl"));
    let run = |source: &str, out: &Path, extra: &[&str]| -> Output {
        let mut a = vec![
            "--log", "debug", "run", "--model", &model, "--source", source,
        ];
        a.extend(["--until-end", "--no-stdout", "--startup-wait", "5s"]);
        a.extend(["--snapshots", out.to_str().unwrap()]);
        a.extend(extra);
        viewpulse(&a)
    };
    let out = run(&url, &over_tls, &secure);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_password(&out);
    ok(&[
        "run",
        "--model",
        &model,
        "--source",
        &views,
        "--until-end",
        "--no-stdout",
        "--snapshots",
        from_file.to_str().unwrap(),
    ]);
    let (got, want) = (last_snapshot(&over_tls), last_snapshot(&from_file));
    assert!(want["records"].as_u64().unwrap_or(0) > 0, "{want}");
    assert_eq!(got, want, "the snapshot read over SASL_SSL");

    // a wrong password: refused, with the broker and the reason, and no password printed
    let mut wrong = secure.clone();
    wrong[7] = "sasl.password=not-the-password-either";
    let out = run(&url, &dir.path().join("wrong.jsonl"), &wrong);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert_no_password(&out);
    assert!(!err.contains("not-the-password-either"), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert!(
        errors
            .iter()
            .any(|l| l.contains(&sasl) && l.contains("Authentication failed")),
        "an error line names the broker and the reason: {err}"
    );

    // a certificate the client does not trust (its CA is another one): refused, named
    let other = dir.path().join("other-ca.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=not the broker's CA", "-keyout"])
        .arg(dir.path().join("other.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .expect("the openssl command runs");
    assert!(made.status.success());
    let untrusted = format!("ssl.ca.location={}", other.display());
    let out = run(
        &format!("kafka://{ssl}/views"),
        &dir.path().join("refused.jsonl"),
        &["-X", "security.protocol=SSL", "-X", &untrusted],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(69),
        "an untrusted broker was read: {err}"
    );
    assert!(
        err.lines().any(|l| l.contains("error")
            && l.contains(&ssl)
            && l.contains("certificate verify failed")),
        "one error line names the broker and the reason: {err}"
    );
}
