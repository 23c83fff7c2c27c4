//! The node endpoint: one quinn [`Endpoint`] (server and client), a supervised connection to
//! every known peer, the streams peers open, and the client API [`Node::send_segment`].
//!
//! - **Supervision**: one task per known peer keeps a connection up whether or not anything is
//!   due, re-dialling with jittered exponential backoff (`redial_backoff_base_ms` ·
//!   2^failures, capped at `redial_backoff_max_ms`, jitter in [½, 1] from the seeded RNG).
//!   A connection is reused by every transfer and catch-up round with that peer.
//! - **Duplicates and restarts** ([`crate::supervision`]): when both nodes dial each other at once,
//!   both keep the connection opened by the node with the lower id; the other one is retired:
//!   it serves the streams already on it, then closes ([`ConnCode::Duplicate`]) — a transfer is
//!   never cut by the rule. A fresh authenticated connection replaces one established more
//!   than a handshake window ago at once (the peer lost the old one: it restarted, or its end
//!   timed out), and between two connections opened by the same side the newer wins. At most
//!   `connections_per_peer_max` are kept per peer.
//! - **Addresses** (INV-27): the node's socket is wrapped in an [`AddrFilter`]: a datagram from
//!   an address that is not a configured peer's is dropped before QUIC sees it (no state, no
//!   answer, counted in `datagrams_dropped_unknown`), unless `accept_unknown_addresses` is set;
//!   and a send guard keeps every datagram from leaving for an address that is neither a
//!   configured peer's nor the source of a handshake the node admitted (counted in
//!   `datagrams_blocked_send`, logged rate-limited). An address is never an identity: it only
//!   decides who is heard. Connection migration is disabled.
//! - **Admission**, in this order, before any TLS work: (1) the address filter; (2) a client
//!   whose address is not validated yet gets a QUIC Retry — a small stateless packet — and
//!   nothing else, so a flood of handshakes whose replies go nowhere holds no state at all;
//!   (3) budgets of handshakes in flight: at most `handshakes_per_addr_max` per source address
//!   (a configured `ip:port`; for strangers, their IP), inside `handshakes_unauthenticated_max`
//!   for configured addresses, while strangers (only with `accept_unknown_addresses`) draw on
//!   `handshakes_unknown_addresses_max`, a budget of their own; more are refused (strangers
//!   are not even answered); (4) each admitted handshake must finish within
//!   `handshake_unauthenticated_timeout_ms` (shorter than the dial timeout); (5) TLS refuses any
//!   certificate that does not chain to the fleet CA or names an id not in `known_peers`
//!   ([`crate::tls`]). A peer may open at most `streams_per_peer_max` streams at once (QUIC
//!   flow control), and each stream must send its first frame within `response_timeout_ms`.
//! - **Sends**: as many as the relay asks for at once, except that at most
//!   `large_sends_per_peer_max` of segments over one chunk run to one peer at once (the others
//!   wait for a permit): memory stays bounded by configuration while many small segments share
//!   round trips.
//! - **Catch-up** runs per connection, paced per peer ([`crate::catchup`]); a segment this
//!   node's store quarantines triggers a round with every connected peer within
//!   `catchup_followup_ms`, so a good copy is fetched again from a peer that holds it.
//! - **Logs**: everything a remote party can make the node log over and over goes through one
//!   [`LogLimiter`] per node, keyed by peer id (or, for strangers, IP) and reason.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{AsyncUdpSocket, Connection, Endpoint, EndpointConfig, Runtime, TokioRuntime};
use rustls::pki_types::CertificateDer;
use store::{SegmentId, Store};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

use crate::catchup::{self, CatchupReport, PeerCatchup, ServeReq, SkipSet};
use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, NetConfig};
use crate::disk;
use crate::filter::{AddrFilter, answer_for, canonical};
use crate::limits::{
    CLOSE_DRAIN_MAX_MS, CROSSING_MIN_MS, CROSSING_RTTS, CUT_THROUGH_FORWARDS_MAX,
    LARGE_SEND_PAYLOAD_BYTES, RECEIPT_RECONCILE_MS, RETIRE_GRACE_MIN_MS, RETIRE_GRACE_RTTS,
    RETRY_TOKEN_LIFETIME_MS, SHUTDOWN_POLL_MS,
};
use crate::logcap::LogLimiter;
use crate::pki::{NodeId, NodeIdentity, node_id_of_cert};
use crate::receipts::gossip::{self, Fleet};
use crate::supervision::{self, Current, Keep, New, Retire};
use crate::takeover::Receiving;
use crate::tls::{self, TlsError};
use crate::transfer::{
    self, Ctx, NetHooks, NetStats, NoHooks, SendOutcome, StatsSnapshot, bump, conn_outcome,
};
use crate::wire::{ConnCode, Msg, StreamCode};
use crate::{info_limited, warn_limited};

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid network configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("node_id is {config} but the node certificate names {cert}")]
    IdentityMismatch { config: NodeId, cert: NodeId },
    #[error("UDP socket {addr}: {source}")]
    Socket {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("QUIC endpoint: {0}")]
    Endpoint(std::io::Error),
    #[error(transparent)]
    Fleet(#[from] crate::receipts::gossip::FleetError),
}

/// Everything a node is started with.
pub struct NodeSetup {
    pub config: NetConfig,
    pub identity: NodeIdentity,
    pub store: Store,
    pub hooks: Arc<dyn NetHooks>,
    pub clock: Arc<dyn Clock>,
    /// The UDP socket seam: `None` binds `config.listen_addr` (with the configured buffer
    /// sizes); tests and the fault-injection suite pass their own [`AsyncUdpSocket`]. Either
    /// way the node wraps it in its [`AddrFilter`].
    pub socket: Option<Arc<dyn AsyncUdpSocket>>,
}

impl NodeSetup {
    /// A setup with no hooks, the system clock and a socket the node binds itself.
    pub fn new(config: NetConfig, identity: NodeIdentity, store: Store) -> Self {
        NodeSetup {
            config,
            identity,
            store,
            hooks: Arc::new(NoHooks),
            clock: Arc::new(SystemClock),
            socket: None,
        }
    }
}

impl std::fmt::Debug for NodeSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSetup")
            .field("config", &self.config)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Binds a UDP socket with the requested buffer sizes and wraps it for quinn (the default of
/// the socket seam).
pub fn bind_udp(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<Arc<dyn AsyncUdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if buffer_bytes > 0 {
        // The kernel caps these at net.core.{r,w}mem_max; a smaller buffer only costs speed.
        if let Err(e) = socket.set_recv_buffer_size(buffer_bytes) {
            tracing::warn!(error = %e, "cannot set the UDP receive buffer size");
        }
        if let Err(e) = socket.set_send_buffer_size(buffer_bytes) {
            tracing::warn!(error = %e, "cannot set the UDP send buffer size");
        }
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    let std_socket: std::net::UdpSocket = socket.into();
    TokioRuntime.wrap_udp_socket(std_socket)
}

/// The delay before re-dial number `failures` (≥ 1): `base · 2^(failures-1)` capped at `max`,
/// then jittered into `[d/2, d]` by `random`.
pub fn redial_delay_ms(base_ms: u64, max_ms: u64, failures: u32, random: u64) -> u64 {
    let shift = failures.saturating_sub(1).min(40);
    let d = base_ms.saturating_mul(1u64 << shift).min(max_ms);
    d / 2 + random % (d / 2 + 1)
}

/// SplitMix64: a small seeded generator for jitter (not for anything secret).
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[derive(Clone)]
struct Live {
    conn: Connection,
    opened_by_me: bool,
    /// When it was established here (the duplicate rule's window).
    established: Instant,
    streams: Arc<Streams>,
}

/// The streams in flight on one connection, both directions (a retired connection closes only
/// once there are none).
#[derive(Default)]
struct Streams {
    in_flight: AtomicUsize,
    /// Streams ever started: a retired connection that started one during its grace waits again.
    started: AtomicU64,
    idle: Notify,
}

/// One stream in flight on a connection, from its start to its end.
struct StreamGuard(Arc<Streams>);

impl Streams {
    fn start(self: &Arc<Self>) -> StreamGuard {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        StreamGuard(self.clone())
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

struct Peer {
    id: NodeId,
    addr: SocketAddr,
    /// The connection in use; `send_modify` also wakes waiters when a dial ends.
    current: watch::Sender<Option<Live>>,
    /// Established connections not yet known closed (for `connections_per_peer_max`).
    established: Mutex<Vec<Connection>>,
    /// Why the last dial failed (what `send_segment` reports while there is no connection).
    last_failure: Mutex<Option<SendOutcome>>,
    dialing: AtomicBool,
    /// One catch-up round at a time with this peer, and what catch-up keeps about it.
    catchup: tokio::sync::Mutex<PeerCatchup>,
    /// Permits for sends of large segments to this peer (`large_sends_per_peer_max`).
    large_sends: Arc<Semaphore>,
    /// Its supervisor task, stopped when the peer is removed from `known_peers`.
    supervisor: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Peer {
    fn new(id: &NodeId, addr: SocketAddr, config: &NetConfig, now: Instant) -> Peer {
        Peer {
            id: id.clone(),
            addr,
            current: watch::channel(None).0,
            established: Mutex::new(Vec::new()),
            last_failure: Mutex::new(None),
            dialing: AtomicBool::new(true),
            catchup: tokio::sync::Mutex::new(PeerCatchup::new(config, now)),
            large_sends: Arc::new(Semaphore::new(config.large_sends_per_peer_max)),
            supervisor: Mutex::new(None),
        }
    }

    fn set_supervisor(&self, task: tokio::task::AbortHandle) {
        *self.supervisor.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Stops its supervisor and closes its connections (it left `known_peers`).
    fn retire(&self) {
        if let Some(task) = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
        let close = |c: &Connection| {
            c.close(
                ConnCode::PeerRemoved.varint(),
                PEER_REMOVED_REASON.as_bytes(),
            )
        };
        for conn in self
            .established
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            close(conn);
        }
        if let Some(live) = self.current.borrow().as_ref() {
            close(&live.conn);
        }
    }

    /// Whether `conn` is the peer's current connection (loops tied to one end with it).
    fn is_current(&self, conn: &Connection) -> bool {
        self.live()
            .is_some_and(|l| l.conn.stable_id() == conn.stable_id())
    }

    fn live(&self) -> Option<Live> {
        self.current
            .borrow()
            .clone()
            .filter(|l| l.conn.close_reason().is_none())
    }
}

/// Inbound handshakes in flight: the budgets of the module docs.
struct Admission {
    configured: Arc<Semaphore>,
    strangers: Arc<Semaphore>,
    per_addr_max: usize,
    per_addr: Mutex<BTreeMap<SocketAddr, usize>>,
}

/// Why a handshake was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Its budget (configured addresses', or strangers') is spent.
    Budget,
    /// Its source address has `handshakes_per_addr_max` in flight.
    Address,
}

/// One admitted handshake's place in the budgets, given back on drop.
struct Admitted {
    _permit: OwnedSemaphorePermit,
    key: SocketAddr,
    admission: Arc<Admission>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per_addr = self
            .admission
            .per_addr
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_addr.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                per_addr.remove(&self.key);
            }
        }
    }
}

impl Admission {
    fn new(cfg: &NetConfig) -> Admission {
        Admission {
            configured: Arc::new(Semaphore::new(cfg.handshakes_unauthenticated_max)),
            strangers: Arc::new(Semaphore::new(cfg.handshakes_unknown_addresses_max)),
            per_addr_max: cfg.handshakes_per_addr_max,
            per_addr: Mutex::new(BTreeMap::new()),
        }
    }

    /// The per-address key of `remote`: the exact address of a configured peer; a stranger's
    /// IP (a stranger can use every port).
    fn key(remote: SocketAddr, configured: bool) -> SocketAddr {
        let remote = canonical(remote);
        if configured {
            remote
        } else {
            SocketAddr::new(remote.ip(), 0)
        }
    }

    fn try_admit(
        self: &Arc<Self>,
        remote: SocketAddr,
        configured: bool,
    ) -> Result<Admitted, Refusal> {
        let key = Admission::key(remote, configured);
        let mut per_addr = self.per_addr.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_addr.get(&key).copied().unwrap_or(0);
        if n >= self.per_addr_max {
            return Err(Refusal::Address);
        }
        let pool = if configured {
            &self.configured
        } else {
            &self.strangers
        };
        let permit = pool
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Budget)?;
        per_addr.insert(key, n + 1);
        Ok(Admitted {
            _permit: permit,
            key,
            admission: self.clone(),
        })
    }
}

struct Inner {
    id: NodeId,
    ctx: Ctx,
    endpoint: Endpoint,
    filter: Arc<AddrFilter>,
    client_config: quinn::ClientConfig,
    /// The known peers; changed by [`Node::set_known_peers`].
    peers: std::sync::RwLock<BTreeMap<NodeId, Arc<Peer>>>,
    /// The ids TLS accepts, kept equal to `peers`' keys.
    known: tls::KnownPeers,
    admission: Arc<Admission>,
    shutdown: watch::Sender<bool>,
    /// Bumped when the store quarantines a segment: every connection's catch-up loop runs a
    /// round soon.
    kick: Arc<watch::Sender<u64>>,
    rng: Mutex<SplitMix64>,
    skip: SkipSet,
    /// Permits of the cut-through forwards running now.
    forwards: Arc<tokio::sync::Semaphore>,
    /// The cut-through forwards running now, by peer and segment: a relay send of the same
    /// pair waits for its outcome instead of offering the segment again.
    forwarding: Mutex<BTreeMap<(NodeId, SegmentId), ForwardEnd>>,
    /// The runtime the node was started on.
    runtime: tokio::runtime::Handle,
}

/// The outcome of a running cut-through forward, once it ends.
type ForwardEnd = watch::Receiver<Option<SendOutcome>>;

/// A running node. Dropping it closes the endpoint and stops its tasks.
pub struct Node {
    inner: Arc<Inner>,
    tasks: Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

/// The reason a peer reads in the close of its connections once removed from `known_peers`.
pub const PEER_REMOVED_REASON: &str = "peer removed from known_peers";

/// What [`Node::set_known_peers`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeersChanged {
    pub added: Vec<NodeId>,
    /// Removed, their connections closed.
    pub removed: Vec<NodeId>,
    /// At a new address: reconnected there.
    pub readdressed: Vec<NodeId>,
}

/// The reason peers read in the close of a node that shuts down.
pub const SHUTDOWN_REASON: &str = "node shutting down";

/// Attempts of one `send_segment` when its connection is replaced by the duplicate rule.
const DUPLICATE_RETRIES_MAX: u32 = 3;

/// Resolves once `peer`'s current connection is no longer the one with `stable_id` (pending
/// forever if the node is gone).
async fn replaced(current: &mut watch::Receiver<Option<Live>>, stable_id: usize) {
    loop {
        let same = current
            .borrow_and_update()
            .as_ref()
            .is_some_and(|l| l.conn.stable_id() == stable_id);
        if !same {
            return;
        }
        if current.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// True if `conn` was closed by the duplicate rule (here or at the peer).
fn is_duplicate_close(conn: &Connection) -> bool {
    match conn.close_reason() {
        Some(quinn::ConnectionError::LocallyClosed) => true,
        Some(quinn::ConnectionError::ApplicationClosed(c)) => {
            c.error_code == ConnCode::Duplicate.varint()
        }
        _ => false,
    }
}

/// A peer's connection state, for status displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub connected: bool,
    /// The address the current connection talks to.
    pub remote: Option<SocketAddr>,
    /// Established connections with the peer not known closed: the current one, and any being
    /// retired (at most `connections_per_peer_max`).
    pub connections: usize,
    pub last_failure: Option<SendOutcome>,
}

impl Node {
    /// Starts the node: binds (or takes) its socket, starts accepting, and starts one supervisor
    /// per known peer. Must run inside a tokio runtime.
    pub fn start(setup: NodeSetup) -> Result<Node, NetError> {
        let NodeSetup {
            config,
            identity,
            store,
            hooks,
            clock,
            socket,
        } = setup;
        config.validate()?;
        if identity.id != config.node_id {
            return Err(NetError::IdentityMismatch {
                config: config.node_id.clone(),
                cert: identity.id.clone(),
            });
        }
        let socket = match socket {
            Some(s) => s,
            None => bind_udp(config.listen_addr, config.udp_buffer_bytes).map_err(|source| {
                NetError::Socket {
                    addr: config.listen_addr,
                    source,
                }
            })?,
        };
        let stats = Arc::new(NetStats::default());
        let limiter = Arc::new(LogLimiter::new(
            config.log_warnings_per_window,
            Duration::from_millis(config.log_window_ms),
        ));
        let filter = Arc::new(AddrFilter::new(
            socket,
            config.known_peers.values().copied(),
            config.accept_unknown_addresses,
            stats.clone(),
            limiter.clone(),
        ));
        let known: tls::KnownPeers = Arc::new(std::sync::RwLock::new(
            config.known_peers.keys().cloned().collect(),
        ));
        let server_tls =
            tls::server_config_logged(&identity, known.clone(), clock.clone(), limiter.clone())?;
        let client_tls = tls::client_config(&identity, clock.clone())?;
        let (server_tls, client_tls) = tls::quic_configs(server_tls, client_tls)?;
        let transport = config.transport_config();
        let mut server_config = quinn::ServerConfig::with_crypto(server_tls);
        // Incoming connections wait in quinn only until the accept loop takes them (at once),
        // so quinn's own cap is the sum of the budgets; the budgets are enforced there.
        server_config
            .transport_config(transport.clone())
            .migration(false)
            .retry_token_lifetime(Duration::from_millis(RETRY_TOKEN_LIFETIME_MS))
            .max_incoming(
                config.handshakes_unauthenticated_max + config.handshakes_unknown_addresses_max,
            );
        let mut client_config = quinn::ClientConfig::new(client_tls);
        client_config.transport_config(transport);
        let mut endpoint_config = EndpointConfig::default();
        let seed = config.rng_seed.unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            now ^ u64::from_le_bytes(
                blake3::hash(config.node_id.as_str().as_bytes()).as_bytes()[..8]
                    .try_into()
                    .unwrap_or([0; 8]),
            )
        });
        if let Some(s) = config.rng_seed {
            let mut key = *blake3::hash(&s.to_le_bytes()).as_bytes();
            key[0] ^= 0x51; // distinct from the jitter stream
            endpoint_config.rng_seed(Some(key));
        }
        let endpoint = Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server_config),
            filter.clone(),
            Arc::new(TokioRuntime),
        )
        .map_err(NetError::Endpoint)?;
        let now = Instant::now();

        let peers = config
            .known_peers
            .iter()
            .map(|(id, addr)| (id.clone(), Arc::new(Peer::new(id, *addr, &config, now))))
            .collect();
        let fleet = if config.receipt_interval_ms > 0 {
            Some(Fleet::open(store.clone(), &identity, &config)?)
        } else {
            None
        };
        let admission = Arc::new(Admission::new(&config));
        let kick = Arc::new(watch::channel(0u64).0);
        // The store outlives the node (and may serve a later one): the watcher holds the kick
        // weakly and does nothing once the node is gone.
        let weak_kick = Arc::downgrade(&kick);
        store.watch_quarantine(Box::new(move |id| {
            if let Some(kick) = weak_kick.upgrade() {
                tracing::info!(seg_id = %id, "segment quarantined: catch-up will fetch it again from a peer");
                kick.send_modify(|n| *n = n.wrapping_add(1));
            }
        }));
        let inner = Arc::new(Inner {
            id: config.node_id.clone(),
            ctx: Ctx {
                store,
                hooks,
                clock,
                cfg: Arc::new(config),
                stats,
                limiter,
                receiving: Arc::new(Receiving::default()),
                fleet,
            },
            endpoint,
            filter,
            client_config,
            peers: std::sync::RwLock::new(peers),
            known,
            admission,
            shutdown: watch::channel(false).0,
            kick,
            rng: Mutex::new(SplitMix64(seed)),
            skip: SkipSet::default(),
            forwards: Arc::new(tokio::sync::Semaphore::new(CUT_THROUGH_FORWARDS_MAX)),
            forwarding: Mutex::new(BTreeMap::new()),
            runtime: tokio::runtime::Handle::current(),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(inner.clone().accept_loop());
        if inner.ctx.fleet.is_some() {
            tasks.spawn(inner.clone().reconcile_loop());
        }
        for peer in inner.peer_list() {
            let supervisor = tasks.spawn(inner.clone().supervise(peer.clone()));
            peer.set_supervisor(supervisor);
        }
        tracing::info!(node = %inner.id, addr = %inner.endpoint.local_addr().map_or_else(|e| format!("unknown ({e})"), |a| a.to_string()), peers = inner.peer_list().len(), "node started");
        Ok(Node {
            inner,
            tasks: Mutex::new(tasks),
        })
    }

    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    /// The address the node's socket is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.endpoint.local_addr()
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.inner.ctx.stats.snapshot()
    }

    pub fn store(&self) -> &Store {
        &self.inner.ctx.store
    }

    /// The node's fleet receipts; `None` when `receipt_interval_ms` is 0.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.inner.ctx.fleet.as_ref()
    }

    /// Sends one stored segment to `peer` over the supervised connection, streaming it from the
    /// stored `.seg` file, and reports how it went. Waits up to `handshake_timeout_ms` for a
    /// connection being dialled; never dials outside the supervisor.
    ///
    /// If a cut-through forward of the same segment to the same peer is running, its outcome
    /// is this send's: the peer is not offered the segment a second time.
    pub async fn send_segment(&self, peer: &NodeId, id: SegmentId) -> SendOutcome {
        let running = self.inner.forwarding_of(peer, id);
        if let Some(mut running) = running {
            if let Ok(outcome) = running.wait_for(Option::is_some).await
                && let Some(outcome) = outcome.clone()
            {
                return outcome;
            }
        }
        self.inner.send_segment(peer, id).await
    }

    /// Starts forwarding segment `id`, being imported here and in flight (see
    /// [`store::Store::in_flight`]), to the peers the hooks name, while it still arrives. Does
    /// nothing for a segment not in flight.
    pub fn forward_in_flight(&self, id: SegmentId) {
        if self.inner.ctx.store.in_flight(&id).is_some() {
            self.inner.forward_early(id, None);
        }
    }

    /// Runs one catch-up round with `peer` now, as the puller.
    pub async fn catch_up(&self, peer: &NodeId) -> Result<CatchupReport, String> {
        let p = self
            .inner
            .peer(peer)
            .ok_or_else(|| format!("{peer} is not a known peer"))?;
        let live = self.inner.connection(&p).await.map_err(|o| o.to_string())?;
        let _in_flight = live.streams.start();
        self.inner.catch_up_on(&p, &live.conn).await
    }

    /// Waits until a connection with `peer` is up, at most `within`.
    pub async fn wait_connected(&self, peer: &NodeId, within: Duration) -> bool {
        let Some(p) = self.inner.peer(peer) else {
            return false;
        };
        let mut rx = p.current.subscribe();
        let deadline = Instant::now() + within;
        loop {
            if p.live().is_some() {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives as long as the node; a dropped one means it is gone.
                Ok(Err(_)) | Err(_) => return p.live().is_some(),
            }
        }
    }

    pub fn peers(&self) -> Vec<PeerStatus> {
        self.inner
            .peer_list()
            .iter()
            .map(|p| {
                let live = p.live();
                PeerStatus {
                    id: p.id.clone(),
                    addr: p.addr,
                    connected: live.is_some(),
                    remote: live.map(|l| l.conn.remote_address()),
                    connections: p
                        .established
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .filter(|c| c.close_reason().is_none())
                        .count(),
                    last_failure: p
                        .last_failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone(),
                }
            })
            .collect()
    }

    /// Puts a reloaded `known_peers` in force: peers added are accepted and dialled, peers
    /// removed are refused from now on and their connections closed (they read
    /// [`PEER_REMOVED_REASON`]), a peer at a new address is reconnected there.
    pub fn set_known_peers(&self, known: &BTreeMap<NodeId, SocketAddr>) -> PeersChanged {
        let mut changed = PeersChanged::default();
        let mut gone = Vec::new();
        let mut started = Vec::new();
        {
            let mut peers = self.inner.peers.write().unwrap_or_else(|e| e.into_inner());
            peers.retain(|id, peer| {
                let keep = known.get(id) == Some(&peer.addr);
                if !keep {
                    gone.push(peer.clone());
                    if known.contains_key(id) {
                        changed.readdressed.push(id.clone());
                    } else {
                        changed.removed.push(id.clone());
                    }
                }
                keep
            });
            let now = Instant::now();
            for (id, addr) in known {
                if peers.contains_key(id) {
                    continue;
                }
                let peer = Arc::new(Peer::new(id, *addr, &self.inner.ctx.cfg, now));
                peers.insert(id.clone(), peer.clone());
                started.push(peer);
                if !changed.readdressed.contains(id) {
                    changed.added.push(id.clone());
                }
            }
            *self.inner.known.write().unwrap_or_else(|e| e.into_inner()) =
                peers.keys().cloned().collect();
            // Added addresses are heard at once; removed ones still are until their closes
            // went out (the guard would drop the close frames), then no more.
            self.inner.filter.set_configured(
                peers
                    .values()
                    .map(|p| p.addr)
                    .chain(gone.iter().map(|p| p.addr)),
            );
        }
        let narrow = !gone.is_empty();
        for peer in gone {
            peer.retire();
        }
        if narrow {
            let inner = self.inner.clone();
            self.inner.runtime.spawn(async move {
                tokio::time::sleep(Duration::from_millis(CLOSE_DRAIN_MAX_MS)).await;
                let now: Vec<SocketAddr> = inner.peer_list().iter().map(|p| p.addr).collect();
                inner.filter.set_configured(now);
            });
        }
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for peer in started {
            let supervisor = tasks.spawn_on(
                self.inner.clone().supervise(peer.clone()),
                &self.inner.runtime,
            );
            peer.set_supervisor(supervisor);
        }
        changed
    }

    /// Established connections with known peers not known closed.
    pub fn open_connections(&self) -> usize {
        self.peers().iter().map(|p| p.connections).sum()
    }

    /// Segments being received now (each keeps its checkpoint when cut).
    pub fn receives_in_flight(&self) -> usize {
        self.inner.ctx.receiving.holders()
    }

    /// Stops the node: closes every connection at once (peers see [`ConnCode::Shutdown`] and
    /// the reason [`SHUTDOWN_REASON`]), waits up to `grace` for the receives cut by it to keep
    /// their checkpoints, then at most [`CLOSE_DRAIN_MAX_MS`] for the closes to go out, and
    /// stops its tasks.
    pub async fn shutdown(&self, grace: Duration) {
        let connected = self.open_connections() > 0;
        self.inner.shutdown.send_replace(true);
        self.inner
            .endpoint
            .close(ConnCode::Shutdown.varint(), SHUTDOWN_REASON.as_bytes());
        let deadline = Instant::now() + grace;
        while self.receives_in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(SHUTDOWN_POLL_MS)).await;
        }
        // The close frames leave on the driver's next poll; waiting for the endpoint to go
        // idle is only the effort quinn suggests for peers that lose the frame. It is bounded
        // apart from `grace`: a dial still in its handshake drains for three probe timeouts of
        // an unmeasured path (about 3 s) and would hold every shutdown that long.
        // With no peer connected, nobody waits for a close.
        if connected {
            let drain = grace.min(Duration::from_millis(CLOSE_DRAIN_MAX_MS));
            let _ = timeout(drain, self.inner.endpoint.wait_idle()).await;
        }
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort_all();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.inner.shutdown.send_replace(true);
        self.inner
            .endpoint
            .close(ConnCode::Shutdown.varint(), SHUTDOWN_REASON.as_bytes());
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort_all();
    }
}

impl Inner {
    fn peer(&self, id: &NodeId) -> Option<Arc<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn peer_list(&self) -> Vec<Arc<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub async fn send_segment(&self, peer: &NodeId, id: SegmentId) -> SendOutcome {
        let Some(p) = self.peer(peer) else {
            return SendOutcome::Unreachable(format!("{peer} is not a known peer"));
        };
        // A connection closed as a duplicate (both nodes dialled at once) is replaced by the
        // kept one: the attempt is repeated on it, a bounded number of times.
        let mut tries = 0;
        loop {
            tries += 1;
            let live = match self.connection(&p).await {
                Ok(live) => live,
                Err(outcome) => return outcome,
            };
            let in_flight = live.streams.start();
            let conn = live.conn;
            let outcome = self.send_on(&p, &conn, id).await;
            drop(in_flight);
            let replaced = matches!(
                conn.close_reason(),
                Some(quinn::ConnectionError::LocallyClosed)
                    | Some(quinn::ConnectionError::ApplicationClosed(_))
            ) && is_duplicate_close(&conn)
                && !*self.shutdown.borrow();
            if replaced && tries < DUPLICATE_RETRIES_MAX && !outcome.is_delivered() {
                tracing::debug!(peer = %peer, seg_id = %id, "connection replaced mid-send; retrying on the kept one");
                continue;
            }
            tracing::debug!(peer = %peer, seg_id = %id, ?outcome, "send_segment");
            return outcome;
        }
    }

    async fn send_on(&self, p: &Peer, conn: &Connection, id: SegmentId) -> SendOutcome {
        let ctx = &self.ctx;
        let reader = match transfer::open_for_send(ctx, id).await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        // Held until the send ends; the semaphore lives as long as the node and is never closed.
        let _large = match reader.payload_len() > LARGE_SEND_PAYLOAD_BYTES {
            true => p.large_sends.acquire().await.ok(),
            false => None,
        };
        let peer = &p.id;
        let (mut send, mut recv) = match timeout(ctx.cfg.response_timeout(), conn.open_bi()).await {
            Err(_) => return SendOutcome::TimedOut,
            Ok(Err(e)) => return conn_outcome(&e),
            Ok(Ok(streams)) => streams,
        };
        transfer::send_with(ctx, peer, &mut send, &mut recv, reader).await
    }

    /// The running cut-through forward of `id` to `peer`, if any: its outcome once it ends.
    fn forwarding_of(
        &self,
        peer: &NodeId,
        id: SegmentId,
    ) -> Option<watch::Receiver<Option<SendOutcome>>> {
        self.forwarding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(peer.clone(), id))
            .cloned()
    }

    /// Starts forwarding segment `id`, still arriving from `from`, to the peers the hooks name
    /// (cut-through): each forward streams its verified groups as they are published and ends
    /// like any send. At most [`CUT_THROUGH_FORWARDS_MAX`] run at once; a segment not forwarded
    /// now goes with its ordinary relay once stored, and a peer that got it here answers that
    /// relay "have".
    fn forward_early(self: &Arc<Self>, id: SegmentId, from: Option<&NodeId>) {
        for peer in self.ctx.hooks.forward_targets(from, &id) {
            if Some(&peer) == from || self.peer(&peer).is_none() {
                continue;
            }
            let Ok(permit) = self.forwards.clone().try_acquire_owned() else {
                tracing::debug!(seg_id = %id, "cut-through forwards at their limit; relay will send it once stored");
                return;
            };
            let key = (peer.clone(), id);
            let (tx, rx) = watch::channel(None);
            {
                let mut forwarding = self.forwarding.lock().unwrap_or_else(|e| e.into_inner());
                if forwarding.contains_key(&key) {
                    continue;
                }
                forwarding.insert(key.clone(), rx);
            }
            let inner = self.clone();
            // On the node's runtime: an import asks from a thread of its own.
            self.runtime.spawn(async move {
                let outcome = inner.send_segment(&peer, id).await;
                drop(permit);
                tracing::debug!(peer = %peer, seg_id = %id, ?outcome, "cut-through forward ended");
                inner
                    .forwarding
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                let _ = tx.send(Some(outcome));
            });
        }
    }

    fn cfg(&self) -> &NetConfig {
        &self.ctx.cfg
    }

    /// The log key of a remote address: a configured peer's exact address, a stranger's IP.
    fn who(&self, remote: SocketAddr) -> String {
        let remote = canonical(remote);
        if self.filter.is_configured(remote) {
            remote.to_string()
        } else {
            remote.ip().to_string()
        }
    }

    async fn accept_loop(self: Arc<Self>) {
        let accept_unknown = self.cfg().accept_unknown_addresses;
        let answer_window = answer_for(self.cfg().handshake_unauthenticated_timeout());
        while let Some(incoming) = self.endpoint.accept().await {
            let remote = incoming.remote_address();
            let configured = self.filter.is_configured(remote);
            if !configured {
                // The filter drops strangers' datagrams unless they are accepted; and even then
                // the table of addresses answered is bounded.
                let until = Instant::now() + answer_window;
                if !accept_unknown || !self.filter.answer(remote, until) {
                    warn_limited!(self.ctx.limiter, &self.who(remote), "handshake_not_answered", %remote, "handshake from an address that is no configured peer's not answered");
                    incoming.ignore();
                    continue;
                }
            }
            if !incoming.remote_address_validated() {
                // A Retry costs a small stateless packet and proves, when the client comes back
                // with its token, that it receives at its address.
                match incoming.retry() {
                    Ok(()) => bump(&self.ctx.stats.handshakes_retried, 1),
                    Err(e) => e.into_incoming().ignore(),
                }
                continue;
            }
            match self.admission.try_admit(remote, configured) {
                Ok(admitted) => {
                    tokio::spawn(self.clone().handle_incoming(incoming, admitted, configured));
                }
                Err(refusal) => {
                    let (counter, reason, why) = match refusal {
                        Refusal::Budget => (
                            &self.ctx.stats.handshakes_refused_cap,
                            "handshake_cap",
                            "handshake refused: too many unauthenticated handshakes in flight",
                        ),
                        Refusal::Address => (
                            &self.ctx.stats.handshakes_refused_addr_cap,
                            "handshake_addr_cap",
                            "handshake refused: too many handshakes in flight from this address",
                        ),
                    };
                    bump(counter, 1);
                    warn_limited!(self.ctx.limiter, &self.who(remote), reason, %remote, configured, "{why}");
                    if configured {
                        incoming.refuse();
                    } else {
                        incoming.ignore();
                    }
                }
            }
        }
    }

    async fn handle_incoming(
        self: Arc<Self>,
        incoming: quinn::Incoming,
        admitted: Admitted,
        configured: bool,
    ) {
        let remote = incoming.remote_address();
        let began = Instant::now();
        let connecting = match incoming.accept() {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "inbound connection failed before the handshake");
                return;
            }
        };
        let deadline = self.cfg().handshake_unauthenticated_timeout();
        let conn = match timeout(deadline, connecting).await {
            Err(_) => {
                bump(&self.ctx.stats.handshakes_timed_out, 1);
                warn_limited!(self.ctx.limiter, &self.who(remote), "handshake_timeout", %remote, "inbound handshake timed out");
                return;
            }
            Ok(Err(e)) => {
                match conn_outcome(&e) {
                    SendOutcome::HandshakeRefused(reason) => {
                        warn_limited!(self.ctx.limiter, &self.who(remote), "handshake_refused", %remote, inbound = true, %reason, "handshake refused");
                    }
                    _ => {
                        info_limited!(self.ctx.limiter, &self.who(remote), "handshake_failed", %remote, error = %e, "inbound handshake failed");
                    }
                }
                return;
            }
            Ok(Ok(conn)) => conn,
        };
        drop(admitted);
        let id = conn
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
            .ok_or_else(|| "no client certificate".to_owned())
            .and_then(|certs| match certs.first() {
                Some(cert) => node_id_of_cert(cert),
                None => Err("no client certificate".to_owned()),
            });
        match id.as_ref().ok().and_then(|id| self.peer(id)) {
            Some(peer) => {
                tracing::debug!(peer = %peer.id, %remote, "inbound connection");
                if !configured {
                    // A known peer at an unexpected address: answered while its connection
                    // lives.
                    self.filter.hold(remote);
                    let (filter, conn) = (self.filter.clone(), conn.clone());
                    tokio::spawn(async move {
                        conn.closed().await;
                        filter.release(remote);
                    });
                }
                self.adopt(&peer, conn, false, began);
            }
            None => {
                // TLS refuses these first; this is defence in depth.
                let presented = match &id {
                    Ok(id) => id.to_string(),
                    Err(why) => format!("no usable node id ({why})"),
                };
                warn_limited!(self.ctx.limiter, &self.who(remote), "unknown_peer", %remote, %presented, "connection closed: not a known peer");
                conn.close(ConnCode::UnknownPeer.varint(), b"unknown peer");
            }
        }
    }

    async fn dial(&self, peer: &Peer) -> Result<Connection, SendOutcome> {
        let connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), peer.addr, peer.id.as_str())
            .map_err(|e| SendOutcome::Unreachable(e.to_string()))?;
        match timeout(self.cfg().handshake_timeout(), connecting).await {
            Err(_) => Err(SendOutcome::Unreachable(format!(
                "handshake with {} at {} timed out",
                peer.id, peer.addr
            ))),
            Ok(Err(e)) => Err(conn_outcome(&e)),
            Ok(Ok(conn)) => Ok(conn),
        }
    }

    /// Takes an established connection into use, or retires it (see [`crate::supervision`]),
    /// or closes it (over the cap).
    /// `began`: when the handshake reached this node (inbound) or was started (dialled).
    fn adopt(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        conn: Connection,
        opened_by_me: bool,
        began: Instant,
    ) -> bool {
        let lower_is_me = self.id < peer.id;
        let now = Instant::now();
        let streams = Arc::new(Streams::default());
        let adopted = {
            let mut established = peer.established.lock().unwrap_or_else(|e| e.into_inner());
            established.retain(|c| c.close_reason().is_none());
            let current = peer.live();
            let window = self.cfg().handshake_timeout();
            let seen = current.as_ref().map(|c| Current {
                opened_by_me: c.opened_by_me,
                age: now.saturating_duration_since(c.established),
            });
            let new = New {
                opened_by_me,
                began_after_current: current.as_ref().map_or(Duration::ZERO, |c| {
                    began.saturating_duration_since(c.established)
                }),
            };
            let crossing = supervision::crossing_margin(
                current.as_ref().map_or(Duration::ZERO, |c| c.conn.rtt()),
                CROSSING_RTTS,
                Duration::from_millis(CROSSING_MIN_MS),
            );
            let decision = supervision::keep(seen, new, lower_is_me, window, crossing);
            if let Keep::New {
                retire_current: Some(Retire::Now),
            } = decision
            {
                // The side that opened this one gave up the current connection, and any retired
                // one still draining (older still): closing them frees their places under the
                // cap for this one.
                let current_id = current.as_ref().map(|c| c.conn.stable_id());
                established.retain(|c| {
                    if Some(c.stable_id()) == current_id {
                        return false;
                    }
                    bump(&self.ctx.stats.connections_closed, 1);
                    c.close(ConnCode::Duplicate.varint(), b"duplicate");
                    false
                });
            }
            if established.len() >= self.cfg().connections_per_peer_max {
                bump(&self.ctx.stats.connections_closed, 1);
                warn_limited!(self.ctx.limiter, peer.id.as_str(), "connections_cap", peer = %peer.id, "connection closed: connections_per_peer_max reached");
                conn.close(
                    ConnCode::TooManyConnections.varint(),
                    b"too many connections",
                );
                return false;
            }
            established.push(conn.clone());
            match decision {
                Keep::Current { retire_new } => {
                    tracing::debug!(peer = %peer.id, ?retire_new, "duplicate connection retired");
                    self.retire(peer, conn.clone(), streams.clone(), retire_new);
                    false
                }
                Keep::New { retire_current } => {
                    if let (Some(cur), Some(how)) = (current, retire_current) {
                        if how == Retire::Now && !opened_by_me {
                            // A peer that reconnects in a loop must not flood the log.
                            info_limited!(self.ctx.limiter, peer.id.as_str(), "replaced", peer = %peer.id, "a fresh connection replaces an old one (the peer lost it)");
                        } else {
                            tracing::debug!(peer = %peer.id, ?how, "connection replaced");
                        }
                        self.retire(peer, cur.conn, cur.streams, how);
                    }
                    peer.current.send_replace(Some(Live {
                        conn: conn.clone(),
                        opened_by_me,
                        established: now,
                        streams: streams.clone(),
                    }));
                    true
                }
            }
        };
        tokio::spawn(
            self.clone()
                .serve_connection(peer.id.clone(), conn.clone(), streams.clone()),
        );
        if !adopted {
            return false;
        }
        *peer.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // A peer reconnecting in a loop must not flood the log either.
        info_limited!(self.ctx.limiter, peer.id.as_str(), "connected", peer = %peer.id, remote = %conn.remote_address(), opened_by_me, "connected");
        if let Some(fleet) = &self.ctx.fleet {
            tokio::spawn(
                self.clone()
                    .gossip_loop(peer.clone(), fleet.clone(), conn.clone()),
            );
        }
        tokio::spawn(self.clone().catchup_loop(peer.clone(), conn, streams));
        self.ctx.hooks.on_peer_connected(&peer.id);
        true
    }

    /// Closes a connection the duplicate rule does not keep: now, or once no stream has been in
    /// flight on it for [`supervision::retire_grace`].
    fn retire(&self, peer: &Peer, conn: Connection, streams: Arc<Streams>, how: Retire) {
        bump(&self.ctx.stats.connections_closed, 1);
        if how == Retire::Now {
            conn.close(ConnCode::Duplicate.varint(), b"duplicate");
            return;
        }
        let peer_id = peer.id.clone();
        tokio::spawn(async move {
            let min = Duration::from_millis(RETIRE_GRACE_MIN_MS);
            // Each turn waits for a stream that started during the last grace to end: bounded
            // by the streams the peer opens, each bounded by the transfer and response rules.
            loop {
                let idle = streams.idle.notified();
                if streams.busy() {
                    tokio::select! {
                        biased;
                        _ = conn.closed() => return,
                        _ = idle => continue,
                    }
                }
                let started = streams.started.load(Ordering::SeqCst);
                let grace = supervision::retire_grace(conn.rtt(), RETIRE_GRACE_RTTS, min);
                tokio::select! {
                    biased;
                    _ = conn.closed() => return,
                    _ = tokio::time::sleep(grace) => {}
                }
                if !streams.busy() && streams.started.load(Ordering::SeqCst) == started {
                    tracing::debug!(peer = %peer_id, "retired connection idle: closed");
                    conn.close(ConnCode::Duplicate.varint(), b"duplicate");
                    return;
                }
            }
        });
    }

    /// Keeps a connection to `peer` up for the node's lifetime.
    async fn supervise(self: Arc<Self>, peer: Arc<Peer>) {
        let mut shutdown = self.shutdown.subscribe();
        let mut failures: u32 = 0;
        if self.id > peer.id {
            // Let the lower id's dial usually win, so that simultaneous starts rarely make
            // duplicates; cut short if its connection arrives.
            let wait_ms = self.redial_delay(1);
            if !self
                .wait_for_connection(&peer, &mut shutdown, wait_ms)
                .await
            {
                return;
            }
        }
        loop {
            if *shutdown.borrow() {
                return;
            }
            if let Some(live) = peer.live() {
                peer.dialing.store(false, Ordering::SeqCst);
                let since = Instant::now();
                let mut current = peer.current.subscribe();
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => return,
                    _ = live.conn.closed() => {}
                    // The rule put another connection in its place: watch that one.
                    _ = replaced(&mut current, live.conn.stable_id()) => continue,
                }
                peer.dialing.store(true, Ordering::SeqCst);
                let id = live.conn.stable_id();
                peer.current.send_if_modified(|cur| {
                    if cur.as_ref().is_some_and(|c| c.conn.stable_id() == id) {
                        *cur = None;
                        true
                    } else {
                        false
                    }
                });
                let reason = live.conn.close_reason();
                let refused = reason.as_ref().map(conn_outcome);
                let duplicate = is_duplicate_close(&live.conn);
                info_limited!(self.ctx.limiter, peer.id.as_str(), "disconnected", peer = %peer.id, reason = %reason.as_ref().map_or_else(|| "no reason given".into(), crate::transfer::close_words), "disconnected");
                if let Some(o @ SendOutcome::HandshakeRefused(_)) = refused {
                    failures += 1;
                    *peer.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(o);
                } else if since.elapsed() < Duration::from_millis(self.cfg().redial_backoff_base_ms)
                    && !duplicate
                {
                    failures += 1;
                } else {
                    failures = 0;
                }
                let wait_ms = if failures > 0 {
                    self.redial_delay(failures)
                } else if duplicate {
                    // The kept connection is usually being adopted right now.
                    self.cfg().redial_backoff_base_ms.min(1000)
                } else {
                    0
                };
                if wait_ms > 0
                    && !self
                        .wait_for_connection(&peer, &mut shutdown, wait_ms)
                        .await
                {
                    return;
                }
                continue;
            }
            peer.dialing.store(true, Ordering::SeqCst);
            peer.current.send_modify(|_| {});
            let began = Instant::now();
            let dialed = tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                r = self.dial(&peer) => r,
            };
            let failed = match dialed {
                Ok(conn) => {
                    // If an inbound connection was adopted meanwhile, the rule decides.
                    self.adopt(&peer, conn, true, began);
                    false
                }
                Err(SendOutcome::HandshakeRefused(reason)) => {
                    failures += 1;
                    warn_limited!(self.ctx.limiter, &peer.addr.to_string(), "handshake_refused", peer = %peer.id, remote = %peer.addr, inbound = false, %reason, failures, "handshake refused");
                    *peer.last_failure.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(SendOutcome::HandshakeRefused(reason));
                    true
                }
                Err(outcome) => {
                    failures += 1;
                    tracing::info!(peer = %peer.id, addr = %peer.addr, failures, outcome = %outcome, "dial failed");
                    *peer.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
                    true
                }
            };
            if failed || peer.live().is_some() {
                peer.dialing.store(false, Ordering::SeqCst);
            }
            peer.current.send_modify(|_| {});
            if failed {
                let wait_ms = self.redial_delay(failures);
                if !self
                    .wait_for_connection(&peer, &mut shutdown, wait_ms)
                    .await
                {
                    return;
                }
            }
        }
    }

    fn redial_delay(&self, failures: u32) -> u64 {
        let random = self.rng.lock().unwrap_or_else(|e| e.into_inner()).next();
        let cfg = self.cfg();
        redial_delay_ms(
            cfg.redial_backoff_base_ms,
            cfg.redial_backoff_max_ms,
            failures,
            random,
        )
    }

    /// Sleeps `wait_ms`, cut short when a connection with `peer` appears. False at shutdown.
    async fn wait_for_connection(
        &self,
        peer: &Peer,
        shutdown: &mut watch::Receiver<bool>,
        wait_ms: u64,
    ) -> bool {
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        let mut rx = peer.current.subscribe();
        loop {
            if peer.live().is_some() {
                return true;
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => return false,
                changed = rx.changed() => if changed.is_err() { return false },
                _ = tokio::time::sleep_until(deadline) => return true,
            }
        }
    }

    /// The live connection with `peer`, waiting for a dial in progress.
    async fn connection(&self, peer: &Peer) -> Result<Live, SendOutcome> {
        let mut rx = peer.current.subscribe();
        let deadline = Instant::now() + self.cfg().handshake_timeout();
        loop {
            rx.borrow_and_update();
            if let Some(live) = peer.live() {
                return Ok(live);
            }
            if !peer.dialing.load(Ordering::SeqCst) {
                let last = peer
                    .last_failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                return Err(last.unwrap_or_else(|| {
                    SendOutcome::Unreachable(format!("not connected to {}", peer.id))
                }));
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(SendOutcome::Unreachable("node stopped".into())),
                Err(_) => {
                    return Err(SendOutcome::Unreachable(format!(
                        "no connection to {} within the handshake timeout",
                        peer.id
                    )));
                }
            }
        }
    }

    async fn serve_connection(
        self: Arc<Self>,
        peer: NodeId,
        conn: Connection,
        streams: Arc<Streams>,
    ) {
        loop {
            match conn.accept_bi().await {
                Ok((send, recv)) => {
                    let in_flight = streams.start();
                    let handled = self.clone().handle_stream(peer.clone(), send, recv);
                    tokio::spawn(async move {
                        handled.await;
                        drop(in_flight);
                    });
                }
                Err(e) => {
                    tracing::debug!(peer = %peer, reason = %e, "connection ended");
                    return;
                }
            }
        }
    }

    async fn handle_stream(
        self: Arc<Self>,
        peer: NodeId,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let ctx = &self.ctx;
        let first = match transfer::first_frame(ctx.cfg.as_ref(), &mut recv).await {
            Ok(msg) => msg,
            Err(e) => {
                let code = e
                    .as_ref()
                    .and_then(|e| e.stream_code())
                    .unwrap_or(StreamCode::Stalled);
                if e.is_none() || e.as_ref().is_some_and(|e| e.stream_code().is_some()) {
                    bump(&ctx.stats.streams_failed, 1);
                    warn_limited!(ctx.limiter, peer.as_str(), "bad_first_frame", peer = %peer, error = %e.map_or_else(|| "no first frame in time".into(), |e| e.to_string()), "stream ended: bad or missing first frame");
                }
                let _ = send.reset(code.varint());
                let _ = recv.stop(code.varint());
                return;
            }
        };
        match first {
            Msg::Offer { manifest } => {
                let forward = |id: SegmentId| self.forward_early(id, Some(&peer));
                let received =
                    transfer::receive(ctx, &peer, &mut send, &mut recv, manifest, Some(&forward))
                        .await;
                tracing::debug!(peer = %peer, ?received, "offer handled");
            }
            Msg::DigestRequest => {
                catchup::serve(ctx, &peer, &mut send, &mut recv, ServeReq::Digest).await
            }
            msg if gossip::is_request(&msg) && ctx.fleet.is_some() => {
                let fleet = ctx.fleet.as_ref().expect("checked above");
                if let Err(e) = gossip::serve(ctx, fleet, &mut send, msg).await {
                    tracing::debug!(peer = %peer, error = %e, "receipt request not answered");
                }
            }
            Msg::PageRequest { after } => {
                let req = ServeReq::Page { after };
                catchup::serve(ctx, &peer, &mut send, &mut recv, req).await
            }
            Msg::Pull { id } => {
                let req = ServeReq::Pull(SegmentId(id));
                catchup::serve(ctx, &peer, &mut send, &mut recv, req).await
            }
            other => {
                bump(&ctx.stats.streams_failed, 1);
                warn_limited!(ctx.limiter, peer.as_str(), "unexpected_first_frame", peer = %peer, frame = other.name(), "stream ended: unexpected first frame");
                let _ = send.reset(StreamCode::Protocol.varint());
                let _ = recv.stop(StreamCode::Protocol.varint());
            }
        }
    }

    /// Runs catch-up rounds on `conn` while it is `peer`'s current connection: on connect (if
    /// `catchup_on_connect`), then as [`catchup::next_round_in`] decides, and within
    /// `catchup_followup_ms` of a quarantine — never two rounds with one peer closer than
    /// `catchup_followup_ms` (the last round's end is kept across connections).
    async fn catchup_loop(
        self: Arc<Self>,
        peer: Arc<Peer>,
        conn: Connection,
        streams: Arc<Streams>,
    ) {
        let mut shutdown = self.shutdown.subscribe();
        let mut kick = self.kick.subscribe();
        kick.borrow_and_update();
        let followup = Duration::from_millis(self.cfg().catchup_followup_ms);
        let mut next = if self.cfg().catchup_on_connect {
            Some(self.soonest_round(&peer, followup))
        } else {
            catchup::next_round_in(self.cfg(), None).map(|d| Instant::now() + d)
        };
        loop {
            if !peer.is_current(&conn) {
                return;
            }
            if next.is_some_and(|at| at <= Instant::now()) {
                let in_flight = streams.start();
                let report = self.catch_up_on(&peer, &conn).await;
                drop(in_flight);
                match &report {
                    Ok(report) if report.in_sync => {
                        tracing::debug!(peer = %peer.id, "catch-up: in sync")
                    }
                    Ok(report) => {
                        info_limited!(self.ctx.limiter, peer.id.as_str(), "catchup_round", peer = %peer.id, pages = report.pages, ids_seen = report.ids_seen, pulled = report.pulled, stored = report.stored, failed = report.failed, wasted = report.wasted, cut = report.cut.map_or("no", catchup::RoundCut::as_str), "catch-up round")
                    }
                    Err(e) => {
                        info_limited!(self.ctx.limiter, peer.id.as_str(), "catchup_failed", peer = %peer.id, error = %e, "catch-up round failed")
                    }
                }
                next = catchup::next_round_in(self.cfg(), report.as_ref().ok())
                    .map(|d| Instant::now() + d);
                continue;
            }
            let until_next = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // Polled in this order (not at random): runs replay exactly in simulation.
                biased;
                _ = shutdown.changed() => return,
                _ = conn.closed() => return,
                changed = kick.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let soon = self.soonest_round(&peer, followup);
                    next = Some(next.map_or(soon, |n| n.min(soon)));
                }
                _ = until_next => {}
            }
        }
    }

    /// Gossips receipts with `peer` on `conn` while it is the peer's current connection: a round
    /// on connect, then every `receipt_interval_ms` (see [`crate::receipts::gossip`]).
    async fn gossip_loop(self: Arc<Self>, peer: Arc<Peer>, fleet: Arc<Fleet>, conn: Connection) {
        let mut shutdown = self.shutdown.subscribe();
        let interval = Duration::from_millis(self.cfg().receipt_interval_ms);
        loop {
            if !peer.is_current(&conn) {
                return;
            }
            match gossip::pull_round(&self.ctx, &fleet, &conn).await {
                Ok(report) if report.in_sync => {}
                Ok(report) => tracing::debug!(peer = %peer.id, ?report, "receipt gossip round"),
                Err(e) => {
                    info_limited!(self.ctx.limiter, peer.id.as_str(), "receipts_failed", peer = %peer.id, error = %e, "receipt gossip round failed")
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                _ = conn.closed() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Makes this node's own receipts from its store whenever the store changed, and a
    /// liveness receipt when one is due (checked every quarter of `alive_interval_ms`; see
    /// [`Fleet::reconcile`]).
    async fn reconcile_loop(self: Arc<Self>) {
        let Some(fleet) = self.ctx.fleet.clone() else {
            return;
        };
        let mut shutdown = self.shutdown.subscribe();
        let tick = Duration::from_millis(RECEIPT_RECONCILE_MS);
        let idle_max = Duration::from_millis((self.cfg().alive_interval_ms / 4).max(1));
        let mut seen = None;
        let mut last = Instant::now();
        loop {
            let generation = self.ctx.store.writer().generation();
            let changed = seen != Some(generation);
            if changed || last.elapsed() >= idle_max {
                last = Instant::now();
                let (store, f, now) = (
                    self.ctx.store.clone(),
                    fleet.clone(),
                    self.ctx.clock.now_ms(),
                );
                let done = disk::blocking(self.cfg().disk_mode, move || {
                    f.reconcile(&store, now, changed)
                })
                .await;
                match done {
                    // Done: this generation is accounted for. Put off (a full disk): the walk
                    // is owed still.
                    Ok(Ok(Some(_))) => seen = Some(generation),
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "receipts of this node not made"),
                    Err(e) => tracing::warn!(error = %e, "receipts of this node not made"),
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// The earliest a new round with `peer` may start: `gap` after its last one.
    fn soonest_round(&self, peer: &Peer, gap: Duration) -> Instant {
        let now = Instant::now();
        // A round in progress holds the lock; the next one comes after it anyway.
        match peer.catchup.try_lock() {
            Ok(state) => state.last_end.map_or(now, |end| (end + gap).max(now)),
            Err(_) => now + gap,
        }
    }

    async fn catch_up_on(&self, peer: &Peer, conn: &Connection) -> Result<CatchupReport, String> {
        let mut state = peer.catchup.lock().await;
        catchup::pull_round(&self.ctx, &self.skip, &peer.id, conn, &mut state).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redial_delay_grows_and_stays_bounded() {
        for failures in 1..50 {
            for random in [0u64, 1, 7, u64::MAX] {
                let d = redial_delay_ms(500, 30_000, failures, random);
                let full = (500u64 << (failures - 1).min(40)).min(30_000);
                assert!(
                    d >= full / 2 && d <= full,
                    "failures {failures}: {d} not in [{}, {full}]",
                    full / 2
                );
            }
        }
        assert!(redial_delay_ms(500, 30_000, 1, 0) >= 250);
        // Capped at the maximum, jittered in its upper half.
        assert!((15_000..=30_000).contains(&redial_delay_ms(500, 30_000, 30, u64::MAX)));
    }

    #[test]
    fn jitter_is_reproducible_from_the_seed() {
        let mut a = SplitMix64(42);
        let mut b = SplitMix64(42);
        let xs: Vec<u64> = (0..8).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
    }
}
