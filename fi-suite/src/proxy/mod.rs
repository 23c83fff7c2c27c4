//! The fault-injecting UDP proxies between the nodes of a fleet.
//!
//! # How a fleet is wired
//!
//! Every node binds its own loopback address. Each undirected link {A, B} gets one proxy with
//! two sockets on addresses of the proxy range: `side_a`, the address A is configured with for
//! B (A's `known_peers[B].addr`), and `side_b`, B's address for A. A datagram from A arriving at
//! `side_a` leaves from `side_b` to B's real address; one from B at `side_b` leaves from
//! `side_a` to A. So each node hears its peer from exactly the address it has configured for
//! it, which `edged` requires (`net::filter` drops datagrams from any other source). Identity is
//! the certificate, so the proxy is transparent to mutual TLS.
//!
//! A datagram arriving at a side from anything but that side's node is a [`Stray`]: recorded
//! (at most [`STRAYS_MAX`], then only counted) and dropped.
//!
//! # Faults
//!
//! Each direction of each link has its own [`LinkFaults`] (drop, delay and jitter, duplication,
//! reordering, corruption, a bandwidth cap, blackhole), changeable at any moment while traffic
//! flows, and its own [`Decider`] seeded from the scenario's seed, the link's name and the
//! direction ([`direction_seed`]). The decider holds everything (queues, RNG, counters) and does
//! no I/O; this module only moves datagrams between sockets and deciders. Every change is
//! recorded as a [`ProxyEvent`] with the moment it was applied.
//!
//! # The shell
//!
//! One task per direction: it reads datagrams from its side (up to [`RECV_BATCH_MAX`] per wake),
//! hands them to the decider, sends what is due out of the other side, and sleeps until the
//! next datagram is due, a datagram arrives, or the faults change. Datagrams are sent while the
//! direction's lock is held, so once [`Proxies::set`] returns, nothing decided under the old
//! faults that the new ones forbid (a blackhole drops what is in flight) can still leave.

pub mod decider;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use decider::{DATAGRAM_BYTES_MAX, Decider};
pub use decider::{DirStats, FaultsError, LinkFaults};

use crate::results::FaultRecord;

/// Receive and send buffer asked of the kernel for each side socket (it caps the request at
/// `net.core.rmem_max`/`wmem_max`): bursts of a fast transfer wait here, not on the floor.
pub const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Datagrams read per wake before what is due is sent.
pub const RECV_BATCH_MAX: usize = 64;
/// Datagrams sent per wake before the task yields to the runtime.
pub const SEND_BATCH_MAX: usize = 256;
/// Strays recorded in full; later ones are only counted.
pub const STRAYS_MAX: usize = 1024;
/// Fault changes recorded; later ones are only counted (a scenario changes faults a few
/// hundred times at most).
pub const EVENTS_MAX: usize = 65_536;
/// Pause after a socket error on receive, so that a persistent error cannot spin the task.
pub const RECV_ERROR_PAUSE_MS: u64 = 10;
/// The key-derivation context of the per-direction seeds.
const SEED_CONTEXT: &str = "edge-fi proxy: per-direction fault seed, v1";

/// One direction of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Dir {
    /// From A (arriving at `side_a`) to B.
    AtoB,
    /// From B (arriving at `side_b`) to A.
    BtoA,
}

impl Dir {
    pub const BOTH: [Dir; 2] = [Dir::AtoB, Dir::BtoA];

    fn index(self) -> usize {
        match self {
            Dir::AtoB => 0,
            Dir::BtoA => 1,
        }
    }
}

/// One undirected link to proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// A's name (`node-1`): it names the link in events and seeds.
    pub a_name: String,
    /// A's real address (where A's socket is bound).
    pub a: SocketAddr,
    pub b_name: String,
    pub b: SocketAddr,
    /// Where `side_a` is bound (any free port): the address A is configured with for B.
    pub side_ip_a: IpAddr,
    /// Where `side_b` is bound: B's address for A.
    pub side_ip_b: IpAddr,
}

impl LinkSpec {
    /// `a~b`.
    pub fn name(&self) -> String {
        format!("{}~{}", self.a_name, self.b_name)
    }

    /// (sender, receiver) names of a direction.
    pub fn ends(&self, dir: Dir) -> (&str, &str) {
        match dir {
            Dir::AtoB => (&self.a_name, &self.b_name),
            Dir::BtoA => (&self.b_name, &self.a_name),
        }
    }
}

/// A change of one direction's faults, at the moment it was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyEvent {
    /// Since the proxies started ([`Proxies::started_at`]).
    pub at: Duration,
    pub link: usize,
    pub link_name: String,
    pub dir: Dir,
    /// The sending node's name.
    pub from: String,
    /// The receiving node's name.
    pub to: String,
    pub faults: LinkFaults,
}

impl ProxyEvent {
    /// `link node-1→node-2`.
    pub fn target(&self) -> String {
        format!("link {}→{}", self.from, self.to)
    }

    /// The scenario's fault records of this change, one per kind of fault it applies (a heal
    /// is one `net.heal`); `proxies_started_ms` is when the proxies started, in the scenario's
    /// milliseconds.
    pub fn fault_records(&self, proxies_started_ms: u64) -> Vec<FaultRecord> {
        let at_ms = proxies_started_ms.saturating_add(self.at.as_millis() as u64);
        self.faults
            .kinds()
            .into_iter()
            .map(|kind| FaultRecord {
                at_ms,
                kind: kind.to_owned(),
                target: self.target(),
                detail: self.faults.to_string(),
            })
            .collect()
    }
}

/// A datagram that arrived at a side from anything but that side's node; it was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stray {
    /// Since the proxies started.
    pub at: Duration,
    pub link: usize,
    /// The side it arrived at.
    pub side: SocketAddr,
    /// Where it came from.
    pub from: SocketAddr,
    pub len: usize,
}

/// Why the proxies could not start or a fault could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A side socket could not be created or bound.
    #[error("link {link}: cannot bind a proxy side at {addr}: {source}")]
    Bind {
        link: String,
        addr: SocketAddr,
        source: io::Error,
    },
    /// Two links with one name: their seeds and events could not be told apart.
    #[error("two links are named {0}")]
    DuplicateLink(String),
    /// A node address that a proxy cannot forward to.
    #[error("link {link}: {reason}")]
    BadLink { link: String, reason: String },
    /// Faults outside their bounds.
    #[error("link {link} {dir:?}: {source}")]
    Faults {
        link: String,
        dir: Dir,
        source: FaultsError,
    },
}

/// The seed of one direction's decider: the scenario's seed, the link's name and the direction,
/// through a keyed hash, so that adding a link does not change the others' schedules.
pub fn direction_seed(seed: u64, link_name: &str, dir: Dir) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(SEED_CONTEXT);
    h.update(&seed.to_le_bytes());
    h.update(&(link_name.len() as u64).to_le_bytes());
    h.update(link_name.as_bytes());
    h.update(&[dir.index() as u8]);
    *h.finalize().as_bytes()
}

/// A lock that outlives a panicking holder: every critical section leaves the decider
/// consistent between its statements, so the data is still good.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One direction, shared between its task and the control calls.
#[derive(Debug)]
struct DirShared {
    decider: Mutex<Decider>,
    /// Wakes the task when the faults change (its next deadline may have).
    wake: Notify,
}

#[derive(Debug)]
struct Link {
    spec: LinkSpec,
    side_a: SocketAddr,
    side_b: SocketAddr,
    dirs: [Arc<DirShared>; 2],
}

#[derive(Debug)]
struct Log<T> {
    entries: Vec<T>,
    total: u64,
}

impl<T> Log<T> {
    fn new() -> Log<T> {
        Log {
            entries: Vec::new(),
            total: 0,
        }
    }

    fn push(&mut self, item: T, max: usize) {
        self.total += 1;
        if self.entries.len() < max {
            self.entries.push(item);
        }
    }
}

/// The running proxies of a fleet. Dropping them stops their tasks.
#[derive(Debug)]
pub struct Proxies {
    links: Vec<Link>,
    epoch: Instant,
    events: Mutex<Log<ProxyEvent>>,
    strays: Arc<Mutex<Log<Stray>>>,
    tasks: Vec<JoinHandle<()>>,
}

fn bind(link: &str, ip: IpAddr) -> Result<StdUdpSocket, ProxyError> {
    let addr = SocketAddr::new(ip, 0);
    let err = |source| ProxyError::Bind {
        link: link.to_owned(),
        addr,
        source,
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    socket
        .set_recv_buffer_size(SOCKET_BUFFER_BYTES)
        .map_err(err)?;
    socket
        .set_send_buffer_size(SOCKET_BUFFER_BYTES)
        .map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    Ok(socket.into())
}

impl Proxies {
    /// Binds both sides of every link and starts forwarding, every link clean. The deciders
    /// are seeded from `seed` ([`direction_seed`]).
    pub fn start(
        rt: &tokio::runtime::Handle,
        links: Vec<LinkSpec>,
        seed: u64,
    ) -> Result<Proxies, ProxyError> {
        let mut names = BTreeSet::new();
        for spec in &links {
            let name = spec.name();
            if !names.insert(name.clone()) {
                return Err(ProxyError::DuplicateLink(name));
            }
            for (end, addr) in [(&spec.a_name, spec.a), (&spec.b_name, spec.b)] {
                if addr.port() == 0 || addr.ip().is_unspecified() {
                    return Err(ProxyError::BadLink {
                        link: name,
                        reason: format!("{end}'s address {addr} is not one a datagram can go to"),
                    });
                }
            }
        }
        // Sockets are registered with the runtime's reactor.
        let _guard = rt.enter();
        let epoch = Instant::now();
        let strays = Arc::new(Mutex::new(Log::new()));
        let mut proxies = Proxies {
            links: Vec::with_capacity(links.len()),
            epoch,
            events: Mutex::new(Log::new()),
            strays: strays.clone(),
            tasks: Vec::with_capacity(2 * links.len()),
        };
        for (index, spec) in links.into_iter().enumerate() {
            let name = spec.name();
            let io_err = |addr, source| ProxyError::Bind {
                link: name.clone(),
                addr,
                source,
            };
            let std_a = bind(&name, spec.side_ip_a)?;
            let std_b = bind(&name, spec.side_ip_b)?;
            let side_a = std_a
                .local_addr()
                .map_err(|e| io_err(SocketAddr::new(spec.side_ip_a, 0), e))?;
            let side_b = std_b
                .local_addr()
                .map_err(|e| io_err(SocketAddr::new(spec.side_ip_b, 0), e))?;
            let sock_a = Arc::new(UdpSocket::from_std(std_a).map_err(|e| io_err(side_a, e))?);
            let sock_b = Arc::new(UdpSocket::from_std(std_b).map_err(|e| io_err(side_b, e))?);
            let dirs = Dir::BOTH.map(|dir| {
                Arc::new(DirShared {
                    decider: Mutex::new(Decider::new(direction_seed(seed, &name, dir))),
                    wake: Notify::new(),
                })
            });
            for dir in Dir::BOTH {
                let (inp, side, out, node, to) = match dir {
                    Dir::AtoB => (&sock_a, side_a, &sock_b, spec.a, spec.b),
                    Dir::BtoA => (&sock_b, side_b, &sock_a, spec.b, spec.a),
                };
                let pump = Pump {
                    shared: dirs[dir.index()].clone(),
                    inp: inp.clone(),
                    side,
                    out: out.clone(),
                    node: net::filter::canonical(node),
                    to,
                    link: index,
                    epoch,
                    strays: strays.clone(),
                };
                proxies.tasks.push(rt.spawn(pump.run()));
            }
            proxies.links.push(Link {
                spec,
                side_a,
                side_b,
                dirs,
            });
        }
        Ok(proxies)
    }

    fn link(&self, link: usize) -> &Link {
        assert!(
            link < self.links.len(),
            "link {link} does not exist: {} links were started",
            self.links.len()
        );
        &self.links[link]
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// (`side_a`, `side_b`): A's address for B, B's address for A.
    ///
    /// # Panics
    ///
    /// If `link` is not the index of a link given to [`Proxies::start`] (so do the other
    /// methods taking `link`).
    pub fn sides(&self, link: usize) -> (SocketAddr, SocketAddr) {
        let l = self.link(link);
        (l.side_a, l.side_b)
    }

    /// When the proxies started; event and stray times count from here.
    pub fn started_at(&self) -> std::time::Instant {
        self.epoch.into_std()
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Applies `faults` to one direction of a link from now on, records the change and returns
    /// it.
    pub fn set(&self, link: usize, dir: Dir, faults: LinkFaults) -> Result<ProxyEvent, ProxyError> {
        let l = self.link(link);
        faults.validate().map_err(|source| ProxyError::Faults {
            link: l.spec.name(),
            dir,
            source,
        })?;
        Ok(self.apply(l, link, dir, faults))
    }

    /// [`Proxies::set`] of faults already validated.
    fn apply(&self, l: &Link, link: usize, dir: Dir, faults: LinkFaults) -> ProxyEvent {
        // The event log's lock is held across the change, so the log's order is the order in
        // which the changes were applied.
        let mut events = lock(&self.events);
        let shared = &l.dirs[dir.index()];
        let at = {
            let mut decider = lock(&shared.decider);
            let at = self.now();
            decider.set_faults(at, faults);
            at
        };
        shared.wake.notify_one();
        let (from, to) = l.spec.ends(dir);
        let event = ProxyEvent {
            at,
            link,
            link_name: l.spec.name(),
            dir,
            from: from.to_owned(),
            to: to.to_owned(),
            faults,
        };
        events.push(event.clone(), EVENTS_MAX);
        event
    }

    /// [`Proxies::set`] on both directions (a symmetric partition is
    /// `set_both(link, LinkFaults::blackhole())`).
    pub fn set_both(&self, link: usize, faults: LinkFaults) -> Result<[ProxyEvent; 2], ProxyError> {
        Ok([
            self.set(link, Dir::AtoB, faults)?,
            self.set(link, Dir::BtoA, faults)?,
        ])
    }

    /// Makes every direction that has faults clean; returns the changes.
    pub fn heal_all(&self) -> Vec<ProxyEvent> {
        let mut healed = Vec::new();
        for (link, l) in self.links.iter().enumerate() {
            for dir in Dir::BOTH {
                if !self.faults(link, dir).is_clean() {
                    healed.push(self.apply(l, link, dir, LinkFaults::clean()));
                }
            }
        }
        healed
    }

    /// The faults a direction has now.
    pub fn faults(&self, link: usize, dir: Dir) -> LinkFaults {
        lock(&self.link(link).dirs[dir.index()].decider).faults()
    }

    pub fn stats(&self, link: usize, dir: Dir) -> DirStats {
        lock(&self.link(link).dirs[dir.index()].decider).stats()
    }

    /// Every recorded fault change, in the order applied.
    #[cfg(test)]
    pub fn events(&self) -> Vec<ProxyEvent> {
        lock(&self.events).entries.clone()
    }

    /// Fault changes made, including those beyond [`EVENTS_MAX`] that were not recorded.
    #[cfg(test)]
    pub fn event_count(&self) -> u64 {
        lock(&self.events).total
    }

    /// The recorded strays (the first [`STRAYS_MAX`]).
    pub fn strays(&self) -> Vec<Stray> {
        lock(&self.strays).entries.clone()
    }

    /// Every stray seen, recorded or not.
    pub fn stray_count(&self) -> u64 {
        lock(&self.strays).total
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What one pass of sending left.
enum Flush {
    /// Nothing is due; the next datagram will be at this time (since the epoch), if any.
    Idle(Option<Duration>),
    /// The batch bound was reached with more due.
    More,
    /// The socket is full.
    Blocked,
}

/// The task of one direction.
struct Pump {
    shared: Arc<DirShared>,
    inp: Arc<UdpSocket>,
    /// `inp`'s address.
    side: SocketAddr,
    out: Arc<UdpSocket>,
    /// The only source heard on `inp`, canonical.
    node: SocketAddr,
    /// Where datagrams go.
    to: SocketAddr,
    link: usize,
    epoch: Instant,
    strays: Arc<Mutex<Log<Stray>>>,
}

impl Pump {
    async fn run(self) {
        let mut buf = vec![0u8; DATAGRAM_BYTES_MAX + 1];
        loop {
            let (next, blocked) = match self.flush() {
                Flush::Idle(next) => (next, false),
                Flush::Blocked => (None, true),
                Flush::More => {
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            let deadline = next.map(|due| self.epoch + due);
            tokio::select! {
                received = self.inp.recv_from(&mut buf) => self.received(received, &mut buf).await,
                () = tokio::time::sleep_until(deadline.unwrap_or(self.epoch)), if deadline.is_some() => {}
                // An error here shows again on the next send; nothing to do with it now.
                _ = self.out.writable(), if blocked => {}
                () = self.shared.wake.notified() => {}
            }
        }
    }

    /// Sends what is due, holding the direction's lock (see the module docs).
    fn flush(&self) -> Flush {
        let mut decider = lock(&self.shared.decider);
        let now = self.epoch.elapsed();
        for _ in 0..SEND_BATCH_MAX {
            let Some(bytes) = decider.pop_due(now) else {
                return Flush::Idle(decider.next_due());
            };
            match self.out.try_send_to(&bytes, self.to) {
                Ok(_) => decider.sent(bytes.len()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    decider.requeue_front(bytes);
                    return Flush::Blocked;
                }
                Err(_) => decider.send_failed(),
            }
        }
        Flush::More
    }

    /// Handles the datagram just received, then up to [`RECV_BATCH_MAX`] − 1 more already
    /// waiting.
    async fn received(&self, first: io::Result<(usize, SocketAddr)>, buf: &mut [u8]) {
        let mut result = first;
        for taken in 1..=RECV_BATCH_MAX {
            match result {
                Ok((len, from)) => self.one(&buf[..len], from),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    lock(&self.shared.decider).recv_failed();
                    tokio::time::sleep(Duration::from_millis(RECV_ERROR_PAUSE_MS)).await;
                    return;
                }
            }
            if taken == RECV_BATCH_MAX {
                // The rest waits in the socket for the next wake.
                return;
            }
            result = self.inp.try_recv_from(buf);
        }
    }

    fn one(&self, bytes: &[u8], from: SocketAddr) {
        let now = self.epoch.elapsed();
        if net::filter::canonical(from) == self.node {
            lock(&self.shared.decider).on_datagram(now, bytes.to_vec());
            return;
        }
        lock(&self.strays).push(
            Stray {
                at: now,
                link: self.link,
                side: self.side,
                from,
                len: bytes.len(),
            },
            STRAYS_MAX,
        );
    }
}
