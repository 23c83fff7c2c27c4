//! Durability of a group commit, proven with the power-loss double [`SimFs`] (INV-03, INV-05).
//!
//! Segments that arrive together (a pipelined import, many small segments from a peer) are
//! ingested on threads of their own, and the committer folds their index rows into one redb
//! transaction. This test makes that batch happen for certain: an operation submitted first
//! holds the committer inside its own transaction until every ingest has written, fsynced and
//! renamed its file and queued its rows; then all of them commit as one batch.
//!
//! Power is cut at every file-system operation from the first one after `Store::open` to the
//! last before the store closes. The threads interleave their file operations differently from
//! run to run, so operation k is not the same step each time; what is checked holds for every
//! interleaving: after a reboot every acknowledged segment is stored and verifies, files and
//! rows agree, nothing is left in `tmp/`, and the batch was all or nothing (no run acknowledges
//! some of its segments and not others).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use store::fs::sim::{Fault, FaultKind, SimFs};
use store::fs::{EntryKind, Fs};
use store::layout::Layout;
use store::{IngestOptions, IngestOutcome, SegmentId, Store, StoreConfig};

const DATA_DIR: &str = "/data";
/// Payload lengths of the segments ingested together: empty, small, and several chunks.
const LENGTHS: &[usize] = &[0, 700, 1_000, 3_000, 4_096, 150_000];
/// Longest a run may wait for the ingests to queue their commits.
const QUEUE_WAIT: Duration = Duration::from_secs(20);

struct Seg {
    id: SegmentId,
    file: Vec<u8>,
}

struct World {
    cfg: StoreConfig,
    layout: Layout,
    segs: Vec<Seg>,
    /// Ingested after the reboot, to show the store still works.
    fresh: Seg,
}

impl World {
    fn new() -> World {
        let publisher = publisher(9);
        let make = |i: usize, len: usize| {
            let body = payload(300 + i as u64, len);
            let (signed, file) = seg(&publisher, &SegSpec::named(&format!("group-{i}")), &body);
            Seg {
                id: signed.id(),
                file,
            }
        };
        let segs: Vec<Seg> = LENGTHS
            .iter()
            .enumerate()
            .map(|(i, &n)| make(i, n))
            .collect();
        let fresh = make(LENGTHS.len(), 2_000);
        let cfg = config(DATA_DIR.as_ref(), 16 << 20, trusting(&[&publisher]));
        World {
            cfg,
            layout: Layout::new(DATA_DIR),
            segs,
            fresh,
        }
    }

    fn all(&self) -> impl Iterator<Item = &Seg> {
        self.segs.iter().chain([&self.fresh])
    }
}

/// What one run of the scenario did.
struct Run {
    /// Segments whose ingest returned success, i.e. were acknowledged.
    acked: Vec<SegmentId>,
    /// The first operation after `Store::open` (`None`: the store did not open).
    first_op: Option<u64>,
    /// The most operations one committed batch held.
    largest_batch: usize,
}

/// Opens a store on `sim`, holds the committer, ingests every segment of the world at once and
/// lets their commits go as one batch. Stops early where the file system dies.
fn scenario(w: &World, sim: &SimFs) -> Run {
    let mut run = Run {
        acked: Vec::new(),
        first_op: None,
        largest_batch: 0,
    };
    let Ok((store, _)) = Store::open(w.cfg.clone(), Arc::new(sim.clone()), NOW_MS) else {
        return run;
    };
    run.first_op = Some(sim.op_count());
    let (held_tx, held_rx) = sync_channel::<()>(1);
    let (release_tx, release_rx) = sync_channel::<()>(1);
    let gate = store.writer().submit(
        move |_| {
            let _ = held_tx.send(());
            let _ = release_rx.recv();
            Ok(())
        },
        |_: Result<(), store::StoreError>| {},
    );
    gate.expect("the committer takes the gate");
    held_rx
        .recv_timeout(QUEUE_WAIT)
        .expect("the committer holds the gate");

    let acked = Mutex::new(Vec::new());
    let ended = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for s in &w.segs {
            let (store, acked, ended) = (&store, &acked, &ended);
            scope.spawn(move || {
                let outcome =
                    store.ingest_reader(&s.file[..], &IngestOptions::import(), NOW_MS, |_, _| {
                        Ok(())
                    });
                if let Ok(IngestOutcome::Stored(stored)) = outcome {
                    acked.lock().unwrap().push(stored.id);
                }
                ended.fetch_add(1, Ordering::AcqRel);
            });
        }
        // Every ingest has either queued its commit or failed before it (the file system died).
        let started = Instant::now();
        while store.writer().queued() + ended.load(Ordering::Acquire) < w.segs.len() {
            assert!(
                started.elapsed() < QUEUE_WAIT,
                "the ingests did not reach their commit"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        release_tx.send(()).expect("the gate waits");
    });
    run.largest_batch = store.writer().largest_batch();
    run.acked = acked.into_inner().unwrap();
    drop(store);
    run
}

/// `.seg` files of the world's segments, by id, with their lengths.
fn segment_files(fs: &dyn Fs, w: &World, ctx: &str) -> BTreeMap<SegmentId, u64> {
    let mut out = BTreeMap::new();
    for s in w.all() {
        let dir = w.layout.fanout(&s.id);
        for e in fs
            .list_dir(&dir)
            .unwrap_or_else(|e| panic!("{ctx}: list {}: {e}", dir.display()))
        {
            assert_eq!(e.kind, EntryKind::File, "{ctx}: {:?} is not a file", e.name);
            let id: SegmentId = e
                .name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{ctx}: stray file {:?} in {}", e.name, dir.display()));
            out.insert(id, e.len);
        }
    }
    out
}

/// After the reboot: every acknowledged segment is stored and verifies, every listed one is
/// byte for byte what was offered, files and rows agree, `tmp/` is empty, usage is the bytes on
/// disk, and a new ingest works.
fn check_rebooted(w: &World, image: &SimFs, run: &Run, ctx: &str) {
    let (store, _) = Store::open(w.cfg.clone(), Arc::new(image.clone()), NOW_MS)
        .unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
    let listed: BTreeMap<SegmentId, u64> = store
        .list()
        .unwrap_or_else(|e| panic!("{ctx}: list: {e}"))
        .into_iter()
        .map(|s| (s.id, s.row.file_len))
        .collect();
    for id in &run.acked {
        assert!(listed.contains_key(id), "{ctx}: acknowledged {id} is lost");
    }
    for id in listed.keys() {
        let seg = w
            .all()
            .find(|s| s.id == *id)
            .unwrap_or_else(|| panic!("{ctx}: the store lists {id}, never offered"));
        assert!(
            read_back(&store, id, ctx) == seg.file,
            "{ctx}: {id} differs"
        );
    }
    let files = segment_files(image, w, ctx);
    assert_eq!(
        files, listed,
        "{ctx}: segment files (left) and rows (right)"
    );
    let tmp = image
        .list_dir(&w.layout.tmp())
        .unwrap_or_else(|e| panic!("{ctx}: list tmp: {e}"));
    assert!(tmp.is_empty(), "{ctx}: left in tmp/: {tmp:?}");
    assert_eq!(
        store.usage().stored_bytes,
        files.values().sum::<u64>(),
        "{ctx}: usage"
    );
    match store.ingest_reader(
        &w.fresh.file[..],
        &IngestOptions::import(),
        NOW_MS,
        |_, _| Ok(()),
    ) {
        Ok(IngestOutcome::Stored(s)) => assert_eq!(s.id, w.fresh.id, "{ctx}"),
        other => panic!("{ctx}: a new ingest after the reboot gave {other:?}"),
    }
}

#[test]
fn inv_03_inv_05_power_loss_during_a_group_commit_keeps_every_acknowledged_segment() {
    let w = World::new();
    let n = w.segs.len();

    let clean = SimFs::new();
    let run = scenario(&w, &clean);
    assert_eq!(run.acked.len(), n, "the clean run stores every segment");
    assert_eq!(run.largest_batch, n, "the ingests commit as one batch");
    let first = run.first_op.expect("the store opens");
    let total = clean.op_count();

    let mut acked_counts: BTreeMap<usize, u64> = BTreeMap::new();
    for k in first..total {
        let sim = SimFs::new();
        sim.inject(Fault {
            at_op: k,
            kind: FaultKind::PowerLoss,
        });
        let run = scenario(&w, &sim);
        let ctx = format!(
            "power loss at op {k} of {total}; acknowledged {:?}",
            run.acked
        );
        assert!(sim.is_dead(), "{ctx}: the power loss did not happen");
        assert!(
            run.acked.is_empty() || run.acked.len() == n,
            "{ctx}: a batch committed in part"
        );
        *acked_counts.entry(run.acked.len()).or_default() += 1;
        check_rebooted(&w, &sim.crash_image(), &run, &ctx);
    }
    eprintln!(
        "group commit: power lost at each of ops {first}..{total}; runs by segments acknowledged: {acked_counts:?}"
    );
    assert!(
        acked_counts.contains_key(&0) && acked_counts.contains_key(&n),
        "power was lost both before and after the batch committed: {acked_counts:?}"
    );
}
