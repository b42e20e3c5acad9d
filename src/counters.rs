//! The incremental counting core shared by `analyze` and the streaming daemon: who belongs to
//! which segment ([`Membership`]), station interning ([`Stations`]) and the per-station
//! counters ([`Counters`]) that a shard, a thread or a process holds for its part of the records.
//! Counters over any split of the records merge into exactly the counters of the whole, which is
//! what lets shards count on their own and a trigger only merge. Plain data and functions: no
//! I/O, no threads, no actors.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use crate::record::{self, Malformed, MalformedCounts};

/// Errors building a [`Membership`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CountersError {
    /// A subset label that is neither `all` nor an integer ≥ 2.
    #[error("subset {0:?} is neither `all` nor an integer >= 2")]
    BadSubset(String),
    /// More subsets than a membership mask holds.
    #[error("at most {max} subsets are supported, {got} were given")]
    TooManySubsets { max: usize, got: usize },
    /// The same subset named twice.
    #[error("subset {0:?} is given twice")]
    DuplicateSubset(String),
    /// No subset at all.
    #[error("no subset given")]
    NoSubset,
    /// A cluster number outside what a mask holds.
    #[error("cluster {cluster} of household {household_id} is larger than the supported {max}")]
    ClusterTooLarge {
        household_id: i64,
        cluster: u32,
        max: u32,
    },
    /// rank 0 (ranks are 1-based).
    #[error("household {household_id} has rank 0; ranks start at 1")]
    ZeroRank { household_id: i64 },
}

/// A subset of households (SPEC 3): every clustered household, or those whose rank is a
/// multiple of `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Subset {
    /// Every clustered household.
    All,
    /// Households with `rank % n == 0`, `n >= 2`.
    Every(u32),
}

impl Subset {
    /// Parse `all` or an integer ≥ 2.
    pub fn parse(s: &str) -> Result<Subset, CountersError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("all") {
            return Ok(Subset::All);
        }
        match t.parse::<u32>() {
            Ok(n) if n >= 2 => Ok(Subset::Every(n)),
            _ => Err(CountersError::BadSubset(s.to_string())),
        }
    }

    /// Parse a comma-separated list such as `all,3,17`.
    pub fn parse_list(s: &str) -> Result<Vec<Subset>, CountersError> {
        let list: Vec<Subset> = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Subset::parse)
            .collect::<Result<_, _>>()?;
        validate_subsets(&list)?;
        Ok(list)
    }

    /// Whether a household of this rank belongs to the subset.
    #[inline]
    pub fn contains(self, rank: u32) -> bool {
        match self {
            Subset::All => true,
            Subset::Every(n) => rank % n == 0,
        }
    }

    /// The label used in files: `all`, `3`, `17`.
    pub fn label(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Subset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subset::All => f.write_str("all"),
            Subset::Every(n) => write!(f, "{n}"),
        }
    }
}

/// Maximum number of subsets (bits of the membership mask).
pub const MAX_SUBSETS: usize = 16;
/// Maximum cluster number + 1 (the upper half of the packed membership).
pub const MAX_CLUSTERS: u32 = 1 << 16;

fn validate_subsets(list: &[Subset]) -> Result<(), CountersError> {
    if list.is_empty() {
        return Err(CountersError::NoSubset);
    }
    if list.len() > MAX_SUBSETS {
        return Err(CountersError::TooManySubsets {
            max: MAX_SUBSETS,
            got: list.len(),
        });
    }
    for (i, s) in list.iter().enumerate() {
        if list[..i].contains(s) {
            return Err(CountersError::DuplicateSubset(s.label()));
        }
    }
    Ok(())
}

/// A fast, stable (unseeded) hasher for integer keys: one multiply and a fold, the same on
/// every run and machine. Used for the household and station tables on the hot path.
#[derive(Default, Clone, Copy)]
pub struct StableHasher(u64);

impl Hasher for StableHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        let m = (self.0 ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = m ^ (m >> 29);
    }
    #[inline]
    fn write_i64(&mut self, v: i64) {
        self.write_u64(v as u64)
    }
}

/// `BuildHasher` for [`StableHasher`].
pub type StableBuild = BuildHasherDefault<StableHasher>;

/// A stable 64-bit hash of a household id, for routing records to shards: the same on every
/// run, machine and process (SplitMix64's finaliser).
#[inline]
pub fn household_hash(household_id: i64) -> u64 {
    let mut z = (household_id as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Which cluster each clustered household is in and which subsets it belongs to: the part of
/// the model the counters need, packed in 4 bytes a household (cluster in the high half,
/// subset mask in the low half).
#[derive(Debug, Clone)]
pub struct Membership {
    subsets: Vec<Subset>,
    clusters: u32,
    table: HashMap<i64, u32, StableBuild>,
}

impl Membership {
    /// Build from `(household_id, cluster, rank)` triples. A repeated household keeps its
    /// first entry.
    pub fn new(
        subsets: Vec<Subset>,
        households: impl IntoIterator<Item = (i64, u32, u32)>,
    ) -> Result<Membership, CountersError> {
        validate_subsets(&subsets)?;
        let iter = households.into_iter();
        let mut table =
            HashMap::with_capacity_and_hasher(iter.size_hint().0, StableBuild::default());
        let mut clusters = 0u32;
        for (id, cluster, rank) in iter {
            if cluster >= MAX_CLUSTERS {
                return Err(CountersError::ClusterTooLarge {
                    household_id: id,
                    cluster,
                    max: MAX_CLUSTERS - 1,
                });
            }
            if rank == 0 {
                return Err(CountersError::ZeroRank { household_id: id });
            }
            let mut mask = 0u32;
            for (i, s) in subsets.iter().enumerate() {
                if s.contains(rank) {
                    mask |= 1 << i;
                }
            }
            table.entry(id).or_insert((cluster << 16) | mask);
            clusters = clusters.max(cluster + 1);
        }
        Ok(Membership {
            subsets,
            clusters,
            table,
        })
    }

    /// The configured subsets, in order.
    pub fn subsets(&self) -> &[Subset] {
        &self.subsets
    }

    /// Number of clusters (largest cluster number + 1).
    pub fn clusters(&self) -> u32 {
        self.clusters
    }

    /// Number of clustered households.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no household is known.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// `(cluster, subset mask)` of a household, `None` for a household without demographics.
    #[inline]
    pub fn lookup(&self, household_id: i64) -> Option<(u32, u32)> {
        self.table
            .get(&household_id)
            .map(|&p| (p >> 16, p & 0xFFFF))
    }
}

/// Interns station numbers to dense ids. Station numbers of up to 7 bytes (all real ones) are
/// packed into a `u64` key with their length, so `04321` and `4321` stay different.
#[derive(Debug, Clone, Default)]
pub struct Stations {
    names: Vec<Box<str>>,
    small: HashMap<u64, u32, StableBuild>,
    large: HashMap<Box<[u8]>, u32, StableBuild>,
}

#[inline]
fn pack_small(s: &[u8]) -> Option<u64> {
    if s.len() > 7 {
        return None;
    }
    let mut buf = [0u8; 8];
    buf[..s.len()].copy_from_slice(s);
    buf[7] = s.len() as u8;
    Some(u64::from_le_bytes(buf))
}

impl Stations {
    /// The id of `station`, interning it if new. `station` must be ASCII (as every valid record is).
    #[inline]
    pub fn intern(&mut self, station: &[u8]) -> u32 {
        let next = self.names.len() as u32;
        let (id, new) = match pack_small(station) {
            Some(key) => match self.small.get(&key) {
                Some(&id) => (id, false),
                None => {
                    self.small.insert(key, next);
                    (next, true)
                }
            },
            None => match self.large.get(station) {
                Some(&id) => (id, false),
                None => {
                    self.large.insert(station.into(), next);
                    (next, true)
                }
            },
        };
        if new {
            self.names.push(
                String::from_utf8_lossy(station)
                    .into_owned()
                    .into_boxed_str(),
            );
        }
        id
    }

    /// The id of `station` if it has been seen.
    pub fn get(&self, station: &[u8]) -> Option<u32> {
        match pack_small(station) {
            Some(key) => self.small.get(&key).copied(),
            None => self.large.get(station).copied(),
        }
    }

    /// The station number of an id.
    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    /// Number of distinct stations seen.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no station has been seen.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every station number, in id order.
    pub fn names(&self) -> &[Box<str>] {
        &self.names
    }
}

/// What happened to one record offered to [`Counters::count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Valid, from a clustered household.
    Clustered,
    /// Valid, from a household without demographics (general population only).
    Unknown,
    /// Malformed, of this kind.
    Malformed(Malformed),
}

/// Station counters for one part of the records. For each station one row of
/// `1 + subsets × clusters` cells: the general-population count, then `views(c, s)` per subset
/// per cluster. Rows sit next to each other so a record touches one cache line or two.
#[derive(Debug, Clone)]
pub struct Counters {
    n_subsets: usize,
    clusters: usize,
    width: usize,
    stations: Stations,
    cells: Vec<u64>,
    /// Records offered (valid + malformed).
    pub records: u64,
    /// Valid records (SPEC 1.2), the `|V|` of the general population.
    pub valid: u64,
    /// Valid records whose household has no demographics.
    pub unknown_household: u64,
    /// Malformed records by kind.
    pub malformed: MalformedCounts,
}

impl Counters {
    /// Empty counters for `n_subsets` subsets and `clusters` clusters.
    pub fn new(n_subsets: usize, clusters: usize) -> Counters {
        Counters {
            n_subsets,
            clusters,
            width: 1 + n_subsets * clusters,
            stations: Stations::default(),
            cells: Vec::new(),
            records: 0,
            valid: 0,
            unknown_household: 0,
            malformed: MalformedCounts::default(),
        }
    }

    /// Empty counters shaped for a membership.
    pub fn for_membership(m: &Membership) -> Counters {
        Counters::new(m.subsets().len(), m.clusters() as usize)
    }

    /// Parse and count one raw record.
    #[inline]
    pub fn count(&mut self, raw: &[u8], membership: &Membership) -> Counted {
        self.records += 1;
        match record::parse(raw) {
            Ok(view) => self.add_valid(view.station_num, membership.lookup(view.household_id)),
            Err(kind) => {
                self.malformed.add(kind);
                Counted::Malformed(kind)
            }
        }
    }

    /// Count one valid record of `station` from a household with `(cluster, mask)`, or from a
    /// household without demographics (`None`). Does not touch `records`.
    #[inline]
    pub fn add_valid(&mut self, station: &[u8], member: Option<(u32, u32)>) -> Counted {
        self.valid += 1;
        let sid = self.stations.intern(station) as usize;
        let row = sid * self.width;
        if row == self.cells.len() {
            self.cells.resize(row + self.width, 0);
        }
        self.cells[row] += 1;
        match member {
            Some((cluster, mut mask)) => {
                let c = cluster as usize;
                debug_assert!(c < self.clusters);
                while mask != 0 {
                    let i = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    self.cells[row + 1 + i * self.clusters + c] += 1;
                }
                Counted::Clustered
            }
            None => {
                self.unknown_household += 1;
                Counted::Unknown
            }
        }
    }

    /// Count one malformed record (for callers that parse themselves).
    pub fn add_malformed(&mut self, kind: Malformed) {
        self.records += 1;
        self.malformed.add(kind);
    }

    /// Add `other` (counters over other records, same shape) into `self`.
    pub fn merge(&mut self, other: &Counters) {
        assert_eq!(
            (self.n_subsets, self.clusters),
            (other.n_subsets, other.clusters),
            "merging counters of different shapes"
        );
        for (oid, name) in other.stations.names().iter().enumerate() {
            let sid = self.stations.intern(name.as_bytes()) as usize;
            let row = sid * self.width;
            if row == self.cells.len() {
                self.cells.resize(row + self.width, 0);
            }
            let orow = oid * other.width;
            for j in 0..self.width {
                self.cells[row + j] += other.cells[orow + j];
            }
        }
        self.records += other.records;
        self.valid += other.valid;
        self.unknown_household += other.unknown_household;
        self.malformed.merge(&other.malformed);
    }

    /// Number of subsets counted.
    pub fn n_subsets(&self) -> usize {
        self.n_subsets
    }

    /// Number of clusters counted.
    pub fn clusters(&self) -> usize {
        self.clusters
    }

    /// The interned stations.
    pub fn stations(&self) -> &Stations {
        &self.stations
    }

    /// General-population count of station id `sid`.
    #[inline]
    pub fn genpop(&self, sid: usize) -> u64 {
        self.cells[sid * self.width]
    }

    /// `views(c, s)` for subset index `subset`, cluster `c`, station id `sid`.
    #[inline]
    pub fn views(&self, subset: usize, cluster: usize, sid: usize) -> u64 {
        self.cells[sid * self.width + 1 + subset * self.clusters + cluster]
    }

    /// Approximate heap bytes held (for metrics and memory budgets).
    pub fn heap_bytes(&self) -> usize {
        self.cells.capacity() * 8 + self.stations.len() * 48
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership() -> Membership {
        // household, cluster, rank
        Membership::new(
            vec![Subset::All, Subset::Every(2)],
            vec![
                (10, 0, 1),
                (11, 0, 2),
                (20, 1, 1),
                (21, 1, 2),
                (22, 1, 3),
                (22, 0, 9),
            ],
        )
        .unwrap()
    }

    #[test]
    fn subsets_parse() {
        assert_eq!(
            Subset::parse_list("all,3,17").unwrap(),
            vec![Subset::All, Subset::Every(3), Subset::Every(17)]
        );
        assert_eq!(
            Subset::parse_list("1"),
            Err(CountersError::BadSubset("1".into()))
        );
        assert_eq!(
            Subset::parse_list("x"),
            Err(CountersError::BadSubset("x".into()))
        );
        assert_eq!(
            Subset::parse_list("3,3"),
            Err(CountersError::DuplicateSubset("3".into()))
        );
        assert_eq!(Subset::parse_list(""), Err(CountersError::NoSubset));
        assert!(Subset::Every(3).contains(6) && !Subset::Every(3).contains(7));
    }

    #[test]
    fn membership_masks_and_first_row_wins() {
        let m = membership();
        assert_eq!(m.clusters(), 2);
        assert_eq!(m.lookup(10), Some((0, 0b01)));
        assert_eq!(m.lookup(11), Some((0, 0b11)));
        assert_eq!(m.lookup(22), Some((1, 0b01)));
        assert_eq!(m.lookup(99), None);
    }

    #[test]
    fn hand_counted() {
        let m = membership();
        let mut c = Counters::for_membership(&m);
        for line in [
            "d,x,t,100,p,11",
            "d,x,t,100,p,10",
            "d,x,t,0100,p,21",
            "d,x,t,100,p,99",
            "garbage",
            "d,x,t,100,p,21",
        ] {
            c.count(line.as_bytes(), &m);
        }
        assert_eq!((c.records, c.valid, c.unknown_household), (6, 5, 1));
        assert_eq!(c.malformed.total(), 1);
        let s100 = c.stations().get(b"100").unwrap() as usize;
        let s0100 = c.stations().get(b"0100").unwrap() as usize;
        assert_eq!(c.genpop(s100), 4);
        assert_eq!(c.genpop(s0100), 1);
        assert_eq!(c.views(0, 0, s100), 2); // all, cluster 0: hh 10, 11
        assert_eq!(c.views(1, 0, s100), 1); // every 2nd, cluster 0: hh 11
        assert_eq!(c.views(0, 1, s100), 1); // hh 21
        assert_eq!(c.views(1, 1, s0100), 1); // hh 21, rank 2
    }

    #[test]
    fn long_station_names_intern() {
        let mut s = Stations::default();
        let a = s.intern(b"12345678");
        let b = s.intern(b"1234567");
        let c = s.intern(b"12345678");
        assert_eq!(a, c);
        assert_ne!(a, b);
        assert_eq!(s.name(a), "12345678");
    }

    #[test]
    fn stable_hash_is_fixed() {
        // Routing must never change between builds or runs.
        assert_eq!(household_hash(0), 0xE220_A839_7B1D_CDAF);
        assert_ne!(household_hash(1), household_hash(2));
    }
}
