//! Verified streaming: a payload checked group by group against its manifest's blake3 root.
//!
//! BLAKE3 hashes a payload as a binary tree of 1 KiB chunks, and every aligned run of
//! 2^k chunks is a whole subtree. Cut into groups of [`GROUP_BYTES`] (1024 chunks), the payload's
//! root is the BLAKE3 tree over the groups' chaining values (CVs). The **outboard** of a payload
//! is the list of those CVs, 32 bytes per group (32 KiB per GiB). Whoever has the outboard checks
//! it once against the signed root ([`Outboard::parse`]: a handful of parent-node compressions),
//! then checks each group as it arrives by hashing just that group: no byte has to wait for the
//! end of the payload to be known good. That is what lets a node forward a segment while still
//! receiving it, forwarding only verified groups.
//!
//! A payload of one group or less has an empty outboard: its root is checked at the end, which
//! is at most [`GROUP_BYTES`] away.
//!
//! Why a flat list of group CVs and blake3's own `hazmat` API rather than a full Bao tree (the
//! `bao-tree` crate): the receiver reads the whole list before the payload anyway (it is
//! small), so the inner tree nodes need not travel; verification costs exactly the hashing that
//! storing the payload already needs; and no dependency beyond `blake3` is added.

use blake3::hazmat::{HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};

use crate::limits::OUTBOARD_GROUP_BYTES;

/// Bytes per group (a power-of-two number of 1 KiB chunks).
pub const GROUP_BYTES: u64 = OUTBOARD_GROUP_BYTES;

/// Bytes of one chaining value in the outboard.
pub const CV_BYTES: usize = 32;

/// A chaining value: the non-root hash of one group.
pub type Cv = [u8; CV_BYTES];

/// Groups of a payload of `payload_len` bytes (an empty payload is one empty group).
pub fn group_count(payload_len: u64) -> u64 {
    groups_of(payload_len, GROUP_BYTES)
}

/// Length in bytes of the outboard of a payload of `payload_len` bytes.
pub fn outboard_len(payload_len: u64) -> u64 {
    match group_count(payload_len) {
        1 => 0,
        n => n * CV_BYTES as u64,
    }
}

fn groups_of(payload_len: u64, group: u64) -> u64 {
    payload_len.div_ceil(group).max(1)
}

/// Why an outboard was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboardError {
    #[error("outboard of {got} bytes for a payload that needs {expected}")]
    Length { expected: u64, got: u64 },
    #[error("outboard does not hash to the manifest's payload hash")]
    Root,
}

/// The CVs of a payload's groups, checked against its root. Empty for a single group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outboard {
    cvs: Vec<Cv>,
}

impl Outboard {
    /// Reads an outboard for a payload of `payload_len` bytes whose root is `root`, refusing one
    /// of the wrong length or one that does not hash to `root`.
    pub fn parse(bytes: &[u8], payload_len: u64, root: &[u8; 32]) -> Result<Self, OutboardError> {
        parse_with(bytes, payload_len, root, GROUP_BYTES)
    }

    /// The outboard as it travels and rests: the CVs in group order.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.cvs.concat()
    }

    /// The CV of group `index`; `None` for a single-group payload.
    pub fn cv(&self, index: u64) -> Option<&Cv> {
        self.cvs.get(usize::try_from(index).ok()?)
    }

    pub fn is_empty(&self) -> bool {
        self.cvs.is_empty()
    }
}

fn parse_with(
    bytes: &[u8],
    payload_len: u64,
    root: &[u8; 32],
    group: u64,
) -> Result<Outboard, OutboardError> {
    let groups = groups_of(payload_len, group);
    let expected = if groups == 1 {
        0
    } else {
        groups * CV_BYTES as u64
    };
    if bytes.len() as u64 != expected {
        return Err(OutboardError::Length {
            expected,
            got: bytes.len() as u64,
        });
    }
    if groups == 1 {
        return Ok(Outboard::default());
    }
    let cvs: Vec<Cv> = bytes
        .chunks_exact(CV_BYTES)
        .map(|c| c.try_into().expect("chunks_exact"))
        .collect();
    if root_of(&cvs) != *root {
        return Err(OutboardError::Root);
    }
    Ok(Outboard { cvs })
}

/// The chaining value of group `index` of a payload of two groups or more, from its bytes.
pub fn group_cv(index: u64, bytes: &[u8]) -> Cv {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * GROUP_BYTES);
    hasher.update(bytes);
    hasher.finalize_non_root()
}

/// The root of a payload of two groups or more, from its groups' CVs: BLAKE3's tree above them
/// (the left subtree always holds the largest power of two of groups that leaves one for the
/// right, as it does of chunks).
fn root_of(cvs: &[Cv]) -> [u8; 32] {
    assert!(cvs.len() >= 2, "a single group's hash is the root itself");
    let split = left_len(cvs.len());
    let (l, r) = cvs.split_at(split);
    *merge_subtrees_root(&subtree_cv(l), &subtree_cv(r), Mode::Hash).as_bytes()
}

fn subtree_cv(cvs: &[Cv]) -> Cv {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let (l, r) = cvs.split_at(left_len(cvs.len()));
    merge_subtrees_non_root(&subtree_cv(l), &subtree_cv(r), Mode::Hash)
}

/// The largest power of two strictly less than `n` (n >= 2).
fn left_len(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// Hashes a payload front to back, one group at a time, collecting each group's CV; checks each
/// completed group against an outboard once one is given.
#[derive(Debug, Clone)]
pub struct GroupHasher {
    payload_len: u64,
    group: u64,
    groups: u64,
    hasher: blake3::Hasher,
    /// Bytes hashed so far.
    pos: u64,
    cvs: Vec<Cv>,
    expected: Option<Outboard>,
}

/// A group that did not hash to its CV in the outboard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payload group {index} (bytes {start}..{end}) does not match the outboard")]
pub struct GroupMismatch {
    pub index: u64,
    pub start: u64,
    pub end: u64,
}

impl GroupHasher {
    pub fn new(payload_len: u64) -> Self {
        Self::with_group(payload_len, GROUP_BYTES)
    }

    fn with_group(payload_len: u64, group: u64) -> Self {
        GroupHasher {
            payload_len,
            group,
            groups: groups_of(payload_len, group),
            hasher: blake3::Hasher::new(),
            pos: 0,
            cvs: Vec::new(),
            expected: None,
        }
    }

    /// Bytes hashed so far.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Bytes known good: every completed group, once an outboard was given (0 before).
    pub fn verified(&self) -> u64 {
        match &self.expected {
            Some(_) if self.groups > 1 => {
                (self.cvs.len() as u64 * self.group).min(self.payload_len)
            }
            _ => 0,
        }
    }

    /// Checks the groups hashed so far, and from now on each group as it completes, against
    /// `outboard` (already checked against the root by [`Outboard::parse`]).
    pub fn expect(&mut self, outboard: Outboard) -> Result<(), GroupMismatch> {
        for (i, cv) in self.cvs.iter().enumerate() {
            if outboard.cv(i as u64) != Some(cv) {
                return Err(self.mismatch(i as u64));
            }
        }
        self.expected = Some(outboard);
        Ok(())
    }

    /// Hashes the next bytes (never more than the payload's length: callers check that first).
    pub fn update(&mut self, mut bytes: &[u8]) -> Result<(), GroupMismatch> {
        debug_assert!(self.pos + bytes.len() as u64 <= self.payload_len);
        while !bytes.is_empty() {
            let in_group = self.pos % self.group;
            let n = (bytes.len() as u64).min(self.group - in_group) as usize;
            self.hasher.update(&bytes[..n]);
            self.pos += n as u64;
            bytes = &bytes[n..];
            let group_end = self.pos % self.group == 0 || self.pos == self.payload_len;
            if group_end && self.groups > 1 {
                self.complete_group()?;
            }
        }
        Ok(())
    }

    fn complete_group(&mut self) -> Result<(), GroupMismatch> {
        let index = self.cvs.len() as u64;
        let cv = self.hasher.finalize_non_root();
        if let Some(expected) = &self.expected
            && expected.cv(index) != Some(&cv)
        {
            return Err(self.mismatch(index));
        }
        self.cvs.push(cv);
        if self.pos < self.payload_len {
            self.hasher = blake3::Hasher::new();
            self.hasher.set_input_offset(self.pos);
        }
        Ok(())
    }

    fn mismatch(&self, index: u64) -> GroupMismatch {
        GroupMismatch {
            index,
            start: index * self.group,
            end: ((index + 1) * self.group).min(self.payload_len),
        }
    }

    /// After the whole payload: its root and its outboard. `None` if not all of it was hashed.
    pub fn finish(&self) -> Option<([u8; 32], Outboard)> {
        if self.pos != self.payload_len {
            return None;
        }
        if self.groups == 1 {
            return Some((*self.hasher.finalize().as_bytes(), Outboard::default()));
        }
        let outboard = Outboard {
            cvs: self.cvs.clone(),
        };
        Some((root_of(&self.cvs), outboard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 10) as u8)
            .collect()
    }

    fn hash_in(bytes: &[u8], group: u64, pieces: &[usize]) -> ([u8; 32], Outboard) {
        let mut h = GroupHasher::with_group(bytes.len() as u64, group);
        let mut at = 0;
        let mut i = 0;
        while at < bytes.len() {
            let n = pieces[i % pieces.len()].max(1).min(bytes.len() - at);
            h.update(&bytes[at..at + n]).unwrap();
            at += n;
            i += 1;
        }
        h.finish().unwrap()
    }

    proptest! {
        /// The root from the groups' CVs is blake3's own hash, for every length around group
        /// boundaries and every way of cutting the writes (groups of 1, 2 and 4 chunks here,
        /// so small inputs have many groups).
        #[test]
        fn root_from_group_cvs_is_the_blake3_hash(
            len in 0usize..20_000,
            chunks_log in 0u32..3,
            pieces in proptest::collection::vec(1usize..5000, 1..4),
            seed: u8,
        ) {
            let group = 1024u64 << chunks_log;
            let bytes = data(len, seed);
            let (root, outboard) = hash_in(&bytes, group, &pieces);
            prop_assert_eq!(root, *blake3::hash(&bytes).as_bytes());
            let parsed = parse_with(&outboard.to_bytes(), len as u64, &root, group).unwrap();
            prop_assert_eq!(parsed, outboard);
        }
    }

    #[test]
    fn real_group_size_around_its_boundaries() {
        let g = GROUP_BYTES as usize;
        for len in [
            0,
            1,
            g - 1,
            g,
            g + 1,
            2 * g,
            2 * g + 1024,
            3 * g - 7,
            5 * g + 3,
        ] {
            let bytes = data(len, 7);
            let (root, outboard) = hash_in(&bytes, GROUP_BYTES, &[300_000, 65_536]);
            assert_eq!(root, *blake3::hash(&bytes).as_bytes(), "len {len}");
            assert_eq!(outboard.to_bytes().len() as u64, outboard_len(len as u64));
            assert_eq!(
                Outboard::parse(&outboard.to_bytes(), len as u64, &root),
                Ok(outboard)
            );
        }
    }

    #[test]
    fn a_wrong_outboard_is_refused_and_a_wrong_group_is_named() {
        let group = 1024u64;
        let bytes = data(5000, 1);
        let (root, outboard) = hash_in(&bytes, group, &[5000]);
        let mut raw = outboard.to_bytes();
        assert_eq!(
            parse_with(&raw[..32], 5000, &root, group),
            Err(OutboardError::Length {
                expected: 5 * 32,
                got: 32
            })
        );
        raw[40] ^= 1;
        assert_eq!(
            parse_with(&raw, 5000, &root, group),
            Err(OutboardError::Root)
        );

        // A good outboard, a payload with one byte flipped in group 2: groups 0 and 1 verify,
        // group 2 is named as it completes.
        let mut bad = bytes.clone();
        bad[2 * 1024 + 5] ^= 0x80;
        let mut h = GroupHasher::with_group(5000, group);
        h.expect(outboard.clone()).unwrap();
        h.update(&bad[..2048]).unwrap();
        assert_eq!(h.verified(), 2048);
        assert_eq!(
            h.update(&bad[2048..3072]),
            Err(GroupMismatch {
                index: 2,
                start: 2048,
                end: 3072
            })
        );

        // An outboard given after some groups were hashed checks those at once.
        let mut late = GroupHasher::with_group(5000, group);
        late.update(&bad[..3072]).unwrap();
        assert_eq!(late.expect(outboard).unwrap_err().index, 2);
    }

    #[test]
    fn nothing_is_verified_without_an_outboard_or_for_a_single_group() {
        let bytes = data(3000, 2);
        let mut h = GroupHasher::with_group(3000, 1024);
        h.update(&bytes).unwrap();
        assert_eq!(h.verified(), 0);
        let mut one = GroupHasher::with_group(500, 1024);
        one.expect(Outboard::default()).unwrap();
        one.update(&bytes[..500]).unwrap();
        assert_eq!(one.verified(), 0);
        assert_eq!(
            one.finish().unwrap().0,
            *blake3::hash(&bytes[..500]).as_bytes()
        );
    }
}
