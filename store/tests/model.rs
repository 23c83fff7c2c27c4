//! Model-based property test of the store (STYLE.md §8).
//!
//! Random sequences of operations run against a real [`Store`] on [`SimFs`] (in memory, so a case
//! takes milliseconds) and against [`Model`], a few `BTreeMap`s that say what the store must hold.
//! After every step the store's rows, pins, tombstones, partials, usage and files must equal the
//! model's, and the invariants are checked on what the store shows, independently of the model:
//!
//! - INV-04: a partial is never listed, never `Holding::Stored`, never opened for reading or
//!   exported; every listed segment's file is the signed segment, byte for byte, and verifies.
//! - INV-06: `usage().total() <= ceiling` after every step and inside every op (an ingest in
//!   flight before and after each write, a reader held); an ingest's grant is exactly the
//!   model's (what fitted without evicting at begin, grown as bytes arrive) and always covers
//!   the bytes it wrote; `stored_bytes` equals the listed `file_len`s and the bytes of the
//!   `.seg` files in the `SimFs`; `reserved_bytes` is the grants in flight, 0 when nothing is;
//!   `partial_bytes` is the sum of the checkpointed partials.
//! - INV-07: a pinned segment stays stored across every later op; each eviction made to fit an
//!   ingest took only unpinned, non-busy segments, took every expired evictable one before any
//!   unexpired one, never an unexpired channel-pinned one, and left no evictable survivor with a
//!   lower (priority, last used) than an unexpired victim. Evictions happen only when the bytes
//!   an ingest has in hand would not fit (a transfer cut short evicts only for what arrived), and
//!   an ingest refused with `StoreFull` evicts nothing.
//! - INV-10: ingesting the same segment N times yields one row, one file and unchanged usage; a
//!   peer's re-offer of an evicted id answers `Have(Tombstoned)` while its tombstone is kept.
//! - INV-13 (store side): `propagated_at_ms` is set once, and stays until the segment is evicted.
//!
//! The model predicts the exact victims of every eviction from the rule documented in
//! `store::evict` (expired first, soonest expiry first; then lowest priority, least recently used,
//! id; all or nothing), written here independently of `evict::plan`; the property checks above
//! hold whatever that rule's details.
//!
//! Cases: [`CASES_DEFAULT`], or `PROPTEST_CASES`. A failure is shrunk to a short op sequence and
//! its seed appended to `store/tests/proptest-regressions/model.txt` (commit it: its seeds run
//! first, every run); `PROPTEST_RNG_SEED` fixes the generator's seed for a whole run. A seed
//! replays only the strategies it was recorded with, so cases worth keeping for good also go
//! into [`inv_10_regressions_store_matches_model`] as op lists.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use common::{NOW_MS, SegSpec, payload, publisher, seg, trusting};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use store::evict::Usage;
use store::fs::sim::SimFs;
use store::fs::{EntryKind, Fs};
use store::keys::TrustedPublishers;
use store::manifest::{SignedManifest, VerifyError};
use store::{
    Begin, Holding, IngestError, IngestOptions, IngestOutcome, SegmentId, SegmentInfo, Store,
    StoreConfig, StoreError,
};

/// Cases per run unless `PROPTEST_CASES` says otherwise: about 11 s of CPU in the debug test
/// profile (one case is about 40 ms; the store itself runs unoptimised).
const CASES_DEFAULT: u32 = 256;
/// Longest operation sequence of a case.
const OPS_MAX: usize = 40;
/// The store's ceiling: smaller than the pool, so ingests evict; smaller than `bulk`, which never
/// fits.
const CEILING_BYTES: u64 = 48 * 1024;
/// Clock skew allowed by freshness checks: a segment expired by less than this is still
/// accepted, and is then evicted first.
const CLOCK_SKEW_MS: u64 = 60_000;
/// Partials older than this are dropped at start (the default is 7 days).
const PARTIAL_AGE_MAX_MS: u64 = 10 * 60_000;
/// The channel this host consumes (`StoreConfig::pinned_channels`).
const PINNED_CHANNEL: &str = "ops";
/// Pin owners, as the relay and an operator name them.
const OWNERS: [&str; 3] = ["relay:peer-a", "relay:peer-b", "operator"];
/// Peers that offer segments.
const PEERS: [&str; 2] = ["peer-a", "peer-b"];
/// Bytes written past the checkpoint by a transfer that is then cut off.
const OVERRUN_BYTES: u64 = 777;
/// Clock steps: within the skew, across an expiry, across the partial age limit.
const CLOCK_STEPS_MS: [u64; 4] = [1_000, 45_000, 200_000, 700_000];

/// The pool every case draws from: (name, payload bytes, priority, channel, expires after NOW).
/// Sizes are chosen so that a few fit together under the ceiling; `bulk` never fits; `policy`,
/// `model` and `log` share a priority, so least-recent use (then the id) decides between them.
const POOL: [(&str, usize, u8, &str, Option<u64>); 8] = [
    ("policy", 6_000, 100, "default", None),
    ("release", 20_000, 200, "default", None),
    ("model", 30_000, 100, "default", None),
    ("cve", 3_000, 255, "default", Some(90_000)),
    ("ops-config", 10_000, 10, PINNED_CHANNEL, None),
    ("ops-alert", 5_000, 100, PINNED_CHANNEL, Some(300_000)),
    ("bulk", 70_000, 128, "default", None),
    ("log", 15_000, 100, "default", Some(900_000)),
];

/// One signed segment of the pool, built once for all cases.
#[derive(Debug)]
struct PoolSeg {
    name: &'static str,
    signed: SignedManifest,
    id: SegmentId,
    body: Vec<u8>,
    /// The whole `.seg` file: what an import reads and what the store must hold.
    file: Vec<u8>,
    header_bytes: u64,
    file_len: u64,
    priority: u8,
    channel: &'static str,
    expires_at_ms: Option<u64>,
}

#[derive(Debug)]
struct Pool {
    segs: Vec<PoolSeg>,
    trusted: TrustedPublishers,
}

impl Pool {
    fn index_of(&self, id: &SegmentId) -> Option<usize> {
        self.segs.iter().position(|s| s.id == *id)
    }
}

fn pool() -> &'static Pool {
    static POOL_CELL: OnceLock<Pool> = OnceLock::new();
    POOL_CELL.get_or_init(|| {
        let secret = publisher(7);
        let trusted = trusting(&[&secret]);
        let segs = POOL
            .iter()
            .enumerate()
            .map(|(i, &(name, len, priority, channel, expires_after))| {
                let mut spec = SegSpec::named(name);
                spec.priority = priority;
                spec.channel = channel.to_owned();
                spec.expires_at_ms = expires_after.map(|after| NOW_MS + after);
                let body = payload(1000 + i as u64, len);
                let (signed, file) = seg(&secret, &spec, &body);
                store::segfile::verify_seg_file(&file[..], &trusted, NOW_MS, 0)
                    .expect("pool segment verifies");
                PoolSeg {
                    name,
                    id: signed.id(),
                    signed,
                    header_bytes: (file.len() - body.len()) as u64,
                    file_len: file.len() as u64,
                    body,
                    file,
                    priority,
                    channel,
                    expires_at_ms: spec.expires_at_ms,
                }
            })
            .collect();
        Pool { segs, trusted }
    })
}

/// A segment of the pool, shown by name (and index) when a case fails.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Seg(usize);

impl std::fmt::Debug for Seg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", POOL[self.0].0, self.0)
    }
}

/// One step of a case.
#[derive(Debug, Clone)]
enum Op {
    /// Import the `.seg` file (`IngestOptions::import`, revives tombstones) `times` times in a row.
    Import {
        seg: Seg,
        times: u8,
    },
    /// A peer offers the segment and, if asked, streams all of it (resuming a partial).
    PeerOffer {
        seg: Seg,
        peer: usize,
    },
    /// A peer offers the segment, streams up to `quarters`/4 of it, the receiver checkpoints,
    /// optionally more bytes arrive, and the connection drops: a partial is kept.
    PeerPartial {
        seg: Seg,
        quarters: u8,
        overrun: bool,
    },
    /// Import while a reader holds `reading` (it is busy: not evictable).
    ImportWhileReading {
        seg: Seg,
        reading: Seg,
    },
    /// Import while a peer's ingest of `receiving` is in flight (its reservation counts), then
    /// that transfer is dropped without a new checkpoint.
    ImportWhileReceiving {
        seg: Seg,
        receiving: Seg,
    },
    /// Read (send or export) the segment: verifies it and records the use for LRU.
    Read {
        seg: Seg,
    },
    Pin {
        seg: Seg,
        owner: usize,
    },
    Unpin {
        seg: Seg,
        owner: usize,
    },
    MarkPropagated {
        seg: Seg,
    },
    /// Operator purge of one segment.
    Evict {
        seg: Seg,
    },
    Advance {
        ms: u64,
    },
    SweepExpired,
    /// Close and open the store again on the same file system, as after a clean restart.
    Reopen,
}

fn seg_strategy() -> impl Strategy<Value = Seg> {
    (0..POOL.len()).prop_map(Seg)
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (seg_strategy(), 1..=3u8).prop_map(|(seg, times)| Op::Import { seg, times }),
        3 => (seg_strategy(), 0..PEERS.len()).prop_map(|(seg, peer)| Op::PeerOffer { seg, peer }),
        3 => (seg_strategy(), 1..=3u8, any::<bool>())
            .prop_map(|(seg, quarters, overrun)| Op::PeerPartial { seg, quarters, overrun }),
        1 => (seg_strategy(), seg_strategy())
            .prop_map(|(seg, reading)| Op::ImportWhileReading { seg, reading }),
        1 => (seg_strategy(), seg_strategy())
            .prop_map(|(seg, receiving)| Op::ImportWhileReceiving { seg, receiving }),
        2 => seg_strategy().prop_map(|seg| Op::Read { seg }),
        2 => (seg_strategy(), 0..OWNERS.len()).prop_map(|(seg, owner)| Op::Pin { seg, owner }),
        2 => (seg_strategy(), 0..OWNERS.len()).prop_map(|(seg, owner)| Op::Unpin { seg, owner }),
        1 => seg_strategy().prop_map(|seg| Op::MarkPropagated { seg }),
        2 => seg_strategy().prop_map(|seg| Op::Evict { seg }),
        2 => proptest::sample::select(&CLOCK_STEPS_MS[..]).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::SweepExpired),
        1 => Just(Op::Reopen),
    ]
}

/// What an ingest attempt came to, as both the store and the model report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Stored,
    Have(Holding),
    /// Payload accepted for streaming from this offset (a begun ingest).
    Receive {
        resume: u64,
    },
    StoreFull,
    Expired,
    Busy,
}

/// A stored segment in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RowM {
    source: String,
    stored_at_ms: u64,
    last_used_ms: u64,
    propagated_at_ms: Option<u64>,
}

/// An ingest in flight in the model: file bytes granted under the ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flight {
    i: usize,
    granted: u64,
}

/// A checkpointed partial in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartialM {
    offset: u64,
    updated_at_ms: u64,
    /// Length of its temp file (bytes past the checkpoint stay until resume or restart).
    tmp_len: u64,
}

/// The reference model: what the store must hold. Keys are pool indices.
#[derive(Debug, Clone)]
struct Model {
    now_ms: u64,
    tombstones_max: usize,
    stored: BTreeMap<usize, RowM>,
    /// Oldest first, at most `tombstones_max`.
    tombstones: Vec<usize>,
    partials: BTreeMap<usize, PartialM>,
    /// Pins exist independently of rows (the relay may pin before the segment arrives).
    pins: BTreeMap<usize, BTreeSet<&'static str>>,
}

impl Model {
    fn new(tombstones_max: usize) -> Self {
        Model {
            now_ms: NOW_MS,
            tombstones_max,
            stored: BTreeMap::new(),
            tombstones: Vec::new(),
            partials: BTreeMap::new(),
            pins: BTreeMap::new(),
        }
    }

    fn pinned(&self, i: usize) -> bool {
        self.pins.get(&i).is_some_and(|owners| !owners.is_empty())
    }

    fn expired(&self, i: usize) -> bool {
        pool().segs[i]
            .expires_at_ms
            .is_some_and(|at| at <= self.now_ms)
    }

    /// Freshness check of ingest: expired even allowing for the clock skew.
    fn rejected_as_expired(&self, i: usize) -> bool {
        pool().segs[i]
            .expires_at_ms
            .is_some_and(|at| at + CLOCK_SKEW_MS <= self.now_ms)
    }

    fn holding(&self, i: usize) -> Holding {
        if self.stored.contains_key(&i) {
            Holding::Stored
        } else if self.tombstones.contains(&i) {
            Holding::Tombstoned
        } else if let Some(p) = self.partials.get(&i) {
            Holding::Partial { offset: p.offset }
        } else {
            Holding::Absent
        }
    }

    fn stored_bytes(&self) -> u64 {
        self.stored.keys().map(|&i| pool().segs[i].file_len).sum()
    }

    fn partial_bytes_except(&self, except: &[usize]) -> u64 {
        self.partials
            .iter()
            .filter(|(i, _)| !except.contains(i))
            .map(|(&i, p)| pool().segs[i].header_bytes + p.offset)
            .sum()
    }

    /// Which segments to evict to free `short` bytes, by the documented rule, or `None` when the
    /// evictable ones cannot free enough.
    fn plan(&self, short: u64, busy: &[usize]) -> Option<Vec<usize>> {
        let mut order: Vec<usize> = self
            .stored
            .keys()
            .copied()
            .filter(|&i| {
                !self.pinned(i)
                    && !busy.contains(&i)
                    && (self.expired(i) || pool().segs[i].channel != PINNED_CHANNEL)
            })
            .collect();
        order.sort_by_key(|&i| {
            let s = &pool().segs[i];
            let expired = self.expired(i);
            (
                !expired,
                if expired { s.expires_at_ms } else { None },
                s.priority,
                self.stored[&i].last_used_ms,
                s.id,
            )
        });
        let mut freed = 0;
        let mut chosen = Vec::new();
        for i in order {
            if freed >= short {
                break;
            }
            freed += pool().segs[i].file_len;
            chosen.push(i);
        }
        (freed >= short).then_some(chosen)
    }

    /// Evicts `victims` in this order: rows go, tombstones are added (oldest dropped past the
    /// cap), the propagated mark goes with the row.
    fn evict(&mut self, victims: &[usize]) {
        for &i in victims {
            self.stored.remove(&i);
            self.tombstones.retain(|&t| t != i);
            self.tombstones.push(i);
            if self.tombstones.len() > self.tombstones_max {
                self.tombstones.remove(0);
            }
        }
    }

    /// Bytes counted against the ceiling: stored, the grants of `flights`, and the idle
    /// partials (not those of the ingests in flight, which their grants took over).
    fn used(&self, flights: &[&Flight]) -> u64 {
        let except: Vec<usize> = flights.iter().map(|f| f.i).collect();
        self.stored_bytes()
            + flights.iter().map(|f| f.granted).sum::<u64>()
            + self.partial_bytes_except(&except)
    }

    /// Begins an ingest of `i`, checks in the store's order: refused with `StoreFull` only if
    /// it could not fit after every eviction the plan allows (nothing is evicted for that);
    /// granted at once only the room there is (an idle partial's bytes included). A fresh
    /// ingest writes its header now, which may need room. `in_flight` is another ingest holding
    /// a grant; `busy` ids are being read.
    fn begin(
        &mut self,
        i: usize,
        revive_tombstoned: bool,
        in_flight: Option<&Flight>,
        busy: &[usize],
    ) -> (Got, Option<Flight>) {
        if in_flight.is_some_and(|f| f.i == i) {
            return (Got::Busy, None);
        }
        // "Have" needs no verification: an expired copy already held is still "have".
        match self.holding(i) {
            Holding::Stored => return (Got::Have(Holding::Stored), None),
            Holding::Tombstoned if !revive_tombstoned => {
                return (Got::Have(Holding::Tombstoned), None);
            }
            _ => {}
        }
        if self.rejected_as_expired(i) {
            return (Got::Expired, None);
        }
        let s = &pool().segs[i];
        let mut flights: Vec<&Flight> = in_flight.into_iter().collect();
        let idle = self
            .partials
            .get(&i)
            .map_or(0, |p| s.header_bytes + p.offset);
        // The ingest's own idle partial counts as if already granted: leave it out here.
        let probe = Flight { i, granted: 0 };
        flights.push(&probe);
        let used = self.used(&flights);
        let short = (used + s.file_len).saturating_sub(CEILING_BYTES);
        if short > 0 && self.plan(short, busy).is_none() {
            return (Got::StoreFull, None);
        }
        let room = CEILING_BYTES.saturating_sub(used);
        let mut flight = Flight {
            i,
            granted: idle.max(room.min(s.file_len)),
        };
        let resume = self.partials.get(&i).map_or(0, |p| p.offset);
        if resume == 0 {
            let grown = self.grow(&mut flight, s.header_bytes, in_flight, busy);
            assert!(grown, "admitted, so its header fits");
        }
        (Got::Receive { resume }, Some(flight))
    }

    /// `flight` needs `need` bytes of its file granted: from the room there is, then by evicting
    /// by the plan only what is still missing; the grant then takes all the room there is up to
    /// the whole file (the store's growth step is far larger than this pool). False (nothing
    /// granted, nothing evicted) when the plan cannot free enough.
    fn grow(
        &mut self,
        flight: &mut Flight,
        need: u64,
        other: Option<&Flight>,
        busy: &[usize],
    ) -> bool {
        if need <= flight.granted {
            return true;
        }
        let file_len = pool().segs[flight.i].file_len;
        let flights: Vec<&Flight> = std::iter::once(&*flight).chain(other).collect();
        let used = self.used(&flights);
        let short = (used + need - flight.granted).saturating_sub(CEILING_BYTES);
        if short > 0 {
            match self.plan(short, busy) {
                Some(victims) => self.evict(&victims),
                None => return false,
            }
        }
        let flights: Vec<&Flight> = std::iter::once(&*flight).chain(other).collect();
        let room = CEILING_BYTES.saturating_sub(self.used(&flights));
        flight.granted += (file_len - flight.granted).min(room);
        true
    }

    /// A begun ingest of `i` committed.
    fn finish(&mut self, i: usize, source: &str) {
        self.partials.remove(&i);
        self.tombstones.retain(|&t| t != i);
        self.stored.insert(
            i,
            RowM {
                source: source.to_owned(),
                stored_at_ms: self.now_ms,
                last_used_ms: self.now_ms,
                propagated_at_ms: None,
            },
        );
    }

    /// A whole ingest from a reader: begin, the whole file granted as it streams in, commit.
    fn ingest(
        &mut self,
        i: usize,
        source: &str,
        revive_tombstoned: bool,
        in_flight: Option<&Flight>,
        busy: &[usize],
    ) -> Got {
        match self.begin(i, revive_tombstoned, in_flight, busy) {
            (Got::Receive { .. }, Some(mut flight)) => {
                let file_len = pool().segs[i].file_len;
                let grown = self.grow(&mut flight, file_len, in_flight, busy);
                assert!(grown, "admitted alone, so it fits");
                self.finish(i, source);
                Got::Stored
            }
            (other, _) => other,
        }
    }

    fn touch(&mut self, i: usize) {
        let now = self.now_ms;
        if let Some(row) = self.stored.get_mut(&i) {
            row.last_used_ms = row.last_used_ms.max(now);
        }
    }

    /// Expired segments nobody pins, in id order (what `sweep_expired` evicts).
    fn sweepable(&self) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .stored
            .keys()
            .copied()
            .filter(|&i| self.expired(i) && !self.pinned(i))
            .collect();
        out.sort_by_key(|&i| pool().segs[i].id);
        out
    }
}

/// What the store shows at one point: its rows (with pins), its usage, and what it holds of
/// each pool id.
#[derive(Debug, Clone)]
struct Observed {
    rows: BTreeMap<SegmentId, SegmentInfo>,
    usage: Usage,
    holdings: BTreeMap<SegmentId, Holding>,
}

fn observe(store: &Store) -> Observed {
    let rows = store
        .list()
        .expect("list")
        .into_iter()
        .map(|info| (info.id, info))
        .collect();
    let holdings = pool()
        .segs
        .iter()
        .map(|s| (s.id, store.holding(&s.id).expect("holding")))
        .collect();
    Observed {
        rows,
        usage: store.usage(),
        holdings,
    }
}

/// Everything an op needs: the file system, the store on it, the model, and what the store
/// showed after the previous step.
struct Harness {
    fs: SimFs,
    cfg: StoreConfig,
    store: Option<Store>,
    model: Model,
    last: Observed,
    /// A real directory export may write into (it must stay empty: only partials are exported).
    export_dir: tempfile::TempDir,
}

fn ids(indices: &[usize]) -> Vec<SegmentId> {
    indices.iter().map(|&i| pool().segs[i].id).collect()
}

fn got_of_ingest(
    result: Result<IngestOutcome<()>, IngestError>,
    i: usize,
) -> Result<Got, TestCaseError> {
    let s = &pool().segs[i];
    Ok(match result {
        Ok(IngestOutcome::Stored(stored)) => {
            prop_assert_eq!(stored.id, s.id);
            prop_assert_eq!(stored.row.file_len, s.file_len);
            Got::Stored
        }
        Ok(IngestOutcome::AlreadyHave { id, holding }) => {
            prop_assert_eq!(id, s.id);
            Got::Have(holding)
        }
        Err(e) => got_of_error(e, i)?,
    })
}

fn got_of_error(e: IngestError, i: usize) -> Result<Got, TestCaseError> {
    let s = &pool().segs[i];
    Ok(match e {
        IngestError::StoreFull { needed_bytes, .. } => {
            prop_assert_eq!(needed_bytes, s.file_len);
            Got::StoreFull
        }
        IngestError::Verify(VerifyError::Expired { .. }) => Got::Expired,
        IngestError::Busy(id) => {
            prop_assert_eq!(id, s.id);
            Got::Busy
        }
        other => {
            return Err(TestCaseError::fail(format!(
                "ingest of {} failed unexpectedly: {other:?}",
                s.name
            )));
        }
    })
}

impl Harness {
    fn new(tombstones_max: usize) -> Self {
        let fs = SimFs::new();
        let mut cfg = StoreConfig::new("/data", CEILING_BYTES, pool().trusted.clone());
        // The floor is SimFs's unlimited capacity's business; this test is about the ceiling.
        cfg.min_free_bytes = 0;
        cfg.tombstones_max = tombstones_max as u64;
        cfg.partial_age_max_ms = PARTIAL_AGE_MAX_MS;
        cfg.clock_skew_ms = CLOCK_SKEW_MS;
        cfg.pinned_channels = BTreeSet::from([PINNED_CHANNEL.to_owned()]);
        let (store, report) =
            Store::open(cfg.clone(), Arc::new(fs.clone()), NOW_MS).expect("open a new store");
        assert!(report.is_clean(), "{report:?}");
        let last = observe(&store);
        Harness {
            fs,
            cfg,
            store: Some(store),
            model: Model::new(tombstones_max),
            last,
            export_dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("the store is open between ops")
    }

    fn now(&self) -> u64 {
        self.model.now_ms
    }

    /// Waits until every write queued so far (the asynchronous LRU touch of a read) committed.
    fn barrier(&self) {
        self.store()
            .writer()
            .write(|_| Ok(()))
            .expect("barrier commit");
    }

    fn import(&self, i: usize) -> Result<Got, TestCaseError> {
        let s = &pool().segs[i];
        let result = self.store().ingest_reader(
            &s.file[..],
            &IngestOptions::import(),
            self.now(),
            |_, _| Ok(()),
        );
        got_of_ingest(result, i)
    }

    fn begin_peer(
        &self,
        i: usize,
        peer: &str,
    ) -> Result<(Got, Option<Box<store::Ingest>>), TestCaseError> {
        let s = &pool().segs[i];
        let begun = self.store().begin_ingest(
            s.signed.clone(),
            &IngestOptions::from_peer(peer),
            self.now(),
        );
        Ok(match begun {
            Ok(Begin::Have(holding)) => (Got::Have(holding), None),
            Ok(Begin::Ingest(ingest)) => {
                prop_assert_eq!(ingest.id(), s.id);
                let resume = ingest.resume_offset();
                (Got::Receive { resume }, Some(ingest))
            }
            Err(e) => (got_of_error(e, i)?, None),
        })
    }

    /// INV-06 inside an op: the ceiling holds with `reserved` bytes granted in flight.
    fn check_in_flight(&self, reserved: u64) -> Result<(), TestCaseError> {
        let usage = self.store().usage();
        prop_assert!(usage.total() <= CEILING_BYTES, "INV-06: {usage:?}");
        prop_assert_eq!(usage.reserved_bytes, reserved, "INV-06: reserved in flight");
        Ok(())
    }

    /// INV-06 for one ingest in flight: its grant is the model's, and covers what it wrote.
    fn check_grant(
        &self,
        ingest: &store::Ingest,
        flight: &Flight,
        written: u64,
    ) -> Result<(), TestCaseError> {
        let header = pool().segs[flight.i].header_bytes;
        prop_assert_eq!(
            ingest.granted(),
            flight.granted,
            "INV-06: grant of the ingest"
        );
        prop_assert!(
            ingest.granted() >= header + written,
            "INV-06: {} bytes written beyond a grant of {}",
            header + written,
            ingest.granted()
        );
        Ok(())
    }

    /// Runs one op on the store and the model, then checks everything.
    fn run(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let before = self.last.clone();
        match *op {
            Op::Import { seg: Seg(i), times } => self.import_times(&before, i, times)?,
            Op::PeerOffer { seg: Seg(i), peer } => self.peer_offer(&before, i, PEERS[peer])?,
            Op::PeerPartial {
                seg: Seg(i),
                quarters,
                overrun,
            } => self.peer_partial(&before, i, quarters, overrun)?,
            Op::ImportWhileReading {
                seg: Seg(i),
                reading: Seg(j),
            } => self.import_while_reading(&before, i, j)?,
            Op::ImportWhileReceiving {
                seg: Seg(i),
                receiving: Seg(k),
            } => self.import_while_receiving(&before, i, k)?,
            Op::Read { seg: Seg(i) } => self.read(i)?,
            Op::Pin { seg: Seg(i), owner } => {
                self.store()
                    .set_pin(&pool().segs[i].id, OWNERS[owner], true)
                    .expect("pin");
                self.model.pins.entry(i).or_default().insert(OWNERS[owner]);
            }
            Op::Unpin { seg: Seg(i), owner } => {
                self.store()
                    .set_pin(&pool().segs[i].id, OWNERS[owner], false)
                    .expect("unpin");
                if let Some(owners) = self.model.pins.get_mut(&i) {
                    owners.remove(OWNERS[owner]);
                }
            }
            Op::MarkPropagated { seg: Seg(i) } => {
                let now = self.now();
                let marked = self
                    .store()
                    .mark_propagated(&pool().segs[i].id, now)
                    .expect("mark propagated");
                let want = match self.model.stored.get_mut(&i) {
                    Some(row) if row.propagated_at_ms.is_none() => {
                        row.propagated_at_ms = Some(now);
                        true
                    }
                    _ => false,
                };
                prop_assert_eq!(marked, want, "INV-13: marked once, only when stored");
            }
            Op::Evict { seg: Seg(i) } => {
                let evicted = self.store().evict(&[pool().segs[i].id]).expect("evict");
                let want: Vec<usize> =
                    if self.model.stored.contains_key(&i) && !self.model.pinned(i) {
                        vec![i]
                    } else {
                        Vec::new()
                    };
                prop_assert_eq!(evicted, ids(&want), "evict {}", pool().segs[i].name);
                self.model.evict(&want);
            }
            Op::Advance { ms } => self.model.now_ms += ms,
            Op::SweepExpired => {
                let swept = self.store().sweep_expired(self.now()).expect("sweep");
                let want = self.model.sweepable();
                prop_assert_eq!(swept, ids(&want), "sweep at +{} ms", self.now() - NOW_MS);
                self.model.evict(&want);
            }
            Op::Reopen => self.reopen()?,
        }
        self.barrier();
        let after = observe(self.store());
        match op {
            // Checked there in two halves: the transfer's reservation may evict a segment that
            // the import then stores again.
            Op::ImportWhileReceiving { .. } => {}
            _ => check_transition(&before, &after, op)?,
        }
        self.check_all(&after)?;
        self.last = after;
        Ok(())
    }

    /// Imports `i` `times` times in a row. INV-10: once stored, more copies change nothing.
    fn import_times(
        &mut self,
        before: &Observed,
        i: usize,
        times: u8,
    ) -> Result<(), TestCaseError> {
        let mut once_stored: Option<Observed> = None;
        for n in 1..=times {
            let want = self.model.ingest(i, "import", true, None, &[]);
            let got = self.import(i)?;
            prop_assert_eq!(got, want, "import #{} of {}", n, pool().segs[i].name);
            let now = observe(self.store());
            if n == 1 {
                self.check_eviction(before, &now, i, got, &[])?;
            }
            match &once_stored {
                Some(first) => {
                    // (An expired one is refused before "have" is answered; either way no copy.)
                    prop_assert_ne!(got, Got::Stored, "INV-10: stored again by import #{}", n);
                    prop_assert_eq!(now.usage, first.usage, "INV-10: usage after a copy");
                    let (rows, first_rows) = (now.rows.keys(), first.rows.keys());
                    prop_assert!(rows.eq(first_rows), "INV-10: rows after a copy");
                }
                None if self.model.stored.contains_key(&i) => once_stored = Some(now),
                None => {}
            }
        }
        Ok(())
    }

    /// A peer offers `i` and, if asked, streams all of it from the offset the store names.
    fn peer_offer(&mut self, before: &Observed, i: usize, peer: &str) -> Result<(), TestCaseError> {
        let s = &pool().segs[i];
        let (want, flight) = self.model.begin(i, false, None, &[]);
        let (got, ingest) = self.begin_peer(i, peer)?;
        prop_assert_eq!(got, want, "offer of {} by {}", s.name, peer);
        let mut outcome = got;
        if let (Some(mut ingest), Some(mut flight)) = (ingest, flight) {
            let resume = ingest.resume_offset();
            self.check_in_flight(flight.granted)?;
            self.check_grant(&ingest, &flight, resume)?;
            let holding = self.store().holding(&s.id).expect("holding");
            prop_assert_eq!(holding, Holding::Ingesting);
            ingest
                .write(&s.body[resume as usize..])
                .expect("stream the payload");
            prop_assert!(self.model.grow(&mut flight, s.file_len, None, &[]));
            self.check_in_flight(flight.granted)?;
            self.check_grant(&ingest, &flight, s.body.len() as u64)?;
            let stored = ingest
                .finish(self.now(), |_, _| Ok(()))
                .expect("finish a peer's ingest");
            prop_assert_eq!(stored.row.source.as_str(), peer);
            self.model.finish(i, peer);
            outcome = Got::Stored;
        }
        let after = observe(self.store());
        self.check_eviction(before, &after, i, outcome, &[])
    }

    /// A peer offers `i`, streams up to `quarters`/4 of it (from where a partial left off), the
    /// store checkpoints, maybe more bytes arrive, then the connection drops.
    fn peer_partial(
        &mut self,
        before: &Observed,
        i: usize,
        quarters: u8,
        overrun: bool,
    ) -> Result<(), TestCaseError> {
        let s = &pool().segs[i];
        let (want, flight) = self.model.begin(i, false, None, &[]);
        let (got, ingest) = self.begin_peer(i, PEERS[0])?;
        prop_assert_eq!(got, want, "partial offer of {}", s.name);
        let after_begin = observe(self.store());
        self.check_eviction(before, &after_begin, i, got, &[])?;
        let (Some(mut ingest), Some(mut flight), Got::Receive { resume }) = (ingest, flight, got)
        else {
            return Ok(());
        };
        self.check_in_flight(flight.granted)?;
        self.check_grant(&ingest, &flight, resume)?;
        let len = s.body.len() as u64;
        let target = resume.max(len * u64::from(quarters) / 4);
        ingest
            .write(&s.body[resume as usize..target as usize])
            .expect("stream a part");
        prop_assert!(
            self.model
                .grow(&mut flight, s.header_bytes + target, None, &[])
        );
        self.check_in_flight(flight.granted)?;
        self.check_grant(&ingest, &flight, target)?;
        ingest.checkpoint(self.now()).expect("checkpoint");
        let extra = if overrun {
            OVERRUN_BYTES.min(len - target)
        } else {
            0
        };
        ingest
            .write(&s.body[target as usize..(target + extra) as usize])
            .expect("bytes past the checkpoint");
        prop_assert!(
            self.model
                .grow(&mut flight, s.header_bytes + target + extra, None, &[])
        );
        self.check_in_flight(flight.granted)?;
        self.check_grant(&ingest, &flight, target + extra)?;
        // Segments go only as the bytes that need their room arrive, by the plan's rules.
        let after_writes = observe(self.store());
        self.check_eviction(before, &after_writes, i, got, &[])?;
        let listed = self.store().list().expect("list");
        prop_assert!(
            !listed.iter().any(|r| r.id == s.id),
            "INV-04: an ingest in flight is listed"
        );
        drop(ingest);
        let updated_at_ms = match self.model.partials.get(&i) {
            // No new bytes: the checkpoint was a no-op and the record is as it was.
            Some(p) if target == resume => p.updated_at_ms,
            _ => self.now(),
        };
        self.model.partials.insert(
            i,
            PartialM {
                offset: target,
                updated_at_ms,
                tmp_len: s.header_bytes + target + extra,
            },
        );
        Ok(())
    }

    /// Imports `i` while a reader holds `j` (if stored): `j` is busy, so not evictable.
    fn import_while_reading(
        &mut self,
        before: &Observed,
        i: usize,
        j: usize,
    ) -> Result<(), TestCaseError> {
        let reader = if self.model.stored.contains_key(&j) {
            let reader = self
                .store()
                .open_for_read(&pool().segs[j].id, self.now())
                .expect("open a stored segment");
            self.model.touch(j);
            Some(reader)
        } else {
            None
        };
        let busy: Vec<usize> = reader.iter().map(|_| j).collect();
        let want = self.model.ingest(i, "import", true, None, &busy);
        let got = self.import(i)?;
        prop_assert_eq!(got, want, "import of {} while reading", pool().segs[i].name);
        self.check_in_flight(0)?;
        let after = observe(self.store());
        drop(reader);
        self.check_eviction(before, &after, i, got, &busy)
    }

    /// Imports `i` while a peer's ingest of `k` is in flight (its reservation counts against
    /// the ceiling), then drops that transfer without a new checkpoint.
    fn import_while_receiving(
        &mut self,
        before: &Observed,
        i: usize,
        k: usize,
    ) -> Result<(), TestCaseError> {
        let (want, flight_k) = self.model.begin(k, false, None, &[]);
        let (got_k, in_flight) = self.begin_peer(k, PEERS[1])?;
        prop_assert_eq!(got_k, want, "offer of {}", pool().segs[k].name);
        let mid = observe(self.store());
        self.check_eviction(before, &mid, k, got_k, &[])?;
        let op = Op::ImportWhileReceiving {
            seg: Seg(i),
            receiving: Seg(k),
        };
        check_transition(before, &mid, &op)?;
        let reserved = flight_k.map_or(0, |f| f.granted);
        self.check_in_flight(reserved)?;
        if let (Some(ingest), Some(flight)) = (&in_flight, &flight_k) {
            self.check_grant(ingest, flight, ingest.resume_offset())?;
        }
        let want = self.model.ingest(i, "import", true, flight_k.as_ref(), &[]);
        let got = self.import(i)?;
        let name = pool().segs[i].name;
        prop_assert_eq!(got, want, "import of {} while receiving", name);
        self.check_in_flight(reserved)?;
        let after = observe(self.store());
        self.check_eviction(&mid, &after, i, got, &[])?;
        check_transition(&mid, &after, &op)?;
        if in_flight.is_some() {
            let holding = self.store().holding(&pool().segs[k].id).expect("holding");
            prop_assert_eq!(holding, Holding::Ingesting);
        }
        drop(in_flight);
        // Dropped without a new checkpoint: a resumed partial stays, its temp file truncated to
        // the checkpoint by the resume; a fresh transfer leaves nothing.
        if let (Got::Receive { .. }, Some(p)) = (got_k, self.model.partials.get_mut(&k)) {
            p.tmp_len = pool().segs[k].header_bytes + p.offset;
        }
        Ok(())
    }

    /// Reads `i` through (as a send or an export does): verified, and recorded as a use.
    fn read(&mut self, i: usize) -> Result<(), TestCaseError> {
        let s = &pool().segs[i];
        match self.store().open_for_read(&s.id, self.now()) {
            Ok(reader) => {
                prop_assert!(self.model.stored.contains_key(&i), "read of {}", s.name);
                let n = reader
                    .copy_to(&mut std::io::sink(), self.now())
                    .expect("a stored segment reads back verified");
                prop_assert_eq!(n, s.file_len);
                self.model.touch(i);
            }
            Err(StoreError::NotFound(_)) => {
                prop_assert!(!self.model.stored.contains_key(&i), "read of {}", s.name);
            }
            Err(e) => return Err(TestCaseError::fail(format!("read of {}: {e:?}", s.name))),
        }
        Ok(())
    }

    /// Closes the store and opens it again on the same file system, as after a clean restart:
    /// recovery finds nothing to repair except partials past their age.
    fn reopen(&mut self) -> Result<(), TestCaseError> {
        let store = self.store.take().expect("open store");
        store.close();
        drop(store);
        let (store, report) = Store::open(self.cfg.clone(), Arc::new(self.fs.clone()), self.now())
            .expect("reopen after a clean shutdown");
        self.store = Some(store);
        let now = self.now();
        let aged: Vec<usize> = self
            .model
            .partials
            .iter()
            .filter(|(_, p)| now - p.updated_at_ms > PARTIAL_AGE_MAX_MS)
            .map(|(&i, _)| i)
            .collect();
        let dropped: BTreeSet<SegmentId> =
            report.partials_dropped.iter().map(|(id, _)| *id).collect();
        let want: BTreeSet<SegmentId> = ids(&aged).into_iter().collect();
        prop_assert_eq!(dropped, want, "partials dropped for age: {:?}", report);
        prop_assert!(report.temp_removed.is_empty(), "{:?}", report);
        prop_assert!(report.orphans_removed.is_empty(), "{:?}", report);
        prop_assert!(report.rows_dropped.is_empty(), "{:?}", report);
        for i in aged {
            self.model.partials.remove(&i);
        }
        prop_assert_eq!(report.partials_kept, self.model.partials.len());
        // Recovery truncates kept partials to their checkpoint.
        for (&i, p) in self.model.partials.iter_mut() {
            p.tmp_len = pool().segs[i].header_bytes + p.offset;
        }
        Ok(())
    }

    /// INV-07 (and INV-06/INV-08) for one reservation that went from `before` to `after`: the
    /// ingest of `i` (another ingest may be in flight, counted in `before`), with `busy` ids
    /// being read.
    fn check_eviction(
        &self,
        before: &Observed,
        after: &Observed,
        i: usize,
        outcome: Got,
        busy: &[usize],
    ) -> Result<(), TestCaseError> {
        let now = self.now();
        let busy_ids = ids(busy);
        let victims: Vec<&SegmentInfo> = before
            .rows
            .values()
            .filter(|r| !after.rows.contains_key(&r.id))
            .collect();
        prop_assert!(
            after.usage.total() <= CEILING_BYTES,
            "INV-06: {:?}",
            after.usage
        );
        if victims.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = victims.iter().map(|r| r.row.name.as_str()).collect();
        prop_assert!(
            matches!(outcome, Got::Stored | Got::Receive { .. }),
            "INV-07/INV-08: {outcome:?} but evicted {names:?}"
        );
        // The ingest's own idle partial is folded into its reservation.
        let s = &pool().segs[i];
        let idle = match before.holdings.get(&s.id) {
            Some(Holding::Partial { offset }) => s.header_bytes + offset,
            _ => 0,
        };
        prop_assert!(
            before.usage.total() - idle + s.file_len > CEILING_BYTES,
            "INV-07: evicted {names:?} although {} fitted ({:?})",
            s.name,
            before.usage
        );
        let expired = |r: &SegmentInfo| r.row.expires_at_ms.is_some_and(|at| at <= now);
        let channel_pinned = |r: &SegmentInfo| r.row.channel == PINNED_CHANNEL;
        let evictable = |r: &SegmentInfo| r.pins.is_empty() && !busy_ids.contains(&r.id);
        for v in &victims {
            prop_assert!(v.pins.is_empty(), "INV-07: evicted pinned {}", v.row.name);
            prop_assert!(
                !busy_ids.contains(&v.id),
                "INV-07: evicted busy {}",
                v.row.name
            );
            prop_assert!(
                expired(v) || !channel_pinned(v),
                "INV-07: evicted unexpired channel-pinned {}",
                v.row.name
            );
        }
        // Segments that were there before and stayed (not the one just stored), as they were.
        let survivors: Vec<&SegmentInfo> = before
            .rows
            .values()
            .filter(|r| after.rows.contains_key(&r.id))
            .collect();
        if victims.iter().any(|v| !expired(v)) {
            for s in &survivors {
                prop_assert!(
                    !(expired(s) && evictable(s)),
                    "INV-07: {} evicted before expired {}",
                    names.join(","),
                    s.row.name
                );
            }
        }
        for v in victims.iter().filter(|v| !expired(v)) {
            for s in survivors
                .iter()
                .filter(|s| evictable(s) && !expired(s) && !channel_pinned(s))
            {
                prop_assert!(
                    (s.row.priority, s.row.last_used_ms) >= (v.row.priority, v.row.last_used_ms),
                    "INV-07: evicted {} (priority {}, used {}) but kept {} (priority {}, used {})",
                    v.row.name,
                    v.row.priority,
                    v.row.last_used_ms,
                    s.row.name,
                    s.row.priority,
                    s.row.last_used_ms
                );
            }
        }
        Ok(())
    }

    /// Everything the store shows must equal the model, and hold the invariants.
    fn check_all(&self, obs: &Observed) -> Result<(), TestCaseError> {
        let store = self.store();
        let model = &self.model;
        let p = pool();

        // Rows: exactly the model's, with the pool's metadata and the model's bookkeeping.
        let listed: Vec<usize> = obs
            .rows
            .keys()
            .map(|id| p.index_of(id).expect("a listed id is from the pool"))
            .collect();
        let mut want: Vec<usize> = model.stored.keys().copied().collect();
        want.sort_by_key(|&i| p.segs[i].id);
        let names = |v: &[usize]| v.iter().map(|&i| p.segs[i].name).collect::<Vec<_>>();
        prop_assert_eq!(names(&listed), names(&want), "stored segments");
        for (&i, m) in &model.stored {
            let s = &p.segs[i];
            let info = &obs.rows[&s.id];
            let row = &info.row;
            prop_assert_eq!(row.file_len, s.file_len);
            prop_assert_eq!(row.payload_len, s.body.len() as u64);
            prop_assert_eq!(row.priority, s.priority);
            prop_assert_eq!(row.channel.as_str(), s.channel);
            prop_assert_eq!(row.expires_at_ms, s.expires_at_ms);
            prop_assert_eq!(&row.source, &m.source, "source of {}", s.name);
            prop_assert_eq!(row.stored_at_ms, m.stored_at_ms, "stored_at of {}", s.name);
            prop_assert_eq!(row.last_used_ms, m.last_used_ms, "last_used of {}", s.name);
            prop_assert_eq!(
                row.propagated_at_ms,
                m.propagated_at_ms,
                "INV-13: propagated of {}",
                s.name
            );
            let pins: Vec<&str> = model
                .pins
                .get(&i)
                .map(|o| o.iter().copied().collect())
                .unwrap_or_default();
            prop_assert_eq!(&info.pins, &pins, "pins of {}", s.name);
        }

        // INV-06: usage equals the rows, the files and the model.
        let usage = obs.usage;
        prop_assert!(usage.total() <= CEILING_BYTES, "INV-06: {usage:?}");
        let listed_bytes: u64 = obs.rows.values().map(|r| r.row.file_len).sum();
        prop_assert_eq!(usage.stored_bytes, listed_bytes, "INV-06: stored vs rows");
        prop_assert_eq!(
            usage.stored_bytes,
            model.stored_bytes(),
            "INV-06: stored vs model"
        );
        prop_assert_eq!(usage.reserved_bytes, 0, "INV-06: nothing in flight");
        prop_assert_eq!(
            usage.partial_bytes,
            model.partial_bytes_except(&[]),
            "INV-06: partial bytes"
        );

        // Files: one `.seg` per row, byte-identical to the signed segment (INV-04: it verifies).
        let layout = store.layout();
        let mut file_bytes = 0;
        let mut files = BTreeSet::new();
        // The fan-out directories the pool's ids fall in (listing all 256 at every step is slow
        // in SimFs; a file anywhere else would be an orphan, which every reopen would report).
        let dirs: BTreeSet<PathBuf> = p.segs.iter().map(|s| layout.fanout(&s.id)).collect();
        for dir in dirs {
            for entry in self.fs.list_dir(&dir).expect("list fan-out dir") {
                prop_assert_eq!(entry.kind, EntryKind::File);
                let path = dir.join(&entry.name);
                let i = p
                    .segs
                    .iter()
                    .position(|s| layout.segment_file(&s.id) == path);
                let Some(i) = i else {
                    return Err(TestCaseError::fail(format!(
                        "stray file {}",
                        path.display()
                    )));
                };
                file_bytes += entry.len;
                files.insert(i);
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(
                    &mut self.fs.open_read(&path).expect("open segment file"),
                    &mut bytes,
                )
                .expect("read segment file");
                prop_assert!(
                    bytes == p.segs[i].file,
                    "INV-04: file of {}",
                    p.segs[i].name
                );
                store::segfile::verify_seg_file(&bytes[..], &p.trusted, NOW_MS, 0)
                    .expect("INV-04: a stored file verifies");
            }
        }
        prop_assert_eq!(
            files.into_iter().collect::<Vec<_>>(),
            model.stored.keys().copied().collect::<Vec<_>>(),
            "one file per stored segment"
        );
        prop_assert_eq!(file_bytes, usage.stored_bytes, "INV-06: stored vs files");

        // Temp files: exactly the partials, nothing else.
        let tmp = self.fs.list_dir(&layout.tmp()).expect("list tmp");
        prop_assert_eq!(tmp.len(), model.partials.len(), "temp files: {:?}", tmp);
        for (&i, part) in &model.partials {
            let len = self
                .fs
                .file_len(&layout.tmp_file(&p.segs[i].id))
                .expect("stat temp file");
            prop_assert_eq!(len, Some(part.tmp_len), "temp file of {}", p.segs[i].name);
        }
        prop_assert!(store.quarantined().expect("quarantined").is_empty());
        prop_assert!(
            self.fs
                .list_dir(&layout.quarantine())
                .expect("list quarantine")
                .is_empty()
        );

        // What the store answers for every id; partials are never readable nor exported.
        for (i, s) in p.segs.iter().enumerate() {
            let holding = store.holding(&s.id).expect("holding");
            prop_assert_eq!(holding, model.holding(i), "holding of {}", s.name);
            if matches!(holding, Holding::Partial { .. }) {
                prop_assert!(matches!(
                    store.open_for_read(&s.id, 0),
                    Err(StoreError::NotFound(_))
                ));
                prop_assert!(matches!(
                    store.export_to_dir(&s.id, self.export_dir.path(), self.now()),
                    Err(store::ExportError::Store(StoreError::NotFound(_)))
                ));
            }
        }
        prop_assert!(
            std::fs::read_dir(self.export_dir.path())
                .expect("export dir")
                .next()
                .is_none(),
            "INV-04: nothing exported"
        );
        Ok(())
    }
}

/// What must hold from one observation to the next, whatever happened in between (an unpin
/// aside, nothing can release a pin; no segment is evicted and stored again within one step):
/// - INV-07: a segment pinned and stored before is stored after;
/// - INV-13: a segment marked propagated before keeps its mark and its time.
fn check_transition(before: &Observed, after: &Observed, op: &Op) -> Result<(), TestCaseError> {
    for r in before.rows.values() {
        let kept = after.rows.get(&r.id);
        if !r.pins.is_empty() {
            prop_assert!(
                kept.is_some(),
                "INV-07: pinned {} ({:?}) gone after {op:?}",
                r.row.name,
                r.pins
            );
        }
        if let (Some(at), Some(kept)) = (r.row.propagated_at_ms, kept) {
            prop_assert_eq!(
                kept.row.propagated_at_ms,
                Some(at),
                "INV-13: propagated mark of {} changed by {:?}",
                &r.row.name,
                op
            );
        }
    }
    Ok(())
}

/// Where failing cases are saved, to be replayed first by every later run; nowhere while a
/// mutant is active (a case that fails then is the mutant's, not a regression of the code).
fn persistence() -> Option<Box<dyn proptest::test_runner::FailurePersistence>> {
    if std::env::var_os(store::mutants::MUTANT_ENV).is_some_and(|m| !m.is_empty()) {
        return None;
    }
    // `SourceParallel` (the default) looks for a `lib.rs` above this file, finds none and
    // falls back to `tests/model.proptest-regressions`; name the file instead. Relative to the
    // package root, where `cargo test` runs integration tests.
    Some(Box::new(FileFailurePersistence::Direct(
        "tests/proptest-regressions/model.txt",
    )))
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES_DEFAULT)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: persistence(),
        ..ProptestConfig::default()
    })]

    #[test]
    fn inv_04_inv_06_inv_07_inv_10_store_matches_model(
        tombstones_max in prop_oneof![Just(2usize), Just(100_000usize)],
        ops in proptest::collection::vec(op_strategy(), 1..=OPS_MAX),
    ) {
        let mut h = Harness::new(tombstones_max);
        for (n, op) in ops.iter().enumerate() {
            h.run(op).map_err(|e| {
                TestCaseError::fail(format!("step {n} {op:?}: {e}"))
            })?;
        }
    }
}

/// Sequences the property test found, kept as fixed cases: a proptest seed replays only the
/// generator it was recorded with, these survive any change to the strategies.
#[test]
fn inv_10_regressions_store_matches_model() {
    let cases: &[&[Op]] = &[
        // An import of a segment that a peer's interrupted transfer left as a checkpointed
        // partial resumed that partial, then copied the file's payload from its first byte after
        // the checkpoint: `PayloadTooLong`, and the partial was discarded.
        &[
            Op::PeerPartial {
                seg: Seg(7),
                quarters: 1,
                overrun: false,
            },
            Op::Import {
                seg: Seg(7),
                times: 1,
            },
        ],
        &[
            Op::PeerPartial {
                seg: Seg(2),
                quarters: 3,
                overrun: true,
            },
            Op::Reopen,
            Op::ImportWhileReading {
                seg: Seg(2),
                reading: Seg(0),
            },
        ],
    ];
    for ops in cases {
        let mut h = Harness::new(100_000);
        for (n, op) in ops.iter().enumerate() {
            if let Err(e) = h.run(op) {
                panic!("{ops:?}: step {n} {op:?}: {e}");
            }
        }
    }
}
