//! Sneakernet need-lists (file layout in [`crate::needlist`]):
//!
//! - `edged export --need-list DIR` writes this node's `<node-id>.need` into DIR;
//! - `edged export --for DIR` writes into DIR the stored segments the need-lists there lack,
//!   most important first, within a byte budget, and this node's own need-list;
//! - `edged import DIR` merges the receipts of the need-lists of other nodes ([`merge`]).
//!
//! Each works through the running daemon (paged listings and bounded merge requests on the
//! control socket) or, without one, directly on the data directory.

use crate::output::{out, outln};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use base::Clock as _;
use serde::Serialize;
use serde_json::Value;
use store::{ExportDir, Exported, SegmentId};

use super::client::{self, Client};
use crate::cli::ConfigArg;
use crate::config::Config;
use crate::control::{CONTROL_NEED_MERGE_CERTS_MAX, CONTROL_NEED_MERGE_RECEIPTS_MAX, Request};
use crate::exit::{CONFIG, CliResult, Failure};
use crate::needlist::{
    self, Candidate, NEED_EXTENSION, NEED_PAGE_ITEMS, NeedList, ReceiptItem, ReceiptsCollector,
};
use crate::{output, progress};

/// Bytes of DIR's file system `export --for` leaves free when no `--max-bytes` is given: room
/// for the file system's own bookkeeping and a need-list written on the way back.
pub const NEED_FOR_RESERVE_BYTES: u64 = 1 << 20;
/// Need-list files read from one directory at most.
pub const NEED_FILES_MAX: usize = 1024;

/// Where a need-list's contents come from and segments are read: the running daemon, or the
/// data directory (with the node's receipts, when they are on).
enum Source {
    Daemon(Client),
    Direct {
        store: store::Store,
        fleet: Option<Arc<net::receipts::gossip::Fleet>>,
    },
}

impl Source {
    /// The daemon if one answers; otherwise the store, with this node's receipts brought up to
    /// date first (the daemon would have made them: an offline import leaves them owed).
    fn open(cfg: &Config) -> CliResult<Source> {
        if let Some(c) = client::connect(cfg)? {
            return Ok(Source::Daemon(c));
        }
        let store = super::open_store_direct(cfg, super::Direct::Existing)?;
        let fleet = match open_fleet(cfg, &store) {
            Ok(f) => f,
            Err(e) => {
                store.close();
                return Err(e);
            }
        };
        if let Some(f) = &fleet {
            f.reconcile(&store, base::SystemClock.now_ms(), true)?;
        }
        Ok(Source::Direct { store, fleet })
    }

    fn close(self) {
        if let Source::Direct { store, .. } = self {
            store.close();
        }
    }
}

/// The node's receipts in `store`, or `None` when they are off (`net.receipt_interval_ms = 0`).
fn open_fleet(
    cfg: &Config,
    store: &store::Store,
) -> CliResult<Option<Arc<net::receipts::gossip::Fleet>>> {
    if cfg.net.receipt_interval_ms == 0 {
        return Ok(None);
    }
    let identity = cfg.node_identity()?;
    let fleet = net::receipts::gossip::Fleet::open(store.clone(), &identity, &cfg.net)
        .map_err(Failure::failed)?;
    Ok(Some(fleet))
}

fn node_id(cfg: &Config) -> CliResult<net::pki::NodeId> {
    cfg.node_id
        .parse()
        .map_err(|e| Failure::new(CONFIG, anyhow::anyhow!("node_id {:?}: {e}", cfg.node_id)))
}

/// This node's need-list, and how many receipts or certificates did not fit in it.
fn gather(cfg: &Config, source: &mut Source) -> CliResult<(NeedList, u64)> {
    let node = node_id(cfg)?;
    let mut held: Vec<[u8; 32]> = Vec::new();
    let mut collected = ReceiptsCollector::default();
    match source {
        Source::Daemon(client) => {
            client.list(&Request::NeedHeld, |page| {
                for v in page {
                    held.push(parse_id(&v)?.0);
                }
                Ok(())
            })?;
            client.list(&Request::NeedReceipts, |page| {
                for v in page {
                    let item = match (v["cert"].as_str(), v["receipt"].as_str()) {
                        (Some(h), None) => ReceiptItem::Cert(unhex(h)?),
                        (None, Some(h)) => ReceiptItem::Receipt(unhex(h)?),
                        _ => return Err(unexpected(&v)),
                    };
                    // Past the bound the daemon's pages still come; they are counted.
                    collected.push(item);
                }
                Ok(())
            })?;
        }
        Source::Direct { store, fleet } => {
            needlist::walk_held::<Failure>(store, NEED_PAGE_ITEMS, |id| {
                held.push(id.0);
                Ok(())
            })?;
            if let Some(f) = fleet {
                needlist::walk_receipts::<Failure>(
                    &f.book,
                    f.node(),
                    NEED_PAGE_ITEMS,
                    NEED_PAGE_ITEMS * net::receipts::SIGNED_RECEIPT_BYTES_MAX,
                    |item| Ok(collected.push(item)),
                )?;
            }
        }
    }
    let list = NeedList {
        node,
        created_at_ms: base::SystemClock.now_ms(),
        held,
        receipts: collected.receipts,
        certs: collected.certs,
    };
    Ok((list, collected.left_out))
}

fn parse_id(v: &Value) -> CliResult<SegmentId> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| unexpected(v))
}

fn unhex(h: &str) -> CliResult<Vec<u8>> {
    hex::decode(h).map_err(|e| Failure::failed(anyhow::anyhow!("the daemon sent bad hex: {e}")))
}

fn unexpected(v: &Value) -> Failure {
    Failure::failed(anyhow::anyhow!("unexpected item from the daemon: {v}"))
}

/// What a written need-list holds, as reported.
#[derive(Debug, Serialize)]
struct Written {
    file: String,
    node: String,
    held: usize,
    receipts: usize,
    certs: usize,
    receipts_left_out: u64,
    /// Receipt entries (one per segment or liveness statement) per node they are about.
    receipts_by_node: BTreeMap<String, u64>,
}

/// Encodes and writes `list` into `dir` atomically.
fn write(dir: &ExportDir, list: &NeedList, left_out: u64) -> CliResult<Written> {
    let bytes = list.encode().map_err(Failure::failed)?;
    let path = dir
        .write_file(&NeedList::file_name(&list.node), &bytes)
        .map_err(Failure::failed)?;
    let mut by_node = BTreeMap::new();
    for r in &list.receipts {
        if let Ok(receipt) = net::receipts::SignedReceipt::decode(r).and_then(|s| s.receipt()) {
            *by_node.entry(receipt.node.to_string()).or_insert(0) += receipt.entries.len() as u64;
        }
    }
    Ok(Written {
        file: path.display().to_string(),
        node: list.node.to_string(),
        held: list.held.len(),
        receipts: list.receipts.len(),
        certs: list.certs.len(),
        receipts_left_out: left_out,
        receipts_by_node: by_node,
    })
}

/// `edged export --need-list DIR`.
pub fn write_need_list(config: &ConfigArg, dir: &Path, json: bool) -> CliResult {
    let dir = ExportDir::open(dir).map_err(Failure::failed)?;
    let cfg = Config::load(&config.config)?;
    let mut source = Source::open(&cfg)?;
    let gathered = gather(&cfg, &mut source);
    source.close();
    let (list, left_out) = gathered?;
    let w = write(&dir, &list, left_out)?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&w).map_err(Failure::failed)?
        );
    } else {
        outln!(
            "need-list written: {} ({} segment ids, {} receipts, {} certificates{})",
            output::escape(&w.file),
            w.held,
            w.receipts,
            w.certs,
            if left_out > 0 {
                format!("; {left_out} receipts left out, past the bound")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// One line of `export --for`'s report.
#[derive(Debug, Serialize)]
struct Line {
    /// A need-list file name or a segment id.
    item: String,
    /// `need-list`, `own need-list` or `segment`.
    kind: &'static str,
    /// `read`, `ignored`, `rejected`, `written`, `already there`, `skipped`, `failed`.
    result: &'static str,
    bytes: u64,
    detail: String,
}

/// The need-list files of DIR, by name, read and checked: a file that does not read is a line
/// of the report, never the end of the command.
fn read_lists(dir: &Path, own: &str, lines: &mut Vec<Line>) -> CliResult<Vec<NeedList>> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Failure::failed(anyhow::anyhow!("cannot list {}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry
            .map_err(|e| Failure::failed(anyhow::anyhow!("cannot list {}: {e}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_need_list(&name) {
            if names.len() >= NEED_FILES_MAX {
                return Err(Failure::failed(anyhow::anyhow!(
                    "{} holds more than {NEED_FILES_MAX} need-lists",
                    dir.display()
                )));
            }
            names.push(name);
        }
    }
    names.sort();
    let mut lists = Vec::new();
    for name in names {
        let line = |result, detail: String| Line {
            item: name.clone(),
            kind: "need-list",
            result,
            bytes: 0,
            detail,
        };
        match NeedList::read_file(&dir.join(&name)) {
            Ok(list) if list.node.as_str() == own => {
                lines.push(line("ignored", "written by this node".into()));
            }
            Ok(list) => {
                lines.push(line(
                    "read",
                    format!("{}: holds {} segments", list.node, list.held.len()),
                ));
                lists.push(list);
            }
            Err(e) => lines.push(line("rejected", e.to_string())),
        }
    }
    Ok(lists)
}

/// `edged export --for DIR [--max-bytes N]`.
pub fn export_for(
    config: &ConfigArg,
    dir_path: &Path,
    max_bytes: Option<u64>,
    json: bool,
) -> CliResult {
    let dir = ExportDir::open(dir_path).map_err(Failure::failed)?;
    let cfg = Config::load(&config.config)?;
    let mut lines = Vec::new();
    let lists = read_lists(dir_path, &cfg.node_id, &mut lines)?;
    let mut source = Source::open(&cfg)?;
    let bar = progress::bytes(0, "exporting", json);
    let result = answer(&cfg, &mut source, &dir, &lists, max_bytes, &mut lines, &bar);
    bar.finish_and_clear();
    source.close();
    result?;
    report(&lines, json)
}

/// Writes this node's need-list, then the segments the lists lack, into `dir`.
fn answer(
    cfg: &Config,
    source: &mut Source,
    dir: &ExportDir,
    lists: &[NeedList],
    max_bytes: Option<u64>,
    lines: &mut Vec<Line>,
    bar: &indicatif::ProgressBar,
) -> CliResult {
    let mut stored: Vec<Candidate> = Vec::new();
    match source {
        Source::Daemon(client) => {
            client.list(&Request::NeedStored, |page| {
                for v in page {
                    stored.push(serde_json::from_value(v).map_err(Failure::failed)?);
                }
                Ok(())
            })?;
        }
        Source::Direct { store, .. } => {
            needlist::walk_stored::<Failure>(store, NEED_PAGE_ITEMS, |c| {
                stored.push(c);
                Ok(())
            })?;
        }
    }
    // Which need-list nodes lack each stored segment (their ids are sorted: checked on read).
    let mut wanted: Vec<(Candidate, Vec<String>)> = stored
        .into_iter()
        .filter_map(|c| {
            let id: SegmentId = c.id.parse().ok()?;
            let lacking: Vec<String> = lists
                .iter()
                // Mutation point (INV-32): a need-list's holdings are ignored (everything is
                // written).
                .filter(|l| {
                    l.held.binary_search(&id.0).is_err()
                        || store::mutants::active("need_list_ignores_holdings")
                })
                .map(|l| l.node.to_string())
                .collect();
            (!lacking.is_empty()).then_some((c, lacking))
        })
        .collect();
    wanted.sort_by(|a, b| needlist::write_order(&a.0, &b.0));

    // This node's own need-list first: small, and what brings its receipts back.
    let own = gather(cfg, source).and_then(|(list, left_out)| write(dir, &list, left_out));
    match own {
        Ok(w) => lines.push(Line {
            item: NeedList::file_name(&node_id(cfg)?),
            kind: "own need-list",
            result: "written",
            bytes: 0,
            detail: format!("{} segment ids, {} receipts", w.held, w.receipts),
        }),
        Err(f) => lines.push(Line {
            item: cfg.node_id.clone(),
            kind: "own need-list",
            result: "failed",
            bytes: 0,
            detail: format!("{:#}", f.error),
        }),
    }
    let mut left = match max_bytes {
        Some(n) => n,
        None => dir
            .available_bytes()
            .map_err(Failure::failed)?
            .saturating_sub(NEED_FOR_RESERVE_BYTES),
    };
    let trusted = &cfg.store.trusted;
    let now = base::SystemClock.now_ms();
    for (c, lacking) in wanted {
        let line = |result, bytes, detail: String| Line {
            item: c.id.clone(),
            kind: "segment",
            result,
            bytes,
            detail,
        };
        let for_whom = format!("for {}", lacking.join(", "));
        let Ok(id) = c.id.parse::<SegmentId>() else {
            continue;
        };
        // A copy on the stick already (an earlier trip, another need-list) costs nothing.
        match dir.holds(&id, trusted) {
            Ok(true) => {
                lines.push(line("already there", 0, for_whom));
                continue;
            }
            Ok(false) => {}
            Err(e) => {
                lines.push(line("failed", 0, e.to_string()));
                continue;
            }
        }
        if c.file_len > left {
            lines.push(line(
                "skipped",
                0,
                format!(
                    "does not fit: {} bytes, {left} left ({for_whom})",
                    c.file_len
                ),
            ));
            continue;
        }
        let exported = match source {
            Source::Daemon(client) => {
                match super::export::export_one(client, &c.id, dir, trusted, bar) {
                    Ok(r) => r,
                    Err(cut) => {
                        // The connection is out of step: the next segment goes over a new one.
                        *client = client::require(cfg)?;
                        Err(format!("{:#}", cut.error))
                    }
                }
            }
            Source::Direct { store, .. } => {
                // The bar grows by each segment as it is begun (as the daemon's streams do):
                // what fits is known only then.
                bar.inc_length(c.file_len);
                store
                    .export_to_reporting(&id, dir, now, |n| bar.inc(n))
                    .map_err(|e| e.to_string())
            }
        };
        match exported {
            Ok(Exported::Written(_)) => {
                left -= c.file_len;
                lines.push(line("written", c.file_len, for_whom));
            }
            Ok(Exported::AlreadyThere(_)) => lines.push(line("already there", 0, for_whom)),
            Err(e) => lines.push(line("failed", 0, e)),
        }
    }
    Ok(())
}

fn report(lines: &[Line], json: bool) -> CliResult {
    let count = |r: &str| lines.iter().filter(|l| l.result == r).count();
    let bad = count("rejected") + count("failed");
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(lines).map_err(Failure::failed)?
        );
    } else {
        let rows: Vec<Vec<String>> = lines
            .iter()
            .map(|l| {
                let item = if l.kind == "segment" {
                    l.item.chars().take(12).collect()
                } else {
                    l.item.clone()
                };
                vec![
                    l.kind.to_owned(),
                    item,
                    l.result.to_owned(),
                    output::bytes(l.bytes),
                    l.detail.clone(),
                ]
            })
            .collect();
        out!(
            "{}",
            output::table(&["kind", "item", "result", "bytes", "detail"], &rows)
        );
        let written: u64 = lines.iter().map(|l| l.bytes).sum();
        outln!(
            "{} written ({}), {} already there, {} skipped, {bad} failed or rejected",
            count("written"),
            output::bytes(written),
            count("already there"),
            count("skipped"),
        );
    }
    if bad > 0 {
        return Err(Failure::failed(anyhow::anyhow!(
            "{bad} need-list(s) or segment(s) failed"
        )));
    }
    Ok(())
}

/// What merging one need-list's receipts did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    pub merged: u64,
    pub known: u64,
    pub refused: u64,
}

/// Where `import` merges receipts: the daemon, or the store it opened itself.
pub enum MergeTarget<'a> {
    Daemon(&'a Config),
    Direct(&'a store::Store),
}

/// Merges the receipts of need-list `path` (`import`): through the daemon in bounded requests,
/// or directly. `Ok(None)`: nothing to merge here (this node's own list, or receipts are off),
/// with the reason. Refused receipts are counted, never an error.
pub fn merge(
    cfg: &Config,
    target: &MergeTarget<'_>,
    path: &Path,
) -> Result<Result<Merged, String>, String> {
    let list = NeedList::read_file(path).map_err(|e| e.to_string())?;
    if list.node.as_str() == cfg.node_id {
        return Ok(Err("need-list of this node".into()));
    }
    if cfg.net.receipt_interval_ms == 0 {
        return Ok(Err(
            "fleet receipts are off on this node (net.receipt_interval_ms = 0)".into(),
        ));
    }
    match target {
        MergeTarget::Direct(store) => {
            let fleet = open_fleet(cfg, store)
                .map_err(|f| format!("{:#}", f.error))?
                .ok_or("fleet receipts are off on this node")?;
            let (report, refused) = fleet
                .merge_foreign(&list.receipts, &list.certs)
                .map_err(|e| e.to_string())?;
            Ok(Ok(Merged {
                merged: report.merged,
                known: report.known,
                refused,
            }))
        }
        MergeTarget::Daemon(cfg) => merge_through_daemon(cfg, &list).map(Ok),
    }
}

/// Sends the receipts in requests of at most [`CONTROL_NEED_MERGE_RECEIPTS_MAX`] receipts, each
/// with the certificates (at most [`CONTROL_NEED_MERGE_CERTS_MAX`]) its receipts name.
fn merge_through_daemon(cfg: &Config, list: &NeedList) -> Result<Merged, String> {
    let mut client = client::require(cfg).map_err(|f| format!("{:#}", f.error))?;
    let certs: HashMap<[u8; 32], &Vec<u8>> = list
        .certs
        .iter()
        .map(|c| (*blake3::hash(c).as_bytes(), c))
        .collect();
    let mut total = Merged::default();
    let mut send = |receipts: &mut Vec<String>, named: &mut BTreeMap<[u8; 32], String>| {
        if receipts.is_empty() {
            return Ok(());
        }
        let request = Request::NeedMerge {
            receipts: std::mem::take(receipts),
            certs: std::mem::take(named).into_values().collect(),
        };
        let body = client
            .call(&request)
            .map_err(|f| format!("{:#}", f.error))?;
        let n = |k: &str| body[k].as_u64().unwrap_or(0);
        total.merged += n("merged");
        total.known += n("known");
        total.refused += n("refused");
        Ok::<(), String>(())
    };
    let mut receipts = Vec::new();
    let mut named: BTreeMap<[u8; 32], String> = BTreeMap::new();
    for r in &list.receipts {
        let cert = net::receipts::SignedReceipt::decode(r)
            .ok()
            .and_then(|s| certs.get(&s.cert).map(|der| (s.cert, *der)));
        let new_cert = cert.filter(|(hash, _)| !named.contains_key(hash));
        if receipts.len() >= CONTROL_NEED_MERGE_RECEIPTS_MAX
            || (new_cert.is_some() && named.len() >= CONTROL_NEED_MERGE_CERTS_MAX)
        {
            send(&mut receipts, &mut named)?;
        }
        if let Some((hash, der)) = cert {
            named.entry(hash).or_insert_with(|| hex::encode(der));
        }
        receipts.push(hex::encode(r));
    }
    send(&mut receipts, &mut named)?;
    Ok(total)
}

/// Whether a directory entry is a need-list: `*.need`, not hidden (temporary files are).
pub fn is_need_list(name: &str) -> bool {
    !name.starts_with('.')
        && Path::new(name).extension().and_then(|e| e.to_str()) == Some(NEED_EXTENSION)
}
