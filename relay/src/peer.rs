//! Peer ids: the node names of `known_peers`, as they appear in certificates and pin owners.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::limits::PEER_ID_BYTES_MAX;

/// A node id: 1..=[`PEER_ID_BYTES_MAX`] bytes of `[a-z0-9-]` (the DNS name in a node
/// certificate). Parsed, never assumed: every constructor validates.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PeerId(String);

/// Why a string is not a peer id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerIdError {
    /// Empty or longer than [`PEER_ID_BYTES_MAX`].
    #[error("peer id must be 1..={PEER_ID_BYTES_MAX} bytes, got {len}")]
    Length {
        /// Length of the input in bytes.
        len: usize,
    },
    /// A character outside `[a-z0-9-]`.
    #[error("peer id {input:?} has a character outside [a-z0-9-]")]
    Character {
        /// The input.
        input: String,
    },
}

impl PeerId {
    /// Validates `s` as a peer id.
    pub fn new(s: &str) -> Result<PeerId, PeerIdError> {
        if s.is_empty() || s.len() > PEER_ID_BYTES_MAX {
            return Err(PeerIdError::Length { len: s.len() });
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(PeerIdError::Character {
                input: s.to_owned(),
            });
        }
        Ok(PeerId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The store pin owner of a job for this peer: `relay:<peer>`.
    pub fn pin_owner(&self) -> String {
        format!("relay:{}", self.0)
    }
}

impl FromStr for PeerId {
    type Err = PeerIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PeerId::new(s)
    }
}

impl TryFrom<String> for PeerId {
    type Error = PeerIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PeerId::new(&s)
    }
}

impl From<PeerId> for String {
    fn from(p: PeerId) -> String {
        p.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_bounds_at_n_and_n_plus_1() {
        let max = "a".repeat(PEER_ID_BYTES_MAX);
        assert!(PeerId::new(&max).is_ok());
        let over = "a".repeat(PEER_ID_BYTES_MAX + 1);
        assert_eq!(
            PeerId::new(&over),
            Err(PeerIdError::Length {
                len: PEER_ID_BYTES_MAX + 1
            })
        );
        assert!(PeerId::new("").is_err());
        for bad in ["A", "a_b", "a.b", "a b", "é"] {
            assert!(PeerId::new(bad).is_err(), "{bad}");
        }
        assert_eq!(PeerId::new("node-7").unwrap().pin_owner(), "relay:node-7");
    }
}
