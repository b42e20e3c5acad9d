//! Segments held to independent tools through the real binary: `--k A..B`'s scores against
//! scikit-learn's on the same labels (to 1e-9), the k range's determinism, the profiles against
//! a pandas groupby (to 1e-12), the KMeans against scikit-learn's (no worse), and the planted
//! archetypes of `generate` recovered as the profiles describe them.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use viewpulse::generate::Truth;
use viewpulse::segment::ModelInfo;

use common::{path_str as s, viewpulse_ok as ok};

/// `segment --demographics DEM --out OUT --k K`, its stdout.
fn segment_k(dem: &Path, out: &Path, k: &str) -> String {
    ok(&[
        "segment",
        "--demographics",
        s(dem),
        "--out",
        s(out),
        "--k",
        k,
    ])
}

fn generate(dir: &Path, households: &str, seed: &str) -> std::path::PathBuf {
    ok(&[
        "generate",
        "--out",
        s(dir),
        "--households",
        households,
        "--seed",
        seed,
        "--static-records",
        "10",
        "--stream-records",
        "10",
    ]);
    dir.join("demographics.csv")
}

fn info(model: &Path) -> ModelInfo {
    serde_json::from_str(&std::fs::read_to_string(model.join("model.json")).unwrap()).unwrap()
}

#[test]
fn a_k_range_scores_like_scikit_learn_and_keeps_what_k_alone_gives() {
    let dir = tempfile::tempdir().unwrap();
    let dem = generate(&dir.path().join("data"), "1500", "31");
    let range = dir.path().join("range");
    let said = segment_k(&dem, &range, "2..5");
    let sel = info(&range).k_selection.expect("k_selection in model.json");
    assert!(
        said.contains(&format!("recommended k = {}", sel.recommended)),
        "{said}"
    );
    assert!(said.contains("highest silhouette"), "{said}");
    assert_eq!(
        sel.scores.iter().map(|r| r.k).collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    assert_eq!(sel.silhouette_sample, 1500);
    assert!(range.join("k_selection.png").is_file());
    let csv = std::fs::read_to_string(range.join("k_selection.csv")).unwrap();
    assert!(csv.starts_with("k,inertia,silhouette,calinski_harabasz,davies_bouldin,recommended\n"));
    assert_eq!(
        csv.lines().filter(|l| l.ends_with(",true")).count(),
        1,
        "{csv}"
    );
    // the recommended k has the highest silhouette of the table (the smallest k of equals)
    let top = sel
        .scores
        .iter()
        .map(|r| r.silhouette)
        .fold(f64::MIN, f64::max);
    let best = sel.scores.iter().find(|r| r.silhouette == top).unwrap();
    assert_eq!(best.k, sel.recommended);

    // each k alone, as `--k K` writes it: the range's model is the recommended k's, byte for
    // byte, and scikit-learn's scores on each k's labels are the table's
    let mut models = Vec::new();
    for k in 2..=5 {
        let m = dir.path().join(format!("k{k}"));
        segment_k(&dem, &m, &k.to_string());
        if k == sel.recommended {
            for f in ["households.csv", "features.csv", "profiles.csv"] {
                assert_eq!(
                    std::fs::read(range.join(f)).unwrap(),
                    std::fs::read(m.join(f)).unwrap(),
                    "{f} of --k 2..5 and of --k {k}"
                );
            }
        }
        models.push(format!("{k}={}", m.display()));
    }
    let mut args = vec!["scores".to_string(), range.display().to_string()];
    args.extend(models);
    let said = common::python_script("segment_check.py", &args);
    assert!(
        said.contains("4 ks agree with scikit-learn to 1e-9"),
        "{said}"
    );

    // the same range again: the same table
    let again = dir.path().join("again");
    segment_k(&dem, &again, "2..5");
    assert_eq!(
        csv,
        std::fs::read_to_string(again.join("k_selection.csv")).unwrap()
    );
}

#[test]
fn profiles_agree_with_pandas_and_the_kmeans_with_scikit_learn() {
    let dir = tempfile::tempdir().unwrap();
    let dem = generate(&dir.path().join("data"), "4000", "32");
    let m = dir.path().join("m");
    ok(&["segment", "--demographics", s(&dem), "--out", s(&m)]);
    let said = common::python_script("segment_check.py", &["profiles", s(&m), s(&dem)]);
    assert!(said.contains("agree with pandas to 1e-12"), "{said}");
    let said = common::python_script("segment_check.py", &["kmeans", s(&m)]);
    assert!(said.contains("ratio"), "{said}");
}

#[test]
fn planted_archetypes_come_back_as_their_profiles_describe_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let dem = generate(&data, "3000", "21");
    let m = dir.path().join("m");
    ok(&["segment", "--demographics", s(&dem), "--out", s(&m)]);
    let truth: Truth =
        serde_json::from_str(&std::fs::read_to_string(data.join("archetypes.json")).unwrap())
            .unwrap();
    let archetype: BTreeMap<i64, u32> = std::fs::read_to_string(data.join("households_truth.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (h, a) = l.split_once(',').unwrap();
            (h.parse().unwrap(), a.parse().unwrap())
        })
        .collect();
    let model = info(&m);
    // each cluster's majority archetype
    let mut votes = vec![BTreeMap::<u32, u64>::new(); model.k as usize];
    for line in std::fs::read_to_string(m.join("households.csv"))
        .unwrap()
        .lines()
        .skip(1)
    {
        let mut f = line.split(',');
        let h: i64 = f.next().unwrap().parse().unwrap();
        let c: usize = f.next().unwrap().parse().unwrap();
        *votes[c].entry(archetype[&h]).or_default() += 1;
    }
    let ranges = [7.0, 5.0, 2.0, 15.0, 26.0, 8.0, 6.0];
    let mut matched = std::collections::BTreeSet::new();
    for p in &model.profiles {
        let (&a, &n) = votes[p.cluster as usize]
            .iter()
            .max_by_key(|(_, &n)| n)
            .unwrap();
        let purity = n as f64 / p.households as f64;
        assert!(
            purity >= 0.6,
            "cluster {} is {purity:.2} archetype {a}",
            p.cluster
        );
        matched.insert(a);
        let t = &truth.archetypes[a as usize];
        // the categories the archetype favours are the cluster's most common ones
        for column in ["marital_status", "dwelling_type", "home_owner_status"] {
            let top = p
                .categories
                .iter()
                .filter(|c| c.column == column)
                .max_by(|x, y| x.share.total_cmp(&y.share))
                .unwrap();
            assert_eq!(
                top.value, t.modes[column],
                "cluster {} ({}) {column}: {top:?} against archetype {a} {:?}",
                p.cluster, p.label, t.modes
            );
        }
        // the numeric means sit near the archetype's centres (the noise is clamped to each
        // column's range, which pulls the means inwards)
        for (n, range) in p.numeric.iter().zip(ranges) {
            let centre = t.numeric_centres[&n.column];
            assert!(
                (n.mean - centre).abs() <= 0.12 * range,
                "cluster {} {}: mean {} against archetype {a}'s centre {centre}",
                p.cluster,
                n.column,
                n.mean
            );
        }
        // the label's first word says the column that departs most, in its direction
        let most = p
            .numeric
            .iter()
            .max_by(|x, y| x.standardised.abs().total_cmp(&y.standardised.abs()))
            .unwrap();
        if most.standardised.abs() >= viewpulse::segment::profile::LABEL_MIN_STANDARDISED {
            let centre = t.numeric_centres[&most.column];
            assert_eq!(
                most.standardised > 0.0,
                centre > most.population_mean,
                "cluster {} ({}): {} against the truth",
                p.cluster,
                p.label,
                most.column
            );
        }
    }
    assert_eq!(
        matched.len(),
        model.k as usize,
        "every archetype found once"
    );
}

#[test]
fn regression_an_empty_cluster_leaves_a_model_that_loads() {
    // three distinct households repeated, five clusters: two stay empty, their profiles have
    // no mean or median (NaN: `null` in model.json, which once made the model unloadable)
    let dir = tempfile::tempdir().unwrap();
    let dem = dir.path().join("dem.csv");
    let mut text = String::from("household_id,household_size,num_adults,num_generations,marital_status,race_code,dwelling_type,home_owner_status,length_residence,home_market_value,net_worth,gender_individual,education_highest\n");
    for i in 0..12 {
        let row = match i % 3 {
            0 => "1,1,1,M,W,S,O,1,1,1,F,1",
            1 => "4,2,2,S,B,M,R,5,9,4,M,3",
            _ => "8,6,3,B,H,P,O,15,27,9,U,7",
        };
        text.push_str(&format!("{},{row}\n", 100 + i));
    }
    std::fs::write(&dem, text).unwrap();
    let m = dir.path().join("m");
    segment_k(&dem, &m, "5");
    let loaded = viewpulse::segment::model::load(&m).expect("the model loads");
    let info = loaded.info.expect("model.json");
    let empty: Vec<_> = info.profiles.iter().filter(|p| p.households == 0).collect();
    assert_eq!(empty.len(), 2, "{:?}", info.cluster_sizes);
    assert!(
        empty
            .iter()
            .all(|p| p.label.starts_with("empty") && p.numeric[0].mean.is_nan()),
        "{empty:?}"
    );
    let json = std::fs::read_to_string(m.join("model.json")).unwrap();
    assert!(json.contains("\"mean\": null"), "NaN is written as null");
}
