//! Real `net::Node`s on a simulated network ([`net::sim::SimNet`]) and tokio's paused clock,
//! with real stores on the power-loss filesystem double ([`SimFs`]).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use net::sim::{SimClock, SimNet, fleet_identities};
use net::{Clock, DiskMode, NetConfig, Node, NodeIdentity, NodeSetup};
use store::fs::Fs;
use store::fs::sim::SimFs;
use store::{IngestOptions, IngestOutcome, SegmentId, Store, StoreConfig};

use crate::common::{Gen, RecHooks, id, segment, trusted};

/// Virtual wall-clock time at which every simulation starts: an hour after the test manifests
/// were created.
pub const T0_MS: u64 = crate::common::CREATED_AT_MS + 3_600_000;
/// Store ceiling of simulated nodes.
pub const CEILING_BYTES: u64 = 1 << 30;
/// The port every simulated node listens on (each has its own loopback address).
pub const PORT: u16 = 7401;

/// Node `i`'s address: 127.0.0.(i+1):7401.
pub fn addr(i: usize) -> SocketAddr {
    let last = u8::try_from(i + 1).expect("fewer than 255 nodes");
    SocketAddr::from(([127, 0, 0, last], PORT))
}

/// A simulated fleet: names, identities, a store per node (on its own [`SimFs`]), one network.
/// Create it inside the simulation runtime (its clock reads tokio's).
pub struct SimFleet {
    pub net: SimNet,
    pub clock: Arc<SimClock>,
    pub names: Vec<String>,
    pub identities: Vec<NodeIdentity>,
    pub fss: Vec<SimFs>,
    pub stores: Vec<Store>,
}

impl SimFleet {
    pub fn new(seed: u64, names: &[&str]) -> SimFleet {
        let clock = Arc::new(SimClock::new(T0_MS));
        let fss: Vec<SimFs> = names.iter().map(|_| SimFs::new()).collect();
        let stores = fss
            .iter()
            .map(|fs| open_store(fs, clock.now_ms()))
            .collect();
        SimFleet {
            net: SimNet::new(seed),
            clock,
            names: names.iter().map(|n| n.to_string()).collect(),
            identities: fleet_identities(seed, names, T0_MS).expect("sim fleet"),
            fss,
            stores,
        }
    }

    /// Node `i`'s configuration: every other node is a peer; timeouts as shipped; no catch-up
    /// unless asked; disk work inline (no threads: time only moves when every task waits);
    /// seeded from `seed`.
    pub fn config(&self, i: usize, seed: u64) -> NetConfig {
        let known: BTreeMap<_, _> = self
            .names
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, n)| (id(n), addr(j)))
            .collect();
        let mut cfg = NetConfig::new(id(&self.names[i]), addr(i), known);
        cfg.catchup_on_connect = false;
        cfg.catchup_interval_ms = 0;
        cfg.disk_mode = DiskMode::Inline;
        cfg.rng_seed = Some(seed.wrapping_mul(31).wrapping_add(i as u64));
        cfg
    }

    /// Starts node `i` on a fresh socket at its address (replacing any old one).
    pub fn start(&self, i: usize, cfg: NetConfig) -> (Node, Arc<RecHooks>) {
        let hooks = Arc::new(RecHooks::default());
        let mut setup = NodeSetup::new(cfg, self.identities[i].clone(), self.stores[i].clone());
        setup.hooks = hooks.clone();
        setup.clock = self.clock.clone();
        setup.socket = Some(self.net.socket(addr(i)));
        (Node::start(setup).expect("start sim node"), hooks)
    }

    /// Stores segment (`tag`, `len`) at node `i` as an import.
    pub fn seed_segment(&self, i: usize, tag: u64, len: u64) -> SegmentId {
        let signed = segment(tag, len);
        let mut header = Vec::new();
        store::segfile::write_header(&mut header, &signed).expect("header");
        let reader = std::io::Cursor::new(header).chain(Gen::new(tag, len));
        match self.stores[i]
            .ingest_reader(
                reader,
                &IngestOptions::import(),
                self.clock.now_ms(),
                |_, _| Ok(()),
            )
            .expect("seed ingest")
        {
            IngestOutcome::Stored(s) => s.id,
            IngestOutcome::AlreadyHave { id, .. } => id,
        }
    }

    pub fn holds(&self, i: usize, seg: &SegmentId) -> bool {
        self.stores[i]
            .list()
            .expect("list")
            .iter()
            .any(|s| s.id == *seg)
    }
}

pub fn open_store(fs: &SimFs, now_ms: u64) -> Store {
    let mut cfg = StoreConfig::new("/data", CEILING_BYTES, trusted());
    cfg.min_free_bytes = 0;
    let fs: Arc<dyn Fs> = Arc::new(fs.clone());
    Store::open(cfg, fs, now_ms).expect("open sim store").0
}

/// Runs `body` on a fresh simulation runtime.
pub fn run<T>(body: impl std::future::Future<Output = T>) -> T {
    crate::common::logs();
    net::sim::runtime().expect("sim runtime").block_on(body)
}

/// Virtual time since `t0`, in ms.
pub fn ms_since(t0: tokio::time::Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

/// Sleeps `d` of virtual time.
pub async fn pass(d: Duration) {
    tokio::time::sleep(d).await;
}

/// A started simulated node, as the wall-clock tests' `TestNode` (without a data directory).
pub struct SimNode {
    pub node: Node,
    pub store: Store,
    pub hooks: Arc<RecHooks>,
    pub addr: SocketAddr,
}

impl SimNode {
    pub fn id(&self) -> net::NodeId {
        self.node.id().clone()
    }
}

impl SimFleet {
    /// Starts every node; `links` are (a, b) pairs that know each other. Each gets the short
    /// timeouts of the wall-clock tests ([`crate::common::quick`]), disk work inline, a seed of
    /// its own, then `tweak`.
    pub fn start_linked(
        &self,
        seed: u64,
        links: &[(&str, &str)],
        tweak: impl Fn(&mut NetConfig),
    ) -> Vec<SimNode> {
        let all: Vec<&str> = self.names.iter().map(String::as_str).collect();
        self.start_nodes(seed, &all, links, tweak)
    }

    /// [`SimFleet::start_linked`] for the nodes named `which` only (the others' identities
    /// and addresses serve raw clients).
    pub fn start_nodes(
        &self,
        seed: u64,
        which: &[&str],
        links: &[(&str, &str)],
        tweak: impl Fn(&mut NetConfig),
    ) -> Vec<SimNode> {
        let index = |name: &str| self.names.iter().position(|n| n == name).expect("a name");
        which
            .iter()
            .map(|name| index(name))
            .map(|i| {
                let me = self.names[i].as_str();
                let mut known = BTreeMap::new();
                for (a, b) in links {
                    if *a == me {
                        known.insert(id(b), addr(index(b)));
                    }
                    if *b == me {
                        known.insert(id(a), addr(index(a)));
                    }
                }
                let mut cfg = NetConfig::new(id(me), addr(i), known);
                crate::common::quick(&mut cfg);
                cfg.disk_mode = DiskMode::Inline;
                cfg.rng_seed = Some(seed.wrapping_mul(31).wrapping_add(i as u64));
                tweak(&mut cfg);
                let (node, hooks) = self.start(i, cfg);
                SimNode {
                    node,
                    store: self.stores[i].clone(),
                    hooks,
                    addr: addr(i),
                }
            })
            .collect()
    }

    /// The identity of the node named `name`.
    pub fn identity(&self, name: &str) -> NodeIdentity {
        let i = self.names.iter().position(|n| n == name).expect("a name");
        self.identities[i].clone()
    }

    /// A socket for a raw client at an address no node lists (127.0.1.k:7401).
    pub fn stranger_socket(&self, k: u8) -> crate::common::RawSocket {
        let addr = SocketAddr::from(([127, 0, 1, k], PORT));
        crate::common::RawSocket {
            socket: self.net.socket(addr),
            addr,
        }
    }

    /// Cuts node `i` off (every datagram to or from it lost) or heals it.
    pub fn cut(&self, i: usize, cut: bool) {
        for j in (0..self.names.len()).filter(|&j| j != i) {
            let link = net::sim::Link {
                blocked: cut,
                ..net::sim::Link::default()
            };
            self.net.set_link(addr(i), addr(j), link.clone());
            self.net.set_link(addr(j), addr(i), link);
        }
    }
}

/// Files under the store's `tmp/` directory on `fs` (partials and abandoned ingests).
pub fn tmp_files(fs: &SimFs) -> usize {
    fs.list_dir(std::path::Path::new("/data/tmp"))
        .expect("the store's tmp directory")
        .len()
}
