//! The disk side of the network layer, as discrete steps, and the one seam that decides where
//! they run.
//!
//! A sender reads and hashes its stored copy one chunk per `PayloadReader::step`; a receiver
//! writes, hashes and checkpoints one chunk per `PayloadWriter::step` and finishes with the
//! last. Neither knows about threads: `PayloadSource` and `PayloadSink` run them, and every
//! other store call of the network layer goes through `blocking`. All three follow
//! [`DiskMode`]:
//!
//! - [`DiskMode::Threads`] (production): the disk and the hashing stay off the async worker
//!   threads (MEASUREMENTS.md: inline hashing and writing halves throughput). A transfer's
//!   steps loop on one blocking thread, fed through a channel `PAYLOAD_QUEUE_CHUNKS` deep, so
//!   memory per transfer is bounded whatever the segment size (INV-20).
//! - [`DiskMode::Inline`]: every step runs on the calling async task, in order, with no thread
//!   and no channel — what a deterministic simulation of a fleet needs. The same code ships; the
//!   mode is a runtime value of [`crate::NetConfig::disk_mode`].

use std::sync::Arc;

use store::inflight::{GroupError, InFlight, InFlightEnd, Slice};
use store::{Ingest, IngestError, SegmentReader, Stored};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::limits::{PAYLOAD_CHUNK_BYTES, PAYLOAD_QUEUE_CHUNKS};
use crate::pki::NodeId;
use crate::transfer::NetHooks;

/// Where the network layer runs its store calls and disk steps (the seam is `base`'s, shared
/// with the relay's ledger).
pub use base::DiskMode;

/// A store call run on a blocking thread that panicked or was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DiskTaskFailed(String);

/// Runs one blocking store call as `mode` says.
pub(crate) async fn blocking<T, F>(mode: DiskMode, f: F) -> Result<T, DiskTaskFailed>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match mode {
        DiskMode::Threads => tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| DiskTaskFailed(e.to_string())),
        DiskMode::Inline => Ok(f()),
    }
}

// ---------------------------------------------------------------------------------------------
// Sender: read and verify.

/// What the disk side of a send hands the network side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FromDisk {
    /// Payload bytes to send, at most [`PAYLOAD_CHUNK_BYTES`].
    Data(Vec<u8>),
    /// The whole payload was read and hashes to its manifest: the send may be finished.
    Verified,
    /// The stored copy is corrupt (short, or its hash differs): the send must be aborted.
    Corrupt(String),
    /// A local read error.
    Io(String),
}

impl FromDisk {
    fn is_end(&self) -> bool {
        !matches!(self, FromDisk::Data(_))
    }
}

/// One step of a [`PayloadReader`].
#[derive(Debug)]
pub(crate) enum ReadStep {
    /// A chunk before the resume offset was read and hashed; nothing to send.
    Skipped,
    /// Something for the network side (the last step gives an end: `Verified`, `Corrupt`,
    /// `Io`).
    Out(FromDisk),
}

/// Reads the payload of a stored segment one chunk per step, hashing all of it (the prefix
/// before `offset` too) and handing over `[offset, len)`.
pub(crate) struct PayloadReader {
    reader: SegmentReader,
    offset: u64,
    len: u64,
    expected: [u8; 32],
    hasher: blake3::Hasher,
    pos: u64,
    /// The prefix is hashed through one reused buffer.
    prefix_buf: Vec<u8>,
    /// The outboard is sent before the payload: pending until the first step.
    outboard: Outboard,
}

/// Where the outboard of a send stands.
enum Outboard {
    /// Not read yet.
    Unread,
    /// Read; these bytes are still to be handed over, at most a chunk at a time.
    Sending(Vec<u8>, usize),
    Sent,
}

impl PayloadReader {
    pub fn new(reader: SegmentReader, offset: u64) -> Self {
        let m = reader.manifest().manifest();
        let (len, expected) = (m.payload_len, m.payload_hash);
        PayloadReader {
            reader,
            offset,
            len,
            expected,
            hasher: blake3::Hasher::new(),
            pos: 0,
            prefix_buf: Vec::new(),
            outboard: Outboard::Unread,
        }
    }

    /// The next piece of the outboard, if any is left to send.
    fn outboard_step(&mut self) -> Option<ReadStep> {
        if matches!(self.outboard, Outboard::Unread) {
            self.outboard = match self.reader.outboard() {
                Ok(bytes) if bytes.is_empty() && store::outboard::outboard_len(self.len) > 0 => {
                    let why = "stored payload does not hash to its manifest (outboard)";
                    return Some(ReadStep::Out(FromDisk::Corrupt(why.into())));
                }
                Ok(bytes) if bytes.is_empty() => Outboard::Sent,
                Ok(bytes) => Outboard::Sending(bytes, 0),
                Err(e) => return Some(ReadStep::Out(FromDisk::Io(e.to_string()))),
            };
        }
        let Outboard::Sending(bytes, at) = &mut self.outboard else {
            return None;
        };
        let n = (bytes.len() - *at).min(PAYLOAD_CHUNK_BYTES);
        let piece = bytes[*at..*at + n].to_vec();
        *at += n;
        if *at == bytes.len() {
            self.outboard = Outboard::Sent;
        }
        Some(ReadStep::Out(FromDisk::Data(piece)))
    }

    /// Reads and hashes the next chunk; after the last one, judges the hash.
    pub fn step(&mut self) -> ReadStep {
        if let Some(step) = self.outboard_step() {
            return step;
        }
        let len = self.len;
        if self.pos >= len {
            let actual = *self.hasher.finalize().as_bytes();
            return ReadStep::Out(if actual == self.expected {
                FromDisk::Verified
            } else {
                FromDisk::Corrupt(format!(
                    "payload hash mismatch: expected {}, got {}",
                    hex(&self.expected),
                    hex(&actual)
                ))
            });
        }
        let sending = self.pos >= self.offset;
        let limit = if sending {
            len - self.pos
        } else {
            self.offset - self.pos
        };
        // Cannot truncate: at most PAYLOAD_CHUNK_BYTES.
        let want = limit.min(PAYLOAD_CHUNK_BYTES as u64) as usize;
        let mut chunk = if sending {
            vec![0u8; want]
        } else {
            self.prefix_buf.resize(want, 0);
            std::mem::take(&mut self.prefix_buf)
        };
        match read_full(self.reader.payload(), &mut chunk) {
            Ok(n) if n == want => {}
            Ok(n) => {
                return ReadStep::Out(FromDisk::Corrupt(format!(
                    "file ends at payload byte {} of {len}",
                    self.pos + n as u64
                )));
            }
            Err(e) => return ReadStep::Out(FromDisk::Io(e.to_string())),
        }
        self.hasher.update(&chunk);
        self.pos += want as u64;
        if sending {
            ReadStep::Out(FromDisk::Data(chunk))
        } else {
            self.prefix_buf = chunk;
            ReadStep::Skipped
        }
    }

    /// The next step with something for the network side.
    fn next_out(&mut self) -> FromDisk {
        // Bounded: every skipped step advances `pos` by a chunk towards `offset`.
        loop {
            if let ReadStep::Out(out) = self.step() {
                return out;
            }
        }
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_full(r: &mut dyn store::fs::FsRead, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A [`PayloadReader`] run as the [`DiskMode`] says.
pub(crate) enum PayloadSource {
    Thread {
        rx: mpsc::Receiver<FromDisk>,
        task: JoinHandle<()>,
    },
    /// `None` once the reader gave its end (its lease is released then).
    Inline(Option<Box<PayloadReader>>),
    /// A segment still being received here: its verified groups, from memory.
    InFlight(Box<InFlightFeed>),
}

/// Feeds a send from a ring of verified groups ([`store::inflight`]): the outboard, then each
/// verified group as it is published, from memory. A forward that falls behind the ring (a
/// slower peer) or outlives the receipt (the segment got stored) reads whole groups from the
/// file instead, each checked against the outboard: it slows nobody else and still sends only
/// verified bytes. On a shared read of a stored segment the send that needs the next group
/// first reads it for all, and reads the one after it in the background while it sends.
pub(crate) struct InFlightFeed {
    inflight: Arc<InFlight>,
    mode: DiskMode,
    pos: u64,
    len: u64,
    outboard: Option<Vec<u8>>,
    /// The group last read from the file: (its first payload offset, its bytes).
    from_file: Option<(u64, Vec<u8>)>,
}

impl InFlightFeed {
    pub fn new(inflight: Arc<InFlight>, mode: DiskMode, offset: u64) -> Self {
        let len = inflight.manifest().manifest().payload_len;
        let outboard = Some(inflight.outboard().to_bytes());
        InFlightFeed {
            inflight,
            mode,
            pos: offset,
            len,
            outboard,
            from_file: None,
        }
    }

    async fn next(&mut self) -> FromDisk {
        if let Some(outboard) = self.outboard.take()
            && !outboard.is_empty()
        {
            return FromDisk::Data(outboard);
        }
        // Bounded: each turn returns, waits for the ring to change (and the ring ends), or
        // reads a group that covers `pos`.
        loop {
            if self.pos >= self.len {
                // Every byte sent was a verified group of this payload.
                return FromDisk::Verified;
            }
            if let Some((start, bytes)) = &self.from_file
                && self.pos >= *start
                && self.pos < start + bytes.len() as u64
            {
                // Cannot truncate: within one group.
                let from = (self.pos - start) as usize;
                let n = (bytes.len() - from).min(PAYLOAD_CHUNK_BYTES);
                self.pos += n as u64;
                return FromDisk::Data(bytes[from..from + n].to_vec());
            }
            let seen = self.inflight.version();
            match self.inflight.read(self.pos, PAYLOAD_CHUNK_BYTES) {
                Slice::Data(bytes) => {
                    self.pos += bytes.len() as u64;
                    self.read_ahead();
                    return FromDisk::Data(bytes);
                }
                Slice::Pending if self.inflight.fills_on_demand() => {
                    let inflight = self.inflight.clone();
                    match blocking(self.mode, move || inflight.fill_next()).await {
                        Ok(Ok(true)) => {}
                        // Another send is reading it: wait for it.
                        Ok(Ok(false)) => {
                            let inflight = self.inflight.clone();
                            std::future::poll_fn(|cx| inflight.poll_changed(cx, seen)).await;
                        }
                        Ok(Err(e)) => return self.group_failed(e),
                        Err(e) => return FromDisk::Io(e.to_string()),
                    }
                }
                Slice::Pending => {
                    let inflight = self.inflight.clone();
                    std::future::poll_fn(|cx| inflight.poll_changed(cx, seen)).await;
                }
                Slice::Behind | Slice::Ended(InFlightEnd::Stored) => {
                    let index = self.pos / store::outboard::GROUP_BYTES;
                    let inflight = self.inflight.clone();
                    match blocking(self.mode, move || inflight.read_group(index)).await {
                        Ok(Ok(bytes)) => {
                            let start = index * store::outboard::GROUP_BYTES;
                            self.from_file = Some((start, bytes));
                        }
                        Ok(Err(e)) => return self.group_failed(e),
                        Err(e) => return FromDisk::Io(e.to_string()),
                    }
                }
                Slice::Corrupt(reason) => return FromDisk::Corrupt(reason),
                Slice::Ended(InFlightEnd::Abandoned) => {
                    return FromDisk::Io("the upstream transfer it forwards was abandoned".into());
                }
            }
        }
    }
}

impl InFlightFeed {
    /// A group that did not match its CV is a corrupt stored copy when this is a shared read of
    /// it (the send is aborted and the segment quarantined); for a receipt it is an error of
    /// this forward only.
    fn group_failed(&self, e: GroupError) -> FromDisk {
        match e {
            GroupError::Mismatch(reason) if self.inflight.fills_on_demand() => {
                FromDisk::Corrupt(reason)
            }
            e => FromDisk::Io(e.to_string()),
        }
    }

    /// On a shared read, the send at the front reads the next group on a blocking thread
    /// while it sends this one, so the network never waits for the disk between groups.
    /// (Inline mode reads it when it is needed instead: nothing runs in the background there.)
    fn read_ahead(&self) {
        if self.mode == DiskMode::Threads && self.inflight.wants_fill(self.pos) {
            let inflight = self.inflight.clone();
            // A failure shows to whoever reads next: a corrupt group marks the ring, and an
            // I/O error is met again by the send that needs the group.
            drop(tokio::task::spawn_blocking(move || inflight.fill_next()));
        }
    }
}

impl PayloadSource {
    pub fn start(mode: DiskMode, mut reader: PayloadReader) -> Self {
        match mode {
            DiskMode::Inline => PayloadSource::Inline(Some(Box::new(reader))),
            DiskMode::Threads => {
                let (tx, rx) = mpsc::channel::<FromDisk>(PAYLOAD_QUEUE_CHUNKS);
                let task = tokio::task::spawn_blocking(move || {
                    loop {
                        let out = reader.next_out();
                        let end = out.is_end();
                        // The network side hung up: stop quietly.
                        if tx.blocking_send(out).is_err() || end {
                            return;
                        }
                    }
                });
                PayloadSource::Thread { rx, task }
            }
        }
    }

    /// The next chunk or the end; `None` when the disk side stopped without one.
    pub async fn next(&mut self) -> Option<FromDisk> {
        match self {
            PayloadSource::InFlight(feed) => Some(feed.next().await),
            PayloadSource::Thread { rx, .. } => rx.recv().await,
            PayloadSource::Inline(slot) => {
                let out = slot.as_mut()?.next_out();
                if out.is_end() {
                    *slot = None;
                }
                Some(out)
            }
        }
    }

    /// Stops the disk side and waits until the reader (and the eviction lease it holds) is gone.
    pub async fn close(self) {
        match self {
            PayloadSource::Thread { rx, task } => {
                drop(rx);
                let _ = task.await;
            }
            PayloadSource::Inline(reader) => drop(reader),
            PayloadSource::InFlight(feed) => drop(feed),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Receiver: write, checkpoint, finish.

/// What the network side of a receive hands the disk side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToDisk {
    Data(Vec<u8>),
    /// Every byte arrived and the stream ended: verify, sync, commit.
    End,
    /// Cut short: keep what arrived for a resume.
    Abort,
    /// Cut short by a sender whose stored copy proved corrupt: what arrived may hold its bad
    /// bytes, so nothing of it is kept for a resume.
    Discard,
}

/// How the disk side of a receive ended.
#[derive(Debug)]
pub(crate) enum WriterEnd {
    Stored(Box<Stored<()>>),
    Failed(IngestError),
    Aborted,
}

/// Writes (and hashes) a received payload one chunk per step, checkpoints every
/// `checkpoint_bytes`, and finishes — the commit also runs the node's `on_stored` hook.
pub(crate) struct PayloadWriter {
    /// `None` once the writer ended (the ingest was finished, discarded or dropped).
    ingest: Option<Box<Ingest>>,
    clock: Arc<dyn Clock>,
    hooks: Arc<dyn NetHooks>,
    peer: NodeId,
    checkpoint_bytes: u64,
    since_checkpoint: u64,
    /// Outboard bytes still to come before the payload, and those that came.
    outboard_left: usize,
    outboard: Vec<u8>,
    /// Publish the segment's verified groups for forwarding (someone will forward it).
    publish: bool,
}

impl PayloadWriter {
    pub fn new(
        ingest: Box<Ingest>,
        clock: Arc<dyn Clock>,
        hooks: Arc<dyn NetHooks>,
        peer: NodeId,
        checkpoint_bytes: u64,
        publish: bool,
    ) -> Self {
        let payload_len = ingest.manifest().manifest().payload_len;
        // Bounded by the payload's declared length, itself bounded before the ingest began.
        let outboard_left = store::outboard::outboard_len(payload_len) as usize;
        PayloadWriter {
            ingest: Some(ingest),
            clock,
            hooks,
            peer,
            checkpoint_bytes,
            since_checkpoint: 0,
            outboard_left,
            outboard: Vec::new(),
            publish,
        }
    }

    /// Takes the outboard bytes at the front of `buf` (see [`crate::wire`]); once all of it
    /// arrived, hands it to the ingest, which checks it against the root. Returns the payload
    /// bytes of `buf`.
    fn take_outboard<'b>(&mut self, buf: &'b [u8]) -> Result<&'b [u8], IngestError> {
        if self.outboard_left == 0 {
            return Ok(buf);
        }
        let n = self.outboard_left.min(buf.len());
        self.outboard.extend_from_slice(&buf[..n]);
        self.outboard_left -= n;
        if self.outboard_left == 0 {
            let outboard = std::mem::take(&mut self.outboard);
            if let Some(ingest) = self.ingest.as_mut() {
                ingest.set_outboard(&outboard, self.publish)?;
            }
        }
        Ok(&buf[n..])
    }

    /// Runs one step; `Some` when the writer ended with it (later steps are ignored).
    pub fn step(&mut self, msg: ToDisk) -> Option<WriterEnd> {
        self.ingest.as_ref()?;
        let end = match msg {
            ToDisk::Data(buf) => {
                let payload = match self.take_outboard(&buf) {
                    Ok(payload) => payload,
                    Err(e) => {
                        self.ingest = None;
                        return Some(WriterEnd::Failed(e));
                    }
                };
                let ingest = self.ingest.as_mut()?;
                if let Err(e) = ingest.write(payload) {
                    WriterEnd::Failed(e)
                } else {
                    self.since_checkpoint += payload.len() as u64;
                    if self.since_checkpoint < self.checkpoint_bytes {
                        return None;
                    }
                    if let Err(e) = ingest.checkpoint(self.clock.now_ms()) {
                        WriterEnd::Failed(e)
                    } else {
                        self.since_checkpoint = 0;
                        return None;
                    }
                }
            }
            ToDisk::End => {
                let ingest = self.ingest.take()?;
                let (hooks, peer) = (self.hooks.clone(), self.peer.clone());
                let now = self.clock.now_ms();
                match ingest.finish(now, move |txn, stored| hooks.on_stored(txn, stored, &peer)) {
                    Ok(stored) => WriterEnd::Stored(Box::new(stored)),
                    Err(e) => WriterEnd::Failed(e),
                }
            }
            ToDisk::Abort => {
                self.checkpoint_partial();
                WriterEnd::Aborted
            }
            ToDisk::Discard => {
                if let Some(ingest) = self.ingest.take() {
                    ingest.discard();
                }
                WriterEnd::Aborted
            }
        };
        // Dropping an ingest may remove files and write the index: here, on the disk side.
        self.ingest = None;
        Some(end)
    }

    /// Cut short: make what arrived durable so the next attempt resumes after it.
    fn checkpoint_partial(&mut self) {
        let Some(ingest) = self.ingest.as_mut() else {
            return;
        };
        if self.since_checkpoint > 0 {
            if let Err(e) = ingest.checkpoint(self.clock.now_ms()) {
                // A local disk failure, not the peer's doing: never rate-limited.
                tracing::warn!(seg_id = %ingest.id(), error = %e, "checkpoint of an interrupted transfer failed");
            }
        }
    }
}

/// The disk side stopped taking chunks (it ended with a failure, or its thread is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SinkGone;

/// A [`PayloadWriter`] run as the [`DiskMode`] says.
pub(crate) enum PayloadSink {
    Thread {
        tx: mpsc::Sender<ToDisk>,
        task: JoinHandle<WriterEnd>,
    },
    Inline {
        writer: Box<PayloadWriter>,
        end: Option<WriterEnd>,
    },
}

impl PayloadSink {
    pub fn start(mode: DiskMode, mut writer: PayloadWriter) -> Self {
        match mode {
            DiskMode::Inline => PayloadSink::Inline {
                writer: Box::new(writer),
                end: None,
            },
            DiskMode::Threads => {
                let (tx, mut rx) = mpsc::channel::<ToDisk>(PAYLOAD_QUEUE_CHUNKS);
                let task = tokio::task::spawn_blocking(move || {
                    while let Some(msg) = rx.blocking_recv() {
                        if let Some(end) = writer.step(msg) {
                            return end;
                        }
                    }
                    // The network side hung up without a verdict: as if it had aborted.
                    writer.step(ToDisk::Abort).unwrap_or(WriterEnd::Aborted)
                });
                PayloadSink::Thread { tx, task }
            }
        }
    }

    /// Hands one step to the disk side (waits while its queue is full).
    pub async fn send(&mut self, msg: ToDisk) -> Result<(), SinkGone> {
        match self {
            PayloadSink::Thread { tx, .. } => tx.send(msg).await.map_err(|_| SinkGone),
            PayloadSink::Inline { end: Some(_), .. } => Err(SinkGone),
            PayloadSink::Inline { writer, end } => {
                *end = writer.step(msg);
                Ok(())
            }
        }
    }

    /// Resolves once the disk side stopped taking steps (it failed: a group that did not
    /// verify, a full disk); never while it is still writing.
    pub fn gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let tx = match self {
            PayloadSink::Thread { tx, .. } => Some(tx.clone()),
            PayloadSink::Inline { .. } => None,
        };
        let ended = matches!(self, PayloadSink::Inline { end: Some(_), .. });
        async move {
            match tx {
                Some(tx) => tx.closed().await,
                None if ended => {}
                None => std::future::pending().await,
            }
        }
    }

    /// Waits for the disk side's end (a writer given no verdict aborts).
    pub async fn finish(self) -> Result<WriterEnd, DiskTaskFailed> {
        match self {
            PayloadSink::Thread { tx, task } => {
                drop(tx);
                task.await.map_err(|e| DiskTaskFailed(e.to_string()))
            }
            PayloadSink::Inline { end: Some(end), .. } => Ok(end),
            PayloadSink::Inline {
                mut writer,
                end: None,
            } => Ok(writer.step(ToDisk::Abort).unwrap_or(WriterEnd::Aborted)),
        }
    }
}
