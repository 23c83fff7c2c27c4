//! One segment over one stream: the sender's and the receiver's halves of a transfer.
//!
//! Both halves keep the disk and the hashing off the async worker threads (MEASUREMENTS.md:
//! inline hashing and writing halves throughput): the receiver's network task fills
//! [`PAYLOAD_CHUNK_BYTES`] buffers and hands them through a bounded channel
//! ([`PAYLOAD_QUEUE_CHUNKS`] deep) to a blocking task that runs `Ingest::write` (hash + write)
//! and the checkpoints; the sender's blocking task reads and hashes its stored `.seg` file and
//! hands chunks to the network task the same way. Memory per transfer is bounded by the queue,
//! whatever the segment size (INV-20).
//!
//! Receiver guarantees: nothing is acknowledged before `Ingest::finish` returned, i.e. after
//! fsync, rename, directory fsync and the commit that also ran the node's `on_stored` hook
//! (INV-03, INV-11); a payload that does not hash to its manifest is never stored (INV-02); a
//! byte beyond the declared length, a bad frame or a stall ends the stream with a typed code
//! and keeps what was received as a resumable partial (INV-17, INV-18).
//!
//! Stalls (INV-18) follow the minimum-rate rule of [`crate::rate`] in both directions: the
//! receiver judges the bytes it reads, the sender the bytes the receiver lets it write, over
//! each `stall_timeout_ms` window. A receive first claims its segment id in the node's
//! [`crate::takeover`] table, so a second peer offering a segment that is being received
//! slowly from a first one takes it over (resuming from the first one's checkpoint) instead of
//! being told `Busy` for as long as the first one likes; the preempted sender is answered
//! `Busy` and its stream is stopped with [`StreamCode::Preempted`].
//!
//! Sender guarantees: the bytes sent are hashed as they are read from the stored copy
//! (including the prefix skipped when resuming); if the copy is corrupt the stream is reset
//! with [`StreamCode::LocalCorrupt`] instead of being finished — so the receiver can never
//! commit it — and the segment is quarantined (INV-24).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quinn::{RecvStream, SendStream};
use store::manifest::{SignedManifest, VerifyError};
use store::segfile::SegFileError;
use store::{Begin, Ingest, IngestError, IngestOptions, SegmentId, SegmentReader, Store, Stored};
use tokio::time::{Instant, timeout, timeout_at};

use crate::clock::Clock;
use crate::config::NetConfig;
use crate::disk::{
    self, FromDisk, PayloadReader, PayloadSink, PayloadSource, PayloadWriter, ToDisk, WriterEnd,
};
use crate::limits::{PAYLOAD_CHUNK_BYTES, STOPPED_REASON_WAIT_MS};
use crate::logcap::LogLimiter;
use crate::pki::NodeId;
use crate::rate::{Progress, Stalled};
use crate::takeover::{Claim, Receiving};
use crate::wire::{
    Msg, RejectReason, StreamCode, WireError, read_error, read_frame, write_error, write_frame,
};
use crate::{info_limited, warn_limited};

/// What the node tells its owner (the relay) about transfers. Every method has a default that
/// does nothing.
pub trait NetHooks: Send + Sync + 'static {
    /// Runs INSIDE the redb write transaction that stores a segment received from `from`, so the
    /// relay's jobs and pins commit together with the segment (INV-11). An error aborts the
    /// commit: nothing is stored and the sender gets `Reject(Internal)`.
    fn on_stored(
        &self,
        txn: &redb::WriteTransaction,
        stored: &Stored<()>,
        from: &NodeId,
    ) -> Result<(), redb::Error> {
        let _ = (txn, stored, from);
        Ok(())
    }

    /// After the commit of a segment received from `from` (it has been acknowledged).
    fn on_received(&self, from: &NodeId, id: &SegmentId) {
        let _ = (from, id);
    }

    /// A segment this node sent to `to` because `to` pulled it (catch-up) was acknowledged
    /// durable, or `to` answered that it has it. The relay completes its job for that peer —
    /// even a dead-lettered one (INV-15). Pushes report through [`SendOutcome`] instead.
    fn on_delivered(&self, to: &NodeId, id: &SegmentId) {
        let _ = (to, id);
    }

    /// Every offer this node received ended with `result` (the reconciling counters of INV-26:
    /// offers = stored + duplicate + rejected + busy + interrupted).
    fn on_offer(&self, from: &NodeId, result: OfferResult) {
        let _ = (from, result);
    }

    /// A connection with `peer` was established (a good moment to retry what is due to it).
    fn on_peer_connected(&self, peer: &NodeId) {
        let _ = peer;
    }
}

/// Hooks that do nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl NetHooks for NoHooks {}

/// The result of offering one segment to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The peer stored it durably and acknowledged.
    Delivered,
    /// The peer has it already (stored or tombstoned): counts as delivered.
    Have,
    /// The peer is receiving the same segment from someone else, or handed it to a faster
    /// sender while this one was sending (takeover): retry, no attempt counted.
    Busy,
    /// The peer refused it. `reason.is_permanent()` tells whether retrying can help.
    Refused {
        reason: RejectReason,
        detail: String,
    },
    /// The peer has no room for it now (retryable, INV-08).
    StoreFull,
    /// No connection to the peer (never reached, dropped, or lost mid-transfer).
    Unreachable(String),
    /// The TLS handshake failed: certificates or ids do not match (INV-09).
    HandshakeRefused(String),
    /// The peer read less than `stall_rate_min_bytes_per_s` (or nothing) over a
    /// `stall_timeout_ms` window, or did not answer within `response_timeout_ms` (INV-18).
    TimedOut,
    /// This node's stored copy failed verification while being read; it has been quarantined
    /// and the stream aborted, so the peer stored nothing.
    LocalCorrupt(String),
    /// This node does not hold the segment (never stored, or evicted).
    NotStored,
    /// The segment has expired by this node's clock: it is not sent (INV-16). Permanent.
    Expired,
    /// This node does not trust the stored segment's publisher (any more): it is not sent.
    /// Permanent until the key is trusted again.
    Untrusted(String),
    /// Any other failure of this attempt (a local read error, the peer breaking the protocol);
    /// retryable.
    Failed(String),
}

impl SendOutcome {
    /// True when the peer now holds the segment.
    pub fn is_delivered(&self) -> bool {
        matches!(self, SendOutcome::Delivered | SendOutcome::Have)
    }
}

/// Counters of a node's network activity.
#[derive(Debug, Default)]
pub struct NetStats {
    pub payload_bytes_sent: AtomicU64,
    pub payload_bytes_received: AtomicU64,
    pub segments_delivered: AtomicU64,
    pub segments_stored: AtomicU64,
    /// Transfers (as sender) that started at an offset > 0.
    pub transfers_resumed: AtomicU64,
    /// Streams this node ended because of the peer (bad frame, stall, length, protocol).
    pub streams_failed: AtomicU64,
    /// Handshakes refused because `handshakes_unauthenticated_max` were in flight.
    pub handshakes_refused_cap: AtomicU64,
    /// Connections closed because another was kept (duplicates) or over the per-peer cap.
    pub connections_closed: AtomicU64,
    /// Segments requested with `Pull` during catch-up.
    pub catchup_pulls: AtomicU64,
    /// Catch-up rounds ended early: by a bound (pulls, pages, the peer's budget) or by the peer
    /// answering `NotHeld` for an id it listed.
    pub catchup_rounds_cut: AtomicU64,
    /// Datagrams dropped because their source is no configured peer's address (INV-27).
    pub datagrams_dropped_unknown: AtomicU64,
    /// Datagrams the send guard kept from an address that is no configured peer's and was not
    /// answered (INV-27); 0 unless `accept_unknown_addresses` is set.
    pub datagrams_blocked_send: AtomicU64,
    /// QUIC Retry packets sent: a client's address is validated before any handshake state.
    pub handshakes_retried: AtomicU64,
    /// Handshakes refused because their source address had `handshakes_per_addr_max` in flight.
    pub handshakes_refused_addr_cap: AtomicU64,
    /// Inbound handshakes dropped at `handshake_unauthenticated_timeout_ms`.
    pub handshakes_timed_out: AtomicU64,
    /// Transfers (either direction) cut by the minimum-rate rule.
    pub transfers_stalled: AtomicU64,
    /// Receives handed to another peer by the takeover rule.
    pub transfers_preempted: AtomicU64,
}

/// A plain copy of [`NetStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub payload_bytes_sent: u64,
    pub payload_bytes_received: u64,
    pub segments_delivered: u64,
    pub segments_stored: u64,
    pub transfers_resumed: u64,
    pub streams_failed: u64,
    pub handshakes_refused_cap: u64,
    pub connections_closed: u64,
    pub catchup_pulls: u64,
    pub catchup_rounds_cut: u64,
    pub datagrams_dropped_unknown: u64,
    pub datagrams_blocked_send: u64,
    pub handshakes_retried: u64,
    pub handshakes_refused_addr_cap: u64,
    pub handshakes_timed_out: u64,
    pub transfers_stalled: u64,
    pub transfers_preempted: u64,
}

impl NetStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            payload_bytes_sent: g(&self.payload_bytes_sent),
            payload_bytes_received: g(&self.payload_bytes_received),
            segments_delivered: g(&self.segments_delivered),
            segments_stored: g(&self.segments_stored),
            transfers_resumed: g(&self.transfers_resumed),
            streams_failed: g(&self.streams_failed),
            handshakes_refused_cap: g(&self.handshakes_refused_cap),
            connections_closed: g(&self.connections_closed),
            catchup_pulls: g(&self.catchup_pulls),
            catchup_rounds_cut: g(&self.catchup_rounds_cut),
            datagrams_dropped_unknown: g(&self.datagrams_dropped_unknown),
            datagrams_blocked_send: g(&self.datagrams_blocked_send),
            handshakes_retried: g(&self.handshakes_retried),
            handshakes_refused_addr_cap: g(&self.handshakes_refused_addr_cap),
            handshakes_timed_out: g(&self.handshakes_timed_out),
            transfers_stalled: g(&self.transfers_stalled),
            transfers_preempted: g(&self.transfers_preempted),
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// What a transfer needs from the node.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub store: Store,
    pub hooks: Arc<dyn NetHooks>,
    pub clock: Arc<dyn Clock>,
    pub cfg: Arc<NetConfig>,
    pub stats: Arc<NetStats>,
    /// One per node: what remote parties can make it log (see [`crate::logcap`]).
    pub limiter: Arc<LogLimiter>,
    /// One per node: who receives which segment (see [`crate::takeover`]).
    pub receiving: Arc<Receiving>,
}

/// Maps a lost connection to an outcome.
pub(crate) fn conn_outcome(e: &quinn::ConnectionError) -> SendOutcome {
    let crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        quinn::ConnectionError::TransportError(t) if crypto(t.code) => {
            SendOutcome::HandshakeRefused(e.to_string())
        }
        quinn::ConnectionError::ConnectionClosed(c) if crypto(c.error_code) => {
            SendOutcome::HandshakeRefused(e.to_string())
        }
        _ => SendOutcome::Unreachable(e.to_string()),
    }
}

fn end_stream(send: &mut SendStream, recv: &mut RecvStream, code: StreamCode) {
    // Either half may be closed already; nothing more to do then.
    let _ = send.reset(code.varint());
    let _ = recv.stop(code.varint());
}

fn wire_outcome(e: WireError) -> SendOutcome {
    match e {
        WireError::ConnectionLost(c) => conn_outcome(&c),
        other => SendOutcome::Failed(other.to_string()),
    }
}

/// Drops an ingest on a blocking thread (its drop may remove files and write the index), and
/// waits for it: the store must be free of it before the claim on its id goes.
async fn drop_blocking(ctx: &Ctx, ingest: Box<Ingest>) {
    let _ = disk::blocking(ctx.cfg.disk_mode, move || drop(ingest)).await;
}

// ---------------------------------------------------------------------------------------------
// Sender.

/// Opens a stored segment for sending (off the async threads). `Err` is the outcome to report.
pub(crate) async fn open_for_send(ctx: &Ctx, id: SegmentId) -> Result<SegmentReader, SendOutcome> {
    let store = ctx.store.clone();
    let now = ctx.clock.now_ms();
    match disk::blocking(ctx.cfg.disk_mode, move || store.open_for_read(&id, now)).await {
        // An expired segment is relayed to nobody, whether pushed or pulled (INV-16): the relay
        // cancels its jobs when they come due, and this keeps catch-up from serving it until
        // the next sweep evicts it.
        Ok(Ok(reader)) if reader.manifest().manifest().is_expired(now) => Err(SendOutcome::Expired),
        Ok(Ok(reader)) => Ok(reader),
        Ok(Err(store::StoreError::NotFound(_) | store::StoreError::Evicting(_))) => {
            Err(SendOutcome::NotStored)
        }
        Ok(Err(store::StoreError::Quarantined { reason, .. })) => {
            Err(SendOutcome::LocalCorrupt(reason))
        }
        Ok(Err(e @ store::StoreError::Untrusted { .. })) => {
            Err(SendOutcome::Untrusted(e.to_string()))
        }
        Ok(Err(e)) => Err(SendOutcome::Failed(format!(
            "cannot open segment {id}: {e}"
        ))),
        Err(e) => Err(SendOutcome::Failed(format!("open task failed: {e}"))),
    }
}

/// The sender's half: offer, stream from the offset the receiver wants, wait for its answer.
pub(crate) async fn send_with(
    ctx: &Ctx,
    peer: &NodeId,
    send: &mut SendStream,
    recv: &mut RecvStream,
    reader: SegmentReader,
) -> SendOutcome {
    let id = reader.id();
    let m = reader.manifest().manifest();
    let payload_len = m.payload_len;
    let offer = Msg::Offer {
        manifest: reader.manifest().encode(),
    };
    let response = ctx.cfg.response_timeout();
    let max = ctx.cfg.frame_bytes_max;
    if let Err(e) = write_frame(send, &offer).await {
        return wire_outcome(e);
    }
    let answer = match timeout(response, read_frame(recv, max)).await {
        Err(_) => {
            end_stream(send, recv, StreamCode::Stalled);
            return SendOutcome::TimedOut;
        }
        Ok(Err(e)) => {
            if let Some(code) = e.stream_code() {
                end_stream(send, recv, code);
            }
            return wire_outcome(e);
        }
        Ok(Ok(msg)) => msg,
    };
    let offset = match answer {
        Msg::Have => {
            let _ = send.finish();
            return SendOutcome::Have;
        }
        Msg::Busy => {
            let _ = send.finish();
            return SendOutcome::Busy;
        }
        Msg::Reject { reason, detail } => {
            let _ = send.finish();
            return refused(reason, detail);
        }
        Msg::Want { offset } if offset <= payload_len => offset,
        other => {
            end_stream(send, recv, StreamCode::Protocol);
            bump(&ctx.stats.streams_failed, 1);
            return SendOutcome::Failed(format!(
                "peer {peer} answered {} to an offer of {id} (payload {payload_len} bytes)",
                describe(&other)
            ));
        }
    };
    if offset > 0 {
        bump(&ctx.stats.transfers_resumed, 1);
        tracing::info!(peer = %peer, seg_id = %id, offset, "peer resumes a partial transfer");
    }

    let mut source = PayloadSource::start(ctx.cfg.disk_mode, PayloadReader::new(reader, offset));
    enum Stop {
        Stalled(Stalled),
        Write(WireError),
        Corrupt(String),
        Io(String),
    }
    // The reader's progress shows here only in steps of flow-control credit: an eighth of its
    // stream window, taken to be this node's own (a fleet shares its defaults).
    let slack = ctx.cfg.stream_receive_window_bytes / 8;
    let mut owed = payload_len - offset;
    let mut progress = Progress::new(
        Instant::now(),
        ctx.cfg.stall_timeout(),
        ctx.cfg.stall_rate_min_bytes_per_s,
        slack,
        owed,
    );
    let streamed: Result<(), Stop> = 'stream: loop {
        match source.next().await {
            Some(FromDisk::Data(buf)) => {
                let mut pos = 0;
                while pos < buf.len() {
                    match timeout_at(progress.deadline(), send.write(&buf[pos..])).await {
                        Ok(Ok(n)) => {
                            pos += n;
                            owed = owed.saturating_sub(n as u64);
                            progress.record(n as u64);
                            bump(&ctx.stats.payload_bytes_sent, n as u64);
                        }
                        Ok(Err(e)) => break 'stream Err(Stop::Write(write_error(e))),
                        // The window ended while the peer let nothing more be written.
                        Err(_) => {}
                    }
                    if let Err(stalled) = progress.roll(Instant::now(), owed) {
                        break 'stream Err(Stop::Stalled(stalled));
                    }
                }
            }
            Some(FromDisk::Verified) => break Ok(()),
            Some(FromDisk::Corrupt(reason)) => break Err(Stop::Corrupt(reason)),
            Some(FromDisk::Io(e)) => break Err(Stop::Io(e)),
            None => break Err(Stop::Io("disk reader ended early".into())),
        }
    };
    // The reader (and the eviction lease it holds) is gone once this returns.
    source.close().await;
    match streamed {
        Ok(()) => {}
        Err(Stop::Corrupt(reason)) => {
            let _ = send.reset(StreamCode::LocalCorrupt.varint());
            tracing::error!(seg_id = %id, reason, "stored copy is corrupt; transfer aborted");
            quarantine(ctx, id, &reason).await;
            return SendOutcome::LocalCorrupt(reason);
        }
        Err(Stop::Io(e)) => {
            end_stream(send, recv, StreamCode::Internal);
            return SendOutcome::Failed(format!("reading segment {id}: {e}"));
        }
        Err(Stop::Stalled(stalled)) => {
            end_stream(send, recv, StreamCode::Stalled);
            bump(&ctx.stats.transfers_stalled, 1);
            warn_limited!(ctx.limiter, peer.as_str(), "send_stalled", peer = %peer, seg_id = %id, moved = stalled.moved, required = stalled.required, "transfer stalled: the peer read less than the minimum rate over a window");
            return SendOutcome::TimedOut;
        }
        Err(Stop::Write(WireError::Stopped(code))) => {
            // The receiver ended the stream; it may have said why first.
            let wait = Duration::from_millis(STOPPED_REASON_WAIT_MS);
            match timeout(wait, read_frame(recv, max)).await {
                Ok(Ok(Msg::Reject { reason, detail })) => return refused(reason, detail),
                Ok(Ok(Msg::Busy)) => return SendOutcome::Busy,
                _ => {}
            }
            let _ = send.reset(StreamCode::Internal.varint());
            if code == StreamCode::Stalled as u64 {
                return SendOutcome::TimedOut;
            }
            if code == StreamCode::Preempted as u64 {
                return SendOutcome::Busy;
            }
            return SendOutcome::Failed(format!("peer {peer} stopped the stream (code {code})"));
        }
        Err(Stop::Write(e)) => return wire_outcome(e),
    }
    if send.finish().is_err() {
        return SendOutcome::Failed("stream closed before it could be finished".into());
    }
    match timeout(response, read_frame(recv, max)).await {
        Err(_) => {
            let _ = recv.stop(StreamCode::Stalled.varint());
            SendOutcome::TimedOut
        }
        Ok(Ok(Msg::Ack)) => {
            bump(&ctx.stats.segments_delivered, 1);
            SendOutcome::Delivered
        }
        Ok(Ok(Msg::Have)) => SendOutcome::Have,
        // Another sender took the segment over (see the takeover rule).
        Ok(Ok(Msg::Busy)) => SendOutcome::Busy,
        Ok(Ok(Msg::Reject { reason, detail })) => refused(reason, detail),
        Ok(Ok(other)) => {
            let _ = recv.stop(StreamCode::Protocol.varint());
            SendOutcome::Failed(format!(
                "peer {peer} answered {} after the payload",
                other.name()
            ))
        }
        Ok(Err(e)) => wire_outcome(e),
    }
}

fn describe(msg: &Msg) -> String {
    match msg {
        Msg::Want { offset } => format!("Want({offset})"),
        other => other.name().to_owned(),
    }
}

fn refused(reason: RejectReason, detail: String) -> SendOutcome {
    match reason {
        RejectReason::StoreFull => SendOutcome::StoreFull,
        reason => SendOutcome::Refused { reason, detail },
    }
}

async fn quarantine(ctx: &Ctx, id: SegmentId, reason: &str) {
    let store = ctx.store.clone();
    let now = ctx.clock.now_ms();
    let reason = reason.to_owned();
    let done = disk::blocking(ctx.cfg.disk_mode, move || {
        store.quarantine(&id, &reason, now)
    })
    .await;
    match done {
        Ok(Ok(())) => tracing::error!(seg_id = %id, "segment quarantined"),
        Ok(Err(e)) => tracing::error!(seg_id = %id, error = %e, "quarantine failed"),
        Err(e) => tracing::error!(seg_id = %id, error = %e, "quarantine task failed"),
    }
}

// ---------------------------------------------------------------------------------------------
// Receiver.

/// What the receiving half ended with.
/// How an offer received from a peer ended, as counted by [`NetHooks::on_offer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferResult {
    /// Stored durably and acknowledged.
    Stored,
    /// Already held here (stored or tombstoned): answered "have".
    Duplicate,
    /// Being received from another peer: answered "busy".
    Busy,
    /// Refused with this reason.
    Rejected(RejectReason),
    /// The transfer stalled, was handed to another sender, or the stream broke before a
    /// verdict (a partial may be kept).
    Interrupted,
}

impl Received {
    fn result(&self) -> OfferResult {
        match self {
            Received::Stored(_) => OfferResult::Stored,
            Received::Had => OfferResult::Duplicate,
            Received::Busy => OfferResult::Busy,
            Received::Rejected(reason) => OfferResult::Rejected(*reason),
            Received::TimedOut | Received::Preempted | Received::Failed(_) => {
                OfferResult::Interrupted
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Received {
    Stored(SegmentId),
    Had,
    Busy,
    Rejected(RejectReason),
    TimedOut,
    /// Another peer took the segment over (the takeover rule); the partial was kept.
    Preempted,
    Failed(String),
}

enum InFail {
    Stalled(Stalled),
    Preempted,
    Truncated { got: u64 },
    TooLong,
    Reset(u64),
    Lost(String),
    WriterGone,
}

/// Maps an ingest error to the reason told to the sender.
pub(crate) fn ingest_reason(e: &IngestError) -> RejectReason {
    let verify = |v: &VerifyError| match v {
        VerifyError::UntrustedPublisher { .. } => RejectReason::UntrustedPublisher,
        VerifyError::BadSignature => RejectReason::BadSignature,
        VerifyError::Expired { .. } => RejectReason::Expired,
        VerifyError::CreatedInFuture { .. } => RejectReason::CreatedInFuture,
    };
    match e {
        IngestError::Verify(v) | IngestError::Format(SegFileError::Verify(v)) => verify(v),
        IngestError::Format(SegFileError::HashMismatch { .. }) => RejectReason::HashMismatch,
        IngestError::Format(
            SegFileError::TruncatedPayload { .. } | SegFileError::PayloadTooLong,
        ) => RejectReason::LengthMismatch,
        IngestError::Format(SegFileError::Io(_)) => RejectReason::Internal,
        IngestError::Format(_) => RejectReason::Malformed,
        // Mutation point (INV-08): a full store refuses for good, as if the segment could never
        // fit, and the sender drops its job instead of retrying.
        IngestError::StoreFull { .. } if store::mutants::active("store_full_permanent") => {
            RejectReason::TooLarge
        }
        IngestError::StoreFull { .. } => RejectReason::StoreFull,
        IngestError::Busy(_) | IngestError::Io { .. } | IngestError::Store(_) => {
            RejectReason::Internal
        }
        IngestError::Protocol { .. } => RejectReason::Internal,
        // Only imports of a copy of a stored segment produce it; a peer is answered "have".
        IngestError::CorruptCopy { .. } => RejectReason::Malformed,
    }
}

async fn reject(
    ctx: &Ctx,
    send: &mut SendStream,
    reason: RejectReason,
    detail: String,
) -> Received {
    let _ = write_frame(send, &Msg::reject(reason, detail)).await;
    let _ = send.finish();
    if matches!(
        reason,
        RejectReason::HashMismatch | RejectReason::LengthMismatch | RejectReason::Protocol
    ) {
        bump(&ctx.stats.streams_failed, 1);
    }
    Received::Rejected(reason)
}

/// The receiver's half, after the peer's `Offer(manifest)` was read. Every ending is reported
/// to the hooks.
pub(crate) async fn receive(
    ctx: &Ctx,
    peer: &NodeId,
    send: &mut SendStream,
    recv: &mut RecvStream,
    manifest: Vec<u8>,
) -> Received {
    let received = receive_offer(ctx, peer, send, recv, manifest).await;
    ctx.hooks.on_offer(peer, received.result());
    received
}

async fn receive_offer(
    ctx: &Ctx,
    peer: &NodeId,
    send: &mut SendStream,
    recv: &mut RecvStream,
    manifest: Vec<u8>,
) -> Received {
    let signed = match SignedManifest::decode(&manifest) {
        Ok(s) => s,
        Err(e) => return reject(ctx, send, RejectReason::Malformed, e.to_string()).await,
    };
    let id = signed.id();
    let payload_len = signed.manifest().payload_len;
    let file_len = store::limits::SEG_PREAMBLE_BYTES + signed.encoded_len() as u64 + payload_len;
    let ceiling = ctx.store.config().ceiling_bytes;
    if file_len > ceiling {
        let detail =
            format!("segment of {file_len} bytes can never fit under a ceiling of {ceiling}");
        return reject(ctx, send, RejectReason::TooLarge, detail).await;
    }
    // Held (or evicted) already: "have", without waiting for anyone's claim.
    let store = ctx.store.clone();
    let holding = disk::blocking(ctx.cfg.disk_mode, move || store.holding(&id)).await;
    if let Ok(Ok(store::Holding::Stored | store::Holding::Tombstoned)) = holding {
        let _ = write_frame(send, &Msg::Have).await;
        let _ = send.finish();
        return Received::Had;
    }
    let claim = ctx
        .receiving
        .claim(
            id,
            peer,
            takeover_wait(&ctx.cfg),
            ctx.cfg.takeover_below_rate_bytes_per_s,
        )
        .await;
    let Some(claim) = claim else {
        let _ = write_frame(send, &Msg::Busy).await;
        let _ = send.finish();
        return Received::Busy;
    };
    let store = ctx.store.clone();
    let opts = IngestOptions::from_peer(peer.as_str());
    let now = ctx.clock.now_ms();
    let begun = disk::blocking(ctx.cfg.disk_mode, move || {
        store.begin_ingest(signed, &opts, now)
    })
    .await;
    let ingest = match begun {
        Err(e) => return reject(ctx, send, RejectReason::Internal, format!("{e}")).await,
        Ok(Ok(Begin::Have(_))) => {
            let _ = write_frame(send, &Msg::Have).await;
            let _ = send.finish();
            return Received::Had;
        }
        Ok(Err(IngestError::Busy(_))) => {
            // Being imported, or received outside this node's table: the store decides.
            let _ = write_frame(send, &Msg::Busy).await;
            let _ = send.finish();
            return Received::Busy;
        }
        Ok(Err(e)) => {
            let reason = ingest_reason(&e);
            if matches!(
                reason,
                RejectReason::BadSignature | RejectReason::UntrustedPublisher
            ) {
                warn_limited!(ctx.limiter, peer.as_str(), "offer_refused", peer = %peer, seg_id = %id, %reason, error = %e, "offer refused");
            } else {
                info_limited!(ctx.limiter, peer.as_str(), "offer_refused", peer = %peer, seg_id = %id, %reason, error = %e, "offer refused");
            }
            return reject(ctx, send, reason, e.to_string()).await;
        }
        Ok(Ok(Begin::Ingest(ingest))) => ingest,
    };
    let offset = ingest.resume_offset();
    if let Err(e) = write_frame(send, &Msg::Want { offset }).await {
        drop_blocking(ctx, ingest).await;
        return Received::Failed(e.to_string());
    }

    let writer = PayloadWriter::new(
        ingest,
        ctx.clock.clone(),
        ctx.hooks.clone(),
        peer.clone(),
        ctx.cfg.checkpoint_bytes,
    );
    let mut sink = PayloadSink::start(ctx.cfg.disk_mode, writer);
    let pumped = pump_in(ctx, recv, &mut sink, payload_len - offset, &claim).await;
    // Mutation point (INV-03): the sender hears "stored" once the bytes are in, before the disk
    // thread verified, synced and committed them.
    let acked_early = pumped.is_ok() && store::mutants::active("ack_before_commit");
    if acked_early {
        let _ = write_frame(send, &Msg::Ack).await;
    }
    let to_disk = match &pumped {
        Ok(()) => ToDisk::End,
        Err(InFail::Reset(code)) if is_local_corrupt(*code) => ToDisk::Discard,
        Err(_) => ToDisk::Abort,
    };
    // The writer may have stopped already (a disk error): then this send fails, which is fine.
    let _ = sink.send(to_disk).await;
    let written = sink.finish().await;
    match (pumped, written) {
        (_, Ok(WriterEnd::Failed(e))) => {
            let reason = ingest_reason(&e);
            warn_limited!(ctx.limiter, peer.as_str(), "not_stored", peer = %peer, seg_id = %id, %reason, error = %e, "segment not stored");
            let _ = recv.stop(StreamCode::Internal.varint());
            reject(ctx, send, reason, e.to_string()).await
        }
        (_, Err(e)) => {
            let _ = recv.stop(StreamCode::Internal.varint());
            reject(ctx, send, RejectReason::Internal, e.to_string()).await
        }
        (Ok(()), Ok(WriterEnd::Stored(stored))) => {
            bump(&ctx.stats.segments_stored, 1);
            if !acked_early {
                let _ = write_frame(send, &Msg::Ack).await;
            }
            let _ = send.finish();
            tracing::info!(peer = %peer, seg_id = %stored.id, bytes = payload_len, offset, "segment received");
            ctx.hooks.on_received(peer, &stored.id);
            Received::Stored(stored.id)
        }
        (Ok(()), Ok(WriterEnd::Aborted)) => Received::Failed("disk writer stopped early".into()),
        (Err(InFail::Preempted), _) => {
            // Not the peer's fault: a faster peer offered the same segment.
            bump(&ctx.stats.transfers_preempted, 1);
            let _ = write_frame(send, &Msg::Busy).await;
            let _ = send.finish();
            let _ = recv.stop(StreamCode::Preempted.varint());
            info_limited!(ctx.limiter, peer.as_str(), "preempted", peer = %peer, seg_id = %id, "transfer handed to a faster peer; partial kept for it");
            Received::Preempted
        }
        (Err(fail), _) => {
            bump(&ctx.stats.streams_failed, 1);
            match fail {
                InFail::Stalled(stalled) => {
                    end_stream(send, recv, StreamCode::Stalled);
                    bump(&ctx.stats.transfers_stalled, 1);
                    warn_limited!(ctx.limiter, peer.as_str(), "receive_stalled", peer = %peer, seg_id = %id, moved = stalled.moved, required = stalled.required, "transfer stalled: less than the minimum rate over a window; partial kept for resume");
                    Received::TimedOut
                }
                InFail::Preempted => Received::Preempted,
                InFail::TooLong => {
                    let _ = recv.stop(StreamCode::PayloadTooLong.varint());
                    let detail = format!("more than the {payload_len} payload bytes declared");
                    warn_limited!(ctx.limiter, peer.as_str(), "payload_too_long", peer = %peer, seg_id = %id, "payload longer than declared");
                    reject(ctx, send, RejectReason::LengthMismatch, detail).await
                }
                InFail::Truncated { got } => {
                    let detail = format!("stream ended after {got} of {payload_len} payload bytes");
                    warn_limited!(ctx.limiter, peer.as_str(), "payload_truncated", peer = %peer, seg_id = %id, got, "payload truncated");
                    reject(ctx, send, RejectReason::LengthMismatch, detail).await
                }
                InFail::Reset(code) => {
                    let _ = send.reset(StreamCode::Protocol.varint());
                    let why = if is_local_corrupt(code) {
                        "its stored copy is corrupt; what arrived is discarded".to_owned()
                    } else {
                        format!("code {code}")
                    };
                    warn_limited!(ctx.limiter, peer.as_str(), "sender_aborted", peer = %peer, seg_id = %id, why, "sender aborted the transfer");
                    Received::Failed(format!("sender aborted: {why}"))
                }
                InFail::Lost(e) => Received::Failed(e),
                InFail::WriterGone => Received::Failed("disk writer stopped".into()),
            }
        }
    }
}

/// How long a second peer offering a segment waits for the one it is received from: a little
/// more than one rate window (so the holder finishes a window and shows its rate), and never
/// more than half the sender's response timeout (so the sender hears an answer in time).
pub(crate) fn takeover_wait(cfg: &NetConfig) -> Duration {
    let window = cfg.stall_timeout();
    (window + window / 4).min(cfg.response_timeout() / 2)
}

/// Reads exactly `remaining` payload bytes into chunks for the disk thread under the
/// minimum-rate rule, publishing each window's rate to the claim (and stopping when a waiter
/// takes over), then requires the end of the stream.
async fn pump_in(
    ctx: &Ctx,
    recv: &mut RecvStream,
    sink: &mut PayloadSink,
    mut remaining: u64,
    claim: &Claim,
) -> Result<(), InFail> {
    let stall = ctx.cfg.stall_timeout();
    let mut progress = Progress::new(
        Instant::now(),
        stall,
        ctx.cfg.stall_rate_min_bytes_per_s,
        0,
        remaining,
    );
    let preempted = claim.preempted();
    tokio::pin!(preempted);
    let mut got = 0u64;
    // Mutation point (INV-20): the payload is held in memory until its last byte arrived.
    let buffer_payload = store::mutants::active("buffer_payload");
    let mut held = Vec::new();
    let read_fail = |e: quinn::ReadError| match read_error(e) {
        WireError::Reset(code) => InFail::Reset(code),
        other => InFail::Lost(other.to_string()),
    };
    while remaining > 0 {
        // Cannot truncate: at most PAYLOAD_CHUNK_BYTES.
        let want = remaining.min(PAYLOAD_CHUNK_BYTES as u64) as usize;
        let mut buf = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            let read = tokio::select! {
                biased;
                _ = &mut preempted => Err(InFail::Preempted),
                r = timeout_at(progress.deadline(), recv.read(&mut buf[filled..])) => match r {
                    Ok(Ok(Some(n))) => {
                        filled += n;
                        progress.record(n as u64);
                        Ok(())
                    }
                    // The window ended: judged below.
                    Err(_) => Ok(()),
                    Ok(Ok(None)) => Err(InFail::Truncated {
                        got: got + filled as u64,
                    }),
                    Ok(Err(e)) => Err(read_fail(e)),
                },
            };
            let judged = read.and_then(|()| {
                match progress.roll(Instant::now(), remaining - filled as u64) {
                    Err(stalled) => Err(InFail::Stalled(stalled)),
                    Ok(Some(rate)) => {
                        claim.publish_rate(rate);
                        Ok(())
                    }
                    Ok(None) => Ok(()),
                }
            });
            if let Err(fail) = judged {
                // Hand over what did arrive, so the checkpoint of the cut transfer includes it.
                if filled > 0 {
                    buf.truncate(filled);
                    bump(&ctx.stats.payload_bytes_received, filled as u64);
                    let _ = sink.send(ToDisk::Data(buf)).await;
                }
                return Err(fail);
            }
        }
        remaining -= want as u64;
        got += want as u64;
        bump(&ctx.stats.payload_bytes_received, want as u64);
        if buffer_payload {
            held.push(buf);
            continue;
        }
        if sink.send(ToDisk::Data(buf)).await.is_err() {
            return Err(InFail::WriterGone);
        }
    }
    for buf in held {
        if sink.send(ToDisk::Data(buf)).await.is_err() {
            return Err(InFail::WriterGone);
        }
    }
    let mut one = [0u8; 1];
    match timeout(stall, recv.read(&mut one)).await {
        Err(_) => Err(InFail::Stalled(Stalled {
            moved: 0,
            required: 0,
        })),
        Ok(Ok(None)) => Ok(()),
        Ok(Ok(Some(_))) => Err(InFail::TooLong),
        Ok(Err(e)) => Err(read_fail(e)),
    }
}

/// The sender reset the stream because its own stored copy failed verification.
fn is_local_corrupt(code: u64) -> bool {
    StreamCode::from_varint(quinn::VarInt::from_u64(code).unwrap_or(quinn::VarInt::MAX))
        == Some(StreamCode::LocalCorrupt)
}

/// Reads the first frame of a stream the peer opened, bounded by the response timeout.
pub(crate) async fn first_frame(
    cfg: &NetConfig,
    recv: &mut RecvStream,
) -> Result<Msg, Option<WireError>> {
    match timeout(
        cfg.response_timeout(),
        read_frame(recv, cfg.frame_bytes_max),
    )
    .await
    {
        Err(_) => Err(None),
        Ok(r) => r.map_err(Some),
    }
}
