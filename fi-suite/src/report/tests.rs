//! The report end to end, on synthetic inputs written to a temporary workspace: every status,
//! the unknown ids, the figures across scenarios, the exit rule, a self-contained page and
//! byte-identical output from the same inputs.

use std::path::Path;

use super::*;
use crate::results::{
    Build, CheckResult, Convergence, FaultRecord, MutantResult, MutantVerdict, MutantsRun,
    PureCores, ScenarioResult, TestOutcome, TestResult, TestsRun, Verdict, check, write_json,
};

const CATALOGUE: &str = r#"
[[invariant]]
id = "INV-01"
title = "Proven, with a mutant"
statement = "Holds, and a mutant of it is killed."

[[invariant]]
id = "INV-02"
title = "Failing"
statement = "A test claiming it fails."

[[invariant]]
id = "INV-03"
title = "Vacuous"
statement = "A mutant of it survives."

[[invariant]]
id = "INV-04"
title = "Uncovered"
statement = "Nothing claims it (a scenario run with a mutant does not count)."

[[invariant]]
id = "INV-05"
title = "Unknown only"
statement = "Only a skipped test and an unknown scenario claim it."

[[invariant]]
id = "INV-06"
title = "Proven, no mutant"
statement = "Claimed by a chained test name and by a check; no mutant in the catalogue."
"#;

const MUTANT_CATALOGUE: &str = r#"
[[mutant]]
name = "kill_me"
invariants = ["INV-01"]
description = "breaks INV-01"
where = "store/src/x.rs"
quick = true

[[mutant]]
name = "survivor"
invariants = ["INV-03"]
description = "breaks INV-03"
where = "store/src/y.rs"
quick = true
"#;

fn test(binary: &str, name: &str, outcome: TestOutcome) -> TestResult {
    TestResult {
        binary: binary.into(),
        name: name.into(),
        outcome,
        duration_ms: 3,
    }
}

fn chk(
    name: &str,
    invariants: &[&str],
    verdict: Verdict,
    observed: Option<u64>,
    out_of: Option<u64>,
) -> CheckResult {
    CheckResult {
        name: name.into(),
        invariants: invariants.iter().map(|s| (*s).to_owned()).collect(),
        verdict,
        detail: format!("{name} detail"),
        observed,
        out_of,
    }
}

fn fault(at_ms: u64, kind: &str) -> FaultRecord {
    FaultRecord {
        at_ms,
        kind: kind.into(),
        target: "link node-1→node-2".into(),
        detail: "d".into(),
    }
}

fn scenario(name: &str, invariants: &[&str], verdict: Verdict) -> ScenarioResult {
    ScenarioResult {
        scenario: name.into(),
        summary: format!("{name} summary"),
        seed: 42,
        invariants: invariants.iter().map(|s| (*s).to_owned()).collect(),
        verdict,
        checks: Vec::new(),
        faults: Vec::new(),
        convergence: None,
        build: Build::Shipped,
        mutant: None,
        reason: None,
        run_dir: format!("/runs/{name}"),
        repro: format!("EDGE_FI_SEED=42 edge-fi run {name}"),
        duration_ms: 1000,
    }
}

/// Writes the synthetic workspace under `root`.
fn write_inputs(root: &Path) {
    std::fs::create_dir_all(root.join("traceability")).unwrap();
    std::fs::write(root.join(CATALOGUE_PATH), CATALOGUE).unwrap();
    std::fs::write(root.join(MUTANT_CATALOGUE_PATH), MUTANT_CATALOGUE).unwrap();
    let layout = Layout::new(root.join(RESULTS_PATH));
    let tests = TestsRun {
        source: "target/nextest/ci/junit.xml".into(),
        tests: vec![
            test("store::a", "inv_01_holds", TestOutcome::Passed),
            test("store::a", "inv_01_inv_06_chain", TestOutcome::Passed),
            test("store::b", "inv_02_passes", TestOutcome::Passed),
            test("store::b", "inv_02_breaks", TestOutcome::Failed),
            test("relay", "core::tests::inv_03_weak", TestOutcome::Passed),
            test("net::c", "inv_05_needs_a_capability", TestOutcome::Skipped),
            test("net::c", "inv_6_is_not_an_id", TestOutcome::Passed),
            test("net::c", "inv_28_beyond_the_catalogue", TestOutcome::Passed),
            test("edged", "no_invariant_here", TestOutcome::Failed),
        ],
    };
    write_json(&layout.tests(), &tests).unwrap();

    let mut pass = scenario("line3-pass", &["INV-01"], Verdict::Pass);
    pass.checks = vec![
        chk(check::LOST, &["INV-01"], Verdict::Pass, Some(0), Some(12)),
        chk(check::PANICS, &[], Verdict::Pass, Some(0), Some(3)),
        chk(
            check::COUNTERS,
            &["INV-06"],
            Verdict::Pass,
            Some(0),
            Some(3),
        ),
        chk(check::CONVERGED, &[], Verdict::Pass, None, None),
    ];
    pass.faults = vec![fault(10, "net.drop"), fault(20, "net.drop")];
    pass.convergence = Some(Convergence {
        measured_ms: 900,
        bound_ms: 20_000,
    });

    let mut fail = scenario("ring4-fail", &["INV-02"], Verdict::Fail);
    fail.checks = vec![
        chk(check::LOST, &["INV-02"], Verdict::Fail, Some(1), Some(5)),
        chk(check::PANICS, &[], Verdict::Pass, Some(0), Some(4)),
        chk(check::CONVERGED, &[], Verdict::Fail, None, None),
        // A passing check naming an invariant the scenario does not claim: evidence for it,
        // whatever else failed in the scenario.
        chk(
            check::COUNTERS,
            &["INV-06"],
            Verdict::Pass,
            Some(0),
            Some(4),
        ),
    ];
    fail.faults = vec![fault(5, "proc.kill9")];
    fail.convergence = Some(Convergence {
        measured_ms: 30_000,
        bound_ms: 25_000,
    });

    let mut unknown = scenario("star5-unknown", &["INV-05", "INV-6"], Verdict::Unknown);
    unknown.reason = Some("faults_fired: the scenario applies faults but none fired".into());
    unknown.checks = vec![chk(check::FAULTS_FIRED, &[], Verdict::Unknown, None, None)];

    let mut skipped = scenario("netns-skipped", &["INV-05"], Verdict::Skipped);
    skipped.reason = Some("no network namespaces here".into());

    // Evidence about a mutant, not about INV-04.
    let mut with_mutant = scenario("line3-pass", &["INV-04"], Verdict::Fail);
    with_mutant.mutant = Some("kill_me".into());

    for (file, s) in [
        ("line3-pass", &pass),
        ("ring4-fail", &fail),
        ("star5-unknown", &unknown),
        ("netns-skipped", &skipped),
        ("line3-pass-kill_me", &with_mutant),
    ] {
        write_json(&layout.scenario(file), s).unwrap();
    }

    let mutants = MutantsRun {
        mode: "full".into(),
        mutants: vec![
            MutantResult {
                name: "survivor".into(),
                invariants: vec!["INV-03".into(), "INV-99".into()],
                description: "breaks INV-03".into(),
                verdict: MutantVerdict::Survived,
                killed_by: vec![],
                ran: vec!["relay::core::tests::inv_03_weak".into()],
                detail: "every claim passed".into(),
                log: "target/fi/mutants/survivor.log".into(),
            },
            MutantResult {
                name: "kill_me".into(),
                invariants: vec!["INV-01".into()],
                description: "breaks INV-01".into(),
                verdict: MutantVerdict::Killed,
                killed_by: vec![
                    "scenario:line3-pass".into(),
                    "store::a::inv_01_holds".into(),
                ],
                ran: vec!["store::a::inv_01_holds".into()],
                detail: "2 failed".into(),
                log: "target/fi/mutants/kill_me.log".into(),
            },
        ],
        pure_cores: None,
    };
    write_json(&layout.mutants(), &mutants).unwrap();
    write_json(
        &layout.root.join(PURE_CORES_FILE),
        &PureCores {
            caught: 90,
            missed: 9,
            timeout: 1,
            unviable: 4,
            scope: vec!["relay/src/core.rs".into(), "store/src/evict.rs".into()],
        },
    )
    .unwrap();
}

fn status_of(r: &Report, id: &str) -> Status {
    r.invariants
        .iter()
        .find(|i| i.id == id)
        .map(|i| i.status)
        .unwrap()
}

fn sources(root: &Path) -> Sources {
    Sources::under(root)
}

#[test]
fn every_status_from_synthetic_inputs() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    let (r, _) = generate(&sources(dir.path())).unwrap();
    let statuses: Vec<(&str, Status)> = r
        .invariants
        .iter()
        .map(|i| (i.id.as_str(), i.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("INV-01", Status::Proven),
            ("INV-02", Status::Failing),
            ("INV-03", Status::Vacuous),
            ("INV-04", Status::Uncovered),
            ("INV-05", Status::Unknown),
            ("INV-06", Status::Proven),
        ]
    );
    assert!(!r.clean);

    let inv = |id: &str| r.invariants.iter().find(|i| i.id == id).unwrap();
    // INV-01: two tests (one by a chained name), one scenario, its mutant and its killers.
    let one = inv("INV-01");
    assert_eq!(one.tests.len(), 2);
    assert_eq!(one.scenarios.len(), 1);
    assert_eq!(one.scenarios[0].seed, 42);
    assert_eq!(one.scenarios[0].run_dir, "/runs/line3-pass");
    assert_eq!(one.mutants.len(), 1);
    assert_eq!(
        one.mutants[0].killed_by,
        ["scenario:line3-pass", "store::a::inv_01_holds"]
    );
    // INV-06: the chained test and a check of a scenario that does not claim it.
    let six = inv("INV-06");
    assert_eq!(six.tests[0].name, "inv_01_inv_06_chain");
    let via: Vec<(&str, model::Via, Verdict, Verdict)> = six
        .scenarios
        .iter()
        .map(|s| (s.scenario.as_str(), s.via, s.verdict, s.scenario_verdict))
        .collect();
    assert_eq!(
        via,
        [
            (
                "line3-pass",
                model::Via::Checks,
                Verdict::Pass,
                Verdict::Pass
            ),
            (
                "ring4-fail",
                model::Via::Checks,
                Verdict::Pass,
                Verdict::Fail
            ),
        ]
    );
    assert_eq!(
        six.mutants_note.as_deref(),
        Some("no mutant in the catalogue")
    );
    // INV-04: the scenario run with a mutant is not evidence.
    assert!(inv("INV-04").scenarios.is_empty());
    assert_eq!(r.totals.scenarios.with_mutant, 1);
    // INV-05: a skipped test, an unknown and a skipped scenario.
    assert_eq!(inv("INV-05").scenarios.len(), 2);
    assert!(
        inv("INV-05").why.contains("no passing evidence"),
        "{}",
        inv("INV-05").why
    );
    assert!(inv("INV-02").why.contains("store::b::inv_02_breaks"));
    assert!(inv("INV-03").why.contains("survivor"));
}

#[test]
fn ids_beyond_the_catalogue_are_reported_as_unknown_and_non_ids_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    let (r, _) = generate(&sources(dir.path())).unwrap();
    let unknown: Vec<(&str, Vec<&str>)> = r
        .unknown_ids
        .iter()
        .map(|u| {
            (
                u.id.as_str(),
                u.claimed_by.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        unknown,
        [
            ("INV-28", vec!["test net::c::inv_28_beyond_the_catalogue"]),
            ("INV-6", vec!["scenario star5-unknown"]),
            ("INV-99", vec!["mutant survivor"]),
        ]
    );
    // inv_6_… claims nothing, so no invariant lists it.
    assert!(
        r.invariants
            .iter()
            .all(|i| i.tests.iter().all(|t| t.name != "inv_6_is_not_an_id"))
    );
    assert_eq!(r.totals.tests.claiming, 7);
    let md = std::fs::read_to_string(dir.path().join("traceability/report.md")).unwrap();
    assert!(md.contains("## Unknown invariant ids"), "{md}");
}

#[test]
fn figures_across_scenarios_faults_safety_convergence_and_reproduction() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    let (r, _) = generate(&sources(dir.path())).unwrap();

    let faults: Vec<(&str, u64)> = r
        .faults
        .iter()
        .map(|f| (f.kind.as_str(), f.count))
        .collect();
    assert_eq!(faults, [("net.drop", 2), ("proc.kill9", 1)]);
    assert_eq!(r.totals.faults, 3);

    let lost = r
        .data_safety
        .iter()
        .find(|f| f.check == check::LOST)
        .unwrap();
    assert_eq!((lost.observed, lost.out_of, lost.scenarios), (1, 17, 2));
    assert_eq!((lost.pass, lost.fail, lost.verdict), (1, 1, Verdict::Fail));
    assert_eq!(lost.failed_in, ["ring4-fail"]);
    let panics = r
        .data_safety
        .iter()
        .find(|f| f.check == check::PANICS)
        .unwrap();
    assert_eq!(
        (panics.observed, panics.out_of, panics.verdict),
        (0, 7, Verdict::Pass)
    );
    // A check no scenario reported is unknown, not passing.
    let same = r
        .data_safety
        .iter()
        .find(|f| f.check == check::SAME_STATE_AS_WITHOUT_KILLS)
        .unwrap();
    assert_eq!((same.scenarios, same.verdict), (0, Verdict::Unknown));
    assert_eq!(r.data_safety.len(), model::SAFETY_CHECKS.len());

    let c = &r.convergence;
    assert_eq!(c.scenarios, 2);
    assert_eq!(c.percentiles_ms, [(50, 900), (95, 30_000)]);
    assert_eq!(c.max_ms, Some(30_000));
    assert_eq!(
        (c.bound_min_ms, c.bound_max_ms),
        (Some(20_000), Some(25_000))
    );
    assert_eq!((c.exceeded, c.not_converged), (1, 1));

    let repro: Vec<(&str, &str)> = r
        .failing_scenarios
        .iter()
        .map(|s| (s.scenario.as_str(), s.command.as_str()))
        .collect();
    assert_eq!(
        repro,
        [
            ("ring4-fail", "EDGE_FI_SEED=42 edge-fi run ring4-fail"),
            ("star5-unknown", "EDGE_FI_SEED=42 edge-fi run star5-unknown"),
        ]
    );
    let tests: Vec<&str> = r.failing_tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(tests, ["no_invariant_here", "inv_02_breaks"]);
    assert!(r.failing_tests[1].command.contains("test(=inv_02_breaks)"));

    let p = r.totals.pure_cores.as_ref().unwrap();
    assert_eq!((p.caught, p.viable, p.caught_permille), (90, 100, 900));
    assert_eq!((r.totals.mutants.killed, r.totals.mutants.judged), (1, 2));

    let md = std::fs::read_to_string(dir.path().join("traceability/report.md")).unwrap();
    for needle in [
        "EDGE_FI_SEED=42 edge-fi run ring4-fail",
        "binary_id(=store::b) & test(=inv_02_breaks)",
        "p50 900 ms, p95 30000 ms, max 30000 ms",
        "caught 90 of 100 viable mutants (90.0%)",
        "<a id=\"inv-04\"></a>",
        "| [INV-03](#inv-03) | **VACUOUS** |",
        "`/runs/line3-pass`",
    ] {
        assert!(md.contains(needle), "{needle} not in:\n{md}");
    }
    let summary = summary(&r);
    assert!(summary.contains("INV-02  FAILING"), "{summary}");
    assert!(
        summary.contains("verdict: NOT CLEAN (1 FAILING, 1 VACUOUS, 1 UNCOVERED)"),
        "{summary}"
    );
}

#[test]
fn the_report_is_clean_only_without_uncovered_failing_or_vacuous_invariants() {
    // Starting from the synthetic inputs, remove one cause at a time; the report is clean only
    // when all three are gone (INV-05 stays UNKNOWN, which is allowed).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_inputs(root);
    let layout = Layout::new(root.join(RESULTS_PATH));
    assert!(!report(&sources(root)).unwrap());

    let mut tests: TestsRun = crate::results::read_json(&layout.tests()).unwrap();
    tests.tests.retain(|t| t.outcome != TestOutcome::Failed);
    write_json(&layout.tests(), &tests).unwrap();
    std::fs::remove_file(layout.scenario("ring4-fail")).unwrap();
    let (r, _) = generate(&sources(root)).unwrap();
    assert_eq!(status_of(&r, "INV-02"), Status::Proven);
    assert!(!r.clean, "INV-03 vacuous, INV-04 uncovered");

    let mut mutants: MutantsRun = crate::results::read_json(&layout.mutants()).unwrap();
    mutants.mutants[0].verdict = MutantVerdict::Killed;
    write_json(&layout.mutants(), &mutants).unwrap();
    let (r, _) = generate(&sources(root)).unwrap();
    assert_eq!(status_of(&r, "INV-03"), Status::Proven);
    assert!(!r.clean, "INV-04 uncovered");

    tests
        .tests
        .push(test("store::d", "inv_04_now_claimed", TestOutcome::Passed));
    write_json(&layout.tests(), &tests).unwrap();
    let (r, _) = generate(&sources(root)).unwrap();
    assert_eq!(status_of(&r, "INV-05"), Status::Unknown);
    assert!(r.clean, "{}", summary(&r));
    assert!(report(&sources(root)).unwrap());
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("traceability/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["clean"], serde_json::Value::Bool(true));
}

#[test]
fn missing_results_are_said_and_leave_invariants_uncovered() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("traceability")).unwrap();
    std::fs::write(root.join(CATALOGUE_PATH), CATALOGUE).unwrap();
    let (r, written) = generate(&sources(root)).unwrap();
    assert!(r.invariants.iter().all(|i| i.status == Status::Uncovered));
    assert!(!r.clean);
    let missing: Vec<&str> = r
        .inputs
        .iter()
        .filter(|n| n.state == load::InputState::Missing)
        .map(|n| n.input.as_str())
        .collect();
    assert_eq!(
        missing,
        [
            "mutant catalogue",
            "tests",
            "scenarios",
            "mutants",
            "pure cores"
        ]
    );
    let md = std::fs::read_to_string(&written.md).unwrap();
    assert!(
        md.contains("no scenario results: `make edge-fi` was not run"),
        "{md}"
    );
    assert!(
        md.contains("mutant catalogue and mutant results missing"),
        "{md}"
    );

    // Without any mutant knowledge nothing is PROVEN, however well tested.
    let layout = Layout::new(root.join(RESULTS_PATH));
    write_json(
        &layout.tests(),
        &TestsRun {
            source: "x".into(),
            tests: vec![test("store::a", "inv_01_holds", TestOutcome::Passed)],
        },
    )
    .unwrap();
    let (r, _) = generate(&sources(root)).unwrap();
    assert_eq!(status_of(&r, "INV-01"), Status::Unknown);
}

#[test]
fn a_catalogue_mutant_without_a_result_is_not_run_and_keeps_its_invariant_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_inputs(root);
    let layout = Layout::new(root.join(RESULTS_PATH));
    let mut mutants: MutantsRun = crate::results::read_json(&layout.mutants()).unwrap();
    mutants.mode = "quick".into();
    mutants.mutants.retain(|m| m.name != "kill_me");
    write_json(&layout.mutants(), &mutants).unwrap();
    let (r, _) = generate(&sources(root)).unwrap();
    let one = r.invariants.iter().find(|i| i.id == "INV-01").unwrap();
    assert_eq!(one.status, Status::Unknown, "{}", one.why);
    assert_eq!(one.mutants[0].state, model::MutantState::NotRun);
    assert!(one.mutants[0].detail.contains("quick"));
    assert_eq!(r.totals.mutants.not_run, 1);
}

#[test]
fn a_malformed_result_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_inputs(root);
    let bad = Layout::new(root.join(RESULTS_PATH)).scenario("broken");
    std::fs::write(&bad, b"{\"scenario\": 3}").unwrap();
    let err = generate(&sources(root)).unwrap_err();
    assert!(matches!(err, ReportError::Json { .. }), "{err}");
    assert!(err.to_string().contains("broken.json"), "{err}");
}

/// Every tag of the page: `<…>` spans (text never holds a raw `<`: it is escaped).
fn tags(html: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        out.push(&rest[start..start + len + 1]);
        rest = &rest[start + len + 1..];
    }
    out
}

/// The values of `attr="…"` in the page's tags.
fn attr_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!(" {attr}=\"");
    let mut out = Vec::new();
    for tag in tags(html) {
        let mut rest = tag;
        while let Some(i) = rest.find(&needle) {
            let value = &rest[i + needle.len()..];
            let end = value.find('"').unwrap_or(value.len());
            out.push(&value[..end]);
            rest = &value[end..];
        }
    }
    out
}

#[test]
fn the_html_is_one_file_with_no_external_reference() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    let (_, written) = generate(&sources(dir.path())).unwrap();
    let html = std::fs::read_to_string(&written.html).unwrap();
    for needle in [
        "http", "src=", "url(", "@import", "<script", "<link", "<img", "<iframe",
    ] {
        assert!(!html.contains(needle), "{needle} in the page");
    }
    let ids: Vec<&str> = attr_values(&html, "id");
    let hrefs = attr_values(&html, "href");
    assert!(!hrefs.is_empty());
    for href in &hrefs {
        let target = href
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("href {href:?} leaves the page"));
        assert!(ids.contains(&target), "#{target} has no anchor");
    }
    for id in ["inv-01", "inv-02", "inv-03", "inv-04", "inv-05", "inv-06"] {
        assert!(ids.contains(&id), "no anchor {id}");
        assert!(
            hrefs.contains(&format!("#{id}").as_str()),
            "no link to {id}"
        );
    }
    // The elements that hold the rest are closed as often as opened.
    for tag in ["table", "tr", "article", "ul", "pre", "p", "code"] {
        let opened =
            html.matches(&format!("<{tag}>")).count() + html.matches(&format!("<{tag} ")).count();
        let closed = html.matches(&format!("</{tag}>")).count();
        assert_eq!(opened, closed, "<{tag}>");
    }
    // Nothing else in the directory belongs to the page.
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("traceability"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "invariants.toml",
            "mutants.toml",
            "report.html",
            "report.json",
            "report.md"
        ]
    );
}

#[test]
fn markup_in_results_is_shown_and_never_obeyed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_inputs(root);
    let layout = Layout::new(root.join(RESULTS_PATH));
    let mut s = scenario("evil<script>", &["INV-01"], Verdict::Fail);
    s.reason = Some("<img src=\"http://example.invalid/x\"> | ``` </td>".into());
    s.run_dir = "/runs/a\"b".into();
    write_json(&layout.scenario("evil"), &s).unwrap();
    let (_, written) = generate(&sources(root)).unwrap();
    let html = std::fs::read_to_string(&written.html).unwrap();
    for tag in tags(&html) {
        for needle in ["src=", "http", "<script", "<img"] {
            assert!(!tag.contains(needle), "{needle} in tag {tag}");
        }
    }
    for href in attr_values(&html, "href") {
        assert!(href.starts_with('#'), "{href}");
    }
    assert!(html.contains("&lt;img src=&quot;http"), "shown escaped");
    let md = std::fs::read_to_string(&written.md).unwrap();
    assert!(md.contains("&lt;img src="), "shown escaped in text");
    // Raw markup only inside code (a fence, or after an odd number of backticks on its line),
    // where Markdown shows it as it is.
    let mut in_fence = false;
    for line in md.lines() {
        if line.starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        for needle in ["<img", "<script"] {
            if let Some(at) = line.find(needle) {
                let ticks = line[..at].matches('`').count();
                assert!(in_fence || ticks % 2 == 1, "{needle} outside code: {line}");
            }
        }
    }
    // The reason's backticks do not close the fence of the reproduction block.
    assert!(md.contains("````sh\n"), "{md}");
}

#[test]
fn the_same_inputs_give_the_same_bytes_wherever_they_are() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_inputs(a.path());
    write_inputs(b.path());
    let first = generate(&sources(a.path())).unwrap().1;
    let again = generate(&sources(a.path())).unwrap().1;
    let elsewhere = generate(&sources(b.path())).unwrap().1;
    for (x, y, z) in [
        (&first.md, &again.md, &elsewhere.md),
        (&first.json, &again.json, &elsewhere.json),
        (&first.html, &again.html, &elsewhere.html),
    ] {
        let x = std::fs::read(x).unwrap();
        assert_eq!(x, std::fs::read(y).unwrap(), "{}", first.md.display());
        assert_eq!(x, std::fs::read(z).unwrap());
    }
    // Reordered inputs change nothing either.
    let layout = Layout::new(b.path().join(RESULTS_PATH));
    let mut tests: TestsRun = crate::results::read_json(&layout.tests()).unwrap();
    tests.tests.reverse();
    write_json(&layout.tests(), &tests).unwrap();
    let mut mutants: MutantsRun = crate::results::read_json(&layout.mutants()).unwrap();
    mutants.mutants.reverse();
    write_json(&layout.mutants(), &mutants).unwrap();
    let reordered = generate(&sources(b.path())).unwrap().1;
    assert_eq!(
        std::fs::read(&first.json).unwrap(),
        std::fs::read(&reordered.json).unwrap()
    );
}

#[test]
fn the_json_report_is_the_model() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    let (r, written) = generate(&sources(dir.path())).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&written.json).unwrap()).unwrap();
    assert_eq!(json["format_version"], model::REPORT_FORMAT_VERSION);
    assert_eq!(json["clean"], false);
    assert_eq!(json["invariants"][2]["status"], "VACUOUS");
    assert_eq!(json["invariants"][2]["mutants"][0]["state"], "SURVIVED");
    assert_eq!(
        json["invariants"].as_array().map(Vec::len),
        Some(r.invariants.len())
    );
}

#[test]
fn the_real_catalogue_with_no_results_is_uncovered_throughout() {
    // The repository's catalogue, with no run: every invariant is UNCOVERED and says why.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let args = ReportArgs {
        results: Some(results.path().to_path_buf()),
        out: Some(out.path().to_path_buf()),
    };
    let (r, _) = generate(&args.sources(&root)).unwrap();
    assert!(r.invariants.len() >= 27);
    assert!(r.invariants.iter().all(|i| i.status == Status::Uncovered));
}
