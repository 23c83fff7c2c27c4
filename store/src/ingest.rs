//! Ingest: the durability contract, step by step.
//!
//! ```text
//! already stored, or evicted here before? → answer "have" (nothing is stored; an import's
//!     copy of a stored segment is still read through and verified: CorruptCopy if it fails)
//!   → a file whose length is known and differs from its header's: refused (nothing reserved)
//!   → verify manifest (signature, trusted publisher, freshness, bounds)
//!   → admit: StoreFull unless it could fit after every eviction the plan allows (planned,
//!     not applied); grant at once only what fits without evicting
//!   → create tmp/<id>.part and write the header (within the grant)
//!   → stream the payload into it while hashing, growing the grant     [ingest.stream]
//!     before each write that needs it: room first, then eviction of only what the bytes in
//!     hand need (StoreFull if the plan cannot free it)
//!   → verify length and blake3                                     [ingest.after_write]
//!   → fsync the temp file                                          [ingest.after_fsync]
//!   → rename into segments/<xx>/<id>.seg                           [ingest.after_rename]
//!   → fsync that directory                                         [ingest.after_dir_fsync]
//!   → ONE redb transaction: segment row, partial row removed, tombstone removed, and the
//!     caller's own writes (the relay's jobs and pins)                [ingest.in_commit]
//!   → commit (durable)                                             [ingest.after_commit]
//!   → only now report success.
//! ```
//!
//! Space (INV-06, INV-08). Each ingest holds a *grant*: file bytes counted in
//! `usage.reserved_bytes`, never less than its temp file holds and never more than its file's
//! length. `stored + reserved + partials <= ceiling` holds at every moment, because a grant only
//! grows into room that is there ([`evict::headroom`](crate::evict::headroom)), possibly after
//! evicting. Eviction happens only as bytes arrive and only for the bytes in hand, so an offer
//! that announces a large segment and sends a few bytes (or a truncated file) destroys nothing
//! it would not have needed for those bytes; in a store with that much room to spare, nothing.
//! A resumed partial's bytes move from `partials` into the grant. Once room is granted, the
//! grant takes up to [`RESERVE_STEP_BYTES`] more per growth, so a long ingest does not take the
//! accounting lock for every chunk.
//!
//! Crash analysis. Before the rename, a crash leaves only a temp file: recovery removes it unless
//! a checkpoint recorded it as a partial. Between rename and commit, a crash leaves a file
//! without a row: recovery removes it, and since success was never reported nobody relies on
//! it. After the commit, file and row agree; the file was fsynced before the rename and its
//! directory entry before the commit, so a power loss cannot leave a row without its file.
//! Evictions made while the payload streams commit their own transaction (rows gone, tombstones
//! written) before their files are removed, exactly as evictions at any other time; a crash
//! after them loses only those segments, which the plan allowed to go, and the ingest itself is
//! then a temp file or a partial as above. Grants live in memory only: after a restart usage is
//! recomputed from the files and rows.
//!
//! Failures (ENOSPC, EIO, a failed fsync) abandon the ingest: the temp file is removed, its
//! descriptor is never synced again (after a failed fsync the kernel may have dropped the dirty
//! pages), the grant is released, and the error is returned. A write refused for lack of room
//! (`StoreFull` while growing) writes nothing and does not fail the ingest: dropped, it keeps
//! its checkpointed prefix as a partial, and the sender retries later.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use redb::{ReadableDatabase, WriteTransaction};

use crate::crash;
use crate::error::{IngestError, db};
use crate::fs::FsFile;
use crate::id::SegmentId;
use crate::index;
use crate::inflight::{InFlight, InFlightEnd};
use crate::limits::{RESERVE_STEP_BYTES, STREAM_BUF_BYTES, WRITEBACK_CHUNK_BYTES};
use crate::manifest::{SegmentKind, SignedManifest};
use crate::mutants;
use crate::outboard::{GroupHasher, Outboard};
use crate::segfile::{self, PayloadReader, SegFileError};
use crate::store::{Holding, Store};
use crate::tables::{self, OUTBOARDS, PARTIALS, PartialRow, SEGMENTS, SegmentRow, TOMBSTONES};

/// Longest `source` label accepted (a node id, or `import`).
pub const SOURCE_BYTES_MAX: usize = 64;

/// An outboard given with an import, and whom to tell once the segment is in flight.
type Announced<'a> = (&'a [u8], &'a mut dyn FnMut(SegmentId));

/// Who is handing the segment over, and how to treat an id this store evicted before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOptions {
    /// A peer id, or `import`. Recorded with the segment; the relay skips it when scheduling.
    pub source: String,
    /// Store the segment even if it was evicted here before (an operator's explicit import).
    /// Peers' re-offers of evicted ids are answered "have" instead.
    pub revive_tombstoned: bool,
    /// The whole `.seg` file's length, when the caller knows it before reading it (a file's
    /// metadata, a stream's announced length). [`Store::ingest_reader`] refuses a file whose
    /// header declares another length before anything is reserved or evicted.
    pub expected_file_len: Option<u64>,
}

impl IngestOptions {
    pub fn from_peer(peer: &str) -> Self {
        IngestOptions {
            source: peer.to_owned(),
            revive_tombstoned: false,
            expected_file_len: None,
        }
    }

    pub fn import() -> Self {
        IngestOptions {
            source: "import".to_owned(),
            revive_tombstoned: true,
            expected_file_len: None,
        }
    }

    /// The same options, for a file of `len` bytes (see [`IngestOptions::expected_file_len`]).
    pub fn with_file_len(mut self, len: u64) -> Self {
        self.expected_file_len = Some(len);
        self
    }
}

/// A segment that was stored durably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored<T> {
    pub id: SegmentId,
    pub row: SegmentRow,
    /// What storing it did to other segments (superseded, withdrawn) and to the trust root.
    pub lifecycle: crate::lifecycle::Lifecycle,
    /// What the caller's writes in the ingest transaction returned.
    pub extra: T,
}

/// The result of beginning an ingest.
#[derive(Debug)]
pub enum Begin {
    /// Already stored, or evicted here before: nothing to receive.
    Have(Holding),
    /// Send the payload from [`Ingest::resume_offset`].
    Ingest(Box<Ingest>),
}

/// The result of a whole ingest from a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
// One per ingest, returned and matched at once, never kept in collections: boxing the stored
// variant would cost an allocation per segment for nothing.
#[allow(clippy::large_enum_variant)]
pub enum IngestOutcome<T> {
    Stored(Stored<T>),
    AlreadyHave { id: SegmentId, holding: Holding },
}

/// A segment being received. Dropping it unfinished keeps a checkpointed partial for resume
/// (and removes anything written after the checkpoint at the next resume), or removes the temp
/// file if there was no checkpoint.
#[derive(Debug)]
pub struct Ingest {
    store: Store,
    signed: SignedManifest,
    source: String,
    tmp_path: PathBuf,
    file: Option<Box<dyn FsFile>>,
    /// Hashes the payload group by group; checks each group once the outboard is known.
    groups: GroupHasher,
    /// Set when the outboard was given and the segment is published to forwarders.
    inflight: Option<Arc<InFlight>>,
    /// Bytes of the group being received, held until it verifies (only while published).
    unverified: Vec<u8>,
    header_bytes: u64,
    file_len: u64,
    /// File bytes this ingest holds under the ceiling (in `usage.reserved_bytes`): never less
    /// than what its temp file holds, never more than `file_len` (or the idle partial it took
    /// over). Grows as the payload arrives (INV-06).
    granted: u64,
    /// Time of the last call that gave one: eviction plans made while growing the grant use it.
    now_ms: u64,
    /// Payload bytes written so far.
    written: u64,
    /// Payload bytes fsynced and recorded in `partials-v1`.
    checkpoint: u64,
    /// Payload bytes already handed to the kernel's writeback.
    writeback_from: u64,
    resume_offset: u64,
    /// A partial row exists in the index for this id.
    has_partial_row: bool,
    /// Set by finish (nothing to undo) or by a failure (discard everything).
    state: State,
    /// The payload of a recall or root segment, kept to be parsed at the commit (at most
    /// `LIFECYCLE_PAYLOAD_BYTES_MAX`, bounded by the manifest's validation).
    lifecycle_payload: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Finished,
    Failed,
}

impl Store {
    /// Verifies `signed` and prepares to receive its payload (resuming a checkpointed partial).
    pub fn begin_ingest(
        &self,
        signed: SignedManifest,
        opts: &IngestOptions,
        now_ms: u64,
    ) -> Result<Begin, IngestError> {
        let id = signed.id();
        if opts.source.is_empty() || opts.source.len() > SOURCE_BYTES_MAX {
            return Err(IngestError::Protocol {
                id,
                reason: "source label empty or longer than SOURCE_BYTES_MAX",
            });
        }
        let header_bytes = header_bytes(&signed).len() as u64;
        let file_len = header_bytes + signed.manifest().payload_len;

        let mut acct = self.acct();
        if acct.ingesting.contains(&id) {
            return Err(IngestError::Busy(id));
        }
        let partial = {
            let read = self.database().begin_read().map_err(db)?;
            if read
                .open_table(SEGMENTS)
                .map_err(db)?
                .get(&id.0)
                .map_err(db)?
                .is_some()
            {
                return Ok(Begin::Have(Holding::Stored));
            }
            let tombstoned = read
                .open_table(TOMBSTONES)
                .map_err(db)?
                .get(&id.0)
                .map_err(db)?
                .is_some();
            if tombstoned && !opts.revive_tombstoned {
                return Ok(Begin::Have(Holding::Tombstoned));
            }
            // Verified only now: answering "have" stores nothing, so it needs no verification
            // (and an expired copy this store already holds is still "have", not a rejection).
            let cfg = self.config();
            // Mutation point (INV-01): a segment from a peer is stored unverified, as if the
            // sending node's word were enough.
            if !(mutants::active("skip_peer_signature") && opts.source != "import") {
                signed.verify(&self.trusted(), now_ms, cfg.clock_skew_ms)?;
            }
            // Refused before a payload byte is taken: a rollback, a recalled segment, a root
            // that is not newer. Decided again in the commit's transaction.
            crate::lifecycle::admit(&read, &signed, &self.trusted())?;
            let row = read
                .open_table(PARTIALS)
                .map_err(db)?
                .get(&id.0)
                .map_err(db)?;
            row.map(|v| tables::decode::<PartialRow>("partials-v1", v.value()))
                .transpose()?
        };
        // An idle partial's bytes become part of this ingest's grant.
        let idle = acct.partials.remove(&id).unwrap_or(0);
        acct.usage.partial_bytes -= idle;
        let room = match self.admit_locked(&acct, file_len, now_ms) {
            Ok(room) => room,
            Err(e) => {
                acct.partials.insert(id, idle);
                acct.usage.partial_bytes += idle;
                return Err(e);
            }
        };
        // Only what fits without evicting: segments are evicted for bytes that arrive, never
        // for bytes an offer merely announces.
        let granted = idle.max(room.min(file_len));
        acct.usage.reserved_bytes += granted;
        acct.ingesting.insert(id);
        drop(acct);

        let signed_payload_len = signed.manifest().payload_len;
        let mut ingest = Ingest {
            store: self.clone(),
            tmp_path: self.layout().tmp_file(&id),
            signed,
            source: opts.source.clone(),
            file: None,
            groups: GroupHasher::new(signed_payload_len),
            inflight: None,
            unverified: Vec::new(),
            header_bytes,
            file_len,
            granted,
            now_ms,
            written: 0,
            checkpoint: 0,
            writeback_from: 0,
            resume_offset: 0,
            has_partial_row: partial.is_some(),
            state: State::Open,
            lifecycle_payload: None,
        };
        let lifecycle_kind = ingest.signed.manifest().kind != SegmentKind::Content;
        let resumed = match &partial {
            // A recall's or root's payload is kept in memory to be parsed at the commit: it is
            // small, and received whole each time rather than resumed.
            Some(row)
                if !lifecycle_kind
                    && row.header_bytes == header_bytes
                    && row.payload_len == ingest.payload_len() =>
            {
                ingest.try_resume(row.offset)
            }
            _ => false,
        };
        if !resumed {
            ingest.start_fresh()?;
        }
        Ok(Begin::Ingest(Box::new(ingest)))
    }

    /// Stores a whole `.seg` stream (an import, a file on a USB stick), running `extra` inside
    /// the ingest's transaction. The reader is read once, in bounded chunks.
    pub fn ingest_reader<R, T, F>(
        &self,
        reader: R,
        opts: &IngestOptions,
        now_ms: u64,
        extra: F,
    ) -> Result<IngestOutcome<T>, IngestError>
    where
        R: Read,
        T: Send + 'static,
        F: FnOnce(&WriteTransaction, &Stored<()>) -> Result<T, redb::Error> + Send + 'static,
    {
        self.ingest_stream(reader, opts, now_ms, None, extra)
    }

    /// [`Store::ingest_reader`] of a stream whose payload's `outboard` the caller has (an
    /// import that hashed its file first): the outboard is checked against the signed root
    /// before the payload is read, each group as it arrives, and once the segment is in flight
    /// (see [`Store::in_flight`]) `in_flight` is called with its id, so that forwarders can be
    /// started while the rest is read.
    pub fn ingest_reader_forwarding<R, T, F>(
        &self,
        reader: R,
        opts: &IngestOptions,
        now_ms: u64,
        outboard: &[u8],
        in_flight: &mut dyn FnMut(SegmentId),
        extra: F,
    ) -> Result<IngestOutcome<T>, IngestError>
    where
        R: Read,
        T: Send + 'static,
        F: FnOnce(&WriteTransaction, &Stored<()>) -> Result<T, redb::Error> + Send + 'static,
    {
        self.ingest_stream(reader, opts, now_ms, Some((outboard, in_flight)), extra)
    }

    fn ingest_stream<R, T, F>(
        &self,
        mut reader: R,
        opts: &IngestOptions,
        now_ms: u64,
        outboard: Option<Announced<'_>>,
        extra: F,
    ) -> Result<IngestOutcome<T>, IngestError>
    where
        R: Read,
        T: Send + 'static,
        F: FnOnce(&WriteTransaction, &Stored<()>) -> Result<T, redb::Error> + Send + 'static,
    {
        let signed = segfile::read_header(&mut reader)?;
        let id = signed.id();
        let declared = segfile::file_len_of(&signed);
        if let Some(actual) = opts.expected_file_len.filter(|&len| len != declared) {
            // Refused before anything is reserved: a truncated or padded copy never costs a
            // stored segment its place.
            let e = SegFileError::FileLengthMismatch { declared, actual };
            if self.holding(&id)? == Holding::Stored {
                return Err(IngestError::CorruptCopy {
                    id,
                    reason: e.to_string(),
                });
            }
            return Err(e.into());
        }
        let mut ingest = match self.begin_ingest(signed.clone(), opts, now_ms)? {
            Begin::Have(Holding::Stored) => {
                // Already stored, but this copy is still read through: a stick holding a
                // corrupt copy must be told so, not "already present".
                self.check_copy(&signed, reader)?;
                return Ok(IngestOutcome::AlreadyHave {
                    id,
                    holding: Holding::Stored,
                });
            }
            Begin::Have(holding) => return Ok(IngestOutcome::AlreadyHave { id, holding }),
            Begin::Ingest(ingest) => ingest,
        };
        // The reader is at payload offset 0: a partial left by an interrupted peer transfer is
        // replaced by the file's own bytes, not resumed (that would append the payload's start
        // at the checkpoint and fail as too long).
        if ingest.resume_offset() > 0 {
            ingest.start_fresh()?;
        }
        if let Some((outboard, in_flight)) = outboard {
            if let Err(e) = ingest.set_outboard(outboard, true) {
                ingest.discard();
                return Err(e);
            }
            if ingest.is_in_flight() {
                in_flight(id);
            }
        }
        let result = ingest.fill_from(&mut reader);
        if let Err(e) = result {
            // A file is not resumable: never keep a partial of it.
            ingest.discard();
            return Err(e);
        }
        ingest.finish(now_ms, extra).map(IngestOutcome::Stored)
    }

    /// Verifies the rest of a copy of a segment this store already holds (`reader` is at its
    /// payload): signature, trust, exact length, hash, nothing trailing. A copy that fails is
    /// [`IngestError::CorruptCopy`]; the stored one is not touched.
    fn check_copy<R: Read>(&self, signed: &SignedManifest, reader: R) -> Result<(), IngestError> {
        let id = signed.id();
        let corrupt = |reason: String| IngestError::CorruptCopy { id, reason };
        match signed.verify_signature(&self.trusted()) {
            Ok(()) => {}
            // Not the copy's fault: the publisher is not trusted (any more).
            Err(e) if e.is_trust() => return Err(e.into()),
            Err(e) => return Err(corrupt(e.to_string())),
        }
        match PayloadReader::for_manifest(reader, signed).finish() {
            Ok(_) => Ok(()),
            Err(SegFileError::Io(e)) => Err(SegFileError::Io(e).into()),
            Err(e) => Err(corrupt(e.to_string())),
        }
    }
}

impl Ingest {
    pub fn id(&self) -> SegmentId {
        self.signed.id()
    }

    pub fn manifest(&self) -> &SignedManifest {
        &self.signed
    }

    /// Payload offset the sender must start from (> 0 when a checkpointed partial resumed).
    pub fn resume_offset(&self) -> u64 {
        self.resume_offset
    }

    /// Payload bytes received so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn payload_len(&self) -> u64 {
        self.signed.manifest().payload_len
    }

    fn io_err(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> IngestError + '_ {
        move |source| IngestError::Io {
            op,
            path: self.tmp_path.clone(),
            source,
        }
    }

    /// Reopens the checkpointed partial, re-hashing its prefix. False (and nothing kept) if the
    /// file does not match what the record says.
    fn try_resume(&mut self, offset: u64) -> bool {
        let fs = self.store.inner.fs.clone();
        let expected_header = header_bytes(&self.signed);
        let payload_len = self.payload_len();
        let attempt = || -> std::io::Result<Option<(Box<dyn FsFile>, GroupHasher)>> {
            let mut file = fs.open_rw(&self.tmp_path)?;
            let mut header = vec![0u8; expected_header.len()];
            file.read_exact(&mut header)?;
            if header != expected_header {
                return Ok(None);
            }
            // The prefix is hashed again; its groups are checked once the outboard arrives.
            let mut groups = GroupHasher::new(payload_len);
            let mut buf = vec![0u8; STREAM_BUF_BYTES];
            let mut prefix = (&mut file).take(offset);
            loop {
                let n = match prefix.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if groups.update(&buf[..n]).is_err() {
                    return Ok(None);
                }
            }
            if groups.pos() != offset {
                return Ok(None);
            }
            file.set_len(self.header_bytes + offset)?;
            file.seek(SeekFrom::End(0))?;
            Ok(Some((file, groups)))
        };
        match attempt() {
            Ok(Some((file, groups))) => {
                self.file = Some(file);
                self.groups = groups;
                self.written = offset;
                self.checkpoint = offset;
                self.writeback_from = offset;
                self.resume_offset = offset;
                tracing::info!(seg_id = %self.id(), offset, "resuming partial ingest");
                true
            }
            Ok(None) | Err(_) => {
                tracing::warn!(seg_id = %self.id(), "partial does not match its record; starting over");
                false
            }
        }
    }

    fn start_fresh(&mut self) -> Result<(), IngestError> {
        let fs = self.store.inner.fs.clone();
        // Looked up first: an unlink of a name that is not there still takes the directory's
        // lock exclusively, and concurrent small ingests queued on it.
        let stale = match fs.file_len(&self.tmp_path) {
            Ok(len) => len.is_some(),
            Err(e) => return Err(self.fail(self.io_err("look up stale temp file")(e))),
        };
        if stale {
            match fs.remove_file(&self.tmp_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.fail(self.io_err("remove stale temp file")(e))),
            }
        }
        if self.signed.manifest().kind != SegmentKind::Content {
            // Bounded: a recall's or root's declared length is at most LIFECYCLE_PAYLOAD_BYTES_MAX.
            self.lifecycle_payload = Some(Vec::with_capacity(self.payload_len() as usize));
        }
        // The header is written now: it needs room (the only bytes an ingest holds before its
        // payload arrives).
        if let Err(e) = self.ensure_grant(self.header_bytes) {
            return Err(self.fail(e));
        }
        let created = fs.create_new(&self.tmp_path);
        let mut file = match created {
            Ok(file) => file,
            Err(e) => return Err(self.fail(self.io_err("create temp file")(e))),
        };
        if self.source == "import" {
            // An import reads, hashes and writes on one thread: a direct write that waits for
            // the device stalls the reading (1 GiB took 1.6–1.8 s instead of 1.0), while a
            // peer's transfer writes from a disk thread of its own and gains from it.
            file.prefer_cache();
        }
        if let Err(e) = file.write_all(&header_bytes(&self.signed)) {
            self.file = Some(file);
            return Err(self.fail(self.io_err("write header")(e)));
        }
        self.file = Some(file);
        self.groups = GroupHasher::new(self.payload_len());
        self.written = 0;
        self.checkpoint = 0;
        self.writeback_from = 0;
        self.resume_offset = 0;
        Ok(())
    }

    /// Marks the ingest failed: on drop the temp file and any partial record go.
    fn fail(&mut self, e: IngestError) -> IngestError {
        self.state = State::Failed;
        e
    }

    fn ensure_open(&self) -> Result<(), IngestError> {
        match self.state {
            State::Open => Ok(()),
            _ => Err(IngestError::Protocol {
                id: self.id(),
                reason: "ingest used after it failed",
            }),
        }
    }

    /// Grows the grant to cover `need_bytes` of the file (see [`Store::grow_grant`]), taking up
    /// to [`RESERVE_STEP_BYTES`] more while there is room for it.
    fn ensure_grant(&mut self, need_bytes: u64) -> Result<(), IngestError> {
        if need_bytes <= self.granted {
            return Ok(());
        }
        let target = self
            .file_len
            .min(need_bytes.max(self.granted.saturating_add(RESERVE_STEP_BYTES)));
        self.granted =
            self.store
                .grow_grant(self.file_len, self.granted, need_bytes, target, self.now_ms)?;
        Ok(())
    }

    /// File bytes this ingest holds under the ceiling right now.
    pub fn granted(&self) -> u64 {
        self.granted
    }

    /// Appends payload bytes. More bytes than the manifest declares fail the ingest.
    ///
    /// Bytes beyond the grant grow it first, evicting (by the plan's rules) only what these
    /// bytes need. If that cannot be done the write returns `StoreFull` having written nothing;
    /// the ingest is not failed, so dropping it keeps its checkpointed prefix for a resume.
    pub fn write(&mut self, buf: &[u8]) -> Result<(), IngestError> {
        self.ensure_open()?;
        if self.written + buf.len() as u64 > self.payload_len() {
            let e = SegFileError::PayloadTooLong;
            return Err(self.fail(e.into()));
        }
        self.ensure_grant(self.header_bytes + self.written + buf.len() as u64)?;
        crash::point(crash::INGEST_STREAM);
        let Some(file) = self.file.as_mut() else {
            return Err(self.fail(IngestError::Protocol {
                id: self.signed.id(),
                reason: "no temp file",
            }));
        };
        if let Err(e) = file.write_all(buf) {
            return Err(self.fail(self.io_err("write")(e)));
        }
        self.written += buf.len() as u64;
        if let Some(payload) = self.lifecycle_payload.as_mut() {
            payload.extend_from_slice(buf);
        }
        if self.written - self.writeback_from >= WRITEBACK_CHUNK_BYTES {
            let len = self.written - self.writeback_from;
            file.start_writeback(self.header_bytes + self.writeback_from, len);
            self.writeback_from = self.written;
        }
        self.hash(buf)
    }

    /// Copies the rest of the payload from `reader`, failing if it ends early or goes on past
    /// the declared length.
    fn fill_from<R: Read>(&mut self, reader: &mut R) -> Result<(), IngestError> {
        let mut buf = vec![0u8; STREAM_BUF_BYTES];
        let remaining = self.payload_len() - self.written;
        let mut limited = reader.by_ref().take(remaining);
        loop {
            // Each read ends at the next STREAM_BUF_BYTES boundary of the temp file (the header
            // puts the payload off alignment): writes then cover whole pages and folios instead
            // of straddling them.
            let file_pos = self.header_bytes + self.written;
            let to_boundary = STREAM_BUF_BYTES - (file_pos % STREAM_BUF_BYTES as u64) as usize;
            let n = match limited.read(&mut buf[..to_boundary]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SegFileError::Io(e).into()),
            };
            self.write(&buf[..n])?;
        }
        if self.written < self.payload_len() {
            return Err(SegFileError::TruncatedPayload {
                expected: self.payload_len(),
                got: self.written,
            }
            .into());
        }
        let mut one = [0u8; 1];
        loop {
            match reader.read(&mut one) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(SegFileError::PayloadTooLong.into()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SegFileError::Io(e).into()),
            }
        }
    }

    /// Hashes bytes just written; while published, hands each group that verified to the
    /// forwarders.
    fn hash(&mut self, buf: &[u8]) -> Result<(), IngestError> {
        // Mutation point (INV-02): bytes go to the forwarders as they arrive, before their
        // group verified.
        if let Some(inflight) = &self.inflight
            && mutants::active("forward_unverified")
        {
            inflight.publish(buf.to_vec());
            return self
                .groups
                .update(buf)
                .map_err(|e| self.fail(SegFileError::from(e).into()));
        }
        let before = self.groups.verified();
        if let Err(e) = self.groups.update(buf) {
            return Err(self.fail(SegFileError::from(e).into()));
        }
        let Some(inflight) = &self.inflight else {
            return Ok(());
        };
        self.unverified.extend_from_slice(buf);
        let newly = (self.groups.verified() - before) as usize;
        if newly > 0 {
            let rest = self.unverified.split_off(newly);
            inflight.publish(std::mem::replace(&mut self.unverified, rest));
        }
        Ok(())
    }

    /// Takes the payload's outboard (its group CVs, as the sender or the importer sent it),
    /// refusing one that does not hash to the manifest's root; from now on every group is
    /// checked as it completes, and the groups already written are checked at once.
    ///
    /// With `publish`, if the payload has more than one group and the bytes so far end on a
    /// group boundary, the segment is published in flight ([`crate::Store::in_flight`]):
    /// forwarders may read each group once it verified. (Without, nothing is kept in memory
    /// for forwarders: a node with nobody to forward to pays for no copy.)
    pub fn set_outboard(&mut self, bytes: &[u8], publish: bool) -> Result<(), IngestError> {
        self.ensure_open()?;
        let m = self.signed.manifest();
        let outboard = match Outboard::parse(bytes, m.payload_len, &m.payload_hash) {
            Ok(o) => o,
            Err(e) => return Err(self.fail(SegFileError::from(e).into())),
        };
        if let Err(e) = self.groups.expect(outboard.clone()) {
            return Err(self.fail(SegFileError::from(e).into()));
        }
        let verified = self.groups.verified();
        if publish
            && !outboard.is_empty()
            && self.groups.pos() == verified
            && self.inflight.is_none()
        {
            let files = crate::inflight::Files {
                fs: self.store.inner.fs.clone(),
                tmp: self.tmp_path.clone(),
                stored: self.store.layout().segment_file(&self.id()),
                header_bytes: self.header_bytes,
            };
            let registry = &self.store.inner.inflight;
            self.inflight = Some(registry.open(self.signed.clone(), outboard, files, verified));
        }
        Ok(())
    }

    /// Whether this ingest publishes its verified groups to forwarders.
    pub fn is_in_flight(&self) -> bool {
        self.inflight.is_some()
    }

    fn close_in_flight(&mut self, end: InFlightEnd) {
        if let Some(inflight) = self.inflight.take() {
            self.store.inner.inflight.close(&inflight, end);
        }
    }

    /// Fsyncs what was received and records it as a partial, so a later attempt resumes here.
    pub fn checkpoint(&mut self, now_ms: u64) -> Result<(), IngestError> {
        self.ensure_open()?;
        self.now_ms = self.now_ms.max(now_ms);
        if self.written == self.checkpoint {
            return Ok(());
        }
        let synced = match self.file.as_mut() {
            Some(file) => file.sync(),
            None => Ok(()),
        };
        if let Err(e) = synced {
            return Err(self.fail(self.io_err("fsync")(e)));
        }
        crash::point(crash::CHECKPOINT_AFTER_SYNC);
        if !self.has_partial_row {
            // The temp file's directory entry must be durable before a record points at it.
            let tmp = self.store.layout().tmp();
            if let Err(e) = self.store.inner.fs.sync_dir(&tmp) {
                return Err(self.fail(self.io_err("fsync tmp directory")(e)));
            }
        }
        let id = self.id();
        let row = PartialRow {
            offset: self.written,
            header_bytes: self.header_bytes,
            payload_len: self.payload_len(),
            updated_at_ms: now_ms,
        };
        let written = self.store.writer().write(move |txn| {
            txn.open_table(PARTIALS)?
                .insert(&id.0, tables::encode(&row).as_slice())?;
            Ok(())
        });
        if let Err(e) = written {
            return Err(self.fail(e.into()));
        }
        crash::point(crash::CHECKPOINT_AFTER_COMMIT);
        self.has_partial_row = true;
        self.checkpoint = self.written;
        Ok(())
    }

    /// Verifies, makes durable and commits the segment, running `extra` inside the same
    /// transaction. Returns only after the commit.
    pub fn finish<T, F>(mut self, now_ms: u64, extra: F) -> Result<Stored<T>, IngestError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction, &Stored<()>) -> Result<T, redb::Error> + Send + 'static,
    {
        self.ensure_open()?;
        let id = self.id();
        let expected = self.payload_len();
        if self.written != expected {
            // Not failed: a checkpointed prefix stays for resume.
            return Err(SegFileError::TruncatedPayload {
                expected,
                got: self.written,
            }
            .into());
        }
        let Some((actual, outboard)) = self.groups.finish() else {
            return Err(self.fail(IngestError::Protocol {
                id,
                reason: "payload length reached but not all of it hashed",
            }));
        };
        let wanted = self.signed.manifest().payload_hash;
        // Mutation point (INV-02): any payload of the declared length is taken as the segment.
        if actual != wanted && !mutants::active("skip_hash_check") {
            let e = SegFileError::HashMismatch {
                expected: wanted,
                actual,
            };
            return Err(self.fail(e.into()));
        }
        debug_assert!(
            self.granted >= self.file_len,
            "a complete file lies within its grant"
        );
        crash::point(crash::INGEST_AFTER_WRITE);
        let mut synced = match self.file.as_mut() {
            Some(file) => file.sync(),
            None => Ok(()),
        };
        if let (Err(_), Some(file)) = (&synced, self.file.as_mut()) {
            // Mutation point (INV-23): the failed fsync is tried again on the same descriptor,
            // whose dirty pages the kernel may already have dropped, and a success believed.
            if mutants::active("retry_failed_fsync") {
                synced = file.sync();
            }
        }
        if let Err(e) = synced {
            return Err(self.fail(self.io_err("fsync")(e)));
        }
        // The descriptor is done with: reads of the stored file go through a new one.
        self.file = None;
        crash::point(crash::INGEST_AFTER_FSYNC);

        let fs = self.store.inner.fs.clone();
        let layout = self.store.layout().clone();
        let final_path = layout.segment_file(&id);
        let fanout = layout.fanout(&id);
        if let Err(e) = fs.rename(&self.tmp_path, &final_path) {
            return Err(self.fail(self.io_err("rename into segments")(e)));
        }
        crash::point(crash::INGEST_AFTER_RENAME);
        let undo_rename = |ingest: &mut Ingest, e: IngestError| {
            // Not acknowledged: the stored file must not outlive the failure.
            if let Err(rm) = fs.remove_file(&final_path) {
                tracing::warn!(seg_id = %id, error = %rm, "cannot remove file of failed ingest; recovery will");
            }
            let _ = fs.sync_dir(&fanout);
            ingest.fail(e)
        };
        // Mutation point (INV-03, INV-05): the rename is not made durable before the commit, so
        // a power loss can leave an acknowledged row without its file.
        let dir_synced = if mutants::active("skip_dir_fsync") {
            Ok(())
        } else {
            fs.sync_dir(&fanout)
        };
        if let Err(e) = dir_synced {
            let e = IngestError::Io {
                op: "fsync",
                path: fanout.clone(),
                source: e,
            };
            return Err(undo_rename(&mut self, e));
        }
        crash::point(crash::INGEST_AFTER_DIR_FSYNC);

        let m = self.signed.manifest();
        let row = SegmentRow {
            name: m.name.clone(),
            channel: m.channel.clone(),
            sequence: m.sequence,
            publisher: m.publisher,
            created_at_ms: m.created_at_ms,
            expires_at_ms: m.expires_at_ms,
            condition: m.condition,
            priority: m.priority,
            payload_len: m.payload_len,
            file_len: self.file_len,
            source: self.source.clone(),
            stored_at_ms: now_ms,
            last_used_ms: now_ms,
            propagated_at_ms: None,
        };
        let signed = self.signed.clone();
        let payload = self.lifecycle_payload.take().unwrap_or_default();
        let trusted = self.store.trusted();
        let outboard = outboard.to_bytes();
        let committed = self.store.writer().write(move |txn| {
            // Decided first, in this transaction: a refusal writes nothing.
            let applied = match crate::lifecycle::apply(txn, &signed, &payload, &trusted, now_ms)? {
                Ok(applied) => applied,
                Err(refused) => return Ok(Err(refused)),
            };
            let stored = Stored {
                id,
                row,
                lifecycle: applied.lifecycle.clone(),
                extra: (),
            };
            txn.open_table(SEGMENTS)?
                .insert(&id.0, tables::encode(&stored.row).as_slice())?;
            if !outboard.is_empty() {
                txn.open_table(OUTBOARDS)?
                    .insert(&id.0, outboard.as_slice())?;
            }
            txn.open_table(PARTIALS)?.remove(&id.0)?;
            index::remove_tombstone(txn, &id)?;
            crash::point(crash::INGEST_IN_COMMIT);
            let extra = extra(txn, &stored)?;
            Ok(Ok((stored, applied, extra)))
        });
        let (stored, applied, extra) = match committed {
            Ok(Ok(done)) => done,
            Ok(Err(refused)) => return Err(undo_rename(&mut self, refused)),
            Err(e) => return Err(undo_rename(&mut self, e.into())),
        };
        crash::point(crash::INGEST_AFTER_COMMIT);
        self.state = State::Finished;
        self.close_in_flight(InFlightEnd::Stored);
        {
            let mut acct = self.store.acct();
            acct.usage.reserved_bytes -= self.granted;
            acct.usage.stored_bytes += self.file_len;
            acct.ingesting.remove(&id);
        }
        self.store.after_lifecycle(applied);
        tracing::debug!(seg_id = %id, bytes = self.file_len, source = %self.source, "segment stored");
        Ok(Stored {
            id,
            row: stored.row,
            lifecycle: stored.lifecycle,
            extra,
        })
    }

    /// Abandons the ingest and everything received, including a checkpointed partial (a
    /// payload that failed verification must not be resumed).
    pub fn discard(mut self) {
        self.state = State::Failed;
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if self.state == State::Finished {
            return;
        }
        self.close_in_flight(InFlightEnd::Abandoned);
        let id = self.id();
        let keep = self.state == State::Open && self.checkpoint > 0;
        self.file = None;
        if !keep {
            match self.store.inner.fs.remove_file(&self.tmp_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(seg_id = %id, error = %e, "temp file not removed; recovery will")
                }
            }
            if self.has_partial_row {
                let removed = self.store.writer().write(move |txn| {
                    txn.open_table(PARTIALS)?.remove(&id.0)?;
                    Ok(())
                });
                if let Err(e) = removed {
                    tracing::warn!(seg_id = %id, error = %e, "partial record not removed; recovery will");
                }
            }
        }
        let mut acct = self.store.acct();
        acct.usage.reserved_bytes -= self.granted;
        acct.ingesting.remove(&id);
        if keep {
            let kept = self.header_bytes + self.checkpoint;
            acct.partials.insert(id, kept);
            acct.usage.partial_bytes += kept;
        }
    }
}

/// The bytes of a `.seg` file before its payload.
pub(crate) fn header_bytes(signed: &SignedManifest) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    segfile::write_header(&mut out, signed).expect("writing a header into a Vec is infallible");
    out
}
