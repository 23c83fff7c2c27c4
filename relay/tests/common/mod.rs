//! Shared helpers of the relay's integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use relay::harness::segments::{Publisher, SegSpec, T0_MS};
use relay::harness::sim::{Sim, SimConfig};
use relay::{PeerId, RelayConfig};

pub fn peer(s: &str) -> PeerId {
    PeerId::new(s).expect("valid peer id")
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
