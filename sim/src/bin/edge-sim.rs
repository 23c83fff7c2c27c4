//! `edge-sim`: the fleet simulation from the command line — a sweep of seeds (the soak before a
//! release: `make sim-soak`) or one seed with its trace.
//!
//! `edge-sim [SEEDS [FIRST]]` runs SEEDS seeds (default `EDGE_SIM_SEEDS`, else 20 000) from FIRST
//! (default `EDGE_SIM_FIRST_SEED`, else 0) on every core; `EDGE_SIM_SEED=N edge-sim` runs seed N
//! once and prints its trace's end. Exits 1 when a seed fails.

use std::process::ExitCode;

use edge_sim::seed::{FIRST_SEED_ENV, SEED_ENV, SEEDS_ENV, env_u64, parse_seed};
use edge_sim::{run_seed, sweep};

/// Seeds of a soak when nothing says otherwise.
const SOAK_SEEDS: u64 = 20_000;
/// A progress line every this many seeds.
const PROGRESS_EVERY: u64 = 100;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> ExitCode {
    // RUST_LOG=net=debug,relay=debug shows the nodes' own logs (off by default).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    if let Some(seed) = env_u64(SEED_ENV) {
        let started = std::time::Instant::now();
        return match run_seed(seed) {
            Ok(report) => {
                for line in &report.trace_tail {
                    println!("{line}");
                }
                println!(
                    "seed {seed}: {} in {:.2} s, digest {} (network {}, events {}), {}",
                    if report.passed() { "passed" } else { "FAILED" },
                    started.elapsed().as_secs_f64(),
                    report.digest_hex(),
                    hex(&report.net_digest),
                    hex(&report.trace_digest),
                    report.net_stats
                );
                if report.passed() {
                    ExitCode::SUCCESS
                } else {
                    eprintln!("{}", report.failure_text());
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("seed {seed}: could not run: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut args = std::env::args().skip(1);
    let count = args
        .next()
        .and_then(|s| parse_seed(&s))
        .or_else(|| env_u64(SEEDS_ENV))
        .unwrap_or(SOAK_SEEDS);
    let first = args
        .next()
        .and_then(|s| parse_seed(&s))
        .or_else(|| env_u64(FIRST_SEED_ENV))
        .unwrap_or(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let result = sweep(first..first + count, workers, |_, s| {
        if s.seeds % PROGRESS_EVERY == 0 {
            eprintln!(
                "{} seeds, {} failed, {:.2} seeds/s",
                s.seeds,
                s.failed.len() + s.errors.len(),
                s.seeds_per_s()
            );
        }
    });
    for report in &result.failed {
        eprintln!("{}", report.failure_text());
    }
    for (seed, e) in &result.errors {
        eprintln!("seed {seed}: could not run: {e}");
    }
    println!(
        "{} seeds from {first}: {} failed, {} could not run; {:.1} s, {:.2} seeds/s on {workers} thread(s)",
        result.seeds,
        result.failed.len(),
        result.errors.len(),
        result.elapsed.as_secs_f64(),
        result.seeds_per_s()
    );
    if result.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
