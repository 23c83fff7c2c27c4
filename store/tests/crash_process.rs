//! Process-level crash tests of the store (INV-03, INV-04, INV-05).
//!
//! A child process — this same test binary, re-executed with [`CHILD_ENV`] naming a data
//! directory — runs a deterministic ingest workload against a real store on disk and dies:
//!
//! - at a named crash point (`EDGED_CRASH_AT=name:k`, see `store::crash`), for every point in
//!   `crash::POINTS` and k = 1..=[`K_MAX`];
//! - or by `SIGKILL` after a random delay drawn from a seeded RNG ([`SEED_ENV`] replays the
//!   delays; where in the workload a delay lands still depends on the machine's speed);
//! - or inside redb's creation of `edge.redb` on its very first start ([`DieCreatingDb`]).
//!
//! The child reports on stdout: `READY` once the store is open, `ACK <id>` right after each
//! ingest that returned success (flushed before anything else happens), `HAVE <id> <holding>`
//! when the store already had the segment, `DONE` at the end. So the parent knows exactly which
//! ingests were acknowledged when the child died.
//!
//! After each death the parent reopens the store in-process and checks the contract
//! ([`check_recovered`]): every acknowledged segment is there and verifies byte for byte,
//! nothing partial is visible, files and index rows agree, usage equals the bytes on disk, and
//! the recovery report says what recovery did. Then the child runs the workload again to
//! completion on the recovered store ([`check_completion`]): what was acknowledged answers "have",
//! and the final state is the state of a run that never crashed.
//!
//! Why `harness = false` (see the `[[test]]` entry in store/Cargo.toml): the child entry must not
//! be a libtest test, or a plain `cargo test` would run it in-process, where it has no directory
//! to work on and could only pass vacuously or fail. With our own `main` the binary dispatches
//! explicitly: child mode when [`CHILD_ENV`] is set, the tests otherwise. It also keeps the
//! child's stdout (the acknowledgement channel) free of libtest's output and capture. `main`
//! prints each test's result the way libtest does, ends with `N passed, M failed`, and exits
//! non-zero on any failure.

mod common;
#[path = "../../test-support/libtest_args.rs"]
mod libtest_args;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use common::*;
use libtest_args::HarnessArgs;
use redb::{ReadableDatabase, ReadableTable};
use store::crash;
use store::fs::{Fs, RealFs};
use store::ingest::Stored;
use store::keys::PublisherSecret;
use store::manifest::SignedManifest;
use store::{
    Begin, Holding, Ingest, IngestOptions, IngestOutcome, RecoveryReport, Store, StoreConfig,
};

/// Set in the child's environment: the data directory it runs the workload on.
const CHILD_ENV: &str = "STORE_CRASH_CHILD";
/// Seed of the kill -9 delays; printed by every run so a failure replays with the same delays.
const SEED_ENV: &str = "STORE_CRASH_SEED";
/// Set in the child's environment: die inside the creation of the database (see [`DieCreatingDb`]).
const DIE_CREATING_DB_ENV: &str = "STORE_CRASH_IN_DB_CREATE";

/// Each named point is crashed at its 1st..=K_MAX hit: 11 points × 5 = 55 distinct crashes.
/// The workload reaches every point at least 6 times, so every one of them is a real crash.
const K_MAX: u64 = 5;
/// At least this many distinct (point, k) runs must actually die at their point.
const CRASHES_MIN: usize = 50;
/// kill -9 runs, each after a random delay in 0..=KILL_DELAY_MAX_MS counted from the child's
/// `READY` (store opened). Counting from the spawn would spend every kill in the first start,
/// which creates 256 fan-out directories and takes longer than the whole ingest workload on slow
/// disks. The workload takes 100-250 ms (disk load varies), so the kills spread over all of it,
/// and some runs finish first (counted, and checked the same way).
const KILL_RUNS: usize = 16;
const KILL_DELAY_MAX_MS: u64 = 200;
/// A child still running after this long is killed and the test fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);
/// Cases run this many at a time. A case waits on the disk far more than it computes (fsyncs,
/// 256 fan-out directories created and removed per store), so on two cores four in flight keep
/// the CPU busy without oversubscribing it.
const WORKERS: usize = 4;

const SIGABRT: i32 = 6;
const SIGKILL: i32 = 9;

// ---------------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------------

/// How a segment reaches the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `ingest_reader` with import options (an operator's USB import).
    Import,
    /// `ingest_reader` with a peer's options. The fillers come this way because an import
    /// revives tombstoned ids: re-running the workload would then store evicted fillers again
    /// instead of answering "have", and the re-run would not be idempotent.
    Peer,
    /// `begin_ingest` + `write` + `checkpoint`, dropped half-way (a partial), then resumed.
    Streamed,
}

/// Segments that are never evicted (high priority), in workload order: 0 bytes, small, several
/// 64 KiB chunks, many chunks, and the streamed one.
const KEPT: &[(&str, usize, Via)] = &[
    ("empty", 0, Via::Import),
    ("small", 1_000, Via::Import),
    ("mid", 200_000, Via::Import),
    ("big", 700_000, Via::Import),
    ("stream", 400_000, Via::Streamed),
];
const KEPT_PRIORITY: u8 = 200;
/// Low-priority segments that fill the store: two fit next to the kept ones, so each later one
/// evicts the least recently stored filler (6 evictions).
const FILLERS: usize = 8;
const FILLER_BYTES: usize = 250_000;
const FILLER_PRIORITY: u8 = 10;
const FILLERS_KEPT: usize = 2;

/// The streamed segment: the first session checkpoints at these payload offsets, writes on to
/// `STREAM_CUT` and is dropped (the sender went away); the second resumes from the last
/// checkpoint, checkpoints at its own offsets and finishes. Every write is at most 64,000 bytes.
const SESSION_1_CHECKPOINTS: &[u64] = &[64_000, 128_000, 192_000];
const STREAM_CUT: u64 = 232_000;
const SESSION_2_CHECKPOINTS: &[u64] = &[256_000, 320_000, 384_000];

/// A relay-job stand-in: the workload writes one row per stored segment inside the ingest's own
/// transaction, so the checks can see that index and "ledger" always agree.
const JOBS: redb::TableDefinition<&[u8; 32], &str> =
    redb::TableDefinition::new("crash-test-jobs-v1");

#[derive(Debug)]
struct Item {
    name: String,
    via: Via,
    /// Never evicted by this workload.
    kept: bool,
    signed: SignedManifest,
    body: Vec<u8>,
    /// The whole `.seg` file.
    file: Vec<u8>,
}

impl Item {
    fn id(&self) -> store::SegmentId {
        self.signed.id()
    }

    fn header_len(&self) -> u64 {
        (self.file.len() - self.body.len()) as u64
    }
}

struct Workload {
    publisher: PublisherSecret,
    items: Vec<Item>,
    ceiling: u64,
}

impl Workload {
    /// The same workload in parent and child: keys, payloads and signatures are deterministic.
    fn build() -> Workload {
        let publisher = publisher(7);
        let mut items = Vec::new();
        let mut add = |name: String, len: usize, via: Via, priority: u8| {
            let mut spec = SegSpec::named(&name);
            spec.priority = priority;
            let body = payload(1_000 + items.len() as u64, len);
            let (signed, file) = seg(&publisher, &spec, &body);
            items.push(Item {
                name,
                via,
                kept: priority == KEPT_PRIORITY,
                signed,
                body,
                file,
            });
        };
        for &(name, len, via) in KEPT {
            add(name.to_owned(), len, via, KEPT_PRIORITY);
        }
        for i in 0..FILLERS {
            add(
                format!("filler-{i}"),
                FILLER_BYTES,
                Via::Peer,
                FILLER_PRIORITY,
            );
        }
        let kept: u64 = items
            .iter()
            .filter(|i| i.kept)
            .map(|i| i.file.len() as u64)
            .sum();
        let filler = items.last().map_or(0, |i| i.file.len() as u64);
        // Room for the kept segments and two fillers, not three.
        let ceiling = kept + FILLERS_KEPT as u64 * filler + filler / 2;
        Workload {
            publisher,
            items,
            ceiling,
        }
    }

    fn config(&self, dir: &Path) -> StoreConfig {
        config(dir, self.ceiling, trusting(&[&self.publisher]))
    }

    fn item(&self, id: &store::SegmentId) -> Option<&Item> {
        self.items.iter().find(|i| i.id() == *id)
    }

    fn streamed(&self) -> &Item {
        self.items
            .iter()
            .find(|i| i.via == Via::Streamed)
            .expect("the workload has a streamed segment")
    }

    /// What a run without crashes ends with: the kept segments and the last fillers.
    fn final_set(&self) -> BTreeSet<store::SegmentId> {
        let fillers: Vec<&Item> = self.items.iter().filter(|i| !i.kept).collect();
        let last = &fillers[fillers.len() - FILLERS_KEPT..];
        self.items
            .iter()
            .filter(|i| i.kept)
            .chain(last.iter().copied())
            .map(Item::id)
            .collect()
    }
}

/// Wall-clock "now" of workload step `i`: later steps are more recently used, so eviction order
/// is the same in every run. The parent's checks read at `NOW_MS`, earlier than every step, so
/// the use they record never changes that order.
fn step_now(i: usize) -> u64 {
    NOW_MS + 1_000 * (i as u64 + 1)
}

fn schedule_job(txn: &redb::WriteTransaction, stored: &Stored<()>) -> Result<(), redb::Error> {
    txn.open_table(JOBS)?.insert(&stored.id.0, "peer-c")?;
    Ok(())
}

fn open_store(w: &Workload, dir: &Path) -> Result<(Store, store::RecoveryReport), String> {
    open_store_on(w, dir, Arc::new(RealFs))
}

fn open_store_on(
    w: &Workload,
    dir: &Path,
    fs: Arc<dyn Fs>,
) -> Result<(Store, store::RecoveryReport), String> {
    Store::open(w.config(dir), fs, NOW_MS).map_err(|e| format!("store does not open: {e}"))
}

/// The real file system, except that creating the database dies the way a kill inside redb's
/// own initialisation does: redb's first step creates the file, so the file exists, empty. No
/// named crash point can sit inside redb, and a random kill hits that window too rarely to test.
#[derive(Debug)]
struct DieCreatingDb;

impl Fs for DieCreatingDb {
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        RealFs.create_dir_all(path)
    }
    fn create_new(&self, path: &Path) -> std::io::Result<Box<dyn store::fs::FsFile>> {
        RealFs.create_new(path)
    }
    fn open_rw(&self, path: &Path) -> std::io::Result<Box<dyn store::fs::FsFile>> {
        RealFs.open_rw(path)
    }
    fn open_read(&self, path: &Path) -> std::io::Result<Box<dyn store::fs::FsRead>> {
        RealFs.open_read(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        RealFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        RealFs.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        RealFs.sync_dir(dir)
    }
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<store::fs::DirEntry>> {
        RealFs.list_dir(dir)
    }
    fn file_len(&self, path: &Path) -> std::io::Result<Option<u64>> {
        RealFs.file_len(path)
    }
    fn available_bytes(&self, dir: &Path) -> std::io::Result<u64> {
        RealFs.available_bytes(dir)
    }
    fn open_database(
        &self,
        path: &Path,
        create: bool,
    ) -> Result<redb::Database, redb::DatabaseError> {
        if create {
            let created = std::fs::File::create(path);
            eprintln!(
                "dying inside the creation of {} ({created:?})",
                path.display()
            );
            std::process::abort();
        }
        RealFs.open_database(path, create)
    }
}

// ---------------------------------------------------------------------------------------------
// The child
// ---------------------------------------------------------------------------------------------

/// Runs the workload on `dir`. Prints `READY` once the store is open, `ACK <id>` after each
/// ingest that returned success (before doing anything else), `HAVE <id> <holding>` for each
/// segment the store already had, and `DONE` at the end. Any unexpected error panics (exit 101).
fn child_main(dir: &Path) {
    let w = Workload::build();
    let fs: Arc<dyn Fs> = match std::env::var_os(DIE_CREATING_DB_ENV) {
        Some(_) => Arc::new(DieCreatingDb),
        None => Arc::new(RealFs),
    };
    let (store, _) = open_store_on(&w, dir, fs).unwrap_or_else(|e| panic!("child: {e}"));
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY")
        .and_then(|()| out.flush())
        .expect("stdout");
    for (i, item) in w.items.iter().enumerate() {
        let now = step_now(i);
        let opts = match item.via {
            Via::Import => IngestOptions::import(),
            Via::Peer => IngestOptions::from_peer("peer-b"),
            Via::Streamed => {
                child_stream(&store, item, now, &mut out);
                continue;
            }
        };
        match store.ingest_reader(&item.file[..], &opts, now, schedule_job) {
            Ok(IngestOutcome::Stored(s)) => answer(&mut out, "ACK", &s.id, None),
            Ok(IngestOutcome::AlreadyHave { id, holding }) => {
                answer(&mut out, "HAVE", &id, Some(holding))
            }
            Err(e) => panic!("child: ingest of {} failed: {e}", item.name),
        }
    }
    writeln!(out, "DONE")
        .and_then(|()| out.flush())
        .expect("stdout");
    store.close();
}

fn answer(out: &mut impl Write, what: &str, id: &store::SegmentId, holding: Option<Holding>) {
    let line = match holding {
        None => format!("{what} {id}"),
        Some(Holding::Stored) => format!("{what} {id} stored"),
        Some(Holding::Tombstoned) => format!("{what} {id} tombstoned"),
        Some(other) => format!("{what} {id} {other:?}"),
    };
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .expect("stdout");
}

/// A peer streams the segment, goes away after some checkpoints, then resumes and finishes.
fn child_stream(store: &Store, item: &Item, now: u64, out: &mut impl Write) {
    let opts = IngestOptions::from_peer("peer-a");
    let begin = |what: &str| {
        store
            .begin_ingest(item.signed.clone(), &opts, now)
            .unwrap_or_else(|e| panic!("child: {what} of {}: {e}", item.name))
    };
    let mut first = match begin("begin") {
        Begin::Have(holding) => return answer(out, "HAVE", &item.id(), Some(holding)),
        Begin::Ingest(ingest) => ingest,
    };
    send(
        &mut first,
        &item.body,
        SESSION_1_CHECKPOINTS,
        STREAM_CUT,
        now,
    );
    drop(first);
    let mut second = match begin("resume") {
        Begin::Have(holding) => panic!("child: expected a partial to resume, got {holding:?}"),
        Begin::Ingest(ingest) => ingest,
    };
    let last_checkpoint = SESSION_1_CHECKPOINTS[SESSION_1_CHECKPOINTS.len() - 1];
    assert!(
        second.resume_offset() >= last_checkpoint,
        "child: resumed at {}, checkpointed {last_checkpoint}",
        second.resume_offset()
    );
    let end = item.body.len() as u64;
    send(&mut second, &item.body, SESSION_2_CHECKPOINTS, end, now);
    match second.finish(now, schedule_job) {
        Ok(stored) => answer(out, "ACK", &stored.id, None),
        Err(e) => panic!("child: finish of {}: {e}", item.name),
    }
}

/// Writes `body` from where the ingest stands up to `end`, checkpointing at each offset of
/// `checkpoints` on the way.
fn send(ingest: &mut Ingest, body: &[u8], checkpoints: &[u64], end: u64, now: u64) {
    let mut at = ingest.written();
    for &cp in checkpoints.iter().chain(std::iter::once(&end)) {
        if at < cp && cp <= end {
            ingest
                .write(&body[at as usize..cp as usize])
                .expect("child: write");
            at = cp;
            if cp != end {
                ingest.checkpoint(now).expect("child: checkpoint");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running children
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Death {
    /// Run to completion.
    None,
    /// `EDGED_CRASH_AT=point:k`.
    CrashAt(&'static str, u64),
    /// SIGKILL this long after the child said `READY`.
    KillAfter(Duration),
    /// Abort inside the creation of the database (first start).
    InDbCreate,
}

#[derive(Debug)]
struct ChildRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// One line of the child's acknowledgement channel.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    id: store::SegmentId,
    /// `None` for `ACK` (stored now), the holding word for `HAVE`.
    have: Option<String>,
}

impl ChildRun {
    fn finished(&self) -> bool {
        self.status.success() && self.stdout.lines().last() == Some("DONE")
    }

    fn answers(&self) -> Result<Vec<Answer>, String> {
        let mut out = Vec::new();
        for line in self.stdout.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let parsed = match words.as_slice() {
                ["READY" | "DONE"] => continue,
                ["ACK", id] => id.parse().map(|id| Answer { id, have: None }),
                ["HAVE", id, holding] => id.parse().map(|id| Answer {
                    id,
                    have: Some((*holding).to_owned()),
                }),
                _ => return Err(format!("unexpected line from the child: {line:?}")),
            };
            out.push(parsed.map_err(|e| format!("bad id in {line:?}: {e}"))?);
        }
        Ok(out)
    }

    fn acked(&self) -> Result<BTreeSet<store::SegmentId>, String> {
        Ok(self
            .answers()?
            .into_iter()
            .filter(|a| a.have.is_none())
            .map(|a| a.id)
            .collect())
    }

    fn describe(&self) -> String {
        let tail: Vec<&str> = self.stderr.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "status {:?}, stdout {} lines, stderr tail:\n    {}",
            self.status,
            self.stdout.lines().count(),
            tail.join("\n    ")
        )
    }
}

/// Reads a child's pipe to its end on a thread; sends the moment a `READY` line arrives.
fn drain<R: Read + Send + 'static>(
    pipe: Option<R>,
    ready: Option<mpsc::Sender<Instant>>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let Some(pipe) = pipe else { return text };
        let mut lines = BufReader::new(pipe);
        let mut line = Vec::new();
        while matches!(lines.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let s = String::from_utf8_lossy(&line);
            if let (Some(tx), "READY\n") = (&ready, s.as_ref()) {
                let _ = tx.send(Instant::now());
            }
            text.push_str(&s);
            line.clear();
        }
        text
    })
}

/// Runs the workload in a child process on `dir`, and lets it die as `death` says. Fails if the
/// child runs longer than `CHILD_TIMEOUT` (it is killed then).
fn run_child(dir: &Path, death: Death) -> Result<ChildRun, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.env(CHILD_ENV, dir)
        .env_remove(crash::CRASH_AT_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match death {
        Death::CrashAt(point, k) => {
            cmd.env(crash::CRASH_AT_ENV, format!("{point}:{k}"));
        }
        Death::InDbCreate => {
            cmd.env(DIE_CREATING_DB_ENV, "1");
        }
        Death::None | Death::KillAfter(_) => {}
    }
    let kill_after = match death {
        Death::KillAfter(after) => Some(after),
        _ => None,
    };
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("spawn child: {e}"))?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let stdout = drain(child.stdout.take(), Some(ready_tx));
    let stderr = drain(child.stderr.take(), None);
    let mut ready_at: Option<Instant> = None;
    let mut killed = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("wait for child: {e}")),
        }
        let elapsed = started.elapsed();
        if elapsed >= CHILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "child ran longer than {CHILD_TIMEOUT:?} ({death:?}): killed"
            ));
        }
        if ready_at.is_none() {
            ready_at = ready_rx.try_recv().ok();
        }
        if let (Some(after), Some(ready)) = (kill_after, ready_at) {
            if !killed && ready.elapsed() >= after {
                // Fails only if the child is already gone, which try_wait reports next.
                let _ = child.kill();
                killed = true;
                continue;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    Ok(ChildRun {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Runs `f` over `cases` on `WORKERS` threads, returning results in case order.
fn run_parallel<C: Sync, R: Send>(cases: &[C], f: impl Fn(&C) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<BTreeMap<usize, R>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    let r = f(case);
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(i, r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_values()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The contract after a death
// ---------------------------------------------------------------------------------------------

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// How the store was left before it was reopened.
#[derive(Debug, Clone, Copy)]
enum After {
    /// Aborted at this named point.
    Crash(&'static str),
    /// SIGKILL at a random moment.
    Kill,
    /// Died inside the creation of the database, on the first start.
    InDbCreate,
    /// The workload ran to completion and closed the store.
    Completed,
}

/// What a recovered store holds.
#[derive(Debug)]
struct Recovered {
    listed: BTreeSet<store::SegmentId>,
    tombstoned: BTreeSet<store::SegmentId>,
    /// Payload offset of the streamed segment's partial, if one is kept.
    partial: Option<u64>,
}

/// Reopens the store in `dir` (recovery runs) and checks INV-03/04/05:
///
/// - every acknowledged id is stored and reads back byte for byte (or, for a filler, was
///   evicted later and is tombstoned); nothing is listed that was not acknowledged, except the
///   one segment whose commit returned just before the death;
/// - every listed segment verifies; every file under `segments/` is a listed segment of the
///   recorded size and every listed segment has its file; index rows and the jobs written in the
///   same transactions agree; nothing is quarantined;
/// - the only temp file left is the streamed segment's checkpointed partial (`Holding::Partial`),
///   truncated to its checkpoint; a partial is never listed;
/// - usage equals the bytes on disk (stored, partial), nothing is reserved, the ceiling holds;
/// - the recovery report names exactly what this kind of death leaves behind.
fn check_recovered(
    w: &Workload,
    dir: &Path,
    acked: &BTreeSet<store::SegmentId>,
    after: After,
) -> Result<Recovered, String> {
    let (store, report) = open_store(w, dir)?;
    let result = check_open_store(w, dir, &store, &report, acked, after);
    store.close();
    result.map_err(|e| format!("{e}\n  recovery report: {report:?}"))
}

fn check_open_store(
    w: &Workload,
    dir: &Path,
    store: &Store,
    report: &store::RecoveryReport,
    acked: &BTreeSet<store::SegmentId>,
    after: After,
) -> Result<Recovered, String> {
    let layout = store.layout();
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: store::StoreError| format!("{what}: {err}")
    };

    // What the index says about every segment of the workload.
    let listed_rows = store.list().map_err(e("list"))?;
    let listed: BTreeSet<_> = listed_rows.iter().map(|s| s.id).collect();
    ensure!(listed_rows.len() == listed.len(), "an id is listed twice");
    let mut holdings = BTreeMap::new();
    for item in &w.items {
        let holding = store.holding(&item.id()).map_err(e("holding"))?;
        holdings.insert(item.id(), holding);
    }
    for info in &listed_rows {
        let item = w
            .item(&info.id)
            .ok_or_else(|| format!("listed id {} is not in the workload", info.id))?;
        ensure!(
            holdings[&info.id] == Holding::Stored,
            "{} is listed but holding says {:?}",
            item.name,
            holdings[&info.id]
        );
    }
    let tombstoned: BTreeSet<_> = holdings
        .iter()
        .filter(|(_, h)| **h == Holding::Tombstoned)
        .map(|(id, _)| *id)
        .collect();

    // INV-03: everything acknowledged survived; INV-04: nothing else is visible.
    for id in acked {
        let item = w
            .item(id)
            .ok_or_else(|| format!("acknowledged id {id} is not in the workload"))?;
        let evicted_filler = !item.kept && tombstoned.contains(id);
        ensure!(
            listed.contains(id) || evicted_filler,
            "{} was acknowledged but is {:?} after recovery",
            item.name,
            holdings[id]
        );
    }
    for id in &tombstoned {
        let item = &w.item(id).expect("workload id");
        ensure!(!item.kept, "{} (never evicted) is tombstoned", item.name);
    }
    let unacked: Vec<&str> = listed
        .difference(acked)
        .map(|id| w.item(id).map_or("?", |i| i.name.as_str()))
        .collect();
    let unacked_ok = match after {
        // Committed, success not yet reported: stored, and nobody was told.
        After::Crash(crash::INGEST_AFTER_COMMIT) => unacked.len() == 1,
        After::Crash(_) | After::InDbCreate | After::Completed => unacked.is_empty(),
        // The kill may land between a commit and its acknowledgement.
        After::Kill => unacked.len() <= 1,
    };
    ensure!(
        unacked_ok,
        "listed but never acknowledged: {unacked:?} (after {after:?})"
    );

    // Every listed segment reads back exactly as published.
    for info in &listed_rows {
        let item = w.item(&info.id).expect("checked above");
        let reader = store
            .open_for_read(&info.id, NOW_MS)
            .map_err(e(&format!("open {} for reading", item.name)))?;
        let mut bytes = Vec::with_capacity(item.file.len());
        reader
            .copy_to(&mut bytes, NOW_MS)
            .map_err(e(&format!("read {}", item.name)))?;
        ensure!(
            bytes == item.file,
            "{} reads back {} bytes that differ from the published file ({} bytes)",
            item.name,
            bytes.len(),
            item.file.len()
        );
        ensure!(
            info.row.file_len == item.file.len() as u64,
            "{}: row says {} bytes, the file has {}",
            item.name,
            info.row.file_len,
            item.file.len()
        );
    }
    let quarantined = store.quarantined().map_err(e("quarantined"))?;
    ensure!(
        quarantined.is_empty(),
        "quarantined after a crash: {quarantined:?}"
    );

    // Nothing stray at the top of the data directory (e.g. a half-created database).
    let mut top: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("read {}: {e}", dir.display()))?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("read {}: {e}", dir.display()))?;
    top.sort();
    ensure!(
        top == ["edge.redb", "quarantine", "segments", "tmp"],
        "unexpected entries in the data directory: {top:?}"
    );

    // Every file under segments/ has its row, and every row its file.
    let on_disk = files_under(&layout.segments());
    let expected: Vec<(std::path::PathBuf, u64)> = {
        let mut v: Vec<_> = listed_rows
            .iter()
            .map(|s| (layout.segment_file(&s.id), s.row.file_len))
            .collect();
        v.sort();
        v
    };
    ensure!(
        on_disk == expected,
        "files under segments/ do not match the index:\n  on disk {on_disk:?}\n  index {expected:?}"
    );

    // The jobs written in the ingest transactions agree with the index.
    let jobs = job_ids(store)?;
    for id in &listed {
        ensure!(jobs.contains(id), "{id} is stored without its job row");
    }
    for id in &jobs {
        ensure!(
            listed.contains(id) || tombstoned.contains(id),
            "a job row for {id}, which was never stored"
        );
    }

    // Temp files: only the streamed segment's checkpointed partial, cut to its checkpoint.
    let streamed = w.streamed();
    let tmp = files_under(&layout.tmp());
    let partial = match holdings[&streamed.id()] {
        Holding::Partial { offset } => Some(offset),
        _ => None,
    };
    match partial {
        Some(offset) => {
            let want = vec![(
                layout.tmp_file(&streamed.id()),
                streamed.header_len() + offset,
            )];
            ensure!(
                tmp == want,
                "partial at {offset}: temp files {tmp:?}, expected {want:?}"
            );
            let checkpoints: Vec<u64> = SESSION_1_CHECKPOINTS
                .iter()
                .chain(SESSION_2_CHECKPOINTS)
                .copied()
                .collect();
            ensure!(
                checkpoints.contains(&offset),
                "partial offset {offset} is not one of the checkpoints {checkpoints:?}"
            );
        }
        None => ensure!(
            tmp.is_empty(),
            "temp files without a partial record: {tmp:?}"
        ),
    }

    // Accounting equals what is on disk.
    let usage = store.usage();
    let stored_on_disk = segment_bytes_on_disk(dir);
    let partial_on_disk: u64 = tmp.iter().map(|(_, len)| len).sum();
    ensure!(
        usage.stored_bytes == stored_on_disk,
        "usage says {} stored bytes, segments/ holds {stored_on_disk}",
        usage.stored_bytes
    );
    ensure!(
        usage.partial_bytes == partial_on_disk,
        "usage says {} partial bytes, tmp/ holds {partial_on_disk}",
        usage.partial_bytes
    );
    ensure!(
        usage.reserved_bytes == 0,
        "{} bytes reserved after a restart",
        usage.reserved_bytes
    );
    ensure!(
        usage.total() <= w.ceiling,
        "usage {} over the ceiling {}",
        usage.total(),
        w.ceiling
    );

    check_report(w, store, report, &listed, &tombstoned, partial, after)?;
    Ok(Recovered {
        listed,
        tombstoned,
        partial,
    })
}

/// The recovery report is consistent with the store, and names what this death leaves behind.
fn check_report(
    w: &Workload,
    store: &Store,
    report: &store::RecoveryReport,
    listed: &BTreeSet<store::SegmentId>,
    tombstoned: &BTreeSet<store::SegmentId>,
    partial: Option<u64>,
    after: After,
) -> Result<(), String> {
    let layout = store.layout();
    // A process death loses nothing the kernel accepted: no row can lose its file.
    ensure!(
        report.rows_dropped.is_empty(),
        "rows dropped after a process crash: {:?}",
        report.rows_dropped
    );
    for path in &report.temp_removed {
        ensure!(
            path.parent() == Some(layout.tmp().as_path()) && !path.exists(),
            "temp_removed lists {path:?}, which is not a removed temp file"
        );
    }
    let mut orphans = Vec::new();
    for path in &report.orphans_removed {
        let item = w
            .items
            .iter()
            .find(|i| layout.segment_file(&i.id()) == *path);
        let Some(item) = item else {
            return Err(format!("orphan {path:?} is no segment of the workload"));
        };
        ensure!(
            !path.exists() && !listed.contains(&item.id()),
            "orphan {} was reported removed but is still there or listed",
            item.name
        );
        orphans.push(item);
    }
    for (id, reason) in &report.partials_dropped {
        ensure!(
            *id == w.streamed().id() && partial.is_none(),
            "partial {id} dropped ({reason}) but still held, or not the streamed segment"
        );
    }
    ensure!(
        report.partials_kept == usize::from(partial.is_some()),
        "partials_kept {} but partial {partial:?}",
        report.partials_kept
    );

    let (temps, kept) = (report.temp_removed.len(), report.partials_kept);
    match after {
        // Before the rename only a temp file exists: removed, or kept as a checkpointed partial.
        After::Crash(
            crash::INGEST_STREAM
            | crash::INGEST_AFTER_WRITE
            | crash::INGEST_AFTER_FSYNC
            | crash::CHECKPOINT_AFTER_SYNC,
        ) => ensure!(
            temps + kept == 1 && orphans.is_empty() && report.partials_dropped.is_empty(),
            "expected exactly one temp file removed or kept, nothing else"
        ),
        After::Crash(crash::CHECKPOINT_AFTER_COMMIT) => ensure!(
            kept == 1 && temps == 0 && orphans.is_empty() && report.partials_dropped.is_empty(),
            "expected the checkpointed partial kept, nothing else"
        ),
        // Renamed, not committed: the file has no row and goes; a partial record (the streamed
        // segment) now points at no temp file and goes too.
        After::Crash(
            crash::INGEST_AFTER_RENAME | crash::INGEST_AFTER_DIR_FSYNC | crash::INGEST_IN_COMMIT,
        ) => {
            ensure!(
                orphans.len() == 1 && temps == 0 && kept == 0,
                "expected exactly one orphan removed, nothing else"
            );
            let was_streamed = orphans[0].via == Via::Streamed;
            ensure!(
                report.partials_dropped.len() == usize::from(was_streamed),
                "partials dropped {:?} for orphan {}",
                report.partials_dropped,
                orphans[0].name
            );
        }
        // Rows gone and tombstoned, files still there: each evicted file is an orphan. Evictions
        // happen while the payload that needs the room streams in: that ingest's temp file (no
        // partial record) is removed too.
        After::Crash(crash::EVICT_AFTER_COMMIT) => {
            ensure!(
                !orphans.is_empty() && temps == 1 && kept == 0,
                "expected the evicted files removed as orphans, and the evicting ingest's temp file"
            );
            for item in &orphans {
                ensure!(
                    tombstoned.contains(&item.id()),
                    "evicted {} is not tombstoned",
                    item.name
                );
            }
        }
        After::Crash(crash::EVICT_AFTER_REMOVE) => {
            let clean_but_temp = RecoveryReport {
                temp_removed: Vec::new(),
                ..report.clone()
            };
            ensure!(
                temps == 1 && kept == 0 && clean_but_temp.is_clean(),
                "expected only the evicting ingest's temp file removed"
            )
        }
        After::Crash(crash::INGEST_AFTER_COMMIT) | After::InDbCreate | After::Completed => {
            ensure!(report.is_clean() && kept == 0, "expected a clean recovery")
        }
        After::Crash(other) => return Err(format!("no expectation for crash point {other}")),
        After::Kill => {}
    }
    Ok(())
}

fn job_ids(store: &Store) -> Result<BTreeSet<store::SegmentId>, String> {
    let read = store
        .database()
        .begin_read()
        .map_err(|e| format!("begin_read: {e}"))?;
    let table = match read.open_table(JOBS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeSet::new()),
        Err(e) => return Err(format!("open jobs: {e}")),
    };
    let mut out = BTreeSet::new();
    for entry in table.iter().map_err(|e| format!("iter jobs: {e}"))? {
        let (k, _) = entry.map_err(|e| format!("read jobs: {e}"))?;
        out.insert(store::SegmentId(*k.value()));
    }
    Ok(out)
}

/// Runs the workload again to completion on the recovered store and checks that it is
/// idempotent (what was acknowledged answers "have") and ends where a run without crashes ends.
fn check_completion(
    w: &Workload,
    dir: &Path,
    first: &ChildRun,
    baseline: &BTreeSet<store::SegmentId>,
) -> Result<(), String> {
    let rerun = run_child(dir, Death::None)?;
    ensure!(
        rerun.finished(),
        "the re-run on the recovered store did not complete: {}",
        rerun.describe()
    );
    let before = first.acked()?;
    let answers = rerun.answers()?;
    let order: Vec<_> = answers.iter().map(|a| a.id).collect();
    let want: Vec<_> = w.items.iter().map(Item::id).collect();
    ensure!(
        order == want,
        "the re-run answered {} times, not once per segment in order",
        answers.len()
    );
    for (item, a) in w.items.iter().zip(&answers) {
        if before.contains(&item.id()) {
            ensure!(
                matches!(a.have.as_deref(), Some("stored" | "tombstoned")),
                "{} was acknowledged before the crash, but the re-run answered {:?}",
                item.name,
                a.have.as_deref().unwrap_or("ACK (stored again)")
            );
        }
    }
    let mut acked = before;
    acked.extend(
        answers
            .iter()
            .filter(|a| matches!(a.have.as_deref(), None | Some("stored")))
            .map(|a| a.id),
    );
    let rec = check_recovered(w, dir, &acked, After::Completed)
        .map_err(|e| format!("after the re-run: {e}"))?;
    let name = |ids: &BTreeSet<store::SegmentId>| -> Vec<String> {
        ids.iter()
            .map(|id| w.item(id).map_or("?".to_owned(), |i| i.name.clone()))
            .collect()
    };
    ensure!(
        rec.listed == *baseline,
        "after the re-run the store holds {:?}, a run without crashes holds {:?}",
        name(&rec.listed),
        name(baseline)
    );
    ensure!(rec.partial.is_none(), "a partial is left after completion");
    let all: BTreeSet<_> = w.items.iter().map(Item::id).collect();
    let gone: BTreeSet<_> = all.difference(&rec.listed).copied().collect();
    ensure!(
        gone == rec.tombstoned,
        "segments neither stored nor tombstoned: {:?}",
        name(&gone.difference(&rec.tombstoned).copied().collect())
    );
    Ok(())
}

/// The workload and the final state of a run without crashes, computed once for all tests.
fn workload_and_baseline()
-> Result<(&'static Workload, &'static BTreeSet<store::SegmentId>), String> {
    static SHARED: OnceLock<Result<(Workload, BTreeSet<store::SegmentId>), String>> =
        OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        let w = Workload::build();
        let baseline = baseline(&w)?;
        Ok((w, baseline))
    });
    match shared {
        Ok((w, baseline)) => Ok((w, baseline)),
        Err(e) => Err(e.clone()),
    }
}

/// A run without crashes: what every crashed-and-resumed run must end with.
fn baseline(w: &Workload) -> Result<BTreeSet<store::SegmentId>, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let run = run_child(dir.path(), Death::None)?;
    ensure!(
        run.finished(),
        "the workload fails without any crash: {}",
        run.describe()
    );
    let acked = run.acked()?;
    ensure!(
        acked.len() == w.items.len(),
        "a fresh run acknowledged {} of {} segments",
        acked.len(),
        w.items.len()
    );
    let rec = check_recovered(w, dir.path(), &acked, After::Completed)
        .map_err(|e| format!("baseline: {e}"))?;
    ensure!(
        rec.listed == w.final_set() && rec.tombstoned.len() == FILLERS - FILLERS_KEPT,
        "the workload did not evict as designed: {} listed, {} tombstoned",
        rec.listed.len(),
        rec.tombstoned.len()
    );
    Ok(rec.listed)
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashOutcome {
    /// Aborted at the point; recovery and the re-run checked.
    Crashed,
    /// The workload reaches the point fewer than k times: the child completed.
    NotReached,
}

/// One (point, k): crash, check the recovered store, complete the workload, check again.
fn crash_case(
    w: &Workload,
    baseline: &BTreeSet<store::SegmentId>,
    point: &'static str,
    k: u64,
) -> Result<CrashOutcome, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let run = run_child(dir.path(), Death::CrashAt(point, k))?;
    let outcome = if run.status.signal() == Some(SIGABRT) {
        let said = format!("crash point {point} hit {k} times");
        ensure!(
            run.stderr.contains(&said),
            "aborted, but not at the armed point: {}",
            run.describe()
        );
        CrashOutcome::Crashed
    } else if run.finished() {
        CrashOutcome::NotReached
    } else {
        return Err(format!(
            "the child neither aborted at the point nor completed: {}",
            run.describe()
        ));
    };
    let after = match outcome {
        CrashOutcome::Crashed => After::Crash(point),
        CrashOutcome::NotReached => After::Completed,
    };
    check_recovered(w, dir.path(), &run.acked()?, after)?;
    check_completion(w, dir.path(), &run, baseline)?;
    Ok(outcome)
}

fn inv_03_inv_05_crash_at_every_named_point() -> Result<(), String> {
    let (w, baseline) = workload_and_baseline()?;
    let cases: Vec<(&'static str, u64)> = crash::POINTS
        .iter()
        .flat_map(|&point| (1..=K_MAX).map(move |k| (point, k)))
        .collect();
    let results = run_parallel(&cases, |&(point, k)| crash_case(w, baseline, point, k));

    let mut failures = Vec::new();
    let mut per_point: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (&(point, k), result) in cases.iter().zip(results) {
        let counts = per_point.entry(point).or_default();
        match result {
            Ok(CrashOutcome::Crashed) => counts.0 += 1,
            Ok(CrashOutcome::NotReached) => counts.1 += 1,
            Err(e) => failures.push(format!("crash at {point}:{k}: {e}")),
        }
    }
    println!("  {:<26} crashed  not reached (k = 1..={K_MAX})", "point");
    for point in crash::POINTS {
        let (crashed, missed) = per_point.get(point).copied().unwrap_or_default();
        println!("  {point:<26} {crashed:>7}  {missed:>11}");
    }
    let crashed: usize = per_point.values().map(|c| c.0).sum();
    let missed: usize = per_point.values().map(|c| c.1).sum();
    println!("  {crashed} distinct (point, k) crashes, {missed} not reached");
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    for point in crash::POINTS {
        ensure!(
            per_point.get(point).is_some_and(|c| c.0 > 0),
            "the workload never reaches crash point {point}"
        );
    }
    ensure!(
        crashed >= CRASHES_MIN,
        "only {crashed} distinct crashes, want at least {CRASHES_MIN}"
    );
    Ok(())
}

/// A node killed during its very first start, while redb was creating `edge.redb`, must start
/// again: a half-created database must not make every later start fail as corrupt.
fn inv_05_kill_during_database_creation_on_first_start() -> Result<(), String> {
    let (w, baseline) = workload_and_baseline()?;
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let run = run_child(dir.path(), Death::InDbCreate)?;
    ensure!(
        run.status.signal() == Some(SIGABRT) && run.stderr.contains("dying inside the creation"),
        "the child did not die creating the database: {}",
        run.describe()
    );
    check_recovered(w, dir.path(), &BTreeSet::new(), After::InDbCreate)?;
    check_completion(w, dir.path(), &run, baseline)
}

/// splitmix64: a tiny seeded generator, so the delays replay from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn kill_seed() -> Result<u64, String> {
    match std::env::var(SEED_ENV) {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|e| format!("{SEED_ENV}={s:?} is not a u64: {e}")),
        Err(_) => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillOutcome {
    /// Killed mid-workload after this many acknowledgements.
    Killed(usize),
    /// The workload completed before the kill.
    Finished,
}

fn kill_case(
    w: &Workload,
    baseline: &BTreeSet<store::SegmentId>,
    delay: Duration,
) -> Result<KillOutcome, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let run = run_child(dir.path(), Death::KillAfter(delay))?;
    let acked = run.acked()?;
    let (outcome, after) = if run.status.signal() == Some(SIGKILL) {
        (KillOutcome::Killed(acked.len()), After::Kill)
    } else if run.finished() {
        (KillOutcome::Finished, After::Completed)
    } else {
        return Err(format!(
            "the child neither died by SIGKILL nor completed: {}",
            run.describe()
        ));
    };
    check_recovered(w, dir.path(), &acked, after)?;
    check_completion(w, dir.path(), &run, baseline)?;
    Ok(outcome)
}

fn inv_04_inv_05_kill_9_at_random_moments() -> Result<(), String> {
    let seed = kill_seed()?;
    println!("  kill -9 seed {seed} (replay the delays: {SEED_ENV}={seed})");
    let mut rng = Rng(seed);
    let delays: Vec<Duration> = (0..KILL_RUNS)
        .map(|_| Duration::from_millis(rng.below(KILL_DELAY_MAX_MS + 1)))
        .collect();
    let (w, baseline) = workload_and_baseline()?;
    let results = run_parallel(&delays, |&delay| kill_case(w, baseline, delay));

    let mut failures = Vec::new();
    let (mut killed, mut finished) = (0, 0);
    for (i, (delay, result)) in delays.iter().zip(results).enumerate() {
        let seen = match result {
            Ok(KillOutcome::Killed(acks)) => {
                killed += 1;
                format!("killed after {acks} acks")
            }
            Ok(KillOutcome::Finished) => {
                finished += 1;
                "finished before the kill".to_owned()
            }
            Err(e) => {
                failures.push(format!(
                    "kill -9 run {i} after {delay:?} (seed {seed}): {e}"
                ));
                "FAILED".to_owned()
            }
        };
        println!(
            "  run {i:>2}: SIGKILL after {:>3} ms: {seen}",
            delay.as_millis()
        );
    }
    println!("  {killed} killed mid-workload, {finished} finished first (seed {seed})");
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    ensure!(
        killed > 0,
        "no run was killed mid-workload (seed {seed}): the delays are too long"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// main: child dispatch, or a small libtest-like runner
// ---------------------------------------------------------------------------------------------

type Test = (&'static str, fn() -> Result<(), String>);

const TESTS: &[Test] = &[
    (
        "inv_03_inv_05_crash_at_every_named_point",
        inv_03_inv_05_crash_at_every_named_point,
    ),
    (
        "inv_04_inv_05_kill_9_at_random_moments",
        inv_04_inv_05_kill_9_at_random_moments,
    ),
    (
        "inv_05_kill_during_database_creation_on_first_start",
        inv_05_kill_during_database_creation_on_first_start,
    ),
];

fn main() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child_main(Path::new(&dir));
        return;
    }
    let args = HarnessArgs::parse(std::env::args().skip(1));
    let selected: Vec<&Test> = TESTS
        .iter()
        .chain(HARNESS_TESTS)
        .filter(|(name, _)| args.selects(name))
        .collect();
    if args.list {
        // nextest reads this exact form (`NAME: test`, one per line, nothing else on stdout).
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return;
    }
    let plural = if selected.len() == 1 { "" } else { "s" };
    println!("\nrunning {} test{plural}", selected.len());
    let started = Instant::now();
    let (mut passed, mut failed) = (0, 0);
    let mut failures = Vec::new();
    for (name, test) in selected {
        let t0 = Instant::now();
        let result = std::panic::catch_unwind(test).unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panicked".to_owned());
            Err(format!("panicked: {msg}"))
        });
        let secs = t0.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({secs:.1}s)");
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED ({secs:.1}s)");
                failures.push(format!("---- {name} ----\n{e}"));
            }
        }
    }
    if !failures.is_empty() {
        println!("\nfailures:\n\n{}\n", failures.join("\n\n"));
    }
    println!(
        "\nfinished in {:.1}s\n{passed} passed, {failed} failed",
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::stdout().flush();
    if failed > 0 {
        std::process::exit(101);
    }
}

/// Tests of the harness itself: it must speak the listing protocol exactly, or the runner
/// misses tests or runs them twice.
const HARNESS_TESTS: &[Test] = &[(
    "harness_lists_and_selects_tests_like_libtest",
    harness_lists_and_selects_tests_like_libtest,
)];

/// Runs this binary with `args` (never in child mode) and returns its exit success and stdout.
fn run_self(args: &[&str]) -> Result<(bool, String), String> {
    let out = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(args)
        .env_remove(CHILD_ENV)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the harness: {e}"))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

fn harness_lists_and_selects_tests_like_libtest() -> Result<(), String> {
    let all: Vec<String> = TESTS
        .iter()
        .chain(HARNESS_TESTS)
        .map(|(name, _)| format!("{name}: test\n"))
        .collect();
    let check = |args: &[&str], expected: &str| -> Result<(), String> {
        match run_self(args)? {
            (true, out) if out == expected => Ok(()),
            (ok, out) => Err(format!(
                "{args:?}: exit success {ok}, printed {out:?}, expected {expected:?}"
            )),
        }
    };
    check(&["--list", "--format", "terse"], &all.concat())?;
    // Only ignored tests, and none is: the list must be empty, or they would run twice.
    check(&["--list", "--format", "terse", "--ignored"], "")?;
    let (first, _) = TESTS[0];
    check(
        &["--list", "--format", "terse", first, "--exact"],
        &format!("{first}: test\n"),
    )?;
    // `--exact` takes whole names only; without it a filter is a substring.
    check(&["--list", "--format=terse", &first[..8], "--exact"], "")?;
    let with_prefix = TESTS
        .iter()
        .chain(HARNESS_TESTS)
        .filter(|(name, _)| name.starts_with(&first[..8]))
        .map(|(name, _)| format!("{name}: test\n"))
        .collect::<String>();
    check(&["--list", "--format", "terse", &first[..8]], &with_prefix)?;
    let (_, rest) = all.split_first().ok_or("no tests")?;
    check(
        &["--list", "--format", "terse", "--skip", first],
        &rest.concat(),
    )?;
    // What nextest runs for one test: a name that matches nothing runs nothing, and passes.
    let (ok, out) = run_self(&["no_such_test", "--exact", "--nocapture"])?;
    if !ok || !out.contains("0 passed, 0 failed") {
        return Err(format!("a run of no test printed {out:?} (success {ok})"));
    }
    Ok(())
}
