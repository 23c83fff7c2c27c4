//! `edged segments`: what this node stores.

use std::io::Write as _;

use serde::Serialize;

use crate::cli::SegmentsArgs;
use crate::config::Config;
use crate::daemon::lifecycle_view::{self, LifecycleFields};
use crate::exit::{CliResult, Failure};
use crate::output;
use crate::output::format_ms;

/// Rows read from the index at a time when no daemon runs.
pub const LIST_PAGE_ITEMS: usize = crate::control::CONTROL_LIST_PAGE_ITEMS;

#[derive(Debug, Serialize)]
struct Row {
    id: String,
    name: String,
    channel: String,
    bytes: u64,
    priority: u8,
    condition: String,
    source: String,
    stored_at: String,
    propagated_at: Option<String>,
    pinned_by: Vec<String>,
    #[serde(flatten)]
    lifecycle: LifecycleFields,
}

pub fn run(args: &SegmentsArgs) -> CliResult {
    let cfg = Config::load(&args.config.config)?;
    if args.recalled {
        return recalled(&cfg, args.json);
    }
    if let Some(mut daemon) = super::client::connect(&cfg)? {
        return super::query::segments_from_daemon(&mut daemon, args.json);
    }
    let store = super::open_store_direct(&cfg, super::Direct::Existing)?;
    let listed = print_direct(&store, args.json);
    store.close();
    listed
}

/// Lists the data directory's own index (no daemon runs), printed as it is read.
fn print_direct(store: &store::Store, json: bool) -> CliResult {
    let mut out = std::io::BufWriter::new(output::stdout());
    let write_err = |e: std::io::Error| Failure::failed(anyhow::anyhow!("cannot write: {e}"));
    if json {
        let mut array = output::JsonArray::new(&mut out);
        each_page(store, |rows| {
            for r in &rows {
                array.item(r)?;
            }
            array.flush()
        })?;
        array.finish().map_err(write_err)?;
        return Ok(());
    }
    let mut table = output::TableStream::new(&[
        "segment",
        "name",
        "channel",
        "size",
        "condition",
        "propagated",
        "from",
        "state",
    ]);
    let count = each_page(store, |rows| {
        let cells: Vec<Vec<String>> = rows
            .into_iter()
            .map(|r| {
                vec![
                    r.id.chars().take(12).collect(),
                    r.name,
                    r.channel,
                    output::bytes(r.bytes),
                    r.condition,
                    r.propagated_at.unwrap_or_else(|| "no".into()),
                    r.source,
                    state(&r.lifecycle),
                ]
            })
            .collect();
        out.write_all(table.page(&cells).as_bytes())?;
        out.flush()
    })?;
    out.write_all(table.finish().as_bytes())
        .and_then(|()| writeln!(out, "{count} segment(s)"))
        .and_then(|()| out.flush())
        .map_err(write_err)
}

/// Calls `page` with the store's rows, [`LIST_PAGE_ITEMS`] at a time in id order; returns how
/// many there were.
fn each_page(
    store: &store::Store,
    mut page: impl FnMut(Vec<Row>) -> std::io::Result<()>,
) -> CliResult<u64> {
    let mut after = None;
    let mut count = 0u64;
    loop {
        let segments = store.list_after(after.as_ref(), LIST_PAGE_ITEMS)?;
        let Some(last) = segments.last() else {
            return Ok(count);
        };
        after = Some(last.id);
        count += segments.len() as u64;
        let rows = segments
            .into_iter()
            .map(|s| {
                let lifecycle = lifecycle_view::fields(store, &s)?;
                Ok(Row {
                    id: s.id.to_string(),
                    name: s.row.name,
                    channel: s.row.channel,
                    bytes: s.row.file_len,
                    priority: s.row.priority,
                    condition: s.row.condition.to_string(),
                    source: s.row.source,
                    stored_at: format_ms(s.row.stored_at_ms),
                    propagated_at: s.row.propagated_at_ms.map(format_ms),
                    pinned_by: s.pins,
                    lifecycle,
                })
            })
            .collect::<Result<_, store::StoreError>>()?;
        page(rows).map_err(|e| Failure::failed(anyhow::anyhow!("cannot write: {e}")))?;
    }
}

/// The `state` column of a segment read from the data directory (as the daemon's listing
/// words it, less the deliveries it alone tracks live).
fn state(f: &LifecycleFields) -> String {
    let words = lifecycle_view::words(Some(&f.kind), f.superseded_by.as_deref());
    if words.is_empty() {
        "current".into()
    } else {
        words.join("; ")
    }
}

/// `edged segments --recalled`: the recalled ids, from the daemon or the data directory.
fn recalled(cfg: &Config, json: bool) -> CliResult {
    let rows: Vec<serde_json::Value> = match super::client::connect(cfg)? {
        Some(mut client) => {
            let mut rows = Vec::new();
            client.list(&crate::control::Request::Recalled, |items| {
                rows.extend(items);
                Ok(())
            })?;
            rows
        }
        None => {
            let store = super::open_store_direct(cfg, super::Direct::Existing)?;
            let rows = lifecycle_view::recalled(&store);
            store.close();
            rows?
        }
    };
    if rows.len() >= lifecycle_view::RECALLED_LIST_MAX {
        eprintln!(
            "edged: the first {} recalled ids are listed; there may be more",
            lifecycle_view::RECALLED_LIST_MAX
        );
    }
    if json {
        output::outln!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(Failure::failed)?
        );
        return Ok(());
    }
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let short = |v: &serde_json::Value| s(v).chars().take(12).collect::<String>();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                short(&r["id"]),
                s(&r["channel"]),
                short(&r["recall"]),
                s(&r["at"]),
                if r["held"].as_bool() == Some(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
            ]
        })
        .collect();
    output::out!(
        "{}",
        output::table(
            &["segment", "channel", "recalled by", "at", "was held"],
            &cells
        )
    );
    output::outln!("{} recalled segment(s)", rows.len());
    Ok(())
}
