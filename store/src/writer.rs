//! The committer: the one owner of the database's write transactions.
//!
//! Every write — an ingest's index rows and its caller's relay jobs, a checkpoint, an eviction,
//! a relay outcome — is an operation sent to one thread, which folds whatever is queued (up to
//! [`COMMIT_BATCH_MAX`]) into ONE durable redb transaction and answers each operation only
//! after that commit returned. This is group commit: under concurrency one fsync pays for many
//! writes, and nothing is acknowledged before it is durable.
//!
//! Contract for operations: an operation returns `Err(redb::Error)` only for a storage failure,
//! which aborts the whole batch (every operation in it fails with [`StoreError::CommitFailed`]).
//! A logical failure is part of the operation's own result type (`T`), and an operation that
//! reports one must not have written anything.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use redb::{Database, WriteTransaction};

use crate::crash;
use crate::error::StoreError;
use crate::limits::{COMMIT_BATCH_MAX, COMMIT_QUEUE_MAX};

/// Called after the batch's commit: `Ok` when durable, `Err` with the commit's failure.
type Completion = Box<dyn FnOnce(Result<(), &str>) + Send>;
type Job = Box<dyn FnOnce(&WriteTransaction) -> Result<Completion, redb::Error> + Send>;

/// Handle to the committer thread. Dropping it drains the queue and stops the thread.
#[derive(Debug)]
pub struct Writer {
    tx: Mutex<Option<SyncSender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Batches that ended (committed or not) so far; see [`Writer::generation`].
    generation: Arc<AtomicU64>,
    counts: Arc<Counts>,
}

/// What the committer has done, for operators and tests.
#[derive(Debug, Default)]
struct Counts {
    /// Operations submitted and not yet taken into a batch.
    queued: AtomicUsize,
    /// The most operations one committed batch held.
    largest_batch: AtomicUsize,
    /// Why the database can take no more writes: a transaction could not begin or a commit
    /// failed (redb refuses every later write after an I/O error until it is opened again).
    failure: Mutex<Option<String>>,
}

impl Writer {
    pub(crate) fn start(db: Arc<Database>) -> Result<Writer, StoreError> {
        let (tx, rx) = sync_channel::<Job>(COMMIT_QUEUE_MAX);
        let generation = Arc::new(AtomicU64::new(0));
        let counts = Arc::new(Counts::default());
        let (ended, counted) = (generation.clone(), counts.clone());
        let thread = std::thread::Builder::new()
            .name("store-committer".into())
            .spawn(move || run(&db, &rx, &ended, &counted))
            .map_err(|source| StoreError::Io {
                op: "spawn committer thread",
                path: Default::default(),
                source,
            })?;
        Ok(Writer {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            generation,
            counts,
        })
    }

    /// Operations waiting for the committer (submitted, not yet in a batch).
    pub fn queued(&self) -> usize {
        self.counts.queued.load(Ordering::Acquire)
    }

    /// Why the database takes no more writes, once a commit failed or a transaction could not
    /// begin (see [`crate::Store::failure`]).
    pub fn failure(&self) -> Option<String> {
        self.counts
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The most operations one committed batch has held so far.
    pub fn largest_batch(&self) -> usize {
        self.counts.largest_batch.load(Ordering::Acquire)
    }

    /// A number that changes whenever a write batch has ended, before any of its operations is
    /// answered. What was read from the database while it stayed the same is still what the
    /// database holds: the store caches answers that cost a pass over a whole table (the held
    /// digest, the next expiry) under it, so a node that writes nothing pays for them once.
    /// Read it before the read transaction whose result is cached: a batch ending in between
    /// only makes the cache stale-looking, never stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Runs `op` in the next batch and waits until that batch is durably committed.
    pub fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
        T: Send + 'static,
    {
        let (reply_tx, reply_rx) = sync_channel::<Result<T, StoreError>>(1);
        self.submit(op, move |result| {
            // The waiter may have gone away (it never does in this function); nothing to do then.
            let _ = reply_tx.send(result);
        })?;
        reply_rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Queues `op` and calls `done` (on the committer thread) once its batch is committed or
    /// has failed. `done` must be quick: it runs before the next batch starts. This is the form
    /// async callers use, bridging `done` to their own channel.
    pub fn submit<T, F, D>(&self, op: F, done: D) -> Result<(), StoreError>
    where
        F: FnOnce(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
        T: Send + 'static,
        D: FnOnce(Result<T, StoreError>) + Send + 'static,
    {
        let job: Job = Box::new(move |txn| {
            let value = op(txn)?;
            Ok(Box::new(move |commit: Result<(), &str>| match commit {
                Ok(()) => done(Ok(value)),
                Err(reason) => done(Err(StoreError::CommitFailed(reason.to_owned()))),
            }) as Completion)
        });
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Closed)?;
        self.counts.queued.fetch_add(1, Ordering::AcqRel);
        tx.send(job).map_err(|_| {
            self.counts.queued.fetch_sub(1, Ordering::AcqRel);
            StoreError::Closed
        })
    }

    /// Stops accepting work, lets queued operations commit, and joins the thread.
    pub fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // The last handle to the store can be dropped by a completion running on the
            // committer itself: it then exits on its own once the queue is drained.
            if thread.thread().id() == std::thread::current().id() {
                return;
            }
            // A panic in an operation already failed its callers; nothing more to report.
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.close();
    }
}

fn run(db: &Database, rx: &Receiver<Job>, generation: &AtomicU64, counts: &Counts) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < COMMIT_BATCH_MAX {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        counts.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        commit_batch(db, batch, generation, counts);
    }
}

/// Records the first reason the database stopped taking writes.
fn failed(counts: &Counts, reason: String) {
    let mut failure = counts.failure.lock().unwrap_or_else(|e| e.into_inner());
    if failure.is_none() {
        *failure = Some(reason);
    }
}

fn commit_batch(db: &Database, batch: Vec<Job>, generation: &AtomicU64, counts: &Counts) {
    let group = batch.len() > 1;
    let txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            tracing::error!(error = %e, "cannot begin write transaction");
            failed(counts, format!("cannot begin a write transaction: {e}"));
            // Dropping the jobs drops their reply channels: waiters see the store as closed.
            return;
        }
    };
    let mut completions = Vec::with_capacity(batch.len());
    let mut failure: Option<String> = None;
    for job in batch {
        if failure.is_some() {
            // Not run: its caller sees the store as closed for this operation.
            continue;
        }
        match job(&txn) {
            Ok(completion) => completions.push(completion),
            Err(e) => failure = Some(e.to_string()),
        }
    }
    let result = match failure {
        None => {
            if group {
                crash::point(crash::COMMIT_GROUP_BEFORE_COMMIT);
            }
            let committed = txn.commit().map_err(|e| e.to_string());
            if let Err(e) = &committed {
                failed(counts, format!("commit failed: {e}"));
            }
            if group && committed.is_ok() {
                crash::point(crash::COMMIT_GROUP_AFTER_COMMIT);
            }
            committed
        }
        Some(reason) => {
            if let Err(e) = txn.abort() {
                tracing::error!(error = %e, "abort of a failed batch failed");
            }
            Err(reason)
        }
    };
    match &result {
        Ok(()) => {
            counts
                .largest_batch
                .fetch_max(completions.len(), Ordering::AcqRel);
        }
        Err(reason) => {
            tracing::error!(error = %reason, ops = completions.len(), "write batch failed")
        }
    }
    // Before any answer: whoever learns of this write and then reads sees a new generation.
    generation.fetch_add(1, Ordering::AcqRel);
    for completion in completions {
        completion(result.as_ref().map(|_| ()).map_err(|e| e.as_str()));
    }
}
