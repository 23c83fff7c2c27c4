//! Segment manifests: what a publisher signs, and how it is encoded, signed and verified.
//!
//! # Encoding
//!
//! A [`Manifest`] is encoded with postcard, fields in declaration order (varints for integers
//! wider than a byte, a length varint before strings, raw bytes for the 32-byte key and hash, a
//! 0/1 tag before the optional expiry, the variant index of the condition and of the kind).
//! Only the canonical encoding — the one [`Manifest::encode`] produces — is accepted by
//! [`Manifest::decode_canonical`]; overlong varints, trailing bytes and out-of-bound fields are
//! rejected. Hence a manifest has exactly one byte string and one [`SegmentId`] (blake3 of those
//! bytes).
//!
//! ## Format versions
//!
//! The first field, `format_version`, is read before anything else; a version this build does
//! not know is refused by name ([`ManifestError::UnsupportedFormatVersion`]).
//!
//! - **2** (written by this build): the fields of version 1 followed by `kind`
//!   ([`SegmentKind`]: 0 content, 1 recall, 2 root). A signed manifest is the postcard pair
//!   `(manifest_bytes: byte string, signatures: sequence of (key: 32 bytes, signature: 64
//!   bytes))`, 1..=[`SIGNATURES_MAX`] signatures sorted by key, distinct, one of them by the
//!   manifest's `publisher`.
//! - **1** (still read): no `kind` (content); a signed manifest is `(manifest_bytes, signature:
//!   64 bytes)`, the one signature by `publisher`.
//!
//! | bytes (format 2) | content |
//! |---|---|
//! | 1..=2 | varint length `n` of the manifest bytes, canonical (shortest form) |
//! | `n` | canonical manifest bytes |
//! | 1 | number of signatures `s` |
//! | `96 × s` | per signature: the key (32), then ed25519 over [`SIGNATURE_DOMAIN_TAG`] followed by the manifest bytes (64) |
//!
//! [`SignedManifest::decode`] re-encodes what it decoded and refuses anything but these exact
//! bytes (an overlong length varint included), so a signed manifest has one encoding too. Its
//! encoded length never exceeds [`SIGNED_MANIFEST_BYTES_MAX`] (≤ [`HEADER_BYTES_MAX`]). Adding
//! a signature ([`SignedManifest::add_signature`]) changes the header, never the id.
//!
//! ## Kinds
//!
//! - `content`: a payload for the fleet.
//! - `recall`: a payload listing segment ids of its channel to withdraw ([`crate::recall`]);
//!   signed like content of that channel.
//! - `root`: channel [`ROOT_CHANNEL`], payload a chain of root documents ([`crate::root`]),
//!   sequence the newest root's version. Its manifest signatures are checked for integrity only:
//!   the root documents inside carry the authority, checked before the segment is committed.
//!
//! Channels starting with [`RESERVED_CHANNEL_PREFIX`] are refused for any other kind.
//!
//! Times (`created_at_ms`, `expires_at_ms`) are at most [`TIME_MS_MAX`], the end of year 9999
//! UTC, so every valid manifest can be rendered as an RFC 3339 date.
//!
//! # Guarantees
//!
//! - Every decoder checks the input length against [`HEADER_BYTES_MAX`] before anything else,
//!   never allocates more than its input, and never panics on any input (INV-17).
//! - A [`SignedManifest`] value always holds a valid, canonical manifest whose id matches its
//!   bytes; whether its signatures verify and meet the channel's threshold of trusted keys is
//!   [`SignedManifest::verify`]'s job (INV-01, INV-36), and freshness too, with the configured
//!   clock skew (INV-16) and the root's and channel's expiry (INV-38).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::SegmentId;
use crate::keys::{PublisherKey, PublisherSecret, TrustedPublishers};
use crate::limits::{
    CHANNEL_BYTES_MAX, CHANNEL_DEFAULT, HEADER_BYTES_MAX, LIFECYCLE_PAYLOAD_BYTES_MAX,
    MANIFEST_FORMAT_V1, MANIFEST_FORMAT_VERSION, NAME_BYTES_MAX, PAYLOAD_BYTES_MAX,
    PRIORITY_DEFAULT, RESERVED_CHANNEL_PREFIX, ROOT_CHANNEL, SIGNATURE_DOMAIN_TAG, SIGNATURES_MAX,
    SIGNED_MANIFEST_BYTES_MAX, TIME_MS_MAX,
};
use crate::root::{BytesRef, WireSig, from_wire, to_wire, verifies};

/// Errors decoding, validating or signing a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The encoding is longer than [`HEADER_BYTES_MAX`]; it was not decoded.
    #[error("encoded manifest is {len} bytes, more than the {HEADER_BYTES_MAX} allowed")]
    TooLarge {
        /// Length of the input, in bytes.
        len: usize,
    },
    /// postcard could not decode the bytes (truncated, bad varint, bad tag, bad UTF-8…).
    #[error("malformed manifest encoding: {0}")]
    Decode(#[source] postcard::Error),
    /// Bytes follow a complete encoding.
    #[error("{count} trailing bytes after the manifest")]
    TrailingBytes {
        /// Number of bytes left over.
        count: usize,
    },
    /// The bytes decode but are not the canonical encoding of what they decode to.
    #[error("manifest encoding is not canonical")]
    NotCanonical,
    /// `format_version` is neither [`MANIFEST_FORMAT_VERSION`] nor [`MANIFEST_FORMAT_V1`].
    #[error(
        "unsupported manifest format version {version} (this build reads {MANIFEST_FORMAT_V1} and {MANIFEST_FORMAT_VERSION}): upgrade edged to read it"
    )]
    UnsupportedFormatVersion {
        /// The version found.
        version: u16,
    },
    /// The name is empty.
    #[error("segment name is empty")]
    NameEmpty,
    /// The name is longer than [`NAME_BYTES_MAX`] UTF-8 bytes.
    #[error("segment name is {len} bytes, more than the {NAME_BYTES_MAX} allowed")]
    NameTooLong {
        /// Length of the name, in bytes.
        len: usize,
    },
    /// The name contains a control character.
    #[error("segment name contains control character {ch:?} at byte {index}")]
    NameControlChar {
        /// Byte offset of the character.
        index: usize,
        /// The character.
        ch: char,
    },
    /// The channel is empty.
    #[error("channel is empty")]
    ChannelEmpty,
    /// The channel is longer than [`CHANNEL_BYTES_MAX`] bytes.
    #[error("channel is {len} bytes, more than the {CHANNEL_BYTES_MAX} allowed")]
    ChannelTooLong {
        /// Length of the channel, in bytes.
        len: usize,
    },
    /// The channel does not match `[a-z0-9][a-z0-9._-]*`.
    #[error("channel has invalid character {ch:?} at byte {index} (allowed: [a-z0-9][a-z0-9._-]*)")]
    ChannelInvalidChar {
        /// Byte offset of the character.
        index: usize,
        /// The character.
        ch: char,
    },
    /// `payload_len` is larger than [`PAYLOAD_BYTES_MAX`].
    #[error("payload length {len} exceeds the {PAYLOAD_BYTES_MAX} bytes allowed")]
    PayloadTooLarge {
        /// The declared payload length, in bytes.
        len: u64,
    },
    /// A time field is later than [`TIME_MS_MAX`] (the end of year 9999 UTC).
    #[error("{field} {ms} is later than {TIME_MS_MAX} (9999-12-31T23:59:59.999Z)")]
    TimeOutOfRange {
        /// The field: `created_at_ms` or `expires_at_ms`.
        field: &'static str,
        /// The value found, ms since the Unix epoch.
        ms: u64,
    },
    /// `expires_at_ms` is not after `created_at_ms`.
    #[error(
        "expires at {}, not after its creation at {}",
        crate::when::rfc3339(*expires_at_ms),
        crate::when::rfc3339(*created_at_ms)
    )]
    ExpiryNotAfterCreation {
        /// Creation time, ms since the Unix epoch.
        created_at_ms: u64,
        /// Expiry time, ms since the Unix epoch.
        expires_at_ms: u64,
    },
    /// `sign` was given a secret key that is not the manifest's publisher.
    #[error("manifest publisher {manifest} does not match the signing key {secret}")]
    PublisherMismatch {
        /// The publisher named in the manifest.
        manifest: PublisherKey,
        /// The public key of the secret used.
        secret: PublisherKey,
    },
    /// A format-1 manifest of a kind other than content (format 1 has no kind).
    #[error("a {kind} manifest needs format version {MANIFEST_FORMAT_VERSION}")]
    KindNeedsFormat2 {
        /// The kind.
        kind: SegmentKind,
    },
    /// The channel does not fit the kind: root segments live on [`ROOT_CHANNEL`] only, and
    /// other kinds may not use a channel starting with [`RESERVED_CHANNEL_PREFIX`].
    #[error(
        "a {kind} segment cannot use channel {channel:?} ({ROOT_CHANNEL} is for roots, {RESERVED_CHANNEL_PREFIX}* reserved)"
    )]
    ChannelForKind {
        /// The kind.
        kind: SegmentKind,
        /// The channel.
        channel: String,
    },
    /// A recall or root payload larger than [`LIFECYCLE_PAYLOAD_BYTES_MAX`].
    #[error("a {kind} payload of {len} bytes exceeds the {LIFECYCLE_PAYLOAD_BYTES_MAX} allowed")]
    LifecyclePayloadTooLarge {
        /// The kind.
        kind: SegmentKind,
        /// The declared payload length.
        len: u64,
    },
    /// The signature list breaks its rules (count, order, the publisher's own signature).
    #[error("invalid signature list: {0}")]
    Signatures(&'static str),
    /// `add_signature` was given a key that already signed.
    #[error("{key} already signed this manifest")]
    AlreadySigned {
        /// The key.
        key: PublisherKey,
    },
    /// A success condition other than `all_peers` or `one_peer`.
    #[error("unknown success condition {input:?} (expected all_peers or one_peer)")]
    UnknownCondition {
        /// The text given.
        input: String,
    },
}

/// Errors verifying a signed manifest against the trusted publishers and the clock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The publisher key is not among the trusted publishers.
    #[error("publisher {publisher} is not trusted")]
    UntrustedPublisher {
        /// The manifest's publisher.
        publisher: PublisherKey,
    },
    /// A signature does not verify (strictly) against its key.
    #[error("manifest signature does not verify")]
    BadSignature,
    /// Fewer distinct trusted keys signed than the channel needs.
    #[error(
        "channel {channel} needs {needed} signatures by trusted keys, the manifest has {valid}"
    )]
    BelowThreshold {
        /// The manifest's channel.
        channel: String,
        /// Distinct trusted keys that signed.
        valid: usize,
        /// The channel's threshold.
        needed: usize,
    },
    /// The root document in force expired: no new content until a newer root arrives.
    #[error(
        "the trust root (version {version}) expired at {}: this node takes no new content until a newer root is imported",
        crate::when::rfc3339_with_age(*expires_at_ms, *now_ms)
    )]
    RootExpired {
        /// The root's version.
        version: u64,
        /// Its expiry, ms since the Unix epoch.
        expires_at_ms: u64,
        /// The time checked against.
        now_ms: u64,
    },
    /// The channel's rule in the root document expired.
    #[error(
        "channel {channel} expired at {} by the trust root: its content is refused until a newer root extends it",
        crate::when::rfc3339_with_age(*expires_at_ms, *now_ms)
    )]
    ChannelExpired {
        /// The channel.
        channel: String,
        /// Its expiry, ms since the Unix epoch.
        expires_at_ms: u64,
        /// The time checked against.
        now_ms: u64,
    },
    /// The manifest expired, even allowing for the clock skew.
    #[error(
        "manifest expired at {}",
        crate::when::rfc3339_with_age(*expires_at_ms, *now_ms)
    )]
    Expired {
        /// Expiry time, ms since the Unix epoch.
        expires_at_ms: u64,
        /// The time checked against, ms since the Unix epoch.
        now_ms: u64,
    },
    /// The manifest was created in the future, even allowing for the clock skew.
    #[error(
        "manifest created at {}, in the future beyond the allowed clock skew: this node's clock or the publisher's is wrong",
        crate::when::rfc3339_with_age(*created_at_ms, *now_ms)
    )]
    CreatedInFuture {
        /// Creation time, ms since the Unix epoch.
        created_at_ms: u64,
        /// The time checked against, ms since the Unix epoch.
        now_ms: u64,
    },
}

impl VerifyError {
    /// Whether this says the signers are not trusted (enough) rather than that the bytes are
    /// damaged: a stored segment that fails so is not corrupt, and trusting its keys again makes
    /// it servable.
    pub fn is_trust(&self) -> bool {
        matches!(
            self,
            VerifyError::UntrustedPublisher { .. } | VerifyError::BelowThreshold { .. }
        )
    }
}

/// What a segment is for.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum SegmentKind {
    /// A payload for the fleet.
    #[default]
    Content,
    /// Withdraws segments of its channel ([`crate::recall`]).
    Recall,
    /// Carries trust root documents ([`crate::root`]).
    Root,
}

impl SegmentKind {
    /// Text form, as in the CLI and listings.
    pub fn as_str(&self) -> &'static str {
        match self {
            SegmentKind::Content => "content",
            SegmentKind::Recall => "recall",
            SegmentKind::Root => "root",
        }
    }
}

impl fmt::Display for SegmentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a segment counts as propagated.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum SuccessCondition {
    /// Every direct peer acknowledged it.
    #[default]
    AllPeers,
    /// At least one direct peer acknowledged it.
    OnePeer,
}

impl SuccessCondition {
    /// Text form, as in config files and the CLI.
    pub fn as_str(&self) -> &'static str {
        match self {
            SuccessCondition::AllPeers => "all_peers",
            SuccessCondition::OnePeer => "one_peer",
        }
    }
}

impl fmt::Display for SuccessCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SuccessCondition {
    type Err = ManifestError;

    fn from_str(s: &str) -> Result<Self, ManifestError> {
        match s {
            "all_peers" => Ok(SuccessCondition::AllPeers),
            "one_peer" => Ok(SuccessCondition::OnePeer),
            _ => Err(ManifestError::UnknownCondition {
                input: s.to_string(),
            }),
        }
    }
}

/// What a publisher signs about a segment. Field order is the encoding order: never reorder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT_VERSION`].
    pub format_version: u16,
    /// The key that signs this manifest.
    pub publisher: PublisherKey,
    /// Human-readable name: 1..=[`NAME_BYTES_MAX`] UTF-8 bytes, no control characters.
    pub name: String,
    /// Channel: 1..=[`CHANNEL_BYTES_MAX`] bytes of `[a-z0-9][a-z0-9._-]*`; default
    /// [`CHANNEL_DEFAULT`].
    pub channel: String,
    /// Publisher-chosen sequence number; recorded and shown.
    pub sequence: u64,
    /// Creation time, ms since the Unix epoch (UTC), at most [`TIME_MS_MAX`].
    pub created_at_ms: u64,
    /// Expiry time, ms since the Unix epoch (UTC); if present, after `created_at_ms` and at most
    /// [`TIME_MS_MAX`].
    pub expires_at_ms: Option<u64>,
    /// When the segment counts as propagated.
    pub condition: SuccessCondition,
    /// Higher is more important; orders sending and eviction. Default [`PRIORITY_DEFAULT`].
    pub priority: u8,
    /// Payload length in bytes, at most [`PAYLOAD_BYTES_MAX`].
    pub payload_len: u64,
    /// blake3 of the payload.
    pub payload_hash: [u8; 32],
    /// What the segment is for (format 2; always content in format 1).
    pub kind: SegmentKind,
}

/// The fields of a format-1 manifest, in their encoding order.
#[derive(Serialize, Deserialize)]
struct ManifestV1 {
    format_version: u16,
    publisher: PublisherKey,
    name: String,
    channel: String,
    sequence: u64,
    created_at_ms: u64,
    expires_at_ms: Option<u64>,
    condition: SuccessCondition,
    priority: u8,
    payload_len: u64,
    payload_hash: [u8; 32],
}

impl Manifest {
    /// A manifest with the defaults: current format version, channel [`CHANNEL_DEFAULT`],
    /// sequence 0, no expiry, [`SuccessCondition::AllPeers`], priority [`PRIORITY_DEFAULT`].
    pub fn new(
        publisher: PublisherKey,
        name: impl Into<String>,
        created_at_ms: u64,
        payload_len: u64,
        payload_hash: [u8; 32],
    ) -> Self {
        Self {
            format_version: MANIFEST_FORMAT_VERSION,
            publisher,
            name: name.into(),
            channel: CHANNEL_DEFAULT.to_string(),
            sequence: 0,
            created_at_ms,
            expires_at_ms: None,
            condition: SuccessCondition::AllPeers,
            priority: PRIORITY_DEFAULT,
            payload_len,
            payload_hash,
            kind: SegmentKind::Content,
        }
    }

    /// Checks every documented bound.
    pub fn validate(&self) -> Result<(), ManifestError> {
        match self.format_version {
            MANIFEST_FORMAT_VERSION => {}
            MANIFEST_FORMAT_V1 if self.kind == SegmentKind::Content => {}
            MANIFEST_FORMAT_V1 => {
                return Err(ManifestError::KindNeedsFormat2 { kind: self.kind });
            }
            version => return Err(ManifestError::UnsupportedFormatVersion { version }),
        }
        validate_name(&self.name)?;
        validate_channel(&self.channel)?;
        let reserved = self.channel.starts_with(RESERVED_CHANNEL_PREFIX);
        let fits = match self.kind {
            SegmentKind::Root => self.channel == ROOT_CHANNEL,
            SegmentKind::Content | SegmentKind::Recall => !reserved,
        };
        if !fits {
            return Err(ManifestError::ChannelForKind {
                kind: self.kind,
                channel: self.channel.clone(),
            });
        }
        if self.kind != SegmentKind::Content && self.payload_len > LIFECYCLE_PAYLOAD_BYTES_MAX {
            return Err(ManifestError::LifecyclePayloadTooLarge {
                kind: self.kind,
                len: self.payload_len,
            });
        }
        if self.payload_len > PAYLOAD_BYTES_MAX {
            return Err(ManifestError::PayloadTooLarge {
                len: self.payload_len,
            });
        }
        if self.created_at_ms > TIME_MS_MAX {
            return Err(ManifestError::TimeOutOfRange {
                field: "created_at_ms",
                ms: self.created_at_ms,
            });
        }
        if let Some(expires_at_ms) = self.expires_at_ms {
            if expires_at_ms > TIME_MS_MAX {
                return Err(ManifestError::TimeOutOfRange {
                    field: "expires_at_ms",
                    ms: expires_at_ms,
                });
            }
            if expires_at_ms <= self.created_at_ms {
                return Err(ManifestError::ExpiryNotAfterCreation {
                    created_at_ms: self.created_at_ms,
                    expires_at_ms,
                });
            }
        }
        Ok(())
    }

    /// Whether the manifest has expired at `now_ms` (no skew allowance).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|e| e <= now_ms)
    }

    /// The canonical encoding (postcard) of its format version.
    pub fn encode(&self) -> Vec<u8> {
        // Cannot fail: every field is a fixed-shape integer, array, string or option, which
        // postcard serialises into a growable Vec without error.
        if self.format_version == MANIFEST_FORMAT_V1 {
            let v1 = ManifestV1 {
                format_version: self.format_version,
                publisher: self.publisher,
                name: self.name.clone(),
                channel: self.channel.clone(),
                sequence: self.sequence,
                created_at_ms: self.created_at_ms,
                expires_at_ms: self.expires_at_ms,
                condition: self.condition,
                priority: self.priority,
                payload_len: self.payload_len,
                payload_hash: self.payload_hash,
            };
            return postcard::to_allocvec(&v1).expect("postcard encoding of a Manifest into a Vec");
        }
        postcard::to_allocvec(self).expect("postcard encoding of a Manifest into a Vec")
    }

    /// Decodes `bytes`, accepting only the canonical encoding of a valid manifest. The format
    /// version is read first: one this build does not know is refused by name.
    pub fn decode_canonical(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > HEADER_BYTES_MAX as usize {
            return Err(ManifestError::TooLarge { len: bytes.len() });
        }
        let (version, _) =
            postcard::take_from_bytes::<u16>(bytes).map_err(ManifestError::Decode)?;
        let (manifest, rest) = match version {
            MANIFEST_FORMAT_VERSION => {
                postcard::take_from_bytes::<Manifest>(bytes).map_err(ManifestError::Decode)?
            }
            MANIFEST_FORMAT_V1 => {
                let (v1, rest) = postcard::take_from_bytes::<ManifestV1>(bytes)
                    .map_err(ManifestError::Decode)?;
                let m = Manifest {
                    format_version: v1.format_version,
                    publisher: v1.publisher,
                    name: v1.name,
                    channel: v1.channel,
                    sequence: v1.sequence,
                    created_at_ms: v1.created_at_ms,
                    expires_at_ms: v1.expires_at_ms,
                    condition: v1.condition,
                    priority: v1.priority,
                    payload_len: v1.payload_len,
                    payload_hash: v1.payload_hash,
                    kind: SegmentKind::Content,
                };
                (m, rest)
            }
            version => return Err(ManifestError::UnsupportedFormatVersion { version }),
        };
        if !rest.is_empty() {
            return Err(ManifestError::TrailingBytes { count: rest.len() });
        }
        manifest.validate()?;
        if manifest.encode() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        Ok(manifest)
    }

    /// The segment id: blake3 of the canonical encoding.
    pub fn id(&self) -> SegmentId {
        SegmentId::of_manifest_bytes(&self.encode())
    }
}

fn validate_name(name: &str) -> Result<(), ManifestError> {
    if name.is_empty() {
        return Err(ManifestError::NameEmpty);
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(ManifestError::NameTooLong { len: name.len() });
    }
    if let Some((index, ch)) = name.char_indices().find(|(_, c)| c.is_control()) {
        return Err(ManifestError::NameControlChar { index, ch });
    }
    Ok(())
}

/// Checks a channel name against its bounds (`[a-z0-9][a-z0-9._-]*`, at most
/// [`CHANNEL_BYTES_MAX`] bytes); config files use it for channels they name.
pub fn validate_channel(channel: &str) -> Result<(), ManifestError> {
    if channel.is_empty() {
        return Err(ManifestError::ChannelEmpty);
    }
    if channel.len() > CHANNEL_BYTES_MAX {
        return Err(ManifestError::ChannelTooLong { len: channel.len() });
    }
    let allowed = |index: usize, c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || (index > 0 && matches!(c, '.' | '_' | '-'))
    };
    if let Some((index, ch)) = channel.char_indices().find(|&(i, c)| !allowed(i, c)) {
        return Err(ManifestError::ChannelInvalidChar { index, ch });
    }
    Ok(())
}

/// The signature as postcard sees it: serde implements arrays only up to 32 elements, and two
/// 32-byte arrays encode exactly as 64 raw bytes.
type WireSignature = ([u8; 32], [u8; 32]);

/// A canonical manifest with its id and its signatures.
///
/// Holding one proves the manifest is valid and canonical and the signature list well formed
/// (sorted by key, distinct, the publisher's among them), not that any signature verifies:
/// call [`SignedManifest::verify`].
#[derive(Clone, PartialEq, Eq)]
pub struct SignedManifest {
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
    id: SegmentId,
    /// Sorted by key, distinct, 1..=[`SIGNATURES_MAX`]; exactly one (the publisher's) in
    /// format 1.
    signatures: Vec<(PublisherKey, [u8; 64])>,
}

impl fmt::Debug for SignedManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedManifest")
            .field("id", &self.id)
            .field("manifest", &self.manifest)
            .field("signers", &self.signers().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SignedManifest {
    /// Validates `manifest` and signs it with `secret`, which must be its publisher.
    pub fn sign(manifest: Manifest, secret: &PublisherSecret) -> Result<Self, ManifestError> {
        manifest.validate()?;
        let public = secret.public();
        if manifest.publisher != public {
            return Err(ManifestError::PublisherMismatch {
                manifest: manifest.publisher,
                secret: public,
            });
        }
        let manifest_bytes = manifest.encode();
        let signature = secret.sign(&signed_message(&manifest_bytes));
        let signed = Self {
            id: SegmentId::of_manifest_bytes(&manifest_bytes),
            manifest_bytes,
            manifest,
            signatures: vec![(public, signature)],
        };
        debug_assert!(signed.encoded_len() <= SIGNED_MANIFEST_BYTES_MAX);
        Ok(signed)
    }

    /// Adds the signature of `secret` (a co-signer of a channel with a threshold). The id does
    /// not change; the header does. Format 2 only.
    pub fn add_signature(&mut self, secret: &PublisherSecret) -> Result<(), ManifestError> {
        if self.manifest.format_version == MANIFEST_FORMAT_V1 {
            return Err(ManifestError::Signatures(
                "a format-1 manifest carries one signature",
            ));
        }
        let key = secret.public();
        let at = match self.signatures.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(_) => return Err(ManifestError::AlreadySigned { key }),
            Err(at) => at,
        };
        if self.signatures.len() >= SIGNATURES_MAX {
            return Err(ManifestError::Signatures(
                "at most SIGNATURES_MAX signatures",
            ));
        }
        let sig = secret.sign(&signed_message(&self.manifest_bytes));
        self.signatures.insert(at, (key, sig));
        Ok(())
    }

    /// Decodes the wire/disk encoding of either format; the manifest inside must be canonical
    /// and valid.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > HEADER_BYTES_MAX as usize {
            return Err(ManifestError::TooLarge { len: bytes.len() });
        }
        let (manifest_bytes, rest) =
            postcard::take_from_bytes::<&[u8]>(bytes).map_err(ManifestError::Decode)?;
        let manifest = Manifest::decode_canonical(manifest_bytes)?;
        let (signatures, rest) = if manifest.format_version == MANIFEST_FORMAT_V1 {
            let (sig, rest) =
                postcard::take_from_bytes::<WireSignature>(rest).map_err(ManifestError::Decode)?;
            (from_wire(vec![(manifest.publisher, sig)]), rest)
        } else {
            // The count is read and bounded before the list is collected.
            let (count, _) =
                postcard::take_from_bytes::<u32>(rest).map_err(ManifestError::Decode)?;
            if count == 0 || count as usize > SIGNATURES_MAX {
                return Err(ManifestError::Signatures("1..=SIGNATURES_MAX signatures"));
            }
            let (sigs, rest) =
                postcard::take_from_bytes::<Vec<WireSig>>(rest).map_err(ManifestError::Decode)?;
            (from_wire(sigs), rest)
        };
        if !rest.is_empty() {
            return Err(ManifestError::TrailingBytes { count: rest.len() });
        }
        if !signatures.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(ManifestError::Signatures("sorted by key and distinct"));
        }
        if !signatures.iter().any(|(k, _)| *k == manifest.publisher) {
            return Err(ManifestError::Signatures("the publisher must sign"));
        }
        let signed = Self {
            id: SegmentId::of_manifest_bytes(manifest_bytes),
            manifest_bytes: manifest_bytes.to_vec(),
            manifest,
            signatures,
        };
        // postcard accepts an overlong length varint (`85 00` for 5): the outer encoding must be
        // canonical too, or one signed manifest would have two headers (and `.seg` files).
        if signed.encode() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        Ok(signed)
    }

    /// The wire/disk encoding of its format (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        // Cannot fail: byte strings and fixed arrays serialise into a growable Vec.
        let out = if self.manifest.format_version == MANIFEST_FORMAT_V1 {
            let (_, sig) = to_wire(&self.signatures[..1]).remove(0);
            postcard::to_allocvec(&(BytesRef(&self.manifest_bytes), sig))
        } else {
            postcard::to_allocvec(&(BytesRef(&self.manifest_bytes), to_wire(&self.signatures)))
        }
        .expect("postcard encoding of a SignedManifest");
        debug_assert_eq!(out.len(), self.encoded_len());
        out
    }

    /// Length of [`SignedManifest::encode`]'s output (the `.seg` header length).
    pub fn encoded_len(&self) -> usize {
        let n = self.manifest_bytes.len();
        let varint_len = if n < 1 << 7 { 1 } else { 2 };
        debug_assert!(n < 1 << 14);
        if self.manifest.format_version == MANIFEST_FORMAT_V1 {
            varint_len + n + 64
        } else {
            // SIGNATURES_MAX < 128: the count is one byte.
            varint_len + n + 1 + 96 * self.signatures.len()
        }
    }

    /// The decoded manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The canonical manifest bytes that were signed and hashed into the id.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The segment id.
    pub fn id(&self) -> SegmentId {
        self.id
    }

    /// The publisher's ed25519 signature.
    pub fn signature(&self) -> &[u8; 64] {
        let (_, sig) = self
            .signatures
            .iter()
            .find(|(k, _)| *k == self.manifest.publisher)
            // Decoding and signing both require the publisher's signature in the list.
            .expect("a signed manifest holds its publisher's signature");
        sig
    }

    /// The keys that signed (signatures not checked), sorted.
    pub fn signers(&self) -> impl Iterator<Item = &PublisherKey> {
        self.signatures.iter().map(|(k, _)| k)
    }

    /// Checks, in order: the signatures verify and meet the channel's threshold of trusted keys
    /// ([`SignedManifest::verify_signature`]); the manifest has not expired (`expires_at_ms +
    /// skew <= now_ms` is expired) and was not created in the future (`created_at_ms > now_ms +
    /// skew`); the root in force and the channel's rule have not expired (content and recalls).
    pub fn verify(
        &self,
        trusted: &TrustedPublishers,
        now_ms: u64,
        clock_skew_ms: u64,
    ) -> Result<(), VerifyError> {
        self.verify_signature(trusted)?;
        let m = &self.manifest;
        if let Some(expires_at_ms) = m.expires_at_ms {
            // Mutation point (INV-16): an expired segment is accepted.
            if expires_at_ms.saturating_add(clock_skew_ms) <= now_ms
                && !crate::mutants::active("accept_expired")
            {
                return Err(VerifyError::Expired {
                    expires_at_ms,
                    now_ms,
                });
            }
        }
        if m.created_at_ms > now_ms.saturating_add(clock_skew_ms) {
            return Err(VerifyError::CreatedInFuture {
                created_at_ms: m.created_at_ms,
                now_ms,
            });
        }
        if m.kind != SegmentKind::Root {
            trusted.check_fresh(&m.channel, now_ms, clock_skew_ms)?;
        }
        Ok(())
    }

    /// Checks that every signature verifies strictly and that enough distinct keys trusted for
    /// the channel signed, without any freshness check: what a stored segment must pass each
    /// time it is read (an expired segment already stored is still served until it is evicted).
    /// A root segment's signatures are checked for integrity only: its payload carries the
    /// authority and is checked before it is committed.
    pub fn verify_signature(&self, trusted: &TrustedPublishers) -> Result<(), VerifyError> {
        let m = &self.manifest;
        if m.kind != SegmentKind::Root && !self.signers().any(|k| trusted.contains(k)) {
            // Nothing here is trusted: said before any curve arithmetic is spent on it.
            return Err(VerifyError::UntrustedPublisher {
                publisher: m.publisher,
            });
        }
        for (key, sig) in &self.signatures {
            if !verifies(key, SIGNATURE_DOMAIN_TAG, &self.manifest_bytes, sig) {
                return Err(VerifyError::BadSignature);
            }
        }
        if m.kind == SegmentKind::Root {
            return Ok(());
        }
        trusted.check_signers(&m.channel, &m.publisher, self.signers())
    }
}

/// The message a publisher signs: the domain tag, then the manifest bytes.
fn signed_message(manifest_bytes: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNATURE_DOMAIN_TAG.len() + manifest_bytes.len());
    msg.extend_from_slice(SIGNATURE_DOMAIN_TAG);
    msg.extend_from_slice(manifest_bytes);
    msg
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::limits::MANIFEST_BYTES_MAX;

    pub(crate) const NOW_MS: u64 = 1_700_000_000_000;

    pub(crate) fn secret() -> PublisherSecret {
        PublisherSecret::from_seed([42; 32])
    }

    pub(crate) fn manifest_for(secret: &PublisherSecret, payload: &[u8]) -> Manifest {
        Manifest::new(
            secret.public(),
            "policy-bundle.tar",
            NOW_MS,
            payload.len() as u64,
            *blake3::hash(payload).as_bytes(),
        )
    }

    pub(crate) fn trusted(secret: &PublisherSecret) -> TrustedPublishers {
        [secret.public()].into_iter().collect()
    }

    fn sample() -> Manifest {
        let mut m = manifest_for(&secret(), b"hello");
        m.channel = "ops.policy-v2_x".into();
        m.sequence = 300;
        m.expires_at_ms = Some(NOW_MS + 1000);
        m.condition = SuccessCondition::OnePeer;
        m.priority = 200;
        m
    }

    fn maximal() -> Manifest {
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            publisher: secret().public(),
            name: "n".repeat(NAME_BYTES_MAX),
            channel: "c".repeat(CHANNEL_BYTES_MAX),
            sequence: u64::MAX,
            created_at_ms: TIME_MS_MAX - 1,
            expires_at_ms: Some(TIME_MS_MAX),
            condition: SuccessCondition::OnePeer,
            priority: u8::MAX,
            payload_len: PAYLOAD_BYTES_MAX,
            payload_hash: [0xff; 32],
            kind: SegmentKind::Content,
        }
    }

    #[test]
    fn manifest_round_trip() {
        for m in [sample(), maximal(), manifest_for(&secret(), b"")] {
            let bytes = m.encode();
            assert_eq!(Manifest::decode_canonical(&bytes), Ok(m.clone()));
            assert_eq!(m.id(), SegmentId::of_manifest_bytes(&bytes));
        }
    }

    #[test]
    fn maximal_manifest_within_declared_bound() {
        let m = maximal();
        m.validate().unwrap();
        assert!(
            m.encode().len() <= MANIFEST_BYTES_MAX,
            "{}",
            m.encode().len()
        );
        let signed = SignedManifest::sign(m, &secret()).unwrap();
        assert!(signed.encoded_len() <= SIGNED_MANIFEST_BYTES_MAX);
        assert_eq!(signed.encode().len(), signed.encoded_len());
    }

    #[test]
    fn id_is_stable() {
        // Pinned: changing the encoding changes every id; this test makes that loud.
        let m = sample();
        assert_eq!(m.id(), sample().id());
        assert_eq!(m.id(), m.clone().id());
        let mut other = sample();
        other.sequence += 1;
        assert_ne!(m.id(), other.id());
        let signed = SignedManifest::sign(m.clone(), &secret()).unwrap();
        assert_eq!(signed.id(), m.id());
        assert_eq!(
            SignedManifest::decode(&signed.encode()).unwrap().id(),
            m.id()
        );
        assert_eq!(
            hex::encode(m.encode()),
            concat!(
                "01",
                "197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61",
                "11706f6c6963792d62756e646c652e746172",
                "0f6f70732e706f6c6963792d76325f78",
                "ac02",
                "80d095ffbc31",
                "01e8d795ffbc31",
                "01",
                "c8",
                "05",
                "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f",
                "00"
            )
            .replacen("01", "02", 1)
        );
    }

    #[test]
    fn format_1_is_still_read_with_its_pinned_id() {
        // A format-1 manifest (no kind, one bare signature) as older builds wrote it.
        let m = Manifest {
            format_version: MANIFEST_FORMAT_V1,
            ..sample()
        };
        assert_eq!(
            hex::encode(m.encode()),
            concat!(
                "01",
                "197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61",
                "11706f6c6963792d62756e646c652e746172",
                "0f6f70732e706f6c6963792d76325f78",
                "ac02",
                "80d095ffbc31",
                "01e8d795ffbc31",
                "01",
                "c8",
                "05",
                "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
            )
        );
        let signed = SignedManifest::sign(m.clone(), &secret()).unwrap();
        let bytes = signed.encode();
        let n = signed.manifest_bytes().len();
        assert_eq!(
            bytes.len(),
            1 + n + 64,
            "length, manifest, one bare signature"
        );
        assert_eq!(&bytes[1 + n..], signed.signature());
        let back = SignedManifest::decode(&bytes).unwrap();
        assert_eq!(back.manifest().kind, SegmentKind::Content);
        assert_eq!(back.id(), m.id());
        back.verify(&trusted(&secret()), NOW_MS, 0).unwrap();
        // Format 1 has no kind and one signature.
        let mut recall = m.clone();
        recall.kind = SegmentKind::Recall;
        assert_eq!(
            recall.validate(),
            Err(ManifestError::KindNeedsFormat2 {
                kind: SegmentKind::Recall
            })
        );
        let mut one = SignedManifest::sign(m, &secret()).unwrap();
        assert!(matches!(
            one.add_signature(&PublisherSecret::from_seed([7; 32])),
            Err(ManifestError::Signatures(_))
        ));
    }

    #[test]
    fn an_unknown_format_is_refused_by_name() {
        let mut bytes = sample().encode();
        bytes[0] = 3;
        assert_eq!(
            Manifest::decode_canonical(&bytes),
            Err(ManifestError::UnsupportedFormatVersion { version: 3 })
        );
        assert!(
            ManifestError::UnsupportedFormatVersion { version: 3 }
                .to_string()
                .contains("upgrade edged")
        );
    }

    #[test]
    fn co_signatures_keep_the_id_and_one_encoding() {
        let signed = SignedManifest::sign(sample(), &secret()).unwrap();
        let mut co = signed.clone();
        co.add_signature(&PublisherSecret::from_seed([7; 32]))
            .unwrap();
        co.add_signature(&PublisherSecret::from_seed([8; 32]))
            .unwrap();
        assert_eq!(co.id(), signed.id());
        assert_eq!(co.signers().count(), 3);
        assert!(matches!(
            co.add_signature(&PublisherSecret::from_seed([7; 32])),
            Err(ManifestError::AlreadySigned { .. })
        ));
        let back = SignedManifest::decode(&co.encode()).unwrap();
        assert_eq!(back, co);
        assert!(co.encoded_len() <= SIGNED_MANIFEST_BYTES_MAX);
        // Swapping two signature entries breaks the order: refused.
        let bytes = co.encode();
        let n = co.manifest_bytes().len();
        let at = 1 + n + 1;
        let mut swapped = bytes[..at].to_vec();
        swapped.extend_from_slice(&bytes[at + 96..at + 192]);
        swapped.extend_from_slice(&bytes[at..at + 96]);
        swapped.extend_from_slice(&bytes[at + 192..]);
        assert_eq!(
            SignedManifest::decode(&swapped),
            Err(ManifestError::Signatures("sorted by key and distinct"))
        );
        // Up to the bound, and not one more.
        let mut full = signed.clone();
        for seed in 100..100 + SIGNATURES_MAX as u8 - 1 {
            full.add_signature(&PublisherSecret::from_seed([seed; 32]))
                .unwrap();
        }
        assert_eq!(full.signers().count(), SIGNATURES_MAX);
        assert!(full.encoded_len() <= SIGNED_MANIFEST_BYTES_MAX);
        assert!(matches!(
            full.add_signature(&PublisherSecret::from_seed([99; 32])),
            Err(ManifestError::Signatures(_))
        ));
        SignedManifest::decode(&full.encode()).unwrap();
    }

    #[test]
    fn inv_36_a_channel_threshold_counts_distinct_trusted_signers() {
        use crate::root::tests::{doc, signed as signed_root};
        // Keys 10 and 11 on every channel; channel `rel` needs 2.
        let root = signed_root(doc(1, &[1], 1, &[10, 11], 2), &[1]);
        let t = TrustedPublishers::from_root(root);
        let (a, b) = (
            PublisherSecret::from_seed([10; 32]),
            PublisherSecret::from_seed([11; 32]),
        );
        let mut m = manifest_for(&a, b"x");
        m.channel = "rel".into();
        let mut one = SignedManifest::sign(m, &a).unwrap();
        assert!(matches!(
            one.verify(&t, NOW_MS, 0),
            Err(VerifyError::BelowThreshold {
                valid: 1,
                needed: 2,
                ..
            })
        ));
        // A stranger's signature does not count.
        one.add_signature(&PublisherSecret::from_seed([12; 32]))
            .unwrap();
        assert!(one.verify(&t, NOW_MS, 0).is_err());
        one.add_signature(&b).unwrap();
        one.verify(&t, NOW_MS, 0).unwrap();
        // A damaged co-signature is damage, even with the threshold met by the others.
        let mut bytes = one.encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let damaged = SignedManifest::decode(&bytes).unwrap();
        assert_eq!(
            damaged.verify(&t, NOW_MS, 0),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn kinds_live_on_their_channels() {
        let mut m = manifest_for(&secret(), b"x");
        m.kind = SegmentKind::Root;
        assert!(matches!(
            m.validate(),
            Err(ManifestError::ChannelForKind { .. })
        ));
        m.channel = ROOT_CHANNEL.into();
        m.validate().unwrap();
        m.kind = SegmentKind::Content;
        assert!(matches!(
            m.validate(),
            Err(ManifestError::ChannelForKind { .. })
        ));
        m.channel = "edged.other".into();
        assert!(m.validate().is_err());
        let mut r = manifest_for(&secret(), b"x");
        r.kind = SegmentKind::Recall;
        r.payload_len = LIFECYCLE_PAYLOAD_BYTES_MAX;
        r.validate().unwrap();
        r.payload_len += 1;
        assert!(matches!(
            r.validate(),
            Err(ManifestError::LifecyclePayloadTooLarge { .. })
        ));
    }

    #[test]
    fn condition_text_round_trip() {
        for c in [SuccessCondition::AllPeers, SuccessCondition::OnePeer] {
            assert_eq!(c.to_string().parse::<SuccessCondition>(), Ok(c));
        }
        assert_eq!("all_peers".parse(), Ok(SuccessCondition::AllPeers));
        assert_eq!("one_peer".parse(), Ok(SuccessCondition::OnePeer));
        assert!(matches!(
            "AllPeers".parse::<SuccessCondition>(),
            Err(ManifestError::UnknownCondition { .. })
        ));
    }

    #[test]
    fn defaults() {
        let m = manifest_for(&secret(), b"x");
        assert_eq!(m.channel, "default");
        assert_eq!(m.priority, 128);
        assert_eq!(m.condition, SuccessCondition::AllPeers);
        assert_eq!(m.format_version, MANIFEST_FORMAT_VERSION);
        m.validate().unwrap();
    }

    #[test]
    fn signed_manifest_round_trip() {
        let signed = SignedManifest::sign(sample(), &secret()).unwrap();
        let bytes = signed.encode();
        let back = SignedManifest::decode(&bytes).unwrap();
        assert_eq!(back, signed);
        assert_eq!(back.manifest(), &sample());
        assert_eq!(back.manifest_bytes(), sample().encode());
        back.verify(&trusted(&secret()), NOW_MS, 0).unwrap();
        // Layout: length varint, manifest bytes, signature count, then key and signature.
        let n = signed.manifest_bytes().len();
        assert_eq!(bytes[0] as usize, n);
        assert_eq!(&bytes[1..1 + n], signed.manifest_bytes());
        assert_eq!(bytes[1 + n], 1);
        assert_eq!(&bytes[2 + n..2 + n + 32], secret().public().as_bytes());
        assert_eq!(&bytes[2 + n + 32..], signed.signature());
    }

    #[test]
    fn sign_requires_matching_publisher() {
        let other = PublisherSecret::from_seed([9; 32]);
        assert!(matches!(
            SignedManifest::sign(sample(), &other),
            Err(ManifestError::PublisherMismatch { .. })
        ));
    }

    #[test]
    fn sign_validates() {
        let mut m = sample();
        m.name.clear();
        assert_eq!(
            SignedManifest::sign(m, &secret()),
            Err(ManifestError::NameEmpty)
        );
    }

    /// A format-2 signed manifest's encoding around `manifest_bytes`, with `signed`'s signatures.
    fn wire_of(manifest_bytes: &[u8], signed: &SignedManifest) -> Vec<u8> {
        postcard::to_allocvec(&(BytesRef(manifest_bytes), to_wire(&signed.signatures))).unwrap()
    }

    /// Encodes without validating, to feed invalid manifests to the decoder.
    fn raw(m: &Manifest) -> Vec<u8> {
        postcard::to_allocvec(m).unwrap()
    }

    fn check_bound(m: Manifest, want: Result<(), ManifestError>) {
        assert_eq!(m.validate(), want, "{m:?}");
        let decoded = Manifest::decode_canonical(&raw(&m));
        assert_eq!(decoded.map(|_| ()), want);
    }

    #[test]
    fn inv_17_name_bound_n_and_n_plus_1() {
        let with = |name: String| Manifest { name, ..sample() };
        check_bound(with("a".to_string()), Ok(()));
        check_bound(with("a".repeat(NAME_BYTES_MAX)), Ok(()));
        check_bound(
            with("a".repeat(NAME_BYTES_MAX + 1)),
            Err(ManifestError::NameTooLong {
                len: NAME_BYTES_MAX + 1,
            }),
        );
        // Bytes, not characters: 2-byte characters up to the bound, then one byte over.
        check_bound(with("é".repeat(NAME_BYTES_MAX / 2)), Ok(()));
        check_bound(
            with(format!("{}é", "a".repeat(NAME_BYTES_MAX - 1))),
            Err(ManifestError::NameTooLong {
                len: NAME_BYTES_MAX + 1,
            }),
        );
        check_bound(with(String::new()), Err(ManifestError::NameEmpty));
        check_bound(
            with("a\nb".to_string()),
            Err(ManifestError::NameControlChar { index: 1, ch: '\n' }),
        );
        check_bound(
            with("ab\u{7f}".to_string()),
            Err(ManifestError::NameControlChar {
                index: 2,
                ch: '\u{7f}',
            }),
        );
        check_bound(with("Übung 2024 / v1.tar.gz".to_string()), Ok(()));
    }

    #[test]
    fn inv_17_channel_bound_n_and_n_plus_1() {
        let with = |channel: String| Manifest {
            channel,
            ..sample()
        };
        check_bound(with("a".repeat(CHANNEL_BYTES_MAX)), Ok(()));
        check_bound(
            with("a".repeat(CHANNEL_BYTES_MAX + 1)),
            Err(ManifestError::ChannelTooLong {
                len: CHANNEL_BYTES_MAX + 1,
            }),
        );
        check_bound(with(String::new()), Err(ManifestError::ChannelEmpty));
        let cases = [
            ("0a.b_c-d", Ok(())),
            (".a", Err((0, '.'))),
            ("-a", Err((0, '-'))),
            ("_a", Err((0, '_'))),
            ("aB", Err((1, 'B'))),
            ("a b", Err((1, ' '))),
            ("a/b", Err((1, '/'))),
            ("aé", Err((1, 'é'))),
        ];
        for (channel, want) in cases {
            check_bound(
                with(channel.to_string()),
                want.map_err(|(index, ch)| ManifestError::ChannelInvalidChar { index, ch }),
            );
        }
    }

    #[test]
    fn inv_17_payload_len_bound_n_and_n_plus_1() {
        let with = |payload_len| Manifest {
            payload_len,
            ..sample()
        };
        check_bound(with(PAYLOAD_BYTES_MAX), Ok(()));
        check_bound(
            with(PAYLOAD_BYTES_MAX + 1),
            Err(ManifestError::PayloadTooLarge {
                len: PAYLOAD_BYTES_MAX + 1,
            }),
        );
    }

    #[test]
    fn inv_17_format_version_and_expiry_bounds() {
        check_bound(
            Manifest {
                format_version: MANIFEST_FORMAT_VERSION + 1,
                ..sample()
            },
            Err(ManifestError::UnsupportedFormatVersion {
                version: MANIFEST_FORMAT_VERSION + 1,
            }),
        );
        let with = |expires_at_ms| Manifest {
            expires_at_ms,
            ..sample()
        };
        check_bound(with(None), Ok(()));
        check_bound(with(Some(NOW_MS + 1)), Ok(()));
        check_bound(
            with(Some(NOW_MS)),
            Err(ManifestError::ExpiryNotAfterCreation {
                created_at_ms: NOW_MS,
                expires_at_ms: NOW_MS,
            }),
        );
    }

    #[test]
    fn inv_17_time_bound_n_and_n_plus_1() {
        let created = |created_at_ms| Manifest {
            created_at_ms,
            expires_at_ms: None,
            ..sample()
        };
        check_bound(created(TIME_MS_MAX), Ok(()));
        check_bound(
            created(TIME_MS_MAX + 1),
            Err(ManifestError::TimeOutOfRange {
                field: "created_at_ms",
                ms: TIME_MS_MAX + 1,
            }),
        );
        check_bound(
            created(u64::MAX),
            Err(ManifestError::TimeOutOfRange {
                field: "created_at_ms",
                ms: u64::MAX,
            }),
        );
        let expires = |expires_at_ms| Manifest {
            expires_at_ms: Some(expires_at_ms),
            ..sample()
        };
        check_bound(expires(TIME_MS_MAX), Ok(()));
        check_bound(
            expires(TIME_MS_MAX + 1),
            Err(ManifestError::TimeOutOfRange {
                field: "expires_at_ms",
                ms: TIME_MS_MAX + 1,
            }),
        );
        // No signature is needed to be refused: the decoder refuses an unsigned far-future time
        // inside a signed manifest's envelope before anyone looks at the signature.
        let far = created(u64::MAX - 1);
        let signed = SignedManifest::sign(sample(), &secret()).unwrap();
        let wire = wire_of(&raw(&far), &signed);
        assert_eq!(
            SignedManifest::decode(&wire),
            Err(ManifestError::TimeOutOfRange {
                field: "created_at_ms",
                ms: u64::MAX - 1,
            })
        );
    }

    #[test]
    fn inv_17_overlong_outer_length_varint_rejected() {
        let signed = SignedManifest::sign(sample(), &secret()).unwrap();
        let bytes = signed.encode();
        let n = signed.manifest_bytes().len();
        assert!(n < 0x80, "the sample's length fits one varint byte");
        assert_eq!(bytes[0] as usize, n);
        // The same length as two bytes: `n | 0x80, 0x00`.
        let mut overlong = vec![bytes[0] | 0x80, 0x00];
        overlong.extend_from_slice(&bytes[1..]);
        let ((inner, _), rest) =
            postcard::take_from_bytes::<(&[u8], Vec<WireSig>)>(&overlong).unwrap();
        assert!(rest.is_empty());
        assert_eq!(inner, signed.manifest_bytes(), "postcard itself accepts it");
        assert_eq!(
            SignedManifest::decode(&overlong),
            Err(ManifestError::NotCanonical)
        );
        // Three bytes, and a two-byte length near its bound: the same.
        let mut longer = vec![bytes[0] | 0x80, 0x80, 0x00];
        longer.extend_from_slice(&bytes[1..]);
        assert_eq!(
            SignedManifest::decode(&longer),
            Err(ManifestError::NotCanonical)
        );
        let long_name = Manifest {
            name: "n".repeat(NAME_BYTES_MAX),
            ..sample()
        };
        let signed = SignedManifest::sign(long_name, &secret()).unwrap();
        let bytes = signed.encode();
        assert!(signed.manifest_bytes().len() >= 0x80);
        assert_eq!(SignedManifest::decode(&bytes).as_ref(), Ok(&signed));
        let mut overlong = vec![bytes[0], bytes[1] | 0x80, 0x00];
        overlong.extend_from_slice(&bytes[2..]);
        assert_eq!(
            SignedManifest::decode(&overlong),
            Err(ManifestError::NotCanonical)
        );
    }

    #[test]
    fn inv_17_manifest_too_large_rejected() {
        let mut bytes = sample().encode();
        bytes.resize(HEADER_BYTES_MAX as usize + 1, 0);
        assert_eq!(
            Manifest::decode_canonical(&bytes),
            Err(ManifestError::TooLarge {
                len: HEADER_BYTES_MAX as usize + 1
            })
        );
        assert_eq!(
            SignedManifest::decode(&bytes),
            Err(ManifestError::TooLarge {
                len: HEADER_BYTES_MAX as usize + 1
            })
        );
        // At the bound the length is accepted and decoding proceeds (to its own error).
        bytes.truncate(HEADER_BYTES_MAX as usize);
        assert!(matches!(
            Manifest::decode_canonical(&bytes),
            Err(ManifestError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn inv_17_trailing_bytes_in_manifest_rejected() {
        let mut bytes = sample().encode();
        bytes.push(0);
        assert_eq!(
            Manifest::decode_canonical(&bytes),
            Err(ManifestError::TrailingBytes { count: 1 })
        );
        let mut signed = SignedManifest::sign(sample(), &secret()).unwrap().encode();
        signed.extend_from_slice(b"xy");
        assert_eq!(
            SignedManifest::decode(&signed),
            Err(ManifestError::TrailingBytes { count: 2 })
        );
    }

    #[test]
    fn inv_17_truncated_manifest_rejected() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    Manifest::decode_canonical(&bytes[..cut]),
                    Err(ManifestError::Decode(_))
                ),
                "cut at {cut}"
            );
        }
        let signed = SignedManifest::sign(sample(), &secret()).unwrap().encode();
        for cut in 0..signed.len() {
            assert!(SignedManifest::decode(&signed[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn inv_17_non_canonical_manifest_rejected() {
        let m = sample();
        let bytes = m.encode();
        // sample().sequence = 300 encodes as the varint ac 02; locate it after the channel.
        let seq_at = 1 + 32 + 1 + m.name.len() + 1 + m.channel.len();
        assert_eq!(&bytes[seq_at..seq_at + 2], &[0xac, 0x02]);
        // The overlong encoding ac 82 00 decodes to the same 300.
        let mut overlong = bytes[..seq_at].to_vec();
        overlong.extend_from_slice(&[0xac, 0x82, 0x00]);
        overlong.extend_from_slice(&bytes[seq_at + 2..]);
        let (decoded, rest) = postcard::take_from_bytes::<Manifest>(&overlong).unwrap();
        assert!(rest.is_empty());
        assert_eq!(decoded, m, "postcard itself accepts the overlong varint");
        assert_eq!(
            Manifest::decode_canonical(&overlong),
            Err(ManifestError::NotCanonical)
        );
        // Same for the format version (first byte: 02 -> 82 00).
        let mut overlong = vec![0x82, 0x00];
        overlong.extend_from_slice(&bytes[1..]);
        assert_eq!(
            Manifest::decode_canonical(&overlong),
            Err(ManifestError::NotCanonical)
        );
        // And inside a signed manifest: the signature covers the canonical bytes only.
        let signed = SignedManifest::sign(m, &secret()).unwrap();
        let wire = wire_of(&overlong, &signed);
        assert_eq!(
            SignedManifest::decode(&wire),
            Err(ManifestError::NotCanonical)
        );
    }

    #[test]
    fn inv_01_bad_signature_rejected() {
        let signed = SignedManifest::sign(sample(), &secret()).unwrap();
        let bytes = signed.encode();
        let trusted = trusted(&secret());
        // A flipped bit in the signature.
        for bit in [0, 7, 8 * 31, 8 * 32, 8 * 63 + 7] {
            let mut b = bytes.clone();
            let at = b.len() - 64 + bit / 8;
            b[at] ^= 1 << (bit % 8);
            let tampered = SignedManifest::decode(&b).unwrap();
            assert_eq!(
                tampered.verify(&trusted, NOW_MS, 0),
                Err(VerifyError::BadSignature),
                "bit {bit}"
            );
        }
        // A flipped bit in the manifest (still a valid, canonical manifest): the priority byte.
        let n = signed.manifest_bytes().len();
        let prio_at = 1 + n - 1 - 32 - 1 - 1;
        let mut b = bytes.clone();
        assert_eq!(b[prio_at], 200);
        b[prio_at] ^= 1;
        let tampered = SignedManifest::decode(&b).unwrap();
        assert_eq!(tampered.manifest().priority, 201);
        assert_ne!(tampered.id(), signed.id());
        assert_eq!(
            tampered.verify(&trusted, NOW_MS, 0),
            Err(VerifyError::BadSignature)
        );
        // A payload hash bit.
        let mut b = bytes.clone();
        b[1 + n - 2] ^= 0x80;
        let tampered = SignedManifest::decode(&b).unwrap();
        assert_eq!(
            tampered.verify(&trusted, NOW_MS, 0),
            Err(VerifyError::BadSignature)
        );
        // The untampered one verifies.
        signed.verify(&trusted, NOW_MS, 0).unwrap();
    }

    #[test]
    fn inv_01_signature_without_domain_tag_rejected() {
        // A signature over the bare manifest bytes (no domain tag) must not verify.
        let signed = SignedManifest::sign(sample(), &secret()).unwrap();
        let forged = SignedManifest {
            signatures: vec![(secret().public(), secret().sign(signed.manifest_bytes()))],
            ..signed
        };
        assert_eq!(
            forged.verify(&trusted(&secret()), NOW_MS, 0),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn inv_01_untrusted_publisher_rejected() {
        let other = PublisherSecret::from_seed([9; 32]);
        let m = Manifest {
            publisher: other.public(),
            ..sample()
        };
        let signed = SignedManifest::sign(m, &other).unwrap();
        assert_eq!(
            signed.verify(&trusted(&secret()), NOW_MS, 0),
            Err(VerifyError::UntrustedPublisher {
                publisher: other.public()
            })
        );
        assert_eq!(
            signed.verify(&TrustedPublishers::default(), NOW_MS, 0),
            Err(VerifyError::UntrustedPublisher {
                publisher: other.public()
            })
        );
        signed
            .verify(&[other.public()].into_iter().collect(), NOW_MS, 0)
            .unwrap();
    }

    #[test]
    fn inv_01_invalid_publisher_point_rejected() {
        // A manifest naming a key that is not a curve point, trusted by mistake, never verifies.
        let signed = SignedManifest::sign(sample(), &secret()).unwrap();
        let mut bogus = [0u8; 32];
        bogus[0] = 2;
        let m = Manifest {
            publisher: PublisherKey::from_bytes(bogus),
            ..sample()
        };
        let forged = SignedManifest {
            manifest_bytes: m.encode(),
            id: m.id(),
            manifest: m,
            signatures: vec![(PublisherKey::from_bytes(bogus), *signed.signature())],
        };
        let trusted: TrustedPublishers = [PublisherKey::from_bytes(bogus)].into_iter().collect();
        assert_eq!(
            forged.verify(&trusted, NOW_MS, 0),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn inv_16_expired_manifest_rejected() {
        let signed = SignedManifest::sign(sample(), &secret()).unwrap();
        let t = trusted(&secret());
        let expires = NOW_MS + 1000;
        // (now, skew, expected)
        let cases = [
            (expires - 1, 0, Ok(())),
            (
                expires,
                0,
                Err(VerifyError::Expired {
                    expires_at_ms: expires,
                    now_ms: expires,
                }),
            ),
            // Within the skew: accepted.
            (expires, 1, Ok(())),
            (expires + 499, 500, Ok(())),
            (
                expires + 500,
                500,
                Err(VerifyError::Expired {
                    expires_at_ms: expires,
                    now_ms: expires + 500,
                }),
            ),
            // A huge skew saturates instead of overflowing.
            (expires + 10, u64::MAX, Ok(())),
        ];
        for (now, skew, want) in cases {
            assert_eq!(signed.verify(&t, now, skew), want, "now {now} skew {skew}");
        }
        assert!(!signed.manifest().is_expired(expires - 1));
        assert!(signed.manifest().is_expired(expires));
        assert!(!manifest_for(&secret(), b"").is_expired(u64::MAX));
    }

    #[test]
    fn inv_16_created_in_future_rejected() {
        let signed = SignedManifest::sign(sample(), &secret()).unwrap();
        let t = trusted(&secret());
        assert_eq!(signed.verify(&t, NOW_MS, 0), Ok(()));
        assert_eq!(
            signed.verify(&t, NOW_MS - 1, 0),
            Err(VerifyError::CreatedInFuture {
                created_at_ms: NOW_MS,
                now_ms: NOW_MS - 1
            })
        );
        assert_eq!(signed.verify(&t, NOW_MS - 100, 100), Ok(()));
        assert!(signed.verify(&t, NOW_MS - 101, 100).is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        prop_compose! {
            fn valid_manifest()(
                seed in any::<u8>(),
                name in "[^\\p{Cc}]{1,60}",
                channel in "[a-z0-9][a-z0-9._-]{0,63}",
                sequence in any::<u64>(),
                created_at_ms in 0..TIME_MS_MAX,
                expiry in proptest::option::of(any::<u64>()),
                one_peer in any::<bool>(),
                priority in any::<u8>(),
                payload_len in 0..=PAYLOAD_BYTES_MAX,
                payload_hash in any::<[u8; 32]>(),
            ) -> Manifest {
                Manifest {
                    format_version: MANIFEST_FORMAT_VERSION,
                    publisher: PublisherSecret::from_seed([seed; 32]).public(),
                    name,
                    channel,
                    sequence,
                    created_at_ms,
                    // Map any u64 into (created_at_ms, TIME_MS_MAX].
                    expires_at_ms: expiry.map(|e| created_at_ms + 1 + e % (TIME_MS_MAX - created_at_ms)),
                    condition: if one_peer { SuccessCondition::OnePeer } else { SuccessCondition::AllPeers },
                    priority,
                    payload_len,
                    payload_hash,
                    kind: SegmentKind::Content,
                }
            }
        }

        proptest! {
            #[test]
            fn valid_manifests_round_trip_with_stable_id(m in valid_manifest()) {
                prop_assert_eq!(m.validate(), Ok(()));
                let bytes = m.encode();
                prop_assert!(bytes.len() <= MANIFEST_BYTES_MAX);
                let back = Manifest::decode_canonical(&bytes).unwrap();
                prop_assert_eq!(&back, &m);
                prop_assert_eq!(back.encode(), bytes.clone());
                prop_assert_eq!(back.id(), m.id());
                prop_assert_eq!(m.id(), SegmentId::of_manifest_bytes(&bytes));
            }

            #[test]
            fn signed_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = SignedManifest::decode(&bytes);
                let _ = Manifest::decode_canonical(&bytes);
            }

            #[test]
            fn mutated_signed_manifest_never_panics_nor_verifies(
                edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                cut in any::<prop::sample::Index>(),
            ) {
                let signed = SignedManifest::sign(sample(), &secret()).unwrap();
                let mut bytes = signed.encode();
                for (at, v) in &edits {
                    let i = at.index(bytes.len());
                    bytes[i] = *v;
                }
                let changed = bytes != signed.encode();
                bytes.truncate(bytes.len() - cut.index(4));
                let shortened = bytes.len() < signed.encoded_len();
                if let Ok(decoded) = SignedManifest::decode(&bytes) {
                    let verified = decoded.verify(&trusted(&secret()), NOW_MS, 0).is_ok();
                    prop_assert_eq!(verified, !changed && !shortened);
                }
            }
        }
    }
}
