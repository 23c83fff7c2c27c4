//! What `edged import` says when it cannot do everything: a full store is its own outcome
//! (who holds the space, that it is retryable, exit 7), entries that are not segment files are
//! skipped without failing the import and counted by kind, and a directory without a `.seg`
//! file says so. Each through the daemon and directly on the data directory.

mod support;

use std::process::Output;

use std::time::Duration;

use support::{Fleet, NodeOptions, p, stderr, stdout};

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

/// Node `i`'s store ceiling set to `bytes`.
fn set_ceiling_of(f: &Fleet, i: usize, bytes: u64) {
    let path = &f.node(i).config;
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
    set_ceiling_of(&f, 1, held_len * 3 / 2);
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

/// A segment a peer sends that does not fit is refused the same way: the receiving node says in
/// words (a rate-limited WARN) which segments hold its space and for whom, and the sender keeps
/// retrying (its job stays pending, not dead).
#[test]
fn a_receive_refused_for_a_full_store_names_what_holds_the_space() {
    const MIB: u64 = 1 << 20;
    // node-2 relays between node-1 and node-3; node-3 stays down, so what node-2 stores stays
    // owed to it.
    let mut f = Fleet::new(3, &[(1, 2), (2, 3)], |_| {
        NodeOptions::default().net("catchup_on_connect", false)
    });
    set_ceiling_of(&f, 2, 2 * MIB);
    let usb2 = f.path("usb2");
    std::fs::create_dir(&usb2).unwrap();
    let (_, first) = f.make_segment("first", 3 * MIB / 2, &usb2);
    f.start(2);
    let o = f.cli(2, &["import", p(&usb2)]);
    f.check(o.status.success(), || {
        format!("import on node-2: {}", stderr(&o))
    });

    let usb1 = f.path("usb1");
    std::fs::create_dir(&usb1).unwrap();
    let (_, second) = f.make_segment("second", 3 * MIB / 2, &usb1);
    f.start(1);
    let o = f.cli(1, &["import", p(&usb1)]);
    f.check(o.status.success(), || {
        format!("import on node-1: {}", stderr(&o))
    });

    let refused = f.wait_for(
        "node-2 to refuse node-1's segment for a full store",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            f.events(
                2,
                0,
                "segment from a peer refused: store full; the peer retries later",
            )
            .into_iter()
            .find(|l| l["peer"] == "node-1")
        },
    );
    let held = refused["held"].as_str().unwrap_or_default();
    f.check(
        held.contains("held by 1 segment(s)")
            && held.contains(&format!("first {}", &first[..12]))
            && held.contains("owed to ")
            && held.contains("node-3"),
        || format!("the held segment named, with its peer: {refused}"),
    );
    f.check(!f.segment_ids(2).contains(&second), || {
        "node-2 does not hold node-1's segment".into()
    });
    let row = f
        .segment_row(1, &second)
        .unwrap_or_else(|| f.fail("node-1 lost its segment"));
    let pending = row["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["peer"] == "node-2"))
        .is_some_and(|j| j["state"] == "pending");
    f.check(pending, || format!("node-1 keeps retrying node-2: {row}"));
}
