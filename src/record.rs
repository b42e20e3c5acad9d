//! View-record parsing (SPEC 1.2): one Kafka message value or one line of a file becomes a
//! [`View`] or a [`Malformed`] kind. This is the first thing every path (batch, stream, replay)
//! does with a record, so it allocates nothing and copies nothing: a [`View`] borrows its fields
//! from the input bytes.

use std::fmt;

/// Number of comma-separated fields in a valid record:
/// `device_id,event_date,event_time,station_num,prog_code,household_id`.
pub const FIELDS: usize = 6;

/// A valid view record, borrowing from the bytes it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View<'a> {
    /// Set-top box id (first field).
    pub device_id: &'a [u8],
    /// `YYYYMMDD` as sent (not validated beyond SPEC 1.2).
    pub event_date: &'a [u8],
    /// `HHMMSS` as sent.
    pub event_time: &'a [u8],
    /// Station number, a string: `04321` and `4321` are different stations.
    pub station_num: &'a [u8],
    /// Programme code.
    pub prog_code: &'a [u8],
    /// The household that watched.
    pub household_id: i64,
}

/// Why a record is malformed (SPEC 1.2). The order is the order of the counters in
/// [`MalformedCounts`] and of the columns in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Malformed {
    /// Zero bytes (after removing a trailing `\r`).
    Empty,
    /// A byte outside ASCII (binary junk, another encoding).
    NonAscii,
    /// Fewer than six comma-separated fields.
    TooFewFields,
    /// More than six comma-separated fields.
    TooManyFields,
    /// One of the six fields is empty.
    EmptyField,
    /// household_id is not a decimal integer.
    BadHouseholdId,
    /// household_id is a decimal integer outside the i64 range.
    HouseholdIdOverflow,
}

impl Malformed {
    /// Every kind, in counter order.
    pub const ALL: [Malformed; 7] = [
        Malformed::Empty,
        Malformed::NonAscii,
        Malformed::TooFewFields,
        Malformed::TooManyFields,
        Malformed::EmptyField,
        Malformed::BadHouseholdId,
        Malformed::HouseholdIdOverflow,
    ];

    /// Stable snake_case name used in summaries, metrics and dead-letter files.
    pub fn name(self) -> &'static str {
        match self {
            Malformed::Empty => "empty",
            Malformed::NonAscii => "non_ascii",
            Malformed::TooFewFields => "too_few_fields",
            Malformed::TooManyFields => "too_many_fields",
            Malformed::EmptyField => "empty_field",
            Malformed::BadHouseholdId => "bad_household_id",
            Malformed::HouseholdIdOverflow => "household_id_overflow",
        }
    }

    /// Position of this kind in [`Malformed::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Malformed-record counters by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MalformedCounts(pub [u64; 7]);

impl MalformedCounts {
    /// Count one record of `kind`.
    #[inline]
    pub fn add(&mut self, kind: Malformed) {
        self.0[kind.index()] += 1;
    }

    /// Sum over every kind.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Add another set of counters into this one.
    pub fn merge(&mut self, other: &MalformedCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// `(name, count)` for every kind, in counter order.
    pub fn by_kind(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Malformed::ALL
            .iter()
            .map(move |k| (k.name(), self.0[k.index()]))
    }
}

/// Parse one record. A trailing `\r` (a CRLF file) is not part of the record.
#[inline]
pub fn parse(record: &[u8]) -> Result<View<'_>, Malformed> {
    let record = match record.split_last() {
        Some((b'\r', rest)) => rest,
        _ => record,
    };
    if record.is_empty() {
        return Err(Malformed::Empty);
    }
    // One pass, eight bytes at a time: find the commas and note any non-ASCII byte.
    let mut fields: [&[u8]; FIELDS] = [&[]; FIELDS];
    let mut start = 0usize;
    let mut n = 0usize;
    let mut high = 0u64;
    let mut pos = 0usize;
    let mut too_many = false;
    while pos + 8 <= record.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&record[pos..pos + 8]);
        let w = u64::from_le_bytes(word);
        high |= w & HIGH_BITS;
        let mut commas = comma_bytes(w);
        while commas != 0 {
            let comma = pos + (commas.trailing_zeros() / 8) as usize;
            commas &= commas - 1;
            if n == FIELDS - 1 {
                too_many = true;
                break;
            }
            fields[n] = &record[start..comma];
            n += 1;
            start = comma + 1;
        }
        if too_many {
            break;
        }
        pos += 8;
    }
    if !too_many {
        for (i, &b) in record.iter().enumerate().skip(pos) {
            high |= u64::from(b & 0x80);
            if b == b',' {
                if n == FIELDS - 1 {
                    too_many = true;
                    break;
                }
                fields[n] = &record[start..i];
                n += 1;
                start = i + 1;
            }
        }
    }
    if high != 0 || (too_many && !record.is_ascii()) {
        return Err(Malformed::NonAscii);
    }
    if too_many {
        return Err(Malformed::TooManyFields);
    }
    if n < FIELDS - 1 {
        return Err(Malformed::TooFewFields);
    }
    fields[FIELDS - 1] = &record[start..];
    if fields.iter().any(|f| f.is_empty()) {
        return Err(Malformed::EmptyField);
    }
    let household_id = parse_i64(fields[5])?;
    Ok(View {
        device_id: fields[0],
        event_date: fields[1],
        event_time: fields[2],
        station_num: fields[3],
        prog_code: fields[4],
        household_id,
    })
}

const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
const LOW_SEVEN: u64 = 0x7F7F_7F7F_7F7F_7F7F;

/// The high bit of every byte of `w` that is a comma, and no other bit.
#[inline]
fn comma_bytes(w: u64) -> u64 {
    let t = w ^ 0x2C2C_2C2C_2C2C_2C2C;
    !(((t & LOW_SEVEN).wrapping_add(LOW_SEVEN)) | t | LOW_SEVEN)
}

/// Parse a decimal i64 with an optional sign, as Spark's `LONG` cast of a CSV field does.
#[inline]
fn parse_i64(s: &[u8]) -> Result<i64, Malformed> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        return Err(Malformed::BadHouseholdId);
    }
    // Accumulate negatively so that i64::MIN parses.
    let mut acc: i64 = 0;
    let mut overflow = false;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return Err(Malformed::BadHouseholdId);
        }
        if !overflow {
            match acc.checked_mul(10).and_then(|v| v.checked_sub(d as i64)) {
                Some(v) => acc = v,
                None => overflow = true,
            }
        }
    }
    if overflow {
        return Err(Malformed::HouseholdIdOverflow);
    }
    if neg {
        Ok(acc)
    } else {
        acc.checked_neg().ok_or(Malformed::HouseholdIdOverflow)
    }
}

/// The records of an arena batch (their bytes back to back in `data`, `ends` the end of
/// each), as slices, in order: how every batch in the pipeline holds its records.
pub fn split<'a>(data: &'a [u8], ends: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(ends.len());
    let mut start = 0;
    for &end in ends {
        out.push(&data[start..end]);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_example() {
        let v = parse(b"000000033449,20150114,000000,59444,MV000963020000,1496400").unwrap();
        assert_eq!(v.device_id, b"000000033449");
        assert_eq!(v.event_date, b"20150114");
        assert_eq!(v.event_time, b"000000");
        assert_eq!(v.station_num, b"59444");
        assert_eq!(v.prog_code, b"MV000963020000");
        assert_eq!(v.household_id, 1496400);
    }

    #[test]
    fn crlf_and_leading_zero_station() {
        let v = parse(b"a,b,c,04321,p,7\r").unwrap();
        assert_eq!(v.station_num, b"04321");
        assert_eq!(v.household_id, 7);
        assert_ne!(v.station_num, b"4321");
    }

    /// The malformed-record corpus: every kind SPEC 1.2 names.
    #[test]
    fn malformed_corpus() {
        let cases: &[(&[u8], Malformed)] = &[
            (b"", Malformed::Empty),
            (b"\r", Malformed::Empty),
            (b"a,b,c,d,e", Malformed::TooFewFields),
            (b"no commas at all", Malformed::TooFewFields),
            (b"a,b,c,d,e,1,extra", Malformed::TooManyFields),
            (b"a,b,c,d,e,1,", Malformed::TooManyFields),
            (b",b,c,d,e,1", Malformed::EmptyField),
            (b"a,b,c,,e,1", Malformed::EmptyField),
            (b"a,b,c,d,e,", Malformed::EmptyField),
            (b"a,b,c,d,e,12x", Malformed::BadHouseholdId),
            (b"a,b,c,d,e,-", Malformed::BadHouseholdId),
            (b"a,b,c,d,e, 12", Malformed::BadHouseholdId),
            (b"a,b,c,d,e,1.5", Malformed::BadHouseholdId),
            (
                b"a,b,c,d,e,9223372036854775808",
                Malformed::HouseholdIdOverflow,
            ),
            (
                b"a,b,c,d,e,-9223372036854775809",
                Malformed::HouseholdIdOverflow,
            ),
            (
                b"a,b,c,d,e,99999999999999999999999",
                Malformed::HouseholdIdOverflow,
            ),
            (b"a,b,c,\xc3\xa9,e,1", Malformed::NonAscii),
            (b"\x00\xff\xfe\x80junk", Malformed::NonAscii),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input),
                Err(*want),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn i64_bounds() {
        assert_eq!(
            parse(b"a,b,c,d,e,9223372036854775807")
                .unwrap()
                .household_id,
            i64::MAX
        );
        assert_eq!(
            parse(b"a,b,c,d,e,-9223372036854775808")
                .unwrap()
                .household_id,
            i64::MIN
        );
        assert_eq!(parse(b"a,b,c,d,e,+42").unwrap().household_id, 42);
        assert_eq!(parse(b"a,b,c,d,e,-0042").unwrap().household_id, -42);
    }

    use proptest::prelude::Just;

    /// SPEC 1.2 written the obvious way, to check the fast parser against.
    fn reference(r: &[u8]) -> Result<(Vec<u8>, i64), Malformed> {
        let r = r.strip_suffix(b"\r").unwrap_or(r);
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
        let s = std::str::from_utf8(f[5]).unwrap();
        let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Malformed::BadHouseholdId);
        }
        match s.parse::<i64>() {
            Ok(v) => Ok((f[3].to_vec(), v)),
            Err(_) => Err(Malformed::HouseholdIdOverflow),
        }
    }

    proptest::proptest! {
        /// Any bytes at all: never panics, and a valid parse re-joins to the input.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            if let Ok(v) = parse(&bytes) {
                let hh = std::str::from_utf8(bytes.rsplit(|&b| b == b',').next().unwrap()).unwrap();
                let hh = hh.trim_end_matches('\r');
                proptest::prop_assert_eq!(hh.parse::<i64>().ok(), Some(v.household_id));
            }
        }

        /// The word-at-a-time scan agrees with a plain split on commas, for records made
        /// mostly of commas, digits and a few other bytes.
        #[test]
        fn agrees_with_a_plain_split(bytes in proptest::collection::vec(
            proptest::prop_oneof![Just(b','), Just(b'7'), Just(b'x'), Just(0xE9u8), Just(b'\r'), Just(b'-')],
            0..70,
        )) {
            proptest::prop_assert_eq!(parse(&bytes).map(|v| (v.station_num.to_vec(), v.household_id)), reference(&bytes));
        }

        /// Any i64 written in decimal parses back to itself.
        #[test]
        fn household_roundtrip(id in proptest::num::i64::ANY) {
            let line = format!("d,20150114,000000,1,p,{id}");
            proptest::prop_assert_eq!(parse(line.as_bytes()).unwrap().household_id, id);
        }
    }
}
