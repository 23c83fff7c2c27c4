//! Network faults through the link proxies: loss with delay and jitter, duplication with
//! reordering and corruption, symmetric and one-way partitions, two islands cut at their
//! bridge, a bandwidth cap. Every node sees its peers only through the proxies, so the capture
//! of the run also proves that no node sent a datagram anywhere else (INV-27).

use std::time::Duration;

use super::basic::import_segments;
use crate::check;
use crate::fleet::{FleetSpec, Topology};
use crate::proxy::{Dir, LinkFaults};
use crate::results::{Build, check as names};
use crate::scenario::{Ctx, Scenario, World};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "ring-loss-jitter",
            summary: "A ring of 5 behind proxies dropping 5% of datagrams with 5±5 ms of delay \
                      on every link, both ways: 4 segments still reach every node.",
            invariants: &["INV-15", "INV-18", "INV-27"],
            quick: true,
            faults: true,
            build: Build::Shipped,
            run: ring_loss_jitter,
        },
        Scenario {
            name: "mesh-dup-reorder-corrupt",
            summary: "A mesh of 4 whose links duplicate, reorder and corrupt datagrams: the \
                      damage is refused by QUIC, nothing is stored twice, everything converges.",
            invariants: &["INV-10", "INV-15", "INV-17", "INV-27"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: mesh_dup_reorder_corrupt,
        },
        Scenario {
            name: "star-partition-heal",
            summary: "A star of 5 whose hub is cut from two leaves while segments arrive: the \
                      others converge, the cut leaves get nothing, and after the heal they \
                      converge within the bound.",
            invariants: &["INV-15", "INV-27"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: star_partition_heal,
        },
        Scenario {
            name: "islands-bridge-cut",
            summary: "Two islands of 3 joined by one bridge: with the bridge cut, each island \
                      imports and converges on its own; healed, both islands hold everything.",
            invariants: &["INV-15", "INV-27"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: islands_bridge_cut,
        },
        Scenario {
            name: "one-way-partitions",
            summary: "A line of 3: first node-1→node-2 is dropped one way, then node-2→node-3 \
                      the other way; no handshake completes, attempts fail and retry without \
                      hanging, and after the heal everything converges.",
            invariants: &["INV-12", "INV-15", "INV-18", "INV-27"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: one_way_partitions,
        },
        Scenario {
            name: "bandwidth-cap",
            summary: "A line of 2 behind a 1 MiB/s link: a 6 MiB segment arrives over ~6 s \
                      without a stall cut (the rate is above the minimum), memory stays flat.",
            invariants: &["INV-15", "INV-18", "INV-20", "INV-27"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: bandwidth_cap,
        },
    ]
}

fn all(world: &World) -> Vec<usize> {
    (0..world.fleet.len()).collect()
}

/// Records whether the proxies' counters show `what` happened on any link (else UNKNOWN).
fn fired(ctx: &mut Ctx, world: &World, what: &str, count: impl Fn(&crate::proxy::DirStats) -> u64) {
    let proxies = world.proxies();
    let mut total = 0;
    for link in 0..proxies.len() {
        for dir in [Dir::AtoB, Dir::BtoA] {
            total += count(&proxies.stats(link, dir));
        }
    }
    if total == 0 {
        ctx.unknown(names::FAULTS_FIRED, &[], format!("no datagram was {what}"));
    } else {
        ctx.note(format!("{total} datagram(s) {what}"));
    }
}

fn ring_loss_jitter(ctx: &mut Ctx) -> anyhow::Result<World> {
    let topology = Topology::Ring(5);
    let mut world = ctx.proxied_fleet(FleetSpec::new(topology))?;
    world.fleet.start_all()?;
    let faults = LinkFaults {
        drop_per_mille: 50,
        delay_ms: 5,
        jitter_ms: 5,
        ..LinkFaults::default()
    };
    for (a, b) in topology.links() {
        ctx.net_fault(&world, a, b, None, faults)?;
    }
    let acked = import_segments(ctx, &world, 0, "loss", 4, 256 << 10)?;
    ctx.converge(
        &world.fleet,
        &acked,
        &all(&world),
        topology.diameter(),
        10_000,
    );
    fired(ctx, &world, "dropped", |s| s.dropped);
    ctx.heal_all(&world);
    ctx.record(check::lost(&world.fleet, &acked, &all(&world)));
    Ok(world)
}

fn mesh_dup_reorder_corrupt(ctx: &mut Ctx) -> anyhow::Result<World> {
    let topology = Topology::Mesh(4);
    let mut world = ctx.proxied_fleet(FleetSpec::new(topology))?;
    world.fleet.start_all()?;
    let faults = LinkFaults {
        duplicate_per_mille: 100,
        reorder_per_mille: 100,
        corrupt_per_mille: 30,
        ..LinkFaults::default()
    };
    for (a, b) in topology.links() {
        ctx.net_fault(&world, a, b, None, faults)?;
    }
    let acked = import_segments(ctx, &world, 0, "dup", 6, 512 << 10)?;
    ctx.converge(
        &world.fleet,
        &acked,
        &all(&world),
        topology.diameter(),
        10_000,
    );
    fired(ctx, &world, "corrupted", |s| s.corrupted);
    fired(ctx, &world, "duplicated", |s| s.duplicated);
    ctx.heal_all(&world);
    ctx.record(check::lost(&world.fleet, &acked, &all(&world)));
    Ok(world)
}

fn star_partition_heal(ctx: &mut Ctx) -> anyhow::Result<World> {
    let topology = Topology::Star(5);
    let mut world = ctx.proxied_fleet(FleetSpec::new(topology))?;
    world.fleet.start_all()?;
    let cut = LinkFaults {
        blackhole: true,
        ..LinkFaults::default()
    };
    for leaf in [3, 4] {
        ctx.net_fault(&world, 0, leaf, None, cut)?;
    }
    let acked = import_segments(ctx, &world, 0, "part", 4, 256 << 10)?;
    ctx.converge(&world.fleet, &acked, &[0, 1, 2], 1, 2_000);
    // The cut leaves get nothing while cut.
    std::thread::sleep(Duration::from_millis(1_000));
    let cut_hold: usize = [3, 4]
        .iter()
        .map(|&i| world.fleet.held(i).map(|h| h.len()).unwrap_or(0))
        .sum();
    ctx.check(
        "nothing_crosses_a_partition",
        &["INV-15"],
        cut_hold == 0,
        format!("the cut leaves hold {cut_hold} segment(s)"),
    );
    fired(ctx, &world, "blackholed", |s| s.blackholed);
    ctx.heal_all(&world);
    ctx.converge(
        &world.fleet,
        &acked,
        &all(&world),
        topology.diameter(),
        2_000,
    );
    ctx.record(check::lost(&world.fleet, &acked, &all(&world)));
    Ok(world)
}

fn islands_bridge_cut(ctx: &mut Ctx) -> anyhow::Result<World> {
    let topology = Topology::Islands(3, 3);
    let mut world = ctx.proxied_fleet(FleetSpec::new(topology))?;
    world.fleet.start_all()?;
    ctx.net_fault(
        &world,
        2,
        3,
        None,
        LinkFaults {
            blackhole: true,
            ..LinkFaults::default()
        },
    )?;
    let west = import_segments(ctx, &world, 0, "west", 3, 256 << 10)?;
    let east = import_segments(ctx, &world, 4, "east", 3, 256 << 10)?;
    let ok_w = ctx.converge(&world.fleet, &west, &[0, 1, 2], 1, 2_000);
    let ok_e = ctx.converge(&world.fleet, &east, &[3, 4, 5], 1, 2_000);
    let crossed = world
        .fleet
        .held(3)?
        .iter()
        .filter(|id| west.iter().any(|a| &a.id == *id))
        .count()
        + world
            .fleet
            .held(2)?
            .iter()
            .filter(|id| east.iter().any(|a| &a.id == *id))
            .count();
    ctx.check(
        "islands_converge_apart",
        &["INV-15"],
        ok_w && ok_e && crossed == 0,
        format!("{crossed} segment(s) crossed the cut bridge"),
    );
    fired(ctx, &world, "blackholed", |s| s.blackholed);
    ctx.heal_all(&world);
    let everything: Vec<_> = west.iter().chain(&east).cloned().collect();
    ctx.converge(
        &world.fleet,
        &everything,
        &all(&world),
        topology.diameter(),
        2_000,
    );
    ctx.record(check::lost(&world.fleet, &everything, &all(&world)));
    Ok(world)
}

fn one_way_partitions(ctx: &mut Ctx) -> anyhow::Result<World> {
    let topology = Topology::Line(3);
    let mut spec = FleetSpec::new(topology);
    spec.tuning.attempts_max = 30;
    let mut world = ctx.proxied_fleet(spec)?;
    world.fleet.start_all()?;
    // Settle the connections first; then cut one direction of each link in turn.
    std::thread::sleep(Duration::from_millis(500));
    let one_way = LinkFaults {
        blackhole: true,
        ..LinkFaults::default()
    };
    ctx.net_fault(&world, 0, 1, Some(Dir::AtoB), one_way)?;
    let first = import_segments(ctx, &world, 0, "oneway", 2, 256 << 10)?;
    // Long enough for a dead connection to be noticed and re-dials to fail.
    std::thread::sleep(Duration::from_millis(
        world.fleet.spec.tuning.idle_timeout_ms + 1_000,
    ));
    let held = world.fleet.held(1)?.len();
    ctx.check(
        "nothing_through_a_one_way_cut",
        &["INV-15"],
        held == 0,
        format!("node-2 holds {held} segment(s) with node-1→node-2 cut"),
    );
    ctx.net_fault(&world, 1, 2, Some(Dir::BtoA), one_way)?;
    ctx.net_fault(&world, 0, 1, Some(Dir::AtoB), LinkFaults::default())?;
    ctx.converge(&world.fleet, &first, &[0, 1], 1, 2_000);
    let held3 = world.fleet.held(2)?.len();
    ctx.check(
        "nothing_back_through_the_other_cut",
        &["INV-15"],
        held3 == 0,
        format!("node-3 holds {held3} segment(s) with node-3→node-2 cut"),
    );
    // Attempts kept failing without hanging: node-2's attempts to node-3 stayed under the bound.
    let status = world.fleet.try_json(1, &["status"])?;
    ctx.check(
        "no_hang_while_cut",
        &["INV-18"],
        status["jobs_pending"].as_u64().unwrap_or(0) > 0
            || status["jobs_in_flight"].as_u64().unwrap_or(0) > 0,
        format!("node-2 still owes node-3: {status}"),
    );
    fired(ctx, &world, "blackholed", |s| s.blackholed);
    ctx.heal_all(&world);
    ctx.converge(
        &world.fleet,
        &first,
        &all(&world),
        topology.diameter(),
        2_000,
    );
    ctx.record(check::lost(&world.fleet, &first, &all(&world)));
    let dead: usize = (0..3)
        .map(|i| {
            world
                .fleet
                .try_json(i, &["dlq", "list"])
                .map(|v| v.as_array().map(Vec::len).unwrap_or(0))
                .unwrap_or(0)
        })
        .sum();
    ctx.check(
        "attempts_bounded_none_dead",
        &["INV-12"],
        dead == 0,
        format!("{dead} dead letter(s) after the heal"),
    );
    Ok(world)
}

fn bandwidth_cap(ctx: &mut Ctx) -> anyhow::Result<World> {
    let topology = Topology::Line(2);
    let mut world = ctx.proxied_fleet(FleetSpec::new(topology))?;
    world.fleet.start_all()?;
    ctx.net_fault(
        &world,
        0,
        1,
        None,
        LinkFaults {
            rate_bytes_per_s: Some(1 << 20),
            ..LinkFaults::default()
        },
    )?;
    let acked = import_segments(ctx, &world, 0, "slow", 1, 6 << 20)?;
    ctx.converge(&world.fleet, &acked, &all(&world), 1, 12_000);
    fired(ctx, &world, "held back by the cap", |s| s.rate_queued);
    let stalled: f64 = (0..2)
        .filter_map(|i| world.fleet.metrics(i).ok())
        .map(|m| {
            m.get("edged_net_transfers_stalled_total")
                .copied()
                .unwrap_or(0.0)
        })
        .sum();
    ctx.check(
        "slow_but_steady_is_not_cut",
        &["INV-18"],
        stalled == 0.0,
        format!("{stalled} transfer(s) cut as stalled"),
    );
    let peaks: Vec<u64> = world
        .fleet
        .nodes
        .iter()
        .filter_map(|n| n.pid())
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let kb: u64 = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(kb * 1024)
        })
        .collect();
    let worst = peaks.iter().copied().max().unwrap_or(0);
    ctx.check(
        "memory_flat_on_a_slow_link",
        &["INV-20"],
        !peaks.is_empty() && worst <= 64 << 20,
        format!("peak RSS {peaks:?}"),
    );
    ctx.heal_all(&world);
    ctx.record(check::lost(&world.fleet, &acked, &all(&world)));
    Ok(world)
}
