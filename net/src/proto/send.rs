//! The sender's half of a transfer, for a stored segment that is open for reading.
//!
//! ```text
//! Write(Offer) ─▶ ReadFrame ─▶ Have | Busy | Reject ─▶ Finish ─▶ Done
//!                           └▶ Want(offset) ─▶ StartReader ─▶ (NextChunk ─▶ WritePayload*)*
//!   ─▶ CloseReader ─▶ Finish ─▶ ReadFrame ─▶ Ack | Have | Busy | Reject ─▶ Done(SendOutcome)
//! ```
//!
//! Guarantees it keeps: the payload is written only as the disk side hands it over, hashed as
//! read (the prefix skipped by a resume too); a copy that proves corrupt resets the stream with
//! [`StreamCode::LocalCorrupt`] instead of finishing it and is quarantined (INV-24); the bytes
//! the receiver lets through are judged by the minimum-rate rule each window (INV-18); every
//! frame awaited has a deadline.

use std::time::Duration;

use store::SegmentId;
use tokio::time::Instant;

use super::Observer;
use crate::disk::FromDisk;
use crate::rate::{Progress, Stalled};
use crate::transfer::{SendOutcome, bump, conn_outcome};
use crate::warn_limited;
use crate::wire::{Msg, RejectReason, StreamCode, WireError};

/// What the sender needs to know of the node's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendParams {
    /// The longest wait for the receiver's answer to the offer, and for its verdict.
    pub response: Duration,
    /// The window of the minimum-rate rule.
    pub stall_window: Duration,
    pub stall_rate_min_bytes_per_s: u64,
    /// What the sender cannot see of the reader's progress (a step of flow-control credit).
    pub slack: u64,
    /// How long the receiver's reason is awaited after it stopped the stream.
    pub stopped_reason_wait: Duration,
}

/// What the sender asks its glue to do next.
#[derive(Debug)]
pub(crate) enum SendCmd {
    /// Write one frame. Answer with [`Sender::on_written`].
    Write(Msg),
    /// Read one frame until `deadline`. Answer with [`Sender::on_frame`] or
    /// [`Sender::on_timer`].
    ReadFrame { deadline: Instant },
    /// Finish the send side. Answer with [`Sender::on_finished`].
    Finish,
    /// Reset the send side with this code.
    ResetSend(StreamCode),
    /// Stop the receive side with this code.
    StopRecv(StreamCode),
    /// Start reading the stored payload, handing over `[offset, len)` (a
    /// [`crate::disk::PayloadReader`]).
    StartReader { offset: u64 },
    /// The reader's next chunk or end. Answer with [`Sender::on_disk`].
    NextChunk,
    /// Write [`Sender::write_buf`] (or a prefix of it) until `deadline`, the timer of the
    /// minimum-rate rule. Answer with [`Sender::on_payload_written`], [`Sender::on_timer`] or
    /// [`Sender::on_written`] with the error.
    WritePayload { deadline: Instant },
    /// Stop the reader and wait until it (and its eviction lease) is gone.
    CloseReader,
    /// Quarantine the stored segment: its copy is corrupt.
    Quarantine(String),
    /// The send is over.
    Done(SendOutcome),
}

/// Why the payload was not sent whole.
#[derive(Debug)]
enum Stop {
    Stalled(Stalled),
    Write(WireError),
    Corrupt(String),
    Io(String),
}

enum State {
    /// The offer is being written.
    Offering,
    /// Waiting for the answer to the offer.
    Answer,
    /// The payload flows: a chunk is being written, or the next one is awaited.
    Stream(Box<Stream>),
    /// The reader is being closed; then this is judged.
    Closing(Result<(), Stop>),
    /// The receiver stopped the stream; its reason is awaited.
    StoppedReason(u64),
    /// The send side is being finished, then the verdict is awaited.
    Finishing,
    Verdict,
    Done,
}

struct Stream {
    progress: Progress,
    /// Bytes not yet written: the outboard's, then the payload's.
    owed: u64,
    /// Outboard bytes not yet written (they are not payload in the counters).
    outboard_left: u64,
    chunk: Vec<u8>,
    pos: usize,
}

/// The sender's half of one transfer.
pub(crate) struct Sender {
    obs: Observer,
    params: SendParams,
    id: SegmentId,
    payload_len: u64,
    state: State,
    out: std::collections::VecDeque<SendCmd>,
}

impl Sender {
    /// Starts by offering `manifest` (the encoded signed manifest of `id`).
    pub fn new(
        obs: Observer,
        params: SendParams,
        id: SegmentId,
        manifest: Vec<u8>,
        payload_len: u64,
    ) -> Self {
        let mut s = Sender {
            obs,
            params,
            id,
            payload_len,
            state: State::Offering,
            out: Default::default(),
        };
        s.out.push_back(SendCmd::Write(Msg::Offer { manifest }));
        s
    }

    /// The next command; `None` while an answer is awaited, and after `Done`.
    pub fn poll(&mut self) -> Option<SendCmd> {
        self.out.pop_front()
    }

    /// The payload not yet written of the current chunk.
    pub fn write_buf(&self) -> &[u8] {
        match &self.state {
            State::Stream(s) => &s.chunk[s.pos..],
            _ => &[],
        }
    }

    /// A frame was written, or a payload write failed.
    pub fn on_written(&mut self, result: Result<(), WireError>, now: Instant) {
        match (&self.state, result) {
            (State::Offering, Ok(())) => {
                self.state = State::Answer;
                let deadline = now + self.params.response;
                self.out.push_back(SendCmd::ReadFrame { deadline });
            }
            (State::Offering, Err(e)) => self.done(wire_outcome(e)),
            (State::Stream(_), Err(e)) => self.close(Err(Stop::Write(e))),
            _ => {}
        }
    }

    /// A frame arrived (or reading one failed).
    pub fn on_frame(&mut self, frame: Result<Msg, WireError>, now: Instant) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Answer => self.on_answer(frame, now),
            State::StoppedReason(code) => match frame {
                Ok(Msg::Reject { reason, detail }) => self.done(refused(reason, detail)),
                Ok(Msg::Busy) => self.done(SendOutcome::Busy),
                _ => self.stopped_without_reason(code),
            },
            State::Verdict => self.on_verdict(frame),
            other => self.state = other,
        }
    }

    /// The timer of the last `ReadFrame` or `WritePayload` fired.
    pub fn on_timer(&mut self, now: Instant) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Answer => {
                self.end_stream(StreamCode::Stalled);
                self.done(SendOutcome::TimedOut);
            }
            State::StoppedReason(code) => self.stopped_without_reason(code),
            State::Verdict => {
                self.out.push_back(SendCmd::StopRecv(StreamCode::Stalled));
                self.done(SendOutcome::TimedOut);
            }
            State::Stream(s) => {
                self.state = State::Stream(s);
                self.judge(now);
            }
            other => self.state = other,
        }
    }

    /// The reader handed over a chunk or its end (`None`: it stopped without one).
    pub fn on_disk(&mut self, from: Option<FromDisk>) {
        let State::Stream(s) = &mut self.state else {
            return;
        };
        match from {
            Some(FromDisk::Data(chunk)) => {
                s.chunk = chunk;
                s.pos = 0;
                self.next_write();
            }
            Some(FromDisk::Verified) => self.close(Ok(())),
            Some(FromDisk::Corrupt(reason)) => self.close(Err(Stop::Corrupt(reason))),
            Some(FromDisk::Io(e)) => self.close(Err(Stop::Io(e))),
            None => self.close(Err(Stop::Io("disk reader ended early".into()))),
        }
    }

    /// `n` bytes of [`Sender::write_buf`] were written.
    pub fn on_payload_written(&mut self, n: usize, now: Instant) {
        let State::Stream(s) = &mut self.state else {
            return;
        };
        let n = n.min(s.chunk.len() - s.pos);
        s.pos += n;
        s.owed = s.owed.saturating_sub(n as u64);
        s.progress.record(n as u64);
        let payload = crate::wire::past_outboard(&mut s.outboard_left, n as u64);
        bump(&self.obs.stats.payload_bytes_sent, payload);
        self.judge(now);
    }

    /// The reader is gone.
    pub fn on_reader_closed(&mut self, now: Instant) {
        let State::Closing(streamed) = std::mem::replace(&mut self.state, State::Done) else {
            return;
        };
        let (obs, id) = (self.obs.clone(), self.id);
        let peer = &obs.peer;
        match streamed {
            Ok(()) => {
                self.out.push_back(SendCmd::Finish);
                self.state = State::Finishing;
            }
            Err(Stop::Corrupt(reason)) => {
                self.out
                    .push_back(SendCmd::ResetSend(StreamCode::LocalCorrupt));
                tracing::error!(seg_id = %id, reason, "stored copy is corrupt; transfer aborted");
                self.out.push_back(SendCmd::Quarantine(reason.clone()));
                self.done(SendOutcome::LocalCorrupt(reason));
            }
            Err(Stop::Io(e)) => {
                self.end_stream(StreamCode::Internal);
                self.done(SendOutcome::Failed(format!("reading segment {id}: {e}")));
            }
            Err(Stop::Stalled(stalled)) => {
                self.end_stream(StreamCode::Stalled);
                bump(&obs.stats.transfers_stalled, 1);
                warn_limited!(obs.limiter, peer.as_str(), "send_stalled", peer = %peer, seg_id = %id, moved = stalled.moved, required = stalled.required, "transfer stalled: the peer read less than the minimum rate over a window");
                self.done(SendOutcome::TimedOut);
            }
            Err(Stop::Write(WireError::Stopped(code))) => {
                // The receiver ended the stream; it may have said why first.
                self.state = State::StoppedReason(code);
                let deadline = now + self.params.stopped_reason_wait;
                self.out.push_back(SendCmd::ReadFrame { deadline });
            }
            Err(Stop::Write(e)) => self.done(wire_outcome(e)),
        }
    }

    /// The send side was finished (or could not be).
    pub fn on_finished(&mut self, ok: bool, now: Instant) {
        if !matches!(self.state, State::Finishing) {
            return;
        }
        if !ok {
            self.done(SendOutcome::Failed(
                "stream closed before it could be finished".into(),
            ));
            return;
        }
        self.state = State::Verdict;
        let deadline = now + self.params.response;
        self.out.push_back(SendCmd::ReadFrame { deadline });
    }

    fn on_answer(&mut self, frame: Result<Msg, WireError>, now: Instant) {
        let (obs, id, payload_len) = (self.obs.clone(), self.id, self.payload_len);
        let peer = &obs.peer;
        let answer = match frame {
            Err(e) => {
                if let Some(code) = e.stream_code() {
                    self.end_stream(code);
                }
                self.done(wire_outcome(e));
                return;
            }
            Ok(msg) => msg,
        };
        let offset = match answer {
            Msg::Have => return self.finish_with(SendOutcome::Have),
            Msg::Busy => return self.finish_with(SendOutcome::Busy),
            Msg::Reject { reason, detail } => return self.finish_with(refused(reason, detail)),
            Msg::Want { offset } if offset <= payload_len => offset,
            other => {
                self.end_stream(StreamCode::Protocol);
                bump(&obs.stats.streams_failed, 1);
                self.done(SendOutcome::Failed(format!(
                    "peer {peer} answered {} to an offer of {id} (payload {payload_len} bytes)",
                    describe(&other)
                )));
                return;
            }
        };
        if offset > 0 {
            bump(&obs.stats.transfers_resumed, 1);
            tracing::info!(peer = %peer, seg_id = %id, offset, "peer resumes a partial transfer");
        }
        self.out.push_back(SendCmd::StartReader { offset });
        let owed = crate::wire::stream_len(payload_len, offset);
        let progress = Progress::new(
            now,
            self.params.stall_window,
            self.params.stall_rate_min_bytes_per_s,
            self.params.slack,
            owed,
        );
        self.state = State::Stream(Box::new(Stream {
            progress,
            owed,
            outboard_left: store::outboard::outboard_len(payload_len),
            chunk: Vec::new(),
            pos: 0,
        }));
        self.out.push_back(SendCmd::NextChunk);
    }

    fn on_verdict(&mut self, frame: Result<Msg, WireError>) {
        let outcome = match frame {
            Ok(Msg::Ack) => {
                bump(&self.obs.stats.segments_delivered, 1);
                SendOutcome::Delivered
            }
            Ok(Msg::Have) => SendOutcome::Have,
            // Another sender took the segment over (see the takeover rule).
            Ok(Msg::Busy) => SendOutcome::Busy,
            Ok(Msg::Reject { reason, detail }) => refused(reason, detail),
            Ok(other) => {
                self.out.push_back(SendCmd::StopRecv(StreamCode::Protocol));
                SendOutcome::Failed(format!(
                    "peer {} answered {} after the payload",
                    self.obs.peer,
                    other.name()
                ))
            }
            Err(e) => wire_outcome(e),
        };
        self.done(outcome);
    }

    /// After a write or a timer: judge the window, then go on.
    fn judge(&mut self, now: Instant) {
        let State::Stream(s) = &mut self.state else {
            return;
        };
        match s.progress.roll(now, s.owed) {
            Err(stalled) => self.close(Err(Stop::Stalled(stalled))),
            Ok(_) => self.next_write(),
        }
    }

    /// The rest of the chunk, or the next one.
    fn next_write(&mut self) {
        let State::Stream(s) = &self.state else {
            return;
        };
        if s.pos < s.chunk.len() {
            let deadline = s.progress.deadline();
            self.out.push_back(SendCmd::WritePayload { deadline });
        } else {
            self.out.push_back(SendCmd::NextChunk);
        }
    }

    /// The payload is sent (or not): close the reader first, then judge.
    fn close(&mut self, streamed: Result<(), Stop>) {
        self.state = State::Closing(streamed);
        self.out.push_back(SendCmd::CloseReader);
    }

    fn stopped_without_reason(&mut self, code: u64) {
        self.out.push_back(SendCmd::ResetSend(StreamCode::Internal));
        let outcome = if code == StreamCode::Stalled as u64 {
            SendOutcome::TimedOut
        } else if code == StreamCode::Preempted as u64 {
            SendOutcome::Busy
        } else {
            SendOutcome::Failed(format!(
                "peer {} stopped the stream (code {code})",
                self.obs.peer
            ))
        };
        self.done(outcome);
    }

    fn end_stream(&mut self, code: StreamCode) {
        self.out.push_back(SendCmd::ResetSend(code));
        self.out.push_back(SendCmd::StopRecv(code));
    }

    fn finish_with(&mut self, outcome: SendOutcome) {
        self.out.push_back(SendCmd::Finish);
        self.done(outcome);
    }

    fn done(&mut self, outcome: SendOutcome) {
        self.state = State::Done;
        self.out.push_back(SendCmd::Done(outcome));
    }
}

pub(crate) fn wire_outcome(e: WireError) -> SendOutcome {
    match e {
        WireError::ConnectionLost(c) => conn_outcome(&c),
        other => SendOutcome::Failed(other.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testing::{observer, stats};

    const WINDOW: Duration = Duration::from_secs(1);
    const RESPONSE: Duration = Duration::from_secs(3);
    const WAIT: Duration = Duration::from_millis(500);
    const LEN: u64 = 10_000;

    fn params() -> SendParams {
        SendParams {
            response: RESPONSE,
            stall_window: WINDOW,
            stall_rate_min_bytes_per_s: 1000,
            slack: 0,
            stopped_reason_wait: WAIT,
        }
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Drives a sender the way the glue does; the test plays the peer and the disk.
    struct Drive {
        m: Sender,
        log: Vec<String>,
        done: Option<SendOutcome>,
    }

    impl Drive {
        fn new() -> (Drive, Observer) {
            let obs = observer();
            let m = Sender::new(
                obs.clone(),
                params(),
                SegmentId([3; 32]),
                vec![1, 2, 3],
                LEN,
            );
            let log = Vec::new();
            (Drive { m, log, done: None }, obs)
        }

        /// Runs the commands that need no decision from the test; returns the first that does.
        fn run(&mut self, now: Instant) -> Option<SendCmd> {
            // Bounded: each command is answered or ends the send.
            for _ in 0..10_000 {
                match self.m.poll()? {
                    SendCmd::Write(msg) => {
                        self.log.push(format!("write {}", msg.name()));
                        self.m.on_written(Ok(()), now);
                    }
                    SendCmd::Finish => {
                        self.log.push("finish".into());
                        self.m.on_finished(true, now);
                    }
                    SendCmd::ResetSend(c) => self.log.push(format!("reset {c:?}")),
                    SendCmd::StopRecv(c) => self.log.push(format!("stop {c:?}")),
                    SendCmd::StartReader { offset } => self.log.push(format!("read from {offset}")),
                    SendCmd::CloseReader => {
                        self.log.push("close reader".into());
                        self.m.on_reader_closed(now);
                    }
                    SendCmd::Quarantine(_) => self.log.push("quarantine".into()),
                    SendCmd::Done(outcome) => {
                        self.done = Some(outcome);
                        return None;
                    }
                    other => return Some(other),
                }
            }
            panic!("sender did not settle");
        }

        /// Offer written, answered `answer`.
        fn answered(&mut self, answer: Msg, now: Instant) -> Option<SendCmd> {
            let Some(SendCmd::ReadFrame { deadline }) = self.run(now) else {
                panic!("no read of the answer")
            };
            assert_eq!(deadline, now + RESPONSE);
            self.m.on_frame(Ok(answer), now);
            self.run(now)
        }

        /// Hands `chunk` over and lets the peer take `per_write` bytes per write at `now`;
        /// returns the next open command.
        fn stream(&mut self, chunk: Vec<u8>, per_write: usize, now: Instant) -> Option<SendCmd> {
            self.m.on_disk(Some(FromDisk::Data(chunk)));
            let mut next = self.run(now);
            // Bounded by the chunk's length.
            while let Some(SendCmd::WritePayload { .. }) = next {
                let n = self.m.write_buf().len().min(per_write);
                assert!(n > 0);
                self.m.on_payload_written(n, now);
                next = self.run(now);
            }
            next
        }
    }

    #[test]
    fn inv_03_a_happy_send_is_delivered_only_on_the_ack() {
        let (mut d, obs) = Drive::new();
        let t0 = Instant::now();
        let next = d.answered(Msg::Want { offset: 0 }, t0);
        assert!(matches!(next, Some(SendCmd::NextChunk)));
        let next = d.stream(vec![7; 6000], 1000, ms(t0, 100));
        assert!(matches!(next, Some(SendCmd::NextChunk)));
        let next = d.stream(vec![7; 4000], 4000, ms(t0, 200));
        assert!(matches!(next, Some(SendCmd::NextChunk)));
        d.m.on_disk(Some(FromDisk::Verified));
        // The payload is finished, then the verdict is awaited: no outcome yet.
        let Some(SendCmd::ReadFrame { deadline }) = d.run(ms(t0, 200)) else {
            panic!("no verdict awaited")
        };
        assert_eq!(deadline, ms(t0, 200) + RESPONSE);
        assert!(d.done.is_none());
        assert_eq!(
            d.log,
            ["write Offer", "read from 0", "close reader", "finish"]
        );
        d.m.on_frame(Ok(Msg::Ack), ms(t0, 300));
        d.run(ms(t0, 300));
        assert_eq!(d.done, Some(SendOutcome::Delivered));
        let s = stats(&obs);
        assert_eq!((s.segments_delivered, s.payload_bytes_sent), (1, LEN));
        assert_eq!((s.transfers_resumed, s.streams_failed), (0, 0));
    }

    #[test]
    fn inv_03_no_verdict_in_time_is_a_timeout_not_a_delivery() {
        let (mut d, obs) = Drive::new();
        let t0 = Instant::now();
        d.answered(Msg::Want { offset: LEN }, t0);
        d.m.on_disk(Some(FromDisk::Verified));
        let Some(SendCmd::ReadFrame { deadline }) = d.run(t0) else {
            panic!("no verdict awaited")
        };
        d.m.on_timer(deadline);
        d.run(deadline);
        assert_eq!(d.done, Some(SendOutcome::TimedOut));
        assert_eq!(d.log.last().map(String::as_str), Some("stop Stalled"));
        assert_eq!(stats(&obs).segments_delivered, 0);
    }

    #[test]
    fn a_resume_reads_from_the_offset_and_is_counted() {
        let (mut d, obs) = Drive::new();
        let t0 = Instant::now();
        d.answered(Msg::Want { offset: 4000 }, t0);
        assert_eq!(d.log, ["write Offer", "read from 4000"]);
        assert_eq!(stats(&obs).transfers_resumed, 1);
    }

    #[test]
    fn answers_to_an_offer_end_it_with_their_outcome() {
        let t0 = Instant::now();
        let detail = || "why".to_owned();
        for (answer, want) in [
            (Msg::Have, SendOutcome::Have),
            (Msg::Busy, SendOutcome::Busy),
            (
                Msg::Reject {
                    reason: RejectReason::StoreFull,
                    detail: detail(),
                },
                SendOutcome::StoreFull,
            ),
            (
                Msg::Reject {
                    reason: RejectReason::UntrustedPublisher,
                    detail: detail(),
                },
                SendOutcome::Refused {
                    reason: RejectReason::UntrustedPublisher,
                    detail: detail(),
                },
            ),
        ] {
            let (mut d, _) = Drive::new();
            d.answered(answer, t0);
            assert_eq!(d.done, Some(want));
            assert_eq!(d.log, ["write Offer", "finish"]);
        }
    }

    #[test]
    fn inv_17_a_bad_answer_resets_the_stream_with_its_code() {
        let t0 = Instant::now();
        // An offset beyond the payload, or a message out of place: Protocol.
        for answer in [Msg::Want { offset: LEN + 1 }, Msg::Ack] {
            let (mut d, obs) = Drive::new();
            d.answered(answer, t0);
            assert!(
                matches!(d.done, Some(SendOutcome::Failed(_))),
                "{:?}",
                d.done
            );
            assert_eq!(d.log, ["write Offer", "reset Protocol", "stop Protocol"]);
            assert_eq!(stats(&obs).streams_failed, 1);
        }
        // A frame too large: its own code.
        let (mut d, _) = Drive::new();
        let Some(SendCmd::ReadFrame { .. }) = d.run(t0) else {
            panic!("no read of the answer")
        };
        d.m.on_frame(
            Err(WireError::FrameTooLarge {
                len: 1 << 20,
                max: 1 << 16,
            }),
            t0,
        );
        d.run(t0);
        assert_eq!(
            d.log,
            ["write Offer", "reset FrameTooLarge", "stop FrameTooLarge"]
        );
    }

    #[test]
    fn inv_18_no_answer_to_the_offer_in_time_is_a_stall() {
        let (mut d, _) = Drive::new();
        let t0 = Instant::now();
        let Some(SendCmd::ReadFrame { deadline }) = d.run(t0) else {
            panic!("no read of the answer")
        };
        d.m.on_timer(deadline);
        d.run(deadline);
        assert_eq!(d.done, Some(SendOutcome::TimedOut));
        assert_eq!(d.log, ["write Offer", "reset Stalled", "stop Stalled"]);
    }

    #[test]
    fn inv_18_a_reader_too_slow_for_the_minimum_rate_is_cut_at_the_window() {
        let (mut d, obs) = Drive::new();
        let t0 = Instant::now();
        d.answered(Msg::Want { offset: 0 }, t0);
        // The peer lets 10 bytes through, then nothing: 1000 were required in the window.
        d.m.on_disk(Some(FromDisk::Data(vec![7; 5000])));
        let Some(SendCmd::WritePayload { deadline }) = d.run(t0) else {
            panic!("no write")
        };
        assert_eq!(deadline, t0 + WINDOW);
        d.m.on_payload_written(10, ms(t0, 10));
        assert!(matches!(
            d.run(ms(t0, 10)),
            Some(SendCmd::WritePayload { .. })
        ));
        d.m.on_timer(deadline);
        d.run(deadline);
        assert_eq!(d.done, Some(SendOutcome::TimedOut));
        assert!(d.log.ends_with(&[
            "close reader".into(),
            "reset Stalled".into(),
            "stop Stalled".into()
        ]));
        let s = stats(&obs);
        assert_eq!((s.transfers_stalled, s.payload_bytes_sent), (1, 10));
    }

    #[test]
    fn inv_24_a_corrupt_copy_resets_instead_of_finishing_and_is_quarantined() {
        let (mut d, _) = Drive::new();
        let t0 = Instant::now();
        d.answered(Msg::Want { offset: 0 }, t0);
        d.stream(vec![7; 5000], 5000, t0);
        d.m.on_disk(Some(FromDisk::Corrupt("payload hash mismatch".into())));
        d.run(t0);
        assert_eq!(
            d.done,
            Some(SendOutcome::LocalCorrupt("payload hash mismatch".into()))
        );
        assert_eq!(
            d.log,
            [
                "write Offer",
                "read from 0",
                "close reader",
                "reset LocalCorrupt",
                "quarantine"
            ]
        );
    }

    #[test]
    fn a_receiver_that_stops_the_stream_is_heard_out() {
        let t0 = Instant::now();
        // It said why: that is the outcome.
        let (mut d, _) = Drive::new();
        d.answered(Msg::Want { offset: 0 }, t0);
        d.m.on_disk(Some(FromDisk::Data(vec![7; 5000])));
        d.run(t0);
        d.m.on_written(
            Err(WireError::Stopped(StreamCode::PayloadTooLong as u64)),
            t0,
        );
        let Some(SendCmd::ReadFrame { deadline }) = d.run(t0) else {
            panic!("the reason is not awaited")
        };
        assert_eq!(deadline, t0 + WAIT);
        let reject = Msg::Reject {
            reason: RejectReason::HashMismatch,
            detail: "bad".into(),
        };
        d.m.on_frame(Ok(reject), t0);
        d.run(t0);
        assert_eq!(
            d.done,
            Some(SendOutcome::Refused {
                reason: RejectReason::HashMismatch,
                detail: "bad".into()
            })
        );
        // It did not: its code tells (a takeover is Busy, no attempt counted).
        let (mut d, _) = Drive::new();
        d.answered(Msg::Want { offset: 0 }, t0);
        d.m.on_disk(Some(FromDisk::Data(vec![7; 5000])));
        d.run(t0);
        d.m.on_written(Err(WireError::Stopped(StreamCode::Preempted as u64)), t0);
        let Some(SendCmd::ReadFrame { deadline }) = d.run(t0) else {
            panic!("the reason is not awaited")
        };
        d.m.on_timer(deadline);
        d.run(deadline);
        assert_eq!(d.done, Some(SendOutcome::Busy));
        assert_eq!(d.log.last().map(String::as_str), Some("reset Internal"));
    }
}
