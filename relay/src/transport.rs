//! The transport seam: how the executor sends one segment to one peer. The QUIC transport
//! implements it; tests use `harness::mem::MemTransport` (feature `sim`).

use std::future::Future;

use store::SegmentId;

use crate::core::Outcome;
use crate::peer::NodeId;

/// Sends segments to peers. One call is one attempt; its [`Outcome`] says what the peer
/// answered or what went wrong. A call may be cancelled (its future dropped) at any await point
/// by a graceful shutdown; it must then leave nothing half-done that a later attempt cannot
/// resume.
pub trait Transport: Send + Sync + 'static {
    /// Offers `seg` to `peer` and streams it if wanted.
    fn send(&self, peer: &NodeId, seg: SegmentId) -> impl Future<Output = Outcome> + Send;
}
