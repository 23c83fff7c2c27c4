//! The network protocol as state machines, without I/O: no sockets, no threads, no clock.
//!
//! Each half of an exchange (see [`crate::wire`]) is a value that is asked what to do next
//! (`poll`) and told what happened (`on_*`, every event carrying the time it was seen). What
//! it asks for is a command value: a frame to write, a stream to finish or reset, a store call
//! or a disk step to run, a read with the deadline of its timer. Its last command is `Done`
//! with the outcome. The glue in [`crate::transfer`] and [`crate::catchup`] runs the commands
//! on quinn streams, `tokio::time` and the store (its disk side as [`crate::disk`] says);
//! unit tests beside each machine drive it with frames and events only.
//!
//! The rules they apply are the pure pieces of the crate: the minimum-rate rule of
//! [`crate::rate`], the frame bounds of [`crate::wire`], the page check and the bucket of
//! [`crate::catchup`].
//!
//! Counters ([`NetStats`]) and rate-limited log lines ([`LogLimiter`]) are bumped and written
//! by the machines themselves, where the decision is made: they are observations, not I/O
//! anything waits for.

pub(crate) mod pull;
pub(crate) mod pull_one;
pub(crate) mod receive;
pub(crate) mod send;
pub(crate) mod serve;

use std::sync::Arc;

use crate::logcap::LogLimiter;
use crate::pki::NodeId;
use crate::transfer::NetStats;

/// Where a machine reports what it saw: the node's counters and its log limiter, and the peer
/// the exchange is with.
#[derive(Clone)]
pub(crate) struct Observer {
    pub stats: Arc<NetStats>,
    pub limiter: Arc<LogLimiter>,
    pub peer: NodeId,
}

#[cfg(test)]
pub(crate) mod testing {
    //! What the machines' unit tests share: a peer, an observer, signed manifests.

    use std::sync::Arc;

    use store::keys::PublisherSecret;
    use store::manifest::{Manifest, SignedManifest, SuccessCondition};

    use super::Observer;
    use crate::transfer::{NetStats, StatsSnapshot};

    /// A creation time far enough in the past for any test clock.
    const CREATED_AT_MS: u64 = 1_767_225_600_000;

    pub fn observer() -> Observer {
        Observer {
            stats: Arc::new(NetStats::default()),
            limiter: Arc::default(),
            peer: "peer".parse().expect("node id"),
        }
    }

    pub fn stats(obs: &Observer) -> StatsSnapshot {
        obs.stats.snapshot()
    }

    /// A signed manifest for `payload`.
    pub fn manifest_of(payload: &[u8]) -> SignedManifest {
        let secret = PublisherSecret::from_seed([9; 32]);
        let m = Manifest {
            format_version: store::limits::MANIFEST_FORMAT_VERSION,
            publisher: secret.public(),
            name: format!("seg-{}", payload.len()),
            channel: "default".to_owned(),
            sequence: 1,
            created_at_ms: CREATED_AT_MS,
            expires_at_ms: None,
            condition: SuccessCondition::AllPeers,
            priority: 128,
            payload_len: payload.len() as u64,
            payload_hash: *blake3::hash(payload).as_bytes(),
            kind: store::manifest::SegmentKind::Content,
        };
        SignedManifest::sign(m, &secret).expect("sign")
    }

    /// `len` bytes that differ from chunk to chunk.
    pub fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }
}
