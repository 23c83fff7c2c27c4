//! Clock faults: a node whose wall clock is hours behind, and a node whose wall clock jumps by
//! days while it runs. libfaketime (the distribution's `libfaketime.so.1`, preloaded) moves the
//! wall clock of one daemon only; its monotonic clock stays true, as with a real clock error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::check::{self, Acked};
use crate::fleet::{self, Fleet, FleetSpec, Topology};
use crate::host;
use crate::look;
use crate::proc;
use crate::results::{Build, check as names};
use crate::scenario::{Ctx, Scenario, World};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "clock-skew-hours",
            summary: "A leaf whose wall clock is 3 hours behind refuses segments created in its \
                      future beyond its clock_skew_max_s as created_in_future (counted, its \
                      import says so) and accepts those within it; everything else converges, \
                      also what the slow host publishes itself.",
            invariants: &["INV-15", "INV-16"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: clock_skew_hours,
        },
        Scenario {
            name: "clock-jump-forward",
            summary: "A relay's wall clock jumps 2 days ahead while it owes segments to a peer \
                      that is down: the jump is logged and shown by `edged status`, segments \
                      with a short expiry are swept and never relayed; the clock is set back, \
                      due times are clamped again (no job frozen for days), attempts survive a \
                      restart, and the rest is delivered.",
            invariants: &["INV-14", "INV-15", "INV-16"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: clock_jump_forward,
        },
    ]
}

/// `FAKETIME` of the skewed node: its wall clock is 3 hours behind.
const SKEW_OFFSET: &str = "-3h";
/// The skew, in seconds.
const SKEW_S: i64 = 3 * 3600;
/// `clock_skew_max_s` of the skewed node.
const SKEW_ALLOWED_S: u64 = 600;
/// How far `status`'s certificate lifetimes of the skewed and a true node may differ from the
/// skew: the two certificates are issued a moment apart, and the calls are too.
const SKEW_TOLERANCE_S: i64 = 120;
/// `FAKETIME` under which the fleet's certificates are issued: before the skewed node's
/// "now", so that no node finds a certificate not yet valid.
const PKI_OFFSET: &str = "-4h";
/// `FAKETIME` of a segment created in everyone's past.
const PAST_OFFSET: &str = "-4h";
/// `FAKETIME` of a segment created 5 minutes in the skewed node's future: within its allowance.
const NEAR_FUTURE_OFFSET: &str = "-175m";
/// `FAKETIME` of a segment created 15 minutes in the skewed node's future: beyond it.
const FAR_FUTURE_OFFSET: &str = "-165m";
/// Segments created in everyone's past (the others of `clock-skew-hours` are one each: near
/// future, far future, now, and the slow host's own).
const PAST_SEGMENTS: usize = 2;
/// Segments of each kind (short-lived, long-lived) in `clock-jump-forward`.
const JUMP_EACH: usize = 2;
/// Payload of the clock scenarios' segments.
const CLOCK_PAYLOAD_BYTES: u64 = 128 << 10;
/// Time allowed for the bytes of a clock workload to move, per hop.
const CLOCK_TRANSFER_MS: u64 = 1_000;

/// Runs `edged ARGS` of the fleet's binary with `env`, bounded.
fn run_edged(
    fleet: &Fleet,
    args: &[&str],
    env: &BTreeMap<String, String>,
) -> anyhow::Result<String> {
    let mut cmd = Command::new(&fleet.bin);
    cmd.args(args)
        .env_remove("EDGED_CONFIG")
        .env_remove("EDGED_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = proc::run_bounded(cmd, Duration::from_millis(fleet::CLI_TIMEOUT_MS))?;
    if !out.status.success() {
        anyhow::bail!(
            "edged {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Issues the fleet's CA and node certificates again, with the clock of `env` (the files are
/// replaced; the configs name the same paths).
fn reissue_pki(fleet: &Fleet, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let ca = fleet.dir.join("ca");
    std::fs::remove_dir_all(&ca)?;
    run_edged(fleet, &["ca", "init", "--out", &ca.to_string_lossy()], env)?;
    for node in &fleet.nodes {
        for ext in ["crt", "key"] {
            std::fs::remove_file(node.dir.join(format!("{}.{ext}", node.id)))?;
        }
        run_edged(
            fleet,
            &[
                "ca",
                "issue",
                "--ca",
                &ca.to_string_lossy(),
                "--node",
                &node.id,
                "--out",
                &node.dir.to_string_lossy(),
            ],
            env,
        )?;
    }
    Ok(())
}

/// Signs `len` bytes into `dir/<name>.seg` with the fleet's publisher key, on a clock moved by
/// `offset` (libfaketime's syntax; `None`: the true clock). The file and its id.
fn make_segment_at(
    fleet: &Fleet,
    lib: &Path,
    name: &str,
    dir: &Path,
    offset: Option<&str>,
    extra: &[&str],
) -> anyhow::Result<(PathBuf, String)> {
    std::fs::create_dir_all(dir)?;
    let payloads = fleet.dir.join("payloads");
    std::fs::create_dir_all(&payloads)?;
    let input = payloads.join(format!("{name}.bin"));
    fleet::write_payload(&input, CLOCK_PAYLOAD_BYTES, name)?;
    let out_file = dir.join(format!("{name}.seg"));
    let env = offset
        .map(|o| host::faketime_offset_env(lib, o))
        .unwrap_or_default();
    let (key, input_s, out_s) = (
        fleet.publisher_key.to_string_lossy().into_owned(),
        input.to_string_lossy().into_owned(),
        out_file.to_string_lossy().into_owned(),
    );
    let mut args = vec![
        "segment",
        "create",
        "--key",
        &key,
        "--name",
        name,
        "--channel",
        "fi",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[&input_s, "--out", &out_s]);
    let id = run_edged(fleet, &args, &env)?;
    std::fs::remove_file(&input)?;
    Ok((out_file, id))
}

/// `status --json`'s `cert_expires_in_s` of node `i`: its certificate's end as its own clock
/// sees it.
fn cert_left_s(fleet: &Fleet, i: usize) -> anyhow::Result<i64> {
    fleet.try_json(i, &["status"])?["cert_expires_in_s"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("{}: no cert_expires_in_s in status", fleet.node(i).id))
}

fn acked_files(files: &[(PathBuf, String)], by: &str) -> anyhow::Result<Vec<Acked>> {
    files
        .iter()
        .map(|(f, id)| Acked::of_file(id, f, by))
        .collect()
}

fn clock_skew_hours(ctx: &mut Ctx) -> anyhow::Result<World> {
    const HUB: usize = 0;
    const TRUE_LEAF: usize = 1;
    const SKEWED: usize = 2;
    let lib = host::require_faketime()?;
    let topology = Topology::Star(3);
    let mut spec = FleetSpec::new(topology);
    spec.node_env
        .insert(SKEWED, host::faketime_offset_env(&lib, SKEW_OFFSET));
    spec.node_line(SKEWED, "", format!("clock_skew_max_s = {SKEW_ALLOWED_S}"));
    let mut fleet = ctx.direct_fleet(spec)?;
    // Certificates valid from before the slow clock's "now": a clock error must not look like
    // a certificate problem here.
    reissue_pki(&fleet, &host::faketime_offset_env(&lib, PKI_OFFSET))?;

    let stick = fleet.dir.join("stick-skew");
    let past: Vec<(PathBuf, String)> = (0..PAST_SEGMENTS)
        .map(|k| {
            make_segment_at(
                &fleet,
                &lib,
                &format!("past-{k}"),
                &stick,
                Some(PAST_OFFSET),
                &[],
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let near = make_segment_at(
        &fleet,
        &lib,
        "near-future",
        &stick,
        Some(NEAR_FUTURE_OFFSET),
        &[],
    )?;
    let far = make_segment_at(
        &fleet,
        &lib,
        "far-future",
        &stick,
        Some(FAR_FUTURE_OFFSET),
        &[],
    )?;
    let now = make_segment_at(&fleet, &lib, "now", &stick, None, &[])?;
    let own_stick = fleet.dir.join("stick-own");
    let own = make_segment_at(
        &fleet,
        &lib,
        "slow-host",
        &own_stick,
        Some(SKEW_OFFSET),
        &[],
    )?;
    let future_stick = fleet.dir.join("stick-future");
    std::fs::create_dir_all(&future_stick)?;
    for (f, _) in [&far, &now] {
        std::fs::copy(f, future_stick.join(f.file_name().unwrap_or_default()))?;
    }

    fleet.start_all()?;
    let world = World::new(fleet);
    let fleet = &world.fleet;
    // The skew took: the slow node sees its certificate 3 hours further from its end.
    let skew = cert_left_s(fleet, SKEWED)? - cert_left_s(fleet, TRUE_LEAF)?;
    let skewed_id = fleet.node(SKEWED).id.clone();
    if (skew - SKEW_S).abs() <= SKEW_TOLERANCE_S {
        ctx.fault(
            "clock.skew",
            &skewed_id,
            format!("wall clock {SKEW_OFFSET} (libfaketime): it sees {skew} s more of its certificate's life than a true node"),
        );
    } else {
        ctx.unknown(
            names::FAULTS_FIRED,
            &["INV-16"],
            format!(
                "the skew did not take: certificate lifetimes differ by {skew} s, not {SKEW_S}"
            ),
        );
    }

    let hub_id = fleet.node(HUB).id.clone();
    let run = look::import(fleet, HUB, &stick)?;
    let run_own = look::import(fleet, SKEWED, &own_stick)?;
    let imported = run.acknowledged().len() + run_own.acknowledged().len();
    ctx.check(
        "workload_ran",
        &[],
        imported == PAST_SEGMENTS + 4,
        format!("{imported} of {} imported", PAST_SEGMENTS + 4),
    );
    let mut everywhere = acked_files(&past, &format!("import on {hub_id}"))?;
    everywhere.extend(acked_files(
        std::slice::from_ref(&near),
        &format!("import on {hub_id}"),
    )?);
    everywhere.extend(acked_files(
        std::slice::from_ref(&own),
        &format!("import on {skewed_id}"),
    )?);
    let future = acked_files(&[far.clone(), now.clone()], &format!("import on {hub_id}"))?;

    let all = [HUB, TRUE_LEAF, SKEWED];
    ctx.converge(
        fleet,
        &everywhere,
        &all,
        topology.diameter(),
        CLOCK_TRANSFER_MS,
    );
    ctx.record(check::lost(fleet, &everywhere, &all));
    let bound = fleet
        .spec
        .tuning
        .convergence_bound_ms(topology.diameter(), CLOCK_TRANSFER_MS);
    let elsewhere = check::converge(
        fleet,
        &future,
        &[HUB, TRUE_LEAF],
        Duration::from_millis(bound),
    );
    ctx.check(
        "future_held_by_true_clocks",
        &["INV-15"],
        elsewhere.is_some(),
        format!(
            "the nodes with true clocks hold the 2 segments the slow one refuses: {}",
            elsewhere.is_some()
        ),
    );
    let listed = look::listed(fleet, SKEWED)?;
    let near_held = listed.contains(&near.1);
    ctx.check(
        "within_skew_accepted",
        &["INV-16"],
        near_held,
        format!(
            "a segment created 5 min in the slow node's future (allowance {SKEW_ALLOWED_S} s) \
             held: {near_held}"
        ),
    );

    // The slow node's own import of the future copies says why.
    let run_future = look::import(fleet, SKEWED, &future_stick)?;
    let said = [&far, &now].iter().all(|(f, _)| {
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        run_future.line(&name).is_some_and(|l| {
            l.status == "rejected"
                && l.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("in the future"))
        })
    });
    ctx.check(
        "import_refuses_future",
        &["INV-16"],
        said && run_future.code == Some(1),
        format!(
            "the slow node's import of the 2 future copies: exit code {:?}, both refused as \
             created in the future: {said}",
            run_future.code
        ),
    );

    // Let it try again at least once (a retry and a catch-up round) before judging.
    std::thread::sleep(Duration::from_millis(
        fleet
            .spec
            .tuning
            .catchup_interval_ms
            .max(fleet.spec.tuning.backoff_max_ms),
    ));
    let listed = look::listed(fleet, SKEWED)?;
    let held_future: Vec<&str> = future
        .iter()
        .filter(|a| listed.contains(&a.id) || fleet.node(SKEWED).segment_file(&a.id).exists())
        .map(|a| check::short(&a.id))
        .collect();
    let counted = look::rejected(fleet, SKEWED, "created_in_future")?;
    let jobs = look::jobs_to(fleet, HUB, &skewed_id)?;
    let why: Vec<String> = future
        .iter()
        .filter_map(|a| jobs.get(&a.id))
        .filter(|j| {
            j.state == "delivered"
                || !j
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("created_in_future"))
        })
        .map(|j| format!("{} {:?}", j.state, j.last_error))
        .collect();
    // Each future segment was refused at least twice: by the slow node's own import, and at
    // the hub's first offer (its retries and catch-up pulls add more).
    let refusals_min = (2 * future.len()) as f64;
    ctx.check(
        "future_refused_created_in_future",
        &["INV-16"],
        held_future.is_empty() && counted >= refusals_min && why.is_empty(),
        format!(
            "the slow node holds {held_future:?} of the 2 future segments; it counted {counted} \
             created_in_future refusals (its import's and the hub's offers); the hub's jobs for \
             them not ended by created_in_future: {why:?}"
        ),
    );
    Ok(world)
}

/// Relay wake interval of the jumping node: it notices a jump within this.
const JUMP_WAKE_MS: u64 = 1_000;
/// Attempts of a job in `clock-jump-forward`: its jobs must still be pending (not dead
/// letters) after the jump and a housekeeping tick with a peer down. At most the default
/// `store_full_attempts_max` (48).
const JUMP_ATTEMPTS_MAX: u32 = 40;
/// The jumping node's housekeeping period (`housekeeping_interval_ms`; default a minute): the
/// sweep of expired segments and the jump shown by `status` come at its ticks.
const HOUSEKEEPING_MS: u64 = 5_000;
/// Longest wait past a housekeeping tick for its effects.
const HOUSEKEEPING_SLACK_MS: u64 = 10_000;
/// Longest wait for the jumping node to log a jump.
const JUMP_SEEN_MS: u64 = 5_000;
/// The jump.
const JUMP_OFFSET: &str = "+2d";
/// What the relay logs when it sees a jump.
const JUMP_LOG: &str = "wall clock jumped; freshness checks and due times follow the new time";
/// Lifetime of the short segments: they expire inside the jump.
const SHORT_EXPIRY: &str = "1h";
/// Slack on "due no later than now + backoff_max_ms": the daemon's and this clock's moments.
const DUE_SLACK_MS: u64 = 2_000;

/// Wall-clock ms now (the suite's true clock).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Waits until every pending job of node `at` towards `peer` is due within
/// `[now - slack, now + backoff_max_ms + slack]` of the true clock, at most the time an attempt
/// in flight takes to end (a job in flight shows the due time it started at, until its
/// outcome sets the next): the jobs still due outside it at the end, and how many were seen.
fn wait_clamped(fleet: &Fleet, at: usize, peer: &str) -> anyhow::Result<(Vec<String>, usize)> {
    let t = &fleet.spec.tuning;
    let limit = Duration::from_millis(t.handshake_timeout_ms + t.backoff_max_ms + DUE_SLACK_MS);
    let started = Instant::now();
    loop {
        let (bad, seen) = unclamped_jobs(fleet, at, peer)?;
        if bad.is_empty() || started.elapsed() >= limit {
            return Ok((bad, seen));
        }
        look::pause();
    }
}

/// How far the jump moves the clock, in ms ([`JUMP_OFFSET`]).
const JUMP_MS: u64 = 2 * 86_400_000;
/// A job counts as waiting when its next attempt is at least this far off.
const WAITING_MARGIN_MS: u64 = 500;
/// Longest wait for a moment at which a job waits rather than runs.
const WAITING_WAIT_MS: u64 = 15_000;

/// Waits for a moment at which a pending job of node `at` (whose clock is [`JUMP_MS`] ahead)
/// towards `peer` waits for its next attempt, at least [`WAITING_MARGIN_MS`] off: its id.
fn wait_for_waiting_job(fleet: &Fleet, at: usize, peer: &str) -> anyhow::Result<Option<String>> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(WAITING_WAIT_MS) {
        let jobs = look::jobs_to(fleet, at, peer)?;
        let far_now = wall_ms() + JUMP_MS;
        let waiting = jobs.iter().find(|(_, j)| {
            j.state == "pending"
                && j.next_due_ms
                    .is_some_and(|d| d > far_now + WAITING_MARGIN_MS)
        });
        if let Some((id, _)) = waiting {
            return Ok(Some(id.clone()));
        }
        look::pause();
    }
    Ok(None)
}

/// Pending jobs of node `at` towards `peer` whose due time is not within
/// `[now - slack, now + backoff_max_ms + slack]` of the true clock; and how many were looked at.
fn unclamped_jobs(fleet: &Fleet, at: usize, peer: &str) -> anyhow::Result<(Vec<String>, usize)> {
    let v = fleet.try_json(at, &["segments"])?;
    let max = fleet.spec.tuning.backoff_max_ms;
    let now = wall_ms();
    let mut bad = Vec::new();
    let mut seen = 0;
    for s in v.as_array().into_iter().flatten() {
        for j in s["jobs"].as_array().into_iter().flatten() {
            if j["peer"] != peer || j["state"] != "pending" {
                continue;
            }
            seen += 1;
            let due = j["next_due_ms"].as_u64().unwrap_or(0);
            if due > now + max + DUE_SLACK_MS || due + DUE_SLACK_MS + max < now {
                bad.push(format!(
                    "{} due in {} ms",
                    check::short(s["id"].as_str().unwrap_or_default()),
                    due as i64 - now as i64
                ));
            }
        }
    }
    Ok((bad, seen))
}

fn clock_jump_forward(ctx: &mut Ctx) -> anyhow::Result<World> {
    // The jumper is the hub: the source, a peer that is down, and one that comes right after
    // the jump are its leaves.
    const JUMPER: usize = 0;
    const SOURCE: usize = 1;
    const DOWN: usize = 2;
    const LATE: usize = 3;
    let lib = host::require_faketime()?;
    let topology = Topology::Star(4);
    let mut spec = FleetSpec::new(topology);
    spec.tuning.attempts_max = JUMP_ATTEMPTS_MAX;
    spec.node_line(
        JUMPER,
        "relay",
        format!("wake_interval_max_ms = {JUMP_WAKE_MS}"),
    );
    spec.node_line(
        JUMPER,
        "",
        format!("housekeeping_interval_ms = {HOUSEKEEPING_MS}"),
    );
    let mut fleet = ctx.direct_fleet(spec)?;
    let clock_file = fleet.dir.join("jumper.faketime");
    std::fs::write(&clock_file, "+0\n")?;
    fleet.nodes[JUMPER].env = host::faketime_file_env(&lib, &clock_file);
    let stick = fleet.dir.join("stick-jump");
    let mut short = Vec::new();
    let mut long = Vec::new();
    for k in 0..JUMP_EACH {
        short.push(fleet.make_segment(
            &format!("short-{k}"),
            CLOCK_PAYLOAD_BYTES,
            &stick,
            &["--expires", SHORT_EXPIRY],
        )?);
        long.push(fleet.make_segment(&format!("long-{k}"), CLOCK_PAYLOAD_BYTES, &stick, &[])?);
    }
    fleet.start(JUMPER)?;
    fleet.start(SOURCE)?;
    let mut world = World::new(fleet);
    let jumper_id = world.fleet.node(JUMPER).id.clone();
    let down_id = world.fleet.node(DOWN).id.clone();

    let run = look::import(&world.fleet, SOURCE, &stick)?;
    let by = format!("import on {}", world.fleet.node(SOURCE).id);
    let short_acked = acked_files(&short, &by)?;
    let long_acked = acked_files(&long, &by)?;
    let mut both_kinds = short_acked.clone();
    both_kinds.extend(long_acked.iter().cloned());
    ctx.check(
        "workload_ran",
        &[],
        run.acknowledged().len() == 2 * JUMP_EACH,
        format!("{} of {} imported", run.acknowledged().len(), 2 * JUMP_EACH),
    );
    let bound = world
        .fleet
        .spec
        .tuning
        .convergence_bound_ms(1, CLOCK_TRANSFER_MS);
    if check::converge(
        &world.fleet,
        &both_kinds,
        &[SOURCE, JUMPER],
        Duration::from_millis(bound),
    )
    .is_none()
    {
        anyhow::bail!(
            "the jumper never held the workload:\n{}",
            world.fleet.log_tails(5)
        );
    }

    // The jump, while the jumper owes all four to a peer that is down.
    std::fs::write(&clock_file, format!("{JUMP_OFFSET}\n"))?;
    let jumped = Instant::now();
    let seen = look::wait(&world.fleet, Duration::from_millis(JUMP_SEEN_MS), |f| {
        !look::log_lines(f, JUMPER, JUMP_LOG).is_empty()
    });
    if seen {
        ctx.fault("clock.jump", &jumper_id, format!("wall clock {JUMP_OFFSET} while running (libfaketime timestamp file); the relay logged it"));
        // A peer that comes now asks for what it lacks while the expired ones are still stored.
        world.fleet.start(LATE)?;
    } else {
        ctx.unknown(
            names::FAULTS_FIRED,
            &["INV-16"],
            format!("the jumper did not log a jump within {JUMP_SEEN_MS} ms"),
        );
    }

    // The next housekeeping tick sweeps what expired and shows the jump.
    let tick = Duration::from_millis(HOUSEKEEPING_MS + HOUSEKEEPING_SLACK_MS);
    let left = tick.saturating_sub(jumped.elapsed());
    let reported = look::wait(&world.fleet, left, |f| {
        f.try_json(JUMPER, &["status"]).is_ok_and(|v| {
            v["warnings"].as_array().into_iter().flatten().any(|w| {
                w.as_str()
                    .is_some_and(|w| w.starts_with("wall clock jumped by"))
            })
        })
    });
    ctx.check(
        "jump_shown_by_status",
        &[],
        reported,
        if reported {
            "`edged status` warns of the wall clock jump".to_owned()
        } else {
            format!(
                "no jump warning in `edged status` within {} ms of the jump",
                tick.as_millis()
            )
        },
    );
    let swept = look::wait(
        &world.fleet,
        Duration::from_millis(HOUSEKEEPING_SLACK_MS),
        |f| look::listed(f, JUMPER).is_ok_and(|l| short_acked.iter().all(|a| !l.contains(&a.id))),
    );
    let files_gone = short_acked
        .iter()
        .all(|a| !world.fleet.node(JUMPER).segment_file(&a.id).exists());
    let long_kept = look::listed(&world.fleet, JUMPER)
        .is_ok_and(|l| long_acked.iter().all(|a| l.contains(&a.id)));
    ctx.check(
        "expired_swept",
        &["INV-16"],
        swept && files_gone && long_kept,
        format!(
            "after the jump the jumper lists the short-lived segments: {}, their files remain: \
             {}, the others kept: {long_kept}",
            !swept, !files_gone
        ),
    );

    // The clock is set right again while a job waits with a due time stored on the far side
    // (not one in flight: its outcome sets a new due time anyway). It must be clamped back.
    let waiting = wait_for_waiting_job(&world.fleet, JUMPER, &down_id)?;
    std::fs::write(&clock_file, "+0\n")?;
    let back = look::wait(&world.fleet, Duration::from_millis(JUMP_SEEN_MS), |f| {
        look::log_lines(f, JUMPER, JUMP_LOG).len() >= 2
    });
    if back {
        ctx.fault(
            "clock.jump",
            &jumper_id,
            format!("wall clock set back from {JUMP_OFFSET} to true while running"),
        );
    }
    let (bad, seen_jobs) = wait_clamped(&world.fleet, JUMPER, &down_id)?;
    match &waiting {
        Some(id) => ctx.check(
            "due_times_clamped_after_jump",
            &["INV-14"],
            back && bad.is_empty() && seen_jobs == long_acked.len(),
            format!(
                "{seen_jobs} pending job(s) towards {down_id}, {} waiting on a due time of the \
                 far side when the clock came back; due later than backoff_max_ms from now: \
                 {bad:?}; jump back logged: {back}",
                check::short(id)
            ),
        ),
        None => ctx.unknown(
            "due_times_clamped_after_jump",
            &["INV-14"],
            format!("no job of {jumper_id} was waiting (all in flight) when the clock came back"),
        ),
    }

    // A restart keeps the attempts, and loads the due times clamped.
    let before = look::jobs_to(&world.fleet, JUMPER, &down_id)?;
    world.fleet.stop(JUMPER)?;
    world.fleet.start(JUMPER)?;
    let after = look::jobs_to(&world.fleet, JUMPER, &down_id)?;
    let lost_attempts: Vec<String> = before
        .iter()
        .filter(|(_, j)| j.state == "pending")
        // An attempt in flight at the stop is refunded (by design): one less is no loss.
        .filter(|(id, j)| after.get(*id).is_none_or(|a| a.attempts + 1 < j.attempts))
        .map(|(id, j)| format!("{} had {} attempt(s)", check::short(id), j.attempts))
        .collect();
    let (bad, _) = wait_clamped(&world.fleet, JUMPER, &down_id)?;
    let attempted = before.values().filter(|j| j.attempts > 0).count();
    ctx.check(
        "attempts_and_due_times_survive_restart",
        &["INV-14"],
        lost_attempts.is_empty() && bad.is_empty() && attempted > 0,
        format!(
            "{attempted} job(s) with attempts before the restart; lost or reset: \
             {lost_attempts:?}; due later than backoff_max_ms after it: {bad:?}"
        ),
    );

    // The peer comes back: what did not expire is delivered, what expired never is.
    world.fleet.start(DOWN)?;
    let all = [SOURCE, JUMPER, DOWN, LATE];
    ctx.converge(
        &world.fleet,
        &long_acked,
        &all,
        topology.diameter(),
        CLOCK_TRANSFER_MS,
    );
    ctx.record(check::lost(&world.fleet, &long_acked, &all));
    std::thread::sleep(Duration::from_millis(
        world.fleet.spec.tuning.catchup_interval_ms,
    ));
    let mut relayed = Vec::new();
    for at in [DOWN, LATE] {
        let listed = look::listed(&world.fleet, at)?;
        for a in short_acked.iter().filter(|a| listed.contains(&a.id)) {
            relayed.push(format!(
                "{} got {}",
                world.fleet.node(at).id,
                check::short(&a.id)
            ));
        }
    }
    ctx.check(
        "expired_not_relayed",
        &["INV-16"],
        relayed.is_empty(),
        if relayed.is_empty() {
            "no peer got a segment the jumper saw expire".to_owned()
        } else {
            format!(
                "segments the jumper saw expire were relayed: {}",
                relayed.join(", ")
            )
        },
    );
    Ok(world)
}
