//! The receipt book: the receipts a node knows, in the store's database.
//!
//! Tables (all written through the store's one committer, so a receipt is on disk before the
//! write returns, and survives restarts):
//!
//! | table | key | value |
//! |---|---|---|
//! | `fleet-batches-v1` | (node, seq) | (entries still latest, encoded [`SignedReceipt`]) — signed batches, in the order gossip pages them |
//! | `fleet-latest-v1` | (node, subject) | (seq, kind, at_ms) — the latest receipt per subject and the batch holding it |
//! | `fleet-holders-v1` | (segment, node) | (stored, at_ms) — the fleet view of one segment |
//! | `fleet-heads-v1` | node | (highest seq, subjects kept, newest at_ms) |
//! | `fleet-certs-v1` | (node, blake3 of the DER) | certificate DER, checked against the fleet CA |
//!
//! **Merging** is idempotent and commutative: an entry replaces the one kept for its (node,
//! subject) only when its batch's sequence number is higher, so receiving a batch twice, or two
//! batches in either order, leaves the same book. A batch is kept (to be passed on) while at
//! least one of its entries is still the latest for its subject, and dropped when the last one
//! is replaced.
//!
//! **Bounds** ([`BookLimits`]): at most `nodes_max` nodes (receipts of further nodes are refused
//! and counted); at most `receipts_per_node_max` receipts per node — past it, that node's
//! oldest receipts (lowest sequence numbers) are forgotten and counted, so a node that
//! floods receipts about itself only pushes out its own history; at most
//! [`CERTS_PER_NODE_MAX`] certificates per node (a further one is refused).
//!
//! The book never holds a receipt it did not verify: receipts arrive here verified
//! ([`super::gossip`], need-list imports) or signed by this node.

use std::ops::Bound;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use rustls::pki_types::CertificateDer;
use store::{SegmentId, Store, StoreError};

use super::{
    ALIVE_SUBJECT, Entry, Event, RECEIPT_ENTRIES_MAX, Receipt, SignedReceipt, Signer, cert_hash,
};
use crate::pki::NodeId;

const BATCHES: TableDefinition<(&str, u64), (u32, &[u8])> =
    TableDefinition::new("fleet-batches-v1");
const LATEST: TableDefinition<(&str, &[u8; 32]), (u64, u8, u64)> =
    TableDefinition::new("fleet-latest-v1");
const HOLDERS: TableDefinition<(&[u8; 32], &str), (bool, u64)> =
    TableDefinition::new("fleet-holders-v1");
const HEADS: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("fleet-heads-v1");
const CERTS: TableDefinition<(&str, &[u8; 32]), &[u8]> = TableDefinition::new("fleet-certs-v1");

/// Certificates kept per node (a node re-issued a certificate a few times over its life).
pub const CERTS_PER_NODE_MAX: usize = 4;
/// Default of `[fleet] nodes_max`.
pub const FLEET_NODES_MAX_DEFAULT: u64 = 1024;
/// Default of `[fleet] receipts_per_node_max`.
pub const RECEIPTS_PER_NODE_MAX_DEFAULT: u64 = 100_000;

/// The storage bounds of a book (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookLimits {
    pub nodes_max: u64,
    pub receipts_per_node_max: u64,
}

impl Default for BookLimits {
    fn default() -> Self {
        BookLimits {
            nodes_max: FLEET_NODES_MAX_DEFAULT,
            receipts_per_node_max: RECEIPTS_PER_NODE_MAX_DEFAULT,
        }
    }
}

/// What the book knows of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The highest sequence number of its receipts held here.
    pub seq: u64,
    /// Receipts of it kept.
    pub count: u64,
    /// The newest `at_ms` of its receipts (on its clock).
    pub newest_at_ms: u64,
}

/// One node's latest receipt about one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHolding {
    pub stored: bool,
    pub at_ms: u64,
}

/// What the latest receipt of a node about a subject says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stored,
    Gone,
    Alive,
}

impl Kind {
    fn of(event: &Event) -> Kind {
        match event {
            Event::Stored { .. } => Kind::Stored,
            Event::Gone { .. } => Kind::Gone,
            Event::Alive { .. } => Kind::Alive,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Kind::Gone => 0,
            Kind::Stored => 1,
            Kind::Alive => 2,
        }
    }

    fn from_u8(v: u8) -> Kind {
        match v {
            0 => Kind::Gone,
            1 => Kind::Stored,
            _ => Kind::Alive,
        }
    }
}

/// One node's latest receipt about one subject, and the batch it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latest {
    pub subject: [u8; 32],
    pub kind: Kind,
    pub at_ms: u64,
    pub seq: u64,
}

/// What a merge did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MergeReport {
    /// Entries that replaced an older one or were new.
    pub merged: u64,
    /// Entries not newer than what the book holds (already known).
    pub known: u64,
    /// Batches refused because the book holds `nodes_max` other nodes.
    pub refused_nodes: u64,
    /// Old entries forgotten to stay within `receipts_per_node_max`.
    pub forgotten: u64,
}

/// The receipt book of a node (see the module docs). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Book {
    store: Store,
    limits: BookLimits,
}

type Result<T> = std::result::Result<T, StoreError>;

impl Book {
    /// Opens the book in `store`'s database, creating its tables.
    pub fn open(store: Store, limits: BookLimits) -> Result<Book> {
        store.writer().write(|txn| {
            txn.open_table(BATCHES)?;
            txn.open_table(LATEST)?;
            txn.open_table(HOLDERS)?;
            txn.open_table(HEADS)?;
            txn.open_table(CERTS)?;
            Ok(())
        })?;
        Ok(Book { store, limits })
    }

    pub fn limits(&self) -> BookLimits {
        self.limits
    }

    /// The store whose database holds the book.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn read(&self) -> Result<redb::ReadTransaction> {
        Ok(self
            .store
            .database()
            .begin_read()
            .map_err(redb::Error::from)?)
    }

    /// Adds a certificate already checked against the fleet CA. False if the node has
    /// [`CERTS_PER_NODE_MAX`] others already.
    pub fn put_cert(&self, node: &NodeId, cert: &CertificateDer<'_>) -> Result<bool> {
        let (node, hash, der) = (node.to_string(), cert_hash(cert), cert.as_ref().to_vec());
        self.store.writer().write(move |txn| {
            let mut certs = txn.open_table(CERTS)?;
            if certs.get((node.as_str(), &hash))?.is_some() {
                return Ok(true);
            }
            let held = certs
                .range((node.as_str(), &[0u8; 32])..=(node.as_str(), &[0xffu8; 32]))?
                .count();
            if held >= CERTS_PER_NODE_MAX {
                return Ok(false);
            }
            certs.insert((node.as_str(), &hash), der.as_slice())?;
            Ok(true)
        })
    }

    /// The certificate of `node` with hash `hash`, if held.
    pub fn cert(&self, node: &NodeId, hash: &[u8; 32]) -> Result<Option<CertificateDer<'static>>> {
        let read = self.read()?;
        let certs = read.open_table(CERTS).map_err(redb::Error::from)?;
        let found = certs
            .get((node.as_str(), hash))
            .map_err(redb::Error::from)?
            .map(|v| CertificateDer::from(v.value().to_vec()));
        Ok(found)
    }

    /// Hashes of the certificates of `node` held.
    pub fn cert_hashes(&self, node: &NodeId) -> Result<Vec<[u8; 32]>> {
        let read = self.read()?;
        let certs = read.open_table(CERTS).map_err(redb::Error::from)?;
        let mut out = Vec::new();
        for entry in certs
            .range((node.as_str(), &[0u8; 32])..=(node.as_str(), &[0xffu8; 32]))
            .map_err(redb::Error::from)?
        {
            let (k, _) = entry.map_err(redb::Error::from)?;
            out.push(*k.value().1);
        }
        Ok(out)
    }

    /// Merges verified receipts (see the module docs), in one transaction.
    pub fn merge(&self, receipts: Vec<(Receipt, SignedReceipt)>) -> Result<MergeReport> {
        if receipts.is_empty() {
            return Ok(MergeReport::default());
        }
        let limits = self.limits;
        self.store
            .writer()
            .write(move |txn| merge_in(txn, limits, receipts))
    }

    /// Signs `events` (with their times) as this node's next receipts — in batches of at most
    /// [`RECEIPT_ENTRIES_MAX`], subjects in order — and merges them. Only one task of a node
    /// makes its receipts (the reconciler), so the head read here is still the head when they
    /// are merged.
    pub fn record_own(
        &self,
        signer: &Signer,
        mut events: Vec<(u64, Event)>,
        now_ms: u64,
    ) -> Result<MergeReport> {
        events.sort_by_key(|(_, e)| e.subject());
        events.dedup_by_key(|(_, e)| e.subject());
        let mut seq = self.head(signer.node())?.map_or(0, |h| h.seq);
        let mut signed = Vec::new();
        for chunk in events.chunks(RECEIPT_ENTRIES_MAX) {
            seq = (seq + 1).max(now_ms);
            let entries = chunk
                .iter()
                .map(|&(at_ms, event)| Entry { at_ms, event })
                .collect();
            let s = signer.sign(seq, now_ms, entries);
            let receipt = s.receipt().map_err(|e| StoreError::CorruptRow {
                table: "fleet-batches-v1",
                reason: e.to_string(),
            })?;
            signed.push((receipt, s));
        }
        self.merge(signed)
    }

    /// What the book knows of `node`.
    pub fn head(&self, node: &NodeId) -> Result<Option<Head>> {
        let read = self.read()?;
        let heads = read.open_table(HEADS).map_err(redb::Error::from)?;
        Ok(heads
            .get(node.as_str())
            .map_err(redb::Error::from)?
            .map(|v| head_of(v.value())))
    }

    /// Heads of the nodes after `after` in id order, at most `limit`.
    pub fn heads_after(&self, after: Option<&NodeId>, limit: usize) -> Result<Vec<(NodeId, Head)>> {
        let read = self.read()?;
        let heads = read.open_table(HEADS).map_err(redb::Error::from)?;
        let lower = match after {
            Some(n) => Bound::Excluded(n.as_str()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for entry in heads
            .range::<&str>((lower, Bound::Unbounded))
            .map_err(redb::Error::from)?
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry.map_err(redb::Error::from)?;
            if let Ok(node) = k.value().parse::<NodeId>() {
                out.push((node, head_of(v.value())));
            }
        }
        Ok(out)
    }

    /// Every node's head (at most `nodes_max` of them).
    pub fn heads(&self) -> Result<Vec<(NodeId, Head)>> {
        self.heads_after(None, usize::MAX)
    }

    /// The digest of the heads: the number of nodes and the blake3 of (node, highest seq) in
    /// node order. Two books with equal digests hold receipts up to the same point of every
    /// node.
    pub fn digest(&self) -> Result<(u64, [u8; 32])> {
        let mut hasher = blake3::Hasher::new();
        let heads = self.heads()?;
        for (node, head) in &heads {
            hasher.update(&[node.as_str().len() as u8]);
            hasher.update(node.as_str().as_bytes());
            hasher.update(&head.seq.to_le_bytes());
        }
        Ok((heads.len() as u64, *hasher.finalize().as_bytes()))
    }

    /// Signed batches of `node` with a sequence number above `after_seq`, in order: at most
    /// `limit`, and no more encoded bytes than `bytes_max` (always at least one batch when one
    /// exists). `more`: batches were left.
    pub fn page(
        &self,
        node: &NodeId,
        after_seq: u64,
        limit: usize,
        bytes_max: usize,
    ) -> Result<(Vec<Vec<u8>>, bool)> {
        let read = self.read()?;
        let batches = read.open_table(BATCHES).map_err(redb::Error::from)?;
        let mut out = Vec::new();
        let mut bytes = 0;
        let Some(from) = after_seq.checked_add(1) else {
            return Ok((out, false));
        };
        for entry in batches
            .range((node.as_str(), from)..=(node.as_str(), u64::MAX))
            .map_err(redb::Error::from)?
        {
            let (_, v) = entry.map_err(redb::Error::from)?;
            let (_, signed) = v.value();
            if out.len() >= limit || (!out.is_empty() && bytes + signed.len() > bytes_max) {
                return Ok((out, true));
            }
            bytes += signed.len();
            out.push(signed.to_vec());
        }
        Ok((out, false))
    }

    /// The latest receipt of `node` about each subject, in subject order after `after`, at
    /// most `limit`.
    pub fn latest_of(
        &self,
        node: &NodeId,
        after: Option<&[u8; 32]>,
        limit: usize,
    ) -> Result<Vec<Latest>> {
        let read = self.read()?;
        let latest = read.open_table(LATEST).map_err(redb::Error::from)?;
        let lower = match after {
            Some(s) => Bound::Excluded((node.as_str(), s)),
            None => Bound::Included((node.as_str(), &[0u8; 32])),
        };
        let upper = Bound::Included((node.as_str(), &[0xffu8; 32]));
        let mut out = Vec::new();
        for entry in latest.range((lower, upper)).map_err(redb::Error::from)? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry.map_err(redb::Error::from)?;
            let subject = *k.value().1;
            let (seq, kind, at_ms) = v.value();
            out.push(Latest {
                subject,
                kind: Kind::from_u8(kind),
                at_ms,
                seq,
            });
        }
        Ok(out)
    }

    /// Every node's latest receipt about `segment`.
    pub fn holders(&self, segment: &SegmentId) -> Result<Vec<(NodeId, NodeHolding)>> {
        let read = self.read()?;
        let holders = read.open_table(HOLDERS).map_err(redb::Error::from)?;
        let mut out = Vec::new();
        for entry in holders
            .range((&segment.0, "")..)
            .map_err(redb::Error::from)?
        {
            let (k, v) = entry.map_err(redb::Error::from)?;
            let (seg, node) = k.value();
            if seg != &segment.0 {
                break;
            }
            let (stored, at_ms) = v.value();
            if let Ok(node) = node.parse::<NodeId>() {
                out.push((node, NodeHolding { stored, at_ms }));
            }
        }
        Ok(out)
    }

    /// Segments some receipt is about, in id order after `after`, at most `limit`.
    pub fn segments_after(
        &self,
        after: Option<&SegmentId>,
        limit: usize,
    ) -> Result<Vec<SegmentId>> {
        let read = self.read()?;
        let holders = read.open_table(HOLDERS).map_err(redb::Error::from)?;
        let mut out: Vec<SegmentId> = Vec::new();
        let mut cursor = after.map(|s| s.0);
        // Each step skips to the first key past every row of the last segment seen.
        while out.len() < limit {
            let next = match cursor {
                Some(c) => match next_id(&c) {
                    Some(n) => holders.range((&n, "")..),
                    None => break,
                },
                None => holders.range::<(&[u8; 32], &str)>(..),
            }
            .map_err(redb::Error::from)?
            .next();
            let Some(entry) = next else { break };
            let (k, _) = entry.map_err(redb::Error::from)?;
            let seg = *k.value().0;
            out.push(SegmentId(seg));
            cursor = Some(seg);
        }
        Ok(out)
    }

    /// Segments some receipt is about in `low..=high`, in id order, at most `limit`.
    pub fn segments_in(
        &self,
        low: &SegmentId,
        high: &SegmentId,
        limit: usize,
    ) -> Result<Vec<SegmentId>> {
        let mut out = Vec::new();
        let first = self.read()?;
        let holders = first.open_table(HOLDERS).map_err(redb::Error::from)?;
        let starts_at_low = holders
            .range((&low.0, "")..)
            .map_err(redb::Error::from)?
            .next()
            .transpose()
            .map_err(redb::Error::from)?
            .is_some_and(|(k, _)| k.value().0 == &low.0);
        if starts_at_low {
            out.push(*low);
        }
        let mut after = *low;
        while out.len() < limit {
            let next = self.segments_after(Some(&after), 1)?;
            match next.first() {
                Some(id) if id <= high => {
                    out.push(*id);
                    after = *id;
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// Subjects with a receipt kept, over every node.
    pub fn len(&self) -> Result<u64> {
        let read = self.read()?;
        let latest = read.open_table(LATEST).map_err(redb::Error::from)?;
        Ok(latest.len().map_err(redb::Error::from)?)
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// The id right after `id` in byte order (`None` after the last).
fn next_id(id: &[u8; 32]) -> Option<[u8; 32]> {
    let mut next = *id;
    for b in next.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return Some(next);
        }
    }
    None
}

fn head_of((seq, count, newest_at_ms): (u64, u64, u64)) -> Head {
    Head {
        seq,
        count,
        newest_at_ms,
    }
}

fn merge_in(
    txn: &redb::WriteTransaction,
    limits: BookLimits,
    receipts: Vec<(Receipt, SignedReceipt)>,
) -> std::result::Result<MergeReport, redb::Error> {
    let mut report = MergeReport::default();
    let mut batches = txn.open_table(BATCHES)?;
    let mut latest = txn.open_table(LATEST)?;
    let mut holders = txn.open_table(HOLDERS)?;
    let mut heads = txn.open_table(HEADS)?;
    for (receipt, signed) in receipts {
        let node = receipt.node.as_str();
        let seq = receipt.seq;
        let head = heads.get(node)?.map(|v| head_of(v.value()));
        let mut head = match head {
            Some(h) => h,
            None if heads.len()? >= limits.nodes_max => {
                report.refused_nodes += 1;
                continue;
            }
            None => Head {
                seq: 0,
                count: 0,
                newest_at_ms: 0,
            },
        };
        if batches.get((node, seq))?.is_some() {
            report.known += receipt.entries.len() as u64;
            continue;
        }
        let mut live = 0u32;
        for entry in &receipt.entries {
            let subject = entry.event.subject();
            let old = latest.get((node, &subject))?.map(|v| v.value().0);
            // Mutation point (INV-30): an older receipt replaces a newer one.
            let older_wins = store::mutants::active("older_receipt_wins");
            match old {
                Some(old_seq) if old_seq >= seq && !older_wins => {
                    report.known += 1;
                    continue;
                }
                Some(old_seq) => release(&mut batches, node, old_seq)?,
                None => head.count += 1,
            }
            let kind = Kind::of(&entry.event);
            latest.insert((node, &subject), (seq, kind.to_u8(), entry.at_ms))?;
            match entry.event {
                Event::Stored { segment } => {
                    holders.insert((&segment, node), (true, entry.at_ms))?;
                }
                Event::Gone { segment } => {
                    holders.insert((&segment, node), (false, entry.at_ms))?;
                }
                Event::Alive { .. } => {}
            }
            head.newest_at_ms = head.newest_at_ms.max(entry.at_ms);
            live += 1;
        }
        if live > 0 {
            batches.insert((node, seq), (live, signed.encode().as_slice()))?;
        }
        report.merged += u64::from(live);
        // The head moves past a batch even when none of its entries was new: gossip does not
        // ask for it again.
        head.seq = head.seq.max(seq);
        head.newest_at_ms = head.newest_at_ms.max(receipt.at_ms);
        // Mutation point (INV-29): one receipt more than the bound is kept per node.
        let keep = if store::mutants::active("receipts_bound_plus_one") {
            limits.receipts_per_node_max + 1
        } else {
            limits.receipts_per_node_max
        };
        // Past the bound, the node's oldest batches go with their entries (its liveness
        // receipt is among its newest: it is renewed).
        while head.count > keep {
            let oldest = batches
                .range((node, 0)..=(node, u64::MAX))?
                .next()
                .transpose()?
                .map(|(k, v)| (k.value().1, v.value().1.to_vec()));
            let Some((old_seq, bytes)) = oldest else {
                break;
            };
            batches.remove((node, old_seq))?;
            let old = SignedReceipt::decode(&bytes)
                .and_then(|s| s.receipt())
                .map_err(|e| redb::Error::Corrupted(format!("fleet-batches-v1: {e}")))?;
            for entry in &old.entries {
                let subject = entry.event.subject();
                let still = latest.get((node, &subject))?.map(|v| v.value().0);
                if still != Some(old_seq) {
                    continue;
                }
                latest.remove((node, &subject))?;
                if subject != ALIVE_SUBJECT {
                    holders.remove((&subject, node))?;
                }
                head.count -= 1;
                report.forgotten += 1;
            }
        }
        heads.insert(node, (head.seq, head.count, head.newest_at_ms))?;
    }
    Ok(report)
}

/// One entry of batch `seq` of `node` is no longer the latest: the batch goes when none is.
fn release(
    batches: &mut redb::Table<(&str, u64), (u32, &[u8])>,
    node: &str,
    seq: u64,
) -> std::result::Result<(), redb::Error> {
    let row = batches
        .get((node, seq))?
        .map(|v| (v.value().0, v.value().1.to_vec()));
    match row {
        Some((live, _)) if live <= 1 => {
            batches.remove((node, seq))?;
        }
        Some((live, bytes)) => {
            batches.insert((node, seq), (live - 1, bytes.as_slice()))?;
        }
        None => {}
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::receipts::tests::fleet;
    use crate::receipts::{SignedReceipt, Signer};

    pub(crate) fn open_store(dir: &std::path::Path) -> Store {
        let mut cfg = store::StoreConfig::new(dir, 1 << 30, Default::default());
        cfg.min_free_bytes = 0;
        Store::open(cfg, std::sync::Arc::new(store::fs::RealFs), 1)
            .unwrap()
            .0
    }

    fn book(limits: BookLimits) -> (tempfile::TempDir, Book) {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        (dir, Book::open(store, limits).unwrap())
    }

    fn signed(s: &Signer, seq: u64, event: Event) -> (Receipt, SignedReceipt) {
        let signed = s.sign(seq, seq, vec![Entry { at_ms: seq, event }]);
        (signed.receipt().unwrap(), signed)
    }

    #[test]
    fn inv_30_merging_is_idempotent_and_keeps_the_latest_per_subject() {
        let (_d, ids) = fleet(&["node-a"]);
        let a = Signer::new(&ids[0]).unwrap();
        let seg = [1u8; 32];
        let stored = signed(&a, 10, Event::Stored { segment: seg });
        let gone = signed(&a, 11, Event::Gone { segment: seg });
        // Either order, any repetition: the same book.
        let mut views = Vec::new();
        for order in [
            vec![stored.clone(), gone.clone()],
            vec![gone.clone(), stored.clone()],
            vec![gone.clone(), stored.clone(), gone.clone()],
        ] {
            let (_dir, b) = book(BookLimits::default());
            for r in order {
                b.merge(vec![r]).unwrap();
            }
            let node: NodeId = "node-a".parse().unwrap();
            views.push((
                b.holders(&SegmentId(seg)).unwrap(),
                b.head(&node).unwrap(),
                b.page(&node, 0, 10, 1 << 20).unwrap(),
                b.digest().unwrap(),
            ));
        }
        assert_eq!(views[0], views[1]);
        assert_eq!(views[0], views[2]);
        let holders = &views[0].0;
        assert_eq!(holders.len(), 1);
        assert!(!holders[0].1.stored, "the later Gone receipt wins");
        assert_eq!(views[0].1.unwrap().count, 1);
        assert_eq!(views[0].2.0.len(), 1, "one receipt per subject is kept");
    }

    #[test]
    fn inv_30_a_batch_is_kept_while_one_of_its_entries_is_the_latest() {
        let (_d, ids) = fleet(&["node-a"]);
        let a = Signer::new(&ids[0]).unwrap();
        let (_dir, b) = book(BookLimits::default());
        let node: NodeId = "node-a".parse().unwrap();
        let (s1, s2) = ([1u8; 32], [2u8; 32]);
        let batch = |seq: u64, events: &[Event]| {
            let entries = events
                .iter()
                .map(|&event| Entry { at_ms: seq, event })
                .collect();
            let signed = a.sign(seq, seq, entries);
            (signed.receipt().unwrap(), signed)
        };
        let seqs = |b: &Book| -> Vec<u64> {
            b.page(&node, 0, 100, 1 << 20)
                .unwrap()
                .0
                .iter()
                .map(|p| SignedReceipt::decode(p).unwrap().receipt().unwrap().seq)
                .collect()
        };
        let both = [Event::Stored { segment: s1 }, Event::Stored { segment: s2 }];
        let r = b.merge(vec![batch(10, &both)]).unwrap();
        assert_eq!(r.merged, 2);
        b.merge(vec![batch(11, &[Event::Gone { segment: s1 }])])
            .unwrap();
        assert_eq!(seqs(&b), [10, 11], "batch 10 still says s2 is stored");
        b.merge(vec![batch(12, &[Event::Gone { segment: s2 }])])
            .unwrap();
        assert_eq!(seqs(&b), [11, 12], "batch 10 has nothing left to say");
        // A late copy of batch 10 changes nothing, and the head stays.
        let r = b.merge(vec![batch(10, &both)]).unwrap();
        assert_eq!((r.merged, r.known), (0, 2));
        assert_eq!(seqs(&b), [11, 12]);
        assert_eq!(b.head(&node).unwrap().unwrap().seq, 12);
        assert!(
            b.holders(&SegmentId(s1))
                .unwrap()
                .iter()
                .all(|(_, h)| !h.stored)
        );
    }

    #[test]
    fn inv_29_receipts_per_node_are_bounded_at_n_and_forget_the_oldest_past_it() {
        let (_d, ids) = fleet(&["node-a"]);
        let a = Signer::new(&ids[0]).unwrap();
        let n = 5;
        let (_dir, b) = book(BookLimits {
            nodes_max: 4,
            receipts_per_node_max: n,
        });
        let node: NodeId = "node-a".parse().unwrap();
        let batch: Vec<_> = (1..=n)
            .map(|i| {
                signed(
                    &a,
                    i,
                    Event::Stored {
                        segment: [i as u8; 32],
                    },
                )
            })
            .collect();
        let r = b.merge(batch).unwrap();
        assert_eq!((r.merged, r.forgotten), (n, 0), "N receipts are all kept");
        let r = b
            .merge(vec![signed(&a, n + 1, Event::Stored { segment: [99; 32] })])
            .unwrap();
        assert_eq!(
            (r.merged, r.forgotten),
            (1, 1),
            "the N+1th pushes out the oldest"
        );
        assert_eq!(b.head(&node).unwrap().unwrap().count, n);
        assert!(b.holders(&SegmentId([1; 32])).unwrap().is_empty());
        assert_eq!(b.holders(&SegmentId([2; 32])).unwrap().len(), 1);
        assert_eq!(b.len().unwrap(), n);
    }

    #[test]
    fn inv_29_nodes_are_bounded_at_n() {
        let names: Vec<String> = (0..4).map(|i| format!("node-{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (_d, ids) = fleet(&refs);
        let (_dir, b) = book(BookLimits {
            nodes_max: 3,
            receipts_per_node_max: 10,
        });
        for id in &ids[..3] {
            let s = Signer::new(id).unwrap();
            let r = b
                .merge(vec![signed(&s, 1, Event::Alive { held: 0 })])
                .unwrap();
            assert_eq!(r.merged, 1);
        }
        let s = Signer::new(&ids[3]).unwrap();
        let r = b
            .merge(vec![signed(&s, 1, Event::Alive { held: 0 })])
            .unwrap();
        assert_eq!(
            (r.merged, r.refused_nodes),
            (0, 1),
            "the N+1th node is refused"
        );
        // Known nodes still merge.
        let s0 = Signer::new(&ids[0]).unwrap();
        assert_eq!(
            b.merge(vec![signed(&s0, 2, Event::Alive { held: 1 })])
                .unwrap()
                .merged,
            1
        );
        assert_eq!(b.heads().unwrap().len(), 3);
    }

    #[test]
    fn inv_30_receipts_survive_a_restart() {
        let (_d, ids) = fleet(&["node-a"]);
        let a = Signer::new(&ids[0]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let digest = {
            let store = open_store(dir.path());
            let b = Book::open(store.clone(), BookLimits::default()).unwrap();
            b.record_own(&a, vec![(5, Event::Stored { segment: [3; 32] })], 1_000)
                .unwrap();
            let d = b.digest().unwrap();
            store.close();
            d
        };
        let store = open_store(dir.path());
        let b = Book::open(store, BookLimits::default()).unwrap();
        assert_eq!(b.digest().unwrap(), digest);
        let holders = b.holders(&SegmentId([3; 32])).unwrap();
        assert_eq!(
            holders[0].1,
            NodeHolding {
                stored: true,
                at_ms: 5
            }
        );
        // Own sequence numbers go on from the stored head, and at least to the clock.
        b.record_own(&a, vec![(6, Event::Alive { held: 1 })], 10)
            .unwrap();
        assert_eq!(b.head(&a.node().clone()).unwrap().unwrap().seq, 1_001);
    }

    #[test]
    fn pages_follow_sequence_order_within_their_bounds() {
        let (_d, ids) = fleet(&["node-a"]);
        let a = Signer::new(&ids[0]).unwrap();
        let (_dir, b) = book(BookLimits::default());
        let node: NodeId = "node-a".parse().unwrap();
        let batch: Vec<_> = (1..=10u64)
            .map(|i| {
                signed(
                    &a,
                    i,
                    Event::Stored {
                        segment: [20 - i as u8; 32],
                    },
                )
            })
            .collect();
        b.merge(batch).unwrap();
        let (page, more) = b.page(&node, 3, 4, 1 << 20).unwrap();
        let seqs: Vec<u64> = page
            .iter()
            .map(|p| SignedReceipt::decode(p).unwrap().receipt().unwrap().seq)
            .collect();
        assert_eq!((seqs, more), (vec![4, 5, 6, 7], true));
        // A page stops before the receipt that would pass its byte bound, but always holds one.
        let (page, more) = b.page(&node, 0, 100, 1).unwrap();
        assert_eq!((page.len(), more), (1, true));
        let (all, _) = b.page(&node, 0, 100, 1 << 20).unwrap();
        let two = all[0].len() + all[1].len();
        let (page, more) = b.page(&node, 0, 100, two).unwrap();
        assert_eq!((page.len(), more), (2, true));
        let (page, more) = b.page(&node, 8, 100, 1 << 20).unwrap();
        assert_eq!((page.len(), more), (2, false));
        let segs = b.segments_after(None, 100).unwrap();
        assert_eq!(segs.len(), 10);
        assert!(segs.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(b.segments_after(Some(&segs[7]), 100).unwrap(), segs[8..]);
    }
}
