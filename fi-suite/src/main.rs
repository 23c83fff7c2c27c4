//! `edge-fi`: failure injection against real `edged` processes, and the traceability report.
//!
//! The suite builds `edged` (the shipped release binary, and a feature build of the same code
//! with crash points and mutants), runs fleets of real daemons on loopback behind fault-injecting
//! UDP proxies, applies seeded faults (network, processes, disks, clocks, an evil peer, hostile
//! USB media), checks the outcome from outside (the CLI's `--json`, `/metrics`, files on disk,
//! the logs), runs the mutants against the tests and scenarios that claim their invariants, and
//! writes `traceability/report.{md,json,html}`.
//!
//! ```text
//! edge-fi build                 build target/fi/bin/edged (shipped) and edged-fi (crash points, mutants)
//! edge-fi list                  the scenarios, their invariants, the quick subset
//! edge-fi run NAME… [--seed N] [--mutant M]
//! edge-fi scenarios [--quick]   every scenario (or the quick subset)
//! edge-fi tests [JUNIT]          the test runner's JUnit report → results/tests.json
//! edge-fi mutants [--quick]      each mutant against the tests (and scenarios) claiming it
//! edge-fi pure-cores OUTCOMES…   cargo-mutants' caught ratio of the pure cores (make mutants)
//! edge-fi report                traceability/report.{md,json,html} from target/fi/results
//! edge-fi all [--quick]          build, tests, scenarios, mutants, report: `make edge-fi`
//! ```

mod capture;
mod check;
mod evil;
mod fleet;
mod host;
mod junit;
mod look;
mod mutants;
mod proc;
mod proxy;
mod report;
mod results;
mod scenario;
mod scenarios;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use results::{Layout, Verdict};
use scenario::Bins;

#[derive(Debug, Parser)]
#[command(
    name = "edge-fi",
    about = "Failure injection against real edged processes, and the traceability report"
)]
struct Cli {
    /// The workspace root (default: the one this binary was built from).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the shipped edged and the fault-injection build (crash points, mutants).
    Build,
    /// List the scenarios.
    List,
    /// Run scenarios by name.
    Run {
        names: Vec<String>,
        /// Seed of every random choice (default: EDGE_FI_SEED, else random; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Run every node with this mutant active (the fault-injection build).
        #[arg(long)]
        mutant: Option<String>,
    },
    /// Run every scenario, or the quick subset.
    Scenarios {
        #[arg(long)]
        quick: bool,
    },
    /// Write traceability/report.{md,json,html} from the results; exit 1 unless every
    /// invariant is covered, none failing and none vacuous.
    Report(report::ReportArgs),
    #[command(flatten)]
    Runner(mutants::RunnerCmd),
    /// Everything `make edge-fi` runs: build, the tests, the scenarios, the mutants, the
    /// report. Exits 1 unless the report finds every invariant covered, none failing and none
    /// vacuous.
    All {
        /// The quick subset of scenarios and mutants (every invariant still covered).
        #[arg(long)]
        quick: bool,
        /// Read the JUnit report the test command just wrote instead of running the tests
        /// again (CI runs `make test` first).
        #[arg(long)]
        reuse_tests: bool,
    },
}

/// Where the suite keeps its builds, runs and results.
struct Paths {
    root: PathBuf,
}

impl Paths {
    fn fi(&self) -> PathBuf {
        self.root.join("target").join("fi")
    }
    fn bins(&self) -> Bins {
        let bin = self.fi().join("bin");
        Bins {
            shipped: bin.join("edged"),
            fi: bin.join("edged-fi"),
        }
    }
    fn runs(&self) -> PathBuf {
        self.fi().join("runs")
    }
    /// Scenario runs with a mutant active: apart from the runs the report links to. Short,
    /// because node paths end up in Unix socket addresses.
    fn mutant_runs(&self) -> PathBuf {
        self.fi().join("mr")
    }
    fn results(&self) -> Layout {
        Layout::new(self.fi().join("results"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = cli
        .root
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    // Canonical: paths under it end up in Unix socket addresses, which are short.
    let root = root.canonicalize().unwrap_or(root);
    let paths = Paths { root };
    match dispatch(&paths, cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("edge-fi: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(paths: &Paths, cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Build => {
            build(paths)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::List => {
            for s in scenarios::all() {
                println!(
                    "{:<28} {:<5} {}",
                    s.name,
                    if s.quick { "quick" } else { "" },
                    s.invariants.join(" ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            names,
            seed,
            mutant,
        } => {
            let chosen = names
                .iter()
                .map(|n| {
                    scenarios::find(n)
                        .with_context(|| format!("no scenario named {n} (see `edge-fi list`)"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            run_scenarios(paths, &chosen, seed, mutant)
        }
        Cmd::Report(args) => Ok(if report::report(&args.sources(&paths.root))? {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }),
        Cmd::Scenarios { quick } => run_scenarios(paths, &subset(quick), None, None),
        Cmd::Runner(cmd) => {
            mutants::dispatch(cmd, &paths.root, &paths.results(), &scenario_hook(paths))
        }
        Cmd::All { quick, reuse_tests } => all(paths, quick, reuse_tests),
    }
}

/// Every scenario, or the quick subset.
fn subset(quick: bool) -> Vec<scenario::Scenario> {
    scenarios::all()
        .into_iter()
        .filter(|s| !quick || s.quick)
        .collect()
}

/// The scenarios a mutant faces when its tests did not kill it: those claiming one of its
/// invariants, one after another until one fails or the deadline passes.
fn scenario_hook(
    paths: &Paths,
) -> impl Fn(&str, &[String], Instant) -> anyhow::Result<Vec<(String, Verdict)>> + '_ {
    move |mutant, invariants, deadline| {
        let bins = paths.bins();
        if !bins.fi.exists() {
            build(paths)?;
        }
        let mut out = Vec::new();
        let claiming = scenarios::all().into_iter().filter(|s| {
            s.invariants
                .iter()
                .any(|i| invariants.iter().any(|m| m == i))
        });
        for sc in claiming {
            if Instant::now() >= deadline {
                break;
            }
            let r = scenario::run(
                &sc,
                rand::random(),
                &paths.mutant_runs(),
                &bins,
                Some(mutant.to_owned()),
            );
            let killed = r.verdict == Verdict::Fail;
            out.push((sc.name.to_owned(), r.verdict));
            if killed {
                break;
            }
        }
        Ok(out)
    }
}

/// `make edge-fi`: each step runs even when an earlier one found failures (the report shows
/// them all); a step that cannot run at all (a build that fails) stops the run.
fn all(paths: &Paths, quick: bool, reuse_tests: bool) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let layout = paths.results();
    // Results of earlier runs must not stand in for this one's.
    for stale in [layout.scenarios(), layout.mutants(), layout.tests()] {
        match std::fs::remove_dir_all(&stale).or_else(|_| std::fs::remove_file(&stale)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", stale.display())),
        }
    }
    let step = |name: &str| println!("\n==== edge-fi: {name} ({} s)", started.elapsed().as_secs());

    step("build");
    build(paths)?;

    step("tests");
    if !reuse_tests {
        let status = mutants::Nextest::new(&paths.root)
            .baseline_command()
            .status()
            .context("cannot run the test runner")?;
        println!("test runner: {status}");
    }
    mutants::dispatch(
        mutants::RunnerCmd::Tests {
            junit: mutants::BASELINE_JUNIT_PATH.into(),
        },
        &paths.root,
        &layout,
        &scenario_hook(paths),
    )?;

    step(if quick {
        "scenarios (quick)"
    } else {
        "scenarios"
    });
    run_scenarios(paths, &subset(quick), None, None)?;

    step(if quick { "mutants (quick)" } else { "mutants" });
    mutants::dispatch(
        mutants::RunnerCmd::Mutants {
            quick,
            only: Vec::new(),
        },
        &paths.root,
        &layout,
        &scenario_hook(paths),
    )?;

    step("report");
    let ok = report::report(&report::ReportArgs::default().sources(&paths.root))?;
    println!("edge-fi: finished in {} s", started.elapsed().as_secs());
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run_scenarios(
    paths: &Paths,
    chosen: &[scenario::Scenario],
    seed: Option<u64>,
    mutant: Option<String>,
) -> anyhow::Result<ExitCode> {
    let bins = paths.bins();
    if !bins.shipped.exists() || !bins.fi.exists() {
        build(paths)?;
    }
    let seed = match seed.or_else(|| {
        std::env::var(scenario::SEED_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
    }) {
        Some(s) => s,
        None => rand::random(),
    };
    let layout = paths.results();
    let mut all = Vec::new();
    for (k, sc) in chosen.iter().enumerate() {
        // One seed per run; each scenario's derived from it and its position, so a whole run
        // replays from the one printed seed, and one scenario from its own.
        let sc_seed = if chosen.len() == 1 {
            seed
        } else {
            seed.wrapping_add(k as u64)
        };
        let result = scenario::run(sc, sc_seed, &paths.runs(), &bins, mutant.clone());
        if mutant.is_none() {
            results::write_json(&layout.scenario(&result.scenario), &result)?;
        }
        all.push(result);
    }
    let tally = scenario::tally(&all);
    let line: Vec<String> = tally
        .iter()
        .map(|(v, n)| format!("{n} {}", v.as_str()))
        .collect();
    println!("\n{} scenario(s): {}", all.len(), line.join(", "));
    let bad = all
        .iter()
        .any(|r| matches!(r.verdict, Verdict::Fail | Verdict::Unknown));
    Ok(if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Builds both binaries with cargo and copies them to `target/fi/bin`.
fn build(paths: &Paths) -> anyhow::Result<()> {
    let bins = paths.bins();
    let dir = bins.shipped.parent().context("bin dir")?.to_owned();
    std::fs::create_dir_all(&dir)?;
    for (features, to) in [(None, &bins.shipped), (Some("fi"), &bins.fi)] {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(&paths.root)
            .args(["build", "--release", "--locked", "-p", "edged"]);
        if let Some(f) = features {
            cmd.args(["--features", f]);
        }
        println!("edge-fi: {cmd:?}");
        let status = cmd.status().context("cannot run cargo")?;
        if !status.success() {
            bail!("cargo build failed ({status})");
        }
        let built = paths.root.join("target").join("release").join("edged");
        std::fs::copy(&built, to)
            .with_context(|| format!("cannot copy {} to {}", built.display(), to.display()))?;
        // Test machinery never ships: the shipped binary must not hold the names that switch
        // it on, and the fault-injection build must (else its crash points are absent).
        let text = std::fs::read(to).with_context(|| format!("cannot read {}", to.display()))?;
        let holds = |needle: &str| text.windows(needle.len()).any(|w| w == needle.as_bytes());
        for name in MACHINERY_ENV {
            match (features.is_some(), holds(name)) {
                (false, true) => bail!("the shipped edged holds {name}: test machinery ships"),
                (true, false) => bail!("the fault-injection edged lacks {name}"),
                _ => {}
            }
        }
        // Simulation machinery is in no build of the daemon: not the shipped one, not this one.
        for module in SIMULATION_MODULES {
            if holds(module) {
                bail!(
                    "{} holds {module}: simulation machinery ships",
                    to.display()
                );
            }
        }
    }
    Ok(())
}

/// Module paths of the simulation machinery (feature `sim` of store, relay and net); their
/// names appear in a binary's symbols and panic locations whenever any of their code is in it.
const SIMULATION_MODULES: [&str; 2] = ["store::fs::sim", "relay::harness"];

/// The environment variables that switch on crash points and mutants in the `fi` build.
const MACHINERY_ENV: [&str; 2] = ["EDGED_CRASH_AT", "EDGED_MUTANT"];
