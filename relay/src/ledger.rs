//! The ledger: every change to the relay's tables, as functions that run inside a caller's redb
//! write transaction (the store's ingest transaction, or one of the relay's batched
//! transactions through the store's committer).
//!
//! Each function reads the rows it changes inside the transaction and decides from them (with
//! [`crate::core`]), so a decision never rests on a stale in-memory copy: the in-memory
//! [`Scheduler`](crate::core::Scheduler) is only told what happened ([`Effects`]), after the
//! commit, in commit order.
//!
//! Guarantees, each inside ONE transaction with the change that causes it:
//! - scheduling a newly stored segment creates one `pending` job per known peer except its
//!   source and except peers that already have a job for it, and pins the segment for each
//!   (`relay:<peer>`) (INV-10, INV-11);
//! - a job that stops owing (delivered, refused, cancelled) drops its pin; a dead letter keeps it
//!   until `dead_letter_pin_max_age_ms` has passed, then drops it ([`age_dead_pins`]);
//! - `relay-due-v1` lists exactly the pending jobs;
//! - the segment is marked propagated (its row in `relay-propagation-v1` and the store's
//!   `propagated_at_ms`) in the transaction of the change that made its condition hold, once,
//!   never by dead-lettering (INV-13); under `one_peer` the other jobs are then cancelled;
//! - counted attempts never exceed `attempts_max` (a job found at its bound when it is due
//!   becomes a dead letter without another attempt), and a dead letter keeps its attempts and
//!   last error (INV-12);
//! - a job whose peer pulled the segment from this node (catch-up) is completed as delivered,
//!   pending or dead, with the same condition check as a delivery ([`deliver_out_of_band`],
//!   INV-15);
//! - `relay-job-counts-v1` counts the jobs in each state: every job change moves one count
//!   (`retally` and the scheduling of new jobs are the only places that change a job's state
//!   in the tallies, and they change the counts alike).

use redb::{ReadableTable, WriteTransaction};
use store::manifest::SuccessCondition;
use store::mutants;
use store::{SegmentId, Stored};

use crate::core::{self, Counts, Decision, JobKey, JobView, Outcome, StartVerdict, Tally, Verdict};
use crate::limits::RelayConfig;
use crate::peer::NodeId;
use crate::tables::{
    CountSlot, DEAD, DUE, DeadRow, JOB_COUNTS, JOBS, JobRow, JobState, PROPAGATION, PropRow,
    decode, due_key, encode, job_key, parse_job_key, segment_range,
};

/// A change to the in-memory scheduler, applied after the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedOp {
    /// The job is pending and waits for this view's due time.
    Upsert(JobKey, JobView),
    /// The job is no longer pending.
    Remove(JobKey),
    /// The job's transfer (or attempted start) is over.
    Finish(JobKey),
    /// A dead letter pins its segment until this time.
    AddDeadPin(JobKey, u64),
    /// A dead letter no longer pins (requeued, purged, cancelled, released).
    RemoveDeadPin(JobKey),
}

/// Something that happened in the ledger, logged by the caller after the commit with a stable
/// message and fields (see [`Event::log`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Scheduled {
        seg: SegmentId,
        peers: Vec<NodeId>,
    },
    Started {
        key: JobKey,
        attempt_num: u32,
    },
    Delivered {
        key: JobKey,
        attempt_num: u32,
        have: bool,
    },
    Retry {
        key: JobKey,
        attempt_num: u32,
        next_attempt_in_ms: u64,
        error: String,
    },
    DeadLettered {
        key: JobKey,
        attempts: u32,
        store_full_attempts: u32,
        error: String,
        /// Found at its bound when due (its last attempt was cut short by a crash): no attempt
        /// was made for this.
        at_start: bool,
    },
    Refused {
        key: JobKey,
        reason: String,
    },
    Cancelled {
        key: JobKey,
        reason: String,
    },
    ConditionMet {
        seg: SegmentId,
        condition: SuccessCondition,
        acked_count: u32,
    },
    ConditionNever {
        seg: SegmentId,
        condition: SuccessCondition,
        tally: Tally,
    },
    Requeued {
        key: JobKey,
    },
    Purged {
        key: JobKey,
    },
    PinReleased {
        key: JobKey,
    },
    Refunded {
        key: JobKey,
        attempts: u32,
    },
    /// The job was completed because `key.peer` pulled the segment from this node (catch-up)
    /// and acknowledged it or answered "have" (INV-15).
    DeliveredOutOfBand {
        key: JobKey,
        /// Its state before: `Pending` or `Dead`.
        was: JobState,
        /// It was a dead letter an operator had purged.
        purged: bool,
        attempts: u32,
    },
    /// An attempt's outcome (or its refund at shutdown) arrived for a job no longer pending
    /// (cancelled, completed by catch-up, requeued meanwhile): nothing changed.
    Ignored {
        key: JobKey,
        state: Option<JobState>,
        /// `outcome` or `refund`.
        what: &'static str,
    },
}

impl Event {
    /// Logs the event with its stable message and fields.
    pub fn log(&self) {
        match self {
            Event::Scheduled { seg, peers } => {
                tracing::debug!(seg_id = %seg, jobs = peers.len(), "relay jobs scheduled")
            }
            Event::Started { key, attempt_num } => {
                tracing::debug!(seg_id = %key.seg, peer_id = %key.peer, attempt_num, "attempt started")
            }
            Event::Delivered {
                key,
                attempt_num,
                have,
            } => {
                tracing::info!(seg_id = %key.seg, peer_id = %key.peer, attempt_num, have, via = %"push", "segment delivered")
            }
            Event::Retry {
                key,
                attempt_num,
                next_attempt_in_ms,
                error,
            } => tracing::info!(
                seg_id = %key.seg,
                peer_id = %key.peer,
                attempt_num,
                next_attempt_in_ms,
                error = %error,
                "retry scheduled"
            ),
            Event::DeadLettered {
                key,
                attempts,
                store_full_attempts,
                error,
                at_start,
            } => tracing::warn!(
                seg_id = %key.seg,
                peer_id = %key.peer,
                attempts,
                store_full_attempts,
                at_start,
                error = %error,
                "dead-lettered"
            ),
            Event::Refused { key, reason } => {
                tracing::warn!(seg_id = %key.seg, peer_id = %key.peer, reason = %reason, "job refused")
            }
            Event::Cancelled { key, reason } => {
                tracing::info!(seg_id = %key.seg, peer_id = %key.peer, reason = %reason, "job cancelled")
            }
            Event::ConditionMet {
                seg,
                condition,
                acked_count,
            } => tracing::info!(
                seg_id = %seg,
                condition = %condition,
                acked_count,
                "success condition met"
            ),
            Event::ConditionNever {
                seg,
                condition,
                tally,
            } => tracing::warn!(
                seg_id = %seg,
                condition = %condition,
                refused = tally.refused,
                purged = tally.purged,
                "success condition can no longer hold"
            ),
            Event::Requeued { key } => {
                tracing::info!(seg_id = %key.seg, peer_id = %key.peer, "dead letter requeued")
            }
            Event::Purged { key } => {
                tracing::info!(seg_id = %key.seg, peer_id = %key.peer, "dead letter purged")
            }
            Event::PinReleased { key } => {
                tracing::info!(seg_id = %key.seg, peer_id = %key.peer, "dead letter pin released")
            }
            Event::Refunded { key, attempts } => {
                tracing::info!(seg_id = %key.seg, peer_id = %key.peer, attempts, "attempt refunded")
            }
            Event::DeliveredOutOfBand {
                key,
                was,
                purged,
                attempts,
            } => tracing::info!(
                seg_id = %key.seg,
                peer_id = %key.peer,
                was = %was,
                purged,
                attempts,
                via = %"catch_up",
                "segment delivered"
            ),
            Event::Ignored { key, state, what } => tracing::debug!(
                seg_id = %key.seg,
                peer_id = %key.peer,
                state = %state.map_or("none", |s| s.as_str()),
                what,
                "attempt ending ignored: job no longer pending"
            ),
        }
    }
}

/// What a ledger transaction did: scheduler changes and events, applied and logged after the
/// commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    pub sched: Vec<SchedOp>,
    pub events: Vec<Event>,
}

/// What scheduling a newly stored segment did (the `extra` of its ingest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub seg: SegmentId,
    /// The jobs created, with their scheduler views.
    pub jobs: Vec<(JobKey, JobView)>,
    pub effects: Effects,
}

/// The result of recording one start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Recorded durably: send it now.
    Started { key: JobKey, attempt_num: u32 },
    /// Not started (no longer pending, expired and cancelled, or at its bound and dead-lettered).
    Skipped { key: JobKey, why: &'static str },
}

fn db_store(e: store::StoreError) -> redb::Error {
    match e {
        store::StoreError::Database(e) => e,
        other => redb::Error::Corrupted(other.to_string()),
    }
}

pub(crate) fn get_job(txn: &WriteTransaction, key: &JobKey) -> Result<Option<JobRow>, redb::Error> {
    let table = txn.open_table(JOBS)?;
    let row = table.get(job_key(key).as_slice())?;
    row.map(|v| decode("relay-jobs-v1", v.value())).transpose()
}

fn put_job(txn: &WriteTransaction, key: &JobKey, row: &JobRow) -> Result<(), redb::Error> {
    txn.open_table(JOBS)?
        .insert(job_key(key).as_slice(), encode(row).as_slice())?;
    Ok(())
}

fn get_prop(txn: &WriteTransaction, seg: &SegmentId) -> Result<Option<PropRow>, redb::Error> {
    let table = txn.open_table(PROPAGATION)?;
    let row = table.get(seg.0.as_slice())?;
    row.map(|v| decode("relay-propagation-v1", v.value()))
        .transpose()
}

fn put_prop(txn: &WriteTransaction, seg: &SegmentId, row: &PropRow) -> Result<(), redb::Error> {
    txn.open_table(PROPAGATION)?
        .insert(seg.0.as_slice(), encode(row).as_slice())?;
    Ok(())
}

fn get_dead(txn: &WriteTransaction, key: &JobKey) -> Result<Option<DeadRow>, redb::Error> {
    let table = txn.open_table(DEAD)?;
    let row = table.get(job_key(key).as_slice())?;
    row.map(|v| decode("relay-dead-letters-v1", v.value()))
        .transpose()
}

fn tally_slot(t: &mut Tally, state: JobState, purged: bool) -> &mut u32 {
    match state {
        JobState::Pending => &mut t.pending,
        JobState::Delivered => &mut t.delivered,
        JobState::Refused => &mut t.refused,
        JobState::Cancelled => &mut t.cancelled,
        JobState::Dead if purged => &mut t.purged,
        JobState::Dead => &mut t.dead,
    }
}

/// Moves one job in its segment's tally.
fn retally(
    txn: &WriteTransaction,
    seg: &SegmentId,
    from: (JobState, bool),
    to: (JobState, bool),
) -> Result<(), redb::Error> {
    let Some(mut prop) = get_prop(txn, seg)? else {
        return Err(crate::tables::corrupt(
            "relay-propagation-v1",
            &format!("no row for segment {seg} that has jobs"),
        ));
    };
    let from_slot = tally_slot(&mut prop.tally, from.0, from.1);
    *from_slot = from_slot.saturating_sub(1);
    *tally_slot(&mut prop.tally, to.0, to.1) += 1;
    put_prop(txn, seg, &prop)?;
    count_job(txn, CountSlot::of(from.0, from.1), -1)?;
    count_job(txn, CountSlot::of(to.0, to.1), 1)
}

/// Adds `delta` jobs to `slot` in `relay-job-counts-v1` (in the transaction of the change).
/// Saturates at zero rather than failing: these rows only feed metrics, and a job change must
/// never fail because of them (the model test checks they stay exact).
fn count_job(txn: &WriteTransaction, slot: CountSlot, delta: i64) -> Result<(), redb::Error> {
    let mut table = txn.open_table(JOB_COUNTS)?;
    let old = table.get(slot.key())?.map_or(0, |v| v.value());
    let new = old.saturating_add_signed(delta);
    table.insert(slot.key(), new)?;
    Ok(())
}

/// Time and knobs of one ledger change.
#[derive(Clone, Copy)]
struct At<'a> {
    now_ms: u64,
    cfg: &'a RelayConfig,
    /// A job dead-lettered by this change was found at its bound when due (no attempt made).
    at_start: bool,
}

impl<'a> At<'a> {
    fn new(now_ms: u64, cfg: &'a RelayConfig) -> At<'a> {
        At {
            now_ms,
            cfg,
            at_start: false,
        }
    }
}

/// Ends a pending job in a terminal state (or dead), keeping every table in step.
fn leave_pending(
    txn: &WriteTransaction,
    key: &JobKey,
    row: &mut JobRow,
    to: JobState,
    error: Option<String>,
    at: At<'_>,
    fx: &mut Effects,
) -> Result<(), redb::Error> {
    let (now_ms, cfg) = (at.now_ms, at.cfg);
    debug_assert_eq!(row.state, JobState::Pending);
    txn.open_table(DUE)?
        .remove(due_key(row.due_ms, key).as_slice())?;
    row.state = to;
    row.updated_at_ms = now_ms;
    if let Some(e) = error {
        row.last_error = Some(e);
    }
    put_job(txn, key, row)?;
    retally(txn, &key.seg, (JobState::Pending, false), (to, false))?;
    fx.sched.push(SchedOp::Remove(key.clone()));
    if to == JobState::Dead {
        // A dead letter keeps its segment pinned for a while, so a requeue can still send it.
        let release = now_ms.saturating_add(cfg.dead_letter_pin_max_age_ms);
        let dead = DeadRow {
            attempts: row.counts.attempts,
            store_full_attempts: row.counts.store_full_attempts,
            last_error: row.last_error.clone().unwrap_or_default(),
            dead_at_ms: now_ms,
            pin_release_at_ms: Some(release),
        };
        txn.open_table(DEAD)?
            .insert(job_key(key).as_slice(), encode(&dead).as_slice())?;
        fx.sched.push(SchedOp::AddDeadPin(key.clone(), release));
        fx.events.push(Event::DeadLettered {
            key: key.clone(),
            attempts: row.counts.attempts,
            store_full_attempts: row.counts.store_full_attempts,
            error: dead.last_error,
            at_start: at.at_start,
        });
    } else {
        store::index::unpin(txn, &key.seg, &crate::peer::pin_owner(&key.peer))?;
    }
    Ok(())
}

fn move_due(
    txn: &WriteTransaction,
    key: &JobKey,
    row: &JobRow,
    old_due: u64,
) -> Result<(), redb::Error> {
    let mut due = txn.open_table(DUE)?;
    due.remove(due_key(old_due, key).as_slice())?;
    due.insert(due_key(row.due_ms, key).as_slice(), row.priority)?;
    Ok(())
}

fn view_of(row: &JobRow) -> JobView {
    JobView {
        priority: row.priority,
        due_ms: row.due_ms,
    }
}

/// Every job of `seg`, in peer order.
pub(crate) fn jobs_of_segment_txn(
    txn: &WriteTransaction,
    seg: &SegmentId,
) -> Result<Vec<(JobKey, JobRow)>, redb::Error> {
    let (low, high) = segment_range(seg);
    let table = txn.open_table(JOBS)?;
    let mut out = Vec::new();
    for entry in table.range(low.as_slice()..high.as_slice())? {
        let (k, v) = entry?;
        out.push((
            parse_job_key(k.value())?,
            decode("relay-jobs-v1", v.value())?,
        ));
    }
    Ok(out)
}

/// Evaluates the segment's condition after a change; marks it propagated (once) when it holds,
/// cancels the other jobs under `one_peer`, and notes once when it can no longer hold.
fn check_condition(
    txn: &WriteTransaction,
    seg: &SegmentId,
    now_ms: u64,
    cfg: &RelayConfig,
    fx: &mut Effects,
) -> Result<(), redb::Error> {
    let Some(mut prop) = get_prop(txn, seg)? else {
        return Ok(());
    };
    if prop.propagated_at_ms.is_some() {
        return Ok(());
    }
    // Mutation point (INV-13): a dead letter counts as reaching its peer.
    let verdict = if mutants::active("propagated_on_dead_letter") && prop.tally.dead > 0 {
        Verdict::Holds
    } else {
        core::verdict(prop.condition, prop.tally, prop.source_is_peer)
    };
    match verdict {
        Verdict::Holds => {
            prop.propagated_at_ms = Some(now_ms);
            put_prop(txn, seg, &prop)?;
            store::index::mark_propagated(txn, seg, now_ms).map_err(db_store)?;
            fx.events.push(Event::ConditionMet {
                seg: *seg,
                condition: prop.condition,
                acked_count: prop.tally.delivered,
            });
            if prop.condition == SuccessCondition::OnePeer {
                cancel_owing(txn, seg, "one_peer condition met", now_ms, cfg, fx)?;
            }
        }
        Verdict::Never if prop.never_at_ms.is_none() => {
            prop.never_at_ms = Some(now_ms);
            put_prop(txn, seg, &prop)?;
            fx.events.push(Event::ConditionNever {
                seg: *seg,
                condition: prop.condition,
                tally: prop.tally,
            });
        }
        Verdict::Never | Verdict::NotYet => {}
    }
    Ok(())
}

/// Cancels every job of `seg` that still owes: pending jobs and unpurged dead letters.
fn cancel_owing(
    txn: &WriteTransaction,
    seg: &SegmentId,
    reason: &str,
    now_ms: u64,
    cfg: &RelayConfig,
    fx: &mut Effects,
) -> Result<(), redb::Error> {
    for (key, mut row) in jobs_of_segment_txn(txn, seg)? {
        match row.state {
            JobState::Pending => {
                leave_pending(
                    txn,
                    &key,
                    &mut row,
                    JobState::Cancelled,
                    None,
                    At::new(now_ms, cfg),
                    fx,
                )?;
            }
            JobState::Dead if !row.purged => {
                txn.open_table(DEAD)?.remove(job_key(&key).as_slice())?;
                store::index::unpin(txn, &key.seg, &crate::peer::pin_owner(&key.peer))?;
                row.state = JobState::Cancelled;
                row.updated_at_ms = now_ms;
                put_job(txn, &key, &row)?;
                retally(
                    txn,
                    seg,
                    (JobState::Dead, false),
                    (JobState::Cancelled, false),
                )?;
                fx.sched.push(SchedOp::RemoveDeadPin(key.clone()));
            }
            _ => continue,
        }
        fx.events.push(Event::Cancelled {
            key,
            reason: reason.to_owned(),
        });
    }
    Ok(())
}

/// Schedules the relay jobs of a segment the store has just written, inside the store's ingest
/// transaction (INV-11): one job per known peer except the source, none for a peer that
/// already has a job for this segment (a re-ingest after eviction keeps its jobs: INV-10), each
/// pinning the segment. This is the `extra` the daemon passes to the store's ingest.
///
/// The segments it superseded or (a recall) withdrew stop owing in the same transaction: their
/// pending jobs and dead letters are cancelled, which drops their pins (INV-35, INV-39).
pub fn schedule_in_txn(
    txn: &WriteTransaction,
    stored: &Stored<()>,
    cfg: &RelayConfig,
    now_ms: u64,
) -> Result<Scheduled, redb::Error> {
    let mut retired = Effects::default();
    let superseded = format!("superseded by {}", stored.id);
    for old in &stored.lifecycle.superseded {
        // Mutation point (INV-35): the superseded segment keeps its jobs and goes on relaying.
        if !mutants::active("keep_superseded_jobs") {
            cancel_owing(txn, old, &superseded, now_ms, cfg, &mut retired)?;
        }
    }
    let recalled = format!("recalled by {}", stored.id);
    for gone in &stored.lifecycle.withdrawn {
        cancel_owing(txn, gone, &recalled, now_ms, cfg, &mut retired)?;
    }
    let mut scheduled = schedule_peers_in_txn(txn, stored, &cfg.known_peers, cfg, now_ms)?;
    retired.sched.append(&mut scheduled.effects.sched);
    retired.events.append(&mut scheduled.effects.events);
    scheduled.effects = retired;
    Ok(scheduled)
}

/// [`schedule_in_txn`] for `peers` only (peers added to `known_peers` while running).
fn schedule_peers_in_txn(
    txn: &WriteTransaction,
    stored: &Stored<()>,
    peers: &std::collections::BTreeSet<NodeId>,
    cfg: &RelayConfig,
    now_ms: u64,
) -> Result<Scheduled, redb::Error> {
    let seg = stored.id;
    let row = &stored.row;
    let mut fx = Effects::default();
    let source_is_peer = cfg.known_peers.iter().any(|p| p.as_str() == row.source);
    let mut prop = get_prop(txn, &seg)?.unwrap_or(PropRow {
        condition: row.condition,
        priority: row.priority,
        source: row.source.clone(),
        source_is_peer,
        scheduled_at_ms: now_ms,
        tally: Tally::default(),
        propagated_at_ms: None,
        never_at_ms: None,
    });
    let existing: std::collections::BTreeSet<NodeId> = jobs_of_segment_txn(txn, &seg)?
        .into_iter()
        .map(|(k, _)| k.peer)
        .collect();
    let mut jobs = Vec::new();
    let mut due = txn.open_table(DUE)?;
    for peer in peers {
        // Mutation point (INV-10): a re-ingest schedules its peers again, beside their jobs.
        let existing = existing.contains(peer) && !mutants::active("duplicate_jobs_on_reingest");
        if peer.as_str() == row.source || existing {
            continue;
        }
        let key = JobKey {
            seg,
            peer: peer.clone(),
        };
        let job = JobRow {
            state: JobState::Pending,
            counts: Counts::default(),
            due_ms: now_ms,
            last_error: None,
            priority: row.priority,
            expires_at_ms: row.expires_at_ms,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            requeues: 0,
            purged: false,
        };
        put_job(txn, &key, &job)?;
        due.insert(due_key(job.due_ms, &key).as_slice(), job.priority)?;
        store::index::pin(txn, &seg, &crate::peer::pin_owner(peer))?;
        prop.tally.jobs += 1;
        prop.tally.pending += 1;
        count_job(txn, CountSlot::Pending, 1)?;
        let view = view_of(&job);
        fx.sched.push(SchedOp::Upsert(key.clone(), view));
        jobs.push((key, view));
    }
    drop(due);
    put_prop(txn, &seg, &prop)?;
    fx.events.push(Event::Scheduled {
        seg,
        peers: jobs.iter().map(|(k, _)| k.peer.clone()).collect(),
    });
    check_condition(txn, &seg, now_ms, cfg, &mut fx)?;
    Ok(Scheduled {
        seg,
        jobs,
        effects: fx,
    })
}

/// Records the start of each job's next attempt (attempts + 1, due time set to the crash-retry
/// due) before any transfer begins, so a kill during the transfer cannot grant another attempt
/// for free. Jobs no longer pending are skipped; an expired segment's job is cancelled; a job
/// already at its bound becomes a dead letter.
pub fn record_starts(
    txn: &WriteTransaction,
    keys: &[JobKey],
    now_ms: u64,
    cfg: &RelayConfig,
) -> Result<(Vec<Start>, Effects), redb::Error> {
    let mut fx = Effects::default();
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let Some(mut row) = get_job(txn, key)?.filter(|r| r.state == JobState::Pending) else {
            fx.sched.push(SchedOp::Finish(key.clone()));
            out.push(Start::Skipped {
                key: key.clone(),
                why: "no longer pending",
            });
            continue;
        };
        // Mutation point (INV-16): a job of an expired segment is started anyway.
        let expires_at_ms = match mutants::active("relay_expired") {
            true => None,
            false => row.expires_at_ms,
        };
        match core::start_verdict(row.counts, expires_at_ms, now_ms, cfg) {
            StartVerdict::Start => {
                let old_due = row.due_ms;
                // Mutation point (INV-14, INV-12): the attempt is counted only when its
                // outcome arrives (see `apply_outcomes`), so a kill mid-transfer costs nothing.
                if !mutants::active("record_attempt_after_transfer") {
                    row.counts.attempts += 1;
                }
                row.due_ms = core::crash_retry_due_ms(row.counts, now_ms, cfg);
                row.updated_at_ms = now_ms;
                put_job(txn, key, &row)?;
                move_due(txn, key, &row, old_due)?;
                let attempt_num = row.counts.attempts + row.counts.store_full_attempts;
                fx.events.push(Event::Started {
                    key: key.clone(),
                    attempt_num,
                });
                out.push(Start::Started {
                    key: key.clone(),
                    attempt_num,
                });
            }
            StartVerdict::Expired => {
                fx.sched.push(SchedOp::Finish(key.clone()));
                leave_pending(
                    txn,
                    key,
                    &mut row,
                    JobState::Cancelled,
                    Some("segment expired".into()),
                    At::new(now_ms, cfg),
                    &mut fx,
                )?;
                fx.events.push(Event::Cancelled {
                    key: key.clone(),
                    reason: "segment expired".into(),
                });
                check_condition(txn, &key.seg, now_ms, cfg, &mut fx)?;
                out.push(Start::Skipped {
                    key: key.clone(),
                    why: "segment expired",
                });
            }
            StartVerdict::Exhausted => {
                fx.sched.push(SchedOp::Finish(key.clone()));
                let error = core::bounded_error(&match &row.last_error {
                    Some(e) => format!(
                        "interrupted: the node stopped during the last attempt (error before it: {e})"
                    ),
                    None => "interrupted: the node stopped during the last attempt".to_owned(),
                });
                leave_pending(
                    txn,
                    key,
                    &mut row,
                    JobState::Dead,
                    Some(error),
                    At {
                        at_start: true,
                        ..At::new(now_ms, cfg)
                    },
                    &mut fx,
                )?;
                out.push(Start::Skipped {
                    key: key.clone(),
                    why: "attempts exhausted",
                });
            }
        }
    }
    Ok((out, fx))
}

/// One transfer's result, with the jitter sample drawn for it from the caller's seeded RNG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeIn {
    pub key: JobKey,
    pub outcome: Outcome,
    pub jitter_sample: u64,
}

/// What [`apply_outcomes`] did with one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The job was pending and this is what the outcome did to it.
    Decided(Decision),
    /// The job was no longer pending (cancelled by a `one_peer` condition while in flight,
    /// completed by catch-up meanwhile, [`deliver_out_of_band`]): nothing changed, and the
    /// transfer's slot is freed.
    Ignored { state: Option<JobState> },
}

/// Applies transfer outcomes (one transaction for the batch): the decision core decides, this
/// writes it, and marks the segment propagated in the same transaction if the delivery made its
/// condition hold (INV-13).
pub fn apply_outcomes(
    txn: &WriteTransaction,
    items: &[OutcomeIn],
    now_ms: u64,
    cfg: &RelayConfig,
) -> Result<(Vec<Applied>, Effects), redb::Error> {
    let mut fx = Effects::default();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let key = &item.key;
        fx.sched.push(SchedOp::Finish(key.clone()));
        let row = get_job(txn, key)?;
        let state = row.as_ref().map(|r| r.state);
        let Some(mut row) = row.filter(|r| r.state == JobState::Pending) else {
            fx.events.push(Event::Ignored {
                key: key.clone(),
                state,
                what: "outcome",
            });
            out.push(Applied::Ignored { state });
            continue;
        };
        if mutants::active("record_attempt_after_transfer") {
            row.counts.attempts += 1;
        }
        let attempt_num = row.counts.attempts + row.counts.store_full_attempts;
        let decision = core::decide(row.counts, &item.outcome, now_ms, cfg, item.jitter_sample);
        match &decision {
            Decision::Delivered { have } => {
                leave_pending(
                    txn,
                    key,
                    &mut row,
                    JobState::Delivered,
                    None,
                    At::new(now_ms, cfg),
                    &mut fx,
                )?;
                fx.events.push(Event::Delivered {
                    key: key.clone(),
                    attempt_num,
                    have: *have,
                });
            }
            Decision::Refused { reason } => {
                leave_pending(
                    txn,
                    key,
                    &mut row,
                    JobState::Refused,
                    Some(reason.clone()),
                    At::new(now_ms, cfg),
                    &mut fx,
                )?;
                fx.events.push(Event::Refused {
                    key: key.clone(),
                    reason: reason.clone(),
                });
            }
            Decision::Retry {
                counts,
                due_ms,
                delay_ms,
                error,
            } => {
                let old_due = row.due_ms;
                row.counts = *counts;
                row.due_ms = *due_ms;
                row.last_error = Some(error.clone());
                row.updated_at_ms = now_ms;
                put_job(txn, key, &row)?;
                move_due(txn, key, &row, old_due)?;
                fx.sched.push(SchedOp::Upsert(key.clone(), view_of(&row)));
                fx.events.push(Event::Retry {
                    key: key.clone(),
                    attempt_num,
                    next_attempt_in_ms: *delay_ms,
                    error: error.clone(),
                });
            }
            Decision::Dead { counts, error } => {
                row.counts = *counts;
                leave_pending(
                    txn,
                    key,
                    &mut row,
                    JobState::Dead,
                    Some(error.clone()),
                    At::new(now_ms, cfg),
                    &mut fx,
                )?;
            }
        }
        check_condition(txn, &key.seg, now_ms, cfg, &mut fx)?;
        out.push(Applied::Decided(decision));
    }
    Ok((out, fx))
}

/// What [`deliver_out_of_band`] did with one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutOfBand {
    /// The job is now delivered. `was` is `Pending` (waiting, or with a transfer in flight whose
    /// outcome will be ignored) or `Dead` (a dead letter, resolved: out of the queue, its pin
    /// released; `purged` when an operator had purged it already).
    Completed { was: JobState, purged: bool },
    /// The job had ended already (delivered, refused, cancelled): nothing changed.
    Ended(JobState),
    /// This relay has no job for that segment and peer (e.g. the segment came from that peer, or
    /// the peer is not a known peer): nothing changed.
    NoJob,
}

/// Completes the job `key` as delivered because its peer pulled the segment from this node
/// (catch-up) and acknowledged it durably or answered "have" (INV-15), whatever state the job
/// was in:
///
/// - pending (waiting or in flight): delivered, out of `relay-due-v1`, pin released; a transfer
///   still in flight then finds the job no longer pending and its outcome is ignored
///   ([`apply_outcomes`] answers [`Applied::Ignored`]), so nothing is counted twice;
/// - dead: delivered; the dead letter is resolved — its `relay-dead-letters-v1` record is
///   removed (the queue lists what is still owed, and nothing is owed now) and its pin released
///   if it still held one; the job row keeps its attempts and last error as the history. A dead
///   letter an operator purged is completed the same way (it had no record or pin left): the
///   peer does hold the segment, and status says so;
/// - delivered, refused, cancelled: nothing changes ([`OutOfBand::Ended`]); so a second call
///   does nothing.
///
/// The segment's condition is then evaluated in this transaction exactly as after a delivery
/// by an attempt (INV-13): `one_peer` → marked propagated and the other owing jobs cancelled;
/// `all_peers` → marked propagated when every job that was not cancelled is delivered.
pub fn deliver_out_of_band(
    txn: &WriteTransaction,
    key: &JobKey,
    now_ms: u64,
    cfg: &RelayConfig,
) -> Result<(OutOfBand, Effects), redb::Error> {
    let mut fx = Effects::default();
    let Some(mut row) = get_job(txn, key)? else {
        return Ok((OutOfBand::NoJob, fx));
    };
    let was = row.state;
    let purged = row.purged;
    match was {
        // Mutation point (INV-15): a dead letter is not completed by catch-up.
        JobState::Dead if mutants::active("catchup_ignores_dead_letters") => {
            return Ok((OutOfBand::Ended(was), fx));
        }
        JobState::Pending => {
            leave_pending(
                txn,
                key,
                &mut row,
                JobState::Delivered,
                None,
                At::new(now_ms, cfg),
                &mut fx,
            )?;
        }
        JobState::Dead => {
            if !purged {
                txn.open_table(DEAD)?.remove(job_key(key).as_slice())?;
                // Idempotent: a pin already aged out is simply not there.
                store::index::unpin(txn, &key.seg, &crate::peer::pin_owner(&key.peer))?;
                fx.sched.push(SchedOp::RemoveDeadPin(key.clone()));
            }
            row.state = JobState::Delivered;
            row.purged = false;
            row.updated_at_ms = now_ms;
            put_job(txn, key, &row)?;
            retally(
                txn,
                &key.seg,
                (JobState::Dead, purged),
                (JobState::Delivered, false),
            )?;
        }
        JobState::Delivered | JobState::Refused | JobState::Cancelled => {
            return Ok((OutOfBand::Ended(was), fx));
        }
    }
    fx.events.push(Event::DeliveredOutOfBand {
        key: key.clone(),
        was,
        purged,
        attempts: row.counts.attempts,
    });
    check_condition(txn, &key.seg, now_ms, cfg, &mut fx)?;
    Ok((OutOfBand::Completed { was, purged }, fx))
}

/// Refunds the attempts of transfers cut short by a graceful shutdown: each job stays pending,
/// with one attempt less and due now (it runs first thing after the restart).
pub fn refund(
    txn: &WriteTransaction,
    keys: &[JobKey],
    now_ms: u64,
) -> Result<Effects, redb::Error> {
    let mut fx = Effects::default();
    for key in keys {
        fx.sched.push(SchedOp::Finish(key.clone()));
        let row = get_job(txn, key)?;
        let state = row.as_ref().map(|r| r.state);
        let Some(mut row) = row.filter(|r| r.state == JobState::Pending) else {
            fx.events.push(Event::Ignored {
                key: key.clone(),
                state,
                what: "refund",
            });
            continue;
        };
        let old_due = row.due_ms;
        row.counts.attempts = row.counts.attempts.saturating_sub(1);
        row.due_ms = now_ms;
        row.updated_at_ms = now_ms;
        put_job(txn, key, &row)?;
        move_due(txn, key, &row, old_due)?;
        fx.sched.push(SchedOp::Upsert(key.clone(), view_of(&row)));
        fx.events.push(Event::Refunded {
            key: key.clone(),
            attempts: row.counts.attempts,
        });
    }
    Ok(fx)
}

/// Releases the pins of dead letters older than `dead_letter_pin_max_age_ms` (the records stay).
pub fn age_dead_pins(
    txn: &WriteTransaction,
    keys: &[JobKey],
    now_ms: u64,
) -> Result<Effects, redb::Error> {
    let mut fx = Effects::default();
    for key in keys {
        let Some(mut dead) = get_dead(txn, key)? else {
            fx.sched.push(SchedOp::RemoveDeadPin(key.clone()));
            continue;
        };
        match dead.pin_release_at_ms {
            Some(at) if at <= now_ms => {
                store::index::unpin(txn, &key.seg, &crate::peer::pin_owner(&key.peer))?;
                dead.pin_release_at_ms = None;
                txn.open_table(DEAD)?
                    .insert(job_key(key).as_slice(), encode(&dead).as_slice())?;
                fx.sched.push(SchedOp::RemoveDeadPin(key.clone()));
                fx.events.push(Event::PinReleased { key: key.clone() });
            }
            Some(_) => {}
            None => fx.sched.push(SchedOp::RemoveDeadPin(key.clone())),
        }
    }
    Ok(fx)
}

/// The result of an operator's requeue of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeue {
    /// The dead letter is pending again with fresh attempts.
    Requeued,
    /// Not a dead letter (already requeued, delivered, …): nothing done (INV-22).
    NotDead(JobState),
    /// The dead letter was purged: nothing to requeue.
    Purged,
    /// The segment is no longer stored here (its pin aged out and it was evicted): nothing done;
    /// import it again or let catch-up bring it back.
    SegmentGone,
    /// No such job.
    NotFound,
}

/// What a requeue did, in words.
impl std::fmt::Display for Requeue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Requeue::Requeued => write!(f, "requeued"),
            Requeue::NotDead(state) => write!(f, "not a dead letter (the job is {state})"),
            Requeue::Purged => write!(f, "the dead letter was purged"),
            Requeue::SegmentGone => write!(f, "the segment is no longer stored here"),
            Requeue::NotFound => write!(f, "no such job"),
        }
    }
}

/// Requeues a dead letter: pending again, attempts reset, due now, pinned again.
pub fn requeue(
    txn: &WriteTransaction,
    key: &JobKey,
    now_ms: u64,
) -> Result<(Requeue, Effects), redb::Error> {
    let mut fx = Effects::default();
    let Some(mut row) = get_job(txn, key)? else {
        return Ok((Requeue::NotFound, fx));
    };
    if row.state == JobState::Pending && row.requeues > 0 && mutants::active("requeue_twice") {
        // Mutation point (INV-22): a second requeue restarts the requeued job's attempts again.
        row.counts = Counts::default();
        row.requeues += 1;
        put_job(txn, key, &row)?;
        fx.events.push(Event::Requeued { key: key.clone() });
        return Ok((Requeue::Requeued, fx));
    }
    if row.state != JobState::Dead {
        return Ok((Requeue::NotDead(row.state), fx));
    }
    if row.purged {
        return Ok((Requeue::Purged, fx));
    }
    if store::index::segment(txn, &key.seg)
        .map_err(db_store)?
        .is_none()
    {
        return Ok((Requeue::SegmentGone, fx));
    }
    txn.open_table(DEAD)?.remove(job_key(key).as_slice())?;
    row.state = JobState::Pending;
    row.counts = Counts::default();
    row.due_ms = now_ms;
    row.updated_at_ms = now_ms;
    row.requeues += 1;
    put_job(txn, key, &row)?;
    txn.open_table(DUE)?
        .insert(due_key(row.due_ms, key).as_slice(), row.priority)?;
    store::index::pin(txn, &key.seg, &crate::peer::pin_owner(&key.peer))?;
    retally(
        txn,
        &key.seg,
        (JobState::Dead, false),
        (JobState::Pending, false),
    )?;
    fx.sched.push(SchedOp::RemoveDeadPin(key.clone()));
    fx.sched.push(SchedOp::Upsert(key.clone(), view_of(&row)));
    fx.events.push(Event::Requeued { key: key.clone() });
    Ok((Requeue::Requeued, fx))
}

/// The result of an operator's purge of one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// The dead letter is gone and its pin released.
    Purged,
    /// Not a dead letter (or already purged): nothing done.
    NotDead(JobState),
    NotFound,
}

/// What a purge did, in words.
impl std::fmt::Display for Purge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Purge::Purged => write!(f, "purged"),
            Purge::NotDead(state) => write!(f, "not a dead letter (the job is {state})"),
            Purge::NotFound => write!(f, "no such job"),
        }
    }
}

/// Purges a dead letter: the record goes from the queue, its pin is released (other owners'
/// pins stay), and the job stays in `relay-jobs-v1` as a purged dead job for the status view.
pub fn purge(
    txn: &WriteTransaction,
    key: &JobKey,
    now_ms: u64,
    cfg: &RelayConfig,
) -> Result<(Purge, Effects), redb::Error> {
    let mut fx = Effects::default();
    let Some(mut row) = get_job(txn, key)? else {
        return Ok((Purge::NotFound, fx));
    };
    if row.state != JobState::Dead || row.purged {
        return Ok((Purge::NotDead(row.state), fx));
    }
    txn.open_table(DEAD)?.remove(job_key(key).as_slice())?;
    store::index::unpin(txn, &key.seg, &crate::peer::pin_owner(&key.peer))?;
    row.purged = true;
    row.updated_at_ms = now_ms;
    put_job(txn, key, &row)?;
    retally(
        txn,
        &key.seg,
        (JobState::Dead, false),
        (JobState::Dead, true),
    )?;
    fx.sched.push(SchedOp::RemoveDeadPin(key.clone()));
    fx.events.push(Event::Purged { key: key.clone() });
    check_condition(txn, &key.seg, now_ms, cfg, &mut fx)?;
    Ok((Purge::Purged, fx))
}

/// Schedules jobs for `added` peers of every stored segment the ledger tracks and that has not
/// expired (peers added to `known_peers` while the node runs), as its import would have: none
/// for the segment's source or a peer that has a job for it already. Returns the segments
/// given jobs.
pub fn schedule_added_peers(
    txn: &WriteTransaction,
    added: &std::collections::BTreeSet<NodeId>,
    now_ms: u64,
    cfg: &RelayConfig,
) -> Result<(Vec<Scheduled>, Effects), redb::Error> {
    let mut segs = Vec::new();
    for entry in txn.open_table(PROPAGATION)?.iter()? {
        let (k, _) = entry?;
        if let Ok(bytes) = <[u8; 32]>::try_from(k.value()) {
            segs.push(SegmentId(bytes));
        }
    }
    let mut fx = Effects::default();
    let mut out = Vec::new();
    for seg in segs {
        let row = match store::index::segment(txn, &seg) {
            Ok(Some(row)) => row,
            Ok(None) => continue,
            Err(e) => return Err(redb::Error::Corrupted(e.to_string())),
        };
        if row.expires_at_ms.is_some_and(|at| at <= now_ms) {
            continue;
        }
        let stored = Stored {
            id: seg,
            row,
            lifecycle: Default::default(),
            extra: (),
        };
        let mut scheduled = schedule_peers_in_txn(txn, &stored, added, cfg, now_ms)?;
        if scheduled.jobs.is_empty() {
            continue;
        }
        fx.sched.append(&mut scheduled.effects.sched);
        fx.events.append(&mut scheduled.effects.events);
        out.push(scheduled);
    }
    Ok((out, fx))
}

/// Cancels the pending jobs of peers no longer in `known_peers` (run when the relay opens).
/// Dead letters of such peers stay listed until purged (never dropped silently).
pub fn cancel_unknown_peers(
    txn: &WriteTransaction,
    now_ms: u64,
    cfg: &RelayConfig,
) -> Result<Effects, redb::Error> {
    let mut fx = Effects::default();
    let mut gone = Vec::new();
    for entry in txn.open_table(DUE)?.iter()? {
        let (_, key) = crate::tables::parse_due_key(entry?.0.value())?;
        if !cfg.known_peers.contains(&key.peer) {
            gone.push(key);
        }
    }
    for key in gone {
        let Some(mut row) = get_job(txn, &key)? else {
            continue;
        };
        let reason = "peer no longer in known_peers";
        leave_pending(
            txn,
            &key,
            &mut row,
            JobState::Cancelled,
            Some(reason.into()),
            At::new(now_ms, cfg),
            &mut fx,
        )?;
        fx.events.push(Event::Cancelled {
            key: key.clone(),
            reason: reason.into(),
        });
        check_condition(txn, &key.seg, now_ms, cfg, &mut fx)?;
    }
    Ok(fx)
}
