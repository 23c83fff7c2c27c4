//! Reading the report's inputs: the invariant catalogue (required), the mutant catalogue and the
//! results of a run (each optional: a missing one is noted, never guessed).
//!
//! Every file is read with a size bound before it is parsed. A file that exists but does not
//! parse is an error naming it: a report that silently dropped a corrupt result would show an
//! invariant as better proven than it is.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ReportError, Sources};
use crate::results::{MutantsRun, PureCores, ScenarioResult, TestsRun};

/// An input file larger than this is refused: the largest a run writes (the test results of the
/// whole workspace) is well under a MiB.
pub const INPUT_BYTES_MAX: u64 = 64 << 20;
/// Scenario result files read at most: the catalogue holds a few dozen scenarios, one file each.
pub const SCENARIO_FILES_MAX: usize = 4096;

/// One invariant of `traceability/invariants.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invariant {
    pub id: String,
    pub title: String,
    pub statement: String,
}

#[derive(Debug, Deserialize)]
struct CatalogueFile {
    #[serde(default)]
    invariant: Vec<Invariant>,
}

/// One mutant of `traceability/mutants.toml`, as far as the report needs it (the file has more
/// keys: where, quick; they are not read here).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CatalogueMutant {
    pub name: String,
    #[serde(default)]
    pub invariants: Vec<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize)]
struct MutantCatalogueFile {
    #[serde(default)]
    mutant: Vec<CatalogueMutant>,
}

/// Whether an input was there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputState {
    Read,
    Missing,
}

/// What the report was built from, one line per input, shown at the top of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputNote {
    /// Which input (`tests`, `scenarios`, …).
    pub input: String,
    /// Where it was looked for, relative to the workspace root when under it.
    pub path: String,
    pub state: InputState,
    /// What it held, or what its absence means.
    pub detail: String,
}

/// Everything the report is built from.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The catalogue, sorted by id.
    pub invariants: Vec<Invariant>,
    /// `None` when the mutant catalogue is missing.
    pub mutant_catalogue: Option<Vec<CatalogueMutant>>,
    pub tests: Option<TestsRun>,
    /// Every scenario result file, sorted by scenario name (empty when there are none).
    pub scenarios: Vec<ScenarioResult>,
    pub mutants: Option<MutantsRun>,
    pub pure_cores: Option<PureCores>,
    pub notes: Vec<InputNote>,
}

/// Reads every input `sources` names.
pub fn load(sources: &Sources) -> Result<Inputs, ReportError> {
    let shown = |p: &Path| shown_path(&sources.root, p);
    let mut notes = Vec::new();

    let invariants = {
        let path = &sources.catalogue;
        let bytes = read_bounded(path)?.ok_or_else(|| ReportError::Catalogue {
            path: path.display().to_string(),
            why: "the file is missing".into(),
        })?;
        let invariants = parse_catalogue(path, &bytes)?;
        notes.push(InputNote {
            input: "invariants".into(),
            path: shown(path),
            state: InputState::Read,
            detail: format!("{} invariant(s)", invariants.len()),
        });
        invariants
    };

    let mutant_catalogue = {
        let path = &sources.mutant_catalogue;
        match read_bounded(path)? {
            Some(bytes) => {
                let file: MutantCatalogueFile = parse_toml(path, &bytes)?;
                notes.push(InputNote {
                    input: "mutant catalogue".into(),
                    path: shown(path),
                    state: InputState::Read,
                    detail: format!("{} mutant(s)", file.mutant.len()),
                });
                Some(file.mutant)
            }
            None => {
                notes.push(InputNote {
                    input: "mutant catalogue".into(),
                    path: shown(path),
                    state: InputState::Missing,
                    detail: "no mutant catalogue: an invariant without mutant results cannot be \
                             told apart from one whose mutants were not run"
                        .into(),
                });
                None
            }
        }
    };

    let tests = {
        let path = sources.results.tests();
        let mut tests: Option<TestsRun> = read_json_opt(&path)?;
        if let Some(t) = &mut tests {
            t.source = shown(Path::new(&t.source));
        }
        notes.push(match &tests {
            Some(t) => InputNote {
                input: "tests".into(),
                path: shown(&path),
                state: InputState::Read,
                detail: format!("{} test(s), read from {}", t.tests.len(), t.source),
            },
            None => InputNote {
                input: "tests".into(),
                path: shown(&path),
                state: InputState::Missing,
                detail: "no test results: `make test` was not run, or its results were not read \
                         into tests.json"
                    .into(),
            },
        });
        tests
    };

    let scenarios = {
        let dir = sources.results.scenarios();
        match scenario_files(&dir)? {
            Some(files) => {
                let mut scenarios = Vec::with_capacity(files.len());
                for file in &files {
                    let mut s: ScenarioResult =
                        read_json_opt(file)?.ok_or_else(|| ReportError::Read {
                            path: file.display().to_string(),
                            source: std::io::ErrorKind::NotFound.into(),
                        })?;
                    s.run_dir = shown(Path::new(&s.run_dir));
                    scenarios.push(s);
                }
                scenarios.sort_by(|a, b| {
                    (&a.scenario, &a.mutant, a.seed).cmp(&(&b.scenario, &b.mutant, b.seed))
                });
                let with_mutant = scenarios.iter().filter(|s| s.mutant.is_some()).count();
                let mut detail = format!("{} scenario result(s)", scenarios.len());
                if with_mutant > 0 {
                    detail.push_str(&format!(
                        ", {with_mutant} of them run with a mutant (not evidence for an invariant)"
                    ));
                }
                if scenarios.is_empty() {
                    detail = "no scenario results: `make edge-fi` was not run".into();
                }
                notes.push(InputNote {
                    input: "scenarios".into(),
                    path: shown(&dir),
                    state: if scenarios.is_empty() {
                        InputState::Missing
                    } else {
                        InputState::Read
                    },
                    detail,
                });
                scenarios
            }
            None => {
                notes.push(InputNote {
                    input: "scenarios".into(),
                    path: shown(&dir),
                    state: InputState::Missing,
                    detail: "no scenario results: `make edge-fi` was not run".into(),
                });
                Vec::new()
            }
        }
    };

    let mutants = {
        let path = sources.results.mutants();
        let mut mutants: Option<MutantsRun> = read_json_opt(&path)?;
        for m in mutants.iter_mut().flat_map(|run| run.mutants.iter_mut()) {
            m.log = shown(Path::new(&m.log));
        }
        notes.push(match &mutants {
            Some(m) => InputNote {
                input: "mutants".into(),
                path: shown(&path),
                state: InputState::Read,
                detail: format!("{} mutant(s), a {} run", m.mutants.len(), m.mode),
            },
            None => InputNote {
                input: "mutants".into(),
                path: shown(&path),
                state: InputState::Missing,
                detail: "no mutant results: the mutant run of `make edge-fi` did not happen".into(),
            },
        });
        mutants
    };

    let pure_cores = {
        let path = sources.results.root.join(super::PURE_CORES_FILE);
        let from_file: Option<PureCores> = read_json_opt(&path)?;
        // The mutant runner copies pure-cores.json into mutants.json; the file itself is the
        // source, the copy a fallback.
        let (pure, detail) = match (
            from_file,
            mutants.as_ref().and_then(|m| m.pure_cores.clone()),
        ) {
            (Some(p), _) => (
                Some(p),
                "cargo-mutants over the pure cores (`make mutants`)",
            ),
            (None, Some(p)) => (
                Some(p),
                "missing; the copy of `make mutants`' figures in mutants.json is used",
            ),
            (None, None) => (
                None,
                "no pure-core mutation results: `make mutants` was not run",
            ),
        };
        notes.push(InputNote {
            input: "pure cores".into(),
            path: shown(&path),
            state: if path.exists() {
                InputState::Read
            } else {
                InputState::Missing
            },
            detail: detail.into(),
        });
        pure
    };

    Ok(Inputs {
        invariants,
        mutant_catalogue,
        tests,
        scenarios,
        mutants,
        pure_cores,
        notes,
    })
}

/// Parses and checks the invariant catalogue: ids are `INV-NN`, unique; titles and statements
/// are not empty. Sorted by id.
pub fn parse_catalogue(path: &Path, bytes: &[u8]) -> Result<Vec<Invariant>, ReportError> {
    let file: CatalogueFile = parse_toml(path, bytes)?;
    let bad = |why: String| ReportError::Catalogue {
        path: path.display().to_string(),
        why,
    };
    let mut invariants = file.invariant;
    if invariants.is_empty() {
        return Err(bad("no [[invariant]] entry".into()));
    }
    for inv in &invariants {
        if !super::model::is_invariant_id(&inv.id) {
            return Err(bad(format!("id {:?} is not of the form INV-NN", inv.id)));
        }
        if inv.title.trim().is_empty() || inv.statement.trim().is_empty() {
            return Err(bad(format!("{} has an empty title or statement", inv.id)));
        }
    }
    invariants.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(w) = invariants.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(bad(format!("{} appears twice", w[0].id)));
    }
    Ok(invariants)
}

fn parse_toml<T: for<'de> Deserialize<'de>>(path: &Path, bytes: &[u8]) -> Result<T, ReportError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ReportError::Utf8 {
        path: path.display().to_string(),
        source: e,
    })?;
    toml::from_str(text).map_err(|e| ReportError::Toml {
        path: path.display().to_string(),
        source: e,
    })
}

/// Reads and parses a JSON result; `None` when the file does not exist.
fn read_json_opt<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, ReportError> {
    let Some(bytes) = read_bounded(path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ReportError::Json {
            path: path.display().to_string(),
            source: e,
        })
}

/// Reads a whole file of at most [`INPUT_BYTES_MAX`] bytes; `None` when it does not exist.
fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, ReportError> {
    read_at_most(path, INPUT_BYTES_MAX)
}

fn read_at_most(path: &Path, bytes_max: u64) -> Result<Option<Vec<u8>>, ReportError> {
    let read_err = |source| ReportError::Read {
        path: path.display().to_string(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let mut bytes = Vec::new();
    // One byte past the bound tells a file at the bound from a larger one without trusting
    // its metadata (it may be growing while read).
    file.take(bytes_max + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > bytes_max {
        return Err(ReportError::TooLarge {
            path: path.display().to_string(),
        });
    }
    Ok(Some(bytes))
}

/// The `*.json` files of the scenario results directory, sorted; `None` when it is missing.
/// Temporary files of an interrupted write (`*.json.tmp`) are not results.
fn scenario_files(dir: &Path) -> Result<Option<Vec<std::path::PathBuf>>, ReportError> {
    let read_err = |source| ReportError::Read {
        path: dir.display().to_string(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") && path.is_file() {
            if files.len() == SCENARIO_FILES_MAX {
                return Err(ReportError::TooManyScenarios {
                    path: dir.display().to_string(),
                });
            }
            files.push(path);
        }
    }
    files.sort();
    Ok(Some(files))
}

/// `path` relative to `root` when it lies under it, so that the report does not depend on where
/// the workspace is checked out.
pub fn shown_path(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue(text: &str) -> Result<Vec<Invariant>, ReportError> {
        parse_catalogue(Path::new("invariants.toml"), text.as_bytes())
    }

    #[test]
    fn the_catalogue_is_sorted_and_checked() {
        let ok = catalogue(
            "[[invariant]]\nid = \"INV-02\"\ntitle = \"b\"\nstatement = \"s\"\n\
             [[invariant]]\nid = \"INV-01\"\ntitle = \"a\"\nstatement = \"s\"\n",
        )
        .unwrap();
        assert_eq!(
            ok.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["INV-01", "INV-02"]
        );
        let cases = [
            ("", "no [[invariant]]"),
            (
                "[[invariant]]\nid = \"INV-1\"\ntitle = \"a\"\nstatement = \"s\"\n",
                "not of the form",
            ),
            (
                "[[invariant]]\nid = \"INV-01\"\ntitle = \" \"\nstatement = \"s\"\n",
                "empty title",
            ),
            (
                "[[invariant]]\nid = \"INV-01\"\ntitle = \"a\"\nstatement = \"s\"\n\
                 [[invariant]]\nid = \"INV-01\"\ntitle = \"b\"\nstatement = \"t\"\n",
                "appears twice",
            ),
        ];
        for (text, expected) in cases {
            let err = catalogue(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        assert!(matches!(
            catalogue("[[invariant]]\nid = 3\n"),
            Err(ReportError::Toml { .. })
        ));
    }

    #[test]
    fn the_real_catalogue_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../traceability/invariants.toml");
        let bytes = std::fs::read(&path).unwrap();
        let invariants = parse_catalogue(&path, &bytes).unwrap();
        assert!(
            invariants.iter().any(|i| i.id == "INV-27"),
            "{invariants:?}"
        );
    }

    #[test]
    fn a_missing_input_is_none_and_a_larger_than_bound_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_bounded(&dir.path().join("absent")).unwrap().is_none());
        // The rule at a small bound, N and N + 1 bytes.
        const N: u64 = 16;
        let file = dir.path().join("f.json");
        std::fs::write(&file, [b' '; N as usize]).unwrap();
        assert_eq!(
            read_at_most(&file, N).unwrap().map(|b| b.len() as u64),
            Some(N)
        );
        std::fs::write(&file, [b' '; N as usize + 1]).unwrap();
        assert!(matches!(
            read_at_most(&file, N),
            Err(ReportError::TooLarge { .. })
        ));
    }

    #[test]
    fn scenario_files_are_the_json_files_only_sorted() {
        let dir = tempfile::tempdir().unwrap();
        assert!(scenario_files(&dir.path().join("none")).unwrap().is_none());
        for name in ["b.json", "a.json", "c.json.tmp", "notes.txt"] {
            std::fs::write(dir.path().join(name), b"{}").unwrap();
        }
        std::fs::create_dir(dir.path().join("d.json")).unwrap();
        let files = scenario_files(dir.path()).unwrap().unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.json", "b.json"]);
    }

    #[test]
    fn shown_paths_are_relative_to_the_root_when_under_it() {
        let root = Path::new("/w/repo");
        assert_eq!(
            shown_path(root, Path::new("/w/repo/target/fi/results")),
            "target/fi/results"
        );
        assert_eq!(shown_path(root, Path::new("/elsewhere/x")), "/elsewhere/x");
    }
}
