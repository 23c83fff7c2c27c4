//! The puller's half of catch-up: one round with one peer, under the bounds of
//! [`crate::catchup`].
//!
//! ```text
//! Request(DigestRequest) ─▶ HeldDigest ─▶ equal: Done(in sync)
//!   └▶ (Request(PageRequest) ─▶ Lacking(ids) ─▶ per id: Reap, AwaitPull while full, StartPull)*
//!   ─▶ AwaitPull until none runs ─▶ Done(CatchupReport)
//! ```
//!
//! The pulls themselves run concurrently in the glue (each a receive on a stream of its own);
//! the round only decides which to start, and tallies how they ended. A round reads at most
//! `pages_max` pages, starts at most `pulls_max` pulls and `concurrent` at a time, takes one
//! token of the peer's bucket per pull (a stored segment gives it back), and ends at the first
//! `NotHeld` (INV-15, INV-18).

use std::collections::VecDeque;

use store::SegmentId;
use tokio::time::Instant;

use super::Observer;
use crate::catchup::{CatchupReport, PeerCatchup, RoundCut, SkipSet, check_page};
use crate::info_limited;
use crate::transfer::Received;
use crate::wire::Msg;

/// The bounds of a round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoundParams {
    pub pages_max: usize,
    pub pulls_max: usize,
    pub concurrent: usize,
}

/// How one pull ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pulled {
    /// The peer offered it and the receive ended so.
    Got(Received),
    /// The peer answered `NotHeld` for an id it listed.
    NotHeld,
}

/// What the round asks its glue to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PullCmd {
    /// One request/answer exchange on a new stream. Answer with [`Round::on_reply`].
    Request(Msg),
    /// This node's held digest. Answer with [`Round::on_held_digest`].
    HeldDigest,
    /// Which of these ids this node neither stores nor tombstoned. Answer with
    /// [`Round::on_lacking`].
    Lacking(Vec<SegmentId>),
    /// Report every pull that already ended ([`Round::on_pull_done`]), then
    /// [`Round::on_reaped`].
    Reap,
    /// Wait for one running pull to end. Answer with [`Round::on_pull_done`].
    AwaitPull,
    /// Start pulling this id (runs concurrently; report its end when asked).
    StartPull(SegmentId),
    /// The round is over.
    Done(Result<CatchupReport, String>),
}

/// Where the current candidate id of a page stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cand {
    /// Tally what already ended first.
    Reap,
    /// Wait while `concurrent` pulls run.
    Wait,
    /// Apply the bounds, then start it.
    Decide,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Digest,
    Held {
        count: u64,
        hash: [u8; 32],
    },
    Page,
    Lacking,
    /// Deciding on the page's candidates; an answer to `Reap` or `AwaitPull` is awaited.
    Reaping,
    AwaitingSlot,
    /// No more pulls start; the running ones are awaited.
    Draining,
    Done,
}

/// One catch-up round as the puller.
pub(crate) struct Round<'a> {
    obs: Observer,
    params: RoundParams,
    state: &'a mut PeerCatchup,
    skip: &'a SkipSet,
    report: CatchupReport,
    phase: Phase,
    /// The page requested last starts after this id.
    after: Option<[u8; 32]>,
    /// Of the page being worked through: its last id and whether more follow.
    page_end: (Option<[u8; 32]>, bool),
    candidates: VecDeque<SegmentId>,
    cand: Cand,
    running: usize,
    out: VecDeque<PullCmd>,
}

impl<'a> Round<'a> {
    pub fn new(
        obs: Observer,
        params: RoundParams,
        state: &'a mut PeerCatchup,
        skip: &'a SkipSet,
    ) -> Self {
        let mut out = VecDeque::new();
        out.push_back(PullCmd::Request(Msg::DigestRequest));
        Round {
            obs,
            params,
            state,
            skip,
            report: CatchupReport::default(),
            phase: Phase::Digest,
            after: None,
            page_end: (None, false),
            candidates: VecDeque::new(),
            cand: Cand::Reap,
            running: 0,
            out,
        }
    }

    /// The next command; `None` while an answer is awaited, and after `Done`.
    pub fn poll(&mut self) -> Option<PullCmd> {
        self.out.pop_front()
    }

    /// The answer to the last `Request`.
    pub fn on_reply(&mut self, reply: Result<Msg, String>) {
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => return self.fail(e),
        };
        match (self.phase, reply) {
            (Phase::Digest, Msg::Digest { count, hash }) => {
                self.phase = Phase::Held { count, hash };
                self.out.push_back(PullCmd::HeldDigest);
            }
            (Phase::Digest, other) => {
                self.fail(format!("peer answered {} to DigestRequest", other.name()))
            }
            (Phase::Page, Msg::Page { ids, more }) => {
                if let Err(e) = check_page(&ids, self.after.as_ref()) {
                    return self.fail(e);
                }
                self.report.pages += 1;
                self.report.ids_seen += ids.len() as u64;
                self.page_end = (ids.last().copied(), more);
                self.phase = Phase::Lacking;
                self.out
                    .push_back(PullCmd::Lacking(ids.into_iter().map(SegmentId).collect()));
            }
            (Phase::Page, other) => {
                self.fail(format!("peer answered {} to PageRequest", other.name()))
            }
            _ => {}
        }
    }

    /// This node's held digest (count, hash).
    pub fn on_held_digest(&mut self, mine: Result<(u64, [u8; 32]), String>) {
        let Phase::Held { count, hash } = self.phase else {
            return;
        };
        let mine = match mine {
            Ok(mine) => mine,
            Err(e) => return self.fail(e),
        };
        // Mutation point (INV-15): the receiving side never pulls; digests are taken as equal.
        if mine == (count, hash) || store::mutants::active("no_catchup_pulls") {
            self.report.in_sync = true;
            self.state.cursor = None;
            return self.finish();
        }
        self.after = self.state.cursor.take();
        self.next_page();
    }

    /// The ids of the page this node lacks.
    pub fn on_lacking(&mut self, lacking: Result<Vec<SegmentId>, String>, now: Instant) {
        if self.phase != Phase::Lacking {
            return;
        }
        let lacking = match lacking {
            Ok(l) => l,
            Err(e) => return self.fail(e),
        };
        let peer = self.obs.peer.clone();
        self.candidates = lacking
            .into_iter()
            .filter(|id| !self.skip.contains(&peer, id))
            .collect();
        self.cand = Cand::Reap;
        self.proceed(now);
    }

    /// A pull ended (`None`: its task failed).
    pub fn on_pull_done(&mut self, done: Option<(SegmentId, Pulled)>, now: Instant) {
        self.running = self.running.saturating_sub(1);
        self.tally(done);
        match self.phase {
            Phase::AwaitingSlot => self.proceed(now),
            Phase::Draining => self.drain(),
            _ => {}
        }
    }

    /// Every pull that had ended was reported.
    pub fn on_reaped(&mut self, now: Instant) {
        if self.phase == Phase::Reaping && self.cand == Cand::Reap {
            self.cand = Cand::Wait;
            self.proceed(now);
        }
    }

    /// Works through the page's candidates until an answer is needed.
    fn proceed(&mut self, now: Instant) {
        // Bounded: each pass starts a pull (and drops its candidate) or asks for an answer.
        while let Some(&id) = self.candidates.front() {
            match self.cand {
                Cand::Reap => {
                    // What already ended decides whether to go on.
                    self.phase = Phase::Reaping;
                    self.out.push_back(PullCmd::Reap);
                    return;
                }
                Cand::Wait => {
                    if self.running >= self.params.concurrent && self.report.cut.is_none() {
                        self.phase = Phase::AwaitingSlot;
                        self.out.push_back(PullCmd::AwaitPull);
                        return;
                    }
                    self.cand = Cand::Decide;
                }
                Cand::Decide => {
                    if self.report.cut.is_some() {
                        return self.drain();
                    }
                    if self.report.pulled >= self.params.pulls_max as u64 {
                        self.report.cut = Some(RoundCut::PullBound);
                        // This page again next time: what was pulled from it is held by then.
                        self.state.cursor = self.after;
                        return self.drain();
                    }
                    if !self.state.budget.take(now) {
                        self.report.cut = Some(RoundCut::Budget);
                        return self.drain();
                    }
                    self.report.pulled += 1;
                    self.running += 1;
                    self.candidates.pop_front();
                    self.out.push_back(PullCmd::StartPull(id));
                    self.cand = Cand::Reap;
                }
            }
        }
        // The page is done: the next one, unless it was the last or the bound is reached.
        match self.page_end {
            (Some(last), true) => self.after = Some(last),
            _ => return self.drain(),
        }
        if self.report.pages >= self.params.pages_max {
            self.report.cut = Some(RoundCut::PageBound);
            self.state.cursor = self.after;
            return self.drain();
        }
        self.next_page();
    }

    fn next_page(&mut self) {
        if self.report.pages >= self.params.pages_max {
            return self.drain();
        }
        self.phase = Phase::Page;
        self.out
            .push_back(PullCmd::Request(Msg::PageRequest { after: self.after }));
    }

    fn drain(&mut self) {
        self.candidates.clear();
        if self.running > 0 {
            self.phase = Phase::Draining;
            self.out.push_back(PullCmd::AwaitPull);
        } else {
            self.finish();
        }
    }

    fn tally(&mut self, done: Option<(SegmentId, Pulled)>) {
        if let Some((_, Pulled::Got(Received::Stored(_)))) = &done {
            self.report.stored += 1;
            self.state.budget.give_back();
            return;
        }
        self.report.wasted += 1;
        let obs = &self.obs;
        let peer = &obs.peer;
        match done {
            Some((_, Pulled::Got(Received::Had))) => {}
            Some((id, Pulled::NotHeld)) => {
                self.skip.insert(Some(peer), id);
                if self.report.cut.is_none() {
                    self.report.cut = Some(RoundCut::NotHeld);
                }
                info_limited!(obs.limiter, peer.as_str(), "pull_not_held", peer = %peer, seg_id = %id, "catch-up: the peer listed a segment it does not serve; round ended");
            }
            Some((id, Pulled::Got(Received::Rejected(reason)))) if reason.is_permanent() => {
                info_limited!(obs.limiter, peer.as_str(), "pull_refused", peer = %peer, seg_id = %id, %reason, "catch-up: refused for good; not pulled again");
                self.skip.insert(None, id);
            }
            Some(_) | None => self.report.failed += 1,
        }
    }

    /// A failed exchange ends the round at once (the glue drops the running pulls).
    fn fail(&mut self, e: String) {
        self.phase = Phase::Done;
        self.out.push_back(PullCmd::Done(Err(e)));
    }

    fn finish(&mut self) {
        self.phase = Phase::Done;
        self.out
            .push_back(PullCmd::Done(Ok(std::mem::take(&mut self.report))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catchup::Bucket;
    use crate::limits::CATCHUP_PAGE_IDS_MAX;
    use crate::proto::testing::observer;
    use crate::wire::RejectReason;

    fn id(n: u8) -> [u8; 32] {
        [n; 32]
    }

    fn peer_state(budget: u64, now: Instant) -> PeerCatchup {
        PeerCatchup {
            budget: Bucket::new(budget, now),
            cursor: None,
            last_end: None,
        }
    }

    fn params(pages_max: usize, pulls_max: usize, concurrent: usize) -> RoundParams {
        RoundParams {
            pages_max,
            pulls_max,
            concurrent,
        }
    }

    /// Plays the peer and this node's store for a round: the peer's digest differs, its pages
    /// are `pages` (each `(ids, more)`), this node lacks every id, and each pull ends with
    /// `pulled(id)` when it is awaited or reaped. Returns the report, the requests made and
    /// the ids pulled.
    fn play(
        round: &mut Round<'_>,
        pages: &[(Vec<[u8; 32]>, bool)],
        pulled: impl Fn(SegmentId) -> Pulled,
        reap_all: bool,
    ) -> (Result<CatchupReport, String>, Vec<Msg>, Vec<SegmentId>) {
        let now = Instant::now();
        let (mut requests, mut started) = (Vec::new(), Vec::new());
        let mut running: VecDeque<SegmentId> = VecDeque::new();
        let mut pages = pages.iter();
        // Bounded: every command is answered or ends the round.
        for _ in 0..10_000 {
            let cmd = round.poll().expect("the round waits for nothing");
            match cmd {
                PullCmd::Request(msg) => {
                    requests.push(msg.clone());
                    let reply = match msg {
                        Msg::DigestRequest => Msg::Digest {
                            count: 99,
                            hash: [9; 32],
                        },
                        _ => match pages.next() {
                            Some((ids, more)) => Msg::Page {
                                ids: ids.clone(),
                                more: *more,
                            },
                            None => Msg::NotHeld,
                        },
                    };
                    round.on_reply(Ok(reply));
                }
                PullCmd::HeldDigest => round.on_held_digest(Ok((1, [1; 32]))),
                PullCmd::Lacking(ids) => round.on_lacking(Ok(ids), now),
                PullCmd::Reap => {
                    while reap_all && let Some(id) = running.pop_front() {
                        round.on_pull_done(Some((id, pulled(id))), now);
                    }
                    round.on_reaped(now);
                }
                PullCmd::AwaitPull => {
                    let id = running.pop_front().expect("a pull awaited while none runs");
                    round.on_pull_done(Some((id, pulled(id))), now);
                }
                PullCmd::StartPull(id) => {
                    started.push(id);
                    running.push_back(id);
                }
                PullCmd::Done(report) => {
                    assert!(running.is_empty(), "the round ended with pulls running");
                    return (report, requests, started);
                }
            }
        }
        panic!("the round did not end");
    }

    fn stored(id: SegmentId) -> Pulled {
        Pulled::Got(Received::Stored(id))
    }

    #[test]
    fn inv_15_equal_digests_end_the_round_in_sync() {
        let now = Instant::now();
        let (mut st, skip) = (peer_state(10, now), SkipSet::default());
        st.cursor = Some(id(5));
        let mut round = Round::new(observer(), params(4, 10, 2), &mut st, &skip);
        assert_eq!(round.poll(), Some(PullCmd::Request(Msg::DigestRequest)));
        round.on_reply(Ok(Msg::Digest {
            count: 1,
            hash: [1; 32],
        }));
        assert_eq!(round.poll(), Some(PullCmd::HeldDigest));
        round.on_held_digest(Ok((1, [1; 32])));
        let Some(PullCmd::Done(Ok(report))) = round.poll() else {
            panic!("no report")
        };
        assert!(report.in_sync);
        drop(round);
        assert_eq!(st.cursor, None);
    }

    #[test]
    fn inv_15_a_round_pulls_every_lacking_id_of_every_page_at_most_n_at_a_time() {
        let now = Instant::now();
        let (mut st, skip) = (peer_state(100, now), SkipSet::default());
        let mut round = Round::new(observer(), params(4, 100, 2), &mut st, &skip);
        let pages = [
            (vec![id(1), id(2), id(3)], true),
            (vec![id(4), id(5)], false),
        ];
        let (report, requests, started) = play(&mut round, &pages, stored, false);
        let report = report.unwrap();
        assert_eq!(
            requests,
            [
                Msg::DigestRequest,
                Msg::PageRequest { after: None },
                Msg::PageRequest { after: Some(id(3)) }
            ]
        );
        let want: Vec<SegmentId> = (1..=5).map(|n| SegmentId(id(n))).collect();
        assert_eq!(started, want);
        assert_eq!(
            (report.pages, report.ids_seen, report.pulled, report.stored),
            (2, 5, 5, 5)
        );
        assert_eq!((report.wasted, report.cut), (0, None));
    }

    #[test]
    fn inv_18_the_pull_bound_cuts_the_round_and_keeps_its_page_for_the_next() {
        let now = Instant::now();
        let (mut st, skip) = (peer_state(100, now), SkipSet::default());
        let mut round = Round::new(observer(), params(4, 3, 2), &mut st, &skip);
        let pages = [
            (vec![id(1), id(2)], true),
            (vec![id(3), id(4), id(5)], true),
        ];
        let (report, _, started) = play(&mut round, &pages, stored, true);
        let report = report.unwrap();
        assert_eq!(started.len(), 3);
        assert_eq!(report.cut, Some(RoundCut::PullBound));
        assert!(report.productive());
        drop(round);
        // The page being worked through is asked for again next time.
        assert_eq!(st.cursor, Some(id(2)));
    }

    #[test]
    fn inv_18_the_page_bound_cuts_the_round_and_the_next_goes_on_after_it() {
        let now = Instant::now();
        let (mut st, skip) = (peer_state(100, now), SkipSet::default());
        let mut round = Round::new(observer(), params(2, 100, 2), &mut st, &skip);
        let pages = [
            (vec![id(1)], true),
            (vec![id(2)], true),
            (vec![id(3)], true),
        ];
        let (report, requests, _) = play(&mut round, &pages, stored, true);
        let report = report.unwrap();
        assert_eq!((report.pages, report.cut), (2, Some(RoundCut::PageBound)));
        assert_eq!(requests.len(), 3, "{requests:?}");
        drop(round);
        assert_eq!(st.cursor, Some(id(2)));
        // The next round starts there.
        let mut round = Round::new(observer(), params(2, 100, 2), &mut st, &skip);
        let (_, requests, _) = play(&mut round, &[(vec![id(3)], false)], stored, true);
        assert_eq!(requests[1], Msg::PageRequest { after: Some(id(2)) });
    }

    #[test]
    fn inv_18_wasted_pulls_spend_the_peers_bucket_and_stored_ones_refund_it() {
        let now = Instant::now();
        let (mut st, skip) = (peer_state(2, now), SkipSet::default());
        let ids: Vec<[u8; 32]> = (1..=6).map(id).collect();
        // Everything pulled is "had meanwhile": wasted.
        let had = |_| Pulled::Got(Received::Had);
        let mut round = Round::new(observer(), params(4, 100, 1), &mut st, &skip);
        let (report, _, started) = play(&mut round, &[(ids.clone(), false)], had, true);
        let report = report.unwrap();
        assert_eq!((started.len(), report.cut), (2, Some(RoundCut::Budget)));
        assert_eq!(report.wasted, 2);
        // Stored pulls give their token back: the bucket never empties.
        let (mut st, skip) = (peer_state(2, now), SkipSet::default());
        let mut round = Round::new(observer(), params(4, 100, 1), &mut st, &skip);
        let (report, _, started) = play(&mut round, &[(ids, false)], stored, true);
        assert_eq!((started.len(), report.unwrap().cut), (6, None));
    }

    #[test]
    fn inv_15_not_held_ends_the_round_and_the_id_is_skipped_with_that_peer() {
        let now = Instant::now();
        let (mut st, skip) = (peer_state(100, now), SkipSet::default());
        let obs = observer();
        let peer = obs.peer.clone();
        let mut round = Round::new(obs, params(4, 100, 1), &mut st, &skip);
        let ids: Vec<[u8; 32]> = (1..=4).map(id).collect();
        let not_held = |i: SegmentId| {
            if i.0 == id(2) {
                Pulled::NotHeld
            } else {
                stored(i)
            }
        };
        let (report, _, started) = play(&mut round, &[(ids, false)], not_held, true);
        let report = report.unwrap();
        assert_eq!(report.cut, Some(RoundCut::NotHeld));
        assert_eq!(started.len(), 2);
        assert!(skip.contains(&peer, &SegmentId(id(2))));
        let other: crate::pki::NodeId = "other".parse().unwrap();
        assert!(!skip.contains(&other, &SegmentId(id(2))));
    }

    #[test]
    fn a_permanent_refusal_is_skipped_with_every_peer_and_a_failure_counted() {
        let now = Instant::now();
        let (mut st, skip) = (peer_state(100, now), SkipSet::default());
        let mut round = Round::new(observer(), params(4, 100, 2), &mut st, &skip);
        let outcome = |i: SegmentId| match i.0[0] {
            1 => Pulled::Got(Received::Rejected(RejectReason::UntrustedPublisher)),
            _ => Pulled::Got(Received::Failed("lost".into())),
        };
        let (report, _, _) = play(&mut round, &[(vec![id(1), id(2)], false)], outcome, true);
        let report = report.unwrap();
        assert_eq!((report.wasted, report.failed, report.stored), (2, 1, 0));
        let other: crate::pki::NodeId = "other".parse().unwrap();
        assert!(skip.contains(&other, &SegmentId(id(1))));
        assert!(!skip.contains(&other, &SegmentId(id(2))));
    }

    #[test]
    fn inv_17_a_lying_page_ends_the_round_with_an_error() {
        let now = Instant::now();
        let too_many: Vec<[u8; 32]> = (0..=CATCHUP_PAGE_IDS_MAX)
            .map(|i| {
                let mut x = [0u8; 32];
                x[..8].copy_from_slice(&(i as u64).to_be_bytes());
                x
            })
            .collect();
        for page in [vec![id(2), id(1)], vec![id(1), id(1)], too_many] {
            let (mut st, skip) = (peer_state(100, now), SkipSet::default());
            let mut round = Round::new(observer(), params(4, 100, 2), &mut st, &skip);
            let (report, _, started) = play(&mut round, &[(page, false)], stored, true);
            assert!(report.is_err());
            assert!(started.is_empty());
        }
        // A wrong answer too.
        let (mut st, skip) = (peer_state(100, now), SkipSet::default());
        let mut round = Round::new(observer(), params(4, 100, 2), &mut st, &skip);
        let (report, _, _) = play(&mut round, &[], stored, true);
        assert_eq!(report, Err("peer answered NotHeld to PageRequest".into()));
    }
}
