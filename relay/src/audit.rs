//! The ledger's agreement with itself and with the store, checked on demand (`edged fsck`).
//!
//! The ledger keeps several tables in step inside every transaction (see [`crate::ledger`]):
//! `relay-due-v1` lists exactly the pending jobs at their due times; a dead letter not purged
//! has its row in `relay-dead-letters-v1`; `relay-job-counts-v1` counts the jobs per state; a
//! job that still owes its segment (pending, or dead with its pin kept) pins it in the store
//! (`relay:<peer>`), and no other relay pin exists. An audit reads all of them in one snapshot
//! and reports every place they disagree, in words.
//!
//! [`repair`] rebuilds what can be rebuilt from the jobs themselves (the due list, the counts,
//! dead-letter rows of jobs no longer dead, the pins) and must run with no relay open on the
//! store: a running relay's scheduler holds the due list in memory. A job that owes a segment
//! the store no longer holds, and a dead letter whose row is gone, are reported but not
//! changed: what they should become is an operator's decision (`edged dlq`).

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable};
use store::SegmentId;
use store::index::ReadView;

use crate::core::JobKey;
use crate::error::{RelayError, db};
use crate::peer::pin_owner;
use crate::tables::{
    CountSlot, DEAD, DUE, DeadRow, JOB_COUNTS, JOBS, JobRow, JobState, decode, due_key, job_key,
    parse_due_key, parse_job_key,
};

/// The owner prefix of the relay's pins.
const PIN_PREFIX: &str = "relay:";
/// Rebuilding passes at most: each fixes up to its bound of rows, so a ledger in very bad shape
/// is still repaired without holding every fix in memory at once.
const REPAIR_PASSES_MAX: usize = 64;
/// Fixes gathered in one pass (and findings listed by one audit, beyond which they are counted).
pub const AUDIT_LISTED_MAX: usize = 1000;

/// One disagreement, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    /// Stable name: `due_missing`, `due_stray`, `dead_row_missing`, `dead_row_stray`,
    /// `pin_missing`, `pin_stray`, `segment_missing`, `counts`.
    pub kind: &'static str,
    pub segment: Option<SegmentId>,
    pub what: String,
    /// [`repair`] rebuilds it.
    pub repairable: bool,
}

/// What an audit found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    pub jobs: u64,
    /// At most [`AUDIT_LISTED_MAX`]; `total` counts them all.
    pub found: Vec<Disagreement>,
    pub total: u64,
}

impl Audit {
    fn add(&mut self, d: Disagreement) {
        self.total += 1;
        if self.found.len() < AUDIT_LISTED_MAX {
            self.found.push(d);
        }
    }

    pub fn repairable(&self) -> bool {
        self.found.iter().any(|d| d.repairable)
    }
}

/// A change [`repair`] makes.
#[derive(Debug, Clone)]
enum Fix {
    InsertDue(Vec<u8>, u8),
    RemoveDue(Vec<u8>),
    RemoveDead(Vec<u8>),
    Pin(SegmentId, String),
    Unpin(SegmentId, String),
    Counts(BTreeMap<CountSlot, u64>),
}

/// Reads the ledger and the store's index and pins in one snapshot and reports where they
/// disagree.
pub fn audit(store: &store::Store) -> Result<Audit, RelayError> {
    Ok(scan(store, usize::MAX)?.0)
}

/// Rebuilds the due list, the counts, stray dead-letter rows and the relay's pins from the jobs;
/// returns how many rows were changed. Only with no relay open on `store`.
pub fn repair(store: &store::Store) -> Result<u64, RelayError> {
    let mut changed = 0u64;
    for _ in 0..REPAIR_PASSES_MAX {
        let (_, fixes) = scan(store, AUDIT_LISTED_MAX)?;
        if fixes.is_empty() {
            return Ok(changed);
        }
        changed += fixes.len() as u64;
        store.writer().write(move |txn| {
            for fix in &fixes {
                match fix {
                    Fix::InsertDue(k, priority) => {
                        txn.open_table(DUE)?.insert(k.as_slice(), *priority)?;
                    }
                    Fix::RemoveDue(k) => {
                        txn.open_table(DUE)?.remove(k.as_slice())?;
                    }
                    Fix::RemoveDead(k) => {
                        txn.open_table(DEAD)?.remove(k.as_slice())?;
                    }
                    Fix::Pin(id, owner) => store::index::pin(txn, id, owner)?,
                    Fix::Unpin(id, owner) => store::index::unpin(txn, id, owner)?,
                    Fix::Counts(counts) => {
                        let mut table = txn.open_table(JOB_COUNTS)?;
                        for slot in CountSlot::ALL {
                            table.insert(slot.key(), counts.get(&slot).copied().unwrap_or(0))?;
                        }
                    }
                }
            }
            Ok(())
        })?;
    }
    Ok(changed)
}

/// One pass: the audit, and up to `fixes_max` fixes of what it found.
fn scan(store: &store::Store, fixes_max: usize) -> Result<(Audit, Vec<Fix>), RelayError> {
    let read = store.database().begin_read().map_err(db)?;
    let view = ReadView::open(&read)?;
    let jobs = match read.open_table(JOBS) {
        Ok(t) => t,
        // A store no relay ever opened (seeded by an offline import): no ledger to check.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Audit::default(), Vec::new())),
        Err(e) => return Err(db(e)),
    };
    let due = read.open_table(DUE).map_err(db)?;
    let dead = read.open_table(DEAD).map_err(db)?;
    let stored_counts = read.open_table(JOB_COUNTS).map_err(db)?;
    let mut audit = Audit::default();
    let mut fixes = Vec::new();
    let fix = |fixes: &mut Vec<Fix>, f: Fix| {
        if fixes.len() < fixes_max {
            fixes.push(f);
        }
    };
    let mut counts: BTreeMap<CountSlot, u64> = BTreeMap::new();

    for entry in jobs.iter().map_err(db)? {
        let (k, v) = entry.map_err(db)?;
        let key = parse_job_key(k.value())?;
        let row: JobRow = decode("relay-jobs-v1", v.value())?;
        audit.jobs += 1;
        *counts
            .entry(CountSlot::of(row.state, row.purged))
            .or_insert(0) += 1;
        let owner = pin_owner(&key.peer);
        let stored = view.is_stored(&key.seg)?;
        let owes = match row.state {
            JobState::Pending => {
                let dk = due_key(row.due_ms, &key);
                if due.get(dk.as_slice()).map_err(db)?.is_none() {
                    audit.add(job_finding(
                        "due_missing",
                        &key,
                        "is pending but missing from the due list: nothing would ever run it",
                        true,
                    ));
                    fix(&mut fixes, Fix::InsertDue(dk, row.priority));
                }
                true
            }
            JobState::Dead if !row.purged => match dead.get(k.value()).map_err(db)? {
                Some(d) => {
                    let d: DeadRow = decode("relay-dead-letters-v1", d.value())?;
                    d.pin_release_at_ms.is_some()
                }
                None => {
                    audit.add(job_finding(
                        "dead_row_missing",
                        &key,
                        "is a dead letter without its row in the dead-letter queue: `edged dlq` \
                             cannot show it; `edged dlq requeue` or `purge` of its peer settles it",
                        false,
                    ));
                    false
                }
            },
            _ => false,
        };
        if owes && !stored {
            audit.add(job_finding(
                "segment_missing",
                &key,
                "owes a segment the store no longer holds (quarantined or lost): its attempts \
                 will fail until it is a dead letter",
                false,
            ));
        } else if owes && !view.is_pinned_by(&key.seg, &owner)? {
            audit.add(job_finding(
                "pin_missing",
                &key,
                "owes its segment but does not pin it: the segment could be evicted before it is sent",
                true,
            ));
            fix(&mut fixes, Fix::Pin(key.seg, owner));
        }
    }

    for entry in due.iter().map_err(db)? {
        let (k, _) = entry.map_err(db)?;
        let (due_ms, key) = parse_due_key(k.value())?;
        let row = job_row(&jobs, &key)?;
        let agrees = row
            .as_ref()
            .is_some_and(|r| r.state == JobState::Pending && r.due_ms == due_ms);
        if !agrees {
            let state = row.map_or("no job", |r| r.state.as_str());
            audit.add(job_finding(
                "due_stray",
                &key,
                &format!(
                    "has an entry in the due list but its job is {state} (or due at another time)"
                ),
                true,
            ));
            fix(&mut fixes, Fix::RemoveDue(k.value().to_vec()));
        }
    }

    for entry in dead.iter().map_err(db)? {
        let (k, _) = entry.map_err(db)?;
        let key = parse_job_key(k.value())?;
        let row = job_row(&jobs, &key)?;
        if !row
            .as_ref()
            .is_some_and(|r| r.state == JobState::Dead && !r.purged)
        {
            let state = row.map_or("no job", |r| r.state.as_str());
            audit.add(job_finding(
                "dead_row_stray",
                &key,
                &format!("has a row in the dead-letter queue but its job is {state}"),
                true,
            ));
            fix(&mut fixes, Fix::RemoveDead(k.value().to_vec()));
        }
    }

    view.for_each_pin::<RelayError>(PIN_PREFIX, |seg, owner| {
        let Some(peer) = owner
            .strip_prefix(PIN_PREFIX)
            .and_then(|p| crate::peer::NodeId::new(p).ok())
        else {
            return Ok(());
        };
        let key = JobKey { seg, peer };
        let owes = match job_row(&jobs, &key)? {
            Some(r) if r.state == JobState::Pending => true,
            Some(r) if r.state == JobState::Dead && !r.purged => {
                match dead.get(job_key(&key).as_slice()).map_err(db)? {
                    Some(d) => decode::<DeadRow>("relay-dead-letters-v1", d.value())?
                        .pin_release_at_ms
                        .is_some(),
                    None => false,
                }
            }
            _ => false,
        };
        if !owes {
            audit.add(job_finding(
                "pin_stray",
                &key,
                "is pinned for a peer no job owes it to: it could never be evicted",
                true,
            ));
            fix(&mut fixes, Fix::Unpin(seg, owner.to_owned()));
        }
        Ok(())
    })?;

    let mut differ = Vec::new();
    for slot in CountSlot::ALL {
        let kept = stored_counts
            .get(slot.key())
            .map_err(db)?
            .map_or(0, |v| v.value());
        let actual = counts.get(&slot).copied().unwrap_or(0);
        if kept != actual {
            differ.push(format!("{} {kept} (jobs: {actual})", slot.key()));
        }
    }
    if !differ.is_empty() {
        audit.add(Disagreement {
            kind: "counts",
            segment: None,
            what: format!(
                "the job counts disagree with the jobs: {}",
                differ.join(", ")
            ),
            repairable: true,
        });
        fix(&mut fixes, Fix::Counts(counts));
    }
    Ok((audit, fixes))
}

fn job_row(
    jobs: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    key: &JobKey,
) -> Result<Option<JobRow>, RelayError> {
    match jobs.get(job_key(key).as_slice()).map_err(db)? {
        Some(v) => Ok(Some(decode("relay-jobs-v1", v.value())?)),
        None => Ok(None),
    }
}

fn job_finding(kind: &'static str, key: &JobKey, what: &str, repairable: bool) -> Disagreement {
    Disagreement {
        kind,
        segment: Some(key.seg),
        what: format!("the job for peer {} {what}", key.peer),
        repairable,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use store::fs::sim::SimFs;
    use store::{IngestOptions, IngestOutcome, Store, StoreConfig};

    use super::*;
    use crate::harness::segments::{Publisher, SegSpec, T0_MS};
    use crate::{NodeId, Relay, RelayConfig};

    fn node(publisher: &Publisher, fs: &SimFs) -> (Store, Relay) {
        let mut cfg = RelayConfig::new(NodeId::new("n0").unwrap(), []);
        cfg.known_peers = ["a", "b"].iter().map(|p| NodeId::new(p).unwrap()).collect();
        let mut store_cfg = StoreConfig::new("/data", 1 << 20, publisher.trusted());
        store_cfg.min_free_bytes = 0;
        let arc: Arc<dyn store::fs::Fs> = Arc::new(fs.clone());
        let (store, _) = Store::open(store_cfg, arc, T0_MS).unwrap();
        let relay = Relay::open(store.clone(), cfg, T0_MS).unwrap();
        (store, relay)
    }

    fn import(relay: &Relay, publisher: &Publisher, name: &str) -> SegmentId {
        let (_, file) = publisher.segment(&SegSpec::named(name));
        match relay
            .ingest_reader(file.as_slice(), &IngestOptions::import(), T0_MS)
            .unwrap()
        {
            IngestOutcome::Stored(s) => s.id,
            other => panic!("{other:?}"),
        }
    }

    fn kinds(a: &Audit) -> Vec<&'static str> {
        let mut k: Vec<_> = a.found.iter().map(|d| d.kind).collect();
        k.sort_unstable();
        k
    }

    fn key(seg: SegmentId, peer: &str) -> JobKey {
        JobKey {
            seg,
            peer: NodeId::new(peer).unwrap(),
        }
    }

    #[test]
    fn a_ledger_kept_by_the_relay_agrees() {
        let publisher = Publisher::from_seed(7);
        let fs = SimFs::new();
        let (store, relay) = node(&publisher, &fs);
        import(&relay, &publisher, "one");
        import(&relay, &publisher, "two");
        let a = audit(&store).unwrap();
        assert_eq!((a.jobs, a.total), (4, 0), "{a:?}");
    }

    #[test]
    fn every_disagreement_is_found_and_what_can_be_rebuilt_is() {
        let publisher = Publisher::from_seed(8);
        let fs = SimFs::new();
        let (store, relay) = node(&publisher, &fs);
        let seg = import(&relay, &publisher, "one");
        let row = relay.job(&key(seg, "a")).unwrap().unwrap();
        store
            .writer()
            .write(move |txn| {
                let ka = key(seg, "a");
                txn.open_table(DUE)?
                    .remove(due_key(row.due_ms, &ka).as_slice())?;
                store::index::unpin(txn, &seg, "relay:b")?;
                store::index::pin(txn, &seg, "relay:z")?;
                txn.open_table(JOB_COUNTS)?.insert("pending", 7)?;
                txn.open_table(DEAD)?.insert(
                    job_key(&key(seg, "b")).as_slice(),
                    crate::tables::encode(&DeadRow {
                        attempts: 1,
                        store_full_attempts: 0,
                        last_error: "x".into(),
                        dead_at_ms: T0_MS,
                        pin_release_at_ms: None,
                    })
                    .as_slice(),
                )?;
                Ok(())
            })
            .unwrap();
        let a = audit(&store).unwrap();
        assert_eq!(
            kinds(&a),
            [
                "counts",
                "dead_row_stray",
                "due_missing",
                "pin_missing",
                "pin_stray"
            ],
            "{a:?}"
        );
        assert!(a.found.iter().all(|d| d.repairable));
        drop(relay);
        assert_eq!(repair(&store).unwrap(), 5);
        assert_eq!(audit(&store).unwrap().total, 0);
        assert_eq!(repair(&store).unwrap(), 0, "nothing left to do");
    }

    #[test]
    fn a_job_owing_a_segment_no_longer_stored_is_reported_not_changed() {
        let publisher = Publisher::from_seed(9);
        let fs = SimFs::new();
        let (store, relay) = node(&publisher, &fs);
        let seg = import(&relay, &publisher, "one");
        store.quarantine(&seg, "test", T0_MS).unwrap();
        let a = audit(&store).unwrap();
        assert!(
            a.found
                .iter()
                .any(|d| d.kind == "segment_missing" && !d.repairable),
            "{a:?}"
        );
        drop(relay);
        repair(&store).unwrap();
        assert!(kinds(&audit(&store).unwrap()).contains(&"segment_missing"));
        assert_eq!(relay_jobs(&store), 2, "the jobs stay");
    }

    #[test]
    fn more_disagreements_than_one_pass_holds_are_counted_and_repaired_in_passes() {
        let publisher = Publisher::from_seed(10);
        let fs = SimFs::new();
        let (store, relay) = node(&publisher, &fs);
        let extra = 5u32;
        let strays = AUDIT_LISTED_MAX as u32 + extra;
        store
            .writer()
            .write(move |txn| {
                for i in 0..strays {
                    let mut id = [0u8; 32];
                    id[..4].copy_from_slice(&i.to_be_bytes());
                    store::index::pin(txn, &SegmentId(id), "relay:z")?;
                }
                Ok(())
            })
            .unwrap();
        let a = audit(&store).unwrap();
        assert_eq!(
            (a.found.len(), a.total),
            (AUDIT_LISTED_MAX, u64::from(strays)),
            "listed up to the bound, all counted"
        );
        drop(relay);
        assert_eq!(repair(&store).unwrap(), u64::from(strays), "two passes");
        assert_eq!(audit(&store).unwrap().total, 0);
    }

    fn relay_jobs(store: &Store) -> usize {
        let read = store.database().begin_read().unwrap();
        read.open_table(JOBS).unwrap().iter().unwrap().count()
    }
}
