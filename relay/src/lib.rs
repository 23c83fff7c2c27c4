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
//! - [`executor`]: the tokio shell that runs transfers through a [`transport::Transport`] and
//!   sleeps until something is due, with time through a [`clock::Clock`].
//! - [`harness`]: an in-process multi-node network on virtual time (discrete events), seeded
//!   and replayable, plus an in-memory transport for the tokio executor.
//! - `quic` (feature `net`): the relay over the network layer — the `Transport` over a
//!   `net::Node` and the `NetHooks` back into the relay; the daemon and the fleet simulator
//!   both run it.
//! - [`limits`]: every bound, and [`RelayConfig`] with its documented defaults.
#![forbid(unsafe_code)]

pub mod clock;
pub mod core;
pub mod counters;
pub mod error;
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
pub use peer::PeerId;
pub use relay::{DeadLetter, JobStatus, Relay, SegmentStatus};
