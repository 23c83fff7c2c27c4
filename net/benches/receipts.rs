//! Fleet receipts, measured: prints figures, asserts nothing.
//!
//! A line of seven nodes (n1 - n2 - ... - n7); 1,000 segments of 4 KiB are in n1's store when
//! the nodes start, and catch-up carries them down the line. Run twice in one process, with
//! receipts off and on (same machine, same run):
//!
//! - the time until every node stores every segment (what receipts must not slow);
//! - with receipts on, the time until every node's book holds every node's receipt about every
//!   segment (`edged fleet` says `everywhere` for all 1,000 on every node);
//! - receipt gossip bytes (frames sent, all nodes), per segment per node;
//! - idle gossip bytes per connection per second once everything agrees.
//!
//! `BENCH_SEGMENTS` (default 1000), `BENCH_NODES` (default 7), `BENCH_GOSSIP_MS` (default: the
//! node default) change the run.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env_u64, open_store, seed};
use net::{NetConfig, Node, NodeSetup};
use store::keys::PublisherSecret;
use store::{SegmentId, Store};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let off = run(false).await;
        let on = run(true).await;
        println!(
            "all stored: receipts off {:.2} s, on {:.2} s",
            off.as_secs_f64(),
            on.as_secs_f64()
        );
    });
}

/// Polls `cond` every 50 ms for at most `within`; the time it took, if it held.
async fn until(within: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        if cond() {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn run(receipts: bool) -> Duration {
    let segments = env_u64("BENCH_SEGMENTS", 1000);
    let n = env_u64("BENCH_NODES", 7) as usize;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    net::ca_init(&ca).unwrap();
    let secret = PublisherSecret::from_seed([3; 32]);
    let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let sockets: Vec<_> = names
        .iter()
        .map(|_| net::bind_udp("127.0.0.1:0".parse().unwrap(), 8 << 20).unwrap())
        .collect();
    let addrs: Vec<_> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    let stores: Vec<Store> = names
        .iter()
        .map(|name| open_store(&dir.path().join(name), &secret))
        .collect();
    let ids: Vec<SegmentId> = (0..segments)
        .map(|i| seed(&stores[0], &secret, 1000 + i, 4096))
        .collect();
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut known = BTreeMap::new();
        for j in [i.wrapping_sub(1), i + 1] {
            if j < n {
                known.insert(names[j].parse().unwrap(), addrs[j]);
            }
        }
        let mut cfg = NetConfig::new(name.parse().unwrap(), addrs[i], known);
        cfg.catchup_on_connect = true;
        cfg.catchup_interval_ms = 1_000;
        cfg.receipt_interval_ms = if receipts {
            env_u64("BENCH_GOSSIP_MS", cfg.receipt_interval_ms)
        } else {
            0
        };
        let identity = common::identity(&ca, &dir.path().join("pki"), name);
        let mut setup = NodeSetup::new(cfg, identity, stores[i].clone());
        setup.socket = Some(sockets[i].clone());
        nodes.push(Arc::new(Node::start(setup).unwrap()));
    }
    let within = Duration::from_secs(600);
    let stored = until(within, || {
        stores
            .iter()
            .all(|s| s.segment_counts().map(|c| c.stored).unwrap_or(0) >= segments)
    })
    .await
    .expect("every node stores every segment");
    println!(
        "{n} nodes in a line, {segments} x 4 KiB from n1, receipts {}: all stored in {:.2} s",
        if receipts { "on" } else { "off" },
        stored.as_secs_f64()
    );
    if receipts {
        let last = *ids.last().unwrap();
        let views = until(within, || {
            nodes.iter().all(|node| {
                let book = &node.fleet().unwrap().book;
                book.heads().map(|h| h.len()).unwrap_or(0) == n
                    && book
                        .heads()
                        .unwrap()
                        .iter()
                        .all(|(_, h)| h.count > segments)
                    && book.holders(&last).map(|h| h.len()).unwrap_or(0) == n
            })
        })
        .await
        .expect("every node's book holds every receipt");
        let bytes: u64 = nodes
            .iter()
            .map(|node| node.fleet().unwrap().stats.snapshot().bytes_sent)
            .sum();
        let merged: u64 = nodes
            .iter()
            .map(|node| node.fleet().unwrap().stats.snapshot().merged)
            .sum();
        println!(
            "  every book complete {:.2} s after all stored ({:.2} s from start)",
            views.as_secs_f64() - 0.0,
            (stored + views).as_secs_f64()
        );
        println!(
            "  receipt gossip: {bytes} bytes sent by all nodes = {:.0} bytes per segment per node; {merged} receipts merged ({:.2} per receipt made)",
            bytes as f64 / (segments as f64 * n as f64),
            merged as f64 / ((segments + 1) as f64 * n as f64)
        );
        let before = bytes;
        let idle = Duration::from_secs(10);
        tokio::time::sleep(idle).await;
        let after: u64 = nodes
            .iter()
            .map(|node| node.fleet().unwrap().stats.snapshot().bytes_sent)
            .sum();
        println!(
            "  idle: {:.0} bytes per connection per second ({} connections)",
            (after - before) as f64 / idle.as_secs_f64() / (n - 1) as f64,
            n - 1
        );
    }
    for node in &nodes {
        node.shutdown(Duration::from_secs(2)).await;
    }
    stored
}
