//! What `edged import` says when it cannot do everything: a full store is its own outcome
//! (who holds the space, that it is retryable, exit 7), entries that are not segment files are
//! skipped without failing the import and counted by kind, and a directory without a `.seg`
//! file says so. Each through the daemon and directly on the data directory.

mod support;

use std::process::Output;

use support::{Fleet, NodeOptions, p, stderr, stdout};

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

/// Node 1's store ceiling set to `bytes`.
fn set_ceiling(f: &Fleet, bytes: u64) {
    let path = &f.node(1).config;
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.replace(
        "ceiling_bytes = 2147483648",
        &format!("ceiling_bytes = {bytes}"),
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn store_full_says_who_holds_the_space_and_exits_7_through_the_daemon_and_directly() {
    // Node 2 is known but never starts: what node 1 stores stays owed to it, pinned.
    let mut f = Fleet::new(2, &[(1, 2)], |_| NodeOptions::default());
    let first = f.path("first");
    let second = f.path("second");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    let (held, held_id) = f.make_segment("release-1", 3 << 20, &first);
    f.make_segment("release-2", 3 << 20, &second);
    let held_len = std::fs::metadata(&held).unwrap().len();
    // Room for one segment and a half.
    set_ceiling(&f, held_len * 3 / 2);
    let o = f.cli(1, &["import", p(&first)]);
    f.check(code(&o) == Some(0), || {
        format!("the first fits: {}", stderr(&o))
    });

    let check = |f: &Fleet, how: &str, o: &Output| {
        let text = stdout(o);
        f.check(code(o) == Some(7), || {
            format!(
                "{how}: exit 7 (store full): {:?} {text} {}",
                code(o),
                stderr(o)
            )
        });
        f.check(
            text.contains("STORE FULL")
                && !text.contains("REJECTED")
                && text.contains("release-1")
                && text.contains(&held_id[..12])
                && text.contains("owed to node-2")
                && text.contains("Retryable")
                && text.contains("ceiling_bytes")
                && text.contains("1 did not fit (store full)"),
            || format!("{how}: the table says who holds the space and what to do: {text}"),
        );
        f.check(stderr(o).contains("store is full"), || {
            format!("{how}: the error line: {}", stderr(o))
        });
    };
    let o = f.cli(1, &["import", p(&second)]);
    check(&f, "directly", &o);
    let json = f.cli(1, &["import", p(&second), "--json"]);
    let lines: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    f.check(lines[0]["status"] == "store_full", || {
        format!("directly, JSON: {lines}")
    });

    f.start(1);
    let o = f.cli(1, &["import", p(&second)]);
    check(&f, "through the daemon", &o);
    let json = f.cli(1, &["import", p(&second), "--json"]);
    let lines: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    f.check(lines[0]["status"] == "store_full", || {
        format!("through the daemon, JSON: {lines}")
    });
}

#[test]
fn entries_that_are_not_segments_are_skipped_counted_by_kind_and_never_fail_the_import() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    let stick = f.path("stick");
    std::fs::create_dir_all(&stick).unwrap();
    let (good, _) = f.make_segment("good", 1000, &stick);
    std::os::unix::fs::symlink(&good, stick.join("link.seg")).unwrap();
    std::fs::write(stick.join("README.txt"), "hello").unwrap();
    std::fs::create_dir(stick.join("photos")).unwrap();
    let summary = "1 imported, 0 already present, 0 rejected, 3 skipped (1 directory, 1 not a .seg file, 1 symlink)";
    let o = f.cli(1, &["import", p(&stick)]);
    f.check(code(&o) == Some(0) && stdout(&o).contains(summary), || {
        format!("directly: {:?} {} {}", code(&o), stdout(&o), stderr(&o))
    });
    f.check(stdout(&o).contains("symlink: not followed"), || stdout(&o));

    f.start(1);
    let o = f.cli(1, &["import", p(&stick)]);
    let summary = summary.replace(
        "1 imported, 0 already present",
        "0 imported, 1 already present",
    );
    f.check(code(&o) == Some(0) && stdout(&o).contains(&summary), || {
        format!(
            "through the daemon: {:?} {} {}",
            code(&o),
            stdout(&o),
            stderr(&o)
        )
    });
}

#[test]
fn a_directory_without_segment_files_says_so_and_exits_0() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    let empty = f.path("empty");
    let other = f.path("other");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "not a segment").unwrap();
    for round in ["directly", "through the daemon"] {
        if round == "through the daemon" {
            f.start(1);
        }
        let o = f.cli(1, &["import", p(&empty)]);
        f.check(
            code(&o) == Some(0)
                && stderr(&o).contains("no .seg file in")
                && stderr(&o).contains("0 other entries"),
            || format!("{round}, empty: {:?} {}", code(&o), stderr(&o)),
        );
        let o = f.cli(1, &["import", p(&other), "--json"]);
        f.check(
            code(&o) == Some(0)
                && stderr(&o).contains("no .seg file in")
                && stderr(&o).contains("1 other entry skipped"),
            || format!("{round}, only other files: {:?} {}", code(&o), stderr(&o)),
        );
    }
}
