//! [`NetConfig`]: everything the network layer can be told, with defaults from [`crate::limits`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};
use store::limits::SIGNED_MANIFEST_BYTES_MAX;

use crate::disk::DiskMode;
use crate::limits::*;
use crate::pki::NodeId;

/// The network layer's configuration. Names put their unit last; [`NetConfig::new`] fills in the
/// defaults of [`crate::limits`]; [`NetConfig::validate`] names the key of a bad value.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// This node's id; must be the id its certificate names.
    pub node_id: NodeId,
    /// Where the node's UDP socket listens (when the node binds it itself).
    pub listen_addr: SocketAddr,
    /// The peers this node connects to and accepts, by id, with the address to dial. The address
    /// is where to send packets (it may be a proxy) and, unless `accept_unknown_addresses` is
    /// set, the only address heard from: the peer (or its proxy) must send from it. It is never
    /// an identity: the id is checked in the certificate.
    pub known_peers: BTreeMap<NodeId, SocketAddr>,
    /// Accept handshakes from addresses that are no configured peer's (a peer behind NAT, or
    /// with a changing address). Off by default: datagrams from other addresses are dropped
    /// before QUIC sees them (INV-27). When on, strangers get a handshake budget of their own
    /// (`handshakes_unknown_addresses_max`) and the node answers only the sources of the
    /// handshakes it admits.
    pub accept_unknown_addresses: bool,
    /// Dials: a handshake that takes longer fails.
    pub handshake_timeout_ms: u64,
    /// Inbound handshakes (the client is not authenticated yet): dropped after this long (or
    /// after `handshake_timeout_ms`, if that is shorter).
    pub handshake_unauthenticated_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub keep_alive_interval_ms: u64,
    /// The window of the minimum-rate rule (INV-18): a transfer that moved less than
    /// `stall_rate_min_bytes_per_s` × this (and at least one byte) during one full window, in
    /// either direction, fails as `TimedOut`.
    pub stall_timeout_ms: u64,
    /// The minimum payload rate of a transfer over each `stall_timeout_ms` window; 0 keeps only
    /// the "no progress at all" rule.
    pub stall_rate_min_bytes_per_s: u64,
    /// A segment received more slowly than this over the sender's last full window is handed
    /// to another peer offering it (takeover); 0 disables takeovers.
    pub takeover_below_rate_bytes_per_s: u64,
    /// Longest wait for a control frame, including the final `Ack`.
    pub response_timeout_ms: u64,
    pub frame_bytes_max: usize,
    pub streams_per_peer_max: u32,
    /// Sends of segments with a payload over one chunk to one peer at once; more wait (see
    /// [`LARGE_SENDS_PER_PEER_MAX_DEFAULT`]).
    pub large_sends_per_peer_max: usize,
    pub connections_per_peer_max: usize,
    /// Handshakes in flight from configured peers' addresses (after address validation).
    pub handshakes_unauthenticated_max: usize,
    /// Handshakes in flight from one source address.
    pub handshakes_per_addr_max: usize,
    /// Handshakes in flight from strangers' addresses, when `accept_unknown_addresses` is set.
    pub handshakes_unknown_addresses_max: usize,
    /// Periodic catch-up per connection; 0 disables the periodic rounds (the one on connect
    /// still runs unless `catchup_on_connect` is false).
    pub catchup_interval_ms: u64,
    pub catchup_on_connect: bool,
    pub catchup_pulls_concurrent: usize,
    /// Pulls one catch-up round starts at most.
    pub catchup_pulls_per_round_max: usize,
    /// Pages of ids one catch-up round reads at most.
    pub catchup_pages_per_round_max: usize,
    /// Pulls that store nothing one peer can make this node run per minute (a token bucket).
    pub catchup_wasted_pulls_per_peer_per_min: u64,
    /// Delay before a follow-up round (after a productive round cut by a bound, or a
    /// quarantine), and the least gap between two rounds with one peer for a quarantine.
    pub catchup_followup_ms: u64,
    /// Receipt gossip per connection ([`crate::receipts::gossip`]); 0 turns fleet receipts
    /// off altogether (none made, none exchanged).
    pub receipt_interval_ms: u64,
    /// Pages of receipts one gossip round reads at most.
    pub receipt_pages_per_round_max: usize,
    /// A liveness receipt is made when the node made none for this long.
    pub alive_interval_ms: u64,
    /// Receipts kept per node; past it, that node's oldest are forgotten.
    pub receipts_per_node_max: u64,
    /// Nodes whose receipts are kept; receipts of further nodes are refused.
    pub fleet_nodes_max: u64,
    /// The receiver checkpoints (fsync + partial record) after this many payload bytes.
    pub checkpoint_bytes: u64,
    pub redial_backoff_base_ms: u64,
    pub redial_backoff_max_ms: u64,
    pub stream_receive_window_bytes: u64,
    pub receive_window_bytes: u64,
    pub send_window_bytes: u64,
    /// Requested UDP socket buffers (receive and send); 0 keeps the system default.
    pub udp_buffer_bytes: usize,
    /// Seed of every random choice of the node (re-dial jitter) and of quinn's endpoint RNG
    /// (connection ids, ...). `None` seeds from the clock and lets quinn pick its own.
    pub rng_seed: Option<u64>,
    /// Warnings a remote party can trigger, logged per (peer or address, reason) and window.
    pub log_warnings_per_window: u32,
    pub log_window_ms: u64,
    /// Where store calls and a transfer's disk steps run (see [`crate::disk`]): blocking
    /// threads in production; [`DiskMode::Inline`] only for deterministic simulations.
    pub disk_mode: DiskMode,
}

/// A configuration value out of range: the key and why (see [`base::setting::Refused`]).
pub type ConfigError = base::setting::Refused;

impl NetConfig {
    /// A configuration with every default.
    pub fn new(
        node_id: NodeId,
        listen_addr: SocketAddr,
        known_peers: BTreeMap<NodeId, SocketAddr>,
    ) -> Self {
        NetConfig {
            node_id,
            listen_addr,
            known_peers,
            accept_unknown_addresses: false,
            handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS_DEFAULT,
            handshake_unauthenticated_timeout_ms: HANDSHAKE_UNAUTHENTICATED_TIMEOUT_MS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            keep_alive_interval_ms: KEEP_ALIVE_INTERVAL_MS_DEFAULT,
            stall_timeout_ms: STALL_TIMEOUT_MS_DEFAULT,
            stall_rate_min_bytes_per_s: STALL_RATE_MIN_BYTES_PER_S_DEFAULT,
            takeover_below_rate_bytes_per_s: TAKEOVER_BELOW_RATE_BYTES_PER_S_DEFAULT,
            response_timeout_ms: RESPONSE_TIMEOUT_MS_DEFAULT,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            streams_per_peer_max: STREAMS_PER_PEER_MAX_DEFAULT,
            large_sends_per_peer_max: LARGE_SENDS_PER_PEER_MAX_DEFAULT,
            connections_per_peer_max: CONNECTIONS_PER_PEER_MAX_DEFAULT,
            handshakes_unauthenticated_max: HANDSHAKES_UNAUTHENTICATED_MAX_DEFAULT,
            handshakes_per_addr_max: HANDSHAKES_PER_ADDR_MAX_DEFAULT,
            handshakes_unknown_addresses_max: HANDSHAKES_UNKNOWN_ADDRESSES_MAX_DEFAULT,
            catchup_interval_ms: CATCHUP_INTERVAL_MS_DEFAULT,
            catchup_on_connect: true,
            catchup_pulls_concurrent: CATCHUP_PULLS_CONCURRENT_DEFAULT,
            catchup_pulls_per_round_max: CATCHUP_PULLS_PER_ROUND_MAX_DEFAULT,
            catchup_pages_per_round_max: CATCHUP_PAGES_PER_ROUND_MAX_DEFAULT,
            catchup_wasted_pulls_per_peer_per_min: CATCHUP_WASTED_PULLS_PER_PEER_PER_MIN_DEFAULT,
            catchup_followup_ms: CATCHUP_FOLLOWUP_MS_DEFAULT,
            receipt_interval_ms: RECEIPT_INTERVAL_MS_DEFAULT,
            receipt_pages_per_round_max: RECEIPT_PAGES_PER_ROUND_MAX_DEFAULT,
            alive_interval_ms: ALIVE_INTERVAL_MS_DEFAULT,
            receipts_per_node_max: crate::receipts::book::RECEIPTS_PER_NODE_MAX_DEFAULT,
            fleet_nodes_max: crate::receipts::book::FLEET_NODES_MAX_DEFAULT,
            checkpoint_bytes: CHECKPOINT_BYTES_DEFAULT,
            redial_backoff_base_ms: REDIAL_BACKOFF_BASE_MS_DEFAULT,
            redial_backoff_max_ms: REDIAL_BACKOFF_MAX_MS_DEFAULT,
            stream_receive_window_bytes: STREAM_RECEIVE_WINDOW_BYTES_DEFAULT,
            receive_window_bytes: RECEIVE_WINDOW_BYTES_DEFAULT,
            send_window_bytes: SEND_WINDOW_BYTES_DEFAULT,
            udp_buffer_bytes: UDP_BUFFER_BYTES_DEFAULT,
            rng_seed: None,
            log_warnings_per_window: LOG_WARNINGS_PER_WINDOW_DEFAULT,
            log_window_ms: LOG_WINDOW_MS_DEFAULT,
            disk_mode: DiskMode::Threads,
        }
    }

    /// Checks every value and the relations between them; the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every value out of range and every relation broken, each once, so that a file with
    /// several mistakes is corrected in one go.
    pub fn problems(&self) -> Vec<ConfigError> {
        use base::setting::{Bound, Conflict};
        let mut problems = Vec::new();
        let mut err = |key, reason: String| problems.push(ConfigError::new(key, reason));
        if self.known_peers.contains_key(&self.node_id) {
            err(
                "known_peers",
                format!("lists this node's own id {}", self.node_id),
            );
        }
        for (key, v) in [
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            (
                "handshake_unauthenticated_timeout_ms",
                self.handshake_unauthenticated_timeout_ms,
            ),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("keep_alive_interval_ms", self.keep_alive_interval_ms),
            ("stall_timeout_ms", self.stall_timeout_ms),
            ("response_timeout_ms", self.response_timeout_ms),
            ("checkpoint_bytes", self.checkpoint_bytes),
            ("redial_backoff_base_ms", self.redial_backoff_base_ms),
            (
                "stream_receive_window_bytes",
                self.stream_receive_window_bytes,
            ),
            ("receive_window_bytes", self.receive_window_bytes),
            ("send_window_bytes", self.send_window_bytes),
            (
                "catchup_wasted_pulls_per_peer_per_min",
                self.catchup_wasted_pulls_per_peer_per_min,
            ),
            ("catchup_followup_ms", self.catchup_followup_ms),
            (
                "log_warnings_per_window",
                u64::from(self.log_warnings_per_window),
            ),
            ("log_window_ms", self.log_window_ms),
        ] {
            if v == 0 {
                err(key, "must be greater than 0".into());
            }
        }
        if self.idle_timeout_ms > (1 << 40) {
            err("idle_timeout_ms", "too large".into());
        }
        let frame_min = (CATCHUP_PAGE_IDS_MAX * 32 + 16).max(SIGNED_MANIFEST_BYTES_MAX + 16);
        if self.frame_bytes_max < frame_min || self.frame_bytes_max > u32::MAX as usize {
            err(
                "frame_bytes_max",
                format!("must be in {frame_min}..={}", u32::MAX),
            );
        }
        if self.streams_per_peer_max == 0 {
            err("streams_per_peer_max", "must be greater than 0".into());
        }
        if self.connections_per_peer_max == 0 {
            err("connections_per_peer_max", "must be greater than 0".into());
        }
        if self.handshakes_unauthenticated_max == 0 {
            err(
                "handshakes_unauthenticated_max",
                "must be greater than 0".into(),
            );
        }
        for (key, v) in [
            ("large_sends_per_peer_max", self.large_sends_per_peer_max),
            ("catchup_pulls_concurrent", self.catchup_pulls_concurrent),
            (
                "catchup_pulls_per_round_max",
                self.catchup_pulls_per_round_max,
            ),
            (
                "catchup_pages_per_round_max",
                self.catchup_pages_per_round_max,
            ),
            ("handshakes_per_addr_max", self.handshakes_per_addr_max),
            (
                "receipt_pages_per_round_max",
                self.receipt_pages_per_round_max,
            ),
            ("alive_interval_ms", self.alive_interval_ms as usize),
            ("receipts_per_node_max", self.receipts_per_node_max as usize),
        ] {
            if v == 0 {
                err(key, "must be greater than 0".into());
            }
        }
        if self.accept_unknown_addresses && self.handshakes_unknown_addresses_max == 0 {
            err(
                "handshakes_unknown_addresses_max",
                "must be greater than 0 when accept_unknown_addresses is true".into(),
            );
        }
        if self.fleet_nodes_max < 2 {
            err("fleet_nodes_max", "must be at least 2".into());
        }
        if self.stall_timeout_ms > (1 << 40) {
            err("stall_timeout_ms", "too large".into());
        }
        if self.stall_rate_min_bytes_per_s > (1 << 40) {
            err("stall_rate_min_bytes_per_s", "too large".into());
        }
        for (key, v) in [
            (
                "stream_receive_window_bytes",
                self.stream_receive_window_bytes,
            ),
            ("receive_window_bytes", self.receive_window_bytes),
        ] {
            if VarInt::from_u64(v).is_err() {
                err(key, "must be below 2^62".into());
            }
        }
        let conflicts = [
            Conflict::check(
                ("keep_alive_interval_ms", self.keep_alive_interval_ms),
                Bound::LessThan,
                ("idle_timeout_ms", self.idle_timeout_ms),
                "",
            ),
            Conflict::check(
                ("redial_backoff_max_ms", self.redial_backoff_max_ms),
                Bound::AtLeast,
                ("redial_backoff_base_ms", self.redial_backoff_base_ms),
                "",
            ),
            Conflict::check(
                (
                    "handshakes_per_addr_max",
                    self.handshakes_per_addr_max as u64,
                ),
                Bound::AtMost,
                (
                    "handshakes_unauthenticated_max",
                    self.handshakes_unauthenticated_max as u64,
                ),
                "",
            ),
            Conflict::check(
                (
                    "stream_receive_window_bytes",
                    self.stream_receive_window_bytes,
                ),
                Bound::AtMost,
                ("receive_window_bytes", self.receive_window_bytes),
                "",
            ),
        ];
        // A value already refused alone (zero) is not reported again as a conflict.
        let alone: Vec<&'static str> = problems.iter().map(|p| p.key).collect();
        problems.extend(
            conflicts
                .into_iter()
                .flatten()
                .filter(|c| !alone.contains(&c.key) && !alone.contains(&c.other))
                .map(ConfigError::from),
        );
        problems
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms)
    }

    /// The deadline of an inbound handshake: the shorter of the two handshake timeouts.
    pub fn handshake_unauthenticated_timeout(&self) -> Duration {
        Duration::from_millis(
            self.handshake_unauthenticated_timeout_ms
                .min(self.handshake_timeout_ms),
        )
    }

    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }

    /// The QUIC transport settings of every connection (both directions). Call after
    /// [`validate`](Self::validate).
    pub fn transport_config(&self) -> Arc<TransportConfig> {
        let mut t = TransportConfig::default();
        // validate() bounds these below 2^62.
        let varint = |v: u64| VarInt::from_u64(v).unwrap_or(VarInt::MAX);
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.streams_per_peer_max));
        t.max_concurrent_uni_streams(VarInt::from_u32(0));
        t.stream_receive_window(varint(self.stream_receive_window_bytes));
        t.receive_window(varint(self.receive_window_bytes));
        t.send_window(self.send_window_bytes);
        t.max_idle_timeout(Some(
            IdleTimeout::try_from(Duration::from_millis(self.idle_timeout_ms))
                .unwrap_or(IdleTimeout::from(VarInt::from_u32(u32::MAX))),
        ));
        t.keep_alive_interval(Some(Duration::from_millis(self.keep_alive_interval_ms)));
        t.datagram_receive_buffer_size(None);
        Arc::new(t)
    }
}
