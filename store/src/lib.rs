//! `store`: the signed segment format and the durable on-disk segment store of `edged`.
//!
//! Code map:
//! - [`limits`]: every bound, in one place.
//! - [`id`]: [`SegmentId`](id::SegmentId) (blake3 of the canonical manifest) and id prefixes.
//! - [`keys`]: publisher keys, key files, the trusted set.
//! - [`manifest`]: the manifest, its canonical encoding, signing and verification.
//! - [`segfile`]: the `.seg` file layout, streaming readers and writers.
#![forbid(unsafe_code)]

pub mod id;
pub mod keys;
pub mod limits;
pub mod manifest;
pub mod segfile;
