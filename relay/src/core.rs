//! The decision core: what is due, what an outcome does to a job, when a condition holds.
//!
//! **Architecture invariant: nothing here does I/O, reads a clock or draws randomness.** Time
//! comes in as `now_ms` (wall-clock UTC milliseconds) and randomness as a `jitter_sample` the
//! caller drew from its seeded RNG, so every function is deterministic and can be driven by a
//! model test or a discrete-event simulator. The ledger ([`crate::ledger`]) applies these
//! decisions inside its transactions; the executor and the harness only move data in and out.
//!
//! Guarantees (tested here and in `tests/model.rs`):
//! - a retry delay is within `[d·(1 − jitter_percent/100), d]` where
//!   `d = min(backoff_max_ms, backoff_base_ms · 2^(n−1))` (store-full: `d` is at least
//!   `store_full_backoff_min_ms`); never above `backoff_max_ms`;
//! - counted attempts never exceed `attempts_max`, store-full answers never exceed
//!   `store_full_attempts_max` (INV-12);
//! - the scheduler never has more than `per_peer_concurrency_max` transfers in flight to a peer
//!   nor `global_concurrency_max` in total, and starts ready jobs by priority (higher first),
//!   then due time, then segment id, then peer id.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use store::SegmentId;
use store::manifest::SuccessCondition;

use crate::limits::{BACKOFF_EXPONENT_MAX, ERROR_BYTES_MAX, RelayConfig};
use crate::peer::NodeId;

/// What one transfer attempt ended with, as a transport reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The peer stored the segment durably and acknowledged it.
    Delivered,
    /// The peer already holds it (or evicted it before): counts as delivered.
    Have,
    /// A permanent refusal (untrusted publisher, bad signature, expired, too large for that
    /// peer): the job ends `refused` and owes nothing.
    Refused(String),
    /// The peer is receiving the same segment from another peer: retry soon, not counted.
    Busy,
    /// The peer's store cannot make room: retried with a longer floor and its own bound.
    StoreFull(String),
    /// No connection to the peer.
    Unreachable(String),
    /// The transfer stalled or took too long.
    TimedOut(String),
    /// Any other failure of this attempt (the peer's disk, a protocol error, our own read).
    Failed(String),
}

impl Outcome {
    /// Short stable name of the outcome kind, for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Have => "have",
            Outcome::Refused(_) => "refused",
            Outcome::Busy => "busy",
            Outcome::StoreFull(_) => "store_full",
            Outcome::Unreachable(_) => "unreachable",
            Outcome::TimedOut(_) => "timed_out",
            Outcome::Failed(_) => "failed",
        }
    }

    /// The error text recorded for a failure (`kind: detail`).
    pub fn error_text(&self) -> String {
        match self {
            Outcome::Delivered | Outcome::Have | Outcome::Busy => self.kind().to_owned(),
            Outcome::Refused(d)
            | Outcome::StoreFull(d)
            | Outcome::Unreachable(d)
            | Outcome::TimedOut(d)
            | Outcome::Failed(d) => bounded_error(&format!("{}: {d}", self.kind())),
        }
    }
}

/// Cuts an error text to [`ERROR_BYTES_MAX`] bytes at a character boundary.
pub fn bounded_error(text: &str) -> String {
    if text.len() <= ERROR_BYTES_MAX {
        return text.to_owned();
    }
    let mut end = ERROR_BYTES_MAX - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The counters of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Attempts counted against `attempts_max`: started attempts, minus those refunded (graceful
    /// shutdown, busy answers, store-full answers, which have their own counter).
    pub attempts: u32,
    /// "Store full" answers, counted against `store_full_attempts_max`.
    pub store_full_attempts: u32,
    /// Consecutive busy answers (reset by any other outcome).
    pub busy_streak: u32,
}

/// What an outcome does to a pending job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delivered (`have` = the peer already held it).
    Delivered { have: bool },
    /// Terminal refusal; owes nothing.
    Refused { reason: String },
    /// Try again at `due_ms` (`delay_ms` after now).
    Retry {
        counts: Counts,
        due_ms: u64,
        delay_ms: u64,
        error: String,
    },
    /// Attempts exhausted: a dead letter.
    Dead { counts: Counts, error: String },
}

/// `min(backoff_max_ms, backoff_base_ms · 2^(n−1))` for the n-th retry (n ≥ 1), before jitter.
pub fn backoff_ms(cfg: &RelayConfig, n: u32) -> u64 {
    let exp = n.saturating_sub(1).min(BACKOFF_EXPONENT_MAX);
    cfg.backoff_base_ms
        .saturating_mul(1u64 << exp)
        .min(cfg.backoff_max_ms)
}

/// The delay before the n-th retry after a "store full" answer, before jitter: the ordinary
/// backoff raised to `store_full_backoff_min_ms`, still capped by `backoff_max_ms`.
pub fn store_full_backoff_ms(cfg: &RelayConfig, n: u32) -> u64 {
    backoff_ms(cfg, n)
        .max(cfg.store_full_backoff_min_ms)
        .min(cfg.backoff_max_ms)
}

/// Applies jitter to `delay_ms`: a uniform draw (from `sample`) in
/// `[delay − delay·jitter_percent/100, delay]`. Jitter only shortens, so bounds on `delay` hold
/// for the result, and synchronised retries of many jobs spread out.
pub fn jittered(delay_ms: u64, jitter_percent: u32, sample: u64) -> u64 {
    let span = delay_ms / 100 * u64::from(jitter_percent)
        + delay_ms % 100 * u64::from(jitter_percent) / 100;
    let draw = match span.checked_add(1) {
        Some(m) => sample % m,
        None => sample,
    };
    delay_ms - draw
}

/// What an `outcome` does to a pending job whose counters (including the attempt just made,
/// recorded when it started) are `counts`.
pub fn decide(
    counts: Counts,
    outcome: &Outcome,
    now_ms: u64,
    cfg: &RelayConfig,
    jitter_sample: u64,
) -> Decision {
    let retry = |counts: Counts, delay: u64, error: String| {
        let delay_ms = jittered(delay, cfg.jitter_percent, jitter_sample);
        Decision::Retry {
            counts,
            due_ms: now_ms.saturating_add(delay_ms),
            delay_ms,
            error,
        }
    };
    let mut c = counts;
    match outcome {
        Outcome::Delivered => Decision::Delivered { have: false },
        Outcome::Have => Decision::Delivered { have: true },
        Outcome::Refused(_) => Decision::Refused {
            reason: outcome.error_text(),
        },
        Outcome::Busy if c.busy_streak < cfg.busy_retries_max => {
            // Not an attempt: the peer is receiving the segment from someone else right now.
            c.attempts = c.attempts.saturating_sub(1);
            c.busy_streak += 1;
            retry(c, cfg.busy_retry_ms, outcome.error_text())
        }
        Outcome::StoreFull(_) => {
            // Moved from the ordinary counter to the store-full one.
            c.attempts = c.attempts.saturating_sub(1);
            c.store_full_attempts += 1;
            c.busy_streak = 0;
            if c.store_full_attempts >= cfg.store_full_attempts_max {
                Decision::Dead {
                    counts: c,
                    error: outcome.error_text(),
                }
            } else {
                let delay = store_full_backoff_ms(cfg, c.store_full_attempts);
                retry(c, delay, outcome.error_text())
            }
        }
        Outcome::Busy | Outcome::Unreachable(_) | Outcome::TimedOut(_) | Outcome::Failed(_) => {
            let error = match outcome {
                Outcome::Busy => format!("busy ({} answers in a row)", c.busy_streak + 1),
                _ => outcome.error_text(),
            };
            c.busy_streak = 0;
            // Mutation point (INV-12, with `start_verdict`): attempts go on past `attempts_max`.
            // Compiled out of every build but the failure-injection one; there it reads an
            // environment variable once, the only thing here that is not a pure decision.
            if c.attempts >= cfg.attempts_max && !store::mutants::active("ignore_attempts_max") {
                Decision::Dead { counts: c, error }
            } else {
                let delay = backoff_ms(cfg, c.attempts.max(1));
                retry(c, delay, error)
            }
        }
    }
}

/// Due time recorded when an attempt starts: if the node dies during the transfer, the job is
/// retried after the backoff it would have had, not at once (repeated kills each cost an attempt
/// and wait, so they cannot grant unlimited or rapid retries). The outcome overwrites it.
pub fn crash_retry_due_ms(counts_after_start: Counts, now_ms: u64, cfg: &RelayConfig) -> u64 {
    now_ms.saturating_add(backoff_ms(cfg, counts_after_start.attempts.max(1)))
}

/// Whether a pending job may start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartVerdict {
    /// Record the attempt and send.
    Start,
    /// Its segment expired: cancel (an expired segment is never relayed, INV-16).
    Expired,
    /// Its counters are already at a bound (the node died during its last attempt): a dead
    /// letter, without another attempt.
    Exhausted,
}

/// Decides whether a pending job with `counts` and expiry may start at `now_ms`.
pub fn start_verdict(
    counts: Counts,
    expires_at_ms: Option<u64>,
    now_ms: u64,
    cfg: &RelayConfig,
) -> StartVerdict {
    if expires_at_ms.is_some_and(|e| e <= now_ms) {
        StartVerdict::Expired
    } else if (counts.attempts >= cfg.attempts_max
        && !store::mutants::active("ignore_attempts_max"))
        || counts.store_full_attempts >= cfg.store_full_attempts_max
    {
        StartVerdict::Exhausted
    } else {
        StartVerdict::Start
    }
}

/// Clamps a stored due time into `[now, now + backoff_max_ms]`, so a reboot or a clock jump
/// neither loses a job (a due time far in the past runs now) nor freezes it (a due time far in
/// the future, e.g. after the clock was set back, runs within one maximal backoff).
pub fn clamp_due_ms(due_ms: u64, now_ms: u64, cfg: &RelayConfig) -> u64 {
    due_ms.clamp(now_ms, now_ms.saturating_add(cfg.backoff_max_ms))
}

/// Job counts of one segment by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Jobs ever scheduled for the segment.
    pub jobs: u32,
    pub pending: u32,
    pub delivered: u32,
    pub refused: u32,
    /// Dead letters not purged (a requeue can still deliver them).
    pub dead: u32,
    /// Dead letters purged by an operator (they will not be delivered by this relay).
    pub purged: u32,
    pub cancelled: u32,
}

/// Where a segment stands against its success condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The condition holds.
    Holds,
    /// Not yet: jobs are pending or dead letters may be requeued.
    NotYet,
    /// It can no longer hold through this relay (a refusal or a purged dead letter under
    /// `all_peers`; every job refused or cancelled under `one_peer`; or no peer to send to).
    Never,
}

/// Evaluates `condition` on a segment's jobs.
///
/// - `all_peers` holds when every scheduled job that was not cancelled (peer removed from
///   `known_peers`) is delivered. A refused job or a purged dead letter means it never holds
///   (the design: "every scheduled job is delivered"); a dead letter means not yet (a requeue
///   may still deliver it).
/// - `one_peer` holds when any job is delivered.
/// - A segment with no job at all holds when it came from a peer (every direct peer but the
///   source was known to have it, and the source has it) and never otherwise (an import on a
///   node without peers: nobody was sent anything).
pub fn verdict(condition: SuccessCondition, t: Tally, source_is_peer: bool) -> Verdict {
    if t.jobs == 0 {
        return if source_is_peer {
            Verdict::Holds
        } else {
            Verdict::Never
        };
    }
    match condition {
        SuccessCondition::AllPeers => {
            if t.refused > 0 || t.purged > 0 {
                Verdict::Never
            } else if t.pending == 0 && t.dead == 0 {
                // Everything not cancelled is delivered (cancelled jobs are excluded).
                if t.delivered > 0 || source_is_peer {
                    Verdict::Holds
                } else {
                    Verdict::Never
                }
            } else {
                Verdict::NotYet
            }
        }
        SuccessCondition::OnePeer => {
            if t.delivered > 0 {
                Verdict::Holds
            } else if t.pending == 0 && t.dead == 0 {
                Verdict::Never
            } else {
                Verdict::NotYet
            }
        }
    }
}

/// A job: one segment owed to one peer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobKey {
    pub seg: SegmentId,
    pub peer: NodeId,
}

/// What the scheduler needs of a pending job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobView {
    pub priority: u8,
    /// Wall-clock UTC ms at which it may start (already clamped).
    pub due_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Waiting for its due time (in `timers`).
    Timer,
    /// Due, waiting for a free slot (in `ready`).
    Ready,
    /// A transfer is running.
    InFlight,
}

#[derive(Debug, Clone)]
struct Entry {
    view: JobView,
    slot: Slot,
    /// Removed from the ledger's pending set while its transfer was running; forgotten when the
    /// transfer ends.
    orphaned: bool,
}

type ReadyKey = (Reverse<u8>, u64, SegmentId);

/// The in-memory view of pending jobs: which are due, which to start under the concurrency caps,
/// and when to wake next. It mirrors the ledger: every change is applied after the ledger
/// transaction that made it committed, in commit order.
#[derive(Debug, Default)]
pub struct Scheduler {
    jobs: BTreeMap<JobKey, Entry>,
    timers: BTreeSet<(u64, JobKey)>,
    ready: BTreeMap<NodeId, BTreeSet<ReadyKey>>,
    in_flight_by_peer: BTreeMap<NodeId, usize>,
    in_flight: usize,
    /// Dead letters still pinning their segment, by the time the pin is released.
    dead_pins: BTreeSet<(u64, JobKey)>,
}

impl Scheduler {
    pub fn new() -> Scheduler {
        Scheduler::default()
    }

    /// Pending jobs known (including those in flight).
    pub fn pending(&self) -> usize {
        self.jobs.values().filter(|e| !e.orphaned).count()
    }

    /// Transfers in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Transfers in flight whose job is still pending (those of jobs that ended meanwhile
    /// excluded). O(pending jobs), in memory.
    pub fn in_flight_pending(&self) -> usize {
        self.jobs
            .values()
            .filter(|e| e.slot == Slot::InFlight && !e.orphaned)
            .count()
    }

    /// Transfers in flight to `peer`.
    pub fn in_flight_to(&self, peer: &NodeId) -> usize {
        self.in_flight_by_peer.get(peer).copied().unwrap_or(0)
    }

    pub fn is_in_flight(&self, key: &JobKey) -> bool {
        self.jobs.get(key).is_some_and(|e| e.slot == Slot::InFlight)
    }

    /// The view of a known pending job.
    pub fn view(&self, key: &JobKey) -> Option<JobView> {
        self.jobs.get(key).filter(|e| !e.orphaned).map(|e| e.view)
    }

    fn unlink(&mut self, key: &JobKey, entry: &Entry) {
        match entry.slot {
            Slot::Timer => {
                self.timers.remove(&(entry.view.due_ms, key.clone()));
            }
            Slot::Ready => {
                if let Some(set) = self.ready.get_mut(&key.peer) {
                    set.remove(&(Reverse(entry.view.priority), entry.view.due_ms, key.seg));
                    if set.is_empty() {
                        self.ready.remove(&key.peer);
                    }
                }
            }
            Slot::InFlight => {}
        }
    }

    /// Adds or replaces a pending job waiting for `view.due_ms`. A job in flight stays in flight
    /// (its new view applies when its transfer ends and it is upserted again).
    pub fn upsert(&mut self, key: JobKey, view: JobView) {
        if let Some(old) = self.jobs.get(&key).cloned() {
            if old.slot == Slot::InFlight {
                let e = self.jobs.get_mut(&key).expect("entry just read");
                e.view = view;
                e.orphaned = false;
                return;
            }
            self.unlink(&key, &old);
        }
        self.timers.insert((view.due_ms, key.clone()));
        self.jobs.insert(
            key,
            Entry {
                view,
                slot: Slot::Timer,
                orphaned: false,
            },
        );
    }

    /// Forgets a job that is no longer pending. A job in flight is only marked: its slot is freed
    /// by [`Scheduler::finish`] when its transfer ends.
    pub fn remove(&mut self, key: &JobKey) {
        let Some(entry) = self.jobs.get(key).cloned() else {
            return;
        };
        if entry.slot == Slot::InFlight {
            self.jobs.get_mut(key).expect("entry just read").orphaned = true;
            return;
        }
        self.unlink(key, &entry);
        self.jobs.remove(key);
    }

    /// Ends a transfer: frees its slot and forgets the job (re-add it with
    /// [`Scheduler::upsert`] if it stays pending).
    pub fn finish(&mut self, key: &JobKey) {
        if let Some(entry) = self.jobs.get(key)
            && entry.slot == Slot::InFlight
        {
            self.jobs.remove(key);
            self.in_flight -= 1;
            if let Some(n) = self.in_flight_by_peer.get_mut(&key.peer) {
                *n -= 1;
                if *n == 0 {
                    self.in_flight_by_peer.remove(&key.peer);
                }
            }
        }
    }

    /// Ends a transfer that did not start after all (its start was not recorded): it goes back
    /// to waiting at its current due time, unless it was removed meanwhile.
    pub fn unstart(&mut self, key: &JobKey) {
        let Some(entry) = self.jobs.get(key).cloned() else {
            return;
        };
        if entry.slot != Slot::InFlight {
            return;
        }
        self.finish(key);
        if !entry.orphaned {
            self.upsert(key.clone(), entry.view);
        }
    }

    /// Moves jobs due at `now_ms` from the timers to the ready queues.
    pub fn promote(&mut self, now_ms: u64) {
        while let Some((due, _)) = self.timers.first() {
            if *due > now_ms {
                break;
            }
            let (due, key) = self.timers.pop_first().expect("first exists");
            let entry = self.jobs.get_mut(&key).expect("timer of a known job");
            entry.slot = Slot::Ready;
            self.ready.entry(key.peer.clone()).or_default().insert((
                Reverse(entry.view.priority),
                due,
                key.seg,
            ));
        }
    }

    /// Picks the jobs to start now, best first, and marks them in flight: at most
    /// `global_concurrency_max` in flight in total and `per_peer_concurrency_max` per peer;
    /// among ready jobs of peers with a free slot, higher priority first, then earlier due time,
    /// then segment id, then peer id. At most `limit` jobs.
    pub fn pick(&mut self, now_ms: u64, cfg: &RelayConfig, limit: usize) -> Vec<JobKey> {
        self.promote(now_ms);
        let mut out = Vec::new();
        while out.len() < limit && self.in_flight < cfg.global_concurrency_max {
            let mut best: Option<(&NodeId, &ReadyKey)> = None;
            for (peer, set) in &self.ready {
                if self.in_flight_to(peer) >= cfg.per_peer_concurrency_max {
                    continue;
                }
                let Some(head) = set.first() else { continue };
                if best.is_none_or(|(_, b)| head < b) {
                    best = Some((peer, head));
                }
            }
            let Some((peer, head)) = best else { break };
            let (peer, head) = (peer.clone(), *head);
            let set = self.ready.get_mut(&peer).expect("peer just seen");
            set.remove(&head);
            if set.is_empty() {
                self.ready.remove(&peer);
            }
            let key = JobKey { seg: head.2, peer };
            let entry = self.jobs.get_mut(&key).expect("ready job is known");
            entry.slot = Slot::InFlight;
            self.in_flight += 1;
            *self.in_flight_by_peer.entry(key.peer.clone()).or_insert(0) += 1;
            out.push(key);
        }
        out
    }

    /// The earliest time something becomes due (a job, or a dead letter's pin release). `None`
    /// when nothing waits on time. Ready jobs blocked by the caps wait for a transfer to end, not
    /// for time.
    pub fn next_wake_ms(&self) -> Option<u64> {
        let job = self.timers.first().map(|(d, _)| *d);
        let pin = self.dead_pins.first().map(|(d, _)| *d);
        match (job, pin) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True when a job is ready and a slot is free (the executor should pick now).
    pub fn can_start(&self, now_ms: u64, cfg: &RelayConfig) -> bool {
        if self.in_flight >= cfg.global_concurrency_max {
            return false;
        }
        let timer_due = self.timers.first().is_some_and(|(d, _)| *d <= now_ms);
        timer_due
            || self
                .ready
                .keys()
                .any(|p| self.in_flight_to(p) < cfg.per_peer_concurrency_max)
    }

    /// Clamps every waiting job's due time (ready or not) into `[now, now + backoff_max_ms]`
    /// again, as at load: after the wall clock jumped.
    pub fn reclamp(&mut self, now_ms: u64, cfg: &RelayConfig) {
        let waiting: Vec<(JobKey, JobView)> = self
            .jobs
            .iter()
            .filter(|(_, e)| e.slot != Slot::InFlight && !e.orphaned)
            .map(|(k, e)| (k.clone(), e.view))
            .collect();
        for (key, mut view) in waiting {
            view.due_ms = clamp_due_ms(view.due_ms, now_ms, cfg);
            self.upsert(key, view);
        }
    }

    /// Remembers that the dead letter `key` pins its segment until `release_at_ms`.
    pub fn add_dead_pin(&mut self, key: JobKey, release_at_ms: u64) {
        self.dead_pins.insert((release_at_ms, key));
    }

    /// Forgets a dead letter's pin (requeued, purged, cancelled or released).
    pub fn remove_dead_pin(&mut self, key: &JobKey) {
        self.dead_pins.retain(|(_, k)| k != key);
    }

    /// Dead letters whose pin is due for release at `now_ms`, at most `limit`.
    pub fn dead_pins_due(&self, now_ms: u64, limit: usize) -> Vec<JobKey> {
        self.dead_pins
            .iter()
            .take_while(|(t, _)| *t <= now_ms)
            .take(limit)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// Pending jobs (not in flight) with their views, in key order: for shutdown reports and
    /// tests.
    pub fn jobs(&self) -> impl Iterator<Item = (&JobKey, JobView, bool)> {
        self.jobs
            .iter()
            .filter(|(_, e)| !e.orphaned)
            .map(|(k, e)| (k, e.view, e.slot == Slot::InFlight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RelayConfig {
        RelayConfig::new(
            NodeId::new("self").unwrap(),
            ["a", "b", "c"].map(|p| NodeId::new(p).unwrap()),
        )
    }

    fn key(seg: u8, peer: &str) -> JobKey {
        JobKey {
            seg: SegmentId([seg; 32]),
            peer: NodeId::new(peer).unwrap(),
        }
    }

    #[test]
    fn backoff_doubles_from_base_to_cap() {
        let c = cfg();
        let table = [
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (10, 512_000),
            (11, 900_000),
            (64, 900_000),
            (u32::MAX, 900_000),
        ];
        for (n, want) in table {
            assert_eq!(backoff_ms(&c, n), want, "n={n}");
        }
        assert_eq!(store_full_backoff_ms(&c, 1), 60_000);
        assert_eq!(store_full_backoff_ms(&c, 7), 64_000);
        assert_eq!(store_full_backoff_ms(&c, 30), 900_000);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        for (delay, pct) in [
            (1_000u64, 20u32),
            (7, 100),
            (900_000, 0),
            (0, 50),
            (u64::MAX, 100),
        ] {
            let span = (u128::from(delay) * u128::from(pct) / 100) as u64;
            for sample in [0, 1, 2, 99, u64::MAX, u64::MAX / 3, 123_456_789] {
                let d = jittered(delay, pct, sample);
                assert!(
                    d <= delay && d >= delay - span,
                    "{delay} {pct} {sample} -> {d}"
                );
            }
        }
        assert_eq!(jittered(1_000, 20, 0), 1_000);
        assert_eq!(jittered(1_000, 20, 200), 800);
        assert_eq!(jittered(1_000, 20, 201), 1_000);
    }

    /// check(counts, outcome) → expected decision kind and counters.
    #[test]
    fn inv_12_outcome_table() {
        let c = cfg();
        let now = 1_000_000;
        let n = |attempts, sf, busy| Counts {
            attempts,
            store_full_attempts: sf,
            busy_streak: busy,
        };
        let unreachable = Outcome::Unreachable("no route".into());
        let cases: Vec<(Counts, Outcome, &str, Option<Counts>)> = vec![
            (n(1, 0, 0), Outcome::Delivered, "delivered", None),
            (n(3, 0, 0), Outcome::Have, "delivered", None),
            (
                n(1, 0, 0),
                Outcome::Refused("bad sig".into()),
                "refused",
                None,
            ),
            (n(1, 0, 0), unreachable.clone(), "retry", Some(n(1, 0, 0))),
            (n(15, 0, 0), unreachable.clone(), "retry", Some(n(15, 0, 0))),
            (n(16, 0, 0), unreachable.clone(), "dead", Some(n(16, 0, 0))),
            (
                n(16, 0, 3),
                Outcome::TimedOut("stalled".into()),
                "dead",
                Some(n(16, 0, 0)),
            ),
            (n(2, 0, 0), Outcome::Busy, "retry", Some(n(1, 0, 1))),
            (n(2, 0, 99), Outcome::Busy, "retry", Some(n(1, 0, 100))),
            (n(2, 0, 100), Outcome::Busy, "retry", Some(n(2, 0, 0))),
            (n(16, 0, 100), Outcome::Busy, "dead", Some(n(16, 0, 0))),
            (
                n(1, 0, 0),
                Outcome::StoreFull("full".into()),
                "retry",
                Some(n(0, 1, 0)),
            ),
            (
                n(1, 46, 0),
                Outcome::StoreFull("full".into()),
                "retry",
                Some(n(0, 47, 0)),
            ),
            (
                n(1, 47, 0),
                Outcome::StoreFull("full".into()),
                "dead",
                Some(n(0, 48, 0)),
            ),
        ];
        for (counts, outcome, kind, want) in cases {
            let d = decide(counts, &outcome, now, &c, 0);
            let (got_kind, got) = match &d {
                Decision::Delivered { .. } => ("delivered", None),
                Decision::Refused { .. } => ("refused", None),
                Decision::Retry { counts, .. } => ("retry", Some(*counts)),
                Decision::Dead { counts, .. } => ("dead", Some(*counts)),
            };
            assert_eq!((got_kind, got), (kind, want), "{counts:?} {outcome:?}");
            assert!(got.is_none_or(|g| g.attempts <= c.attempts_max
                && g.store_full_attempts <= c.store_full_attempts_max));
            if let Decision::Retry {
                due_ms, delay_ms, ..
            } = d
            {
                assert_eq!(due_ms, now + delay_ms);
                assert!(delay_ms <= c.backoff_max_ms);
                if matches!(outcome, Outcome::StoreFull(_)) {
                    assert!(delay_ms >= c.store_full_backoff_min_ms * 80 / 100);
                }
            }
        }
    }

    #[test]
    fn verdict_table() {
        use SuccessCondition::{AllPeers, OnePeer};
        let t = |jobs, pending, delivered, refused, dead, purged, cancelled| Tally {
            jobs,
            pending,
            delivered,
            refused,
            dead,
            purged,
            cancelled,
        };
        let cases = [
            (AllPeers, t(2, 0, 2, 0, 0, 0, 0), true, Verdict::Holds),
            (AllPeers, t(2, 1, 1, 0, 0, 0, 0), true, Verdict::NotYet),
            (AllPeers, t(2, 0, 1, 0, 1, 0, 0), true, Verdict::NotYet),
            (AllPeers, t(2, 0, 1, 1, 0, 0, 0), true, Verdict::Never),
            (AllPeers, t(2, 0, 1, 0, 0, 1, 0), true, Verdict::Never),
            (AllPeers, t(2, 0, 1, 0, 0, 0, 1), false, Verdict::Holds),
            (AllPeers, t(1, 0, 0, 0, 0, 0, 1), false, Verdict::Never),
            (AllPeers, t(0, 0, 0, 0, 0, 0, 0), true, Verdict::Holds),
            (AllPeers, t(0, 0, 0, 0, 0, 0, 0), false, Verdict::Never),
            (OnePeer, t(3, 2, 1, 0, 0, 0, 0), false, Verdict::Holds),
            (OnePeer, t(3, 2, 0, 0, 1, 0, 0), false, Verdict::NotYet),
            (OnePeer, t(3, 0, 0, 2, 0, 0, 1), false, Verdict::Never),
        ];
        for (cond, tally, from_peer, want) in cases {
            assert_eq!(verdict(cond, tally, from_peer), want, "{cond} {tally:?}");
        }
    }

    #[test]
    fn pick_orders_by_priority_then_due_and_respects_caps() {
        let mut c = cfg();
        c.per_peer_concurrency_max = 2;
        c.global_concurrency_max = 3;
        let mut s = Scheduler::new();
        s.upsert(
            key(1, "a"),
            JobView {
                priority: 1,
                due_ms: 10,
            },
        );
        s.upsert(
            key(2, "a"),
            JobView {
                priority: 9,
                due_ms: 50,
            },
        );
        s.upsert(
            key(3, "a"),
            JobView {
                priority: 9,
                due_ms: 20,
            },
        );
        s.upsert(
            key(4, "b"),
            JobView {
                priority: 5,
                due_ms: 10,
            },
        );
        s.upsert(
            key(5, "c"),
            JobView {
                priority: 9,
                due_ms: 500,
            },
        );
        assert_eq!(s.next_wake_ms(), Some(10));
        assert!(s.pick(5, &c, usize::MAX).is_empty());
        let picked = s.pick(100, &c, usize::MAX);
        assert_eq!(picked, vec![key(3, "a"), key(2, "a"), key(4, "b")]);
        assert_eq!(s.in_flight(), 3);
        assert!(s.pick(1_000, &c, usize::MAX).is_empty(), "global cap");
        s.finish(&key(3, "a"));
        // a is at its cap of 2? No: one left in flight for a, so a may take one more; c's job is
        // priority 9 and due now, a's remaining is priority 1.
        assert_eq!(s.pick(1_000, &c, usize::MAX), vec![key(5, "c")]);
        s.finish(&key(2, "a"));
        s.finish(&key(4, "b"));
        assert_eq!(s.pick(1_000, &c, usize::MAX), vec![key(1, "a")]);
        assert_eq!(s.next_wake_ms(), None);
        // Orphaned in flight: freed only by finish.
        s.remove(&key(1, "a"));
        assert_eq!(s.in_flight(), 2);
        s.finish(&key(1, "a"));
        s.finish(&key(5, "c"));
        assert_eq!((s.in_flight(), s.pending()), (0, 0));
    }

    #[test]
    fn upsert_moves_a_job_and_unstart_puts_it_back() {
        let c = cfg();
        let mut s = Scheduler::new();
        s.upsert(
            key(1, "a"),
            JobView {
                priority: 1,
                due_ms: 10,
            },
        );
        s.upsert(
            key(1, "a"),
            JobView {
                priority: 1,
                due_ms: 30,
            },
        );
        assert_eq!(s.next_wake_ms(), Some(30));
        assert_eq!(s.pick(30, &c, 1), vec![key(1, "a")]);
        s.unstart(&key(1, "a"));
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.pick(30, &c, 1), vec![key(1, "a")]);
    }

    #[test]
    fn clamp_due_keeps_jobs_within_one_backoff() {
        let c = cfg();
        assert_eq!(clamp_due_ms(5, 100, &c), 100);
        assert_eq!(clamp_due_ms(u64::MAX, 100, &c), 100 + c.backoff_max_ms);
        assert_eq!(clamp_due_ms(150, 100, &c), 150);
    }

    #[test]
    fn bounded_error_cuts_at_a_character_boundary_within_the_bound() {
        let short = "x".repeat(ERROR_BYTES_MAX);
        assert_eq!(bounded_error(&short), short);
        // Two-byte characters, shifted by one byte in the second text: whichever parity the
        // bound has, one of them puts the cut inside a character.
        for text in [
            "é".repeat(ERROR_BYTES_MAX),
            format!("a{}", "é".repeat(ERROR_BYTES_MAX)),
        ] {
            let cut = bounded_error(&text);
            assert!(cut.len() <= ERROR_BYTES_MAX, "{} bytes", cut.len());
            assert!(cut.len() >= ERROR_BYTES_MAX - 1, "{} bytes", cut.len());
            let kept = cut.strip_suffix('…').expect("marked as cut");
            assert!(text.starts_with(kept));
        }
    }

    #[test]
    fn jitter_of_a_short_delay_uses_its_remainder() {
        // 7 ms at 100 %: the whole 7 ms may go (the span comes from the remainder below 100).
        assert_eq!(jittered(7, 100, 7), 0);
        assert_eq!(jittered(150, 50, 75), 75);
        assert_eq!(jittered(150, 50, 76), 150);
    }

    #[test]
    fn inv_12_a_busy_answer_names_its_streak_once_the_streak_is_spent() {
        let c = cfg();
        let counts = Counts {
            attempts: 2,
            store_full_attempts: 0,
            busy_streak: c.busy_retries_max,
        };
        match decide(counts, &Outcome::Busy, 0, &c, 0) {
            Decision::Retry { error, .. } => assert_eq!(
                error,
                format!("busy ({} answers in a row)", c.busy_retries_max + 1)
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inv_16_a_job_expiring_now_does_not_start() {
        let c = cfg();
        let fresh = Counts::default();
        assert_eq!(
            start_verdict(fresh, Some(100), 100, &c),
            StartVerdict::Expired
        );
        assert_eq!(
            start_verdict(fresh, Some(101), 100, &c),
            StartVerdict::Start
        );
        assert_eq!(
            start_verdict(fresh, None, u64::MAX, &c),
            StartVerdict::Start
        );
    }

    #[test]
    fn inv_13_one_peer_waits_on_a_dead_letter_alone() {
        let t = Tally {
            jobs: 2,
            dead: 1,
            cancelled: 1,
            ..Tally::default()
        };
        assert_eq!(
            verdict(SuccessCondition::OnePeer, t, false),
            Verdict::NotYet
        );
        let t = Tally {
            jobs: 2,
            pending: 1,
            refused: 1,
            ..Tally::default()
        };
        assert_eq!(
            verdict(SuccessCondition::OnePeer, t, false),
            Verdict::NotYet
        );
    }

    fn view(priority: u8, due_ms: u64) -> JobView {
        JobView { priority, due_ms }
    }

    #[test]
    fn scheduler_views_follow_each_job_through_its_slots() {
        let c = cfg();
        let mut s = Scheduler::new();
        let (k, a) = (key(1, "a"), NodeId::new("a").unwrap());
        s.upsert(k.clone(), view(1, 10));
        assert_eq!((s.pending(), s.in_flight_to(&a)), (1, 0));
        assert_eq!(s.view(&k), Some(view(1, 10)));
        assert!(!s.is_in_flight(&k));
        // Ending a transfer that is not running changes nothing.
        s.finish(&k);
        assert_eq!((s.pending(), s.in_flight()), (1, 0));
        assert_eq!(s.pick(10, &c, usize::MAX), vec![k.clone()]);
        assert!(s.is_in_flight(&k));
        assert_eq!((s.pending(), s.in_flight_to(&a)), (1, 1));
        // Removed while in flight: no longer pending, still holding its slot.
        s.remove(&k);
        assert_eq!(s.view(&k), None);
        assert!(s.is_in_flight(&k));
        assert_eq!(
            (s.pending(), s.in_flight(), s.in_flight_pending()),
            (0, 1, 0)
        );
        s.finish(&k);
        assert!(!s.is_in_flight(&k));
        assert_eq!((s.pending(), s.in_flight_to(&a)), (0, 0));
    }

    #[test]
    fn pick_stops_at_its_limit_and_breaks_ties_by_peer() {
        let c = cfg();
        let mut s = Scheduler::new();
        // The same segment, priority and due time for two peers: peer id decides.
        s.upsert(key(1, "b"), view(5, 10));
        s.upsert(key(1, "a"), view(5, 10));
        assert_eq!(s.pick(10, &c, 1), vec![key(1, "a")]);
        assert_eq!(s.pick(10, &c, 1), vec![key(1, "b")]);
        assert!(s.pick(10, &c, 1).is_empty());
    }

    #[test]
    fn can_start_when_a_job_is_due_and_a_slot_is_free() {
        let mut c = cfg();
        c.per_peer_concurrency_max = 1;
        c.global_concurrency_max = 2;
        let mut s = Scheduler::new();
        assert!(!s.can_start(0, &c), "nothing at all");
        s.upsert(key(1, "a"), view(1, 10));
        s.upsert(key(2, "a"), view(1, 10));
        assert!(!s.can_start(9, &c), "not due yet");
        assert!(s.can_start(10, &c), "due now");
        // a at its cap of one: its other ready job waits for the slot, not for time.
        assert_eq!(s.pick(10, &c, usize::MAX), vec![key(1, "a")]);
        assert!(!s.can_start(10, &c), "only a capped peer is ready");
        // b's job, promoted to ready by a pick limited to nothing, can start: b has a free slot.
        s.upsert(key(3, "b"), view(1, 10));
        assert!(s.pick(10, &c, 0).is_empty());
        assert!(
            s.can_start(10, &c),
            "a ready job of a peer with a free slot"
        );
        assert_eq!(s.pick(10, &c, usize::MAX), vec![key(3, "b")]);
        // The global cap of two is reached: a job coming due cannot start.
        s.upsert(key(4, "c"), view(1, 10));
        assert!(!s.can_start(10, &c), "global cap");
    }

    #[test]
    fn inv_14_reclamp_leaves_transfers_in_flight_alone() {
        let c = cfg();
        let mut s = Scheduler::new();
        s.upsert(key(1, "a"), view(1, 10));
        s.upsert(key(2, "b"), view(1, 10));
        assert_eq!(s.pick(10, &c, 1), vec![key(1, "a")]);
        let now = 1_000_000;
        s.reclamp(now, &c);
        assert_eq!(
            s.view(&key(1, "a")),
            Some(view(1, 10)),
            "in flight: untouched"
        );
        assert_eq!(s.view(&key(2, "b")), Some(view(1, now)), "waiting: clamped");
        assert!(s.is_in_flight(&key(1, "a")));
    }

    #[test]
    fn dead_pins_wake_in_time_order_and_are_forgotten_when_removed() {
        let mut s = Scheduler::new();
        s.add_dead_pin(key(1, "a"), 50);
        s.add_dead_pin(key(2, "b"), 70);
        assert_eq!(s.next_wake_ms(), Some(50));
        assert_eq!(s.dead_pins_due(60, usize::MAX), vec![key(1, "a")]);
        s.remove_dead_pin(&key(1, "a"));
        assert_eq!(s.next_wake_ms(), Some(70));
        assert!(s.dead_pins_due(60, usize::MAX).is_empty());
    }
}
