//! SPEC 5 through the actor pipeline: the golden stream (a trigger every 500 records, subset 3)
//! equals Spark's snapshots, and 1, 4 or 16 shards give the same snapshots as a brute-force
//! recomputation over exactly the first t x trigger records.

mod common;

use std::path::{Path, PathBuf};

use viewpulse::counters::{Counters, Subset};
use viewpulse::pipeline::{RunSource, Snapshot};
use viewpulse::ratings;
use viewpulse::topology;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden")
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn run(shards: usize, subsets: &[Subset], trigger: u64, file: &Path) -> Vec<Snapshot> {
    let (_, m) = topology::load_membership(&golden(), subsets).unwrap();
    common::collect(
        RunSource::File(file.to_path_buf()),
        m,
        &common::settings(shards, trigger, subsets),
        Default::default(),
    )
}

#[test]
fn golden_stream_equals_spark() {
    let file = golden().join("input/views_stream.csv");
    let want: Vec<serde_json::Value> =
        std::fs::read_to_string(golden().join("expected/stream_snapshots_subset3_every500.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    for shards in [1, 4] {
        let got = run(shards, &[Subset::Every(3)], 500, &file);
        assert_eq!(got.len(), want.len(), "{shards} shards");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.trigger, w["trigger"].as_u64().unwrap());
            assert_eq!(g.records, w["records"].as_u64().unwrap());
            assert_eq!(g.offsets["0"] as u64, g.records);
            let rows = &g.subsets["3"];
            let top = w["top"].as_array().unwrap();
            assert_eq!(rows.len(), top.len(), "trigger {}", g.trigger);
            for (r, t) in rows.iter().zip(top) {
                assert_eq!(r.cluster as u64, t["cluster"].as_u64().unwrap());
                assert_eq!(r.rank as u64, t["rank"].as_u64().unwrap());
                assert_eq!(
                    r.station_num,
                    t["station_num"].as_str().unwrap(),
                    "trigger {}",
                    g.trigger
                );
                for (a, k) in [
                    (r.diff_rank, "diff_rank"),
                    (r.popularity_rating, "popularity_rating"),
                    (r.genpop_rating, "genpop_rating"),
                ] {
                    assert!(
                        close(a, t[k].as_f64().unwrap()),
                        "trigger {} {k}",
                        g.trigger
                    );
                }
            }
        }
    }
}

#[test]
fn any_shard_count_equals_brute_force() {
    let file = golden().join("input/views_static.csv");
    let subsets = [Subset::All, Subset::Every(3), Subset::Every(17)];
    let text = std::fs::read(&file).unwrap();
    let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(|l| l.to_vec()).collect();
    if text.ends_with(b"\n") {
        lines.pop(); // after the last newline: not a record
    }
    assert_eq!(lines.len(), 6000);
    let (_, m) = topology::load_membership(&golden(), &subsets).unwrap();
    let trigger = 700u64; // 6,000 records: 8 full triggers and a last partial one
    let runs: Vec<Vec<Snapshot>> = [1, 4, 16]
        .iter()
        .map(|&s| run(s, &subsets, trigger, &file))
        .collect();
    assert_eq!(runs[0].len(), 9);
    for snaps in &runs {
        let lines: Vec<&[u8]> = lines.iter().map(|l| &l[..]).collect();
        assert_brute_force(snaps, &lines, &m, &subsets, trigger);
    }
}

/// Snapshot t (1-based) holds exactly what a brute-force count of the first t x `trigger`
/// records gives.
fn assert_brute_force(
    snaps: &[Snapshot],
    lines: &[&[u8]],
    m: &viewpulse::counters::Membership,
    subsets: &[Subset],
    trigger: u64,
) {
    for (i, snap) in snaps.iter().enumerate() {
        let upto = ((i as u64 + 1) * trigger).min(lines.len() as u64);
        assert_eq!((snap.trigger, snap.records), (i as u64 + 1, upto));
        let mut c = Counters::for_membership(m);
        for l in &lines[..upto as usize] {
            c.count(l, m);
        }
        let want = ratings::top_diff_rank(&c, subsets, 7);
        assert_eq!(
            common::snapshot_rows(snap),
            common::core_rows(&want),
            "snapshot {}",
            i + 1
        );
        assert_eq!((snap.valid, snap.malformed), (c.valid, c.malformed.total()));
    }
}

#[test]
fn a_slow_shard_changes_no_snapshot() {
    // shard 0 sleeps before each batch, so its window fills and the barriers of many
    // triggers wait in its mailbox behind batches while the other shards are far ahead: every
    // snapshot must still cover exactly the first t x trigger records
    let file = golden().join("input/views_static.csv");
    let subsets = [Subset::All, Subset::Every(3)];
    let text = std::fs::read(&file).unwrap();
    let lines: Vec<&[u8]> = text
        .strip_suffix(b"\n")
        .unwrap_or(&text)
        .split(|&b| b == b'\n')
        .collect();
    let (_, m) = topology::load_membership(&golden(), &subsets).unwrap();
    let trigger = 97u64;
    let settings = viewpulse::pipeline::PipelineSettings {
        slow_shard: Some((0, std::time::Duration::from_millis(3))),
        ..common::settings(4, trigger, &subsets)
    };
    let snaps = common::collect(
        RunSource::File(file.clone()),
        m.clone(),
        &settings,
        Default::default(),
    );
    assert_eq!(snaps.len() as u64, (lines.len() as u64).div_ceil(trigger));
    assert_brute_force(&snaps, &lines, &m, &subsets, trigger);
}
