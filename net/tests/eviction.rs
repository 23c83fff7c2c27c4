//! A full store over the network (INV-06, INV-07, INV-08): a known peer that offers a genuine
//! large manifest and then sends a few bytes — and stalls, or ends the stream — makes its
//! neighbour evict nothing and tombstone nothing; an honest transfer of the same segment still
//! evicts what it needs, no more, and is stored.

mod common;

use std::time::Duration;

use common::*;
use net::wire::{Msg, StreamCode, read_frame};
use net::{RejectReason, SendOutcome};
use store::{Holding, SegmentId, Store};

/// Segments that fill `n`'s store.
const FILLS: u64 = 16;
const FILL_BYTES: u64 = 1 << 20;
/// The large segment offered: it fits only after evicting most of the fills.
const BIG_BYTES: u64 = 12 << 20;
/// Room left in `n`'s store once it is filled: far less than the large segment, more than the
/// few bytes the liar sends.
const SLACK_BYTES: u64 = 64 << 10;
const FEW_BYTES: usize = 5;

fn file_len(tag: u64, len: u64) -> u64 {
    store::segfile::file_len_of(&segment(tag, len))
}

struct Setup {
    _fleet: Fleet,
    nodes: Vec<TestNode>,
    liar: quinn::Connection,
    _raw: Raw,
    fills: Vec<SegmentId>,
}

impl Setup {
    fn n(&self) -> &Store {
        &self.nodes[0].store
    }

    /// Every fill still stored (so none evicted, none tombstoned).
    fn fills_intact(&self) {
        for id in &self.fills {
            assert_eq!(
                self.n().holding(id).unwrap(),
                Holding::Stored,
                "fill {id} was evicted"
            );
        }
        let usage = self.n().usage();
        assert!(
            usage.total() <= self.n().config().ceiling_bytes,
            "{usage:?}"
        );
    }
}

/// `n` with a store filled to `SLACK_BYTES` below its ceiling; `good`, which holds the large
/// segments (tags 100, 101) and knows `n`; `liar`, known to `n`, connected to it.
async fn setup() -> Setup {
    logs();
    let fleet = Fleet::new();
    let fill_tags: Vec<u64> = (0..FILLS).collect();
    let filled: u64 = fill_tags.iter().map(|&t| file_len(t, FILL_BYTES)).sum();
    let ceiling = filled + SLACK_BYTES;
    let mut fills = Vec::new();
    let n = plan_one("n", |dir| {
        let store = open_store(dir, ceiling);
        for &tag in &fill_tags {
            fills.push(seed(&store, tag, FILL_BYTES));
        }
        store
    });
    let good = plan_one("good", |dir| {
        let store = open_store(dir, 1 << 30);
        seed(&store, 100, BIG_BYTES);
        seed(&store, 101, BIG_BYTES);
        store
    });
    assert_eq!(n.store.usage().total(), filled);
    let n_addr = n.addr;
    // The liar sends from the address n lists for it (n hears only its peers' addresses).
    let liar_socket = raw_socket();
    let nodes = start(&fleet, vec![n, good], &[("n", "good")], |cfg| {
        if cfg.node_id.as_str() == "n" {
            cfg.known_peers.insert(id("liar"), liar_socket.addr);
        }
    });
    let raw = Raw::on(&fleet.identity("liar"), &liar_socket);
    let liar = raw.connect(n_addr, "n").await.expect("liar connects");
    Setup {
        _fleet: fleet,
        nodes,
        liar,
        _raw: raw,
        fills,
    }
}

/// Offers segment `tag` (genuine, `BIG_BYTES`) and sends its first `FEW_BYTES` payload bytes.
async fn offer_a_few_bytes(
    conn: &quinn::Connection,
    tag: u64,
) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, recv, answer) = raw_offer(conn, &segment(tag, BIG_BYTES)).await;
    assert_eq!(
        answer,
        Msg::Want { offset: 0 },
        "admitted: it fits after eviction"
    );
    send.write_all(&outboard(tag, BIG_BYTES))
        .await
        .expect("the outboard");
    send.write_all(&payload(tag, FEW_BYTES))
        .await
        .expect("a few bytes");
    (send, recv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_07_inv_08_large_offer_cut_after_a_few_bytes_evicts_nothing() {
    let s = setup().await;

    // The liar sends 5 bytes and ends the stream: refused as truncated.
    let (mut send, mut recv) = offer_a_few_bytes(&s.liar, 101).await;
    send.finish().unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut recv, 1 << 16))
        .await
        .expect("answered in time");
    match answer {
        Ok(Msg::Reject { reason, .. }) => assert_eq!(reason, RejectReason::LengthMismatch),
        other => panic!("expected Reject(LengthMismatch), got {other:?}"),
    }
    s.fills_intact();

    // The liar sends 5 bytes and then nothing: the stall timeout (1 s here) ends the stream.
    let (_send, mut recv) = offer_a_few_bytes(&s.liar, 100).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), recv.read(&mut [0u8; 16])).await;
    match ended {
        Ok(Err(quinn::ReadError::Reset(code))) => {
            assert_eq!(code.into_inner(), StreamCode::Stalled as u64)
        }
        other => panic!("expected a stall reset, got {other:?}"),
    }
    let big = segment(100, BIG_BYTES).id();
    assert!(
        eventually(Duration::from_secs(3), || matches!(
            s.n().holding(&big).unwrap(),
            Holding::Partial { offset } if offset == FEW_BYTES as u64
        ))
        .await,
        "the bytes that arrived are kept for resume"
    );
    s.fills_intact();
    assert_eq!(
        s.n().usage().reserved_bytes,
        0,
        "no grant outlives its transfer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_06_inv_07_honest_transfer_into_a_full_store_evicts_what_it_needs() {
    let s = setup().await;
    // A cut offer first: its partial is resumed by the honest transfer.
    let (_send, mut recv) = offer_a_few_bytes(&s.liar, 100).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), recv.read(&mut [0u8; 16])).await;
    let big = segment(100, BIG_BYTES).id();
    assert!(
        eventually(Duration::from_secs(3), || matches!(
            s.n().holding(&big).unwrap(),
            Holding::Partial { .. }
        ))
        .await
    );
    s.fills_intact();

    // What the honest transfer must free: everything over the ceiling once it is stored (its
    // own partial's bytes are already counted), in whole fills.
    let usage = s.n().usage();
    let ceiling = s.n().config().ceiling_bytes;
    let fill_len = file_len(0, FILL_BYTES);
    let idle = usage.partial_bytes;
    let short = (usage.total() - idle + file_len(100, BIG_BYTES)).saturating_sub(ceiling);
    let want_evicted = short.div_ceil(fill_len);
    assert!(want_evicted > 0 && want_evicted < FILLS);

    let good = &s.nodes[1];
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        good.node.send_segment(&id("n"), big),
    )
    .await
    .expect("bounded");
    assert_eq!(outcome, SendOutcome::Delivered);
    assert_eq!(s.n().holding(&big).unwrap(), Holding::Stored);
    let tombstoned = s
        .fills
        .iter()
        .filter(|id| s.n().holding(id).unwrap() == Holding::Tombstoned)
        .count() as u64;
    let stored = s
        .fills
        .iter()
        .filter(|id| s.n().holding(id).unwrap() == Holding::Stored)
        .count() as u64;
    assert_eq!(tombstoned, want_evicted, "evicted exactly what it needed");
    assert_eq!(stored, FILLS - want_evicted);
    let usage = s.n().usage();
    assert!(usage.total() <= ceiling, "INV-06: {usage:?}");
    assert_eq!(usage.reserved_bytes, 0);
}
