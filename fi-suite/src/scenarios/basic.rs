//! The workload without faults: the reference every faulty run is compared with.

use std::path::PathBuf;

use crate::check::Acked;
use crate::fleet::{FleetSpec, Topology};
use crate::results::Build;
use crate::scenario::{Ctx, Scenario, World};

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "line-baseline",
        summary: "A line of 4 nodes, 6 segments imported on node-1: every node holds every \
                  segment byte-identical, counters reconcile, nothing stored twice.",
        invariants: &["INV-10", "INV-11", "INV-13", "INV-15", "INV-26"],
        quick: true,
        faults: false,
        build: Build::Shipped,
        run: line_baseline,
    }]
}

/// Makes `count` segments of `len` bytes (named `{prefix}-{k}`) in the fleet's stick directory
/// `stick-{prefix}`: the directory and each (file, id).
pub fn make_stick(
    world: &World,
    prefix: &str,
    count: usize,
    len: u64,
) -> anyhow::Result<(PathBuf, Vec<(PathBuf, String)>)> {
    let fleet = &world.fleet;
    let stick = fleet.dir.join(format!("stick-{prefix}"));
    let mut files = Vec::new();
    for k in 0..count {
        files.push(fleet.make_segment(&format!("{prefix}-{k}"), len, &stick, &[])?);
    }
    Ok((stick, files))
}

/// What an `edged import --json` answer acknowledged, among `files`.
pub fn acked_by_import(
    answer: &serde_json::Value,
    files: &[(PathBuf, String)],
    by: &str,
) -> anyhow::Result<Vec<Acked>> {
    let mut acked = Vec::new();
    for line in answer.as_array().into_iter().flatten() {
        if matches!(
            line["status"].as_str(),
            Some("imported" | "already_present")
        ) {
            let id = line["id"].as_str().unwrap_or_default();
            if let Some((file, _)) = files.iter().find(|(_, fid)| fid == id) {
                acked.push(Acked::of_file(id, file, by)?);
            }
        }
    }
    Ok(acked)
}

/// Makes `count` segments of `len` bytes and imports them on node `at`; returns what the
/// import acknowledged.
pub fn import_segments(
    ctx: &mut Ctx,
    world: &World,
    at: usize,
    prefix: &str,
    count: usize,
    len: u64,
) -> anyhow::Result<Vec<Acked>> {
    let fleet = &world.fleet;
    let (stick, files) = make_stick(world, prefix, count, len)?;
    let v = fleet.try_json(at, &["import", &stick.to_string_lossy()])?;
    let acked = acked_by_import(&v, &files, &format!("import on {}", fleet.node(at).id))?;
    ctx.note(format!(
        "{} of {count} segment(s) acknowledged by the import on {}",
        acked.len(),
        fleet.node(at).id
    ));
    Ok(acked)
}

fn line_baseline(ctx: &mut Ctx) -> anyhow::Result<World> {
    let topology = Topology::Line(4);
    let mut fleet = ctx.direct_fleet(FleetSpec::new(topology))?;
    fleet.start_all()?;
    let world = World::new(fleet);
    let acked = import_segments(ctx, &world, 0, "base", 6, 256 << 10)?;
    ctx.check(
        "workload_ran",
        &[],
        acked.len() == 6,
        format!("{} of 6 imported", acked.len()),
    );
    let all: Vec<usize> = (0..world.fleet.len()).collect();
    ctx.converge(&world.fleet, &acked, &all, topology.diameter(), 1_000);
    ctx.record(crate::check::lost(&world.fleet, &acked, &all));
    super::process::settle(&world.fleet);
    for c in crate::check::jobs_and_propagation(&world.fleet) {
        ctx.record(c);
    }
    Ok(world)
}
