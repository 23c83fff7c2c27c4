//! The evil peer's scenarios: a peer holding a valid certificate of the fleet, listed by its
//! victim, speaks the wire protocol badly on purpose ([`crate::evil`]).
//!
//! Every scenario runs a line of two real daemons — node-1, the victim, which also lists the
//! evil peer, and node-2, an honest peer whose transfers to the victim must go on meanwhile —
//! and looks only from outside: what the victim answered the evil peer on the wire, the
//! victim's `/metrics`, its `--json` listings, its data directory and its log. Each ends with
//! the checks all of them share: the victim still runs (the runner adds: no panic, counters
//! reconcile), and what it logged about the evil peer stays within its log budget.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use net::RejectReason;
use net::quinn::Connection;
use net::wire::{Msg, StreamCode, encode_frame};
use rand::RngCore;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use store::keys::PublisherSecret;
use tokio::runtime::Runtime;

use super::basic::{acked_by_import, make_stick};
use crate::check::{self, Acked};
use crate::evil::craft::{self, Crafted};
use crate::evil::logs::{self, Budget, Party};
use crate::evil::serve::{Mode, Observed};
use crate::evil::{
    self, Dialer, EVIL_ID, EVIL_IP_LAST, EvilPeer, EvilSocket, Offered, STRANGER_IP_LAST,
    StreamEnd, Trickled,
};
use crate::fleet::{CLI_TIMEOUT_MS, Fleet, FleetSpec, Topology};
use crate::results::Build;
use crate::scenario::{Ctx, Scenario, World};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "evil-bad-frames",
            summary: "An evil peer with a valid certificate sends oversized length prefixes, \
                      garbage, empty, truncated and trailing-byte frames, unexpected first \
                      frames and manifests that do not decode: each offending stream alone is \
                      reset (or the offer rejected as malformed), the connection goes on, the \
                      honest peer's transfers go on, nothing is stored.",
            invariants: &["INV-15", "INV-17", "INV-18", "INV-26"],
            quick: true,
            faults: true,
            build: Build::Shipped,
            run: bad_frames,
        },
        Scenario {
            name: "evil-bad-signatures",
            summary: "An evil peer pushes, and serves to the victim's catch-up, segments whose \
                      signature does not verify, from an untrusted publisher, and whose manifest \
                      was changed after signing: each refused with its reason, counted by \
                      reason on /metrics, no file, not listed, no jobs.",
            invariants: &["INV-01", "INV-11", "INV-15", "INV-18", "INV-26"],
            quick: true,
            faults: true,
            build: Build::Shipped,
            run: bad_signatures,
        },
        Scenario {
            name: "evil-bad-payloads",
            summary: "An evil peer offers genuine manifests and sends a payload that does not \
                      match the hash, more bytes than declared and fewer: refused, nothing \
                      stored, counters reconcile; the honest copies then arrive byte-identical.",
            invariants: &["INV-02", "INV-15", "INV-17", "INV-18", "INV-26"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: bad_payloads,
        },
        Scenario {
            name: "evil-slowloris",
            summary: "An evil peer offers genuine segments and trickles their payloads: the \
                      honest peer offering the same segment takes it over within its bound, a \
                      trickle below the minimum rate is cut as stalled, both counted on /metrics.",
            invariants: &["INV-15", "INV-18"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: slowloris,
        },
        Scenario {
            name: "evil-floods",
            summary: "An evil peer opens more streams than streams_per_peer_max at once and \
                      holds them, floods connections from its address, and strangers flood \
                      handshakes: streams and connections stay within their limits, held \
                      streams are cut at their deadline, strangers go unanswered, the honest \
                      peer is served meanwhile.",
            invariants: &["INV-15", "INV-18", "INV-27"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: floods,
        },
        Scenario {
            name: "evil-huge-digest",
            summary: "An evil peer answers the victim's catch-up with a different digest every \
                      time, endless pages of random ids and NotHeld to every pull: the victim's \
                      pulls stay within their per-round bound and the per-peer budget, its log \
                      does not flood, and its catch-up with the honest peer still delivers what \
                      relay had dead-lettered.",
            invariants: &["INV-15", "INV-18"],
            quick: false,
            faults: true,
            build: Build::Shipped,
            run: huge_digest,
        },
    ]
}

/// The victim (node-1) and the honest peer (node-2).
const VICTIM: usize = 0;
const HONEST: usize = 1;
/// The victim's `log_warnings_per_window`: low, so a log flood shows at once.
const VICTIM_LOG_PER_WINDOW: u64 = 3;
/// The victim's `log_window_ms` (the product's default).
const VICTIM_LOG_WINDOW_MS: u64 = net::limits::LOG_WINDOW_MS_DEFAULT;
/// Worker threads of the scenario's runtime (the evil peer's endpoint and tasks).
const RUNTIME_WORKERS: usize = 2;
/// Segments the honest peer imports in each scenario, and their size.
const HONEST_SEGMENTS: usize = 4;
const HONEST_SEGMENT_BYTES: u64 = 512 << 10;
/// Time allowed to move one honest segment over one hop (added to the convergence bound).
const HONEST_TRANSFER_MS: u64 = 1_000;
/// Size of the genuine segments the evil peer lies about.
const LIE_PAYLOAD_BYTES: usize = 256 << 10;

/// A fleet of victim and honest peer, the evil peer, and the runtime it runs on.
struct Arena {
    evil: EvilPeer,
    world: World,
    /// Where strangers dial from: an address of the run's /24 that no node lists.
    stranger_ip: Ipv4Addr,
    /// When the victim was started (its log budget counts from there).
    victim_started: Instant,
    /// Declared last: dropped after the evil peer, whose endpoint lives on it.
    rt: Runtime,
}

impl Arena {
    fn fleet(&self) -> &Fleet {
        &self.world.fleet
    }

    fn victim_id(&self) -> String {
        self.fleet().node(VICTIM).id.clone()
    }

    fn victim_addr(&self) -> SocketAddr {
        self.fleet().node(VICTIM).addr
    }

    /// The evil peer's connection to the victim (served by it too).
    fn connect(&self) -> anyhow::Result<Connection> {
        let (addr, id) = (self.victim_addr(), self.victim_id());
        Ok(self.rt.block_on(self.evil.connect(addr, &id))?)
    }

    fn metrics(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        self.fleet().metrics(VICTIM)
    }

    fn into_world(self) -> World {
        let Arena {
            evil, world, rt, ..
        } = self;
        drop(evil);
        drop(rt);
        world
    }
}

/// Builds the fleet (the victim listing the evil peer at its socket's address), the evil
/// peer (its certificate issued by the fleet's CA, its mode made by `mode` once the fleet's
/// keys exist), and starts the nodes of `start`.
fn arena(
    ctx: &mut Ctx,
    tune: impl FnOnce(&mut FleetSpec),
    mode: impl FnOnce(&mut ChaCha8Rng, &Fleet) -> anyhow::Result<Mode>,
    start: &[usize],
) -> anyhow::Result<Arena> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_WORKERS)
        .enable_all()
        .build()
        .context("cannot start the evil peer's runtime")?;
    let v4 = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(v4) => v4,
        // The run's /24 is IPv4 (127.A.B.0/24).
        std::net::IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
    };
    let socket = EvilSocket::bind(&rt, v4(ctx.ip(EVIL_IP_LAST)))?;
    let stranger_ip = v4(ctx.ip(STRANGER_IP_LAST));
    let mut spec = FleetSpec::new(Topology::Line(2));
    spec.extra_peers
        .insert(VICTIM, vec![(EVIL_ID.to_owned(), socket.addr)]);
    spec.node_line(
        VICTIM,
        "net",
        format!("log_warnings_per_window = {VICTIM_LOG_PER_WINDOW}"),
    );
    spec.node_line(
        VICTIM,
        "net",
        format!("log_window_ms = {VICTIM_LOG_WINDOW_MS}"),
    );
    tune(&mut spec);
    let mut fleet = ctx.direct_fleet(spec)?;
    let mode = mode(&mut ctx.rng, &fleet)?;
    let evil = EvilPeer::start(&rt, socket, &fleet, mode)?;
    // Taken before the start: every budget of the victim is at most this old.
    let victim_started = Instant::now();
    for &i in start {
        fleet.start(i)?;
        metrics_ready(&fleet, i)?;
    }
    Ok(Arena {
        evil,
        world: World::new(fleet),
        stranger_ip,
        victim_started,
        rt,
    })
}

/// Waits until node `i` serves `/metrics`: a daemon answers on its control socket a moment
/// before its metrics listener is bound.
fn metrics_ready(fleet: &Fleet, i: usize) -> anyhow::Result<()> {
    let limit = Duration::from_millis(crate::fleet::START_TIMEOUT_MS);
    match fleet.wait_until(limit, |f| f.metrics(i).is_ok()) {
        Some(_) => Ok(()),
        None => bail!(
            "{} does not serve /metrics within {} ms of answering",
            fleet.node(i).id,
            limit.as_millis()
        ),
    }
}

/// An import running on the honest peer while the evil peer does its worst.
struct HonestImport {
    files: Vec<(PathBuf, String)>,
    running: JoinHandle<anyhow::Result<Output>>,
}

fn honest_import_start(a: &Arena, prefix: &str) -> anyhow::Result<HonestImport> {
    let (stick, files) = make_stick(&a.world, prefix, HONEST_SEGMENTS, HONEST_SEGMENT_BYTES)?;
    let cmd = a
        .fleet()
        .command(HONEST, &["import", "--json", &stick.to_string_lossy()]);
    let running = std::thread::spawn(move || {
        crate::proc::run_bounded(cmd, Duration::from_millis(CLI_TIMEOUT_MS))
    });
    Ok(HonestImport { files, running })
}

/// Waits for the honest import; what it acknowledged (checked: all of it).
fn honest_import_end(ctx: &mut Ctx, a: &Arena, import: HonestImport) -> anyhow::Result<Vec<Acked>> {
    let out = import
        .running
        .join()
        .map_err(|_| anyhow::anyhow!("the honest import thread panicked"))??;
    if !out.status.success() {
        bail!(
            "the honest import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let by = format!("import on {}", a.fleet().node(HONEST).id);
    let acked = acked_by_import(&answer, &import.files, &by)?;
    ctx.check(
        "workload_ran",
        &[],
        acked.len() == import.files.len(),
        format!(
            "{} of {} honest segment(s) imported",
            acked.len(),
            import.files.len()
        ),
    );
    Ok(acked)
}

/// The honest segments reach the victim within the bound, and are held byte-identical.
fn honest_converges(ctx: &mut Ctx, a: &Arena, acked: &[Acked], transfer_ms: u64) {
    let both = [VICTIM, HONEST];
    let served = ctx.converge(a.fleet(), acked, &both, 1, transfer_ms);
    ctx.check(
        "honest_peer_served_meanwhile",
        &["INV-18"],
        served,
        format!(
            "{} honest segment(s) from {} reached {} while the evil peer was at it",
            acked.len(),
            a.fleet().node(HONEST).id,
            a.victim_id()
        ),
    );
    ctx.record(check::lost(a.fleet(), acked, &both));
}

/// The checks every evil scenario ends with: the victim still runs and answers, and what it
/// logged about the evil peer (and strangers) stays within its log budget.
fn common_checks(ctx: &mut Ctx, a: &mut Arena) -> anyhow::Result<()> {
    let exited = a.world.fleet.exited(VICTIM)?;
    let answers = a.fleet().try_json(VICTIM, &["status"]);
    ctx.check(
        "victim_alive",
        &["INV-17", "INV-18"],
        exited.is_none() && answers.is_ok(),
        match (&exited, &answers) {
            (Some(status), _) => format!("{} exited: {status}", a.victim_id()),
            (None, Err(e)) => format!("{} does not answer: {e:#}", a.victim_id()),
            (None, Ok(_)) => format!("{} runs and answers", a.victim_id()),
        },
    );
    let budget = Budget {
        per_window: VICTIM_LOG_PER_WINDOW,
        window_ms: VICTIM_LOG_WINDOW_MS,
    };
    let elapsed_ms = a.victim_started.elapsed().as_millis() as u64;
    let max = budget.lines_max(elapsed_ms);
    let parties = [
        Party {
            name: EVIL_ID.into(),
            ids: vec![EVIL_ID.into()],
            addrs: vec![a.evil.addr.to_string()],
        },
        Party {
            name: "stranger".into(),
            ids: Vec::new(),
            addrs: vec![format!("{}", a.stranger_ip)],
        },
    ];
    let counted = logs::count(&a.fleet().node(VICTIM).log, &parties)?;
    let over = counted.over(max);
    ctx.record(crate::results::CheckResult {
        name: "log_within_budget".into(),
        invariants: vec!["INV-18".into()],
        verdict: if over.is_empty() {
            crate::results::Verdict::Pass
        } else {
            crate::results::Verdict::Fail
        },
        detail: if over.is_empty() {
            format!(
                "{} line(s) about the evil peer ({} warning(s)) in {} (party, kind) group(s), \
                 each ≤ {max} (log_warnings_per_window {VICTIM_LOG_PER_WINDOW} over {elapsed_ms} ms)",
                counted.lines,
                counted.warnings,
                counted.groups.len()
            )
        } else {
            let groups: Vec<String> = over
                .iter()
                .take(5)
                .map(|(party, kind, n)| format!("{party}/{kind}: {n} lines"))
                .collect();
            format!("over the budget of {max} line(s): {}", groups.join(", "))
        },
        observed: Some(over.len() as u64),
        out_of: Some(counted.groups.len() as u64),
    });
    Ok(())
}

fn metric(m: &BTreeMap<String, f64>, key: &str) -> u64 {
    m.get(key).copied().unwrap_or(0.0) as u64
}

fn rejected(m: &BTreeMap<String, f64>, reason: RejectReason) -> u64 {
    metric(
        m,
        &format!(
            "edged_segments_rejected_total{{reason=\"{}\"}}",
            reason.as_str()
        ),
    )
}

/// The ids of the `.seg` files in the victim's data directory.
fn victim_files(fleet: &Fleet) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let root = fleet.node(VICTIM).data_dir.join("segments");
    for dir in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for e in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".seg") {
                out.insert(id.to_owned());
            }
        }
    }
    out
}

/// Nothing the evil peer offered is stored: not listed by the victim, no file, nothing
/// quarantined; and the victim stores nothing beyond `expected` (the honest segments).
fn nothing_stored(
    ctx: &mut Ctx,
    a: &Arena,
    lies: &[(String, String)],
    expected: &BTreeSet<String>,
    invariants: &[&str],
) -> anyhow::Result<()> {
    let listed: BTreeSet<String> = a.fleet().held(VICTIM)?.into_iter().collect();
    let files = victim_files(a.fleet());
    let mut bad = Vec::new();
    for (label, id) in lies {
        if listed.contains(id) {
            bad.push(format!("{label} {} is listed", check::short(id)));
        }
        if a.fleet().node(VICTIM).segment_file(id).exists() {
            bad.push(format!("{label} {} has a file", check::short(id)));
        }
    }
    for id in listed.union(&files) {
        if !expected.contains(id) {
            bad.push(format!("unexpected segment {} stored", check::short(id)));
        }
    }
    // A lie stored and caught later (a read that verifies again quarantines it) was stored
    // all the same: the quarantine holds nothing, and the victim counts no more segments
    // stored than the honest ones (its counters started with it, in this scenario).
    let quarantined = std::fs::read_dir(a.fleet().node(VICTIM).data_dir.join("quarantine"))
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    if quarantined > 0 {
        bad.push(format!("{quarantined} file(s) in quarantine"));
    }
    let stored = metric(&a.metrics()?, "edged_segments_stored_total");
    if stored > expected.len() as u64 {
        bad.push(format!(
            "edged_segments_stored_total {stored} > {} expected",
            expected.len()
        ));
    }
    ctx.check(
        "nothing_stored",
        invariants,
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "none of {} offered segment(s) listed or on disk; {} holds only the {} \
                 expected segment(s)",
                lies.len(),
                a.victim_id(),
                expected.len()
            )
        } else {
            bad.join("; ")
        },
    );
    Ok(())
}

fn ids_of(acked: &[Acked]) -> BTreeSet<String> {
    acked.iter().map(|a| a.id.clone()).collect()
}

/// Milliseconds since the Unix epoch (the manifests' `created_at_ms`).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// 1. Bad frames.

/// One bad frame and what the victim must do about it.
struct BadFrame {
    label: &'static str,
    bytes: Vec<u8>,
    /// Finish the stream after the bytes (a truncated frame needs it).
    finish: bool,
    expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The stream reset with this code.
    Reset(StreamCode),
    /// The offer rejected with this reason.
    Rejected(RejectReason),
}

impl Expect {
    fn met_by(self, end: &StreamEnd) -> bool {
        match (self, end) {
            (Expect::Reset(code), StreamEnd::Reset(got)) => *got == code as u64,
            (Expect::Rejected(reason), StreamEnd::Frame(Msg::Reject { reason: got, .. })) => {
                *got == reason
            }
            _ => false,
        }
    }
}

fn bad_frame_list(
    rng: &mut ChaCha8Rng,
    genuine: &store::manifest::SignedManifest,
) -> Vec<BadFrame> {
    let max = net::limits::FRAME_BYTES_MAX_DEFAULT as u32;
    let reset = |code| Expect::Reset(code);
    let mut garbage = vec![0u8; 64];
    rng.fill_bytes(&mut garbage);
    // A variant index past the last message: whatever follows, no message decodes.
    garbage[0] = 200;
    let mut framed_garbage = (garbage.len() as u32).to_le_bytes().to_vec();
    framed_garbage.extend_from_slice(&garbage);
    let mut trailing = encode_frame(&Msg::DigestRequest);
    trailing[0] += 1;
    trailing.push(rng.next_u32() as u8);
    let mut truncated = 100u32.to_le_bytes().to_vec();
    truncated.extend_from_slice(&garbage[..10]);
    let mut frames = vec![
        BadFrame {
            label: "length prefix N+1",
            bytes: (max + 1).to_le_bytes().to_vec(),
            finish: false,
            expect: reset(StreamCode::FrameTooLarge),
        },
        BadFrame {
            label: "length prefix 4 GiB",
            bytes: u32::MAX.to_le_bytes().to_vec(),
            finish: false,
            expect: reset(StreamCode::FrameTooLarge),
        },
        BadFrame {
            label: "garbage body",
            bytes: framed_garbage,
            finish: false,
            expect: reset(StreamCode::Protocol),
        },
        BadFrame {
            label: "empty frame",
            bytes: vec![0, 0, 0, 0],
            finish: false,
            expect: reset(StreamCode::Protocol),
        },
        BadFrame {
            label: "trailing byte",
            bytes: trailing,
            finish: false,
            expect: reset(StreamCode::Protocol),
        },
        BadFrame {
            label: "truncated frame",
            bytes: truncated,
            finish: true,
            expect: reset(StreamCode::Protocol),
        },
        BadFrame {
            label: "Ack first",
            bytes: encode_frame(&Msg::Ack),
            finish: false,
            expect: reset(StreamCode::Protocol),
        },
        BadFrame {
            label: "Want first",
            bytes: encode_frame(&Msg::Want { offset: 7 }),
            finish: false,
            expect: reset(StreamCode::Protocol),
        },
        BadFrame {
            label: "Digest first",
            bytes: encode_frame(&Msg::Digest {
                count: 1,
                hash: [1; 32],
            }),
            finish: false,
            expect: reset(StreamCode::Protocol),
        },
    ];
    for (what, manifest) in craft::undecodable(rng, genuine) {
        frames.push(BadFrame {
            label: what,
            bytes: encode_frame(&Msg::Offer { manifest }),
            finish: false,
            expect: Expect::Rejected(RejectReason::Malformed),
        });
    }
    frames.shuffle(rng);
    frames
}

fn bad_frames(ctx: &mut Ctx) -> anyhow::Result<World> {
    let mut a = arena(ctx, |_| {}, |_, _| Ok(Mode::Quiet), &[VICTIM, HONEST])?;
    let conn = a.connect()?;
    let before = a.metrics()?;
    let honest = honest_import_start(&a, "honest")?;
    let secret = PublisherSecret::load(&a.fleet().publisher_key)?;
    let payload = craft::payload(&mut ctx.rng, 1024);
    let (genuine, _) = craft::genuine(&secret, "lie-frames", payload, now_ms())?;
    let frames = bad_frame_list(&mut ctx.rng, &genuine);
    let victim = a.victim_id();
    let (mut wrong, mut malformed) = (Vec::new(), 0u64);
    for f in &frames {
        let end = a.rt.block_on(evil::exchange(&conn, &f.bytes, f.finish));
        if matches!(end, StreamEnd::Lost(_) | StreamEnd::NotOpened) {
            // Never reached the victim: no fault.
            wrong.push(format!("{}: {}", f.label, end.describe()));
            continue;
        }
        let kind = if matches!(f.expect, Expect::Rejected(_)) {
            "evil.bad_manifest"
        } else {
            "evil.bad_frame"
        };
        ctx.fault(kind, &victim, format!("{} → {}", f.label, end.describe()));
        if matches!(end, StreamEnd::Frame(Msg::Reject { .. })) {
            malformed += 1;
        }
        if !f.expect.met_by(&end) {
            wrong.push(format!(
                "{}: {} (expected {:?})",
                f.label,
                end.describe(),
                f.expect
            ));
        }
    }
    ctx.check(
        "offending_stream_reset",
        &["INV-17"],
        wrong.is_empty(),
        if wrong.is_empty() {
            format!(
                "{} bad frame(s): each stream reset with its code, or the offer rejected as malformed",
                frames.len()
            )
        } else {
            wrong.join("; ")
        },
    );
    // Only the offending streams: the same connection still carries a request.
    let still = a.rt.block_on(evil::request(&conn, &Msg::DigestRequest));
    ctx.check(
        "connection_survives",
        &["INV-17"],
        conn.close_reason().is_none() && matches!(still, StreamEnd::Frame(Msg::Digest { .. })),
        format!(
            "after the bad frames, a DigestRequest on the same connection got {} (connection {})",
            still.describe(),
            conn.close_reason()
                .map(|r| format!("closed: {r}"))
                .unwrap_or_else(|| "open".into())
        ),
    );
    let acked = honest_import_end(ctx, &a, honest)?;
    honest_converges(ctx, &a, &acked, HONEST_TRANSFER_MS);
    nothing_stored(ctx, &a, &[], &ids_of(&acked), &["INV-17"])?;
    let after = a.metrics()?;
    let counted =
        rejected(&after, RejectReason::Malformed) - rejected(&before, RejectReason::Malformed);
    let failed = metric(&after, "edged_net_streams_failed_total")
        - metric(&before, "edged_net_streams_failed_total");
    let resets = frames.len() as u64 - malformed;
    ctx.check(
        "rejections_counted",
        &["INV-26"],
        counted == malformed && failed >= resets,
        format!(
            "rejected{{reason=\"malformed\"}} +{counted} for {malformed} malformed offer(s); \
             streams_failed +{failed} for {resets} reset stream(s)"
        ),
    );
    common_checks(ctx, &mut a)?;
    Ok(a.into_world())
}

// ---------------------------------------------------------------------------------------------
// 2. Bad signatures.

/// A key the fleet does not trust, made with the operator's tool (one per `tag`).
fn untrusted_key(fleet: &Fleet, tag: &str) -> anyhow::Result<PublisherSecret> {
    let path = fleet.dir.join(format!("untrusted-{tag}.key"));
    let mut cmd = std::process::Command::new(&fleet.bin);
    cmd.args(["key", "gen", "--out"]).arg(&path);
    let out = crate::proc::run_bounded(cmd, Duration::from_millis(CLI_TIMEOUT_MS))?;
    if !out.status.success() {
        bail!("edged key gen: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(PublisherSecret::load(&path)?)
}

/// The three lies about signatures, named with `tag`.
fn signature_lies(rng: &mut ChaCha8Rng, fleet: &Fleet, tag: &str) -> anyhow::Result<Vec<Crafted>> {
    let trusted = PublisherSecret::load(&fleet.publisher_key)?;
    let other = untrusted_key(fleet, tag)?;
    let now = now_ms();
    let mut p = || craft::payload(rng, LIE_PAYLOAD_BYTES);
    Ok(vec![
        craft::bad_signature(&trusted, &format!("lie-sig-{tag}"), p(), now)?,
        craft::untrusted(&other, &format!("lie-untrusted-{tag}"), p(), now)?,
        craft::tampered(&trusted, &format!("lie-changed-{tag}"), p(), now)?,
    ])
}

fn reason_of(c: &Crafted) -> RejectReason {
    match c.label {
        "untrusted_publisher" => RejectReason::UntrustedPublisher,
        _ => RejectReason::BadSignature,
    }
}

/// Offers `c`; if the victim wants it anyway, sends its payload: the victim's last answer.
fn offer_lie(a: &Arena, conn: &Connection, c: &Crafted) -> StreamEnd {
    a.rt.block_on(async {
        match evil::offer(conn, &c.manifest).await {
            Err(end) => end,
            Ok(mut t) => match t.answer.clone() {
                StreamEnd::Frame(Msg::Want { offset }) => {
                    let body = c.stream_from(offset as usize);
                    evil::push_payload(&mut t, &body, &[]).await
                }
                other => other,
            },
        }
    })
}

/// Upper bound on a wait for the victim's next catch-up round with the evil peer.
fn next_round_bound(fleet: &Fleet) -> Duration {
    let t = &fleet.spec.tuning;
    Duration::from_millis(2 * t.catchup_interval_ms + t.response_timeout_ms)
}

fn bad_signatures(ctx: &mut Ctx) -> anyhow::Result<World> {
    let mut pulled_lies = Vec::new();
    let mut a = arena(
        ctx,
        |_| {},
        |rng, fleet| {
            pulled_lies = signature_lies(rng, fleet, "pulled")?;
            Ok(Mode::Poisoned(pulled_lies.clone()))
        },
        &[VICTIM, HONEST],
    )?;
    let victim = a.victim_id();
    // The victim pulls three lies in its first catch-up round with the evil peer (it dials
    // its known peer at start): watched as they come, so each is recorded when it happens.
    let mut seen = 0;
    let waited = a.fleet().wait_until(next_round_bound(a.fleet()), |_| {
        let pulled = a.evil.served.observed().pulled;
        for (id, end) in pulled.iter().skip(seen) {
            ctx.fault(
                "evil.pulled_lie",
                &victim,
                format!("served {} to a pull → {}", id.short(), end.describe()),
            );
        }
        seen = pulled.len();
        seen >= pulled_lies.len()
    });
    // Then it is pushed the other three.
    let conn = a.connect()?;
    let honest = honest_import_start(&a, "honest")?;
    let pushed = signature_lies(&mut ctx.rng, a.fleet(), "pushed")?;
    let mut answers: Vec<(String, RejectReason, StreamEnd)> = Vec::new();
    for c in &pushed {
        let end = offer_lie(&a, &conn, c);
        if !matches!(end, StreamEnd::Lost(_) | StreamEnd::NotOpened) {
            ctx.fault(
                &format!("evil.{}", c.label),
                &victim,
                format!("pushed {} → {}", c.id.short(), end.describe()),
            );
        }
        answers.push((format!("pushed {}", c.label), reason_of(c), end));
    }
    let observed = a.evil.served.observed();
    for c in &pulled_lies {
        let end = observed
            .pulled
            .iter()
            .find(|(id, _)| *id == c.id)
            .map(|(_, end)| end.clone())
            .unwrap_or(StreamEnd::Silent);
        answers.push((format!("pulled {}", c.label), reason_of(c), end));
    }
    let wrong: Vec<String> = answers
        .iter()
        .filter(|(_, reason, end)| !Expect::Rejected(*reason).met_by(end))
        .map(|(what, reason, end)| {
            format!("{what}: {} (expected Reject({reason}))", end.describe())
        })
        .collect();
    ctx.check(
        "refused_with_reason",
        &["INV-01"],
        wrong.is_empty(),
        if wrong.is_empty() {
            format!(
                "{} lie(s) pushed and {} pulled in catch-up{}: each refused with its reason",
                pushed.len(),
                pulled_lies.len(),
                if waited.is_some() {
                    ""
                } else {
                    " (not all pulled in time)"
                }
            )
        } else {
            wrong.join("; ")
        },
    );
    let acked = honest_import_end(ctx, &a, honest)?;
    honest_converges(ctx, &a, &acked, HONEST_TRANSFER_MS);
    let lies: Vec<(String, String)> = pushed
        .iter()
        .chain(&pulled_lies)
        .map(|c| (c.label.to_owned(), c.id_hex()))
        .collect();
    nothing_stored(ctx, &a, &lies, &ids_of(&acked), &["INV-01"])?;
    // Counted by reason: as many as the victim answered (its counters started with it, in this
    // scenario, so they hold nothing else).
    let after = a.metrics()?;
    let before = BTreeMap::new();
    let answered = |r: RejectReason| {
        answers
            .iter()
            .filter(|(_, _, end)| Expect::Rejected(r).met_by(end))
            .count() as u64
    };
    let mut off = Vec::new();
    for r in [RejectReason::BadSignature, RejectReason::UntrustedPublisher] {
        let counted = rejected(&after, r) - rejected(&before, r);
        if counted != answered(r) || counted == 0 {
            off.push(format!("{r}: counted {counted}, answered {}", answered(r)));
        }
    }
    ctx.check(
        "rejections_counted",
        &["INV-26"],
        off.is_empty(),
        if off.is_empty() {
            format!(
                "rejected{{reason}} on /metrics: bad_signature +{}, untrusted_publisher +{}",
                answered(RejectReason::BadSignature),
                answered(RejectReason::UntrustedPublisher)
            )
        } else {
            off.join("; ")
        },
    );
    no_orphan_jobs(ctx, &a, &lies)?;
    common_checks(ctx, &mut a)?;
    Ok(a.into_world())
}

/// The victim's jobs are those of the segments it lists, and none is about a lie: the
/// relay jobs gauge on `/metrics` equals the jobs of the listed segments (INV-01, INV-11).
fn no_orphan_jobs(ctx: &mut Ctx, a: &Arena, lies: &[(String, String)]) -> anyhow::Result<()> {
    let segments = a.fleet().try_json(VICTIM, &["segments"])?;
    let mut listed_jobs = 0u64;
    let mut about_lies = Vec::new();
    for s in segments.as_array().into_iter().flatten() {
        let jobs = s["jobs"].as_array().map(Vec::len).unwrap_or(0) as u64;
        listed_jobs += jobs;
        let id = s["id"].as_str().unwrap_or_default();
        if lies.iter().any(|(_, l)| l == id) {
            about_lies.push(check::short(id).to_owned());
        }
    }
    let m = a.metrics()?;
    let gauge: u64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("edged_relay_jobs{"))
        .map(|(_, v)| *v as u64)
        .sum();
    ctx.check(
        "no_jobs_for_lies",
        &["INV-01", "INV-11"],
        gauge == listed_jobs && about_lies.is_empty(),
        format!(
            "{gauge} job(s) in the relay's ledger, {listed_jobs} belong to listed segments; \
             {} about a lie",
            about_lies.len()
        ),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Bad payloads.

fn bad_payloads(ctx: &mut Ctx) -> anyhow::Result<World> {
    let mut a = arena(ctx, |_| {}, |_, _| Ok(Mode::Quiet), &[VICTIM, HONEST])?;
    let conn = a.connect()?;
    let before = a.metrics()?;
    let honest = honest_import_start(&a, "honest")?;
    let secret = PublisherSecret::load(&a.fleet().publisher_key)?;
    let stick = a.fleet().dir.join("stick-genuine");
    std::fs::create_dir_all(&stick)?;
    let victim = a.victim_id();
    // (what, fault kind, the genuine segment, what is sent instead of its payload, reason).
    let mut cases = Vec::new();
    let mut files = Vec::new();
    for (what, kind) in [
        ("hash_mismatch", "evil.hash_mismatch"),
        ("too_long", "evil.payload_too_long"),
        ("too_short", "evil.payload_truncated"),
    ] {
        let body = craft::payload(&mut ctx.rng, LIE_PAYLOAD_BYTES);
        let (signed, c) = craft::genuine(&secret, &format!("lie-{what}"), body, now_ms())?;
        let file = stick.join(format!("lie-{what}.seg"));
        craft::write_seg(&file, &signed, &c.payload)?;
        files.push((file, c.id_hex()));
        let mut sent = c.payload.clone();
        let mut extra = Vec::new();
        let reason = match what {
            "hash_mismatch" => {
                // One byte changed, somewhere the seed chooses.
                let at = (ctx.rng.next_u64() % sent.len() as u64) as usize;
                sent[at] ^= 0x40;
                RejectReason::HashMismatch
            }
            "too_long" => {
                let len = 1 + (ctx.rng.next_u32() % 4096) as usize;
                extra = craft::payload(&mut ctx.rng, len);
                RejectReason::LengthMismatch
            }
            _ => {
                sent.truncate(sent.len() / 2);
                RejectReason::LengthMismatch
            }
        };
        cases.push((what, kind, c, sent, extra, reason));
    }
    let mut wrong = Vec::new();
    let mut answered: BTreeMap<RejectReason, u64> = BTreeMap::new();
    for (what, kind, c, sent, extra, reason) in &cases {
        let end = a.rt.block_on(async {
            match evil::offer(&conn, &c.manifest).await {
                Err(end) => (None, end),
                Ok(mut t) => match t.answer.clone() {
                    StreamEnd::Frame(Msg::Want { offset: 0 }) => {
                        (Some(0), evil::push_payload(&mut t, sent, extra).await)
                    }
                    other => (None, other),
                },
            }
        });
        match end {
            (Some(_), end) => {
                ctx.fault(
                    kind,
                    &victim,
                    format!(
                        "{} → {} ({} bytes sent for {} declared)",
                        c.id.short(),
                        end.describe(),
                        sent.len() + extra.len(),
                        c.payload.len()
                    ),
                );
                if Expect::Rejected(*reason).met_by(&end) {
                    *answered.entry(*reason).or_default() += 1;
                } else {
                    wrong.push(format!(
                        "{what}: {} (expected Reject({reason}))",
                        end.describe()
                    ));
                }
            }
            (None, end) => wrong.push(format!("{what}: offer answered {}", end.describe())),
        }
    }
    ctx.check(
        "refused_with_reason",
        &["INV-02", "INV-17"],
        wrong.is_empty(),
        if wrong.is_empty() {
            "a payload not matching its hash, one too long and one too short: each refused".into()
        } else {
            wrong.join("; ")
        },
    );
    let acked = honest_import_end(ctx, &a, honest)?;
    let lies: Vec<(String, String)> = cases
        .iter()
        .map(|(what, _, c, ..)| ((*what).to_owned(), c.id_hex()))
        .collect();
    nothing_stored(ctx, &a, &lies, &ids_of(&acked), &["INV-02"])?;
    let after = a.metrics()?;
    let mut off = Vec::new();
    for r in [RejectReason::HashMismatch, RejectReason::LengthMismatch] {
        let counted = rejected(&after, r) - rejected(&before, r);
        let want = answered.get(&r).copied().unwrap_or(0);
        if counted != want || want == 0 {
            off.push(format!("{r}: counted {counted}, answered {want}"));
        }
    }
    ctx.check(
        "rejections_counted",
        &["INV-26"],
        off.is_empty(),
        if off.is_empty() {
            format!("rejected{{reason}} on /metrics as answered: {answered:?}")
        } else {
            off.join("; ")
        },
    );
    // The honest copies of the same segments, imported on the honest peer, then arrive whole:
    // nothing the lies left behind (a kept partial) spoils them.
    let answer = a
        .fleet()
        .try_json(HONEST, &["import", &stick.to_string_lossy()])?;
    let by = format!("import on {}", a.fleet().node(HONEST).id);
    let copies = acked_by_import(&answer, &files, &by)?;
    ctx.check(
        "workload_ran",
        &[],
        copies.len() == files.len(),
        format!("{} of {} honest copies imported", copies.len(), files.len()),
    );
    let mut all = acked;
    all.extend(copies.iter().cloned());
    honest_converges(ctx, &a, &all, HONEST_TRANSFER_MS);
    let spoiled = check::missing(a.fleet(), &copies, &[VICTIM]);
    ctx.check(
        "honest_copies_intact",
        &["INV-02"],
        spoiled.is_empty() && !copies.is_empty(),
        format!(
            "{} of {} segment(s) the evil peer lied about held byte-identical by {} from their \
             honest copies",
            copies.len() - spoiled.values().map(Vec::len).sum::<usize>(),
            copies.len(),
            a.victim_id()
        ),
    );
    common_checks(ctx, &mut a)?;
    Ok(a.into_world())
}

// ---------------------------------------------------------------------------------------------
// 4. Slowloris.

/// The victim's `stall_timeout_ms` (the rate window) in the slowloris scenario: short, so a
/// window ends in seconds.
const SLOW_STALL_WINDOW_MS: u64 = 2_000;
/// The trickle that holds a segment: above the minimum rate (`stall_rate_min_bytes_per_s`,
/// 256 B/s by default), far below the takeover rate (64 KiB/s by default).
const SLOW_TAKEOVER_TRICKLE_BYTES_PER_S: u64 = 2_048;
/// The trickle below the minimum rate: cut as stalled at the end of its first window.
const SLOW_STALL_TRICKLE_BYTES_PER_S: u64 = 40;
/// Size of the segments trickled.
const SLOW_SEGMENT_BYTES: usize = 2 << 20;
/// Longest a trickle goes on before the evil peer gives up (far beyond every bound it tests).
const SLOW_TRICKLE_LIMIT_MS: u64 = 20_000;

fn slowloris(ctx: &mut Ctx) -> anyhow::Result<World> {
    let tune = |spec: &mut FleetSpec| spec.tuning.stall_timeout_ms = SLOW_STALL_WINDOW_MS;
    let mut a = arena(ctx, tune, |_, _| Ok(Mode::Quiet), &[VICTIM, HONEST])?;
    let conn = a.connect()?;
    let before = a.metrics()?;
    let secret = PublisherSecret::load(&a.fleet().publisher_key)?;
    let victim = a.victim_id();
    let mut segs = Vec::new();
    for name in ["held", "stalled"] {
        let body = craft::payload(&mut ctx.rng, SLOW_SEGMENT_BYTES);
        let (signed, c) = craft::genuine(&secret, &format!("slow-{name}"), body, now_ms())?;
        let stick = a.fleet().dir.join(format!("stick-slow-{name}"));
        std::fs::create_dir_all(&stick)?;
        let file = stick.join(format!("slow-{name}.seg"));
        craft::write_seg(&file, &signed, &c.payload)?;
        segs.push((stick, file, c));
    }
    let limit = Duration::from_millis(SLOW_TRICKLE_LIMIT_MS);

    // (a) A trickle above the minimum rate holds the segment until the honest peer offers it.
    let (stick, file, held) = &segs[0];
    let started = start_trickle(&a, &conn, held, SLOW_TAKEOVER_TRICKLE_BYTES_PER_S, limit)?;
    ctx.fault(
        "evil.slowloris",
        &victim,
        format!(
            "offered {} and trickles it at {SLOW_TAKEOVER_TRICKLE_BYTES_PER_S} B/s",
            held.id.short()
        ),
    );
    // A holder is judged on its last full window: let one pass.
    std::thread::sleep(Duration::from_millis(
        SLOW_STALL_WINDOW_MS + SLOW_STALL_WINDOW_MS / 4,
    ));
    let answer = a
        .fleet()
        .try_json(HONEST, &["import", &stick.to_string_lossy()])?;
    let by = format!("import on {}", a.fleet().node(HONEST).id);
    let acked_held = acked_by_import(&answer, &[(file.clone(), held.id_hex())], &by)?;
    // The newcomer waits at most a little more than one window for the holder, then resumes
    // from its checkpoint: the bound is that wait and one transfer, doubled for a loaded
    // machine.
    let bound_ms = 2 * (SLOW_STALL_WINDOW_MS + SLOW_STALL_WINDOW_MS / 4 + HONEST_TRANSFER_MS);
    let took = check::converge(
        a.fleet(),
        &acked_held,
        &[VICTIM, HONEST],
        Duration::from_millis(bound_ms),
    );
    let took_over = took.is_some();
    let held_end = finish_trickle(&a, started)?;
    let preempted = held_end.end == StreamEnd::Reset(StreamCode::Preempted as u64)
        || held_end.said == Some(Msg::Busy);
    ctx.check(
        "takeover_from_trickler",
        &["INV-18"],
        took_over && preempted && acked_held.len() == 1,
        format!(
            "the honest peer's offer {} the segment{}; the trickler ended with {} after {} bytes \
             in {} ms{}",
            if took_over { "got" } else { "did not get" },
            match took {
                Some(d) => format!(" through in {} ms (bound {bound_ms} ms)", d.as_millis()),
                None => format!(" through within {bound_ms} ms"),
            },
            held_end.end.describe(),
            held_end.sent,
            held_end.lasted_ms,
            held_end
                .said
                .as_ref()
                .map(|m| format!(", told {}", m.name()))
                .unwrap_or_default()
        ),
    );

    // (b) A trickle below the minimum rate is cut at the end of its first window.
    let (stick, file, stalled) = &segs[1];
    let started = start_trickle(&a, &conn, stalled, SLOW_STALL_TRICKLE_BYTES_PER_S, limit)?;
    ctx.fault(
        "evil.slowloris",
        &victim,
        format!(
            "offered {} and trickles it at {SLOW_STALL_TRICKLE_BYTES_PER_S} B/s",
            stalled.id.short()
        ),
    );
    let stall_end = finish_trickle(&a, started)?;
    // One window, and the time to see it end; three windows is far beyond.
    let cut_in_time = stall_end.lasted_ms <= 3 * SLOW_STALL_WINDOW_MS;
    ctx.check(
        "stalled_trickle_cut",
        &["INV-18"],
        stall_end.end == StreamEnd::Reset(StreamCode::Stalled as u64) && cut_in_time,
        format!(
            "a {SLOW_STALL_TRICKLE_BYTES_PER_S} B/s trickle ended with {} after {} bytes in {} ms \
             (window {SLOW_STALL_WINDOW_MS} ms)",
            stall_end.end.describe(),
            stall_end.sent,
            stall_end.lasted_ms
        ),
    );
    nothing_stored(
        ctx,
        &a,
        &[("stalled".into(), stalled.id_hex())],
        &ids_of(&acked_held),
        &["INV-18"],
    )?;
    let answer = a
        .fleet()
        .try_json(HONEST, &["import", &stick.to_string_lossy()])?;
    let acked_stalled = acked_by_import(&answer, &[(file.clone(), stalled.id_hex())], &by)?;
    let mut acked = acked_held;
    acked.extend(acked_stalled);
    ctx.check(
        "workload_ran",
        &[],
        acked.len() == 2,
        format!("{} of 2 honest copies imported", acked.len()),
    );
    honest_converges(ctx, &a, &acked, HONEST_TRANSFER_MS);
    let after = a.metrics()?;
    let delta = |k: &str| metric(&after, k) - metric(&before, k);
    let (pre, stl) = (
        delta("edged_net_transfers_preempted_total"),
        delta("edged_net_transfers_stalled_total"),
    );
    ctx.check(
        "trickles_counted",
        &["INV-18"],
        pre == u64::from(preempted) && stl >= 1,
        format!("/metrics: transfers_preempted +{pre}, transfers_stalled +{stl}"),
    );
    common_checks(ctx, &mut a)?;
    Ok(a.into_world())
}

/// A trickle running on the scenario's runtime.
type TrickleTask = tokio::task::JoinHandle<Trickled>;

/// Offers `c` and, once the victim wants it from the start, trickles its payload at
/// `bytes_per_s` on a task.
fn start_trickle(
    a: &Arena,
    conn: &Connection,
    c: &Crafted,
    bytes_per_s: u64,
    limit: Duration,
) -> anyhow::Result<TrickleTask> {
    let mut t: Offered =
        a.rt.block_on(evil::offer(conn, &c.manifest))
            .map_err(|end| anyhow::anyhow!("offer of {}: {}", c.id.short(), end.describe()))?;
    if t.answer != StreamEnd::Frame(Msg::Want { offset: 0 }) {
        bail!("offer of {} answered {}", c.id.short(), t.answer.describe());
    }
    let payload = c.stream_from(0);
    Ok(a.rt.spawn(async move { evil::trickle(&mut t, &payload, bytes_per_s, limit).await }))
}

fn finish_trickle(a: &Arena, task: TrickleTask) -> anyhow::Result<Trickled> {
    a.rt.block_on(task)
        .map_err(|e| anyhow::anyhow!("the trickle task failed: {e}"))
}

// ---------------------------------------------------------------------------------------------
// 5. Floods.

/// The victim's `streams_per_peer_max` in the flood scenario.
const FLOOD_STREAMS_MAX: u32 = 8;
/// Streams the evil peer tries to hold open at once: five times the limit.
const FLOOD_STREAMS: usize = 5 * FLOOD_STREAMS_MAX as usize;
/// The fleet's `response_timeout_ms` in the flood scenario: a held stream (no first frame) is
/// cut after it.
const FLOOD_RESPONSE_TIMEOUT_MS: u64 = 3_000;
/// Connections the evil peer opens at once from its address.
const FLOOD_CONNECTIONS: usize = 12;
/// Strangers flooding handshakes, each from its own port.
const FLOOD_STRANGERS: usize = 8;
/// How long after the connection flood the evil peer counts what is still open.
const FLOOD_SETTLE_MS: u64 = 1_000;
/// How long a stranger waits for an answer to its handshake (none comes).
const FLOOD_STRANGER_DIAL_MS: u64 = 2_000;

/// One held stream of the flood.
#[derive(Debug)]
struct Held {
    /// When it opened, in ms since the flood began (`None`: it never could).
    opened_ms: Option<u64>,
    end: StreamEnd,
}

fn floods(ctx: &mut Ctx) -> anyhow::Result<World> {
    let tune = |spec: &mut FleetSpec| {
        spec.tuning.response_timeout_ms = FLOOD_RESPONSE_TIMEOUT_MS;
        spec.tuning.stall_timeout_ms = FLOOD_RESPONSE_TIMEOUT_MS - 1_000;
        spec.node_line(
            VICTIM,
            "net",
            format!("streams_per_peer_max = {FLOOD_STREAMS_MAX}"),
        );
    };
    let mut a = arena(ctx, tune, |_, _| Ok(Mode::Quiet), &[VICTIM, HONEST])?;
    let conn = a.connect()?;
    let before = a.metrics()?;
    let victim = a.victim_id();

    // Streams: each holds two bytes of a length prefix, never a whole first frame.
    let began = tokio::time::Instant::now();
    let opened_count = Arc::new(AtomicUsize::new(0));
    let flood = a.rt.spawn({
        let opened_count = opened_count.clone();
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..FLOOD_STREAMS {
                let conn = conn.clone();
                let opened_count = opened_count.clone();
                tasks.spawn(async move {
                    let (mut send, mut recv) = match evil::open(&conn).await {
                        Ok(s) => s,
                        Err(end) => {
                            return Held {
                                opened_ms: None,
                                end,
                            };
                        }
                    };
                    let opened_ms = Some(began.elapsed().as_millis() as u64);
                    opened_count.fetch_add(1, Ordering::SeqCst);
                    if let Err(e) = send.write_all(&[1, 0]).await {
                        return Held {
                            opened_ms,
                            end: StreamEnd::Garbled(e.to_string()),
                        };
                    }
                    // The victim cuts it at its first-frame deadline.
                    Held {
                        opened_ms,
                        end: evil::answer(&mut recv).await,
                    }
                });
            }
            let mut out = Vec::new();
            while let Some(done) = tasks.join_next().await {
                if let Ok(h) = done {
                    out.push(h);
                }
            }
            out
        }
    });
    // Recorded once the first held stream is open: the flood reached the victim.
    let first = a
        .fleet()
        .wait_until(Duration::from_millis(evil::ANSWER_TIMEOUT_MS), |_| {
            opened_count.load(Ordering::SeqCst) > 0
        });
    if first.is_some() {
        ctx.fault(
            "evil.stream_flood",
            &victim,
            format!("{FLOOD_STREAMS} streams at once, each holding half a length prefix"),
        );
    }
    // The honest peer's import, while the streams are held (they are cut only after the
    // first-frame deadline).
    std::thread::sleep(Duration::from_millis(FLOOD_RESPONSE_TIMEOUT_MS / 10));
    let honest = honest_import_start(&a, "honest")?;
    let held: Vec<Held> =
        a.rt.block_on(flood)
            .map_err(|e| anyhow::anyhow!("the stream flood task failed: {e}"))?;
    // Before any held stream can have been cut (and its credit given back), at most the
    // limit can have opened.
    let early_ms = FLOOD_RESPONSE_TIMEOUT_MS * 2 / 3;
    let early = held
        .iter()
        .filter(|h| h.opened_ms.is_some_and(|t| t < early_ms))
        .count();
    let opened: Vec<&Held> = held.iter().filter(|h| h.opened_ms.is_some()).collect();
    let cut = opened
        .iter()
        .filter(|h| h.end == StreamEnd::Reset(StreamCode::Stalled as u64))
        .count();
    ctx.check(
        "streams_within_limit",
        &["INV-18"],
        early >= 1 && early <= FLOOD_STREAMS_MAX as usize,
        format!(
            "{early} of {FLOOD_STREAMS} streams opened within {early_ms} ms \
             (streams_per_peer_max {FLOOD_STREAMS_MAX}); {} opened in all",
            opened.len()
        ),
    );
    ctx.check(
        "held_streams_cut",
        &["INV-18"],
        !opened.is_empty() && cut == opened.len(),
        format!(
            "{cut} of {} held stream(s) reset as stalled at the first-frame deadline \
             ({FLOOD_RESPONSE_TIMEOUT_MS} ms){}",
            opened.len(),
            opened
                .iter()
                .find(|h| h.end != StreamEnd::Reset(StreamCode::Stalled as u64))
                .map(|h| format!("; one ended with {}", h.end.describe()))
                .unwrap_or_default()
        ),
    );

    // Connections from the evil peer's own address.
    let victim_addr = a.victim_addr();
    let dialed = a.rt.block_on(dial_each(
        vec![a.evil.dialer(); FLOOD_CONNECTIONS],
        victim_addr,
        victim.clone(),
    ));
    // Answered: established, or refused by the victim (a timeout is no answer).
    let answered = dialed
        .iter()
        .filter(|d| !matches!(d, Err(evil::EvilError::DialTimeout { .. })))
        .count();
    if answered > 0 {
        ctx.fault(
            "evil.connection_flood",
            &victim,
            format!(
                "{FLOOD_CONNECTIONS} connections at once from {}, {answered} answered",
                a.evil.addr
            ),
        );
    }
    std::thread::sleep(Duration::from_millis(FLOOD_SETTLE_MS));
    let established: Vec<&Connection> = dialed.iter().filter_map(|d| d.as_ref().ok()).collect();
    let alive = established
        .iter()
        .filter(|c| c.close_reason().is_none())
        .count();
    let refused = dialed
        .iter()
        .filter(|d| matches!(d, Err(evil::EvilError::Dial { .. })))
        .count();
    let cap = net::limits::CONNECTIONS_PER_PEER_MAX_DEFAULT;
    ctx.check(
        "connections_within_limit",
        &["INV-18"],
        alive <= cap && !established.is_empty(),
        format!(
            "of {FLOOD_CONNECTIONS} connections: {} established, {refused} refused, {alive} still \
             open after {FLOOD_SETTLE_MS} ms (connections_per_peer_max {cap})",
            established.len()
        ),
    );
    for c in &established {
        c.close(net::quinn::VarInt::from_u32(0), b"flood over");
    }

    // Strangers: handshakes from addresses no node lists go unanswered.
    let dropped_before = metric(&a.metrics()?, "edged_net_datagrams_dropped_unknown_total");
    let mut strangers = Vec::new();
    for _ in 0..FLOOD_STRANGERS {
        let socket = EvilSocket::bind(&a.rt, a.stranger_ip)?;
        let limit = Duration::from_millis(FLOOD_STRANGER_DIAL_MS);
        strangers.push(a.evil.stranger(&a.rt, socket, limit)?);
    }
    // Recorded once the victim has seen (and dropped) the first of their datagrams.
    let dialing =
        a.rt.spawn(dial_each(strangers.clone(), victim_addr, victim.clone()));
    let mut dropped = 0;
    let _ = a
        .fleet()
        .wait_until(Duration::from_millis(FLOOD_STRANGER_DIAL_MS), |f| {
            dropped = f
                .metrics(VICTIM)
                .map(|m| metric(&m, "edged_net_datagrams_dropped_unknown_total"))
                .unwrap_or(0)
                .saturating_sub(dropped_before);
            dropped > 0
        });
    let seen_dropped = dropped > 0;
    if seen_dropped {
        ctx.fault(
            "evil.stranger_flood",
            &victim,
            format!(
                "{FLOOD_STRANGERS} handshakes from {}: their datagrams are dropped",
                a.stranger_ip
            ),
        );
    }
    let answered =
        a.rt.block_on(dialing)
            .map_err(|e| anyhow::anyhow!("the strangers' task failed: {e}"))?;
    let dropped =
        metric(&a.metrics()?, "edged_net_datagrams_dropped_unknown_total") - dropped_before;
    let got_in = answered.iter().filter(|r| r.is_ok()).count();
    if !seen_dropped && got_in > 0 {
        ctx.fault(
            "evil.stranger_flood",
            &victim,
            format!(
                "{FLOOD_STRANGERS} handshakes from {}: {got_in} answered",
                a.stranger_ip
            ),
        );
    }
    let detail = format!(
        "{got_in} of {FLOOD_STRANGERS} strangers got a connection; the victim dropped {dropped} \
         of their datagrams unanswered"
    );
    if got_in == 0 && dropped == 0 {
        // Nothing got in, and nothing was seen: the flood may never have arrived.
        ctx.unknown("strangers_unanswered", &["INV-18", "INV-27"], detail);
    } else {
        ctx.check(
            "strangers_unanswered",
            &["INV-18", "INV-27"],
            got_in == 0 && dropped >= FLOOD_STRANGERS as u64,
            detail,
        );
    }
    for s in &strangers {
        s.close();
    }

    let acked = honest_import_end(ctx, &a, honest)?;
    honest_converges(ctx, &a, &acked, HONEST_TRANSFER_MS);
    let after = a.metrics()?;
    let delta = |k: &str| metric(&after, k) - metric(&before, k);
    ctx.note(format!(
        "victim /metrics: streams_failed +{}, connections_closed +{}, handshakes refused \
         addr_cap +{} cap +{}",
        delta("edged_net_streams_failed_total"),
        delta("edged_net_connections_closed_total"),
        delta("edged_net_handshakes_refused_total{reason=\"addr_cap\"}"),
        delta("edged_net_handshakes_refused_total{reason=\"cap\"}"),
    ));
    ctx.check(
        "held_streams_counted",
        &["INV-18"],
        delta("edged_net_streams_failed_total") >= cut as u64,
        format!(
            "streams_failed +{} for {cut} held stream(s) cut",
            delta("edged_net_streams_failed_total")
        ),
    );
    common_checks(ctx, &mut a)?;
    Ok(a.into_world())
}

// ---------------------------------------------------------------------------------------------
// 6. A huge catch-up digest.

/// The fleet's `catchup_interval_ms` in this scenario: a round every second.
const HUGE_CATCHUP_INTERVAL_MS: u64 = 1_000;
/// The victim's catch-up bounds in this scenario, low so they bite within seconds.
const HUGE_PULLS_PER_ROUND_MAX: u64 = 16;
/// Pulls a round runs at once: more than it may start, so the per-round bound, not the
/// concurrency, is what stops a round...
const HUGE_PULLS_CONCURRENT: u64 = 4 * HUGE_PULLS_PER_ROUND_MAX;
/// ...before the first `NotHeld` comes back (which ends the round too).
const HUGE_NOT_HELD_DELAY_MS: u64 = 300;
const HUGE_PAGES_PER_ROUND_MAX: u64 = 4;
const HUGE_WASTED_PULLS_PER_MIN: u64 = 40;
/// How long the evil peer is watched.
const HUGE_WATCH_MS: u64 = 8_000;
/// Segments the honest peer holds that only catch-up can bring (its relay dead-lettered them).
const HUGE_HONEST_SEGMENTS: usize = 3;

fn huge_digest(ctx: &mut Ctx) -> anyhow::Result<World> {
    let seed = ctx.rng.next_u64();
    let tune = |spec: &mut FleetSpec| {
        spec.tuning.catchup_interval_ms = HUGE_CATCHUP_INTERVAL_MS;
        // One attempt: the honest peer's pushes to the stopped victim dead-letter at once, so
        // only catch-up can deliver them.
        spec.tuning.attempts_max = 1;
        for line in [
            format!("catchup_pulls_per_round_max = {HUGE_PULLS_PER_ROUND_MAX}"),
            format!("catchup_pulls_concurrent = {HUGE_PULLS_CONCURRENT}"),
            format!("catchup_pages_per_round_max = {HUGE_PAGES_PER_ROUND_MAX}"),
            format!("catchup_wasted_pulls_per_peer_per_min = {HUGE_WASTED_PULLS_PER_MIN}"),
        ] {
            spec.node_line(VICTIM, "net", line);
        }
    };
    let mode = Mode::HugeDigest {
        seed,
        not_held_delay_ms: HUGE_NOT_HELD_DELAY_MS,
    };
    let mut a = arena(ctx, tune, |_, _| Ok(mode), &[HONEST])?;
    // The honest peer holds segments the stopped victim lacks; its relay gives up on them.
    let (stick, files) = make_stick(
        &a.world,
        "honest",
        HUGE_HONEST_SEGMENTS,
        HONEST_SEGMENT_BYTES,
    )?;
    let answer = a
        .fleet()
        .try_json(HONEST, &["import", &stick.to_string_lossy()])?;
    let by = format!("import on {}", a.fleet().node(HONEST).id);
    let acked = acked_by_import(&answer, &files, &by)?;
    ctx.check(
        "workload_ran",
        &[],
        acked.len() == HUGE_HONEST_SEGMENTS,
        format!(
            "{} of {HUGE_HONEST_SEGMENTS} honest segment(s) imported",
            acked.len()
        ),
    );
    let dead_bound = Duration::from_millis(2 * a.fleet().spec.tuning.handshake_timeout_ms);
    let dead = a.fleet().wait_until(dead_bound, |f| {
        f.try_json(HONEST, &["dlq", "list"])
            .map(|v| v.as_array().map(Vec::len).unwrap_or(0) >= HUGE_HONEST_SEGMENTS)
            .unwrap_or(false)
    });
    if dead.is_none() {
        ctx.unknown(
            "honest_catchup_works",
            &["INV-15"],
            "the honest peer's pushes to the stopped victim were not dead-lettered in time",
        );
    }
    // The victim starts: it dials the evil peer and the honest one and pulls from both.
    a.victim_started = Instant::now();
    a.world.fleet.start(VICTIM)?;
    metrics_ready(a.fleet(), VICTIM)?;
    let victim = a.victim_id();
    let mut fired = false;
    // Watched for its whole time: the condition never holds.
    let _ = a
        .fleet()
        .wait_until(Duration::from_millis(HUGE_WATCH_MS), |_| {
            if !fired && a.evil.served.observed().pages > 0 {
                fired = true;
                ctx.fault(
                "evil.huge_digest",
                &victim,
                "answered a DigestRequest with a different digest and a PageRequest with a full \
                 page of random ids, more to come",
            );
            }
            false
        });
    let observed: Observed = a.evil.served.observed();
    let m = a.metrics()?;
    // After what it bounds was read: the bounds below hold for at least what was seen.
    let elapsed_ms = a.victim_started.elapsed().as_millis() as u64;
    let pulls_metric = metric(&m, "edged_net_catchup_pulls_total");
    let too_many: Vec<String> = observed
        .rounds
        .iter()
        .enumerate()
        .filter(|(_, r)| r.pulls > HUGE_PULLS_PER_ROUND_MAX || r.pages > HUGE_PAGES_PER_ROUND_MAX)
        .take(3)
        .map(|(k, r)| format!("round {k}: {} pages, {} pulls", r.pages, r.pulls))
        .collect();
    // Every round pulls at most its bound; honest rounds pull at most what the honest peer
    // holds (and retries of it).
    let rounds = observed.rounds.len() as u64;
    let metric_bound = rounds * HUGE_PULLS_PER_ROUND_MAX + 2 * HUGE_HONEST_SEGMENTS as u64;
    ctx.check(
        "catchup_pulls_per_round_bounded",
        &["INV-18"],
        rounds > 0 && too_many.is_empty() && pulls_metric <= metric_bound,
        if too_many.is_empty() {
            format!(
                "{rounds} round(s) with the evil peer in {elapsed_ms} ms, each ≤ \
                 {HUGE_PULLS_PER_ROUND_MAX} pulls and ≤ {HUGE_PAGES_PER_ROUND_MAX} pages \
                 ({} pulls, {} pages seen); edged_net_catchup_pulls_total {pulls_metric} ≤ {metric_bound}",
                observed.pulls, observed.pages
            )
        } else {
            format!("over the per-round bounds: {}", too_many.join("; "))
        },
    );
    // The budget of wasted pulls: a bucket of its size, refilled at its rate.
    let budget =
        HUGE_WASTED_PULLS_PER_MIN + (HUGE_WASTED_PULLS_PER_MIN * elapsed_ms).div_ceil(60_000);
    // Rounds with one peer start at least `catchup_followup_ms` apart (after an unproductive
    // one, `catchup_interval_ms` after its end).
    let rounds_max = 1 + elapsed_ms / net::limits::CATCHUP_FOLLOWUP_MS_DEFAULT;
    ctx.check(
        "catchup_budget_holds",
        &["INV-18"],
        observed.pulls <= budget && rounds <= rounds_max,
        format!(
            "{} pull(s) of the evil peer's ids ≤ budget {budget} \
             (catchup_wasted_pulls_per_peer_per_min {HUGE_WASTED_PULLS_PER_MIN} over {elapsed_ms} ms); \
             {rounds} round(s) ≤ {rounds_max}",
            observed.pulls
        ),
    );
    let both = [VICTIM, HONEST];
    let got = ctx.converge(a.fleet(), &acked, &both, 1, HONEST_TRANSFER_MS);
    ctx.record(check::lost(a.fleet(), &acked, &both));
    if dead.is_some() {
        // Delivered by catch-up: the honest peer's dead jobs are complete now.
        let jobs = a.fleet().try_json(HONEST, &["segments"])?;
        let delivered = jobs
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["jobs"].as_array().into_iter().flatten())
            .filter(|j| j["peer"] == victim.as_str() && j["state"] == "delivered")
            .count();
        ctx.check(
            "honest_catchup_works",
            &["INV-15"],
            got && delivered == HUGE_HONEST_SEGMENTS,
            format!(
                "{HUGE_HONEST_SEGMENTS} segment(s) dead-lettered by relay reached {victim} by \
                 catch-up while the evil peer flooded it; {delivered} job(s) completed by it"
            ),
        );
    }
    common_checks(ctx, &mut a)?;
    Ok(a.into_world())
}

/// Dials `to` from every dialer at once; each one's result, in order.
async fn dial_each(
    dialers: Vec<Dialer>,
    to: SocketAddr,
    server: String,
) -> Vec<Result<Connection, evil::EvilError>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (k, d) in dialers.into_iter().enumerate() {
        let server = server.clone();
        tasks.spawn(async move { (k, d.connect(to, &server).await) });
    }
    let mut out = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(r) = done {
            out.push(r);
        }
    }
    out.sort_by_key(|(k, _)| *k);
    out.into_iter().map(|(_, r)| r).collect()
}
