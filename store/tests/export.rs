//! Export confinement (INV-19): an export writes `<id>.seg` only inside its directory, never
//! through a symlink, never blocked by a FIFO, never over something that is not a regular
//! file; what it writes is verified; a failure leaves no temporary file. And files on a medium
//! are opened only if regular, without following or blocking.
//!
//! Every call that a FIFO could block runs on its own thread and must return within
//! [`BLOCK_LIMIT`].

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use store::segfile::SegFileError;
use store::{ExportDir, ExportError, Exported, OpenError, SegmentId, Store};

/// Longest a call may take before it counts as blocked (it returns in milliseconds).
const BLOCK_LIMIT: Duration = Duration::from_secs(10);
const BODY_BYTES: usize = 150_000;

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    id: SegmentId,
    file: Vec<u8>,
    secret: store::keys::PublisherSecret,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = publisher(4);
        let store = open_real(config(
            &dir.path().join("data"),
            1 << 30,
            trusting(&[&secret]),
        ));
        let (signed, file) = seg(&secret, &SegSpec::named("bundle"), &payload(4, BODY_BYTES));
        let id = ingest_ok(&store, &file);
        assert_eq!(id, signed.id());
        std::fs::create_dir(dir.path().join("usb")).expect("usb dir");
        std::fs::write(dir.path().join("outside.txt"), b"precious").expect("outside file");
        Fixture {
            dir,
            store,
            id,
            file,
            secret,
        }
    }

    fn usb(&self) -> PathBuf {
        self.dir.path().join("usb")
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside.txt")
    }

    fn target(&self) -> PathBuf {
        self.usb().join(format!("{}.seg", self.id))
    }

    fn temp(&self) -> PathBuf {
        self.usb().join(format!(".{}.seg.tmp", self.id))
    }

    /// Exports on another thread; panics if it does not return within [`BLOCK_LIMIT`].
    fn export(&self) -> Result<Exported, ExportError> {
        let (store, id, usb) = (self.store.clone(), self.id, self.usb());
        bounded("export", move || store.export_to_dir(&id, &usb, NOW_MS))
    }

    fn assert_outside_untouched(&self) {
        assert_eq!(std::fs::read(self.outside()).unwrap(), b"precious");
    }

    fn assert_exported(&self) {
        let meta = std::fs::symlink_metadata(self.target()).unwrap();
        assert!(meta.file_type().is_file(), "{meta:?}");
        assert_eq!(std::fs::read(self.target()).unwrap(), self.file);
    }

    /// Names in the export directory, sorted.
    fn usb_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.usb())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Runs `f` on its own thread and waits at most [`BLOCK_LIMIT`] for it.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(BLOCK_LIMIT)
        .unwrap_or_else(|_| panic!("{what} did not return within {BLOCK_LIMIT:?}: it blocked"))
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from(0o644),
        0,
    )
    .expect("mkfifo");
}

fn refused_as(result: Result<Exported, ExportError>, path: &Path, want_kind: &str) {
    match result {
        Err(ExportError::NotRegular { path: p, kind }) => {
            assert_eq!(p, path);
            assert_eq!(kind, want_kind);
        }
        other => panic!(
            "expected {} refused as a {want_kind}, got {other:?}",
            path.display()
        ),
    }
}

#[test]
fn inv_19_export_writes_the_segment_then_finds_it_already_there() {
    let f = Fixture::new();
    assert_eq!(f.export().unwrap(), Exported::Written(f.target()));
    f.assert_exported();
    let inode = std::fs::metadata(f.target()).unwrap().ino();
    assert_eq!(f.export().unwrap(), Exported::AlreadyThere(f.target()));
    assert_eq!(
        std::fs::metadata(f.target()).unwrap().ino(),
        inode,
        "left alone"
    );
    assert_eq!(f.usb_names(), vec![format!("{}.seg", f.id)]);
}

#[test]
fn inv_19_symlink_at_the_temp_name_pointing_outside_is_never_followed() {
    let f = Fixture::new();
    std::os::unix::fs::symlink("../outside.txt", f.temp()).unwrap();
    assert_eq!(f.export().unwrap(), Exported::Written(f.target()));
    f.assert_outside_untouched();
    f.assert_exported();
    assert_eq!(
        f.usb_names(),
        vec![format!("{}.seg", f.id)],
        "the link is gone"
    );
}

#[test]
fn inv_19_symlink_at_the_target_is_refused_and_never_followed() {
    let f = Fixture::new();
    std::os::unix::fs::symlink("../outside.txt", f.target()).unwrap();
    refused_as(f.export(), &f.target(), "symlink");
    f.assert_outside_untouched();
    let meta = std::fs::symlink_metadata(f.target()).unwrap();
    assert!(meta.file_type().is_symlink(), "the link is left as it was");
    assert_eq!(
        f.usb_names(),
        vec![format!("{}.seg", f.id)],
        "no temp file left"
    );
    // A dangling link too (following it would create the file it points to).
    std::fs::remove_file(f.target()).unwrap();
    std::os::unix::fs::symlink("../created-by-export", f.target()).unwrap();
    refused_as(f.export(), &f.target(), "symlink");
    assert!(!f.dir.path().join("created-by-export").exists());
}

#[test]
fn inv_19_fifo_at_the_target_is_refused_without_blocking() {
    let f = Fixture::new();
    mkfifo(&f.target());
    refused_as(f.export(), &f.target(), "FIFO");
    assert_eq!(
        f.usb_names(),
        vec![format!("{}.seg", f.id)],
        "no temp file left"
    );
}

#[test]
fn inv_19_fifo_at_the_temp_name_is_cleared_without_blocking() {
    let f = Fixture::new();
    mkfifo(&f.temp());
    assert_eq!(f.export().unwrap(), Exported::Written(f.target()));
    f.assert_exported();
    assert_eq!(f.usb_names(), vec![format!("{}.seg", f.id)]);
}

#[test]
fn inv_19_directory_or_socket_at_the_target_is_refused() {
    let f = Fixture::new();
    std::fs::create_dir(f.target()).unwrap();
    std::fs::write(f.target().join("keep"), b"mine").unwrap();
    refused_as(f.export(), &f.target(), "directory");
    assert_eq!(std::fs::read(f.target().join("keep")).unwrap(), b"mine");
    std::fs::remove_dir_all(f.target()).unwrap();

    let _listener = std::os::unix::net::UnixListener::bind(f.target()).unwrap();
    refused_as(f.export(), &f.target(), "socket");
    assert_eq!(
        f.usb_names(),
        vec![format!("{}.seg", f.id)],
        "no temp file left"
    );
}

#[test]
fn inv_19_directory_at_the_temp_name_is_refused_and_left_alone() {
    let f = Fixture::new();
    std::fs::create_dir(f.temp()).unwrap();
    std::fs::write(f.temp().join("keep"), b"mine").unwrap();
    refused_as(f.export(), &f.temp(), "directory");
    assert_eq!(std::fs::read(f.temp().join("keep")).unwrap(), b"mine");
    assert!(!f.target().exists());
}

#[test]
fn inv_19_leftover_temp_file_never_fails_or_corrupts_the_next_export() {
    let f = Fixture::new();
    // An interrupted export left a longer, different file behind.
    std::fs::write(f.temp(), vec![0xee; BODY_BYTES * 2]).unwrap();
    assert_eq!(f.export().unwrap(), Exported::Written(f.target()));
    f.assert_exported();
    assert_eq!(f.usb_names(), vec![format!("{}.seg", f.id)]);
}

#[test]
fn inv_19_other_content_at_the_target_is_replaced_atomically() {
    let f = Fixture::new();
    // A truncated copy, then one with a flipped payload byte: neither is "already there".
    for bad in [f.file[..f.file.len() - 1].to_vec(), {
        let mut b = f.file.clone();
        let last = b.len() - 1;
        b[last] ^= 1;
        b
    }] {
        std::fs::write(f.target(), &bad).unwrap();
        let hard_link = f.dir.path().join("old-copy");
        let _ = std::fs::remove_file(&hard_link);
        std::fs::hard_link(f.target(), &hard_link).unwrap();
        assert_eq!(f.export().unwrap(), Exported::Written(f.target()));
        f.assert_exported();
        // Replaced by rename, not rewritten in place: the old inode keeps the old bytes.
        assert_eq!(std::fs::read(&hard_link).unwrap(), bad);
    }
}

#[test]
fn inv_19_export_directory_that_is_a_symlink_is_refused() {
    let f = Fixture::new();
    let link = f.dir.path().join("usb-link");
    std::os::unix::fs::symlink("usb", &link).unwrap();
    let err = f.store.export_to_dir(&f.id, &link, NOW_MS).unwrap_err();
    assert!(matches!(err, ExportError::DirIsSymlink { .. }), "{err:?}");
    assert!(err.to_string().contains("is a symlink"), "{err}");
    assert!(f.usb_names().is_empty());
    let file = f.dir.path().join("outside.txt");
    let err = f.store.export_to_dir(&f.id, &file, NOW_MS).unwrap_err();
    assert!(matches!(err, ExportError::Dir { .. }), "{err:?}");
}

#[test]
fn inv_01_inv_19_writer_refuses_a_copy_that_is_not_the_segment() {
    let f = Fixture::new();
    let dir = ExportDir::open(&f.usb()).unwrap();
    let trusted = f.store.config().trusted.clone();
    let (other_signed, other) = seg(&f.secret, &SegSpec::named("other"), b"other bytes");
    let mut bad_signature = f.file.clone();
    let sig_last = f.file.len() - BODY_BYTES - 1;
    bad_signature[sig_last] ^= 1;
    let mut bad_hash = f.file.clone();
    let last = bad_hash.len() - 1;
    bad_hash[last] ^= 1;
    let mut padded = f.file.clone();
    padded.push(0);
    let stranger = publisher(77);
    let (_, untrusted) = seg(
        &stranger,
        &SegSpec::named("bundle"),
        &payload(4, BODY_BYTES),
    );
    let len = f.file.len() as u64;
    let cases: Vec<(&str, Vec<u8>, Option<u64>)> = vec![
        ("another segment", other.clone(), None),
        ("bad signature", bad_signature, None),
        ("truncated", f.file[..f.file.len() - 10].to_vec(), None),
        ("padded", padded, None),
        ("wrong hash", bad_hash, None),
        ("announced length differs", f.file.clone(), Some(len + 1)),
        ("same name, another publisher", untrusted, None),
    ];
    for (what, bytes, expected_len) in cases {
        let err = dir
            .write(&f.id, &trusted, expected_len, &bytes[..])
            .unwrap_err();
        let ok = match what {
            "another segment" => matches!(
                err,
                ExportError::WrongSegment { wanted, found } if wanted == f.id && found == other_signed.id()
            ),
            "same name, another publisher" => matches!(err, ExportError::WrongSegment { .. }),
            "bad signature" => matches!(
                err,
                ExportError::BadCopy {
                    source: SegFileError::Verify(_),
                    ..
                }
            ),
            "truncated" => matches!(
                err,
                ExportError::BadCopy {
                    source: SegFileError::TruncatedPayload { .. },
                    ..
                }
            ),
            "padded" => matches!(
                err,
                ExportError::BadCopy {
                    source: SegFileError::PayloadTooLong,
                    ..
                }
            ),
            "wrong hash" => matches!(
                err,
                ExportError::BadCopy {
                    source: SegFileError::HashMismatch { .. },
                    ..
                }
            ),
            "announced length differs" => matches!(
                err,
                ExportError::BadCopy {
                    source: SegFileError::FileLengthMismatch { .. },
                    ..
                }
            ),
            _ => unreachable!(),
        };
        assert!(ok, "{what}: {err:?}");
        assert!(f.usb_names().is_empty(), "{what}: nothing left behind");
    }
    // The same with an old copy at the target: it stays as it was.
    std::fs::write(f.target(), b"old").unwrap();
    assert!(
        dir.write(&f.id, &trusted, None, &f.file[..f.file.len() - 1])
            .is_err()
    );
    assert_eq!(std::fs::read(f.target()).unwrap(), b"old");
    assert_eq!(f.usb_names(), vec![format!("{}.seg", f.id)]);
    // And an untrusted key set refuses even the genuine bytes.
    std::fs::remove_file(f.target()).unwrap();
    let err = dir
        .write(&f.id, &trusting(&[&stranger]), None, &f.file[..])
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::BadCopy {
                source: SegFileError::Verify(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(f.usb_names().is_empty());
    // The genuine bytes with the trusted set: written.
    let path = dir.write(&f.id, &trusted, Some(len), &f.file[..]).unwrap();
    assert_eq!(path, f.target());
    f.assert_exported();
}

#[test]
fn inv_19_open_regular_refuses_links_fifos_directories_and_devices_quickly() {
    let f = Fixture::new();
    let regular = f.usb().join("a.seg");
    std::fs::write(&regular, &f.file).unwrap();
    let link = f.usb().join("link.seg");
    std::os::unix::fs::symlink(&regular, &link).unwrap();
    let fifo = f.usb().join("fifo.seg");
    mkfifo(&fifo);
    let cases: Vec<(PathBuf, Option<&str>)> = vec![
        (regular.clone(), None),
        (link, Some("symlink")),
        (fifo, Some("FIFO")),
        (f.usb(), Some("directory")),
        (PathBuf::from("/dev/null"), Some("character device")),
    ];
    for (path, want) in cases {
        let p = path.clone();
        let got = bounded("open_regular", move || store::media::open_regular(&p));
        match (got, want) {
            (Ok(_), None) => {}
            (Err(OpenError::NotRegular { path: p, kind }), Some(want)) => {
                assert_eq!(p, path);
                assert_eq!(kind, want);
            }
            (other, want) => panic!("{}: expected {want:?}, got {other:?}", path.display()),
        }
    }
    let missing = store::media::open_regular(&f.usb().join("missing.seg")).unwrap_err();
    assert!(matches!(missing, OpenError::Io { .. }), "{missing:?}");
}

/// A large copy goes to the medium around the page cache (whole aligned blocks, then its tail)
/// and still arrives byte for byte.
#[test]
fn inv_19_a_large_export_is_the_stored_file_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = publisher(1);
    let store = open_real(config(dir.path(), 1 << 30, trusting(&[&secret])));
    let len = store::fs::DIRECT_IO_MIN_FILE_BYTES as usize + 300_123;
    let (_, file) = seg(&secret, &SegSpec::named("large"), &payload(9, len));
    let id = ingest_ok(&store, &file);
    let usb = dir.path().join("usb");
    std::fs::create_dir(&usb).expect("usb dir");
    let target = usb.join(format!("{id}.seg"));
    assert_eq!(
        store.export_to_dir(&id, &usb, NOW_MS).unwrap(),
        Exported::Written(target.clone())
    );
    assert!(std::fs::read(&target).unwrap() == file, "the copy differs");
}

/// A need-list beside the segments: written atomically (no temporary left), replacing a
/// regular file, refusing a symlink at its name (never followed) and names that are not plain.
#[test]
fn inv_19_a_small_file_is_written_only_as_a_plain_regular_file_in_the_directory() {
    let out = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let dir = ExportDir::open(out.path()).unwrap();
    let path = dir.write_file("node-a.need", b"first").unwrap();
    assert_eq!(path, out.path().join("node-a.need"));
    dir.write_file("node-a.need", b"second").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    let names: Vec<_> = std::fs::read_dir(out.path()).unwrap().flatten().collect();
    assert_eq!(names.len(), 1, "no temporary file is left");
    let target = outside.path().join("victim");
    std::fs::write(&target, b"untouched").unwrap();
    std::os::unix::fs::symlink(&target, out.path().join("node-b.need")).unwrap();
    assert!(matches!(
        dir.write_file("node-b.need", b"x"),
        Err(ExportError::NotRegular { .. })
    ));
    assert_eq!(std::fs::read(&target).unwrap(), b"untouched");
    for bad in ["", ".hidden", "a/b", "../x"] {
        assert!(dir.write_file(bad, b"x").is_err(), "{bad:?}");
    }
    assert!(dir.available_bytes().unwrap() > 0);
}
