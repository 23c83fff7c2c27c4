//! Model-based test of the ledger and the decision core: random operations (ingests from
//! random sources, starts, random outcomes, operator requeues and purges, pin ageing, graceful
//! and crash restarts that reopen the database, wall-clock jumps) run against one real node and
//! against a small reference model; after every step the ledger, the store's pins and
//! propagation marks must agree with the model.
//!
//! INV-11 (jobs created with the segment, one per known peer but the source), INV-12 (bounded
//! attempts, dead letters keep attempts and error), INV-13 (propagated exactly when the
//! condition holds, once, never by dead-lettering), INV-14 (attempts, due times and dead letters
//! survive restarts; due times clamped on load), INV-15 (a catch-up delivery completes a
//! pending job, in flight or not, or a dead letter, purged or not, and the condition is checked
//! as for any delivery), INV-26 (the job counts equal the ledger's jobs by state, and the totals
//! satisfy `attempts = deliveries + failures + ignored + refunded + in flight` after every
//! step).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use relay::core::Counts;
use relay::harness::segments::Publisher;
use relay::ledger::{Applied, OutOfBand, OutcomeIn, Purge, Requeue, Start};
use relay::tables::JobState;
use relay::{JobKey, NodeId, Outcome, Relay, RelayConfig};
use store::fs::Fs;
use store::fs::sim::SimFs;
use store::manifest::SuccessCondition;
use store::{IngestOptions, IngestOutcome, SegmentId, Store, StoreConfig};

const PEERS: [&str; 3] = ["a", "b", "c"];
const SEGS: usize = 4;

fn cfg() -> RelayConfig {
    let mut c = RelayConfig::new(peer("n0"), PEERS.map(peer));
    c.attempts_max = 3;
    c.store_full_attempts_max = 4;
    c.busy_retries_max = 2;
    c.backoff_base_ms = 100;
    c.backoff_max_ms = 1_600;
    c.jitter_percent = 50;
    c.store_full_backoff_min_ms = 400;
    c.busy_retry_ms = 50;
    c.per_peer_concurrency_max = 1;
    c.global_concurrency_max = 2;
    c.dead_letter_pin_max_age_ms = 5_000;
    c
}

#[derive(Debug, Clone)]
enum Op {
    Ingest { seg: usize, source: usize },
    Advance { ms: u64 },
    Start,
    Outcome { pick: usize, kind: u8 },
    Requeue { pick: usize, twice: bool },
    Purge { pick: usize },
    CatchUp { pick: usize },
    AgePins,
    Restart { crash: bool },
    Jump { delta_ms: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..SEGS, 0..4usize).prop_map(|(seg, source)| Op::Ingest { seg, source }),
        4 => (0..2_500u64).prop_map(|ms| Op::Advance { ms }),
        5 => Just(Op::Start),
        8 => (0..8usize, 0..8u8).prop_map(|(pick, kind)| Op::Outcome { pick, kind }),
        1 => (0..16usize, any::<bool>()).prop_map(|(pick, twice)| Op::Requeue { pick, twice }),
        1 => (0..16usize).prop_map(|pick| Op::Purge { pick }),
        2 => (0..16usize).prop_map(|pick| Op::CatchUp { pick }),
        1 => Just(Op::AgePins),
        1 => any::<bool>().prop_map(|crash| Op::Restart { crash }),
        1 => (-60_000i64..60_000).prop_map(|delta_ms| Op::Jump { delta_ms }),
    ]
}

fn outcome_of(kind: u8) -> Outcome {
    match kind {
        0 => Outcome::Delivered,
        1 => Outcome::Have,
        2 => Outcome::Refused("bad signature".into()),
        3 => Outcome::Busy,
        4 => Outcome::StoreFull("no room".into()),
        5 => Outcome::Unreachable("no route".into()),
        6 => Outcome::TimedOut("stalled".into()),
        _ => Outcome::Failed("eio".into()),
    }
}

/// The reference model of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MJob {
    state: JobState,
    counts: Counts,
    /// Bounds the scheduler's due time must lie in while pending and waiting.
    due_lo: u64,
    due_hi: u64,
    /// Bounds of the due time stored in the ledger row (the scheduler's may be clamped).
    row_lo: u64,
    row_hi: u64,
    purged: bool,
    /// Dead letter still pinning its segment (pin not aged out).
    dead_pin_until: Option<u64>,
    last_error_kind: Option<String>,
}

#[derive(Debug, Clone)]
struct MSeg {
    condition: SuccessCondition,
    source_is_peer: bool,
    propagated: bool,
}

struct World {
    fs: SimFs,
    node: Option<(Store, Relay)>,
    elapsed_ms: u64,
    offset_ms: i64,
    rng: ChaCha8Rng,
    segs: Vec<(SegmentId, Vec<u8>, SuccessCondition)>,
    jobs: BTreeMap<JobKey, MJob>,
    mseg: BTreeMap<SegmentId, MSeg>,
    in_flight: BTreeSet<JobKey>,
}

fn open(fs: &SimFs, publisher: &Publisher, now: u64) -> (Store, Relay) {
    let mut store_cfg = StoreConfig::new("/data", 64 << 20, publisher.trusted());
    store_cfg.min_free_bytes = 0;
    let arc: Arc<dyn Fs> = Arc::new(fs.clone());
    let (store, _) = Store::open(store_cfg, arc, now).unwrap();
    let relay = Relay::open(store.clone(), cfg(), now).unwrap();
    (store, relay)
}

impl World {
    fn store(&self) -> &Store {
        &self.node.as_ref().unwrap().0
    }

    fn relay(&self) -> &Relay {
        &self.node.as_ref().unwrap().1
    }

    fn now(&self) -> u64 {
        (T0 as i64 + self.elapsed_ms as i64 + self.offset_ms) as u64
    }

    /// The model's success conditions, written from the design's words.
    fn refresh_propagation(&mut self, seg: SegmentId) {
        let m = self.mseg.get_mut(&seg).unwrap();
        if m.propagated {
            return;
        }
        let jobs: Vec<&MJob> = self
            .jobs
            .iter()
            .filter(|(k, _)| k.seg == seg)
            .map(|(_, j)| j)
            .collect();
        let holds = if jobs.is_empty() {
            m.source_is_peer
        } else {
            let live: Vec<&&MJob> = jobs
                .iter()
                .filter(|j| j.state != JobState::Cancelled)
                .collect();
            match m.condition {
                SuccessCondition::AllPeers => {
                    (!live.is_empty() || m.source_is_peer)
                        && live.iter().all(|j| j.state == JobState::Delivered)
                }
                SuccessCondition::OnePeer => jobs.iter().any(|j| j.state == JobState::Delivered),
            }
        };
        if holds {
            m.propagated = true;
            if m.condition == SuccessCondition::OnePeer {
                for (k, j) in self.jobs.iter_mut().filter(|(k, _)| k.seg == seg) {
                    if j.state == JobState::Pending || (j.state == JobState::Dead && !j.purged) {
                        j.state = JobState::Cancelled;
                        j.dead_pin_until = None;
                        let _ = k;
                    }
                }
            }
        }
    }

    fn step(&mut self, op: &Op, publisher: &Publisher) {
        let c = cfg();
        match op {
            Op::Ingest { seg, source } => {
                let (id, file, condition) = self.segs[*seg].clone();
                let opts = match source {
                    0 => IngestOptions::import(),
                    p => IngestOptions::from_peer(PEERS[p - 1]),
                };
                let now = self.now();
                let out = self
                    .relay()
                    .ingest_reader(file.as_slice(), &opts, now)
                    .unwrap();
                match out {
                    IngestOutcome::Stored(s) => {
                        assert!(!self.mseg.contains_key(&id), "INV-10: stored twice");
                        assert_eq!(s.id, id);
                        self.mseg.insert(
                            id,
                            MSeg {
                                condition,
                                source_is_peer: *source > 0,
                                propagated: false,
                            },
                        );
                        for (i, p) in PEERS.iter().enumerate() {
                            if i + 1 == *source {
                                continue;
                            }
                            self.jobs.insert(
                                JobKey {
                                    seg: id,
                                    peer: peer(p),
                                },
                                MJob {
                                    state: JobState::Pending,
                                    counts: Counts::default(),
                                    due_lo: now,
                                    due_hi: now,
                                    row_lo: now,
                                    row_hi: now,
                                    purged: false,
                                    dead_pin_until: None,
                                    last_error_kind: None,
                                },
                            );
                        }
                        self.refresh_propagation(id);
                    }
                    IngestOutcome::AlreadyHave { .. } => {
                        assert!(self.mseg.contains_key(&id));
                    }
                }
            }
            Op::Advance { ms } => self.elapsed_ms += ms,
            Op::Jump { delta_ms } => {
                // Keep the clock after the segments' creation time (minus the allowed skew).
                if self.now() as i64 + delta_ms >= T0 as i64 {
                    self.offset_ms += delta_ms;
                    let now = self.now();
                    self.relay().reclamp(now);
                    for j in self.jobs.values_mut() {
                        if j.state == JobState::Pending {
                            j.due_lo = j.due_lo.clamp(now, now + c.backoff_max_ms);
                            j.due_hi = j.due_hi.clamp(now, now + c.backoff_max_ms);
                        }
                    }
                }
            }
            Op::Start => {
                let now = self.now();
                let keys = self.relay().pick(now, usize::MAX);
                for k in &keys {
                    let j = &self.jobs[k];
                    assert_eq!(j.state, JobState::Pending, "picked a non-pending job");
                    assert!(!self.in_flight.contains(k), "picked twice");
                    assert!(j.due_lo <= now, "picked before due: {j:?} now {now}");
                }
                let mut per_peer: BTreeMap<&NodeId, usize> = BTreeMap::new();
                for k in self.in_flight.iter().chain(&keys) {
                    *per_peer.entry(&k.peer).or_default() += 1;
                }
                assert!(per_peer.values().all(|n| *n <= c.per_peer_concurrency_max));
                assert!(self.in_flight.len() + keys.len() <= c.global_concurrency_max);
                for start in self.relay().record_starts_blocking(keys, now).unwrap() {
                    match start {
                        Start::Started { key, .. } => {
                            let j = self.jobs.get_mut(&key).unwrap();
                            assert!(j.counts.attempts < c.attempts_max, "INV-12");
                            j.counts.attempts += 1;
                            let d = relay::core::backoff_ms(&c, j.counts.attempts);
                            j.due_lo = now + d;
                            j.due_hi = now + d;
                            j.row_lo = j.due_lo;
                            j.row_hi = j.due_hi;
                            self.in_flight.insert(key);
                        }
                        Start::Skipped { key, why } => {
                            let j = self.jobs.get_mut(&key).unwrap();
                            assert_eq!(why, "attempts exhausted");
                            assert_eq!(j.counts.attempts, c.attempts_max);
                            j.state = JobState::Dead;
                            j.dead_pin_until = Some(now + c.dead_letter_pin_max_age_ms);
                            j.last_error_kind = Some("interrupted".into());
                        }
                    }
                }
            }
            Op::Outcome { pick, kind } => {
                let Some(key) = self
                    .in_flight
                    .iter()
                    .nth(*pick % self.in_flight.len().max(1))
                    .cloned()
                else {
                    return;
                };
                self.in_flight.remove(&key);
                let outcome = outcome_of(*kind);
                let now = self.now();
                let jitter_sample = self.rng.random();
                let applied = self
                    .relay()
                    .apply_outcomes_blocking(
                        vec![OutcomeIn {
                            key: key.clone(),
                            outcome: outcome.clone(),
                            jitter_sample,
                        }],
                        now,
                    )
                    .unwrap();
                let j = self.jobs.get_mut(&key).unwrap();
                if j.state != JobState::Pending {
                    assert!(matches!(applied[0], Applied::Ignored { .. }), "{applied:?}");
                    return;
                }
                let mut n = j.counts;
                let fail = |n: &mut Counts, j: &mut MJob, kind: &str| {
                    n.busy_streak = 0;
                    if n.attempts >= c.attempts_max {
                        j.state = JobState::Dead;
                    } else {
                        let d = relay::core::backoff_ms(&c, n.attempts.max(1));
                        j.due_lo = now + d / 2;
                        j.due_hi = now + d;
                        j.row_lo = j.due_lo;
                        j.row_hi = j.due_hi;
                    }
                    j.last_error_kind = Some(kind.to_owned());
                };
                match &outcome {
                    Outcome::Delivered | Outcome::Have => j.state = JobState::Delivered,
                    Outcome::Refused(_) => {
                        j.state = JobState::Refused;
                        j.last_error_kind = Some("refused".into());
                    }
                    Outcome::Busy if n.busy_streak < c.busy_retries_max => {
                        n.attempts -= 1;
                        n.busy_streak += 1;
                        j.due_lo = now + c.busy_retry_ms / 2;
                        j.due_hi = now + c.busy_retry_ms;
                        j.row_lo = j.due_lo;
                        j.row_hi = j.due_hi;
                        j.last_error_kind = Some("busy".into());
                    }
                    Outcome::StoreFull(_) => {
                        n.attempts -= 1;
                        n.store_full_attempts += 1;
                        n.busy_streak = 0;
                        j.last_error_kind = Some("store_full".into());
                        if n.store_full_attempts >= c.store_full_attempts_max {
                            j.state = JobState::Dead;
                        } else {
                            let d = relay::core::backoff_ms(&c, n.store_full_attempts)
                                .max(c.store_full_backoff_min_ms);
                            j.due_lo = now + d / 2;
                            j.due_hi = now + d;
                            j.row_lo = j.due_lo;
                            j.row_hi = j.due_hi;
                        }
                    }
                    other => fail(&mut n, j, other.kind()),
                }
                j.counts = n;
                if j.state == JobState::Dead {
                    j.dead_pin_until = Some(now + c.dead_letter_pin_max_age_ms);
                }
                self.refresh_propagation(key.seg);
            }
            Op::Requeue { pick, twice } => {
                let Some(key) = self
                    .jobs
                    .keys()
                    .nth(*pick % self.jobs.len().max(1))
                    .cloned()
                else {
                    return;
                };
                let now = self.now();
                let got = self.relay().requeue_blocking(&key, now).unwrap();
                let j = self.jobs.get_mut(&key).unwrap();
                let want = match (j.state, j.purged) {
                    (JobState::Dead, true) => Requeue::Purged,
                    (JobState::Dead, false) => Requeue::Requeued,
                    (s, _) => Requeue::NotDead(s),
                };
                assert_eq!(got, want);
                if want == Requeue::Requeued {
                    j.state = JobState::Pending;
                    j.counts = Counts::default();
                    j.due_lo = now;
                    j.due_hi = now;
                    j.row_lo = j.due_lo;
                    j.row_hi = j.due_hi;
                    j.dead_pin_until = None;
                    if *twice {
                        let again = self.relay().requeue_blocking(&key, now).unwrap();
                        assert_eq!(again, Requeue::NotDead(JobState::Pending), "INV-22");
                    }
                }
            }
            Op::Purge { pick } => {
                let Some(key) = self
                    .jobs
                    .keys()
                    .nth(*pick % self.jobs.len().max(1))
                    .cloned()
                else {
                    return;
                };
                let now = self.now();
                let got = self.relay().purge_blocking(&key, now).unwrap();
                let j = self.jobs.get_mut(&key).unwrap();
                if j.state == JobState::Dead && !j.purged {
                    assert_eq!(got, Purge::Purged);
                    j.purged = true;
                    j.dead_pin_until = None;
                } else {
                    assert_eq!(got, Purge::NotDead(j.state));
                }
            }
            Op::CatchUp { pick } => {
                // The peer pulled the segment from this node (INV-15); a third of the time the
                // pick misses every job (a segment this node has no job for with that peer).
                let keys: Vec<JobKey> = self.jobs.keys().cloned().collect();
                let key = match keys.get(*pick % (keys.len() + keys.len() / 2).max(1)) {
                    Some(k) => k.clone(),
                    None => JobKey {
                        seg: self.segs[*pick % SEGS].0,
                        peer: peer("stranger"),
                    },
                };
                let now = self.now();
                let got = self
                    .relay()
                    .delivered_out_of_band_blocking(key.seg, &key.peer, now)
                    .unwrap();
                let Some(j) = self.jobs.get_mut(&key) else {
                    assert_eq!(got, OutOfBand::NoJob);
                    return;
                };
                match j.state {
                    JobState::Pending | JobState::Dead => {
                        assert_eq!(
                            got,
                            OutOfBand::Completed {
                                was: j.state,
                                purged: j.purged
                            }
                        );
                        j.state = JobState::Delivered;
                        j.purged = false;
                        j.dead_pin_until = None;
                        // A transfer in flight stays in flight; its outcome will be ignored.
                        self.refresh_propagation(key.seg);
                    }
                    s => assert_eq!(got, OutOfBand::Ended(s)),
                }
                let again = self
                    .relay()
                    .delivered_out_of_band_blocking(key.seg, &key.peer, now)
                    .unwrap();
                assert_eq!(again, OutOfBand::Ended(self.jobs[&key].state), "idempotent");
            }
            Op::AgePins => {
                let now = self.now();
                self.relay().age_dead_pins_blocking(now).unwrap();
                for j in self.jobs.values_mut() {
                    if j.dead_pin_until.is_some_and(|t| t <= now) {
                        j.dead_pin_until = None;
                    }
                }
            }
            Op::Restart { crash } => {
                let now = self.now();
                let before = self.relay().all_jobs().unwrap();
                let dead_before = self.relay().dead_letters().unwrap();
                let in_flight: Vec<JobKey> =
                    std::mem::take(&mut self.in_flight).into_iter().collect();
                if *crash {
                    let image = self.fs.crash_image();
                    self.fs = image;
                } else {
                    self.relay()
                        .refund_blocking(in_flight.clone(), now)
                        .unwrap();
                    for k in &in_flight {
                        let j = self.jobs.get_mut(k).unwrap();
                        if j.state == JobState::Pending {
                            j.counts.attempts -= 1;
                            j.due_lo = now;
                            j.due_hi = now;
                            j.row_lo = j.due_lo;
                            j.row_hi = j.due_hi;
                        }
                    }
                    self.store().close();
                }
                // Every handle on the old database goes before it is opened again.
                self.node = None;
                self.node = Some(open(&self.fs, publisher, now));
                // INV-14: everything but refunds survives as it was.
                let after = self.relay().all_jobs().unwrap();
                assert_eq!(before.len(), after.len());
                for ((kb, rb), (ka, ra)) in before.iter().zip(&after) {
                    assert_eq!(kb, ka);
                    if *crash || !in_flight.contains(kb) {
                        assert_eq!(rb, ra, "INV-14");
                    }
                }
                assert_eq!(dead_before, self.relay().dead_letters().unwrap(), "INV-14");
                for j in self.jobs.values_mut() {
                    if j.state == JobState::Pending {
                        // Load clamps the stored due time.
                        j.due_lo = j.row_lo.clamp(now, now + cfg().backoff_max_ms);
                        j.due_hi = j.row_hi.clamp(now, now + cfg().backoff_max_ms);
                    }
                }
            }
        }
    }

    fn check(&self) {
        let c = cfg();
        let rows: BTreeMap<JobKey, relay::tables::JobRow> =
            self.relay().all_jobs().unwrap().into_iter().collect();
        assert_eq!(
            rows.keys().collect::<Vec<_>>(),
            self.jobs.keys().collect::<Vec<_>>(),
            "INV-11: the job set"
        );
        for (k, m) in &self.jobs {
            let r = &rows[k];
            assert_eq!(r.state, m.state, "{k:?} {r:?} {m:?}");
            assert_eq!(r.counts, m.counts, "{k:?} {r:?} {m:?}");
            assert_eq!(r.purged, m.purged, "{k:?}");
            if m.state == JobState::Pending {
                assert!(
                    r.due_ms >= m.row_lo && r.due_ms <= m.row_hi,
                    "{k:?} {r:?} {m:?}"
                );
            }
            assert!(r.counts.attempts <= c.attempts_max, "INV-12");
            assert!(
                r.counts.store_full_attempts <= c.store_full_attempts_max,
                "INV-12"
            );
            if let Some(kind) = &m.last_error_kind {
                let e = r.last_error.as_deref().unwrap_or("");
                assert!(e.starts_with(kind.as_str()), "{k:?}: {e} vs {kind}");
            }
        }
        // Dead letters: exactly the unpurged dead jobs, with their attempts and error (INV-12).
        let dead = self.relay().dead_letters().unwrap();
        let want: Vec<&JobKey> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.state == JobState::Dead && !j.purged)
            .map(|(k, _)| k)
            .collect();
        assert_eq!(dead.iter().map(|d| &d.key).collect::<Vec<_>>(), want);
        for d in &dead {
            let m = &self.jobs[&d.key];
            assert_eq!(d.attempts, m.counts.attempts);
            assert!(!d.last_error.is_empty());
        }
        // Scheduler: exactly the pending jobs, due within the model's bounds.
        let sched = self.relay().scheduled();
        let pending: Vec<&JobKey> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.state == JobState::Pending)
            .map(|(k, _)| k)
            .collect();
        assert_eq!(sched.iter().map(|(k, _, _)| k).collect::<Vec<_>>(), pending);
        for (k, view, in_flight) in &sched {
            assert_eq!(*in_flight, self.in_flight.contains(k));
            let m = &self.jobs[k];
            if !in_flight {
                assert!(
                    view.due_ms >= m.due_lo && view.due_ms <= m.due_hi,
                    "{k:?}: due {} not in [{}, {}]",
                    view.due_ms,
                    m.due_lo,
                    m.due_hi
                );
            }
        }
        // INV-26: job counts by state equal the ledger's; the totals reconcile.
        let counters = self.relay().counters().unwrap();
        let count = |f: &dyn Fn(&MJob) -> bool| self.jobs.values().filter(|j| f(j)).count() as u64;
        let pending_in_flight = self
            .jobs
            .iter()
            .filter(|(k, j)| j.state == JobState::Pending && self.in_flight.contains(k))
            .count() as u64;
        let want = relay::JobCounts {
            pending: count(&|j| j.state == JobState::Pending) - pending_in_flight,
            in_flight: pending_in_flight,
            delivered: count(&|j| j.state == JobState::Delivered),
            refused: count(&|j| j.state == JobState::Refused),
            cancelled: count(&|j| j.state == JobState::Cancelled),
            dead: count(&|j| j.state == JobState::Dead && !j.purged),
            purged: count(&|j| j.state == JobState::Dead && j.purged),
        };
        assert_eq!(counters.jobs, want, "INV-26: jobs by state");
        assert_eq!(counters.transfers_in_flight, self.in_flight.len() as u64);
        assert!(counters.reconciles(), "INV-26: {counters:?}");
        // Pins and propagation marks, per stored segment.
        for info in self.store().list().unwrap() {
            let want: Vec<String> = self
                .jobs
                .iter()
                .filter(|(k, j)| {
                    k.seg == info.id && (j.state == JobState::Pending || j.dead_pin_until.is_some())
                })
                .map(|(k, _)| relay::peer::pin_owner(&k.peer))
                .collect();
            assert_eq!(info.pins, want, "pins of {}", info.id.short());
            let m = &self.mseg[&info.id];
            assert_eq!(
                info.row.propagated_at_ms.is_some(),
                m.propagated,
                "INV-13: {} {m:?}",
                info.id.short()
            );
            let status = self.relay().status(&info.id).unwrap().unwrap();
            assert_eq!(
                status.propagated_at_ms, info.row.propagated_at_ms,
                "marked once"
            );
        }
    }
}

fn run(ops: &[Op], seed: u64) {
    let publisher = Publisher::from_seed(21);
    let fs = SimFs::new();
    let (store, relay) = open(&fs, &publisher, T0);
    let segs = (0..SEGS)
        .map(|i| {
            let condition = if i % 2 == 0 {
                SuccessCondition::AllPeers
            } else {
                SuccessCondition::OnePeer
            };
            let (id, file) = publisher.segment(&spec(&format!("s{i}")).condition(condition));
            (id, file, condition)
        })
        .collect();
    let mut w = World {
        fs,
        node: Some((store, relay)),
        elapsed_ms: 0,
        offset_ms: 0,
        rng: ChaCha8Rng::seed_from_u64(seed),
        segs,
        jobs: BTreeMap::new(),
        mseg: BTreeMap::new(),
        in_flight: BTreeSet::new(),
    };
    for op in ops {
        let before: BTreeMap<SegmentId, bool> =
            w.mseg.iter().map(|(k, m)| (*k, m.propagated)).collect();
        w.step(op, &publisher);
        w.check();
        for (k, was) in before {
            assert!(!was || w.mseg[&k].propagated, "INV-13: never un-marked");
        }
    }
}

/// The default place for failing cases, replayed first by every later run; nowhere while a
/// mutant is active (a case that fails then is the mutant's, not a regression of the code).
fn persistence() -> Option<Box<dyn proptest::test_runner::FailurePersistence>> {
    match std::env::var_os(store::mutants::MUTANT_ENV).is_some_and(|m| !m.is_empty()) {
        true => None,
        false => ProptestConfig::default().failure_persistence,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64),
        failure_persistence: persistence(),
        ..ProptestConfig::default()
    })]

    #[test]
    fn inv_11_inv_12_inv_13_inv_14_ledger_and_core_match_the_model(
        ops in prop::collection::vec(op(), 1..120),
        seed in any::<u64>(),
    ) {
        run(&ops, seed);
    }
}

#[test]
fn inv_12_dead_letter_after_max_attempts() {
    use Op::*;
    let mut ops = vec![Ingest { seg: 0, source: 1 }];
    for _ in 0..3 {
        ops.extend([
            Advance { ms: 2_000 },
            Start,
            Outcome { pick: 0, kind: 5 },
            Outcome { pick: 0, kind: 5 },
        ]);
    }
    ops.extend([
        Advance { ms: 6_000 },
        AgePins,
        Requeue {
            pick: 0,
            twice: true,
        },
    ]);
    run(&ops, 1);
}

#[test]
fn inv_15_catch_up_completes_a_dead_letter_and_a_purged_one_then_all_peers_holds() {
    use Op::*;
    // Segment 0 (all_peers) from peer a: jobs for b and c, both dead after three failures.
    let mut ops = vec![Ingest { seg: 0, source: 1 }];
    for _ in 0..3 {
        ops.extend([
            Advance { ms: 2_000 },
            Start,
            Outcome { pick: 0, kind: 5 },
            Outcome { pick: 0, kind: 6 },
        ]);
    }
    ops.extend([
        Purge { pick: 1 },
        CatchUp { pick: 0 },
        AgePins,
        CatchUp { pick: 1 },
        Restart { crash: true },
        CatchUp { pick: 1 },
    ]);
    run(&ops, 2);
}

#[test]
fn inv_15_catch_up_while_in_flight_one_peer_cancels_the_rest_outcomes_ignored() {
    use Op::*;
    // Segment 1 (one_peer) imported: jobs a, b, c; a and b start (global cap 2).
    let ops = vec![
        Ingest { seg: 1, source: 0 },
        Start,
        CatchUp { pick: 0 },
        Outcome { pick: 0, kind: 0 },
        Outcome { pick: 0, kind: 5 },
        Start,
        Restart { crash: false },
    ];
    run(&ops, 3);
}
