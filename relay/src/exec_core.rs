//! The executor core: one node's executor loop as a state machine without I/O.
//!
//! [`ExecCore`] decides what the executor does next; a shell performs it. Two shells drive it:
//! [`crate::executor`] (tokio: real transfers, real sleeps) and the discrete-event simulation
//! (`harness::sim`, feature `sim`: virtual time, simulated links). The loop therefore exists
//! once, and every harness test runs the same decisions the shipped executor makes.
//!
//! **It does no I/O, reads no clock and spawns nothing.** Time comes in as a [`Reading`] (wall
//! clock and monotonic time, taken by the shell at each wake); randomness is a ChaCha8 RNG seeded
//! by the caller; the ledger operations stay in [`crate::Relay`] (async for the tokio shell,
//! `*_blocking` for the simulation).
//!
//! Protocol: the shell calls [`ExecCore::poll`] and performs the [`Step`] it gets, until a
//! [`Step::Sleep`] or [`Step::Stop`]. Two steps need an answer before the next poll:
//! [`Step::Pick`] → [`ExecCore::picked`], [`Step::RecordStarts`] → [`ExecCore::starts_recorded`].
//! While asleep the shell waits for whichever comes first — a transfer ending, the scheduler
//! changing, the deadline, shutdown — and reports it: [`ExecCore::woke`] (then
//! [`ExecCore::transfer_ended`] / [`ExecCore::transfer_panicked`] for each transfer that ended),
//! or [`ExecCore::shutdown`]. Calling an answer out of turn is a bug in the shell and panics.
//!
//! Guarantees (unit tests below):
//! - A transfer is handed out ([`Step::Spawn`]) only for a job whose start the ledger confirmed
//!   ([`Start::Started`]): a node that dies during a transfer keeps the attempt (INV-14), so
//!   kills cannot grant attempts beyond `attempts_max` (INV-12).
//! - Every transfer that ends yields one outcome with one jitter sample from the seeded RNG, in
//!   the order reported; outcomes leave in batches of at most [`OUTCOME_BATCH_MAX`], before
//!   anything new is picked on that wake. A panicked transfer is a failed attempt, not a lost
//!   one.
//! - After [`ExecCore::shutdown`] nothing is picked or spawned: every transfer in flight is
//!   cancelled; the outcomes of those that had ended are applied, the rest are refunded; then
//!   [`Step::Stop`] with the run's [`ExecutorReport`].
//! - No polling: the sleep lasts until the earliest due time, at most `wake_interval_max_ms`
//!   (so a wall-clock jump is noticed), and without a deadline when nothing waits on time.
//! - A wall-clock jump ([`base::clock::wall_clock_jump_ms`]) between two wakes makes
//!   [`Step::Reclamp`] the first step of the wake that noticed it.

use std::collections::{BTreeSet, VecDeque};

use base::clock::wall_clock_jump_ms;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::core::{JobKey, Outcome};
use crate::ledger::{OutcomeIn, Start};
use crate::limits::{OUTCOME_BATCH_MAX, RelayConfig, START_BATCH_MAX};

/// The error text of the outcome a panicked transfer ends with.
pub const PANICKED_TRANSFER_ERROR: &str = "transport task panicked";

/// Both clocks, read by the shell at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Wall-clock UTC, milliseconds since the Unix epoch (due times are stored in it).
    pub wall_ms: u64,
    /// Monotonic milliseconds since an origin the shell chooses; never goes back.
    pub mono_ms: u64,
}

/// When a sleeping shell wakes at the latest: the same moment on both clocks, as they read at
/// the wake that chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub wall_ms: u64,
    pub mono_ms: u64,
}

/// Counters of one executor run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExecutorReport {
    /// Attempts started (recorded and sent).
    pub started: u64,
    /// Outcomes handed out for commit.
    pub outcomes: u64,
    /// Attempts refunded at shutdown.
    pub refunded: u64,
    /// Times the loop woke up (a measure of idle cost: it must not poll).
    pub wakeups: u64,
}

/// What the shell does next. See the module docs for the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The wall clock jumped by `jump_ms` (negative: backwards): log it and clamp waiting due
    /// times again ([`crate::Relay::reclamp`]).
    Reclamp { now_ms: u64, jump_ms: i64 },
    /// Commit these outcomes in one transaction ([`crate::Relay::apply_outcomes`]).
    ApplyOutcomes { items: Vec<OutcomeIn>, now_ms: u64 },
    /// Release aged dead-letter pins ([`crate::Relay::age_dead_pins`]).
    AgePins { now_ms: u64 },
    /// Pick at most `limit` due jobs ([`crate::Relay::pick`]); answer with
    /// [`ExecCore::picked`].
    Pick { now_ms: u64, limit: usize },
    /// Record the starts of these picked jobs durably ([`crate::Relay::record_starts`]); answer
    /// with [`ExecCore::starts_recorded`].
    RecordStarts { keys: Vec<JobKey>, now_ms: u64 },
    /// Start a transfer for each of these jobs (their attempts are committed).
    Spawn { keys: Vec<JobKey> },
    /// Wait for a transfer to end, the scheduler to change, shutdown, or `until` (none: no
    /// deadline); then report the wake.
    Sleep { until: Option<Deadline> },
    /// Cancel every transfer in flight (these). Report those that had ended anyway with
    /// [`ExecCore::transfer_ended`] or [`ExecCore::transfer_panicked`] before polling again;
    /// every other one was cut short and will be refunded.
    CancelAll { keys: Vec<JobKey> },
    /// Refund the attempts of these transfers cut short by shutdown, durably
    /// ([`crate::Relay::refund`]).
    Refund { keys: Vec<JobKey>, now_ms: u64 },
    /// The run is over.
    Stop { report: ExecutorReport },
}

#[derive(Debug)]
enum Phase {
    /// Handling a wake: outcomes first, then pins (unless `aged`), then picking.
    Awake {
        aged: bool,
    },
    /// [`Step::Pick`] handed out; its answer is owed.
    AwaitPicked,
    /// Record these picked jobs' starts next.
    Record(Vec<JobKey>),
    /// [`Step::RecordStarts`] handed out; its answer is owed.
    AwaitStarts,
    /// Spawn these jobs' transfers next (their starts are confirmed), then pick again.
    Spawn(Vec<JobKey>),
    /// Mutant `spawn_before_start_recorded`: spawn these picked jobs, then record their starts.
    SpawnUnrecorded(Vec<JobKey>),
    /// Waiting for a wake.
    Asleep(Option<Deadline>),
    /// Shutting down; `cancel_sent` once [`Step::CancelAll`] was handed out.
    Stopping {
        cancel_sent: bool,
    },
    Stopped,
}

/// One node's executor loop without I/O. See the module docs.
#[derive(Debug)]
pub struct ExecCore {
    wake_interval_max_ms: u64,
    rng: ChaCha8Rng,
    report: ExecutorReport,
    /// The clocks at the last wake: the `now` of every step, and the base of jump detection.
    last: Reading,
    /// A jump noticed at the last wake and not yet handed out.
    jump_ms: Option<i64>,
    /// Transfers spawned whose end has not been reported.
    in_flight: BTreeSet<JobKey>,
    /// Outcomes reported and not yet handed out, in report order.
    ended: VecDeque<OutcomeIn>,
    phase: Phase,
}

/// When to wake at the latest after a wake at `at`, with the earliest due time `next_due_ms`:
/// at that due time (now, if it passed), but at most `wake_interval_max_ms` later; none when
/// nothing waits on time.
pub fn sleep_deadline(
    at: Reading,
    next_due_ms: Option<u64>,
    wake_interval_max_ms: u64,
) -> Option<Deadline> {
    next_due_ms.map(|due| {
        let after_ms = due.saturating_sub(at.wall_ms).min(wake_interval_max_ms);
        Deadline {
            wall_ms: at.wall_ms.saturating_add(after_ms),
            mono_ms: at.mono_ms.saturating_add(after_ms),
        }
    })
}

impl ExecCore {
    /// A core for a node with `cfg`, starting at `at` (the first wake: it picks at once), with
    /// jitter drawn from a ChaCha8 RNG seeded with `seed`.
    pub fn new(cfg: &RelayConfig, seed: u64, at: Reading) -> ExecCore {
        ExecCore {
            wake_interval_max_ms: cfg.wake_interval_max_ms,
            rng: ChaCha8Rng::seed_from_u64(seed),
            report: ExecutorReport::default(),
            last: at,
            jump_ms: None,
            in_flight: BTreeSet::new(),
            ended: VecDeque::new(),
            phase: Phase::Awake { aged: false },
        }
    }

    /// The counters so far.
    pub fn report(&self) -> &ExecutorReport {
        &self.report
    }

    /// Transfers spawned whose end has not been reported, in key order.
    pub fn in_flight(&self) -> impl Iterator<Item = &JobKey> {
        self.in_flight.iter()
    }

    /// True once [`Step::Stop`] was handed out.
    pub fn is_stopped(&self) -> bool {
        matches!(self.phase, Phase::Stopped)
    }

    /// The next thing to do. Panics if an answer ([`ExecCore::picked`],
    /// [`ExecCore::starts_recorded`]) is owed.
    pub fn poll(&mut self) -> Step {
        let now_ms = self.last.wall_ms;
        match std::mem::replace(&mut self.phase, Phase::Stopped) {
            Phase::Awake { aged } => {
                if let Some(jump_ms) = self.jump_ms.take() {
                    self.phase = Phase::Awake { aged };
                    return Step::Reclamp { now_ms, jump_ms };
                }
                if let Some(items) = self.outcome_batch() {
                    self.phase = Phase::Awake { aged };
                    return Step::ApplyOutcomes { items, now_ms };
                }
                if !aged {
                    self.phase = Phase::Awake { aged: true };
                    return Step::AgePins { now_ms };
                }
                self.phase = Phase::AwaitPicked;
                Step::Pick {
                    now_ms,
                    limit: START_BATCH_MAX,
                }
            }
            Phase::Record(keys) => {
                self.phase = Phase::AwaitStarts;
                Step::RecordStarts { keys, now_ms }
            }
            Phase::Spawn(keys) => {
                self.phase = Phase::Awake { aged: true };
                self.spawn(keys)
            }
            Phase::SpawnUnrecorded(keys) => {
                self.phase = Phase::Record(keys.clone());
                self.spawn(keys)
            }
            Phase::Asleep(until) => {
                self.phase = Phase::Asleep(until);
                Step::Sleep { until }
            }
            Phase::Stopping { cancel_sent: false } => {
                self.phase = Phase::Stopping { cancel_sent: true };
                Step::CancelAll {
                    keys: self.in_flight.iter().cloned().collect(),
                }
            }
            Phase::Stopping { cancel_sent: true } => {
                if let Some(items) = self.outcome_batch() {
                    self.phase = Phase::Stopping { cancel_sent: true };
                    return Step::ApplyOutcomes { items, now_ms };
                }
                if !self.in_flight.is_empty() {
                    self.phase = Phase::Stopping { cancel_sent: true };
                    let keys: Vec<JobKey> =
                        std::mem::take(&mut self.in_flight).into_iter().collect();
                    self.report.refunded += keys.len() as u64;
                    return Step::Refund { keys, now_ms };
                }
                Step::Stop {
                    report: self.report.clone(),
                }
            }
            Phase::Stopped => Step::Stop {
                report: self.report.clone(),
            },
            owed @ (Phase::AwaitPicked | Phase::AwaitStarts) => {
                panic!("executor core polled while the answer to {owed:?} is owed")
            }
        }
    }

    /// The answer to [`Step::Pick`]: the jobs picked (marked in flight by the scheduler) and the
    /// scheduler's earliest due time right after ([`crate::Relay::next_wake_ms`]).
    pub fn picked(&mut self, keys: Vec<JobKey>, next_due_ms: Option<u64>) {
        assert!(
            matches!(self.phase, Phase::AwaitPicked),
            "picked() out of turn ({:?})",
            self.phase
        );
        self.phase = if keys.is_empty() {
            Phase::Asleep(sleep_deadline(
                self.last,
                next_due_ms,
                self.wake_interval_max_ms,
            ))
        } else if store::mutants::active("spawn_before_start_recorded") {
            // Mutation point (INV-14, INV-12): transfers go out before their attempts are
            // committed, so a node that dies meanwhile has sent an attempt it never counted.
            Phase::SpawnUnrecorded(keys)
        } else {
            Phase::Record(keys)
        };
    }

    /// The answer to [`Step::RecordStarts`]: what the ledger did with each start. Transfers are
    /// spawned for the [`Start::Started`] ones only.
    pub fn starts_recorded(&mut self, starts: &[Start]) {
        assert!(
            matches!(self.phase, Phase::AwaitStarts),
            "starts_recorded() out of turn ({:?})",
            self.phase
        );
        let started: Vec<JobKey> = starts
            .iter()
            .filter_map(|s| match s {
                // A key already in flight was spawned before its start (the mutant only).
                Start::Started { key, .. } if !self.in_flight.contains(key) => Some(key.clone()),
                _ => None,
            })
            .collect();
        self.phase = if started.is_empty() {
            Phase::Awake { aged: true }
        } else {
            Phase::Spawn(started)
        };
    }

    /// The shell woke (a transfer ended, the scheduler changed, the deadline passed) at `at`.
    /// Report ended transfers after this. Panics if an answer is owed.
    pub fn woke(&mut self, at: Reading) {
        self.report.wakeups += 1;
        if let Some(jump_ms) =
            wall_clock_jump_ms(self.last.wall_ms, self.last.mono_ms, at.wall_ms, at.mono_ms)
        {
            self.jump_ms = Some(jump_ms);
        }
        self.last = at;
        match self.phase {
            Phase::Asleep(_) | Phase::Awake { .. } => self.phase = Phase::Awake { aged: false },
            Phase::Stopping { .. } | Phase::Stopped => {}
            _ => panic!("woke() while an answer is owed ({:?})", self.phase),
        }
    }

    /// The transfer of `key` ended with `outcome`. A key not in flight (already reported, or
    /// from before this core) is ignored.
    pub fn transfer_ended(&mut self, key: JobKey, outcome: Outcome) {
        if !self.in_flight.remove(&key) {
            return;
        }
        let jitter_sample = self.rng.random();
        self.ended.push_back(OutcomeIn {
            key,
            outcome,
            jitter_sample,
        });
    }

    /// The transfer of `key` panicked: a failed attempt.
    pub fn transfer_panicked(&mut self, key: JobKey) {
        self.transfer_ended(key, Outcome::Failed(PANICKED_TRANSFER_ERROR.into()));
    }

    /// Shutdown was requested at `at`: stop starting transfers, cancel those in flight.
    /// Panics if an answer is owed.
    pub fn shutdown(&mut self, at: Reading) {
        self.report.wakeups += 1;
        self.last = at;
        match self.phase {
            Phase::Asleep(_) | Phase::Awake { .. } => {
                self.phase = Phase::Stopping { cancel_sent: false }
            }
            Phase::Stopping { .. } | Phase::Stopped => {}
            _ => panic!("shutdown() while an answer is owed ({:?})", self.phase),
        }
    }

    fn spawn(&mut self, keys: Vec<JobKey>) -> Step {
        self.report.started += keys.len() as u64;
        self.in_flight.extend(keys.iter().cloned());
        Step::Spawn { keys }
    }

    fn outcome_batch(&mut self) -> Option<Vec<OutcomeIn>> {
        if self.ended.is_empty() {
            return None;
        }
        let n = self.ended.len().min(OUTCOME_BATCH_MAX);
        let items: Vec<OutcomeIn> = self.ended.drain(..n).collect();
        self.report.outcomes += items.len() as u64;
        Some(items)
    }
}

#[cfg(test)]
mod tests {
    use store::SegmentId;

    use super::*;
    use crate::peer::NodeId;

    const T0: u64 = 1_700_000_000_000;
    const WAKE_MAX_MS: u64 = 60_000;
    /// Steps a test lets the core take before it must rest.
    const REST_STEPS_MAX: usize = 1_000;

    fn cfg() -> RelayConfig {
        let mut c = RelayConfig::new(NodeId::new("self").unwrap(), []);
        c.wake_interval_max_ms = WAKE_MAX_MS;
        c
    }

    fn key(seg: u8) -> JobKey {
        JobKey {
            seg: SegmentId([seg; 32]),
            peer: NodeId::new("p").unwrap(),
        }
    }

    fn at(wall_ms: u64, mono_ms: u64) -> Reading {
        Reading { wall_ms, mono_ms }
    }

    fn started(k: &JobKey) -> Start {
        Start::Started {
            key: k.clone(),
            attempt_num: 1,
        }
    }

    /// A core that has started transfers for `keys` at T0 and sleeps.
    fn running(seed: u64, keys: &[JobKey]) -> ExecCore {
        let mut core = ExecCore::new(&cfg(), seed, at(T0, 0));
        if keys.is_empty() {
            until_rest(&mut core);
            return core;
        }
        assert_eq!(core.poll(), Step::AgePins { now_ms: T0 });
        assert!(matches!(core.poll(), Step::Pick { .. }));
        core.picked(keys.to_vec(), None);
        assert!(matches!(core.poll(), Step::RecordStarts { .. }));
        core.starts_recorded(&keys.iter().map(started).collect::<Vec<_>>());
        assert_eq!(
            core.poll(),
            Step::Spawn {
                keys: keys.to_vec()
            }
        );
        assert!(matches!(core.poll(), Step::Pick { .. }));
        core.picked(vec![], None);
        assert_eq!(core.poll(), Step::Sleep { until: None });
        core
    }

    /// Polls until the core sleeps or stops, answering every pick with nothing: the steps.
    fn until_rest(core: &mut ExecCore) -> Vec<Step> {
        let mut steps = Vec::new();
        for _ in 0..REST_STEPS_MAX {
            let step = core.poll();
            if matches!(step, Step::Pick { .. }) {
                core.picked(vec![], None);
            }
            let rest = matches!(step, Step::Sleep { .. } | Step::Stop { .. });
            steps.push(step);
            if rest {
                return steps;
            }
        }
        panic!("no rest within {REST_STEPS_MAX} steps: {steps:?}");
    }

    #[test]
    fn inv_14_transfer_spawned_only_after_its_start_is_recorded() {
        let (a, b, c) = (key(1), key(2), key(3));
        let mut core = ExecCore::new(&cfg(), 1, at(T0, 0));
        assert_eq!(core.poll(), Step::AgePins { now_ms: T0 });
        assert_eq!(
            core.poll(),
            Step::Pick {
                now_ms: T0,
                limit: START_BATCH_MAX
            }
        );
        core.picked(vec![a.clone(), b.clone(), c.clone()], Some(T0));
        // Recording comes next, and nothing is spawned before its answer.
        assert_eq!(
            core.poll(),
            Step::RecordStarts {
                keys: vec![a.clone(), b.clone(), c.clone()],
                now_ms: T0
            }
        );
        assert_eq!(core.in_flight().count(), 0);
        core.starts_recorded(&[
            started(&a),
            Start::Skipped {
                key: b.clone(),
                why: "no longer pending",
            },
            started(&c),
        ]);
        // Only the confirmed starts go out.
        assert_eq!(
            core.poll(),
            Step::Spawn {
                keys: vec![a.clone(), c.clone()]
            }
        );
        assert_eq!(core.report().started, 2);
        assert_eq!(core.in_flight().cloned().collect::<Vec<_>>(), vec![a, c]);
        // Then it picks again until nothing is due.
        assert!(matches!(core.poll(), Step::Pick { .. }));
    }

    #[test]
    #[should_panic(expected = "owed")]
    fn polling_before_answering_is_a_shell_bug() {
        let mut core = ExecCore::new(&cfg(), 1, at(T0, 0));
        core.poll();
        core.poll();
        core.poll();
    }

    #[test]
    fn inv_12_every_ended_transfer_is_one_outcome_and_a_panic_is_a_failed_attempt() {
        let (a, b) = (key(1), key(2));
        let mut core = running(7, &[a.clone(), b.clone()]);
        core.woke(at(T0 + 10, 10));
        core.transfer_ended(a.clone(), Outcome::Delivered);
        core.transfer_panicked(b.clone());
        // Reported twice (or unknown): still one outcome.
        core.transfer_ended(a.clone(), Outcome::Delivered);
        core.transfer_ended(key(9), Outcome::Delivered);
        let Step::ApplyOutcomes { items, now_ms } = core.poll() else {
            panic!("outcomes come first on a wake");
        };
        assert_eq!(now_ms, T0 + 10);
        let got: Vec<(JobKey, Outcome)> = items.into_iter().map(|i| (i.key, i.outcome)).collect();
        assert_eq!(
            got,
            vec![
                (a, Outcome::Delivered),
                (b, Outcome::Failed(PANICKED_TRANSFER_ERROR.into()))
            ]
        );
        assert_eq!(core.poll(), Step::AgePins { now_ms: T0 + 10 });
        assert_eq!(core.in_flight().count(), 0);
        assert_eq!(core.report().outcomes, 2);
    }

    #[test]
    fn outcomes_leave_in_batches_of_at_most_the_bound() {
        let n = OUTCOME_BATCH_MAX + 3;
        let keys: Vec<JobKey> = (0..n)
            .map(|i| JobKey {
                seg: SegmentId([0; 32]),
                peer: NodeId::new(&format!("p{i}")).unwrap(),
            })
            .collect();
        let mut core = running(1, &keys);
        core.woke(at(T0 + 5, 5));
        for k in &keys {
            core.transfer_ended(k.clone(), Outcome::Busy);
        }
        let sizes: Vec<usize> = until_rest(&mut core)
            .into_iter()
            .filter_map(|s| match s {
                Step::ApplyOutcomes { items, .. } => Some(items.len()),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, vec![OUTCOME_BATCH_MAX, 3]);
    }

    #[test]
    fn jitter_samples_replay_from_the_seed() {
        let samples = |seed| {
            let keys: Vec<JobKey> = (1..=4).map(key).collect();
            let mut core = running(seed, &keys);
            core.woke(at(T0 + 1, 1));
            for k in &keys {
                core.transfer_ended(k.clone(), Outcome::TimedOut("x".into()));
            }
            let Step::ApplyOutcomes { items, .. } = core.poll() else {
                panic!("outcomes first");
            };
            items.iter().map(|i| i.jitter_sample).collect::<Vec<u64>>()
        };
        assert_eq!(samples(5), samples(5));
        assert_ne!(samples(5), samples(6));
    }

    #[test]
    fn inv_14_graceful_shutdown_applies_what_ended_and_refunds_the_rest() {
        let (a, b, c) = (key(1), key(2), key(3));
        let mut core = running(1, &[a.clone(), b.clone(), c.clone()]);
        core.shutdown(at(T0 + 50, 50));
        assert_eq!(
            core.poll(),
            Step::CancelAll {
                keys: vec![a.clone(), b.clone(), c.clone()]
            }
        );
        // b had ended before it could be cancelled.
        core.transfer_ended(b.clone(), Outcome::Delivered);
        let Step::ApplyOutcomes { items, now_ms } = core.poll() else {
            panic!("the ended outcome is kept");
        };
        assert_eq!((items.len(), &items[0].key, now_ms), (1, &b, T0 + 50));
        assert_eq!(
            core.poll(),
            Step::Refund {
                keys: vec![a, c],
                now_ms: T0 + 50
            }
        );
        let report = ExecutorReport {
            started: 3,
            outcomes: 1,
            refunded: 2,
            wakeups: 1,
        };
        assert_eq!(
            core.poll(),
            Step::Stop {
                report: report.clone()
            }
        );
        assert!(core.is_stopped());
        // Nothing starts after shutdown, whatever the shell reports.
        core.woke(at(T0 + 60, 60));
        assert_eq!(
            core.poll(),
            Step::Stop {
                report: ExecutorReport {
                    wakeups: 2,
                    ..report
                }
            }
        );
    }

    #[test]
    fn shutdown_with_nothing_in_flight_stops_at_once() {
        let mut core = running(1, &[]);
        core.shutdown(at(T0 + 1, 1));
        assert_eq!(core.poll(), Step::CancelAll { keys: vec![] });
        assert!(matches!(core.poll(), Step::Stop { .. }));
    }

    #[test]
    fn sleep_lasts_until_the_next_due_time_at_most_the_wake_interval() {
        let now = at(T0, 1_000);
        assert_eq!(sleep_deadline(now, None, WAKE_MAX_MS), None);
        assert_eq!(
            sleep_deadline(now, Some(T0 + 1_500), WAKE_MAX_MS),
            Some(Deadline {
                wall_ms: T0 + 1_500,
                mono_ms: 2_500
            })
        );
        // Past due: wake at once. Far: at most the interval.
        assert_eq!(
            sleep_deadline(now, Some(T0 - 10), WAKE_MAX_MS),
            Some(Deadline {
                wall_ms: T0,
                mono_ms: 1_000
            })
        );
        assert_eq!(
            sleep_deadline(now, Some(T0 + 10 * WAKE_MAX_MS), WAKE_MAX_MS),
            Some(Deadline {
                wall_ms: T0 + WAKE_MAX_MS,
                mono_ms: 1_000 + WAKE_MAX_MS
            })
        );
        // The core hands out the same.
        let mut core = ExecCore::new(&cfg(), 1, now);
        until_rest(&mut core);
        core.woke(at(T0 + 3, 1_003));
        core.poll();
        core.poll();
        core.picked(vec![], Some(T0 + 2 * WAKE_MAX_MS));
        assert_eq!(
            core.poll(),
            Step::Sleep {
                until: Some(Deadline {
                    wall_ms: T0 + 3 + WAKE_MAX_MS,
                    mono_ms: 1_003 + WAKE_MAX_MS
                })
            }
        );
    }

    #[test]
    fn inv_14_a_wall_clock_jump_reclamps_first_on_the_wake_that_notices_it() {
        let mut core = running(1, &[]);
        core.woke(at(T0 + 1_000, 1_000));
        assert_eq!(
            until_rest(&mut core)[0],
            Step::AgePins { now_ms: T0 + 1_000 }
        );
        core.woke(at(T0 - 86_400_000, 2_000));
        let steps = until_rest(&mut core);
        assert_eq!(
            steps[0],
            Step::Reclamp {
                now_ms: T0 - 86_400_000,
                jump_ms: -86_400_000 - 2_000
            }
        );
        assert_eq!(
            steps
                .iter()
                .filter(|s| matches!(s, Step::Reclamp { .. }))
                .count(),
            1
        );
        // Measured from the new reading: the next wake sees no jump.
        core.woke(at(T0 - 86_400_000 + 500, 2_500));
        assert!(
            !until_rest(&mut core)
                .iter()
                .any(|s| matches!(s, Step::Reclamp { .. }))
        );
    }

    #[test]
    fn every_wake_ages_pins_once_then_picks_until_nothing_is_due() {
        let mut core = running(1, &[]);
        core.woke(at(T0 + 10, 10));
        let steps = until_rest(&mut core);
        assert_eq!(
            steps,
            vec![
                Step::AgePins { now_ms: T0 + 10 },
                Step::Pick {
                    now_ms: T0 + 10,
                    limit: START_BATCH_MAX
                },
                Step::Sleep { until: None },
            ]
        );
        assert_eq!(core.report().wakeups, 1);
    }
}
