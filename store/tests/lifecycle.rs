//! The content lifecycle through the store's real ingest: anti-rollback and supersession,
//! recalls (of a segment held, never had, or being received), trust roots arriving as segments,
//! and freeze protection.

mod common;

use common::*;
use store::keys::{PublisherKey, PublisherSecret, TrustedPublishers};
use store::limits::{MANIFEST_FORMAT_VERSION, ROOT_CHANNEL};
use store::manifest::{Manifest, SegmentKind, SignedManifest, SuccessCondition, VerifyError};
use store::recall::RecallList;
use store::root::{ALL_CHANNELS, PublisherGrant, RootChain, RootDocument, SignedRoot};
use store::{Begin, IngestError, IngestOptions, IngestOutcome, SegmentId};

const CEILING: u64 = 1 << 24;

fn spec(name: &str, channel: &str, sequence: u64) -> SegSpec {
    SegSpec {
        channel: channel.to_owned(),
        sequence,
        ..SegSpec::named(name)
    }
}

/// A lifecycle segment (recall or root) of `body`, signed by `by`.
fn special(
    by: &PublisherSecret,
    kind: SegmentKind,
    channel: &str,
    name: &str,
    sequence: u64,
    body: &[u8],
) -> (SignedManifest, Vec<u8>) {
    let m = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        publisher: by.public(),
        name: name.to_owned(),
        channel: channel.to_owned(),
        sequence,
        created_at_ms: NOW_MS - 1_000,
        expires_at_ms: None,
        condition: SuccessCondition::AllPeers,
        priority: 255,
        payload_len: body.len() as u64,
        payload_hash: *blake3::hash(body).as_bytes(),
        kind,
    };
    let signed = SignedManifest::sign(m, by).unwrap();
    let mut file = Vec::new();
    store::segfile::write_seg(&mut file, &signed, body).unwrap();
    (signed, file)
}

fn recall(by: &PublisherSecret, channel: &str, seq: u64, ids: &[SegmentId]) -> Vec<u8> {
    let body = RecallList::new(ids.to_vec()).unwrap().encode();
    special(by, SegmentKind::Recall, channel, "recall", seq, &body).1
}

fn root(
    version: u64,
    root_keys: &[&PublisherSecret],
    k: u8,
    publishers: &[&PublisherSecret],
) -> RootDocument {
    let mut keys: Vec<PublisherKey> = root_keys.iter().map(|s| s.public()).collect();
    keys.sort();
    let mut grants: Vec<PublisherGrant> = publishers
        .iter()
        .map(|s| PublisherGrant {
            key: s.public(),
            channels: vec![ALL_CHANNELS.to_owned()],
        })
        .collect();
    grants.sort_by_key(|g| g.key);
    RootDocument {
        format_version: store::root::ROOT_FORMAT_VERSION,
        version,
        created_at_ms: NOW_MS - 10_000,
        expires_at_ms: None,
        root_keys: keys,
        root_threshold: k,
        publishers: grants,
        channels: vec![],
    }
}

fn signed_root(doc: RootDocument, by: &[&PublisherSecret]) -> SignedRoot {
    let mut r = SignedRoot::new(doc).unwrap();
    for s in by {
        r.sign(s).unwrap();
    }
    r
}

fn root_segment(by: &PublisherSecret, chain: Vec<SignedRoot>) -> Vec<u8> {
    let version = chain.last().unwrap().version();
    let body = RootChain(chain).encode();
    special(by, SegmentKind::Root, ROOT_CHANNEL, "root", version, &body).1
}

fn held(store: &store::Store) -> Vec<SegmentId> {
    store.list().unwrap().into_iter().map(|s| s.id).collect()
}

#[test]
fn inv_35_sequence_equal_lower_refused_higher_supersedes_and_the_highest_survives_eviction_and_reopen()
 {
    let dir = tempfile::tempdir().unwrap();
    let p = publisher(1);
    let cfg = config(dir.path(), CEILING, trusting(&[&p]));
    let store = open_real(cfg.clone());
    let (v1, f1) = seg(&p, &spec("app", "rel", 1), &payload(1, 100));
    let (v2, f2) = seg(&p, &spec("app", "rel", 2), &payload(2, 100));
    let (_, f2b) = seg(&p, &spec("app", "rel", 2), &payload(3, 100));
    let (_, f0) = seg(&p, &spec("app", "rel", 0), &payload(4, 100));
    ingest_ok(&store, &f1);
    let stored = match ingest(&store, &f2).unwrap() {
        IngestOutcome::Stored(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(stored.lifecycle.superseded, vec![v1.id()]);
    assert_eq!(store.superseded_by(&v1.id()).unwrap(), Some(v2.id()));
    // Equal (other content) and lower: refused by name, before any payload byte.
    for f in [&f2b, &f0, &f1] {
        match ingest(&store, f) {
            Err(IngestError::Superseded { highest: 2, .. }) => {}
            // v1 is still stored: asking for it again is "have", not a rollback.
            Ok(IngestOutcome::AlreadyHave { id, .. }) if id == v1.id() => {}
            other => panic!("{other:?}"),
        }
    }
    // Another name, or another channel, has its own sequence.
    ingest_ok(
        &store,
        &seg(&p, &spec("other", "rel", 1), &payload(5, 10)).1,
    );
    ingest_ok(&store, &seg(&p, &spec("app", "ops", 1), &payload(6, 10)).1);
    // The highest outlives its segments: both evicted, then the store reopened.
    assert_eq!(store.evict(&[v1.id(), v2.id()]).unwrap().len(), 2);
    assert_eq!(store.superseded_by(&v1.id()).unwrap(), None);
    store.close();
    drop(store);
    let store = open_real(cfg);
    assert!(matches!(
        ingest(&store, &f2b),
        Err(IngestError::Superseded { highest: 2, .. })
    ));
    // The very segment that holds the highest may come back (an evicted copy).
    ingest_ok(&store, &f2);
    let rows = store.sequences(Some("rel")).unwrap();
    let app = rows.iter().find(|r| r.name == "app").unwrap();
    assert_eq!(app.highest, 2);
    assert_eq!(
        app.history.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2]
    );
}

#[test]
fn a_superseded_segment_is_evicted_before_current_ones() {
    let dir = tempfile::tempdir().unwrap();
    let p = publisher(1);
    // Room for three 1000-byte segments and their headers, not four.
    let store = open_real(config(dir.path(), 3_900, trusting(&[&p])));
    let (v1, f1) = seg(&p, &spec("app", "rel", 1), &payload(1, 1000));
    let (_, other) = seg(
        &p,
        &SegSpec {
            priority: 0,
            ..spec("low", "rel", 1)
        },
        &payload(2, 1000),
    );
    ingest_ok(&store, &other);
    ingest_ok(&store, &f1);
    let (v2, f2) = seg(&p, &spec("app", "rel", 2), &payload(3, 1000));
    ingest_ok(&store, &f2);
    assert_eq!(held(&store).len(), 3);
    ingest_ok(&store, &seg(&p, &spec("c", "rel", 1), &payload(4, 1000)).1);
    let now = held(&store);
    assert!(!now.contains(&v1.id()), "the superseded one made room");
    assert!(now.contains(&v2.id()));
    assert_eq!(now.len(), 3, "the low-priority current one stayed");
}

#[test]
fn inv_39_a_recall_withdraws_held_records_unheld_and_leaves_other_channels() {
    let dir = tempfile::tempdir().unwrap();
    let p = publisher(1);
    let cfg = config(dir.path(), CEILING, trusting(&[&p]));
    let store = open_real(cfg.clone());
    let (a, fa) = seg(&p, &spec("a", "rel", 1), &payload(1, 500));
    let (b, fb) = seg(&p, &spec("b", "ops", 1), &payload(2, 500));
    let (never, fnever) = seg(&p, &spec("n", "rel", 1), &payload(3, 500));
    ingest_ok(&store, &fa);
    ingest_ok(&store, &fb);
    let before = segment_bytes_on_disk(dir.path());
    // One recall on channel rel names a (held), b (another channel) and n (never had).
    let r = recall(&p, "rel", 1, &[a.id(), b.id(), never.id()]);
    let stored = match ingest(&store, &r).unwrap() {
        IngestOutcome::Stored(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(stored.lifecycle.withdrawn, vec![a.id()]);
    let now = held(&store);
    assert!(!now.contains(&a.id()));
    assert!(now.contains(&b.id()), "a recall of rel cannot touch ops");
    assert!(
        segment_bytes_on_disk(dir.path()) < before,
        "the file went too"
    );
    assert_eq!(
        store.usage().stored_bytes,
        segment_bytes_on_disk(dir.path())
    );
    assert!(store.is_recalled(&a.id()).unwrap());
    assert!(!store.recalled_row(&never.id()).unwrap().unwrap().held);
    // Refused from then on, including the one never had, and after a reopen.
    store.close();
    drop(store);
    let store = open_real(cfg);
    for f in [&fa, &fnever] {
        assert!(
            matches!(ingest(&store, f), Err(IngestError::Recalled { .. })),
            "recalled ids stay refused"
        );
    }
    // b was not withdrawn (other channel): still stored and servable.
    store.open_for_read(&b.id(), NOW_MS).unwrap();
}

#[test]
fn inv_39_a_recall_of_a_segment_being_received_refuses_it_at_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let p = publisher(1);
    let store = open_real(config(dir.path(), CEILING, trusting(&[&p])));
    let body = payload(1, 4096);
    let (a, _) = seg(&p, &spec("a", "rel", 1), &body);
    let mut ingest = match store
        .begin_ingest(a.clone(), &IngestOptions::from_peer("peer-b"), NOW_MS)
        .unwrap()
    {
        Begin::Ingest(i) => i,
        Begin::Have(h) => panic!("{h:?}"),
    };
    ingest.write(&body[..1000]).unwrap();
    ingest_ok(&store, &recall(&p, "rel", 1, &[a.id()]));
    ingest.write(&body[1000..]).unwrap();
    match ingest.finish(NOW_MS, |_, _| Ok(())) {
        Err(IngestError::Recalled { id, .. }) => assert_eq!(id, a.id()),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(held(&store).iter().all(|id| *id != a.id()));
    assert_eq!(
        store.usage().stored_bytes,
        segment_bytes_on_disk(dir.path())
    );
}

#[test]
fn a_recall_that_does_not_verify_or_decode_is_refused_and_withdraws_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = publisher(1);
    let stranger = publisher(9);
    let store = open_real(config(dir.path(), CEILING, trusting(&[&p])));
    let (a, fa) = seg(&p, &spec("a", "rel", 1), &payload(1, 100));
    ingest_ok(&store, &fa);
    assert!(matches!(
        ingest(&store, &recall(&stranger, "rel", 1, &[a.id()])),
        Err(IngestError::Verify(VerifyError::UntrustedPublisher { .. }))
    ));
    let junk = special(&p, SegmentKind::Recall, "rel", "r", 1, b"not a recall").1;
    assert!(matches!(
        ingest(&store, &junk),
        Err(IngestError::RecallRefused { .. })
    ));
    assert!(held(&store).contains(&a.id()));
    assert!(!store.is_recalled(&a.id()).unwrap());
}

#[test]
fn inv_37_a_root_segment_rotates_the_trust_and_survives_reopen_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (r1, r2, r3) = (publisher(1), publisher(2), publisher(3));
    let (old_pub, new_pub) = (publisher(10), publisher(11));
    let v1 = signed_root(root(1, &[&r1, &r2, &r3], 2, &[&old_pub]), &[&r1, &r2]);
    let configured = TrustedPublishers::from_root(v1.clone());
    let cfg = config(dir.path(), CEILING, configured.clone());
    let store = open_real(cfg.clone());
    ingest_ok(
        &store,
        &seg(&old_pub, &spec("x", "rel", 1), &payload(1, 10)).1,
    );

    // Version 2 drops old_pub for new_pub; signed by one current root key: below threshold.
    let doc2 = root(2, &[&r1, &r2, &r3], 2, &[&new_pub]);
    let weak = signed_root(doc2.clone(), &[&r1]);
    assert!(matches!(
        ingest(&store, &root_segment(&r1, vec![weak])),
        Err(IngestError::RootRefused { .. })
    ));
    assert_eq!(store.trusted().root_version(), 1);
    let v2 = signed_root(doc2, &[&r1, &r3]);
    ingest_ok(&store, &root_segment(&r1, vec![v1.clone(), v2.clone()]));
    assert_eq!(store.trusted().root_version(), 2);
    // The removed key is refused from now on; the new one is taken.
    assert!(matches!(
        ingest(
            &store,
            &seg(&old_pub, &spec("y", "rel", 1), &payload(2, 10)).1
        ),
        Err(IngestError::Verify(VerifyError::UntrustedPublisher { .. }))
    ));
    ingest_ok(
        &store,
        &seg(&new_pub, &spec("z", "rel", 1), &payload(3, 10)).1,
    );
    // The same root again, or an older one: superseded.
    assert!(matches!(
        ingest(&store, &root_segment(&r2, vec![v2.clone()])),
        Err(IngestError::Superseded { highest: 2, .. }) | Ok(IngestOutcome::AlreadyHave { .. })
    ));
    // A reload with the configured (older) root does not roll back.
    store.set_trusted(configured);
    assert_eq!(store.trusted().root_version(), 2);
    // Nor does a restart with edge.toml still naming version 1.
    store.close();
    drop(store);
    let store = open_real(cfg);
    assert_eq!(store.trusted().root_version(), 2);
}

#[test]
fn root_segments_need_a_root_to_start_from() {
    let dir = tempfile::tempdir().unwrap();
    let r1 = publisher(1);
    let store = open_real(config(dir.path(), CEILING, trusting(&[&r1])));
    let v1 = signed_root(root(1, &[&r1], 1, &[&r1]), &[&r1]);
    match ingest(&store, &root_segment(&r1, vec![v1])) {
        Err(IngestError::RootRefused { reason, .. }) => {
            assert!(reason.contains("publishers] root"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn inv_38_an_expired_root_refuses_content_but_takes_a_newer_root() {
    let dir = tempfile::tempdir().unwrap();
    let r1 = publisher(1);
    let p = publisher(10);
    let mut doc = root(1, &[&r1], 1, &[&p]);
    // Expired an hour ago: beyond any clock skew allowed.
    doc.created_at_ms = NOW_MS - 7_200_000;
    doc.expires_at_ms = Some(NOW_MS - 3_600_000);
    let v1 = signed_root(doc, &[&r1]);
    let store = open_real(config(
        dir.path(),
        CEILING,
        TrustedPublishers::from_root(v1),
    ));
    match ingest(&store, &seg(&p, &spec("x", "rel", 1), &payload(1, 10)).1) {
        Err(IngestError::Verify(e @ VerifyError::RootExpired { .. })) => {
            assert!(e.to_string().contains("expired"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let mut fresh = root(2, &[&r1], 1, &[&p]);
    fresh.expires_at_ms = Some(NOW_MS + 86_400_000);
    let v2 = signed_root(fresh, &[&r1]);
    ingest_ok(&store, &root_segment(&r1, vec![v2]));
    ingest_ok(&store, &seg(&p, &spec("x", "rel", 1), &payload(1, 10)).1);
}
