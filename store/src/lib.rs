//! `store`: the signed segment format and the durable on-disk segment store of `edged`.
//!
//! - Format: [`manifest`] (what a publisher signs), [`id`] (content ids), [`keys`] (publisher
//!   keys and the trusted set), [`segfile`] (the `.seg` file, byte layout in its docs).
//! - Store: [`Store`] opens a data directory ([`layout`]), ingests with the durability contract
//!   of [`ingest`], keeps usage under a ceiling with grants that grow as bytes arrive and evicts
//!   by the rules of [`evict`], recovers after any crash, checks signature, trust and hash of
//!   every segment it serves, scrubs, and quarantines corruption at rest ([`read`]).
//! - Media: [`media`] opens files on removable media only if regular (never following a
//!   symlink, never blocking on a FIFO) and is the one export writer: `<id>.seg` files written
//!   only inside their directory, verified as written, atomically.
//! - Seams: every file operation of the ingest path goes through [`fs::Fs`] (with a power-loss
//!   double, [`fs::sim`]); named [`crash`] points abort the process at exact steps (feature
//!   `failpoints`); time is always passed in (`now_ms`, wall-clock UTC milliseconds).
//! - Proof that tests can fail: named [`mutants`] (feature `mutants`) switch on one deliberate
//!   bug at run time; both features are off in the shipped binary.
//! - Extension: [`index`] lets another component (the relay) add its writes to the same redb
//!   transaction as an ingest, through [`writer::Writer`], the database's one committer.
#![forbid(unsafe_code)]

pub mod agreement;
pub mod crash;
pub mod error;
pub mod evict;
pub mod fs;
pub mod id;
pub mod index;
pub mod inflight;
pub mod ingest;
pub mod keys;
pub mod layout;
pub mod lifecycle;
pub mod limits;
pub mod manifest;
pub mod media;
pub mod mutants;
pub mod outboard;
pub mod quarantine;
pub mod read;
pub mod recall;
pub mod root;
pub mod segfile;
pub mod store;
pub mod tables;
pub mod trust;
pub mod when;
pub mod writer;

pub use error::{ExportError, IngestError, OpenError, StoreError};
pub use id::SegmentId;
pub use ingest::{Begin, Ingest, IngestOptions, IngestOutcome, Stored};
pub use media::{ExportDir, Exported};
pub use quarantine::{Purged, QuarantinedSegment};
pub use read::{ScrubOutcome, ScrubReport, SegmentReader};
pub use store::{
    HeldDigest, Holding, RecoveryReport, SegmentCounts, SegmentInfo, Store, StoreConfig,
};
