//! `relay`: the relay ledger, the decision core, the executor and the in-process multi-node
//! harness of `edged`.
//!
//! - [`core`]: decisions without I/O — what is due, what an outcome does, when a success
//!   condition holds, backoff and jitter — taking `now` and a jitter sample as arguments.
//! - [`tables`] and [`ledger`]: the relay's redb tables in the store's database, and every change
//!   to them as a function inside a caller's write transaction (the ingest's, or the relay's own
//!   batched ones through the store's committer).
//! - [`relay`]: [`Relay`], one node's engine: ledger + in-memory scheduler, the operations the
//!   executor, the harness and the operator use (status, dead letters, requeue, purge), and the
//!   network layer's catch-up completion ([`Relay::delivered_out_of_band`], INV-15).
//! - [`counters`]: [`RelayCounters`] for metrics — jobs by state, totals since start, and the
//!   identity `attempts = deliveries + failures + …` they satisfy (INV-26).
//! - [`exec_core`]: the executor loop without I/O — [`exec_core::ExecCore`] decides what to start
//!   (pick, record starts, then spawn), what an outcome does (batches with seeded jitter), what
//!   to refund at shutdown, when to wake next, and when the wall clock jumped
//!   ([`base::clock::wall_clock_jump_ms`]); it hands out [`exec_core::Step`]s for a shell to
//!   perform. Written once, driven by both shells below.
//! - [`executor`]: the tokio shell around the core: ledger operations through [`Relay`],
//!   transfers as tasks through a [`transport::Transport`], time through a [`clock::Clock`].
//! - `harness` (feature `sim`; test machinery, not shipped): an in-process multi-node network
//!   on virtual time whose discrete-event loop is the other shell around the same core (seeded
//!   and replayable), plus an in-memory transport for the tokio executor.
//! - `quic` (feature `net`): the relay over the network layer — the `Transport` over a
//!   `net::Node` and the `NetHooks` back into the relay; the daemon and the fleet simulator
//!   both run it.
//! - [`limits`]: every bound, and [`RelayConfig`] with its documented defaults.
#![forbid(unsafe_code)]

pub mod audit;
pub mod clock;
pub mod core;
pub mod counters;
pub mod error;
pub mod exec_core;
pub mod executor;
#[cfg(feature = "sim")]
pub mod harness;
pub mod ledger;
pub mod limits;
pub mod peer;
#[cfg(feature = "net")]
pub mod quic;
pub mod relay;
pub mod tables;
pub mod transport;

pub use crate::core::{JobKey, Outcome};
pub use counters::{JobCounts, RelayCounters, RelayTotals};
pub use error::RelayError;
pub use ledger::{OutOfBand, Scheduled, schedule_in_txn};
pub use limits::RelayConfig;
pub use peer::NodeId;
pub use relay::{ClockJump, DeadLetter, JobStatus, Reconfigured, Relay, SegmentStatus};
