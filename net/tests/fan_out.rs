//! Fan-out from one read: sends of one stored segment to several peers at once read and check
//! each group once, and feed every stream from the same verified groups (INV-02, INV-24).

mod common;

use std::io::Read;

use common::*;
use net::SendOutcome;
use store::SegmentId;

/// Twelve groups and a bit: enough for the sends to run side by side for a while.
const SEG_BYTES: u64 = (12 << 20) + 12_345;
const GROUPS: u64 = SEG_BYTES.div_ceil(1 << 20);

/// The whole stored `.seg` file of `id` in `store`, verified on the way.
fn stored_file(store: &store::Store, id: &SegmentId) -> Vec<u8> {
    let reader = store.open_for_read(id, now_ms()).expect("stored");
    let mut out = Vec::new();
    reader.copy_to(&mut out, now_ms()).expect("verifies");
    out
}

/// Nodes a, b and c, a knowing both others, and segment (`tag`, [`SEG_BYTES`]) stored at a;
/// `at_rest` may change a's stored file before the nodes start.
fn fan(tag: u64, at_rest: impl FnOnce(&std::path::Path)) -> (Fleet, Vec<TestNode>, SegmentId) {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["a", "b", "c"], 1 << 30);
    let seg = seed(&planned[0].store, tag, SEG_BYTES);
    at_rest(&planned[0].store.layout().segment_file(&seg));
    let nodes = start(&fleet, planned, &[("a", "b"), ("a", "c")], |_| {});
    (fleet, nodes, seg)
}

/// a sends `seg` to b and to c at the same time: the two outcomes.
async fn send_to_both(nodes: &[TestNode], seg: SegmentId) -> (SendOutcome, SendOutcome) {
    let (b_id, c_id) = (nodes[1].id(), nodes[2].id());
    let a = &nodes[0].node;
    tokio::join!(a.send_segment(&b_id, seg), a.send_segment(&c_id, seg))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_segment_sent_to_two_peers_at_once_is_read_once() {
    let (_fleet, nodes, seg) = fan(21, |_| {});
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let before = a.store.shared_groups_read();
    let (to_b, to_c) = send_to_both(&nodes, seg).await;
    assert_eq!(
        (to_b, to_c),
        (SendOutcome::Delivered, SendOutcome::Delivered)
    );
    let original = stored_file(&a.store, &seg);
    assert!(stored_file(&b.store, &seg) == original, "b's copy differs");
    assert!(stored_file(&c.store, &seg) == original, "c's copy differs");
    // Each send alone would read every group: together they read fewer than that twice (a send
    // that falls more than the ring behind reads its groups itself, so not exactly once).
    let read = a.store.shared_groups_read() - before;
    eprintln!("{read} groups read from the file for two sends of {GROUPS} groups");
    assert!(
        (GROUPS..2 * GROUPS).contains(&read),
        "{read} groups read from the file for two sends of {GROUPS}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_24_a_corrupt_group_ends_every_send_of_a_shared_read_and_quarantines_it() {
    // One byte of the fourth group flipped at rest.
    let (_fleet, nodes, seg) = fan(22, |path| {
        let mut bytes = std::fs::read(path).unwrap();
        let header = bytes.len() - SEG_BYTES as usize;
        bytes[header + (3 << 20) + 77] ^= 0x01;
        std::fs::write(path, &bytes).unwrap();
    });
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let path = a.store.layout().segment_file(&seg);
    let (to_b, to_c) = send_to_both(&nodes, seg).await;
    for (peer, outcome) in [("b", to_b), ("c", to_c)] {
        match outcome {
            SendOutcome::LocalCorrupt(reason) => {
                assert!(reason.contains("group 3"), "{peer}: {reason}")
            }
            other => panic!("{peer}: expected LocalCorrupt, got {other:?}"),
        }
    }
    assert_eq!(a.store.quarantined().unwrap().len(), 1, "quarantined once");
    assert!(stored_ids(&a.store).is_empty());
    for peer in [b, c] {
        assert!(stored_ids(&peer.store).is_empty(), "a peer stored it");
    }
    // The quarantined copy is not sent again.
    assert_eq!(
        a.node.send_segment(&b.id(), seg).await,
        SendOutcome::NotStored
    );
    let mut rest = Vec::new();
    std::fs::File::open(&path)
        .map(|mut f| f.read_to_end(&mut rest))
        .ok();
    assert!(rest.is_empty(), "the corrupt file left segments/");
}
