//! Randomized simulation on virtual time: random connected graphs, transient link failures
//! (each shorter than the retry budget) and node restarts (graceful and crash); at the end every
//! node holds every segment and no job exceeded `attempts_max` (INV-12, INV-15). Every run
//! prints its seed; `RELAY_SEED=<seed>` replays exactly that run, and a test proves replays are
//! exact by comparing trace digests.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use relay::RelayConfig;
use relay::harness::seed_from_env;
use relay::harness::segments::Publisher;
use relay::harness::sim::{Link, Sim, SimConfig, topology};
use relay::tables::JobState;
use store::manifest::SuccessCondition;

/// Knobs with a retry budget of about a minute of virtual time: 8 attempts, each failing after
/// up to the 3 s connect timeout, backoff 0.5 s doubling to 8 s (≈ 31 s of waiting).
fn sim_cfg() -> RelayConfig {
    let mut c = fast_cfg();
    c.attempts_max = 8;
    c.backoff_base_ms = 500;
    c.backoff_max_ms = 8_000;
    c.store_full_attempts_max = 16;
    c
}

/// Faults happen in the first `FAULT_WINDOW_MS`; each lasts at most `FAULT_MS_MAX`.
const FAULT_WINDOW_MS: u64 = 30_000;
const FAULT_MS_MAX: u64 = 10_000;
const RESTART_DOWN_MS_MAX: u64 = 5_000;
/// Virtual time allowed to converge after the start (INV-15's bound, with a wide margin).
const CONVERGE_MS: u64 = 30 * 60 * 1_000;

#[derive(Debug)]
struct Summary {
    digest: String,
    transfers: u64,
    dead_letters: usize,
}

fn scenario(seed: u64, n: usize, segments: usize) -> Summary {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let publisher = Publisher::from_seed(31);
    let edges = topology::random_connected(n, n / 2, &mut rng);
    let mut sim = Sim::new(
        SimConfig::new(rng.random(), sim_cfg()),
        n,
        &edges,
        &publisher.trusted(),
    );
    let t0 = sim.now_ms();
    // Every link gets its own latency (some slow), restored after each fault.
    let base: Vec<u64> = edges
        .iter()
        .map(|_| {
            if rng.random_bool(0.1) {
                rng.random_range(2_000..5_000)
            } else {
                rng.random_range(20..800)
            }
        })
        .collect();
    for (e, &(a, b)) in edges.iter().enumerate() {
        sim.set_link(
            a,
            b,
            Link::Up {
                latency_ms: base[e],
            },
        );
    }
    // Segments are carried in at random hosts at random times during the faults.
    let mut ids = Vec::new();
    for s in 0..segments {
        // all_peers only: under one_peer a node stops owing its other peers after the first
        // delivery, and the design leaves the rest to catch-up (a later issue), so a faulty run
        // may leave a host without the segment until then.
        let spec = spec(&format!("seg-{seed}-{s}"))
            .condition(SuccessCondition::AllPeers)
            .priority(rng.random())
            .payload_len(rng.random_range(1..16_384));
        let (id, file) = publisher.segment(&spec);
        let at = t0 + rng.random_range(0..FAULT_WINDOW_MS / 2);
        sim.import_at(at, rng.random_range(0..n), file);
        ids.push(id);
    }
    // Transient link failures, each shorter than the retry budget.
    for _ in 0..n / 2 {
        let e = rng.random_range(0..edges.len());
        let (a, b) = edges[e];
        let start = t0 + rng.random_range(0..FAULT_WINDOW_MS);
        let end = start + rng.random_range(500..FAULT_MS_MAX);
        let link = if rng.random_bool(0.8) {
            Link::Down
        } else {
            Link::Failing { latency_ms: 200 }
        };
        sim.set_link_at(start, a, b, link);
        sim.set_link_at(
            end,
            a,
            b,
            Link::Up {
                latency_ms: base[e],
            },
        );
    }
    // Node restarts: graceful or crash (power loss).
    for _ in 0..n / 5 {
        let node = rng.random_range(0..n);
        let at = t0 + rng.random_range(0..FAULT_WINDOW_MS);
        sim.restart_at(
            at,
            node,
            rng.random_bool(0.5),
            rng.random_range(100..RESTART_DOWN_MS_MAX),
        );
    }
    sim.run_until(t0 + CONVERGE_MS, 50_000 * n as u64);

    let cfg = sim_cfg();
    let mut dead_letters = 0;
    for node in 0..n {
        assert!(
            sim.is_up(node),
            "seed {seed}: node {node} is down at the end"
        );
        for id in &ids {
            assert!(
                sim.holds(node, id),
                "seed {seed}: node {node} lacks {} (replay: RELAY_SEED={seed})\n{}",
                id.short(),
                sim.trace_tail().join("\n")
            );
        }
        assert!(
            sim.attempts_seen_max(node) <= cfg.attempts_max,
            "seed {seed}: INV-12"
        );
        for (key, row) in sim.jobs(node) {
            assert!(
                row.counts.attempts <= cfg.attempts_max,
                "seed {seed}: {key:?} {row:?}"
            );
            assert_ne!(
                row.state,
                JobState::Pending,
                "seed {seed}: {key:?} still pending"
            );
        }
        dead_letters += sim.relay(node).dead_letters().unwrap().len();
    }
    Summary {
        digest: sim.trace_digest(),
        transfers: sim.stats.transfers,
        dead_letters,
    }
}

/// The seeds to run: `RELAY_SEED` alone when set, else `count` seeds from `base`.
fn seeds(base: u64, count: u64) -> Vec<u64> {
    if std::env::var(relay::harness::SEED_ENV).is_ok() {
        vec![seed_from_env(base)]
    } else {
        (base..base + count)
            .inspect(|s| eprintln!("relay sim seed={s} (replay: RELAY_SEED={s})"))
            .collect()
    }
}

#[test]
fn inv_15_random_100_nodes_converge_despite_transient_faults() {
    for seed in seeds(1_000, 3) {
        let s = scenario(seed, 100, 4);
        eprintln!(
            "seed {seed}: {} transfers, {} dead letters, trace {}",
            s.transfers, s.dead_letters, s.digest
        );
    }
}

#[test]
fn inv_15_many_seeds_20_nodes_converge() {
    for seed in seeds(2_000, 40) {
        let s = scenario(seed, 20, 2);
        eprintln!(
            "seed {seed}: {} transfers, {} dead letters",
            s.transfers, s.dead_letters
        );
    }
}

#[test]
fn sim_replays_exactly_from_its_seed() {
    let seed = seed_from_env(3_000);
    let a = scenario(seed, 30, 2);
    let b = scenario(seed, 30, 2);
    assert_eq!(a.digest, b.digest, "same seed, same trace");
    assert_eq!(a.transfers, b.transfers);
    let c = scenario(seed + 1, 30, 2);
    assert_ne!(a.digest, c.digest, "another seed, another trace");
}
