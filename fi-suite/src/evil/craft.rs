//! The segments an evil peer offers: genuine ones, signed with the fleet's own publisher key
//! (for the lies told in the payload, and for slowloris), and lies told in the manifest — a
//! signature that does not verify, a publisher the fleet does not trust, a manifest changed
//! after it was signed, and manifests that do not decode at all.
//!
//! Every lie is made from a real signed manifest with `store`'s own code, so it differs from
//! an honest one exactly where it says it does; the unit tests check each against `store`'s
//! verifier.

use std::path::Path;

use rand::{Rng, RngCore};
use store::SegmentId;
use store::keys::PublisherSecret;
use store::manifest::{Manifest, ManifestError, SignedManifest};

/// Bytes of an ed25519 signature at the end of an encoded signed manifest.
pub const SIGNATURE_BYTES: usize = 64;
/// The channel every crafted segment is published on (the fleet's segments use it too).
pub const CHANNEL: &str = "fi";
/// Length of the garbage manifests offered.
pub const GARBAGE_MANIFEST_BYTES: usize = 200;
/// An encoded manifest longer than any header may be (the decoder must refuse it by its
/// length, before reading it), yet within one frame.
pub const OVERSIZED_MANIFEST_BYTES: usize = store::limits::HEADER_BYTES_MAX as usize + 1;

/// What went wrong crafting a segment (a programming error of the suite, or a key file).
#[derive(Debug, thiserror::Error)]
pub enum CraftError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Key(#[from] store::keys::KeyError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("a changed manifest must keep its length to reuse the signature")]
    LengthChanged,
}

/// A segment as the evil peer offers it.
#[derive(Debug, Clone)]
pub struct Crafted {
    /// What it is (`bad_signature`, `genuine`, …).
    pub label: &'static str,
    /// The encoded signed manifest, as it goes into `Offer`.
    pub manifest: Vec<u8>,
    /// Its id as the victim computes it (blake3 of the manifest bytes inside).
    pub id: SegmentId,
    /// The payload that goes with it.
    pub payload: Vec<u8>,
}

impl Crafted {
    /// What a sender streams after `Want(offset)`: the payload's outboard (empty up to one
    /// group), then the payload from `offset` (see `net::wire`).
    pub fn stream_from(&self, offset: usize) -> Vec<u8> {
        let mut groups = store::outboard::GroupHasher::new(self.payload.len() as u64);
        // Without an outboard to expect, hashing cannot fail.
        let _ = groups.update(&self.payload);
        let mut out = groups
            .finish()
            .map(|(_, outboard)| outboard.to_bytes())
            .unwrap_or_default();
        out.extend_from_slice(&self.payload[offset.min(self.payload.len())..]);
        out
    }

    pub fn id_hex(&self) -> String {
        self.id.to_string()
    }
}

/// `len` random payload bytes.
pub fn payload(rng: &mut impl RngCore, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    rng.fill_bytes(&mut out);
    out
}

/// The manifest of `payload`, published by `secret` on [`CHANNEL`] at `now_ms`.
pub fn manifest(secret: &PublisherSecret, name: &str, payload: &[u8], now_ms: u64) -> Manifest {
    let mut m = Manifest::new(
        secret.public(),
        name,
        now_ms,
        payload.len() as u64,
        *blake3::hash(payload).as_bytes(),
    );
    m.channel = CHANNEL.to_owned();
    m
}

/// A genuine segment: `payload` signed by `secret`.
pub fn genuine(
    secret: &PublisherSecret,
    name: &str,
    payload: Vec<u8>,
    now_ms: u64,
) -> Result<(SignedManifest, Crafted), CraftError> {
    let signed = SignedManifest::sign(manifest(secret, name, &payload, now_ms), secret)?;
    let crafted = Crafted {
        label: "genuine",
        manifest: signed.encode(),
        id: signed.id(),
        payload,
    };
    Ok((signed, crafted))
}

/// A genuine manifest whose signature has one bit flipped (in its first half, R): it still
/// decodes, and does not verify.
pub fn bad_signature(
    secret: &PublisherSecret,
    name: &str,
    payload: Vec<u8>,
    now_ms: u64,
) -> Result<Crafted, CraftError> {
    let (_, mut c) = genuine(secret, name, payload, now_ms)?;
    let at = c.manifest.len() - SIGNATURE_BYTES;
    c.manifest[at] ^= 0x01;
    c.label = "bad_signature";
    Ok(c)
}

/// A segment validly signed by a publisher the fleet does not trust.
pub fn untrusted(
    untrusted: &PublisherSecret,
    name: &str,
    payload: Vec<u8>,
    now_ms: u64,
) -> Result<Crafted, CraftError> {
    let (_, mut c) = genuine(untrusted, name, payload, now_ms)?;
    c.label = "untrusted_publisher";
    Ok(c)
}

/// A genuine signed manifest whose name was changed after signing (one character, so the
/// encoding keeps its length and the signature its place): canonical, decodable, its id that
/// of the changed bytes, and its signature no longer verifies.
pub fn tampered(
    secret: &PublisherSecret,
    name: &str,
    payload: Vec<u8>,
    now_ms: u64,
) -> Result<Crafted, CraftError> {
    let (signed, mut c) = genuine(secret, name, payload, now_ms)?;
    let mut changed = signed.manifest().clone();
    let last = changed.name.pop().unwrap_or('a');
    changed.name.push(if last == 'x' { 'y' } else { 'x' });
    let bytes = changed.encode();
    let old = signed.manifest_bytes();
    if bytes.len() != old.len() {
        return Err(CraftError::LengthChanged);
    }
    // The manifest bytes follow their length varint (one byte below 128, else two).
    let start = if old.len() < 0x80 { 1 } else { 2 };
    debug_assert_eq!(&c.manifest[start..start + old.len()], old);
    c.manifest[start..start + bytes.len()].copy_from_slice(&bytes);
    c.id = SegmentId::of_manifest_bytes(&bytes);
    c.label = "tampered_manifest";
    Ok(c)
}

/// Manifests that do not decode, each with what is wrong with it: random bytes (an empty
/// manifest followed by garbage), one longer than any header may be, a genuine one with a
/// trailing byte, and a genuine one whose length varint is overlong (not canonical).
pub fn undecodable(
    rng: &mut impl RngCore,
    genuine: &SignedManifest,
) -> Vec<(&'static str, Vec<u8>)> {
    let mut garbage = payload(rng, GARBAGE_MANIFEST_BYTES);
    // A zero manifest length: whatever follows, there is no manifest in it.
    garbage[0] = 0;
    let mut oversized = payload(rng, OVERSIZED_MANIFEST_BYTES);
    oversized[0] = 0;
    let mut trailing = genuine.encode();
    trailing.push(rng.random());
    // The same length, written as a two-byte varint with a zero continuation byte.
    let enc = genuine.encode();
    let n = genuine.manifest_bytes().len();
    let mut overlong = Vec::with_capacity(enc.len() + 1);
    if n < 0x80 {
        overlong.push(n as u8 | 0x80);
        overlong.push(0);
        overlong.extend_from_slice(&enc[1..]);
    } else {
        overlong.extend_from_slice(&enc[..1]);
        overlong.push(enc[1] | 0x80);
        overlong.push(0);
        overlong.extend_from_slice(&enc[2..]);
    }
    vec![
        ("garbage", garbage),
        ("oversized", oversized),
        ("trailing_byte", trailing),
        ("overlong_length", overlong),
    ]
}

/// Writes `signed` with `payload` as a `.seg` file (what an honest node imports).
pub fn write_seg(path: &Path, signed: &SignedManifest, payload: &[u8]) -> Result<(), CraftError> {
    let write = |source| CraftError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    store::segfile::write_seg(&mut out, signed, payload).map_err(|e| match e {
        store::segfile::SegFileError::Io(io) => write(io),
        other => write(std::io::Error::other(other.to_string())),
    })?;
    std::fs::write(path, out).map_err(write)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use store::keys::TrustedPublishers;
    use store::manifest::VerifyError;

    use super::*;

    const NOW_MS: u64 = 1_800_000_000_000;

    fn trusted(secret: &PublisherSecret) -> TrustedPublishers {
        [secret.public()].into_iter().collect()
    }

    fn verify(c: &Crafted, trusted: &TrustedPublishers) -> Result<(), String> {
        let signed = SignedManifest::decode(&c.manifest).map_err(|e| format!("decode: {e}"))?;
        assert_eq!(signed.id(), c.id, "the id a victim computes");
        signed
            .verify(trusted, NOW_MS, 0)
            .map_err(|e| format!("verify: {e}"))
    }

    #[test]
    fn each_lie_fails_exactly_the_check_it_is_about() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let fleet = PublisherSecret::from_seed([1; 32]);
        let other = PublisherSecret::from_seed([2; 32]);
        let t = trusted(&fleet);
        let (_, good) = genuine(&fleet, "good-a", payload(&mut rng, 100), NOW_MS).unwrap();
        assert_eq!(verify(&good, &t), Ok(()));

        let bad = bad_signature(&fleet, "bad-a", payload(&mut rng, 100), NOW_MS).unwrap();
        let want = format!("verify: {}", VerifyError::BadSignature);
        assert_eq!(verify(&bad, &t), Err(want.clone()));

        let changed = tampered(&fleet, "changed-a", payload(&mut rng, 100), NOW_MS).unwrap();
        assert_eq!(verify(&changed, &t), Err(want));
        let (signed, _) = genuine(&fleet, "changed-a", changed.payload.clone(), NOW_MS).unwrap();
        assert_ne!(
            changed.id,
            signed.id(),
            "the changed manifest has its own id"
        );

        let stranger = untrusted(&other, "stranger-a", payload(&mut rng, 100), NOW_MS).unwrap();
        let err = verify(&stranger, &t).unwrap_err();
        assert!(err.contains("not trusted"), "{err}");
        assert_eq!(verify(&stranger, &trusted(&other)), Ok(()));
    }

    #[test]
    fn undecodable_manifests_do_not_decode() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let fleet = PublisherSecret::from_seed([1; 32]);
        for name in ["short", &"long-name-".repeat(20)] {
            let (signed, _) = genuine(&fleet, name, payload(&mut rng, 10), NOW_MS).unwrap();
            for (what, bytes) in undecodable(&mut rng, &signed) {
                assert!(
                    SignedManifest::decode(&bytes).is_err(),
                    "{what} must not decode"
                );
            }
        }
    }

    #[test]
    fn a_written_seg_file_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = PublisherSecret::from_seed([1; 32]);
        let body = payload(&mut ChaCha8Rng::seed_from_u64(3), 5000);
        let (signed, _) = genuine(&fleet, "file", body.clone(), NOW_MS).unwrap();
        let path = dir.path().join("file.seg");
        write_seg(&path, &signed, &body).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let back = store::segfile::read_header(&bytes[..]).unwrap();
        assert_eq!(back, signed);
        assert!(bytes.ends_with(&body));
    }
}
