//! Catch-up (INV-15) and connection supervision on the simulated network and virtual time
//! (moved from wall-clock sockets and sleeps: every wait here is virtual, so bounds are exact
//! and runs are fast and replayable). Real UDP is kept where it matters: `catchup.rs`.

mod common;
mod simnet;

use std::time::Duration;

use common::{eventually, id, logs, stored_ids, test_jobs};
use net::{Clock, SendOutcome};
use simnet::{SimFleet, run};

#[test]
fn inv_15_catch_up_pulls_what_the_peer_holds_on_connect() {
    run(async {
        logs();
        let fleet = SimFleet::new(1, &["a", "b"]);
        let held: Vec<_> = (0..5)
            .map(|i| fleet.seed_segment(0, 30 + i, 50_000 + i * 1000))
            .collect();
        // One segment a evicted: a tombstone counts as held, but cannot be pulled.
        let gone = fleet.seed_segment(0, 40, 10_000);
        assert_eq!(fleet.stores[0].evict(&[gone]).unwrap(), vec![gone]);
        let nodes = fleet.start_linked(1, &[("a", "b")], |cfg| {
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
    });
}

#[test]
fn inv_15_three_nodes_converge_through_the_middle() {
    run(async {
        logs();
        let fleet = SimFleet::new(2, &["a", "b", "c"]);
        let mut all: Vec<_> = (0..3)
            .map(|i| fleet.seed_segment(0, 50 + i, 20_000))
            .collect();
        all.extend((0..2).map(|i| fleet.seed_segment(2, 60 + i, 20_000)));
        all.sort();
        // A line: a - b - c. Nothing is pushed: periodic catch-up alone moves everything.
        let nodes = fleet.start_linked(2, &[("a", "b"), ("b", "c")], |cfg| {
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
    });
}

#[test]
fn supervised_connection_comes_back_after_the_network_heals() {
    run(async {
        logs();
        let fleet = SimFleet::new(3, &["a", "b"]);
        let seg = fleet.seed_segment(0, 70, 100_000);
        let nodes = fleet.start_linked(3, &[("a", "b")], |cfg| {
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

        fleet.cut(1, true);
        assert!(
            eventually(Duration::from_secs(5), || !a.node.peers()[0].connected).await,
            "the idle timeout noticed the cut"
        );
        match a.node.send_segment(&id("b"), seg).await {
            SendOutcome::Unreachable(_) | SendOutcome::TimedOut => {}
            other => panic!("expected the peer to be unreachable, got {other:?}"),
        }
        fleet.cut(1, false);
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
    });
}

#[test]
fn simultaneous_dials_settle_on_one_connection() {
    run(async {
        logs();
        let fleet = SimFleet::new(4, &["a", "b"]);
        let seg = fleet.seed_segment(1, 80, 10_000);
        let nodes = fleet.start_linked(4, &[("a", "b")], |cfg| {
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
        assert_eq!((pa.connections, pb.connections), (1, 1));
        assert_eq!(pa.remote, Some(b.addr));
        assert_eq!(pb.remote, Some(a.addr));
        assert_eq!(
            b.node.send_segment(&id("a"), seg).await,
            SendOutcome::Delivered
        );
    });
}

#[test]
fn inv_15_a_productive_round_cut_by_its_bound_is_followed_up_soon() {
    run(async {
        logs();
        let fleet = SimFleet::new(5, &["a", "b"]);
        let mut all: Vec<_> = (0..30)
            .map(|i| fleet.seed_segment(0, 200 + i, 4_000))
            .collect();
        all.sort();
        // Rounds of at most 8 pulls, a minute apart unless a round was cut while productive.
        let nodes = fleet.start_linked(5, &[("a", "b")], |cfg| {
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
    });
}

#[test]
fn inv_15_inv_24_a_segment_quarantined_here_is_fetched_again_from_a_peer() {
    run(async {
        logs();
        let fleet = SimFleet::new(6, &["a", "b"]);
        let seg = fleet.seed_segment(0, 300, 64_000);
        assert_eq!(fleet.seed_segment(1, 300, 64_000), seg);
        // Periodic rounds are a minute apart: only the quarantine can bring the next one soon.
        let nodes = fleet.start_linked(6, &[("a", "b")], |cfg| {
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
            .quarantine(&seg, "test: corrupt at rest", fleet.clock.now_ms())
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
    });
}
