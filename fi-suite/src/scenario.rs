//! Scenarios: workload → faults → heal → converge → check, each naming the invariants it checks.
//!
//! A scenario is a function over a [`Ctx`]: it builds a fleet, runs a workload, applies faults
//! (recording each with the moment it was applied), heals, waits for convergence against a bound
//! derived from the fleet's settings, and records checks. It returns the fleet still running;
//! the runner then adds the checks every scenario gets (panics, counters, duplicate copies),
//! stops the fleet, and writes the [`ScenarioResult`].
//!
//! A scenario that applies faults but none fired is UNKNOWN (the runner sees no fault record);
//! one whose workload never ran says so in a check that is UNKNOWN; one that needs a capability
//! the machine lacks returns [`Skip`] and is SKIPPED with the reason.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::capture::{self, Capture, CaptureError, NodeAllowance};
use crate::check::{self, Acked};
use crate::fleet::{Fleet, FleetSpec, IpBase};
use crate::proxy::{Dir, LinkFaults, LinkSpec, Proxies};
use crate::results::{
    Build, CheckResult, Convergence, FaultRecord, ScenarioResult, Verdict, check as names,
};

/// Environment variable that replays a scenario with the same seed.
pub const SEED_ENV: &str = "EDGE_FI_SEED";

/// The built binaries.
#[derive(Debug, Clone)]
pub struct Bins {
    pub shipped: PathBuf,
    pub fi: PathBuf,
}

/// A scenario could not run here: the reason (a missing capability).
#[derive(Debug, thiserror::Error)]
#[error("skipped: {0}")]
pub struct Skip(pub String);

/// What a scenario leaves running for the runner's final checks.
#[derive(Debug)]
pub struct World {
    pub fleet: Fleet,
    /// The link proxies, when the fleet runs behind them.
    pub proxies: Option<Proxies>,
}

impl World {
    pub fn new(fleet: Fleet) -> World {
        World {
            fleet,
            proxies: None,
        }
    }

    pub fn proxies(&self) -> &Proxies {
        // Only proxied scenarios call this; a scenario calling it on a direct fleet is wrong.
        self.proxies
            .as_ref()
            .expect("a proxied fleet (Ctx::proxied_fleet)")
    }

    /// The index of the link between nodes `a` and `b` (in topology order).
    pub fn link(&self, a: usize, b: usize) -> usize {
        let (lo, hi) = (a.min(b), a.max(b));
        self.fleet
            .spec
            .topology
            .links()
            .iter()
            .position(|&l| l == (lo, hi))
            .expect("a link of the topology")
    }
}

/// One scenario of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub summary: &'static str,
    pub invariants: &'static [&'static str],
    /// In the quick subset (`make edge-fi-quick`).
    pub quick: bool,
    /// It applies faults: if none is recorded, the result is UNKNOWN.
    pub faults: bool,
    pub build: Build,
    pub run: fn(&mut Ctx) -> anyhow::Result<World>,
}

/// Everything a running scenario uses and records.
#[derive(Debug)]
pub struct Ctx {
    pub seed: u64,
    pub rng: ChaCha8Rng,
    pub dir: PathBuf,
    pub bins: Bins,
    pub build: Build,
    /// The mutant every node runs with (mutant runs only).
    pub mutant: Option<String>,
    started: Instant,
    faults: Vec<FaultRecord>,
    checks: Vec<CheckResult>,
    convergence: Option<Convergence>,
    notes: Vec<String>,
    /// The loopback capture of the scenario's fleet (INV-27 evidence), from its creation.
    capture: Option<Result<Capture, CaptureError>>,
    /// The runtime the proxies (and an evil peer) run on.
    rt: Option<tokio::runtime::Runtime>,
    /// This run's loopback /24 (see [`IpBase`]).
    pub ip_base: IpBase,
}

impl Ctx {
    pub fn new(sc: &Scenario, seed: u64, dir: PathBuf, bins: Bins, mutant: Option<String>) -> Ctx {
        Ctx {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            dir,
            bins,
            build: if mutant.is_some() {
                Build::Fi
            } else {
                sc.build
            },
            mutant,
            started: Instant::now(),
            faults: Vec::new(),
            checks: Vec::new(),
            convergence: None,
            notes: Vec::new(),
            capture: None,
            rt: None,
            ip_base: ip_base(seed),
        }
    }

    /// An address of this run's /24 (`127.A.B.last`): nodes use 10.., proxy sides 100.., an
    /// evil peer or a stranger anything else.
    pub fn ip(&self, last: u8) -> std::net::IpAddr {
        self.ip_base.ip(last)
    }

    /// The scenario's tokio runtime (made on first use).
    pub fn runtime(&mut self) -> anyhow::Result<&tokio::runtime::Runtime> {
        if self.rt.is_none() {
            self.rt = Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?,
            );
        }
        Ok(self.rt.as_ref().expect("made above"))
    }

    /// Starts the capture of everything on loopback, for the INV-27 check at the end.
    fn start_capture(&mut self) {
        if self.capture.is_none() {
            self.capture = Some(Capture::start(&self.dir.join("lo.pcap")));
        }
    }

    /// Makes the scenario's fleet behind one proxy per link (the address each node has for a
    /// peer is that link's side), and starts the capture.
    pub fn proxied_fleet(&mut self, mut spec: FleetSpec) -> anyhow::Result<World> {
        if let Some(m) = &self.mutant {
            spec.env.insert("EDGED_MUTANT".into(), m.clone());
        }
        let n = spec.topology.nodes();
        let mut addrs = Vec::with_capacity(n);
        for i in 0..n {
            let ip = self.ip_base.node(i);
            addrs.push(std::net::SocketAddr::new(
                ip,
                crate::proc::free_udp_port(ip)?,
            ));
        }
        let links = spec.topology.links();
        let specs: Vec<LinkSpec> = links
            .iter()
            .enumerate()
            .map(|(k, &(a, b))| LinkSpec {
                a_name: format!("node-{}", a + 1),
                a: addrs[a],
                b_name: format!("node-{}", b + 1),
                b: addrs[b],
                side_ip_a: side_ip(self.ip_base, 2 * k),
                side_ip_b: side_ip(self.ip_base, 2 * k + 1),
            })
            .collect();
        let seed = self.seed;
        let proxies = Proxies::start(self.runtime()?.handle(), specs, seed)?;
        let peer = |i: usize, j: usize| {
            let (lo, hi) = (i.min(j), i.max(j));
            let k = links.iter().position(|&l| l == (lo, hi)).expect("a link");
            let (side_a, side_b) = proxies.sides(k);
            if i == lo { side_a } else { side_b }
        };
        self.start_capture();
        let fleet = Fleet::create(&self.dir.join("fleet"), self.bin(), spec, &addrs, &peer)?;
        Ok(World {
            fleet,
            proxies: Some(proxies),
        })
    }

    /// Sets the faults of one direction of a link (or both, `dir` `None`) and records them.
    pub fn net_fault(
        &mut self,
        world: &World,
        a: usize,
        b: usize,
        dir: Option<Dir>,
        faults: LinkFaults,
    ) -> anyhow::Result<()> {
        let link = world.link(a, b);
        let proxies = world.proxies();
        let started = proxies.started_at();
        let events = match dir {
            Some(d) => vec![proxies.set(link, d, faults)?],
            None => proxies.set_both(link, faults)?.to_vec(),
        };
        for e in events {
            let at = started.saturating_duration_since(self.started).as_millis() as u64;
            for rec in e.fault_records(at) {
                println!(
                    "  [{:>6} ms] fault {} on {}: {}",
                    rec.at_ms, rec.kind, rec.target, rec.detail
                );
                self.faults.push(rec);
            }
        }
        Ok(())
    }

    /// Heals every link, recording it.
    pub fn heal_all(&mut self, world: &World) {
        let proxies = world.proxies();
        let at = proxies
            .started_at()
            .saturating_duration_since(self.started)
            .as_millis() as u64;
        for e in proxies.heal_all() {
            for rec in e.fault_records(at) {
                self.faults.push(rec);
            }
        }
        println!("  [{:>6} ms] every link healed", self.now_ms());
    }

    /// The binary this scenario's nodes run.
    pub fn bin(&self) -> &std::path::Path {
        match self.build {
            Build::Shipped => &self.bins.shipped,
            Build::Fi => &self.bins.fi,
        }
    }

    /// Milliseconds since the scenario started.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Makes the scenario's fleet, unproxied (peers at their own addresses), and starts the
    /// capture.
    pub fn direct_fleet(&mut self, spec: FleetSpec) -> anyhow::Result<Fleet> {
        self.start_capture();
        self.direct_fleet_in("fleet", spec)
    }

    /// [`Ctx::direct_fleet`] in the subdirectory `name` (a scenario with a reference run has
    /// two fleets).
    pub fn direct_fleet_in(&self, name: &str, mut spec: FleetSpec) -> anyhow::Result<Fleet> {
        if let Some(m) = &self.mutant {
            spec.env.insert("EDGED_MUTANT".into(), m.clone());
        }
        let n = spec.topology.nodes();
        let mut addrs = Vec::with_capacity(n);
        for i in 0..n {
            let ip = self.ip_base.node(i);
            addrs.push(std::net::SocketAddr::new(
                ip,
                crate::proc::free_udp_port(ip)?,
            ));
        }
        let peer = |_: usize, j: usize| addrs[j];
        Fleet::create(&self.dir.join(name), self.bin(), spec, &addrs, &peer)
    }

    /// Records a fault applied now.
    pub fn fault(&mut self, kind: &str, target: &str, detail: impl Into<String>) {
        let rec = FaultRecord {
            at_ms: self.now_ms(),
            kind: kind.to_owned(),
            target: target.to_owned(),
            detail: detail.into(),
        };
        println!(
            "  [{:>6} ms] fault {} on {}: {}",
            rec.at_ms, rec.kind, rec.target, rec.detail
        );
        self.faults.push(rec);
    }

    pub fn record(&mut self, check: CheckResult) {
        self.checks.push(check);
    }

    /// Records a check from a condition.
    pub fn check(&mut self, name: &str, invariants: &[&str], ok: bool, detail: impl Into<String>) {
        self.record(CheckResult {
            name: name.to_owned(),
            invariants: invariants.iter().map(|s| (*s).to_owned()).collect(),
            verdict: if ok { Verdict::Pass } else { Verdict::Fail },
            detail: detail.into(),
            observed: None,
            out_of: None,
        });
    }

    /// A check that could not observe what it needs.
    pub fn unknown(&mut self, name: &str, invariants: &[&str], detail: impl Into<String>) {
        self.record(CheckResult {
            name: name.to_owned(),
            invariants: invariants.iter().map(|s| (*s).to_owned()).collect(),
            verdict: Verdict::Unknown,
            detail: detail.into(),
            observed: None,
            out_of: None,
        });
    }

    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        println!("  {text}");
        self.notes.push(text);
    }

    /// Waits for every node of `nodes` to hold every segment of `acked`, within the bound the
    /// fleet's settings give for `hops` hops; records the convergence and its check.
    pub fn converge(
        &mut self,
        fleet: &Fleet,
        acked: &[Acked],
        nodes: &[usize],
        hops: usize,
        transfer_ms: u64,
    ) -> bool {
        let bound_ms = fleet.spec.tuning.convergence_bound_ms(hops, transfer_ms);
        let took = check::converge(fleet, acked, nodes, Duration::from_millis(bound_ms));
        let measured_ms = took.map(|d| d.as_millis() as u64).unwrap_or(bound_ms);
        self.convergence = Some(Convergence {
            measured_ms,
            bound_ms,
        });
        let detail = match took {
            Some(d) => format!(
                "{} node(s) hold all {} segment(s) after {} ms (bound {bound_ms} ms)",
                nodes.len(),
                acked.len(),
                d.as_millis()
            ),
            None => {
                let missing = check::missing(fleet, acked, nodes);
                let what: Vec<String> = missing
                    .iter()
                    .take(3)
                    .map(|(i, ids)| format!("{} lacks {} segment(s)", fleet.node(*i).id, ids.len()))
                    .collect();
                format!("not converged within {bound_ms} ms: {}", what.join("; "))
            }
        };
        self.check(names::CONVERGED, &["INV-15"], took.is_some(), detail);
        took.is_some()
    }
}

/// Runs one scenario to its result. Never panics on the scenario's account: a failure of the
/// scenario's own code is a FAIL with the error.
pub fn run(
    sc: &Scenario,
    seed: u64,
    root: &std::path::Path,
    bins: &Bins,
    mutant: Option<String>,
) -> ScenarioResult {
    // One directory per scenario (the last run's), named without the seed: it is in the
    // result, and node paths end up in Unix socket addresses, which are short.
    let dir = root.join(sc.name);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    println!(
        "== {} (seed {seed}{})",
        sc.name,
        mutant
            .as_deref()
            .map(|m| format!(", mutant {m}"))
            .unwrap_or_default()
    );
    let mut ctx = Ctx::new(sc, seed, dir.clone(), bins.clone(), mutant.clone());
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (sc.run)(&mut ctx)));
    let mut reason = None;
    let mut skipped = false;
    match outcome {
        Ok(Ok(mut world)) => finish(&mut ctx, &mut world),
        Ok(Err(e)) => match e.downcast_ref::<Skip>() {
            Some(skip) => {
                skipped = true;
                reason = Some(skip.0.clone());
            }
            None => {
                let text = format!("{e:#}");
                ctx.record(CheckResult {
                    name: "scenario_ran".into(),
                    invariants: Vec::new(),
                    verdict: Verdict::Fail,
                    detail: text.chars().take(2000).collect(),
                    observed: None,
                    out_of: None,
                });
            }
        },
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".into());
            ctx.record(CheckResult {
                name: "scenario_ran".into(),
                invariants: Vec::new(),
                verdict: Verdict::Fail,
                detail: format!("the scenario panicked: {text}"),
                observed: None,
                out_of: None,
            });
        }
    }
    if sc.faults && !skipped && ctx.faults.is_empty() {
        ctx.unknown(
            names::FAULTS_FIRED,
            &[],
            "the scenario applies faults but none fired",
        );
    }
    let verdict = if skipped {
        Verdict::Skipped
    } else {
        Verdict::combine(ctx.checks.iter().map(|c| c.verdict))
    };
    if reason.is_none() && verdict == Verdict::Unknown {
        reason = ctx
            .checks
            .iter()
            .find(|c| c.verdict == Verdict::Unknown)
            .map(|c| format!("{}: {}", c.name, c.detail));
    }
    let mut repro = format!("{SEED_ENV}={seed} edge-fi run {}", sc.name);
    if let Some(m) = &mutant {
        repro = format!("EDGED_MUTANT={m} {repro} --mutant {m}");
    }
    let result = ScenarioResult {
        scenario: sc.name.to_owned(),
        summary: sc.summary.to_owned(),
        seed,
        invariants: sc.invariants.iter().map(|s| (*s).to_owned()).collect(),
        verdict,
        checks: ctx.checks,
        faults: ctx.faults,
        convergence: ctx.convergence,
        build: ctx.build,
        mutant,
        reason,
        run_dir: dir.display().to_string(),
        repro,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    print_result(&result);
    if result.verdict == Verdict::Pass {
        prune(&dir);
    }
    result
}

/// Keeps a passing run's logs, configs and results, and drops its bulk (segment files, partials,
/// payloads): runs of many scenarios would otherwise fill the disk.
fn prune(dir: &std::path::Path) {
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(t) if t.is_file() => {
                    let bulk = path
                        .extension()
                        .is_some_and(|x| x == "seg" || x == "part" || x == "bin" || x == "redb");
                    if bulk {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The loopback address of proxy side `k`.
fn side_ip(base: IpBase, k: usize) -> std::net::IpAddr {
    // Cannot truncate: a fleet of NODES_MAX nodes has far fewer than 150 link sides.
    base.ip(PROXY_IP_FIRST + k as u8)
}

/// Last octet of the first proxy side's address.
const PROXY_IP_FIRST: u8 = 100;

/// A run's /24: from the seed and the process, so two runs at once differ (and one run's
/// fleets all share it). `127.0.x.x` is left to everything else on the machine.
fn ip_base(seed: u64) -> IpBase {
    let h = blake3::hash(
        &[
            seed.to_le_bytes(),
            u64::from(std::process::id()).to_le_bytes(),
        ]
        .concat(),
    );
    let b = h.as_bytes();
    IpBase(64 + b[0] % 64, b[1])
}

/// The checks every scenario gets, then a clean stop of every node.
fn finish(ctx: &mut Ctx, world: &mut World) {
    if let Some(capture) = ctx.capture.take() {
        let captured = capture.and_then(Capture::stop);
        let nodes: Vec<NodeAllowance> = world
            .fleet
            .nodes
            .iter()
            .map(|n| NodeAllowance {
                name: n.id.clone(),
                addr: n.addr,
                allowed: n.peer_addrs.iter().copied().collect(),
            })
            .collect();
        ctx.record(capture::check_packets_only_to_peers(&captured, &nodes));
    }
    // A datagram at a proxy from anyone but its link's node is not a node's doing (the capture
    // judges the nodes), but it is worth knowing when a scenario's traffic looks odd.
    if let Some(proxies) = &world.proxies {
        let strays = proxies.stray_count();
        if strays > 0 {
            let first = proxies.strays().first().map_or(String::new(), |s| {
                format!(" (first: from {} at {} on link {})", s.from, s.side, s.link)
            });
            ctx.note(format!(
                "the proxies dropped {strays} datagram(s) from outside their links{first}"
            ));
        }
    }
    let fleet = &mut world.fleet;
    ctx.record(check::counters(fleet));
    ctx.record(check::duplicates(fleet));
    let unclean = fleet.stop_all();
    let total = fleet.len();
    ctx.check(
        "stops_cleanly",
        &["INV-14"],
        unclean.is_empty(),
        if unclean.is_empty() {
            format!("{total} node(s) stopped on SIGTERM with status 0")
        } else {
            unclean.join("; ")
        },
    );
    ctx.record(check::panics(fleet));
}

fn print_result(r: &ScenarioResult) {
    for c in &r.checks {
        if c.verdict != Verdict::Pass {
            println!("  {:<8} {}: {}", c.verdict.as_str(), c.name, c.detail);
        }
    }
    let conv = r
        .convergence
        .map(|c| {
            format!(
                ", converged in {} ms (bound {} ms)",
                c.measured_ms, c.bound_ms
            )
        })
        .unwrap_or_default();
    println!(
        "-> {} {} in {:.1} s, {} check(s), {} fault(s){conv}{}",
        r.verdict.as_str(),
        r.scenario,
        r.duration_ms as f64 / 1000.0,
        r.checks.len(),
        r.faults.len(),
        r.reason
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default()
    );
}

/// Tally of a set of results, by verdict.
pub fn tally(results: &[ScenarioResult]) -> BTreeMap<Verdict, usize> {
    let mut out = BTreeMap::new();
    for r in results {
        *out.entry(r.verdict).or_default() += 1;
    }
    out
}
