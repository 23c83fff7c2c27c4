//! `edged quarantine list/show/purge`: segments quarantined because their stored file failed
//! verification (see [`crate::quarantine`]). Through the running daemon, or on the data
//! directory itself when none runs.

use store::SegmentId;

use crate::cli::{ConfigArg, QueryArgs};
use crate::config::Config;
use crate::control::Request;
use crate::exit::{CliResult, Failure};
use crate::output;
use crate::quarantine::{self, Entry, PurgeReport, QUARANTINE_PAGE_ITEMS};

pub fn list(args: &QueryArgs) -> CliResult {
    let cfg = Config::load(&args.config.config)?;
    let mut printer = Printer::new(args.json);
    let listed = match super::client::connect(&cfg)? {
        Some(mut daemon) => daemon
            .list(&Request::QuarantineList, |items| {
                let entries = items
                    .into_iter()
                    .map(parse::<Entry>)
                    .collect::<CliResult<Vec<_>>>()?;
                printer.page(&entries)
            })
            .map(|_| ()),
        None => {
            let store = super::open_store_direct(&cfg, super::Direct::Existing)?;
            let listed = list_direct(&store, |entries| printer.page(&entries));
            store.close();
            listed
        }
    };
    listed?;
    printer.finish()
}

/// Prints a listing page by page as it arrives: memory holds one page.
struct Printer {
    json: Option<output::JsonArray<output::Stdout>>,
    table: output::TableStream,
    count: u64,
}

impl Printer {
    fn new(json: bool) -> Printer {
        Printer {
            json: json.then(|| output::JsonArray::new(output::stdout())),
            table: output::TableStream::new(&["segment", "name", "quarantined", "file", "reason"]),
            count: 0,
        }
    }

    fn page(&mut self, entries: &[Entry]) -> CliResult {
        self.count += entries.len() as u64;
        if let Some(array) = &mut self.json {
            for e in entries {
                array.item(e).map_err(write_err)?;
            }
            return array.flush().map_err(write_err);
        }
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    e.id.chars().take(12).collect(),
                    e.name.clone().unwrap_or_else(|| "unknown".into()),
                    e.quarantined_at.clone(),
                    e.file_bytes.map_or("none kept".into(), output::bytes),
                    e.reason.clone(),
                ]
            })
            .collect();
        super::print_stdout(&self.table.page(&rows))
    }

    fn finish(mut self) -> CliResult {
        if let Some(array) = self.json.take() {
            return array.finish().map(|_| ()).map_err(write_err);
        }
        let tail = self.table.finish();
        super::print_stdout(&format!("{tail}{} quarantined segment(s)\n", self.count))
    }
}

fn write_err(e: std::io::Error) -> Failure {
    Failure::failed(anyhow::anyhow!("cannot write: {e}"))
}

/// Every quarantined segment of a store opened directly, handed to `page` a page at a time.
fn list_direct(store: &store::Store, mut page: impl FnMut(Vec<Entry>) -> CliResult) -> CliResult {
    let mut after: Option<SegmentId> = None;
    loop {
        let rows = store.quarantined_after(after.as_ref(), QUARANTINE_PAGE_ITEMS)?;
        let Some((last, _)) = rows.last() else {
            return Ok(());
        };
        after = Some(*last);
        let mut entries = Vec::with_capacity(rows.len());
        for (id, _) in &rows {
            if let Some(q) = store.quarantined_segment(id)? {
                entries.push(Entry::from_store(&q));
            }
        }
        page(entries)?;
    }
}

pub fn show(config: &ConfigArg, prefix: &str, as_json: bool) -> CliResult {
    let cfg = Config::load(&config.config)?;
    let entry = match super::client::connect(&cfg)? {
        Some(mut daemon) => parse::<Entry>(daemon.call(&Request::QuarantineShow {
            id: prefix.to_owned(),
        })?)?,
        None => {
            let store = super::open_store_direct(&cfg, super::Direct::Existing)?;
            let found = show_direct(&store, prefix);
            store.close();
            found?
        }
    };
    if as_json {
        return super::print_stdout(&(json(&entry)? + "\n"));
    }
    super::print_stdout(&entry.render_full())
}

fn show_direct(store: &store::Store, prefix: &str) -> CliResult<Entry> {
    let id = store.resolve_quarantined(prefix)?;
    let q = store
        .quarantined_segment(&id)?
        .ok_or_else(|| store::StoreError::NotQuarantined(prefix.to_owned()))?;
    Ok(Entry::from_store(&q))
}

pub fn purge(config: &ConfigArg, ids: &[String], all: bool, as_json: bool) -> CliResult {
    let cfg = Config::load(&config.config)?;
    let report = match super::client::connect(&cfg)? {
        Some(mut daemon) => parse::<PurgeReport>(daemon.call(&Request::QuarantinePurge {
            ids: ids.to_vec(),
            all,
        })?)?,
        None => {
            let store = super::open_store_direct(&cfg, super::Direct::Existing)?;
            let purged = quarantine::purge(&store, ids, all);
            store.close();
            purged?
        }
    };
    if as_json {
        return super::print_stdout(&(json(&report)? + "\n"));
    }
    super::print_stdout(&format!(
        "{} quarantined segment(s) purged, {} freed\n",
        report.purged,
        output::bytes(report.bytes_freed)
    ))
}

fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> CliResult<T> {
    serde_json::from_value(v).map_err(|e| {
        Failure::failed(anyhow::anyhow!(
            "the daemon's answer about quarantine did not parse: {e}"
        ))
    })
}

fn json<T: serde::Serialize>(v: &T) -> CliResult<String> {
    serde_json::to_string_pretty(v).map_err(Failure::failed)
}
