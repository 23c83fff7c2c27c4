//! Segment ids and id prefixes.
//!
//! A [`SegmentId`] is the blake3 hash of the exact canonical manifest bytes (see
//! [`crate::manifest`]). Because only canonical encodings are accepted, one manifest has exactly
//! one id. Ids are shown as 64 lowercase hex characters; operators may name a segment by a unique
//! prefix of at least [`ID_PREFIX_HEX_MIN`] hex characters ([`parse_prefix`]), which a sorted table
//! can resolve with one range scan ([`IdPrefix::range`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::limits::{ID_HEX_LEN, ID_PREFIX_HEX_MIN};

/// Hex characters of an id shown in logs by [`SegmentId::short`].
const SHORT_HEX_LEN: usize = 12;

/// Errors parsing a segment id or an id prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A full id must be exactly 64 hex characters.
    #[error("segment id must be {ID_HEX_LEN} hex characters, got {len}")]
    WrongLength {
        /// Length of the input, in bytes.
        len: usize,
    },
    /// A prefix is shorter than [`ID_PREFIX_HEX_MIN`] or longer than a full id.
    #[error(
        "segment id prefix must be {ID_PREFIX_HEX_MIN}..={ID_HEX_LEN} hex characters, got {len}"
    )]
    PrefixLength {
        /// Length of the input, in bytes.
        len: usize,
    },
    /// A character that is not a hex digit.
    #[error("segment id contains a non-hex character at byte {index}")]
    NotHex {
        /// Byte offset of the first offending character.
        index: usize,
    },
}

/// The id of a segment: blake3 of its canonical manifest bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentId(pub [u8; 32]);

impl SegmentId {
    /// Id of the given canonical manifest bytes.
    pub fn of_manifest_bytes(manifest_bytes: &[u8]) -> Self {
        Self(*blake3::hash(manifest_bytes).as_bytes())
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// An id from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The first 12 hex characters, for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..SHORT_HEX_LEN / 2])
    }

    /// Name of the `segments/` fan-out directory holding this segment: two hex characters of its
    /// first byte.
    pub fn fanout_dir(&self) -> String {
        hex::encode(&self.0[..1])
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SegmentId({})", self.short())
    }
}

/// Value of one hex digit, either case.
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses up to 64 hex digits into the leading nibbles of a 32-byte array (the rest zero).
fn parse_nibbles(s: &str) -> Result<[u8; 32], IdError> {
    debug_assert!(s.len() <= ID_HEX_LEN);
    let mut out = [0u8; 32];
    for (index, c) in s.bytes().enumerate() {
        let v = nibble(c).ok_or(IdError::NotHex { index })?;
        let shift = if index % 2 == 0 { 4 } else { 0 };
        out[index / 2] |= v << shift;
    }
    Ok(out)
}

/// Parses exactly 64 hex characters (either case; shown in lowercase).
impl FromStr for SegmentId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.len() != ID_HEX_LEN {
            return Err(IdError::WrongLength { len: s.len() });
        }
        parse_nibbles(s).map(SegmentId)
    }
}

/// A prefix of a segment id, as given on the command line.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdPrefix {
    /// The prefix nibbles, left-aligned; the nibbles past `nibbles` are zero.
    bytes: [u8; 32],
    /// Number of hex characters, `ID_PREFIX_HEX_MIN..=64`.
    nibbles: u8,
}

/// Parses an id prefix of `ID_PREFIX_HEX_MIN..=64` hex characters (either case).
pub fn parse_prefix(s: &str) -> Result<IdPrefix, IdError> {
    if !(ID_PREFIX_HEX_MIN..=ID_HEX_LEN).contains(&s.len()) {
        return Err(IdError::PrefixLength { len: s.len() });
    }
    let bytes = parse_nibbles(s)?;
    // Cannot truncate: the length is at most ID_HEX_LEN (64), checked above.
    let nibbles = s.len() as u8;
    Ok(IdPrefix { bytes, nibbles })
}

impl IdPrefix {
    /// Number of hex characters in the prefix.
    pub fn len(&self) -> usize {
        usize::from(self.nibbles)
    }

    /// Always false: a prefix has at least [`ID_PREFIX_HEX_MIN`] characters.
    pub fn is_empty(&self) -> bool {
        self.nibbles == 0
    }

    /// Whether `id` starts with this prefix.
    pub fn matches(&self, id: &SegmentId) -> bool {
        let (low, high) = self.range();
        low <= *id && *id <= high
    }

    /// The inclusive range `[low, high]` of ids starting with this prefix, for a scan of a table
    /// sorted by id.
    pub fn range(&self) -> (SegmentId, SegmentId) {
        let low = self.bytes;
        let mut high = self.bytes;
        let n = self.len();
        if n % 2 == 1 {
            high[n / 2] |= 0x0f;
        }
        for b in &mut high[n.div_ceil(2)..] {
            *b = 0xff;
        }
        (SegmentId(low), SegmentId(high))
    }
}

impl fmt::Display for IdPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = hex::encode(self.bytes);
        f.write_str(&full[..self.len()])
    }
}

impl fmt::Debug for IdPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdPrefix({self})")
    }
}

impl FromStr for IdPrefix {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        parse_prefix(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(byte_fn: impl Fn(usize) -> u8) -> SegmentId {
        SegmentId(std::array::from_fn(byte_fn))
    }

    #[test]
    fn display_parse_round_trip() {
        let a = id(|i| (i * 7 + 3) as u8);
        let s = a.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(s.parse::<SegmentId>(), Ok(a));
        assert_eq!(s.to_uppercase().parse::<SegmentId>(), Ok(a));
        assert_eq!(a.short(), s[..12]);
        assert_eq!(format!("{a:?}"), format!("SegmentId({})", &s[..12]));
        assert_eq!(a.fanout_dir(), s[..2]);
        assert_eq!(SegmentId::from_bytes(*a.as_bytes()), a);
    }

    #[test]
    fn id_of_bytes_is_blake3() {
        assert_eq!(
            SegmentId::of_manifest_bytes(b"abc").0,
            *blake3::hash(b"abc").as_bytes()
        );
    }

    #[test]
    fn parse_rejections() {
        let ok = "ab".repeat(32);
        let cases: &[(&str, IdError)] = &[
            ("", IdError::WrongLength { len: 0 }),
            (&ok[..63], IdError::WrongLength { len: 63 }),
            (&"ab".repeat(33)[..65], IdError::WrongLength { len: 65 }),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<SegmentId>().as_ref(), Err(want), "{input}");
        }
        let mut bad = ok.clone();
        bad.replace_range(10..11, "g");
        assert_eq!(bad.parse::<SegmentId>(), Err(IdError::NotHex { index: 10 }));
        // A multi-byte character must not panic and reports its byte position.
        let mut uni = ok[..62].to_string();
        uni.push('é');
        assert_eq!(uni.parse::<SegmentId>(), Err(IdError::NotHex { index: 62 }));
    }

    #[test]
    fn prefix_length_bound_n_and_n_plus_1() {
        let full = "0123456789abcdef".repeat(4);
        assert_eq!(
            parse_prefix(&full[..ID_PREFIX_HEX_MIN - 1]),
            Err(IdError::PrefixLength {
                len: ID_PREFIX_HEX_MIN - 1
            })
        );
        assert!(parse_prefix(&full[..ID_PREFIX_HEX_MIN]).is_ok());
        assert!(parse_prefix(&full).is_ok());
        let long = format!("{full}0");
        assert_eq!(parse_prefix(&long), Err(IdError::PrefixLength { len: 65 }));
        assert_eq!(parse_prefix("12x4"), Err(IdError::NotHex { index: 2 }));
    }

    #[test]
    fn prefix_matches_and_range() {
        let a: SegmentId = "abcd1234".repeat(8).parse().unwrap();
        // (prefix, matches a, expected low, expected high)
        let cases = [
            ("abcd", true, "abcd", "abcd"),
            ("abcd1", true, "abcd10", "abcd1f"),
            ("ABCD12", true, "abcd12", "abcd12"),
            ("abce", false, "abce", "abce"),
            ("abcd0", false, "abcd00", "abcd0f"),
        ];
        for (p, want, low_head, high_head) in cases {
            let prefix = parse_prefix(p).unwrap();
            assert_eq!(prefix.matches(&a), want, "{p}");
            let (low, high) = prefix.range();
            let (low, high) = (low.to_string(), high.to_string());
            assert!(low.starts_with(low_head), "{p}: {low}");
            assert!(high.starts_with(high_head), "{p}: {high}");
            assert!(low[low_head.len()..].bytes().all(|c| c == b'0'), "{low}");
            assert!(high[high_head.len()..].bytes().all(|c| c == b'f'), "{high}");
            assert_eq!(prefix.to_string(), p.to_lowercase());
        }
        let full = parse_prefix(&a.to_string()).unwrap();
        assert_eq!(full.range(), (a, a));
        assert!(full.matches(&a));
    }

    #[test]
    fn prefix_lookup_in_sorted_table() {
        let mut table: Vec<SegmentId> = (0u8..=255)
            .map(|i| id(|j| if j == 0 { i } else { (j as u8) ^ i }))
            .collect();
        table.sort();
        for target in &table {
            let prefix = parse_prefix(&target.to_string()[..6]).unwrap();
            let (low, high) = prefix.range();
            let hits: Vec<_> = table.iter().filter(|x| **x >= low && **x <= high).collect();
            assert_eq!(hits, vec![target]);
            assert!(table.iter().filter(|x| prefix.matches(x)).eq(hits));
        }
    }
}
