//! A seed replays: the same seed gives the same event trace digest, in one process and run
//! after run (the fault-free reference is cached after the first run, so the second run of
//! each seed also proves that the cache changes nothing).

use edge_sim::run_seed;

/// Seeds replayed (each twice).
const REPLAYED_SEEDS: u64 = 20;

#[test]
fn every_seed_run_twice_gives_one_event_digest() {
    let mut datagrams_replayed = 0;
    for seed in 0..REPLAYED_SEEDS {
        let a = run_seed(seed).expect("run sets up");
        let b = run_seed(seed).expect("run sets up");
        assert_eq!(
            a.replay_digest_hex(),
            b.replay_digest_hex(),
            "seed {seed}:\n{:?}\n{:?}",
            a.trace_tail,
            b.trace_tail
        );
        datagrams_replayed += u32::from(a.net_digest == b.net_digest);
    }
    eprintln!("{datagrams_replayed} of {REPLAYED_SEEDS} seeds also replayed every datagram's fate");
}
