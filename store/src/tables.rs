//! The store's redb tables and their rows.
//!
//! Names carry a version (`-v1`); a change of row layout gets a new name and a migration.
//! Rows are postcard-encoded structs so fields can be read without a schema registry; keys are
//! raw 32-byte segment ids so a table iterates in id order (prefix lookups are range scans).
//!
//! | table | key | value |
//! |---|---|---|
//! | `segments-v1` | segment id | [`SegmentRow`] |
//! | `partials-v1` | segment id | [`PartialRow`] |
//! | `pins-v1` (multimap) | segment id | pin owner (`relay:peer-a`, …) |
//! | `tombstones-v1` | segment id | tombstone sequence number |
//! | `tombstone-order-v1` | tombstone sequence number | segment id |
//! | `quarantine-v1` | segment id | [`QuarantineRow`] |
//! | `store-meta-v1` | key | u64 (`schema_version`, `tombstone_seq`) |
//! | `sequences-v1`, `superseded-v1`, `recalled-v1`, `root-v1` | see [`crate::lifecycle`] | |

use redb::{MultimapTableDefinition, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{StoreError, db};
use crate::keys::PublisherKey;
use crate::manifest::SuccessCondition;

pub(crate) type IdKey = &'static [u8; 32];

pub(crate) const SEGMENTS: TableDefinition<IdKey, &[u8]> = TableDefinition::new("segments-v1");
pub(crate) const PARTIALS: TableDefinition<IdKey, &[u8]> = TableDefinition::new("partials-v1");
pub(crate) const PINS: MultimapTableDefinition<IdKey, &str> =
    MultimapTableDefinition::new("pins-v1");
pub(crate) const TOMBSTONES: TableDefinition<IdKey, u64> = TableDefinition::new("tombstones-v1");
pub(crate) const TOMBSTONE_ORDER: TableDefinition<u64, IdKey> =
    TableDefinition::new("tombstone-order-v1");
pub(crate) const QUARANTINE: TableDefinition<IdKey, &[u8]> = TableDefinition::new("quarantine-v1");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("store-meta-v1");
/// The outboard (group CVs, see `outboard`) of each stored segment of more than one group,
/// written in the ingest's transaction and removed with the segment's row. Checked against the
/// manifest's root whenever it is read, so a damaged one is recomputed, never trusted.
pub(crate) const OUTBOARDS: TableDefinition<IdKey, &[u8]> = TableDefinition::new("outboards-v1");

pub(crate) const META_SCHEMA_VERSION: &str = "schema_version";
pub(crate) const META_TOMBSTONE_SEQ: &str = "tombstone_seq";
/// The schema this build writes and reads.
pub(crate) const SCHEMA_VERSION: u64 = 1;

/// A stored segment: what listing, eviction and status need without opening its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRow {
    pub name: String,
    pub channel: String,
    pub sequence: u64,
    pub publisher: PublisherKey,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub condition: SuccessCondition,
    pub priority: u8,
    pub payload_len: u64,
    /// Length of the whole `.seg` file (header and payload): what counts against the ceiling.
    pub file_len: u64,
    /// Where it came from: a peer id, or `import`.
    pub source: String,
    pub stored_at_ms: u64,
    pub last_used_ms: u64,
    /// Set once, when the segment's success condition first held; never cleared.
    pub propagated_at_ms: Option<u64>,
}

/// A partial ingest kept for resume: its temp file holds the header and `offset` payload bytes,
/// all fsynced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialRow {
    /// Payload bytes fsynced in the temp file.
    pub offset: u64,
    /// Bytes of the temp file before the payload (preamble + signed manifest).
    pub header_bytes: u64,
    pub payload_len: u64,
    pub updated_at_ms: u64,
}

impl PartialRow {
    /// Bytes of the temp file at its checkpoint: what an idle partial counts against the ceiling.
    pub fn checkpoint_len(&self) -> u64 {
        self.header_bytes + self.offset
    }
}

/// A segment whose file failed verification at rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRow {
    pub reason: String,
    pub at_ms: u64,
    pub file_len: u64,
}

pub(crate) fn encode<T: Serialize>(row: &T) -> Vec<u8> {
    // Serialising plain structs into a Vec cannot fail: postcard errors only on a full buffer.
    postcard::to_stdvec(row).expect("postcard encoding into a Vec is infallible")
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(
    table: &'static str,
    bytes: &'a [u8],
) -> Result<T, StoreError> {
    match postcard::take_from_bytes(bytes) {
        Ok((row, [])) => Ok(row),
        Ok((_, rest)) => Err(StoreError::CorruptRow {
            table,
            reason: format!("{} trailing bytes", rest.len()),
        }),
        Err(e) => Err(StoreError::CorruptRow {
            table,
            reason: e.to_string(),
        }),
    }
}

/// Creates every table (so readers never meet a missing one) and checks the schema version.
pub(crate) fn init(db: &redb::Database, path: &std::path::Path) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        txn.open_table(SEGMENTS).map_err(db_err)?;
        txn.open_table(PARTIALS).map_err(db_err)?;
        txn.open_multimap_table(PINS).map_err(db_err)?;
        txn.open_table(TOMBSTONES).map_err(db_err)?;
        txn.open_table(TOMBSTONE_ORDER).map_err(db_err)?;
        txn.open_table(QUARANTINE).map_err(db_err)?;
        txn.open_table(OUTBOARDS).map_err(db_err)?;
        crate::lifecycle::init(&txn).map_err(db_err)?;
        let mut meta = txn.open_table(META).map_err(db_err)?;
        let found = meta
            .get(META_SCHEMA_VERSION)
            .map_err(db_err)?
            .map(|v| v.value());
        match found {
            None => {
                meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)
                    .map_err(db_err)?;
            }
            Some(v) if v == SCHEMA_VERSION => {}
            Some(found) => {
                return Err(StoreError::SchemaVersion {
                    path: path.to_owned(),
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
        }
    }
    txn.commit().map_err(db_err)?;
    // A read proves the tables are reachable before anyone relies on them.
    let read = db.begin_read().map_err(db_err)?;
    read.open_table(SEGMENTS).map_err(db_err)?;
    Ok(())
}

fn db_err<E: Into<redb::Error>>(e: E) -> StoreError {
    db(e)
}
