//! Counters for metrics (INV-26, the relay half): jobs by state equal the ledger's jobs, the
//! counts survive restarts and are rebuilt for a database that predates them, and the totals
//! reconcile — `attempts_started = deliveries + failures + outcomes_ignored + refunded +
//! transfers_in_flight`, with `failures = retries_scheduled + (dead_lettered −
//! dead_lettered_at_start) + refused` — at every point of a faulty harness run.

mod common;

use std::collections::BTreeSet;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use relay::harness::segments::Publisher;
use relay::harness::sim::{Link, NodeOverrides, Sim, SimConfig, topology};
use relay::ledger::{OutcomeIn, Start};
use relay::tables::JobState;
use relay::{JobCounts, JobKey, Outcome, Relay, RelayCounters, RelayTotals};
use store::fs::sim::SimFs;
use store::manifest::SuccessCondition;
use store::{IngestOptions, IngestOutcome};

const EVENTS_MAX: u64 = 400_000;

/// Jobs by state as a scan of the whole ledger and the scheduler sees them.
fn scanned(relay: &Relay) -> JobCounts {
    let in_flight: BTreeSet<JobKey> = relay
        .scheduled()
        .into_iter()
        .filter(|(_, _, f)| *f)
        .map(|(k, _, _)| k)
        .collect();
    let mut c = JobCounts::default();
    for (k, row) in relay.all_jobs().unwrap() {
        let slot = match row.state {
            JobState::Pending if in_flight.contains(&k) => &mut c.in_flight,
            JobState::Pending => &mut c.pending,
            JobState::Delivered => &mut c.delivered,
            JobState::Refused => &mut c.refused,
            JobState::Cancelled => &mut c.cancelled,
            JobState::Dead if row.purged => &mut c.purged,
            JobState::Dead => &mut c.dead,
        };
        *slot += 1;
    }
    c
}

/// INV-26 on one node: the counts are the ledger's, the totals reconcile.
fn check(sim: &Sim, i: usize, when: &str) -> RelayCounters {
    let relay = sim.relay(i);
    let c = relay.counters().unwrap();
    assert_eq!(c.jobs, scanned(relay), "node {i} {when}: jobs by state");
    assert_eq!(
        c.jobs.dead as usize,
        relay.dead_letters().unwrap().len(),
        "node {i} {when}: the dead-letter queue"
    );
    assert_eq!(
        c.transfers_in_flight as usize,
        relay.in_flight_count(),
        "node {i} {when}"
    );
    let t = c.totals;
    assert_eq!(
        t.attempts_started,
        t.deliveries + t.failures() + t.outcomes_ignored + t.refunded + c.transfers_in_flight,
        "node {i} {when}: attempts = deliveries + failures + ignored + refunded + in flight: {c:?}"
    );
    assert!(c.reconciles());
    c
}

fn sum(all: &[RelayTotals]) -> RelayTotals {
    let mut s = RelayTotals::default();
    for t in all {
        s.attempts_started += t.attempts_started;
        s.deliveries += t.deliveries;
        s.retries_scheduled += t.retries_scheduled;
        s.dead_lettered += t.dead_lettered;
        s.refused += t.refused;
        s.cancelled += t.cancelled;
        s.requeued += t.requeued;
        s.purged += t.purged;
        s.delivered_by_catch_up += t.delivered_by_catch_up;
        s.outcomes_ignored += t.outcomes_ignored;
    }
    s
}

#[test]
fn inv_26_attempts_reconcile_over_a_faulty_harness_run() {
    let seed = relay::harness::seed_from_env(26);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let publisher = Publisher::from_seed(26);
    // Nodes 0..8 on a random graph; node 7 trusts no publisher (whatever it is offered, it
    // refuses); node 8 is a leaf behind node 0, cut off for the whole first phase.
    let n = 9;
    let (untrusted, leaf) = (7, 8);
    let mut edges = topology::random_connected(n - 1, 5, &mut rng);
    edges.push((0, leaf));
    let mut sim = Sim::with_overrides(
        SimConfig::new(rng.random(), fast_cfg()),
        n,
        &edges,
        &publisher.trusted(),
        |i| NodeOverrides {
            trusted: (i == untrusted).then(Default::default),
            ..Default::default()
        },
    );
    // Varied latencies (so parallel transfers end apart), flaky links, and links down for the
    // whole first phase (dead letters): one away from node 0 (its dead letters go to the
    // operator) and the leaf's (its dead letters are left to catch-up).
    let away = *edges
        .iter()
        .find(|(a, b)| *a != 0 && *b != 0)
        .expect("an edge away from node 0");
    let down = [away, (0, leaf)];
    for (e, &(a, b)) in edges.iter().enumerate() {
        let latency_ms = rng.random_range(20..2_000);
        let link = match e % 4 {
            _ if down.contains(&(a, b)) => Link::Down,
            1 => Link::Flaky {
                latency_ms,
                fail_percent: 40,
            },
            _ => Link::Up { latency_ms },
        };
        sim.set_link(a, b, link);
    }
    let mut ids = Vec::new();
    for s in 0..8 {
        let condition = if s % 2 == 0 {
            SuccessCondition::AllPeers
        } else {
            SuccessCondition::OnePeer
        };
        let (id, file) = publisher.segment(&spec(&format!("m{s}")).condition(condition));
        let at = sim.now_ms() + rng.random_range(0..20_000);
        sim.import_at(at, rng.random_range(0..untrusted), file);
        ids.push(id);
    }
    for step in 0..60 {
        sim.run_for(5_000, EVENTS_MAX);
        for i in 0..n {
            check(&sim, i, &format!("phase 1 step {step}"));
        }
    }
    // Operators: requeue half the dead letters and purge the others, except on node 0, whose
    // dead letters for the leaf are left to catch-up.
    let now = sim.now_ms();
    assert!(
        !sim.relay(0).dead_letters().unwrap().is_empty(),
        "node 0 could not reach the leaf"
    );
    for i in 1..n {
        for (j, d) in sim.relay(i).dead_letters().unwrap().into_iter().enumerate() {
            if j % 2 == 0 {
                sim.relay(i).requeue_blocking(&d.key, now).unwrap();
            } else {
                sim.relay(i).purge_blocking(&d.key, now).unwrap();
            }
        }
        sim.poke(i);
        check(&sim, i, "after the operator");
    }
    // Heal; the leaf catches up from node 0 at once; the requeued jobs run; more rounds later.
    for (a, b) in down {
        sim.set_link(a, b, Link::Up { latency_ms: 50 });
    }
    assert!(sim.catch_up(leaf, 0) > 0);
    for i in 0..n {
        check(&sim, i, "after the leaf caught up");
    }
    for step in 0..20 {
        sim.run_for(5_000, EVENTS_MAX);
        if step % 5 == 4 {
            sim.catch_up_all();
        }
        for i in 0..n {
            check(&sim, i, &format!("phase 2 step {step}"));
        }
    }
    // Periodic catch-up rounds until every pair is in sync (each round moves segments at least
    // one hop; the relay then pushes what the pullers stored).
    for round in 0..2 * n {
        if sim.catch_up_all() == 0 {
            break;
        }
        sim.run_for(10_000, EVENTS_MAX);
        for i in 0..n {
            check(&sim, i, &format!("catch-up round {round}"));
        }
    }
    let mut all = Vec::new();
    for i in 0..n {
        let c = check(&sim, i, "at the end");
        // A fresh ledger and one process: every delivered job was delivered by an attempt or by
        // catch-up, never both.
        assert_eq!(
            c.jobs.delivered,
            c.totals.deliveries + c.totals.delivered_by_catch_up,
            "node {i}: {c:?}"
        );
        all.push(c.totals);
    }
    // Not vacuous: every term of the identity occurred somewhere.
    let s = sum(&all);
    eprintln!("seed {seed}: {s:?}");
    assert!(s.deliveries > 0 && s.retries_scheduled > 0, "{s:?}");
    assert!(s.dead_lettered > 0 && s.refused > 0, "{s:?}");
    assert!(s.cancelled > 0 && s.outcomes_ignored > 0, "{s:?}");
    assert!(s.requeued > 0 && s.purged > 0, "{s:?}");
    assert!(s.delivered_by_catch_up > 0, "{s:?}");
    // Everyone that trusts the publisher holds everything.
    for i in (0..n).filter(|&i| i != untrusted) {
        for id in &ids {
            assert!(sim.holds(i, id), "node {i} lacks {id:?}; edges {edges:?}");
        }
    }
}

#[test]
fn inv_26_job_counts_survive_restarts_and_are_rebuilt_for_an_older_database() {
    let publisher = Publisher::from_seed(27);
    let fs = SimFs::new();
    let mut cfg = fast_cfg();
    cfg.node_id = peer("n0");
    cfg.known_peers = ["a", "b", "c", "d"].map(peer).into();
    cfg.attempts_max = 1;
    let (store, relay) = open(&fs, &publisher, cfg.clone(), T0);
    assert_eq!(relay.counters().unwrap(), RelayCounters::default());
    for s in 0..3 {
        let (_, file) = publisher.segment(&spec(&format!("c{s}")));
        let out = relay
            .ingest_reader(file.as_slice(), &IngestOptions::import(), T0)
            .unwrap();
        assert!(matches!(out, IngestOutcome::Stored(_)));
    }
    // 12 jobs: one of each ending per segment, the rest left pending or in flight.
    let picked = relay.pick(T0, usize::MAX);
    let starts = relay.record_starts_blocking(picked, T0).unwrap();
    let mut items = Vec::new();
    for (n, s) in starts.into_iter().enumerate() {
        let Start::Started { key, .. } = s else {
            continue;
        };
        let outcome = match key.peer.as_str() {
            "a" => Outcome::Delivered,
            "b" => Outcome::Refused("too large".into()),
            "c" if n % 2 == 0 => Outcome::Unreachable("down".into()),
            _ => continue,
        };
        items.push(OutcomeIn {
            key,
            outcome,
            jitter_sample: 0,
        });
    }
    relay.apply_outcomes_blocking(items, T0).unwrap();
    let dead = relay.dead_letters().unwrap();
    relay.purge_blocking(&dead[0].key, T0).unwrap();
    let before = relay.counters().unwrap();
    assert_eq!(before.jobs, scanned(&relay));
    assert_eq!(before.jobs.total(), 12);
    assert!(before.jobs.in_flight > 0 && before.jobs.purged == 1);
    assert!(before.reconciles(), "{before:?}");

    // Crash restart: the counts are the ledger's; the totals start again at zero.
    let image = fs.crash_image();
    drop((store, relay));
    let (store, relay) = open(&image, &publisher, cfg.clone(), T0 + 1);
    let after = relay.counters().unwrap();
    assert_eq!(after.jobs, scanned(&relay));
    assert_eq!(
        after.jobs.pending,
        before.jobs.pending + before.jobs.in_flight,
        "nothing runs after a restart"
    );
    assert_eq!(after.totals, RelayTotals::default());
    assert_eq!(after.transfers_in_flight, 0);

    // A database written before `relay-job-counts-v1` existed: the counts are built at open.
    store
        .writer()
        .write(|txn| {
            let def: redb::TableDefinition<&str, u64> =
                redb::TableDefinition::new("relay-job-counts-v1");
            assert!(txn.delete_table(def)?);
            Ok(())
        })
        .unwrap();
    store.close();
    drop((store, relay));
    let (_store, relay) = open(&image, &publisher, cfg, T0 + 2);
    assert_eq!(relay.counters().unwrap().jobs, after.jobs, "rebuilt");
}

#[test]
fn inv_26_counters_are_plain_copy_serializable_data_and_the_identity_is_arithmetic() {
    fn plain<T: serde::Serialize + Copy + Default + std::fmt::Debug>() {}
    plain::<RelayCounters>();
    plain::<JobCounts>();
    plain::<RelayTotals>();
    let t = RelayTotals {
        attempts_started: 10,
        deliveries: 3,
        retries_scheduled: 2,
        dead_lettered: 3,
        dead_lettered_at_start: 1,
        refused: 1,
        outcomes_ignored: 1,
        refunded: 0,
        ..Default::default()
    };
    assert_eq!(t.failures(), 2 + (3 - 1) + 1);
    assert_eq!(t.attempts_open(), 10 - (3 + 5 + 1));
    let c = RelayCounters {
        totals: t,
        transfers_in_flight: 1,
        ..Default::default()
    };
    assert!(c.reconciles());
}
