//! The tokio executor on paused tokio time: real stores and ledgers, an in-memory transport.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use common::*;
use relay::clock::{Clock, VirtualClock};
use relay::executor::{Executor, ExecutorReport};
use relay::harness::mem::MemNet;
use relay::harness::segments::Publisher;
use relay::harness::sim::Link;
use relay::tables::JobState;
use relay::transport::Transport;
use relay::{JobKey, NodeId, Outcome, Relay, RelayConfig};
use store::fs::Fs;
use store::fs::sim::SimFs;
use store::{IngestOptions, SegmentId, Store, StoreConfig};
use tokio::sync::oneshot;

fn open_node(id: &str, peers: &[&str], publisher: &Publisher, cfg: &RelayConfig) -> Relay {
    let mut store_cfg = StoreConfig::new("/data", 64 << 20, publisher.trusted());
    store_cfg.min_free_bytes = 0;
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new());
    let (store, _) = Store::open(store_cfg, fs, T0).unwrap();
    let mut cfg = cfg.clone();
    cfg.node_id = peer(id);
    cfg.known_peers = peers.iter().map(|p| peer(p)).collect();
    Relay::open(store, cfg, T0).unwrap()
}

type Running = (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<ExecutorReport, relay::RelayError>>,
);

fn spawn_executor<T: Transport>(relay: &Relay, transport: T, clock: Arc<VirtualClock>) -> Running {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let exec = Executor::new(relay.clone(), Arc::new(transport), clock, 42);
    let handle = tokio::spawn(exec.run(async move {
        let _ = stop_rx.await;
    }));
    (stop_tx, handle)
}

async fn stop(running: Running) -> ExecutorReport {
    let _ = running.0.send(());
    running.1.await.unwrap().unwrap()
}

fn import(relay: &Relay, file: &[u8], now: u64) -> SegmentId {
    match relay
        .ingest_reader(file, &IngestOptions::import(), now)
        .unwrap()
    {
        store::IngestOutcome::Stored(s) => s.id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn inv_13_executor_two_peers_all_peers_delivers_and_logs_acked_2() {
    let publisher = Publisher::from_seed(11);
    let (reports, logs) = capture_logs(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let clock = Arc::new(VirtualClock::starting_at(T0));
            let cfg = fast_cfg();
            let n0 = open_node("n0", &["n1", "n2"], &publisher, &cfg);
            let n1 = open_node("n1", &["n0"], &publisher, &cfg);
            let n2 = open_node("n2", &["n0"], &publisher, &cfg);
            let net = MemNet::new();
            for r in [&n0, &n1, &n2] {
                net.add(r.clone());
            }
            let running: Vec<Running> = [&n0, &n1, &n2]
                .iter()
                .map(|r| {
                    let t = net.transport(r.config().node_id.clone(), clock.clone());
                    spawn_executor(r, t, clock.clone())
                })
                .collect();
            let (_, a) = publisher.segment(&spec("a"));
            let (_, b) = publisher.segment(&spec("b"));
            let a = import(&n0, &a, clock.now_ms());
            let b = import(&n0, &b, clock.now_ms());
            // Bounded wait on virtual time.
            for _ in 0..600 {
                tokio::time::sleep(relay::clock::ms(100)).await;
                let done = [a, b].iter().all(|s| {
                    n0.status(s)
                        .unwrap()
                        .is_some_and(|st| st.propagated_at_ms.is_some())
                });
                if done {
                    break;
                }
            }
            for r in [&n1, &n2] {
                for s in [&a, &b] {
                    assert!(r.store().get(s).unwrap().is_some());
                }
            }
            let mut reports = Vec::new();
            for r in running {
                reports.push(stop(r).await);
            }
            // INV-14: every transfer started with its attempt already committed.
            assert_eq!(net.unrecorded_starts(), Vec::<String>::new());
            reports
        })
    });
    assert_eq!(reports[0].started, 4, "{reports:?}");
    let met = logs
        .lines()
        .filter(|l| {
            l.contains("success condition met")
                && l.contains("condition=all_peers")
                && l.contains("acked_count=2")
        })
        .count();
    assert_eq!(met, 2, "{logs}");
    assert!(logs.contains("segment delivered seg_id="), "{logs}");
}

/// A transport that answers from a script and records when each call came, and how many
/// attempts the sender's committed ledger counted at that moment.
#[derive(Debug, Clone)]
struct Scripted {
    clock: Arc<VirtualClock>,
    sender: Relay,
    script: Arc<Mutex<VecDeque<Outcome>>>,
    calls: Arc<Mutex<Vec<u64>>>,
    committed_attempts: Arc<Mutex<Vec<u32>>>,
    done: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

impl Scripted {
    fn new(
        clock: &Arc<VirtualClock>,
        sender: &Relay,
        script: Vec<Outcome>,
    ) -> (Self, oneshot::Receiver<()>) {
        let (done_tx, done_rx) = oneshot::channel();
        let scripted = Scripted {
            clock: clock.clone(),
            sender: sender.clone(),
            script: Arc::new(Mutex::new(script.into())),
            calls: Default::default(),
            committed_attempts: Default::default(),
            done: Arc::new(Mutex::new(Some(done_tx))),
        };
        (scripted, done_rx)
    }
}

impl Transport for Scripted {
    async fn send(&self, peer: &NodeId, seg: SegmentId) -> Outcome {
        self.calls.lock().unwrap().push(self.clock.now_ms());
        let key = JobKey {
            seg,
            peer: peer.clone(),
        };
        let row = self.sender.job(&key).unwrap().unwrap();
        self.committed_attempts
            .lock()
            .unwrap()
            .push(row.counts.attempts);
        let next = self.script.lock().unwrap().pop_front();
        match next {
            Some(o) => o,
            None => {
                if let Some(tx) = self.done.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                // Hang until cancelled.
                std::future::pending().await
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn inv_12_executor_retries_exactly_at_backoff_and_refunds_at_shutdown() {
    let publisher = Publisher::from_seed(12);
    let clock = Arc::new(VirtualClock::starting_at(T0));
    let mut cfg = fast_cfg();
    cfg.jitter_percent = 0;
    let n0 = open_node("n0", &["n1"], &publisher, &cfg);
    let (transport, done_rx) = Scripted::new(
        &clock,
        &n0,
        vec![
            Outcome::Unreachable("down".into()),
            Outcome::TimedOut("stalled".into()),
        ],
    );
    let running = spawn_executor(&n0, transport.clone(), clock.clone());
    let (_, file) = publisher.segment(&spec("x"));
    let seg = import(&n0, &file, clock.now_ms());
    // The third call hangs: then shut down.
    tokio::time::timeout(relay::clock::ms(60_000), done_rx)
        .await
        .expect("third attempt within a minute")
        .unwrap();
    let calls = transport.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![T0, T0 + 1_000, T0 + 3_000],
        "backoff 1 s then 2 s"
    );
    // INV-14: each attempt was committed before the transport was called.
    assert_eq!(*transport.committed_attempts.lock().unwrap(), vec![1, 2, 3]);
    let report = stop(running).await;
    assert_eq!(
        (report.started, report.outcomes, report.refunded),
        (3, 2, 1)
    );
    let key = JobKey {
        seg,
        peer: peer("n1"),
    };
    let row = n0.job(&key).unwrap().unwrap();
    assert_eq!(row.state, JobState::Pending);
    assert_eq!(
        row.counts.attempts, 2,
        "the cut-short third attempt was refunded"
    );
    assert_eq!(row.last_error.as_deref(), Some("timed_out: stalled"));
    // INV-26: the relay's totals agree with the executor's report and reconcile.
    let c = n0.counters().unwrap();
    assert_eq!(c.totals.attempts_started, report.started);
    assert_eq!(
        (c.totals.retries_scheduled, c.totals.refunded),
        (2, report.refunded)
    );
    assert_eq!((c.transfers_in_flight, c.jobs.pending), (0, 1));
    assert!(c.reconciles(), "{c:?}");
}

#[tokio::test(start_paused = true)]
async fn executor_does_not_poll_when_idle() {
    let publisher = Publisher::from_seed(13);
    let clock = Arc::new(VirtualClock::starting_at(T0));
    let cfg = fast_cfg();
    let n0 = open_node("n0", &["n1"], &publisher, &cfg);
    let net = MemNet::new();
    net.add(n0.clone());
    let running = spawn_executor(&n0, net.transport(peer("n0"), clock.clone()), clock.clone());
    tokio::time::sleep(relay::clock::ms(3_600_000)).await;
    let report = stop(running).await;
    assert!(report.wakeups <= 3, "idle for an hour: {report:?}");

    // With a job dead-lettered and its pin waiting an hour, it wakes at most once per
    // wake_interval_max_ms, not more.
    let n0 = open_node("n0", &["n1"], &publisher, &cfg);
    let net = MemNet::new();
    net.add(n0.clone());
    net.set_link(&peer("n0"), &peer("n1"), Link::Down);
    let running = spawn_executor(&n0, net.transport(peer("n0"), clock.clone()), clock.clone());
    let (_, file) = publisher.segment(&spec("y"));
    import(&n0, &file, clock.now_ms());
    let started = clock.now_ms();
    // Bounded: a minute of virtual time per step, at most 200 steps.
    for _ in 0..200 {
        tokio::time::sleep(relay::clock::ms(60_000)).await;
        let dead = n0.dead_letters().unwrap();
        if dead.len() == 1 && dead[0].pin_release_at_ms.is_none() {
            break;
        }
    }
    let elapsed = clock.now_ms() - started;
    let report = stop(running).await;
    assert_eq!(net.unrecorded_starts(), Vec::<String>::new(), "INV-14");
    assert_eq!(n0.dead_letters().unwrap().len(), 1);
    assert_eq!(
        n0.dead_letters().unwrap()[0].pin_release_at_ms,
        None,
        "pin aged out"
    );
    assert!(elapsed >= cfg.dead_letter_pin_max_age_ms);
    let bound = elapsed / cfg.wake_interval_max_ms + 4 * u64::from(cfg.attempts_max) + 8;
    assert!(report.wakeups <= bound, "{report:?} > {bound}");
}

#[test]
fn inv_14_executor_wall_clock_jump_back_neither_freezes_nor_loses_a_job() {
    let publisher = Publisher::from_seed(14);
    let ((), logs) = capture_logs(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let clock = Arc::new(VirtualClock::starting_at(T0));
            let mut cfg = fast_cfg();
            cfg.jitter_percent = 0;
            let n0 = open_node("n0", &["n1"], &publisher, &cfg);
            let (transport, done_rx) =
                Scripted::new(&clock, &n0, vec![Outcome::Unreachable("down".into())]);
            let running = spawn_executor(&n0, transport.clone(), clock.clone());
            let (_, file) = publisher.segment(&spec("z"));
            import(&n0, &file, clock.now_ms());
            // The first attempt failed at once; its retry is due 1 s later. Set the clock back a
            // day before that: without re-clamping the job would wait a day.
            tokio::time::sleep(relay::clock::ms(500)).await;
            clock.jump(-86_400_000);
            let jumped_at = tokio::time::Instant::now();
            tokio::time::timeout(relay::clock::ms(60_000), done_rx)
                .await
                .expect("retried within a minute, not a day")
                .unwrap();
            let waited = jumped_at.elapsed().as_millis() as u64;
            assert!(waited <= 500 + cfg.backoff_max_ms, "waited {waited} ms");
            stop(running).await;
        })
    });
    assert!(logs.contains("wall clock jumped"), "{logs}");
}
