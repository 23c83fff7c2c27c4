//! The executor: the tokio shell around one node's [`Relay`], driving an [`ExecCore`].
//!
//! The core decides (see [`crate::exec_core`]): release aged dead-letter pins; pick the jobs
//! that are due under the concurrency caps; record their starts durably (one transaction per
//! batch) and only then spawn their transfers; commit outcomes in batches; sleep until the next
//! due time. This shell performs each step — the ledger operations through [`Relay`], transfers
//! as tokio tasks through the [`Transport`], time through a [`Clock`] — and waits for whichever
//! comes first: a transfer ending (it and any others that ended meanwhile are reported), the
//! scheduler changing (new jobs, requeues), the deadline, or shutdown.
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
//! - A jump of the wall clock (wall-clock time moving more than
//!   [`JUMP_TOLERANCE_MS`](base::clock::JUMP_TOLERANCE_MS) apart from monotonic time between
//!   two wakes: [`wall_clock_jump_ms`](base::clock::wall_clock_jump_ms)) is
//!   logged as a warning and waiting due times are clamped again into
//!   `[now, now + backoff_max_ms]`, as at load: jobs are neither lost nor frozen by it.
//!
//! The ordering and batching guarantees are the core's, proven by its unit tests and by every
//! harness test (the simulation drives the same core); this shell adds the tokio specifics: a
//! transfer is spawned only when the core hands it out, after `record_starts` returned; a task
//! that panics is reported as a failed attempt; at shutdown every task is aborted and joined
//! before the core decides what to commit and what to refund.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use crate::clock::{Clock, ms};
use crate::core::{JobKey, Outcome};
use crate::error::RelayError;
pub use crate::exec_core::ExecutorReport;
use crate::exec_core::{ExecCore, Reading, Step};
use crate::relay::Relay;
use crate::transport::Transport;

/// Runs one node's transfers. See the module docs.
#[derive(Debug)]
pub struct Executor<T, C: ?Sized> {
    relay: Relay,
    transport: Arc<T>,
    clock: Arc<C>,
    seed: u64,
}

enum Wake {
    Shutdown,
    Ended(Result<(tokio::task::Id, (JobKey, Outcome)), JoinError>),
    Changed,
    Timer,
}

/// The clocks, read together: the core's [`Reading`] (monotonic time counted from the run's
/// start) and the tokio instant it was taken at, from which deadlines are measured exactly.
#[derive(Debug, Clone, Copy)]
struct Now {
    reading: Reading,
    instant: Instant,
}

impl<T: Transport, C: Clock + ?Sized> Executor<T, C> {
    /// An executor for `relay`, drawing jitter from an RNG seeded with `seed`.
    pub fn new(relay: Relay, transport: Arc<T>, clock: Arc<C>, seed: u64) -> Self {
        Executor {
            relay,
            transport,
            clock,
            seed,
        }
    }

    fn read(&self, origin: Instant) -> Now {
        let instant = self.clock.instant();
        let mono = instant.saturating_duration_since(origin).as_millis();
        Now {
            reading: Reading {
                wall_ms: self.clock.now_ms(),
                mono_ms: u64::try_from(mono).unwrap_or(u64::MAX),
            },
            instant,
        }
    }

    /// Runs until `shutdown` resolves or the ledger fails (a storage failure: fatal).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ExecutorReport, RelayError> {
        tokio::pin!(shutdown);
        let relay = self.relay.clone();
        let cfg = relay.config().clone();
        let origin = self.clock.instant();
        let mut now = self.read(origin);
        let mut core = ExecCore::new(&cfg, self.seed, now.reading);
        let mut tasks: JoinSet<(JobKey, Outcome)> = JoinSet::new();
        // Which job each task sends: to report the right job when a task is cancelled or
        // panics. Only looked up, never iterated.
        let mut running: HashMap<tokio::task::Id, JobKey> = HashMap::new();
        loop {
            match core.poll() {
                Step::Reclamp { now_ms, jump_ms } => {
                    tracing::warn!(
                        node_id = %cfg.node_id,
                        jump_ms,
                        "wall clock jumped; freshness checks and due times follow the new time"
                    );
                    // The executor is the node's one detector: the relay keeps the jump for
                    // the operator's status.
                    relay.clock_jumped(now_ms, jump_ms);
                }
                Step::ApplyOutcomes { items, now_ms } => {
                    relay.apply_outcomes(items, now_ms).await?;
                }
                Step::AgePins { now_ms } => relay.age_dead_pins(now_ms).await?,
                Step::Pick { now_ms, limit } => {
                    let keys = relay.pick(now_ms, limit);
                    core.picked(keys, relay.next_wake_ms());
                }
                Step::RecordStarts { keys, now_ms } => {
                    let starts = relay.record_starts(keys, now_ms).await?;
                    core.starts_recorded(&starts);
                }
                Step::Spawn { keys } => {
                    for key in keys {
                        let timeout_ms = relay.config().attempt_timeout_ms;
                        let id = self.spawn(&mut tasks, key.clone(), timeout_ms);
                        running.insert(id, key);
                    }
                }
                Step::Sleep { until } => {
                    let deadline = until
                        .map(|d| now.instant + ms(d.mono_ms.saturating_sub(now.reading.mono_ms)));
                    let wake = tokio::select! {
                        biased;
                        () = &mut shutdown => Wake::Shutdown,
                        Some(ended) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                            Wake::Ended(ended)
                        }
                        () = relay.changed() => Wake::Changed,
                        () = async {
                            match deadline {
                                Some(at) => tokio::time::sleep_until(at).await,
                                None => std::future::pending().await,
                            }
                        } => Wake::Timer,
                    };
                    now = self.read(origin);
                    match wake {
                        Wake::Shutdown => core.shutdown(now.reading),
                        Wake::Changed | Wake::Timer => core.woke(now.reading),
                        Wake::Ended(first) => {
                            core.woke(now.reading);
                            report_ended(&mut core, &mut running, first);
                            // Others that ended meanwhile join this wake's batch; at most one
                            // per task, so bounded by the transfers in flight.
                            while let Some(ended) = tasks.try_join_next_with_id() {
                                report_ended(&mut core, &mut running, ended);
                            }
                        }
                    }
                }
                Step::CancelAll { .. } => {
                    // Nothing new starts; cancel what runs; keep what already ended. A task
                    // cancelled here is not reported: the core refunds it.
                    tasks.abort_all();
                    while let Some(ended) = tasks.join_next_with_id().await {
                        match ended {
                            Err(e) if e.is_cancelled() => {
                                running.remove(&e.id());
                            }
                            ended => report_ended(&mut core, &mut running, ended),
                        }
                    }
                }
                Step::Refund { keys, now_ms } => relay.refund(keys, now_ms).await?,
                Step::Stop { report } => {
                    tracing::info!(
                        node_id = %cfg.node_id,
                        started = report.started,
                        outcomes = report.outcomes,
                        refunded = report.refunded,
                        "relay executor stopped"
                    );
                    return Ok(report);
                }
            }
        }
    }

    fn spawn(
        &self,
        tasks: &mut JoinSet<(JobKey, Outcome)>,
        key: JobKey,
        attempt_timeout_ms: u64,
    ) -> tokio::task::Id {
        let transport = self.transport.clone();
        let timeout = ms(attempt_timeout_ms);
        tasks
            .spawn(async move {
                let sent = tokio::time::timeout(timeout, transport.send(&key.peer, key.seg)).await;
                let outcome = sent.unwrap_or_else(|_| {
                    Outcome::TimedOut(format!(
                        "no outcome within attempt_timeout_ms ({} ms)",
                        timeout.as_millis()
                    ))
                });
                (key, outcome)
            })
            .id()
    }
}

/// Reports one finished task to the core: its outcome, or a failed attempt if it panicked.
fn report_ended(
    core: &mut ExecCore,
    running: &mut HashMap<tokio::task::Id, JobKey>,
    ended: Result<(tokio::task::Id, (JobKey, Outcome)), JoinError>,
) {
    match ended {
        Ok((id, (key, outcome))) => {
            running.remove(&id);
            core.transfer_ended(key, outcome);
        }
        Err(e) => {
            if let Some(key) = running.remove(&e.id()) {
                tracing::error!(seg_id = %key.seg, peer_id = %key.peer, "transport task panicked");
                core.transfer_panicked(key);
            }
        }
    }
}
