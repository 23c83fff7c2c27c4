//! `edge.toml`: the node's one configuration file.
//!
//! Parsing is strict — an unknown key is an error, not a silent typo — and validation names the
//! offending key and the file (INV-21). Validation reports every problem at once
//! ([`ConfigError::Invalid`]); a conflict with a default the file leaves unset says so, and
//! which key to set. Every key, with its default, is documented in
//! `edge.toml.example` at the repository root; keys put their unit last (`ceiling_bytes`).
//!
//! Beyond types and ranges, validation refuses what would hurt the node itself: an empty
//! `data_dir`; a `control_socket` that is empty, the data directory, or one of the store's own
//! paths (`edge.redb`, `edge.redb.new`, anything under `segments/`, `tmp/`, `quarantine/`); a
//! peer address that names no single host (unspecified, port 0, multicast, broadcast); a
//! `listen_addr` on port 0, multicast or broadcast. What can only be checked when the daemon
//! starts (whatever exists at `control_socket`) is checked there, with the same key named.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base::setting::{Bound, Conflict};
use serde::Deserialize;
use store::keys::{PublisherKey, TrustedPublishers};
use store::limits::{
    HEADER_BYTES_MAX, MIN_FREE_BYTES_DEFAULT, PARTIAL_AGE_MAX_MS_DEFAULT, PAYLOAD_BYTES_MAX,
    SEG_PREAMBLE_BYTES, TOMBSTONES_MAX_DEFAULT,
};

/// Unix socket paths are limited to 108 bytes including the terminating NUL.
pub const SOCKET_PATH_BYTES_MAX: usize = 107;
/// Largest config file read.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;
/// Default name of the control socket inside the data directory.
pub const CONTROL_SOCKET_DEFAULT: &str = "control.sock";
/// Default allowed clock skew in freshness checks.
pub const CLOCK_SKEW_MAX_S_DEFAULT: u64 = 300;
/// Default period of the daemon's housekeeping: the sweep of expired segments, the certificate
/// expiry check and the clock-jump report.
pub const HOUSEKEEPING_INTERVAL_MS_DEFAULT: u64 = 60_000;
/// Bounds on `housekeeping_interval_ms`: each tick scans the store's index, so not more often
/// than once a second; an expired segment waits at most an hour to be swept.
pub const HOUSEKEEPING_INTERVAL_MS_MIN: u64 = 1_000;
pub const HOUSEKEEPING_INTERVAL_MS_MAX: u64 = 3_600_000;

/// A config file that cannot be used, with the key and the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: file is {len} bytes, more than the {max} accepted")]
    TooLarge { path: PathBuf, len: u64, max: u64 },
    /// TOML syntax or a value of the wrong type: the parser stops at the first, so these come
    /// one at a time; every check after parsing reports all its problems at once (`Invalid`).
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// Every problem found in a file that parsed, one per line, each naming the file.
    #[error("{}", invalid_lines(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn invalid_lines(path: &Path, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {p}", path.display()))
        .collect();
    lines.join("\n")
}

/// One thing wrong in a config file: the key it concerns (`section.key`) and why, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    /// The key's default, when the problem is a default the file leaves unset: the operator
    /// never wrote it, so the message says so, and which key to set.
    pub default: Option<u64>,
    pub message: String,
}

/// "key `relay.busy_retry_ms` (default 2000) must be at most …", or "key `k`: why".
impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.default {
            Some(default) => write!(f, "key `{}` (default {default}) {}", self.key, self.message),
            None => write!(f, "key `{}`: {}", self.key, self.message),
        }
    }
}

/// The problems found so far; validation goes on after each, so the file is fixed in one go.
#[derive(Debug, Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: &str, message: String) {
        self.push(Problem {
            key: key.to_owned(),
            default: None,
            message,
        });
    }

    fn push(&mut self, mut problem: Problem) {
        // Mutation point (INV-21): a refusal no longer says which key is wrong.
        if store::mutants::active("config_error_without_key") {
            problem.key.clear();
        }
        self.0.push(problem);
    }

    /// The value, or `None` with its problem recorded under `key`.
    fn check<T>(&mut self, key: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|m| self.add(key, m)).ok()
    }

    /// Two keys that contradict each other, named as in the file (`qualify` gives a library
    /// key's name in the file and whether the file sets it). A key left at its default is
    /// said to be one, with what to set.
    fn conflict(&mut self, c: &Conflict, qualify: &dyn Fn(&str) -> (String, bool)) {
        let (key, key_set) = qualify(c.key);
        let (other, other_set) = qualify(c.other);
        let why = match c.why {
            "" => String::new(),
            why => format!("; {why}"),
        };
        let other_default = if other_set { "" } else { "default " };
        let rule = format!(
            "{} `{other}` ({other_default}{}){why}",
            c.bound.words(),
            c.other_value
        );
        let (default, message) = match (key_set, other_set) {
            (false, _) => (
                Some(c.value),
                format!("{rule}: set {key}, or {} {other}", c.bound.other_fix()),
            ),
            (true, false) => (
                None,
                format!("{} {rule}: set {other}, or change {key}", c.value),
            ),
            (true, true) => (None, format!("{} {rule}", c.value)),
        };
        self.push(Problem {
            key,
            default,
            message,
        });
    }

    /// A library's problem with one of its keys, named as in the file.
    fn library(
        &mut self,
        key: &str,
        reason: String,
        conflict: Option<&Conflict>,
        qualify: &dyn Fn(&str) -> (String, bool),
    ) {
        match (conflict, qualify(key)) {
            (Some(c), _) => self.conflict(c, qualify),
            (None, (key, true)) => self.add(&key, reason),
            (None, (key, false)) => self.add(
                &key,
                format!("{reason} (its default, not set in this file: set {key})"),
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_id: String,
    listen_addr: String,
    data_dir: PathBuf,
    control_socket: Option<PathBuf>,
    #[serde(default)]
    log_format: LogFormat,
    #[serde(default = "default_log_level")]
    log_level: String,
    metrics_addr: Option<String>,
    #[serde(default = "default_clock_skew")]
    clock_skew_max_s: u64,
    #[serde(default = "default_housekeeping_interval")]
    housekeeping_interval_ms: u64,
    tls: RawTls,
    #[serde(default)]
    known_peers: Vec<RawPeer>,
    publishers: RawPublishers,
    store: RawStore,
    #[serde(default)]
    relay: RawRelay,
    #[serde(default)]
    net: RawNet,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    fleet: RawFleet,
    /// Local delivery: `[[deliver]]` tables (see [`crate::deliver`]).
    #[serde(default)]
    deliver: Vec<RawDeliver>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeliver {
    channel: String,
    dir: PathBuf,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default = "default_command_timeout")]
    command_timeout_ms: u64,
    #[serde(default = "default_keep")]
    keep: u32,
}

fn default_command_timeout() -> u64 {
    crate::deliver::COMMAND_TIMEOUT_MS_DEFAULT
}

fn default_keep() -> u32 {
    crate::deliver::KEEP_DEFAULT
}

/// `[fleet]`: the roster and the receipts that answer "is it everywhere yet?".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    #[serde(default)]
    members: Vec<String>,
    stale_after_ms: Option<u64>,
    gossip_interval_ms: Option<u64>,
    gossip_pages_per_round_max: Option<usize>,
    alive_interval_ms: Option<u64>,
    receipts_per_node_max: Option<u64>,
    nodes_max: Option<u64>,
}

impl RawFleet {
    fn apply(&self, net: &mut net::NetConfig) {
        if let Some(v) = self.gossip_interval_ms {
            net.receipt_interval_ms = v;
        }
        if let Some(v) = self.gossip_pages_per_round_max {
            net.receipt_pages_per_round_max = v;
        }
        if let Some(v) = self.alive_interval_ms {
            net.alive_interval_ms = v;
        }
        if let Some(v) = self.receipts_per_node_max {
            net.receipts_per_node_max = v;
        }
        if let Some(v) = self.nodes_max {
            net.fleet_nodes_max = v;
        }
    }
}

impl RawFleet {
    /// Whether the file sets `[fleet]` key `key`.
    fn is_set(&self, key: &str) -> bool {
        match key {
            "stale_after_ms" => self.stale_after_ms.is_some(),
            "gossip_interval_ms" => self.gossip_interval_ms.is_some(),
            "gossip_pages_per_round_max" => self.gossip_pages_per_round_max.is_some(),
            "alive_interval_ms" => self.alive_interval_ms.is_some(),
            "receipts_per_node_max" => self.receipts_per_node_max.is_some(),
            "nodes_max" => self.nodes_max.is_some(),
            _ => false,
        }
    }
}

/// The `[fleet]` key under which `edged.toml` sets a network-layer field of the receipts.
fn fleet_key(net_key: &str) -> Option<&'static str> {
    Some(match net_key {
        "receipt_interval_ms" => "gossip_interval_ms",
        "receipt_pages_per_round_max" => "gossip_pages_per_round_max",
        "alive_interval_ms" => "alive_interval_ms",
        "receipts_per_node_max" => "receipts_per_node_max",
        "fleet_nodes_max" => "nodes_max",
        _ => return None,
    })
}

/// The fleet view's settings (`[fleet]`; the gossip keys go to [`Config::net`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// The roster the operator expects; empty: learned from peers and receipts.
    pub members: Vec<base::NodeId>,
    /// A member that lacks a segment and sent no receipt for this long makes it `unknown`.
    pub stale_after_ms: u64,
}

/// A key whose value differs between two configurations (see [`section_changes`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyChange {
    /// As in `edge.toml`: `relay.attempts_max`.
    pub key: String,
    pub old: String,
    pub new: String,
}

/// The keys of `[relay]`, `[net]` and `[control]` that differ between `old` and `new`.
pub fn section_changes(old: &Config, new: &Config) -> Vec<KeyChange> {
    let mut out = RawRelay::changes("relay", &old.relay, &new.relay);
    out.extend(RawNet::changes("net", &old.net, &new.net));
    out.extend(RawControl::changes("control", &old.control, &new.control));
    out
}

/// Declares a config section whose keys are all optional overrides of a library's defaults,
/// and the function that applies them.
macro_rules! overrides {
    ($raw:ident => $target:ty { $($field:ident: $ty:ty),* $(,)? }) => {
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $raw {
            $($field: Option<$ty>,)*
        }

        impl $raw {
            fn apply(&self, target: &mut $target) {
                $(if let Some(v) = self.$field {
                    target.$field = v;
                })*
            }

            /// The keys of this section whose values differ between `old` and `new`.
            fn changes(section: &str, old: &$target, new: &$target) -> Vec<KeyChange> {
                let mut out = Vec::new();
                $(if old.$field != new.$field {
                    out.push(KeyChange {
                        key: format!("{section}.{}", stringify!($field)),
                        old: old.$field.to_string(),
                        new: new.$field.to_string(),
                    });
                })*
                out
            }

            /// Whether the file sets `key` (else the library's default holds).
            fn is_set(&self, key: &str) -> bool {
                match key {
                    $(stringify!($field) => self.$field.is_some(),)*
                    _ => false,
                }
            }
        }
    };
}

overrides!(RawRelay => relay::RelayConfig {
    attempts_max: u32,
    backoff_base_ms: u64,
    backoff_max_ms: u64,
    jitter_percent: u32,
    store_full_backoff_min_ms: u64,
    store_full_attempts_max: u32,
    busy_retry_ms: u64,
    busy_retries_max: u32,
    per_peer_concurrency_max: usize,
    global_concurrency_max: usize,
    dead_letter_pin_max_age_ms: u64,
    attempt_timeout_ms: u64,
    wake_interval_max_ms: u64,
    cut_through: bool,
});

overrides!(RawNet => net::NetConfig {
    accept_unknown_addresses: bool,
    handshake_timeout_ms: u64,
    handshake_unauthenticated_timeout_ms: u64,
    idle_timeout_ms: u64,
    keep_alive_interval_ms: u64,
    stall_timeout_ms: u64,
    stall_rate_min_bytes_per_s: u64,
    takeover_below_rate_bytes_per_s: u64,
    response_timeout_ms: u64,
    frame_bytes_max: usize,
    streams_per_peer_max: u32,
    large_sends_per_peer_max: usize,
    connections_per_peer_max: usize,
    handshakes_unauthenticated_max: usize,
    handshakes_per_addr_max: usize,
    handshakes_unknown_addresses_max: usize,
    catchup_interval_ms: u64,
    catchup_on_connect: bool,
    catchup_pulls_concurrent: usize,
    catchup_pulls_per_round_max: usize,
    catchup_pages_per_round_max: usize,
    catchup_wasted_pulls_per_peer_per_min: u64,
    catchup_followup_ms: u64,
    checkpoint_bytes: u64,
    redial_backoff_base_ms: u64,
    redial_backoff_max_ms: u64,
    stream_receive_window_bytes: u64,
    receive_window_bytes: u64,
    send_window_bytes: u64,
    udp_buffer_bytes: usize,
    log_warnings_per_window: u32,
    log_window_ms: u64,
});

overrides!(RawControl => crate::control::ControlLimits {
    connections_max: usize,
    streams_max: usize,
    idle_timeout_ms: u64,
    request_deadline_ms: u64,
    stream_rate_min_bytes_per_s: u64,
    stream_rate_window_ms: u64,
    import_window: usize,
    import_window_bytes: u64,
    list_page_items: usize,
    list_page_bytes: usize,
});

/// The daemon's log filter unless `log_level` says otherwise.
pub const LOG_LEVEL_DEFAULT: &str = "info";

fn default_log_level() -> String {
    LOG_LEVEL_DEFAULT.to_owned()
}

fn default_clock_skew() -> u64 {
    CLOCK_SKEW_MAX_S_DEFAULT
}

fn default_housekeeping_interval() -> u64 {
    HOUSEKEEPING_INTERVAL_MS_DEFAULT
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_cert: PathBuf,
    node_cert: PathBuf,
    node_key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    id: String,
    addr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublishers {
    #[serde(default)]
    trusted: Vec<String>,
    /// A root document file (`edged root create` / `sign`): the trusted keys per channel, with
    /// thresholds, replaced by newer roots arriving as segments.
    #[serde(default)]
    root: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    ceiling_bytes: u64,
    #[serde(default = "default_min_free")]
    min_free_bytes: u64,
    #[serde(default)]
    pinned_channels: Vec<String>,
    #[serde(default = "default_tombstones")]
    tombstones_max: u64,
    #[serde(default = "default_partial_age")]
    partial_age_max_ms: u64,
    /// The daemon's background scrub; 0 (the default): off. See [`crate::scrub`].
    #[serde(default)]
    scrub_bytes_per_sec: u64,
}

fn default_min_free() -> u64 {
    MIN_FREE_BYTES_DEFAULT
}
fn default_tombstones() -> u64 {
    TOMBSTONES_MAX_DEFAULT
}
fn default_partial_age() -> u64 {
    PARTIAL_AGE_MAX_MS_DEFAULT
}

/// A peer this node talks to: its certificate id and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub addr: SocketAddr,
}

/// Paths of the node's TLS material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub ca_cert: PathBuf,
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    pub node_id: String,
    pub listen_addr: SocketAddr,
    pub control_socket: PathBuf,
    pub log_format: LogFormat,
    /// `log_level`: the daemon's log filter (`info`, `debug`, `warn,relay=debug`...).
    pub log_level: String,
    pub metrics_addr: Option<SocketAddr>,
    /// Period of the housekeeping tick (`housekeeping_interval_ms`).
    pub housekeeping_interval: Duration,
    pub tls: Tls,
    pub known_peers: Vec<Peer>,
    pub store: store::StoreConfig,
    /// `[store] scrub_bytes_per_sec`: the daemon's background scrub rate; 0: off.
    pub scrub_bytes_per_sec: u64,
    pub relay: relay::RelayConfig,
    pub net: net::NetConfig,
    /// Bounds on the control socket's clients (`[control]`).
    pub control: crate::control::ControlLimits,
    /// The fleet view (`[fleet]`).
    pub fleet: Fleet,
    /// `[[deliver]]`: channels handed to programs on this host.
    pub deliver: Vec<crate::deliver::DeliverSpec>,
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > CONFIG_FILE_BYTES_MAX {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
                len,
                max: CONFIG_FILE_BYTES_MAX,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Config::parse(path, &text)
    }

    /// The node's identity from `[tls]`, checked (an error names the file and the section).
    pub fn node_identity(&self) -> Result<net::NodeIdentity, crate::exit::Failure> {
        net::load_node_identity(&self.tls.ca_cert, &self.tls.node_cert, &self.tls.node_key).map_err(
            |e| {
                crate::exit::Failure::new(
                    crate::exit::CONFIG,
                    anyhow::anyhow!("{}: [tls]: {e}", self.path.display()),
                )
            },
        )
    }

    /// Parses and validates `text` as if read from `path`. Relative paths in it are taken
    /// relative to the directory of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: parse_message(text, &e),
        })?;
        validate(path, raw)
    }
}

/// Checks everything that can be checked without starting the daemon, and reports every
/// problem at once: a value that cannot be parsed is left out of the checks that need it, and
/// every other check still runs.
fn validate(path: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    };

    let node_id = problems
        .check("node_id", check_node_id(&raw.node_id))
        .and_then(|()| {
            problems.check(
                "node_id",
                raw.node_id
                    .parse::<base::NodeId>()
                    .map_err(|e| e.to_string()),
            )
        });
    let listen_addr = problems.check(
        "listen_addr",
        raw.listen_addr
            .parse::<SocketAddr>()
            .map_err(|e| format!("`{}`: {e}", raw.listen_addr))
            .and_then(|addr| check_listen_addr(addr).map(|()| addr)),
    );
    if raw.data_dir.as_os_str().is_empty() {
        problems.add(
            "data_dir",
            "is empty; give the directory that holds this node's segments and database".into(),
        );
    }
    let data_dir = resolve(&raw.data_dir);
    let control_socket = raw
        .control_socket
        .as_deref()
        .map(resolve)
        .unwrap_or_else(|| data_dir.join(CONTROL_SOCKET_DEFAULT));
    let socket_len = control_socket.as_os_str().len();
    if raw
        .control_socket
        .as_deref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        problems.add(
            "control_socket",
            "is empty; remove the key to use control.sock in data_dir".into(),
        );
    } else if let Some(why) = store_owned(&control_socket, &data_dir) {
        problems.add(
            "control_socket",
            format!(
                "{} is {why}; the daemon would replace it with its socket (choose another path)",
                control_socket.display()
            ),
        );
    } else if socket_len > SOCKET_PATH_BYTES_MAX {
        let key = if raw.control_socket.is_some() {
            "control_socket"
        } else {
            "data_dir"
        };
        problems.add(
            key,
            format!(
                "control socket path {} is {socket_len} bytes; Unix sockets allow at most {SOCKET_PATH_BYTES_MAX} (set control_socket to a shorter path)",
                control_socket.display()
            ),
        );
    }
    let metrics_addr = problems.check(
        "metrics_addr",
        raw.metrics_addr.as_deref().map(metrics_addr).transpose(),
    );

    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&raw.log_level) {
        problems.add(
            "log_level",
            format!(
                "`{}` is not a log filter ({e}); give a level (error, warn, info, debug, trace), optionally with per-module levels such as `info,relay=debug`",
                raw.log_level
            ),
        );
    }

    let tls = Tls {
        ca_cert: resolve(&raw.tls.ca_cert),
        node_cert: resolve(&raw.tls.node_cert),
        node_key: resolve(&raw.tls.node_key),
    };
    for (key, file) in [
        ("tls.ca_cert", &tls.ca_cert),
        ("tls.node_cert", &tls.node_cert),
        ("tls.node_key", &tls.node_key),
    ] {
        if let Err(e) = std::fs::File::open(file) {
            problems.add(key, format!("cannot read {}: {e}", file.display()));
        }
    }

    // Only the peers without a problem go on to the relay's and the network layer's checks,
    // so one mistake is reported once.
    let mut known_peers = Vec::with_capacity(raw.known_peers.len());
    let mut net_peers = std::collections::BTreeMap::new();
    for (i, peer) in raw.known_peers.iter().enumerate() {
        let key = format!("known_peers[{i}]");
        let id = problems
            .check(&format!("{key}.id"), check_node_id(&peer.id))
            .and_then(|()| {
                let problem = if peer.id == raw.node_id {
                    Some(format!("`{}` is this node's own id", peer.id))
                } else if net_peers
                    .keys()
                    .any(|p: &base::NodeId| p.as_str() == peer.id)
                {
                    Some(format!("peer `{}` is listed twice", peer.id))
                } else {
                    None
                };
                let id = problem.map_or_else(
                    || peer.id.parse::<base::NodeId>().map_err(|e| e.to_string()),
                    Err,
                );
                problems.check(&format!("{key}.id"), id)
            });
        let addr = problems.check(
            &format!("{key}.addr"),
            peer.addr
                .parse::<SocketAddr>()
                .map_err(|e| format!("`{}`: {e}", peer.addr))
                .and_then(|addr| check_peer_addr(addr).map(|()| addr)),
        );
        if let (Some(id), Some(addr)) = (id, addr) {
            net_peers.insert(id, addr);
            known_peers.push(Peer {
                id: peer.id.clone(),
                addr,
            });
        }
    }

    let trusted = match (&raw.publishers.root, raw.publishers.trusted.is_empty()) {
        (Some(_), false) => {
            problems.add(
                "publishers.root",
                "set either publishers.root or publishers.trusted, not both".into(),
            );
            TrustedPublishers::default()
        }
        (Some(path), true) => {
            let path = resolve(path);
            problems
                .check("publishers.root", load_root(&path))
                .map(TrustedPublishers::from_root)
                .unwrap_or_default()
        }
        (None, true) => {
            problems.add(
                "publishers.trusted",
                "no trusted publisher: this node would reject every segment (set publishers.trusted, or publishers.root)".into(),
            );
            TrustedPublishers::default()
        }
        (None, false) => {
            let mut keys = Vec::new();
            for (i, text) in raw.publishers.trusted.iter().enumerate() {
                let key = text.parse::<PublisherKey>().map_err(|e| e.to_string());
                keys.extend(problems.check(&format!("publishers.trusted[{i}]"), key));
            }
            keys.into_iter().collect()
        }
    };

    let smallest_ceiling = SEG_PREAMBLE_BYTES + u64::from(HEADER_BYTES_MAX);
    if raw.store.ceiling_bytes <= smallest_ceiling {
        problems.add(
            "store.ceiling_bytes",
            format!(
                "{} bytes cannot hold even an empty segment ({smallest_ceiling} bytes of header)",
                raw.store.ceiling_bytes
            ),
        );
    }
    let largest = SEG_PREAMBLE_BYTES + u64::from(HEADER_BYTES_MAX) + PAYLOAD_BYTES_MAX;
    if raw.store.ceiling_bytes < largest {
        tracing::debug!(
            ceiling_bytes = raw.store.ceiling_bytes,
            largest_segment_bytes = largest,
            "store ceiling is below the largest allowed segment; larger segments are refused as store full"
        );
    }
    if raw.store.tombstones_max == 0 {
        problems.add(
            "store.tombstones_max",
            "must be at least 1, or evicted segments are fetched again and again".into(),
        );
    }
    let mut pinned_channels = BTreeSet::new();
    for (i, channel) in raw.store.pinned_channels.iter().enumerate() {
        let checked =
            store::manifest::validate_channel(channel).map_err(|e| format!("`{channel}`: {e}"));
        if problems
            .check(&format!("store.pinned_channels[{i}]"), checked)
            .is_some()
        {
            pinned_channels.insert(channel.clone());
        }
    }

    let mut store_cfg =
        store::StoreConfig::new(&data_dir, raw.store.ceiling_bytes, trusted.clone());
    store_cfg.min_free_bytes = raw.store.min_free_bytes;
    store_cfg.tombstones_max = raw.store.tombstones_max;
    store_cfg.partial_age_max_ms = raw.store.partial_age_max_ms;
    store_cfg.pinned_channels = pinned_channels;
    store_cfg.clock_skew_ms = raw.clock_skew_max_s.saturating_mul(1000);

    // With node_id refused, the limits are still checked, for a stand-in id that no peer has.
    let limits_id = node_id.clone().unwrap_or_else(|| stand_in_id(&net_peers));
    let peer_ids = net_peers.keys().cloned().collect::<Vec<_>>();
    let mut relay_cfg = relay::RelayConfig::new(limits_id.clone(), peer_ids);
    raw.relay.apply(&mut relay_cfg);
    let relay_key = |key: &str| match key {
        "known_peers" => (key.to_owned(), true),
        _ => (format!("relay.{key}"), raw.relay.is_set(key)),
    };
    for e in relay_cfg.problems() {
        problems.library(e.key, e.reason, e.conflict.as_deref(), &relay_key);
    }

    let mut members = Vec::with_capacity(raw.fleet.members.len());
    for (i, member) in raw.fleet.members.iter().enumerate() {
        let key = format!("fleet.members[{i}]");
        let Some(id) = problems.check(
            &key,
            member.parse().map_err(|e: base::NodeIdError| e.to_string()),
        ) else {
            continue;
        };
        if members.contains(&id) {
            problems.add(&key, format!("`{member}` is listed twice"));
        } else {
            members.push(id);
        }
    }
    if let Some(node_id) = &node_id
        && !members.is_empty()
        && !members.contains(node_id)
    {
        problems.add(
            "fleet.members",
            format!(
                "does not list this node's own id `{node_id}`: the roster is every node expected to hold the fleet's segments, this one included"
            ),
        );
    }
    // A refused listen_addr is reported above; the network layer's checks do not look at it.
    let net_listen = listen_addr.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 1)));
    let mut net_cfg = net::NetConfig::new(limits_id, net_listen, net_peers);
    raw.net.apply(&mut net_cfg);
    raw.fleet.apply(&mut net_cfg);
    let net_key = |key: &str| match (key, fleet_key(key)) {
        ("known_peers", _) => (key.to_owned(), true),
        (_, Some(fleet)) => (format!("fleet.{fleet}"), raw.fleet.is_set(fleet)),
        (_, None) => (format!("net.{key}"), raw.net.is_set(key)),
    };
    for e in net_cfg.problems() {
        problems.library(e.key, e.reason, e.conflict.as_deref(), &net_key);
    }
    let stale_after_ms = raw
        .fleet
        .stale_after_ms
        .unwrap_or(net::receipts::verdict::STALE_AFTER_MS_DEFAULT);
    if let Some(c) = Conflict::check(
        ("stale_after_ms", stale_after_ms),
        Bound::MoreThan,
        ("alive_interval_ms", net_cfg.alive_interval_ms),
        "a quiet node renews its liveness receipt only that often",
    ) {
        problems.conflict(&c, &|key| (format!("fleet.{key}"), raw.fleet.is_set(key)));
    }
    let fleet = Fleet {
        members,
        stale_after_ms,
    };

    let mut control = crate::control::ControlLimits::default();
    raw.control.apply(&mut control);
    if raw.control.streams_max.is_none() {
        // Unset, it follows a lowered connections_max instead of contradicting it.
        control.streams_max = control.streams_max.min(control.connections_max);
    }
    let control_key = |key: &str| (format!("control.{key}"), raw.control.is_set(key));
    for e in control.problems() {
        problems.library(e.key, e.reason, None, &control_key);
    }

    let housekeeping = raw.housekeeping_interval_ms;
    if !(HOUSEKEEPING_INTERVAL_MS_MIN..=HOUSEKEEPING_INTERVAL_MS_MAX).contains(&housekeeping) {
        problems.add(
            "housekeeping_interval_ms",
            format!(
                "{housekeeping} is outside {HOUSEKEEPING_INTERVAL_MS_MIN}..={HOUSEKEEPING_INTERVAL_MS_MAX}"
            ),
        );
    }

    let deliver = check_deliver(&raw.deliver, &mut problems);

    // Every value left out above comes with its problem, so all are present when none is.
    let (true, Some(_), Some(listen_addr), Some(metrics_addr)) =
        (problems.0.is_empty(), node_id, listen_addr, metrics_addr)
    else {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems: problems.0,
        });
    };
    Ok(Config {
        deliver,
        control,
        fleet,
        housekeeping_interval: Duration::from_millis(housekeeping),
        relay: relay_cfg,
        net: net_cfg,
        path: path.to_owned(),
        node_id: raw.node_id,
        listen_addr,
        control_socket,
        log_format: raw.log_format,
        log_level: raw.log_level,
        metrics_addr,
        tls,
        known_peers,
        scrub_bytes_per_sec: raw.store.scrub_bytes_per_sec,
        store: store_cfg,
    })
}

/// `[[deliver]]` entries, each checked; problems named `deliver[i].key`.
fn check_deliver(raw: &[RawDeliver], problems: &mut Problems) -> Vec<crate::deliver::DeliverSpec> {
    use crate::deliver::{DELIVER_ENTRIES_MAX, DeliverSpec, KEEP_MAX};
    if raw.len() > DELIVER_ENTRIES_MAX {
        problems.add(
            "deliver",
            format!("{} entries, at most {DELIVER_ENTRIES_MAX}", raw.len()),
        );
    }
    let mut out = Vec::new();
    let mut dirs = BTreeSet::new();
    for (i, d) in raw.iter().enumerate() {
        let key = |k: &str| format!("deliver[{i}].{k}");
        let mut ok = true;
        if let Err(e) = store::manifest::validate_channel(&d.channel) {
            problems.add(&key("channel"), format!("`{}`: {e}", d.channel));
            ok = false;
        }
        if !d.dir.is_absolute() {
            problems.add(
                &key("dir"),
                format!("{} must be an absolute path", d.dir.display()),
            );
            ok = false;
        } else if !dirs.insert(d.dir.clone()) {
            problems.add(
                &key("dir"),
                format!("{} is already another entry's directory", d.dir.display()),
            );
            ok = false;
        }
        if let Some(program) = d.command.first() {
            if !Path::new(program).is_absolute() {
                problems.add(
                    &key("command"),
                    format!("{program:?}: the program must be an absolute path (commands never run through a shell)"),
                );
                ok = false;
            }
        } else if !d.command.is_empty() {
            ok = false;
        }
        if d.command_timeout_ms == 0 {
            problems.add(&key("command_timeout_ms"), "must be at least 1".into());
            ok = false;
        }
        if d.keep == 0 || d.keep > KEEP_MAX {
            problems.add(
                &key("keep"),
                format!("{} is outside 1..={KEEP_MAX}", d.keep),
            );
            ok = false;
        }
        if ok {
            out.push(DeliverSpec {
                channel: d.channel.clone(),
                dir: d.dir.clone(),
                command: d.command.clone(),
                command_timeout_ms: d.command_timeout_ms,
                keep: d.keep,
            });
        }
    }
    out
}

/// A node id none of `peers` has, for checking the limits of a file whose own `node_id` is
/// refused. Among `peers.len() + 1` candidates one is always free.
fn stand_in_id(peers: &std::collections::BTreeMap<base::NodeId, SocketAddr>) -> base::NodeId {
    (0..=peers.len())
        .filter_map(|i| base::NodeId::new(&format!("unset-{i}")).ok())
        .find(|id| !peers.contains_key(id))
        .unwrap_or_else(|| unreachable!("one of {} candidates is free", peers.len() + 1))
}

/// `metrics_addr`: a fixed loopback port.
fn metrics_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text.parse().map_err(|e| format!("`{text}`: {e}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "`{text}` is not a loopback address; metrics are served on localhost only"
        ));
    }
    if addr.port() == 0 {
        return Err(format!(
            "`{text}`: port 0 would serve on a random port no scraper knows"
        ));
    }
    Ok(addr)
}

/// A TOML error on one line: its message and where it is (line and column, 1-based). The
/// parser's own rendering spans several lines, quoting the file.
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before
                .rsplit_once('\n')
                .map_or(before, |(_, last)| last)
                .chars()
                .count()
                + 1;
            match key_at(before) {
                Some(key) => format!("line {line}, column {column}, `{key}`: {message}"),
                None => format!("line {line}, column {column}: {message}"),
            }
        }
        None => message,
    }
}

/// The key whose value starts on the last line of `before` (`section.key`, as the validation
/// errors name keys), when that line reads `key = …`: a value of the wrong type is then named
/// like any other refusal. `None` when the error is elsewhere (a header, a value continued
/// on a later line).
fn key_at(before: &str) -> Option<String> {
    let (above, line) = before.rsplit_once('\n').unwrap_or(("", before));
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let bare = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if !bare(key) {
        return None;
    }
    let section = above.lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[').then(|| {
            l.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
        })
    });
    Some(match section {
        Some(section) if bare(section) => format!("{section}.{key}"),
        _ => key.to_owned(),
    })
}

/// The address as IPv4 when it is an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), where the
/// same rules apply.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A peer address must name one host and one port: packets go only to configured peers, so an
/// address that means "any", "everyone" or "a random port" is a mistake, never a peer.
fn check_peer_addr(addr: SocketAddr) -> Result<(), String> {
    let ip = canonical_ip(addr.ip());
    if ip.is_unspecified() {
        return Err(format!(
            "`{addr}`: the unspecified address (0.0.0.0 or ::) names no host; give the peer's own address"
        ));
    }
    if ip.is_multicast() {
        return Err(format!(
            "`{addr}`: a multicast address names a group, not one peer"
        ));
    }
    if ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Err(format!(
            "`{addr}`: the broadcast address names every host, not one peer"
        ));
    }
    if addr.port() == 0 {
        return Err(format!("`{addr}`: port 0 is no port a peer listens on"));
    }
    Ok(())
}

/// This node listens on one unicast address (or every interface) and a fixed port its peers
/// know.
fn check_listen_addr(addr: SocketAddr) -> Result<(), String> {
    let ip = canonical_ip(addr.ip());
    if addr.port() == 0 {
        return Err(format!(
            "`{addr}`: port 0 would listen on a random port no peer knows"
        ));
    }
    if ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Err(format!(
            "`{addr}`: a multicast or broadcast address cannot be listened on"
        ));
    }
    Ok(())
}

/// `path` with `.` dropped and `..` applied, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` with its parent directory resolved by the file system (symlinks, `..`), when that
/// directory exists.
fn resolved(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty())?;
    Some(parent.canonicalize().ok()?.join(name))
}

/// What `socket` is, if it is the data directory or a path the store owns in it. Compared both
/// as written and, where the directories exist, as the file system resolves them.
fn store_owned(socket: &Path, data_dir: &Path) -> Option<String> {
    let check = |socket: &Path, data_dir: &Path| -> Option<String> {
        if socket == data_dir {
            return Some("the data directory itself".into());
        }
        let layout = store::layout::Layout::new(data_dir);
        let db = layout.db();
        let mut db_new = db.clone().into_os_string();
        db_new.push(".new");
        let db_new = PathBuf::from(db_new);
        if socket == db {
            return Some("the node's database".into());
        }
        if socket == db_new {
            return Some("the database the store creates at first start".into());
        }
        for (dir, what) in [
            (layout.segments(), "the store's segments"),
            (layout.tmp(), "the store's partial ingests"),
            (layout.quarantine(), "the store's quarantine"),
        ] {
            if socket.starts_with(&dir) {
                return Some(format!("in {}, {what}", dir.display()));
            }
        }
        None
    };
    check(&normalize(socket), &normalize(data_dir)).or_else(|| {
        let socket = resolved(socket)?;
        let data_dir = data_dir.canonicalize().ok()?;
        check(&socket, &data_dir)
    })
}

/// A node id is the DNS name in the node's certificate: the network layer's rules apply.
fn check_node_id(id: &str) -> Result<(), String> {
    id.parse::<base::NodeId>()
        .map(|_| ())
        .map_err(|e| format!("`{id}`: {e}"))
}

/// Largest root document file read from `[publishers] root`.
const ROOT_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Reads and checks a root document file: bounded before it is read, canonical, and signed by
/// its own threshold of its own root keys.
pub fn load_root(path: &Path) -> Result<store::root::SignedRoot, String> {
    use std::io::Read;
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat {shown}: {e}"))?
        .len();
    if len > ROOT_FILE_BYTES_MAX {
        return Err(format!(
            "{shown} is {len} bytes, more than the {ROOT_FILE_BYTES_MAX} a root document may have"
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(ROOT_FILE_BYTES_MAX)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    let root = store::root::SignedRoot::decode(&bytes).map_err(|e| format!("{shown}: {e}"))?;
    root.verify_self().map_err(|e| format!("{shown}: {e}"))?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `edge.toml.example` is what operators copy: it must parse as shipped and with every
    /// optional key uncommented (its documented defaults), with only its paths moved.
    #[test]
    fn inv_21_example_config_parses_with_and_without_its_optional_keys() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        for f in ["ca.crt", "node-1.crt", "node-1.key"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let text = include_str!("../../edge.toml.example")
            .replace("/etc/edged", root)
            .replace("/var/lib/edged", root);
        let path = dir.path().join("edge.toml");
        let cfg = Config::parse(&path, &text).expect("example as shipped");
        assert_eq!(cfg.node_id, "node-1");
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        Config::parse(&path, &uncommented).expect("example with every optional key");
    }

    /// The example config with its paths moved into a temp dir (TLS files present), and the
    /// path of the `edge.toml` it is parsed as.
    fn example() -> (tempfile::TempDir, String, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap().to_owned();
        for f in ["ca.crt", "node-1.crt", "node-1.key"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let text = include_str!("../../edge.toml.example")
            .replace("/etc/edged", &root)
            .replace("/var/lib/edged", &root);
        let path = dir.path().join("edge.toml");
        (dir, text, path)
    }

    /// Parsing `text` fails naming `key` (and the file), with `detail` in the message.
    fn refused(path: &Path, text: &str, key: &str, detail: &str) {
        let err = Config::parse(path, text).expect_err(key).to_string();
        assert!(
            err.contains(&format!("`{key}`")),
            "`{key}` not named in: {err}"
        );
        assert!(err.contains("edge.toml"), "file not named in: {err}");
        assert!(err.contains(detail), "`{detail}` not in: {err}");
    }

    #[test]
    fn inv_21_fleet_keys_are_checked_and_named() {
        let (_dir, base, path) = example();
        assert!(base.contains("\n[fleet]\n"));
        let with = |fleet: &str| base.replace("\n[fleet]\n", &format!("\n[fleet]\n{fleet}\n"));
        let cfg = Config::parse(&path, &base).unwrap();
        assert!(cfg.fleet.members.is_empty(), "learned roster by default");
        assert_eq!(
            cfg.fleet.stale_after_ms,
            net::receipts::verdict::STALE_AFTER_MS_DEFAULT
        );
        let cfg = Config::parse(
            &path,
            &with("members = [\"node-1\", \"node-2\"]\ngossip_interval_ms = 500"),
        )
        .unwrap();
        assert_eq!(cfg.fleet.members.len(), 2);
        assert_eq!(cfg.net.receipt_interval_ms, 500);
        refused(
            &path,
            &with("members = [\"node-2\"]"),
            "fleet.members",
            "own id",
        );
        refused(
            &path,
            &with("members = [\"node-1\", \"Bad_Id\"]"),
            "fleet.members[1]",
            "invalid node id",
        );
        refused(
            &path,
            &with("members = [\"node-1\", \"node-1\"]"),
            "fleet.members[1]",
            "twice",
        );
        refused(
            &path,
            &with("alive_interval_ms = 600000"),
            "fleet.stale_after_ms",
            "must be more than `fleet.alive_interval_ms`",
        );
        refused(
            &path,
            &with("gossip_pages_per_round_max = 0"),
            "fleet.gossip_pages_per_round_max",
            "greater than 0",
        );
        refused(
            &path,
            &with("nodes_max = 1"),
            "fleet.nodes_max",
            "at least 2",
        );
        let err = Config::parse(&path, &with("colour = 1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn inv_21_fleet_keys_reach_the_network_layer_and_default_to_its_values() {
        let (_dir, base, path) = example();
        let with = |fleet: &str| base.replace("\n[fleet]\n", &format!("\n[fleet]\n{fleet}\n"));
        // Absent keys leave the network layer's defaults: receipts on.
        let cfg = Config::parse(&path, &base).unwrap();
        let defaults = net::NetConfig::new(
            cfg.net.node_id.clone(),
            cfg.net.listen_addr,
            Default::default(),
        );
        assert_eq!(cfg.net.receipt_interval_ms, defaults.receipt_interval_ms);
        assert!(cfg.net.receipt_interval_ms > 0);
        assert_eq!(
            cfg.net.receipt_pages_per_round_max,
            defaults.receipt_pages_per_round_max
        );
        assert_eq!(cfg.net.alive_interval_ms, defaults.alive_interval_ms);
        assert_eq!(
            cfg.net.receipts_per_node_max,
            defaults.receipts_per_node_max
        );
        assert_eq!(cfg.net.fleet_nodes_max, defaults.fleet_nodes_max);
        // Each key lands on its own field.
        let cfg = Config::parse(
            &path,
            &with(
                "stale_after_ms = 900000\ngossip_pages_per_round_max = 7\nalive_interval_ms = 30000\nreceipts_per_node_max = 5000\nnodes_max = 9",
            ),
        )
        .unwrap();
        assert_eq!(cfg.fleet.stale_after_ms, 900_000);
        assert_eq!(cfg.net.receipt_pages_per_round_max, 7);
        assert_eq!(cfg.net.alive_interval_ms, 30_000);
        assert_eq!(cfg.net.receipts_per_node_max, 5_000);
        assert_eq!(cfg.net.fleet_nodes_max, 9);
        // 0 turns receipts off; it is not an error.
        let cfg = Config::parse(&path, &with("gossip_interval_ms = 0")).unwrap();
        assert_eq!(cfg.net.receipt_interval_ms, 0);
        // A value of the wrong type names its key.
        for (text, key) in [
            ("stale_after_ms = \"10m\"", "`fleet.stale_after_ms`"),
            ("gossip_interval_ms = -1", "`fleet.gossip_interval_ms`"),
            ("members = \"node-1\"", "`fleet.members`"),
        ] {
            let err = Config::parse(&path, &with(text)).unwrap_err().to_string();
            assert!(err.contains(key), "`{key}` not named in: {err}");
        }
    }

    #[test]
    fn inv_21_empty_data_dir_and_control_socket_are_refused() {
        let (dir, base, path) = example();
        let root = dir.path().to_str().unwrap();
        let data_dir = format!("data_dir = \"{root}\"");
        assert!(base.contains(&data_dir), "{base}");
        refused(
            &path,
            &base.replace(&data_dir, "data_dir = \"\""),
            "data_dir",
            "empty",
        );
        refused(
            &path,
            &format!("control_socket = \"\"\n{base}"),
            "control_socket",
            "empty",
        );
        // Relative paths stay fine.
        let cfg = Config::parse(&path, &base.replace(&data_dir, "data_dir = \"data\"")).unwrap();
        assert_eq!(cfg.store.data_dir, dir.path().join("data"));
    }

    #[test]
    fn inv_21_control_socket_on_the_stores_own_paths_is_refused() {
        let (dir, base, path) = example();
        let root = dir.path().to_str().unwrap();
        let with_socket = |socket: &str| format!("control_socket = \"{socket}\"\n{base}");
        for (socket, detail) in [
            (root.to_owned(), "the data directory itself"),
            (format!("{root}/"), "the data directory itself"),
            (format!("{root}/edge.redb"), "database"),
            (format!("{root}/./edge.redb"), "database"),
            (format!("{root}/segments/../edge.redb"), "database"),
            (format!("{root}/edge.redb.new"), "database"),
            (format!("{root}/segments"), "segments"),
            (format!("{root}/segments/ab/control.sock"), "segments"),
            (format!("{root}/tmp/control.sock"), "partial ingests"),
            (format!("{root}/quarantine/x.sock"), "quarantine"),
        ] {
            refused(&path, &with_socket(&socket), "control_socket", detail);
        }
        // Through a symlink to the data directory, once the directory exists.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        refused(
            &path,
            &with_socket(&format!("{}/edge.redb", link.display())),
            "control_socket",
            "database",
        );
        // Neighbours of those paths are fine.
        for socket in [
            format!("{root}/control.sock"),
            format!("{root}/edge.redb.sock"),
            format!("{root}/segments.sock"),
            format!("{root}/run/control.sock"),
        ] {
            Config::parse(&path, &with_socket(&socket)).expect(&socket);
        }
    }

    #[test]
    fn inv_21_peer_addresses_must_name_one_host_and_port() {
        let (_dir, base, path) = example();
        let peer = "addr = \"192.0.2.12:7401\"";
        assert!(base.contains(peer));
        for (addr, detail) in [
            ("0.0.0.0:0", "unspecified"),
            ("0.0.0.0:7401", "unspecified"),
            ("[::]:7401", "unspecified"),
            ("[::ffff:0.0.0.0]:7401", "unspecified"),
            ("192.0.2.12:0", "port 0"),
            ("[::1]:0", "port 0"),
            ("224.0.0.1:7401", "multicast"),
            ("239.255.255.250:1900", "multicast"),
            ("[ff02::1]:7401", "multicast"),
            ("[::ffff:224.0.0.1]:7401", "multicast"),
            ("255.255.255.255:7401", "broadcast"),
            ("[::ffff:255.255.255.255]:7401", "broadcast"),
        ] {
            let text = base.replace(peer, &format!("addr = \"{addr}\""));
            refused(&path, &text, "known_peers[0].addr", detail);
        }
        for addr in ["10.0.0.255:7401", "[2001:db8::1]:7401", "127.0.0.1:1"] {
            let text = base.replace(peer, &format!("addr = \"{addr}\""));
            Config::parse(&path, &text).expect(addr);
        }
    }

    #[test]
    fn inv_21_listen_and_metrics_addresses_need_a_fixed_port() {
        let (_dir, base, path) = example();
        let listen = "listen_addr = \"0.0.0.0:7401\"";
        assert!(base.contains(listen));
        for (addr, detail) in [
            ("0.0.0.0:0", "port 0"),
            ("[::]:0", "port 0"),
            ("224.0.0.1:7401", "multicast"),
            ("255.255.255.255:7401", "broadcast"),
        ] {
            let text = base.replace(listen, &format!("listen_addr = \"{addr}\""));
            refused(&path, &text, "listen_addr", detail);
        }
        for addr in ["[::]:7401", "127.0.0.1:7401", "192.0.2.1:7401"] {
            let text = base.replace(listen, &format!("listen_addr = \"{addr}\""));
            Config::parse(&path, &text).expect(addr);
        }
        refused(
            &path,
            &format!("metrics_addr = \"127.0.0.1:0\"\n{base}"),
            "metrics_addr",
            "port 0",
        );
    }

    #[test]
    fn inv_21_control_section_is_strict_and_checked() {
        let (_dir, base, path) = example();
        let cfg = Config::parse(&path, &base).unwrap();
        assert_eq!(cfg.control, crate::control::ControlLimits::default());
        assert!(base.contains("\n[control]\n"));
        let with = |keys: &str| base.replace("\n[control]\n", &format!("\n[control]\n{keys}\n"));
        let cfg = Config::parse(
            &path,
            &with("request_deadline_ms = 250\nconnections_max = 3"),
        )
        .unwrap();
        assert_eq!(cfg.control.request_deadline_ms, 250);
        assert_eq!(cfg.control.connections_max, 3);
        assert_eq!(
            cfg.control.streams_max, 3,
            "an unset streams_max follows connections_max"
        );
        refused(
            &path,
            &with("request_deadline_ms = 0"),
            "control.request_deadline_ms",
            "outside",
        );
        refused(
            &path,
            &with("connections_max = 2\nstreams_max = 3"),
            "control.streams_max",
            "connections_max",
        );
        let err = Config::parse(&path, &with("deadline_ms = 1"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("deadline_ms") && err.contains("edge.toml"),
            "{err}"
        );
    }

    #[test]
    fn inv_21_parse_errors_are_one_line_with_their_position() {
        let (_dir, base, path) = example();
        let err = Config::parse(&path, &format!("{base}\nstray = [\n"))
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\n'), "{err:?}");
        assert!(err.contains("edge.toml") && err.contains("line "), "{err}");
        let err = Config::parse(&path, "node_id = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1, column 11, `node_id`"), "{err}");
        // A value of the wrong type in a section is named with its section.
        let err = Config::parse(&path, &format!("{base}\nstale_after_ms = true\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`fleet.stale_after_ms`"), "{err}");
    }

    #[test]
    fn inv_21_bad_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        for f in ["ca.crt", "node-1.crt", "node-1.key"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let base = include_str!("../../edge.toml.example")
            .replace("/etc/edged", root)
            .replace("/var/lib/edged", root);
        let path = dir.path().join("edge.toml");
        let check = |text: &str, key: &str| {
            let err = Config::parse(&path, text).unwrap_err().to_string();
            assert!(err.contains(key), "`{key}` not named in: {err}");
            assert!(err.contains("edge.toml"), "file not named in: {err}");
        };
        check(
            &base.replace("listen_addr = \"", "listen_addr = \"nowhere"),
            "listen_addr",
        );
        check(
            &base.replacen("node_id = \"node-1\"", "node_id = \"Node_1\"", 1),
            "node_id",
        );
        check(
            &base.replace("[relay]", "[relay]\nattempts_max = 0"),
            "relay.attempts_max",
        );
        check(&base.replace("[net]", "[net]\ncolour = 1"), "colour");
        check(
            &base.replace("[net]", "[net]\nlarge_sends_per_peer_max = 0"),
            "large_sends_per_peer_max",
        );
        let long = format!("control_socket = \"/{}\"\n", "s".repeat(120));
        check(&format!("{long}{base}"), "control_socket");
        check(
            &base.replace("[store]", "[store]\ntombstones_max = 0"),
            "tombstones_max",
        );
        for bad in [
            HOUSEKEEPING_INTERVAL_MS_MIN - 1,
            HOUSEKEEPING_INTERVAL_MS_MAX + 1,
        ] {
            check(
                &format!("housekeeping_interval_ms = {bad}\n{base}"),
                "housekeeping_interval_ms",
            );
        }
        for good in [HOUSEKEEPING_INTERVAL_MS_MIN, HOUSEKEEPING_INTERVAL_MS_MAX] {
            let text = format!("housekeeping_interval_ms = {good}\n{base}");
            let cfg = Config::parse(&path, &text).unwrap();
            assert_eq!(cfg.housekeeping_interval, Duration::from_millis(good));
        }
    }
}
