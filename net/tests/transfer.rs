//! Two and three real nodes on 127.0.0.1: pushes, answers, the ingest hook, refusals.

mod common;

use std::time::Duration;

use common::*;
use net::{RejectReason, SendOutcome};
use store::SegmentId;

const SEG_BYTES: u64 = 3 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_03_inv_11_send_segment_stores_and_runs_hook_in_ingest_txn() {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["a", "b"], 1 << 30);
    let seg = seed(&planned[0].store, 1, SEG_BYTES);
    let nodes = start(&fleet, planned, &[("a", "b")], |_| {});
    let (a, b) = (&nodes[0], &nodes[1]);

    assert_eq!(
        a.node.send_segment(&b.id(), seg).await,
        SendOutcome::Delivered
    );
    // Acknowledged means durable and visible, with the hook's row from the same transaction.
    assert_eq!(stored_ids(&b.store), vec![seg]);
    assert_eq!(test_jobs(&b.store).get(&seg).map(String::as_str), Some("a"));
    assert_eq!(b.store.get(&seg).unwrap().unwrap().source, "a");
    assert_eq!(
        b.hooks.received.lock().unwrap().clone(),
        vec![("a".to_owned(), seg)]
    );
    // The copy is byte for byte what was sent.
    let mut copy = Vec::new();
    b.store
        .open_for_read(&seg, now_ms())
        .unwrap()
        .copy_to(&mut copy, now_ms())
        .unwrap();
    let mut orig = Vec::new();
    a.store
        .open_for_read(&seg, now_ms())
        .unwrap()
        .copy_to(&mut orig, now_ms())
        .unwrap();
    assert_eq!(copy, orig);

    // A second offer is answered "have"; so is one in the other direction.
    assert_eq!(a.node.send_segment(&b.id(), seg).await, SendOutcome::Have);
    assert_eq!(b.node.send_segment(&a.id(), seg).await, SendOutcome::Have);
    // The connection was reused: one per pair.
    assert!(a.node.peers()[0].connected && b.node.peers()[0].connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_11_failing_hook_stores_nothing() {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["a", "b"], 1 << 30);
    let seg = seed(&planned[0].store, 2, 100_000);
    let nodes = start(&fleet, planned, &[("a", "b")], |_| {});
    let (a, b) = (&nodes[0], &nodes[1]);
    b.hooks
        .fail_on_stored
        .store(true, std::sync::atomic::Ordering::SeqCst);
    match a.node.send_segment(&b.id(), seg).await {
        SendOutcome::Refused { reason, .. } => assert_eq!(reason, RejectReason::Internal),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(stored_ids(&b.store).is_empty());
    assert!(test_jobs(&b.store).is_empty());
    // Once the hook works, the same segment goes through.
    b.hooks
        .fail_on_stored
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        a.node.send_segment(&b.id(), seg).await,
        SendOutcome::Delivered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_01_inv_16_untrusted_expired_and_too_large_are_refused_for_good() {
    logs();
    let fleet = Fleet::new();
    let a = plan_one("a", |dir| open_store(dir, 1 << 30));
    let small = seed(&a.store, 3, 10_000);
    let big = seed(&a.store, 4, 300_000);
    let expiring = {
        let body = payload(5, 1000);
        let signed = signed_for(
            &publisher(),
            "short-lived",
            1000,
            *blake3::hash(&body).as_bytes(),
            Some(now_ms() + 60_000),
        );
        let mut file = Vec::new();
        store::segfile::write_seg(&mut file, &signed, &body[..]).unwrap();
        let opts = store::IngestOptions::import();
        match a
            .store
            .ingest_reader(&file[..], &opts, now_ms(), |_, _| Ok(()))
            .unwrap()
        {
            store::IngestOutcome::Stored(s) => s.id,
            other => panic!("{other:?}"),
        }
    };
    // b: small ceiling, and a clock an hour ahead (past the expiry and the 5 min skew).
    let mut b = plan_one("b", |dir| open_store(dir, 200_000));
    b.clock = std::sync::Arc::new(AheadClock(3_600_000));
    // c trusts no publisher.
    let c = plan_one("c", |dir| {
        open_store_trusting(dir, 1 << 30, Default::default())
    });
    let nodes = start(&fleet, vec![a, b, c], &[("a", "b"), ("a", "c")], |_| {});
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);

    let refused = |o: SendOutcome| match o {
        SendOutcome::Refused { reason, .. } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let r = refused(a.node.send_segment(&b.id(), big).await);
    assert_eq!(r, RejectReason::TooLarge);
    let r2 = refused(a.node.send_segment(&b.id(), expiring).await);
    assert_eq!(r2, RejectReason::Expired);
    let r3 = refused(a.node.send_segment(&c.id(), small).await);
    assert_eq!(r3, RejectReason::UntrustedPublisher);
    for r in [r, r2, r3] {
        assert!(r.is_permanent(), "{r}");
    }
    assert!(stored_ids(&b.store).is_empty() && stored_ids(&c.store).is_empty());
    assert_eq!(tmp_files(b.data.path()) + tmp_files(c.data.path()), 0);
    // What is acceptable still goes through.
    assert_eq!(
        a.node.send_segment(&b.id(), small).await,
        SendOutcome::Delivered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_08_store_full_is_retryable() {
    logs();
    let fleet = Fleet::new();
    let a = plan_one("a", |dir| open_store(dir, 1 << 30));
    let first = seed(&a.store, 6, 150_000);
    let second = seed(&a.store, 7, 150_000);
    // b fits one of them; the one it holds is pinned (owed to someone), so nothing can go.
    let b = plan_one("b", |dir| open_store(dir, 200_000));
    let nodes = start(&fleet, vec![a, b], &[("a", "b")], |_| {});
    let (a, b) = (&nodes[0], &nodes[1]);
    assert_eq!(
        a.node.send_segment(&b.id(), first).await,
        SendOutcome::Delivered
    );
    b.store.set_pin(&first, "relay:c", true).unwrap();
    assert_eq!(
        a.node.send_segment(&b.id(), second).await,
        SendOutcome::StoreFull
    );
    assert_eq!(stored_ids(&b.store), vec![first]);
    // Space frees: the retry succeeds.
    b.store.set_pin(&first, "relay:c", false).unwrap();
    assert_eq!(
        a.node.send_segment(&b.id(), second).await,
        SendOutcome::Delivered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_24_corrupt_local_copy_aborts_and_is_quarantined() {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["a", "b"], 1 << 30);
    let seg = seed(&planned[0].store, 8, 1 << 20);
    // Flip one payload byte of a's stored file.
    let path = planned[0].store.layout().segment_file(&seg);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    // b checkpoints every 64 KiB: without the discard, the corrupt bytes that arrived before
    // the sender found its copy bad would be kept as a partial for a resume.
    let nodes = start(&fleet, planned, &[("a", "b")], |cfg| {
        cfg.checkpoint_bytes = 64 << 10
    });
    let (a, b) = (&nodes[0], &nodes[1]);
    match a.node.send_segment(&b.id(), seg).await {
        SendOutcome::LocalCorrupt(reason) => assert!(reason.contains("hash"), "{reason}"),
        other => panic!("expected LocalCorrupt, got {other:?}"),
    }
    assert!(
        stored_ids(&b.store).is_empty(),
        "the receiver must not store it"
    );
    assert!(stored_ids(&a.store).is_empty(), "the sender quarantined it");
    assert_eq!(a.store.quarantined().unwrap().len(), 1);
    assert_eq!(
        a.node.send_segment(&b.id(), seg).await,
        SendOutcome::NotStored
    );
    // Nothing of it is left behind at b either, once the aborted stream is processed: no
    // partial to resume from.
    assert!(
        eventually(Duration::from_secs(3), || b.store.holding(&seg).unwrap()
            != store::Holding::Ingesting)
        .await
    );
    assert_eq!(b.store.holding(&seg).unwrap(), store::Holding::Absent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_peer_and_unknown_segment() {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["a", "b"], 1 << 30);
    let nodes = start(&fleet, planned, &[("a", "b")], |_| {});
    let a = &nodes[0];
    assert!(matches!(
        a.node.send_segment(&id("zed"), SegmentId([1; 32])).await,
        SendOutcome::Unreachable(_)
    ));
    assert_eq!(
        a.node.send_segment(&id("b"), SegmentId([1; 32])).await,
        SendOutcome::NotStored
    );
}

/// The disk seam: with every store call and disk step inline on the async tasks (as a
/// simulation runs them), a push and a catch-up behave as with threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_03_inv_15_inline_disk_mode_delivers_and_catches_up() {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["a", "b"], 1 << 30);
    let pushed = seed(&planned[0].store, 40, SEG_BYTES);
    let pulled = seed(&planned[0].store, 41, 200_000);
    let nodes = start(&fleet, planned, &[("a", "b")], |cfg| {
        cfg.disk_mode = net::DiskMode::Inline;
    });
    let (a, b) = (&nodes[0], &nodes[1]);
    assert_eq!(
        a.node.send_segment(&b.id(), pushed).await,
        SendOutcome::Delivered
    );
    assert_eq!(
        a.node.send_segment(&b.id(), pushed).await,
        SendOutcome::Have
    );
    let report = b.node.catch_up(&a.id()).await.expect("round");
    assert_eq!((report.pulled, report.stored), (1, 1), "{report:?}");
    let mut want = vec![pushed, pulled];
    want.sort();
    assert_eq!(stored_ids(&b.store), want);
}
