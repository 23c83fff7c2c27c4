//! Packet capture on the loopback interface: the evidence that every node sends datagrams only
//! to its configured peers (INV-27).
//!
//! The proxies see only what reaches them; a datagram a node sends anywhere else (a lookup, a
//! broadcast, an answer to a stranger) never does. So the suite captures every UDP datagram on
//! `lo` while a scenario runs and checks, per node, every datagram it sent against the
//! addresses it may send to (its proxy sides): [`sent_elsewhere`], [`check_packets_only_to_peers`].
//!
//! # Capturing
//!
//! [`Capture::start`] runs `tcpdump -i lo -n -U --immediate-mode -s 128 -B … -w FILE udp` and
//! waits until it says it is listening. Packet-buffered output (`-U`) and immediate mode make
//! each datagram reach the file as soon as the kernel hands it over; the snapshot length keeps
//! only the headers (the UDP header carries the datagram's length). [`Capture::stop`] makes
//! sure everything sent before it is in the file: it sends a marker datagram of its own and
//! waits (bounded) until the marker is in the file, then interrupts tcpdump (SIGINT, which
//! flushes and prints its drop counts) and parses the file. A capture whose marker never
//! arrived, or in which the kernel dropped packets, is incomplete
//! ([`Captured::incomplete`]): it may convict, never acquit.
//!
//! When the machine cannot capture (no tcpdump, no permission, no `lo`), `start` returns
//! [`CaptureError::Unavailable`] with the reason; the scenario reports the check SKIPPED with
//! it, never PASS.
//!
//! # The pcap format, as read here
//!
//! A 24-byte file header — magic `0xA1B2C3D4` (microsecond timestamps) or `0xA1B23C4D`
//! (nanoseconds), written in the capturing machine's byte order, which the magic reveals;
//! version (u16, u16); two reserved u32; snapshot length (u32); link type (u32, the lower 16
//! bits) — then records: seconds (u32), micro- or nanoseconds (u32), captured length (u32),
//! original length (u32), and the captured bytes. Link layers read: Ethernet (1, what Linux
//! `lo` gives, with 802.1Q tags), BSD loopback (0 and 108), raw IP (101, 228, 229) and Linux
//! cooked captures (113, 276). IPv4 and IPv6 (hop-by-hop, routing, destination-options and
//! fragment extension headers) carrying UDP. A fragment other than the first carries no UDP
//! header and is counted, not read; a file cut in the middle of a record (a capture still
//! running) ends at the last whole record.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::results::{CheckResult, Verdict, check};

/// The capturing program, looked up on `PATH` and then in [`TCPDUMP_DIRS`].
pub const TCPDUMP: &str = "tcpdump";
/// Where distributions install tcpdump, for a `PATH` without the sbin directories.
pub const TCPDUMP_DIRS: [&str; 3] = ["/usr/sbin", "/usr/bin", "/sbin"];
/// The interface every loopback address of a fleet is on.
pub const CAPTURE_INTERFACE: &str = "lo";
/// Bytes kept of each packet: the largest link header read (cooked v2, 20) + IPv6 (40) + its
/// extension headers + UDP (8), with room to spare.
pub const CAPTURE_SNAPLEN_BYTES: u32 = 128;
/// The kernel buffer asked for (`-B`, in KiB): a burst of a fast transfer must not overflow it.
pub const CAPTURE_BUFFER_KIB: u32 = 32 * 1024;
/// How long tcpdump may take to say it is listening.
pub const CAPTURE_START_TIMEOUT_MS: u64 = 10_000;
/// How long the flush marker may take to reach the file.
pub const CAPTURE_FLUSH_TIMEOUT_MS: u64 = 5_000;
/// How often the file is read while waiting for the marker.
pub const CAPTURE_POLL_MS: u64 = 20;
/// How long tcpdump may take to exit after SIGINT before it is killed.
pub const CAPTURE_EXIT_TIMEOUT_MS: u64 = 5_000;
/// Lines of tcpdump's standard error kept (it writes a handful).
pub const STDERR_LINES_MAX: usize = 64;
/// The largest record read (tcpdump's largest snapshot length).
pub const PCAP_RECORD_BYTES_MAX: u32 = 262_144;
/// Bytes read from the capture file at a time.
pub const PCAP_READ_CHUNK_BYTES: usize = 1024 * 1024;
/// Chunks read per call of the tail reader (then the caller polls again).
pub const PCAP_READS_PER_CALL_MAX: usize = 256;
/// Calls of the tail reader after tcpdump exited: 64 GiB of capture, far beyond any scenario.
pub const PCAP_FINAL_READS_MAX: usize = 256;
/// IPv6 extension headers followed before giving up on a packet.
pub const IPV6_EXT_HEADERS_MAX: usize = 8;

const PCAP_HEADER_BYTES: usize = 24;
const RECORD_HEADER_BYTES: usize = 16;
const MAGIC_MICROS: u32 = 0xA1B2_C3D4;
const MAGIC_NANOS: u32 = 0xA1B2_3C4D;
const UDP: u8 = 17;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
/// The marker datagram [`Capture::stop`] sends to itself.
const MARKER: &[u8] = b"edge-fi capture flush marker";

/// Link types read (the pcap `LINKTYPE_*` values).
pub mod link_type {
    pub const NULL: u16 = 0;
    pub const ETHERNET: u16 = 1;
    pub const RAW: u16 = 101;
    pub const LOOP: u16 = 108;
    pub const LINUX_SLL: u16 = 113;
    pub const IPV4: u16 = 228;
    pub const IPV6: u16 = 229;
    pub const LINUX_SLL2: u16 = 276;
}

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The machine cannot capture here; the check is SKIPPED with this reason.
    #[error("unavailable: {reason}")]
    Unavailable { reason: String },
    /// The capture file could not be read.
    #[error("capture file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The capture file is not a pcap file this reader understands.
    #[error("capture file {path}: {source}")]
    Pcap { path: PathBuf, source: PcapError },
}

/// A pcap file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    #[error("{0} bytes: shorter than the 24-byte file header")]
    TooShort(usize),
    #[error("magic {0:#010x} is not a pcap magic (pcapng is not read)")]
    BadMagic(u32),
    #[error("link type {0} is not one this reader knows")]
    UnsupportedLinkType(u16),
    #[error("record at byte {offset} claims {len} bytes, more than {PCAP_RECORD_BYTES_MAX}")]
    RecordTooLarge { offset: usize, len: u32 },
}

/// The file header, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcapHeader {
    pub big_endian: bool,
    pub nanos: bool,
    pub snaplen: u32,
    pub link_type: u16,
}

/// One UDP datagram seen on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Datagram {
    /// When it was captured, since the Unix epoch.
    pub time: Duration,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Payload bytes (the UDP length less its header), whatever the snapshot kept.
    pub len: u32,
}

/// A whole capture file, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcap {
    pub header: PcapHeader,
    pub datagrams: Vec<Datagram>,
    /// Records read.
    pub records: u64,
    /// Records that are not UDP over IP.
    pub other: u64,
    /// IP fragments other than the first (no UDP header in them).
    pub fragments: u64,
    /// Records cut before the end of their UDP header, or malformed.
    pub unreadable: u64,
    /// The file ends inside a record (the capture was still writing).
    pub truncated_tail: bool,
}

fn u16_at(b: &[u8], at: usize, big: bool) -> Option<u16> {
    let x: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(if big {
        u16::from_be_bytes(x)
    } else {
        u16::from_le_bytes(x)
    })
}

fn u32_at(b: &[u8], at: usize, big: bool) -> Option<u32> {
    let x: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(x)
    } else {
        u32::from_le_bytes(x)
    })
}

/// Reads the 24-byte file header.
pub fn parse_header(bytes: &[u8]) -> Result<PcapHeader, PcapError> {
    if bytes.len() < PCAP_HEADER_BYTES {
        return Err(PcapError::TooShort(bytes.len()));
    }
    let le = u32_at(bytes, 0, false).ok_or(PcapError::TooShort(bytes.len()))?;
    let (big_endian, nanos) = match le {
        MAGIC_MICROS => (false, false),
        MAGIC_NANOS => (false, true),
        m if m.swap_bytes() == MAGIC_MICROS => (true, false),
        m if m.swap_bytes() == MAGIC_NANOS => (true, true),
        m => return Err(PcapError::BadMagic(m)),
    };
    let field = |at| u32_at(bytes, at, big_endian).ok_or(PcapError::TooShort(bytes.len()));
    let snaplen = field(16)?;
    // The upper 16 bits carry FCS information; the link type is the lower 16.
    let link_type = (field(20)? & 0xFFFF) as u16;
    Ok(PcapHeader {
        big_endian,
        nanos,
        snaplen,
        link_type,
    })
}

/// One record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: Duration,
    pub orig_len: u32,
    pub data: &'a [u8],
}

/// Walks the records of `body` (the bytes after the file header), calling `f` on each whole
/// one; returns how many bytes of `body` they took (a partial record at the end is left).
pub fn walk_records(
    header: &PcapHeader,
    body: &[u8],
    mut f: impl FnMut(Record<'_>),
) -> Result<usize, PcapError> {
    let big = header.big_endian;
    let mut at = 0;
    loop {
        let Some(h) = body.get(at..at + RECORD_HEADER_BYTES) else {
            return Ok(at);
        };
        // The slice is 16 bytes long: every field below is there.
        let field = |k: usize| u32_at(h, k, big).unwrap_or(0);
        let (secs, frac, incl, orig) = (field(0), field(4), field(8), field(12));
        if incl > PCAP_RECORD_BYTES_MAX {
            return Err(PcapError::RecordTooLarge {
                offset: PCAP_HEADER_BYTES + at,
                len: incl,
            });
        }
        let start = at + RECORD_HEADER_BYTES;
        let Some(data) = body.get(start..start + incl as usize) else {
            return Ok(at);
        };
        let time = Duration::from_secs(u64::from(secs))
            + if header.nanos {
                Duration::from_nanos(u64::from(frac))
            } else {
                Duration::from_micros(u64::from(frac))
            };
        f(Record {
            time,
            orig_len: orig,
            data,
        });
        at = start + incl as usize;
    }
}

/// What a packet turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        len: u32,
    },
    /// Not UDP over IPv4/IPv6.
    Other,
    /// An IP fragment other than the first.
    Fragment,
    /// Cut or malformed before the end of the UDP header.
    Unreadable,
}

/// The network-layer bytes of a frame, and whether they are IPv4 (`Some(true)`), IPv6
/// (`Some(false)`) or something else (`None`).
fn network_layer(link: u16, frame: &[u8]) -> Option<(Option<bool>, &[u8])> {
    let by_ethertype = |t: u16| match t {
        ETHERTYPE_IPV4 => Some(true),
        ETHERTYPE_IPV6 => Some(false),
        _ => None,
    };
    let by_version = |b: &[u8]| match b.first()? >> 4 {
        4 => Some(true),
        6 => Some(false),
        _ => None,
    };
    match link {
        link_type::ETHERNET => {
            let mut t = u16_at(frame, 12, true)?;
            let mut at = 14;
            // 802.1Q tags (bounded: at most two, QinQ).
            for _ in 0..2 {
                if t != ETHERTYPE_VLAN {
                    break;
                }
                t = u16_at(frame, at + 2, true)?;
                at += 4;
            }
            Some((by_ethertype(t), frame.get(at..)?))
        }
        link_type::NULL | link_type::LOOP => {
            // The address family, in the capturing host's byte order (NULL) or network order
            // (LOOP); AF_INET is 2 everywhere, AF_INET6 is 10 (Linux), 24, 28 or 30 (BSDs).
            let family = u32_at(frame, 0, link == link_type::LOOP)?;
            let family = if family > 0xFFFF {
                family.swap_bytes()
            } else {
                family
            };
            let v4 = match family {
                2 => Some(true),
                10 | 24 | 28 | 30 => Some(false),
                _ => None,
            };
            Some((v4, frame.get(4..)?))
        }
        link_type::RAW | link_type::IPV4 | link_type::IPV6 => Some((by_version(frame), frame)),
        link_type::LINUX_SLL => Some((by_ethertype(u16_at(frame, 14, true)?), frame.get(16..)?)),
        link_type::LINUX_SLL2 => Some((by_ethertype(u16_at(frame, 0, true)?), frame.get(20..)?)),
        _ => None,
    }
}

fn udp_header(ip_src: IpAddr, ip_dst: IpAddr, udp: &[u8]) -> Packet {
    match (
        u16_at(udp, 0, true),
        u16_at(udp, 2, true),
        u16_at(udp, 4, true),
    ) {
        (Some(sp), Some(dp), Some(len)) if len >= 8 => Packet::Udp {
            src: SocketAddr::new(ip_src, sp),
            dst: SocketAddr::new(ip_dst, dp),
            len: u32::from(len) - 8,
        },
        _ => Packet::Unreadable,
    }
}

fn ipv4(ip: &[u8]) -> Packet {
    let Some(&vihl) = ip.first() else {
        return Packet::Unreadable;
    };
    let ihl = usize::from(vihl & 0x0F) * 4;
    if vihl >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return Packet::Unreadable;
    }
    if ip[9] != UDP {
        return Packet::Other;
    }
    // Flags and fragment offset: a non-zero offset is a later fragment.
    if u16_at(ip, 6, true).unwrap_or(0) & 0x1FFF != 0 {
        return Packet::Fragment;
    }
    let addr = |at: usize| IpAddr::V4(Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]));
    udp_header(addr(12), addr(16), &ip[ihl..])
}

fn ipv6(ip: &[u8]) -> Packet {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return Packet::Unreadable;
    }
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&ip[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    let (src, dst) = (addr(8), addr(24));
    let mut next = ip[6];
    let mut at = 40;
    for _ in 0..IPV6_EXT_HEADERS_MAX {
        match next {
            UDP => return udp_header(src, dst, &ip[at..]),
            // Hop-by-hop, routing, destination options: (length + 1) × 8 bytes.
            0 | 43 | 60 => {
                let (Some(&n), Some(&len)) = (ip.get(at), ip.get(at + 1)) else {
                    return Packet::Unreadable;
                };
                next = n;
                at += (usize::from(len) + 1) * 8;
            }
            // Fragment: 8 bytes; a non-zero offset is a later fragment.
            44 => {
                let (Some(&n), Some(off)) = (ip.get(at), u16_at(ip, at + 2, true)) else {
                    return Packet::Unreadable;
                };
                if off & 0xFFF8 != 0 {
                    return Packet::Fragment;
                }
                next = n;
                at += 8;
            }
            _ => return Packet::Other,
        }
        if at > ip.len() {
            return Packet::Unreadable;
        }
    }
    Packet::Unreadable
}

/// Reads one captured frame of link type `link`.
pub fn classify(link: u16, frame: &[u8]) -> Packet {
    match network_layer(link, frame) {
        Some((Some(true), ip)) => ipv4(ip),
        Some((Some(false), ip)) => ipv6(ip),
        Some((None, _)) => Packet::Other,
        None => Packet::Unreadable,
    }
}

fn known_link_type(link: u16) -> bool {
    use link_type::*;
    [NULL, ETHERNET, RAW, LOOP, LINUX_SLL, IPV4, IPV6, LINUX_SLL2].contains(&link)
}

impl Pcap {
    fn empty(header: PcapHeader) -> Pcap {
        Pcap {
            header,
            datagrams: Vec::new(),
            records: 0,
            other: 0,
            fragments: 0,
            unreadable: 0,
            truncated_tail: false,
        }
    }

    fn add(&mut self, r: Record<'_>) {
        self.records += 1;
        match classify(self.header.link_type, r.data) {
            Packet::Udp { src, dst, len } => self.datagrams.push(Datagram {
                time: r.time,
                src,
                dst,
                len,
            }),
            Packet::Other => self.other += 1,
            Packet::Fragment => self.fragments += 1,
            Packet::Unreadable => self.unreadable += 1,
        }
    }
}

/// The header of a file this reader can go on with.
fn readable_header(bytes: &[u8]) -> Result<PcapHeader, PcapError> {
    let header = parse_header(bytes)?;
    if !known_link_type(header.link_type) {
        return Err(PcapError::UnsupportedLinkType(header.link_type));
    }
    Ok(header)
}

/// Reads a whole pcap file held in memory.
#[cfg(test)]
pub fn parse_pcap(bytes: &[u8]) -> Result<Pcap, PcapError> {
    let mut pcap = Pcap::empty(readable_header(bytes)?);
    let body = &bytes[PCAP_HEADER_BYTES..];
    let header = pcap.header;
    let used = walk_records(&header, body, |r| pcap.add(r))?;
    pcap.truncated_tail = used < body.len();
    Ok(pcap)
}

/// Reads a pcap file that may still be growing, in chunks, holding only the part of a record
/// not yet complete: memory is what the datagrams take, not what the file does.
#[derive(Debug)]
struct PcapTail {
    path: PathBuf,
    file: std::fs::File,
    pending: Vec<u8>,
    pcap: Option<Pcap>,
}

impl PcapTail {
    fn open(path: &Path) -> Result<PcapTail, CaptureError> {
        let file = std::fs::File::open(path).map_err(|source| CaptureError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(PcapTail {
            path: path.to_owned(),
            file,
            pending: Vec::new(),
            pcap: None,
        })
    }

    /// Reads what the file holds now, at most [`PCAP_READS_PER_CALL_MAX`] chunks; returns
    /// whether it reached the end.
    fn read_more(&mut self) -> Result<bool, CaptureError> {
        let pcap_err = |source| CaptureError::Pcap {
            path: self.path.clone(),
            source,
        };
        let mut chunk = vec![0u8; PCAP_READ_CHUNK_BYTES];
        for _ in 0..PCAP_READS_PER_CALL_MAX {
            let n = self
                .file
                .read(&mut chunk)
                .map_err(|source| CaptureError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                return Ok(true);
            }
            self.pending.extend_from_slice(&chunk[..n]);
            let pcap = match &mut self.pcap {
                Some(pcap) => pcap,
                None if self.pending.len() < PCAP_HEADER_BYTES => continue,
                None => {
                    let header = readable_header(&self.pending).map_err(pcap_err)?;
                    self.pending.drain(..PCAP_HEADER_BYTES);
                    self.pcap.insert(Pcap::empty(header))
                }
            };
            let header = pcap.header;
            let used = walk_records(&header, &self.pending, |r| pcap.add(r)).map_err(pcap_err)?;
            self.pending.drain(..used);
        }
        Ok(false)
    }

    /// The datagrams read so far.
    fn datagrams(&self) -> &[Datagram] {
        self.pcap.as_ref().map_or(&[], |p| p.datagrams.as_slice())
    }

    /// Everything read; a file without a whole header is an error.
    fn finish(self) -> Result<Pcap, CaptureError> {
        match self.pcap {
            Some(mut pcap) => {
                pcap.truncated_tail = !self.pending.is_empty();
                Ok(pcap)
            }
            None => Err(CaptureError::Pcap {
                path: self.path,
                source: PcapError::TooShort(self.pending.len()),
            }),
        }
    }
}

/// A node, and where it may send datagrams (its proxy sides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAllowance {
    pub name: String,
    /// The node's real address.
    pub addr: SocketAddr,
    pub allowed: BTreeSet<SocketAddr>,
}

/// A datagram a node sent where it may not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offense {
    pub node: String,
    pub datagram: Datagram,
}

/// Who sent what: the nodes, canonical, indexed by address and by IP.
struct Senders {
    nodes: Vec<NodeAllowance>,
    exact: BTreeMap<SocketAddr, usize>,
    by_ip: BTreeMap<IpAddr, Vec<usize>>,
}

impl Senders {
    fn new(nodes: &[NodeAllowance]) -> Senders {
        let nodes: Vec<NodeAllowance> = nodes
            .iter()
            .map(|n| NodeAllowance {
                name: n.name.clone(),
                addr: net::filter::canonical(n.addr),
                allowed: n
                    .allowed
                    .iter()
                    .map(|a| net::filter::canonical(*a))
                    .collect(),
            })
            .collect();
        let mut exact = BTreeMap::new();
        let mut by_ip: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
        for (i, n) in nodes.iter().enumerate() {
            exact.insert(n.addr, i);
            by_ip.entry(n.addr.ip()).or_default().push(i);
        }
        Senders {
            nodes,
            exact,
            by_ip,
        }
    }

    /// Which node sent from `src`: the node bound there; otherwise the one node whose IP it is
    /// (a datagram from another port of a node's own address is still the node's, e.g. a
    /// lookup from an ephemeral socket). An IP shared by several nodes attributes only their
    /// exact addresses.
    fn of(&self, src: SocketAddr) -> Option<&NodeAllowance> {
        let src = net::filter::canonical(src);
        if let Some(&i) = self.exact.get(&src) {
            return Some(&self.nodes[i]);
        }
        match self.by_ip.get(&src.ip()).map(Vec::as_slice) {
            Some(&[i]) => Some(&self.nodes[i]),
            _ => None,
        }
    }
}

/// Every datagram a node sent anywhere but its allowed addresses, in capture order.
/// Addresses are compared canonically (an IPv4-mapped IPv6 address is its IPv4 address).
pub fn sent_elsewhere(datagrams: &[Datagram], nodes: &[NodeAllowance]) -> Vec<Offense> {
    let senders = Senders::new(nodes);
    datagrams
        .iter()
        .filter_map(|d| {
            let node = senders.of(d.src)?;
            (!node.allowed.contains(&net::filter::canonical(d.dst))).then(|| Offense {
                node: node.name.clone(),
                datagram: *d,
            })
        })
        .collect()
}

/// How many of `datagrams` some node of `nodes` sent.
pub fn sent_by_nodes(datagrams: &[Datagram], nodes: &[NodeAllowance]) -> u64 {
    let senders = Senders::new(nodes);
    datagrams
        .iter()
        .filter(|d| senders.of(d.src).is_some())
        .count() as u64
}

/// A capture that ran, read back.
#[derive(Debug, Clone)]
pub struct Captured {
    pub file: PathBuf,
    pub pcap: Pcap,
    /// The flush marker reached the file: everything sent before [`Capture::stop`] is in it.
    pub flushed: bool,
    /// Where the flush marker came from (its datagram is not among the datagrams; another
    /// capture's marker, from another address, may be).
    pub marker: SocketAddr,
    /// tcpdump's "packets dropped by kernel", when it printed it.
    pub kernel_dropped: Option<u64>,
    /// tcpdump's standard error (bounded).
    pub stderr: Vec<String>,
}

impl Captured {
    /// Why this capture may have missed datagrams, if it may have.
    pub fn incomplete(&self) -> Option<String> {
        if !self.flushed {
            let said = self.stderr.last().map(String::as_str).unwrap_or("nothing");
            return Some(format!(
                "the flush marker from {} did not reach {} within {CAPTURE_FLUSH_TIMEOUT_MS} ms (tcpdump last said: {said})",
                self.marker,
                self.file.display()
            ));
        }
        match self.kernel_dropped {
            Some(0) => None,
            Some(n) => Some(format!("the kernel dropped {n} packets of the capture")),
            None => Some("tcpdump did not report its kernel drops".to_owned()),
        }
    }
}

/// The [`check::PACKETS_ONLY_TO_PEERS`] check of a scenario from its capture: FAIL on any
/// datagram a node sent elsewhere; SKIPPED when the machine could not capture; UNKNOWN when
/// the capture failed, may have missed datagrams, or saw no datagram of any node (then it
/// proves nothing); PASS otherwise.
pub fn check_packets_only_to_peers(
    capture: &Result<Captured, CaptureError>,
    nodes: &[NodeAllowance],
) -> CheckResult {
    let result = |verdict, detail: String, observed, out_of| CheckResult {
        name: check::PACKETS_ONLY_TO_PEERS.to_owned(),
        invariants: vec!["INV-27".to_owned()],
        verdict,
        detail,
        observed,
        out_of,
    };
    let captured = match capture {
        Ok(c) => c,
        Err(CaptureError::Unavailable { reason }) => {
            return result(
                Verdict::Skipped,
                format!("no capture: {reason}"),
                None,
                None,
            );
        }
        Err(e) => return result(Verdict::Unknown, e.to_string(), None, None),
    };
    let datagrams = &captured.pcap.datagrams;
    let sent = sent_by_nodes(datagrams, nodes);
    let offenses = sent_elsewhere(datagrams, nodes);
    if let Some(first) = offenses.first() {
        let d = first.datagram;
        return result(
            Verdict::Fail,
            format!(
                "{} datagrams sent outside the configured peers; first: {} {} → {} ({} bytes)",
                offenses.len(),
                first.node,
                d.src,
                d.dst,
                d.len
            ),
            Some(offenses.len() as u64),
            Some(sent),
        );
    }
    if let Some(why) = captured.incomplete() {
        return result(
            Verdict::Unknown,
            format!("no datagram outside the peers seen, but {why}"),
            Some(0),
            Some(sent),
        );
    }
    if sent == 0 {
        return result(
            Verdict::Unknown,
            "the capture holds no datagram of any node".to_owned(),
            Some(0),
            Some(0),
        );
    }
    result(
        Verdict::Pass,
        format!("{sent} datagrams, every one to a configured peer"),
        Some(0),
        Some(sent),
    )
}

/// Where `program` is: the first directory of `path` (a `PATH` value), then of `extra_dirs`,
/// holding a file of that name.
fn find_program(program: &str, path: &std::ffi::OsStr, extra_dirs: &[&str]) -> Option<PathBuf> {
    std::env::split_paths(path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A running capture. Dropping it without [`Capture::stop`] kills tcpdump.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn unavailable(reason: impl Into<String>) -> CaptureError {
    CaptureError::Unavailable {
        reason: reason.into(),
    }
}

impl Capture {
    /// Starts capturing every UDP datagram on `lo` into `file` (created or truncated) and
    /// returns once tcpdump is listening.
    pub fn start(file: &Path) -> Result<Capture, CaptureError> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let tcpdump = find_program(TCPDUMP, &path, &TCPDUMP_DIRS);
        Capture::start_with(tcpdump.as_deref(), CAPTURE_INTERFACE, file)
    }

    /// [`Capture::start`] with `tcpdump` (`None`: not found) on `interface`.
    fn start_with(
        tcpdump: Option<&Path>,
        interface: &str,
        file: &Path,
    ) -> Result<Capture, CaptureError> {
        let Some(tcpdump) = tcpdump else {
            return Err(unavailable(format!(
                "{TCPDUMP} not found on PATH or in {TCPDUMP_DIRS:?} (the distribution's tcpdump package)"
            )));
        };
        let mut child = Command::new(tcpdump)
            .args(["-i", interface, "-n", "-U", "--immediate-mode"])
            .args(["-s", &CAPTURE_SNAPLEN_BYTES.to_string()])
            .args(["-B", &CAPTURE_BUFFER_KIB.to_string()])
            .arg("-w")
            .arg(file)
            .arg("udp")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| unavailable(format!("cannot run {}: {e}", tcpdump.display())))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<()>();
        let reader = child.stderr.take().map(|pipe| {
            let lines = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let listening = line.contains("listening on");
                    let mut kept = lines.lock().unwrap_or_else(PoisonError::into_inner);
                    if kept.len() < STDERR_LINES_MAX {
                        kept.push(line);
                    }
                    drop(kept);
                    if listening {
                        // The receiver may be gone (start gave up): nothing to tell then.
                        let _ = tx.send(());
                    }
                }
            })
        });
        let mut capture = Capture {
            child: Some(child),
            file: file.to_owned(),
            stderr,
            reader,
        };
        match rx.recv_timeout(Duration::from_millis(CAPTURE_START_TIMEOUT_MS)) {
            Ok(()) => Ok(capture),
            Err(why) => {
                capture.kill();
                let said = capture.stderr_lines().join(" / ");
                Err(unavailable(match why {
                    mpsc::RecvTimeoutError::Disconnected => {
                        format!("{} exited: {said}", tcpdump.display())
                    }
                    mpsc::RecvTimeoutError::Timeout => format!(
                        "{} did not start listening within {CAPTURE_START_TIMEOUT_MS} ms: {said}",
                        tcpdump.display()
                    ),
                }))
            }
        }
    }

    fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine: either way it is reaped below.
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(reader) = self.reader.take() {
            // The pipe closed with the child, so the reader ends; a panic in it lost only
            // log lines.
            let _ = reader.join();
        }
    }

    /// Sends the marker and reads the file until the marker is in it; returns whether it
    /// arrived, and the marker's address.
    fn flush(&self, tail: &mut PcapTail) -> Result<(bool, SocketAddr), CaptureError> {
        let io = |source| CaptureError::Io {
            path: self.file.clone(),
            source,
        };
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io)?;
        let marker = socket.local_addr().map_err(io)?;
        socket.send_to(MARKER, marker).map_err(io)?;
        let deadline = Instant::now() + Duration::from_millis(CAPTURE_FLUSH_TIMEOUT_MS);
        let polls = CAPTURE_FLUSH_TIMEOUT_MS / CAPTURE_POLL_MS + 1;
        let mut checked = 0;
        for _ in 0..polls {
            tail.read_more()?;
            let new = &tail.datagrams()[checked..];
            if new.iter().any(|d| d.src == marker && d.dst == marker) {
                return Ok((true, marker));
            }
            checked += new.len();
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(CAPTURE_POLL_MS));
        }
        Ok((false, marker))
    }

    /// Stops the capture once everything sent before this call is in the file, and reads it.
    /// The flush marker is not among the datagrams returned.
    pub fn stop(mut self) -> Result<Captured, CaptureError> {
        let flushed =
            PcapTail::open(&self.file).and_then(|mut tail| Ok((self.flush(&mut tail)?, tail)));
        if let Some(mut child) = self.child.take() {
            // SIGINT: tcpdump flushes, prints its counts and exits.
            let pid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            let polls = CAPTURE_EXIT_TIMEOUT_MS / CAPTURE_POLL_MS + 1;
            let mut exited = false;
            for _ in 0..polls {
                if let Ok(Some(_)) = child.try_wait() {
                    exited = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(CAPTURE_POLL_MS));
            }
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let ((flushed, marker), mut tail) = flushed?;
        // tcpdump has exited: the file no longer grows, and each call reads a bounded amount.
        for _ in 0..PCAP_FINAL_READS_MAX {
            if tail.read_more()? {
                break;
            }
        }
        let mut pcap = tail.finish()?;
        pcap.datagrams.retain(|d| d.src != marker);
        let stderr = self.stderr_lines();
        Ok(Captured {
            file: self.file.clone(),
            pcap,
            flushed,
            marker,
            kernel_dropped: kernel_dropped(&stderr),
            stderr,
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.kill();
    }
}

/// tcpdump's closing "N packets dropped by kernel".
fn kernel_dropped(stderr: &[String]) -> Option<u64> {
    stderr.iter().find_map(|line| {
        let n = line.strip_suffix(" packets dropped by kernel")?;
        n.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::SystemTime;

    use super::*;

    // ---- synthetic frames ----

    fn udp(sp: u16, dp: u16, payload: usize) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend(sp.to_be_bytes());
        u.extend(dp.to_be_bytes());
        u.extend(((payload + 8) as u16).to_be_bytes());
        u.extend([0, 0]);
        u.extend(std::iter::repeat_n(0xAB, payload));
        u
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, frag: u16, body: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x45, 0];
        ip.extend(((20 + body.len()) as u16).to_be_bytes());
        ip.extend([0, 0]);
        ip.extend(frag.to_be_bytes());
        ip.extend([64, proto, 0, 0]);
        ip.extend(src);
        ip.extend(dst);
        ip.extend(body);
        ip
    }

    fn ipv4_udp(src: &str, dst: &str, payload: usize) -> Vec<u8> {
        let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let (IpAddr::V4(si), IpAddr::V4(di)) = (s.ip(), d.ip()) else {
            panic!("v4 only")
        };
        ipv4(
            si.octets(),
            di.octets(),
            UDP,
            0,
            &udp(s.port(), d.port(), payload),
        )
    }

    /// IPv6 with `ext` extension headers (next-header values) before UDP.
    fn ipv6_udp(src: &str, dst: &str, payload: usize, ext: &[u8], frag_offset: u16) -> Vec<u8> {
        let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let (IpAddr::V6(si), IpAddr::V6(di)) = (s.ip(), d.ip()) else {
            panic!("v6 only")
        };
        let mut chain = ext.to_vec();
        chain.push(UDP);
        let mut body = Vec::new();
        for w in chain.windows(2) {
            if w[0] == 44 {
                body.extend([w[1], 0]);
                body.extend((frag_offset << 3).to_be_bytes());
                body.extend([0, 0, 0, 1]);
            } else {
                // 8 bytes: next header, length 0, padding.
                body.extend([w[1], 0, 1, 4, 0, 0, 0, 0]);
            }
        }
        body.extend(udp(s.port(), d.port(), payload));
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend((body.len() as u16).to_be_bytes());
        ip.extend([chain[0], 64]);
        ip.extend(si.octets());
        ip.extend(di.octets());
        ip.extend(body);
        ip
    }

    fn ether(ethertype: u16, ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend(ethertype.to_be_bytes());
        f.extend(ip);
        f
    }

    fn vlan(ethertype: u16, ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend(ETHERTYPE_VLAN.to_be_bytes());
        f.extend([0, 5]);
        f.extend(ethertype.to_be_bytes());
        f.extend(ip);
        f
    }

    fn sll(ethertype: u16, ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f.extend(ethertype.to_be_bytes());
        f.extend(ip);
        f
    }

    fn sll2(ethertype: u16, ip: &[u8]) -> Vec<u8> {
        let mut f = ethertype.to_be_bytes().to_vec();
        f.extend([0u8; 18]);
        f.extend(ip);
        f
    }

    fn null(family: u32, big: bool, ip: &[u8]) -> Vec<u8> {
        let mut f = if big {
            family.to_be_bytes().to_vec()
        } else {
            family.to_le_bytes().to_vec()
        };
        f.extend(ip);
        f
    }

    /// A pcap file of `frames` (each with its seconds and fraction).
    fn pcap(big: bool, nanos: bool, link: u32, frames: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
        let w32 = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w16 = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut f = Vec::new();
        f.extend(w32(if nanos { MAGIC_NANOS } else { MAGIC_MICROS }));
        f.extend(w16(2));
        f.extend(w16(4));
        f.extend(w32(0));
        f.extend(w32(0));
        f.extend(w32(65_535));
        f.extend(w32(link));
        for (secs, frac, data) in frames {
            f.extend(w32(*secs));
            f.extend(w32(*frac));
            f.extend(w32(data.len() as u32));
            f.extend(w32(data.len() as u32));
            f.extend(data);
        }
        f
    }

    fn dgram(src: &str, dst: &str, len: u32, time: Duration) -> Datagram {
        Datagram {
            time,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            len,
        }
    }

    // ---- the parser ----

    #[test]
    fn every_link_layer_and_byte_order_reads_the_same_datagram() {
        let v4 = ipv4_udp("127.0.0.11:7000", "127.0.2.1:7001", 1200);
        let want4 = Packet::Udp {
            src: "127.0.0.11:7000".parse().unwrap(),
            dst: "127.0.2.1:7001".parse().unwrap(),
            len: 1200,
        };
        let v6 = ipv6_udp("[::1]:5000", "[fd00::2]:5001", 33, &[], 0);
        let want6 = Packet::Udp {
            src: "[::1]:5000".parse().unwrap(),
            dst: "[fd00::2]:5001".parse().unwrap(),
            len: 33,
        };
        let cases: Vec<(u16, Vec<u8>, Packet)> = vec![
            (link_type::ETHERNET, ether(ETHERTYPE_IPV4, &v4), want4),
            (link_type::ETHERNET, ether(ETHERTYPE_IPV6, &v6), want6),
            (link_type::ETHERNET, vlan(ETHERTYPE_IPV4, &v4), want4),
            (link_type::LINUX_SLL, sll(ETHERTYPE_IPV4, &v4), want4),
            (link_type::LINUX_SLL2, sll2(ETHERTYPE_IPV6, &v6), want6),
            (link_type::NULL, null(2, false, &v4), want4),
            (link_type::NULL, null(30, true, &v6), want6),
            (link_type::LOOP, null(2, true, &v4), want4),
            (link_type::LOOP, null(10, true, &v6), want6),
            (link_type::RAW, v4.clone(), want4),
            (link_type::IPV6, v6.clone(), want6),
            // Not UDP, not IP, fragments, cut headers.
            (
                link_type::ETHERNET,
                ether(
                    ETHERTYPE_IPV4,
                    &ipv4([127, 0, 0, 1], [127, 0, 0, 2], 6, 0, &[0; 20]),
                ),
                Packet::Other,
            ),
            (link_type::ETHERNET, ether(0x0806, &[0; 28]), Packet::Other),
            (
                link_type::ETHERNET,
                ether(
                    ETHERTYPE_IPV4,
                    &ipv4([127, 0, 0, 1], [127, 0, 0, 2], UDP, 185, &[0; 8]),
                ),
                Packet::Fragment,
            ),
            (
                link_type::ETHERNET,
                ether(ETHERTYPE_IPV4, &v4[..24]),
                Packet::Unreadable,
            ),
            (link_type::ETHERNET, vec![0; 10], Packet::Unreadable),
        ];
        for (i, (link, frame, want)) in cases.iter().enumerate() {
            assert_eq!(classify(*link, frame), *want, "case {i}");
        }
        // The first fragment of a large datagram carries the UDP header and the whole length.
        let first = ipv4(
            [127, 0, 0, 1],
            [127, 0, 0, 2],
            UDP,
            0x2000,
            &udp(1, 2, 3000)[..1000],
        );
        assert!(matches!(
            classify(link_type::RAW, &first),
            Packet::Udp { len: 3000, .. }
        ));
    }

    #[test]
    fn ipv6_extension_headers_are_followed_and_later_fragments_counted() {
        let want = |len| Packet::Udp {
            src: "[::1]:1".parse().unwrap(),
            dst: "[::1]:2".parse().unwrap(),
            len,
        };
        let chain = ipv6_udp("[::1]:1", "[::1]:2", 10, &[0, 60, 44], 0);
        assert_eq!(classify(link_type::IPV6, &chain), want(10));
        let later = ipv6_udp("[::1]:1", "[::1]:2", 10, &[44], 1);
        assert_eq!(classify(link_type::IPV6, &later), Packet::Fragment);
        // More extension headers than followed.
        let long = vec![60u8; IPV6_EXT_HEADERS_MAX + 1];
        let deep = ipv6_udp("[::1]:1", "[::1]:2", 10, &long, 0);
        assert_eq!(classify(link_type::IPV6, &deep), Packet::Unreadable);
    }

    #[test]
    fn files_in_either_byte_order_and_precision_read_alike() {
        let frames = vec![
            (
                100,
                250_000,
                ether(ETHERTYPE_IPV4, &ipv4_udp("127.0.0.11:1", "127.0.2.1:2", 5)),
            ),
            (
                101,
                0,
                ether(
                    ETHERTYPE_IPV4,
                    &ipv4([127, 0, 0, 1], [127, 0, 0, 2], 6, 0, &[0; 20]),
                ),
            ),
        ];
        for big in [false, true] {
            let p = parse_pcap(&pcap(big, false, 1, &frames)).unwrap();
            assert_eq!(
                p.datagrams,
                vec![dgram(
                    "127.0.0.11:1",
                    "127.0.2.1:2",
                    5,
                    Duration::from_micros(100_250_000)
                )]
            );
            assert_eq!((p.records, p.other, p.truncated_tail), (2, 1, false));
            assert_eq!(p.header.big_endian, big);
            let nanos = parse_pcap(&pcap(big, true, 1, &frames)).unwrap();
            assert_eq!(
                nanos.datagrams[0].time,
                Duration::from_secs(100) + Duration::from_nanos(250_000)
            );
        }
        // The link type's upper bits (FCS information) are ignored.
        let fcs = parse_pcap(&pcap(false, false, 1 | 0x1400_0000, &frames)).unwrap();
        assert_eq!(fcs.header.link_type, link_type::ETHERNET);
    }

    #[test]
    fn a_file_cut_inside_a_record_ends_at_the_last_whole_one() {
        let frame = ether(ETHERTYPE_IPV4, &ipv4_udp("127.0.0.11:1", "127.0.2.1:2", 5));
        let whole = pcap(false, false, 1, &[(1, 0, frame.clone()), (2, 0, frame)]);
        for cut in [
            whole.len() - 1,
            whole.len() - 20,
            whole.len() - frame_len_plus_header(),
        ] {
            let p = parse_pcap(&whole[..cut]).unwrap();
            assert_eq!(p.datagrams.len(), 1, "cut at {cut}");
            assert!(p.truncated_tail || cut == whole.len() - frame_len_plus_header());
        }
        assert_eq!(parse_pcap(&whole).unwrap().datagrams.len(), 2);
    }

    fn frame_len_plus_header() -> usize {
        ether(ETHERTYPE_IPV4, &ipv4_udp("127.0.0.11:1", "127.0.2.1:2", 5)).len()
            + RECORD_HEADER_BYTES
    }

    #[test]
    fn a_growing_file_read_in_pieces_reads_as_a_whole() {
        let frames: Vec<(u32, u32, Vec<u8>)> = (0..200u16)
            .map(|i| {
                let src = format!("127.0.0.11:{}", 1000 + i);
                (
                    u32::from(i),
                    0,
                    ether(
                        ETHERTYPE_IPV4,
                        &ipv4_udp(&src, "127.0.2.1:2", usize::from(i)),
                    ),
                )
            })
            .collect();
        let whole = pcap(false, false, 1, &frames);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("growing.pcap");
        let mut file = std::fs::File::create(&path).unwrap();
        let mut tail = PcapTail::open(&path).unwrap();
        // Appended in uneven pieces that cut the header and records anywhere.
        let mut at = 0;
        for piece in [3usize, 30, 1, 500, 77, 4096].iter().cycle().take(1_000) {
            if at >= whole.len() {
                break;
            }
            let end = (at + piece).min(whole.len());
            file.write_all(&whole[at..end]).unwrap();
            at = end;
            assert!(tail.read_more().unwrap(), "a small file is read to its end");
        }
        assert_eq!(at, whole.len());
        assert_eq!(tail.finish().unwrap(), parse_pcap(&whole).unwrap());
        // A file that never got its header is an error, not an empty capture.
        let empty = dir.path().join("empty.pcap");
        std::fs::write(&empty, [0u8; 10]).unwrap();
        let mut tail = PcapTail::open(&empty).unwrap();
        tail.read_more().unwrap();
        assert!(matches!(tail.finish(), Err(CaptureError::Pcap { .. })));
    }

    #[test]
    fn what_is_not_a_readable_pcap_file_is_refused() {
        assert_eq!(parse_pcap(&[0; 10]), Err(PcapError::TooShort(10)));
        let mut ng = pcap(false, false, 1, &[]);
        ng[..4].copy_from_slice(&0x0A0D_0D0Au32.to_le_bytes());
        assert_eq!(parse_pcap(&ng), Err(PcapError::BadMagic(0x0A0D_0D0A)));
        assert_eq!(
            parse_pcap(&pcap(false, false, 147, &[])),
            Err(PcapError::UnsupportedLinkType(147))
        );
        let mut huge = pcap(false, false, 1, &[(1, 0, vec![0; 4])]);
        let at = PCAP_HEADER_BYTES + 8;
        huge[at..at + 4].copy_from_slice(&(PCAP_RECORD_BYTES_MAX + 1).to_le_bytes());
        assert!(matches!(
            parse_pcap(&huge),
            Err(PcapError::RecordTooLarge { .. })
        ));
        // At the bound it is read (and here cut short: the tail is missing).
        huge[at..at + 4].copy_from_slice(&PCAP_RECORD_BYTES_MAX.to_le_bytes());
        assert!(parse_pcap(&huge).unwrap().truncated_tail);
    }

    #[test]
    fn tcpdumps_drop_count_is_read() {
        let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            kernel_dropped(&lines(&[
                "tcpdump: listening on lo, link-type EN10MB (Ethernet), snapshot length 128 bytes",
                "45 packets captured",
                "90 packets received by filter",
                "3 packets dropped by kernel",
            ])),
            Some(3)
        );
        assert_eq!(kernel_dropped(&lines(&["tcpdump: listening on lo"])), None);
    }

    // ---- who sent what where ----

    fn allowance(name: &str, addr: &str, allowed: &[&str]) -> NodeAllowance {
        NodeAllowance {
            name: name.into(),
            addr: addr.parse().unwrap(),
            allowed: allowed.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn fleet() -> Vec<NodeAllowance> {
        vec![
            allowance("node-1", "127.0.0.11:7400", &["127.0.2.1:40001"]),
            allowance(
                "node-2",
                "127.0.0.12:7400",
                &["127.0.2.2:40002", "127.0.2.3:40003"],
            ),
            // Two nodes on one IP: only their exact addresses are theirs.
            allowance("node-3", "127.0.0.13:7400", &["127.0.2.4:40004"]),
            allowance("node-4", "127.0.0.13:7401", &["127.0.2.5:40005"]),
        ]
    }

    #[test]
    fn datagrams_sent_anywhere_but_the_allowed_sides_are_found() {
        let t = Duration::ZERO;
        let cases: Vec<(Datagram, Option<&str>)> = vec![
            (dgram("127.0.0.11:7400", "127.0.2.1:40001", 10, t), None),
            (dgram("127.0.0.12:7400", "127.0.2.3:40003", 10, t), None),
            // To another node's side, to a resolver, to a real node address.
            (
                dgram("127.0.0.11:7400", "127.0.2.2:40002", 10, t),
                Some("node-1"),
            ),
            (
                dgram("127.0.0.12:7400", "127.0.0.53:53", 10, t),
                Some("node-2"),
            ),
            (
                dgram("127.0.0.12:7400", "127.0.0.11:7400", 10, t),
                Some("node-2"),
            ),
            // From another port of a node's own IP: still the node's.
            (
                dgram("127.0.0.11:53211", "127.0.0.53:53", 10, t),
                Some("node-1"),
            ),
            // A shared IP: exact addresses only.
            (
                dgram("127.0.0.13:7401", "127.0.2.4:40004", 10, t),
                Some("node-4"),
            ),
            (dgram("127.0.0.13:7400", "127.0.2.4:40004", 10, t), None),
            (dgram("127.0.0.13:9999", "127.0.0.53:53", 10, t), None),
            // The proxies and strangers are not nodes.
            (dgram("127.0.2.1:40001", "127.0.0.11:7400", 10, t), None),
            (dgram("127.0.0.99:1", "127.0.0.53:53", 10, t), None),
            // An IPv4-mapped destination is its IPv4 address.
            (
                dgram("127.0.0.11:7400", "[::ffff:127.0.2.1]:40001", 10, t),
                None,
            ),
        ];
        let nodes = fleet();
        for (d, want) in &cases {
            let found = sent_elsewhere(std::slice::from_ref(d), &nodes);
            let got = found.first().map(|o| o.node.as_str());
            assert_eq!(got, *want, "{d:?}");
        }
        let all: Vec<Datagram> = cases.iter().map(|(d, _)| *d).collect();
        let offenses = sent_elsewhere(&all, &nodes);
        assert_eq!(offenses.len(), 5);
        assert_eq!(offenses[0].datagram, all[2], "in capture order");
        assert_eq!(sent_by_nodes(&all, &nodes), 9);
    }

    fn captured(datagrams: Vec<Datagram>, flushed: bool, kernel: Option<u64>) -> Captured {
        Captured {
            file: PathBuf::from("/tmp/x.pcap"),
            pcap: Pcap {
                header: PcapHeader {
                    big_endian: false,
                    nanos: false,
                    snaplen: CAPTURE_SNAPLEN_BYTES,
                    link_type: link_type::ETHERNET,
                },
                datagrams,
                records: 0,
                other: 0,
                fragments: 0,
                unreadable: 0,
                truncated_tail: false,
            },
            flushed,
            marker: "127.0.0.1:9".parse().unwrap(),
            kernel_dropped: kernel,
            stderr: Vec::new(),
        }
    }

    #[test]
    fn the_check_passes_only_on_a_complete_capture_of_real_traffic() {
        let nodes = fleet();
        let t = Duration::ZERO;
        let good = dgram("127.0.0.11:7400", "127.0.2.1:40001", 10, t);
        let bad = dgram("127.0.0.12:7400", "127.0.0.53:53", 10, t);
        let verdict = |c: Result<Captured, CaptureError>| check_packets_only_to_peers(&c, &nodes);
        let cases = [
            (Ok(captured(vec![good], true, Some(0))), Verdict::Pass),
            (Ok(captured(vec![good, bad], true, Some(0))), Verdict::Fail),
            // An incomplete capture convicts but never acquits.
            (Ok(captured(vec![good, bad], false, None)), Verdict::Fail),
            (Ok(captured(vec![good], false, Some(0))), Verdict::Unknown),
            (Ok(captured(vec![good], true, Some(4))), Verdict::Unknown),
            (Ok(captured(vec![good], true, None)), Verdict::Unknown),
            // Nothing of the fleet seen proves nothing.
            (Ok(captured(vec![], true, Some(0))), Verdict::Unknown),
            (Err(unavailable("no tcpdump")), Verdict::Skipped),
            (
                Err(CaptureError::Pcap {
                    path: "/x".into(),
                    source: PcapError::TooShort(0),
                }),
                Verdict::Unknown,
            ),
        ];
        for (i, (c, want)) in cases.into_iter().enumerate() {
            let r = verdict(c);
            assert_eq!(r.verdict, want, "case {i}: {}", r.detail);
            assert_eq!(r.name, check::PACKETS_ONLY_TO_PEERS);
            assert_eq!(r.invariants, vec!["INV-27".to_owned()]);
        }
        let fail = verdict(Ok(captured(vec![good, bad, bad], true, Some(0))));
        assert_eq!((fail.observed, fail.out_of), (Some(2), Some(3)));
        assert!(fail.detail.contains("node-2") && fail.detail.contains("127.0.0.53:53"));
        let skipped = verdict(Err(unavailable("no tcpdump")));
        assert!(skipped.detail.contains("no tcpdump"));
    }

    // ---- a real capture ----

    /// Set to require a capture: the real-capture test then fails instead of skipping.
    const REQUIRE_CAPTURE_ENV: &str = "EDGE_FI_REQUIRE_CAPTURE";

    /// Says loudly, past the test harness's output capture, that a test skipped its point.
    fn skipped(test: &str, why: &str) {
        let mut err = std::io::stderr();
        // Nothing to do if even stderr is gone.
        let _ = writeln!(
            err,
            "\nSKIPPED {test}: {why} (set {REQUIRE_CAPTURE_ENV}=1 to fail instead)\n"
        );
    }

    #[test]
    fn a_real_capture_reads_back_what_was_sent_and_finds_what_went_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let before = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        let capture = match Capture::start(&dir.path().join("lo.pcap")) {
            Ok(c) => c,
            Err(CaptureError::Unavailable { reason }) => {
                if std::env::var_os(REQUIRE_CAPTURE_ENV).is_some() {
                    panic!("capture required but unavailable: {reason}");
                }
                skipped("a_real_capture_reads_back_what_was_sent", &reason);
                return;
            }
            Err(e) => panic!("{e}"),
        };
        // A "node", its "side", and one address it may not use. The capture sees all of `lo`,
        // and a datagram from a node's IP is the node's: the addresses are this process's own,
        // so that another run of this test at the same time is not taken for it.
        let pid = std::process::id().to_be_bytes();
        let addr = |host: u8| SocketAddr::from(([127, 100 + host, pid[2], pid[3]], 0));
        let node = UdpSocket::bind(addr(1)).unwrap();
        let side = UdpSocket::bind(addr(2)).unwrap();
        let elsewhere = UdpSocket::bind(addr(3)).unwrap();
        let (n, s, e) = (
            node.local_addr().unwrap(),
            side.local_addr().unwrap(),
            elsewhere.local_addr().unwrap(),
        );
        let lens = [0usize, 1, 100, 1400, 9000];
        for len in lens {
            node.send_to(&vec![7u8; len], s).unwrap();
        }
        node.send_to(b"phone home", e).unwrap();
        side.send_to(b"answer", n).unwrap();
        // IPv6 where the machine has it.
        let v6 = UdpSocket::bind("[::1]:0").ok().and_then(|a| {
            let b = UdpSocket::bind("[::1]:0").ok()?;
            let to = b.local_addr().ok()?;
            a.send_to(&[1u8; 321], to).ok()?;
            Some((a.local_addr().ok()?, to))
        });
        let got = capture.stop().unwrap();
        let after = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        assert!(got.flushed, "the marker reached the file");
        assert!(got.kernel_dropped.is_some(), "{:?}", got.stderr);
        let ours: Vec<&Datagram> = got
            .pcap
            .datagrams
            .iter()
            .filter(|d| [n, s, e].contains(&d.src))
            .collect();
        let mut seen: Vec<(SocketAddr, SocketAddr, u32)> =
            ours.iter().map(|d| (d.src, d.dst, d.len)).collect();
        seen.sort();
        let mut want: Vec<(SocketAddr, SocketAddr, u32)> =
            lens.iter().map(|&l| (n, s, l as u32)).collect();
        want.push((n, e, 10));
        want.push((s, n, 6));
        want.sort();
        assert_eq!(seen, want);
        for d in &ours {
            assert!(
                d.time + Duration::from_secs(5) >= before
                    && d.time <= after + Duration::from_secs(5),
                "{d:?} not within {before:?}..{after:?}"
            );
        }
        if let Some((from, to)) = v6 {
            assert!(
                got.pcap
                    .datagrams
                    .iter()
                    .any(|d| d.src == from && d.dst == to && d.len == 321),
                "the IPv6 datagram"
            );
        } else {
            skipped("the IPv6 part of a_real_capture…", "no IPv6 on loopback");
        }
        assert!(
            !got.pcap.datagrams.iter().any(|d| d.src == got.marker),
            "the flush marker is not reported"
        );
        let nodes = vec![NodeAllowance {
            name: "node-x".into(),
            addr: n,
            allowed: BTreeSet::from([s]),
        }];
        let offenses = sent_elsewhere(&got.pcap.datagrams, &nodes);
        assert_eq!(offenses.len(), 1);
        assert_eq!(
            (offenses[0].datagram.dst, offenses[0].datagram.len),
            (e, 10)
        );
        let check = check_packets_only_to_peers(&Ok(got), &nodes);
        assert_eq!(check.verdict, Verdict::Fail);
    }

    #[test]
    fn a_machine_that_cannot_capture_says_why() {
        let file = tempfile::tempdir().unwrap();
        let file = file.path().join("x.pcap");
        let reason = |r: Result<Capture, CaptureError>| match r {
            Err(CaptureError::Unavailable { reason }) => reason,
            other => panic!("expected unavailable, got {other:?}"),
        };
        // No tcpdump anywhere.
        assert_eq!(
            find_program(TCPDUMP, std::ffi::OsStr::new("/nonexistent"), &[]),
            None
        );
        let r = reason(Capture::start_with(None, CAPTURE_INTERFACE, &file));
        assert!(r.contains("not found"), "{r}");
        // One that cannot run.
        let r = reason(Capture::start_with(
            Some(Path::new("/nonexistent/tcpdump")),
            CAPTURE_INTERFACE,
            &file,
        ));
        assert!(r.contains("cannot run"), "{r}");
        // The real one, refusing: its own words are the reason.
        let path = std::env::var_os("PATH").unwrap_or_default();
        match find_program(TCPDUMP, &path, &TCPDUMP_DIRS) {
            Some(tcpdump) => {
                let r = reason(Capture::start_with(
                    Some(&tcpdump),
                    "edge-fi-no-such-if",
                    &file,
                ));
                assert!(
                    r.contains("exited") && r.contains("edge-fi-no-such-if"),
                    "{r}"
                );
            }
            None => skipped(
                "the refusing-tcpdump part of a_machine_that_cannot_capture",
                "no tcpdump",
            ),
        }
        let r = check_packets_only_to_peers(&Err(unavailable("no tcpdump")), &fleet());
        assert_eq!(r.verdict, Verdict::Skipped);
        assert!(r.detail.contains("no tcpdump"), "{}", r.detail);
    }
}
