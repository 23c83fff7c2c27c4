//! Files outside the data directory: reading a file from a medium (a USB stick, a path named
//! on the command line) and exporting segments into a directory (USB out).
//!
//! # Guarantees (INV-19)
//!
//! - [`open_regular`] opens a file for reading only if it is a regular file. The last path
//!   component is never followed (`O_NOFOLLOW`), a FIFO or device never blocks the open
//!   (`O_NONBLOCK`), and the type is checked on the opened descriptor, so a name swapped for
//!   something else between a listing and the open is refused too.
//! - [`ExportDir`] opens its directory once (`O_DIRECTORY | O_NOFOLLOW`) and does everything
//!   else relative to that descriptor (`openat`, `renameat`, `unlinkat`, `fstat`): moving or
//!   replacing the path meanwhile cannot redirect a write. It writes only `<id>.seg` and its
//!   temporary `.<id>.seg.tmp`, both directly in that directory.
//! - The temporary file is always a new file (`O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC`):
//!   whatever was at its name (a leftover of an interrupted export, a symlink, a FIFO) is
//!   unlinked first, never opened, never followed. A directory there is refused.
//! - At `<id>.seg`, a regular file holding exactly the segment is left alone
//!   ([`Exported::AlreadyThere`]); a regular file holding anything else is replaced atomically
//!   (rename); anything else — symlink, FIFO, socket, device, directory — is refused with
//!   [`ExportError::NotRegular`] naming it, checked before writing and again just before the
//!   rename, and is never opened or followed.
//! - The bytes written are verified as they are written: the header must be the requested
//!   segment, signed by a trusted publisher, the length (when known up front) must be the
//!   declared one, and the payload must have the declared length and blake3, followed by the
//!   end of the stream. Only then: fsync, rename, fsync of the directory. On any failure the
//!   temporary file is removed; before the rename, `<id>.seg` is as it was (a failed fsync of
//!   the directory after it is reported: the new file may not survive a power loss).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{ExportError, OpenError};
use crate::id::SegmentId;
use crate::keys::TrustedPublishers;
use crate::limits::STREAM_BUF_BYTES;
use crate::segfile::{self, PayloadReader, SegFileError};
use crate::store::Store;

/// Flags of every open of an existing file here: read-only, never following the last component,
/// never blocking on a FIFO or device, not inherited by child processes.
const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);

/// Flags of the export's temporary file: always a new regular file, never through a symlink.
const TEMP_FLAGS: OFlags = OFlags::WRONLY
    .union(OFlags::CREATE)
    .union(OFlags::EXCL)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Permissions of an exported file before the umask: what `std::fs::File::create` uses.
const EXPORT_FILE_MODE: u32 = 0o666;

/// Longest name [`ExportDir::write_file`] writes: what file systems allow in one component,
/// less the temporary name's dot and `.tmp`.
const FILE_NAME_BYTES_MAX: usize = 250;

/// Outcome of exporting one segment into a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exported {
    Written(PathBuf),
    /// A regular file with the same name and exactly the segment's bytes was already there.
    AlreadyThere(PathBuf),
}

/// What a file type is called in messages.
fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "file of unknown type",
    }
}

fn file_type(fd: &OwnedFd) -> io::Result<FileType> {
    Ok(FileType::from_raw_mode(rustix::fs::fstat(fd)?.st_mode))
}

/// Opens `path` for reading if it is a regular file, without following a symlink at its last
/// component or blocking on a FIFO or device (see the module docs).
pub fn open_regular(path: &Path) -> Result<File, OpenError> {
    let io = |source: io::Error| OpenError::Io {
        path: path.to_owned(),
        source,
    };
    // Mutation point (INV-19): a symlink on the medium is followed to whatever it names.
    let flags = if crate::mutants::active("import_follows_symlink") {
        READ_FLAGS.difference(OFlags::NOFOLLOW)
    } else {
        READ_FLAGS
    };
    let fd = match rustix::fs::openat(rustix::fs::CWD, path, flags, Mode::empty()) {
        Ok(fd) => fd,
        // O_NOFOLLOW on a symlink.
        Err(Errno::LOOP) => {
            return Err(OpenError::NotRegular {
                path: path.to_owned(),
                kind: "symlink",
            });
        }
        Err(e) => return Err(io(e.into())),
    };
    match file_type(&fd).map_err(io)? {
        FileType::RegularFile => Ok(File::from(fd)),
        other => Err(OpenError::NotRegular {
            path: path.to_owned(),
            kind: kind_name(other),
        }),
    }
}

/// A directory segments are exported into, opened once; every file operation of an export is
/// relative to it.
#[derive(Debug)]
pub struct ExportDir {
    path: PathBuf,
    dir: OwnedFd,
}

/// What is at one name in an [`ExportDir`].
enum AtName {
    Nothing,
    Regular,
    Other(FileType),
}

impl ExportDir {
    /// Opens `path`, which must be a directory and not a symlink.
    pub fn open(path: &Path) -> Result<ExportDir, ExportError> {
        let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // Mutation point (INV-19): an export directory that is a symlink is followed, so the
        // export writes wherever it points.
        if crate::mutants::active("export_follows_symlink") {
            flags.remove(OFlags::NOFOLLOW);
        }
        let dir = rustix::fs::openat(rustix::fs::CWD, path, flags, Mode::empty()).map_err(|e| {
            // O_NOFOLLOW on a symlink fails as "not a directory" (or ELOOP): say what it is.
            let symlink = matches!(e, Errno::NOTDIR | Errno::LOOP)
                && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            if symlink {
                ExportError::DirIsSymlink {
                    path: path.to_owned(),
                }
            } else {
                ExportError::Dir {
                    path: path.to_owned(),
                    source: e.into(),
                }
            }
        })?;
        Ok(ExportDir {
            path: path.to_owned(),
            dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path segment `id` is exported to.
    pub fn target(&self, id: &SegmentId) -> PathBuf {
        self.path.join(target_name(id))
    }

    fn io(&self, op: &'static str, name: &str) -> impl FnOnce(Errno) -> ExportError + use<> {
        let path = self.path.join(name);
        move |e| ExportError::Io {
            op,
            path,
            source: e.into(),
        }
    }

    /// What is at `name`, without following or opening it.
    fn at(&self, name: &str) -> Result<AtName, ExportError> {
        match rustix::fs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => AtName::Regular,
                other => AtName::Other(other),
            }),
            Err(Errno::NOENT) => Ok(AtName::Nothing),
            Err(e) => Err(self.io("stat", name)(e)),
        }
    }

    /// Refuses anything but nothing or a regular file at `<id>.seg`.
    fn check_target(&self, id: &SegmentId) -> Result<AtName, ExportError> {
        let name = target_name(id);
        match self.at(&name)? {
            AtName::Other(t) => Err(ExportError::NotRegular {
                path: self.path.join(name),
                kind: kind_name(t),
            }),
            fine => Ok(fine),
        }
    }

    /// Whether `<id>.seg` already holds exactly segment `id`, signed by a trusted publisher:
    /// `false` when nothing is there or a regular file holding anything else (an export
    /// replaces it), an error when something other than a regular file is there.
    pub fn holds(&self, id: &SegmentId, trusted: &TrustedPublishers) -> Result<bool, ExportError> {
        let name = target_name(id);
        if let AtName::Nothing = self.check_target(id)? {
            return Ok(false);
        }
        let fd = match rustix::fs::openat(&self.dir, name.as_str(), READ_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            // Swapped for a symlink, or gone, since the check: not the segment.
            Err(Errno::LOOP | Errno::NOENT) => return Ok(false),
            Err(e) => return Err(self.io("open", &name)(e)),
        };
        if file_type(&fd).map_err(|e| ExportError::Io {
            op: "stat",
            path: self.path.join(&name),
            source: e,
        })? != FileType::RegularFile
        {
            return Ok(false);
        }
        let mut file = io::BufReader::with_capacity(STREAM_BUF_BYTES, File::from(fd));
        let Ok(signed) = segfile::read_header(&mut file) else {
            return Ok(false);
        };
        Ok(signed.id() == *id
            && signed.verify_signature(trusted).is_ok()
            && PayloadReader::for_manifest(&mut file, &signed)
                .finish()
                .is_ok())
    }

    /// Writes segment `id` as `<id>.seg` from `src`, which yields the whole `.seg` file
    /// (`expected_len` bytes, when known up front), verifying it as it is written; then fsync,
    /// rename over `<id>.seg`, fsync of the directory. Does not look at what `<id>.seg` holds:
    /// ask [`ExportDir::holds`] first to leave an identical copy alone.
    pub fn write<R: Read>(
        &self,
        id: &SegmentId,
        trusted: &TrustedPublishers,
        expected_len: Option<u64>,
        src: R,
    ) -> Result<PathBuf, ExportError> {
        self.check_target(id)?;
        let tmp = temp_name(id);
        let file = self.create_temp(&tmp)?;
        let written = self.fill_and_commit(id, trusted, expected_len, src, file, &tmp);
        if written.is_err() {
            // Gone already if the rename happened; any other error is the one to report.
            let _ = rustix::fs::unlinkat(&self.dir, tmp.as_str(), AtFlags::empty());
        }
        written
    }

    /// Creates the temporary file, clearing whatever a previous export (or anyone) left at its
    /// name: it is unlinked, never opened. One retry: a name that is taken again at once is
    /// someone racing this export, and the export fails.
    fn create_temp(&self, tmp: &str) -> Result<File, ExportError> {
        let mode = Mode::from(EXPORT_FILE_MODE);
        match rustix::fs::openat(&self.dir, tmp, TEMP_FLAGS, mode) {
            Ok(fd) => return Ok(File::from(fd)),
            Err(Errno::EXIST) => {}
            Err(e) => return Err(self.io("create", tmp)(e)),
        }
        match self.at(tmp)? {
            AtName::Other(FileType::Directory) => {
                return Err(ExportError::NotRegular {
                    path: self.path.join(tmp),
                    kind: "directory",
                });
            }
            AtName::Nothing => {}
            AtName::Regular | AtName::Other(_) => {
                match rustix::fs::unlinkat(&self.dir, tmp, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(self.io("remove leftover", tmp)(e)),
                }
                tracing::info!(path = %self.path.join(tmp).display(), "leftover temporary file of an earlier export removed");
            }
        }
        rustix::fs::openat(&self.dir, tmp, TEMP_FLAGS, mode)
            .map(File::from)
            .map_err(self.io("create", tmp))
    }

    /// Writes `bytes` as the file `name` directly in this directory, atomically: a new
    /// temporary `.<name>.tmp` (whatever was at that name is unlinked, never followed), fsync,
    /// rename over `name`, fsync of the directory. `name` must be a plain file name (no `/`,
    /// not hidden); anything but nothing or a regular file at `name` is refused. For the small
    /// files that travel beside segments (need-lists), which are not segments and so are not
    /// verified here.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, ExportError> {
        let plain = !name.is_empty()
            && name.len() <= FILE_NAME_BYTES_MAX
            && !name.starts_with('.')
            && !name.contains('/')
            && !name.contains('\0');
        if !plain {
            return Err(ExportError::Io {
                op: "name",
                path: self.path.join(name),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a plain file name"),
            });
        }
        if let AtName::Other(t) = self.at(name)? {
            return Err(ExportError::NotRegular {
                path: self.path.join(name),
                kind: kind_name(t),
            });
        }
        let tmp = format!(".{name}.tmp");
        let mut file = self.create_temp(&tmp)?;
        let written = (|| {
            file.write_all(bytes).map_err(|source| ExportError::Io {
                op: "write",
                path: self.path.join(&tmp),
                source,
            })?;
            rustix::fs::fsync(&file).map_err(self.io("fsync", &tmp))?;
            // Checked again: the rename must not replace what was put there meanwhile.
            if let AtName::Other(t) = self.at(name)? {
                return Err(ExportError::NotRegular {
                    path: self.path.join(name),
                    kind: kind_name(t),
                });
            }
            self.rename_durably(&tmp, name)
        })();
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&self.dir, tmp.as_str(), AtFlags::empty());
        }
        written
    }

    /// Bytes an unprivileged writer may still write on this directory's file system
    /// (`statvfs`: available blocks × fragment size).
    pub fn available_bytes(&self) -> Result<u64, ExportError> {
        let st = rustix::fs::fstatvfs(&self.dir).map_err(|e| ExportError::Io {
            op: "statvfs",
            path: self.path.clone(),
            source: e.into(),
        })?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    fn fill_and_commit<R: Read>(
        &self,
        id: &SegmentId,
        trusted: &TrustedPublishers,
        expected_len: Option<u64>,
        src: R,
        mut file: File,
        tmp: &str,
    ) -> Result<PathBuf, ExportError> {
        fill(id, trusted, expected_len, src, &mut file, || {
            self.path.join(tmp)
        })?;
        rustix::fs::fsync(&file).map_err(self.io("fsync", tmp))?;
        drop(file);
        // Checked again: the rename must not replace a directory, symlink or FIFO put there
        // while the bytes were being written.
        self.check_target(id)?;
        self.rename_durably(tmp, &target_name(id))
    }

    /// Renames the synced temporary `tmp` to `name` and syncs the directory: the file is there,
    /// whole, across a power loss.
    fn rename_durably(&self, tmp: &str, name: &str) -> Result<PathBuf, ExportError> {
        rustix::fs::renameat(&self.dir, tmp, &self.dir, name).map_err(self.io("rename", name))?;
        rustix::fs::fsync(&self.dir).map_err(|e| ExportError::Io {
            op: "fsync",
            path: self.path.clone(),
            source: e.into(),
        })?;
        Ok(self.path.join(name))
    }
}

/// Streams `src` into `file`, verifying it is exactly segment `id` (see [`ExportDir::write`]).
fn fill<R: Read>(
    id: &SegmentId,
    trusted: &TrustedPublishers,
    expected_len: Option<u64>,
    mut src: R,
    file: &mut File,
    tmp_path: impl Fn() -> PathBuf,
) -> Result<(), ExportError> {
    let bad = |source: SegFileError| match source {
        SegFileError::Io(source) => ExportError::Read { id: *id, source },
        source => ExportError::BadCopy { id: *id, source },
    };
    let write_err = |source: io::Error| ExportError::Io {
        op: "write",
        path: tmp_path(),
        source,
    };
    let signed = segfile::read_header(&mut src).map_err(bad)?;
    if signed.id() != *id {
        return Err(ExportError::WrongSegment {
            wanted: *id,
            found: signed.id(),
        });
    }
    signed
        .verify_signature(trusted)
        .map_err(|e| bad(SegFileError::Verify(e)))?;
    let declared = segfile::file_len_of(&signed);
    if let Some(actual) = expected_len.filter(|&n| n != declared) {
        return Err(bad(SegFileError::FileLengthMismatch { declared, actual }));
    }
    // Through the page cache: the copy is written by the thread that reads and checks it, and
    // direct writes that wait for the device made a 1 GiB export take 2.2 s instead of 1.2.
    let mut out = io::BufWriter::with_capacity(STREAM_BUF_BYTES, file);
    segfile::write_header(&mut out, &signed).map_err(write_err)?;
    let mut payload = PayloadReader::for_manifest(&mut src, &signed);
    let mut buf = vec![0u8; STREAM_BUF_BYTES];
    loop {
        let n = match payload.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad(SegFileError::Io(e))),
        };
        out.write_all(&buf[..n]).map_err(write_err)?;
    }
    // Length, end of stream and hash: a copy that fails here is never renamed into place.
    payload.finish().map_err(bad)?;
    out.flush().map_err(write_err)
}

/// A reader that reports how many bytes each read returned.
struct Reported<R, F> {
    inner: R,
    moved: F,
}

impl<R: Read, F: FnMut(u64)> Read for Reported<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.moved)(n as u64);
        Ok(n)
    }
}

fn target_name(id: &SegmentId) -> String {
    format!("{id}.seg")
}

fn temp_name(id: &SegmentId) -> String {
    format!(".{id}.seg.tmp")
}

impl Store {
    /// Exports stored segment `id` into `dir` as `<id>.seg` (see the module docs). The stored
    /// copy is verified (signature and trust when opened, payload while copied); a copy found
    /// corrupt is quarantined and the error is [`StoreError::Quarantined`](crate::StoreError).
    pub fn export_to(
        &self,
        id: &SegmentId,
        dir: &ExportDir,
        now_ms: u64,
    ) -> Result<Exported, ExportError> {
        self.export_to_reporting(id, dir, now_ms, |_| {})
    }

    /// [`Store::export_to`], telling `moved` how many bytes each read of the stored copy took (a
    /// progress bar's feed).
    pub fn export_to_reporting(
        &self,
        id: &SegmentId,
        dir: &ExportDir,
        now_ms: u64,
        moved: impl FnMut(u64),
    ) -> Result<Exported, ExportError> {
        let mut reader = self.open_for_read(id, now_ms)?;
        let trusted = &self.trusted();
        if dir.holds(id, trusted)? {
            return Ok(Exported::AlreadyThere(dir.target(id)));
        }
        let header = crate::ingest::header_bytes(reader.manifest());
        let file_len = reader.row().file_len;
        let src = Reported {
            inner: io::Cursor::new(header).chain(reader.payload()),
            moved,
        };
        match dir.write(id, trusted, Some(file_len), src) {
            Ok(path) => Ok(Exported::Written(path)),
            // The header was checked when opened: what fails here is the stored payload.
            Err(ExportError::BadCopy { source, .. }) => {
                let reason = source.to_string();
                drop(reader);
                self.quarantine(id, &reason, now_ms)?;
                Err(crate::StoreError::Quarantined { id: *id, reason }.into())
            }
            Err(e) => Err(e),
        }
    }

    /// [`Store::export_to`] into `dir`, opened for this one export.
    pub fn export_to_dir(
        &self,
        id: &SegmentId,
        dir: &Path,
        now_ms: u64,
    ) -> Result<Exported, ExportError> {
        self.export_to(id, &ExportDir::open(dir)?, now_ms)
    }
}
