//! Publisher keys: the ed25519 keys that sign segment manifests.
//!
//! - [`PublisherKey`] is a public key, written `ed25519:<64 hex>` in config files and logs.
//! - [`PublisherSecret`] is a signing key. Its file holds one line,
//!   `edged-publisher-secret-v1 <64 hex seed>\n`, mode 0600. [`PublisherSecret::save`] never
//!   replaces an existing file and makes the new one durable (file fsync, link, directory fsync);
//!   [`PublisherSecret::load`] refuses a file that group or others may read or write and a file
//!   larger than [`KEY_FILE_BYTES_MAX`], before reading it.
//! - [`TrustedPublishers`] (in [`crate::trust`]) is what a node accepts segments from.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::limits::KEY_FILE_BYTES_MAX;

/// Prefix of a public key in its text form.
const PUBLIC_KEY_PREFIX: &str = "ed25519:";
/// First word of a secret key file; names the file format and its version.
const SECRET_FILE_TAG: &str = "edged-publisher-secret-v1";
/// Mode of a secret key file.
const SECRET_FILE_MODE: u32 = 0o600;
/// Permission bits that must be clear on a secret key file (any access by group or others).
const SECRET_FILE_FORBIDDEN_BITS: u32 = 0o077;

/// Errors handling publisher keys and key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A public key is not `ed25519:<64 hex>` or is not a valid ed25519 point.
    #[error("invalid publisher key {input:?}: {reason}")]
    InvalidPublicKey {
        /// The text that failed to parse (public keys are not secret).
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The operating system's random source failed while generating a key.
    #[error("cannot generate a publisher key: random source failed: {0}")]
    Random(getrandom::Error),
    /// An I/O operation on a key file or its directory failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `save` refuses to replace an existing key file.
    #[error("key file {path} already exists; refusing to overwrite it")]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A secret key file is readable or writable by group or others.
    #[error("key file {path} has insecure permissions {mode:04o}; it must be 0600 (chmod 600)")]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A secret key file is not a regular file.
    #[error("key file {path} is not a regular file")]
    NotRegularFile {
        /// The path given.
        path: PathBuf,
    },
    /// A secret key file is larger than [`KEY_FILE_BYTES_MAX`]; it was not read.
    #[error("key file {path} is {len} bytes, larger than the {KEY_FILE_BYTES_MAX} bytes allowed")]
    FileTooLarge {
        /// The key file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
    },
    /// A secret key file does not hold `edged-publisher-secret-v1 <64 hex>\n`.
    #[error("key file {path} is malformed: {reason}")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it (never the secret itself).
        reason: &'static str,
    },
}

/// An ed25519 public key of a publisher. Text form: `ed25519:<64 lowercase hex>`.
///
/// Decoded manifests may carry any 32 bytes here; a key that is not a valid point simply never
/// verifies. Parsing from text ([`FromStr`]) additionally checks that it is a valid point, so a
/// config file cannot list a key that could never verify.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublisherKey([u8; 32]);

impl PublisherKey {
    /// A key from its 32 raw bytes (not checked to be a valid point).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PublisherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_KEY_PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for PublisherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublisherKey({self})")
    }
}

impl FromStr for PublisherKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let invalid = |reason| KeyError::InvalidPublicKey {
            input: s.to_string(),
            reason,
        };
        let hex_part = s
            .strip_prefix(PUBLIC_KEY_PREFIX)
            .ok_or_else(|| invalid("must start with \"ed25519:\""))?;
        if hex_part.len() != 64 {
            return Err(invalid("must have 64 hex characters after \"ed25519:\""));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| invalid("not hex"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| invalid("not a valid ed25519 public key"))?;
        Ok(Self(bytes))
    }
}

/// A publisher's signing key. Its `Debug` shows only the public key.
pub struct PublisherSecret {
    key: SigningKey,
}

impl fmt::Debug for PublisherSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublisherSecret")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl PublisherSecret {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(KeyError::Random)?;
        Ok(Self::from_seed(seed))
    }

    /// The key derived from a 32-byte seed (deterministic; for tests and for loading).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The matching public key.
    pub fn public(&self) -> PublisherKey {
        PublisherKey(self.key.verifying_key().to_bytes())
    }

    /// Signs `message` (callers prepend their domain-separation tag).
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.key.sign(message).to_bytes()
    }

    /// Writes the key to a new file at `path`, mode 0600, durably; never replaces an existing
    /// file.
    ///
    /// The key is written to a temporary file (created exclusively, mode 0600) in the same
    /// directory and fsynced, then hard-linked to `path` — which, unlike `rename`, fails if `path`
    /// exists — and the temporary name is removed and the directory fsynced.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| KeyError::Io { path: p, source }
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path.file_name().ok_or_else(|| KeyError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
        })?;
        if path.symlink_metadata().is_ok() {
            return Err(KeyError::AlreadyExists {
                path: path.to_path_buf(),
            });
        }
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(KeyError::Random)?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(".tmp-{}", hex::encode(suffix)));
        let tmp = dir.join(tmp_name);

        let line = format!("{SECRET_FILE_TAG} {}\n", hex::encode(self.key.as_bytes()));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(SECRET_FILE_MODE)
                .open(&tmp)?;
            f.write_all(line.as_bytes())?;
            f.sync_all()
        })()
        .map_err(io_err(&tmp));
        let linked = written.and_then(|()| {
            std::fs::hard_link(&tmp, path).map_err(|source| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    KeyError::AlreadyExists {
                        path: path.to_path_buf(),
                    }
                } else {
                    KeyError::Io {
                        path: path.to_path_buf(),
                        source,
                    }
                }
            })
        });
        // Remove the temporary name whatever happened; a failure here after a successful link
        // leaves only a stray 0600 file and is reported.
        let removed = std::fs::remove_file(&tmp);
        linked?;
        removed.map_err(io_err(&tmp))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir))
    }

    /// Reads a key file written by [`PublisherSecret::save`].
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(KeyError::NotRegularFile {
                path: path.to_path_buf(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & SECRET_FILE_FORBIDDEN_BITS != 0 {
            return Err(KeyError::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        if meta.len() > KEY_FILE_BYTES_MAX {
            return Err(KeyError::FileTooLarge {
                path: path.to_path_buf(),
                len: meta.len(),
            });
        }
        // Bounded again while reading, in case the file grows between stat and read.
        let mut text = Vec::with_capacity(KEY_FILE_BYTES_MAX as usize);
        file.take(KEY_FILE_BYTES_MAX + 1)
            .read_to_end(&mut text)
            .map_err(io_err)?;
        if text.len() as u64 > KEY_FILE_BYTES_MAX {
            return Err(KeyError::FileTooLarge {
                path: path.to_path_buf(),
                len: text.len() as u64,
            });
        }
        let seed = parse_secret_line(&text).map_err(|reason| KeyError::Malformed {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(Self::from_seed(seed))
    }
}

/// Parses `edged-publisher-secret-v1 <64 hex>` with an optional final `\n`.
fn parse_secret_line(text: &[u8]) -> Result<[u8; 32], &'static str> {
    let line = text.strip_suffix(b"\n").unwrap_or(text);
    let rest = line
        .strip_prefix(SECRET_FILE_TAG.as_bytes())
        .and_then(|r| r.strip_prefix(b" "))
        .ok_or("expected \"edged-publisher-secret-v1 <64 hex>\"")?;
    if rest.len() != 64 {
        return Err("the seed must be 64 hex characters on one line");
    }
    let mut seed = [0u8; 32];
    hex::decode_to_slice(rest, &mut seed).map_err(|_| "the seed is not hex")?;
    Ok(seed)
}

pub use crate::trust::TrustedPublishers;

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn public_key_text_round_trip() {
        let secret = PublisherSecret::from_seed([7; 32]);
        let key = secret.public();
        let text = key.to_string();
        assert!(text.starts_with("ed25519:"));
        assert_eq!(text.len(), 8 + 64);
        assert_eq!(text.parse::<PublisherKey>().unwrap(), key);
    }

    #[test]
    fn public_key_text_rejections() {
        let good = PublisherSecret::from_seed([7; 32]).public().to_string();
        let hex_part = &good[8..];
        for bad in [
            hex_part.to_string(),
            format!("ed25519:{}", &hex_part[..63]),
            format!("ed25519:{hex_part}0"),
            format!("ed25519:{}zz", &hex_part[..62]),
            format!("ED25519:{hex_part}"),
            // y = 2 is not on the curve: decompression fails.
            format!("ed25519:02{}", "00".repeat(31)),
        ] {
            assert!(
                matches!(
                    bad.parse::<PublisherKey>(),
                    Err(KeyError::InvalidPublicKey { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn secret_debug_does_not_show_seed() {
        let secret = PublisherSecret::from_seed([0xab; 32]);
        let shown = format!("{secret:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.contains("ed25519:"));
    }

    #[test]
    fn generate_gives_distinct_keys() {
        let a = PublisherSecret::generate().unwrap();
        let b = PublisherSecret::generate().unwrap();
        assert_ne!(a.public(), b.public());
    }

    #[test]
    fn key_file_is_0600_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("publisher.key");
        let secret = PublisherSecret::generate().unwrap();
        secret.save(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("edged-publisher-secret-v1 "));
        assert!(text.ends_with('\n'));
        assert_eq!(text.len(), SECRET_FILE_TAG.len() + 1 + 64 + 1);
        let loaded = PublisherSecret::load(&path).unwrap();
        assert_eq!(loaded.public(), secret.public());
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn key_save_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("publisher.key");
        let first = PublisherSecret::from_seed([1; 32]);
        first.save(&path).unwrap();
        let err = PublisherSecret::from_seed([2; 32]).save(&path).unwrap_err();
        assert!(matches!(err, KeyError::AlreadyExists { .. }), "{err}");
        assert_eq!(
            PublisherSecret::load(&path).unwrap().public(),
            first.public()
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn key_load_refuses_0644() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("publisher.key");
        PublisherSecret::from_seed([3; 32]).save(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match PublisherSecret::load(&path) {
                Err(KeyError::InsecurePermissions { path: p, mode: m }) => {
                    assert_eq!(p, path);
                    assert_eq!(m, mode);
                }
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(PublisherSecret::load(&path).is_ok());
    }

    fn write_key_file(dir: &Path, contents: &[u8]) -> PathBuf {
        let path = dir.join("k");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.write_all(contents).unwrap();
        path
    }

    #[test]
    fn key_load_of_oversized_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A valid line padded past the bound: refused for its size, before parsing.
        let mut contents = format!("{SECRET_FILE_TAG} {}\n", "11".repeat(32)).into_bytes();
        contents.resize(KEY_FILE_BYTES_MAX as usize + 1, b'\n');
        let path = write_key_file(dir.path(), &contents);
        match PublisherSecret::load(&path) {
            Err(KeyError::FileTooLarge { len, .. }) => assert_eq!(len, KEY_FILE_BYTES_MAX + 1),
            other => panic!("{other:?}"),
        }
        // At the bound it is read (and then refused as malformed for the padding).
        let dir = tempfile::tempdir().unwrap();
        contents.truncate(KEY_FILE_BYTES_MAX as usize);
        let path = write_key_file(dir.path(), &contents);
        assert!(matches!(
            PublisherSecret::load(&path),
            Err(KeyError::Malformed { .. })
        ));
    }

    #[test]
    fn key_load_malformed_and_missing() {
        let seed_hex = "22".repeat(32);
        let cases: Vec<(Vec<u8>, bool)> = vec![
            (format!("{SECRET_FILE_TAG} {seed_hex}\n").into_bytes(), true),
            (format!("{SECRET_FILE_TAG} {seed_hex}").into_bytes(), true),
            (
                format!("{SECRET_FILE_TAG} {seed_hex}\n\n").into_bytes(),
                false,
            ),
            (
                format!("{SECRET_FILE_TAG}  {seed_hex}\n").into_bytes(),
                false,
            ),
            (
                format!("edged-publisher-secret-v2 {seed_hex}\n").into_bytes(),
                false,
            ),
            (
                format!("{SECRET_FILE_TAG} {}\n", &seed_hex[..62]).into_bytes(),
                false,
            ),
            (
                format!("{SECRET_FILE_TAG} {}zz\n", &seed_hex[..62]).into_bytes(),
                false,
            ),
            (Vec::new(), false),
        ];
        for (contents, ok) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = write_key_file(dir.path(), &contents);
            let got = PublisherSecret::load(&path);
            if ok {
                assert_eq!(
                    got.unwrap().public(),
                    PublisherSecret::from_seed([0x22; 32]).public()
                );
            } else {
                assert!(matches!(got, Err(KeyError::Malformed { .. })), "{got:?}");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        match PublisherSecret::load(&missing) {
            Err(KeyError::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            PublisherSecret::load(dir.path()),
            Err(KeyError::NotRegularFile { .. }) | Err(KeyError::InsecurePermissions { .. })
        ));
    }

    #[test]
    fn trusted_publishers_contains() {
        let a = PublisherSecret::from_seed([1; 32]).public();
        let b = PublisherSecret::from_seed([2; 32]).public();
        let trusted: TrustedPublishers = [a, a].into_iter().collect();
        assert!(trusted.contains(&a));
        assert!(!trusted.contains(&b));
        assert_eq!(trusted.len(), 1);
        assert!(TrustedPublishers::default().is_empty());
    }
}
