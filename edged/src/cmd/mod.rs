//! One module per command; each returns a [`Failure`] carrying its exit code.

mod ca;
pub(crate) mod client;
mod docs;
mod export;
mod fleet;
mod fsck;
mod import;
mod key;
mod lifecycle;
mod needs;
mod quarantine;
mod query;
mod reload;
pub(crate) mod segment;
mod segments;
pub(crate) mod sequences;

use base::Clock as _;
use std::sync::Arc;

use crate::cli::{
    CaCommand, Cli, Command, DlqCommand, KeyCommand, QuarantineCommand, RecallCommand, RootCommand,
    SegmentCommand,
};
use crate::config::Config;
use crate::exit::{BUSY, CliResult, Failure};

pub fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Run(args) => crate::daemon::run(&args),
        Command::Ca(CaCommand::Init { out }) => ca::init(&out),
        Command::Ca(CaCommand::Issue {
            ca,
            node,
            out,
            days,
        }) => ca::issue(&ca, &node, &out, days),
        Command::Status(args) => query::status(&args),
        Command::Peers(args) => query::peers(&args),
        Command::Reload(args) => reload::run(&args),
        Command::Dlq(DlqCommand::List(args)) => query::dlq_list(&args),
        Command::Dlq(DlqCommand::Requeue(target)) => query::dlq_act(&target, true),
        Command::Dlq(DlqCommand::Purge(target)) => query::dlq_act(&target, false),
        Command::Key(KeyCommand::Gen { out }) => key::generate(&out),
        Command::Segment(SegmentCommand::Create(args)) => segment::create(&args),
        Command::Segment(SegmentCommand::Sign { key, file }) => {
            lifecycle::segment_sign(&key, &file)
        }
        Command::Root(RootCommand::Create { spec, out }) => lifecycle::root_create(&spec, &out),
        Command::Root(RootCommand::Sign { key, file }) => lifecycle::root_sign(&key, &file),
        Command::Root(RootCommand::Inspect {
            file,
            current,
            json,
        }) => lifecycle::root_inspect(&file, current.as_deref(), json),
        Command::Root(RootCommand::Publish { key, out, roots }) => {
            lifecycle::root_publish(&key, &out, &roots)
        }
        Command::Recall(RecallCommand::Create {
            key,
            channel,
            name,
            sequence,
            out,
            ids,
        }) => lifecycle::recall_create(&key, &channel, &name, sequence, &out, &ids),
        Command::Sequences(args) => sequences::run(&args),
        Command::Segment(SegmentCommand::Inspect { file, json }) => segment::inspect(&file, json),
        Command::Segment(SegmentCommand::Verify { trust, file }) => segment::verify(&trust, &file),
        Command::Import(args) => import::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Segments(args) => segments::run(&args),
        Command::Fleet(args) => fleet::run(&args),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { out } => docs::man(&out),
        Command::Fsck(args) => fsck::run(&args),
        Command::Quarantine(QuarantineCommand::List(args)) => quarantine::list(&args),
        Command::Quarantine(QuarantineCommand::Show { config, id, json }) => {
            quarantine::show(&config, &id, json)
        }
        Command::Quarantine(QuarantineCommand::Purge {
            config,
            ids,
            all,
            json,
        }) => quarantine::purge(&config, &ids, all, json),
    }
}

/// Whether a command that finds no daemon may create the store (an offline import seeds a node
/// before its first start), or only reads one that exists (a listing, an export).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direct {
    Create,
    Existing,
}

/// Opens the node's store directly (the daemon is not running), with a clear message when some
/// other process holds it, or, for a command that only reads, when there is none.
pub(crate) fn open_store_direct(cfg: &Config, direct: Direct) -> CliResult<store::Store> {
    let (store, report) = open_store_direct_reporting(cfg, direct)?;
    if !report.is_clean() {
        tracing::warn!(
            temp_files_removed = report.temp_removed.len(),
            orphan_files_removed = report.orphans_removed.len(),
            index_rows_dropped = report.rows_dropped.len(),
            partials_dropped = report.partials_dropped.len(),
            partials_kept = report.partials_kept,
            "store recovered from an unclean shutdown"
        );
    }
    Ok(store)
}

/// [`open_store_direct`], handing back what the store's open repaired (for `fsck` to report).
pub(crate) fn open_store_direct_reporting(
    cfg: &Config,
    direct: Direct,
) -> CliResult<(store::Store, store::RecoveryReport)> {
    let db = store::layout::Layout::new(cfg.store.data_dir.clone()).db();
    if direct == Direct::Existing && !db.exists() {
        return Err(Failure::new(
            crate::exit::DAEMON_DOWN,
            anyhow::anyhow!(
                "no daemon answers and {} holds no store yet: start the daemon (or check data_dir in the config)",
                cfg.store.data_dir.display()
            ),
        ));
    }
    let fs: Arc<dyn store::fs::Fs> = Arc::new(store::fs::RealFs);
    match store::Store::open(cfg.store.clone(), fs, base::SystemClock.now_ms()) {
        Ok(opened) => Ok(opened),
        Err(store::StoreError::Locked { path }) => Err(Failure::new(
            BUSY,
            anyhow::anyhow!(
                "the data directory's database {} is held by another process (a running edged daemon?); stop it, or run this command where it can reach the daemon",
                path.display()
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Writes `text` to stdout; a reader that has gone (`| head`) ends the output quietly (see
/// [`crate::output::stdout`]).
pub(crate) fn print_stdout(text: &str) -> CliResult {
    crate::output::write_stdout(format_args!("{text}"));
    Ok(())
}
