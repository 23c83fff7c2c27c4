//! The control socket: how operator commands talk to the running daemon.
//!
//! A Unix stream socket in the data directory (mode 0600, so only the daemon's user can use it).
//! Each message is a frame: a u32 little-endian length, then that many bytes of JSON. A request
//! gets one response frame, except:
//!
//! - `Import { len, .. }`: the request frame is followed by exactly `len` raw bytes of a `.seg`
//!   file, read by the CLI from the medium and streamed here (the daemon never opens the
//!   medium); the daemon verifies and stores it and answers with the outcome.
//! - `Export { id }`: the response frame `ExportStream { len, .. }` is followed by exactly `len`
//!   raw bytes of the stored `.seg` file; the CLI writes it atomically and verifies it.
//!
//! Frames are bounded by [`CONTROL_FRAME_BYTES_MAX`], checked before allocating.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Largest control frame (JSON), in bytes.
pub const CONTROL_FRAME_BYTES_MAX: u32 = 4 << 20;
/// Most control connections served at once; more wait in the listen backlog.
pub const CONTROL_CONNECTIONS_MAX: usize = 8;
/// A control client that sends nothing for this long is disconnected.
pub const CONTROL_IDLE_TIMEOUT_MS: u64 = 60_000;

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
    /// `len` raw bytes of a `.seg` file follow this frame.
    Import {
        file_name: String,
        len: u64,
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
}

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
    fn inv_17_oversized_control_frame_rejected_before_alloc() {
        let mut buf = (CONTROL_FRAME_BYTES_MAX + 1).to_le_bytes().to_vec();
        buf.extend_from_slice(b"{}");
        let err = read_frame::<_, Request>(&mut buf.as_slice()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
