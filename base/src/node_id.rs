//! The node id: one DNS label naming a node in its certificate, in `known_peers` and in relay
//! jobs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest node id in bytes: one DNS label.
pub const NODE_ID_BYTES_MAX: usize = 63;

/// A node's identity in the fleet: one DNS label, `[a-z0-9-]{1,63}`, not starting or ending
/// with `-` and not all digits, so that it is a valid DNS name for certificate checks. Parsed,
/// never assumed: every constructor validates. Ordered as strings: the lower id's dial wins
/// when two nodes dial each other at once.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

/// Why a string is not a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    #[error("invalid node id: must be 1..={NODE_ID_BYTES_MAX} bytes, got {len}")]
    Length { len: usize },
    #[error("invalid node id {input:?}: a character outside [a-z0-9-]")]
    Character { input: String },
    #[error("invalid node id {input:?}: starts or ends with '-'")]
    Hyphen { input: String },
    #[error("invalid node id {input:?}: all digits (not a DNS name)")]
    AllDigits { input: String },
}

/// At most this many characters of a rejected input are quoted back.
const QUOTED_CHARS_MAX: usize = 80;

impl NodeId {
    /// Validates `s` as a node id.
    pub fn new(s: &str) -> Result<NodeId, NodeIdError> {
        let quoted = || s.chars().take(QUOTED_CHARS_MAX).collect::<String>();
        if s.is_empty() || s.len() > NODE_ID_BYTES_MAX {
            return Err(NodeIdError::Length { len: s.len() });
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(NodeIdError::Character { input: quoted() });
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(NodeIdError::Hyphen { input: quoted() });
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NodeIdError::AllDigits { input: quoted() });
        }
        Ok(NodeId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeId {
    type Err = NodeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeId::new(s)
    }
}

impl TryFrom<&str> for NodeId {
    type Error = NodeIdError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        NodeId::new(s)
    }
}

impl TryFrom<String> for NodeId {
    type Error = NodeIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NodeId::new(&s)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_bound_at_n_and_n_plus_1() {
        let max = "a".repeat(NODE_ID_BYTES_MAX);
        assert!(NodeId::new(&max).is_ok());
        let over = "a".repeat(NODE_ID_BYTES_MAX + 1);
        assert_eq!(
            NodeId::new(&over),
            Err(NodeIdError::Length {
                len: NODE_ID_BYTES_MAX + 1
            })
        );
        assert_eq!(NodeId::new(""), Err(NodeIdError::Length { len: 0 }));
    }

    #[test]
    fn only_dns_labels_are_node_ids() {
        for good in ["a", "node-7", "n0", "0a", "a0-b1"] {
            assert!(NodeId::new(good).is_ok(), "{good}");
        }
        for bad in ["A", "a_b", "a.b", "a b", "é", "-a", "a-", "-", "123", "0"] {
            assert!(NodeId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_validates_on_the_way_in() {
        let id: NodeId = serde_json::from_str("\"node-7\"").unwrap();
        assert_eq!(id.as_str(), "node-7");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"node-7\"");
        assert!(serde_json::from_str::<NodeId>("\"Node\"").is_err());
    }

    #[test]
    fn a_long_bad_input_is_quoted_back_cut_short() {
        let long = format!("{}_", "a".repeat(60));
        let Err(NodeIdError::Character { input }) = NodeId::new(&long) else {
            panic!("accepted {long}");
        };
        assert_eq!(input, long);
        let huge = "_".repeat(10_000);
        assert!(matches!(
            NodeId::new(&huge),
            Err(NodeIdError::Length { .. })
        ));
    }
}
