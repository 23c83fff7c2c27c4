//! The checks of a run, the same as the failure-injection suite's: nothing acknowledged is
//! lost, every segment reaches every node its condition names, no duplicate copies, counters
//! reconcile, and the final state equals a fault-free run's.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::Ordering;

use store::SegmentId;
use store::fs::Fs;

use crate::fleet::Fleet;

/// How the store names a segment's file: `<id>.seg` in its fan-out directory.
const SEG_FILE_SUFFIX: &str = ".seg";

/// Names of the checks, as in the failure-injection suite's reports.
pub const ACKED_NOT_LOST: &str = "acked_not_lost";
pub const PROPAGATION: &str = "propagation";
pub const DUPLICATE_COPIES: &str = "duplicate_copies";
pub const COUNTERS_RECONCILE: &str = "counters_reconcile";
pub const NO_SYNC_AFTER_FAILED_SYNC: &str = "no_sync_after_failed_sync";
pub const STATE_EQUALS_FAULT_FREE: &str = "state_equals_fault_free";
pub const CONVERGES: &str = "converges";
pub const CLEAN_STOP: &str = "clean_stop";

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub check: &'static str,
    /// Invariant ids it breaks (traceability/invariants.toml).
    pub invariants: &'static [&'static str],
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.check,
            self.invariants.join(", "),
            self.detail
        )
    }
}

/// What one node holds at the end, and its jobs that did not end delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    pub up: bool,
    pub held: BTreeSet<SegmentId>,
    /// (segment, peer, state) of every job not delivered. Which jobs exist depends on who
    /// received a segment from whom first, so delivered jobs are not compared, only that
    /// nothing else is left.
    pub unfinished_jobs: BTreeSet<(SegmentId, String, String)>,
}

/// The fleet's state at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinalState {
    pub nodes: Vec<NodeState>,
}

impl FinalState {
    /// What the fleet holds now.
    pub fn of(fleet: &Fleet) -> FinalState {
        let nodes = fleet
            .nodes
            .iter()
            .map(|node| {
                let (Some(store), Some(relay)) = (node.store(), node.relay()) else {
                    return NodeState::default();
                };
                let held = store
                    .list()
                    .map(|l| l.into_iter().map(|s| s.id).collect())
                    .unwrap_or_default();
                let unfinished_jobs = relay
                    .all_jobs()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(_, row)| row.state != relay::tables::JobState::Delivered)
                    .map(|(key, row)| (key.seg, key.peer.to_string(), row.state.to_string()))
                    .collect();
                NodeState {
                    up: true,
                    held,
                    unfinished_jobs,
                }
            })
            .collect();
        FinalState { nodes }
    }

    /// A one-line digest of the state, for the trace.
    pub fn summary(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "n{i}:{}{}h/{}u",
                    if n.up { "" } else { "down:" },
                    n.held.len(),
                    n.unfinished_jobs.len()
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Every check on a converged fleet, against the fault-free run's final state.
pub fn check_fleet(fleet: &Fleet, state: &FinalState, fault_free: &FinalState) -> Vec<Violation> {
    let mut out = Vec::new();
    acked_and_propagated(fleet, &mut out);
    duplicate_copies(fleet, &mut out);
    counters(fleet, &mut out);
    for (i, node) in fleet.nodes.iter().enumerate() {
        let n = node.syncs_after_failed_sync();
        if n > 0 {
            out.push(Violation {
                check: NO_SYNC_AFTER_FAILED_SYNC,
                invariants: &["INV-23"],
                detail: format!("n{i}: {n} sync(s) reported success after a failed sync"),
            });
        }
    }
    if state != fault_free {
        out.push(Violation {
            check: STATE_EQUALS_FAULT_FREE,
            invariants: &["INV-15"],
            detail: format!(
                "with faults {} ≠ fault-free {}{}",
                state.summary(),
                fault_free.summary(),
                first_difference(state, fault_free)
            ),
        });
    }
    out
}

fn first_difference(a: &FinalState, b: &FinalState) -> String {
    for (i, (x, y)) in a.nodes.iter().zip(&b.nodes).enumerate() {
        if x.held != y.held {
            let only: Vec<String> = x
                .held
                .symmetric_difference(&y.held)
                .map(|s| s.short())
                .collect();
            return format!("; n{i} held differs in {only:?}");
        }
        if x.unfinished_jobs != y.unfinished_jobs {
            let jobs: Vec<String> = x
                .unfinished_jobs
                .symmetric_difference(&y.unfinished_jobs)
                .map(|(s, p, st)| format!("{}→{p}:{st}", s.short()))
                .collect();
            return format!("; n{i} unfinished jobs differ: {jobs:?}");
        }
    }
    String::new()
}

/// INV-03: a node that acknowledged a segment (an import, or a receive from a peer) still holds
/// it. INV-15: every segment acknowledged anywhere reaches every node (all segments of a
/// workload are `all_peers`, and every topology is connected).
fn acked_and_propagated(fleet: &Fleet, out: &mut Vec<Violation>) {
    for (id, importers) in &fleet.acked_imports {
        for i in 0..fleet.nodes.len() {
            if fleet.holds(i, id) {
                continue;
            }
            let (check, invariants, how) = if importers.contains(&i) {
                (
                    ACKED_NOT_LOST,
                    &["INV-03"][..],
                    "imported here and acknowledged",
                )
            } else {
                (PROPAGATION, &["INV-15"][..], "never arrived")
            };
            out.push(Violation {
                check,
                invariants,
                detail: format!("n{i} lacks {}: {how}", id.short()),
            });
        }
    }
    for (i, node) in fleet.nodes.iter().enumerate() {
        for id in node.tally.received().keys() {
            if !fleet.holds(i, id) {
                out.push(Violation {
                    check: ACKED_NOT_LOST,
                    invariants: &["INV-03"],
                    detail: format!(
                        "n{i} lacks {}: received from a peer and acknowledged",
                        id.short()
                    ),
                });
            }
        }
    }
}

/// INV-10: no node stores a segment twice — as `.seg` files, as listed rows, or by receiving
/// (and acknowledging) a segment it had already acknowledged.
fn duplicate_copies(fleet: &Fleet, out: &mut Vec<Violation>) {
    for (i, node) in fleet.nodes.iter().enumerate() {
        let Some(store) = node.store() else { continue };
        let mut files: BTreeMap<String, u32> = BTreeMap::new();
        for dir in store.layout().fanouts() {
            let Ok(entries) = node.fs().list_dir(&dir) else {
                continue;
            };
            for e in entries {
                let name = e.name.to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(SEG_FILE_SUFFIX) {
                    *files.entry(id.to_owned()).or_insert(0) += 1;
                }
            }
        }
        for (id, copies) in files.iter().filter(|(_, c)| **c > 1) {
            out.push(Violation {
                check: DUPLICATE_COPIES,
                invariants: &["INV-10"],
                detail: format!("n{i} has {copies} files of {id}"),
            });
        }
        if let Ok(list) = store.list() {
            let unique: BTreeSet<SegmentId> = list.iter().map(|s| s.id).collect();
            if unique.len() != list.len() {
                out.push(Violation {
                    check: DUPLICATE_COPIES,
                    invariants: &["INV-10"],
                    detail: format!(
                        "n{i} lists {} rows for {} segments",
                        list.len(),
                        unique.len()
                    ),
                });
            }
        }
        for (id, times) in node.tally.received().iter().filter(|(_, t)| **t > 1) {
            out.push(Violation {
                check: DUPLICATE_COPIES,
                invariants: &["INV-10"],
                detail: format!("n{i} stored {} {times} times from peers", id.short()),
            });
        }
    }
}

/// INV-26: the relay's identity (open attempts = transfers in flight), and offers stored =
/// segments received, on every node.
fn counters(fleet: &Fleet, out: &mut Vec<Violation>) {
    for (i, node) in fleet.nodes.iter().enumerate() {
        if let Some(relay) = node.relay() {
            match relay.counters() {
                Ok(c) if c.reconciles() => {}
                Ok(c) => out.push(Violation {
                    check: COUNTERS_RECONCILE,
                    invariants: &["INV-26"],
                    detail: format!(
                        "n{i}: open attempts {} ≠ transfers in flight {}",
                        c.totals.attempts_open(),
                        c.transfers_in_flight
                    ),
                }),
                Err(e) => out.push(Violation {
                    check: COUNTERS_RECONCILE,
                    invariants: &["INV-26"],
                    detail: format!("n{i}: counters unreadable: {e}"),
                }),
            }
        }
        let stored = node.tally.offers_stored.load(Ordering::Relaxed);
        let received: u64 = node.tally.received().values().map(|&t| u64::from(t)).sum();
        if stored != received {
            out.push(Violation {
                check: COUNTERS_RECONCILE,
                invariants: &["INV-26"],
                detail: format!("n{i}: offers stored {stored} ≠ segments received {received}"),
            });
        }
    }
}
