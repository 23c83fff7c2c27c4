//! The glue between the relay engine and the network layer lives in `relay::quic` (the fleet
//! simulator runs the same code); the daemon supplies where offer verdicts go: counted, and a
//! segment refused because the store is full said in words, with what holds the space.

use std::sync::Arc;

pub use relay::quic::{Hooks, QuicTransport};

/// The daemon's sink of offer verdicts.
pub struct Offers {
    counters: Arc<super::Counters>,
    store: store::Store,
    /// A peer retries a refused segment: one line per peer and window, not one per retry.
    log: net::logcap::LogLimiter,
}

impl Offers {
    pub fn new(counters: Arc<super::Counters>, store: store::Store) -> Offers {
        Offers {
            counters,
            store,
            log: net::logcap::LogLimiter::default(),
        }
    }

    /// A receive refused for a full store, in words: which segments hold the space, for whom
    /// (read only when the line is logged: the read walks the index).
    fn store_full(&self, from: &net::NodeId) {
        let Some(suppressed) = self.log.check(
            from.as_str(),
            "receive_store_full",
            std::time::Instant::now(),
        ) else {
            return;
        };
        // The verdict arrives on the network's runtime; the walk of the index does not belong
        // there.
        let (store, from) = (self.store.clone(), from.clone());
        let log = move || {
            let held = match crate::storefull::StoreFull::explain(&store, 0, 0) {
                Ok(full) => full.holders_in_words(),
                Err(e) => format!("the segments holding the space cannot be listed: {e}"),
            };
            tracing::warn!(
                suppressed,
                kind = "receive_store_full",
                peer = %from,
                held = %crate::output::Escaped(&held),
                "segment from a peer refused: store full; the peer retries later"
            );
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(log)),
            Err(_) => log(),
        }
    }
}

impl relay::quic::OfferSink for Offers {
    fn offer(&self, from: &net::NodeId, result: net::OfferResult) {
        self.counters.offer(result);
        if matches!(
            result,
            net::OfferResult::Rejected(net::RejectReason::StoreFull)
        ) {
            self.store_full(from);
        }
    }
}
