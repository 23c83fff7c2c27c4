//! The glue between the relay engine and the network layer: the relay's `Transport` over QUIC,
//! and the network's hooks back into the relay.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base::Clock;
use net::{NetHooks, Node, NodeId, SendOutcome};
use relay::{Outcome, Relay, Scheduled};
use store::{SegmentId, Stored};

/// The relay's transport: one attempt = one `send_segment` over the node's connection.
pub struct QuicTransport {
    pub node: Arc<Node>,
}

impl relay::transport::Transport for QuicTransport {
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

/// The network's hooks: schedule onward relay inside each receive transaction, tell the
/// scheduler after the commit, complete jobs delivered by catch-up.
pub struct Hooks {
    pub relay: Relay,
    /// Scheduling results between the ingest transaction and its commit notification.
    pending: Mutex<BTreeMap<SegmentId, Stored<Scheduled>>>,
    pub counters: Arc<crate::daemon::Counters>,
    clock: Arc<dyn Clock>,
}

impl Hooks {
    pub fn new(
        relay: Relay,
        counters: Arc<crate::daemon::Counters>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Hooks {
            relay,
            pending: Mutex::new(BTreeMap::new()),
            counters,
            clock,
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
        let scheduled =
            relay::schedule_in_txn(txn, stored, self.relay.config(), self.clock.now_ms())?;
        let entry = Stored {
            id: stored.id,
            row: stored.row.clone(),
            extra: scheduled,
        };
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stored.id, entry);
        Ok(())
    }

    fn on_offer(&self, _from: &NodeId, result: net::OfferResult) {
        self.counters.offer(result);
    }

    fn on_received(&self, from: &NodeId, id: &SegmentId) {
        let entry = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(stored) = entry {
            self.relay.on_stored(&stored);
        }
        tracing::info!(seg_id = %id, peer_id = %from, "segment received");
    }

    fn on_delivered(&self, to: &NodeId, id: &SegmentId) {
        let peer = to.clone();
        let relay = self.relay.clone();
        let now = self.clock.now_ms();
        let id = *id;
        // The hook runs on a network task: the ledger write waits on the committer elsewhere.
        tokio::spawn(async move {
            if let Err(e) = relay.delivered_out_of_band(id, &peer, now).await {
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
