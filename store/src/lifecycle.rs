//! The content lifecycle in the index: supersession and anti-rollback, recalls, and the trust
//! root in force.
//!
//! | table | key | value |
//! |---|---|---|
//! | `sequences-v1` | [`sequence_key`] of (publisher, channel, name) | [`SequenceRow`]: the highest sequence seen and a bounded history |
//! | `superseded-v1` | segment id | id of the segment that superseded it |
//! | `recalled-v1` | segment id | [`RecalledRow`]: which recall withdrew it |
//! | `root-v1` | `"current"` | the [`SignedRoot`] in force, once one arrived as a segment |
//!
//! Rules, each decided inside the transaction that commits the segment (and checked once
//! before its payload is received, so a refused segment costs no payload bytes):
//! - a content or recall segment whose sequence is not above the highest already seen for its
//!   publisher, channel and name is refused ([`IngestError::Superseded`]) — unless it is that
//!   very segment (an evicted copy coming back). The highest sequence outlives the segment: it
//!   is never removed by eviction, restart or recall (INV-35);
//! - a higher sequence supersedes the stored segment holding the previous highest: it is
//!   recorded in `superseded-v1` and named in [`Lifecycle::superseded`] so that the relay
//!   cancels its jobs in the same transaction (which unpins it: it becomes evictable);
//! - a recall withdraws every named segment of its own channel it holds (rows, outboard, pins;
//!   the file after the commit) and records every named id, held or not; a recalled id of that
//!   channel is refused from then on ([`IngestError::Recalled`]), including an ingest that
//!   was under way when the recall committed (INV-39);
//! - a root segment is applied only if its chain leads from the root in force to the version
//!   its manifest names; the new root is written here and put in force after the commit
//!   (INV-37).

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::error::IngestError;
use crate::id::SegmentId;
use crate::keys::PublisherKey;
use crate::limits::SEQUENCE_HISTORY_MAX;
use crate::manifest::{SegmentKind, SignedManifest};
use crate::recall::RecallList;
use crate::root::{RootChain, SignedRoot};
use crate::tables::{self, IdKey, OUTBOARDS, PINS, SEGMENTS, SegmentRow};
use crate::trust::TrustedPublishers;

pub(crate) const SEQUENCES: TableDefinition<IdKey, &[u8]> = TableDefinition::new("sequences-v1");
pub(crate) const SUPERSEDED: TableDefinition<IdKey, IdKey> = TableDefinition::new("superseded-v1");
pub(crate) const RECALLED: TableDefinition<IdKey, &[u8]> = TableDefinition::new("recalled-v1");
pub(crate) const ROOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("root-v1");
const ROOT_CURRENT: &str = "current";

/// One sequence seen for a publisher, channel and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceEvent {
    /// The sequence.
    pub sequence: u64,
    /// The segment that carried it.
    pub id: SegmentId,
    /// When it was stored here, UTC ms.
    pub at_ms: u64,
}

/// The highest sequence seen for a publisher, channel and name, with the last changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceRow {
    /// The publisher.
    pub publisher: PublisherKey,
    /// The channel.
    pub channel: String,
    /// The segment name.
    pub name: String,
    /// The highest sequence seen: lower or equal ones are refused.
    pub highest: u64,
    /// The segment that carried it.
    pub highest_id: SegmentId,
    /// Up to [`SEQUENCE_HISTORY_MAX`] sequences seen, oldest first.
    pub history: Vec<SequenceEvent>,
}

/// Why a segment id is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecalledRow {
    /// The channel of the recall (only segments of that channel are withdrawn by it).
    pub channel: String,
    /// The recall segment.
    pub recall: SegmentId,
    /// When the recall was applied here, UTC ms.
    pub at_ms: u64,
    /// Whether this node held the segment then.
    pub held: bool,
}

/// What committing a segment did to others, for the caller's writes in the same transaction
/// (the relay cancels their jobs) and for whoever delivers locally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    /// Stored segments the new one superseded (still stored, now evictable).
    pub superseded: Vec<SegmentId>,
    /// Stored segments the new recall withdrew (rows gone; files removed after the commit).
    pub withdrawn: Vec<SegmentId>,
    /// The root version put in force by this segment.
    pub root_version: Option<u64>,
}

/// Where a sequence stands against the row of its publisher, channel and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceVerdict {
    /// Above the highest seen (or the first): accepted, supersedes the previous.
    Newer,
    /// The very segment that holds the highest: accepted, changes nothing.
    Same,
    /// Not above the highest: refused.
    Stale {
        /// The highest sequence seen.
        highest: u64,
        /// The segment that carried it.
        highest_id: SegmentId,
    },
}

/// Pure: the anti-rollback rule.
pub fn sequence_verdict(
    row: Option<&SequenceRow>,
    sequence: u64,
    id: SegmentId,
) -> SequenceVerdict {
    match row {
        None => SequenceVerdict::Newer,
        Some(r) if r.highest_id == id => SequenceVerdict::Same,
        // Mutation point (INV-35): an equal sequence is taken as newer.
        Some(r) if r.highest == sequence && crate::mutants::active("accept_equal_sequence") => {
            SequenceVerdict::Newer
        }
        Some(r) if sequence > r.highest => SequenceVerdict::Newer,
        Some(r) => SequenceVerdict::Stale {
            highest: r.highest,
            highest_id: r.highest_id,
        },
    }
}

/// The key of a publisher, channel and name in `sequences-v1`: blake3 of a domain tag and the
/// three, each length-prefixed, so no two triples share a key.
pub fn sequence_key(publisher: &PublisherKey, channel: &str, name: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"edged/sequence-key/v1\0");
    h.update(publisher.as_bytes());
    for part in [channel, name] {
        h.update(&(part.len() as u32).to_le_bytes());
        h.update(part.as_bytes());
    }
    *h.finalize().as_bytes()
}

fn db(e: impl Into<redb::Error>) -> IngestError {
    IngestError::Store(crate::error::db(e))
}

fn read_seq(
    table: &impl ReadableTable<IdKey, &'static [u8]>,
    key: &[u8; 32],
) -> Result<Option<SequenceRow>, IngestError> {
    let row = table.get(key).map_err(db)?;
    Ok(row
        .map(|v| tables::decode::<SequenceRow>("sequences-v1", v.value()))
        .transpose()?)
}

fn read_recalled(
    table: &impl ReadableTable<IdKey, &'static [u8]>,
    id: &SegmentId,
) -> Result<Option<RecalledRow>, IngestError> {
    let row = table.get(&id.0).map_err(db)?;
    Ok(row
        .map(|v| tables::decode::<RecalledRow>("recalled-v1", v.value()))
        .transpose()?)
}

/// The rules that need no payload, against the tables `seqs` and `recalled` (of a read or a
/// write transaction) and the trust in force.
fn check_header(
    seqs: &impl ReadableTable<IdKey, &'static [u8]>,
    recalled: &impl ReadableTable<IdKey, &'static [u8]>,
    signed: &SignedManifest,
    trusted: &TrustedPublishers,
) -> Result<(), IngestError> {
    let id = signed.id();
    let m = signed.manifest();
    if m.kind == SegmentKind::Root {
        if trusted.root().is_none() {
            return Err(IngestError::RootRefused {
                id,
                reason: "this node has no trust root document ([publishers] trusted is a fixed list): set [publishers] root to take root rotations".into(),
            });
        }
        let current = trusted.root_version();
        if m.sequence <= current {
            return Err(IngestError::Superseded {
                id,
                sequence: m.sequence,
                highest: current,
                highest_id: None,
            });
        }
        return Ok(());
    }
    // Mutation point (INV-39): a recalled segment is taken again when it is offered.
    if let Some(r) = read_recalled(recalled, &id)?
        && r.channel == m.channel
        && !crate::mutants::active("accept_recalled")
    {
        return Err(IngestError::Recalled {
            id,
            recall: r.recall,
        });
    }
    let key = sequence_key(&m.publisher, &m.channel, &m.name);
    match sequence_verdict(read_seq(seqs, &key)?.as_ref(), m.sequence, id) {
        SequenceVerdict::Newer | SequenceVerdict::Same => Ok(()),
        SequenceVerdict::Stale {
            highest,
            highest_id,
        } => Err(IngestError::Superseded {
            id,
            sequence: m.sequence,
            highest,
            highest_id: Some(highest_id),
        }),
    }
}

/// Checked before a payload is received (and again at the commit, by [`apply`]).
pub(crate) fn admit(
    read: &redb::ReadTransaction,
    signed: &SignedManifest,
    trusted: &TrustedPublishers,
) -> Result<(), IngestError> {
    let seqs = read.open_table(SEQUENCES).map_err(db)?;
    let recalled = read.open_table(RECALLED).map_err(db)?;
    check_header(&seqs, &recalled, signed, trusted)
}

/// What [`apply`] did, for the store to finish after the commit.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub(crate) lifecycle: Lifecycle,
    /// Rows of the withdrawn segments (their files are removed after the commit).
    pub(crate) withdrawn_rows: Vec<(SegmentId, SegmentRow)>,
    /// The root to put in force after the commit.
    pub(crate) root: Option<SignedRoot>,
}

/// Decides the segment's admission inside the transaction that commits it and makes its
/// effects. A refusal (`Ok(Err(_))`) has written nothing (the committer's contract); `payload`
/// is the whole payload of a recall or root segment, empty for content.
pub(crate) fn apply(
    txn: &WriteTransaction,
    signed: &SignedManifest,
    payload: &[u8],
    trusted: &TrustedPublishers,
    now_ms: u64,
) -> Result<Result<Applied, IngestError>, redb::Error> {
    match apply_inner(txn, signed, payload, trusted, now_ms) {
        Ok(applied) => Ok(Ok(applied)),
        Err(IngestError::Store(crate::error::StoreError::Database(e))) => Err(e),
        Err(refused) => Ok(Err(refused)),
    }
}

fn apply_inner(
    txn: &WriteTransaction,
    signed: &SignedManifest,
    payload: &[u8],
    trusted: &TrustedPublishers,
    now_ms: u64,
) -> Result<Applied, IngestError> {
    let id = signed.id();
    let m = signed.manifest();
    let mut applied = Applied::default();
    // Every check first, every write after: a refusal must leave the transaction untouched.
    let (seq_key, seq_row) = {
        let seqs = txn.open_table(SEQUENCES).map_err(db)?;
        let recalled = txn.open_table(RECALLED).map_err(db)?;
        check_header(&seqs, &recalled, signed, trusted)?;
        let key = sequence_key(&m.publisher, &m.channel, &m.name);
        let row = read_seq(&seqs, &key)?;
        (key, row)
    };
    let recall = match m.kind {
        SegmentKind::Recall => {
            Some(
                RecallList::decode(payload).map_err(|e| IngestError::RecallRefused {
                    id,
                    reason: e.to_string(),
                })?,
            )
        }
        _ => None,
    };
    if m.kind == SegmentKind::Root {
        let root = next_root(txn, signed, payload, trusted, now_ms)?;
        txn.open_table(ROOTS)
            .map_err(db)?
            .insert(ROOT_CURRENT, root.encode().as_slice())
            .map_err(db)?;
        applied.lifecycle.root_version = Some(root.version());
        applied.root = Some(root);
        return Ok(applied);
    }

    if sequence_verdict(seq_row.as_ref(), m.sequence, id) == SequenceVerdict::Newer {
        let mut history = seq_row
            .as_ref()
            .map(|r| r.history.clone())
            .unwrap_or_default();
        if let Some(prev) = &seq_row {
            let still_stored = txn
                .open_table(SEGMENTS)
                .map_err(db)?
                .get(&prev.highest_id.0)
                .map_err(db)?
                .is_some();
            if still_stored {
                txn.open_table(SUPERSEDED)
                    .map_err(db)?
                    .insert(&prev.highest_id.0, &id.0)
                    .map_err(db)?;
                applied.lifecycle.superseded.push(prev.highest_id);
            }
        }
        history.push(SequenceEvent {
            sequence: m.sequence,
            id,
            at_ms: now_ms,
        });
        if history.len() > SEQUENCE_HISTORY_MAX {
            history.drain(..history.len() - SEQUENCE_HISTORY_MAX);
        }
        let row = SequenceRow {
            publisher: m.publisher,
            channel: m.channel.clone(),
            name: m.name.clone(),
            highest: m.sequence,
            highest_id: id,
            history,
        };
        txn.open_table(SEQUENCES)
            .map_err(db)?
            .insert(&seq_key, tables::encode(&row).as_slice())
            .map_err(db)?;
    }

    if let Some(list) = recall {
        let mut recalled = txn.open_table(RECALLED).map_err(db)?;
        let mut segments = txn.open_table(SEGMENTS).map_err(db)?;
        for target in list.ids() {
            if read_recalled(&recalled, target)?.is_some() {
                continue;
            }
            let held = segments
                .get(&target.0)
                .map_err(db)?
                .map(|v| tables::decode::<SegmentRow>("segments-v1", v.value()))
                .transpose()?;
            let held = held.filter(|row| row.channel == m.channel);
            let row = RecalledRow {
                channel: m.channel.clone(),
                recall: id,
                at_ms: now_ms,
                held: held.is_some(),
            };
            recalled
                .insert(&target.0, tables::encode(&row).as_slice())
                .map_err(db)?;
            if let Some(seg_row) = held {
                segments.remove(&target.0).map_err(db)?;
                txn.open_table(OUTBOARDS)
                    .map_err(db)?
                    .remove(&target.0)
                    .map_err(db)?;
                txn.open_multimap_table(PINS)
                    .map_err(db)?
                    .remove_all(&target.0)
                    .map_err(db)?;
                applied.lifecycle.withdrawn.push(*target);
                applied.withdrawn_rows.push((*target, seg_row));
            }
        }
    }
    Ok(applied)
}

/// The root a root segment puts in force: its chain must lead from the root in force (the
/// newer of the store's and the node's) to exactly the version its manifest names.
fn next_root(
    txn: &WriteTransaction,
    signed: &SignedManifest,
    payload: &[u8],
    trusted: &TrustedPublishers,
    now_ms: u64,
) -> Result<SignedRoot, IngestError> {
    let id = signed.id();
    let refused = |reason: String| IngestError::RootRefused { id, reason };
    let stored = stored_root_in(txn)?;
    let current = match (stored, trusted.root()) {
        (Some(s), Some(t)) if s.version() > t.version() => s,
        (_, Some(t)) => t.clone(),
        (Some(s), None) => s,
        (None, None) => return Err(refused("this node has no trust root document".into())),
    };
    let chain = RootChain::decode(payload).map_err(|e| refused(e.to_string()))?;
    let next = chain
        .advance(&current, now_ms)
        .map_err(|e| refused(e.to_string()))?;
    match next {
        Some(next) if next.version() == signed.manifest().sequence => Ok(next),
        Some(next) => Err(refused(format!(
            "the chain ends at root version {}, the manifest names {}",
            next.version(),
            signed.manifest().sequence
        ))),
        None => Err(IngestError::Superseded {
            id,
            sequence: signed.manifest().sequence,
            highest: current.version(),
            highest_id: None,
        }),
    }
}

fn stored_root_in(txn: &WriteTransaction) -> Result<Option<SignedRoot>, IngestError> {
    let table = txn.open_table(ROOTS).map_err(db)?;
    let bytes = table.get(ROOT_CURRENT).map_err(db)?;
    bytes
        .map(|v| {
            SignedRoot::decode(v.value()).map_err(|e| {
                IngestError::Store(crate::error::StoreError::CorruptRow {
                    table: "root-v1",
                    reason: e.to_string(),
                })
            })
        })
        .transpose()
}

/// The root stored by an earlier root segment, if any (read at open).
pub(crate) fn stored_root(
    read: &redb::ReadTransaction,
) -> Result<Option<SignedRoot>, crate::error::StoreError> {
    let table = read.open_table(ROOTS).map_err(crate::error::db)?;
    let bytes = table.get(ROOT_CURRENT).map_err(crate::error::db)?;
    bytes
        .map(|v| {
            SignedRoot::decode(v.value()).map_err(|e| crate::error::StoreError::CorruptRow {
                table: "root-v1",
                reason: e.to_string(),
            })
        })
        .transpose()
}

/// Creates the lifecycle tables (readers never meet a missing one).
pub(crate) fn init(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(SEQUENCES)?;
    txn.open_table(SUPERSEDED)?;
    txn.open_table(RECALLED)?;
    txn.open_table(ROOTS)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(highest: u64, id: u8) -> SequenceRow {
        SequenceRow {
            publisher: PublisherKey::from_bytes([1; 32]),
            channel: "rel".into(),
            name: "app".into(),
            highest,
            highest_id: SegmentId::from_bytes([id; 32]),
            history: vec![],
        }
    }

    #[test]
    fn inv_35_sequence_equal_lower_higher() {
        let r = row(5, 1);
        let other = SegmentId::from_bytes([2; 32]);
        let stale = SequenceVerdict::Stale {
            highest: 5,
            highest_id: SegmentId::from_bytes([1; 32]),
        };
        assert_eq!(sequence_verdict(Some(&r), 4, other), stale);
        assert_eq!(sequence_verdict(Some(&r), 5, other), stale);
        assert_eq!(sequence_verdict(Some(&r), 6, other), SequenceVerdict::Newer);
        assert_eq!(
            sequence_verdict(Some(&r), 5, SegmentId::from_bytes([1; 32])),
            SequenceVerdict::Same
        );
        assert_eq!(sequence_verdict(None, 0, other), SequenceVerdict::Newer);
    }

    #[test]
    fn sequence_keys_do_not_collide_across_fields() {
        let p = PublisherKey::from_bytes([1; 32]);
        assert_ne!(sequence_key(&p, "ab", "c"), sequence_key(&p, "a", "bc"));
        assert_ne!(
            sequence_key(&p, "a", "b"),
            sequence_key(&PublisherKey::from_bytes([2; 32]), "a", "b")
        );
    }
}
