//! Listings over the control socket: every answer that grows with the store or the ledger goes
//! out as `Page` frames and an `End` (protocol in [`crate::control`]).
//!
//! Each page is read in a read transaction of its own, after the last key sent: the daemon
//! holds one page of rows and one page of JSON at a time, whatever the number of segments or
//! dead letters, and no read transaction stays open while a slow client reads (which would keep
//! the database from reusing the pages it frees).

use std::io::Write;

use serde::Serialize;
use serde_json::json;
use store::SegmentId;

use super::{Daemon, views};
use crate::control::{
    CONTROL_FRAME_BYTES_MAX, ControlLimits, PAGE_FRAME_HEAD, PAGE_FRAME_TAIL, Response,
    write_frame, write_raw_frame,
};
use crate::exit;

/// Why a listing stopped.
#[derive(Debug)]
pub(super) enum ListError {
    /// Writing to the client failed (gone, too slow): nothing more can be said on it.
    Client(std::io::Error),
    /// The listing failed; the client is told with an `Error` frame.
    Failed { code: u8, message: String },
}

impl ListError {
    fn failed(e: impl std::fmt::Display) -> ListError {
        ListError::Failed {
            code: exit::FAILED,
            message: format!("{e:#}"),
        }
    }

    fn usage(message: String) -> ListError {
        ListError::Failed {
            code: exit::USAGE,
            message,
        }
    }
}

impl From<store::StoreError> for ListError {
    fn from(e: store::StoreError) -> ListError {
        ListError::failed(e)
    }
}

impl From<relay::RelayError> for ListError {
    fn from(e: relay::RelayError) -> ListError {
        ListError::failed(e)
    }
}

impl From<anyhow::Error> for ListError {
    fn from(e: anyhow::Error) -> ListError {
        ListError::failed(e)
    }
}

/// Writes a listing's items as pages of at most `list_page_items` items, each page closed once
/// its JSON passes `list_page_bytes` (an item is never split, and one alone may pass it up to
/// the frame bound). Memory: one page of encoded JSON.
pub(super) struct Pages<'a, W: Write> {
    out: &'a mut W,
    items_max: usize,
    bytes_max: usize,
    buf: Vec<u8>,
    in_page: usize,
    count: u64,
}

impl<'a, W: Write> Pages<'a, W> {
    pub(super) fn new(out: &'a mut W, limits: &ControlLimits) -> Pages<'a, W> {
        Pages {
            out,
            items_max: limits.list_page_items,
            bytes_max: limits.list_page_bytes,
            buf: PAGE_FRAME_HEAD.to_vec(),
            in_page: 0,
            count: 0,
        }
    }

    /// Items of a page: what a listing reads from the database at a time.
    pub(super) fn page_items(&self) -> usize {
        self.items_max
    }

    /// Bytes of a page: what a listing reads from the database at a time, by size.
    pub(super) fn page_bytes(&self) -> usize {
        self.bytes_max
    }

    pub(super) fn push<T: Serialize>(&mut self, item: &T) -> Result<(), ListError> {
        let mark = self.buf.len();
        if self.in_page > 0 {
            self.buf.push(b',');
        }
        serde_json::to_writer(&mut self.buf, item).map_err(ListError::failed)?;
        if self.in_page > 0 && self.buf.len() + PAGE_FRAME_TAIL.len() > self.bytes_max {
            // Never split: the item opens the next page.
            let item = self.buf.split_off(mark + 1);
            self.buf.truncate(mark);
            self.flush()?;
            self.buf.extend_from_slice(&item);
        }
        self.in_page += 1;
        self.count += 1;
        if self.in_page >= self.items_max || self.buf.len() + PAGE_FRAME_TAIL.len() > self.bytes_max
        {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ListError> {
        if self.in_page == 0 {
            return Ok(());
        }
        self.buf.extend_from_slice(PAGE_FRAME_TAIL);
        if self.buf.len() > CONTROL_FRAME_BYTES_MAX as usize {
            return Err(ListError::failed(format!(
                "one item of the listing takes {} bytes, more than a control frame \
                 ({CONTROL_FRAME_BYTES_MAX})",
                self.buf.len()
            )));
        }
        write_raw_frame(self.out, &self.buf).map_err(ListError::Client)?;
        self.buf.clear();
        self.buf.extend_from_slice(PAGE_FRAME_HEAD);
        self.in_page = 0;
        Ok(())
    }

    /// Sends the last page and the `End` frame.
    pub(super) fn finish(mut self) -> Result<u64, ListError> {
        self.flush()?;
        write_frame(self.out, &Response::End { count: self.count }).map_err(ListError::Client)?;
        Ok(self.count)
    }
}

/// Every stored segment with its propagation, in id order.
pub(super) fn segments<W: Write>(d: &Daemon, pages: &mut Pages<'_, W>) -> Result<(), ListError> {
    let mut after: Option<SegmentId> = None;
    loop {
        let page = d.store.list_after(after.as_ref(), pages.page_items())?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.id);
        for s in &page {
            let mut row = views::segment(d, s)?;
            super::lifecycle_view::extend(&mut row, &super::lifecycle_view::fields(&d.store, s)?);
            pages.push(&row)?;
        }
    }
}

/// The sequence history per publisher, channel and name.
pub(super) fn sequences<W: Write>(
    d: &Daemon,
    pages: &mut Pages<'_, W>,
    channel: Option<&str>,
) -> Result<(), ListError> {
    for row in d.store.sequences(channel)? {
        pages.push(&crate::cmd::sequences::row_json(&row))?;
    }
    Ok(())
}

/// The recalled ids with their recalls (see [`super::lifecycle_view::recalled`]).
pub(super) fn recalled<W: Write>(d: &Daemon, pages: &mut Pages<'_, W>) -> Result<(), ListError> {
    for row in &super::lifecycle_view::recalled(&d.store)? {
        pages.push(row)?;
    }
    Ok(())
}

/// Every dead letter, in (segment, peer) order.
pub(super) fn dead_letters<W: Write>(
    d: &Daemon,
    pages: &mut Pages<'_, W>,
) -> Result<(), ListError> {
    let mut after: Option<relay::JobKey> = None;
    loop {
        let page = d
            .relay
            .dead_letters_after(after.as_ref(), pages.page_items())?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.key.clone());
        for dl in &page {
            pages.push(&views::dead_letter(dl))?;
        }
    }
}

/// The ids an export selection means: every stored segment, those of one channel, or the ones
/// named by prefixes (each resolved to exactly one stored segment).
pub(super) fn export_select<W: Write>(
    d: &Daemon,
    pages: &mut Pages<'_, W>,
    all: bool,
    channel: Option<&str>,
    ids: &[String],
) -> Result<(), ListError> {
    if !all && channel.is_none() {
        // Bounded by the request frame: the prefixes came in it.
        let mut chosen = Vec::with_capacity(ids.len());
        for prefix in ids {
            chosen.push(d.store.resolve(prefix)?.to_string());
        }
        for id in &chosen {
            pages.push(id)?;
        }
        return Ok(());
    }
    let mut after: Option<SegmentId> = None;
    loop {
        let page = d.store.list_after(after.as_ref(), pages.page_items())?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.id);
        for s in page
            .iter()
            .filter(|s| all || channel == Some(s.row.channel.as_str()))
        {
            pages.push(&s.id.to_string())?;
        }
    }
}

/// Requeues or purges the dead letters of `peer`: all of them, a page at a time (one ledger
/// transaction per page), or those of the one segment `segment` names (a prefix of at least
/// [`store::limits::ID_PREFIX_HEX_MIN`] hex characters, as everywhere else; one that matches
/// several segments is refused as ambiguous, before anything is done).
pub(super) fn dlq_act<W: Write>(
    d: &Daemon,
    pages: &mut Pages<'_, W>,
    peer: &str,
    segment: Option<&str>,
    requeue: bool,
) -> Result<(), ListError> {
    let peer: relay::NodeId = peer
        .parse()
        .map_err(|e| ListError::usage(format!("--peer {peer:?}: {e}")))?;
    let prefix = segment
        .map(store::id::parse_prefix)
        .transpose()
        .map_err(|e| {
            let given = segment.unwrap_or_default();
            ListError::usage(format!("--segment {given:?}: {e}"))
        })?;
    let now = d.clock.now_ms();
    let matches =
        |l: &relay::DeadLetter| l.key.peer == peer && prefix.is_none_or(|p| p.matches(&l.key.seg));
    if let Some(p) = prefix {
        // Checked in full first: nothing is done for an ambiguous prefix. The matches are the
        // dead letters of one peer whose ids share the prefix: rows are in segment order, so
        // counting distinct segments needs only the last one seen.
        let mut keys = Vec::new();
        let (mut segments, mut last_seg) = (0usize, None);
        let mut after: Option<relay::JobKey> = None;
        loop {
            let page = d
                .relay
                .dead_letters_after(after.as_ref(), pages.page_items())?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            for l in page.iter().filter(|l| matches(l)) {
                if last_seg != Some(l.key.seg) {
                    segments += 1;
                    last_seg = Some(l.key.seg);
                }
                if segments == 1 {
                    keys.push(l.key.clone());
                }
            }
        }
        if segments > 1 {
            return Err(ListError::failed(format!(
                "segment prefix {p} matches {segments} dead letters of peer {peer}; give more characters"
            )));
        }
        if keys.is_empty() {
            // Nothing to do is not a failure (the client says so); a typo in the peer is.
            return known_peer(d, &peer);
        }
        return act(d, pages, keys, now, requeue);
    }
    let mut after: Option<relay::JobKey> = None;
    let mut done = 0u64;
    loop {
        let page = d
            .relay
            .dead_letters_after(after.as_ref(), pages.page_items())?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        let keys: Vec<relay::JobKey> = page
            .into_iter()
            .filter(|l| matches(l))
            .map(|l| l.key)
            .collect();
        done += keys.len() as u64;
        if !keys.is_empty() {
            act(d, pages, keys, now, requeue)?;
        }
    }
    if done == 0 {
        return known_peer(d, &peer);
    }
    Ok(())
}

/// A peer named by the operator with no dead letters must at least be one of the node's
/// peers: otherwise it is most likely a typo, refused as a usage error with the known ones.
fn known_peer(d: &Daemon, peer: &relay::NodeId) -> Result<(), ListError> {
    let mut known: Vec<String> = d
        .node
        .peers()
        .into_iter()
        .map(|p| p.id.to_string())
        .collect();
    if known.iter().any(|k| k == peer.as_str()) {
        return Ok(());
    }
    known.sort();
    let list = if known.is_empty() {
        "this node has no peers (known_peers in the config)".to_owned()
    } else {
        format!("the known peers are {}", known.join(", "))
    };
    Err(ListError::usage(format!("unknown peer {peer}: {list}")))
}

fn act<W: Write>(
    d: &Daemon,
    pages: &mut Pages<'_, W>,
    keys: Vec<relay::JobKey>,
    now: u64,
    requeue: bool,
) -> Result<(), ListError> {
    let results: Vec<(relay::JobKey, String)> = if requeue {
        d.relay
            .requeue_keys_blocking(keys, now)?
            .into_iter()
            .map(|(k, r)| (k, format!("{r:?}")))
            .collect()
    } else {
        d.relay
            .purge_keys_blocking(keys, now)?
            .into_iter()
            .map(|(k, r)| (k, format!("{r:?}")))
            .collect()
    };
    for (key, result) in results {
        pages.push(&json!({
            "segment": key.seg.to_string(),
            "peer": key.peer.to_string(),
            "result": result,
        }))?;
    }
    Ok(())
}

/// The fleet view (see [`crate::fleetview`]).
pub(super) fn fleet<W: Write>(
    d: &Daemon,
    pages: &mut Pages<'_, W>,
    query: &crate::fleetview::Query,
) -> Result<(), ListError> {
    use crate::fleetview::{WalkError, walk};
    let Some(fleet) = d.node.fleet() else {
        return Err(ListError::usage(
            "fleet receipts are off on this node ([fleet] gossip_interval_ms = 0)".into(),
        ));
    };
    let now = d.clock.now_ms();
    match walk(&fleet.book, &d.store, &d.cfg, query, now, |item| {
        pages.push(&item)
    }) {
        Ok(_) => Ok(()),
        Err(WalkError::Usage(m)) => Err(ListError::usage(m)),
        Err(WalkError::NotFound(m)) => Err(ListError::failed(m)),
        Err(WalkError::Store(e)) => Err(e.into()),
        Err(WalkError::Emit(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::read_frame;

    fn limits(items: usize, bytes: usize) -> ControlLimits {
        ControlLimits {
            list_page_items: items,
            list_page_bytes: bytes,
            ..ControlLimits::default()
        }
    }

    /// The frames a listing of `items` gives under `limits`, decoded.
    fn frames(items: &[serde_json::Value], l: &ControlLimits) -> Vec<Response> {
        let mut out = Vec::new();
        let mut pages = Pages::new(&mut out, l);
        for item in items {
            pages.push(item).unwrap();
        }
        assert_eq!(pages.finish().unwrap(), items.len() as u64);
        let mut r = out.as_slice();
        let mut got = Vec::new();
        while let Some(frame) = read_frame::<_, Response>(&mut r).unwrap() {
            got.push(frame);
        }
        got
    }

    fn pages_of(frames: &[Response]) -> Vec<Vec<serde_json::Value>> {
        let (last, pages) = frames.split_last().unwrap();
        let total: usize = pages
            .iter()
            .map(|p| match p {
                Response::Page { items } => items.len(),
                other => panic!("not a page: {other:?}"),
            })
            .sum();
        assert_eq!(
            last,
            &Response::End {
                count: total as u64
            }
        );
        pages
            .iter()
            .map(|p| match p {
                Response::Page { items } => items.clone(),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn pages_hold_at_most_their_items_and_keep_every_item_in_order() {
        let items: Vec<serde_json::Value> = (0..10).map(|i| json!({ "i": i })).collect();
        let pages = pages_of(&frames(&items, &limits(3, 1 << 20)));
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![3, 3, 3, 1]
        );
        assert_eq!(pages.concat(), items);
        // Exactly a multiple of the page: no empty page at the end.
        let pages = pages_of(&frames(&items[..9], &limits(3, 1 << 20)));
        assert_eq!(pages.len(), 3);
        // Nothing to list: only the end.
        assert_eq!(
            frames(&[], &limits(3, 1 << 20)),
            vec![Response::End { count: 0 }]
        );
    }

    #[test]
    fn pages_close_at_their_byte_bound_and_never_split_an_item() {
        let item = |n: usize| json!("x".repeat(n));
        let items: Vec<serde_json::Value> = vec![item(100), item(100), item(500), item(10)];
        let l = limits(100, 256);
        let frames = frames(&items, &l);
        for f in &frames[..frames.len() - 1] {
            let len = serde_json::to_vec(f).unwrap().len();
            // A page passes the bound only with its one item.
            if let Response::Page { items } = f {
                assert!(
                    len <= 256 || items.len() == 1,
                    "{len} bytes, {} items",
                    items.len()
                );
            }
        }
        let pages = pages_of(&frames);
        assert_eq!(pages.concat(), items);
        assert_eq!(pages[0].len(), 2, "two small items share a page");
        assert_eq!(pages[1], vec![item(500)], "a large item travels alone");
    }

    #[test]
    fn an_item_larger_than_a_frame_fails_the_listing_instead_of_the_frame() {
        let mut out = Vec::new();
        let mut pages = Pages::new(&mut out, &limits(10, 1024));
        let huge = json!("y".repeat(CONTROL_FRAME_BYTES_MAX as usize));
        assert!(matches!(pages.push(&huge), Err(ListError::Failed { .. })));
        assert!(out.is_empty(), "nothing oversized was written");
    }
}
