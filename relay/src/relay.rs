//! [`Relay`]: one node's relay engine — the ledger in the store's database, and the in-memory
//! [`Scheduler`] that mirrors its pending jobs — with the operations the executor, the harness
//! and the operator use.
//!
//! Guarantees:
//! - Every ledger change is one operation through the store's committer ([`store::writer`]):
//!   batched with whatever else is queued, durable before it is answered. The scheduler is
//!   updated in the committer's completion callback, so in commit order, and only for committed
//!   changes; events are logged by the caller after the commit (so a test's thread-local log
//!   capture sees them).
//! - Each operation exists in a blocking form (`*_blocking`, for the discrete-event harness, the
//!   CLI and tests) and an async form (for the tokio executor and the control socket); both run
//!   the same ledger function.
//! - Never call a blocking operation while holding the scheduler lock (the committer takes it).
//! - [`Relay::counters`] reads the ledger's job counts and, under the scheduler's lock, the
//!   totals since the process started, which the completion callbacks update together with the
//!   scheduler (see [`crate::counters`]).

use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard};

use base::DiskMode;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};
use store::crash;
use store::manifest::SuccessCondition;
use store::mutants;
use store::{IngestError, IngestOptions, IngestOutcome, SegmentId, Store, StoreError, Stored};
use tokio::sync::Notify;

use crate::core::{self, JobKey, JobView, Scheduler, Tally, Verdict};
use crate::counters::{JobCounts, RelayCounters, RelayTotals};
use crate::error::{RelayError, db};
use crate::ledger::{
    self, Applied, Effects, Event, OutOfBand, OutcomeIn, Purge, Requeue, SchedOp, Scheduled, Start,
};
use crate::limits::{AGE_BATCH_MAX, RelayConfig};
use crate::peer::NodeId;
use crate::tables::{
    CountSlot, DEAD, DUE, DeadRow, JOB_COUNTS, JOBS, JobRow, JobState, PROPAGATION, PropRow,
    decode, job_key, parse_due_key, parse_job_key, segment_range,
};

type TxnFn<T> = Box<dyn FnOnce(&WriteTransaction) -> Result<(T, Effects), redb::Error> + Send>;

/// One node's relay engine. Cheap to clone; clones share the ledger and scheduler.
#[derive(Debug, Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    /// Replaced whole by [`Relay::reconfigure`]; readers take the one in force at the time.
    cfg: std::sync::RwLock<Arc<RelayConfig>>,
    shared: Arc<Shared>,
}

/// What the committer's completion callbacks touch. It holds no [`Store`]: a callback must
/// never drop the last handle on the store on the committer thread (the store's drop joins that
/// thread).
#[derive(Debug)]
struct Shared {
    sched: Mutex<Scheduler>,
    /// Taken only while `sched` is held, so a snapshot of both sees whole transactions.
    totals: Mutex<RelayTotals>,
    wake: Notify,
    /// The last wall-clock jump the executor noticed, for the operator's status.
    last_clock_jump: Mutex<Option<ClockJump>>,
}

/// What [`Relay::reconfigure_blocking`] did to the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// Pending jobs cancelled: their peer left `known_peers`.
    pub cancelled: usize,
    /// Jobs scheduled for peers added, one per stored segment each.
    pub scheduled: usize,
}

/// A jump of the wall clock, as the executor noticed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockJump {
    /// Wall-clock time just after the jump (UTC ms).
    pub at_ms: u64,
    /// How far it jumped; negative: backwards.
    pub jump_ms: i64,
}

impl Inner {
    fn cfg(&self) -> Arc<RelayConfig> {
        self.cfg.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn sched(&self) -> MutexGuard<'_, Scheduler> {
        self.shared.sched()
    }

    fn apply(&self, fx: &Effects) {
        self.shared.apply(fx)
    }
}

impl Shared {
    fn sched(&self) -> MutexGuard<'_, Scheduler> {
        self.sched.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn totals(&self) -> MutexGuard<'_, RelayTotals> {
        self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a committed transaction's scheduler changes and counts its events, under the
    /// scheduler's lock (so [`Relay::counters`] sees whole transactions).
    fn apply(&self, fx: &Effects) {
        if fx.sched.is_empty() && fx.events.is_empty() {
            return;
        }
        {
            let mut s = self.sched();
            self.totals().record(&fx.events);
            for op in &fx.sched {
                match op {
                    SchedOp::Upsert(k, v) => s.upsert(k.clone(), *v),
                    SchedOp::Remove(k) => s.remove(k),
                    SchedOp::Finish(k) => s.finish(k),
                    SchedOp::AddDeadPin(k, t) => s.add_dead_pin(k.clone(), *t),
                    SchedOp::RemoveDeadPin(k) => s.remove_dead_pin(k),
                }
            }
        }
        if !fx.sched.is_empty() {
            self.wake.notify_one();
        }
    }
}

/// A job as the status view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    pub peer: NodeId,
    pub state: JobState,
    pub attempts: u32,
    pub store_full_attempts: u32,
    /// When the next attempt may start (pending jobs; clamped as the scheduler sees it).
    pub next_due_ms: Option<u64>,
    /// A transfer is running now.
    pub in_flight: bool,
    pub last_error: Option<String>,
    /// When it became a dead letter (unpurged dead letters).
    pub dead_at_ms: Option<u64>,
    pub purged: bool,
    pub requeues: u32,
}

/// Propagation status of one segment: its condition, where it stands, and every job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentStatus {
    pub seg: SegmentId,
    pub condition: SuccessCondition,
    pub source: String,
    pub scheduled_at_ms: u64,
    /// When the condition first held; never cleared.
    pub propagated_at_ms: Option<u64>,
    /// `Holds` once propagated; `Never` under `all_peers` after a refusal or a purge.
    pub verdict: Verdict,
    pub tally: Tally,
    pub jobs: Vec<JobStatus>,
}

/// A dead letter as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub key: JobKey,
    pub attempts: u32,
    pub store_full_attempts: u32,
    pub last_error: String,
    pub dead_at_ms: u64,
    /// When its pin on the segment is released (`None`: released already).
    pub pin_release_at_ms: Option<u64>,
}

/// An import's outboard and whom to tell once its segment is in flight (see
/// [`Relay::ingest_reader_forwarding`]).
type Forwarding<'a> = (&'a [u8], &'a mut dyn FnMut(SegmentId));

impl Relay {
    /// Opens the relay on `store`'s database: creates its tables, cancels the pending jobs of
    /// peers no longer in `known_peers`, and loads pending jobs (due times clamped to
    /// `[now, now + backoff_max_ms]`) and dead-letter pins into the scheduler.
    pub fn open(store: Store, cfg: RelayConfig, now_ms: u64) -> Result<Relay, RelayError> {
        cfg.validate()?;
        crate::tables::init(&store)?;
        let relay = Relay {
            inner: Arc::new(Inner {
                store,
                cfg: std::sync::RwLock::new(Arc::new(cfg)),
                shared: Arc::new(Shared {
                    sched: Mutex::new(Scheduler::new()),
                    last_clock_jump: Mutex::new(None),
                    totals: Mutex::new(RelayTotals::default()),
                    wake: Notify::new(),
                }),
            }),
        };
        let cfg = relay.inner.cfg();
        relay.run_blocking(Box::new(move |txn| {
            Ok(((), ledger::cancel_unknown_peers(txn, now_ms, &cfg)?))
        }))?;
        relay.load(now_ms)?;
        Ok(relay)
    }

    fn load(&self, now_ms: u64) -> Result<(), RelayError> {
        let read = self.read()?;
        let mut s = Scheduler::new();
        let due = read.open_table(DUE).map_err(db)?;
        let mut jobs = 0usize;
        for entry in due.iter().map_err(db)? {
            // Mutation point (INV-05, INV-14, INV-25): pending jobs are not resumed after a
            // restart (they stay pending in the ledger, and nothing runs them).
            if mutants::active("forget_pending_at_restart") {
                break;
            }
            let (k, v) = entry.map_err(db)?;
            let (due_ms, key) = parse_due_key(k.value())?;
            // Mutation point (INV-14): a restart forgets the backoff and retries at once.
            let due_ms = match mutants::active("lose_due_times_at_restart") {
                true => now_ms,
                false => core::clamp_due_ms(due_ms, now_ms, &self.inner.cfg()),
            };
            let view = JobView {
                priority: v.value(),
                due_ms,
            };
            s.upsert(key, view);
            jobs += 1;
        }
        let dead = read.open_table(DEAD).map_err(db)?;
        for entry in dead.iter().map_err(db)? {
            let (k, v) = entry.map_err(db)?;
            let row: DeadRow = decode("relay-dead-letters-v1", v.value())?;
            if let Some(at) = row.pin_release_at_ms {
                s.add_dead_pin(parse_job_key(k.value())?, at);
            }
        }
        tracing::info!(
            node_id = %self.inner.cfg().node_id,
            pending = jobs,
            "relay ledger loaded"
        );
        *self.inner.sched() = s;
        self.inner.shared.wake.notify_one();
        Ok(())
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<RelayConfig> {
        self.inner.cfg()
    }

    /// Puts `cfg` in force (a reload of the node's configuration): jobs of peers no longer in
    /// `known_peers` are cancelled, peers added get jobs for the stored segments, and the
    /// limits apply from the next pick on. `node_id` and `disk_mode` cannot change.
    pub fn reconfigure_blocking(
        &self,
        cfg: RelayConfig,
        now_ms: u64,
    ) -> Result<Reconfigured, RelayError> {
        cfg.validate()?;
        let old = self.inner.cfg();
        if cfg.node_id != old.node_id || cfg.disk_mode != old.disk_mode {
            return Err(RelayError::Config(crate::limits::ConfigError::new(
                "node_id",
                "the node id cannot change while the relay runs".into(),
            )));
        }
        let added: std::collections::BTreeSet<NodeId> = cfg
            .known_peers
            .difference(&old.known_peers)
            .cloned()
            .collect();
        let cfg = Arc::new(cfg);
        *self.inner.cfg.write().unwrap_or_else(|e| e.into_inner()) = cfg.clone();
        let report = self.run_blocking(Box::new(move |txn| {
            let mut fx = ledger::cancel_unknown_peers(txn, now_ms, &cfg)?;
            let cancelled = fx
                .events
                .iter()
                .filter(|e| matches!(e, Event::Cancelled { .. }))
                .count();
            let (scheduled, mut more) = ledger::schedule_added_peers(txn, &added, now_ms, &cfg)?;
            fx.sched.append(&mut more.sched);
            fx.events.append(&mut more.events);
            let report = Reconfigured {
                cancelled,
                scheduled: scheduled.iter().map(|s| s.jobs.len()).sum(),
            };
            Ok((report, fx))
        }))?;
        self.inner.sched().reclamp(now_ms, &self.inner.cfg());
        self.inner.shared.wake.notify_one();
        Ok(report)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    fn read(&self) -> Result<redb::ReadTransaction, RelayError> {
        self.inner.store.database().begin_read().map_err(db)
    }

    /// Queues a ledger operation; `reply` gets its value and events after the commit (on the
    /// committer thread, after the scheduler was updated).
    fn submit<T, R>(&self, op: TxnFn<T>, reply: R) -> Result<(), RelayError>
    where
        T: Send + 'static,
        R: FnOnce(Result<(T, Vec<Event>), RelayError>) + Send + 'static,
    {
        // Only the scheduler goes into the callback, never the store (see `Shared`).
        let shared = self.inner.shared.clone();
        self.inner.store.writer().submit(
            op,
            move |res: Result<(T, Effects), StoreError>| match res {
                Ok((value, fx)) => {
                    shared.apply(&fx);
                    reply(Ok((value, fx.events)))
                }
                Err(e) => reply(Err(e.into())),
            },
        )?;
        Ok(())
    }

    fn run_blocking<T: Send + 'static>(&self, op: TxnFn<T>) -> Result<T, RelayError> {
        let (value, events) = self.run_events_blocking(op)?;
        events.iter().for_each(Event::log);
        Ok(value)
    }

    /// Submits `op` and blocks this thread until its batch committed.
    fn run_events_blocking<T: Send + 'static>(
        &self,
        op: TxnFn<T>,
    ) -> Result<(T, Vec<Event>), RelayError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(op, move |r| {
            // The waiter is blocked on `rx` below and cannot have gone away.
            let _ = tx.send(r);
        })?;
        rx.recv().map_err(|_| RelayError::Closed)?
    }

    async fn run<T: Send + 'static>(&self, op: TxnFn<T>) -> Result<T, RelayError> {
        let (value, events) = self.run_events(op).await?;
        events.iter().for_each(Event::log);
        Ok(value)
    }

    /// Like `run`, also handing back the events (already logged by nobody yet).
    async fn run_events<T: Send + 'static>(
        &self,
        op: TxnFn<T>,
    ) -> Result<(T, Vec<Event>), RelayError> {
        if self.inner.cfg().disk_mode == DiskMode::Inline {
            // A simulation's one thread waits for the commit itself: nothing else runs
            // meanwhile, so the reply arrives at the same point of every run of a seed.
            return self.run_events_blocking(op);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(op, move |r| {
            // A waiter that went away (its task was cancelled) no longer needs the answer; the
            // change is committed and applied to the scheduler all the same.
            let _ = tx.send(r);
        })?;
        // The reply is awaited on tokio's blocking pool rather than on this task. Waiting there
        // costs one pooled thread for the length of a commit, and it tells tokio that work is
        // in progress: a paused test clock does not auto-advance to the next timer while a
        // commit is on the committer thread, so tests on paused time see exactly the delays the
        // executor chose, not delays stretched by however long fsync took.
        match tokio::task::spawn_blocking(move || rx.blocking_recv()).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(RelayError::Closed),
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            // The runtime is shutting down: the commit goes on, nobody waits for it.
            Err(_) => Err(RelayError::Closed),
        }
    }

    // ---- scheduling new segments -------------------------------------------------------------

    /// The `extra` to pass to the store's ingest (`Store::ingest_reader`, `Ingest::finish`):
    /// schedules the segment's jobs inside the ingest's transaction. Hand the result to
    /// [`Relay::on_stored`] after the ingest returned.
    pub fn schedule_fn(
        &self,
        now_ms: u64,
    ) -> impl FnOnce(&WriteTransaction, &Stored<()>) -> Result<Scheduled, redb::Error> + Send + 'static
    {
        let cfg = self.inner.cfg();
        move |txn, stored| ledger::schedule_in_txn(txn, stored, &cfg, now_ms)
    }

    /// Tells the scheduler about the jobs a committed ingest created, logs, and wakes the
    /// executor.
    pub fn on_stored(&self, stored: &Stored<Scheduled>) {
        self.inner.apply(&stored.extra.effects);
        stored.extra.effects.events.iter().for_each(Event::log);
    }

    /// Ingests a whole `.seg` stream into the store with this relay's scheduling in the same
    /// transaction, then tells the scheduler.
    pub fn ingest_reader<R: Read>(
        &self,
        reader: R,
        opts: &IngestOptions,
        now_ms: u64,
    ) -> Result<IngestOutcome<Scheduled>, IngestError> {
        if mutants::active("schedule_outside_ingest_txn") {
            return self.ingest_then_schedule(reader, opts, now_ms);
        }
        self.ingest(reader, opts, now_ms, None)
    }

    /// [`Relay::ingest_reader`] of an import whose payload's outboard the importer computed:
    /// checked first, the payload verified group by group, and `in_flight` told once the
    /// segment can be forwarded while the rest is read (see
    /// [`store::Store::ingest_reader_forwarding`]).
    pub fn ingest_reader_forwarding<R: Read>(
        &self,
        reader: R,
        opts: &IngestOptions,
        now_ms: u64,
        outboard: &[u8],
        in_flight: &mut dyn FnMut(SegmentId),
    ) -> Result<IngestOutcome<Scheduled>, IngestError> {
        self.ingest(reader, opts, now_ms, Some((outboard, in_flight)))
    }

    /// Stores the stream with its jobs scheduled in the ingest's transaction (forwarding it
    /// while it arrives when given its outboard), then tells the scheduler.
    fn ingest<R: Read>(
        &self,
        reader: R,
        opts: &IngestOptions,
        now_ms: u64,
        forwarding: Option<Forwarding<'_>>,
    ) -> Result<IngestOutcome<Scheduled>, IngestError> {
        let store = &self.inner.store;
        let schedule = self.schedule_fn(now_ms);
        let out = match forwarding {
            None => store.ingest_reader(reader, opts, now_ms, schedule)?,
            Some((outboard, in_flight)) => store
                .ingest_reader_forwarding(reader, opts, now_ms, outboard, in_flight, schedule)?,
        };
        if let IngestOutcome::Stored(stored) = &out {
            self.on_stored(stored);
        }
        Ok(out)
    }

    /// Mutation point (INV-11): the segment is committed first and its jobs in a transaction of
    /// their own afterwards, so a crash in between (`ingest.after_commit`) leaves a stored
    /// segment that owes nothing.
    fn ingest_then_schedule<R: Read>(
        &self,
        reader: R,
        opts: &IngestOptions,
        now_ms: u64,
    ) -> Result<IngestOutcome<Scheduled>, IngestError> {
        let stored = match self
            .inner
            .store
            .ingest_reader(reader, opts, now_ms, |_, _| Ok(()))?
        {
            IngestOutcome::Stored(stored) => stored,
            IngestOutcome::AlreadyHave { id, holding } => {
                return Ok(IngestOutcome::AlreadyHave { id, holding });
            }
        };
        let (cfg, plain) = (self.inner.cfg(), stored.clone());
        let extra = self
            .run_blocking(Box::new(move |txn| {
                let scheduled = ledger::schedule_in_txn(txn, &plain, &cfg, now_ms)?;
                let fx = scheduled.effects.clone();
                Ok((scheduled, fx))
            }))
            .map_err(|_| IngestError::Protocol {
                id: stored.id,
                reason: "scheduling failed",
            })?;
        Ok(IngestOutcome::Stored(Stored {
            id: stored.id,
            row: stored.row,
            lifecycle: stored.lifecycle,
            extra,
        }))
    }

    // ---- the engine's steps ------------------------------------------------------------------

    /// Picks up to `limit` jobs to start now (see [`Scheduler::pick`]) and marks them in flight.
    /// Record their starts next ([`Relay::record_starts`]); only those reported started may be
    /// sent.
    pub fn pick(&self, now_ms: u64, limit: usize) -> Vec<JobKey> {
        self.inner.sched().pick(now_ms, &self.inner.cfg(), limit)
    }

    /// The earliest time something is due (job or dead-letter pin release).
    pub fn next_wake_ms(&self) -> Option<u64> {
        self.inner.sched().next_wake_ms()
    }

    /// True when a job could start right now.
    pub fn can_start(&self, now_ms: u64) -> bool {
        self.inner.sched().can_start(now_ms, &self.inner.cfg())
    }

    /// Pending jobs known to the scheduler (in flight included).
    pub fn pending_count(&self) -> usize {
        self.inner.sched().pending()
    }

    /// Transfers in flight.
    pub fn in_flight_count(&self) -> usize {
        self.inner.sched().in_flight()
    }

    /// The scheduler's pending jobs with their views and whether each is in flight, in key order.
    pub fn scheduled(&self) -> Vec<(JobKey, JobView, bool)> {
        self.inner
            .sched()
            .jobs()
            .map(|(k, v, f)| (k.clone(), v, f))
            .collect()
    }

    /// Re-clamps waiting due times into `[now, now + backoff_max_ms]` after the wall clock
    /// jumped (the executor calls it when it sees a jump), as at load.
    pub fn reclamp(&self, now_ms: u64) {
        self.inner.sched().reclamp(now_ms, &self.inner.cfg());
        self.inner.shared.wake.notify_one();
    }

    /// The wall clock jumped by `jump_ms` (seen at `now_ms`): waiting due times are clamped
    /// again into `[now, now + backoff_max_ms]`, as at load, and the jump is kept for
    /// [`Relay::last_clock_jump`].
    pub fn clock_jumped(&self, now_ms: u64, jump_ms: i64) {
        *self
            .inner
            .shared
            .last_clock_jump
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(ClockJump {
            at_ms: now_ms,
            jump_ms,
        });
        self.reclamp(now_ms);
    }

    /// The last wall-clock jump noticed since the relay was opened.
    pub fn last_clock_jump(&self) -> Option<ClockJump> {
        *self
            .inner
            .shared
            .last_clock_jump
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves when the scheduler changed (new jobs, outcomes, requeues): the executor's wake-up.
    pub async fn changed(&self) {
        self.inner.shared.wake.notified().await
    }

    fn starts_op(&self, keys: Vec<JobKey>, now_ms: u64) -> TxnFn<Vec<Start>> {
        let cfg = self.inner.cfg();
        Box::new(move |txn| ledger::record_starts(txn, &keys, now_ms, &cfg))
    }

    /// Records the starts of picked jobs durably (one transaction).
    pub fn record_starts_blocking(
        &self,
        keys: Vec<JobKey>,
        now_ms: u64,
    ) -> Result<Vec<Start>, RelayError> {
        let starts = self.run_blocking(self.starts_op(keys, now_ms))?;
        crash_after_starts(&starts);
        Ok(starts)
    }

    /// Async form of [`Relay::record_starts_blocking`].
    pub async fn record_starts(
        &self,
        keys: Vec<JobKey>,
        now_ms: u64,
    ) -> Result<Vec<Start>, RelayError> {
        let starts = self.run(self.starts_op(keys, now_ms)).await?;
        crash_after_starts(&starts);
        Ok(starts)
    }

    fn outcomes_op(&self, items: Vec<OutcomeIn>, now_ms: u64) -> TxnFn<Vec<Applied>> {
        let cfg = self.inner.cfg();
        Box::new(move |txn| ledger::apply_outcomes(txn, &items, now_ms, &cfg))
    }

    /// Applies transfer outcomes durably (one transaction for the batch).
    pub fn apply_outcomes_blocking(
        &self,
        items: Vec<OutcomeIn>,
        now_ms: u64,
    ) -> Result<Vec<Applied>, RelayError> {
        let applied = self.run_blocking(self.outcomes_op(items, now_ms))?;
        crash_after_outcomes(&applied);
        Ok(applied)
    }

    /// Async form of [`Relay::apply_outcomes_blocking`].
    pub async fn apply_outcomes(
        &self,
        items: Vec<OutcomeIn>,
        now_ms: u64,
    ) -> Result<Vec<Applied>, RelayError> {
        let applied = self.run(self.outcomes_op(items, now_ms)).await?;
        crash_after_outcomes(&applied);
        Ok(applied)
    }

    fn refund_op(keys: Vec<JobKey>, now_ms: u64) -> TxnFn<()> {
        Box::new(move |txn| Ok(((), ledger::refund(txn, &keys, now_ms)?)))
    }

    /// Refunds the attempts of transfers cut short by a graceful shutdown (durably).
    pub fn refund_blocking(&self, keys: Vec<JobKey>, now_ms: u64) -> Result<(), RelayError> {
        self.run_blocking(Self::refund_op(keys, now_ms))
    }

    /// Async form of [`Relay::refund_blocking`].
    pub async fn refund(&self, keys: Vec<JobKey>, now_ms: u64) -> Result<(), RelayError> {
        self.run(Self::refund_op(keys, now_ms)).await
    }

    fn age_op(&self, now_ms: u64) -> Option<TxnFn<()>> {
        let keys = self.inner.sched().dead_pins_due(now_ms, AGE_BATCH_MAX);
        if keys.is_empty() {
            return None;
        }
        Some(Box::new(move |txn| {
            Ok(((), ledger::age_dead_pins(txn, &keys, now_ms)?))
        }))
    }

    /// Releases the pins of dead letters older than `dead_letter_pin_max_age_ms`.
    pub fn age_dead_pins_blocking(&self, now_ms: u64) -> Result<(), RelayError> {
        match self.age_op(now_ms) {
            Some(op) => self.run_blocking(op),
            None => Ok(()),
        }
    }

    /// Async form of [`Relay::age_dead_pins_blocking`].
    pub async fn age_dead_pins(&self, now_ms: u64) -> Result<(), RelayError> {
        match self.age_op(now_ms) {
            Some(op) => self.run(op).await,
            None => Ok(()),
        }
    }

    // ---- catch-up -----------------------------------------------------------------------------

    fn out_of_band_op(&self, key: JobKey, now_ms: u64) -> TxnFn<OutOfBand> {
        let cfg = self.inner.cfg();
        Box::new(move |txn| ledger::deliver_out_of_band(txn, &key, now_ms, &cfg))
    }

    /// After a committed catch-up delivery: the crash point if it completed the job, else a note.
    fn after_out_of_band(key: &JobKey, result: &OutOfBand) {
        if matches!(result, OutOfBand::Completed { .. }) {
            crash::point(crash::RELAY_AFTER_CATCHUP_COMMIT);
        } else {
            tracing::debug!(seg_id = %key.seg, peer_id = %key.peer, result = ?result, "catch-up delivery changed nothing");
        }
    }

    /// Completes the job (`seg`, `peer`) as delivered because `peer` pulled `seg` from this node
    /// (catch-up) and acknowledged it durably or answered "have": the network layer's
    /// `on_delivered` hook (INV-15). Whatever the job's state — pending (a transfer in flight
    /// then has its outcome ignored), a dead letter (resolved: out of the queue, pin released) —
    /// it ends delivered, the success condition is checked in the same transaction (INV-13), and
    /// `segment delivered … via=catch_up` is logged. A job already ended, or no job at all (the
    /// segment came from `peer`), is left alone; so calling it twice does nothing more. See
    /// [`ledger::deliver_out_of_band`].
    pub fn delivered_out_of_band_blocking(
        &self,
        seg: SegmentId,
        peer: &NodeId,
        now_ms: u64,
    ) -> Result<OutOfBand, RelayError> {
        let key = JobKey {
            seg,
            peer: peer.clone(),
        };
        let out = self.run_blocking(self.out_of_band_op(key.clone(), now_ms))?;
        Self::after_out_of_band(&key, &out);
        Ok(out)
    }

    /// Async form of [`Relay::delivered_out_of_band_blocking`].
    pub async fn delivered_out_of_band(
        &self,
        seg: SegmentId,
        peer: &NodeId,
        now_ms: u64,
    ) -> Result<OutOfBand, RelayError> {
        let key = JobKey {
            seg,
            peer: peer.clone(),
        };
        let out = self.run(self.out_of_band_op(key.clone(), now_ms)).await?;
        Self::after_out_of_band(&key, &out);
        Ok(out)
    }

    // ---- operator operations -----------------------------------------------------------------

    fn requeue_op(keys: Vec<JobKey>, now_ms: u64) -> TxnFn<Vec<(JobKey, Requeue)>> {
        Box::new(move |txn| {
            let mut fx = Effects::default();
            let mut out = Vec::new();
            for key in keys {
                let (r, f) = ledger::requeue(txn, &key, now_ms)?;
                fx.sched.extend(f.sched);
                fx.events.extend(f.events);
                out.push((key, r));
            }
            Ok((out, fx))
        })
    }

    /// After a committed requeue: the crash point if it requeued a job, and a note for each
    /// job it left alone.
    fn after_requeues(results: &[(JobKey, Requeue)]) {
        if results.iter().any(|(_, r)| *r == Requeue::Requeued) {
            crash::point(crash::RELAY_AFTER_REQUEUE_COMMIT);
        }
        for (key, r) in results {
            if *r != Requeue::Requeued {
                tracing::info!(seg_id = %key.seg, peer_id = %key.peer, result = %r, "requeue did nothing");
            }
        }
    }

    /// Requeues one dead letter with fresh attempts. A second requeue of the same job does
    /// nothing (it is no longer dead) and says so (INV-22).
    pub fn requeue_blocking(&self, key: &JobKey, now_ms: u64) -> Result<Requeue, RelayError> {
        let out = self.run_blocking(Self::requeue_op(vec![key.clone()], now_ms))?;
        Self::after_requeues(&out);
        Ok(out.into_iter().next().map_or(Requeue::NotFound, |(_, r)| r))
    }

    /// Requeues these jobs in one transaction. Returns what happened to each.
    pub fn requeue_keys_blocking(
        &self,
        keys: Vec<JobKey>,
        now_ms: u64,
    ) -> Result<Vec<(JobKey, Requeue)>, RelayError> {
        let out = self.run_blocking(Self::requeue_op(keys, now_ms))?;
        Self::after_requeues(&out);
        Ok(out)
    }

    /// Purges these dead letters in one transaction. Returns what happened to each.
    pub fn purge_keys_blocking(
        &self,
        keys: Vec<JobKey>,
        now_ms: u64,
    ) -> Result<Vec<(JobKey, Purge)>, RelayError> {
        let out = self.run_blocking(self.purge_op(keys, now_ms))?;
        Self::log_purges(&out);
        Ok(out)
    }

    /// Async form of [`Relay::requeue_blocking`].
    pub async fn requeue(&self, key: &JobKey, now_ms: u64) -> Result<Requeue, RelayError> {
        let out = self
            .run(Self::requeue_op(vec![key.clone()], now_ms))
            .await?;
        Self::after_requeues(&out);
        Ok(out.into_iter().next().map_or(Requeue::NotFound, |(_, r)| r))
    }

    fn dead_keys(&self, peer: Option<&NodeId>) -> Result<Vec<JobKey>, RelayError> {
        Ok(self
            .dead_letters()?
            .into_iter()
            .map(|d| d.key)
            .filter(|k| peer.is_none_or(|p| *p == k.peer))
            .collect())
    }

    /// Requeues every dead letter of `peer` (one transaction). Returns what happened to each.
    pub fn requeue_peer_blocking(
        &self,
        peer: &NodeId,
        now_ms: u64,
    ) -> Result<Vec<(JobKey, Requeue)>, RelayError> {
        let keys = self.dead_keys(Some(peer))?;
        let out = self.run_blocking(Self::requeue_op(keys, now_ms))?;
        Self::after_requeues(&out);
        Ok(out)
    }

    /// Async form of [`Relay::requeue_peer_blocking`].
    pub async fn requeue_peer(
        &self,
        peer: &NodeId,
        now_ms: u64,
    ) -> Result<Vec<(JobKey, Requeue)>, RelayError> {
        let keys = self.dead_keys(Some(peer))?;
        let out = self.run(Self::requeue_op(keys, now_ms)).await?;
        Self::after_requeues(&out);
        Ok(out)
    }

    fn purge_op(&self, keys: Vec<JobKey>, now_ms: u64) -> TxnFn<Vec<(JobKey, Purge)>> {
        let cfg = self.inner.cfg();
        Box::new(move |txn| {
            let mut fx = Effects::default();
            let mut out = Vec::new();
            for key in keys {
                let (r, f) = ledger::purge(txn, &key, now_ms, &cfg)?;
                fx.sched.extend(f.sched);
                fx.events.extend(f.events);
                out.push((key, r));
            }
            Ok((out, fx))
        })
    }

    fn log_purges(results: &[(JobKey, Purge)]) {
        for (key, r) in results {
            if *r != Purge::Purged {
                tracing::info!(seg_id = %key.seg, peer_id = %key.peer, result = %r, "purge did nothing");
            }
        }
    }

    /// Purges one dead letter: the record goes, its pin is released.
    pub fn purge_blocking(&self, key: &JobKey, now_ms: u64) -> Result<Purge, RelayError> {
        let out = self.run_blocking(self.purge_op(vec![key.clone()], now_ms))?;
        Self::log_purges(&out);
        Ok(out.into_iter().next().map_or(Purge::NotFound, |(_, r)| r))
    }

    /// Async form of [`Relay::purge_blocking`].
    pub async fn purge(&self, key: &JobKey, now_ms: u64) -> Result<Purge, RelayError> {
        let out = self.run(self.purge_op(vec![key.clone()], now_ms)).await?;
        Self::log_purges(&out);
        Ok(out.into_iter().next().map_or(Purge::NotFound, |(_, r)| r))
    }

    /// Purges every dead letter of `peer` (one transaction).
    pub fn purge_peer_blocking(
        &self,
        peer: &NodeId,
        now_ms: u64,
    ) -> Result<Vec<(JobKey, Purge)>, RelayError> {
        let keys = self.dead_keys(Some(peer))?;
        let out = self.run_blocking(self.purge_op(keys, now_ms))?;
        Self::log_purges(&out);
        Ok(out)
    }

    // ---- reads -------------------------------------------------------------------------------

    /// Every dead letter (unpurged), in (segment, peer) order. Memory grows with the ledger:
    /// listings that answer clients page with [`Relay::dead_letters_after`].
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, RelayError> {
        self.dead_letters_after(None, usize::MAX)
    }

    /// How many dead letters there are (unpurged): O(1).
    pub fn dead_letter_count(&self) -> Result<u64, RelayError> {
        let read = self.read()?;
        let table = read.open_table(DEAD).map_err(db)?;
        table.len().map_err(db)
    }

    /// Dead letters in (segment, peer) order, strictly after `after`, at most `limit` of them:
    /// one read transaction, nothing allocated beyond `limit` rows.
    pub fn dead_letters_after(
        &self,
        after: Option<&JobKey>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, RelayError> {
        let read = self.read()?;
        let table = read.open_table(DEAD).map_err(db)?;
        let after = after.map(job_key);
        let lower = match &after {
            Some(key) => std::ops::Bound::Excluded(key.as_slice()),
            None => std::ops::Bound::Unbounded,
        };
        let mut out = Vec::new();
        for entry in table
            .range::<&[u8]>((lower, std::ops::Bound::Unbounded))
            .map_err(db)?
            .take(limit)
        {
            let (k, v) = entry.map_err(db)?;
            let row: DeadRow = decode("relay-dead-letters-v1", v.value())?;
            out.push(DeadLetter {
                key: parse_job_key(k.value())?,
                attempts: row.attempts,
                store_full_attempts: row.store_full_attempts,
                last_error: row.last_error,
                dead_at_ms: row.dead_at_ms,
                pin_release_at_ms: row.pin_release_at_ms,
            });
        }
        Ok(out)
    }

    /// Counters for metrics (INV-26): jobs by state over the whole ledger (six rows of
    /// `relay-job-counts-v1`, kept in step by every ledger transaction: O(1) in the number of
    /// jobs; the in-flight split is O(pending jobs) in memory), totals since this process
    /// opened the relay, and the transfers running now. Cheap enough to call every few seconds.
    /// See [`crate::counters`] for the identity the totals satisfy.
    pub fn counters(&self) -> Result<RelayCounters, RelayError> {
        let read = self.read()?;
        let table = read.open_table(JOB_COUNTS).map_err(db)?;
        let mut by_slot = [0u64; CountSlot::ALL.len()];
        for (n, slot) in by_slot.iter_mut().zip(CountSlot::ALL) {
            *n = table.get(slot.key()).map_err(db)?.map_or(0, |v| v.value());
        }
        let [pending, delivered, refused, cancelled, dead, purged] = by_slot;
        let (in_flight, transfers_in_flight, totals) = {
            let s = self.inner.sched();
            let totals = *self.inner.shared.totals();
            (s.in_flight_pending() as u64, s.in_flight() as u64, totals)
        };
        // The ledger was read just before the scheduler: a job that ended in between is at
        // most briefly counted as pending and in flight both; never below zero.
        let in_flight = in_flight.min(pending);
        Ok(RelayCounters {
            jobs: JobCounts {
                pending: pending - in_flight,
                in_flight,
                delivered,
                refused,
                cancelled,
                dead,
                purged,
            },
            totals,
            transfers_in_flight,
        })
    }

    /// The ledger row of one job.
    pub fn job(&self, key: &JobKey) -> Result<Option<JobRow>, RelayError> {
        let read = self.read()?;
        let table = read.open_table(JOBS).map_err(db)?;
        let row = table.get(job_key(key).as_slice()).map_err(db)?;
        Ok(row
            .map(|v| decode("relay-jobs-v1", v.value()))
            .transpose()?)
    }

    /// Every job in the ledger, in (segment, peer) order. For tests and audits: it reads the
    /// whole table.
    pub fn all_jobs(&self) -> Result<Vec<(JobKey, JobRow)>, RelayError> {
        let read = self.read()?;
        let table = read.open_table(JOBS).map_err(db)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db)? {
            let (k, v) = entry.map_err(db)?;
            out.push((
                parse_job_key(k.value())?,
                decode("relay-jobs-v1", v.value())?,
            ));
        }
        Ok(out)
    }

    /// Propagation status of `seg`: which peers have it, which are pending (with their next due
    /// time), dead, cancelled or refused, and where the condition stands. `None` if this relay
    /// never scheduled it.
    pub fn status(&self, seg: &SegmentId) -> Result<Option<SegmentStatus>, RelayError> {
        let read = self.read()?;
        let props = read.open_table(PROPAGATION).map_err(db)?;
        let Some(prop) = props.get(seg.0.as_slice()).map_err(db)? else {
            return Ok(None);
        };
        let prop: PropRow = decode("relay-propagation-v1", prop.value())?;
        let jobs_table = read.open_table(JOBS).map_err(db)?;
        let dead_table = read.open_table(DEAD).map_err(db)?;
        let (low, high) = segment_range(seg);
        let sched = self.inner.sched();
        let mut jobs = Vec::new();
        for entry in jobs_table
            .range(low.as_slice()..high.as_slice())
            .map_err(db)?
        {
            let (k, v) = entry.map_err(db)?;
            let key = parse_job_key(k.value())?;
            let row: JobRow = decode("relay-jobs-v1", v.value())?;
            let dead_at_ms = match dead_table.get(k.value()).map_err(db)? {
                Some(d) => Some(decode::<DeadRow>("relay-dead-letters-v1", d.value())?.dead_at_ms),
                None => None,
            };
            let next_due_ms = (row.state == JobState::Pending)
                .then(|| sched.view(&key).map_or(row.due_ms, |v| v.due_ms));
            jobs.push(JobStatus {
                in_flight: sched.is_in_flight(&key),
                peer: key.peer,
                state: row.state,
                attempts: row.counts.attempts,
                store_full_attempts: row.counts.store_full_attempts,
                next_due_ms,
                last_error: row.last_error,
                dead_at_ms,
                purged: row.purged,
                requeues: row.requeues,
            });
        }
        let verdict = if prop.propagated_at_ms.is_some() {
            Verdict::Holds
        } else {
            core::verdict(prop.condition, prop.tally, prop.source_is_peer)
        };
        Ok(Some(SegmentStatus {
            seg: *seg,
            condition: prop.condition,
            source: prop.source,
            scheduled_at_ms: prop.scheduled_at_ms,
            propagated_at_ms: prop.propagated_at_ms,
            verdict,
            tally: prop.tally,
            jobs,
        }))
    }
}

/// The crash point after a committed batch of starts, when it started an attempt.
fn crash_after_starts(starts: &[Start]) {
    if starts.iter().any(|s| matches!(s, Start::Started { .. })) {
        crash::point(crash::RELAY_AFTER_START_COMMIT);
    }
}

/// The crash point after a committed batch of outcomes, when one of them changed its job.
fn crash_after_outcomes(applied: &[Applied]) {
    if applied.iter().any(|a| matches!(a, Applied::Decided(_))) {
        crash::point(crash::RELAY_AFTER_OUTCOME_COMMIT);
    }
}
