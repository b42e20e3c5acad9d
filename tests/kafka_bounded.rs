//! `analyze kafka://` against Apache Kafka (the test fixture's broker): the bounded read of a topic gives the same
//! files as `analyze FILE` over the same records, on one partition and on four.

mod common;

use std::path::Path;

use viewpulse::counters::Subset;
use viewpulse::topology::{self, AnalyzeSettings};

fn settings(views: String, out: &Path, dead: Option<&Path>) -> AnalyzeSettings {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    AnalyzeSettings {
        model: golden,
        views,
        out: out.to_path_buf(),
        subsets: vec![Subset::All, Subset::Every(3), Subset::Every(17)],
        top: 7,
        threads: 2,
        dead_letter: dead.map(Path::to_path_buf),
        report: false,
        properties: Default::default(),
        formats: Default::default(),
        rank_by: Default::default(),
        min_views: 1,
        intervals: Default::default(),
    }
}

#[test]
fn bounded_topic_read_equals_the_file() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    let file = golden.join("input/views_static.csv");
    let records = common::lines(&file);
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let from_file = dir.path().join("file");
    let want = topology::analyze(&settings(file.display().to_string(), &from_file, None)).unwrap();
    for partitions in [1, 4] {
        let topic = format!("viewstatic{partitions}");
        broker.create_topic(&topic, partitions);
        broker.produce(&topic, &records, common::household_key);
        let out = dir.path().join(&topic);
        let dead = dir.path().join(format!("{topic}.dead"));
        let got = topology::analyze(&settings(broker.url(&topic), &out, Some(&dead))).unwrap();
        assert_eq!(got.ratings, want.ratings, "{partitions} partitions");
        assert_eq!(got.summary.records, records.len() as u64);
        assert_eq!(got.summary.malformed, want.summary.malformed);
        assert_eq!(
            got.summary.unknown_household,
            want.summary.unknown_household
        );
        for f in ["popularity.csv", "genpop.csv", "diff_rank.csv"] {
            assert_eq!(
                std::fs::read(out.join(f)).unwrap(),
                std::fs::read(from_file.join(f)).unwrap(),
                "{f}, {partitions} partitions"
            );
        }
        let dead_lines = std::fs::read_to_string(&dead).unwrap();
        assert_eq!(
            dead_lines.lines().count() as u64,
            want.summary.malformed + 1
        );
        assert!(
            dead_lines.lines().nth(1).unwrap().starts_with("partition "),
            "{dead_lines}"
        );
    }
}

#[test]
fn a_topic_that_does_not_exist_is_named() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let err =
        topology::analyze(&settings(broker.url("no_such_topic"), dir.path(), None)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no_such_topic"), "{msg}");
    assert_eq!(err.exit_code(), viewpulse::exit::UNAVAILABLE);
}

#[test]
fn topics_compressed_with_every_codec_by_another_client_read_like_the_file() {
    // confluent-kafka (Python, its own librdkafka) is the producer: an independent client
    // with compression.type set, as a user's producers are; zstd is the codec this build
    // once lacked (issue 15)
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    let file = golden.join("input/views_static.csv");
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let from_file = dir.path().join("file");
    let want = topology::analyze(&settings(file.display().to_string(), &from_file, None)).unwrap();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        broker.create_topic(&topic, 2);
        let said = common::interop(&[
            "produce",
            &broker.addr,
            &broker.topic(&topic),
            &file.display().to_string(),
            codec,
        ]);
        assert!(said.contains("6000 records"), "{said}");
        let out = dir.path().join(&topic);
        let got = topology::analyze(&settings(broker.url(&topic), &out, None))
            .unwrap_or_else(|e| panic!("{codec}: {e}"));
        assert_eq!(got.ratings, want.ratings, "{codec}");
        assert_eq!(got.summary.records, 6000, "{codec}");
        assert_eq!(got.summary.malformed, want.summary.malformed, "{codec}");
        for f in ["popularity.csv", "genpop.csv", "diff_rank.csv"] {
            assert_eq!(
                std::fs::read(out.join(f)).unwrap(),
                std::fs::read(from_file.join(f)).unwrap(),
                "{f}, {codec}"
            );
        }
    }
}
