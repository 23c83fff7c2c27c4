//! The fault model of one direction of one link: what happens to each datagram, without I/O
//! and without a clock.
//!
//! A [`Decider`] is told that a datagram arrived ([`Decider::on_datagram`], with `now`), and
//! is asked which datagrams are due ([`Decider::pop_due`], with `now`) and when the next one will
//! be ([`Decider::next_due`]). Everything a direction holds lives here: the delay queue, the
//! datagrams held back to be reordered, the token bucket of the bandwidth cap, the seeded RNG and
//! the counters. The tokio shell ([`super`]) only moves bytes between sockets and this model,
//! so every fault is tested here on exact, virtual time.
//!
//! # What happens to a datagram, in order
//!
//! 1. **Blackhole**: dropped (counted `blackholed`).
//! 2. **Drop**: dropped with probability `drop_per_mille`/1000 (`dropped`).
//! 3. **Bandwidth cap**: a token bucket of `rate_bytes_per_s` holding at most
//!    [`RATE_BURST_BYTES`]. A datagram the bucket cannot pay for waits, FIFO, until it can; the
//!    bytes waiting are the router's queue, at most [`RATE_QUEUE_BYTES_MAX`]: a datagram that
//!    would overflow it is dropped (`rate_dropped`), as a router tail-drops.
//! 4. **Delay and jitter**: it leaves `delay_ms` ± `jitter_ms` (uniform, never before it
//!    arrived) after the cap let it go (`delayed`). Jitter can reorder datagrams, as on a real
//!    path; without jitter the order is kept.
//! 5. **Corruption**: with probability `corrupt_per_mille`/1000 one byte at a uniform position is
//!    XORed with a non-zero value: exactly one byte differs (`corrupted`).
//! 6. **Duplication**: with probability `duplicate_per_mille`/1000 a second, identical copy
//!    leaves right after it (`duplicated`).
//! 7. **Reordering**: with probability `reorder_per_mille`/1000 the datagram is held back (at
//!    most [`REORDER_HELD_MAX`] at once) until the next datagram of this direction is scheduled,
//!    and then leaves right after it (`reordered`: overtaken for certain). If nothing follows
//!    within [`REORDER_HOLD_MS_MAX`] it leaves alone.
//!
//! The delay queue is bounded ([`DELAY_QUEUE_DATAGRAMS_MAX`], [`DELAY_QUEUE_BYTES_MAX`]); a
//! datagram that does not fit is dropped (`queue_dropped`).
//!
//! # Determinism
//!
//! Every datagram draws the same fixed number of words from the direction's RNG
//! ([`DRAWS_PER_DATAGRAM`]), whatever the faults and whatever the outcome, and maps them onto
//! ranges without rejection sampling. So the same seed and the same datagram sequence (sizes
//! and arrival times) give the same decisions, and the decision about datagram *n* does not
//! depend on which faults were active for the datagrams before it.
//!
//! A blackhole also drops what the direction holds at the moment it is applied (the delay
//! queue and the held datagrams): a cut cable loses what was in flight, and after
//! [`Decider::set_faults`] returns nothing more leaves in that direction.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Probabilities are in per mille: 1000 is always.
pub const PER_MILLE_MAX: u16 = 1000;
/// The largest fixed delay a direction may add.
pub const DELAY_MS_MAX: u32 = 60_000;
/// The largest jitter (± around the delay).
pub const JITTER_MS_MAX: u32 = 60_000;
/// The slowest bandwidth cap: with the queue bound it keeps the longest wait in the cap's queue
/// at [`RATE_QUEUE_BYTES_MAX`] / this ≈ 2 minutes.
pub const RATE_BYTES_PER_S_MIN: u64 = 1_000;
/// The fastest cap (anything faster is no cap on loopback).
pub const RATE_BYTES_PER_S_MAX: u64 = 10_000_000_000;
/// What a full token bucket lets through at once: about ten QUIC datagrams, the initial
/// window's burst.
pub const RATE_BURST_BYTES: u64 = 16 * 1024;
/// The bottleneck router's queue: bytes waiting for the cap beyond this are dropped.
pub const RATE_QUEUE_BYTES_MAX: u64 = 128 * 1024;
/// The largest UDP payload (IPv6 without jumbograms; IPv4's is smaller).
pub const DATAGRAM_BYTES_MAX: usize = 65_535;
/// Datagrams scheduled but not yet sent, per direction.
pub const DELAY_QUEUE_DATAGRAMS_MAX: usize = 8_192;
/// Bytes scheduled but not yet sent, per direction.
pub const DELAY_QUEUE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Datagrams held back for reordering at once, per direction.
pub const REORDER_HELD_MAX: usize = 4;
/// How long a held datagram waits for a successor before it leaves alone.
pub const REORDER_HOLD_MS_MAX: u64 = 20;
/// RNG words drawn per datagram, whatever happens to it (see the module docs).
pub const DRAWS_PER_DATAGRAM: usize = 6;

const _: () = assert!(RATE_QUEUE_BYTES_MAX >= DATAGRAM_BYTES_MAX as u64);
const _: () = assert!(DELAY_QUEUE_BYTES_MAX >= DATAGRAM_BYTES_MAX * 2);
const _: () = assert!(RATE_BURST_BYTES <= RATE_QUEUE_BYTES_MAX);
/// Micro-bytes per byte: the token bucket counts in µB so that `rate × µs` is exact.
const MICRO: i128 = 1_000_000;

/// The faults of one direction of a link. The default is a clean link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkFaults {
    pub drop_per_mille: u16,
    pub delay_ms: u32,
    /// Each datagram's delay is `delay_ms` ± up to this, uniformly (never below zero).
    pub jitter_ms: u32,
    pub duplicate_per_mille: u16,
    pub reorder_per_mille: u16,
    pub corrupt_per_mille: u16,
    /// A bandwidth cap in bytes of UDP payload per second.
    pub rate_bytes_per_s: Option<u64>,
    /// Drop everything, including what is in flight when it is applied.
    pub blackhole: bool,
}

/// A [`LinkFaults`] that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultsError {
    /// A probability above 1000 per mille.
    #[error("{field} is {value}‰, more than {PER_MILLE_MAX}‰")]
    PerMille { field: &'static str, value: u16 },
    /// A delay or jitter above its bound.
    #[error("{field} is {value} ms, more than {max} ms")]
    Millis {
        field: &'static str,
        value: u32,
        max: u32,
    },
    /// A bandwidth cap outside its bounds.
    #[error(
        "rate_bytes_per_s is {0}, outside {RATE_BYTES_PER_S_MIN}..={RATE_BYTES_PER_S_MAX} bytes/s"
    )]
    Rate(u64),
}

impl LinkFaults {
    /// A clean link: everything passes at once.
    pub fn clean() -> LinkFaults {
        LinkFaults::default()
    }

    /// Nothing passes.
    #[cfg(test)]
    pub fn blackhole() -> LinkFaults {
        LinkFaults {
            blackhole: true,
            ..LinkFaults::default()
        }
    }

    pub fn is_clean(&self) -> bool {
        *self == LinkFaults::default()
    }

    /// Checks every field against its bound.
    pub fn validate(&self) -> Result<(), FaultsError> {
        for (field, value) in [
            ("drop_per_mille", self.drop_per_mille),
            ("duplicate_per_mille", self.duplicate_per_mille),
            ("reorder_per_mille", self.reorder_per_mille),
            ("corrupt_per_mille", self.corrupt_per_mille),
        ] {
            if value > PER_MILLE_MAX {
                return Err(FaultsError::PerMille { field, value });
            }
        }
        for (field, value, max) in [
            ("delay_ms", self.delay_ms, DELAY_MS_MAX),
            ("jitter_ms", self.jitter_ms, JITTER_MS_MAX),
        ] {
            if value > max {
                return Err(FaultsError::Millis { field, value, max });
            }
        }
        if let Some(rate) = self.rate_bytes_per_s {
            if !(RATE_BYTES_PER_S_MIN..=RATE_BYTES_PER_S_MAX).contains(&rate) {
                return Err(FaultsError::Rate(rate));
            }
        }
        Ok(())
    }

    /// The stable kinds of fault this applies (`net.drop`, `net.partition`, …), for the
    /// scenario's fault log; a clean link is `net.heal`.
    pub fn kinds(&self) -> Vec<&'static str> {
        if self.is_clean() {
            return vec!["net.heal"];
        }
        let mut kinds = Vec::new();
        if self.blackhole {
            kinds.push("net.partition");
        }
        if self.drop_per_mille > 0 {
            kinds.push("net.drop");
        }
        if self.delay_ms > 0 || self.jitter_ms > 0 {
            kinds.push("net.delay");
        }
        if self.duplicate_per_mille > 0 {
            kinds.push("net.duplicate");
        }
        if self.reorder_per_mille > 0 {
            kinds.push("net.reorder");
        }
        if self.corrupt_per_mille > 0 {
            kinds.push("net.corrupt");
        }
        if self.rate_bytes_per_s.is_some() {
            kinds.push("net.rate");
        }
        kinds
    }
}

impl fmt::Display for LinkFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return f.write_str("clean");
        }
        let mut parts = Vec::new();
        if self.blackhole {
            parts.push("blackhole".to_owned());
        }
        if self.drop_per_mille > 0 {
            parts.push(format!("drop {}‰", self.drop_per_mille));
        }
        if self.delay_ms > 0 || self.jitter_ms > 0 {
            parts.push(format!("delay {}±{} ms", self.delay_ms, self.jitter_ms));
        }
        if self.duplicate_per_mille > 0 {
            parts.push(format!("duplicate {}‰", self.duplicate_per_mille));
        }
        if self.reorder_per_mille > 0 {
            parts.push(format!("reorder {}‰", self.reorder_per_mille));
        }
        if self.corrupt_per_mille > 0 {
            parts.push(format!("corrupt {}‰", self.corrupt_per_mille));
        }
        if let Some(rate) = self.rate_bytes_per_s {
            parts.push(format!("rate {rate} B/s"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// What one direction did, so a scenario can tell whether its fault fired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirStats {
    /// Datagrams from the node of this side (strays are not counted here).
    pub received: u64,
    pub received_bytes: u64,
    /// Datagrams sent on, duplicates included.
    pub forwarded: u64,
    pub forwarded_bytes: u64,
    /// Dropped by `drop_per_mille`.
    pub dropped: u64,
    /// Dropped by a blackhole, on arrival or in flight when it was applied.
    pub blackholed: u64,
    /// Dropped because the bandwidth cap's queue was full.
    pub rate_dropped: u64,
    /// Made to wait by the bandwidth cap.
    pub rate_queued: u64,
    /// Dropped because the delay queue was full.
    pub queue_dropped: u64,
    /// Given a non-zero delay by `delay_ms`/`jitter_ms`.
    pub delayed: u64,
    /// Extra copies scheduled.
    pub duplicated: u64,
    /// Held back and sent after a later datagram.
    pub reordered: u64,
    /// One byte changed.
    pub corrupted: u64,
    /// The socket refused a datagram (not counted as forwarded).
    pub send_errors: u64,
    /// Reading the side socket failed.
    pub recv_errors: u64,
}

/// What was decided about one datagram (for tests and replay comparisons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Blackholed,
    Dropped,
    RateDropped,
    QueueFull,
    Scheduled {
        /// When it is due (a held datagram: when it would have been, had it not been held).
        at: Duration,
        /// 1, or 2 when duplicated.
        copies: u8,
        /// The position of the changed byte and the XOR applied to it.
        corrupted: Option<(usize, u8)>,
        /// Held back, to be sent after the next datagram.
        held: bool,
    },
}

/// One direction's random draws for one datagram, taken whether used or not.
#[derive(Debug, Clone, Copy)]
struct Draws {
    drop: u16,
    duplicate: u16,
    reorder: u16,
    corrupt: u16,
    jitter: u64,
    corrupt_at: u64,
}

/// `x` mapped uniformly (up to a bias of n/2⁶⁴) onto `0..n`, without rejection so that the
/// number of words drawn never varies.
fn below(x: u64, n: u64) -> u64 {
    ((u128::from(x) * u128::from(n)) >> 64) as u64
}

#[derive(Debug)]
struct Scheduled {
    due: Duration,
    seq: u64,
    bytes: Vec<u8>,
}

// Ordered so that the max-heap's top is the earliest due, FIFO among equals.
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Scheduled {}

#[derive(Debug)]
struct Held {
    due: Duration,
    deadline: Duration,
    copies: u8,
    bytes: Vec<u8>,
}

/// The token bucket of a bandwidth cap, in micro-bytes; negative is the queue waiting.
#[derive(Debug, Clone, Copy)]
struct Shaper {
    rate_bytes_per_s: u64,
    tokens: i128,
    at: Duration,
}

impl Shaper {
    fn new(rate_bytes_per_s: u64, now: Duration) -> Shaper {
        Shaper {
            rate_bytes_per_s,
            tokens: i128::from(RATE_BURST_BYTES) * MICRO,
            at: now,
        }
    }

    /// How long a datagram of `len` bytes arriving at `now` waits, or `None` when the queue is
    /// full (then nothing is charged).
    fn admit(&mut self, now: Duration, len: usize) -> Option<Duration> {
        let rate = i128::from(self.rate_bytes_per_s);
        let elapsed_us = now.saturating_sub(self.at).as_micros() as i128;
        self.tokens = (self.tokens + rate * elapsed_us).min(i128::from(RATE_BURST_BYTES) * MICRO);
        self.at = self.at.max(now);
        let after = self.tokens - len as i128 * MICRO;
        if after >= 0 {
            self.tokens = after;
            return Some(Duration::ZERO);
        }
        if -after > i128::from(RATE_QUEUE_BYTES_MAX) * MICRO {
            return None;
        }
        self.tokens = after;
        // Until the debt is paid back: ceil(debt µB / rate B/s) µs.
        let wait_us = (-after + rate - 1) / rate;
        Some(Duration::from_micros(wait_us as u64))
    }
}

/// The fault model of one direction. See the module docs.
#[derive(Debug)]
pub struct Decider {
    faults: LinkFaults,
    rng: ChaCha8Rng,
    shaper: Option<Shaper>,
    queue: BinaryHeap<Scheduled>,
    queued_bytes: usize,
    held: VecDeque<Held>,
    seq: u64,
    stats: DirStats,
}

impl Decider {
    /// A clean direction whose random decisions come from `seed`.
    pub fn new(seed: [u8; 32]) -> Decider {
        Decider {
            faults: LinkFaults::default(),
            rng: ChaCha8Rng::from_seed(seed),
            shaper: None,
            queue: BinaryHeap::new(),
            queued_bytes: 0,
            held: VecDeque::new(),
            seq: 0,
            stats: DirStats::default(),
        }
    }

    pub fn faults(&self) -> LinkFaults {
        self.faults
    }

    pub fn stats(&self) -> DirStats {
        self.stats
    }

    /// Datagrams scheduled or held, not yet sent.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
            + self
                .held
                .iter()
                .map(|h| usize::from(h.copies))
                .sum::<usize>()
    }

    /// Applies `faults` from `now` on. The caller validated them ([`LinkFaults::validate`]).
    /// A blackhole drops what is in flight; a new or changed cap starts with a full bucket.
    pub fn set_faults(&mut self, now: Duration, faults: LinkFaults) {
        debug_assert!(faults.validate().is_ok(), "unvalidated faults {faults:?}");
        if faults.blackhole {
            let lost = self.in_flight() as u64;
            self.stats.blackholed += lost;
            self.queue.clear();
            self.held.clear();
            self.queued_bytes = 0;
        }
        if faults.rate_bytes_per_s != self.faults.rate_bytes_per_s {
            self.shaper = faults.rate_bytes_per_s.map(|r| Shaper::new(r, now));
        }
        self.faults = faults;
    }

    fn draw(&mut self) -> Draws {
        let mut w = [0u64; DRAWS_PER_DATAGRAM];
        for x in &mut w {
            *x = self.rng.next_u64();
        }
        let pm = |x: u64| below(x, u64::from(PER_MILLE_MAX)) as u16;
        Draws {
            drop: pm(w[0]),
            duplicate: pm(w[1]),
            reorder: pm(w[2]),
            corrupt: pm(w[3]),
            jitter: w[4],
            corrupt_at: w[5],
        }
    }

    /// The delay of one datagram: `delay_ms` ± `jitter_ms`, in microseconds, never negative.
    fn delay_of(&self, jitter_draw: u64) -> Duration {
        let delay_us = u64::from(self.faults.delay_ms) * 1000;
        let jitter_us = u64::from(self.faults.jitter_ms) * 1000;
        let offset = below(jitter_draw, 2 * jitter_us + 1);
        Duration::from_micros((delay_us + offset).saturating_sub(jitter_us))
    }

    /// Schedules `copies` copies of `bytes` at `due`, or refuses them all when the queue
    /// cannot take them.
    fn enqueue(&mut self, due: Duration, bytes: Vec<u8>, copies: u8) -> bool {
        let n = usize::from(copies);
        if self.queue.len() + n > DELAY_QUEUE_DATAGRAMS_MAX
            || self.queued_bytes + n * bytes.len() > DELAY_QUEUE_BYTES_MAX
        {
            self.stats.queue_dropped += u64::from(copies);
            return false;
        }
        self.queued_bytes += n * bytes.len();
        // The duplicate (if any) is a copy; the original goes last, so both share `due`.
        for _ in 1..n {
            self.seq += 1;
            self.queue.push(Scheduled {
                due,
                seq: self.seq,
                bytes: bytes.clone(),
            });
        }
        self.seq += 1;
        self.queue.push(Scheduled {
            due,
            seq: self.seq,
            bytes,
        });
        true
    }

    /// A datagram from this side's node arrived at `now`.
    pub fn on_datagram(&mut self, now: Duration, mut bytes: Vec<u8>) -> Fate {
        let len = bytes.len();
        self.stats.received += 1;
        self.stats.received_bytes += len as u64;
        let d = self.draw();
        let f = self.faults;
        if f.blackhole {
            self.stats.blackholed += 1;
            return Fate::Blackholed;
        }
        if d.drop < f.drop_per_mille {
            self.stats.dropped += 1;
            return Fate::Dropped;
        }
        let mut at = now;
        if let Some(shaper) = &mut self.shaper {
            match shaper.admit(now, len) {
                None => {
                    self.stats.rate_dropped += 1;
                    return Fate::RateDropped;
                }
                Some(wait) => {
                    if !wait.is_zero() {
                        self.stats.rate_queued += 1;
                    }
                    at += wait;
                }
            }
        }
        let delay = self.delay_of(d.jitter);
        if !delay.is_zero() {
            self.stats.delayed += 1;
            at += delay;
        }
        let corrupted = if d.corrupt < f.corrupt_per_mille && len > 0 {
            let pos = below(d.corrupt_at, len as u64) as usize;
            // 1..=255: never 0, so the byte always changes.
            let xor = (below(d.corrupt_at.rotate_left(32), 255) + 1) as u8;
            bytes[pos] ^= xor;
            self.stats.corrupted += 1;
            Some((pos, xor))
        } else {
            None
        };
        let copies = if d.duplicate < f.duplicate_per_mille {
            2
        } else {
            1
        };
        if d.reorder < f.reorder_per_mille && self.held.len() < REORDER_HELD_MAX {
            if copies == 2 {
                self.stats.duplicated += 1;
            }
            let deadline = now + Duration::from_millis(REORDER_HOLD_MS_MAX);
            self.held.push_back(Held {
                due: at,
                deadline,
                copies,
                bytes,
            });
            return Fate::Scheduled {
                at,
                copies,
                corrupted,
                held: true,
            };
        }
        if !self.enqueue(at, bytes, copies) {
            return Fate::QueueFull;
        }
        if copies == 2 {
            self.stats.duplicated += 1;
        }
        // What was held back leaves right behind this one: overtaken for certain.
        while let Some(h) = self.held.pop_front() {
            if self.enqueue(h.due.max(at), h.bytes, h.copies) {
                self.stats.reordered += 1;
            }
        }
        Fate::Scheduled {
            at,
            copies,
            corrupted,
            held: false,
        }
    }

    /// Held datagrams whose successor did not come in time leave alone.
    fn release_expired(&mut self, now: Duration) {
        while self.held.front().is_some_and(|h| h.deadline <= now) {
            if let Some(h) = self.held.pop_front() {
                self.enqueue(h.due.max(h.deadline), h.bytes, h.copies);
            }
        }
    }

    /// The next datagram due at or before `now`, if any, in due order.
    pub fn pop_due(&mut self, now: Duration) -> Option<Vec<u8>> {
        self.release_expired(now);
        if self.queue.peek().is_some_and(|s| s.due <= now) {
            let s = self.queue.pop()?;
            self.queued_bytes -= s.bytes.len();
            return Some(s.bytes);
        }
        None
    }

    /// When [`Decider::pop_due`] will next have something (or a held datagram times out).
    pub fn next_due(&self) -> Option<Duration> {
        let queued = self.queue.peek().map(|s| s.due);
        let held = self.held.front().map(|h| h.deadline);
        match (queued, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The shell sent a datagram of `len` bytes.
    pub fn sent(&mut self, len: usize) {
        self.stats.forwarded += 1;
        self.stats.forwarded_bytes += len as u64;
    }

    /// The shell could not send a datagram (other than the socket being full).
    pub fn send_failed(&mut self) {
        self.stats.send_errors += 1;
    }

    /// Reading the side socket failed.
    pub fn recv_failed(&mut self) {
        self.stats.recv_errors += 1;
    }

    /// The socket was full: `bytes`, just popped, goes back to the head of the queue (a later
    /// blackhole still drops it).
    pub fn requeue_front(&mut self, bytes: Vec<u8>) {
        self.queued_bytes += bytes.len();
        self.queue.push(Scheduled {
            due: Duration::ZERO,
            seq: 0,
            bytes,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn seed(n: u8) -> [u8; 32] {
        [n; 32]
    }

    fn with(faults: LinkFaults) -> Decider {
        let mut d = Decider::new(seed(1));
        faults.validate().unwrap();
        d.set_faults(Duration::ZERO, faults);
        d
    }

    fn payload(i: u32, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len.max(4)];
        v[..4].copy_from_slice(&i.to_be_bytes());
        v.truncate(len.max(4));
        v
    }

    /// Everything due by `now`, in order.
    fn drain(d: &mut Decider, now: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for _ in 0..100_000 {
            match d.pop_due(now) {
                Some(b) => {
                    d.sent(b.len());
                    out.push(b);
                }
                None => return out,
            }
        }
        panic!("pop_due never ran dry");
    }

    #[test]
    fn a_clean_direction_forwards_at_once_in_order_byte_identical() {
        let mut d = Decider::new(seed(1));
        for i in 0..100 {
            let fate = d.on_datagram(MS * i, payload(i, 1200));
            assert!(
                matches!(fate, Fate::Scheduled { at, copies: 1, corrupted: None, held: false } if at == MS * i)
            );
        }
        let out = drain(&mut d, MS * 100);
        assert_eq!(out, (0..100).map(|i| payload(i, 1200)).collect::<Vec<_>>());
        let s = d.stats();
        assert_eq!((s.received, s.forwarded, s.dropped), (100, 100, 0));
        assert_eq!(s.forwarded_bytes, 100 * 1200);
    }

    #[test]
    fn drop_1000_per_mille_drops_everything_and_0_nothing() {
        let mut d = with(LinkFaults {
            drop_per_mille: 1000,
            ..LinkFaults::default()
        });
        for i in 0..500 {
            assert_eq!(d.on_datagram(MS * i, payload(i, 100)), Fate::Dropped);
        }
        assert!(drain(&mut d, MS * 1000).is_empty());
        assert_eq!(d.stats().dropped, 500);
        assert_eq!(d.next_due(), None);
    }

    #[test]
    fn drop_probability_is_roughly_what_was_asked() {
        let mut d = with(LinkFaults {
            drop_per_mille: 200,
            ..LinkFaults::default()
        });
        for i in 0..10_000 {
            d.on_datagram(MS * i, payload(i, 10));
        }
        let dropped = d.stats().dropped;
        // 2000 expected; ±500 is > 12 standard deviations.
        assert!((1500..=2500).contains(&dropped), "{dropped}");
    }

    #[test]
    fn blackhole_drops_arrivals_and_what_is_in_flight() {
        let mut d = with(LinkFaults {
            delay_ms: 100,
            ..LinkFaults::default()
        });
        for i in 0..10 {
            d.on_datagram(MS * i, payload(i, 100));
        }
        assert_eq!(d.in_flight(), 10);
        d.set_faults(MS * 20, LinkFaults::blackhole());
        assert_eq!(d.on_datagram(MS * 21, payload(99, 100)), Fate::Blackholed);
        assert!(drain(&mut d, MS * 10_000).is_empty());
        assert_eq!(d.stats().blackholed, 11);
        assert_eq!(d.stats().forwarded, 0);
        d.set_faults(MS * 30, LinkFaults::clean());
        d.on_datagram(MS * 31, payload(100, 100));
        assert_eq!(drain(&mut d, MS * 31), vec![payload(100, 100)]);
    }

    #[test]
    fn delay_and_jitter_stay_within_bounds_and_cover_them() {
        let mut d = with(LinkFaults {
            delay_ms: 50,
            jitter_ms: 10,
            ..LinkFaults::default()
        });
        let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
        for i in 0..2_000 {
            let now = MS * i;
            match d.on_datagram(now, payload(i, 100)) {
                Fate::Scheduled { at, .. } => {
                    let delay = at - now;
                    assert!(delay >= MS * 40 && delay <= MS * 60, "{delay:?}");
                    lo = lo.min(delay);
                    hi = hi.max(delay);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(lo < MS * 41 && hi > MS * 59, "{lo:?}..{hi:?}");
        assert_eq!(d.stats().delayed, 2_000);
        // Nothing is due before its time.
        assert!(drain(&mut d, MS * 39).is_empty());
    }

    #[test]
    fn jitter_never_makes_a_delay_negative() {
        let mut d = with(LinkFaults {
            delay_ms: 2,
            jitter_ms: 10,
            ..LinkFaults::default()
        });
        for i in 0..1_000 {
            let now = MS * (10 * i);
            if let Fate::Scheduled { at, .. } = d.on_datagram(now, payload(i, 10)) {
                assert!(at >= now && at <= now + MS * 12);
            }
        }
    }

    #[test]
    fn a_delay_without_jitter_keeps_the_order() {
        let mut d = with(LinkFaults {
            delay_ms: 30,
            ..LinkFaults::default()
        });
        for i in 0..100 {
            d.on_datagram(MS * i, payload(i, 100));
        }
        assert!(drain(&mut d, MS * 29).is_empty());
        let out = drain(&mut d, MS * 200);
        assert_eq!(out, (0..100).map(|i| payload(i, 100)).collect::<Vec<_>>());
    }

    #[test]
    fn duplication_sends_two_identical_copies_one_after_the_other() {
        let mut d = with(LinkFaults {
            duplicate_per_mille: 1000,
            ..LinkFaults::default()
        });
        for i in 0..50 {
            d.on_datagram(MS * i, payload(i, 300));
        }
        let out = drain(&mut d, MS * 50);
        let expected: Vec<_> = (0..50)
            .flat_map(|i| [payload(i, 300), payload(i, 300)])
            .collect();
        assert_eq!(out, expected);
        let s = d.stats();
        assert_eq!((s.duplicated, s.forwarded), (50, 100));
    }

    #[test]
    fn corruption_changes_exactly_one_byte() {
        let mut d = with(LinkFaults {
            corrupt_per_mille: 1000,
            ..LinkFaults::default()
        });
        for i in 0..500u32 {
            let original: Vec<u8> = (0..(1 + i as usize % 1500))
                .map(|k| (k * 7 + i as usize) as u8)
                .collect();
            let fate = d.on_datagram(MS * i, original.clone());
            let Fate::Scheduled {
                corrupted: Some((pos, xor)),
                ..
            } = fate
            else {
                panic!("{fate:?}");
            };
            let out = drain(&mut d, MS * i);
            assert_eq!(out.len(), 1);
            let differing: Vec<usize> = (0..original.len())
                .filter(|&k| out[0][k] != original[k])
                .collect();
            assert_eq!(differing, vec![pos]);
            assert_eq!(out[0][pos] ^ original[pos], xor);
        }
        assert_eq!(d.stats().corrupted, 500);
    }

    #[test]
    fn an_empty_datagram_is_never_counted_corrupted() {
        let mut d = with(LinkFaults {
            corrupt_per_mille: 1000,
            ..LinkFaults::default()
        });
        d.on_datagram(Duration::ZERO, Vec::new());
        assert_eq!(drain(&mut d, Duration::ZERO), vec![Vec::<u8>::new()]);
        assert_eq!(d.stats().corrupted, 0);
    }

    #[test]
    fn a_reordered_datagram_leaves_right_after_its_successor() {
        let mut d = with(LinkFaults {
            reorder_per_mille: 1000,
            ..LinkFaults::default()
        });
        // Held: 0. Then 1 comes, but is held too (the hold has room), … up to the bound.
        for i in 0..REORDER_HELD_MAX as u32 {
            assert!(matches!(
                d.on_datagram(Duration::ZERO, payload(i, 10)),
                Fate::Scheduled { held: true, .. }
            ));
        }
        assert!(drain(&mut d, Duration::ZERO).is_empty());
        // The hold is full: the next one passes and releases the held ones behind it.
        let next = REORDER_HELD_MAX as u32;
        assert!(matches!(
            d.on_datagram(Duration::ZERO, payload(next, 10)),
            Fate::Scheduled { held: false, .. }
        ));
        let out = drain(&mut d, Duration::ZERO);
        let mut expected = vec![payload(next, 10)];
        expected.extend((0..next).map(|i| payload(i, 10)));
        assert_eq!(out, expected);
        assert_eq!(d.stats().reordered, u64::from(next));
    }

    #[test]
    fn a_held_datagram_without_successor_leaves_after_the_hold_bound() {
        let mut d = with(LinkFaults {
            reorder_per_mille: 1000,
            ..LinkFaults::default()
        });
        d.on_datagram(Duration::ZERO, payload(7, 10));
        let hold = Duration::from_millis(REORDER_HOLD_MS_MAX);
        assert_eq!(d.next_due(), Some(hold));
        assert!(drain(&mut d, hold - MS).is_empty());
        assert_eq!(drain(&mut d, hold), vec![payload(7, 10)]);
        assert_eq!(d.stats().reordered, 0, "alone is not reordered");
    }

    #[test]
    fn reordering_at_a_rate_produces_inversions() {
        let mut d = with(LinkFaults {
            reorder_per_mille: 100,
            ..LinkFaults::default()
        });
        let mut out = Vec::new();
        for i in 0..1_000u32 {
            d.on_datagram(MS * i, payload(i, 10));
            out.extend(drain(&mut d, MS * i));
        }
        out.extend(drain(&mut d, MS * 2_000));
        assert_eq!(out.len(), 1_000);
        let seqs: Vec<u32> = out
            .iter()
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // Overtaken: a later datagram left before it.
        let mut highest = 0;
        let mut overtaken = 0u64;
        for &s in &seqs {
            if s < highest {
                overtaken += 1;
            }
            highest = highest.max(s);
        }
        let reordered = d.stats().reordered;
        assert!(reordered > 50, "{reordered}");
        assert_eq!(overtaken, reordered);
    }

    #[test]
    fn the_rate_cap_passes_a_burst_then_paces_at_the_rate() {
        let rate = 100_000; // 100 kB/s: a 1000-byte datagram every 10 ms
        let mut d = with(LinkFaults {
            rate_bytes_per_s: Some(rate),
            ..LinkFaults::default()
        });
        // 100 datagrams of 1000 bytes at once: 16 pass on the burst, 100 KiB wait in the queue,
        // the rest do not fit.
        let mut fates = Vec::new();
        for i in 0..200 {
            fates.push(d.on_datagram(Duration::ZERO, payload(i, 1000)));
        }
        let passed_at_once = fates
            .iter()
            .filter(|f| matches!(f, Fate::Scheduled { at, .. } if at.is_zero()))
            .count() as u64;
        assert_eq!(passed_at_once, RATE_BURST_BYTES / 1000);
        let s = d.stats();
        let queued = RATE_QUEUE_BYTES_MAX / 1000;
        assert_eq!(s.rate_queued, queued);
        assert_eq!(s.rate_dropped, 200 - passed_at_once - queued);
        // The last queued one leaves when the queue's bytes have gone at the rate.
        let last = fates
            .iter()
            .filter_map(|f| match f {
                Fate::Scheduled { at, .. } => Some(*at),
                _ => None,
            })
            .max()
            .unwrap();
        let expected = Duration::from_micros(
            (queued * 1000 + passed_at_once * 1000 - RATE_BURST_BYTES) * 1_000_000 / rate,
        );
        assert!(last.abs_diff(expected) <= MS, "{last:?} vs {expected:?}");
        // Over one second of virtual time at most burst + rate × 1 s bytes leave.
        let sent: usize = drain(&mut d, Duration::from_secs(1))
            .iter()
            .map(Vec::len)
            .sum();
        assert!(sent as u64 <= RATE_BURST_BYTES + rate, "{sent}");
    }

    #[test]
    fn the_rate_cap_refills_at_the_rate() {
        let rate = 50_000;
        let mut d = with(LinkFaults {
            rate_bytes_per_s: Some(rate),
            ..LinkFaults::default()
        });
        // One 500-byte datagram every 5 ms is 100 kB/s offered, twice the cap: over 10 s of
        // virtual time what leaves is the cap, within the burst.
        let mut sent = 0u64;
        for i in 0..2_000u32 {
            let now = MS * (5 * i);
            d.on_datagram(now, payload(i, 500));
            sent += drain(&mut d, now)
                .iter()
                .map(|b| b.len() as u64)
                .sum::<u64>();
        }
        let ten_s = 10 * rate;
        assert!(sent <= ten_s + RATE_BURST_BYTES, "{sent}");
        assert!(sent >= ten_s - 2 * 500, "{sent}");
        assert!(d.stats().rate_dropped > 0);
    }

    #[test]
    fn an_idle_cap_saves_up_at_most_one_burst() {
        let mut d = with(LinkFaults {
            rate_bytes_per_s: Some(10_000),
            ..LinkFaults::default()
        });
        // A minute idle would be 600 kB at the rate; the bucket holds one burst.
        let t = Duration::from_secs(60);
        let at_once = (0..100)
            .filter(|&i| {
                matches!(d.on_datagram(t, payload(i, 1000)), Fate::Scheduled { at, .. } if at == t)
            })
            .count() as u64;
        assert_eq!(at_once, RATE_BURST_BYTES / 1000);
    }

    #[test]
    fn the_delay_queue_is_bounded() {
        let mut d = with(LinkFaults {
            delay_ms: 1000,
            ..LinkFaults::default()
        });
        for i in 0..(DELAY_QUEUE_DATAGRAMS_MAX + 10) as u32 {
            d.on_datagram(Duration::ZERO, payload(i, 8));
        }
        assert_eq!(d.in_flight(), DELAY_QUEUE_DATAGRAMS_MAX);
        assert_eq!(d.stats().queue_dropped, 10);
        // By bytes, too.
        let mut d = with(LinkFaults {
            delay_ms: 1000,
            ..LinkFaults::default()
        });
        let big = DATAGRAM_BYTES_MAX;
        let fit = DELAY_QUEUE_BYTES_MAX / big;
        for i in 0..(fit + 3) as u32 {
            d.on_datagram(Duration::ZERO, payload(i, big));
        }
        assert_eq!(d.in_flight(), fit);
        assert_eq!(d.stats().queue_dropped, 3);
    }

    /// The fates of a fixed datagram sequence under every fault at once.
    fn schedule(seed_byte: u8) -> Vec<Fate> {
        let mut d = Decider::new(seed(seed_byte));
        d.set_faults(
            Duration::ZERO,
            LinkFaults {
                drop_per_mille: 100,
                delay_ms: 20,
                jitter_ms: 15,
                duplicate_per_mille: 100,
                reorder_per_mille: 100,
                corrupt_per_mille: 100,
                rate_bytes_per_s: Some(2_000_000),
                blackhole: false,
            },
        );
        (0..2_000u32)
            .map(|i| {
                let now = Duration::from_micros(u64::from(i) * 300);
                let fate = d.on_datagram(now, payload(i, 200 + (i as usize * 37) % 1200));
                let _ = drain(&mut d, now);
                fate
            })
            .collect()
    }

    #[test]
    fn seed_replay_gives_the_same_fault_schedule_and_another_seed_another() {
        let a = schedule(7);
        assert_eq!(a, schedule(7));
        assert_ne!(a, schedule(8));
        // Every fault fired in it, so the comparison is about something.
        assert!(a.contains(&Fate::Dropped));
        assert!(
            a.iter()
                .any(|f| matches!(f, Fate::Scheduled { copies: 2, .. }))
        );
        assert!(
            a.iter()
                .any(|f| matches!(f, Fate::Scheduled { held: true, .. }))
        );
        assert!(a.iter().any(|f| matches!(
            f,
            Fate::Scheduled {
                corrupted: Some(_),
                ..
            }
        )));
    }

    #[test]
    fn decisions_about_a_datagram_do_not_depend_on_earlier_faults() {
        // Two directions with one seed: one was blackholed for the first 100 datagrams. From
        // then on both decide alike, because every datagram draws the same words.
        let faults = LinkFaults {
            drop_per_mille: 300,
            ..LinkFaults::default()
        };
        let mut a = with(faults);
        let mut b = Decider::new(seed(1));
        b.set_faults(Duration::ZERO, LinkFaults::blackhole());
        for i in 0..100 {
            a.on_datagram(Duration::ZERO, payload(i, 10));
            b.on_datagram(Duration::ZERO, payload(i, 10));
        }
        b.set_faults(Duration::ZERO, faults);
        for i in 100..1_000 {
            assert_eq!(
                a.on_datagram(Duration::ZERO, payload(i, 10)) == Fate::Dropped,
                b.on_datagram(Duration::ZERO, payload(i, 10)) == Fate::Dropped
            );
        }
    }

    #[test]
    fn faults_are_validated_at_their_bounds() {
        let ok = |f: LinkFaults| f.validate().is_ok();
        let pm = |v| LinkFaults {
            corrupt_per_mille: v,
            ..LinkFaults::default()
        };
        assert!(ok(pm(PER_MILLE_MAX)));
        assert!(!ok(pm(PER_MILLE_MAX + 1)));
        let delay = |v| LinkFaults {
            delay_ms: v,
            ..LinkFaults::default()
        };
        assert!(ok(delay(DELAY_MS_MAX)));
        assert!(!ok(delay(DELAY_MS_MAX + 1)));
        let jitter = |v| LinkFaults {
            jitter_ms: v,
            ..LinkFaults::default()
        };
        assert!(ok(jitter(JITTER_MS_MAX)));
        assert!(!ok(jitter(JITTER_MS_MAX + 1)));
        let rate = |v| LinkFaults {
            rate_bytes_per_s: Some(v),
            ..LinkFaults::default()
        };
        assert!(ok(rate(RATE_BYTES_PER_S_MIN)));
        assert!(!ok(rate(RATE_BYTES_PER_S_MIN - 1)));
        assert!(ok(rate(RATE_BYTES_PER_S_MAX)));
        assert!(!ok(rate(RATE_BYTES_PER_S_MAX + 1)));
    }

    #[test]
    fn faults_name_their_kinds_and_print_readably() {
        assert_eq!(LinkFaults::clean().kinds(), vec!["net.heal"]);
        assert_eq!(LinkFaults::blackhole().kinds(), vec!["net.partition"]);
        let f = LinkFaults {
            drop_per_mille: 200,
            delay_ms: 50,
            jitter_ms: 5,
            rate_bytes_per_s: Some(1_000_000),
            ..LinkFaults::default()
        };
        assert_eq!(f.kinds(), vec!["net.drop", "net.delay", "net.rate"]);
        assert_eq!(f.to_string(), "drop 200‰, delay 50±5 ms, rate 1000000 B/s");
        assert_eq!(LinkFaults::clean().to_string(), "clean");
    }
}
