//! Recalls: the payload of a segment of kind `recall`, naming segments to withdraw.
//!
//! # Layout
//!
//! postcard `(format_version: u16 = RECALL_FORMAT_VERSION, ids: sequence of 32-byte segment
//! ids)`, 1..=[`RECALL_IDS_MAX`] ids sorted and distinct, so a recall has one encoding.
//!
//! # Rules
//!
//! A recall withdraws only segments of its own channel: the keys trusted to publish on a
//! channel can withdraw what was published there, nothing else. A node that receives one
//! removes each named segment of that channel from its store and its local delivery, cancels
//! their jobs, refuses them from then on (even one it never had, or one arriving while the
//! recall is applied), and relays the recall itself.

use crate::id::SegmentId;
use crate::limits::{LIFECYCLE_PAYLOAD_BYTES_MAX, RECALL_IDS_MAX};

/// The recall payload format this build writes and reads.
pub const RECALL_FORMAT_VERSION: u16 = 1;

/// Errors decoding a recall payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecallError {
    /// postcard could not decode the bytes.
    #[error("malformed recall: {0}")]
    Decode(#[source] postcard::Error),
    /// A format this build does not read.
    #[error(
        "unsupported recall format {version} (this build reads {RECALL_FORMAT_VERSION}): upgrade edged"
    )]
    UnsupportedFormat {
        /// The version found.
        version: u16,
    },
    /// The list breaks its rules.
    #[error("invalid recall: {0}")]
    Invalid(&'static str),
}

/// The segment ids a recall withdraws.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecallList {
    ids: Vec<SegmentId>,
}

impl RecallList {
    /// A list of `ids` (sorted and deduplicated here), 1..=[`RECALL_IDS_MAX`] of them.
    pub fn new(mut ids: Vec<SegmentId>) -> Result<RecallList, RecallError> {
        ids.sort();
        ids.dedup();
        if ids.is_empty() || ids.len() > RECALL_IDS_MAX {
            return Err(RecallError::Invalid(
                "a recall names 1..=RECALL_IDS_MAX segments",
            ));
        }
        Ok(RecallList { ids })
    }

    /// The ids, sorted.
    pub fn ids(&self) -> &[SegmentId] {
        &self.ids
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        // Cannot fail: an integer and fixed arrays serialise into a Vec.
        postcard::to_allocvec(&(RECALL_FORMAT_VERSION, &self.ids))
            .expect("postcard encoding of a recall")
    }

    /// Decodes a canonical recall payload.
    pub fn decode(bytes: &[u8]) -> Result<RecallList, RecallError> {
        if bytes.len() as u64 > LIFECYCLE_PAYLOAD_BYTES_MAX {
            return Err(RecallError::Invalid(
                "larger than LIFECYCLE_PAYLOAD_BYTES_MAX",
            ));
        }
        let (version, rest) =
            postcard::take_from_bytes::<u16>(bytes).map_err(RecallError::Decode)?;
        if version != RECALL_FORMAT_VERSION {
            return Err(RecallError::UnsupportedFormat { version });
        }
        // The count is read and bounded before the list is collected.
        let (count, _) = postcard::take_from_bytes::<u32>(rest).map_err(RecallError::Decode)?;
        if count == 0 || count as usize > RECALL_IDS_MAX {
            return Err(RecallError::Invalid(
                "a recall names 1..=RECALL_IDS_MAX segments",
            ));
        }
        let (ids, rest) =
            postcard::take_from_bytes::<Vec<SegmentId>>(rest).map_err(RecallError::Decode)?;
        if !rest.is_empty() {
            return Err(RecallError::Invalid("trailing bytes"));
        }
        if !ids.windows(2).all(|w| w[0] < w[1]) {
            return Err(RecallError::Invalid("ids must be sorted and distinct"));
        }
        let list = RecallList { ids };
        if list.encode() != bytes {
            return Err(RecallError::Invalid("not the canonical encoding"));
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> SegmentId {
        SegmentId::from_bytes([b; 32])
    }

    #[test]
    fn round_trip_sorted_and_bounded() {
        let list = RecallList::new(vec![id(3), id(1), id(3)]).unwrap();
        assert_eq!(list.ids(), &[id(1), id(3)]);
        assert_eq!(RecallList::decode(&list.encode()).unwrap(), list);
        assert!(RecallList::new(vec![]).is_err());
        let max: Vec<SegmentId> = (0..RECALL_IDS_MAX)
            .map(|i| {
                SegmentId::from_bytes({
                    let mut b = [0u8; 32];
                    b[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    b
                })
            })
            .collect();
        let mut over = max.clone();
        over.push(id(0xff));
        let full = RecallList::new(max).unwrap();
        assert_eq!(RecallList::decode(&full.encode()).unwrap(), full);
        assert!(RecallList::new(over).is_err());
    }

    #[test]
    fn unsorted_and_unknown_formats_are_refused() {
        let unsorted = postcard::to_allocvec(&(RECALL_FORMAT_VERSION, vec![id(2), id(1)])).unwrap();
        assert_eq!(
            RecallList::decode(&unsorted),
            Err(RecallError::Invalid("ids must be sorted and distinct"))
        );
        let v2 = postcard::to_allocvec(&(2u16, vec![id(1)])).unwrap();
        assert_eq!(
            RecallList::decode(&v2),
            Err(RecallError::UnsupportedFormat { version: 2 })
        );
        let huge_count = postcard::to_allocvec(&(RECALL_FORMAT_VERSION, u32::MAX)).unwrap();
        assert!(RecallList::decode(&huge_count).is_err());
    }
}
