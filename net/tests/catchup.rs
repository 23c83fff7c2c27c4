//! Catch-up (INV-15) and connection supervision over the socket seam.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use net::SendOutcome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_15_catch_up_pulls_what_the_peer_holds_on_connect() {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["a", "b"], 1 << 30);
    let held: Vec<_> = (0..5)
        .map(|i| seed(&planned[0].store, 30 + i, 50_000 + i * 1000))
        .collect();
    // One segment a evicted: a tombstone counts as held, but cannot be pulled.
    let gone = seed(&planned[0].store, 40, 10_000);
    assert_eq!(planned[0].store.evict(&[gone]).unwrap(), vec![gone]);
    let nodes = start(&fleet, planned, &[("a", "b")], |cfg| {
        cfg.catchup_on_connect = true;
    });
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut want = held.clone();
    want.sort();
    assert!(
        eventually(Duration::from_secs(20), || stored_ids(&b.store) == want).await,
        "b pulled what a holds"
    );
    // Each came from a, through b's ingest hook, and a was told of each delivery.
    assert!(test_jobs(&b.store).values().all(|src| src == "a"));
    assert_eq!(test_jobs(&b.store).len(), 5);
    assert!(
        eventually(Duration::from_secs(5), || a
            .hooks
            .delivered
            .lock()
            .unwrap()
            .len()
            == 5)
        .await
    );
    let mut delivered: Vec<_> = a.hooks.delivered.lock().unwrap().clone();
    delivered.sort();
    assert_eq!(
        delivered,
        want.iter()
            .map(|id| ("b".to_owned(), *id))
            .collect::<Vec<_>>()
    );
    // The tombstone is not pulled again, and nothing else is missing.
    let report = b.node.catch_up(&id("a")).await.unwrap();
    assert_eq!((report.pulled, report.stored), (0, 0), "{report:?}");
    assert!(!b.store.holding(&gone).unwrap().eq(&store::Holding::Stored));
    // a, which holds a superset, finds nothing to pull from b.
    let report = a.node.catch_up(&id("b")).await.unwrap();
    assert_eq!(report.pulled, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_15_three_nodes_converge_through_the_middle() {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["a", "b", "c"], 1 << 30);
    let mut all: Vec<_> = (0..3)
        .map(|i| seed(&planned[0].store, 50 + i, 20_000))
        .collect();
    all.extend((0..2).map(|i| seed(&planned[2].store, 60 + i, 20_000)));
    all.sort();
    // A line: a - b - c. Nothing is pushed: periodic catch-up alone moves everything.
    let nodes = start(&fleet, planned, &[("a", "b"), ("b", "c")], |cfg| {
        cfg.catchup_on_connect = true;
        cfg.catchup_interval_ms = 200;
    });
    assert!(
        eventually(Duration::from_secs(30), || nodes
            .iter()
            .all(|n| stored_ids(&n.store) == all))
        .await,
        "every node holds every segment"
    );
    // c's copies of a's segments came through b.
    let jobs = test_jobs(&nodes[2].store);
    assert!(
        all[..]
            .iter()
            .filter(|id| jobs.contains_key(id))
            .all(|id| jobs[id] == "b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervised_connection_comes_back_after_the_network_heals() {
    logs();
    let fleet = Fleet::new();
    let mut planned = plan(&["a", "b"], 1 << 30);
    let seg = seed(&planned[0].store, 70, 100_000);
    // b's socket goes through the seam, so the test can cut it off.
    let cuttable = CuttableSocket::wrap(planned[1].socket.clone());
    planned[1].socket = cuttable.clone();
    let nodes = start(&fleet, planned, &[("a", "b")], |cfg| {
        cfg.idle_timeout_ms = 1_000;
        cfg.keep_alive_interval_ms = 300;
        cfg.handshake_timeout_ms = 500;
        cfg.redial_backoff_base_ms = 100;
        cfg.redial_backoff_max_ms = 400;
    });
    let (a, b) = (&nodes[0], &nodes[1]);
    // Kept up although nothing is due: keep-alives outlast the idle timeout (1 s).
    assert!(
        a.node
            .wait_connected(&id("b"), Duration::from_secs(5))
            .await
    );
    assert!(
        b.node
            .wait_connected(&id("a"), Duration::from_secs(5))
            .await
    );
    // (Let any duplicate from simultaneous dials settle first.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let closed_before = a.node.stats().connections_closed;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(a.node.peers()[0].connected);
    assert_eq!(a.node.stats().connections_closed, closed_before);

    cuttable.set_cut(true);
    assert!(
        eventually(Duration::from_secs(5), || !a.node.peers()[0].connected).await,
        "the idle timeout noticed the cut"
    );
    match a.node.send_segment(&id("b"), seg).await {
        SendOutcome::Unreachable(_) | SendOutcome::TimedOut => {}
        other => panic!("expected the peer to be unreachable, got {other:?}"),
    }
    cuttable.set_cut(false);
    // Re-dialled within the backoff bound, with no send needed to trigger it.
    assert!(
        a.node
            .wait_connected(&id("b"), Duration::from_secs(5))
            .await
    );
    assert_eq!(
        a.node.send_segment(&id("b"), seg).await,
        SendOutcome::Delivered
    );
    let _ = Arc::strong_count(&cuttable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_settle_on_one_connection() {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["a", "b"], 1 << 30);
    let seg = seed(&planned[1].store, 80, 10_000);
    let nodes = start(&fleet, planned, &[("a", "b")], |cfg| {
        cfg.redial_backoff_base_ms = 1; // both dial at once
    });
    let (a, b) = (&nodes[0], &nodes[1]);
    assert!(
        a.node
            .wait_connected(&id("b"), Duration::from_secs(5))
            .await
    );
    assert!(
        b.node
            .wait_connected(&id("a"), Duration::from_secs(5))
            .await
    );
    // Whatever raced, both ends agree on one connection and it works.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (pa, pb) = (&a.node.peers()[0], &b.node.peers()[0]);
    assert!(pa.connected && pb.connected);
    assert_eq!(pa.remote, Some(b.addr));
    assert_eq!(pb.remote, Some(a.addr));
    assert_eq!(
        b.node.send_segment(&id("a"), seg).await,
        SendOutcome::Delivered
    );
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_15_a_productive_round_cut_by_its_bound_is_followed_up_soon() {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["a", "b"], 1 << 30);
    let mut all: Vec<_> = (0..30)
        .map(|i| seed(&planned[0].store, 200 + i, 4_000))
        .collect();
    all.sort();
    // Rounds of at most 8 pulls, a minute apart unless a round was cut while productive.
    let nodes = start(&fleet, planned, &[("a", "b")], |cfg| {
        cfg.catchup_on_connect = true;
        cfg.catchup_interval_ms = 60_000;
        cfg.catchup_pulls_per_round_max = 8;
        cfg.catchup_followup_ms = 200;
    });
    let b = &nodes[1];
    assert!(
        eventually(Duration::from_secs(10), || stored_ids(&b.store) == all).await,
        "b holds {} of 30 within the bound",
        stored_ids(&b.store).len()
    );
    assert!(b.node.stats().catchup_rounds_cut >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_15_inv_24_a_segment_quarantined_here_is_fetched_again_from_a_peer() {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["a", "b"], 1 << 30);
    let seg = seed(&planned[0].store, 300, 64_000);
    assert_eq!(seed(&planned[1].store, 300, 64_000), seg);
    // Periodic rounds are a minute apart: only the quarantine can bring the next one soon.
    let nodes = start(&fleet, planned, &[("a", "b")], |cfg| {
        cfg.catchup_on_connect = true;
        cfg.catchup_interval_ms = 60_000;
        cfg.catchup_followup_ms = 300;
    });
    let a = &nodes[0];
    assert!(
        a.node
            .wait_connected(&id("b"), Duration::from_secs(5))
            .await
    );
    // Let the rounds on connect (in sync) pass.
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.store
        .quarantine(&seg, "test: corrupt at rest", now_ms())
        .unwrap();
    assert_eq!(a.store.holding(&seg).unwrap(), store::Holding::Absent);
    assert!(
        eventually(Duration::from_secs(5), || a.store.holding(&seg).unwrap()
            == store::Holding::Stored)
        .await,
        "a holds the segment again"
    );
    // The good copy came from b, through a's ingest hook.
    assert_eq!(test_jobs(&a.store).get(&seg).map(String::as_str), Some("b"));
}
