//! Operations on the store's tables inside a caller's write transaction.
//!
//! These are the seam through which another component (the relay) adds its own writes to the
//! same transaction as the store's: pin a segment while a peer is owed it, unpin it when the
//! last job ends, mark it propagated in the transaction of the delivery that made its condition
//! hold. The store knows pins, not jobs.

use redb::{ReadableMultimapTable, ReadableTable, ReadableTableMetadata, WriteTransaction};

use crate::error::StoreError;
use crate::id::SegmentId;
use crate::tables::{
    self, META, META_TOMBSTONE_SEQ, PINS, SEGMENTS, SegmentRow, TOMBSTONE_ORDER, TOMBSTONES,
};

/// Pins `id` on behalf of `owner` (e.g. `relay:peer-b`). Idempotent.
pub fn pin(txn: &WriteTransaction, id: &SegmentId, owner: &str) -> Result<(), redb::Error> {
    txn.open_multimap_table(PINS)?.insert(&id.0, owner)?;
    Ok(())
}

/// Removes `owner`'s pin on `id`. Idempotent.
pub fn unpin(txn: &WriteTransaction, id: &SegmentId, owner: &str) -> Result<(), redb::Error> {
    txn.open_multimap_table(PINS)?.remove(&id.0, owner)?;
    Ok(())
}

/// True when any owner pins `id`.
pub fn is_pinned(txn: &WriteTransaction, id: &SegmentId) -> Result<bool, redb::Error> {
    Ok(!txn.open_multimap_table(PINS)?.get(&id.0)?.is_empty())
}

/// The stored row of `id`, if stored.
pub fn segment(txn: &WriteTransaction, id: &SegmentId) -> Result<Option<SegmentRow>, StoreError> {
    let table = txn.open_table(SEGMENTS).map_err(crate::error::db)?;
    let row = table.get(&id.0).map_err(crate::error::db)?;
    row.map(|v| tables::decode("segments-v1", v.value()))
        .transpose()
}

/// Marks `id` propagated at `now_ms`, once: a second call keeps the first time. Returns whether
/// this call marked it. A segment that is no longer stored is not marked.
pub fn mark_propagated(
    txn: &WriteTransaction,
    id: &SegmentId,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let mut table = txn.open_table(SEGMENTS).map_err(crate::error::db)?;
    let Some(mut row) = table
        .get(&id.0)
        .map_err(crate::error::db)?
        .map(|v| tables::decode::<SegmentRow>("segments-v1", v.value()))
        .transpose()?
    else {
        return Ok(false);
    };
    if row.propagated_at_ms.is_some() {
        return Ok(false);
    }
    row.propagated_at_ms = Some(now_ms);
    table
        .insert(&id.0, tables::encode(&row).as_slice())
        .map_err(crate::error::db)?;
    Ok(true)
}

/// True when `id` is remembered as evicted.
pub fn is_tombstoned(txn: &WriteTransaction, id: &SegmentId) -> Result<bool, redb::Error> {
    Ok(txn.open_table(TOMBSTONES)?.get(&id.0)?.is_some())
}

/// Remembers `id` as evicted, dropping the oldest tombstones beyond `max` (a count, not an age:
/// a fleet partitioned for months must still answer "have" for what it evicted).
pub(crate) fn add_tombstone(
    txn: &WriteTransaction,
    id: &SegmentId,
    max: u64,
) -> Result<(), redb::Error> {
    let mut meta = txn.open_table(META)?;
    let seq = meta.get(META_TOMBSTONE_SEQ)?.map_or(0, |v| v.value()) + 1;
    meta.insert(META_TOMBSTONE_SEQ, seq)?;
    let mut tombs = txn.open_table(TOMBSTONES)?;
    let mut order = txn.open_table(TOMBSTONE_ORDER)?;
    if let Some(old) = tombs.insert(&id.0, seq)? {
        order.remove(old.value())?;
    }
    order.insert(seq, &id.0)?;
    while tombs.len()? > max {
        let Some((_, oldest)) = order.pop_first()? else {
            break;
        };
        tombs.remove(oldest.value())?;
    }
    Ok(())
}

/// Forgets the tombstone of `id` (it is stored again).
pub(crate) fn remove_tombstone(txn: &WriteTransaction, id: &SegmentId) -> Result<(), redb::Error> {
    let mut tombs = txn.open_table(TOMBSTONES)?;
    if let Some(seq) = tombs.remove(&id.0)? {
        txn.open_table(TOMBSTONE_ORDER)?.remove(seq.value())?;
    }
    Ok(())
}

/// The store's index and pins through a read transaction, for a reader that checks its own
/// tables against them in the same snapshot (the relay's ledger audit).
pub struct ReadView {
    segments: redb::ReadOnlyTable<tables::IdKey, &'static [u8]>,
    pins: redb::ReadOnlyMultimapTable<tables::IdKey, &'static str>,
}

impl std::fmt::Debug for ReadView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadView").finish_non_exhaustive()
    }
}

impl ReadView {
    pub fn open(read: &redb::ReadTransaction) -> Result<ReadView, redb::Error> {
        Ok(ReadView {
            segments: read.open_table(SEGMENTS)?,
            pins: read.open_multimap_table(PINS)?,
        })
    }

    /// True when `id` has an index row.
    pub fn is_stored(&self, id: &SegmentId) -> Result<bool, redb::Error> {
        Ok(self.segments.get(&id.0)?.is_some())
    }

    /// True when `owner` pins `id`.
    pub fn is_pinned_by(&self, id: &SegmentId, owner: &str) -> Result<bool, redb::Error> {
        for o in self.pins.get(&id.0)? {
            if o?.value() == owner {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Calls `f` with every pin whose owner starts with `prefix`, in segment order; stops at
    /// the first error `f` returns.
    pub fn for_each_pin<E: From<redb::Error>>(
        &self,
        prefix: &str,
        mut f: impl FnMut(SegmentId, &str) -> Result<(), E>,
    ) -> Result<(), E> {
        for entry in self.pins.iter().map_err(redb::Error::from)? {
            let (key, owners) = entry.map_err(redb::Error::from)?;
            let id = SegmentId(*key.value());
            for owner in owners {
                let owner = owner.map_err(redb::Error::from)?;
                if owner.value().starts_with(prefix) {
                    f(id, owner.value())?;
                }
            }
        }
        Ok(())
    }
}
