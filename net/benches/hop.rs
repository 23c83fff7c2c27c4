//! One hop, measured: prints figures, asserts nothing.
//!
//! - a 1 GiB segment from the sender's store until acknowledged durable by the receiver;
//! - a raw quinn transfer of 1 GiB with the same settings and no disk, in the same run;
//! - 10,000 segments of 4 KiB, several concurrent streams (segments/s acknowledged);
//! - peak RSS of the process (both nodes live in it).
//!
//! `BENCH_HOP_BYTES` and `BENCH_SMALL_COUNT` shrink the runs; `BENCH_WORKERS` sets the tokio
//! worker threads (default 2); `BENCH_UDP_BUFFER_BYTES` the socket buffers (default 8 MiB).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env_u64, open_store, seed};
use net::{NetConfig, Node, NodeSetup, SendOutcome};
use store::keys::PublisherSecret;
use store::{SegmentId, Store};

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let workers = env_u64("BENCH_WORKERS", 2) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(workers));
}

async fn run(workers: usize) {
    let hop_bytes = env_u64("BENCH_HOP_BYTES", 1 << 30);
    let small_count = env_u64("BENCH_SMALL_COUNT", 10_000);
    let udp_buffer = env_u64("BENCH_UDP_BUFFER_BYTES", 8 << 20) as usize;
    let default_windows = std::env::var("BENCH_DEFAULT_WINDOWS").is_ok();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    net::ca_init(&ca).unwrap();
    let secret = PublisherSecret::from_seed([3; 32]);
    let names = ["a", "b"];
    let sockets: Vec<_> = names
        .iter()
        .map(|_| net::bind_udp("127.0.0.1:0".parse().unwrap(), udp_buffer).unwrap())
        .collect();
    let addrs: Vec<_> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    let stores: Vec<Store> = names
        .iter()
        .map(|n| open_store(&dir.path().join(n), &secret))
        .collect();
    println!(
        "edged net bench: workers={workers} udp_buffer_bytes={udp_buffer} default_windows={default_windows}"
    );
    println!("seeding {hop_bytes} bytes + {small_count} x 4 KiB on a ...");
    let big = seed(&stores[0], &secret, 1, hop_bytes);
    let small: Vec<SegmentId> = (0..small_count)
        .map(|i| seed(&stores[0], &secret, 1000 + i, 4096))
        .collect();

    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let other = 1 - i;
        let known = BTreeMap::from([(names[other].parse().unwrap(), addrs[other])]);
        let mut cfg = NetConfig::new(name.parse().unwrap(), addrs[i], known);
        cfg.catchup_on_connect = false;
        cfg.catchup_interval_ms = 0;
        cfg.response_timeout_ms = 120_000;
        if default_windows {
            cfg.stream_receive_window_bytes = 1_250_000;
            cfg.receive_window_bytes = u32::MAX as u64;
            cfg.send_window_bytes = 10_000_000;
        }
        let identity = common::identity(&ca, &dir.path().join("pki"), name);
        let mut setup = NodeSetup::new(cfg, identity, stores[i].clone());
        setup.socket = Some(sockets[i].clone());
        nodes.push(Arc::new(Node::start(setup).unwrap()));
    }
    let a = nodes[0].clone();
    let bid: net::NodeId = "b".parse().unwrap();
    assert!(a.wait_connected(&bid, Duration::from_secs(10)).await);

    // Raw quinn, same settings, no disk: stream zeros from a memory buffer, discard on receive.
    let raw = raw_quinn(&dir, &ca, hop_bytes, udp_buffer, default_windows).await;
    println!(
        "raw quinn 1 hop: {} bytes in {:.2} s = {:.0} MiB/s",
        hop_bytes,
        raw.as_secs_f64(),
        mib_s(hop_bytes, raw)
    );

    let t = Instant::now();
    let outcome = a.send_segment(&bid, big).await;
    let hop = t.elapsed();
    assert_eq!(outcome, SendOutcome::Delivered);
    println!(
        "edged 1 hop (store -> durable ack): {} bytes in {:.2} s = {:.0} MiB/s ({:.0}% of raw)",
        hop_bytes,
        hop.as_secs_f64(),
        mib_s(hop_bytes, hop),
        100.0 * raw.as_secs_f64() / hop.as_secs_f64()
    );

    let concurrency = 32;
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let queue = Arc::new(std::sync::Mutex::new(small.clone()));
    for _ in 0..concurrency {
        let (a, q, bid) = (a.clone(), queue.clone(), bid.clone());
        set.spawn(async move {
            let mut delivered = 0u64;
            loop {
                let next = q.lock().unwrap().pop();
                let Some(id) = next else { break };
                if a.send_segment(&bid, id).await == SendOutcome::Delivered {
                    delivered += 1;
                }
            }
            delivered
        });
    }
    let mut delivered = 0;
    while let Some(r) = set.join_next().await {
        delivered += r.unwrap();
    }
    let d = t.elapsed();
    println!(
        "edged {} x 4 KiB, {concurrency} concurrent streams: {delivered} acked in {:.2} s = {:.0} segments/s",
        small.len(),
        d.as_secs_f64(),
        delivered as f64 / d.as_secs_f64()
    );
    if let Some(kib) = peak_rss_kib() {
        println!(
            "peak RSS of the process (both nodes, raw run included): {:.0} MiB",
            kib as f64 / 1024.0
        );
    }
    drop(nodes);
}

async fn raw_quinn(
    dir: &tempfile::TempDir,
    ca: &std::path::Path,
    bytes: u64,
    udp_buffer: usize,
    default_windows: bool,
) -> Duration {
    let pki = dir.path().join("raw");
    for n in ["rx", "tx"] {
        net::ca_issue(ca, &n.parse().unwrap(), &pki, 30).unwrap();
    }
    let load = |n: &str| {
        net::load_node_identity(
            &ca.join("ca.crt"),
            &pki.join(format!("{n}.crt")),
            &pki.join(format!("{n}.key")),
        )
        .unwrap()
    };
    let clock: Arc<dyn net::Clock> = Arc::new(net::SystemClock);
    let mut cfg = NetConfig::new(
        "rx".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        BTreeMap::new(),
    );
    if default_windows {
        cfg.stream_receive_window_bytes = 1_250_000;
        cfg.receive_window_bytes = u32::MAX as u64;
        cfg.send_window_bytes = 10_000_000;
    }
    let transport = cfg.transport_config();
    let server_tls = net::tls::server_config(
        &load("rx"),
        std::iter::once("tx".parse().unwrap()).collect(),
        clock.clone(),
    )
    .unwrap();
    let client_tls = net::tls::client_config(&load("tx"), clock).unwrap();
    let (s, c) = net::tls::quic_configs(server_tls, client_tls).unwrap();
    let mut server_config = quinn::ServerConfig::with_crypto(s);
    server_config.transport_config(transport.clone());
    let mut client_config = quinn::ClientConfig::new(c);
    client_config.transport_config(transport);
    let rx_sock = net::bind_udp("127.0.0.1:0".parse().unwrap(), udp_buffer).unwrap();
    let rx_addr = rx_sock.local_addr().unwrap();
    let rx = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(server_config),
        rx_sock,
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    let tx = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        net::bind_udp("127.0.0.1:0".parse().unwrap(), udp_buffer).unwrap(),
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    let server = tokio::spawn(async move {
        let conn = rx.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        while let Some(n) = recv.read(&mut buf).await.unwrap() {
            got += n as u64;
        }
        send.write_all(&got.to_le_bytes()).await.unwrap();
        send.finish().unwrap();
        let _ = conn.closed().await;
    });
    let conn = tx
        .connect_with(client_config, rx_addr, "rx")
        .unwrap()
        .await
        .unwrap();
    let t = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let buf = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        send.write_all(&buf[..n]).await.unwrap();
        left -= n as u64;
    }
    send.finish().unwrap();
    let mut ack = [0u8; 8];
    recv.read_exact(&mut ack).await.unwrap();
    let d = t.elapsed();
    assert_eq!(u64::from_le_bytes(ack), bytes);
    conn.close(0u32.into(), b"done");
    let _ = server.await;
    d
}
