//! The address filter of the node's UDP socket: who the node hears and whom it answers
//! (INV-27, and the first line of admission of [`crate::node`]).
//!
//! [`AddrFilter`] wraps the [`AsyncUdpSocket`] the node was given (or bound) and sits between
//! it and quinn:
//!
//! - **Inbound**: a datagram whose source is not the address of a configured peer is dropped
//!   before quinn sees it — no handshake state, no answer, not even a version negotiation or a
//!   stateless reset — and counted in [`NetStats::datagrams_dropped_unknown`]. Unless
//!   `accept_unknown_addresses` is set: then every datagram goes to quinn, and admission
//!   ([`crate::node`]) validates the address with a QUIC Retry and gives strangers a handshake
//!   budget of their own.
//! - **Outbound** (the guard): a datagram to an address that is neither a configured peer's nor
//!   one the node chose to answer (a stranger whose handshake it admitted) is dropped,
//!   counted in [`NetStats::datagrams_blocked_send`] and logged (rate-limited). With
//!   `accept_unknown_addresses` off the guard never fires: quinn only ever hears configured
//!   addresses. It is the backstop should anything else try.
//!
//! Addresses are compared canonically: an IPv4-mapped IPv6 address (`[::ffff:192.0.2.1]:7401`,
//! what a dual-stack socket reports for an IPv4 peer) equals its IPv4 form; the IPv6 flow label
//! and scope id are ignored.
//!
//! How a batch is filtered: quinn's endpoint passes `bufs` and `meta` and then reads datagram
//! `i` from `bufs[i]` as described by `meta[i]`, for `i` below the count returned (quinn 0.11
//! `endpoint.rs`, `RecvState::poll_socket`). Dropping entries is done by moving the kept ones
//! to the front — swapping the `IoSliceMut`s (which point into quinn's receive buffer) together
//! with their `RecvMeta` — and returning how many were kept. A batch with nothing kept is not
//! returned: the next one is read, at most [`DROPPED_BATCHES_PER_POLL_MAX`] per poll, after
//! which the task yields (woken again at once), so a flood of strangers cannot hold the
//! endpoint's task.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use crate::limits::{
    ANSWERED_ADDRESSES_MAX, DROPPED_BATCHES_PER_POLL_MAX, RETRY_TOKEN_LIFETIME_MS,
};
use crate::logcap::LogLimiter;
use crate::transfer::{NetStats, bump};
use crate::warn_limited;

/// `addr` in the one form addresses are compared in.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => addr,
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => SocketAddr::new(IpAddr::V6(*v6.ip()), v6.port()),
        },
    }
}

/// An address the node answers although no peer is configured there.
#[derive(Debug, Clone, Copy)]
struct Answered {
    /// Connections of authenticated peers at this address (answered as long as they live).
    held: u32,
    /// Until when a handshake from it may be answered.
    until: Instant,
}

/// The node's socket, filtered. See the module docs.
#[derive(Debug)]
pub struct AddrFilter {
    inner: Arc<dyn AsyncUdpSocket>,
    /// Replaced when `known_peers` is reloaded.
    configured: std::sync::RwLock<BTreeSet<SocketAddr>>,
    accept_unknown: bool,
    answered: Mutex<BTreeMap<SocketAddr, Answered>>,
    stats: Arc<NetStats>,
    limiter: Arc<LogLimiter>,
}

impl AddrFilter {
    pub(crate) fn new(
        inner: Arc<dyn AsyncUdpSocket>,
        configured: impl IntoIterator<Item = SocketAddr>,
        accept_unknown: bool,
        stats: Arc<NetStats>,
        limiter: Arc<LogLimiter>,
    ) -> AddrFilter {
        AddrFilter {
            inner,
            configured: std::sync::RwLock::new(configured.into_iter().map(canonical).collect()),
            accept_unknown,
            answered: Mutex::new(BTreeMap::new()),
            stats,
            limiter,
        }
    }

    /// Whether `addr` (canonical) is a configured peer's address.
    pub fn is_configured(&self, addr: SocketAddr) -> bool {
        self.configured_has(canonical(addr))
    }

    fn configured_has(&self, addr: SocketAddr) -> bool {
        self.configured
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&addr)
    }

    /// Puts the configured peers' addresses of a reloaded `known_peers` in force.
    pub(crate) fn set_configured(&self, configured: impl IntoIterator<Item = SocketAddr>) {
        *self.configured.write().unwrap_or_else(|e| e.into_inner()) =
            configured.into_iter().map(canonical).collect();
    }

    /// Lets the node answer a stranger's handshake from `addr` until `until`. False when the
    /// table of answered addresses is full (the handshake is then not answered).
    pub(crate) fn answer(&self, addr: SocketAddr, until: Instant) -> bool {
        let addr = canonical(addr);
        if self.configured_has(addr) {
            return true;
        }
        let now = Instant::now();
        let mut answered = self.answered.lock().unwrap_or_else(|e| e.into_inner());
        if !answered.contains_key(&addr) && answered.len() >= ANSWERED_ADDRESSES_MAX {
            answered.retain(|_, a| a.held > 0 || a.until > now);
            if answered.len() >= ANSWERED_ADDRESSES_MAX {
                return false;
            }
        }
        let entry = answered.entry(addr).or_insert(Answered { held: 0, until });
        entry.until = entry.until.max(until);
        true
    }

    /// Keeps answering `addr` while an authenticated connection from it lives; undo with
    /// [`AddrFilter::release`].
    pub(crate) fn hold(&self, addr: SocketAddr) {
        let addr = canonical(addr);
        if self.configured_has(addr) {
            return;
        }
        let mut answered = self.answered.lock().unwrap_or_else(|e| e.into_inner());
        // A connection only exists after its handshake was answered, so the entry is there
        // unless the table was pruned meanwhile; then it is made again.
        let entry = answered.entry(addr).or_insert(Answered {
            held: 0,
            until: Instant::now(),
        });
        entry.held += 1;
    }

    pub(crate) fn release(&self, addr: SocketAddr) {
        let addr = canonical(addr);
        let mut answered = self.answered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = answered.get_mut(&addr) {
            entry.held = entry.held.saturating_sub(1);
            if entry.held == 0 && entry.until <= Instant::now() {
                answered.remove(&addr);
            }
        }
    }

    fn may_send_to(&self, addr: SocketAddr) -> bool {
        let addr = canonical(addr);
        // Mutation point (INV-27, with `may_hear`): datagrams go to any address.
        if self.configured_has(addr) || store::mutants::active("send_to_strangers") {
            return true;
        }
        if !self.accept_unknown {
            return false;
        }
        let answered = self.answered.lock().unwrap_or_else(|e| e.into_inner());
        answered
            .get(&addr)
            .is_some_and(|a| a.held > 0 || a.until > Instant::now())
    }

    fn may_hear(&self, addr: SocketAddr) -> bool {
        self.accept_unknown
            || self.configured_has(canonical(addr))
            || store::mutants::active("send_to_strangers")
    }
}

/// Datagrams one `RecvMeta` describes (more than one with GRO).
fn datagrams(meta: &RecvMeta) -> u64 {
    if meta.stride == 0 {
        1
    } else {
        meta.len.div_ceil(meta.stride).max(1) as u64
    }
}

impl AsyncUdpSocket for AddrFilter {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if !self.may_send_to(transmit.destination) {
            bump(&self.stats.datagrams_blocked_send, 1);
            let ip = canonical(transmit.destination).ip().to_string();
            warn_limited!(self.limiter, &ip, "send_blocked", destination = %transmit.destination, "datagram to an address that is no configured peer's not sent");
            // Reported as sent: quinn must not retry it, nor learn anything from it.
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        for _ in 0..DROPPED_BATCHES_PER_POLL_MAX {
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let mut kept = 0;
            for i in 0..n.min(bufs.len()).min(meta.len()) {
                if self.may_hear(meta[i].addr) {
                    if i != kept {
                        bufs.swap(i, kept);
                        meta.swap(i, kept);
                    }
                    kept += 1;
                } else {
                    bump(&self.stats.datagrams_dropped_unknown, datagrams(&meta[i]));
                    let ip = canonical(meta[i].addr).ip().to_string();
                    warn_limited!(self.limiter, &ip, "stranger_datagram", source = %meta[i].addr, "datagram from an address that is no configured peer's dropped");
                }
            }
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
        }
        // Only strangers so far: let other tasks run, and come back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// How long a stranger's handshake may be answered after it arrived: its deadline plus the
/// lifetime of a Retry token, so the client's second Initial is answered too.
pub(crate) fn answer_for(handshake: Duration) -> Duration {
    handshake + Duration::from_millis(RETRY_TOKEN_LIFETIME_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn filter(configured: &[&str], accept_unknown: bool) -> AddrFilter {
        let socket = crate::bind_udp("127.0.0.1:0".parse().unwrap(), 0).unwrap();
        AddrFilter::new(
            socket,
            configured.iter().map(|a| a.parse().unwrap()),
            accept_unknown,
            Arc::new(NetStats::default()),
            Arc::new(LogLimiter::default()),
        )
    }

    fn stranger(i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32)), 7401)
    }

    #[tokio::test]
    async fn inv_27_only_configured_addresses_unless_strangers_are_accepted_and_answered() {
        let closed = filter(&["192.0.2.1:7401"], false);
        let mapped = SocketAddr::new(
            IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
            7401,
        );
        assert!(closed.may_hear(mapped) && closed.may_send_to(mapped));
        let later = Instant::now() + Duration::from_secs(60);
        // Without accept_unknown_addresses nothing opens the door, not even `answer`.
        assert!(closed.answer(stranger(1), later));
        assert!(!closed.may_hear(stranger(1)) && !closed.may_send_to(stranger(1)));

        let open = filter(&["192.0.2.1:7401"], true);
        assert!(open.may_hear(stranger(1)));
        assert!(!open.may_send_to(stranger(1)), "heard is not answered");
        assert!(open.answer(stranger(1), later));
        assert!(open.may_send_to(stranger(1)));
        // A connection holds the address past its handshake's window, until released.
        let past = Instant::now() - Duration::from_millis(1);
        assert!(open.answer(stranger(2), past));
        assert!(!open.may_send_to(stranger(2)));
        open.hold(stranger(2));
        assert!(open.may_send_to(stranger(2)));
        open.release(stranger(2));
        assert!(!open.may_send_to(stranger(2)));
    }

    #[tokio::test]
    async fn the_table_of_answered_strangers_is_bounded_and_expired_entries_make_room() {
        let open = filter(&[], true);
        let later = Instant::now() + Duration::from_secs(60);
        for i in 0..ANSWERED_ADDRESSES_MAX {
            assert!(open.answer(stranger(i), later));
        }
        assert!(
            !open.answer(stranger(ANSWERED_ADDRESSES_MAX), later),
            "N+1 refused"
        );
        assert!(!open.may_send_to(stranger(ANSWERED_ADDRESSES_MAX)));
        // Entries whose window passed (and no connection holds) give their place.
        let open = filter(&[], true);
        let past = Instant::now() - Duration::from_millis(1);
        for i in 0..ANSWERED_ADDRESSES_MAX {
            assert!(open.answer(stranger(i), past));
        }
        open.hold(stranger(0));
        assert!(open.answer(stranger(ANSWERED_ADDRESSES_MAX), later));
        assert!(open.may_send_to(stranger(0)), "held entries stay");
    }

    #[test]
    fn ipv4_mapped_addresses_compare_as_ipv4() {
        let v4: SocketAddr = "192.0.2.1:7401".parse().unwrap();
        let mapped = SocketAddr::new(
            IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
            7401,
        );
        assert_eq!(canonical(mapped), v4);
        assert_eq!(canonical(v4), v4);
        let v6: SocketAddr = "[2001:db8::1]:7401".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        // Another port is another address.
        assert_ne!(canonical("192.0.2.1:7402".parse().unwrap()), v4);
        let with_flow = SocketAddr::V6(std::net::SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 77, 0));
        assert_eq!(canonical(with_flow), "[::1]:9".parse().unwrap());
    }
}
