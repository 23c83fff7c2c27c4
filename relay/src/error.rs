//! The relay's error type. Operating outcomes (a peer refused, a requeue found nothing to do)
//! are values of their own operations, not errors; these are the failures of the relay itself.

use crate::limits::ConfigError;

/// A failure of the relay itself. Every variant but `Config` means the ledger cannot be trusted
/// or reached: fatal for the daemon (its service manager restarts it).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The relay configuration contradicts itself.
    #[error("invalid relay configuration: {0}")]
    Config(#[from] ConfigError),
    /// The store (its committer, its database) failed underneath the relay.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A read of the ledger failed, or a row could not be decoded.
    #[error("ledger database error: {0}")]
    Database(#[from] redb::Error),
    /// The ledger was written by a version of the relay this build does not understand.
    #[error("relay ledger has schema version {found}, this build reads version {expected}")]
    SchemaVersion { found: u64, expected: u64 },
    /// The store's committer stopped before answering.
    #[error("the relay's store is closed")]
    Closed,
}

/// A redb failure of the ledger, as the relay's error.
pub(crate) fn db<E: Into<redb::Error>>(e: E) -> RelayError {
    RelayError::Database(e.into())
}
