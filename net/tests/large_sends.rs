//! Sends of large segments to one peer are held to `large_sends_per_peer_max` at once, whatever
//! the relay asks for; small ones are not (INV-20: what a node holds for its sends is bounded
//! by configuration, not by how many segments are due).
//!
//! A raw peer connected to node "n" reads the first frame of each stream n opens and answers
//! only when the test says so: the offers it sees while it holds the first ones unanswered are
//! the sends that n let run at once.

mod common;

use std::time::Duration;

use common::*;
use net::SendOutcome;
use net::wire::{Msg, encode_frame, read_frame};
use store::SegmentId;

/// Two segments over one chunk, one under it.
const LARGE: u64 = 600 << 10;
const SMALL: u64 = 4 << 10;
/// How long the raw peer watches for offers it should (not) get.
const WATCH: Duration = Duration::from_millis(1_500);

/// An offer the raw peer holds: its id and the stream to answer on.
struct Held {
    id: SegmentId,
    send: quinn::SendStream,
}

/// The next stream n opens within `within`, with the offer it carries.
async fn next_offer(conn: &quinn::Connection, within: Duration) -> Option<Held> {
    let (send, mut recv) = tokio::time::timeout(within, conn.accept_bi())
        .await
        .ok()?
        .ok()?;
    let frame = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut recv, 1 << 16))
        .await
        .expect("the offer follows its stream")
        .expect("an offer frame");
    let Msg::Offer { manifest } = frame else {
        panic!("expected an offer, got {frame:?}");
    };
    let signed = store::manifest::SignedManifest::decode(&manifest).expect("a manifest");
    Some(Held {
        id: signed.id(),
        send,
    })
}

/// Every offer n makes within `within`.
async fn offers_within(conn: &quinn::Connection, within: Duration) -> Vec<Held> {
    let deadline = tokio::time::Instant::now() + within;
    let mut held = Vec::new();
    while let Some(h) = next_offer(
        conn,
        deadline.saturating_duration_since(tokio::time::Instant::now()),
    )
    .await
    {
        held.push(h);
    }
    held
}

/// Answers `Have` to every held offer.
async fn have_all(held: Vec<Held>) {
    for mut h in held {
        h.send
            .write_all(&encode_frame(&Msg::Have))
            .await
            .expect("answer");
        let _ = h.send.finish();
    }
}

/// With `large_max` permits: which of two large and one small segment n offers at once, then
/// that every send ends once the raw peer answers.
async fn offered_at_once(large_max: usize) -> (usize, bool) {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["n"], 1 << 30);
    let large = [
        seed(&planned[0].store, 1, LARGE),
        seed(&planned[0].store, 2, LARGE),
    ];
    let small = seed(&planned[0].store, 3, SMALL);
    let n_addr = planned[0].addr;
    let raw_socket = raw_socket();
    let nodes = start(&fleet, planned, &[], |cfg| {
        cfg.known_peers.insert(id("raw"), raw_socket.addr);
        cfg.large_sends_per_peer_max = large_max;
        // The raw peer reads offers only: no receipt gossip streams.
        cfg.receipt_interval_ms = 0;
        // The raw peer holds offers unanswered while it watches.
        cfg.response_timeout_ms = 10_000;
    });
    let n = &nodes[0].node;
    let raw = Raw::on(&fleet.identity("raw"), &raw_socket);
    let conn = raw
        .connect(n_addr, "n")
        .await
        .expect("the raw peer connects");

    let peer = id("raw");
    let sends = async {
        tokio::join!(
            n.send_segment(&peer, large[0]),
            n.send_segment(&peer, large[1]),
            n.send_segment(&peer, small),
        )
    };
    let peer_side = async {
        let first = offers_within(&conn, WATCH).await;
        let large_at_once = first.iter().filter(|h| large.contains(&h.id)).count();
        let small_offered = first.iter().any(|h| h.id == small);
        // Answering frees the permits: the large segment that waited is offered now.
        let mut answered = first.len();
        have_all(first).await;
        while answered < 3 {
            let next = next_offer(&conn, Duration::from_secs(5)).await;
            have_all(vec![next.expect("a waiting send is offered")]).await;
            answered += 1;
        }
        (large_at_once, small_offered)
    };
    let (outcomes, seen) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(sends, peer_side)
    })
    .await
    .expect("every send ends");
    let (a, b, c) = outcomes;
    for outcome in [a, b, c] {
        assert_eq!(outcome, SendOutcome::Have);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_20_large_sends_to_one_peer_wait_for_their_permit() {
    assert_eq!(offered_at_once(1).await, (1, true));
}

/// The control: with room for both, both large segments are offered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_sends_run_together_up_to_their_permits() {
    assert_eq!(offered_at_once(2).await, (2, true));
}
