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
    let mut entries = Vec::new();
    match super::client::connect(&cfg)? {
        Some(mut daemon) => {
            daemon.list(&Request::QuarantineList, |items| {
                for item in items {
                    entries.push(parse::<Entry>(item)?);
                }
                Ok(())
            })?;
        }
        None => {
            let store = super::open_store_direct(&cfg, super::Direct::Existing)?;
            let listed = list_direct(&store, &mut entries);
            store.close();
            listed?;
        }
    }
    if args.json {
        return super::print_stdout(&(json(&entries)? + "\n"));
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
    let mut text = String::new();
    if !rows.is_empty() {
        text.push_str(&output::table(
            &["segment", "name", "quarantined", "file", "reason"],
            &rows,
        ));
    }
    text.push_str(&format!("{} quarantined segment(s)\n", entries.len()));
    super::print_stdout(&text)
}

/// Every quarantined segment of a store opened directly, a page of records at a time.
fn list_direct(store: &store::Store, entries: &mut Vec<Entry>) -> CliResult {
    let mut after: Option<SegmentId> = None;
    loop {
        let page = store.quarantined_after(after.as_ref(), QUARANTINE_PAGE_ITEMS)?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        after = Some(*last);
        for (id, _) in &page {
            if let Some(q) = store.quarantined_segment(id)? {
                entries.push(Entry::from_store(&q));
            }
        }
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
        .ok_or(store::StoreError::NotFound(id))?;
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
