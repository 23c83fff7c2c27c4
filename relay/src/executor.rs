//! The executor: the tokio shell around one node's [`Relay`].
//!
//! It loops: release aged dead-letter pins; pick the jobs that are due under the concurrency
//! caps; record their starts durably (one transaction per batch) and only then spawn their
//! transfers through the [`Transport`]; then wait for whichever comes first — a transfer ending
//! (its outcome and any others that ended meanwhile are committed in one transaction), the
//! scheduler changing (new jobs, requeues), the next due time, or shutdown.
//!
//! Guarantees:
//! - No polling: with nothing pending it sleeps until woken; with jobs pending it sleeps until
//!   the earliest due time, at most `wake_interval_max_ms` (so a wall-clock jump is noticed).
//! - A transfer starts only after its attempt is committed; an outcome is logged and its slot
//!   reused only after it is committed.
//! - Graceful shutdown stops starting transfers, cancels those in flight, commits the outcomes
//!   of those that had already ended, and refunds the attempts of those cut short, durably,
//!   before `run` returns.
//! - Jitter comes from a ChaCha RNG seeded by the caller.
//! - A jump of the wall clock (wall-clock time moving more than [`base::clock::JUMP_TOLERANCE_MS`] apart
//!   from monotonic time between two wakes) is logged as a warning and waiting due times are
//!   clamped again into `[now, now + backoff_max_ms]`, as at load: jobs are neither lost nor
//!   frozen by it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::task::JoinSet;

use base::clock::JumpDetector;

use crate::clock::{Clock, ms};
use crate::core::{JobKey, Outcome};
use crate::error::RelayError;
use crate::ledger::{OutcomeIn, Start};
use crate::limits::{OUTCOME_BATCH_MAX, START_BATCH_MAX};
use crate::relay::Relay;
use crate::transport::Transport;

/// Counters of one executor run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExecutorReport {
    /// Attempts started (recorded and sent).
    pub started: u64,
    /// Outcomes committed.
    pub outcomes: u64,
    /// Attempts refunded at shutdown.
    pub refunded: u64,
    /// Times the loop woke up (a measure of idle cost: it must not poll).
    pub wakeups: u64,
}

/// Runs one node's transfers. See the module docs.
#[derive(Debug)]
pub struct Executor<T, C: ?Sized> {
    relay: Relay,
    transport: Arc<T>,
    clock: Arc<C>,
    rng: ChaCha8Rng,
}

enum Wake {
    Shutdown,
    Ended(Result<(JobKey, Outcome), tokio::task::JoinError>),
    Changed,
    Timer,
}

impl<T: Transport, C: Clock + ?Sized> Executor<T, C> {
    /// An executor for `relay`, drawing jitter from an RNG seeded with `seed`.
    pub fn new(relay: Relay, transport: Arc<T>, clock: Arc<C>, seed: u64) -> Self {
        Executor {
            relay,
            transport,
            clock,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Runs until `shutdown` resolves or the ledger fails (a storage failure: fatal).
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ExecutorReport, RelayError> {
        tokio::pin!(shutdown);
        let relay = self.relay.clone();
        let cfg = relay.config().clone();
        let mut report = ExecutorReport::default();
        let mut tasks: JoinSet<(JobKey, Outcome)> = JoinSet::new();
        // Which job each task sends: to refund or fail the right job when a task is cancelled or
        // panics. Only looked up, never iterated.
        let mut running: HashMap<tokio::task::Id, JobKey> = HashMap::new();
        // The node's one clock-jump detector: the executor wakes at least every
        // `wake_interval_max_ms`, so a jump is noticed within that.
        let mut jumps = JumpDetector::new(self.clock.read());
        loop {
            let reading = self.clock.read();
            let now = reading.wall_ms;
            if let Some(jump_ms) = jumps.observe(reading) {
                tracing::warn!(
                    node_id = %cfg.node_id,
                    jump_ms,
                    "wall clock jumped; freshness checks and due times follow the new time"
                );
                relay.clock_jumped(now, jump_ms);
            }
            relay.age_dead_pins(now).await?;
            loop {
                let keys = relay.pick(now, START_BATCH_MAX);
                if keys.is_empty() {
                    break;
                }
                for start in relay.record_starts(keys, now).await? {
                    let Start::Started { key, .. } = start else {
                        continue;
                    };
                    report.started += 1;
                    let transport = self.transport.clone();
                    let timeout = ms(cfg.attempt_timeout_ms);
                    let task_key = key.clone();
                    let handle = tasks.spawn(async move {
                        let sent = tokio::time::timeout(
                            timeout,
                            transport.send(&task_key.peer, task_key.seg),
                        )
                        .await;
                        let outcome = sent.unwrap_or_else(|_| {
                            Outcome::TimedOut(format!(
                                "no outcome within attempt_timeout_ms ({} ms)",
                                timeout.as_millis()
                            ))
                        });
                        (task_key, outcome)
                    });
                    running.insert(handle.id(), key);
                }
            }
            let sleep_ms = relay
                .next_wake_ms()
                .map(|w| w.saturating_sub(now).min(cfg.wake_interval_max_ms));
            let deadline = sleep_ms.map(|d| self.clock.instant() + ms(d));
            let wake = tokio::select! {
                biased;
                () = &mut shutdown => Wake::Shutdown,
                Some(ended) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    Wake::Ended(ended.map(|(id, v)| { running.remove(&id); v }))
                }
                () = relay.changed() => Wake::Changed,
                () = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => Wake::Timer,
            };
            report.wakeups += 1;
            match wake {
                Wake::Shutdown => break,
                Wake::Changed | Wake::Timer => {}
                Wake::Ended(first) => {
                    let mut items = Vec::new();
                    self.collect(first, &mut running, &mut items);
                    while items.len() < OUTCOME_BATCH_MAX {
                        match tasks.try_join_next_with_id() {
                            Some(ended) => {
                                let ended = ended.map(|(id, v)| {
                                    running.remove(&id);
                                    v
                                });
                                self.collect(ended, &mut running, &mut items)
                            }
                            None => break,
                        }
                    }
                    report.outcomes += items.len() as u64;
                    relay.apply_outcomes(items, self.clock.now_ms()).await?;
                }
            }
        }

        // Graceful shutdown: nothing new starts; cancel what runs; keep what already ended.
        tasks.abort_all();
        let mut ended = Vec::new();
        let mut cut_short = Vec::new();
        while let Some(res) = tasks.join_next_with_id().await {
            match res {
                Ok((id, (key, outcome))) => {
                    running.remove(&id);
                    ended.push(OutcomeIn {
                        key,
                        outcome,
                        jitter_sample: self.rng.random(),
                    });
                }
                Err(e) => {
                    if let Some(key) = running.remove(&e.id()) {
                        if e.is_panic() {
                            ended.push(self.panicked(key));
                        } else {
                            cut_short.push(key);
                        }
                    }
                }
            }
        }
        let now = self.clock.now_ms();
        if !ended.is_empty() {
            report.outcomes += ended.len() as u64;
            relay.apply_outcomes(ended, now).await?;
        }
        if !cut_short.is_empty() {
            report.refunded = cut_short.len() as u64;
            relay.refund(cut_short, now).await?;
        }
        tracing::info!(
            node_id = %cfg.node_id,
            started = report.started,
            outcomes = report.outcomes,
            refunded = report.refunded,
            "relay executor stopped"
        );
        Ok(report)
    }

    fn panicked(&mut self, key: JobKey) -> OutcomeIn {
        OutcomeIn {
            key,
            outcome: Outcome::Failed("transport task panicked".into()),
            jitter_sample: self.rng.random(),
        }
    }

    fn collect(
        &mut self,
        ended: Result<(JobKey, Outcome), tokio::task::JoinError>,
        running: &mut HashMap<tokio::task::Id, JobKey>,
        items: &mut Vec<OutcomeIn>,
    ) {
        match ended {
            Ok((key, outcome)) => items.push(OutcomeIn {
                key,
                outcome,
                jitter_sample: self.rng.random(),
            }),
            Err(e) => {
                // Only a panic ends a task here (cancellation happens at shutdown only).
                if let Some(key) = running.remove(&e.id()) {
                    tracing::error!(seg_id = %key.seg, peer_id = %key.peer, "transport task panicked");
                    items.push(self.panicked(key));
                }
            }
        }
    }
}
