//! The minimum-rate rule and the takeover rule (INV-18), against lying peers with valid
//! certificates and windows shortened through config: a stall is "below a minimum rate over a
//! window" in both directions, and a second sender of a segment does not wait behind a slow
//! first one.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use net::wire::{Msg, StreamCode, encode_frame, read_frame};
use net::{NetConfig, SendOutcome};

/// Rate windows of 1 s; at least 4 KiB per window; takeover below 64 KiB/s.
fn windows(cfg: &mut NetConfig) {
    cfg.stall_timeout_ms = 1_000;
    cfg.stall_rate_min_bytes_per_s = 4 << 10;
    cfg.takeover_below_rate_bytes_per_s = 64 << 10;
    cfg.response_timeout_ms = 4_000;
}

struct Setup {
    fleet: Fleet,
    nodes: Vec<TestNode>,
    raw: Raw,
    conn: quinn::Connection,
}

/// Node "n" (and "good", which knows it), and a raw peer "liar" connected to n from its listed
/// address. `tweak` applies to both nodes; `raw_tweak` to the raw client's transport.
async fn setup(
    tweak: impl Fn(&mut NetConfig),
    raw_tweak: impl FnOnce(&mut NetConfig),
    good_holds: &[(u64, u64)],
) -> Setup {
    logs();
    let fleet = Fleet::new();
    let planned = plan(&["n", "good"], 1 << 30);
    for (tag, len) in good_holds {
        seed(&planned[1].store, *tag, *len);
    }
    let n_addr = planned[0].addr;
    let liar_socket = raw_socket();
    let nodes = start(&fleet, planned, &[("n", "good")], |cfg| {
        if cfg.node_id.as_str() == "n" {
            cfg.known_peers.insert(id("liar"), liar_socket.addr);
        }
        tweak(cfg);
    });
    let raw = Raw::on_tuned(&fleet.identity("liar"), &liar_socket, raw_tweak);
    let conn = raw.connect(n_addr, "n").await.expect("the liar connects");
    Setup {
        fleet,
        nodes,
        raw,
        conn,
    }
}

/// Offers segment (`tag`, `len`) on a new stream; returns the streams and the answer.
async fn offer(
    conn: &quinn::Connection,
    tag: u64,
    len: u64,
) -> (quinn::SendStream, quinn::RecvStream, Msg) {
    raw_offer(conn, &segment(tag, len)).await
}

/// Writes `body[from..]` in pieces of `piece` bytes every `every`, until done, the stream is
/// stopped, or `stop` is set; returns the bytes written.
async fn trickle(
    send: &mut quinn::SendStream,
    body: &[u8],
    from: usize,
    piece: usize,
    every: Duration,
    stop: &AtomicBool,
) -> usize {
    let mut at = from;
    while at < body.len() && !stop.load(Ordering::SeqCst) {
        let end = (at + piece).min(body.len());
        if send.write_all(&body[at..end]).await.is_err() {
            break;
        }
        at = end;
        tokio::time::sleep(every).await;
    }
    at - from
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_18_a_trickling_sender_is_cut_within_about_one_window() {
    let s = setup(windows, |_| {}, &[]).await;
    let n = &s.nodes[0];
    let len = 1 << 20;
    let body = payload(10, len as usize);
    let (mut send, mut recv, answer) = offer(&s.conn, 10, len).await;
    assert_eq!(answer, Msg::Want { offset: 0 });
    // 100 bytes every 200 ms: a byte well within every second (the old "no progress" rule
    // never fires), 500 B/s against the 4 KiB/s required.
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        async move {
            trickle(&mut send, &body, 0, 100, Duration::from_millis(200), &stop).await;
        }
    };
    let ended = async {
        let r = tokio::time::timeout(Duration::from_secs(8), recv.read(&mut [0u8; 16])).await;
        stop.store(true, Ordering::SeqCst);
        r
    };
    let ((), ended) = tokio::join!(writer, ended);
    match ended {
        Ok(Err(quinn::ReadError::Reset(code))) => {
            assert_eq!(code.into_inner(), StreamCode::Stalled as u64)
        }
        other => panic!("expected a stall reset, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(3_000),
        "cut after {took:?}, not within about one 1 s window"
    );
    assert!(n.node.stats().transfers_stalled >= 1);
    // What arrived was kept for resume.
    let seg = segment(10, len).id();
    assert!(
        eventually(Duration::from_secs(3), || matches!(
            n.store.holding(&seg).unwrap(),
            store::Holding::Partial { offset } if offset > 0
        ))
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_18_a_slow_but_steady_sender_above_the_minimum_is_not_cut() {
    let s = setup(windows, |_| {}, &[]).await;
    let n = &s.nodes[0];
    let len = 48 << 10;
    let body = payload(11, len as usize);
    let (mut send, mut recv, answer) = offer(&s.conn, 11, len).await;
    assert_eq!(answer, Msg::Want { offset: 0 });
    // 1 KiB every 100 ms: ~10 KiB/s against 4 KiB/s required, for ~5 windows.
    let stop = AtomicBool::new(false);
    let sent = trickle(&mut send, &body, 0, 1024, Duration::from_millis(100), &stop).await;
    assert_eq!(sent, len as usize);
    send.finish().unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut recv, 1 << 16))
        .await
        .expect("answered");
    assert_eq!(answer.unwrap(), Msg::Ack);
    assert_eq!(stored_ids(&n.store), vec![segment(11, len).id()]);
    assert_eq!(n.node.stats().transfers_stalled, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_18_an_honest_second_sender_takes_over_from_a_slow_first_one() {
    let (tag, len) = (12u64, 4u64 << 20);
    let s = setup(windows, |_| {}, &[(tag, len)]).await;
    let (n, good) = (&s.nodes[0], &s.nodes[1]);
    assert!(
        good.node
            .wait_connected(&id("n"), Duration::from_secs(5))
            .await
    );
    let seg = segment(tag, len).id();
    // The liar trickles at ~20 KiB/s: above the minimum (never cut), below the takeover rate.
    // When its stream is stopped it offers again, and keeps trickling, for the whole test.
    let body = Arc::new(payload(tag, len as usize));
    let stop = Arc::new(AtomicBool::new(false));
    let liar_offers = Arc::new(AtomicU64::new(0));
    let liar = {
        let (conn, body, stop, offers) = (
            s.conn.clone(),
            body.clone(),
            stop.clone(),
            liar_offers.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) && offers.load(Ordering::SeqCst) < 100 {
                offers.fetch_add(1, Ordering::SeqCst);
                if conn.close_reason().is_some() {
                    return;
                }
                let (mut send, _recv, answer) = offer(&conn, tag, len).await;
                match answer {
                    Msg::Want { offset } => {
                        if send.write_all(&outboard(tag, len)).await.is_err() {
                            continue;
                        }
                        trickle(
                            &mut send,
                            &body,
                            offset as usize,
                            2048,
                            Duration::from_millis(100),
                            &stop,
                        )
                        .await;
                    }
                    Msg::Have => return,
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        })
    };
    // Let the liar hold the segment for more than a window first.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(matches!(
        n.store.holding(&seg).unwrap(),
        store::Holding::Ingesting
    ));
    // The honest peer offers it: it takes over and completes, resuming after what the liar
    // sent (the liar's partial was kept). Busy answers are retried, a bounded number of times.
    let started = Instant::now();
    let mut outcome = SendOutcome::Busy;
    for _ in 0..20 {
        outcome = good.node.send_segment(&id("n"), seg).await;
        if outcome != SendOutcome::Busy || started.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        outcome,
        SendOutcome::Delivered,
        "after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(stored_ids(&n.store), vec![seg]);
    assert_eq!(
        good.node.stats().transfers_resumed,
        1,
        "resumed from the preempted sender's checkpoint"
    );
    assert!(n.node.stats().transfers_preempted >= 1);
    assert_eq!(
        n.node.stats().transfers_stalled,
        0,
        "the liar was taken over, not cut"
    );
    stop.store(true, Ordering::SeqCst);
    let _ = tokio::time::timeout(Duration::from_secs(5), liar).await;
    let _ = &s.fleet;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_18_a_receiver_reading_too_slowly_is_cut_by_the_sender() {
    // Small windows on both sides, so flow-control credit comes in 8 KiB steps: the sender
    // sees the reader's pace, and needs 64 KiB/s (less one step) per 1 s window.
    let small = |cfg: &mut NetConfig| {
        cfg.stream_receive_window_bytes = 64 << 10;
        cfg.receive_window_bytes = 256 << 10;
        cfg.send_window_bytes = 256 << 10;
    };
    let s = setup(
        |cfg| {
            windows(cfg);
            small(cfg);
            cfg.stall_rate_min_bytes_per_s = 64 << 10;
        },
        small,
        &[],
    )
    .await;
    let n = &s.nodes[0];
    let seg = seed(&n.store, 13, 4 << 20);
    // The liar pulls the segment and reads 4 KiB every 100 ms (~40 KiB/s): a steady trickle
    // of progress that the old "no progress for a window" rule never cuts.
    let (mut send, mut recv) = s.conn.open_bi().await.unwrap();
    send.write_all(&encode_frame(&Msg::Pull { id: seg.0 }))
        .await
        .unwrap();
    let first = read_frame(&mut recv, 1 << 16).await.unwrap();
    assert!(matches!(first, Msg::Offer { .. }), "{first:?}");
    send.write_all(&encode_frame(&Msg::Want { offset: 0 }))
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4 << 10];
    let ended = loop {
        if started.elapsed() > Duration::from_secs(15) {
            break None;
        }
        match recv.read(&mut buf).await {
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(None) => break Some(Ok(())),
            Err(e) => break Some(Err(e)),
        }
    };
    match ended {
        Some(Err(quinn::ReadError::Reset(code))) => {
            assert_eq!(code.into_inner(), StreamCode::Stalled as u64)
        }
        other => panic!("expected the sender to reset a slow reader, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "cut after {:?}",
        started.elapsed()
    );
    assert!(n.node.stats().transfers_stalled >= 1);
    let _ = (&s.raw, &s.fleet);
}
