//! The `.seg` file: one signed segment, as stored on disk, carried on a USB stick and (framed)
//! sent on the wire. Export is a copy; relay is a stream of the stored file.
//!
//! # Layout
//!
//! All integers little-endian.
//!
//! | offset | bytes | field | rule |
//! |---|---|---|---|
//! | 0 | 6 | magic | [`SEG_MAGIC`] (`EDGSEG`) |
//! | 6 | 2 | format version, u16 LE | = [`SEG_FORMAT_VERSION`] |
//! | 8 | 4 | `header_len`, u32 LE | `1..=`[`HEADER_BYTES_MAX`] |
//! | 12 | `header_len` | signed manifest | [`SignedManifest::encode`], no trailing bytes |
//! | 12 + `header_len` | `payload_len` | payload | exactly `manifest.payload_len` bytes, blake3 = `manifest.payload_hash` |
//! | 12 + `header_len` + `payload_len` | — | end of file | nothing follows |
//!
//! Total length: [`seg_file_len`]`(header_len, payload_len)` =
//! [`SEG_PREAMBLE_BYTES`] + `header_len` + `payload_len`.
//!
//! # Guarantees
//!
//! - The header length is checked before the header buffer is allocated; nothing is allocated
//!   on behalf of a claimed length larger than [`HEADER_BYTES_MAX`] (INV-17).
//! - Payloads are streamed through [`STREAM_BUF_BYTES`] buffers and hashed on the way; memory
//!   use does not depend on the payload length (INV-20).
//! - A payload is accepted only if it has exactly the declared length, is followed by end of
//!   file, and hashes to the declared blake3 (INV-02). Writers that stream to a temporary file
//!   ([`write_seg`], [`copy_payload`]) learn about a mismatch only at the end: the caller must
//!   then discard what was written.
//! - The header is the signed manifest's one canonical encoding (an overlong length varint is
//!   refused), so a segment has exactly one `.seg` file. When a file's length is known before
//!   it is read, a length other than [`file_len_of`] its header is refused at once
//!   ([`SegFileError::FileLengthMismatch`]): a truncated or padded copy.

use std::io::{self, Read, Write};

use crate::keys::TrustedPublishers;
use crate::limits::{
    HEADER_BYTES_MAX, SEG_FORMAT_VERSION, SEG_MAGIC, SEG_PREAMBLE_BYTES, STREAM_BUF_BYTES,
};
use crate::manifest::{ManifestError, SignedManifest, VerifyError};

/// Errors reading, writing or verifying a `.seg` file.
#[derive(Debug, thiserror::Error)]
pub enum SegFileError {
    /// The file does not start with [`SEG_MAGIC`].
    #[error("not a segment file (bad magic)")]
    BadMagic,
    /// The file's format version is not [`SEG_FORMAT_VERSION`].
    #[error("unsupported segment file version {0} (this build reads {SEG_FORMAT_VERSION})")]
    UnsupportedVersion(u16),
    /// The declared header length is 0 or larger than [`HEADER_BYTES_MAX`]; nothing was allocated
    /// for it.
    #[error("segment header length {len} is outside 1..={HEADER_BYTES_MAX}")]
    HeaderTooLarge {
        /// The declared header length, in bytes.
        len: u32,
    },
    /// The file ends inside the preamble or the header.
    #[error("segment file ends inside its header")]
    TruncatedHeader,
    /// The header is not a valid signed manifest.
    #[error("invalid segment manifest: {0}")]
    Manifest(#[from] ManifestError),
    /// The signed manifest does not verify (untrusted, bad signature, expired, from the future).
    #[error("segment rejected: {0}")]
    Verify(#[from] VerifyError),
    /// The payload ends before the declared length.
    #[error("segment payload truncated: expected {expected} bytes, got {got}")]
    TruncatedPayload {
        /// The declared payload length, in bytes.
        expected: u64,
        /// Bytes actually present.
        got: u64,
    },
    /// Bytes follow the declared payload.
    #[error("segment payload longer than its declared length")]
    PayloadTooLong,
    /// The file's length, known before its payload is read (file metadata, an announced stream
    /// length), is not what its header declares: the file is truncated or padded.
    #[error("file is {actual} bytes but its header declares {declared}: truncated or padded copy")]
    FileLengthMismatch {
        /// Preamble + header + declared payload, in bytes.
        declared: u64,
        /// The length of the file as given.
        actual: u64,
    },
    /// The payload does not hash to the declared blake3.
    #[error("segment payload hash mismatch: expected {}, got {}", hex::encode(.expected), hex::encode(.actual))]
    HashMismatch {
        /// The hash declared in the manifest.
        expected: [u8; 32],
        /// The hash of the bytes read.
        actual: [u8; 32],
    },
    /// The payload's outboard has the wrong length or does not hash to the manifest's root.
    #[error("segment outboard refused: {0}")]
    BadOutboard(#[from] crate::outboard::OutboardError),
    /// A group of the payload does not hash to its CV in the (verified) outboard.
    #[error("segment {0}")]
    GroupMismatch(#[from] crate::outboard::GroupMismatch),
    /// An I/O error from the underlying reader or writer.
    #[error("segment file I/O: {0}")]
    Io(#[from] io::Error),
}

/// Total length of a `.seg` file with the given header and payload lengths.
pub fn seg_file_len(header_len: u32, payload_len: u64) -> u64 {
    SEG_PREAMBLE_BYTES + u64::from(header_len) + payload_len
}

/// Total length of the `.seg` file of `signed`.
pub fn file_len_of(signed: &SignedManifest) -> u64 {
    // Cannot truncate: an encoded signed manifest is at most SIGNED_MANIFEST_BYTES_MAX bytes.
    seg_file_len(signed.encoded_len() as u32, signed.manifest().payload_len)
}

/// Writes the preamble and the signed manifest; returns the bytes written, which is the offset
/// of the payload in the file.
pub fn write_header<W: Write>(mut w: W, signed: &SignedManifest) -> io::Result<u64> {
    let header = signed.encode();
    // Cannot truncate: an encoded signed manifest is at most SIGNED_MANIFEST_BYTES_MAX bytes,
    // asserted in limits.rs to be within HEADER_BYTES_MAX (a u32).
    let header_len = header.len() as u32;
    debug_assert!((1..=HEADER_BYTES_MAX).contains(&header_len));
    let mut preamble = [0u8; SEG_PREAMBLE_BYTES as usize];
    preamble[..6].copy_from_slice(&SEG_MAGIC);
    preamble[6..8].copy_from_slice(&SEG_FORMAT_VERSION.to_le_bytes());
    preamble[8..12].copy_from_slice(&header_len.to_le_bytes());
    w.write_all(&preamble)?;
    w.write_all(&header)?;
    Ok(SEG_PREAMBLE_BYTES + u64::from(header_len))
}

/// Maps an unexpected end of file to [`SegFileError::TruncatedHeader`].
fn header_io(e: io::Error) -> SegFileError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        SegFileError::TruncatedHeader
    } else {
        SegFileError::Io(e)
    }
}

/// Reads the preamble and the signed manifest, leaving `r` at the first payload byte.
///
/// The header length is available afterwards as [`SignedManifest::encoded_len`]. The signature
/// is not verified here: see [`SignedManifest::verify`] or [`verify_seg_file`].
pub fn read_header<R: Read>(mut r: R) -> Result<SignedManifest, SegFileError> {
    let mut preamble = [0u8; SEG_PREAMBLE_BYTES as usize];
    r.read_exact(&mut preamble).map_err(header_io)?;
    if preamble[..6] != SEG_MAGIC {
        return Err(SegFileError::BadMagic);
    }
    let version = u16::from_le_bytes([preamble[6], preamble[7]]);
    if version != SEG_FORMAT_VERSION {
        return Err(SegFileError::UnsupportedVersion(version));
    }
    let len = u32::from_le_bytes([preamble[8], preamble[9], preamble[10], preamble[11]]);
    if len == 0 || len > HEADER_BYTES_MAX {
        return Err(SegFileError::HeaderTooLarge { len });
    }
    let mut header = vec![0u8; len as usize];
    r.read_exact(&mut header).map_err(header_io)?;
    Ok(SignedManifest::decode(&header)?)
}

/// Reads exactly the declared payload from a reader positioned after the header, hashing it.
///
/// Yields at most `expected_len` bytes (then end of file). [`PayloadReader::finish`] tells
/// whether the payload was exactly right. Nothing is buffered beyond the caller's buffer.
pub struct PayloadReader<R: Read> {
    inner: R,
    expected_len: u64,
    expected_hash: [u8; 32],
    consumed: u64,
    hasher: blake3::Hasher,
}

impl<R: Read> std::fmt::Debug for PayloadReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadReader")
            .field("expected_len", &self.expected_len)
            .field("consumed", &self.consumed)
            .finish_non_exhaustive()
    }
}

impl<R: Read> PayloadReader<R> {
    /// A reader expecting `expected_len` bytes hashing to `expected_hash`.
    pub fn new(inner: R, expected_len: u64, expected_hash: [u8; 32]) -> Self {
        Self {
            inner,
            expected_len,
            expected_hash,
            consumed: 0,
            hasher: blake3::Hasher::new(),
        }
    }

    /// A reader for the payload declared by `signed`.
    pub fn for_manifest(inner: R, signed: &SignedManifest) -> Self {
        let m = signed.manifest();
        Self::new(inner, m.payload_len, m.payload_hash)
    }

    /// Payload bytes read so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Reads (and hashes) whatever the caller left of the declared payload, then checks that
    /// exactly `expected_len` bytes were there, that the underlying reader is at end of file, and
    /// that the hash matches. Returns the underlying reader.
    pub fn finish(mut self) -> Result<R, SegFileError> {
        if self.consumed < self.expected_len {
            let mut buf = vec![0u8; STREAM_BUF_BYTES];
            loop {
                match self.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(SegFileError::Io(e)),
                }
            }
        }
        if self.consumed < self.expected_len {
            return Err(SegFileError::TruncatedPayload {
                expected: self.expected_len,
                got: self.consumed,
            });
        }
        let mut one = [0u8; 1];
        loop {
            match self.inner.read(&mut one) {
                Ok(0) => break,
                Ok(_) => return Err(SegFileError::PayloadTooLong),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SegFileError::Io(e)),
            }
        }
        let actual = *self.hasher.finalize().as_bytes();
        if actual != self.expected_hash {
            return Err(SegFileError::HashMismatch {
                expected: self.expected_hash,
                actual,
            });
        }
        Ok(self.inner)
    }
}

impl<R: Read> Read for PayloadReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.expected_len - self.consumed;
        // Cannot truncate: min with buf.len(), a usize.
        let want = remaining.min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        self.hasher.update(&buf[..n]);
        self.consumed += n as u64;
        Ok(n)
    }
}

/// Streams exactly `expected_len` bytes from `src` to `dst`, hashing them; checks the length,
/// that `src` then ends, and the hash. Returns the bytes copied. On error, `dst` may hold part
/// (or all) of the bytes: discard it.
pub fn copy_payload<R: Read, W: Write>(
    src: R,
    mut dst: W,
    expected_len: u64,
    expected_hash: [u8; 32],
) -> Result<u64, SegFileError> {
    let mut reader = PayloadReader::new(src, expected_len, expected_hash);
    let mut buf = vec![0u8; STREAM_BUF_BYTES];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        dst.write_all(&buf[..n])?;
    }
    let copied = reader.consumed();
    reader.finish()?;
    dst.flush()?;
    Ok(copied)
}

/// Writes a whole `.seg` file: header, then `payload` streamed and checked against the manifest
/// (length, end of `payload`, hash). Returns the bytes written. On error, discard `out`.
pub fn write_seg<R: Read, W: Write>(
    mut out: W,
    signed: &SignedManifest,
    payload: R,
) -> Result<u64, SegFileError> {
    let header_bytes = write_header(&mut out, signed)?;
    let m = signed.manifest();
    let payload_bytes = copy_payload(payload, &mut out, m.payload_len, m.payload_hash)?;
    Ok(header_bytes + payload_bytes)
}

/// Length and blake3 of everything `r` yields, streamed through a [`STREAM_BUF_BYTES`] buffer.
pub fn hash_reader<R: Read>(mut r: R) -> io::Result<(u64, [u8; 32])> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; STREAM_BUF_BYTES];
    let mut len = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, *hasher.finalize().as_bytes()))
}

/// Fully checks a `.seg` stream: header, trust, signature and freshness (with `skew_ms`), then
/// the payload's length, hash and the end of file. Returns the verified signed manifest.
pub fn verify_seg_file<R: Read>(
    mut r: R,
    trusted: &TrustedPublishers,
    now_ms: u64,
    skew_ms: u64,
) -> Result<SignedManifest, SegFileError> {
    let signed = read_header(&mut r)?;
    signed.verify(trusted, now_ms, skew_ms)?;
    PayloadReader::for_manifest(r, &signed).finish()?;
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PublisherSecret;
    use crate::limits::SIGNED_MANIFEST_BYTES_MAX;
    use crate::manifest::tests::{NOW_MS, manifest_for, secret, trusted};
    use crate::manifest::{Manifest, VerifyError};
    use std::io::Cursor;

    fn payload(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes()[7])
            .collect()
    }

    fn signed_for(payload: &[u8]) -> SignedManifest {
        SignedManifest::sign(manifest_for(&secret(), payload), &secret()).unwrap()
    }

    fn seg(payload: &[u8]) -> (SignedManifest, Vec<u8>) {
        let signed = signed_for(payload);
        let mut out = Vec::new();
        let n = write_seg(&mut out, &signed, payload).unwrap();
        assert_eq!(n, out.len() as u64);
        (signed, out)
    }

    fn verify(bytes: &[u8]) -> Result<SignedManifest, SegFileError> {
        verify_seg_file(Cursor::new(bytes), &trusted(&secret()), NOW_MS, 0)
    }

    fn preamble(magic: &[u8; 6], version: u16, header_len: u32) -> Vec<u8> {
        let mut v = magic.to_vec();
        v.extend_from_slice(&version.to_le_bytes());
        v.extend_from_slice(&header_len.to_le_bytes());
        v
    }

    /// A reader that yields at most `chunk` bytes per call, to exercise short reads.
    struct Dribble<'a>(&'a [u8], usize);
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(self.1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn seg_round_trip_at_buffer_edges() {
        let b = STREAM_BUF_BYTES;
        for len in [0, 1, b - 1, b, b + 1, 3 * (1 << 20) + 7] {
            let data = payload(len);
            let (signed, bytes) = seg(&data);
            let header_len = signed.encoded_len() as u32;
            assert_eq!(bytes.len() as u64, seg_file_len(header_len, len as u64));
            assert_eq!(&bytes[..6], b"EDGSEG");
            assert_eq!(&bytes[6..8], &[1, 0]);
            assert_eq!(&bytes[8..12], &header_len.to_le_bytes());
            assert_eq!(&bytes[bytes.len() - len..], &data[..]);

            let mut r = Cursor::new(&bytes);
            let read = read_header(&mut r).unwrap();
            assert_eq!(read, signed);
            assert_eq!(r.position(), SEG_PREAMBLE_BYTES + u64::from(header_len));
            let mut pr = PayloadReader::for_manifest(&mut r, &read);
            let mut got = Vec::new();
            pr.read_to_end(&mut got).unwrap();
            assert_eq!(got, data);
            pr.finish().unwrap();

            assert_eq!(verify(&bytes).unwrap(), signed);
            assert_eq!(
                hash_reader(&data[..]).unwrap(),
                (len as u64, signed.manifest().payload_hash)
            );
        }
    }

    #[test]
    fn short_reads_are_handled() {
        let data = payload(STREAM_BUF_BYTES + 3);
        let (signed, bytes) = seg(&data);
        let got = verify_seg_file(Dribble(&bytes, 7), &trusted(&secret()), NOW_MS, 0).unwrap();
        assert_eq!(got, signed);
        let mut out = Vec::new();
        write_seg(&mut out, &signed, Dribble(&data, 1000)).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn write_header_returns_payload_offset() {
        let signed = signed_for(b"abc");
        let mut out = Vec::new();
        let off = write_header(&mut out, &signed).unwrap();
        assert_eq!(off, out.len() as u64);
        assert_eq!(off, SEG_PREAMBLE_BYTES + signed.encoded_len() as u64);
        assert!(signed.encoded_len() <= SIGNED_MANIFEST_BYTES_MAX);
    }

    #[test]
    fn finish_drains_unread_payload() {
        let data = payload(STREAM_BUF_BYTES * 2 + 5);
        let signed = signed_for(&data);
        let mut pr = PayloadReader::for_manifest(&data[..], &signed);
        let mut first = [0u8; 10];
        pr.read_exact(&mut first).unwrap();
        pr.finish().unwrap();
    }

    #[test]
    fn inv_17_bad_magic_rejected() {
        let (_, mut bytes) = seg(b"abc");
        bytes[0] ^= 0x20;
        assert!(matches!(verify(&bytes), Err(SegFileError::BadMagic)));
        let mut r = preamble(b"EDGSEH", SEG_FORMAT_VERSION, 10);
        r.extend_from_slice(&[0; 10]);
        assert!(matches!(read_header(&r[..]), Err(SegFileError::BadMagic)));
    }

    #[test]
    fn inv_17_unsupported_version_rejected() {
        for v in [0, SEG_FORMAT_VERSION + 1, u16::MAX] {
            let r = preamble(&SEG_MAGIC, v, 10);
            match read_header(&r[..]) {
                Err(SegFileError::UnsupportedVersion(got)) => assert_eq!(got, v),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn inv_17_header_too_large_rejected_before_alloc() {
        // N+1 with nothing behind it: rejected from the preamble alone, nothing read or allocated.
        let r = preamble(&SEG_MAGIC, SEG_FORMAT_VERSION, HEADER_BYTES_MAX + 1);
        assert!(matches!(
            read_header(&r[..]),
            Err(SegFileError::HeaderTooLarge { len }) if len == HEADER_BYTES_MAX + 1
        ));
        let r = preamble(&SEG_MAGIC, SEG_FORMAT_VERSION, u32::MAX);
        assert!(matches!(
            read_header(&r[..]),
            Err(SegFileError::HeaderTooLarge { len: u32::MAX })
        ));
        let r = preamble(&SEG_MAGIC, SEG_FORMAT_VERSION, 0);
        assert!(matches!(
            read_header(&r[..]),
            Err(SegFileError::HeaderTooLarge { len: 0 })
        ));
        // N is accepted as a length: the reader goes on to read the header (and finds it missing).
        let r = preamble(&SEG_MAGIC, SEG_FORMAT_VERSION, HEADER_BYTES_MAX);
        assert!(matches!(
            read_header(&r[..]),
            Err(SegFileError::TruncatedHeader)
        ));
        // N with N bytes behind it gets as far as decoding them.
        let mut r = preamble(&SEG_MAGIC, SEG_FORMAT_VERSION, HEADER_BYTES_MAX);
        r.resize(r.len() + HEADER_BYTES_MAX as usize, 0);
        assert!(matches!(
            read_header(&r[..]),
            Err(SegFileError::Manifest(_))
        ));
    }

    #[test]
    fn inv_17_truncated_header() {
        let (signed, bytes) = seg(b"abc");
        let header_end = SEG_PREAMBLE_BYTES as usize + signed.encoded_len();
        for cut in 0..header_end {
            assert!(
                matches!(
                    read_header(&bytes[..cut]),
                    Err(SegFileError::TruncatedHeader)
                ),
                "cut at {cut}"
            );
        }
        assert!(read_header(&bytes[..header_end]).is_ok());
    }

    #[test]
    fn inv_17_header_len_mismatch_rejected() {
        // A header_len one larger than the signed manifest: the extra byte is trailing.
        let (signed, bytes) = seg(b"abc");
        let mut b = bytes.clone();
        let len = signed.encoded_len() as u32 + 1;
        b[8..12].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(
            read_header(&b[..]),
            Err(SegFileError::Manifest(ManifestError::TrailingBytes {
                count: 1
            }))
        ));
        // One smaller: the signature is cut short.
        let len = signed.encoded_len() as u32 - 1;
        b[8..12].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(
            read_header(&b[..]),
            Err(SegFileError::Manifest(ManifestError::Decode(_)))
        ));
    }

    #[test]
    fn inv_17_overlong_header_length_varint_rejected_by_verify() {
        // The signed manifest's length varint written in two bytes (`n | 0x80, 0x00`), the
        // header length grown by one to match: the same manifest, the same id, another file.
        let data = b"abc";
        let (signed, bytes) = seg(data);
        let header = signed.encode();
        assert!(header[0] < 0x80);
        let mut overlong = vec![header[0] | 0x80, 0x00];
        overlong.extend_from_slice(&header[1..]);
        let mut file = preamble(&SEG_MAGIC, SEG_FORMAT_VERSION, overlong.len() as u32);
        file.extend_from_slice(&overlong);
        file.extend_from_slice(data);
        assert_eq!(file.len(), bytes.len() + 1);
        assert!(matches!(
            verify(&file),
            Err(SegFileError::Manifest(ManifestError::NotCanonical))
        ));
        assert!(verify(&bytes).is_ok());
    }

    #[test]
    fn inv_02_truncated_payload_rejected() {
        let data = payload(STREAM_BUF_BYTES + 1);
        let (_, bytes) = seg(&data);
        for missing in [1, 2, STREAM_BUF_BYTES, data.len()] {
            match verify(&bytes[..bytes.len() - missing]) {
                Err(SegFileError::TruncatedPayload { expected, got }) => {
                    assert_eq!(expected, data.len() as u64);
                    assert_eq!(got, (data.len() - missing) as u64);
                }
                other => panic!("missing {missing}: {other:?}"),
            }
        }
        let signed = signed_for(&data);
        let mut out = Vec::new();
        assert!(matches!(
            write_seg(&mut out, &signed, &data[..data.len() - 1]),
            Err(SegFileError::TruncatedPayload { .. })
        ));
    }

    #[test]
    fn inv_02_payload_longer_than_declared_rejected() {
        let data = payload(1000);
        let (_, mut bytes) = seg(&data);
        bytes.push(0);
        assert!(matches!(verify(&bytes), Err(SegFileError::PayloadTooLong)));
        let signed = signed_for(&data);
        let mut longer = data.clone();
        longer.push(1);
        let mut out = Vec::new();
        assert!(matches!(
            write_seg(&mut out, &signed, &longer[..]),
            Err(SegFileError::PayloadTooLong)
        ));
        assert!(matches!(
            copy_payload(
                &longer[..],
                io::sink(),
                1000,
                signed.manifest().payload_hash
            ),
            Err(SegFileError::PayloadTooLong)
        ));
    }

    #[test]
    fn inv_02_wrong_hash_rejected() {
        let data = payload(STREAM_BUF_BYTES + 1);
        let (signed, mut bytes) = seg(&data);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let mut tampered = data.clone();
        tampered[data.len() - 1] ^= 1;
        match verify(&bytes) {
            Err(SegFileError::HashMismatch { expected, actual }) => {
                assert_eq!(expected, signed.manifest().payload_hash);
                assert_eq!(actual, *blake3::hash(&tampered).as_bytes());
            }
            other => panic!("{other:?}"),
        }
        let mut out = Vec::new();
        assert!(matches!(
            write_seg(&mut out, &signed, &tampered[..]),
            Err(SegFileError::HashMismatch { .. })
        ));
    }

    #[test]
    fn inv_01_bad_signature_rejected_in_file() {
        let (signed, bytes) = seg(b"abc");
        // Last byte of the header is the last signature byte.
        let sig_last = SEG_PREAMBLE_BYTES as usize + signed.encoded_len() - 1;
        let mut b = bytes.clone();
        b[sig_last] ^= 0x01;
        assert!(matches!(
            verify(&b),
            Err(SegFileError::Verify(VerifyError::BadSignature))
        ));
    }

    #[test]
    fn inv_01_untrusted_publisher_rejected_in_file() {
        let (_, bytes) = seg(b"abc");
        let other = PublisherSecret::from_seed([5; 32]);
        assert!(matches!(
            verify_seg_file(&bytes[..], &trusted(&other), NOW_MS, 0),
            Err(SegFileError::Verify(VerifyError::UntrustedPublisher { .. }))
        ));
    }

    #[test]
    fn inv_16_expired_file_rejected() {
        let data = b"abc";
        let m = Manifest {
            expires_at_ms: Some(NOW_MS + 10),
            ..manifest_for(&secret(), data)
        };
        let signed = SignedManifest::sign(m, &secret()).unwrap();
        let mut bytes = Vec::new();
        write_seg(&mut bytes, &signed, &data[..]).unwrap();
        let t = trusted(&secret());
        assert!(matches!(
            verify_seg_file(&bytes[..], &t, NOW_MS + 10, 0),
            Err(SegFileError::Verify(VerifyError::Expired { .. }))
        ));
        assert!(verify_seg_file(&bytes[..], &t, NOW_MS + 10, 1).is_ok());
    }

    #[test]
    fn io_errors_are_passed_through() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        assert!(matches!(read_header(Failing), Err(SegFileError::Io(_))));
        assert!(matches!(
            copy_payload(Failing, io::sink(), 1, [0; 32]),
            Err(SegFileError::Io(_))
        ));
        assert!(hash_reader(Failing).is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn read_header_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
                let _ = read_header(&bytes[..]);
            }

            #[test]
            fn read_header_never_panics_after_valid_preamble(
                header_len in 0u32..=HEADER_BYTES_MAX + 1,
                rest in proptest::collection::vec(any::<u8>(), 0..700),
            ) {
                let mut bytes = preamble(&SEG_MAGIC, SEG_FORMAT_VERSION, header_len);
                bytes.extend_from_slice(&rest);
                let _ = read_header(&bytes[..]);
            }

            #[test]
            fn mutated_seg_file_never_panics_nor_verifies(
                edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            ) {
                let data = payload(300);
                let (_, good) = seg(&data);
                let mut bytes = good.clone();
                for (at, v) in &edits {
                    let i = at.index(bytes.len());
                    bytes[i] = *v;
                }
                prop_assert_eq!(verify(&bytes).is_ok(), bytes == good);
            }
        }
    }
}
