//! Hostile USB media (INV-19): a stick holding symlinks (to a file outside it and to a valid
//! segment elsewhere), a FIFO, a device node, a directory named `*.seg`, a file that grows while
//! it is read and thousands of junk files; an export directory holding symlinks, FIFOs and a
//! directory at the names an export writes. Both through the daemon and directly into a
//! stopped node's data dir. What the medium holds is compared entry by entry (names, types,
//! lengths, contents, times, inodes) before and after.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::check::{self, Acked};
use crate::fleet::{Fleet, FleetSpec, Topology};
use crate::host;
use crate::look;
use crate::results::Build;
use crate::scenario::{Ctx, Scenario, World};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "usb-hostile-stick",
            summary: "A stick with symlinks (to a file outside it and to a valid segment \
                      elsewhere), a FIFO, a device node, a directory named x.seg, a file that \
                      grows while it is read and 3,000 junk files: through the daemon and \
                      directly, the good segments are imported, everything else is reported \
                      with its reason, nothing hangs, nothing on the stick changes, and a \
                      second import changes nothing.",
            invariants: &["INV-10", "INV-19"],
            quick: true,
            faults: true,
            build: Build::Shipped,
            run: usb_hostile_stick,
        },
        Scenario {
            name: "usb-hostile-export-dir",
            summary: "Exports into a directory holding symlinks to files outside it at a target \
                      and at a temporary name, FIFOs at both, and a directory at a target: \
                      through the daemon and directly, files outside are untouched, nothing \
                      hangs, every refusal is reported, the rest is written byte-identical, and \
                      an export directory that is a symlink is refused.",
            invariants: &["INV-19"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: usb_hostile_export_dir,
        },
    ]
}

/// Good segments on the hostile stick.
const GOOD_SEGMENTS: usize = 3;
/// Payload of each segment of the media scenarios.
const MEDIA_PAYLOAD_BYTES: u64 = 256 << 10;
/// Junk files on the stick not named `*.seg` (skipped from the listing alone).
const JUNK_OTHER: usize = 2_800;
/// Junk files named `*.seg` (each opened, read and refused).
const JUNK_SEG: usize = 200;
/// Bytes of each junk file.
const JUNK_BYTES: usize = 100;
/// The growing file gets this many bytes at a time…
const GROW_CHUNK_BYTES: usize = 64 << 10;
/// …this often…
const GROW_EVERY_MS: u64 = 5;
/// …up to this length, and for at most this long: a reader that reads to the end of a
/// growing file would not finish before either.
const GROW_BYTES_MAX: u64 = 32 << 20;
const GROW_TIME_MAX_MS: u64 = 60_000;
/// Device numbers of the device node on the stick: 1:5 is /dev/zero, endless to a reader.
const DEV_MAJOR: u32 = 1;
const DEV_MINOR: u32 = 5;
/// Time allowed for the bytes of a media workload to move, per hop.
const MEDIA_TRANSFER_MS: u64 = 1_000;
/// Longest an export into a trapped directory may take: a FIFO opened for writing would block
/// it for ever.
const EXPORT_LIMIT_MS: u64 = 20_000;
/// Lines of a diff shown in a check's detail.
const DIFF_LINES_MAX: usize = 5;

/// What an import must answer for one hostile entry: its status and a word of its reason.
struct Expect {
    name: &'static str,
    status: &'static str,
    reason: &'static str,
}

/// A file appended to by a thread until stopped (or its bounds).
struct Grower {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl Grower {
    /// Starts appending to `path` (which must exist), after a first chunk is written.
    fn start(path: &Path) -> anyhow::Result<Grower> {
        let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
        let chunk = vec![0x5au8; GROW_CHUNK_BYTES];
        file.write_all(&chunk)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut len = GROW_CHUNK_BYTES as u64;
            while !flag.load(Ordering::Relaxed)
                && len < GROW_BYTES_MAX
                && started.elapsed() < Duration::from_millis(GROW_TIME_MAX_MS)
            {
                if file.write_all(&chunk).is_err() {
                    break;
                }
                len += chunk.len() as u64;
                std::thread::sleep(Duration::from_millis(GROW_EVERY_MS));
            }
            len
        });
        Ok(Grower { stop, handle })
    }

    /// Stops it: the bytes it appended.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}

/// The hostile stick and what it holds.
struct Stick {
    dir: PathBuf,
    outside: PathBuf,
    good: Vec<(PathBuf, String)>,
    /// Ids of valid segments reachable only by breaking a rule (a symlink, recursion, a
    /// growing file): never to be stored.
    forbidden: Vec<(&'static str, String)>,
    expect: Vec<Expect>,
    device: bool,
}

/// Makes the stick (see the module docs).
fn make_stick(ctx: &mut Ctx, fleet: &Fleet) -> anyhow::Result<Stick> {
    let dir = fleet.dir.join("stick-hostile");
    let outside = fleet.dir.join("outside");
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(&outside)?;
    let mut good = Vec::new();
    for k in 0..GOOD_SEGMENTS {
        good.push(fleet.make_segment(&format!("good-{k}"), MEDIA_PAYLOAD_BYTES, &dir, &[])?);
    }
    let mut forbidden = Vec::new();
    let mut expect = Vec::new();

    std::fs::write(outside.join("secret.txt"), b"not for the fleet\n")?;
    std::os::unix::fs::symlink(outside.join("secret.txt"), dir.join("leak.seg"))?;
    let (elsewhere, id) = fleet.make_segment("elsewhere", MEDIA_PAYLOAD_BYTES, &outside, &[])?;
    std::os::unix::fs::symlink(&elsewhere, dir.join("elsewhere.seg"))?;
    forbidden.push(("the segment a symlink points to", id));
    expect.push(Expect {
        name: "leak.seg",
        status: "skipped",
        reason: "symlink",
    });
    expect.push(Expect {
        name: "elsewhere.seg",
        status: "skipped",
        reason: "symlink",
    });
    ctx.fault(
        "media.symlink",
        "stick",
        "leak.seg → a file outside the stick, elsewhere.seg → a valid segment outside it",
    );

    host::mkfifo(&dir.join("pipe.seg"))?;
    expect.push(Expect {
        name: "pipe.seg",
        status: "skipped",
        reason: "FIFO",
    });
    ctx.fault("media.fifo", "stick", "pipe.seg is a FIFO nobody writes to");

    let device = match host::mknod_char(&dir.join("zero.seg"), DEV_MAJOR, DEV_MINOR) {
        Ok(()) => {
            expect.push(Expect {
                name: "zero.seg",
                status: "skipped",
                reason: "character device",
            });
            ctx.fault(
                "media.device",
                "stick",
                format!("zero.seg is a character device {DEV_MAJOR}:{DEV_MINOR} (endless zeros)"),
            );
            true
        }
        Err(e) => {
            // The rest of the stick is still worth importing; this part has no evidence.
            ctx.unknown(
                "device_node_made",
                &["INV-19"],
                format!("no device node on the stick (mknod needs root): {e:#}"),
            );
            false
        }
    };

    let nested = dir.join("x.seg");
    let (_, inner) = fleet.make_segment("inner", MEDIA_PAYLOAD_BYTES, &nested, &[])?;
    forbidden.push(("the segment inside x.seg/", inner));
    expect.push(Expect {
        name: "x.seg",
        status: "skipped",
        reason: "directory",
    });
    ctx.fault(
        "media.dir_named_seg",
        "stick",
        "x.seg is a directory holding a valid segment",
    );

    let (grow_src, grow_id) = fleet.make_segment("grow", MEDIA_PAYLOAD_BYTES, &outside, &[])?;
    std::fs::copy(&grow_src, dir.join("grow.seg"))?;
    forbidden.push(("the segment at the start of the growing file", grow_id));
    expect.push(Expect {
        name: "grow.seg",
        status: "rejected",
        reason: "",
    });

    let mut junk = vec![0u8; JUNK_BYTES];
    for k in 0..JUNK_OTHER + JUNK_SEG {
        ctx.rng.fill(&mut junk[..]);
        let ext = if k < JUNK_OTHER { "txt" } else { "seg" };
        std::fs::write(dir.join(format!("junk-{k:04}.{ext}")), &junk)?;
    }
    ctx.fault(
        "media.many_files",
        "stick",
        format!(
            "{} junk files: {JUNK_OTHER} not named .seg, {JUNK_SEG} .seg of random bytes",
            JUNK_OTHER + JUNK_SEG
        ),
    );
    Ok(Stick {
        dir,
        outside,
        good,
        forbidden,
        expect,
        device,
    })
}

/// Imports the stick on node `at` (through its daemon if it runs, else directly) while a
/// thread grows `grow.seg`, and records the round's checks.
fn import_round(
    ctx: &mut Ctx,
    fleet: &Fleet,
    at: usize,
    stick: &Stick,
    round: &str,
) -> anyhow::Result<Option<look::ImportRun>> {
    let before = host::snapshot(&stick.dir)?;
    let outside_before = host::snapshot(&stick.outside)?;
    let grower = Grower::start(&stick.dir.join("grow.seg"))?;
    ctx.fault(
        "media.growing_file",
        "stick",
        format!("grow.seg: a valid segment followed by {GROW_CHUNK_BYTES} bytes more every {GROW_EVERY_MS} ms while the {round} import reads"),
    );
    let started = Instant::now();
    let run = look::import(fleet, at, &stick.dir);
    let grown = grower.stop();
    let run = match run {
        Ok(run) => run,
        Err(e) => {
            ctx.check(
                &format!("{round}_import_ends"),
                &["INV-19"],
                false,
                format!("the import did not end: {e:#}"),
            );
            return Ok(None);
        }
    };
    ctx.check(
        &format!("{round}_import_ends"),
        &["INV-19"],
        true,
        format!(
            "the import of {} entries ended in {} ms (grow.seg grew by {grown} bytes meanwhile)",
            run.lines.len(),
            started.elapsed().as_millis()
        ),
    );

    let good_names: Vec<String> = stick
        .good
        .iter()
        .map(|(f, _)| {
            f.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut bad = Vec::new();
    for name in &good_names {
        match run.line(name) {
            Some(l) if l.status == "imported" || l.status == "already_present" => {}
            other => bad.push(format!("{name}: {other:?}")),
        }
    }
    for e in &stick.expect {
        match run.line(e.name) {
            Some(l)
                if l.status == e.status
                    && l.reason.as_deref().unwrap_or_default().contains(e.reason) => {}
            other => bad.push(format!(
                "{}: {other:?}, expected {} ({})",
                e.name, e.status, e.reason
            )),
        }
    }
    let junk_skipped = run
        .lines
        .iter()
        .filter(|l| l.file.ends_with(".txt") && l.status == "skipped")
        .count();
    let junk_rejected = run
        .lines
        .iter()
        .filter(|l| l.file.starts_with("junk-") && l.file.ends_with(".seg"))
        .filter(|l| l.status == "rejected" && l.reason.is_some())
        .count();
    if junk_skipped != JUNK_OTHER || junk_rejected != JUNK_SEG {
        bad.push(format!(
            "junk: {junk_skipped} of {JUNK_OTHER} skipped, {junk_rejected} of {JUNK_SEG} rejected"
        ));
    }
    let entries = before
        .keys()
        .filter(|p| p.components().count() == 1)
        .count();
    if run.lines.len() != entries {
        bad.push(format!(
            "{} report lines for {entries} entries",
            run.lines.len()
        ));
    }
    if run.code != Some(1) {
        bad.push(format!(
            "exit code {:?}, not 1 (files were rejected)",
            run.code
        ));
    }
    ctx.check(
        &format!("{round}_every_entry_reported"),
        &["INV-19"],
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "{} good segment(s) acknowledged; symlinks, FIFO{}, x.seg, the growing file \
                 ({}) and {} junk files each reported with its reason",
                good_names.len(),
                if stick.device { ", device" } else { "" },
                run.line("grow.seg")
                    .and_then(|l| l.reason.clone())
                    .unwrap_or_default(),
                JUNK_OTHER + JUNK_SEG
            )
        } else {
            bad.iter()
                .take(DIFF_LINES_MAX)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        },
    );

    let after = host::snapshot(&stick.dir)?;
    let outside_after = host::snapshot(&stick.outside)?;
    let mut changes = host::diff(&before, &after, &[Path::new("grow.seg")], DIFF_LINES_MAX);
    changes.extend(
        host::diff(&outside_before, &outside_after, &[], DIFF_LINES_MAX)
            .into_iter()
            .map(|c| format!("outside: {c}")),
    );
    ctx.check(
        &format!("{round}_medium_unchanged"),
        &["INV-19"],
        changes.is_empty(),
        if changes.is_empty() {
            format!(
                "all {} entries of the stick (but the growing file) and the files outside it \
                 are as they were: names, types, lengths, contents, times, inodes",
                before.len()
            )
        } else {
            changes.join("; ")
        },
    );
    Ok(Some(run))
}

/// Node `at` stores the good segments and nothing reachable only by breaking a rule.
fn stored_check(ctx: &mut Ctx, fleet: &Fleet, at: usize, stick: &Stick, round: &str) {
    let listed = look::listed(fleet, at).unwrap_or_default();
    let on_disk: BTreeSet<String> = look::seg_files(&fleet.node(at).data_dir)
        .iter()
        .filter_map(|(p, _)| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let held = if fleet.node(at).running() {
        &listed
    } else {
        &on_disk
    };
    let good: BTreeSet<String> = stick.good.iter().map(|(_, id)| id.clone()).collect();
    let leaked: Vec<&str> = stick
        .forbidden
        .iter()
        .filter(|(_, id)| held.contains(id) || on_disk.contains(id))
        .map(|(what, _)| *what)
        .collect();
    ctx.check(
        &format!("{round}_only_good_segments_stored"),
        &["INV-19"],
        held == &good && leaked.is_empty(),
        format!(
            "{} stored, {} good; stored against the rules: {leaked:?}",
            held.len(),
            good.len()
        ),
    );
}

fn usb_hostile_stick(ctx: &mut Ctx) -> anyhow::Result<World> {
    const THROUGH_DAEMON: usize = 0;
    const DIRECT: usize = 1;
    let topology = Topology::Line(2);
    let mut fleet = ctx.direct_fleet(FleetSpec::new(topology))?;
    let stick = make_stick(ctx, &fleet)?;
    fleet.start(THROUGH_DAEMON)?;
    let mut world = World::new(fleet);

    let daemon_run = import_round(ctx, &world.fleet, THROUGH_DAEMON, &stick, "daemon")?;
    stored_check(ctx, &world.fleet, THROUGH_DAEMON, &stick, "daemon");
    // The other node is stopped: the CLI imports into its data dir itself.
    let direct_run = import_round(ctx, &world.fleet, DIRECT, &stick, "direct")?;
    stored_check(ctx, &world.fleet, DIRECT, &stick, "direct");
    if let (Some(d), Some(x)) = (&daemon_run, &direct_run) {
        let differ: Vec<String> = d
            .lines
            .iter()
            .filter(|l| {
                x.line(&l.file)
                    .is_none_or(|m| m.status != l.status && l.file != "grow.seg")
            })
            .map(|l| l.file.clone())
            .take(DIFF_LINES_MAX)
            .collect();
        ctx.check(
            "daemon_and_direct_agree",
            &["INV-19"],
            differ.is_empty(),
            if differ.is_empty() {
                "the import through the daemon and the direct one gave every entry the same status"
                    .to_owned()
            } else {
                format!("different statuses for {differ:?}")
            },
        );
    }

    // A second import changes nothing: the good ones are already there.
    let again = import_round(ctx, &world.fleet, THROUGH_DAEMON, &stick, "again")?;
    let idempotent = again.as_ref().is_some_and(|r| {
        stick.good.iter().all(|(f, _)| {
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            r.line(&name).is_some_and(|l| l.status == "already_present")
        })
    });
    ctx.check(
        "reimport_changes_nothing",
        &["INV-10", "INV-19"],
        idempotent,
        format!("every good segment already present on the second import: {idempotent}"),
    );
    stored_check(ctx, &world.fleet, THROUGH_DAEMON, &stick, "again");

    world.fleet.start(DIRECT)?;
    let acked: Vec<Acked> = stick
        .good
        .iter()
        .map(|(f, id)| Acked::of_file(id, f, "import"))
        .collect::<anyhow::Result<_>>()?;
    let both = [THROUGH_DAEMON, DIRECT];
    ctx.converge(
        &world.fleet,
        &acked,
        &both,
        topology.diameter(),
        MEDIA_TRANSFER_MS,
    );
    ctx.record(check::lost(&world.fleet, &acked, &both));
    Ok(world)
}

/// One hostile entry in an export directory, at a name an export of segment `id` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trap {
    /// `<id>.seg` is a symlink to a file outside: refused, never followed.
    SymlinkAtTarget,
    /// `.<id>.seg.tmp` is a symlink to a file outside: removed, never followed; the export
    /// is written.
    SymlinkAtTemp,
    /// `<id>.seg` is a FIFO: refused, never opened.
    FifoAtTarget,
    /// `.<id>.seg.tmp` is a FIFO: removed, never opened; the export is written.
    FifoAtTemp,
    /// `<id>.seg` is a directory with a file in it: refused, left alone.
    DirAtTarget,
}

impl Trap {
    const ALL: [Trap; 5] = [
        Trap::SymlinkAtTarget,
        Trap::SymlinkAtTemp,
        Trap::FifoAtTarget,
        Trap::FifoAtTemp,
        Trap::DirAtTarget,
    ];

    /// Whether the export of its segment must still succeed.
    fn written(self) -> bool {
        matches!(self, Trap::SymlinkAtTemp | Trap::FifoAtTemp)
    }

    /// A word the refusal must say.
    fn reason(self) -> &'static str {
        match self {
            Trap::SymlinkAtTarget => "symlink",
            Trap::FifoAtTarget => "FIFO",
            Trap::DirAtTarget => "directory",
            Trap::SymlinkAtTemp | Trap::FifoAtTemp => "",
        }
    }
}

/// Sets the traps for `ids` (one each, in [`Trap::ALL`]'s order) in `dir`; victims of the
/// symlinks go into `outside`.
fn set_traps(ctx: &mut Ctx, dir: &Path, outside: &Path, ids: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::create_dir_all(outside)?;
    for (k, (trap, id)) in Trap::ALL.iter().zip(ids).enumerate() {
        let target = dir.join(format!("{id}.seg"));
        let temp = dir.join(format!(".{id}.seg.tmp"));
        let victim = outside.join(format!("victim-{k}.txt"));
        // Names as a reader of the run's directory sees them.
        let short = |p: &Path| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.replace(id.as_str(), check::short(id))
        };
        let victim_name = format!(
            "{}/{}",
            outside.file_name().unwrap_or_default().to_string_lossy(),
            short(&victim)
        );
        let detail = match trap {
            Trap::SymlinkAtTarget | Trap::SymlinkAtTemp => {
                std::fs::write(&victim, format!("victim {k}: must never change\n"))?;
                let at = if *trap == Trap::SymlinkAtTarget {
                    &target
                } else {
                    &temp
                };
                std::os::unix::fs::symlink(&victim, at)?;
                format!("{} → {victim_name}", short(at))
            }
            Trap::FifoAtTarget => {
                host::mkfifo(&target)?;
                format!("{} is a FIFO", short(&target))
            }
            Trap::FifoAtTemp => {
                host::mkfifo(&temp)?;
                format!("{} is a FIFO", short(&temp))
            }
            Trap::DirAtTarget => {
                std::fs::create_dir(&target)?;
                std::fs::write(target.join("keep.txt"), b"keep\n")?;
                format!("{} is a directory", short(&target))
            }
        };
        let kind = match trap {
            Trap::SymlinkAtTarget | Trap::SymlinkAtTemp => "media.export_symlink",
            Trap::FifoAtTarget | Trap::FifoAtTemp => "media.export_fifo",
            Trap::DirAtTarget => "media.export_dir",
        };
        ctx.fault(kind, "export dir", detail);
    }
    Ok(())
}

/// Exports `ids` from node `at` into a trapped directory and records the round's checks.
fn export_round(
    ctx: &mut Ctx,
    fleet: &Fleet,
    at: usize,
    acked: &[Acked],
    round: &str,
) -> anyhow::Result<()> {
    let dir = fleet.dir.join(format!("export-{round}"));
    let outside = fleet.dir.join(format!("outside-{round}"));
    let ids: Vec<String> = acked.iter().map(|a| a.id.clone()).collect();
    set_traps(ctx, &dir, &outside, &ids)?;
    let before = host::snapshot(&dir)?;
    let outside_before = host::snapshot(&outside)?;
    let to = dir.to_string_lossy().into_owned();
    let mut args = vec!["export", "--json", "--to", to.as_str()];
    args.extend(ids.iter().map(String::as_str));
    let started = Instant::now();
    let ran = crate::proc::run_bounded(
        fleet.command(at, &args),
        Duration::from_millis(EXPORT_LIMIT_MS),
    );
    ctx.check(
        &format!("{round}_export_ends"),
        &["INV-19"],
        ran.is_ok(),
        match &ran {
            Ok(_) => format!("the export ended in {} ms", started.elapsed().as_millis()),
            Err(e) => format!("the export did not end: {e:#}"),
        },
    );
    if let Ok(out) = &ran {
        refusal_checks(ctx, &dir, acked, out, round);
    }
    // What the export did to the directory and outside it, whether it ended or not.
    let after = host::snapshot(&dir)?;
    let outside_after = host::snapshot(&outside)?;
    // Only the two written segments may appear, and the two temporary traps go.
    let written: Vec<PathBuf> = Trap::ALL
        .iter()
        .zip(acked)
        .filter(|(t, _)| t.written())
        .flat_map(|(_, a)| {
            [
                PathBuf::from(format!("{}.seg", a.id)),
                PathBuf::from(format!(".{}.seg.tmp", a.id)),
            ]
        })
        .collect();
    let ignore: Vec<&Path> = written.iter().map(PathBuf::as_path).collect();
    let mut changes = host::diff(&before, &after, &ignore, DIFF_LINES_MAX);
    changes.extend(
        host::diff(&outside_before, &outside_after, &[], DIFF_LINES_MAX)
            .into_iter()
            .map(|c| format!("outside: {c}")),
    );
    ctx.check(
        &format!("{round}_nothing_else_touched"),
        &["INV-19"],
        changes.is_empty(),
        if changes.is_empty() {
            "the traps at target names and every file outside are exactly as they were".to_owned()
        } else {
            changes.join("; ")
        },
    );
    Ok(())
}

/// Every trap's segment got the line it should: refused with the trap's reason, or written
/// byte-identical with its temporary name gone.
fn refusal_checks(
    ctx: &mut Ctx,
    dir: &Path,
    acked: &[Acked],
    out: &std::process::Output,
    round: &str,
) {
    let lines: Vec<serde_json::Value> = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let mut bad = Vec::new();
    for (trap, a) in Trap::ALL.iter().zip(acked) {
        let line = lines.iter().find(|l| l["id"] == a.id.as_str());
        let status = line.and_then(|l| l["status"].as_str()).unwrap_or("none");
        let error = line.and_then(|l| l["error"].as_str()).unwrap_or_default();
        let target = dir.join(format!("{}.seg", a.id));
        let ok = if trap.written() {
            status == "written"
                && host::hash_file(&target).is_ok_and(|(h, n)| h == a.file_hash && n == a.file_len)
                && !dir.join(format!(".{}.seg.tmp", a.id)).exists()
        } else {
            status == "FAILED" && error.contains(trap.reason())
        };
        if !ok {
            bad.push(format!("{trap:?}: {status} {error}"));
        }
    }
    if out.status.code() != Some(1) {
        bad.push(format!("exit code {:?}, not 1", out.status.code()));
    }
    ctx.check(
        &format!("{round}_every_refusal_reported"),
        &["INV-19"],
        bad.is_empty(),
        if bad.is_empty() {
            "the symlink, FIFO and directory at target names refused with their reason; the \
             temporary names cleared without being followed or opened and those segments \
             written byte-identical"
                .to_owned()
        } else {
            bad.join("; ")
        },
    );
}

fn usb_hostile_export_dir(ctx: &mut Ctx) -> anyhow::Result<World> {
    const THROUGH_DAEMON: usize = 0;
    const DIRECT: usize = 1;
    let topology = Topology::Line(2);
    let mut fleet = ctx.direct_fleet(FleetSpec::new(topology))?;
    fleet.start_all()?;
    let mut world = World::new(fleet);
    let acked = super::basic::import_segments(
        ctx,
        &world,
        THROUGH_DAEMON,
        "out",
        Trap::ALL.len(),
        MEDIA_PAYLOAD_BYTES,
    )?;
    ctx.check(
        "workload_ran",
        &[],
        acked.len() == Trap::ALL.len(),
        format!("{} of {} imported", acked.len(), Trap::ALL.len()),
    );
    let both = [THROUGH_DAEMON, DIRECT];
    ctx.converge(
        &world.fleet,
        &acked,
        &both,
        topology.diameter(),
        MEDIA_TRANSFER_MS,
    );
    ctx.record(check::lost(&world.fleet, &acked, &both));

    export_round(ctx, &world.fleet, THROUGH_DAEMON, &acked, "daemon")?;
    world.fleet.stop(DIRECT)?;
    export_round(ctx, &world.fleet, DIRECT, &acked, "direct")?;
    world.fleet.start(DIRECT)?;

    // An export directory that is itself a symlink to a directory outside: refused.
    let real = world.fleet.dir.join("outside-linked");
    std::fs::create_dir_all(&real)?;
    let link = world.fleet.dir.join("export-link");
    std::os::unix::fs::symlink(&real, &link)?;
    ctx.fault(
        "media.export_dir_symlink",
        "export dir",
        format!("{} → {}", link.display(), real.display()),
    );
    let out = world.fleet.cli(
        THROUGH_DAEMON,
        &["export", "--json", "--to", &link.to_string_lossy(), "--all"],
    )?;
    let untouched = std::fs::read_dir(&real)?.next().is_none();
    ctx.check(
        "symlinked_export_dir_refused",
        &["INV-19"],
        !out.status.success() && untouched,
        format!(
            "exit code {:?}, the directory it points to still empty: {untouched} ({})",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    );
    Ok(world)
}
