//! Fuzzing the two parsers that read bytes from outside: the view-record parser (SPEC 1.2,
//! and the counters built on it) and the recording reader. Proptest feeds them arbitrary
//! bytes and mutated valid inputs; the record parser must agree with [`reference`], SPEC 1.2
//! written the obvious way, and nothing may panic. The kept corpus (`tests/corpus/`) holds
//! the interesting cases as files whose name says the expected outcome (see
//! `tests/corpus/README.md`); every file is run here, so a case once found stays tested.

use std::collections::BTreeMap;
use std::num::IntErrorKind;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use viewpulse::counters::{Counted, Counters, Membership, Subset};
use viewpulse::record::{self, Malformed, MalformedCounts};
use viewpulse::replay::recording::{
    self, End, Entry, Header, Reader, RecordingError, Writer, MAGIC, VERSION,
};

// ---------------------------------------------------------------------------------------
// View records (SPEC 1.2)

/// The six fields and the household of a valid record.
type Parsed<'a> = ([&'a [u8]; 5], i64);

/// SPEC 1.2 as it reads: one trailing `\r` is not part of the record; valid iff exactly six
/// comma-separated fields, none empty, all ASCII, and household_id a signed 64-bit integer.
/// The kind of a malformed record is the first of these checks it fails, in the order of
/// `Malformed::ALL` (empty, non-ASCII, field count, empty field, household_id).
fn reference(raw: &[u8]) -> Result<Parsed<'_>, Malformed> {
    let r = raw.strip_suffix(b"\r").unwrap_or(raw);
    if r.is_empty() {
        return Err(Malformed::Empty);
    }
    if !r.is_ascii() {
        return Err(Malformed::NonAscii);
    }
    let f: Vec<&[u8]> = r.split(|&b| b == b',').collect();
    if f.len() < 6 {
        return Err(Malformed::TooFewFields);
    }
    if f.len() > 6 {
        return Err(Malformed::TooManyFields);
    }
    if f.iter().any(|x| x.is_empty()) {
        return Err(Malformed::EmptyField);
    }
    // a number is an optional sign and at least one digit; only a number can overflow
    // (`99999999999999999999x` is not a number, though std's parse calls it an overflow)
    let digits = f[5].strip_prefix(b"-").or(f[5].strip_prefix(b"+"));
    let digits = digits.unwrap_or(f[5]);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Malformed::BadHouseholdId);
    }
    let text = std::str::from_utf8(f[5]).map_err(|_| Malformed::NonAscii)?;
    match text.parse::<i64>() {
        Ok(id) => Ok(([f[0], f[1], f[2], f[3], f[4]], id)),
        Err(e)
            if matches!(
                e.kind(),
                IntErrorKind::PosOverflow | IntErrorKind::NegOverflow
            ) =>
        {
            Err(Malformed::HouseholdIdOverflow)
        }
        Err(_) => Err(Malformed::BadHouseholdId),
    }
}

/// What the fast parser says, in the reference's terms.
fn parsed(raw: &[u8]) -> Result<Parsed<'_>, Malformed> {
    record::parse(raw).map(|v| {
        (
            [
                v.device_id,
                v.event_date,
                v.event_time,
                v.station_num,
                v.prog_code,
            ],
            v.household_id,
        )
    })
}

/// The households the counting tests know: 1 to 50, cluster `id % 3`, rank `id`.
fn membership() -> Membership {
    Membership::new(
        vec![Subset::All, Subset::Every(3)],
        (1..=50).map(|id| (id, (id % 3) as u32, id as u32)),
    )
    .unwrap()
}

/// Counters computed from the reference: records, valid, unknown, malformed by kind, and per
/// station its general-population count and `views[subset][cluster]`.
#[derive(Debug, Default, PartialEq)]
struct RefCounts {
    records: u64,
    valid: u64,
    unknown: u64,
    malformed: MalformedCounts,
    stations: BTreeMap<Vec<u8>, (u64, Vec<Vec<u64>>)>,
}

fn reference_counts(records: &[Vec<u8>]) -> RefCounts {
    let subsets = [Subset::All, Subset::Every(3)];
    let mut c = RefCounts::default();
    for r in records {
        c.records += 1;
        match reference(r) {
            Err(kind) => c.malformed.add(kind),
            Ok((fields, id)) => {
                c.valid += 1;
                let row = c
                    .stations
                    .entry(fields[3].to_vec())
                    .or_insert_with(|| (0, vec![vec![0; 3]; subsets.len()]));
                row.0 += 1;
                if (1..=50).contains(&id) {
                    for (i, s) in subsets.iter().enumerate() {
                        if s.contains(id as u32) {
                            row.1[i][(id % 3) as usize] += 1;
                        }
                    }
                } else {
                    c.unknown += 1;
                }
            }
        }
    }
    c
}

/// The same figures read out of real counters.
fn counts_of(c: &Counters, stations: impl Iterator<Item = Vec<u8>>) -> RefCounts {
    let mut out = RefCounts {
        records: c.records,
        valid: c.valid,
        unknown: c.unknown_household,
        malformed: c.malformed,
        stations: BTreeMap::new(),
    };
    for name in stations {
        let Some(sid) = c.stations().get(&name) else {
            continue;
        };
        let sid = sid as usize;
        let views = (0..c.n_subsets())
            .map(|s| (0..3).map(|cl| c.views(s, cl, sid)).collect())
            .collect();
        out.stations.insert(name, (c.genpop(sid), views));
    }
    out
}

/// A valid record: realistic fields, a household often among the known ones, sometimes
/// written with a sign or leading zeros, sometimes with a trailing `\r`.
fn valid_record() -> impl Strategy<Value = Vec<u8>> {
    let field = |max: usize| proptest::collection::vec(b'!'..=b'~', 1..=max);
    let no_comma = move |max| {
        field(max).prop_map(|f| {
            f.into_iter()
                .map(|b| if b == b',' { b'.' } else { b })
                .collect::<Vec<u8>>()
        })
    };
    (
        no_comma(14),
        no_comma(9),
        no_comma(7),
        no_comma(6),
        no_comma(16),
        prop_oneof![1i64..=60, any::<i64>()],
        prop_oneof![Just(""), Just("+"), Just("000")],
        any::<bool>(),
    )
        .prop_map(|(d, e, t, s, p, id, style, cr)| {
            let id = match (style, id < 0) {
                ("+", false) => format!("+{id}"),
                ("000", false) => format!("000{id}"),
                _ => id.to_string(),
            };
            let mut r = [d, e, t, s, p, id.into_bytes()].join(&b","[..]);
            if cr {
                r.push(b'\r');
            }
            r
        })
}

/// Bytes a mutation puts in: the ones the parser treats specially, and some junk.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(b','),
        Just(b'\r'),
        Just(b'\n'),
        Just(b'-'),
        Just(b'+'),
        Just(b' '),
        Just(b'0'),
        Just(b'9'),
        Just(0u8),
        Just(0x7f),
        Just(0x80),
        Just(0xc3),
        Just(0xff),
        any::<u8>(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, u8),
    Replace(usize, u8),
    Delete(usize),
    FlipBit(usize, u8),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), interesting_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), interesting_byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), 0u8..8).prop_map(|(i, bit)| Mutation::FlipBit(i, bit)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = bytes.len();
        match *m {
            Mutation::Insert(i, b) => bytes.insert(i % (n + 1), b),
            Mutation::Replace(i, b) if n > 0 => bytes[i % n] = b,
            Mutation::Delete(i) if n > 0 => {
                bytes.remove(i % n);
            }
            Mutation::FlipBit(i, bit) if n > 0 => bytes[i % n] ^= 1 << bit,
            Mutation::Truncate(i) => bytes.truncate(i % (n + 1)),
            _ => {}
        }
    }
    bytes
}

/// A record: arbitrary bytes, a valid one, or a valid one mutated.
fn any_record() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..100),
        valid_record(),
        (valid_record(), proptest::collection::vec(mutation(), 1..4))
            .prop_map(|(r, m)| mutate(r, &m)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Arbitrary bytes: the parser never panics and agrees with the reference.
    #[test]
    fn record_parser_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        prop_assert_eq!(parsed(&bytes), reference(&bytes));
    }

    /// Valid records parse to their fields; mutated ones agree with the reference.
    #[test]
    fn record_parser_on_mutated_valid_records(
        r in valid_record(),
        mutations in proptest::collection::vec(mutation(), 0..4),
    ) {
        let got = parsed(&r);
        prop_assert!(got.is_ok(), "{:?}: {:?}", String::from_utf8_lossy(&r), got);
        prop_assert_eq!(got, reference(&r));
        let m = mutate(r, &mutations);
        prop_assert_eq!(parsed(&m), reference(&m), "{:?}", String::from_utf8_lossy(&m));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// A batch of records counted one at a time, and in batches (across the prefetch
    /// chunks), gives the reference's counters, and the batch reports exactly the malformed
    /// records, with their kinds.
    #[test]
    fn counting_agrees_with_the_reference(records in proptest::collection::vec(any_record(), 0..80)) {
        let m = membership();
        let want = reference_counts(&records);
        let names = || want.stations.keys().cloned();

        let mut one = Counters::for_membership(&m);
        for r in &records {
            let counted = one.count(r, &m);
            match reference(r) {
                Err(kind) => prop_assert_eq!(counted, Counted::Malformed(kind)),
                Ok((_, id)) if (1..=50).contains(&id) => prop_assert_eq!(counted, Counted::Clustered),
                Ok(_) => prop_assert_eq!(counted, Counted::Unknown),
            }
        }
        prop_assert_eq!(&counts_of(&one, names()), &want);
        prop_assert_eq!(one.stations().len(), want.stations.len());

        let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let mut batch = Counters::for_membership(&m);
        let mut bad = Vec::new();
        batch.count_batch(&slices, &m, |i, kind| bad.push((i, kind)));
        prop_assert_eq!(&counts_of(&batch, names()), &want);
        let want_bad: Vec<(usize, Malformed)> = records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| reference(r).err().map(|k| (i, k)))
            .collect();
        prop_assert_eq!(bad, want_bad);
    }
}

// ---------------------------------------------------------------------------------------
// Recordings

fn test_header() -> Header {
    Header {
        version: VERSION,
        source: "kafka://127.0.0.1:9092/viewstream".into(),
        partitions: vec![0, 1, 2, 3],
        created_unix_ms: 1_795_460_400_000,
        writer: "fuzz".into(),
    }
}

/// One recorded record, owned.
type Owned = (i32, i64, i64, Option<Vec<u8>>, Vec<u8>);

fn entries() -> impl Strategy<Value = Vec<Owned>> {
    proptest::collection::vec(
        (
            any::<i32>(),
            any::<i64>(),
            any::<i64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)),
            proptest::collection::vec(any::<u8>(), 0..60),
        ),
        0..12,
    )
}

/// A recording of `entries`, its bytes and the end of each whole record.
fn recording_bytes(dir: &Path, entries: &[Owned]) -> (Vec<u8>, Vec<usize>) {
    let path = dir.join("valid.vprec");
    let mut w = Writer::create(&path, &test_header()).unwrap();
    let mut ends = Vec::new();
    for (p, o, t, k, v) in entries {
        w.write(&Entry {
            partition: *p,
            offset: *o,
            timestamp_ms: *t,
            key: k.as_deref(),
            value: v,
        })
        .unwrap();
        ends.push(w.bytes as usize);
    }
    w.finish().unwrap();
    (std::fs::read(&path).unwrap(), ends)
}

/// How reading a whole file went.
#[derive(Debug)]
enum Outcome {
    /// `Reader::open` refused it.
    Refused(RecordingError),
    /// These records, then the end.
    Read(Vec<Owned>, End),
    /// These records, then an error.
    Failed(Vec<Owned>, RecordingError),
}

/// Open `path` and read every entry, as `replay` does.
fn read_all(path: &Path) -> Outcome {
    let mut r = match Reader::open(path) {
        Ok(r) => r,
        Err(e) => return Outcome::Refused(e),
    };
    let mut got = Vec::new();
    loop {
        match r.next_entry() {
            Ok(Some(e)) => got.push((
                e.partition,
                e.offset,
                e.timestamp_ms,
                e.key.map(<[u8]>::to_vec),
                e.value.to_vec(),
            )),
            Ok(None) => {
                let end = r.end.expect("a read that returned None has ended");
                assert_eq!(r.records, got.len() as u64);
                // an ended reader stays ended
                assert!(matches!(r.next_entry(), Ok(None)));
                return Outcome::Read(got, end);
            }
            Err(e) => return Outcome::Failed(got, e),
        }
    }
}

fn read_bytes(dir: &Path, bytes: &[u8]) -> Outcome {
    let path = dir.join("fuzz.vprec");
    std::fs::write(&path, bytes).unwrap();
    read_all(&path)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Arbitrary bytes are refused as not a recording (without the magic), or read without
    /// panicking: past the magic, through a fuzzed header length and header.
    #[test]
    fn reader_on_arbitrary_bytes(
        tail in proptest::collection::vec(any::<u8>(), 0..200),
        header_len in prop_oneof![0u32..64, any::<u32>()],
        shape in 0u8..3,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let bytes = match shape {
            0 => tail.clone(),
            1 => [&MAGIC[..], &tail].concat(),
            _ => [&MAGIC[..], &header_len.to_le_bytes(), &tail].concat(),
        };
        let outcome = read_bytes(dir.path(), &bytes);
        if !bytes.starts_with(MAGIC) {
            prop_assert!(
                matches!(outcome, Outcome::Refused(RecordingError::NotARecording { .. })),
                "{:?}", outcome
            );
            prop_assert!(!recording::is_recording(&dir.path().join("fuzz.vprec")).unwrap());
        }
    }

    /// A valid recording reads back whole; cut anywhere after its header it yields exactly
    /// its whole records, then says it was cut (or ended cleanly, at a record boundary).
    #[test]
    fn reader_on_truncated_recordings(entries in entries(), cut in any::<prop::sample::Index>()) {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, ends) = recording_bytes(dir.path(), &entries);
        match read_bytes(dir.path(), &bytes) {
            Outcome::Read(got, End::Clean) => prop_assert_eq!(&got, &entries),
            other => prop_assert!(false, "a valid recording read as {:?}", other),
        }
        let start = header_end(&bytes);
        let at = start + cut.index(bytes.len() - start + 1);
        let whole = ends.iter().filter(|&&e| e <= at).count();
        let expect = if at == start || ends.contains(&at) { End::Clean } else { End::Truncated };
        match read_bytes(dir.path(), &bytes[..at]) {
            Outcome::Read(got, end) => {
                prop_assert_eq!(&got[..], &entries[..whole]);
                prop_assert_eq!(end, expect);
            }
            other => prop_assert!(false, "cut at {} of {}: {:?}", at, bytes.len(), other),
        }
        // cut inside the magic or the header: refused, never a panic
        let inside = cut.index(start);
        prop_assert!(matches!(read_bytes(dir.path(), &bytes[..inside]), Outcome::Refused(_)));
    }

    /// Flipped, replaced, inserted or deleted bytes anywhere in a valid recording: the reader
    /// never panics, refuses a broken magic, and never reads more records than the bytes can
    /// hold.
    #[test]
    fn reader_on_mutated_recordings(
        entries in entries(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, _) = recording_bytes(dir.path(), &entries);
        let m = mutate(bytes.clone(), &mutations);
        let outcome = read_bytes(dir.path(), &m);
        if !m.starts_with(MAGIC) {
            prop_assert!(
                matches!(outcome, Outcome::Refused(RecordingError::NotARecording { .. })),
                "{:?}", outcome
            );
        }
        if let Outcome::Read(got, _) | Outcome::Failed(got, _) = &outcome {
            // every entry takes at least 4 + 4 bytes (a length, then three varints and a tag)
            prop_assert!(got.len() <= m.len() / 8);
        }
    }
}

/// Where the first record starts: after the magic, the header length and the header.
fn header_end(bytes: &[u8]) -> usize {
    let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    12 + len
}

// ---------------------------------------------------------------------------------------
// The kept corpus

fn corpus(kind: &str) -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut files: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x != "md"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_str().unwrap().to_string();
            (p, name)
        })
        .collect();
    files.sort();
    files
}

/// Every file of `tests/corpus/record/` is one record; its name, `OUTCOME-description`,
/// says `valid` or the malformed kind (`too_few_fields`, `non_ascii`, ...).
#[test]
fn record_corpus() {
    let files = corpus("record");
    assert!(files.len() >= 40, "the corpus is missing: {}", files.len());
    let m = membership();
    let mut seen = std::collections::BTreeSet::new();
    for (path, name) in &files {
        let bytes = std::fs::read(path).unwrap();
        let (outcome, _) = name.split_once('-').unwrap_or_else(|| {
            panic!("{name}: the name must be OUTCOME-description");
        });
        let got = parsed(&bytes);
        assert_eq!(
            got,
            reference(&bytes),
            "{name}: parser and reference differ"
        );
        let mut c = Counters::for_membership(&m);
        let counted = c.count(&bytes, &m);
        if outcome == "valid" {
            assert!(got.is_ok(), "{name}: {got:?}");
            assert_eq!(c.valid, 1, "{name}");
        } else {
            let want = Malformed::ALL
                .into_iter()
                .find(|k| k.name() == outcome)
                .unwrap_or_else(|| panic!("{name}: {outcome} is not valid nor a kind"));
            assert_eq!(got, Err(want), "{name}");
            assert_eq!(counted, Counted::Malformed(want), "{name}");
            assert_eq!(c.malformed.total(), 1, "{name}");
        }
        seen.insert(outcome.to_string());
    }
    // every kind of SPEC 1.2 has a case
    for k in Malformed::ALL {
        assert!(seen.contains(k.name()), "no corpus case for {}", k.name());
    }
}

/// Every file of `tests/corpus/recording/` is read through; its name says how that ends:
/// `clean-N-…` (N records, then the end), `truncated-N-…` (N whole records, then the cut),
/// `corrupt-N-…` (N records, then a Corrupt error), `bad_header-…` and `not_recording-…`
/// (refused at open).
#[test]
fn recording_corpus() {
    let files = corpus("recording");
    assert!(files.len() >= 25, "the corpus is missing: {}", files.len());
    for (path, name) in &files {
        let mut parts = name.splitn(3, '-');
        let outcome = parts.next().unwrap();
        let n = parts.next().and_then(|p| p.parse::<usize>().ok());
        let got = read_all(path);
        match (outcome, n, &got) {
            ("clean", Some(n), Outcome::Read(r, End::Clean))
            | ("truncated", Some(n), Outcome::Read(r, End::Truncated))
            | ("corrupt", Some(n), Outcome::Failed(r, RecordingError::Corrupt { .. }))
                if r.len() == n => {}
            ("bad_header", _, Outcome::Refused(RecordingError::Header { .. }))
            | ("not_recording", _, Outcome::Refused(RecordingError::NotARecording { .. })) => {}
            _ => panic!("{name}: read as {got:?}"),
        }
        if let Outcome::Refused(e) | Outcome::Failed(_, e) = &got {
            // one message naming the file
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        let is = recording::is_recording(path).unwrap();
        assert_eq!(is, outcome != "not_recording", "{name}");
    }
}
