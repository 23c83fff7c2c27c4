//! `edged import` against what a stick can hold, with real daemons: a file that shrinks while
//! it is read, FIFOs, devices and sockets, and names made to fool a terminal.
//!
//! Every daemon and CLI process is SIGKILLed when its test ends, also on panic; every wait is
//! bounded in time.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{ChildGuard, Fleet, MIB, NodeOptions, p, stderr, stdout};

/// Set to run [`inv_19_fifo_device_and_socket_are_refused_unread`] without device nodes where
/// they cannot be created (not root). The test then says loudly that devices were not tested.
const SKIP_DEVICES_ENV: &str = "EDGED_TEST_SKIP_DEVICES";

/// Sends `signal` (`STOP`, `CONT`) to `pid`.
fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{signal} {pid} failed");
}

/// The read offset of `pid`'s open descriptor on `file`, if it has one (`/proc/PID/fdinfo`).
fn read_offset(pid: u32, file: &Path) -> Option<u64> {
    let want = file.canonicalize().ok()?;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if std::fs::read_link(entry.path()).ok().as_deref() != Some(want.as_path()) {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_str()?
        ))
        .ok()?;
        let pos = info.lines().find_map(|l| l.strip_prefix("pos:"))?;
        return pos.trim().parse().ok();
    }
    None
}

/// `edged import DIR --json` on node `i` in the background, its stdout to `out`.
fn spawn_import(f: &Fleet, i: usize, dir: &Path, out: &Path) -> ChildGuard {
    ChildGuard(
        Command::new(support::EDGED)
            .args(["import", p(dir), "--json", "--config", p(&f.node(i).config)])
            .env_remove("EDGED_CONFIG")
            .env_remove("EDGED_LOG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn edged import"),
    )
}

/// Waits (bounded) for the background import to end; its exit code and JSON lines.
fn finish_import(f: &Fleet, mut import: ChildGuard, out: &Path) -> (Option<i32>, Vec<Value>) {
    let status = f.wait_for(
        "the import to finish",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || import.0.try_wait().ok().flatten(),
    );
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let lines: Vec<Value> = serde_json::from_str(&text)
        .unwrap_or_else(|e| f.fail(format!("import output is not JSON ({e}): {text}")));
    (status.code(), lines)
}

/// The line of `file` in an import's JSON output.
fn line<'a>(f: &Fleet, lines: &'a [Value], file: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["file"] == file)
        .unwrap_or_else(|| f.fail(format!("no line for {file} in {lines:?}")))
}

fn tmp_entries(f: &Fleet, i: usize) -> Vec<PathBuf> {
    std::fs::read_dir(f.node(i).data_dir().join("tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn inv_19_a_file_that_shrinks_while_imported_is_reported_and_the_rest_imported() {
    const BIG_BYTES: u64 = 16 * MIB;
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    // Sorted by name: the shrinking file goes first, so the files after it show the import
    // went on.
    let (shrinking, _) = f.make_segment("a-shrinks", BIG_BYTES, &usb);
    let (_, b) = f.make_segment("b-good", 64 * 1024, &usb);
    let (_, c) = f.make_segment("c-good", 64 * 1024, &usb);
    f.start(1);

    // Through the daemon. With the daemon stopped (SIGSTOP), the CLI can send no more than the
    // socket buffers hold: it has announced the file's length and is stuck writing its first
    // bytes. The file is cut behind the CLI's read offset, then the daemon resumes.
    let daemon = f.pid(1);
    signal(daemon, "STOP");
    let out = f.path("import-daemon.json");
    let import = spawn_import(&f, 1, &usb, &out);
    let cli = import.0.id();
    let mut last = None;
    let offset = f.wait_for(
        "the CLI to be stuck reading the big file",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let now = read_offset(cli, &shrinking).filter(|o| *o > 0);
            let steady = now.is_some() && now == last;
            last = now;
            steady.then_some(now)
        },
    );
    let offset = offset.unwrap_or(0);
    let cut_at = offset + MIB;
    f.check(cut_at < BIG_BYTES, || {
        format!("the CLI read {offset} bytes with the daemon stopped; the socket buffers are larger than this test assumes")
    });
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shrinking)
        .unwrap()
        .set_len(cut_at)
        .unwrap();
    signal(daemon, "CONT");
    let (code, lines) = finish_import(&f, import, &out);
    f.check(code == Some(1), || format!("exit code {code:?}: {lines:?}"));
    let first = line(&f, &lines, "a-shrinks.seg");
    f.check(
        first["status"] == "rejected"
            && first["reason"].as_str().is_some_and(|r| {
                r.contains("shrank while being imported") && r.contains(&cut_at.to_string())
            }),
        || format!("the shrunk file is reported: {first}"),
    );
    for (file, id) in [("b-good.seg", &b), ("c-good.seg", &c)] {
        let l = line(&f, &lines, file);
        f.check(l["status"] == "imported" && l["id"] == id.as_str(), || {
            format!("{file} after the shrunk file: {l}")
        });
    }
    let mut held = f.segment_ids(1);
    held.sort();
    let mut want = vec![b.clone(), c.clone()];
    want.sort();
    f.check(held == want, || format!("stored: {held:?}"));
    f.check(tmp_entries(&f, 1).is_empty(), || {
        format!("tmp/ holds {:?}", tmp_entries(&f, 1))
    });

    // Directly, with the daemon stopped: the CLI itself is stopped while it reads, the file
    // cut at its read offset, and the CLI resumed. The CLI may have read the whole file before
    // it is caught: then try again with a fresh file, a bounded number of times.
    let status = f.sigterm(1);
    f.check(status.code() == Some(0), || format!("SIGTERM: {status}"));
    let direct = f.path("usb-direct");
    std::fs::create_dir(&direct).unwrap();
    std::fs::copy(usb.join("b-good.seg"), direct.join("b-good.seg")).unwrap();
    let mut reported = None;
    for attempt in 0..3 {
        let name = format!("a-{attempt}");
        let (big, _) = f.make_segment(&name, 64 * MIB, &direct);
        let out = f.path(&format!("import-direct-{attempt}.json"));
        let import = spawn_import(&f, 1, &direct, &out);
        let cli = import.0.id();
        let caught = f.wait_for(
            "the CLI to open the big file",
            Duration::from_secs(30),
            Duration::from_millis(1),
            || {
                let offset = read_offset(cli, &big)?;
                signal(cli, "STOP");
                // Stopped: the offset no longer moves.
                let offset = read_offset(cli, &big).unwrap_or(offset);
                Some(offset)
            },
        );
        let cut = caught < 64 * MIB;
        if cut {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&big)
                .unwrap()
                .set_len(caught)
                .unwrap();
        }
        signal(cli, "CONT");
        let (code, lines) = finish_import(&f, import, &out);
        if !cut {
            eprintln!("attempt {attempt}: the CLI had read the whole file before it was stopped");
            std::fs::remove_file(&big).unwrap();
            continue;
        }
        f.check(code == Some(1), || {
            format!("direct exit code {code:?}: {lines:?}")
        });
        let l = line(&f, &lines, &format!("{name}.seg")).clone();
        let other = line(&f, &lines, "b-good.seg").clone();
        reported = Some((l, other, caught));
        break;
    }
    let (l, other, caught) =
        reported.unwrap_or_else(|| f.fail("the CLI was never caught while reading"));
    f.check(
        l["status"] == "rejected"
            && l["reason"].as_str().is_some_and(|r| {
                r.contains("shrank while being imported") && r.contains(&caught.to_string())
            }),
        || format!("direct: the shrunk file is reported: {l}"),
    );
    f.check(other["status"] == "already_present", || {
        format!("direct: the rest goes on: {other}")
    });
    f.check(tmp_entries(&f, 1).is_empty(), || {
        format!("tmp/ holds {:?}", tmp_entries(&f, 1))
    });
}

/// Creates a device node, or — only when [`SKIP_DEVICES_ENV`] is set — says loudly that it
/// cannot and returns false. Without the variable, a test that cannot create devices fails.
fn make_device(path: &Path, kind: rustix::fs::FileType, major: u32, minor: u32) -> bool {
    let made = rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        kind,
        rustix::fs::Mode::from_raw_mode(0o600),
        rustix::fs::makedev(major, minor),
    );
    match made {
        Ok(()) => true,
        Err(e) if std::env::var_os(SKIP_DEVICES_ENV).is_some() => {
            eprintln!(
                "WARNING: device nodes NOT TESTED: cannot create {} ({e}); {SKIP_DEVICES_ENV} is set",
                path.display()
            );
            false
        }
        Err(e) => panic!(
            "cannot create the device node {} ({e}): this test needs root (CAP_MKNOD), as in CI. \
             To run it without devices, set {SKIP_DEVICES_ENV}=1: devices are then not tested, and \
             the test says so.",
            path.display()
        ),
    }
}

#[test]
fn inv_19_fifo_device_and_socket_are_skipped_unread_and_do_not_fail_the_import() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    let (_, good) = f.make_segment("good", 64 * 1024, &usb);

    // A FIFO holding bytes: if the import read it, they would be gone.
    let fifo = usb.join("fifo.seg");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    // Both ends in this process: opening never blocks, and the bytes stay in the pipe.
    let mut pipe = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(&fifo)
        .unwrap();
    pipe.write_all(b"bytes in the pipe").unwrap();
    // A socket someone listens on: if the import connected, there would be a connection.
    let listener = std::os::unix::net::UnixListener::bind(usb.join("socket.seg")).unwrap();
    listener.set_nonblocking(true).unwrap();
    // /dev/zero's numbers (endless bytes if read) and a block device that does not exist.
    let mut expected = vec![("fifo.seg", "FIFO"), ("socket.seg", "socket")];
    if make_device(
        &usb.join("chardev.seg"),
        rustix::fs::FileType::CharacterDevice,
        1,
        5,
    ) {
        expected.push(("chardev.seg", "character device"));
    }
    if make_device(
        &usb.join("blockdev.seg"),
        rustix::fs::FileType::BlockDevice,
        7,
        250,
    ) {
        expected.push(("blockdev.seg", "block device"));
    }

    let check = |f: &Fleet, how: &str, lines: &[Value]| {
        for (file, kind) in &expected {
            let l = line(f, lines, file);
            f.check(
                l["status"] == "skipped" && l["reason"].as_str().is_some_and(|r| r.contains(kind)),
                || format!("{how}: {file} skipped as a {kind}: {l}"),
            );
        }
        f.check(lines.len() == expected.len() + 1, || {
            format!("{how}: one line per entry: {lines:?}")
        });
    };
    let import = |f: &Fleet, how: &str| {
        let medium = support::dir_snapshot(&usb);
        let started = Instant::now();
        let o = f.cli(1, &["import", p(&usb), "--json"]);
        let took = started.elapsed();
        f.check(o.status.code() == Some(0), || {
            format!(
                "{how}: skipped entries do not fail the import: {} {}",
                o.status,
                stderr(&o)
            )
        });
        f.check(took < Duration::from_secs(20), || {
            format!("{how} took {took:?}")
        });
        f.check(support::dir_snapshot(&usb) == medium, || {
            format!("{how}: the import changed the medium")
        });
        let lines: Vec<Value> = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| f.fail(format!("{how}: not JSON ({e}): {}", stdout(&o))));
        lines
    };

    f.start(1);
    let lines = import(&f, "through the daemon");
    check(&f, "through the daemon", &lines);
    f.check(line(&f, &lines, "good.seg")["status"] == "imported", || {
        format!("the rest of the directory is imported: {lines:?}")
    });
    let status = f.sigterm(1);
    f.check(status.code() == Some(0), || format!("SIGTERM: {status}"));

    let lines = import(&f, "directly");
    check(&f, "directly", &lines);
    f.check(
        line(&f, &lines, "good.seg")["status"] == "already_present",
        || format!("directly, the rest of the directory is seen: {lines:?}"),
    );
    f.check(f.segment_ids(1) == vec![good.clone()], || {
        "only the good segment is stored".into()
    });

    // Nothing was read from the FIFO, and nobody connected to the socket.
    let mut left = Vec::new();
    let _ = pipe.read_to_end(&mut left);
    f.check(left == b"bytes in the pipe", || {
        format!(
            "the FIFO was read: {:?} left",
            String::from_utf8_lossy(&left)
        )
    });
    f.check(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        || "the import connected to the socket".into(),
    );
}

/// Characters that must never reach a terminal raw from a name.
const RAW: [char; 6] = ['\u{1b}', '\u{7}', '\r', '\u{9b}', '\u{202e}', '\u{2066}'];

fn has_raw(text: &str) -> bool {
    text.contains(RAW)
}

#[test]
fn names_from_the_stick_and_the_manifest_are_escaped_in_tables_and_exact_in_json() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    // File names that erase the line above, split a row, and reverse text.
    let (seg, _) = f.make_segment("plain", 4096, &usb);
    let evil_files = [
        "\u{1b}[1A\u{1b}[2Kerased.seg",
        "two\nlines.seg",
        "\u{202e}gpj.seg",
    ];
    for (i, name) in evil_files.iter().enumerate() {
        // A different segment per file, so that each is imported.
        let (made, _) = f.make_segment(&format!("evil-{i}"), 4096 + i as u64, &usb);
        std::fs::rename(&made, usb.join(name)).unwrap();
    }
    std::fs::rename(&seg, usb.join("plain\u{7}\u{2066}.seg")).unwrap();
    // A segment whose manifest name reverses text.
    let evil_name = "release\u{202e}txt.exe";
    let input = f.path("payload");
    std::fs::write(&input, b"payload").unwrap();
    let o = support::edged(&[
        "segment",
        "create",
        "--key",
        p(&f.publisher_key),
        "--name",
        evil_name,
        p(&input),
        "--out",
        p(&usb.join("named.seg")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    f.start(1);
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || format!("import: {}", stderr(&o)));
    let table = stdout(&o);
    f.check(!has_raw(&table), || {
        format!("raw characters in the import table: {table:?}")
    });
    // One line per file, a header and the summary: no name split a row.
    f.check(table.lines().count() == evil_files.len() + 2 + 2, || {
        format!("rows: {table:?}")
    });
    for shown in [
        "\\x1b[1A\\x1b[2Kerased.seg",
        "two\\nlines.seg",
        "\\u{202e}gpj.seg",
        "plain\\x07\\u{2066}.seg",
    ] {
        f.check(table.contains(shown), || format!("{shown} not in {table}"));
    }
    // The daemon's log shows the file names escaped too.
    let logged: Vec<String> = f
        .events(1, 0, "segment imported")
        .iter()
        .filter_map(|e| e["file"].as_str().map(str::to_owned))
        .collect();
    f.check(
        logged.len() == 5
            && logged
                .iter()
                .all(|name| !has_raw(name) && !name.contains('\n')),
        || format!("logged file names: {logged:?}"),
    );

    // `edged segments`, from the daemon and directly.
    let check_segments = |f: &Fleet, how: &str| {
        let o = f.cli(1, &["segments"]);
        f.check(o.status.success(), || format!("{how}: {}", stderr(&o)));
        let table = stdout(&o);
        f.check(
            !has_raw(&table) && table.contains("release\\u{202e}txt.exe"),
            || format!("{how}: segments table {table:?}"),
        );
        let rows = f.json(1, &["segments"]);
        f.check(
            rows.as_array()
                .is_some_and(|rows| rows.iter().any(|r| r["name"] == evil_name)),
            || format!("{how}: JSON keeps the exact name: {rows}"),
        );
    };
    check_segments(&f, "through the daemon");
    // JSON keeps the file names exact.
    let lines = f.json(1, &["import", p(&usb)]);
    for name in evil_files {
        f.check(
            lines
                .as_array()
                .is_some_and(|l| l.iter().any(|l| l["file"] == name)),
            || format!("{name:?} exact in JSON: {lines}"),
        );
    }
    let status = f.sigterm(1);
    f.check(status.code() == Some(0), || format!("SIGTERM: {status}"));
    check_segments(&f, "directly");

    // An error quoting a path the operator was given.
    let o = f.cli(1, &["import", p(&usb.join("\u{1b}]0;pwned\u{7}\u{202e}"))]);
    f.check(o.status.code() == Some(1), || format!("{}", o.status));
    let err = stderr(&o);
    f.check(
        !has_raw(&err) && err.contains("\\x1b]0;pwned\\x07\\u{202e}"),
        || format!("the error is escaped: {err:?}"),
    );
}

#[test]
fn many_small_segments_are_pipelined_and_bad_ones_in_the_middle_are_reported_alone() {
    const SEGMENTS: usize = 40;
    // A small window, so that it fills and empties many times.
    let mut f = Fleet::new(1, &[], |_| {
        NodeOptions::default()
            .control("import_window", 4)
            .control("import_window_bytes", MIB)
    });
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    let mut good = Vec::new();
    for i in 0..SEGMENTS {
        let name = format!("m-{i:03}");
        let (_, id) = f.make_segment(&name, 100 + 97 * i as u64, &usb);
        good.push((format!("{name}.seg"), id));
    }
    // In the middle: a copy whose payload was damaged, a file that is no segment at all, and
    // one too large to pipeline (it goes alone, streamed).
    let damaged = usb.join(&good[10].0);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&damaged, bytes).unwrap();
    good.remove(10);
    std::fs::write(usb.join("m-020-garbage.seg"), b"not a segment at all").unwrap();
    let (_, big) = f.make_segment("m-025-big", 2 * MIB, &usb);
    good.push(("m-025-big.seg".into(), big));
    f.start(1);

    let out = f.path("import.json");
    let (code, lines) = finish_import(&f, spawn_import(&f, 1, &usb, &out), &out);
    f.check(code == Some(1), || format!("exit code {code:?}: {lines:?}"));
    f.check(lines.len() == SEGMENTS + 2, || {
        format!("a line per file: {lines:?}")
    });
    let l = line(&f, &lines, "m-010.seg");
    f.check(
        l["status"] == "rejected" && l["reason"].as_str().is_some_and(|r| r.contains("hash")),
        || format!("the damaged copy: {l}"),
    );
    let l = line(&f, &lines, "m-020-garbage.seg");
    f.check(l["status"] == "rejected", || format!("the garbage: {l}"));
    for (file, id) in &good {
        let l = line(&f, &lines, file);
        f.check(l["status"] == "imported" && l["id"] == id.as_str(), || {
            format!("{file}: {l}")
        });
    }
    let mut held = f.segment_ids(1);
    held.sort();
    let mut want: Vec<String> = good.iter().map(|(_, id)| id.clone()).collect();
    want.sort();
    f.check(held == want, || format!("stored {held:?}"));
    f.check(tmp_entries(&f, 1).is_empty(), || {
        format!("tmp/ holds {:?}", tmp_entries(&f, 1))
    });

    // Again: every good one is already there (INV-19), the bad ones refused again.
    let out = f.path("import-again.json");
    let (code, lines) = finish_import(&f, spawn_import(&f, 1, &usb, &out), &out);
    f.check(code == Some(1), || format!("again: exit code {code:?}"));
    for (file, _) in &good {
        let l = line(&f, &lines, file);
        f.check(l["status"] == "already_present", || {
            format!("again, {file}: {l}")
        });
    }
}
