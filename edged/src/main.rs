//! `edged`: relay signed content through an airgapped fleet.
//!
//! `main` parses the command line, runs the command, and maps its error to a documented exit
//! code (see [`exit`]).

mod cli;
mod cmd;
mod config;
mod control;
mod daemon;
mod deliver;
mod exit;
mod fleetview;
mod fsck;
mod metrics;
mod needlist;
mod output;
mod progress;
mod quarantine;
mod reload;
mod scrub;
mod storefull;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // The daemon sets up its own logging once it has read its config.
    if !matches!(args.command, cli::Command::Run(_)) {
        init_logging(args.verbose);
    }
    match cmd::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // Errors quote paths, file names and what the daemon said: escaped, so none of them
            // can drive the terminal (see `output`).
            for message in error_lines(&failure.error) {
                eprintln!("edged: error: {}", output::escape(&message));
            }
            failure.exit_code()
        }
    }
}

/// The lines of an error message: one per problem of a config file (each escaped on its own,
/// so a line break is never taken from a quoted path), else the error and its causes on one.
fn error_lines(error: &anyhow::Error) -> Vec<String> {
    match error.downcast_ref::<config::ConfigError>() {
        Some(config::ConfigError::Invalid { path, problems }) if error.chain().count() == 1 => {
            problems
                .iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect()
        }
        _ => vec![format!("{error:#}")],
    }
}

/// Command-line tools log warnings to stderr; `-v` shows more. The daemon sets up its own.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour())
        .with_target(false)
        .init();
}

/// Colour in log lines only on a terminal, and not when NO_COLOR is set: a file, a pipe and the
/// journal get plain text.
fn colour() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Puts a new log filter (`log_level`) in force in the running daemon; the error in words.
pub type LogFilterHandle = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The daemon logs at `level` (the config's `log_level`; EDGED_LOG overrides), human-readable
/// or as JSON lines. The handle changes the filter while it runs (a reload).
pub fn init_daemon_logging(format: config::LogFormat, level: &str) -> LogFilterHandle {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour())
        .with_target(false);
    fn handle<L, S>(h: tracing_subscriber::reload::Handle<L, S>) -> LogFilterHandle
    where
        L: From<tracing_subscriber::EnvFilter> + Send + Sync + 'static,
        S: Send + Sync + 'static,
    {
        Box::new(move |level| {
            let filter = tracing_subscriber::EnvFilter::builder()
                .parse(level)
                .map_err(|e| e.to_string())?;
            h.reload(filter).map_err(|e| e.to_string())
        })
    }
    match format {
        config::LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            let h = handle(builder.reload_handle());
            builder.init();
            h
        }
        config::LogFormat::Human => {
            let builder = builder.with_filter_reloading();
            let h = handle(builder.reload_handle());
            builder.init();
            h
        }
    }
}
