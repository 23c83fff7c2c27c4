//! `report.md`: the report as GitHub-flavoured Markdown.
//!
//! Text from the results (details, reasons, names) is escaped so it cannot open HTML, break a
//! table or close a code fence; names and commands are shown as code.

use std::fmt::Write as _;

use super::load::InputState;
use super::model::{InvariantEntry, Report, Status, Via};
use crate::results::{TestOutcome, Verdict};

/// The anchor of an invariant, the same in the Markdown and the HTML: `INV-06` → `inv-06`.
pub fn anchor(id: &str) -> String {
    id.to_ascii_lowercase()
}

pub fn outcome_str(o: TestOutcome) -> &'static str {
    match o {
        TestOutcome::Passed => "passed",
        TestOutcome::Failed => "failed",
        TestOutcome::Skipped => "skipped",
    }
}

pub fn via_str(v: Via) -> &'static str {
    match v {
        Via::Claimed => "claimed",
        Via::Checks => "checks",
    }
}

/// What the statuses mean, one line each, for the legend of both renderings.
pub const LEGEND: [(Status, &str); 5] = [
    (
        Status::Proven,
        "a passing test or scenario claims it, nothing claiming it fails, every mutant of it was killed (or it has none in the catalogue)",
    ),
    (Status::Failing, "a test or scenario claiming it failed"),
    (
        Status::Vacuous,
        "a mutant of it survived: its claims passed with the invariant broken",
    ),
    (Status::Uncovered, "no test and no scenario claims it"),
    (
        Status::Unknown,
        "only skipped or unknown evidence, or a mutant of it that was not judged",
    ),
];

/// The totals as lines of text (used by the Markdown, the HTML and the stdout summary).
pub fn totals_lines(r: &Report) -> Vec<String> {
    let t = &r.totals;
    let statuses: Vec<String> = t
        .statuses
        .iter()
        .map(|s| format!("{} {}", s.count, s.status.as_str()))
        .collect();
    let mut lines = vec![format!(
        "invariants: {} ({})",
        t.invariants,
        statuses.join(", ")
    )];
    lines.push(format!(
        "tests: {} ({} passed, {} failed, {} skipped), {} claim an invariant",
        t.tests.total, t.tests.passed, t.tests.failed, t.tests.skipped, t.tests.claiming
    ));
    let mut scenarios = format!(
        "scenarios: {} ({} PASS, {} FAIL, {} UNKNOWN, {} SKIPPED)",
        t.scenarios.total,
        t.scenarios.pass,
        t.scenarios.fail,
        t.scenarios.unknown,
        t.scenarios.skipped
    );
    if t.scenarios.with_mutant > 0 {
        let _ = write!(
            scenarios,
            ", and {} run with a mutant (not evidence)",
            t.scenarios.with_mutant
        );
    }
    lines.push(scenarios);
    let m = &t.mutants;
    let mut mutants = match &m.mode {
        Some(mode) => format!(
            "mutants: {} killed of {} run ({} survived, {} unknown), a {mode} run",
            m.killed, m.judged, m.survived, m.unknown
        ),
        None => "mutants: no results".to_owned(),
    };
    match m.catalogue {
        Some(c) => {
            let _ = write!(mutants, "; catalogue {c}, {} not run", m.not_run);
        }
        None => mutants.push_str("; no catalogue"),
    }
    lines.push(mutants);
    lines.push(match &t.pure_cores {
        Some(p) => format!(
            "pure cores ({}): caught {} of {} viable mutants ({}.{}%), {} missed, {} timed out, {} unviable",
            p.scope.join(", "),
            p.caught,
            p.viable,
            p.caught_permille / 10,
            p.caught_permille % 10,
            p.missed,
            p.timeout,
            p.unviable
        ),
        None => "pure cores: not run".to_owned(),
    });
    lines.push(format!(
        "faults injected: {} ({} kind(s))",
        t.faults,
        r.faults.len()
    ));
    lines
}

/// The whole Markdown report.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    // Writing to a String cannot fail; the results of writeln! are ignored for that reason.
    let _ = writeln!(o, "# Traceability report\n");
    let _ = writeln!(
        o,
        "Built by `edge-fi report` from the invariant catalogue, the test results, the scenario \
         results and the mutant results. Every invariant below links to its evidence.\n"
    );
    let _ = writeln!(o, "**{}**\n", text(&super::verdict_line(r)));
    let _ = writeln!(o, "| status | meaning |\n|---|---|");
    for (status, meaning) in LEGEND {
        let _ = writeln!(o, "| {} | {} |", status.as_str(), cell(meaning));
    }

    let _ = writeln!(o, "\n## Inputs\n");
    let _ = writeln!(o, "| input | path | state | detail |\n|---|---|---|---|");
    for n in &r.inputs {
        let state = match n.state {
            InputState::Read => "read",
            InputState::Missing => "**missing**",
        };
        let _ = writeln!(
            o,
            "| {} | {} | {state} | {} |",
            cell(&n.input),
            code(&n.path),
            cell(&n.detail)
        );
    }

    let _ = writeln!(o, "\n## Totals\n");
    for line in totals_lines(r) {
        let _ = writeln!(o, "- {}", text(&line));
    }

    let _ = writeln!(o, "\n## Invariants\n");
    let _ = writeln!(
        o,
        "| id | status | tests passing/claiming | scenarios passing/claiming | mutants killed/known | title |\n|---|---|---|---|---|---|"
    );
    for inv in &r.invariants {
        let mutants = if inv.mutants.is_empty() {
            "none".to_owned()
        } else {
            format!("{}/{}", inv.mutants_killed(), inv.mutants.len())
        };
        let _ = writeln!(
            o,
            "| [{}](#{}) | {} | {}/{} | {}/{} | {mutants} | {} |",
            inv.id,
            anchor(&inv.id),
            status_md(inv.status),
            inv.tests_passed(),
            inv.tests.len(),
            inv.scenarios_passed(),
            inv.scenarios.len(),
            cell(&inv.title)
        );
    }

    if !r.unknown_ids.is_empty() {
        let _ = writeln!(o, "\n## Unknown invariant ids\n");
        let _ = writeln!(
            o,
            "Claimed by a test, scenario or mutant, but not in the catalogue: each claim proves \
             nothing listed above.\n"
        );
        let _ = writeln!(o, "| id | claimed by |\n|---|---|");
        for u in &r.unknown_ids {
            let who: Vec<String> = u.claimed_by.iter().map(|w| code(w)).collect();
            let _ = writeln!(o, "| {} | {} |", code(&u.id), who.join("<br>"));
        }
    }

    let _ = writeln!(o, "\n## Data safety\n");
    let _ = writeln!(
        o,
        "The standard checks, summed over every scenario that reported them (`observed` of `out of`).\n"
    );
    let _ = writeln!(
        o,
        "| check | observed | out of | scenarios | PASS | FAIL | UNKNOWN | SKIPPED | verdict | failed in |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for f in &r.data_safety {
        let observed = f.observed_shown();
        let failed: Vec<String> = f.failed_in.iter().map(|s| code(s)).collect();
        let _ = writeln!(
            o,
            "| {} | {observed} | {} | {} | {} | {} | {} | {} | {} | {} |",
            code(&f.check),
            f.out_of_shown(),
            f.scenarios,
            f.pass,
            f.fail,
            f.unknown,
            f.skipped,
            verdict_md(f.verdict),
            failed.join(", ")
        );
    }

    let _ = writeln!(o, "\n## Faults injected\n");
    if r.faults.is_empty() {
        let _ = writeln!(o, "No fault was recorded by any scenario.");
    } else {
        let _ = writeln!(o, "| kind | count | scenarios |\n|---|---|---|");
        for f in &r.faults {
            let names: Vec<String> = f.scenarios.iter().map(|s| code(s)).collect();
            let _ = writeln!(
                o,
                "| {} | {} | {} |",
                code(&f.kind),
                f.count,
                names.join(", ")
            );
        }
    }

    let c = &r.convergence;
    let _ = writeln!(o, "\n## Convergence\n");
    if c.rows.is_empty() {
        let _ = writeln!(o, "No scenario measured convergence.");
    } else {
        let _ = writeln!(o, "- {}", text(&convergence_line(r)));
        let _ = writeln!(
            o,
            "\n| scenario | measured ms | bound ms | within bound | converged check |\n|---|---|---|---|---|"
        );
        for row in &c.rows {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                code(&row.scenario),
                row.measured_ms,
                row.bound_ms,
                if row.within_bound { "yes" } else { "**no**" },
                row.converged.map(verdict_md).unwrap_or_else(|| "-".into())
            );
        }
    }

    let _ = writeln!(o, "\n## Reproduce\n");
    let _ = writeln!(o, "### Failing and unknown scenarios\n");
    if r.failing_scenarios.is_empty() {
        let _ = writeln!(o, "None.");
    } else {
        let mut lines = Vec::new();
        for s in &r.failing_scenarios {
            lines.push(format!(
                "# {} ({}): {} [run dir {}]",
                s.scenario,
                s.verdict.as_str(),
                s.reason,
                s.run_dir
            ));
            lines.push(s.command.clone());
        }
        o.push_str(&fenced("sh", &lines));
    }
    let _ = writeln!(o, "\n### Failing tests\n");
    if r.failing_tests.is_empty() {
        let _ = writeln!(o, "None.");
    } else {
        let lines: Vec<String> = r.failing_tests.iter().map(|t| t.command.clone()).collect();
        o.push_str(&fenced("sh", &lines));
    }

    let _ = writeln!(o, "\n## Invariant details");
    for inv in &r.invariants {
        invariant(&mut o, inv);
    }
    o
}

/// The convergence figures in one line.
pub fn convergence_line(r: &Report) -> String {
    let c = &r.convergence;
    let percentiles: Vec<String> = c
        .percentiles_ms
        .iter()
        .map(|(p, ms)| format!("p{p} {ms} ms"))
        .collect();
    format!(
        "{} scenario(s) measured: {}, max {} ms; bounds {}–{} ms; {} exceeded their bound; {} did not converge",
        c.scenarios,
        percentiles.join(", "),
        c.max_ms.unwrap_or(0),
        c.bound_min_ms.unwrap_or(0),
        c.bound_max_ms.unwrap_or(0),
        c.exceeded,
        c.not_converged
    )
}

fn invariant(o: &mut String, inv: &InvariantEntry) {
    let _ = writeln!(o, "\n<a id=\"{}\"></a>\n", anchor(&inv.id));
    let _ = writeln!(o, "### {} — {}\n", inv.id, text(&inv.title));
    let _ = writeln!(o, "> {}\n", text(&inv.statement));
    let _ = writeln!(o, "{}: {}\n", status_md(inv.status), text(&inv.why));

    let _ = writeln!(o, "Tests ({}):\n", inv.tests.len());
    if inv.tests.is_empty() {
        let _ = writeln!(o, "_none_\n");
    } else {
        let _ = writeln!(o, "| binary | test | outcome | ms |\n|---|---|---|---|");
        for t in &inv.tests {
            let outcome = match t.outcome {
                TestOutcome::Passed => "passed".to_owned(),
                other => format!("**{}**", outcome_str(other)),
            };
            let _ = writeln!(
                o,
                "| {} | {} | {outcome} | {} |",
                code(&t.binary),
                code(&t.name),
                t.duration_ms
            );
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(o, "Scenarios ({}):\n", inv.scenarios.len());
    if inv.scenarios.is_empty() {
        let _ = writeln!(o, "_none_\n");
    } else {
        let _ = writeln!(
            o,
            "| scenario | via | verdict | seed | ms | run dir | checks naming it |\n|---|---|---|---|---|---|---|"
        );
        for s in &inv.scenarios {
            let checks: Vec<String> = s
                .checks
                .iter()
                .map(|c| {
                    format!(
                        "{} {}: {}",
                        code(&c.name),
                        c.verdict.as_str(),
                        cell(&c.detail)
                    )
                })
                .collect();
            let mut verdict = verdict_md(s.verdict);
            if let Some(reason) = &s.reason {
                let _ = write!(verdict, " ({})", cell(reason));
            }
            let _ = writeln!(
                o,
                "| {} | {} | {verdict} | {} | {} | {} | {} |",
                code(&s.scenario),
                via_str(s.via),
                s.seed,
                s.duration_ms,
                code(&s.run_dir),
                checks.join("<br>")
            );
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(o, "Mutants ({}):\n", inv.mutants.len());
    match &inv.mutants_note {
        Some(note) if inv.mutants.is_empty() => {
            let _ = writeln!(o, "_{}_", text(note));
        }
        _ => {
            let _ = writeln!(
                o,
                "| mutant | verdict | killed by | ran | detail | log |\n|---|---|---|---|---|---|"
            );
            for m in &inv.mutants {
                let killers: Vec<String> = m.killed_by.iter().map(|k| code(k)).collect();
                let what = if m.description.is_empty() {
                    String::new()
                } else {
                    format!(": {}", cell(&m.description))
                };
                let log = if m.log.is_empty() {
                    String::new()
                } else {
                    code(&m.log)
                };
                let _ = writeln!(
                    o,
                    "| {}{what} | {} | {} | {} | {} | {log} |",
                    code(&m.name),
                    if m.state == super::model::MutantState::Killed {
                        m.state.as_str().to_owned()
                    } else {
                        format!("**{}**", m.state.as_str())
                    },
                    killers.join("<br>"),
                    m.ran,
                    cell(&m.detail)
                );
            }
        }
    }
}

fn status_md(s: Status) -> String {
    format!("**{}**", s.as_str())
}

fn verdict_md(v: Verdict) -> String {
    match v {
        Verdict::Pass => "PASS".into(),
        other => format!("**{}**", other.as_str()),
    }
}

/// Text on one line, with what would start HTML escaped.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Text inside a table cell: also no `|`.
pub fn cell(s: &str) -> String {
    text(s).replace('|', "\\|")
}

/// A code span inside a table cell, with a fence longer than any run of backticks inside.
pub fn code(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let fence = "`".repeat(longest_run(&one_line, '`') + 1);
    let pad = if one_line.starts_with('`') || one_line.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{}{pad}{fence}", one_line.replace('|', "\\|"))
}

/// A fenced code block whose fence no line can close early.
fn fenced(lang: &str, lines: &[String]) -> String {
    let longest = lines.iter().map(|l| longest_run(l, '`')).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    let mut o = format!("{fence}{lang}\n");
    for l in lines {
        let one_line: String = l
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        o.push_str(&one_line);
        o.push('\n');
    }
    o.push_str(&fence);
    o.push('\n');
    o
}

fn longest_run(s: &str, ch: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for c in s.chars() {
        if c == ch {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_results_text_from_opening_html_or_breaking_tables() {
        assert_eq!(text("a<b>&c\nd"), "a&lt;b&gt;&amp;c d");
        assert_eq!(cell("x|y"), "x\\|y");
        assert_eq!(code("inv_06_x"), "`inv_06_x`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`a"), "`` `a ``");
        assert_eq!(code("p|q"), "`p\\|q`");
    }

    #[test]
    fn a_fence_is_longer_than_any_backtick_run_inside() {
        let block = fenced("sh", &["echo ```".into(), "ok".into()]);
        assert!(block.starts_with("````sh\n"), "{block}");
        assert!(block.ends_with("\n````\n"), "{block}");
        assert!(fenced("sh", &["x".into()]).starts_with("```sh\n"));
    }
}
