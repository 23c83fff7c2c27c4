//! `edged segments`: what this node stores.

use serde::Serialize;

use crate::cli::SegmentsArgs;
use crate::config::Config;
use crate::exit::{CliResult, Failure};
use crate::output;
use crate::output::format_ms;

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
        let v = daemon.call(&crate::control::Request::Segments)?;
        return super::query::segments_from_daemon(&v, args.json);
    }
    let store = super::open_store_direct(&cfg)?;
    let rows: Vec<Row> = store
        .list()?
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
    store.close();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(Failure::failed)?
        );
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id[..12].to_owned(),
                r.name.clone(),
                r.channel.clone(),
                output::bytes(r.bytes),
                r.condition.clone(),
                r.propagated_at.clone().unwrap_or_else(|| "no".into()),
                r.source.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(
            &[
                "segment",
                "name",
                "channel",
                "size",
                "condition",
                "propagated",
                "from"
            ],
            &table
        )
    );
    println!("{} segment(s)", rows.len());
    Ok(())
}
