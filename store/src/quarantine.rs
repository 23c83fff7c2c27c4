//! What the store keeps of segments quarantined at rest ([`Store::quarantine`]): listing them,
//! one in full (with what its file's header still says), and purging them.
//!
//! A quarantined file is kept as evidence until an operator purges it; its index row is gone,
//! so its name and publisher come from the file's own header, read without trusting it (the
//! header may be what was corrupted).

use std::path::PathBuf;

use redb::ReadableDatabase;

use crate::error::{StoreError, db};
use crate::id::{SegmentId, parse_prefix};
use crate::manifest::SignedManifest;
use crate::segfile;
use crate::store::Store;
use crate::tables::{self, QUARANTINE, QuarantineRow};

/// Everything known about one quarantined segment.
#[derive(Debug, Clone)]
pub struct QuarantinedSegment {
    pub id: SegmentId,
    pub row: QuarantineRow,
    /// Where its file is kept.
    pub path: PathBuf,
    /// Bytes of that file now; `None` when there is none (it was missing when quarantined, or
    /// was removed since).
    pub file_len_now: Option<u64>,
    /// The file's header as it reads now, unverified; `Err` says why it does not parse.
    pub header: Result<SignedManifest, String>,
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub id: SegmentId,
    /// Bytes of the file deleted (0 when there was no file).
    pub bytes: u64,
}

impl Store {
    /// Up to `limit` quarantined segments after `after`, in id order.
    pub fn quarantined_after(
        &self,
        after: Option<&SegmentId>,
        limit: usize,
    ) -> Result<Vec<(SegmentId, QuarantineRow)>, StoreError> {
        let read = self.database().begin_read().map_err(db)?;
        let table = read.open_table(QUARANTINE).map_err(db)?;
        let mut out = Vec::new();
        let range = match after {
            Some(after) => table.range::<&[u8; 32]>((
                std::ops::Bound::Excluded(&after.0),
                std::ops::Bound::Unbounded,
            )),
            None => table.range::<&[u8; 32]>(..),
        };
        for entry in range.map_err(db)?.take(limit) {
            let (k, v) = entry.map_err(db)?;
            out.push((
                SegmentId(*k.value()),
                tables::decode("quarantine-v1", v.value())?,
            ));
        }
        Ok(out)
    }

    /// The quarantined segment whose id starts with `prefix` (hex; at least
    /// [`ID_PREFIX_HEX_MIN`](crate::limits::ID_PREFIX_HEX_MIN) characters).
    pub fn resolve_quarantined(&self, prefix: &str) -> Result<SegmentId, StoreError> {
        let parsed = parse_prefix(prefix).map_err(|e| StoreError::Config(e.to_string()))?;
        let (low, high) = parsed.range();
        let read = self.database().begin_read().map_err(db)?;
        let table = read.open_table(QUARANTINE).map_err(db)?;
        let mut found = Vec::new();
        for entry in table
            .range::<&[u8; 32]>(&low.0..=&high.0)
            .map_err(db)?
            .take(2)
        {
            found.push(SegmentId(*entry.map_err(db)?.0.value()));
        }
        match found.as_slice() {
            [] => Err(StoreError::NotQuarantined(prefix.to_owned())),
            [one] => Ok(*one),
            _ => Err(StoreError::AmbiguousPrefix {
                prefix: prefix.to_owned(),
                count: table
                    .range::<&[u8; 32]>(&low.0..=&high.0)
                    .map_err(db)?
                    .count(),
            }),
        }
    }

    /// Everything known about the quarantined segment `id`, or `None` if it is not quarantined.
    pub fn quarantined_segment(
        &self,
        id: &SegmentId,
    ) -> Result<Option<QuarantinedSegment>, StoreError> {
        let row: Option<QuarantineRow> = {
            let read = self.database().begin_read().map_err(db)?;
            let table = read.open_table(QUARANTINE).map_err(db)?;
            let found = table.get(&id.0).map_err(db)?;
            found
                .map(|v| tables::decode("quarantine-v1", v.value()))
                .transpose()?
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let path = self.layout().quarantine_file(id);
        let fs = &self.inner.fs;
        let file_len_now = fs.file_len(&path).map_err(|source| StoreError::Io {
            op: "stat",
            path: path.clone(),
            source,
        })?;
        let header = match file_len_now {
            None => Err("no file kept".to_owned()),
            Some(_) => match fs.open_read(&path) {
                Ok(file) => segfile::read_header(file).map_err(|e| e.to_string()),
                Err(e) => Err(format!("cannot open: {e}")),
            },
        };
        Ok(Some(QuarantinedSegment {
            id: *id,
            row,
            path,
            file_len_now,
            header,
        }))
    }

    /// Deletes the quarantined file of `id` and its record. `None` if it is not quarantined.
    /// The file goes first: a crash between the two leaves a record whose file is gone, which
    /// listing shows as such and a second purge removes.
    pub fn purge_quarantined(&self, id: &SegmentId) -> Result<Option<Purged>, StoreError> {
        let exists = {
            let read = self.database().begin_read().map_err(db)?;
            let table = read.open_table(QUARANTINE).map_err(db)?;
            table.get(&id.0).map_err(db)?.is_some()
        };
        if !exists {
            return Ok(None);
        }
        let path = self.layout().quarantine_file(id);
        let fs = &self.inner.fs;
        let io = |op: &'static str, path: &PathBuf| {
            let path = path.clone();
            move |source| StoreError::Io { op, path, source }
        };
        let bytes = fs.file_len(&path).map_err(io("stat", &path))?.unwrap_or(0);
        match fs.remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", &path)(e));
            }
            _ => {}
        }
        let quarantine_dir = self.layout().quarantine();
        fs.sync_dir(&quarantine_dir)
            .map_err(io("fsync", &quarantine_dir))?;
        let key = *id;
        self.writer().write(move |txn| {
            txn.open_table(QUARANTINE)?.remove(&key.0)?;
            Ok(())
        })?;
        Ok(Some(Purged { id: *id, bytes }))
    }
}
