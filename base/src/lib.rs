//! `base`: what every layer of `edged` shares, defined once.
//!
//! - [`NodeId`]: a node's name in the fleet — the DNS name in its certificate, the key of
//!   `known_peers`, the peer of a relay job. Validated once, where it is parsed; every crate
//!   passes the same type.
//! - [`clock`]: the clock seam ([`Clock`]: wall-clock UTC milliseconds and tokio's monotonic
//!   time), the real clock, a virtual one for paused runtimes, and the one rule that says when
//!   the wall clock jumped ([`clock::wall_clock_jump_ms`]).
//! - [`DiskMode`]: where blocking storage work runs — on blocking threads (production) or inline
//!   (deterministic simulation); the relay and the network layer take the same value.
//! - [`setting::Conflict`]: two configuration settings that contradict each other, as data,
//!   so the configuration file's reader can name both keys and say which one is a default.
//!
//! The daemon creates one clock and hands the same `Arc<dyn Clock>` to the relay, the network
//! layer and its own services; tests and simulations hand a [`clock::VirtualClock`] instead.
#![forbid(unsafe_code)]

pub mod clock;
pub mod disk_mode;
pub mod node_id;
pub mod setting;

pub use clock::{Clock, SystemClock, VirtualClock};
pub use disk_mode::DiskMode;
pub use node_id::{NODE_ID_BYTES_MAX, NodeId, NodeIdError};
