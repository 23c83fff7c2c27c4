//! What the network benchmarks share: settings from the environment, deterministic payloads,
//! signed segments seeded straight into a store.

use std::io::Read;
use std::sync::Arc;

use store::fs::{Fs, RealFs};
use store::keys::PublisherSecret;
use store::manifest::{Manifest, SignedManifest};
use store::{IngestOptions, SegmentId, Store, StoreConfig};

pub fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Deterministic payload bytes: byte `p` depends only on the tag and `p`, so any read sizes
/// (a hash pass, then an ingest behind a header) see the same bytes.
pub struct Gen {
    tag: u64,
    pos: u64,
    len: u64,
}

impl Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len - self.pos) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let p = self.pos + i as u64;
            let mut x = (p / 8)
                .wrapping_add(self.tag)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                | 1;
            x ^= x >> 29;
            *b = x.to_le_bytes()[(p % 8) as usize];
        }
        self.pos += n as u64;
        Ok(n)
    }
}

pub fn payload_gen(tag: u64, len: u64) -> Gen {
    Gen { tag, pos: 0, len }
}

pub fn seed(store: &Store, secret: &PublisherSecret, tag: u64, len: u64) -> SegmentId {
    let (_, hash) = store::segfile::hash_reader(payload_gen(tag, len)).unwrap();
    let m = Manifest::new(
        secret.public(),
        format!("bench-{tag}"),
        now_ms() - 60_000,
        len,
        hash,
    );
    let signed = SignedManifest::sign(m, secret).unwrap();
    let mut header = Vec::new();
    store::segfile::write_header(&mut header, &signed).unwrap();
    let reader = std::io::Cursor::new(header).chain(payload_gen(tag, len));
    match store
        .ingest_reader(reader, &IngestOptions::import(), now_ms(), |_, _| Ok(()))
        .unwrap()
    {
        store::IngestOutcome::Stored(s) => s.id,
        store::IngestOutcome::AlreadyHave { id, .. } => id,
    }
}

pub fn open_store(dir: &std::path::Path, secret: &PublisherSecret) -> Store {
    let mut cfg = StoreConfig::new(dir, 8 << 30, std::iter::once(secret.public()).collect());
    cfg.min_free_bytes = 0;
    let fs: Arc<dyn Fs> = Arc::new(RealFs);
    Store::open(cfg, fs, now_ms()).unwrap().0
}

/// Issues `name`'s certificate from the CA in `ca` into `pki` and loads it.
pub fn identity(ca: &std::path::Path, pki: &std::path::Path, name: &str) -> net::NodeIdentity {
    net::ca_issue(ca, &name.parse().unwrap(), pki, 30).unwrap();
    net::load_node_identity(
        &ca.join("ca.crt"),
        &pki.join(format!("{name}.crt")),
        &pki.join(format!("{name}.key")),
    )
    .unwrap()
}
