//! The proxies over real loopback sockets. Every test binds its own addresses in
//! `127.77.<test>.0/24` with free ports, so tests run side by side; assertions count datagrams,
//! and the only timing assertions are lower bounds the model guarantees (never early) or upper
//! bounds with seconds of slack.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::runtime::Handle;
use tokio::time::Instant;

use super::decider::{RATE_BURST_BYTES, RATE_QUEUE_BYTES_MAX};
use super::*;

/// How long a test waits for what must happen.
const WAIT_MS: u64 = 10_000;
/// Poll interval of [`until`].
const POLL_MS: u64 = 5;
/// Receive buffer of the test's own sockets.
const BUF_BYTES: usize = 65_536;

fn ip(test: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 77, test, host))
}

fn wait() -> Duration {
    Duration::from_millis(WAIT_MS)
}

/// Two nodes (`127.77.t.1`, `.2`) and one link between them (sides on `.101`, `.102`).
struct Pair {
    proxies: Proxies,
    a: UdpSocket,
    b: UdpSocket,
    side_a: SocketAddr,
    side_b: SocketAddr,
}

fn spec(t: u8, a: SocketAddr, b: SocketAddr) -> LinkSpec {
    LinkSpec {
        a_name: "node-a".into(),
        a,
        b_name: "node-b".into(),
        b,
        side_ip_a: ip(t, 101),
        side_ip_b: ip(t, 102),
    }
}

/// A node's socket, with the proxies' buffer sizes: a test that sends a burst before reading
/// must not lose it in its own receive buffer.
fn node(t: u8, host: u8) -> UdpSocket {
    UdpSocket::from_std(super::bind("test", ip(t, host)).unwrap()).unwrap()
}

async fn pair(t: u8, seed: u64) -> Pair {
    let a = node(t, 1);
    let b = node(t, 2);
    let link = spec(t, a.local_addr().unwrap(), b.local_addr().unwrap());
    let proxies = Proxies::start(&Handle::current(), vec![link], seed).unwrap();
    let (side_a, side_b) = proxies.sides(0);
    Pair {
        proxies,
        a,
        b,
        side_a,
        side_b,
    }
}

impl Pair {
    /// A sends to B (through `side_a`).
    async fn a_to_b(&self, bytes: &[u8]) {
        self.a.send_to(bytes, self.side_a).await.unwrap();
    }

    async fn b_to_a(&self, bytes: &[u8]) {
        self.b.send_to(bytes, self.side_b).await.unwrap();
    }

    fn stats(&self, dir: Dir) -> DirStats {
        self.proxies.stats(0, dir)
    }

    /// Waits until the proxy has taken `n` datagrams in `dir` (decided about them all).
    async fn received(&self, dir: Dir, n: u64) {
        assert!(
            until(|| self.stats(dir).received >= n).await,
            "the proxy received {} of {n} in {dir:?}",
            self.stats(dir).received
        );
    }
}

/// Polls `cond` until it holds or [`WAIT_MS`] passes.
async fn until(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..WAIT_MS / POLL_MS {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
    cond()
}

/// Up to `n` datagrams, each with its source, waiting at most `within` in all.
async fn recv_n(sock: &UdpSocket, n: usize, within: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; BUF_BYTES];
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
            Ok(Ok((len, from))) => out.push((buf[..len].to_vec(), from)),
            _ => break,
        }
    }
    out
}

/// Nothing waiting on `sock` right now.
fn nothing_waiting(sock: &UdpSocket) -> bool {
    let mut buf = vec![0u8; BUF_BYTES];
    matches!(sock.try_recv_from(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

fn numbered(i: u32, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len.max(4)).map(|k| (k as u32 ^ i) as u8).collect();
    v[..4].copy_from_slice(&i.to_be_bytes());
    v
}

fn number(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_byte_identical_both_ways_from_the_configured_address() {
    let p = pair(1, 1).await;
    let sent: Vec<Vec<u8>> = (0..50).map(|i| numbered(i, 1 + 97 * i as usize)).collect();
    for d in &sent {
        p.a_to_b(d).await;
        p.b_to_a(d).await;
    }
    for (sock, from) in [(&p.b, p.side_b), (&p.a, p.side_a)] {
        let got = recv_n(sock, sent.len(), wait()).await;
        assert_eq!(got.len(), sent.len());
        for ((bytes, src), want) in got.iter().zip(&sent) {
            assert_eq!(bytes, want);
            // Each node hears its peer from the address it has configured for it.
            assert_eq!(*src, from);
        }
    }
    for dir in Dir::BOTH {
        let s = p.stats(dir);
        assert_eq!((s.received, s.forwarded), (50, 50), "{dir:?}");
        assert_eq!(s.forwarded_bytes, s.received_bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_1000_per_mille_drops_every_datagram() {
    let p = pair(2, 2).await;
    p.proxies
        .set(
            0,
            Dir::AtoB,
            LinkFaults {
                drop_per_mille: 1000,
                ..LinkFaults::default()
            },
        )
        .unwrap();
    for i in 0..200 {
        p.a_to_b(&numbered(i, 100)).await;
    }
    p.received(Dir::AtoB, 200).await;
    let s = p.stats(Dir::AtoB);
    assert_eq!((s.dropped, s.forwarded), (200, 0));
    // Decided and not sent: a datagram sent after them in the other direction arrives, and
    // B never got anything.
    p.b_to_a(b"after").await;
    assert_eq!(recv_n(&p.a, 1, wait()).await.len(), 1);
    assert!(nothing_waiting(&p.b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_partition_is_one_way_and_a_symmetric_one_both() {
    let p = pair(3, 3).await;
    p.proxies
        .set(0, Dir::AtoB, LinkFaults::blackhole())
        .unwrap();
    for i in 0..100 {
        p.a_to_b(&numbered(i, 50)).await;
        p.b_to_a(&numbered(i, 50)).await;
    }
    // B → A flows entirely …
    assert_eq!(recv_n(&p.a, 100, wait()).await.len(), 100);
    // … A → B not at all.
    p.received(Dir::AtoB, 100).await;
    assert_eq!(p.stats(Dir::AtoB).blackholed, 100);
    assert_eq!(p.stats(Dir::AtoB).forwarded, 0);
    assert!(nothing_waiting(&p.b));

    // Symmetric: two calls (one direction already is).
    p.proxies.set_both(0, LinkFaults::blackhole()).unwrap();
    for i in 0..20 {
        p.a_to_b(&numbered(i, 50)).await;
        p.b_to_a(&numbered(i, 50)).await;
    }
    p.received(Dir::AtoB, 120).await;
    p.received(Dir::BtoA, 120).await;
    assert_eq!(p.stats(Dir::BtoA).blackholed, 20);
    assert!(nothing_waiting(&p.a) && nothing_waiting(&p.b));

    // Healed, both flow again.
    assert_eq!(p.proxies.heal_all().len(), 2);
    p.a_to_b(b"healed").await;
    p.b_to_a(b"healed").await;
    assert_eq!(recv_n(&p.b, 1, wait()).await[0].0, b"healed");
    assert_eq!(recv_n(&p.a, 1, wait()).await[0].0, b"healed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackhole_stops_traffic_the_moment_it_is_applied() {
    let p = Arc::new(pair(4, 4).await);
    p.proxies
        .set(
            0,
            Dir::AtoB,
            LinkFaults {
                delay_ms: 50,
                ..LinkFaults::default()
            },
        )
        .unwrap();
    let sender = {
        let p = p.clone();
        tokio::spawn(async move {
            for i in 0..2_000 {
                p.a_to_b(&numbered(i, 200)).await;
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    assert!(until(|| p.stats(Dir::AtoB).forwarded >= 100).await);
    p.proxies
        .set(0, Dir::AtoB, LinkFaults::blackhole())
        .unwrap();
    let forwarded = p.stats(Dir::AtoB).forwarded;
    let received = p.stats(Dir::AtoB).received;
    // Traffic keeps arriving while the faults changed; none of it, nor what was in flight
    // under the 50 ms delay, leaves any more.
    assert!(until(|| p.stats(Dir::AtoB).received >= received + 100).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = p.stats(Dir::AtoB);
    assert_eq!(s.forwarded, forwarded);
    assert!(s.blackholed >= 100);
    sender.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_and_jitter_keep_datagrams_within_bounds() {
    let p = pair(5, 5).await;
    let (delay, jitter) = (80u64, 20u64);
    p.proxies
        .set(
            0,
            Dir::AtoB,
            LinkFaults {
                delay_ms: delay as u32,
                jitter_ms: jitter as u32,
                ..LinkFaults::default()
            },
        )
        .unwrap();
    let mut sent_at = BTreeMap::new();
    for i in 0..40 {
        sent_at.insert(i, Instant::now());
        p.a_to_b(&numbered(i, 100)).await;
    }
    let got = recv_n(&p.b, 40, wait()).await;
    let arrived = Instant::now();
    assert_eq!(got.len(), 40);
    // Never before delay − jitter after it was sent (the proxy got it later still, and sends
    // nothing early); the upper bound has seconds of slack for a loaded machine.
    let first_arrival_bound = sent_at[&39].duration_since(sent_at[&0]);
    for (bytes, _) in &got {
        let i = number(bytes);
        let took = arrived.duration_since(sent_at[&i]);
        assert!(
            took >= Duration::from_millis(delay - jitter),
            "{i}: {took:?}"
        );
    }
    assert!(
        arrived.duration_since(sent_at[&0])
            <= Duration::from_millis(delay + jitter) + first_arrival_bound + wait()
    );
    assert_eq!(p.stats(Dir::AtoB).delayed, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_datagram_arrives_no_sooner_than_its_delay() {
    let p = pair(6, 6).await;
    let delay = 60u64;
    p.proxies
        .set(
            0,
            Dir::AtoB,
            LinkFaults {
                delay_ms: delay as u32,
                ..LinkFaults::default()
            },
        )
        .unwrap();
    for i in 0..10 {
        let sent = Instant::now();
        p.a_to_b(&numbered(i, 10)).await;
        let got = recv_n(&p.b, 1, wait()).await;
        assert_eq!(got.len(), 1);
        assert_eq!(number(&got[0].0), i);
        assert!(sent.elapsed() >= Duration::from_millis(delay));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplication_duplicates() {
    let p = pair(7, 7).await;
    p.proxies
        .set(
            0,
            Dir::BtoA,
            LinkFaults {
                duplicate_per_mille: 1000,
                ..LinkFaults::default()
            },
        )
        .unwrap();
    for i in 0..30 {
        p.b_to_a(&numbered(i, 400)).await;
    }
    let got = recv_n(&p.a, 60, wait()).await;
    assert_eq!(got.len(), 60);
    let mut copies = BTreeMap::new();
    for (bytes, _) in &got {
        assert_eq!(*bytes, numbered(number(bytes), 400));
        *copies.entry(number(bytes)).or_insert(0) += 1;
    }
    assert!(copies.values().all(|&n| n == 2), "{copies:?}");
    assert_eq!(copies.len(), 30);
    let s = p.stats(Dir::BtoA);
    assert_eq!((s.duplicated, s.forwarded), (30, 60));
    // Sent clean after the others on the same path: once it is in, any extra copy would be.
    p.proxies.heal_all();
    p.b_to_a(b"after").await;
    assert_eq!(recv_n(&p.a, 1, wait()).await.len(), 1);
    assert!(nothing_waiting(&p.a), "no third copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordering_reorders_and_loses_nothing() {
    let p = pair(8, 8).await;
    p.proxies
        .set(
            0,
            Dir::AtoB,
            LinkFaults {
                reorder_per_mille: 300,
                ..LinkFaults::default()
            },
        )
        .unwrap();
    for i in 0..200 {
        p.a_to_b(&numbered(i, 64)).await;
    }
    let got = recv_n(&p.b, 200, wait()).await;
    assert_eq!(got.len(), 200);
    let order: Vec<u32> = got.iter().map(|(b, _)| number(b)).collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..200).collect::<Vec<_>>(),
        "nothing lost or added"
    );
    let mut highest = 0;
    let overtaken = order
        .iter()
        .filter(|&&n| {
            let o = n < highest;
            highest = highest.max(n);
            o
        })
        .count() as u64;
    let reordered = p.stats(Dir::AtoB).reordered;
    assert!(reordered > 0);
    assert_eq!(overtaken, reordered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_changes_exactly_one_byte() {
    let p = pair(9, 9).await;
    p.proxies
        .set(
            0,
            Dir::AtoB,
            LinkFaults {
                corrupt_per_mille: 1000,
                ..LinkFaults::default()
            },
        )
        .unwrap();
    // One at a time, so that each arrival is known (the number itself may be corrupted).
    for i in 0..50 {
        let sent = numbered(i, 300);
        p.a_to_b(&sent).await;
        let got = recv_n(&p.b, 1, wait()).await;
        assert_eq!(got.len(), 1);
        let differing = sent.iter().zip(&got[0].0).filter(|(x, y)| x != y).count();
        assert_eq!((got[0].0.len(), differing), (300, 1));
    }
    assert_eq!(p.stats(Dir::AtoB).corrupted, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_cap_caps() {
    let p = pair(10, 10).await;
    let rate = 200_000u64;
    p.proxies
        .set(
            0,
            Dir::AtoB,
            LinkFaults {
                rate_bytes_per_s: Some(rate),
                ..LinkFaults::default()
            },
        )
        .unwrap();
    let (n, len) = (600u32, 1000usize);
    let start = Instant::now();
    for i in 0..n {
        p.a_to_b(&numbered(i, len)).await;
    }
    p.received(Dir::AtoB, u64::from(n)).await;
    let offered_for = start.elapsed();
    let s = p.stats(Dir::AtoB);
    let passed = u64::from(n) - s.rate_dropped;
    // What passes is at most the burst, the queue, and the rate over the time it took to
    // offer them (measured from outside, so at least as long as the proxy saw).
    let allowance = RATE_BURST_BYTES
        + RATE_QUEUE_BYTES_MAX
        + rate * offered_for.as_micros() as u64 / 1_000_000
        + len as u64;
    assert!(passed * len as u64 <= allowance, "{passed} passed, {s:?}");
    assert!(s.rate_dropped > 0 && s.rate_queued > 0, "{s:?}");
    // Everything admitted arrives, and not faster than the cap: the bytes beyond the burst
    // take at least bytes / rate.
    let got = recv_n(&p.b, passed as usize, wait() + Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert_eq!(got.len() as u64, passed);
    let paced = (passed * len as u64).saturating_sub(RATE_BURST_BYTES);
    assert!(
        took >= Duration::from_micros(paced * 1_000_000 / rate),
        "{passed} datagrams in {took:?}"
    );
    assert!(nothing_waiting(&p.b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strays_are_recorded_and_not_forwarded() {
    let p = pair(11, 11).await;
    let stranger = UdpSocket::bind((ip(11, 66), 0)).await.unwrap();
    let from = stranger.local_addr().unwrap();
    stranger.send_to(b"to side a", p.side_a).await.unwrap();
    stranger.send_to(b"to side b!", p.side_b).await.unwrap();
    // B itself at A's side is a stray too: each side hears only its own node.
    p.b.send_to(b"wrong side", p.side_a).await.unwrap();
    assert!(until(|| p.proxies.stray_count() == 3).await);
    // Sent after the strays on the same paths: if the strays had been forwarded they would
    // have arrived first.
    p.a_to_b(b"legit a").await;
    p.b_to_a(b"legit b").await;
    assert_eq!(recv_n(&p.b, 1, wait()).await[0].0, b"legit a");
    assert_eq!(recv_n(&p.a, 1, wait()).await[0].0, b"legit b");
    let strays = p.proxies.strays();
    let seen: BTreeSet<(SocketAddr, SocketAddr, usize)> =
        strays.iter().map(|s| (s.from, s.side, s.len)).collect();
    assert_eq!(
        seen,
        BTreeSet::from([
            (from, p.side_a, 9),
            (from, p.side_b, 10),
            (p.b.local_addr().unwrap(), p.side_a, 10)
        ])
    );
    assert!(strays.iter().all(|s| s.link == 0));
    for dir in Dir::BOTH {
        assert_eq!(
            p.stats(dir).received,
            1,
            "strays are not the node's traffic"
        );
    }

    // The record is bounded; the count is not.
    for _ in 0..STRAYS_MAX {
        stranger.send_to(b"x", p.side_a).await.unwrap();
    }
    let total = 3 + STRAYS_MAX as u64;
    assert!(until(|| p.proxies.stray_count() == total).await);
    assert_eq!(p.proxies.strays().len(), STRAYS_MAX);
}

/// The numbers B received of `n` sent by A under 50 % drop, with `seed`.
async fn survivors(t: u8, seed: u64, n: u32) -> BTreeSet<u32> {
    let p = pair(t, seed).await;
    p.proxies
        .set(
            0,
            Dir::AtoB,
            LinkFaults {
                drop_per_mille: 500,
                ..LinkFaults::default()
            },
        )
        .unwrap();
    for i in 0..n {
        p.a_to_b(&numbered(i, 32)).await;
    }
    p.received(Dir::AtoB, u64::from(n)).await;
    let s = p.stats(Dir::AtoB);
    let expected = (s.received - s.dropped) as usize;
    let got = recv_n(&p.b, expected, wait()).await;
    assert_eq!(got.len(), expected);
    got.iter().map(|(b, _)| number(b)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_replay_drops_the_same_datagrams_over_real_sockets() {
    let first = survivors(12, 42, 300).await;
    assert_eq!(first, survivors(13, 42, 300).await);
    assert_ne!(first, survivors(14, 43, 300).await);
    assert!(first.len() > 50 && first.len() < 250, "{}", first.len());
}

#[test]
fn seeds_differ_by_link_and_direction_and_not_otherwise() {
    let s = direction_seed(1, "node-1~node-2", Dir::AtoB);
    assert_eq!(s, direction_seed(1, "node-1~node-2", Dir::AtoB));
    assert_ne!(s, direction_seed(1, "node-1~node-2", Dir::BtoA));
    assert_ne!(s, direction_seed(2, "node-1~node-2", Dir::AtoB));
    assert_ne!(s, direction_seed(1, "node-1~node-3", Dir::AtoB));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_changes_are_recorded_with_their_moment() {
    let p = pair(15, 15).await;
    let drop = LinkFaults {
        drop_per_mille: 250,
        ..LinkFaults::default()
    };
    let before = p.proxies.started_at().elapsed();
    let e1 = p.proxies.set(0, Dir::AtoB, drop).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let [e2, e3] = p.proxies.set_both(0, LinkFaults::blackhole()).unwrap();
    let healed = p.proxies.heal_all();
    let after = p.proxies.started_at().elapsed();
    let events = p.proxies.events();
    let mut expected = vec![e1.clone(), e2, e3];
    expected.extend(healed);
    assert_eq!(events, expected);
    assert_eq!(p.proxies.event_count(), 5);
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(events[0].at >= before && events[4].at <= after);
    assert!(events[1].at >= events[0].at + Duration::from_millis(20));
    assert_eq!(
        (e1.link_name.as_str(), e1.from.as_str(), e1.to.as_str()),
        ("node-a~node-b", "node-a", "node-b")
    );
    assert_eq!(events[2].target(), "link node-b→node-a");
    let records = e1.fault_records(1_000);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kind, "net.drop");
    assert_eq!(records[0].at_ms, 1_000 + e1.at.as_millis() as u64);
    assert_eq!(records[0].detail, "drop 250‰");
    assert_eq!(events[4].fault_records(0)[0].kind, "net.heal");
    assert!(p.proxies.heal_all().is_empty(), "nothing left to heal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_faults_and_links_are_refused() {
    let p = pair(16, 16).await;
    let bad = LinkFaults {
        drop_per_mille: 1001,
        ..LinkFaults::default()
    };
    assert!(matches!(
        p.proxies.set(0, Dir::AtoB, bad),
        Err(ProxyError::Faults { .. })
    ));
    assert!(p.proxies.events().is_empty());
    assert!(p.proxies.faults(0, Dir::AtoB).is_clean());
    let a: SocketAddr = "127.77.16.1:7000".parse().unwrap();
    let b: SocketAddr = "127.77.16.2:7000".parse().unwrap();
    let twice = vec![spec(16, a, b), spec(16, a, b)];
    assert!(matches!(
        Proxies::start(&Handle::current(), twice, 1),
        Err(ProxyError::DuplicateLink(_))
    ));
    let port_zero = spec(16, a, "127.77.16.2:0".parse().unwrap());
    assert!(matches!(
        Proxies::start(&Handle::current(), vec![port_zero], 1),
        Err(ProxyError::BadLink { .. })
    ));
    let mut unbindable = spec(16, a, b);
    unbindable.side_ip_a = "192.0.2.1".parse().unwrap();
    assert!(matches!(
        Proxies::start(&Handle::current(), vec![unbindable], 1),
        Err(ProxyError::Bind { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_of_three_has_two_independent_links() {
    let t = 17;
    let nodes = nodes(t, 3);
    let addr = |i: usize| nodes[i].local_addr().unwrap();
    let links = vec![
        LinkSpec {
            a_name: "node-1".into(),
            a: addr(0),
            b_name: "node-2".into(),
            b: addr(1),
            side_ip_a: ip(t, 101),
            side_ip_b: ip(t, 102),
        },
        LinkSpec {
            a_name: "node-2".into(),
            a: addr(1),
            b_name: "node-3".into(),
            b: addr(2),
            side_ip_a: ip(t, 103),
            side_ip_b: ip(t, 104),
        },
    ];
    let proxies = Proxies::start(&Handle::current(), links, 17).unwrap();
    let (n1_for_n2, n2_for_n1) = proxies.sides(0);
    let (n2_for_n3, n3_for_n2) = proxies.sides(1);
    proxies.set_both(0, LinkFaults::blackhole()).unwrap();
    // node-2 talks to node-3; node-1 is cut off from node-2.
    nodes[1].send_to(b"2 to 3", n2_for_n3).await.unwrap();
    nodes[2].send_to(b"3 to 2", n3_for_n2).await.unwrap();
    nodes[0].send_to(b"1 to 2", n1_for_n2).await.unwrap();
    nodes[1].send_to(b"2 to 1", n2_for_n1).await.unwrap();
    let at3 = recv_n(&nodes[2], 1, wait()).await;
    assert_eq!(at3, vec![(b"2 to 3".to_vec(), n3_for_n2)]);
    let at2 = recv_n(&nodes[1], 1, wait()).await;
    assert_eq!(at2, vec![(b"3 to 2".to_vec(), n2_for_n3)]);
    assert!(
        until(|| proxies.stats(0, Dir::AtoB).received == 1
            && proxies.stats(0, Dir::BtoA).received == 1)
        .await
    );
    assert!(nothing_waiting(&nodes[0]) && nothing_waiting(&nodes[1]));
    drop(proxies);
}

fn nodes(t: u8, n: u8) -> Vec<UdpSocket> {
    (1..=n).map(|i| node(t, i)).collect()
}

/// Throughput of one clean direction, printed; never asserted (`--ignored` to run it). The
/// sender waits for each window to arrive, so that neither end overflows a socket buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn throughput_of_a_clean_link() {
    let p = pair(18, 18).await;
    let (windows, window, len) = (400usize, 256usize, 1200usize);
    let payload = numbered(0, len);
    let start = Instant::now();
    let mut got = 0;
    for _ in 0..windows {
        for _ in 0..window {
            p.a_to_b(&payload).await;
        }
        got += recv_n(&p.b, window, wait()).await.len();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{got} of {} datagrams of {len} bytes in {secs:.2} s: {:.1} MB/s, {:?}",
        windows * window,
        got as f64 * len as f64 / secs / 1e6,
        p.stats(Dir::AtoB)
    );
}

/// Two QUIC endpoints with the fleet's mutual TLS, through one link.
mod quic {
    use super::*;
    use net::quinn;
    use net::{NodeId, SystemClock};

    /// Bytes echoed per round.
    const ROUND_BYTES: usize = 1024 * 1024;
    /// How long one round may take, faults and all.
    const ROUND_MS: u64 = 60_000;
    /// How long a handshake through a blackholed direction is given (it can never complete).
    const CUT_HANDSHAKE_MS: u64 = 1_500;
    /// Connections the echo server takes (the test makes three).
    const CONNECTIONS_MAX: usize = 4;
    /// Streams it echoes per connection (the test opens two).
    const STREAMS_MAX: usize = 4;

    struct Ends {
        client: quinn::Endpoint,
        server: quinn::Endpoint,
    }

    fn ends(dir: &std::path::Path, t: u8) -> Ends {
        let ca = dir.join("ca");
        let ca_files = net::ca_init(&ca).unwrap();
        let nodes = dir.join("nodes");
        let (id_a, id_b): (NodeId, NodeId) = ("node-a".parse().unwrap(), "node-b".parse().unwrap());
        let identity = |id: &NodeId| {
            let f = net::ca_issue(&ca, id, &nodes, 1).unwrap();
            net::load_node_identity(&ca_files.cert, &f.cert, &f.key).unwrap()
        };
        let (ia, ib) = (identity(&id_a), identity(&id_b));
        let clock = Arc::new(SystemClock);
        let server_tls =
            net::tls::server_config(&ib, BTreeSet::from([id_a]), clock.clone()).unwrap();
        let client_tls = net::tls::client_config(&ia, clock).unwrap();
        let (server_crypto, client_crypto) =
            net::tls::quic_configs(server_tls, client_tls).unwrap();
        let server = quinn::Endpoint::server(
            quinn::ServerConfig::with_crypto(server_crypto),
            SocketAddr::new(ip(t, 2), 0),
        )
        .unwrap();
        let mut client = quinn::Endpoint::client(SocketAddr::new(ip(t, 1), 0)).unwrap();
        client.set_default_client_config(quinn::ClientConfig::new(client_crypto));
        Ends { client, server }
    }

    /// Echoes every bidirectional stream of every connection; reports each peer address.
    fn echo(server: quinn::Endpoint) -> tokio::sync::mpsc::UnboundedReceiver<SocketAddr> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for _ in 0..CONNECTIONS_MAX {
                let Some(incoming) = server.accept().await else {
                    return;
                };
                let Ok(conn) = incoming.await else { continue };
                let _ = tx.send(conn.remote_address());
                tokio::spawn(async move {
                    for _ in 0..STREAMS_MAX {
                        let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                            return;
                        };
                        let Ok(data) = recv.read_to_end(ROUND_BYTES).await else {
                            return;
                        };
                        if send.write_all(&data).await.is_err() || send.finish().is_err() {
                            return;
                        }
                    }
                });
            }
        });
        rx
    }

    async fn round(conn: &quinn::Connection, tag: u32) {
        let data: Vec<u8> = (0..ROUND_BYTES)
            .map(|k| ((k as u32 * 31) ^ tag) as u8)
            .collect();
        let work = async {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&data).await.unwrap();
            send.finish().unwrap();
            recv.read_to_end(ROUND_BYTES).await.unwrap()
        };
        let back = tokio::time::timeout(Duration::from_millis(ROUND_MS), work)
            .await
            .expect("an echo round finishes");
        assert!(back == data, "the echo differs");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quic_with_mutual_tls_talks_through_a_faulty_link() {
        let t = 19;
        let dir = tempfile::tempdir().unwrap();
        let Ends { client, server } = ends(dir.path(), t);
        let link = spec(
            t,
            client.local_addr().unwrap(),
            server.local_addr().unwrap(),
        );
        let proxies = Proxies::start(&Handle::current(), vec![link], 19).unwrap();
        let (side_a, side_b) = proxies.sides(0);
        let mut peers = echo(server);

        let conn = client.connect(side_a, "node-b").unwrap().await.unwrap();
        assert_eq!(conn.remote_address(), side_a);
        // The server saw the client at B's configured address for A.
        assert_eq!(peers.recv().await, Some(side_b));
        round(&conn, 1).await;

        let faults = LinkFaults {
            drop_per_mille: 30,
            delay_ms: 3,
            jitter_ms: 2,
            duplicate_per_mille: 30,
            reorder_per_mille: 50,
            corrupt_per_mille: 20,
            rate_bytes_per_s: None,
            blackhole: false,
        };
        proxies.set_both(0, faults).unwrap();
        round(&conn, 2).await;
        for dir in Dir::BOTH {
            let s = proxies.stats(0, dir);
            assert!(
                s.dropped > 0
                    && s.duplicated > 0
                    && s.reordered > 0
                    && s.corrupted > 0
                    && s.delayed > 0,
                "every fault fired {dir:?}: {s:?}"
            );
        }

        // One way cut (B → A): no new handshake completes; healed, it does.
        proxies.heal_all();
        proxies.set(0, Dir::BtoA, LinkFaults::blackhole()).unwrap();
        let cut = client.connect(side_a, "node-b").unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(CUT_HANDSHAKE_MS), cut)
                .await
                .is_err(),
            "a handshake completed without its answers"
        );
        proxies.heal_all();
        let again = tokio::time::timeout(wait(), client.connect(side_a, "node-b").unwrap())
            .await
            .expect("a handshake after healing")
            .unwrap();
        round(&again, 3).await;
        assert!(proxies.stats(0, Dir::BtoA).blackholed > 0);
        drop(proxies);
    }
}
