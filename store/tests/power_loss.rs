//! Durability of the store proven with the power-loss double [`SimFs`] (INV-03, INV-05, INV-06,
//! INV-23).
//!
//! Killing a process cannot prove an fsync: the kernel still writes its page cache. `SimFs` keeps
//! what reads see apart from what survives power loss, so these tests can cut the power (or fail
//! the disk) at every single file-system operation of a deterministic scenario and then check
//! what a reboot finds:
//!
//! 1. The scenario runs once on a healthy disk; its operations are counted (T) and labelled.
//! 2. For every k in 0..T it runs again on a fresh `SimFs` with a fault at operation k, stopping
//!    at the first error and remembering which segments were acknowledged. (For disk errors, a k
//!    whose run is provably identical to another's is not run twice: see [`disk_fault_jobs`].)
//! 3. The store is reopened on the crash image (and, for disk errors, checked live as well):
//!    every acknowledged segment must be there and verify, files and rows must agree, no stray
//!    temp file may remain, usage must equal the bytes on disk, and new ingests must work.
//!
//! Operations are labelled by [`TracedFs`], a thin wrapper that records every call the store
//! makes through the `Fs` seam; operations it does not see are redb's own I/O on `edge.redb`.
//! Failure messages name k, the fault, the operation and the scenario step it fell in.

mod common;

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::Instant;

use common::*;
use store::fs::sim::{Fault, FaultKind, SimFs};
use store::fs::{self, DirEntry, EntryKind, Fs, FsFile, FsRead};
use store::layout::Layout;
use store::manifest::SignedManifest;
use store::{
    Begin, Holding, Ingest, IngestError, IngestOptions, IngestOutcome, SegmentId, Store,
    StoreConfig,
};

/// Data directory of every store in this file (SimFs paths are absolute and in memory).
const DATA_DIR: &str = "/data";
/// Payload bytes of the streamed segment, written through `begin_ingest`/`write`/`checkpoint`.
const STREAMED_LEN: usize = 100_000;
/// Payload offset at which the streamed ingest is checkpointed before being dropped.
const STREAMED_CHECKPOINT: usize = 40_000;
/// Payload offset the streamed ingest reaches (unsynced) before it is dropped.
const STREAMED_DROPPED_AT: usize = 60_000;
/// Size of the writes of the resumed streamed ingest.
const STREAMED_CHUNK: usize = 30_000;

// ---------------------------------------------------------------------------------------------
// The world: signed segments and the store configuration, built once.
// ---------------------------------------------------------------------------------------------

/// A signed segment of the scenario.
struct Seg {
    label: &'static str,
    id: SegmentId,
    signed: SignedManifest,
    body: Vec<u8>,
    /// The whole `.seg` file: what the store must hand back byte for byte.
    file: Vec<u8>,
}

/// Everything the scenario needs, signed once (signing is the slow part of a segment).
struct World {
    cfg: StoreConfig,
    layout: Layout,
    /// Payload of 0 bytes.
    empty: Seg,
    /// A small payload; evicted explicitly with `Store::evict`.
    small: Seg,
    /// Several stream buffers long, lowest priority: the ceiling evicts it for `last`.
    multi: Seg,
    /// Streamed, checkpointed, dropped, resumed and finished.
    streamed: Seg,
    /// Needs the ceiling to evict `multi` before it fits.
    last: Seg,
    /// Ingested after a crash or fault, to show the store still works.
    fresh: Seg,
}

impl World {
    fn new() -> World {
        let publisher = publisher(7);
        let make = |label: &'static str, tag: u64, len: usize, priority: u8| {
            let mut spec = SegSpec::named(label);
            spec.priority = priority;
            let body = payload(tag, len);
            let (signed, file) = seg(&publisher, &spec, &body);
            Seg {
                label,
                id: signed.id(),
                signed,
                body,
                file,
            }
        };
        let empty = make("empty", 101, 0, 200);
        let small = make("small", 102, 1_000, 200);
        let multi = make("multi-chunk", 103, 150_000, 1);
        let streamed = make("streamed", 104, STREAMED_LEN, 200);
        let last = make("last", 105, 120_000, 200);
        let fresh = make("fresh", 106, 2_000, 200);
        // Room for the first four segments (the streamed one reserves its full length while
        // `small` is still stored) and for `fresh` whatever a crash left, but not for `last`
        // until `multi` goes.
        let slack = fresh.file.len() as u64 + 1_000;
        let ceiling = [&empty, &small, &multi, &streamed]
            .iter()
            .map(|s| s.file.len() as u64)
            .sum::<u64>()
            + slack;
        assert!(
            last.file.len() as u64 > small.file.len() as u64 + slack,
            "`last` must need an eviction by the ceiling"
        );
        let cfg = config(Path::new(DATA_DIR), ceiling, trusting(&[&publisher]));
        let world = World {
            layout: Layout::new(DATA_DIR),
            cfg,
            empty,
            small,
            multi,
            streamed,
            last,
            fresh,
        };
        // Distinct fan-out directories keep every labelled operation attributable to one segment.
        let fanouts: BTreeSet<String> = world.all().iter().map(|s| s.id.fanout_dir()).collect();
        assert_eq!(fanouts.len(), world.all().len(), "pick other payload tags");
        world
    }

    fn all(&self) -> [&Seg; 6] {
        [
            &self.empty,
            &self.small,
            &self.multi,
            &self.streamed,
            &self.last,
            &self.fresh,
        ]
    }

    fn seg(&self, id: &SegmentId) -> Option<&Seg> {
        self.all().into_iter().find(|s| s.id == *id)
    }

    fn name(&self, id: &SegmentId) -> String {
        match self.seg(id) {
            Some(s) => format!("`{}` ({})", s.label, id.short()),
            None => format!("unknown segment {id}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TracedFs: labels every operation the store makes through the Fs seam.
// ---------------------------------------------------------------------------------------------

/// One operation the store made through the `Fs` seam.
#[derive(Debug, Clone)]
struct OpRecord {
    /// Its number in the `SimFs` count.
    op: u64,
    what: &'static str,
    path: PathBuf,
    /// It failed with EIO or ENOSPC: an injected fault (or the dead disk after power loss).
    fault: bool,
}

impl fmt::Display for OpRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.what, self.path.display())
    }
}

/// A `Fs` that delegates to a [`SimFs`] and records each call with its operation number.
/// redb's own I/O on `edge.redb` goes straight to the `SimFs` and is therefore not recorded.
#[derive(Debug, Clone)]
struct TracedFs {
    sim: SimFs,
    trace: Arc<Mutex<Vec<OpRecord>>>,
}

impl TracedFs {
    fn new(sim: SimFs) -> TracedFs {
        TracedFs {
            sim,
            trace: Arc::default(),
        }
    }

    fn trace(&self) -> Vec<OpRecord> {
        lock(&self.trace).clone()
    }

    fn record<T>(
        &self,
        what: &'static str,
        path: &Path,
        call: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<T> {
        let op = self.sim.op_count();
        let result = call();
        let fault = result.as_ref().err().is_some_and(is_injected);
        lock(&self.trace).push(OpRecord {
            op,
            what,
            path: path.to_owned(),
            fault,
        });
        result
    }

    fn traced_file(&self, path: &Path, inner: Box<dyn FsFile>) -> Box<dyn FsFile> {
        Box::new(TracedFile {
            inner,
            path: path.to_owned(),
            fs: self.clone(),
        })
    }
}

fn is_injected(e: &io::Error) -> bool {
    fs::is_eio(e) || fs::is_enospc(e)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fs for TracedFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.record("create_dir_all", path, || self.sim.create_dir_all(path))
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = self.record("create_new", path, || self.sim.create_new(path))?;
        Ok(self.traced_file(path, file))
    }
    fn open_rw(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = self.record("open_rw", path, || self.sim.open_rw(path))?;
        Ok(self.traced_file(path, file))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsRead>> {
        self.record("open_read", path, || self.sim.open_read(path))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.record("rename", from, || self.sim.rename(from, to))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.record("remove_file", path, || self.sim.remove_file(path))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.record("sync_dir", dir, || self.sim.sync_dir(dir))
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        self.record("list_dir", dir, || self.sim.list_dir(dir))
    }
    fn file_len(&self, path: &Path) -> io::Result<Option<u64>> {
        self.record("file_len", path, || self.sim.file_len(path))
    }
    fn available_bytes(&self, dir: &Path) -> io::Result<u64> {
        self.record("available_bytes", dir, || self.sim.available_bytes(dir))
    }
    fn open_database(
        &self,
        path: &Path,
        create: bool,
    ) -> Result<redb::Database, redb::DatabaseError> {
        let op = self.sim.op_count();
        let result = self.sim.open_database(path, create);
        let fault = matches!(
            &result,
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) if is_injected(e)
        );
        lock(&self.trace).push(OpRecord {
            op,
            what: "open_database",
            path: path.to_owned(),
            fault,
        });
        result
    }
}

/// A file of [`TracedFs`]: writes, syncs and truncations are recorded.
#[derive(Debug)]
struct TracedFile {
    inner: Box<dyn FsFile>,
    path: PathBuf,
    fs: TracedFs,
}

impl Read for TracedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for TracedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Self { inner, path, fs } = self;
        fs.record("write", path, || inner.write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Seek for TracedFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl FsFile for TracedFile {
    fn sync(&mut self) -> io::Result<()> {
        let Self { inner, path, fs } = self;
        fs.record("fsync", path, || inner.sync())
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let Self { inner, path, fs } = self;
        fs.record("set_len", path, || inner.set_len(len))
    }
}

// ---------------------------------------------------------------------------------------------
// The scenario.
// ---------------------------------------------------------------------------------------------

/// One step of the scenario: the operations it made and how it ended.
#[derive(Debug, Clone)]
struct Step {
    name: String,
    /// Operations `first_op..end_op` were made during this step.
    first_op: u64,
    end_op: u64,
    error: Option<String>,
    expect: Expect,
}

/// What a step promises beyond its result.
#[derive(Debug, Clone, Default)]
struct Expect {
    /// Operations whose failure this step may absorb and still succeed: best-effort cleanup
    /// after an eviction committed (the row is gone; recovery removes a leftover file), and the
    /// reopening of a partial whose failure makes the ingest start over from 0.
    absorbs: Vec<(&'static str, PathBuf)>,
    /// If this step fails, the temp file of this segment's ingest is gone (INV-23).
    temp_gone_on_failure: Option<SegmentId>,
}

impl Expect {
    fn nothing() -> Expect {
        Expect::default()
    }

    /// A step of the ingest of `s`: failing abandons that ingest and removes its temp file.
    fn ingest_of(s: &Seg) -> Expect {
        Expect {
            temp_gone_on_failure: Some(s.id),
            ..Expect::default()
        }
    }

    fn absorbing(mut self, absorbs: Vec<(&'static str, PathBuf)>) -> Expect {
        self.absorbs = absorbs;
        self
    }
}

/// What a run of the scenario did.
struct Run {
    sim: SimFs,
    steps: Vec<Step>,
    /// The live store, if it opened.
    store: Option<Store>,
    /// Segments whose ingest reported success, in order.
    acked: Vec<SegmentId>,
    /// Segments whose eviction was attempted: they may be gone, durably or not.
    maybe_gone: BTreeSet<SegmentId>,
    /// Segments whose eviction returned: durably gone and tombstoned.
    evicted: BTreeSet<SegmentId>,
    /// Evicted segments whose file could not be removed: an orphan until the next start.
    orphaned: BTreeSet<SegmentId>,
    /// Where the resumed streamed ingest started.
    resume_offset: Option<u64>,
    /// An outcome no fault can explain (checked by every test).
    wrong: Option<String>,
}

impl Run {
    fn new(sim: SimFs) -> Run {
        Run {
            sim,
            steps: Vec::new(),
            store: None,
            acked: Vec::new(),
            maybe_gone: BTreeSet::new(),
            evicted: BTreeSet::new(),
            orphaned: BTreeSet::new(),
            resume_offset: None,
            wrong: None,
        }
    }

    /// Runs one step, recording its operations; `None` (stop the scenario) if it failed.
    fn step<T, E: fmt::Display>(
        &mut self,
        name: impl Into<String>,
        expect: Expect,
        call: impl FnOnce() -> Result<T, E>,
    ) -> Option<T> {
        let first_op = self.sim.op_count();
        let result = call();
        self.steps.push(Step {
            name: name.into(),
            first_op,
            end_op: self.sim.op_count(),
            error: result.as_ref().err().map(|e| e.to_string()),
            expect,
        });
        result.ok()
    }

    /// Records an outcome that no fault explains and stops the scenario.
    fn wrong<T>(&mut self, what: String) -> Option<T> {
        self.wrong = Some(what);
        None
    }

    /// Acknowledged segments that must still be stored.
    fn must_hold(&self) -> impl Iterator<Item = &SegmentId> {
        self.acked.iter().filter(|id| !self.maybe_gone.contains(id))
    }

    fn step_at(&self, op: u64) -> Option<&Step> {
        self.steps
            .iter()
            .find(|s| s.first_op <= op && op < s.end_op)
    }

    fn end_op(&self) -> u64 {
        self.steps.last().map_or(0, |s| s.end_op)
    }

    fn failed_step(&self) -> Option<&Step> {
        self.steps.iter().find(|s| s.error.is_some())
    }
}

/// Runs the whole scenario on `fs`, stopping at the first error. The caller drops the store.
fn run_scenario(w: &World, fs: &TracedFs) -> Run {
    let mut run = Run::new(fs.sim.clone());
    let _ = scenario(w, fs, &mut run);
    run
}

/// open → ingest_reader (0 bytes, small, multi-chunk) → streamed ingest checkpointed and dropped
/// → resumed and finished → `evict` → an ingest the ceiling must evict for.
fn scenario(w: &World, fs: &TracedFs, run: &mut Run) -> Option<()> {
    let store = run.step("Store::open", Expect::nothing(), || {
        Store::open(w.cfg.clone(), Arc::new(fs.clone()), NOW_MS).map(|(store, _)| store)
    })?;
    run.store = Some(store.clone());

    for s in [&w.empty, &w.small, &w.multi] {
        let name = format!("ingest_reader `{}`", s.label);
        let outcome = run.step(name, Expect::ingest_of(s), || import(&store, s))?;
        let id = expect_stored(run, s, outcome)?;
        run.acked.push(id);
    }

    // Streamed: checkpoint, write past it, drop (the checkpointed prefix is kept for resume).
    let d = &w.streamed;
    let begin = run.step("begin_ingest `streamed`", Expect::ingest_of(d), || {
        store.begin_ingest(
            d.signed.clone(),
            &IngestOptions::from_peer("peer-a"),
            NOW_MS,
        )
    })?;
    let mut ingest = expect_ingest(run, begin)?;
    for (from, to) in [(0, 20_000), (20_000, STREAMED_CHECKPOINT)] {
        let name = format!("write `streamed` [{from}..{to}]");
        run.step(name, Expect::ingest_of(d), || {
            ingest.write(&d.body[from..to])
        })?;
    }
    run.step("checkpoint `streamed`", Expect::ingest_of(d), || {
        ingest.checkpoint(NOW_MS)
    })?;
    let name = format!("write `streamed` [{STREAMED_CHECKPOINT}..{STREAMED_DROPPED_AT}]");
    run.step(name, Expect::ingest_of(d), || {
        ingest.write(&d.body[STREAMED_CHECKPOINT..STREAMED_DROPPED_AT])
    })?;
    run.step(
        "drop `streamed` (keeps its checkpoint)",
        Expect::nothing(),
        || {
            drop(ingest);
            Ok::<(), IngestError>(())
        },
    )?;

    // Resume and finish. Beginning may fail before the partial is touched (no room): then the
    // partial stays, so this one step does not promise its temp file gone.
    let tmp = w.layout.tmp_file(&d.id);
    let resume = Expect::nothing().absorbing(vec![("open_rw", tmp.clone()), ("set_len", tmp)]);
    let begin = run.step("begin_ingest `streamed` (resume)", resume, || {
        store.begin_ingest(
            d.signed.clone(),
            &IngestOptions::from_peer("peer-a"),
            NOW_MS,
        )
    })?;
    let mut ingest = expect_ingest(run, begin)?;
    let offset = ingest.resume_offset();
    run.resume_offset = Some(offset);
    let mut at = usize::try_from(offset).expect("offset fits usize");
    while at < d.body.len() {
        let to = (at + STREAMED_CHUNK).min(d.body.len());
        let name = format!("write `streamed` [{at}..{to}] (resumed)");
        run.step(name, Expect::ingest_of(d), || ingest.write(&d.body[at..to]))?;
        at = to;
    }
    let stored = run.step("finish `streamed`", Expect::ingest_of(d), || {
        ingest.finish(NOW_MS, |_, _| Ok(()))
    })?;
    if stored.id != d.id {
        return run.wrong(format!("finish stored {} for `streamed`", stored.id));
    }
    run.acked.push(stored.id);

    // An operator's eviction.
    let small = w.small.id;
    run.maybe_gone.insert(small);
    let evict = Expect::nothing().absorbing(evict_absorbs(w, &small));
    let gone = run.step("evict `small`", evict, || store.evict(&[small]))?;
    if gone != [small] {
        return run.wrong(format!("evict returned {gone:?}, expected only `small`"));
    }
    run.evicted.insert(small);

    // An ingest that fits only after the ceiling evicts `multi` (the lowest priority).
    let multi = w.multi.id;
    run.maybe_gone.insert(multi);
    let name = "ingest_reader `last` (the ceiling evicts `multi-chunk`)";
    let expect = Expect::ingest_of(&w.last).absorbing(evict_absorbs(w, &multi));
    let outcome = run.step(name, expect, || import(&store, &w.last))?;
    let id = expect_stored(run, &w.last, outcome)?;
    run.acked.push(id);
    match store.holding(&multi) {
        Ok(Holding::Tombstoned) => {
            run.evicted.insert(multi);
        }
        Ok(other) => return run.wrong(format!("`multi-chunk` not evicted for `last`: {other:?}")),
        // A dead disk after power loss; the eviction committed before `last` did either way.
        Err(_) => {}
    }
    Some(())
}

/// The best-effort operations that follow an eviction's commit.
fn evict_absorbs(w: &World, id: &SegmentId) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("remove_file", w.layout.segment_file(id)),
        ("sync_dir", w.layout.fanout(id)),
    ]
}

fn import(store: &Store, s: &Seg) -> Result<IngestOutcome<()>, IngestError> {
    store.ingest_reader(&s.file[..], &IngestOptions::import(), NOW_MS, |_, _| Ok(()))
}

fn expect_stored(run: &mut Run, s: &Seg, outcome: IngestOutcome<()>) -> Option<SegmentId> {
    match outcome {
        IngestOutcome::Stored(stored) if stored.id == s.id => Some(stored.id),
        other => run.wrong(format!("ingest of `{}` gave {other:?}", s.label)),
    }
}

fn expect_ingest(run: &mut Run, begin: Begin) -> Option<Box<Ingest>> {
    match begin {
        Begin::Ingest(ingest) => Some(ingest),
        Begin::Have(holding) => run.wrong(format!("begin_ingest answered Have({holding:?})")),
    }
}

/// The clean run, for choosing and describing fault injections.
struct OpMap {
    trace: Vec<OpRecord>,
    steps: Vec<Step>,
    /// Operations of the scenario: `0..end_op`; the rest (`end_op..total`) close the store.
    end_op: u64,
    /// T: every operation of the clean run, closing the store included.
    total: u64,
    /// `epochs[k]`: operations before k that may have changed the durable state (syncs,
    /// `create_dir_all`, and redb's own I/O to be safe). Power lost at two ops of the same epoch
    /// leaves the same crash image.
    epochs: Vec<u64>,
    /// `state_epochs[k]`: operations before k that may have changed any state, durable or not
    /// (all but [`READ_ONLY_OPS`]). Two ops of the same state epoch find the same disk.
    state_epochs: Vec<u64>,
}

impl OpMap {
    fn describe(&self, k: u64) -> String {
        let what = self
            .trace
            .iter()
            .find(|r| r.op == k)
            .map_or_else(|| "redb I/O on edge.redb".to_owned(), |r| format!("`{r}`"));
        let step = self
            .steps
            .iter()
            .find(|s| s.first_op <= k && k < s.end_op)
            .map_or("dropping the store", |s| s.name.as_str());
        format!("op {k} of the clean run is {what} in step `{step}`")
    }

    /// Operations that may be syncs: the labelled ones, and redb's own I/O (which includes its
    /// `sync_data`). A `SyncFails` fault fires at the first sync at or after its op.
    fn may_be_sync(&self, op: u64) -> bool {
        match self.trace.iter().find(|r| r.op == op) {
            Some(r) => matches!(r.what, "fsync" | "sync_dir"),
            None => true,
        }
    }
}

/// Labelled operations that can change what survives power loss (`SimFs` makes directories
/// durable at once).
const DURABLE_OPS: [&str; 3] = ["fsync", "sync_dir", "create_dir_all"];
/// Labelled operations that change nothing at all.
const READ_ONLY_OPS: [&str; 5] = [
    "list_dir",
    "file_len",
    "available_bytes",
    "open_read",
    "open_rw",
];

/// Runs the scenario on a healthy disk, checks it did everything, and maps its operations.
fn clean_run(w: &World) -> OpMap {
    let sim = SimFs::new();
    let fs = TracedFs::new(sim.clone());
    let mut run = run_scenario(w, &fs);
    assert_eq!(run.failed_step().map(|s| &s.name), None, "clean run");
    assert_eq!(run.wrong, None, "clean run");
    let all = [&w.empty, &w.small, &w.multi, &w.streamed, &w.last].map(|s| s.id);
    assert_eq!(run.acked, all, "clean run acknowledges every segment");
    assert_eq!(run.evicted, BTreeSet::from([w.small.id, w.multi.id]));
    assert_eq!(run.resume_offset, Some(STREAMED_CHECKPOINT as u64));
    drop(run.store.take());
    let total = sim.op_count();
    let (store, report) = reopen(w, &sim, "clean run");
    assert!(report.is_clean(), "clean run: {report:?}");
    check_consistent(&store, &sim, w, &run, Restarted::Yes, "clean run");
    let trace = fs.trace();
    let labels: BTreeMap<u64, &str> = trace.iter().map(|r| (r.op, r.what)).collect();
    let (mut epochs, mut state_epochs) = (vec![0], vec![0]);
    for op in 0..total {
        let label = labels.get(&op);
        let durable = !matches!(label, Some(what) if !DURABLE_OPS.contains(what));
        let changes = !matches!(label, Some(what) if READ_ONLY_OPS.contains(what));
        epochs.push(epochs[op as usize] + u64::from(durable));
        state_epochs.push(state_epochs[op as usize] + u64::from(changes));
    }
    let map = OpMap {
        trace,
        end_op: run.end_op(),
        total,
        epochs,
        state_epochs,
        steps: run.steps,
    };
    assert!(
        map.total > map.end_op,
        "closing the store writes to edge.redb"
    );
    map
}

// ---------------------------------------------------------------------------------------------
// Checks.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restarted {
    /// The store that ran the scenario.
    No,
    /// A store opened afterwards (on a crash image, or on the same disk).
    Yes,
}

/// The whole `.seg` file of `id` as the store serves it (verifying its payload hash).
/// `.seg` files under `segments/`, by id, with their lengths, listed through the Fs.
///
/// The store names files after segment ids only, and every id it could hold is one of the
/// world's, whose fan-out directories are distinct: listing those finds every segment file.
/// (Listing all 256 costs SimFs ~16 ms unoptimised; recovery does it at every reopen anyway.)
fn segment_files(fs: &dyn Fs, w: &World, ctx: &str) -> BTreeMap<SegmentId, u64> {
    let mut out = BTreeMap::new();
    for dir in w.all().map(|s| w.layout.fanout(&s.id)) {
        let entries = fs
            .list_dir(&dir)
            .unwrap_or_else(|e| panic!("{ctx}: list {}: {e}", dir.display()));
        for e in entries {
            let path = dir.join(&e.name);
            assert_eq!(
                e.kind,
                EntryKind::File,
                "{ctx}: {} is not a file",
                path.display()
            );
            let id = id_in_name(&e.name, ".seg")
                .unwrap_or_else(|| panic!("{ctx}: stray file {}", path.display()));
            assert_eq!(
                dir,
                w.layout.fanout(&id),
                "{ctx}: {} misplaced",
                path.display()
            );
            out.insert(id, e.len);
        }
    }
    out
}

fn id_in_name(name: &std::ffi::OsStr, ext: &str) -> Option<SegmentId> {
    name.to_str()?.strip_suffix(ext)?.parse().ok()
}

/// Files and rows agree, every acknowledged segment is stored and verifies, evictions stuck,
/// tmp/ holds only checkpointed partials, and usage equals the bytes on disk.
fn check_consistent(
    store: &Store,
    fs: &dyn Fs,
    w: &World,
    run: &Run,
    restarted: Restarted,
    ctx: &str,
) {
    let listed: BTreeMap<SegmentId, u64> = store
        .list()
        .unwrap_or_else(|e| panic!("{ctx}: list: {e}"))
        .into_iter()
        .map(|s| (s.id, s.row.file_len))
        .collect();
    for id in run.must_hold() {
        assert!(
            listed.contains_key(id),
            "{ctx}: acknowledged segment {} is not stored (listed: {:?})",
            w.name(id),
            listed.keys().map(|id| w.name(id)).collect::<Vec<_>>()
        );
    }
    for id in &run.evicted {
        assert!(
            !listed.contains_key(id),
            "{ctx}: evicted {} is back",
            w.name(id)
        );
        let holding = store.holding(id);
        assert!(
            matches!(holding, Ok(Holding::Tombstoned)),
            "{ctx}: evicted {} is {holding:?}, not tombstoned",
            w.name(id)
        );
    }
    for id in listed.keys() {
        let seg = w
            .seg(id)
            .unwrap_or_else(|| panic!("{ctx}: the store lists {id}, never offered"));
        assert!(
            read_back(store, id, ctx) == seg.file,
            "{ctx}: {} served with different bytes",
            w.name(id)
        );
    }

    let files = segment_files(fs, w, ctx);
    let mut expected = listed.clone();
    if restarted == Restarted::No {
        // An evicted segment whose unlink failed stays until recovery removes it at start.
        for id in &run.orphaned {
            if let Some(len) = files.get(id) {
                expected.insert(*id, *len);
            }
        }
    }
    assert_eq!(
        files, expected,
        "{ctx}: segment files (left) and index rows (right) disagree"
    );
    let usage = store.usage();
    assert_eq!(
        usage.stored_bytes,
        files.values().sum::<u64>(),
        "{ctx}: stored_bytes is not the bytes of the segment files"
    );
    assert_eq!(usage.reserved_bytes, 0, "{ctx}: no ingest is in flight");

    let tmp = w.layout.tmp();
    let mut tmp_bytes = 0;
    for e in fs
        .list_dir(&tmp)
        .unwrap_or_else(|e| panic!("{ctx}: list tmp: {e}"))
    {
        let path = tmp.join(&e.name);
        let id = id_in_name(&e.name, ".part")
            .unwrap_or_else(|| panic!("{ctx}: stray file {}", path.display()));
        let holding = store.holding(&id);
        assert!(
            matches!(holding, Ok(Holding::Partial { .. })),
            "{ctx}: temp file {} of {} has no partial record ({holding:?})",
            path.display(),
            w.name(&id)
        );
        tmp_bytes += e.len;
    }
    match restarted {
        // Recovery truncated every kept partial to its checkpoint.
        Restarted::Yes => assert_eq!(usage.partial_bytes, tmp_bytes, "{ctx}: partial bytes"),
        // A dropped ingest keeps what it wrote past its checkpoint until the next resume.
        Restarted::No => assert!(usage.partial_bytes <= tmp_bytes, "{ctx}: partial bytes"),
    }
    assert!(
        usage.total() <= w.cfg.ceiling_bytes,
        "{ctx}: over the ceiling"
    );
}

/// A new segment can be ingested, and afterwards everything is still consistent.
fn check_accepts_new_ingest(
    store: &Store,
    fs: &dyn Fs,
    w: &World,
    run: &Run,
    restarted: Restarted,
    ctx: &str,
) {
    match import(store, &w.fresh) {
        Ok(IngestOutcome::Stored(s)) => assert_eq!(s.id, w.fresh.id),
        other => panic!("{ctx}: a new ingest after the fault gave {other:?}"),
    }
    check_consistent(store, fs, w, run, restarted, ctx);
    assert!(read_back(store, &w.fresh.id, ctx) == w.fresh.file);
}

/// Opens a store on `sim` as a restarted node would; it must come up.
fn reopen(w: &World, sim: &SimFs, ctx: &str) -> (Store, store::RecoveryReport) {
    Store::open(w.cfg.clone(), Arc::new(sim.clone()), NOW_MS)
        .unwrap_or_else(|e| panic!("{ctx}: Store::open after the fault failed: {e}"))
}

/// Panics of the store's committer thread (which callers otherwise see only as a closed store).
static COMMITTER_PANICS: AtomicU64 = AtomicU64::new(0);

fn watch_committer_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("store-committer") {
                COMMITTER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

fn assert_no_committer_panic(ctx: &str) {
    assert_eq!(
        COMMITTER_PANICS.load(Ordering::SeqCst),
        0,
        "{ctx}: the committer thread panicked"
    );
}

// ---------------------------------------------------------------------------------------------
// Sweeps: every injection runs, on two threads; failures are collected, not just the first.
// ---------------------------------------------------------------------------------------------

/// Threads a sweep runs on (the suite's budget is two cores).
const WORKERS: usize = 2;
/// A sweep stops starting new injections after this many failures.
const MAX_FAILURES: usize = 8;

/// What a sweep saw, to show that the windows that matter were hit.
#[derive(Debug, Default)]
struct Coverage {
    injections: u64,
    /// Runs by the number of segments they acknowledged.
    acked: BTreeMap<usize, u64>,
    /// Recovery work on the images: temp files and orphan files removed, rows dropped,
    /// partials kept for resume.
    temp_removed: u64,
    orphans_removed: u64,
    rows_dropped: u64,
    partials_kept: u64,
    /// Disk errors: the fault failed the step that met it,
    failed_a_step: u64,
    /// hit a best-effort operation its step may absorb,
    absorbed: u64,
    /// hit redb's own I/O (the live store fail-stops and is restarted),
    in_redb: u64,
    /// or was not reached by the scenario (it fired at the probe instead).
    not_reached: u64,
    /// Injections whose checks after the scenario were exactly those of an earlier injection
    /// (same disk state and requirements; see [`Memo`]), so they were not repeated.
    shared_checks: u64,
}

impl Coverage {
    fn merge(&mut self, other: Coverage) {
        self.injections += other.injections;
        for (n, runs) in other.acked {
            *self.acked.entry(n).or_default() += runs;
        }
        self.temp_removed += other.temp_removed;
        self.orphans_removed += other.orphans_removed;
        self.rows_dropped += other.rows_dropped;
        self.partials_kept += other.partials_kept;
        self.failed_a_step += other.failed_a_step;
        self.absorbed += other.absorbed;
        self.in_redb += other.in_redb;
        self.not_reached += other.not_reached;
        self.shared_checks += other.shared_checks;
    }

    fn recovered(&mut self, report: &store::RecoveryReport) {
        self.temp_removed += report.temp_removed.len() as u64;
        self.orphans_removed += report.orphans_removed.len() as u64;
        self.rows_dropped += report.rows_dropped.len() as u64;
        self.partials_kept += report.partials_kept as u64;
    }
}

/// Runs `check` for every job on [`WORKERS`] threads, and fails with every failure's message.
fn sweep<J: Sync>(jobs: &[J], check: impl Fn(&J, &mut Coverage) + Sync) -> Coverage {
    let failures = Mutex::new(Vec::new());
    let total = Mutex::new(Coverage::default());
    std::thread::scope(|scope| {
        for worker in 0..WORKERS {
            let (failures, total, check) = (&failures, &total, &check);
            scope.spawn(move || {
                let mut seen = Coverage::default();
                for job in jobs.iter().skip(worker).step_by(WORKERS) {
                    if lock(failures).len() >= MAX_FAILURES {
                        break;
                    }
                    let outcome = panic::catch_unwind(AssertUnwindSafe(|| check(job, &mut seen)));
                    if let Err(payload) = outcome {
                        lock(failures).push(panic_message(payload.as_ref()));
                    }
                }
                lock(total).merge(seen);
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(
        failures.is_empty(),
        "{} injection(s) failed (stopping after {MAX_FAILURES}):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    total.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Keys of the post-fault checks already made in a sweep: an injection whose checks would be
/// exactly the same (same disk state, same requirements) as an earlier one's skips them.
#[derive(Debug, Default)]
struct Memo<K: Ord>(Mutex<BTreeSet<K>>);

impl<K: Ord> Memo<K> {
    /// True the first time `key` is seen.
    fn first(&self, key: K) -> bool {
        lock(&self.0).insert(key)
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "panic without a message".to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// INV-03, INV-05: power loss at every operation.
// ---------------------------------------------------------------------------------------------

#[test]
fn inv_03_inv_05_power_loss_at_every_step_keeps_every_acknowledged_segment() {
    watch_committer_panics();
    let started = Instant::now();
    let w = World::new();
    let map = clean_run(&w);
    let ks: Vec<u64> = (0..map.total).collect();
    let memo = Memo::default();
    let seen = sweep(&ks, |k, seen| power_loss_at(&w, &map, &memo, *k, seen));
    eprintln!(
        "power loss: T = {} operations, {} injections in {:.1?}; {seen:?}",
        map.total,
        seen.injections,
        started.elapsed()
    );
    assert_eq!(seen.injections, map.total);
    // Every prefix of acknowledgements was reached, and recovery had each kind of work to do.
    assert_eq!(
        seen.acked.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5],
        "{seen:?}"
    );
    assert!(seen.temp_removed > 0, "{seen:?}");
    assert!(seen.orphans_removed > 0, "{seen:?}");
    assert!(seen.partials_kept > 0, "{seen:?}");
}

/// Image checks already made: (epoch, segments that must be held, segments evicted).
type ImageKey = (u64, Vec<SegmentId>, Vec<SegmentId>);

fn power_loss_at(w: &World, map: &OpMap, memo: &Memo<ImageKey>, k: u64, seen: &mut Coverage) {
    let ctx = format!("power loss at op {k} ({})", map.describe(k));
    let sim = SimFs::new();
    sim.inject(Fault {
        at_op: k,
        kind: FaultKind::PowerLoss,
    });
    let fs = TracedFs::new(sim.clone());
    let mut run = run_scenario(w, &fs);
    assert_eq!(run.wrong, None, "{ctx}");
    drop(run.store.take());
    assert!(sim.is_dead(), "{ctx}: the power loss did not happen");
    assert_no_committer_panic(&ctx);
    seen.injections += 1;
    *seen.acked.entry(run.acked.len()).or_default() += 1;

    // The image holds what ops before k made durable: one of the same epoch with the same
    // requirements was checked already.
    let must_hold = run.must_hold().copied().collect();
    let evicted = run.evicted.iter().copied().collect();
    if !memo.first((map.epochs[k as usize], must_hold, evicted)) {
        seen.shared_checks += 1;
        return;
    }
    let image = sim.crash_image();
    let ctx = format!("{ctx}; acknowledged before it: {}", names(w, &run.acked));
    let (store, report) = reopen(w, &image, &ctx);
    check_consistent(&store, &image, w, &run, Restarted::Yes, &ctx);
    check_accepts_new_ingest(&store, &image, w, &run, Restarted::Yes, &ctx);
    assert_no_committer_panic(&ctx);
    seen.recovered(&report);
}

fn names(w: &World, ids: &[SegmentId]) -> String {
    let names: Vec<_> = ids
        .iter()
        .map(|id| w.seg(id).map_or("?", |s| s.label))
        .collect();
    format!("[{}]", names.join(", "))
}

// ---------------------------------------------------------------------------------------------
// INV-23: disk errors fail closed.
// ---------------------------------------------------------------------------------------------

/// Every (kind, k) with k in 0..T, less the ones whose run is provably identical to one kept:
///
/// - k in `end_op..T` (the ops that close the store): the scenario ends before any of them, so
///   the fault fires at the probe after it; one k stands for all of them.
/// - `SyncFails` fires at the first sync at or after k, so every k with the same next
///   may-be-sync op runs identically; that op stands for them.
fn disk_fault_jobs(map: &OpMap) -> Vec<(FaultKind, u64)> {
    let mut jobs = Vec::new();
    for kind in [FaultKind::Enospc, FaultKind::Eio, FaultKind::SyncFails] {
        for k in 0..map.end_op {
            if kind != FaultKind::SyncFails || map.may_be_sync(k) {
                jobs.push((kind, k));
            }
        }
        jobs.push((kind, map.end_op));
    }
    jobs
}

#[test]
fn inv_23_disk_errors_fail_closed() {
    watch_committer_panics();
    let started = Instant::now();
    let w = World::new();
    let map = clean_run(&w);
    let jobs = disk_fault_jobs(&map);
    let memo = Memo::default();
    let seen = sweep(&jobs, |(kind, k), seen| {
        disk_fault_at(&w, &map, &memo, *k, *kind, seen)
    });
    eprintln!(
        "disk errors: T = {} operations; {} of the {} (kind, k) injections run (the rest are \
         identical runs) in {:.1?}; {seen:?}",
        map.total,
        seen.injections,
        3 * map.total,
        started.elapsed()
    );
    assert_eq!(seen.injections, jobs.len() as u64);
    assert!(seen.failed_a_step > 0 && seen.absorbed > 0, "{seen:?}");
    assert!(seen.in_redb > 0 && seen.not_reached > 0, "{seen:?}");
}

fn disk_fault_at(
    w: &World,
    map: &OpMap,
    memo: &Memo<u64>,
    k: u64,
    kind: FaultKind,
    seen: &mut Coverage,
) {
    let sim = SimFs::new();
    sim.inject(Fault { at_op: k, kind });
    let fs = TracedFs::new(sim.clone());
    let mut run = run_scenario(w, &fs);
    // Power loss right after the fault: what is durable now must hold every acknowledgement.
    let image = sim.crash_image();
    // The scenario may have ended before the fault's operation: let it fire on a harmless
    // directory fsync, so the checks below run on a healthy disk.
    let reached = sim.sync_dir(Path::new("/")).is_ok();
    let trace = fs.trace();
    let fired = trace.iter().find(|r| r.fault && r.op < run.end_op());
    let ctx = format!(
        "{kind:?} injected at op {k} ({}); it fired at {}; the scenario stopped at {}",
        map.describe(k),
        match (fired, reached) {
            (Some(r), _) => format!("op {} `{r}`", r.op),
            (None, true) => "redb I/O on edge.redb".to_owned(),
            (None, false) => "no operation of the scenario".to_owned(),
        },
        run.failed_step().map_or_else(
            || "nothing".to_owned(),
            |s| format!("`{}`: {}", s.name, s.error.as_deref().unwrap_or_default())
        ),
    );
    assert_eq!(run.wrong, None, "{ctx}");
    assert_no_committer_panic(&ctx);
    assert_eq!(sim.syncs_after_failed_sync(), 0, "{ctx}: fsync retried");
    run.orphaned = trace
        .iter()
        .filter(|r| r.fault && r.what == "remove_file")
        .filter_map(|r| {
            w.all()
                .into_iter()
                .find(|s| w.layout.segment_file(&s.id) == r.path)
        })
        .map(|s| s.id)
        .collect();
    seen.injections += 1;
    *seen.acked.entry(run.acked.len()).or_default() += 1;

    // The step that met the fault returned an error, unless it may absorb that operation.
    match fired {
        Some(record) => {
            let step = run
                .step_at(record.op)
                .unwrap_or_else(|| panic!("{ctx}: fault outside every step"));
            if step.error.is_some() {
                seen.failed_a_step += 1;
            } else {
                let absorbable = step
                    .expect
                    .absorbs
                    .iter()
                    .any(|(what, path)| *what == record.what && *path == record.path);
                assert!(
                    absorbable,
                    "{ctx}: step `{}` swallowed the error",
                    step.name
                );
                if record.path == w.layout.tmp_file(&w.streamed.id) {
                    assert_eq!(run.resume_offset, Some(0), "{ctx}: resumed a bad partial");
                }
                seen.absorbed += 1;
            }
        }
        None if reached => {
            assert!(
                run.failed_step().is_some(),
                "{ctx}: a redb I/O error was swallowed"
            );
            seen.in_redb += 1;
        }
        None => seen.not_reached += 1,
    }
    // Store::open failed at op f of the Fs seam: the failed op had no effect and Store::open
    // returned at once (dropping the database if it was open), so disk and image are those of
    // any other such failure at an op of the same state epoch, whatever the kind of fault or the
    // k it was injected at. (Not for open_database: redb may have written before failing.)
    if let Some(record) = fired {
        let epoch = map.state_epochs[record.op as usize];
        let same = run.store.is_none() && record.what != "open_database";
        if same && !memo.first(epoch) {
            seen.shared_checks += 1;
            return;
        }
    }

    // The failed ingest's temp file is gone.
    if let Some(id) = run
        .failed_step()
        .and_then(|s| s.expect.temp_gone_on_failure)
    {
        let tmp = w.layout.tmp_file(&id);
        assert_eq!(
            sim.file_len(&tmp).unwrap(),
            None,
            "{ctx}: temp file of the failed ingest remains"
        );
    }

    // The live store: consistent, and still working after a transient fault.
    let live_usable = fired.is_some() || !reached;
    match run.store.take() {
        Some(store) if live_usable => {
            check_consistent(&store, &sim, w, &run, Restarted::No, &ctx);
            check_accepts_new_ingest(&store, &sim, w, &run, Restarted::No, &ctx);
        }
        Some(store) => {
            // redb latches an I/O error (fail-stop); DESIGN makes a database I/O error fatal to
            // the daemon, which its service manager restarts. Until then an ingest fails with a
            // store error or is durable; a restart on the same disk brings the store back.
            let mut after = Run::new(sim.clone());
            after.acked.clone_from(&run.acked);
            after.maybe_gone.clone_from(&run.maybe_gone);
            after.evicted.clone_from(&run.evicted);
            match import(&store, &w.fresh) {
                Ok(IngestOutcome::Stored(_)) => after.acked.push(w.fresh.id),
                Err(IngestError::Store(_)) => {}
                other => panic!("{ctx}: an ingest after a database fault gave {other:?}"),
            }
            drop(store);
            let ctx = format!("{ctx}; restarted on the same disk");
            let (store, _) = reopen(w, &sim, &ctx);
            check_consistent(&store, &sim, w, &after, Restarted::Yes, &ctx);
            if !after.acked.contains(&w.fresh.id) {
                check_accepts_new_ingest(&store, &sim, w, &run, Restarted::Yes, &ctx);
            }
        }
        None => {
            // The fault hit Store::open: it returned a typed error (a panic would have failed
            // this injection), and opening again on the same disk works.
            assert!(run.failed_step().is_some(), "{ctx}: no store and no error");
            let ctx = format!("{ctx}; opened again on the same disk");
            let (store, _) = reopen(w, &sim, &ctx);
            check_consistent(&store, &sim, w, &run, Restarted::Yes, &ctx);
            check_accepts_new_ingest(&store, &sim, w, &run, Restarted::Yes, &ctx);
        }
    }
    assert_eq!(sim.syncs_after_failed_sync(), 0, "{ctx}: fsync retried");
    assert_no_committer_panic(&ctx);

    // What a power loss right after the fault would have left.
    let ctx = format!("{ctx}; crash image taken after the scenario");
    let (store, report) = reopen(w, &image, &ctx);
    check_consistent(&store, &image, w, &run, Restarted::Yes, &ctx);
    check_accepts_new_ingest(&store, &image, w, &run, Restarted::Yes, &ctx);
    assert_no_committer_panic(&ctx);
    seen.recovered(&report);
}

// ---------------------------------------------------------------------------------------------
// INV-06: the free-space floor, and a disk that fills up mid-stream.
// ---------------------------------------------------------------------------------------------

const CAPACITY_BYTES: u64 = 32 << 20;

fn open_on(sim: &SimFs, cfg: StoreConfig) -> Store {
    Store::open(cfg, Arc::new(sim.clone()), NOW_MS)
        .expect("open store")
        .0
}

/// Nothing of a refused or failed ingest is left: no row, no file, no temp file, no bytes counted.
fn assert_nothing_stored(store: &Store, sim: &SimFs, w: &World, what: &str) {
    assert!(store.list().unwrap().is_empty(), "{what}: no row");
    assert!(
        segment_files(sim, w, what).is_empty(),
        "{what}: no segment file"
    );
    assert!(
        sim.list_dir(&w.layout.tmp()).unwrap().is_empty(),
        "{what}: no temp file"
    );
    assert_eq!(store.usage().total(), 0, "{what}: nothing counted");
}

#[test]
fn inv_06_min_free_bytes_floor_refuses_with_store_full() {
    let w = World::new();
    let big = &w.multi;
    let big_len = big.file.len() as u64;

    // How much room the file system has with an empty store (redb's file takes some).
    let sim = SimFs::with_capacity(CAPACITY_BYTES);
    let mut cfg = w.cfg.clone();
    cfg.ceiling_bytes = CAPACITY_BYTES;
    drop(open_on(&sim, cfg.clone()));
    let available = sim.available_bytes(Path::new(DATA_DIR)).unwrap();
    assert!(available > 2 * big_len, "capacity too small: {available}");

    // The floor leaves room for half of `big`: it fits the ceiling but not the floor.
    cfg.min_free_bytes = available - big_len / 2;
    let store = open_on(&sim, cfg.clone());
    let err = import(&store, big).unwrap_err();
    assert!(matches!(err, IngestError::StoreFull { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(store.holding(&big.id).unwrap(), Holding::Absent);
    assert_nothing_stored(&store, &sim, &w, "refused by the floor");
    // A segment that fits above the floor is stored.
    let small = &w.fresh;
    assert!((small.file.len() as u64) < big_len / 4);
    let stored = import(&store, small).unwrap();
    assert!(matches!(stored, IngestOutcome::Stored(_)), "{stored:?}");
    assert_eq!(
        store.usage().stored_bytes,
        segment_files(&sim, &w, "after").values().sum::<u64>()
    );
    drop(store);

    // ENOSPC mid-stream: the reservation fitted, then another writer filled the disk.
    let sim = SimFs::with_capacity(CAPACITY_BYTES);
    cfg.min_free_bytes = 0;
    let store = open_on(&sim, cfg);
    let Begin::Ingest(mut ingest) = store
        .begin_ingest(
            big.signed.clone(),
            &IngestOptions::from_peer("peer-a"),
            NOW_MS,
        )
        .unwrap()
    else {
        panic!("expected an ingest")
    };
    ingest.write(&big.body[..50_000]).unwrap();
    let filler = Path::new("/filler");
    let mut f = sim.create_new(filler).unwrap();
    let room = sim.available_bytes(Path::new(DATA_DIR)).unwrap();
    f.write_all(&vec![0u8; usize::try_from(room).unwrap() - 10_000])
        .unwrap();
    let err = ingest.write(&big.body[50_000..100_000]).unwrap_err();
    match &err {
        IngestError::Io { source, .. } => assert!(fs::is_enospc(source), "{err:?}"),
        other => panic!("expected IngestError::Io with ENOSPC, got {other:?}"),
    }
    assert!(err.is_retryable());
    drop(ingest);
    assert_nothing_stored(&store, &sim, &w, "ENOSPC mid-stream");
    // The disk frees up: the same segment goes through.
    drop(f);
    sim.remove_file(filler).unwrap();
    let stored = import(&store, big).unwrap();
    assert!(matches!(stored, IngestOutcome::Stored(_)), "{stored:?}");
    assert_eq!(store.usage().stored_bytes, big_len);
    assert_eq!(
        segment_files(&sim, &w, "retried"),
        BTreeMap::from([(big.id, big_len)])
    );
}
