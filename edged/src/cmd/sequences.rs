//! `edged sequences`: the highest sequence seen per publisher, channel and name (what a
//! rollback is refused against), with the last changes. From the running daemon, or from the
//! data directory itself when none runs.

use serde_json::{Value, json};
use store::lifecycle::SequenceRow;

use crate::cli::SequencesArgs;
use crate::config::Config;
use crate::control::Request;
use crate::exit::{CliResult, Failure};
use crate::output::{self, format_ms, outln};

/// One row as the listing carries it.
pub fn row_json(row: &SequenceRow) -> Value {
    json!({
        "channel": row.channel,
        "name": row.name,
        "publisher": row.publisher.to_string(),
        "highest": row.highest,
        "highest_id": row.highest_id.to_string(),
        "history": row.history.iter().map(|e| json!({
            "sequence": e.sequence,
            "id": e.id.to_string(),
            "at_ms": e.at_ms,
        })).collect::<Vec<_>>(),
    })
}

pub fn run(args: &SequencesArgs) -> CliResult {
    let cfg = Config::load(&args.config.config)?;
    let rows: Vec<Value> = match super::client::connect(&cfg)? {
        Some(mut client) => {
            let mut rows = Vec::new();
            client.list(
                &Request::Sequences {
                    channel: args.channel.clone(),
                },
                |items| {
                    rows.extend(items);
                    Ok(())
                },
            )?;
            rows
        }
        None => {
            let store = super::open_store_direct(&cfg, super::Direct::Existing)?;
            let rows = store.sequences(args.channel.as_deref());
            store.close();
            rows.map_err(Failure::failed)?
                .iter()
                .map(row_json)
                .collect()
        }
    };
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(Failure::failed)?
        );
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!("no sequence seen yet");
        return Ok(());
    }
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    for r in &rows {
        outln!(
            "{} / {}  by {}  highest {} ({})",
            s(&r["channel"]),
            output::Escaped(&s(&r["name"])),
            s(&r["publisher"]),
            r["highest"],
            s(&r["highest_id"]).chars().take(12).collect::<String>()
        );
        for e in r["history"].as_array().into_iter().flatten() {
            outln!(
                "    {:>20}  {}  {}",
                e["sequence"],
                s(&e["id"]).chars().take(12).collect::<String>(),
                e["at_ms"].as_u64().map(format_ms).unwrap_or_default()
            );
        }
    }
    Ok(())
}
