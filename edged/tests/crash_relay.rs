//! Real daemons aborted at the named crash points of the relay path (and right after the commit
//! of an import, and in the middle of a pipelined import), then started again: what was
//! committed before the crash is there after it, nothing acknowledged is lost, and every job
//! carries on to its end (INV-03, INV-05, INV-11, INV-12, INV-13, INV-14, INV-15, INV-22).
//!
//! Each test arms one node with `EDGED_CRASH_AT=<point>:1`, drives it to the point through the
//! CLI, checks that it aborted there (SIGABRT, and the point's own message in its log), starts
//! it again unarmed, and checks its ledger (`edged segments --json`, `dlq list --json`), its
//! log and the other node's store. Built only with the `fi` feature (the crash points), see
//! edged/Cargo.toml.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use store::crash;
use support::{Fleet, NodeOptions, p, stderr, stdout};

const POLL: Duration = Duration::from_millis(100);
/// Longest wait for an armed node to reach its crash point.
const CRASH_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a job to end, or a segment to arrive, after the restart.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
const SIGABRT: i32 = 6;
/// The daemons' log filter: the relay's debug events ("attempt started") are what the tests
/// count attempts by.
const LOG_FILTER: &str = "info,relay=debug";
/// Payload of the segment each test relays.
const SEGMENT_BYTES: u64 = 256 * 1024;

/// The relay crash points these tests cover, each by the test of the same step.
const COVERED: &[&str] = &[
    crash::RELAY_AFTER_START_COMMIT,
    crash::RELAY_AFTER_OUTCOME_COMMIT,
    crash::RELAY_AFTER_CATCHUP_COMMIT,
    crash::RELAY_AFTER_REQUEUE_COMMIT,
];

#[test]
fn every_relay_crash_point_has_its_test() {
    assert_eq!(COVERED, crash::RELAY_POINTS);
}

/// A two-node fleet (node-1 ⇄ node-2) with `relay` and `net` keys on both, and one segment on a
/// stick: (fleet, stick, segment id).
fn fleet(relay: &[(&'static str, u64)], catch_up: bool) -> (Fleet, PathBuf, String) {
    let f = Fleet::new(2, &[(1, 2)], |_| {
        let mut o = NodeOptions::default();
        for (k, v) in relay {
            o = o.relay(k, v);
        }
        if !catch_up {
            o = o
                .net("catchup_on_connect", false)
                .net("catchup_interval_ms", 0);
        }
        o
    });
    let usb = f.path("usb");
    std::fs::create_dir(&usb).expect("create the stick");
    let (_, id) = f.make_segment("policy", SEGMENT_BYTES, &usb);
    (f, usb, id)
}

/// Waits until node `i`'s daemon reports a live connection to `peer`.
fn wait_connected(f: &Fleet, i: usize, peer: &str) {
    f.wait_for("the peers to connect", SETTLE_TIMEOUT, POLL, || {
        let peers = f.json(i, &["peers"]);
        peers
            .as_array()?
            .iter()
            .any(|p| p["id"] == peer && p["connected"] == true)
            .then_some(())
    });
}

/// Starts node `i` armed to abort at the first hit of `point`.
fn start_armed(f: &mut Fleet, i: usize, point: &str) {
    let armed = format!("{point}:1");
    f.start_with_env(
        i,
        &[(crash::CRASH_AT_ENV, &armed), ("EDGED_LOG", LOG_FILTER)],
    );
}

/// Starts node `i` unarmed, with the same log filter.
fn restart(f: &mut Fleet, i: usize) {
    f.start_with_env(i, &[("EDGED_LOG", LOG_FILTER)]);
}

/// Waits for node `i` to abort at `point`; fails if it exits otherwise or not in time.
fn wait_crash(f: &mut Fleet, i: usize, point: &str) {
    wait_crash_at(f, i, point, 1);
}

/// Waits for node `i` to abort at the `hit`-th hit of `point`.
fn wait_crash_at(f: &mut Fleet, i: usize, point: &str, hit: u64) {
    let status = f.wait_exit(i, CRASH_TIMEOUT);
    let said = format!("crash point {point} hit {hit} times");
    let log = std::fs::read_to_string(f.node(i).log()).unwrap_or_default();
    f.check(
        status.signal() == Some(SIGABRT) && log.contains(&said),
        || format!("node-{i} did not abort at {point}: {status}"),
    );
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

fn dead_letters(f: &Fleet, i: usize) -> Vec<Value> {
    f.json(i, &["dlq", "list"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until node `i`'s job of `seg` for `peer` ends delivered; returns it.
fn wait_delivered(f: &Fleet, i: usize, seg: &str, peer: &str) -> Value {
    f.wait_for("the job to end delivered", SETTLE_TIMEOUT, POLL, || {
        job(f, i, seg, peer).filter(|j| j["state"] == "delivered")
    })
}

/// Waits until node `i` holds `seg` (listed by its daemon).
fn wait_holds(f: &Fleet, i: usize, seg: &str) {
    f.wait_for("the segment to arrive", SETTLE_TIMEOUT, POLL, || {
        f.segment_ids(i).iter().any(|s| s == seg).then_some(())
    });
}

/// The `(time, fields)` of node `i`'s "attempt started" events for `seg`, from byte `from` on.
fn starts(f: &Fleet, i: usize, from: u64, seg: &str) -> Vec<(SystemTime, Value)> {
    f.events_at(i, from, "attempt started")
        .into_iter()
        .filter(|(_, e)| e["seg_id"] == seg)
        .collect()
}

#[test]
fn inv_05_inv_11_crash_after_an_import_commit_keeps_the_segment_and_its_jobs() {
    let (mut f, usb, id) = fleet(&[], true);
    f.start(2);
    start_armed(&mut f, 1, crash::INGEST_AFTER_COMMIT);
    wait_connected(&f, 1, "node-2");
    let o = f.cli(1, &["import", p(&usb)]);
    // Committed, then killed before the answer: the import was never acknowledged.
    f.check(!o.status.success(), || {
        format!(
            "an import cut short by the crash reported success: {}",
            stderr(&o)
        )
    });
    wait_crash(&mut f, 1, crash::INGEST_AFTER_COMMIT);
    restart(&mut f, 1);
    // The segment was committed together with its job for node-2 (one transaction): both are
    // there after the restart, and the job carries on.
    let j = job(&f, 1, &id, "node-2").unwrap_or_else(|| {
        f.fail("after the crash node-1 holds the segment without its job for node-2")
    });
    f.check(j["state"] == "pending" || j["state"] == "delivered", || {
        format!("job after the restart: {j}")
    });
    wait_delivered(&f, 1, &id, "node-2");
    wait_holds(&f, 2, &id);
}

#[test]
fn inv_05_inv_12_inv_14_crash_after_a_start_commit_keeps_the_attempt_and_its_due_time() {
    // The crash-retry due time of the first attempt is BACKOFF_MS after its start; catch-up is
    // off, so only the relay's own retry can deliver.
    const BACKOFF_MS: u64 = 3_000;
    // An event is logged after its commit, a little after the `now` its due time was set from.
    const LOG_LAG_MAX: Duration = Duration::from_millis(500);
    let (mut f, usb, id) = fleet(
        &[
            ("backoff_base_ms", BACKOFF_MS),
            ("backoff_max_ms", BACKOFF_MS),
        ],
        false,
    );
    f.start(2);
    start_armed(&mut f, 1, crash::RELAY_AFTER_START_COMMIT);
    wait_connected(&f, 1, "node-2");
    // The crash may come before the import is answered: the answer is not checked. A job
    // starts only once its segment is committed, and the checks after the restart see both.
    let _ = f.cli(1, &["import", p(&usb)]);
    wait_crash(&mut f, 1, crash::RELAY_AFTER_START_COMMIT);
    let first = starts(&f, 1, 0, &id);
    f.check(first.len() == 1 && first[0].1["attempt_num"] == 1, || {
        format!("before the crash: {first:?}")
    });
    // The transfer never began.
    f.check(!f.segment_ids(2).contains(&id), || {
        "node-2 holds a segment whose transfer never began".into()
    });

    let restarted = f.log_len(1);
    restart(&mut f, 1);
    let j = wait_delivered(&f, 1, &id, "node-2");
    wait_holds(&f, 2, &id);
    // The attempt recorded before the crash counted: the first one after the restart is the
    // second, and the job counts it besides those of this run.
    let again = starts(&f, 1, restarted, &id);
    f.check(
        !again.is_empty()
            && again[0].1["attempt_num"] == 2
            && j["attempts"] == 1 + again.len() as u64,
        || format!("after the restart: starts {again:?}, job {j}"),
    );
    // Its due time survived too: the retry waited for the backoff from the crashed attempt's
    // start (or the restart itself took that long), it did not run at once.
    let waited = again[0].0.duration_since(first[0].0).unwrap_or_default();
    f.check(
        waited + LOG_LAG_MAX >= Duration::from_millis(BACKOFF_MS),
        || format!("the retry ran {waited:?} after the crashed attempt, before its backoff"),
    );
}

#[test]
fn inv_05_inv_12_inv_13_crash_after_an_outcome_commit_keeps_the_delivery() {
    let (mut f, usb, id) = fleet(&[], false);
    f.start(2);
    start_armed(&mut f, 1, crash::RELAY_AFTER_OUTCOME_COMMIT);
    wait_connected(&f, 1, "node-2");
    // The crash may come before the import is answered: the answer is not checked. A job
    // starts only once its segment is committed, and the checks after the restart see both.
    let _ = f.cli(1, &["import", p(&usb)]);
    wait_crash(&mut f, 1, crash::RELAY_AFTER_OUTCOME_COMMIT);
    wait_holds(&f, 2, &id);

    let restarted = f.log_len(1);
    restart(&mut f, 1);
    // The delivery and the success condition it met were committed: nothing is sent again.
    let j = job(&f, 1, &id, "node-2").unwrap_or_else(|| f.fail("no job after the restart"));
    let row = f
        .segment_row(1, &id)
        .unwrap_or_else(|| f.fail("the segment is gone after the restart"));
    f.check(
        j["state"] == "delivered" && j["attempts"] == 1 && row["propagated_at_ms"].is_u64(),
        || format!("after the restart: job {j}, segment {row}"),
    );
    let again = starts(&f, 1, restarted, &id);
    f.check(again.is_empty(), || format!("sent again: {again:?}"));
}

#[test]
fn inv_05_inv_12_inv_15_crash_after_a_catch_up_commit_keeps_the_completed_dead_letter() {
    // One attempt, while node-2 is down: a dead letter. node-2 then pulls the segment through
    // catch-up, which completes even a dead job; node-1 dies right after committing that.
    let (mut f, usb, id) = fleet(&[("attempts_max", 1)], true);
    start_armed(&mut f, 1, crash::RELAY_AFTER_CATCHUP_COMMIT);
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || format!("import: {}", stderr(&o)));
    f.wait_for("a dead letter for node-2", SETTLE_TIMEOUT, POLL, || {
        (dead_letters(&f, 1).len() == 1).then_some(())
    });
    f.start(2);
    wait_crash(&mut f, 1, crash::RELAY_AFTER_CATCHUP_COMMIT);
    wait_holds(&f, 2, &id);

    restart(&mut f, 1);
    let j = job(&f, 1, &id, "node-2").unwrap_or_else(|| f.fail("no job after the restart"));
    let row = f
        .segment_row(1, &id)
        .unwrap_or_else(|| f.fail("the segment is gone after the restart"));
    f.check(
        j["state"] == "delivered" && row["propagated_at_ms"].is_u64(),
        || format!("after the restart: job {j}, segment {row}"),
    );
    f.check(dead_letters(&f, 1).is_empty(), || {
        "the dead letter completed by catch-up is listed again".into()
    });
}

#[test]
fn inv_05_inv_14_inv_22_crash_after_a_requeue_commit_keeps_the_requeue() {
    // A few attempts: after the restart the first may still find node-2's connection coming up.
    const ATTEMPTS_MAX: u64 = 3;
    let (mut f, usb, id) = fleet(&[("attempts_max", ATTEMPTS_MAX)], false);
    start_armed(&mut f, 1, crash::RELAY_AFTER_REQUEUE_COMMIT);
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || format!("import: {}", stderr(&o)));
    f.wait_for("a dead letter for node-2", SETTLE_TIMEOUT, POLL, || {
        (dead_letters(&f, 1).len() == 1).then_some(())
    });
    let o = f.cli(1, &["dlq", "requeue", "--peer", "node-2"]);
    f.check(!o.status.success(), || {
        format!(
            "a requeue cut short by the crash reported success: {}",
            stderr(&o)
        )
    });
    wait_crash(&mut f, 1, crash::RELAY_AFTER_REQUEUE_COMMIT);

    f.start(2);
    restart(&mut f, 1);
    // The requeue was committed: no dead letter, and the job, pending again with fresh
    // attempts, is delivered by this run.
    f.check(dead_letters(&f, 1).is_empty(), || {
        "the requeued job is a dead letter again after the restart".into()
    });
    let j = wait_delivered(&f, 1, &id, "node-2");
    f.check(
        j["attempts"]
            .as_u64()
            .is_some_and(|a| (1..ATTEMPTS_MAX).contains(&a)),
        || format!("a requeued job starts with fresh attempts: {j}"),
    );
    wait_holds(&f, 2, &id);
    // Requeued once: a second requeue finds nothing to do.
    let o = f.cli(1, &["dlq", "requeue", "--peer", "node-2"]);
    f.check(
        o.status.code() == Some(0) && stdout(&o).contains("nothing requeued"),
        || format!("second requeue: {} {} {}", o.status, stdout(&o), stderr(&o)),
    );
}

/// Small segments on a stick of node 1, each 2 KiB: (stick, ids).
fn small_segments(f: &Fleet, count: usize) -> (PathBuf, Vec<String>) {
    let usb = f.path("usb");
    std::fs::create_dir(&usb).expect("create the stick");
    let ids = (0..count)
        .map(|i| f.make_segment(&format!("s-{i:03}"), 2048, &usb).1)
        .collect();
    (usb, ids)
}

/// Starts node 1 armed to abort at the `hit`-th hit of `point`, imports 60 small segments
/// pipelined (16 in flight), and checks after the crash and a restart that every import that
/// was acknowledged is stored, and that importing again completes the set.
fn pipelined_import_crash(point: &str, hit: u64) {
    const SEGMENTS: usize = 60;
    let mut f = Fleet::new(1, &[], |_| {
        NodeOptions::default().control("import_window", 16)
    });
    let (usb, ids) = small_segments(&f, SEGMENTS);
    let armed = format!("{point}:{hit}");
    f.start_with_env(
        1,
        &[(crash::CRASH_AT_ENV, &armed), ("EDGED_LOG", LOG_FILTER)],
    );
    let o = f.cli(1, &["import", p(&usb), "--json"]);
    let status = f.wait_exit(1, CRASH_TIMEOUT);
    let log = std::fs::read_to_string(f.node(1).log()).unwrap_or_default();
    f.check(
        status.signal() == Some(SIGABRT)
            && log.contains(&format!("crash point {point} hit {hit} times")),
        || format!("node-1 did not abort at {point}: {status}"),
    );
    let lines: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let acknowledged: Vec<String> = lines
        .iter()
        .filter(|l| l["status"] == "imported")
        .filter_map(|l| l["id"].as_str().map(str::to_owned))
        .collect();
    f.check(
        !o.status.success() && lines.len() == SEGMENTS && acknowledged.len() < SEGMENTS,
        || format!("the import did not see the crash: {}", stderr(&o)),
    );
    restart(&mut f, 1);
    let held = f.segment_ids(1);
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !held.contains(id))
        .collect();
    f.check(lost.is_empty(), || {
        format!(
            "{} of {} acknowledged imports lost in the crash: {lost:?}",
            lost.len(),
            acknowledged.len()
        )
    });
    // Whatever the crash cut is imported again, and nothing is stored twice.
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || {
        format!("import again: {}", stderr(&o))
    });
    let mut held = f.segment_ids(1);
    held.sort();
    let mut want = ids.clone();
    want.sort();
    f.check(held == want, || format!("after importing again: {held:?}"));
}

#[test]
fn inv_03_inv_05_a_crash_in_the_middle_of_a_pipelined_import_loses_nothing_acknowledged() {
    // The 20th ingest to reach it aborts the daemon while others are in flight around it.
    pipelined_import_crash(crash::INGEST_AFTER_DIR_FSYNC, 20);
}

#[test]
fn inv_03_inv_05_a_crash_inside_a_group_commit_of_imports_loses_nothing_acknowledged() {
    // The second batch of several ingests: their rows are written, not committed.
    pipelined_import_crash(crash::COMMIT_GROUP_BEFORE_COMMIT, 2);
}

#[test]
fn inv_03_inv_05_a_crash_right_after_a_group_commit_of_imports_loses_nothing_acknowledged() {
    // The second batch of several ingests is durable, none of them answered yet.
    pipelined_import_crash(crash::COMMIT_GROUP_AFTER_COMMIT, 2);
}

/// Many small segments pushed at once reach node 2's committer together; node 2 dies inside
/// one of their group commits. What node 1 recorded as delivered is on node 2 byte for byte
/// after the restart, and the rest arrives.
#[test]
fn inv_03_inv_05_a_receiver_killed_inside_a_group_commit_loses_nothing_it_acknowledged() {
    const SEGMENTS: usize = 60;
    const GROUP_COMMIT_HIT: u64 = 4;
    let point = crash::COMMIT_GROUP_BEFORE_COMMIT;
    let mut f = Fleet::new(2, &[(1, 2)], |_| {
        NodeOptions::default()
            .relay("backoff_base_ms", 200)
            .relay("backoff_max_ms", 1_000)
            .net("catchup_on_connect", false)
            .net("catchup_interval_ms", 0)
    });
    let (usb, ids) = small_segments(&f, SEGMENTS);
    // The fourth group commit: earlier ones were acknowledged, and node-1 recorded them.
    let armed = format!("{point}:{GROUP_COMMIT_HIT}");
    f.start_with_env(
        2,
        &[(crash::CRASH_AT_ENV, &armed), ("EDGED_LOG", LOG_FILTER)],
    );
    restart(&mut f, 1);
    wait_connected(&f, 1, "node-2");
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || format!("import: {}", stderr(&o)));
    wait_crash_at(&mut f, 2, point, GROUP_COMMIT_HIT);
    let delivered: Vec<&String> = ids
        .iter()
        .filter(|id| job(&f, 1, id, "node-2").is_some_and(|j| j["state"] == "delivered"))
        .collect();
    f.check(!delivered.is_empty() && delivered.len() < SEGMENTS, || {
        format!(
            "{} of {SEGMENTS} delivered before the crash: the crash must fall among them",
            delivered.len()
        )
    });
    // On disk before node 2 runs again: recovery must not be what makes them whole.
    let layout = store::layout::Layout::new(f.node(2).data_dir());
    for id in &delivered {
        let seg_id: store::SegmentId = id.parse().expect("segment id");
        let stored = std::fs::read(layout.segment_file(&seg_id)).unwrap_or_default();
        let offered = std::fs::read(usb.join(format!(
            "s-{:03}.seg",
            ids.iter().position(|i| i == *id).unwrap()
        )))
        .expect("read the stick");
        f.check(stored == offered, || {
            format!("{id} was acknowledged to node-1 but is not whole on node-2")
        });
    }
    restart(&mut f, 2);
    let held = f.segment_ids(2);
    let lost: Vec<&&String> = delivered.iter().filter(|id| !held.contains(id)).collect();
    f.check(lost.is_empty(), || {
        format!("delivered, then lost in the crash: {lost:?}")
    });
    for id in &ids {
        wait_holds(&f, 2, id);
    }
}
