//! The part of libtest's command line that `cargo test` and nextest use, for the test binaries
//! with a harness of their own (`harness = false`). Included by path from each of them:
//! `#[path = "../../test-support/libtest_args.rs"] mod libtest_args;`.
//!
//! nextest drives a custom harness in two steps: it lists with `--list --format terse` (and
//! again with `--ignored`, which must list only ignored tests: there are none in these
//! binaries, so that list is empty), then runs each listed test alone with
//! `NAME --exact --nocapture`. `cargo test` passes filters (substrings) and flags such as
//! `--nocapture`. Output is plain lines either way, so capture and format flags change nothing.
//! `store/tests/crash_process.rs` checks this parser end to end against its own binary.

#[derive(Debug, Default)]
pub struct HarnessArgs {
    pub list: bool,
    /// `--ignored`: only ignored tests, i.e. none.
    ignored_only: bool,
    /// `--exact`: filters and skips match whole names instead of substrings.
    exact: bool,
    filters: Vec<String>,
    skips: Vec<String>,
}

impl HarnessArgs {
    pub fn parse(args: impl IntoIterator<Item = String>) -> HarnessArgs {
        let mut parsed = HarnessArgs::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--list" => parsed.list = true,
                "--ignored" => parsed.ignored_only = true,
                "--exact" => parsed.exact = true,
                "--skip" => parsed.skips.extend(args.next()),
                // libtest options whose value is the next argument: consume it, so that it is
                // not taken for a filter.
                "--format" | "--color" | "--test-threads" | "--logfile" | "-Z" => {
                    args.next();
                }
                // `--nocapture`, `--include-ignored` (nothing is ignored), `--format=terse`, …
                flag if flag.starts_with('-') => {}
                _ => parsed.filters.push(arg),
            }
        }
        parsed
    }

    fn matches(&self, name: &str, pattern: &str) -> bool {
        if self.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    }

    pub fn selects(&self, name: &str) -> bool {
        !self.ignored_only
            && (self.filters.is_empty() || self.filters.iter().any(|f| self.matches(name, f)))
            && !self.skips.iter().any(|s| self.matches(name, s))
    }
}
