//! Direct tests of the ledger on one node: atomic scheduling, re-ingest, cancellation of removed
//! peers, pins of dead letters, purge, expiry.

mod common;

use common::*;
use relay::harness::segments::Publisher;
use relay::ledger::{OutcomeIn, Purge, Requeue, Start};
use relay::tables::JobState;
use relay::{JobKey, Outcome, Relay};
use store::fs::sim::SimFs;
use store::{IngestOptions, IngestOutcome, SegmentId};

fn stored(out: IngestOutcome<relay::Scheduled>) -> SegmentId {
    match out {
        IngestOutcome::Stored(s) => s.id,
        other => panic!("{other:?}"),
    }
}

/// Imports `file` at `T0`; it must be stored.
fn import(relay: &Relay, file: &[u8]) -> SegmentId {
    stored(
        relay
            .ingest_reader(file, &IngestOptions::import(), T0)
            .unwrap(),
    )
}

/// Runs one attempt of `key` with `outcome`.
fn attempt(relay: &Relay, k: &JobKey, outcome: Outcome, now: u64) {
    let picked = relay.pick(now, usize::MAX);
    assert!(picked.contains(k), "{k:?} not due at {now}: {picked:?}");
    let starts = relay.record_starts_blocking(picked.clone(), now).unwrap();
    let mut items = Vec::new();
    for s in starts {
        if let Start::Started { key, .. } = s {
            let o = if key == *k {
                outcome.clone()
            } else {
                Outcome::Busy
            };
            items.push(OutcomeIn {
                key,
                outcome: o,
                jitter_sample: 0,
            });
        }
    }
    relay.apply_outcomes_blocking(items, now).unwrap();
}

#[test]
fn inv_11_jobs_one_per_known_peer_but_the_source_pinned_in_the_ingest_transaction() {
    let publisher = Publisher::from_seed(41);
    let fs = SimFs::new();
    let (store, relay) = open(&fs, &publisher, node_cfg(&["a", "b", "c"]), T0);
    let (_, file) = publisher.segment(&spec("s"));
    let id = stored(
        relay
            .ingest_reader(file.as_slice(), &IngestOptions::from_peer("b"), T0)
            .unwrap(),
    );
    let jobs: Vec<String> = relay
        .all_jobs()
        .unwrap()
        .into_iter()
        .map(|(k, r)| {
            assert_eq!((r.state, r.counts.attempts), (JobState::Pending, 0));
            k.peer.to_string()
        })
        .collect();
    assert_eq!(jobs, ["a", "c"], "none to the source");
    assert_eq!(store.list().unwrap()[0].pins, ["relay:a", "relay:c"]);

    // A receive again (duplicate, retry): one stored copy, one set of jobs (INV-10).
    let again = relay
        .ingest_reader(file.as_slice(), &IngestOptions::from_peer("c"), T0)
        .unwrap();
    assert!(matches!(again, IngestOutcome::AlreadyHave { .. }));
    assert_eq!(relay.all_jobs().unwrap().len(), 2);
    assert_eq!(relay.status(&id).unwrap().unwrap().tally.jobs, 2);
}

#[test]
fn inv_11_a_failed_ingest_transaction_leaves_neither_segment_nor_jobs() {
    let publisher = Publisher::from_seed(42);
    let fs = SimFs::new();
    let (store, relay) = open(&fs, &publisher, node_cfg(&["a", "b"]), T0);
    let (id, file) = publisher.segment(&spec("s"));
    let schedule = relay.schedule_fn(T0);
    let result = store.ingest_reader(
        file.as_slice(),
        &IngestOptions::import(),
        T0,
        move |txn, s| {
            schedule(txn, s)?;
            // The scheduling wrote its rows; the transaction then fails as a storage error would.
            Err::<relay::Scheduled, _>(redb::Error::Corrupted("injected".into()))
        },
    );
    assert!(result.is_err());
    assert!(store.get(&id).unwrap().is_none(), "no segment row");
    assert!(relay.all_jobs().unwrap().is_empty(), "no jobs");
    assert!(relay.status(&id).unwrap().is_none(), "no propagation row");
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn jobs_of_peers_removed_from_known_peers_are_cancelled_at_start() {
    let publisher = Publisher::from_seed(43);
    let fs = SimFs::new();
    let (store, relay) = open(&fs, &publisher, node_cfg(&["a", "b"]), T0);
    let (_, file) = publisher.segment(&spec("s"));
    let id = import(&relay, &file);
    attempt(&relay, &key(id, "a"), Outcome::Delivered, T0);
    drop((store, relay));
    let ((store, relay), logs) =
        capture_logs(|| open(&fs, &publisher, node_cfg(&["a"]), T0 + 1_000));
    let status = relay.status(&id).unwrap().unwrap();
    let states: Vec<_> = status
        .jobs
        .iter()
        .map(|j| (j.peer.to_string(), j.state))
        .collect();
    assert_eq!(
        states,
        [
            ("a".to_owned(), JobState::Delivered),
            ("b".to_owned(), JobState::Cancelled)
        ]
    );
    assert_eq!(
        status.jobs[1].last_error.as_deref(),
        Some("peer no longer in known_peers")
    );
    // Every remaining job is delivered: all_peers now holds, marked in that transaction.
    assert!(status.propagated_at_ms.is_some());
    assert!(store.get(&id).unwrap().unwrap().propagated_at_ms.is_some());
    assert!(store.list().unwrap()[0].pins.is_empty());
    assert!(logs.contains("job cancelled"), "{logs}");
    assert!(logs.contains("success condition met"), "{logs}");
}

#[test]
fn a_reconfigure_cancels_removed_peers_and_schedules_added_ones_for_stored_segments() {
    let publisher = Publisher::from_seed(44);
    let fs = SimFs::new();
    let (store, relay) = open(&fs, &publisher, node_cfg(&["a", "b"]), T0);
    let (_, file) = publisher.segment(&spec("s"));
    let id = import(&relay, &file);
    let mut cfg = node_cfg(&["a", "c"]);
    cfg.attempts_max = 3;
    let done = relay.reconfigure_blocking(cfg, T0 + 1_000).unwrap();
    assert_eq!(
        done,
        relay::Reconfigured {
            cancelled: 1,
            scheduled: 1
        }
    );
    assert_eq!(relay.config().attempts_max, 3);
    let status = relay.status(&id).unwrap().unwrap();
    let states: Vec<_> = status
        .jobs
        .iter()
        .map(|j| (j.peer.to_string(), j.state))
        .collect();
    assert_eq!(
        states,
        [
            ("a".to_owned(), JobState::Pending),
            ("b".to_owned(), JobState::Cancelled),
            ("c".to_owned(), JobState::Pending)
        ]
    );
    // The added peer's job is due and pins the segment like the others.
    assert!(relay.pick(T0 + 1_000, usize::MAX).contains(&key(id, "c")));
    let pins = &store.list().unwrap()[0].pins;
    assert_eq!(pins.len(), 2, "{pins:?}");
    // Once more with the same peers: nothing to do.
    let again = relay
        .reconfigure_blocking(node_cfg(&["a", "c"]), T0 + 2_000)
        .unwrap();
    assert_eq!(again, relay::Reconfigured::default());
    // The node's id cannot change.
    let mut other = node_cfg(&["a"]);
    other.node_id = peer("n9");
    assert!(relay.reconfigure_blocking(other, T0 + 3_000).is_err());
}

#[test]
fn inv_07_dead_letter_pins_until_its_max_age_then_only_the_record_stays() {
    let publisher = Publisher::from_seed(44);
    let fs = SimFs::new();
    let mut cfg = node_cfg(&["a", "b"]);
    cfg.attempts_max = 1;
    let (store, relay) = open(&fs, &publisher, cfg.clone(), T0);
    let (_, file) = publisher.segment(&spec("s"));
    let id = import(&relay, &file);
    attempt(
        &relay,
        &key(id, "a"),
        Outcome::Unreachable("down".into()),
        T0,
    );
    let dead = relay.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key, key(id, "a"));
    assert_eq!(dead[0].last_error, "unreachable: down");
    assert_eq!(
        dead[0].pin_release_at_ms,
        Some(T0 + cfg.dead_letter_pin_max_age_ms)
    );
    // b is still pending (busy answers above): both pins held.
    assert_eq!(store.list().unwrap()[0].pins, ["relay:a", "relay:b"]);
    // Restart: the dead letter and its pin deadline survive (INV-14).
    drop((store, relay));
    let (store, relay) = open(&fs, &publisher, cfg.clone(), T0 + 10);
    assert_eq!(relay.dead_letters().unwrap(), dead);
    assert_eq!(
        relay.next_wake_ms(),
        Some(T0 + cfg.busy_retry_ms),
        "b answered busy: its retry time survives the restart"
    );
    relay
        .age_dead_pins_blocking(T0 + cfg.dead_letter_pin_max_age_ms - 1)
        .unwrap();
    assert_eq!(store.list().unwrap()[0].pins, ["relay:a", "relay:b"]);
    relay
        .age_dead_pins_blocking(T0 + cfg.dead_letter_pin_max_age_ms)
        .unwrap();
    assert_eq!(
        store.list().unwrap()[0].pins,
        ["relay:b"],
        "only a's pin aged out"
    );
    let dead = relay.dead_letters().unwrap();
    assert_eq!(
        (dead.len(), dead[0].pin_release_at_ms),
        (1, None),
        "the record stays"
    );
}

/// What the pin of a dead letter means for eviction: under pressure the dead letter's content is
/// kept (the new segment is refused, retryable) until `dead_letter_pin_max_age_ms`; after it, the
/// content may go to make room while the dead letter itself stays for the operator.
#[test]
fn inv_07_inv_08_dead_letter_content_survives_pressure_until_its_pin_ages_out() {
    let publisher = Publisher::from_seed(46);
    let fs = SimFs::new();
    let mut cfg = node_cfg(&["a"]);
    cfg.attempts_max = 1;
    let (store, relay) = open(&fs, &publisher, cfg.clone(), T0);
    // Each segment is a little over 0.6 MiB: two never fit under the 1 MiB ceiling together.
    let big = |name: &str| publisher.segment(&spec(name).payload_len(640 << 10)).1;
    let owed = stored(
        relay
            .ingest_reader(big("owed").as_slice(), &IngestOptions::import(), T0)
            .unwrap(),
    );
    attempt(
        &relay,
        &key(owed, "a"),
        Outcome::Unreachable("down".into()),
        T0,
    );
    assert_eq!(relay.dead_letters().unwrap().len(), 1);
    let newcomer = big("newcomer");
    let refused = relay.ingest_reader(newcomer.as_slice(), &IngestOptions::import(), T0 + 1);
    match refused {
        Err(e @ store::IngestError::StoreFull { .. }) => assert!(e.is_retryable()),
        other => panic!("the dead letter's content must not be evicted yet: {other:?}"),
    }
    assert!(store.get(&owed).unwrap().is_some());

    let aged = T0 + cfg.dead_letter_pin_max_age_ms;
    relay.age_dead_pins_blocking(aged).unwrap();
    let now_stored = stored(
        relay
            .ingest_reader(newcomer.as_slice(), &IngestOptions::import(), aged)
            .unwrap(),
    );
    assert!(store.get(&now_stored).unwrap().is_some());
    assert!(
        store.get(&owed).unwrap().is_none(),
        "after its pin aged out the content made room"
    );
    let dead = relay.dead_letters().unwrap();
    assert_eq!(
        (dead.len(), dead[0].key.seg, dead[0].pin_release_at_ms),
        (1, owed, None),
        "the dead letter itself stays until purged"
    );
}

#[test]
fn inv_22_purge_removes_the_dead_letter_and_only_its_pin_and_is_logged() {
    let publisher = Publisher::from_seed(45);
    let fs = SimFs::new();
    let mut cfg = node_cfg(&["a", "b"]);
    cfg.attempts_max = 1;
    let (store, relay) = open(&fs, &publisher, cfg, T0);
    let (_, file) = publisher.segment(&spec("s"));
    let id = import(&relay, &file);
    attempt(
        &relay,
        &key(id, "a"),
        Outcome::TimedOut("stalled".into()),
        T0,
    );
    let (results, logs) = capture_logs(|| {
        let first = relay.purge_blocking(&key(id, "a"), T0).unwrap();
        let second = relay.purge_blocking(&key(id, "a"), T0).unwrap();
        let requeue = relay.requeue_blocking(&key(id, "a"), T0).unwrap();
        (first, second, requeue)
    });
    assert_eq!(
        results,
        (
            Purge::Purged,
            Purge::NotDead(JobState::Dead),
            Requeue::Purged
        )
    );
    assert!(relay.dead_letters().unwrap().is_empty());
    assert_eq!(store.list().unwrap()[0].pins, ["relay:b"], "b still owed");
    let status = relay.status(&id).unwrap().unwrap();
    assert!(status.jobs[0].purged);
    assert_eq!(
        status.verdict,
        relay::core::Verdict::Never,
        "all_peers cannot hold now"
    );
    assert!(logs.contains("dead letter purged"), "{logs}");
    assert!(logs.contains("purge did nothing"), "{logs}");
}

#[test]
fn inv_16_an_expired_segment_is_not_relayed_its_jobs_cancel() {
    let publisher = Publisher::from_seed(46);
    let fs = SimFs::new();
    let (store, relay) = open(&fs, &publisher, node_cfg(&["a"]), T0);
    let (_, file) = publisher.segment(&spec("s").expires_at_ms(T0 + 5_000));
    let id = import(&relay, &file);
    attempt(
        &relay,
        &key(id, "a"),
        Outcome::Unreachable("down".into()),
        T0,
    );
    let due = relay.next_wake_ms().unwrap();
    let later = due.max(T0 + 5_000);
    let picked = relay.pick(later, usize::MAX);
    let starts = relay.record_starts_blocking(picked, later).unwrap();
    assert_eq!(
        starts,
        [Start::Skipped {
            key: key(id, "a"),
            why: "segment expired"
        }]
    );
    let row = relay.job(&key(id, "a")).unwrap().unwrap();
    assert_eq!(row.state, JobState::Cancelled);
    assert!(store.list().unwrap()[0].pins.is_empty(), "evictable now");
    assert_eq!(relay.pending_count(), 0);
}

#[test]
fn status_shows_pending_jobs_with_next_due_and_in_flight() {
    let publisher = Publisher::from_seed(47);
    let fs = SimFs::new();
    let (_store, relay) = open(&fs, &publisher, node_cfg(&["a", "b"]), T0);
    let (_, file) = publisher.segment(&spec("s"));
    let id = import(&relay, &file);
    let picked = relay.pick(T0, 1);
    relay.record_starts_blocking(picked, T0).unwrap();
    let status = relay.status(&id).unwrap().unwrap();
    assert_eq!(status.jobs[0].peer.as_str(), "a");
    assert!(status.jobs[0].in_flight);
    assert_eq!(status.jobs[0].attempts, 1);
    assert!(!status.jobs[1].in_flight);
    assert_eq!(status.jobs[1].next_due_ms, Some(T0));
    assert_eq!(status.verdict, relay::core::Verdict::NotYet);
    assert_eq!(status.tally.pending, 2);
}

/// A segment evicted after its jobs ended and imported again (an operator's import revives a
/// tombstoned id) keeps its one set of jobs: nothing is scheduled or sent again (INV-10).
#[test]
fn inv_10_a_re_import_after_eviction_keeps_one_set_of_jobs() {
    let publisher = Publisher::from_seed(47);
    let fs = SimFs::new();
    let (store, relay) = open(&fs, &publisher, node_cfg(&["a", "b"]), T0);
    let (_, file) = publisher.segment(&spec("s"));
    let id = import(&relay, &file);
    attempt(&relay, &key(id, "a"), Outcome::Delivered, T0);
    // b answered busy meanwhile (see `attempt`): it is due again a little later.
    let later = relay.next_wake_ms().expect("b is due again");
    attempt(&relay, &key(id, "b"), Outcome::Have, later);
    let before = relay.all_jobs().unwrap();
    assert!(before.iter().all(|(_, r)| r.state == JobState::Delivered));
    assert_eq!(
        store.evict(&[id]).unwrap(),
        [id],
        "nothing pins it any more"
    );

    let again = stored(
        relay
            .ingest_reader(file.as_slice(), &IngestOptions::import(), later + 1)
            .unwrap(),
    );
    assert_eq!(again, id);
    assert_eq!(
        relay.all_jobs().unwrap(),
        before,
        "the same jobs, unchanged"
    );
    let status = relay.status(&id).unwrap().unwrap();
    assert_eq!((status.tally.jobs, status.tally.delivered), (2, 2));
    assert!(
        relay.pick(T0 + 2, usize::MAX).is_empty(),
        "nothing to send again"
    );
    assert!(
        store.list().unwrap()[0].pins.is_empty(),
        "nothing owed, nothing pinned"
    );
}

/// A requeue restarts a dead letter once; requeuing the job again while it is pending does
/// nothing to it (INV-22).
#[test]
fn inv_22_a_second_requeue_of_a_requeued_job_does_nothing() {
    let publisher = Publisher::from_seed(48);
    let fs = SimFs::new();
    let mut cfg = node_cfg(&["a"]);
    cfg.attempts_max = 2;
    let (_store, relay) = open(&fs, &publisher, cfg, T0);
    let (_, file) = publisher.segment(&spec("s"));
    let id = import(&relay, &file);
    let k = key(id, "a");
    attempt(&relay, &k, Outcome::Unreachable("down".into()), T0);
    let now = relay.next_wake_ms().expect("a retry is due");
    attempt(&relay, &k, Outcome::Unreachable("down".into()), now);
    assert_eq!(relay.dead_letters().unwrap().len(), 1);
    let (first, logs) = capture_logs(|| relay.requeue_blocking(&k, now).unwrap());
    assert_eq!(first, Requeue::Requeued);
    assert!(logs.contains("dead letter requeued"), "{logs}");
    attempt(&relay, &k, Outcome::Unreachable("still down".into()), now);
    let job = relay.job(&k).unwrap().unwrap();
    assert_eq!(
        (job.state, job.counts.attempts, job.requeues),
        (JobState::Pending, 1, 1)
    );

    let (second, logs) = capture_logs(|| relay.requeue_blocking(&k, now).unwrap());
    assert_eq!(second, Requeue::NotDead(JobState::Pending));
    assert!(logs.contains("requeue did nothing"), "{logs}");
    assert_eq!(relay.job(&k).unwrap().unwrap(), job, "the job is untouched");
}

#[test]
fn inv_35_a_higher_sequence_cancels_the_superseded_segments_jobs_and_unpins_it() {
    let publisher = Publisher::from_seed(47);
    let fs = SimFs::new();
    let (store, relay) = open(&fs, &publisher, node_cfg(&["a", "b"]), T0);
    let (v1, f1) = publisher.segment(&spec("app").sequence(1));
    let (v2, f2) = publisher.segment(&spec("app").sequence(2));
    stored(
        relay
            .ingest_reader(f1.as_slice(), &IngestOptions::import(), T0)
            .unwrap(),
    );
    assert_eq!(relay.pending_count(), 2);
    stored(
        relay
            .ingest_reader(f2.as_slice(), &IngestOptions::import(), T0)
            .unwrap(),
    );
    let states: Vec<(SegmentId, String, JobState)> = relay
        .all_jobs()
        .unwrap()
        .into_iter()
        .map(|(k, r)| (k.seg, k.peer.to_string(), r.state))
        .collect();
    for (seg, peer, state) in &states {
        let want = if *seg == v1 {
            JobState::Cancelled
        } else {
            JobState::Pending
        };
        assert_eq!(*state, want, "{peer} {seg}");
    }
    assert_eq!(relay.pending_count(), 2, "only the new release is owed");
    let pins = |id: SegmentId| {
        store
            .list()
            .unwrap()
            .into_iter()
            .find(|s| s.id == id)
            .map(|s| s.pins)
    };
    assert_eq!(pins(v1), Some(vec![]), "the old release is evictable");
    assert_eq!(
        pins(v2),
        Some(vec!["relay:a".to_owned(), "relay:b".to_owned()])
    );
}
