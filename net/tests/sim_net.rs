//! The simulated network itself, with real nodes on it: a transfer over it, faults, and that a
//! seed replays the same datagram trace.

mod common;
mod simnet;

use std::time::Duration;

use net::sim::Link;
use simnet::{SimFleet, addr, run};

/// Two nodes connect over links `link` and stay connected for a virtual minute (keep-alives);
/// returns the trace digest and the network's counters.
fn connect_run(seed: u64, link: Link) -> ([u8; 32], net::sim::SimNetStats) {
    run(async move {
        let fleet = SimFleet::new(seed, &["a", "b"]);
        fleet.net.set_all(link);
        let (a, _) = fleet.start(0, fleet.config(0, seed));
        let (b, _) = fleet.start(1, fleet.config(1, seed));
        assert!(
            a.wait_connected(b.id(), Duration::from_secs(60)).await,
            "seed {seed}"
        );
        simnet::pass(Duration::from_secs(60)).await;
        assert!(
            a.peers()[0].connected && b.peers()[0].connected,
            "seed {seed}"
        );
        a.shutdown(Duration::from_secs(1)).await;
        b.shutdown(Duration::from_secs(1)).await;
        (fleet.net.trace_digest(), fleet.net.stats())
    })
}

/// One transfer of `len` bytes from a to b over links `link`; returns the trace digest, the
/// network's counters and the virtual ms it took.
fn transfer_run(seed: u64, len: u64, link: Link) -> ([u8; 32], net::sim::SimNetStats, u64) {
    run(async move {
        let fleet = SimFleet::new(seed, &["a", "b"]);
        fleet.net.set_all(link);
        let seg = fleet.seed_segment(0, seed, len);
        let (a, _) = fleet.start(0, fleet.config(0, seed));
        let (b, _) = fleet.start(1, fleet.config(1, seed));
        let t0 = tokio::time::Instant::now();
        let outcome = a.send_segment(b.id(), seg).await;
        assert!(outcome.is_delivered(), "seed {seed}: {outcome:?}");
        assert!(fleet.holds(1, &seg));
        let took = simnet::ms_since(t0);
        a.shutdown(Duration::from_secs(1)).await;
        b.shutdown(Duration::from_secs(1)).await;
        (fleet.net.trace_digest(), fleet.net.stats(), took)
    })
}

#[test]
fn a_segment_crosses_the_simulated_network_on_virtual_time() {
    let (_, stats, took) = transfer_run(1, 4 << 20, Link::default());
    assert!(stats.delivered > 100 && stats.dropped == 0, "{stats:?}");
    assert!(took < 60_000, "took {took} virtual ms");
}

#[test]
fn a_segment_crosses_a_lossy_slow_reordering_duplicating_link() {
    let link = Link {
        loss_ppm: 20_000,
        delay_ms: 20,
        jitter_ms: 5,
        duplicate_ppm: 10_000,
        reorder_ppm: 10_000,
        ..Link::default()
    };
    let (_, stats, _) = transfer_run(2, 1 << 20, link);
    assert!(
        stats.dropped > 0 && stats.duplicated > 0 && stats.reordered > 0,
        "{stats:?}"
    );
}

/// A transfer replays: same seed, same datagrams at the same virtual times.
#[test]
fn same_seed_same_transfer_trace() {
    let link = Link {
        loss_ppm: 10_000,
        delay_ms: 3,
        jitter_ms: 2,
        ..Link::default()
    };
    let runs: Vec<_> = (0..3)
        .map(|_| transfer_run(21, 2 << 20, link.clone()))
        .collect();
    assert_eq!(runs[0], runs[1]);
    assert_eq!(runs[1], runs[2]);
}

#[test]
fn nodes_connect_and_keep_alive_over_a_lossy_slow_reordering_duplicating_link() {
    let link = Link {
        loss_ppm: 50_000,
        delay_ms: 20,
        jitter_ms: 5,
        duplicate_ppm: 50_000,
        reorder_ppm: 50_000,
        ..Link::default()
    };
    let (_, stats) = connect_run(2, link);
    assert!(
        stats.dropped > 0 && stats.duplicated > 0 && stats.reordered > 0,
        "{stats:?}"
    );
}

#[test]
fn a_blocked_link_lets_nothing_through_until_healed() {
    run(async {
        let fleet = SimFleet::new(3, &["a", "b"]);
        fleet.net.set_link(
            addr(0),
            addr(1),
            Link {
                blocked: true,
                ..Link::default()
            },
        );
        let (a, _) = fleet.start(0, fleet.config(0, 3));
        let (b, _) = fleet.start(1, fleet.config(1, 3));
        assert!(!a.wait_connected(b.id(), Duration::from_secs(20)).await);
        assert!(fleet.net.stats().blocked > 0);
        fleet.net.set_all(Link::default());
        assert!(a.wait_connected(b.id(), Duration::from_secs(60)).await);
    });
}

#[test]
fn same_seed_same_trace() {
    let link = Link {
        loss_ppm: 20_000,
        delay_ms: 5,
        jitter_ms: 5,
        ..Link::default()
    };
    let runs: Vec<_> = (0..3).map(|_| connect_run(11, link.clone())).collect();
    assert!(runs[0].1.sent > 0);
    assert_eq!(runs[0], runs[1]);
    assert_eq!(runs[1], runs[2]);
    assert_ne!(
        runs[0].0,
        connect_run(12, link).0,
        "another seed, another trace"
    );
}
