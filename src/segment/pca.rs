//! PCA to two components for the plots, as Spark's `PCA` computes it: the principal
//! components are the top eigenvectors of the sample covariance matrix, and a vector's
//! projection is the plain product with them (Spark does not subtract the mean when it
//! transforms). Eigenvectors come from a cyclic Jacobi sweep on the small covariance matrix;
//! each is signed so that its largest-magnitude entry is positive, for stable plots.

use ndarray::{Array2, ArrayView1, ArrayView2};

/// Two principal components and the share of variance each explains.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    /// `dims × 2`, one component per column.
    pub components: Array2<f64>,
    /// Explained variance ratio of each component.
    pub explained: [f64; 2],
}

impl Pca {
    /// Project one vector.
    pub fn project(&self, v: ArrayView1<f64>) -> (f64, f64) {
        let a = v.dot(&self.components.column(0));
        let b = v.dot(&self.components.column(1));
        (a, b)
    }
}

/// Sample covariance of the columns of `x`.
pub fn covariance(x: ArrayView2<f64>) -> Array2<f64> {
    let (n, d) = x.dim();
    let mut mean = vec![0.0; d];
    for row in x.rows() {
        for (m, v) in mean.iter_mut().zip(row.iter()) {
            *m += v;
        }
    }
    for m in &mut mean {
        *m /= n.max(1) as f64;
    }
    let mut cov = Array2::<f64>::zeros((d, d));
    let mut centred = vec![0.0; d];
    for row in x.rows() {
        for j in 0..d {
            centred[j] = row[j] - mean[j];
        }
        for a in 0..d {
            let ca = centred[a];
            if ca == 0.0 {
                continue;
            }
            for b in a..d {
                cov[[a, b]] += ca * centred[b];
            }
        }
    }
    let denom = (n.max(2) - 1) as f64;
    for a in 0..d {
        for b in a..d {
            let v = cov[[a, b]] / denom;
            cov[[a, b]] = v;
            cov[[b, a]] = v;
        }
    }
    cov
}

/// Eigenvalues and eigenvectors (columns) of a symmetric matrix, by cyclic Jacobi rotations,
/// sorted by eigenvalue descending.
pub fn symmetric_eigen(m: &Array2<f64>) -> (Vec<f64>, Array2<f64>) {
    let d = m.nrows();
    let mut a = m.clone();
    let mut v = Array2::<f64>::eye(d);
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|p| (0..d).filter(move |&q| q != p).map(move |q| (p, q)))
            .map(|(p, q)| a[[p, q]] * a[[p, q]])
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[[p, q]];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[[q, q]] - a[[p, p]]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let akp = a[[k, p]];
                    let akq = a[[k, q]];
                    a[[k, p]] = c * akp - s * akq;
                    a[[k, q]] = s * akp + c * akq;
                }
                for k in 0..d {
                    let apk = a[[p, k]];
                    let aqk = a[[q, k]];
                    a[[p, k]] = c * apk - s * aqk;
                    a[[q, k]] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let vkp = v[[k, p]];
                    let vkq = v[[k, q]];
                    v[[k, p]] = c * vkp - s * vkq;
                    v[[k, q]] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&x, &y| a[[y, y]].total_cmp(&a[[x, x]]).then(x.cmp(&y)));
    let values = order.iter().map(|&i| a[[i, i]]).collect();
    let mut vecs = Array2::<f64>::zeros((d, d));
    for (j, &i) in order.iter().enumerate() {
        vecs.column_mut(j).assign(&v.column(i));
    }
    (values, vecs)
}

/// Fit a two-component PCA on `x`.
pub fn fit(x: ArrayView2<f64>) -> Pca {
    let d = x.ncols();
    let cov = covariance(x);
    let (values, vecs) = symmetric_eigen(&cov);
    let mut components = Array2::<f64>::zeros((d, 2));
    for j in 0..2.min(d) {
        let mut col = vecs.column(j).to_owned();
        let lead = col
            .iter()
            .copied()
            .fold(0.0f64, |m, v| if v.abs() > m.abs() { v } else { m });
        if lead < 0.0 {
            col.mapv_inplace(|v| -v);
        }
        components.column_mut(j).assign(&col);
    }
    let total: f64 = values.iter().filter(|v| **v > 0.0).sum();
    let share = |j: usize| {
        if total > 0.0 {
            values.get(j).copied().unwrap_or(0.0).max(0.0) / total
        } else {
            0.0
        }
    };
    Pca {
        components,
        explained: [share(0), share(1)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn eigen_of_a_known_matrix() {
        let m = array![[2.0, 1.0], [1.0, 2.0]];
        let (vals, vecs) = symmetric_eigen(&m);
        assert!((vals[0] - 3.0).abs() < 1e-12 && (vals[1] - 1.0).abs() < 1e-12);
        let r = std::f64::consts::FRAC_1_SQRT_2;
        assert!((vecs[[0, 0]].abs() - r).abs() < 1e-12);
        // A v = λ v for both
        for (j, val) in vals.iter().enumerate() {
            let v = vecs.column(j);
            let av = m.dot(&v);
            for i in 0..2 {
                assert!((av[i] - val * v[i]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn points_on_a_line_have_one_component() {
        // points along (1, 2, 0) with small noise along (0, 0, 1)
        let mut rows = Vec::new();
        for i in 0..100 {
            let t = i as f64;
            rows.extend([t, 2.0 * t, if i % 2 == 0 { 0.01 } else { -0.01 }]);
        }
        let x = Array2::from_shape_vec((100, 3), rows).unwrap();
        let p = fit(x.view());
        let c0 = p.components.column(0);
        let n = 5f64.sqrt();
        assert!((c0[0] - 1.0 / n).abs() < 1e-9 && (c0[1] - 2.0 / n).abs() < 1e-9);
        assert!(p.explained[0] > 0.999);
        // projection is the plain dot product (no centring), like Spark
        let (a, _) = p.project(x.row(10));
        assert!((a - (10.0 + 40.0) / n).abs() < 1e-6);
    }
}
