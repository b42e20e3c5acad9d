//! Regression tests for issue 14, an adversarial hour with the binary: each test is named
//! for what it found and runs the real binary. A full disk is a small tmpfs the test mounts
//! (the suite runs as root, as CI does), or `/dev/full`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The binary under test: this build's, or `VIEWPULSE_TEST_BIN` (to run these checks
/// against another build, such as the one before a fix).
fn bin() -> String {
    std::env::var("VIEWPULSE_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_viewpulse").into())
}

fn viewpulse() -> Command {
    let mut c = Command::new(bin());
    c.env("VIEWPULSE_NO_PROGRESS", "1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    c
}

fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    viewpulse().args(args).output().expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Run; expect `code`; stderr.
fn expect<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S], code: i32) -> String {
    let out = run(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "viewpulse {args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Generated data and a model, once: (folder, model folder).
fn data() -> &'static (tempfile::TempDir, PathBuf) {
    static D: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    D.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        let m = dir.path().join("m");
        expect(
            &[
                "generate",
                "--out",
                s(&d),
                "--households",
                "600",
                "--static-records",
                "20000",
                "--stream-records",
                "5500",
                "--stations",
                "100",
            ],
            0,
        );
        expect(
            &[
                "segment",
                "--demographics",
                s(&d.join("demographics.parquet")),
                "--out",
                s(&m),
                "--no-charts",
            ],
            0,
        );
        (dir, m)
    })
}

/// `run` over the data set's stream file to its end without the stdout table, then `extra`.
fn run_args(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "run",
        "--model",
        s(model()),
        "--source",
        s(&d("views_stream.csv")),
        "--until-end",
        "--no-stdout",
    ]
    .map(String::from)
    .to_vec();
    v.extend(extra.iter().map(|a| a.to_string()));
    v
}

/// `analyze` of the data set's static views with `model` into `out`, then `extra`.
fn analyze_args(model: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "analyze",
        "--model",
        s(model),
        "--views",
        s(&d("views_static.csv")),
        "--out",
        s(out),
    ]
    .map(String::from)
    .to_vec();
    v.extend(extra.iter().map(|a| a.to_string()));
    v
}

fn d(name: &str) -> PathBuf {
    data().0.path().join("d").join(name)
}

fn model() -> &'static Path {
    &data().1
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tmpfs of `kib` KiB, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new(kib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            st.success(),
            "these tests mount a small tmpfs (as root) to fill a disk"
        );
        Tmpfs(dir)
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

// ---- 1. one flag exhausts the machine

#[test]
fn regression_analyze_top_beyond_the_stations_prints_only_rows_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    for top in ["100000", "18446744073709551615"] {
        let out_dir = dir.path().join(top);
        let out = run(&analyze_args(
            model(),
            &out_dir,
            &["--subsets", "all", "--top", top],
        ));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let csv = std::fs::read_to_string(out_dir.join("diff_rank.csv")).unwrap();
        let mut lines = csv.lines();
        let rank_col = lines
            .next()
            .unwrap()
            .split(',')
            .position(|c| c == "rank")
            .unwrap();
        let deepest = lines
            .map(|l| {
                l.split(',')
                    .nth(rank_col)
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
            })
            .max()
            .unwrap();
        assert!(deepest <= 100, "no rank beyond the stations: {deepest}");
        // a header, the ranks that exist for each of the 6 clusters, the summary line
        assert_eq!(stdout.lines().count(), 6 * deepest + 2, "--top {top}");
        let html = std::fs::metadata(out_dir.join("report.html"))
            .unwrap()
            .len();
        assert!(html < 2 << 20, "report.html of {html} bytes");
    }
}

// ---- 3. a failed segment corrupts the model

#[test]
fn regression_a_segment_that_fills_the_disk_leaves_the_old_model_whole() {
    let disk = Tmpfs::new(1024);
    let m = disk.path().join("m");
    let small = tempfile::tempdir().unwrap();
    let big = tempfile::tempdir().unwrap();
    for (dir, n) in [(&small, "300"), (&big, "20000")] {
        expect(
            &[
                "generate",
                "--out",
                s(dir.path()),
                "--households",
                n,
                "--static-records",
                "1000",
                "--stream-records",
                "10",
                "--stations",
                "100",
            ],
            0,
        );
    }
    let demo = |dir: &tempfile::TempDir| dir.path().join("demographics.parquet");
    expect(
        &[
            "segment",
            "--demographics",
            s(&demo(&small)),
            "--out",
            s(&m),
            "--k",
            "6",
        ],
        0,
    );
    let before: Vec<(String, Vec<u8>)> = files(&m);
    let err = expect(
        &[
            "segment",
            "--demographics",
            s(&demo(&big)),
            "--out",
            s(&m),
            "--k",
            "3",
        ],
        74,
    );
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(files(&m), before, "the old model is untouched");
    let left: Vec<_> = std::fs::read_dir(disk.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["m"], "no staging folder is left");
    let out = disk.path().join("a");
    expect(
        &[
            "analyze",
            "--model",
            s(&m),
            "--views",
            s(&small.path().join("views_static.csv")),
            "--out",
            s(&out),
            "--no-report",
            "--subsets",
            "all",
        ],
        0,
    );
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn regression_a_model_folder_mixed_from_two_runs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let demo = d("demographics.parquet");
    expect(
        &[
            "segment",
            "--demographics",
            s(&demo),
            "--out",
            s(&a),
            "--k",
            "6",
            "--no-charts",
        ],
        0,
    );
    expect(
        &[
            "segment",
            "--demographics",
            s(&demo),
            "--out",
            s(&b),
            "--k",
            "3",
            "--no-charts",
        ],
        0,
    );
    let analyze = |m: &Path| {
        vec![
            "analyze".to_string(),
            "--model".into(),
            s(m).into(),
            "--views".into(),
            s(&d("views_static.csv")).into(),
            "--out".into(),
            s(&dir.path().join("out")).into(),
            "--no-report".into(),
        ]
    };
    let refused = |m: &Path, what: &str| {
        let args = analyze(m);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = expect(&args, 65);
        assert!(err.contains("do not belong together"), "{what}: {err}");
    };
    // households.csv of another run beside model.bin and model.json
    let mixed = dir.path().join("mixed-csv");
    copy_dir(&a, &mixed);
    std::fs::copy(b.join("households.csv"), mixed.join("households.csv")).unwrap();
    refused(&mixed, "households.csv");
    // model.json of another run (k = 3 beside a k = 6 model.bin)
    let mixed = dir.path().join("mixed-json");
    copy_dir(&a, &mixed);
    std::fs::copy(b.join("model.json"), mixed.join("model.json")).unwrap();
    refused(&mixed, "model.json");
    // households.csv and model.json without model.bin, from different runs
    let mixed = dir.path().join("mixed-no-bin");
    copy_dir(&a, &mixed);
    std::fs::remove_file(mixed.join("model.bin")).unwrap();
    std::fs::copy(b.join("model.json"), mixed.join("model.json")).unwrap();
    refused(&mixed, "households.csv + model.json");
    // a folder of one run loads
    let args = analyze(&a);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    expect(&args, 0);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

// ---- 4. a panic on a closed pipe

#[test]
fn regression_a_closed_stdout_ends_quietly_and_a_full_one_exits_74() {
    let dir = tempfile::tempdir().unwrap();
    let commands: Vec<Vec<String>> = vec![
        vec![
            "analyze".into(),
            "--model".into(),
            s(model()).into(),
            "--views".into(),
            s(&d("views_static.csv")).into(),
            "--out".into(),
            s(&dir.path().join("a")).into(),
            "--no-report".into(),
        ],
        vec![
            "run".into(),
            "--model".into(),
            s(model()).into(),
            "--source".into(),
            s(&d("views_stream.csv")).into(),
            "--until-end".into(),
            "--trigger-records".into(),
            "500".into(),
        ],
        vec![
            "generate".into(),
            "--out".into(),
            s(&dir.path().join("g")).into(),
            "--households".into(),
            "100".into(),
            "--static-records".into(),
            "100".into(),
            "--stream-records".into(),
            "100".into(),
        ],
    ];
    // clap's answers too: --help into a full disk is not a success
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = viewpulse().arg("--help").stdout(full).output().unwrap();
    assert_eq!(out.status.code(), Some(74), "{}", text(&out.stderr));
    for args in &commands {
        // the reader goes away before the command writes
        let mut child = viewpulse()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(0), "{args:?} into a closed pipe: {err}");
        assert!(!err.contains("panicked") && !err.contains("error"), "{err}");

        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = viewpulse().args(args).stdout(full).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(74),
            "{args:?} into /dev/full: {err}"
        );
        assert!(
            err.contains("cannot write to stdout: No space left on device"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

// ---- 6. errors that hide their cause

#[test]
fn regression_a_full_disk_under_state_dir_names_the_checkpoint_and_the_cause() {
    // one page: the first checkpoint fits, the second does not
    let disk = Tmpfs::new(4);
    let state = disk.path().join("state");
    let out = run(&run_args(&[
        "--trigger-records",
        "500",
        "--state-dir",
        s(&state),
    ]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert!(
        err.contains("cannot write the checkpoint")
            && err.contains(s(&state))
            && err.contains("No space left on device"),
        "{err}"
    );
    assert!(!err.contains("the writer stopped"), "{err}");
    let tmp: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "no torn temporary file: {tmp:?}");
}

#[test]
fn regression_a_full_disk_while_drawing_names_the_chart_and_the_cause() {
    // room for the CSV files (pages of 4 KiB) and 32 KiB more: the first chart does not fit
    let csvs = tempfile::tempdir().unwrap();
    expect(&analyze_args(model(), csvs.path(), &["--no-report"]), 0);
    let kib: u64 = std::fs::read_dir(csvs.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".csv"))
        .map(|e| e.metadata().unwrap().len().div_ceil(4096) * 4)
        .sum();
    let disk = Tmpfs::new(kib + 32);
    let out = disk.path().join("a");
    let err = expect(&analyze_args(model(), &out, &[]), 74);
    assert!(
        err.contains("cannot draw") && err.contains(".png: No space left on device"),
        "{err}"
    );
    assert!(
        !err.contains("ImageError") && !err.contains("Custom"),
        "{err}"
    );
}

#[test]
fn regression_a_dead_letter_write_error_says_dead_letters() {
    let err = expect(&run_args(&["--dead-letter", "/dev/full"]), 74);
    assert!(
        err.contains("cannot write dead letters to /dev/full: No space left on device"),
        "{err}"
    );
}

#[test]
fn regression_a_truncated_model_bin_says_it_is_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    copy_dir(model(), &m);
    let bin = std::fs::read(m.join("model.bin")).unwrap();
    std::fs::write(m.join("model.bin"), &bin[..bin.len() / 2]).unwrap();
    let err = expect(&analyze_args(&m, &dir.path().join("a"), &[]), 65);
    assert!(
        err.contains("model.bin") && err.contains("cut short"),
        "{err}"
    );
    assert!(
        !err.contains("Io {") && !err.contains("UnexpectedEof"),
        "{err}"
    );
}

// ---- 8. start-up waits that do not do what they say

#[test]
fn regression_startup_wait_gives_up_when_it_says_and_logs_while_waiting() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let src = format!("kafka://{addr}/views");
    let base = [
        "--log",
        "info",
        "run",
        "--model",
        s(model()),
        "--source",
        &src,
        "--no-stdout",
    ];
    // 0s: one try, and a refused connection ends it with the reason
    let mut args = base.to_vec();
    args.extend(["--startup-wait", "0s"]);
    let err = expect(&args, 69);
    assert!(err.contains("Connection refused"), "{err}");
    assert!(!err.contains("gave up after"), "{err}");
    // 6s: it says so at once, says it again while it waits, and gives up after 6 s, not 10
    let mut args = base.to_vec();
    args.extend(["--startup-wait", "6s"]);
    let err = expect(&args, 69);
    assert!(err.contains("source not ready; retrying"), "{err}");
    assert!(err.contains("still waiting for the source"), "{err}");
    let after: f64 = err
        .split("gave up after ")
        .nth(1)
        .and_then(|t| t.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'gave up after Ns': {err}"));
    assert!(
        (6.0..7.0).contains(&after),
        "gave up after {after} s: {err}"
    );
}

// ---- 9. accepted without a word

#[test]
fn regression_k_above_the_distinct_rows_warns_of_empty_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("same.csv");
    // six households with the same demographics: one distinct feature row
    let demo = std::fs::read_to_string(d("demographics.csv")).unwrap();
    let mut lines = demo.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("household_id,"));
    let row = lines.next().unwrap().split_once(',').unwrap().1;
    let mut t = format!("{header}\n");
    for id in 1..=6 {
        t.push_str(&format!("{id},{row}\n"));
    }
    std::fs::write(&csv, t).unwrap();
    let err = expect(
        &[
            "segment",
            "--demographics",
            s(&csv),
            "--out",
            s(&dir.path().join("m")),
            "--k",
            "3",
        ],
        0,
    );
    assert!(err.contains("some clusters have no household"), "{err}");
    assert!(err.contains("distinct_rows=1"), "{err}");
}

#[test]
fn regression_an_empty_subset_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let err = expect(
        &analyze_args(
            model(),
            &dir.path().join("a"),
            &["--no-report", "--subsets", "all,99999"],
        ),
        0,
    );
    assert!(
        err.contains("the subset holds no household") && err.contains("99999"),
        "{err}"
    );
}

#[test]
fn regression_duplicate_ids_in_households_csv_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(
        m.join("households.csv"),
        "household_id,cluster,distance,rank\n7,0,0.1,1\n8,1,0.2,1\n7,1,0.3,2\n",
    )
    .unwrap();
    let err = expect(&analyze_args(&m, &dir.path().join("a"), &[]), 65);
    assert!(
        err.contains("line 4") && err.contains("already on line 2"),
        "{err}"
    );
}

#[test]
fn regression_http_beyond_loopback_without_a_token_is_warned_about() {
    let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let err = expect(&run_args(&["--http-listen", &format!("0.0.0.0:{port}")]), 0);
    assert!(err.contains("without a token"), "{err}");
}

// ---- 10. smaller

#[test]
fn regression_a_failed_analyze_leaves_no_dead_letter_file() {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("cut.csv.gz");
    let mut bytes = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&std::fs::read(d("views_static.csv")).unwrap())
            .unwrap();
        e.finish().unwrap()
    };
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&gz, bytes).unwrap();
    let dead = dir.path().join("dead.tsv");
    expect(
        &[
            "analyze",
            "--model",
            s(model()),
            "--views",
            s(&gz),
            "--out",
            s(&dir.path().join("a")),
            "--dead-letter",
            s(&dead),
        ],
        65,
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("dead"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // an analysis that fails after counting (no valid record) leaves an older file as it was
    std::fs::write(&dead, "old\n").unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "x\ny\n").unwrap();
    let mut args = analyze_args(model(), &dir.path().join("b"), &["--dead-letter", s(&dead)]);
    args[4] = s(&bad).to_string();
    expect(&args, 65);
    assert_eq!(std::fs::read_to_string(&dead).unwrap(), "old\n");
}

#[test]
fn regression_a_dead_letter_symlink_is_written_through_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.tsv");
    let link = dir.path().join("link.tsv");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    expect(
        &analyze_args(
            model(),
            &dir.path().join("a"),
            &["--dead-letter", s(&link), "--no-report"],
        ),
        0,
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let body = std::fs::read_to_string(&real).unwrap();
    assert!(body.starts_with("position\tkind\trecord\n") && body.lines().count() > 1);
    // a device is written to as it is: /dev/full refuses, /dev/full stays a device
    let err = expect(
        &analyze_args(
            model(),
            &dir.path().join("b"),
            &["--dead-letter", "/dev/full", "--no-report"],
        ),
        74,
    );
    assert!(
        err.contains("/dev/full") && err.contains("No space left"),
        "{err}"
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/full")
        .unwrap()
        .file_type()
        .is_char_device());
}

#[test]
fn regression_a_failed_analyze_keeps_a_symlinked_dead_letter_file_and_cleans_stale_ones() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.tsv");
    let link = dir.path().join("link.tsv");
    std::fs::write(&real, "old\n").unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // the partial file of an analyze that was killed (a pid that is not running)
    let stale = dir.path().join(".real.tsv.partial-4000000");
    std::fs::write(&stale, "junk").unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "x\ny\n").unwrap();
    let mut args = analyze_args(model(), &dir.path().join("a"), &["--dead-letter", s(&link)]);
    args[4] = s(&bad).to_string();
    expect(&args, 65);
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "old\n");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(
        !stale.exists(),
        "the killed analyze's partial file is removed"
    );
    // a name near the 255-byte limit: the hidden file beside it must fit too
    let long = dir.path().join(format!("{}.tsv", "d".repeat(240)));
    expect(
        &analyze_args(
            model(),
            &dir.path().join("b"),
            &["--dead-letter", s(&long), "--no-report"],
        ),
        0,
    );
    assert!(long.is_file());
}

#[test]
fn regression_segment_out_resolves_dot_links_and_stale_staging() {
    let dir = tempfile::tempdir().unwrap();
    let demo = d("demographics.parquet");
    // the current folder is refused: it would be replaced under the user's feet
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).unwrap();
    let out = viewpulse()
        .args([
            "segment",
            "--demographics",
            s(&demo),
            "--out",
            ".",
            "--no-charts",
        ])
        .current_dir(&m)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("current folder"), "{err}");
    // a link to a model folder: the folder is replaced, the link stays a link
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&m, &link).unwrap();
    // a staging folder of a segment that was killed (a pid that is not running)
    let stale = dir.path().join(".m.staging-4000000");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("households.csv"), "junk").unwrap();
    expect(
        &[
            "segment",
            "--demographics",
            s(&demo),
            "--out",
            s(&link),
            "--no-charts",
        ],
        0,
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(m.join("model.bin").is_file());
    assert!(
        !stale.exists(),
        "the killed segment's staging folder is removed"
    );
}

#[test]
fn regression_the_json_log_format_ends_with_a_json_error_line() {
    let out = run(&[
        "--log-format",
        "json",
        "analyze",
        "--model",
        "/nonexistent/model",
        "--views",
        s(&d("views_static.csv")),
        "--out",
        "/tmp/never",
    ]);
    assert_eq!(out.status.code(), Some(66));
    let err = text(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last:?}"));
    assert_eq!(v["level"], "ERROR", "{last}");
    assert!(v["fields"]["error"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/model"));
    assert_eq!(v["fields"]["exit_code"], 66);
}

#[test]
fn regression_snapshots_to_dev_null_with_a_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        // the second run resumes from the first one's checkpoint
        expect(
            &run_args(&[
                "--snapshots",
                "/dev/null",
                "--state-dir",
                s(&dir.path().join("state")),
            ]),
            0,
        );
    }
}

#[test]
fn regression_a_full_disk_leaves_no_torn_snapshot_line() {
    let disk = Tmpfs::new(16);
    let snaps = disk.path().join("s.jsonl");
    let err = expect(
        &run_args(&["--trigger-records", "10", "--snapshots", s(&snaps)]),
        74,
    );
    assert!(err.contains("cannot write snapshots to"), "{err}");
    let body = std::fs::read_to_string(&snaps).unwrap();
    assert!(!body.is_empty() && body.ends_with('\n'), "whole lines only");
    for l in body.lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap();
    }
}

#[test]
fn regression_a_full_disk_leaves_no_torn_dead_letter_line() {
    // two pages of disk, and 3,000 malformed records of about 30 bytes each
    let disk = Tmpfs::new(8);
    let dead = disk.path().join("dead.tsv");
    let src = tempfile::tempdir().unwrap();
    let views = src.path().join("bad.csv");
    let lines: String = (0..3000)
        .map(|i| format!("not,a,view,record,{i}\n"))
        .collect();
    std::fs::write(&views, lines).unwrap();
    let mut args = run_args(&["--trigger-records", "100", "--dead-letter", s(&dead)]);
    args[4] = s(&views).to_string();
    let err = expect(&args, 74);
    assert!(err.contains("cannot write dead letters to"), "{err}");
    let body = std::fs::read_to_string(&dead).unwrap();
    assert!(body.starts_with("position\tkind\trecord\n"), "{body:?}");
    assert!(
        body.ends_with('\n'),
        "whole lines only: {:?}",
        &body[body.len().saturating_sub(80)..]
    );
    for l in body.lines().skip(1) {
        assert_eq!(l.split('\t').count(), 3, "{l:?}");
    }
}

#[test]
fn regression_one_snapshot_is_singular() {
    let err = expect(&run_args(&["--trigger-records", "1000000"]), 0);
    assert!(err.contains("5500 records, 1 snapshot\n"), "{err}");
}

#[test]
fn regression_the_summary_table_and_the_report_keep_the_subsets_order() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("a");
    let out = run(&analyze_args(model(), &out_dir, &["--subsets", "3,all,17"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let head = text(&out.stdout).lines().next().unwrap().to_string();
    let cols: Vec<&str> = head.split_whitespace().collect();
    assert_eq!(cols, ["cluster", "rank", "3rd's", "all", "17th's"]);
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    // every subset's diff-rank chart is in the report, in the order given
    let at = |id: &str| {
        html.find(&format!("id=\"diff-rank-chart-{id}\""))
            .unwrap_or_else(|| panic!("no chart for subset {id}"))
    };
    assert!(at("3") < at("all") && at("all") < at("17"));
    // the timing table shows the real figures
    let timing = &html[html.find("id=\"timing\"").unwrap()..];
    let timing = &timing[..timing.find("</table>").unwrap()];
    let total = timing
        .split("<th>total</th><td class=\"n\">")
        .nth(1)
        .unwrap();
    assert!(
        !total.starts_with("0.000 s") && !total.starts_with("0.0 ms"),
        "{timing}"
    );
    let rate = timing
        .split("<th>records per second</th><td class=\"n\">")
        .nth(1)
        .unwrap();
    assert!(!rate.starts_with("0<"), "{timing}");
}
