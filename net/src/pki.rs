//! The fleet PKI: a fleet CA, node certificates, and the PEM files they live in.
//!
//! - The **fleet CA** is an ECDSA P-256 key and a self-signed certificate with CA constraints
//!   (`CA:TRUE, pathlen:0`, key usage `keyCertSign, cRLSign`). The operator keeps it offline.
//! - A **node certificate** is issued by the fleet CA for one node: its only DNS subject
//!   alternative name is the [`NodeId`], it may be used for TLS client and server
//!   authentication (extended key usages `serverAuth, clientAuth`), and it is valid from an
//!   hour before issue (clock skew) for the given number of days.
//! - **Files**: `ca.crt` / `ca.key` in the CA directory, `<node-id>.crt` / `<node-id>.key` for a
//!   node. Certificates are PEM, mode 0644; keys are PKCS#8 PEM, mode 0600, and are refused at
//!   load if group or others may access them. Nothing is ever overwritten; every file is
//!   fsynced and so is its directory. Every error names the file.
//!
//! A peer is identified by its certificate (the DNS SAN), never by its address.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::limits::NODE_ID_BYTES_MAX;

/// Largest PEM file read (certificate or key), in bytes; larger files are refused unread.
pub const PEM_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Validity of a fleet CA certificate: 20 years.
pub const CA_VALIDITY_DAYS: u32 = 20 * 365;
/// Longest validity of a node certificate: 10 years.
pub const NODE_VALIDITY_DAYS_MAX: u32 = 10 * 365;
/// Node certificates are valid from this long before they are issued (clock skew between hosts).
pub const NOT_BEFORE_SKEW: Duration = Duration::from_secs(3600);
/// File names in a CA directory.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
/// Common name of the fleet CA certificate.
const CA_COMMON_NAME: &str = "edged fleet CA";
const KEY_FILE_MODE: u32 = 0o600;
const CERT_FILE_MODE: u32 = 0o644;

/// Errors creating, issuing and loading certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file exists already; nothing is overwritten.
    #[error("{path} already exists; refusing to overwrite it")]
    AlreadyExists { path: PathBuf },
    /// A key file may be read or written by group or others.
    #[error("key file {path} has insecure permissions {mode:04o}; it must be 0600 (chmod 600)")]
    InsecurePermissions { path: PathBuf, mode: u32 },
    /// A PEM file is larger than [`PEM_FILE_BYTES_MAX`]; it was not read.
    #[error("{path} is {len} bytes, larger than the {PEM_FILE_BYTES_MAX} bytes allowed")]
    FileTooLarge { path: PathBuf, len: u64 },
    /// A file does not hold what it should (bad PEM, wrong item, unparsable key).
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    /// The certificate does not belong to this fleet or this node (other CA, expired, key
    /// mismatch, no node id).
    #[error("{path}: {reason}")]
    CertificateRejected { path: PathBuf, reason: String },
    /// A node id does not have the required form.
    #[error(
        "invalid node id {input:?}: {reason} (a node id is one DNS label: 1..=63 characters of [a-z0-9-], not starting or ending with '-', not all digits)"
    )]
    InvalidNodeId { input: String, reason: &'static str },
    /// A validity period that cannot be issued.
    #[error("invalid validity: {0}")]
    Validity(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A node's identity in the fleet: one DNS label, `[a-z0-9-]{1,63}`, not starting or ending with
/// `-` and not all digits (so that it is a valid DNS name for certificate checks). Ordered as
/// strings: the lower id wins when two nodes dial each other at once.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

impl NodeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeId {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, PkiError> {
        let bad = |reason| PkiError::InvalidNodeId {
            input: s.chars().take(80).collect(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.len() > NODE_ID_BYTES_MAX {
            return Err(bad("longer than 63 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad("character outside [a-z0-9-]"));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(bad("starts or ends with '-'"));
        }
        match ServerName::try_from(s) {
            Ok(ServerName::DnsName(_)) => Ok(NodeId(s.to_owned())),
            _ => Err(bad("not a valid DNS name (all digits?)")),
        }
    }
}

impl TryFrom<&str> for NodeId {
    type Error = PkiError;
    fn try_from(s: &str) -> Result<Self, PkiError> {
        s.parse()
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

/// The files of a fleet CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The files of a node certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a node needs for mutual TLS: its id, its certificate and key, and the fleet CA.
pub struct NodeIdentity {
    pub id: NodeId,
    pub ca_cert: CertificateDer<'static>,
    pub cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    /// When the node certificate stops being valid.
    pub not_after: SystemTime,
}

impl NodeIdentity {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        NodeIdentity {
            id: self.id.clone(),
            ca_cert: self.ca_cert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            not_after: self.not_after,
        }
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Creates a fleet CA in `out_dir` (created if missing): `ca.crt` and `ca.key` (0600).
pub fn ca_init(out_dir: &Path) -> Result<CaFiles, PkiError> {
    let files = CaFiles {
        cert: out_dir.join(CA_CERT_FILE),
        key: out_dir.join(CA_KEY_FILE),
    };
    for path in [&files.cert, &files.key] {
        if path.exists() {
            return Err(PkiError::AlreadyExists { path: path.clone() });
        }
    }
    std::fs::create_dir_all(out_dir).map_err(io("create directory", out_dir))?;
    let key = KeyPair::generate()?;
    let now = SystemTime::now();
    let cert = ca_params(now - NOT_BEFORE_SKEW, now + days(CA_VALIDITY_DAYS))?.self_signed(&key)?;
    write_new(&files.key, key.serialize_pem().as_bytes(), KEY_FILE_MODE)?;
    write_new(&files.cert, cert.pem().as_bytes(), CERT_FILE_MODE)?;
    sync_dir(out_dir)?;
    Ok(files)
}

/// Issues a certificate for `node_id`, valid for `validity_days` from now, signed by the CA in
/// `ca_dir`; writes `<node-id>.crt` and `<node-id>.key` (0600) into `out_dir`.
pub fn ca_issue(
    ca_dir: &Path,
    node_id: &NodeId,
    out_dir: &Path,
    validity_days: u32,
) -> Result<NodeFiles, PkiError> {
    if validity_days == 0 || validity_days > NODE_VALIDITY_DAYS_MAX {
        return Err(PkiError::Validity(format!(
            "validity_days must be 1..={NODE_VALIDITY_DAYS_MAX}, got {validity_days}"
        )));
    }
    let now = SystemTime::now();
    ca_issue_valid_between(
        ca_dir,
        node_id,
        out_dir,
        now - NOT_BEFORE_SKEW,
        now + days(validity_days),
    )
}

/// [`ca_issue`] with an explicit validity period (tests issue expired and not yet valid
/// certificates with it).
pub fn ca_issue_valid_between(
    ca_dir: &Path,
    node_id: &NodeId,
    out_dir: &Path,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<NodeFiles, PkiError> {
    if not_after <= not_before {
        return Err(PkiError::Validity(
            "not_after is not after not_before".into(),
        ));
    }
    let files = NodeFiles {
        cert: out_dir.join(format!("{node_id}.crt")),
        key: out_dir.join(format!("{node_id}.key")),
    };
    for path in [&files.cert, &files.key] {
        if path.exists() {
            return Err(PkiError::AlreadyExists { path: path.clone() });
        }
    }
    let ca_cert_path = ca_dir.join(CA_CERT_FILE);
    let ca_key_path = ca_dir.join(CA_KEY_FILE);
    let ca_pem = read_text(&ca_cert_path)?;
    let ca_key_pem = read_key_text(&ca_key_path)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| PkiError::BadFile {
        path: ca_key_path.clone(),
        reason: format!("not a usable private key: {e}"),
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| PkiError::BadFile {
        path: ca_cert_path.clone(),
        reason: format!("not a CA certificate: {e}"),
    })?;

    let key = KeyPair::generate()?;
    let cert = node_params(node_id, not_before, not_after)?.signed_by(&key, &issuer)?;
    std::fs::create_dir_all(out_dir).map_err(io("create directory", out_dir))?;
    write_new(&files.key, key.serialize_pem().as_bytes(), KEY_FILE_MODE)?;
    write_new(&files.cert, cert.pem().as_bytes(), CERT_FILE_MODE)?;
    sync_dir(out_dir)?;
    Ok(files)
}

/// The certificate parameters of a fleet CA valid from `not_before` to `not_after`.
pub(crate) fn ca_params(
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    Ok(params)
}

/// The certificate parameters of `node_id`'s certificate valid from `not_before` to
/// `not_after` (see the module docs).
pub(crate) fn node_params(
    node_id: &NodeId,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(vec![node_id.as_str().to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_id.as_str());
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    Ok(params)
}

/// An identity from certificates and a key made in memory (simulated fleets); the key must
/// belong to `cert`.
#[cfg(feature = "sim")]
pub(crate) fn identity_in_memory(
    ca_cert: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<NodeIdentity, String> {
    let id = node_id_of_cert(&cert)?;
    let not_after = cert_not_after(&cert)?;
    Ok(NodeIdentity {
        id,
        ca_cert,
        cert,
        key,
        not_after,
    })
}

/// Loads a node's identity and checks it before any connection is made: the key file is 0600,
/// the certificate chains to the CA and is valid now, it names exactly one node id, and the key
/// belongs to it.
pub fn load_node_identity(
    ca_cert: &Path,
    node_cert: &Path,
    node_key: &Path,
) -> Result<NodeIdentity, PkiError> {
    load_node_identity_at(ca_cert, node_cert, node_key, SystemTime::now())
}

/// [`load_node_identity`], checking validity at `now`.
pub fn load_node_identity_at(
    ca_cert: &Path,
    node_cert: &Path,
    node_key: &Path,
    now: SystemTime,
) -> Result<NodeIdentity, PkiError> {
    let ca = read_cert(ca_cert)?;
    let cert = read_cert(node_cert)?;
    let key_pem = read_key_text(node_key)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| PkiError::BadFile {
        path: node_key.to_owned(),
        reason: format!("no PKCS#8 private key: {e}"),
    })?;
    let rejected = |reason: String| PkiError::CertificateRejected {
        path: node_cert.to_owned(),
        reason,
    };
    let id = node_id_of_cert(&cert).map_err(&rejected)?;
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    crate::tls::check_chain(&ca, &cert, UnixTime::since_unix_epoch(since_epoch))
        .map_err(|e| rejected(format!("not valid under {}: {e}", ca_cert.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::sign::CertifiedKey::from_der(vec![cert.clone()], key.clone_key(), &provider).map_err(
        |e| PkiError::BadFile {
            path: node_key.to_owned(),
            reason: format!("key does not match {}: {e}", node_cert.display()),
        },
    )?;
    let not_after = cert_not_after(&cert).map_err(&rejected)?;
    Ok(NodeIdentity {
        id,
        ca_cert: ca,
        cert,
        key,
        not_after,
    })
}

/// The node id a certificate names: its one DNS subject alternative name, which must be a valid
/// [`NodeId`]. Says why not otherwise (for logs and refusals).
pub fn node_id_of_cert(cert: &CertificateDer<'_>) -> Result<NodeId, String> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("unparsable certificate: {e}"))?;
    let mut names = ee.valid_dns_names();
    let first = names
        .next()
        .ok_or_else(|| "certificate names no DNS node id".to_owned())?;
    if names.next().is_some() {
        return Err("certificate names more than one DNS name".to_owned());
    }
    first
        .parse::<NodeId>()
        .map_err(|_| format!("certificate names {first:?}, not a valid node id"))
}

/// Best effort: the DNS names a certificate presents, for logging a refused peer.
pub fn presented_names(cert: &CertificateDer<'_>) -> String {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(ee) => {
            let names: Vec<&str> = ee.valid_dns_names().take(4).collect();
            if names.is_empty() {
                "<none>".to_owned()
            } else {
                names.join(",")
            }
        }
        Err(_) => "<unparsable>".to_owned(),
    }
}

fn cert_not_after(cert: &CertificateDer<'_>) -> Result<SystemTime, String> {
    use x509_parser::prelude::FromDer;
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref())
        .map_err(|e| format!("unparsable certificate: {e}"))?;
    let secs = parsed.validity().not_after.timestamp();
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
}

fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 24 * 3600)
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PkiError {
    let path = path.to_owned();
    move |source| PkiError::Io { op, path, source }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, PkiError> {
    let file = File::open(path).map_err(io("open", path))?;
    let meta = file.metadata().map_err(io("stat", path))?;
    if !meta.is_file() {
        return Err(PkiError::BadFile {
            path: path.to_owned(),
            reason: "not a regular file".into(),
        });
    }
    if meta.len() > PEM_FILE_BYTES_MAX {
        return Err(PkiError::FileTooLarge {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    file.take(PEM_FILE_BYTES_MAX + 1)
        .read_to_end(&mut out)
        .map_err(io("read", path))?;
    if out.len() as u64 > PEM_FILE_BYTES_MAX {
        return Err(PkiError::FileTooLarge {
            path: path.to_owned(),
            len: out.len() as u64,
        });
    }
    Ok(out)
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    String::from_utf8(read_bounded(path)?).map_err(|_| PkiError::BadFile {
        path: path.to_owned(),
        reason: "not UTF-8 text (PEM expected)".into(),
    })
}

fn read_key_text(path: &Path) -> Result<String, PkiError> {
    let meta = std::fs::metadata(path).map_err(io("stat", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PkiError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    read_text(path)
}

fn read_cert(path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    let bytes = read_bounded(path)?;
    let mut certs = CertificateDer::pem_slice_iter(&bytes);
    let cert = match certs.next() {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            return Err(PkiError::BadFile {
                path: path.to_owned(),
                reason: format!("bad PEM: {e}"),
            });
        }
        None => {
            return Err(PkiError::BadFile {
                path: path.to_owned(),
                reason: "no CERTIFICATE in the file".into(),
            });
        }
    };
    if certs.next().is_some() {
        return Err(PkiError::BadFile {
            path: path.to_owned(),
            reason: "more than one certificate in the file".into(),
        });
    }
    Ok(cert)
}

/// Creates `path` (never replacing a file) with `mode`, writes `bytes` and fsyncs it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                PkiError::AlreadyExists {
                    path: path.to_owned(),
                }
            } else {
                PkiError::Io {
                    op: "create",
                    path: path.to_owned(),
                    source: e,
                }
            }
        })?;
    // The umask may have cleared bits of `mode` but never added any; set it exactly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod", path))?;
    file.write_all(bytes).map_err(io("write", path))?;
    file.sync_all().map_err(io("fsync", path))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), PkiError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_dns_labels() {
        for ok in ["a", "node-1", "x9", &"a".repeat(63), "0a"] {
            assert!(ok.parse::<NodeId>().is_ok(), "{ok} should be accepted");
        }
        for bad in [
            "",
            &"a".repeat(64),
            "Node",
            "a_b",
            "-a",
            "a-",
            "a.b",
            "123",
            "é",
            "a b",
        ] {
            assert!(bad.parse::<NodeId>().is_err(), "{bad:?} should be refused");
        }
    }
}
