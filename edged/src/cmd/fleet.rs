//! `edged fleet`: is it everywhere yet? The fleet view of the receipt book, from the daemon or,
//! when none runs, from this node's own store.

use std::io::Write;

use base::Clock as _;
use serde_json::Value;

use crate::cli::FleetArgs;
use crate::config::Config;
use crate::control::Request;
use crate::exit::{CliResult, Failure, USAGE};
use crate::fleetview::{FLEET_PAGE_SEGMENTS, Query, WalkError, walk};
use crate::output::{self, format_ms};

pub fn run(args: &FleetArgs) -> CliResult {
    let cfg = Config::load(&args.config.config)?;
    let query = match (&args.segment, &args.node) {
        (Some(s), _) => Query::Segment(s.clone()),
        (None, Some(n)) => Query::Node(n.clone()),
        (None, None) => Query::All,
    };
    let mut printer = Printer::new(query.clone(), args.json);
    if let Some(mut daemon) = super::client::connect(&cfg)? {
        daemon.list(&Request::Fleet { query }, |items| {
            items.into_iter().try_for_each(|item| printer.item(item))
        })?;
        return printer.finish();
    }
    if cfg.net.receipt_interval_ms == 0 {
        return Err(Failure::new(
            USAGE,
            anyhow::anyhow!("fleet receipts are off on this node ([fleet] gossip_interval_ms = 0)"),
        ));
    }
    let store = super::open_store_direct(&cfg, super::Direct::Existing)?;
    let limits = net::receipts::book::BookLimits {
        nodes_max: cfg.net.fleet_nodes_max,
        receipts_per_node_max: cfg.net.receipts_per_node_max,
    };
    let walked = net::receipts::book::Book::open(store.clone(), limits)
        .map_err(Failure::from)
        .and_then(|book| {
            let now = base::SystemClock.now_ms();
            walk(&book, &store, &cfg, &query, now, |item| printer.item(item)).map_err(|e| match e {
                WalkError::Usage(m) => Failure::new(USAGE, anyhow::anyhow!(m)),
                WalkError::NotFound(m) => Failure::failed(anyhow::anyhow!(m)),
                WalkError::Store(e) => e.into(),
                WalkError::Emit(f) => f,
            })
        });
    store.close();
    walked?;
    eprintln!("(no daemon answers: this node's own book, as of its last run)");
    printer.finish()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// "2026-12-05T02:30:00Z (12 s ago)".
fn when(at: &Value, now: u64) -> String {
    match at.as_u64() {
        None => "-".into(),
        Some(at) => {
            let age = std::time::Duration::from_secs(now.saturating_sub(at) / 1000);
            format!(
                "{} ({} ago)",
                format_ms(at),
                humantime::format_duration(age)
            )
        }
    }
}

/// Renders the items as they come: the header first, then a table (or JSON).
struct Printer {
    query: Query,
    json: bool,
    out: std::io::BufWriter<output::Stdout>,
    header: Option<Value>,
    table: output::TableStream,
    rows: Vec<Vec<String>>,
    items: u64,
    counts: crate::fleetview::Counts,
    held: u64,
}

fn write_err(e: std::io::Error) -> Failure {
    Failure::failed(anyhow::anyhow!("cannot write: {e}"))
}

impl Printer {
    fn new(query: Query, json: bool) -> Printer {
        let columns: &[&str] = match query {
            Query::All => &[
                "segment",
                "name",
                "held",
                "verdict",
                "newest receipt",
                "missing",
            ],
            Query::Segment(_) => &["node", "state", "receipt", "last heard from"],
            Query::Node(_) => &["segment", "name", "state", "receipt"],
        };
        Printer {
            query,
            json,
            out: std::io::BufWriter::new(output::stdout()),
            header: None,
            table: output::TableStream::new(columns),
            rows: Vec::new(),
            items: 0,
            counts: Default::default(),
            held: 0,
        }
    }

    fn item(&mut self, item: Value) -> CliResult {
        let Some(header) = &self.header else {
            self.start(item)?;
            return Ok(());
        };
        self.items += 1;
        if self.json {
            let sep = if self.items > 1 { "," } else { "" };
            return write!(self.out, "{sep}{item}").map_err(write_err);
        }
        let now = header["now_ms"].as_u64().unwrap_or(0);
        match &self.query {
            Query::All => {
                let verdict = match item["kind"].as_str() {
                    Some("everywhere") => net::receipts::verdict::Verdict::Everywhere,
                    Some("unknown") => net::receipts::verdict::Verdict::Unknown {
                        held: item["held"].as_u64().unwrap_or(0),
                        of: item["of"].as_u64().unwrap_or(0),
                    },
                    _ => net::receipts::verdict::Verdict::Partial {
                        held: item["held"].as_u64().unwrap_or(0),
                        of: item["of"].as_u64().unwrap_or(0),
                    },
                };
                self.counts.add(&verdict);
                let missing: Vec<String> = item["missing"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect())
                    .unwrap_or_default();
                // Each member's receipt time is in --segment and --json; the table shows the
                // newest, which says how fresh the verdict is.
                let newest = item["members"]
                    .as_array()
                    .and_then(|m| m.iter().filter_map(|m| m["at_ms"].as_u64()).max());
                self.rows.push(vec![
                    s(&item["segment"]).chars().take(12).collect(),
                    s(&item["name"]),
                    format!("{}/{}", s(&item["held"]), s(&item["of"])),
                    s(&item["verdict"]),
                    when(&newest.map_or(Value::Null, Value::from), now),
                    missing.join(" "),
                ]);
            }
            Query::Segment(_) => {
                let members = item["members"].as_array().cloned().unwrap_or_default();
                let name = s(&item["name"]);
                writeln!(
                    self.out,
                    "segment {} ({}): {}",
                    s(&item["segment"]),
                    name,
                    s(&item["verdict"])
                )
                .map_err(write_err)?;
                for m in members {
                    let mut state = s(&m["state"]).replace('_', " ");
                    if m["silent"].as_bool() == Some(true) {
                        state.push_str(" (silent)");
                    }
                    self.rows.push(vec![
                        s(&m["node"]),
                        state,
                        when(&m["at_ms"], now),
                        when(&m["heard_at_ms"], now),
                    ]);
                }
            }
            Query::Node(_) => {
                if item["state"] == "holds" {
                    self.held += 1;
                }
                self.rows.push(vec![
                    s(&item["segment"]).chars().take(12).collect(),
                    s(&item["name"]),
                    s(&item["state"]).replace('_', " "),
                    when(&item["at_ms"], now),
                ]);
            }
        }
        if self.rows.len() >= FLEET_PAGE_SEGMENTS {
            self.flush_rows()?;
        }
        Ok(())
    }

    fn start(&mut self, header: Value) -> CliResult {
        if self.json {
            // The header's fields, then the items as "segments": one JSON object in all.
            let mut head = header.clone();
            if let Query::Node(n) = &self.query {
                head["node"] = Value::String(n.clone());
            }
            let text = head.to_string();
            let body = text.strip_suffix('}').unwrap_or(&text);
            let comma = if body.len() > 1 { "," } else { "" };
            write!(self.out, "{body}{comma}\"segments\":[").map_err(write_err)?;
        } else {
            let roster = &header["roster"];
            let members: Vec<String> = roster["members"]
                .as_array()
                .map(|a| a.iter().map(s).collect())
                .unwrap_or_default();
            writeln!(
                self.out,
                "roster ({}, {} nodes): {}",
                s(&roster["source"]),
                members.len(),
                members.join(" ")
            )
            .map_err(write_err)?;
        }
        self.header = Some(header);
        Ok(())
    }

    fn flush_rows(&mut self) -> CliResult {
        let rows = std::mem::take(&mut self.rows);
        self.out
            .write_all(self.table.page(&rows).as_bytes())
            .map_err(write_err)
    }

    fn finish(mut self) -> CliResult {
        if self.json {
            return writeln!(self.out, "]}}")
                .and_then(|()| self.out.flush())
                .map_err(write_err);
        }
        self.flush_rows()?;
        self.out
            .write_all(self.table.finish().as_bytes())
            .map_err(write_err)?;
        let footer = match &self.query {
            Query::All => {
                let c = &self.counts;
                // Segments no member holds are not counted by verdict (as in `status` and the
                // metrics); said apart so the figures add up.
                let none = self.items - (c.everywhere + c.partial + c.unknown);
                let mut line = format!(
                    "{} segment(s): {} everywhere, {} partial, {} unknown",
                    self.items, c.everywhere, c.partial, c.unknown
                );
                if none > 0 {
                    line.push_str(&format!(
                        ", {none} held by no member (gone everywhere, or stored here before its receipt)"
                    ));
                }
                line
            }
            Query::Segment(_) => String::new(),
            Query::Node(n) => format!(
                "{n} holds {} of the {} segment(s) receipts name",
                self.held, self.items
            ),
        };
        if !footer.is_empty() {
            writeln!(self.out, "{footer}").map_err(write_err)?;
        }
        self.out.flush().map_err(write_err)
    }
}
