//! The mutant runner: proof that the tests can fail.
//!
//! Each mutant of the catalogue (`traceability/mutants.toml`) is a deliberate bug compiled into
//! the feature builds (`--all-features` test binaries, the `fi` build of `edged`) and switched
//! on at run time by [`MUTANT_ENV`]. For each mutant the runner
//!
//! 1. runs the tests that claim one of its invariants (test names carry the ids as a leading
//!    chain `inv_03_inv_05_…`) with the mutant active, through the test runner and the same
//!    build as `make test` ([`Nextest`]: same features, same cargo profile, so nothing is
//!    rebuilt), and reads the runner's JUnit report;
//! 2. when those tests did not kill it, runs the fleet scenarios that claim its invariants with
//!    the mutant active in every node (a [`ScenarioHook`] the scenario runner provides);
//! 3. judges ([`judge`]): KILLED when a claimed test or scenario failed, SURVIVED when every one
//!    that ran passed (the claims did not notice the broken invariant), UNKNOWN when nothing
//!    claims the invariants or a run broke (stopped at its time bound, the build failed, the
//!    report is missing).
//!
//! It prints one line per mutant as it goes and returns a [`MutantsRun`], written to
//! `results/mutants.json`. Every test run is bounded ([`MUTANT_TESTS_SECS_MAX`]), and so is the
//! time given to the scenarios ([`MUTANT_SCENARIOS_SECS_MAX`]).
//!
//! `make mutants` (cargo-mutants over the pure cores) is read here too ([`pure_cores`]).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;

use crate::junit::{self, Case};
use crate::results::{
    Layout, MutantResult, MutantVerdict, MutantsRun, PureCores, TestOutcome, TestsRun, Verdict,
};

/// The catalogue, relative to the workspace root.
pub const CATALOGUE_PATH: &str = "traceability/mutants.toml";
/// The environment variable naming the active mutant (read by `store::mutants::active`).
pub const MUTANT_ENV: &str = "EDGED_MUTANT";
/// The test runner's profile for mutant runs (`.config/nextest.toml`): no retries, no
/// fail-fast, every test's output kept in its JUnit report.
pub const NEXTEST_PROFILE: &str = "fi-mutant";
/// Where that profile writes its JUnit report, relative to the workspace root.
pub const NEXTEST_JUNIT_PATH: &str = "target/nextest/fi-mutant/junit.xml";
/// Where `make test` (profile `ci`) writes its JUnit report: the run without any mutant.
pub const BASELINE_JUNIT_PATH: &str = "target/nextest/ci/junit.xml";
/// Per-mutant logs and JUnit copies, relative to the workspace root.
pub const LOG_DIR_PATH: &str = "target/fi/mutants";
/// `pure-cores.json` in the results directory: `make mutants`' caught ratio.
pub const PURE_CORES_FILE: &str = "pure-cores.json";

/// The claimed tests of one mutant are stopped after this long: ten times what the widest
/// invariant's tests take on a loaded 2-core machine (INV-05: under a minute of test time, and
/// the listing). A mutant that makes one test hang is stopped by the runner's slow-test bound
/// first (3 × 60 s, profile `fi-mutant`).
pub const MUTANT_TESTS_SECS_MAX: u64 = 600;
/// No scenario of a mutant starts after this long from the first one.
pub const MUTANT_SCENARIOS_SECS_MAX: u64 = 600;
/// After its bound, the test run gets this long to stop cleanly (and write its report) before
/// it is killed.
pub const STOP_GRACE_SECS: u64 = 30;
/// How often a running test run is checked on.
pub const POLL_MS: u64 = 200;
/// Mutants in a catalogue, at most.
pub const CATALOGUE_MUTANTS_MAX: usize = 500;
/// A mutant's name, at most (it is a file name and an environment value).
pub const MUTANT_NAME_BYTES_MAX: usize = 64;
/// Killing tests named on a mutant's line before "(+N)".
pub const LINE_KILLERS_MAX: usize = 2;
/// cargo-mutants' result files are refused beyond this size.
pub const CARGO_MUTANTS_FILE_BYTES_MAX: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("cannot read the mutant catalogue {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the mutant catalogue is not valid TOML of [[mutant]] entries: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("mutant {name:?}: {why}")]
    Invalid { name: String, why: String },
    #[error("the catalogue has {0} mutants, more than {CATALOGUE_MUTANTS_MAX}")]
    TooMany(usize),
    #[error("no mutant named {0:?} in the catalogue")]
    Unknown(String),
}

#[derive(Debug, thiserror::Error)]
pub enum PureCoresError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is larger than {CARGO_MUTANTS_FILE_BYTES_MAX} bytes")]
    TooLarge { path: String },
    #[error("{path} is not cargo-mutants' output: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("the unmutated tree did not pass its tests ({0}): no mutant was judged")]
    BaselineFailed(String),
    #[error("incomplete run: {judged} of {listed} mutants have an outcome")]
    Incomplete { judged: u32, listed: u32 },
}

/// One entry of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mutant {
    /// What [`MUTANT_ENV`] is set to.
    pub name: String,
    /// The invariants it breaks (`INV-03`).
    pub invariants: Vec<String>,
    pub description: String,
    /// The file holding its mutation point.
    #[serde(rename = "where")]
    pub location: String,
    /// In the quick subset.
    #[serde(default)]
    pub quick: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    #[serde(default)]
    mutant: Vec<Mutant>,
}

/// The mutant catalogue, checked: unique well-formed names, at least one well-formed invariant
/// id each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    pub mutants: Vec<Mutant>,
}

/// Which mutants a run tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Quick,
    Named(Vec<String>),
}

impl Selection {
    /// The `mode` of the run's results.
    pub fn mode(&self) -> &'static str {
        match self {
            Selection::All => "full",
            Selection::Quick => "quick",
            Selection::Named(_) => "named",
        }
    }
}

impl Catalogue {
    pub fn load(path: &Path) -> Result<Catalogue, CatalogueError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogueError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Catalogue::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Catalogue, CatalogueError> {
        let file: CatalogueFile = toml::from_str(text)?;
        if file.mutant.len() > CATALOGUE_MUTANTS_MAX {
            return Err(CatalogueError::TooMany(file.mutant.len()));
        }
        let mut seen = BTreeSet::new();
        for m in &file.mutant {
            let invalid = |why: &str| CatalogueError::Invalid {
                name: m.name.clone(),
                why: why.to_owned(),
            };
            let name_ok = !m.name.is_empty()
                && m.name.len() <= MUTANT_NAME_BYTES_MAX
                && m.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !name_ok {
                return Err(invalid(
                    "a name is 1 to 64 characters of a-z, 0-9 and _ (it is an environment value and a file name)",
                ));
            }
            if !seen.insert(m.name.as_str()) {
                return Err(invalid("named twice"));
            }
            if m.invariants.is_empty() {
                return Err(invalid("names no invariant: nothing could kill it"));
            }
            if let Some(bad) = m.invariants.iter().find(|i| test_token(i).is_none()) {
                return Err(invalid(&format!("{bad:?} is not an invariant id (INV-NN)")));
            }
            if m.description.trim().is_empty() {
                return Err(invalid("has no description"));
            }
        }
        Ok(Catalogue {
            mutants: file.mutant,
        })
    }

    /// The mutants `selection` names, in catalogue order.
    pub fn select(&self, selection: &Selection) -> Result<Vec<&Mutant>, CatalogueError> {
        match selection {
            Selection::All => Ok(self.mutants.iter().collect()),
            Selection::Quick => Ok(self.mutants.iter().filter(|m| m.quick).collect()),
            Selection::Named(names) => {
                if let Some(unknown) = names
                    .iter()
                    .find(|n| !self.mutants.iter().any(|m| &m.name == *n))
                {
                    return Err(CatalogueError::Unknown(unknown.clone()));
                }
                Ok(self
                    .mutants
                    .iter()
                    .filter(|m| names.contains(&m.name))
                    .collect())
            }
        }
    }
}

/// `INV-03` → `inv_03_`, the form test names carry; `None` for anything but `INV-` and two
/// digits.
pub fn test_token(invariant: &str) -> Option<String> {
    let digits = invariant.strip_prefix("INV-")?;
    (digits.len() == 2 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("inv_{digits}_"))
}

/// The invariant ids a test name claims: the chain of `inv_NN_` at the start of any of its
/// `::`-separated parts (`tests::inv_06_inv_08_ceiling` → INV-06, INV-08). `inv_6_` is not an
/// id.
pub fn claimed_invariants(test_name: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for part in test_name.split("::") {
        let mut rest = part.as_bytes();
        while let [b'i', b'n', b'v', b'_', d1, d2, b'_', tail @ ..] = rest {
            if !(d1.is_ascii_digit() && d2.is_ascii_digit()) {
                break;
            }
            let id = format!("INV-{}{}", *d1 as char, *d2 as char);
            if !ids.contains(&id) {
                ids.push(id);
            }
            rest = tail;
        }
    }
    ids
}

/// The test runner's filter for the tests claiming any of `invariants`: the same rule as
/// [`claimed_invariants`], as one regular expression per id.
pub fn filterset(invariants: &[String]) -> String {
    invariants
        .iter()
        .filter_map(|i| test_token(i))
        .map(|token| format!("test(/(^|::)(inv_[0-9][0-9]_)*{token}/)"))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// `filter` without the tests that fail without any mutant: with the runner stopping at the
/// first failure, one of them would end the run before a test that can kill the mutant ran.
pub fn without_failing(filter: &str, failing: &[Case]) -> String {
    let failing: Vec<String> = failing
        .iter()
        .filter(|c| c.result.outcome == TestOutcome::Failed)
        .map(|c| {
            format!(
                "(binary_id(={}) & test(={}))",
                c.result.binary, c.result.name
            )
        })
        .collect();
    if failing.is_empty() {
        filter.to_owned()
    } else {
        format!("({filter}) - ({})", failing.join(" | "))
    }
}

/// What one run of the claimed tests gave.
#[derive(Debug, Clone, Default)]
pub struct TestsOutcome {
    /// The test cases the runner reported (none when it wrote no report).
    pub cases: Vec<Case>,
    /// Why the run is not complete evidence (stopped at its bound, failed to build, no report,
    /// a report that contradicts the exit status), if it is not.
    pub broke: Option<String>,
    pub elapsed: Duration,
}

/// Runs the tests a filter selects with a mutant active.
pub trait TestRunner {
    fn run(&self, mutant: &str, filter: &str, log: &Path) -> TestsOutcome;
}

/// Runs the fleet scenarios that claim any of `invariants` with `mutant` active in every node
/// (the fault-injection build), and returns each scenario's name and verdict. No scenario may
/// start after `deadline`. Provided by the scenario runner; [`NoScenarios`] runs none.
pub trait ScenarioHook {
    fn run(
        &self,
        mutant: &str,
        invariants: &[String],
        deadline: Instant,
    ) -> anyhow::Result<Vec<(String, Verdict)>>;
}

impl<F> ScenarioHook for F
where
    F: Fn(&str, &[String], Instant) -> anyhow::Result<Vec<(String, Verdict)>>,
{
    fn run(
        &self,
        mutant: &str,
        invariants: &[String],
        deadline: Instant,
    ) -> anyhow::Result<Vec<(String, Verdict)>> {
        self(mutant, invariants, deadline)
    }
}

/// A hook that runs no scenario (tests only).
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub struct NoScenarios;

#[cfg(test)]
impl ScenarioHook for NoScenarios {
    fn run(&self, _: &str, _: &[String], _: Instant) -> anyhow::Result<Vec<(String, Verdict)>> {
        Ok(Vec::new())
    }
}

/// The workspace's tests through cargo-nextest, on the build `make test` made.
#[derive(Debug, Clone)]
pub struct Nextest {
    pub root: PathBuf,
    /// The cargo to run (`$CARGO`, else `cargo`).
    pub cargo: OsString,
    pub bounds: Bounds,
}

impl Nextest {
    pub fn new(root: &Path) -> Nextest {
        Nextest {
            root: root.to_owned(),
            cargo: std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
            bounds: Bounds {
                limit: Duration::from_secs(MUTANT_TESTS_SECS_MAX),
                grace: Duration::from_secs(STOP_GRACE_SECS),
            },
        }
    }

    /// `cargo nextest run` over the build `make test` made (same features and cargo profile,
    /// so nothing is rebuilt), with nextest profile `profile`.
    fn nextest_run(&self, profile: &str) -> Command {
        let mut cmd = Command::new(&self.cargo);
        cmd.current_dir(&self.root)
            .args([
                "nextest",
                "run",
                "--workspace",
                "--locked",
                "--all-features",
            ])
            .args(["--profile", profile])
            .stdin(Stdio::null());
        cmd
    }

    /// The test command's runner part, exactly as `make test` runs it (profile `ci`, its
    /// JUnit report at [`BASELINE_JUNIT_PATH`]), without a mutant.
    pub fn baseline_command(&self) -> Command {
        let mut cmd = self.nextest_run("ci");
        cmd.env_remove(MUTANT_ENV);
        cmd
    }

    /// The tests `filter` selects with `mutant` active, in the mutant runs' profile.
    pub fn command(&self, mutant: &str, filter: &str) -> Command {
        let mut cmd = self.nextest_run(NEXTEST_PROFILE);
        // No test claiming the invariants is an outcome (UNKNOWN), not an error.
        cmd.args(["--no-tests", "pass"])
            .args(["-E", filter])
            .env(MUTANT_ENV, mutant);
        cmd
    }
}

/// How the test runner reports a test that died of the signals [`run_bounded`] sends
/// ("process aborted with signal 15 (SIGTERM)").
const STOP_SIGNAL_MARKS: [&str; 2] = ["(SIGTERM)", "(SIGKILL)"];

/// cargo-nextest's exit status when tests failed (any other non-zero one is a failure to build,
/// list or run).
const NEXTEST_TESTS_FAILED: i32 = 100;

impl TestRunner for Nextest {
    fn run(&self, mutant: &str, filter: &str, log: &Path) -> TestsOutcome {
        let junit_path = self.root.join(NEXTEST_JUNIT_PATH);
        let broken = |why: String| TestsOutcome {
            cases: Vec::new(),
            broke: Some(why),
            elapsed: Duration::ZERO,
        };
        // A report left by an earlier run must not be read as this one's.
        match std::fs::remove_file(&junit_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return broken(format!(
                    "cannot remove the old report {NEXTEST_JUNIT_PATH}: {e}"
                ));
            }
        }
        let finished = match run_bounded(self.command(mutant, filter), log, self.bounds) {
            Ok(f) => f,
            Err(e) => return broken(format!("cannot run cargo nextest: {e:#}")),
        };
        let report = junit::read_cases(&junit_path).map_err(|e| e.to_string());
        if report.is_ok() {
            // Each mutant's report is kept beside its log (the next run replaces the file); a
            // copy that fails loses only that convenience, the verdict is read from the original.
            let _ = std::fs::copy(&junit_path, log.with_extension("junit.xml"));
        }
        interpret(&finished, report, self.bounds.limit)
    }
}

/// What a finished test run and its report are worth as evidence: complete, or broken (and
/// why). The report's failures count either way: a run cut at its bound after a test failed
/// has still seen that failure.
pub fn interpret(
    finished: &Finished,
    report: Result<Vec<Case>, String>,
    limit: Duration,
) -> TestsOutcome {
    let (mut cases, read_error) = match report {
        Ok(cases) => (cases, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    if finished.timed_out {
        // The tests running when the run was stopped at its bound died of the stop request (or
        // the kill after it): the runner reports them as failed, but nothing is known of them.
        for c in &mut cases {
            let cut = c
                .failure
                .as_deref()
                .is_some_and(|f| STOP_SIGNAL_MARKS.iter().any(|mark| f.contains(mark)));
            if c.result.outcome == TestOutcome::Failed && cut {
                c.result.outcome = TestOutcome::Skipped;
                c.failure = c
                    .failure
                    .take()
                    .map(|f| format!("cut by the run's bound: {f}"));
            }
        }
    }
    let failed = cases
        .iter()
        .any(|c| c.result.outcome == TestOutcome::Failed);
    let broke = match (finished.status, finished.timed_out) {
        (_, true) => Some(format!(
            "stopped after {} s, the bound of a mutant's tests",
            limit.as_secs()
        )),
        (None, false) => Some("the test runner ended without an exit status".into()),
        (Some(status), false) => match (status.code(), read_error) {
            (_, Some(e)) => Some(format!("no readable report ({e}); the runner {status}")),
            (Some(0), None) if !failed => None,
            (Some(NEXTEST_TESTS_FAILED), None) if failed => None,
            (Some(0), None) => Some("the runner passed but its report has failures".into()),
            (Some(NEXTEST_TESTS_FAILED), None) => {
                Some("the runner failed but its report has no failure".into())
            }
            (_, None) => Some(format!(
                "the test runner could not build or run the tests ({status})"
            )),
        },
    };
    TestsOutcome {
        cases,
        broke,
        elapsed: finished.elapsed,
    }
}

/// How a bounded command ended.
#[derive(Debug)]
pub struct Finished {
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub elapsed: Duration,
}

/// How long a command may run, and how long it then gets to stop once asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub limit: Duration,
    pub grace: Duration,
}

/// Runs `cmd` in a process group of its own, its output written to `log`, for at most
/// `bounds.limit`: then the group is asked to stop (SIGTERM: the test runner cancels, stops its
/// tests and writes its report), given `bounds.grace` to end, and killed.
pub fn run_bounded(mut cmd: Command, log: &Path, bounds: Bounds) -> anyhow::Result<Finished> {
    let limit = bounds.limit;
    use std::os::unix::process::CommandExt;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let out =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdout(out).stderr(err).process_group(0);
    let started = Instant::now();
    let mut child = cmd.spawn().context("cannot start")?;
    let group = rustix::process::Pid::from_child(&child);
    let poll = Duration::from_millis(POLL_MS);
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait()? {
            return Ok(Finished {
                status: Some(status),
                timed_out: false,
                elapsed: started.elapsed(),
            });
        }
        std::thread::sleep(poll.min(limit.saturating_sub(started.elapsed())));
    }
    // The group may already be gone (ESRCH): then there is nothing to stop.
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
    let grace = Instant::now() + bounds.grace;
    let mut status = None;
    // Wait for the whole group, not only the direct child: the runner below it writes the report.
    while Instant::now() < grace {
        if status.is_none() {
            status = child.try_wait()?;
        }
        let group_alive = rustix::process::test_kill_process_group(group).is_ok();
        if status.is_some() && !group_alive {
            break;
        }
        std::thread::sleep(poll);
    }
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    if status.is_none() {
        status = Some(child.wait()?);
    }
    Ok(Finished {
        status,
        timed_out: true,
        elapsed: started.elapsed(),
    })
}

/// A mutant's verdict and the evidence for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: MutantVerdict,
    pub killed_by: Vec<String>,
    pub ran: Vec<String>,
    pub detail: String,
}

/// Judges a mutant from its claimed tests' run and its scenarios' verdicts.
///
/// Only tests claiming one of the mutant's invariants count. A test that also failed without
/// any mutant (`failing_without_mutant`: `binary::name` of the baseline's failures) proves
/// nothing about the mutant and is not counted as a kill.
pub fn judge(
    mutant: &Mutant,
    tests: &TestsOutcome,
    scenarios: &Result<Vec<(String, Verdict)>, String>,
    failing_without_mutant: &BTreeSet<String>,
) -> Judgement {
    let claims = |c: &&Case| {
        claimed_invariants(&c.result.name)
            .iter()
            .any(|i| mutant.invariants.contains(i))
    };
    let claimed: Vec<&Case> = tests.cases.iter().filter(claims).collect();
    let unclaimed = tests.cases.len() - claimed.len();
    let mut killed_by = Vec::new();
    let mut ran = Vec::new();
    let mut passed = 0usize;
    let mut not_counted = Vec::new();
    let mut reached = 0usize;
    let mark = active_mark(&mutant.name);
    for c in &claimed {
        let id = c.id();
        ran.push(id.clone());
        if c.output.contains(&mark) {
            reached += 1;
        }
        match c.result.outcome {
            TestOutcome::Failed if failing_without_mutant.contains(&id) => not_counted.push(id),
            TestOutcome::Failed => killed_by.push(id),
            TestOutcome::Passed => passed += 1,
            TestOutcome::Skipped => {}
        }
    }
    let mut scenario_passed = 0usize;
    let mut scenario_unsure = Vec::new();
    let scenario_error = match scenarios {
        Ok(list) => {
            for (name, verdict) in list {
                let id = format!("scenario:{name}");
                ran.push(id.clone());
                match verdict {
                    Verdict::Fail => killed_by.push(id),
                    Verdict::Pass => scenario_passed += 1,
                    Verdict::Unknown | Verdict::Skipped => {
                        scenario_unsure.push(format!("{name} {}", verdict.as_str()))
                    }
                }
            }
            None
        }
        Err(e) => Some(e.clone()),
    };

    let mut detail = format!(
        "{} claimed test(s) ran in {} s: {} failed, {passed} passed",
        claimed.len(),
        tests.elapsed.as_secs(),
        killed_by
            .iter()
            .filter(|k| !k.starts_with("scenario:"))
            .count()
    );
    if let Ok(list) = scenarios {
        let _ = write!(
            detail,
            "; {} scenario(s): {} failed, {scenario_passed} passed",
            list.len(),
            killed_by
                .iter()
                .filter(|k| k.starts_with("scenario:"))
                .count()
        );
    }
    if !claimed.is_empty() {
        let _ = write!(
            detail,
            "; the mutation point said it was active in the output of {reached} of them"
        );
    }
    if !not_counted.is_empty() {
        let _ = write!(
            detail,
            "; not counted, failing without the mutant too: {}",
            not_counted.join(", ")
        );
    }
    if !scenario_unsure.is_empty() {
        let _ = write!(
            detail,
            "; scenarios without evidence: {}",
            scenario_unsure.join(", ")
        );
    }
    if unclaimed > 0 {
        let _ = write!(
            detail,
            "; {unclaimed} test(s) ran that claim none of its invariants"
        );
    }
    if let Some(why) = &tests.broke {
        let _ = write!(detail, "; test run: {why}");
    }
    if let Some(e) = &scenario_error {
        let _ = write!(detail, "; scenarios: {e}");
    }

    let verdict = if !killed_by.is_empty() {
        MutantVerdict::Killed
    } else if tests.broke.is_some() || scenario_error.is_some() {
        MutantVerdict::Unknown
    } else if passed + scenario_passed == 0 {
        let _ = write!(
            detail,
            "; nothing claiming {} gave evidence",
            mutant.invariants.join(", ")
        );
        MutantVerdict::Unknown
    } else {
        MutantVerdict::Survived
    };
    Judgement {
        verdict,
        killed_by,
        ran,
        detail,
    }
}

/// What a mutation point prints (once per process) when it is hit with its mutant active.
pub fn active_mark(mutant: &str) -> String {
    format!("mutant {mutant} active")
}

/// Everything a mutant run needs.
pub struct Runner<'a> {
    pub tests: &'a dyn TestRunner,
    pub scenarios: &'a dyn ScenarioHook,
    /// `binary::name` of the tests that fail without any mutant.
    pub failing_without_mutant: BTreeSet<String>,
    /// The same tests, left out of every mutant's run.
    pub baseline_failures: Vec<Case>,
    /// Per-mutant logs (`<name>.log`, `<name>.junit.xml`).
    pub log_dir: PathBuf,
}

impl Runner<'_> {
    /// Tries each mutant, printing one line per mutant to `out` as it goes.
    pub fn run(
        &self,
        mutants: &[&Mutant],
        mode: &str,
        out: &mut dyn Write,
    ) -> std::io::Result<MutantsRun> {
        let mut results = Vec::with_capacity(mutants.len());
        let width = mutants.iter().map(|m| m.name.len()).max().unwrap_or(0);
        for m in mutants {
            let started = Instant::now();
            let log = self.log_dir.join(format!("{}.log", m.name));
            let filter = without_failing(&filterset(&m.invariants), &self.baseline_failures);
            let tests = self.tests.run(&m.name, &filter, &log);
            // The fleet scenarios are the slower second line: they run only for a mutant the
            // tests did not kill.
            let by_tests = judge(m, &tests, &Ok(Vec::new()), &self.failing_without_mutant);
            let j = if by_tests.verdict == MutantVerdict::Killed {
                by_tests
            } else {
                let deadline = Instant::now() + Duration::from_secs(MUTANT_SCENARIOS_SECS_MAX);
                let scenarios = self
                    .scenarios
                    .run(&m.name, &m.invariants, deadline)
                    .map_err(|e| format!("{e:#}"));
                judge(m, &tests, &scenarios, &self.failing_without_mutant)
            };
            let verdict = match j.verdict {
                MutantVerdict::Killed => "KILLED",
                MutantVerdict::Survived => "SURVIVED",
                MutantVerdict::Unknown => "UNKNOWN",
            };
            let why = match j.verdict {
                MutantVerdict::Killed => {
                    let shown: Vec<&str> = j
                        .killed_by
                        .iter()
                        .take(LINE_KILLERS_MAX)
                        .map(String::as_str)
                        .collect();
                    let more = j.killed_by.len().saturating_sub(LINE_KILLERS_MAX);
                    let more = if more > 0 {
                        format!(" (+{more})")
                    } else {
                        String::new()
                    };
                    format!("by {}{more}", shown.join(", "))
                }
                _ => j.detail.clone(),
            };
            writeln!(
                out,
                "mutant {:<width$}  {:<16} {:<8}  {:>4} s  {why}",
                m.name,
                m.invariants.join(" "),
                verdict,
                started.elapsed().as_secs(),
            )?;
            out.flush()?;
            results.push(MutantResult {
                name: m.name.clone(),
                invariants: m.invariants.clone(),
                description: m.description.clone(),
                verdict: j.verdict,
                killed_by: j.killed_by,
                ran: j.ran,
                detail: j.detail,
                log: log.display().to_string(),
            });
        }
        Ok(MutantsRun {
            mode: mode.to_owned(),
            mutants: results,
            pure_cores: None,
        })
    }
}

/// `binary::name` of every test that failed in a JUnit report (the run without a mutant).
pub fn failing_tests(cases: &[Case]) -> BTreeSet<String> {
    cases
        .iter()
        .filter(|c| c.result.outcome == TestOutcome::Failed)
        .map(Case::id)
        .collect()
}

/// cargo-mutants' `outcomes.json`: the counts this reads.
#[derive(Debug, Deserialize)]
struct Outcomes {
    outcomes: Vec<ScenarioOutcome>,
    total_mutants: u32,
    caught: u32,
    missed: u32,
    timeout: u32,
    unviable: u32,
}

#[derive(Debug, Deserialize)]
struct ScenarioOutcome {
    /// `"Baseline"`, or `{"Mutant": …}`.
    scenario: serde_json::Value,
    summary: String,
}

fn read_bounded(path: &Path) -> Result<String, PureCoresError> {
    use std::io::Read;
    let shown = || path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| PureCoresError::Read {
        path: shown(),
        source,
    })?;
    let mut text = String::new();
    file.take(CARGO_MUTANTS_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|source| PureCoresError::Read {
            path: shown(),
            source,
        })?;
    if text.len() as u64 > CARGO_MUTANTS_FILE_BYTES_MAX {
        return Err(PureCoresError::TooLarge { path: shown() });
    }
    Ok(text)
}

/// Reads cargo-mutants' results (`outcomes.json`, and `mutants.json` beside it listing every
/// mutant it generated) into the caught ratio. A run whose unmutated tree failed, or that
/// stopped before judging every mutant, is refused: its ratio would mean nothing.
pub fn pure_cores(outcomes_path: &Path, scope: &[String]) -> Result<PureCores, PureCoresError> {
    let json = |path: &Path, source| PureCoresError::Json {
        path: path.display().to_string(),
        source,
    };
    let text = read_bounded(outcomes_path)?;
    let outcomes: Outcomes = serde_json::from_str(&text).map_err(|e| json(outcomes_path, e))?;
    let baseline = outcomes
        .outcomes
        .iter()
        .find(|o| o.scenario == serde_json::Value::String("Baseline".into()));
    // Without a baseline entry the tree was not tested first (`--baseline skip`); with one,
    // it must have passed.
    if let Some(b) = baseline.filter(|b| b.summary != "Success") {
        return Err(PureCoresError::BaselineFailed(b.summary.clone()));
    }
    let listed_path = outcomes_path.with_file_name("mutants.json");
    let listed_text = read_bounded(&listed_path)?;
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&listed_text).map_err(|e| json(&listed_path, e))?;
    let judged = outcomes.caught + outcomes.missed + outcomes.timeout + outcomes.unviable;
    let listed = u32::try_from(listed.len()).unwrap_or(u32::MAX);
    if judged != listed || outcomes.total_mutants != listed {
        return Err(PureCoresError::Incomplete { judged, listed });
    }
    Ok(PureCores {
        caught: outcomes.caught,
        missed: outcomes.missed,
        timeout: outcomes.timeout,
        unviable: outcomes.unviable,
        scope: scope.to_vec(),
    })
}

/// One line: caught of viable, timeouts, unviable.
pub fn pure_cores_line(p: &PureCores) -> String {
    let viable = p.caught + p.missed + p.timeout;
    let percent = if viable == 0 {
        0.0
    } else {
        100.0 * f64::from(p.caught) / f64::from(viable)
    };
    format!(
        "pure cores ({}): caught {} of {viable} viable mutants ({percent:.1}%), {} missed, {} timed out, {} unviable",
        p.scope.join(", "),
        p.caught,
        p.missed,
        p.timeout,
        p.unviable
    )
}

/// The suite's commands for test results and mutants.
#[derive(Debug, clap::Subcommand)]
pub enum RunnerCmd {
    /// Read the test runner's JUnit report into results/tests.json.
    Tests {
        /// The report (default: the one `make test` writes).
        #[arg(default_value = BASELINE_JUNIT_PATH)]
        junit: PathBuf,
    },
    /// Run each mutant against the tests and scenarios claiming its invariants (on the build
    /// `make test` made); results/mutants.json.
    Mutants {
        /// Only the quick subset.
        #[arg(long, conflicts_with = "only")]
        quick: bool,
        /// Only these mutants.
        #[arg(long)]
        only: Vec<String>,
    },
    /// Read cargo-mutants' outcomes.json (`make mutants`) into results/pure-cores.json.
    PureCores {
        outcomes: PathBuf,
        /// The files it mutated.
        scope: Vec<String>,
    },
}

/// Runs one of [`RunnerCmd`] in the workspace at `root`, results under `layout`.
pub fn dispatch(
    cmd: RunnerCmd,
    root: &Path,
    layout: &Layout,
    scenarios: &dyn ScenarioHook,
) -> anyhow::Result<ExitCode> {
    match cmd {
        RunnerCmd::Tests { junit } => {
            let path = root.join(junit);
            let run: TestsRun = junit::read(&path)?;
            let failed = run
                .tests
                .iter()
                .filter(|t| t.outcome == TestOutcome::Failed)
                .count();
            crate::results::write_json(&layout.tests(), &run)?;
            println!(
                "{} tests ({failed} failed) from {} → {}",
                run.tests.len(),
                path.display(),
                layout.tests().display()
            );
            Ok(ExitCode::SUCCESS)
        }
        RunnerCmd::Mutants { quick, only } => {
            let selection = if !only.is_empty() {
                Selection::Named(only)
            } else if quick {
                Selection::Quick
            } else {
                Selection::All
            };
            let catalogue = Catalogue::load(&root.join(CATALOGUE_PATH))?;
            let chosen = catalogue.select(&selection)?;
            let baseline_path = root.join(BASELINE_JUNIT_PATH);
            let baseline_failures: Vec<Case> = match junit::read_cases(&baseline_path) {
                Ok(cases) => cases
                    .into_iter()
                    .filter(|c| c.result.outcome == TestOutcome::Failed)
                    .collect(),
                Err(e) => {
                    println!(
                        "no run without a mutant to compare with ({e}): run `make test` first"
                    );
                    Vec::new()
                }
            };
            let nextest = Nextest::new(root);
            let runner = Runner {
                tests: &nextest,
                scenarios,
                failing_without_mutant: failing_tests(&baseline_failures),
                baseline_failures,
                log_dir: root.join(LOG_DIR_PATH),
            };
            let mut run = runner.run(&chosen, selection.mode(), &mut std::io::stdout())?;
            let pure = layout.root.join(PURE_CORES_FILE);
            if pure.exists() {
                run.pure_cores = Some(crate::results::read_json(&pure)?);
            }
            crate::results::write_json(&layout.mutants(), &run)?;
            let killed = run
                .mutants
                .iter()
                .filter(|m| m.verdict == MutantVerdict::Killed)
                .count();
            println!(
                "{killed} of {} mutants killed → {}",
                run.mutants.len(),
                layout.mutants().display()
            );
            Ok(if killed == run.mutants.len() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        RunnerCmd::PureCores { outcomes, scope } => {
            let p = pure_cores(&root.join(outcomes), &scope)?;
            let path = layout.root.join(PURE_CORES_FILE);
            crate::results::write_json(&path, &p)?;
            println!("{} → {}", pure_cores_line(&p), path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::results::TestResult;

    const SAMPLE: &str = r#"
# Two mutants as the catalogue writes them.
[[mutant]]
name = "skip_dir_fsync"
invariants = ["INV-03", "INV-05"]
description = "ingest skips the fsync of the segment's directory after the rename"
where = "store/src/ingest.rs"
quick = true

[[mutant]]
name = "admit_ceiling_plus_one"
invariants = ["INV-06"]
description = "the ceiling admits one byte too many"
where = "store/src/space.rs"
"#;

    fn sample() -> Catalogue {
        Catalogue::parse(SAMPLE).unwrap()
    }

    fn case(binary: &str, name: &str, outcome: TestOutcome, output: &str) -> Case {
        Case {
            result: TestResult {
                binary: binary.into(),
                name: name.into(),
                outcome,
                duration_ms: 10,
            },
            failure: (outcome == TestOutcome::Failed).then(|| "panicked".into()),
            output: output.into(),
        }
    }

    fn finished(cases: Vec<Case>) -> TestsOutcome {
        TestsOutcome {
            cases,
            broke: None,
            elapsed: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_catalogue_reads_with_its_quick_subset_and_named_selections() {
        let c = sample();
        assert_eq!(c.mutants.len(), 2);
        let first = &c.mutants[0];
        assert_eq!(first.name, "skip_dir_fsync");
        assert_eq!(first.invariants, ["INV-03", "INV-05"]);
        assert_eq!(first.location, "store/src/ingest.rs");
        assert!(
            first.quick && !c.mutants[1].quick,
            "quick defaults to false"
        );
        let names = |s: &Selection| -> Vec<String> {
            c.select(s)
                .unwrap()
                .iter()
                .map(|m| m.name.clone())
                .collect()
        };
        assert_eq!(
            names(&Selection::All),
            ["skip_dir_fsync", "admit_ceiling_plus_one"]
        );
        assert_eq!(names(&Selection::Quick), ["skip_dir_fsync"]);
        assert_eq!(
            names(&Selection::Named(vec!["admit_ceiling_plus_one".into()])),
            ["admit_ceiling_plus_one"]
        );
        assert!(matches!(
            c.select(&Selection::Named(vec!["nope".into()])),
            Err(CatalogueError::Unknown(n)) if n == "nope"
        ));
        assert_eq!(Catalogue::parse("").unwrap().mutants.len(), 0);
    }

    #[test]
    fn a_malformed_catalogue_entry_is_refused_with_its_reason() {
        let entry = |name: &str, invariants: &str, extra: &str| {
            format!(
                "[[mutant]]\nname = \"{name}\"\ninvariants = {invariants}\ndescription = \"d\"\nwhere = \"x.rs\"\n{extra}"
            )
        };
        let refused = |text: String| Catalogue::parse(&text).unwrap_err().to_string();
        assert!(refused(entry("Bad-Name", "[\"INV-01\"]", "")).contains("a-z, 0-9"));
        assert!(refused(entry(&"x".repeat(65), "[\"INV-01\"]", "")).contains("1 to 64"));
        assert!(refused(entry("a", "[]", "")).contains("no invariant"));
        assert!(refused(entry("a", "[\"INV-3\"]", "")).contains("not an invariant id"));
        assert!(refused(entry("a", "[\"inv_03\"]", "")).contains("not an invariant id"));
        // A misspelt key is an error, not a silently ignored line.
        assert!(refused(entry("a", "[\"INV-01\"]", "quik = true\n")).contains("quik"));
        let twice = format!(
            "{}\n{}",
            entry("a", "[\"INV-01\"]", ""),
            entry("a", "[\"INV-02\"]", "")
        );
        assert!(refused(twice).contains("named twice"));
        assert!(refused("[[mutant]]\nname = \"a\"\n".into()).contains("invariants"));
        let many: String = (0..=CATALOGUE_MUTANTS_MAX)
            .map(|i| entry(&format!("m{i}"), "[\"INV-01\"]", ""))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(matches!(
            Catalogue::parse(&many),
            Err(CatalogueError::TooMany(n)) if n == CATALOGUE_MUTANTS_MAX + 1
        ));
    }

    #[test]
    fn test_names_claim_the_leading_chain_of_ids_of_any_part() {
        let ids = |name: &str| claimed_invariants(name);
        assert_eq!(ids("inv_06_inv_08_ceiling_admits"), ["INV-06", "INV-08"]);
        assert_eq!(ids("tests::inv_03_crash"), ["INV-03"]);
        assert_eq!(ids("model::inv_04_x::inv_05_y"), ["INV-04", "INV-05"]);
        assert_eq!(ids("inv_03_inv_3_partial"), ["INV-03"]);
        assert!(ids("inv_6_not_an_id").is_empty());
        assert!(ids("checks_inv_03_in_the_middle").is_empty());
        assert!(ids("harness_lists_tests").is_empty());
        assert!(ids("inv_0a_").is_empty());
        assert_eq!(test_token("INV-27").as_deref(), Some("inv_27_"));
        assert_eq!(test_token("INV-7"), None);
        assert_eq!(test_token("INV-100"), None);
    }

    #[test]
    fn tests_failing_without_a_mutant_are_left_out_of_its_run() {
        let f = "test(/x/)";
        let passed = case("store::space", "inv_06_a", TestOutcome::Passed, "");
        assert_eq!(without_failing(f, std::slice::from_ref(&passed)), f);
        let failed = case("store::crash_process", "inv_05_b", TestOutcome::Failed, "");
        let unit = case("relay", "core::tests::inv_12_c", TestOutcome::Failed, "");
        assert_eq!(
            without_failing(f, &[passed, failed, unit]),
            "(test(/x/)) - ((binary_id(=store::crash_process) & test(=inv_05_b)) | \
             (binary_id(=relay) & test(=core::tests::inv_12_c)))"
        );
    }

    #[test]
    fn the_filter_selects_tests_by_the_same_rule_for_each_invariant() {
        assert_eq!(
            filterset(&["INV-03".into(), "INV-05".into()]),
            "test(/(^|::)(inv_[0-9][0-9]_)*inv_03_/) | test(/(^|::)(inv_[0-9][0-9]_)*inv_05_/)"
        );
        assert_eq!(
            filterset(&["INV-27".into()]),
            "test(/(^|::)(inv_[0-9][0-9]_)*inv_27_/)"
        );
    }

    #[test]
    fn a_failing_claimed_test_kills_and_the_others_are_listed_as_run() {
        let m = &sample().mutants[0];
        let tests = finished(vec![
            case(
                "store::crash_process",
                "inv_03_inv_05_crash",
                TestOutcome::Failed,
                "",
            ),
            case(
                "store",
                "tests::inv_05_recovery",
                TestOutcome::Passed,
                "mutant skip_dir_fsync active\n",
            ),
        ]);
        let j = judge(m, &tests, &Ok(vec![]), &BTreeSet::new());
        assert_eq!(j.verdict, MutantVerdict::Killed);
        assert_eq!(j.killed_by, ["store::crash_process::inv_03_inv_05_crash"]);
        assert_eq!(
            j.ran,
            [
                "store::crash_process::inv_03_inv_05_crash",
                "store::tests::inv_05_recovery"
            ]
        );
        assert!(
            j.detail
                .contains("2 claimed test(s) ran in 1 s: 1 failed, 1 passed"),
            "{}",
            j.detail
        );
        assert!(
            j.detail.contains("active in the output of 1 of them"),
            "{}",
            j.detail
        );
    }

    #[test]
    fn every_claim_passing_is_a_survivor() {
        let m = &sample().mutants[1];
        let tests = finished(vec![case(
            "store::space",
            "inv_06_ceiling",
            TestOutcome::Passed,
            "",
        )]);
        let scenarios = Ok(vec![("ceiling-pressure".to_owned(), Verdict::Pass)]);
        let j = judge(m, &tests, &scenarios, &BTreeSet::new());
        assert_eq!(j.verdict, MutantVerdict::Survived);
        assert!(j.killed_by.is_empty());
        assert_eq!(
            j.ran,
            ["store::space::inv_06_ceiling", "scenario:ceiling-pressure"]
        );
    }

    #[test]
    fn a_failing_scenario_kills_even_when_every_test_passed() {
        let m = &sample().mutants[1];
        let tests = finished(vec![case(
            "store::space",
            "inv_06_ceiling",
            TestOutcome::Passed,
            "",
        )]);
        let scenarios = Ok(vec![
            ("ceiling-pressure".to_owned(), Verdict::Fail),
            ("baseline".to_owned(), Verdict::Unknown),
        ]);
        let j = judge(m, &tests, &scenarios, &BTreeSet::new());
        assert_eq!(j.verdict, MutantVerdict::Killed);
        assert_eq!(j.killed_by, ["scenario:ceiling-pressure"]);
        assert!(j.detail.contains("baseline UNKNOWN"), "{}", j.detail);
    }

    #[test]
    fn nothing_claiming_the_invariants_or_a_broken_run_is_unknown() {
        let m = &sample().mutants[1];
        // No test ran; a test of another invariant in the report does not count.
        let other = finished(vec![case(
            "net::mtls",
            "inv_09_refused",
            TestOutcome::Failed,
            "",
        )]);
        let j = judge(m, &other, &Ok(vec![]), &BTreeSet::new());
        assert_eq!(j.verdict, MutantVerdict::Unknown);
        assert!(j.detail.contains("nothing claiming INV-06"), "{}", j.detail);
        assert!(
            j.detail.contains("1 test(s) ran that claim none"),
            "{}",
            j.detail
        );
        // Only unknown or skipped scenarios: no evidence either.
        let j = judge(
            m,
            &finished(vec![]),
            &Ok(vec![
                ("s".into(), Verdict::Skipped),
                ("t".into(), Verdict::Unknown),
            ]),
            &BTreeSet::new(),
        );
        assert_eq!(j.verdict, MutantVerdict::Unknown);
        // Passing tests, but the run was cut: what did not run might have failed.
        let mut cut = finished(vec![case(
            "store::space",
            "inv_06_a",
            TestOutcome::Passed,
            "",
        )]);
        cut.broke = Some("stopped after 600 s".into());
        let j = judge(m, &cut, &Ok(vec![]), &BTreeSet::new());
        assert_eq!(j.verdict, MutantVerdict::Unknown);
        assert!(j.detail.contains("stopped after 600 s"), "{}", j.detail);
        // A cut run that already saw a failure did kill.
        cut.cases
            .push(case("store::space", "inv_06_b", TestOutcome::Failed, ""));
        assert_eq!(
            judge(m, &cut, &Ok(vec![]), &BTreeSet::new()).verdict,
            MutantVerdict::Killed
        );
        // The scenarios could not be run.
        let passing = finished(vec![case(
            "store::space",
            "inv_06_a",
            TestOutcome::Passed,
            "",
        )]);
        let j = judge(m, &passing, &Err("no fi build".into()), &BTreeSet::new());
        assert_eq!(j.verdict, MutantVerdict::Unknown);
        assert!(j.detail.contains("no fi build"), "{}", j.detail);
    }

    #[test]
    fn a_test_failing_without_the_mutant_proves_nothing() {
        let m = &sample().mutants[1];
        let tests = finished(vec![
            case("store::space", "inv_06_flaky", TestOutcome::Failed, ""),
            case("store::space", "inv_06_steady", TestOutcome::Passed, ""),
        ]);
        let baseline: BTreeSet<String> = ["store::space::inv_06_flaky".to_owned()].into();
        let j = judge(m, &tests, &Ok(vec![]), &baseline);
        assert_eq!(j.verdict, MutantVerdict::Survived);
        assert!(
            j.detail
                .contains("failing without the mutant too: store::space::inv_06_flaky")
        );
        let baseline_cases = [
            case("store::space", "inv_06_flaky", TestOutcome::Failed, ""),
            case("store::space", "inv_06_steady", TestOutcome::Passed, ""),
        ];
        assert_eq!(failing_tests(&baseline_cases), baseline);
    }

    #[test]
    fn verdicts_read_from_a_real_junit_report() {
        let cases = junit::parse(include_str!("../tests/data/nextest-junit.xml")).unwrap();
        let run = finished(cases);
        let verdict = |invariants: &[&str]| {
            let m = Mutant {
                name: "m".into(),
                invariants: invariants.iter().map(|i| (*i).to_owned()).collect(),
                description: "d".into(),
                location: "x.rs".into(),
                quick: false,
            };
            let j = judge(&m, &run, &Ok(vec![]), &BTreeSet::new());
            (j.verdict, j.killed_by)
        };
        use MutantVerdict::*;
        assert_eq!(
            verdict(&["INV-05"]),
            (
                Killed,
                vec!["fixture::it::inv_05_fails_with_a_panic".to_owned()]
            )
        );
        // A test that timed out or aborted failed too.
        assert_eq!(
            verdict(&["INV-08", "INV-09"]),
            (
                Killed,
                vec![
                    "fixture::it::inv_09_aborts".to_owned(),
                    "fixture::it::inv_08_times_out".to_owned()
                ]
            )
        );
        // Passed on its retry: no kill (the mutant runs have no retries, so this is moot there).
        assert_eq!(verdict(&["INV-06"]), (Survived, vec![]));
        // Nested test names and the custom harness claim too.
        assert_eq!(verdict(&["INV-03"]), (Survived, vec![]));
        assert_eq!(verdict(&["INV-10"]), (Survived, vec![]));
        // Ignored tests are not in the report: nothing claims INV-04.
        assert_eq!(verdict(&["INV-04"]), (Unknown, vec![]));
    }

    /// Stands in for the test runner: answers from a table and records what it was asked.
    struct FakeTests {
        asked: RefCell<Vec<(String, String, PathBuf)>>,
    }

    impl TestRunner for FakeTests {
        fn run(&self, mutant: &str, filter: &str, log: &Path) -> TestsOutcome {
            self.asked
                .borrow_mut()
                .push((mutant.into(), filter.into(), log.into()));
            match mutant {
                "skip_dir_fsync" => finished(vec![
                    case(
                        "store::crash_process",
                        "inv_03_inv_05_a",
                        TestOutcome::Failed,
                        "",
                    ),
                    case("store::crash_process", "inv_05_b", TestOutcome::Failed, ""),
                    case("store", "tests::inv_03_c", TestOutcome::Failed, ""),
                ]),
                _ => finished(vec![case(
                    "store::space",
                    "inv_06_a",
                    TestOutcome::Passed,
                    "",
                )]),
            }
        }
    }

    #[test]
    fn the_runner_tries_each_mutant_on_its_claims_then_scenarios_and_prints_a_line_for_each() {
        let c = sample();
        let tests = FakeTests {
            asked: RefCell::new(Vec::new()),
        };
        let hook_calls = RefCell::new(Vec::new());
        let hook = |mutant: &str, invariants: &[String], deadline: Instant| {
            assert!(deadline > Instant::now());
            hook_calls
                .borrow_mut()
                .push((mutant.to_owned(), invariants.to_vec()));
            Ok(vec![("scenario-a".to_owned(), Verdict::Pass)])
        };
        let runner = Runner {
            tests: &tests,
            scenarios: &hook,
            failing_without_mutant: BTreeSet::new(),
            baseline_failures: Vec::new(),
            log_dir: PathBuf::from("/logs"),
        };
        let mut printed = Vec::new();
        let chosen = c.select(&Selection::All).unwrap();
        let run = runner.run(&chosen, "full", &mut printed).unwrap();

        let asked = tests.asked.borrow();
        assert_eq!(asked.len(), 2);
        assert_eq!(asked[0].0, "skip_dir_fsync");
        assert_eq!(asked[0].1, filterset(&["INV-03".into(), "INV-05".into()]));
        assert_eq!(asked[0].2, Path::new("/logs/skip_dir_fsync.log"));
        // The scenarios run only for the mutant the tests did not kill.
        assert_eq!(
            *hook_calls.borrow(),
            [(
                "admit_ceiling_plus_one".to_owned(),
                vec!["INV-06".to_owned()]
            )]
        );
        assert_eq!(run.mode, "full");
        let verdicts: Vec<_> = run
            .mutants
            .iter()
            .map(|m| (m.name.as_str(), m.verdict))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("skip_dir_fsync", MutantVerdict::Killed),
                ("admit_ceiling_plus_one", MutantVerdict::Survived),
            ]
        );
        assert_eq!(run.mutants[0].log, "/logs/skip_dir_fsync.log");
        assert_eq!(run.mutants[0].killed_by.len(), 3);
        let text = String::from_utf8(printed).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("mutant skip_dir_fsync "), "{text}");
        assert!(
            lines[0].contains("KILLED")
                && lines[0].contains(
                    "by store::crash_process::inv_03_inv_05_a, store::crash_process::inv_05_b (+1)"
                ),
            "{text}"
        );
        assert!(
            lines[1].contains("SURVIVED") && lines[1].contains("INV-06"),
            "{text}"
        );
    }

    #[test]
    fn the_default_hook_runs_no_scenario() {
        let none = NoScenarios
            .run("m", &["INV-01".into()], Instant::now())
            .unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn the_test_command_reuses_make_tests_build_with_the_mutant_set() {
        let n = Nextest::new(Path::new("/ws"));
        let cmd = n.command("skip_dir_fsync", "test(/x/)");
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "nextest",
                "run",
                "--workspace",
                "--locked",
                "--all-features",
                "--profile",
                "fi-mutant",
                "--no-tests",
                "pass",
                "-E",
                "test(/x/)"
            ]
        );
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/ws")));
        let env: Vec<_> = cmd.get_envs().collect();
        assert_eq!(
            env,
            [(
                std::ffi::OsStr::new(MUTANT_ENV),
                Some(std::ffi::OsStr::new("skip_dir_fsync"))
            )]
        );
        assert_eq!(n.bounds.limit, Duration::from_secs(MUTANT_TESTS_SECS_MAX));
    }

    fn exited(code: i32) -> Finished {
        use std::os::unix::process::ExitStatusExt;
        Finished {
            status: Some(ExitStatus::from_raw(code << 8)),
            timed_out: false,
            elapsed: Duration::from_secs(3),
        }
    }

    #[test]
    fn a_test_run_is_evidence_only_when_its_exit_and_its_report_agree() {
        let limit = Duration::from_secs(MUTANT_TESTS_SECS_MAX);
        let pass = || Ok(vec![case("b", "inv_01_a", TestOutcome::Passed, "")]);
        let fail = || Ok(vec![case("b", "inv_01_a", TestOutcome::Failed, "")]);
        let broke = |f: &Finished, r: Result<Vec<Case>, String>| interpret(f, r, limit).broke;
        assert_eq!(broke(&exited(0), pass()), None);
        assert_eq!(broke(&exited(NEXTEST_TESTS_FAILED), fail()), None);
        assert!(
            broke(&exited(0), fail())
                .unwrap()
                .contains("report has failures")
        );
        assert!(
            broke(&exited(NEXTEST_TESTS_FAILED), pass())
                .unwrap()
                .contains("no failure")
        );
        // The build failed (cargo's 101), or the list could not be made.
        assert!(
            broke(&exited(101), Err("missing".into()))
                .unwrap()
                .contains("no readable report")
        );
        assert!(
            broke(&exited(104), Ok(vec![]))
                .unwrap()
                .contains("could not build or run")
        );
        let cut = Finished {
            timed_out: true,
            ..exited(143)
        };
        let outcome = interpret(&cut, fail(), limit);
        assert!(outcome.broke.unwrap().contains("stopped after 600 s"));
        assert_eq!(
            outcome.cases.len(),
            1,
            "what the report saw before the cut is kept"
        );
        assert_eq!(outcome.cases[0].result.outcome, TestOutcome::Failed);
        // A test the stop request itself ended is no failure.
        let mut stopped = case("b", "inv_01_b", TestOutcome::Failed, "");
        stopped.failure = Some("process aborted with signal 15 (SIGTERM)".into());
        let outcome = interpret(&cut, Ok(vec![stopped.clone()]), limit);
        assert_eq!(outcome.cases[0].result.outcome, TestOutcome::Skipped);
        assert!(
            outcome.cases[0]
                .failure
                .as_deref()
                .unwrap()
                .starts_with("cut by the run's bound")
        );
        // Unless the run ended by itself: then the signal came from elsewhere.
        let outcome = interpret(&exited(NEXTEST_TESTS_FAILED), Ok(vec![stopped]), limit);
        assert_eq!(outcome.cases[0].result.outcome, TestOutcome::Failed);
        assert_eq!(outcome.elapsed, Duration::from_secs(3));
    }

    fn quick_bounds(limit_ms: u64, grace_ms: u64) -> Bounds {
        Bounds {
            limit: Duration::from_millis(limit_ms),
            grace: Duration::from_millis(grace_ms),
        }
    }

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    /// Whether process `pid` still runs (a zombie awaiting its reaper does not).
    fn running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let state = stat
                    .rsplit(')')
                    .next()?
                    .split_whitespace()
                    .next()?
                    .to_owned();
                Some(state != "Z" && state != "X")
            })
            .unwrap_or(false)
    }

    #[test]
    fn a_bounded_command_that_ends_in_time_keeps_its_status_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs").join("m.log");
        let f = run_bounded(
            sh("echo to-out; echo to-err >&2; exit 3"),
            &log,
            quick_bounds(10_000, 1_000),
        )
        .unwrap();
        assert!(!f.timed_out);
        assert_eq!(f.status.and_then(|s| s.code()), Some(3));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("to-out") && text.contains("to-err"), "{text}");
    }

    #[test]
    fn a_command_past_its_bound_is_stopped_with_everything_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let started = Instant::now();
        let f = run_bounded(
            sh(&script),
            &dir.path().join("m.log"),
            quick_bounds(300, 5_000),
        )
        .unwrap();
        assert!(f.timed_out);
        // SIGTERM ended it: the grace was not used up.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        let grandchild: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone_by = Instant::now() + Duration::from_secs(5);
        while running(grandchild) && Instant::now() < gone_by {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!running(grandchild), "the process it started still runs");
    }

    #[test]
    fn a_command_ignoring_the_stop_request_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let f = run_bounded(
            sh("trap '' TERM; sleep 30"),
            &dir.path().join("m.log"),
            quick_bounds(200, 500),
        )
        .unwrap();
        let took = started.elapsed();
        assert!(f.timed_out);
        assert!(took >= Duration::from_millis(700), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(f.status.and_then(|s| s.signal()), Some(9));
    }

    /// cargo-mutants' files for a run of `listed` mutants of which the counts were judged.
    fn write_cargo_mutants(dir: &Path, baseline: &str, listed: usize, counts: [u32; 4]) -> PathBuf {
        let [caught, missed, timeout, unviable] = counts;
        let total = caught + missed + timeout + unviable;
        let mut outcomes = vec![serde_json::json!({
            "scenario": "Baseline", "summary": baseline, "log_path": "log/baseline.log"
        })];
        for (summary, n) in [
            ("CaughtMutant", caught),
            ("MissedMutant", missed),
            ("Timeout", timeout),
            ("Unviable", unviable),
        ] {
            for _ in 0..n {
                outcomes.push(serde_json::json!({
                    "scenario": {"Mutant": {"name": "relay/src/core.rs:1:1: replace x"}},
                    "summary": summary
                }));
            }
        }
        let doc = serde_json::json!({
            "outcomes": outcomes, "total_mutants": total, "caught": caught, "missed": missed,
            "timeout": timeout, "unviable": unviable, "success": 0, "failure": 0
        });
        let path = dir.join("outcomes.json");
        std::fs::write(&path, doc.to_string()).unwrap();
        let list: Vec<_> = (0..listed)
            .map(|i| serde_json::json!({"name": i}))
            .collect();
        std::fs::write(
            dir.join("mutants.json"),
            serde_json::Value::from(list).to_string(),
        )
        .unwrap();
        path
    }

    #[test]
    fn cargo_mutants_outcomes_read_into_the_caught_ratio() {
        let dir = tempfile::tempdir().unwrap();
        let scope = vec![
            "relay/src/core.rs".to_owned(),
            "store/src/evict.rs".to_owned(),
        ];
        let path = write_cargo_mutants(dir.path(), "Success", 10, [6, 2, 1, 1]);
        let p = pure_cores(&path, &scope).unwrap();
        assert_eq!(
            p,
            PureCores {
                caught: 6,
                missed: 2,
                timeout: 1,
                unviable: 1,
                scope: scope.clone(),
            }
        );
        assert_eq!(
            pure_cores_line(&p),
            "pure cores (relay/src/core.rs, store/src/evict.rs): caught 6 of 9 viable mutants (66.7%), 2 missed, 1 timed out, 1 unviable"
        );
    }

    #[test]
    fn a_partial_or_failed_cargo_mutants_run_gives_no_ratio() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_cargo_mutants(dir.path(), "Success", 12, [6, 2, 1, 1]);
        assert!(matches!(
            pure_cores(&path, &[]),
            Err(PureCoresError::Incomplete {
                judged: 10,
                listed: 12
            })
        ));
        let path = write_cargo_mutants(dir.path(), "Failure", 0, [0, 0, 0, 0]);
        assert!(matches!(
            pure_cores(&path, &[]),
            Err(PureCoresError::BaselineFailed(s)) if s == "Failure"
        ));
        std::fs::write(&path, "{\"not\": \"it\"}").unwrap();
        assert!(matches!(
            pure_cores(&path, &[]),
            Err(PureCoresError::Json { .. })
        ));
        assert!(matches!(
            pure_cores(&dir.path().join("none.json"), &[]),
            Err(PureCoresError::Read { .. })
        ));
    }
}
