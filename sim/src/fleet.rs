//! A fleet of [`SimNode`]s on one [`SimNet`]: faults applied as data, imports, the heal, and
//! what the fleet holds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use net::sim::{Link, SimNet};
use net::{DiskMode, NetConfig, NodeId};
use relay::RelayConfig;
use store::{Holding, IngestOptions, IngestOutcome, SegmentId, StoreConfig};
use tokio::time::Instant;

use crate::check::{self, Violation};
use crate::error::SimError;
use crate::fault::{Fault, LinkFault};
use crate::identity::{NODES_MAX, SIM_START_MS, fleet_identities, node_name};
use crate::node::{NodeSpec, SimNode};
use crate::topology::Topology;
use crate::trace::Trace;
use crate::workload::{Import, Workload};

/// First UDP port of the fleet's loopback addresses (node `i` listens on this + `i`).
pub const PORT_BASE: u16 = 47_000;
/// Every node's store ceiling: far above a workload, so eviction is not in play.
pub const STORE_CEILING_BYTES: u64 = 64 << 20;
/// Where each node's store lives on its simulated disk.
pub const DATA_DIR: &str = "/data";

/// The loopback address of node `i`.
pub fn node_addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), PORT_BASE + i as u16)
}

fn node_id(i: usize) -> NodeId {
    NodeId::new(&node_name(i)).expect("n<digits> is a valid node id")
}

/// The fleet. Create and drive it inside the simulation's runtime.
#[derive(Debug)]
pub struct Fleet {
    pub simnet: SimNet,
    pub nodes: Vec<SimNode>,
    pub trace: Trace,
    start: Instant,
    /// Directed link states other than healthy, as the faults left them.
    links: BTreeMap<(usize, usize), Link>,
    /// Violations seen during the run (checked when a node boots after a power loss).
    pub violations: Vec<Violation>,
    /// Segments whose import some node acknowledged.
    pub acked_imports: BTreeMap<SegmentId, BTreeSet<usize>>,
    /// Imports not acknowledged yet (the node was down or its disk full): retried after heal.
    pub owed_imports: Vec<Import>,
}

impl Fleet {
    /// `n` nodes in `topology`, each trusting the workload's publisher and seeded from `seed`,
    /// booted on empty disks.
    pub fn start(
        simnet: SimNet,
        n: usize,
        topology: Topology,
        workload: &Workload,
        seed: u64,
    ) -> Result<Fleet, SimError> {
        assert!((2..=NODES_MAX).contains(&n), "fleet of {n} nodes");
        let identities = fleet_identities()?;
        let neighbours = topology.neighbours(n);
        let mut nodes = Vec::with_capacity(n);
        for (i, peers) in neighbours.iter().enumerate() {
            let mut relay = RelayConfig::new(node_id(i), peers.iter().map(|&p| node_id(p)));
            // The ledger's commits are waited for on the node's task too: no thread hop.
            relay.disk_mode = DiskMode::Inline;
            let known: BTreeMap<NodeId, SocketAddr> =
                peers.iter().map(|&p| (node_id(p), node_addr(p))).collect();
            let mut net = NetConfig::new(node_id(i), node_addr(i), known);
            // Disk work on the node's own task: with it on blocking threads paused time stops
            // while a transfer's disk side waits for the network (see `net::sim::runtime`).
            net.disk_mode = DiskMode::Inline;
            let mut store =
                StoreConfig::new(DATA_DIR, STORE_CEILING_BYTES, workload.trusted.clone());
            // The simulated disk reports a petabyte free: the ceiling is the only bound.
            store.min_free_bytes = 0;
            let spec = NodeSpec {
                name: node_name(i),
                addr: node_addr(i),
                identity: identities[i].clone(),
                relay,
                net,
                store,
                seed: seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            };
            nodes.push(SimNode::new(spec, SIM_START_MS));
        }
        let mut fleet = Fleet {
            simnet,
            nodes,
            trace: Trace::new(),
            start: Instant::now(),
            links: BTreeMap::new(),
            acked_imports: BTreeMap::new(),
            owed_imports: Vec::new(),
            violations: Vec::new(),
        };
        fleet.trace.line(0, format!("fleet {n} nodes {topology:?}"));
        for i in 0..n {
            fleet.boot(i)?;
        }
        Ok(fleet)
    }

    /// Virtual ms since the start.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Sleeps (virtual time) until `at_ms` after the start.
    pub async fn sleep_until(&self, at_ms: u64) {
        tokio::time::sleep_until(self.start + std::time::Duration::from_millis(at_ms)).await;
    }

    fn note(&mut self, text: impl AsRef<str>) {
        let at = self.now_ms();
        self.trace.line(at, text);
    }

    /// Boots node `i`; a boot the disk refuses (full) leaves it down, as a daemon that exits at
    /// start, and is retried later. Anything else is a broken setup.
    pub fn boot(&mut self, i: usize) -> Result<(), SimError> {
        match self.nodes[i].boot(&self.simnet) {
            Ok(()) => {
                let boots = self.nodes[i].boots;
                self.note(format!("n{i} up (boot {boots})"));
                if boots > 1 {
                    self.check_acked_survived(i);
                }
                Ok(())
            }
            Err(e @ (SimError::Store { .. } | SimError::Relay { .. })) => {
                self.note(format!("n{i} did not start: {e}"));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// INV-03 at a reboot: every segment a peer's ledger records as delivered to node `i` —
    /// which `i` acknowledged (or answered "have") before it went down — is in the store `i`
    /// recovered from its disk.
    fn check_acked_survived(&mut self, i: usize) {
        let me = node_name(i);
        let mut lost = Vec::new();
        for (s, sender) in self.nodes.iter().enumerate() {
            let Some(relay) = sender.relay() else {
                continue;
            };
            for (key, row) in relay.all_jobs().unwrap_or_default() {
                if key.peer.as_str() == me
                    && row.state == relay::tables::JobState::Delivered
                    && !self.holds(i, &key.seg)
                {
                    lost.push(format!("{} (acknowledged to n{s})", key.seg.short()));
                }
            }
        }
        for what in lost {
            self.note(format!("n{i} lost {what}"));
            self.violations.push(Violation {
                check: check::ACKED_NOT_LOST,
                invariants: &["INV-03"],
                detail: format!("n{i} rebooted without {what}"),
            });
        }
    }

    /// Restarts node `i` after a power loss that was armed to strike mid-operation.
    pub async fn restart_after_armed_power_loss(&mut self, i: usize) -> Result<(), SimError> {
        if self.nodes[i].is_up() {
            let dead = self.nodes[i].fs().is_dead();
            self.note(format!("n{i} power lost (struck mid-run: {dead})"));
            self.nodes[i].power_loss(&self.simnet).await;
        }
        self.boot(i)
    }

    /// Imports a segment the way `edged import` does; an import that fails is owed and retried.
    pub fn import(&mut self, import: &Import, workload: &Workload) {
        let seg = &workload.segments[import.segment];
        let node = &self.nodes[import.node];
        let result = match node.relay() {
            None => Err("node down".to_owned()),
            Some(relay) => relay
                .ingest_reader(seg.file.as_slice(), &IngestOptions::import(), node.now_ms())
                .map_err(|e| e.to_string()),
        };
        let what = match result {
            Ok(IngestOutcome::Stored(_)) => "stored",
            Ok(IngestOutcome::AlreadyHave { .. }) => "already held",
            Err(e) => {
                self.note(format!(
                    "import {} at n{} failed: {e}",
                    seg.id.short(),
                    import.node
                ));
                self.owed_imports.push(import.clone());
                return;
            }
        };
        self.acked_imports
            .entry(seg.id)
            .or_default()
            .insert(import.node);
        self.note(format!(
            "import {} at n{}: {what}",
            seg.id.short(),
            import.node
        ));
    }

    /// Retries the owed imports once each (those failing again stay owed).
    pub fn retry_imports(&mut self, workload: &Workload) {
        for import in std::mem::take(&mut self.owed_imports) {
            self.import(&import, workload);
        }
    }

    fn set_link(&mut self, from: usize, to: usize, link: Link) {
        self.simnet
            .set_link(node_addr(from), node_addr(to), link.clone());
        self.links.insert((from, to), link);
    }

    fn block_between(&mut self, a: &[usize], b: &[usize]) {
        let blocked = Link {
            blocked: true,
            ..Link::default()
        };
        for &x in a {
            for &y in b {
                self.set_link(x, y, blocked.clone());
                self.set_link(y, x, blocked.clone());
            }
        }
    }

    /// Applies one fault now.
    pub async fn apply(&mut self, fault: &Fault) -> Result<(), SimError> {
        self.note(format!("fault: {fault}"));
        let n = self.nodes.len();
        match fault {
            Fault::Partition { side } => {
                let rest: Vec<usize> = (0..n).filter(|i| !side.contains(i)).collect();
                self.block_between(side, &rest);
            }
            Fault::OneWay { from, to } => self.set_link(
                *from,
                *to,
                Link {
                    blocked: true,
                    ..Link::default()
                },
            ),
            Fault::Bridge { left, bridge } => {
                let right: Vec<usize> = (0..n)
                    .filter(|i| !left.contains(i) && i != bridge)
                    .collect();
                self.block_between(left, &right);
            }
            Fault::Degrade { from, to, link } => self.set_link(*from, *to, to_link(link)),
            Fault::Crash {
                node, after_ops: 0, ..
            } => {
                self.nodes[*node].power_loss(&self.simnet).await;
            }
            Fault::Crash {
                node, after_ops, ..
            } => self.nodes[*node].arm_power_loss(*after_ops),
            Fault::ClockJump { node, delta_ms } => self.nodes[*node].jump_clock(*delta_ms),
            Fault::DiskFull { node, writes } => self.nodes[*node].fill_disk(*writes),
        }
        Ok(())
    }

    /// Heal: every link healthy, every disk with room again, every node up (one whose executor died of a ledger error is
    /// restarted, as the service manager restarts a daemon that exited), owed imports retried.
    pub async fn heal(&mut self, workload: &Workload) -> Result<(), SimError> {
        self.note("heal");
        self.simnet.set_all(Link::default());
        self.links.clear();
        for node in &mut self.nodes {
            node.free_disk();
        }
        self.revive().await?;
        self.retry_imports(workload);
        Ok(())
    }

    /// Restarts nodes that are down, whose executor ended or whose store failed.
    pub async fn revive(&mut self) -> Result<(), SimError> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].executor_ended() {
                self.note(format!("n{i} executor ended: restarting"));
                self.nodes[i].power_loss(&self.simnet).await;
            } else if self.nodes[i].store_failed() {
                self.note(format!("n{i} store failed: restarting"));
                self.nodes[i].power_loss(&self.simnet).await;
            }
            if !self.nodes[i].is_up() {
                self.boot(i)?;
            }
        }
        Ok(())
    }

    /// Whether node `i` holds `id` as a stored segment (false while down).
    pub fn holds(&self, i: usize, id: &SegmentId) -> bool {
        self.nodes[i]
            .store()
            .is_some_and(|s| matches!(s.holding(id), Ok(Holding::Stored)))
    }

    /// Whether the fleet is done: every node up, holding every acknowledged segment, no
    /// import owed, no job pending or in flight anywhere.
    pub fn converged(&self) -> bool {
        self.owed_imports.is_empty()
            && self.nodes.iter().enumerate().all(|(i, node)| {
                node.relay()
                    .is_some_and(|r| r.pending_count() == 0 && r.in_flight_count() == 0)
                    && self.acked_imports.keys().all(|id| self.holds(i, id))
            })
    }

    /// Stops every node cleanly; returns each one's executor ending.
    pub async fn stop(&mut self) -> Vec<Option<Result<relay::executor::ExecutorReport, String>>> {
        let mut out = Vec::with_capacity(self.nodes.len());
        for node in &mut self.nodes {
            out.push(node.stop(&self.simnet).await);
        }
        out
    }
}

fn to_link(f: &LinkFault) -> Link {
    Link {
        blocked: false,
        loss_ppm: f.loss_ppm,
        delay_ms: f.delay_ms,
        jitter_ms: f.jitter_ms,
        duplicate_ppm: f.duplicate_ppm,
        reorder_ppm: f.reorder_ppm,
    }
}
