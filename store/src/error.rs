//! Error types of the store, one enum per operation family.

use std::io;
use std::path::PathBuf;

use crate::id::SegmentId;
use crate::manifest::VerifyError;
use crate::segfile::SegFileError;

/// Opening, reading and maintaining the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation on the data directory failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Another process holds the database open (the daemon, or a second instance).
    #[error("database {path} is held by another process (is edged running?)")]
    Locked { path: PathBuf },
    /// The database file cannot be opened as a redb database. It is never re-initialised.
    #[error("database {path} is corrupt or unreadable: {reason}")]
    CorruptDatabase { path: PathBuf, reason: String },
    /// `edge.redb` is absent but segment files exist: starting would delete them all.
    #[error(
        "database {path} is missing but the data directory holds segment files; refusing to start with an empty index"
    )]
    IndexMissing { path: PathBuf },
    /// The database was written by a version of the store this build does not understand.
    #[error("database {path} has schema version {found}, this build reads version {expected}")]
    SchemaVersion {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    /// A redb operation failed. Fatal for the daemon: the index can no longer be trusted.
    #[error("database error: {0}")]
    Database(#[from] redb::Error),
    /// A row could not be decoded: the index is corrupt.
    #[error("corrupt row in table {table}: {reason}")]
    CorruptRow { table: &'static str, reason: String },
    /// No stored segment has this id.
    #[error("segment {0} not found")]
    NotFound(SegmentId),
    /// No stored segment id starts with this prefix.
    #[error("no segment id starts with {0}")]
    PrefixNotFound(String),
    /// No quarantined segment's id starts with this prefix.
    #[error("no quarantined segment's id starts with {0}")]
    NotQuarantined(String),
    /// Several stored segment ids start with this prefix.
    #[error("segment id prefix {prefix} matches {count} segments; give more characters")]
    AmbiguousPrefix { prefix: String, count: usize },
    /// The segment's file failed verification at rest and was moved to quarantine.
    #[error("segment {id} is corrupt at rest ({reason}); quarantined")]
    Quarantined { id: SegmentId, reason: String },
    /// The segment's file is being evicted or quarantined right now.
    #[error("segment {0} is being evicted")]
    Evicting(SegmentId),
    /// The stored segment's publisher is not (or no longer) in the trusted set: it is neither
    /// sent nor exported. Its bytes are intact, so it is not quarantined; trusting the key
    /// again makes it servable.
    #[error("segment {id} is signed by {publisher}, which this node does not trust")]
    Untrusted {
        id: SegmentId,
        publisher: crate::keys::PublisherKey,
    },
    /// Invalid store configuration.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// The write batch holding this operation failed to commit; nothing of it is durable.
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// The store's committer has stopped (after a fatal database error or at shutdown).
    #[error("the store is closed")]
    Closed,
}

/// Storing a segment: every way an ingest can fail. None of them leaves a visible segment,
/// a row, or a temp file without a partial record.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The `.seg` stream is malformed, truncated, too long, or its payload does not match.
    #[error("segment rejected: {0}")]
    Format(#[from] SegFileError),
    /// Signature, trust or freshness check failed.
    #[error("segment rejected: {0}")]
    Verify(#[from] VerifyError),
    /// The same segment is being ingested from another source right now (retry later).
    #[error("segment {0} is being received from another source")]
    Busy(SegmentId),
    /// The segment does not fit under the ceiling or the free-space floor even after eviction.
    /// Retryable: space frees as segments propagate.
    #[error(
        "store full: segment needs {needed_bytes} bytes, {available_bytes} can be made available"
    )]
    StoreFull {
        needed_bytes: u64,
        available_bytes: u64,
    },
    /// A file operation failed (ENOSPC, EIO, failed fsync). The temp file is removed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The ingest was used after it failed, or fed more bytes than the manifest declares.
    #[error("segment {id}: {reason}")]
    Protocol { id: SegmentId, reason: &'static str },
    /// An import's copy of a segment this store already holds intact does not verify (bad
    /// signature, wrong length or hash): the medium's copy is corrupt, the stored one is kept.
    #[error("segment {id}: this copy is corrupt ({reason}); the node already holds a good copy")]
    CorruptCopy { id: SegmentId, reason: String },
    /// The store failed underneath the ingest.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Not above the highest sequence already seen for its publisher, channel and name (or,
    /// for a root, not above the root version in force): a rollback, refused for good.
    #[error("segment {id} is superseded: sequence {sequence} is not above {highest}, the highest already seen{}", highest_id.map(|h| format!(" (segment {h})")).unwrap_or_default())]
    Superseded {
        id: SegmentId,
        sequence: u64,
        highest: u64,
        highest_id: Option<SegmentId>,
    },
    /// A recall of its channel withdrew this segment: refused for good.
    #[error("segment {id} was recalled by segment {recall}")]
    Recalled { id: SegmentId, recall: SegmentId },
    /// A root segment that cannot be put in force (in words).
    #[error("root segment {id} refused: {reason}")]
    RootRefused { id: SegmentId, reason: String },
    /// A recall segment whose payload is not a valid recall.
    #[error("recall segment {id} refused: {reason}")]
    RecallRefused { id: SegmentId, reason: String },
}

impl IngestError {
    /// True when the same segment may succeed later without any change to it.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            IngestError::Busy(_) | IngestError::StoreFull { .. } | IngestError::Io { .. }
        )
    }
}

/// Opening a file on a medium (a USB stick, a file named on the command line) for reading.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Something other than a regular file is at the path: it was not followed, and not opened
    /// when the name said so before opening.
    #[error("{path} is a {kind}, not a regular file (symlinks are not followed)")]
    NotRegular { path: PathBuf, kind: &'static str },
    /// The file cannot be opened or examined.
    #[error("cannot open {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Exporting a segment into a directory (USB out).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The export directory cannot be opened as a directory (missing, not a directory, or a
    /// symlink, which is not followed).
    #[error("export directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    /// The export directory's path is a symlink: it is not followed, whatever it names.
    #[error(
        "export directory {path} is a symlink, which is not followed: give the directory's own path"
    )]
    DirIsSymlink { path: PathBuf },
    /// Something other than a regular file is at a name the export uses (`<id>.seg`, or a
    /// directory at the temporary name): it is neither followed nor replaced.
    #[error("{path} is a {kind}, not a regular file; it is left as it is and not exported over")]
    NotRegular { path: PathBuf, kind: &'static str },
    /// The bytes handed to the export are another segment.
    #[error("asked to export segment {wanted}, was given segment {found}")]
    WrongSegment { wanted: SegmentId, found: SegmentId },
    /// The bytes handed to the export are not a valid copy of the segment (bad signature,
    /// truncated, padded, wrong hash): nothing was exported.
    #[error("copy of segment {id} does not verify: {source}")]
    BadCopy {
        id: SegmentId,
        #[source]
        source: SegFileError,
    },
    /// Reading the copy failed (the stored file, or the daemon's stream).
    #[error("reading segment {id}: {source}")]
    Read {
        id: SegmentId,
        #[source]
        source: io::Error,
    },
    /// A file operation in the export directory failed. No temporary file is left behind.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The stored segment cannot be read (not stored, quarantined, untrusted, store error).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Converts any redb error family into [`StoreError::Database`].
pub(crate) fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Database(e.into())
}
