//! Shared helpers of the network tests: a fleet CA, signed segments, stores, nodes on
//! 127.0.0.1, a raw QUIC client that speaks the protocol badly on purpose.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use net::pki::{ca_issue_valid_between, load_node_identity};
use net::{
    Clock, NetConfig, NetHooks, Node, NodeId, NodeIdentity, NodeSetup, OfferResult, SystemClock,
};
use redb::{ReadableDatabase, TableDefinition, WriteTransaction};
use store::fs::{Fs, RealFs};
use store::keys::{PublisherSecret, TrustedPublishers};
use store::limits::MANIFEST_FORMAT_VERSION;
use store::manifest::{Manifest, SignedManifest, SuccessCondition};
use store::{IngestOptions, IngestOutcome, SegmentId, Store, StoreConfig, Stored};
use tempfile::TempDir;

/// Installs a log subscriber once (RUST_LOG=net=debug to see the node's logs).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Creation time of test manifests: 2026-01-01T00:00:00Z (fixed, so ids are reproducible).
pub const CREATED_AT_MS: u64 = 1_767_225_600_000;

pub fn now_ms() -> u64 {
    SystemClock.now_ms()
}

pub fn id(s: &str) -> NodeId {
    s.parse().expect("node id")
}

/// A fleet CA in a temporary directory, issuing node certificates on demand.
pub struct Fleet {
    pub dir: TempDir,
}

impl Fleet {
    pub fn new() -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        net::ca_init(&dir.path().join("ca")).expect("ca init");
        Fleet { dir }
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.ca_dir().join("ca.crt")
    }

    /// The identity of `node` (issued for 30 days on first use).
    pub fn identity(&self, node: &str) -> NodeIdentity {
        let dir = self.dir.path().join("nodes");
        let cert = dir.join(format!("{node}.crt"));
        if !cert.exists() {
            net::ca_issue(&self.ca_dir(), &id(node), &dir, 30).expect("issue");
        }
        load_node_identity(&self.ca_cert(), &cert, &dir.join(format!("{node}.key"))).expect("load")
    }

    /// An identity whose certificate expired an hour ago (loaded without checks).
    pub fn expired_identity(&self, node: &str) -> NodeIdentity {
        let dir = self.dir.path().join("expired");
        let now = std::time::SystemTime::now();
        ca_issue_valid_between(
            &self.ca_dir(),
            &id(node),
            &dir,
            now - Duration::from_secs(48 * 3600),
            now - Duration::from_secs(3600),
        )
        .expect("issue expired");
        net::pki::load_node_identity_at(
            &self.ca_cert(),
            &dir.join(format!("{node}.crt")),
            &dir.join(format!("{node}.key")),
            now - Duration::from_secs(24 * 3600),
        )
        .expect("load expired")
    }
}

// ------------------------------------------------------------------------------------------
// Segments.

pub fn publisher() -> PublisherSecret {
    PublisherSecret::from_seed([7; 32])
}

pub fn trusted() -> TrustedPublishers {
    std::iter::once(publisher().public()).collect()
}

/// A deterministic payload stream of `len` bytes, distinct per `tag`.
pub struct Gen {
    x: u64,
    left: u64,
    pending: Vec<u8>,
}

impl Gen {
    pub fn new(tag: u64, len: u64) -> Gen {
        Gen {
            x: tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            left: len,
            pending: Vec::new(),
        }
    }
}

impl Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (buf.len() as u64).min(self.left) as usize;
        let mut n = 0;
        while n < want {
            if self.pending.is_empty() {
                for _ in 0..512 {
                    self.x ^= self.x << 13;
                    self.x ^= self.x >> 7;
                    self.x ^= self.x << 17;
                    self.pending.extend_from_slice(&self.x.to_le_bytes());
                }
            }
            let take = (want - n).min(self.pending.len());
            buf[n..n + take].copy_from_slice(&self.pending[..take]);
            self.pending.drain(..take);
            n += take;
        }
        self.left -= want as u64;
        Ok(want)
    }
}

pub fn payload(tag: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    Gen::new(tag, len as u64)
        .read_to_end(&mut out)
        .expect("gen");
    out
}

pub fn signed_for(
    secret: &PublisherSecret,
    name: &str,
    len: u64,
    hash: [u8; 32],
    expires_at_ms: Option<u64>,
) -> SignedManifest {
    let m = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        publisher: secret.public(),
        name: name.to_owned(),
        channel: "default".to_owned(),
        sequence: 1,
        created_at_ms: CREATED_AT_MS,
        expires_at_ms,
        condition: SuccessCondition::AllPeers,
        priority: 128,
        payload_len: len,
        payload_hash: hash,
        kind: store::manifest::SegmentKind::Content,
    };
    SignedManifest::sign(m, secret).expect("sign")
}

/// The outboard of segment (`tag`, `len`): what a sender streams after `Want`, before the
/// payload (empty for a payload of one group or less).
pub fn outboard(tag: u64, len: u64) -> Vec<u8> {
    let mut groups = store::outboard::GroupHasher::new(len);
    let mut source = Gen::new(tag, len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = source.read(&mut buf).expect("gen");
        if n == 0 {
            break;
        }
        groups.update(&buf[..n]).expect("no outboard expected");
    }
    groups.finish().expect("whole payload").1.to_bytes()
}

/// Offers `signed` on a new stream of `conn`, as a raw peer: the streams and the answer.
pub async fn raw_offer(
    conn: &quinn::Connection,
    signed: &SignedManifest,
) -> (quinn::SendStream, quinn::RecvStream, net::wire::Msg) {
    use net::wire::{Msg, encode_frame, read_frame};
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(&encode_frame(&Msg::Offer {
        manifest: signed.encode(),
    }))
    .await
    .expect("offer");
    let answer = tokio::time::timeout(Duration::from_secs(6), read_frame(&mut recv, 1 << 16))
        .await
        .expect("answered in time")
        .expect("a frame");
    (send, recv, answer)
}

/// A signed segment of `len` generated bytes (tag `tag`).
pub fn segment(tag: u64, len: u64) -> SignedManifest {
    let (_, hash) = store::segfile::hash_reader(Gen::new(tag, len)).expect("hash");
    signed_for(&publisher(), &format!("seg-{tag}"), len, hash, None)
}

/// Stores segment (`tag`, `len`) in `store` as an import; returns its id.
pub fn seed(store: &Store, tag: u64, len: u64) -> SegmentId {
    let signed = segment(tag, len);
    let mut header = Vec::new();
    store::segfile::write_header(&mut header, &signed).expect("header");
    let reader = std::io::Cursor::new(header).chain(Gen::new(tag, len));
    match store
        .ingest_reader(reader, &IngestOptions::import(), now_ms(), |_, _| Ok(()))
        .expect("seed ingest")
    {
        IngestOutcome::Stored(s) => s.id,
        IngestOutcome::AlreadyHave { id, .. } => id,
    }
}

pub fn open_store(dir: &Path, ceiling_bytes: u64) -> Store {
    open_store_trusting(dir, ceiling_bytes, trusted())
}

pub fn open_store_trusting(dir: &Path, ceiling_bytes: u64, trusted: TrustedPublishers) -> Store {
    let mut cfg = StoreConfig::new(dir, ceiling_bytes, trusted);
    cfg.min_free_bytes = 0;
    let fs: Arc<dyn Fs> = Arc::new(RealFs);
    Store::open(cfg, fs, now_ms()).expect("open store").0
}

pub fn stored_ids(store: &Store) -> Vec<SegmentId> {
    store
        .list()
        .expect("list")
        .into_iter()
        .map(|s| s.id)
        .collect()
}

/// `.seg` files under the store's `segments/` directory (fanned out by id prefix).
pub fn seg_files(dir: &Path) -> usize {
    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| {
                        let path = e.path();
                        if path.is_dir() {
                            count(&path)
                        } else {
                            usize::from(path.extension().is_some_and(|x| x == "seg"))
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    count(&dir.join("segments"))
}

/// Temp files under the store's data dir (partials and abandoned ingests).
pub fn tmp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("tmp"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------------
// Hooks that record, and write a row in the ingest's own transaction.

pub const TEST_JOBS: TableDefinition<&[u8; 32], &str> = TableDefinition::new("test-jobs-v1");

#[derive(Default)]
pub struct RecHooks {
    pub stored_in_txn: Mutex<Vec<(SegmentId, String)>>,
    pub received: Mutex<Vec<(String, SegmentId)>>,
    pub delivered: Mutex<Vec<(String, SegmentId)>>,
    pub connected: Mutex<Vec<String>>,
    pub offers: Mutex<Vec<(String, OfferResult)>>,
    pub fail_on_stored: AtomicBool,
    /// Peers to forward a segment to while it arrives (cut-through); none by default.
    pub forward_to: Mutex<Vec<String>>,
}

impl NetHooks for RecHooks {
    fn on_stored(
        &self,
        txn: &WriteTransaction,
        stored: &Stored<()>,
        from: &NodeId,
    ) -> Result<(), redb::Error> {
        if self.fail_on_stored.load(Ordering::SeqCst) {
            return Err(redb::Error::TransactionInProgress);
        }
        txn.open_table(TEST_JOBS)?
            .insert(&stored.id.0, from.as_str())?;
        self.stored_in_txn
            .lock()
            .unwrap()
            .push((stored.id, from.to_string()));
        Ok(())
    }

    fn on_received(&self, from: &NodeId, id: &SegmentId) {
        self.received.lock().unwrap().push((from.to_string(), *id));
    }

    fn on_delivered(&self, to: &NodeId, id: &SegmentId) {
        self.delivered.lock().unwrap().push((to.to_string(), *id));
    }

    fn on_peer_connected(&self, peer: &NodeId) {
        self.connected.lock().unwrap().push(peer.to_string());
    }

    fn on_offer(&self, from: &NodeId, result: OfferResult) {
        self.offers.lock().unwrap().push((from.to_string(), result));
    }

    fn forward_targets(&self, from: Option<&NodeId>, _id: &SegmentId) -> Vec<NodeId> {
        self.forward_to
            .lock()
            .unwrap()
            .iter()
            .filter(|p| from.is_none_or(|f| p.as_str() != f.as_str()))
            .map(|p| id(p))
            .collect()
    }
}

/// The rows the test hook wrote (segment id → source), as committed.
pub fn test_jobs(store: &Store) -> BTreeMap<SegmentId, String> {
    let read = store.database().begin_read().expect("read");
    let Ok(table) = read.open_table(TEST_JOBS) else {
        return BTreeMap::new();
    };
    use redb::ReadableTable;
    table
        .iter()
        .expect("iter")
        .map(|e| {
            let (k, v) = e.expect("row");
            (SegmentId(*k.value()), v.value().to_owned())
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// Nodes.

/// Short timeouts so failure tests run fast.
pub fn quick(cfg: &mut NetConfig) {
    cfg.handshake_timeout_ms = 3_000;
    cfg.idle_timeout_ms = 5_000;
    cfg.keep_alive_interval_ms = 1_000;
    cfg.stall_timeout_ms = 1_000;
    cfg.response_timeout_ms = 3_000;
    cfg.redial_backoff_base_ms = 100;
    cfg.redial_backoff_max_ms = 1_000;
    cfg.catchup_interval_ms = 0;
    cfg.catchup_on_connect = false;
    cfg.rng_seed = Some(7);
}

/// A node's parts before it starts: its store (which tests may fill first) and its socket.
pub struct Planned {
    pub name: String,
    pub data: TempDir,
    pub store: Store,
    pub socket: Arc<dyn quinn::AsyncUdpSocket>,
    pub addr: SocketAddr,
    pub clock: Arc<dyn Clock>,
}

pub fn plan(names: &[&str], ceiling_bytes: u64) -> Vec<Planned> {
    names
        .iter()
        .map(|n| plan_one(n, |dir| open_store(dir, ceiling_bytes)))
        .collect()
}

/// One node's parts, with a store opened by `open` in its data directory.
pub fn plan_one(name: &str, open: impl FnOnce(&Path) -> Store) -> Planned {
    let data = tempfile::tempdir().expect("tempdir");
    let store = open(data.path());
    let socket = net::bind_udp("127.0.0.1:0".parse().unwrap(), 8 << 20).expect("bind");
    let addr = socket.local_addr().expect("addr");
    Planned {
        name: name.to_owned(),
        data,
        store,
        socket,
        addr,
        clock: Arc::new(SystemClock),
    }
}

/// A clock `offset_ms` ahead of the system clock.
#[derive(Debug)]
pub struct AheadClock(pub u64);

impl Clock for AheadClock {
    fn now_ms(&self) -> u64 {
        SystemClock.now_ms() + self.0
    }
}

pub struct TestNode {
    pub node: Node,
    pub store: Store,
    pub hooks: Arc<RecHooks>,
    pub data: TempDir,
    pub addr: SocketAddr,
}

impl TestNode {
    pub fn id(&self) -> NodeId {
        self.node.id().clone()
    }
}

/// Starts the planned nodes; `links` are (a, b) pairs that know each other.
pub fn start(
    fleet: &Fleet,
    planned: Vec<Planned>,
    links: &[(&str, &str)],
    tweak: impl Fn(&mut NetConfig),
) -> Vec<TestNode> {
    let addrs: BTreeMap<String, SocketAddr> =
        planned.iter().map(|p| (p.name.clone(), p.addr)).collect();
    planned
        .into_iter()
        .map(|p| {
            let mut known = BTreeMap::new();
            for (a, b) in links {
                if *a == p.name {
                    known.insert(id(b), addrs[*b]);
                }
                if *b == p.name {
                    known.insert(id(a), addrs[*a]);
                }
            }
            let mut cfg = NetConfig::new(id(&p.name), p.addr, known);
            quick(&mut cfg);
            tweak(&mut cfg);
            let hooks = Arc::new(RecHooks::default());
            let mut setup = NodeSetup::new(cfg, fleet.identity(&p.name), p.store.clone());
            setup.hooks = hooks.clone();
            setup.socket = Some(p.socket);
            setup.clock = p.clock;
            let node = Node::start(setup).expect("start node");
            TestNode {
                node,
                store: p.store,
                hooks,
                data: p.data,
                addr: p.addr,
            }
        })
        .collect()
}

/// Polls `cond` every 20 ms for at most `within`.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------------------------------
// A raw client: real QUIC and mTLS, but the test writes whatever bytes it likes.

/// A UDP socket on 127.0.0.1 for a raw client, bound before the nodes start: a node hears only
/// the addresses it lists for its peers, so a test lists this one (for the raw client's id, or
/// for a peer that does not run) to reach the node's TLS at all.
#[derive(Clone)]
pub struct RawSocket {
    pub socket: Arc<dyn quinn::AsyncUdpSocket>,
    pub addr: SocketAddr,
}

pub fn raw_socket() -> RawSocket {
    let socket = net::bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).expect("bind");
    let addr = socket.local_addr().expect("addr");
    RawSocket { socket, addr }
}

pub struct Raw {
    pub endpoint: quinn::Endpoint,
    pub config: quinn::ClientConfig,
}

impl Raw {
    /// A client endpoint presenting `identity`'s certificate.
    pub fn new(identity: &NodeIdentity) -> Raw {
        let tls = net::tls::client_config(identity, Arc::new(SystemClock)).expect("client tls");
        Raw::with_tls(tls)
    }

    pub fn with_tls(tls: rustls::ClientConfig) -> Raw {
        let socket = net::bind_udp("127.0.0.1:0".parse().unwrap(), 8 << 20).expect("bind");
        Raw::with_tls_on(tls, socket)
    }

    /// A raw client presenting `identity` from a socket bound beforehand (see [`RawSocket`]).
    pub fn on(identity: &NodeIdentity, socket: &RawSocket) -> Raw {
        Raw::with_socket(identity, socket.socket.clone())
    }

    /// A raw client on a socket of the test's choosing (the socket seam).
    pub fn with_socket(identity: &NodeIdentity, socket: Arc<dyn quinn::AsyncUdpSocket>) -> Raw {
        let tls = net::tls::client_config(identity, Arc::new(SystemClock)).expect("client tls");
        Raw::with_tls_on(tls, socket)
    }

    pub fn with_tls_on(tls: rustls::ClientConfig, socket: Arc<dyn quinn::AsyncUdpSocket>) -> Raw {
        Raw::with_tls_tuned(tls, socket, |_| {})
    }

    /// A raw client at `socket` whose QUIC transport (windows, timeouts) `tweak` adjusts.
    pub fn on_tuned(
        identity: &NodeIdentity,
        socket: &RawSocket,
        tweak: impl FnOnce(&mut NetConfig),
    ) -> Raw {
        let tls = net::tls::client_config(identity, Arc::new(SystemClock)).expect("client tls");
        Raw::with_tls_tuned(tls, socket.socket.clone(), tweak)
    }

    fn with_tls_tuned(
        tls: rustls::ClientConfig,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        tweak: impl FnOnce(&mut NetConfig),
    ) -> Raw {
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        let mut cfg = NetConfig::new(id("raw"), "127.0.0.1:0".parse().unwrap(), BTreeMap::new());
        quick(&mut cfg);
        tweak(&mut cfg);
        config.transport_config(cfg.transport_config());
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .expect("endpoint");
        Raw { endpoint, config }
    }

    /// Connects to `addr` expecting the server to be `server`; bounded by 5 s.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server: &str,
    ) -> Result<quinn::Connection, quinn::ConnectionError> {
        let connecting = self
            .endpoint
            .connect_with(self.config.clone(), addr, server)
            .expect("connect");
        tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .expect("handshake bounded")
    }
}

/// Does an exchange on `conn` get through to the application? (Open a stream, send a digest
/// request, read the answer.) Bounded by 3 s.
pub async fn app_data_gets_through(conn: &quinn::Connection) -> bool {
    let attempt = async {
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        send.write_all(&net::wire::encode_frame(&net::wire::Msg::DigestRequest))
            .await
            .ok()?;
        send.finish().ok()?;
        net::wire::read_frame(&mut recv, 1 << 16).await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), attempt).await,
        Ok(Some(net::wire::Msg::Digest { .. }))
    )
}

// ------------------------------------------------------------------------------------------
// The socket seam: a UDP socket that can be cut off (every packet dropped both ways).

#[derive(Debug)]
pub struct CuttableSocket {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    pub cut: AtomicBool,
    /// Drop only what arrives (sending still works).
    pub deaf: AtomicBool,
    /// Hear only QUIC Retry packets: a client that proves its address, then never hears the
    /// server's handshake (it holds the server's handshake state until its deadline).
    pub hear_only_retry: AtomicBool,
    /// Datagrams that arrived (before any dropping).
    pub received: AtomicU64,
    /// Every destination a datagram was sent to.
    pub sent_to: Mutex<std::collections::BTreeSet<SocketAddr>>,
}

/// A QUIC Retry packet: long header (0x80), fixed bit (0x40), type 3 (0x30).
pub fn is_quic_retry(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| b & 0xf0 == 0xf0)
}

impl CuttableSocket {
    pub fn wrap(inner: Arc<dyn quinn::AsyncUdpSocket>) -> Arc<CuttableSocket> {
        Arc::new(CuttableSocket {
            inner,
            cut: AtomicBool::new(false),
            deaf: AtomicBool::new(false),
            hear_only_retry: AtomicBool::new(false),
            received: AtomicU64::new(0),
            sent_to: Mutex::new(Default::default()),
        })
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

impl quinn::AsyncUdpSocket for CuttableSocket {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        self.sent_to.lock().unwrap().insert(transmit.destination);
        if self.cut.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            match self.inner.poll_recv(cx, bufs, meta) {
                std::task::Poll::Ready(Ok(n)) => {
                    self.received.fetch_add(n as u64, Ordering::SeqCst);
                    if self.cut.load(Ordering::SeqCst) || self.deaf.load(Ordering::SeqCst) {
                        continue;
                    }
                    if self.hear_only_retry.load(Ordering::SeqCst) {
                        // Keep the Retry packets (moved to the front with their metadata).
                        let mut kept = 0;
                        for i in 0..n {
                            if is_quic_retry(&bufs[i][..meta[i].len]) {
                                bufs.swap(i, kept);
                                meta.swap(i, kept);
                                kept += 1;
                            }
                        }
                        if kept == 0 {
                            continue;
                        }
                        return std::task::Poll::Ready(Ok(kept));
                    }
                    return std::task::Poll::Ready(Ok(n));
                }
                other => return other,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
