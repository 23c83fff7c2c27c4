//! Named crash points: deterministic process aborts for crash tests.
//!
//! Crash tests run a real process and need it to die at an exact step of the ingest or relay
//! path, not at whatever moment a timer happens to hit. Each step calls [`point`] with a stable
//! name; when the environment variable [`CRASH_AT_ENV`] is `name:k`, the process aborts (no
//! unwinding, no destructors, no flush: the closest thing to `kill -9` from inside) on the k-th
//! time (1-based) that point is reached. With the variable unset the cost is one relaxed atomic
//! load.
//!
//! Points are compiled in only with the `failpoints` feature (the failure-injection build,
//! `edged --features fi`). Without it [`point`] is an empty inline function: the shipped binary
//! neither reads [`CRASH_AT_ENV`] nor holds its name or any point's name. The names below are
//! plain constants, so the suite and the tests can name points whatever the build.
//!
//! Names are stable: tests, the failure-injection suite and the docs refer to them.
//! [`POINTS`] lists the store's own points (ingest, checkpoint, eviction), which the store's
//! crash test reaches with a store-only workload; [`GROUP_POINTS`] the committer's points inside
//! a group commit, which only concurrent writers reach (a pipelined import, many segments
//! arriving at once); [`RELAY_POINTS`] lists the relay's, which only a running relay reaches.
//! [`all_points`] is all of them.

/// `name:k` — abort at the k-th hit of the crash point `name`.
pub const CRASH_AT_ENV: &str = "EDGED_CRASH_AT";

/// Every crash point of the store: the ingest, checkpoint and eviction paths, in path order.
pub const POINTS: &[&str] = &[
    INGEST_STREAM,
    INGEST_AFTER_WRITE,
    INGEST_AFTER_FSYNC,
    INGEST_AFTER_RENAME,
    INGEST_AFTER_DIR_FSYNC,
    INGEST_IN_COMMIT,
    INGEST_AFTER_COMMIT,
    CHECKPOINT_AFTER_SYNC,
    CHECKPOINT_AFTER_COMMIT,
    EVICT_AFTER_COMMIT,
    EVICT_AFTER_REMOVE,
];

/// Every crash point of the relay path (the `relay` crate calls them), in the order a job meets
/// them. Named here with the store's so that one list holds every point of the process.
pub const RELAY_POINTS: &[&str] = &[
    RELAY_AFTER_START_COMMIT,
    RELAY_AFTER_OUTCOME_COMMIT,
    RELAY_AFTER_CATCHUP_COMMIT,
    RELAY_AFTER_REQUEUE_COMMIT,
];

/// The committer's points inside a group commit: a batch of two or more operations (ingests,
/// relay outcomes, checkpoints, in any mix), in path order.
pub const GROUP_POINTS: &[&str] = &[COMMIT_GROUP_BEFORE_COMMIT, COMMIT_GROUP_AFTER_COMMIT];

/// Every crash point: the store's, the committer's, then the relay's.
pub fn all_points() -> impl Iterator<Item = &'static str> {
    POINTS
        .iter()
        .chain(GROUP_POINTS)
        .chain(RELAY_POINTS)
        .copied()
}

/// Each payload chunk written to the temp file.
pub const INGEST_STREAM: &str = "ingest.stream";
/// The whole payload is written, not yet fsynced.
pub const INGEST_AFTER_WRITE: &str = "ingest.after_write";
/// The temp file is fsynced, not yet renamed.
pub const INGEST_AFTER_FSYNC: &str = "ingest.after_fsync";
/// Renamed into `segments/`, directory not yet fsynced.
pub const INGEST_AFTER_RENAME: &str = "ingest.after_rename";
/// Directory fsynced, index row not yet committed.
pub const INGEST_AFTER_DIR_FSYNC: &str = "ingest.after_dir_fsync";
/// Inside the redb write transaction, after the rows are written, before commit.
pub const INGEST_IN_COMMIT: &str = "ingest.in_commit";
/// Committed, success not yet reported to the caller.
pub const INGEST_AFTER_COMMIT: &str = "ingest.after_commit";
/// A partial's temp file is fsynced at a checkpoint, its offset not yet recorded.
pub const CHECKPOINT_AFTER_SYNC: &str = "checkpoint.after_sync";
/// A partial's checkpoint offset is committed.
pub const CHECKPOINT_AFTER_COMMIT: &str = "checkpoint.after_commit";
/// Eviction committed (rows gone, tombstones written), files not yet removed.
pub const EVICT_AFTER_COMMIT: &str = "evict.after_commit";
/// Evicted files removed, directory not yet fsynced.
pub const EVICT_AFTER_REMOVE: &str = "evict.after_remove";

/// Every operation of a batch of two or more has written its rows into the one transaction;
/// it is not committed, and none of them has been answered. A hit per such batch.
pub const COMMIT_GROUP_BEFORE_COMMIT: &str = "commit.group_before_commit";
/// A batch of two or more operations is committed (durable); none of them has been answered
/// yet. A hit per such batch.
pub const COMMIT_GROUP_AFTER_COMMIT: &str = "commit.group_after_commit";

/// The starts of a batch of attempts are committed (attempts counted, crash-retry due times
/// set); no transfer has begun. A hit per batch with at least one attempt started.
pub const RELAY_AFTER_START_COMMIT: &str = "relay.after_start_commit";
/// A batch of transfer outcomes is committed (deliveries, retries, dead letters, the success
/// condition) and logged; the executor has not taken its next step. A hit per batch that
/// changed a job.
pub const RELAY_AFTER_OUTCOME_COMMIT: &str = "relay.after_outcome_commit";
/// A catch-up delivery (a peer pulled the segment from this node and acknowledged it)
/// completed a job, committed. A hit per completed job.
pub const RELAY_AFTER_CATCHUP_COMMIT: &str = "relay.after_catchup_commit";
/// An operator's requeue of dead letters is committed, not yet answered. A hit per requeue that
/// requeued at least one job.
pub const RELAY_AFTER_REQUEUE_COMMIT: &str = "relay.after_requeue_commit";

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    pub(super) struct Armed {
        pub name: String,
        pub at: u64,
        pub hits: AtomicU64,
    }

    pub(super) fn armed() -> Option<&'static Armed> {
        static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
        ARMED
            .get_or_init(|| {
                let spec = std::env::var(super::CRASH_AT_ENV).ok()?;
                let (name, at) = spec.rsplit_once(':')?;
                let at = at.parse::<u64>().ok().filter(|k| *k > 0)?;
                Some(Armed {
                    name: name.to_owned(),
                    at,
                    hits: AtomicU64::new(0),
                })
            })
            .as_ref()
    }

    pub(super) fn hit(armed: &Armed, name: &str) -> bool {
        armed.name == name && armed.hits.fetch_add(1, Ordering::Relaxed) + 1 == armed.at
    }
}

/// Marks a crash point. Aborts the process if this is the armed point's k-th hit.
#[cfg(feature = "failpoints")]
#[inline]
pub fn point(name: &'static str) {
    if let Some(armed) = armed::armed() {
        if armed::hit(armed, name) {
            // Abort rather than exit: no destructors, no buffered writes flushed.
            eprintln!("crash point {name} hit {} times: aborting", armed.at);
            std::process::abort();
        }
    }
}

/// Marks a crash point: nothing at all in a build without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn point(_name: &'static str) {}

/// Whether crash points are compiled into this build.
pub const ENABLED: bool = cfg!(feature = "failpoints");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_names_are_unique_and_relay_points_are_named_relay() {
        let all: Vec<&str> = all_points().collect();
        let unique: std::collections::BTreeSet<&str> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len(), "{all:?}");
        assert!(RELAY_POINTS.iter().all(|p| p.starts_with("relay.")));
        assert!(POINTS.iter().all(|p| !p.starts_with("relay.")));
        assert!(GROUP_POINTS.iter().all(|p| p.starts_with("commit.group_")));
    }
}
