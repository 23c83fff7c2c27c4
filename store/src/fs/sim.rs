//! [`SimFs`]: an in-memory [`Fs`] that models what survives power loss, and fails on demand.
//!
//! # Model
//!
//! - A file is an inode with `data` (what reads see) and `durable` (what survives power loss).
//!   [`FsFile::sync`] and the redb backend's `sync_data` copy `data` to `durable`. Unsynced writes
//!   are lost entirely at power loss (torn or partially persisted writes are not modelled).
//! - Each directory has a volatile namespace (what lookups see) and a durable one. A creation,
//!   rename or removal changes the volatile namespace only; [`Fs::sync_dir`] of the directory
//!   makes its whole volatile namespace durable. A rename across directories therefore needs
//!   `sync_dir` of both: syncing only the target leaves the file reachable under both names after
//!   power loss, syncing only the source loses it.
//! - Simplification: [`Fs::create_dir_all`] is durable at once, and directories are never removed
//!   or renamed. The store creates its directories once at init and syncs their parents, so the
//!   window this hides is not one the store relies on.
//! - Paths are normalised: root and `.` components are ignored (`/data/x` and `data/x` are the
//!   same file), `..` is refused. The root directory always exists.
//! - [`SimFs::crash_image`] returns a new, independent file system holding only the durable state:
//!   files reachable through durable entries, with their durable contents. Opening the redb
//!   database on it runs redb's own recovery, exactly as after a real power loss.
//! - Space: with [`SimFs::with_capacity`], a write or extension that would bring the bytes of all
//!   files reachable from volatile namespaces over capacity fails with ENOSPC, and
//!   [`Fs::available_bytes`] reports capacity minus those bytes. Without a capacity,
//!   [`SIM_AVAILABLE_BYTES_UNLIMITED`] stands for the capacity.
//! - Locking: the redb file supports whole-file locks, so opening a database twice before the
//!   first handle is dropped yields `DatabaseAlreadyOpen`, as with [`super::RealFs`].
//! - Everything is ordered (`BTreeMap`): behaviour never depends on hash order.
//!
//! # Operations and faults
//!
//! Every call of an [`Fs`] method, every [`FsFile`] `write`, `sync` and `set_len`, and every
//! `write`, `set_len` and `sync_data` of the redb backend is one operation. Reads, seeks, `len`,
//! `flush` and locks are not operations. Operations are numbered from 0 in call order;
//! [`SimFs::op_count`] is the number of operations so far, i.e. the number the next one gets.
//! A failing operation counts too, and so does every operation after power loss.
//!
//! A [`Fault`] fires at the first eligible operation numbered `at_op` or later and is then used
//! up; see [`FaultKind`] for what each kind does. An operation that fails because of a fault has
//! no effect. A sync that fails (for any reason) poisons its file handle: a later sync of that
//! handle reports success without making anything durable, as Linux may after a failed fsync,
//! and is counted by [`SimFs::syncs_after_failed_sync`] so tests can assert it never happens
//! (INV-23).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Bound;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{DirEntry, EntryKind, Fs, FsFile, FsRead, database_builder, eio, enospc};

/// Capacity that [`Fs::available_bytes`] of a [`SimFs`] without a set capacity starts from:
/// 1 PiB, far from overflowing any sum a caller makes.
pub const SIM_AVAILABLE_BYTES_UNLIMITED: u64 = 1 << 50;

/// Granularity at which unsynced writes are tracked, so a sync copies only what changed.
const DIRTY_BLOCK_BYTES: u64 = 4096;

/// A fault to inject into a [`SimFs`]: what goes wrong, and from which operation on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Number of the first operation the fault may fire at (see [`SimFs::op_count`]).
    pub at_op: u64,
    /// What goes wrong.
    pub kind: FaultKind,
}

/// What an injected [`Fault`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The operation fails with ENOSPC; later operations succeed.
    Enospc,
    /// The operation fails with EIO; later operations succeed.
    Eio,
    /// The first sync (`FsFile::sync`, `sync_dir`, the backend's `sync_data`) numbered `at_op` or
    /// later fails with EIO and makes nothing durable.
    SyncFails,
    /// Power is lost just before the operation: the durable image is frozen as it was before it,
    /// and this and every later operation (and read) fails with EIO. [`SimFs::crash_image`]
    /// returns the frozen image.
    PowerLoss,
}

/// Which faults an operation is eligible for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpClass {
    /// Anything but a sync.
    Plain,
    /// `FsFile::sync`, `sync_dir`, the backend's `sync_data`.
    Sync,
}

/// An in-memory file system modelling durability, with fault injection. Clones share the same
/// file system, so a test keeps a handle while the store owns another.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl Default for SimFs {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("SimFs")
            .field("op_count", &st.ops)
            .field("dead", &st.dead)
            .field("dirs", &st.dirs.len())
            .field("capacity", &st.capacity)
            .field("faults", &st.faults)
            .finish()
    }
}

#[derive(Default)]
struct State {
    /// Every directory by normalised path; the root is the empty path and always present.
    dirs: BTreeMap<PathBuf, Dir>,
    ops: u64,
    faults: Vec<Fault>,
    dead: bool,
    /// The durable image frozen at power loss.
    frozen: Option<Box<State>>,
    capacity: Option<u64>,
    next_ino: u64,
    syncs_after_failed_sync: u64,
}

/// The file entries of one directory (subdirectories live in `State::dirs`).
#[derive(Default)]
struct Dir {
    live: BTreeMap<OsString, Node>,
    durable: BTreeMap<OsString, Node>,
}

type Node = Arc<InodeCell>;

struct InodeCell {
    ino: u64,
    inode: Mutex<Inode>,
}

impl fmt::Debug for InodeCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inode = lock(&self.inode);
        f.debug_struct("Inode")
            .field("ino", &self.ino)
            .field("len", &inode.data.len())
            .field("durable_len", &inode.durable.len())
            .finish()
    }
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Blocks of `data` written since the last sync.
    dirty: BTreeSet<u64>,
    /// Smallest length of `data` since the last sync: bytes beyond it may differ from `durable`.
    min_len: usize,
    /// Whole-file lock of the redb backend.
    db_lock: DbLock,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum DbLock {
    #[default]
    Free,
    Shared(u32),
    Exclusive,
}

impl Inode {
    fn with_contents(bytes: Vec<u8>) -> Self {
        Self {
            min_len: bytes.len(),
            durable: bytes.clone(),
            data: bytes,
            ..Self::default()
        }
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let start = to_usize(offset)?;
        let end = start
            .checked_add(buf.len())
            .ok_or_else(|| invalid("write beyond the addressable range"))?;
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(buf);
        let first = offset / DIRTY_BLOCK_BYTES;
        let last = (offset + buf.len() as u64 - 1) / DIRTY_BLOCK_BYTES;
        self.dirty.extend(first..=last);
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let len = to_usize(len)?;
        self.data.resize(len, 0);
        self.min_len = self.min_len.min(len);
        Ok(())
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> usize {
        let Ok(start) = usize::try_from(offset) else {
            return 0;
        };
        if start >= self.data.len() {
            return 0;
        }
        let n = out.len().min(self.data.len() - start);
        out[..n].copy_from_slice(&self.data[start..start + n]);
        n
    }

    /// Makes `durable` equal to `data`, copying only what changed since the last sync.
    fn sync(&mut self) {
        let len = self.data.len();
        self.durable.truncate(self.min_len);
        self.durable.resize(len, 0);
        for block in std::mem::take(&mut self.dirty) {
            let Ok(start) = usize::try_from(block * DIRTY_BLOCK_BYTES) else {
                continue;
            };
            if start >= len {
                continue;
            }
            let end = len.min(start.saturating_add(DIRTY_BLOCK_BYTES as usize));
            self.durable[start..end].copy_from_slice(&self.data[start..end]);
        }
        self.min_len = len;
    }
}

/// Locks a mutex, also when a panicking test thread poisoned it: the protected state is only
/// ever mutated in steps that leave it consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| invalid("offset or length beyond the addressable range"))
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned())
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

fn is_a_directory(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::IsADirectory,
        format!("{} is a directory", path.display()),
    )
}

/// Normalised form of `path`: its normal components only; `..` is refused.
fn normalise(path: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => return Err(invalid("SimFs refuses `..` in paths")),
        }
    }
    Ok(out)
}

/// Normalised parent directory and file name of `path`.
fn split(path: &Path) -> io::Result<(PathBuf, OsString)> {
    let norm = normalise(path)?;
    let name = norm
        .file_name()
        .ok_or_else(|| invalid("path has no file name"))?
        .to_owned();
    let parent = norm.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((parent, name))
}

/// What a volatile lookup of a path finds.
enum Found {
    File(Node),
    Dir,
    Absent,
}

impl State {
    fn new(capacity: Option<u64>) -> Self {
        let mut st = Self {
            capacity,
            ..Self::default()
        };
        st.dirs.insert(PathBuf::new(), Dir::default());
        st
    }

    /// Counts one operation and applies the faults it triggers.
    fn begin_op(&mut self, class: OpClass) -> io::Result<()> {
        let op = self.ops;
        self.ops += 1;
        if self.dead {
            return Err(eio());
        }
        let due = |f: &Fault, kinds: &[FaultKind]| f.at_op <= op && kinds.contains(&f.kind);
        if let Some(i) = self
            .faults
            .iter()
            .position(|f| due(f, &[FaultKind::PowerLoss]))
        {
            self.faults.remove(i);
            self.frozen = Some(Box::new(self.durable_image()));
            self.dead = true;
            return Err(eio());
        }
        let eligible: &[FaultKind] = match class {
            OpClass::Plain => &[FaultKind::Enospc, FaultKind::Eio],
            OpClass::Sync => &[FaultKind::Enospc, FaultKind::Eio, FaultKind::SyncFails],
        };
        if let Some(i) = self.faults.iter().position(|f| due(f, eligible)) {
            let fault = self.faults.remove(i);
            return Err(match fault.kind {
                FaultKind::Enospc => enospc(),
                _ => eio(),
            });
        }
        Ok(())
    }

    fn check_alive(&self) -> io::Result<()> {
        if self.dead { Err(eio()) } else { Ok(()) }
    }

    fn lookup(&self, path: &Path) -> io::Result<Found> {
        let norm = normalise(path)?;
        if self.dirs.contains_key(&norm) {
            return Ok(Found::Dir);
        }
        let (parent, name) = split(&norm)?;
        Ok(
            match self.dirs.get(&parent).and_then(|d| d.live.get(&name)) {
                Some(node) => Found::File(node.clone()),
                None => Found::Absent,
            },
        )
    }

    fn lookup_file(&self, path: &Path) -> io::Result<Node> {
        match self.lookup(path)? {
            Found::File(node) => Ok(node),
            Found::Dir => Err(is_a_directory(path)),
            Found::Absent => Err(not_found(path)),
        }
    }

    /// Creates an empty file in the volatile namespace of its parent.
    fn create_file(&mut self, path: &Path) -> io::Result<Node> {
        let (parent, name) = split(path)?;
        if self.dirs.contains_key(&parent.join(&name)) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let ino = self.next_ino;
        let dir = self.dirs.get_mut(&parent).ok_or_else(|| not_found(path))?;
        if dir.live.contains_key(&name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        self.next_ino += 1;
        let node = Arc::new(InodeCell {
            ino,
            inode: Mutex::new(Inode::default()),
        });
        dir.live.insert(name, node.clone());
        Ok(node)
    }

    /// Bytes of all files reachable from volatile namespaces, except inode `skip`.
    fn used_bytes_except(&self, skip: Option<u64>) -> u64 {
        let mut seen = BTreeMap::new();
        for dir in self.dirs.values() {
            for node in dir.live.values() {
                if Some(node.ino) != skip {
                    seen.entry(node.ino)
                        .or_insert_with(|| lock(&node.inode).data.len() as u64);
                }
            }
        }
        seen.values().sum()
    }

    fn capacity_or_unlimited(&self) -> u64 {
        self.capacity.unwrap_or(SIM_AVAILABLE_BYTES_UNLIMITED)
    }

    /// Fails with ENOSPC if growing `node` to `new_len` bytes would exceed the capacity.
    fn reserve(&self, node: &InodeCell, new_len: u64) -> io::Result<()> {
        let Some(capacity) = self.capacity else {
            return Ok(());
        };
        if new_len <= lock(&node.inode).data.len() as u64 {
            return Ok(());
        }
        let others = self.used_bytes_except(Some(node.ino));
        if others.saturating_add(new_len) > capacity {
            return Err(enospc());
        }
        Ok(())
    }

    /// A fresh state holding only what is durable now: files reachable through durable entries,
    /// with their durable contents (shared inodes stay shared).
    fn durable_image(&self) -> State {
        let mut image = State::new(self.capacity);
        image.next_ino = self.next_ino;
        let mut copies: BTreeMap<u64, Node> = BTreeMap::new();
        for (path, dir) in &self.dirs {
            let mut entries = BTreeMap::new();
            for (name, node) in &dir.durable {
                if self.dirs.contains_key(&path.join(name)) {
                    // A name re-used by a directory since; the (durable) directory wins.
                    continue;
                }
                let copy = copies.entry(node.ino).or_insert_with(|| {
                    let durable = lock(&node.inode).durable.clone();
                    Arc::new(InodeCell {
                        ino: node.ino,
                        inode: Mutex::new(Inode::with_contents(durable)),
                    })
                });
                entries.insert(name.clone(), copy.clone());
            }
            image.dirs.insert(
                path.clone(),
                Dir {
                    live: entries.clone(),
                    durable: entries,
                },
            );
        }
        image
    }
}

impl SimFs {
    /// An empty file system (only the root directory) with no capacity limit.
    pub fn new() -> Self {
        Self::from_state(State::new(None))
    }

    /// An empty file system whose files may hold at most `bytes` bytes in total.
    pub fn with_capacity(bytes: u64) -> Self {
        Self::from_state(State::new(Some(bytes)))
    }

    fn from_state(state: State) -> Self {
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Counts one operation, applies its faults, and hands the state to the operation.
    fn op(&self, class: OpClass) -> io::Result<MutexGuard<'_, State>> {
        let mut st = self.lock();
        st.begin_op(class)?;
        Ok(st)
    }

    /// Number of operations so far, which is also the number of the next one (see the module
    /// docs for what counts).
    pub fn op_count(&self) -> u64 {
        self.lock().ops
    }

    /// Schedules a fault. Several may be pending; each fires once.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Whether power was lost (every operation now fails with EIO).
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// Syncs that reported success on a handle whose earlier sync failed, making nothing durable.
    /// Code honouring INV-23 keeps this at 0.
    pub fn syncs_after_failed_sync(&self) -> u64 {
        self.lock().syncs_after_failed_sync
    }

    /// Bytes of all files reachable from the volatile namespaces.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes_except(None)
    }

    /// What the machine sees after power loss: a new, independent file system holding only the
    /// durable state — frozen at the power-loss fault if one fired, else as of now (this file
    /// system then carries on unaffected). Faults and the operation count are not carried over.
    pub fn crash_image(&self) -> SimFs {
        let st = self.lock();
        let image = match &st.frozen {
            Some(frozen) => frozen.durable_image(),
            None => st.durable_image(),
        };
        Self::from_state(image)
    }

    /// Opens `path` for [`SimFile`], sharing the inode.
    fn open_file(&self, path: &Path, node: Node, writable: bool) -> SimFile {
        SimFile {
            fs: self.clone(),
            node,
            pos: 0,
            sync_failed: false,
            writable,
            path: path.to_path_buf(),
        }
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.op(OpClass::Plain)?;
        let norm = normalise(path)?;
        let mut prefix = PathBuf::new();
        for c in norm.components() {
            let parent = prefix.clone();
            prefix.push(c);
            if st.dirs.contains_key(&prefix) {
                continue;
            }
            let name = c.as_os_str();
            if st
                .dirs
                .get(&parent)
                .is_some_and(|d| d.live.contains_key(name))
            {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is a file", prefix.display()),
                ));
            }
            st.dirs.insert(prefix.clone(), Dir::default());
        }
        Ok(())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut st = self.op(OpClass::Plain)?;
        let node = st.create_file(path)?;
        drop(st);
        Ok(Box::new(self.open_file(path, node, true)))
    }

    fn open_rw(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let st = self.op(OpClass::Plain)?;
        let node = st.lookup_file(path)?;
        drop(st);
        Ok(Box::new(self.open_file(path, node, true)))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsRead>> {
        let st = self.op(OpClass::Plain)?;
        let node = st.lookup_file(path)?;
        drop(st);
        Ok(Box::new(self.open_file(path, node, false)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.op(OpClass::Plain)?;
        let node = match st.lookup(from)? {
            Found::File(node) => node,
            Found::Dir => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "SimFs renames files only",
                ));
            }
            Found::Absent => return Err(not_found(from)),
        };
        if let Found::Dir = st.lookup(to)? {
            return Err(is_a_directory(to));
        }
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        if !st.dirs.contains_key(&to_dir) {
            return Err(not_found(to));
        }
        if (&from_dir, &from_name) == (&to_dir, &to_name) {
            return Ok(());
        }
        if let Some(d) = st.dirs.get_mut(&from_dir) {
            d.live.remove(&from_name);
        }
        if let Some(d) = st.dirs.get_mut(&to_dir) {
            d.live.insert(to_name, node);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.op(OpClass::Plain)?;
        st.lookup_file(path)?;
        let (dir, name) = split(path)?;
        if let Some(d) = st.dirs.get_mut(&dir) {
            d.live.remove(&name);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.op(OpClass::Sync)?;
        let norm = normalise(dir)?;
        let d = st.dirs.get_mut(&norm).ok_or_else(|| not_found(dir))?;
        d.durable = d.live.clone();
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let st = self.op(OpClass::Plain)?;
        let norm = normalise(dir)?;
        let d = st.dirs.get(&norm).ok_or_else(|| not_found(dir))?;
        let mut entries: Vec<DirEntry> = d
            .live
            .iter()
            .map(|(name, node)| DirEntry {
                name: name.clone(),
                kind: EntryKind::File,
                len: lock(&node.inode).data.len() as u64,
            })
            .collect();
        // Subdirectories: the direct children of `norm` among all directories.
        entries.extend(
            st.dirs
                .range::<PathBuf, _>((Bound::Excluded(&norm), Bound::Unbounded))
                // Paths order component-wise, so descendants of `norm` follow it contiguously.
                .take_while(|(p, _)| p.starts_with(&norm))
                .filter(|(p, _)| p.parent() == Some(norm.as_path()))
                .filter_map(|(p, _)| p.file_name())
                .map(|name| DirEntry {
                    name: name.to_owned(),
                    kind: EntryKind::Dir,
                    len: 0,
                }),
        );
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn file_len(&self, path: &Path) -> io::Result<Option<u64>> {
        let st = self.op(OpClass::Plain)?;
        match st.lookup(path)? {
            Found::File(node) => Ok(Some(lock(&node.inode).data.len() as u64)),
            Found::Dir => Err(is_a_directory(path)),
            Found::Absent => Ok(None),
        }
    }

    fn available_bytes(&self, dir: &Path) -> io::Result<u64> {
        let st = self.op(OpClass::Plain)?;
        if !st.dirs.contains_key(&normalise(dir)?) {
            return Err(not_found(dir));
        }
        Ok(st
            .capacity_or_unlimited()
            .saturating_sub(st.used_bytes_except(None)))
    }

    fn open_database(
        &self,
        path: &Path,
        create: bool,
    ) -> Result<redb::Database, redb::DatabaseError> {
        let mut st = self.op(OpClass::Plain)?;
        let node = match st.lookup(path)? {
            Found::File(node) => node,
            Found::Dir => return Err(is_a_directory(path).into()),
            Found::Absent if create => st.create_file(path)?,
            Found::Absent => return Err(not_found(path).into()),
        };
        drop(st);
        if !create && lock(&node.inode).data.is_empty() {
            // What `redb::Builder::open` reports for an empty file.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "Database file is empty and creating a new database was not requested",
            )
            .into());
        }
        database_builder().create_with_backend(SimDbBackend {
            fs: self.clone(),
            node,
            path: path.to_path_buf(),
            held: Mutex::new(None),
        })
    }
}

/// An open file of a [`SimFs`]. Read-only when opened with [`Fs::open_read`].
#[derive(Debug)]
pub struct SimFile {
    fs: SimFs,
    node: Node,
    pos: u64,
    /// Set once a sync of this handle failed (see the module docs).
    sync_failed: bool,
    writable: bool,
    path: PathBuf,
}

impl SimFile {
    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is open read-only", self.path.display()),
            ))
        }
    }
}

impl Read for SimFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fs.lock().check_alive()?;
        let n = lock(&self.node.inode).read_at(self.pos, buf);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for SimFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let st = self.fs.op(OpClass::Plain)?;
        self.check_writable()?;
        let end = self
            .pos
            .checked_add(buf.len() as u64)
            .ok_or_else(|| invalid("write beyond the addressable range"))?;
        st.reserve(&self.node, end)?;
        lock(&self.node.inode).write_at(self.pos, buf)?;
        self.pos = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for SimFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.fs.lock().check_alive()?;
        let base = match pos {
            SeekFrom::Start(n) => {
                self.pos = n;
                return Ok(n);
            }
            SeekFrom::End(d) => (lock(&self.node.inode).data.len() as u64, d),
            SeekFrom::Current(d) => (self.pos, d),
        };
        let new = base
            .0
            .checked_add_signed(base.1)
            .ok_or_else(|| invalid("seek before the start of the file"))?;
        self.pos = new;
        Ok(new)
    }
}

impl FsFile for SimFile {
    fn sync(&mut self) -> io::Result<()> {
        let mut st = match self.fs.op(OpClass::Sync) {
            Ok(st) => st,
            Err(e) => {
                self.sync_failed = true;
                return Err(e);
            }
        };
        if self.sync_failed {
            // Linux may report success here although the pages of the failed sync are gone.
            st.syncs_after_failed_sync += 1;
            return Ok(());
        }
        lock(&self.node.inode).sync();
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let st = self.fs.op(OpClass::Plain)?;
        self.check_writable()?;
        st.reserve(&self.node, len)?;
        lock(&self.node.inode).set_len(len)
    }
}

impl FsRead for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.fs.lock().check_alive()?;
        Ok(lock(&self.node.inode).data.len() as u64)
    }
}

/// redb's storage on an inode of a [`SimFs`]: writes go to `data`, `sync_data` makes them
/// durable, and operations count and fail like any other of the file system. Supports
/// whole-file locks only (redb's level 2), which is all `ExclusiveWriter` mode needs.
#[derive(Debug)]
pub struct SimDbBackend {
    fs: SimFs,
    node: Node,
    path: PathBuf,
    /// The lock this backend instance holds, released by `close`.
    held: Mutex<Option<DbLock>>,
}

fn is_whole(start: Bound<u64>, end: Bound<u64>) -> bool {
    matches!(
        (start, end),
        (Bound::Unbounded | Bound::Included(0), Bound::Unbounded)
    )
}

impl SimDbBackend {
    fn try_lock(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
        shared: bool,
    ) -> Result<bool, redb::BackendError> {
        if !is_whole(start, end) {
            return Err(redb::BackendError::Unsupported);
        }
        let mut held = lock(&self.held);
        let mut inode = lock(&self.node.inode);
        let next = match (inode.db_lock, shared) {
            (DbLock::Free, false) => DbLock::Exclusive,
            (DbLock::Free, true) => DbLock::Shared(1),
            (DbLock::Shared(n), true) => DbLock::Shared(n + 1),
            _ => return Ok(false),
        };
        inode.db_lock = next;
        *held = Some(if shared {
            DbLock::Shared(1)
        } else {
            DbLock::Exclusive
        });
        Ok(true)
    }

    fn release(&self) {
        let Some(kind) = lock(&self.held).take() else {
            return;
        };
        let mut inode = lock(&self.node.inode);
        inode.db_lock = match (inode.db_lock, kind) {
            (DbLock::Shared(n), DbLock::Shared(_)) if n > 1 => DbLock::Shared(n - 1),
            _ => DbLock::Free,
        };
    }
}

impl redb::StorageBackend for SimDbBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.fs.lock().check_alive()?;
        Ok(lock(&self.node.inode).data.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.fs.lock().check_alive()?;
        if lock(&self.node.inode).read_at(offset, out) < out.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read beyond the end of {}", self.path.display()),
            ));
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let st = self.fs.op(OpClass::Plain)?;
        st.reserve(&self.node, len)?;
        lock(&self.node.inode).set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let _st = self.fs.op(OpClass::Sync)?;
        lock(&self.node.inode).sync();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let st = self.fs.op(OpClass::Plain)?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| invalid("write beyond the addressable range"))?;
        st.reserve(&self.node, end)?;
        lock(&self.node.inode).write_at(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.release();
        Ok(())
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.try_lock(start, end, false)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.try_lock(start, end, true)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        if !is_whole(start, end) {
            return Err(redb::BackendError::Unsupported);
        }
        self.release();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};

    const T: TableDefinition<u64, u64> = TableDefinition::new("t-v1");

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    fn fault(at_op: u64, kind: FaultKind) -> Fault {
        Fault { at_op, kind }
    }

    /// Creates `path` with `bytes`, optionally syncing the file and its directory.
    fn put(fs: &SimFs, path: &str, bytes: &[u8], sync_file: bool, sync_dir: bool) {
        let mut f = fs.create_new(p(path)).unwrap();
        f.write_all(bytes).unwrap();
        if sync_file {
            f.sync().unwrap();
        }
        if sync_dir {
            fs.sync_dir(p(path).parent().unwrap()).unwrap();
        }
    }

    fn contents(fs: &SimFs, path: &str) -> Option<Vec<u8>> {
        let mut r = match fs.open_read(p(path)) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => panic!("open {path}: {e}"),
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        Some(out)
    }

    fn names(fs: &SimFs, dir: &str) -> Vec<(String, EntryKind, u64)> {
        fs.list_dir(p(dir))
            .unwrap()
            .into_iter()
            .map(|e| (e.name.into_string().unwrap(), e.kind, e.len))
            .collect()
    }

    fn new_fs() -> SimFs {
        let fs = SimFs::default();
        fs.create_dir_all(p("/d/tmp")).unwrap();
        fs.create_dir_all(p("/d/seg")).unwrap();
        fs
    }

    #[test]
    fn namespace_basics_and_sorted_listing() {
        let fs = new_fs();
        for name in ["c", "a", "b"] {
            put(
                &fs,
                &format!("/d/seg/{name}"),
                name.as_bytes(),
                false,
                false,
            );
        }
        fs.create_dir_all(p("/d/seg/0f")).unwrap();
        assert_eq!(
            names(&fs, "/d/seg"),
            [
                ("0f".to_owned(), EntryKind::Dir, 0),
                ("a".to_owned(), EntryKind::File, 1),
                ("b".to_owned(), EntryKind::File, 1),
                ("c".to_owned(), EntryKind::File, 1),
            ]
        );
        assert_eq!(names(&fs, "/d").len(), 2);
        let e = fs.create_new(p("/d/seg/a")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let e = fs.create_new(p("/d/nodir/a")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(fs.file_len(p("/d/seg/a")).unwrap(), Some(1));
        assert_eq!(fs.file_len(p("/d/seg/zz")).unwrap(), None);
        assert_eq!(
            fs.file_len(p("d/seg/a")).unwrap(),
            Some(1),
            "paths are normalised"
        );
        assert_eq!(
            fs.open_rw(p("/d/seg/zz")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );

        // Resume: open_rw, seek to the end, append; set_len truncates.
        let mut f = fs.open_rw(p("/d/seg/a")).unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(b"xyz").unwrap();
        f.set_len(2).unwrap();
        drop(f);
        assert_eq!(contents(&fs, "/d/seg/a").unwrap(), b"ax");
        let mut r = fs.open_read(p("/d/seg/a")).unwrap();
        assert_eq!(r.len().unwrap(), 2);
        r.seek(SeekFrom::Start(1)).unwrap();
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"x");

        fs.remove_file(p("/d/seg/b")).unwrap();
        assert_eq!(
            fs.remove_file(p("/d/seg/b")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            fs.remove_file(p("/d/seg/0f")).unwrap_err().kind(),
            io::ErrorKind::IsADirectory
        );
        assert_eq!(fs.used_bytes(), 3);
    }

    #[test]
    fn unsynced_file_data_is_lost() {
        let fs = new_fs();
        put(&fs, "/d/tmp/x", b"old", true, true);
        let mut f = fs.open_rw(p("/d/tmp/x")).unwrap();
        f.write_all(b"NEW and longer").unwrap();
        assert_eq!(contents(&fs, "/d/tmp/x").unwrap(), b"NEW and longer");
        let img = fs.crash_image();
        assert_eq!(contents(&img, "/d/tmp/x").unwrap(), b"old");

        // A file created and its entry synced, but its data never synced: present and empty.
        put(&fs, "/d/tmp/y", b"data", false, true);
        assert_eq!(contents(&fs.crash_image(), "/d/tmp/y").unwrap(), b"");
    }

    #[test]
    fn synced_data_is_kept() {
        let fs = new_fs();
        put(&fs, "/d/tmp/x", b"hello", true, true);
        let mut f = fs.open_rw(p("/d/tmp/x")).unwrap();
        f.seek(SeekFrom::Start(2)).unwrap();
        f.write_all(b"LLO world").unwrap();
        f.sync().unwrap();
        f.set_len(3).unwrap();
        f.set_len(6).unwrap();
        f.sync().unwrap();
        assert_eq!(
            contents(&fs.crash_image(), "/d/tmp/x").unwrap(),
            b"heL\0\0\0"
        );

        // Large, sparse writes across many dirty blocks.
        let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        f.seek(SeekFrom::Start(10_000)).unwrap();
        f.write_all(&big).unwrap();
        f.sync().unwrap();
        let mut expect = b"heL\0\0\0".to_vec();
        expect.resize(10_000, 0);
        expect.extend_from_slice(&big);
        assert_eq!(contents(&fs.crash_image(), "/d/tmp/x").unwrap(), expect);
    }

    #[test]
    fn unsynced_creation_is_lost() {
        let fs = new_fs();
        put(&fs, "/d/tmp/x", b"data", true, false);
        assert_eq!(contents(&fs.crash_image(), "/d/tmp/x"), None);
    }

    #[test]
    fn rename_without_sync_dir_of_target_is_lost_and_old_name_reappears() {
        let fs = new_fs();
        put(&fs, "/d/tmp/x", b"data", true, true);
        fs.rename(p("/d/tmp/x"), p("/d/seg/x")).unwrap();
        assert_eq!(contents(&fs, "/d/tmp/x"), None);
        let img = fs.crash_image();
        assert_eq!(contents(&img, "/d/seg/x"), None);
        assert_eq!(contents(&img, "/d/tmp/x").unwrap(), b"data");

        // Syncing only the source loses the file altogether.
        fs.sync_dir(p("/d/tmp")).unwrap();
        let img = fs.crash_image();
        assert_eq!(contents(&img, "/d/seg/x"), None);
        assert_eq!(contents(&img, "/d/tmp/x"), None);
    }

    #[test]
    fn rename_with_sync_dir_is_kept() {
        let fs = new_fs();
        put(&fs, "/d/tmp/x", b"data", true, true);
        fs.rename(p("/d/tmp/x"), p("/d/seg/x")).unwrap();
        fs.sync_dir(p("/d/seg")).unwrap();
        // Target synced, source not: both names survive, sharing one inode.
        let img = fs.crash_image();
        assert_eq!(contents(&img, "/d/seg/x").unwrap(), b"data");
        assert_eq!(contents(&img, "/d/tmp/x").unwrap(), b"data");
        let mut f = img.open_rw(p("/d/tmp/x")).unwrap();
        f.write_all(b"D").unwrap();
        assert_eq!(contents(&img, "/d/seg/x").unwrap(), b"Data");
        assert_eq!(img.used_bytes(), 4, "a shared inode counts once");

        fs.sync_dir(p("/d/tmp")).unwrap();
        let img = fs.crash_image();
        assert_eq!(contents(&img, "/d/seg/x").unwrap(), b"data");
        assert_eq!(contents(&img, "/d/tmp/x"), None);
    }

    #[test]
    fn rename_replaces_target_atomically() {
        let fs = new_fs();
        put(&fs, "/d/seg/x", b"old", true, true);
        put(&fs, "/d/seg/x.tmp", b"new", true, false);
        fs.rename(p("/d/seg/x.tmp"), p("/d/seg/x")).unwrap();
        assert_eq!(contents(&fs, "/d/seg/x").unwrap(), b"new");
        assert_eq!(contents(&fs.crash_image(), "/d/seg/x").unwrap(), b"old");
        fs.sync_dir(p("/d/seg")).unwrap();
        let img = fs.crash_image();
        assert_eq!(contents(&img, "/d/seg/x").unwrap(), b"new");
        assert_eq!(contents(&img, "/d/seg/x.tmp"), None);
    }

    #[test]
    fn remove_without_sync_dir_is_undone() {
        let fs = new_fs();
        put(&fs, "/d/seg/x", b"data", true, true);
        fs.remove_file(p("/d/seg/x")).unwrap();
        assert_eq!(contents(&fs, "/d/seg/x"), None);
        assert_eq!(contents(&fs.crash_image(), "/d/seg/x").unwrap(), b"data");
        fs.sync_dir(p("/d/seg")).unwrap();
        assert_eq!(contents(&fs.crash_image(), "/d/seg/x"), None);
    }

    #[test]
    fn op_count_counts_mutations_and_calls_not_reads() {
        let fs = SimFs::new();
        assert_eq!(fs.op_count(), 0);
        fs.create_dir_all(p("/d")).unwrap(); // 0
        let mut f = fs.create_new(p("/d/x")).unwrap(); // 1
        f.write_all(b"abc").unwrap(); // 2
        f.sync().unwrap(); // 3
        f.set_len(1).unwrap(); // 4
        f.flush().unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut buf = [0; 1];
        f.read_exact(&mut buf).unwrap();
        assert_eq!(fs.op_count(), 5);
        fs.file_len(p("/d/missing")).unwrap(); // 5
        let _ = fs.remove_file(p("/d/missing")); // 6: failing calls count too
        let r = fs.open_read(p("/d/x")).unwrap(); // 7
        r.len().unwrap();
        assert_eq!(fs.op_count(), 8);
    }

    #[test]
    fn enospc_and_eio_fail_exactly_the_chosen_op() {
        let fs = new_fs();
        let mut f = fs.create_new(p("/d/tmp/x")).unwrap();
        let at = fs.op_count();
        fs.inject(fault(at + 1, FaultKind::Enospc));
        fs.inject(fault(at + 3, FaultKind::Eio));
        f.write_all(b"a").unwrap(); // at
        let e = f.write_all(b"b").unwrap_err(); // at + 1
        assert!(crate::fs::is_enospc(&e) && !crate::fs::is_eio(&e));
        assert_eq!(e.raw_os_error(), Some(28));
        f.write_all(b"c").unwrap(); // at + 2
        let e = fs.rename(p("/d/tmp/x"), p("/d/seg/x")).unwrap_err(); // at + 3
        assert!(crate::fs::is_eio(&e));
        assert_eq!(e.raw_os_error(), Some(5));
        assert_eq!(
            contents(&fs, "/d/tmp/x").unwrap(),
            b"ac",
            "failed ops have no effect"
        );
        fs.rename(p("/d/tmp/x"), p("/d/seg/x")).unwrap();
        assert!(!fs.is_dead());
    }

    #[test]
    fn sync_fails_hits_the_first_sync_at_or_after_the_op_and_poisons_the_handle() {
        let fs = new_fs();
        let mut f = fs.create_new(p("/d/tmp/x")).unwrap();
        fs.inject(fault(fs.op_count(), FaultKind::SyncFails));
        f.write_all(b"data").unwrap(); // not a sync: unaffected
        let e = f.sync().unwrap_err();
        assert!(crate::fs::is_eio(&e));
        fs.sync_dir(p("/d/tmp")).unwrap(); // the fault is used up
        assert_eq!(contents(&fs.crash_image(), "/d/tmp/x").unwrap(), b"");

        // Syncing the same descriptor again "succeeds" but persists nothing (fsyncgate) and is
        // counted as a violation of INV-23.
        assert_eq!(fs.syncs_after_failed_sync(), 0);
        f.sync().unwrap();
        assert_eq!(fs.syncs_after_failed_sync(), 1);
        assert_eq!(contents(&fs.crash_image(), "/d/tmp/x").unwrap(), b"");

        // A fresh descriptor syncs normally.
        let mut g = fs.open_rw(p("/d/tmp/x")).unwrap();
        g.sync().unwrap();
        assert_eq!(contents(&fs.crash_image(), "/d/tmp/x").unwrap(), b"data");

        // sync_dir fails the same way.
        fs.inject(fault(0, FaultKind::SyncFails));
        fs.remove_file(p("/d/tmp/x")).unwrap();
        assert!(crate::fs::is_eio(&fs.sync_dir(p("/d/tmp")).unwrap_err()));
        assert_eq!(contents(&fs.crash_image(), "/d/tmp/x").unwrap(), b"data");
    }

    #[test]
    fn capacity_makes_writes_fail_with_enospc() {
        let fs = SimFs::with_capacity(10);
        fs.create_dir_all(p("/d")).unwrap();
        assert_eq!(fs.available_bytes(p("/d")).unwrap(), 10);
        let mut f = fs.create_new(p("/d/a")).unwrap();
        f.write_all(b"123456").unwrap();
        assert_eq!(fs.available_bytes(p("/d")).unwrap(), 4);
        let mut g = fs.create_new(p("/d/b")).unwrap();
        g.write_all(b"1234").unwrap();
        assert_eq!(fs.available_bytes(p("/d")).unwrap(), 0);
        let e = g.write_all(b"5").unwrap_err();
        assert!(crate::fs::is_enospc(&e));
        assert!(crate::fs::is_enospc(&g.set_len(5).unwrap_err()));
        // Overwriting in place needs no space; truncating frees it.
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(b"abc").unwrap();
        f.set_len(2).unwrap();
        g.write_all(b"5").unwrap();
        fs.remove_file(p("/d/b")).unwrap();
        assert_eq!(fs.available_bytes(p("/d")).unwrap(), 8);
        assert_eq!(
            fs.available_bytes(p("/nodir")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            SimFs::new().available_bytes(p("/")).unwrap(),
            SIM_AVAILABLE_BYTES_UNLIMITED
        );
    }

    #[test]
    fn power_loss_freezes_the_image_before_the_op_and_kills_the_machine() {
        let fs = new_fs();
        let mut f = fs.create_new(p("/d/tmp/x")).unwrap();
        f.write_all(b"data").unwrap();
        f.sync().unwrap();
        fs.sync_dir(p("/d/tmp")).unwrap();
        fs.inject(fault(fs.op_count() + 1, FaultKind::PowerLoss));
        fs.rename(p("/d/tmp/x"), p("/d/seg/x")).unwrap();
        // The sync_dir is the op at which power is lost: it does not take effect.
        assert!(crate::fs::is_eio(&fs.sync_dir(p("/d/seg")).unwrap_err()));
        assert!(fs.is_dead());
        assert!(crate::fs::is_eio(&fs.sync_dir(p("/d/tmp")).unwrap_err()));
        assert!(crate::fs::is_eio(&fs.list_dir(p("/d")).unwrap_err()));
        let mut buf = [0; 1];
        assert!(crate::fs::is_eio(&f.read(&mut buf).unwrap_err()));
        assert!(crate::fs::is_eio(&f.sync().unwrap_err()));

        for img in [fs.crash_image(), fs.crash_image()] {
            assert!(!img.is_dead());
            assert_eq!(img.op_count(), 0);
            // Only tmp/ was ever synced with x in it; the rename never became durable.
            assert_eq!(contents(&img, "/d/seg/x"), None);
            assert_eq!(contents(&img, "/d/tmp/x").unwrap(), b"data");
            // The image is independent of the dead machine and of other images.
            img.remove_file(p("/d/tmp/x")).unwrap();
        }
    }

    #[test]
    fn power_loss_injected_late_fires_at_the_next_op() {
        let fs = new_fs();
        put(&fs, "/d/tmp/x", b"a", true, true);
        fs.inject(fault(0, FaultKind::PowerLoss));
        assert!(fs.file_len(p("/d/tmp/x")).is_err());
        assert!(fs.is_dead());
        assert_eq!(contents(&fs.crash_image(), "/d/tmp/x").unwrap(), b"a");
    }

    // ---- redb through SimDbBackend ----

    const DB: &str = "/d/edge.redb";

    fn commit(db: &redb::Database, key: u64) -> Result<(), redb::Error> {
        let tx = db.begin_write()?;
        {
            let mut t = tx.open_table(T)?;
            t.insert(key, key * 10)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The keys stored in table `T`, in order; empty if the table does not exist.
    fn keys(db: &redb::Database) -> Vec<u64> {
        let tx = db.begin_read().unwrap();
        let t = match tx.open_table(T) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Vec::new(),
            Err(e) => panic!("{e}"),
        };
        let mut out = Vec::new();
        for row in t.range::<u64>(..).unwrap() {
            let (k, v) = row.unwrap();
            assert_eq!(v.value(), k.value() * 10);
            out.push(k.value());
        }
        assert_eq!(t.len().unwrap(), out.len() as u64);
        out
    }

    fn create_db(fs: &SimFs) -> redb::Database {
        let db = fs.open_database(p(DB), true).unwrap();
        fs.sync_dir(p("/d")).unwrap();
        db
    }

    #[test]
    fn redb_committed_data_survives_power_loss() {
        let fs = new_fs();
        let db = create_db(&fs);
        commit(&db, 1).unwrap();
        commit(&db, 2).unwrap();
        let img = fs.crash_image();
        // The crashed machine's database stays open: the image is what a reboot sees.
        let reopened = img.open_database(p(DB), false).unwrap();
        assert_eq!(keys(&reopened), [1, 2]);
        drop(db);
    }

    #[test]
    fn redb_open_missing_empty_and_locked() {
        let fs = new_fs();
        match fs.open_database(p(DB), false) {
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => {
                assert_eq!(e.kind(), io::ErrorKind::NotFound)
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
        drop(fs.create_new(p("/d/empty.redb")).unwrap());
        assert!(fs.open_database(p("/d/empty.redb"), false).is_err());

        let db = create_db(&fs);
        assert!(matches!(
            fs.open_database(p(DB), false),
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
        ));
        assert!(matches!(
            fs.open_database(p(DB), true),
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
        ));
        commit(&db, 7).unwrap();
        drop(db);
        assert_eq!(keys(&fs.open_database(p(DB), false).unwrap()), [7]);
    }

    #[test]
    fn redb_database_entry_needs_sync_dir() {
        let fs = new_fs();
        let db = fs.open_database(p(DB), true).unwrap();
        commit(&db, 1).unwrap();
        assert_eq!(fs.crash_image().file_len(p(DB)).unwrap(), None);
        drop(db);
    }

    #[test]
    fn redb_commit_after_power_loss_is_absent_earlier_commits_present() {
        let fs = new_fs();
        let db = create_db(&fs);
        commit(&db, 1).unwrap();
        commit(&db, 2).unwrap();
        fs.inject(fault(fs.op_count(), FaultKind::PowerLoss));
        assert!(commit(&db, 3).is_err());
        drop(db);
        let img = fs.crash_image();
        let db = img.open_database(p(DB), false).unwrap();
        assert_eq!(keys(&db), [1, 2]);
        // The recovered database works.
        commit(&db, 3).unwrap();
        assert_eq!(keys(&db), [1, 2, 3]);
    }

    #[test]
    fn redb_write_errors_fail_the_commit_without_losing_earlier_ones() {
        for kind in [FaultKind::Enospc, FaultKind::Eio, FaultKind::SyncFails] {
            let fs = new_fs();
            let db = create_db(&fs);
            commit(&db, 1).unwrap();
            fs.inject(fault(fs.op_count(), kind));
            assert!(commit(&db, 2).is_err(), "{kind:?}");
            drop(db);
            let db = fs.crash_image().open_database(p(DB), false).unwrap();
            assert_eq!(keys(&db), [1], "{kind:?}");
        }
    }

    /// The scripted run of the exhaustive test: create the database, three commits, close.
    /// Returns how many commits returned `Ok` before the first error.
    fn three_commits(fs: &SimFs) -> usize {
        let setup = || -> Result<redb::Database, Box<dyn std::error::Error>> {
            fs.create_dir_all(p("/d"))?;
            let db = fs.open_database(p(DB), true)?;
            fs.sync_dir(p("/d"))?;
            Ok(db)
        };
        let Ok(db) = setup() else {
            return 0;
        };
        let mut acked = 0;
        for key in 1..=3 {
            if commit(&db, key).is_err() {
                break;
            }
            acked += 1;
        }
        drop(db);
        acked
    }

    #[test]
    fn redb_power_loss_at_every_op_recovers_a_prefix_holding_every_acknowledged_commit() {
        let clean = SimFs::new();
        assert_eq!(three_commits(&clean), 3);
        let total = clean.op_count();
        assert!(total > 10, "the sequence has {total} ops");
        let mut seen = BTreeSet::new();
        for at_op in 0..=total {
            let fs = SimFs::new();
            fs.inject(fault(at_op, FaultKind::PowerLoss));
            let acked = three_commits(&fs);
            assert_eq!(fs.is_dead(), at_op < total, "at_op {at_op}");
            let img = fs.crash_image();
            img.create_dir_all(p("/d")).unwrap();
            let db = img
                .open_database(p(DB), true)
                .unwrap_or_else(|e| panic!("reopen after power loss at op {at_op}: {e}"));
            let got = keys(&db);
            let n = got.len();
            assert_eq!(got, (1..=n as u64).collect::<Vec<_>>(), "at_op {at_op}");
            assert!(
                n >= acked,
                "at_op {at_op}: {acked} acknowledged, {n} recovered"
            );
            assert!(
                n <= acked + 1,
                "at_op {at_op}: {acked} acknowledged, {n} recovered"
            );
            // The recovered database accepts new commits.
            commit(&db, 100).unwrap();
            seen.insert(n);
        }
        assert_eq!(
            seen,
            BTreeSet::from([0, 1, 2, 3]),
            "every prefix is reachable"
        );
    }
}
