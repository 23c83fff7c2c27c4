//! Many seeds on a few threads (each seed runs on its own single-threaded runtime, so
//! parallel seeds do not disturb each other's determinism).

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::run::{RunReport, run_seed};

/// What a sweep found.
#[derive(Debug, Default)]
pub struct Sweep {
    pub seeds: u64,
    pub failed: Vec<RunReport>,
    /// Seeds whose run could not be set up or driven: (seed, error).
    pub errors: Vec<(u64, String)>,
    pub elapsed: Duration,
    /// Virtual ms from heal to convergence, the largest seen.
    pub converge_ms_max: u64,
}

impl Sweep {
    pub fn seeds_per_s(&self) -> f64 {
        self.seeds as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn passed(&self) -> bool {
        self.failed.is_empty() && self.errors.is_empty()
    }
}

/// Runs every seed of `seeds` on `workers` threads; `progress` is called after each.
pub fn sweep(seeds: Range<u64>, workers: usize, progress: impl Fn(u64, &Sweep) + Sync) -> Sweep {
    let started = Instant::now();
    let next = AtomicU64::new(seeds.start);
    let out = Mutex::new(Sweep::default());
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        return;
                    }
                    let result = run_seed(seed);
                    let mut sweep = out.lock().unwrap_or_else(|e| e.into_inner());
                    sweep.seeds += 1;
                    match result {
                        Ok(report) => {
                            if let Some(ms) = report.converged_after_heal_ms {
                                sweep.converge_ms_max = sweep.converge_ms_max.max(ms);
                            }
                            if !report.passed() {
                                sweep.failed.push(report);
                            }
                        }
                        Err(e) => sweep.errors.push((seed, e.to_string())),
                    }
                    sweep.elapsed = started.elapsed();
                    progress(seed, &sweep);
                }
            });
        }
    });
    let mut sweep = out.into_inner().unwrap_or_else(|e| e.into_inner());
    sweep.failed.sort_by_key(|r| r.seed);
    sweep.errors.sort();
    sweep.elapsed = started.elapsed();
    sweep
}
