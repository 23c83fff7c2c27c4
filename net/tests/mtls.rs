//! INV-09: only a peer whose certificate chains to the fleet CA and whose id is in
//! `known_peers` gets to application data, in either direction.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
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

/// Starts node "n" knowing "good" (a running node) and "probe" (used by raw clients).
fn server() -> (Fleet, Vec<TestNode>) {
    let fleet = Fleet::new();
    let planned = plan(&["n", "good"], 1 << 30);
    let nodes = start(&fleet, planned, &[("n", "good")], |cfg| {
        // "probe" is known but runs no node: raw clients use its identity.
        if cfg.node_id.as_str() == "n" {
            cfg.known_peers
                .insert(id("probe"), "127.0.0.1:9".parse().unwrap());
        }
    });
    (fleet, nodes)
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
            .all(|p| p == "good" || p == "probe")
    );
    assert!(stored_ids(&n.store).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_09_certificate_from_another_ca_is_refused() {
    logs();
    let (_fleet, nodes) = server();
    let rogue = Fleet::new();
    refused(Raw::new(&rogue.identity("good")), &nodes[0], "n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_09_right_ca_but_unknown_id_is_refused() {
    logs();
    let (fleet, nodes) = server();
    refused(Raw::new(&fleet.identity("stranger")), &nodes[0], "n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_09_dialled_id_must_match_the_server_certificate() {
    logs();
    let (fleet, nodes) = server();
    // A known peer dials n's address but expects "good" there: n's certificate says "n".
    let client = Raw::new(&fleet.identity("good"));
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
    let (fleet, nodes) = server();
    refused(Raw::new(&fleet.expired_identity("good")), &nodes[0], "n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_09_client_without_certificate_is_refused() {
    logs();
    let (fleet, nodes) = server();
    let identity = fleet.identity("good");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(identity.ca_cert.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(net::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"edge/1".to_vec()];
    refused(Raw::with_tls(tls), &nodes[0], "n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_09_wrong_alpn_is_refused() {
    logs();
    let (fleet, nodes) = server();
    let mut tls = net::tls::client_config(&fleet.identity("good"), Arc::new(SystemClock)).unwrap();
    tls.alpn_protocols = vec![b"edge/2".to_vec()];
    refused(Raw::with_tls(tls), &nodes[0], "n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_09_known_peer_gets_through_and_nodes_report_handshake_refusals() {
    logs();
    let (fleet, nodes) = server();
    let conn = Raw::new(&fleet.identity("probe"))
        .connect(nodes[0].addr, "n")
        .await
        .expect("a known peer connects");
    assert!(app_data_gets_through(&conn).await);

    // A node whose known_peers maps "b" to the address of a node whose certificate is "c":
    // the dial fails on the certificate, and send_segment says so.
    let planned = plan(&["a", "c"], 1 << 30);
    let seg = seed(&planned[0].store, 1, 1000);
    let c_addr = planned[1].addr;
    let nodes2 = start(&fleet, planned, &[], |cfg| {
        if cfg.node_id.as_str() == "a" {
            cfg.known_peers.insert(id("b"), c_addr);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_18_unauthenticated_handshakes_are_capped_and_time_out() {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["n", "good"], 1 << 30);
    let nodes = start(&fleet, planned, &[("n", "good")], |cfg| {
        cfg.handshakes_unauthenticated_max = 1;
        cfg.handshake_timeout_ms = 1_000;
        if cfg.node_id.as_str() == "n" {
            cfg.known_peers
                .insert(id("probe"), "127.0.0.1:9".parse().unwrap());
        }
    });
    let n = &nodes[0];
    // Let the node's own peer connect first (its handshake is done before the test starts).
    assert!(
        n.node
            .wait_connected(&id("good"), Duration::from_secs(5))
            .await
    );
    // A client that sends its Initial but never hears the answer holds the one slot...
    let deaf = CuttableSocket::wrap(net::bind_udp("127.0.0.1:0".parse().unwrap(), 0).unwrap());
    deaf.deaf.store(true, std::sync::atomic::Ordering::SeqCst);
    let stuck = Raw::with_socket(&fleet.identity("probe"), deaf.clone());
    let connecting = stuck
        .endpoint
        .connect_with(stuck.config.clone(), n.addr, "n")
        .unwrap();
    let stuck_task =
        tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(4), connecting).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...so the next handshake is refused before any TLS work.
    let refused = Raw::new(&fleet.identity("probe"))
        .connect(n.addr, "n")
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(n.node.stats().handshakes_refused_cap, 1);
    // The stuck handshake times out (handshake_timeout_ms) and frees its slot.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let conn = Raw::new(&fleet.identity("probe"))
        .connect(n.addr, "n")
        .await
        .expect("a slot is free again");
    assert!(app_data_gets_through(&conn).await);
    let _ = stuck_task.await;
}
