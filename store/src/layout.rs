//! Where everything lives in a data directory.
//!
//! ```text
//! DATA_DIR/
//!   edge.redb                 index and relay ledger (one database, one transaction per ingest)
//!   edge.redb.new             only while a new store creates its database (renamed when ready)
//!   segments/00/ … segments/ff/
//!     <64 hex id>.seg         a stored segment, exactly the .seg file format
//!   tmp/<64 hex id>.part      an ingest in flight, or a partial kept for resume
//!   quarantine/<64 hex id>.seg  a file that failed verification at rest, kept as evidence
//!   scrub-state.json          where the daemon's background scrub is (kept across restarts)
//! ```
//!
//! File names are derived from ids only, never from anything a publisher or peer chose.

use std::path::{Path, PathBuf};

use crate::id::SegmentId;

pub(crate) const DB_FILE: &str = "edge.redb";
pub(crate) const SEGMENTS_DIR: &str = "segments";
pub(crate) const TMP_DIR: &str = "tmp";
pub(crate) const QUARANTINE_DIR: &str = "quarantine";
pub(crate) const SEG_EXT: &str = "seg";
pub(crate) const PART_EXT: &str = "part";

/// Paths of one data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn db(&self) -> PathBuf {
        self.root.join(DB_FILE)
    }

    pub fn segments(&self) -> PathBuf {
        self.root.join(SEGMENTS_DIR)
    }

    pub fn tmp(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    pub fn quarantine(&self) -> PathBuf {
        self.root.join(QUARANTINE_DIR)
    }

    /// The fan-out directory holding `id`'s file.
    pub fn fanout(&self, id: &SegmentId) -> PathBuf {
        self.segments().join(id.fanout_dir())
    }

    /// Every fan-out directory, in order.
    pub fn fanouts(&self) -> impl Iterator<Item = PathBuf> + '_ {
        (0..=255u8).map(|b| self.segments().join(format!("{b:02x}")))
    }

    pub fn segment_file(&self, id: &SegmentId) -> PathBuf {
        self.fanout(id).join(format!("{id}.{SEG_EXT}"))
    }

    /// The daemon's background scrub position (JSON; losing it only restarts a pass).
    pub fn scrub_state(&self) -> PathBuf {
        self.root.join("scrub-state.json")
    }

    pub fn tmp_file(&self, id: &SegmentId) -> PathBuf {
        self.tmp().join(format!("{id}.{PART_EXT}"))
    }

    pub fn quarantine_file(&self, id: &SegmentId) -> PathBuf {
        self.quarantine().join(format!("{id}.{SEG_EXT}"))
    }
}

/// The id in a file name `<64 hex>.<ext>`, if it is one.
pub(crate) fn id_from_file_name(name: &std::ffi::OsStr, ext: &str) -> Option<SegmentId> {
    let name = name.to_str()?;
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    stem.parse().ok()
}
