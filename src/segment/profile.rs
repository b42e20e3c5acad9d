//! Who each segment is, in the demographics' own units rather than the scaled features: size
//! and share, the mean and median of each numeric column against the population's, the share
//! of each category against the population's (its lift), the categories that most set the
//! cluster apart, and a short label generated from those. Pure: demographics and cluster
//! numbers in, profiles out; `profiles.csv` is written by [`write_csv`].

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::demographics::{Demographics, CATEGORICAL, NUMERIC};
use super::SegmentError;

/// A numeric column in one cluster against the population.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericProfile {
    /// The column.
    pub column: String,
    /// Mean in the cluster.
    #[serde(with = "super::model::nan_as_null")]
    pub mean: f64,
    /// Median in the cluster (the mean of the two middle values of an even count).
    #[serde(with = "super::model::nan_as_null")]
    pub median: f64,
    /// Mean over every clustered household.
    #[serde(with = "super::model::nan_as_null")]
    pub population_mean: f64,
    /// Median over every clustered household.
    #[serde(with = "super::model::nan_as_null")]
    pub population_median: f64,
    /// (mean − population mean) / population standard deviation (0 when it is 0).
    pub standardised: f64,
}

/// One category of a categorical column in one cluster against the population.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryProfile {
    /// The column.
    pub column: String,
    /// The category.
    pub value: String,
    /// Share of the cluster's households in it.
    pub share: f64,
    /// Share of every clustered household in it.
    pub population_share: f64,
    /// `share / population_share`.
    pub lift: f64,
}

/// One cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Cluster number.
    pub cluster: u32,
    /// Generated label, for example `large, multi-generation owners`.
    pub label: String,
    /// Households in the cluster.
    pub households: u64,
    /// Share of every clustered household.
    pub share: f64,
    /// The numeric columns, in SPEC 2's order.
    pub numeric: Vec<NumericProfile>,
    /// Every category of every categorical column, columns in SPEC 2's order, categories in
    /// the features' order (most frequent first).
    pub categories: Vec<CategoryProfile>,
    /// The categories that most set the cluster apart: the largest lifts among those held by
    /// at least [`DISTINCT_MIN_SHARE`] of the cluster and above 1, at most three.
    pub distinctive: Vec<CategoryProfile>,
}

/// Least share of the cluster a category needs to count among its distinctive ones.
pub const DISTINCT_MIN_SHARE: f64 = 0.2;

/// A numeric column is said in the label when its mean is this many population standard
/// deviations away from the population's.
pub const LABEL_MIN_STANDARDISED: f64 = 0.5;

/// Least share of the cluster, and least lift, for its tenure to be the label's noun.
pub const NOUN_MIN_SHARE: f64 = 0.6;
/// See [`NOUN_MIN_SHARE`].
pub const NOUN_MIN_LIFT: f64 = 1.2;

/// The median of `v` (reordered), as pandas computes it.
fn median(v: &mut [f64]) -> f64 {
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    let (_, &mut upper, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    if n % 2 == 1 {
        return upper;
    }
    let lower = v[..n / 2].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lower + upper) / 2.0
}

/// Profiles of clusters `0..k` of the households of `d` (`cluster[i]` for row i);
/// `orders[j]` is categorical column j's category order (the features').
pub fn profiles(
    d: &Demographics,
    cluster: &[u32],
    k: usize,
    orders: &[Vec<String>],
) -> Vec<Profile> {
    let n = cluster.len();
    let mut sizes = vec![0u64; k];
    for &c in cluster {
        sizes[c as usize] += 1;
    }
    let mut numeric: Vec<Vec<NumericProfile>> = vec![Vec::new(); k];
    for (j, name) in NUMERIC.iter().enumerate() {
        let col = &d.numeric[j];
        let mean_all = col.iter().sum::<f64>() / n.max(1) as f64;
        let var = col
            .iter()
            .map(|v| (v - mean_all) * (v - mean_all))
            .sum::<f64>()
            / n.max(1) as f64;
        let sd = var.sqrt();
        let median_all = median(&mut col.clone());
        let mut per: Vec<Vec<f64>> = sizes
            .iter()
            .map(|&s| Vec::with_capacity(s as usize))
            .collect();
        for (&v, &c) in col.iter().zip(cluster) {
            per[c as usize].push(v);
        }
        for (c, mut values) in per.into_iter().enumerate() {
            // an empty cluster has no mean (NaN, `null` in model.json) and departs from nothing
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            numeric[c].push(NumericProfile {
                column: name.to_string(),
                mean,
                median: median(&mut values),
                population_mean: mean_all,
                population_median: median_all,
                standardised: if sd > 0.0 && mean.is_finite() {
                    (mean - mean_all) / sd
                } else {
                    0.0
                },
            });
        }
    }
    let mut categories: Vec<Vec<CategoryProfile>> = vec![Vec::new(); k];
    for (j, name) in CATEGORICAL.iter().enumerate() {
        let cat = &d.categorical[j];
        let m = cat.values.len();
        let mut counts = vec![0u64; k * m];
        let mut all = vec![0u64; m];
        for (&code, &c) in cat.codes.iter().zip(cluster) {
            counts[c as usize * m + code as usize] += 1;
            all[code as usize] += 1;
        }
        // the features' order where given, else first seen
        let order: Vec<usize> = match orders.get(j) {
            Some(o) if o.len() == m => o
                .iter()
                .filter_map(|v| cat.values.iter().position(|w| w == v))
                .collect(),
            _ => (0..m).collect(),
        };
        for (c, out) in categories.iter_mut().enumerate() {
            for &code in &order {
                let share = counts[c * m + code] as f64 / sizes[c].max(1) as f64;
                let population_share = all[code] as f64 / n.max(1) as f64;
                out.push(CategoryProfile {
                    column: name.to_string(),
                    value: cat.values[code].clone(),
                    share,
                    population_share,
                    lift: if population_share > 0.0 {
                        share / population_share
                    } else {
                        0.0
                    },
                });
            }
        }
    }
    let mut out: Vec<Profile> = (0..k)
        .map(|c| {
            let mut distinctive: Vec<CategoryProfile> = categories[c]
                .iter()
                .filter(|p| p.share >= DISTINCT_MIN_SHARE && p.lift > 1.0)
                .cloned()
                .collect();
            distinctive.sort_by(|a, b| b.lift.total_cmp(&a.lift));
            distinctive.truncate(3);
            let mut p = Profile {
                cluster: c as u32,
                label: String::new(),
                households: sizes[c],
                share: sizes[c] as f64 / n.max(1) as f64,
                numeric: std::mem::take(&mut numeric[c]),
                categories: std::mem::take(&mut categories[c]),
                distinctive,
            };
            p.label = if p.households == 0 {
                "empty".to_string()
            } else {
                label(&p)
            };
            p
        })
        .collect();
    // two clusters with the same words are told apart by their numbers
    let repeated: Vec<bool> = out
        .iter()
        .map(|p| out.iter().filter(|q| q.label == p.label).count() > 1)
        .collect();
    for (p, repeated) in out.iter_mut().zip(repeated) {
        if repeated {
            p.label = format!("{} (cluster {})", p.label, p.cluster);
        }
    }
    out
}

/// The word for a numeric column's mean above (`true`) or below the population's.
fn numeric_word(column: &str, above: bool) -> &'static str {
    match (column, above) {
        ("household_size", true) => "large",
        ("household_size", false) => "small",
        ("num_adults", true) => "many-adult",
        ("num_adults", false) => "few-adult",
        ("num_generations", true) => "multi-generation",
        ("num_generations", false) => "single-generation",
        ("length_residence", true) => "long-settled",
        ("length_residence", false) => "recently moved",
        ("home_market_value", true) => "high-value-home",
        ("home_market_value", false) => "low-value-home",
        ("net_worth", true) => "wealthy",
        ("net_worth", false) => "lower-net-worth",
        ("education_highest", true) => "highly educated",
        ("education_highest", false) => "less educated",
        (_, true) => "above-average",
        (_, false) => "below-average",
    }
}

/// The noun or adjective of a category where the seed's code has a known meaning (race and
/// gender describe people, not a lifestyle: never in a generated label; other codes are
/// left to the profile's table).
fn category_word(column: &str, value: &str) -> Option<String> {
    let known = match (column, value) {
        ("home_owner_status", "O") => "owners",
        ("home_owner_status", "R") => "renters",
        ("marital_status", "M") => "married",
        ("marital_status", "S") => "single",
        ("dwelling_type", "S") => "single-family-home",
        ("dwelling_type", "M") => "multi-family-home",
        // race and gender describe people, not a lifestyle: never in a generated label
        _ => return None,
    };
    Some(known.to_string())
}

/// The label: up to two numeric words (the columns farthest from the population's mean, at
/// least [`LABEL_MIN_STANDARDISED`] away), the distinctive marital and dwelling words, then the
/// noun: `owners` or `renters` when most of the cluster has that tenure and more than everyone
/// ([`NOUN_MIN_SHARE`], [`NOUN_MIN_LIFT`]), else `households`.
pub fn label(p: &Profile) -> String {
    let mut numeric: Vec<&NumericProfile> = p
        .numeric
        .iter()
        .filter(|n| n.standardised.abs() >= LABEL_MIN_STANDARDISED)
        .collect();
    numeric.sort_by(|a, b| b.standardised.abs().total_cmp(&a.standardised.abs()));
    let mut words: Vec<String> = numeric
        .iter()
        .take(2)
        .map(|n| numeric_word(&n.column, n.standardised > 0.0).to_string())
        .collect();
    // the tenure is the noun when most of the cluster has it and more than everyone does
    let noun = p
        .categories
        .iter()
        .chain(&p.distinctive)
        .filter(|c| {
            c.column == "home_owner_status" && c.share >= NOUN_MIN_SHARE && c.lift >= NOUN_MIN_LIFT
        })
        .find_map(|c| category_word(&c.column, &c.value))
        .unwrap_or_else(|| "households".to_string());
    for d in &p.distinctive {
        let Some(word) = category_word(&d.column, &d.value) else {
            continue;
        };
        if d.column != "home_owner_status" && words.len() < 3 && !words.contains(&word) {
            words.push(word);
        }
    }
    if words.is_empty() {
        return format!("typical {noun}");
    }
    let last = words.pop().unwrap_or_default();
    if words.is_empty() {
        format!("{last} {noun}")
    } else {
        format!("{}, {last} {noun}", words.join(", "))
    }
}

/// Write `profiles.csv`, one row per cluster and statistic:
/// `cluster,label,households,share,column,value,statistic,cluster_value,population_value,ratio`
/// where a numeric column gives a `mean` and a `median` row (empty `value`; `ratio` = cluster
/// over population) and every category a `share` row (`ratio` = lift).
pub fn write_csv(path: &Path, profiles: &[Profile]) -> Result<(), SegmentError> {
    let err = |e: std::io::Error| SegmentError::Write {
        path: path.to_path_buf(),
        source: e,
    };
    let file = std::fs::File::create(path).map_err(err)?;
    let mut w = csv::Writer::from_writer(std::io::BufWriter::new(file));
    let csv_err = |e: csv::Error| SegmentError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    };
    w.write_record([
        "cluster",
        "label",
        "households",
        "share",
        "column",
        "value",
        "statistic",
        "cluster_value",
        "population_value",
        "ratio",
    ])
    .map_err(csv_err)?;
    let mut f = ryu::Buffer::new();
    let mut g = ryu::Buffer::new();
    let mut h = ryu::Buffer::new();
    let ratio = |a: f64, b: f64| if b != 0.0 { a / b } else { 0.0 };
    for p in profiles {
        let head = [
            p.cluster.to_string(),
            p.label.clone(),
            p.households.to_string(),
            f.format(p.share).to_string(),
        ];
        for n in &p.numeric {
            for (stat, a, b) in [
                ("mean", n.mean, n.population_mean),
                ("median", n.median, n.population_median),
            ] {
                w.write_record(head.iter().map(String::as_str).chain([
                    n.column.as_str(),
                    "",
                    stat,
                    f.format(a),
                    g.format(b),
                    h.format(ratio(a, b)),
                ]))
                .map_err(csv_err)?;
            }
        }
        for c in &p.categories {
            w.write_record(head.iter().map(String::as_str).chain([
                c.column.as_str(),
                c.value.as_str(),
                "share",
                f.format(c.share),
                g.format(c.population_share),
                h.format(c.lift),
            ]))
            .map_err(csv_err)?;
        }
    }
    let mut inner = w
        .into_inner()
        .map_err(|e| err(std::io::Error::other(e.to_string())))?;
    inner.flush().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_are_pandas_medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [7.0]), 7.0);
        assert!(median(&mut []).is_nan());
    }

    fn numeric(column: &str, standardised: f64) -> NumericProfile {
        NumericProfile {
            column: column.into(),
            mean: 0.0,
            median: 0.0,
            population_mean: 0.0,
            population_median: 0.0,
            standardised,
        }
    }

    fn category(column: &str, value: &str, lift: f64) -> CategoryProfile {
        CategoryProfile {
            column: column.into(),
            value: value.into(),
            share: 0.8,
            population_share: 0.8 / lift,
            lift,
        }
    }

    #[test]
    fn labels_say_the_largest_departures_and_the_tenure() {
        let mut p = Profile {
            cluster: 0,
            label: String::new(),
            households: 10,
            share: 0.1,
            numeric: vec![
                numeric("household_size", 1.4),
                numeric("num_generations", 0.9),
                numeric("net_worth", -0.7),
                numeric("length_residence", 0.2),
            ],
            categories: vec![],
            distinctive: vec![
                category("home_owner_status", "O", 1.6),
                category("race_code", "W", 1.5),
            ],
        };
        assert_eq!(label(&p), "large, multi-generation owners");
        p.distinctive = vec![
            category("marital_status", "S", 2.0),
            category("home_owner_status", "R", 1.9),
        ];
        assert_eq!(label(&p), "large, multi-generation, single renters");
        p.numeric = vec![numeric("household_size", 0.1)];
        p.distinctive = vec![category("dwelling_type", "P", 1.3)];
        assert_eq!(label(&p), "typical households");
        p.distinctive = vec![category("dwelling_type", "S", 1.3)];
        assert_eq!(label(&p), "single-family-home households");
        p.distinctive.clear();
        assert_eq!(label(&p), "typical households");
    }
}
