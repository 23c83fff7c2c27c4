//! The receiver's half of a transfer, after the peer's `Offer(manifest)` was read.
//!
//! ```text
//! decode, bound ─▶ Holding? ─▶ Claim ─▶ BeginIngest ─▶ Write(Want) ─▶ StartWriter
//!   ─▶ (Read ─▶ ToDisk(chunk))* ─▶ ReadEnd ─▶ ToDisk(End | Abort | Discard) ─▶ AwaitWriter
//!   ─▶ Write(Ack | Reject | Busy), Finish / Reset / Stop ─▶ Done(Received)
//! ```
//!
//! Guarantees it keeps: `Ack` only after the writer reported the segment stored, i.e. after
//! `Ingest::finish` returned (INV-03, INV-11); a byte beyond the declared length, a stream that
//! ends early, a stall or a reset ends the stream with its code and keeps what arrived as a
//! resumable partial (INV-17, INV-18), except after the sender's `LocalCorrupt`, when what
//! arrived is discarded (INV-24); the payload moves in chunks of at most
//! [`PAYLOAD_CHUNK_BYTES`], each handed to the disk side before the next is read (INV-20).

use std::collections::VecDeque;
use std::time::Duration;

use store::manifest::SignedManifest;
use store::{IngestError, SegmentId};
use tokio::time::Instant;

use super::Observer;
use crate::disk::{SinkGone, ToDisk};
use crate::limits::PAYLOAD_CHUNK_BYTES;
use crate::rate::{Progress, Stalled};
use crate::transfer::{Received, bump, ingest_reason};
use crate::wire::{Msg, RejectReason, StreamCode};
use crate::{info_limited, warn_limited};

/// What the receiver needs to know of the node's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecvParams {
    /// The store's ceiling: a segment whose file is larger can never be stored.
    pub ceiling_bytes: u64,
    /// The window of the minimum-rate rule, also the longest wait for the end of the stream.
    pub stall_window: Duration,
    pub stall_rate_min_bytes_per_s: u64,
}

/// What the receiver asks its glue to do next.
#[derive(Debug)]
pub(crate) enum RecvCmd {
    /// Is the segment stored or tombstoned here? Answer with [`Receiver::on_holding`].
    Holding(SegmentId),
    /// Claim the id in the node's takeover table. Answer with [`Receiver::on_claim`]; keep the
    /// claim until `Done`, and report its preemption during `Read`.
    Claim(SegmentId),
    /// Begin the store's ingest of this manifest. Answer with [`Receiver::on_begun`]; keep the
    /// ingest for `StartWriter` or `DropIngest`.
    BeginIngest(Box<SignedManifest>),
    /// Write one frame. Answer with [`Receiver::on_written`].
    Write(Msg),
    /// Finish the send side.
    Finish,
    /// Reset the send side with this code.
    ResetSend(StreamCode),
    /// Stop the receive side with this code.
    StopRecv(StreamCode),
    /// Hand the ingest to a disk writer (a [`crate::disk::PayloadWriter`]).
    StartWriter,
    /// Drop the ingest on the disk side (its drop may remove files).
    DropIngest,
    /// Read payload bytes into [`Receiver::read_buf`] until `deadline` (the timer of the
    /// minimum-rate rule), watching the claim for preemption. Answer with
    /// [`Receiver::on_read`], [`Receiver::on_timer`] or [`Receiver::on_preempted`].
    Read { deadline: Instant },
    /// Every declared byte arrived: the stream must end by `deadline`. Read at most one byte
    /// and answer with [`Receiver::on_read`] or [`Receiver::on_timer`].
    ReadEnd { deadline: Instant },
    /// Hand one step to the disk writer. Answer with [`Receiver::on_disk_sent`].
    ToDisk(ToDisk),
    /// Wait for the disk writer's end. Answer with [`Receiver::on_writer_end`].
    AwaitWriter,
    /// Publish the rate of the window that just ended to the claim (the takeover rule).
    PublishRate(u64),
    /// The receive is over (the glue reports a stored segment to the node's hooks).
    Done(Received),
}

/// What a read of the stream gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadEvent {
    /// `n > 0` bytes were read into [`Receiver::read_buf`] (for `ReadEnd`: any byte).
    Data(usize),
    /// The peer finished the stream.
    Finished,
    /// The peer reset the stream with this code.
    Reset(u64),
    /// The connection is gone, or another read error.
    Lost(String),
}

/// What beginning the ingest gave.
#[derive(Debug)]
pub(crate) enum Begun {
    /// Receive from `resume_offset`.
    Ingest { resume_offset: u64 },
    /// Stored (or evicted) meanwhile.
    Have,
    /// The store is ingesting it from elsewhere.
    Busy,
    /// The store refused it.
    Refused(IngestError),
    /// The store call itself failed (its task panicked).
    TaskFailed(String),
}

/// How the disk writer ended.
#[derive(Debug)]
pub(crate) enum Written {
    Stored(SegmentId),
    Failed(IngestError),
    Aborted,
    TaskFailed(String),
}

/// Why the payload did not arrive whole.
#[derive(Debug, Clone, PartialEq, Eq)]
enum InFail {
    Stalled(Stalled),
    Preempted,
    Truncated { got: u64 },
    TooLong,
    Reset(u64),
    Lost(String),
    WriterGone,
}

enum State {
    /// Waiting for an answer to a store call or the claim.
    Holding(Box<SignedManifest>),
    Claiming(Box<SignedManifest>),
    Beginning,
    /// `Want(offset)` is being written.
    Wanting {
        offset: u64,
    },
    /// The payload flows.
    Pump(Box<Pump>),
    /// The pump ended with this; waiting for the writer.
    Writing {
        pumped: Result<(), InFail>,
        acked_early: bool,
    },
    Done,
}

struct Pump {
    progress: Progress,
    /// Outboard bytes not yet received (they are not payload in the counters).
    outboard_left: u64,
    /// Payload bytes not yet in a complete chunk.
    remaining: u64,
    /// Payload bytes in complete chunks.
    got: u64,
    /// The chunk being filled, of its final size.
    buf: Vec<u8>,
    filled: usize,
    /// Mutation point (INV-20): complete chunks held until the last byte arrived.
    held: VecDeque<Vec<u8>>,
    buffer_payload: bool,
    /// A chunk was handed to the disk; with `Some`, it was the partial chunk of a failure.
    failing: Option<InFail>,
    /// Every byte arrived; the end of the stream is awaited.
    at_end: bool,
}

/// The receiver's half of one transfer.
pub(crate) struct Receiver {
    obs: Observer,
    params: RecvParams,
    id: Option<SegmentId>,
    payload_len: u64,
    /// Where the payload resumed (known once `Want` was sent).
    offset: u64,
    state: State,
    out: VecDeque<RecvCmd>,
}

impl Receiver {
    /// Starts with the encoded manifest of the peer's `Offer`.
    pub fn new(obs: Observer, params: RecvParams, manifest: &[u8]) -> Self {
        let mut r = Receiver {
            obs,
            params,
            id: None,
            payload_len: 0,
            offset: 0,
            state: State::Done,
            out: VecDeque::new(),
        };
        let signed = match SignedManifest::decode(manifest) {
            Ok(s) => s,
            Err(e) => {
                r.reject(RejectReason::Malformed, e.to_string());
                return r;
            }
        };
        r.id = Some(signed.id());
        r.payload_len = signed.manifest().payload_len;
        let file_len =
            store::limits::SEG_PREAMBLE_BYTES + signed.encoded_len() as u64 + r.payload_len;
        let ceiling = params.ceiling_bytes;
        if file_len > ceiling {
            let detail =
                format!("segment of {file_len} bytes can never fit under a ceiling of {ceiling}");
            r.reject(RejectReason::TooLarge, detail);
            return r;
        }
        r.out.push_back(RecvCmd::Holding(signed.id()));
        r.state = State::Holding(Box::new(signed));
        r
    }

    /// The next command; `None` while an answer is awaited, and after `Done`.
    pub fn poll(&mut self) -> Option<RecvCmd> {
        self.out.pop_front()
    }

    /// Where a `Read` puts its bytes: the rest of the chunk being filled.
    pub fn read_buf(&mut self) -> &mut [u8] {
        match &mut self.state {
            State::Pump(p) if !p.at_end => {
                let filled = p.filled;
                &mut p.buf[filled..]
            }
            _ => &mut [],
        }
    }

    pub fn on_holding(&mut self, held: bool) {
        let State::Holding(signed) = std::mem::replace(&mut self.state, State::Done) else {
            return;
        };
        if held {
            // Held (or evicted) already: "have", without waiting for anyone's claim.
            self.answer(Msg::Have, Received::Had);
        } else {
            self.out.push_back(RecvCmd::Claim(signed.id()));
            self.state = State::Claiming(signed);
        }
    }

    pub fn on_claim(&mut self, claimed: bool) {
        let State::Claiming(signed) = std::mem::replace(&mut self.state, State::Done) else {
            return;
        };
        if claimed {
            self.out.push_back(RecvCmd::BeginIngest(signed));
            self.state = State::Beginning;
        } else {
            self.answer(Msg::Busy, Received::Busy);
        }
    }

    pub fn on_begun(&mut self, begun: Begun) {
        if !matches!(self.state, State::Beginning) {
            return;
        }
        self.state = State::Done;
        match begun {
            Begun::TaskFailed(e) => self.reject(RejectReason::Internal, e),
            Begun::Have => self.answer(Msg::Have, Received::Had),
            // Being imported, or received outside this node's table: the store decides.
            Begun::Busy => self.answer(Msg::Busy, Received::Busy),
            Begun::Refused(e) => {
                let reason = ingest_reason(&e);
                let (obs, id) = (&self.obs, self.id());
                let peer = &obs.peer;
                if matches!(
                    reason,
                    RejectReason::BadSignature | RejectReason::UntrustedPublisher
                ) {
                    warn_limited!(obs.limiter, peer.as_str(), "offer_refused", peer = %peer, seg_id = %id, %reason, error = %e, "offer refused");
                } else {
                    info_limited!(obs.limiter, peer.as_str(), "offer_refused", peer = %peer, seg_id = %id, %reason, error = %e, "offer refused");
                }
                self.reject(reason, e.to_string());
            }
            Begun::Ingest { resume_offset } => {
                self.out.push_back(RecvCmd::Write(Msg::Want {
                    offset: resume_offset,
                }));
                self.state = State::Wanting {
                    offset: resume_offset,
                };
            }
        }
    }

    /// A frame was written (or not). Only the `Want` depends on it.
    pub fn on_written(&mut self, result: Result<(), String>, now: Instant) {
        let State::Wanting { offset } = self.state else {
            return;
        };
        if let Err(e) = result {
            self.out.push_back(RecvCmd::DropIngest);
            self.done(Received::Failed(e));
            return;
        }
        self.out.push_back(RecvCmd::StartWriter);
        self.offset = offset;
        let remaining = crate::wire::stream_len(self.payload_len, offset);
        let progress = Progress::new(
            now,
            self.params.stall_window,
            self.params.stall_rate_min_bytes_per_s,
            0,
            remaining,
        );
        let pump = Pump {
            progress,
            outboard_left: store::outboard::outboard_len(self.payload_len),
            remaining,
            got: 0,
            buf: Vec::new(),
            filled: 0,
            held: VecDeque::new(),
            buffer_payload: store::mutants::active("buffer_payload"),
            failing: None,
            at_end: false,
        };
        self.state = State::Pump(Box::new(pump));
        self.advance(now);
    }

    /// A read gave `ev`.
    pub fn on_read(&mut self, ev: ReadEvent, now: Instant) {
        let State::Pump(p) = &mut self.state else {
            return;
        };
        if p.failing.is_some() {
            return;
        }
        if p.at_end {
            let ended = match ev {
                ReadEvent::Finished => Ok(()),
                ReadEvent::Data(_) => Err(InFail::TooLong),
                ReadEvent::Reset(code) => Err(InFail::Reset(code)),
                ReadEvent::Lost(e) => Err(InFail::Lost(e)),
            };
            self.end_pump(ended);
            return;
        }
        let read = match ev {
            ReadEvent::Data(n) => {
                let n = n.min(p.buf.len() - p.filled);
                p.filled += n;
                p.progress.record(n as u64);
                Ok(())
            }
            ReadEvent::Finished => Err(InFail::Truncated {
                got: p.got + p.filled as u64,
            }),
            ReadEvent::Reset(code) => Err(InFail::Reset(code)),
            ReadEvent::Lost(e) => Err(InFail::Lost(e)),
        };
        match read {
            Ok(()) => self.judge(now),
            Err(fail) => self.fail_pump(fail),
        }
    }

    /// The timer of the last `Read` or `ReadEnd` fired.
    pub fn on_timer(&mut self, now: Instant) {
        let State::Pump(p) = &mut self.state else {
            return;
        };
        if p.failing.is_some() {
            return;
        }
        if p.at_end {
            self.end_pump(Err(InFail::Stalled(Stalled {
                moved: 0,
                required: 0,
            })));
            return;
        }
        self.judge(now);
    }

    /// A waiter took the segment over (see [`crate::takeover`]).
    pub fn on_preempted(&mut self) {
        if matches!(&self.state, State::Pump(p) if p.failing.is_none() && !p.at_end) {
            self.fail_pump(InFail::Preempted);
        }
    }

    /// The disk writer took the last `ToDisk` (or is gone).
    pub fn on_disk_sent(&mut self, sent: Result<(), SinkGone>, now: Instant) {
        let State::Pump(p) = &mut self.state else {
            // The verdict step's own result does not matter: the writer's end tells.
            return;
        };
        if let Some(fail) = p.failing.take() {
            self.end_pump(Err(fail));
            return;
        }
        if sent.is_err() {
            self.end_pump(Err(InFail::WriterGone));
            return;
        }
        self.advance(now);
    }

    /// The disk writer ended.
    pub fn on_writer_end(&mut self, written: Written) {
        let State::Writing {
            pumped,
            acked_early,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return;
        };
        let (obs, id, payload_len) = (self.obs.clone(), self.id(), self.payload_len);
        let (peer, offset) = (&obs.peer, self.offset);
        match (pumped, written) {
            (_, Written::Failed(e)) => {
                let reason = ingest_reason(&e);
                warn_limited!(obs.limiter, peer.as_str(), "not_stored", peer = %peer, seg_id = %id, %reason, error = %e, "segment not stored");
                self.out.push_back(RecvCmd::StopRecv(StreamCode::Internal));
                self.reject(reason, e.to_string());
            }
            (_, Written::TaskFailed(e)) => {
                self.out.push_back(RecvCmd::StopRecv(StreamCode::Internal));
                self.reject(RejectReason::Internal, e);
            }
            (Ok(()), Written::Stored(stored)) => {
                bump(&obs.stats.segments_stored, 1);
                if !acked_early {
                    self.out.push_back(RecvCmd::Write(Msg::Ack));
                }
                self.out.push_back(RecvCmd::Finish);
                tracing::info!(peer = %peer, seg_id = %stored, bytes = payload_len, offset, "segment received");
                self.done(Received::Stored(stored));
            }
            (Ok(()), Written::Aborted) => {
                self.done(Received::Failed("disk writer stopped early".into()))
            }
            (Err(InFail::Preempted), _) => {
                // Not the peer's fault: a faster peer offered the same segment.
                bump(&obs.stats.transfers_preempted, 1);
                self.out.push_back(RecvCmd::Write(Msg::Busy));
                self.out.push_back(RecvCmd::Finish);
                self.out.push_back(RecvCmd::StopRecv(StreamCode::Preempted));
                info_limited!(obs.limiter, peer.as_str(), "preempted", peer = %peer, seg_id = %id, "transfer handed to a faster peer; partial kept for it");
                self.done(Received::Preempted);
            }
            (Err(fail), _) => {
                bump(&obs.stats.streams_failed, 1);
                self.failed(fail);
            }
        }
    }

    /// The segment's id (the manifest decoded, or nothing was asked of the glue).
    fn id(&self) -> SegmentId {
        self.id.unwrap_or(SegmentId([0; 32]))
    }

    fn failed(&mut self, fail: InFail) {
        let (obs, id, payload_len) = (self.obs.clone(), self.id(), self.payload_len);
        let peer = &obs.peer;
        match fail {
            InFail::Stalled(stalled) => {
                self.out.push_back(RecvCmd::ResetSend(StreamCode::Stalled));
                self.out.push_back(RecvCmd::StopRecv(StreamCode::Stalled));
                bump(&obs.stats.transfers_stalled, 1);
                warn_limited!(obs.limiter, peer.as_str(), "receive_stalled", peer = %peer, seg_id = %id, moved = stalled.moved, required = stalled.required, "transfer stalled: less than the minimum rate over a window; partial kept for resume");
                self.done(Received::TimedOut);
            }
            InFail::Preempted => self.done(Received::Preempted),
            InFail::TooLong => {
                self.out
                    .push_back(RecvCmd::StopRecv(StreamCode::PayloadTooLong));
                let detail = format!("more than the {payload_len} payload bytes declared");
                warn_limited!(obs.limiter, peer.as_str(), "payload_too_long", peer = %peer, seg_id = %id, "payload longer than declared");
                self.reject(RejectReason::LengthMismatch, detail);
            }
            InFail::Truncated { got } => {
                let detail = format!("stream ended after {got} of {payload_len} payload bytes");
                warn_limited!(obs.limiter, peer.as_str(), "payload_truncated", peer = %peer, seg_id = %id, got, "payload truncated");
                self.reject(RejectReason::LengthMismatch, detail);
            }
            InFail::Reset(code) => {
                self.out.push_back(RecvCmd::ResetSend(StreamCode::Protocol));
                let why = if is_local_corrupt(code) {
                    "its stored copy is corrupt; what arrived is discarded".to_owned()
                } else {
                    format!("code {code}")
                };
                warn_limited!(obs.limiter, peer.as_str(), "sender_aborted", peer = %peer, seg_id = %id, why, "sender aborted the transfer");
                self.done(Received::Failed(format!("sender aborted: {why}")));
            }
            InFail::Lost(e) => self.done(Received::Failed(e)),
            InFail::WriterGone => self.done(Received::Failed("disk writer stopped".into())),
        }
    }

    /// After a read or a timer: judge the window, then go on.
    fn judge(&mut self, now: Instant) {
        let State::Pump(p) = &mut self.state else {
            return;
        };
        let owed = p.remaining - p.filled as u64;
        match p.progress.roll(now, owed) {
            Err(stalled) => self.fail_pump(InFail::Stalled(stalled)),
            Ok(rate) => {
                if let Some(rate) = rate {
                    self.out.push_back(RecvCmd::PublishRate(rate));
                }
                self.advance(now);
            }
        }
    }

    /// The next step of the pump: hand over a full chunk, start the next, or await the end.
    fn advance(&mut self, now: Instant) {
        let State::Pump(p) = &mut self.state else {
            return;
        };
        if !p.buf.is_empty() && p.filled == p.buf.len() {
            let want = p.buf.len() as u64;
            let chunk = std::mem::take(&mut p.buf);
            p.filled = 0;
            p.remaining -= want;
            p.got += want;
            let payload = crate::wire::past_outboard(&mut p.outboard_left, want);
            bump(&self.obs.stats.payload_bytes_received, payload);
            if p.buffer_payload {
                p.held.push_back(chunk);
            } else {
                self.out.push_back(RecvCmd::ToDisk(ToDisk::Data(chunk)));
                return;
            }
        }
        if p.remaining > 0 {
            if p.buf.is_empty() {
                // The outboard fills chunks of its own, so payload chunks end where the
                // sender's groups do: a pause upstream leaves no verified group held back here.
                let limit = match p.outboard_left {
                    0 => p.remaining,
                    left => left,
                };
                // Cannot truncate: at most PAYLOAD_CHUNK_BYTES.
                let want = limit.min(PAYLOAD_CHUNK_BYTES as u64) as usize;
                p.buf = vec![0u8; want];
            }
            let deadline = p.progress.deadline();
            self.out.push_back(RecvCmd::Read { deadline });
        } else if let Some(chunk) = p.held.pop_front() {
            self.out.push_back(RecvCmd::ToDisk(ToDisk::Data(chunk)));
        } else {
            p.at_end = true;
            let deadline = now + self.params.stall_window;
            self.out.push_back(RecvCmd::ReadEnd { deadline });
        }
    }

    /// The payload failed mid-chunk: hand over what did arrive, so the checkpoint of the cut
    /// transfer includes it, then end.
    fn fail_pump(&mut self, fail: InFail) {
        let State::Pump(p) = &mut self.state else {
            return;
        };
        if p.filled > 0 {
            let mut chunk = std::mem::take(&mut p.buf);
            chunk.truncate(p.filled);
            let payload = crate::wire::past_outboard(&mut p.outboard_left, p.filled as u64);
            bump(&self.obs.stats.payload_bytes_received, payload);
            p.filled = 0;
            p.failing = Some(fail);
            self.out.push_back(RecvCmd::ToDisk(ToDisk::Data(chunk)));
            return;
        }
        self.end_pump(Err(fail));
    }

    /// The payload is in (or not): the verdict step for the disk, then wait for it.
    fn end_pump(&mut self, pumped: Result<(), InFail>) {
        if !matches!(self.state, State::Pump(_)) {
            return;
        }
        // Mutation point (INV-03): the sender hears "stored" once the bytes are in, before
        // the disk side verified, synced and committed them.
        let acked_early = pumped.is_ok() && store::mutants::active("ack_before_commit");
        if acked_early {
            self.out.push_back(RecvCmd::Write(Msg::Ack));
        }
        let to_disk = match &pumped {
            Ok(()) => ToDisk::End,
            Err(InFail::Reset(code)) if is_local_corrupt(*code) => ToDisk::Discard,
            Err(_) => ToDisk::Abort,
        };
        // The writer may have stopped already (a disk error): then this step fails, which is
        // fine — its end tells why.
        self.out.push_back(RecvCmd::ToDisk(to_disk));
        self.out.push_back(RecvCmd::AwaitWriter);
        self.state = State::Writing {
            pumped,
            acked_early,
        };
    }

    /// Answers `msg`, finishes, and ends with `received`.
    fn answer(&mut self, msg: Msg, received: Received) {
        self.out.push_back(RecvCmd::Write(msg));
        self.out.push_back(RecvCmd::Finish);
        self.done(received);
    }

    fn reject(&mut self, reason: RejectReason, detail: String) {
        if matches!(
            reason,
            RejectReason::HashMismatch | RejectReason::LengthMismatch | RejectReason::Protocol
        ) {
            bump(&self.obs.stats.streams_failed, 1);
        }
        self.answer(Msg::reject(reason, detail), Received::Rejected(reason));
    }

    fn done(&mut self, received: Received) {
        self.state = State::Done;
        self.out.push_back(RecvCmd::Done(received));
    }
}

/// The sender reset the stream because its own stored copy failed verification.
pub(crate) fn is_local_corrupt(code: u64) -> bool {
    StreamCode::from_varint(quinn::VarInt::from_u64(code).unwrap_or(quinn::VarInt::MAX))
        == Some(StreamCode::LocalCorrupt)
}

#[cfg(test)]
mod tests {
    use store::segfile::SegFileError;

    use super::*;
    use crate::proto::testing::{manifest_of, observer, payload, stats};

    const WINDOW: Duration = Duration::from_secs(1);
    const RATE: u64 = 1000;

    fn params() -> RecvParams {
        RecvParams {
            ceiling_bytes: 1 << 30,
            stall_window: WINDOW,
            stall_rate_min_bytes_per_s: RATE,
        }
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Drives a receiver the way the glue does, recording what it asked for. The disk and the
    /// store are played by the test; the disk writer "stores" only when told `End`.
    struct Drive {
        m: Receiver,
        /// Frames written, stream operations and disk steps, in order.
        log: Vec<String>,
        /// Payload handed to the disk writer.
        on_disk: Vec<u8>,
        done: Option<Received>,
    }

    impl Drive {
        fn new(manifest: &SignedManifest) -> (Drive, Observer) {
            let obs = observer();
            let m = Receiver::new(obs.clone(), params(), &manifest.encode());
            let d = Drive {
                m,
                log: Vec::new(),
                on_disk: Vec::new(),
                done: None,
            };
            (d, obs)
        }

        /// Runs every command that needs no decision from the test; stops at the first one that
        /// does (returned) or at `Done`.
        fn run(&mut self, now: Instant) -> Option<RecvCmd> {
            // Bounded: each command is answered or ends the receive.
            for _ in 0..10_000 {
                let cmd = self.m.poll()?;
                match cmd {
                    RecvCmd::Write(msg) => {
                        self.log.push(format!("write {}", msg.name()));
                        self.m.on_written(Ok(()), now);
                    }
                    RecvCmd::Finish => self.log.push("finish".into()),
                    RecvCmd::ResetSend(c) => self.log.push(format!("reset {c:?}")),
                    RecvCmd::StopRecv(c) => self.log.push(format!("stop {c:?}")),
                    RecvCmd::StartWriter => self.log.push("start writer".into()),
                    RecvCmd::DropIngest => self.log.push("drop ingest".into()),
                    RecvCmd::PublishRate(r) => self.log.push(format!("rate {r}")),
                    RecvCmd::ToDisk(ToDisk::Data(chunk)) => {
                        assert!(chunk.len() <= PAYLOAD_CHUNK_BYTES);
                        self.on_disk.extend_from_slice(&chunk);
                        self.m.on_disk_sent(Ok(()), now);
                    }
                    RecvCmd::ToDisk(step) => {
                        self.log.push(format!("disk {step:?}"));
                        self.m.on_disk_sent(Ok(()), now);
                    }
                    RecvCmd::Done(r) => {
                        self.done = Some(r);
                        return None;
                    }
                    other => return Some(other),
                }
            }
            panic!("receiver did not settle");
        }

        /// Feeds `bytes` through as many reads as it takes (while the receiver has room for
        /// them); returns the open command after the last one.
        fn feed(&mut self, mut bytes: &[u8], now: Instant) -> Option<RecvCmd> {
            let mut next = None;
            while !bytes.is_empty() {
                let buf = self.m.read_buf();
                if buf.is_empty() {
                    break;
                }
                let n = buf.len().min(bytes.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                self.m.on_read(ReadEvent::Data(n), now);
                next = self.run(now);
            }
            next
        }

        /// Offer accepted: holding (no), claim (yes), ingest from `offset`.
        fn accept(&mut self, offset: u64, now: Instant) -> Option<RecvCmd> {
            assert!(matches!(self.run(now), Some(RecvCmd::Holding(_))));
            self.m.on_holding(false);
            assert!(matches!(self.run(now), Some(RecvCmd::Claim(_))));
            self.m.on_claim(true);
            assert!(matches!(self.run(now), Some(RecvCmd::BeginIngest(_))));
            self.m.on_begun(Begun::Ingest {
                resume_offset: offset,
            });
            self.run(now)
        }
    }

    #[test]
    fn inv_03_a_happy_receive_acks_only_after_the_writer_stored_it() {
        let data = payload(3 * PAYLOAD_CHUNK_BYTES + 17);
        let signed = manifest_of(&data);
        let (mut d, obs) = Drive::new(&signed);
        let t0 = Instant::now();
        d.accept(0, t0);
        assert_eq!(d.log, ["write Want", "start writer"]);
        let next = d.feed(&data, t0);
        assert!(matches!(next, Some(RecvCmd::ReadEnd { .. })), "{next:?}");
        d.m.on_read(ReadEvent::Finished, t0);
        assert!(matches!(d.run(t0), Some(RecvCmd::AwaitWriter)));
        // The whole payload went to the disk, the verdict too — and no Ack yet.
        assert_eq!(d.on_disk, data);
        assert_eq!(d.log.last().map(String::as_str), Some("disk End"));
        assert!(!d.log.iter().any(|l| l == "write Ack"));
        d.m.on_writer_end(Written::Stored(signed.id()));
        assert!(d.run(t0).is_none());
        assert_eq!(d.done, Some(Received::Stored(signed.id())));
        assert_eq!(&d.log[d.log.len() - 2..], ["write Ack", "finish"]);
        let s = stats(&obs);
        assert_eq!(s.segments_stored, 1);
        assert_eq!(s.payload_bytes_received, data.len() as u64);
        assert_eq!(s.streams_failed, 0);
    }

    #[test]
    fn inv_03_a_failed_commit_is_refused_never_acked() {
        let data = payload(1000);
        let signed = manifest_of(&data);
        let (mut d, _) = Drive::new(&signed);
        let t0 = Instant::now();
        d.accept(0, t0);
        d.feed(&data, t0);
        d.m.on_read(ReadEvent::Finished, t0);
        assert!(matches!(d.run(t0), Some(RecvCmd::AwaitWriter)));
        d.m.on_writer_end(Written::Failed(IngestError::Format(
            SegFileError::HashMismatch {
                expected: [1; 32],
                actual: [2; 32],
            },
        )));
        d.run(t0);
        assert_eq!(d.done, Some(Received::Rejected(RejectReason::HashMismatch)));
        assert!(!d.log.iter().any(|l| l == "write Ack"));
        assert!(d.log.iter().any(|l| l == "stop Internal"));
    }

    #[test]
    fn a_resume_asks_for_the_rest_only() {
        let data = payload(2 * PAYLOAD_CHUNK_BYTES);
        let signed = manifest_of(&data);
        let (mut d, obs) = Drive::new(&signed);
        let t0 = Instant::now();
        let offset = PAYLOAD_CHUNK_BYTES as u64 + 5;
        d.accept(offset, t0);
        let next = d.feed(&data[offset as usize..], t0);
        assert!(matches!(next, Some(RecvCmd::ReadEnd { .. })));
        assert_eq!(d.on_disk, &data[offset as usize..]);
        assert_eq!(
            stats(&obs).payload_bytes_received,
            data.len() as u64 - offset
        );
    }

    #[test]
    fn held_busy_and_refused_offers_are_answered_and_finished() {
        let signed = manifest_of(&payload(10));
        let t0 = Instant::now();
        // Held already.
        let (mut d, _) = Drive::new(&signed);
        d.run(t0);
        d.m.on_holding(true);
        d.run(t0);
        assert_eq!(d.log, ["write Have", "finish"]);
        assert_eq!(d.done, Some(Received::Had));
        // Someone else holds the claim.
        let (mut d, _) = Drive::new(&signed);
        d.run(t0);
        d.m.on_holding(false);
        d.run(t0);
        d.m.on_claim(false);
        d.run(t0);
        assert_eq!(d.log, ["write Busy", "finish"]);
        assert_eq!(d.done, Some(Received::Busy));
        // The store refuses it: the reason goes to the sender, nothing is counted as a failed
        // stream (the peer did nothing wrong on the wire).
        let (mut d, obs) = Drive::new(&signed);
        d.run(t0);
        d.m.on_holding(false);
        d.run(t0);
        d.m.on_claim(true);
        d.run(t0);
        d.m.on_begun(Begun::Refused(IngestError::StoreFull {
            needed_bytes: 10,
            available_bytes: 0,
        }));
        d.run(t0);
        assert_eq!(d.done, Some(Received::Rejected(RejectReason::StoreFull)));
        assert_eq!(d.log, ["write Reject", "finish"]);
        assert_eq!(stats(&obs).streams_failed, 0);
    }

    #[test]
    fn inv_17_a_malformed_or_oversized_offer_is_refused_before_any_store_call() {
        let obs = observer();
        let mut m = Receiver::new(obs.clone(), params(), b"not a manifest");
        let cmds: Vec<RecvCmd> = std::iter::from_fn(|| m.poll()).collect();
        assert!(
            matches!(
                &cmds[..],
                [
                    RecvCmd::Write(Msg::Reject {
                        reason: RejectReason::Malformed,
                        ..
                    }),
                    RecvCmd::Finish,
                    RecvCmd::Done(Received::Rejected(RejectReason::Malformed))
                ]
            ),
            "{cmds:?}"
        );
        let signed = manifest_of(&payload(5000));
        let small = RecvParams {
            ceiling_bytes: 4096,
            ..params()
        };
        let mut m = Receiver::new(obs, small, &signed.encode());
        let cmds: Vec<RecvCmd> = std::iter::from_fn(|| m.poll()).collect();
        assert!(
            matches!(
                cmds.last(),
                Some(RecvCmd::Done(Received::Rejected(RejectReason::TooLarge)))
            ),
            "{cmds:?}"
        );
    }

    #[test]
    fn inv_17_a_byte_beyond_the_declared_length_stops_the_stream_and_is_refused() {
        let data = payload(100);
        let signed = manifest_of(&data);
        let (mut d, obs) = Drive::new(&signed);
        let t0 = Instant::now();
        d.accept(0, t0);
        assert!(matches!(d.feed(&data, t0), Some(RecvCmd::ReadEnd { .. })));
        d.m.on_read(ReadEvent::Data(1), t0);
        assert!(matches!(d.run(t0), Some(RecvCmd::AwaitWriter)));
        // The bytes that arrived are kept for a resume, not committed.
        assert_eq!(d.log.last().map(String::as_str), Some("disk Abort"));
        d.m.on_writer_end(Written::Aborted);
        d.run(t0);
        assert_eq!(
            d.done,
            Some(Received::Rejected(RejectReason::LengthMismatch))
        );
        assert!(d.log.iter().any(|l| l == "stop PayloadTooLong"));
        assert!(!d.log.iter().any(|l| l == "write Ack"));
        // Counted as a failed stream and again as a length mismatch, as it always was.
        assert_eq!(stats(&obs).streams_failed, 2);
    }

    #[test]
    fn inv_17_a_stream_that_ends_early_is_a_length_mismatch() {
        let data = payload(PAYLOAD_CHUNK_BYTES + 100);
        let signed = manifest_of(&data);
        let (mut d, _) = Drive::new(&signed);
        let t0 = Instant::now();
        d.accept(0, t0);
        let next = d.feed(&data[..PAYLOAD_CHUNK_BYTES + 10], t0);
        assert!(matches!(next, Some(RecvCmd::Read { .. })));
        d.m.on_read(ReadEvent::Finished, t0);
        d.run(t0);
        // The partial chunk went to the disk before the verdict (it is kept for a resume).
        assert_eq!(d.on_disk.len(), PAYLOAD_CHUNK_BYTES + 10);
        assert_eq!(d.log.last().map(String::as_str), Some("disk Abort"));
        d.m.on_writer_end(Written::Aborted);
        d.run(t0);
        assert_eq!(
            d.done,
            Some(Received::Rejected(RejectReason::LengthMismatch))
        );
    }

    #[test]
    fn inv_18_a_trickle_is_cut_at_the_end_of_a_window_and_its_bytes_kept() {
        let data = payload(10_000);
        let signed = manifest_of(&data);
        let (mut d, obs) = Drive::new(&signed);
        let t0 = Instant::now();
        d.accept(0, t0);
        // 10 bytes in the first window; RATE × WINDOW = 1000 are required.
        let next = d.feed(&data[..10], ms(t0, 300));
        let Some(RecvCmd::Read { deadline }) = next else {
            panic!("{next:?}")
        };
        assert_eq!(deadline, t0 + WINDOW);
        d.m.on_timer(deadline);
        assert!(matches!(d.run(deadline), Some(RecvCmd::AwaitWriter)));
        assert_eq!(d.on_disk, &data[..10]);
        assert_eq!(d.log.last().map(String::as_str), Some("disk Abort"));
        d.m.on_writer_end(Written::Aborted);
        d.run(deadline);
        assert_eq!(d.done, Some(Received::TimedOut));
        assert!(d.log.iter().any(|l| l == "reset Stalled"));
        assert!(d.log.iter().any(|l| l == "stop Stalled"));
        let s = stats(&obs);
        assert_eq!((s.transfers_stalled, s.streams_failed), (1, 1));
    }

    #[test]
    fn inv_18_a_steady_sender_passes_its_windows_and_publishes_their_rate() {
        let data = payload(5000);
        let signed = manifest_of(&data);
        let (mut d, _) = Drive::new(&signed);
        let t0 = Instant::now();
        d.accept(0, t0);
        for w in 0..4u64 {
            let next = d.feed(
                &data[w as usize * 1000..(w as usize + 1) * 1000],
                ms(t0, w * 1000 + 500),
            );
            let Some(RecvCmd::Read { deadline }) = next else {
                panic!("{next:?}")
            };
            d.m.on_timer(deadline);
            assert!(matches!(d.run(deadline), Some(RecvCmd::Read { .. })));
        }
        assert!(matches!(
            d.feed(&data[4000..], ms(t0, 4500)),
            Some(RecvCmd::ReadEnd { .. })
        ));
        assert_eq!(d.log.iter().filter(|l| *l == "rate 1000").count(), 4);
        assert!(d.done.is_none());
    }

    #[test]
    fn inv_18_the_end_of_the_stream_is_awaited_one_window_at_most() {
        let data = payload(10);
        let signed = manifest_of(&data);
        let (mut d, _) = Drive::new(&signed);
        let t0 = Instant::now();
        d.accept(0, t0);
        let Some(RecvCmd::ReadEnd { deadline }) = d.feed(&data, ms(t0, 100)) else {
            panic!("no ReadEnd")
        };
        assert_eq!(deadline, ms(t0, 100) + WINDOW);
        d.m.on_timer(deadline);
        d.run(deadline);
        d.m.on_writer_end(Written::Aborted);
        d.run(deadline);
        assert_eq!(d.done, Some(Received::TimedOut));
    }

    #[test]
    fn inv_18_a_preempted_receive_answers_busy_and_keeps_its_partial() {
        let data = payload(PAYLOAD_CHUNK_BYTES * 2);
        let signed = manifest_of(&data);
        let (mut d, obs) = Drive::new(&signed);
        let t0 = Instant::now();
        d.accept(0, t0);
        d.feed(&data[..PAYLOAD_CHUNK_BYTES + 3], t0);
        d.m.on_preempted();
        d.run(t0);
        assert_eq!(d.on_disk.len(), PAYLOAD_CHUNK_BYTES + 3);
        assert_eq!(d.log.last().map(String::as_str), Some("disk Abort"));
        d.m.on_writer_end(Written::Aborted);
        d.run(t0);
        assert_eq!(d.done, Some(Received::Preempted));
        assert!(d.log.ends_with(&[
            "write Busy".into(),
            "finish".into(),
            "stop Preempted".into()
        ]));
        let s = stats(&obs);
        assert_eq!((s.transfers_preempted, s.streams_failed), (1, 0));
    }

    #[test]
    fn inv_24_a_sender_aborting_as_corrupt_gets_its_bytes_discarded() {
        let data = payload(1000);
        let signed = manifest_of(&data);
        let (mut d, _) = Drive::new(&signed);
        let t0 = Instant::now();
        d.accept(0, t0);
        d.feed(&data[..500], t0);
        d.m.on_read(ReadEvent::Reset(StreamCode::LocalCorrupt as u64), t0);
        d.run(t0);
        assert_eq!(d.log.last().map(String::as_str), Some("disk Discard"));
        d.m.on_writer_end(Written::Aborted);
        d.run(t0);
        assert!(matches!(d.done, Some(Received::Failed(_))));
        assert!(d.log.iter().any(|l| l == "reset Protocol"));
    }

    #[test]
    fn inv_20_the_payload_moves_in_bounded_chunks_one_at_a_time() {
        let payload = payload(8 * PAYLOAD_CHUNK_BYTES + 1);
        let signed = manifest_of(&payload);
        // What the sender streams: the outboard, then the payload.
        let mut hasher = store::outboard::GroupHasher::new(payload.len() as u64);
        hasher.update(&payload).unwrap();
        let mut data = hasher.finish().unwrap().1.to_bytes();
        assert!(!data.is_empty() && data.len() < PAYLOAD_CHUNK_BYTES);
        data.extend_from_slice(&payload);
        let (mut d, _) = Drive::new(&signed);
        let t0 = Instant::now();
        let mut next = d.accept(0, t0);
        // Each Read offers at most one chunk's room, and a full chunk is handed to the disk
        // before the next read is asked for.
        let mut reads = 0;
        let mut pos = 0;
        while let Some(RecvCmd::Read { .. }) = next {
            reads += 1;
            assert!(reads <= 100);
            let buf = d.m.read_buf();
            assert!(!buf.is_empty() && buf.len() <= PAYLOAD_CHUNK_BYTES);
            let n = buf.len();
            buf.copy_from_slice(&data[pos..pos + n]);
            pos += n;
            d.m.on_read(ReadEvent::Data(n), t0);
            assert_eq!(
                d.m.poll().map(|c| matches!(c, RecvCmd::ToDisk(_))),
                Some(true)
            );
            d.on_disk.extend_from_slice(&data[pos - n..pos]);
            d.m.on_disk_sent(Ok(()), t0);
            next = d.run(t0);
        }
        // The outboard in a chunk of its own, then 8 full chunks and 1 byte.
        assert_eq!(reads, 10);
        assert!(matches!(next, Some(RecvCmd::ReadEnd { .. })));
    }

    #[test]
    fn a_failed_want_drops_the_ingest() {
        let signed = manifest_of(&payload(10));
        let (mut d, _) = Drive::new(&signed);
        let t0 = Instant::now();
        d.run(t0);
        d.m.on_holding(false);
        d.run(t0);
        d.m.on_claim(true);
        d.run(t0);
        d.m.on_begun(Begun::Ingest { resume_offset: 0 });
        assert!(matches!(
            d.m.poll(),
            Some(RecvCmd::Write(Msg::Want { offset: 0 }))
        ));
        d.m.on_written(Err("connection lost".into()), t0);
        d.run(t0);
        assert_eq!(d.log, ["drop ingest"]);
        assert_eq!(d.done, Some(Received::Failed("connection lost".into())));
    }
}
