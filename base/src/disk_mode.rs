//! Where a layer runs its blocking storage work: one seam, the same value for the relay's
//! ledger and the network layer's store calls.

/// Where blocking storage work (store calls, disk steps, waiting for a commit) runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DiskMode {
    /// On tokio's blocking threads (`spawn_blocking`), so async tasks never block. The
    /// default, and the only mode for a node serving real traffic.
    #[default]
    Threads,
    /// On the calling async task: deterministic, no thread hop whose timing decides what runs
    /// next. For simulations on one thread, where the store is simulated too and a blocking
    /// call costs no real time.
    Inline,
}
