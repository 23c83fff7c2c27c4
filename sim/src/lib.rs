//! `edge-sim`: the whole fleet on one thread and virtual time — real stores on the power-loss
//! file system double, real relay ledgers and executors, real network nodes speaking QUIC over a
//! simulated network — under faults given as data, replayable from a seed.
//!
//! A run ([`run::run_seed`]): a seed picks a workload variant (fleet size, topology, signed
//! segments, who imports what when) and a fault plan; the workload is imported and the faults
//! applied over a one-minute window, then everything heals; the fleet must converge within a
//! bound of virtual time; then the checks ([`check`]) run and the final state is compared with
//! the fault-free run of the same workload. The report carries the trace digest (the network's
//! and the simulator's own): the same seed gives the same digest.
//!
//! | module | what |
//! |---|---|
//! | [`fault`] | faults as data and a seeded plan of them |
//! | [`topology`] | line, ring, mesh |
//! | [`workload`] | segments and imports |
//! | [`identity`] | node certificates valid at the virtual start time |
//! | [`node`] | one node: the daemon's parts, glued by `relay::quic`; boot, power loss, stop |
//! | [`fleet`] | the nodes on one simulated network; faults applied, heal, convergence |
//! | [`check`] | the checks and the final state |
//! | [`run`] | one seed, end to end |
//! | [`sweep`] | many seeds on a few threads |
//! | [`seed`] | `EDGE_SIM_SEED`, `EDGE_SIM_SEEDS`, replay commands |
//! | [`trace`] | the simulator's hashed event trace |
//!
//! # Replay: what is exact and what is not yet
//!
//! Everything runs on one thread with paused tokio time, the network's disk work inline
//! (`net::DiskMode::Inline`), every random choice seeded, identities deterministic
//! (`net::sim::fleet_identities`), every wall clock a `relay::clock::VirtualClock` on the paused
//! time. The event trace (faults, imports and their outcomes, boots, the convergence time to
//! the poll, the final state) replays exactly: [`RunReport::trace_digest`] is the replay digest
//! the seeds test asserts. The network's datagram trace ([`RunReport::net_digest`]) does not
//! replay for every seed yet (about half of them, measured): the relay's async ledger writes
//! (`Relay::record_starts`, `apply_outcomes`, `refund`, `delivered_out_of_band`) wait for the
//! store's committer thread on a tokio blocking thread (`relay/src/relay.rs`, `run_blocking`),
//! so when their results reach the runtime — relative to other tasks ready at the same virtual
//! instant — depends on the host's scheduling, and with it the order in which datagrams are
//! sent. Virtual time does not move while such a write is pending, so timeouts are not
//! affected; an inline ledger mode in the relay would close this.
//!
//! Test machinery only: nothing shipped depends on this crate, and without its feature `sim`
//! it is empty.
#![cfg(feature = "sim")]
#![forbid(unsafe_code)]

pub mod check;
pub mod error;
pub mod fault;
pub mod fleet;
pub mod identity;
pub mod node;
pub mod run;
pub mod seed;
pub mod sweep;
pub mod topology;
pub mod trace;
pub mod workload;

pub use error::SimError;
pub use run::{RunReport, Scenario, run_seed};
pub use sweep::{Sweep, sweep};
