//! One segment over one stream: the sender's and the receiver's halves of a transfer.
//!
//! The decisions of both halves are state machines without I/O, `proto::send` and
//! `proto::receive`; this module is their glue: it runs their commands on quinn
//! streams, `tokio::time`, the takeover table and the store (the disk side as [`crate::disk`]
//! says), and feeds them the results.
//!
//! Both halves keep the disk and the hashing off the async worker threads (MEASUREMENTS.md:
//! inline hashing and writing halves throughput): the receiver's network task fills
//! [`PAYLOAD_CHUNK_BYTES`](crate::limits::PAYLOAD_CHUNK_BYTES) buffers and hands them through a bounded channel
//! ([`PAYLOAD_QUEUE_CHUNKS`](crate::limits::PAYLOAD_QUEUE_CHUNKS) deep) to a blocking task that runs `Ingest::write` (hash + write)
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
//! `Busy` and its stream is stopped with [`StreamCode::Preempted`](crate::wire::StreamCode::Preempted).
//!
//! Sender guarantees: every byte sent was checked against the manifest's root as it was read
//! from the stored copy — a payload of one group or less hashed whole (including the prefix
//! skipped when resuming), a larger one group by group against its outboard, each group read
//! and checked once for all the sends of the segment running at the same time
//! ([`store::Store::open_shared`]); if the copy is corrupt the stream is reset
//! with [`StreamCode::LocalCorrupt`](crate::wire::StreamCode::LocalCorrupt) instead of being finished — so the receiver can never
//! commit it — and the segment is quarantined (INV-24).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quinn::{RecvStream, SendStream};
use store::inflight::Opened;
use store::manifest::VerifyError;
use store::segfile::SegFileError;
use store::{Begin, Ingest, IngestError, IngestOptions, SegmentId, SegmentReader, Store, Stored};
use tokio::time::{Instant, timeout, timeout_at};

use crate::clock::Clock;
use crate::config::NetConfig;
use crate::disk::{
    self, InFlightFeed, PayloadReader, PayloadSink, PayloadSource, PayloadWriter, SinkGone,
    WriterEnd,
};
use crate::limits::STOPPED_REASON_WAIT_MS;
use crate::logcap::LogLimiter;
use crate::pki::NodeId;
use crate::proto::Observer;
use crate::proto::receive::{Begun, ReadEvent, Receiver, RecvCmd, RecvParams, Written};
use crate::proto::send::{SendCmd, SendParams, Sender};
use crate::takeover::{Claim, Receiving};
use crate::wire::{Msg, RejectReason, WireError, read_error, read_frame, write_error, write_frame};

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
    /// The peers to forward segment `id` to while it still arrives from `from` (a peer, or
    /// `None` for a local import) (cut-through). The default forwards nowhere; the relay names
    /// the peers it would schedule once stored.
    fn forward_targets(&self, from: Option<&NodeId>, id: &SegmentId) -> Vec<NodeId> {
        let _ = (from, id);
        Vec::new()
    }

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

/// The outcome in words, as `edged peers` and the logs show it.
impl std::fmt::Display for SendOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendOutcome::Delivered => write!(f, "delivered"),
            SendOutcome::Have => write!(f, "the peer has it already"),
            SendOutcome::Busy => write!(f, "the peer is receiving it from another node"),
            SendOutcome::Refused { reason, detail } if detail.is_empty() => {
                write!(f, "refused by the peer: {reason}")
            }
            SendOutcome::Refused { reason, detail } => {
                write!(f, "refused by the peer: {reason}: {detail}")
            }
            SendOutcome::StoreFull => write!(f, "the peer's store is full"),
            SendOutcome::Unreachable(why) => write!(f, "unreachable: {why}"),
            SendOutcome::HandshakeRefused(why) => write!(f, "handshake refused: {why}"),
            SendOutcome::TimedOut => {
                write!(f, "timed out: the peer read too slowly or did not answer")
            }
            SendOutcome::LocalCorrupt(why) => {
                write!(f, "this node's copy is corrupt and was quarantined: {why}")
            }
            SendOutcome::NotStored => write!(f, "this node does not hold the segment"),
            SendOutcome::Expired => write!(f, "the segment has expired"),
            SendOutcome::Untrusted(why) => {
                write!(f, "this node does not trust the segment's publisher: {why}")
            }
            SendOutcome::Failed(why) => write!(f, "failed: {why}"),
        }
    }
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
    /// The node's receipts; `None` when `receipt_interval_ms` is 0.
    pub fleet: Option<Arc<crate::receipts::gossip::Fleet>>,
}

/// Maps a lost connection to an outcome. A refused TLS handshake is said in words (see
/// [`crate::handshake_cause`]); the technical text goes to the debug log.
pub(crate) fn conn_outcome(e: &quinn::ConnectionError) -> SendOutcome {
    use crate::handshake_cause::{Side, in_words};
    // QUIC's crypto errors are 0x100 plus the TLS alert.
    let alert = |code: quinn::TransportErrorCode| {
        u64::from(code)
            .checked_sub(0x100)
            .and_then(|a| u8::try_from(a).ok())
    };
    let refused = match e {
        quinn::ConnectionError::TransportError(t) => {
            alert(t.code).map(|a| in_words(Side::Here, a, &t.reason))
        }
        quinn::ConnectionError::ConnectionClosed(c) => alert(c.error_code)
            .map(|a| in_words(Side::Peer, a, &String::from_utf8_lossy(&c.reason))),
        _ => None,
    };
    match refused {
        Some(words) => {
            tracing::debug!(error = %e, cause = %words, "handshake refused");
            SendOutcome::HandshakeRefused(words)
        }
        None => SendOutcome::Unreachable(e.to_string()),
    }
}

/// Why a connection ended, in words: "closed by the peer: duplicate", "idle timeout: …".
pub(crate) fn close_words(e: &quinn::ConnectionError) -> String {
    use quinn::ConnectionError as E;
    let text = |bytes: &[u8]| match String::from_utf8_lossy(bytes).trim() {
        "" => "no reason given".to_owned(),
        why => why.to_owned(),
    };
    match e {
        E::ApplicationClosed(c) => format!("closed by the peer: {}", text(&c.reason)),
        E::LocallyClosed => "closed by this node".into(),
        E::TimedOut => "idle timeout: nothing heard from the peer".into(),
        E::Reset => "reset by the peer (it restarted or lost the connection)".into(),
        E::TransportError(_) | E::ConnectionClosed(_) => match conn_outcome(e) {
            SendOutcome::HandshakeRefused(why) => format!("handshake refused: {why}"),
            _ => e.to_string(),
        },
        _ => e.to_string(),
    }
}

/// Drops an ingest on a blocking thread (its drop may remove files and write the index), and
/// waits for it: the store must be free of it before the claim on its id goes.
async fn drop_blocking(ctx: &Ctx, ingest: Box<Ingest>) {
    let _ = disk::blocking(ctx.cfg.disk_mode, move || drop(ingest)).await;
}

// ---------------------------------------------------------------------------------------------
// Sender.

/// What a send streams from.
pub(crate) enum Source {
    /// The stored copy, read and hashed by this send alone (a payload of one group or less).
    Stored(Box<SegmentReader>),
    /// Verified groups: of a segment still arriving here (cut-through), or of a stored one,
    /// read once for every send of it running at the same time (fan-out from one read).
    InFlight(Arc<store::inflight::InFlight>),
}

impl Source {
    fn id(&self) -> SegmentId {
        match self {
            Source::Stored(r) => r.id(),
            Source::InFlight(f) => f.id(),
        }
    }

    fn manifest(&self) -> &store::manifest::SignedManifest {
        match self {
            Source::Stored(r) => r.manifest(),
            Source::InFlight(f) => f.manifest(),
        }
    }

    pub(crate) fn payload_len(&self) -> u64 {
        self.manifest().manifest().payload_len
    }
}

/// Opens a segment for sending (off the async threads): the stored copy — through a read shared
/// with the other sends of it running now, when it has more than one group — or else, while it
/// is still arriving with its outboard, its verified groups. `Err` is the outcome to report.
pub(crate) async fn open_for_send(ctx: &Ctx, id: SegmentId) -> Result<Source, SendOutcome> {
    match open_stored(ctx, id).await {
        Err(SendOutcome::NotStored) => match ctx.store.in_flight(&id) {
            Some(f) if f.manifest().manifest().is_expired(ctx.clock.now_ms()) => {
                Err(SendOutcome::Expired)
            }
            Some(f) => Ok(Source::InFlight(f)),
            None => Err(SendOutcome::NotStored),
        },
        opened => opened,
    }
}

async fn open_stored(ctx: &Ctx, id: SegmentId) -> Result<Source, SendOutcome> {
    let store = ctx.store.clone();
    let now = ctx.clock.now_ms();
    let opened = disk::blocking(ctx.cfg.disk_mode, move || store.open_shared(&id, now)).await;
    let source = |opened: Opened| match opened {
        Opened::Shared(f) => Source::InFlight(f),
        Opened::Alone(reader) => Source::Stored(reader),
    };
    match opened.map(|r| r.map(source)) {
        // An expired segment is relayed to nobody, whether pushed or pulled (INV-16): the relay
        // cancels its jobs when they come due, and this keeps catch-up from serving it until
        // the next sweep evicts it.
        Ok(Ok(source)) if source.manifest().manifest().is_expired(now) => Err(SendOutcome::Expired),
        Ok(Ok(source)) => Ok(source),
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
/// Runs a [`Sender`] on the streams and the stored copy.
pub(crate) async fn send_with(
    ctx: &Ctx,
    peer: &NodeId,
    send: &mut SendStream,
    recv: &mut RecvStream,
    reader: Source,
) -> SendOutcome {
    let id = reader.id();
    let payload_len = reader.manifest().manifest().payload_len;
    let params = SendParams {
        response: ctx.cfg.response_timeout(),
        stall_window: ctx.cfg.stall_timeout(),
        stall_rate_min_bytes_per_s: ctx.cfg.stall_rate_min_bytes_per_s,
        // The reader's progress shows here only in steps of flow-control credit: an eighth of
        // its stream window, taken to be this node's own (a fleet shares its defaults).
        slack: ctx.cfg.stream_receive_window_bytes / 8,
        stopped_reason_wait: Duration::from_millis(STOPPED_REASON_WAIT_MS),
    };
    let manifest = reader.manifest().encode();
    let mut m = Sender::new(ctx.observer(peer), params, id, manifest, payload_len);
    let max = ctx.cfg.frame_bytes_max;
    let mut reader = Some(reader);
    let mut source: Option<PayloadSource> = None;
    // Bounded: every command either ends the send or is answered, each wait has a deadline
    // but the disk's, and the payload is finite.
    loop {
        let Some(cmd) = m.poll() else {
            // The machine never waits without having asked for something.
            return SendOutcome::Failed("sender stopped without an outcome".into());
        };
        match cmd {
            SendCmd::Write(msg) => {
                let written = write_frame(send, &msg).await;
                m.on_written(written, Instant::now());
            }
            SendCmd::ReadFrame { deadline } => {
                match timeout_at(deadline, read_frame(recv, max)).await {
                    Err(_) => m.on_timer(Instant::now()),
                    Ok(frame) => m.on_frame(frame, Instant::now()),
                }
            }
            SendCmd::Finish => {
                let finished = send.finish().is_ok();
                m.on_finished(finished, Instant::now());
            }
            SendCmd::ResetSend(code) => {
                let _ = send.reset(code.varint());
            }
            SendCmd::StopRecv(code) => {
                let _ = recv.stop(code.varint());
            }
            SendCmd::StartReader { offset } => {
                source = match reader.take() {
                    Some(Source::Stored(reader)) => {
                        let steps = PayloadReader::new(*reader, offset);
                        Some(PayloadSource::start(ctx.cfg.disk_mode, steps))
                    }
                    Some(Source::InFlight(f)) => Some(PayloadSource::InFlight(Box::new(
                        InFlightFeed::new(f, ctx.cfg.disk_mode, offset),
                    ))),
                    None => None,
                };
            }
            SendCmd::NextChunk => {
                let next = match source.as_mut() {
                    Some(source) => source.next().await,
                    None => None,
                };
                m.on_disk(next);
            }
            SendCmd::WritePayload { deadline } => {
                match timeout_at(deadline, send.write(m.write_buf())).await {
                    Ok(Ok(n)) => m.on_payload_written(n, Instant::now()),
                    Ok(Err(e)) => m.on_written(Err(write_error(e)), Instant::now()),
                    // The window ended while the peer let nothing more be written.
                    Err(_) => m.on_timer(Instant::now()),
                }
            }
            SendCmd::CloseReader => {
                if let Some(source) = source.take() {
                    source.close().await;
                }
                drop(reader.take());
                m.on_reader_closed(Instant::now());
            }
            SendCmd::Quarantine(reason) => quarantine(ctx, id, &reason).await,
            SendCmd::Done(outcome) => return outcome,
        }
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

/// Maps an ingest error to the reason told to the sender.
pub(crate) fn ingest_reason(e: &IngestError) -> RejectReason {
    let verify = |v: &VerifyError| match v {
        VerifyError::UntrustedPublisher { .. } | VerifyError::BelowThreshold { .. } => {
            RejectReason::UntrustedPublisher
        }
        VerifyError::RootExpired { .. } | VerifyError::ChannelExpired { .. } => RejectReason::Stale,
        VerifyError::BadSignature => RejectReason::BadSignature,
        VerifyError::Expired { .. } => RejectReason::Expired,
        VerifyError::CreatedInFuture { .. } => RejectReason::CreatedInFuture,
    };
    match e {
        IngestError::Verify(v) | IngestError::Format(SegFileError::Verify(v)) => verify(v),
        IngestError::Format(
            SegFileError::HashMismatch { .. }
            | SegFileError::GroupMismatch(_)
            | SegFileError::BadOutboard(_),
        ) => RejectReason::HashMismatch,
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
        IngestError::Superseded { .. } => RejectReason::Superseded,
        IngestError::Recalled { .. } => RejectReason::Recalled,
        // The chain does not lead from the receiver's root: its signers are not trusted there.
        IngestError::RootRefused { .. } => RejectReason::UntrustedPublisher,
        IngestError::RecallRefused { .. } => RejectReason::Malformed,
    }
}

/// The receiver's half, after the peer's `Offer(manifest)` was read. Every ending is reported
/// to the hooks.
///
/// `forward` is called once, with the segment's id, as soon as it is in flight here (its
/// outboard verified, its groups published): the node's cue to start forwarding it.
pub(crate) async fn receive(
    ctx: &Ctx,
    peer: &NodeId,
    send: &mut SendStream,
    recv: &mut RecvStream,
    manifest: Vec<u8>,
    forward: Option<&(dyn Fn(SegmentId) + Sync)>,
) -> Received {
    let received = receive_offer(ctx, peer, send, recv, manifest, forward).await;
    ctx.hooks.on_offer(peer, received.result());
    received
}

impl Ctx {
    pub(crate) fn observer(&self, peer: &NodeId) -> Observer {
        Observer {
            stats: self.stats.clone(),
            limiter: self.limiter.clone(),
            peer: peer.clone(),
        }
    }
}

/// How a payload read of the receive glue ended.
enum Read<T> {
    Preempted,
    WriterGone,
    Done(T),
}

/// Runs a [`Receiver`] on the streams, the node's takeover table and the store.
async fn receive_offer(
    ctx: &Ctx,
    peer: &NodeId,
    send: &mut SendStream,
    recv: &mut RecvStream,
    manifest: Vec<u8>,
    mut forward: Option<&(dyn Fn(SegmentId) + Sync)>,
) -> Received {
    let params = RecvParams {
        ceiling_bytes: ctx.store.config().ceiling_bytes,
        stall_window: ctx.cfg.stall_timeout(),
        stall_rate_min_bytes_per_s: ctx.cfg.stall_rate_min_bytes_per_s,
    };
    let mode = ctx.cfg.disk_mode;
    let mut m = Receiver::new(ctx.observer(peer), params, &manifest);
    // Declared in this order so they drop in reverse: the store must be free of the ingest
    // before the claim on its id goes.
    let mut claim: Option<Claim> = None;
    let mut seg_id: Option<SegmentId> = None;
    let mut ingest: Option<Box<Ingest>> = None;
    let mut sink: Option<PayloadSink> = None;
    // Bounded: every command either ends the receive or is answered, and the machine asks for
    // reads only while payload is owed under the minimum-rate rule.
    loop {
        let Some(cmd) = m.poll() else {
            // The machine never waits without having asked for something.
            return Received::Failed("receiver stopped without a verdict".into());
        };
        match cmd {
            RecvCmd::Holding(id) => {
                let store = ctx.store.clone();
                let holding = disk::blocking(mode, move || store.holding(&id)).await;
                let held = matches!(
                    holding,
                    Ok(Ok(store::Holding::Stored | store::Holding::Tombstoned))
                );
                m.on_holding(held);
            }
            RecvCmd::Claim(id) => {
                let wait = takeover_wait(&ctx.cfg);
                let below = ctx.cfg.takeover_below_rate_bytes_per_s;
                claim = ctx.receiving.claim(id, peer, wait, below).await;
                m.on_claim(claim.is_some());
            }
            RecvCmd::BeginIngest(signed) => {
                seg_id = Some(signed.id());
                let store = ctx.store.clone();
                let opts = IngestOptions::from_peer(peer.as_str());
                let now = ctx.clock.now_ms();
                let begun =
                    disk::blocking(mode, move || store.begin_ingest(*signed, &opts, now)).await;
                m.on_begun(match begun {
                    Err(e) => Begun::TaskFailed(e.to_string()),
                    Ok(Ok(Begin::Have(_))) => Begun::Have,
                    Ok(Err(IngestError::Busy(_))) => Begun::Busy,
                    Ok(Err(e)) => Begun::Refused(e),
                    Ok(Ok(Begin::Ingest(i))) => {
                        let resume_offset = i.resume_offset();
                        ingest = Some(i);
                        Begun::Ingest { resume_offset }
                    }
                });
            }
            RecvCmd::Write(msg) => {
                let written = write_frame(send, &msg).await.map_err(|e| e.to_string());
                m.on_written(written, Instant::now());
            }
            RecvCmd::Finish => {
                let _ = send.finish();
            }
            RecvCmd::ResetSend(code) => {
                let _ = send.reset(code.varint());
            }
            RecvCmd::StopRecv(code) => {
                let _ = recv.stop(code.varint());
            }
            RecvCmd::StartWriter => {
                if let Some(ingest) = ingest.take() {
                    // Published for forwarding only if there is somewhere to forward it.
                    let publish = forward.is_some()
                        && !ctx
                            .hooks
                            .forward_targets(Some(peer), &ingest.id())
                            .is_empty();
                    let writer = PayloadWriter::new(
                        ingest,
                        ctx.clock.clone(),
                        ctx.hooks.clone(),
                        peer.clone(),
                        ctx.cfg.checkpoint_bytes,
                        publish,
                    );
                    sink = Some(PayloadSink::start(mode, writer));
                }
            }
            RecvCmd::DropIngest => {
                if let Some(ingest) = ingest.take() {
                    drop_blocking(ctx, ingest).await;
                }
            }
            RecvCmd::Read { deadline } => {
                let preempted = async {
                    match &claim {
                        Some(claim) => claim.preempted().await,
                        None => std::future::pending().await,
                    }
                };
                // A writer that failed (a group that did not verify) ends the receive now, not
                // when the next chunk would have been handed to it.
                let gone = sink.as_ref().map(PayloadSink::gone);
                let writer_gone = async {
                    match gone {
                        Some(gone) => gone.await,
                        None => std::future::pending().await,
                    }
                };
                let read = tokio::select! {
                    biased;
                    _ = preempted => Read::Preempted,
                    _ = writer_gone => Read::WriterGone,
                    r = timeout_at(deadline, recv.read(m.read_buf())) => Read::Done(r),
                };
                let now = Instant::now();
                match read {
                    Read::Preempted => m.on_preempted(),
                    Read::WriterGone => m.on_disk_sent(Err(SinkGone), now),
                    Read::Done(Err(_)) => m.on_timer(now),
                    Read::Done(Ok(r)) => m.on_read(read_event(r), now),
                }
            }
            RecvCmd::ReadEnd { deadline } => {
                let mut one = [0u8; 1];
                match timeout_at(deadline, recv.read(&mut one)).await {
                    Err(_) => m.on_timer(Instant::now()),
                    Ok(r) => m.on_read(read_event(r), Instant::now()),
                }
            }
            RecvCmd::ToDisk(step) => {
                let sent = match sink.as_mut() {
                    Some(sink) => sink.send(step).await,
                    None => Err(SinkGone),
                };
                // The writer publishes the segment once it checked the outboard: from then on
                // its verified groups can go on to other peers while the rest arrives.
                if let (Some(id), Some(_)) = (seg_id, forward)
                    && ctx.store.in_flight(&id).is_some()
                    && let Some(forward) = forward.take()
                {
                    forward(id);
                }
                m.on_disk_sent(sent, Instant::now());
            }
            RecvCmd::AwaitWriter => {
                let written = match sink.take() {
                    None => Written::Aborted,
                    Some(sink) => match sink.finish().await {
                        Ok(WriterEnd::Stored(stored)) => Written::Stored(stored.id),
                        Ok(WriterEnd::Failed(e)) => Written::Failed(e),
                        Ok(WriterEnd::Aborted) => Written::Aborted,
                        Err(e) => Written::TaskFailed(e.to_string()),
                    },
                };
                m.on_writer_end(written);
            }
            RecvCmd::PublishRate(rate) => {
                if let Some(claim) = &claim {
                    claim.publish_rate(rate);
                }
            }
            RecvCmd::Done(received) => {
                if let Received::Stored(id) = &received {
                    ctx.hooks.on_received(peer, id);
                }
                return received;
            }
        }
    }
}

fn read_event(r: Result<Option<usize>, quinn::ReadError>) -> ReadEvent {
    match r {
        Ok(Some(n)) => ReadEvent::Data(n),
        Ok(None) => ReadEvent::Finished,
        Err(e) => match read_error(e) {
            WireError::Reset(code) => ReadEvent::Reset(code),
            other => ReadEvent::Lost(other.to_string()),
        },
    }
}

/// How long a second peer offering a segment waits for the one it is received from: a little
/// more than one rate window (so the holder finishes a window and shows its rate), and never
/// more than half the sender's response timeout (so the sender hears an answer in time).
pub(crate) fn takeover_wait(cfg: &NetConfig) -> Duration {
    let window = cfg.stall_timeout();
    (window + window / 4).min(cfg.response_timeout() / 2)
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
