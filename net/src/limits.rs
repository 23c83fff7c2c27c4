//! Every bound and default of the network layer, in one place, unit last.
//!
//! Each `*_DEFAULT` is the default of the [`NetConfig`](crate::NetConfig) field of the same name
//! (lower case, without `_DEFAULT`); the relations between them are checked at compile time below
//! and again, for a configured value, by [`NetConfig::validate`](crate::NetConfig::validate).

use store::limits::SIGNED_MANIFEST_BYTES_MAX;

/// The ALPN protocol id, which carries the wire protocol version. A peer offering anything else
/// fails the TLS handshake (`no_application_protocol`).
pub const ALPN: &[u8] = b"edge/2";

/// Longest node id, in bytes (one DNS label; defined with the node id in `base`).
pub use base::NODE_ID_BYTES_MAX;

/// Bytes of the length prefix of every frame (u32 little-endian).
pub const FRAME_PREFIX_BYTES: usize = 4;
/// Largest frame body accepted by default, in bytes. Checked against the length prefix before
/// anything is allocated for the body.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Largest number of ids in one catch-up page.
pub const CATCHUP_PAGE_IDS_MAX: usize = 1024;
/// Longest free-text detail carried by a `Reject`, in bytes (longer details are cut).
pub const REJECT_DETAIL_BYTES_MAX: usize = 256;

/// Payload buffers moved between the network task and the disk thread: one direct-I/O block of
/// the store, so each hand-over is one disk request (64 KiB chunks spent a fifth of a hop's CPU
/// on hand-overs and thread wake-ups).
pub const PAYLOAD_CHUNK_BYTES: usize = store::limits::DIRECT_IO_BLOCK_BYTES;
/// Depth of the bounded channel between a transfer's network task and its disk thread, in
/// chunks: at most this many chunks (plus one in each hand) are in memory per transfer.
pub const PAYLOAD_QUEUE_CHUNKS: usize = 4;

/// Default of `NetConfig::large_sends_per_peer_max`: sends of large segments (payload over
/// [`LARGE_SEND_PAYLOAD_BYTES`]) to one peer at once. A large send holds up to
/// `PAYLOAD_QUEUE_CHUNKS` + 1 full chunks (1.25 MiB); a small one holds its payload once. So the
/// relay may keep many small segments in flight to a peer (a round trip and a commit per batch
/// of them, not per segment) while large ones stay few.
pub const LARGE_SENDS_PER_PEER_MAX_DEFAULT: usize = 4;
/// A segment whose payload is larger than one chunk is a large send.
pub const LARGE_SEND_PAYLOAD_BYTES: u64 = PAYLOAD_CHUNK_BYTES as u64;

/// Segments a node forwards to its peers while still receiving them (cut-through), at once;
/// beyond it a segment waits for its ordinary relay once stored.
pub const CUT_THROUGH_FORWARDS_MAX: usize = 16;

/// A receiver fsyncs and records a resumable checkpoint after this many payload bytes.
pub const CHECKPOINT_BYTES_DEFAULT: u64 = 64 << 20;

/// A QUIC + TLS handshake this node dials that takes longer fails.
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// An inbound handshake (the peer is not authenticated yet) that takes longer is dropped: a few
/// round trips of a slow link, so a client that never finishes holds its slot only this long.
pub const HANDSHAKE_UNAUTHENTICATED_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// A connection with no packets for this long is closed (QUIC idle timeout).
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Keep-alive packets are sent this often so an idle connection stays up.
pub const KEEP_ALIVE_INTERVAL_MS_DEFAULT: u64 = 10_000;
/// The window of the minimum-rate rule of a transfer, in both directions (INV-18): a transfer
/// whose payload moved less than `stall_rate_min_bytes_per_s` × this window during one full
/// window (or nothing at all) fails as `TimedOut`.
pub const STALL_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Slowest payload rate a transfer may keep up, per direction, judged over each full
/// `stall_timeout_ms` window (7.5 KiB per 30 s window by default); 0 keeps only the "no progress
/// at all" rule. 256 B/s is far below any link this fleet runs on (a 9.6 kbit/s radio link
/// carries ~1.2 KB/s) and far above what a peer trickling bytes to hold a transfer open sends.
pub const STALL_RATE_MIN_BYTES_PER_S_DEFAULT: u64 = 256;
/// A segment being received from one peer more slowly than this over its last full
/// `stall_timeout_ms` window is handed to another peer that offers it (the first one is
/// preempted, its checkpoint kept, and the newcomer resumes from it); 0 disables takeovers.
pub const TAKEOVER_BELOW_RATE_BYTES_PER_S_DEFAULT: u64 = 64 * 1024;
/// Longest wait for a control frame (an answer to an offer, a first frame on a new stream, the
/// final `Ack` after the payload, which includes the receiver's fsync and commit).
pub const RESPONSE_TIMEOUT_MS_DEFAULT: u64 = 60_000;

/// Longest a peer taking a segment over waits for the preempted receive to checkpoint what it
/// got and let go (a fsync and a commit).
pub const TAKEOVER_RELEASE_WAIT_MS: u64 = 10_000;
/// After the receiver stopped a stream, how long the sender waits for the frame that says why
/// (`Reject`, or `Busy` after a takeover).
pub const STOPPED_REASON_WAIT_MS: u64 = 500;

/// Streams one peer may have open at once on a connection (QUIC `max_streams`, bidirectional).
pub const STREAMS_PER_PEER_MAX_DEFAULT: u32 = 64;
/// Established connections kept per peer; more are closed at once.
pub const CONNECTIONS_PER_PEER_MAX_DEFAULT: usize = 2;
/// Handshakes from not yet authenticated clients at configured peers' addresses in flight at
/// once; more are refused. Counted only after the client proved its address (QUIC Retry).
pub const HANDSHAKES_UNAUTHENTICATED_MAX_DEFAULT: usize = 64;
/// Handshakes in flight at once from one source address (a configured `ip:port`; for a
/// stranger, its IP); more are refused. A peer needs at most `connections_per_peer_max`.
pub const HANDSHAKES_PER_ADDR_MAX_DEFAULT: usize = 4;
/// Handshakes in flight at once from addresses that are no configured peer's, when
/// `accept_unknown_addresses` lets them in: a budget of their own, so strangers never take the
/// configured peers' slots.
pub const HANDSHAKES_UNKNOWN_ADDRESSES_MAX_DEFAULT: usize = 16;
/// Addresses that are no configured peer's which the node may answer at once (handshakes in
/// flight and connections of peers that came from an unexpected address), when
/// `accept_unknown_addresses` is set. Beyond it, new strangers are not answered.
pub const ANSWERED_ADDRESSES_MAX: usize = 4096;
/// Lifetime of the token of a QUIC Retry: a client must come back with it within this long.
pub const RETRY_TOKEN_LIFETIME_MS: u64 = 15_000;
/// Longest a shutting-down node waits for its connections' closes to drain once sent: long
/// enough for an established connection's draining period on a LAN (three probe timeouts),
/// short of a half-open dial's (about 3 s, its path unmeasured). Also how long the address of
/// a peer removed by a reload is still heard, for its close to go out.
pub const CLOSE_DRAIN_MAX_MS: u64 = 250;
/// How often a shutting-down node looks whether its receives have kept their checkpoints.
pub const SHUTDOWN_POLL_MS: u64 = 10;
/// A connection retired by the duplicate rule is closed once no stream has been in flight on it
/// for this many round trips (streams the peer opened before it saw the kept connection arrive
/// within about one)...
pub const RETIRE_GRACE_RTTS: u32 = 4;
/// ...and at least this long.
pub const RETIRE_GRACE_MIN_MS: u64 = 100;
/// An inbound connection whose handshake reached the node more than this many round trips of
/// the current connection after that one was established did not cross it: the peer dialled
/// although it had it, so it lost it (see [`crate::supervision`])...
pub const CROSSING_RTTS: u32 = 8;
/// ...and at least this long after.
pub const CROSSING_MIN_MS: u64 = 1_000;
/// Receive batches from strangers dropped in one poll of the socket before the endpoint task
/// yields (a flood of dropped datagrams cannot monopolise it).
pub const DROPPED_BATCHES_PER_POLL_MAX: usize = 16;

/// Catch-up runs on every connect and then this often per connection.
pub const CATCHUP_INTERVAL_MS_DEFAULT: u64 = 60_000;
/// Pulls one catch-up round runs at once.
pub const CATCHUP_PULLS_CONCURRENT_DEFAULT: usize = 8;
/// Pages one catch-up round reads at most (a round sees at most this × [`CATCHUP_PAGE_IDS_MAX`]
/// ids; the next round goes on after the last id seen).
pub const CATCHUP_PAGES_PER_ROUND_MAX_DEFAULT: usize = 64;
/// Pulls one catch-up round starts at most.
pub const CATCHUP_PULLS_PER_ROUND_MAX_DEFAULT: usize = 1024;
/// Pulls that store nothing (not held, refused, failed) one peer can make this node run per
/// minute, across rounds and reconnections: a token bucket of this size, refilled at this rate;
/// a pull that stores a segment gives its token back.
pub const CATCHUP_WASTED_PULLS_PER_PEER_PER_MIN_DEFAULT: u64 = 256;
/// Delay before the next round when a round was cut by its pull or page bound while it stored
/// more than it wasted (a node that was away long converges quickly), and the least gap
/// between two rounds with one peer when a quarantine asks for a round.
pub const CATCHUP_FOLLOWUP_MS_DEFAULT: u64 = 1_000;
/// Ids remembered as refused by this node's store during catch-up (not pulled again while this
/// process runs); the set is cleared when full.
pub const CATCHUP_SKIP_IDS_MAX: usize = 65_536;

/// Receipt gossip runs on every connect and then this often per connection (`[fleet]
/// gossip_interval_ms`); a round whose digests agree costs one small exchange. A receipt made
/// on one node reaches a node `d` hops away within about `d` × this.
pub const RECEIPT_INTERVAL_MS_DEFAULT: u64 = 2_000;
/// Pages of receipts one gossip round reads at most (`[fleet] gossip_pages_per_round_max`):
/// with [`RECEIPT_PAGE_MAX`], 16,384 receipts and at most this × `frame_bytes_max` bytes per
/// round; the next round goes on where it stopped.
pub const RECEIPT_PAGES_PER_ROUND_MAX_DEFAULT: usize = 64;
/// Node heads in one `ReceiptHeads` page.
pub const RECEIPT_HEADS_PAGE_MAX: usize = 256;
/// Receipts in one `ReceiptPage` (fewer when `frame_bytes_max` would be passed).
pub const RECEIPT_PAGE_MAX: usize = 256;
/// Certificates in one `ReceiptPage`, and hashes of held ones in a `ReceiptPageRequest`.
pub const RECEIPT_PAGE_CERTS_MAX: usize = crate::receipts::book::CERTS_PER_NODE_MAX;
/// A node makes a liveness receipt when it has made none for this long (`[fleet]
/// alive_interval_ms`), so that the fleet can tell a quiet node from a silent one.
pub const ALIVE_INTERVAL_MS_DEFAULT: u64 = 60_000;
/// How often a node compares its store with its own receipts when the store changed.
pub const RECEIPT_RECONCILE_MS: u64 = 200;

/// First re-dial delay after a connection attempt fails.
pub const REDIAL_BACKOFF_BASE_MS_DEFAULT: u64 = 500;
/// Longest re-dial delay.
pub const REDIAL_BACKOFF_MAX_MS_DEFAULT: u64 = 30_000;

/// Warnings a remote party can trigger that are logged per (peer or address, reason) and
/// window (see [`crate::logcap`]).
pub const LOG_WARNINGS_PER_WINDOW_DEFAULT: u32 = crate::logcap::LOG_WARNINGS_PER_WINDOW;
/// The rate-limiting window of those warnings.
pub const LOG_WINDOW_MS_DEFAULT: u64 = crate::logcap::LOG_WINDOW_MS;

// Tuning, measured with `cargo bench -p net --bench hop` on the 2-core machine of
// MEASUREMENTS.md (both nodes in one process, medians of noisy runs): with 32/64/64 MiB windows
// one 1 GiB hop ran at ~190-300 MiB/s store-to-durable-ack (raw quinn in the same runs
// ~260-320); with quinn's default windows ~188-245 MiB/s, up to ~20% slower. The windows are
// what a node's memory is made of: with 32/64/64 MiB real daemons peaked at 66-85 MiB (VmHWM)
// relaying 256 MiB; with 8/16/16 MiB they peak at 33-37 MiB and relayed the same segment no
// slower in the same test (INV-20: under 64 MiB per node). With the 4/8/4 MiB chosen here, in
// `make bench-peers` (medians of 2, one invocation each): S1 1 GiB 4.19 s against 4.35,
// receiver PSS 15 MiB against 23; S3 (one sender, three peers) 2.57 s against 2.44 (noise),
// sender PSS 54 MiB against 72; S5's largest daemon 45 MiB against 61. A 4 MiB window is
// still above the bandwidth-delay product of a gigabit link at 30 ms. Raise them in `[net]`
// for long fat links. 8 MiB UDP buffers against the 208 KiB default and 1 vs 2 vs 4 runtime workers
// made no difference larger than the run-to-run noise (±30%) on loopback.

/// QUIC per-stream receive window (4 MiB).
pub const STREAM_RECEIVE_WINDOW_BYTES_DEFAULT: u64 = 4 << 20;
/// QUIC per-connection receive window (8 MiB).
pub const RECEIVE_WINDOW_BYTES_DEFAULT: u64 = 8 << 20;
/// QUIC per-connection send window (4 MiB).
pub const SEND_WINDOW_BYTES_DEFAULT: u64 = 4 << 20;
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
const _: () = assert!(HANDSHAKE_UNAUTHENTICATED_TIMEOUT_MS_DEFAULT <= HANDSHAKE_TIMEOUT_MS_DEFAULT);
const _: () = assert!(STALL_TIMEOUT_MS_DEFAULT < RESPONSE_TIMEOUT_MS_DEFAULT);
const _: () =
    assert!(STALL_RATE_MIN_BYTES_PER_S_DEFAULT <= TAKEOVER_BELOW_RATE_BYTES_PER_S_DEFAULT);
const _: () = assert!(CATCHUP_PULLS_CONCURRENT_DEFAULT <= CATCHUP_PULLS_PER_ROUND_MAX_DEFAULT);
