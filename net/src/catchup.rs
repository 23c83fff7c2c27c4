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
//! Bounds: one round reads at most [`CATCHUP_PAGES_MAX`] pages and runs at most
//! `catchup_pulls_concurrent` pulls at once; ids this node's store refused for good (untrusted,
//! expired, …) or that the peer no longer holds are remembered (up to [`CATCHUP_SKIP_IDS_MAX`])
//! and not pulled again while the process runs.

use std::collections::BTreeSet;
use std::sync::Mutex;

use quinn::Connection;
use store::manifest::SignedManifest;
use store::{Holding, SegmentId};
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::limits::{CATCHUP_PAGE_IDS_MAX, CATCHUP_PAGES_MAX, CATCHUP_SKIP_IDS_MAX};
use crate::pki::NodeId;
use crate::transfer::{self, Ctx, Received, SendOutcome, bump};
use crate::wire::{Msg, StreamCode, read_frame, write_frame};

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

/// One round as the puller on `conn`.
pub(crate) async fn pull_round(
    ctx: &Ctx,
    skip: &SkipSet,
    peer: &NodeId,
    conn: &Connection,
) -> Result<CatchupReport, String> {
    let mut report = CatchupReport::default();
    let (count, hash) = match request(ctx, conn, &Msg::DigestRequest).await? {
        Msg::Digest { count, hash } => (count, hash),
        other => return Err(format!("peer answered {} to DigestRequest", other.name())),
    };
    let store = ctx.store.clone();
    let mine = tokio::task::spawn_blocking(move || store.held_digest())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if mine.count == count && mine.hash == hash {
        report.in_sync = true;
        return Ok(report);
    }
    let mut after: Option<[u8; 32]> = None;
    for _ in 0..CATCHUP_PAGES_MAX {
        let (ids, more) = match request(ctx, conn, &Msg::PageRequest { after }).await? {
            Msg::Page { ids, more } => (ids, more),
            other => return Err(format!("peer answered {} to PageRequest", other.name())),
        };
        check_page(&ids, after.as_ref())?;
        report.pages += 1;
        report.ids_seen += ids.len() as u64;
        let last = ids.last().copied();
        let store = ctx.store.clone();
        let lacking: Vec<SegmentId> = tokio::task::spawn_blocking(move || {
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
        let mut running = JoinSet::new();
        for id in lacking.into_iter().filter(|id| !skip.contains(peer, id)) {
            while running.len() >= ctx.cfg.catchup_pulls_concurrent {
                if let Some(done) = running.join_next().await {
                    tally(done, peer, skip, &mut report);
                }
            }
            report.pulled += 1;
            let (ctx, peer, conn) = (ctx.clone(), peer.clone(), conn.clone());
            running.spawn(async move { (id, pull_one(&ctx, &peer, &conn, id).await) });
        }
        while let Some(done) = running.join_next().await {
            tally(done, peer, skip, &mut report);
        }
        match last {
            Some(last) if more => after = Some(last),
            _ => break,
        }
    }
    Ok(report)
}

fn tally(
    done: Result<(SegmentId, Pulled), tokio::task::JoinError>,
    peer: &NodeId,
    skip: &SkipSet,
    report: &mut CatchupReport,
) {
    match done {
        Ok((_, Pulled::Got(Received::Stored(_)))) => report.stored += 1,
        Ok((_, Pulled::Got(Received::Had))) => {}
        Ok((id, Pulled::NotHeld)) => skip.insert(Some(peer), id),
        Ok((id, Pulled::Got(Received::Rejected(reason)))) if reason.is_permanent() => {
            tracing::info!(seg_id = %id, %reason, "catch-up: refused for good; not pulled again");
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
                    tracing::warn!(peer = %peer, seg_id = %id, "catch-up: peer offered another segment than the one pulled");
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
    match tokio::task::spawn_blocking(move || store.held_digest()).await {
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
    let listed = tokio::task::spawn_blocking(move || {
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
            if !matches!(outcome, SendOutcome::NotStored) {
                tracing::warn!(peer = %peer, seg_id = %id, ?outcome, "catch-up: cannot serve a pulled segment");
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
