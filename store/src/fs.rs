//! The narrow filesystem seam of the store's ingest, eviction and recovery paths.
//!
//! Every file operation whose failure or loss matters to the durability contract (create temp,
//! write, fsync, rename, fsync directory, remove, list, free space, and the redb file itself) goes
//! through [`Fs`]. Production uses [`RealFs`]; tests use [`sim::SimFs`], an in-memory double that
//! keeps what survives power loss apart from what reads see, and can fail with ENOSPC or EIO, fail
//! an fsync, or lose power at any counted operation.
//!
//! What callers may rely on, with either implementation:
//!
//! - File data is durable only after [`FsFile::sync`] returned `Ok`; a creation, rename or
//!   removal is durable only after [`Fs::sync_dir`] of the directory holding the entry returned
//!   `Ok` (for a rename: of both directories).
//! - After [`FsFile::sync`] failed, that descriptor is never synced again (INV-23): the kernel may
//!   have dropped the dirty pages and a second fsync can report success for data that is gone.
//!   [`RealFs`] enforces this by failing every later sync of the descriptor with EIO.
//! - [`Fs::list_dir`] is sorted by name, so no decision depends on readdir order.
//! - Disk-full and I/O errors keep their OS error number: classify them with [`is_enospc`] and
//!   [`is_eio`].

// The power-loss double is test machinery: compiled for this crate's unit tests and for the
// `sim` feature (tests and simulations of the crates above), never into the shipped binary.
#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub(crate) mod direct;
pub use direct::DIRECT_IO_MIN_FILE_BYTES;

use std::ffi::OsString;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use direct::{DirectReader, DirectWriter};

use crate::limits::DB_CACHE_BYTES;

/// File operations of the store, narrow enough for a test double to fail, stall or "lose power"
/// at any step.
pub trait Fs: Send + Sync + Debug + 'static {
    /// Creates `path` and its missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// New file opened read+write; fails with AlreadyExists if present.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Existing file opened read+write (resume of a partial ingest).
    fn open_rw(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Existing file opened read-only.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsRead>>;
    /// Atomically replaces `to` (if present) by the file at `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the directory entry of a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// fsync of a directory, making creations, renames and removals in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Entries of a directory, sorted by name (never HashMap/readdir order).
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    /// Length of a regular file, None if absent.
    fn file_len(&self, path: &Path) -> io::Result<Option<u64>>;
    /// Bytes available to an unprivileged user on the file system holding `dir`.
    fn available_bytes(&self, dir: &Path) -> io::Result<u64>;
    /// Open or create the redb database at `path` (the store's index and ledger).
    ///
    /// A database already open elsewhere yields redb's `DatabaseAlreadyOpen`. With `create`, a
    /// newly created file's directory entry is durable only after [`Fs::sync_dir`] of its parent.
    fn open_database(
        &self,
        path: &Path,
        create: bool,
    ) -> Result<redb::Database, redb::DatabaseError>;
}

/// A file opened read+write.
pub trait FsFile: Read + Write + Seek + Send + Debug {
    /// fsync (data and metadata). After an error the descriptor must not be synced again.
    fn sync(&mut self) -> io::Result<()>;
    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// A hint: start writing `len` bytes from `offset` back to the device now, without waiting,
    /// so the final [`FsFile::sync`] has little left to do. Makes nothing durable and reports
    /// nothing (a writeback error still fails the next sync). The default does nothing.
    fn start_writeback(&mut self, _offset: u64, _len: u64) {}
    /// A hint: this file is written by one thread that also does the reading and hashing (an
    /// import), so writes should return at once through the page cache rather than wait for
    /// the device. The default does nothing.
    fn prefer_cache(&mut self) {}
}

/// A file opened read-only.
// `len` is fallible I/O on an open file, not a container size: an `is_empty` would add nothing.
#[allow(clippy::len_without_is_empty)]
pub trait FsRead: Read + Seek + Send + Debug {
    /// Current length of the file.
    fn len(&self) -> io::Result<u64>;
    /// A hint: this file is read front to back by a thread that also writes what it reads
    /// elsewhere (an export), so the kernel's read-ahead should overlap the two rather than each
    /// read wait for the device. The default does nothing.
    fn prefer_cache(&mut self) {}
}

/// One entry of [`Fs::list_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// File name within the listed directory.
    pub name: OsString,
    /// What the entry is (symbolic links are never followed: they are `Other`).
    pub kind: EntryKind,
    /// Length in bytes for a regular file, 0 otherwise.
    pub len: u64,
}

/// Kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// Anything else: symbolic link, FIFO, socket, device.
    Other,
}

/// Whether `e` says the file system is full (ENOSPC), also when wrapped in another `io::Error`.
pub fn is_enospc(e: &io::Error) -> bool {
    matches_errno(e, rustix::io::Errno::NOSPC)
        || e.kind() == io::ErrorKind::StorageFull
        || inner_io(e).is_some_and(is_enospc)
}

/// Whether `e` is an I/O error of the device (EIO), also when wrapped in another `io::Error`.
pub fn is_eio(e: &io::Error) -> bool {
    matches_errno(e, rustix::io::Errno::IO) || inner_io(e).is_some_and(is_eio)
}

fn matches_errno(e: &io::Error, errno: rustix::io::Errno) -> bool {
    e.raw_os_error() == Some(errno.raw_os_error())
}

/// The first `io::Error` in the chain of errors that `e` wraps, if any.
fn inner_io(e: &io::Error) -> Option<&io::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = match e.get_ref() {
        Some(inner) => Some(inner),
        None => None,
    };
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io);
        }
        next = err.source();
    }
    None
}

/// An `io::Error` carrying ENOSPC (28 on Linux), as the kernel reports a full file system.
pub fn enospc() -> io::Error {
    io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error())
}

/// An `io::Error` carrying EIO (5 on Linux), as the kernel reports a device error.
pub fn eio() -> io::Error {
    io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error())
}

/// The redb settings of the store's database, shared by [`RealFs`] and [`sim::SimFs`] so tests
/// run redb exactly as production does.
pub fn database_builder() -> redb::Builder {
    let mut builder = redb::Database::builder();
    builder
        // redb's default cache is 1 GiB; the index and ledger of an edge node are far smaller.
        .set_cache_size(DB_CACHE_BYTES)
        // Verify every page checksum on open, so a corrupt database fails the start with a typed
        // error instead of a panic or silent use (INV-24).
        .set_check_integrity_on_open(true);
    builder
}

/// The real file system: `std::fs`, `fsync` through `File::sync_all`, free space through
/// `statvfs`. New files and large files bypass the page cache (see [`direct`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

/// A file of [`RealFs`]: a `std::fs::File` that refuses to be synced again after a failed sync.
#[derive(Debug)]
struct RealFile {
    file: File,
    /// Set once a sync failed: a retried fsync on Linux may report success for dropped pages.
    sync_failed: bool,
    /// Present while a newly created file is written front to back with `O_DIRECT`; any read,
    /// seek or truncation ends it (the tail is written first).
    direct: Option<DirectWriter>,
}

impl RealFile {
    /// Leaves direct writing: the tail goes to the file, the descriptor's offset to its end.
    fn leave_direct(&mut self) -> io::Result<()> {
        if let Some(mut direct) = self.direct.take() {
            if let Err(e) = direct.write_tail(&self.file) {
                self.direct = Some(direct);
                return Err(e);
            }
            direct::set_direct(&self.file, false)?;
            self.file.seek(SeekFrom::Start(direct.end()))?;
        }
        Ok(())
    }
}

impl Drop for RealFile {
    fn drop(&mut self) {
        // What was written reaches the file, as it would without the block in memory; durable
        // only if someone syncs it (nobody can now).
        if let Some(direct) = self.direct.as_mut() {
            let _ = direct.write_tail(&self.file);
        }
    }
}

impl Read for RealFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.leave_direct()?;
        self.file.read(buf)
    }
}

impl Write for RealFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.direct.as_mut() {
            Some(direct) => direct.write(&self.file, buf),
            None => self.file.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.direct.as_mut() {
            Some(direct) => direct.write_tail(&self.file),
            None => self.file.flush(),
        }
    }
}

impl Seek for RealFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.leave_direct()?;
        self.file.seek(pos)
    }
}

impl FsFile for RealFile {
    fn sync(&mut self) -> io::Result<()> {
        if self.sync_failed {
            return Err(io::Error::new(
                eio().kind(),
                SyncAfterFailure { source: eio() },
            ));
        }
        if let Some(direct) = self.direct.as_mut() {
            // A tail that cannot be written fails the sync like a failed fsync: the caller
            // abandons the file.
            direct
                .write_tail(&self.file)
                .inspect_err(|_| self.sync_failed = true)?;
        }
        self.file
            .sync_all()
            .inspect_err(|_| self.sync_failed = true)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.leave_direct()?;
        self.file.set_len(len)
    }
    fn prefer_cache(&mut self) {
        // Best effort: if the tail cannot be written now, the next write or sync says so.
        let _ = self.leave_direct();
    }
    fn start_writeback(&mut self, offset: u64, len: u64) {
        if self.direct.is_some() {
            // Direct writes are on their way to the device already.
            return;
        }
        // POSIX_FADV_DONTNEED queues the range's dirty pages for writeback (WB_SYNC_NONE) and
        // returns; pages still dirty or under writeback stay cached. Only a hint: ignore errors.
        let _ = rustix::fs::fadvise(
            &self.file,
            offset,
            std::num::NonZeroU64::new(len),
            rustix::fs::Advice::DontNeed,
        );
    }
}

/// Error of a sync refused because an earlier sync of the same descriptor failed.
#[derive(Debug, thiserror::Error)]
#[error("refusing to fsync again a descriptor whose fsync failed")]
struct SyncAfterFailure {
    /// Always EIO, so [`is_eio`] classifies the refusal as the device error it stands for.
    #[source]
    source: io::Error,
}

/// A file of [`RealFs`] opened for reading; large ones through a [`DirectReader`].
#[derive(Debug)]
struct RealReader {
    file: File,
    pos: u64,
    direct: Option<DirectReader>,
}

impl Read for RealReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.direct.as_mut() {
            Some(direct) => direct.read_at(&self.file, buf, self.pos)?,
            None => self.file.read_at(buf, self.pos)?,
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RealReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let base = match pos {
            SeekFrom::Start(at) => {
                self.pos = at;
                return Ok(at);
            }
            SeekFrom::Current(d) => (self.pos, d),
            SeekFrom::End(d) => (self.len()?, d),
        };
        self.pos = base
            .0
            .checked_add_signed(base.1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}

impl FsRead for RealReader {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn prefer_cache(&mut self) {
        if self.direct.is_some() && direct::set_direct(&self.file, false).is_ok() {
            self.direct = None;
        }
    }
}

impl Fs for RealFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        let direct = options
            .clone()
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path);
        let (file, direct) = match direct {
            Ok(file) => (file, Some(DirectWriter::new())),
            // EINVAL: no O_DIRECT on this file system; create it the ordinary way.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                (options.open(path)?, None)
            }
            Err(e) => return Err(e),
        };
        Ok(Box::new(RealFile {
            file,
            sync_failed: false,
            direct,
        }))
    }

    fn open_rw(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(RealFile {
            file,
            sync_failed: false,
            direct: None,
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsRead>> {
        let file = File::open(path)?;
        let large = file.metadata()?.len() >= DIRECT_IO_MIN_FILE_BYTES;
        // A file system without O_DIRECT refuses the flag: read through the cache.
        let direct = (large && direct::set_direct(&file, true).is_ok()).then(DirectReader::new);
        Ok(Box::new(RealReader {
            file,
            pos: 0,
            direct,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            // `DirEntry::metadata` does not follow symbolic links.
            let meta = entry.metadata()?;
            let (kind, len) = if meta.is_file() {
                (EntryKind::File, meta.len())
            } else if meta.is_dir() {
                (EntryKind::Dir, 0)
            } else {
                (EntryKind::Other, 0)
            };
            entries.push(DirEntry {
                name: entry.file_name(),
                kind,
                len,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn file_len(&self, path: &Path) -> io::Result<Option<u64>> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(meta) if meta.is_dir() => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            )),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn available_bytes(&self, dir: &Path) -> io::Result<u64> {
        let stat = rustix::fs::statvfs(dir)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    fn open_database(
        &self,
        path: &Path,
        create: bool,
    ) -> Result<redb::Database, redb::DatabaseError> {
        let builder = database_builder();
        if create {
            builder.create(path)
        } else {
            builder.open(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_fs_create_write_sync_rename_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs;
        let sub = dir.path().join("a/b");
        fs.create_dir_all(&sub).unwrap();
        fs.sync_dir(dir.path()).unwrap();

        let tmp = sub.join("x.tmp");
        let mut f = fs.create_new(&tmp).unwrap();
        f.write_all(b"hello world").unwrap();
        f.sync().unwrap();
        f.set_len(5).unwrap();
        f.sync().unwrap();
        drop(f);
        let again = fs.create_new(&tmp).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);

        let seg = sub.join("x.seg");
        fs.rename(&tmp, &seg).unwrap();
        fs.sync_dir(&sub).unwrap();
        assert_eq!(fs.file_len(&tmp).unwrap(), None);
        assert_eq!(fs.file_len(&seg).unwrap(), Some(5));
        assert_eq!(
            fs.file_len(&sub).unwrap_err().kind(),
            io::ErrorKind::IsADirectory
        );

        let mut r = fs.open_read(&seg).unwrap();
        assert_eq!(r.len().unwrap(), 5);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");

        let mut rw = fs.open_rw(&seg).unwrap();
        rw.seek(SeekFrom::End(0)).unwrap();
        rw.write_all(b"!").unwrap();
        rw.sync().unwrap();
        drop(rw);

        for name in ["c", "b.seg", "a"] {
            drop(fs.create_new(&sub.join(name)).unwrap());
        }
        fs.create_dir_all(&sub.join("d")).unwrap();
        let names: Vec<_> = fs
            .list_dir(&sub)
            .unwrap()
            .into_iter()
            .map(|e| (e.name.into_string().unwrap(), e.kind, e.len))
            .collect();
        assert_eq!(
            names,
            [
                ("a".to_owned(), EntryKind::File, 0),
                ("b.seg".to_owned(), EntryKind::File, 0),
                ("c".to_owned(), EntryKind::File, 0),
                ("d".to_owned(), EntryKind::Dir, 0),
                ("x.seg".to_owned(), EntryKind::File, 6),
            ]
        );

        fs.remove_file(&seg).unwrap();
        fs.sync_dir(&sub).unwrap();
        assert_eq!(fs.file_len(&seg).unwrap(), None);
        assert_eq!(
            fs.remove_file(&seg).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(fs.available_bytes(dir.path()).unwrap() > 0);
    }

    #[test]
    fn real_fs_database_create_open_and_locked() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs;
        let path = dir.path().join("edge.redb");
        assert!(fs.open_database(&path, false).is_err());
        let db = fs.open_database(&path, true).unwrap();
        assert!(matches!(
            fs.open_database(&path, false),
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
        ));
        drop(db);
        fs.open_database(&path, false).unwrap();
    }

    #[test]
    fn error_classification() {
        assert!(is_enospc(&enospc()));
        assert!(!is_eio(&enospc()));
        assert!(is_eio(&eio()));
        assert!(!is_enospc(&eio()));
        assert_eq!(enospc().raw_os_error(), Some(28));
        assert_eq!(eio().raw_os_error(), Some(5));
        assert!(is_enospc(&io::Error::other(enospc())));
        assert!(is_eio(&io::Error::other(eio())));
        assert!(!is_eio(&io::Error::from(io::ErrorKind::NotFound)));
    }
}
