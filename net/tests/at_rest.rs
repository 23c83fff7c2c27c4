//! A stored segment whose signature went bad at rest is never offered (INV-01, INV-24): the
//! sender finds it when it opens the segment, reports `LocalCorrupt`, quarantines it and tells
//! the quarantine watchers (which fetch a good copy again through catch-up); the peer stores
//! nothing and owes no refusal. A segment whose publisher is no longer trusted is not sent
//! either (`Untrusted`), and stays stored. A segment that expired after it was stored is
//! neither pushed nor served to a peer's pull (INV-16).

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use net::SendOutcome;
use store::{Holding, SegmentId, Store};

const SEG_BYTES: u64 = 256 << 10;

/// Flips the last byte of the stored file's header: the signature's last byte.
fn flip_signature_at_rest(store: &Store, id: &SegmentId) {
    let path = store.layout().segment_file(id);
    let mut bytes = std::fs::read(&path).unwrap();
    let row = store.get(id).unwrap().expect("stored");
    let header_end = (row.file_len - row.payload_len) as usize;
    bytes[header_end - 1] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
}

fn watch(store: &Store) -> Arc<Mutex<Vec<SegmentId>>> {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = heard.clone();
    store.watch_quarantine(Box::new(move |id| log.lock().unwrap().push(*id)));
    heard
}

async fn send(a: &TestNode, to: &str, seg: SegmentId) -> SendOutcome {
    tokio::time::timeout(Duration::from_secs(10), a.node.send_segment(&id(to), seg))
        .await
        .expect("bounded")
}

fn holds_nothing(b: &TestNode, seg: &SegmentId, data: &Path) {
    assert_eq!(b.store.holding(seg).unwrap(), Holding::Absent);
    assert!(b.store.list().unwrap().is_empty());
    assert_eq!(tmp_files(data), 0, "no temp file at the peer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_01_inv_24_signature_flipped_at_rest_is_not_sent_and_is_quarantined() {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["a", "b"], 1 << 30);
    let seg = seed(&planned[0].store, 1, SEG_BYTES);
    let heard = watch(&planned[0].store);
    let nodes = start(&fleet, planned, &[("a", "b")], |_| {});
    let (a, b) = (&nodes[0], &nodes[1]);
    flip_signature_at_rest(&a.store, &seg);

    match send(a, "b", seg).await {
        SendOutcome::LocalCorrupt(reason) => {
            assert!(reason.contains("signature"), "{reason}")
        }
        other => panic!("expected LocalCorrupt, got {other:?}"),
    }
    holds_nothing(b, &seg, b.data.path());
    assert!(
        a.store.get(&seg).unwrap().is_none(),
        "no longer stored at a"
    );
    let quarantined = a.store.quarantined().unwrap();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].0, seg);
    assert!(quarantined[0].1.reason.contains("signature"));
    assert_eq!(*heard.lock().unwrap(), vec![seg], "the watcher fired once");
    // Asked again, a no longer holds it: nothing is ever offered.
    assert_eq!(send(a, "b", seg).await, SendOutcome::NotStored);
    holds_nothing(b, &seg, b.data.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_01_untrusted_at_rest_is_not_sent_and_not_quarantined() {
    logs();
    let fleet = Fleet::new();
    let mut seg = None;
    let a = plan_one("a", |dir| {
        // Stored while trusted, then the key is dropped from the trusted set.
        let store = open_store(dir, 1 << 30);
        seg = Some(seed(&store, 2, SEG_BYTES));
        store.close();
        drop(store);
        let other = store::keys::PublisherSecret::from_seed([8; 32]).public();
        open_store_trusting(dir, 1 << 30, std::iter::once(other).collect())
    });
    let seg = seg.expect("seeded");
    let heard = watch(&a.store);
    let b = plan_one("b", |dir| open_store(dir, 1 << 30));
    let nodes = start(&fleet, vec![a, b], &[("a", "b")], |_| {});
    let (a, b) = (&nodes[0], &nodes[1]);

    match send(a, "b", seg).await {
        SendOutcome::Untrusted(why) => assert!(why.contains("does not trust"), "{why}"),
        other => panic!("expected Untrusted, got {other:?}"),
    }
    holds_nothing(b, &seg, b.data.path());
    assert!(a.store.get(&seg).unwrap().is_some(), "still stored at a");
    assert!(a.store.quarantined().unwrap().is_empty(), "not quarantined");
    assert!(heard.lock().unwrap().is_empty(), "no watcher fired");
}

/// Stores a segment that expires `in_ms` from now.
fn seed_expiring(store: &Store, tag: u64, len: u64, in_ms: u64) -> SegmentId {
    let (_, hash) = store::segfile::hash_reader(Gen::new(tag, len)).expect("hash");
    let signed = signed_for(
        &publisher(),
        &format!("exp-{tag}"),
        len,
        hash,
        Some(now_ms() + in_ms),
    );
    let mut header = Vec::new();
    store::segfile::write_header(&mut header, &signed).expect("header");
    let reader = std::io::Read::chain(std::io::Cursor::new(header), Gen::new(tag, len));
    match store
        .ingest_reader(reader, &store::IngestOptions::import(), now_ms(), |_, _| {
            Ok(())
        })
        .expect("seed ingest")
    {
        store::IngestOutcome::Stored(s) => s.id,
        store::IngestOutcome::AlreadyHave { id, .. } => id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_16_a_segment_expired_at_rest_is_neither_pushed_nor_pulled() {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["a", "b"], 1 << 30);
    let seg = seed_expiring(&planned[0].store, 7, SEG_BYTES, 1_500);
    let nodes = start(&fleet, planned, &[("a", "b")], |cfg| {
        // Only the explicit round below pulls.
        cfg.catchup_on_connect = false;
        cfg.catchup_interval_ms = 0;
    });
    let (a, b) = (&nodes[0], &nodes[1]);
    assert!(
        b.node
            .wait_connected(&id("a"), Duration::from_secs(10))
            .await
    );
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    assert_eq!(send(a, "b", seg).await, SendOutcome::Expired);
    let report = tokio::time::timeout(Duration::from_secs(10), b.node.catch_up(&id("a")))
        .await
        .expect("bounded")
        .expect("round");
    assert_eq!(report.stored, 0, "{report:?}");
    assert_eq!(b.store.holding(&seg).unwrap(), Holding::Absent);
    assert!(
        a.store.get(&seg).unwrap().is_some(),
        "still stored at a until its sweep"
    );
}
