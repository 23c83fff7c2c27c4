//! Process faults: `kill -9` at random moments, SIGSTOP/SIGCONT (a frozen peer holding its
//! streams), SIGTERM restart storms.

use std::time::Duration;

use rand::Rng;
use rustix::process::Signal;

use super::basic::{acked_by_import, import_segments, make_stick};
use crate::check::{self, Acked};
use crate::fleet::{FleetSpec, Topology};
use crate::results::{Build, Verdict, check as names};
use crate::scenario::{Ctx, Scenario, World};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "kill9-line",
            summary: "A line of 4 relays 8 segments while nodes are killed with SIGKILL at random \
                      moments and restarted; the final state equals the same workload's without \
                      kills, nothing acknowledged is lost.",
            invariants: &["INV-03", "INV-05", "INV-12", "INV-14", "INV-15", "INV-25"],
            quick: true,
            faults: true,
            build: Build::Shipped,
            run: kill9_line,
        },
        Scenario {
            name: "sigstop-frozen-peer",
            summary: "A star of 4: a leaf is frozen (SIGSTOP) while the hub sends it a 16 MiB \
                      segment; the other leaves are served meanwhile, the frozen one catches up \
                      after SIGCONT.",
            invariants: &["INV-15", "INV-18"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: sigstop_frozen_peer,
        },
        Scenario {
            name: "sigterm-storm",
            summary: "A ring of 5 relays 10 segments while random nodes are stopped with SIGTERM \
                      and restarted at once, 8 times: every stop is clean, no job is lost or \
                      dead-lettered, attempts stay within their bound.",
            invariants: &["INV-12", "INV-14", "INV-15"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: sigterm_storm,
        },
    ]
}

/// Kills with SIGKILL in a `kill9-line` run.
const KILLS: usize = 6;
/// Restarts of a `sigterm-storm` run.
const STOPS: usize = 8;

fn kill9_line(ctx: &mut Ctx) -> anyhow::Result<World> {
    let topology = Topology::Line(4);
    let count = 8;
    let len = 2 << 20;
    // The reference: the same workload, no kills.
    let reference = {
        let mut fleet = ctx.direct_fleet_in("reference", FleetSpec::new(topology))?;
        fleet.start_all()?;
        let world = World::new(fleet);
        let acked = import_segments(ctx, &world, 0, "k", count, len)?;
        let all: Vec<usize> = (0..world.fleet.len()).collect();
        if check::converge(
            &world.fleet,
            &acked,
            &all,
            Duration::from_millis(
                world
                    .fleet
                    .spec
                    .tuning
                    .convergence_bound_ms(topology.diameter(), 2_000),
            ),
        )
        .is_none()
        {
            anyhow::bail!("the reference run without kills did not converge");
        }
        settle(&world.fleet);
        let state = check::final_state(&world.fleet)?;
        let mut world = world;
        let problems = world.fleet.stop_all();
        if !problems.is_empty() {
            anyhow::bail!("reference fleet: {}", problems.join("; "));
        }
        state
    };

    let mut fleet = ctx.direct_fleet(FleetSpec::new(topology))?;
    fleet.start_all()?;
    let mut world = World::new(fleet);
    let (stick, files) = make_stick(&world, "k", count, len)?;
    // The import runs while nodes die: kills land in the middle of imports and relays.
    let import = world
        .fleet
        .command(0, &["import", "--json", &stick.to_string_lossy()]);
    let importing = std::thread::spawn(move || {
        crate::proc::run_bounded(import, Duration::from_millis(crate::fleet::CLI_TIMEOUT_MS))
    });
    for _ in 0..KILLS {
        let wait = ctx.rng.random_range(20..300);
        std::thread::sleep(Duration::from_millis(wait));
        // The importing node is spared until its import has answered.
        let from = if importing.is_finished() { 0 } else { 1 };
        let victim = ctx.rng.random_range(from..world.fleet.len());
        world.fleet.kill9(victim)?;
        let id = world.fleet.node(victim).id.clone();
        ctx.fault("proc.kill9", &id, "SIGKILL");
        let down = ctx.rng.random_range(50..800);
        std::thread::sleep(Duration::from_millis(down));
        world.fleet.start(victim)?;
    }
    let out = importing
        .join()
        .map_err(|_| anyhow::anyhow!("the import thread panicked"))??;
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let acked = acked_by_import(&answer, &files, "import on node-1")?;
    ctx.check(
        "workload_ran",
        &[],
        acked.len() == count,
        format!("{} of {count} imported", acked.len()),
    );
    let all: Vec<usize> = (0..world.fleet.len()).collect();
    ctx.converge(&world.fleet, &acked, &all, topology.diameter(), 2_000);
    ctx.record(check::lost(&world.fleet, &acked, &all));
    settle(&world.fleet);
    let state = check::final_state(&world.fleet)?;
    ctx.record(check::same_state(&state, &reference));
    Ok(world)
}

/// Waits (bounded) until no node has a pending or in-flight job, so states are final.
pub fn settle(fleet: &crate::fleet::Fleet) {
    let quiet = |f: &crate::fleet::Fleet| {
        (0..f.len()).all(|i| {
            f.try_json(i, &["status"])
                .map(|v| v["jobs_pending"] == 0 && v["jobs_in_flight"] == 0)
                .unwrap_or(false)
        })
    };
    let bound = fleet
        .spec
        .tuning
        .convergence_bound_ms(fleet.spec.topology.diameter(), 0);
    let _ = fleet.wait_until(Duration::from_millis(bound), quiet);
}

fn sigstop_frozen_peer(ctx: &mut Ctx) -> anyhow::Result<World> {
    let topology = Topology::Star(4);
    let mut fleet = ctx.direct_fleet(FleetSpec::new(topology))?;
    fleet.start_all()?;
    let world = World::new(fleet);
    let frozen = 2;
    world.fleet.signal(frozen, Signal::STOP)?;
    let frozen_id = world.fleet.node(frozen).id.clone();
    ctx.fault("proc.sigstop", &frozen_id, "SIGSTOP before the hub sends");
    let acked = import_segments(ctx, &world, 0, "big", 1, 16 << 20)?;
    let others = [0, 1, 3];
    let served = ctx.converge(&world.fleet, &acked, &others, 1, 5_000);
    ctx.check(
        "others_served_while_a_peer_is_frozen",
        &["INV-18"],
        served,
        "the hub served the other leaves while one held its connection frozen",
    );
    // Longer than a stall window: the hub must have given up on the frozen one meanwhile.
    std::thread::sleep(Duration::from_millis(
        world.fleet.spec.tuning.stall_timeout_ms + 1_000,
    ));
    let state = std::fs::read_to_string(format!(
        "/proc/{}/stat",
        world.fleet.node(frozen).pid().unwrap_or(0)
    ))
    .unwrap_or_default();
    let was_stopped = state.split_whitespace().nth(2) == Some("T");
    world.fleet.signal(frozen, Signal::CONT)?;
    ctx.fault("proc.sigcont", &frozen_id, "SIGCONT");
    if !was_stopped {
        ctx.unknown(
            names::FAULTS_FIRED,
            &[],
            format!("{frozen_id} was not in state T while frozen"),
        );
    }
    let all: Vec<usize> = (0..world.fleet.len()).collect();
    ctx.converge(&world.fleet, &acked, &all, 1, 5_000);
    ctx.record(check::lost(&world.fleet, &acked, &all));
    Ok(world)
}

fn sigterm_storm(ctx: &mut Ctx) -> anyhow::Result<World> {
    let topology = Topology::Ring(5);
    let mut fleet = ctx.direct_fleet(FleetSpec::new(topology))?;
    fleet.start_all()?;
    let mut world = World::new(fleet);
    let acked: Vec<Acked> = import_segments(ctx, &world, 0, "storm", 10, 512 << 10)?;
    let mut unclean = Vec::new();
    for _ in 0..STOPS {
        std::thread::sleep(Duration::from_millis(ctx.rng.random_range(20..300)));
        let victim = ctx.rng.random_range(0..world.fleet.len());
        let id = world.fleet.node(victim).id.clone();
        if let Err(e) = world.fleet.stop(victim) {
            unclean.push(format!("{e:#}"));
        }
        ctx.fault("proc.sigterm", &id, "SIGTERM, then restart");
        world.fleet.start(victim)?;
    }
    ctx.check(
        "stops_cleanly_under_load",
        &["INV-14"],
        unclean.is_empty(),
        if unclean.is_empty() {
            format!("{STOPS} stops, each with status 0")
        } else {
            unclean.join("; ")
        },
    );
    let all: Vec<usize> = (0..world.fleet.len()).collect();
    ctx.converge(&world.fleet, &acked, &all, topology.diameter(), 1_000);
    ctx.record(check::lost(&world.fleet, &acked, &all));
    settle(&world.fleet);
    // No dead letter, and no job beyond its attempt bound.
    let attempts_max = u64::from(world.fleet.spec.tuning.attempts_max);
    let mut over = Vec::new();
    let mut dead = 0;
    for i in 0..world.fleet.len() {
        let v = world.fleet.try_json(i, &["segments"])?;
        for s in v.as_array().into_iter().flatten() {
            for j in s["jobs"].as_array().into_iter().flatten() {
                if j["attempts"].as_u64().unwrap_or(0) > attempts_max {
                    over.push(format!("{} → {}", world.fleet.node(i).id, j["peer"]));
                }
                if j["state"] == "dead" {
                    dead += 1;
                }
            }
        }
    }
    ctx.record(crate::results::CheckResult {
        name: "attempts_bounded_no_dead_letters".into(),
        invariants: vec!["INV-12".into(), "INV-14".into()],
        verdict: if over.is_empty() && dead == 0 {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: format!(
            "{} job(s) over {attempts_max} attempts, {dead} dead letter(s)",
            over.len()
        ),
        observed: Some(over.len() as u64 + dead),
        out_of: None,
    });
    Ok(world)
}
