//! The report as data, built from the inputs without I/O: which evidence covers which invariant,
//! each invariant's status, and the figures across scenarios. The renderers (Markdown, HTML,
//! JSON, the summary) only lay this out.
//!
//! Everything is sorted (invariants by id, tests by binary and name, scenarios and mutants by
//! name, faults by kind), so the same inputs give the same report byte for byte.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::load::{InputNote, Inputs};
use crate::results::{
    CheckResult, MutantVerdict, PureCores, ScenarioResult, TestOutcome, TestResult, Verdict, check,
};

/// The version of `report.json`'s layout; raised when a field changes meaning or goes away.
pub const REPORT_FORMAT_VERSION: u32 = 1;
/// The prefix of an invariant id (`INV-06`).
pub const ID_PREFIX: &str = "INV-";
/// Items named in one status explanation before "and N more": the full lists are in the
/// invariant's section.
pub const WHY_ITEMS_MAX: usize = 4;
/// Characters of a check's detail or a scenario's reason kept in the report: enough for the
/// first offending item, and one runaway detail does not swamp the page.
pub const DETAIL_CHARS_MAX: usize = 300;
/// The data-safety checks summed across scenarios, in the order they are shown.
pub const SAFETY_CHECKS: [&str; 7] = [
    check::LOST,
    check::ACKS_BEFORE_DURABLE,
    check::DUPLICATE_COPIES,
    check::PANICS,
    check::COUNTERS,
    check::PACKETS_ONLY_TO_PEERS,
    check::SAME_STATE_AS_WITHOUT_KILLS,
];
/// The convergence percentiles shown (nearest rank), in percent.
pub const CONVERGENCE_PERCENTILES: [u64; 2] = [50, 95];

/// What the evidence says of one invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// At least one passing test or scenario claims it, nothing claiming it fails, and every
    /// mutant of it was killed (or it has none in the catalogue).
    Proven,
    /// A test or scenario claiming it failed.
    Failing,
    /// A mutant of it survived: the claims did not notice the invariant broken.
    Vacuous,
    /// No test and no scenario claims it.
    Uncovered,
    /// Its evidence is incomplete: only skipped or unknown results, or a mutant of it that was
    /// not judged.
    Unknown,
}

impl Status {
    /// Every status, in the order they are counted and shown.
    pub const ALL: [Status; 5] = [
        Status::Proven,
        Status::Failing,
        Status::Vacuous,
        Status::Uncovered,
        Status::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Proven => "PROVEN",
            Status::Failing => "FAILING",
            Status::Vacuous => "VACUOUS",
            Status::Uncovered => "UNCOVERED",
            Status::Unknown => "UNKNOWN",
        }
    }

    /// Whether an invariant in this status leaves the report clean (the generator's exit code).
    pub fn is_clean(self) -> bool {
        !matches!(self, Status::Failing | Status::Vacuous | Status::Uncovered)
    }
}

/// Whether `s` is an invariant id as the catalogue writes it: `INV-` and two digits.
pub fn is_invariant_id(s: &str) -> bool {
    s.strip_prefix(ID_PREFIX)
        .is_some_and(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The invariant ids a test claims by its name: in each `::` part of the name, the leading chain
/// of `inv_NN_` (two digits, then `_`): `inv_06_inv_08_ceiling` claims INV-06 and INV-08;
/// `inv_6_x` claims nothing; `inv_06_x_inv_08` only INV-06. The mutant runner selects the tests
/// of an invariant by the same rule, so the tests a mutant ran are the tests shown here.
pub fn claimed_ids(test_name: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for part in test_name.split("::") {
        let mut rest = part.as_bytes();
        while let [b'i', b'n', b'v', b'_', d1, d2, b'_', tail @ ..] = rest {
            if !(d1.is_ascii_digit() && d2.is_ascii_digit()) {
                break;
            }
            let id = format!("{ID_PREFIX}{}{}", char::from(*d1), char::from(*d2));
            if !ids.contains(&id) {
                ids.push(id);
            }
            rest = tail;
        }
    }
    ids
}

/// A test claiming an invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestEvidence {
    pub binary: String,
    pub name: String,
    pub outcome: TestOutcome,
    pub duration_ms: u64,
}

/// How a scenario covers an invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The scenario claims it: its whole verdict is the evidence (a scenario that failed any
    /// check did not show the invariant holding under its faults).
    Claimed,
    /// Only some of its checks name it (the checks every scenario gets: counters, duplicates…):
    /// those checks' combined verdict is the evidence.
    Checks,
}

/// One check, as shown under the invariants it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckBrief {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
}

/// A scenario covering an invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScenarioEvidence {
    pub scenario: String,
    pub via: Via,
    /// The verdict this scenario gives the invariant (see [`Via`]).
    pub verdict: Verdict,
    /// The scenario's own verdict.
    pub scenario_verdict: Verdict,
    /// The checks that name the invariant.
    pub checks: Vec<CheckBrief>,
    pub seed: u64,
    /// The fleet's files and logs.
    pub run_dir: String,
    pub duration_ms: u64,
    pub repro: String,
    pub reason: Option<String>,
}

/// What became of a mutant of an invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MutantState {
    Killed,
    Survived,
    /// Run, but not judged (the build failed, nothing claiming its invariants ran).
    Unknown,
    /// In the catalogue, absent from the mutant results (a quick run, or no run).
    NotRun,
}

impl MutantState {
    pub fn as_str(self) -> &'static str {
        match self {
            MutantState::Killed => "KILLED",
            MutantState::Survived => "SURVIVED",
            MutantState::Unknown => "UNKNOWN",
            MutantState::NotRun => "NOT RUN",
        }
    }
}

/// A mutant of an invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MutantEvidence {
    pub name: String,
    pub description: String,
    pub state: MutantState,
    /// Tests (`binary::name`) and scenarios (`scenario:NAME`) that failed with it active.
    pub killed_by: Vec<String>,
    /// How many tests and scenarios ran with it active.
    pub ran: usize,
    pub detail: String,
    pub log: String,
}

/// One invariant with its evidence and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvariantEntry {
    pub id: String,
    pub title: String,
    pub statement: String,
    pub status: Status,
    /// Why that status, in one sentence.
    pub why: String,
    pub tests: Vec<TestEvidence>,
    pub scenarios: Vec<ScenarioEvidence>,
    pub mutants: Vec<MutantEvidence>,
    /// What the mutant list means when it is empty: "no mutant in the catalogue", or that the
    /// catalogue is unknown.
    pub mutants_note: Option<String>,
}

impl InvariantEntry {
    pub fn tests_passed(&self) -> usize {
        self.tests
            .iter()
            .filter(|t| t.outcome == TestOutcome::Passed)
            .count()
    }

    pub fn scenarios_passed(&self) -> usize {
        self.scenarios
            .iter()
            .filter(|s| s.verdict == Verdict::Pass)
            .count()
    }

    pub fn mutants_killed(&self) -> usize {
        self.mutants
            .iter()
            .filter(|m| m.state == MutantState::Killed)
            .count()
    }
}

/// An id claimed by a test, scenario or mutant that the catalogue does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownId {
    pub id: String,
    /// Who claims it (`test BIN::NAME`, `scenario NAME`, `scenario NAME check C`, `mutant M`).
    pub claimed_by: Vec<String>,
}

/// Faults of one kind across the scenarios.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultCount {
    pub kind: String,
    pub count: u64,
    pub scenarios: Vec<String>,
}

/// One data-safety check summed over every scenario that reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SafetyFigure {
    pub check: String,
    /// Sum of `observed` over the checks that carried a figure.
    pub observed: u64,
    /// Sum of `out_of` over the checks that carried one.
    pub out_of: u64,
    /// Checks of this name reported (a scenario may report one per node).
    pub checks: usize,
    /// Of those, how many carried no `observed` figure.
    pub without_figures: usize,
    /// Scenarios that reported it.
    pub scenarios: usize,
    pub pass: usize,
    pub fail: usize,
    pub unknown: usize,
    pub skipped: usize,
    /// All of them combined (no check reported is UNKNOWN).
    pub verdict: Verdict,
    /// Scenarios where it failed.
    pub failed_in: Vec<String>,
}

impl SafetyFigure {
    /// The observed sum, `-` when no scenario reported the check, and how many carried no
    /// figure.
    pub fn observed_shown(&self) -> String {
        match (self.checks, self.without_figures) {
            (0, _) => "-".into(),
            (_, 0) => self.observed.to_string(),
            (_, n) => format!("{} ({n} without a figure)", self.observed),
        }
    }

    /// The out-of sum, `-` when no scenario reported the check.
    pub fn out_of_shown(&self) -> String {
        if self.checks == 0 {
            "-".into()
        } else {
            self.out_of.to_string()
        }
    }
}

/// One scenario's convergence against its bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConvergenceRow {
    pub scenario: String,
    pub measured_ms: u64,
    pub bound_ms: u64,
    pub within_bound: bool,
    /// The verdict of its `converged` check, when it reported one.
    pub converged: Option<Verdict>,
}

/// Convergence across scenarios.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConvergenceSummary {
    pub scenarios: usize,
    /// `(percent, measured_ms)`, nearest rank, for each of [`CONVERGENCE_PERCENTILES`].
    pub percentiles_ms: Vec<(u64, u64)>,
    pub max_ms: Option<u64>,
    pub bound_min_ms: Option<u64>,
    pub bound_max_ms: Option<u64>,
    /// Scenarios whose measured time exceeded their bound.
    pub exceeded: usize,
    /// Scenarios whose `converged` check did not pass (a scenario that never converged records
    /// its bound as the measured time, so it is counted here rather than as exceeding).
    pub not_converged: usize,
    pub rows: Vec<ConvergenceRow>,
}

/// A command that replays a failing or unknown scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScenarioRepro {
    pub scenario: String,
    pub verdict: Verdict,
    pub command: String,
    pub reason: String,
    pub run_dir: String,
}

/// A command that reruns a failing test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestRepro {
    pub binary: String,
    pub name: String,
    pub command: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TestTotals {
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Tests whose name claims at least one invariant id.
    pub claiming: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScenarioTotals {
    /// Scenario results that are evidence (run without a mutant).
    pub total: usize,
    pub pass: usize,
    pub fail: usize,
    pub unknown: usize,
    pub skipped: usize,
    /// Results of scenarios run with a mutant active: evidence for the mutant, not shown as
    /// evidence for an invariant.
    pub with_mutant: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MutantTotals {
    /// Mutants in the results.
    pub judged: usize,
    pub killed: usize,
    pub survived: usize,
    pub unknown: usize,
    /// Mutants of the catalogue with no result.
    pub not_run: usize,
    /// Mutants in the catalogue, when it was read.
    pub catalogue: Option<usize>,
    /// `full` or `quick`, when there are results.
    pub mode: Option<String>,
}

/// cargo-mutants over the pure cores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PureCoresFigure {
    pub caught: u32,
    pub missed: u32,
    pub timeout: u32,
    pub unviable: u32,
    /// caught + missed + timeout: the mutants that built.
    pub viable: u32,
    /// caught / viable in tenths of a percent, rounded (integer, so it prints the same
    /// everywhere).
    pub caught_permille: u32,
    pub scope: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusCount {
    pub status: Status,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub invariants: usize,
    pub statuses: Vec<StatusCount>,
    pub tests: TestTotals,
    pub scenarios: ScenarioTotals,
    pub mutants: MutantTotals,
    pub pure_cores: Option<PureCoresFigure>,
    pub faults: u64,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub format_version: u32,
    /// No invariant is UNCOVERED, FAILING or VACUOUS.
    pub clean: bool,
    pub inputs: Vec<InputNote>,
    pub totals: Totals,
    pub invariants: Vec<InvariantEntry>,
    pub unknown_ids: Vec<UnknownId>,
    pub faults: Vec<FaultCount>,
    pub data_safety: Vec<SafetyFigure>,
    pub convergence: ConvergenceSummary,
    pub failing_scenarios: Vec<ScenarioRepro>,
    pub failing_tests: Vec<TestRepro>,
}

impl Report {
    pub fn count(&self, status: Status) -> usize {
        self.invariants
            .iter()
            .filter(|i| i.status == status)
            .count()
    }
}

/// The ids the catalogue holds, and the claims on ids it does not.
struct Claims<'a> {
    known: BTreeSet<&'a str>,
    unknown: BTreeMap<String, BTreeSet<String>>,
}

impl<'a> Claims<'a> {
    fn new(inputs: &'a Inputs) -> Claims<'a> {
        Claims {
            known: inputs.invariants.iter().map(|i| i.id.as_str()).collect(),
            unknown: BTreeMap::new(),
        }
    }

    /// Whether `id` is in the catalogue; if not, `who` is recorded as claiming an unknown id.
    fn claim(&mut self, id: &str, who: impl FnOnce() -> String) -> bool {
        if self.known.contains(id) {
            return true;
        }
        self.unknown.entry(id.to_owned()).or_default().insert(who());
        false
    }

    fn into_unknown(self) -> Vec<UnknownId> {
        self.unknown
            .into_iter()
            .map(|(id, who)| UnknownId {
                id,
                claimed_by: who.into_iter().collect(),
            })
            .collect()
    }
}

/// Evidence gathered per invariant id.
type ByInvariant<T> = BTreeMap<String, Vec<T>>;

/// Builds the report from its inputs.
pub fn build(inputs: &Inputs) -> Report {
    let mut claims = Claims::new(inputs);
    let mut tests: Vec<&TestResult> = inputs.tests.iter().flat_map(|t| t.tests.iter()).collect();
    tests.sort_by(|a, b| (&a.binary, &a.name).cmp(&(&b.binary, &b.name)));
    tests.dedup();
    // A scenario run with a mutant active is evidence about the mutant, not the invariant.
    let (evidence, with_mutant): (Vec<&ScenarioResult>, Vec<&ScenarioResult>) =
        inputs.scenarios.iter().partition(|s| s.mutant.is_none());

    let (mut tests_of, test_totals) = collect_tests(&tests, &mut claims);
    let (mut scenarios_of, mut scenario_totals) = collect_scenarios(&evidence, &mut claims);
    scenario_totals.with_mutant = with_mutant.len();
    let (mut mutants_of, mutant_totals) = collect_mutants(inputs, &mut claims);

    let mutants_known = inputs.mutant_catalogue.is_some() || inputs.mutants.is_some();
    let invariants: Vec<InvariantEntry> = inputs
        .invariants
        .iter()
        .map(|inv| {
            let tests = tests_of.remove(&inv.id).unwrap_or_default();
            let scenarios = scenarios_of.remove(&inv.id).unwrap_or_default();
            let mutants = mutants_of.remove(&inv.id).unwrap_or_default();
            let (status, why) = judge(&tests, &scenarios, &mutants, mutants_known);
            let mutants_note = match (mutants.is_empty(), mutants_known) {
                (false, _) => None,
                (true, true) => Some("no mutant in the catalogue".to_owned()),
                (true, false) => {
                    Some("mutant catalogue and mutant results missing: not known".to_owned())
                }
            };
            InvariantEntry {
                id: inv.id.clone(),
                title: inv.title.clone(),
                statement: inv.statement.clone(),
                status,
                why,
                tests,
                scenarios,
                mutants,
                mutants_note,
            }
        })
        .collect();

    let failing_tests = tests
        .iter()
        .filter(|t| t.outcome == TestOutcome::Failed)
        .map(|t| TestRepro {
            binary: t.binary.clone(),
            name: t.name.clone(),
            command: test_command(&t.binary, &t.name),
        })
        .collect();
    let failing_scenarios = evidence
        .iter()
        .filter(|s| matches!(s.verdict, Verdict::Fail | Verdict::Unknown))
        .map(|s| ScenarioRepro {
            scenario: s.scenario.clone(),
            verdict: s.verdict,
            command: s.repro.clone(),
            reason: scenario_reason(s),
            run_dir: s.run_dir.clone(),
        })
        .collect();

    let faults = fault_counts(&evidence);
    let statuses = Status::ALL
        .iter()
        .map(|&status| StatusCount {
            status,
            count: invariants.iter().filter(|i| i.status == status).count(),
        })
        .collect();
    let totals = Totals {
        invariants: invariants.len(),
        statuses,
        tests: test_totals,
        scenarios: scenario_totals,
        mutants: mutant_totals,
        pure_cores: inputs.pure_cores.as_ref().map(pure_cores_figure),
        faults: faults.iter().map(|f| f.count).sum(),
    };
    Report {
        format_version: REPORT_FORMAT_VERSION,
        clean: invariants.iter().all(|i| i.status.is_clean()),
        inputs: inputs.notes.clone(),
        totals,
        invariants,
        unknown_ids: claims.into_unknown(),
        faults,
        data_safety: SAFETY_CHECKS
            .iter()
            .map(|name| safety_figure(name, &evidence))
            .collect(),
        convergence: convergence(&evidence),
        failing_scenarios,
        failing_tests,
    }
}

/// Tests by the ids in their names (`tests` sorted).
fn collect_tests(
    tests: &[&TestResult],
    claims: &mut Claims,
) -> (ByInvariant<TestEvidence>, TestTotals) {
    let mut totals = TestTotals::default();
    let mut of: ByInvariant<TestEvidence> = BTreeMap::new();
    for t in tests {
        totals.total += 1;
        match t.outcome {
            TestOutcome::Passed => totals.passed += 1,
            TestOutcome::Failed => totals.failed += 1,
            TestOutcome::Skipped => totals.skipped += 1,
        }
        let ids = claimed_ids(&t.name);
        if !ids.is_empty() {
            totals.claiming += 1;
        }
        for id in ids {
            if claims.claim(&id, || format!("test {}::{}", t.binary, t.name)) {
                of.entry(id).or_default().push(TestEvidence {
                    binary: t.binary.clone(),
                    name: t.name.clone(),
                    outcome: t.outcome,
                    duration_ms: t.duration_ms,
                });
            }
        }
    }
    (of, totals)
}

/// Scenarios by what they claim and what their checks name (`scenarios` sorted, none run with a
/// mutant).
fn collect_scenarios(
    scenarios: &[&ScenarioResult],
    claims: &mut Claims,
) -> (ByInvariant<ScenarioEvidence>, ScenarioTotals) {
    let mut totals = ScenarioTotals::default();
    let mut of: ByInvariant<ScenarioEvidence> = BTreeMap::new();
    for s in scenarios {
        totals.total += 1;
        match s.verdict {
            Verdict::Pass => totals.pass += 1,
            Verdict::Fail => totals.fail += 1,
            Verdict::Unknown => totals.unknown += 1,
            Verdict::Skipped => totals.skipped += 1,
        }
        let claimed: BTreeSet<&str> = s.invariants.iter().map(String::as_str).collect();
        let mut checks_of: BTreeMap<&str, Vec<&CheckResult>> = BTreeMap::new();
        for c in &s.checks {
            for id in &c.invariants {
                checks_of.entry(id.as_str()).or_default().push(c);
            }
        }
        let ids: BTreeSet<&str> = claimed
            .iter()
            .copied()
            .chain(checks_of.keys().copied())
            .collect();
        for id in ids {
            let checks = checks_of.get(id).map(Vec::as_slice).unwrap_or_default();
            let is_claimed = claimed.contains(id);
            let who = || {
                if is_claimed {
                    format!("scenario {}", s.scenario)
                } else {
                    let names: BTreeSet<&str> = checks.iter().map(|c| c.name.as_str()).collect();
                    let names: Vec<&str> = names.into_iter().collect();
                    format!("scenario {} check {}", s.scenario, names.join(", "))
                }
            };
            if !claims.claim(id, who) {
                continue;
            }
            let (via, verdict) = if is_claimed {
                (Via::Claimed, s.verdict)
            } else {
                (
                    Via::Checks,
                    Verdict::combine(checks.iter().map(|c| c.verdict)),
                )
            };
            of.entry(id.to_owned()).or_default().push(ScenarioEvidence {
                scenario: s.scenario.clone(),
                via,
                verdict,
                scenario_verdict: s.verdict,
                checks: checks
                    .iter()
                    .map(|c| CheckBrief {
                        name: c.name.clone(),
                        verdict: c.verdict,
                        detail: clip(&c.detail),
                    })
                    .collect(),
                seed: s.seed,
                run_dir: s.run_dir.clone(),
                duration_ms: s.duration_ms,
                repro: s.repro.clone(),
                reason: s.reason.as_deref().map(clip),
            });
        }
    }
    (of, totals)
}

/// Mutants: the results, then the catalogue's mutants that have none (NOT RUN).
fn collect_mutants(
    inputs: &Inputs,
    claims: &mut Claims,
) -> (ByInvariant<MutantEvidence>, MutantTotals) {
    let mut totals = MutantTotals {
        catalogue: inputs.mutant_catalogue.as_ref().map(Vec::len),
        mode: inputs.mutants.as_ref().map(|m| m.mode.clone()),
        ..MutantTotals::default()
    };
    let mut of: ByInvariant<MutantEvidence> = BTreeMap::new();
    let mut results: Vec<_> = inputs
        .mutants
        .iter()
        .flat_map(|m| m.mutants.iter())
        .collect();
    results.sort_by(|a, b| a.name.cmp(&b.name));
    let judged: BTreeSet<&str> = results.iter().map(|m| m.name.as_str()).collect();
    for m in results {
        totals.judged += 1;
        let state = match m.verdict {
            MutantVerdict::Killed => {
                totals.killed += 1;
                MutantState::Killed
            }
            MutantVerdict::Survived => {
                totals.survived += 1;
                MutantState::Survived
            }
            MutantVerdict::Unknown => {
                totals.unknown += 1;
                MutantState::Unknown
            }
        };
        let mut killed_by = m.killed_by.clone();
        killed_by.sort();
        for id in sorted_unique(&m.invariants) {
            if claims.claim(id, || format!("mutant {}", m.name)) {
                of.entry(id.to_owned()).or_default().push(MutantEvidence {
                    name: m.name.clone(),
                    description: m.description.clone(),
                    state,
                    killed_by: killed_by.clone(),
                    ran: m.ran.len(),
                    detail: clip(&m.detail),
                    log: m.log.clone(),
                });
            }
        }
    }
    let mut not_run: Vec<_> = inputs
        .mutant_catalogue
        .iter()
        .flatten()
        .filter(|c| !judged.contains(c.name.as_str()))
        .collect();
    not_run.sort_by(|a, b| a.name.cmp(&b.name));
    not_run.dedup_by(|a, b| a.name == b.name);
    let detail = match &inputs.mutants {
        Some(run) => format!("not in the mutant results (a {} run)", run.mode),
        None => "no mutant results".into(),
    };
    for c in not_run {
        totals.not_run += 1;
        for id in sorted_unique(&c.invariants) {
            if claims.claim(id, || format!("mutant {}", c.name)) {
                of.entry(id.to_owned()).or_default().push(MutantEvidence {
                    name: c.name.clone(),
                    description: c.description.clone(),
                    state: MutantState::NotRun,
                    killed_by: Vec::new(),
                    ran: 0,
                    detail: detail.clone(),
                    log: String::new(),
                });
            }
        }
    }
    for list in of.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    (of, totals)
}

/// An invariant's status and why, from its evidence. The order of the rules is the order of
/// their weight: nothing claims it; something claiming it fails; a mutant of it survived; no
/// passing evidence; a mutant of it not judged; else proven.
pub fn judge(
    tests: &[TestEvidence],
    scenarios: &[ScenarioEvidence],
    mutants: &[MutantEvidence],
    mutants_known: bool,
) -> (Status, String) {
    if tests.is_empty() && scenarios.is_empty() {
        return (
            Status::Uncovered,
            "no test and no scenario claims it".into(),
        );
    }
    let failing: Vec<String> = tests
        .iter()
        .filter(|t| t.outcome == TestOutcome::Failed)
        .map(|t| format!("test {}::{}", t.binary, t.name))
        .chain(
            scenarios
                .iter()
                .filter(|s| s.verdict == Verdict::Fail)
                .map(|s| format!("scenario {}", s.scenario)),
        )
        .collect();
    if !failing.is_empty() {
        return (Status::Failing, format!("failing: {}", listed(&failing)));
    }
    let survived: Vec<String> = mutants
        .iter()
        .filter(|m| m.state == MutantState::Survived)
        .map(|m| m.name.clone())
        .collect();
    if !survived.is_empty() {
        return (
            Status::Vacuous,
            format!(
                "mutant(s) survived: {}; every claim passed with the invariant broken",
                listed(&survived)
            ),
        );
    }
    let (tests_passed, scenarios_passed) = (
        tests
            .iter()
            .filter(|t| t.outcome == TestOutcome::Passed)
            .count(),
        scenarios
            .iter()
            .filter(|s| s.verdict == Verdict::Pass)
            .count(),
    );
    if tests_passed + scenarios_passed == 0 {
        let skipped_tests = tests.len();
        let unknown = scenarios
            .iter()
            .filter(|s| s.verdict == Verdict::Unknown)
            .count();
        let skipped = scenarios.len() - unknown;
        return (
            Status::Unknown,
            format!(
                "no passing evidence: {skipped_tests} skipped test(s), {unknown} UNKNOWN and \
                 {skipped} SKIPPED scenario(s)"
            ),
        );
    }
    let unjudged: Vec<String> = mutants
        .iter()
        .filter(|m| matches!(m.state, MutantState::Unknown | MutantState::NotRun))
        .map(|m| format!("{} ({})", m.name, m.state.as_str()))
        .collect();
    if !unjudged.is_empty() {
        return (
            Status::Unknown,
            format!(
                "mutant(s) not judged: {}; whether its claims can fail is not shown",
                listed(&unjudged)
            ),
        );
    }
    if !mutants_known {
        return (
            Status::Unknown,
            "no mutant catalogue and no mutant results: whether its claims can fail is not shown"
                .into(),
        );
    }
    let mutants_phrase = if mutants.is_empty() {
        "no mutant in the catalogue".to_owned()
    } else {
        format!("every mutant killed ({})", mutants.len())
    };
    (
        Status::Proven,
        format!(
            "{tests_passed} passing test(s), {scenarios_passed} passing scenario(s), nothing \
             failing; {mutants_phrase}"
        ),
    )
}

/// The command that reruns one test through the test runner, exactly that test in exactly its
/// binary, with the features `make test` uses.
pub fn test_command(binary: &str, name: &str) -> String {
    let filter = format!("binary_id(={binary}) & test(={name})");
    format!(
        "cargo nextest run --workspace --locked --all-features --no-fail-fast -E {}",
        shell_quote(&filter)
    )
}

/// Single-quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Why a scenario failed or is unknown: its reason, else its first failing, then first unknown
/// check.
fn scenario_reason(s: &ScenarioResult) -> String {
    if let Some(r) = &s.reason {
        return clip(r);
    }
    [Verdict::Fail, Verdict::Unknown]
        .iter()
        .find_map(|v| s.checks.iter().find(|c| c.verdict == *v))
        .map(|c| clip(&format!("{}: {}", c.name, c.detail)))
        .unwrap_or_else(|| "no check says why".into())
}

fn fault_counts(scenarios: &[&ScenarioResult]) -> Vec<FaultCount> {
    let mut by_kind: BTreeMap<&str, (u64, BTreeSet<&str>)> = BTreeMap::new();
    for s in scenarios {
        for f in &s.faults {
            let e = by_kind.entry(f.kind.as_str()).or_default();
            e.0 += 1;
            e.1.insert(s.scenario.as_str());
        }
    }
    by_kind
        .into_iter()
        .map(|(kind, (count, scenarios))| FaultCount {
            kind: kind.to_owned(),
            count,
            scenarios: scenarios.into_iter().map(str::to_owned).collect(),
        })
        .collect()
}

fn safety_figure(name: &str, scenarios: &[&ScenarioResult]) -> SafetyFigure {
    let mut f = SafetyFigure {
        check: name.to_owned(),
        observed: 0,
        out_of: 0,
        checks: 0,
        without_figures: 0,
        scenarios: 0,
        pass: 0,
        fail: 0,
        unknown: 0,
        skipped: 0,
        verdict: Verdict::Unknown,
        failed_in: Vec::new(),
    };
    let mut verdicts = Vec::new();
    for s in scenarios {
        let checks: Vec<&CheckResult> = s.checks.iter().filter(|c| c.name == name).collect();
        if checks.is_empty() {
            continue;
        }
        f.scenarios += 1;
        for c in checks {
            f.checks += 1;
            match c.observed {
                Some(n) => f.observed = f.observed.saturating_add(n),
                None => f.without_figures += 1,
            }
            if let Some(n) = c.out_of {
                f.out_of = f.out_of.saturating_add(n);
            }
            match c.verdict {
                Verdict::Pass => f.pass += 1,
                Verdict::Fail => {
                    f.fail += 1;
                    if f.failed_in.last() != Some(&s.scenario) {
                        f.failed_in.push(s.scenario.clone());
                    }
                }
                Verdict::Unknown => f.unknown += 1,
                Verdict::Skipped => f.skipped += 1,
            }
            verdicts.push(c.verdict);
        }
    }
    f.verdict = Verdict::combine(verdicts);
    f
}

fn convergence(scenarios: &[&ScenarioResult]) -> ConvergenceSummary {
    let rows: Vec<ConvergenceRow> = scenarios
        .iter()
        .filter_map(|s| {
            let c = s.convergence?;
            let converged = s
                .checks
                .iter()
                .filter(|k| k.name == check::CONVERGED)
                .map(|k| k.verdict)
                .reduce(|a, b| Verdict::combine([a, b]));
            Some(ConvergenceRow {
                scenario: s.scenario.clone(),
                measured_ms: c.measured_ms,
                bound_ms: c.bound_ms,
                within_bound: c.measured_ms <= c.bound_ms,
                converged,
            })
        })
        .collect();
    let mut measured: Vec<u64> = rows.iter().map(|r| r.measured_ms).collect();
    measured.sort_unstable();
    ConvergenceSummary {
        scenarios: rows.len(),
        percentiles_ms: CONVERGENCE_PERCENTILES
            .iter()
            .filter_map(|&p| Some((p, percentile(&measured, p)?)))
            .collect(),
        max_ms: measured.last().copied(),
        bound_min_ms: rows.iter().map(|r| r.bound_ms).min(),
        bound_max_ms: rows.iter().map(|r| r.bound_ms).max(),
        exceeded: rows.iter().filter(|r| !r.within_bound).count(),
        not_converged: rows
            .iter()
            .filter(|r| r.converged.is_some_and(|v| v != Verdict::Pass))
            .count(),
        rows,
    }
}

/// The nearest-rank percentile of sorted values: the smallest value with at least `percent`% of
/// the values at or below it.
pub fn percentile(sorted: &[u64], percent: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    let rank = (percent * n).div_ceil(100).clamp(1, n);
    // rank is within 1..=n, so the index is in bounds.
    usize::try_from(rank - 1)
        .ok()
        .and_then(|i| sorted.get(i))
        .copied()
}

fn pure_cores_figure(p: &PureCores) -> PureCoresFigure {
    let viable = p.caught + p.missed + p.timeout;
    let caught_permille = if viable == 0 {
        0
    } else {
        let permille = (u64::from(p.caught) * 1000 + u64::from(viable) / 2) / u64::from(viable);
        // caught ≤ viable, so this is at most 1000.
        u32::try_from(permille).unwrap_or(1000)
    };
    let mut scope = p.scope.clone();
    scope.sort();
    PureCoresFigure {
        caught: p.caught,
        missed: p.missed,
        timeout: p.timeout,
        unviable: p.unviable,
        viable,
        caught_permille,
        scope,
    }
}

/// `items` joined, at most [`WHY_ITEMS_MAX`] of them named.
fn listed(items: &[String]) -> String {
    let mut text = items
        .iter()
        .take(WHY_ITEMS_MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > WHY_ITEMS_MAX {
        text.push_str(&format!(" and {} more", items.len() - WHY_ITEMS_MAX));
    }
    text
}

/// At most [`DETAIL_CHARS_MAX`] characters of `s`, on one line.
pub fn clip(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut chars = one_line.chars();
    let mut out: String = chars.by_ref().take(DETAIL_CHARS_MAX).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

fn sorted_unique(ids: &[String]) -> BTreeSet<&str> {
    ids.iter().map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_the_leading_chain_of_each_part_of_a_test_name() {
        let check = |name: &str, expected: &[&str]| {
            assert_eq!(claimed_ids(name), expected, "{name}");
        };
        check("inv_06_inv_08_x", &["INV-06", "INV-08"]);
        check("inv_06_x", &["INV-06"]);
        check("ingest::tests::inv_03_inv_05_crash", &["INV-03", "INV-05"]);
        check("inv_6_x", &[]);
        check("inv_006_x", &[]);
        check("inv_06", &[]);
        check("x_inv_06_y", &[]);
        check("inv_06_x_inv_08_y", &["INV-06"]);
        check("inv_06_inv_06_twice", &["INV-06"]);
        check("inv_99_beyond", &["INV-99"]);
        check("inv_ab_x", &[]);
        check("inv_0a_x", &[]);
        check("inv_a1_x", &[]);
        check("inv_6__x", &[]);
        check("INV_06_upper", &[]);
        check("", &[]);
    }

    #[test]
    fn invariant_ids_are_inv_and_two_digits() {
        for (s, ok) in [
            ("INV-06", true),
            ("INV-6", false),
            ("INV-006", false),
            ("inv-06", false),
            ("INV-0a", false),
            ("INV-", false),
        ] {
            assert_eq!(is_invariant_id(s), ok, "{s}");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50), Some(10));
        assert_eq!(percentile(&v, 95), Some(19));
        assert_eq!(percentile(&v, 100), Some(20));
        assert_eq!(percentile(&[7], 50), Some(7));
        assert_eq!(percentile(&[7], 0), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn the_caught_ratio_is_of_viable_mutants_rounded_to_a_tenth_of_a_percent() {
        let p = |caught, missed, timeout, unviable| {
            pure_cores_figure(&PureCores {
                caught,
                missed,
                timeout,
                unviable,
                scope: vec!["b".into(), "a".into()],
            })
        };
        let f = p(2, 1, 0, 5);
        assert_eq!((f.viable, f.caught_permille), (3, 667));
        assert_eq!(f.scope, ["a", "b"]);
        assert_eq!(p(0, 0, 0, 3).caught_permille, 0);
        assert_eq!(p(9, 0, 1, 0).caught_permille, 900);
    }

    #[test]
    fn clipping_keeps_one_line_and_a_bounded_length() {
        assert_eq!(clip("a\nb\tc"), "a b c");
        let long = "x".repeat(DETAIL_CHARS_MAX + 5);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), DETAIL_CHARS_MAX + 1);
        assert!(clipped.ends_with('…'));
        assert_eq!(
            clip(&"é".repeat(DETAIL_CHARS_MAX)).chars().count(),
            DETAIL_CHARS_MAX
        );
    }

    #[test]
    fn a_failing_test_is_rerun_alone_in_its_binary() {
        assert_eq!(
            test_command("store::space", "inv_06_x"),
            "cargo nextest run --workspace --locked --all-features --no-fail-fast -E \
             'binary_id(=store::space) & test(=inv_06_x)'"
        );
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    fn test(outcome: TestOutcome) -> TestEvidence {
        TestEvidence {
            binary: "b".into(),
            name: "inv_01_t".into(),
            outcome,
            duration_ms: 1,
        }
    }

    fn scenario(verdict: Verdict) -> ScenarioEvidence {
        ScenarioEvidence {
            scenario: "s".into(),
            via: Via::Claimed,
            verdict,
            scenario_verdict: verdict,
            checks: Vec::new(),
            seed: 1,
            run_dir: "/r".into(),
            duration_ms: 1,
            repro: "EDGE_FI_SEED=1 edge-fi run s".into(),
            reason: None,
        }
    }

    fn mutant(state: MutantState) -> MutantEvidence {
        MutantEvidence {
            name: "m".into(),
            description: String::new(),
            state,
            killed_by: Vec::new(),
            ran: 1,
            detail: String::new(),
            log: String::new(),
        }
    }

    #[test]
    fn statuses_follow_their_rules_in_order_of_weight() {
        use MutantState as M;
        use Status::*;
        use TestOutcome::{Failed, Passed, Skipped};
        use Verdict as V;
        // check(tests, scenarios, mutants, mutants known, expected status)
        let check = |tests: &[TestOutcome],
                     scenarios: &[Verdict],
                     mutants: &[MutantState],
                     known: bool,
                     expected: Status| {
            let tests: Vec<_> = tests.iter().map(|o| test(*o)).collect();
            let scenarios: Vec<_> = scenarios.iter().map(|v| scenario(*v)).collect();
            let mutants: Vec<_> = mutants.iter().map(|m| mutant(*m)).collect();
            let (status, why) = judge(&tests, &scenarios, &mutants, known);
            assert_eq!(
                status, expected,
                "{tests:?} {scenarios:?} {mutants:?}: {why}"
            );
            assert!(!why.is_empty());
        };
        check(&[], &[], &[], true, Uncovered);
        check(&[], &[], &[M::Survived], true, Uncovered);
        check(&[Passed], &[], &[], true, Proven);
        check(&[], &[V::Pass], &[M::Killed], true, Proven);
        check(&[Passed, Failed], &[], &[M::Killed], true, Failing);
        check(&[Passed], &[V::Fail], &[], true, Failing);
        check(&[Failed], &[], &[M::Survived], true, Failing);
        check(&[Passed], &[], &[M::Killed, M::Survived], true, Vacuous);
        check(&[Skipped], &[], &[M::Survived], true, Vacuous);
        check(&[Skipped], &[V::Unknown, V::Skipped], &[], true, Unknown);
        check(&[Passed], &[V::Unknown], &[M::Killed], true, Proven);
        check(&[Passed], &[], &[M::NotRun], true, Unknown);
        check(&[Passed], &[], &[M::Unknown], true, Unknown);
        check(&[Passed], &[], &[], false, Unknown);
    }

    #[test]
    fn only_failing_uncovered_and_vacuous_make_a_report_unclean() {
        let clean: Vec<bool> = Status::ALL.iter().map(|s| s.is_clean()).collect();
        assert_eq!(clean, [true, false, false, false, true]);
    }

    #[test]
    fn long_explanations_name_a_few_and_count_the_rest() {
        let items: Vec<String> = (0..WHY_ITEMS_MAX + 2).map(|i| format!("t{i}")).collect();
        let text = listed(&items);
        assert!(text.ends_with(" and 2 more"), "{text}");
        assert_eq!(listed(&items[..1]), "t0");
    }
}
