//! The store's behaviour through its public API on a real file system.

mod common;

use common::*;
use store::error::IngestError;
use store::manifest::VerifyError;
use store::segfile::SegFileError;
use store::{Begin, Holding, IngestOptions, IngestOutcome, StoreError};

const MIB: u64 = 1 << 20;

fn fresh(
    ceiling: u64,
) -> (
    tempfile::TempDir,
    store::Store,
    store::keys::PublisherSecret,
) {
    let dir = tempfile::tempdir().unwrap();
    let p = publisher(1);
    let store = open_real(config(dir.path(), ceiling, trusting(&[&p])));
    (dir, store, p)
}

fn assert_nothing_left(dir: &std::path::Path, store: &store::Store) {
    assert!(store.list().unwrap().is_empty(), "no row");
    assert_eq!(segment_bytes_on_disk(dir), 0, "no segment file");
    assert!(tmp_files(dir).is_empty(), "no temp file");
    assert_eq!(store.usage().total(), 0, "accounting back to zero");
}

#[test]
fn ingest_list_get_and_export_round_trip() {
    let (dir, store, p) = fresh(64 * MIB);
    let body = payload(1, 300_000);
    let (signed, file) = seg(&p, &SegSpec::named("policy.tar"), &body);
    let id = ingest_ok(&store, &file);
    assert_eq!(id, signed.id());
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].row.name, "policy.tar");
    assert_eq!(listed[0].row.file_len, file.len() as u64);
    assert_eq!(listed[0].row.source, "import");
    assert_eq!(store.usage().stored_bytes, file.len() as u64);
    assert_eq!(segment_bytes_on_disk(dir.path()), file.len() as u64);
    assert_eq!(store.resolve(&id.to_string()[..8]).unwrap(), id);
    assert_eq!(store.holding(&id).unwrap(), Holding::Stored);

    let out = tempfile::tempdir().unwrap();
    let exported = store.export_to_dir(&id, out.path(), NOW_MS).unwrap();
    let store::Exported::Written(path) = exported else {
        panic!("expected a new file")
    };
    assert_eq!(
        std::fs::read(&path).unwrap(),
        file,
        "export is byte-identical"
    );
    assert_eq!(
        store.export_to_dir(&id, out.path(), NOW_MS).unwrap(),
        store::Exported::AlreadyThere(path)
    );
}

#[test]
fn inv_10_duplicate_ingest_yields_one_copy() {
    let (dir, store, p) = fresh(64 * MIB);
    let (_, file) = seg(&p, &SegSpec::named("a"), &payload(2, 10_000));
    let id = ingest_ok(&store, &file);
    for _ in 0..3 {
        match ingest(&store, &file).unwrap() {
            IngestOutcome::AlreadyHave { id: got, holding } => {
                assert_eq!(got, id);
                assert_eq!(holding, Holding::Stored);
            }
            other => panic!("expected AlreadyHave, got {other:?}"),
        }
    }
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(segment_bytes_on_disk(dir.path()), file.len() as u64);
    assert_eq!(store.usage().stored_bytes, file.len() as u64);
}

#[test]
fn inv_10_evicted_segment_reoffered_by_peer_answers_have() {
    let (_dir, store, p) = fresh(64 * MIB);
    let (signed, file) = seg(&p, &SegSpec::named("a"), &payload(3, 1000));
    let id = ingest_ok(&store, &file);
    assert_eq!(store.evict(&[id]).unwrap(), vec![id]);
    assert_eq!(store.holding(&id).unwrap(), Holding::Tombstoned);
    let begin = store
        .begin_ingest(signed.clone(), &IngestOptions::from_peer("peer-b"), NOW_MS)
        .unwrap();
    assert!(matches!(begin, Begin::Have(Holding::Tombstoned)));
    // An operator's import brings it back.
    ingest_ok(&store, &file);
    assert_eq!(store.holding(&id).unwrap(), Holding::Stored);
}

#[test]
fn inv_01_untrusted_publisher_leaves_nothing() {
    let (dir, store, _) = fresh(64 * MIB);
    let stranger = publisher(9);
    let (_, file) = seg(&stranger, &SegSpec::named("x"), &payload(4, 5000));
    let err = ingest(&store, &file).unwrap_err();
    assert!(
        matches!(
            err,
            IngestError::Verify(VerifyError::UntrustedPublisher { .. })
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_nothing_left(dir.path(), &store);
}

#[test]
fn inv_01_bad_signature_leaves_nothing() {
    let (dir, store, p) = fresh(64 * MIB);
    let (_, mut file) = seg(&p, &SegSpec::named("x"), &payload(5, 5000));
    // The signature is the last 64 bytes of the header, just before the payload.
    let header_end = file.len() - 5000;
    file[header_end - 1] ^= 0x01;
    let err = ingest(&store, &file).unwrap_err();
    assert!(
        matches!(err, IngestError::Verify(VerifyError::BadSignature)),
        "{err:?}"
    );
    assert_nothing_left(dir.path(), &store);
}

#[test]
fn inv_16_expired_manifest_rejected() {
    let (dir, store, p) = fresh(64 * MIB);
    let mut spec = SegSpec::named("old");
    spec.created_at_ms = NOW_MS - 60 * 60 * 1000;
    spec.expires_at_ms = Some(NOW_MS - 10 * 60 * 1000);
    let (_, file) = seg(&p, &spec, &payload(6, 100));
    let err = ingest(&store, &file).unwrap_err();
    assert!(
        matches!(err, IngestError::Verify(VerifyError::Expired { .. })),
        "{err:?}"
    );
    assert_nothing_left(dir.path(), &store);
}

#[test]
fn inv_02_wrong_hash_leaves_nothing() {
    let (dir, store, p) = fresh(64 * MIB);
    let (_, mut file) = seg(&p, &SegSpec::named("x"), &payload(7, 200_000));
    let last = file.len() - 1;
    file[last] ^= 0xff;
    let err = ingest(&store, &file).unwrap_err();
    assert!(
        matches!(err, IngestError::Format(SegFileError::HashMismatch { .. })),
        "{err:?}"
    );
    assert_nothing_left(dir.path(), &store);
}

#[test]
fn inv_02_truncated_payload_leaves_nothing() {
    let (dir, store, p) = fresh(64 * MIB);
    let (_, file) = seg(&p, &SegSpec::named("x"), &payload(8, 200_000));
    let err = ingest(&store, &file[..file.len() - 1]).unwrap_err();
    assert!(
        matches!(
            err,
            IngestError::Format(SegFileError::TruncatedPayload { .. })
        ),
        "{err:?}"
    );
    assert_nothing_left(dir.path(), &store);
}

#[test]
fn inv_02_payload_longer_than_declared_leaves_nothing() {
    let (dir, store, p) = fresh(64 * MIB);
    let (_, mut file) = seg(&p, &SegSpec::named("x"), &payload(9, 1000));
    file.push(0);
    let err = ingest(&store, &file).unwrap_err();
    assert!(
        matches!(err, IngestError::Format(SegFileError::PayloadTooLong)),
        "{err:?}"
    );
    assert_nothing_left(dir.path(), &store);
}

#[test]
fn inv_17_bad_magic_and_truncated_header_leave_nothing() {
    let (dir, store, p) = fresh(64 * MIB);
    let (_, mut file) = seg(&p, &SegSpec::named("x"), &payload(10, 100));
    let err = ingest(&store, &file[..20]).unwrap_err();
    assert!(
        matches!(err, IngestError::Format(SegFileError::TruncatedHeader)),
        "{err:?}"
    );
    file[0] = b'X';
    let err = ingest(&store, &file).unwrap_err();
    assert!(
        matches!(err, IngestError::Format(SegFileError::BadMagic)),
        "{err:?}"
    );
    assert_nothing_left(dir.path(), &store);
}

#[test]
fn inv_06_inv_08_store_full_is_retryable_and_ceiling_holds() {
    let (dir, store, p) = fresh(MIB);
    let (signed_a, file_a) = seg(&p, &SegSpec::named("a"), &payload(11, 600_000));
    let id_a = ingest_ok(&store, &file_a);
    store.set_pin(&id_a, "relay:peer-b", true).unwrap();
    let (_, file_b) = seg(&p, &SegSpec::named("b"), &payload(12, 600_000));
    let err = ingest(&store, &file_b).unwrap_err();
    assert!(matches!(err, IngestError::StoreFull { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(store.usage().total() <= MIB);
    assert_eq!(store.list().unwrap().len(), 1, "the pinned segment stays");
    assert!(tmp_files(dir.path()).is_empty());
    // Once the peer is served and the pin released, the new segment fits by evicting the old.
    store.set_pin(&id_a, "relay:peer-b", false).unwrap();
    let id_b = ingest_ok(&store, &file_b);
    let ids: Vec<_> = store.list().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![id_b]);
    assert_eq!(store.holding(&signed_a.id()).unwrap(), Holding::Tombstoned);
    assert_eq!(
        store.usage().stored_bytes,
        segment_bytes_on_disk(dir.path())
    );
}

#[test]
fn inv_07_eviction_prefers_expired_then_low_priority() {
    let (_dir, store, p) = fresh(MIB);
    let mut spec_low = SegSpec::named("low");
    spec_low.priority = 1;
    let mut spec_high = SegSpec::named("high");
    spec_high.priority = 200;
    let mut spec_exp = SegSpec::named("expiring");
    spec_exp.priority = 255;
    spec_exp.expires_at_ms = Some(NOW_MS + 1);
    let (_, low) = seg(&p, &spec_low, &payload(13, 300_000));
    let (_, high) = seg(&p, &spec_high, &payload(14, 300_000));
    let (_, exp) = seg(&p, &spec_exp, &payload(15, 300_000));
    let id_low = ingest_ok(&store, &low);
    let id_high = ingest_ok(&store, &high);
    let id_exp = ingest_ok(&store, &exp);
    // Later "now": the expiring one has expired; it goes before the low-priority one.
    let (_, next) = seg(&p, &SegSpec::named("next"), &payload(16, 300_000));
    let later = NOW_MS + 10;
    let stored = store
        .ingest_reader(&next[..], &IngestOptions::import(), later, |_, _| Ok(()))
        .unwrap();
    assert!(matches!(stored, IngestOutcome::Stored(_)));
    let ids: Vec<_> = store.list().unwrap().into_iter().map(|s| s.id).collect();
    assert!(!ids.contains(&id_exp));
    assert!(ids.contains(&id_low) && ids.contains(&id_high));
    // One more: now the low-priority one goes.
    let (_, more) = seg(&p, &SegSpec::named("more"), &payload(17, 300_000));
    store
        .ingest_reader(&more[..], &IngestOptions::import(), later, |_, _| Ok(()))
        .unwrap();
    let ids: Vec<_> = store.list().unwrap().into_iter().map(|s| s.id).collect();
    assert!(!ids.contains(&id_low));
    assert!(ids.contains(&id_high));
}

#[test]
fn inv_07_segment_being_read_is_not_evicted() {
    let (_dir, store, p) = fresh(MIB);
    let (_, a) = seg(&p, &SegSpec::named("a"), &payload(18, 600_000));
    let id_a = ingest_ok(&store, &a);
    let reader = store.open_for_read(&id_a, NOW_MS).unwrap();
    let (_, b) = seg(&p, &SegSpec::named("b"), &payload(19, 600_000));
    assert!(matches!(
        ingest(&store, &b),
        Err(IngestError::StoreFull { .. })
    ));
    drop(reader);
    ingest_ok(&store, &b);
}

#[test]
fn extra_writes_commit_in_the_ingest_transaction() {
    const MARKS: redb::TableDefinition<&[u8; 32], &str> =
        redb::TableDefinition::new("test-marks-v1");
    let (_dir, store, p) = fresh(64 * MIB);
    let (_, file) = seg(&p, &SegSpec::named("a"), &payload(20, 1000));
    let outcome = store
        .ingest_reader(
            &file[..],
            &IngestOptions::from_peer("peer-a"),
            NOW_MS,
            |txn, stored| {
                txn.open_table(MARKS)?
                    .insert(&stored.id.0, stored.row.source.as_str())?;
                store::index::pin(txn, &stored.id, "relay:peer-b")?;
                Ok(stored.row.file_len)
            },
        )
        .unwrap();
    let IngestOutcome::Stored(stored) = outcome else {
        panic!("not stored")
    };
    assert_eq!(stored.extra, file.len() as u64);
    let read = redb::ReadableDatabase::begin_read(store.database().as_ref()).unwrap();
    let marks = read.open_table(MARKS).unwrap();
    assert_eq!(marks.get(&stored.id.0).unwrap().unwrap().value(), "peer-a");
    assert_eq!(
        store.list().unwrap()[0].pins,
        vec!["relay:peer-b".to_owned()]
    );
}

#[test]
fn inv_04_partial_resumes_from_checkpoint_and_is_never_listed() {
    let dir = tempfile::tempdir().unwrap();
    let p = publisher(1);
    let body = payload(21, 1_000_000);
    let (signed, _) = seg(&p, &SegSpec::named("big"), &body);
    let id = signed.id();
    {
        let store = open_real(config(dir.path(), 64 * MIB, trusting(&[&p])));
        let Begin::Ingest(mut ing) = store
            .begin_ingest(signed.clone(), &IngestOptions::from_peer("peer-a"), NOW_MS)
            .unwrap()
        else {
            panic!("expected an ingest")
        };
        assert_eq!(ing.resume_offset(), 0);
        ing.write(&body[..400_000]).unwrap();
        ing.checkpoint(NOW_MS).unwrap();
        ing.write(&body[400_000..500_000]).unwrap();
        assert!(store.list().unwrap().is_empty(), "a partial is not listed");
        drop(ing);
        assert_eq!(
            store.holding(&id).unwrap(),
            Holding::Partial { offset: 400_000 }
        );
        store.close();
    }
    // Reopen (as after a restart): the partial is kept, truncated to its checkpoint.
    let store = open_real(config(dir.path(), 64 * MIB, trusting(&[&p])));
    assert!(store.list().unwrap().is_empty());
    assert!(store.usage().partial_bytes > 400_000);
    let Begin::Ingest(mut ing) = store
        .begin_ingest(signed, &IngestOptions::from_peer("peer-a"), NOW_MS)
        .unwrap()
    else {
        panic!("expected an ingest")
    };
    assert_eq!(ing.resume_offset(), 400_000);
    ing.write(&body[400_000..]).unwrap();
    let stored = ing.finish(NOW_MS, |_, _| Ok(())).unwrap();
    assert_eq!(stored.id, id);
    assert_eq!(store.usage().partial_bytes, 0);
    assert_eq!(
        store.usage().stored_bytes,
        segment_bytes_on_disk(dir.path())
    );
    assert!(tmp_files(dir.path()).is_empty());
}

#[test]
fn hash_mismatch_after_resume_drops_the_partial() {
    let (dir, store, p) = fresh(64 * MIB);
    let body = payload(22, 200_000);
    let (signed, _) = seg(&p, &SegSpec::named("x"), &body);
    let Begin::Ingest(mut ing) = store
        .begin_ingest(signed.clone(), &IngestOptions::from_peer("peer-a"), NOW_MS)
        .unwrap()
    else {
        panic!()
    };
    let mut bad = body.clone();
    bad[150_000] ^= 1;
    ing.write(&bad[..100_000]).unwrap();
    ing.checkpoint(NOW_MS).unwrap();
    ing.write(&bad[100_000..]).unwrap();
    let err = ing.finish(NOW_MS, |_, _| Ok(())).unwrap_err();
    assert!(matches!(
        err,
        IngestError::Format(SegFileError::HashMismatch { .. })
    ));
    assert_eq!(store.holding(&signed.id()).unwrap(), Holding::Absent);
    assert_nothing_left(dir.path(), &store);
}

#[test]
fn busy_while_the_same_segment_is_being_ingested() {
    let (_dir, store, p) = fresh(64 * MIB);
    let (signed, _) = seg(&p, &SegSpec::named("x"), &payload(23, 1000));
    let first = store
        .begin_ingest(signed.clone(), &IngestOptions::from_peer("peer-a"), NOW_MS)
        .unwrap();
    let err = store
        .begin_ingest(signed.clone(), &IngestOptions::from_peer("peer-b"), NOW_MS)
        .unwrap_err();
    assert!(matches!(err, IngestError::Busy(_)));
    assert!(err.is_retryable());
    drop(first);
    assert!(matches!(
        store.begin_ingest(signed, &IngestOptions::from_peer("peer-b"), NOW_MS),
        Ok(Begin::Ingest(_))
    ));
}

#[test]
fn inv_05_recovery_removes_orphans_and_drops_rows_with_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = publisher(1);
    let (_, a) = seg(&p, &SegSpec::named("a"), &payload(24, 5000));
    let (_, b) = seg(&p, &SegSpec::named("b"), &payload(25, 5000));
    let (_, c) = seg(&p, &SegSpec::named("c"), &payload(26, 5000));
    let (id_a, id_b, id_c);
    {
        let store = open_real(config(dir.path(), 64 * MIB, trusting(&[&p])));
        id_a = ingest_ok(&store, &a);
        id_b = ingest_ok(&store, &b);
        id_c = ingest_ok(&store, &c);
        store.close();
    }
    let layout = store::layout::Layout::new(dir.path());
    // a: file removed; b: file truncated; an orphan file and a stray temp file appear.
    std::fs::remove_file(layout.segment_file(&id_a)).unwrap();
    let fb = std::fs::OpenOptions::new()
        .write(true)
        .open(layout.segment_file(&id_b))
        .unwrap();
    fb.set_len(100).unwrap();
    let orphan = store::SegmentId([0xab; 32]);
    std::fs::write(layout.segment_file(&orphan), b"junk").unwrap();
    std::fs::write(layout.tmp_file(&orphan), b"junk").unwrap();

    let cfg = config(dir.path(), 64 * MIB, trusting(&[&p]));
    let (store, report) =
        store::Store::open(cfg, std::sync::Arc::new(store::fs::RealFs), NOW_MS).unwrap();
    let dropped: Vec<_> = report.rows_dropped.iter().map(|(id, _)| *id).collect();
    assert_eq!(dropped, {
        let mut v = vec![id_a, id_b];
        v.sort();
        v
    });
    assert_eq!(report.orphans_removed.len(), 1);
    assert_eq!(report.temp_removed.len(), 1);
    let ids: Vec<_> = store.list().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![id_c]);
    assert_eq!(
        store.usage().stored_bytes,
        segment_bytes_on_disk(dir.path())
    );
    assert!(tmp_files(dir.path()).is_empty());
    // Dropped segments are not tombstoned: they can be fetched again.
    assert_eq!(store.holding(&id_a).unwrap(), Holding::Absent);
}

#[test]
fn inv_24_scrub_quarantines_corruption_at_rest() {
    let (dir, store, p) = fresh(64 * MIB);
    let (_, a) = seg(&p, &SegSpec::named("a"), &payload(27, 100_000));
    let (_, b) = seg(&p, &SegSpec::named("b"), &payload(28, 100_000));
    let id_a = ingest_ok(&store, &a);
    let id_b = ingest_ok(&store, &b);
    let path = store.layout().segment_file(&id_a);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let report = store.scrub(NOW_MS).unwrap();
    assert_eq!(report.checked, 2);
    assert_eq!(report.quarantined.len(), 1);
    assert_eq!(report.quarantined[0].0, id_a);
    let ids: Vec<_> = store.list().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![id_b]);
    assert_eq!(store.quarantined().unwrap()[0].0, id_a);
    assert!(store.layout().quarantine_file(&id_a).exists());
    assert!(matches!(
        store.open_for_read(&id_a, NOW_MS),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.usage().stored_bytes,
        segment_bytes_on_disk(dir.path())
    );
}

#[test]
fn inv_24_truncated_file_found_on_open_is_quarantined_never_served() {
    let (_dir, store, p) = fresh(64 * MIB);
    let (_, a) = seg(&p, &SegSpec::named("a"), &payload(29, 100_000));
    let id = ingest_ok(&store, &a);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(store.layout().segment_file(&id))
        .unwrap();
    f.set_len(1000).unwrap();
    let err = store.open_for_read(&id, NOW_MS).unwrap_err();
    assert!(matches!(err, StoreError::Quarantined { .. }), "{err:?}");
    assert!(store.list().unwrap().is_empty());
    let out = tempfile::tempdir().unwrap();
    assert!(store.export_to_dir(&id, out.path(), NOW_MS).is_err());
    assert!(files_under(out.path()).is_empty(), "nothing exported");
}

#[test]
fn inv_24_corrupt_database_fails_open_and_is_not_reinitialised() {
    let dir = tempfile::tempdir().unwrap();
    let p = publisher(1);
    {
        let store = open_real(config(dir.path(), 64 * MIB, trusting(&[&p])));
        let (_, a) = seg(&p, &SegSpec::named("a"), &payload(30, 1000));
        ingest_ok(&store, &a);
        store.close();
    }
    let db = dir.path().join("edge.redb");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::write(&db, vec![0x5a; len as usize]).unwrap();
    let cfg = config(dir.path(), 64 * MIB, trusting(&[&p]));
    let err = store::Store::open(cfg, std::sync::Arc::new(store::fs::RealFs), NOW_MS).unwrap_err();
    assert!(matches!(err, StoreError::CorruptDatabase { .. }), "{err:?}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        vec![0x5a; len as usize],
        "left as found"
    );
}

#[test]
fn missing_database_with_segment_files_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = publisher(1);
    {
        let store = open_real(config(dir.path(), 64 * MIB, trusting(&[&p])));
        let (_, a) = seg(&p, &SegSpec::named("a"), &payload(31, 1000));
        ingest_ok(&store, &a);
        store.close();
    }
    std::fs::remove_file(dir.path().join("edge.redb")).unwrap();
    let cfg = config(dir.path(), 64 * MIB, trusting(&[&p]));
    let err = store::Store::open(cfg, std::sync::Arc::new(store::fs::RealFs), NOW_MS).unwrap_err();
    assert!(matches!(err, StoreError::IndexMissing { .. }), "{err:?}");
    assert!(segment_bytes_on_disk(dir.path()) > 0, "segments untouched");
}

#[test]
fn second_open_of_a_held_database_says_locked() {
    let (dir, _store, p) = fresh(64 * MIB);
    let cfg = config(dir.path(), 64 * MIB, trusting(&[&p]));
    let err = store::Store::open(cfg, std::sync::Arc::new(store::fs::RealFs), NOW_MS).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
}

#[test]
fn unreadable_data_dir_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let cfg = config(&file, 64 * MIB, trusting(&[&publisher(1)]));
    let err = store::Store::open(cfg, std::sync::Arc::new(store::fs::RealFs), NOW_MS).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
}

#[test]
fn inv_13_mark_propagated_happens_once() {
    let (_dir, store, p) = fresh(64 * MIB);
    let (_, a) = seg(&p, &SegSpec::named("a"), &payload(32, 1000));
    let id = ingest_ok(&store, &a);
    assert!(store.mark_propagated(&id, NOW_MS + 5).unwrap());
    assert!(!store.mark_propagated(&id, NOW_MS + 9).unwrap());
    assert_eq!(
        store.get(&id).unwrap().unwrap().propagated_at_ms,
        Some(NOW_MS + 5)
    );
}

#[test]
fn tombstones_are_capped_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let p = publisher(1);
    let mut cfg = config(dir.path(), 64 * MIB, trusting(&[&p]));
    cfg.tombstones_max = 2;
    let store = open_real(cfg);
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, f) = seg(&p, &SegSpec::named(&format!("s{i}")), &payload(40 + i, 100));
        ids.push(ingest_ok(&store, &f));
    }
    for id in &ids {
        store.evict(&[*id]).unwrap();
    }
    assert_eq!(
        store.holding(&ids[0]).unwrap(),
        Holding::Absent,
        "oldest forgotten"
    );
    assert_eq!(store.holding(&ids[1]).unwrap(), Holding::Tombstoned);
    assert_eq!(store.holding(&ids[2]).unwrap(), Holding::Tombstoned);
}

#[test]
fn sweep_expired_evicts_unpinned_expired_segments() {
    let (_dir, store, p) = fresh(64 * MIB);
    let mut spec = SegSpec::named("soon");
    spec.expires_at_ms = Some(NOW_MS + 100);
    let (_, a) = seg(&p, &spec, &payload(50, 100));
    let (_, b) = seg(&p, &SegSpec::named("forever"), &payload(51, 100));
    let id_a = ingest_ok(&store, &a);
    ingest_ok(&store, &b);
    assert!(store.sweep_expired(NOW_MS).unwrap().is_empty());
    assert_eq!(store.sweep_expired(NOW_MS + 100).unwrap(), vec![id_a]);
}

#[test]
fn inv_17_overlong_header_length_varint_is_rejected_through_ingest() {
    let (dir, store, p) = fresh(64 * MIB);
    let body = payload(40, 1000);
    let (signed, file) = seg(&p, &SegSpec::named("x"), &body);
    // The signed manifest's length varint in two bytes: the same manifest and id, another file.
    let header = signed.encode();
    assert!(header[0] < 0x80);
    let mut overlong = b"EDGSEG".to_vec();
    overlong.extend_from_slice(&1u16.to_le_bytes());
    overlong.extend_from_slice(&(header.len() as u32 + 1).to_le_bytes());
    overlong.extend_from_slice(&[header[0] | 0x80, 0x00]);
    overlong.extend_from_slice(&header[1..]);
    overlong.extend_from_slice(&body);
    assert_eq!(overlong.len(), file.len() + 1);
    let err = ingest(&store, &overlong).unwrap_err();
    assert!(
        matches!(
            err,
            IngestError::Format(SegFileError::Manifest(
                store::manifest::ManifestError::NotCanonical
            ))
        ),
        "{err:?}"
    );
    assert_nothing_left(dir.path(), &store);
    // Once the canonical file is stored, the overlong one is still no copy of it.
    ingest_ok(&store, &file);
    assert!(ingest(&store, &overlong).is_err());
}

#[test]
fn inv_02_inv_19_a_corrupt_copy_of_a_stored_segment_is_reported_corrupt() {
    let (dir, store, p) = fresh(64 * MIB);
    let body = payload(41, 100_000);
    let (_, file) = seg(&p, &SegSpec::named("x"), &body);
    let id = ingest_ok(&store, &file);
    let stored_before = std::fs::read(store.layout().segment_file(&id)).unwrap();
    let header = file.len() - body.len();
    let flipped = |at: usize| {
        let mut b = file.clone();
        b[at] ^= 1;
        b
    };
    let mut padded = file.clone();
    padded.push(0);
    let cases: Vec<(&str, Vec<u8>, Option<u64>, &str)> = vec![
        (
            "payload byte",
            flipped(file.len() - 1),
            None,
            "hash mismatch",
        ),
        ("signature byte", flipped(header - 1), None, "signature"),
        (
            "truncated",
            file[..file.len() - 1].to_vec(),
            None,
            "truncated",
        ),
        ("padded", padded, None, "longer than"),
        (
            "truncated, length known",
            file[..4096].to_vec(),
            Some(4096),
            "truncated or padded",
        ),
    ];
    for (what, bytes, len, reason_part) in cases {
        let opts = match len {
            Some(len) => IngestOptions::import().with_file_len(len),
            None => IngestOptions::import(),
        };
        let err = store
            .ingest_reader(&bytes[..], &opts, NOW_MS, |_, _| Ok(()))
            .unwrap_err();
        match &err {
            IngestError::CorruptCopy { id: got, reason } => {
                assert_eq!(*got, id, "{what}");
                assert!(reason.contains(reason_part), "{what}: {reason}");
            }
            other => panic!("{what}: expected CorruptCopy, got {other:?}"),
        }
        assert!(!err.is_retryable(), "{what}");
        assert!(err.to_string().contains("this copy is corrupt"), "{err}");
    }
    // The stored copy is untouched, and an intact copy is still "already present".
    assert_eq!(
        std::fs::read(store.layout().segment_file(&id)).unwrap(),
        stored_before
    );
    assert!(matches!(
        ingest(&store, &file).unwrap(),
        IngestOutcome::AlreadyHave {
            holding: Holding::Stored,
            ..
        }
    ));
    let opts = IngestOptions::import().with_file_len(file.len() as u64);
    assert!(matches!(
        store
            .ingest_reader(&file[..], &opts, NOW_MS, |_, _| Ok(()))
            .unwrap(),
        IngestOutcome::AlreadyHave { .. }
    ));
    assert_eq!(store.list().unwrap().len(), 1);
    assert!(tmp_files(dir.path()).is_empty());
}

/// The held digest recomputed from the held ids, as a peer's catch-up defines it.
fn digest_of_held_ids(store: &store::Store) -> store::HeldDigest {
    let ids = store.held_ids_after(None, usize::MAX).unwrap();
    let mut hasher = blake3::Hasher::new();
    for id in &ids {
        hasher.update(&id.0);
    }
    store::HeldDigest {
        count: ids.len() as u64,
        hash: *hasher.finalize().as_bytes(),
    }
}

#[test]
fn inv_15_the_held_digest_follows_every_change_of_the_held_set() {
    let (_dir, store, p) = fresh(64 * MIB);
    let check = |what: &str| {
        let first = store.held_digest().unwrap();
        assert_eq!(first, digest_of_held_ids(&store), "after {what}");
        assert_eq!(
            store.held_digest().unwrap(),
            first,
            "asked again after {what}"
        );
        first
    };
    let empty = check("opening");
    assert_eq!(empty.count, 0);
    let (_, a) = seg(&p, &SegSpec::named("a"), &payload(60, 100));
    let (_, b) = seg(&p, &SegSpec::named("b"), &payload(61, 100));
    let id_a = ingest_ok(&store, &a);
    let one = check("an ingest");
    assert_eq!(one.count, 1);
    let id_b = ingest_ok(&store, &b);
    let two = check("a second ingest");
    assert_ne!(two, one);
    // Evicted ids stay held (tombstoned): the set, and so the digest, is the same.
    assert_eq!(store.evict(&[id_a]).unwrap(), vec![id_a]);
    assert_eq!(check("an eviction"), two);
    // Quarantined ids leave the set: catch-up fetches them again.
    store.quarantine(&id_b, "test", NOW_MS).unwrap();
    let after_quarantine = check("a quarantine");
    assert_eq!(after_quarantine.count, 1);
    ingest_ok(&store, &b);
    assert_eq!(check("storing it again"), two);
}

#[test]
fn inv_16_sweeps_find_expiries_that_come_without_a_write_and_segments_left_busy() {
    let (_dir, store, p) = fresh(64 * MIB);
    let mut spec = SegSpec::named("soon");
    spec.expires_at_ms = Some(NOW_MS + 100);
    let (_, a) = seg(&p, &spec, &payload(70, 100));
    spec.name = "later".into();
    spec.expires_at_ms = Some(NOW_MS + 200);
    let (_, b) = seg(&p, &spec, &payload(71, 100));
    let id_a = ingest_ok(&store, &a);
    let id_b = ingest_ok(&store, &b);
    for now in [NOW_MS, NOW_MS + 50, NOW_MS + 99] {
        assert!(store.sweep_expired(now).unwrap().is_empty(), "{now}");
    }
    // Expired while being read: not evicted, and found again once the reader is gone, though
    // nothing was written in between.
    let reader = store.open_for_read(&id_a, NOW_MS).unwrap();
    assert!(store.sweep_expired(NOW_MS + 100).unwrap().is_empty());
    drop(reader);
    assert_eq!(store.sweep_expired(NOW_MS + 101).unwrap(), vec![id_a]);
    assert!(store.sweep_expired(NOW_MS + 150).unwrap().is_empty());
    assert_eq!(store.sweep_expired(NOW_MS + 200).unwrap(), vec![id_b]);
    assert!(store.sweep_expired(NOW_MS + 10_000).unwrap().is_empty());
}

#[test]
fn list_after_pages_through_every_segment_once_in_order() {
    let (_dir, store, p) = fresh(64 * MIB);
    for i in 0..10 {
        let (_, file) = seg(&p, &SegSpec::named(&format!("s{i}")), &payload(80 + i, 50));
        ingest_ok(&store, &file);
    }
    let all = store.list().unwrap();
    assert_eq!(all.len(), 10);
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_after(after.as_ref(), 3).unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        paged.extend(page);
    }
    assert_eq!(paged, all);
    let counts = store.segment_counts().unwrap();
    assert_eq!((counts.stored, counts.propagated), (10, 0));
    assert!(store.mark_propagated(&all[0].id, NOW_MS).unwrap());
    let counts = store.segment_counts().unwrap();
    assert_eq!((counts.stored, counts.propagated), (10, 1));
}

/// Several processes opening a store that does not exist yet (a daemon's first start and an
/// offline import at once): each either gets the store or is told it is held, and nobody ends
/// up on a database file another one renamed away, where what it stores would be lost.
#[test]
fn inv_05_concurrent_first_opens_never_lose_what_the_winner_stores() {
    const ROUNDS: u64 = 12;
    const OPENERS: u64 = 6;
    let secret = publisher(11);
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 1 << 30, trusting(&[&secret]));
        let barrier = std::sync::Barrier::new(OPENERS as usize);
        let stored: Vec<store::SegmentId> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..OPENERS)
                .map(|i| {
                    let (cfg, barrier, secret) = (cfg.clone(), &barrier, &secret);
                    s.spawn(move || {
                        barrier.wait();
                        let store = match store::Store::open(
                            cfg,
                            std::sync::Arc::new(store::fs::RealFs),
                            NOW_MS,
                        ) {
                            Ok((store, _)) => store,
                            Err(StoreError::Locked { .. }) => return None,
                            Err(e) => panic!("round {round}, opener {i}: {e}"),
                        };
                        let body = payload(round * 100 + i, 1_000);
                        let spec = SegSpec::named(&format!("r{round}-{i}"));
                        let (_, file) = seg(secret, &spec, &body);
                        let id = ingest_ok(&store, &file);
                        store.close();
                        Some(id)
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect()
        });
        assert!(!stored.is_empty(), "round {round}: nobody opened the store");
        let store = open_real(cfg);
        let listed: Vec<_> = store.list().unwrap().into_iter().map(|s| s.id).collect();
        for id in &stored {
            assert!(
                listed.contains(id),
                "round {round}: {id} was stored, then lost"
            );
        }
    }
}
