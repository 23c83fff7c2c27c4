//! INV-27 with a real daemon: a node sends packets only to its configured peers. A stranger
//! probing its UDP port — garbage, and a real QUIC handshake with a valid fleet certificate —
//! hears nothing back; and the daemon's own sockets, enumerated from `/proc/<pid>/fd` joined
//! with `/proc/<pid>/net/{udp,udp6,tcp,tcp6,unix}`, are exactly its UDP socket on
//! `listen_addr`, its loopback metrics listener and its control socket (plus the pair of
//! unnamed Unix sockets the async runtime uses to deliver signals to itself), none connected
//! to any address outside the configured peers.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use net::quinn;
use support::*;

/// How long a probe listens for an answer that must not come.
const SILENCE_MS: u64 = 2_000;

/// The daemon's log lines (`net::filter`, `net::node`) about strangers.
const DROPPED: &str = "datagram from an address that is no configured peer's dropped";
const NOT_ANSWERED: &str = "handshake from an address that is no configured peer's not answered";
const NOT_SENT: &str = "datagram to an address that is no configured peer's not sent";

// ---------------------------------------------------------------------------------------------
// The daemon's sockets, from /proc.

/// One socket of the daemon, as the kernel's tables show it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Sock {
    Udp {
        local: SocketAddr,
        remote: SocketAddr,
    },
    Tcp {
        local: SocketAddr,
        remote: SocketAddr,
        /// The kernel's state code (0A = listening).
        state: String,
    },
    Unix {
        path: Option<PathBuf>,
        /// The kernel's state code (01 = unconnected/listening, 03 = connected).
        state: String,
    },
    /// In none of the tables read (netlink, raw, packet, ...).
    Other { inode: u64 },
}

/// Socket inodes of the process's open descriptors.
fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// An address as `/proc/net/{udp,tcp}{,6}` prints it: the IP's 32-bit words in host order
/// (`%08X` each), a colon, the port in hex.
fn proc_addr(text: &str) -> SocketAddr {
    let (ip, port) = text.split_once(':').expect("addr:port");
    let port = u16::from_str_radix(port, 16).expect("port");
    let words: Vec<[u8; 4]> = (0..ip.len() / 8)
        .map(|i| {
            u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16)
                .expect("hex word")
                .to_ne_bytes()
        })
        .collect();
    let ip = match words.len() {
        1 => IpAddr::V4(Ipv4Addr::from(words[0])),
        4 => {
            let mut bytes = [0u8; 16];
            for (i, w) in words.iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(w);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => panic!("unexpected address {text}"),
    };
    SocketAddr::new(ip, port)
}

/// The rows of `/proc/<pid>/net/<table>` by inode.
fn table(pid: u32, name: &str) -> BTreeMap<u64, Sock> {
    let path = format!("/proc/{pid}/net/{name}");
    let Ok(text) = std::fs::read_to_string(&path) else {
        // A kernel without IPv6 has no udp6/tcp6: nothing of the daemon can be there.
        return BTreeMap::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if name == "unix" {
                let inode = cols.get(6)?.parse().ok()?;
                let sock = Sock::Unix {
                    path: cols.get(7).map(PathBuf::from),
                    state: cols.get(5)?.to_string(),
                };
                return Some((inode, sock));
            }
            let inode = cols.get(9)?.parse().ok()?;
            let (local, remote) = (proc_addr(cols.get(1)?), proc_addr(cols.get(2)?));
            let sock = if name.starts_with("udp") {
                Sock::Udp { local, remote }
            } else {
                Sock::Tcp {
                    local,
                    remote,
                    state: cols.get(3)?.to_string(),
                }
            };
            Some((inode, sock))
        })
        .collect()
}

/// Every socket the process holds open.
fn sockets(pid: u32) -> Vec<Sock> {
    let mut known = BTreeMap::new();
    for name in ["udp", "udp6", "tcp", "tcp6", "unix"] {
        known.extend(table(pid, name));
    }
    let mut out: Vec<Sock> = socket_inodes(pid)
        .into_iter()
        .map(|inode| known.get(&inode).cloned().unwrap_or(Sock::Other { inode }))
        .collect();
    out.sort();
    out
}

/// `key = "value"` in a config text.
fn config_value(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A stranger's QUIC client.

/// A UDP socket that counts every datagram it receives.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    received: AtomicU64,
}

impl quinn::AsyncUdpSocket for Counting {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = self.inner.poll_recv(cx, bufs, meta);
        if let std::task::Poll::Ready(Ok(n)) = &polled {
            self.received.fetch_add(*n as u64, Ordering::SeqCst);
        }
        polled
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A real QUIC + TLS client handshake to `to`, from a fresh socket no peer is configured at,
/// presenting `identity`; returns how many datagrams came back (and that it did not connect).
fn stranger_handshake(identity: &net::NodeIdentity, to: SocketAddr) -> u64 {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let socket = Arc::new(Counting {
            inner: net::bind_udp("127.0.0.1:0".parse().unwrap(), 0).expect("bind"),
            received: AtomicU64::new(0),
        });
        let tls = net::tls::client_config(identity, Arc::new(net::SystemClock)).expect("tls");
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            None,
            socket.clone(),
            Arc::new(quinn::TokioRuntime),
        )
        .expect("endpoint");
        let client = quinn::ClientConfig::new(Arc::new(quic));
        let connecting = endpoint
            .connect_with(client, to, identity_server_name())
            .expect("connect");
        let outcome = tokio::time::timeout(Duration::from_millis(SILENCE_MS), connecting).await;
        assert!(
            !matches!(outcome, Ok(Ok(_))),
            "a stranger completed a handshake"
        );
        socket.received.load(Ordering::SeqCst)
    })
}

/// The server name the stranger expects: the daemon's node id.
fn identity_server_name() -> &'static str {
    "node-1"
}

/// Garbage and a QUIC-looking Initial from a plain UDP socket; what came back.
fn stranger_garbage(to: SocketAddr) -> Option<usize> {
    let plain = UdpSocket::bind("127.0.0.1:0").expect("bind");
    plain
        .set_read_timeout(Some(Duration::from_millis(SILENCE_MS)))
        .expect("timeout");
    let mut initial_like = vec![0xc3, 0, 0, 0, 1, 8];
    initial_like.resize(1200, 0xab);
    let mut unknown_version = vec![0xc0, 0x1a, 0x2a, 0x3a, 0x4a, 8];
    unknown_version.resize(1200, 0);
    for datagram in [
        b"hello?".to_vec(),
        vec![0; 1200],
        initial_like,
        unknown_version,
    ] {
        plain.send_to(&datagram, to).expect("send");
    }
    let mut buf = [0u8; 2048];
    plain.recv_from(&mut buf).ok().map(|(n, _)| n)
}

fn identity_of(fleet: &Fleet, i: usize) -> net::NodeIdentity {
    let dir = fleet.node(i).dir.clone();
    let id = format!("node-{i}");
    net::load_node_identity(
        &fleet.path("ca").join("ca.crt"),
        &dir.join(format!("{id}.crt")),
        &dir.join(format!("{id}.key")),
    )
    .expect("identity")
}

fn canonical_path(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

#[test]
fn inv_27_a_daemon_answers_no_stranger_and_holds_only_its_own_sockets() {
    // node-1 runs; node-2 is its configured peer but does not run (so node-1 keeps dialling
    // its address: the one place packets may go).
    let mut fleet = Fleet::new(2, &[(1, 2)], |i| {
        let opts = NodeOptions::default();
        if i == 1 { opts.metrics() } else { opts }
    });
    fleet.start(1);
    let pid = fleet.pid(1);
    let text = std::fs::read_to_string(&fleet.node(1).config).expect("config");
    let listen: SocketAddr = config_value(&text, "listen_addr")[0]
        .parse()
        .expect("listen");
    let peers: BTreeSet<SocketAddr> = config_value(&text, "addr")
        .iter()
        .map(|a| a.parse().expect("peer addr"))
        .collect();
    let metrics_port = fleet.node(1).metrics_port.expect("metrics configured");

    // A stranger hears nothing: not to garbage, not to a real handshake with a valid
    // certificate of the fleet (node-2's own, from an address that is not node-2's).
    let heard = stranger_garbage(listen);
    fleet.check(heard.is_none(), || {
        format!("a stranger heard {heard:?} bytes")
    });
    let back = stranger_handshake(&identity_of(&fleet, 2), listen);
    fleet.check(back == 0, || {
        format!("{back} datagrams came back to a stranger")
    });
    // Because the socket's filter dropped them before QUIC saw them: the daemon says so (its
    // log, rate-limited), QUIC never handed it a stranger's handshake, and the send guard
    // never had anything to keep in.
    fleet.wait_for(
        "the filter's log line",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            let dropped = fleet.events(1, 0, DROPPED);
            (!dropped.is_empty()).then_some(())
        },
    );
    for message in [NOT_ANSWERED, NOT_SENT] {
        let seen = fleet.events(1, 0, message);
        fleet.check(seen.is_empty(), || format!("{message}: {seen:?}"));
    }

    // The daemon's sockets are exactly its own.
    let socks = sockets(pid);
    let control = canonical_path(&fleet.node(1).control_socket());
    let unspecified = |a: &SocketAddr| a.ip().is_unspecified() && a.port() == 0;
    let mut udp = 0;
    let mut tcp = 0;
    let mut control_seen = 0;
    let mut unnamed = 0;
    for s in &socks {
        match s {
            Sock::Udp { local, remote } => {
                udp += 1;
                fleet.check(*local == listen, || {
                    format!("UDP socket {local}: not listen_addr")
                });
                fleet.check(unspecified(remote) || peers.contains(remote), || {
                    format!("UDP socket connected to {remote}")
                });
            }
            Sock::Tcp {
                local,
                remote,
                state,
            } => {
                tcp += 1;
                fleet.check(
                    local.ip().is_loopback() && local.port() == metrics_port && state == "0A",
                    || format!("TCP socket {local} ({state}): not the metrics listener"),
                );
                fleet.check(unspecified(remote), || {
                    format!("TCP socket connected to {remote}")
                });
            }
            Sock::Unix {
                path: Some(path),
                state,
            } => {
                control_seen += 1;
                fleet.check(canonical_path(path) == control && state == "01", || {
                    format!(
                        "Unix socket {} ({state}): not the control socket",
                        path.display()
                    )
                });
            }
            Sock::Unix { path: None, state } => {
                // The async runtime's signal pipe: a connected pair inside the process.
                unnamed += 1;
                fleet.check(state == "03", || {
                    format!("unnamed Unix socket in state {state}")
                });
            }
            Sock::Other { inode } => fleet.fail(format!(
                "socket {inode} is neither UDP, TCP nor Unix: {socks:?}"
            )),
        }
    }
    fleet.check(
        udp == 1 && tcp == 1 && control_seen == 1 && unnamed <= 2,
        || format!("the daemon's sockets: {socks:?}"),
    );
}
