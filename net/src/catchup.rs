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
use store::manifest::SignedManifest;
use store::{Holding, SegmentId};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

use crate::config::NetConfig;
use crate::disk;
use crate::limits::{CATCHUP_PAGE_IDS_MAX, CATCHUP_SKIP_IDS_MAX};
use crate::pki::NodeId;
use crate::transfer::{self, Ctx, Received, SendOutcome, bump};
use crate::wire::{Msg, StreamCode, read_frame, write_frame};
use crate::{info_limited, warn_limited};

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
    fn contains(&self, peer: &NodeId, id: &SegmentId) -> bool {
        let set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.contains(&(None, *id)) || set.contains(&(Some(peer.clone()), *id))
    }

    /// Skips `id` with `peer` only, or with every peer when `peer` is `None`.
    fn insert(&self, peer: Option<&NodeId>, id: SegmentId) {
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

async fn pull_round_inner(
    ctx: &Ctx,
    skip: &SkipSet,
    peer: &NodeId,
    conn: &Connection,
    state: &mut PeerCatchup,
) -> Result<CatchupReport, String> {
    let mut report = CatchupReport::default();
    let (count, hash) = match request(ctx, conn, &Msg::DigestRequest).await? {
        Msg::Digest { count, hash } => (count, hash),
        other => return Err(format!("peer answered {} to DigestRequest", other.name())),
    };
    let store = ctx.store.clone();
    let mine = disk::blocking(ctx.cfg.disk_mode, move || store.held_digest())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    // Mutation point (INV-15): the receiving side never pulls; digests are taken as equal.
    if (mine.count == count && mine.hash == hash) || store::mutants::active("no_catchup_pulls") {
        report.in_sync = true;
        state.cursor = None;
        return Ok(report);
    }
    let cfg = &ctx.cfg;
    let mut after: Option<[u8; 32]> = state.cursor.take();
    let mut running = JoinSet::new();
    'pages: for _ in 0..cfg.catchup_pages_per_round_max {
        let (ids, more) = match request(ctx, conn, &Msg::PageRequest { after }).await? {
            Msg::Page { ids, more } => (ids, more),
            other => return Err(format!("peer answered {} to PageRequest", other.name())),
        };
        check_page(&ids, after.as_ref())?;
        report.pages += 1;
        report.ids_seen += ids.len() as u64;
        let last = ids.last().copied();
        let store = ctx.store.clone();
        let lacking: Vec<SegmentId> = disk::blocking(ctx.cfg.disk_mode, move || {
            ids.into_iter()
                .map(SegmentId)
                .filter(|id| {
                    matches!(
                        store.holding(id),
                        Ok(Holding::Absent | Holding::Partial { .. })
                    )
                })
                .collect()
        })
        .await
        .map_err(|e| e.to_string())?;
        for id in lacking.into_iter().filter(|id| !skip.contains(peer, id)) {
            // What already ended decides whether to go on.
            while let Some(done) = running.try_join_next() {
                tally(ctx, done, peer, skip, state, &mut report);
            }
            while running.len() >= cfg.catchup_pulls_concurrent && report.cut.is_none() {
                if let Some(done) = running.join_next().await {
                    tally(ctx, done, peer, skip, state, &mut report);
                }
            }
            if report.cut.is_some() {
                break 'pages;
            }
            if report.pulled >= cfg.catchup_pulls_per_round_max as u64 {
                report.cut = Some(RoundCut::PullBound);
                // This page again next time: what was pulled from it is held by then.
                state.cursor = after;
                break 'pages;
            }
            if !state.budget.take(Instant::now()) {
                report.cut = Some(RoundCut::Budget);
                break 'pages;
            }
            report.pulled += 1;
            let (ctx, peer, conn) = (ctx.clone(), peer.clone(), conn.clone());
            running.spawn(async move { (id, pull_one(&ctx, &peer, &conn, id).await) });
        }
        match last {
            Some(last) if more => after = Some(last),
            _ => break,
        }
        if report.pages >= cfg.catchup_pages_per_round_max {
            report.cut = Some(RoundCut::PageBound);
            state.cursor = after;
        }
    }
    while let Some(done) = running.join_next().await {
        tally(ctx, done, peer, skip, state, &mut report);
    }
    Ok(report)
}

fn tally(
    ctx: &Ctx,
    done: Result<(SegmentId, Pulled), tokio::task::JoinError>,
    peer: &NodeId,
    skip: &SkipSet,
    state: &mut PeerCatchup,
    report: &mut CatchupReport,
) {
    if let Ok((_, Pulled::Got(Received::Stored(_)))) = &done {
        report.stored += 1;
        state.budget.give_back();
        return;
    }
    report.wasted += 1;
    match done {
        Ok((_, Pulled::Got(Received::Had))) => {}
        Ok((id, Pulled::NotHeld)) => {
            skip.insert(Some(peer), id);
            if report.cut.is_none() {
                report.cut = Some(RoundCut::NotHeld);
            }
            info_limited!(ctx.limiter, peer.as_str(), "pull_not_held", peer = %peer, seg_id = %id, "catch-up: the peer listed a segment it does not serve; round ended");
        }
        Ok((id, Pulled::Got(Received::Rejected(reason)))) if reason.is_permanent() => {
            info_limited!(ctx.limiter, peer.as_str(), "pull_refused", peer = %peer, seg_id = %id, %reason, "catch-up: refused for good; not pulled again");
            skip.insert(None, id);
        }
        Ok(_) | Err(_) => report.failed += 1,
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
async fn request(ctx: &Ctx, conn: &Connection, msg: &Msg) -> Result<Msg, String> {
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

enum Pulled {
    Got(Received),
    NotHeld,
}

async fn pull_one(ctx: &Ctx, peer: &NodeId, conn: &Connection, id: SegmentId) -> Pulled {
    bump(&ctx.stats.catchup_pulls, 1);
    let response = ctx.cfg.response_timeout();
    let opened = timeout(response, conn.open_bi()).await;
    let Ok(Ok((mut send, mut recv))) = opened else {
        return Pulled::Got(Received::Failed("cannot open a stream".into()));
    };
    if let Err(e) = write_frame(&mut send, &Msg::Pull { id: id.0 }).await {
        return Pulled::Got(Received::Failed(e.to_string()));
    }
    match transfer::first_frame(&ctx.cfg, &mut recv).await {
        Ok(Msg::Offer { manifest }) => {
            // It must be the segment asked for, before anything is reserved for it.
            match SignedManifest::decode(&manifest) {
                Ok(signed) if signed.id() == id => {}
                _ => {
                    let _ = send.reset(StreamCode::Protocol.varint());
                    let _ = recv.stop(StreamCode::Protocol.varint());
                    bump(&ctx.stats.streams_failed, 1);
                    warn_limited!(ctx.limiter, peer.as_str(), "pull_mismatch", peer = %peer, seg_id = %id, "catch-up: peer offered another segment than the one pulled");
                    return Pulled::Got(Received::Failed("peer offered another segment".into()));
                }
            }
            Pulled::Got(transfer::receive(ctx, peer, &mut send, &mut recv, manifest).await)
        }
        Ok(Msg::NotHeld) => {
            let _ = send.finish();
            Pulled::NotHeld
        }
        Ok(other) => {
            let _ = send.reset(StreamCode::Protocol.varint());
            let _ = recv.stop(StreamCode::Protocol.varint());
            Pulled::Got(Received::Failed(format!(
                "peer answered {} to Pull",
                other.name()
            )))
        }
        Err(e) => {
            let code = e
                .as_ref()
                .and_then(|e| e.stream_code())
                .unwrap_or(StreamCode::Stalled);
            let _ = send.reset(code.varint());
            let _ = recv.stop(code.varint());
            Pulled::Got(Received::Failed(match e {
                Some(e) => e.to_string(),
                None => "no answer to Pull in time".into(),
            }))
        }
    }
}

/// Answers a `DigestRequest`.
pub(crate) async fn serve_digest(ctx: &Ctx, send: &mut quinn::SendStream) {
    let store = ctx.store.clone();
    match disk::blocking(ctx.cfg.disk_mode, move || store.held_digest()).await {
        Ok(Ok(d)) => {
            let _ = write_frame(
                send,
                &Msg::Digest {
                    count: d.count,
                    hash: d.hash,
                },
            )
            .await;
            let _ = send.finish();
        }
        _ => {
            let _ = send.reset(StreamCode::Internal.varint());
        }
    }
}

/// Answers a `PageRequest`.
pub(crate) async fn serve_page(ctx: &Ctx, send: &mut quinn::SendStream, after: Option<[u8; 32]>) {
    let store = ctx.store.clone();
    let after = after.map(SegmentId);
    let listed = disk::blocking(ctx.cfg.disk_mode, move || {
        store.held_ids_after(after.as_ref(), CATCHUP_PAGE_IDS_MAX + 1)
    })
    .await;
    match listed {
        Ok(Ok(mut ids)) => {
            let more = ids.len() > CATCHUP_PAGE_IDS_MAX;
            ids.truncate(CATCHUP_PAGE_IDS_MAX);
            let ids = ids.into_iter().map(|id| id.0).collect();
            let _ = write_frame(send, &Msg::Page { ids, more }).await;
            let _ = send.finish();
        }
        _ => {
            let _ = send.reset(StreamCode::Internal.varint());
        }
    }
}

/// Answers a `Pull(id)`: the normal sender path on this stream, then `on_delivered`.
pub(crate) async fn serve_pull(
    ctx: &Ctx,
    peer: &NodeId,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    id: SegmentId,
) {
    let reader = match transfer::open_for_send(ctx, id).await {
        Ok(reader) => reader,
        Err(outcome) => {
            if !matches!(outcome, SendOutcome::NotStored | SendOutcome::Expired) {
                warn_limited!(ctx.limiter, peer.as_str(), "pull_refused_here", peer = %peer, seg_id = %id, ?outcome, "catch-up: cannot serve a pulled segment");
            }
            let _ = write_frame(send, &Msg::NotHeld).await;
            let _ = send.finish();
            return;
        }
    };
    let outcome = transfer::send_with(ctx, peer, send, recv, reader).await;
    tracing::debug!(peer = %peer, seg_id = %id, ?outcome, "catch-up: served a pull");
    if outcome.is_delivered() {
        ctx.hooks.on_delivered(peer, &id);
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
