//! Named crash points: deterministic process aborts for crash tests.
//!
//! Crash tests run a real process and need it to die at an exact step of the ingest path, not at
//! whatever moment a timer happens to hit. Each step calls [`point`] with a stable name; when the
//! environment variable [`CRASH_AT_ENV`] is `name:k`, the process aborts (no unwinding, no
//! destructors, no flush: the closest thing to `kill -9` from inside) on the k-th time (1-based)
//! that point is reached. With the variable unset the cost is one relaxed atomic load.
//!
//! Points are always compiled in, so the daemon's failure-injection suite can crash the real
//! binary. Names are stable: tests and docs refer to them.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// `name:k` — abort at the k-th hit of the crash point `name`.
pub const CRASH_AT_ENV: &str = "EDGED_CRASH_AT";

/// Every crash point on the ingest, checkpoint and eviction paths, in path order.
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

struct Armed {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(CRASH_AT_ENV).ok()?;
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

/// Marks a crash point. Aborts the process if this is the armed point's k-th hit.
#[inline]
pub fn point(name: &'static str) {
    if let Some(armed) = armed() {
        if armed.name == name && armed.hits.fetch_add(1, Ordering::Relaxed) + 1 == armed.at {
            // Abort rather than exit: no destructors, no buffered writes flushed.
            eprintln!("crash point {name} hit {} times: aborting", armed.at);
            std::process::abort();
        }
    }
}
