//! Relay benchmarks (`make bench`; prints figures, asserts nothing).
//!
//! 1. The store's single-row durable commit rate (one pin toggled per transaction), measured in
//!    this run on this disk: the baseline the other figures sit next to.
//! 2. Decision-core throughput without I/O: 100,000 jobs upserted, picked under the caps,
//!    decided (delivered) and finished.
//! 3. The executor end to end with a no-op transport: 100,000 jobs (1,000 segments × 100 peers)
//!    started, sent and completed through the ledger, on a real disk.
//! 4. Ledger outcome commits: one outcome per transaction, then 256 per transaction.

use std::sync::Arc;
use std::time::Instant;

use relay::core::{Counts, JobKey, JobView, Outcome, Scheduler, decide};
use relay::executor::Executor;
use relay::harness::segments::{Publisher, SegSpec, T0_MS};
use relay::ledger::{OutcomeIn, Start};
use relay::transport::Transport;
use relay::{NodeId, Relay, RelayConfig};
use store::fs::{Fs, RealFs};
use store::{IngestOptions, IngestOutcome, SegmentId, Store, StoreConfig};

const JOBS: usize = 100_000;
const PEERS: usize = 100;
const SEGMENTS: usize = JOBS / PEERS;

fn peers() -> Vec<NodeId> {
    (0..PEERS)
        .map(|i| NodeId::new(&format!("p{i}")).unwrap())
        .collect()
}

fn config() -> RelayConfig {
    RelayConfig::new(NodeId::new("bench").unwrap(), peers())
}

fn open(dir: &std::path::Path, publisher: &Publisher, cfg: RelayConfig) -> Relay {
    let mut store_cfg = StoreConfig::new(dir, 1 << 40, publisher.trusted());
    store_cfg.min_free_bytes = 0;
    let fs: Arc<dyn Fs> = Arc::new(RealFs);
    let (store, _) = Store::open(store_cfg, fs, T0_MS).expect("open store");
    Relay::open(store, cfg, T0_MS).expect("open relay")
}

fn ingest_all(relay: &Relay, publisher: &Publisher, n: usize, tag: &str) -> Vec<SegmentId> {
    (0..n)
        .map(|i| {
            let (_, file) =
                publisher.segment(&SegSpec::named(&format!("{tag}-{i}")).payload_len(256));
            match relay
                .ingest_reader(file.as_slice(), &IngestOptions::import(), T0_MS)
                .expect("ingest")
            {
                IngestOutcome::Stored(s) => s.id,
                IngestOutcome::AlreadyHave { id, .. } => id,
            }
        })
        .collect()
}

fn rate(n: usize, secs: f64) -> String {
    format!("{:>12.0}/s", n as f64 / secs)
}

fn single_row_commits(relay: &Relay, seg: SegmentId, n: usize) -> f64 {
    let store = relay.store();
    let start = Instant::now();
    for i in 0..n {
        store
            .set_pin(&seg, "bench", i % 2 == 0)
            .expect("single-row commit");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn decision_core() -> (f64, f64) {
    let cfg = {
        let mut c = config();
        c.global_concurrency_max = 256;
        c.per_peer_concurrency_max = 8;
        c
    };
    let peers = peers();
    let mut s = Scheduler::new();
    let start = Instant::now();
    for i in 0..JOBS {
        let mut seg = [0u8; 32];
        seg[..8].copy_from_slice(&((i / PEERS) as u64).to_be_bytes());
        s.upsert(
            JobKey {
                seg: SegmentId(seg),
                peer: peers[i % PEERS].clone(),
            },
            JobView {
                priority: (i % 7) as u8,
                due_ms: T0_MS,
            },
        );
    }
    let scheduled = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut done = 0;
    let mut rounds = 0;
    while done < JOBS && rounds < 10 * JOBS {
        rounds += 1;
        let picked = s.pick(T0_MS, &cfg, usize::MAX);
        for key in picked {
            let counts = Counts {
                attempts: 1,
                ..Counts::default()
            };
            let d = decide(counts, &Outcome::Delivered, T0_MS, &cfg, 0);
            std::hint::black_box(d);
            s.finish(&key);
            done += 1;
        }
    }
    (
        JOBS as f64 / scheduled,
        done as f64 / start.elapsed().as_secs_f64(),
    )
}

#[derive(Debug)]
struct Noop;

impl Transport for Noop {
    async fn send(&self, _peer: &NodeId, _seg: SegmentId) -> Outcome {
        Outcome::Delivered
    }
}

fn executor_run(relay: &Relay) -> (f64, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let clock = Arc::new(relay::clock::SystemClock);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let exec = Executor::new(relay.clone(), Arc::new(Noop), clock, 1);
        let start = Instant::now();
        let handle = tokio::spawn(exec.run(async move {
            let _ = stop_rx.await;
        }));
        // Bounded: at most 10 minutes.
        while relay.pending_count() > 0 && start.elapsed().as_secs() < 600 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        let _ = stop_tx.send(());
        let report = handle.await.unwrap().unwrap();
        (secs, report.outcomes)
    })
}

fn outcome_commits(relay: &Relay, batch: usize, n: usize) -> f64 {
    let mut total = 0;
    let start = Instant::now();
    while total < n {
        let keys = relay.pick(T0_MS, batch);
        if keys.is_empty() {
            break;
        }
        let items: Vec<OutcomeIn> = relay
            .record_starts_blocking(keys, T0_MS)
            .unwrap()
            .into_iter()
            .filter_map(|s| match s {
                Start::Started { key, .. } => Some(OutcomeIn {
                    key,
                    outcome: Outcome::Delivered,
                    jitter_sample: 0,
                }),
                Start::Skipped { .. } => None,
            })
            .collect();
        total += items.len();
        relay.apply_outcomes_blocking(items, T0_MS).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    total as f64 / secs
}

fn main() {
    let publisher = Publisher::from_seed(99);
    let dir = tempfile::tempdir().expect("tempdir");
    println!("relay benchmarks ({JOBS} jobs = {SEGMENTS} segments x {PEERS} peers)\n");

    let relay = open(&dir.path().join("exec"), &publisher, config());
    let start = Instant::now();
    let segs = ingest_all(&relay, &publisher, SEGMENTS, "exec");
    let ingest_secs = start.elapsed().as_secs_f64();
    let single = single_row_commits(&relay, segs[0], 500);
    println!(
        "{:<58} {:>12.0}/s",
        "store: single-row durable commit (pin toggle)", single
    );
    println!(
        "{:<58} {}  ({} jobs scheduled in the ingest transactions)",
        "store+relay: ingest with scheduling (segments)",
        rate(SEGMENTS, ingest_secs),
        SEGMENTS * PEERS
    );

    let (sched_rate, run_rate) = decision_core();
    println!(
        "{:<58} {:>12.0}/s",
        "decision core: jobs scheduled (no I/O)", sched_rate
    );
    println!(
        "{:<58} {:>12.0}/s",
        "decision core: jobs picked, decided, finished (no I/O)", run_rate
    );

    let (secs, outcomes) = executor_run(&relay);
    println!(
        "{:<58} {}  (no-op transport, default caps: 32 in flight)",
        "executor: jobs started + completed through the ledger",
        rate(outcomes as usize, secs)
    );

    let relay = open(&dir.path().join("one"), &publisher, config());
    ingest_all(&relay, &publisher, 20, "one");
    let one = outcome_commits(&relay, 1, 1_000);
    println!(
        "{:<58} {:>12.0}/s  (= {:.2}x the single-row commit rate; start + outcome = 2 commits each)",
        "ledger: outcomes, one per transaction",
        one,
        one / single
    );
    let relay = open(&dir.path().join("batch"), &publisher, config());
    ingest_all(&relay, &publisher, 200, "batch");
    let batched = outcome_commits(&relay, 256, 20_000);
    println!(
        "{:<58} {:>12.0}/s  (= {:.1}x the single-row commit rate)",
        "ledger: outcomes, 256 per transaction",
        batched,
        batched / single
    );
}
