//! A known peer that speaks the protocol badly (a raw QUIC client with a valid certificate):
//! every lie is rejected or timed out with the right reason, nothing is stored, and the node
//! goes on serving an honest peer meanwhile (INV-02, INV-17, INV-18). On the simulated network
//! and virtual time: stalls and floods take their configured time without waiting for it.

mod common;
mod simnet;

use std::time::Duration;

use common::*;
use simnet::{SimFleet, SimNode, run, tmp_files};

/// The seed of the simulated network and fleet.
const SEED: u64 = 17;
use net::wire::{Msg, StreamCode, encode_frame, read_frame};
use net::{RejectReason, SendOutcome};
use quinn::{Connection, RecvStream, SendStream};

const SEG_BYTES: u64 = 1 << 20;

struct Setup {
    fleet: SimFleet,
    nodes: Vec<SimNode>,
    liar: Connection,
    _raw: Raw,
    honest_seg: store::SegmentId,
}

impl Setup {
    fn n(&self) -> &SimNode {
        &self.nodes[0]
    }

    /// The honest peer delivers a segment to n, and n holds nothing else.
    async fn honest_still_served(&self) {
        let good = &self.nodes[1];
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            good.node.send_segment(&id("n"), self.honest_seg),
        )
        .await
        .expect("bounded");
        assert_eq!(outcome, SendOutcome::Delivered);
        assert_eq!(stored_ids(&self.n().store), vec![self.honest_seg]);
    }
}

/// Nodes n and good on the simulated network; liar is a raw client with a valid certificate
/// at an address n lists.
async fn setup(tweak: impl Fn(&mut net::NetConfig) + Clone) -> Setup {
    logs();
    let fleet = SimFleet::new(SEED, &["n", "good", "liar"]);
    let honest_seg = fleet.seed_segment(1, 99, 2 << 20);
    let liar_addr = simnet::addr(2);
    let nodes = fleet.start_nodes(SEED, &["n", "good"], &[("n", "good")], |cfg| {
        if cfg.node_id.as_str() == "n" {
            // The liar is known (its certificate is valid, its address listed); n's dials to
            // it go nowhere (a raw client serves nothing).
            cfg.known_peers.insert(id("liar"), liar_addr);
        }
        tweak(cfg);
    });
    let raw = Raw::with_socket(&fleet.identities[2], fleet.net.socket(liar_addr));
    let liar = raw
        .connect(nodes[0].addr, "n")
        .await
        .expect("liar connects");
    Setup {
        fleet,
        nodes,
        liar,
        _raw: raw,
        honest_seg,
    }
}

async fn offer(
    conn: &Connection,
    signed: &store::manifest::SignedManifest,
) -> (SendStream, RecvStream, Msg) {
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(&encode_frame(&Msg::Offer {
        manifest: signed.encode(),
    }))
    .await
    .expect("offer");
    let answer = read_frame(&mut recv, 1 << 16).await.expect("answer");
    (send, recv, answer)
}

/// The final answer after a payload, or the code the stream was reset with.
async fn final_answer(recv: &mut RecvStream) -> Result<Msg, String> {
    tokio::time::timeout(Duration::from_secs(5), read_frame(recv, 1 << 16))
        .await
        .map_err(|_| "no answer".to_owned())?
        .map_err(|e| e.to_string())
}

fn rejected_with(answer: Result<Msg, String>, reason: RejectReason) {
    match answer {
        Ok(Msg::Reject { reason: r, .. }) => assert_eq!(r, reason),
        other => panic!("expected Reject({reason}), got {other:?}"),
    }
}

/// Nothing of `id` is stored, and no temp file is left without a partial record.
async fn nothing_stored(n: &SimNode, signed: &store::manifest::SignedManifest) {
    let seg = signed.id();
    assert!(
        eventually(Duration::from_secs(3), || {
            !matches!(
                n.store.holding(&seg).unwrap(),
                store::Holding::Stored | store::Holding::Ingesting
            )
        })
        .await,
        "{seg} must not be stored"
    );
}

#[test]
fn inv_02_payload_not_matching_the_hash_is_rejected() {
    run(async {
        let s = setup(|_| {}).await;
        let signed = segment(10, SEG_BYTES);
        let (mut send, mut recv, answer) = offer(&s.liar, &signed).await;
        assert_eq!(answer, Msg::Want { offset: 0 });
        send.write_all(&payload(11, SEG_BYTES as usize))
            .await
            .unwrap();
        send.finish().unwrap();
        rejected_with(final_answer(&mut recv).await, RejectReason::HashMismatch);
        nothing_stored(s.n(), &signed).await;
        // A mismatch drops the partial: nothing is kept for resume.
        assert_eq!(
            s.n().store.holding(&signed.id()).unwrap(),
            store::Holding::Absent
        );
        assert_eq!(tmp_files(&s.fleet.fss[0]), 0);
        s.honest_still_served().await;
    });
}

#[test]
fn inv_17_truncated_and_overlong_payloads_are_rejected() {
    run(async {
        let s = setup(|_| {}).await;
        let signed = segment(12, SEG_BYTES);
        let body = payload(12, SEG_BYTES as usize);

        let (mut send, mut recv, _) = offer(&s.liar, &signed).await;
        send.write_all(&body[..body.len() / 2]).await.unwrap();
        send.finish().unwrap();
        rejected_with(final_answer(&mut recv).await, RejectReason::LengthMismatch);
        nothing_stored(s.n(), &signed).await;

        let (mut send, mut recv, answer) = offer(&s.liar, &signed).await;
        // The half received before was kept as a partial: the receiver resumes after it.
        let Msg::Want { offset } = answer else {
            panic!("{answer:?}")
        };
        let _ = send.write_all(&body[offset as usize..]).await;
        let _ = send.write_all(b"one byte too many").await;
        let _ = send.finish();
        rejected_with(final_answer(&mut recv).await, RejectReason::LengthMismatch);
        nothing_stored(s.n(), &signed).await;
        s.honest_still_served().await;
    });
}

/// Writes `bytes` as the first thing on a new stream and returns how the node ended it.
async fn first_bytes(conn: &Connection, bytes: &[u8]) -> Option<u64> {
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let _ = send.write_all(bytes).await;
    match tokio::time::timeout(Duration::from_secs(5), recv.read(&mut [0u8; 16])).await {
        Ok(Err(quinn::ReadError::Reset(code))) => Some(code.into_inner()),
        other => panic!("expected a reset stream, got {other:?}"),
    }
}

#[test]
fn inv_17_oversized_garbage_and_trailing_frames_reset_only_their_stream() {
    run(async {
        let s = setup(|_| {}).await;
        let max = net::limits::FRAME_BYTES_MAX_DEFAULT as u32;
        // Length prefixes at N+1 and far beyond: refused before allocating.
        for len in [max + 1, u32::MAX] {
            let code = first_bytes(&s.liar, &len.to_le_bytes()).await;
            assert_eq!(code, Some(StreamCode::FrameTooLarge as u64));
        }
        // Garbage bodies, an empty frame, trailing bytes, an unexpected first message.
        let mut trailing = encode_frame(&Msg::DigestRequest);
        trailing[0] += 1;
        trailing.push(0);
        for bytes in [
            vec![5, 0, 0, 0, 200, 1, 2, 3, 4],
            vec![0, 0, 0, 0],
            trailing,
            encode_frame(&Msg::Ack),
            encode_frame(&Msg::Want { offset: 3 }),
        ] {
            let code = first_bytes(&s.liar, &bytes).await;
            assert_eq!(code, Some(StreamCode::Protocol as u64), "{bytes:?}");
        }
        // A frame of exactly the maximum is read (and then refused as garbage, not as too large).
        let mut at_max = max.to_le_bytes().to_vec();
        at_max.extend(std::iter::repeat_n(0xee, max as usize));
        assert_eq!(
            first_bytes(&s.liar, &at_max).await,
            Some(StreamCode::Protocol as u64)
        );
        // A malformed manifest in a well-formed Offer is rejected as Malformed.
        let (mut send, mut recv) = s.liar.open_bi().await.unwrap();
        send.write_all(&encode_frame(&Msg::Offer {
            manifest: vec![1, 2, 3],
        }))
        .await
        .unwrap();
        rejected_with(final_answer(&mut recv).await, RejectReason::Malformed);
        // The connection itself is still fine: a correct request on it is answered.
        assert!(app_data_gets_through(&s.liar).await);
        assert!(s.n().node.stats().streams_failed >= 8);
        s.honest_still_served().await;
    });
}

#[test]
fn inv_18_stalled_transfer_times_out_and_keeps_a_partial() {
    run(async {
        let s = setup(|_| {}).await;
        let signed = segment(13, SEG_BYTES);
        let body = payload(13, SEG_BYTES as usize);
        let (mut send, mut recv, answer) = offer(&s.liar, &signed).await;
        assert_eq!(answer, Msg::Want { offset: 0 });
        send.write_all(&body[..300_000]).await.unwrap();
        // Then nothing: stall_timeout_ms is 1 s in these tests.
        let started = tokio::time::Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(5), recv.read(&mut [0u8; 16])).await;
        match ended {
            Ok(Err(quinn::ReadError::Reset(code))) => {
                assert_eq!(code.into_inner(), StreamCode::Stalled as u64)
            }
            other => panic!("expected a stall reset, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(4));
        nothing_stored(s.n(), &signed).await;
        // What arrived was checkpointed: the next attempt resumes after it.
        assert!(
            eventually(Duration::from_secs(3), || matches!(
                s.n().store.holding(&signed.id()).unwrap(),
                store::Holding::Partial { offset } if offset == 300_000
            ))
            .await
        );
        s.honest_still_served().await;
    });
}

#[test]
fn inv_18_stream_flood_stays_within_limits_and_honest_peer_is_served() {
    run(async {
        let s = setup(|cfg| {
            cfg.streams_per_peer_max = 16;
            cfg.response_timeout_ms = 500;
        })
        .await;
        // 200 streams at once: half send garbage, half send one byte and then nothing.
        let mut flood = tokio::task::JoinSet::new();
        for i in 0..200u32 {
            let conn = s.liar.clone();
            flood.spawn(async move {
                let Ok((mut send, mut recv)) = conn.open_bi().await else {
                    return;
                };
                if i % 2 == 0 {
                    let _ = send.write_all(&[9, 0, 0, 0, 0xff, 0xff]).await;
                } else {
                    // QUIC opens the stream only once something is sent on it.
                    let _ = send.write_all(&[0]).await;
                }
                let _ =
                    tokio::time::timeout(Duration::from_secs(20), recv.read(&mut [0u8; 8])).await;
            });
        }
        // Meanwhile the honest peer is served.
        s.honest_still_served().await;
        let drained = tokio::time::timeout(Duration::from_secs(30), async {
            while flood.join_next().await.is_some() {}
        })
        .await;
        assert!(
            drained.is_ok(),
            "every flooding stream was ended within the bound"
        );
        assert!(s.n().node.stats().streams_failed >= 200);
    });
}

#[test]
fn inv_18_connection_flood_keeps_at_most_the_cap() {
    run(async {
        let s = setup(|cfg| cfg.connections_per_peer_max = 2).await;
        // More connections from the liar's own endpoint (its listed address).
        let mut conns = vec![s.liar.clone()];
        for _ in 0..6 {
            if let Ok(c) = s._raw.connect(s.n().addr, "n").await {
                conns.push(c);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let open = conns.iter().filter(|c| c.close_reason().is_none()).count();
        assert!(open <= 2, "{open} connections of one peer stayed open");
        assert!(s.n().node.stats().connections_closed >= 5);
        s.honest_still_served().await;
    });
}
