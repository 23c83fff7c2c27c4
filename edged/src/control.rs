//! The control socket: how operator commands talk to the running daemon.
//!
//! A Unix stream socket (mode 0600, so only the daemon's user can use it), by default in the
//! data directory. Each message is a frame: a u32 little-endian length, then that many bytes of
//! JSON. A request gets one response frame, except:
//!
//! - `Import { len, outboard_len, .. }`: the request frame is followed by exactly
//!   `outboard_len` raw bytes of the payload's outboard (which the CLI computes from the file
//!   first; the daemon checks it against the signed root, then each 1 MiB group as it arrives,
//!   and forwards verified groups to its peers while the rest arrives), then exactly `len` raw
//!   bytes of a `.seg` file, read by the CLI from the medium and streamed here (the daemon never
//!   opens the medium); the daemon verifies and stores it and answers with the outcome. If the daemon did
//!   not read the whole body (the header was enough for its verdict, or the client stopped
//!   sending), it closes the connection after its answer: the client opens one connection per
//!   imported file. A client that cannot send all it announced (the file shrank) half-closes
//!   its side; the daemon answers that the import was cut and stores nothing.
//!   A body of at most [`CONTROL_IMPORT_PIPELINED_BYTES_MAX`] is always read whole: the client
//!   may send the next `Import` (and its body) without waiting for the answer, up to
//!   `import_window` imports and `import_window_bytes` of bodies in flight, and the daemon
//!   ingests them concurrently and answers each, in request order, once it is stored. Any other
//!   request waits until the imports before it are answered. A client pipelines only such
//!   small bodies and reads each file whole before announcing it, so a file that shrinks is
//!   never sent.
//! - `Export { id }`: the response frame `ExportStream { len, .. }` is followed by exactly `len`
//!   raw bytes of the stored `.seg` file; the CLI writes it atomically and verifies it.
//! - Listings (`Segments`, `DlqList`, `ExportSelect`, `DlqRequeue`, `DlqPurge`: anything whose
//!   answer grows with the store or the ledger, see [`Request::is_listing`]) are answered by
//!   `Page { items }` frames, then `End { count }`. The daemon reads the database a page at a
//!   time (a fresh read transaction for each, after the last key sent), so its memory for a
//!   listing is one page whatever the number of rows, and the CLI prints each page as it
//!   arrives. A page holds at most `list_page_items` items and stops growing once it passes
//!   `list_page_bytes` (an item is never split: one larger than that travels alone, within
//!   [`CONTROL_FRAME_BYTES_MAX`]). An `Error` frame instead of the next page ends a listing
//!   that failed part-way. Rows are listed in key order; one added or removed while the
//!   listing runs may or may not be in it, every other row is in it exactly once.
//!
//! # Bounds
//!
//! Frames are bounded by [`CONTROL_FRAME_BYTES_MAX`], checked before allocating, an import
//! body by [`CONTROL_IMPORT_BYTES_MAX`] and its file name by [`CONTROL_FILE_NAME_BYTES_MAX`]. What a local client can hold is bounded in time, not
//! only in count ([`ControlLimits`], config section `[control]`):
//!
//! - a connection that starts no request within `idle_timeout_ms` is closed;
//! - a request frame must be complete `request_deadline_ms` after its first byte, however the
//!   bytes trickle in;
//! - an import body, an export stream and every response must move at least
//!   `stream_rate_min_bytes_per_s`, measured over windows of `stream_rate_window_ms` of waiting
//!   for the client (time the daemon spends on its own disk work does not count against it);
//! - at most `connections_max` connections are served at once; at the cap, a new client is
//!   admitted by closing the connection that has waited longest for a request of its own (idle
//!   or still sending its frame), so idle or slow clients cannot keep anyone out; only requests
//!   being executed are never cut;
//! - at most `streams_max` imports and exports run at once, so streams alone never fill every
//!   connection slot.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use store::limits::{HEADER_BYTES_MAX, PAYLOAD_BYTES_MAX, SEG_PREAMBLE_BYTES};

/// Largest control frame (JSON), in bytes.
pub const CONTROL_FRAME_BYTES_MAX: u32 = 4 << 20;
/// Largest import body a client may announce: the largest `.seg` file the format allows.
pub const CONTROL_IMPORT_BYTES_MAX: u64 =
    SEG_PREAMBLE_BYTES + HEADER_BYTES_MAX as u64 + PAYLOAD_BYTES_MAX;
/// Largest outboard an import may announce: that of the largest payload the format allows.
pub const CONTROL_IMPORT_OUTBOARD_BYTES_MAX: u64 =
    PAYLOAD_BYTES_MAX.div_ceil(store::outboard::GROUP_BYTES) * store::outboard::CV_BYTES as u64;
/// Longest file name an import may carry, in bytes: it is shown and logged. File systems allow
/// 255 bytes per name; the rest is headroom for lossy UTF-8 conversion.
pub const CONTROL_FILE_NAME_BYTES_MAX: usize = 1024;
/// Default of `[control] connections_max`: connections served at once.
pub const CONTROL_CONNECTIONS_MAX: usize = 8;
/// Largest `connections_max` accepted: each connection is served by a thread.
pub const CONTROL_CONNECTIONS_LIMIT: usize = 256;
/// Default of `[control] streams_max`: imports and exports streaming at once.
pub const CONTROL_STREAMS_MAX: usize = 4;
/// Default of `[control] idle_timeout_ms`: a connection that starts no request for this long
/// is closed.
pub const CONTROL_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Default of `[control] request_deadline_ms`: a request frame must be complete this long after
/// its first byte.
pub const CONTROL_REQUEST_DEADLINE_MS: u64 = 10_000;
/// Default of `[control] stream_rate_min_bytes_per_s`: slowest import body, export stream or
/// response accepted (a USB 1.1 stick reads about 1 MB/s).
pub const CONTROL_STREAM_RATE_MIN_BYTES_PER_S: u64 = 64 * 1024;
/// Default of `[control] stream_rate_window_ms`: the window the minimum rate is measured over.
pub const CONTROL_STREAM_RATE_WINDOW_MS: u64 = 10_000;
/// Longest `idle_timeout_ms`, `request_deadline_ms` and `stream_rate_window_ms` accepted: one
/// hour.
pub const CONTROL_TIMEOUT_MS_LIMIT: u64 = 3_600_000;
/// Largest import body taken whole into memory, and so pipelined (see the module docs); larger
/// ones stream to disk as they arrive, one at a time.
pub const CONTROL_IMPORT_PIPELINED_BYTES_MAX: u64 = 1 << 20;
/// Default of `[control] import_window`: pipelined imports in flight on one connection.
pub const CONTROL_IMPORT_WINDOW: usize = 32;
/// Largest `import_window` accepted.
pub const CONTROL_IMPORT_WINDOW_LIMIT: usize = 1024;
/// Default of `[control] import_window_bytes`: bodies of pipelined imports held in memory on
/// one connection, in bytes.
pub const CONTROL_IMPORT_WINDOW_BYTES: u64 = 4 << 20;
/// Largest `import_window_bytes` accepted: every import connection (at most `streams_max`) may
/// hold this much.
pub const CONTROL_IMPORT_WINDOW_BYTES_LIMIT: u64 = 256 << 20;
/// Default of `[control] list_page_items`: items of a listing per page (per database read).
pub const CONTROL_LIST_PAGE_ITEMS: usize = 256;
/// Largest `list_page_items` accepted.
pub const CONTROL_LIST_PAGE_ITEMS_LIMIT: usize = 4096;
/// Default of `[control] list_page_bytes`: a page stops growing once its JSON passes this.
pub const CONTROL_LIST_PAGE_BYTES: usize = 256 * 1024;
/// Smallest `list_page_bytes` accepted.
pub const CONTROL_LIST_PAGE_BYTES_MIN: usize = 256;
/// Largest `list_page_bytes` accepted: a quarter of a frame, so that a page that passed it
/// with one more item still fits in a frame.
pub const CONTROL_LIST_PAGE_BYTES_LIMIT: usize = CONTROL_FRAME_BYTES_MAX as usize / 4;

/// The control socket's bounds on its clients; `[control]` in `edge.toml` overrides each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlLimits {
    /// Connections served at once; at the cap the one waiting longest for a request is closed
    /// to admit a new one.
    pub connections_max: usize,
    /// Imports and exports streaming at once; at most `connections_max`.
    pub streams_max: usize,
    /// A connection that starts no request for this long is closed, in milliseconds.
    pub idle_timeout_ms: u64,
    /// A request frame must be complete this long after its first byte, in milliseconds.
    pub request_deadline_ms: u64,
    /// Slowest import body, export stream or response accepted, in bytes per second; 0 only
    /// refuses a window with no byte at all.
    pub stream_rate_min_bytes_per_s: u64,
    /// Window of waiting for the client over which that rate is measured, in milliseconds.
    pub stream_rate_window_ms: u64,
    /// Pipelined imports in flight on one connection.
    pub import_window: usize,
    /// Bodies of pipelined imports held in memory on one connection, in bytes; at least
    /// [`CONTROL_IMPORT_PIPELINED_BYTES_MAX`].
    pub import_window_bytes: u64,
    /// Items of a listing per page (and per read of the database).
    pub list_page_items: usize,
    /// A page of a listing stops growing once its JSON passes this many bytes.
    pub list_page_bytes: usize,
}

impl Default for ControlLimits {
    fn default() -> Self {
        ControlLimits {
            connections_max: CONTROL_CONNECTIONS_MAX,
            streams_max: CONTROL_STREAMS_MAX,
            idle_timeout_ms: CONTROL_IDLE_TIMEOUT_MS,
            request_deadline_ms: CONTROL_REQUEST_DEADLINE_MS,
            stream_rate_min_bytes_per_s: CONTROL_STREAM_RATE_MIN_BYTES_PER_S,
            stream_rate_window_ms: CONTROL_STREAM_RATE_WINDOW_MS,
            import_window: CONTROL_IMPORT_WINDOW,
            import_window_bytes: CONTROL_IMPORT_WINDOW_BYTES,
            list_page_items: CONTROL_LIST_PAGE_ITEMS,
            list_page_bytes: CONTROL_LIST_PAGE_BYTES,
        }
    }
}

/// A `[control]` value out of its range: the key (without the section) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ControlLimitsError {
    pub key: &'static str,
    pub reason: String,
}

impl ControlLimits {
    /// Every value out of its range, and every relation broken, each once.
    pub fn problems(&self) -> Vec<ControlLimitsError> {
        let mut problems = Vec::new();
        let mut err = |key, reason: String| problems.push(ControlLimitsError { key, reason });
        if !(1..=CONTROL_CONNECTIONS_LIMIT).contains(&self.connections_max) {
            err(
                "connections_max",
                format!(
                    "{} is outside 1..={CONTROL_CONNECTIONS_LIMIT}",
                    self.connections_max
                ),
            );
        }
        if !(1..=self.connections_max).contains(&self.streams_max) {
            err(
                "streams_max",
                format!(
                    "{} is outside 1..=connections_max ({})",
                    self.streams_max, self.connections_max
                ),
            );
        }
        if !(1..=CONTROL_IMPORT_WINDOW_LIMIT).contains(&self.import_window) {
            err(
                "import_window",
                format!(
                    "{} is outside 1..={CONTROL_IMPORT_WINDOW_LIMIT}",
                    self.import_window
                ),
            );
        }
        if !(CONTROL_IMPORT_PIPELINED_BYTES_MAX..=CONTROL_IMPORT_WINDOW_BYTES_LIMIT)
            .contains(&self.import_window_bytes)
        {
            err(
                "import_window_bytes",
                format!(
                    "{} is outside {CONTROL_IMPORT_PIPELINED_BYTES_MAX}..={CONTROL_IMPORT_WINDOW_BYTES_LIMIT}",
                    self.import_window_bytes
                ),
            );
        }
        if !(1..=CONTROL_LIST_PAGE_ITEMS_LIMIT).contains(&self.list_page_items) {
            err(
                "list_page_items",
                format!(
                    "{} is outside 1..={CONTROL_LIST_PAGE_ITEMS_LIMIT}",
                    self.list_page_items
                ),
            );
        }
        if !(CONTROL_LIST_PAGE_BYTES_MIN..=CONTROL_LIST_PAGE_BYTES_LIMIT)
            .contains(&self.list_page_bytes)
        {
            err(
                "list_page_bytes",
                format!(
                    "{} is outside {CONTROL_LIST_PAGE_BYTES_MIN}..={CONTROL_LIST_PAGE_BYTES_LIMIT}",
                    self.list_page_bytes
                ),
            );
        }
        for (key, value) in [
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("request_deadline_ms", self.request_deadline_ms),
            ("stream_rate_window_ms", self.stream_rate_window_ms),
        ] {
            if !(1..=CONTROL_TIMEOUT_MS_LIMIT).contains(&value) {
                err(
                    key,
                    format!("{value} is outside 1..={CONTROL_TIMEOUT_MS_LIMIT} ms"),
                );
            }
        }
        problems
    }

    /// Bytes a window must carry: the minimum rate over the window, at least one byte.
    pub fn stream_window_bytes_min(&self) -> u64 {
        let bytes = u128::from(self.stream_rate_min_bytes_per_s)
            * u128::from(self.stream_rate_window_ms)
            / 1000;
        u64::try_from(bytes).unwrap_or(u64::MAX).max(1)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    Segments,
    Peers,
    DlqList,
    /// Requeue dead letters: one (peer + segment) or all of a peer.
    DlqRequeue {
        peer: String,
        segment: Option<String>,
    },
    /// Purge dead letters: one (peer + segment) or all of a peer.
    DlqPurge {
        peer: String,
        segment: Option<String>,
    },
    /// `outboard_len` raw bytes of the payload's outboard (0: none; see `store::outboard`),
    /// then `len` raw bytes of a `.seg` file follow this frame. With the outboard the daemon
    /// checks the payload group by group and forwards it to its peers while it arrives.
    Import {
        file_name: String,
        len: u64,
        #[serde(default)]
        outboard_len: u64,
    },
    /// Which stored ids an export selection means.
    ExportSelect {
        all: bool,
        channel: Option<String>,
        ids: Vec<String>,
    },
    /// Stream one stored segment back.
    Export {
        id: String,
    },
    /// Need-lists (listing): every id held (stored or tombstoned), hex, in id order.
    NeedHeld,
    /// Need-lists (listing): every stored segment as `export --for` weighs it
    /// ([`crate::needlist::Candidate`]), in id order.
    NeedStored,
    /// Need-lists (listing): the receipts the node knows, `{"cert": hex}` and
    /// `{"receipt": hex}` items, its own first (see [`crate::needlist::walk_receipts`]).
    NeedReceipts,
    /// Need-lists: verify and merge receipts brought on a stick (hex), with the certificates
    /// they name; at most [`CONTROL_NEED_MERGE_RECEIPTS_MAX`] receipts and
    /// [`CONTROL_NEED_MERGE_CERTS_MAX`] certificates per request.
    NeedMerge {
        receipts: Vec<String>,
        certs: Vec<String>,
    },
    /// The fleet view (listing): a header item (the roster), then one item per segment (see
    /// [`crate::fleetview`]).
    Fleet {
        query: crate::fleetview::Query,
    },
    /// Re-verify every stored segment, quarantining the corrupt (see [`crate::fsck`]); answered
    /// with the [`crate::fsck::Report`] once done. `repair`: also remove leftover files.
    Fsck {
        #[serde(default)]
        repair: bool,
    },
    /// Quarantined segments (listing): [`crate::quarantine::Entry`] items in id order.
    QuarantineList,
    /// One quarantined segment (id or unique prefix): its [`crate::quarantine::Entry`].
    QuarantineShow {
        id: String,
    },
    /// Delete quarantined files and their records: these (ids or unique prefixes), or all.
    /// Answered with a [`crate::quarantine::PurgeReport`].
    QuarantinePurge {
        ids: Vec<String>,
        all: bool,
    },
    /// Read `edge.toml` again and apply what can change live; answered with what changed and
    /// which changed keys need a restart (an invalid file: error, exit code 3, nothing changed).
    Reload,
    /// The sequence history (listing): [`store::lifecycle::SequenceRow`] items as JSON, of one
    /// channel or all, sorted by channel and name.
    Sequences {
        channel: Option<String>,
    },
    /// The recalled ids (listing), each with its recall, in id order, at most
    /// [`crate::daemon::lifecycle_view::RECALLED_LIST_MAX`].
    Recalled,
}

/// Signed receipt batches in one `NeedMerge` request: 256 of at most
/// [`net::receipts::SIGNED_RECEIPT_BYTES_MAX`] (5.6 KiB), hex, are under 3 MiB of JSON.
pub const CONTROL_NEED_MERGE_RECEIPTS_MAX: usize = 256;
/// Certificates in one `NeedMerge` request: 64 of at most 4 KiB, hex, are 512 KiB of JSON.
pub const CONTROL_NEED_MERGE_CERTS_MAX: usize = 64;

// A full `NeedMerge` request (hex doubles every byte; 64 bytes of JSON per item) fits a frame.
const _: () = assert!(
    CONTROL_NEED_MERGE_RECEIPTS_MAX * (2 * net::receipts::SIGNED_RECEIPT_BYTES_MAX + 64)
        + CONTROL_NEED_MERGE_CERTS_MAX * (2 * net::receipts::RECEIPT_CERT_BYTES_MAX + 64)
        < CONTROL_FRAME_BYTES_MAX as usize
);

impl Request {
    /// Whether the answer is a listing (`Page` frames, then `End`) rather than one frame.
    pub fn is_listing(&self) -> bool {
        matches!(
            self,
            Request::Segments
                | Request::DlqList
                | Request::Fleet { .. }
                | Request::ExportSelect { .. }
                | Request::DlqRequeue { .. }
                | Request::DlqPurge { .. }
        ) || self.is_need_listing()
            || matches!(
                self,
                Request::QuarantineList | Request::Sequences { .. } | Request::Recalled
            )
    }

    /// The need-list listings (kept apart so the list above stays as it was).
    pub fn is_need_listing(&self) -> bool {
        matches!(
            self,
            Request::NeedHeld | Request::NeedStored | Request::NeedReceipts
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    Ok {
        body: serde_json::Value,
    },
    Error {
        code: u8,
        message: String,
    },
    /// `len` raw bytes of the `.seg` file follow this frame.
    ExportStream {
        id: String,
        len: u64,
    },
    /// One page of a listing; more pages, then `End`, follow.
    Page {
        items: Vec<serde_json::Value>,
    },
    /// The end of a listing of `count` items.
    End {
        count: u64,
    },
}

/// What a `Page` frame's JSON begins and ends with, around its items (the daemon writes pages
/// item by item, without building the `Response`).
pub const PAGE_FRAME_HEAD: &[u8] = br#"{"kind":"page","items":["#;
/// See [`PAGE_FRAME_HEAD`].
pub const PAGE_FRAME_TAIL: &[u8] = b"]}";

/// Writes one frame.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|len| *len <= CONTROL_FRAME_BYTES_MAX)
        .ok_or_else(|| std::io::Error::other("control frame too large"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&body)?;
    w.flush()
}

/// Writes one frame whose JSON is already encoded.
pub fn write_raw_frame<W: Write>(w: &mut W, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|len| *len <= CONTROL_FRAME_BYTES_MAX)
        .ok_or_else(|| std::io::Error::other("control frame too large"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(body)?;
    w.flush()
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len);
    if len > CONTROL_FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("control frame of {len} bytes exceeds {CONTROL_FRAME_BYTES_MAX}"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cap on an announced outboard is exactly the outboard of the largest payload: no
    /// real import is refused, and nothing larger is ever allocated.
    #[test]
    fn inv_17_the_import_outboard_cap_is_the_largest_payloads_outboard() {
        let largest = store::outboard::outboard_len(PAYLOAD_BYTES_MAX);
        assert_eq!(CONTROL_IMPORT_OUTBOARD_BYTES_MAX, largest);
        assert!(store::outboard::outboard_len(PAYLOAD_BYTES_MAX - 1) <= largest);
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        let req = Request::DlqRequeue {
            peer: "node-2".into(),
            segment: None,
        };
        write_frame(&mut buf, &req).unwrap();
        let got: Request = read_frame(&mut buf.as_slice()).unwrap().unwrap();
        assert_eq!(got, req);
        let none: Option<Request> = read_frame(&mut [].as_slice()).unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn control_limits_defaults_validate_and_bounds_name_their_key() {
        let ok = ControlLimits::default();
        assert_eq!(ok.problems(), []);
        assert_eq!(
            ok.stream_window_bytes_min(),
            CONTROL_STREAM_RATE_MIN_BYTES_PER_S * CONTROL_STREAM_RATE_WINDOW_MS / 1000
        );
        let key = |l: ControlLimits| match l.problems().first() {
            Some(e) => Err(e.key),
            None => Ok(()),
        };
        let at = |f: fn(&mut ControlLimits)| {
            let mut l = ControlLimits::default();
            f(&mut l);
            l
        };
        assert_eq!(key(at(|l| l.connections_max = 0)), Err("connections_max"));
        assert_eq!(
            key(at(|l| l.connections_max = CONTROL_CONNECTIONS_LIMIT)),
            Ok(())
        );
        assert_eq!(
            key(at(|l| l.connections_max = CONTROL_CONNECTIONS_LIMIT + 1)),
            Err("connections_max")
        );
        assert_eq!(key(at(|l| l.streams_max = 0)), Err("streams_max"));
        assert_eq!(key(at(|l| l.streams_max = CONTROL_CONNECTIONS_MAX)), Ok(()));
        assert_eq!(
            key(at(|l| l.streams_max = CONTROL_CONNECTIONS_MAX + 1)),
            Err("streams_max")
        );
        assert_eq!(key(at(|l| l.idle_timeout_ms = 0)), Err("idle_timeout_ms"));
        assert_eq!(
            key(at(|l| l.request_deadline_ms = 0)),
            Err("request_deadline_ms")
        );
        assert_eq!(
            key(at(|l| l.request_deadline_ms = CONTROL_TIMEOUT_MS_LIMIT)),
            Ok(())
        );
        assert_eq!(
            key(at(|l| l.request_deadline_ms = CONTROL_TIMEOUT_MS_LIMIT + 1)),
            Err("request_deadline_ms")
        );
        assert_eq!(
            key(at(|l| l.stream_rate_window_ms = 0)),
            Err("stream_rate_window_ms")
        );
        assert_eq!(key(at(|l| l.import_window = 0)), Err("import_window"));
        assert_eq!(
            key(at(|l| l.import_window = CONTROL_IMPORT_WINDOW_LIMIT)),
            Ok(())
        );
        assert_eq!(
            key(at(|l| l.import_window = CONTROL_IMPORT_WINDOW_LIMIT + 1)),
            Err("import_window")
        );
        assert_eq!(
            key(at(
                |l| l.import_window_bytes = CONTROL_IMPORT_PIPELINED_BYTES_MAX - 1
            )),
            Err("import_window_bytes")
        );
        assert_eq!(
            key(at(
                |l| l.import_window_bytes = CONTROL_IMPORT_PIPELINED_BYTES_MAX
            )),
            Ok(())
        );
        assert_eq!(
            key(at(
                |l| l.import_window_bytes = CONTROL_IMPORT_WINDOW_BYTES_LIMIT + 1
            )),
            Err("import_window_bytes")
        );
        assert_eq!(key(at(|l| l.list_page_items = 0)), Err("list_page_items"));
        assert_eq!(
            key(at(|l| l.list_page_items = CONTROL_LIST_PAGE_ITEMS_LIMIT)),
            Ok(())
        );
        assert_eq!(
            key(at(|l| l.list_page_items = CONTROL_LIST_PAGE_ITEMS_LIMIT + 1)),
            Err("list_page_items")
        );
        assert_eq!(
            key(at(|l| l.list_page_bytes = CONTROL_LIST_PAGE_BYTES_MIN - 1)),
            Err("list_page_bytes")
        );
        assert_eq!(
            key(at(|l| l.list_page_bytes = CONTROL_LIST_PAGE_BYTES_MIN)),
            Ok(())
        );
        assert_eq!(
            key(at(|l| l.list_page_bytes = CONTROL_LIST_PAGE_BYTES_LIMIT)),
            Ok(())
        );
        assert_eq!(
            key(at(|l| l.list_page_bytes = CONTROL_LIST_PAGE_BYTES_LIMIT + 1)),
            Err("list_page_bytes")
        );
        // A rate of 0 still wants one byte per window; a huge one saturates.
        assert_eq!(
            at(|l| l.stream_rate_min_bytes_per_s = 0).stream_window_bytes_min(),
            1
        );
        assert_eq!(
            at(|l| l.stream_rate_min_bytes_per_s = u64::MAX).stream_window_bytes_min(),
            u64::MAX
        );
    }

    #[test]
    fn a_page_written_from_its_head_and_tail_is_a_page_frame() {
        let mut body = PAGE_FRAME_HEAD.to_vec();
        body.extend_from_slice(br#"{"a":1},"b""#);
        body.extend_from_slice(PAGE_FRAME_TAIL);
        let mut buf = Vec::new();
        write_raw_frame(&mut buf, &body).unwrap();
        let got: Response = read_frame(&mut buf.as_slice()).unwrap().unwrap();
        assert_eq!(
            got,
            Response::Page {
                items: vec![serde_json::json!({ "a": 1 }), serde_json::json!("b")]
            }
        );
        // Every listing answers in pages; the others in one frame.
        assert!(Request::Segments.is_listing() && Request::DlqList.is_listing());
        assert!(!Request::Status.is_listing() && !Request::Peers.is_listing());
    }

    #[test]
    fn inv_17_oversized_control_frame_rejected_before_alloc() {
        let mut buf = (CONTROL_FRAME_BYTES_MAX + 1).to_le_bytes().to_vec();
        buf.extend_from_slice(b"{}");
        let err = read_frame::<_, Request>(&mut buf.as_slice()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
