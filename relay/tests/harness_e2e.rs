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
