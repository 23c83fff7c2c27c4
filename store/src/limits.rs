//! Every bound of the segment format and the store, in one place.
//!
//! Each bound is checked before anything is allocated on its behalf. Units are the last part of
//! each name. Tests exercise each bound at N and N+1.

/// Bytes per verified group of a payload (see `outboard`): 1024 BLAKE3 chunks. A forwarder
/// holds back at most one group; the outboard costs 32 bytes per group (32 KiB per GiB).
pub const OUTBOARD_GROUP_BYTES: u64 = 1 << 20;
/// Verified groups an in-flight segment keeps for its forwarders (see `inflight`): memory per
/// segment being received and forwarded, whatever its size or the number of forwarders.
pub const INFLIGHT_RING_GROUPS: usize = 4;
/// Alignment of memory, offsets and lengths of `O_DIRECT` I/O (the largest logical block size
/// of the devices this runs on).
pub const DIRECT_IO_ALIGN_BYTES: usize = 4096;
/// One `O_DIRECT` request of the store's large files (see `fs::direct`): 256 KiB moved 1 GiB
/// as fast as 1 MiB on the measured disk, at a quarter of the memory per open file.
pub const DIRECT_IO_BLOCK_BYTES: usize = 256 * 1024;

/// Magic bytes that open every `.seg` file: `EDGSEG` followed by the format version (u16 LE).
pub const SEG_MAGIC: [u8; 6] = *b"EDGSEG";
/// The `.seg` file format version this build writes and the only one it reads.
pub const SEG_FORMAT_VERSION: u16 = 1;
/// The manifest format version this build writes: a kind and several signatures (see
/// `manifest`). It also reads [`MANIFEST_FORMAT_V1`]; any other version is refused by name.
pub const MANIFEST_FORMAT_VERSION: u16 = 2;
/// The first manifest format: content only, one signature. Still read, never written.
pub const MANIFEST_FORMAT_V1: u16 = 1;
/// Signatures a manifest may carry (format 2): enough for any channel threshold.
pub const SIGNATURES_MAX: usize = 8;
/// Largest payload of a recall or root segment: these are parsed in memory before the commit.
pub const LIFECYCLE_PAYLOAD_BYTES_MAX: u64 = 128 * 1024;
/// Segment ids one recall may name.
pub const RECALL_IDS_MAX: usize = 1024;
/// Roots one root segment may carry (a node that far behind catches up from one segment).
pub const ROOT_CHAIN_MAX: usize = 4;
/// Largest encoded root document.
pub const ROOT_DOC_BYTES_MAX: usize = 16 * 1024;
/// Keys that may sign the next root (and signatures a root may carry: twice this).
pub const ROOT_KEYS_MAX: usize = 16;
/// Publisher keys a root may list.
pub const ROOT_PUBLISHERS_MAX: usize = 64;
/// Channel rules a root may carry.
pub const ROOT_CHANNELS_MAX: usize = 64;
/// Channels one publisher grant may list.
pub const CHANNELS_PER_KEY_MAX: usize = 16;
/// The channel of root segments; channels starting with `edged.` are reserved to edged.
pub const ROOT_CHANNEL: &str = "edged.root";
/// Prefix of the channels reserved to edged.
pub const RESERVED_CHANNEL_PREFIX: &str = "edged.";
/// Sequence changes remembered per publisher, channel and name (the history shown to an
/// operator); the highest sequence itself is never forgotten.
pub const SEQUENCE_HISTORY_MAX: usize = 16;
/// Sequence rows listed at most by one query.
pub const SEQUENCES_LIST_MAX: usize = 10_000;
/// Bytes before the signed manifest: magic (6) + version (2) + header length (4).
pub const SEG_PREAMBLE_BYTES: u64 = 12;
/// Largest encoded signed manifest (the `.seg` header) accepted.
pub const HEADER_BYTES_MAX: u32 = 4096;
/// Largest segment name, in UTF-8 bytes.
pub const NAME_BYTES_MAX: usize = 255;
/// Largest channel name, in bytes (`[a-z0-9][a-z0-9._-]*`).
pub const CHANNEL_BYTES_MAX: usize = 64;
/// Largest payload a manifest may declare: 64 GiB.
pub const PAYLOAD_BYTES_MAX: u64 = 64 << 30;
/// Latest time a manifest may carry (`created_at_ms`, `expires_at_ms`): the last millisecond of
/// year 9999 UTC, 9999-12-31T23:59:59.999Z. RFC 3339 renders every time up to it, so a manifest
/// can always be shown; anything later is refused when decoded.
pub const TIME_MS_MAX: u64 = 253_402_300_799_999;
/// Domain-separation tag signed before the manifest bytes, so a manifest signature can never be
/// replayed as a signature over anything else.
pub const SIGNATURE_DOMAIN_TAG: &[u8] = b"edged/segment-manifest/v1\0";
/// Buffer used to stream payloads (files and hashing): large enough for blake3's SIMD paths,
/// small enough to stay in L2.
pub const STREAM_BUF_BYTES: usize = 64 * 1024;
/// Written bytes handed to the kernel's writeback at a time during an ingest, so the device
/// writes while the rest arrives and the final fsync waits only for the tail.
pub const WRITEBACK_CHUNK_BYTES: u64 = 8 << 20;
/// Step by which an ingest's grant under the ceiling grows as its payload arrives, when it
/// could not all be granted at once without evicting. Eviction itself is only ever for bytes
/// already received; the step bounds how much of the room freed (or found free) one ingest
/// takes ahead of its bytes, and how often a long ingest takes the accounting lock.
pub const RESERVE_STEP_BYTES: u64 = 8 << 20;
/// Fan-out of `segments/`: one directory per first byte of the id (two hex digits).
pub const FANOUT_DIRS: usize = 256;
/// Default cap on remembered tombstones (32-byte ids each).
pub const TOMBSTONES_MAX_DEFAULT: u64 = 100_000;
/// Default age after which an abandoned partial ingest is dropped: 7 days.
pub const PARTIAL_AGE_MAX_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;
/// Default floor of free space the store keeps on its file system: 64 MiB.
pub const MIN_FREE_BYTES_DEFAULT: u64 = 64 << 20;
/// Largest number of writes the committer folds into one redb transaction.
pub const COMMIT_BATCH_MAX: usize = 256;
/// Depth of the committer's queue; writers block (back-pressure) beyond it.
pub const COMMIT_QUEUE_MAX: usize = 1024;
/// Shortest unique prefix of a segment id accepted for lookups, in hex characters.
pub const ID_PREFIX_HEX_MIN: usize = 4;

/// Channel a manifest belongs to when its publisher names none.
pub const CHANNEL_DEFAULT: &str = "default";
/// Priority of a manifest whose publisher sets none (higher is more important).
pub const PRIORITY_DEFAULT: u8 = 128;
/// Length of a full segment id in hex characters (32 bytes).
pub const ID_HEX_LEN: usize = 64;
/// Largest publisher secret key file accepted, in bytes; larger files are refused unread.
pub const KEY_FILE_BYTES_MAX: u64 = 256;
/// Largest canonical encoding of a valid manifest, in bytes: every varint at its widest
/// (u16: 3, u64: 10), the publisher key and payload hash (32 each), name and channel at their
/// bounds with their length varints (2 + 255, 1 + 64), the option tag (1), the condition (1) and
/// the priority (1 raw byte). A test encodes a maximal manifest and checks it stays within this.
/// Format 2 adds the kind (1).
pub const MANIFEST_BYTES_MAX: usize = 3
    + 32
    + (2 + NAME_BYTES_MAX)
    + (1 + CHANNEL_BYTES_MAX)
    + 10
    + 10
    + (1 + 10)
    + 1
    + 1
    + 10
    + 32
    + 1;
/// Largest encoded signed manifest: a length varint (2), the manifest, the signature count (1)
/// and up to [`SIGNATURES_MAX`] signatures of 96 bytes (key and signature).
pub const SIGNED_MANIFEST_BYTES_MAX: usize = 2 + MANIFEST_BYTES_MAX + 1 + SIGNATURES_MAX * 96;

// Relations between the bounds, checked at compile time.
const _: () = assert!(SIGNED_MANIFEST_BYTES_MAX <= HEADER_BYTES_MAX as usize);
const _: () = assert!(MANIFEST_BYTES_MAX < 1 << 14); // its length varint fits in 2 bytes
const _: () = assert!(SEG_PREAMBLE_BYTES == (SEG_MAGIC.len() + 2 + 4) as u64);
const _: () = assert!(ID_PREFIX_HEX_MIN >= 1 && ID_PREFIX_HEX_MIN <= ID_HEX_LEN);
const _: () = assert!(CHANNEL_DEFAULT.len() <= CHANNEL_BYTES_MAX);
const _: () = assert!(ROOT_CHANNEL.len() <= CHANNEL_BYTES_MAX);
const _: () = assert!(SIGNATURES_MAX < 128); // its count varint is one byte
const _: () = assert!(RECALL_IDS_MAX as u64 * 32 + 16 <= LIFECYCLE_PAYLOAD_BYTES_MAX);
const _: () = assert!(KEY_FILE_BYTES_MAX as usize <= STREAM_BUF_BYTES);
const _: () = assert!(DIRECT_IO_BLOCK_BYTES % DIRECT_IO_ALIGN_BYTES == 0);
const _: () = assert!(OUTBOARD_GROUP_BYTES.is_power_of_two() && OUTBOARD_GROUP_BYTES >= 1024);
// A forwarder behind the ring reads the group it needs from the temp file: every group that left
// the ring is further behind the write position than the writer's unwritten last block (plus the
// header), so it is all in the file.
const _: () = assert!(
    (INFLIGHT_RING_GROUPS as u64 - 1) * OUTBOARD_GROUP_BYTES
        >= DIRECT_IO_BLOCK_BYTES as u64 + HEADER_BYTES_MAX as u64
);
/// Memory redb may use to cache pages of `edge.redb` (its default is 1 GiB): 4 MiB. A scan of
/// a large index fills the cache to its bound and the daemon keeps it (its pages are freed in
/// several threads' malloc arenas); with 100,000 segments 16 MiB kept the daemon at about
/// 50 MiB after start, 4 MiB at about 25 MiB, with no measurable change in import rate (the
/// pages it misses come from the kernel's page cache).
pub const DB_CACHE_BYTES: usize = 4 << 20;

/// Free space (beyond `min_free_bytes`) below which writes that can wait — fleet receipts —
/// are put off, so that they never fail a commit on a full disk.
pub const METADATA_ROOM_BYTES: u64 = 4 << 20;
