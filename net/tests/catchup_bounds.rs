//! Catch-up against a peer that lies (INV-15, INV-18): a raw QUIC client with a valid fleet
//! certificate that serves endless pages of ids it does not hold. Whatever it answers, a node's
//! catch-up spends no more than its bounds: pulls per round, the peer's bucket of wasted
//! pulls, pages per round (the next round goes on after them), and the round ends at the first
//! `NotHeld` for a listed id.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use net::wire::{Msg, StreamCode, encode_frame, read_frame};
use net::{NetConfig, RoundCut};

/// How the liar answers a `Pull`.
#[derive(Debug, Clone, Copy)]
enum PullAnswer {
    NotHeld,
    /// Resets the stream: the pull fails without a `NotHeld`.
    Reset,
}

#[derive(Default)]
struct LiarLog {
    pulls: AtomicU64,
    pages: AtomicU64,
    /// The `after` of every page request, in order.
    afters: Mutex<Vec<Option<[u8; 32]>>>,
}

/// `id + k`, as a 256-bit big-endian number.
fn plus(id: [u8; 32], k: u64) -> [u8; 32] {
    let mut out = id;
    let mut carry = u128::from(k);
    for b in out.iter_mut().rev() {
        if carry == 0 {
            break;
        }
        let v = u128::from(*b) + (carry & 0xff);
        *b = v as u8;
        carry = (carry >> 8) + (v >> 8);
    }
    out
}

/// Serves n's streams on `conn` as a liar: a digest that never matches; pages that list, one
/// per page, the ids in `listed_first` (sorted) and then, endlessly, 1024 made-up ids after
/// the requested one; and `answer` to every pull.
fn serve_liar(
    conn: quinn::Connection,
    listed_first: Vec<[u8; 32]>,
    answer: PullAnswer,
    log: Arc<LiarLog>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let (listed_first, log) = (listed_first.clone(), log.clone());
            tokio::spawn(async move {
                let Ok(first) = read_frame(&mut recv, 1 << 16).await else {
                    return;
                };
                let reply = match first {
                    Msg::DigestRequest => Msg::Digest {
                        count: 1 << 40,
                        hash: [0x5a; 32],
                    },
                    Msg::PageRequest { after } => {
                        log.pages.fetch_add(1, Ordering::SeqCst);
                        log.afters.lock().unwrap().push(after);
                        let next_listed = listed_first
                            .iter()
                            .find(|id| after.is_none_or(|a| **id > a));
                        let ids = match next_listed {
                            Some(id) => vec![*id],
                            None => {
                                let base = after.unwrap_or([0; 32]);
                                (1..=1024).map(|k| plus(base, k)).collect()
                            }
                        };
                        Msg::Page { ids, more: true }
                    }
                    Msg::Pull { .. } => {
                        log.pulls.fetch_add(1, Ordering::SeqCst);
                        match answer {
                            PullAnswer::NotHeld => Msg::NotHeld,
                            PullAnswer::Reset => {
                                let _ = send.reset(StreamCode::Internal.varint());
                                return;
                            }
                        }
                    }
                    _ => return,
                };
                let _ = send.write_all(&encode_frame(&reply)).await;
                let _ = send.finish();
                // Keep the stream until the node has read the answer.
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), recv.read(&mut [0u8; 1])).await;
            });
        }
    })
}

struct Setup {
    _fleet: Fleet,
    nodes: Vec<TestNode>,
    _raw: Raw,
    log: Arc<LiarLog>,
    _liar: tokio::task::JoinHandle<()>,
}

async fn setup(
    tweak: impl Fn(&mut NetConfig),
    seed_n: &[u64],
    list_held_first: bool,
    answer: PullAnswer,
) -> Setup {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["n"], 1 << 30);
    let mut held: Vec<[u8; 32]> = seed_n
        .iter()
        .map(|tag| seed(&planned[0].store, *tag, 1000).0)
        .collect();
    held.sort();
    let n_addr = planned[0].addr;
    let liar_socket = raw_socket();
    let nodes = start(&fleet, planned, &[], |cfg| {
        cfg.known_peers.insert(id("liar"), liar_socket.addr);
        tweak(cfg);
    });
    let raw = Raw::on(&fleet.identity("liar"), &liar_socket);
    let conn = raw.connect(n_addr, "n").await.expect("the liar connects");
    let log = Arc::new(LiarLog::default());
    let listed = if list_held_first { held } else { Vec::new() };
    let liar = serve_liar(conn, listed, answer, log.clone());
    Setup {
        _fleet: fleet,
        nodes,
        _raw: raw,
        log,
        _liar: liar,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_18_a_round_ends_at_the_first_not_held_and_a_liar_cannot_amplify_pulls() {
    // Rounds every 200 ms, from the connect on: the liar's endless pages would make a round
    // pull 1024 ids per page without the NotHeld rule.
    let s = setup(
        |cfg| {
            cfg.catchup_on_connect = true;
            cfg.catchup_interval_ms = 200;
        },
        &[],
        false,
        PullAnswer::NotHeld,
    )
    .await;
    let n = &s.nodes[0];
    let concurrent = net::limits::CATCHUP_PULLS_CONCURRENT_DEFAULT as u64;
    let report = n.node.catch_up(&id("liar")).await.expect("a round");
    assert_eq!(report.cut, Some(RoundCut::NotHeld), "{report:?}");
    assert!(
        (1..=concurrent).contains(&report.pulled),
        "pulls in one round: {report:?}"
    );
    assert_eq!(report.pages, 1, "{report:?}");
    // Over 3 s of periodic rounds, the pulls stay within rounds × concurrency (the issue saw
    // 2.1 million in 45 s).
    let before = s.log.pulls.load(Ordering::SeqCst);
    let rounds_before = n.node.stats().catchup_rounds_cut;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pulls = s.log.pulls.load(Ordering::SeqCst) - before;
    let rounds = n.node.stats().catchup_rounds_cut - rounds_before;
    assert!(rounds >= 5, "periodic rounds ran: {rounds}");
    assert!(
        pulls <= rounds * concurrent,
        "{pulls} pulls in {rounds} rounds"
    );
    assert!(pulls <= 16 * concurrent, "{pulls} pulls in 3 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_18_pulls_are_bounded_per_round_and_per_peer() {
    // The liar fails every pull without saying NotHeld.
    let s = setup(
        |cfg| {
            cfg.catchup_pulls_per_round_max = 20;
            cfg.catchup_wasted_pulls_per_peer_per_min = 30;
            cfg.catchup_pulls_concurrent = 4;
        },
        &[],
        false,
        PullAnswer::Reset,
    )
    .await;
    let n = &s.nodes[0];
    let first = n.node.catch_up(&id("liar")).await.expect("round 1");
    assert_eq!(
        (first.pulled, first.cut),
        (20, Some(RoundCut::PullBound)),
        "{first:?}"
    );
    assert_eq!(first.stored, 0);
    // The peer's bucket (30 a minute) has 10 left: the next round stops there...
    let second = n.node.catch_up(&id("liar")).await.expect("round 2");
    assert_eq!(
        (second.pulled, second.cut),
        (10, Some(RoundCut::Budget)),
        "{second:?}"
    );
    // ...and the one after pulls nothing.
    let third = n.node.catch_up(&id("liar")).await.expect("round 3");
    assert_eq!(
        (third.pulled, third.cut),
        (0, Some(RoundCut::Budget)),
        "{third:?}"
    );
    assert_eq!(s.log.pulls.load(Ordering::SeqCst), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_15_inv_18_a_round_cut_by_its_page_bound_goes_on_after_it_next_time() {
    // n holds 6 segments; the liar lists them one per page first: 4 pages and nothing to pull.
    let s = setup(
        |cfg| cfg.catchup_pages_per_round_max = 4,
        &[1, 2, 3, 4, 5, 6],
        true,
        PullAnswer::NotHeld,
    )
    .await;
    let n = &s.nodes[0];
    let mut held = stored_ids(&n.store);
    held.sort();
    let first = n.node.catch_up(&id("liar")).await.expect("round 1");
    assert_eq!(
        (first.pages, first.pulled, first.cut),
        (4, 0, Some(RoundCut::PageBound)),
        "{first:?}"
    );
    s.log.afters.lock().unwrap().clear();
    let second = n.node.catch_up(&id("liar")).await.expect("round 2");
    let afters = s.log.afters.lock().unwrap().clone();
    assert_eq!(
        afters.first().copied().flatten(),
        Some(held[3].0),
        "round 2 starts after the last id round 1 saw"
    );
    // It reads the last two listed ids, then made-up ones, and stops at their NotHeld.
    assert_eq!(second.cut, Some(RoundCut::NotHeld), "{second:?}");
    assert!(second.pages >= 3, "{second:?}");
}
