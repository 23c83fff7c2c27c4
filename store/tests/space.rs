//! Space under the ceiling (INV-06, INV-07, INV-08): an ingest holds a grant that starts at
//! the room there is and grows as its bytes arrive; segments are evicted only for bytes in
//! hand, never for bytes an offer or a truncated file merely announces. The ceiling is tested
//! at exactly N bytes and at N+1, also across the growth of a grant.

mod common;

use common::*;
use store::evict::Usage;
use store::segfile::SegFileError;
use store::{Begin, Holding, IngestError, IngestOptions, IngestOutcome, SegmentId, Store};

/// Payload of the segments that fill the store.
const FILL_BYTES: usize = 40_000;
/// Payload of the segment that does not fit next to them.
const BIG_BYTES: usize = 60_000;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    secret: store::keys::PublisherSecret,
}

fn open(ceiling_bytes: u64) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = publisher(3);
    let store = open_real(config(dir.path(), ceiling_bytes, trusting(&[&secret])));
    Fixture {
        _dir: dir,
        store,
        secret,
    }
}

/// A segment `name` with a `len`-byte payload: its signed manifest, `.seg` bytes and body.
fn make(
    f: &Fixture,
    name: &str,
    tag: u64,
    len: usize,
) -> (store::manifest::SignedManifest, Vec<u8>, Vec<u8>) {
    let body = payload(tag, len);
    let (signed, file) = seg(&f.secret, &SegSpec::named(name), &body);
    (signed, file, body)
}

/// Stored ids, sorted.
fn listed(store: &Store) -> Vec<SegmentId> {
    store
        .list()
        .expect("list")
        .into_iter()
        .map(|s| s.id)
        .collect()
}

fn sorted(mut ids: Vec<SegmentId>) -> Vec<SegmentId> {
    ids.sort();
    ids
}

fn tombstoned(store: &Store, ids: &[SegmentId]) -> Vec<SegmentId> {
    ids.iter()
        .copied()
        .filter(|id| store.holding(id).expect("holding") == Holding::Tombstoned)
        .collect()
}

/// A peer's offer of `signed`, admitted.
fn offer(store: &Store, signed: store::manifest::SignedManifest) -> Box<store::Ingest> {
    match store.begin_ingest(signed, &IngestOptions::from_peer("peer-b"), NOW_MS) {
        Ok(Begin::Ingest(ingest)) => ingest,
        other => panic!("expected the offer admitted, got {other:?}"),
    }
}

fn assert_within_ceiling(store: &Store) {
    let usage = store.usage();
    assert!(
        usage.total() <= store.config().ceiling_bytes,
        "INV-06: {usage:?} over a ceiling of {}",
        store.config().ceiling_bytes
    );
}

/// Two 40 kB segments fill a store that is then exactly full (no byte of room).
fn full_store_with_two(extra_room: u64) -> (Fixture, Vec<SegmentId>, u64) {
    let probe = open(1 << 30);
    let (_, a, _) = make(&probe, "fill-a", 1, FILL_BYTES);
    let (_, b, _) = make(&probe, "fill-b", 2, FILL_BYTES);
    let ceiling = (a.len() + b.len()) as u64 + extra_room;
    let f = open(ceiling);
    let ids = sorted(vec![ingest_ok(&f.store, &a), ingest_ok(&f.store, &b)]);
    assert_eq!(f.store.usage().total() + extra_room, ceiling);
    (f, ids, ceiling)
}

#[test]
fn inv_06_inv_07_truncated_import_of_known_length_evicts_nothing_in_a_full_store() {
    let (f, filled, _) = full_store_with_two(0);
    let (_, big, _) = make(&f, "big", 9, BIG_BYTES);
    // The big segment fits after evicting both: it is admitted, but the copy is cut at 4 KiB.
    let truncated = &big[..4096];
    let before = f.store.usage();
    let opts = IngestOptions::import().with_file_len(truncated.len() as u64);
    let err = f
        .store
        .ingest_reader(truncated, &opts, NOW_MS, |_, _| Ok(()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            IngestError::Format(SegFileError::FileLengthMismatch { declared, actual: 4096 })
                if declared == big.len() as u64
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("truncated or padded"), "{err}");
    assert_eq!(listed(&f.store), filled, "nothing evicted");
    assert!(
        tombstoned(&f.store, &filled).is_empty(),
        "nothing tombstoned"
    );
    assert_eq!(f.store.usage(), before);
    // Padded: the same.
    let mut padded = big.clone();
    padded.push(0);
    let opts = IngestOptions::import().with_file_len(padded.len() as u64);
    let err = f
        .store
        .ingest_reader(&padded[..], &opts, NOW_MS, |_, _| Ok(()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            IngestError::Format(SegFileError::FileLengthMismatch { .. })
        ),
        "{err:?}"
    );
    assert_eq!(listed(&f.store), filled, "nothing evicted");
}

#[test]
fn inv_06_inv_07_truncated_import_evicts_nothing_while_its_bytes_fit() {
    // Not exactly full: 8 KiB of room, far less than the big segment needs, more than the
    // truncated copy brings. Its length is not known up front (a stream).
    let (f, filled, _) = full_store_with_two(8 << 10);
    let (_, big, _) = make(&f, "big", 9, BIG_BYTES);
    let err = f
        .store
        .ingest_reader(
            &big[..4096],
            &IngestOptions::import(),
            NOW_MS,
            |_, _| Ok(()),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            IngestError::Format(SegFileError::TruncatedPayload { .. })
        ),
        "{err:?}"
    );
    assert_eq!(listed(&f.store), filled, "nothing evicted");
    assert!(
        tombstoned(&f.store, &filled).is_empty(),
        "nothing tombstoned"
    );
    assert_eq!(f.store.usage().reserved_bytes, 0);
    assert!(tmp_files(f.store.layout().root()).is_empty());
}

#[test]
fn inv_07_inv_08_offer_then_five_bytes_then_drop_evicts_nothing() {
    let (f, filled, ceiling) = full_store_with_two(8 << 10);
    let (signed, big, _) = make(&f, "big", 9, BIG_BYTES);
    let header = (big.len() - BIG_BYTES) as u64;
    let before = f.store.usage();
    let mut ingest = offer(&f.store, signed);
    // Granted only the room there is, not the 60 kB announced.
    assert_eq!(ingest.granted(), 8 << 10);
    assert_eq!(f.store.usage().total(), ceiling);
    ingest
        .write(&big[header as usize..header as usize + 5])
        .unwrap();
    assert_eq!(listed(&f.store), filled, "nothing evicted for 5 bytes");
    assert_within_ceiling(&f.store);
    drop(ingest);
    assert_eq!(listed(&f.store), filled, "nothing evicted");
    assert!(
        tombstoned(&f.store, &filled).is_empty(),
        "nothing tombstoned"
    );
    assert_eq!(f.store.usage(), before, "the grant is released");
}

#[test]
fn inv_06_inv_07_growth_evicts_only_as_bytes_arrive() {
    // Four 40 kB segments fill the store exactly; the 60 kB one needs two of them to go.
    let probe = open(1 << 30);
    let fills: Vec<Vec<u8>> = (0..4)
        .map(|i| make(&probe, &format!("fill-{i}"), 20 + i, FILL_BYTES).1)
        .collect();
    let fill_len = fills[0].len() as u64;
    let f = open(4 * fill_len);
    let mut filled = Vec::new();
    for (i, file) in fills.iter().enumerate() {
        // Stored (and so last used) a second apart: the eviction order is the storing order.
        let now = NOW_MS + 1000 * i as u64;
        match f
            .store
            .ingest_reader(&file[..], &IngestOptions::import(), now, |_, _| Ok(()))
            .unwrap()
        {
            IngestOutcome::Stored(s) => filled.push(s.id),
            other => panic!("{other:?}"),
        }
    }
    let (signed, big, body) = make(&f, "big", 9, BIG_BYTES);
    let header = (big.len() - BIG_BYTES) as u64;
    let mut ingest = offer(&f.store, signed);
    // The header needed room: one segment went for it, no more.
    assert_eq!(listed(&f.store).len(), 3, "one eviction for the header");
    let chunk = 10_000;
    for (n, part) in body.chunks(chunk).enumerate() {
        ingest.write(part).unwrap();
        let written = header + ((n + 1) * chunk).min(BIG_BYTES) as u64;
        // Exactly as many evicted as the bytes in hand need, whole segments at a time.
        let want_evicted = written.div_ceil(fill_len);
        let evicted = filled.len() as u64 - listed(&f.store).len() as u64;
        assert_eq!(
            evicted, want_evicted,
            "after {written} bytes in hand: {evicted} evicted"
        );
        assert!(
            ingest.granted() >= written,
            "INV-06: written beyond the grant"
        );
        assert_within_ceiling(&f.store);
    }
    let stored = ingest.finish(NOW_MS, |_, _| Ok(())).unwrap();
    assert_eq!(stored.row.file_len, big.len() as u64);
    assert_eq!(
        listed(&f.store).len(),
        3,
        "the big one and the last two fillers"
    );
    assert_eq!(
        sorted(tombstoned(&f.store, &filled)),
        sorted(filled[..2].to_vec()),
        "least recently used first"
    );
    assert_eq!(
        f.store.usage(),
        Usage {
            stored_bytes: big.len() as u64 + 2 * fill_len,
            reserved_bytes: 0,
            partial_bytes: 0
        }
    );
}

/// A store whose ceiling is the file lengths of `a` and `b` plus `delta` (0 = exactly N).
fn with_ceiling(delta: i64) -> (Fixture, Vec<u8>, Vec<u8>) {
    let probe = open(1 << 30);
    let (_, a, _) = make(&probe, "a", 31, FILL_BYTES);
    let (_, b, _) = make(&probe, "b", 32, FILL_BYTES + 1234);
    let ceiling = ((a.len() + b.len()) as i64 + delta) as u64;
    (open(ceiling), a, b)
}

#[test]
fn inv_06_inv_08_ceiling_admits_exactly_n_bytes_not_n_plus_1() {
    // N: both fit, to the byte, with `a` pinned (nothing may make room).
    let (f, a, b) = with_ceiling(0);
    let id_a = ingest_ok(&f.store, &a);
    f.store.set_pin(&id_a, "relay:peer-b", true).unwrap();
    ingest_ok(&f.store, &b);
    assert_eq!(f.store.usage().total(), f.store.config().ceiling_bytes);

    // N+1 bytes asked of a ceiling of N: refused, retryable, nothing evicted or written.
    let (f, a, b) = with_ceiling(-1);
    let id_a = ingest_ok(&f.store, &a);
    f.store.set_pin(&id_a, "relay:peer-b", true).unwrap();
    let err = ingest(&f.store, &b).unwrap_err();
    assert!(
        matches!(err, IngestError::StoreFull { needed_bytes, .. } if needed_bytes == b.len() as u64),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(listed(&f.store), vec![id_a]);
    assert_eq!(f.store.usage().total(), a.len() as u64);
    assert!(tmp_files(f.store.layout().root()).is_empty());
}

#[test]
fn inv_06_inv_07_growth_at_n_and_n_plus_1_bytes() {
    // Ceiling N = |a| + |b| - 1 with `a` evictable: `b` is admitted (it fits after evicting
    // `a`) and granted the room there is, one byte short of its file. Every byte but the last
    // lands within that grant; the last one is the N+1st and must evict `a` first.
    let (f, a, b) = with_ceiling(-1);
    let id_a = ingest_ok(&f.store, &a);
    let signed = store::segfile::read_header(&b[..]).unwrap();
    let header = b.len() - (FILL_BYTES + 1234);
    let mut ingest = offer(&f.store, signed);
    assert_eq!(
        ingest.granted(),
        b.len() as u64 - 1,
        "all the room, no more"
    );
    ingest.write(&b[header..b.len() - 1]).unwrap();
    assert_eq!(listed(&f.store), vec![id_a], "N bytes fit without evicting");
    assert_eq!(f.store.usage().total(), f.store.config().ceiling_bytes);
    ingest.write(&b[b.len() - 1..]).unwrap();
    assert_eq!(
        f.store.holding(&id_a).unwrap(),
        Holding::Tombstoned,
        "byte N+1 evicted a"
    );
    assert_within_ceiling(&f.store);
    assert_eq!(ingest.granted(), b.len() as u64);
    ingest.finish(NOW_MS, |_, _| Ok(())).unwrap();
    assert_eq!(f.store.usage().total(), b.len() as u64);

    // The same with `a` pinned: admitted? No — it could never fit, so it is refused at once.
    let (f, a, b) = with_ceiling(-1);
    let id_a = ingest_ok(&f.store, &a);
    f.store.set_pin(&id_a, "operator", true).unwrap();
    let signed = store::segfile::read_header(&b[..]).unwrap();
    let err = f
        .store
        .begin_ingest(signed, &IngestOptions::from_peer("peer-b"), NOW_MS)
        .unwrap_err();
    assert!(matches!(err, IngestError::StoreFull { .. }), "{err:?}");
    assert_eq!(f.store.usage().reserved_bytes, 0);
}

#[test]
fn inv_06_inv_08_growth_that_cannot_be_met_is_store_full_and_keeps_the_checkpoint() {
    // Admitted while `a` could go; `a` is pinned while the payload streams (the relay owes it
    // to a peer now): the growth that needed it fails with StoreFull, writes nothing, and the
    // checkpointed prefix stays as a partial for a later resume.
    let (f, a, b) = with_ceiling(-1);
    let id_a = ingest_ok(&f.store, &a);
    let signed = store::segfile::read_header(&b[..]).unwrap();
    let header = b.len() - (FILL_BYTES + 1234);
    let mut ingest = offer(&f.store, signed.clone());
    let half = header + 20_000;
    ingest.write(&b[header..half]).unwrap();
    ingest.checkpoint(NOW_MS).unwrap();
    f.store.set_pin(&id_a, "relay:peer-c", true).unwrap();
    let err = ingest.write(&b[half..]).unwrap_err();
    assert!(matches!(err, IngestError::StoreFull { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(
        ingest.written(),
        20_000,
        "nothing of the refused write was written"
    );
    assert_within_ceiling(&f.store);
    drop(ingest);
    assert_eq!(
        f.store.holding(&signed.id()).unwrap(),
        Holding::Partial { offset: 20_000 }
    );
    assert_eq!(f.store.usage().partial_bytes, half as u64);
    assert_eq!(f.store.usage().reserved_bytes, 0);
    assert_eq!(listed(&f.store), vec![id_a], "the pinned segment stays");
    // Unpinned, the offer resumes from the checkpoint and completes, evicting `a` for its
    // last bytes only.
    f.store.set_pin(&id_a, "relay:peer-c", false).unwrap();
    let mut ingest = offer(&f.store, signed);
    assert_eq!(ingest.resume_offset(), 20_000);
    assert!(
        ingest.granted() >= half as u64,
        "the partial's bytes stay in the grant"
    );
    ingest.write(&b[half..]).unwrap();
    ingest.finish(NOW_MS, |_, _| Ok(())).unwrap();
    assert_eq!(f.store.holding(&id_a).unwrap(), Holding::Tombstoned);
    assert_within_ceiling(&f.store);
}

#[test]
fn an_honest_import_into_a_full_store_still_evicts_what_it_needs() {
    let (f, filled, _) = full_store_with_two(0);
    let (signed, big, _) = make(&f, "big", 9, BIG_BYTES);
    let opts = IngestOptions::import().with_file_len(big.len() as u64);
    match f
        .store
        .ingest_reader(&big[..], &opts, NOW_MS, |_, _| Ok(()))
        .unwrap()
    {
        IngestOutcome::Stored(s) => assert_eq!(s.id, signed.id()),
        other => panic!("{other:?}"),
    }
    assert_eq!(listed(&f.store), vec![signed.id()]);
    assert_eq!(sorted(tombstoned(&f.store, &filled)), filled);
    assert_within_ceiling(&f.store);
}

#[test]
fn inv_06_a_grant_grows_by_at_most_one_step_ahead_of_its_bytes() {
    use store::limits::RESERVE_STEP_BYTES;
    const MIB: usize = 1 << 20;
    // 10 MiB of room next to a 20 MiB segment; a 25 MiB segment is admitted (it fits once the
    // 20 MiB one goes) and granted the 10 MiB there are.
    let probe = open(1 << 30);
    let (_, a, _) = make(&probe, "a", 51, 20 * MIB);
    let f = open(a.len() as u64 + 10 * MIB as u64);
    let id_a = ingest_ok(&f.store, &a);
    let (signed, big, body) = make(&f, "big", 52, 25 * MIB);
    let header = (big.len() - body.len()) as u64;
    let mut ingest = offer(&f.store, signed);
    let room = 10 * MIB as u64;
    assert_eq!(ingest.granted(), room);
    let fits = (room - header) as usize;
    ingest.write(&body[..fits]).unwrap();
    assert_eq!(listed(&f.store), vec![id_a], "the room was enough so far");
    // One byte more: `a` goes (20 MiB freed), but the grant takes one step, not all of it.
    ingest.write(&body[fits..fits + 1]).unwrap();
    assert_eq!(f.store.holding(&id_a).unwrap(), Holding::Tombstoned);
    assert_eq!(ingest.granted(), room + RESERVE_STEP_BYTES);
    assert_within_ceiling(&f.store);
    // The rest: the grant reaches the whole file and no further.
    ingest.write(&body[fits + 1..]).unwrap();
    assert_eq!(ingest.granted(), big.len() as u64);
    ingest.finish(NOW_MS, |_, _| Ok(())).unwrap();
    assert_eq!(f.store.usage().total(), big.len() as u64);
}
