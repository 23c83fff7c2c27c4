//! `edged segments`: what this node stores.

use std::io::Write as _;

use serde::Serialize;

use crate::cli::SegmentsArgs;
use crate::config::Config;
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
}

pub fn run(args: &SegmentsArgs) -> CliResult {
    let cfg = Config::load(&args.config.config)?;
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
            .map(|s| Row {
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
            })
            .collect();
        page(rows).map_err(|e| Failure::failed(anyhow::anyhow!("cannot write: {e}")))?;
    }
}
