//! The glue between the relay engine and the network layer (feature `net`): the relay's
//! [`Transport`](crate::transport::Transport) over a [`net::Node`], and the network's
//! [`NetHooks`] back into the relay. The daemon and the fleet simulator both run this code.
//!
//! What the caller supplies: the clock due times are computed on (the daemon's one clock, the
//! simulator's virtual one), and where offer verdicts are counted ([`OfferSink`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use net::{NetHooks, Node, NodeId, OfferResult, SendOutcome};
use store::{SegmentId, Stored};

use crate::clock::Clock;
use crate::core::Outcome;
use crate::ledger::{Scheduled, schedule_in_txn};
use crate::relay::Relay;

/// The relay's transport: one attempt = one `send_segment` over the node's connection.
#[derive(Debug)]
pub struct QuicTransport {
    pub node: Arc<Node>,
}

impl crate::transport::Transport for QuicTransport {
    fn send(
        &self,
        peer: &NodeId,
        seg: SegmentId,
    ) -> impl std::future::Future<Output = Outcome> + Send {
        let node = self.node.clone();
        let peer = peer.clone();
        async move { outcome(node.send_segment(&peer, seg).await) }
    }
}

/// Maps what the network saw onto what the relay decides with.
pub fn outcome(sent: SendOutcome) -> Outcome {
    match sent {
        SendOutcome::Delivered => Outcome::Delivered,
        SendOutcome::Have => Outcome::Have,
        SendOutcome::Busy => Outcome::Busy,
        SendOutcome::StoreFull => Outcome::StoreFull("peer store full".into()),
        SendOutcome::Refused { reason, detail } if reason.is_permanent() => {
            Outcome::Refused(format!("{reason}: {detail}"))
        }
        SendOutcome::Refused { reason, detail } => Outcome::Failed(format!("{reason}: {detail}")),
        SendOutcome::Unreachable(e) => Outcome::Unreachable(e),
        SendOutcome::HandshakeRefused(e) => Outcome::Unreachable(format!("handshake refused: {e}")),
        SendOutcome::TimedOut => Outcome::TimedOut("no progress within the stall timeout".into()),
        SendOutcome::LocalCorrupt(e) => Outcome::Failed(format!("local copy corrupt: {e}")),
        SendOutcome::NotStored => Outcome::Failed("segment no longer stored here".into()),
        SendOutcome::Untrusted(e) => Outcome::Refused(e),
        SendOutcome::Expired => Outcome::Refused("segment expired here".into()),
        SendOutcome::Failed(e) => Outcome::Failed(e),
    }
}

/// Where the verdicts of offers received from peers are counted (INV-26).
pub trait OfferSink: Send + Sync + 'static {
    fn offer(&self, from: &NodeId, result: OfferResult);
}

/// The network's hooks: schedule onward relay inside each receive transaction, tell the
/// scheduler after the commit, complete jobs delivered by catch-up.
pub struct Hooks {
    pub relay: Relay,
    clock: Arc<dyn Clock>,
    offers: Arc<dyn OfferSink>,
    /// Scheduling results between the ingest transaction and its commit notification.
    pending: Mutex<BTreeMap<SegmentId, Stored<Scheduled>>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("node_id", &self.relay.config().node_id)
            .finish_non_exhaustive()
    }
}

impl Hooks {
    /// Hooks into `relay`, computing due times on `clock` and counting offers into `offers`.
    pub fn new(relay: Relay, clock: Arc<dyn Clock>, offers: Arc<dyn OfferSink>) -> Self {
        Hooks {
            relay,
            clock,
            offers,
            pending: Mutex::new(BTreeMap::new()),
        }
    }
}

impl NetHooks for Hooks {
    fn on_stored(
        &self,
        txn: &redb::WriteTransaction,
        stored: &Stored<()>,
        _from: &NodeId,
    ) -> Result<(), redb::Error> {
        let scheduled = schedule_in_txn(txn, stored, &self.relay.config(), self.clock.now_ms())?;
        let entry = Stored {
            id: stored.id,
            row: stored.row.clone(),
            lifecycle: stored.lifecycle.clone(),
            extra: scheduled,
        };
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stored.id, entry);
        Ok(())
    }

    fn on_offer(&self, from: &NodeId, result: OfferResult) {
        self.offers.offer(from, result);
    }

    /// The peers the relay would schedule once the segment is stored (every known peer but the
    /// one it came from): forwarding to them early changes nothing in the ledger, whose jobs
    /// then find the segment there ("have").
    fn forward_targets(&self, from: Option<&NodeId>, _id: &SegmentId) -> Vec<NodeId> {
        let cfg = self.relay.config();
        if !cfg.cut_through {
            return Vec::new();
        }
        cfg.known_peers
            .iter()
            .filter(|p| Some(*p) != from)
            .cloned()
            .collect()
    }

    fn on_received(&self, _from: &NodeId, id: &SegmentId) {
        let entry = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(stored) = entry {
            self.relay.on_stored(&stored);
        }
        // No log line here: the receive itself logs "segment received", with the size and the
        // resume offset, once per stored segment.
    }

    fn on_delivered(&self, to: &NodeId, id: &SegmentId) {
        let peer = to.clone();
        let relay = self.relay.clone();
        let clock = self.clock.clone();
        let id = *id;
        // The hook runs on a network task: the ledger write waits on the committer elsewhere.
        tokio::spawn(async move {
            if let Err(e) = relay.delivered_out_of_band(id, &peer, clock.now_ms()).await {
                tracing::error!(seg_id = %id, peer_id = %peer, error = %e, "catch-up delivery not recorded");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_refusals_end_the_job_and_the_rest_retry() {
        let refused = |reason| SendOutcome::Refused {
            reason,
            detail: String::new(),
        };
        assert!(matches!(
            outcome(refused(net::RejectReason::UntrustedPublisher)),
            Outcome::Refused(_)
        ));
        assert!(matches!(
            outcome(refused(net::RejectReason::Internal)),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            outcome(SendOutcome::StoreFull),
            Outcome::StoreFull(_)
        ));
        assert!(matches!(outcome(SendOutcome::Have), Outcome::Have));
        assert!(matches!(
            outcome(SendOutcome::TimedOut),
            Outcome::TimedOut(_)
        ));
    }
}
