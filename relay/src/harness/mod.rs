//! The in-process multi-node harness: N nodes, each with its own data directory (on
//! [`store::fs::sim::SimFs`]), store and ledger, joined by links that can be up, down, slow,
//! failing, flaky or partitioned.
//!
//! - [`sim::Sim`] runs the nodes on virtual time as a discrete-event simulation: one thread, one
//!   ordered event queue, every random choice from one seeded RNG, so a seed replays exactly
//!   (the trace digest proves it). Each node runs the executor's own core
//!   ([`ExecCore`](crate::exec_core::ExecCore)), which the simulation drives as the tokio
//!   executor does, performing its steps through the same ledger operations.
//! - [`mem::MemTransport`] is an in-memory [`Transport`](crate::transport::Transport) for the real
//!   tokio executor on paused tokio time.
//! - [`deliver`] is what a transfer does in both: the receiving node ingests the sender's stored
//!   `.seg` bytes through its own store with the relay's scheduling (so it relays onward:
//!   multi-hop), and the ingest's result maps to the relay's [`Outcome`].
//! - [`segments`] makes signed test segments; [`seed_from_env`] reads `RELAY_SEED`.

pub mod mem;
pub mod segments;
pub mod sim;

use store::{IngestError, IngestOptions, IngestOutcome, SegmentId, Store};

use crate::core::Outcome;
use crate::peer::NodeId;
use crate::relay::Relay;

/// The env var that replays a randomized harness run: `RELAY_SEED=1234 cargo test …`.
pub const SEED_ENV: &str = "RELAY_SEED";

/// The seed to use: `RELAY_SEED` if set (decimal or `0x` hex), else `default`. Prints it, so a
/// failing test's output says how to replay it.
pub fn seed_from_env(default: u64) -> u64 {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| parse_seed(&s))
        .unwrap_or(default);
    eprintln!("relay harness seed={seed} (replay: {SEED_ENV}={seed})");
    seed
}

fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// One transfer of `seg` from `sender` to `receiver`: the receiver ingests the sender's stored
/// `.seg` bytes (`IngestOptions::from_peer(sender)`, the relay's scheduling in the same
/// transaction), and the ingest's result becomes the sender's outcome: stored → delivered,
/// already held → have, `StoreFull` → store full, `Busy` → busy, signature/trust/format
/// failures → refused, anything else → failed.
pub fn deliver(
    sender_store: &Store,
    sender: &NodeId,
    receiver: &Relay,
    seg: SegmentId,
    sender_now_ms: u64,
    receiver_now_ms: u64,
) -> Outcome {
    let mut bytes = Vec::new();
    let read = sender_store
        .open_for_read(&seg, sender_now_ms)
        .and_then(|r| r.copy_to(&mut bytes, sender_now_ms));
    if let Err(e) = read {
        return Outcome::Failed(format!("sender cannot read its copy: {e}"));
    }
    let opts = IngestOptions::from_peer(sender.as_str());
    match receiver.ingest_reader(bytes.as_slice(), &opts, receiver_now_ms) {
        Ok(IngestOutcome::Stored(_)) => Outcome::Delivered,
        Ok(IngestOutcome::AlreadyHave { .. }) => Outcome::Have,
        Err(e @ IngestError::StoreFull { .. }) => Outcome::StoreFull(e.to_string()),
        Err(IngestError::Busy(_)) => Outcome::Busy,
        Err(e @ (IngestError::Verify(_) | IngestError::Format(_))) => {
            Outcome::Refused(e.to_string())
        }
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(super::parse_seed("42"), Some(42));
        assert_eq!(super::parse_seed(" 0xff "), Some(255));
        assert_eq!(super::parse_seed("x"), None);
    }
}
