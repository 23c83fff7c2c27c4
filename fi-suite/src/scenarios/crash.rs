//! Aborts at named crash points of the fault-injection build (`EDGED_CRASH_AT=name:k`): the
//! receiver on every step of its ingest and checkpoint path, the sender on every step of its
//! relay path. After each death: nothing acknowledged is missing (acks before durable = 0),
//! files and rows agree, and the fleet converges.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use super::basic::import_segments;
use crate::check::{self, Acked};
use crate::fleet::{Fleet, FleetSpec, Topology};
use crate::results::{Build, CheckResult, Verdict, check as names};
use crate::scenario::{Ctx, Scenario, World};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "crashpoints-receive",
            summary: "node-2 aborts at each named point of its ingest and checkpoint path while \
                      receiving from node-1: no acknowledgement ever precedes durability, files \
                      and rows agree after every restart, everything converges.",
            invariants: &["INV-03", "INV-04", "INV-05", "INV-25"],
            quick: true,
            faults: true,
            build: Build::Fi,
            run: crashpoints_receive,
        },
        Scenario {
            name: "crashpoints-evict",
            summary: "node-2 aborts between an eviction's commit and its file removals, and \
                      between the removals and the directory fsync: restart brings rows and \
                      files back into agreement and the ceiling holds.",
            invariants: &["INV-05", "INV-06"],
            quick: false,
            faults: true,
            build: Build::Fi,
            run: crashpoints_evict,
        },
    ]
}

/// Environment variable of the crash points (`store::crash::CRASH_AT_ENV`).
const CRASH_AT_ENV: &str = "EDGED_CRASH_AT";
/// How long a node armed at a point may take to reach it and die.
const CRASH_WAIT_MS: u64 = 15_000;
/// SIGABRT: what an armed crash point dies of.
const SIGABRT: i32 = 6;

/// The receiver's points, in path order (`store::crash::POINTS`).
const RECEIVE_POINTS: &[&str] = &[
    "ingest.stream",
    "ingest.after_write",
    "ingest.after_fsync",
    "ingest.after_rename",
    "ingest.after_dir_fsync",
    "ingest.in_commit",
    "ingest.after_commit",
    "checkpoint.after_sync",
    "checkpoint.after_commit",
];

fn armed(point: &str) -> BTreeMap<String, String> {
    [(CRASH_AT_ENV.to_owned(), format!("{point}:1"))]
        .into_iter()
        .collect()
}

/// Did node `i` die of SIGABRT within the crash wait?
fn died_at_point(fleet: &mut Fleet, i: usize) -> anyhow::Result<bool> {
    Ok(fleet
        .wait_exit(i, Duration::from_millis(CRASH_WAIT_MS))?
        .is_some_and(|s| s.signal() == Some(SIGABRT)))
}

/// How long rows and files may disagree on a running node: a segment being received right
/// now has its file renamed into `segments/` a moment before its row commits (the crash
/// analysis of `store/src/ingest.rs`), and a peer that is owed segments pushes them as soon as
/// the node is up. A disagreement left by recovery does not pass.
const ROWS_FILES_SETTLE_MS: u64 = 2_000;
/// Pause between two comparisons while they settle.
const ROWS_FILES_POLL_MS: u64 = 100;

/// Rows and files agree on node `i` (running) within [`ROWS_FILES_SETTLE_MS`].
fn rows_and_files_settle(fleet: &Fleet, i: usize) -> Result<usize, String> {
    let deadline = std::time::Instant::now() + Duration::from_millis(ROWS_FILES_SETTLE_MS);
    loop {
        match rows_and_files_agree(fleet, i) {
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(ROWS_FILES_POLL_MS))
            }
            settled => return settled,
        }
    }
}

/// Rows and files agree on node `i` (running): every listed segment has its file, every
/// `.seg` file in `segments/` is listed.
fn rows_and_files_agree(fleet: &Fleet, i: usize) -> Result<usize, String> {
    let listed: BTreeSet<String> = fleet
        .held(i)
        .map_err(|e| format!("{e:#}"))?
        .into_iter()
        .collect();
    let mut files = BTreeSet::new();
    let segs = fleet.node(i).data_dir.join("segments");
    for dir in std::fs::read_dir(&segs).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(id) = f.file_name().to_string_lossy().strip_suffix(".seg") {
                files.insert(id.to_owned());
            }
        }
    }
    if listed == files {
        Ok(listed.len())
    } else {
        Err(format!(
            "{}: {} listed without a file, {} file(s) not listed",
            fleet.node(i).id,
            listed.difference(&files).count(),
            files.difference(&listed).count()
        ))
    }
}

/// The state of node `sender`'s job for `peer` on segment `id`, from its CLI.
fn job_state(fleet: &Fleet, sender: usize, id: &str, peer: &str) -> Option<String> {
    let v = fleet.try_json(sender, &["segments"]).ok()?;
    v.as_array()?.iter().find(|s| s["id"] == id)?["jobs"]
        .as_array()?
        .iter()
        .find(|j| j["peer"] == peer)
        .and_then(|j| j["state"].as_str().map(str::to_owned))
}

fn crashpoints_receive(ctx: &mut Ctx) -> anyhow::Result<World> {
    let mut spec = FleetSpec::new(Topology::Line(2));
    // Checkpoints every MiB, so the checkpoint points are on the path of a 4 MiB segment.
    spec.node_line(1, "net", "checkpoint_bytes = 1048576");
    // node-2 pulls only when asked: each segment reaches it by node-1's push.
    spec.node_line(1, "net", "catchup_on_connect = false");
    spec.node_line(1, "net", "catchup_interval_ms = 0");
    let mut fleet = ctx.direct_fleet(spec)?;
    fleet.start(0)?;
    let mut world = World::new(fleet);
    let mut acked: Vec<Acked> = Vec::new();
    let (mut early_acks, mut checked_acks, mut disagreements) = (Vec::new(), 0u64, Vec::new());
    // Crashes at receive points: each is a chance for an acknowledgement that came before
    // durability to show.
    let mut cut = 0u64;
    for (k, point) in RECEIVE_POINTS.iter().enumerate() {
        // node-1 still owes node-2 the segments of earlier rounds and pushes them as soon as
        // node-2 is up: one of them may reach the armed point while node-2 starts. The point
        // fired all the same; this round's segment is then not imported.
        let (seg, died, when) = match world.fleet.start_or_exit(1, &armed(point))? {
            None => {
                let seg = import_segments(ctx, &world, 0, &format!("c{k}"), 1, 4 << 20)?;
                let died = died_at_point(&mut world.fleet, 1)?;
                (seg, died, "")
            }
            Some(status) if status.signal() == Some(SIGABRT) => (
                Vec::new(),
                true,
                " (while starting, on a segment still owed)",
            ),
            Some(status) => anyhow::bail!("node-2 exited at start: {status}"),
        };
        if !died {
            ctx.unknown(
                names::FAULTS_FIRED,
                &[],
                format!("node-2 did not die at {point}"),
            );
            world.fleet.kill9(1)?;
            acked.extend(seg);
            continue;
        }
        ctx.fault("proc.crash_point", "node-2", format!("{point}:1{when}"));
        // What node-1 believes now, before node-2 can be asked again, of every segment it
        // owes node-2.
        cut += 1;
        for a in acked.iter().chain(&seg) {
            if job_state(&world.fleet, 0, &a.id, "node-2").as_deref() == Some("delivered") {
                checked_acks += 1;
                let file = world.fleet.node(1).segment_file(&a.id);
                let intact = std::fs::read(&file)
                    .map(|b| *blake3::hash(&b).as_bytes() == a.file_hash)
                    .unwrap_or(false);
                if !intact {
                    early_acks.push(format!(
                        "{point}: {} acknowledged, not durable",
                        check::short(&a.id)
                    ));
                }
            }
        }
        // Recovery at the next start (unarmed for a moment to look, then the loop re-arms).
        world.fleet.start(1)?;
        if let Err(e) = rows_and_files_settle(&world.fleet, 1) {
            disagreements.push(format!("after {point}: {e}"));
        }
        world.fleet.stop(1)?;
        acked.extend(seg);
    }
    ctx.record(CheckResult {
        name: names::ACKS_BEFORE_DURABLE.into(),
        invariants: vec!["INV-03".into()],
        verdict: if early_acks.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: if early_acks.is_empty() {
            format!(
                "{cut} crash(es) at receive points: after each, every segment node-1 held as \
                 delivered to node-2 was durable there ({checked_acks} such look(s))"
            )
        } else {
            early_acks.join("; ")
        },
        observed: Some(early_acks.len() as u64),
        out_of: Some(cut),
    });
    ctx.check(
        "rows_and_files_agree_after_recovery",
        &["INV-04", "INV-05"],
        disagreements.is_empty(),
        if disagreements.is_empty() {
            format!("after {} crash(es)", RECEIVE_POINTS.len())
        } else {
            disagreements.join("; ")
        },
    );
    // Healed: node-2 runs unarmed and pulls what it lacks.
    let config = world.fleet.node(1).config.clone();
    let text = std::fs::read_to_string(&config)?
        .replace("catchup_on_connect = false", "catchup_on_connect = true")
        .replace("catchup_interval_ms = 0", "catchup_interval_ms = 1000");
    std::fs::write(&config, text)?;
    world.fleet.start(1)?;
    let all = [0, 1];
    ctx.converge(&world.fleet, &acked, &all, 1, 2_000);
    ctx.record(check::lost(&world.fleet, &acked, &all));
    Ok(world)
}

fn crashpoints_evict(ctx: &mut Ctx) -> anyhow::Result<World> {
    let seg: u64 = 1 << 20;
    let ceiling = 2 * seg + seg / 2;
    let mut spec = FleetSpec::new(Topology::Line(2));
    spec.node_line(1, "store", format!("ceiling_bytes = {ceiling}"));
    let mut fleet = ctx.direct_fleet(spec)?;
    fleet.start_all()?;
    let mut world = World::new(fleet);
    // Fill node-2: two segments, propagated there (it has no other peer), so evictable.
    let first = import_segments(ctx, &world, 0, "fill", 2, seg)?;
    ctx.converge(&world.fleet, &first, &[1], 1, 1_000);
    let mut problems = Vec::new();
    for (k, point) in ["evict.after_commit", "evict.after_remove"]
        .iter()
        .enumerate()
    {
        world.fleet.stop(1)?;
        world.fleet.start_with(1, &armed(point))?;
        let _ = import_segments(ctx, &world, 0, &format!("e{k}"), 1, seg)?;
        if !died_at_point(&mut world.fleet, 1)? {
            ctx.unknown(
                names::FAULTS_FIRED,
                &[],
                format!("node-2 did not die at {point}"),
            );
            world.fleet.kill9(1)?;
        } else {
            ctx.fault("proc.crash_point", "node-2", format!("{point}:1"));
        }
        world.fleet.start(1)?;
        if let Err(e) = rows_and_files_settle(&world.fleet, 1) {
            problems.push(format!("after {point}: {e}"));
        }
        let used = super::relay::bytes_on_disk(&world.fleet.node(1).data_dir);
        if used > ceiling {
            problems.push(format!(
                "after {point}: {used} bytes on disk, ceiling {ceiling}"
            ));
        }
    }
    ctx.check(
        "recovered_after_eviction_crashes",
        &["INV-05", "INV-06"],
        problems.is_empty(),
        if problems.is_empty() {
            "rows and files agree, within the ceiling".to_owned()
        } else {
            problems.join("; ")
        },
    );
    Ok(world)
}
