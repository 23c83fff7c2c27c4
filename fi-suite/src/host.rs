//! The host under the nodes: a small tmpfs on a node's data dir, free space, a file that fills
//! a file system, libfaketime for a node's wall clock, byte surgery on files at rest, and
//! snapshots of a directory (a USB stick, an export target) to prove what did not change.
//!
//! Everything here acts on the machine, never on a node's state through a library: the faults
//! are what a failing disk, a wrong clock or a hostile medium would do to a real host.
//! A capability the machine lacks (no permission to mount, no libfaketime) is a [`Skip`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::proc;
use crate::scenario::Skip;

/// Longest a `mount` or `umount` may take.
pub const MOUNT_TIMEOUT_MS: u64 = 10_000;
/// Entries a [`snapshot`] reads at most (a stick in these scenarios holds a few thousand).
pub const SNAPSHOT_ENTRIES_MAX: usize = 20_000;
/// Directory levels a [`snapshot`] descends at most.
pub const SNAPSHOT_DEPTH_MAX: usize = 4;
/// Regular files larger than this are snapshot by size and times only, not hashed.
pub const SNAPSHOT_HASH_BYTES_MAX: u64 = 64 << 20;
/// Bytes of `.seg` preamble before the signed manifest: magic (6), version (2), header length
/// (4). The file format is written down in `store/src/segfile.rs`.
pub const SEG_PREAMBLE_BYTES: u64 = 12;
/// Bytes of the ed25519 signature, the last part of the signed manifest.
pub const SIGNATURE_BYTES: u64 = 64;

/// A tmpfs mounted on a directory; unmounted when dropped (lazily if something still holds
/// it, so that no mount outlives its scenario).
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
    size_bytes: u64,
    mounted: bool,
}

fn run_mount(args: &[&str], dir: &Path) -> anyhow::Result<std::process::Output> {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]).arg(dir);
    proc::run_bounded(cmd, Duration::from_millis(MOUNT_TIMEOUT_MS))
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_bytes` on `dir` (created if missing). A machine that does not let
    /// this process mount is a [`Skip`].
    pub fn mount(dir: &Path, size_bytes: u64) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        // A mount left by an interrupted run of the suite on this very path goes first.
        if is_mount_point(dir) {
            let _ = run_mount(&["umount", "-l"], dir);
        }
        let opts = format!("size={size_bytes},mode=0755");
        let out = match run_mount(&["mount", "-t", "tmpfs", "-o", &opts, "tmpfs"], dir) {
            Ok(out) => out,
            Err(e) => return Err(Skip(format!("cannot run mount: {e:#}")).into()),
        };
        if !out.status.success() {
            return Err(Skip(format!(
                "cannot mount a tmpfs on {} (needs root or CAP_SYS_ADMIN): {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
            .into());
        }
        Ok(Tmpfs {
            dir: dir.to_owned(),
            size_bytes,
            mounted: true,
        })
    }

    /// Changes the size of the mounted file system, keeping its contents (the heal of a full
    /// disk: an operator grows the volume).
    pub fn resize(&mut self, size_bytes: u64) -> anyhow::Result<()> {
        let opts = format!("remount,size={size_bytes}");
        let out = run_mount(&["mount", "-o", &opts], &self.dir)?;
        if !out.status.success() {
            bail!(
                "cannot resize the tmpfs on {}: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        self.size_bytes = size_bytes;
        Ok(())
    }

    /// Unmounts it; an error if it is still in use (stop the node first).
    pub fn unmount(mut self) -> anyhow::Result<()> {
        self.mounted = false;
        let out = run_mount(&["umount"], &self.dir)?;
        if !out.status.success() {
            // Never leave it behind: detach it now, it goes when its last user does.
            let _ = run_mount(&["umount", "-l"], &self.dir);
            bail!(
                "cannot unmount {}: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            // A daemon may still hold files in it (the scenario failed before stopping it): a
            // lazy unmount detaches it at once and frees it when that process dies.
            let _ = run_mount(&["umount", "-l"], &self.dir);
        }
    }
}

/// Whether `dir` is a mount point now (from `/proc/self/mountinfo`).
pub fn is_mount_point(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|line| {
        // Field 5 is the mount point, with spaces and the like written as octal escapes.
        line.split(' ')
            .nth(4)
            .is_some_and(|p| Path::new(&unescape_mountinfo(p)) == dir)
    })
}

fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = std::str::from_utf8(&bytes[i + 1..i + 4]).ok();
            if let Some(v) = oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Bytes an unprivileged writer can still put on the file system holding `path`.
pub fn free_bytes(path: &Path) -> anyhow::Result<u64> {
    let st = rustix::fs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Fills the file system holding `dir` with the file `dir/name` (allocated, not written), so
/// that at most `leave_bytes` stay free: another writer taking the disk. Returns its size.
///
/// It takes the room in steps, halving a step the file system refuses down to one page, so
/// that what others write meanwhile (an ingest in flight) cannot make it fail.
pub fn fill(dir: &Path, name: &str, leave_bytes: u64) -> anyhow::Result<u64> {
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut len = file.metadata()?.len();
    let mut step = FILL_STEP_BYTES;
    for _ in 0..FILL_STEPS_MAX {
        let free = free_bytes(dir)?;
        if free <= leave_bytes {
            break;
        }
        let want = step.min(free - leave_bytes);
        match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), len, want) {
            Ok(()) => len += want,
            Err(rustix::io::Errno::NOSPC) if step > FILL_PAGE_BYTES => step /= 2,
            Err(rustix::io::Errno::NOSPC) => break,
            Err(e) => {
                return Err(anyhow::Error::from(e)
                    .context(format!("fallocate {want} bytes in {}", path.display())));
            }
        }
    }
    Ok(file.metadata()?.len())
}

/// The first step of [`fill`].
pub const FILL_STEP_BYTES: u64 = 1 << 20;
/// The smallest step of [`fill`]: one page.
pub const FILL_PAGE_BYTES: u64 = 4096;
/// Steps [`fill`] takes at most (a few hundred MiB of tmpfs in 1 MiB steps, and the halvings).
pub const FILL_STEPS_MAX: usize = 4096;

/// Sees files being created in one directory (inotify), so that a fault can land right after
/// a file appears: far sooner than any polling of the directory would.
#[derive(Debug)]
pub struct CreateWatch {
    fd: std::os::fd::OwnedFd,
    dir: PathBuf,
}

/// How often [`CreateWatch::wait`] looks for events: a few hundred microseconds, far less than
/// a daemon takes to write a few MiB.
pub const CREATE_WATCH_POLL_US: u64 = 200;

impl CreateWatch {
    pub fn new(dir: &Path) -> anyhow::Result<CreateWatch> {
        use rustix::fs::inotify;
        let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
            .context("inotify_init1")?;
        inotify::add_watch(&fd, dir, inotify::WatchFlags::CREATE)
            .with_context(|| format!("inotify watch on {}", dir.display()))?;
        Ok(CreateWatch {
            fd,
            dir: dir.to_owned(),
        })
    }

    /// Waits at most `limit` for a file whose name satisfies `want` to be created: its path.
    pub fn wait(
        &self,
        limit: Duration,
        want: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Option<PathBuf>> {
        use rustix::fs::inotify;
        let deadline = std::time::Instant::now() + limit;
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        while std::time::Instant::now() < deadline {
            match reader.next() {
                Ok(event) => {
                    let name = event
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if want(&name) {
                        return Ok(Some(self.dir.join(name)));
                    }
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    std::thread::sleep(Duration::from_micros(CREATE_WATCH_POLL_US))
                }
                Err(e) => return Err(anyhow::Error::from(e).context("inotify read")),
            }
        }
        Ok(None)
    }
}

/// The directory file name of libfaketime's preload library for this machine, if installed
/// (`scripts/fi-deps.sh` installs the distribution's package).
pub fn faketime_lib() -> Option<PathBuf> {
    let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
    [
        format!("/usr/lib/{multiarch}/faketime/libfaketime.so.1"),
        "/usr/lib/faketime/libfaketime.so.1".to_owned(),
        "/usr/lib64/faketime/libfaketime.so.1".to_owned(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// libfaketime's library, or a [`Skip`] saying how to get it.
pub fn require_faketime() -> anyhow::Result<PathBuf> {
    faketime_lib().ok_or_else(|| {
        Skip(
            "libfaketime.so.1 is not installed (scripts/fi-deps.sh installs the \
             distribution's libfaketime package)"
                .into(),
        )
        .into()
    })
}

/// The environment that runs a process with its wall clock moved by `offset` (libfaketime's
/// syntax: `-3h`, `+2d`). Monotonic time is left alone: a real clock error moves the wall clock
/// only, and sleeps and timeouts must keep their length.
pub fn faketime_offset_env(lib: &Path, offset: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("LD_PRELOAD".into(), lib.display().to_string());
    env.insert("FAKETIME".into(), offset.into());
    env.insert("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into());
    env
}

/// The environment that runs a process whose wall clock follows the offset written in `file`,
/// re-read on every call: writing the file makes the clock jump while the process runs.
pub fn faketime_file_env(lib: &Path, file: &Path) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("LD_PRELOAD".into(), lib.display().to_string());
    env.insert("FAKETIME_TIMESTAMP_FILE".into(), file.display().to_string());
    env.insert("FAKETIME_NO_CACHE".into(), "1".into());
    env.insert("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into());
    env
}

/// Where the parts of a `.seg` file are (the layout of `store/src/segfile.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegLayout {
    pub file_len: u64,
    /// The signed manifest: `[SEG_PREAMBLE_BYTES, payload_start)`; its last
    /// [`SIGNATURE_BYTES`] are the signature.
    pub header_len: u64,
    pub payload_start: u64,
}

impl SegLayout {
    pub fn of(path: &Path) -> anyhow::Result<SegLayout> {
        let mut file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut pre = [0u8; SEG_PREAMBLE_BYTES as usize];
        file.read_exact(&mut pre)
            .with_context(|| format!("{} is shorter than a .seg preamble", path.display()))?;
        let header_len = u64::from(u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]));
        let file_len = file.metadata()?.len();
        let payload_start = SEG_PREAMBLE_BYTES + header_len;
        if header_len < SIGNATURE_BYTES || payload_start > file_len {
            bail!("{} does not look like a .seg file", path.display());
        }
        Ok(SegLayout {
            file_len,
            header_len,
            payload_start,
        })
    }

    pub fn payload_len(&self) -> u64 {
        self.file_len - self.payload_start
    }

    /// Offset of signature byte `k` (`k < SIGNATURE_BYTES`).
    pub fn signature_byte(&self, k: u64) -> u64 {
        self.payload_start - SIGNATURE_BYTES + k.min(SIGNATURE_BYTES - 1)
    }
}

/// Inverts the byte at `offset` in place (same file, same length, times kept), as bit rot does;
/// returns the byte it held.
pub fn flip_byte(path: &Path, offset: u64) -> anyhow::Result<u8> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    let meta = file.metadata()?;
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset)
        .with_context(|| format!("read byte {offset} of {}", path.display()))?;
    file.write_all_at(&[!b[0]], offset)?;
    file.sync_all()?;
    keep_times(&file, &meta)?;
    Ok(b[0])
}

/// Cuts `path` to `len` bytes (times kept).
pub fn truncate(path: &Path, len: u64) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    let meta = file.metadata()?;
    file.set_len(len)?;
    file.sync_all()?;
    keep_times(&file, &meta)
}

/// Overwrites `bytes.len()` bytes at `offset` (times kept).
pub fn overwrite(path: &Path, offset: u64, bytes: &[u8]) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    let meta = file.metadata()?;
    file.write_all_at(bytes, offset)?;
    file.sync_all()?;
    keep_times(&file, &meta)
}

fn keep_times(file: &File, before: &std::fs::Metadata) -> anyhow::Result<()> {
    let times = std::fs::FileTimes::new()
        .set_accessed(before.accessed()?)
        .set_modified(before.modified()?);
    file.set_times(times)?;
    Ok(())
}

/// blake3 of a whole file, and its length.
pub fn hash_file(path: &Path) -> anyhow::Result<([u8; 32], u64)> {
    let mut file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    let n = std::io::copy(&mut file, &mut hasher)?;
    Ok((*hasher.finalize().as_bytes(), n))
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) -> anyhow::Result<()> {
    rustix::fs::mkfifoat(rustix::fs::CWD, path, rustix::fs::Mode::from(0o644))
        .with_context(|| format!("mkfifo {}", path.display()))
}

/// Makes a character device node at `path` (needs root): `major:minor`.
pub fn mknod_char(path: &Path, major: u32, minor: u32) -> anyhow::Result<()> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from(0o644),
        rustix::fs::makedev(major, minor),
    )
    .with_context(|| format!("mknod {} c {major} {minor}", path.display()))
}

/// What one directory entry is, as far as "did anything change it" goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryState {
    pub kind: &'static str,
    pub len: u64,
    pub mode: u32,
    pub ino: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    /// Where a symlink points.
    pub link: Option<PathBuf>,
    /// blake3 of a regular file's contents (up to [`SNAPSHOT_HASH_BYTES_MAX`]).
    pub hash: Option<[u8; 32]>,
}

/// Relative path → state of every entry under `dir` (not following symlinks, never opening
/// anything but regular files).
pub type Snapshot = BTreeMap<PathBuf, EntryState>;

fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "char device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_socket() {
        "socket"
    } else {
        "unknown"
    }
}

/// Snapshot of everything under `dir`, bounded in entries and depth.
pub fn snapshot(dir: &Path) -> anyhow::Result<Snapshot> {
    let mut out = Snapshot::new();
    let mut stack = vec![(PathBuf::new(), 0usize)];
    while let Some((rel, depth)) = stack.pop() {
        for item in std::fs::read_dir(dir.join(&rel))? {
            if out.len() >= SNAPSHOT_ENTRIES_MAX {
                bail!(
                    "{} holds more than {SNAPSHOT_ENTRIES_MAX} entries",
                    dir.display()
                );
            }
            let item = item?;
            let path = item.path();
            let meta = path.symlink_metadata()?;
            let kind = kind_of(meta.file_type());
            let name = rel.join(item.file_name());
            let hash = if kind == "file" && meta.len() <= SNAPSHOT_HASH_BYTES_MAX {
                // O_NONBLOCK is not needed: the listing said it is a regular file, and a swap
                // in between would show as a changed inode anyway.
                Some(hash_file(&path)?.0)
            } else {
                None
            };
            let link = if kind == "symlink" {
                Some(std::fs::read_link(&path)?)
            } else {
                None
            };
            if kind == "directory" && depth + 1 < SNAPSHOT_DEPTH_MAX {
                stack.push((name.clone(), depth + 1));
            }
            out.insert(
                name,
                EntryState {
                    kind,
                    len: meta.len(),
                    mode: meta.mode(),
                    ino: meta.ino(),
                    mtime_ns: i128::from(meta.mtime()) * 1_000_000_000
                        + i128::from(meta.mtime_nsec()),
                    ctime_ns: i128::from(meta.ctime()) * 1_000_000_000
                        + i128::from(meta.ctime_nsec()),
                    link,
                    hash,
                },
            );
        }
    }
    Ok(out)
}

/// What differs between two snapshots, one line per entry (added, removed, changed), at most
/// `limit` lines; `ignore` names entries expected to change.
pub fn diff(before: &Snapshot, after: &Snapshot, ignore: &[&Path], limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let skip = |p: &Path| ignore.contains(&p);
    for (p, b) in before {
        if skip(p) {
            continue;
        }
        match after.get(p) {
            None => out.push(format!("{} removed", p.display())),
            Some(a) if a != b => {
                let mut what = Vec::new();
                if a.kind != b.kind {
                    what.push(format!("kind {} → {}", b.kind, a.kind));
                }
                if a.len != b.len {
                    what.push(format!("length {} → {}", b.len, a.len));
                }
                if a.hash != b.hash {
                    what.push("contents".into());
                }
                if a.mtime_ns != b.mtime_ns {
                    what.push("mtime".into());
                }
                if a.ctime_ns != b.ctime_ns {
                    what.push("ctime".into());
                }
                if a.mode != b.mode {
                    what.push(format!("mode {:o} → {:o}", b.mode, a.mode));
                }
                if a.ino != b.ino {
                    what.push("inode".into());
                }
                if a.link != b.link {
                    what.push("link target".into());
                }
                out.push(format!("{} changed: {}", p.display(), what.join(", ")));
            }
            Some(_) => {}
        }
    }
    for p in after.keys() {
        if !skip(p) && !before.contains_key(p) {
            out.push(format!("{} added", p.display()));
        }
    }
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_read_back() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain/path"), "/plain/path");
        assert_eq!(unescape_mountinfo("/end\\"), "/end\\");
        assert!(is_mount_point(Path::new("/")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()));
    }

    #[test]
    fn flip_truncate_and_overwrite_change_only_what_they_say() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, [1u8, 2, 3, 4]).unwrap();
        let before = std::fs::metadata(&p).unwrap().modified().unwrap();
        assert_eq!(flip_byte(&p, 2).unwrap(), 3);
        assert_eq!(std::fs::read(&p).unwrap(), [1, 2, !3u8, 4]);
        assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), before);
        overwrite(&p, 0, &[9, 9]).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), [9, 9, !3u8, 4]);
        truncate(&p, 1).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), [9]);
        assert!(flip_byte(&p, 5).is_err());
    }

    #[test]
    fn a_seg_layout_is_read_from_its_preamble() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.seg");
        let mut bytes = b"EDGSEG\x01\x00".to_vec();
        bytes.extend_from_slice(&100u32.to_le_bytes());
        bytes.extend(std::iter::repeat_n(7u8, 100 + 50));
        std::fs::write(&p, &bytes).unwrap();
        let l = SegLayout::of(&p).unwrap();
        assert_eq!(l.header_len, 100);
        assert_eq!(l.payload_start, 112);
        assert_eq!(l.payload_len(), 50);
        assert_eq!(l.signature_byte(0), 112 - 64);
        assert_eq!(l.signature_byte(1000), 111);
        std::fs::write(&p, &bytes[..20]).unwrap();
        assert!(SegLayout::of(&p).is_err());
    }

    #[test]
    fn snapshots_see_every_change_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a"), b"one").unwrap();
        std::fs::create_dir(d.join("sub.seg")).unwrap();
        std::fs::write(d.join("sub.seg/inner"), b"two").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.join("link")).unwrap();
        mkfifo(&d.join("pipe")).unwrap();
        let before = snapshot(d).unwrap();
        assert_eq!(before.len(), 5);
        assert_eq!(before[Path::new("pipe")].kind, "fifo");
        assert_eq!(before[Path::new("link")].kind, "symlink");
        assert!(diff(&before, &snapshot(d).unwrap(), &[], 10).is_empty());
        std::fs::write(d.join("sub.seg/inner"), b"TWO").unwrap();
        std::fs::write(d.join("new"), b"").unwrap();
        let changes = diff(&before, &snapshot(d).unwrap(), &[], 10);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(
            changes
                .iter()
                .any(|c| c.starts_with("sub.seg/inner changed"))
        );
        assert!(changes.iter().any(|c| c == "new added"));
        let ignored = diff(
            &before,
            &snapshot(d).unwrap(),
            &[Path::new("sub.seg/inner"), Path::new("new")],
            10,
        );
        assert!(ignored.is_empty(), "{ignored:?}");
    }

    #[test]
    fn a_create_watch_sees_the_file_it_waits_for_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let watch = CreateWatch::new(dir.path()).unwrap();
        std::fs::write(dir.path().join("other"), b"").unwrap();
        std::fs::write(dir.path().join("x.part"), b"").unwrap();
        let seen = watch
            .wait(Duration::from_secs(5), |n| n.ends_with(".part"))
            .unwrap();
        assert_eq!(seen, Some(dir.path().join("x.part")));
        let none = watch
            .wait(Duration::from_millis(20), |n| n.ends_with(".part"))
            .unwrap();
        assert_eq!(none, None);
    }

    #[test]
    fn fill_leaves_what_it_is_asked_to_leave() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        // Not really filling the test machine's disk: leave all but 1 MiB of it.
        let len = fill(dir.path(), "filler", free.saturating_sub(1 << 20)).unwrap();
        assert!(len <= 1 << 20, "{len}");
    }
}
