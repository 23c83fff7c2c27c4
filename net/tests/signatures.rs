//! Bad signatures over the network (INV-01, INV-02, INV-26): a known peer (a raw QUIC client
//! with a valid fleet certificate, at its listed address) offers segments that must not be
//! stored. Each is refused with the right reason, counted through `NetHooks::on_offer`, and
//! leaves nothing: no row, no `.seg` file, no temp file, no partial, and no jobs (the ingest
//! hook never ran).

mod common;

use std::time::Duration;

use common::*;
use net::wire::{Msg, encode_frame, read_frame};
use net::{OfferResult, RejectReason};
use store::keys::PublisherSecret;
use store::manifest::SignedManifest;

const SEG_BYTES: u64 = 256 << 10;

struct Setup {
    _fleet: Fleet,
    nodes: Vec<TestNode>,
    liar: quinn::Connection,
    _raw: Raw,
}

async fn setup() -> Setup {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["n"], 1 << 30);
    let n_addr = planned[0].addr;
    let liar_socket = raw_socket();
    let nodes = start(&fleet, planned, &[], |cfg| {
        cfg.known_peers.insert(id("liar"), liar_socket.addr);
    });
    let raw = Raw::on(&fleet.identity("liar"), &liar_socket);
    let liar = raw
        .connect(n_addr, "n")
        .await
        .expect("the liar is a known peer");
    Setup {
        _fleet: fleet,
        nodes,
        liar,
        _raw: raw,
    }
}

/// Offers `manifest` (encoded as given) and, if the node wants the payload, sends `body`.
/// Returns the node's last answer.
async fn offer(conn: &quinn::Connection, manifest: Vec<u8>, body: &[u8]) -> Msg {
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(&encode_frame(&Msg::Offer { manifest }))
        .await
        .expect("offer");
    let bounded = Duration::from_secs(5);
    let answer = tokio::time::timeout(bounded, read_frame(&mut recv, 1 << 16))
        .await
        .expect("an answer in time")
        .expect("a frame");
    let Msg::Want { offset } = answer else {
        return answer;
    };
    let _ = send.write_all(&body[offset as usize..]).await;
    let _ = send.finish();
    tokio::time::timeout(bounded, read_frame(&mut recv, 1 << 16))
        .await
        .expect("a final answer in time")
        .expect("a frame")
}

/// The offer was refused with `reason`, counted as such, and left nothing behind.
async fn refused_and_nothing_left(
    s: &Setup,
    answer: Msg,
    signed_id: store::SegmentId,
    reason: RejectReason,
) {
    let n = &s.nodes[0];
    match answer {
        Msg::Reject { reason: r, .. } => assert_eq!(r, reason),
        other => panic!("expected Reject({reason}), got {other:?}"),
    }
    assert!(
        eventually(Duration::from_secs(3), || n
            .hooks
            .offers
            .lock()
            .unwrap()
            .contains(&("liar".to_owned(), OfferResult::Rejected(reason))))
        .await,
        "on_offer reported Rejected({reason}): {:?}",
        n.hooks.offers.lock().unwrap()
    );
    assert_eq!(n.store.holding(&signed_id).unwrap(), store::Holding::Absent);
    assert!(stored_ids(&n.store).is_empty(), "no row");
    assert_eq!(seg_files(n.data.path()), 0, "no .seg file");
    assert!(
        eventually(Duration::from_secs(3), || tmp_files(n.data.path()) == 0).await,
        "no temp file or partial"
    );
    assert!(
        n.hooks.stored_in_txn.lock().unwrap().is_empty(),
        "the ingest hook never ran"
    );
    assert!(test_jobs(&n.store).is_empty(), "no jobs");
    assert!(n.hooks.received.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_01_inv_26_a_manifest_whose_signature_does_not_verify_is_refused_over_the_network() {
    let s = setup().await;
    let signed = segment(1, SEG_BYTES);
    let body = payload(1, SEG_BYTES as usize);
    // The encoding ends with the 64 signature bytes: flip one bit of the last.
    let mut encoded = signed.encode();
    *encoded.last_mut().unwrap() ^= 0x01;
    assert!(
        SignedManifest::decode(&encoded).is_ok(),
        "still well formed"
    );
    let answer = offer(&s.liar, encoded, &body).await;
    refused_and_nothing_left(&s, answer, signed.id(), RejectReason::BadSignature).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_01_inv_26_a_manifest_changed_after_signing_is_refused_over_the_network() {
    let s = setup().await;
    // The trusted publisher signed a manifest for payload 2; the liar swaps in the manifest
    // of payload 3 (same publisher key in it) and keeps the old signature.
    let original = segment(2, SEG_BYTES);
    let changed = segment(3, SEG_BYTES);
    let mut encoded = changed.encode();
    let n = encoded.len();
    encoded[n - 64..].copy_from_slice(original.signature());
    let answer = offer(&s.liar, encoded, &payload(3, SEG_BYTES as usize)).await;
    refused_and_nothing_left(&s, answer, changed.id(), RejectReason::BadSignature).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_01_inv_26_a_segment_of_an_untrusted_publisher_is_refused_over_the_network() {
    let s = setup().await;
    let rogue = PublisherSecret::from_seed([99; 32]);
    let body = payload(4, SEG_BYTES as usize);
    let hash = *blake3::hash(&body).as_bytes();
    let signed = signed_for(&rogue, "rogue", SEG_BYTES, hash, None);
    let answer = offer(&s.liar, signed.encode(), &body).await;
    refused_and_nothing_left(&s, answer, signed.id(), RejectReason::UntrustedPublisher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_02_inv_26_a_re_signed_manifest_with_a_payload_that_does_not_match_is_refused() {
    let s = setup().await;
    // Properly signed by the trusted publisher, for payload 5; the liar sends payload 6.
    let signed = segment(5, SEG_BYTES);
    let answer = offer(&s.liar, signed.encode(), &payload(6, SEG_BYTES as usize)).await;
    refused_and_nothing_left(&s, answer, signed.id(), RejectReason::HashMismatch).await;
}
