//! Every bound and default of the network layer, in one place, unit last.
//!
//! Each `*_DEFAULT` is the default of the [`NetConfig`](crate::NetConfig) field of the same name
//! (lower case, without `_DEFAULT`); the relations between them are checked at compile time below
//! and again, for a configured value, by [`NetConfig::validate`](crate::NetConfig::validate).

use store::limits::SIGNED_MANIFEST_BYTES_MAX;

/// The ALPN protocol id, which carries the wire protocol version. A peer offering anything else
/// fails the TLS handshake (`no_application_protocol`).
pub const ALPN: &[u8] = b"edge/1";

/// Longest node id, in bytes (one DNS label).
pub const NODE_ID_BYTES_MAX: usize = 63;

/// Bytes of the length prefix of every frame (u32 little-endian).
pub const FRAME_PREFIX_BYTES: usize = 4;
/// Largest frame body accepted by default, in bytes. Checked against the length prefix before
/// anything is allocated for the body.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Largest number of ids in one catch-up page.
pub const CATCHUP_PAGE_IDS_MAX: usize = 1024;
/// Longest free-text detail carried by a `Reject`, in bytes (longer details are cut).
pub const REJECT_DETAIL_BYTES_MAX: usize = 256;

/// Payload buffers moved between the network task and the disk thread.
pub const PAYLOAD_CHUNK_BYTES: usize = store::limits::STREAM_BUF_BYTES;
/// Depth of the bounded channel between a transfer's network task and its disk thread, in
/// chunks: at most this many chunks (plus one in each hand) are in memory per transfer.
pub const PAYLOAD_QUEUE_CHUNKS: usize = 16;

/// A receiver fsyncs and records a resumable checkpoint after this many payload bytes.
pub const CHECKPOINT_BYTES_DEFAULT: u64 = 64 << 20;

/// A QUIC + TLS handshake (either direction) that takes longer fails.
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// A connection with no packets for this long is closed (QUIC idle timeout).
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Keep-alive packets are sent this often so an idle connection stays up.
pub const KEEP_ALIVE_INTERVAL_MS_DEFAULT: u64 = 10_000;
/// A transfer with no payload progress (in either direction) for this long fails as `TimedOut`
/// (INV-18).
pub const STALL_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Longest wait for a control frame (an answer to an offer, a first frame on a new stream, the
/// final `Ack` after the payload, which includes the receiver's fsync and commit).
pub const RESPONSE_TIMEOUT_MS_DEFAULT: u64 = 60_000;

/// Streams one peer may have open at once on a connection (QUIC `max_streams`, bidirectional).
pub const STREAMS_PER_PEER_MAX_DEFAULT: u32 = 64;
/// Established connections kept per peer; more are closed at once.
pub const CONNECTIONS_PER_PEER_MAX_DEFAULT: usize = 2;
/// Handshakes from not yet authenticated clients in flight at once; more are refused.
pub const HANDSHAKES_UNAUTHENTICATED_MAX_DEFAULT: usize = 64;

/// Catch-up runs on every connect and then this often per connection.
pub const CATCHUP_INTERVAL_MS_DEFAULT: u64 = 60_000;
/// Pulls one catch-up round runs at once.
pub const CATCHUP_PULLS_CONCURRENT_DEFAULT: usize = 8;
/// Pages one catch-up round reads at most (bounds a round at this × [`CATCHUP_PAGE_IDS_MAX`]
/// ids).
pub const CATCHUP_PAGES_MAX: usize = 16_384;
/// Ids remembered as refused by this node's store during catch-up (not pulled again while this
/// process runs); the set is cleared when full.
pub const CATCHUP_SKIP_IDS_MAX: usize = 65_536;

/// First re-dial delay after a connection attempt fails.
pub const REDIAL_BACKOFF_BASE_MS_DEFAULT: u64 = 500;
/// Longest re-dial delay.
pub const REDIAL_BACKOFF_MAX_MS_DEFAULT: u64 = 30_000;

// Tuning, measured with `cargo bench -p net --bench hop` on the 2-core machine of
// MEASUREMENTS.md (both nodes in one process, medians of noisy runs): with 32/64/64 MiB windows
// one 1 GiB hop ran at ~190-300 MiB/s store-to-durable-ack (raw quinn in the same runs
// ~260-320); with quinn's default windows ~188-245 MiB/s, up to ~20% slower. The windows are
// what a node's memory is made of: with 32/64/64 MiB real daemons peaked at 66-85 MiB (VmHWM)
// relaying 256 MiB; with the 8/16/16 MiB chosen here they peak at 33-37 MiB and relayed the same
// segment no slower in the same test (INV-20: under 64 MiB per node). Raise them in `[net]` for
// long fat links. 8 MiB UDP buffers against the 208 KiB default and 1 vs 2 vs 4 runtime workers
// made no difference larger than the run-to-run noise (±30%) on loopback.

/// QUIC per-stream receive window (8 MiB).
pub const STREAM_RECEIVE_WINDOW_BYTES_DEFAULT: u64 = 8 << 20;
/// QUIC per-connection receive window (16 MiB).
pub const RECEIVE_WINDOW_BYTES_DEFAULT: u64 = 16 << 20;
/// QUIC per-connection send window (16 MiB).
pub const SEND_WINDOW_BYTES_DEFAULT: u64 = 16 << 20;
/// UDP socket receive and send buffers requested (8 MiB; the kernel caps at `rmem_max`).
pub const UDP_BUFFER_BYTES_DEFAULT: usize = 8 << 20;

// Relations between the bounds.
const _: () = assert!(SIGNED_MANIFEST_BYTES_MAX + 16 <= FRAME_BYTES_MAX_DEFAULT);
// A full page: the ids (32 raw bytes each in postcard), the length varint, the tag and flags.
const _: () = assert!(CATCHUP_PAGE_IDS_MAX * 32 + 16 <= FRAME_BYTES_MAX_DEFAULT);
const _: () = assert!(REJECT_DETAIL_BYTES_MAX + 16 <= FRAME_BYTES_MAX_DEFAULT);
const _: () = assert!(FRAME_BYTES_MAX_DEFAULT <= u32::MAX as usize);
const _: () = assert!(CHECKPOINT_BYTES_DEFAULT >= PAYLOAD_CHUNK_BYTES as u64);
const _: () = assert!(KEEP_ALIVE_INTERVAL_MS_DEFAULT < IDLE_TIMEOUT_MS_DEFAULT);
const _: () = assert!(REDIAL_BACKOFF_BASE_MS_DEFAULT <= REDIAL_BACKOFF_MAX_MS_DEFAULT);
const _: () = assert!(STREAM_RECEIVE_WINDOW_BYTES_DEFAULT <= RECEIVE_WINDOW_BYTES_DEFAULT);
