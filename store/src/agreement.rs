//! Files and index in agreement while the store is open: what start-up recovery checks
//! (`store::recover`), checked again on a running store for `edged fsck`.
//!
//! A segment file without an index row, or a temp file that belongs to no ingest and no kept
//! partial, is a leftover (recovery removes both at open). On a running store each file is
//! judged under the accounting lock, after the ingests in progress are consulted: an ingest
//! begins under that lock, so none can start on a file while it is judged, and one under way
//! keeps its id in `ingesting` until its row is committed.

use std::path::PathBuf;

use redb::ReadableDatabase;

use crate::error::{StoreError, db};
use crate::fs::EntryKind;
use crate::layout;
use crate::store::Store;
use crate::tables::SEGMENTS;

/// Leftovers listed by one check; beyond this they are only counted.
pub const LEFTOVERS_LISTED_MAX: usize = 1000;

/// What [`Store::check_files`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leftovers {
    /// Segment files with no index row (at most [`LEFTOVERS_LISTED_MAX`]).
    pub orphan_files: Vec<PathBuf>,
    /// Temp files of no ingest and no kept partial (at most [`LEFTOVERS_LISTED_MAX`]).
    pub stray_temp_files: Vec<PathBuf>,
    /// All of them, listed or not.
    pub total: u64,
    /// Whether they were removed.
    pub removed: bool,
}

impl Store {
    /// Looks for segment files without an index row and temp files that belong to nothing,
    /// removing them if `remove`.
    pub fn check_files(&self, remove: bool) -> Result<Leftovers, StoreError> {
        let layout = self.layout().clone();
        let fs = self.inner.fs.clone();
        let io = |op: &'static str, path: &PathBuf| {
            let path = path.clone();
            move |source| StoreError::Io { op, path, source }
        };
        let mut found = Leftovers {
            removed: remove,
            ..Leftovers::default()
        };
        let mut note = |list: fn(&mut Leftovers) -> &mut Vec<PathBuf>, path: PathBuf| {
            found.total += 1;
            let list = list(&mut found);
            if list.len() < LEFTOVERS_LISTED_MAX {
                list.push(path);
            }
        };
        for dir in layout.fanouts() {
            let mut changed = false;
            for entry in fs.list_dir(&dir).map_err(io("list", &dir))? {
                let path = dir.join(&entry.name);
                let Some(id) = layout::id_from_file_name(&entry.name, layout::SEG_EXT)
                    .filter(|id| dir.ends_with(id.fanout_dir()))
                else {
                    continue;
                };
                if entry.kind != EntryKind::File {
                    continue;
                }
                let acct = self.acct();
                if acct.ingesting.contains(&id) {
                    continue;
                }
                let has_row = {
                    let read = self.database().begin_read().map_err(db)?;
                    let table = read.open_table(SEGMENTS).map_err(db)?;
                    table.get(&id.0).map_err(db)?.is_some()
                };
                if has_row || fs.file_len(&path).map_err(io("stat", &path))?.is_none() {
                    continue;
                }
                if remove {
                    fs.remove_file(&path).map_err(io("remove", &path))?;
                    changed = true;
                }
                drop(acct);
                tracing::warn!(path = %path.display(), removed = remove, "segment file without index row");
                note(|l| &mut l.orphan_files, path);
            }
            if changed {
                fs.sync_dir(&dir).map_err(io("fsync", &dir))?;
            }
        }
        let tmp = layout.tmp();
        let mut changed = false;
        for entry in fs.list_dir(&tmp).map_err(io("list", &tmp))? {
            let path = tmp.join(&entry.name);
            let id = layout::id_from_file_name(&entry.name, layout::PART_EXT);
            let acct = self.acct();
            let owned = id
                .is_some_and(|id| acct.ingesting.contains(&id) || acct.partials.contains_key(&id));
            if owned || fs.file_len(&path).map_err(io("stat", &path))?.is_none() {
                continue;
            }
            if remove {
                fs.remove_file(&path).map_err(io("remove", &path))?;
                changed = true;
            }
            drop(acct);
            tracing::warn!(path = %path.display(), removed = remove, "temp file of no ingest");
            note(|l| &mut l.stray_temp_files, path);
        }
        if changed {
            fs.sync_dir(&tmp).map_err(io("fsync", &tmp))?;
        }
        Ok(found)
    }
}
