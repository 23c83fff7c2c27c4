//! The server's half of catch-up: answering a peer's `DigestRequest`, `PageRequest` or
//! `Pull(id)` on the stream it opened.
//!
//! A digest and a page are one store call and one frame each (a page is at most
//! [`CATCHUP_PAGE_IDS_MAX`] ids, whatever the store holds: INV-17); a pull is the normal
//! sender's half ([`super::send`]) for that segment, or `NotHeld` when this node cannot serve
//! it (not stored, expired, quarantined, untrusted), and a delivery reported to the node's
//! hooks so the relay completes its job for that peer (INV-15).

use std::collections::VecDeque;

use store::SegmentId;

use super::Observer;
use crate::limits::CATCHUP_PAGE_IDS_MAX;
use crate::transfer::SendOutcome;
use crate::warn_limited;
use crate::wire::{Msg, StreamCode};

/// What the peer asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServeReq {
    Digest,
    Page { after: Option<[u8; 32]> },
    Pull(SegmentId),
}

/// What the server asks its glue to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServeCmd {
    /// This node's held digest. Answer with [`Server::on_held_digest`].
    HeldDigest,
    /// Up to `limit` held ids after `after`, sorted. Answer with [`Server::on_held_ids`].
    HeldIdsAfter {
        after: Option<SegmentId>,
        limit: usize,
    },
    /// Open the segment for sending. Answer with [`Server::on_opened`].
    OpenForRead(SegmentId),
    /// Write one frame (its failure changes nothing).
    Write(Msg),
    Finish,
    ResetSend(StreamCode),
    /// Run the sender's half with the opened segment. Answer with [`Server::on_sent`].
    Send,
    /// The puller holds the segment now: tell the node's hooks.
    Delivered(SegmentId),
    Done,
}

/// The server's half of one catch-up exchange.
pub(crate) struct Server {
    obs: Observer,
    req: ServeReq,
    out: VecDeque<ServeCmd>,
}

impl Server {
    pub fn new(obs: Observer, req: ServeReq) -> Self {
        let first = match req {
            ServeReq::Digest => ServeCmd::HeldDigest,
            ServeReq::Page { after } => ServeCmd::HeldIdsAfter {
                after: after.map(SegmentId),
                // One more than a page: tells whether more follow.
                limit: CATCHUP_PAGE_IDS_MAX + 1,
            },
            ServeReq::Pull(id) => ServeCmd::OpenForRead(id),
        };
        Server {
            obs,
            req,
            out: VecDeque::from([first]),
        }
    }

    /// The next command; `None` while an answer is awaited, and after `Done`.
    pub fn poll(&mut self) -> Option<ServeCmd> {
        self.out.pop_front()
    }

    /// The held digest (`None`: the store failed).
    pub fn on_held_digest(&mut self, digest: Option<(u64, [u8; 32])>) {
        match digest {
            Some((count, hash)) => self.answer(Msg::Digest { count, hash }),
            None => self.internal(),
        }
    }

    /// Held ids after the page's start (`None`: the store failed).
    pub fn on_held_ids(&mut self, ids: Option<Vec<SegmentId>>) {
        let Some(mut ids) = ids else {
            return self.internal();
        };
        let more = ids.len() > CATCHUP_PAGE_IDS_MAX;
        ids.truncate(CATCHUP_PAGE_IDS_MAX);
        let ids = ids.into_iter().map(|id| id.0).collect();
        self.answer(Msg::Page { ids, more });
    }

    /// The pulled segment is open for sending, or why not.
    pub fn on_opened(&mut self, opened: Result<(), SendOutcome>) {
        let ServeReq::Pull(id) = self.req else {
            return;
        };
        match opened {
            Ok(()) => self.out.push_back(ServeCmd::Send),
            Err(outcome) => {
                if !matches!(outcome, SendOutcome::NotStored | SendOutcome::Expired) {
                    let peer = &self.obs.peer;
                    warn_limited!(self.obs.limiter, peer.as_str(), "pull_refused_here", peer = %peer, seg_id = %id, outcome = %outcome, "catch-up: cannot serve a pulled segment");
                }
                self.answer(Msg::NotHeld);
            }
        }
    }

    /// The sender's half ended with `outcome`.
    pub fn on_sent(&mut self, outcome: SendOutcome) {
        let ServeReq::Pull(id) = self.req else {
            return;
        };
        tracing::debug!(peer = %self.obs.peer, seg_id = %id, ?outcome, "catch-up: served a pull");
        if outcome.is_delivered() {
            self.out.push_back(ServeCmd::Delivered(id));
        }
        self.out.push_back(ServeCmd::Done);
    }

    fn answer(&mut self, msg: Msg) {
        self.out.push_back(ServeCmd::Write(msg));
        self.out.push_back(ServeCmd::Finish);
        self.out.push_back(ServeCmd::Done);
    }

    fn internal(&mut self) {
        self.out
            .push_back(ServeCmd::ResetSend(StreamCode::Internal));
        self.out.push_back(ServeCmd::Done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testing::observer;

    fn cmds(s: &mut Server) -> Vec<ServeCmd> {
        std::iter::from_fn(|| s.poll()).collect()
    }

    #[test]
    fn a_digest_is_answered_or_the_stream_reset() {
        let mut s = Server::new(observer(), ServeReq::Digest);
        assert_eq!(cmds(&mut s), [ServeCmd::HeldDigest]);
        s.on_held_digest(Some((3, [7; 32])));
        assert_eq!(
            cmds(&mut s),
            [
                ServeCmd::Write(Msg::Digest {
                    count: 3,
                    hash: [7; 32]
                }),
                ServeCmd::Finish,
                ServeCmd::Done
            ]
        );
        let mut s = Server::new(observer(), ServeReq::Digest);
        cmds(&mut s);
        s.on_held_digest(None);
        assert_eq!(
            cmds(&mut s),
            [ServeCmd::ResetSend(StreamCode::Internal), ServeCmd::Done]
        );
    }

    #[test]
    fn inv_17_a_page_is_at_most_the_bound_and_says_whether_more_follow() {
        let ids = |n: usize| -> Vec<SegmentId> {
            (0..n)
                .map(|i| {
                    let mut x = [0u8; 32];
                    x[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    SegmentId(x)
                })
                .collect()
        };
        for (held, len, more) in [
            (0, 0, false),
            (CATCHUP_PAGE_IDS_MAX, CATCHUP_PAGE_IDS_MAX, false),
            (CATCHUP_PAGE_IDS_MAX + 1, CATCHUP_PAGE_IDS_MAX, true),
        ] {
            let mut s = Server::new(
                observer(),
                ServeReq::Page {
                    after: Some([0; 32]),
                },
            );
            assert_eq!(
                cmds(&mut s),
                [ServeCmd::HeldIdsAfter {
                    after: Some(SegmentId([0; 32])),
                    limit: CATCHUP_PAGE_IDS_MAX + 1
                }]
            );
            s.on_held_ids(Some(ids(held)));
            let out = cmds(&mut s);
            let Some(ServeCmd::Write(Msg::Page { ids, more: m })) = out.first() else {
                panic!("{out:?}")
            };
            assert_eq!((ids.len(), *m), (len, more));
        }
    }

    #[test]
    fn inv_15_a_pull_is_sent_and_its_delivery_reported_or_answered_not_held() {
        let id = SegmentId([4; 32]);
        let mut s = Server::new(observer(), ServeReq::Pull(id));
        assert_eq!(cmds(&mut s), [ServeCmd::OpenForRead(id)]);
        s.on_opened(Ok(()));
        assert_eq!(cmds(&mut s), [ServeCmd::Send]);
        s.on_sent(SendOutcome::Have);
        assert_eq!(cmds(&mut s), [ServeCmd::Delivered(id), ServeCmd::Done]);
        // Not delivered: nothing reported.
        let mut s = Server::new(observer(), ServeReq::Pull(id));
        cmds(&mut s);
        s.on_opened(Ok(()));
        cmds(&mut s);
        s.on_sent(SendOutcome::TimedOut);
        assert_eq!(cmds(&mut s), [ServeCmd::Done]);
        // Not servable here.
        for why in [
            SendOutcome::NotStored,
            SendOutcome::Expired,
            SendOutcome::LocalCorrupt("bad".into()),
        ] {
            let mut s = Server::new(observer(), ServeReq::Pull(id));
            cmds(&mut s);
            s.on_opened(Err(why));
            assert_eq!(
                cmds(&mut s),
                [
                    ServeCmd::Write(Msg::NotHeld),
                    ServeCmd::Finish,
                    ServeCmd::Done
                ]
            );
        }
    }
}
