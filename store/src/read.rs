//! Reading stored segments: for sending, for export, and for scrub.
//!
//! A reader holds a lease that keeps its segment from being evicted. Every reader is opened by
//! [`Store::open_for_read`], which checks the file before anything is served: its size, that
//! its header is the indexed segment's, and that the signature verifies strictly against a
//! trusted publisher. The payload's hash is checked while it is read ([`SegmentReader::copy_to`],
//! the network sender, [`Store::export_to`]), and by [`Store::scrub`].
//!
//! - Corruption at rest — a file of the wrong size, another segment's header, a signature that
//!   no longer verifies, a payload whose hash does not match — quarantines the segment with the
//!   reason ([`StoreError::Quarantined`]); it is never served (INV-01, INV-24), and the
//!   quarantine watchers hear of it so that a good copy can be fetched again.
//! - A segment whose publisher is no longer trusted is refused with [`StoreError::Untrusted`]
//!   and stays stored: its bytes are intact, and trusting the key again makes it servable.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use crate::error::{StoreError, db};
use crate::fs::FsRead;
use crate::id::SegmentId;
use crate::keys::PublisherKey;
use crate::limits::STREAM_BUF_BYTES;
use crate::manifest::SignedManifest;
use crate::outboard::{self, GroupHasher, Outboard};
use crate::segfile::{self, SegFileError};
use crate::store::Store;
use crate::tables::{self, OUTBOARDS, SEGMENTS, SegmentRow};

/// An open stored segment: its verified header, and its file positioned at the payload.
/// While it lives the segment is not evicted.
#[derive(Debug)]
pub struct SegmentReader {
    lease: Lease,
    signed: SignedManifest,
    row: SegmentRow,
    header_bytes: u64,
    file: Box<dyn FsRead>,
}

#[derive(Debug)]
struct Lease {
    store: Store,
    id: SegmentId,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut acct = self.store.acct();
        if let Some(n) = acct.leases.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                acct.leases.remove(&self.id);
            }
        }
    }
}

impl SegmentReader {
    pub fn id(&self) -> SegmentId {
        self.lease.id
    }

    pub fn manifest(&self) -> &SignedManifest {
        &self.signed
    }

    pub fn row(&self) -> &SegmentRow {
        &self.row
    }

    /// Bytes of the file before the payload.
    pub fn header_bytes(&self) -> u64 {
        self.header_bytes
    }

    /// The file, positioned at the start of the payload. Callers hash what they read and call
    /// [`Store::quarantine`] if it does not match the manifest.
    pub fn payload(&mut self) -> &mut dyn FsRead {
        self.file.as_mut()
    }

    /// The payload's outboard (empty for a single group; see [`crate::outboard`]): the one
    /// recorded at ingest, checked against the manifest's root, or, when it is missing or
    /// damaged (a segment stored before outboards were kept), computed from the payload and
    /// recorded. Leaves the file positioned at the start of the payload. The bytes are not
    /// checked here beyond the outboard itself: a sender checks each group as it reads it.
    pub fn outboard(&mut self) -> Result<Vec<u8>, StoreError> {
        let m = self.signed.manifest();
        let (len, root) = (m.payload_len, m.payload_hash);
        if outboard::outboard_len(len) == 0 {
            return Ok(Vec::new());
        }
        let store = self.lease.store.clone();
        let id = self.id();
        let recorded = {
            let read = store.database().begin_read().map_err(db)?;
            let table = read.open_table(OUTBOARDS).map_err(db)?;
            table.get(&id.0).map_err(db)?.map(|v| v.value().to_vec())
        };
        if let Some(bytes) = recorded
            && Outboard::parse(&bytes, len, &root).is_ok()
        {
            return Ok(bytes);
        }
        let io = |source| StoreError::Io {
            op: "read",
            path: PathBuf::new(),
            source,
        };
        let mut groups = GroupHasher::new(len);
        let mut buf = vec![0u8; STREAM_BUF_BYTES];
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = self.file.read(&mut buf[..want]).map_err(io)?;
            if n == 0 {
                break;
            }
            // Without an outboard to expect, hashing cannot fail.
            let _ = groups.update(&buf[..n]);
            left -= n as u64;
        }
        self.file
            .seek(SeekFrom::Start(self.header_bytes))
            .map_err(io)?;
        let outboard = match groups.finish() {
            Some((actual, outboard)) if actual == root => outboard.to_bytes(),
            // Short or corrupt: the send that follows finds it and quarantines the segment.
            _ => return Ok(Vec::new()),
        };
        let record = outboard.clone();
        store.writer().write(move |txn| {
            if txn.open_table(SEGMENTS)?.get(&id.0)?.is_some() {
                txn.open_table(OUTBOARDS)?
                    .insert(&id.0, record.as_slice())?;
            }
            Ok(())
        })?;
        Ok(outboard)
    }

    /// Streams the whole `.seg` file to `out`, verifying the payload hash as it goes. On a
    /// mismatch the segment is quarantined and the error returned; `out` has then received
    /// bytes that must be discarded.
    pub fn copy_to<W: Write>(mut self, out: &mut W, now_ms: u64) -> Result<u64, StoreError> {
        // Read and written on one thread: the kernel's read-ahead keeps the two overlapping.
        self.file.prefer_cache();
        let store = self.lease.store.clone();
        let id = self.id();
        let header = crate::ingest::header_bytes(&self.signed);
        out.write_all(&header).map_err(|source| StoreError::Io {
            op: "write",
            path: PathBuf::new(),
            source,
        })?;
        let m = self.signed.manifest();
        match segfile::copy_payload(&mut self.file, out, m.payload_len, m.payload_hash) {
            Ok(n) => Ok(header.len() as u64 + n),
            Err(SegFileError::Io(source)) => Err(StoreError::Io {
                op: "copy",
                path: PathBuf::new(),
                source,
            }),
            Err(e) => {
                drop(self);
                store.quarantine(&id, &e.to_string(), now_ms)?;
                Err(StoreError::Quarantined {
                    id,
                    reason: e.to_string(),
                })
            }
        }
    }
}

/// What a scrub found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScrubReport {
    /// Segments read through and found intact.
    pub checked: usize,
    pub bytes: u64,
    /// Segments found corrupt at rest, with the reason; moved to quarantine.
    pub quarantined: Vec<(SegmentId, String)>,
    /// Intact segments whose publisher is not trusted (any more): kept, but neither sent nor
    /// exported.
    pub untrusted: Vec<(SegmentId, PublisherKey)>,
}

/// Why a stored file is not servable.
enum Problem {
    /// Corrupt at rest: quarantine it with this reason.
    Corrupt(String),
    Untrusted(PublisherKey),
}

impl Store {
    /// Opens a stored segment for reading (sending or export), after checking that its file is
    /// the indexed segment and that its signature verifies against a trusted publisher (see the
    /// module docs). Records the use for least-recently-used eviction.
    pub fn open_for_read(&self, id: &SegmentId, now_ms: u64) -> Result<SegmentReader, StoreError> {
        self.open_checked(id, now_ms, true)
    }

    /// [`Store::open_for_read`]; `touch`: record the use for eviction (a scrub's read is not a
    /// use: it would make every segment look recently wanted).
    fn open_checked(
        &self,
        id: &SegmentId,
        now_ms: u64,
        touch: bool,
    ) -> Result<SegmentReader, StoreError> {
        {
            let mut acct = self.acct();
            if acct.evicting.contains(id) {
                return Err(StoreError::Evicting(*id));
            }
            *acct.leases.entry(*id).or_insert(0) += 1;
        }
        let lease = Lease {
            store: self.clone(),
            id: *id,
        };
        let row = self.get(id)?.ok_or(StoreError::NotFound(*id))?;
        let path = self.layout().segment_file(id);
        let opened = self.inner.fs.open_read(&path);
        let corrupt = |reason: String| Err(Problem::Corrupt(reason));
        let problem = match opened {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                corrupt("file missing".to_owned())
            }
            Err(source) => {
                return Err(StoreError::Io {
                    op: "open",
                    path,
                    source,
                });
            }
            Ok(mut file) => match file.len() {
                Ok(len) if len != row.file_len => corrupt(format!(
                    "file holds {len} bytes, index says {}",
                    row.file_len
                )),
                Err(source) => {
                    return Err(StoreError::Io {
                        op: "stat",
                        path,
                        source,
                    });
                }
                Ok(_) => match segfile::read_header(&mut file) {
                    // Mutation point (INV-24, INV-01): the stored copy's signature is not checked
                    // again before it is served.
                    Ok(signed)
                        if signed.id() == *id
                            && crate::mutants::active("skip_at_rest_verification") =>
                    {
                        Ok((signed, file))
                    }
                    Ok(signed) if signed.id() == *id => {
                        match signed.verify_signature(&self.trusted()) {
                            Ok(()) => Ok((signed, file)),
                            // Not damage: the signers are not trusted (enough) any more.
                            Err(e) if e.is_trust() => {
                                Err(Problem::Untrusted(signed.manifest().publisher))
                            }
                            Err(e) => corrupt(e.to_string()),
                        }
                    }
                    Ok(signed) => corrupt(format!("file holds segment {}", signed.id())),
                    Err(SegFileError::Io(source)) => {
                        return Err(StoreError::Io {
                            op: "read",
                            path,
                            source,
                        });
                    }
                    Err(e) => corrupt(format!("bad header: {e}")),
                },
            },
        };
        match problem {
            Ok((signed, file)) => {
                if touch {
                    self.touch(id, now_ms);
                }
                let header_bytes = row.file_len - row.payload_len;
                Ok(SegmentReader {
                    lease,
                    signed,
                    row,
                    header_bytes,
                    file,
                })
            }
            Err(Problem::Untrusted(publisher)) => Err(StoreError::Untrusted { id: *id, publisher }),
            Err(Problem::Corrupt(reason)) => {
                drop(lease);
                self.quarantine(id, &reason, now_ms)?;
                Err(StoreError::Quarantined { id: *id, reason })
            }
        }
    }

    /// Records a use for LRU eviction, without waiting for the commit: losing it in a crash only
    /// makes eviction slightly less informed.
    fn touch(&self, id: &SegmentId, now_ms: u64) {
        let id = *id;
        let queued = self.writer().submit(
            move |txn| {
                let mut table = txn.open_table(SEGMENTS)?;
                let row = table.get(&id.0)?.map(|v| v.value().to_vec());
                if let Some(Ok(mut row)) =
                    row.map(|bytes| tables::decode::<SegmentRow>("segments-v1", bytes.as_slice()))
                {
                    row.last_used_ms = row.last_used_ms.max(now_ms);
                    table.insert(&id.0, tables::encode(&row).as_slice())?;
                }
                Ok(())
            },
            |_| {},
        );
        if let Err(e) = queued {
            tracing::debug!(seg_id = %id, error = %e, "use not recorded");
        }
    }

    /// Re-verifies every stored segment (length, header, signature and trust, payload hash) and
    /// quarantines those that fail, with the reason. Segments of publishers no longer trusted
    /// are reported apart and kept.
    pub fn scrub(&self, now_ms: u64) -> Result<ScrubReport, StoreError> {
        let ids: Vec<SegmentId> = {
            let read = self.database().begin_read().map_err(db)?;
            let table = read.open_table(SEGMENTS).map_err(db)?;
            let mut ids = Vec::new();
            for entry in table.iter().map_err(db)? {
                ids.push(SegmentId(*entry.map_err(db)?.0.value()));
            }
            ids
        };
        let mut report = ScrubReport::default();
        for id in ids {
            match self.scrub_one(&id, now_ms)? {
                ScrubOutcome::Intact { bytes } => {
                    report.checked += 1;
                    report.bytes += bytes;
                }
                ScrubOutcome::Quarantined { reason, read } => {
                    if read {
                        report.checked += 1;
                    }
                    report.quarantined.push((id, reason));
                }
                ScrubOutcome::Untrusted { publisher } => report.untrusted.push((id, publisher)),
                ScrubOutcome::Gone => {}
            }
        }
        Ok(report)
    }

    /// Re-verifies one stored segment as [`Store::scrub`] does, quarantining it if it fails.
    /// Not a use for eviction.
    pub fn scrub_one(&self, id: &SegmentId, now_ms: u64) -> Result<ScrubOutcome, StoreError> {
        self.scrub_one_into(id, now_ms, &mut std::io::sink())
    }

    /// [`Store::scrub_one`], streaming the file through `out` (a background scrub paces its
    /// reads there; an error `out` returns ends the check as an I/O error, quarantining
    /// nothing).
    pub fn scrub_one_into<W: Write>(
        &self,
        id: &SegmentId,
        now_ms: u64,
        out: &mut W,
    ) -> Result<ScrubOutcome, StoreError> {
        let reader = match self.open_checked(id, now_ms, false) {
            Ok(r) => r,
            Err(StoreError::Quarantined { reason, .. }) => {
                return Ok(ScrubOutcome::Quarantined {
                    reason,
                    read: false,
                });
            }
            Err(StoreError::Untrusted { publisher, .. }) => {
                return Ok(ScrubOutcome::Untrusted { publisher });
            }
            // Evicted since listing: nothing to check.
            Err(StoreError::NotFound(_) | StoreError::Evicting(_)) => {
                return Ok(ScrubOutcome::Gone);
            }
            Err(e) => return Err(e),
        };
        match reader.copy_to(out, now_ms) {
            Ok(bytes) => Ok(ScrubOutcome::Intact { bytes }),
            Err(StoreError::Quarantined { reason, .. }) => {
                Ok(ScrubOutcome::Quarantined { reason, read: true })
            }
            Err(e) => Err(e),
        }
    }
}

/// What re-verifying one stored segment found ([`Store::scrub_one`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScrubOutcome {
    /// Read through and intact: `bytes` of its file were checked.
    Intact { bytes: u64 },
    /// Corrupt at rest and now quarantined. `read`: the header verified and the payload was
    /// read before its hash failed.
    Quarantined { reason: String, read: bool },
    /// Intact as far as checked, but its publisher is not trusted (any more): kept.
    Untrusted { publisher: PublisherKey },
    /// No longer stored (evicted or expired since it was listed).
    Gone,
}

use redb::{ReadableDatabase, ReadableTable};
