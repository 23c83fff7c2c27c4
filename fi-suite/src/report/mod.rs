//! The traceability report: `traceability/invariants.toml` × the test results × the scenario
//! results × the mutant results → `traceability/report.{md,json,html}`, and a summary table on
//! stdout.
//!
//! For every invariant the report shows its statement, every test and scenario claiming it with
//! its result, seed and run directory, the mutants of it and what killed them, and a status:
//!
//! | status | when |
//! |---|---|
//! | UNCOVERED | no test and no scenario claims it |
//! | FAILING | a test or scenario claiming it failed |
//! | VACUOUS | a mutant of it survived: its claims did not notice it broken |
//! | UNKNOWN | only skipped or unknown evidence, or a mutant of it that was not judged (not run, or run without a verdict) |
//! | PROVEN | a passing test or scenario, nothing failing, every mutant of it killed (or none in the catalogue) |
//!
//! The rules apply in that order. The report is clean when no invariant is UNCOVERED, FAILING or
//! VACUOUS; [`report`] returns that, and the CLI exits non-zero when it is not.
//!
//! A test claims the invariants in its name (`inv_06_inv_08_…`, see [`model::claimed_ids`]). A
//! scenario claims the invariants it lists, and is evidence too for those its checks name (the
//! checks every scenario gets: counters, duplicates, panics…). A scenario result recorded with a
//! mutant active is evidence about the mutant, not the invariant, and is left out. An id that
//! the catalogue does not hold is listed as unknown.
//!
//! Missing inputs are said at the top of the report, never guessed: without scenario results the
//! invariants only scenarios claim are UNCOVERED; without the mutant catalogue (`mutants.toml`)
//! and results, no invariant can be PROVEN, since nothing shows its claims can fail.
//!
//! The output is deterministic: everything is sorted, no time is written, and input paths under
//! the workspace root are shown relative to it; two runs on the same inputs write the same bytes.

mod html;
mod load;
mod markdown;
mod model;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub use model::{Report, Status};

use crate::results::Layout;

/// The invariant catalogue, relative to the workspace root.
pub const CATALOGUE_PATH: &str = "traceability/invariants.toml";
/// The mutant catalogue, relative to the workspace root.
pub const MUTANT_CATALOGUE_PATH: &str = "traceability/mutants.toml";
/// The results of a run, relative to the workspace root.
pub const RESULTS_PATH: &str = "target/fi/results";
/// Where the report is written, relative to the workspace root.
pub const OUT_DIR_PATH: &str = "traceability";
/// `make mutants`' caught ratio, in the results directory (the mutant runner's file name).
pub const PURE_CORES_FILE: &str = "pure-cores.json";
/// The report's files: `report.md`, `report.json`, `report.html`.
pub const REPORT_STEM: &str = "report";
/// Characters of an invariant title shown in the stdout table.
pub const SUMMARY_TITLE_CHARS_MAX: usize = 48;

/// Why the report could not be made. A missing result is not an error (the report says so); an
/// unreadable or malformed one is, since leaving it out would overstate what is proven.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// An input exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// An input is larger than [`load::INPUT_BYTES_MAX`].
    #[error(
        "{path} is larger than the {} bytes an input may have",
        load::INPUT_BYTES_MAX
    )]
    TooLarge { path: String },
    /// More scenario result files than [`load::SCENARIO_FILES_MAX`].
    #[error("{path} holds more than {} scenario results", load::SCENARIO_FILES_MAX)]
    TooManyScenarios { path: String },
    /// A TOML input is not UTF-8.
    #[error("{path} is not UTF-8: {source}")]
    Utf8 {
        path: String,
        source: std::str::Utf8Error,
    },
    /// A TOML input does not parse.
    #[error("{path}: {source}")]
    Toml {
        path: String,
        source: toml::de::Error,
    },
    /// A results file is not the JSON the suite writes.
    #[error("{path} is not a result the suite writes: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    /// The invariant catalogue is missing or wrong.
    #[error("invariant catalogue {path}: {why}")]
    Catalogue { path: String, why: String },
    /// The report could not be encoded as JSON.
    #[error("cannot encode the report: {0}")]
    Encode(serde_json::Error),
    /// A report file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Where the report reads from and writes to.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The workspace root: paths under it are shown relative to it.
    pub root: PathBuf,
    pub catalogue: PathBuf,
    pub mutant_catalogue: PathBuf,
    pub results: Layout,
    pub out_dir: PathBuf,
}

impl Sources {
    /// The default places under a workspace root.
    pub fn under(root: &Path) -> Sources {
        Sources {
            root: root.to_path_buf(),
            catalogue: root.join(CATALOGUE_PATH),
            mutant_catalogue: root.join(MUTANT_CATALOGUE_PATH),
            results: Layout::new(root.join(RESULTS_PATH)),
            out_dir: root.join(OUT_DIR_PATH),
        }
    }
}

/// The report command's options, for the CLI.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReportArgs {
    /// The results directory (default: target/fi/results under the workspace root).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Where report.{md,json,html} go (default: traceability/ under the workspace root).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl ReportArgs {
    pub fn sources(&self, root: &Path) -> Sources {
        let mut s = Sources::under(root);
        if let Some(r) = &self.results {
            s.results = Layout::new(r.clone());
        }
        if let Some(o) = &self.out {
            s.out_dir = o.clone();
        }
        s
    }
}

/// The files one report was written to.
#[derive(Debug, Clone)]
pub struct Written {
    pub md: PathBuf,
    pub json: PathBuf,
    pub html: PathBuf,
}

/// Builds the report from `sources`, writes its three files, prints the summary table and the
/// report's path, and returns whether the report is clean (no invariant UNCOVERED, FAILING or
/// VACUOUS).
pub fn report(sources: &Sources) -> Result<bool, ReportError> {
    let (report, written) = generate(sources)?;
    print!("{}", summary(&report));
    println!(
        "report: {} (also {} and {})",
        written.md.display(),
        file_name(&written.html),
        file_name(&written.json)
    );
    Ok(report.clean)
}

/// Builds and writes the report without printing.
pub fn generate(sources: &Sources) -> Result<(Report, Written), ReportError> {
    let inputs = load::load(sources)?;
    let report = model::build(&inputs);
    let written = write(&report, &sources.out_dir)?;
    Ok((report, written))
}

/// Writes the three renderings of `report` into `dir`, each through a temporary file and a
/// rename, so a reader never sees half a report.
pub fn write(report: &Report, dir: &Path) -> Result<Written, ReportError> {
    let json = serde_json::to_string_pretty(report).map_err(ReportError::Encode)? + "\n";
    let written = Written {
        md: dir.join(format!("{REPORT_STEM}.md")),
        json: dir.join(format!("{REPORT_STEM}.json")),
        html: dir.join(format!("{REPORT_STEM}.html")),
    };
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    write_atomic(&written.md, markdown::render(report).as_bytes())?;
    write_atomic(&written.json, json.as_bytes())?;
    write_atomic(&written.html, html::render(report).as_bytes())?;
    Ok(written)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The summary printed on stdout: one row per invariant, then the totals and the verdict.
pub fn summary(report: &Report) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results of writeln! are ignored for that reason.
    let _ = writeln!(
        out,
        "{:<7} {:<9} {:>7} {:>9} {:>7}  TITLE",
        "ID", "STATUS", "TESTS", "SCENARIOS", "MUTANTS"
    );
    for inv in &report.invariants {
        let mutants = if inv.mutants.is_empty() {
            "-".to_owned()
        } else {
            format!("{}/{}", inv.mutants_killed(), inv.mutants.len())
        };
        let title: String = inv.title.chars().take(SUMMARY_TITLE_CHARS_MAX).collect();
        let _ = writeln!(
            out,
            "{:<7} {:<9} {:>7} {:>9} {:>7}  {}",
            inv.id,
            inv.status.as_str(),
            format!("{}/{}", inv.tests_passed(), inv.tests.len()),
            format!("{}/{}", inv.scenarios_passed(), inv.scenarios.len()),
            mutants,
            title
        );
    }
    let _ = writeln!(
        out,
        "(TESTS and SCENARIOS: passing/claiming; MUTANTS: killed/known)"
    );
    let _ = writeln!(out);
    for line in markdown::totals_lines(report) {
        let _ = writeln!(out, "{line}");
    }
    for note in &report.inputs {
        if note.state == load::InputState::Missing {
            let _ = writeln!(
                out,
                "missing: {} ({}): {}",
                note.input, note.path, note.detail
            );
        }
    }
    for u in &report.unknown_ids {
        let _ = writeln!(
            out,
            "unknown id {}: claimed by {}",
            u.id,
            u.claimed_by.join(", ")
        );
    }
    let _ = writeln!(out, "{}", verdict_line(report));
    out
}

/// One line: clean, or which statuses make it not.
pub fn verdict_line(report: &Report) -> String {
    if report.clean {
        return format!(
            "verdict: CLEAN ({} of {} invariants PROVEN)",
            report.count(Status::Proven),
            report.invariants.len()
        );
    }
    let bad: Vec<String> = [Status::Failing, Status::Vacuous, Status::Uncovered]
        .iter()
        .filter(|s| report.count(**s) > 0)
        .map(|s| format!("{} {}", report.count(*s), s.as_str()))
        .collect();
    format!("verdict: NOT CLEAN ({})", bad.join(", "))
}

#[cfg(test)]
mod tests;
