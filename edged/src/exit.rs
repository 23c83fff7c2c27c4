//! Documented exit codes of the `edged` binary.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the command ran but failed: a file was rejected, a segment did not verify, `fsck` found problems |
//! | 2 | bad command line (unknown flag, missing argument) |
//! | 3 | invalid configuration: one line per problem, each naming the key and the file |
//! | 4 | the data directory or the control socket is held by another process (is the daemon running?) |
//! | 5 | storage failure: corrupt database, I/O error on the data directory |
//! | 6 | the command needs the running daemon, and none answers on the control socket |
//! | 7 | the store is full: a segment did not fit because the space is held by segments still owed to peers; retry once they propagate (nothing else failed) |
//!
//! A command whose reader goes away (`edged segments | head`) stops writing and exits 0, quietly:
//! everything it changed was committed before it printed.

use std::process::ExitCode;

pub const FAILED: u8 = 1;
pub const USAGE: u8 = 2;
pub const CONFIG: u8 = 3;
pub const BUSY: u8 = 4;
pub const STORAGE: u8 = 5;
pub const DAEMON_DOWN: u8 = 6;
pub const STORE_FULL: u8 = 7;

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code,
            error: error.into(),
        }
    }

    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        Failure::new(FAILED, error)
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl From<crate::config::ConfigError> for Failure {
    fn from(e: crate::config::ConfigError) -> Self {
        Failure::new(CONFIG, e)
    }
}

impl From<store::StoreError> for Failure {
    fn from(e: store::StoreError) -> Self {
        use store::StoreError as E;
        let code = match &e {
            E::Locked { .. } => BUSY,
            E::Config(_) => CONFIG,
            E::NotFound(_)
            | E::PrefixNotFound(_)
            | E::NotQuarantined(_)
            | E::AmbiguousPrefix { .. }
            | E::Untrusted { .. }
            | E::Quarantined { .. } => FAILED,
            _ => STORAGE,
        };
        Failure::new(code, e)
    }
}

impl From<relay::RelayError> for Failure {
    fn from(e: relay::RelayError) -> Self {
        match e {
            relay::RelayError::Config(_) => Failure::new(CONFIG, e),
            relay::RelayError::Store(e) => Failure::from(e),
            _ => Failure::new(STORAGE, e),
        }
    }
}

pub type CliResult<T = ()> = Result<T, Failure>;
