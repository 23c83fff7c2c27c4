//! Segments readable by many senders from one read: verified groups only.
//!
//! Two kinds share this ring of verified groups:
//!
//! - **Receipts.** An ingest that was given its payload's outboard
//!   ([`crate::Ingest::set_outboard`]) publishes each group here once it hashed to its CV, and
//!   only then. A forwarder (the network layer sending the segment on before this node has it
//!   whole) reads from here; it can never see a byte that did not verify, and it never touches
//!   the temp file.
//! - **Shared reads of a stored segment** ([`Store::open_shared`]). Sends of one stored segment
//!   that run at the same time (to several peers) attach to one of these: the reader that needs
//!   the next group first reads it from the file and checks it against the outboard
//!   ([`InFlight::fill_next`]), and the others take it from memory. So the segment is read and
//!   hashed once, not once per peer. It holds the segment's read lease (no eviction meanwhile)
//!   and lives as long as one of its readers.
//!
//! Memory is bounded per segment: the last [`INFLIGHT_RING_GROUPS`] groups are kept. A reader
//! that falls further behind than that is told so ([`Slice::Behind`]) and gives up; the
//! segment's ordinary relay, once it is stored, serves it from disk. So a slow peer never slows
//! the upstream transfer or the other readers, and nothing waits on the slowest.
//!
//! Waiting is runtime-free (a list of `Waker`s), so the same code runs on tokio's threads and in
//! the single-threaded deterministic simulation.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use crate::error::StoreError;
use crate::fs::Fs;
use crate::id::SegmentId;
use crate::limits::INFLIGHT_RING_GROUPS;
use crate::manifest::SignedManifest;
use crate::outboard::{self, GROUP_BYTES, Outboard, group_cv};
use crate::read::SegmentReader;
use crate::store::Store;

/// How a segment's receipt ended, as its readers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlightEnd {
    /// Stored durably: every byte was published.
    Stored,
    /// The ingest failed or was dropped (a partial may be kept for a resume, but no reader
    /// will be fed from it).
    Abandoned,
}

/// What a read of an in-flight segment gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slice {
    /// Verified bytes starting at the position asked for.
    Data(Vec<u8>),
    /// Nothing verified at that position yet: wait ([`InFlight::poll_changed`]) and read again.
    Pending,
    /// The position fell out of the ring (the reader is too slow, or started before the ring).
    Behind,
    /// The receipt ended before that position was published.
    Ended(InFlightEnd),
    /// A shared read found the stored copy corrupt (a group does not match its CV).
    Corrupt(String),
}

/// Why a group could not be read from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupError {
    /// The bytes on disk are not the group the outboard names: the copy is corrupt.
    Mismatch(String),
    /// The file could not be read.
    Io(String),
}

impl std::fmt::Display for GroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupError::Mismatch(s) | GroupError::Io(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Default)]
struct Ring {
    /// Verified groups: (payload offset of the group's first byte, its bytes), in order.
    groups: VecDeque<(u64, Arc<Vec<u8>>)>,
    /// Payload bytes published so far (the end of the last group).
    verified: u64,
    ended: Option<InFlightEnd>,
    /// A shared read: a reader is reading the next group from the file.
    filling: bool,
    /// A shared read found the copy corrupt.
    corrupt: Option<String>,
    /// A shared read: the buffer of the group that last left the ring, for the next fill (so
    /// a shared read allocates its few buffers once, not one per group on whichever blocking
    /// thread reads it, which spread them over the allocator's arenas).
    spare: Option<Vec<u8>>,
    /// Bumped at every change; readers wait for it to move.
    version: u64,
    wakers: Vec<Waker>,
}

/// Where the bytes of an in-flight segment rest: its temp file while it arrives, its segment
/// file once stored. A reader that fell behind the ring reads whole groups from there.
#[derive(Debug)]
pub(crate) struct Files {
    pub fs: Arc<dyn Fs>,
    pub tmp: PathBuf,
    pub stored: PathBuf,
    /// Bytes of the file before the payload.
    pub header_bytes: u64,
}

/// Where a ring's groups come from.
#[derive(Debug)]
enum Origin {
    /// A receipt: its ingest publishes; a reader behind the ring reads the temp or stored file.
    Receipt(Files),
    /// A shared read of a stored segment, through its open reader (which holds the lease), and
    /// the store's count of groups that shared reads read from their files.
    Stored(Box<Mutex<SegmentReader>>, Arc<AtomicU64>),
}

/// One segment readable from verified groups: being received with an outboard, or stored and
/// read by several senders at once (see the module docs).
#[derive(Debug)]
pub struct InFlight {
    id: SegmentId,
    manifest: SignedManifest,
    outboard: Outboard,
    origin: Origin,
    ring: Mutex<Ring>,
}

impl InFlight {
    fn new(manifest: SignedManifest, outboard: Outboard, origin: Origin, start: u64) -> Self {
        InFlight {
            id: manifest.id(),
            manifest,
            outboard,
            origin,
            ring: Mutex::new(Ring {
                verified: start,
                ..Ring::default()
            }),
        }
    }

    /// Group `index`, read from the file (for a reader behind the ring, or to fill a shared
    /// read) and checked against its CV: only verified bytes come out of here too. Blocking
    /// I/O. Only groups already published (or, once stored, any group) are asked for.
    pub fn read_group(&self, index: u64) -> Result<Vec<u8>, GroupError> {
        self.read_group_into(index, Vec::new())
    }

    /// [`InFlight::read_group`] into `bytes` (its capacity reused).
    fn read_group_into(&self, index: u64, mut bytes: Vec<u8>) -> Result<Vec<u8>, GroupError> {
        let len = self.manifest.manifest().payload_len;
        let start = index * GROUP_BYTES;
        let Some(expected) = self.outboard.cv(index) else {
            return Err(GroupError::Io(format!("no group {index}")));
        };
        let want = (len - start).min(GROUP_BYTES);
        let io = |e: std::io::Error| GroupError::Io(e.to_string());
        // Cannot truncate: at most GROUP_BYTES.
        bytes.resize(want as usize, 0);
        match &self.origin {
            Origin::Receipt(f) => {
                let mut file = match f.fs.open_read(&f.tmp) {
                    Ok(file) => file,
                    // Renamed into place meanwhile: it is stored.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        f.fs.open_read(&f.stored).map_err(io)?
                    }
                    Err(e) => return Err(io(e)),
                };
                file.seek(SeekFrom::Start(f.header_bytes + start))
                    .and_then(|_| file.read_exact(&mut bytes))
                    .map_err(io)?;
            }
            Origin::Stored(reader, groups_read) => {
                groups_read.fetch_add(1, Ordering::Relaxed);
                let mut reader = reader.lock().unwrap_or_else(|e| e.into_inner());
                let at = reader.header_bytes() + start;
                let file = reader.payload();
                file.seek(SeekFrom::Start(at))
                    .and_then(|_| file.read_exact(&mut bytes))
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => GroupError::Mismatch(format!(
                            "the stored copy ends within group {index}"
                        )),
                        _ => io(e),
                    })?;
            }
        }
        if group_cv(index, &bytes) != *expected {
            return Err(GroupError::Mismatch(format!(
                "group {index} on disk does not match the outboard"
            )));
        }
        Ok(bytes)
    }

    /// Whether readers fill this ring themselves ([`InFlight::fill_next`]): a shared read of a
    /// stored segment.
    pub fn fills_on_demand(&self) -> bool {
        matches!(self.origin, Origin::Stored(..))
    }

    /// Whether the ring's next group should be read now for a reader at `pos`: a shared read,
    /// not ended, no fill running, and `pos` in the last group published (or at its end).
    pub fn wants_fill(&self, pos: u64) -> bool {
        if !self.fills_on_demand() {
            return false;
        }
        let ring = self.ring();
        let last_start = ring.groups.back().map_or(ring.verified, |(s, _)| *s);
        ring.ended.is_none() && !ring.filling && pos >= last_start
    }

    /// A shared read: reads the next group from the file, checks it and publishes it. `Ok(false)`
    /// when another reader is filling already or everything is published (wait for the ring to
    /// change, [`InFlight::poll_changed`]). A corrupt group ends the ring for every reader
    /// ([`Slice::Corrupt`]). Blocking I/O.
    pub fn fill_next(&self) -> Result<bool, GroupError> {
        let len = self.manifest.manifest().payload_len;
        let (index, buf) = {
            let mut ring = self.ring();
            if !self.fills_on_demand() || ring.filling || ring.ended.is_some() {
                return Ok(false);
            }
            ring.filling = true;
            (
                ring.verified / GROUP_BYTES,
                ring.spare.take().unwrap_or_default(),
            )
        };
        let read = self.read_group_into(index, buf);
        let mut ring = self.ring();
        ring.filling = false;
        match read {
            Ok(bytes) => {
                Self::push(&mut ring, bytes, true);
                if ring.verified >= len {
                    ring.ended = Some(InFlightEnd::Stored);
                }
                Self::change(&mut ring);
                Ok(true)
            }
            Err(e) => {
                if let GroupError::Mismatch(reason) = &e {
                    ring.corrupt = Some(reason.clone());
                    ring.ended = Some(InFlightEnd::Abandoned);
                    ring.groups.clear();
                }
                Self::change(&mut ring);
                Err(e)
            }
        }
    }

    pub fn id(&self) -> SegmentId {
        self.id
    }

    pub fn manifest(&self) -> &SignedManifest {
        &self.manifest
    }

    pub fn outboard(&self) -> &Outboard {
        &self.outboard
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Payload bytes verified and published so far.
    pub fn verified(&self) -> u64 {
        self.ring().verified
    }

    /// At most `max` verified bytes from payload offset `pos`.
    pub fn read(&self, pos: u64, max: usize) -> Slice {
        let ring = self.ring();
        if let Some(reason) = &ring.corrupt {
            return Slice::Corrupt(reason.clone());
        }
        let Some((first, _)) = ring.groups.front() else {
            return match ring.ended {
                Some(end) => Slice::Ended(end),
                None if pos < ring.verified => Slice::Behind,
                None => Slice::Pending,
            };
        };
        if pos < *first {
            return Slice::Behind;
        }
        if pos >= ring.verified {
            return match ring.ended {
                Some(end) => Slice::Ended(end),
                None => Slice::Pending,
            };
        }
        // Groups are contiguous: find the one holding `pos`.
        for (start, bytes) in &ring.groups {
            let end = start + bytes.len() as u64;
            if pos < end {
                let from = (pos - start) as usize;
                let n = max.min(bytes.len() - from);
                return Slice::Data(bytes[from..from + n].to_vec());
            }
        }
        Slice::Pending
    }

    /// A version to wait on: read, and if the read said `Pending`, wait until the version moves.
    pub fn version(&self) -> u64 {
        self.ring().version
    }

    /// Ready once something changed after `seen` (see [`InFlight::version`]).
    pub fn poll_changed(&self, cx: &mut Context<'_>, seen: u64) -> Poll<()> {
        let mut ring = self.ring();
        if ring.version != seen {
            return Poll::Ready(());
        }
        if !ring.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            ring.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    fn change(ring: &mut Ring) {
        ring.version += 1;
        for w in ring.wakers.drain(..) {
            w.wake();
        }
    }

    pub(crate) fn publish(&self, bytes: Vec<u8>) {
        let mut ring = self.ring();
        if ring.ended.is_some() || bytes.is_empty() {
            return;
        }
        Self::push(&mut ring, bytes, false);
        Self::change(&mut ring);
    }

    /// Appends a group, dropping the oldest past the ring's size; `keep_spare` keeps the
    /// dropped group's buffer for the next fill of a shared read.
    fn push(ring: &mut Ring, bytes: Vec<u8>, keep_spare: bool) {
        let start = ring.verified;
        ring.verified += bytes.len() as u64;
        ring.groups.push_back((start, Arc::new(bytes)));
        while ring.groups.len() > INFLIGHT_RING_GROUPS {
            if let Some((_, gone)) = ring.groups.pop_front()
                && keep_spare
                && let Ok(buf) = Arc::try_unwrap(gone)
            {
                ring.spare = Some(buf);
            }
        }
    }

    pub(crate) fn end(&self, end: InFlightEnd) {
        let mut ring = self.ring();
        if ring.ended.is_none() {
            ring.ended = Some(end);
            if end == InFlightEnd::Abandoned {
                ring.groups.clear();
            }
            Self::change(&mut ring);
        }
    }
}

/// A stored segment opened for sending ([`Store::open_shared`]).
#[derive(Debug)]
pub enum Opened {
    /// Read through a ring shared with the other sends of the segment running now.
    Shared(Arc<InFlight>),
    /// Read alone: a payload of one group or less (nothing to share), or a segment without a
    /// usable outboard (its send reads and hashes the whole payload, and finds the damage).
    Alone(Box<SegmentReader>),
}

impl Store {
    /// Opens stored segment `id` for a send, sharing one read of it with the other sends of it
    /// running at the same time (see the module docs). The same checks as
    /// [`Store::open_for_read`]; blocking I/O (the first send of a segment whose outboard was
    /// never recorded hashes it once to record it).
    pub fn open_shared(&self, id: &SegmentId, now_ms: u64) -> Result<Opened, StoreError> {
        // The checks of a read (quarantine, trust, eviction) every time, also for a send that
        // joins a shared read: what changed since it began applies to the newcomer.
        let mut reader = self.open_for_read(id, now_ms)?;
        let shared = &self.inner.shared;
        if let Some(f) = shared.get(id) {
            return Ok(Opened::Shared(f));
        }
        let m = reader.manifest().manifest();
        let (len, root) = (m.payload_len, m.payload_hash);
        if outboard::outboard_len(len) == 0 {
            return Ok(Opened::Alone(Box::new(reader)));
        }
        let parsed = reader
            .outboard()
            .ok()
            .and_then(|bytes| Outboard::parse(&bytes, len, &root).ok());
        let Some(outboard) = parsed else {
            return Ok(Opened::Alone(Box::new(reader)));
        };
        let signed = reader.manifest().clone();
        let origin = Origin::Stored(Box::new(Mutex::new(reader)), shared.groups_read.clone());
        let fresh = InFlight::new(signed, outboard, origin, 0);
        Ok(Opened::Shared(shared.insert_or_join(Arc::new(fresh))))
    }

    /// Groups that shared reads of stored segments have read from their files so far: with one
    /// send per segment, one per group sent; with several at once, still about one per group.
    pub fn shared_groups_read(&self) -> u64 {
        self.inner.shared.groups_read.load(Ordering::Relaxed)
    }
}

/// Shared reads of stored segments that have a reader now, by id. Held weakly: a shared read
/// lives as long as one of its senders.
#[derive(Debug, Default)]
pub(crate) struct SharedReads {
    map: Mutex<BTreeMap<SegmentId, Weak<InFlight>>>,
    groups_read: Arc<AtomicU64>,
}

impl SharedReads {
    fn map(&self) -> MutexGuard<'_, BTreeMap<SegmentId, Weak<InFlight>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shared read of `id` that is still reading, if any. One that has read everything
    /// (or found the copy corrupt) takes no newcomers: they would only read behind its ring.
    fn get(&self, id: &SegmentId) -> Option<Arc<InFlight>> {
        let mut map = self.map();
        let live = map
            .get(id)
            .and_then(Weak::upgrade)
            .filter(|f| f.ring().ended.is_none());
        if live.is_none() {
            map.remove(id);
        }
        live
    }

    /// Registers `fresh`, or joins the shared read of the same segment another send opened
    /// meanwhile (then `fresh` and its lease are dropped). Forgets dead entries on the way.
    fn insert_or_join(&self, fresh: Arc<InFlight>) -> Arc<InFlight> {
        let mut map = self.map();
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(live) = map.get(&fresh.id()).and_then(Weak::upgrade)
            && live.ring().ended.is_none()
        {
            return live;
        }
        map.insert(fresh.id(), Arc::downgrade(&fresh));
        fresh
    }
}

/// The store's table of segments in flight, by id.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    map: Mutex<BTreeMap<SegmentId, Arc<InFlight>>>,
}

impl Registry {
    fn map(&self) -> MutexGuard<'_, BTreeMap<SegmentId, Arc<InFlight>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a receipt whose published bytes start at payload offset `start`.
    pub(crate) fn open(
        &self,
        manifest: SignedManifest,
        outboard: Outboard,
        files: Files,
        start: u64,
    ) -> Arc<InFlight> {
        let inflight = Arc::new(InFlight::new(
            manifest,
            outboard,
            Origin::Receipt(files),
            start,
        ));
        if let Some(old) = self.map().insert(inflight.id(), inflight.clone()) {
            old.end(InFlightEnd::Abandoned);
        }
        inflight
    }

    pub(crate) fn get(&self, id: &SegmentId) -> Option<Arc<InFlight>> {
        self.map().get(id).cloned()
    }

    /// Ends `inflight` and forgets it (readers holding it still see its ending).
    pub(crate) fn close(&self, inflight: &Arc<InFlight>, end: InFlightEnd) {
        inflight.end(end);
        let mut map = self.map();
        if map
            .get(&inflight.id())
            .is_some_and(|i| Arc::ptr_eq(i, inflight))
        {
            map.remove(&inflight.id());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PublisherSecret;
    use crate::manifest::Manifest;

    fn files() -> Files {
        Files {
            fs: Arc::new(crate::fs::RealFs),
            tmp: PathBuf::from("/nonexistent/tmp"),
            stored: PathBuf::from("/nonexistent/seg"),
            header_bytes: 0,
        }
    }

    fn manifest() -> SignedManifest {
        let secret = PublisherSecret::from_seed([3; 32]);
        let m = Manifest::new(secret.public(), "x", 1, 10, [0; 32]);
        SignedManifest::sign(m, &secret).unwrap()
    }

    #[test]
    fn readers_see_only_published_groups_and_fall_behind_past_the_ring() {
        let reg = Registry::default();
        let f = reg.open(manifest(), Outboard::default(), files(), 0);
        assert_eq!(f.read(0, 10), Slice::Pending);
        let v = f.version();
        let g = |b: u8| vec![b; 4];
        f.publish(g(1));
        assert_ne!(f.version(), v);
        assert_eq!(f.read(0, 10), Slice::Data(g(1)));
        assert_eq!(f.read(2, 1), Slice::Data(vec![1]));
        assert_eq!(f.read(4, 10), Slice::Pending);
        for b in 2..=(INFLIGHT_RING_GROUPS as u8 + 1) {
            f.publish(g(b));
        }
        assert_eq!(f.read(0, 10), Slice::Behind, "group 1 left the ring");
        assert_eq!(f.read(4, 10), Slice::Data(g(2)));
        reg.close(&f, InFlightEnd::Stored);
        assert!(reg.get(&f.id()).is_none());
        let end = f.verified();
        assert_eq!(f.read(end, 10), Slice::Ended(InFlightEnd::Stored));
        assert_eq!(
            f.read(end - 1, 10),
            Slice::Data(vec![INFLIGHT_RING_GROUPS as u8 + 1])
        );
    }

    #[test]
    fn an_abandoned_receipt_feeds_nobody() {
        let reg = Registry::default();
        let f = reg.open(manifest(), Outboard::default(), files(), 0);
        f.publish(vec![1; 4]);
        reg.close(&f, InFlightEnd::Abandoned);
        assert_eq!(f.read(0, 10), Slice::Ended(InFlightEnd::Abandoned));
    }

    #[test]
    fn a_resumed_receipt_starts_its_ring_at_the_resume_offset() {
        let reg = Registry::default();
        let f = reg.open(manifest(), Outboard::default(), files(), 8);
        assert_eq!(f.read(0, 10), Slice::Behind);
        assert_eq!(f.read(8, 10), Slice::Pending);
        f.publish(vec![5; 2]);
        assert_eq!(f.read(8, 10), Slice::Data(vec![5; 2]));
    }
}
