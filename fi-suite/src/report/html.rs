//! `report.html`: the report as ONE self-contained page: inline CSS, no script, no image, no
//! font or style sheet from anywhere, every link an anchor within the page (one per invariant
//! and per section). Statuses are written out as words, so the page reads the same printed in
//! black and white.
//!
//! Every piece of text is escaped ([`esc`]): a result that carries markup is shown, never obeyed.

use std::fmt::Write as _;

use super::load::InputState;
use super::markdown::{LEGEND, anchor, convergence_line, outcome_str, totals_lines, via_str};
use super::model::{InvariantEntry, MutantState, Report, Status};
use crate::results::{TestOutcome, Verdict};

/// The page's style: plain, dense tables, readable on paper (no background needed to tell a
/// status, page breaks kept out of rows and after headings).
const STYLE: &str = "
:root { --fg: #1a1a1a; --muted: #555; --line: #ccc; --head: #f2f2f2; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; color: var(--fg);
  max-width: 1200px; margin: 0 auto; padding: 1rem 1.5rem 4rem; }
h1 { margin: 0.2rem 0 0.6rem; font-size: 1.7rem; }
h2 { margin-top: 2.2rem; border-bottom: 2px solid var(--line); padding-bottom: 0.2rem; }
h3 { margin: 0 0 0.4rem; font-size: 1.15rem; }
h4 { margin: 0.9rem 0 0.3rem; font-size: 0.95rem; color: var(--muted); }
nav { margin: 0.4rem 0 1rem; }
nav a { margin-right: 0.9rem; }
table { border-collapse: collapse; width: 100%; margin: 0.4rem 0 0.8rem; }
th, td { border: 1px solid var(--line); padding: 0.2rem 0.45rem; text-align: left;
  vertical-align: top; }
th { background: var(--head); }
td.num, th.num { text-align: right; white-space: nowrap; }
code, pre { font: 12.5px/1.4 ui-monospace, 'SFMono-Regular', Menlo, Consolas, monospace; }
code { overflow-wrap: anywhere; }
pre { background: #f6f6f6; border: 1px solid var(--line); padding: 0.5rem 0.7rem;
  white-space: pre-wrap; overflow-wrap: anywhere; }
blockquote { margin: 0.3rem 0 0.6rem; padding: 0.3rem 0.8rem; border-left: 4px solid var(--line);
  background: #fafafa; }
article { border: 1px solid var(--line); border-radius: 4px; padding: 0.8rem 1rem;
  margin: 1rem 0; }
.why { margin: 0.3rem 0; }
.note { color: var(--muted); font-style: italic; }
.badge { display: inline-block; font-weight: 700; padding: 0 0.4rem; border: 1.5px solid;
  border-radius: 3px; letter-spacing: 0.02em; white-space: nowrap; }
.st-proven, .v-pass, .m-killed { color: #14642a; }
.st-failing, .v-fail, .m-survived { color: #a10f0f; }
.st-vacuous { color: #9a4a00; }
.st-uncovered { color: #5b2a86; }
.st-unknown, .v-unknown, .v-skipped, .m-unknown, .m-not-run { color: #555; }
.verdict { font-size: 1.1rem; }
ul.legend { padding-left: 1.1rem; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  nav { display: none; }
  a { color: inherit; text-decoration: none; }
  tr, blockquote, .why { break-inside: avoid; }
  h2, h3, h4 { break-after: avoid; }
  article { border: none; border-top: 1px solid var(--line); border-radius: 0; padding: 0.6rem 0; }
  pre { white-space: pre-wrap; }
}
";

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    // Writing to a String cannot fail; the results of write! are ignored for that reason.
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    o.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    o.push_str("<title>edged traceability report</title>\n<style>");
    o.push_str(STYLE);
    o.push_str("</style>\n</head>\n<body>\n");
    let _ = writeln!(o, "<h1 id=\"top\">Traceability report</h1>");
    let _ = writeln!(
        o,
        "<p class=\"verdict\"><span class=\"badge {}\">{}</span></p>",
        if r.clean { "st-proven" } else { "st-failing" },
        esc(&super::verdict_line(r))
    );
    o.push_str(
        "<nav><a href=\"#inputs\">Inputs</a><a href=\"#totals\">Totals</a>\
         <a href=\"#invariants\">Invariants</a><a href=\"#data-safety\">Data safety</a>\
         <a href=\"#faults\">Faults</a><a href=\"#convergence\">Convergence</a>\
         <a href=\"#reproduce\">Reproduce</a><a href=\"#details\">Details</a></nav>\n",
    );
    o.push_str(
        "<p>Built by <code>edge-fi report</code> from the invariant catalogue, the test results, \
         the scenario results and the mutant results.</p>\n<ul class=\"legend\">\n",
    );
    for (status, meaning) in LEGEND {
        let _ = writeln!(o, "<li>{}: {}</li>", badge(status), esc(meaning));
    }
    o.push_str("</ul>\n");

    let _ = writeln!(o, "<h2 id=\"inputs\">Inputs</h2>");
    o.push_str("<table><tr><th>input</th><th>path</th><th>state</th><th>detail</th></tr>\n");
    for n in &r.inputs {
        let state = match n.state {
            InputState::Read => "read".to_owned(),
            InputState::Missing => "<strong>missing</strong>".to_owned(),
        };
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td><code>{}</code></td><td>{state}</td><td>{}</td></tr>",
            esc(&n.input),
            esc(&n.path),
            esc(&n.detail)
        );
    }
    o.push_str("</table>\n");

    let _ = writeln!(o, "<h2 id=\"totals\">Totals</h2>\n<ul>");
    for line in totals_lines(r) {
        let _ = writeln!(o, "<li>{}</li>", esc(&line));
    }
    o.push_str("</ul>\n");

    let _ = writeln!(o, "<h2 id=\"invariants\">Invariants</h2>");
    o.push_str(
        "<table><tr><th>id</th><th>status</th><th class=\"num\">tests passing/claiming</th>\
         <th class=\"num\">scenarios passing/claiming</th><th class=\"num\">mutants killed/known</th>\
         <th>title</th></tr>\n",
    );
    for inv in &r.invariants {
        let mutants = if inv.mutants.is_empty() {
            "none".to_owned()
        } else {
            format!("{}/{}", inv.mutants_killed(), inv.mutants.len())
        };
        let _ = writeln!(
            o,
            "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td><td class=\"num\">{}/{}</td>\
             <td class=\"num\">{}/{}</td><td class=\"num\">{mutants}</td><td>{}</td></tr>",
            anchor(&inv.id),
            esc(&inv.id),
            badge(inv.status),
            inv.tests_passed(),
            inv.tests.len(),
            inv.scenarios_passed(),
            inv.scenarios.len(),
            esc(&inv.title)
        );
    }
    o.push_str("</table>\n");

    if !r.unknown_ids.is_empty() {
        let _ = writeln!(o, "<h2 id=\"unknown-ids\">Unknown invariant ids</h2>");
        o.push_str(
            "<p>Claimed by a test, scenario or mutant, but not in the catalogue: each claim \
             proves nothing listed above.</p>\n<table><tr><th>id</th><th>claimed by</th></tr>\n",
        );
        for u in &r.unknown_ids {
            let who: Vec<String> = u
                .claimed_by
                .iter()
                .map(|w| format!("<code>{}</code>", esc(w)))
                .collect();
            let _ = writeln!(
                o,
                "<tr><td><code>{}</code></td><td>{}</td></tr>",
                esc(&u.id),
                who.join("<br>")
            );
        }
        o.push_str("</table>\n");
    }

    let _ = writeln!(o, "<h2 id=\"data-safety\">Data safety</h2>");
    o.push_str(
        "<p>The standard checks, summed over every scenario that reported them.</p>\n\
         <table><tr><th>check</th><th class=\"num\">observed</th><th class=\"num\">out of</th>\
         <th class=\"num\">scenarios</th><th class=\"num\">PASS</th><th class=\"num\">FAIL</th>\
         <th class=\"num\">UNKNOWN</th><th class=\"num\">SKIPPED</th><th>verdict</th>\
         <th>failed in</th></tr>\n",
    );
    for f in &r.data_safety {
        let observed = esc(&f.observed_shown());
        let failed: Vec<String> = f
            .failed_in
            .iter()
            .map(|s| format!("<code>{}</code>", esc(s)))
            .collect();
        let _ = writeln!(
            o,
            "<tr><td><code>{}</code></td><td class=\"num\">{observed}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.check),
            f.out_of_shown(),
            f.scenarios,
            f.pass,
            f.fail,
            f.unknown,
            f.skipped,
            verdict(f.verdict),
            failed.join(", ")
        );
    }
    o.push_str("</table>\n");

    let _ = writeln!(o, "<h2 id=\"faults\">Faults injected</h2>");
    if r.faults.is_empty() {
        o.push_str("<p class=\"note\">No fault was recorded by any scenario.</p>\n");
    } else {
        o.push_str("<table><tr><th>kind</th><th class=\"num\">count</th><th>scenarios</th></tr>\n");
        for f in &r.faults {
            let names: Vec<String> = f
                .scenarios
                .iter()
                .map(|s| format!("<code>{}</code>", esc(s)))
                .collect();
            let _ = writeln!(
                o,
                "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(&f.kind),
                f.count,
                names.join(", ")
            );
        }
        o.push_str("</table>\n");
    }

    let _ = writeln!(o, "<h2 id=\"convergence\">Convergence</h2>");
    if r.convergence.rows.is_empty() {
        o.push_str("<p class=\"note\">No scenario measured convergence.</p>\n");
    } else {
        let _ = writeln!(o, "<p>{}</p>", esc(&convergence_line(r)));
        o.push_str(
            "<table><tr><th>scenario</th><th class=\"num\">measured ms</th>\
             <th class=\"num\">bound ms</th><th>within bound</th><th>converged check</th></tr>\n",
        );
        for row in &r.convergence.rows {
            let _ = writeln!(
                o,
                "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                esc(&row.scenario),
                row.measured_ms,
                row.bound_ms,
                if row.within_bound {
                    "yes"
                } else {
                    "<strong>no</strong>"
                },
                row.converged.map(verdict).unwrap_or_else(|| "-".into())
            );
        }
        o.push_str("</table>\n");
    }

    let _ = writeln!(o, "<h2 id=\"reproduce\">Reproduce</h2>");
    let _ = writeln!(o, "<h3>Failing and unknown scenarios</h3>");
    if r.failing_scenarios.is_empty() {
        o.push_str("<p class=\"note\">None.</p>\n");
    } else {
        o.push_str("<pre>");
        for s in &r.failing_scenarios {
            let _ = writeln!(
                o,
                "# {} ({}): {} [run dir {}]\n{}",
                esc(&s.scenario),
                s.verdict.as_str(),
                esc(&s.reason),
                esc(&s.run_dir),
                esc(&s.command)
            );
        }
        o.push_str("</pre>\n");
    }
    let _ = writeln!(o, "<h3>Failing tests</h3>");
    if r.failing_tests.is_empty() {
        o.push_str("<p class=\"note\">None.</p>\n");
    } else {
        o.push_str("<pre>");
        for t in &r.failing_tests {
            let _ = writeln!(o, "{}", esc(&t.command));
        }
        o.push_str("</pre>\n");
    }

    let _ = writeln!(o, "<h2 id=\"details\">Invariant details</h2>");
    for inv in &r.invariants {
        invariant(&mut o, inv);
    }
    o.push_str("<p><a href=\"#top\">top</a></p>\n</body>\n</html>\n");
    o
}

fn invariant(o: &mut String, inv: &InvariantEntry) {
    let _ = writeln!(o, "<article id=\"{}\">", anchor(&inv.id));
    let _ = writeln!(
        o,
        "<h3>{} — {} {}</h3>",
        esc(&inv.id),
        esc(&inv.title),
        badge(inv.status)
    );
    let _ = writeln!(o, "<blockquote>{}</blockquote>", esc(&inv.statement));
    let _ = writeln!(
        o,
        "<p class=\"why\"><strong>{}</strong>: {}</p>",
        inv.status.as_str(),
        esc(&inv.why)
    );

    let _ = writeln!(o, "<h4>Tests ({})</h4>", inv.tests.len());
    if inv.tests.is_empty() {
        o.push_str("<p class=\"note\">none</p>\n");
    } else {
        o.push_str(
            "<table><tr><th>binary</th><th>test</th><th>outcome</th><th class=\"num\">ms</th></tr>\n",
        );
        for t in &inv.tests {
            let class = match t.outcome {
                TestOutcome::Passed => "v-pass",
                TestOutcome::Failed => "v-fail",
                TestOutcome::Skipped => "v-skipped",
            };
            let _ = writeln!(
                o,
                "<tr><td><code>{}</code></td><td><code>{}</code></td>\
                 <td><span class=\"badge {class}\">{}</span></td><td class=\"num\">{}</td></tr>",
                esc(&t.binary),
                esc(&t.name),
                outcome_str(t.outcome),
                t.duration_ms
            );
        }
        o.push_str("</table>\n");
    }

    let _ = writeln!(o, "<h4>Scenarios ({})</h4>", inv.scenarios.len());
    if inv.scenarios.is_empty() {
        o.push_str("<p class=\"note\">none</p>\n");
    } else {
        o.push_str(
            "<table><tr><th>scenario</th><th>via</th><th>verdict</th><th class=\"num\">seed</th>\
             <th class=\"num\">ms</th><th>run dir</th><th>checks naming it</th></tr>\n",
        );
        for s in &inv.scenarios {
            let checks: Vec<String> = s
                .checks
                .iter()
                .map(|c| {
                    format!(
                        "<code>{}</code> {}: {}",
                        esc(&c.name),
                        verdict(c.verdict),
                        esc(&c.detail)
                    )
                })
                .collect();
            let mut v = verdict(s.verdict);
            if let Some(reason) = &s.reason {
                let _ = write!(v, " {}", esc(reason));
            }
            let _ = writeln!(
                o,
                "<tr><td><code>{}</code></td><td>{}</td><td>{v}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td></tr>",
                esc(&s.scenario),
                via_str(s.via),
                s.seed,
                s.duration_ms,
                esc(&s.run_dir),
                checks.join("<br>")
            );
        }
        o.push_str("</table>\n");
    }

    let _ = writeln!(o, "<h4>Mutants ({})</h4>", inv.mutants.len());
    match &inv.mutants_note {
        Some(note) if inv.mutants.is_empty() => {
            let _ = writeln!(o, "<p class=\"note\">{}</p>", esc(note));
        }
        _ => {
            o.push_str(
                "<table><tr><th>mutant</th><th>verdict</th><th>killed by</th>\
                 <th class=\"num\">ran</th><th>detail</th><th>log</th></tr>\n",
            );
            for m in &inv.mutants {
                let class = match m.state {
                    MutantState::Killed => "m-killed",
                    MutantState::Survived => "m-survived",
                    MutantState::Unknown => "m-unknown",
                    MutantState::NotRun => "m-not-run",
                };
                let killers: Vec<String> = m
                    .killed_by
                    .iter()
                    .map(|k| format!("<code>{}</code>", esc(k)))
                    .collect();
                let what = if m.description.is_empty() {
                    String::new()
                } else {
                    format!("<br>{}", esc(&m.description))
                };
                let log = if m.log.is_empty() {
                    String::new()
                } else {
                    format!("<code>{}</code>", esc(&m.log))
                };
                let _ = writeln!(
                    o,
                    "<tr><td><code>{}</code>{what}</td><td><span class=\"badge {class}\">{}</span></td>\
                     <td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{log}</td></tr>",
                    esc(&m.name),
                    m.state.as_str(),
                    killers.join("<br>"),
                    m.ran,
                    esc(&m.detail)
                );
            }
            o.push_str("</table>\n");
        }
    }
    o.push_str("</article>\n");
}

fn badge(s: Status) -> String {
    let class = match s {
        Status::Proven => "st-proven",
        Status::Failing => "st-failing",
        Status::Vacuous => "st-vacuous",
        Status::Uncovered => "st-uncovered",
        Status::Unknown => "st-unknown",
    };
    format!("<span class=\"badge {class}\">{}</span>", s.as_str())
}

fn verdict(v: Verdict) -> String {
    let class = match v {
        Verdict::Pass => "v-pass",
        Verdict::Fail => "v-fail",
        Verdict::Unknown => "v-unknown",
        Verdict::Skipped => "v-skipped",
    };
    format!("<span class=\"badge {class}\">{}</span>", v.as_str())
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_shows_markup_and_never_obeys_it() {
        assert_eq!(
            esc("<script src=\"x\">'&'</script>"),
            "&lt;script src=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn the_style_loads_nothing() {
        for needle in ["url(", "@import", "http"] {
            assert!(!STYLE.contains(needle), "{needle}");
        }
    }
}
