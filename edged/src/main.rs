//! `edged`: relay signed content through an airgapped fleet.
//!
//! `main` parses the command line, runs the command, and maps its error to a documented exit
//! code (see [`exit`]).

mod cli;
mod cmd;
mod config;
mod control;
mod daemon;
mod exit;
mod fleetview;
mod fsck;
mod metrics;
mod needlist;
mod output;
mod progress;
mod quarantine;
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
        .with_target(false)
        .init();
}

/// The daemon logs at info (EDGED_LOG overrides), human-readable or as JSON lines.
pub fn init_daemon_logging(format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        config::LogFormat::Json => builder.json().init(),
        config::LogFormat::Human => builder.init(),
    }
}
