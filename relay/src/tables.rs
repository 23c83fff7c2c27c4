//! The relay's redb tables, in the store's database (one database per node, so that storing a
//! segment and scheduling its jobs commit together, INV-11).
//!
//! Names carry a version (`-v1`); a change of row layout gets a new name and a migration. Rows
//! are postcard-encoded structs, decoded with `take_from_bytes` so trailing bytes are an error.
//! Integers inside keys are big-endian so byte order is numeric order.
//!
//! | table | key | value |
//! |---|---|---|
//! | `relay-jobs-v1` | segment id (32) ‖ peer id (UTF-8) | [`JobRow`] |
//! | `relay-due-v1` | due ms (u64 BE) ‖ segment id ‖ peer id — pending jobs only | priority (u8) |
//! | `relay-dead-letters-v1` | segment id ‖ peer id — unpurged dead letters only | [`DeadRow`] |
//! | `relay-propagation-v1` | segment id | [`PropRow`] |
//! | `relay-job-counts-v1` | state name ([`CountSlot::key`]) | u64: jobs in that state |
//! | `relay-meta-v1` | key | u64 (`schema_version`) |
//!
//! Every job of a segment sits under one key prefix (its id), so the jobs of a segment are one
//! range scan. `relay-due-v1` holds exactly the jobs whose state is `pending` (the ledger keeps
//! the two in step inside every transaction), so start-up loads pending work without reading
//! finished jobs. `relay-job-counts-v1` holds the number of jobs in each state (purged dead
//! letters apart from the others), changed in the transaction of every job change, so the
//! metrics read six rows instead of every job ([`crate::Relay::counters`]); a database created
//! before the table existed gets it built once from `relay-jobs-v1` when the relay opens.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use store::SegmentId;
use store::manifest::SuccessCondition;

use crate::core::{Counts, JobKey, Tally};
use crate::peer::NodeId;

pub(crate) const JOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("relay-jobs-v1");
pub(crate) const DUE: TableDefinition<&[u8], u8> = TableDefinition::new("relay-due-v1");
pub(crate) const DEAD: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("relay-dead-letters-v1");
pub(crate) const PROPAGATION: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("relay-propagation-v1");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("relay-meta-v1");
pub(crate) const JOB_COUNTS: TableDefinition<&str, u64> =
    TableDefinition::new("relay-job-counts-v1");

pub(crate) const META_SCHEMA_VERSION: &str = "schema_version";
/// The ledger schema this build writes and reads.
pub const SCHEMA_VERSION: u64 = 1;

/// The state of a job. `Pending` is the only non-terminal state; `Dead` can go back to `Pending`
/// by an operator's requeue, to `Cancelled` when a `one_peer` condition is met, or to
/// `Delivered` when the peer pulled the segment through catch-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum JobState {
    Pending,
    Delivered,
    Refused,
    Cancelled,
    Dead,
}

impl JobState {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Delivered => "delivered",
            JobState::Refused => "refused",
            JobState::Cancelled => "cancelled",
            JobState::Dead => "dead",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row of `relay-job-counts-v1`: a job state, with purged dead letters counted apart from the
/// dead letters still in the queue (as in a segment's [`Tally`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CountSlot {
    Pending,
    Delivered,
    Refused,
    Cancelled,
    /// Dead letters not purged (in `relay-dead-letters-v1`).
    Dead,
    /// Dead jobs whose dead letter an operator purged.
    Purged,
}

impl CountSlot {
    pub const ALL: [CountSlot; 6] = [
        CountSlot::Pending,
        CountSlot::Delivered,
        CountSlot::Refused,
        CountSlot::Cancelled,
        CountSlot::Dead,
        CountSlot::Purged,
    ];

    /// The slot of a job in `state` (`purged`: its dead letter was purged).
    pub fn of(state: JobState, purged: bool) -> CountSlot {
        match state {
            JobState::Pending => CountSlot::Pending,
            JobState::Delivered => CountSlot::Delivered,
            JobState::Refused => CountSlot::Refused,
            JobState::Cancelled => CountSlot::Cancelled,
            JobState::Dead if purged => CountSlot::Purged,
            JobState::Dead => CountSlot::Dead,
        }
    }

    /// Its key in `relay-job-counts-v1`.
    pub fn key(&self) -> &'static str {
        match self {
            CountSlot::Pending => "pending",
            CountSlot::Delivered => "delivered",
            CountSlot::Refused => "refused",
            CountSlot::Cancelled => "cancelled",
            CountSlot::Dead => "dead",
            CountSlot::Purged => "purged",
        }
    }
}

/// One job: a segment owed to a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRow {
    pub state: JobState,
    pub counts: Counts,
    /// Wall-clock UTC ms when the next attempt may start (meaningful while pending).
    pub due_ms: u64,
    /// The last failure, kept after the job ends (a dead letter's reason).
    pub last_error: Option<String>,
    pub priority: u8,
    pub expires_at_ms: Option<u64>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Operator requeues so far.
    pub requeues: u32,
    /// A dead letter an operator purged.
    pub purged: bool,
}

/// A dead letter: a job that exhausted its attempts, until requeued, purged or cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadRow {
    pub attempts: u32,
    pub store_full_attempts: u32,
    pub last_error: String,
    pub dead_at_ms: u64,
    /// When its pin on the segment is released; `None` once released (the segment may then be
    /// evicted; the record stays).
    pub pin_release_at_ms: Option<u64>,
}

/// Propagation state of one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropRow {
    pub condition: SuccessCondition,
    pub priority: u8,
    /// Where the segment came from (a peer id, or `import`).
    pub source: String,
    /// The source is one of `known_peers` (it holds the segment).
    pub source_is_peer: bool,
    pub scheduled_at_ms: u64,
    pub tally: Tally,
    /// Set once, in the transaction of the change that made the condition hold; never cleared.
    pub propagated_at_ms: Option<u64>,
    /// Set once when the condition can no longer hold, so it is logged once.
    pub never_at_ms: Option<u64>,
}

pub(crate) fn job_key(key: &JobKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + key.peer.as_str().len());
    out.extend_from_slice(&key.seg.0);
    out.extend_from_slice(key.peer.as_str().as_bytes());
    out
}

pub(crate) fn parse_job_key(bytes: &[u8]) -> Result<JobKey, redb::Error> {
    if bytes.len() <= 32 {
        return Err(corrupt("relay-jobs-v1", "key shorter than a segment id"));
    }
    let mut seg = [0u8; 32];
    seg.copy_from_slice(&bytes[..32]);
    let peer = std::str::from_utf8(&bytes[32..])
        .ok()
        .and_then(|s| NodeId::new(s).ok())
        .ok_or_else(|| corrupt("relay-jobs-v1", "key holds an invalid peer id"))?;
    Ok(JobKey {
        seg: SegmentId(seg),
        peer,
    })
}

pub(crate) fn due_key(due_ms: u64, key: &JobKey) -> Vec<u8> {
    let mut out = due_ms.to_be_bytes().to_vec();
    out.extend_from_slice(&job_key(key));
    out
}

pub(crate) fn parse_due_key(bytes: &[u8]) -> Result<(u64, JobKey), redb::Error> {
    if bytes.len() <= 8 {
        return Err(corrupt("relay-due-v1", "key too short"));
    }
    let mut due = [0u8; 8];
    due.copy_from_slice(&bytes[..8]);
    Ok((u64::from_be_bytes(due), parse_job_key(&bytes[8..])?))
}

/// The key range holding every job of `seg`.
pub(crate) fn segment_range(seg: &SegmentId) -> (Vec<u8>, Vec<u8>) {
    let low = seg.0.to_vec();
    let mut high = seg.0.to_vec();
    // Peer ids are ASCII, so every key of this segment sorts below seg ‖ 0xFF.
    high.push(0xFF);
    (low, high)
}

pub(crate) fn encode<T: Serialize>(row: &T) -> Vec<u8> {
    // Serialising plain structs into a Vec cannot fail: postcard errors only on a full buffer.
    postcard::to_stdvec(row).expect("postcard encoding into a Vec is infallible")
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(
    table: &'static str,
    bytes: &'a [u8],
) -> Result<T, redb::Error> {
    match postcard::take_from_bytes(bytes) {
        Ok((row, [])) => Ok(row),
        Ok((_, rest)) => Err(corrupt(table, &format!("{} trailing bytes", rest.len()))),
        Err(e) => Err(corrupt(table, &e.to_string())),
    }
}

pub(crate) fn corrupt(table: &str, reason: &str) -> redb::Error {
    redb::Error::Corrupted(format!("relay table {table}: {reason}"))
}

/// Fills `relay-job-counts-v1` from `relay-jobs-v1` if it is empty (a new database, or one
/// written before the table existed): one scan, once. Every slot gets a row, so the table is
/// never empty afterwards.
fn build_job_counts(txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
    use redb::ReadableTableMetadata;
    if !txn.open_table(JOB_COUNTS)?.is_empty()? {
        return Ok(());
    }
    let mut counts = std::collections::BTreeMap::new();
    for entry in txn.open_table(JOBS)?.iter()? {
        let (_, v) = entry?;
        let row: JobRow = decode("relay-jobs-v1", v.value())?;
        *counts
            .entry(CountSlot::of(row.state, row.purged))
            .or_insert(0u64) += 1;
    }
    let mut table = txn.open_table(JOB_COUNTS)?;
    for slot in CountSlot::ALL {
        table.insert(slot.key(), counts.get(&slot).copied().unwrap_or(0))?;
    }
    Ok(())
}

/// Creates the relay's tables (so readers never meet a missing one) and checks the schema
/// version. Runs through the store's committer.
pub(crate) fn init(store: &store::Store) -> Result<(), crate::RelayError> {
    let found = store.writer().write(|txn| {
        txn.open_table(JOBS)?;
        txn.open_table(DUE)?;
        txn.open_table(DEAD)?;
        txn.open_table(PROPAGATION)?;
        build_job_counts(txn)?;
        let mut meta = txn.open_table(META)?;
        let found = meta.get(META_SCHEMA_VERSION)?.map(|v| v.value());
        if found.is_none() {
            meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
        }
        Ok(found)
    })?;
    match found {
        None => {}
        Some(v) if v == SCHEMA_VERSION => {}
        Some(found) => {
            return Err(crate::RelayError::SchemaVersion {
                found,
                expected: SCHEMA_VERSION,
            });
        }
    }
    // A read proves the tables are reachable before anyone relies on them.
    let read = store
        .database()
        .begin_read()
        .map_err(|e| crate::RelayError::Database(e.into()))?;
    read.open_table(JOBS)
        .map_err(|e| crate::RelayError::Database(e.into()))?;
    Ok(())
}
