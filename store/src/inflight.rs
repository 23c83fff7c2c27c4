//! Segments being received, readable while they arrive: verified groups only.
//!
//! An ingest that was given its payload's outboard ([`crate::Ingest::set_outboard`]) publishes
//! each group here once it hashed to its CV, and only then. A forwarder (the network layer
//! sending the segment on before this node has it whole) reads from here; it can never see a
//! byte that did not verify, and it never touches the temp file.
//!
//! Memory is bounded per segment: the last [`INFLIGHT_RING_GROUPS`] groups are kept. A reader
//! that falls further behind than that is told so ([`Slice::Behind`]) and gives up; the
//! segment's ordinary relay, once it is stored, serves it from disk. So a slow peer never slows
//! the upstream transfer or the other readers, and nothing waits on the slowest.
//!
//! Waiting is runtime-free (a list of `Waker`s), so the same code runs on tokio's threads and in
//! the single-threaded deterministic simulation.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use crate::fs::Fs;
use crate::id::SegmentId;
use crate::limits::INFLIGHT_RING_GROUPS;
use crate::manifest::SignedManifest;
use crate::outboard::{GROUP_BYTES, Outboard, group_cv};

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
}

#[derive(Debug, Default)]
struct Ring {
    /// Verified groups: (payload offset of the group's first byte, its bytes), in order.
    groups: VecDeque<(u64, Arc<Vec<u8>>)>,
    /// Payload bytes published so far (the end of the last group).
    verified: u64,
    ended: Option<InFlightEnd>,
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

/// One segment being received with an outboard.
#[derive(Debug)]
pub struct InFlight {
    id: SegmentId,
    manifest: SignedManifest,
    outboard: Outboard,
    files: Files,
    ring: Mutex<Ring>,
}

impl InFlight {
    fn new(manifest: SignedManifest, outboard: Outboard, files: Files, start: u64) -> Self {
        InFlight {
            id: manifest.id(),
            manifest,
            outboard,
            files,
            ring: Mutex::new(Ring {
                verified: start,
                ..Ring::default()
            }),
        }
    }

    /// Group `index`, read from the file (for a reader behind the ring) and checked against its
    /// CV: only verified bytes come out of here too. Blocking I/O. Only groups already
    /// published (or, once stored, any group) are asked for.
    pub fn read_group(&self, index: u64) -> Result<Vec<u8>, String> {
        let len = self.manifest.manifest().payload_len;
        let start = index * GROUP_BYTES;
        let Some(expected) = self.outboard.cv(index) else {
            return Err(format!("no group {index}"));
        };
        let want = (len - start).min(GROUP_BYTES);
        let f = &self.files;
        let mut file = match f.fs.open_read(&f.tmp) {
            Ok(file) => file,
            // Renamed into place meanwhile: it is stored.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                f.fs.open_read(&f.stored).map_err(|e| e.to_string())?
            }
            Err(e) => return Err(e.to_string()),
        };
        // Cannot truncate: at most GROUP_BYTES.
        let mut bytes = vec![0u8; want as usize];
        file.seek(SeekFrom::Start(f.header_bytes + start))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| e.to_string())?;
        if group_cv(index, &bytes) != *expected {
            return Err(format!("group {index} on disk does not match the outboard"));
        }
        Ok(bytes)
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
        let start = ring.verified;
        ring.verified += bytes.len() as u64;
        ring.groups.push_back((start, Arc::new(bytes)));
        while ring.groups.len() > INFLIGHT_RING_GROUPS {
            ring.groups.pop_front();
        }
        Self::change(&mut ring);
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
        let inflight = Arc::new(InFlight::new(manifest, outboard, files, start));
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
