//! One simulated node: the daemon's parts — a store on its own power-loss file system, the
//! relay ledger, the relay's executor and a network node, glued by `relay::quic` exactly as the
//! daemon glues them — and its life: boot, power loss, a full disk, a clock jump, a clean stop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base::{Clock as _, VirtualClock};
use net::sim::SimNet;
use net::{NetConfig, NetHooks, NodeId, NodeIdentity, NodeSetup, OfferResult};
use relay::executor::{Executor, ExecutorReport};
use relay::quic::{Hooks, OfferSink, QuicTransport};
use relay::{Relay, RelayConfig, RelayError};
use store::fs::Fs;
use store::fs::sim::{Fault, FaultKind, SimFs};
use store::{SegmentId, Store, StoreConfig, Stored};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::SimError;

/// How long a stopping node waits for its connections to close (virtual time).
pub const SHUTDOWN_GRACE_MS: u64 = 1_000;
/// Bound on a stop as a whole, so a wedged task cannot hang the run (virtual time).
pub const STOP_BOUND_MS: u64 = 30_000;

/// What a node's network hooks saw, summed over its incarnations.
#[derive(Debug, Default)]
pub struct Tally {
    pub offers_stored: AtomicU64,
    pub offers_duplicate: AtomicU64,
    pub offers_rejected: AtomicU64,
    pub offers_busy: AtomicU64,
    pub offers_interrupted: AtomicU64,
    /// Segments received from peers and acknowledged, with how many times each was.
    pub received: Mutex<BTreeMap<SegmentId, u32>>,
    /// Catch-up deliveries this node served (its `on_delivered` hook).
    pub served_by_catchup: AtomicU64,
}

impl OfferSink for Tally {
    fn offer(&self, _from: &NodeId, result: OfferResult) {
        let counter = match result {
            OfferResult::Stored => &self.offers_stored,
            OfferResult::Duplicate => &self.offers_duplicate,
            OfferResult::Rejected(_) => &self.offers_rejected,
            OfferResult::Busy => &self.offers_busy,
            OfferResult::Interrupted => &self.offers_interrupted,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Tally {
    /// Copies of the received map (for checks).
    pub fn received(&self) -> BTreeMap<SegmentId, u32> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The daemon's hooks (`relay::quic::Hooks`), with a record of what they were told.
struct Recording {
    inner: Hooks,
    tally: Arc<Tally>,
}

impl NetHooks for Recording {
    fn on_stored(
        &self,
        txn: &redb::WriteTransaction,
        stored: &Stored<()>,
        from: &NodeId,
    ) -> Result<(), redb::Error> {
        self.inner.on_stored(txn, stored, from)
    }

    fn on_received(&self, from: &NodeId, id: &SegmentId) {
        *self
            .tally
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(*id)
            .or_insert(0) += 1;
        self.inner.on_received(from, id);
    }

    fn on_delivered(&self, to: &NodeId, id: &SegmentId) {
        self.tally.served_by_catchup.fetch_add(1, Ordering::Relaxed);
        self.inner.on_delivered(to, id);
    }

    fn on_offer(&self, from: &NodeId, result: OfferResult) {
        self.inner.on_offer(from, result);
    }

    fn on_peer_connected(&self, peer: &NodeId) {
        self.inner.on_peer_connected(peer);
    }

    fn forward_targets(&self, from: Option<&NodeId>, id: &SegmentId) -> Vec<NodeId> {
        self.inner.forward_targets(from, id)
    }
}

/// A running incarnation.
struct Running {
    store: Store,
    relay: Relay,
    node: Arc<net::Node>,
    stop: watch::Sender<bool>,
    executor: JoinHandle<Result<ExecutorReport, RelayError>>,
}

/// Everything fixed about a node across its incarnations.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub addr: SocketAddr,
    pub identity: NodeIdentity,
    pub relay: RelayConfig,
    pub net: NetConfig,
    pub store: StoreConfig,
    /// Seeds the executor's jitter and the network node's randomness (mixed with the boot count).
    pub seed: u64,
}

/// One node of the fleet. See the module docs.
pub struct SimNode {
    pub spec: NodeSpec,
    fs: SimFs,
    clock: Arc<VirtualClock>,
    pub tally: Arc<Tally>,
    up: Option<Running>,
    /// Boots so far (the first one included).
    pub boots: u64,
    /// Syncs reported successful after a failed one, on file systems this node left behind.
    syncs_after_failed_sync_before: u64,
    /// ENOSPC faults injected and possibly not fired yet (an upper bound).
    disk_faults_armed: u64,
}

impl std::fmt::Debug for SimNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNode")
            .field("name", &self.spec.name)
            .field("up", &self.up.is_some())
            .field("boots", &self.boots)
            .finish_non_exhaustive()
    }
}

impl SimNode {
    /// A node that is down, with an empty disk and its wall clock at `start_ms`. Call inside
    /// the simulation's runtime (the clock follows its paused time).
    pub fn new(spec: NodeSpec, start_ms: u64) -> SimNode {
        SimNode {
            spec,
            fs: SimFs::new(),
            clock: Arc::new(VirtualClock::starting_at(start_ms)),
            tally: Arc::new(Tally::default()),
            up: None,
            boots: 0,
            syncs_after_failed_sync_before: 0,
            disk_faults_armed: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.is_some()
    }

    pub fn store(&self) -> Option<&Store> {
        self.up.as_ref().map(|r| &r.store)
    }

    pub fn relay(&self) -> Option<&Relay> {
        self.up.as_ref().map(|r| &r.relay)
    }

    pub fn fs(&self) -> &SimFs {
        &self.fs
    }

    /// The node's wall clock now.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Syncs that reported success after a failed sync, over every file system it had (INV-23).
    pub fn syncs_after_failed_sync(&self) -> u64 {
        self.syncs_after_failed_sync_before + self.fs.syncs_after_failed_sync()
    }

    /// Whether the running incarnation's executor ended on its own (a fatal ledger error: the
    /// daemon would exit).
    pub fn executor_ended(&self) -> bool {
        self.up.as_ref().is_some_and(|r| r.executor.is_finished())
    }

    /// Whether the running incarnation's store takes no more writes (a commit failed: the
    /// daemon would exit and be restarted).
    pub fn store_failed(&self) -> bool {
        self.up
            .as_ref()
            .is_some_and(|r| r.store.failure().is_some())
    }

    /// Starts the daemon's parts on the current disk, as `edged run` does: store (recovering),
    /// ledger, network node with the relay's hooks, executor over the node.
    pub fn boot(&mut self, simnet: &SimNet) -> Result<(), SimError> {
        if self.fs.is_dead() {
            // An armed power loss struck while the node was down (during a boot): the machine
            // comes back with the disk's image frozen at that moment.
            self.syncs_after_failed_sync_before += self.fs.syncs_after_failed_sync();
            self.disk_faults_armed = 0;
            self.fs = self.fs.crash_image();
        }
        let name = self.spec.name.clone();
        let now = self.clock.now_ms();
        let fs: Arc<dyn Fs> = Arc::new(self.fs.clone());
        let (store, _recovery) =
            Store::open(self.spec.store.clone(), fs, now).map_err(|source| SimError::Store {
                node: name.clone(),
                source,
            })?;
        let relay = match Relay::open(store.clone(), self.spec.relay.clone(), now) {
            Ok(relay) => relay,
            Err(source) => {
                store.close();
                return Err(SimError::Relay { node: name, source });
            }
        };
        let hooks = Arc::new(Recording {
            inner: Hooks::new(relay.clone(), self.clock.clone(), self.tally.clone()),
            tally: self.tally.clone(),
        });
        let mut net_cfg = self.spec.net.clone();
        net_cfg.rng_seed = Some(self.spec.seed.wrapping_add(self.boots));
        let mut setup = NodeSetup::new(net_cfg, self.spec.identity.clone(), store.clone());
        setup.hooks = hooks;
        // One clock per node, as the daemon hands its one clock to every layer.
        setup.clock = self.clock.clone();
        setup.socket = Some(simnet.socket(self.spec.addr));
        let node = match net::Node::start(setup) {
            Ok(node) => Arc::new(node),
            Err(source) => {
                store.close();
                return Err(SimError::Net { node: name, source });
            }
        };
        let transport = Arc::new(QuicTransport { node: node.clone() });
        let executor = Executor::new(
            relay.clone(),
            transport,
            self.clock.clone(),
            self.spec.seed.rotate_left(32).wrapping_add(self.boots),
        );
        let (stop, mut stop_rx) = watch::channel(false);
        let executor = tokio::spawn(executor.run(async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }));
        self.boots += 1;
        self.up = Some(Running {
            store,
            relay,
            node,
            stop,
            executor,
        });
        Ok(())
    }

    /// Power loss: the disk keeps only what was durable; every task of the incarnation ends
    /// without a word to anyone (its address goes dark first).
    pub async fn power_loss(&mut self, simnet: &SimNet) {
        let image = self.fs.crash_image();
        // What the old incarnation still does lands on a dead disk.
        self.fs.inject(Fault {
            at_op: self.fs.op_count(),
            kind: FaultKind::PowerLoss,
        });
        simnet.unbind(self.spec.addr);
        if let Some(run) = self.up.take() {
            run.executor.abort();
            let _ = tokio::time::timeout(
                Duration::from_millis(STOP_BOUND_MS),
                run.node.shutdown(Duration::ZERO),
            )
            .await;
            run.store.close();
        }
        self.syncs_after_failed_sync_before += self.fs.syncs_after_failed_sync();
        // The crash image carries no faults.
        self.disk_faults_armed = 0;
        self.fs = image;
    }

    /// Arms a power loss `ops` disk operations from now: from then on every operation fails and
    /// the disk's crash image is frozen there ([`SimNode::power_loss`] then boots from it).
    pub fn arm_power_loss(&self, ops: u64) {
        self.fs.inject(Fault {
            at_op: self.fs.op_count() + ops,
            kind: FaultKind::PowerLoss,
        });
    }

    /// A full disk: the next `writes` write operations fail with ENOSPC, whenever they come
    /// (a boot's included: the store then fails to open, as the daemon would).
    pub fn fill_disk(&mut self, writes: u32) {
        self.disk_faults_armed += u64::from(writes);
        let at_op = self.fs.op_count();
        for _ in 0..writes {
            self.fs.inject(Fault {
                at_op,
                kind: FaultKind::Enospc,
            });
        }
    }

    /// The operator makes room: the disk faults that have not fired yet are used up (each
    /// operation fires one; a free-space query is an operation that changes nothing).
    pub fn free_disk(&mut self) {
        let root = std::path::Path::new("/");
        for _ in 0..=self.disk_faults_armed {
            if self.fs.available_bytes(root).is_ok() {
                break;
            }
        }
        self.disk_faults_armed = 0;
    }

    /// Steps the wall clock (both the relay's and the network layer's view of it).
    pub fn jump_clock(&self, delta_ms: i64) {
        self.clock.jump(delta_ms);
    }

    /// A clean stop, as on SIGTERM: the executor refunds in-flight attempts and ends, the node
    /// closes its connections, the store drains its committer.
    pub async fn stop(&mut self, simnet: &SimNet) -> Option<Result<ExecutorReport, String>> {
        let run = self.up.take()?;
        let _ = run.stop.send(true);
        let bound = Duration::from_millis(STOP_BOUND_MS);
        let report = match tokio::time::timeout(bound, run.executor).await {
            Ok(Ok(Ok(report))) => Ok(report),
            Ok(Ok(Err(e))) => Err(format!("ledger failed: {e}")),
            Ok(Err(e)) => Err(format!("executor panicked or was cancelled: {e}")),
            Err(_) => Err(format!("executor did not stop within {STOP_BOUND_MS} ms")),
        };
        let _ = tokio::time::timeout(
            bound,
            run.node.shutdown(Duration::from_millis(SHUTDOWN_GRACE_MS)),
        )
        .await;
        simnet.unbind(self.spec.addr);
        run.store.close();
        Some(report)
    }
}
