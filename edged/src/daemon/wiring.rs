//! The glue between the relay engine and the network layer lives in `relay::quic` (the fleet
//! simulator runs the same code); the daemon supplies where offer verdicts are counted.

pub use relay::quic::{Hooks, QuicTransport};

impl relay::quic::OfferSink for super::Counters {
    fn offer(&self, _from: &net::NodeId, result: net::OfferResult) {
        super::Counters::offer(self, result);
    }
}
