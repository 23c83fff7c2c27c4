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
            match store.check_files(args.repair) {
                Ok(found) => report.add_leftovers(&found),
                Err(e) => {
                    store.close();
                    return Err(e.into());
                }
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
