//! A commit that fails on an I/O error leaves a database that takes no more writes until it is
//! opened again (redb's rule). The store says so ([`Store::failure`]), so that the daemon exits
//! and is restarted instead of answering every later import "closed"; opened again, the store
//! takes writes (INV-23).

use std::sync::Arc;

use redb::TableDefinition;
use store::fs::sim::{Fault, FaultKind, SimFs};
use store::{Store, StoreConfig};

const T: TableDefinition<u64, u64> = TableDefinition::new("test-failure");
const NOW_MS: u64 = 1_790_000_000_000;

fn open(sim: &SimFs) -> Store {
    let mut cfg = StoreConfig::new(std::path::Path::new("/data"), 1 << 30, Default::default());
    cfg.min_free_bytes = 0;
    Store::open(cfg, Arc::new(sim.clone()), NOW_MS)
        .expect("open")
        .0
}

fn put(store: &Store, k: u64) -> Result<(), store::StoreError> {
    store.writer().write(move |txn| {
        txn.open_table(T)?.insert(k, k)?;
        Ok(())
    })
}

#[test]
fn inv_23_a_failed_commit_is_reported_and_a_reopened_store_writes_again() {
    for kind in [FaultKind::SyncFails, FaultKind::Eio, FaultKind::Enospc] {
        let sim = SimFs::new();
        let store = open(&sim);
        put(&store, 1).expect("a healthy write");
        assert_eq!(store.failure(), None, "{kind:?}");
        sim.inject(Fault {
            at_op: sim.op_count(),
            kind,
        });
        assert!(put(&store, 2).is_err(), "{kind:?}: the commit fails");
        let why = store.failure();
        assert!(why.is_some(), "{kind:?}: the failure is reported");
        // The database takes no more writes, and still says why.
        assert!(put(&store, 3).is_err(), "{kind:?}");
        assert_eq!(store.failure(), why);
        store.close();
        let again = open(&sim.crash_image());
        assert_eq!(again.failure(), None, "{kind:?}");
        put(&again, 4).expect("the reopened store writes");
        again.close();
    }
}
