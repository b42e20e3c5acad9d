//! What a person reads instead of the CSVs: PNG charts drawn with plotters ([`charts`]: the
//! seed's PCA scatter of the households coloured by cluster, households per cluster, the top
//! diff-rank stations of each cluster, the load test's curves) and a self-contained
//! `report.html` ([`html`]) holding the counts, the seed's side-by-side top-K table (all /
//! 17th's / 3rd's) per cluster and the charts inlined as base64 PNGs, with no external CSS or
//! JavaScript. Text is drawn with the DejaVu Sans font shipped in `assets/fonts`, registered
//! once with plotters' ab_glyph backend under the family `sans-serif`, so no system font
//! library is needed.

use std::path::PathBuf;

use thiserror::Error;

pub mod charts;
pub mod html;

pub use charts::*;
pub use html::*;

/// Errors drawing a chart or writing the report; each names the file being written.
#[derive(Debug, Error)]
pub enum ReportError {
    /// plotters failed to draw or save the chart.
    #[error("cannot draw {}: {message}", path.display())]
    Draw {
        /// The file being written.
        path: PathBuf,
        /// plotters' message.
        message: String,
    },
    /// Writing the file failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The embedded font could not be loaded.
    #[error("cannot draw {}: the embedded font DejaVuSans.ttf is unusable", path.display())]
    Font {
        /// The file being written.
        path: PathBuf,
    },
}

impl ReportError {
    /// The process exit code this error means.
    pub fn exit_code(&self) -> i32 {
        match self {
            ReportError::Draw { .. } | ReportError::Io { .. } => crate::exit::IO,
            ReportError::Font { .. } => crate::exit::SOFTWARE,
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers the charts' and the page's tests share.
    use std::path::Path;

    use super::charts::{PcaPoint, PNG_SIGNATURE};
    use crate::ratings::DiffRankRow;

    /// Checks the PNG signature and returns IHDR's width and height.
    pub fn png_size(p: &Path) -> (u32, u32) {
        let b = std::fs::read(p).unwrap();
        assert!(b.len() > 33, "{} is too short", p.display());
        assert_eq!(&b[..8], PNG_SIGNATURE, "{}", p.display());
        assert_eq!(&b[12..16], b"IHDR");
        let w = u32::from_be_bytes([b[16], b[17], b[18], b[19]]);
        let h = u32::from_be_bytes([b[20], b[21], b[22], b[23]]);
        (w, h)
    }

    pub fn row(subset: &str, cluster: u32, rank: u32, station: &str, d: f64) -> DiffRankRow {
        DiffRankRow {
            subset: subset.into(),
            cluster,
            rank,
            station_num: station.into(),
            diff_rank: d,
            popularity_rating: d + 1.0,
            genpop_rating: 1.0,
            index: 100.0 * (d + 1.0),
            ..DiffRankRow::default()
        }
    }

    pub fn points(n: usize, k: u32) -> Vec<PcaPoint> {
        (0..n)
            .map(|i| PcaPoint {
                x: ((i * 7919) % 1000) as f64 / 100.0 - 5.0,
                y: ((i * 104_729) % 997) as f64 / 200.0 - 2.5,
                cluster: i as u32 % k.max(1),
            })
            .collect()
    }
}
