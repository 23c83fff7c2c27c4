//! What the evil peer answers on the streams its victim opens: the victim's relay pushes to
//! it (it is a known peer, so every segment the victim stores is owed to it) and the victim's
//! catch-up, which pulls from it on every connect and every `catchup_interval_ms`.
//!
//! The [`Mode`] decides the answers; [`Observed`] counts what the victim asked, round by round
//! (a round starts with a `DigestRequest`: rounds with one peer run one at a time), so a
//! scenario can hold the victim's catch-up to its bounds from the outside.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use net::quinn::{self, Connection, RecvStream, SendStream};
use net::wire::{Msg, StreamCode, encode_frame, read_frame};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use store::SegmentId;
use tokio::time::{Instant, timeout};

use super::craft::Crafted;
use super::{
    ANSWER_TIMEOUT_MS, CONNECT_TIMEOUT_MS, EVIL_FRAME_BYTES_MAX, PAYLOAD_WRITE_TIMEOUT_MS,
    StreamEnd, answer, write,
};

/// Rounds remembered (a scenario sees a few dozen; the bound keeps a runaway victim from
/// growing the list without end).
pub const ROUNDS_KEPT_MAX: usize = 10_000;
/// Answers to pulled poisoned offers remembered.
pub const PULLED_KEPT_MAX: usize = 10_000;
/// Ids in one page of a [`Mode::HugeDigest`] answer: the most a page may hold.
pub const HUGE_PAGE_IDS: usize = net::limits::CATCHUP_PAGE_IDS_MAX;

/// How the evil peer answers its victim.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Like a peer that holds nothing: `Have` to every offer (so the victim's jobs to it end),
    /// a digest and one empty page to catch-up, `NotHeld` to pulls.
    Quiet,
    /// A different digest every time, endless full pages of random ids (`more` always set),
    /// and `NotHeld` to every pull, `not_held_delay_ms` after it came (so the pulls a round
    /// starts before its first `NotHeld` are bounded by the round's own limits only).
    HugeDigest { seed: u64, not_held_delay_ms: u64 },
    /// Lists these crafted segments in catch-up and, when the victim pulls one, offers it (and
    /// streams its payload if the victim wants it), recording the victim's answers.
    Poisoned(Vec<Crafted>),
}

/// One catch-up round the victim ran with the evil peer, as the evil peer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// When its `DigestRequest` came, in ms since the evil peer started.
    pub at_ms: u64,
    pub pages: u64,
    pub pulls: u64,
}

/// Everything the evil peer saw the victim do on the streams the victim opened.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Offers (the victim's relay pushing to the evil peer), each answered `Have`.
    pub offers: u64,
    pub digests: u64,
    pub pages: u64,
    pub pulls: u64,
    /// One per `DigestRequest`, in order (at most [`ROUNDS_KEPT_MAX`]).
    pub rounds: Vec<Round>,
    /// For each poisoned segment the victim pulled: its id and the victim's answer to the
    /// offer (or to the payload, if it wanted one).
    pub pulled: Vec<(SegmentId, StreamEnd)>,
    /// Streams whose first frame was not a request the protocol allows there.
    pub odd_streams: u64,
}

/// The evil peer's serving state: its mode and what it saw.
#[derive(Debug)]
pub struct Served {
    mode: Mode,
    started: Instant,
    rng: Mutex<ChaCha8Rng>,
    observed: Mutex<Observed>,
}

impl Served {
    pub fn new(mode: Mode) -> Served {
        let seed = match &mode {
            Mode::HugeDigest { seed, .. } => *seed,
            _ => 0,
        };
        Served {
            mode,
            started: Instant::now(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            observed: Mutex::new(Observed::default()),
        }
    }

    /// A copy of what was seen so far.
    pub fn observed(&self) -> Observed {
        self.observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn note(&self, f: impl FnOnce(&mut Observed)) {
        f(&mut self.observed.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn digest(&self) -> Msg {
        match &self.mode {
            Mode::HugeDigest { .. } => {
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                let mut hash = [0u8; 32];
                rng.fill_bytes(&mut hash);
                Msg::Digest {
                    count: rng.random_range(1 << 20..1 << 40),
                    hash,
                }
            }
            // Differs from any node holding something, so the victim asks for pages.
            Mode::Quiet | Mode::Poisoned(_) => Msg::Digest {
                count: 0,
                hash: [0x5a; 32],
            },
        }
    }

    fn page(&self, after: Option<[u8; 32]>) -> Msg {
        match &self.mode {
            Mode::Quiet => Msg::Page {
                ids: Vec::new(),
                more: false,
            },
            Mode::HugeDigest { .. } => {
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                Msg::Page {
                    ids: ids_after(after, HUGE_PAGE_IDS, &mut *rng),
                    more: true,
                }
            }
            Mode::Poisoned(crafted) => {
                let mut ids: Vec<[u8; 32]> = crafted
                    .iter()
                    .map(|c| c.id.0)
                    .filter(|id| after.is_none_or(|a| *id > a))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                ids.truncate(HUGE_PAGE_IDS);
                Msg::Page { ids, more: false }
            }
        }
    }
}

/// `n` ids strictly increasing, all after `after`: the first 8 bytes count up (big-endian) from
/// `after`'s (or from a random start), the other 24 are random. Fewer than `n` only where the
/// counter would overflow.
pub fn ids_after(after: Option<[u8; 32]>, n: usize, rng: &mut impl Rng) -> Vec<[u8; 32]> {
    let base = match after {
        Some(a) => {
            let mut prefix = [0u8; 8];
            prefix.copy_from_slice(&a[..8]);
            u64::from_be_bytes(prefix)
        }
        // Low enough that a round of pages never reaches the end of the counter.
        None => rng.random_range(0..u64::MAX / 2),
    };
    let mut out = Vec::with_capacity(n);
    for k in 1..=n as u64 {
        let Some(prefix) = base.checked_add(k) else {
            break;
        };
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&prefix.to_be_bytes());
        rng.fill_bytes(&mut id[8..]);
        out.push(id);
    }
    out
}

/// Accepts connections (the victim dialling its known peer) and serves each.
pub async fn accept_loop(endpoint: quinn::Endpoint, served: Arc<Served>) {
    while let Some(incoming) = endpoint.accept().await {
        let served = served.clone();
        tokio::spawn(async move {
            let limit = Duration::from_millis(CONNECT_TIMEOUT_MS);
            if let Ok(Ok(conn)) = timeout(limit, incoming).await {
                serve_connection(conn, served).await;
            }
        });
    }
}

/// Answers every stream the victim opens on `conn` until it closes.
pub async fn serve_connection(conn: Connection, served: Arc<Served>) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(serve_stream(send, recv, served.clone()));
    }
}

async fn serve_stream(mut send: SendStream, mut recv: RecvStream, served: Arc<Served>) {
    let limit = Duration::from_millis(ANSWER_TIMEOUT_MS);
    let first = match timeout(limit, read_frame(&mut recv, EVIL_FRAME_BYTES_MAX)).await {
        Ok(Ok(msg)) => msg,
        _ => {
            served.note(|o| o.odd_streams += 1);
            let _ = send.reset(StreamCode::Protocol.varint());
            return;
        }
    };
    let reply = match first {
        Msg::Offer { .. } => {
            served.note(|o| o.offers += 1);
            Msg::Have
        }
        Msg::DigestRequest => {
            let at_ms = served.started.elapsed().as_millis() as u64;
            served.note(|o| {
                o.digests += 1;
                if o.rounds.len() < ROUNDS_KEPT_MAX {
                    o.rounds.push(Round {
                        at_ms,
                        pages: 0,
                        pulls: 0,
                    });
                }
            });
            served.digest()
        }
        Msg::PageRequest { after } => {
            served.note(|o| {
                o.pages += 1;
                if let Some(r) = o.rounds.last_mut() {
                    r.pages += 1;
                }
            });
            served.page(after)
        }
        Msg::Pull { id } => {
            served.note(|o| {
                o.pulls += 1;
                if let Some(r) = o.rounds.last_mut() {
                    r.pulls += 1;
                }
            });
            if let Mode::HugeDigest {
                not_held_delay_ms, ..
            } = &served.mode
            {
                tokio::time::sleep(Duration::from_millis(*not_held_delay_ms)).await;
            }
            if let Mode::Poisoned(crafted) = &served.mode {
                if let Some(c) = crafted.iter().find(|c| c.id.0 == id) {
                    let end = serve_poisoned(&mut send, &mut recv, c).await;
                    served.note(|o| {
                        if o.pulled.len() < PULLED_KEPT_MAX {
                            o.pulled.push((c.id, end));
                        }
                    });
                    return;
                }
            }
            Msg::NotHeld
        }
        _ => {
            served.note(|o| o.odd_streams += 1);
            let _ = send.reset(StreamCode::Protocol.varint());
            return;
        }
    };
    let _ = write(&mut send, &encode_frame(&reply), limit).await;
    let _ = send.finish();
}

/// Offers a pulled poisoned segment, sends its payload if wanted; the victim's last answer.
async fn serve_poisoned(send: &mut SendStream, recv: &mut RecvStream, c: &Crafted) -> StreamEnd {
    let offer = encode_frame(&Msg::Offer {
        manifest: c.manifest.clone(),
    });
    let limit = Duration::from_millis(ANSWER_TIMEOUT_MS);
    if let Err(end) = write(send, &offer, limit).await {
        return end;
    }
    match answer(recv).await {
        StreamEnd::Frame(Msg::Want { offset }) => {
            // Cannot truncate: offsets are at most the payload's length, checked here.
            let from = (offset.min(c.payload.len() as u64)) as usize;
            let limit = Duration::from_millis(PAYLOAD_WRITE_TIMEOUT_MS);
            if let Err(end) = write(send, &c.stream_from(from), limit).await {
                return end;
            }
            let _ = send.finish();
            answer(recv).await
        }
        other => {
            let _ = send.finish();
            other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_are_strictly_increasing_and_after_the_cursor() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let first = ids_after(None, HUGE_PAGE_IDS, &mut rng);
        assert_eq!(first.len(), HUGE_PAGE_IDS);
        assert!(first.windows(2).all(|w| w[0] < w[1]));
        let next = ids_after(first.last().copied(), HUGE_PAGE_IDS, &mut rng);
        assert!(next[0] > *first.last().unwrap());
        assert!(next.windows(2).all(|w| w[0] < w[1]));
        // At the end of the counter: fewer, never wrapping around.
        let mut end = [0xff; 32];
        end[7] = 0xfd;
        let last = ids_after(Some(end), 10, &mut rng);
        assert_eq!(last.len(), 2);
        assert!(last.iter().all(|id| *id > end));
    }

    #[test]
    fn the_same_seed_gives_the_same_pages() {
        let mode = Mode::HugeDigest {
            seed: 3,
            not_held_delay_ms: 0,
        };
        let a = Served::new(mode.clone());
        let b = Served::new(mode);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.page(None), b.page(None));
        assert_ne!(a.digest(), a.digest());
    }

    #[test]
    fn a_full_huge_page_fits_in_a_frame() {
        let s = Served::new(Mode::HugeDigest {
            seed: 1,
            not_held_delay_ms: 0,
        });
        let frame = net::wire::encode_frame(&s.page(Some([0; 32])));
        assert!(frame.len() - net::limits::FRAME_PREFIX_BYTES <= EVIL_FRAME_BYTES_MAX);
    }
}
