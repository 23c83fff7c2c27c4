//! Disk faults: a data dir on a small tmpfs that fills up (mid-transfer, mid-import), `.seg`
//! files corrupted, cut or removed at rest (node stopped, node running), a corrupt database.
//!
//! Every fault here is done to the host, from outside: `mount`, a file that takes the room, a
//! byte flipped in place with its times kept (bit rot), a file cut or removed. What the nodes
//! did about it is read from the CLI's `--json`, `/metrics`, the files on disk and the logs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;
use rustix::process::Signal;

use super::basic::acked_by_import;
use crate::check::{self, Acked};
use crate::fleet::{Fleet, FleetSpec, Topology};
use crate::host::{self, Tmpfs};
use crate::look;
use crate::results::{Build, check as names};
use crate::scenario::{Ctx, Scenario, World};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "disk-full-transfer",
            summary: "A receiver whose data dir is a small tmpfs fills up while a peer sends it 6 \
                  segments, then has its room taken by another writer mid-transfer (ENOSPC): \
                  nothing it did not store is acknowledged, no temp file stays, it keeps \
                  running, the sender keeps its jobs and retries; after the heal everything \
                  converges, and one segment more than its ceiling is refused.",
            invariants: &["INV-06", "INV-08", "INV-15", "INV-23"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: disk_full_transfer,
        },
        Scenario {
            name: "disk-full-import",
            summary: "A node whose data dir is a small tmpfs imports a stick larger than its disk, \
                  then has its room taken mid-import (ENOSPC): the import stores what fits, \
                  reports every other file as a retryable refusal, leaves no temp file and lists \
                  nothing partial; after the heal the same import stores the rest and it relays.",
            invariants: &["INV-04", "INV-08", "INV-15", "INV-23"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: disk_full_import,
        },
        Scenario {
            name: "corrupt-at-rest-stopped",
            summary: "On a stopped node, one stored segment gets a payload byte flipped, one a \
                      signature byte, one is cut short and one removed; restarted, it drops the \
                      rows of the cut and missing ones, quarantines the flipped ones before \
                      serving them (the peer it owes them never sees a bad copy), fetches all \
                      four again, and every node ends byte-identical.",
            invariants: &["INV-02", "INV-05", "INV-15", "INV-24"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: corrupt_at_rest_stopped,
        },
        Scenario {
            name: "corrupt-at-rest-running",
            summary: "On a running node, stored segments get payload and signature bytes \
                      flipped, one is cut short and one removed: an export refuses the flipped \
                      ones and writes nothing for them, sending finds the others; each is \
                      quarantined, never served, fetched again, and exports byte-identical after.",
            invariants: &["INV-02", "INV-15", "INV-19", "INV-24"],
            quick: true,
            faults: true,
            build: Build::Shipped,
            run: corrupt_at_rest_running,
        },
        Scenario {
            name: "export-past-corrupt-copy",
            summary: "A running node's first segment of an export has a payload byte flipped: \
                      the export refuses it with its own reason, quarantines it, and still \
                      writes the intact segments after it; fetched again, all export \
                      byte-identical.",
            invariants: &["INV-02", "INV-15", "INV-24"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: export_past_corrupt_copy,
        },
        Scenario {
            name: "corrupt-db",
            summary: "A stopped node's edge.redb is cut short, then has garbage written over its \
                      header, then is removed: each start fails with exit code 5 and a message \
                      naming the database, and leaves the data dir exactly as it was (never \
                      re-initialised); the rest of the fleet goes on, and the restored node \
                      catches up.",
            invariants: &["INV-15", "INV-24"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: corrupt_db,
        },
    ]
}

/// The sender (and importer) of the disk-full scenarios.
const SENDER: usize = 0;
/// The node whose data dir is a small tmpfs.
const RECEIVER: usize = 1;
/// Payload of each segment of the disk-full scenarios.
const FULL_PAYLOAD_BYTES: u64 = 2 << 20;
/// Segments sent into a disk that fills up.
const FULL_SEGMENTS: usize = 6;
/// Segments the small file system takes before it is full.
const FULL_FIT: u64 = 2;
/// Room on the small file system beyond [`FULL_FIT`] segments: database and directories.
const FULL_SLACK_BYTES: u64 = 512 << 10;
/// Room beyond the ceiling after the file system is grown.
const HEAL_SLACK_BYTES: u64 = 16 << 20;
/// Allocation unit of tmpfs sizes.
const PAGE_BYTES: u64 = 4096;
/// Longest wait for the disk to fill, or for a refusal to show at the sender.
const FULL_WAIT_MS: u64 = 15_000;
/// Longest a receiver's `tmp/` may take to be seen empty after a failed ingest.
const TMP_DRAIN_MS: u64 = 5_000;
/// Longest wait for the next ingest's temp file after the file system grew (the sender's next
/// retry is at most `backoff_max_ms` away).
const PART_WAIT_MS: u64 = 10_000;
/// Time allowed for the bytes of one disk-full workload to move, per hop.
const FULL_TRANSFER_MS: u64 = 2_000;
/// The name of the file that takes a file system's room.
const FILLER: &str = "fi-filler";

fn round_up(n: u64, unit: u64) -> u64 {
    n.div_ceil(unit) * unit
}

fn file_len(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)?.len())
}

/// What one node-to-node check of "acknowledged only when stored, jobs kept" saw.
struct AckAudit {
    held: usize,
    pending: usize,
    /// Delivered at the sender but not held byte-identical by the receiver.
    acked_not_held: Vec<String>,
    /// Not held, and the sender's job is no longer pending (dropped, refused, dead).
    dropped: Vec<String>,
}

fn audit_acks(fleet: &Fleet, sender: usize, receiver: usize, acked: &[Acked]) -> AckAudit {
    let peer = fleet.node(receiver).id.clone();
    let jobs = look::jobs_to(fleet, sender, &peer).unwrap_or_default();
    let listed = look::listed(fleet, receiver).unwrap_or_default();
    let mut audit = AckAudit {
        held: 0,
        pending: 0,
        acked_not_held: Vec::new(),
        dropped: Vec::new(),
    };
    for a in acked {
        let held = listed.contains(&a.id) && look::file_matches(fleet, receiver, a);
        let state = jobs.get(&a.id).map(|j| j.state.as_str()).unwrap_or("none");
        if held {
            audit.held += 1;
        } else if state == "delivered" {
            audit.acked_not_held.push(check::short(&a.id).to_owned());
        } else if state == "pending" {
            audit.pending += 1;
        } else {
            audit
                .dropped
                .push(format!("{} ({state})", check::short(&a.id)));
        }
    }
    audit
}

/// The checks of a moment when the receiver's disk is full: acknowledged only what it stored,
/// the sender kept the rest, no temp file stays, the receiver still runs.
fn full_disk_checks(ctx: &mut Ctx, fleet: &mut Fleet, acked: &[Acked], phase: &str) {
    let audit = audit_acks(fleet, SENDER, RECEIVER, acked);
    ctx.check(
        &format!("{phase}_acked_only_when_stored"),
        &["INV-08", "INV-23"],
        audit.acked_not_held.is_empty(),
        if audit.acked_not_held.is_empty() {
            format!(
                "{} held byte-identical, {} pending at the sender, none acknowledged without \
                 being stored",
                audit.held, audit.pending
            )
        } else {
            format!(
                "delivered at the sender but not held: {}",
                audit.acked_not_held.join(", ")
            )
        },
    );
    ctx.check(
        &format!("{phase}_sender_keeps_jobs"),
        &["INV-08"],
        audit.dropped.is_empty() && audit.pending > 0,
        if audit.dropped.is_empty() {
            format!(
                "{} job(s) still pending for what did not fit",
                audit.pending
            )
        } else {
            format!(
                "jobs gone for unstored segments: {}",
                audit.dropped.join(", ")
            )
        },
    );
    let data = fleet.node(RECEIVER).data_dir.clone();
    let left = look::tmp_drains(&data, Duration::from_millis(TMP_DRAIN_MS));
    ctx.check(
        &format!("{phase}_no_temp_file_left"),
        &["INV-23"],
        left.is_none(),
        match &left {
            None => "the receiver's tmp/ was seen empty between attempts".to_owned(),
            Some(files) => format!(
                "tmp/ never empty for {TMP_DRAIN_MS} ms: {}",
                files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    );
    let running = matches!(fleet.exited(RECEIVER), Ok(None)) && fleet.node(RECEIVER).running();
    let answers = running && fleet.try_json(RECEIVER, &["status"]).is_ok();
    ctx.check(
        &format!("{phase}_receiver_still_runs"),
        &["INV-23"],
        answers,
        if answers {
            "the receiver runs and answers".to_owned()
        } else {
            format!(
                "the receiver stopped or does not answer:\n{}",
                fleet.log_tails(5)
            )
        },
    );
}

/// A file system's room taken by another writer while an ingest was being written.
struct RoomTaken {
    /// The ingest's temp file.
    part: PathBuf,
    /// Bytes it held when its writer was paused.
    written: u64,
    /// Bytes the other writer took.
    filler: u64,
}

/// Waits (through `watch`) for an ingest's temp file to be created on node `at`, pauses the
/// daemon at once (SIGSTOP) so that its write is surely still going on, takes the file
/// system's room with a filler, and resumes it (SIGCONT): the room the ingest was granted is
/// gone while it writes. `None` if no ingest started within [`PART_WAIT_MS`].
fn take_room_mid_ingest(
    fleet: &Fleet,
    at: usize,
    watch: &host::CreateWatch,
    want: impl Fn(&str) -> bool,
) -> anyhow::Result<Option<RoomTaken>> {
    let Some(part) = watch.wait(Duration::from_millis(PART_WAIT_MS), want)? else {
        return Ok(None);
    };
    fleet.signal(at, Signal::STOP)?;
    let data = &fleet.node(at).data_dir;
    let written = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let filled = host::fill(data, FILLER, 0);
    fleet.signal(at, Signal::CONT)?;
    Ok(Some(RoomTaken {
        part,
        written,
        filler: filled?,
    }))
}

/// The ceiling's checks on the receiver: on disk and in its own accounting.
fn ceiling_checks(ctx: &mut Ctx, fleet: &Fleet, ceiling: u64) {
    let data = &fleet.node(RECEIVER).data_dir;
    let on_disk: u64 = look::seg_files(data).iter().map(|(_, len)| len).sum();
    let accounted = ["used", "reserved", "partial"]
        .iter()
        .map(|k| look::metric(fleet, RECEIVER, &format!("edged_store_{k}_bytes")))
        .collect::<anyhow::Result<Vec<f64>>>();
    let (ok, detail) = match accounted {
        Ok(v) => {
            let total: f64 = v.iter().sum();
            (
                on_disk <= ceiling && total <= ceiling as f64,
                format!(
                    "{on_disk} bytes of .seg files on disk, {total} used + reserved + partial, \
                     ceiling {ceiling}"
                ),
            )
        }
        Err(e) => (false, format!("no /metrics from the receiver: {e:#}")),
    };
    ctx.check("ceiling_holds", &["INV-06"], ok, detail);
}

fn disk_full_transfer(ctx: &mut Ctx) -> anyhow::Result<World> {
    let mut spec = FleetSpec::new(Topology::Line(2));
    // The host consumes the channel: nothing it holds may be evicted to make room, so the
    // only ways out are a refusal or the disk's own error.
    spec.node_line(RECEIVER, "store", "pinned_channels = [\"fi\"]");
    let mut fleet = ctx.direct_fleet(spec)?;
    let stick = fleet.dir.join("stick-full");
    let mut files = Vec::with_capacity(FULL_SEGMENTS);
    for k in 0..FULL_SEGMENTS {
        files.push(fleet.make_segment(&format!("full-{k}"), FULL_PAYLOAD_BYTES, &stick, &[])?);
    }
    let extra_stick = fleet.dir.join("stick-extra");
    let extra = fleet.make_segment("full-x", FULL_PAYLOAD_BYTES, &extra_stick, &[])?;
    let seg_len = file_len(&files[0].0)?;
    let all_len: u64 = files
        .iter()
        .map(|(f, _)| file_len(f))
        .sum::<anyhow::Result<u64>>()?;
    // Every segment of the workload fits under the ceiling; one more is one byte too many.
    let ceiling = all_len + file_len(&extra.0)? - 1;
    let receiver = fleet.node(RECEIVER);
    look::set_config_value(&receiver.config, "ceiling_bytes", &ceiling.to_string())?;
    let small = round_up(FULL_FIT * seg_len + FULL_SLACK_BYTES, PAGE_BYTES);
    let data = receiver.data_dir.clone();
    let receiver_id = receiver.id.clone();
    let mut tmpfs = Tmpfs::mount(&data, small)?;
    ctx.note(format!(
        "{receiver_id}: data dir on a tmpfs of {small} bytes, ceiling {ceiling} bytes \
         (segments of {seg_len} bytes)"
    ));
    fleet.start_all()?;
    let mut world = World::new(fleet);

    // The disk fills up as segments arrive.
    let v = world
        .fleet
        .try_json(SENDER, &["import", &stick.to_string_lossy()])?;
    let by = format!("import on {}", world.fleet.node(SENDER).id);
    let acked = acked_by_import(&v, &files, &by)?;
    ctx.check(
        "workload_ran",
        &[],
        acked.len() == FULL_SEGMENTS,
        format!("{} of {FULL_SEGMENTS} imported on the sender", acked.len()),
    );
    let full = look::wait(&world.fleet, Duration::from_millis(FULL_WAIT_MS), |f| {
        host::free_bytes(&data).is_ok_and(|free| free < seg_len)
            && look::jobs_to(f, SENDER, &receiver_id).is_ok_and(|jobs| {
                jobs.values()
                    .any(|j| j.state == "pending" && j.last_error.is_some())
            })
    });
    if full {
        let free = host::free_bytes(&data)?;
        let stored = look::seg_files(&data).len();
        ctx.fault(
            "disk.full",
            &receiver_id,
            format!(
                "tmpfs of {small} bytes full: {free} bytes free, {stored} segment(s) stored, \
                 the sender's next attempt failed"
            ),
        );
        full_disk_checks(ctx, &mut world.fleet, &acked, "full");
    } else {
        ctx.unknown(
            names::FAULTS_FIRED,
            &[],
            format!(
                "the receiver's disk did not fill within {FULL_WAIT_MS} ms:\n{}",
                world.fleet.log_tails(5)
            ),
        );
    }

    // Room again, then another writer takes it while an ingest is being written.
    tmpfs.resize(ceiling + HEAL_SLACK_BYTES)?;
    let internal_before = look::rejected(&world.fleet, RECEIVER, "internal")?;
    let watch = host::CreateWatch::new(&data.join("tmp"))?;
    match take_room_mid_ingest(&world.fleet, RECEIVER, &watch, |n| n.ends_with(".part"))? {
        Some(taken) => {
            ctx.fault(
                "disk.enospc",
                &receiver_id,
                format!(
                    "another writer took the file system's last {} bytes while {} was being \
                     written ({} bytes in; the daemon was paused for the moment it took)",
                    taken.filler,
                    taken.part.display(),
                    taken.written
                ),
            );
            let seen = look::wait(&world.fleet, Duration::from_millis(FULL_WAIT_MS), |f| {
                !look::log_lines(f, RECEIVER, "No space left on device").is_empty()
                    || look::rejected(f, RECEIVER, "internal").is_ok_and(|n| n > internal_before)
            });
            if seen {
                ctx.check(
                    "enospc_seen",
                    &["INV-23"],
                    true,
                    "the ingest in flight failed with ENOSPC (logged, counted as internal)",
                );
            } else {
                ctx.unknown(
                    "enospc_seen",
                    &["INV-23"],
                    "the ingest in flight did not fail with ENOSPC",
                );
            }
            full_disk_checks(ctx, &mut world.fleet, &acked, "enospc");
        }
        None => ctx.unknown(
            "enospc_seen",
            &["INV-23"],
            format!("no ingest in flight on {receiver_id} within {PART_WAIT_MS} ms"),
        ),
    }

    // Heal: the other writer's file goes; everything acknowledged converges.
    let _ = std::fs::remove_file(data.join(FILLER));
    ctx.note(format!(
        "{receiver_id}: the filler is gone, the disk has room"
    ));
    let both = [SENDER, RECEIVER];
    ctx.converge(&world.fleet, &acked, &both, 1, FULL_TRANSFER_MS);
    ctx.record(check::lost(&world.fleet, &acked, &both));

    // One segment more than the ceiling: refused as store full, the sender keeps its job.
    let v = world
        .fleet
        .try_json(SENDER, &["import", &extra_stick.to_string_lossy()])?;
    let extra_acked = acked_by_import(&v, std::slice::from_ref(&extra), &by)?;
    let refused = look::wait(&world.fleet, Duration::from_millis(FULL_WAIT_MS), |f| {
        look::jobs_to(f, SENDER, &receiver_id).is_ok_and(|jobs| {
            jobs.get(&extra.1).is_some_and(|j| {
                j.state == "pending"
                    && j.last_error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("store_full"))
            })
        })
    });
    let held_extra = look::listed(&world.fleet, RECEIVER)?.contains(&extra.1)
        || look::seg_files(&data)
            .iter()
            .any(|(p, _)| p.to_string_lossy().contains(&extra.1));
    ctx.check(
        "over_ceiling_refused_store_full",
        &["INV-06", "INV-08"],
        extra_acked.len() == 1 && refused && !held_extra,
        if held_extra {
            "the receiver stored a segment one byte over its ceiling".to_owned()
        } else if refused {
            "the segment one byte over the ceiling was refused as store_full; the sender's job \
             stays pending"
                .to_owned()
        } else {
            format!(
                "no store_full refusal seen at the sender within {FULL_WAIT_MS} ms:\n{}",
                world.fleet.log_tails(5)
            )
        },
    );
    ceiling_checks(ctx, &world.fleet, ceiling);

    // The receiver stops before its file system goes; the runner's checks of running nodes
    // would not see it, so they are taken here first.
    stop_on_small_disk(ctx, &mut world, RECEIVER, "receiver_stops_cleanly", tmpfs)?;
    Ok(world)
}

/// Segments on the stick of `disk-full-import`, in the order the import reads them.
const IMPORT_SEGMENTS: usize = 6;
/// The file of that stick whose ingest loses its room mid-write: the first one the small disk
/// does not take, made larger so that its write lasts.
const IMPORT_ENOSPC_AT: usize = FULL_FIT as usize;
/// Payload of that file.
const IMPORT_ENOSPC_PAYLOAD_BYTES: u64 = 8 << 20;
/// Size of the importer's file system once grown: far more than the stick.
const IMPORT_GROWN_BYTES: u64 = 64 << 20;

/// Whether an import's refusal says the store had no room: retryable (the same file imports
/// once there is room).
fn no_room(reason: &str) -> bool {
    reason.starts_with("store full") || reason.contains("No space left on device")
}

/// The checks after one import round on the node with the small disk: every file reported,
/// only what was acknowledged listed, counted and on disk, no temp file, the node runs.
fn import_round_checks(
    ctx: &mut Ctx,
    fleet: &mut Fleet,
    at: usize,
    round: &str,
    run: &look::ImportRun,
    acknowledged: &BTreeSet<String>,
    files: &[(PathBuf, String)],
) {
    let names: Vec<String> = files
        .iter()
        .map(|(f, _)| {
            f.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut bad = Vec::new();
    let mut refused = 0;
    for name in &names {
        match run.line(name) {
            None => bad.push(format!(
                "{name}: no line (import said: {})",
                run.stderr.lines().last().unwrap_or("nothing")
            )),
            Some(l) if matches!(l.status.as_str(), "imported" | "already_present") => {}
            Some(l)
                if matches!(l.status.as_str(), "rejected" | "store_full")
                    && l.reason.as_deref().is_some_and(no_room) =>
            {
                refused += 1
            }
            Some(l) => bad.push(format!("{name}: {} {:?}", l.status, l.reason)),
        }
    }
    ctx.check(
        &format!("{round}_every_file_reported"),
        &["INV-08", "INV-23"],
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "{} acknowledged, {refused} refused for lack of room (exit code {:?})",
                names.len() - refused,
                run.code
            )
        } else {
            bad.join("; ")
        },
    );
    let data = fleet.node(at).data_dir.clone();
    let listed = look::listed(fleet, at).unwrap_or_default();
    let on_disk = look::seg_files(&data);
    let disk_bytes: u64 = on_disk.iter().map(|(_, len)| len).sum();
    let used = look::metric(fleet, at, "edged_store_used_bytes").unwrap_or(-1.0);
    let partial = look::metric(fleet, at, "edged_store_partial_bytes").unwrap_or(-1.0)
        + look::metric(fleet, at, "edged_store_reserved_bytes").unwrap_or(-1.0);
    let intact = files
        .iter()
        .filter(|(_, id)| acknowledged.contains(id))
        .all(|(f, id)| {
            Acked::of_file(id, f, "import").is_ok_and(|a| look::file_matches(fleet, at, &a))
        });
    let ok = &listed == acknowledged
        && on_disk.len() == listed.len()
        && used == disk_bytes as f64
        && partial == 0.0
        && intact;
    ctx.check(
        &format!("{round}_nothing_partial_visible"),
        &["INV-04"],
        ok,
        format!(
            "{} listed ({} acknowledged), {} .seg file(s) of {disk_bytes} bytes on disk, \
             {used} bytes counted as stored, {partial} reserved or partial, acknowledged \
             copies intact: {intact}",
            listed.len(),
            acknowledged.len(),
            on_disk.len()
        ),
    );
    let left = look::tmp_drains(&data, Duration::from_millis(TMP_DRAIN_MS));
    ctx.check(
        &format!("{round}_no_temp_file_left"),
        &["INV-23"],
        left.is_none(),
        match &left {
            None => "tmp/ is empty once the import answered".to_owned(),
            Some(files) => format!("left in tmp/: {files:?}"),
        },
    );
    let answers = matches!(fleet.exited(at), Ok(None)) && fleet.try_json(at, &["status"]).is_ok();
    ctx.check(
        &format!("{round}_node_still_runs"),
        &["INV-23"],
        answers,
        if answers {
            "the importing node runs and answers".to_owned()
        } else {
            fleet.log_tails(5)
        },
    );
}

fn disk_full_import(ctx: &mut Ctx) -> anyhow::Result<World> {
    const IMPORTER: usize = 0;
    let mut spec = FleetSpec::new(Topology::Line(2));
    spec.node_line(IMPORTER, "store", "pinned_channels = [\"fi\"]");
    let mut fleet = ctx.direct_fleet(spec)?;
    let stick = fleet.dir.join("stick-import");
    let mut files = Vec::with_capacity(IMPORT_SEGMENTS);
    for k in 0..IMPORT_SEGMENTS {
        let len = if k == IMPORT_ENOSPC_AT {
            IMPORT_ENOSPC_PAYLOAD_BYTES
        } else {
            FULL_PAYLOAD_BYTES
        };
        files.push(fleet.make_segment(&format!("imp-{k}"), len, &stick, &[])?);
    }
    let seg_len = file_len(&files[0].0)?;
    let importer = fleet.node(IMPORTER);
    let importer_id = importer.id.clone();
    let data = importer.data_dir.clone();
    let small = round_up(FULL_FIT * seg_len + FULL_SLACK_BYTES, PAGE_BYTES);
    let mut tmpfs = Tmpfs::mount(&data, small)?;
    fleet.start_all()?;
    let mut world = World::new(fleet);

    // Round 1: the stick is larger than the disk.
    let run = look::import(&world.fleet, IMPORTER, &stick)?;
    let mut acknowledged = run.acknowledged();
    // Not fitting under the ceiling is `store_full`; ENOSPC from the disk is `rejected`.
    let refused = run
        .lines
        .iter()
        .filter(|l| matches!(l.status.as_str(), "rejected" | "store_full"))
        .count();
    if refused > 0 && !acknowledged.is_empty() {
        ctx.fault(
            "disk.full",
            &importer_id,
            format!(
                "tmpfs of {small} bytes filled by the import: {} stored, {refused} refused",
                acknowledged.len()
            ),
        );
    } else {
        ctx.unknown(
            names::FAULTS_FIRED,
            &[],
            format!(
                "the import did not fill the disk: {} acknowledged, {refused} refused",
                acknowledged.len()
            ),
        );
    }
    import_round_checks(
        ctx,
        &mut world.fleet,
        IMPORTER,
        "full",
        &run,
        &acknowledged,
        &files,
    );

    // Round 2: room again, taken by another writer while the first file it lacks is written.
    tmpfs.resize(IMPORT_GROWN_BYTES)?;
    let target = files[IMPORT_ENOSPC_AT].1.clone();
    let part_name = format!("{target}.part");
    let watch = host::CreateWatch::new(&data.join("tmp"))?;
    let cmd = world
        .fleet
        .command(IMPORTER, &["import", "--json", &stick.to_string_lossy()]);
    let importing = std::thread::spawn(move || look::run_import(cmd));
    let taken = take_room_mid_ingest(&world.fleet, IMPORTER, &watch, |n| n == part_name);
    let run = importing
        .join()
        .map_err(|_| anyhow::anyhow!("the import thread panicked"))??;
    acknowledged.extend(run.acknowledged());
    let target_line = files[IMPORT_ENOSPC_AT]
        .0
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let enospc = run
        .line(&target_line)
        .and_then(|l| l.reason.as_deref())
        .is_some_and(|r| r.contains("No space left on device"));
    match taken? {
        Some(taken) => {
            ctx.fault(
                "disk.enospc",
                &importer_id,
                format!(
                    "another writer took the last {} bytes while {} was being written ({} \
                     bytes in; the daemon was paused for the moment it took)",
                    taken.filler,
                    taken.part.display(),
                    taken.written
                ),
            );
            if enospc {
                ctx.check(
                    "enospc_seen",
                    &["INV-23"],
                    true,
                    format!("{target_line}: refused with ENOSPC mid-write"),
                );
            } else {
                ctx.unknown(
                    "enospc_seen",
                    &["INV-23"],
                    format!(
                        "{target_line} ended as {:?}, not refused with ENOSPC",
                        run.line(&target_line)
                    ),
                );
            }
        }
        None => ctx.unknown(
            "enospc_seen",
            &["INV-23"],
            format!("no temp file of {target_line} seen within {PART_WAIT_MS} ms"),
        ),
    }
    import_round_checks(
        ctx,
        &mut world.fleet,
        IMPORTER,
        "enospc",
        &run,
        &acknowledged,
        &files,
    );

    // Heal: the other writer's file goes; the same import stores the rest.
    std::fs::remove_file(data.join(FILLER))?;
    let run = look::import(&world.fleet, IMPORTER, &stick)?;
    acknowledged.extend(run.acknowledged());
    let all = acknowledged.len() == IMPORT_SEGMENTS && run.code == Some(0);
    ctx.check(
        "retry_after_heal_stores_the_rest",
        &["INV-08"],
        all,
        format!(
            "{} of {IMPORT_SEGMENTS} acknowledged after the heal (exit code {:?})",
            acknowledged.len(),
            run.code
        ),
    );
    import_round_checks(
        ctx,
        &mut world.fleet,
        IMPORTER,
        "healed",
        &run,
        &acknowledged,
        &files,
    );
    let by = format!("import on {importer_id}");
    let acked: Vec<Acked> = files
        .iter()
        .filter(|(_, id)| acknowledged.contains(id))
        .map(|(f, id)| Acked::of_file(id, f, &by))
        .collect::<anyhow::Result<_>>()?;
    let both = [0, 1];
    ctx.converge(&world.fleet, &acked, &both, 1, FULL_TRANSFER_MS);
    ctx.record(check::lost(&world.fleet, &acked, &both));

    stop_on_small_disk(ctx, &mut world, IMPORTER, "importer_stops_cleanly", tmpfs)?;
    Ok(world)
}

/// Ends a scenario whose node `at` runs on `tmpfs`: the runner's checks of running nodes are
/// taken first (they would not see it once stopped), then it must stop cleanly on SIGTERM
/// (INV-23: a full disk is no reason to die), and its file system goes.
fn stop_on_small_disk(
    ctx: &mut Ctx,
    world: &mut World,
    at: usize,
    check_name: &str,
    tmpfs: Tmpfs,
) -> anyhow::Result<()> {
    ctx.record(check::counters(&world.fleet));
    ctx.record(check::duplicates(&world.fleet));
    let id = world.fleet.node(at).id.clone();
    let stopped = world.fleet.stop(at);
    ctx.check(
        check_name,
        &["INV-23"],
        stopped.is_ok(),
        match &stopped {
            Ok(()) => format!("{id} stopped on SIGTERM with status 0"),
            Err(e) => format!("{e:#}"),
        },
    );
    tmpfs.unmount()
}

/// Segments of the corruption scenarios.
const CORRUPT_SEGMENTS: usize = 6;
/// Payload of each: several stream buffers, so a flipped byte in its second half is read late.
const CORRUPT_PAYLOAD_BYTES: u64 = 512 << 10;
/// Time allowed for the bytes of one corruption workload to move, per hop.
const CORRUPT_TRANSFER_MS: u64 = 1_000;
/// Longest wait for a node to notice a corruption (an attempt to send or export it).
const DETECT_WAIT_MS: u64 = 15_000;
/// Attempts of a relay job in the corruption scenarios: the downstream node is away for a
/// while, and its jobs must still be pending (not dead letters) when it comes. At most
/// `store_full_attempts_max` (48 by default), which must not be below it.
const CORRUPT_ATTEMPTS_MAX: u32 = 40;
/// The node whose files are damaged.
const VICTIM: usize = 1;
/// The node the victim owes every segment to (started after the damage).
const DOWNSTREAM: usize = 2;
/// What the store logs when it quarantines a segment.
const QUARANTINED_LOG: &str = "segment corrupt at rest: quarantined";

/// What was done to one stored segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// A byte in the second half of the payload inverted.
    Payload,
    /// A byte of the publisher's signature inverted.
    Signature,
    /// Cut to half its length.
    Truncated,
    /// Removed.
    Missing,
}

impl Damage {
    fn kind(self) -> &'static str {
        match self {
            Damage::Payload => "disk.corrupt_payload",
            Damage::Signature => "disk.corrupt_signature",
            Damage::Truncated => "disk.truncate",
            Damage::Missing => "disk.remove",
        }
    }

    /// Whether the damaged file keeps its length (only reading it shows the damage, and
    /// quarantine keeps it as evidence).
    fn flipped(self) -> bool {
        matches!(self, Damage::Payload | Damage::Signature)
    }
}

/// One damaged segment: which, how, and the damaged file's hash (the evidence quarantine keeps).
#[derive(Debug, Clone)]
struct Damaged {
    id: String,
    damage: Damage,
    hash_after: Option<[u8; 32]>,
}

/// Damages segment `id`'s stored file on node `at` (from outside: the file in its data dir),
/// and records the fault.
fn damage(
    ctx: &mut Ctx,
    fleet: &Fleet,
    at: usize,
    id: &str,
    damage: Damage,
) -> anyhow::Result<Damaged> {
    let path = fleet.node(at).segment_file(id);
    let layout = host::SegLayout::of(&path)?;
    let detail = match damage {
        Damage::Payload => {
            let k = ctx
                .rng
                .random_range(layout.payload_len() / 2..layout.payload_len());
            let was = host::flip_byte(&path, layout.payload_start + k)?;
            format!(
                "payload byte {k} of {} inverted (was {was:#04x})",
                layout.payload_len()
            )
        }
        Damage::Signature => {
            let k = ctx.rng.random_range(0..host::SIGNATURE_BYTES);
            let was = host::flip_byte(&path, layout.signature_byte(k))?;
            format!("signature byte {k} inverted (was {was:#04x})")
        }
        Damage::Truncated => {
            host::truncate(&path, layout.file_len / 2)?;
            format!(
                "cut from {} to {} bytes",
                layout.file_len,
                layout.file_len / 2
            )
        }
        Damage::Missing => {
            std::fs::remove_file(&path)?;
            "removed".to_owned()
        }
    };
    let hash_after = if damage.flipped() {
        Some(host::hash_file(&path)?.0)
    } else {
        None
    };
    ctx.fault(
        damage.kind(),
        &format!("{} {}", fleet.node(at).id, check::short(id)),
        detail,
    );
    Ok(Damaged {
        id: id.to_owned(),
        damage,
        hash_after,
    })
}

/// Whether node `at` logged a line containing `what` that names segment `id`.
fn logged_for(fleet: &Fleet, at: usize, id: &str, what: &str) -> bool {
    look::log_lines(fleet, at, what)
        .iter()
        .any(|l| l.contains(id))
}

/// Waits until node `at` logged the quarantine of every segment of `damaged`.
fn wait_quarantined(fleet: &Fleet, at: usize, damaged: &[Damaged]) -> bool {
    look::wait(fleet, Duration::from_millis(DETECT_WAIT_MS), |f| {
        damaged
            .iter()
            .all(|d| logged_for(f, at, &d.id, QUARANTINED_LOG))
    })
}

/// `quarantine/` of node `at` keeps every flipped file of `damaged` as it was damaged, and
/// the quarantine of each was logged.
fn quarantine_check(ctx: &mut Ctx, fleet: &Fleet, at: usize, damaged: &[Damaged]) {
    let dir = fleet.node(at).data_dir.join("quarantine");
    let mut bad = Vec::new();
    let mut kept = 0;
    for d in damaged.iter().filter(|d| d.damage.flipped()) {
        let logged = logged_for(fleet, at, &d.id, QUARANTINED_LOG);
        let held = host::hash_file(&dir.join(format!("{}.seg", d.id)))
            .ok()
            .map(|(h, _)| h);
        if logged && held.is_some() && held == d.hash_after {
            kept += 1;
        } else {
            bad.push(format!(
                "{} ({:?}): quarantine logged {logged}, damaged copy kept {}",
                check::short(&d.id),
                d.damage,
                held.is_some() && held == d.hash_after
            ));
        }
    }
    ctx.check(
        "corrupt_copies_quarantined",
        &["INV-24"],
        bad.is_empty() && kept > 0,
        if bad.is_empty() {
            format!("{kept} damaged copies detected, logged and kept as they were in quarantine/")
        } else {
            bad.join("; ")
        },
    );
}

/// Node `at` never completed a transfer of a bad copy: nothing it received was rejected for
/// its signature or length, and a hash mismatch only where it resumed a partial (a sender that
/// finds its copy corrupt at the end of the payload aborts the stream, but the receiver may
/// keep what arrived as a partial; its next resume then fails its hash once, and the next
/// attempt starts from 0). Whether it stored a bad copy is the `lost` check's: byte-identical.
fn never_served_check(ctx: &mut Ctx, fleet: &Fleet, at: usize, from: &str) {
    let reasons = ["bad_signature", "length_mismatch", "hash_mismatch"];
    let counts: anyhow::Result<Vec<f64>> = reasons
        .iter()
        .map(|r| look::rejected(fleet, at, r))
        .collect();
    let resumed = look::log_lines(fleet, at, "resuming partial ingest").len() as f64;
    let aborted = look::log_lines(fleet, at, "sender aborted the transfer").len();
    let id = fleet.node(at).id.clone();
    let (ok, detail) = match counts {
        Ok(c) => (
            c[0] == 0.0 && c[1] == 0.0 && c[2] <= resumed,
            format!(
                "{id} rejected from {from}: bad_signature {}, length_mismatch {}, hash_mismatch \
                 {} (after {resumed} resumed partial(s); {aborted} transfer(s) its sender \
                 aborted as corrupt)",
                c[0], c[1], c[2]
            ),
        ),
        Err(e) => (false, format!("no /metrics from {id}: {e:#}")),
    };
    ctx.check("corrupt_never_served", &["INV-02", "INV-24"], ok, detail);
}

/// A line of 3 whose first two nodes hold the workload; the third is not started yet.
fn corrupt_fleet(ctx: &mut Ctx) -> anyhow::Result<(World, Vec<Acked>)> {
    let mut spec = FleetSpec::new(Topology::Line(3));
    spec.tuning.attempts_max = CORRUPT_ATTEMPTS_MAX;
    let mut fleet = ctx.direct_fleet(spec)?;
    fleet.start(0)?;
    fleet.start(VICTIM)?;
    let world = World::new(fleet);
    let acked = super::basic::import_segments(
        ctx,
        &world,
        0,
        "rot",
        CORRUPT_SEGMENTS,
        CORRUPT_PAYLOAD_BYTES,
    )?;
    ctx.check(
        "workload_ran",
        &[],
        acked.len() == CORRUPT_SEGMENTS,
        format!("{} of {CORRUPT_SEGMENTS} imported", acked.len()),
    );
    let bound = world
        .fleet
        .spec
        .tuning
        .convergence_bound_ms(1, CORRUPT_TRANSFER_MS);
    if check::converge(
        &world.fleet,
        &acked,
        &[0, VICTIM],
        Duration::from_millis(bound),
    )
    .is_none()
    {
        anyhow::bail!(
            "the victim never held the workload:\n{}",
            world.fleet.log_tails(5)
        );
    }
    Ok((world, acked))
}

fn corrupt_at_rest_stopped(ctx: &mut Ctx) -> anyhow::Result<World> {
    let (mut world, acked) = corrupt_fleet(ctx)?;
    world.fleet.stop(VICTIM)?;
    let plan = [
        Damage::Payload,
        Damage::Signature,
        Damage::Truncated,
        Damage::Missing,
    ];
    let mut damaged = Vec::new();
    for (a, d) in acked.iter().zip(plan) {
        damaged.push(damage(ctx, &world.fleet, VICTIM, &a.id, d)?);
    }
    world.fleet.start(VICTIM)?;
    world.fleet.start(DOWNSTREAM)?;

    // Recovery: the cut and the missing file lose their rows (to be fetched again).
    let bad: Vec<String> = damaged
        .iter()
        .filter(|d| !d.damage.flipped())
        .filter(|d| !logged_for(&world.fleet, VICTIM, &d.id, "index row dropped"))
        .map(|d| format!("{} ({:?})", check::short(&d.id), d.damage))
        .collect();
    ctx.check(
        "recovery_drops_cut_and_missing",
        &["INV-05"],
        bad.is_empty(),
        if bad.is_empty() {
            "recovery dropped the rows of the cut and the missing file".to_owned()
        } else {
            format!("no `index row dropped` logged for {}", bad.join(", "))
        },
    );
    // Owing them to the downstream node, the victim opens the flipped ones: found there.
    let flipped: Vec<Damaged> = damaged
        .iter()
        .filter(|d| d.damage.flipped())
        .cloned()
        .collect();
    if !wait_quarantined(&world.fleet, VICTIM, &flipped) {
        ctx.unknown(
            "corruption_detected",
            &["INV-24"],
            format!("the victim did not quarantine the flipped copies within {DETECT_WAIT_MS} ms"),
        );
    }
    quarantine_check(ctx, &world.fleet, VICTIM, &damaged);
    let all = [0, VICTIM, DOWNSTREAM];
    let hops = world.fleet.spec.topology.diameter();
    ctx.converge(&world.fleet, &acked, &all, hops, CORRUPT_TRANSFER_MS);
    ctx.record(check::lost(&world.fleet, &acked, &all));
    let victim_id = world.fleet.node(VICTIM).id.clone();
    never_served_check(ctx, &world.fleet, DOWNSTREAM, &victim_id);
    Ok(world)
}

/// Export directory of `corrupt-at-rest-running`.
const EXPORT_DIR: &str = "export";

/// `edged export --json --to DIR IDS…` on node `at`: its exit code and its report.
fn export_ids(
    fleet: &Fleet,
    at: usize,
    dir: &Path,
    ids: &[&str],
) -> anyhow::Result<(Option<i32>, Vec<serde_json::Value>)> {
    let to = dir.to_string_lossy().into_owned();
    let mut args = vec!["export", "--json", "--to", to.as_str()];
    args.extend_from_slice(ids);
    let out = fleet.cli(at, &args)?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "export report is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out.status.code(), v.as_array().cloned().unwrap_or_default()))
}

/// Whether `dir/<id>.seg` is `a`'s file, byte for byte.
fn exported_intact(dir: &Path, a: &Acked) -> bool {
    host::hash_file(&dir.join(format!("{}.seg", a.id)))
        .is_ok_and(|(h, n)| h == a.file_hash && n == a.file_len)
}

fn corrupt_at_rest_running(ctx: &mut Ctx) -> anyhow::Result<World> {
    let (mut world, acked) = corrupt_fleet(ctx)?;
    // 0, 1: found by an export; 2, 3, 4: found by sending; 5: intact.
    let plan = [
        Damage::Payload,
        Damage::Signature,
        Damage::Truncated,
        Damage::Missing,
        Damage::Payload,
    ];
    let mut damaged = Vec::new();
    for (a, d) in acked.iter().zip(plan) {
        damaged.push(damage(ctx, &world.fleet, VICTIM, &a.id, d)?);
    }
    let intact = &acked[plan.len()];

    // Exports of the two flipped segments and the intact one, one export each (an export that
    // meets a corrupt copy is the subject of `export-past-corrupt-copy`).
    let dir = world.fleet.dir.join(EXPORT_DIR);
    std::fs::create_dir_all(&dir)?;
    let ids = [
        acked[0].id.as_str(),
        acked[1].id.as_str(),
        intact.id.as_str(),
    ];
    let mut results = Vec::new();
    for id in ids {
        let (code, lines) = export_ids(&world.fleet, VICTIM, &dir, &[id])?;
        let line = lines.iter().find(|l| l["id"] == id).cloned();
        let field = |k: &str| {
            line.as_ref()
                .and_then(|l| l[k].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        results.push((code, field("status"), field("error")));
    }
    let mut bad = Vec::new();
    for (k, d) in damaged[..2].iter().enumerate() {
        let (code, status, error) = &results[k];
        let own = error.contains(&d.id) || error.contains("does not verify");
        if *code != Some(1)
            || status != "FAILED"
            || !own
            || dir.join(format!("{}.seg", d.id)).exists()
        {
            bad.push(format!(
                "{:?} copy: exit code {code:?}, {status} ({error})",
                d.damage
            ));
        }
    }
    let intact_written =
        results[2].0 == Some(0) && results[2].1 == "written" && exported_intact(&dir, intact);
    if !intact_written {
        bad.push(format!("intact copy: {:?}", results[2]));
    }
    let others: Vec<String> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| *n != format!("{}.seg", intact.id))
        .collect();
    if !others.is_empty() {
        bad.push(format!("other files in the export directory: {others:?}"));
    }
    ctx.check(
        "export_refuses_corrupt_copies",
        &["INV-19", "INV-24"],
        bad.is_empty(),
        if bad.is_empty() {
            "the payload- and signature-flipped copies were refused with their own reason and \
             nothing written for them; the intact one was written byte-identical"
                .to_owned()
        } else {
            bad.join("; ")
        },
    );
    let by_export = wait_quarantined(&world.fleet, VICTIM, &damaged[..2]);
    ctx.check(
        "export_finds_corruption",
        &["INV-24"],
        by_export,
        if by_export {
            "the exports quarantined both flipped copies".to_owned()
        } else {
            "the exports did not quarantine the flipped copies".to_owned()
        },
    );

    // Sending to the downstream node finds the rest.
    world.fleet.start(DOWNSTREAM)?;
    let found = wait_quarantined(&world.fleet, VICTIM, &damaged[2..]);
    ctx.check(
        "sending_finds_corruption",
        &["INV-24"],
        found,
        if found {
            "sending to the downstream node quarantined the cut, the missing and the flipped copy"
                .to_owned()
        } else {
            format!(
                "not every damaged copy was quarantined within {DETECT_WAIT_MS} ms:\n{}",
                world.fleet.log_tails(5)
            )
        },
    );
    quarantine_check(ctx, &world.fleet, VICTIM, &damaged);
    let all = [0, VICTIM, DOWNSTREAM];
    let hops = world.fleet.spec.topology.diameter();
    ctx.converge(&world.fleet, &acked, &all, hops, CORRUPT_TRANSFER_MS);
    ctx.record(check::lost(&world.fleet, &acked, &all));
    let victim_id = world.fleet.node(VICTIM).id.clone();
    never_served_check(ctx, &world.fleet, DOWNSTREAM, &victim_id);

    // Fetched again: the same export now writes every one, byte-identical.
    let (code, _) = export_ids(&world.fleet, VICTIM, &dir, &ids)?;
    let good = ids.iter().all(|id| {
        acked
            .iter()
            .find(|a| a.id == *id)
            .is_some_and(|a| exported_intact(&dir, a))
    });
    ctx.check(
        "export_after_refetch",
        &["INV-02", "INV-24"],
        good && code == Some(0),
        format!("exit code {code:?}; every exported copy byte-identical to the original: {good}"),
    );
    Ok(world)
}

/// Segments of `export-past-corrupt-copy`: one damaged, the others after it in one export.
const PAST_SEGMENTS: usize = 3;

fn export_past_corrupt_copy(ctx: &mut Ctx) -> anyhow::Result<World> {
    let mut fleet = ctx.direct_fleet(FleetSpec::new(Topology::Line(2)))?;
    fleet.start_all()?;
    let world = World::new(fleet);
    let acked = super::basic::import_segments(
        ctx,
        &world,
        0,
        "past",
        PAST_SEGMENTS,
        CORRUPT_PAYLOAD_BYTES,
    )?;
    ctx.check(
        "workload_ran",
        &[],
        acked.len() == PAST_SEGMENTS,
        format!("{} of {PAST_SEGMENTS} imported", acked.len()),
    );
    let both = [0, VICTIM];
    let bound = world
        .fleet
        .spec
        .tuning
        .convergence_bound_ms(1, CORRUPT_TRANSFER_MS);
    if check::converge(&world.fleet, &acked, &both, Duration::from_millis(bound)).is_none() {
        anyhow::bail!(
            "the workload never reached node-2:\n{}",
            world.fleet.log_tails(5)
        );
    }
    let damaged = damage(ctx, &world.fleet, VICTIM, &acked[0].id, Damage::Payload)?;
    // The damaged one first: the daemon finds it only at the end of its stream.
    let dir = world.fleet.dir.join(EXPORT_DIR);
    std::fs::create_dir_all(&dir)?;
    let ids: Vec<&str> = acked.iter().map(|a| a.id.as_str()).collect();
    let (code, lines) = export_ids(&world.fleet, VICTIM, &dir, &ids)?;
    let field = |id: &str, k: &str| {
        lines
            .iter()
            .find(|l| l["id"] == id)
            .and_then(|l| l[k].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let error = field(&damaged.id, "error");
    let refused = field(&damaged.id, "status") == "FAILED"
        && error.contains("does not verify")
        && !dir.join(format!("{}.seg", damaged.id)).exists();
    ctx.check(
        "corrupt_copy_refused",
        &["INV-24"],
        refused && code == Some(1),
        format!(
            "exit code {code:?}; the damaged copy: {} ({error})",
            field(&damaged.id, "status")
        ),
    );
    let after: Vec<String> = acked[1..]
        .iter()
        .filter(|a| !(field(&a.id, "status") == "written" && exported_intact(&dir, a)))
        .map(|a| {
            format!(
                "{}: {} ({})",
                check::short(&a.id),
                field(&a.id, "status"),
                field(&a.id, "error")
            )
        })
        .collect();
    ctx.check(
        "export_goes_on_past_a_corrupt_copy",
        &["INV-24"],
        after.is_empty(),
        if after.is_empty() {
            format!(
                "the {} intact segment(s) after it were written byte-identical",
                acked.len() - 1
            )
        } else {
            format!(
                "intact segments after the damaged one not exported: {}",
                after.join("; ")
            )
        },
    );
    let quarantined = wait_quarantined(&world.fleet, VICTIM, std::slice::from_ref(&damaged));
    ctx.check(
        "export_finds_corruption",
        &["INV-24"],
        quarantined,
        if quarantined {
            "the export quarantined the damaged copy".to_owned()
        } else {
            "the export did not quarantine the damaged copy".to_owned()
        },
    );
    quarantine_check(ctx, &world.fleet, VICTIM, std::slice::from_ref(&damaged));
    ctx.converge(&world.fleet, &acked, &both, 1, CORRUPT_TRANSFER_MS);
    ctx.record(check::lost(&world.fleet, &acked, &both));
    let (code, _) = export_ids(&world.fleet, VICTIM, &dir, &ids)?;
    let good = acked.iter().all(|a| exported_intact(&dir, a));
    ctx.check(
        "export_after_refetch",
        &["INV-02", "INV-24"],
        good && code == Some(0),
        format!("exit code {code:?}; every exported copy byte-identical to the original: {good}"),
    );
    Ok(world)
}

/// Longest a start on a damaged database may take to fail (it must fail, not serve).
const DB_START_WAIT_MS: u64 = 10_000;
/// Bytes of garbage written over the start of the database file (its header).
const DB_GARBAGE_BYTES: usize = 512;
/// Exit code of `edged` for a storage failure (edged/src/exit.rs).
const EXIT_STORAGE: i32 = 5;
/// Segments imported before the database is damaged.
const DB_SEGMENTS: usize = 3;

/// Segments imported while the node with the damaged database is down.
const DB_MORE_SEGMENTS: usize = 2;

/// How the database file is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DbDamage {
    /// Cut to half its length.
    Truncated,
    /// Its first bytes (magic and header) overwritten with random bytes.
    Garbage,
    /// Removed, while the segment files stay.
    Removed,
}

/// One start of node `at` on its damaged database: it must fail with the storage exit code
/// and a message naming the database, and leave the data dir exactly as it found it.
fn start_on_damaged_db(
    ctx: &mut Ctx,
    fleet: &Fleet,
    at: usize,
    how: DbDamage,
) -> anyhow::Result<()> {
    let node = fleet.node(at);
    let db = node.data_dir.join("edge.redb");
    let before = host::snapshot(&node.data_dir)?;
    let cmd = fleet.command(at, &["run"]);
    let outcome = crate::proc::run_bounded(cmd, Duration::from_millis(DB_START_WAIT_MS));
    let after = host::snapshot(&node.data_dir)?;
    let name = match how {
        DbDamage::Truncated => "truncated_db_refused",
        DbDamage::Garbage => "garbage_db_refused",
        DbDamage::Removed => "missing_db_refused",
    };
    let (ok, detail) = match outcome {
        Err(e) => (
            false,
            format!(
                "the node started on a damaged database (killed after {DB_START_WAIT_MS} ms): {e:#}"
            ),
        ),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let text = stderr.trim().lines().last().unwrap_or_default().to_owned();
            let names_it = text.contains(&db.display().to_string()) || text.contains("edge.redb");
            let says = match how {
                DbDamage::Removed => text.contains("missing") || text.contains("index"),
                _ => text.contains("corrupt"),
            };
            (
                out.status.code() == Some(EXIT_STORAGE) && names_it && says,
                format!("exit code {:?}: {text}", out.status.code()),
            )
        }
    };
    ctx.check(name, &["INV-24"], ok, detail);
    let changes = host::diff(&before, &after, &[], 5);
    ctx.check(
        &format!("{name}_left_as_it_was"),
        &["INV-24"],
        changes.is_empty(),
        if changes.is_empty() {
            format!(
                "the data dir ({} entries) is exactly as it was",
                after.len()
            )
        } else {
            format!(
                "the failed start changed the data dir: {}",
                changes.join("; ")
            )
        },
    );
    Ok(())
}

fn corrupt_db(ctx: &mut Ctx) -> anyhow::Result<World> {
    const DOWN: usize = 1;
    let topology = Topology::Mesh(3);
    let mut fleet = ctx.direct_fleet(FleetSpec::new(topology))?;
    fleet.start_all()?;
    let mut world = World::new(fleet);
    let mut acked =
        super::basic::import_segments(ctx, &world, 0, "db", DB_SEGMENTS, CORRUPT_PAYLOAD_BYTES)?;
    ctx.check(
        "workload_ran",
        &[],
        acked.len() == DB_SEGMENTS,
        format!("{} of {DB_SEGMENTS} imported", acked.len()),
    );
    let all = [0, DOWN, 2];
    let bound = world
        .fleet
        .spec
        .tuning
        .convergence_bound_ms(topology.diameter(), CORRUPT_TRANSFER_MS);
    if check::converge(&world.fleet, &acked, &all, Duration::from_millis(bound)).is_none() {
        anyhow::bail!(
            "the workload never converged:\n{}",
            world.fleet.log_tails(5)
        );
    }
    world.fleet.stop(DOWN)?;
    let node_id = world.fleet.node(DOWN).id.clone();
    let db = world.fleet.node(DOWN).data_dir.join("edge.redb");
    // The operator's backup, taken while the node was stopped cleanly.
    let original = std::fs::read(&db)?;

    host::truncate(&db, original.len() as u64 / 2)?;
    ctx.fault(
        "disk.db_truncate",
        &node_id,
        format!(
            "edge.redb cut from {} to {} bytes",
            original.len(),
            original.len() / 2
        ),
    );
    start_on_damaged_db(ctx, &world.fleet, DOWN, DbDamage::Truncated)?;

    std::fs::write(&db, &original)?;
    let mut garbage = vec![0u8; DB_GARBAGE_BYTES];
    ctx.rng.fill(&mut garbage[..]);
    host::overwrite(&db, 0, &garbage)?;
    ctx.fault(
        "disk.db_garbage",
        &node_id,
        format!("the first {DB_GARBAGE_BYTES} bytes of edge.redb overwritten with random bytes"),
    );
    start_on_damaged_db(ctx, &world.fleet, DOWN, DbDamage::Garbage)?;

    std::fs::remove_file(&db)?;
    ctx.fault(
        "disk.db_remove",
        &node_id,
        "edge.redb removed, segment files kept",
    );
    start_on_damaged_db(ctx, &world.fleet, DOWN, DbDamage::Removed)?;

    // The rest of the fleet goes on without it.
    let more = super::basic::import_segments(
        ctx,
        &world,
        0,
        "db-more",
        DB_MORE_SEGMENTS,
        CORRUPT_PAYLOAD_BYTES,
    )?;
    let others = [0, 2];
    let went_on = check::converge(&world.fleet, &more, &others, Duration::from_millis(bound));
    ctx.check(
        "rest_of_fleet_goes_on",
        &["INV-15"],
        more.len() == DB_MORE_SEGMENTS && went_on.is_some(),
        match went_on {
            Some(d) => format!(
                "the other nodes relayed {DB_MORE_SEGMENTS} new segments in {} ms",
                d.as_millis()
            ),
            None => format!("the other nodes did not relay the new segments within {bound} ms"),
        },
    );
    acked.extend(more);

    // Heal: the operator restores the backup; the node starts and catches up.
    std::fs::write(&db, &original)?;
    ctx.note(format!("{node_id}: edge.redb restored from the backup"));
    world.fleet.start(DOWN)?;
    ctx.converge(
        &world.fleet,
        &acked,
        &all,
        topology.diameter(),
        CORRUPT_TRANSFER_MS,
    );
    ctx.record(check::lost(&world.fleet, &acked, &all));
    Ok(world)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_pages() {
        assert_eq!(round_up(1, PAGE_BYTES), PAGE_BYTES);
        assert_eq!(round_up(PAGE_BYTES, PAGE_BYTES), PAGE_BYTES);
        assert_eq!(round_up(PAGE_BYTES + 1, PAGE_BYTES), 2 * PAGE_BYTES);
    }

    #[test]
    fn only_unique_names() {
        let names: std::collections::BTreeSet<&str> = scenarios().iter().map(|s| s.name).collect();
        assert_eq!(names.len(), scenarios().len());
    }
}
