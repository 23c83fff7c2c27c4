//! Corruption and distrust at rest (INV-01, INV-24): a stored segment is checked — signature
//! and trust included, not only its hash — every time it is opened for sending or export and
//! by scrub. A segment that fails is quarantined with the reason, the quarantine watchers hear
//! of it, and it is never served. A segment whose publisher is no longer trusted is refused
//! with `Untrusted` and kept: its bytes are intact.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use store::keys::TrustedPublishers;
use store::{ExportError, Exported, Holding, SegmentId, Store, StoreError};

const BODY_BYTES: usize = 20_000;

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    id: SegmentId,
    file: Vec<u8>,
    secret: store::keys::PublisherSecret,
    quarantined: Arc<Mutex<Vec<SegmentId>>>,
}

fn open_watched(data: &Path, trusted: TrustedPublishers) -> (Store, Arc<Mutex<Vec<SegmentId>>>) {
    let store = open_real(config(data, 1 << 30, trusted));
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = heard.clone();
    store.watch_quarantine(Box::new(move |id| log.lock().unwrap().push(*id)));
    (store, heard)
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = publisher(5);
        let (store, quarantined) = open_watched(&dir.path().join("data"), trusting(&[&secret]));
        let (_, file) = seg(&secret, &SegSpec::named("policy"), &payload(5, BODY_BYTES));
        let id = ingest_ok(&store, &file);
        std::fs::create_dir(dir.path().join("usb")).unwrap();
        Fixture {
            dir,
            store,
            id,
            file,
            secret,
            quarantined,
        }
    }

    fn stored_path(&self) -> std::path::PathBuf {
        self.store.layout().segment_file(&self.id)
    }

    /// Flips one bit of the stored file at `offset` (its length stays the same).
    fn flip_at_rest(&self, offset: usize) {
        let mut bytes = std::fs::read(self.stored_path()).unwrap();
        bytes[offset] ^= 0x01;
        std::fs::write(self.stored_path(), bytes).unwrap();
    }

    /// Offset of the signature's last byte: the last byte of the header.
    fn signature_last(&self) -> usize {
        self.file.len() - BODY_BYTES - 1
    }

    fn assert_quarantined_for(&self, reason_part: &str) {
        assert!(self.store.get(&self.id).unwrap().is_none(), "row dropped");
        assert!(!self.stored_path().exists(), "file moved out of segments/");
        let rows = self.store.quarantined().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, self.id);
        assert!(
            rows[0].1.reason.contains(reason_part),
            "reason {:?}",
            rows[0].1.reason
        );
        assert!(self.store.layout().quarantine_file(&self.id).exists());
        assert_eq!(
            *self.quarantined.lock().unwrap(),
            vec![self.id],
            "the watchers heard of it, once"
        );
        // Not tombstoned: catch-up may fetch a good copy again.
        assert_eq!(self.store.holding(&self.id).unwrap(), Holding::Absent);
        assert_eq!(self.store.usage().stored_bytes, 0);
    }

    fn usb_is_empty(&self) -> bool {
        std::fs::read_dir(self.dir.path().join("usb"))
            .unwrap()
            .next()
            .is_none()
    }
}

#[test]
fn inv_01_inv_24_signature_flipped_at_rest_is_quarantined_on_open() {
    let f = Fixture::new();
    f.flip_at_rest(f.signature_last());
    match f.store.open_for_read(&f.id, NOW_MS) {
        Err(StoreError::Quarantined { id, reason }) => {
            assert_eq!(id, f.id);
            assert!(reason.contains("signature"), "{reason}");
        }
        other => panic!("expected a quarantine, got {other:?}"),
    }
    f.assert_quarantined_for("signature");
}

#[test]
fn inv_01_inv_19_inv_24_signature_flipped_at_rest_is_not_exported() {
    let f = Fixture::new();
    f.flip_at_rest(f.signature_last());
    let err = f
        .store
        .export_to_dir(&f.id, &f.dir.path().join("usb"), NOW_MS)
        .unwrap_err();
    assert!(
        matches!(err, ExportError::Store(StoreError::Quarantined { .. })),
        "{err:?}"
    );
    assert!(f.usb_is_empty(), "nothing exported, no temp file");
    f.assert_quarantined_for("signature");
}

#[test]
fn inv_02_inv_19_inv_24_payload_corrupt_at_rest_is_quarantined_by_a_direct_export() {
    let f = Fixture::new();
    f.flip_at_rest(f.file.len() - 1);
    let err = f
        .store
        .export_to_dir(&f.id, &f.dir.path().join("usb"), NOW_MS)
        .unwrap_err();
    assert!(
        matches!(err, ExportError::Store(StoreError::Quarantined { .. })),
        "{err:?}"
    );
    assert!(f.usb_is_empty(), "nothing exported, no temp file");
    f.assert_quarantined_for("hash mismatch");
}

#[test]
fn inv_01_inv_24_scrub_quarantines_a_bad_signature_and_reports_untrusted_apart() {
    let f = Fixture::new();
    // A second segment, by a publisher trusted now and dropped from the set below.
    let other = publisher(6);
    let both = trusting(&[&f.secret, &other]);
    let data = f.dir.path().join("data");
    f.store.close();
    drop(f.store);
    let (store, heard) = open_watched(&data, both);
    let (_, file) = seg(&other, &SegSpec::named("other"), &payload(6, 1000));
    let other_id = ingest_ok(&store, &file);
    store.close();
    drop(store);
    let f = Fixture {
        store: open_watched(&data, trusting(&[&f.secret])).0,
        quarantined: heard,
        ..f
    };
    f.flip_at_rest(f.signature_last());
    let report = f.store.scrub(NOW_MS).unwrap();
    assert_eq!(report.checked, 0);
    assert_eq!(report.quarantined.len(), 1);
    assert_eq!(report.quarantined[0].0, f.id);
    assert!(report.quarantined[0].1.contains("signature"));
    assert_eq!(report.untrusted, vec![(other_id, other.public())]);
    assert!(f.store.get(&other_id).unwrap().is_some(), "untrusted kept");
    assert!(f.store.get(&f.id).unwrap().is_none(), "corrupt one gone");
}

#[test]
fn inv_01_untrusted_at_rest_is_refused_but_kept_and_served_once_trusted_again() {
    let f = Fixture::new();
    let data = f.dir.path().join("data");
    f.store.close();
    drop(f.store);
    let stranger = publisher(99);
    let (store, heard) = open_watched(&data, trusting(&[&stranger]));
    match store.open_for_read(&f.id, NOW_MS) {
        Err(StoreError::Untrusted { id, publisher }) => {
            assert_eq!(id, f.id);
            assert_eq!(publisher, f.secret.public());
        }
        other => panic!("expected Untrusted, got {other:?}"),
    }
    let err = store
        .export_to_dir(&f.id, &f.dir.path().join("usb"), NOW_MS)
        .unwrap_err();
    assert!(
        matches!(err, ExportError::Store(StoreError::Untrusted { .. })),
        "{err:?}"
    );
    assert!(
        std::fs::read_dir(f.dir.path().join("usb"))
            .unwrap()
            .next()
            .is_none()
    );
    assert!(store.get(&f.id).unwrap().is_some(), "still stored");
    assert!(store.quarantined().unwrap().is_empty(), "not quarantined");
    assert!(heard.lock().unwrap().is_empty());
    assert!(store.layout().segment_file(&f.id).exists());
    store.close();
    drop(store);
    // Trusted again: served as before.
    let (store, _) = open_watched(&data, trusting(&[&f.secret]));
    let exported = store
        .export_to_dir(&f.id, &f.dir.path().join("usb"), NOW_MS)
        .unwrap();
    assert!(matches!(exported, Exported::Written(_)), "{exported:?}");
}
