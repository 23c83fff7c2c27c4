//! Why a segment did not fit: "store full" said in words an operator can act on.
//!
//! A full store is not a bad segment: the space is held by segments still owed to peers (pinned
//! by their relay jobs, dead letters included, until their pins age out) or kept for another
//! reason, and it frees as they propagate. The explanation names the largest holders and to
//! whom they are owed, says that the import can be retried, and what frees space.

use serde::Serialize;
use store::{SegmentId, Store, StoreError};

use crate::output::bytes;

/// Holders named in one explanation (the largest); the others are only counted.
pub const STORE_FULL_HOLDERS_LISTED: usize = 3;
/// Index rows read at a time while looking for the holders.
const STORE_FULL_PAGE_ITEMS: usize = 256;
/// Peers named per holder; the others are counted.
const STORE_FULL_PEERS_LISTED: usize = 4;

/// A segment holding space it may not give up yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub id: String,
    pub name: String,
    pub bytes: u64,
    /// Peers it is still owed to (from its relay pins).
    pub owed_to: Vec<String>,
    /// Other pin owners (an export under way, a transfer being served).
    pub kept_by: Vec<String>,
}

/// Why a segment of `needed` bytes did not fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreFull {
    pub needed_bytes: u64,
    pub available_bytes: u64,
    pub ceiling_bytes: u64,
    /// Bytes and segments pinned (not evictable).
    pub held_bytes: u64,
    pub held_segments: u64,
    /// The largest holders, at most [`STORE_FULL_HOLDERS_LISTED`].
    pub holders: Vec<Holder>,
}

impl StoreFull {
    /// Reads who holds the space in `store` (one page of the index at a time).
    pub fn explain(
        store: &Store,
        needed_bytes: u64,
        available_bytes: u64,
    ) -> Result<Self, StoreError> {
        let mut full = StoreFull {
            needed_bytes,
            available_bytes,
            ceiling_bytes: store.config().ceiling_bytes,
            held_bytes: 0,
            held_segments: 0,
            holders: Vec::new(),
        };
        let mut after: Option<SegmentId> = None;
        loop {
            let page = store.list_after(after.as_ref(), STORE_FULL_PAGE_ITEMS)?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.id);
            for info in page.into_iter().filter(|i| !i.pins.is_empty()) {
                full.held_bytes += info.row.file_len;
                full.held_segments += 1;
                let (owed_to, kept_by): (Vec<String>, Vec<String>) = info
                    .pins
                    .iter()
                    .cloned()
                    .partition(|p| p.starts_with("relay:"));
                full.consider(Holder {
                    id: info.id.to_string(),
                    name: info.row.name,
                    bytes: info.row.file_len,
                    owed_to: owed_to
                        .into_iter()
                        .map(|p| p.trim_start_matches("relay:").to_owned())
                        .collect(),
                    kept_by,
                });
            }
        }
        Ok(full)
    }

    /// Keeps `h` if it is among the largest holders.
    fn consider(&mut self, h: Holder) {
        self.holders.push(h);
        self.holders
            .sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.id.cmp(&b.id)));
        self.holders.truncate(STORE_FULL_HOLDERS_LISTED);
    }
}

/// The explanation in words; if the index cannot be read, at least the store's own message.
pub fn reason(store: &Store, needed_bytes: u64, available_bytes: u64) -> String {
    match StoreFull::explain(store, needed_bytes, available_bytes) {
        Ok(full) => full.to_string(),
        Err(e) => format!(
            "{}; who holds the space could not be read: {e}",
            store::IngestError::StoreFull {
                needed_bytes,
                available_bytes
            }
        ),
    }
}

impl StoreFull {
    /// Who holds the space, for a line that does not concern one segment's size (a receive
    /// refused): the ceiling and the held segments.
    pub fn holders_in_words(&self) -> String {
        match self.held() {
            Some(held) => format!("the ceiling is {}; {held}", bytes(self.ceiling_bytes)),
            None => format!("the ceiling is {}", bytes(self.ceiling_bytes)),
        }
    }

    /// "32.0 MiB is held by 1 segment(s) not yet propagated (…)"; `None` when nothing is held.
    fn held(&self) -> Option<String> {
        if self.held_segments == 0 {
            return None;
        }
        let listed: Vec<String> = self.holders.iter().map(describe).collect();
        let mut s = format!(
            "{} is held by {} segment(s) not yet propagated ({}",
            bytes(self.held_bytes),
            self.held_segments,
            listed.join("; ")
        );
        let rest = self.held_segments.saturating_sub(self.holders.len() as u64);
        if rest > 0 {
            s.push_str(&format!("; and {rest} more"));
        }
        s.push(')');
        Some(s)
    }
}

impl std::fmt::Display for StoreFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "store full: it needs {}, {} can be freed under the ceiling of {}",
            bytes(self.needed_bytes),
            bytes(self.available_bytes),
            bytes(self.ceiling_bytes),
        )?;
        if let Some(held) = self.held() {
            write!(f, "; {held}")?;
        }
        write!(
            f,
            ". Retryable: import again once those peers have them (`edged segments` shows \
             progress), raise [store] ceiling_bytes, or free what is owed to a peer that will not \
             come back (`edged dlq purge --peer ID`)"
        )
    }
}

fn describe(h: &Holder) -> String {
    let short: String = h.id.chars().take(12).collect();
    let mut s = format!("{} {short} {}", h.name, bytes(h.bytes));
    if !h.owed_to.is_empty() {
        let shown: Vec<&str> = h
            .owed_to
            .iter()
            .take(STORE_FULL_PEERS_LISTED)
            .map(String::as_str)
            .collect();
        s.push_str(&format!(" owed to {}", shown.join(", ")));
        if h.owed_to.len() > shown.len() {
            s.push_str(&format!(" and {} more", h.owed_to.len() - shown.len()));
        }
    }
    if !h.kept_by.is_empty() {
        s.push_str(&format!(" kept by {}", h.kept_by.join(", ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(id: u8, bytes: u64, owed: &[&str]) -> Holder {
        Holder {
            id: format!("{id:02x}").repeat(32),
            name: format!("seg-{id}"),
            bytes,
            owed_to: owed.iter().map(|s| s.to_string()).collect(),
            kept_by: Vec::new(),
        }
    }

    fn full() -> StoreFull {
        StoreFull {
            needed_bytes: 32 << 20,
            available_bytes: 16 << 20,
            ceiling_bytes: 48 << 20,
            held_bytes: 0,
            held_segments: 0,
            holders: Vec::new(),
        }
    }

    #[test]
    fn the_largest_holders_are_named_with_their_peers_the_rest_counted() {
        let mut f = full();
        for (i, size) in [5u64, 50, 20, 40].into_iter().enumerate() {
            f.held_segments += 1;
            f.held_bytes += size << 20;
            f.consider(holder(i as u8, size << 20, &["node-2"]));
        }
        let names: Vec<&str> = f.holders.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["seg-1", "seg-3", "seg-2"]);
        let text = f.to_string();
        assert!(
            text.contains("seg-1 010101010101 50.0 MiB owed to node-2"),
            "{text}"
        );
        assert!(text.contains("and 1 more"), "{text}");
        assert!(text.contains("Retryable"), "{text}");
        assert!(text.contains("ceiling_bytes"), "{text}");
    }

    #[test]
    fn many_peers_are_counted_beyond_the_listed() {
        let h = holder(1, 1, &["a", "b", "c", "d", "e", "f"]);
        assert!(describe(&h).ends_with("owed to a, b, c, d and 2 more"));
    }
}
