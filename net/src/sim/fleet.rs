//! Deterministic identities for a simulated fleet: the same seed gives byte-identical
//! certificates and keys.
//!
//! Every key is Ed25519, derived from the seed with blake3: Ed25519 signatures are
//! deterministic and always 64 bytes, so a handshake's packets have the same sizes in every
//! run (an ECDSA signature's DER encoding varies by a byte or two per handshake). Serial
//! numbers are rcgen's hash of the public key, and validity is given, so nothing depends on
//! the time or the system's randomness.

use std::time::{Duration, SystemTime};

use rcgen::{Issuer, KeyPair, PKCS_ED25519};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::pki::{self, NOT_BEFORE_SKEW, NodeId, NodeIdentity, PkiError};

/// How long simulated certificates are valid from `not_before_ms`: far longer than any run.
pub const SIM_CERT_VALIDITY_DAYS: u64 = 10 * 365;

/// The PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// blake3 key-derivation contexts of the fleet's keys.
const CA_KEY_CONTEXT: &str = "edged sim fleet 2026 CA key";
const NODE_KEY_CONTEXT: &str = "edged sim fleet 2026 node key";

/// Why a simulated fleet could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SimFleetError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("generated certificate unusable: {0}")]
    Certificate(String),
}

fn ed25519_pkcs8(secret: [u8; 32]) -> Vec<u8> {
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&secret);
    der
}

fn key_pair(der: &[u8]) -> Result<KeyPair, rcgen::Error> {
    KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(der), &PKCS_ED25519)
}

/// The identities of nodes `names` (in that order) in a fleet whose CA and keys derive from
/// `seed`; every certificate is valid from an hour before `not_before_ms` for
/// [`SIM_CERT_VALIDITY_DAYS`]. Same arguments, same bytes.
pub fn fleet_identities(
    seed: u64,
    names: &[&str],
    not_before_ms: u64,
) -> Result<Vec<NodeIdentity>, SimFleetError> {
    let start = SystemTime::UNIX_EPOCH + Duration::from_millis(not_before_ms);
    let not_before = start - NOT_BEFORE_SKEW;
    let not_after = start + Duration::from_secs(SIM_CERT_VALIDITY_DAYS * 24 * 3600);
    let ca_key = key_pair(&ed25519_pkcs8(blake3::derive_key(
        CA_KEY_CONTEXT,
        &seed.to_le_bytes(),
    )))?;
    let ca_cert = pki::ca_params(not_before, not_after)?.self_signed(&ca_key)?;
    let ca_der: CertificateDer<'static> = ca_cert.der().clone();
    let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key)?;
    names
        .iter()
        .map(|name| {
            let id: NodeId = name.parse()?;
            let mut material = seed.to_le_bytes().to_vec();
            material.extend_from_slice(name.as_bytes());
            let der = ed25519_pkcs8(blake3::derive_key(NODE_KEY_CONTEXT, &material));
            let key = key_pair(&der)?;
            let cert = pki::node_params(&id, not_before, not_after)?.signed_by(&key, &issuer)?;
            pki::identity_in_memory(
                ca_der.clone(),
                cert.der().clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
            )
            .map_err(SimFleetError::Certificate)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0_MS: u64 = 1_767_225_600_000;

    #[test]
    fn same_seed_same_certificates_other_seed_other_ones() {
        let a = fleet_identities(3, &["a", "b"], T0_MS).unwrap();
        let b = fleet_identities(3, &["a", "b"], T0_MS).unwrap();
        let c = fleet_identities(4, &["a", "b"], T0_MS).unwrap();
        assert_eq!(a[0].id.as_str(), "a");
        assert_eq!(a[1].id.as_str(), "b");
        for i in 0..2 {
            assert_eq!(a[i].cert, b[i].cert);
            assert_eq!(a[i].ca_cert, b[i].ca_cert);
            assert_ne!(a[i].cert, c[i].cert);
        }
        assert_ne!(a[0].cert, a[1].cert);
    }

    #[test]
    fn simulated_certificates_chain_to_their_fleet_and_are_valid_from_the_start() {
        let fleet = fleet_identities(9, &["node-1"], T0_MS).unwrap();
        let at = rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_millis(T0_MS));
        crate::tls::check_chain(&fleet[0].ca_cert, &fleet[0].cert, at).unwrap();
        let other = fleet_identities(10, &["node-1"], T0_MS).unwrap();
        assert!(crate::tls::check_chain(&other[0].ca_cert, &fleet[0].cert, at).is_err());
        // The TLS configurations a node builds accept the Ed25519 key.
        let clock = std::sync::Arc::new(crate::SystemClock);
        crate::tls::client_config(&fleet[0], clock).unwrap();
    }
}
