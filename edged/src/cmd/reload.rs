//! `edged reload`: the running daemon reads its config again (see `daemon::reload`).

use serde_json::Value;

use super::client;
use crate::cli::QueryArgs;
use crate::config::Config;
use crate::control::Request;
use crate::exit::CliResult;
use crate::output;

pub fn run(args: &QueryArgs) -> CliResult {
    // The file is checked here first: an invalid one is reported without bothering the daemon,
    // which would refuse it the same way.
    let cfg = Config::load(&args.config.config)?;
    let v = client::require(&cfg)?.call(&Request::Reload)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let summary = v["summary"].as_str().unwrap_or("nothing changed");
    println!("reloaded: {}", output::escape(summary));
    let jobs = |key: &str| v[key].as_u64().unwrap_or(0);
    if jobs("jobs_scheduled") > 0 || jobs("jobs_cancelled") > 0 {
        println!(
            "relay jobs: {} scheduled for peers added, {} cancelled for peers removed",
            jobs("jobs_scheduled"),
            jobs("jobs_cancelled")
        );
    }
    if v["log_level_overridden"] == Value::Bool(true) {
        println!("log_level not applied: EDGED_LOG sets the daemon's log filter");
    }
    Ok(())
}
