//! What a run of the suite leaves behind, as data: the contract between the scenario runner,
//! the mutant runner and the report generator.
//!
//! Everything lives under one results directory ([`Layout`]), by default `target/fi/results/`:
//!
//! ```text
//! results/
//!   scenarios/<scenario>.json   one ScenarioResult per scenario run (the last run wins)
//!   mutants.json                a MutantsRun: every mutant tried and what killed it
//!   tests.json                  a TestsRun: every unit/property/integration test and its outcome,
//!                               read from the test runner's JUnit output
//! ```
//!
//! Verdicts are deliberately four-valued: a scenario whose fault never fired, or whose workload
//! never ran, is [`Verdict::Unknown`], never [`Verdict::Pass`]; one the machine cannot run (a
//! missing capability) is [`Verdict::Skipped`] with the reason.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The outcome of a check, a scenario or a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Pass,
    Fail,
    /// The evidence is missing: the fault never fired, the workload never ran, a check could
    /// not observe what it needs.
    Unknown,
    /// Not run here: a capability the machine lacks (the reason says which).
    Skipped,
}

impl Verdict {
    /// The verdict of several: any failure fails; then anything unknown is unknown; all
    /// skipped is skipped; otherwise pass.
    pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        let mut any = false;
        let (mut fail, mut unknown, mut pass) = (false, false, false);
        for v in verdicts {
            any = true;
            match v {
                Verdict::Fail => fail = true,
                Verdict::Unknown => unknown = true,
                Verdict::Pass => pass = true,
                Verdict::Skipped => {}
            }
        }
        if fail {
            Verdict::Fail
        } else if unknown || !any {
            Verdict::Unknown
        } else if pass {
            Verdict::Pass
        } else {
            Verdict::Skipped
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Unknown => "UNKNOWN",
            Verdict::Skipped => "SKIPPED",
        }
    }
}

/// Names of the checks every scenario reports the same way, so the report can add them up
/// across scenarios (the data-safety figures).
pub mod check {
    /// Segments acknowledged (to an importer or a peer) that some node able to reach them does
    /// not hold byte-identical after healing. `observed` = lost, `out_of` = acknowledged.
    pub const LOST: &str = "lost";
    /// Acknowledgements whose segment was missing after the acknowledging node crashed, before
    /// anything could fetch it again. `observed` = such acks, `out_of` = acks checked.
    pub const ACKS_BEFORE_DURABLE: &str = "acks_before_durable";
    /// Segments stored more than once on a node (files or listed rows). `observed` = extras.
    pub const DUPLICATE_COPIES: &str = "duplicate_copies";
    /// `panicked at` lines in every node's log. `observed` = panics.
    pub const PANICS: &str = "panics";
    /// INV-26 on every node's real `/metrics`. `observed` = nodes that do not reconcile.
    pub const COUNTERS: &str = "counters_reconcile";
    /// INV-27: datagrams a node sent anywhere but its configured peers. `observed` = such.
    pub const PACKETS_ONLY_TO_PEERS: &str = "packets_only_to_peers";
    /// INV-25: the final state after kills equals the state of the same workload without.
    pub const SAME_STATE_AS_WITHOUT_KILLS: &str = "same_state_as_without_kills";
    /// The scenario's faults fired and its workload ran (else the scenario is UNKNOWN).
    pub const FAULTS_FIRED: &str = "faults_fired";
    /// Every node converged within the bound.
    pub const CONVERGED: &str = "converged";
}

/// One check of a scenario (e.g. "lost = 0", "counters reconcile on node-3").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// A name from [`check`] where one fits, else the scenario's own.
    pub name: String,
    /// Invariant ids (`INV-06`) this check gives evidence for.
    pub invariants: Vec<String>,
    pub verdict: Verdict,
    /// What was observed: figures, the first offending item, why it is unknown.
    pub detail: String,
    /// The count the check is about (lost segments, panics, …), when it counts something.
    #[serde(default)]
    pub observed: Option<u64>,
    /// Out of how many (segments acknowledged, nodes, …).
    #[serde(default)]
    pub out_of: Option<u64>,
}

/// One fault applied during a scenario, with the moment it was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Milliseconds since the scenario started.
    pub at_ms: u64,
    /// A stable kind: `net.drop`, `net.partition`, `proc.kill9`, `proc.crash_point`,
    /// `proc.sigstop`, `disk.full`, `disk.corrupt`, `clock.skew`, `evil.bad_signature`, …
    pub kind: String,
    /// What it was applied to (`node-3`, `link node-1→node-2`, a file).
    pub target: String,
    pub detail: String,
}

/// Convergence after healing, against the bound derived from the retry and catch-up settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Convergence {
    pub measured_ms: u64,
    pub bound_ms: u64,
}

/// Which build of `edged` a scenario ran against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Build {
    /// The release binary as shipped: no crash points, no mutants.
    Shipped,
    /// The release binary with the `fi` feature: crash points and mutants (dormant unless set).
    Fi,
}

/// The result of one scenario run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub scenario: String,
    /// One line: what the scenario does.
    pub summary: String,
    pub seed: u64,
    /// Invariant ids the scenario claims to check.
    pub invariants: Vec<String>,
    pub verdict: Verdict,
    pub checks: Vec<CheckResult>,
    pub faults: Vec<FaultRecord>,
    pub convergence: Option<Convergence>,
    pub build: Build,
    /// The mutant active in every node, when the mutant runner ran it.
    pub mutant: Option<String>,
    /// Why it was skipped or is unknown, when it was.
    pub reason: Option<String>,
    /// Where the fleet's files and logs are.
    pub run_dir: String,
    /// The command that replays it: `EDGE_FI_SEED=… edge-fi run NAME`.
    pub repro: String,
    pub duration_ms: u64,
}

/// How a mutant fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MutantVerdict {
    /// At least one test or scenario claiming its invariants failed with it active.
    Killed,
    /// Everything claiming its invariants passed with it active: those claims are vacuous.
    Survived,
    /// It could not be judged (the build failed, nothing claiming its invariants ran).
    Unknown,
}

/// One mutant of the catalogue (`traceability/mutants.toml`) and what it met.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutantResult {
    pub name: String,
    pub invariants: Vec<String>,
    pub description: String,
    pub verdict: MutantVerdict,
    /// Tests (`binary::name`) and scenarios (`scenario:NAME`) that failed with it active.
    pub killed_by: Vec<String>,
    /// Tests and scenarios run with it active.
    pub ran: Vec<String>,
    pub detail: String,
    pub log: String,
}

/// A whole mutant run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutantsRun {
    /// `full` or `quick` (a subset).
    pub mode: String,
    pub mutants: Vec<MutantResult>,
    /// `make mutants` (cargo-mutants over the pure cores), when it ran: caught / total.
    pub pure_cores: Option<PureCores>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PureCores {
    pub caught: u32,
    pub missed: u32,
    pub timeout: u32,
    pub unviable: u32,
    pub scope: Vec<String>,
}

/// The outcome of one unit, property, simulation or integration test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestOutcome {
    Passed,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResult {
    /// The test binary (`store::space`, `edged::daemon`, `net` for unit tests, …).
    pub binary: String,
    /// The test's full name within its binary (`inv_06_inv_08_ceiling_admits_…`).
    pub name: String,
    pub outcome: TestOutcome,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestsRun {
    /// Where it was read from (the JUnit file).
    pub source: String,
    pub tests: Vec<TestResult>,
}

/// Where results live.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    pub fn scenarios(&self) -> PathBuf {
        self.root.join("scenarios")
    }

    pub fn scenario(&self, name: &str) -> PathBuf {
        self.scenarios().join(format!("{name}.json"))
    }

    pub fn mutants(&self) -> PathBuf {
        self.root.join("mutants.json")
    }

    pub fn tests(&self) -> PathBuf {
        self.root.join("tests.json")
    }
}

/// Writes `value` as pretty JSON to `path` through a temporary file and a rename, creating the
/// parent directory.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Reads JSON written by [`write_json`].
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let bytes = std::fs::read(path)?;
    Ok(serde_json::from_slice(&bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_combine_failure_first_and_never_pass_on_nothing() {
        use Verdict::*;
        let c = |v: &[Verdict]| Verdict::combine(v.iter().copied());
        assert_eq!(c(&[]), Unknown);
        assert_eq!(c(&[Pass, Pass]), Pass);
        assert_eq!(c(&[Pass, Skipped]), Pass);
        assert_eq!(c(&[Skipped, Skipped]), Skipped);
        assert_eq!(c(&[Pass, Unknown]), Unknown);
        assert_eq!(c(&[Unknown, Fail, Pass]), Fail);
    }

    #[test]
    fn results_round_trip_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let r = ScenarioResult {
            scenario: "line5-baseline".into(),
            summary: "s".into(),
            seed: 7,
            invariants: vec!["INV-15".into()],
            verdict: Verdict::Pass,
            checks: vec![CheckResult {
                name: check::LOST.into(),
                invariants: vec!["INV-15".into()],
                verdict: Verdict::Pass,
                detail: "0 of 12".into(),
                observed: Some(0),
                out_of: Some(12),
            }],
            faults: vec![FaultRecord {
                at_ms: 12,
                kind: "net.drop".into(),
                target: "link node-1→node-2".into(),
                detail: "20%".into(),
            }],
            convergence: Some(Convergence {
                measured_ms: 900,
                bound_ms: 20_000,
            }),
            build: Build::Shipped,
            mutant: None,
            reason: None,
            run_dir: "/tmp/x".into(),
            repro: "EDGE_FI_SEED=7 edge-fi run line5-baseline".into(),
            duration_ms: 1000,
        };
        write_json(&layout.scenario(&r.scenario), &r).unwrap();
        let back: ScenarioResult = read_json(&layout.scenario(&r.scenario)).unwrap();
        assert_eq!(back, r);
        let text = std::fs::read_to_string(layout.scenario(&r.scenario)).unwrap();
        assert!(
            text.contains("\"PASS\"") && text.contains("\"shipped\""),
            "{text}"
        );
    }
}
