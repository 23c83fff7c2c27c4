//! Catch-up (anti-entropy): the receiving side pulls what its peer holds and it lacks (INV-15).
//!
//! On every connect and every `catchup_interval_ms`, each side of a connection runs a round as
//! the puller: it asks the peer for the digest of its held id set (stored and tombstoned ids,
//! blake3 over the sorted ids); if that differs from its own, it reads the peer's ids in sorted
//! pages of at most [`CATCHUP_PAGE_IDS_MAX`] and, for every id it neither stores, nor
//! tombstoned, nor is receiving right now, it sends `Pull(id)` on a new stream; the peer then
//! runs its normal sender path for that segment on that stream, and calls
//! [`NetHooks::on_delivered`](crate::NetHooks::on_delivered) when the puller acknowledges, so
//! the relay completes its job for that peer even if it had been dead-lettered.
//!
//! Bounds — what a peer that lies (endless pages of ids it does not hold) can make a node
//! spend:
//!
//! - a round reads at most `catchup_pages_per_round_max` pages and starts at most
//!   `catchup_pulls_per_round_max` pulls, `catchup_pulls_concurrent` at a time; a round cut by
//!   its page bound leaves a cursor, and the next round with that peer goes on after it;
//! - a round ends at the first `NotHeld` answer: the peer listed an id and then did not serve
//!   it (the pulls already running finish);
//! - every pull takes a token from the peer's bucket of `catchup_wasted_pulls_per_peer_per_min`
//!   (refilled at that rate, kept across rounds and reconnections); a pull that stores a
//!   segment gives it back, so only pulls that stored nothing are bounded by it, and an empty
//!   bucket ends the round;
//! - rounds with one peer run one at a time and start at least `catchup_followup_ms` apart;
//!   after a round the next one comes after `catchup_interval_ms`, or after
//!   `catchup_followup_ms` when the round was cut by its pull or page bound while it stored
//!   more than it wasted — so a node that was away long converges quickly, and a peer whose
//!   pulls store nothing cannot make rounds come faster;
//! - ids this node's store refused for good (untrusted, expired, …) or that the peer did not
//!   hold are remembered (up to [`CATCHUP_SKIP_IDS_MAX`]) and not pulled again while the
//!   process runs.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use quinn::Connection;
use store::{Holding, SegmentId};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};

use crate::config::NetConfig;
use crate::disk;
use crate::limits::{CATCHUP_PAGE_IDS_MAX, CATCHUP_SKIP_IDS_MAX};
use crate::pki::NodeId;
use crate::proto::pull::{PullCmd, Pulled, Round, RoundParams};
use crate::proto::pull_one::{PullOne, PullOneCmd};
pub(crate) use crate::proto::serve::ServeReq;
use crate::proto::serve::{ServeCmd, Server};
use crate::transfer::{self, Ctx, Received, SendOutcome, bump};
use crate::wire::{Msg, StreamCode, read_frame, write_frame};

/// Why a round ended before it saw the peer's last page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundCut {
    /// `catchup_pulls_per_round_max` pulls were started.
    PullBound,
    /// `catchup_pages_per_round_max` pages were read (the next round goes on after them).
    PageBound,
    /// The peer's bucket of wasted pulls is empty.
    Budget,
    /// The peer answered `NotHeld` for an id it had listed.
    NotHeld,
}

impl RoundCut {
    /// A stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RoundCut::PullBound => "pull_bound",
            RoundCut::PageBound => "page_bound",
            RoundCut::Budget => "budget",
            RoundCut::NotHeld => "not_held",
        }
    }
}

/// What one catch-up round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CatchupReport {
    /// The digests were equal: nothing to do.
    pub in_sync: bool,
    pub pages: usize,
    pub ids_seen: u64,
    /// Pulls started.
    pub pulled: u64,
    /// Pulls that stored a segment.
    pub stored: u64,
    /// Pulls that failed (retried in a later round).
    pub failed: u64,
    /// Pulls that stored nothing (failed, refused, not held, had meanwhile).
    pub wasted: u64,
    /// Why the round ended early, if it did.
    pub cut: Option<RoundCut>,
}

impl CatchupReport {
    /// Stored something, and more than it wasted.
    pub fn productive(&self) -> bool {
        self.stored > 0 && self.stored >= self.wasted
    }
}

/// When the next round with a peer is due after a round that ended with `report` (`None`: it
/// failed). `None`: no round is planned (periodic rounds are off).
pub(crate) fn next_round_in(cfg: &NetConfig, report: Option<&CatchupReport>) -> Option<Duration> {
    let cut_while_productive = report.is_some_and(|r| {
        matches!(r.cut, Some(RoundCut::PullBound | RoundCut::PageBound)) && r.productive()
    });
    if cut_while_productive {
        Some(Duration::from_millis(cfg.catchup_followup_ms))
    } else if cfg.catchup_interval_ms > 0 {
        Some(Duration::from_millis(cfg.catchup_interval_ms))
    } else {
        None
    }
}

/// A token bucket of pulls that stored nothing: `per_min` tokens, refilled at `per_min` per
/// minute. Time is an argument.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    per_min: u64,
    tokens: u64,
    last: Instant,
}

/// Milliseconds per refill period of a [`Bucket`].
const BUCKET_PERIOD_MS: u64 = 60_000;

impl Bucket {
    pub fn new(per_min: u64, now: Instant) -> Bucket {
        Bucket {
            per_min,
            tokens: per_min,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if self.per_min == 0 {
            return;
        }
        let elapsed_ms = now.saturating_duration_since(self.last).as_millis();
        let add = (elapsed_ms * u128::from(self.per_min) / u128::from(BUCKET_PERIOD_MS))
            .min(u128::from(self.per_min)) as u64;
        if add == 0 {
            return;
        }
        self.tokens = (self.tokens + add).min(self.per_min);
        if self.tokens == self.per_min {
            self.last = now;
        } else {
            // Keep the fraction of a token not added yet.
            self.last += Duration::from_millis(add * BUCKET_PERIOD_MS / self.per_min);
        }
    }

    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    pub fn give_back(&mut self) {
        self.tokens = (self.tokens + 1).min(self.per_min);
    }
}

/// What a node keeps about catch-up with one peer, across rounds and connections.
#[derive(Debug)]
pub(crate) struct PeerCatchup {
    pub budget: Bucket,
    /// Where the next round starts reading pages (after a round cut by its page bound).
    pub cursor: Option<[u8; 32]>,
    /// When the last round ended.
    pub last_end: Option<Instant>,
}

impl PeerCatchup {
    pub fn new(cfg: &NetConfig, now: Instant) -> PeerCatchup {
        PeerCatchup {
            budget: Bucket::new(cfg.catchup_wasted_pulls_per_peer_per_min, now),
            cursor: None,
            last_end: None,
        }
    }
}

/// Ids not to pull again while the process runs: refused by this node's store (for every
/// peer), or not held by one peer (for that peer).
#[derive(Debug, Default)]
pub(crate) struct SkipSet(Mutex<BTreeSet<(Option<NodeId>, SegmentId)>>);

impl SkipSet {
    pub(crate) fn contains(&self, peer: &NodeId, id: &SegmentId) -> bool {
        let set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.contains(&(None, *id)) || set.contains(&(Some(peer.clone()), *id))
    }

    /// Skips `id` with `peer` only, or with every peer when `peer` is `None`.
    pub(crate) fn insert(&self, peer: Option<&NodeId>, id: SegmentId) {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= CATCHUP_SKIP_IDS_MAX {
            set.clear();
        }
        set.insert((peer.cloned(), id));
    }
}

/// One round as the puller on `conn`, under the bounds of the module docs. `state` is the
/// peer's (its lock is held for the round: rounds with one peer run one at a time).
pub(crate) async fn pull_round(
    ctx: &Ctx,
    skip: &SkipSet,
    peer: &NodeId,
    conn: &Connection,
    state: &mut PeerCatchup,
) -> Result<CatchupReport, String> {
    let result = pull_round_inner(ctx, skip, peer, conn, state).await;
    state.last_end = Some(Instant::now());
    if let Ok(report) = &result {
        if report.cut.is_some() {
            bump(&ctx.stats.catchup_rounds_cut, 1);
        }
    }
    result
}

/// Runs a [`Round`] on `conn`: its requests on new streams, its pulls as concurrent tasks.
async fn pull_round_inner(
    ctx: &Ctx,
    skip: &SkipSet,
    peer: &NodeId,
    conn: &Connection,
    state: &mut PeerCatchup,
) -> Result<CatchupReport, String> {
    let cfg = &ctx.cfg;
    let params = RoundParams {
        pages_max: cfg.catchup_pages_per_round_max,
        pulls_max: cfg.catchup_pulls_per_round_max,
        concurrent: cfg.catchup_pulls_concurrent,
    };
    let mode = cfg.disk_mode;
    let mut round = Round::new(ctx.observer(peer), params, state, skip);
    // Dropped (and its pulls aborted) when the round fails.
    let mut running = JoinSet::new();
    let joined = |done: Result<(SegmentId, Pulled), tokio::task::JoinError>| done.ok();
    // Bounded: every command is answered or ends the round; the round asks for a bounded
    // number of pages and pulls.
    loop {
        let Some(cmd) = round.poll() else {
            // The machine never waits without having asked for something.
            return Err("catch-up round stopped without a report".into());
        };
        match cmd {
            PullCmd::Request(msg) => round.on_reply(request(ctx, conn, &msg).await),
            PullCmd::HeldDigest => {
                let store = ctx.store.clone();
                let mine = disk::blocking(mode, move || store.held_digest()).await;
                let mine = match mine {
                    Ok(Ok(d)) => Ok((d.count, d.hash)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                round.on_held_digest(mine);
            }
            PullCmd::Lacking(ids) => {
                let store = ctx.store.clone();
                let lacking = disk::blocking(mode, move || {
                    ids.into_iter()
                        .filter(|id| {
                            matches!(
                                store.holding(id),
                                Ok(Holding::Absent | Holding::Partial { .. })
                            )
                        })
                        .collect()
                })
                .await
                .map_err(|e| e.to_string());
                round.on_lacking(lacking, Instant::now());
            }
            PullCmd::Reap => {
                while let Some(done) = running.try_join_next() {
                    round.on_pull_done(joined(done), Instant::now());
                }
                round.on_reaped(Instant::now());
            }
            PullCmd::AwaitPull => {
                let done = running.join_next().await;
                round.on_pull_done(done.and_then(joined), Instant::now());
            }
            PullCmd::StartPull(id) => {
                let (ctx, peer, conn) = (ctx.clone(), peer.clone(), conn.clone());
                running.spawn(async move { (id, pull_one(&ctx, &peer, &conn, id).await) });
            }
            PullCmd::Done(report) => return report,
        }
    }
}

/// A page must be at most [`CATCHUP_PAGE_IDS_MAX`] ids, strictly increasing, all after `after`.
pub(crate) fn check_page(ids: &[[u8; 32]], after: Option<&[u8; 32]>) -> Result<(), String> {
    if ids.len() > CATCHUP_PAGE_IDS_MAX {
        return Err(format!(
            "page of {} ids exceeds {CATCHUP_PAGE_IDS_MAX}",
            ids.len()
        ));
    }
    let mut prev = after;
    for id in ids {
        if prev.is_some_and(|p| id <= p) {
            return Err("page ids not strictly increasing after the requested id".into());
        }
        prev = Some(id);
    }
    Ok(())
}

/// One request/answer exchange on a new stream.
pub(crate) async fn request(ctx: &Ctx, conn: &Connection, msg: &Msg) -> Result<Msg, String> {
    let response = ctx.cfg.response_timeout();
    let (mut send, mut recv) = timeout(response, conn.open_bi())
        .await
        .map_err(|_| "timed out opening a stream".to_owned())?
        .map_err(|e| e.to_string())?;
    write_frame(&mut send, msg)
        .await
        .map_err(|e| e.to_string())?;
    let _ = send.finish();
    match timeout(response, read_frame(&mut recv, ctx.cfg.frame_bytes_max)).await {
        Err(_) => {
            let _ = recv.stop(StreamCode::Stalled.varint());
            Err(format!("no answer to {} in time", msg.name()))
        }
        Ok(Err(e)) => {
            if let Some(code) = e.stream_code() {
                let _ = recv.stop(code.varint());
            }
            Err(e.to_string())
        }
        Ok(Ok(reply)) => Ok(reply),
    }
}

/// Runs a [`PullOne`] on a new stream of `conn`.
async fn pull_one(ctx: &Ctx, peer: &NodeId, conn: &Connection, id: SegmentId) -> Pulled {
    let response = ctx.cfg.response_timeout();
    let mut p = PullOne::new(ctx.observer(peer), id, response, Instant::now());
    let mut streams = None;
    // Bounded: a pull asks for at most five commands before `Done`, each with a deadline
    // or a receive bounded by its own rules.
    while let Some(cmd) = p.poll() {
        if let PullOneCmd::Done(pulled) = cmd {
            return pulled;
        }
        if let PullOneCmd::OpenStream { deadline } = cmd {
            streams = timeout_at(deadline, conn.open_bi())
                .await
                .ok()
                .and_then(Result::ok);
            p.on_opened(streams.is_some());
            continue;
        }
        let Some((send, recv)) = streams.as_mut() else {
            break;
        };
        match cmd {
            PullOneCmd::Write(msg) => {
                let written = write_frame(send, &msg).await.map_err(|e| e.to_string());
                p.on_written(written, Instant::now());
            }
            PullOneCmd::ReadFrame { deadline } => {
                match timeout_at(deadline, read_frame(recv, ctx.cfg.frame_bytes_max)).await {
                    Err(_) => p.on_timer(),
                    Ok(frame) => p.on_frame(frame),
                }
            }
            PullOneCmd::Finish => {
                let _ = send.finish();
            }
            PullOneCmd::ResetSend(code) => {
                let _ = send.reset(code.varint());
            }
            PullOneCmd::StopRecv(code) => {
                let _ = recv.stop(code.varint());
            }
            PullOneCmd::Receive(manifest) => {
                p.on_received(transfer::receive(ctx, peer, send, recv, manifest, None).await)
            }
            PullOneCmd::OpenStream { .. } | PullOneCmd::Done(_) => {}
        }
    }
    // The machine never waits without having asked for something.
    Pulled::Got(Received::Failed("pull stopped without an end".into()))
}

/// Answers a catch-up request of `peer` on the stream it opened: runs a [`Server`] on the
/// stream and the store (a pull: the normal sender path, then `on_delivered`).
pub(crate) async fn serve(
    ctx: &Ctx,
    peer: &NodeId,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    req: ServeReq,
) {
    let mode = ctx.cfg.disk_mode;
    let mut server = Server::new(ctx.observer(peer), req);
    let mut reader = None;
    // Bounded: a server asks for at most four commands before `Done`.
    while let Some(cmd) = server.poll() {
        match cmd {
            ServeCmd::HeldDigest => {
                let store = ctx.store.clone();
                let digest = match disk::blocking(mode, move || store.held_digest()).await {
                    Ok(Ok(d)) => Some((d.count, d.hash)),
                    _ => None,
                };
                server.on_held_digest(digest);
            }
            ServeCmd::HeldIdsAfter { after, limit } => {
                let store = ctx.store.clone();
                let listed =
                    disk::blocking(mode, move || store.held_ids_after(after.as_ref(), limit)).await;
                server.on_held_ids(listed.ok().and_then(Result::ok));
            }
            ServeCmd::OpenForRead(id) => match transfer::open_for_send(ctx, id).await {
                Ok(r) => {
                    reader = Some(r);
                    server.on_opened(Ok(()));
                }
                Err(outcome) => server.on_opened(Err(outcome)),
            },
            ServeCmd::Write(msg) => {
                let _ = write_frame(send, &msg).await;
            }
            ServeCmd::Finish => {
                let _ = send.finish();
            }
            ServeCmd::ResetSend(code) => {
                let _ = send.reset(code.varint());
            }
            ServeCmd::Send => {
                let outcome = match reader.take() {
                    Some(reader) => transfer::send_with(ctx, peer, send, recv, reader).await,
                    None => SendOutcome::Failed("nothing open to send".into()),
                };
                server.on_sent(outcome);
            }
            ServeCmd::Delivered(id) => ctx.hooks.on_delivered(peer, &id),
            ServeCmd::Done => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_bounds_wasted_pulls_by_rate_and_refunds_stored_ones() {
        let t0 = Instant::now();
        let mut b = Bucket::new(6, t0);
        for _ in 0..6 {
            assert!(b.take(t0));
        }
        assert!(!b.take(t0));
        // A stored pull gives its token back.
        b.give_back();
        assert!(b.take(t0));
        assert!(!b.take(t0));
        // One token per 10 s at 6 per minute; fractions are not lost.
        assert!(!b.take(t0 + Duration::from_millis(9_999)));
        assert!(b.take(t0 + Duration::from_millis(10_000)));
        assert!(!b.take(t0 + Duration::from_millis(15_000)));
        assert!(b.take(t0 + Duration::from_millis(20_000)));
        // Never more than a minute's worth.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.take(later)).count(), 6);
    }

    #[test]
    fn inv_15_only_a_productive_round_cut_by_a_bound_is_followed_up_soon() {
        let mut cfg = NetConfig::new(
            "n".parse().unwrap(),
            "127.0.0.1:1".parse().unwrap(),
            Default::default(),
        );
        cfg.catchup_interval_ms = 60_000;
        cfg.catchup_followup_ms = 1_000;
        let soon = Some(Duration::from_millis(1_000));
        let later = Some(Duration::from_millis(60_000));
        let r = |cut, stored, wasted| CatchupReport {
            cut,
            stored,
            wasted,
            ..Default::default()
        };
        for (report, want) in [
            (r(Some(RoundCut::PullBound), 10, 0), soon),
            (r(Some(RoundCut::PageBound), 10, 10), soon),
            (r(Some(RoundCut::PullBound), 10, 11), later),
            (r(Some(RoundCut::PageBound), 0, 0), later),
            (r(Some(RoundCut::NotHeld), 10, 1), later),
            (r(Some(RoundCut::Budget), 10, 1), later),
            (r(None, 10, 0), later),
        ] {
            assert_eq!(next_round_in(&cfg, Some(&report)), want, "{report:?}");
        }
        assert_eq!(next_round_in(&cfg, None), later);
        cfg.catchup_interval_ms = 0;
        assert_eq!(next_round_in(&cfg, None), None);
    }

    #[test]
    fn inv_17_pages_are_checked() {
        assert!(check_page(&[], None).is_ok());
        assert!(check_page(&[[1; 32], [2; 32]], None).is_ok());
        assert!(check_page(&[[1; 32], [2; 32]], Some(&[0; 32])).is_ok());
        assert!(check_page(&[[2; 32], [1; 32]], None).is_err());
        assert!(check_page(&[[1; 32], [1; 32]], None).is_err());
        assert!(check_page(&[[1; 32]], Some(&[1; 32])).is_err());
        let full: Vec<[u8; 32]> = (0..=CATCHUP_PAGE_IDS_MAX)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&(i as u64).to_be_bytes());
                id
            })
            .collect();
        assert!(check_page(&full[..CATCHUP_PAGE_IDS_MAX], None).is_ok());
        assert!(check_page(&full, None).is_err());
    }
}
