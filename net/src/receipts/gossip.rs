//! Receipts between nodes: this node's own receipts made from its store, and gossip of every
//! receipt over the peers' connections.
//!
//! **Own receipts** ([`Fleet::reconcile`]): whenever the store changed (and at least every
//! `alive_interval_ms`), the node walks its stored segments beside its own latest receipts,
//! both in id order, and makes a `Stored` receipt (at the segment's stored-at time) for each
//! segment stored without one, a `Gone` receipt for each one its receipts call stored that is
//! no longer here, and an `Alive` receipt when it made none for `alive_interval_ms`. So every
//! path into or out of the store — a peer, an import, catch-up, eviction, expiry, an offline
//! import before the daemon started — is covered by one comparison, and a crash between a
//! commit and its receipt is repaired by the next pass.
//!
//! **Gossip** ([`pull_round`], [`serve`]): each side of a connection, on connect and every
//! `receipt_interval_ms`, asks the other for the digest of its heads (node, highest sequence
//! number); if it differs, it reads the heads in pages and, for each node whose head is ahead
//! of its own, pages of that node's receipts after its own head. Each receipt is verified
//! ([`super::SignedReceipt::verify`]; a certificate it names that this node lacks comes in the
//! same page and is checked against the fleet CA) before it is merged.
//!
//! Bounds — what a peer can make a node spend on receipts:
//!
//! - a frame is at most `frame_bytes_max`; a heads page at most [`RECEIPT_HEADS_PAGE_MAX`]
//!   heads; a receipt page at most [`RECEIPT_PAGE_MAX`] receipts of [`SIGNED_RECEIPT_BYTES_MAX`]
//!   and [`RECEIPT_PAGE_CERTS_MAX`] certificates of [`RECEIPT_CERT_BYTES_MAX`];
//! - a round reads at most `fleet_nodes_max` / [`RECEIPT_HEADS_PAGE_MAX`] + 1 heads pages and
//!   `receipt_pages_per_round_max` receipt pages: at most that × `frame_bytes_max` bytes per
//!   round; a round cut there goes on from the new heads in the next one;
//! - rounds with one peer run one at a time, `receipt_interval_ms` apart;
//! - the first receipt that does not verify ends the round (those before it are kept) and is
//!   counted; what the book keeps is bounded by [`super::book::BookLimits`].
//!
//! Receipts are never a reason to send a payload: nothing here touches the relay.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quinn::Connection;
use rustls::pki_types::CertificateDer;
use store::{SegmentId, Store, StoreError};

use super::book::{Book, BookLimits, Kind, MergeReport};
use super::{
    Event, RECEIPT_CERT_BYTES_MAX, Receipt, ReceiptError, SIGNED_RECEIPT_BYTES_MAX, SignedReceipt,
    Signer, SignerError, check_cert,
};
use crate::config::NetConfig;
use crate::disk::{self, DiskMode};
use crate::limits::{RECEIPT_HEADS_PAGE_MAX, RECEIPT_PAGE_CERTS_MAX, RECEIPT_PAGE_MAX};
use crate::pki::{NodeId, NodeIdentity};
use crate::transfer::Ctx;
use crate::wire::{Msg, StreamCode, write_frame};

/// Counters of a node's receipts.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Receipts this node made about itself.
    pub made: AtomicU64,
    /// Receipts of other nodes merged (new or newer than what was held).
    pub merged: AtomicU64,
    /// Receipts refused: malformed, unknown version, bad certificate, bad signature, another
    /// node's receipt in a page, out of order.
    pub refused: AtomicU64,
    /// Receipts refused because the book holds `fleet_nodes_max` nodes.
    pub refused_nodes: AtomicU64,
    /// Old receipts forgotten to stay within `receipts_per_node_max`.
    pub forgotten: AtomicU64,
    /// Gossip bytes this node sent and received (frames, both roles).
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Gossip rounds run as the puller, and those that found the digests equal.
    pub rounds: AtomicU64,
    pub rounds_in_sync: AtomicU64,
}

/// A plain copy of [`FleetStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FleetStatsSnapshot {
    pub made: u64,
    pub merged: u64,
    pub refused: u64,
    pub refused_nodes: u64,
    pub forgotten: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub rounds: u64,
    pub rounds_in_sync: u64,
}

impl FleetStats {
    pub fn snapshot(&self) -> FleetStatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FleetStatsSnapshot {
            made: g(&self.made),
            merged: g(&self.merged),
            refused: g(&self.refused),
            refused_nodes: g(&self.refused_nodes),
            forgotten: g(&self.forgotten),
            bytes_sent: g(&self.bytes_sent),
            bytes_received: g(&self.bytes_received),
            rounds: g(&self.rounds),
            rounds_in_sync: g(&self.rounds_in_sync),
        }
    }

    fn count_merge(&self, r: &MergeReport) {
        self.merged.fetch_add(r.merged, Ordering::Relaxed);
        self.refused_nodes
            .fetch_add(r.refused_nodes, Ordering::Relaxed);
        self.forgotten.fetch_add(r.forgotten, Ordering::Relaxed);
    }
}

/// Why the fleet part of a node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Signer(#[from] SignerError),
    #[error("receipt book: {0}")]
    Book(#[from] StoreError),
}

/// A node's receipts: its book, its signer, the fleet CA, the counters.
#[derive(Debug)]
pub struct Fleet {
    pub book: Book,
    signer: Arc<Signer>,
    ca: CertificateDer<'static>,
    alive_interval_ms: u64,
    pub stats: FleetStats,
}

/// What one gossip round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GossipReport {
    pub in_sync: bool,
    pub pages: usize,
    pub merged: u64,
    /// The round stopped at `receipt_pages_per_round_max`.
    pub cut: bool,
    /// Put off: the disk has no room for receipts.
    pub deferred: bool,
}

impl Fleet {
    /// Opens the book in `store` and registers this node's certificate in it.
    pub fn open(
        store: Store,
        identity: &NodeIdentity,
        cfg: &NetConfig,
    ) -> Result<Arc<Fleet>, FleetError> {
        let signer = Signer::new(identity)?;
        let limits = BookLimits {
            nodes_max: cfg.fleet_nodes_max,
            receipts_per_node_max: cfg.receipts_per_node_max,
        };
        let book = Book::open(store, limits)?;
        book.put_cert(&identity.id, &identity.cert)?;
        Ok(Arc::new(Fleet {
            book,
            signer,
            ca: identity.ca_cert.clone(),
            alive_interval_ms: cfg.alive_interval_ms,
            stats: FleetStats::default(),
        }))
    }

    pub fn node(&self) -> &NodeId {
        self.signer.node()
    }

    /// Makes the receipts this node owes about itself (see the module docs); returns how many.
    /// `walk`: compare the whole store with this node's receipts (the store changed); without
    /// it only a liveness receipt is made, when one is due — an idle node does not walk a store
    /// of many segments every time. Memory: two pages, whatever the size of the store.
    /// `None`: put off, the disk is full (see [`Store::has_metadata_room`]); the caller tries
    /// again later.
    pub fn reconcile(
        &self,
        store: &Store,
        now_ms: u64,
        walk: bool,
    ) -> Result<Option<u64>, StoreError> {
        if !store.has_metadata_room() {
            return Ok(None);
        }
        let mut events = Vec::new();
        if walk {
            self.walk_store(store, now_ms, &mut events)?;
        }
        let me = self.signer.node();
        let newest = self.book.head(me)?.map_or(0, |h| h.newest_at_ms);
        if events.is_empty() && now_ms.saturating_sub(newest) < self.alive_interval_ms {
            return Ok(Some(0));
        }
        if now_ms.saturating_sub(newest) >= self.alive_interval_ms || newest == 0 {
            let held = store.segment_counts()?.stored;
            events.push((now_ms, Event::Alive { held }));
        }
        let made = events.len() as u64;
        self.book.record_own(&self.signer, events, now_ms)?;
        self.stats.made.fetch_add(made, Ordering::Relaxed);
        Ok(Some(made))
    }

    /// The receipts the store owes: stored segments without a `Stored` receipt, `Stored`
    /// receipts of segments no longer here.
    fn walk_store(
        &self,
        store: &Store,
        now_ms: u64,
        events: &mut Vec<(u64, Event)>,
    ) -> Result<(), StoreError> {
        const PAGE: usize = 512;
        let me = self.signer.node().clone();
        let mut held = Cursor::new(|after: Option<[u8; 32]>| {
            let page = store.list_after(after.map(SegmentId).as_ref(), PAGE)?;
            Ok(page
                .into_iter()
                .map(|s| (s.id.0, s.row.stored_at_ms))
                .collect())
        });
        let mut said = Cursor::new(|after: Option<[u8; 32]>| {
            let page = self.book.latest_of(&me, after.as_ref(), PAGE)?;
            Ok(page
                .into_iter()
                .filter_map(|l| match l.kind {
                    Kind::Stored => Some((l.subject, 1)),
                    Kind::Gone => Some((l.subject, 0)),
                    Kind::Alive => None,
                })
                .collect())
        });
        // Bounded: each step consumes an item of one of the two finite, ordered walks.
        loop {
            match (held.peek()?, said.peek()?) {
                (None, None) => break,
                (Some((id, at)), s) if s.is_none_or(|(sid, _)| id < sid) => {
                    events.push((at, Event::Stored { segment: id }));
                    held.next();
                }
                (Some((id, at)), Some((sid, stored))) if id == sid => {
                    if stored == 0 {
                        events.push((at, Event::Stored { segment: id }));
                    }
                    held.next();
                    said.next();
                }
                (_, Some((sid, stored))) => {
                    // Mutation point (INV-31): a copy that left the store is never reported.
                    if stored == 1 && !store::mutants::active("no_gone_receipt") {
                        events.push((now_ms, Event::Gone { segment: sid }));
                    }
                    said.next();
                }
                (Some(_), None) => unreachable!("matched by the second arm"),
            }
        }
        Ok(())
    }

    /// Verifies a page of `node`'s receipts after `after_seq`: the valid prefix, and why the
    /// rest was refused, if it was. Certificates it brings are checked and kept.
    pub fn verify_page(
        &self,
        node: &NodeId,
        after_seq: u64,
        receipts: &[Vec<u8>],
        certs: &[Vec<u8>],
    ) -> (Vec<(Receipt, SignedReceipt)>, Option<ReceiptError>) {
        let offered: HashMap<[u8; 32], &Vec<u8>> = certs
            .iter()
            .filter(|c| c.len() <= RECEIPT_CERT_BYTES_MAX)
            .map(|c| (*blake3::hash(c).as_bytes(), c))
            .collect();
        let mut usable: HashMap<[u8; 32], CertificateDer<'static>> = HashMap::new();
        let mut valid = Vec::with_capacity(receipts.len());
        let mut prev = after_seq;
        for bytes in receipts {
            match self.verify_one(node, prev, bytes, &offered, &mut usable) {
                Ok(pair) => {
                    prev = pair.0.seq;
                    valid.push(pair);
                }
                Err(e) => return (valid, Some(e)),
            }
        }
        (valid, None)
    }

    fn verify_one(
        &self,
        node: &NodeId,
        prev: u64,
        bytes: &[u8],
        offered: &HashMap<[u8; 32], &Vec<u8>>,
        usable: &mut HashMap<[u8; 32], CertificateDer<'static>>,
    ) -> Result<(Receipt, SignedReceipt), ReceiptError> {
        let signed = SignedReceipt::decode(bytes)?;
        let claimed = signed.receipt()?;
        if &claimed.node != node {
            return Err(ReceiptError::Unrequested {
                want: node.clone(),
                got: claimed.node,
            });
        }
        if claimed.seq <= prev {
            return Err(ReceiptError::OutOfOrder {
                node: node.clone(),
                seq: claimed.seq,
                after: prev,
            });
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = usable.entry(signed.cert) {
            let held = self
                .book
                .cert(node, &signed.cert)
                .map_err(|e| ReceiptError::BadCertificate(e.to_string()))?;
            let cert = match held {
                Some(c) => c,
                None => {
                    let der = offered
                        .get(&signed.cert)
                        .ok_or(ReceiptError::UnknownCertificate)?;
                    let cert = CertificateDer::from(der.to_vec());
                    let named = check_cert(&self.ca, &cert, claimed.at_ms)?;
                    if &named != node {
                        return Err(ReceiptError::WrongNode {
                            claimed: node.clone(),
                            cert: named,
                        });
                    }
                    let kept = self
                        .book
                        .put_cert(node, &cert)
                        .map_err(|e| ReceiptError::BadCertificate(e.to_string()))?;
                    if !kept {
                        return Err(ReceiptError::BadCertificate(format!(
                            "{node} has {RECEIPT_PAGE_CERTS_MAX} certificates already"
                        )));
                    }
                    cert
                }
            };
            slot.insert(cert);
        }
        let cert = &usable[&signed.cert];
        let receipt = signed.verify(cert)?;
        Ok((receipt, signed))
    }

    /// Verifies and merges receipts of any nodes (a need-list's), each checked like a gossiped
    /// one; returns the merge and the number refused.
    pub fn merge_foreign(
        &self,
        receipts: &[Vec<u8>],
        certs: &[Vec<u8>],
    ) -> Result<(MergeReport, u64), StoreError> {
        let store = self.book.store();
        if !store.has_metadata_room() {
            return Err(StoreError::Io {
                op: "merge receipts into",
                path: store.layout().root().to_owned(),
                source: std::io::Error::from(std::io::ErrorKind::StorageFull),
            });
        }
        let offered: HashMap<[u8; 32], &Vec<u8>> = certs
            .iter()
            .filter(|c| c.len() <= RECEIPT_CERT_BYTES_MAX)
            .map(|c| (*blake3::hash(c).as_bytes(), c))
            .collect();
        let mut usable = HashMap::new();
        let mut valid = Vec::new();
        let mut refused = 0;
        for bytes in receipts {
            let node = SignedReceipt::decode(bytes)
                .and_then(|s| s.receipt())
                .map(|r| r.node);
            match node.and_then(|n| self.verify_one(&n, 0, bytes, &offered, &mut usable)) {
                Ok(pair) => valid.push(pair),
                Err(_) => refused += 1,
            }
        }
        self.stats.refused.fetch_add(refused, Ordering::Relaxed);
        let report = self.book.merge(valid)?;
        self.stats.count_merge(&report);
        Ok((report, refused))
    }
}

/// A walk over pages of ordered items.
struct Cursor<T, F> {
    fetch: F,
    page: std::vec::IntoIter<([u8; 32], T)>,
    last: Option<[u8; 32]>,
    done: bool,
    peeked: Option<([u8; 32], T)>,
}

impl<T: Copy, F: FnMut(Option<[u8; 32]>) -> Result<Vec<([u8; 32], T)>, StoreError>> Cursor<T, F> {
    fn new(fetch: F) -> Self {
        Cursor {
            fetch,
            page: Vec::new().into_iter(),
            last: None,
            done: false,
            peeked: None,
        }
    }

    fn peek(&mut self) -> Result<Option<([u8; 32], T)>, StoreError> {
        if self.peeked.is_none() {
            if let Some(item) = self.page.next() {
                self.peeked = Some(item);
            } else if !self.done {
                let page = (self.fetch)(self.last)?;
                self.done = page.is_empty();
                self.page = page.into_iter();
                self.peeked = self.page.next();
            }
            if let Some((id, _)) = self.peeked {
                self.last = Some(id);
            }
        }
        Ok(self.peeked)
    }

    fn next(&mut self) {
        self.peeked = None;
    }
}

fn frame_len(msg: &Msg) -> u64 {
    postcard::to_allocvec(msg).map_or(0, |v| v.len() as u64 + 4)
}

/// One request/answer on a new stream (as catch-up asks), counted as gossip traffic. A
/// request that got no answer counts as sent: it was written, or the stream failed first.
async fn request(ctx: &Ctx, fleet: &Fleet, conn: &Connection, msg: &Msg) -> Result<Msg, String> {
    let reply = crate::catchup::request(ctx, conn, msg).await;
    fleet
        .stats
        .bytes_sent
        .fetch_add(frame_len(msg), Ordering::Relaxed);
    if let Ok(reply) = &reply {
        fleet
            .stats
            .bytes_received
            .fetch_add(frame_len(reply), Ordering::Relaxed);
    }
    reply
}

async fn on_book<T: Send + 'static>(
    mode: DiskMode,
    fleet: &Arc<Fleet>,
    f: impl FnOnce(&Fleet) -> T + Send + 'static,
) -> Result<T, String> {
    let fleet = fleet.clone();
    disk::blocking(mode, move || f(&fleet))
        .await
        .map_err(|e| e.to_string())
}

/// Checks a heads page: at most [`RECEIPT_HEADS_PAGE_MAX`], strictly increasing after `after`.
pub(crate) fn check_heads(heads: &[(NodeId, u64)], after: Option<&NodeId>) -> Result<(), String> {
    if heads.len() > RECEIPT_HEADS_PAGE_MAX {
        return Err(format!(
            "heads page of {} exceeds {RECEIPT_HEADS_PAGE_MAX}",
            heads.len()
        ));
    }
    let mut prev = after;
    for (node, _) in heads {
        if prev.is_some_and(|p| node <= p) {
            return Err("heads not strictly increasing after the requested node".into());
        }
        prev = Some(node);
    }
    Ok(())
}

/// One gossip round as the puller on `conn` (see the module docs).
pub(crate) async fn pull_round(
    ctx: &Ctx,
    fleet: &Arc<Fleet>,
    conn: &Connection,
) -> Result<GossipReport, String> {
    let mode = ctx.cfg.disk_mode;
    let mut report = GossipReport::default();
    fleet.stats.rounds.fetch_add(1, Ordering::Relaxed);
    let store = ctx.store.clone();
    let room = disk::blocking(mode, move || store.has_metadata_room())
        .await
        .unwrap_or(false);
    if !room {
        // Receipts can wait for space; a commit failing on a full disk cannot be undone.
        report.deferred = true;
        return Ok(report);
    }
    let theirs = match request(ctx, fleet, conn, &Msg::ReceiptDigestRequest).await? {
        Msg::ReceiptDigest { nodes, hash } => (nodes, hash),
        other => {
            return Err(format!(
                "{} in answer to ReceiptDigestRequest",
                other.name()
            ));
        }
    };
    let mine = on_book(mode, fleet, |f| f.book.digest())
        .await?
        .map_err(|e| e.to_string())?;
    if mine == theirs {
        fleet.stats.rounds_in_sync.fetch_add(1, Ordering::Relaxed);
        report.in_sync = true;
        return Ok(report);
    }
    // Which nodes the peer knows further than this node does.
    let mut wanted = Vec::new();
    let mut after: Option<NodeId> = None;
    // Whether the book holds `nodes_max` nodes: then nodes it has never heard of are not asked
    // about (their receipts would be refused).
    let full = on_book(mode, fleet, |f| {
        f.book
            .heads()
            .map(|h| h.len() as u64 >= f.book.limits().nodes_max)
            .unwrap_or(true)
    })
    .await?;
    let heads_pages = ctx.cfg.fleet_nodes_max as usize / RECEIPT_HEADS_PAGE_MAX + 1;
    for _ in 0..heads_pages {
        let (heads, more) = match request(
            ctx,
            fleet,
            conn,
            &Msg::ReceiptHeadsRequest {
                after: after.clone(),
            },
        )
        .await?
        {
            Msg::ReceiptHeads { heads, more } => (heads, more),
            other => return Err(format!("{} in answer to ReceiptHeadsRequest", other.name())),
        };
        check_heads(&heads, after.as_ref())?;
        after = heads.last().map(|(n, _)| n.clone());
        let ahead = on_book(mode, fleet, move |f| {
            heads
                .into_iter()
                .filter_map(|(node, seq)| match f.book.head(&node) {
                    Ok(Some(h)) if h.seq < seq => Some((node, h.seq)),
                    // A node this book has no room for is not asked about.
                    Ok(None) if !full => Some((node, 0)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .await?;
        wanted.extend(ahead);
        if !more {
            break;
        }
    }
    let mut pages_left = ctx.cfg.receipt_pages_per_round_max;
    for (node, mut after_seq) in wanted {
        loop {
            if pages_left == 0 {
                report.cut = true;
                return Ok(report);
            }
            pages_left -= 1;
            report.pages += 1;
            let n = node.clone();
            let certs = on_book(mode, fleet, move |f| f.book.cert_hashes(&n))
                .await?
                .map_err(|e| e.to_string())?;
            let ask = Msg::ReceiptPageRequest {
                node: node.clone(),
                after_seq,
                certs,
            };
            let (receipts, certs, more) = match request(ctx, fleet, conn, &ask).await? {
                Msg::ReceiptPage {
                    receipts,
                    certs,
                    more,
                } => (receipts, certs, more),
                other => return Err(format!("{} in answer to ReceiptPageRequest", other.name())),
            };
            if receipts.len() > RECEIPT_PAGE_MAX || certs.len() > RECEIPT_PAGE_CERTS_MAX {
                return Err("receipt page over its bounds".into());
            }
            let n = node.clone();
            let (merge, refused, last) = on_book(mode, fleet, move |f| {
                let (valid, refused) = f.verify_page(&n, after_seq, &receipts, &certs);
                let last = valid.last().map(|(r, _)| r.seq);
                (f.book.merge(valid), refused, last)
            })
            .await?;
            let merge = merge.map_err(|e| e.to_string())?;
            fleet.stats.count_merge(&merge);
            report.merged += merge.merged;
            if let Some(e) = refused {
                fleet.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Err(format!("receipt of {node} refused: {e}"));
            }
            match last {
                Some(seq) if more => after_seq = seq,
                _ => break,
            }
        }
    }
    Ok(report)
}

/// Answers one gossip request of a peer on the stream it opened.
pub(crate) async fn serve(
    ctx: &Ctx,
    fleet: &Arc<Fleet>,
    send: &mut quinn::SendStream,
    first: Msg,
) -> Result<(), String> {
    let mode = ctx.cfg.disk_mode;
    fleet
        .stats
        .bytes_received
        .fetch_add(frame_len(&first), Ordering::Relaxed);
    let frame_max = ctx.cfg.frame_bytes_max;
    let answer = on_book(mode, fleet, move |f| answer(f, first, frame_max))
        .await?
        .map_err(|e| e.to_string())?;
    let Some(answer) = answer else {
        let _ = send.reset(StreamCode::Protocol.varint());
        return Err("receipt request over its bounds".into());
    };
    write_frame(send, &answer)
        .await
        .map_err(|e| e.to_string())?;
    fleet
        .stats
        .bytes_sent
        .fetch_add(frame_len(&answer), Ordering::Relaxed);
    let _ = send.finish();
    Ok(())
}

/// The answer to a gossip request; `None` for a request over its bounds.
fn answer(f: &Fleet, request: Msg, frame_max: usize) -> Result<Option<Msg>, StoreError> {
    Ok(Some(match request {
        Msg::ReceiptDigestRequest => {
            let (nodes, hash) = f.book.digest()?;
            Msg::ReceiptDigest { nodes, hash }
        }
        Msg::ReceiptHeadsRequest { after } => {
            let mut heads = f
                .book
                .heads_after(after.as_ref(), RECEIPT_HEADS_PAGE_MAX + 1)?;
            let more = heads.len() > RECEIPT_HEADS_PAGE_MAX;
            heads.truncate(RECEIPT_HEADS_PAGE_MAX);
            Msg::ReceiptHeads {
                heads: heads.into_iter().map(|(n, h)| (n, h.seq)).collect(),
                more,
            }
        }
        Msg::ReceiptPageRequest {
            node,
            after_seq,
            certs,
        } => {
            if certs.len() > RECEIPT_PAGE_CERTS_MAX {
                return Ok(None);
            }
            // Room for the certificates and the encoding's length prefixes.
            let certs_room = RECEIPT_PAGE_CERTS_MAX * (RECEIPT_CERT_BYTES_MAX + 4);
            let budget = frame_max
                .saturating_sub(certs_room + 64 + RECEIPT_PAGE_MAX * 3)
                .max(SIGNED_RECEIPT_BYTES_MAX);
            let (receipts, more) = f.book.page(&node, after_seq, RECEIPT_PAGE_MAX, budget)?;
            let mut named: Vec<[u8; 32]> = receipts
                .iter()
                .filter_map(|r| SignedReceipt::decode(r).ok().map(|s| s.cert))
                .filter(|h| !certs.contains(h))
                .collect();
            named.sort_unstable();
            named.dedup();
            let mut out = Vec::new();
            for h in named.into_iter().take(RECEIPT_PAGE_CERTS_MAX) {
                if let Some(c) = f.book.cert(&node, &h)? {
                    out.push(c.as_ref().to_vec());
                }
            }
            Msg::ReceiptPage {
                receipts,
                certs: out,
                more,
            }
        }
        _ => return Ok(None),
    }))
}

/// Whether `msg` opens a gossip exchange.
pub(crate) fn is_request(msg: &Msg) -> bool {
    matches!(
        msg,
        Msg::ReceiptDigestRequest
            | Msg::ReceiptHeadsRequest { .. }
            | Msg::ReceiptPageRequest { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipts::tests::{fleet, now_ms};

    fn node(id: &NodeIdentity) -> (tempfile::TempDir, Arc<Fleet>, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::receipts::book::tests::open_store(dir.path());
        let cfg = NetConfig::new(
            id.id.clone(),
            "127.0.0.1:1".parse().unwrap(),
            Default::default(),
        );
        let f = Fleet::open(store.clone(), id, &cfg).unwrap();
        (dir, f, store)
    }

    #[test]
    fn inv_29_heads_pages_are_checked_at_n_and_n_plus_1() {
        let ids: Vec<NodeId> = (0..=RECEIPT_HEADS_PAGE_MAX)
            .map(|i| format!("node-{i:04}").parse().unwrap())
            .collect();
        let heads: Vec<(NodeId, u64)> = ids.iter().map(|n| (n.clone(), 1)).collect();
        assert!(check_heads(&heads[..RECEIPT_HEADS_PAGE_MAX], None).is_ok());
        assert!(check_heads(&heads, None).is_err());
        assert!(check_heads(&heads[1..3], Some(&ids[0])).is_ok());
        assert!(check_heads(&heads[1..3], Some(&ids[1])).is_err());
        let mut unordered = heads[..3].to_vec();
        unordered.swap(0, 1);
        assert!(check_heads(&unordered, None).is_err());
    }

    #[test]
    fn inv_29_a_page_answer_fits_the_smallest_frame_and_refuses_too_many_hashes() {
        let (_d, ids) = fleet(&["node-a"]);
        let (_dir, f, _store) = node(&ids[0]);
        let events = (0..6000u32)
            .map(|i| {
                let mut segment = [0u8; 32];
                segment[..4].copy_from_slice(&i.to_be_bytes());
                (i as u64, Event::Stored { segment })
            })
            .collect();
        f.book.record_own(&f.signer, events, 1).unwrap();
        let frame_min = crate::limits::CATCHUP_PAGE_IDS_MAX * 32 + 16;
        let ask = |certs: Vec<[u8; 32]>| Msg::ReceiptPageRequest {
            node: ids[0].id.clone(),
            after_seq: 0,
            certs,
        };
        for frame_max in [frame_min, crate::limits::FRAME_BYTES_MAX_DEFAULT] {
            let answer = answer(&f, ask(Vec::new()), frame_max).unwrap().unwrap();
            let Msg::ReceiptPage {
                receipts,
                certs,
                more,
            } = &answer
            else {
                panic!("{answer:?}")
            };
            assert!(more);
            assert!(receipts.len() <= RECEIPT_PAGE_MAX);
            assert_eq!(
                certs.len(),
                1,
                "the certificate the puller lacks comes along"
            );
            assert!(frame_len(&answer) as usize <= frame_max, "{frame_max}");
        }
        // A puller that holds the certificate does not get it again.
        let hash = crate::receipts::cert_hash(&ids[0].cert);
        let Some(Msg::ReceiptPage { certs, .. }) =
            answer(&f, ask(vec![hash]), crate::limits::FRAME_BYTES_MAX_DEFAULT).unwrap()
        else {
            panic!()
        };
        assert!(certs.is_empty());
        // N hashes are heard, N + 1 are refused.
        let n = vec![[0u8; 32]; RECEIPT_PAGE_CERTS_MAX];
        assert!(answer(&f, ask(n.clone()), frame_min).unwrap().is_some());
        let mut n1 = n;
        n1.push([1; 32]);
        assert!(answer(&f, ask(n1), frame_min).unwrap().is_none());
    }

    #[test]
    fn inv_31_own_receipts_follow_the_store_and_liveness_is_renewed() {
        let (_d, ids) = fleet(&["node-a"]);
        let (_dir, f, store) = node(&ids[0]);
        let t0 = now_ms();
        // An empty store: only a liveness receipt, and then nothing until it is due.
        assert_eq!(f.reconcile(&store, t0, true).unwrap(), Some(1));
        assert_eq!(f.reconcile(&store, t0 + 1, true).unwrap(), Some(0));
        assert_eq!(
            f.reconcile(&store, t0 + crate::limits::ALIVE_INTERVAL_MS_DEFAULT, false)
                .unwrap(),
            Some(1)
        );
        let me = ids[0].id.clone();
        let latest = |f: &Fleet| {
            f.book
                .latest_of(&me, None, 100)
                .unwrap()
                .into_iter()
                .map(|l| l.kind)
                .collect::<Vec<_>>()
        };
        assert_eq!(latest(&f), [Kind::Alive]);
        // Merged receipts of other nodes do not make this node's own.
        let (_d2, other) = fleet(&["node-b"]);
        let b = Signer::new(&other[0]).unwrap();
        let r = b.sign(
            1,
            t0,
            crate::receipts::tests::one(Event::Stored { segment: [5; 32] }),
        );
        f.book.merge(vec![(r.receipt().unwrap(), r)]).unwrap();
        assert_eq!(f.reconcile(&store, t0 + 2, true).unwrap(), Some(0));
    }
}
