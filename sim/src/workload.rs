//! The workload of a run: signed segments, and at which node and time each is imported (the
//! daemon's import path: the store's ingest with the relay's scheduling in its transaction).

use std::sync::Arc;

use rand::Rng;
use relay::harness::segments::{Publisher, SegSpec};
use store::SegmentId;
use store::keys::TrustedPublishers;

use crate::fault::FAULT_WINDOW_MS;

/// Segments of one workload, at most (at least one).
pub const SEGMENTS_MAX: usize = 4;
/// Payload of one segment, at most: small, so a run costs little; transfers still span several
/// frames and checkpoints are not what is under test here.
pub const PAYLOAD_BYTES_MAX: usize = 24 * 1024;
/// Imports happen in the first part of the fault window, so faults hit transfers in flight.
pub const IMPORT_WINDOW_MS: u64 = FAULT_WINDOW_MS / 2;
/// Chance, in percent, that a segment is imported at a second node too (a fleet fed from two
/// USB sticks).
pub const SECOND_IMPORT_PERCENT: u32 = 25;
/// The test publisher's key seed (one publisher, trusted by every node).
pub const PUBLISHER_SEED: u8 = 0x51;

/// One signed segment: its id and `.seg` bytes.
#[derive(Debug, Clone)]
pub struct Segment {
    pub id: SegmentId,
    pub file: Arc<Vec<u8>>,
}

/// An operator's import of segment `segment` at `node`, `at_ms` after the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub at_ms: u64,
    pub node: usize,
    pub segment: usize,
}

/// What the operators feed the fleet.
#[derive(Debug, Clone)]
pub struct Workload {
    pub segments: Vec<Segment>,
    /// In time order.
    pub imports: Vec<Import>,
    pub trusted: TrustedPublishers,
}

impl Workload {
    /// Between one and [`SEGMENTS_MAX`] `all_peers` segments for `n` nodes, named after
    /// `variant` so distinct variants have distinct ids.
    pub fn draw(rng: &mut impl Rng, n: usize, variant: u64) -> Workload {
        let publisher = Publisher::from_seed(PUBLISHER_SEED);
        let count = rng.random_range(1..=SEGMENTS_MAX);
        let mut segments = Vec::with_capacity(count);
        let mut imports = Vec::new();
        for k in 0..count {
            let spec = SegSpec::named(&format!("sim-{variant}-{k}"))
                .payload_len(rng.random_range(1..=PAYLOAD_BYTES_MAX))
                .priority(rng.random_range(0..=255u8));
            let (id, file) = publisher.segment(&spec);
            segments.push(Segment {
                id,
                file: Arc::new(file),
            });
            let first = rng.random_range(0..n);
            imports.push(Import {
                at_ms: rng.random_range(0..IMPORT_WINDOW_MS),
                node: first,
                segment: k,
            });
            if n > 1 && rng.random_range(0..100) < SECOND_IMPORT_PERCENT {
                imports.push(Import {
                    at_ms: rng.random_range(0..IMPORT_WINDOW_MS),
                    node: (first + rng.random_range(1..n)) % n,
                    segment: k,
                });
            }
        }
        imports.sort_by_key(|i| (i.at_ms, i.node, i.segment));
        Workload {
            segments,
            imports,
            trusted: publisher.trusted(),
        }
    }
}
