//! Trust roots: the signed, versioned document that says which publisher keys a node trusts,
//! for which channels, how many of them must sign a manifest, and who may replace the document.
//!
//! # Layout
//!
//! A [`RootDocument`] is encoded with postcard, fields in declaration order, like a manifest
//! (varints, length-prefixed strings and sequences, raw 32-byte keys, a 0/1 tag before an
//! option). Every list is sorted and free of duplicates, so a document has exactly one
//! encoding; [`RootDocument::decode_canonical`] refuses any other.
//!
//! | field | meaning |
//! |---|---|
//! | `format_version` | [`ROOT_FORMAT_VERSION`]; anything else is refused by name |
//! | `version` | ≥ 1; each replacement has a higher one |
//! | `created_at_ms`, `expires_at_ms` | UTC ms; after the expiry a node refuses new content (freeze protection) |
//! | `root_keys`, `root_threshold` | the keys that sign the next version of this document, and how many of them must |
//! | `publishers` | each key with the channels it may publish to (`*`: every channel) |
//! | `channels` | per channel: the threshold of distinct trusted signatures a manifest needs (default 1), and an optional expiry |
//!
//! A [`SignedRoot`] is the postcard pair `(document bytes, signatures)`, the signatures a
//! sequence of `(key, ed25519 signature)` sorted by key, each over [`ROOT_DOMAIN_TAG`] followed
//! by the document bytes. Keys sign one at a time ([`SignedRoot::sign`]), so each can stay on
//! its own offline machine.
//!
//! # Rules
//!
//! - A first root (named in `edge.toml`) is taken as configured, but must be signed by its own
//!   `root_threshold` of its own `root_keys` ([`SignedRoot::verify_self`]).
//! - A next root is accepted only if its version is higher and it is signed by the current
//!   root's threshold of the current root's keys, and by its own threshold of its own keys
//!   ([`SignedRoot::verify_successor`]): a removed key cannot sign its way back in, and a new
//!   root whose keys cannot sign is never installed.
//! - A root travels as the payload of a segment of kind `root` ([`RootChain`]: up to
//!   [`ROOT_CHAIN_MAX`] consecutive documents, so a node several versions behind catches up
//!   from one segment).

use std::collections::BTreeSet;
use std::fmt;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::keys::{PublisherKey, PublisherSecret};
use crate::limits::{
    CHANNELS_PER_KEY_MAX, LIFECYCLE_PAYLOAD_BYTES_MAX, ROOT_CHAIN_MAX, ROOT_CHANNELS_MAX,
    ROOT_DOC_BYTES_MAX, ROOT_KEYS_MAX, ROOT_PUBLISHERS_MAX, TIME_MS_MAX,
};
use crate::manifest::validate_channel;

/// The root document format this build writes and reads.
pub const ROOT_FORMAT_VERSION: u16 = 1;
/// Signed before the document bytes, so a root signature is never valid as anything else.
pub const ROOT_DOMAIN_TAG: &[u8] = b"edged/root-document/v1\0";
/// The channel word of a publisher allowed on every channel.
pub const ALL_CHANNELS: &str = "*";

/// Errors decoding, validating, signing or accepting a root document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootError {
    /// The encoding is longer than its bound; it was not decoded.
    #[error("root document is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// Length of the input, in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// postcard could not decode the bytes.
    #[error("malformed root document: {0}")]
    Decode(#[source] postcard::Error),
    /// Bytes follow a complete encoding.
    #[error("{count} trailing bytes after the root document")]
    TrailingBytes {
        /// Number of bytes left over.
        count: usize,
    },
    /// The bytes decode but are not the canonical encoding of what they decode to.
    #[error("root document encoding is not canonical")]
    NotCanonical,
    /// A format this build does not read.
    #[error(
        "unsupported root document format {version} (this build reads {ROOT_FORMAT_VERSION}): upgrade edged"
    )]
    UnsupportedFormat {
        /// The format version found.
        version: u16,
    },
    /// A field breaks a rule of the document (what, in words).
    #[error("invalid root document: {0}")]
    Invalid(String),
    /// A signature does not verify.
    #[error("a signature by {key} on root version {version} does not verify")]
    BadSignature {
        /// The signing key.
        key: PublisherKey,
        /// The document's version.
        version: u64,
    },
    /// Too few of the required keys signed.
    #[error(
        "root version {version} has {valid} valid signature(s) by {whose} root keys, {needed} needed"
    )]
    BelowThreshold {
        /// The document's version.
        version: u64,
        /// Whose keys were counted: "current" or "its own".
        whose: &'static str,
        /// Valid signatures by those keys.
        valid: usize,
        /// The threshold.
        needed: usize,
    },
    /// The candidate is not newer than the root in force.
    #[error("root version {offered} is not newer than the version {current} in force")]
    NotNewer {
        /// The version offered.
        offered: u64,
        /// The version in force.
        current: u64,
    },
    /// The candidate expired already.
    #[error("root version {version} expired at {}", crate::when::rfc3339_with_age(*expires_at_ms, *now_ms))]
    Expired {
        /// The document's version.
        version: u64,
        /// Its expiry, ms since the Unix epoch.
        expires_at_ms: u64,
        /// The time checked against.
        now_ms: u64,
    },
    /// `sign` was given a key that already signed, or a signature list reached its bound.
    #[error("{0}")]
    Signing(String),
}

/// A publisher key and the channels it may publish to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublisherGrant {
    /// The key.
    pub key: PublisherKey,
    /// Sorted, distinct; [`ALL_CHANNELS`] alone means every channel.
    pub channels: Vec<String>,
}

impl PublisherGrant {
    /// Whether this grant covers `channel`.
    pub fn covers(&self, channel: &str) -> bool {
        self.channels
            .iter()
            .any(|c| c == ALL_CHANNELS || c == channel)
    }
}

/// What a channel requires beyond the default (threshold 1, no expiry).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChannelRule {
    /// The channel.
    pub channel: String,
    /// Distinct trusted signatures a manifest of this channel needs (k of n), ≥ 1.
    pub threshold: u8,
    /// After this time (UTC ms) content of this channel is refused.
    pub expires_at_ms: Option<u64>,
}

/// The trusted publisher set, as a signed and versioned document. Field order is the encoding
/// order: never reorder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RootDocument {
    /// Always [`ROOT_FORMAT_VERSION`].
    pub format_version: u16,
    /// ≥ 1; a replacement has a higher one.
    pub version: u64,
    /// Creation time, UTC ms.
    pub created_at_ms: u64,
    /// After this time (UTC ms) the node refuses new content until a newer root arrives.
    pub expires_at_ms: Option<u64>,
    /// Keys that sign the next version; sorted, distinct, 1..=[`ROOT_KEYS_MAX`].
    pub root_keys: Vec<PublisherKey>,
    /// How many of `root_keys` must sign the next version.
    pub root_threshold: u8,
    /// Publisher keys and their channels; sorted by key, distinct.
    pub publishers: Vec<PublisherGrant>,
    /// Channel rules; sorted by channel, distinct.
    pub channels: Vec<ChannelRule>,
}

fn invalid(what: impl Into<String>) -> RootError {
    RootError::Invalid(what.into())
}

fn sorted_distinct<T: Ord>(items: &[T]) -> bool {
    items.windows(2).all(|w| w[0] < w[1])
}

impl RootDocument {
    /// Checks every rule of the layout (bounds, order, thresholds that can be met).
    pub fn validate(&self) -> Result<(), RootError> {
        if self.format_version != ROOT_FORMAT_VERSION {
            return Err(RootError::UnsupportedFormat {
                version: self.format_version,
            });
        }
        if self.version == 0 {
            return Err(invalid("version must be at least 1"));
        }
        if self.created_at_ms > TIME_MS_MAX {
            return Err(invalid("created_at_ms is later than year 9999"));
        }
        if let Some(e) = self.expires_at_ms {
            if e <= self.created_at_ms || e > TIME_MS_MAX {
                return Err(invalid(
                    "expires_at_ms must be after created_at_ms and within year 9999",
                ));
            }
        }
        if self.root_keys.is_empty() || self.root_keys.len() > ROOT_KEYS_MAX {
            return Err(invalid(format!(
                "root_keys must list 1..={ROOT_KEYS_MAX} keys, not {}",
                self.root_keys.len()
            )));
        }
        if !sorted_distinct(&self.root_keys) {
            return Err(invalid("root_keys must be sorted and distinct"));
        }
        if self.root_threshold == 0 || usize::from(self.root_threshold) > self.root_keys.len() {
            return Err(invalid(format!(
                "root_threshold {} cannot be met by {} root key(s)",
                self.root_threshold,
                self.root_keys.len()
            )));
        }
        if self.publishers.len() > ROOT_PUBLISHERS_MAX {
            return Err(invalid(format!(
                "at most {ROOT_PUBLISHERS_MAX} publishers, not {}",
                self.publishers.len()
            )));
        }
        let keys: Vec<&PublisherKey> = self.publishers.iter().map(|p| &p.key).collect();
        if !sorted_distinct(&keys) {
            return Err(invalid("publishers must be sorted by key and distinct"));
        }
        for p in &self.publishers {
            if p.channels.is_empty() || p.channels.len() > CHANNELS_PER_KEY_MAX {
                return Err(invalid(format!(
                    "publisher {} must have 1..={CHANNELS_PER_KEY_MAX} channels",
                    p.key
                )));
            }
            if !sorted_distinct(&p.channels) {
                return Err(invalid(format!(
                    "channels of publisher {} must be sorted and distinct",
                    p.key
                )));
            }
            for c in &p.channels {
                if c != ALL_CHANNELS {
                    validate_channel(c)
                        .map_err(|e| invalid(format!("publisher {} channel {c:?}: {e}", p.key)))?;
                }
            }
        }
        if self.channels.len() > ROOT_CHANNELS_MAX {
            return Err(invalid(format!(
                "at most {ROOT_CHANNELS_MAX} channel rules, not {}",
                self.channels.len()
            )));
        }
        let names: Vec<&String> = self.channels.iter().map(|c| &c.channel).collect();
        if !sorted_distinct(&names) {
            return Err(invalid(
                "channel rules must be sorted by channel and distinct",
            ));
        }
        for rule in &self.channels {
            validate_channel(&rule.channel)
                .map_err(|e| invalid(format!("channel rule {:?}: {e}", rule.channel)))?;
            let able = self
                .publishers
                .iter()
                .filter(|p| p.covers(&rule.channel))
                .count();
            if rule.threshold == 0 || usize::from(rule.threshold) > able {
                return Err(invalid(format!(
                    "channel {} has threshold {} but {able} publisher(s) may sign it",
                    rule.channel, rule.threshold
                )));
            }
            if rule
                .expires_at_ms
                .is_some_and(|e| e <= self.created_at_ms || e > TIME_MS_MAX)
            {
                return Err(invalid(format!(
                    "channel {} expiry must be after the document's creation and within year 9999",
                    rule.channel
                )));
            }
        }
        Ok(())
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        // Cannot fail: integers, arrays, strings and sequences serialise into a Vec.
        postcard::to_allocvec(self).expect("postcard encoding of a RootDocument into a Vec")
    }

    /// Decodes `bytes`, accepting only the canonical encoding of a valid document. The format
    /// version is read first, so a document of another format is refused by name.
    pub fn decode_canonical(bytes: &[u8]) -> Result<RootDocument, RootError> {
        if bytes.len() > ROOT_DOC_BYTES_MAX {
            return Err(RootError::TooLarge {
                len: bytes.len(),
                max: ROOT_DOC_BYTES_MAX,
            });
        }
        let (version, _) = postcard::take_from_bytes::<u16>(bytes).map_err(RootError::Decode)?;
        if version != ROOT_FORMAT_VERSION {
            return Err(RootError::UnsupportedFormat { version });
        }
        let (doc, rest) =
            postcard::take_from_bytes::<RootDocument>(bytes).map_err(RootError::Decode)?;
        if !rest.is_empty() {
            return Err(RootError::TrailingBytes { count: rest.len() });
        }
        doc.validate()?;
        if doc.encode() != bytes {
            return Err(RootError::NotCanonical);
        }
        Ok(doc)
    }

    /// The rule of `channel`: its threshold (1 without a rule) and expiry.
    pub fn rule(&self, channel: &str) -> (u8, Option<u64>) {
        self.channels
            .iter()
            .find(|r| r.channel == channel)
            .map_or((1, None), |r| (r.threshold, r.expires_at_ms))
    }
}

/// One signature on a root document or a manifest: the key and its ed25519 signature, which
/// postcard sees as two 32-byte halves (serde implements arrays up to 32 elements).
pub(crate) type WireSig = (PublisherKey, ([u8; 32], [u8; 32]));

pub(crate) fn to_wire(sigs: &[(PublisherKey, [u8; 64])]) -> Vec<WireSig> {
    sigs.iter()
        .map(|(k, s)| {
            let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
            a.copy_from_slice(&s[..32]);
            b.copy_from_slice(&s[32..]);
            (*k, (a, b))
        })
        .collect()
}

pub(crate) fn from_wire(sigs: Vec<WireSig>) -> Vec<(PublisherKey, [u8; 64])> {
    sigs.into_iter()
        .map(|(k, (a, b))| {
            let mut s = [0u8; 64];
            s[..32].copy_from_slice(&a);
            s[32..].copy_from_slice(&b);
            (k, s)
        })
        .collect()
}

/// Whether `sig` by `key` verifies strictly over `tag ‖ message`.
pub(crate) fn verifies(key: &PublisherKey, tag: &[u8], message: &[u8], sig: &[u8; 64]) -> bool {
    let Ok(vk) = VerifyingKey::from_bytes(key.as_bytes()) else {
        return false;
    };
    let mut msg = Vec::with_capacity(tag.len() + message.len());
    msg.extend_from_slice(tag);
    msg.extend_from_slice(message);
    vk.verify_strict(&msg, &Signature::from_bytes(sig)).is_ok()
}

/// A root document with the signatures collected on it so far.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRoot {
    doc_bytes: Vec<u8>,
    doc: RootDocument,
    signatures: Vec<(PublisherKey, [u8; 64])>,
}

impl fmt::Debug for SignedRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRoot")
            .field("version", &self.doc.version)
            .field("signers", &self.signers().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SignedRoot {
    /// An unsigned root of a valid document.
    pub fn new(doc: RootDocument) -> Result<SignedRoot, RootError> {
        doc.validate()?;
        Ok(SignedRoot {
            doc_bytes: doc.encode(),
            doc,
            signatures: Vec::new(),
        })
    }

    /// Adds the signature of `secret` (kept sorted by key). Refuses a key that signed already.
    pub fn sign(&mut self, secret: &PublisherSecret) -> Result<(), RootError> {
        let key = secret.public();
        let at = match self.signatures.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(_) => {
                return Err(RootError::Signing(format!(
                    "{key} already signed root version {}",
                    self.doc.version
                )));
            }
            Err(at) => at,
        };
        if self.signatures.len() >= 2 * ROOT_KEYS_MAX {
            return Err(RootError::Signing(format!(
                "a root carries at most {} signatures",
                2 * ROOT_KEYS_MAX
            )));
        }
        let mut msg = ROOT_DOMAIN_TAG.to_vec();
        msg.extend_from_slice(&self.doc_bytes);
        self.signatures.insert(at, (key, secret.sign(&msg)));
        Ok(())
    }

    /// The document.
    pub fn document(&self) -> &RootDocument {
        &self.doc
    }

    /// The document's version.
    pub fn version(&self) -> u64 {
        self.doc.version
    }

    /// The keys that signed (signatures not checked).
    pub fn signers(&self) -> impl Iterator<Item = &PublisherKey> {
        self.signatures.iter().map(|(k, _)| k)
    }

    /// The canonical encoding: postcard `(document bytes, [(key, signature)])`.
    pub fn encode(&self) -> Vec<u8> {
        let wire = (serde_bytes_ref(&self.doc_bytes), to_wire(&self.signatures));
        // Cannot fail: a byte string and a sequence of fixed arrays serialise into a Vec.
        postcard::to_allocvec(&wire).expect("postcard encoding of a SignedRoot")
    }

    /// Decodes the encoding of [`SignedRoot::encode`]; the document must be canonical and valid,
    /// the signatures sorted by key and distinct (not checked: see the `verify_*` methods).
    pub fn decode(bytes: &[u8]) -> Result<SignedRoot, RootError> {
        let max = ROOT_DOC_BYTES_MAX + 4 + 2 * ROOT_KEYS_MAX * 96;
        if bytes.len() > max {
            return Err(RootError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        let ((doc_bytes, sigs), rest) =
            postcard::take_from_bytes::<(&[u8], Vec<WireSig>)>(bytes).map_err(RootError::Decode)?;
        if !rest.is_empty() {
            return Err(RootError::TrailingBytes { count: rest.len() });
        }
        let doc = RootDocument::decode_canonical(doc_bytes)?;
        if sigs.len() > 2 * ROOT_KEYS_MAX {
            return Err(invalid("too many signatures"));
        }
        let signatures = from_wire(sigs);
        let keys: Vec<&PublisherKey> = signatures.iter().map(|(k, _)| k).collect();
        if !sorted_distinct(&keys) {
            return Err(invalid("signatures must be sorted by key and distinct"));
        }
        let root = SignedRoot {
            doc_bytes: doc_bytes.to_vec(),
            doc,
            signatures,
        };
        if root.encode() != bytes {
            return Err(RootError::NotCanonical);
        }
        Ok(root)
    }

    /// Checks every signature and counts the valid ones by `keys`. A signature that does not
    /// verify is an error even from a key that is not counted: it is damage or forgery.
    fn count_valid(&self, keys: &[PublisherKey]) -> Result<usize, RootError> {
        let mut valid = BTreeSet::new();
        for (key, sig) in &self.signatures {
            if !verifies(key, ROOT_DOMAIN_TAG, &self.doc_bytes, sig) {
                return Err(RootError::BadSignature {
                    key: *key,
                    version: self.doc.version,
                });
            }
            if keys.contains(key) {
                valid.insert(*key);
            }
        }
        Ok(valid.len())
    }

    /// A first root: signed by its own threshold of its own root keys.
    pub fn verify_self(&self) -> Result<(), RootError> {
        let valid = self.count_valid(&self.doc.root_keys)?;
        let needed = usize::from(self.doc.root_threshold);
        if valid < needed {
            return Err(RootError::BelowThreshold {
                version: self.doc.version,
                whose: "its own",
                valid,
                needed,
            });
        }
        Ok(())
    }

    /// Whether `next` may replace this root at `now_ms`: newer, signed by this root's threshold
    /// of this root's keys and by its own threshold of its own keys, and not expired.
    pub fn verify_successor(&self, next: &SignedRoot, now_ms: u64) -> Result<(), RootError> {
        if next.version() <= self.version() {
            return Err(RootError::NotNewer {
                offered: next.version(),
                current: self.version(),
            });
        }
        // Mutation point (INV-37): a root signed by one key fewer than the current threshold
        // is installed.
        let slack = usize::from(crate::mutants::active("root_threshold_minus_one"));
        let valid = next.count_valid(&self.doc.root_keys)?;
        let needed = usize::from(self.doc.root_threshold);
        if valid + slack < needed {
            return Err(RootError::BelowThreshold {
                version: next.version(),
                whose: "current",
                valid,
                needed,
            });
        }
        next.verify_self()?;
        if let Some(expires_at_ms) = next.doc.expires_at_ms {
            if expires_at_ms <= now_ms {
                return Err(RootError::Expired {
                    version: next.version(),
                    expires_at_ms,
                    now_ms,
                });
            }
        }
        Ok(())
    }
}

/// Serialises a byte slice as a postcard byte string (length varint + bytes).
pub(crate) struct BytesRef<'a>(pub(crate) &'a [u8]);

impl Serialize for BytesRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

fn serde_bytes_ref(b: &[u8]) -> BytesRef<'_> {
    BytesRef(b)
}

/// The payload of a segment of kind `root`: consecutive signed roots, oldest first, each
/// replacing the one before (the first replaces whatever the receiving node has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootChain(pub Vec<SignedRoot>);

impl RootChain {
    /// The encoding: a postcard sequence of byte strings, each a [`SignedRoot`] encoding.
    pub fn encode(&self) -> Vec<u8> {
        let parts: Vec<Vec<u8>> = self.0.iter().map(SignedRoot::encode).collect();
        let refs: Vec<BytesRef<'_>> = parts.iter().map(|p| BytesRef(p)).collect();
        // Cannot fail: byte strings serialise into a Vec.
        postcard::to_allocvec(&refs).expect("postcard encoding of a RootChain")
    }

    /// Decodes a chain: 1..=[`ROOT_CHAIN_MAX`] roots of strictly increasing versions.
    pub fn decode(bytes: &[u8]) -> Result<RootChain, RootError> {
        if bytes.len() as u64 > LIFECYCLE_PAYLOAD_BYTES_MAX {
            return Err(RootError::TooLarge {
                len: bytes.len(),
                max: LIFECYCLE_PAYLOAD_BYTES_MAX as usize,
            });
        }
        // The count is read first and bounded before the sequence is collected.
        let (count, _) = postcard::take_from_bytes::<u32>(bytes).map_err(RootError::Decode)?;
        if count == 0 || count as usize > ROOT_CHAIN_MAX {
            return Err(invalid(format!(
                "a root chain holds 1..={ROOT_CHAIN_MAX} roots, not {count}"
            )));
        }
        let (parts, rest) =
            postcard::take_from_bytes::<Vec<&[u8]>>(bytes).map_err(RootError::Decode)?;
        if !rest.is_empty() {
            return Err(RootError::TrailingBytes { count: rest.len() });
        }
        let roots = parts
            .into_iter()
            .map(SignedRoot::decode)
            .collect::<Result<Vec<_>, _>>()?;
        if !roots.windows(2).all(|w| w[0].version() < w[1].version()) {
            return Err(invalid(
                "the roots of a chain must have increasing versions",
            ));
        }
        let chain = RootChain(roots);
        if chain.encode() != bytes {
            return Err(RootError::NotCanonical);
        }
        Ok(chain)
    }

    /// The newest root of the chain.
    pub fn last(&self) -> Option<&SignedRoot> {
        self.0.last()
    }

    /// Walks the chain from `current`: roots not newer are skipped, each newer one must be a
    /// valid successor of the one before. Returns the newest root reached (`None`: nothing
    /// newer than `current`).
    pub fn advance(
        &self,
        current: &SignedRoot,
        now_ms: u64,
    ) -> Result<Option<SignedRoot>, RootError> {
        let mut at = current;
        for next in &self.0 {
            if next.version() <= at.version() {
                continue;
            }
            at.verify_successor(next, now_ms)?;
            at = next;
        }
        Ok((at.version() > current.version()).then(|| at.clone()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const NOW_MS: u64 = 1_700_000_000_000;

    pub(crate) fn key(seed: u8) -> PublisherSecret {
        PublisherSecret::from_seed([seed; 32])
    }

    /// A root of `version` whose root keys are `roots` (threshold `k`), every one of `pubs` on
    /// every channel, channel `rel` needing `rel_k` signatures.
    pub(crate) fn doc(version: u64, roots: &[u8], k: u8, pubs: &[u8], rel_k: u8) -> RootDocument {
        let mut root_keys: Vec<PublisherKey> = roots.iter().map(|s| key(*s).public()).collect();
        root_keys.sort();
        let mut publishers: Vec<PublisherGrant> = pubs
            .iter()
            .map(|s| PublisherGrant {
                key: key(*s).public(),
                channels: vec![ALL_CHANNELS.to_string()],
            })
            .collect();
        publishers.sort_by_key(|p| p.key);
        RootDocument {
            format_version: ROOT_FORMAT_VERSION,
            version,
            created_at_ms: NOW_MS,
            expires_at_ms: None,
            root_keys,
            root_threshold: k,
            publishers,
            channels: vec![ChannelRule {
                channel: "rel".into(),
                threshold: rel_k,
                expires_at_ms: None,
            }],
        }
    }

    pub(crate) fn signed(doc: RootDocument, by: &[u8]) -> SignedRoot {
        let mut r = SignedRoot::new(doc).unwrap();
        for s in by {
            r.sign(&key(*s)).unwrap();
        }
        r
    }

    #[test]
    fn round_trip_and_canonical() {
        let r = signed(doc(1, &[1, 2, 3], 2, &[10, 11], 2), &[1, 2]);
        let bytes = r.encode();
        assert_eq!(SignedRoot::decode(&bytes).unwrap(), r);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            SignedRoot::decode(&trailing),
            Err(RootError::TrailingBytes { .. })
        ));
        r.verify_self().unwrap();
    }

    #[test]
    fn unknown_format_is_refused_by_name() {
        let mut d = doc(1, &[1], 1, &[10], 1);
        d.format_version = 2;
        let bytes = postcard::to_allocvec(&d).unwrap();
        assert_eq!(
            RootDocument::decode_canonical(&bytes),
            Err(RootError::UnsupportedFormat { version: 2 })
        );
        assert!(
            RootError::UnsupportedFormat { version: 2 }
                .to_string()
                .contains("upgrade edged")
        );
    }

    #[test]
    fn invalid_documents_are_refused() {
        let unsat = doc(1, &[1], 2, &[10], 1);
        assert!(matches!(SignedRoot::new(unsat), Err(RootError::Invalid(_))));
        let rel_unsat = doc(1, &[1], 1, &[10], 2);
        assert!(matches!(
            SignedRoot::new(rel_unsat),
            Err(RootError::Invalid(_))
        ));
        let mut unsorted = doc(1, &[1, 2], 1, &[10], 1);
        unsorted.root_keys.reverse();
        assert!(matches!(
            SignedRoot::new(unsorted),
            Err(RootError::Invalid(_))
        ));
        let zero = doc(0, &[1], 1, &[10], 1);
        assert!(matches!(SignedRoot::new(zero), Err(RootError::Invalid(_))));
    }

    #[test]
    fn inv_37_successor_needs_current_threshold_k_minus_1_refused_k_accepted() {
        let v1 = signed(doc(1, &[1, 2, 3], 2, &[10], 1), &[1, 2]);
        // Version 2 rotates the root keys to 4, 5 (threshold 1 of its own).
        let next = doc(2, &[4, 5], 1, &[10], 1);
        let k_minus_1 = signed(next.clone(), &[1, 4]);
        assert_eq!(
            v1.verify_successor(&k_minus_1, NOW_MS),
            Err(RootError::BelowThreshold {
                version: 2,
                whose: "current",
                valid: 1,
                needed: 2
            })
        );
        let k = signed(next.clone(), &[1, 3, 4]);
        v1.verify_successor(&k, NOW_MS).unwrap();
        // Signed by the old keys only: its own keys never signed it.
        let old_only = signed(next, &[1, 2]);
        assert!(matches!(
            v1.verify_successor(&old_only, NOW_MS),
            Err(RootError::BelowThreshold {
                whose: "its own",
                ..
            })
        ));
    }

    #[test]
    fn inv_37_a_removed_key_cannot_sign_the_next_root() {
        let v1 = signed(doc(1, &[1, 2], 1, &[10], 1), &[1]);
        let v2 = signed(doc(2, &[2], 1, &[10], 1), &[1, 2]);
        v1.verify_successor(&v2, NOW_MS).unwrap();
        // Key 1 was removed by v2: alone it cannot make v3.
        let v3 = signed(doc(3, &[1], 1, &[10], 1), &[1]);
        assert!(matches!(
            v2.verify_successor(&v3, NOW_MS),
            Err(RootError::BelowThreshold {
                whose: "current",
                ..
            })
        ));
        // Not newer: refused by name.
        assert_eq!(
            v2.verify_successor(&v1, NOW_MS),
            Err(RootError::NotNewer {
                offered: 1,
                current: 2
            })
        );
    }

    #[test]
    fn a_forged_signature_is_refused_even_from_an_uncounted_key() {
        let v1 = signed(doc(1, &[1], 1, &[10], 1), &[1]);
        let mut v2 = signed(doc(2, &[1], 1, &[10], 1), &[1, 9]);
        v2.signatures[1].1[0] ^= 1;
        assert!(matches!(
            v1.verify_successor(&v2, NOW_MS),
            Err(RootError::BadSignature { .. })
        ));
    }

    #[test]
    fn chain_advances_step_by_step_and_skips_what_is_known() {
        let v1 = signed(doc(1, &[1], 1, &[10], 1), &[1]);
        let v2 = signed(doc(2, &[2], 1, &[10], 1), &[1, 2]);
        let v3 = signed(doc(3, &[3], 1, &[10], 1), &[2, 3]);
        let chain = RootChain(vec![v1.clone(), v2.clone(), v3.clone()]);
        let back = RootChain::decode(&chain.encode()).unwrap();
        assert_eq!(back, chain);
        assert_eq!(chain.advance(&v1, NOW_MS).unwrap(), Some(v3.clone()));
        assert_eq!(chain.advance(&v2, NOW_MS).unwrap(), Some(v3.clone()));
        assert_eq!(chain.advance(&v3, NOW_MS).unwrap(), None);
        // v3 alone cannot follow v1: v1's key never signed it.
        let gap = RootChain(vec![v3]);
        assert!(gap.advance(&v1, NOW_MS).is_err());
        let expired = {
            let mut d = doc(2, &[1], 1, &[10], 1);
            d.expires_at_ms = Some(NOW_MS + 1);
            signed(d, &[1])
        };
        assert!(matches!(
            v1.verify_successor(&expired, NOW_MS + 1),
            Err(RootError::Expired { .. })
        ));
    }

    #[test]
    fn chain_bounds() {
        let empty = postcard::to_allocvec::<Vec<&[u8]>>(&vec![]).unwrap();
        assert!(matches!(
            RootChain::decode(&empty),
            Err(RootError::Invalid(_))
        ));
        let v1 = signed(doc(1, &[1], 1, &[10], 1), &[1]);
        let too_many = RootChain(vec![v1; ROOT_CHAIN_MAX + 1]).encode();
        assert!(matches!(
            RootChain::decode(&too_many),
            Err(RootError::Invalid(_))
        ));
    }
}
