//! Completion by catch-up (INV-15): when a peer pulled a segment from this node and acknowledged
//! it (or answered "have"), the network layer calls `Relay::delivered_out_of_band*` and the job
//! for that peer ends delivered — pending, in flight or dead-lettered — with the success
//! condition checked in the same transaction as for any delivery (INV-13).

mod common;

use common::*;
use relay::core::Verdict;
use relay::harness::segments::Publisher;
use relay::harness::sim::{Link, topology};
use relay::ledger::{Applied, OutcomeIn, Purge, Start};
use relay::tables::JobState;
use relay::{JobKey, OutOfBand, Outcome, Relay};
use store::fs::sim::SimFs;
use store::manifest::SuccessCondition;
use store::{IngestOptions, IngestOutcome, SegmentId, Store};

const EVENTS_MAX: u64 = 200_000;

fn ingest(relay: &Relay, file: &[u8], opts: &IngestOptions) -> SegmentId {
    match relay.ingest_reader(file, opts, T0).unwrap() {
        IngestOutcome::Stored(s) => s.id,
        other => panic!("{other:?}"),
    }
}

/// Starts every due job; `key`'s attempt ends with `outcome`, the others are left in flight.
fn start_all(relay: &Relay, now: u64) -> Vec<JobKey> {
    let picked = relay.pick(now, usize::MAX);
    relay
        .record_starts_blocking(picked, now)
        .unwrap()
        .into_iter()
        .filter_map(|s| match s {
            Start::Started { key, .. } => Some(key),
            Start::Skipped { .. } => None,
        })
        .collect()
}

fn end(relay: &Relay, k: &JobKey, outcome: Outcome, now: u64) -> Applied {
    relay
        .apply_outcomes_blocking(
            vec![OutcomeIn {
                key: k.clone(),
                outcome,
                jitter_sample: 0,
            }],
            now,
        )
        .unwrap()
        .remove(0)
}

fn states(relay: &Relay, seg: &SegmentId) -> Vec<(String, JobState)> {
    relay
        .status(seg)
        .unwrap()
        .unwrap()
        .jobs
        .iter()
        .map(|j| (j.peer.to_string(), j.state))
        .collect()
}

fn pins(store: &Store) -> Vec<String> {
    store.list().unwrap()[0].pins.clone()
}

#[test]
fn inv_15_catch_up_completes_a_pending_job() {
    let publisher = Publisher::from_seed(61);
    let fs = SimFs::new();
    let (store, relay) = open(&fs, &publisher, node_cfg(&["a", "b"]), T0);
    let (_, file) = publisher.segment(&spec("s"));
    let seg = ingest(&relay, &file, &IngestOptions::import());
    let (got, logs) =
        capture_logs(|| relay.delivered_out_of_band_blocking(seg, &peer("a"), T0 + 5));
    assert_eq!(
        got.unwrap(),
        OutOfBand::Completed {
            was: JobState::Pending,
            purged: false
        }
    );
    let row = relay.job(&key(seg, "a")).unwrap().unwrap();
    assert_eq!((row.state, row.counts.attempts), (JobState::Delivered, 0));
    assert_eq!(pins(&store), ["relay:b"], "a is owed nothing any more");
    // Only b is left to the scheduler.
    let scheduled: Vec<JobKey> = relay.scheduled().into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(scheduled, [key(seg, "b")]);
    let status = relay.status(&seg).unwrap().unwrap();
    assert_eq!((status.tally.delivered, status.tally.pending), (1, 1));
    assert_eq!(
        status.verdict,
        Verdict::NotYet,
        "all_peers: b still pending"
    );
    let line = logs
        .lines()
        .find(|l| l.contains("segment delivered"))
        .expect("logged");
    assert!(
        line.contains("peer_id=a") && line.contains("was=pending") && line.contains("via=catch_up"),
        "{line}"
    );

    // b by an ordinary attempt: all_peers now holds, marked in that transaction.
    let started = start_all(&relay, T0 + 10);
    assert_eq!(started, [key(seg, "b")]);
    let ((), logs) = capture_logs(|| {
        end(&relay, &key(seg, "b"), Outcome::Delivered, T0 + 20);
    });
    assert!(
        logs.contains("success condition met") && logs.contains("acked_count=2"),
        "{logs}"
    );
    assert!(logs.contains("via=push"), "{logs}");
    assert!(store.get(&seg).unwrap().unwrap().propagated_at_ms.is_some());
    assert!(pins(&store).is_empty());
}

#[test]
fn inv_15_dead_letter_completed_by_catch_up_releases_its_pin_and_all_peers_holds() {
    let publisher = Publisher::from_seed(62);
    let fs = SimFs::new();
    let mut cfg = node_cfg(&["a", "b"]);
    cfg.attempts_max = 1;
    let (store, relay) = open(&fs, &publisher, cfg.clone(), T0);
    let (_, file) = publisher.segment(&spec("s"));
    let seg = ingest(&relay, &file, &IngestOptions::import());
    start_all(&relay, T0);
    end(
        &relay,
        &key(seg, "a"),
        Outcome::Unreachable("down".into()),
        T0 + 1,
    );
    end(&relay, &key(seg, "b"), Outcome::Delivered, T0 + 1);
    assert_eq!(relay.dead_letters().unwrap().len(), 1);
    assert_eq!(pins(&store), ["relay:a"], "the dead letter pins");
    let status = relay.status(&seg).unwrap().unwrap();
    assert_eq!(status.verdict, Verdict::NotYet, "never by dead-lettering");
    assert!(status.propagated_at_ms.is_none());
    assert_eq!(
        relay.next_wake_ms(),
        Some(T0 + 1 + cfg.dead_letter_pin_max_age_ms),
        "the pin's release is due"
    );

    // a pulled it from us during catch-up, long after the dead letter.
    let now = T0 + 60_000;
    let (got, logs) = capture_logs(|| relay.delivered_out_of_band_blocking(seg, &peer("a"), now));
    assert_eq!(
        got.unwrap(),
        OutOfBand::Completed {
            was: JobState::Dead,
            purged: false
        }
    );
    assert!(
        relay.dead_letters().unwrap().is_empty(),
        "resolved: out of the queue"
    );
    assert!(pins(&store).is_empty(), "its pin released");
    assert_eq!(
        relay.next_wake_ms(),
        None,
        "no pin release left to wait for"
    );
    let status = relay.status(&seg).unwrap().unwrap();
    assert_eq!(
        states(&relay, &seg),
        [
            ("a".to_owned(), JobState::Delivered),
            ("b".to_owned(), JobState::Delivered)
        ]
    );
    assert_eq!(status.jobs[0].dead_at_ms, None);
    assert_eq!(
        (
            status.jobs[0].attempts,
            status.jobs[0].last_error.as_deref()
        ),
        (1, Some("unreachable: down")),
        "the row keeps its history"
    );
    assert_eq!(status.verdict, Verdict::Holds);
    assert_eq!(status.propagated_at_ms, Some(now), "all_peers holds now");
    assert_eq!(
        store.get(&seg).unwrap().unwrap().propagated_at_ms,
        Some(now)
    );
    assert!(logs.contains("was=dead"), "{logs}");
    assert!(logs.contains("via=catch_up"), "{logs}");
    assert!(
        logs.contains("success condition met") && logs.contains("acked_count=2"),
        "{logs}"
    );

    // It all survives a restart (INV-14): no dead letter, no pin, nothing to wake for.
    drop((store, relay));
    let (store, relay) = open(&fs, &publisher, cfg, now + 10);
    assert!(relay.dead_letters().unwrap().is_empty());
    assert!(pins(&store).is_empty());
    assert_eq!(relay.next_wake_ms(), None);
    let c = relay.counters().unwrap();
    assert_eq!((c.jobs.delivered, c.jobs.dead, c.jobs.total()), (2, 0, 2));
}

#[test]
fn inv_15_purged_dead_letter_completed_by_catch_up_is_delivered_and_all_peers_can_hold() {
    let publisher = Publisher::from_seed(63);
    let fs = SimFs::new();
    let mut cfg = node_cfg(&["a"]);
    cfg.attempts_max = 1;
    let (store, relay) = open(&fs, &publisher, cfg, T0);
    let (_, file) = publisher.segment(&spec("s"));
    let seg = ingest(&relay, &file, &IngestOptions::import());
    start_all(&relay, T0);
    end(&relay, &key(seg, "a"), Outcome::Failed("eio".into()), T0);
    assert_eq!(
        relay.purge_blocking(&key(seg, "a"), T0).unwrap(),
        Purge::Purged
    );
    assert_eq!(relay.status(&seg).unwrap().unwrap().verdict, Verdict::Never);
    let got = relay
        .delivered_out_of_band_blocking(seg, &peer("a"), T0 + 100)
        .unwrap();
    assert_eq!(
        got,
        OutOfBand::Completed {
            was: JobState::Dead,
            purged: true
        }
    );
    let status = relay.status(&seg).unwrap().unwrap();
    assert_eq!(status.jobs[0].state, JobState::Delivered);
    assert!(!status.jobs[0].purged);
    assert_eq!((status.tally.purged, status.tally.delivered), (0, 1));
    assert_eq!(status.propagated_at_ms, Some(T0 + 100));
    assert!(pins(&store).is_empty());
    let c = relay.counters().unwrap();
    assert_eq!((c.jobs.purged, c.jobs.delivered), (0, 1));
}

#[test]
fn inv_13_inv_15_one_peer_completion_by_catch_up_cancels_the_rest() {
    let publisher = Publisher::from_seed(64);
    let fs = SimFs::new();
    let mut cfg = node_cfg(&["a", "b", "c"]);
    cfg.attempts_max = 1;
    let (store, relay) = open(&fs, &publisher, cfg, T0);
    let (_, file) = publisher.segment(&spec("s").condition(SuccessCondition::OnePeer));
    let seg = ingest(&relay, &file, &IngestOptions::import());
    // c becomes a dead letter; a and b stay pending (busy: retried later, not counted).
    start_all(&relay, T0);
    end(&relay, &key(seg, "a"), Outcome::Busy, T0);
    end(&relay, &key(seg, "b"), Outcome::Busy, T0);
    end(
        &relay,
        &key(seg, "c"),
        Outcome::Unreachable("down".into()),
        T0,
    );
    assert_eq!(pins(&store), ["relay:a", "relay:b", "relay:c"]);

    let (got, logs) =
        capture_logs(|| relay.delivered_out_of_band_blocking(seg, &peer("b"), T0 + 50));
    assert!(matches!(got.unwrap(), OutOfBand::Completed { .. }));
    assert_eq!(
        states(&relay, &seg),
        [
            ("a".to_owned(), JobState::Cancelled),
            ("b".to_owned(), JobState::Delivered),
            ("c".to_owned(), JobState::Cancelled)
        ]
    );
    assert!(pins(&store).is_empty(), "nothing owed");
    assert!(relay.dead_letters().unwrap().is_empty());
    assert_eq!(relay.pending_count(), 0);
    assert_eq!(relay.next_wake_ms(), None);
    let status = relay.status(&seg).unwrap().unwrap();
    assert_eq!(status.propagated_at_ms, Some(T0 + 50));
    assert!(
        logs.contains("condition=one_peer acked_count=1"),
        "marked in the same transaction: {logs}"
    );
    assert!(logs.contains("one_peer condition met"), "{logs}");
    let c = relay.counters().unwrap();
    assert_eq!(
        (c.jobs.delivered, c.jobs.cancelled, c.jobs.total()),
        (1, 2, 3)
    );
    assert_eq!((c.totals.delivered_by_catch_up, c.totals.cancelled), (1, 2));
}

#[test]
fn inv_15_catch_up_is_idempotent() {
    let publisher = Publisher::from_seed(65);
    let fs = SimFs::new();
    let (store, relay) = open(&fs, &publisher, node_cfg(&["a", "b"]), T0);
    let (_, file) = publisher.segment(&spec("s"));
    let seg = ingest(&relay, &file, &IngestOptions::import());
    let ((first, second, third), logs) = capture_logs(|| {
        (
            relay.delivered_out_of_band_blocking(seg, &peer("a"), T0 + 1),
            relay.delivered_out_of_band_blocking(seg, &peer("a"), T0 + 2),
            relay.delivered_out_of_band_blocking(seg, &peer("a"), T0 + 3),
        )
    });
    assert!(matches!(first.unwrap(), OutOfBand::Completed { .. }));
    assert_eq!(second.unwrap(), OutOfBand::Ended(JobState::Delivered));
    assert_eq!(third.unwrap(), OutOfBand::Ended(JobState::Delivered));
    let row = relay.job(&key(seg, "a")).unwrap().unwrap();
    assert_eq!(row.updated_at_ms, T0 + 1, "the later calls changed nothing");
    assert_eq!(logs.matches("via=catch_up").count(), 1, "{logs}");
    let status = relay.status(&seg).unwrap().unwrap();
    assert_eq!((status.tally.delivered, status.tally.pending), (1, 1));
    assert_eq!(pins(&store), ["relay:b"]);
    let c = relay.counters().unwrap();
    assert_eq!(c.totals.delivered_by_catch_up, 1);
    assert_eq!((c.jobs.delivered, c.jobs.pending), (1, 1));
    // Async form, same answer.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let again = rt
        .block_on(relay.delivered_out_of_band(seg, &peer("a"), T0 + 4))
        .unwrap();
    assert_eq!(again, OutOfBand::Ended(JobState::Delivered));
    // b by the async form.
    let b = rt
        .block_on(relay.delivered_out_of_band(seg, &peer("b"), T0 + 5))
        .unwrap();
    assert!(matches!(b, OutOfBand::Completed { .. }));
    assert_eq!(
        relay.status(&seg).unwrap().unwrap().propagated_at_ms,
        Some(T0 + 5)
    );
}

#[test]
fn inv_15_in_flight_job_completed_by_catch_up_then_its_outcome_is_ignored() {
    for outcome in [
        Outcome::Delivered,
        Outcome::Have,
        Outcome::Unreachable("down".into()),
        Outcome::Refused("bad signature".into()),
    ] {
        let publisher = Publisher::from_seed(66);
        let fs = SimFs::new();
        let mut cfg = node_cfg(&["a", "b"]);
        cfg.attempts_max = 1;
        let (store, relay) = open(&fs, &publisher, cfg, T0);
        let (_, file) = publisher.segment(&spec("s"));
        let seg = ingest(&relay, &file, &IngestOptions::import());
        let started = start_all(&relay, T0);
        assert_eq!(started.len(), 2);
        // b ends first, delivered; a is still in flight when a pulls it through catch-up.
        end(&relay, &key(seg, "b"), Outcome::Delivered, T0 + 10);
        assert_eq!(relay.in_flight_count(), 1);
        let got = relay
            .delivered_out_of_band_blocking(seg, &peer("a"), T0 + 20)
            .unwrap();
        assert_eq!(
            got,
            OutOfBand::Completed {
                was: JobState::Pending,
                purged: false
            }
        );
        let status = relay.status(&seg).unwrap().unwrap();
        assert_eq!(status.propagated_at_ms, Some(T0 + 20));
        assert!(status.jobs[0].in_flight, "the transfer still runs");
        let c = relay.counters().unwrap();
        assert_eq!((c.jobs.in_flight, c.transfers_in_flight), (0, 1));
        assert!(c.reconciles(), "{c:?}");

        // Now its own outcome arrives: ignored whatever it says.
        let applied = end(&relay, &key(seg, "a"), outcome.clone(), T0 + 30);
        assert_eq!(
            applied,
            Applied::Ignored {
                state: Some(JobState::Delivered)
            },
            "{outcome:?}"
        );
        assert_eq!(relay.in_flight_count(), 0, "its slot is freed");
        let row = relay.job(&key(seg, "a")).unwrap().unwrap();
        assert_eq!(row.state, JobState::Delivered);
        assert_eq!(row.last_error, None, "{outcome:?} left no trace");
        assert!(relay.dead_letters().unwrap().is_empty());
        assert!(pins(&store).is_empty());
        let status = relay.status(&seg).unwrap().unwrap();
        assert_eq!(
            (status.tally.delivered, status.tally.jobs),
            (2, 2),
            "no double count"
        );
        assert_eq!(status.propagated_at_ms, Some(T0 + 20), "marked once");
        let c = relay.counters().unwrap();
        assert_eq!(c.totals.attempts_started, 2);
        assert_eq!(c.totals.deliveries, 1, "only b's attempt delivered");
        assert_eq!(c.totals.delivered_by_catch_up, 1);
        assert_eq!(c.totals.outcomes_ignored, 1);
        assert_eq!(c.totals.failures(), 0);
        assert_eq!(c.jobs.delivered, 2);
        assert!(c.reconciles(), "{c:?}");
    }
}

#[test]
fn inv_15_catch_up_without_an_owing_job_changes_nothing() {
    let publisher = Publisher::from_seed(67);
    let fs = SimFs::new();
    let (store, relay) = open(&fs, &publisher, node_cfg(&["a", "b", "c"]), T0);
    // From b: no job for b.
    let (_, file) = publisher.segment(&spec("from-b"));
    let seg = ingest(&relay, &file, &IngestOptions::from_peer("b"));
    let before = relay.all_jobs().unwrap();
    assert_eq!(
        relay
            .delivered_out_of_band_blocking(seg, &peer("b"), T0)
            .unwrap(),
        OutOfBand::NoJob,
        "the segment came from b"
    );
    assert_eq!(
        relay
            .delivered_out_of_band_blocking(seg, &peer("zed"), T0)
            .unwrap(),
        OutOfBand::NoJob,
        "not a known peer"
    );
    assert_eq!(
        relay
            .delivered_out_of_band_blocking(SegmentId([7; 32]), &peer("a"), T0)
            .unwrap(),
        OutOfBand::NoJob,
        "never scheduled"
    );
    // Refused and cancelled jobs stay as they are.
    start_all(&relay, T0);
    end(
        &relay,
        &key(seg, "a"),
        Outcome::Refused("untrusted".into()),
        T0,
    );
    assert_eq!(
        relay
            .delivered_out_of_band_blocking(seg, &peer("a"), T0)
            .unwrap(),
        OutOfBand::Ended(JobState::Refused)
    );
    drop((store, relay));
    // c removed from known_peers: its job is cancelled at open.
    let (_store, relay) = open(&fs, &publisher, node_cfg(&["a", "b"]), T0 + 1);
    assert_eq!(
        relay
            .delivered_out_of_band_blocking(seg, &peer("c"), T0 + 1)
            .unwrap(),
        OutOfBand::Ended(JobState::Cancelled)
    );
    let after = relay.all_jobs().unwrap();
    assert_eq!(
        after.iter().map(|(k, r)| (k, r.state)).collect::<Vec<_>>(),
        vec![
            (&key(seg, "a"), JobState::Refused),
            (&key(seg, "c"), JobState::Cancelled)
        ]
    );
    assert_eq!(before.len(), after.len());
}

/// The harness: a peer cut off long enough to be dead-lettered gets the segment through
/// catch-up once the link heals, and the dead letter resolves: all_peers then holds.
#[test]
fn inv_15_harness_dead_lettered_peer_converges_by_catch_up() {
    let publisher = Publisher::from_seed(68);
    let ((), logs) = capture_logs(|| {
        let mut sim = sim(21, 3, &[(0, 1), (0, 2)], &publisher);
        sim.set_link(0, 2, Link::Down);
        let (seg, file) = publisher.segment(&spec("fix"));
        sim.import(0, &file);
        sim.run_for(300_000, EVENTS_MAX);
        assert!(sim.holds(1, &seg) && !sim.holds(2, &seg));
        assert_eq!(sim.relay(0).dead_letters().unwrap().len(), 1);
        assert!(
            sim.relay(0)
                .status(&seg)
                .unwrap()
                .unwrap()
                .propagated_at_ms
                .is_none()
        );
        // Down: no catch-up.
        assert_eq!(sim.catch_up(2, 0), 0);

        sim.set_link(0, 2, Link::Up { latency_ms: 20 });
        assert_eq!(sim.catch_up_all(), 1, "n2 pulls it from n0");
        assert!(sim.holds(2, &seg));
        assert!(sim.relay(0).dead_letters().unwrap().is_empty());
        let status = sim.relay(0).status(&seg).unwrap().unwrap();
        assert!(status.jobs.iter().all(|j| j.state == JobState::Delivered));
        assert!(status.propagated_at_ms.is_some());
        assert!(sim.store(0).list().unwrap()[0].pins.is_empty());
        assert_eq!(sim.catch_up_all(), 0, "in sync");
        // Nothing left to do or to wait for on n0 (no job, no dead-letter pin to release).
        assert_eq!(sim.pending_total(), 0);
        assert_eq!(sim.relay(0).next_wake_ms(), None);
    });
    assert!(
        logs.contains("was=dead") && logs.contains("via=catch_up"),
        "{logs}"
    );
}

/// The harness: under `one_peer` the seeding host stops owing after the first delivery, and
/// catch-up rounds bring the segment to every host of a line (INV-15 "whatever the condition").
#[test]
fn inv_15_harness_one_peer_reaches_every_host_through_catch_up() {
    let publisher = Publisher::from_seed(69);
    let n = 5;
    // A star around n0 whose other links are down, plus a line behind n1.
    let mut edges = vec![(0, 2), (0, 3)];
    edges.extend(topology::line(2));
    edges.extend([(1, 4)]);
    let mut sim = sim(22, n, &edges, &publisher);
    sim.set_link(0, 2, Link::Down);
    sim.set_link(0, 3, Link::Down);
    let (seg, file) = publisher.segment(&spec("one").condition(SuccessCondition::OnePeer));
    sim.import(0, &file);
    sim.run_for(120_000, EVENTS_MAX);
    let status = sim.relay(0).status(&seg).unwrap().unwrap();
    assert!(status.propagated_at_ms.is_some());
    assert!(!sim.holds(2, &seg) && !sim.holds(3, &seg));
    sim.set_link(0, 2, Link::Up { latency_ms: 20 });
    sim.set_link(0, 3, Link::Up { latency_ms: 20 });
    for _ in 0..n {
        if sim.catch_up_all() == 0 {
            break;
        }
        sim.run_for(10_000, EVENTS_MAX);
    }
    for node in 0..n {
        assert!(sim.holds(node, &seg), "node {node}");
    }
    // n0's cancelled jobs stay cancelled (catch-up leaves ended jobs alone).
    let states: Vec<JobState> = sim
        .relay(0)
        .status(&seg)
        .unwrap()
        .unwrap()
        .jobs
        .iter()
        .map(|j| j.state)
        .collect();
    assert_eq!(
        states,
        [
            JobState::Delivered,
            JobState::Cancelled,
            JobState::Cancelled
        ]
    );
}
