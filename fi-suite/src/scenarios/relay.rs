//! The relay's promises seen from outside: dead letters and their requeue and purge, expiry,
//! the ceiling under pressure, memory that does not grow with segment size, and configs that
//! are refused.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use super::basic::import_segments;
use crate::check::{self, Acked};
use crate::fleet::{Fleet, FleetSpec, Topology};
use crate::results::{Build, CheckResult, Verdict};
use crate::scenario::{Ctx, Scenario, World};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "dead-letter-requeue",
            summary: "node-2 is down while node-1 exhausts 3 attempts for each of 3 segments: \
                      dead letters with their attempts and last error survive a restart; a \
                      requeue delivers exactly once, a second requeue does nothing, a purge \
                      removes one; all logged.",
            invariants: &["INV-12", "INV-14", "INV-22"],
            quick: true,
            faults: true,
            build: Build::Shipped,
            run: dead_letter_requeue,
        },
        Scenario {
            name: "expiry",
            summary: "A segment expires while the node it is owed to is down: its job is \
                      cancelled, it is never relayed to that node, and under space pressure it \
                      is evicted before any live segment.",
            invariants: &["INV-07", "INV-16"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: expiry,
        },
        Scenario {
            name: "ceiling-pressure",
            summary: "A line of 3 whose middle node holds 3 of the 10 segments relayed through \
                      it: bytes on disk never exceed its ceiling, pinned segments are never \
                      evicted, StoreFull is retried until space frees, tombstones stop re-fetch \
                      loops, the far node gets everything.",
            invariants: &["INV-06", "INV-07", "INV-08", "INV-10"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: ceiling_pressure,
        },
        Scenario {
            name: "memory-big-segment",
            summary: "A 256 MiB segment relayed over one hop: the peak resident memory of both \
                      daemons stays under 64 MiB.",
            invariants: &["INV-20"],
            quick: false,
            faults: false,
            build: Build::Shipped,
            run: memory_big_segment,
        },
        Scenario {
            name: "config-invalid",
            summary: "Daemons started with invalid configs are refused at start, exit 3, with a \
                      message naming the key and the file, and create nothing.",
            invariants: &["INV-21"],
            quick: true,
            faults: true,
            build: Build::Shipped,
            run: config_invalid,
        },
    ]
}

/// Peak resident memory allowed to a daemon relaying a big segment (INV-20).
const RSS_MAX_BYTES: u64 = 64 << 20;

fn all(fleet: &Fleet) -> Vec<usize> {
    (0..fleet.len()).collect()
}

/// `dlq list --json` of node `i`.
fn dead_letters(fleet: &Fleet, i: usize) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(fleet
        .try_json(i, &["dlq", "list"])?
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn count_log(fleet: &Fleet, i: usize, needle: &str) -> usize {
    std::fs::read_to_string(&fleet.node(i).log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

fn dead_letter_requeue(ctx: &mut Ctx) -> anyhow::Result<World> {
    let mut spec = FleetSpec::new(Topology::Line(2));
    spec.tuning.attempts_max = 3;
    spec.tuning.backoff_base_ms = 100;
    spec.tuning.backoff_max_ms = 300;
    // node-2 must not fetch what it lacks on its own: only a requeue may deliver here.
    spec.node_line(1, "net", "catchup_on_connect = false");
    spec.node_line(1, "net", "catchup_interval_ms = 0");
    let mut fleet = ctx.direct_fleet(spec)?;
    fleet.start(0)?;
    let mut world = World::new(fleet);
    ctx.fault("proc.down", "node-2", "not started: every attempt fails");
    let acked = import_segments(ctx, &world, 0, "dl", 3, 64 << 10)?;
    let dead = world.fleet.wait_until(Duration::from_secs(30), |f| {
        dead_letters(f, 0).map(|d| d.len() == 3).unwrap_or(false)
    });
    let letters = dead_letters(&world.fleet, 0)?;
    ctx.check(
        "dead_lettered_after_attempts_max",
        &["INV-12"],
        dead.is_some()
            && letters.iter().all(|d| {
                d["attempts"] == 3
                    && d["peer"] == "node-2"
                    && d["last_error"].as_str().is_some_and(|e| !e.is_empty())
            }),
        format!("{} dead letter(s): {letters:?}", letters.len()),
    );
    // INV-14: they survive a restart, attempts and errors included.
    world.fleet.stop(0)?;
    world.fleet.start(0)?;
    let after = dead_letters(&world.fleet, 0)?;
    let key = |d: &serde_json::Value| {
        (
            d["segment"].clone(),
            d["attempts"].clone(),
            d["last_error"].clone(),
        )
    };
    ctx.check(
        "dead_letters_survive_restart",
        &["INV-14"],
        after.iter().map(key).collect::<Vec<_>>() == letters.iter().map(key).collect::<Vec<_>>(),
        format!(
            "{} before, {} after the restart",
            letters.len(),
            after.len()
        ),
    );
    world.fleet.start(1)?;
    // Connected, and still nothing: no retry happens on its own, catch-up is off at node-2.
    std::thread::sleep(Duration::from_millis(1_500));
    let held = world.fleet.held(1)?;
    ctx.check(
        "no_delivery_without_requeue",
        &["INV-12"],
        held.is_empty(),
        format!("node-2 holds {}", held.len()),
    );

    // Purge one, requeue the rest.
    let purged = acked[2].id.clone();
    let out = world.fleet.cli(
        0,
        &[
            "dlq",
            "purge",
            "--peer",
            "node-2",
            "--segment",
            &purged[..8],
        ],
    )?;
    ctx.check(
        "purge_accepted",
        &["INV-22"],
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    );
    let out = world
        .fleet
        .cli(0, &["dlq", "requeue", "--peer", "node-2"])?;
    ctx.check(
        "requeue_accepted",
        &["INV-22"],
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    );
    let delivered = &acked[..2];
    let ok = ctx.converge(&world.fleet, delivered, &[1], 1, 1_000);
    let left = dead_letters(&world.fleet, 0)?;
    ctx.check(
        "requeue_emptied_the_queue",
        &["INV-22"],
        ok && left.is_empty(),
        format!("{} dead letter(s) left", left.len()),
    );
    // A second requeue finds nothing and changes nothing.
    let again = world
        .fleet
        .cli(0, &["dlq", "requeue", "--peer", "node-2"])?;
    let segs = world.fleet.try_json(0, &["segments"])?;
    let attempts: Vec<u64> = segs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| delivered.iter().any(|a| s["id"] == a.id.as_str()))
        .flat_map(|s| s["jobs"].as_array().cloned().unwrap_or_default())
        .map(|j| j["attempts"].as_u64().unwrap_or(0))
        .collect();
    ctx.check(
        "second_requeue_does_nothing",
        &["INV-22"],
        again.status.code() == Some(0)
            && String::from_utf8_lossy(&again.stdout).contains("nothing requeued")
            && attempts.iter().all(|a| *a == 1),
        format!(
            "second requeue: {}; attempts after the requeue: {attempts:?}",
            again.status
        ),
    );
    let held = world.fleet.held(1)?;
    ctx.check(
        "purged_is_not_delivered",
        &["INV-22"],
        !held.contains(&purged),
        format!("node-2 holds {} segment(s)", held.len()),
    );
    let logged = (
        count_log(&world.fleet, 0, "requeue"),
        count_log(&world.fleet, 0, "purge"),
    );
    ctx.check(
        "requeue_and_purge_logged",
        &["INV-22"],
        logged.0 >= 1 && logged.1 >= 1,
        format!("{} requeue and {} purge line(s)", logged.0, logged.1),
    );
    Ok(world)
}

fn expiry(ctx: &mut Ctx) -> anyhow::Result<World> {
    let mut spec = FleetSpec::new(Topology::Line(3));
    for i in 0..3 {
        spec.node_line(i, "", "clock_skew_max_s = 0");
    }
    let seg: u64 = 1 << 20;
    // node-2 holds two segments of 1 MiB, not three.
    spec.node_line(1, "store", format!("ceiling_bytes = {}", 2 * seg + seg / 2));
    let mut fleet = ctx.direct_fleet(spec.clone())?;
    fleet.start(0)?;
    fleet.start(1)?;
    let mut world = World::new(fleet);
    ctx.fault(
        "proc.down",
        "node-3",
        "not started: the expiring segment stays owed to it",
    );
    let stick = world.fleet.dir.join("stick-exp");
    let (short, short_id) =
        world
            .fleet
            .make_segment("short-lived", seg, &stick, &["--expires", "3s"])?;
    let (_, live_id) = world.fleet.make_segment("live", seg, &stick, &[])?;
    let v = world
        .fleet
        .try_json(0, &["import", &stick.to_string_lossy()])?;
    let acked = super::basic::acked_by_import(
        &v,
        &[(short.clone(), short_id.clone())],
        "import on node-1",
    )?;
    let reached = world.fleet.wait_until(Duration::from_secs(10), |f| {
        f.held(1)
            .map(|h| h.contains(&short_id) && h.contains(&live_id))
            .unwrap_or(false)
    });
    ctx.check(
        "workload_ran",
        &[],
        reached.is_some() && acked.len() == 1,
        "node-2 holds both segments",
    );
    std::thread::sleep(Duration::from_millis(3_500));
    ctx.fault(
        "clock.expiry",
        &short_id[..12],
        "the segment's expiry passed",
    );
    world.fleet.start(2)?;
    let live_there = world.fleet.wait_until(Duration::from_secs(15), |f| {
        f.held(2).map(|h| h.contains(&live_id)).unwrap_or(false)
    });
    std::thread::sleep(Duration::from_millis(1_000));
    let held3 = world.fleet.held(2)?;
    ctx.check(
        "expired_never_relayed",
        &["INV-16"],
        live_there.is_some() && !held3.contains(&short_id),
        format!(
            "node-3 holds the live segment: {}, the expired one: {}",
            live_there.is_some(),
            held3.contains(&short_id)
        ),
    );
    // Pressure on node-2: a third segment needs the room of one; the expired one must go.
    let stick2 = world.fleet.dir.join("stick-exp2");
    let (third, third_id) = world.fleet.make_segment("third", seg, &stick2, &[])?;
    let v = world
        .fleet
        .try_json(1, &["import", &stick2.to_string_lossy()])?;
    let third_acked =
        super::basic::acked_by_import(&v, &[(third, third_id.clone())], "import on node-2")?;
    let held2 = world.fleet.held(1)?;
    ctx.check(
        "expired_evicted_first",
        &["INV-07", "INV-16"],
        third_acked.len() == 1
            && held2.contains(&live_id)
            && held2.contains(&third_id)
            && !held2.contains(&short_id),
        format!(
            "node-2 holds live {}, third {}, expired {}",
            held2.contains(&live_id),
            held2.contains(&third_id),
            held2.contains(&short_id)
        ),
    );
    Ok(world)
}

/// Bytes of `.seg` and temp files in a data dir: what the ceiling bounds, measured on disk.
/// Each file counts once by its inode: a temp file renamed into `segments/` while the walk runs
/// would otherwise be seen twice.
pub fn bytes_on_disk(data: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0;
    // tmp/ first (popped first): a file renamed meanwhile is then seen twice and counted once,
    // never missed.
    let mut dirs = vec![data.join("segments"), data.join("tmp")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => dirs.push(e.path()),
                Ok(m) if seen.insert(m.ino()) => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

fn ceiling_pressure(ctx: &mut Ctx) -> anyhow::Result<World> {
    let seg = 1u64 << 20;
    // Room for three 1 MiB segments and their headers, not four.
    let ceiling = 3 * seg + 3 * 4096 + seg / 2;
    let mut spec = FleetSpec::new(Topology::Line(3));
    spec.node_line(1, "store", format!("ceiling_bytes = {ceiling}"));
    spec.tuning.attempts_max = 50;
    let mut fleet = ctx.direct_fleet(spec)?;
    fleet.start(0)?;
    fleet.start(1)?;
    let mut world = World::new(fleet);
    ctx.fault(
        "proc.down",
        "node-3",
        "not started: node-2's segments stay pinned, owed to it",
    );
    let data2 = world.fleet.node(1).data_dir.clone();
    // Sample node-2's disk while the workload runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let data2 = data2.clone();
        std::thread::spawn(move || {
            let mut max = 0;
            let mut samples = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && samples < 100_000 {
                max = max.max(bytes_on_disk(&data2));
                samples += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (max, samples)
        })
    };
    let acked: Vec<Acked> = import_segments(ctx, &world, 0, "cp", 10, seg)?;
    // node-2 fills with pinned segments and must refuse the rest, retryably.
    let full = world.fleet.wait_until(Duration::from_secs(20), |f| {
        f.metrics(1)
            .map(|m| {
                m.iter().any(|(k, v)| {
                    k.starts_with("edged_segments_rejected_total{reason=\"store_full\"") && *v > 0.0
                })
            })
            .unwrap_or(false)
    });
    if full.is_some() {
        ctx.fault(
            "disk.ceiling",
            "node-2",
            "store full: offers refused as store_full",
        );
    }
    let held2 = world.fleet.held(1)?;
    ctx.check(
        "pinned_kept_under_pressure",
        &["INV-07", "INV-08"],
        full.is_some() && held2.len() == 3,
        format!(
            "node-2 holds {} segment(s) while node-3 is down",
            held2.len()
        ),
    );
    world.fleet.start(2)?;
    let ok = ctx.converge(&world.fleet, &acked, &[0, 2], 2, 3_000);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (max, samples) = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    ctx.record(CheckResult {
        name: "ceiling_never_exceeded".into(),
        invariants: vec!["INV-06".into()],
        verdict: if samples == 0 {
            Verdict::Unknown
        } else if max <= ceiling {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: format!(
            "at most {max} bytes on node-2's disk over {samples} samples; ceiling {ceiling}"
        ),
        observed: Some(max),
        out_of: Some(ceiling),
    });
    ctx.record(check::lost(&world.fleet, &acked, &[0, 2]));
    // No job of node-1 ended dead: StoreFull was retried until node-2 had room.
    let dead = dead_letters(&world.fleet, 0)?.len() + dead_letters(&world.fleet, 1)?.len();
    ctx.check(
        "store_full_retried_not_dead",
        &["INV-08"],
        ok && dead == 0,
        format!("{dead} dead letter(s)"),
    );
    // Tombstones: node-2's received count settles (no re-fetch loop of what it evicted).
    let received = |f: &Fleet| {
        f.metrics(1)
            .ok()
            .and_then(|m| m.get("edged_segments_received_total").copied())
            .unwrap_or(-1.0)
    };
    let before = received(&world.fleet);
    std::thread::sleep(Duration::from_millis(
        2 * world.fleet.spec.tuning.catchup_interval_ms,
    ));
    let after = received(&world.fleet);
    ctx.check(
        "no_refetch_loop",
        &["INV-10"],
        before >= 0.0 && before == after,
        format!("node-2 received {before} then {after} over two catch-up intervals"),
    );
    Ok(world)
}

fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn memory_big_segment(ctx: &mut Ctx) -> anyhow::Result<World> {
    let topology = Topology::Line(2);
    let mut fleet = ctx.direct_fleet(FleetSpec::new(topology))?;
    fleet.start_all()?;
    let world = World::new(fleet);
    let acked = import_segments(ctx, &world, 0, "big", 1, 256 << 20)?;
    let ok = ctx.converge(&world.fleet, &acked, &all(&world.fleet), 1, 20_000);
    let peaks: Vec<(String, Option<u64>)> = world
        .fleet
        .nodes
        .iter()
        .map(|n| (n.id.clone(), n.pid().and_then(vm_hwm)))
        .collect();
    let worst = peaks.iter().filter_map(|(_, p)| *p).max();
    ctx.record(CheckResult {
        name: "peak_rss_bounded".into(),
        invariants: vec!["INV-20".into()],
        verdict: match worst {
            None => Verdict::Unknown,
            Some(w) if ok && w <= RSS_MAX_BYTES => Verdict::Pass,
            Some(_) => Verdict::Fail,
        },
        detail: format!("VmHWM {peaks:?} for a 256 MiB segment; bound {RSS_MAX_BYTES}"),
        observed: worst,
        out_of: Some(RSS_MAX_BYTES),
    });
    Ok(world)
}

fn config_invalid(ctx: &mut Ctx) -> anyhow::Result<World> {
    let mut fleet = ctx.direct_fleet(FleetSpec::new(Topology::Line(2)))?;
    let good = std::fs::read_to_string(&fleet.node(0).config)?;
    let cases: BTreeMap<&str, (String, &str)> = [
        ("unknown key", (format!("colour = 1\n{good}"), "colour")),
        (
            "bad listen_addr",
            (
                good.replacen("listen_addr = \"", "listen_addr = \"nowhere", 1),
                "listen_addr",
            ),
        ),
        (
            "zero ceiling",
            (
                good.replace(
                    &format!("ceiling_bytes = {}", fleet.spec.tuning.ceiling_bytes),
                    "ceiling_bytes = 0",
                ),
                "ceiling_bytes",
            ),
        ),
        (
            "peer address 0.0.0.0:0",
            (replace_peer_addr(&good, "0.0.0.0:0"), "known_peers[0].addr"),
        ),
        (
            "control socket on the database",
            (
                good.replace(
                    "control_socket = \"ctl.sock\"",
                    "control_socket = \"data/edge.redb\"",
                ),
                "control_socket",
            ),
        ),
        (
            "relay attempts 0",
            (
                good.replace("\nattempts_max = ", "\nattempts_max = 0 #"),
                "relay.attempts_max",
            ),
        ),
    ]
    .into_iter()
    .collect();
    let mut bad = Vec::new();
    for (name, (text, key)) in &cases {
        let dir = fleet.dir.join("bad").join(name.replace(' ', "-"));
        std::fs::create_dir_all(&dir)?;
        // The certificate files are resolved relative to the config: copy them along.
        for f in ["node-1.crt", "node-1.key"] {
            std::fs::copy(fleet.node(0).dir.join(f), dir.join(f))?;
        }
        std::fs::create_dir_all(dir.join("..").join("ca"))?;
        std::fs::copy(
            fleet.dir.join("ca").join("ca.crt"),
            dir.join("..").join("ca").join("ca.crt"),
        )?;
        let config = dir.join("edge.toml");
        std::fs::write(&config, text)?;
        let mut cmd = Command::new(&fleet.bin);
        cmd.args(["run", "--config"])
            .arg(&config)
            .env_remove("EDGED_CONFIG");
        let out = crate::proc::run_bounded(cmd, Duration::from_secs(20))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let named = stderr.contains(key) && stderr.contains("edge.toml");
        let created = dir.join("data").exists();
        if out.status.code() != Some(3) || !named || created {
            bad.push(format!(
                "{name}: {} (key named: {named}, data dir created: {created}): {}",
                out.status,
                stderr.trim()
            ));
        }
        ctx.fault("config.invalid", name, format!("`{key}`"));
    }
    ctx.check(
        "invalid_configs_refused_naming_the_key",
        &["INV-21"],
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "{} config(s) refused with exit 3, key and file named",
                cases.len()
            )
        } else {
            bad.join("; ")
        },
    );
    // The good config still starts.
    fleet.start_all()?;
    Ok(World::new(fleet))
}

fn replace_peer_addr(config: &str, addr: &str) -> String {
    let mut out = String::new();
    let mut in_peer = false;
    let mut done = false;
    for line in config.lines() {
        if line.starts_with("[[known_peers]]") {
            in_peer = true;
        }
        if in_peer && !done && line.starts_with("addr = ") {
            out.push_str(&format!("addr = \"{addr}\"\n"));
            done = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
