//! Node certificates for a simulated fleet: the network layer's deterministic Ed25519 fleet
//! identities (`net::sim::fleet_identities`), valid from the virtual start time, made once per
//! process.

use std::sync::OnceLock;

use net::NodeIdentity;
use relay::harness::segments::T0_MS;

use crate::error::SimError;

/// Virtual wall-clock time at the start of every run (2026-01-01T00:00:00Z, the time the
/// relay's test segments are made for).
pub const SIM_START_MS: u64 = T0_MS;
/// Nodes a fleet may have (certificates are issued for `n0` … `n<NODES_MAX-1>`).
pub const NODES_MAX: usize = 8;
/// Seed of the fleet CA and node keys: one fleet for every run, so certificates (and the sizes
/// of handshake packets) are the same in every run.
pub const FLEET_PKI_SEED: u64 = 0xED6E_5117;

/// The name of node `i`.
pub fn node_name(i: usize) -> String {
    format!("n{i}")
}

/// The identities of `n0` … `n<NODES_MAX-1>`.
pub fn fleet_identities() -> Result<&'static [NodeIdentity], SimError> {
    static IDENTITIES: OnceLock<Result<Vec<NodeIdentity>, String>> = OnceLock::new();
    IDENTITIES
        .get_or_init(|| {
            let names: Vec<String> = (0..NODES_MAX).map(node_name).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            net::sim::fleet_identities(FLEET_PKI_SEED, &names, SIM_START_MS)
                .map_err(|e| e.to_string())
        })
        .as_deref()
        .map_err(|e| SimError::Identity(e.clone()))
}
