//! Real `edged` daemons on 127.0.0.1, driven through the real CLI: import through the daemon and
//! directly, convergence of a 4-node fleet across a `kill -9`, ledger state across SIGTERM, dead
//! letters and their requeue, the metrics endpoint, and peak memory on a 256 MiB relay.
//!
//! Every daemon is SIGKILLed when its test ends, also on panic; every wait is bounded; failure
//! messages carry the tail of each node's log.

mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Fleet, MIB, NodeOptions, files_equal, p, stderr, stdout};

/// The two tests that move hundreds of MiB take turns, so neither measures the other.
static BIG_TRANSFERS: Mutex<()> = Mutex::new(());

const POLL: Duration = Duration::from_millis(100);

fn big_transfer_turn() -> std::sync::MutexGuard<'static, ()> {
    BIG_TRANSFERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Dead letters of node `i`, from its daemon.
fn dead_letters(f: &Fleet, i: usize) -> Vec<Value> {
    f.json(i, &["dlq", "list"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The job of segment `seg` for `peer` in node `i`'s `segments --json`.
fn job(f: &Fleet, i: usize, seg: &str, peer: &str) -> Option<Value> {
    let row = f.segment_row(i, seg)?;
    row["jobs"]
        .as_array()?
        .iter()
        .find(|j| j["peer"] == peer)
        .cloned()
}

#[test]
fn inv_19_import_through_the_running_daemon_and_directly_when_stopped() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    let (_, alpha) = f.make_segment("alpha", MIB, &usb);
    let medium = support::dir_snapshot(&usb);

    // Through the running daemon: the CLI streams the file, the daemon stores it.
    f.start(1);
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || format!("import: {}", stderr(&o)));
    f.check(
        stdout(&o).contains("1 imported, 0 already present, 0 rejected, 0 skipped"),
        || format!("import summary: {}", stdout(&o)),
    );
    let imported = f.events(1, 0, "segment imported");
    f.check(
        imported.len() == 1 && imported[0]["seg_id"] == alpha.as_str(),
        || format!("the daemon logs the import of {alpha}: {imported:?}"),
    );

    // Idempotent: a second run stores nothing and says so.
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || {
        format!("import again: {}", stderr(&o))
    });
    f.check(
        stdout(&o).contains("0 imported, 1 already present") && stdout(&o).contains("nothing new"),
        || format!("second import summary: {}", stdout(&o)),
    );
    let lines = f.json(1, &["import", p(&usb)]);
    f.check(
        lines[0]["file"] == "alpha.seg" && lines[0]["status"] == "already_present",
        || format!("import --json: {lines}"),
    );
    f.check(f.events(1, 0, "segment imported").len() == 1, || {
        "only one import was stored".into()
    });
    f.check(support::dir_snapshot(&usb) == medium, || {
        "import wrote to the medium".into()
    });

    // Daemon stopped: the CLI opens the data dir itself.
    let status = f.sigterm(1);
    f.check(status.code() == Some(0), || {
        format!("SIGTERM exit: {status}")
    });
    f.check(!f.node(1).control_socket().exists(), || {
        "the control socket is removed on stop".into()
    });
    let (_, beta) = f.make_segment("beta", 256 * 1024, &usb);
    let medium = support::dir_snapshot(&usb);
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || {
        format!("direct import: {}", stderr(&o))
    });
    f.check(stdout(&o).contains("1 imported, 1 already present"), || {
        format!("direct import summary: {}", stdout(&o))
    });
    f.check(support::dir_snapshot(&usb) == medium, || {
        "the direct import wrote to the medium".into()
    });
    let mut want = vec![alpha.clone(), beta.clone()];
    want.sort();
    let mut held = f.segment_ids(1);
    held.sort();
    f.check(held == want, || format!("stored directly: {held:?}"));

    // The daemon holds the database again, but its control socket is gone: the CLI cannot
    // reach it and cannot open the data dir either.
    f.start(1);
    let mut held = f.segment_ids(1);
    held.sort();
    f.check(held == want, || format!("the daemon sees both: {held:?}"));
    std::fs::remove_file(f.node(1).control_socket()).unwrap();
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.code() == Some(4), || {
        format!("import while held: {} {}", o.status, stderr(&o))
    });
    f.check(
        stderr(&o).contains("held by another process") && stderr(&o).contains("edge.redb"),
        || format!("message while held: {}", stderr(&o)),
    );
    // A second daemon on the same data dir is refused the same way.
    let o = f.cli(1, &["run"]);
    f.check(o.status.code() == Some(4), || {
        format!("second `edged run`: {} {}", o.status, stderr(&o))
    });
    f.check(stderr(&o).contains("held by another process"), || {
        format!("second `edged run` message: {}", stderr(&o))
    });
    let status = f.sigterm(1);
    f.check(status.code() == Some(0), || {
        format!("SIGTERM exit without a control socket: {status}")
    });
}

#[test]
fn inv_20_relay_256_mib_stays_within_memory_bound() {
    const LIMIT_BYTES: u64 = 64 * MIB;
    let _turn = big_transfer_turn();
    let mut f = Fleet::new(2, &[(1, 2)], |_| NodeOptions::default());
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    let (_, id) = f.make_segment("big", 256 * MIB, &usb);
    f.start(1);
    f.start(2);
    let started = Instant::now();
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || format!("import: {}", stderr(&o)));
    let imported = started.elapsed();
    f.wait_for(
        "node-2 to hold the 256 MiB segment",
        Duration::from_secs(120),
        Duration::from_millis(250),
        || f.segment_ids(2).contains(&id).then_some(()),
    );
    let relayed = started.elapsed();
    let peaks: Vec<u64> = [1, 2]
        .iter()
        .map(|&i| {
            support::vm_hwm_bytes(f.pid(i))
                .unwrap_or_else(|| f.fail(format!("no VmHWM for node-{i}")))
        })
        .collect();
    eprintln!(
        "inv_20: import {imported:?}, relayed after {relayed:?}; VmHWM node-1 (importer, sender) {} KiB, node-2 (receiver) {} KiB",
        peaks[0] / 1024,
        peaks[1] / 1024
    );
    for (i, peak) in peaks.iter().enumerate() {
        f.check(*peak < LIMIT_BYTES, || {
            format!(
                "node-{} peak RSS {} MiB exceeds {} MiB",
                i + 1,
                peak / MIB,
                LIMIT_BYTES / MIB
            )
        });
    }
}

/// The largest `.part` file in `dir` (0 if none).
fn largest_part(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[test]
fn inv_05_inv_25_four_daemons_converge_and_a_killed_node_resumes() {
    const CHECKPOINT_BYTES: u64 = 8 * MIB;
    let _turn = big_transfer_turn();
    // A line 1-2-3-4 plus the link 2-4.
    let links = [(1, 2), (2, 3), (3, 4), (2, 4)];
    let mut f = Fleet::new(4, &links, |_| {
        NodeOptions::default()
            .net("checkpoint_bytes", CHECKPOINT_BYTES)
            .net("stall_timeout_ms", 5000)
            .net("idle_timeout_ms", 5000)
            .net("keep_alive_interval_ms", 1000)
    });
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    let (seg, id) = f.make_segment("release", 128 * MIB, &usb);
    for i in 1..=4 {
        f.start(i);
    }

    // Import on node-1 in the background; node-1 relays to node-2 as soon as it has stored it.
    let import_log = f.path("import.log");
    let import = support::ChildGuard(
        std::process::Command::new(support::EDGED)
            .args(["import", p(&usb), "--config", p(&f.node(1).config)])
            .env_remove("EDGED_CONFIG")
            .env_remove("EDGED_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&import_log).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn edged import"),
    );
    // kill -9 node-2 in the middle of receiving: a few checkpoints in, far from the end.
    let tmp = f.node(2).data_dir().join("tmp");
    let cut_at = f.wait_for(
        "node-2 to hold a partial of at least 3 checkpoints",
        Duration::from_secs(60),
        Duration::from_millis(2),
        || {
            let n = largest_part(&tmp);
            (n >= 3 * CHECKPOINT_BYTES).then_some(n)
        },
    );
    f.kill9(2);
    f.check(cut_at < 100 * MIB, || {
        format!("node-2 was killed too late: {cut_at} bytes received")
    });
    let mut import = import;
    let status = f.wait_for(
        "the import to finish",
        Duration::from_secs(60),
        POLL,
        || import.0.try_wait().ok().flatten(),
    );
    let summary = std::fs::read_to_string(&import_log).unwrap_or_default();
    f.check(status.success() && summary.contains("1 imported"), || {
        format!("import on node-1: {status}: {summary}")
    });
    f.check(
        !f.segment_ids(3).contains(&id) && !f.segment_ids(4).contains(&id),
        || "node-3 and node-4 can only get the segment through node-2".into(),
    );

    // Restart node-2: it resumes from its checkpoint, then relays on.
    let restarted = f.log_len(2);
    f.start(2);
    f.wait_for(
        "every node to hold the segment",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            (1..=4)
                .all(|i| f.segment_ids(i).contains(&id))
                .then_some(())
        },
    );
    let resumed: Vec<Value> = f
        .events(2, restarted, "segment received")
        .into_iter()
        .filter(|e| e["offset"].as_u64().is_some_and(|o| o > 0))
        .collect();
    eprintln!(
        "inv_05: node-2 killed with {cut_at} bytes received; after restart it received {:?}",
        resumed
    );
    f.check(!resumed.is_empty(), || {
        format!("node-2 resumed its partial ({cut_at} bytes received before the kill) instead of starting from 0")
    });
    // Every job ends delivered on every node, and every segment is marked propagated.
    f.wait_for(
        "every relay job to end delivered",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            (1..=4)
                .all(|i| {
                    f.segment_row(i, &id).is_some_and(|r| {
                        r["peers_pending"] == 0
                            && r["peers_dead"] == 0
                            && r["peers_refused"] == 0
                            && !r["propagated_at_ms"].is_null()
                    })
                })
                .then_some(())
        },
    );
    for i in 1..=4 {
        let left = largest_part(&f.node(i).data_dir().join("tmp"));
        f.check(left == 0, || {
            format!("node-{i} kept a partial of {left} bytes")
        });
    }

    // USB out from node-4, two hops from where it came in: the same bytes.
    let out = f.path("out");
    std::fs::create_dir(&out).unwrap();
    let o = f.cli(4, &["export", "--to", p(&out), &id]);
    f.check(o.status.success(), || format!("export: {}", stderr(&o)));
    f.check(files_equal(&seg, &out.join(format!("{id}.seg"))), || {
        "node-4's export differs from the imported file".into()
    });
}

#[test]
fn inv_14_sigterm_keeps_ledger_state() {
    const ATTEMPTS_MAX: u64 = 6;
    // node-2 is never started: node-1's jobs for it fail and retry, then die.
    let mut f = Fleet::new(2, &[(1, 2)], |_| {
        NodeOptions::default().relay("attempts_max", ATTEMPTS_MAX)
    });
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    let (first_seg, first) = f.make_segment("first", 64 * 1024, &usb);
    f.start(1);
    let import = |f: &Fleet, seg: &std::path::Path| {
        let dir = f.path("one");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(seg, dir.join("x.seg")).unwrap();
        let o = f.cli(1, &["import", p(&dir)]);
        f.check(o.status.success(), || format!("import: {}", stderr(&o)));
    };
    import(&f, &first_seg);
    let dead_before = f.wait_for(
        "the first segment's job to become a dead letter",
        Duration::from_secs(60),
        POLL,
        || {
            let dead = dead_letters(&f, 1);
            (dead.len() == 1).then_some(dead)
        },
    );
    f.check(
        dead_before[0]["segment"] == first.as_str()
            && dead_before[0]["attempts"] == ATTEMPTS_MAX
            && dead_before[0]["last_error"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
        || format!("dead letter: {dead_before:?}"),
    );

    // A second segment, still retrying when the node is stopped.
    let (second_seg, second) = f.make_segment("second", 64 * 1024, &usb);
    import(&f, &second_seg);
    let before = f.wait_for(
        "the second segment's job to count 2 attempts",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let j = job(&f, 1, &second, "node-2")?;
            let attempts = j["attempts"].as_u64()?;
            (attempts >= 2 && j["state"] == "pending").then_some(attempts)
        },
    );
    let first_run = f.log_len(1);
    let status = f.sigterm(1);
    f.check(status.code() == Some(0), || {
        format!("SIGTERM exit: {status}")
    });
    let refunded = f
        .events(1, 0, "attempt refunded")
        .iter()
        .filter(|e| e["seg_id"] == second.as_str())
        .count() as u64;
    f.check(refunded <= 1, || {
        format!("{refunded} refunds of one attempt")
    });

    let restarted = f.log_len(1);
    f.start(1);
    // Dead letters come back as they were.
    let dead_after = dead_letters(&f, 1);
    let first_dead: Vec<&Value> = dead_after
        .iter()
        .filter(|d| d["segment"] == first.as_str())
        .collect();
    f.check(
        first_dead.len() == 1 && *first_dead[0] == dead_before[0],
        || format!("dead letter before {dead_before:?}, after restart {dead_after:?}"),
    );
    // Attempts were kept (less the one cut short by the shutdown, refunded), not reset.
    let j = job(&f, 1, &second, "node-2")
        .unwrap_or_else(|| f.fail("the second segment's job is gone after restart"));
    let after = j["attempts"].as_u64().unwrap_or(0);
    eprintln!(
        "inv_14: attempts {before} before SIGTERM, {refunded} refunded, {after} after restart"
    );
    f.check(after >= 1 && after + refunded >= before, || {
        format!(
            "attempts before SIGTERM {before} (refunded {refunded}), after restart {after}: {j}"
        )
    });
    // It carries on from there: it dies at attempts_max, never more, and this run makes only
    // the attempts that were left.
    let dead = f.wait_for(
        "the second segment's job to become a dead letter",
        Duration::from_secs(60),
        POLL,
        || {
            dead_letters(&f, 1)
                .into_iter()
                .find(|d| d["segment"] == second.as_str())
        },
    );
    f.check(dead["attempts"] == ATTEMPTS_MAX, || {
        format!("dead letter after restart: {dead}")
    });
    let second_run_attempts = f
        .events(1, restarted, "retry scheduled")
        .iter()
        .chain(f.events(1, restarted, "dead-lettered").iter())
        .filter(|e| e["seg_id"] == second.as_str())
        .count() as u64;
    f.check(second_run_attempts < ATTEMPTS_MAX, || {
        format!(
            "{second_run_attempts} attempts after the restart: the count was reset (first run's log ends at byte {first_run})"
        )
    });
    let status = f.sigterm(1);
    f.check(status.code() == Some(0), || {
        format!("SIGTERM exit: {status}")
    });
}

/// The value of the metrics series `name` (with its labels, as exposed) in `body`.
fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn inv_12_inv_22_dead_letter_then_requeue_delivers() {
    const ATTEMPTS_MAX: u64 = 3;
    // Catch-up off, so that only the requeue can deliver; node-1 serves metrics.
    let mut f = Fleet::new(2, &[(1, 2)], |i| {
        let o = NodeOptions::default()
            .relay("attempts_max", ATTEMPTS_MAX)
            .net("catchup_on_connect", false)
            .net("catchup_interval_ms", 0);
        if i == 1 { o.metrics() } else { o }
    });
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    let (_, id) = f.make_segment("policy", 512 * 1024, &usb);
    f.start(1);
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || format!("import: {}", stderr(&o)));

    // node-2 stays down past attempts_max: a dead letter with its attempts and last error.
    let dead = f.wait_for(
        "a dead letter for node-2",
        Duration::from_secs(60),
        POLL,
        || {
            let dead = dead_letters(&f, 1);
            (!dead.is_empty()).then_some(dead)
        },
    );
    f.check(
        dead.len() == 1
            && dead[0]["segment"] == id.as_str()
            && dead[0]["peer"] == "node-2"
            && dead[0]["attempts"] == ATTEMPTS_MAX
            && dead[0]["last_error"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
        || format!("dlq list: {dead:?}"),
    );
    let j = job(&f, 1, &id, "node-2").unwrap_or_else(|| f.fail("no job for node-2"));
    f.check(
        j["state"] == "dead" && j["attempts"] == ATTEMPTS_MAX,
        || format!("job: {j}"),
    );

    // The metrics endpoint shows it.
    let port = f.node(1).metrics_port.unwrap();
    let (code, body) = support::http_get(port, "/metrics").unwrap_or_else(|e| f.fail(e));
    f.check(code == 200 && body.contains("edged_"), || {
        format!("GET /metrics: {code}\n{body}")
    });
    f.check(
        metric(&body, "edged_relay_jobs{state=\"dead\"}") == Some(1.0)
            && metric(&body, "edged_relay_dead_lettered_total") == Some(1.0),
        || format!("dead letter in the metrics:\n{body}"),
    );

    // node-2 comes up; the dead letter stays dead until the operator requeues it.
    f.start(2);
    f.wait_for(
        "node-1 to be connected to node-2",
        Duration::from_secs(30),
        POLL,
        || {
            let peers = f.json(1, &["peers"]);
            peers
                .as_array()?
                .iter()
                .any(|p| p["id"] == "node-2" && p["connected"] == true)
                .then_some(())
        },
    );
    f.check(
        dead_letters(&f, 1).len() == 1 && !f.segment_ids(2).contains(&id),
        || "the dead letter stays until requeued".into(),
    );
    let requeue = ["dlq", "requeue", "--peer", "node-2"];
    let o = f.cli(1, &requeue);
    f.check(
        o.status.success() && stdout(&o).contains("requeued"),
        || format!("requeue: {} {} {}", o.status, stdout(&o), stderr(&o)),
    );
    f.wait_for(
        "node-2 to hold the segment",
        Duration::from_secs(30),
        POLL,
        || f.segment_ids(2).contains(&id).then_some(()),
    );
    let j = f.wait_for(
        "node-1's job to end delivered",
        Duration::from_secs(30),
        POLL,
        || job(&f, 1, &id, "node-2").filter(|j| j["state"] == "delivered"),
    );
    // Fresh attempts: counting on from the dead letter's would give more than attempts_max.
    f.check(
        j["attempts"]
            .as_u64()
            .is_some_and(|a| (1..ATTEMPTS_MAX).contains(&a)),
        || format!("a requeued job starts with fresh attempts: {j}"),
    );
    f.check(dead_letters(&f, 1).is_empty(), || {
        "the dead letter is gone".into()
    });
    let logged = f.events(1, 0, "dead letter requeued");
    f.check(logged.len() == 1, || format!("requeues logged: {logged:?}"));

    // A second requeue does nothing: no dead letter left, and it says so (exit 0: nothing
    // failed).
    let o = f.cli(1, &requeue);
    f.check(
        o.status.code() == Some(0)
            && stdout(&o).contains("no dead letters for peer node-2; nothing requeued"),
        || format!("second requeue: {} {} {}", o.status, stdout(&o), stderr(&o)),
    );
    f.check(f.events(1, 0, "dead letter requeued").len() == 1, || {
        "the second requeue changed nothing".into()
    });
    let (code, body) = support::http_get(port, "/metrics").unwrap_or_else(|e| f.fail(e));
    f.check(
        code == 200
            && metric(&body, "edged_relay_jobs{state=\"dead\"}") == Some(0.0)
            && metric(&body, "edged_relay_jobs{state=\"delivered\"}") == Some(1.0),
        || format!("metrics after the requeue: {code}\n{body}"),
    );
    // INV-26: what reached node-1 (its import) reconciles.
    let received = metric(&body, "edged_segments_received_total");
    let rejected: f64 = body
        .lines()
        .filter(|l| l.starts_with("edged_segments_rejected_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let accounted = metric(&body, "edged_segments_stored_total").unwrap_or(-1.0)
        + metric(&body, "edged_segments_duplicate_total").unwrap_or(-1.0)
        + rejected;
    f.check(received == Some(1.0) && received == Some(accounted), || {
        format!("inv_26: received {received:?}, stored + duplicate + rejected {accounted}\n{body}")
    });
}

#[test]
fn a_received_segment_is_logged_once() {
    let mut f = Fleet::new(2, &[(1, 2)], |_| NodeOptions::default());
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    let (_, id) = f.make_segment("once", 64 * 1024, &usb);
    f.start(1);
    f.start(2);
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || {
        format!("import on node-1: {}", stderr(&o))
    });
    f.wait_for(
        "node-2 to hold the segment",
        Duration::from_secs(30),
        POLL,
        || f.segment_ids(2).contains(&id).then_some(()),
    );
    // The line is written after the commit that makes the segment visible: wait (bounded) for
    // it, then give a second line, were there one, the time to appear.
    f.wait_for(
        "node-2 to log the segment received",
        Duration::from_secs(10),
        POLL,
        || (!f.events(2, 0, "segment received").is_empty()).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let lines: Vec<Value> = f
        .events(2, 0, "segment received")
        .into_iter()
        .filter(|e| e["seg_id"] == id.as_str())
        .collect();
    f.check(lines.len() == 1, || {
        format!("one \"segment received\" line for {id} on node-2, got {lines:?}")
    });
    f.check(
        lines[0]["peer"] == "node-1" && lines[0]["bytes"].as_u64().is_some(),
        || format!("the line names the sender and the size: {lines:?}"),
    );
}

/// A peer name the node does not know is a usage error naming the known peers (exit 2); a known
/// peer with no dead letters is nothing to do (exit 0, said in words), for requeue and purge,
/// with and without `--segment`.
#[test]
fn dlq_unknown_peer_is_exit_2_and_nothing_to_do_is_exit_0() {
    let mut f = Fleet::new(3, &[(1, 2), (1, 3)], |_| NodeOptions::default());
    f.start(1);
    for action in ["requeue", "purge"] {
        let o = f.cli(1, &["dlq", action, "--peer", "nosuch"]);
        f.check(
            o.status.code() == Some(2)
                && stderr(&o).contains("unknown peer nosuch")
                && stderr(&o).contains("node-2, node-3"),
            || format!("{action} nosuch: {} {}", o.status, stderr(&o)),
        );
        let o = f.cli(1, &["dlq", action, "--peer", "nosuch", "--segment", "abcd"]);
        f.check(o.status.code() == Some(2), || {
            format!("{action} nosuch --segment: {} {}", o.status, stderr(&o))
        });
        let done = if action == "requeue" {
            "requeued"
        } else {
            "purged"
        };
        let o = f.cli(1, &["dlq", action, "--peer", "node-2"]);
        f.check(
            o.status.code() == Some(0)
                && stdout(&o).contains(&format!("no dead letters for peer node-2; nothing {done}")),
            || {
                format!(
                    "{action} node-2: {} {} {}",
                    o.status,
                    stdout(&o),
                    stderr(&o)
                )
            },
        );
        let o = f.cli(1, &["dlq", action, "--peer", "node-3", "--segment", "abcd"]);
        f.check(
            o.status.code() == Some(0)
                && stdout(&o).contains(&format!(
                    "no dead letters for peer node-3 and segment abcd; nothing {done}"
                )),
            || {
                format!(
                    "{action} node-3 --segment: {} {} {}",
                    o.status,
                    stdout(&o),
                    stderr(&o)
                )
            },
        );
        let o = f.cli(1, &["dlq", action, "--peer", "node-2", "--json"]);
        f.check(
            o.status.code() == Some(0) && stdout(&o).trim() == "[]",
            || format!("{action} node-2 --json: {} {}", o.status, stdout(&o)),
        );
    }
}

/// One job retrying against a peer that is down is one pending job in `status` and in
/// `segments`, in the same words; its parts (trying now, waiting) add up to it.
#[test]
fn status_and_segments_count_a_retrying_job_once_in_the_same_words() {
    let mut f = Fleet::new(2, &[(1, 2)], |_| NodeOptions::default());
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    f.make_segment("policy", 64 * 1024, &usb);
    f.start(1);
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || format!("import: {}", stderr(&o)));
    // Samples across several retries (backoff 100 ms .. 1 s, dials of up to 2 s): the job is
    // sometimes being tried, sometimes waiting; it is one pending job in every sample.
    let (mut trying, mut waiting) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let status = f.json(1, &["status"]);
        let segments = f.json(1, &["segments"]);
        let pending_in_segments: u64 = segments
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["peers_pending"].as_u64()).sum())
            .unwrap_or(0);
        let (total, now, wait) = (
            status["jobs_pending"].as_u64(),
            status["jobs_in_flight"].as_u64(),
            status["jobs_waiting"].as_u64(),
        );
        f.check(
            total == Some(1)
                && pending_in_segments == 1
                && now.zip(wait).map(|(a, b)| a + b) == Some(1),
            || format!("one pending job: status {status}, segments {segments}"),
        );
        if now == Some(1) {
            trying += 1;
        } else {
            waiting += 1;
        }
        std::thread::sleep(POLL);
    }
    eprintln!("samples: {trying} trying now, {waiting} waiting");
    let o = f.cli(1, &["status"]);
    let jobs = stdout(&o)
        .lines()
        .find(|l| l.starts_with("jobs"))
        .unwrap_or_default()
        .to_owned();
    f.check(
        jobs.contains("1 pending (") && jobs.contains("trying now") && jobs.contains("waiting"),
        || format!("status: {}", stdout(&o)),
    );
    let o = f.cli(1, &["segments"]);
    f.check(
        stdout(&o).contains("acked/pending/dead") && stdout(&o).contains("0/1/0"),
        || format!("segments: {}", stdout(&o)),
    );
}

/// A peer whose certificate another CA signed: `edged peers` says so in words, not as the TLS
/// library's error value.
#[test]
fn a_peer_certificate_of_another_ca_is_said_in_words() {
    let mut f = Fleet::new(2, &[(1, 2)], |_| NodeOptions::default());
    // node-2 gets a CA of its own, which signs its certificate and is the only one it trusts.
    let rogue = f.path("rogue-ca");
    let rogue_node = f.path("rogue-node-2");
    for args in [
        vec!["ca", "init", "--out", p(&rogue)],
        vec![
            "ca",
            "issue",
            "--ca",
            p(&rogue),
            "--node",
            "node-2",
            "--out",
            p(&rogue_node),
        ],
    ] {
        let o = support::edged(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    let config = f.node(2).config.clone();
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replace("../ca/ca.crt", p(&rogue.join("ca.crt")))
        .replace(
            "\"node-2.crt\"",
            &format!("{:?}", p(&rogue_node.join("node-2.crt"))),
        )
        .replace(
            "\"node-2.key\"",
            &format!("{:?}", p(&rogue_node.join("node-2.key"))),
        );
    std::fs::write(&config, text).unwrap();
    f.start(1);
    f.start(2);
    let words = "handshake refused: its certificate is not signed by this fleet's CA";
    f.wait_for(
        "node-1 to say why node-2 is refused",
        Duration::from_secs(30),
        POLL,
        || {
            let peers = f.json(1, &["peers"]);
            peers
                .as_array()?
                .iter()
                .any(|p| p["id"] == "node-2" && p["last_failure"] == words)
                .then_some(())
        },
    );
    let table = f.cli(1, &["peers"]);
    f.check(
        stdout(&table).contains(words) && !stdout(&table).contains("HandshakeRefused"),
        || format!("edged peers:\n{}", stdout(&table)),
    );
}
