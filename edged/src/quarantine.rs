//! What `edged quarantine` shows of segments quarantined at rest, shared by the command (no
//! daemon runs) and the daemon (answering over the control socket).

use serde::{Deserialize, Serialize};
use store::{QuarantinedSegment, SegmentId};

use crate::output::{format_ms, path};

/// Quarantined segments read from the index at a time (listing, purging all).
pub const QUARANTINE_PAGE_ITEMS: usize = 256;

/// One quarantined segment, as `quarantine list` and `show` print it (and their `--json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    /// The name in the file's header, if the header still parses.
    pub name: Option<String>,
    pub channel: Option<String>,
    pub publisher: Option<String>,
    pub sequence: Option<u64>,
    pub created_at: Option<String>,
    pub payload_bytes: Option<u64>,
    /// Why the header does not parse, when it does not.
    pub header_problem: Option<String>,
    pub quarantined_at: String,
    pub reason: String,
    /// Bytes of the file when it was quarantined.
    pub bytes_at_quarantine: u64,
    /// Where the file is kept, and its bytes now (none: no file kept).
    pub file: String,
    pub file_bytes: Option<u64>,
}

impl Entry {
    pub fn from_store(q: &QuarantinedSegment) -> Entry {
        let (name, channel, publisher, sequence, created_at, payload_bytes, header_problem) =
            match &q.header {
                Ok(signed) => {
                    let m = signed.manifest();
                    (
                        Some(m.name.clone()),
                        Some(m.channel.clone()),
                        Some(m.publisher.to_string()),
                        Some(m.sequence),
                        Some(format_ms(m.created_at_ms)),
                        Some(m.payload_len),
                        None,
                    )
                }
                Err(problem) => (None, None, None, None, None, None, Some(problem.clone())),
            };
        Entry {
            id: q.id.to_string(),
            name,
            channel,
            publisher,
            sequence,
            created_at,
            payload_bytes,
            header_problem,
            quarantined_at: format_ms(q.row.at_ms),
            reason: q.row.reason.clone(),
            bytes_at_quarantine: q.row.file_len,
            file: path(&q.path),
            file_bytes: q.file_len_now,
        }
    }

    /// The entry in lines of `key: value`, for `quarantine show`.
    pub fn render_full(&self) -> String {
        let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        let mut lines = vec![
            ("segment", self.id.clone()),
            ("name", or(&self.name)),
            ("channel", or(&self.channel)),
            ("publisher", or(&self.publisher)),
            (
                "sequence",
                self.sequence.map_or("unknown".into(), |s| s.to_string()),
            ),
            ("created", or(&self.created_at)),
            (
                "payload",
                self.payload_bytes
                    .map_or("unknown".into(), crate::output::bytes),
            ),
            ("quarantined", self.quarantined_at.clone()),
            ("reason", self.reason.clone()),
            ("size then", crate::output::bytes(self.bytes_at_quarantine)),
            (
                "file",
                match self.file_bytes {
                    Some(n) => format!("{} ({})", self.file, crate::output::bytes(n)),
                    None => format!("{} (none kept)", self.file),
                },
            ),
        ];
        if let Some(problem) = &self.header_problem {
            lines.push(("header", format!("does not parse: {problem}")));
        } else {
            lines.push((
                "header",
                "parses (not verified: the file failed verification)".into(),
            ));
        }
        lines
            .into_iter()
            .map(|(k, v)| format!("{k:<12} {}\n", crate::output::escape(&v)))
            .collect()
    }
}

/// What a purge did, as `quarantine purge` prints it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PurgeReport {
    pub purged: u64,
    pub bytes_freed: u64,
}

/// Purges the quarantined segments `ids` (each an id or unique prefix), or all of them.
pub fn purge(
    store: &store::Store,
    ids: &[String],
    all: bool,
) -> Result<PurgeReport, store::StoreError> {
    let mut report = PurgeReport::default();
    let one = |id: &SegmentId, report: &mut PurgeReport| -> Result<(), store::StoreError> {
        if let Some(p) = store.purge_quarantined(id)? {
            report.purged += 1;
            report.bytes_freed += p.bytes;
        }
        Ok(())
    };
    if all {
        loop {
            // Each page is purged before the next is read, so reading from the start again
            // finds the rest.
            let page = store.quarantined_after(None, QUARANTINE_PAGE_ITEMS)?;
            if page.is_empty() {
                return Ok(report);
            }
            for (id, _) in &page {
                one(id, &mut report)?;
            }
        }
    }
    // Resolved first: a typo purges nothing.
    let mut chosen = Vec::with_capacity(ids.len());
    for prefix in ids {
        chosen.push(store.resolve_quarantined(prefix)?);
    }
    for id in &chosen {
        one(id, &mut report)?;
    }
    Ok(report)
}
