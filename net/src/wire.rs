//! The wire protocol: frames, messages, stream error codes.
//!
//! # Connections
//!
//! QUIC v1 with TLS 1.3 and ALPN [`ALPN`] (`edge/2`: the ALPN carries the protocol version; a
//! node offered another fails the handshake). Version 2 added the outboard before the payload
//! (below); a version-1 node and a version-2 node do not connect. Both certificates are checked ([`crate::tls`]).
//! Either side may open bidirectional streams on a connection; unidirectional streams and
//! datagrams are not used. Each stream carries one exchange, below; the side that opens it
//! sends the first frame.
//!
//! # Frames
//!
//! All integers little-endian.
//!
//! | bytes | field | rule |
//! |---|---|---|
//! | 4 | `len`, u32 LE | `1..=frame_bytes_max` ([`FRAME_BYTES_MAX_DEFAULT`] = 64 KiB); checked BEFORE the body is allocated |
//! | `len` | body | one postcard-encoded [`Msg`]; decoded with `postcard::take_from_bytes`, and trailing bytes are an error |
//!
//! A [`Msg`] is encoded as postcard encodes a Rust enum: the variant index as a varint, then the
//! fields in order (integers as varints, `u8` and `[u8; 32]` as raw bytes, `Vec`/`String` as a
//! length varint and the elements, `Option` as a 0/1 tag and the value, `bool` as 0/1).
//!
//! | index | message | fields | sent by |
//! |---|---|---|---|
//! | 0 | `Offer` | `manifest`: the encoded signed manifest (the `.seg` header) | sender |
//! | 1 | `Want` | `offset`: u64, the payload offset to send from (> 0 resumes a checkpointed partial) | receiver |
//! | 2 | `Have` | — (stored or tombstoned: nothing to send; counts as delivered) | receiver |
//! | 3 | `Busy` | — (the same segment is being received from another peer: retry, no attempt counted) | receiver |
//! | 4 | `Reject` | `reason`: [`RejectReason`] (variant index), `detail`: string ≤ [`REJECT_DETAIL_BYTES_MAX`] | receiver |
//! | 5 | `Ack` | — (verified, fsynced, renamed, committed: durable) | receiver |
//! | 6 | `DigestRequest` | — | puller |
//! | 7 | `Digest` | `count`: u64, `hash`: [u8; 32] (blake3 of the sorted held ids) | peer |
//! | 8 | `PageRequest` | `after`: Option<[u8; 32]> (ids strictly greater than this) | puller |
//! | 9 | `Page` | `ids`: ≤ [`CATCHUP_PAGE_IDS_MAX`] ids, strictly increasing, all > `after`; `more`: bool | peer |
//! | 10 | `Pull` | `id`: [u8; 32] (send me this segment, as if you offered it) | puller |
//! | 11 | `NotHeld` | — (the pulled id is not stored here, e.g. tombstoned) | peer |
//! | 12 | `ReceiptDigestRequest` | — | puller |
//! | 13 | `ReceiptDigest` | `nodes`: u64, `hash`: [u8; 32] (blake3 of every (node, highest receipt seq), see [`crate::receipts::book::Book::digest`]) | peer |
//! | 14 | `ReceiptHeadsRequest` | `after`: Option<node id> (nodes strictly after this one) | puller |
//! | 15 | `ReceiptHeads` | `heads`: ≤ [`RECEIPT_HEADS_PAGE_MAX`] (node id, highest seq), strictly increasing, all after `after`; `more`: bool | peer |
//! | 16 | `ReceiptPageRequest` | `node`, `after_seq`: u64, `certs`: ≤ [`RECEIPT_PAGE_CERTS_MAX`] hashes of that node's certificates the puller holds | puller |
//! | 17 | `ReceiptPage` | `receipts`: ≤ [`RECEIPT_PAGE_MAX`] encoded signed receipts of `node` with seq > `after_seq`, increasing; `certs`: ≤ [`RECEIPT_PAGE_CERTS_MAX`] certificates (DER) they name that the puller lacks; `more`: bool | peer |
//!
//! [`RejectReason`] indexes: 0 `BadSignature`, 1 `UntrustedPublisher`, 2 `Expired`,
//! 3 `CreatedInFuture`, 4 `TooLarge`, 5 `Malformed`, 6 `StoreFull`, 7 `HashMismatch`,
//! 8 `LengthMismatch`, 9 `Internal`, 10 `Protocol`.
//!
//! # Exchanges (one per stream)
//!
//! **Transfer** (push): sender opens, `→ Offer(manifest)`; receiver verifies the manifest
//! (signature, trusted publisher, freshness, bounds, fits under the ceiling) and answers
//! `← Have | Busy | Reject(reason) | Want(offset)`. After `Want(offset)` the sender checks
//! `offset <= payload_len` and sends, not framed, the payload's **outboard** (the BLAKE3
//! chaining values of its 1 MiB groups, 32 bytes each, in order; nothing for a payload of one
//! group or less: `store::outboard::outboard_len`), then the raw payload bytes
//! `[offset, payload_len)` — [`stream_len`] bytes in all — then finishes its send side. The
//! receiver first checks the outboard against the manifest's payload hash, then writes and
//! hashes the payload as it comes, checking each group against its chaining value as the group
//! completes (checkpointing every `checkpoint_bytes`); it treats a byte beyond the declared
//! length as an error, verifies length and blake3, commits durably, and answers `← Ack` (or
//! `← Reject(HashMismatch | LengthMismatch | StoreFull | Internal)`) and finishes. A bad
//! outboard or a bad group ends the transfer at once with `HashMismatch`. Groups that verified
//! may be forwarded to other peers before the segment is stored (cut-through, see
//! [`crate::transfer`]); nothing else ever is. The sender hashes what it reads
//! from its own stored copy as it sends (the prefix `[0, offset)` too), and if its copy turns
//! out corrupt it resets the stream with [`StreamCode::LocalCorrupt`] instead of finishing.
//! A receiver may answer `← Busy` after `Want` too, while the payload flows: another peer
//! offered the same segment while this sender was below `takeover_below_rate_bytes_per_s` over
//! a full window, and takes it over from the checkpoint; the receiver then stops the stream
//! with [`StreamCode::Preempted`] (the sender retries later, no attempt counted).
//!
//! **Catch-up** (pull), run by the receiving side on every connect and periodically:
//! `→ DigestRequest`, `← Digest(count, hash)`; if it differs from its own, pages:
//! `→ PageRequest(after)`, `← Page(ids, more)`; for each id it lacks, a new stream
//! `→ Pull(id)`, after which the roles of the transfer apply with the peer as sender:
//! `← Offer | NotHeld`, `→ Want | Have | Busy | Reject`, `← payload`, `→ Ack | Reject`.
//!
//! **Receipt gossip** ([`crate::receipts::gossip`]), the same shape, run by the receiving side
//! every `receipt_interval_ms`: `→ ReceiptDigestRequest`, `← ReceiptDigest`; if it differs,
//! `→ ReceiptHeadsRequest(after)`, `← ReceiptHeads(heads, more)`; for each node whose head is
//! ahead of its own, `→ ReceiptPageRequest(node, after_seq, certs)`, `← ReceiptPage`, each on a
//! new stream.
//!
//! # Errors
//!
//! A bad frame (too large, undecodable, trailing bytes, unexpected in that place), a stall
//! (less payload than `stall_rate_min_bytes_per_s` allows, or none at all, over a window of
//! `stall_timeout_ms`, in either direction) or a payload longer than declared ends THAT
//! stream — a QUIC `RESET_STREAM` / `STOP_SENDING` carrying a [`StreamCode`] — and nothing
//! else: the connection and the node go on. Connections are closed with a [`ConnCode`].

use quinn::{RecvStream, SendStream, VarInt};
use serde::{Deserialize, Serialize};

#[allow(unused_imports)] // used by the docs above
use crate::limits::{
    ALPN, CATCHUP_PAGE_IDS_MAX, FRAME_BYTES_MAX_DEFAULT, RECEIPT_HEADS_PAGE_MAX,
    RECEIPT_PAGE_CERTS_MAX, RECEIPT_PAGE_MAX,
};
use crate::limits::{FRAME_PREFIX_BYTES, REJECT_DETAIL_BYTES_MAX};
use crate::pki::NodeId;

/// Bytes the sender streams after `Want(offset)`: the outboard, then the payload from `offset`.
pub fn stream_len(payload_len: u64, offset: u64) -> u64 {
    store::outboard::outboard_len(payload_len) + payload_len.saturating_sub(offset)
}

/// Of `n` more bytes streamed, those past the outboard (`outboard_left` counts down): what the
/// payload counters count.
pub(crate) fn past_outboard(outboard_left: &mut u64, n: u64) -> u64 {
    let outboard = n.min(*outboard_left);
    *outboard_left -= outboard;
    n - outboard
}

/// One protocol message. Variant order is the wire encoding: never reorder, only append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    Offer {
        manifest: Vec<u8>,
    },
    Want {
        offset: u64,
    },
    Have,
    Busy,
    Reject {
        reason: RejectReason,
        detail: String,
    },
    Ack,
    DigestRequest,
    Digest {
        count: u64,
        hash: [u8; 32],
    },
    PageRequest {
        after: Option<[u8; 32]>,
    },
    Page {
        ids: Vec<[u8; 32]>,
        more: bool,
    },
    Pull {
        id: [u8; 32],
    },
    NotHeld,
    ReceiptDigestRequest,
    ReceiptDigest {
        nodes: u64,
        hash: [u8; 32],
    },
    ReceiptHeadsRequest {
        after: Option<NodeId>,
    },
    ReceiptHeads {
        heads: Vec<(NodeId, u64)>,
        more: bool,
    },
    ReceiptPageRequest {
        node: NodeId,
        after_seq: u64,
        certs: Vec<[u8; 32]>,
    },
    ReceiptPage {
        receipts: Vec<Vec<u8>>,
        certs: Vec<Vec<u8>>,
        more: bool,
    },
}

impl Msg {
    /// Short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Offer { .. } => "Offer",
            Msg::Want { .. } => "Want",
            Msg::Have => "Have",
            Msg::Busy => "Busy",
            Msg::Reject { .. } => "Reject",
            Msg::Ack => "Ack",
            Msg::DigestRequest => "DigestRequest",
            Msg::Digest { .. } => "Digest",
            Msg::PageRequest { .. } => "PageRequest",
            Msg::Page { .. } => "Page",
            Msg::ReceiptDigestRequest => "ReceiptDigestRequest",
            Msg::ReceiptDigest { .. } => "ReceiptDigest",
            Msg::ReceiptHeadsRequest { .. } => "ReceiptHeadsRequest",
            Msg::ReceiptHeads { .. } => "ReceiptHeads",
            Msg::ReceiptPageRequest { .. } => "ReceiptPageRequest",
            Msg::ReceiptPage { .. } => "ReceiptPage",
            Msg::Pull { .. } => "Pull",
            Msg::NotHeld => "NotHeld",
        }
    }

    /// A `Reject` with its detail cut to [`REJECT_DETAIL_BYTES_MAX`].
    pub fn reject(reason: RejectReason, detail: impl Into<String>) -> Msg {
        let mut detail = detail.into();
        if detail.len() > REJECT_DETAIL_BYTES_MAX {
            let mut end = REJECT_DETAIL_BYTES_MAX;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
        }
        Msg::Reject { reason, detail }
    }
}

/// Why a receiver refuses a segment. Variant order is the wire encoding: only append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RejectReason {
    /// The manifest signature does not verify against its publisher key.
    BadSignature,
    /// The publisher is not trusted by the receiver.
    UntrustedPublisher,
    /// The segment expired (allowing for clock skew).
    Expired,
    /// The manifest was created in the future (clock skew between nodes; retryable).
    CreatedInFuture,
    /// The segment can never fit under the receiver's ceiling.
    TooLarge,
    /// The manifest is not a valid canonical signed manifest of a version the receiver reads.
    Malformed,
    /// No room now, even after eviction (retryable, INV-08).
    StoreFull,
    /// The payload did not hash to the manifest's blake3 (INV-02).
    HashMismatch,
    /// The payload was shorter or longer than declared.
    LengthMismatch,
    /// The receiver failed locally (disk, database); retryable.
    Internal,
    /// The peer broke the protocol (unexpected message, bad offset).
    Protocol,
    /// The receiver has seen a higher sequence for this publisher, channel and name (or a root
    /// not older than this one): a rollback, refused for good.
    Superseded,
    /// A recall withdrew this segment: refused for good.
    Recalled,
    /// The receiver's trust root or the channel's rule expired: no new content until a newer
    /// root arrives (retryable).
    Stale,
}

impl RejectReason {
    /// True when retrying the same segment cannot succeed: the relay ends the job as `refused`.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            RejectReason::BadSignature
                | RejectReason::UntrustedPublisher
                | RejectReason::Expired
                | RejectReason::TooLarge
                | RejectReason::Malformed
                | RejectReason::Superseded
                | RejectReason::Recalled
        )
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::BadSignature => "bad_signature",
            RejectReason::UntrustedPublisher => "untrusted_publisher",
            RejectReason::Expired => "expired",
            RejectReason::CreatedInFuture => "created_in_future",
            RejectReason::TooLarge => "too_large",
            RejectReason::Malformed => "malformed",
            RejectReason::StoreFull => "store_full",
            RejectReason::HashMismatch => "hash_mismatch",
            RejectReason::LengthMismatch => "length_mismatch",
            RejectReason::Internal => "internal",
            RejectReason::Protocol => "protocol",
            RejectReason::Superseded => "superseded",
            RejectReason::Recalled => "recalled",
            RejectReason::Stale => "stale",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Application error codes of `RESET_STREAM` / `STOP_SENDING`: why one stream was ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCode {
    /// A frame could not be decoded, had trailing bytes, or was not expected there.
    Protocol = 1,
    /// A frame's length prefix exceeded `frame_bytes_max`.
    FrameTooLarge = 2,
    /// Below the minimum rate over a `stall_timeout_ms` window (or no first frame within
    /// `response_timeout_ms`).
    Stalled = 3,
    /// The sender's stored copy failed verification while being sent; it is quarantined.
    LocalCorrupt = 4,
    /// More payload bytes than the manifest declares.
    PayloadTooLong = 5,
    /// A local failure (disk, database) ended the transfer.
    Internal = 6,
    /// The node is shutting down.
    Shutdown = 7,
    /// The receiver handed the segment to another, faster sender (the takeover rule); it
    /// answered `Busy` first and kept the partial, which the other sender resumes.
    Preempted = 8,
}

impl StreamCode {
    pub fn varint(self) -> VarInt {
        VarInt::from_u32(self as u32)
    }

    pub fn from_varint(v: VarInt) -> Option<StreamCode> {
        Some(match v.into_inner() {
            1 => StreamCode::Protocol,
            2 => StreamCode::FrameTooLarge,
            3 => StreamCode::Stalled,
            4 => StreamCode::LocalCorrupt,
            5 => StreamCode::PayloadTooLong,
            6 => StreamCode::Internal,
            7 => StreamCode::Shutdown,
            8 => StreamCode::Preempted,
            _ => return None,
        })
    }
}

/// Application error codes of `CONNECTION_CLOSE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnCode {
    /// Closed without error.
    Normal = 0,
    /// Another connection with this peer is kept (the one opened by the lower id).
    Duplicate = 1,
    /// The peer has `connections_per_peer_max` connections already.
    TooManyConnections = 2,
    /// The node is shutting down.
    Shutdown = 3,
    /// The certificate names no known peer (defence in depth: TLS refuses it first).
    UnknownPeer = 4,
    /// The peer was removed from this node's `known_peers` (a reload).
    PeerRemoved = 5,
}

impl ConnCode {
    pub fn varint(self) -> VarInt {
        VarInt::from_u32(self as u32)
    }
}

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The length prefix exceeds the bound; nothing was allocated for the body.
    #[error("frame of {len} bytes exceeds the {max} bytes allowed")]
    FrameTooLarge { len: u32, max: usize },
    /// A zero-length frame.
    #[error("empty frame")]
    EmptyFrame,
    /// The body is not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(postcard::Error),
    /// Bytes follow the message inside the frame.
    #[error("{count} trailing bytes after the message")]
    TrailingBytes { count: usize },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The stream ended cleanly where a frame was expected.
    #[error("stream finished where a frame was expected")]
    Finished,
    /// The peer reset the stream.
    #[error("stream reset by peer (code {0})")]
    Reset(u64),
    /// The peer stopped reading the stream.
    #[error("stream stopped by peer (code {0})")]
    Stopped(u64),
    /// The connection is gone.
    #[error("connection lost: {0}")]
    ConnectionLost(quinn::ConnectionError),
    /// Stream state error (already finished or reset locally).
    #[error("stream closed")]
    Closed,
}

impl WireError {
    /// The stream code to end the stream with after this error, if the error is the peer's.
    pub fn stream_code(&self) -> Option<StreamCode> {
        match self {
            WireError::FrameTooLarge { .. } => Some(StreamCode::FrameTooLarge),
            WireError::EmptyFrame
            | WireError::Malformed(_)
            | WireError::TrailingBytes { .. }
            | WireError::Truncated
            | WireError::Finished => Some(StreamCode::Protocol),
            _ => None,
        }
    }
}

/// Encodes a message as a frame: length prefix and body.
pub fn encode_frame(msg: &Msg) -> Vec<u8> {
    // Serialising into a Vec cannot fail for these types (no maps, no unsized sequences).
    let body = postcard::to_allocvec(msg).expect("postcard encoding into a Vec is infallible");
    let mut out = Vec::with_capacity(FRAME_PREFIX_BYTES + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Checks a frame's length prefix against `max` (before anything is allocated for the body).
pub fn check_frame_len(prefix: [u8; FRAME_PREFIX_BYTES], max: usize) -> Result<usize, WireError> {
    let len = u32::from_le_bytes(prefix);
    if len == 0 {
        return Err(WireError::EmptyFrame);
    }
    // Mutation point (INV-17): one byte more than the bound is accepted.
    let allowed = max + usize::from(store::mutants::active("frame_bound_plus_one"));
    if len as usize > allowed {
        return Err(WireError::FrameTooLarge { len, max });
    }
    Ok(len as usize)
}

/// Decodes a frame body: exactly one message, nothing after it.
pub fn decode_body(body: &[u8]) -> Result<Msg, WireError> {
    let (msg, rest) = postcard::take_from_bytes::<Msg>(body).map_err(WireError::Malformed)?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes { count: rest.len() });
    }
    Ok(msg)
}

/// Writes one frame.
pub async fn write_frame(send: &mut SendStream, msg: &Msg) -> Result<(), WireError> {
    send.write_all(&encode_frame(msg))
        .await
        .map_err(write_error)
}

/// Reads one frame, bounded by `max` body bytes.
pub async fn read_frame(recv: &mut RecvStream, max: usize) -> Result<Msg, WireError> {
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    read_exact(recv, &mut prefix, true).await?;
    let len = check_frame_len(prefix, max)?;
    let mut body = vec![0u8; len];
    read_exact(recv, &mut body, false).await?;
    decode_body(&body)
}

async fn read_exact(recv: &mut RecvStream, buf: &mut [u8], first: bool) -> Result<(), WireError> {
    match recv.read_exact(buf).await {
        Ok(()) => Ok(()),
        Err(quinn::ReadExactError::FinishedEarly(0)) if first => Err(WireError::Finished),
        Err(quinn::ReadExactError::FinishedEarly(_)) => Err(WireError::Truncated),
        Err(quinn::ReadExactError::ReadError(e)) => Err(read_error(e)),
    }
}

/// Maps a quinn read error.
pub fn read_error(e: quinn::ReadError) -> WireError {
    match e {
        quinn::ReadError::Reset(code) => WireError::Reset(code.into_inner()),
        quinn::ReadError::ConnectionLost(c) => WireError::ConnectionLost(c),
        _ => WireError::Closed,
    }
}

/// Maps a quinn write error.
pub fn write_error(e: quinn::WriteError) -> WireError {
    match e {
        quinn::WriteError::Stopped(code) => WireError::Stopped(code.into_inner()),
        quinn::WriteError::ConnectionLost(c) => WireError::ConnectionLost(c),
        _ => WireError::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(msg: Msg) {
        let frame = encode_frame(&msg);
        let len = check_frame_len(frame[..4].try_into().unwrap(), FRAME_BYTES_MAX_DEFAULT).unwrap();
        assert_eq!(len, frame.len() - 4);
        assert_eq!(decode_body(&frame[4..]).unwrap(), msg);
    }

    #[test]
    fn inv_17_every_message_roundtrips() {
        roundtrip(Msg::Offer {
            manifest: vec![7; 600],
        });
        roundtrip(Msg::Want { offset: u64::MAX });
        roundtrip(Msg::Have);
        roundtrip(Msg::Busy);
        roundtrip(Msg::reject(RejectReason::StoreFull, "full"));
        roundtrip(Msg::Ack);
        roundtrip(Msg::DigestRequest);
        roundtrip(Msg::Digest {
            count: 3,
            hash: [9; 32],
        });
        roundtrip(Msg::PageRequest { after: None });
        roundtrip(Msg::PageRequest {
            after: Some([1; 32]),
        });
        roundtrip(Msg::Pull { id: [2; 32] });
        roundtrip(Msg::NotHeld);
    }

    #[test]
    fn inv_17_full_page_fits_in_a_frame() {
        let ids: Vec<[u8; 32]> = (0..CATCHUP_PAGE_IDS_MAX)
            .map(|i| [(i % 251) as u8; 32])
            .collect();
        let frame = encode_frame(&Msg::Page { ids, more: true });
        assert!(frame.len() - 4 <= FRAME_BYTES_MAX_DEFAULT);
    }

    #[test]
    fn inv_17_length_prefix_checked_at_n_and_n_plus_1() {
        let max = FRAME_BYTES_MAX_DEFAULT;
        assert_eq!(
            check_frame_len((max as u32).to_le_bytes(), max).unwrap(),
            max
        );
        assert!(matches!(
            check_frame_len((max as u32 + 1).to_le_bytes(), max),
            Err(WireError::FrameTooLarge { .. })
        ));
        assert!(matches!(
            check_frame_len(u32::MAX.to_le_bytes(), max),
            Err(WireError::FrameTooLarge { .. })
        ));
        assert!(matches!(
            check_frame_len(0u32.to_le_bytes(), max),
            Err(WireError::EmptyFrame)
        ));
    }

    #[test]
    fn inv_17_trailing_and_garbage_bodies_are_rejected() {
        let mut body = encode_frame(&Msg::Ack)[4..].to_vec();
        body.push(0);
        assert!(matches!(
            decode_body(&body),
            Err(WireError::TrailingBytes { count: 1 })
        ));
        // Unknown variant index, truncated fields, a length claiming more than there is.
        for garbage in [
            &[200u8][..],
            &[1u8, 0xff],
            &[0u8, 0xff, 0xff, 0xff, 0x0f],
            &[7u8, 1],
        ] {
            assert!(decode_body(garbage).is_err(), "{garbage:?}");
        }
        // A reject reason outside the enum.
        assert!(decode_body(&[4u8, 99, 0]).is_err());
    }

    #[test]
    fn reject_detail_is_bounded() {
        let long = "é".repeat(REJECT_DETAIL_BYTES_MAX);
        match Msg::reject(RejectReason::Internal, long) {
            Msg::Reject { detail, .. } => assert!(detail.len() <= REJECT_DETAIL_BYTES_MAX),
            _ => unreachable!(),
        }
    }

    #[test]
    fn permanence_of_reasons() {
        assert!(RejectReason::UntrustedPublisher.is_permanent());
        assert!(RejectReason::BadSignature.is_permanent());
        assert!(!RejectReason::StoreFull.is_permanent());
        assert!(!RejectReason::HashMismatch.is_permanent());
        assert!(!RejectReason::CreatedInFuture.is_permanent());
    }
}
