//! Shared helpers of the store's integration tests: publishers, signed segments, stores.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use store::fs::{Fs, RealFs};
use store::keys::{PublisherSecret, TrustedPublishers};
use store::limits::MANIFEST_FORMAT_VERSION;
use store::manifest::{Manifest, SignedManifest, SuccessCondition};
use store::{IngestOptions, IngestOutcome, Store, StoreConfig};

/// A fixed "now" for tests: 2026-01-01T00:00:00Z.
pub const NOW_MS: u64 = 1_767_225_600_000;

/// A publisher whose key is deterministic per `seed`, so failures replay.
pub fn publisher(seed: u8) -> PublisherSecret {
    PublisherSecret::from_seed([seed; 32])
}

pub fn trusting(secrets: &[&PublisherSecret]) -> TrustedPublishers {
    secrets.iter().map(|s| s.public()).collect()
}

/// A deterministic payload of `len` bytes, distinct per `tag`.
pub fn payload(tag: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Knobs of a test segment.
#[derive(Debug, Clone)]
pub struct SegSpec {
    pub name: String,
    pub channel: String,
    pub priority: u8,
    pub expires_at_ms: Option<u64>,
    pub condition: SuccessCondition,
    pub sequence: u64,
    pub created_at_ms: u64,
}

impl SegSpec {
    pub fn named(name: &str) -> Self {
        SegSpec {
            name: name.to_owned(),
            channel: "default".to_owned(),
            priority: 128,
            expires_at_ms: None,
            condition: SuccessCondition::AllPeers,
            sequence: 1,
            created_at_ms: NOW_MS - 1_000,
        }
    }
}

pub fn manifest_for(secret: &PublisherSecret, spec: &SegSpec, body: &[u8]) -> Manifest {
    Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        publisher: secret.public(),
        name: spec.name.clone(),
        channel: spec.channel.clone(),
        sequence: spec.sequence,
        created_at_ms: spec.created_at_ms,
        expires_at_ms: spec.expires_at_ms,
        condition: spec.condition,
        priority: spec.priority,
        payload_len: body.len() as u64,
        payload_hash: *blake3::hash(body).as_bytes(),
        kind: store::manifest::SegmentKind::Content,
    }
}

/// A signed segment and its `.seg` file bytes.
pub fn seg(secret: &PublisherSecret, spec: &SegSpec, body: &[u8]) -> (SignedManifest, Vec<u8>) {
    let signed = SignedManifest::sign(manifest_for(secret, spec, body), secret).expect("sign");
    let mut file = Vec::new();
    store::segfile::write_seg(&mut file, &signed, body).expect("write seg");
    (signed, file)
}

pub fn config(dir: &Path, ceiling_bytes: u64, trusted: TrustedPublishers) -> StoreConfig {
    let mut cfg = StoreConfig::new(dir, ceiling_bytes, trusted);
    // Tests run on whatever disk CI has: the floor is tested separately with the double.
    cfg.min_free_bytes = 0;
    cfg
}

pub fn open_real(cfg: StoreConfig) -> Store {
    let fs: Arc<dyn Fs> = Arc::new(RealFs);
    Store::open(cfg, fs, NOW_MS).expect("open store").0
}

/// Ingests `.seg` bytes as an import with no extra writes.
pub fn ingest(store: &Store, file: &[u8]) -> Result<IngestOutcome<()>, store::IngestError> {
    store.ingest_reader(file, &IngestOptions::import(), NOW_MS, |_, _| Ok(()))
}

/// Ingests and expects the segment to be stored now.
pub fn ingest_ok(store: &Store, file: &[u8]) -> store::SegmentId {
    match ingest(store, file).expect("ingest") {
        IngestOutcome::Stored(s) => s.id,
        other => panic!("expected a new segment, got {other:?}"),
    }
}

/// Every regular file under `dir`, recursively, sorted (what is really on disk).
pub fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let md = e.metadata().expect("metadata");
            if md.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), md.len()));
            }
        }
    }
    out.sort();
    out
}

/// Bytes of `.seg` files under `segments/`: what usage accounting must equal.
pub fn segment_bytes_on_disk(data_dir: &Path) -> u64 {
    files_under(&data_dir.join("segments"))
        .iter()
        .map(|(_, len)| len)
        .sum()
}

pub fn tmp_files(data_dir: &Path) -> Vec<std::path::PathBuf> {
    files_under(&data_dir.join("tmp"))
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// The whole `.seg` file of stored segment `id`, verified as it is read (`ctx` names the case in
/// a failure).
pub fn read_back(store: &Store, id: &store::SegmentId, ctx: &str) -> Vec<u8> {
    let reader = store
        .open_for_read(id, NOW_MS)
        .unwrap_or_else(|e| panic!("{ctx}: open_for_read {id}: {e}"));
    let mut out = Vec::new();
    reader
        .copy_to(&mut out, NOW_MS)
        .unwrap_or_else(|e| panic!("{ctx}: segment {id} does not verify: {e}"));
    out
}
