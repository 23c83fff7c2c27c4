//! The failure-injection build and its catalogue.
//!
//! - What a binary holds. The shipped `edged` (default features) has no crash points and no
//!   mutants: it never reads `EDGED_CRASH_AT` or `EDGED_MUTANT` and holds neither name, nor the
//!   name of any crash point or mutant. The failure-injection build (`--features fi`) holds all
//!   of them. This test checks the binary it was built with: `cargo test -p edged` the shipped
//!   kind, `cargo test --all-features` the `fi` kind. The release binaries are checked the same
//!   way by `strings BINARY | grep -c -e EDGED_CRASH_AT -e EDGED_MUTANT -e ingest.after_commit`:
//!   0 for `cargo build --release -p edged`, 3 or more for `--features fi`.
//! - The catalogue `traceability/mutants.toml` and the code agree: every mutation point in the
//!   sources is catalogued, every catalogued mutant has its point where the catalogue says, and
//!   every invariant of `traceability/invariants.toml` has at least one mutant.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use store::{crash, mutants};

const EDGED: &str = env!("CARGO_BIN_EXE_edged");
/// Directories whose sources may hold mutation points.
const SOURCE_DIRS: &[&str] = &["store/src", "relay/src", "net/src", "edged/src"];
/// The quick subset stays small: it runs in CI with every change.
const QUICK_MAX: usize = 8;
/// Source files read while looking for mutation points (the tree is far smaller).
const SOURCE_FILES_MAX: usize = 1_000;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("edged/ sits in the workspace")
        .to_owned()
}

/// The binary as text (lossy): the literals it holds are searchable with `str::contains`.
fn binary_text() -> String {
    let bytes = std::fs::read(EDGED).unwrap_or_else(|e| panic!("read {EDGED}: {e}"));
    String::from_utf8_lossy(&bytes).into_owned()
}

#[derive(Debug)]
struct Mutant {
    name: String,
    invariants: Vec<String>,
    place: String,
    quick: bool,
}

fn catalogue() -> Vec<Mutant> {
    let path = workspace().join("traceability/mutants.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let doc: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let entries = doc["mutant"].as_array().expect("[[mutant]] entries");
    entries
        .iter()
        .map(|m| {
            let keys: BTreeSet<&str> = m
                .as_table()
                .expect("a table")
                .keys()
                .map(|k| k.as_str())
                .collect();
            assert_eq!(
                keys,
                BTreeSet::from(["name", "invariants", "description", "where", "quick"]),
                "{m}"
            );
            let text = |k: &str| {
                m[k].as_str()
                    .unwrap_or_else(|| panic!("{k} of {m}"))
                    .to_owned()
            };
            assert!(!text("description").is_empty(), "{m}");
            Mutant {
                name: text("name"),
                invariants: m["invariants"]
                    .as_array()
                    .expect("invariants")
                    .iter()
                    .map(|i| i.as_str().expect("an id").to_owned())
                    .collect(),
                place: text("where"),
                quick: m["quick"].as_bool().expect("quick"),
            }
        })
        .collect()
}

fn invariant_ids() -> BTreeSet<String> {
    let path = workspace().join("traceability/invariants.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let doc: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    doc["invariant"]
        .as_array()
        .expect("[[invariant]] entries")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Every `mutants::active("NAME")` in the sources: NAME → files (relative to the workspace).
fn mutation_points() -> BTreeMap<String, BTreeSet<String>> {
    const CALL: &str = "mutants::active(\"";
    let root = workspace();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dirs: Vec<PathBuf> = SOURCE_DIRS.iter().map(|d| root.join(d)).collect();
    let mut files = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("store/src/mutants.rs")
            {
                continue;
            }
            files += 1;
            assert!(files <= SOURCE_FILES_MAX, "more source files than expected");
            let text = std::fs::read_to_string(&path).expect("read a source file");
            let rel = path.strip_prefix(&root).expect("under the workspace");
            for (at, _) in text.match_indices(CALL) {
                let rest = &text[at + CALL.len()..];
                let name = &rest[..rest.find('"').expect("a closing quote")];
                out.entry(name.to_owned())
                    .or_default()
                    .insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[test]
fn the_binary_holds_crash_points_and_mutants_only_in_the_fi_build() {
    let text = binary_text();
    let mut names: Vec<String> = vec![crash::CRASH_AT_ENV.into(), mutants::MUTANT_ENV.into()];
    names.extend(crash::all_points().map(str::to_owned));
    names.extend(catalogue().into_iter().map(|m| m.name));
    let (present, missing): (Vec<&String>, Vec<&String>) =
        names.iter().partition(|n| text.contains(n.as_str()));
    let fi = cfg!(feature = "fi");
    assert_eq!((crash::ENABLED, mutants::ENABLED), (fi, fi));
    if fi {
        assert!(missing.is_empty(), "the fi build lacks {missing:?}");
    } else {
        assert!(present.is_empty(), "the shipped build holds {present:?}");
    }
}

#[test]
fn every_mutation_point_is_catalogued_and_every_invariant_has_a_mutant() {
    let catalogue = catalogue();
    let points = mutation_points();
    let ids = invariant_ids();
    let mut seen = BTreeSet::new();
    for m in &catalogue {
        assert!(
            seen.insert(m.name.as_str()),
            "{} is catalogued twice",
            m.name
        );
        assert!(
            !m.name.is_empty()
                && m.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{} is not a snake_case name",
            m.name
        );
        assert!(!m.invariants.is_empty(), "{} breaks no invariant", m.name);
        for inv in &m.invariants {
            assert!(
                ids.contains(inv),
                "{}: {inv} is not in invariants.toml",
                m.name
            );
        }
        let files = points
            .get(&m.name)
            .unwrap_or_else(|| panic!("{} has no mutation point in the sources", m.name));
        assert!(
            files.contains(&m.place),
            "{}: catalogued in {}, found in {files:?}",
            m.name,
            m.place
        );
    }
    let uncatalogued: Vec<&String> = points
        .keys()
        .filter(|n| !seen.contains(n.as_str()))
        .collect();
    assert!(
        uncatalogued.is_empty(),
        "mutation points not catalogued: {uncatalogued:?}"
    );
    let broken: BTreeSet<&String> = catalogue.iter().flat_map(|m| &m.invariants).collect();
    let without: Vec<&String> = ids.iter().filter(|i| !broken.contains(i)).collect();
    assert!(
        without.is_empty(),
        "invariants no mutant breaks: {without:?}"
    );
    let quick: Vec<&Mutant> = catalogue.iter().filter(|m| m.quick).collect();
    let layers: BTreeSet<&str> = quick
        .iter()
        .filter_map(|m| m.place.split('/').next())
        .collect();
    assert!(
        !quick.is_empty() && quick.len() <= QUICK_MAX && layers.len() >= 3,
        "the quick subset: {quick:?}"
    );
}
