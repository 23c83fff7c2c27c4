//! End-to-end relay scenarios on the discrete-event harness: real stores and ledgers, virtual
//! time, seeded.

mod common;

use common::*;
use relay::harness::segments::Publisher;
use relay::harness::sim::{Link, topology};
use relay::tables::JobState;
use store::manifest::SuccessCondition;

const EVENTS_MAX: u64 = 200_000;

#[test]
fn inv_13_two_peers_all_peers_both_segments_logged_acked_2() {
    let publisher = Publisher::from_seed(1);
    let ((), logs) = capture_logs(|| {
        // n0 is the seeding host; n1 and n2 are its peers.
        let mut sim = sim(1, 3, &[(0, 1), (0, 2)], &publisher);
        let (a, file_a) = publisher.segment(&spec("policy-a"));
        let (b, file_b) = publisher.segment(&spec("policy-b"));
        sim.import(0, &file_a);
        sim.import(0, &file_b);
        sim.run_for(60_000, EVENTS_MAX);
        for node in 0..3 {
            assert!(sim.holds(node, &a) && sim.holds(node, &b), "node {node}");
        }
        for seg in [a, b] {
            let status = sim.relay(0).status(&seg).unwrap().unwrap();
            assert!(status.propagated_at_ms.is_some());
            assert!(status.jobs.iter().all(|j| j.state == JobState::Delivered));
            assert_eq!(status.jobs.len(), 2);
            assert!(
                sim.store(0)
                    .get(&seg)
                    .unwrap()
                    .unwrap()
                    .propagated_at_ms
                    .is_some()
            );
        }
    });
    let met: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("success condition met") && l.contains("acked_count=2"))
        .collect();
    assert_eq!(met.len(), 2, "logs:\n{logs}");
    assert!(met[0].contains("condition=all_peers"), "{}", met[0]);
    assert!(logs.contains("segment delivered seg_id="), "{logs}");
    assert!(logs.contains("attempt_num=1"), "{logs}");
}

#[test]
fn inv_13_one_peer_first_delivery_cancels_the_rest_and_network_converges() {
    let publisher = Publisher::from_seed(2);
    let ((), logs) = capture_logs(|| {
        // n0 is the hub; n1 reaches n2 and n3 too. n0 cannot reach n2 and n3 directly.
        let edges = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)];
        let mut sim = sim(2, 4, &edges, &publisher);
        sim.set_link(0, 2, Link::Down);
        sim.set_link(0, 3, Link::Down);
        let (seg, file) = publisher.segment(&spec("one").condition(SuccessCondition::OnePeer));
        sim.import(0, &file);
        sim.run_for(120_000, EVENTS_MAX);
        let status = sim.relay(0).status(&seg).unwrap().unwrap();
        assert!(status.propagated_at_ms.is_some());
        let states: Vec<(String, JobState)> = status
            .jobs
            .iter()
            .map(|j| (j.peer.to_string(), j.state))
            .collect();
        assert_eq!(
            states,
            vec![
                ("n1".into(), JobState::Delivered),
                ("n2".into(), JobState::Cancelled),
                ("n3".into(), JobState::Cancelled),
            ]
        );
        for node in 0..4 {
            assert!(sim.holds(node, &seg), "node {node} holds it through n1");
        }
        // n0 owes nothing any more: no pin, nothing pending.
        assert!(sim.store(0).list().unwrap()[0].pins.is_empty());
        assert_eq!(sim.relay(0).pending_count(), 0);
    });
    assert!(
        logs.contains("success condition met") && logs.contains("condition=one_peer acked_count=1"),
        "{logs}"
    );
    assert!(logs.contains("one_peer condition met"), "{logs}");
}

fn converges(name: &str, seed: u64, n: usize, edges: &[(usize, usize)]) {
    let publisher = Publisher::from_seed(3);
    let mut sim = sim(seed, n, edges, &publisher);
    let (seg, file) = publisher.segment(&spec(name));
    sim.import(0, &file);
    sim.run_for(600_000, EVENTS_MAX);
    for node in 0..n {
        assert!(sim.holds(node, &seg), "{name}: node {node}");
        // One set of jobs per node: at most one job per known peer, none to its source.
        let jobs = sim.jobs(node);
        let source = sim.store(node).get(&seg).unwrap().unwrap().source;
        assert!(jobs.iter().all(|(k, _)| k.peer.as_str() != source));
        assert!(
            jobs.iter()
                .all(|(_, r)| r.state == JobState::Delivered && r.counts.attempts == 1),
            "{name}: node {node}: {jobs:?}"
        );
        let status = sim.relay(node).status(&seg).unwrap().unwrap();
        assert!(status.propagated_at_ms.is_some(), "{name}: node {node}");
    }
    // Loops terminate: nothing is queued, and each directed edge carried at most one transfer.
    assert!(sim.is_quiet(), "{name}: still busy");
    assert!(
        sim.stats.transfers <= 2 * edges.len() as u64,
        "{name}: {} transfers over {} links",
        sim.stats.transfers,
        edges.len()
    );
}

#[test]
fn inv_10_line_of_5_multi_hop() {
    converges("line", 4, 5, &topology::line(5));
}

#[test]
fn inv_10_ring_terminates() {
    converges("ring", 5, 6, &topology::ring(6));
}

#[test]
fn inv_10_full_mesh_terminates() {
    converges("mesh", 6, 5, &topology::mesh(5));
}

#[test]
fn inv_12_inv_22_peer_down_too_long_dead_letter_then_requeue_delivers() {
    let publisher = Publisher::from_seed(4);
    let ((), logs) = capture_logs(|| {
        let mut sim = sim(7, 2, &[(0, 1)], &publisher);
        sim.set_link(0, 1, Link::Down);
        let (seg, file) = publisher.segment(&spec("fix"));
        sim.import(0, &file);
        sim.run_for(300_000, EVENTS_MAX);
        let dead = sim.relay(0).dead_letters().unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 5, "attempts_max");
        assert!(
            dead[0].last_error.contains("unreachable: no route to n1"),
            "{dead:?}"
        );
        assert!(!sim.holds(1, &seg));
        let status = sim.relay(0).status(&seg).unwrap().unwrap();
        assert_eq!(status.jobs[0].state, JobState::Dead);
        assert!(status.propagated_at_ms.is_none(), "never by dead-lettering");
        // The segment stays pinned while the dead letter is young.
        assert!(
            sim.store(0).list().unwrap()[0]
                .pins
                .contains(&"relay:n1".to_owned())
        );

        sim.set_link(0, 1, Link::Up { latency_ms: 20 });
        let now = sim.now_ms();
        let first = sim
            .relay(0)
            .requeue_peer_blocking(&peer("n1"), now)
            .unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].1, relay::ledger::Requeue::Requeued);
        let key = first[0].0.clone();
        let second = sim.relay(0).requeue_blocking(&key, now).unwrap();
        assert_eq!(
            second,
            relay::ledger::Requeue::NotDead(JobState::Pending),
            "a second requeue does nothing"
        );
        let row = sim.relay(0).job(&key).unwrap().unwrap();
        assert_eq!(
            (row.counts.attempts, row.requeues),
            (0, 1),
            "fresh attempts, once"
        );
        sim.poke(0);
        sim.run_for(60_000, EVENTS_MAX);
        assert!(sim.holds(1, &seg));
        let row = sim.relay(0).job(&key).unwrap().unwrap();
        assert_eq!((row.state, row.counts.attempts), (JobState::Delivered, 1));
        assert!(sim.relay(0).dead_letters().unwrap().is_empty());
        assert!(
            sim.store(0).list().unwrap()[0].pins.is_empty(),
            "nothing owed"
        );
    });
    assert!(logs.contains("dead-lettered"), "{logs}");
    assert!(logs.contains("attempts=5"), "{logs}");
    assert!(
        logs.contains("retry scheduled") && logs.contains("next_attempt_in_ms="),
        "{logs}"
    );
    assert!(logs.contains("dead letter requeued"), "{logs}");
    assert!(logs.contains("requeue did nothing"), "{logs}");
}

#[test]
fn inv_14_restart_mid_retry_keeps_attempts_and_due_time() {
    let publisher = Publisher::from_seed(5);
    for graceful in [false, true] {
        let mut sim = sim(8, 2, &[(0, 1)], &publisher);
        sim.set_link(0, 1, Link::Down);
        let (seg, file) = publisher.segment(&spec("mid"));
        sim.import(0, &file);
        // Attempts at t≈0 (fails at 3 s), ~4 s (fails at 7 s), ~9 s: stop at 8 s, between them.
        sim.run_for(8_000, EVENTS_MAX);
        let key = relay::JobKey {
            seg,
            peer: peer("n1"),
        };
        let before = sim.relay(0).job(&key).unwrap().unwrap();
        assert_eq!(before.counts.attempts, 2);
        assert_eq!(before.state, JobState::Pending);
        let at = sim.now_ms();
        sim.restart_at(at, 0, graceful, 100);
        sim.run_for(150, EVENTS_MAX);
        assert!(sim.is_up(0));
        let after = sim.relay(0).job(&key).unwrap().unwrap();
        assert_eq!(
            after, before,
            "graceful={graceful}: the row survives as it was"
        );
        let status = sim.relay(0).status(&seg).unwrap().unwrap();
        assert_eq!(status.jobs[0].next_due_ms, Some(before.due_ms));
        assert_eq!(status.jobs[0].attempts, 2);
        sim.set_link(0, 1, Link::Up { latency_ms: 20 });
        sim.run_for(60_000, EVENTS_MAX);
        let done = sim.relay(0).job(&key).unwrap().unwrap();
        assert_eq!((done.state, done.counts.attempts), (JobState::Delivered, 3));
    }
}

#[test]
fn inv_14_crash_during_transfer_keeps_the_attempt_graceful_stop_refunds_it() {
    let publisher = Publisher::from_seed(6);
    for graceful in [false, true] {
        let mut sim = sim(9, 2, &[(0, 1)], &publisher);
        sim.set_link(0, 1, Link::Up { latency_ms: 10_000 });
        let (seg, file) = publisher.segment(&spec("slow"));
        sim.import(0, &file);
        let key = relay::JobKey {
            seg,
            peer: peer("n1"),
        };
        // The attempt started at t0 is recorded with a crash-retry due time of t0 + 1 s.
        sim.run_for(500, EVENTS_MAX);
        let started = sim.relay(0).job(&key).unwrap().unwrap();
        assert_eq!(started.counts.attempts, 1);
        assert_eq!(started.due_ms, T0 + 1_000);
        let at = sim.now_ms();
        sim.restart_at(at, 0, graceful, 50);
        sim.run_for(60, EVENTS_MAX);
        let row = sim.relay(0).job(&key).unwrap().unwrap();
        if graceful {
            // Refunded (0), due at once, so started again at boot: 1, not 2.
            assert_eq!(row.counts.attempts, 1);
        } else {
            // Kept, and not retried before its crash-retry due time.
            assert_eq!((row.counts.attempts, row.due_ms), (1, T0 + 1_000));
        }
        sim.run_for(120_000, EVENTS_MAX);
        assert!(sim.holds(1, &seg));
        let done = sim.relay(0).job(&key).unwrap().unwrap();
        let want = if graceful { 1 } else { 2 };
        assert_eq!(
            (done.state, done.counts.attempts),
            (JobState::Delivered, want)
        );
    }
}

#[test]
fn inv_12_store_full_peer_is_retried_longer_not_dead_lettered_faster() {
    let publisher = Publisher::from_seed(7);
    let ((), logs) = capture_logs(|| {
        let cfg = relay::harness::sim::SimConfig::new(10, fast_cfg());
        let mut sim = relay::harness::sim::Sim::with_overrides(
            cfg,
            2,
            &[(0, 1)],
            &publisher.trusted(),
            |i| relay::harness::sim::NodeOverrides {
                // n1's store cannot hold the 64 KiB segment.
                ceiling_bytes: (i == 1).then_some(16 * 1024),
                ..Default::default()
            },
        );
        let (seg, file) = publisher.segment(&spec("big").payload_len(64 * 1024));
        sim.import(0, &file);
        let key = relay::JobKey {
            seg,
            peer: peer("n1"),
        };
        // Five ordinary failures would be dead by now (~1+2+4+8 s of backoff).
        sim.run_for(40_000, EVENTS_MAX);
        let row = sim.relay(0).job(&key).unwrap().unwrap();
        assert_eq!(row.state, JobState::Pending, "{row:?}");
        assert_eq!(
            row.counts.attempts, 0,
            "store-full is not an ordinary attempt"
        );
        assert!(row.counts.store_full_attempts >= 3, "{row:?}");
        assert!(row.last_error.as_deref().unwrap().starts_with("store_full"));
        sim.run_for(600_000, EVENTS_MAX);
        let dead = sim.relay(0).dead_letters().unwrap();
        assert_eq!(dead.len(), 1, "it still ends in a dead letter");
        assert_eq!(dead[0].store_full_attempts, 10);
        assert!(dead[0].attempts <= 5);
    });
    // Every store-full retry waited at least the floor (4 s) less jitter (20%).
    for line in logs.lines().filter(|l| l.contains("retry scheduled")) {
        let delay: u64 = line
            .split("next_attempt_in_ms=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .expect("delay field");
        assert!((3_200..=16_000).contains(&delay), "{line}");
    }
}

#[test]
fn refused_ends_the_job_and_all_peers_can_never_hold() {
    let publisher = Publisher::from_seed(8);
    let ((), logs) = capture_logs(|| {
        let cfg = relay::harness::sim::SimConfig::new(11, fast_cfg());
        let mut sim = relay::harness::sim::Sim::with_overrides(
            cfg,
            3,
            &[(0, 1), (0, 2)],
            &publisher.trusted(),
            |i| relay::harness::sim::NodeOverrides {
                trusted: (i == 2).then(Default::default),
                ..Default::default()
            },
        );
        let (seg, file) = publisher.segment(&spec("untrusted-at-n2"));
        sim.import(0, &file);
        sim.run_for(60_000, EVENTS_MAX);
        let status = sim.relay(0).status(&seg).unwrap().unwrap();
        assert_eq!(status.jobs[0].state, JobState::Delivered);
        assert_eq!(status.jobs[1].state, JobState::Refused);
        assert!(
            status.jobs[1]
                .last_error
                .as_deref()
                .unwrap()
                .contains("not trusted")
        );
        assert_eq!(status.verdict, relay::core::Verdict::Never);
        assert!(status.propagated_at_ms.is_none());
        assert!(
            sim.store(0).list().unwrap()[0].pins.is_empty(),
            "refused owes nothing"
        );
    });
    assert!(logs.contains("job refused"), "{logs}");
    assert!(
        logs.contains("success condition can no longer hold"),
        "{logs}"
    );
}

#[test]
fn inv_14_clock_jumps_on_a_node_neither_lose_nor_freeze_its_jobs() {
    let publisher = Publisher::from_seed(9);
    let mut sim = sim(12, 2, &[(0, 1)], &publisher);
    sim.set_link(0, 1, Link::Down);
    let (seg, file) = publisher.segment(&spec("jump"));
    sim.import(0, &file);
    // The first attempt fails at 3 s (connect timeout); the retry waits ~1 s: jump meanwhile.
    sim.run_for(3_500, EVENTS_MAX);
    assert_eq!(sim.relay(0).in_flight_count(), 0, "waiting for its retry");
    // Back a day, then heal: the retry comes within one maximal backoff, not a day later.
    sim.jump_clock(0, -86_400_000);
    sim.set_link(0, 1, Link::Up { latency_ms: 20 });
    sim.run_for(fast_cfg().backoff_max_ms + 1_000, EVENTS_MAX);
    assert!(sim.holds(1, &seg));
    // Forward: nothing is lost either (the clock is set right again first, so the new segment
    // is not "created in the future" here).
    sim.jump_clock(0, 86_400_000);
    let (seg2, file2) = publisher.segment(&spec("jump-2"));
    sim.set_link(0, 1, Link::Down);
    sim.import(0, &file2);
    sim.run_for(2_000, EVENTS_MAX);
    sim.jump_clock(0, 86_400_000);
    sim.set_link(0, 1, Link::Up { latency_ms: 20 });
    sim.run_for(fast_cfg().backoff_max_ms + 1_000, EVENTS_MAX);
    assert!(sim.holds(1, &seg2));
}
