//! `edged status | peers | dlq …`: questions to the running daemon, as tables or JSON.
//!
//! Tables escape every cell and the other lines escape what they show ([`output::escape`]); JSON
//! is printed as the daemon sent it.

use crate::output::{out, outln};
use std::io::Write as _;

use serde_json::Value;

use super::client;
use crate::cli::{ConfigArg, DlqTarget, QueryArgs};
use crate::config::Config;
use crate::control::Request;
use crate::exit::{CliResult, Failure, USAGE};
use crate::output::format_ms;
use crate::output::{self, Escaped};

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn print_json(v: &Value) {
    outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Asks the daemon. With `--json` the answer is printed as is and `None` returned; otherwise
/// the caller renders it.
fn ask(config: &ConfigArg, json: bool, request: &Request) -> CliResult<Option<Value>> {
    let cfg = Config::load(&config.config)?;
    let v = client::require(&cfg)?.call(request)?;
    if json {
        print_json(&v);
        return Ok(None);
    }
    Ok(Some(v))
}

/// The `fleet` line of `status`: segments by verdict and the roster they are judged against.
fn fleet_line(f: &Value) -> String {
    if f.is_null() {
        return "not computed yet (or receipts off): see `edged fleet`".into();
    }
    format!(
        "{} everywhere, {} partial, {} unknown (roster: {}, {} nodes)",
        u(&f["everywhere"]),
        u(&f["partial"]),
        u(&f["unknown"]),
        s(&f["roster"]),
        u(&f["roster_size"])
    )
}

pub fn status(args: &QueryArgs) -> CliResult {
    let Some(v) = ask(&args.config, args.json, &Request::Status)? else {
        return Ok(());
    };
    let rows = vec![
        vec!["node".into(), s(&v["node_id"])],
        vec![
            "uptime".into(),
            humantime::format_duration(std::time::Duration::from_secs(u(&v["uptime_s"])))
                .to_string(),
        ],
        vec![
            "peers".into(),
            format!(
                "{} connected / {} known",
                u(&v["peers_connected"]),
                u(&v["peers_known"])
            ),
        ],
        vec![
            "segments".into(),
            format!(
                "{} stored, {} propagated, {} pending",
                u(&v["segments_stored"]),
                u(&v["segments_propagated"]),
                u(&v["segments_pending"])
            ),
        ],
        vec![
            "jobs".into(),
            format!(
                "{} pending ({} trying now, {} waiting)",
                u(&v["jobs_pending"]),
                u(&v["jobs_in_flight"]),
                u(&v["jobs_waiting"])
            ),
        ],
        vec![
            "disk".into(),
            format!(
                "{} used / {} ceiling",
                output::bytes(u(&v["bytes_used"])),
                output::bytes(u(&v["ceiling_bytes"]))
            ),
        ],
        vec!["dead letters".into(), u(&v["dead_letters"]).to_string()],
        vec!["fleet".into(), fleet_line(&v["fleet"])],
        vec!["trust".into(), s(&v["trust"])],
        vec!["scrub".into(), s(&v["scrub"]["line"])],
    ];
    out!(
        "{}",
        output::table(&["", ""], &rows)
            .split_once('\n')
            .map_or("", |(_, rest)| rest)
    );
    if let Some(warnings) = v["warnings"].as_array() {
        for w in warnings {
            outln!("WARNING: {}", Escaped(&s(w)));
        }
    }
    Ok(())
}

pub fn peers(args: &QueryArgs) -> CliResult {
    let Some(v) = ask(&args.config, args.json, &Request::Peers)? else {
        return Ok(());
    };
    let rows: Vec<Vec<String>> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    vec![
                        s(&p["id"]),
                        s(&p["addr"]),
                        if p["connected"].as_bool() == Some(true) {
                            "connected".into()
                        } else {
                            "down".into()
                        },
                        s(&p["last_failure"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out!(
        "{}",
        output::table(&["peer", "address", "state", "last failure"], &rows)
    );
    Ok(())
}

/// A listing from the daemon printed as its pages arrive: with `--json` one JSON array (the
/// items as the daemon sent them), otherwise a table of `row(item)` and the line
/// `footer(count)`. Memory holds one page.
fn stream_listing(
    client: &mut client::Client,
    request: &Request,
    json: bool,
    header: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
    footer: impl Fn(u64) -> String,
) -> CliResult {
    let mut out = std::io::BufWriter::new(output::stdout());
    let write_err = |e: std::io::Error| Failure::failed(anyhow::anyhow!("cannot write: {e}"));
    if json {
        let mut array = output::JsonArray::new(&mut out);
        client.list(request, |items| {
            for item in &items {
                array.item(item).map_err(write_err)?;
            }
            array.flush().map_err(write_err)
        })?;
        array.finish().map_err(write_err)?;
        return Ok(());
    }
    let mut table = output::TableStream::new(header);
    let count = client.list(request, |items| {
        let rows: Vec<Vec<String>> = items.iter().map(&row).collect();
        out.write_all(table.page(&rows).as_bytes())
            .and_then(|()| out.flush())
            .map_err(write_err)
    })?;
    out.write_all(table.finish().as_bytes())
        .and_then(|()| writeln!(out, "{}", footer(count)))
        .and_then(|()| out.flush())
        .map_err(write_err)
}

/// A segment's lifecycle in words: superseded, and its local deliveries.
fn lifecycle(r: &Value) -> String {
    let mut parts =
        crate::daemon::lifecycle_view::words(r["kind"].as_str(), r["superseded_by"].as_str());
    for d in r["delivery"].as_array().into_iter().flatten() {
        parts.push(s(&d["state"]));
    }
    if parts.is_empty() {
        "current".into()
    } else {
        parts.join("; ")
    }
}

/// Per-segment propagation, from the daemon (peers acked / pending / dead), as it arrives.
pub fn segments_from_daemon(client: &mut client::Client, json: bool) -> CliResult {
    let row = |r: &Value| {
        vec![
            s(&r["id"]).chars().take(12).collect(),
            s(&r["name"]),
            s(&r["channel"]),
            output::bytes(u(&r["bytes"])),
            s(&r["condition"]),
            format!(
                "{}/{}/{}",
                u(&r["peers_acked"]),
                u(&r["peers_pending"]),
                u(&r["peers_dead"])
            ),
            r["propagated_at_ms"]
                .as_u64()
                .map(format_ms)
                .unwrap_or_else(|| "no".into()),
            s(&r["source"]),
            lifecycle(r),
        ]
    };
    stream_listing(
        client,
        &Request::Segments,
        json,
        &[
            "segment",
            "name",
            "channel",
            "size",
            "condition",
            "acked/pending/dead",
            "propagated",
            "from",
            "state",
        ],
        row,
        |n| format!("{n} segment(s)"),
    )
}

pub fn dlq_list(args: &QueryArgs) -> CliResult {
    let cfg = Config::load(&args.config.config)?;
    let mut client = client::require(&cfg)?;
    let row = |d: &Value| {
        vec![
            s(&d["segment"]).chars().take(12).collect(),
            s(&d["peer"]),
            u(&d["attempts"]).to_string(),
            d["dead_at_ms"].as_u64().map(format_ms).unwrap_or_default(),
            s(&d["last_error"]),
        ]
    };
    stream_listing(
        &mut client,
        &Request::DlqList,
        args.json,
        &["segment", "peer", "attempts", "dead since", "last error"],
        row,
        |n| format!("{n} dead letter(s)"),
    )
}

pub fn dlq_act(target: &DlqTarget, requeue: bool) -> CliResult {
    // Checked here for a clear message before anything is asked; the daemon checks again (the
    // control socket is a door of its own).
    target
        .peer
        .parse::<relay::NodeId>()
        .map_err(|e| Failure::new(USAGE, anyhow::anyhow!("--peer {:?}: {e}", target.peer)))?;
    if let Some(segment) = &target.segment {
        store::id::parse_prefix(segment).map_err(|e| {
            Failure::new(
                USAGE,
                anyhow::anyhow!(
                    "--segment {segment:?}: {e}; omit --segment to act on every dead letter of the peer"
                ),
            )
        })?;
    }
    let request = if requeue {
        Request::DlqRequeue {
            peer: target.peer.clone(),
            segment: target.segment.clone(),
        }
    } else {
        Request::DlqPurge {
            peer: target.peer.clone(),
            segment: target.segment.clone(),
        }
    };
    let cfg = Config::load(&target.config.config)?;
    let mut client = client::require(&cfg)?;
    if target.json {
        return stream_listing(
            &mut client,
            &request,
            true,
            &[],
            |_| Vec::new(),
            |_| String::new(),
        );
    }
    let count = client.list(&request, |items| {
        for r in &items {
            let seg: String = s(&r["segment"]).chars().take(12).collect();
            let line = format!("{seg} {} {}", s(&r["peer"]), s(&r["result"]).to_lowercase());
            outln!("{}", Escaped(&line));
        }
        Ok(())
    })?;
    // The daemon refuses an unknown peer (exit 2); a known one with nothing dead is no failure.
    if count == 0 {
        let segment = target
            .segment
            .as_ref()
            .map(|p| format!(" and segment {p}"))
            .unwrap_or_default();
        let done = if requeue { "requeued" } else { "purged" };
        let line = format!(
            "no dead letters for peer {}{segment}; nothing {done}",
            target.peer
        );
        outln!("{}", Escaped(&line));
    }
    Ok(())
}
