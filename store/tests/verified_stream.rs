//! Verified streaming in the store: an ingest given its payload's outboard checks it against
//! the signed root, checks each group as it completes, publishes only verified groups to
//! forwarders, and records the outboard for later sends.

mod common;

use std::io::Read;

use common::*;
use store::inflight::Slice;
use store::outboard::{GROUP_BYTES, GroupHasher};
use store::segfile::SegFileError;
use store::{IngestError, IngestOptions, IngestOutcome};

const LEN: usize = 5 * GROUP_BYTES as usize + 4321;

fn outboard_of(body: &[u8]) -> Vec<u8> {
    let mut h = GroupHasher::new(body.len() as u64);
    h.update(body).unwrap();
    h.finish().unwrap().1.to_bytes()
}

/// A reader that checks, before handing out the bytes of group `at`, what forwarders can see.
struct Watched<'a> {
    file: &'a [u8],
    pos: usize,
    on_read: &'a mut dyn FnMut(usize),
}

impl Read for Watched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (self.on_read)(self.pos);
        let n = buf.len().min(self.file.len() - self.pos).min(64 << 10);
        buf[..n].copy_from_slice(&self.file[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn inv_02_an_import_with_its_outboard_publishes_only_verified_groups_then_stores() {
    let dir = tempfile::tempdir().unwrap();
    let secret = publisher(1);
    let store = open_real(config(dir.path(), 1 << 30, trusting(&[&secret])));
    let body = payload(1, LEN);
    let (signed, file) = seg(&secret, &SegSpec::named("v"), &body);
    let id = signed.id();
    let header = file.len() - body.len();
    let outboard = outboard_of(&body);

    let mut announced = Vec::new();
    let mut seen_max = 0u64;
    let watch_store = store.clone();
    let mut on_read = |pos: usize| {
        // Whatever is published is verified: never ahead of the bytes read so far, and equal
        // to the real payload.
        if let Some(f) = watch_store.in_flight(&id) {
            let verified = f.verified();
            assert!(verified as usize <= pos.saturating_sub(header));
            assert!(verified % GROUP_BYTES == 0 || verified == body.len() as u64);
            if verified > 0 {
                let last = verified - 1;
                match f.read(last, 1) {
                    Slice::Data(b) => assert_eq!(b[0], body[last as usize]),
                    other => panic!("{other:?}"),
                }
            }
            seen_max = seen_max.max(verified);
        }
    };
    let reader = Watched {
        file: &file,
        pos: 0,
        on_read: &mut on_read,
    };
    let outcome = store
        .ingest_reader_forwarding(
            reader,
            &IngestOptions::import(),
            NOW_MS,
            &outboard,
            &mut |id| announced.push(id),
            |_, _| Ok(()),
        )
        .unwrap();
    assert!(matches!(outcome, IngestOutcome::Stored(_)));
    assert_eq!(announced, vec![id], "announced once, as soon as in flight");
    assert!(
        seen_max >= 4 * GROUP_BYTES,
        "groups were published as they came"
    );
    assert!(store.in_flight(&id).is_none(), "gone once stored");

    // A send of the stored segment finds the same outboard (recorded, not recomputed).
    let mut reader = store.open_for_read(&id, NOW_MS).unwrap();
    assert_eq!(reader.outboard().unwrap(), outboard);
}

#[test]
fn inv_02_a_wrong_outboard_or_a_wrong_group_is_refused_and_nothing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let secret = publisher(1);
    let store = open_real(config(dir.path(), 1 << 30, trusting(&[&secret])));
    let body = payload(2, LEN);
    let (signed, file) = seg(&secret, &SegSpec::named("w"), &body);
    let id = signed.id();
    let good = outboard_of(&body);
    let ingest = |file: &[u8], outboard: &[u8]| {
        store.ingest_reader_forwarding(
            file,
            &IngestOptions::import(),
            NOW_MS,
            outboard,
            &mut |_| {},
            |_, _| Ok(()),
        )
    };

    let mut bad = good.clone();
    bad[33] ^= 1;
    assert!(matches!(
        ingest(&file, &bad),
        Err(IngestError::Format(SegFileError::BadOutboard(_)))
    ));
    assert!(matches!(
        ingest(&file, &good[..32]),
        Err(IngestError::Format(SegFileError::BadOutboard(_)))
    ));

    // The third group lies: refused as it completes, before the rest is read.
    let mut lying = file.clone();
    let header = file.len() - body.len();
    lying[header + 2 * GROUP_BYTES as usize + 7] ^= 0x40;
    match ingest(&lying, &good) {
        Err(IngestError::Format(SegFileError::GroupMismatch(m))) => assert_eq!(m.index, 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.holding(&id).unwrap(), store::Holding::Absent);
    assert!(tmp_files(dir.path()).is_empty(), "nothing kept");

    // And the honest copy goes in; the in-flight record of the lie is gone.
    assert!(matches!(ingest(&file, &good), Ok(IngestOutcome::Stored(_))));
    assert!(store.in_flight(&id).is_none());
}

/// A forwarder that fell behind the ring reads whole groups from the file instead: from the
/// temp file while the segment arrives, from the stored file once it is stored, and each one
/// checked against the outboard (INV-02: still only verified bytes).
#[test]
fn inv_02_a_reader_behind_the_ring_reads_verified_groups_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = publisher(1);
    let store = open_real(config(dir.path(), 1 << 30, trusting(&[&secret])));
    let body = payload(3, LEN);
    let (signed, _) = seg(&secret, &SegSpec::named("behind"), &body);
    let id = signed.id();
    let store::Begin::Ingest(mut ingest) = store
        .begin_ingest(signed, &IngestOptions::from_peer("up"), NOW_MS)
        .unwrap()
    else {
        panic!("a fresh segment is ingested");
    };
    ingest.set_outboard(&outboard_of(&body), true).unwrap();
    let group = GROUP_BYTES as usize;
    // Every group but the last: the ring keeps the last four, so group 0 has left it.
    for piece in body[..5 * group].chunks(100_000) {
        ingest.write(piece).unwrap();
    }
    let f = store.in_flight(&id).expect("in flight");
    assert_eq!(f.read(0, 10), Slice::Behind);
    // Only groups that left the ring are read this way, long since written out: the newest
    // bytes of the temp file may still wait in the writer's last direct-I/O block.
    assert_eq!(
        f.read_group(0).unwrap(),
        body[..group],
        "from the temp file"
    );
    ingest.write(&body[5 * group..]).unwrap();
    ingest.finish(NOW_MS, |_, _| Ok(())).unwrap();
    assert_eq!(
        f.read_group(1).unwrap(),
        body[group..2 * group],
        "from the stored file"
    );
    assert_eq!(
        f.read_group(5).unwrap(),
        body[5 * group..],
        "the short last group"
    );

    // A group that changed on disk is refused, not served.
    let path = store.layout().segment_file(&id);
    let mut bytes = std::fs::read(&path).unwrap();
    let header = bytes.len() - body.len();
    bytes[header + group + 5] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        f.read_group(1),
        Err(store::inflight::GroupError::Mismatch(_))
    ));
}
