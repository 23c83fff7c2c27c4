//! Shared helpers of the relay's integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use relay::harness::segments::{Publisher, SegSpec, T0_MS};
use relay::harness::sim::{Sim, SimConfig};
use relay::{JobKey, NodeId, Relay, RelayConfig};
use store::fs::Fs;
use store::fs::sim::SimFs;
use store::{SegmentId, Store, StoreConfig};

pub fn peer(s: &str) -> NodeId {
    NodeId::new(s).expect("valid peer id")
}

/// Relay knobs for tests: short backoffs so a retry budget is seconds of virtual time.
pub fn fast_cfg() -> RelayConfig {
    let mut c = RelayConfig::new(peer("template"), []);
    c.attempts_max = 5;
    c.backoff_base_ms = 1_000;
    c.backoff_max_ms = 16_000;
    c.jitter_percent = 20;
    c.store_full_backoff_min_ms = 4_000;
    c.store_full_attempts_max = 10;
    c.busy_retry_ms = 500;
    c.dead_letter_pin_max_age_ms = 3_600_000;
    c
}

/// A simulated network with the fast knobs.
pub fn sim(seed: u64, n: usize, edges: &[(usize, usize)], publisher: &Publisher) -> Sim {
    Sim::new(
        SimConfig::new(seed, fast_cfg()),
        n,
        edges,
        &publisher.trusted(),
    )
}

/// A tracing buffer: everything logged at INFO and above on this thread while `f` runs.
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let buf = buf.clone();
        move || LogWriter(buf.clone())
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::INFO)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    (out, text)
}

pub struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn spec(name: &str) -> SegSpec {
    SegSpec::named(name)
}

pub const T0: u64 = T0_MS;

/// A node `n0` whose known peers are `peers`, with the fast test timings.
pub fn node_cfg(peers: &[&str]) -> RelayConfig {
    let mut c = fast_cfg();
    c.node_id = peer("n0");
    c.known_peers = peers.iter().map(|p| peer(p)).collect();
    c
}

/// A store (1 MiB ceiling) and its relay on `fs`, as a node opens them at start.
pub fn open(fs: &SimFs, publisher: &Publisher, cfg: RelayConfig, now: u64) -> (Store, Relay) {
    let mut store_cfg = StoreConfig::new("/data", 1 << 20, publisher.trusted());
    store_cfg.min_free_bytes = 0;
    let arc: Arc<dyn Fs> = Arc::new(fs.clone());
    let (store, _) = Store::open(store_cfg, arc, now).unwrap();
    let relay = Relay::open(store.clone(), cfg, now).unwrap();
    (store, relay)
}

pub fn key(seg: SegmentId, p: &str) -> JobKey {
    JobKey { seg, peer: peer(p) }
}
