//! `net`: the network layer of `edged` — fleet PKI, the QUIC + mutual-TLS node endpoint, the
//! wire protocol, resumable segment transfers and catch-up.
//!
//! # Where it sits
//!
//! ```text
//!   relay (engine: jobs, retry, dead letters)        edged (config, CLI, wiring)
//!        │  Transport trait (defined in relay)             │ ca_init / ca_issue / load_node_identity
//!        ▼                                                 ▼
//!   thin adapter ──────────────▶ net::Node ◀────────── NodeSetup
//!                                  │ send_segment(peer, id) → SendOutcome
//!                                  │ NetHooks: on_stored (in the ingest txn), on_delivered, …
//!                                  ▼
//!                                store (ingest, read, held ids)
//! ```
//!
//! **Architecture decision**: the relay engine lives in the `relay` crate, written separately,
//! which defines a `Transport` trait. `net` does NOT depend on `relay`: it exposes [`Node`]
//! (`send_segment` returning a typed [`SendOutcome`]) and the [`NetHooks`] callbacks, and a thin
//! adapter — written where both are visible (in `edged`, or in `relay` behind a feature) — maps
//! them onto that trait. This keeps the engine testable without sockets, and the network layer
//! testable without the engine.
//!
//! # Code map
//!
//! | module | what |
//! |---|---|
//! | [`limits`] | every bound and default, named, unit last |
//! | [`pki`] | fleet CA, node certificates, PEM files, node ids |
//! | [`tls`] | rustls configurations: mutual TLS against the fleet CA and `known_peers` |
//! | [`wire`] | the wire protocol: frame layout, every message, stream and connection codes |
//! | [`transfer`] | one segment over one stream: the glue of the sender's and receiver's machines |
//! | `proto` | the protocol as state machines without I/O: send, receive, pull, pull_one, serve |
//! | [`disk`] | the disk side as steps (read/verify, write/checkpoint/finish) and [`DiskMode`] |
//! | [`rate`] | the minimum-rate rule of a transfer, without I/O |
//! | [`takeover`] | who receives which segment; a slow sender is taken over |
//! | [`catchup`] | anti-entropy: digests, pages, pulls, and their bounds |
//! | [`filter`] | the address filter of the node's socket: who is heard, who is answered |
//! | [`supervision`] | which connection with a peer to keep (duplicates, restarts), without I/O |
//! | [`node`] | the endpoint, admission, supervised connections, stream dispatch, the client API |
//! | [`config`] | [`NetConfig`] |
//! | [`clock`] | the wall-clock seam (also used for certificate validity) |
//! | [`logcap`] | rate-limited warnings: a peer cannot flood the log |
//! | `sim` | (feature `sim`) a simulated UDP network on tokio's paused clock, simulated fleets |
//!
//! # Architecture invariants
//!
//! - **A peer is its certificate.** Identity is the DNS SAN of a certificate chaining to the
//!   fleet CA and listed in `known_peers`, checked in the TLS handshake in both directions
//!   (INV-09); addresses only say where to send packets and whom to hear, and may point at a
//!   proxy.
//! - **Nothing is acknowledged before it is durable** (INV-03): `Ack` is written only after
//!   `Ingest::finish` returned, and the node's `on_stored` hook runs inside that transaction.
//! - **Only the offending stream fails** (INV-17, INV-18): frames are bounded before
//!   allocation, decoding rejects trailing bytes, stalls time out; every such failure resets
//!   one stream with a typed code.
//! - **Memory does not grow with segment size** (INV-20): payloads move in fixed chunks
//!   through bounded channels between the network tasks and the disk threads.
//! - **Decisions without I/O**: every step of the protocol is decided by a state machine of
//!   `proto` that sees frames and events (with their time) and answers with commands; the
//!   glue in [`transfer`] and [`catchup`] is the only code that touches streams, timers and the
//!   store, and every blocking store call goes through [`disk`]'s [`DiskMode`].
//! - **Seams**: the UDP socket comes through quinn's abstract-socket API
//!   ([`NodeSetup::socket`]), randomness from a seed ([`NetConfig::rng_seed`], also quinn's
//!   `EndpointConfig::rng_seed`), wall-clock time from a [`Clock`].
//! - **Packets go only to configured peers** (INV-27): no discovery, no lookup; the socket's
//!   [`filter`] drops datagrams from other addresses before QUIC sees them and keeps any
//!   datagram from leaving for an address the node did not choose to answer.
//! - **A peer cannot make the node spend without bound** (INV-18): transfers keep a minimum
//!   rate per window in both directions, a slow sender is taken over, catch-up rounds and the
//!   pulls one peer can waste are bounded by count and by rate, handshakes by budgets and
//!   deadlines after a stateless address check, and warnings by [`logcap`].

pub mod catchup;
pub mod clock;
pub mod config;
pub mod disk;
pub mod filter;
pub mod handshake_cause;
pub mod limits;
pub mod logcap;
pub mod node;
pub mod pki;
pub(crate) mod proto;
pub mod rate;
pub mod receipts;
#[cfg(feature = "sim")]
pub mod sim;
pub mod supervision;
pub mod takeover;
pub mod tls;
pub mod transfer;
pub mod wire;

/// The QUIC implementation, re-exported: the socket seam ([`NodeSetup::socket`]) takes its
/// `AsyncUdpSocket`, so a caller implementing one (or a test speaking QUIC to a node) needs
/// the very same version.
pub use quinn;

pub use catchup::{CatchupReport, RoundCut};
pub use clock::{Clock, SystemClock};
pub use config::{ConfigError, NetConfig};
pub use disk::DiskMode;
pub use node::{NetError, Node, NodeSetup, PeerStatus, bind_udp};
pub use pki::{
    CaFiles, NodeFiles, NodeId, NodeIdentity, PkiError, ca_init, ca_issue, load_node_identity,
};
pub use transfer::{NetHooks, NetStats, NoHooks, OfferResult, SendOutcome, StatsSnapshot};
pub use wire::RejectReason;
