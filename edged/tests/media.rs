//! The real `edged` binary at the boundary with removable media (INV-01, INV-17, INV-19,
//! INV-24), through the running daemon and directly on the data dir:
//!
//! - `export --to DIR` writes only inside DIR: a symlink at the temp name pointing outside is
//!   never followed, a symlink, FIFO or directory at `<id>.seg` is refused by name, a FIFO at
//!   either name never blocks, a leftover temp file never fails the export;
//! - `segment inspect` / `verify` refuse a FIFO or a symlink at once;
//! - a segment whose signature went bad at rest is not exported ("0 exported, 1 failed") and is
//!   quarantined;
//! - a stick holding a corrupt copy of a segment already stored is reported as corrupt (exit 1),
//!   not "already present";
//! - times beyond the end of year 9999 are refused by `segment create --expires` and shown by
//!   `segment inspect` as an error, never a panic.
//!
//! Every command runs bounded by [`STEP_LIMIT`]; a daemon is SIGKILLed when its test ends.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use store::SegmentId;
use support::{EDGED, Fleet, MIB, NodeOptions, p, run_bounded, stderr, stdout};

/// Longest any one command here may take: generous for the debug profile; a command blocked
/// on a FIFO would wait forever.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// `edged ARGS --config <node 1>`, bounded by [`STEP_LIMIT`].
fn cli(f: &Fleet, args: &[&str]) -> Output {
    let mut cmd = Command::new(EDGED);
    cmd.args(args)
        .args(["--config", p(&f.node(1).config)])
        .env_remove("EDGED_CONFIG")
        .env_remove("EDGED_LOG");
    run_bounded(cmd, STEP_LIMIT).unwrap_or_else(|e| f.fail(e))
}

/// `edged ARGS` outside any node, bounded by [`STEP_LIMIT`].
fn bare(args: &[&str]) -> Output {
    let mut cmd = Command::new(EDGED);
    cmd.args(args)
        .env_remove("EDGED_CONFIG")
        .env_remove("EDGED_LOG");
    run_bounded(cmd, STEP_LIMIT).unwrap_or_else(|e| panic!("{e}"))
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

/// One node with one segment imported; `usb` is an empty export directory next to a file
/// `outside.txt` that no export may touch.
struct Setup {
    f: Fleet,
    id: String,
    seg_file: PathBuf,
    usb: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let f = Fleet::new(1, &[], |_| NodeOptions::default());
        let stick = f.path("stick");
        std::fs::create_dir(&stick).unwrap();
        let (seg_file, id) = f.make_segment("bundle", MIB / 2, &stick);
        let o = cli(&f, &["import", p(&stick)]);
        f.check(o.status.success(), || format!("import: {}", stderr(&o)));
        let usb = f.path("usb");
        std::fs::create_dir(&usb).unwrap();
        std::fs::write(f.path("outside.txt"), b"precious").unwrap();
        Setup {
            f,
            id,
            seg_file,
            usb,
        }
    }

    fn target(&self) -> PathBuf {
        self.usb.join(format!("{}.seg", self.id))
    }

    fn temp(&self) -> PathBuf {
        self.usb.join(format!(".{}.seg.tmp", self.id))
    }

    fn export(&self) -> Output {
        cli(&self.f, &["export", "--to", p(&self.usb), &self.id])
    }

    fn clear_usb(&self) {
        std::fs::remove_dir_all(&self.usb).unwrap();
        std::fs::create_dir(&self.usb).unwrap();
    }

    fn check_exported(&self, o: &Output, case: &str) {
        self.f.check(o.status.success(), || {
            format!("{case}: export failed: {}{}", stdout(o), stderr(o))
        });
        self.f
            .check(stdout(o).contains("1 exported, 0 failed"), || {
                format!("{case}: summary: {}", stdout(o))
            });
        let meta = std::fs::symlink_metadata(self.target()).unwrap();
        self.f.check(meta.file_type().is_file(), || {
            format!("{case}: target is not a regular file")
        });
        self.f.check(
            std::fs::read(self.target()).unwrap() == std::fs::read(&self.seg_file).unwrap(),
            || format!("{case}: exported bytes differ"),
        );
        self.check_confined(case);
    }

    fn check_refused(&self, o: &Output, case: &str, kind: &str) {
        self.f.check(o.status.code() == Some(1), || {
            format!("{case}: exit {} {}{}", o.status, stdout(o), stderr(o))
        });
        self.f.check(
            stdout(o).contains("0 exported, 1 failed") && stdout(o).contains(kind),
            || {
                format!(
                    "{case}: expected a refusal naming the {kind}: {}",
                    stdout(o)
                )
            },
        );
        self.check_confined(case);
    }

    /// Nothing outside the export directory changed, and no temp file is left in it.
    fn check_confined(&self, case: &str) {
        self.f.check(
            std::fs::read(self.f.path("outside.txt")).unwrap() == b"precious",
            || format!("{case}: outside.txt was written"),
        );
        self.f
            .check(std::fs::symlink_metadata(self.temp()).is_err(), || {
                format!("{case}: a temp file was left behind")
            });
    }

    /// Every export case of INV-19, on whichever path (daemon or direct) is active now.
    fn export_cases(&self, path: &str) {
        self.clear_usb();
        std::os::unix::fs::symlink("../outside.txt", self.temp()).unwrap();
        self.check_exported(&self.export(), &format!("{path}: symlink at the temp name"));

        self.clear_usb();
        mkfifo(&self.temp());
        self.check_exported(&self.export(), &format!("{path}: FIFO at the temp name"));

        self.clear_usb();
        std::fs::write(self.temp(), vec![0xee; 2 * MIB as usize]).unwrap();
        self.check_exported(&self.export(), &format!("{path}: leftover temp file"));

        self.clear_usb();
        std::os::unix::fs::symlink("../outside.txt", self.target()).unwrap();
        self.check_refused(
            &self.export(),
            &format!("{path}: symlink at <id>.seg"),
            "symlink",
        );
        self.f.check(
            std::fs::symlink_metadata(self.target())
                .unwrap()
                .file_type()
                .is_symlink(),
            || format!("{path}: the symlink was replaced"),
        );

        self.clear_usb();
        mkfifo(&self.target());
        self.check_refused(&self.export(), &format!("{path}: FIFO at <id>.seg"), "FIFO");

        self.clear_usb();
        std::fs::create_dir(self.target()).unwrap();
        self.check_refused(
            &self.export(),
            &format!("{path}: directory at <id>.seg"),
            "directory",
        );

        // A symlinked export directory is refused before anything else.
        self.clear_usb();
        let link = self.f.path("usb-link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("usb", &link).unwrap();
        let o = cli(&self.f, &["export", "--to", p(&link), &self.id]);
        self.f.check(o.status.code() == Some(1), || {
            format!(
                "{path}: export into a symlinked dir: {} {}",
                o.status,
                stderr(&o)
            )
        });
        self.f.check(
            std::fs::read_dir(&self.usb).unwrap().next().is_none(),
            || format!("{path}: something was written through the symlinked dir"),
        );
    }

    /// The stored file of the segment in the data dir.
    fn stored_file(&self) -> PathBuf {
        let id: SegmentId = self.id.parse().unwrap();
        store::layout::Layout::new(self.f.node(1).data_dir()).segment_file(&id)
    }
}

/// Flips the last byte of a `.seg` file's header: the signature's last byte.
fn flip_signature(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let header_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    bytes[12 + header_len - 1] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn inv_19_export_writes_only_under_its_directory_through_the_daemon_and_directly() {
    let mut s = Setup::new();
    s.f.start(1);
    s.export_cases("daemon");
    s.f.sigterm(1);
    s.export_cases("direct");
}

#[test]
fn inv_17_inv_19_inspect_and_verify_refuse_fifos_and_symlinks_at_once() {
    let s = Setup::new();
    let fifo = s.f.path("stick/fifo.seg");
    mkfifo(&fifo);
    let link = s.f.path("stick/link.seg");
    std::os::unix::fs::symlink(&s.seg_file, &link).unwrap();
    let trust = stdout(&bare(&["key", "gen", "--out", p(&s.f.path("k2"))]))
        .trim()
        .to_owned();
    for (path, kind) in [(&fifo, "FIFO"), (&link, "symlink")] {
        for args in [
            vec!["segment", "inspect", p(path)],
            vec!["segment", "verify", "--trust", &trust, p(path)],
        ] {
            let o = bare(&args);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
            assert!(
                stderr(&o).contains(kind) && stderr(&o).contains("not a regular file"),
                "{args:?}: {}",
                stderr(&o)
            );
        }
    }
    // The real file is inspected as before.
    let o = bare(&["segment", "inspect", "--json", p(&s.seg_file)]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn inv_01_inv_24_signature_flipped_at_rest_is_not_exported_and_is_quarantined() {
    // Through the daemon.
    let mut s = Setup::new();
    s.f.start(1);
    flip_signature(&s.stored_file());
    let o = s.export();
    s.f.check(o.status.code() == Some(1), || {
        format!(
            "daemon export of a bad signature: {} {}",
            o.status,
            stdout(&o)
        )
    });
    s.f.check(stdout(&o).contains("0 exported, 1 failed"), || {
        format!("daemon export summary: {}", stdout(&o))
    });
    s.f.check(stdout(&o).contains("signature"), || {
        format!("the reason is given: {}", stdout(&o))
    });
    s.f.check(std::fs::read_dir(&s.usb).unwrap().next().is_none(), || {
        "nothing written to the stick".into()
    });
    s.f.check(!s.f.segment_ids(1).contains(&s.id), || {
        "the segment is no longer listed".into()
    });
    let quarantined = s.f.events(1, 0, "segment corrupt at rest: quarantined");
    s.f.check(
        quarantined.len() == 1 && quarantined[0]["seg_id"] == s.id.as_str(),
        || format!("the daemon logged the quarantine: {quarantined:?}"),
    );
    s.f.check(!s.stored_file().exists(), || {
        "moved out of segments/".into()
    });
    s.f.sigterm(1);

    // Directly on the data dir.
    let s = Setup::new();
    flip_signature(&s.stored_file());
    let o = s.export();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("0 exported, 1 failed") && stdout(&o).contains("quarantined"),
        "{}",
        stdout(&o)
    );
    assert!(std::fs::read_dir(&s.usb).unwrap().next().is_none());
    assert!(!s.stored_file().exists());
    let listed = stdout(&cli(&s.f, &["segments", "--json"]));
    assert!(!listed.contains(&s.id), "{listed}");
}

/// A payload byte that went bad at rest is found while the daemon streams the segment: that
/// segment fails (and is quarantined), the export goes on with the others on a new connection.
#[test]
fn inv_02_inv_24_payload_corrupt_at_rest_fails_only_its_segment_through_the_daemon() {
    let mut s = Setup::new();
    let stick = s.f.path("stick2");
    std::fs::create_dir(&stick).unwrap();
    let (_, other) = s.f.make_segment("other", MIB / 2, &stick);
    let o = cli(&s.f, &["import", p(&stick)]);
    s.f.check(o.status.success(), || format!("import: {}", stderr(&o)));
    s.f.start(1);
    let stored = s.stored_file();
    let mut bytes = std::fs::read(&stored).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&stored, bytes).unwrap();
    let o = cli(&s.f, &["export", "--to", p(&s.usb), "--all"]);
    s.f.check(o.status.code() == Some(1), || {
        format!("export: {} {} {}", o.status, stdout(&o), stderr(&o))
    });
    s.f.check(stdout(&o).contains("1 exported, 1 failed"), || {
        format!("one failed, the other went on: {}", stdout(&o))
    });
    s.f.check(s.usb.join(format!("{other}.seg")).is_file(), || {
        "the intact segment was exported".into()
    });
    s.f.check(!s.usb.join(format!("{}.seg", s.id)).exists(), || {
        "nothing of the corrupt one on the stick".into()
    });
    let leftovers: Vec<_> = std::fs::read_dir(&s.usb)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    s.f.check(leftovers.is_empty(), || {
        format!("temp files left: {leftovers:?}")
    });
    // The daemon finds the corruption at the end of its stream, while the CLI (verifying
    // the same bytes) may already be done: the quarantine follows within moments.
    s.f.wait_for(
        "the corrupt segment quarantined",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || (!s.f.segment_ids(1).contains(&s.id)).then_some(()),
    );
    s.f.sigterm(1);
}

/// The import of a stick holding only a corrupt copy of a stored segment.
fn check_corrupt_copy(f: &Fleet, o: &Output, path: &str) {
    f.check(o.status.code() == Some(1), || {
        format!(
            "{path}: import of a corrupt copy: {} {}",
            o.status,
            stdout(o)
        )
    });
    f.check(
        stdout(o).contains("REJECTED")
            && stdout(o).contains("this copy is corrupt")
            && stdout(o).contains("0 imported, 0 already present, 1 rejected"),
        || format!("{path}: table: {}", stdout(o)),
    );
    f.check(!stdout(o).contains("nothing new"), || {
        format!("{path}: {}", stdout(o))
    });
}

#[test]
fn inv_02_inv_19_a_corrupt_copy_of_a_stored_segment_is_reported_corrupt() {
    let mut s = Setup::new();
    // The stick now holds a copy with one payload bit flipped; the node has the good one.
    let mut bytes = std::fs::read(&s.seg_file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&s.seg_file, &bytes).unwrap();
    let stick = s.f.path("stick");
    s.f.start(1);
    check_corrupt_copy(&s.f, &cli(&s.f, &["import", p(&stick)]), "daemon");
    s.f.check(s.f.segment_ids(1) == vec![s.id.clone()], || {
        "the good copy stays".into()
    });
    s.f.sigterm(1);
    check_corrupt_copy(&s.f, &cli(&s.f, &["import", p(&stick)]), "direct");
    // A truncated copy too.
    std::fs::write(&s.seg_file, &bytes[..bytes.len() / 2]).unwrap();
    check_corrupt_copy(
        &s.f,
        &cli(&s.f, &["import", p(&stick)]),
        "direct, truncated",
    );
    // The stored copy still exports intact.
    let o = s.export();
    assert!(o.status.success(), "{}", stdout(&o));
}

#[test]
fn inv_17_times_beyond_year_9999_are_refused_never_a_panic() {
    let f = Fleet::new(1, &[], |_| NodeOptions::default());
    let input = f.path("payload");
    std::fs::write(&input, b"hello").unwrap();
    let out = f.path("far.seg");
    let o = bare(&[
        "segment",
        "create",
        "--key",
        p(&f.publisher_key),
        "--name",
        "far",
        "--expires",
        "9000years",
        p(&input),
        "--out",
        p(&out),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("9999-12-31"), "{}", stderr(&o));
    assert!(!out.exists(), "nothing written");
    // Far, but within the bound: accepted and shown.
    let o = bare(&[
        "segment",
        "create",
        "--key",
        p(&f.publisher_key),
        "--name",
        "far",
        "--expires",
        "7000years",
        p(&input),
        "--out",
        p(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = bare(&["segment", "inspect", "--json", p(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["expires_at"].as_str().unwrap().starts_with("90"),
        "{}",
        v["expires_at"]
    );

    // A manifest created near u64::MAX ms, no valid signature needed to try it.
    let key: store::keys::PublisherKey = stdout(&bare(&["key", "gen", "--out", p(&f.path("k"))]))
        .trim()
        .parse()
        .unwrap();
    let m = store::manifest::Manifest {
        created_at_ms: u64::MAX - 1,
        ..store::manifest::Manifest::new(key, "far", 0, 5, *blake3::hash(b"hello").as_bytes())
    };
    let manifest = m.encode();
    assert!(manifest.len() < 0x80);
    let mut header = vec![manifest.len() as u8];
    header.extend_from_slice(&manifest);
    header.extend_from_slice(&[0u8; 64]);
    let mut file = b"EDGSEG".to_vec();
    file.extend_from_slice(&1u16.to_le_bytes());
    file.extend_from_slice(&(header.len() as u32).to_le_bytes());
    file.extend_from_slice(&header);
    file.extend_from_slice(b"hello");
    let crafted = f.path("crafted.seg");
    std::fs::write(&crafted, &file).unwrap();
    for args in [
        vec!["segment", "inspect", p(&crafted)],
        vec!["segment", "inspect", "--json", p(&crafted)],
    ] {
        let o = bare(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("later than") && !stderr(&o).contains("panicked"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}
