//! Resume: a transfer cut at about half of a 64 MiB segment continues from the receiver's
//! checkpoint on the next attempt, and the result has the right hash.

mod common;

use std::time::Duration;

use common::*;
use net::SendOutcome;
use net::wire::{Msg, encode_frame, read_frame};

const SEG_BYTES: u64 = 64 << 20;
const CUT_BYTES: usize = 32 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_18_cut_transfer_resumes_from_the_checkpoint() {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["a", "n"], 1 << 30);
    let seg = seed(&planned[0].store, 21, SEG_BYTES);
    let n_addr = planned[1].addr;
    let cutter = raw_socket();
    let nodes = start(&fleet, planned, &[("a", "n")], |cfg| {
        cfg.checkpoint_bytes = 8 << 20;
        cfg.stall_timeout_ms = 5_000;
        cfg.response_timeout_ms = 10_000;
        if cfg.node_id.as_str() == "n" {
            cfg.known_peers.insert(id("cutter"), cutter.addr);
        }
    });
    let (a, n) = (&nodes[0], &nodes[1]);

    // First attempt: a peer sends half the payload and its connection dies.
    let raw = Raw::on(&fleet.identity("cutter"), &cutter);
    let conn = raw.connect(n_addr, "n").await.expect("connect");
    let signed = segment(21, SEG_BYTES);
    assert_eq!(signed.id(), seg);
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode_frame(&Msg::Offer {
        manifest: signed.encode(),
    }))
    .await
    .unwrap();
    assert_eq!(
        read_frame(&mut recv, 1 << 16).await.unwrap(),
        Msg::Want { offset: 0 }
    );
    send.write_all(&outboard(21, SEG_BYTES)).await.unwrap();
    let mut body = Gen::new(21, CUT_BYTES as u64);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..CUT_BYTES / buf.len() {
        std::io::Read::read_exact(&mut body, &mut buf).unwrap();
        send.write_all(&buf).await.unwrap();
    }
    // Let the bytes arrive, then cut the connection.
    assert!(
        eventually(Duration::from_secs(20), || n
            .node
            .stats()
            .payload_bytes_received
            >= CUT_BYTES as u64)
        .await
    );
    conn.close(quinn::VarInt::from_u32(0), b"cut");
    let mut offset = 0;
    assert!(
        eventually(Duration::from_secs(10), || {
            if let store::Holding::Partial { offset: o } = n.store.holding(&seg).unwrap() {
                offset = o;
            }
            offset == CUT_BYTES as u64
        })
        .await,
        "the cut transfer left a checkpoint at {offset}"
    );
    assert!(
        stored_ids(&n.store).is_empty(),
        "a partial is never visible"
    );

    // Second attempt, by the real sender: Want(offset > 0), the rest, and the right hash.
    let outcome = tokio::time::timeout(Duration::from_secs(60), a.node.send_segment(&id("n"), seg))
        .await
        .expect("bounded");
    assert_eq!(outcome, SendOutcome::Delivered);
    let stats = a.node.stats();
    assert_eq!(stats.transfers_resumed, 1);
    assert_eq!(stats.payload_bytes_sent, SEG_BYTES - offset);
    assert_eq!(stored_ids(&n.store), vec![seg]);
    // The stored copy verifies (length and blake3) end to end.
    let reader = n.store.open_for_read(&seg, now_ms()).unwrap();
    let copied = reader.copy_to(&mut std::io::sink(), now_ms()).unwrap();
    assert!(copied > SEG_BYTES);
    assert_eq!(tmp_files(n.data.path()), 0);
}
