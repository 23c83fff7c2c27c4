//! `edged fsck` and `edged quarantine` through the real binary: files of stored segments
//! damaged on disk (a flipped byte, a truncation, a deletion) are found with the daemon stopped
//! and with it running, reported in words with exit code 1, quarantined, and then listed, shown
//! and purged. Every wait is bounded.

mod support;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::{Fleet, NodeOptions, http_get, p, stderr, stdout};

/// Where node 1 keeps segment `id`'s file.
fn stored_file(f: &Fleet, id: &str) -> PathBuf {
    f.node(1)
        .data_dir()
        .join("segments")
        .join(&id[..2])
        .join(format!("{id}.seg"))
}

fn flip_last_byte(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).expect("read stored file");
    let last = bytes.last_mut().expect("non-empty file");
    *last ^= 0x01;
    std::fs::write(path, bytes).expect("write stored file");
}

fn truncate_by_one(path: &std::path::Path) {
    let len = std::fs::metadata(path).expect("stat stored file").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open stored file");
    file.set_len(len - 1).expect("truncate");
}

/// Three segments `a`, `b`, `c` and `d` imported into node 1; their ids.
fn import_four(f: &Fleet) -> Vec<String> {
    let dir = f.path("stick");
    std::fs::create_dir_all(&dir).unwrap();
    let ids: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| f.make_segment(name, 200_000, &dir).1)
        .collect();
    let o = f.cli(1, &["import", p(&dir)]);
    f.check(o.status.success(), || format!("import: {}", stderr(&o)));
    ids
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn fsck_json(f: &Fleet) -> (i32, Value) {
    let o = f.cli(1, &["fsck", "--json"]);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| f.fail(format!("fsck --json is not JSON ({e}): {}", stdout(&o))));
    (code(&o), v)
}

fn findings_of<'a>(v: &'a Value, kind: &str) -> Vec<&'a Value> {
    v["findings"]
        .as_array()
        .map(|a| a.iter().filter(|x| x["kind"] == kind).collect())
        .unwrap_or_default()
}

fn quarantined_ids(f: &Fleet) -> Vec<String> {
    f.json(1, &["quarantine", "list"])
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn inv_24_fsck_offline_finds_damaged_files_and_quarantine_lists_shows_and_purges() {
    let f = Fleet::new(1, &[], |_| NodeOptions::default());
    let ids = import_four(&f);

    let o = f.cli(1, &["fsck"]);
    f.check(code(&o) == 0, || {
        format!("a sound store is clean: {} {}", stdout(&o), stderr(&o))
    });
    f.check(stdout(&o).contains("4 segment(s) intact"), || stdout(&o));

    // a: a payload byte flipped; b: one byte short; c: gone. d is left alone.
    flip_last_byte(&stored_file(&f, &ids[0]));
    truncate_by_one(&stored_file(&f, &ids[1]));
    std::fs::remove_file(stored_file(&f, &ids[2])).unwrap();

    let o = f.cli(1, &["fsck"]);
    let text = stdout(&o);
    f.check(code(&o) == 1, || {
        format!("findings exit 1: {text} {}", stderr(&o))
    });
    f.check(
        text.contains(&format!("segment {}: corrupt at rest", ids[0]))
            && text.contains("quarantined"),
        || format!("the flipped byte is reported and quarantined: {text}"),
    );
    f.check(
        text.contains(&ids[1]) && text.contains(&ids[2]) && text.contains("file missing"),
        || format!("the short and the missing file are reported: {text}"),
    );
    f.check(stderr(&o).contains("fsck found 3 problem(s)"), || {
        stderr(&o)
    });
    // Not a terminal: no progress bar drawn (it redraws its line with carriage returns).
    f.check(
        !stderr(&o).contains('\r') && !stderr(&o).contains("=>"),
        || format!("no progress bar on a pipe: {:?}", stderr(&o)),
    );

    // What was found was dealt with: the next check is clean, and d is still there.
    let (c, v) = fsck_json(&f);
    f.check(c == 0 && v["segments_ok"] == 1, || {
        format!("clean after: {v}")
    });
    f.check(f.segment_ids(1) == vec![ids[3].clone()], || {
        format!("only d stays stored: {:?}", f.segment_ids(1))
    });

    // The quarantine: the flipped file, with its name, when and why.
    let list = f.json(1, &["quarantine", "list"]);
    let entries = list.as_array().cloned().unwrap_or_default();
    f.check(
        entries.len() == 1 && entries[0]["id"] == ids[0].as_str(),
        || format!("one quarantined: {list}"),
    );
    f.check(
        entries[0]["name"] == "a" && entries[0]["reason"].as_str().is_some_and(|r| !r.is_empty()),
        || format!("named with a reason: {list}"),
    );
    let o = f.cli(1, &["quarantine", "list"]);
    f.check(
        o.status.success()
            && stdout(&o).contains(&ids[0][..12])
            && stdout(&o).contains("1 quarantined segment(s)"),
        || format!("list as a table: {}", stdout(&o)),
    );
    let o = f.cli(1, &["quarantine", "show", &ids[0][..8]]);
    let shown = stdout(&o);
    f.check(
        o.status.success() && shown.contains("name         a") && shown.contains("reason"),
        || format!("show by prefix: {shown} {}", stderr(&o)),
    );
    let o = f.cli(1, &["quarantine", "show", "ffffffff"]);
    f.check(
        code(&o) == 1 && stderr(&o).contains("no quarantined segment's id starts with ffffffff"),
        || format!("unknown id fails in words: {}", stderr(&o)),
    );

    let qfile = f
        .node(1)
        .data_dir()
        .join("quarantine")
        .join(format!("{}.seg", ids[0]));
    let bytes = std::fs::metadata(&qfile)
        .expect("quarantined file kept")
        .len();
    let v = f.json(1, &["quarantine", "purge", &ids[0]]);
    f.check(v["purged"] == 1 && v["bytes_freed"] == bytes, || {
        format!("purge frees the file's bytes ({bytes}): {v}")
    });
    f.check(!qfile.exists(), || "the quarantined file is deleted".into());
    f.check(quarantined_ids(&f).is_empty(), || "nothing left".into());
}

#[test]
fn inv_24_fsck_through_the_daemon_quarantines_damaged_files() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    f.start(1);
    let ids = import_four(&f);
    flip_last_byte(&stored_file(&f, &ids[0]));
    truncate_by_one(&stored_file(&f, &ids[1]));
    std::fs::remove_file(stored_file(&f, &ids[2])).unwrap();

    let (c, v) = fsck_json(&f);
    f.check(c == 1, || format!("findings exit 1: {v}"));
    let corrupt = findings_of(&v, "corrupt");
    for id in &ids[..3] {
        f.check(corrupt.iter().any(|x| x["segment"] == id.as_str()), || {
            format!("{id} found corrupt by the daemon: {v}")
        });
    }
    f.check(v["quarantined"] == 3 && v["segments_ok"] == 1, || {
        v.to_string()
    });

    let (c, v) = fsck_json(&f);
    f.check(c == 0, || format!("clean after: {v}"));

    let mut listed = quarantined_ids(&f);
    listed.sort();
    let mut expected = ids[..3].to_vec();
    expected.sort();
    f.check(listed == expected, || {
        format!("the three listed: {listed:?}")
    });
    let o = f.cli(1, &["quarantine", "show", &ids[2]]);
    f.check(
        o.status.success() && stdout(&o).contains("none kept"),
        || format!("the missing file is shown as such: {}", stdout(&o)),
    );
    let o = f.cli(1, &["quarantine", "purge", "--all"]);
    f.check(
        o.status.success() && stdout(&o).contains("3 quarantined segment(s) purged"),
        || format!("purge --all: {} {}", stdout(&o), stderr(&o)),
    );
    f.check(quarantined_ids(&f).is_empty(), || "nothing left".into());
}

/// Node 1's config with `[store] scrub_bytes_per_sec` set.
fn set_scrub_rate(f: &Fleet, bytes_per_sec: u64) {
    let path = &f.node(1).config;
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.replace(
        "min_free_bytes = 0\n",
        &format!("min_free_bytes = 0\nscrub_bytes_per_sec = {bytes_per_sec}\n"),
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn inv_24_the_background_scrub_quarantines_a_damaged_file_and_shows_it_in_status_and_metrics() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default().metrics());
    // A rate far above what the test reads: passes follow each other a second apart.
    set_scrub_rate(&f, 1 << 30);
    f.start(1);
    let ids = import_four(&f);
    flip_last_byte(&stored_file(&f, &ids[0]));

    let scrub = f.wait_for(
        "the background scrub to quarantine the damaged file and complete a pass",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let v = f.json(1, &["status"]);
            let scrub = v["scrub"].clone();
            (scrub["quarantined"] == 1 && scrub["last_full_pass_ms"].is_u64()).then_some(scrub)
        },
    );
    f.check(scrub["bytes_per_sec"] == 1u64 << 30, || scrub.to_string());
    f.check(quarantined_ids(&f) == vec![ids[0].clone()], || {
        format!("the damaged one is quarantined: {:?}", quarantined_ids(&f))
    });
    f.check(!f.segment_ids(1).contains(&ids[0]), || {
        "no longer stored".into()
    });

    let o = f.cli(1, &["status"]);
    let line = stdout(&o)
        .lines()
        .find(|l| l.trim_start().starts_with("scrub"))
        .map(str::to_owned)
        .unwrap_or_else(|| f.fail(format!("no scrub line in status: {}", stdout(&o))));
    f.check(
        line.contains("last full pass") && line.contains("1 quarantined"),
        || format!("the status line: {line}"),
    );

    let port = f.node(1).metrics_port.unwrap();
    let (code, body) = http_get(port, "/metrics").unwrap_or_else(|e| f.fail(e));
    f.check(
        code == 200
            && body.contains("edged_store_scrub_quarantined_total 1\n")
            && body.contains("edged_store_scrub_last_full_pass_timestamp_seconds "),
        || format!("scrub metrics: {body}"),
    );

    // Its position is kept for the next start.
    f.sigterm(1);
    f.check(
        f.node(1).data_dir().join("scrub-state.json").is_file(),
        || "the scrub's state is saved at shutdown".into(),
    );
}

#[test]
fn the_background_scrub_is_off_by_default() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    f.start(1);
    let v = f.json(1, &["status"]);
    f.check(
        v["scrub"]["bytes_per_sec"] == 0
            && v["scrub"]["line"]
                .as_str()
                .is_some_and(|l| l.starts_with("off")),
        || format!("off: {v}"),
    );
}

#[test]
fn fsck_repair_removes_leftover_files_of_a_running_store() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    f.start(1);
    let ids = import_four(&f);
    // A segment file that never got its index row, and a temp file of no ingest.
    let dir = f.path("elsewhere");
    std::fs::create_dir_all(&dir).unwrap();
    let (seg, orphan_id) = f.make_segment("orphan", 1000, &dir);
    let orphan = stored_file(&f, &orphan_id);
    std::fs::copy(&seg, &orphan).unwrap();
    let stray = f
        .node(1)
        .data_dir()
        .join("tmp")
        .join(format!("{}.part", "ab".repeat(32)));
    std::fs::write(&stray, b"half a segment").unwrap();

    let (c, v) = fsck_json(&f);
    f.check(c == 1, || format!("findings exit 1: {v}"));
    f.check(
        findings_of(&v, "orphan_file").len() == 1 && findings_of(&v, "stray_temp_file").len() == 1,
        || format!("both found: {v}"),
    );
    f.check(orphan.exists() && stray.exists(), || {
        "without --repair nothing is removed".into()
    });

    let o = f.cli(1, &["fsck", "--repair"]);
    let text = stdout(&o);
    f.check(
        code(&o) == 1
            && text.contains("removed (--repair)")
            && text.contains("2 leftover file(s) removed"),
        || format!("--repair says what it did: {text}"),
    );
    f.check(!orphan.exists() && !stray.exists(), || {
        "both removed".into()
    });
    let (c, v) = fsck_json(&f);
    f.check(c == 0 && v["segments_ok"] == ids.len(), || {
        format!("clean after: {v}")
    });
}

/// Empties node 1's due list and falsifies its pending count, as a torn ledger would be (the
/// daemon stopped; the database opened directly).
fn tear_ledger(f: &Fleet) {
    let db = redb::Database::open(f.node(1).data_dir().join("edge.redb"))
        .unwrap_or_else(|e| f.fail(format!("open the database: {e}")));
    let txn = db.begin_write().unwrap();
    {
        let mut due: redb::Table<&[u8], u8> = txn
            .open_table(redb::TableDefinition::new("relay-due-v1"))
            .unwrap();
        due.retain(|_, _| false).unwrap();
        let mut counts: redb::Table<&str, u64> = txn
            .open_table(redb::TableDefinition::new("relay-job-counts-v1"))
            .unwrap();
        counts.insert("pending", 99).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn fsck_finds_a_torn_relay_ledger_and_repair_rebuilds_it_so_the_segment_is_sent() {
    let mut f = Fleet::new(2, &[(1, 2)], |_| NodeOptions::default());
    let dir = f.path("stick");
    std::fs::create_dir_all(&dir).unwrap();
    let id = f.make_segment("owed", 50_000, &dir).1;
    let o = f.cli(1, &["import", p(&dir)]);
    f.check(o.status.success(), || format!("import: {}", stderr(&o)));
    let (c, v) = fsck_json(&f);
    f.check(c == 0 && v["ledger_jobs"] == 1, || {
        format!("one job to node 2, in agreement: {v}")
    });

    tear_ledger(&f);
    let (c, v) = fsck_json(&f);
    f.check(
        c == 1
            && findings_of(&v, "ledger_due_missing").len() == 1
            && findings_of(&v, "ledger_counts").len() == 1,
        || format!("the pending job off the due list and the count are found: {v}"),
    );
    let o = f.cli(1, &["fsck", "--repair"]);
    let text = stdout(&o);
    f.check(
        code(&o) == 1 && text.contains("2 ledger row(s) rebuilt"),
        || format!("--repair says what it rebuilt: {text}"),
    );
    let (c, v) = fsck_json(&f);
    f.check(c == 0, || format!("clean after the repair: {v}"));

    // The rebuilt due list runs: the segment reaches node 2.
    f.start(1);
    f.start(2);
    f.wait_for(
        "the owed segment on node 2",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || f.segment_ids(2).contains(&id).then_some(()),
    );
}
