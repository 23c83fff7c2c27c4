//! `edged fsck`'s check of a store, shared by the command (no daemon runs) and the daemon (it
//! runs, and checks its own store when asked over the control socket).
//!
//! Every stored segment is re-verified as it would be before it is served (file length, header,
//! signature against the trusted publishers, payload hash: [`store::Store::scrub_one`]); one
//! that fails is quarantined with the reason. The agreement of files and index (a file without
//! an index row, a row without a file, stray temp files, partials without their file) is what
//! the store's own open repairs ([`store::RecoveryReport`]): when fsck opens the store itself,
//! what that open found is reported as findings already repaired. On a running store the same
//! leftovers (a segment file without a row, a temp file of no ingest) are looked for again
//! ([`store::Store::check_files`]) and removed with `--repair`; a row whose file has gone is
//! found as a corrupt segment ("file missing"). The relay's ledger is checked against itself
//! and the store's pins ([`relay::audit`]); with `--repair` and no daemon running, what can be
//! is rebuilt from the jobs.

use serde::{Deserialize, Serialize};
use store::{RecoveryReport, ScrubOutcome, SegmentId};

use crate::output::{format_ms, path};

/// Findings listed in one report: beyond this only counted, so that a store in very bad shape
/// still gives a report that fits a control frame.
pub const FSCK_FINDINGS_MAX: usize = 1000;
/// Segments read from the index at a time while checking.
pub const FSCK_PAGE_ITEMS: usize = 256;

/// One thing fsck found, in words.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Finding {
    /// Stable name: `corrupt`, `untrusted`, `temp_file_removed`, `orphan_file_removed`,
    /// `index_row_dropped`, `partial_dropped`.
    pub kind: String,
    /// The segment concerned, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// What is wrong.
    pub what: String,
    /// What was done about it.
    pub action: String,
}

/// What a check found. Serialised as the JSON of `edged fsck --json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    /// When the check ended.
    pub finished_at: String,
    /// Segments read through and found intact.
    pub segments_ok: u64,
    /// Bytes of segment files read and verified.
    pub bytes_checked: u64,
    /// Segments quarantined by this check.
    pub quarantined: u64,
    /// Intact segments kept although their publisher is not trusted (any more).
    pub untrusted: u64,
    /// Files and rows brought back into agreement when the store was opened.
    pub repaired_at_open: u64,
    /// Leftover files removed by `--repair`.
    #[serde(default)]
    pub repaired: u64,
    /// Relay jobs read while checking the ledger against itself and the store.
    #[serde(default)]
    pub ledger_jobs: u64,
    /// Ledger rows and pins rebuilt by `--repair` (only with no daemon running).
    #[serde(default)]
    pub ledger_repaired: u64,
    /// Findings, at most [`FSCK_FINDINGS_MAX`]; `findings_total` counts them all.
    pub findings: Vec<Finding>,
    pub findings_total: u64,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.findings_total == 0
    }

    fn add(&mut self, finding: Finding) {
        self.findings_total += 1;
        if self.findings.len() < FSCK_FINDINGS_MAX {
            self.findings.push(finding);
        }
    }

    /// Records what the store's open repaired (files and index out of agreement).
    pub fn add_recovery(&mut self, recovery: &RecoveryReport) {
        const REPAIRED: &str = "repaired when the store was opened";
        let mut add = |kind: &str, segment: Option<&SegmentId>, what: String| {
            self.repaired_at_open += 1;
            self.add(Finding {
                kind: kind.to_owned(),
                segment: segment.map(|id| id.to_string()),
                what,
                action: REPAIRED.to_owned(),
            });
        };
        for p in &recovery.temp_removed {
            add(
                "temp_file_removed",
                None,
                format!("temp file {} belonged to no ingest; removed", path(p)),
            );
        }
        for p in &recovery.orphans_removed {
            add(
                "orphan_file_removed",
                None,
                format!(
                    "segment file {} had no index row (an ingest cut before it was recorded); removed",
                    path(p)
                ),
            );
        }
        for (id, reason) in &recovery.rows_dropped {
            add(
                "index_row_dropped",
                Some(id),
                format!(
                    "index row without a good file ({reason}); dropped so the segment can be fetched again"
                ),
            );
        }
        for (id, reason) in &recovery.partials_dropped {
            add(
                "partial_dropped",
                Some(id),
                format!("partial transfer dropped: {reason}"),
            );
        }
    }

    /// Records leftover files found on the store as it runs (see [`store::agreement`]).
    pub fn add_leftovers(&mut self, found: &store::agreement::Leftovers) {
        let action = if found.removed {
            "removed (--repair)"
        } else {
            "left in place; `edged fsck --repair` removes it"
        };
        for p in &found.orphan_files {
            self.add(Finding {
                kind: "orphan_file".to_owned(),
                segment: None,
                what: format!("segment file {} has no index row", path(p)),
                action: action.to_owned(),
            });
        }
        for p in &found.stray_temp_files {
            self.add(Finding {
                kind: "stray_temp_file".to_owned(),
                segment: None,
                what: format!("temp file {} belongs to no ingest", path(p)),
                action: action.to_owned(),
            });
        }
        // Listed up to the store's own bound; the rest still count.
        let listed = (found.orphan_files.len() + found.stray_temp_files.len()) as u64;
        self.findings_total += found.total.saturating_sub(listed);
        if found.removed {
            self.repaired += found.total;
        }
    }

    /// Records where the relay's ledger disagrees with itself or with the store (see
    /// [`relay::audit`]). `running`: a daemon holds the ledger, so nothing of it was rebuilt.
    pub fn add_ledger(&mut self, audit: &relay::audit::Audit, running: bool) {
        self.ledger_jobs = audit.jobs;
        for d in &audit.found {
            let action = match (d.repairable, running) {
                (true, false) => "left in place; `edged fsck --repair` rebuilds it from the jobs",
                (true, true) => {
                    "left in place; stop the daemon and run `edged fsck --repair` (the running \
                     relay holds its due list in memory)"
                }
                (false, _) => "left for the operator: `edged dlq` settles the job",
            };
            self.add(Finding {
                kind: format!("ledger_{}", d.kind),
                segment: d.segment.map(|id| id.to_string()),
                what: d.what.clone(),
                action: action.to_owned(),
            });
        }
        self.findings_total += audit.total.saturating_sub(audit.found.len() as u64);
    }

    /// Records `changed` ledger rows and pins rebuilt by `--repair`: each was a finding.
    pub fn add_ledger_repaired(&mut self, changed: u64) {
        self.ledger_repaired = changed;
        if changed > 0 {
            self.add(Finding {
                kind: "ledger_rebuilt".to_owned(),
                segment: None,
                what: format!(
                    "the relay ledger disagreed with its jobs or with the store's pins in {changed} row(s)"
                ),
                action: "rebuilt from the jobs (--repair)".to_owned(),
            });
        }
    }

    /// Records the outcome of re-verifying one stored segment.
    pub fn add_outcome(&mut self, id: &SegmentId, outcome: ScrubOutcome) {
        match outcome {
            ScrubOutcome::Intact { bytes } => {
                self.segments_ok += 1;
                self.bytes_checked += bytes;
            }
            ScrubOutcome::Quarantined { reason, .. } => {
                self.quarantined += 1;
                self.add(Finding {
                    kind: "corrupt".to_owned(),
                    segment: Some(id.to_string()),
                    what: format!("corrupt at rest: {reason}"),
                    action: "quarantined (`edged quarantine show` has the details); a peer that \
                             holds it may send it again"
                        .to_owned(),
                });
            }
            ScrubOutcome::Untrusted { publisher } => {
                self.untrusted += 1;
                self.add(Finding {
                    kind: "untrusted".to_owned(),
                    segment: Some(id.to_string()),
                    what: format!("its publisher {publisher} is not among the trusted publishers"),
                    action:
                        "kept, neither sent nor exported; trusting the key again makes it servable"
                            .to_owned(),
                });
            }
            ScrubOutcome::Gone => {}
        }
    }
}

/// Checks every stored segment of `store`, in id order, a page at a time; `progress` is told
/// the bytes of each segment as it is done (by its index row, whatever the outcome).
pub fn check_segments(
    store: &store::Store,
    now_ms: impl Fn() -> u64,
    report: &mut Report,
    mut progress: impl FnMut(u64),
) -> Result<(), store::StoreError> {
    let mut after: Option<SegmentId> = None;
    loop {
        let page = store.list_after(after.as_ref(), FSCK_PAGE_ITEMS)?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.id);
        for info in page {
            let outcome = store.scrub_one(&info.id, now_ms())?;
            report.add_outcome(&info.id, outcome);
            progress(info.row.file_len);
        }
    }
    report.finished_at = format_ms(now_ms());
    Ok(())
}

/// The report in words, for a terminal.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.findings {
        let seg = f
            .segment
            .as_deref()
            .map(|s| format!("segment {s}: "))
            .unwrap_or_default();
        out.push_str(&format!("{seg}{} — {}\n", f.what, f.action));
    }
    if report.findings_total > report.findings.len() as u64 {
        out.push_str(&format!(
            "… and {} more finding(s) not listed\n",
            report.findings_total - report.findings.len() as u64
        ));
    }
    out.push_str(&format!(
        "{} segment(s) intact ({} verified); {} quarantined, {} of untrusted publishers kept, {} repaired when the store was opened, {} leftover file(s) removed; {} relay job(s) checked against the store, {} ledger row(s) rebuilt\n",
        report.segments_ok,
        crate::output::bytes(report.bytes_checked),
        report.quarantined,
        report.untrusted,
        report.repaired_at_open,
        report.repaired,
        report.ledger_jobs,
        report.ledger_repaired,
    ));
    out.push_str(if report.is_clean() {
        "clean\n"
    } else {
        "findings above\n"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> SegmentId {
        SegmentId([b; 32])
    }

    #[test]
    fn intact_segments_count_and_leave_the_report_clean() {
        let mut r = Report::default();
        r.add_outcome(&id(1), ScrubOutcome::Intact { bytes: 10 });
        r.add_outcome(&id(2), ScrubOutcome::Gone);
        assert!(r.is_clean());
        assert_eq!((r.segments_ok, r.bytes_checked), (1, 10));
    }

    #[test]
    fn inv_24_a_quarantine_is_a_finding_in_words() {
        let mut r = Report::default();
        r.add_outcome(
            &id(3),
            ScrubOutcome::Quarantined {
                reason: "payload hash mismatch".into(),
                read: true,
            },
        );
        assert!(!r.is_clean());
        assert_eq!(r.quarantined, 1);
        let text = render(&r);
        assert!(
            text.contains("corrupt at rest: payload hash mismatch"),
            "{text}"
        );
        assert!(text.contains("quarantined"), "{text}");
    }

    #[test]
    fn findings_beyond_the_bound_are_counted_not_listed() {
        let mut r = Report::default();
        for _ in 0..FSCK_FINDINGS_MAX + 5 {
            r.add_outcome(
                &id(4),
                ScrubOutcome::Quarantined {
                    reason: "file missing".into(),
                    read: false,
                },
            );
        }
        assert_eq!(r.findings.len(), FSCK_FINDINGS_MAX);
        assert_eq!(r.findings_total, FSCK_FINDINGS_MAX as u64 + 5);
        assert!(render(&r).contains("5 more finding(s)"));
    }

    #[test]
    fn what_the_open_repaired_is_reported() {
        let mut r = Report::default();
        let rec = RecoveryReport {
            orphans_removed: vec!["/d/segments/ab/x.seg".into()],
            rows_dropped: vec![(id(5), "file missing".into())],
            ..Default::default()
        };
        r.add_recovery(&rec);
        assert_eq!((r.repaired_at_open, r.findings_total), (2, 2));
        assert_eq!(r.findings[1].kind, "index_row_dropped");
    }
}
