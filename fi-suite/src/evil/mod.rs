//! The evil peer: a peer of the fleet that speaks the wire protocol badly on purpose.
//!
//! It holds a VALID certificate of the fleet's CA (issued with `edged ca issue --node evil`,
//! the operator's own tool) and its victim lists it in `known_peers` at the address of the evil
//! peer's own UDP socket (a node hears only configured addresses, INV-27). So the victim's TLS
//! lets it in (INV-09), and everything that follows is the wire protocol's to defend: bad
//! frames, lying manifests and payloads, trickles, floods and endless catch-up pages.
//!
//! It is built from the product's own crates — `net` (`quinn`, the mutual-TLS configurations,
//! the frame codec) and `store` (manifests, signatures) — and runs on the scenario's tokio
//! runtime. It has two halves:
//!
//! - **as a client** ([`exchange`], [`offer`], [`push_payload`], [`trickle`], [`request`]): the
//!   streams it opens on its connections to the victim, each returning what the victim did
//!   about it ([`StreamEnd`]) — the evidence that a fault was really sent and answered;
//! - **as a server** ([`serve`]): what it answers on the streams the victim opens (the victim's
//!   relay pushes to it, and pulls from it in catch-up), by a [`serve::Mode`], counting what it
//!   sees ([`serve::Observed`]).
//!
//! Everything it does is bounded in time ([`ANSWER_TIMEOUT_MS`], [`CONNECT_TIMEOUT_MS`]) and
//! in size; it never panics on what the victim sends.

pub mod craft;
pub mod logs;
pub mod serve;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use net::quinn::{self, Connection, RecvStream, SendStream};
use net::wire::{Msg, WireError, encode_frame, read_frame};
use tokio::runtime::Runtime;
use tokio::time::{Instant, timeout};

use crate::fleet::{CLI_TIMEOUT_MS, Fleet, Tuning};

/// The evil peer's node id, as its certificate names it.
pub const EVIL_ID: &str = "evil";
/// Last octet of the evil peer's address in the run's /24 (`Ctx::ip`): apart from the nodes'
/// (10 and up) and the proxies' (100 and up), so a log line or a capture tells it apart.
pub const EVIL_IP_LAST: u8 = 66;
/// Last octet of the address of sockets that are nobody's configured address (a stranger
/// flooding handshakes).
pub const STRANGER_IP_LAST: u8 = 67;
/// UDP buffers of the evil peer's socket.
pub const EVIL_UDP_BUFFER_BYTES: usize = 1 << 20;
/// Longest the evil peer waits for the victim to answer one exchange (open a stream, answer a
/// frame, reset a stream).
pub const ANSWER_TIMEOUT_MS: u64 = 5_000;
/// Longest a handshake with the victim may take.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Largest frame body the evil peer reads from the victim.
pub const EVIL_FRAME_BYTES_MAX: usize = net::limits::FRAME_BYTES_MAX_DEFAULT;
/// Bytes written per step of a trickle: small, so a trickle is a steady flow of tiny packets.
pub const TRICKLE_STEP_BYTES_MAX: usize = 256;
/// Interval between two steps of a trickle.
pub const TRICKLE_STEP_MS: u64 = 100;
/// Longest the evil peer spends writing one payload (a few MiB on loopback take far less; a
/// victim that neither reads nor stops the stream is reported, not waited for).
pub const PAYLOAD_WRITE_TIMEOUT_MS: u64 = 20_000;

/// What can go wrong running the evil peer itself (not what the victim does to it: that is a
/// [`StreamEnd`]).
#[derive(Debug, thiserror::Error)]
pub enum EvilError {
    #[error("cannot bind the evil peer's UDP socket at {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot issue the evil peer's certificate: {0}")]
    Issue(String),
    #[error("cannot load the evil peer's identity: {0}")]
    Identity(#[from] net::PkiError),
    #[error("TLS configuration of the evil peer: {0}")]
    Tls(#[from] net::tls::TlsError),
    #[error("QUIC endpoint of the evil peer: {0}")]
    Endpoint(std::io::Error),
    /// The handshake failed: the victim (or QUIC) said no.
    #[error("cannot dial {server} at {addr}: {reason}")]
    Dial {
        server: String,
        addr: SocketAddr,
        reason: String,
    },
    /// Nothing answered the handshake within the dialer's limit.
    #[error("no handshake with {server} at {addr} within {limit_ms} ms")]
    DialTimeout {
        server: String,
        addr: SocketAddr,
        limit_ms: u64,
    },
}

/// The evil peer's socket, bound before the fleet is made: the victim's config must name its
/// address.
#[derive(Debug)]
pub struct EvilSocket {
    socket: Arc<dyn quinn::AsyncUdpSocket>,
    pub addr: SocketAddr,
}

impl EvilSocket {
    /// Binds a socket on `ip` at a free port, inside `rt` (the socket registers with its
    /// reactor).
    pub fn bind(rt: &Runtime, ip: Ipv4Addr) -> Result<EvilSocket, EvilError> {
        let want = SocketAddr::new(IpAddr::V4(ip), 0);
        let _entered = rt.enter();
        let socket = net::bind_udp(want, EVIL_UDP_BUFFER_BYTES)
            .map_err(|source| EvilError::Bind { addr: want, source })?;
        let addr = socket
            .local_addr()
            .map_err(|source| EvilError::Bind { addr: want, source })?;
        Ok(EvilSocket { socket, addr })
    }
}

/// The evil peer: one QUIC endpoint (client and server) on its socket, presenting its valid
/// certificate, serving the victim's streams by its [`serve::Mode`].
#[derive(Debug)]
pub struct EvilPeer {
    pub addr: SocketAddr,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    handle: tokio::runtime::Handle,
    pub served: Arc<serve::Served>,
}

impl EvilPeer {
    /// Issues the evil peer's certificate with the fleet's CA (`edged ca issue`, in the
    /// fleet's `evil/` directory), and starts its endpoint on `socket`, accepting connections
    /// from the fleet's nodes and answering their streams by `mode`.
    pub fn start(
        rt: &Runtime,
        socket: EvilSocket,
        fleet: &Fleet,
        mode: serve::Mode,
    ) -> Result<EvilPeer, EvilError> {
        let dir = fleet.dir.join(EVIL_ID);
        let ca = fleet.dir.join("ca");
        issue_certificate(&fleet.bin, &ca, &dir)?;
        let identity = net::load_node_identity(
            &ca.join("ca.crt"),
            &dir.join(format!("{EVIL_ID}.crt")),
            &dir.join(format!("{EVIL_ID}.key")),
        )?;
        let known = fleet
            .nodes
            .iter()
            .filter_map(|n| Some((n.id.parse().ok()?, n.addr)))
            .collect();
        EvilPeer::with_identity(rt, socket, &identity, known, &fleet.spec.tuning, mode)
    }

    /// Starts the evil peer's endpoint on `socket` with `identity`, accepting the nodes of
    /// `known` (their certificates must name them) with the fleet's timings.
    pub fn with_identity(
        rt: &Runtime,
        socket: EvilSocket,
        identity: &net::NodeIdentity,
        known: BTreeMap<net::NodeId, SocketAddr>,
        tuning: &Tuning,
        mode: serve::Mode,
    ) -> Result<EvilPeer, EvilError> {
        let transport = transport(&identity.id, socket.addr, known.clone(), tuning);
        let clock: Arc<dyn net::Clock> = Arc::new(net::SystemClock);
        let server_tls =
            net::tls::server_config(identity, known.keys().cloned().collect(), clock.clone())?;
        let client_tls = net::tls::client_config(identity, clock)?;
        let (server_tls, client_tls) = net::tls::quic_configs(server_tls, client_tls)?;
        let mut server = quinn::ServerConfig::with_crypto(server_tls);
        server.transport_config(transport.clone());
        let mut client = quinn::ClientConfig::new(client_tls);
        client.transport_config(transport);
        let _entered = rt.enter();
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server),
            socket.socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(EvilError::Endpoint)?;
        let served = Arc::new(serve::Served::new(mode));
        rt.spawn(serve::accept_loop(endpoint.clone(), served.clone()));
        Ok(EvilPeer {
            addr: socket.addr,
            endpoint,
            client,
            handle: rt.handle().clone(),
            served,
        })
    }

    /// Dials `server` (a node id) at `addr` from the evil peer's socket, and serves what the
    /// victim opens on that connection too.
    pub async fn connect(&self, addr: SocketAddr, server: &str) -> Result<Connection, EvilError> {
        let conn = self.dialer().connect(addr, server).await?;
        self.handle
            .spawn(serve::serve_connection(conn.clone(), self.served.clone()));
        Ok(conn)
    }

    /// Dials from the evil peer's socket without serving the connection (a connection flood:
    /// the victim's streams on it go unanswered, as a flooder's would). Cheap to clone into
    /// tasks.
    pub fn dialer(&self) -> Dialer {
        Dialer {
            endpoint: self.endpoint.clone(),
            client: self.client.clone(),
            limit: Duration::from_millis(CONNECT_TIMEOUT_MS),
        }
    }

    /// A client-only endpoint presenting the evil peer's certificate from `socket`, an address
    /// the victim does not list (a stranger), giving up on a handshake after `limit`.
    pub fn stranger(
        &self,
        rt: &Runtime,
        socket: EvilSocket,
        limit: Duration,
    ) -> Result<Dialer, EvilError> {
        let _entered = rt.enter();
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            None,
            socket.socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(EvilError::Endpoint)?;
        Ok(Dialer {
            endpoint,
            client: self.client.clone(),
            limit,
        })
    }

    /// Closes every connection at once.
    pub fn close(&self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"evil done");
    }
}

impl Drop for EvilPeer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Dials the victim from one socket, presenting the evil peer's certificate.
#[derive(Debug, Clone)]
pub struct Dialer {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    limit: Duration,
}

impl Dialer {
    /// Dials `server` (a node id) at `addr`, giving up after the dialer's limit.
    pub async fn connect(&self, addr: SocketAddr, server: &str) -> Result<Connection, EvilError> {
        let failed = |reason: String| EvilError::Dial {
            server: server.to_owned(),
            addr,
            reason,
        };
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), addr, server)
            .map_err(|e| failed(e.to_string()))?;
        match timeout(self.limit, connecting).await {
            Err(_) => Err(EvilError::DialTimeout {
                server: server.to_owned(),
                addr,
                limit_ms: self.limit.as_millis() as u64,
            }),
            Ok(Err(e)) => Err(failed(e.to_string())),
            Ok(Ok(conn)) => Ok(conn),
        }
    }

    /// Closes this dialer's endpoint (every connection it made).
    pub fn close(&self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"dialer done");
    }
}

/// `edged ca issue --ca CA --node evil --out DIR`: the operator's tool makes the evil peer's
/// certificate, valid under the fleet's CA.
fn issue_certificate(bin: &Path, ca: &Path, out: &Path) -> Result<(), EvilError> {
    let mut cmd = Command::new(bin);
    cmd.args(["ca", "issue", "--ca"])
        .arg(ca)
        .args(["--node", EVIL_ID, "--out"])
        .arg(out)
        .env_remove("EDGED_CONFIG");
    let out = crate::proc::run_bounded(cmd, Duration::from_millis(CLI_TIMEOUT_MS))
        .map_err(|e| EvilError::Issue(format!("{e:#}")))?;
    if !out.status.success() {
        return Err(EvilError::Issue(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

/// The QUIC transport of the evil peer: the fleet's timings (so its connections live as long
/// as an honest peer's), the product's defaults otherwise.
fn transport(
    id: &net::NodeId,
    addr: SocketAddr,
    known: BTreeMap<net::NodeId, SocketAddr>,
    tuning: &Tuning,
) -> Arc<quinn::TransportConfig> {
    let mut cfg = net::NetConfig::new(id.clone(), addr, known);
    cfg.idle_timeout_ms = tuning.idle_timeout_ms;
    cfg.keep_alive_interval_ms = tuning.keep_alive_interval_ms;
    cfg.transport_config()
}

/// What the victim did with one stream the evil peer opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// It answered this frame.
    Frame(Msg),
    /// It reset its sending side, or stopped reading ours, with this application code
    /// ([`net::wire::StreamCode`]).
    Reset(u64),
    /// It finished its side without a frame.
    Finished,
    /// It answered something that is not a frame of the protocol.
    Garbled(String),
    /// Nothing within [`ANSWER_TIMEOUT_MS`].
    Silent,
    /// The connection is gone.
    Lost(String),
    /// The stream could not even be opened (no stream credit within the bound).
    NotOpened,
}

impl StreamEnd {
    fn of_wire(e: WireError) -> StreamEnd {
        match e {
            WireError::Reset(code) | WireError::Stopped(code) => StreamEnd::Reset(code),
            WireError::Finished => StreamEnd::Finished,
            WireError::ConnectionLost(c) => StreamEnd::Lost(c.to_string()),
            other => StreamEnd::Garbled(other.to_string()),
        }
    }

    /// Short text for details.
    pub fn describe(&self) -> String {
        match self {
            StreamEnd::Frame(Msg::Reject { reason, .. }) => format!("Reject({reason})"),
            StreamEnd::Frame(Msg::Want { offset }) => format!("Want({offset})"),
            StreamEnd::Frame(m) => m.name().to_owned(),
            StreamEnd::Reset(code) => format!("stream reset (code {code})"),
            StreamEnd::Finished => "finished without a frame".into(),
            StreamEnd::Garbled(e) => format!("garbled answer: {e}"),
            StreamEnd::Silent => format!("no answer within {ANSWER_TIMEOUT_MS} ms"),
            StreamEnd::Lost(e) => format!("connection lost: {e}"),
            StreamEnd::NotOpened => "no stream could be opened".into(),
        }
    }
}

fn answer_timeout() -> Duration {
    Duration::from_millis(ANSWER_TIMEOUT_MS)
}

/// Opens a stream within the bound.
pub async fn open(conn: &Connection) -> Result<(SendStream, RecvStream), StreamEnd> {
    match timeout(answer_timeout(), conn.open_bi()).await {
        Err(_) => Err(StreamEnd::NotOpened),
        Ok(Err(e)) => Err(StreamEnd::Lost(e.to_string())),
        Ok(Ok(streams)) => Ok(streams),
    }
}

/// Reads the victim's next frame on `recv` within the bound.
pub async fn answer(recv: &mut RecvStream) -> StreamEnd {
    match timeout(answer_timeout(), read_frame(recv, EVIL_FRAME_BYTES_MAX)).await {
        Err(_) => StreamEnd::Silent,
        Ok(Ok(msg)) => StreamEnd::Frame(msg),
        Ok(Err(e)) => StreamEnd::of_wire(e),
    }
}

/// Writes `bytes` on a new stream (finishing it if `finish`), and returns what the victim did:
/// its first frame, or how it ended the stream.
pub async fn exchange(conn: &Connection, bytes: &[u8], finish: bool) -> StreamEnd {
    let (mut send, mut recv) = match open(conn).await {
        Ok(s) => s,
        Err(end) => return end,
    };
    if let Err(end) = write(&mut send, bytes, answer_timeout()).await {
        return end;
    }
    if finish {
        let _ = send.finish();
    }
    answer(&mut recv).await
}

/// Writes all of `bytes` within `limit`: how the victim ended the stream otherwise.
pub async fn write(send: &mut SendStream, bytes: &[u8], limit: Duration) -> Result<(), StreamEnd> {
    match timeout(limit, send.write_all(bytes)).await {
        Err(_) => Err(StreamEnd::Silent),
        Ok(Err(e)) => Err(write_end(e)),
        Ok(Ok(())) => Ok(()),
    }
}

fn write_end(e: quinn::WriteError) -> StreamEnd {
    match e {
        quinn::WriteError::Stopped(code) => StreamEnd::Reset(code.into_inner()),
        quinn::WriteError::ConnectionLost(c) => StreamEnd::Lost(c.to_string()),
        other => StreamEnd::Garbled(other.to_string()),
    }
}

/// One request frame on a new stream and the victim's answer (e.g. `DigestRequest`: is the
/// connection still served?).
pub async fn request(conn: &Connection, msg: &Msg) -> StreamEnd {
    exchange(conn, &encode_frame(msg), true).await
}

/// A transfer the evil peer offered: its streams, after the victim's answer to the offer.
#[derive(Debug)]
pub struct Offered {
    pub send: SendStream,
    pub recv: RecvStream,
    pub answer: StreamEnd,
}

/// Sends `Offer(manifest)` on a new stream and reads the victim's answer.
pub async fn offer(conn: &Connection, manifest: &[u8]) -> Result<Offered, StreamEnd> {
    let (mut send, mut recv) = open(conn).await?;
    let frame = encode_frame(&Msg::Offer {
        manifest: manifest.to_vec(),
    });
    write(&mut send, &frame, answer_timeout()).await?;
    let answer = answer(&mut recv).await;
    Ok(Offered { send, recv, answer })
}

/// After `Want`: writes `payload` and then `extra` (bytes beyond the declared length), finishes
/// the stream, and returns the victim's final answer (or how it ended the stream).
pub async fn push_payload(t: &mut Offered, payload: &[u8], extra: &[u8]) -> StreamEnd {
    let mut stopped = None;
    for part in [payload, extra] {
        if part.is_empty() || stopped.is_some() {
            continue;
        }
        let limit = Duration::from_millis(PAYLOAD_WRITE_TIMEOUT_MS);
        if let Err(end) = write(&mut t.send, part, limit).await {
            stopped = Some(end);
        }
    }
    let _ = t.send.finish();
    match answer(&mut t.recv).await {
        StreamEnd::Frame(m) => StreamEnd::Frame(m),
        other => stopped.unwrap_or(other),
    }
}

/// How a trickle ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trickled {
    /// Payload bytes written.
    pub sent: u64,
    /// How long it went on, in milliseconds.
    pub lasted_ms: u64,
    /// What the victim did: the code it stopped the stream with, or the frame it said last.
    pub end: StreamEnd,
    /// The frame the victim sent when it stopped the stream, if any (`Busy` after a takeover).
    pub said: Option<Msg>,
}

/// After `Want`: writes `payload` at about `bytes_per_s`, in small steps, until the victim
/// stops the stream, the payload is all sent, or `limit` passes.
pub async fn trickle(
    t: &mut Offered,
    payload: &[u8],
    bytes_per_s: u64,
    limit: Duration,
) -> Trickled {
    let started = Instant::now();
    let per_step = (bytes_per_s * TRICKLE_STEP_MS / 1000).clamp(1, TRICKLE_STEP_BYTES_MAX as u64);
    // Cannot truncate: at most TRICKLE_STEP_BYTES_MAX.
    let per_step = per_step as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(TRICKLE_STEP_MS));
    let mut sent = 0usize;
    let end = loop {
        tick.tick().await;
        if started.elapsed() >= limit {
            break StreamEnd::Silent;
        }
        if sent >= payload.len() {
            let _ = t.send.finish();
            break answer(&mut t.recv).await;
        }
        let to = (sent + per_step).min(payload.len());
        // A write that finds the stream stopped fails at once; one that finds no credit waits,
        // which is also how the trickle learns that the victim stopped reading.
        match timeout(answer_timeout(), t.send.write_all(&payload[sent..to])).await {
            Ok(Ok(())) => sent = to,
            Ok(Err(e)) => break write_end(e),
            Err(_) => break StreamEnd::Silent,
        }
    };
    // The victim may have said why it stopped the stream (`Busy` to a preempted sender).
    let said = match (
        &end,
        timeout(
            answer_timeout(),
            read_frame(&mut t.recv, EVIL_FRAME_BYTES_MAX),
        )
        .await,
    ) {
        (StreamEnd::Frame(m), _) => Some(m.clone()),
        (_, Ok(Ok(m))) => Some(m),
        _ => None,
    };
    Trickled {
        sent: sent as u64,
        lasted_ms: started.elapsed().as_millis() as u64,
        end,
        said,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::serve::Mode;
    use super::*;

    /// An evil peer and a client presenting `node-1`'s certificate of the same CA (what a
    /// victim's dial looks like), both on loopback.
    struct Pair {
        evil: EvilPeer,
        node: Dialer,
        _pki: tempfile::TempDir,
        // Last: the endpoints live on it.
        rt: Runtime,
    }

    fn pair(mode: Mode) -> Pair {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let pki = tempfile::tempdir().unwrap();
        let ca = pki.path().join("ca");
        net::ca_init(&ca).unwrap();
        let identity = |id: &str| {
            let out = pki.path().join(id);
            let files = net::ca_issue(&ca, &id.parse().unwrap(), &out, 1).unwrap();
            net::load_node_identity(&ca.join("ca.crt"), &files.cert, &files.key).unwrap()
        };
        let (evil_id, node_id) = (identity(EVIL_ID), identity("node-1"));
        let lo = Ipv4Addr::LOCALHOST;
        let node_socket = EvilSocket::bind(&rt, lo).unwrap();
        let known = [("node-1".parse().unwrap(), node_socket.addr)].into();
        let evil_socket = EvilSocket::bind(&rt, lo).unwrap();
        let evil =
            EvilPeer::with_identity(&rt, evil_socket, &evil_id, known, &Tuning::default(), mode)
                .unwrap();
        // The node's side: the evil peer's own dialer, re-made with the node's certificate.
        let tls = net::tls::client_config(&node_id, Arc::new(net::SystemClock)).unwrap();
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let _entered = rt.enter();
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            None,
            node_socket.socket,
            Arc::new(quinn::TokioRuntime),
        )
        .unwrap();
        let node = Dialer {
            endpoint,
            client: quinn::ClientConfig::new(Arc::new(quic)),
            limit: Duration::from_millis(CONNECT_TIMEOUT_MS),
        };
        drop(_entered);
        Pair {
            evil,
            node,
            _pki: pki,
            rt,
        }
    }

    impl Pair {
        fn conn(&self) -> Connection {
            self.rt
                .block_on(self.node.connect(self.evil.addr, EVIL_ID))
                .unwrap()
        }
    }

    #[test]
    fn quiet_answers_like_a_peer_holding_nothing() {
        let p = pair(Mode::Quiet);
        let conn = p.conn();
        let ask = |msg: Msg| p.rt.block_on(request(&conn, &msg));
        assert!(matches!(
            ask(Msg::DigestRequest),
            StreamEnd::Frame(Msg::Digest { count: 0, .. })
        ));
        assert_eq!(
            ask(Msg::PageRequest { after: None }),
            StreamEnd::Frame(Msg::Page {
                ids: Vec::new(),
                more: false
            })
        );
        assert_eq!(
            ask(Msg::Pull { id: [7; 32] }),
            StreamEnd::Frame(Msg::NotHeld)
        );
        let offered = p.rt.block_on(offer(&conn, &[1, 2, 3])).unwrap();
        assert_eq!(offered.answer, StreamEnd::Frame(Msg::Have));
        // Not a request: the stream is reset.
        assert_eq!(
            ask(Msg::Ack),
            StreamEnd::Reset(net::wire::StreamCode::Protocol as u64)
        );
        let seen = p.evil.served.observed();
        assert_eq!(
            (
                seen.offers,
                seen.digests,
                seen.pages,
                seen.pulls,
                seen.odd_streams
            ),
            (1, 1, 1, 1, 1)
        );
        assert_eq!(seen.rounds.len(), 1);
        assert_eq!((seen.rounds[0].pages, seen.rounds[0].pulls), (1, 1));
    }

    #[test]
    fn a_huge_digest_never_ends_and_holds_nothing() {
        let p = pair(Mode::HugeDigest {
            seed: 5,
            not_held_delay_ms: 0,
        });
        let conn = p.conn();
        let ask = |msg: Msg| p.rt.block_on(request(&conn, &msg));
        let (d1, d2) = (ask(Msg::DigestRequest), ask(Msg::DigestRequest));
        assert!(matches!(d1, StreamEnd::Frame(Msg::Digest { .. })));
        assert_ne!(d1, d2, "a different digest every time");
        let mut after = None;
        for _ in 0..3 {
            match ask(Msg::PageRequest { after }) {
                StreamEnd::Frame(Msg::Page { ids, more: true }) => {
                    assert_eq!(ids.len(), serve::HUGE_PAGE_IDS);
                    assert!(after.is_none_or(|a| ids[0] > a));
                    after = ids.last().copied();
                }
                other => panic!("expected a full page with more to come, got {other:?}"),
            }
        }
        let id = after.unwrap();
        assert_eq!(ask(Msg::Pull { id }), StreamEnd::Frame(Msg::NotHeld));
        let seen = p.evil.served.observed();
        assert_eq!(seen.rounds.len(), 2);
        assert_eq!((seen.rounds[1].pages, seen.rounds[1].pulls), (3, 1));
    }

    #[test]
    fn a_poisoned_catchup_offers_its_lies_when_pulled() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let secret = store::keys::PublisherSecret::from_seed([3; 32]);
        let body = craft::payload(&mut rng, 1000);
        let lie = craft::bad_signature(&secret, "lie", body, 1_800_000_000_000).unwrap();
        let p = pair(Mode::Poisoned(vec![lie.clone()]));
        let conn = p.conn();
        assert_eq!(
            p.rt.block_on(request(&conn, &Msg::PageRequest { after: None })),
            StreamEnd::Frame(Msg::Page {
                ids: vec![lie.id.0],
                more: false
            })
        );
        // Pulled: the lie is offered; wanted, its payload follows; the answer is recorded.
        let (payload, end) = p.rt.block_on(async {
            let (mut send, mut recv) = open(&conn).await.unwrap();
            let pull = encode_frame(&Msg::Pull { id: lie.id.0 });
            write(&mut send, &pull, answer_timeout()).await.unwrap();
            assert_eq!(
                answer(&mut recv).await,
                StreamEnd::Frame(Msg::Offer {
                    manifest: lie.manifest.clone()
                })
            );
            let want = encode_frame(&Msg::Want { offset: 10 });
            write(&mut send, &want, answer_timeout()).await.unwrap();
            let mut got = Vec::new();
            let read = recv.read_to_end(lie.payload.len());
            got.extend(timeout(answer_timeout(), read).await.unwrap().unwrap());
            let reject = encode_frame(&Msg::reject(net::RejectReason::BadSignature, "no"));
            write(&mut send, &reject, answer_timeout()).await.unwrap();
            let _ = send.finish();
            // The evil peer records the answer once it has read it.
            let deadline = Instant::now() + answer_timeout();
            while p.evil.served.observed().pulled.is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (got, p.evil.served.observed().pulled)
        });
        assert_eq!(payload, lie.payload[10..]);
        assert_eq!(end.len(), 1);
        assert_eq!(end[0].0, lie.id);
        assert!(
            matches!(
                &end[0].1,
                StreamEnd::Frame(Msg::Reject {
                    reason: net::RejectReason::BadSignature,
                    ..
                })
            ),
            "{:?}",
            end[0].1
        );
    }
}
