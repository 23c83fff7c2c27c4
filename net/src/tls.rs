//! TLS 1.3 configurations for QUIC with mutual authentication against the fleet CA (INV-09).
//!
//! - **Server side**: a client certificate is REQUIRED and must chain to the fleet CA, be valid
//!   now (on the node's [`Clock`]) and allow client authentication (the webpki client
//!   verifier); then [`KnownPeerVerifier`] requires that the one node id it names is in
//!   `known_peers`. Anything else fails the handshake with a TLS alert — before the connection
//!   exists for the application, so before any application data — and is logged with the id
//!   the certificate presented, rate-limited ([`crate::logcap`]: per presented id for
//!   certificates of the fleet, one budget for all the others, whose names anyone can choose).
//! - **Client side**: the server certificate must chain to the fleet CA, be valid now, and name
//!   the peer id being dialled (the TLS server name is the peer id, never an address: a
//!   `known_peers` address may point at a proxy).
//! - ALPN [`ALPN`] (`edge/1`) on both sides: a peer speaking another version fails the
//!   handshake. Only TLS 1.3 (QUIC requires it), only the `ring` provider. No 0-RTT: the server
//!   accepts no early data and issues no session tickets, the client keeps no sessions, so every
//!   connection is a full handshake with both certificates checked.

use std::collections::BTreeSet;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};

use crate::clock::{Clock, ClockTime};
use crate::limits::ALPN;
use crate::logcap::LogLimiter;
use crate::pki::{NodeId, NodeIdentity, node_id_of_cert, presented_names};

/// Errors building a TLS configuration (a bad certificate or key caught at start).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("fleet CA certificate unusable as a trust anchor: {0}")]
    TrustAnchor(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("certificate verifier: {0}")]
    Verifier(String),
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
}

/// The crypto provider: ring only (MEASUREMENTS.md: less CPU than aws-lc-rs for QUIC, and it
/// keeps TLS13_AES_128_GCM_SHA256 for QUIC's Initial keys).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| TlsError::TrustAnchor(e.to_string()))?;
    Ok(Arc::new(roots))
}

/// Checks that `cert` chains to `ca`, is valid at `now` and may authenticate a TLS client (what
/// a peer's server will check).
pub fn check_chain(
    ca: &CertificateDer<'static>,
    cert: &CertificateDer<'static>,
    now: UnixTime,
) -> Result<(), String> {
    let roots = roots(ca).map_err(|e| e.to_string())?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| e.to_string())?;
    verifier
        .verify_client_cert(cert, &[], now)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The server configuration of a node: mutual TLS against the fleet CA and `known_peers`.
pub fn server_config(
    identity: &NodeIdentity,
    known_peers: BTreeSet<NodeId>,
    clock: Arc<dyn Clock>,
) -> Result<rustls::ServerConfig, TlsError> {
    server_config_logged(
        identity,
        Arc::new(std::sync::RwLock::new(known_peers)),
        clock,
        Arc::new(LogLimiter::default()),
    )
}

/// [`server_config`], logging refusals through the node's `limiter`.
pub fn server_config_logged(
    identity: &NodeIdentity,
    known_peers: KnownPeers,
    clock: Arc<dyn Clock>,
    limiter: Arc<LogLimiter>,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let inner =
        WebPkiClientVerifier::builder_with_provider(roots(&identity.ca_cert)?, provider.clone())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let verifier = Arc::new(KnownPeerVerifier {
        inner,
        known: known_peers,
        limiter,
    });
    let mut cfg = rustls::ServerConfig::builder_with_details(provider, Arc::new(ClockTime(clock)))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], identity.key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.max_early_data_size = 0;
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(NoServerSessionStorage {});
    Ok(cfg)
}

/// The client configuration of a node: presents its certificate, checks the server's against
/// the fleet CA (the server name checked is the dialled peer id, given at connect time).
pub fn client_config(
    identity: &NodeIdentity,
    clock: Arc<dyn Clock>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiServerVerifier::builder_with_provider(roots(&identity.ca_cert)?, provider.clone())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut cfg = rustls::ClientConfig::builder_with_details(provider, Arc::new(ClockTime(clock)))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.enable_early_data = false;
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(cfg)
}

/// The QUIC wrappers of the two configurations.
pub fn quic_configs(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
) -> Result<
    (
        Arc<quinn::crypto::rustls::QuicServerConfig>,
        Arc<quinn::crypto::rustls::QuicClientConfig>,
    ),
    TlsError,
> {
    let server = quinn::crypto::rustls::QuicServerConfig::try_from(server)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let client = quinn::crypto::rustls::QuicClientConfig::try_from(client)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok((Arc::new(server), Arc::new(client)))
}

/// The client certificate verifier of a node: the webpki verifier (fleet CA, validity, client
/// usage), then the presented node id must be one of `known_peers`.
#[derive(Debug)]
pub struct KnownPeerVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    known: KnownPeers,
    limiter: Arc<LogLimiter>,
}

/// The ids a node accepts connections from; the node changes it when `known_peers` is reloaded.
pub type KnownPeers = Arc<std::sync::RwLock<BTreeSet<NodeId>>>;

impl ClientCertVerifier for KnownPeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            // The handshake's failure is logged per source, in words ("handshake refused").
            tracing::debug!(presented_id = %presented_names(end_entity), error = %e, "peer refused: certificate not valid under the fleet CA");
            return Err(e);
        }
        match node_id_of_cert(end_entity) {
            // Mutation point (INV-09): any id the fleet CA signed gets in.
            Ok(id)
                if self
                    .known
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&id)
                    || store::mutants::active("accept_unknown_peer") =>
            {
                Ok(ClientCertVerified::assertion())
            }
            Ok(id) => {
                crate::warn_limited!(self.limiter, id.as_str(), "tls_unknown_id", presented_id = %id, "peer refused: id not in known_peers");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
            Err(reason) => {
                crate::warn_limited!(self.limiter, "unverified", "tls_no_node_id", presented_id = %presented_names(end_entity), reason, "peer refused: no usable node id");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
