//! Signed test segments: deterministic publishers, payloads and `.seg` files.

use store::keys::{PublisherSecret, TrustedPublishers};
use store::limits::MANIFEST_FORMAT_VERSION;
use store::manifest::{Manifest, SignedManifest, SuccessCondition};
use store::{SegmentId, segfile};

/// A fixed "now" for tests: 2026-01-01T00:00:00Z.
pub const T0_MS: u64 = 1_767_225_600_000;

/// A publisher whose key is deterministic per `seed`, so runs replay.
#[derive(Debug)]
pub struct Publisher {
    secret: PublisherSecret,
}

/// Knobs of a test segment.
#[derive(Debug, Clone)]
pub struct SegSpec {
    pub name: String,
    pub condition: SuccessCondition,
    pub priority: u8,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub payload_len: usize,
    /// The publisher's sequence for this name (1 unless set).
    pub sequence: u64,
}

impl SegSpec {
    /// An `all_peers` segment of 1 KiB, priority 128, created a second before [`T0_MS`].
    pub fn named(name: &str) -> SegSpec {
        SegSpec {
            name: name.to_owned(),
            condition: SuccessCondition::AllPeers,
            priority: 128,
            created_at_ms: T0_MS - 1_000,
            expires_at_ms: None,
            payload_len: 1024,
            sequence: 1,
        }
    }

    pub fn sequence(mut self, sequence: u64) -> SegSpec {
        self.sequence = sequence;
        self
    }

    pub fn condition(mut self, condition: SuccessCondition) -> SegSpec {
        self.condition = condition;
        self
    }

    pub fn priority(mut self, priority: u8) -> SegSpec {
        self.priority = priority;
        self
    }

    pub fn payload_len(mut self, len: usize) -> SegSpec {
        self.payload_len = len;
        self
    }

    pub fn expires_at_ms(mut self, at: u64) -> SegSpec {
        self.expires_at_ms = Some(at);
        self
    }
}

/// A deterministic payload of `len` bytes, distinct per `tag`.
pub fn payload(tag: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = *blake3::hash(tag.as_bytes()).as_bytes();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = *blake3::hash(&block).as_bytes();
    }
    out.truncate(len);
    out
}

impl Publisher {
    pub fn from_seed(seed: u8) -> Publisher {
        Publisher {
            secret: PublisherSecret::from_seed([seed; 32]),
        }
    }

    /// The trusted set holding only this publisher.
    pub fn trusted(&self) -> TrustedPublishers {
        std::iter::once(self.secret.public()).collect()
    }

    /// A signed segment: its id and its `.seg` file bytes.
    pub fn segment(&self, spec: &SegSpec) -> (SegmentId, Vec<u8>) {
        // Another sequence of a name is another release: other bytes (the first keeps the
        // payload it always had, so seeded runs replay as before).
        let tag = match spec.sequence {
            1 => spec.name.clone(),
            n => format!("{}#{n}", spec.name),
        };
        let body = payload(&tag, spec.payload_len);
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            publisher: self.secret.public(),
            name: spec.name.clone(),
            channel: "default".to_owned(),
            sequence: spec.sequence,
            created_at_ms: spec.created_at_ms,
            expires_at_ms: spec.expires_at_ms,
            condition: spec.condition,
            priority: spec.priority,
            payload_len: body.len() as u64,
            payload_hash: *blake3::hash(&body).as_bytes(),
            kind: store::manifest::SegmentKind::Content,
        };
        // Test specs are valid by construction; a failure here is a bug in the test.
        let signed = SignedManifest::sign(manifest, &self.secret).expect("test manifest signs");
        let mut file = Vec::new();
        segfile::write_seg(&mut file, &signed, body.as_slice()).expect("write into a Vec");
        (signed.id(), file)
    }
}
