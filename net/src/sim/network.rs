//! [`SimNet`]: the shared state of the simulated network: bound addresses, links, datagrams in
//! flight, the fault RNG and the trace.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use quinn::AsyncUdpSocket;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use tokio::time::{Duration, Instant};

use super::socket::SimSocket;

/// Every datagram takes at least this long, so that time moves on the paused clock even on a
/// perfect link (and a reply never arrives in the same instant as its request).
pub const LINK_LATENCY_MIN_MS: u64 = 1;
/// A datagram held back by reordering arrives up to this much later than it would have.
pub const REORDER_HOLD_MAX_MS: u64 = 10;
/// A duplicate arrives up to this much after the original.
pub const DUPLICATE_LAG_MAX_MS: u64 = 5;
/// Datagrams queued for one address (in flight and not yet read), like a socket's receive
/// buffer: more are dropped.
pub const INBOX_DATAGRAMS_MAX: usize = 16_384;
/// Parts per million: the scale of [`Link`]'s probabilities.
const PPM: u64 = 1_000_000;

/// The faults of one directed link, as data. `Link::default()` is a healthy link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// Nothing gets through (a partition; one-way when only one direction is blocked).
    pub blocked: bool,
    /// Probability, in parts per million, that a datagram is lost.
    pub loss_ppm: u32,
    /// One-way delay (at least [`LINK_LATENCY_MIN_MS`]).
    pub delay_ms: u64,
    /// Extra delay drawn uniformly in `0..=jitter_ms` per datagram.
    pub jitter_ms: u64,
    /// Probability, in parts per million, that a datagram arrives twice.
    pub duplicate_ppm: u32,
    /// Probability, in parts per million, that a datagram is held back (up to
    /// [`REORDER_HOLD_MAX_MS`]) so that later ones overtake it.
    pub reorder_ppm: u32,
}

/// Counters of what happened to datagrams.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimNetStats {
    /// Datagrams sent by bound sockets.
    pub sent: u64,
    /// Copies handed to a receiving socket.
    pub delivered: u64,
    /// Lost on their link, sent to an unbound address, over an inbox's bound, or sent by a
    /// replaced socket.
    pub dropped: u64,
    /// Extra copies put in flight.
    pub duplicated: u64,
    /// Datagrams held back so that later ones could overtake them.
    pub reordered: u64,
    /// Dropped because their link was blocked.
    pub blocked: u64,
}

/// What happened to a datagram when it was sent (a byte in the trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Delivered = 1,
    Lost = 2,
    Blocked = 3,
    Unbound = 4,
    Overflow = 5,
    /// Sent by a socket whose address was unbound or bound again since.
    Stale = 6,
}

/// A datagram on its way, queued at its destination address.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) from: SocketAddr,
    pub(crate) bytes: Vec<u8>,
}

/// The socket bound at an address now.
#[derive(Debug)]
struct Bound {
    generation: u64,
    /// The receiving task, woken when a datagram is queued for the address.
    waker: Option<Waker>,
}

#[derive(Debug)]
pub(crate) struct State {
    rng: ChaCha8Rng,
    /// Virtual time of the first bind: the trace's origin.
    start: Option<Instant>,
    bound: BTreeMap<SocketAddr, Bound>,
    /// Per destination, datagrams by (arrival time, send order).
    inboxes: BTreeMap<SocketAddr, BTreeMap<(Instant, u64), InFlight>>,
    links: BTreeMap<(SocketAddr, SocketAddr), Link>,
    all: Link,
    trace: blake3::Hasher,
    stats: SimNetStats,
    seq: u64,
    generations: u64,
}

/// An in-process UDP network for quinn on tokio's clock. See the module docs of
/// [`crate::sim`].
#[derive(Clone, Debug)]
pub struct SimNet {
    pub(crate) shared: Arc<Mutex<State>>,
}

impl SimNet {
    pub fn new(seed: u64) -> SimNet {
        SimNet {
            shared: Arc::new(Mutex::new(State {
                rng: ChaCha8Rng::seed_from_u64(seed),
                start: None,
                bound: BTreeMap::new(),
                inboxes: BTreeMap::new(),
                links: BTreeMap::new(),
                all: Link::default(),
                trace: blake3::Hasher::new(),
                stats: SimNetStats::default(),
                seq: 0,
                generations: 0,
            })),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A socket bound at `addr` (127.0.0.x:port). Binding an address again replaces the old
    /// socket (a restarted node); the old one then receives nothing, and what it sends is
    /// dropped.
    pub fn socket(&self, addr: SocketAddr) -> Arc<dyn AsyncUdpSocket> {
        let mut state = self.lock();
        state.start.get_or_insert_with(Instant::now);
        state.generations += 1;
        let generation = state.generations;
        if let Some(old) = state.bound.insert(
            addr,
            Bound {
                generation,
                waker: None,
            },
        ) {
            // The old socket's task learns it is stale and stops waiting for datagrams.
            if let Some(w) = old.waker {
                w.wake();
            }
        }
        Arc::new(SimSocket::new(self.clone(), addr, generation))
    }

    /// A crashed node: datagrams to `addr` vanish (those in flight too) until it is bound
    /// again, and its socket's sends are dropped.
    pub fn unbind(&self, addr: SocketAddr) {
        let mut state = self.lock();
        if let Some(old) = state.bound.remove(&addr) {
            if let Some(w) = old.waker {
                w.wake();
            }
        }
        if let Some(inbox) = state.inboxes.remove(&addr) {
            state.stats.dropped += inbox.len() as u64;
        }
    }

    /// Faults of the directed link `from → to`, from now on (datagrams in flight keep theirs).
    pub fn set_link(&self, from: SocketAddr, to: SocketAddr, link: Link) {
        self.lock().links.insert((from, to), link);
    }

    /// Every directed link to `link` (heal: `Link::default()`).
    pub fn set_all(&self, link: Link) {
        let mut state = self.lock();
        state.links.clear();
        state.all = link;
    }

    /// blake3 over every datagram's (virtual ms since the first bind, from, to, length, fate,
    /// delay): equal for equal runs.
    pub fn trace_digest(&self) -> [u8; 32] {
        *self.lock().trace.finalize().as_bytes()
    }

    pub fn stats(&self) -> SimNetStats {
        self.lock().stats.clone()
    }
}

/// Draws a value in `0..=max` from `random`.
fn upto(random: u64, max: u64) -> u64 {
    if max == 0 { 0 } else { random % (max + 1) }
}

/// Whether an event of probability `ppm` parts per million happens, from `random`.
fn happens(random: u64, ppm: u32) -> bool {
    random % PPM < u64::from(ppm)
}

impl State {
    /// Whether the socket of `generation` is the one bound at `addr`.
    pub(crate) fn is_current(&self, addr: SocketAddr, generation: u64) -> bool {
        self.bound
            .get(&addr)
            .is_some_and(|b| b.generation == generation)
    }

    /// Puts one datagram `from → to` on its way, drawing its fate. Every datagram draws the
    /// same number of values, so the stream stays aligned whatever the links say.
    pub(crate) fn send(&mut self, from: SocketAddr, generation: u64, to: SocketAddr, bytes: &[u8]) {
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        let draws: [u64; 5] = std::array::from_fn(|_| self.rng.next_u64());
        let [loss, jitter, duplicate, reorder, lag] = draws;
        let link = self.links.get(&(from, to)).unwrap_or(&self.all).clone();
        let mut delay = link.delay_ms.max(LINK_LATENCY_MIN_MS) + upto(jitter, link.jitter_ms);
        let mut copies = 1;
        let fate = if !self.is_current(from, generation) {
            Fate::Stale
        } else if link.blocked {
            self.stats.blocked += 1;
            Fate::Blocked
        } else if happens(loss, link.loss_ppm) {
            Fate::Lost
        } else if !self.bound.contains_key(&to) {
            Fate::Unbound
        } else if self.inboxes.get(&to).map_or(0, BTreeMap::len) >= INBOX_DATAGRAMS_MAX {
            Fate::Overflow
        } else {
            if happens(reorder, link.reorder_ppm) {
                self.stats.reordered += 1;
                delay += 1 + upto(lag, REORDER_HOLD_MAX_MS - 1);
            }
            if happens(duplicate, link.duplicate_ppm) {
                self.stats.duplicated += 1;
                copies = 2;
            }
            Fate::Delivered
        };
        if fate != Fate::Stale {
            self.stats.sent += 1;
        }
        if !matches!(fate, Fate::Delivered | Fate::Blocked) {
            self.stats.dropped += 1;
        }
        let since_ms = u64::try_from(now.duration_since(start).as_millis()).unwrap_or(u64::MAX);
        let mut record = Vec::with_capacity(64);
        record.extend_from_slice(&since_ms.to_le_bytes());
        record.extend_from_slice(from.to_string().as_bytes());
        record.push(b'>');
        record.extend_from_slice(to.to_string().as_bytes());
        record.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        record.push(fate as u8);
        record.extend_from_slice(&delay.to_le_bytes());
        record.push(copies);
        self.trace.update(&(record.len() as u64).to_le_bytes());
        self.trace.update(&record);
        if fate != Fate::Delivered {
            return;
        }
        let arrivals = [delay, delay + 1 + upto(lag >> 32, DUPLICATE_LAG_MAX_MS - 1)];
        for arrival in &arrivals[..usize::from(copies)] {
            self.seq += 1;
            let at = now + Duration::from_millis(*arrival);
            self.inboxes.entry(to).or_default().insert(
                (at, self.seq),
                InFlight {
                    from,
                    bytes: bytes.to_vec(),
                },
            );
        }
        if let Some(w) = self.bound.get_mut(&to).and_then(|b| b.waker.take()) {
            w.wake();
        }
    }

    /// Takes the datagrams for `addr` due by `now`, at most `max`, in arrival order.
    pub(crate) fn due(&mut self, addr: SocketAddr, now: Instant, max: usize) -> Vec<InFlight> {
        let mut out = Vec::new();
        let Some(inbox) = self.inboxes.get_mut(&addr) else {
            return out;
        };
        while out.len() < max {
            match inbox.first_entry() {
                Some(e) if e.key().0 <= now => out.push(e.remove()),
                _ => break,
            }
        }
        self.stats.delivered += out.len() as u64;
        out
    }

    /// When the next datagram for `addr` arrives.
    pub(crate) fn next_arrival(&self, addr: SocketAddr) -> Option<Instant> {
        self.inboxes
            .get(&addr)
            .and_then(|inbox| inbox.keys().next())
            .map(|(at, _)| *at)
    }

    /// Registers the task to wake when a datagram is queued for `addr` (the current socket).
    pub(crate) fn park(&mut self, addr: SocketAddr, waker: &Waker) {
        if let Some(b) = self.bound.get_mut(&addr) {
            match &b.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => b.waker = Some(waker.clone()),
            }
        }
    }
}
