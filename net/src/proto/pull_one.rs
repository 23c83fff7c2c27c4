//! One pull of a catch-up round, on a stream of its own: `→ Pull(id)`, then `← Offer` and the
//! receiver's half ([`super::receive`]), or `← NotHeld`.
//!
//! The offer must be of the segment asked for, checked before anything is reserved for it; a
//! bad or missing answer ends the stream with its code (INV-17, INV-18).

use std::collections::VecDeque;
use std::time::Duration;

use store::SegmentId;
use store::manifest::SignedManifest;
use tokio::time::Instant;

use super::Observer;
use super::pull::Pulled;
use crate::transfer::{Received, bump};
use crate::warn_limited;
use crate::wire::{Msg, StreamCode, WireError};

/// What a pull asks its glue to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PullOneCmd {
    /// Open a stream by `deadline`. Answer with [`PullOne::on_opened`].
    OpenStream {
        deadline: Instant,
    },
    /// Write one frame. Answer with [`PullOne::on_written`].
    Write(Msg),
    /// Read one frame by `deadline`. Answer with [`PullOne::on_frame`] or
    /// [`PullOne::on_timer`].
    ReadFrame {
        deadline: Instant,
    },
    Finish,
    ResetSend(StreamCode),
    StopRecv(StreamCode),
    /// Run the receiver's half with this offered manifest. Answer with
    /// [`PullOne::on_received`].
    Receive(Vec<u8>),
    Done(Pulled),
}

/// One pull.
pub(crate) struct PullOne {
    obs: Observer,
    id: SegmentId,
    response: Duration,
    out: VecDeque<PullOneCmd>,
}

impl PullOne {
    /// Starts pulling `id`; `response` bounds opening the stream and the first answer.
    pub fn new(obs: Observer, id: SegmentId, response: Duration, now: Instant) -> Self {
        bump(&obs.stats.catchup_pulls, 1);
        let first = PullOneCmd::OpenStream {
            deadline: now + response,
        };
        PullOne {
            obs,
            id,
            response,
            out: VecDeque::from([first]),
        }
    }

    /// The next command; `None` while an answer is awaited, and after `Done`.
    pub fn poll(&mut self) -> Option<PullOneCmd> {
        self.out.pop_front()
    }

    pub fn on_opened(&mut self, opened: bool) {
        if opened {
            self.out
                .push_back(PullOneCmd::Write(Msg::Pull { id: self.id.0 }));
        } else {
            self.failed("cannot open a stream".into());
        }
    }

    pub fn on_written(&mut self, written: Result<(), String>, now: Instant) {
        match written {
            Ok(()) => self.out.push_back(PullOneCmd::ReadFrame {
                deadline: now + self.response,
            }),
            Err(e) => self.failed(e),
        }
    }

    pub fn on_frame(&mut self, frame: Result<Msg, WireError>) {
        match frame {
            Ok(Msg::Offer { manifest }) => {
                // It must be the segment asked for, before anything is reserved for it.
                match SignedManifest::decode(&manifest) {
                    Ok(signed) if signed.id() == self.id => {
                        self.out.push_back(PullOneCmd::Receive(manifest));
                    }
                    _ => {
                        self.end_stream(StreamCode::Protocol);
                        bump(&self.obs.stats.streams_failed, 1);
                        let (peer, id) = (&self.obs.peer, self.id);
                        warn_limited!(self.obs.limiter, peer.as_str(), "pull_mismatch", peer = %peer, seg_id = %id, "catch-up: peer offered another segment than the one pulled");
                        self.failed("peer offered another segment".into());
                    }
                }
            }
            Ok(Msg::NotHeld) => {
                self.out.push_back(PullOneCmd::Finish);
                self.out.push_back(PullOneCmd::Done(Pulled::NotHeld));
            }
            Ok(other) => {
                self.end_stream(StreamCode::Protocol);
                self.failed(format!("peer answered {} to Pull", other.name()));
            }
            Err(e) => {
                self.end_stream(e.stream_code().unwrap_or(StreamCode::Stalled));
                self.failed(e.to_string());
            }
        }
    }

    /// No answer by the deadline.
    pub fn on_timer(&mut self) {
        self.end_stream(StreamCode::Stalled);
        self.failed("no answer to Pull in time".into());
    }

    pub fn on_received(&mut self, received: Received) {
        self.out.push_back(PullOneCmd::Done(Pulled::Got(received)));
    }

    fn end_stream(&mut self, code: StreamCode) {
        self.out.push_back(PullOneCmd::ResetSend(code));
        self.out.push_back(PullOneCmd::StopRecv(code));
    }

    fn failed(&mut self, e: String) {
        self.out
            .push_back(PullOneCmd::Done(Pulled::Got(Received::Failed(e))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testing::{manifest_of, observer, payload, stats};

    const RESPONSE: Duration = Duration::from_secs(3);

    fn cmds(p: &mut PullOne) -> Vec<PullOneCmd> {
        std::iter::from_fn(|| p.poll()).collect()
    }

    /// A pull of `signed` up to its first answer.
    fn asked(signed: &SignedManifest, t0: Instant) -> (PullOne, Observer) {
        let obs = observer();
        let mut p = PullOne::new(obs.clone(), signed.id(), RESPONSE, t0);
        assert_eq!(
            cmds(&mut p),
            [PullOneCmd::OpenStream {
                deadline: t0 + RESPONSE
            }]
        );
        p.on_opened(true);
        assert_eq!(
            cmds(&mut p),
            [PullOneCmd::Write(Msg::Pull { id: signed.id().0 })]
        );
        p.on_written(Ok(()), t0);
        assert_eq!(
            cmds(&mut p),
            [PullOneCmd::ReadFrame {
                deadline: t0 + RESPONSE
            }]
        );
        (p, obs)
    }

    #[test]
    fn inv_15_the_offer_of_the_pulled_segment_is_received() {
        let signed = manifest_of(&payload(100));
        let t0 = Instant::now();
        let (mut p, obs) = asked(&signed, t0);
        p.on_frame(Ok(Msg::Offer {
            manifest: signed.encode(),
        }));
        assert_eq!(cmds(&mut p), [PullOneCmd::Receive(signed.encode())]);
        p.on_received(Received::Stored(signed.id()));
        assert_eq!(
            cmds(&mut p),
            [PullOneCmd::Done(Pulled::Got(Received::Stored(signed.id())))]
        );
        assert_eq!(stats(&obs).catchup_pulls, 1);
    }

    #[test]
    fn inv_17_an_offer_of_another_segment_is_refused_before_any_receive() {
        let signed = manifest_of(&payload(100));
        let other = manifest_of(&payload(200));
        let t0 = Instant::now();
        let (mut p, obs) = asked(&signed, t0);
        p.on_frame(Ok(Msg::Offer {
            manifest: other.encode(),
        }));
        let out = cmds(&mut p);
        assert_eq!(
            out[..2],
            [
                PullOneCmd::ResetSend(StreamCode::Protocol),
                PullOneCmd::StopRecv(StreamCode::Protocol)
            ]
        );
        assert!(matches!(
            out[2],
            PullOneCmd::Done(Pulled::Got(Received::Failed(_)))
        ));
        assert_eq!(stats(&obs).streams_failed, 1);
    }

    #[test]
    fn not_held_bad_and_missing_answers() {
        let signed = manifest_of(&payload(100));
        let t0 = Instant::now();
        let (mut p, _) = asked(&signed, t0);
        p.on_frame(Ok(Msg::NotHeld));
        assert_eq!(
            cmds(&mut p),
            [PullOneCmd::Finish, PullOneCmd::Done(Pulled::NotHeld)]
        );
        let (mut p, _) = asked(&signed, t0);
        p.on_frame(Err(WireError::FrameTooLarge {
            len: 1 << 20,
            max: 1 << 16,
        }));
        assert_eq!(
            cmds(&mut p)[..2],
            [
                PullOneCmd::ResetSend(StreamCode::FrameTooLarge),
                PullOneCmd::StopRecv(StreamCode::FrameTooLarge)
            ]
        );
        let (mut p, _) = asked(&signed, t0);
        p.on_timer();
        assert_eq!(
            cmds(&mut p),
            [
                PullOneCmd::ResetSend(StreamCode::Stalled),
                PullOneCmd::StopRecv(StreamCode::Stalled),
                PullOneCmd::Done(Pulled::Got(Received::Failed(
                    "no answer to Pull in time".into()
                )))
            ]
        );
    }
}
