//! What `edged fsck` and the background scrub use of the store: one segment re-verified at a
//! time (not a use for eviction), the quarantine shown and purged, and leftover files of a
//! running store found and removed.

mod common;

use common::*;
use store::ScrubOutcome;

const MIB: u64 = 1 << 20;

fn fresh() -> (
    tempfile::TempDir,
    store::Store,
    store::keys::PublisherSecret,
) {
    let dir = tempfile::tempdir().unwrap();
    let p = publisher(1);
    let store = open_real(config(dir.path(), 64 * MIB, trusting(&[&p])));
    (dir, store, p)
}

fn last_used(store: &store::Store, id: &store::SegmentId) -> u64 {
    store.get(id).unwrap().unwrap().last_used_ms
}

#[test]
fn scrub_one_verifies_without_counting_as_a_use() {
    let (_dir, store, p) = fresh();
    let (_, a) = seg(&p, &SegSpec::named("a"), &payload(41, 300_000));
    let id = ingest_ok(&store, &a);
    let before = last_used(&store, &id);
    let later = NOW_MS + 60_000;
    assert_eq!(
        store.scrub_one(&id, later).unwrap(),
        ScrubOutcome::Intact {
            bytes: a.len() as u64
        }
    );
    // A committed write after it: any use it had queued would be in the index by now.
    store.mark_propagated(&id, later).unwrap();
    assert_eq!(last_used(&store, &id), before, "a scrub is not a use");
    // A read to send is one (so the check above can see a use).
    drop(store.open_for_read(&id, later).unwrap());
    store.set_pin(&id, "test", true).unwrap();
    assert_eq!(last_used(&store, &id), later);
}

#[test]
fn inv_24_a_quarantined_segment_is_shown_with_its_header_and_purged() {
    let (_dir, store, p) = fresh();
    let (_, a) = seg(&p, &SegSpec::named("a"), &payload(42, 100_000));
    let id = ingest_ok(&store, &a);
    let path = store.layout().segment_file(&id);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        store.scrub_one(&id, NOW_MS).unwrap(),
        ScrubOutcome::Quarantined { read: true, .. }
    ));

    let prefix = &id.to_string()[..8];
    assert_eq!(store.resolve_quarantined(prefix).unwrap(), id);
    let q = store
        .quarantined_segment(&id)
        .unwrap()
        .expect("quarantined");
    assert_eq!(q.file_len_now, Some(a.len() as u64));
    assert_eq!(q.header.as_ref().unwrap().manifest().name, "a");
    assert!(q.row.reason.contains("hash"), "{}", q.row.reason);
    assert_eq!(store.quarantined_after(None, 10).unwrap().len(), 1);

    let purged = store.purge_quarantined(&id).unwrap().expect("purged");
    assert_eq!(purged.bytes, a.len() as u64);
    assert!(!store.layout().quarantine_file(&id).exists());
    assert!(store.quarantined_after(None, 10).unwrap().is_empty());
    assert_eq!(store.purge_quarantined(&id).unwrap(), None, "once");
}

#[test]
fn check_files_finds_leftovers_and_removes_them_only_when_asked() {
    let (_dir, store, p) = fresh();
    let (_, kept) = seg(&p, &SegSpec::named("kept"), &payload(43, 10_000));
    let kept_id = ingest_ok(&store, &kept);
    let (signed, orphan) = seg(&p, &SegSpec::named("orphan"), &payload(44, 10_000));
    let orphan_path = store.layout().segment_file(&signed.id());
    std::fs::write(&orphan_path, &orphan).unwrap();
    let stray = store
        .layout()
        .tmp()
        .join(format!("{}.part", "cd".repeat(32)));
    std::fs::write(&stray, b"left behind").unwrap();

    let found = store.check_files(false).unwrap();
    assert_eq!(found.orphan_files, vec![orphan_path.clone()]);
    assert_eq!(found.stray_temp_files, vec![stray.clone()]);
    assert_eq!(found.total, 2);
    assert!(orphan_path.exists() && stray.exists(), "only looked");

    let removed = store.check_files(true).unwrap();
    assert_eq!(removed.total, 2);
    assert!(!orphan_path.exists() && !stray.exists());
    assert_eq!(store.check_files(false).unwrap().total, 0);
    assert!(
        store.layout().segment_file(&kept_id).exists(),
        "a stored file stays"
    );
}
