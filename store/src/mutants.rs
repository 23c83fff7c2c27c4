//! Named mutants: deliberate bugs that prove the tests can fail.
//!
//! A test that claims an invariant is only worth its name if it fails when the invariant is
//! broken. Each mutation point is one small branch at the exact place a real bug would sit,
//!
//! ```text
//! if store::mutants::active("skip_dir_fsync") { /* the bug */ } else { /* the code */ }
//! ```
//!
//! with a comment naming the invariant it breaks. The catalogue — every name, the invariants it
//! breaks, where it sits, and whether it is in the quick subset — is
//! `traceability/mutants.toml`; the failure-injection suite runs the tests and scenarios that
//! claim those invariants with the mutant active and expects at least one to fail.
//!
//! Only with the `mutants` feature (the failure-injection build, `edged --features fi`) can a
//! mutant be active: when the environment variable [`MUTANT_ENV`] equals its name, read once per
//! process. Without the feature [`active`] is a `const fn` returning false, so every mutation
//! point compiles to the unmutated code and the shipped binary never reads the variable nor
//! holds its name. The first time the active mutant's point is reached, the process says so on
//! stderr (`mutant <name> active`), so a run can tell that the mutant was reached at all.

/// The variable naming the one mutant active in a process of a `mutants` build.
pub const MUTANT_ENV: &str = "EDGED_MUTANT";

/// Whether mutants are compiled into this build.
pub const ENABLED: bool = cfg!(feature = "mutants");

/// True when this is a `mutants` build and [`MUTANT_ENV`] names `name`.
#[cfg(feature = "mutants")]
pub fn active(name: &'static str) -> bool {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};

    static CHOSEN: OnceLock<Option<String>> = OnceLock::new();
    static SAID: AtomicBool = AtomicBool::new(false);
    let chosen = CHOSEN.get_or_init(|| std::env::var(MUTANT_ENV).ok().filter(|n| !n.is_empty()));
    if chosen.as_deref() != Some(name) {
        return false;
    }
    if !SAID.swap(true, Ordering::Relaxed) {
        eprintln!("mutant {name} active");
    }
    true
}

/// Never: this build has no mutants (the `mutants` feature is off).
#[cfg(not(feature = "mutants"))]
#[inline(always)]
pub const fn active(_name: &'static str) -> bool {
    false
}
