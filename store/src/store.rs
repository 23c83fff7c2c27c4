//! The store: opening a data directory, recovery, accounting, queries and eviction.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::crash;
use crate::error::{IngestError, StoreError, db};
use crate::evict::{self, Candidate, Limits, Usage};
use crate::fs::{EntryKind, Fs};
use crate::id::{SegmentId, parse_prefix};
use crate::index;
use crate::keys::TrustedPublishers;
use crate::layout::{self, Layout};
use crate::limits::{MIN_FREE_BYTES_DEFAULT, PARTIAL_AGE_MAX_MS_DEFAULT, TOMBSTONES_MAX_DEFAULT};
use crate::mutants;
use crate::tables::{
    self, OUTBOARDS, PARTIALS, PINS, PartialRow, QUARANTINE, QuarantineRow, SEGMENTS, SegmentRow,
};
use crate::writer::Writer;

/// How a store is set up. Every field has a documented default in [`StoreConfig::new`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// `.seg` bytes + reservations + partials never exceed this.
    pub ceiling_bytes: u64,
    /// Free space the store leaves on its file system. Default 64 MiB.
    pub min_free_bytes: u64,
    /// Evicted ids remembered. Default 100,000.
    pub tombstones_max: u64,
    /// Partials untouched for longer are dropped at start. Default 7 days.
    pub partial_age_max_ms: u64,
    /// Channels this host consumes: kept unless expired.
    pub pinned_channels: BTreeSet<String>,
    /// Publishers whose segments are accepted.
    pub trusted: TrustedPublishers,
    /// Clock skew allowed in freshness checks. Default 5 minutes.
    pub clock_skew_ms: u64,
}

impl StoreConfig {
    pub fn new(
        data_dir: impl Into<PathBuf>,
        ceiling_bytes: u64,
        trusted: TrustedPublishers,
    ) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            ceiling_bytes,
            min_free_bytes: MIN_FREE_BYTES_DEFAULT,
            tombstones_max: TOMBSTONES_MAX_DEFAULT,
            partial_age_max_ms: PARTIAL_AGE_MAX_MS_DEFAULT,
            pinned_channels: BTreeSet::new(),
            trusted,
            clock_skew_ms: 5 * 60 * 1000,
        }
    }
}

/// What start-up recovery found and repaired. Everything in it was also logged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Temp files with no partial record, removed.
    pub temp_removed: Vec<PathBuf>,
    /// Segment files with no index row, removed.
    pub orphans_removed: Vec<PathBuf>,
    /// Index rows whose file was missing or of the wrong size, dropped so the segment can be
    /// fetched again.
    pub rows_dropped: Vec<(SegmentId, String)>,
    /// Partials dropped (too old, file missing or short).
    pub partials_dropped: Vec<(SegmentId, String)>,
    /// Partials kept for resume.
    pub partials_kept: usize,
}

impl RecoveryReport {
    pub fn is_clean(&self) -> bool {
        self.temp_removed.is_empty()
            && self.orphans_removed.is_empty()
            && self.rows_dropped.is_empty()
            && self.partials_dropped.is_empty()
    }
}

/// A stored segment as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub id: SegmentId,
    pub row: SegmentRow,
    /// Owners pinning it (e.g. `relay:peer-b`), sorted.
    pub pins: Vec<String>,
}

/// How many segments a store holds (see [`Store::segment_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentCounts {
    pub stored: u64,
    pub propagated: u64,
}

/// Size and hash of the set of ids a store holds (stored or tombstoned), for catch-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldDigest {
    pub count: u64,
    /// blake3 over the sorted 32-byte ids, concatenated.
    pub hash: [u8; 32],
}

/// Feeds the union of two id-sorted streams to `each`, in order and without duplicates, until
/// `each` returns false or both end.
fn merge_sorted<A, B, F>(a: A, b: B, mut each: F) -> Result<(), StoreError>
where
    A: Iterator<Item = Result<SegmentId, StoreError>>,
    B: Iterator<Item = Result<SegmentId, StoreError>>,
    F: FnMut(SegmentId) -> bool,
{
    let mut a = a.peekable();
    let mut b = b.peekable();
    loop {
        let next = match (a.peek(), b.peek()) {
            (None, None) => return Ok(()),
            (Some(Err(_)), _) => {
                return Err(a.next().and_then(Result::err).unwrap_or(StoreError::Closed));
            }
            (_, Some(Err(_))) => {
                return Err(b.next().and_then(Result::err).unwrap_or(StoreError::Closed));
            }
            (Some(Ok(x)), Some(Ok(y))) if x == y => {
                b.next();
                a.next()
            }
            (Some(Ok(x)), Some(Ok(y))) if x < y => a.next(),
            (Some(Ok(_)), Some(Ok(_))) => b.next(),
            (Some(Ok(_)), None) => a.next(),
            (None, Some(Ok(_))) => b.next(),
        };
        if let Some(Ok(id)) = next {
            if !each(id) {
                return Ok(());
            }
        }
    }
}

/// What this store holds of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    Stored,
    /// Evicted: a re-offer is answered "have".
    Tombstoned,
    /// A checkpointed partial: an ingest would resume at this payload offset.
    Partial {
        offset: u64,
    },
    /// Being ingested right now.
    Ingesting,
    Absent,
}

#[derive(Debug, Default)]
pub(crate) struct Accounting {
    pub(crate) usage: Usage,
    /// Ids being ingested: a second ingest of the same id is `Busy`.
    pub(crate) ingesting: BTreeSet<SegmentId>,
    /// Readers per id: a segment being read is not evicted.
    pub(crate) leases: BTreeMap<SegmentId, u32>,
    /// Ids whose eviction or quarantine is in progress: not opened for reading.
    pub(crate) evicting: BTreeSet<SegmentId>,
    /// Checkpointed bytes of each idle partial (their sum is `usage.partial_bytes`).
    pub(crate) partials: BTreeMap<SegmentId, u64>,
}

/// Called with the id of every segment moved to quarantine, after the move.
pub type QuarantineWatcher = Box<dyn Fn(&SegmentId) + Send + Sync>;

/// Called (outside the store's locks) after every commit that stored or withdrew a segment.
pub type ChangeWatcher = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
pub(crate) struct ChangeWatchers(Mutex<Vec<ChangeWatcher>>);

impl std::fmt::Debug for ChangeWatchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|w| w.len()).unwrap_or(0);
        write!(f, "ChangeWatchers({n})")
    }
}

/// Whoever wants to hear of quarantines (the network layer, to fetch a good copy again).
#[derive(Default)]
pub(crate) struct Watchers(Mutex<Vec<QuarantineWatcher>>);

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|w| w.len()).unwrap_or(0);
        write!(f, "Watchers({n})")
    }
}

/// Answers that cost a pass over a whole table, each with the committer's generation it was
/// read under ([`Writer::generation`]): still true while the generation is the same, so a node
/// that writes nothing answers catch-up digests, sweeps and counts in O(1) however many
/// segments it holds.
#[derive(Debug, Default)]
pub(crate) struct Cached {
    held: Option<(u64, HeldDigest)>,
    counts: Option<(u64, SegmentCounts)>,
    /// The earliest expiry of a stored segment that the last sweep left (`None`: none expires).
    next_expiry_ms: Option<(u64, Option<u64>)>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) cfg: StoreConfig,
    /// The publishers trusted now: `cfg.trusted` at open, replaced by [`Store::set_trusted`].
    pub(crate) trusted: std::sync::RwLock<TrustedPublishers>,
    pub(crate) layout: Layout,
    pub(crate) fs: Arc<dyn Fs>,
    pub(crate) db: Arc<Database>,
    pub(crate) writer: Writer,
    pub(crate) acct: Mutex<Accounting>,
    pub(crate) quarantine_watchers: Watchers,
    /// Called after every commit that stores or withdraws a segment.
    pub(crate) change_watchers: ChangeWatchers,
    pub(crate) inflight: crate::inflight::Registry,
    pub(crate) shared: crate::inflight::SharedReads,
    pub(crate) cached: Mutex<Cached>,
}

/// The trust in force: the configured one, unless a newer root arrived as a segment (a root
/// configured in `edge.toml` that is newer wins; a fixed `[publishers] trusted` list always
/// wins, since it has no root to move from).
fn in_force(
    configured: TrustedPublishers,
    arrived: Option<crate::root::SignedRoot>,
) -> TrustedPublishers {
    match (configured.root(), arrived) {
        (Some(c), Some(a)) if a.version() > c.version() => TrustedPublishers::from_root(a),
        _ => configured,
    }
}

/// A node's segment store. Cheap to clone; all clones share one database and one committer.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl Store {
    /// Opens (creating on first use) the store in `cfg.data_dir`, recovering from any crash.
    pub fn open(
        cfg: StoreConfig,
        fs: Arc<dyn Fs>,
        now_ms: u64,
    ) -> Result<(Store, RecoveryReport), StoreError> {
        if cfg.ceiling_bytes == 0 {
            return Err(StoreError::Config(
                "ceiling_bytes must be greater than 0".into(),
            ));
        }
        let layout = Layout::new(cfg.data_dir.clone());
        let db_path = layout.db();
        let io = |op: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { op, path, source }
        };
        let stat_db = || {
            fs.file_len(&db_path)
                .map_err(io("stat", &db_path))
                .map(|len| len.is_some())
        };
        let mut db_exists = stat_db()?;
        if !db_exists && holds_segment_files(fs.as_ref(), &layout)? {
            // Segment files and no index, unless another process created the store and stored
            // in it between the two looks.
            db_exists = stat_db()?;
            if !db_exists {
                return Err(StoreError::IndexMissing { path: db_path });
            }
        }
        create_layout(fs.as_ref(), &layout)?;
        let db_error = |path: &Path| {
            let path = path.to_owned();
            move |e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path },
                other => StoreError::CorruptDatabase {
                    path,
                    reason: other.to_string(),
                },
            }
        };
        let db = if db_exists {
            match fs.open_database(&db_path, false) {
                // Mutation point (INV-24): a database that does not open is replaced by an
                // empty one, and recovery then removes every segment file as an orphan.
                Err(e)
                    if mutants::active("reinit_corrupt_db")
                        && !matches!(e, redb::DatabaseError::DatabaseAlreadyOpen) =>
                {
                    fs.remove_file(&db_path).map_err(io("remove", &db_path))?;
                    fs.open_database(&db_path, true)
                        .map_err(db_error(&db_path))?
                }
                opened => opened.map_err(db_error(&db_path))?,
            }
        } else {
            // Created under a temporary name and renamed into place once redb has initialised
            // it (the open handle follows the file): a crash inside redb's creation must leave
            // no `edge.redb`, since a half-initialised one would fail every later start as
            // corrupt. A temporary left by such a crash is replaced; one that another process
            // holds (it is creating the store right now: a daemon's first start and an offline
            // import at once) is not, or each would end up on a file the other renamed away.
            let new_path = db_path.with_extension("redb.new");
            // redb locks the file before it reads it: whoever locks it first creates the store
            // (or takes over an empty one a crash left), the others are told it is held.
            let left_before = fs
                .file_len(&new_path)
                .map_err(io("stat", &new_path))?
                .is_some();
            let db = match fs.open_database(&new_path, true) {
                Ok(db) => db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(StoreError::Locked { path: new_path });
                }
                // A temporary left half-initialised by a crash, which no process holds.
                Err(_) if left_before => {
                    match fs.remove_file(&new_path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(io("remove", &new_path)(e));
                        }
                        _ => {}
                    }
                    fs.open_database(&new_path, true)
                        .map_err(db_error(&new_path))?
                }
                Err(e) => return Err(db_error(&new_path)(e)),
            };
            // A creator that got here first has renamed its database into place meanwhile (the
            // temporary name was free again): that one is the store.
            if fs
                .file_len(&db_path)
                .map_err(io("stat", &db_path))?
                .is_some()
            {
                drop(db);
                let _ = fs.remove_file(&new_path);
                return Err(StoreError::Locked { path: db_path });
            }
            fs.rename(&new_path, &db_path)
                .map_err(io("rename", &new_path))?;
            // The new database file's directory entry must survive a power loss too.
            fs.sync_dir(layout.root())
                .map_err(io("fsync", layout.root()))?;
            db
        };
        tables::init(&db, &db_path)?;
        let stored_root = {
            let read = db.begin_read().map_err(crate::error::db)?;
            crate::lifecycle::stored_root(&read)?
        };
        let in_force = in_force(cfg.trusted.clone(), stored_root);
        let mut acct = Accounting::default();
        let report = recover(&cfg, fs.as_ref(), &layout, &db, now_ms, &mut acct)?;
        let db = Arc::new(db);
        let writer = Writer::start(db.clone())?;
        let store = Store {
            inner: Arc::new(Inner {
                trusted: std::sync::RwLock::new(in_force),
                cfg,
                layout,
                fs,
                db,
                writer,
                acct: Mutex::new(acct),
                quarantine_watchers: Watchers::default(),
                change_watchers: ChangeWatchers::default(),
                inflight: Default::default(),
                shared: Default::default(),
                cached: Mutex::new(Cached::default()),
            }),
        };
        Ok((store, report))
    }

    /// The segment being received under `id` with its outboard, readable group by verified
    /// group while it arrives (see [`crate::inflight`]).
    pub fn in_flight(&self, id: &SegmentId) -> Option<Arc<crate::inflight::InFlight>> {
        self.inner.inflight.get(id)
    }

    /// The configuration the store was opened with (its `trusted` as at open: see
    /// [`Store::trusted`]).
    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    /// The publishers whose segments are accepted now.
    pub fn trusted(&self) -> TrustedPublishers {
        self.inner
            .trusted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Accepts segments of `trusted` from now on (a reloaded configuration). Segments stored
    /// already stay. A root older than the one in force (which arrived as a segment) does not
    /// replace it: a reload cannot roll the trust root back.
    pub fn set_trusted(&self, trusted: TrustedPublishers) {
        let mut now = self
            .inner
            .trusted
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let current = now.root().cloned();
        *now = in_force(trusted, current);
    }

    /// Registers `watcher`, called after every commit that stored or withdrew a segment (local
    /// delivery wakes on it).
    pub fn watch_changes(&self, watcher: ChangeWatcher) {
        self.inner
            .change_watchers
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(watcher);
    }

    pub(crate) fn notify_changes(&self) {
        let watchers: Vec<ChangeWatcher> = self
            .inner
            .change_watchers
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for watcher in watchers {
            watcher();
        }
    }

    /// After the commit of a segment: removes the files of the segments it withdrew, puts a new
    /// root in force, and tells the change watchers.
    pub(crate) fn after_lifecycle(&self, applied: crate::lifecycle::Applied) {
        if !applied.withdrawn_rows.is_empty() {
            let mut acct = self.acct();
            let mut dirs = BTreeSet::new();
            for (id, row) in &applied.withdrawn_rows {
                let path = self.inner.layout.segment_file(id);
                match self.inner.fs.remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        // The row is gone: recovery removes the orphan file.
                        tracing::warn!(seg_id = %id, path = %path.display(), error = %e, "recalled segment file not removed");
                    }
                    _ => {
                        acct.usage.stored_bytes =
                            acct.usage.stored_bytes.saturating_sub(row.file_len);
                    }
                }
                dirs.insert(self.inner.layout.fanout(id));
                tracing::info!(seg_id = %id, name = %row.name, channel = %row.channel, "segment recalled: removed");
            }
            drop(acct);
            for dir in dirs {
                if let Err(e) = self.inner.fs.sync_dir(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "fsync after recall failed");
                }
            }
        }
        for old in &applied.lifecycle.superseded {
            tracing::info!(seg_id = %old, "segment superseded by a higher sequence");
        }
        if let Some(root) = applied.root {
            let version = root.version();
            *self
                .inner
                .trusted
                .write()
                .unwrap_or_else(|e| e.into_inner()) = TrustedPublishers::from_root(root);
            tracing::info!(version, "trust root updated");
        }
        self.notify_changes();
    }

    /// Whether a recall withdrew `id` (held here or not).
    pub fn is_recalled(&self, id: &SegmentId) -> Result<bool, StoreError> {
        Ok(self.recalled_row(id)?.is_some())
    }

    /// The recall that withdrew `id`, if any.
    pub fn recalled_row(
        &self,
        id: &SegmentId,
    ) -> Result<Option<crate::lifecycle::RecalledRow>, StoreError> {
        let read = self.database().begin_read().map_err(crate::error::db)?;
        let table = read
            .open_table(crate::lifecycle::RECALLED)
            .map_err(crate::error::db)?;
        let row = table.get(&id.0).map_err(crate::error::db)?;
        row.map(|v| tables::decode("recalled-v1", v.value()))
            .transpose()
    }

    /// Every recalled id with its recall, in id order (at most `limit`).
    pub fn recalled(
        &self,
        limit: usize,
    ) -> Result<Vec<(SegmentId, crate::lifecycle::RecalledRow)>, StoreError> {
        let read = self.database().begin_read().map_err(crate::error::db)?;
        let table = read
            .open_table(crate::lifecycle::RECALLED)
            .map_err(crate::error::db)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(crate::error::db)?.take(limit) {
            let (k, v) = entry.map_err(crate::error::db)?;
            out.push((
                SegmentId::from_bytes(*k.value()),
                tables::decode("recalled-v1", v.value())?,
            ));
        }
        Ok(out)
    }

    /// The segment that superseded `id`, if one did.
    pub fn superseded_by(&self, id: &SegmentId) -> Result<Option<SegmentId>, StoreError> {
        let read = self.database().begin_read().map_err(crate::error::db)?;
        let table = read
            .open_table(crate::lifecycle::SUPERSEDED)
            .map_err(crate::error::db)?;
        let row = table.get(&id.0).map_err(crate::error::db)?;
        Ok(row.map(|v| SegmentId::from_bytes(*v.value())))
    }

    /// The sequence rows (highest sequence and history per publisher, channel and name), of
    /// `channel` only when given, sorted by channel and name, at most
    /// [`crate::limits::SEQUENCES_LIST_MAX`].
    pub fn sequences(
        &self,
        channel: Option<&str>,
    ) -> Result<Vec<crate::lifecycle::SequenceRow>, StoreError> {
        let read = self.database().begin_read().map_err(crate::error::db)?;
        let table = read
            .open_table(crate::lifecycle::SEQUENCES)
            .map_err(crate::error::db)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(crate::error::db)? {
            let (_, v) = entry.map_err(crate::error::db)?;
            let row: crate::lifecycle::SequenceRow = tables::decode("sequences-v1", v.value())?;
            if channel.is_none_or(|c| c == row.channel) {
                out.push(row);
                if out.len() >= crate::limits::SEQUENCES_LIST_MAX {
                    break;
                }
            }
        }
        out.sort_by(|a, b| {
            (&a.channel, &a.name, a.publisher).cmp(&(&b.channel, &b.name, b.publisher))
        });
        Ok(out)
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// The database, for readers (the relay reads its ledger tables here).
    pub fn database(&self) -> &Arc<Database> {
        &self.inner.db
    }

    /// Why this store can take no more writes (a commit failed on an I/O error; redb refuses
    /// every later write until the database is opened again), or `None`. The daemon exits on
    /// it, so that the service manager restarts it and the store recovers on open.
    pub fn failure(&self) -> Option<String> {
        self.inner.writer.failure()
    }

    /// Whether the data directory's file system has room for metadata writes beyond the
    /// segments (receipts): at least `min_free_bytes` plus [`crate::limits::METADATA_ROOM_BYTES`]
    /// free. Writes that can wait skip a full disk instead of failing a commit.
    pub fn has_metadata_room(&self) -> bool {
        self.available_bytes().is_ok_and(|free| {
            free >= self.inner.cfg.min_free_bytes + crate::limits::METADATA_ROOM_BYTES
        })
    }

    /// The one committer: every write to the database goes through it.
    pub fn writer(&self) -> &Writer {
        &self.inner.writer
    }

    /// Bytes counted against the ceiling right now.
    pub fn usage(&self) -> Usage {
        self.acct().usage
    }

    pub(crate) fn acct(&self) -> MutexGuard<'_, Accounting> {
        self.inner.acct.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self) -> MutexGuard<'_, Cached> {
        self.inner.cached.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            // Mutation point (INV-06): the ceiling admits one byte more than configured.
            ceiling_bytes: self.inner.cfg.ceiling_bytes
                + u64::from(mutants::active("admit_ceiling_plus_one")),
            min_free_bytes: self.inner.cfg.min_free_bytes,
        }
    }

    /// Every stored segment, in id order. Memory grows with the store: listings that answer
    /// clients page with [`Store::list_after`].
    pub fn list(&self) -> Result<Vec<SegmentInfo>, StoreError> {
        self.list_after(None, usize::MAX)
    }

    /// Stored segments in id order, strictly after `after`, at most `limit` of them: one read
    /// transaction, nothing allocated beyond `limit` segments.
    pub fn list_after(
        &self,
        after: Option<&SegmentId>,
        limit: usize,
    ) -> Result<Vec<SegmentInfo>, StoreError> {
        let read = self.inner.db.begin_read().map_err(db)?;
        let segments = read.open_table(SEGMENTS).map_err(db)?;
        let pins = read.open_multimap_table(PINS).map_err(db)?;
        let lower = match after {
            Some(id) => Bound::Excluded(&id.0),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for entry in segments
            .range::<&[u8; 32]>((lower, Bound::Unbounded))
            .map_err(db)?
            .take(limit)
        {
            let (key, value) = entry.map_err(db)?;
            let id = SegmentId(*key.value());
            let row = tables::decode("segments-v1", value.value())?;
            let mut owners = Vec::new();
            for owner in pins.get(key.value()).map_err(db)? {
                owners.push(owner.map_err(db)?.value().to_owned());
            }
            out.push(SegmentInfo {
                id,
                row,
                pins: owners,
            });
        }
        Ok(out)
    }

    /// Segments stored, and how many of them are propagated: one pass over the rows, nothing
    /// kept, and none at all while nothing was written since the last call.
    pub fn segment_counts(&self) -> Result<SegmentCounts, StoreError> {
        let generation = self.inner.writer.generation();
        if let Some((at, counts)) = self.cached().counts {
            if at == generation {
                return Ok(counts);
            }
        }
        let counts = self.count_segments()?;
        self.cached().counts = Some((generation, counts));
        Ok(counts)
    }

    fn count_segments(&self) -> Result<SegmentCounts, StoreError> {
        let read = self.inner.db.begin_read().map_err(db)?;
        let segments = read.open_table(SEGMENTS).map_err(db)?;
        let stored = segments.len().map_err(db)?;
        let mut propagated = 0;
        for entry in segments.iter().map_err(db)? {
            let (_, value) = entry.map_err(db)?;
            let row: SegmentRow = tables::decode("segments-v1", value.value())?;
            propagated += u64::from(row.propagated_at_ms.is_some());
        }
        Ok(SegmentCounts { stored, propagated })
    }

    /// The row of a stored segment.
    pub fn get(&self, id: &SegmentId) -> Result<Option<SegmentRow>, StoreError> {
        let read = self.inner.db.begin_read().map_err(db)?;
        let segments = read.open_table(SEGMENTS).map_err(db)?;
        let row = segments.get(&id.0).map_err(db)?;
        row.map(|v| tables::decode("segments-v1", v.value()))
            .transpose()
    }

    /// The stored segment whose id starts with `prefix` (hex; at least
    /// [`ID_PREFIX_HEX_MIN`](crate::limits::ID_PREFIX_HEX_MIN) characters).
    pub fn resolve(&self, prefix: &str) -> Result<SegmentId, StoreError> {
        let parsed = parse_prefix(prefix).map_err(|e| StoreError::Config(e.to_string()))?;
        let (low, high) = parsed.range();
        let read = self.inner.db.begin_read().map_err(db)?;
        let segments = read.open_table(SEGMENTS).map_err(db)?;
        let mut found = Vec::new();
        for entry in segments
            .range::<&[u8; 32]>(&low.0..=&high.0)
            .map_err(db)?
            .take(2)
        {
            found.push(SegmentId(*entry.map_err(db)?.0.value()));
        }
        match found.as_slice() {
            [] => Err(StoreError::PrefixNotFound(prefix.to_owned())),
            [one] => Ok(*one),
            _ => {
                let count = segments
                    .range::<&[u8; 32]>(&low.0..=&high.0)
                    .map_err(db)?
                    .count();
                Err(StoreError::AmbiguousPrefix {
                    prefix: prefix.to_owned(),
                    count,
                })
            }
        }
    }

    /// What this store holds of `id`: the answer to a peer's offer.
    pub fn holding(&self, id: &SegmentId) -> Result<Holding, StoreError> {
        if self.acct().ingesting.contains(id) {
            return Ok(Holding::Ingesting);
        }
        let read = self.inner.db.begin_read().map_err(db)?;
        if read
            .open_table(SEGMENTS)
            .map_err(db)?
            .get(&id.0)
            .map_err(db)?
            .is_some()
        {
            return Ok(Holding::Stored);
        }
        if read
            .open_table(tables::TOMBSTONES)
            .map_err(db)?
            .get(&id.0)
            .map_err(db)?
            .is_some()
        {
            return Ok(Holding::Tombstoned);
        }
        if let Some(v) = read
            .open_table(PARTIALS)
            .map_err(db)?
            .get(&id.0)
            .map_err(db)?
        {
            let row: PartialRow = tables::decode("partials-v1", v.value())?;
            // Mutation point (INV-04): a partial is answered as stored.
            if mutants::active("partial_as_stored") {
                return Ok(Holding::Stored);
            }
            return Ok(Holding::Partial { offset: row.offset });
        }
        Ok(Holding::Absent)
    }

    /// Ids this store holds for catch-up — stored or tombstoned (a tombstoned id counts as held:
    /// re-offers of it are answered "have") — in id order, strictly after `after`, at most
    /// `limit` of them. One read transaction; nothing is allocated beyond `limit` ids.
    pub fn held_ids_after(
        &self,
        after: Option<&SegmentId>,
        limit: usize,
    ) -> Result<Vec<SegmentId>, StoreError> {
        let read = self.inner.db.begin_read().map_err(db)?;
        let segments = read.open_table(SEGMENTS).map_err(db)?;
        let tombstones = read.open_table(tables::TOMBSTONES).map_err(db)?;
        let lower = match after {
            Some(id) => Bound::Excluded(&id.0),
            None => Bound::Unbounded,
        };
        let a = segments
            .range::<&[u8; 32]>((lower, Bound::Unbounded))
            .map_err(db)?
            .map(|e| e.map(|(k, _)| SegmentId(*k.value())).map_err(db));
        let b = tombstones
            .range::<&[u8; 32]>((lower, Bound::Unbounded))
            .map_err(db)?
            .map(|e| e.map(|(k, _)| SegmentId(*k.value())).map_err(db));
        let mut out = Vec::with_capacity(limit.min(4096));
        merge_sorted(a, b, |id| {
            out.push(id);
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Digest of the held id set (see [`Store::held_ids_after`]): its size and the blake3 of the
    /// sorted ids concatenated. Two stores with equal digests hold the same ids.
    ///
    /// Every catch-up round with every peer asks for it, on both sides: it is computed once per
    /// change of the database (see [`Cached`]), not once per round.
    pub fn held_digest(&self) -> Result<HeldDigest, StoreError> {
        let generation = self.inner.writer.generation();
        if let Some((at, digest)) = self.cached().held {
            if at == generation {
                return Ok(digest);
            }
        }
        let digest = self.compute_held_digest()?;
        self.cached().held = Some((generation, digest));
        Ok(digest)
    }

    fn compute_held_digest(&self) -> Result<HeldDigest, StoreError> {
        let read = self.inner.db.begin_read().map_err(db)?;
        let segments = read.open_table(SEGMENTS).map_err(db)?;
        let tombstones = read.open_table(tables::TOMBSTONES).map_err(db)?;
        let a = segments
            .iter()
            .map_err(db)?
            .map(|e| e.map(|(k, _)| SegmentId(*k.value())).map_err(db));
        let b = tombstones
            .iter()
            .map_err(db)?
            .map(|e| e.map(|(k, _)| SegmentId(*k.value())).map_err(db));
        let mut hasher = blake3::Hasher::new();
        let mut count = 0u64;
        merge_sorted(a, b, |id| {
            hasher.update(&id.0);
            count += 1;
            true
        })?;
        Ok(HeldDigest {
            count,
            hash: *hasher.finalize().as_bytes(),
        })
    }

    /// Quarantined segments with their reasons, in id order.
    pub fn quarantined(&self) -> Result<Vec<(SegmentId, QuarantineRow)>, StoreError> {
        let read = self.inner.db.begin_read().map_err(db)?;
        let table = read.open_table(QUARANTINE).map_err(db)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db)? {
            let (k, v) = entry.map_err(db)?;
            out.push((
                SegmentId(*k.value()),
                tables::decode("quarantine-v1", v.value())?,
            ));
        }
        Ok(out)
    }

    /// Marks a stored segment propagated (once). Returns whether this call marked it.
    pub fn mark_propagated(&self, id: &SegmentId, now_ms: u64) -> Result<bool, StoreError> {
        let id = *id;
        self.inner
            .writer
            .write(move |txn| Ok(index::mark_propagated(txn, &id, now_ms)))?
    }

    /// Pins or unpins a segment for `owner` in its own transaction (the relay does this inside
    /// its own transactions through [`index`]).
    pub fn set_pin(&self, id: &SegmentId, owner: &str, pinned: bool) -> Result<(), StoreError> {
        let (id, owner) = (*id, owner.to_owned());
        self.inner.writer.write(move |txn| {
            if pinned {
                index::pin(txn, &id, &owner)
            } else {
                index::unpin(txn, &id, &owner)
            }
        })
    }

    /// Eviction's view of every stored segment.
    fn candidates(&self, acct: &Accounting) -> Result<Vec<Candidate>, StoreError> {
        let read = self.inner.db.begin_read().map_err(db)?;
        let segments = read.open_table(SEGMENTS).map_err(db)?;
        let pins = read.open_multimap_table(PINS).map_err(db)?;
        let superseded = read.open_table(crate::lifecycle::SUPERSEDED).map_err(db)?;
        let mut out = Vec::new();
        for entry in segments.iter().map_err(db)? {
            let (key, value) = entry.map_err(db)?;
            let id = SegmentId(*key.value());
            let row: SegmentRow = tables::decode("segments-v1", value.value())?;
            out.push(Candidate {
                id,
                file_len: row.file_len,
                priority: row.priority,
                last_used_ms: row.last_used_ms,
                expires_at_ms: row.expires_at_ms,
                // Mutation point (INV-07): pins are ignored, so eviction may take a segment
                // still owed to a peer (with the re-check in `evict_locked`).
                pinned: !pins.get(key.value()).map_err(db)?.is_empty()
                    && !mutants::active("evict_pinned"),
                channel_pinned: self.inner.cfg.pinned_channels.contains(&row.channel),
                busy: acct.leases.contains_key(&id)
                    || acct.ingesting.contains(&id)
                    || acct.evicting.contains(&id),
                superseded: superseded.get(key.value()).map_err(db)?.is_some(),
            });
        }
        Ok(out)
    }

    /// Free space on the data directory's file system.
    fn available_bytes(&self) -> Result<u64, IngestError> {
        let data_dir = self.inner.layout.root();
        self.inner
            .fs
            .available_bytes(data_dir)
            .map_err(|source| IngestError::Io {
                op: "statvfs",
                path: data_dir.to_owned(),
                source,
            })
    }

    /// What a refusal tells: `file_len` bytes needed, and how many could be made available
    /// (room now, plus everything evictable).
    fn store_full(
        &self,
        acct: &Accounting,
        file_len: u64,
        room: u64,
        now_ms: u64,
    ) -> Result<IngestError, StoreError> {
        let evictable = evict::evictable_bytes(&self.candidates(acct)?, now_ms);
        Ok(IngestError::StoreFull {
            needed_bytes: file_len,
            available_bytes: room.saturating_add(evictable),
        })
    }

    /// Admits an ingest of `file_len` bytes: refuses with `StoreFull` if it could not fit even
    /// after every eviction the plan allows (the plan is made, not applied), and returns the
    /// bytes that can be granted at once without evicting. Called with the accounting lock held.
    pub(crate) fn admit_locked(
        &self,
        acct: &Accounting,
        file_len: u64,
        now_ms: u64,
    ) -> Result<u64, IngestError> {
        let available = self.available_bytes()?;
        let short = evict::shortfall(acct.usage, file_len, self.limits(), available);
        let room = evict::headroom(acct.usage, self.limits(), available);
        if short > 0 && evict::plan(&self.candidates(acct)?, short, now_ms).is_empty() {
            return Err(self.store_full(acct, file_len, room, now_ms)?);
        }
        Ok(room)
    }

    /// Grows an ingest's grant from `granted` to at least `need_bytes` and at most
    /// `target_bytes`: first from the room there is, then — only for what `need_bytes` (bytes
    /// the ingest has in hand) still lacks — by evicting what the plan allows. Returns the new
    /// grant, already counted in `usage.reserved_bytes`, or `StoreFull` (nothing granted,
    /// nothing evicted) if the plan cannot free enough.
    pub(crate) fn grow_grant(
        &self,
        file_len: u64,
        granted: u64,
        need_bytes: u64,
        target_bytes: u64,
        now_ms: u64,
    ) -> Result<u64, IngestError> {
        debug_assert!(granted < need_bytes && need_bytes <= target_bytes);
        let mut acct = self.acct();
        let mut available = self.available_bytes()?;
        let more = need_bytes - granted;
        let short = evict::shortfall(acct.usage, more, self.limits(), available);
        if short > 0 {
            let candidates = self.candidates(&acct)?;
            let victims = evict::plan(&candidates, short, now_ms);
            if victims.is_empty() {
                let room = evict::headroom(acct.usage, self.limits(), available);
                return Err(self.store_full(&acct, file_len, granted + room, now_ms)?);
            }
            let stored_before = acct.usage.stored_bytes;
            self.evict_locked(&mut acct, &victims)?;
            available += stored_before - acct.usage.stored_bytes;
            // A victim whose file could not be removed freed nothing: refuse, never overshoot.
            if evict::shortfall(acct.usage, more, self.limits(), available) > 0 {
                let room = evict::headroom(acct.usage, self.limits(), available);
                return Err(self.store_full(&acct, file_len, granted + room, now_ms)?);
            }
        }
        let room = evict::headroom(acct.usage, self.limits(), available);
        let add = (target_bytes - granted).min(room);
        acct.usage.reserved_bytes += add;
        Ok(granted + add)
    }

    /// Evicts expired segments that nobody pins. Returns the evicted ids.
    ///
    /// A sweep looks at every row only when something was written since the last one or the
    /// earliest expiry it left has come (an expired segment it could not evict, pinned or
    /// busy, is such an expiry): an idle store's sweeps cost O(1) whatever it holds.
    pub fn sweep_expired(&self, now_ms: u64) -> Result<Vec<SegmentId>, StoreError> {
        let generation = self.inner.writer.generation();
        if let Some((at, next)) = self.cached().next_expiry_ms {
            if at == generation && next.is_none_or(|next| now_ms < next) {
                return Ok(Vec::new());
            }
        }
        let mut acct = self.acct();
        let candidates = self.candidates(&acct)?;
        let victims = evict::expired(&candidates, now_ms);
        let next = candidates
            .iter()
            .filter(|c| !victims.contains(&c.id))
            .filter_map(|c| c.expires_at_ms)
            .min();
        let evicted = self.evict_locked(&mut acct, &victims)?;
        // Under the generation read before the rows: the eviction's own commit (and any other
        // write) makes the next sweep look again.
        self.cached().next_expiry_ms = Some((generation, next));
        Ok(evicted)
    }

    /// Evicts exactly these segments (operator purge), refusing pinned or busy ones silently:
    /// returns the ids actually evicted.
    pub fn evict(&self, ids: &[SegmentId]) -> Result<Vec<SegmentId>, StoreError> {
        let mut acct = self.acct();
        let candidates = self.candidates(&acct)?;
        let allowed: Vec<SegmentId> = candidates
            .iter()
            .filter(|c| ids.contains(&c.id) && !c.pinned && !c.busy)
            .map(|c| c.id)
            .collect();
        self.evict_locked(&mut acct, &allowed)
    }

    /// Index first (rows gone, tombstones written, one commit), then files: a crash in between
    /// leaves files without rows, which recovery removes. Never the other way round.
    fn evict_locked(
        &self,
        acct: &mut Accounting,
        ids: &[SegmentId],
    ) -> Result<Vec<SegmentId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        acct.evicting.extend(ids.iter().copied());
        let owned: Vec<SegmentId> = ids.to_vec();
        let tombstones_max = self.inner.cfg.tombstones_max;
        let result = self.inner.writer.write(move |txn| {
            let mut gone = Vec::new();
            for id in owned {
                // Re-checked inside the transaction: a pin may have landed since planning.
                if index::is_pinned(txn, &id)? && !mutants::active("evict_pinned") {
                    continue;
                }
                let removed = txn
                    .open_table(SEGMENTS)?
                    .remove(&id.0)?
                    .map(|v| v.value().to_vec());
                txn.open_table(OUTBOARDS)?.remove(&id.0)?;
                // Its supersession is only shown while it is stored.
                txn.open_table(crate::lifecycle::SUPERSEDED)?
                    .remove(&id.0)?;
                if let Some(bytes) = removed {
                    index::add_tombstone(txn, &id, tombstones_max)?;
                    gone.push((id, bytes));
                }
            }
            Ok(gone)
        });
        let result = result.and_then(|gone| {
            crash::point(crash::EVICT_AFTER_COMMIT);
            let mut evicted = Vec::with_capacity(gone.len());
            let mut dirs = BTreeSet::new();
            for (id, bytes) in gone {
                let row: SegmentRow = tables::decode("segments-v1", &bytes)?;
                let path = self.inner.layout.segment_file(&id);
                match self.inner.fs.remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        // The row is gone: a leftover file is an orphan that recovery removes.
                        // Until then its bytes are still on disk, so they stay counted.
                        tracing::warn!(seg_id = %id, path = %path.display(), error = %e, "evicted segment file not removed");
                    }
                    _ => {
                        acct.usage.stored_bytes =
                            acct.usage.stored_bytes.saturating_sub(row.file_len);
                    }
                }
                dirs.insert(self.inner.layout.fanout(&id));
                tracing::info!(seg_id = %id, bytes = row.file_len, "segment evicted");
                evicted.push(id);
            }
            crash::point(crash::EVICT_AFTER_REMOVE);
            for dir in dirs {
                if let Err(e) = self.inner.fs.sync_dir(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "fsync after eviction failed");
                }
            }
            Ok(evicted)
        });
        for id in ids {
            acct.evicting.remove(id);
        }
        result
    }

    /// Moves a segment whose file failed verification out of `segments/` into `quarantine/`,
    /// drops its row and records the reason. It is not tombstoned: catch-up may fetch it again,
    /// and every [`Store::watch_quarantine`] watcher is told so that it can.
    pub fn quarantine(&self, id: &SegmentId, reason: &str, now_ms: u64) -> Result<(), StoreError> {
        let result = {
            let mut acct = self.acct();
            acct.evicting.insert(*id);
            let result = self.quarantine_locked(&mut acct, id, reason, now_ms);
            acct.evicting.remove(id);
            result
        };
        if result.is_ok() {
            let watchers = self
                .inner
                .quarantine_watchers
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for watcher in watchers.iter() {
                watcher(id);
            }
        }
        result
    }

    /// Registers `watcher`, called (outside the store's locks) after every quarantine.
    pub fn watch_quarantine(&self, watcher: QuarantineWatcher) {
        self.inner
            .quarantine_watchers
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(watcher);
    }

    fn quarantine_locked(
        &self,
        acct: &mut Accounting,
        id: &SegmentId,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let layout = &self.inner.layout;
        let fs = &self.inner.fs;
        let from = layout.segment_file(id);
        let to = layout.quarantine_file(id);
        let present = fs.file_len(&from).ok().flatten();
        let file_len = present.unwrap_or(0);
        // File first: a crash after the move leaves a row without a file, which recovery drops.
        if present.is_some() {
            fs.rename(&from, &to).map_err(|source| StoreError::Io {
                op: "rename to quarantine",
                path: from.clone(),
                source,
            })?;
            for dir in [layout.fanout(id), layout.quarantine()] {
                fs.sync_dir(&dir).map_err(|source| StoreError::Io {
                    op: "fsync",
                    path: dir.clone(),
                    source,
                })?;
            }
        }
        let id_copy = *id;
        let row = QuarantineRow {
            reason: reason.to_owned(),
            at_ms: now_ms,
            file_len,
        };
        let removed = self.inner.writer.write(move |txn| {
            let removed = txn
                .open_table(SEGMENTS)?
                .remove(&id_copy.0)?
                .map(|v| v.value().to_vec());
            txn.open_table(OUTBOARDS)?.remove(&id_copy.0)?;
            txn.open_table(QUARANTINE)?
                .insert(&id_copy.0, tables::encode(&row).as_slice())?;
            Ok(removed)
        })?;
        if let Some(bytes) = removed {
            let row: SegmentRow = tables::decode("segments-v1", &bytes)?;
            acct.usage.stored_bytes = acct.usage.stored_bytes.saturating_sub(row.file_len);
        }
        tracing::error!(seg_id = %id, reason, "segment corrupt at rest: quarantined");
        Ok(())
    }

    /// Flushes queued writes and stops the committer. Further writes fail with `Closed`.
    pub fn close(&self) {
        self.inner.writer.close();
    }
}

fn holds_segment_files(fs: &dyn Fs, layout: &Layout) -> Result<bool, StoreError> {
    match fs.list_dir(&layout.segments()) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(StoreError::Io {
                op: "list",
                path: layout.segments(),
                source,
            });
        }
    }
    for dir in layout.fanouts() {
        match fs.list_dir(&dir) {
            Ok(entries) => {
                if entries.iter().any(|e| {
                    e.kind == EntryKind::File
                        && layout::id_from_file_name(&e.name, layout::SEG_EXT).is_some()
                }) {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Io {
                    op: "list",
                    path: dir,
                    source,
                });
            }
        }
    }
    Ok(false)
}

/// Creates the directory layout (fan-out directories once, at init) and makes it durable.
fn create_layout(fs: &dyn Fs, layout: &Layout) -> Result<(), StoreError> {
    let mk = |path: &Path| {
        fs.create_dir_all(path).map_err(|source| StoreError::Io {
            op: "create directory",
            path: path.to_owned(),
            source,
        })
    };
    mk(layout.root())?;
    mk(&layout.tmp())?;
    mk(&layout.quarantine())?;
    for dir in layout.fanouts() {
        mk(&dir)?;
    }
    for dir in [layout.segments(), layout.root().to_owned()] {
        fs.sync_dir(&dir).map_err(|source| StoreError::Io {
            op: "fsync",
            path: dir.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Start-up recovery: brings files and index back into agreement after any crash.
fn recover(
    cfg: &StoreConfig,
    fs: &dyn Fs,
    layout: &Layout,
    db: &Database,
    now_ms: u64,
    acct: &mut Accounting,
) -> Result<RecoveryReport, StoreError> {
    let mut report = RecoveryReport::default();
    let io = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Io { op, path, source }
    };
    let mut partial_rows = {
        let read = db.begin_read().map_err(db_err)?;
        let mut partials = BTreeMap::new();
        for entry in read
            .open_table(PARTIALS)
            .map_err(db_err)?
            .iter()
            .map_err(db_err)?
        {
            let (k, v) = entry.map_err(db_err)?;
            let row: PartialRow = tables::decode("partials-v1", v.value())?;
            partials.insert(SegmentId(*k.value()), row);
        }
        partials
    };
    let mut drop_rows: Vec<SegmentId> = Vec::new();
    let mut drop_partials: Vec<SegmentId> = Vec::new();

    // Temp files: kept only as checkpointed partials, truncated to their checkpoint.
    let tmp = layout.tmp();
    let mut tmp_seen = BTreeSet::new();
    for entry in fs.list_dir(&tmp).map_err(io("list", &tmp))? {
        let path = tmp.join(&entry.name);
        let id = layout::id_from_file_name(&entry.name, layout::PART_EXT);
        let verdict = match id.and_then(|id| partial_rows.get(&id).map(|row| (id, row))) {
            None => Some("temp file without a partial record".to_owned()),
            Some((_, row)) if now_ms.saturating_sub(row.updated_at_ms) > cfg.partial_age_max_ms => {
                Some(format!("partial older than {} ms", cfg.partial_age_max_ms))
            }
            Some((_, row)) if entry.len < row.checkpoint_len() => Some(format!(
                "partial file holds {} bytes, checkpoint says {}",
                entry.len,
                row.checkpoint_len()
            )),
            Some((id, row)) => {
                if entry.len > row.checkpoint_len() {
                    let mut file = fs.open_rw(&path).map_err(io("open", &path))?;
                    file.set_len(row.checkpoint_len())
                        .map_err(io("truncate", &path))?;
                    file.sync().map_err(io("fsync", &path))?;
                }
                tmp_seen.insert(id);
                None
            }
        };
        if let Some(reason) = verdict {
            fs.remove_file(&path).map_err(io("remove", &path))?;
            match id.filter(|id| partial_rows.contains_key(id)) {
                Some(id) => {
                    tracing::warn!(seg_id = %id, reason, "partial dropped");
                    report.partials_dropped.push((id, reason));
                    drop_partials.push(id);
                }
                None => {
                    tracing::info!(path = %path.display(), "temp file removed");
                    report.temp_removed.push(path);
                }
            }
        }
    }
    for id in partial_rows.keys() {
        if !tmp_seen.contains(id) && !drop_partials.contains(id) {
            let reason = "partial record without its temp file".to_owned();
            tracing::warn!(seg_id = %id, reason, "partial dropped");
            report.partials_dropped.push((*id, reason));
            drop_partials.push(*id);
        }
    }
    partial_rows.retain(|id, _| tmp_seen.contains(id));

    // Segment files: every file has a row and every row a file of the recorded size. One
    // fan-out directory at a time (an id's file is in the directory of its first byte, so its
    // rows are one range of the index): memory holds one directory's rows, never the whole
    // index, and what start-up leaves behind does not grow with the store.
    let mut stored_bytes = 0u64;
    {
        let read = db.begin_read().map_err(db_err)?;
        let segments = read.open_table(SEGMENTS).map_err(db_err)?;
        for (first, dir) in (0..=u8::MAX).zip(layout.fanouts()) {
            let (mut low, mut high) = ([0u8; 32], [0xffu8; 32]);
            (low[0], high[0]) = (first, first);
            let mut rows = BTreeMap::new();
            for entry in segments.range::<&[u8; 32]>(&low..=&high).map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                let row: SegmentRow = tables::decode("segments-v1", v.value())?;
                rows.insert(SegmentId(*k.value()), row.file_len);
            }
            let mut seen = BTreeSet::new();
            let mut dropped = BTreeSet::new();
            for entry in fs.list_dir(&dir).map_err(io("list", &dir))? {
                let path = dir.join(&entry.name);
                let id = layout::id_from_file_name(&entry.name, layout::SEG_EXT)
                    .filter(|id| dir.ends_with(id.fanout_dir()));
                match id.and_then(|id| rows.get(&id).map(|len| (id, *len))) {
                    Some((id, len)) if entry.kind == EntryKind::File && entry.len == len => {
                        seen.insert(id);
                    }
                    Some((id, len)) => {
                        let reason = format!("file holds {} bytes, index says {len}", entry.len);
                        tracing::error!(seg_id = %id, reason, "index row dropped; the segment will be fetched again");
                        fs.remove_file(&path).map_err(io("remove", &path))?;
                        report.rows_dropped.push((id, reason));
                        dropped.insert(id);
                        drop_rows.push(id);
                    }
                    // Mutation point (INV-05): a file without an index row (a crash between
                    // rename and commit) is kept, so files and rows disagree.
                    None if mutants::active("recovery_keeps_orphans") => {}
                    None => {
                        tracing::warn!(path = %path.display(), "segment file without index row removed");
                        fs.remove_file(&path).map_err(io("remove", &path))?;
                        report.orphans_removed.push(path);
                    }
                }
            }
            for (id, len) in &rows {
                if seen.contains(id) {
                    stored_bytes += len;
                } else if !dropped.contains(id) {
                    let reason = "file missing".to_owned();
                    tracing::error!(seg_id = %id, reason, "index row dropped; the segment will be fetched again");
                    report.rows_dropped.push((*id, reason));
                    drop_rows.push(*id);
                }
            }
        }
    }

    if !drop_rows.is_empty() || !drop_partials.is_empty() {
        let txn = db.begin_write().map_err(db_err)?;
        {
            let mut segments = txn.open_table(SEGMENTS).map_err(db_err)?;
            let mut outboards = txn.open_table(OUTBOARDS).map_err(db_err)?;
            for id in &drop_rows {
                outboards.remove(&id.0).map_err(db_err)?;
                segments.remove(&id.0).map_err(db_err)?;
            }
            let mut partials = txn.open_table(PARTIALS).map_err(db_err)?;
            for id in &drop_partials {
                partials.remove(&id.0).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
    }
    if !report.is_clean() {
        for dir in std::iter::once(tmp.clone()).chain(layout.fanouts()) {
            fs.sync_dir(&dir).map_err(io("fsync", &dir))?;
        }
    }
    report.partials_kept = partial_rows.len();
    acct.usage.stored_bytes = stored_bytes;
    for (id, row) in &partial_rows {
        acct.partials.insert(*id, row.checkpoint_len());
    }
    acct.usage.partial_bytes = acct.partials.values().sum();
    Ok(report)
}

fn db_err<E: Into<redb::Error>>(e: E) -> StoreError {
    db(e)
}
