//! One run of a seed: workload → faults → heal → converge within a bound (virtual time) →
//! checks against the fault-free run of the same workload.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use net::sim::SimNet;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::{self, FinalState, Violation, check_fleet};
use crate::error::SimError;
use crate::fault::{Fault, FaultPlan};
use crate::fleet::Fleet;
use crate::seed::replay_command;
use crate::topology::Topology;
use crate::workload::{Import, Workload};

/// Distinct workloads (node count, topology, segments, imports): a seed runs the faults it
/// draws on workload `seed % WORKLOAD_VARIANTS`, so the fault-free reference of each workload
/// is run once per process and compared against many fault plans.
pub const WORKLOAD_VARIANTS: u64 = 64;
/// Nodes of a fleet: small fleets keep a seed cheap; a line of four is still three hops.
pub const NODES_MIN: usize = 2;
pub const NODES_PER_RUN_MAX: usize = 4;
/// After the heal the fleet must converge within this much virtual time. A job may wait a whole
/// `backoff_max_ms` (due times are clamped into `[now, now + backoff_max_ms]` after a clock
/// jump, and a job to a peer that caught up elsewhere ends only at its next attempt), plus
/// its jitter and the re-dial and catch-up delays: twice the relay's default cap covers them.
/// (15 minutes, the cap itself, was found too short by soak seeds 10352, 10578 and 15568.)
pub const CONVERGE_BOUND_MS: u64 = 2 * relay::limits::BACKOFF_MAX_MS_DEFAULT;
/// How often convergence is looked at (virtual time).
pub const CONVERGE_POLL_MS: u64 = 1_000;

/// Everything a seed decides before the run.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub variant: u64,
    pub n: usize,
    pub topology: Topology,
    pub workload: Workload,
    pub plan: FaultPlan,
}

impl Scenario {
    /// The scenario of `seed`: its workload variant's fleet and workload, its own fault plan.
    pub fn from_seed(seed: u64) -> Scenario {
        let variant = seed % WORKLOAD_VARIANTS;
        let mut wl_rng = ChaCha8Rng::seed_from_u64(variant ^ 0x5749_4d55_4c41_5449);
        let n = wl_rng.random_range(NODES_MIN..=NODES_PER_RUN_MAX);
        let topology = Topology::draw(&mut wl_rng);
        let workload = Workload::draw(&mut wl_rng, n, variant);
        let plan = FaultPlan::draw(&mut ChaCha8Rng::seed_from_u64(seed), n);
        Scenario {
            seed,
            variant,
            n,
            topology,
            workload,
            plan,
        }
    }
}

/// What a run did and found.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub seed: u64,
    /// The simulated network's trace digest (every datagram's fate). Not yet reproducible
    /// for every seed: the relay's ledger writes still hop to a thread (see the crate docs).
    pub net_digest: [u8; 32],
    /// The simulator's own event trace digest (faults, imports and their outcomes, boots,
    /// convergence time, final state): the replay digest, equal for equal seeds.
    pub trace_digest: [u8; 32],
    /// blake3 of both: equal only when the datagrams' order replayed too.
    pub digest: [u8; 32],
    pub violations: Vec<Violation>,
    /// Virtual ms from the heal to convergence (`None`: not within [`CONVERGE_BOUND_MS`]).
    pub converged_after_heal_ms: Option<u64>,
    pub state: FinalState,
    pub trace_tail: Vec<String>,
    pub net_stats: String,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn digest_hex(&self) -> String {
        hex(&self.digest)
    }

    /// The digest a replay of this seed must reproduce: the event trace's.
    pub fn replay_digest_hex(&self) -> String {
        hex(&self.trace_digest)
    }

    /// What a failing seed prints: the seed, how to replay it, what failed, the trace's end.
    pub fn failure_text(&self) -> String {
        let mut out = format!(
            "seed {} FAILED (replay: {})\n",
            self.seed,
            replay_command(self.seed)
        );
        for v in &self.violations {
            out.push_str(&format!("  {v}\n"));
        }
        out.push_str(&format!("  network: {}\n  trace tail:\n", self.net_stats));
        for line in &self.trace_tail {
            out.push_str(&format!("    {line}\n"));
        }
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `seed`: its fault plan, then the checks against the fault-free run of its workload.
pub fn run_seed(seed: u64) -> Result<RunReport, SimError> {
    let scenario = Scenario::from_seed(seed);
    let fault_free = fault_free_state(&scenario)?;
    let mut report = run_scenario(&scenario, &scenario.plan, seed, fault_free.as_ref().ok())?;
    if let Err(reference) = fault_free {
        report.violations.push(Violation {
            check: check::STATE_EQUALS_FAULT_FREE,
            invariants: &[],
            detail: format!(
                "the fault-free run of workload {} failed: {reference}",
                scenario.variant
            ),
        });
    }
    Ok(report)
}

/// The final state of the fault-free run of the scenario's workload (once per process and
/// workload), or what that run failed.
fn fault_free_state(scenario: &Scenario) -> Result<Result<FinalState, String>, SimError> {
    type Cache = Mutex<BTreeMap<u64, Arc<OnceLock<Result<FinalState, String>>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let slot = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(scenario.variant)
        .or_default()
        .clone();
    if let Some(done) = slot.get() {
        return Ok(done.clone());
    }
    // The reference is itself a seeded run: its network seed is the variant's.
    let report = run_scenario(scenario, &FaultPlan::none(), scenario.variant, None)?;
    let result = if report.passed() {
        Ok(report.state)
    } else {
        Err(report
            .violations
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("; "))
    };
    Ok(slot.get_or_init(|| result).clone())
}

/// One step of a run's timeline.
#[derive(Debug, Clone)]
enum Step {
    Import(Import),
    Fault(Fault),
    /// A crashed node boots again.
    Boot(usize),
    /// A node whose power loss was armed mid-operation goes down (if still up) and boots.
    Restart(usize),
}

/// Runs `scenario`'s workload under `plan` on a fresh simulated network seeded `net_seed`, on
/// its own single-threaded runtime with paused time. `fault_free`: the reference state to
/// compare with (`None`: this is the reference).
pub fn run_scenario(
    scenario: &Scenario,
    plan: &FaultPlan,
    net_seed: u64,
    fault_free: Option<&FinalState>,
) -> Result<RunReport, SimError> {
    let runtime = net::sim::runtime()?;
    let report = runtime.block_on(drive(scenario, plan, net_seed, fault_free));
    // Tasks of stopped nodes may linger on the runtime: they go with it.
    drop(runtime);
    report
}

async fn drive(
    scenario: &Scenario,
    plan: &FaultPlan,
    net_seed: u64,
    fault_free: Option<&FinalState>,
) -> Result<RunReport, SimError> {
    let simnet = SimNet::new(net_seed);
    let workload = &scenario.workload;
    let mut fleet = Fleet::start(
        simnet.clone(),
        scenario.n,
        scenario.topology,
        workload,
        net_seed,
    )?;

    let mut steps: BTreeMap<(u64, usize), Step> = BTreeMap::new();
    for import in &workload.imports {
        steps.insert((import.at_ms, steps.len()), Step::Import(import.clone()));
    }
    for timed in &plan.faults {
        steps.insert((timed.at_ms, steps.len()), Step::Fault(timed.fault.clone()));
        if let Fault::Crash {
            node,
            down_ms,
            after_ops,
        } = timed.fault
        {
            let back = (timed.at_ms + down_ms).min(plan.heal_at_ms);
            let step = if after_ops == 0 {
                Step::Boot(node)
            } else {
                Step::Restart(node)
            };
            steps.insert((back, steps.len()), step);
        }
    }
    while let Some(((at_ms, _), step)) = steps.pop_first() {
        fleet.sleep_until(at_ms).await;
        match step {
            Step::Import(import) => fleet.import(&import, workload),
            Step::Fault(fault) => fleet.apply(&fault).await?,
            Step::Boot(node) if !fleet.nodes[node].is_up() => fleet.boot(node)?,
            Step::Boot(_) => {}
            Step::Restart(node) => fleet.restart_after_armed_power_loss(node).await?,
        }
    }
    fleet.sleep_until(plan.heal_at_ms).await;
    fleet.heal(workload).await?;

    let healed_at = fleet.now_ms();
    let mut converged_after_heal_ms = None;
    for _ in 0..=CONVERGE_BOUND_MS / CONVERGE_POLL_MS {
        if fleet.converged() {
            converged_after_heal_ms = Some(fleet.now_ms() - healed_at);
            break;
        }
        fleet.revive().await?;
        fleet.retry_imports(workload);
        tokio::time::sleep(std::time::Duration::from_millis(CONVERGE_POLL_MS)).await;
    }
    let state = FinalState::of(&fleet);
    let now = fleet.now_ms();
    fleet.trace.line(
        now,
        format!(
            "end converged={converged_after_heal_ms:?} {}",
            state.summary()
        ),
    );
    let mut violations = std::mem::take(&mut fleet.violations);
    if converged_after_heal_ms.is_none() {
        violations.push(Violation {
            check: check::CONVERGES,
            invariants: &["INV-15"],
            detail: format!(
                "not converged {CONVERGE_BOUND_MS} ms after the heal: {}; imports owed: {}",
                state.summary(),
                fleet.owed_imports.len()
            ),
        });
    }
    violations.extend(check_fleet(&fleet, &state, fault_free.unwrap_or(&state)));
    for (i, stopped) in fleet.stop().await.into_iter().enumerate() {
        if let Some(Err(e)) = stopped {
            violations.push(Violation {
                check: check::CLEAN_STOP,
                invariants: &[],
                detail: format!("n{i}: {e}"),
            });
        }
    }
    let net_digest = simnet.trace_digest();
    let trace_digest = fleet.trace.digest();
    let mut both = blake3::Hasher::new();
    both.update(&net_digest);
    both.update(&trace_digest);
    Ok(RunReport {
        seed: scenario.seed,
        net_digest,
        trace_digest,
        digest: *both.finalize().as_bytes(),
        violations,
        converged_after_heal_ms,
        state,
        trace_tail: fleet.trace.tail(),
        net_stats: format!("{:?}", simnet.stats()),
    })
}
