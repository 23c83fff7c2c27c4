//! The fleet view of a segment, from receipts: pure decisions, no I/O.
//!
//! The **roster** is the set of nodes the operator expects to hold everything: `[fleet]
//! members` when configured, otherwise learned — this node, its `known_peers`, and every node
//! some receipt (checked against the fleet CA) came from.
//!
//! A roster member **holds** a segment when its latest receipt about it says `Stored`. The
//! verdict of a segment:
//!
//! - `everywhere`: every member holds it;
//! - `unknown`: some member that does not hold it has sent no receipt at all newer than
//!   `stale_after_ms` (on its own clock, so clock skew between nodes shifts the bound) — it
//!   may hold it and be unable to say so;
//! - `partial`: otherwise — every member that lacks it has spoken recently.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::book::{Head, NodeHolding};
use crate::pki::NodeId;

/// Default of `[fleet] stale_after_ms`: ten minutes, ten liveness receipts at the default
/// `alive_interval_ms`.
pub const STALE_AFTER_MS_DEFAULT: u64 = 600_000;

/// Where the roster comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RosterSource {
    /// `[fleet] members` in the configuration.
    Configured,
    /// This node, its known peers and every node a receipt came from.
    Learned,
}

/// The nodes expected to hold every segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Roster {
    pub source: RosterSource,
    pub members: BTreeSet<NodeId>,
}

impl Roster {
    /// The configured roster, or the learned one when `configured` is empty.
    pub fn new<'a>(
        configured: &[NodeId],
        own: &NodeId,
        peers: impl IntoIterator<Item = &'a NodeId>,
        heard_from: impl IntoIterator<Item = &'a NodeId>,
    ) -> Roster {
        if !configured.is_empty() {
            return Roster {
                source: RosterSource::Configured,
                members: configured.iter().cloned().collect(),
            };
        }
        let mut members: BTreeSet<NodeId> = peers.into_iter().cloned().collect();
        members.extend(heard_from.into_iter().cloned());
        members.insert(own.clone());
        Roster {
            source: RosterSource::Learned,
            members,
        }
    }
}

/// A segment's fleet-wide verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    Everywhere,
    Partial { held: u64, of: u64 },
    Unknown { held: u64, of: u64 },
}

impl Verdict {
    /// `everywhere`, `partial (N/M)`, `unknown (N/M)`.
    pub fn label(&self) -> String {
        match self {
            Verdict::Everywhere => "everywhere".into(),
            Verdict::Partial { held, of } => format!("partial ({held}/{of})"),
            Verdict::Unknown { held, of } => format!("unknown ({held}/{of})"),
        }
    }

    /// The metric label: `everywhere`, `partial`, `unknown`.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Everywhere => "everywhere",
            Verdict::Partial { .. } => "partial",
            Verdict::Unknown { .. } => "unknown",
        }
    }
}

/// What one member's receipts say about one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Its latest receipt says stored.
    Holds,
    /// Its latest receipt says the copy is gone (evicted, expired, removed).
    Gone,
    /// No receipt from it about this segment.
    NoReceipt,
}

impl MemberState {
    /// What a node's latest receipt about a segment (if any) says.
    pub fn of(holding: Option<&NodeHolding>) -> MemberState {
        match holding {
            Some(h) if h.stored => MemberState::Holds,
            Some(_) => MemberState::Gone,
            None => MemberState::NoReceipt,
        }
    }
}

/// One member in the view of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    pub node: NodeId,
    pub state: MemberState,
    /// When its latest receipt about the segment was made (its clock).
    pub at_ms: Option<u64>,
    /// Its newest receipt about anything (its clock): when it was last heard from.
    pub heard_at_ms: Option<u64>,
    /// Not heard from within `stale_after_ms`.
    pub silent: bool,
}

/// The fleet view of one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentView {
    pub verdict: Verdict,
    pub members: Vec<MemberView>,
}

impl SegmentView {
    /// Members that do not hold the segment.
    pub fn missing(&self) -> impl Iterator<Item = &MemberView> {
        self.members
            .iter()
            .filter(|m| m.state != MemberState::Holds)
    }
}

/// The view of a segment given every node's latest receipt about it (`holders`) and every
/// node's head, at `now_ms`.
pub fn segment_view(
    roster: &Roster,
    holders: &[(NodeId, NodeHolding)],
    heads: &BTreeMap<NodeId, Head>,
    now_ms: u64,
    stale_after_ms: u64,
) -> SegmentView {
    let holding: BTreeMap<&NodeId, &NodeHolding> = holders.iter().map(|(n, h)| (n, h)).collect();
    let mut members = Vec::with_capacity(roster.members.len());
    let (mut held, mut silent_missing) = (0u64, false);
    for node in &roster.members {
        let h = holding.get(node);
        let state = MemberState::of(h.copied());
        let heard_at_ms = heads.get(node).map(|h| h.newest_at_ms);
        let silent = heard_at_ms.is_none_or(|at| now_ms.saturating_sub(at) > stale_after_ms);
        if state == MemberState::Holds {
            held += 1;
        } else if silent {
            silent_missing = true;
        }
        members.push(MemberView {
            node: node.clone(),
            state,
            at_ms: h.map(|h| h.at_ms),
            heard_at_ms,
            silent,
        });
    }
    let of = roster.members.len() as u64;
    let verdict = if held == of {
        Verdict::Everywhere
    } else if silent_missing {
        Verdict::Unknown { held, of }
    } else {
        Verdict::Partial { held, of }
    };
    SegmentView { verdict, members }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeId {
        s.parse().unwrap()
    }

    fn head(at: u64) -> Head {
        Head {
            seq: 1,
            count: 1,
            newest_at_ms: at,
        }
    }

    #[test]
    fn the_configured_roster_wins_over_the_learned_one() {
        let own = n("a");
        let peers = [n("b")];
        let heard = [n("c"), n("a")];
        let learned = Roster::new(&[], &own, &peers, &heard);
        assert_eq!(learned.source, RosterSource::Learned);
        assert_eq!(learned.members, [n("a"), n("b"), n("c")].into());
        let configured = Roster::new(&[n("a"), n("z")], &own, &peers, &heard);
        assert_eq!(configured.source, RosterSource::Configured);
        assert_eq!(configured.members, [n("a"), n("z")].into());
    }

    #[test]
    fn inv_31_everywhere_only_when_every_member_holds_it_and_silence_is_unknown() {
        let roster = Roster::new(&[n("a"), n("b"), n("c")], &n("a"), [], []);
        let stored = |at| NodeHolding {
            stored: true,
            at_ms: at,
        };
        let gone = |at| NodeHolding {
            stored: false,
            at_ms: at,
        };
        let now = 1_000_000;
        let stale = 60_000;
        let heads: BTreeMap<NodeId, Head> = [
            (n("a"), head(now)),
            (n("b"), head(now)),
            (n("c"), head(now - 1_000)),
        ]
        .into();
        let all = [
            (n("a"), stored(1)),
            (n("b"), stored(2)),
            (n("c"), stored(3)),
        ];
        assert_eq!(
            segment_view(&roster, &all, &heads, now, stale).verdict,
            Verdict::Everywhere
        );
        // An evicted copy changes the verdict.
        let evicted = [(n("a"), stored(1)), (n("b"), stored(2)), (n("c"), gone(4))];
        let v = segment_view(&roster, &evicted, &heads, now, stale);
        assert_eq!(v.verdict, Verdict::Partial { held: 2, of: 3 });
        assert_eq!(
            v.missing().map(|m| m.node.clone()).collect::<Vec<_>>(),
            [n("c")]
        );
        // A member lacking it that spoke within the bound: partial; one past it: unknown.
        let two = [(n("a"), stored(1)), (n("b"), stored(2))];
        let at_bound: BTreeMap<NodeId, Head> = [
            (n("a"), head(now)),
            (n("b"), head(now)),
            (n("c"), head(now - stale)),
        ]
        .into();
        assert_eq!(
            segment_view(&roster, &two, &at_bound, now, stale).verdict,
            Verdict::Partial { held: 2, of: 3 }
        );
        let past: BTreeMap<NodeId, Head> = [
            (n("a"), head(now)),
            (n("b"), head(now)),
            (n("c"), head(now - stale - 1)),
        ]
        .into();
        let v = segment_view(&roster, &two, &past, now, stale);
        assert_eq!(v.verdict, Verdict::Unknown { held: 2, of: 3 });
        assert!(v.members[2].silent);
        // Never heard from at all: unknown; but a silent member that holds it counts as holding.
        let no_c: BTreeMap<NodeId, Head> = [(n("a"), head(now)), (n("b"), head(now))].into();
        assert_eq!(
            segment_view(&roster, &two, &no_c, now, stale).verdict,
            Verdict::Unknown { held: 2, of: 3 }
        );
        assert_eq!(
            segment_view(&roster, &all, &no_c, now, stale).verdict,
            Verdict::Everywhere
        );
        // Receipts of nodes outside the roster do not count.
        let outsider = [
            (n("a"), stored(1)),
            (n("b"), stored(2)),
            (n("x"), stored(3)),
        ];
        assert_eq!(
            segment_view(&roster, &outsider, &heads, now, stale).verdict,
            Verdict::Partial { held: 2, of: 3 }
        );
        assert_eq!(Verdict::Partial { held: 2, of: 3 }.label(), "partial (2/3)");
    }
}
