//! Simulation machinery for the real `net` code (feature `sim`, never in the shipped binary):
//! an in-process UDP network for quinn on tokio's paused clock, a clock that follows it, and
//! deterministic fleet identities.
//!
//! - [`SimNet`]: every node gets a [`quinn::AsyncUdpSocket`] from [`SimNet::socket`] and is
//!   started with it through the socket seam ([`crate::NodeSetup::socket`]); the node wraps it
//!   in its address filter as it would a real socket. A datagram's fate (blocked, lost,
//!   delayed, duplicated, held back so that later ones overtake it) is drawn from one seeded
//!   ChaCha stream in the order datagrams are sent, and it is delivered on tokio's clock after
//!   its link's delay: on the paused [`runtime`] time only moves when every task waits, so a
//!   simulated minute costs what its packets cost to process.
//! - Faults are data: a [`Link`] per directed pair of addresses, changeable while running
//!   ([`SimNet::set_link`], [`SimNet::set_all`]); a crashed node's address is
//!   [`SimNet::unbind`]ed, and binding it again replaces the old socket (a restarted node).
//! - [`SimNet::trace_digest`] hashes what happened to every datagram: two runs with the same
//!   seed and the same calls give the same digest when everything else they do is
//!   deterministic too (see [`runtime`] for what that takes).
//! - [`fleet_identities`]: Ed25519 certificates derived from a seed, so that handshakes carry
//!   fixed-size, deterministic signatures and packet sizes do not vary between runs (ECDSA
//!   signatures vary in length).
//! - [`SimClock`]: the node's wall clock ([`crate::Clock`]) on tokio's virtual time.

mod clock;
mod fleet;
mod network;
mod socket;

pub use clock::SimClock;
pub use fleet::{SIM_CERT_VALIDITY_DAYS, SimFleetError, fleet_identities};
pub use network::{
    DUPLICATE_LAG_MAX_MS, INBOX_DATAGRAMS_MAX, LINK_LATENCY_MIN_MS, Link, REORDER_HOLD_MAX_MS,
    SimNet, SimNetStats,
};

/// The runtime simulations run on: one thread (tasks interleave in one order for one input),
/// time enabled and paused (it advances by itself to the next timer whenever every task waits).
///
/// What else a replay needs: nodes seeded (`NetConfig::rng_seed`, which also seeds quinn's
/// endpoint), identities from [`fleet_identities`], wall clocks from [`SimClock`], and disk
/// work inline (`NetConfig::disk_mode = DiskMode::Inline`, stores on `store::fs::sim::SimFs`).
/// With disk work on blocking threads a simulation does not even progress: tokio does not
/// advance paused time while a blocking task runs, and a transfer's disk thread lives as long
/// as the transfer, waiting for the network, which waits for time.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
}
