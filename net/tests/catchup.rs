//! What of catch-up and supervision needs real UDP sockets: where packets go (INV-27). The rest
//! runs on the simulated network and virtual time (`sim_catchup.rs`).

mod common;

use std::time::Duration;

use common::*;
use net::SendOutcome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_27_packets_go_only_to_configured_peers() {
    logs();
    let fleet = Fleet::new();
    let mut planned = plan(&["a", "b"], 1 << 30);
    let seg = seed(&planned[0].store, 90, 200_000);
    let recording = CuttableSocket::wrap(planned[0].socket.clone());
    planned[0].socket = recording.clone();
    let ghost: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let b_addr = planned[1].addr;
    let nodes = start(&fleet, planned, &[("a", "b")], |cfg| {
        cfg.catchup_on_connect = true;
        if cfg.node_id.as_str() == "a" {
            cfg.known_peers.insert(id("ghost"), ghost);
        }
    });
    assert_eq!(
        nodes[0].node.send_segment(&id("b"), seg).await,
        SendOutcome::Delivered
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_to = recording.sent_to.lock().unwrap().clone();
    assert!(sent_to.contains(&b_addr));
    assert!(
        sent_to.iter().all(|d| *d == b_addr || *d == ghost),
        "packets to unconfigured addresses: {sent_to:?}"
    );
}
