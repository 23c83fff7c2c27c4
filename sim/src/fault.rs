//! Faults as data: what goes wrong, when, to whom; and a plan of them drawn from a seed.
//!
//! A plan is applied between the start of the run and its heal time; at heal every link is
//! restored, every node that is down comes back and every disk fault not fired yet is used up. Link
//! faults stay until the heal (a later fault on the same direction replaces an earlier one).

use std::fmt;

use rand::Rng;

/// Virtual time after the start in which faults (and the workload's imports) happen; the heal
/// comes at its end.
pub const FAULT_WINDOW_MS: u64 = 60_000;
/// Faults in one plan, at most.
pub const FAULTS_MAX: usize = 4;
/// Longest a crashed node stays down (it is back at the heal at the latest).
pub const DOWN_MS_MAX: u64 = 20_000;
/// A power loss may be armed to strike after up to this many more disk operations of the node
/// (in the middle of an ingest, a commit, a checkpoint), instead of between two of them.
pub const CRASH_AFTER_OPS_MAX: u64 = 400;
/// Largest wall-clock step of a clock jump, either way.
pub const CLOCK_JUMP_MS_MAX: i64 = 10 * 60 * 1_000;
/// Largest burst of failing writes of a full disk.
pub const DISK_FULL_WRITES_MAX: u32 = 64;
/// Bounds of a degraded link (parts per million of datagrams; milliseconds).
pub const LOSS_PPM_MAX: u32 = 300_000;
pub const DUPLICATE_PPM_MAX: u32 = 200_000;
pub const REORDER_PPM_MAX: u32 = 200_000;
pub const DELAY_MS_MAX: u64 = 200;
pub const JITTER_MS_MAX: u64 = 100;

/// How one direction of a link misbehaves (all zero: a healthy link).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkFault {
    pub loss_ppm: u32,
    pub delay_ms: u64,
    pub jitter_ms: u64,
    pub duplicate_ppm: u32,
    pub reorder_ppm: u32,
}

/// One fault. Nodes are fleet indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `side` and the other nodes cannot reach each other, in either direction.
    Partition { side: Vec<usize> },
    /// Datagrams from `from` to `to` vanish; the other direction works.
    OneWay { from: usize, to: usize },
    /// `left` and the rest cannot reach each other directly, but both reach `bridge`.
    Bridge { left: Vec<usize>, bridge: usize },
    /// Loss, delay, duplication and reordering on the direction `from` → `to`.
    Degrade {
        from: usize,
        to: usize,
        link: LinkFault,
    },
    /// Power loss at `node` (only what was durable survives); it boots again `down_ms` later.
    /// `after_ops` > 0: the power goes after that many more disk operations of the node (or at
    /// the boot time, if they do not come); until the boot its disk fails every operation.
    Crash {
        node: usize,
        down_ms: u64,
        after_ops: u64,
    },
    /// `node`'s wall clock steps by `delta_ms` (negative: backwards); monotonic time is unaffected.
    ClockJump { node: usize, delta_ms: i64 },
    /// `node`'s disk is full: its next `writes` file-system operations (space queries included)
    /// fail with ENOSPC, or until the heal, whichever comes first.
    DiskFull { node: usize, writes: u32 },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition { side } => write!(f, "partition {side:?} | rest"),
            Fault::OneWay { from, to } => write!(f, "one-way block n{from} -> n{to}"),
            Fault::Bridge { left, bridge } => write!(f, "bridge {left:?} | rest via n{bridge}"),
            Fault::Degrade { from, to, link } => write!(
                f,
                "degrade n{from} -> n{to} loss={} delay={}±{} dup={} reorder={}",
                link.loss_ppm, link.delay_ms, link.jitter_ms, link.duplicate_ppm, link.reorder_ppm
            ),
            Fault::Crash {
                node,
                down_ms,
                after_ops: 0,
            } => write!(f, "power loss n{node} for {down_ms} ms"),
            Fault::Crash {
                node,
                down_ms,
                after_ops,
            } => write!(
                f,
                "power loss n{node} after {after_ops} disk ops, boot in {down_ms} ms"
            ),
            Fault::ClockJump { node, delta_ms } => write!(f, "clock n{node} {delta_ms:+} ms"),
            Fault::DiskFull { node, writes } => write!(f, "disk full n{node} for {writes} writes"),
        }
    }
}

/// A fault at a virtual time (ms after the start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed {
    pub at_ms: u64,
    pub fault: Fault,
}

/// The faults of one run, in time order, and when they are healed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    pub faults: Vec<Timed>,
    pub heal_at_ms: u64,
}

impl FaultPlan {
    /// No faults: the reference run.
    pub fn none() -> FaultPlan {
        FaultPlan {
            faults: Vec::new(),
            heal_at_ms: FAULT_WINDOW_MS,
        }
    }

    /// Up to [`FAULTS_MAX`] faults among `n` nodes, each kind equally likely, at times within
    /// [`FAULT_WINDOW_MS`].
    pub fn draw(rng: &mut impl Rng, n: usize) -> FaultPlan {
        let count = rng.random_range(1..=FAULTS_MAX);
        let mut faults: Vec<Timed> = (0..count)
            .map(|_| {
                let at_ms = rng.random_range(0..FAULT_WINDOW_MS);
                let fault = draw_fault(rng, n, FAULT_WINDOW_MS - at_ms);
                Timed { at_ms, fault }
            })
            .collect();
        faults.sort_by_key(|t| t.at_ms);
        FaultPlan {
            faults,
            heal_at_ms: FAULT_WINDOW_MS,
        }
    }
}

fn draw_fault(rng: &mut impl Rng, n: usize, left_ms: u64) -> Fault {
    let node = rng.random_range(0..n);
    let other = (node + rng.random_range(1..n)) % n;
    match rng.random_range(0..7u8) {
        0 => Fault::Partition {
            side: proper_subset(rng, n, None),
        },
        1 => Fault::OneWay {
            from: node,
            to: other,
        },
        2 if n >= 3 => Fault::Bridge {
            left: proper_subset(rng, n, Some(node)),
            bridge: node,
        },
        2 | 3 => Fault::Degrade {
            from: node,
            to: other,
            link: LinkFault {
                loss_ppm: rng.random_range(0..=LOSS_PPM_MAX),
                delay_ms: rng.random_range(0..=DELAY_MS_MAX),
                jitter_ms: rng.random_range(0..=JITTER_MS_MAX),
                duplicate_ppm: rng.random_range(0..=DUPLICATE_PPM_MAX),
                reorder_ppm: rng.random_range(0..=REORDER_PPM_MAX),
            },
        },
        4 => Fault::Crash {
            node,
            down_ms: rng.random_range(0..=DOWN_MS_MAX.min(left_ms)),
            after_ops: if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(1..=CRASH_AFTER_OPS_MAX)
            },
        },
        5 => Fault::ClockJump {
            node,
            delta_ms: rng.random_range(-CLOCK_JUMP_MS_MAX..=CLOCK_JUMP_MS_MAX),
        },
        _ => Fault::DiskFull {
            node,
            writes: rng.random_range(1..=DISK_FULL_WRITES_MAX),
        },
    }
}

/// A non-empty set of nodes leaving at least one other (and never `except`) out, sorted.
fn proper_subset(rng: &mut impl Rng, n: usize, except: Option<usize>) -> Vec<usize> {
    let pool: Vec<usize> = (0..n).filter(|&i| Some(i) != except).collect();
    let take = rng.random_range(1..pool.len().max(2));
    let mut side: Vec<usize> = pool;
    // A partial Fisher–Yates shuffle: the first `take` entries are the subset.
    for i in 0..take {
        let j = rng.random_range(i..side.len());
        side.swap(i, j);
    }
    side.truncate(take);
    side.sort_unstable();
    side
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn plans_are_a_function_of_the_seed_and_stay_in_bounds() {
        for seed in 0..500u64 {
            let n = 2 + (seed % 4) as usize;
            let plan = FaultPlan::draw(&mut ChaCha8Rng::seed_from_u64(seed), n);
            assert_eq!(
                plan,
                FaultPlan::draw(&mut ChaCha8Rng::seed_from_u64(seed), n)
            );
            assert!(!plan.faults.is_empty() && plan.faults.len() <= FAULTS_MAX);
            for t in &plan.faults {
                assert!(t.at_ms < plan.heal_at_ms);
                match &t.fault {
                    Fault::Partition { side } => {
                        assert!(!side.is_empty() && side.len() < n, "{side:?} of {n}")
                    }
                    Fault::Bridge { left, bridge } => {
                        assert!(!left.is_empty() && left.len() < n - 1 && !left.contains(bridge))
                    }
                    Fault::OneWay { from, to } | Fault::Degrade { from, to, .. } => {
                        assert!(from != to && *from < n && *to < n)
                    }
                    Fault::Crash {
                        node,
                        down_ms,
                        after_ops,
                    } => assert!(
                        *node < n
                            && t.at_ms + down_ms <= plan.heal_at_ms
                            && *after_ops <= CRASH_AFTER_OPS_MAX
                    ),
                    Fault::ClockJump { node, delta_ms } => {
                        assert!(*node < n && delta_ms.abs() <= CLOCK_JUMP_MS_MAX)
                    }
                    Fault::DiskFull { node, writes } => {
                        assert!(*node < n && (1..=DISK_FULL_WRITES_MAX).contains(writes))
                    }
                }
            }
        }
    }
}
