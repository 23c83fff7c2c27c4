//! The test runner's JUnit results, read into [`TestsRun`].
//!
//! `make test` runs the workspace's tests through cargo-nextest, which writes one JUnit XML file
//! per run (`target/nextest/<profile>/junit.xml`, see `.config/nextest.toml`). Its shape:
//!
//! ```text
//! <testsuites …>
//!   <testsuite name="store::space" …>          one per test binary (its nextest binary id)
//!     <testcase name="inv_06_…" classname="store::space" time="0.123"/>      passed
//!     <testcase …><failure message="…" type="test failure with exit code 101">…</failure>
//!       <rerunFailure …/>                     a retry that failed as well
//!       <system-out>…</system-out><system-err>…</system-err></testcase>
//!     <testcase …><flakyFailure …/></testcase>   failed, then passed on a retry: passed
//! ```
//!
//! A test that failed, timed out or crashed carries `<failure>` (or `<error>`); one that did not
//! run carries `<skipped>` (nextest leaves skipped tests out altogether). Whether a test passed
//! is read from these elements, never from the text of the runner's output.

use std::borrow::Cow;
use std::path::Path;

use quick_xml::events::{BytesStart, Event};

use crate::results::{TestOutcome, TestResult, TestsRun};

/// A results file larger than this is refused: a run of the workspace writes well under a MiB
/// (no output is stored for passing tests), so more means the file is not what it should be.
pub const JUNIT_BYTES_MAX: u64 = 64 << 20;
/// Output kept per test case (failure text, stdout, stderr): enough for the panic message and
/// the lines around it.
pub const CASE_OUTPUT_BYTES_MAX: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum JunitError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file is larger than [`JUNIT_BYTES_MAX`].
    #[error("{path} has {len} bytes, more than the {JUNIT_BYTES_MAX} a test run writes")]
    TooLarge { path: String, len: u64 },
    /// Not well-formed XML.
    #[error("malformed XML at byte {position}: {source}")]
    Xml {
        position: u64,
        source: quick_xml::Error,
    },
    /// Well-formed, but not JUnit as the test runner writes it.
    #[error("not a JUnit test report at byte {position}: {why}")]
    Shape { position: u64, why: String },
}

/// One test case as the runner reported it, with the text of its failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub result: TestResult,
    /// What the failure said (its `message`, else its `type`), when the test failed.
    pub failure: Option<String>,
    /// The failure's text and the test's stored stdout and stderr, as far as the runner stored
    /// them (at most [`CASE_OUTPUT_BYTES_MAX`]).
    pub output: String,
}

impl Case {
    /// `binary::name`, the form the mutant and scenario results name tests by.
    pub fn id(&self) -> String {
        format!("{}::{}", self.result.binary, self.result.name)
    }
}

/// Reads a JUnit file into the tests run (see [`read_cases`]).
pub fn read(path: &Path) -> Result<TestsRun, JunitError> {
    let cases = read_cases(path)?;
    Ok(TestsRun {
        source: path.display().to_string(),
        tests: cases.into_iter().map(|c| c.result).collect(),
    })
}

/// Reads a JUnit file, bounded by [`JUNIT_BYTES_MAX`].
pub fn read_cases(path: &Path) -> Result<Vec<Case>, JunitError> {
    use std::io::Read;
    let shown = || path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| JunitError::Read {
        path: shown(),
        source,
    })?;
    let mut text = String::new();
    // One byte more than allowed tells a file at the bound from a longer one.
    file.take(JUNIT_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|source| JunitError::Read {
            path: shown(),
            source,
        })?;
    if text.len() as u64 > JUNIT_BYTES_MAX {
        return Err(JunitError::TooLarge {
            path: shown(),
            len: text.len() as u64,
        });
    }
    parse(&text)
}

/// The case being read: its attributes, and what its child elements said.
struct Open {
    binary: String,
    name: String,
    duration_ms: u64,
    failed: bool,
    skipped: bool,
    failure: Option<String>,
    output: String,
}

/// Parses the text of a JUnit file, test cases in document order.
pub fn parse(xml: &str) -> Result<Vec<Case>, JunitError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut cases = Vec::new();
    let mut root_seen = false;
    let mut suite: Option<String> = None;
    let mut case: Option<Open> = None;
    // Inside <failure>, <error>, <system-out> or <system-err> of the open case: keep the text.
    let mut capturing = false;
    loop {
        let position = reader.buffer_position();
        let shape = |why: String| JunitError::Shape { position, why };
        let event = reader.read_event().map_err(|source| JunitError::Xml {
            position: reader.error_position(),
            source,
        })?;
        match event {
            Event::Start(e) | Event::Empty(e) if !root_seen => {
                if e.local_name().as_ref() != b"testsuites"
                    && e.local_name().as_ref() != b"testsuite"
                {
                    return Err(shape(format!(
                        "the root element is <{}>, not <testsuites>",
                        String::from_utf8_lossy(e.local_name().as_ref())
                    )));
                }
                root_seen = true;
                if e.local_name().as_ref() == b"testsuite" {
                    suite = Some(attribute(&e, b"name", position)?.unwrap_or_default());
                }
            }
            Event::Start(e) => match e.local_name().as_ref() {
                b"testsuite" => suite = Some(attribute(&e, b"name", position)?.unwrap_or_default()),
                b"testcase" => case = Some(open_case(&e, suite.as_deref(), position)?),
                element => {
                    if let Some(open) = case.as_mut() {
                        capturing = child_element(open, element, &e, position)?;
                    }
                }
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                b"testcase" => cases.push(close_case(open_case(&e, suite.as_deref(), position)?)),
                b"testsuite" => {}
                element => {
                    if let Some(open) = case.as_mut() {
                        child_element(open, element, &e, position)?;
                    }
                }
            },
            Event::End(e) => match e.local_name().as_ref() {
                b"testcase" => {
                    let open = case
                        .take()
                        .ok_or_else(|| shape("</testcase> without <testcase>".into()))?;
                    cases.push(close_case(open));
                }
                b"testsuite" => suite = None,
                b"failure" | b"error" | b"system-out" | b"system-err" => capturing = false,
                _ => {}
            },
            Event::Text(t) if capturing => {
                if let Some(open) = case.as_mut() {
                    let text = t.decode().map_err(|e| JunitError::Xml {
                        position,
                        source: e.into(),
                    })?;
                    keep(&mut open.output, &text);
                }
            }
            Event::CData(t) if capturing => {
                if let Some(open) = case.as_mut() {
                    keep(&mut open.output, &String::from_utf8_lossy(&t));
                }
            }
            Event::GeneralRef(r) if capturing => {
                if let Some(open) = case.as_mut() {
                    let resolved = resolve_reference(&r).ok_or_else(|| {
                        shape(format!("unknown entity &{};", String::from_utf8_lossy(&r)))
                    })?;
                    keep(&mut open.output, &resolved);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !root_seen {
        return Err(JunitError::Shape {
            position: 0,
            why: "no <testsuites> element".into(),
        });
    }
    if case.is_some() {
        return Err(JunitError::Shape {
            position: reader.buffer_position(),
            why: "the file ends inside a <testcase>".into(),
        });
    }
    Ok(cases)
}

/// A `<testcase>`'s attributes: its name, its binary (`classname`, else the suite's name) and
/// its time in seconds.
fn open_case(e: &BytesStart<'_>, suite: Option<&str>, position: u64) -> Result<Open, JunitError> {
    let shape = |why: String| JunitError::Shape { position, why };
    let name = attribute(e, b"name", position)?
        .ok_or_else(|| shape("a <testcase> without a name".into()))?;
    let binary = match attribute(e, b"classname", position)? {
        Some(c) => c,
        None => suite
            .ok_or_else(|| shape(format!("test case {name} is in no <testsuite>")))?
            .to_owned(),
    };
    let duration_ms = match attribute(e, b"time", position)? {
        Some(t) => {
            seconds_to_ms(&t).ok_or_else(|| shape(format!("test case {name}: time {t:?}")))?
        }
        None => 0,
    };
    Ok(Open {
        binary,
        name,
        duration_ms,
        failed: false,
        skipped: false,
        failure: None,
        output: String::new(),
    })
}

/// Notes what a child element of a test case says; returns whether its text is to be kept.
fn child_element(
    open: &mut Open,
    element: &[u8],
    e: &BytesStart<'_>,
    position: u64,
) -> Result<bool, JunitError> {
    match element {
        // The last attempt failed (a failure, a timeout, a crash).
        b"failure" | b"error" => {
            open.failed = true;
            if open.failure.is_none() {
                open.failure = match attribute(e, b"message", position)? {
                    Some(m) => Some(m),
                    None => attribute(e, b"type", position)?,
                }
                .or_else(|| Some(String::from_utf8_lossy(element).into_owned()));
            }
            Ok(true)
        }
        b"skipped" => {
            open.skipped = true;
            Ok(false)
        }
        // Output of the test case itself; nested ones (inside an earlier attempt's
        // <flakyFailure> or <rerunFailure>) are kept too: they tell what the attempts printed.
        b"system-out" | b"system-err" => Ok(true),
        // <flakyFailure>, <rerunFailure>: earlier attempts; the outcome is the last attempt's.
        _ => Ok(false),
    }
}

fn close_case(open: Open) -> Case {
    let outcome = if open.failed {
        TestOutcome::Failed
    } else if open.skipped {
        TestOutcome::Skipped
    } else {
        TestOutcome::Passed
    };
    Case {
        result: TestResult {
            binary: open.binary,
            name: open.name,
            outcome,
            duration_ms: open.duration_ms,
        },
        failure: open.failure,
        output: open.output,
    }
}

/// The unescaped value of attribute `name`, if present.
fn attribute(e: &BytesStart<'_>, name: &[u8], position: u64) -> Result<Option<String>, JunitError> {
    let xml = |source: quick_xml::Error| JunitError::Xml { position, source };
    let Some(attr) = e.try_get_attribute(name).map_err(|err| xml(err.into()))? else {
        return Ok(None);
    };
    // nextest writes XML 1.0 (its declaration says so).
    let value: Cow<'_, str> = attr
        .normalized_value(quick_xml::XmlVersion::Explicit1_0)
        .map_err(xml)?;
    Ok(Some(value.into_owned()))
}

/// `&name;` or `&#NN;` in text: the five XML entities and character references.
fn resolve_reference(r: &quick_xml::events::BytesRef<'_>) -> Option<String> {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        return Some(c.to_string());
    }
    let name = std::str::from_utf8(r).ok()?;
    quick_xml::escape::resolve_xml_entity(name).map(str::to_owned)
}

/// Appends `text` to `out` up to [`CASE_OUTPUT_BYTES_MAX`], on a character boundary.
fn keep(out: &mut String, text: &str) {
    let room = CASE_OUTPUT_BYTES_MAX.saturating_sub(out.len());
    if text.len() <= room {
        out.push_str(text);
    } else {
        let mut end = room;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        out.push_str(&text[..end]);
    }
}

/// `"1.234"` seconds → 1234 ms (rounded); `None` for anything that is not a finite,
/// non-negative number.
fn seconds_to_ms(text: &str) -> Option<u64> {
    let secs: f64 = text.trim().parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    // A test run is bounded by hours, far below where f64 → u64 loses whole milliseconds.
    Some((secs * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real nextest JUnit file: a tiny crate's tests run with one retry, a 1 s slow period
    /// and termination after 2 s, so that it holds a pass, a flaky pass, failures that failed
    /// again when retried, an abort, a timeout, nested test names and a custom harness.
    const FIXTURE: &str = include_str!("../tests/data/nextest-junit.xml");

    fn outcome_of(cases: &[Case], name: &str) -> TestOutcome {
        cases
            .iter()
            .find(|c| c.result.name == name)
            .unwrap_or_else(|| panic!("{name} not read"))
            .result
            .outcome
    }

    #[test]
    fn a_real_nextest_report_reads_into_binaries_names_outcomes_and_durations() {
        let cases = parse(FIXTURE).unwrap();
        let ids: Vec<String> = cases.iter().map(Case::id).collect();
        assert_eq!(
            ids,
            [
                "fixture::tests::deeper::inv_02_inv_03_nested_name",
                "fixture::tests::inv_01_adds",
                "fixture::custom::inv_10_custom_harness_test",
                "fixture::it::inv_05_fails_with_a_panic",
                "fixture::it::inv_06_flaky_passes_on_the_second_attempt",
                "fixture::it::inv_07_always_fails_even_when_retried",
                "fixture::it::inv_09_aborts",
                "fixture::it::slow_but_passes",
                "fixture::it::inv_08_times_out",
            ]
        );
        use TestOutcome::*;
        for (name, expected) in [
            ("tests::inv_01_adds", Passed),
            ("inv_10_custom_harness_test", Passed),
            ("inv_05_fails_with_a_panic", Failed),
            // Failed once, passed when retried: the last attempt counts.
            ("inv_06_flaky_passes_on_the_second_attempt", Passed),
            ("inv_07_always_fails_even_when_retried", Failed),
            ("inv_09_aborts", Failed),
            ("inv_08_times_out", Failed),
            ("slow_but_passes", Passed),
        ] {
            assert_eq!(outcome_of(&cases, name), expected, "{name}");
        }
        let slow = cases
            .iter()
            .find(|c| c.result.name == "slow_but_passes")
            .unwrap();
        assert_eq!(slow.result.duration_ms, 1206);
        assert_eq!(slow.failure, None);
    }

    #[test]
    fn failures_keep_their_message_and_output_unescaped() {
        let cases = parse(FIXTURE).unwrap();
        let failed = cases
            .iter()
            .find(|c| c.result.name == "inv_05_fails_with_a_panic")
            .unwrap();
        assert!(
            failed.failure.as_deref().is_some_and(
                |m| m.contains("'inv_05_fails_with_a_panic'") && m.contains("tests/it.rs")
            ),
            "{:?}",
            failed.failure
        );
        assert!(
            failed.output.contains(r#"2 + 2 <is> & "five""#),
            "{}",
            failed.output
        );
        let timed_out = cases
            .iter()
            .find(|c| c.result.name == "inv_08_times_out")
            .unwrap();
        assert_eq!(timed_out.failure.as_deref(), Some("test timeout"));
        let aborted = cases
            .iter()
            .find(|c| c.result.name == "inv_09_aborts")
            .unwrap();
        assert!(aborted.failure.as_deref().unwrap().contains("SIGABRT"));
    }

    #[test]
    fn the_file_reads_into_a_tests_run_naming_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        std::fs::write(&path, FIXTURE).unwrap();
        let run = read(&path).unwrap();
        assert_eq!(run.source, path.display().to_string());
        assert_eq!(run.tests.len(), 9);
        assert_eq!(
            run.tests
                .iter()
                .filter(|t| t.outcome == TestOutcome::Failed)
                .count(),
            4
        );
    }

    #[test]
    fn skipped_and_error_elements_count_and_classname_falls_back_to_the_suite() {
        let xml = r#"<?xml version="1.0"?>
            <testsuites>
              <testsuite name="net::mtls">
                <testcase name="a" time="0.5"><skipped/></testcase>
                <testcase name="b" time="1"><error message="could not start"/></testcase>
                <testcase name="c"/>
              </testsuite>
            </testsuites>"#;
        let cases = parse(xml).unwrap();
        let got: Vec<(String, TestOutcome, u64, Option<String>)> = cases
            .into_iter()
            .map(|c| (c.id(), c.result.outcome, c.result.duration_ms, c.failure))
            .collect();
        assert_eq!(
            got,
            [
                ("net::mtls::a".into(), TestOutcome::Skipped, 500, None),
                (
                    "net::mtls::b".into(),
                    TestOutcome::Failed,
                    1000,
                    Some("could not start".into())
                ),
                ("net::mtls::c".into(), TestOutcome::Passed, 0, None),
            ]
        );
    }

    #[test]
    fn what_is_not_a_junit_report_is_refused() {
        let refused = |xml: &str| parse(xml).unwrap_err().to_string();
        assert!(refused("").contains("no <testsuites>"));
        assert!(refused("<html><body/></html>").contains("<html>"));
        assert!(
            refused("<testsuites><testsuite name=\"x\"><testcase name=\"a\">")
                .contains("ends inside")
        );
        assert!(
            refused("<testsuites><testcase time=\"1\"/></testsuites>").contains("without a name")
        );
        assert!(
            refused("<testsuites><testcase name=\"a\" classname=\"b\" time=\"-1\"/></testsuites>")
                .contains("time")
        );
        assert!(
            refused("<testsuites><testcase name=\"a\"/></testsuites>").contains("no <testsuite>")
        );
        assert!(refused("<testsuites><testsuite name=\"x\"></testcase>").contains("malformed"));
    }

    #[test]
    fn a_file_beyond_the_bound_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(JUNIT_BYTES_MAX + 1).unwrap();
        assert!(matches!(read(&path), Err(JunitError::TooLarge { .. })));
        assert!(matches!(
            read(&dir.path().join("missing.xml")),
            Err(JunitError::Read { .. })
        ));
    }

    #[test]
    fn kept_output_is_bounded_on_a_character_boundary() {
        let mut out = String::new();
        keep(&mut out, &"é".repeat(CASE_OUTPUT_BYTES_MAX));
        assert!(out.len() <= CASE_OUTPUT_BYTES_MAX && out.len() + 2 > CASE_OUTPUT_BYTES_MAX);
        keep(&mut out, "more");
        assert!(out.len() <= CASE_OUTPUT_BYTES_MAX);
    }

    #[test]
    fn seconds_read_as_rounded_milliseconds() {
        assert_eq!(seconds_to_ms("0.0005"), Some(1));
        assert_eq!(seconds_to_ms("12.3456"), Some(12_346));
        assert_eq!(seconds_to_ms("NaN"), None);
        assert_eq!(seconds_to_ms("inf"), None);
        assert_eq!(seconds_to_ms("x"), None);
    }
}
