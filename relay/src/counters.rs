//! Counters for metrics (INV-26, the relay half): [`RelayCounters`], read with
//! [`Relay::counters`](crate::Relay::counters).
//!
//! Two kinds of numbers:
//! - [`JobCounts`]: how many jobs are in each state now, over the whole ledger (not only this
//!   process's). Read from `relay-job-counts-v1`, which the ledger changes in the transaction of
//!   every job change, so a read costs six row lookups whatever the number of jobs; the
//!   in-flight split comes from the in-memory scheduler (O(pending jobs), in memory).
//! - [`RelayTotals`]: monotonically increasing totals since this process opened the relay,
//!   counted from the events of committed ledger transactions (never from a transaction that
//!   rolled back), under the scheduler's lock, so one snapshot sees whole transactions.
//!
//! **The identity** (tested in `tests/counters.rs` over harness runs and in the model test):
//! every attempt started in this process ends in exactly one of: a delivery, a failure, an
//! ignored ending (its job was no longer pending when its outcome or refund arrived: cancelled
//! by a `one_peer` condition, completed by catch-up), a refund (graceful shutdown), or it is
//! still running. So
//!
//! ```text
//! attempts_started = deliveries + failures + outcomes_ignored + refunded + transfers_in_flight
//! failures         = retries_scheduled + (dead_lettered - dead_lettered_at_start) + refused
//! ```
//!
//! exactly, whenever no picked job waits for its start to be recorded (the executor between two
//! loop turns, the harness between events). `dead_lettered_at_start` are jobs found at their
//! attempt bound when due (their last attempt was cut short by a crash of an earlier process):
//! dead-lettered without an attempt of this process. A job is delivered either by an attempt
//! (`deliveries`) or by catch-up (`delivered_by_catch_up`), never both.

use serde::Serialize;

use crate::ledger::Event;

/// Jobs by state, over the whole ledger. `pending + in_flight` are the ledger's pending jobs;
/// the seven fields partition every job ever scheduled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JobCounts {
    /// Pending, waiting for their due time or a free slot (no transfer running).
    pub pending: u64,
    /// Pending with a transfer running now.
    pub in_flight: u64,
    pub delivered: u64,
    pub refused: u64,
    pub cancelled: u64,
    /// Dead letters in the queue (not purged): the dead-letter queue's length.
    pub dead: u64,
    /// Dead letters an operator purged (their jobs stay dead).
    pub purged: u64,
}

impl JobCounts {
    /// Every job in the ledger.
    pub fn total(&self) -> u64 {
        self.pending
            + self.in_flight
            + self.delivered
            + self.refused
            + self.cancelled
            + self.dead
            + self.purged
    }
}

/// Totals since this process opened the relay; each only grows. See the module docs for the
/// identity they satisfy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RelayTotals {
    /// Attempts recorded as started (each then sent).
    pub attempts_started: u64,
    /// Attempts that ended delivered: the peer acknowledged, or answered "have".
    pub deliveries: u64,
    /// Of `deliveries`, those answered "have".
    pub deliveries_have: u64,
    /// Attempts that failed and scheduled a retry (busy and store-full answers included).
    pub retries_scheduled: u64,
    /// Jobs that became dead letters (after a failed attempt, or at start).
    pub dead_lettered: u64,
    /// Of `dead_lettered`, jobs found at their bound when due: no attempt of this process.
    pub dead_lettered_at_start: u64,
    /// Attempts the peer refused for good.
    pub refused: u64,
    /// Jobs cancelled (`one_peer` met, segment expired, peer removed from `known_peers`).
    pub cancelled: u64,
    /// Dead letters requeued by an operator.
    pub requeued: u64,
    /// Dead letters purged by an operator.
    pub purged: u64,
    /// Jobs completed because the peer pulled the segment from this node (catch-up, INV-15).
    pub delivered_by_catch_up: u64,
    /// Attempt endings (outcomes, or refunds at shutdown) that found their job no longer
    /// pending: nothing changed.
    pub outcomes_ignored: u64,
    /// Attempts refunded at a graceful shutdown.
    pub refunded: u64,
}

impl RelayTotals {
    /// Attempts that ended without a delivery and changed their job:
    /// `retries_scheduled + (dead_lettered − dead_lettered_at_start) + refused`.
    pub fn failures(&self) -> u64 {
        self.retries_scheduled + (self.dead_lettered - self.dead_lettered_at_start) + self.refused
    }

    /// Attempts started that have not ended yet by the totals' account:
    /// `attempts_started − (deliveries + failures + outcomes_ignored + refunded)`. Equal to the
    /// transfers in flight (see the module docs); negative would be a counting bug.
    pub fn attempts_open(&self) -> i64 {
        self.attempts_started as i64
            - (self.deliveries + self.failures() + self.outcomes_ignored + self.refunded) as i64
    }

    /// Counts the events of one committed transaction.
    pub(crate) fn record(&mut self, events: &[Event]) {
        for e in events {
            match e {
                Event::Started { .. } => self.attempts_started += 1,
                Event::Delivered { have, .. } => {
                    self.deliveries += 1;
                    if *have {
                        self.deliveries_have += 1;
                    }
                }
                // Mutation point (INV-26): a failed attempt that is retried is not counted.
                Event::Retry { .. } if store::mutants::active("skip_retry_counter") => {}
                Event::Retry { .. } => self.retries_scheduled += 1,
                Event::DeadLettered { at_start, .. } => {
                    self.dead_lettered += 1;
                    if *at_start {
                        self.dead_lettered_at_start += 1;
                    }
                }
                Event::Refused { .. } => self.refused += 1,
                Event::Cancelled { .. } => self.cancelled += 1,
                Event::Requeued { .. } => self.requeued += 1,
                Event::Purged { .. } => self.purged += 1,
                Event::DeliveredOutOfBand { .. } => self.delivered_by_catch_up += 1,
                Event::Ignored { .. } => self.outcomes_ignored += 1,
                Event::Refunded { .. } => self.refunded += 1,
                Event::Scheduled { .. }
                | Event::ConditionMet { .. }
                | Event::ConditionNever { .. }
                | Event::PinReleased { .. } => {}
            }
        }
    }
}

/// A snapshot for metrics: jobs by state now, totals since the process started, and the
/// transfers running now. Not one atomic snapshot across the two sources: the job counts are
/// read from the ledger just before the rest is read under the scheduler's lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RelayCounters {
    pub jobs: JobCounts,
    pub totals: RelayTotals,
    /// Transfers running now, including those whose job ended meanwhile (their outcome will be
    /// ignored). At least `jobs.in_flight`.
    pub transfers_in_flight: u64,
}

impl RelayCounters {
    /// The identity of the module docs: `totals.attempts_open() == transfers_in_flight`.
    pub fn reconciles(&self) -> bool {
        self.totals.attempts_open() == self.transfers_in_flight as i64
    }
}
