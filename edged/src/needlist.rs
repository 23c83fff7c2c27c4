//! Need-lists: what a node holds and the fleet receipts it knows, in one small file that a
//! person carries on a USB stick between parts of a fleet with no network link.
//!
//! `edged export --need-list DIR` writes `<node-id>.need` into DIR; on another host
//! `edged export --for DIR` reads every need-list there and writes the segments their nodes
//! lack (and its own need-list); back home, `edged import DIR` stores the segments and merges
//! the receipts of the need-lists of other nodes. The ids in a need-list are not signed: they
//! only decide which segments are worth the stick's space (every segment is verified when
//! imported), and every receipt is verified against the fleet CA before it is merged. An old
//! need-list is harmless: receipts merge by sequence number, and segments the node already has
//! are answered "already present".
//!
//! # File layout (postcard, version [`NEED_VERSION`])
//!
//! | field | encoding | bound |
//! |---|---|---|
//! | `magic` | 8 raw bytes, [`NEED_MAGIC`] | |
//! | `version` | 1 byte | a reader refuses a version it does not know |
//! | `node` | varint length + UTF-8, a node id | ≤ [`NODE_ID_BYTES_MAX`] bytes |
//! | `created_at_ms` | u64 varint, Unix ms on the writer's clock | |
//! | `held` | varint count, then 32 raw bytes per segment id, in id order: stored or tombstoned here (a tombstoned id means "do not send") | ≤ [`NEED_IDS_MAX`] |
//! | `receipts` | varint count, then per receipt varint length + an encoded `SignedReceipt` | ≤ [`NEED_RECEIPTS_MAX`], each ≤ [`SIGNED_RECEIPT_BYTES_MAX`] |
//! | `certs` | varint count, then per certificate varint length + DER | ≤ [`NEED_CERTS_MAX`], each ≤ [`RECEIPT_CERT_BYTES_MAX`] |
//!
//! Nothing may follow. The whole file is at most [`NEED_FILE_BYTES_MAX`], checked before it is
//! read; every count and length is checked against its bound and against the bytes left before
//! anything is allocated for it.

use std::io::Read as _;
use std::path::Path;

use net::pki::NodeId;
use net::receipts::book::Book;
use net::receipts::{RECEIPT_CERT_BYTES_MAX, SIGNED_RECEIPT_BYTES_MAX, SignedReceipt};
use serde::Serialize;
use store::{SegmentId, StoreError};

/// The first bytes of every need-list.
pub const NEED_MAGIC: [u8; 8] = *b"EDGEDNL\0";
/// The layout this build writes and reads.
pub const NEED_VERSION: u8 = 1;
/// Extension of need-list files (`<node-id>.need`).
pub const NEED_EXTENSION: &str = "need";
/// Longest node id (`[a-z0-9-]{1,63}`).
pub const NODE_ID_BYTES_MAX: usize = 63;
/// Segment ids in one need-list: a node holding more cannot write a complete one (a partial
/// list would bring back segments it has).
pub const NEED_IDS_MAX: usize = 1 << 20;
/// Signed receipt batches in one need-list (each up to 128 receipts: a million in all); a node
/// knowing more writes its own first, then others', and leaves the rest out (they travel next
/// time or by gossip).
pub const NEED_RECEIPTS_MAX: usize = 1 << 13;
/// Certificates in one need-list (those the receipts name).
pub const NEED_CERTS_MAX: usize = 1024;
/// Bytes of a varint of a u64, at most.
const VARINT_BYTES_MAX: usize = 10;
/// Largest need-list file: every field at its bound.
pub const NEED_FILE_BYTES_MAX: u64 = (NEED_MAGIC.len()
    + 1
    + VARINT_BYTES_MAX
    + NODE_ID_BYTES_MAX
    + VARINT_BYTES_MAX
    + VARINT_BYTES_MAX
    + NEED_IDS_MAX * 32
    + VARINT_BYTES_MAX
    + NEED_RECEIPTS_MAX * (VARINT_BYTES_MAX + SIGNED_RECEIPT_BYTES_MAX)
    + VARINT_BYTES_MAX
    + NEED_CERTS_MAX * (VARINT_BYTES_MAX + RECEIPT_CERT_BYTES_MAX))
    as u64;
/// Rows read from the store or the book at a time while a need-list is gathered.
pub const NEED_PAGE_ITEMS: usize = 512;

/// A need-list in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedList {
    pub node: NodeId,
    pub created_at_ms: u64,
    /// Stored or tombstoned on `node`, in id order.
    pub held: Vec<[u8; 32]>,
    /// Encoded signed receipts (not verified here).
    pub receipts: Vec<Vec<u8>>,
    /// Certificate DERs the receipts name (not verified here).
    pub certs: Vec<Vec<u8>>,
}

/// Why a need-list cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum NeedListError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{bytes} bytes, more than a need-list may hold ({NEED_FILE_BYTES_MAX})")]
    TooLarge { bytes: u64 },
    #[error("not a need-list (wrong magic bytes)")]
    BadMagic,
    #[error("need-list version {0} is not known to this node (it reads {NEED_VERSION})")]
    UnknownVersion(u8),
    #[error("truncated in its {0}")]
    Truncated(&'static str),
    #[error("{count} {what}, more than {max}")]
    TooMany {
        what: &'static str,
        count: u64,
        max: usize,
    },
    #[error("one of its {what} takes {bytes} bytes, more than {max}")]
    ItemTooLarge {
        what: &'static str,
        bytes: u64,
        max: usize,
    },
    #[error("bad node id: {0}")]
    BadNode(String),
    #[error("segment ids are not in strictly increasing order")]
    Unordered,
    #[error("{0} trailing bytes after the need-list")]
    TrailingBytes(usize),
}

/// The encoded form (field order is the file layout).
#[derive(Serialize)]
struct Repr<'a> {
    magic: [u8; 8],
    version: u8,
    node: &'a str,
    created_at_ms: u64,
    held: &'a [[u8; 32]],
    receipts: &'a [Vec<u8>],
    certs: &'a [Vec<u8>],
}

impl NeedList {
    /// The file name of `node`'s need-list.
    pub fn file_name(node: &NodeId) -> String {
        format!("{node}.{NEED_EXTENSION}")
    }

    /// Encodes, refusing what a reader would refuse (so a written need-list always reads).
    pub fn encode(&self) -> Result<Vec<u8>, NeedListError> {
        let many = |what, count: usize, max| {
            if count > max {
                return Err(NeedListError::TooMany {
                    what,
                    count: count as u64,
                    max,
                });
            }
            Ok(())
        };
        many("segment ids", self.held.len(), NEED_IDS_MAX)?;
        many("receipts", self.receipts.len(), NEED_RECEIPTS_MAX)?;
        many("certificates", self.certs.len(), NEED_CERTS_MAX)?;
        check_items("receipts", &self.receipts, SIGNED_RECEIPT_BYTES_MAX)?;
        check_items("certificates", &self.certs, RECEIPT_CERT_BYTES_MAX)?;
        if !self.held.windows(2).all(|w| w[0] < w[1]) {
            return Err(NeedListError::Unordered);
        }
        let bytes = postcard::to_allocvec(&Repr {
            magic: NEED_MAGIC,
            version: NEED_VERSION,
            node: self.node.as_str(),
            created_at_ms: self.created_at_ms,
            held: &self.held,
            receipts: &self.receipts,
            certs: &self.certs,
        })
        .expect("a need-list always encodes");
        Ok(bytes)
    }

    /// Decodes a whole file (see the module docs for the checks).
    pub fn decode(bytes: &[u8]) -> Result<NeedList, NeedListError> {
        if bytes.len() as u64 > NEED_FILE_BYTES_MAX {
            return Err(NeedListError::TooLarge {
                bytes: bytes.len() as u64,
            });
        }
        let mut r = Reader(bytes);
        if r.take(NEED_MAGIC.len(), "magic")? != NEED_MAGIC {
            return Err(NeedListError::BadMagic);
        }
        let version = r.take(1, "version")?[0];
        if version != NEED_VERSION {
            return Err(NeedListError::UnknownVersion(version));
        }
        let node_len = r.len("node id", 1, NODE_ID_BYTES_MAX)?;
        let node = std::str::from_utf8(r.take(node_len, "node id")?)
            .map_err(|e| NeedListError::BadNode(e.to_string()))?
            .parse::<NodeId>()
            .map_err(|e| NeedListError::BadNode(e.to_string()))?;
        let created_at_ms = r.varint("creation time")?;
        let count = r.count("segment ids", 32, NEED_IDS_MAX)?;
        let mut held = Vec::with_capacity(count);
        for _ in 0..count {
            let id: [u8; 32] = r.take(32, "segment ids")?.try_into().expect("32 bytes");
            if held.last().is_some_and(|last| *last >= id) {
                return Err(NeedListError::Unordered);
            }
            held.push(id);
        }
        let receipts = r.items("receipts", NEED_RECEIPTS_MAX, SIGNED_RECEIPT_BYTES_MAX)?;
        let certs = r.items("certificates", NEED_CERTS_MAX, RECEIPT_CERT_BYTES_MAX)?;
        if !r.0.is_empty() {
            return Err(NeedListError::TrailingBytes(r.0.len()));
        }
        Ok(NeedList {
            node,
            created_at_ms,
            held,
            receipts,
            certs,
        })
    }

    /// Reads and decodes the need-list file at `path`: opened only if it is a regular file
    /// (never through a symlink, never blocking on a FIFO), its size checked before reading.
    pub fn read_file(path: &Path) -> Result<NeedList, NeedListError> {
        let io = |source| NeedListError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = store::media::open_regular(path)
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let len = file.metadata().map_err(io)?.len();
        if len > NEED_FILE_BYTES_MAX {
            return Err(NeedListError::TooLarge { bytes: len });
        }
        // One byte more than the bound is read, so a file that grew since is still refused.
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(NEED_FILE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        NeedList::decode(&bytes)
    }
}

fn check_items(what: &'static str, items: &[Vec<u8>], max: usize) -> Result<(), NeedListError> {
    match items.iter().find(|i| i.len() > max) {
        Some(i) => Err(NeedListError::ItemTooLarge {
            what,
            bytes: i.len() as u64,
            max,
        }),
        None => Ok(()),
    }
}

/// Reads a need-list's fields off the front of its bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], NeedListError> {
        if self.0.len() < n {
            return Err(NeedListError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, NeedListError> {
        let (v, rest) =
            postcard::take_from_bytes::<u64>(self.0).map_err(|_| NeedListError::Truncated(what))?;
        self.0 = rest;
        Ok(v)
    }

    /// A length of at most `max` (and at least `min`).
    fn len(&mut self, what: &'static str, min: usize, max: usize) -> Result<usize, NeedListError> {
        let n = self.varint(what)?;
        if n > max as u64 || n < min as u64 {
            return Err(NeedListError::ItemTooLarge {
                what,
                bytes: n,
                max,
            });
        }
        Ok(n as usize)
    }

    /// A count of at most `max` items of at least `item_min` bytes each, which the bytes left
    /// can hold: checked before anything is allocated for them.
    fn count(
        &mut self,
        what: &'static str,
        item_min: usize,
        max: usize,
    ) -> Result<usize, NeedListError> {
        let n = self.varint(what)?;
        if n > max as u64 {
            return Err(NeedListError::TooMany {
                what,
                count: n,
                max,
            });
        }
        if n.saturating_mul(item_min as u64) > self.0.len() as u64 {
            return Err(NeedListError::Truncated(what));
        }
        Ok(n as usize)
    }

    fn items(
        &mut self,
        what: &'static str,
        max: usize,
        item_max: usize,
    ) -> Result<Vec<Vec<u8>>, NeedListError> {
        // Each item is at least its one-byte length.
        let count = self.count(what, 1, max)?;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let len = self.len(what, 0, item_max)?;
            out.push(self.take(len, what)?.to_vec());
        }
        Ok(out)
    }
}

/// One item of the receipts part of a need-list, as gathered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptItem {
    Cert(Vec<u8>),
    Receipt(Vec<u8>),
}

/// Walks the receipts `book` knows, `own` node first (the ones the other side most wants:
/// what this node holds), then every other node in id order; before each node's receipts, its
/// certificates. Reads a page of at most `page_items` receipts and `page_bytes` bytes at a
/// time; `each` returns false to stop.
pub fn walk_receipts<E: From<StoreError>>(
    book: &Book,
    own: &NodeId,
    page_items: usize,
    page_bytes: usize,
    mut each: impl FnMut(ReceiptItem) -> Result<bool, E>,
) -> Result<(), E> {
    let mut nodes: Vec<NodeId> = book
        .heads()?
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n != own)
        .collect();
    nodes.insert(0, own.clone());
    for node in &nodes {
        for hash in book.cert_hashes(node)? {
            if let Some(cert) = book.cert(node, &hash)? {
                if !each(ReceiptItem::Cert(cert.as_ref().to_vec()))? {
                    return Ok(());
                }
            }
        }
        let mut after = 0u64;
        loop {
            let (page, more) = book.page(node, after, page_items, page_bytes)?;
            for bytes in page {
                let seq = SignedReceipt::decode(&bytes)
                    .and_then(|s| s.receipt())
                    .map_err(|e| StoreError::CorruptRow {
                        table: "fleet-receipts-v1",
                        reason: e.to_string(),
                    })?
                    .seq;
                after = after.max(seq);
                if !each(ReceiptItem::Receipt(bytes))? {
                    return Ok(());
                }
            }
            if !more {
                break;
            }
        }
    }
    Ok(())
}

/// Walks the ids `store` holds (stored or tombstoned), in id order, a page at a time.
pub fn walk_held<E: From<StoreError>>(
    store: &store::Store,
    page_items: usize,
    mut each: impl FnMut(SegmentId) -> Result<(), E>,
) -> Result<(), E> {
    let mut after: Option<SegmentId> = None;
    loop {
        let page = store.held_ids_after(after.as_ref(), page_items)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(*last);
        for id in page {
            each(id)?;
        }
    }
}

/// A stored segment as `export --for` weighs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Candidate {
    pub id: String,
    pub file_len: u64,
    pub priority: u8,
    pub created_at_ms: u64,
}

/// Walks the segments `store` has stored, in id order, a page at a time.
pub fn walk_stored<E: From<StoreError>>(
    store: &store::Store,
    page_items: usize,
    mut each: impl FnMut(Candidate) -> Result<(), E>,
) -> Result<(), E> {
    let mut after: Option<SegmentId> = None;
    loop {
        let page = store.list_after(after.as_ref(), page_items)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.id);
        for s in page {
            each(Candidate {
                id: s.id.to_string(),
                file_len: s.row.file_len,
                priority: s.row.priority,
                created_at_ms: s.row.created_at_ms,
            })?;
        }
    }
}

/// The order `export --for` writes segments in: most important first (the publisher's
/// priority, higher first), then newest first (creation time), then by id so the order is the
/// same on every run.
pub fn write_order(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.priority
        .cmp(&a.priority)
        .then(b.created_at_ms.cmp(&a.created_at_ms))
        .then(a.id.cmp(&b.id))
}

/// Gathers the receipts part of a need-list within its bounds, counting what was left out.
#[derive(Debug, Default)]
pub struct ReceiptsCollector {
    pub receipts: Vec<Vec<u8>>,
    pub certs: Vec<Vec<u8>>,
    /// Receipts or certificates past [`NEED_RECEIPTS_MAX`] / [`NEED_CERTS_MAX`] (or oversized).
    pub left_out: u64,
}

impl ReceiptsCollector {
    /// Takes one item; false once the receipts are at their bound (nothing more fits).
    pub fn push(&mut self, item: ReceiptItem) -> bool {
        match item {
            ReceiptItem::Cert(der) => {
                if self.certs.len() < NEED_CERTS_MAX && der.len() <= RECEIPT_CERT_BYTES_MAX {
                    self.certs.push(der);
                } else {
                    self.left_out += 1;
                }
            }
            ReceiptItem::Receipt(bytes) => {
                if self.receipts.len() < NEED_RECEIPTS_MAX
                    && bytes.len() <= SIGNED_RECEIPT_BYTES_MAX
                {
                    self.receipts.push(bytes);
                } else {
                    self.left_out += 1;
                }
            }
        }
        self.receipts.len() < NEED_RECEIPTS_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ids: usize, receipts: usize, certs: usize) -> NeedList {
        NeedList {
            node: "node-a".parse().unwrap(),
            created_at_ms: 1_700_000_000_123,
            held: (0..ids)
                .map(|i| {
                    let mut id = [0u8; 32];
                    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    id
                })
                .collect(),
            receipts: (0..receipts).map(|i| vec![i as u8; 100]).collect(),
            certs: (0..certs).map(|i| vec![i as u8; 500]).collect(),
        }
    }

    #[test]
    fn inv_32_a_need_list_round_trips() {
        for list in [sample(0, 0, 0), sample(3, 2, 1), sample(1000, 50, 3)] {
            let bytes = list.encode().unwrap();
            assert_eq!(&bytes[..8], &NEED_MAGIC);
            assert_eq!(bytes[8], NEED_VERSION);
            assert_eq!(NeedList::decode(&bytes).unwrap(), list);
        }
        // The largest items at their bounds still read.
        let mut big = sample(1, 1, 1);
        big.receipts[0] = vec![1; SIGNED_RECEIPT_BYTES_MAX];
        big.certs[0] = vec![2; RECEIPT_CERT_BYTES_MAX];
        assert_eq!(NeedList::decode(&big.encode().unwrap()).unwrap(), big);
    }

    #[test]
    fn inv_32_trailing_bytes_and_every_truncation_are_refused() {
        let bytes = sample(3, 2, 1).encode().unwrap();
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            NeedList::decode(&longer),
            Err(NeedListError::TrailingBytes(1))
        ));
        for cut in 0..bytes.len() {
            assert!(NeedList::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut magic = bytes.clone();
        magic[0] ^= 1;
        assert!(matches!(
            NeedList::decode(&magic),
            Err(NeedListError::BadMagic)
        ));
        let mut version = bytes;
        version[8] = NEED_VERSION + 1;
        assert!(matches!(
            NeedList::decode(&version),
            Err(NeedListError::UnknownVersion(v)) if v == NEED_VERSION + 1
        ));
    }

    /// The header of a need-list of node-a up to its count of ids.
    fn header() -> Vec<u8> {
        let mut b = NEED_MAGIC.to_vec();
        b.push(NEED_VERSION);
        b.extend(postcard::to_allocvec("node-a").unwrap());
        b.extend(postcard::to_allocvec(&7u64).unwrap());
        b
    }

    #[test]
    fn inv_32_counts_are_bounded_at_n_and_checked_before_allocation() {
        // N ids: writes; N+1: refused on writing, and on reading from the count alone (no
        // bytes follow it, so nothing could have been allocated for them).
        let at = sample(NEED_IDS_MAX, 0, 0);
        let bytes = at.encode().unwrap();
        assert_eq!(NeedList::decode(&bytes).unwrap().held.len(), NEED_IDS_MAX);
        let over = sample(NEED_IDS_MAX + 1, 0, 0);
        assert!(matches!(
            over.encode(),
            Err(NeedListError::TooMany {
                max: NEED_IDS_MAX,
                ..
            })
        ));
        let mut forged = header();
        forged.extend(postcard::to_allocvec(&(NEED_IDS_MAX as u64 + 1)).unwrap());
        assert!(matches!(
            NeedList::decode(&forged),
            Err(NeedListError::TooMany {
                what: "segment ids",
                ..
            })
        ));
        // A count within the bound that the bytes left cannot hold: truncated, not allocated.
        let mut short = header();
        short.extend(postcard::to_allocvec(&(NEED_IDS_MAX as u64)).unwrap());
        assert!(matches!(
            NeedList::decode(&short),
            Err(NeedListError::Truncated("segment ids"))
        ));
        // Receipts: N write, N+1 do not; an item one byte past its bound is refused.
        assert!(sample(0, NEED_RECEIPTS_MAX, 0).encode().is_ok());
        assert!(sample(0, NEED_RECEIPTS_MAX + 1, 0).encode().is_err());
        assert!(sample(0, 0, NEED_CERTS_MAX).encode().is_ok());
        assert!(sample(0, 0, NEED_CERTS_MAX + 1).encode().is_err());
        let mut long = sample(0, 1, 0);
        long.receipts[0] = vec![0; SIGNED_RECEIPT_BYTES_MAX + 1];
        assert!(matches!(
            long.encode(),
            Err(NeedListError::ItemTooLarge { .. })
        ));
        let mut forged = header();
        forged.extend(postcard::to_allocvec(&0u64).unwrap()); // no ids
        forged.extend(postcard::to_allocvec(&1u64).unwrap()); // one receipt
        forged.extend(postcard::to_allocvec(&(SIGNED_RECEIPT_BYTES_MAX as u64 + 1)).unwrap());
        forged.extend(vec![0u8; SIGNED_RECEIPT_BYTES_MAX + 1]);
        forged.extend(postcard::to_allocvec(&0u64).unwrap()); // no certs
        assert!(matches!(
            NeedList::decode(&forged),
            Err(NeedListError::ItemTooLarge {
                what: "receipts",
                ..
            })
        ));
    }

    #[test]
    fn inv_32_a_file_over_the_bound_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.need");
        let f = std::fs::File::create(&path).unwrap();
        // Sparse: no bytes are written, and the reader refuses from the size alone.
        f.set_len(NEED_FILE_BYTES_MAX + 1).unwrap();
        assert!(matches!(
            NeedList::read_file(&path),
            Err(NeedListError::TooLarge { bytes }) if bytes == NEED_FILE_BYTES_MAX + 1
        ));
        let ok = sample(2, 1, 1);
        std::fs::write(&path, ok.encode().unwrap()).unwrap();
        assert_eq!(NeedList::read_file(&path).unwrap(), ok);
        // Unordered ids are refused: a reader relies on them being a set.
        let mut unordered = sample(2, 0, 0);
        unordered.held.reverse();
        assert!(matches!(unordered.encode(), Err(NeedListError::Unordered)));
    }

    #[test]
    fn the_write_order_is_priority_then_newest_then_id() {
        let c = |id: &str, priority, created_at_ms| Candidate {
            id: id.into(),
            file_len: 1,
            priority,
            created_at_ms,
        };
        let mut v = [c("a", 1, 10), c("b", 9, 5), c("c", 1, 20), c("d", 1, 20)];
        v.sort_by(write_order);
        let ids: Vec<&str> = v.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["b", "c", "d", "a"]);
    }
}
