//! Identity and partial transfers: a node whose certificate does not chain to the fleet CA is
//! refused in both directions; a transfer cut by `kill -9` leaves a partial that is never
//! visible and resumes from its checkpoint; `one_peer` segments are marked once one peer has
//! them and still reach everyone.

use std::time::Duration;

use super::basic::import_segments;
use crate::check;
use crate::fleet::{FleetSpec, Topology};
use crate::results::Build;
use crate::scenario::{Ctx, Scenario, World};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "impostor-certificate",
            summary: "node-2 presents a certificate of another CA under its own id: the \
                      handshake fails both ways and nothing is relayed; with its real \
                      certificate back it converges.",
            invariants: &["INV-09", "INV-15"],
            quick: true,
            faults: true,
            build: Build::Shipped,
            run: impostor_certificate,
        },
        Scenario {
            name: "partial-resume",
            summary: "node-2 is killed while receiving a 256 MiB segment: its partial is never \
                      listed, exported or counted as stored, and the transfer resumes from the \
                      checkpoint after the restart.",
            invariants: &["INV-04", "INV-05", "INV-18"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: partial_resume,
        },
        Scenario {
            name: "one-peer-star",
            summary: "A star of 5: `one_peer` segments imported on the hub are marked propagated \
                      once one leaf has them, the hub's other jobs are cancelled, and every leaf \
                      still gets them through catch-up.",
            invariants: &["INV-13", "INV-15"],
            quick: false,
            faults: false,
            build: Build::Shipped,
            run: one_peer_star,
        },
    ]
}

fn impostor_certificate(ctx: &mut Ctx) -> anyhow::Result<World> {
    let mut fleet = ctx.direct_fleet(FleetSpec::new(Topology::Line(2)))?;
    let node2 = fleet.node(1).dir.clone();
    let real = (
        std::fs::read(node2.join("node-2.crt"))?,
        std::fs::read(node2.join("node-2.key"))?,
    );
    // A second CA issues node-2 a certificate with the right name.
    let other = fleet.dir.join("other-ca");
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = crate::proc::run_bounded(
            {
                let mut c = std::process::Command::new(&fleet.bin);
                c.args(args);
                c
            },
            Duration::from_secs(30),
        )?;
        anyhow::ensure!(
            out.status.success(),
            "edged {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run(&["ca", "init", "--out", &other.to_string_lossy()])?;
    let impostor = fleet.dir.join("impostor");
    run(&[
        "ca",
        "issue",
        "--ca",
        &other.to_string_lossy(),
        "--node",
        "node-2",
        "--out",
        &impostor.to_string_lossy(),
    ])?;
    std::fs::copy(impostor.join("node-2.crt"), node2.join("node-2.crt"))?;
    std::fs::copy(impostor.join("node-2.key"), node2.join("node-2.key"))?;
    // It trusts its own CA (a node checks its certificate against its CA at start).
    let config = fleet.node(1).config.clone();
    let real_config = std::fs::read_to_string(&config)?;
    let other_ca = other.join("ca.crt");
    std::fs::write(
        &config,
        real_config.replace(
            "ca_cert = \"../ca/ca.crt\"",
            &format!("ca_cert = \"{}\"", other_ca.display()),
        ),
    )?;
    fleet.start_all()?;
    ctx.fault(
        "tls.other_ca",
        "node-2",
        "certificate of another CA under the id node-2",
    );
    let mut world = World::new(fleet);
    let acked = import_segments(ctx, &world, 0, "imp", 2, 128 << 10)?;
    std::thread::sleep(Duration::from_millis(
        2 * world.fleet.spec.tuning.handshake_timeout_ms,
    ));
    let held = world.fleet.held(1)?;
    let peers = world.fleet.try_json(0, &["peers"])?;
    let p = &peers[0];
    let refused = p["connected"] == false
        && p["last_failure"]
            .as_str()
            .is_some_and(|f| f.contains("not signed by this fleet's CA"));
    ctx.check(
        "impostor_refused_nothing_relayed",
        &["INV-09"],
        held.is_empty() && refused,
        format!("node-2 holds {}; node-1 sees node-2: {p}", held.len()),
    );
    // Heal: the real certificate back.
    world.fleet.stop(1)?;
    std::fs::write(node2.join("node-2.crt"), &real.0)?;
    std::fs::write(node2.join("node-2.key"), &real.1)?;
    std::fs::write(&config, &real_config)?;
    world.fleet.start(1)?;
    let all = [0, 1];
    ctx.converge(&world.fleet, &acked, &all, 1, 1_000);
    ctx.record(check::lost(&world.fleet, &acked, &all));
    Ok(world)
}

fn partial_resume(ctx: &mut Ctx) -> anyhow::Result<World> {
    let mut spec = FleetSpec::new(Topology::Line(2));
    spec.node_line(1, "net", "checkpoint_bytes = 4194304");
    let mut fleet = ctx.direct_fleet(spec)?;
    fleet.start(0)?;
    let world = World::new(fleet);
    // Made while node-2 is down, then node-2 starts and the transfer begins.
    let acked = import_segments(ctx, &world, 0, "part", 1, 256 << 20)?;
    let mut world = world;
    world.fleet.start(1)?;
    let tmp = world.fleet.node(1).data_dir.join("tmp");
    let part_len = |dir: &std::path::Path| -> u64 {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0)
    };
    let mid = world
        .fleet
        .wait_until(Duration::from_secs(20), |_| part_len(&tmp) >= 24 << 20);
    if mid.is_none() {
        ctx.unknown(
            "faults_fired",
            &[],
            "the transfer was never caught in the middle",
        );
        return Ok(world);
    }
    world.fleet.kill9(1)?;
    let kept = part_len(&tmp);
    ctx.fault(
        "proc.kill9",
        "node-2",
        format!("SIGKILL with {kept} bytes of the segment in tmp/"),
    );
    // Restart; node-1's link to it stays up, so look at once.
    world.fleet.start(1)?;
    let listed = world.fleet.held(1)?;
    let usb = world.fleet.dir.join("usb-out");
    std::fs::create_dir_all(&usb)?;
    let _ = world
        .fleet
        .cli(1, &["export", "--to", &usb.to_string_lossy(), "--all"])?;
    let exported = std::fs::read_dir(&usb)?.count();
    let m = world.fleet.metrics(1)?;
    let stored = m.get("edged_store_segments").copied().unwrap_or(-1.0);
    ctx.check(
        "partial_never_visible",
        &["INV-04"],
        listed.is_empty() && exported == 0 && stored == 0.0,
        format!("right after the restart: listed {}, exported {exported}, edged_store_segments {stored}", listed.len()),
    );
    let all = [0, 1];
    ctx.converge(&world.fleet, &acked, &all, 1, 10_000);
    ctx.record(check::lost(&world.fleet, &acked, &all));
    let resumed = world
        .fleet
        .metrics(0)?
        .get("edged_net_transfers_resumed_total")
        .copied()
        .unwrap_or(0.0);
    ctx.check(
        "resumed_from_the_checkpoint",
        &["INV-05", "INV-18"],
        resumed >= 1.0,
        format!("node-1 sent from an offset above 0 {resumed} time(s)"),
    );
    Ok(world)
}

fn one_peer_star(ctx: &mut Ctx) -> anyhow::Result<World> {
    let topology = Topology::Star(5);
    let mut fleet = ctx.direct_fleet(FleetSpec::new(topology))?;
    fleet.start_all()?;
    let world = World::new(fleet);
    let stick = world.fleet.dir.join("stick-one");
    let mut files = Vec::new();
    for k in 0..3 {
        files.push(world.fleet.make_segment(
            &format!("one-{k}"),
            256 << 10,
            &stick,
            &["--condition", "one_peer"],
        )?);
    }
    let v = world
        .fleet
        .try_json(0, &["import", &stick.to_string_lossy()])?;
    let acked = super::basic::acked_by_import(&v, &files, "import on node-1")?;
    ctx.check(
        "workload_ran",
        &[],
        acked.len() == 3,
        format!("{} of 3 imported", acked.len()),
    );
    let all: Vec<usize> = (0..world.fleet.len()).collect();
    ctx.converge(&world.fleet, &acked, &all, topology.diameter(), 1_000);
    ctx.record(check::lost(&world.fleet, &acked, &all));
    super::process::settle(&world.fleet);
    // On the hub: each segment marked, one job delivered and the others cancelled (or later
    // completed by a leaf's pull).
    let segs = world.fleet.try_json(0, &["segments"])?;
    let mut bad = Vec::new();
    for s in segs.as_array().into_iter().flatten() {
        let states: Vec<&str> = s["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j["state"].as_str())
            .collect();
        let delivered = states.iter().filter(|s| **s == "delivered").count();
        let pending = states
            .iter()
            .filter(|s| matches!(**s, "pending" | "dead"))
            .count();
        if s["propagated_at_ms"].is_null() || delivered == 0 || pending > 0 {
            bad.push(format!(
                "{}: {states:?}",
                check::short(s["id"].as_str().unwrap_or_default())
            ));
        }
    }
    ctx.check(
        "one_peer_marked_once_one_peer_has_it",
        &["INV-13"],
        bad.is_empty(),
        if bad.is_empty() {
            "3 segment(s) marked, nothing left pending".to_owned()
        } else {
            bad.join("; ")
        },
    );
    for c in check::jobs_and_propagation(&world.fleet) {
        ctx.record(c);
    }
    Ok(world)
}
