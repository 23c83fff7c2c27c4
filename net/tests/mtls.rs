//! INV-09: only a peer whose certificate chains to the fleet CA and whose id is in
//! `known_peers` gets to application data, in either direction. The raw clients send from
//! addresses the node lists for peers (a node does not even hear other addresses), so what
//! refuses them here is TLS. Admission before TLS (INV-18): address validation, budgets per
//! address and in total, the unauthenticated deadline; and strangers (INV-27).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use net::{PkiError, SendOutcome, SystemClock};

#[test]
fn inv_09_pki_files_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca = net::ca_init(&dir.path().join("ca")).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&ca.key), 0o600);
    assert!(matches!(
        net::ca_init(&dir.path().join("ca")),
        Err(PkiError::AlreadyExists { .. })
    ));
    let nodes = dir.path().join("nodes");
    let files = net::ca_issue(&dir.path().join("ca"), &id("node-1"), &nodes, 365).unwrap();
    assert_eq!(mode(&files.key), 0o600);
    let identity = net::load_node_identity(&ca.cert, &files.cert, &files.key).unwrap();
    assert_eq!(identity.id, id("node-1"));
    assert!(identity.not_after > std::time::SystemTime::now() + Duration::from_secs(364 * 86400));
    // Never overwritten; validity bounded.
    assert!(matches!(
        net::ca_issue(&dir.path().join("ca"), &id("node-1"), &nodes, 365),
        Err(PkiError::AlreadyExists { .. })
    ));
    assert!(matches!(
        net::ca_issue(&dir.path().join("ca"), &id("node-2"), &nodes, 0),
        Err(PkiError::Validity(_))
    ));
    // A key readable by others is refused, naming the file.
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = net::load_node_identity(&ca.cert, &files.cert, &files.key).unwrap_err();
    assert!(matches!(err, PkiError::InsecurePermissions { .. }));
    assert!(err.to_string().contains("node-1.key"), "{err}");
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A certificate from another CA is refused at load, naming the file.
    let other = net::ca_init(&dir.path().join("other")).unwrap();
    let err = net::load_node_identity(&other.cert, &files.cert, &files.key).unwrap_err();
    assert!(matches!(err, PkiError::CertificateRejected { .. }), "{err}");
    assert!(err.to_string().contains("node-1.crt"), "{err}");
    // A missing file and a file that is not PEM are named too.
    let err = net::load_node_identity(&ca.cert, &nodes.join("nope.crt"), &files.key).unwrap_err();
    assert!(err.to_string().contains("nope.crt"), "{err}");
    std::fs::write(nodes.join("junk.crt"), "not pem").unwrap();
    let err = net::load_node_identity(&ca.cert, &nodes.join("junk.crt"), &files.key).unwrap_err();
    assert!(matches!(err, PkiError::BadFile { .. }) && err.to_string().contains("junk.crt"));
    // Invalid ids never reach a certificate.
    assert!("Bad_Id".parse::<net::NodeId>().is_err());
}

/// Ids under which "n" lists the raw clients' addresses (no node runs under them).
const PROBES: [&str; 3] = ["probe", "probe-2", "probe-3"];

/// Starts node "n" knowing "good" (a running node) and the [`PROBES`], whose addresses are the
/// returned sockets (for raw clients).
fn server_with(tweak: impl Fn(&mut net::NetConfig)) -> (Fleet, Vec<TestNode>, Vec<RawSocket>) {
    let fleet = Fleet::new();
    let planned = plan(&["n", "good"], 1 << 30);
    let probes: Vec<RawSocket> = PROBES.iter().map(|_| raw_socket()).collect();
    let nodes = start(&fleet, planned, &[("n", "good")], |cfg| {
        if cfg.node_id.as_str() == "n" {
            for (name, probe) in PROBES.iter().zip(&probes) {
                cfg.known_peers.insert(id(name), probe.addr);
            }
        }
        tweak(cfg);
    });
    (fleet, nodes, probes)
}

fn server() -> (Fleet, Vec<TestNode>, Vec<RawSocket>) {
    server_with(|_| {})
}

/// Asserts that a raw client's attempt fails before application data and left nothing.
async fn refused(client: Raw, n: &TestNode, server_name: &str) {
    let outcome = client.connect(n.addr, server_name).await;
    let through = match &outcome {
        Ok(conn) => app_data_gets_through(conn).await,
        Err(_) => false,
    };
    assert!(!through, "application data got through: {outcome:?}");
    if let Ok(conn) = outcome {
        // The client finished its side of the handshake; the server's TLS alert closes it.
        let reason = tokio::time::timeout(Duration::from_secs(3), conn.closed())
            .await
            .expect("closed by the server");
        assert!(
            matches!(
                reason,
                quinn::ConnectionError::ConnectionClosed(_)
                    | quinn::ConnectionError::TransportError(_)
            ),
            "closed at the TLS level, not by the application: {reason}"
        );
    }
    assert_eq!(
        n.node.stats().streams_failed,
        0,
        "no stream was ever accepted"
    );
    assert!(
        n.hooks
            .connected
            .lock()
            .unwrap()
            .iter()
            .all(|p| p == "good" || PROBES.contains(&p.as_str()))
    );
    assert!(stored_ids(&n.store).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_09_certificate_from_another_ca_is_refused() {
    logs();
    let (_fleet, nodes, probes) = server();
    let rogue = Fleet::new();
    refused(Raw::on(&rogue.identity("good"), &probes[0]), &nodes[0], "n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_09_right_ca_but_unknown_id_is_refused() {
    logs();
    let (fleet, nodes, probes) = server();
    refused(
        Raw::on(&fleet.identity("stranger"), &probes[0]),
        &nodes[0],
        "n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_09_dialled_id_must_match_the_server_certificate() {
    logs();
    let (fleet, nodes, probes) = server();
    // A known peer dials n's address but expects "good" there: n's certificate says "n".
    let client = Raw::on(&fleet.identity("good"), &probes[0]);
    let outcome = client.connect(nodes[0].addr, "good").await;
    assert!(
        outcome.is_err(),
        "the handshake must fail on the client side"
    );
    assert!(stored_ids(&nodes[0].store).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_09_expired_certificate_is_refused() {
    logs();
    let (fleet, nodes, probes) = server();
    refused(
        Raw::on(&fleet.expired_identity("good"), &probes[0]),
        &nodes[0],
        "n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_09_client_without_certificate_is_refused() {
    logs();
    let (fleet, nodes, probes) = server();
    let identity = fleet.identity("good");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(identity.ca_cert.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(net::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"edge/1".to_vec()];
    refused(
        Raw::with_tls_on(tls, probes[0].socket.clone()),
        &nodes[0],
        "n",
    )
    .await;
}

/// A node of another protocol version, with a valid certificate, does not get a connection:
/// the previous version (`edge/1`, no outboard before the payload) and a later one alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_09_other_protocol_versions_are_refused() {
    logs();
    let (fleet, nodes, probes) = server();
    assert_eq!(net::limits::ALPN, b"edge/2");
    for (alpn, probe) in [(&b"edge/1"[..], &probes[0]), (&b"edge/3"[..], &probes[1])] {
        let mut tls =
            net::tls::client_config(&fleet.identity("good"), Arc::new(SystemClock)).unwrap();
        tls.alpn_protocols = vec![alpn.to_vec()];
        refused(Raw::with_tls_on(tls, probe.socket.clone()), &nodes[0], "n").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_09_known_peer_gets_through_and_nodes_report_handshake_refusals() {
    logs();
    let (fleet, nodes, probes) = server();
    let conn = Raw::on(&fleet.identity("probe"), &probes[0])
        .connect(nodes[0].addr, "n")
        .await
        .expect("a known peer connects");
    assert!(app_data_gets_through(&conn).await);

    // A node whose known_peers maps "b" to the address of a node whose certificate is "c":
    // the dial fails on the certificate, and send_segment says so.
    let planned = plan(&["a", "c"], 1 << 30);
    let seg = seed(&planned[0].store, 1, 1000);
    let (a_addr, c_addr) = (planned[0].addr, planned[1].addr);
    let nodes2 = start(&fleet, planned, &[], |cfg| {
        if cfg.node_id.as_str() == "a" {
            cfg.known_peers.insert(id("b"), c_addr);
        }
        // c lists a's address (as "a"), so that it hears a at all: what refuses the dial is
        // then the certificate check.
        if cfg.node_id.as_str() == "c" {
            cfg.known_peers.insert(id("a"), a_addr);
        }
    });
    let (a, c) = (&nodes2[..1], &nodes2[1]);
    assert!(
        !a[0]
            .node
            .wait_connected(&id("b"), Duration::from_secs(1))
            .await
    );
    match a[0].node.send_segment(&id("b"), seg).await {
        SendOutcome::HandshakeRefused(_) => {}
        other => panic!("expected HandshakeRefused, got {other:?}"),
    }
    assert!(stored_ids(&c.store).is_empty());
}

/// A raw client at `socket` that hears only QUIC Retry packets: it proves its address and then
/// never hears the handshake, so each of its handshakes holds server state until the deadline.
fn hears_only_retry(fleet: &Fleet, socket: &RawSocket) -> Raw {
    let filter = CuttableSocket::wrap(socket.socket.clone());
    filter.hear_only_retry.store(true, Ordering::SeqCst);
    Raw::with_socket(&fleet.identity("probe"), filter)
}

/// Starts `count` handshakes from `raw` to `to` without waiting for them (each bounded by
/// `within`).
fn start_handshakes(
    raw: &Raw,
    to: std::net::SocketAddr,
    count: usize,
    within: Duration,
) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..count {
        let connecting = raw
            .endpoint
            .connect_with(raw.config.clone(), to, "n")
            .unwrap();
        set.spawn(async move {
            let _ = tokio::time::timeout(within, connecting).await;
        });
    }
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_18_strangers_have_a_handshake_budget_of_their_own() {
    logs();
    let (fleet, nodes, probes) = server_with(|cfg| {
        cfg.accept_unknown_addresses = true;
        cfg.handshakes_unauthenticated_max = 8;
        cfg.handshakes_per_addr_max = 8;
        cfg.handshakes_unknown_addresses_max = 4;
        cfg.handshake_unauthenticated_timeout_ms = 1_500;
    });
    let n = &nodes[0];
    assert!(
        n.node
            .wait_connected(&id("good"), Duration::from_secs(5))
            .await
    );
    // 50 half-open handshakes from an address no peer is configured at.
    let stranger = hears_only_retry(&fleet, &raw_socket());
    let tasks = start_handshakes(&stranger, n.addr, 50, Duration::from_secs(5));
    assert!(
        eventually(Duration::from_secs(5), || n
            .node
            .stats()
            .handshakes_refused_cap
            >= 40)
        .await,
        "{:?}",
        n.node.stats()
    );
    // A configured address is not affected.
    let conn = Raw::on(&fleet.identity("probe"), &probes[0])
        .connect(n.addr, "n")
        .await
        .expect("a configured peer connects while strangers flood");
    assert!(app_data_gets_through(&conn).await);
    drop(tasks);
    drop(stranger);
    // And a known peer at an address nobody configured gets in once the flood is over (that
    // is what accept_unknown_addresses is for); the node answered it, nothing else.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let moved = Raw::on(&fleet.identity("probe-2"), &raw_socket());
    let conn = moved
        .connect(n.addr, "n")
        .await
        .expect("known id, new address");
    assert!(app_data_gets_through(&conn).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_27_strangers_are_dropped_unanswered_and_the_send_guard_never_fires() {
    logs();
    let (fleet, nodes, _probes) = server();
    let n = &nodes[0];
    assert!(
        n.node
            .wait_connected(&id("good"), Duration::from_secs(5))
            .await
    );
    let before = n.node.stats();
    // A real QUIC client with a valid certificate of a known id, from an address no peer is
    // configured at.
    let socket = raw_socket();
    let counting = CuttableSocket::wrap(socket.socket.clone());
    let stranger = Raw::with_socket(&fleet.identity("good"), counting.clone());
    let connecting = stranger
        .endpoint
        .connect_with(stranger.config.clone(), n.addr, "n")
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(2), connecting).await;
    assert!(
        !matches!(outcome, Ok(Ok(_))),
        "a stranger completed a handshake"
    );
    // Garbage, and a datagram that looks like a QUIC Initial, from another stranger socket.
    let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    plain
        .set_read_timeout(Some(Duration::from_millis(1_500)))
        .unwrap();
    let mut initial_like = vec![0xc3, 0, 0, 0, 1, 8];
    initial_like.resize(1200, 0xab);
    for datagram in [b"hello?".to_vec(), vec![0; 1200], initial_like] {
        plain.send_to(&datagram, n.addr).unwrap();
    }
    let mut buf = [0u8; 2048];
    let heard = plain.recv_from(&mut buf);
    assert!(heard.is_err(), "the node answered garbage: {heard:?}");
    assert_eq!(
        counting.received.load(Ordering::SeqCst),
        0,
        "zero datagrams back to the stranger"
    );
    let st = n.node.stats();
    assert!(st.datagrams_dropped_unknown >= 4, "{st:?}");
    assert_eq!(st.datagrams_blocked_send, 0, "the send guard never fired");
    assert_eq!(
        st.handshakes_retried, before.handshakes_retried,
        "not even a Retry"
    );
    // The node still serves its peer.
    assert!(
        n.node
            .peers()
            .iter()
            .any(|p| p.id == id("good") && p.connected)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_27_the_send_guard_drops_answers_to_strangers_the_node_did_not_admit() {
    logs();
    // Strangers reach QUIC here; QUIC answers an unknown version with a Version Negotiation
    // packet, statelessly, to whatever address sent it. The node never chose to answer that
    // address, so the guard keeps the answer in.
    let (_fleet, nodes, _probes) = server_with(|cfg| cfg.accept_unknown_addresses = true);
    let n = &nodes[0];
    let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    plain
        .set_read_timeout(Some(Duration::from_millis(1_500)))
        .unwrap();
    // Long header, version 0x1a2a3a4a (a reserved, never supported one), 8-byte connection ids,
    // padded to the 1200 bytes a server must see before it answers.
    let mut packet = vec![0xc0, 0x1a, 0x2a, 0x3a, 0x4a, 8];
    packet.extend_from_slice(&[1; 8]);
    packet.push(8);
    packet.extend_from_slice(&[2; 8]);
    packet.resize(1200, 0);
    plain.send_to(&packet, n.addr).unwrap();
    let mut buf = [0u8; 2048];
    let heard = plain.recv_from(&mut buf);
    assert!(heard.is_err(), "a stranger heard the node: {heard:?}");
    assert!(
        eventually(Duration::from_secs(2), || n
            .node
            .stats()
            .datagrams_blocked_send
            >= 1)
        .await,
        "{:?}",
        n.node.stats()
    );
}
