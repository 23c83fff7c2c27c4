//! Cut-through: a node forwards a segment while still receiving it, one verified group at a
//! time, and never a byte that failed verification.
//!
//! The upstream is a raw peer speaking the wire protocol by hand, so the test decides when each
//! byte arrives (and which bytes lie); `b` forwards to `c` (its hooks name `c`), and `a` holds a
//! good copy for the path around a liar.

mod common;

use std::time::Duration;

use common::*;
use net::wire::{Msg, RejectReason, read_frame};
use net::{OfferResult, SendOutcome};
use store::Holding;
use store::outboard::GROUP_BYTES;

const SEG_BYTES: u64 = 16 << 20;
const TAG: u64 = 31;

struct Line {
    _fleet: Fleet,
    nodes: Vec<TestNode>,
    upstream: quinn::Connection,
    _raw: Raw,
}

impl Line {
    fn a(&self) -> &TestNode {
        &self.nodes[0]
    }
    fn b(&self) -> &TestNode {
        &self.nodes[1]
    }
    fn c(&self) -> &TestNode {
        &self.nodes[2]
    }
}

/// `a` (holds the segment) — `b` — `c`, and a raw `up` known to `b`; `b` forwards to `c`.
async fn line() -> Line {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["a", "b", "c"], 1 << 30);
    seed(&planned[0].store, TAG, SEG_BYTES);
    let b_addr = planned[1].addr;
    let up = raw_socket();
    let nodes = start(
        &fleet,
        planned,
        &[("a", "b"), ("a", "c"), ("b", "c")],
        |cfg| {
            cfg.stall_timeout_ms = 5_000;
            cfg.response_timeout_ms = 10_000;
            if cfg.node_id.as_str() == "b" {
                cfg.known_peers.insert(id("up"), up.addr);
            }
        },
    );
    *nodes[1].hooks.forward_to.lock().unwrap() = vec!["c".to_owned()];
    // `c` forwards too (to `a`, which holds it already), so its verified groups show in flight.
    *nodes[2].hooks.forward_to.lock().unwrap() = vec!["a".to_owned()];
    assert!(
        nodes[1]
            .node
            .wait_connected(&id("c"), Duration::from_secs(5))
            .await
    );
    let raw = Raw::on(&fleet.identity("up"), &up);
    let upstream = raw.connect(b_addr, "b").await.expect("connect");
    Line {
        _fleet: fleet,
        nodes,
        upstream,
        _raw: raw,
    }
}

/// Offers the segment to `b` from the raw upstream and sends its outboard; returns the streams.
async fn offer(l: &Line) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, recv, answer) = raw_offer(&l.upstream, &segment(TAG, SEG_BYTES)).await;
    assert_eq!(answer, Msg::Want { offset: 0 });
    send.write_all(&outboard(TAG, SEG_BYTES))
        .await
        .expect("outboard");
    (send, recv)
}

/// Verified bytes `c` holds of the segment: in flight (from `b`) or as a partial.
fn c_has(l: &Line) -> u64 {
    let seg = segment(TAG, SEG_BYTES).id();
    match l.c().store.in_flight(&seg) {
        Some(f) => f.verified(),
        None => match l.c().store.holding(&seg).unwrap() {
            Holding::Partial { offset } => offset,
            Holding::Stored => SEG_BYTES,
            _ => 0,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_is_forwarded_while_it_still_arrives_and_stored_everywhere() {
    let l = line().await;
    let seg = segment(TAG, SEG_BYTES).id();
    let body = payload(TAG, SEG_BYTES as usize);
    let (mut send, mut recv) = offer(&l).await;
    let half = (SEG_BYTES / 2) as usize;
    send.write_all(&body[..half]).await.expect("first half");

    // With half of it sent, `c` already holds verified groups of it, from `b`, which has not
    // stored it yet: forwarding began before the segment was whole anywhere but at `a`. (Each
    // hop holds back at most the group it is completing and the chunk it is filling.)
    assert!(
        eventually(Duration::from_secs(10), || c_has(&l)
            >= half as u64 - 2 * GROUP_BYTES)
        .await,
        "c holds {} bytes",
        c_has(&l)
    );
    assert_eq!(l.b().store.holding(&seg).unwrap(), Holding::Ingesting);

    // Meanwhile the relay sends it to `c` too (as its job would once `b` stored it): that
    // send takes the running forward's outcome instead of offering the segment again.
    let upstream = async {
        send.write_all(&body[half..]).await.expect("second half");
        send.finish().unwrap();
        tokio::time::timeout(Duration::from_secs(10), read_frame(&mut recv, 1 << 16))
            .await
            .expect("answered in time")
            .expect("answer")
    };
    let c_id = id("c");
    let (answer, relayed) = tokio::join!(upstream, l.b().node.send_segment(&c_id, seg));
    assert_eq!(answer, Msg::Ack);
    assert_eq!(relayed, SendOutcome::Delivered);
    let offers = l.c().hooks.offers.lock().unwrap().clone();
    assert_eq!(
        offers,
        vec![("b".to_owned(), OfferResult::Stored)],
        "c was offered it once"
    );
    assert!(
        eventually(Duration::from_secs(10), || stored_ids(&l.c().store)
            == vec![seg])
        .await,
        "c stored it"
    );
    assert_eq!(
        test_jobs(&l.c().store).get(&seg).map(String::as_str),
        Some("b"),
        "c received it from b"
    );
    // Both copies verify end to end, and `c` was sent the payload once.
    for n in [l.b(), l.c()] {
        let reader = n.store.open_for_read(&seg, now_ms()).unwrap();
        reader.copy_to(&mut std::io::sink(), now_ms()).unwrap();
    }
    assert_eq!(l.c().node.stats().payload_bytes_received, SEG_BYTES);
    // The forward counted as an ordinary delivery; a later relay of it finds it there.
    assert_eq!(
        l.b().node.send_segment(&id("c"), seg).await,
        SendOutcome::Have
    );
}

/// A liar upstream in the middle of a line: its outboard is right, its fifth group is not.
/// `b` forwards the four good groups to `c` and nothing of the bad one; `c` keeps exactly the
/// verified prefix, never sees a hash mismatch from `b`, and ends with the right segment from
/// another path (`a`), resuming after that prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_02_a_forwarder_forwards_only_verified_groups() {
    let l = line().await;
    let seg = segment(TAG, SEG_BYTES).id();
    let mut body = payload(TAG, SEG_BYTES as usize);
    let bad_group = 4u64;
    let good = (bad_group * GROUP_BYTES) as usize;
    body[good + 1000] ^= 0x5a;
    let (mut send, mut recv) = offer(&l).await;
    send.write_all(&body[..good]).await.expect("good groups");
    assert!(
        eventually(Duration::from_secs(10), || c_has(&l)
            >= good as u64 - GROUP_BYTES)
        .await,
        "c holds {} bytes",
        c_has(&l)
    );
    // The lie, and a group more: `b` finds the bad group as it completes and refuses the
    // segment.
    let wrote = send
        .write_all(&body[good..good + 2 * GROUP_BYTES as usize])
        .await;
    assert!(wrote.is_ok(), "{wrote:?}");
    let answer = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut recv, 1 << 16))
        .await
        .expect("answered in time");
    assert!(
        matches!(
            answer,
            Ok(Msg::Reject {
                reason: RejectReason::HashMismatch,
                ..
            })
        ),
        "{answer:?}"
    );
    // `c` keeps the verified prefix as a partial, byte for byte the real payload's.
    assert!(
        eventually(Duration::from_secs(10), || matches!(
            l.c().store.holding(&seg).unwrap(),
            Holding::Partial { offset } if offset == good as u64
        ))
        .await,
        "c: {:?}",
        l.c().store.holding(&seg)
    );
    let part = std::fs::read(l.c().store.layout().tmp_file(&seg)).unwrap();
    let header = part.len() - good;
    assert!(
        part[header..] == payload(TAG, good)[..],
        "c's partial is the real prefix"
    );
    let c_offers = l.c().hooks.offers.lock().unwrap().clone();
    assert!(
        !c_offers.contains(&(
            "b".to_owned(),
            OfferResult::Rejected(RejectReason::HashMismatch)
        )),
        "b never forwarded a bad byte: {c_offers:?}"
    );
    assert_eq!(stored_ids(&l.b().store), vec![]);

    // Another path: `a` sends it to `c`, which resumes after its verified prefix.
    let outcome = l.a().node.send_segment(&id("c"), seg).await;
    assert_eq!(outcome, SendOutcome::Delivered);
    assert_eq!(l.a().node.stats().transfers_resumed, 1);
    assert_eq!(stored_ids(&l.c().store), vec![seg]);
    let reader = l.c().store.open_for_read(&seg, now_ms()).unwrap();
    reader.copy_to(&mut std::io::sink(), now_ms()).unwrap();
}
