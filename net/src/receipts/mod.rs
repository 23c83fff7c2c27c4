//! Fleet receipts: signed statements, by each node, of what it stores — so that any node can
//! answer "is it everywhere yet?" for the whole fleet, across hops.
//!
//! # What a receipt says
//!
//! A receipt is made by one node about itself: "segment S was stored here at T", "segment S is
//! no longer here since T" (evicted, expired, removed), or "I was alive at T and held N
//! segments". A node signs its receipts in batches — a [`Receipt`] of one to
//! [`RECEIPT_ENTRIES_MAX`] [`Entry`]s, the ones it made in one pass over its store — so that a
//! thousand segments arriving together cost one signature to make and one to check per node,
//! not a thousand. A batch carries the node's id and a sequence number that grows with every
//! batch the node makes (`max(last + 1, now in ms)`, so a node whose database was lost still
//! counts up). It is signed with the node's own key — the key of its fleet certificate — over
//! [`SIGNING_CONTEXT`] and the encoded batch, and names the certificate by its blake3 hash. No
//! relay can forge or alter another node's receipt: a batch is believed only if its signature
//! verifies under a certificate that chains to the fleet CA, was valid when the batch was
//! made, and names the batch's node.
//!
//! # Encoding (postcard, like the wire protocol)
//!
//! | field | type |
//! |---|---|
//! | `version` | u8, [`RECEIPT_VERSION`] (a node refuses a version it does not know) |
//! | `node` | string, the signer's node id |
//! | `seq` | u64 varint |
//! | `at_ms` | u64 varint, Unix ms on the signer's clock: when the batch was made |
//! | `entries` | 1..=[`RECEIPT_ENTRIES_MAX`] of (`at_ms`: u64 varint, `event`), subjects strictly increasing |
//!
//! An `event` is an enum: 0 `Stored { segment: [u8; 32] }`, 1 `Gone { segment: [u8; 32] }`,
//! 2 `Alive { held: u64 }`; its subject is the segment, or [`ALIVE_SUBJECT`] for `Alive`.
//!
//! A [`SignedReceipt`] is `body` (those bytes, ≤ [`RECEIPT_BODY_BYTES_MAX`]), `cert` (blake3 of
//! the signer's certificate DER) and `sig` (ECDSA P-256 SHA-256 in ASN.1, or Ed25519, following
//! the certificate's key; ≤ [`RECEIPT_SIG_BYTES_MAX`]); its encoding is at most
//! [`SIGNED_RECEIPT_BYTES_MAX`].
//!
//! # Where they live and how they travel
//!
//! [`book`] keeps them in the store's database (tables `fleet-*`): the latest receipt per
//! (node, subject) — a subject being a segment, or the node's liveness — merged idempotently
//! by sequence number. [`gossip`] exchanges them over the peers' mutual-TLS connections, with
//! the shape of catch-up: digest, pages of heads, pages of receipts. [`verdict`] turns them into
//! the fleet view of `edged fleet`. Receipts never cause a payload to be sent: they are read
//! only by the fleet view and the need-lists.

pub mod book;
pub mod gossip;
pub mod verdict;

use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use rustls::pki_types::{CertificateDer, UnixTime};
use serde::{Deserialize, Serialize};

use crate::pki::{NodeId, NodeIdentity};

/// The receipt format this build writes and reads.
pub const RECEIPT_VERSION: u8 = 1;
/// Bytes signed before the encoded receipt: a signature over a receipt cannot be replayed as a
/// signature over anything else the node's key signs (TLS handshakes sign other contexts).
pub const SIGNING_CONTEXT: &[u8] = b"edged fleet receipt v1\0";
/// Entries in one signed batch.
pub const RECEIPT_ENTRIES_MAX: usize = 128;
/// Largest encoded entry: a u64 varint (10) and an event (1 + 32).
const ENTRY_BYTES_MAX: usize = 43;
/// Largest encoded batch body: version, a node id of at most 63 bytes, two u64 varints and the
/// entries' count fit in 128 bytes before the entries.
pub const RECEIPT_BODY_BYTES_MAX: usize = 128 + RECEIPT_ENTRIES_MAX * ENTRY_BYTES_MAX;
/// Largest signature: an ASN.1 ECDSA P-256 signature is at most 72 bytes.
pub const RECEIPT_SIG_BYTES_MAX: usize = 80;
/// Largest encoded [`SignedReceipt`], checked before it is decoded.
pub const SIGNED_RECEIPT_BYTES_MAX: usize = RECEIPT_BODY_BYTES_MAX + 128;
/// Largest certificate accepted with receipts, in bytes of DER.
pub const RECEIPT_CERT_BYTES_MAX: usize = 4096;

/// What a receipt states about its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The segment is durably stored on the node (from a peer, an import or catch-up).
    Stored { segment: [u8; 32] },
    /// The segment is no longer stored on the node (evicted, expired or removed).
    Gone { segment: [u8; 32] },
    /// The node was alive, holding `held` segments.
    Alive { held: u64 },
}

/// The subject of an [`Alive`](Event::Alive) receipt in the book's tables (segments use their
/// id; an id equal to this is as likely as a blake3 collision).
pub const ALIVE_SUBJECT: [u8; 32] = [0xff; 32];

impl Event {
    /// What the receipt is about: a segment id, or [`ALIVE_SUBJECT`].
    pub fn subject(&self) -> [u8; 32] {
        match self {
            Event::Stored { segment } | Event::Gone { segment } => *segment,
            Event::Alive { .. } => ALIVE_SUBJECT,
        }
    }
}

/// One receipt of a batch: what happened, and when (on the signer's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub at_ms: u64,
    pub event: Event,
}

/// A batch of one node's receipts about itself, signed together (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub version: u8,
    pub node: NodeId,
    pub seq: u64,
    pub at_ms: u64,
    pub entries: Vec<Entry>,
}

/// A receipt as stored and sent: its encoded body, the hash of the signer's certificate, the
/// signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    pub body: Vec<u8>,
    pub cert: [u8; 32],
    pub sig: Vec<u8>,
}

/// Why a receipt (or a certificate brought with receipts) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt malformed: {0}")]
    Malformed(String),
    #[error("receipt version {0} is not known to this node (it reads {RECEIPT_VERSION})")]
    UnknownVersion(u8),
    #[error("receipt names a certificate this node does not have")]
    UnknownCertificate,
    #[error("certificate refused: {0}")]
    BadCertificate(String),
    #[error("receipt of {claimed} signed under the certificate of {cert}")]
    WrongNode { claimed: NodeId, cert: NodeId },
    #[error("receipt signature does not verify")]
    BadSignature,
    #[error("receipt of {got} where receipts of {want} were asked for")]
    Unrequested { want: NodeId, got: NodeId },
    #[error("receipt sequence {seq} of {node} is not after {after}")]
    OutOfOrder { node: NodeId, seq: u64, after: u64 },
}

impl SignedReceipt {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a receipt always encodes")
    }

    /// Decodes, checking sizes before and after (no trailing bytes).
    pub fn decode(bytes: &[u8]) -> Result<SignedReceipt, ReceiptError> {
        if bytes.len() > SIGNED_RECEIPT_BYTES_MAX {
            return Err(ReceiptError::Malformed(format!(
                "{} bytes, more than {SIGNED_RECEIPT_BYTES_MAX}",
                bytes.len()
            )));
        }
        let signed: SignedReceipt = decode_whole(bytes)?;
        if signed.body.len() > RECEIPT_BODY_BYTES_MAX || signed.sig.len() > RECEIPT_SIG_BYTES_MAX {
            return Err(ReceiptError::Malformed("body or signature too long".into()));
        }
        Ok(signed)
    }

    /// The receipt inside, decoded but NOT verified: for reading receipts this node already
    /// verified (its own book).
    pub fn receipt(&self) -> Result<Receipt, ReceiptError> {
        let receipt: Receipt = decode_whole(&self.body)?;
        if receipt.version != RECEIPT_VERSION {
            return Err(ReceiptError::UnknownVersion(receipt.version));
        }
        if receipt.entries.is_empty() || receipt.entries.len() > RECEIPT_ENTRIES_MAX {
            return Err(ReceiptError::Malformed(format!(
                "{} entries, not 1..={RECEIPT_ENTRIES_MAX}",
                receipt.entries.len()
            )));
        }
        let increasing = receipt
            .entries
            .windows(2)
            .all(|w| w[0].event.subject() < w[1].event.subject());
        if !increasing {
            return Err(ReceiptError::Malformed(
                "entry subjects not strictly increasing".into(),
            ));
        }
        Ok(receipt)
    }

    /// Verifies the signature under `cert` (which must be the certificate the receipt names and
    /// must name the receipt's node; its chain is checked by [`check_cert`]) and returns the
    /// receipt.
    pub fn verify(&self, cert: &CertificateDer<'_>) -> Result<Receipt, ReceiptError> {
        if cert_hash(cert) != self.cert {
            return Err(ReceiptError::UnknownCertificate);
        }
        let receipt = self.receipt()?;
        let signer = crate::pki::node_id_of_cert(cert).map_err(ReceiptError::BadCertificate)?;
        if signer != receipt.node {
            return Err(ReceiptError::WrongNode {
                claimed: receipt.node,
                cert: signer,
            });
        }
        let ee = webpki::EndEntityCert::try_from(cert)
            .map_err(|e| ReceiptError::BadCertificate(e.to_string()))?;
        let msg = signed_bytes(&self.body);
        // The algorithm follows the certificate's key: one that does not fit it fails.
        let checked = [webpki::ring::ECDSA_P256_SHA256, webpki::ring::ED25519]
            .into_iter()
            .find_map(|alg| ee.verify_signature(alg, &msg, &self.sig).ok())
            .ok_or(());
        // Mutation point (INV-28): a receipt is believed without its signature.
        if checked.is_err() && !store::mutants::active("skip_receipt_signature") {
            return Err(ReceiptError::BadSignature);
        }
        Ok(receipt)
    }
}

fn decode_whole<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ReceiptError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ReceiptError::Malformed("trailing bytes".into()));
    }
    Ok(value)
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    msg.extend_from_slice(SIGNING_CONTEXT);
    msg.extend_from_slice(body);
    msg
}

/// The blake3 hash of a certificate's DER, by which receipts name it.
pub fn cert_hash(cert: &CertificateDer<'_>) -> [u8; 32] {
    *blake3::hash(cert.as_ref()).as_bytes()
}

/// Checks a certificate brought with receipts: at most [`RECEIPT_CERT_BYTES_MAX`], chains to
/// the fleet CA `ca` and was valid at `at_ms` (when a receipt under it was made). Returns the
/// node it names.
pub fn check_cert(
    ca: &CertificateDer<'static>,
    cert: &CertificateDer<'static>,
    at_ms: u64,
) -> Result<NodeId, ReceiptError> {
    if cert.as_ref().len() > RECEIPT_CERT_BYTES_MAX {
        return Err(ReceiptError::BadCertificate(format!(
            "{} bytes, more than {RECEIPT_CERT_BYTES_MAX}",
            cert.as_ref().len()
        )));
    }
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_millis(at_ms));
    crate::tls::check_chain(ca, cert, at)
        .map_err(|e| ReceiptError::BadCertificate(format!("not valid under the fleet CA: {e}")))?;
    crate::pki::node_id_of_cert(cert).map_err(ReceiptError::BadCertificate)
}

/// Why a node cannot sign receipts.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot sign fleet receipts with the node key: {0} (receipts need an ECDSA P-256 key, as `edged ca issue` makes)"
)]
pub struct SignerError(String);

/// Signs this node's receipts with the key of its certificate.
pub struct Signer {
    node: NodeId,
    cert: CertificateDer<'static>,
    cert_hash: [u8; 32],
    key: Key,
    rng: SystemRandom,
}

/// The node's key: ECDSA P-256 (what `edged ca issue` makes) or Ed25519.
enum Key {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("node", &self.node).finish()
    }
}

impl Signer {
    pub fn new(identity: &NodeIdentity) -> Result<Arc<Signer>, SignerError> {
        let rng = SystemRandom::new();
        let key = identity.key();
        let rustls::pki_types::PrivateKeyDer::Pkcs8(pkcs8) = key else {
            return Err(SignerError("the key is not PKCS#8".into()));
        };
        let der = pkcs8.secret_pkcs8_der();
        let key = match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng) {
            Ok(k) => Key::Ecdsa(k),
            Err(ecdsa) => Key::Ed25519(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|e| SignerError(format!("{ecdsa}; {e}")))?,
            ),
        };
        Ok(Arc::new(Signer {
            node: identity.id.clone(),
            cert: identity.cert.clone(),
            cert_hash: cert_hash(&identity.cert),
            key,
            rng,
        }))
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Signs a batch of this node's receipts; `entries` must be 1..=[`RECEIPT_ENTRIES_MAX`]
    /// with strictly increasing subjects (a reader refuses anything else).
    pub fn sign(&self, seq: u64, at_ms: u64, entries: Vec<Entry>) -> SignedReceipt {
        let receipt = Receipt {
            version: RECEIPT_VERSION,
            node: self.node.clone(),
            seq,
            at_ms,
            entries,
        };
        let body = postcard::to_allocvec(&receipt).expect("a receipt always encodes");
        let msg = signed_bytes(&body);
        let sig = match &self.key {
            Key::Ecdsa(k) => k
                .sign(&self.rng, &msg)
                .expect("ECDSA signing does not fail with a valid key")
                .as_ref()
                .to_vec(),
            Key::Ed25519(k) => k.sign(&msg).as_ref().to_vec(),
        };
        SignedReceipt {
            body,
            cert: self.cert_hash,
            sig,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pki::{ca_init, ca_issue, load_node_identity};

    pub(crate) fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    /// One entry at time 1.
    pub(crate) fn one(event: Event) -> Vec<Entry> {
        vec![Entry { at_ms: 1, event }]
    }

    /// A fleet CA and identities of `nodes`, in a temporary directory.
    pub(crate) fn fleet(nodes: &[&str]) -> (tempfile::TempDir, Vec<NodeIdentity>) {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_init(&dir.path().join("ca")).unwrap();
        let ids = nodes
            .iter()
            .map(|n| {
                let files = ca_issue(
                    &dir.path().join("ca"),
                    &n.parse().unwrap(),
                    &dir.path().join(n),
                    30,
                )
                .unwrap();
                load_node_identity(&ca.cert, &files.cert, &files.key).unwrap()
            })
            .collect();
        (dir, ids)
    }

    #[test]
    fn inv_28_a_receipt_verifies_only_unaltered_and_under_its_signers_certificate() {
        let (_dir, ids) = fleet(&["node-a", "node-b"]);
        let a = Signer::new(&ids[0]).unwrap();
        let b = Signer::new(&ids[1]).unwrap();
        let seg = [7u8; 32];
        let signed = a.sign(5, 1_000, one(Event::Stored { segment: seg }));
        let got = SignedReceipt::decode(&signed.encode()).unwrap();
        let receipt = got.verify(&ids[0].cert).unwrap();
        assert_eq!(receipt.node.as_str(), "node-a");
        assert_eq!((receipt.seq, receipt.at_ms), (5, 1_000));
        assert_eq!(receipt.entries, one(Event::Stored { segment: seg }));
        assert_eq!(
            check_cert(&ids[0].ca_cert, &ids[0].cert, now_ms())
                .unwrap()
                .as_str(),
            "node-a"
        );

        // Every byte of the body altered: refused.
        for i in 0..signed.body.len() {
            let mut altered = signed.clone();
            altered.body[i] ^= 0x01;
            assert!(altered.verify(&ids[0].cert).is_err(), "byte {i}");
        }
        // A Stored receipt turned into a Gone one, re-encoded: the signature no longer holds.
        let mut r = signed.receipt().unwrap();
        r.entries[0].event = Event::Gone { segment: seg };
        let forged = SignedReceipt {
            body: postcard::to_allocvec(&r).unwrap(),
            ..signed.clone()
        };
        assert_eq!(forged.verify(&ids[0].cert), Err(ReceiptError::BadSignature));
        // node-b signs a receipt claiming to be node-a's, naming a's certificate.
        let mut by_b = b.sign(5, 1_000, one(Event::Stored { segment: seg }));
        let mut claim = by_b.receipt().unwrap();
        claim.node = "node-a".parse().unwrap();
        by_b.body = postcard::to_allocvec(&claim).unwrap();
        by_b.cert = cert_hash(&ids[0].cert);
        assert_eq!(by_b.verify(&ids[0].cert), Err(ReceiptError::BadSignature));
        // ... or naming its own certificate.
        by_b.cert = cert_hash(&ids[1].cert);
        assert!(matches!(
            by_b.verify(&ids[1].cert),
            Err(ReceiptError::WrongNode { .. })
        ));
        // The wrong certificate for the hash named.
        assert_eq!(
            signed.verify(&ids[1].cert),
            Err(ReceiptError::UnknownCertificate)
        );
    }

    #[test]
    fn inv_28_a_certificate_of_another_ca_is_refused() {
        let (_d1, ours) = fleet(&["node-a"]);
        let (_d2, theirs) = fleet(&["node-a"]);
        let now = now_ms();
        assert!(check_cert(&ours[0].ca_cert, &ours[0].cert, now).is_ok());
        assert!(matches!(
            check_cert(&ours[0].ca_cert, &theirs[0].cert, now),
            Err(ReceiptError::BadCertificate(_))
        ));
    }

    #[test]
    fn sizes_stay_within_their_bounds() {
        let (_dir, ids) =
            fleet(&["a-node-id-of-sixty-three-bytes-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]);
        let s = Signer::new(&ids[0]).unwrap();
        let full: Vec<Entry> = (0..RECEIPT_ENTRIES_MAX)
            .map(|i| Entry {
                at_ms: u64::MAX,
                event: Event::Gone {
                    segment: [i as u8; 32],
                },
            })
            .collect();
        let signed = s.sign(u64::MAX, u64::MAX, full.clone());
        assert!(signed.body.len() <= RECEIPT_BODY_BYTES_MAX);
        assert!(signed.sig.len() <= RECEIPT_SIG_BYTES_MAX);
        assert!(signed.encode().len() <= SIGNED_RECEIPT_BYTES_MAX);
        let too_long = vec![0u8; SIGNED_RECEIPT_BYTES_MAX + 1];
        assert!(matches!(
            SignedReceipt::decode(&too_long),
            Err(ReceiptError::Malformed(_))
        ));
        let mut trailing = signed.encode();
        trailing.push(0);
        assert!(SignedReceipt::decode(&trailing).is_err());
        // N entries are read; N + 1, none, or subjects out of order are refused.
        assert!(signed.verify(&ids[0].cert).is_ok());
        let mut over = full.clone();
        over.push(Entry {
            at_ms: 1,
            event: Event::Alive { held: 0 },
        });
        assert!(s.sign(1, 1, over).receipt().is_err());
        assert!(s.sign(1, 1, Vec::new()).receipt().is_err());
        let mut unordered = full[..2].to_vec();
        unordered.swap(0, 1);
        assert!(s.sign(1, 1, unordered).receipt().is_err());
    }
}
