//! viewpulse: TV audience analytics. Households are grouped into segments by their
//! demographics (KMeans over one-hot and max-abs-scaled features, [`segment`]); view records
//! ([`record`]) are counted per segment and station ([`counters`]) and turned into popularity,
//! general-population and diff-rank ratings ([`ratings`]), in batch (`analyze`) or on every
//! trigger of a stream. The contract is `SPEC.md` in the shared folder.

pub mod agreement;
pub mod checkpoint;
pub mod config;
pub mod counters;
pub mod dataset;
pub mod exit;
pub mod generate;
pub mod kafka_broker;
pub mod parallel;
pub mod pipeline;
pub mod progress;
pub mod ratings;
pub mod record;
pub mod replay;
pub mod report;
pub mod secret;
pub mod segment;
mod simd;
pub mod sink;
pub mod source;
pub mod topology;
pub mod uncertainty;
