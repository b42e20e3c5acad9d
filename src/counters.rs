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

/// Errors building a [`Membership`] or restoring [`Counters`].
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
    /// Stored counters that do not fit (a checkpoint of another shape, or damaged).
    #[error("stored counters do not fit: {0}")]
    State(String),
}

impl CountersError {
    /// The process exit code this error means: a bad subset is a setting, a model the
    /// counters cannot hold is data.
    pub fn exit_code(&self) -> i32 {
        match self {
            CountersError::BadSubset(_)
            | CountersError::TooManySubsets { .. }
            | CountersError::DuplicateSubset(_)
            | CountersError::NoSubset => crate::exit::USAGE,
            CountersError::ClusterTooLarge { .. }
            | CountersError::ZeroRank { .. }
            | CountersError::State(_) => crate::exit::DATA,
        }
    }
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

/// Records per prefetch batch in [`Counters::count_batch`].
pub const BATCH: usize = 32;

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

/// The one routing function: the shard (or partition) among `n` of a raw record, by the
/// stable hash of its household id (the last field). The daemon's router sends a record to
/// this shard and `replay --partitions` produces it to this partition, so a household always
/// lands in the same place. Records without a readable id go to 0 (they are malformed, and a
/// shard counts them as such).
#[inline]
pub fn route(record: &[u8], n: usize) -> usize {
    let record = record.strip_suffix(b"\r").unwrap_or(record);
    let tail = match memchr::memrchr(b',', record) {
        Some(p) => &record[p + 1..],
        None => return 0,
    };
    match std::str::from_utf8(tail)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        Some(id) => (household_hash(id) % n.max(1) as u64) as usize,
        None => 0,
    }
}

/// One slot of the membership table: 16 bytes, so a slot never straddles a cache line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(16))]
struct Slot {
    key: i64,
    packed: u32,
    used: u32,
}

/// Which cluster each clustered household is in and which subsets it belongs to: the part of
/// the model the counters need, packed in 4 bytes a household (cluster in the high half,
/// subset mask in the low half). An open-addressing table (linear probing, at most half full)
/// indexed by the top bits of [`household_hash`], so that lookups can be prefetched in
/// batches ([`Counters::count_batch`]) and a shard that owns the households of one routing
/// residue (the low bits) still spreads over the whole table.
#[derive(Debug, Clone)]
pub struct Membership {
    subsets: Vec<Subset>,
    clusters: u32,
    slots: Vec<Slot>,
    shift: u32,
    len: usize,
    groups: usize,
}

impl Membership {
    /// Build from `(household_id, cluster, rank)` triples. A repeated household keeps its
    /// first entry.
    pub fn new(
        subsets: Vec<Subset>,
        households: impl IntoIterator<Item = (i64, u32, u32)>,
    ) -> Result<Membership, CountersError> {
        validate_subsets(&subsets)?;
        let rows: Vec<(i64, u32, u32)> = households.into_iter().collect();
        let capacity = (rows.len() * 2).next_power_of_two().max(16);
        let mut m = Membership {
            subsets,
            clusters: 0,
            slots: vec![Slot::default(); capacity],
            shift: 64 - capacity.trailing_zeros(),
            len: 0,
            groups: 0,
        };
        for (id, cluster, rank) in rows {
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
            for (i, s) in m.subsets.iter().enumerate() {
                if s.contains(rank) {
                    mask |= 1 << i;
                }
            }
            let mut i = m.home(id);
            loop {
                let slot = &mut m.slots[i];
                if slot.used == 0 {
                    *slot = Slot {
                        key: id,
                        packed: (cluster << 16) | mask,
                        used: 1,
                    };
                    m.len += 1;
                    m.clusters = m.clusters.max(cluster + 1);
                    break;
                }
                if slot.key == id {
                    break; // first row wins
                }
                i = (i + 1) & (m.slots.len() - 1);
            }
        }
        Ok(m)
    }

    #[inline]
    fn home(&self, household_id: i64) -> usize {
        (household_hash(household_id) >> self.shift) as usize
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
        self.len
    }

    /// Whether no household is known.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `(cluster, subset mask)` of a household, `None` for a household without demographics.
    #[inline]
    pub fn lookup(&self, household_id: i64) -> Option<(u32, u32)> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(household_id);
        loop {
            let slot = &self.slots[i];
            if slot.used == 0 {
                return None;
            }
            if slot.key == household_id {
                return Some((slot.packed >> 16, slot.packed & 0xFFFF));
            }
            i = (i + 1) & mask;
        }
    }

    /// Ask the CPU to start loading a household's slot, so that a later [`lookup`] of it
    /// does not wait on memory. Only a hint: it changes no result.
    ///
    /// [`lookup`]: Membership::lookup
    #[inline]
    pub fn prefetch(&self, household_id: i64) {
        let slot: *const Slot = &self.slots[self.home(household_id)];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint that never faults, and `slot` points into `self.slots`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(slot.cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// Bytes held by the table.
    pub fn heap_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }

    /// Count views per household group too ([`household_group`]): the counters made for this
    /// membership keep, beside every cell, its count in each of `groups` hashed groups of
    /// households, which is what the intervals of `uncertainty` resample. 0 (the default)
    /// keeps none.
    pub fn with_groups(mut self, groups: usize) -> Membership {
        self.groups = groups;
        self
    }

    /// The number of household groups counted (0: none).
    pub fn groups(&self) -> usize {
        self.groups
    }
}

/// The group among `groups` of a household: the high half of its [`household_hash`] modulo
/// `groups`, so that a household's views always land in one group (a household is the
/// resampled unit: its views are not independent) and the groups are unrelated to the
/// shards (which take the hash modulo their number).
#[inline]
pub fn household_group(household_id: i64, groups: usize) -> usize {
    ((household_hash(household_id) >> 32) % groups.max(1) as u64) as usize
}

/// Interns station numbers to dense ids. Station numbers of up to 7 bytes (all real ones) are
/// packed into a `u64` key with their length, so `04321` and `4321` stay different.
#[derive(Debug, Clone, Default)]
pub struct Stations {
    names: Vec<Box<str>>,
    small: PackedTable,
    large: HashMap<Box<[u8]>, u32, StableBuild>,
}

/// Open-addressing table from a non-zero packed station key to its id (linear probing, at
/// most half full): one multiply and usually one probe in a table that stays in cache.
#[derive(Debug, Clone)]
struct PackedTable {
    slots: Vec<(u64, u32)>,
    shift: u32,
    len: usize,
}

impl Default for PackedTable {
    fn default() -> Self {
        PackedTable {
            slots: vec![(0, 0); 64],
            shift: 64 - 6,
            len: 0,
        }
    }
}

impl PackedTable {
    #[inline]
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    fn get(&self, key: u64) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let (k, v) = self.slots[i];
            if k == key {
                return Some(v);
            }
            if k == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Insert a key known to be absent.
    fn insert(&mut self, key: u64, id: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            let old = std::mem::take(&mut self.slots);
            self.slots = vec![(0, 0); old.len() * 2];
            self.shift -= 1;
            for (k, v) in old {
                if k != 0 {
                    self.place(k, v);
                }
            }
        }
        self.place(key, id);
        self.len += 1;
    }

    fn place(&mut self, key: u64, id: u32) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        while self.slots[i].0 != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = (key, id);
    }
}

#[inline]
fn pack_small(s: &[u8]) -> Option<u64> {
    if s.len() > 7 || s.is_empty() {
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
            Some(key) => match self.small.get(key) {
                Some(id) => (id, false),
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
            Some(key) => self.small.get(key),
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
    /// Household groups counted (0: none).
    groups: usize,
    /// With groups: per station, per group, a row of `width` cells like `cells`' rows. u32: a
    /// cell wraps only after about 550·10⁹ views of one station by one (subset, cluster), 128
    /// groups of 4.29·10⁹ (a top station of a 10 M-household panel gets some 50 M views a day:
    /// decades of a daemon's cumulative counts); the restore check would then refuse the state.
    group_cells: Vec<u32>,
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
            groups: 0,
            group_cells: Vec::new(),
            records: 0,
            valid: 0,
            unknown_household: 0,
            malformed: MalformedCounts::default(),
        }
    }

    /// Empty counters shaped for a membership (with its household groups).
    pub fn for_membership(m: &Membership) -> Counters {
        Counters::new(m.subsets().len(), m.clusters() as usize).with_groups(m.groups())
    }

    /// The same counters, empty, also counting per household group (see
    /// [`Membership::with_groups`]).
    pub fn with_groups(mut self, groups: usize) -> Counters {
        self.groups = groups;
        self.group_cells = Vec::new();
        self
    }

    /// Parse and count one raw record.
    #[inline]
    pub fn count(&mut self, raw: &[u8], membership: &Membership) -> Counted {
        self.records += 1;
        match record::parse(raw) {
            Ok(view) => self.add_view(
                view.station_num,
                view.household_id,
                membership.lookup(view.household_id),
            ),
            Err(kind) => {
                self.malformed.add(kind);
                Counted::Malformed(kind)
            }
        }
    }

    /// Parse and count a batch of raw records (up to [`BATCH`] at a time is best), looking the
    /// households up only after every slot of the batch has been prefetched, so the table's
    /// cache misses overlap instead of queueing. Calls `malformed(i, kind)` for record `i` of
    /// the batch when it is malformed. Same result as [`Counters::count`] on each record.
    pub fn count_batch(
        &mut self,
        records: &[&[u8]],
        membership: &Membership,
        mut malformed: impl FnMut(usize, Malformed),
    ) {
        for chunk_start in (0..records.len()).step_by(BATCH) {
            let chunk = &records[chunk_start..records.len().min(chunk_start + BATCH)];
            let mut parsed: [(&[u8], i64, bool); BATCH] = [(&[], 0, false); BATCH];
            for (i, raw) in chunk.iter().enumerate() {
                match record::parse(raw) {
                    Ok(v) => {
                        membership.prefetch(v.household_id);
                        parsed[i] = (v.station_num, v.household_id, true);
                    }
                    Err(kind) => {
                        self.malformed.add(kind);
                        malformed(chunk_start + i, kind);
                    }
                }
            }
            self.records += chunk.len() as u64;
            for &(station, id, ok) in &parsed[..chunk.len()] {
                if ok {
                    self.add_view(station, id, membership.lookup(id));
                }
            }
        }
    }

    /// Count one valid record of `station` from a household with `(cluster, mask)`, or from a
    /// household without demographics (`None`), as household 0 for the groups. Does not
    /// touch `records`.
    #[inline]
    pub fn add_valid(&mut self, station: &[u8], member: Option<(u32, u32)>) -> Counted {
        self.add_view(station, 0, member)
    }

    /// [`Counters::add_valid`] for household `household_id`, whose group
    /// ([`household_group`]) is counted too when the counters keep groups.
    #[inline]
    pub fn add_view(
        &mut self,
        station: &[u8],
        household_id: i64,
        member: Option<(u32, u32)>,
    ) -> Counted {
        self.valid += 1;
        let sid = self.stations.intern(station) as usize;
        let row = sid * self.width;
        if row == self.cells.len() {
            self.cells.resize(row + self.width, 0);
            if self.groups > 0 {
                self.group_cells
                    .resize((sid + 1) * self.width * self.groups, 0);
            }
        }
        self.cells[row] += 1;
        let grow = if self.groups > 0 {
            let g = household_group(household_id, self.groups);
            let grow = (sid * self.groups + g) * self.width;
            self.group_cells[grow] += 1;
            Some(grow)
        } else {
            None
        };
        match member {
            Some((cluster, mut mask)) => {
                let c = cluster as usize;
                debug_assert!(c < self.clusters);
                while mask != 0 {
                    let i = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    let j = 1 + i * self.clusters + c;
                    self.cells[row + j] += 1;
                    if let Some(grow) = grow {
                        self.group_cells[grow + j] += 1;
                    }
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
            (self.n_subsets, self.clusters, self.groups),
            (other.n_subsets, other.clusters, other.groups),
            "merging counters of different shapes"
        );
        let span = self.width * self.groups;
        for (oid, name) in other.stations.names().iter().enumerate() {
            let sid = self.stations.intern(name.as_bytes()) as usize;
            let row = sid * self.width;
            if row == self.cells.len() {
                self.cells.resize(row + self.width, 0);
                self.group_cells.resize((sid + 1) * span, 0);
            }
            let orow = oid * other.width;
            for j in 0..self.width {
                self.cells[row + j] += other.cells[orow + j];
            }
            let (mine, theirs) = (
                &mut self.group_cells[sid * span..(sid + 1) * span],
                &other.group_cells[oid * span..(oid + 1) * span],
            );
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
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

    /// Household groups counted (0: none).
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// `views(c, s)` of household group `g` (0 without groups).
    #[inline]
    pub fn group_views(&self, subset: usize, cluster: usize, sid: usize, g: usize) -> u32 {
        if self.groups == 0 {
            return 0;
        }
        self.group_cells
            [(sid * self.groups + g) * self.width + 1 + subset * self.clusters + cluster]
    }

    /// The general-population count of station `sid` in household group `g` (0 without
    /// groups).
    #[inline]
    pub fn group_genpop(&self, sid: usize, g: usize) -> u32 {
        if self.groups == 0 {
            return 0;
        }
        self.group_cells[(sid * self.groups + g) * self.width]
    }

    /// Approximate heap bytes held (for metrics and memory budgets).
    pub fn heap_bytes(&self) -> usize {
        self.cells.capacity() * 8 + self.group_cells.capacity() * 4 + self.stations.len() * 48
    }

    /// The counters in a portable form (for checkpoints and moving a partition's state).
    pub fn to_state(&self) -> CountersState {
        CountersState {
            n_subsets: self.n_subsets as u32,
            clusters: self.clusters as u32,
            stations: self
                .stations
                .names()
                .iter()
                .map(|n| n.to_string())
                .collect(),
            cells: self.cells.clone(),
            records: self.records,
            valid: self.valid,
            unknown_household: self.unknown_household,
            malformed: self.malformed.0.to_vec(),
            groups: self.groups as u32,
            group_cells: self.group_cells.clone(),
        }
    }

    /// Counters from their portable form, checked for shape: `n_subsets`, `clusters` and
    /// the household `groups` must be these, every station distinct, one row of cells per
    /// station (and per group), the groups summing to the cells, and the totals consistent
    /// (`valid + malformed = records`).
    pub fn from_state(
        s: &CountersState,
        n_subsets: usize,
        clusters: usize,
        groups: usize,
    ) -> Result<Counters, CountersError> {
        let bad = |why: String| Err(CountersError::State(why));
        if (s.n_subsets as usize, s.clusters as usize) != (n_subsets, clusters) {
            return bad(format!(
                "counters for {} subsets x {} clusters, expected {n_subsets} x {clusters}",
                s.n_subsets, s.clusters
            ));
        }
        if s.groups as usize != groups {
            let what = |g: usize| match g {
                0 => "without household groups (pipeline.bootstrap = 0)".to_string(),
                g => format!("with {g} household groups (pipeline.bootstrap above 0)"),
            };
            return bad(format!(
                "the state was counted {}, this run counts {}: start with --reset-state, or run with the pipeline.bootstrap the state was made with",
                what(s.groups as usize),
                what(groups)
            ));
        }
        let mut c = Counters::new(n_subsets, clusters).with_groups(groups);
        if s.group_cells.len() != s.stations.len() * c.width * groups {
            return bad(format!(
                "{} group cells for {} stations of width {} in {groups} groups",
                s.group_cells.len(),
                s.stations.len(),
                c.width
            ));
        }
        if s.cells.len() != s.stations.len() * c.width {
            return bad(format!(
                "{} cells for {} stations of width {}",
                s.cells.len(),
                s.stations.len(),
                c.width
            ));
        }
        if groups > 0 {
            for (i, row) in s.cells.chunks(c.width).enumerate() {
                let span = &s.group_cells[i * c.width * groups..(i + 1) * c.width * groups];
                for (j, &cell) in row.iter().enumerate() {
                    let sum: u64 = span.chunks(c.width).map(|g| g[j] as u64).sum();
                    if sum != cell {
                        return bad(format!(
                            "the groups of station {:?} sum to {sum}, its cell holds {cell}",
                            s.stations.get(i).map_or("?", |x| x.as_str())
                        ));
                    }
                }
            }
        }
        for (i, name) in s.stations.iter().enumerate() {
            if c.stations.intern(name.as_bytes()) as usize != i {
                return bad(format!("station {name:?} appears twice"));
            }
        }
        let mut malformed = MalformedCounts::default();
        if s.malformed.len() != malformed.0.len() {
            return bad(format!("{} malformed kinds", s.malformed.len()));
        }
        malformed.0.copy_from_slice(&s.malformed);
        if s.valid.checked_add(malformed.total()) != Some(s.records) {
            return bad(format!(
                "valid {} + malformed {} is not records {}",
                s.valid,
                malformed.total(),
                s.records
            ));
        }
        c.cells = s.cells.clone();
        c.group_cells = s.group_cells.clone();
        c.records = s.records;
        c.valid = s.valid;
        c.unknown_household = s.unknown_household;
        c.malformed = malformed;
        Ok(c)
    }
}

/// [`Counters`] in a portable form: station names in id order and the cells row by row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersState {
    /// Subsets counted.
    pub n_subsets: u32,
    /// Clusters counted.
    pub clusters: u32,
    /// Station numbers, by id.
    pub stations: Vec<String>,
    /// `1 + n_subsets × clusters` cells per station, in station order.
    pub cells: Vec<u64>,
    /// Records offered.
    pub records: u64,
    /// Valid records.
    pub valid: u64,
    /// Valid records without demographics.
    pub unknown_household: u64,
    /// Malformed records by kind, in [`MalformedCounts`] order.
    pub malformed: Vec<u64>,
    /// Household groups counted (0: none; checkpoint format 2 on).
    pub groups: u32,
    /// Per station, per group, a row of cells like `cells`' rows (empty without groups).
    pub group_cells: Vec<u32>,
}

impl CountersState {
    /// The state of checkpoint format 1, which had no household groups.
    pub fn from_v1(v: CountersStateV1) -> CountersState {
        CountersState {
            n_subsets: v.n_subsets,
            clusters: v.clusters,
            stations: v.stations,
            cells: v.cells,
            records: v.records,
            valid: v.valid,
            unknown_household: v.unknown_household,
            malformed: v.malformed,
            groups: 0,
            group_cells: Vec::new(),
        }
    }
}

/// [`CountersState`] as checkpoint format 1 stored it (read, never written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersStateV1 {
    /// Subsets counted.
    pub n_subsets: u32,
    /// Clusters counted.
    pub clusters: u32,
    /// Station numbers, by id.
    pub stations: Vec<String>,
    /// Cells, in station order.
    pub cells: Vec<u64>,
    /// Records offered.
    pub records: u64,
    /// Valid records.
    pub valid: u64,
    /// Valid records without demographics.
    pub unknown_household: u64,
    /// Malformed records by kind.
    pub malformed: Vec<u64>,
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
    fn batches_count_like_single_records() {
        let m = membership();
        let lines: Vec<String> = (0..200)
            .map(|i| match i % 7 {
                3 => "bad".to_string(),
                5 => String::new(),
                _ => format!(
                    "d,x,t,{},p,{}",
                    100 + i % 5,
                    [10, 11, 20, 21, 22, 99][i % 6]
                ),
            })
            .collect();
        let raw: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        let mut one = Counters::for_membership(&m);
        for r in &raw {
            one.count(r, &m);
        }
        let mut batch = Counters::for_membership(&m);
        let mut bad = Vec::new();
        batch.count_batch(&raw, &m, |i, k| bad.push((i, k)));
        assert_eq!(
            (batch.records, batch.valid, batch.unknown_household),
            (one.records, one.valid, one.unknown_household)
        );
        assert_eq!(batch.malformed, one.malformed);
        let want: Vec<usize> = (0..200).filter(|i| i % 7 == 3 || i % 7 == 5).collect();
        assert_eq!(bad.iter().map(|b| b.0).collect::<Vec<_>>(), want);
        let subsets = [Subset::All, Subset::Every(2)];
        assert_eq!(
            crate::ratings::compute(&batch, &subsets, 9),
            crate::ratings::compute(&one, &subsets, 9)
        );
    }

    #[test]
    fn membership_spreads_one_routing_residue() {
        // households of one shard (hash % 8 == 3) must still find their slots
        let ids: Vec<i64> = (0..200_000i64)
            .filter(|&h| household_hash(h) % 8 == 3)
            .collect();
        let m = Membership::new(
            vec![Subset::All],
            ids.iter().map(|&h| (h, (h % 5) as u32, 1)),
        )
        .unwrap();
        assert_eq!(m.len(), ids.len());
        for &h in ids.iter().step_by(97) {
            assert_eq!(m.lookup(h), Some(((h % 5) as u32, 1)));
        }
        assert_eq!(m.lookup(-1), None);
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

    #[test]
    fn state_round_trips_and_bad_state_is_refused() {
        let m = membership();
        let mut c = Counters::for_membership(&m);
        for r in [
            &b"d,1,2,100,p,10"[..],
            b"d,1,2,0100,p,22",
            b"d,1,2,100,p,99",
            b"junk",
            b"d,1,2,12345678,p,21",
        ] {
            c.count(r, &m);
        }
        let st = c.to_state();
        let back = Counters::from_state(&st, 2, 2, 0).unwrap();
        assert_eq!(back.to_state(), st);
        assert_eq!(
            (back.records, back.valid, back.unknown_household),
            (5, 4, 1)
        );
        // counting on after a restore is the same as never stopping
        let (mut a, mut b) = (c.clone(), back);
        a.count(b"d,1,2,100,p,11", &m);
        b.count(b"d,1,2,100,p,11", &m);
        assert_eq!(a.to_state(), b.to_state());
        assert!(Counters::from_state(&st, 1, 2, 0).is_err());
        let mut dup = st.clone();
        dup.stations[1] = dup.stations[0].clone();
        assert!(Counters::from_state(&dup, 2, 2, 0).is_err());
        let mut short = st.clone();
        short.cells.pop();
        assert!(Counters::from_state(&short, 2, 2, 0).is_err());
        let mut sums = st;
        sums.valid += 1;
        assert!(Counters::from_state(&sums, 2, 2, 0).is_err());
    }

    /// Counters with household groups: each group row sums to the cell, any split merges to
    /// the whole (stations met in another order included), the state round-trips, and a state
    /// of other groups or with a group count changed is refused, saying what to do.
    #[test]
    fn grouped_counters_sum_merge_and_round_trip() {
        let m = membership().with_groups(4);
        let lines: Vec<String> = (0..300)
            .map(|i| format!("d,1,2,{},p,{}", [100, 7, 42, 100, 9][i % 5], (i * 7) % 40))
            .collect();
        let count = |ls: &[String]| {
            let mut c = Counters::for_membership(&m);
            for l in ls {
                c.count(l.as_bytes(), &m);
            }
            c
        };
        let whole = count(&lines);
        assert_eq!(whole.groups(), 4);
        for sid in 0..whole.stations().len() {
            let g: u64 = (0..4).map(|g| whole.group_genpop(sid, g) as u64).sum();
            assert_eq!(g, whole.genpop(sid));
            for sub in 0..2 {
                for cl in 0..2 {
                    let g: u64 = (0..4)
                        .map(|g| whole.group_views(sub, cl, sid, g) as u64)
                        .sum();
                    assert_eq!(g, whole.views(sub, cl, sid));
                }
            }
        }
        for cut in [0, 1, 150, 299, 300] {
            let mut b = count(&lines[cut..]);
            b.merge(&count(&lines[..cut]));
            // station ids differ with the order met: compare by name
            for sid in 0..whole.stations().len() {
                let name = whole.stations().name(sid as u32);
                let other = b.stations().get(name.as_bytes()).unwrap() as usize;
                for g in 0..4 {
                    assert_eq!(whole.group_genpop(sid, g), b.group_genpop(other, g));
                    assert_eq!(
                        whole.group_views(1, 1, sid, g),
                        b.group_views(1, 1, other, g)
                    );
                }
            }
        }
        let st = whole.to_state();
        let back = Counters::from_state(&st, 2, 2, 4).unwrap();
        assert_eq!(back.to_state(), st);
        let e = Counters::from_state(&st, 2, 2, 0).unwrap_err().to_string();
        assert!(
            e.contains("with 4 household groups") && e.contains("--reset-state"),
            "{e}"
        );
        let mut off = st.clone();
        off.group_cells[3] += 1;
        let e = Counters::from_state(&off, 2, 2, 4).unwrap_err().to_string();
        assert!(e.contains("sum to"), "{e}");
    }
}
