//! Handshake admission under floods (INV-18) on the simulated network and virtual time: half-open
//! handshakes hold their budgets until their deadline, which here passes without being waited
//! for. TLS refusals and the address filter (strangers' datagrams and handshakes) on real UDP
//! stay in `mtls.rs`.

mod common;
mod simnet;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use simnet::{SimFleet, SimNode, run};

/// The seed of the simulated network and fleet.
const SEED: u64 = 23;

/// Ids under which "n" lists the raw clients' addresses (no node runs under them).
const PROBES: [&str; 3] = ["probe", "probe-2", "probe-3"];

/// Starts node "n" knowing "good" (a running node) and the [`PROBES`], whose addresses are the
/// returned sockets (for raw clients).
fn server_with(tweak: impl Fn(&mut net::NetConfig)) -> (SimFleet, Vec<SimNode>, Vec<RawSocket>) {
    let fleet = SimFleet::new(SEED, &["n", "good", "probe", "probe-2", "probe-3"]);
    let probes: Vec<RawSocket> = (0..PROBES.len())
        .map(|i| RawSocket {
            socket: fleet.net.socket(simnet::addr(2 + i)),
            addr: simnet::addr(2 + i),
        })
        .collect();
    let nodes = fleet.start_nodes(SEED, &["n", "good"], &[("n", "good")], |cfg| {
        if cfg.node_id.as_str() == "n" {
            for (name, probe) in PROBES.iter().zip(&probes) {
                cfg.known_peers.insert(id(name), probe.addr);
            }
        }
        tweak(cfg);
    });
    (fleet, nodes, probes)
}

/// A raw client at `socket` that hears only QUIC Retry packets: it proves its address and then
/// never hears the handshake, so each of its handshakes holds server state until the deadline.
fn hears_only_retry(fleet: &SimFleet, socket: &RawSocket) -> Raw {
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

#[test]
fn inv_18_unauthenticated_handshakes_are_capped_per_address_and_in_total_and_time_out() {
    run(async {
        logs();
        let (fleet, nodes, probes) = server_with(|cfg| {
            cfg.handshakes_unauthenticated_max = 2;
            cfg.handshakes_per_addr_max = 1;
            // Inbound handshakes end after 1 s; this node's own dials may take 10.
            cfg.handshake_timeout_ms = 10_000;
            cfg.handshake_unauthenticated_timeout_ms = 1_000;
        });
        let n = &nodes[0];
        // Let the node's own peer connect first (its handshake is done before the test starts).
        assert!(
            n.node
                .wait_connected(&id("good"), Duration::from_secs(5))
                .await
        );
        // Two handshakes from one address that never complete: the first holds the address's one
        // slot, the second is refused.
        let stuck = hears_only_retry(&fleet, &probes[0]);
        let stuck_tasks = start_handshakes(&stuck, n.addr, 2, Duration::from_secs(4));
        assert!(
            eventually(Duration::from_secs(3), || n
                .node
                .stats()
                .handshakes_refused_addr_cap
                >= 1)
            .await,
            "{:?}",
            n.node.stats()
        );
        assert!(n.node.stats().handshakes_retried >= 2, "validated first");
        // A second address takes the second slot of the total...
        let stuck2 = hears_only_retry(&fleet, &probes[1]);
        let stuck2_tasks = start_handshakes(&stuck2, n.addr, 1, Duration::from_secs(4));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // ...so a third address is refused by the total, before any TLS work.
        let third = Raw::on(&fleet.identity("probe"), &probes[2]);
        let refused = third.connect(n.addr, "n").await;
        assert!(refused.is_err(), "{refused:?}");
        assert!(n.node.stats().handshakes_refused_cap >= 1);
        // The stuck handshakes time out (1 s, not the 10 s of a dial)...
        assert!(
            eventually(Duration::from_secs(4), || n
                .node
                .stats()
                .handshakes_timed_out
                >= 2)
            .await,
            "{:?}",
            n.node.stats()
        );
        // ...and once their clients are gone, the slots are free.
        drop((stuck, stuck2, stuck_tasks, stuck2_tasks));
        let mut conn = None;
        for _ in 0..10 {
            if let Ok(c) = third.connect(n.addr, "n").await {
                conn = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let conn = conn.expect("a slot is free again");
        assert!(app_data_gets_through(&conn).await);
    });
}

#[test]
fn inv_18_handshake_flood_does_not_keep_a_real_peer_out() {
    run(async {
        logs();
        let (fleet, nodes, probes) =
            server_with(|cfg| cfg.handshake_unauthenticated_timeout_ms = 1_500);
        let n = &nodes[0];
        assert!(
            n.node
                .wait_connected(&id("good"), Duration::from_secs(5))
                .await
        );
        // 100 handshakes whose replies go nowhere: each gets a Retry and nothing else, so none
        // even reaches admission — no budget is touched, no state waits for a deadline.
        let deaf = CuttableSocket::wrap(probes[0].socket.clone());
        deaf.deaf.store(true, Ordering::SeqCst);
        let deaf = Raw::with_socket(&fleet.identity("probe"), deaf);
        let deaf_tasks = start_handshakes(&deaf, n.addr, 100, Duration::from_secs(6));
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        let st = n.node.stats();
        assert!(st.handshakes_retried >= 100, "{st:?}");
        assert_eq!(
            (
                st.handshakes_timed_out,
                st.handshakes_refused_addr_cap,
                st.handshakes_refused_cap
            ),
            (0, 0, 0),
            "{st:?}"
        );
        // 100 more from a client that proves its address and then goes deaf: at most
        // handshakes_per_addr_max of them get state.
        let half = hears_only_retry(&fleet, &probes[1]);
        let half_tasks = start_handshakes(&half, n.addr, 100, Duration::from_secs(6));
        assert!(
            eventually(Duration::from_secs(5), || {
                n.node.stats().handshakes_refused_addr_cap >= 90
            })
            .await,
            "{:?}",
            n.node.stats()
        );
        // Meanwhile a real peer gets in at once.
        let real = Raw::on(&fleet.identity("probe"), &probes[2]);
        let started = tokio::time::Instant::now();
        let conn = real
            .connect(n.addr, "n")
            .await
            .expect("the real peer connects");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "kept out for {:?}",
            started.elapsed()
        );
        assert!(app_data_gets_through(&conn).await);
        assert_eq!(
            n.node.stats().handshakes_refused_cap,
            0,
            "the total was never reached"
        );
        // Only the half-open ones held state, and they time out; the deaf ones never held any.
        drop((deaf_tasks, half_tasks));
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        let st = n.node.stats();
        assert!(
            st.handshakes_timed_out <= 2 * net::limits::HANDSHAKES_PER_ADDR_MAX_DEFAULT as u64,
            "{st:?}"
        );
        assert_eq!(st.datagrams_blocked_send, 0);
    });
}
