//! `edged fsck`: re-verify every stored segment and report what was found (see
//! [`crate::fsck`]).

use base::Clock as _;

use crate::cli::FsckArgs;
use crate::config::Config;
use crate::control::Request;
use crate::exit::{CliResult, Failure};
use crate::fsck::{self, Report};

pub fn run(args: &FsckArgs) -> CliResult {
    let cfg = Config::load(&args.config.config)?;
    let report = match super::client::connect(&cfg)? {
        Some(mut daemon) => {
            // The daemon does the reading; a spinner says the command is alive meanwhile.
            let bar = crate::progress::spinner("the daemon is verifying its store", args.json);
            let body = daemon.call(&Request::Fsck {
                repair: args.repair,
            });
            bar.finish_and_clear();
            serde_json::from_value::<Report>(body?).map_err(|e| {
                Failure::failed(anyhow::anyhow!(
                    "the daemon's fsck report did not parse: {e}"
                ))
            })?
        }
        None => {
            let (store, recovery) =
                super::open_store_direct_reporting(&cfg, super::Direct::Existing)?;
            let mut report = Report::default();
            report.add_recovery(&recovery);
            // The open has just removed what it found; this finds what it leaves (none, unless
            // another process wrote meanwhile).
            if let Err(e) = check_offline(&store, args.repair, &mut report) {
                store.close();
                return Err(e);
            }
            let bar = crate::progress::bytes(store.usage().stored_bytes, "verifying", args.json);
            let checked = fsck::check_segments(
                &store,
                || base::SystemClock.now_ms(),
                &mut report,
                |bytes| bar.inc(bytes),
            );
            bar.finish_and_clear();
            store.close();
            checked?;
            report
        }
    };
    let printed = if args.json {
        serde_json::to_string_pretty(&report)
            .map(|s| s + "\n")
            .map_err(Failure::failed)?
    } else {
        fsck::render(&report)
    };
    super::print_stdout(&printed)?;
    if report.is_clean() {
        Ok(())
    } else {
        Err(Failure::failed(anyhow::anyhow!(
            "fsck found {} problem(s) (listed above)",
            report.findings_total
        )))
    }
}

/// What only an offline fsck may repair: the leftover files, and the relay's ledger (no relay
/// holds it in memory).
fn check_offline(store: &store::Store, repair: bool, report: &mut Report) -> CliResult {
    report.add_leftovers(&store.check_files(repair)?);
    if repair {
        report.add_ledger_repaired(relay::audit::repair(store)?);
    }
    report.add_ledger(&relay::audit::audit(store)?, false);
    Ok(())
}
