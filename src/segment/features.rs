//! Feature vectors exactly as the seed's Spark pipeline builds them (SPEC 2): the seven numeric
//! columns scaled by their largest absolute value (Spark's MaxAbsScaler multiplies by the
//! reciprocal, and so do we, to the last bit), then one one-hot block per categorical column
//! over its categories by frequency descending, ties alphabetical (StringIndexer
//! `frequencyDesc`), the last category dropped (OneHotEncoder `dropLast`).

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::demographics::{Demographics, CATEGORICAL, NUMERIC};

/// What a fit learned: enough to turn any row into its feature vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// Largest absolute value of each numeric column, in [`NUMERIC`] order.
    pub max_abs: Vec<f64>,
    /// Categories of each categorical column, in index order (most frequent first), in
    /// [`CATEGORICAL`] order.
    pub categories: Vec<Vec<String>>,
}

impl FeatureSpec {
    /// Width of a feature vector.
    pub fn dims(&self) -> usize {
        NUMERIC.len()
            + self
                .categories
                .iter()
                .map(|c| c.len().saturating_sub(1))
                .sum::<usize>()
    }

    /// A name per dimension: the numeric column, then `column=category`.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = NUMERIC.iter().map(|s| s.to_string()).collect();
        for (col, cats) in CATEGORICAL.iter().zip(&self.categories) {
            for c in cats.iter().take(cats.len().saturating_sub(1)) {
                v.push(format!("{col}={c}"));
            }
        }
        v
    }
}

/// StringIndexer `frequencyDesc` order of one column's categories: returns, for each code of
/// the column, its index, and the categories in index order.
fn order_categories(values: &[String], codes: &[u32]) -> (Vec<u32>, Vec<String>) {
    let mut freq = vec![0u64; values.len()];
    for &c in codes {
        freq[c as usize] += 1;
    }
    let mut order: Vec<usize> = (0..values.len()).filter(|&c| freq[c] > 0).collect();
    order.sort_by(|&a, &b| {
        freq[b]
            .cmp(&freq[a])
            .then_with(|| values[a].as_bytes().cmp(values[b].as_bytes()))
    });
    let mut index = vec![u32::MAX; values.len()];
    for (i, &c) in order.iter().enumerate() {
        index[c] = i as u32;
    }
    (
        index,
        order.into_iter().map(|c| values[c].clone()).collect(),
    )
}

/// Learn the scaling and category orders from the table.
pub fn fit(d: &Demographics) -> FeatureSpec {
    let max_abs = d
        .numeric
        .iter()
        .map(|col| col.iter().fold(0.0f64, |m, v| m.max(v.abs())))
        .collect();
    let categories = d
        .categorical
        .iter()
        .map(|c| order_categories(&c.values, &c.codes).1)
        .collect();
    FeatureSpec {
        max_abs,
        categories,
    }
}

/// Feature matrix of the table under `spec` (one row per kept household, in table order).
/// Categories the spec does not know get an all-zero block (as Spark's `keep` would not; the
/// table is always the one the spec was fitted on here).
pub fn transform(d: &Demographics, spec: &FeatureSpec) -> Array2<f64> {
    let n = d.len();
    let dims = spec.dims();
    let mut x = Array2::<f64>::zeros((n, dims));
    for (j, col) in d.numeric.iter().enumerate() {
        let m = spec.max_abs[j];
        let scale = if m == 0.0 { 0.0 } else { 1.0 / m };
        for (i, v) in col.iter().enumerate() {
            x[[i, j]] = v * scale;
        }
    }
    let mut offset = NUMERIC.len();
    for (c, cats) in d.categorical.iter().zip(&spec.categories) {
        // code of this table -> index in the spec's order
        let index: Vec<Option<usize>> = c
            .values
            .iter()
            .map(|v| cats.iter().position(|k| k == v))
            .collect();
        let width = cats.len().saturating_sub(1);
        for (i, &code) in c.codes.iter().enumerate() {
            if let Some(k) = index[code as usize] {
                if k < width {
                    x[[i, offset + k]] = 1.0;
                }
            }
        }
        offset += width;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::super::demographics::read;
    use super::*;
    use std::io::Write;
    use std::path::Path;

    const HEADER: &str = "household_id,household_size,num_adults,num_generations,marital_status,race_code,dwelling_type,home_owner_status,length_residence,home_market_value,net_worth,gender_individual,education_highest\n";

    #[test]
    fn hand_computed_small_table() {
        // marital: S×2, M×2 (tie: alphabetical M before S), B×1 -> order M,S,B -> block [M,S]
        // race: W×3, B×2 -> order W,B -> block [W]
        // dwelling: all S -> one category -> block width 0
        // owner: R×3, O×2 -> R,O -> block [R]
        // gender: F,M,U,U,M -> M×2,U×2 tie -> M,U,F -> block [M,U]
        // num_generations is 0 everywhere: max-abs 0, stays 0.
        // education_highest is a string holding a number, with a negative value.
        let body = format!(
            "{HEADER}\
10,2,1,0,S,W,S,R,4,10,5,F,\"3\"\n\
20,4,2,0,M,W,S,R,0,20,-5,M,-6\n\
30,1,1,0,B,B,S,O,8,5,1,U,2\n\
40,8,4,0,M,B,S,O,2,40,2,U,1\n\
50,3,3,0,S,W,S,R,1,1,0,M,6\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::File::create(&p)
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let d = read(&p, true).unwrap();
        let spec = fit(&d);
        assert_eq!(spec.max_abs, vec![8.0, 4.0, 0.0, 8.0, 40.0, 5.0, 6.0]);
        assert_eq!(
            spec.categories,
            vec![
                vec!["M", "S", "B"],
                vec!["W", "B"],
                vec!["S"],
                vec!["R", "O"],
                vec!["M", "U", "F"],
            ]
        );
        // 7 numeric + marital 2 + race 1 + dwelling 0 + owner 1 + gender 2
        assert_eq!(spec.dims(), 13);
        let x = transform(&d, &spec);
        let row0 = [
            2.0 * (1.0 / 8.0),
            1.0 * (1.0 / 4.0),
            0.0,
            4.0 * (1.0 / 8.0),
            10.0 * (1.0 / 40.0),
            5.0 * (1.0 / 5.0),
            3.0 * (1.0 / 6.0),
            0.0, // M
            1.0, // S
            1.0, // W
            1.0, // R
            0.0, // M
            0.0, // U (F is dropped)
        ];
        assert_eq!(x.row(0).to_vec(), row0);
        let row1 = [
            0.5,
            0.5,
            0.0,
            0.0,
            20.0 * (1.0 / 40.0),
            -5.0 * (1.0 / 5.0),
            -6.0 * (1.0 / 6.0),
            1.0,
            0.0,
            1.0,
            1.0,
            1.0,
            0.0,
        ];
        assert_eq!(x.row(1).to_vec(), row1);
        // B is the dropped marital category, B race is dropped, O owner dropped
        let row2 = [
            0.125,
            0.25,
            0.0,
            1.0,
            5.0 * (1.0 / 40.0),
            0.2,
            2.0 * (1.0 / 6.0),
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            1.0,
        ];
        assert_eq!(x.row(2).to_vec(), row2);
        assert_eq!(spec.names()[7], "marital_status=M");
        assert_eq!(spec.names().len(), 13);
    }

    #[test]
    fn golden_features_match_spark() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
        let d = read(&root.join("input/demographics.parquet"), true).unwrap();
        let spec = fit(&d);
        let x = transform(&d, &spec);
        let cats: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("expected/categories.json")).unwrap(),
        )
        .unwrap();
        for (i, col) in CATEGORICAL.iter().enumerate() {
            let want: Vec<String> = cats["category_orders"][col]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            assert_eq!(spec.categories[i], want, "{col}");
        }
        assert_eq!(spec.dims(), 19);
        let text = std::fs::read_to_string(root.join("expected/features.csv")).unwrap();
        let mut rows = 0;
        for line in text.lines().skip(1) {
            let mut it = line.split(',');
            let id: i64 = it.next().unwrap().parse().unwrap();
            let want: Vec<f64> = it.map(|v| v.parse().unwrap()).collect();
            let i = d.household_id.iter().position(|&h| h == id).unwrap();
            for (j, w) in want.iter().enumerate() {
                assert!((x[[i, j]] - w).abs() <= 1e-12, "household {id} f{j}");
            }
            rows += 1;
        }
        assert_eq!(rows, 300);
    }
}
