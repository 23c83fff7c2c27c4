//! Local delivery: hands the segments of a channel to the programs of this host.
//!
//! For each `[[deliver]]` entry (a channel, a directory, optionally a command), every stored
//! content segment of that channel is written — its payload, not the `.seg` — into
//! `<dir>/<name>/<sequence>-<first 16 hex of the id>`, and `<dir>/<name>/current` is a symlink
//! to the newest file of that name (highest sequence). Then the command runs with the file and
//! the segment's fields in its environment.
//!
//! Guarantees:
//! - **Atomic and confined** (INV-33): a file appears whole or not at all (temp file, fsync,
//!   rename, directory fsync; `current` is replaced by a rename); every operation is relative to
//!   the entry's directory descriptor, opened without following a symlink, and so is each
//!   `<name>` directory: a symlink planted anywhere is refused, never followed, and nothing is
//!   written outside `dir`. A name that is not one safe path component is refused.
//! - **Durable and caught up** (INV-34): the state of each delivery is a row of
//!   `deliveries-v1` in the store's database, written after the file is durable; at start-up,
//!   and after every commit that stores or withdraws a segment, the reconciler delivers what
//!   is stored and not delivered yet, and resumes command retries when they are due.
//! - **Recalls**: a delivered segment that a recall withdrew has its file removed and
//!   `current` moved back to the newest remaining file of the name (or removed).
//! - **Commands** run without a shell, stdin closed, for at most `command_timeout_ms` (then
//!   killed), their output captured (at most [`COMMAND_OUTPUT_BYTES_MAX`] per stream) and
//!   logged; a failure is retried with exponential backoff up to [`COMMAND_ATTEMPTS_MAX`]
//!   times, then the delivery is `failed`. All of it on a thread of its own: the relay never
//!   waits for it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, TableDefinition};
use rustix::fs::{AtFlags, Mode, OFlags};
use serde::{Deserialize, Serialize};
use store::manifest::SegmentKind;
use store::{SegmentId, SegmentInfo, Store};

/// Default `command_timeout_ms`.
pub const COMMAND_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// Default `keep`: delivered files kept per name (the current one and the one before).
pub const KEEP_DEFAULT: u32 = 2;
/// Largest `keep`.
pub const KEEP_MAX: u32 = 64;
/// `[[deliver]]` entries a node may have.
pub const DELIVER_ENTRIES_MAX: usize = 16;
/// Output of a command kept (and logged) per stream; the rest is read and dropped.
pub const COMMAND_OUTPUT_BYTES_MAX: usize = 64 * 1024;
/// Output lines of a command logged per stream.
pub const COMMAND_LOG_LINES_MAX: usize = 20;
/// Runs of a failing command before the delivery is `failed`.
pub const COMMAND_ATTEMPTS_MAX: u32 = 5;
/// Wait before the first retry of a failed command; doubles each time.
pub const COMMAND_BACKOFF_BASE_MS: u64 = 1_000;
/// Longest wait between retries.
pub const COMMAND_BACKOFF_MAX_MS: u64 = 60_000;
/// The reconciler looks again at least this often, whatever it was told.
pub const RECONCILE_TICK_MS: u64 = 5_000;
/// How often a running command is checked for its end.
const COMMAND_POLL_MS: u64 = 10;

/// `deliveries-v1`: key = entry directory bytes, 0, segment id; value = [`DeliveryRow`].
const DELIVERIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("deliveries-v1");

/// One `[[deliver]]` entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverSpec {
    pub channel: String,
    pub dir: PathBuf,
    /// Program and arguments; empty: no command.
    pub command: Vec<String>,
    pub command_timeout_ms: u64,
    pub keep: u32,
}

/// Where one delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryState {
    /// The file is in place and the command (if any) succeeded.
    Delivered,
    /// The file is in place; the command failed and runs again at `next_ms`.
    Retrying,
    /// The file is in place; the command failed [`COMMAND_ATTEMPTS_MAX`] times.
    Failed,
    /// Not delivered, for a reason that will not change (the name, a symlink).
    Refused,
    /// Delivered, then recalled: the file was removed.
    Withdrawn,
    /// Not content (a recall or root segment): nothing to deliver.
    Skipped,
}

/// A row of `deliveries-v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRow {
    pub state: DeliveryState,
    /// The delivered file, relative to the entry's directory.
    pub file: String,
    pub attempts: u32,
    pub exit_status: Option<i32>,
    pub error: String,
    pub at_ms: u64,
    pub next_ms: u64,
}

impl DeliveryRow {
    /// The state in words, as `edged segments` shows it.
    pub fn describe(&self) -> String {
        match self.state {
            DeliveryState::Delivered => "delivered".into(),
            DeliveryState::Retrying => format!(
                "retry {}/{COMMAND_ATTEMPTS_MAX}: {}",
                self.attempts, self.error
            ),
            DeliveryState::Failed => format!("failed: {}", self.error),
            DeliveryState::Refused => format!("refused: {}", self.error),
            DeliveryState::Withdrawn => "withdrawn (recalled)".into(),
            DeliveryState::Skipped => "not content".into(),
        }
    }
}

/// Pure: whether `name` may be a directory name under the delivery directory.
pub fn safe_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 255 {
        return Err("a segment name must be 1..=255 bytes to be delivered");
    }
    if name.contains('/') || name.contains('\0') {
        return Err("a segment name with '/' is not delivered (one path component only)");
    }
    if name.starts_with('.') {
        return Err("a segment name starting with '.' is not delivered");
    }
    Ok(())
}

/// Pure: the file name of a delivered segment.
pub fn file_name(sequence: u64, id: &SegmentId) -> String {
    format!("{sequence}-{}", &id.to_string()[..16])
}

/// Pure: the sequence a delivered file name carries, if it is one.
fn sequence_of(file: &str) -> Option<u64> {
    let (seq, hex) = file.split_once('-')?;
    (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| seq.parse().ok())
        .flatten()
}

/// Pure: which delivered file is current (the highest sequence, then the greatest name), and
/// which to remove to keep `keep` of them (never the current one).
pub fn plan_files(files: &[String], keep: usize) -> (Option<String>, Vec<String>) {
    let mut ordered: Vec<(u64, &String)> = files
        .iter()
        .filter_map(|f| sequence_of(f).map(|s| (s, f)))
        .collect();
    ordered.sort();
    let current = ordered.last().map(|(_, f)| (*f).clone());
    let excess = ordered.len().saturating_sub(keep.max(1));
    let remove = ordered[..excess]
        .iter()
        .map(|(_, f)| (*f).clone())
        .collect();
    (current, remove)
}

/// Pure: the wait before retry `attempt` (1-based).
pub fn backoff_ms(attempt: u32) -> u64 {
    COMMAND_BACKOFF_BASE_MS
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
        .min(COMMAND_BACKOFF_MAX_MS)
}

fn row_key(dir: &std::path::Path, id: &SegmentId) -> Vec<u8> {
    let mut key = dir.as_os_str().as_encoded_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key
}

fn db_err(e: impl std::fmt::Display) -> String {
    format!("database: {e}")
}

/// Every delivery row of `dir`.
fn rows_of(
    store: &Store,
    dir: &std::path::Path,
) -> Result<BTreeMap<SegmentId, DeliveryRow>, String> {
    let read = store.database().begin_read().map_err(db_err)?;
    let table = match read.open_table(DELIVERIES) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
        Err(e) => return Err(db_err(e)),
    };
    let mut prefix = dir.as_os_str().as_encoded_bytes().to_vec();
    prefix.push(0);
    let mut out = BTreeMap::new();
    for entry in table.range(prefix.as_slice()..).map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        let k = k.value();
        if !k.starts_with(&prefix) {
            break;
        }
        let Ok(id) = <[u8; 32]>::try_from(&k[prefix.len()..]) else {
            continue;
        };
        if let Ok(row) = postcard::from_bytes::<DeliveryRow>(v.value()) {
            out.insert(SegmentId::from_bytes(id), row);
        }
    }
    Ok(out)
}

/// The delivery state of `id` under each entry (for listings).
pub fn states(store: &Store, specs: &[DeliverSpec], id: &SegmentId) -> Vec<(String, DeliveryRow)> {
    specs
        .iter()
        .filter_map(|s| {
            let rows = rows_of(store, &s.dir).ok()?;
            rows.get(id)
                .map(|r| (s.dir.display().to_string(), r.clone()))
        })
        .collect()
}

fn put_row(
    store: &Store,
    dir: &std::path::Path,
    id: &SegmentId,
    row: &DeliveryRow,
) -> Result<(), String> {
    let key = row_key(dir, id);
    let value = postcard::to_allocvec(row).map_err(db_err)?;
    store
        .writer()
        .write(move |txn| {
            txn.open_table(DELIVERIES)?
                .insert(key.as_slice(), value.as_slice())?;
            Ok(())
        })
        .map_err(db_err)
}

/// A directory opened without following a symlink.
fn open_dir_at(parent: &OwnedFd, name: &str) -> rustix::io::Result<OwnedFd> {
    let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // Mutation point (INV-33): the `<name>` directory is opened following a symlink, so a link
    // planted there sends the delivery wherever it points.
    if store::mutants::active("deliver_follows_symlink") {
        flags.remove(OFlags::NOFOLLOW);
    }
    rustix::fs::openat(parent, name, flags, Mode::empty())
}

fn fsync_dir(dir: &OwnedFd) -> std::io::Result<()> {
    rustix::fs::fsync(dir).map_err(std::io::Error::from)
}

/// Why one delivery did not happen.
enum Miss {
    /// For good: recorded as refused.
    Refused(String),
    /// For now (I/O, the store): tried again on the next pass.
    Later(String),
}

/// The entry's directory, refusing a symlink.
fn open_root(spec: &DeliverSpec) -> Result<OwnedFd, Miss> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(rustix::fs::CWD, &spec.dir, flags, Mode::empty()).map_err(|e| {
        Miss::Later(format!(
            "delivery directory {} cannot be opened (it must be a directory, not a symlink): {e}",
            spec.dir.display()
        ))
    })
}

/// Opens (creating) `<dir>/<name>`, never through a symlink.
fn name_dir(root: &OwnedFd, name: &str) -> Result<OwnedFd, Miss> {
    safe_name(name).map_err(|e| Miss::Refused(e.into()))?;
    match rustix::fs::mkdirat(root, name, Mode::from_raw_mode(0o755)) {
        Ok(()) => {
            fsync_dir(root).map_err(|e| Miss::Later(format!("fsync: {e}")))?;
        }
        Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(Miss::Later(format!("mkdir {name}: {e}"))),
    }
    open_dir_at(root, name).map_err(|e| match e {
        rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP => Miss::Refused(format!(
            "{name} in the delivery directory is not a directory (a symlink is never followed)"
        )),
        e => Miss::Later(format!("open {name}: {e}")),
    })
}

/// Writes the payload of `info` into `dir` as `file`, atomically.
fn write_payload(
    store: &Store,
    info: &SegmentInfo,
    dir: &OwnedFd,
    file: &str,
    now_ms: u64,
) -> Result<(), Miss> {
    let tmp = format!(".{file}.tmp");
    let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    let mut reader = store
        .open_for_read(&info.id, now_ms)
        .map_err(|e| Miss::Later(e.to_string()))?;
    let m = reader.manifest().manifest().clone();
    let fd = rustix::fs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| Miss::Later(format!("create {tmp}: {e}")))?;
    let mut out = std::fs::File::from(fd);
    let copied =
        store::segfile::copy_payload(reader.payload(), &mut out, m.payload_len, m.payload_hash);
    drop(reader);
    let done = copied
        .map_err(|e| e.to_string())
        .and_then(|_| {
            out.flush()
                .and_then(|()| out.sync_all())
                .map_err(|e| e.to_string())
        })
        .and_then(|()| {
            rustix::fs::renameat(dir, tmp.as_str(), dir, file).map_err(|e| e.to_string())
        })
        .and_then(|()| fsync_dir(dir).map_err(|e| e.to_string()));
    if let Err(e) = done {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        return Err(Miss::Later(format!("write {file}: {e}")));
    }
    Ok(())
}

/// The delivered files in a `<name>` directory.
fn delivered_files(dir: &OwnedFd) -> Vec<String> {
    let Ok(dup) = rustix::io::dup(dir) else {
        return Vec::new();
    };
    let Ok(entries) = rustix::fs::Dir::new(dup) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type() == rustix::fs::FileType::RegularFile)
        .filter_map(|e| e.file_name().to_str().ok().map(str::to_owned))
        .filter(|f| sequence_of(f).is_some())
        .collect()
}

/// Points `current` at the newest file and removes files beyond `keep` (and `withdrawn`).
fn settle(dir: &OwnedFd, keep: u32, withdrawn: &[String]) -> Result<Option<String>, String> {
    for f in withdrawn {
        match rustix::fs::unlinkat(dir, f.as_str(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(format!("remove {f}: {e}")),
        }
    }
    let (current, remove) = plan_files(&delivered_files(dir), keep as usize);
    match &current {
        Some(target) => {
            let tmp = ".current.tmp";
            let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
            rustix::fs::symlinkat(target.as_str(), dir, tmp)
                .map_err(|e| format!("symlink: {e}"))?;
            rustix::fs::renameat(dir, tmp, dir, "current")
                .map_err(|e| format!("rename current: {e}"))?;
        }
        None => match rustix::fs::unlinkat(dir, "current", AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(format!("remove current: {e}")),
        },
    }
    for f in remove {
        let _ = rustix::fs::unlinkat(dir, f.as_str(), AtFlags::empty());
    }
    fsync_dir(dir).map_err(|e| format!("fsync: {e}"))?;
    Ok(current)
}

/// What a command run came to.
struct Ran {
    ok: bool,
    exit_status: Option<i32>,
    error: String,
}

/// Reads at most [`COMMAND_OUTPUT_BYTES_MAX`] of `r`, draining the rest.
fn read_bounded(mut r: impl Read) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = COMMAND_OUTPUT_BYTES_MAX.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

fn log_output(seg: &SegmentId, stream: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for line in text.lines().take(COMMAND_LOG_LINES_MAX) {
        tracing::info!(seg_id = %seg, stream, line = %crate::output::Escaped(line), "delivery command output");
    }
}

fn run_command(spec: &DeliverSpec, info: &SegmentInfo, path: &std::path::Path) -> Ran {
    let (program, args) = match spec.command.split_first() {
        Some(p) => p,
        None => {
            return Ran {
                ok: true,
                exit_status: None,
                error: String::new(),
            };
        }
    };
    let row = &info.row;
    let spawned = Command::new(program)
        .args(args)
        .env("EDGED_DELIVER_PATH", path)
        .env("EDGED_DELIVER_DIR", &spec.dir)
        .env("EDGED_SEGMENT_ID", info.id.to_string())
        .env("EDGED_SEGMENT_NAME", &row.name)
        .env("EDGED_CHANNEL", &row.channel)
        .env("EDGED_SEQUENCE", row.sequence.to_string())
        .env("EDGED_PUBLISHER", row.publisher.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return Ran {
                ok: false,
                exit_status: None,
                error: format!("cannot run {program}: {e}"),
            };
        }
    };
    let out = child
        .stdout
        .take()
        .map(|s| std::thread::spawn(move || read_bounded(s)));
    let err = child
        .stderr
        .take()
        .map(|s| std::thread::spawn(move || read_bounded(s)));
    let deadline = Instant::now() + Duration::from_millis(spec.command_timeout_ms);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(COMMAND_POLL_MS)),
            Err(e) => {
                return Ran {
                    ok: false,
                    exit_status: None,
                    error: format!("waiting for {program}: {e}"),
                };
            }
        }
    };
    for (stream, handle) in [("stdout", out), ("stderr", err)] {
        if let Some(bytes) = handle.and_then(|h| h.join().ok()) {
            log_output(&info.id, stream, &bytes);
        }
    }
    match status {
        None => Ran {
            ok: false,
            exit_status: None,
            error: format!("killed after its {} ms timeout", spec.command_timeout_ms),
        },
        Some(s) if s.success() => Ran {
            ok: true,
            exit_status: Some(0),
            error: String::new(),
        },
        Some(s) => Ran {
            ok: false,
            exit_status: s.code(),
            error: match s.code() {
                Some(code) => format!("exit status {code}"),
                None => "ended by a signal".into(),
            },
        },
    }
}

/// One pass over one entry: deliver what is stored and not delivered, run due retries,
/// withdraw what was recalled. Returns the earliest retry due.
fn reconcile(store: &Store, spec: &DeliverSpec, now_ms: u64) -> Result<Option<u64>, String> {
    let root = match open_root(spec) {
        Ok(fd) => fd,
        Err(Miss::Refused(e) | Miss::Later(e)) => return Err(e),
    };
    let rows = rows_of(store, &spec.dir)?;
    let stored: Vec<SegmentInfo> = store
        .list()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|s| s.row.channel == spec.channel)
        .collect();
    let mut next_due: Option<u64> = None;
    let mut touched: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for info in &stored {
        let existing = rows.get(&info.id);
        let due = match existing.map(|r| r.state) {
            None => true,
            Some(DeliveryState::Retrying) => existing.is_some_and(|r| r.next_ms <= now_ms),
            Some(_) => false,
        };
        if !due {
            if let Some(r) = existing.filter(|r| r.state == DeliveryState::Retrying) {
                next_due = Some(next_due.map_or(r.next_ms, |n| n.min(r.next_ms)));
            }
            continue;
        }
        let name = &info.row.name;
        let file = file_name(info.row.sequence, &info.id);
        let mut row = existing.cloned().unwrap_or(DeliveryRow {
            state: DeliveryState::Delivered,
            file: format!("{name}/{file}"),
            attempts: 0,
            exit_status: None,
            error: String::new(),
            at_ms: now_ms,
            next_ms: 0,
        });
        if existing.is_none() {
            let kind = store
                .open_for_read(&info.id, now_ms)
                .map(|r| r.manifest().manifest().kind);
            if matches!(kind, Ok(k) if k != SegmentKind::Content) {
                row.state = DeliveryState::Skipped;
                put_row(store, &spec.dir, &info.id, &row)?;
                continue;
            }
            let placed = name_dir(&root, name)
                .and_then(|dir| write_payload(store, info, &dir, &file, now_ms).map(|()| dir));
            match placed {
                Ok(dir) => {
                    settle(&dir, spec.keep, &[])?;
                    touched.entry(name.clone()).or_default();
                }
                Err(Miss::Refused(reason)) => {
                    tracing::warn!(seg_id = %info.id, name = %crate::output::Escaped(name), dir = %spec.dir.display(), reason = %reason, "segment not delivered");
                    row.state = DeliveryState::Refused;
                    row.error = reason;
                    put_row(store, &spec.dir, &info.id, &row)?;
                    continue;
                }
                Err(Miss::Later(reason)) => {
                    tracing::warn!(seg_id = %info.id, dir = %spec.dir.display(), error = %reason, "delivery failed; tried again on the next pass");
                    continue;
                }
            }
        }
        let path = spec.dir.join(name).join(&file);
        let ran = run_command(spec, info, &path);
        row.exit_status = ran.exit_status;
        row.at_ms = now_ms;
        if ran.ok {
            row.state = DeliveryState::Delivered;
            row.error.clear();
            tracing::info!(seg_id = %info.id, path = %path.display(), "segment delivered");
        } else {
            row.attempts += 1;
            row.error = ran.error;
            if row.attempts >= COMMAND_ATTEMPTS_MAX {
                row.state = DeliveryState::Failed;
                tracing::error!(seg_id = %info.id, path = %path.display(), attempts = row.attempts, error = %row.error, "delivery command failed; giving up");
            } else {
                row.state = DeliveryState::Retrying;
                row.next_ms = now_ms + backoff_ms(row.attempts);
                next_due = Some(next_due.map_or(row.next_ms, |n| n.min(row.next_ms)));
                tracing::warn!(seg_id = %info.id, path = %path.display(), attempt = row.attempts, error = %row.error, "delivery command failed; retrying");
            }
        }
        put_row(store, &spec.dir, &info.id, &row)?;
    }
    // Recalled deliveries: file removed, `current` moved back.
    for (id, row) in &rows {
        let has_file = matches!(
            row.state,
            DeliveryState::Delivered | DeliveryState::Retrying | DeliveryState::Failed
        );
        if !has_file || !store.is_recalled(id).map_err(|e| e.to_string())? {
            continue;
        }
        let Some((name, file)) = row.file.split_once('/') else {
            continue;
        };
        touched
            .entry(name.to_owned())
            .or_default()
            .push(file.to_owned());
        let mut gone = row.clone();
        gone.state = DeliveryState::Withdrawn;
        gone.at_ms = now_ms;
        put_row(store, &spec.dir, id, &gone)?;
        tracing::info!(seg_id = %id, file = %row.file, "recalled delivery removed");
    }
    for (name, withdrawn) in touched {
        if withdrawn.is_empty() {
            continue;
        }
        match name_dir(&root, &name) {
            Ok(dir) => {
                settle(&dir, spec.keep, &withdrawn)?;
            }
            Err(Miss::Refused(e) | Miss::Later(e)) => return Err(e),
        }
    }
    Ok(next_due)
}

/// The reconciler's wake-up: set by store commits and by stop.
#[derive(Default)]
struct Wake {
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

/// The running reconciler; dropping it does not stop it: call [`Deliverer::stop`].
pub struct Deliverer {
    wake: Arc<Wake>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Deliverer {
    /// Starts the reconciler for `specs` (none: nothing is started).
    pub fn start(
        store: Store,
        specs: Vec<DeliverSpec>,
        clock: Arc<dyn base::Clock>,
    ) -> std::io::Result<Option<Deliverer>> {
        if specs.is_empty() {
            return Ok(None);
        }
        let wake = Arc::new(Wake::default());
        let w = wake.clone();
        store.watch_changes(Arc::new(move || {
            let mut s = w.state.lock().unwrap_or_else(|e| e.into_inner());
            s.0 = true;
            w.changed.notify_all();
        }));
        let w = wake.clone();
        let thread = std::thread::Builder::new()
            .name("edged-deliver".into())
            .spawn(move || run(&store, &specs, clock.as_ref(), &w))?;
        Ok(Some(Deliverer {
            wake,
            thread: Some(thread),
        }))
    }

    /// Stops the reconciler after its current pass (a running command is waited for, up to its
    /// timeout) and joins it.
    pub fn stop(mut self) {
        {
            let mut s = self.wake.state.lock().unwrap_or_else(|e| e.into_inner());
            s.1 = true;
            self.wake.changed.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(store: &Store, specs: &[DeliverSpec], clock: &dyn base::Clock, wake: &Wake) {
    // Mutation point (INV-34): passes run only on a store change, so what was stored while the
    // daemon was down is not delivered (neither at start-up nor on a tick).
    let only_on_change = store::mutants::active("deliver_skips_startup");
    let mut pending = !only_on_change;
    loop {
        let mut due: Option<u64> = None;
        if pending {
            let now = clock.now_ms();
            for spec in specs {
                match reconcile(store, spec, now) {
                    Ok(next) => {
                        due = match (due, next) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        }
                    }
                    Err(e) => {
                        tracing::warn!(dir = %spec.dir.display(), channel = %spec.channel, error = %e, "delivery pass failed; tried again later")
                    }
                }
            }
        }
        let now = clock.now_ms();
        let wait_ms = due
            .map_or(RECONCILE_TICK_MS, |d| d.saturating_sub(now))
            .min(RECONCILE_TICK_MS);
        let s = wake.state.lock().unwrap_or_else(|e| e.into_inner());
        let (mut s, _) = wake
            .changed
            .wait_timeout_while(s, Duration::from_millis(wait_ms), |s| !s.0 && !s.1)
            .unwrap_or_else(|e| e.into_inner());
        if s.1 {
            return;
        }
        pending = s.0 || !only_on_change;
        s.0 = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inv_33_names_that_are_not_one_safe_component_are_refused() {
        for bad in ["", "a/b", "..", ".", ".hidden", "/abs"] {
            assert!(safe_name(bad).is_err(), "{bad:?}");
        }
        safe_name("app.tar").unwrap();
        assert!(safe_name(&"n".repeat(256)).is_err());
        safe_name(&"n".repeat(255)).unwrap();
    }

    #[test]
    fn current_is_the_highest_sequence_and_keep_never_removes_it() {
        let files: Vec<String> = [
            "1-00000000000000aa",
            "10-00000000000000bb",
            "2-00000000000000cc",
            "junk",
            ".x.tmp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (current, remove) = plan_files(&files, 2);
        assert_eq!(current.as_deref(), Some("10-00000000000000bb"));
        assert_eq!(remove, vec!["1-00000000000000aa".to_string()]);
        let (current, remove) = plan_files(&files, 1);
        assert_eq!(current.as_deref(), Some("10-00000000000000bb"));
        assert_eq!(remove.len(), 2);
        assert_eq!(plan_files(&[], 2), (None, vec![]));
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        assert_eq!(backoff_ms(1), 1_000);
        assert_eq!(backoff_ms(2), 2_000);
        assert_eq!(backoff_ms(3), 4_000);
        assert_eq!(backoff_ms(30), COMMAND_BACKOFF_MAX_MS);
    }
}
