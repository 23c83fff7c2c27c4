//! Fleet receipts between real nodes on loopback QUIC: a segment's fleet view converges on
//! every node, a stopped node stays missing, an eviction changes the verdict, and a forged
//! receipt relayed by a peer is refused and counted (INV-28, INV-31).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use net::receipts::book::Head;
use net::receipts::verdict::{MemberState, Roster, SegmentView, Verdict, segment_view};
use net::receipts::{Entry, Event, SignedReceipt};
use store::SegmentId;

/// Receipt gossip interval of these tests.
const GOSSIP_MS: u64 = 300;
/// The fleet is a ring of five (line 1-2-3-4-5 plus the chord 5-1): its diameter is 2.
const DIAMETER: u64 = 2;

/// How long after every node stored a segment every node's view must say `everywhere`: the
/// holder's reconciler notices its store within one tick (200 ms); each hop then costs at most
/// one gossip interval plus a round (a few loopback round trips, bounded by the response
/// timeout of 3 s in `quick`) — and receipts travel towards every node at once, so the
/// farthest node is `DIAMETER` hops from the last holder. Doubled for a loaded machine.
fn everywhere_bound() -> Duration {
    let reconcile = 200;
    let per_hop = GOSSIP_MS + 3_000;
    Duration::from_millis(2 * (reconcile + DIAMETER * per_hop))
}

const NAMES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];
const LINKS: [(&str, &str); 5] = [
    ("n1", "n2"),
    ("n2", "n3"),
    ("n3", "n4"),
    ("n4", "n5"),
    ("n5", "n1"),
];

fn view(node: &TestNode, seg: SegmentId) -> SegmentView {
    let fleet = node.node.fleet().expect("receipts on");
    let heads: BTreeMap<_, Head> = fleet.book.heads().unwrap().into_iter().collect();
    let roster = Roster::new(
        &NAMES.map(id),
        &node.id(),
        std::iter::empty(),
        std::iter::empty(),
    );
    let holders = fleet.book.holders(&seg).unwrap();
    segment_view(&roster, &holders, &heads, now_ms(), 600_000)
}

fn ring() -> (Fleet, Vec<TestNode>, SegmentId) {
    let fleet = Fleet::new();
    let planned = plan(&NAMES, 1 << 30);
    let seg = seed(&planned[2].store, 1, 10_000);
    let nodes = start(&fleet, planned, &LINKS, |cfg| {
        cfg.catchup_on_connect = true;
        cfg.catchup_interval_ms = 500;
        cfg.receipt_interval_ms = GOSSIP_MS;
    });
    (fleet, nodes, seg)
}

/// A ring whose segment every node stores and n1 sees everywhere.
async fn ring_seen_everywhere_by_n1() -> (Fleet, Vec<TestNode>, SegmentId) {
    let (fleet, nodes, seg) = ring();
    everyone_stores(&nodes.iter().collect::<Vec<_>>(), seg).await;
    let seen = eventually(everywhere_bound(), || {
        view(&nodes[0], seg).verdict == Verdict::Everywhere
    })
    .await;
    assert!(seen, "{:?}", view(&nodes[0], seg));
    (fleet, nodes, seg)
}

async fn everyone_stores(nodes: &[&TestNode], seg: SegmentId) {
    let stores: Vec<_> = nodes.iter().map(|n| n.store.clone()).collect();
    assert!(
        eventually(Duration::from_secs(30), || stores
            .iter()
            .all(|s| stored_ids(s).contains(&seg)))
        .await,
        "the segment never reached every node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_31_every_node_of_a_ring_sees_a_segment_everywhere_within_the_bound() {
    logs();
    let (_fleet, nodes, seg) = ring();
    everyone_stores(&nodes.iter().collect::<Vec<_>>(), seg).await;
    let stored_everywhere = Instant::now();
    let bound = everywhere_bound();
    let all_see = eventually(bound, || {
        nodes
            .iter()
            .all(|n| view(n, seg).verdict == Verdict::Everywhere)
    })
    .await;
    let verdicts: Vec<_> = nodes.iter().map(|n| view(n, seg).verdict).collect();
    assert!(all_see, "not everywhere within {bound:?}: {verdicts:?}");
    eprintln!(
        "every node saw `everywhere` {:?} after the last node stored it (bound {bound:?})",
        stored_everywhere.elapsed()
    );

    // An eviction on n5 changes the verdict on n1 (and the tombstone keeps catch-up from
    // fetching it back).
    assert_eq!(nodes[4].store.evict(&[seg]).unwrap(), vec![seg]);
    let seen = eventually(bound, || {
        view(&nodes[0], seg).verdict == Verdict::Partial { held: 4, of: 5 }
    })
    .await;
    let v = view(&nodes[0], seg);
    assert!(seen, "eviction not seen: {v:?}");
    let n5 = v.members.iter().find(|m| m.node == id("n5")).unwrap();
    assert_eq!(n5.state, MemberState::Gone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_31_a_stopped_node_stays_missing() {
    logs();
    let (_fleet, mut nodes, seg) = ring_seen_everywhere_by_n1().await;
    let bound = everywhere_bound();
    // n4 stops; a second segment arrives on n3 and reaches the four others.
    let n4 = nodes.remove(3);
    n4.node.shutdown(Duration::from_secs(2)).await;
    drop(n4);
    let second = seed(&nodes[2].store, 2, 10_000);
    everyone_stores(&nodes.iter().collect::<Vec<_>>(), second).await;
    let seen = eventually(bound, || {
        nodes
            .iter()
            .all(|n| view(n, second).verdict == Verdict::Partial { held: 4, of: 5 })
    })
    .await;
    assert!(seen, "{:?}", view(&nodes[0], second));
    // Held for long enough to be sure nothing turns it into `everywhere`.
    tokio::time::sleep(Duration::from_millis(3 * GOSSIP_MS)).await;
    let v = view(&nodes[0], second);
    assert_eq!(v.verdict, Verdict::Partial { held: 4, of: 5 });
    let missing: Vec<_> = v.missing().map(|m| (m.node.clone(), m.state)).collect();
    assert_eq!(missing, vec![(id("n4"), MemberState::NoReceipt)]);
    // The first segment is still held by n4 as far as anyone knows.
    assert_eq!(view(&nodes[0], seg).verdict, Verdict::Everywhere);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_28_a_forged_receipt_relayed_by_a_peer_is_refused_and_counted() {
    logs();
    let (_fleet, nodes, seg) = ring_seen_everywhere_by_n1().await;
    let bound = everywhere_bound();
    // n2 (n1's neighbour) holds, unverified, an altered copy of n3's receipt about the segment:
    // "gone", with a higher sequence number, under n3's certificate and old signature.
    let n2 = nodes[1].node.fleet().unwrap();
    let (pages, _) = n2.book.page(&id("n3"), 0, 1_000, 1 << 20).unwrap();
    let (real, bytes) = pages
        .into_iter()
        .map(|b| (SignedReceipt::decode(&b).unwrap().receipt().unwrap(), b))
        .find(|(r, _)| {
            r.entries
                .iter()
                .any(|e| e.event == Event::Stored { segment: seg.0 })
        })
        .expect("n2 knows n3's receipt");
    let mut forged = SignedReceipt::decode(&bytes).unwrap();
    let mut claim = real.clone();
    claim.seq += 1_000_000;
    claim.entries = vec![Entry {
        at_ms: real.at_ms,
        event: Event::Gone { segment: seg.0 },
    }];
    forged.body = postcard::to_allocvec(&claim).unwrap();
    n2.book.merge(vec![(claim, forged)]).unwrap();

    let n1 = nodes[0].node.fleet().unwrap();
    let refused = eventually(bound, || n1.stats.snapshot().refused > 0).await;
    assert!(refused, "n1 never refused the forged receipt");
    // n1 still believes n3's own word.
    tokio::time::sleep(Duration::from_millis(2 * GOSSIP_MS)).await;
    let v = view(&nodes[0], seg);
    assert_eq!(v.verdict, Verdict::Everywhere, "{v:?}");
}
