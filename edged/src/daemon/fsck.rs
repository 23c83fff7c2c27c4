//! `edged fsck` and `edged quarantine` answered by the running daemon, on its own store (see
//! [`crate::fsck`] and [`crate::quarantine`]).

use std::io::Write;

use serde_json::Value;
use store::SegmentId;

use super::Daemon;
use super::listing::{ListError, Pages};
use crate::quarantine::{Entry, QUARANTINE_PAGE_ITEMS};

/// Re-verifies every stored segment on the connection's own thread: the daemon keeps serving
/// meanwhile, and a segment being checked is leased like one being sent.
pub(super) fn check(d: &Daemon, repair: bool) -> Result<Value, anyhow::Error> {
    let mut report = crate::fsck::Report::default();
    report.add_leftovers(&d.store.check_files(repair)?);
    report.add_ledger(&relay::audit::audit(&d.store)?, true);
    crate::fsck::check_segments(&d.store, || d.clock.now_ms(), &mut report, |_| {})?;
    tracing::info!(
        segments_ok = report.segments_ok,
        quarantined = report.quarantined,
        untrusted = report.untrusted,
        "fsck done"
    );
    Ok(serde_json::to_value(&report)?)
}

pub(super) fn quarantine_list<W: Write>(
    d: &Daemon,
    pages: &mut Pages<'_, W>,
) -> Result<(), ListError> {
    let mut after: Option<SegmentId> = None;
    loop {
        let page = d.store.quarantined_after(
            after.as_ref(),
            QUARANTINE_PAGE_ITEMS.min(pages.page_items()),
        )?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        after = Some(*last);
        for (id, _) in &page {
            // Purged since the page was read: not listed.
            if let Some(q) = d.store.quarantined_segment(id)? {
                pages.push(&Entry::from_store(&q))?;
            }
        }
    }
}

pub(super) fn quarantine_show(d: &Daemon, prefix: &str) -> Result<Value, anyhow::Error> {
    let id = d.store.resolve_quarantined(prefix)?;
    let q = d
        .store
        .quarantined_segment(&id)?
        .ok_or_else(|| store::StoreError::NotQuarantined(prefix.to_owned()))?;
    Ok(serde_json::to_value(Entry::from_store(&q))?)
}

pub(super) fn quarantine_purge(
    d: &Daemon,
    ids: &[String],
    all: bool,
) -> Result<Value, anyhow::Error> {
    let report = crate::quarantine::purge(&d.store, ids, all)?;
    tracing::info!(
        purged = report.purged,
        bytes_freed = report.bytes_freed,
        "quarantined files purged"
    );
    Ok(serde_json::to_value(report)?)
}
