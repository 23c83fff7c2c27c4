//! The fleet view (`edged fleet`, the `fleet:` line of `status`, the fleet metrics): what the
//! receipt book says about every segment, read a page at a time.
//!
//! The same walk serves the daemon (its items go out as control-socket pages) and the CLI
//! when no daemon runs (it opens the store's book itself). Its first item is the header —
//! the roster and the staleness bound — then one item per segment (or, for `--node`, one per
//! segment with that node's state). Verdicts follow [`net::receipts::verdict`].

use std::collections::BTreeMap;

use net::receipts::book::{Book, Head};
use net::receipts::verdict::{MemberState, Roster, SegmentView, Verdict, segment_view};
use serde::Serialize;
use serde_json::{Value, json};
use store::{SegmentId, Store, StoreError};

use crate::config::Config;

/// Segments read from the book at a time.
pub const FLEET_PAGE_SEGMENTS: usize = 256;

/// What `edged fleet` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Query {
    /// Every segment with its verdict.
    All,
    /// One segment (an id or a unique prefix of at least 4 hex characters), every member.
    Segment(String),
    /// What one node holds and lacks.
    Node(String),
}

/// Why a walk stopped.
#[derive(Debug)]
pub enum WalkError<E> {
    /// The query is malformed: not a segment id prefix, not a node id (exit code 2, a bad
    /// command line).
    Usage(String),
    /// The query is well formed but names no segment the book knows, several of them, or a
    /// node outside the roster that sent no receipt (exit code 1, like a segment prefix that
    /// matches nothing in the store).
    NotFound(String),
    Store(StoreError),
    /// The consumer of the items failed.
    Emit(E),
}

impl<E> From<StoreError> for WalkError<E> {
    fn from(e: StoreError) -> Self {
        WalkError::Store(e)
    }
}

/// The roster in use and every node's head.
pub fn roster(
    book: &Book,
    cfg: &Config,
) -> Result<(Roster, BTreeMap<base::NodeId, Head>), StoreError> {
    let heads: BTreeMap<_, _> = book.heads()?.into_iter().collect();
    let peers: Vec<base::NodeId> = cfg.net.known_peers.keys().cloned().collect();
    let roster = Roster::new(&cfg.fleet.members, &cfg.net.node_id, &peers, heads.keys());
    Ok((roster, heads))
}

/// Counts of segments by verdict (segments no roster member holds any more — expired or
/// evicted everywhere — are not counted).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub everywhere: u64,
    pub partial: u64,
    pub unknown: u64,
}

impl Counts {
    pub fn add(&mut self, v: &Verdict) {
        match v {
            Verdict::Everywhere => self.everywhere += 1,
            Verdict::Partial { held: 0, .. } | Verdict::Unknown { held: 0, .. } => {}
            Verdict::Partial { .. } => self.partial += 1,
            Verdict::Unknown { .. } => self.unknown += 1,
        }
    }
}

/// Every segment's verdict, counted (one pass over the book).
pub fn counts(book: &Book, cfg: &Config, now_ms: u64) -> Result<(Counts, Roster), StoreError> {
    let (roster, heads) = roster(book, cfg)?;
    let mut counts = Counts::default();
    let mut after = None;
    loop {
        let page = book.segments_after(after.as_ref(), FLEET_PAGE_SEGMENTS)?;
        let Some(last) = page.last() else {
            return Ok((counts, roster));
        };
        after = Some(*last);
        for seg in &page {
            let holders = book.holders(seg)?;
            let view = segment_view(&roster, &holders, &heads, now_ms, cfg.fleet.stale_after_ms);
            counts.add(&view.verdict);
        }
    }
}

fn header(roster: &Roster, cfg: &Config, now_ms: u64) -> Value {
    json!({
        "roster": roster,
        "stale_after_ms": cfg.fleet.stale_after_ms,
        "now_ms": now_ms,
    })
}

fn segment_item(id: &SegmentId, store: &Store, view: &SegmentView) -> Result<Value, StoreError> {
    let row = store.get(id)?;
    Ok(json!({
        "segment": id.to_string(),
        "name": row.as_ref().map(|r| r.name.clone()),
        "channel": row.as_ref().map(|r| r.channel.clone()),
        "verdict": view.verdict.label(),
        "kind": view.verdict.kind(),
        "held": view.members.iter().filter(|m| m.state == MemberState::Holds).count(),
        "of": view.members.len(),
        "missing": view.missing().map(|m| m.node.to_string()).collect::<Vec<_>>(),
        "members": view.members,
    }))
}

/// Walks the book for `query`, calling `emit` with the header and then each item; returns
/// the number of items after the header.
pub fn walk<E>(
    book: &Book,
    store: &Store,
    cfg: &Config,
    query: &Query,
    now_ms: u64,
    mut emit: impl FnMut(Value) -> Result<(), E>,
) -> Result<u64, WalkError<E>> {
    let (roster, heads) = roster(book, cfg)?;
    let stale = cfg.fleet.stale_after_ms;
    let view = |seg: &SegmentId| -> Result<SegmentView, StoreError> {
        let holders = book.holders(seg)?;
        Ok(segment_view(&roster, &holders, &heads, now_ms, stale))
    };
    match query {
        Query::Segment(prefix) => {
            let parsed = store::id::parse_prefix(prefix)
                .map_err(|e| WalkError::Usage(format!("segment `{prefix}`: {e}")))?;
            let (low, high) = parsed.range();
            // Segments the book names, and those stored here (before this node's own receipt
            // names them): at most two of each tell one from several.
            let mut found = book.segments_in(&low, &high, 2)?;
            found.extend(stored_in(store, &low, &high)?);
            found.sort_unstable();
            found.dedup();
            let id = match found[..] {
                [id] => id,
                [] => {
                    return Err(WalkError::NotFound(format!(
                        "no receipt names a segment starting with {prefix}, and none is stored here"
                    )));
                }
                _ => {
                    return Err(WalkError::NotFound(format!(
                        "several segments start with {prefix}: give more of the id"
                    )));
                }
            };
            emit(header(&roster, cfg, now_ms)).map_err(WalkError::Emit)?;
            emit(segment_item(&id, store, &view(&id)?)?).map_err(WalkError::Emit)?;
            Ok(1)
        }
        Query::Node(name) => {
            let node: base::NodeId = name
                .parse()
                .map_err(|e| WalkError::Usage(format!("node `{name}`: {e}")))?;
            if !roster.members.contains(&node) && !heads.contains_key(&node) {
                let known: Vec<String> = roster.members.iter().map(|n| n.to_string()).collect();
                return Err(WalkError::NotFound(format!(
                    "node `{name}` is not in the roster and sent no receipt (roster: {})",
                    known.join(", ")
                )));
            }
            emit(header(&roster, cfg, now_ms)).map_err(WalkError::Emit)?;
            let mut count = 0;
            each_segment(
                book,
                store,
                |seg| {
                    let holders = book.holders(seg)?;
                    let mine = holders.iter().find(|(n, _)| n == &node).map(|(_, h)| *h);
                    let state = MemberState::of(mine.as_ref());
                    let row = store.get(seg)?;
                    count += 1;
                    Ok(Some(json!({
                        "segment": seg.to_string(),
                        "name": row.as_ref().map(|r| r.name.clone()),
                        "channel": row.as_ref().map(|r| r.channel.clone()),
                        "node": node.to_string(),
                        "state": state,
                        "at_ms": mine.map(|h| h.at_ms),
                    })))
                },
                &mut emit,
            )?;
            Ok(count)
        }
        Query::All => {
            emit(header(&roster, cfg, now_ms)).map_err(WalkError::Emit)?;
            let mut count = 0;
            each_segment(
                book,
                store,
                |seg| {
                    count += 1;
                    Ok(Some(segment_item(seg, store, &view(seg)?)?))
                },
                &mut emit,
            )?;
            Ok(count)
        }
    }
}

/// Segments stored here with ids in `low..=high`, at most two (enough to tell one from
/// several).
fn stored_in(
    store: &Store,
    low: &SegmentId,
    high: &SegmentId,
) -> Result<Vec<SegmentId>, StoreError> {
    let mut out = Vec::with_capacity(2);
    if store.get(low)?.is_some() {
        out.push(*low);
    }
    out.extend(
        store
            .list_after(Some(low), 2)?
            .into_iter()
            .map(|s| s.id)
            .filter(|id| id <= high),
    );
    out.truncate(2);
    Ok(out)
}

/// Calls `item` for every segment the book names or this node stores, in id order, a page
/// at a time, emitting what it returns. A segment stored here before this node's own receipt
/// names it (its receipt follows within a reconcile tick) or after that receipt was forgotten
/// (`receipts_per_node_max`) is still listed, with the verdict its receipts give.
fn each_segment<E>(
    book: &Book,
    store: &Store,
    mut item: impl FnMut(&SegmentId) -> Result<Option<Value>, StoreError>,
    emit: &mut impl FnMut(Value) -> Result<(), E>,
) -> Result<(), WalkError<E>> {
    let mut after = None;
    loop {
        let named = book.segments_after(after.as_ref(), FLEET_PAGE_SEGMENTS)?;
        let stored: Vec<SegmentId> = store
            .list_after(after.as_ref(), FLEET_PAGE_SEGMENTS)?
            .into_iter()
            .map(|s| s.id)
            .collect();
        let Some(page) = merge_page(&named, &stored, FLEET_PAGE_SEGMENTS) else {
            return Ok(());
        };
        after = page.last().copied();
        for seg in &page {
            if let Some(v) = item(seg)? {
                emit(v).map_err(WalkError::Emit)?;
            }
        }
    }
}

/// One page of the union of two sorted pages read after the same cursor, each at most
/// `limit` long: every id up to the end of the shorter reach, so nothing beyond a full page's
/// last id (where that source may have more) is taken before the next read. `None` when both
/// are empty. Never empty otherwise: a full page's last id is itself within reach.
fn merge_page(a: &[SegmentId], b: &[SegmentId], limit: usize) -> Option<Vec<SegmentId>> {
    if a.is_empty() && b.is_empty() {
        return None;
    }
    let reach = |p: &[SegmentId]| (p.len() >= limit).then(|| p.last().copied()).flatten();
    let bound = match (reach(a), reach(b)) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    let mut page: Vec<SegmentId> = a
        .iter()
        .chain(b)
        .copied()
        .filter(|id| bound.is_none_or(|bound| *id <= bound))
        .collect();
    page.sort_unstable();
    page.dedup();
    Some(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: &[u8]) -> Vec<SegmentId> {
        n.iter().map(|&b| SegmentId([b; 32])).collect()
    }

    #[test]
    fn merge_page_takes_the_union_up_to_the_shorter_reach() {
        assert_eq!(merge_page(&[], &[], 2), None);
        // Neither page is full: both sources are exhausted, everything is taken.
        assert_eq!(
            merge_page(&ids(&[1, 5]), &ids(&[3]), 3),
            Some(ids(&[1, 3, 5]))
        );
        // `a` is full up to 4: `b`'s 7 waits for the next read (a may hold 5 and 6).
        assert_eq!(
            merge_page(&ids(&[2, 4]), &ids(&[1, 4, 7]), 2),
            Some(ids(&[1, 2, 4]))
        );
        // Both full: the smaller last id bounds the page.
        assert_eq!(
            merge_page(&ids(&[1, 9]), &ids(&[3, 5]), 2),
            Some(ids(&[1, 3, 5]))
        );
    }
}
