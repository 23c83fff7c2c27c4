//! [`Sim`]: N relay nodes on virtual time, as a discrete-event simulation.
//!
//! Guarantees:
//! - Deterministic: one thread drives everything; events are ordered by (virtual time, sequence
//!   number); every random choice comes from ChaCha RNGs seeded from [`SimConfig::seed`];
//!   nothing iterates a `HashMap`. The same seed and the same calls yield the same event trace,
//!   whose blake3 digest [`Sim::trace_digest`] returns.
//! - Bounded: [`Sim::run_until`] stops at a virtual deadline and fails loudly past an event
//!   budget, so no test loops forever.
//! - Real code: every node is a real [`Store`] (on its own [`SimFs`]), a real [`Relay`] and the
//!   executor's own core ([`ExecCore`]), which this module drives as the tokio executor does:
//!   what to start, what an outcome does, what to refund, when to wake next and when the wall
//!   clock jumped are decided there, once, and performed here through the same ledger
//!   operations (their `*_blocking` forms); a transfer is [`super::deliver`] over a simulated
//!   link. A crash restart reopens the node from its file system's durable image
//!   ([`SimFs::crash_image`]); a graceful one shuts the core down, which refunds in-flight
//!   attempts first, as the executor's shutdown does.
//! - Checked contract: a transfer goes on a simulated link only for a start the ledger confirmed
//!   and committed in that step (INV-14); a core that hands out a transfer before its attempt is
//!   recorded fails every run that starts one.
//! - Catch-up runs only when a test asks ([`Sim::catch_up`], [`Sim::catch_up_all`]), so runs
//!   that do not use it are exactly what they were: the puller pulls what it lacks, and each
//!   segment served completes the server's job through the same call the network layer's
//!   `on_delivered` hook makes ([`Relay::delivered_out_of_band_blocking`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use store::fs::Fs;
use store::fs::sim::SimFs;
use store::keys::TrustedPublishers;
use store::{Holding, IngestOptions, IngestOutcome, SegmentId, Store, StoreConfig};

use crate::core::{JobKey, Outcome};
use crate::exec_core::{ExecCore, Reading, Step};
use crate::ledger::{Applied, Start};
use crate::limits::RelayConfig;
use crate::peer::NodeId;
use crate::relay::Relay;
use crate::tables::{JobRow, JobState};

use super::segments::T0_MS;

/// Most steps one wake of a node's executor core may take before the simulation fails loudly:
/// far above what a wake needs (the concurrency caps bound its picks), so only a core that never
/// comes to rest reaches it.
const DRIVE_STEPS_MAX: usize = 1 << 16;

/// How a link behaves for transfers started while it is in this state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Transfers take `latency_ms` (a slow link is an `Up` link with a large latency).
    Up { latency_ms: u64 },
    /// No connection: an attempt fails as unreachable after `connect_timeout_ms`.
    Down,
    /// Connects, then every transfer stalls and times out after `latency_ms`.
    Failing { latency_ms: u64 },
    /// Each transfer fails (times out) with probability `fail_percent`/100, drawn from the seed.
    Flaky { latency_ms: u64, fail_percent: u8 },
}

/// Settings of a simulated network.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Template of every node's relay knobs (`node_id` and `known_peers` are set per node).
    pub relay: RelayConfig,
    /// Every node's store ceiling. Default 64 MiB.
    pub ceiling_bytes: u64,
    /// Latency of links created `Up`. Default 20 ms.
    pub latency_ms: u64,
    /// How long an attempt over a down link takes to fail. Default 3 s.
    pub connect_timeout_ms: u64,
    /// Virtual time at the start (wall-clock UTC ms). Default [`T0_MS`].
    pub start_ms: u64,
    /// Trace lines kept for printing on failure (the digest covers all of them).
    pub trace_lines_max: usize,
}

impl SimConfig {
    pub fn new(seed: u64, relay: RelayConfig) -> SimConfig {
        SimConfig {
            seed,
            relay,
            ceiling_bytes: 64 << 20,
            latency_ms: 20,
            connect_timeout_ms: 3_000,
            start_ms: T0_MS,
            trace_lines_max: 400,
        }
    }
}

/// Per-node overrides, applied when the node is built.
#[derive(Debug, Clone, Default)]
pub struct NodeOverrides {
    pub ceiling_bytes: Option<u64>,
    /// Trusted publishers other than the network's (e.g. none: every segment is refused).
    pub trusted: Option<TrustedPublishers>,
}

#[derive(Debug)]
struct Node {
    id: NodeId,
    fs: SimFs,
    store_cfg: StoreConfig,
    relay_cfg: RelayConfig,
    up: Option<(Store, Relay)>,
    incarnation: u64,
    clock_offset_ms: i64,
    /// Seeds the executor core of each incarnation.
    rng: ChaCha8Rng,
    /// This incarnation's executor core (while up).
    core: Option<ExecCore>,
    /// The earliest pending wake event (global virtual time).
    wake_at: Option<u64>,
    /// Highest counted attempts seen on any of its jobs (checked against `attempts_max`).
    attempts_seen_max: u32,
}

#[derive(Debug, Clone)]
enum Plan {
    /// Check the link and the receiver again at the end, then deliver.
    Deliver,
    /// Ends with this outcome.
    Fail(Outcome),
}

#[derive(Debug, Clone)]
enum Ev {
    Wake {
        node: usize,
    },
    TransferEnd {
        from: usize,
        to: usize,
        key: JobKey,
        from_inc: u64,
        to_inc: u64,
        plan: Plan,
    },
    Down {
        node: usize,
        graceful: bool,
        down_ms: u64,
    },
    Up {
        node: usize,
    },
    SetLink {
        a: usize,
        b: usize,
        link: Link,
    },
    Import {
        node: usize,
        file: Arc<Vec<u8>>,
    },
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunStats {
    pub events: u64,
    pub transfers: u64,
    pub deliveries: u64,
    /// Segments pulled by catch-up.
    pub pulls: u64,
}

/// A simulated network of relay nodes. See the module docs.
#[derive(Debug)]
pub struct Sim {
    cfg: SimConfig,
    now_ms: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    nodes: Vec<Node>,
    index: BTreeMap<NodeId, usize>,
    links: BTreeMap<(usize, usize), Link>,
    /// Partition group of each node while partitioned; links across groups are down.
    groups: Option<Vec<u32>>,
    rng: ChaCha8Rng,
    trace: blake3::Hasher,
    trace_tail: std::collections::VecDeque<String>,
    pub stats: RunStats,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// The name of node `i`: `n<i>`.
pub fn node_name(i: usize) -> NodeId {
    NodeId::new(&format!("n{i}")).expect("n<digits> is a valid peer id")
}

impl Sim {
    /// A network of `n` nodes joined by `edges` (undirected; each node's `known_peers` are its
    /// neighbours), every link `Up`, every node up and trusting `trusted`.
    pub fn new(
        cfg: SimConfig,
        n: usize,
        edges: &[(usize, usize)],
        trusted: &TrustedPublishers,
    ) -> Sim {
        Sim::with_overrides(cfg, n, edges, trusted, |_| NodeOverrides::default())
    }

    /// Like [`Sim::new`], with per-node overrides.
    pub fn with_overrides(
        cfg: SimConfig,
        n: usize,
        edges: &[(usize, usize)],
        trusted: &TrustedPublishers,
        overrides: impl Fn(usize) -> NodeOverrides,
    ) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut neighbours: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
        let mut links = BTreeMap::new();
        for &(a, b) in edges {
            assert!(a != b && a < n && b < n, "bad edge ({a}, {b})");
            neighbours[a].insert(b);
            neighbours[b].insert(a);
            links.insert(
                pair(a, b),
                Link::Up {
                    latency_ms: cfg.latency_ms,
                },
            );
        }
        let mut nodes = Vec::with_capacity(n);
        let mut index = BTreeMap::new();
        for (i, peers) in neighbours.iter().enumerate() {
            let o = overrides(i);
            let id = node_name(i);
            let mut relay_cfg = cfg.relay.clone();
            relay_cfg.node_id = id.clone();
            relay_cfg.known_peers = peers.iter().map(|&p| node_name(p)).collect();
            let mut store_cfg = StoreConfig::new(
                "/data",
                o.ceiling_bytes.unwrap_or(cfg.ceiling_bytes),
                o.trusted.unwrap_or_else(|| trusted.clone()),
            );
            store_cfg.min_free_bytes = 0;
            index.insert(id.clone(), i);
            nodes.push(Node {
                id,
                fs: SimFs::new(),
                store_cfg,
                relay_cfg,
                up: None,
                incarnation: 0,
                clock_offset_ms: 0,
                rng: ChaCha8Rng::seed_from_u64(rng.random()),
                core: None,
                wake_at: None,
                attempts_seen_max: 0,
            });
        }
        let mut sim = Sim {
            now_ms: cfg.start_ms,
            cfg,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            index,
            links,
            groups: None,
            rng,
            trace: blake3::Hasher::new(),
            trace_tail: Default::default(),
            stats: RunStats::default(),
        };
        for i in 0..n {
            sim.boot(i);
        }
        sim
    }

    fn boot(&mut self, i: usize) {
        let now = self.node_now(i);
        let node = &mut self.nodes[i];
        let fs: Arc<dyn Fs> = Arc::new(node.fs.clone());
        // The simulated disk never fails unless a test injects a fault: a failure to open is a bug.
        let (store, _report) =
            Store::open(node.store_cfg.clone(), fs, now).expect("sim node store opens");
        let relay =
            Relay::open(store.clone(), node.relay_cfg.clone(), now).expect("sim node relay opens");
        node.core = Some(ExecCore::new(
            &node.relay_cfg,
            node.rng.random(),
            Reading {
                wall_ms: now,
                mono_ms: self.now_ms,
            },
        ));
        node.up = Some((store, relay));
        node.incarnation += 1;
        let line = format!("{} {} up inc={}", self.now_ms, node.id, node.incarnation);
        self.trace_line(line);
        self.drive(i);
    }

    /// Virtual time now (global, wall-clock UTC ms).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Node `i`'s wall clock (global time plus its jumps).
    pub fn node_now(&self, i: usize) -> u64 {
        (self.now_ms as i64 + self.nodes[i].clock_offset_ms).max(0) as u64
    }

    /// Node `i`'s clocks: its wall clock, and global virtual time as its monotonic clock.
    fn reading(&self, i: usize) -> Reading {
        Reading {
            wall_ms: self.node_now(i),
            mono_ms: self.now_ms,
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn id(&self, i: usize) -> &NodeId {
        &self.nodes[i].id
    }

    /// Node `i`'s relay (panics while the node is down).
    pub fn relay(&self, i: usize) -> &Relay {
        &self.nodes[i].up.as_ref().expect("node is up").1
    }

    /// Node `i`'s store (panics while the node is down).
    pub fn store(&self, i: usize) -> &Store {
        &self.nodes[i].up.as_ref().expect("node is up").0
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].up.is_some()
    }

    /// Whether node `i` holds `seg` (stored).
    pub fn holds(&self, i: usize, seg: &SegmentId) -> bool {
        self.store(i).get(seg).expect("store readable").is_some()
    }

    /// Every job of node `i`.
    pub fn jobs(&self, i: usize) -> Vec<(JobKey, JobRow)> {
        self.relay(i).all_jobs().expect("ledger readable")
    }

    /// The highest counted attempts any job of node `i` ever reached (across restarts).
    pub fn attempts_seen_max(&self, i: usize) -> u32 {
        self.nodes[i].attempts_seen_max
    }

    /// Pending jobs on every node that is up.
    pub fn pending_total(&self) -> usize {
        self.nodes
            .iter()
            .filter_map(|n| n.up.as_ref())
            .map(|(_, r)| r.pending_count())
            .sum()
    }

    /// Imports `file` (a `.seg`) on node `i` as an operator would from a USB stick.
    pub fn import(&mut self, i: usize, file: &[u8]) -> SegmentId {
        let now = self.node_now(i);
        let out = self
            .relay(i)
            .ingest_reader(file, &IngestOptions::import(), now)
            .expect("import succeeds");
        let id = match out {
            IngestOutcome::Stored(s) => s.id,
            IngestOutcome::AlreadyHave { id, .. } => id,
        };
        self.trace_line(format!(
            "{} {} import {}",
            self.now_ms,
            self.nodes[i].id,
            id.short()
        ));
        self.step(i);
        id
    }

    /// Imports `file` on node `i` at virtual time `at_ms` (later if the node is down then).
    pub fn import_at(&mut self, at_ms: u64, i: usize, file: Vec<u8>) {
        self.push(
            at_ms,
            Ev::Import {
                node: i,
                file: Arc::new(file),
            },
        );
    }

    fn push(&mut self, at_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at_ms.max(self.now_ms), self.seq), ev);
    }

    fn trace_line(&mut self, line: String) {
        self.trace.update(line.as_bytes());
        self.trace.update(b"\n");
        if self.cfg.trace_lines_max > 0 {
            if self.trace_tail.len() >= self.cfg.trace_lines_max {
                self.trace_tail.pop_front();
            }
            self.trace_tail.push_back(line);
        }
    }

    /// blake3 of every trace line so far: equal digests mean equal runs.
    pub fn trace_digest(&self) -> String {
        self.trace.clone().finalize().to_hex().to_string()
    }

    /// The last trace lines (for a failing test's output).
    pub fn trace_tail(&self) -> Vec<String> {
        self.trace_tail.iter().cloned().collect()
    }

    // ---- faults ------------------------------------------------------------------------------

    /// Sets the link between `a` and `b` now.
    pub fn set_link(&mut self, a: usize, b: usize, link: Link) {
        let key = pair(a, b);
        assert!(self.links.contains_key(&key), "no link {a}-{b}");
        self.trace_line(format!("{} link {a}-{b} {link:?}", self.now_ms));
        self.links.insert(key, link);
    }

    /// Sets the link between `a` and `b` at virtual time `at_ms`.
    pub fn set_link_at(&mut self, at_ms: u64, a: usize, b: usize, link: Link) {
        self.push(at_ms, Ev::SetLink { a, b, link });
    }

    /// Splits the network: nodes in different groups cannot reach each other until
    /// [`Sim::heal`]. `groups[i]` is node i's group.
    pub fn partition(&mut self, groups: Vec<u32>) {
        assert_eq!(groups.len(), self.nodes.len());
        self.trace_line(format!("{} partition {groups:?}", self.now_ms));
        self.groups = Some(groups);
    }

    /// Ends a partition.
    pub fn heal(&mut self) {
        self.trace_line(format!("{} heal", self.now_ms));
        self.groups = None;
    }

    /// Stops node `i` at `at_ms` for `down_ms`: gracefully (in-flight attempts refunded) or as a
    /// crash (power loss: only what was durable survives).
    pub fn restart_at(&mut self, at_ms: u64, i: usize, graceful: bool, down_ms: u64) {
        self.push(
            at_ms,
            Ev::Down {
                node: i,
                graceful,
                down_ms,
            },
        );
    }

    /// Lets node `i` act now: call after changing its ledger from outside the simulation (an
    /// operator's requeue), as the executor is woken by the scheduler changing.
    pub fn poke(&mut self, i: usize) {
        self.trace_line(format!("{} {} poke", self.now_ms, self.nodes[i].id));
        self.step(i);
    }

    /// Jumps node `i`'s wall clock by `delta_ms` now.
    pub fn jump_clock(&mut self, i: usize, delta_ms: i64) {
        self.nodes[i].clock_offset_ms += delta_ms;
        self.trace_line(format!(
            "{} {} clock {delta_ms:+}",
            self.now_ms, self.nodes[i].id
        ));
        self.nodes[i].wake_at = None;
        // The node's executor core notices the jump at this wake and re-clamps.
        self.step(i);
    }

    // ---- catch-up -----------------------------------------------------------------------------

    /// One catch-up round, as the network layer runs it on a connection, instantly (no transfer
    /// time): `puller` pulls from `server` every segment `server` stores that `puller` neither
    /// stores nor remembers as evicted; each one the puller then holds (stored, or already had)
    /// completes `server`'s job for `puller` ([`Relay::delivered_out_of_band_blocking`], the
    /// `on_delivered` hook; INV-15). Runs only between neighbours that are both up and joined by
    /// an `Up` or `Flaky` link outside any partition; over a flaky link each pull fails with
    /// the link's probability (drawn from the seed). Returns the segments pulled.
    pub fn catch_up(&mut self, puller: usize, server: usize) -> usize {
        let fail_percent = match self.reachable(puller, server) {
            Link::Up { .. } => 0,
            Link::Flaky { fail_percent, .. } => fail_percent,
            Link::Down | Link::Failing { .. } => return 0,
        };
        let connected = self.links.contains_key(&pair(puller, server))
            && self.nodes[puller].up.is_some()
            && self.nodes[server].up.is_some();
        if !connected {
            return 0;
        }
        let server_store = self.store(server).clone();
        let server_relay = self.relay(server).clone();
        let receiver = self.relay(puller).clone();
        let wanted: Vec<SegmentId> = server_store
            .list()
            .expect("store readable")
            .into_iter()
            .map(|info| info.id)
            .filter(|id| {
                matches!(
                    self.store(puller).holding(id).expect("store readable"),
                    Holding::Absent | Holding::Partial { .. }
                )
            })
            .collect();
        let mut pulled = 0;
        for seg in wanted {
            let outcome = if self.rng.random_range(0..100u8) < fail_percent {
                Outcome::TimedOut("pull stalled (flaky link)".into())
            } else {
                super::deliver(
                    &server_store,
                    &self.nodes[server].id,
                    &receiver,
                    seg,
                    self.node_now(server),
                    self.node_now(puller),
                )
            };
            let completed = if matches!(outcome, Outcome::Delivered | Outcome::Have) {
                pulled += 1;
                let r = server_relay
                    .delivered_out_of_band_blocking(
                        seg,
                        &self.nodes[puller].id,
                        self.node_now(server),
                    )
                    .expect("ledger write");
                format!("{r:?}")
            } else {
                "-".to_owned()
            };
            let line = format!(
                "{} {} pull {}<{} {} -> {completed}",
                self.now_ms,
                self.nodes[puller].id,
                seg.short(),
                self.nodes[server].id,
                outcome.kind()
            );
            self.trace_line(line);
        }
        self.stats.pulls += pulled as u64;
        self.step(server);
        self.step(puller);
        pulled
    }

    /// A catch-up round on every link, in both directions (in node order): what the network
    /// layer's periodic rounds do. Returns the segments pulled.
    pub fn catch_up_all(&mut self) -> usize {
        let links: Vec<(usize, usize)> = self.links.keys().copied().collect();
        let mut pulled = 0;
        for (a, b) in links {
            pulled += self.catch_up(a, b);
            pulled += self.catch_up(b, a);
        }
        pulled
    }

    fn reachable(&self, a: usize, b: usize) -> Link {
        if let Some(g) = &self.groups
            && g[a] != g[b]
        {
            return Link::Down;
        }
        self.links.get(&pair(a, b)).cloned().unwrap_or(Link::Down)
    }

    // ---- running -----------------------------------------------------------------------------

    /// Processes events up to virtual time `deadline_ms` (then sets the clock there), failing
    /// loudly after `events_max` events. Returns early when nothing is left to happen.
    pub fn run_until(&mut self, deadline_ms: u64, events_max: u64) {
        let mut n = 0u64;
        while let Some((&(at, seq), _)) = self.queue.first_key_value() {
            if at > deadline_ms {
                break;
            }
            n += 1;
            assert!(
                n <= events_max,
                "event budget of {events_max} exceeded at t={} (seed {})",
                self.now_ms,
                self.cfg.seed
            );
            let ev = self.queue.remove(&(at, seq)).expect("key just read");
            self.now_ms = at;
            self.stats.events += 1;
            self.handle(ev);
        }
        if self.queue.is_empty() {
            return;
        }
        self.now_ms = self.now_ms.max(deadline_ms);
    }

    /// Runs for `duration_ms` of virtual time.
    pub fn run_for(&mut self, duration_ms: u64, events_max: u64) {
        let deadline = self.now_ms + duration_ms;
        self.run_until(deadline, events_max);
        self.now_ms = self.now_ms.max(deadline);
    }

    /// True when no event is queued (no pending job anywhere waits on time, no transfer runs).
    pub fn is_quiet(&self) -> bool {
        self.queue.is_empty()
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Wake { node } => {
                if self.nodes[node].wake_at == Some(self.now_ms) {
                    self.nodes[node].wake_at = None;
                    self.step(node);
                }
            }
            Ev::TransferEnd {
                from,
                to,
                key,
                from_inc,
                to_inc,
                plan,
            } => self.transfer_end(from, to, key, from_inc, to_inc, plan),
            Ev::Down {
                node,
                graceful,
                down_ms,
            } => self.down(node, graceful, down_ms),
            Ev::Up { node } => {
                if self.nodes[node].up.is_none() {
                    self.boot(node);
                }
            }
            Ev::SetLink { a, b, link } => self.set_link(a, b, link),
            Ev::Import { node, file } => {
                if self.nodes[node].up.is_some() {
                    self.import(node, &file);
                } else {
                    // The operator waits for the host to come back.
                    self.push(self.now_ms + 1_000, Ev::Import { node, file });
                }
            }
        }
    }

    /// Wakes node `i`'s executor (the scheduler changed, or its timer fired): it does what is
    /// due and books its next wake.
    fn step(&mut self, i: usize) {
        let at = self.reading(i);
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        core.woke(at);
        self.drive(i);
    }

    /// Performs node `i`'s executor core's steps until it sleeps (its next wake booked) or stops.
    fn drive(&mut self, i: usize) {
        let Some((_, relay)) = self.nodes[i].up.clone() else {
            return;
        };
        // Starts the ledger confirmed during this wake and not yet sent, with their attempt
        // numbers.
        let mut confirmed: BTreeMap<JobKey, u32> = BTreeMap::new();
        for _ in 0..DRIVE_STEPS_MAX {
            let core = self.nodes[i].core.as_mut().expect("an up node has a core");
            match core.poll() {
                Step::Reclamp { now_ms, jump_ms } => relay.clock_jumped(now_ms, jump_ms),
                Step::ApplyOutcomes { items, now_ms } => {
                    let applied = relay
                        .apply_outcomes_blocking(items.clone(), now_ms)
                        .expect("ledger write");
                    for (item, applied) in items.iter().zip(&applied) {
                        let decided = match applied {
                            Applied::Decided(d) => format!("{d:?}"),
                            other => format!("{other:?}"),
                        };
                        let line = format!(
                            "{} {} end {}>{} {} -> {decided}",
                            self.now_ms,
                            self.nodes[i].id,
                            item.key.seg.short(),
                            item.key.peer,
                            item.outcome.kind()
                        );
                        self.trace_line(line);
                        if let Some(row) = relay.job(&item.key).expect("ledger read") {
                            let n = &mut self.nodes[i];
                            n.attempts_seen_max = n.attempts_seen_max.max(row.counts.attempts);
                        }
                    }
                }
                Step::AgePins { now_ms } => {
                    relay.age_dead_pins_blocking(now_ms).expect("ledger write")
                }
                Step::Pick { now_ms, limit } => {
                    let keys = relay.pick(now_ms, limit);
                    let next_due = relay.next_wake_ms();
                    let core = self.nodes[i].core.as_mut().expect("an up node has a core");
                    core.picked(keys, next_due);
                }
                Step::RecordStarts { keys, now_ms } => {
                    let starts = relay
                        .record_starts_blocking(keys, now_ms)
                        .expect("ledger write");
                    for start in &starts {
                        match start {
                            Start::Started { key, attempt_num } => {
                                confirmed.insert(key.clone(), *attempt_num);
                            }
                            Start::Skipped { key, why } => {
                                let line = format!(
                                    "{} {} skip {}>{} {why}",
                                    self.now_ms,
                                    self.nodes[i].id,
                                    key.seg.short(),
                                    key.peer
                                );
                                self.trace_line(line);
                            }
                        }
                    }
                    let core = self.nodes[i].core.as_mut().expect("an up node has a core");
                    core.starts_recorded(&starts);
                }
                Step::Spawn { keys } => {
                    for key in keys {
                        let attempt_num =
                            self.check_start_committed(i, &relay, &key, &mut confirmed);
                        self.start_transfer(i, key, attempt_num);
                    }
                }
                Step::Sleep { until } => {
                    if let Some(until) = until {
                        // Monotonic time is global time.
                        let global = until.mono_ms.max(self.now_ms);
                        if self.nodes[i].wake_at.is_none_or(|cur| global < cur) {
                            self.nodes[i].wake_at = Some(global);
                            self.push(global, Ev::Wake { node: i });
                        }
                    }
                    return;
                }
                // Only a graceful stop cancels: its transfers' end events are dropped (the
                // incarnation changes), none ended before, so the core refunds them all.
                Step::CancelAll { .. } => {}
                Step::Refund { keys, now_ms } => {
                    relay.refund_blocking(keys, now_ms).expect("ledger write")
                }
                Step::Stop { .. } => return,
            }
        }
        panic!(
            "node {} executor core did not rest within {DRIVE_STEPS_MAX} steps (seed {})",
            self.nodes[i].id, self.cfg.seed
        );
    }

    /// The executor's contract at the moment a transfer starts (INV-14): its start was confirmed
    /// by the ledger during this wake, and the committed row counts that attempt (as its
    /// attempt number, and as an ordinary attempt until the outcome decides what it was), so a
    /// power loss now would keep it. Returns the attempt number.
    fn check_start_committed(
        &self,
        i: usize,
        relay: &Relay,
        key: &JobKey,
        confirmed: &mut BTreeMap<JobKey, u32>,
    ) -> u32 {
        let node = &self.nodes[i].id;
        let seed = self.cfg.seed;
        let Some(attempt_num) = confirmed.remove(key) else {
            panic!(
                "INV-14: node {node} started a transfer of {}>{} before the ledger recorded its \
                 attempt (seed {seed})",
                key.seg.short(),
                key.peer
            );
        };
        let row = relay.job(key).expect("ledger read");
        let committed = row
            .as_ref()
            .filter(|r| r.state == JobState::Pending && r.counts.attempts > 0)
            .map(|r| r.counts.attempts + r.counts.store_full_attempts);
        assert_eq!(
            committed,
            Some(attempt_num),
            "INV-14: node {node} started attempt #{attempt_num} of {}>{} but the committed \
             ledger says {row:?} (seed {seed})",
            key.seg.short(),
            key.peer
        );
        attempt_num
    }

    fn start_transfer(&mut self, from: usize, key: JobKey, attempt_num: u32) {
        self.stats.transfers += 1;
        let to = self.index[&key.peer];
        let line = format!(
            "{} {} start {}>{} #{attempt_num}",
            self.now_ms,
            self.nodes[from].id,
            key.seg.short(),
            key.peer
        );
        self.trace_line(line);
        let receiver_up = self.nodes[to].up.is_some();
        let (delay, plan) = match self.reachable(from, to) {
            _ if !receiver_up => (
                self.cfg.connect_timeout_ms,
                Plan::Fail(Outcome::Unreachable(format!("{} is down", key.peer))),
            ),
            Link::Down => (
                self.cfg.connect_timeout_ms,
                Plan::Fail(Outcome::Unreachable(format!("no route to {}", key.peer))),
            ),
            Link::Up { latency_ms } => (latency_ms, Plan::Deliver),
            Link::Failing { latency_ms } => (
                latency_ms,
                Plan::Fail(Outcome::TimedOut("transfer stalled".into())),
            ),
            Link::Flaky {
                latency_ms,
                fail_percent,
            } => {
                if self.rng.random_range(0..100u8) < fail_percent {
                    (
                        latency_ms,
                        Plan::Fail(Outcome::TimedOut("transfer stalled (flaky link)".into())),
                    )
                } else {
                    (latency_ms, Plan::Deliver)
                }
            }
        };
        let ev = Ev::TransferEnd {
            from,
            to,
            key,
            from_inc: self.nodes[from].incarnation,
            to_inc: self.nodes[to].incarnation,
            plan,
        };
        self.push(self.now_ms + delay, ev);
    }

    fn transfer_end(
        &mut self,
        from: usize,
        to: usize,
        key: JobKey,
        from_inc: u64,
        to_inc: u64,
        plan: Plan,
    ) {
        if self.nodes[from].incarnation != from_inc || self.nodes[from].up.is_none() {
            // The sender stopped meanwhile: the attempt stays counted (crash) or was refunded.
            return;
        }
        let outcome = match plan {
            Plan::Fail(o) => o,
            Plan::Deliver => {
                let link_ok = !matches!(self.reachable(from, to), Link::Down);
                let same_receiver = self.nodes[to].incarnation == to_inc;
                match (&self.nodes[to].up, link_ok && same_receiver) {
                    (Some((_, receiver)), true) => {
                        let receiver = receiver.clone();
                        let sender_store = self.store(from).clone();
                        super::deliver(
                            &sender_store,
                            &self.nodes[from].id,
                            &receiver,
                            key.seg,
                            self.node_now(from),
                            self.node_now(to),
                        )
                    }
                    _ => Outcome::TimedOut("connection lost during transfer".into()),
                }
            }
        };
        let delivered = outcome == Outcome::Delivered;
        self.stats.deliveries += u64::from(delivered);
        let at = self.reading(from);
        let core = self.nodes[from]
            .core
            .as_mut()
            .expect("an up node has a core");
        core.woke(at);
        core.transfer_ended(key, outcome);
        self.drive(from);
        if delivered {
            self.step(to);
        }
    }

    fn down(&mut self, i: usize, graceful: bool, down_ms: u64) {
        if self.nodes[i].up.is_none() {
            return;
        }
        if graceful {
            // The executor's shutdown: in-flight attempts are refunded, durably.
            let at = self.reading(i);
            if let Some(core) = self.nodes[i].core.as_mut() {
                core.shutdown(at);
            }
            self.drive(i);
        }
        self.nodes[i].core = None;
        let Some((store, relay)) = self.nodes[i].up.take() else {
            return;
        };
        if graceful {
            drop(relay);
            store.close();
            drop(store);
        } else {
            // Power loss: only the durable image survives.
            let image = self.nodes[i].fs.crash_image();
            drop(relay);
            drop(store);
            self.nodes[i].fs = image;
        }
        self.nodes[i].incarnation += 1;
        self.nodes[i].wake_at = None;
        let line = format!(
            "{} {} down graceful={graceful} for {down_ms}",
            self.now_ms, self.nodes[i].id
        );
        self.trace_line(line);
        self.push(self.now_ms + down_ms, Ev::Up { node: i });
    }
}

/// Graphs for tests, as undirected edge lists over nodes `0..n`.
pub mod topology {
    use rand::Rng;
    use rand_chacha::ChaCha8Rng;

    /// 0 — 1 — … — n−1.
    pub fn line(n: usize) -> Vec<(usize, usize)> {
        (1..n).map(|i| (i - 1, i)).collect()
    }

    /// A line closed into a cycle.
    pub fn ring(n: usize) -> Vec<(usize, usize)> {
        let mut e = line(n);
        if n > 2 {
            e.push((n - 1, 0));
        }
        e
    }

    /// Every pair.
    pub fn mesh(n: usize) -> Vec<(usize, usize)> {
        (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .collect()
    }

    /// A random spanning tree (each node joins a random earlier one) plus `extra` random edges:
    /// connected by construction.
    pub fn random_connected(n: usize, extra: usize, rng: &mut ChaCha8Rng) -> Vec<(usize, usize)> {
        let mut edges = std::collections::BTreeSet::new();
        for i in 1..n {
            let j = rng.random_range(0..i);
            edges.insert((j, i));
        }
        let mut tries = 0;
        while edges.len() < (n - 1) + extra && tries < extra * 20 {
            tries += 1;
            let a = rng.random_range(0..n);
            let b = rng.random_range(0..n);
            if a != b {
                edges.insert((a.min(b), a.max(b)));
            }
        }
        edges.into_iter().collect()
    }
}
