//! `edged export --to DIR`: USB out. Each segment is written as `<id>.seg` by the store's one
//! export writer ([`store::ExportDir`]): only inside DIR (opened once, never through a symlink),
//! atomically, verified as it is written; a file already there with exactly the segment is left
//! alone; a symlink, FIFO, device or directory at the target name is refused, never followed.
//! Through the daemon the bytes come over the control socket; without it, from the data dir.

use crate::output::{out, outln};
use base::Clock as _;
use std::io::Read;

use serde::Serialize;
use store::keys::TrustedPublishers;
use store::{ExportDir, Exported, SegmentId};

use crate::control::{Request, Response};

use crate::cli::ExportArgs;
use crate::config::Config;
use crate::exit::{CliResult, Failure, USAGE};
use crate::{output, progress};

#[derive(Debug, Serialize)]
struct Line {
    id: String,
    status: &'static str,
    path: Option<String>,
    error: Option<String>,
}

impl Line {
    fn of(id: String, result: Result<Exported, String>) -> Line {
        match result {
            Ok(Exported::Written(p)) => Line {
                id,
                status: "written",
                path: Some(p.display().to_string()),
                error: None,
            },
            Ok(Exported::AlreadyThere(p)) => Line {
                id,
                status: "already there",
                path: Some(p.display().to_string()),
                error: None,
            },
            Err(e) => Line {
                id,
                status: "FAILED",
                path: None,
                error: Some(e),
            },
        }
    }
}

pub fn run(args: &ExportArgs) -> CliResult {
    if let Some(dir) = &args.need_list {
        return super::needs::write_need_list(&args.config, dir, args.json);
    }
    if let Some(dir) = &args.for_dir {
        return super::needs::export_for(&args.config, dir, args.max_bytes, args.json);
    }
    let Some(to) = &args.to else {
        return Err(Failure::new(
            USAGE,
            anyhow::anyhow!("say where to export: --to DIR, --need-list DIR or --for DIR"),
        ));
    };
    if !args.all && args.channel.is_none() && args.ids.is_empty() {
        return Err(Failure::new(
            USAGE,
            anyhow::anyhow!("say what to export: --all, --channel C, or segment ids"),
        ));
    }
    let dir = ExportDir::open(to).map_err(Failure::failed)?;
    let cfg = Config::load(&args.config.config)?;
    if let Some(client) = super::client::connect(&cfg)? {
        let lines = export_through_daemon(client, &cfg, args, &dir)?;
        return report(&lines, args.json);
    }
    let store = super::open_store_direct(&cfg, super::Direct::Existing)?;
    let stored = store.list()?;
    let ids: Vec<SegmentId> = if args.all {
        stored.iter().map(|s| s.id).collect()
    } else if let Some(channel) = &args.channel {
        stored
            .iter()
            .filter(|s| &s.row.channel == channel)
            .map(|s| s.id)
            .collect()
    } else {
        let mut ids = Vec::new();
        for prefix in &args.ids {
            ids.push(store.resolve(prefix)?);
        }
        ids
    };
    let total: u64 = stored
        .iter()
        .filter(|s| ids.contains(&s.id))
        .map(|s| s.row.file_len)
        .sum();
    let bar = progress::bytes(total, "exporting", args.json);
    let now = base::SystemClock.now_ms();
    let lines: Vec<Line> = ids
        .into_iter()
        .map(|id| {
            let result = store
                .export_to_reporting(&id, &dir, now, |n| bar.inc(n))
                .map_err(|e| e.to_string());
            Line::of(id.to_string(), result)
        })
        .collect();
    bar.finish_and_clear();
    store.close();
    report(&lines, args.json)
}

fn report(lines: &[Line], json: bool) -> CliResult {
    let failed = lines.iter().filter(|l| l.error.is_some()).count();
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&lines).map_err(Failure::failed)?
        );
    } else {
        let rows: Vec<Vec<String>> = lines
            .iter()
            .map(|l| {
                vec![
                    l.id.chars().take(12).collect(),
                    l.status.to_owned(),
                    l.path
                        .clone()
                        .or_else(|| l.error.clone())
                        .unwrap_or_default(),
                ]
            })
            .collect();
        out!("{}", output::table(&["segment", "result", "file"], &rows));
        outln!("{} exported, {failed} failed", lines.len() - failed);
    }
    if failed > 0 {
        return Err(Failure::failed(anyhow::anyhow!(
            "{failed} segment(s) not exported"
        )));
    }
    Ok(())
}

/// Asks the daemon for each segment's bytes and hands them to the export writer. A segment that
/// fails (its copy failed verification while being read, and the daemon quarantined it) fails
/// alone: the next one is asked for on a new connection.
fn export_through_daemon(
    mut client: super::client::Client,
    cfg: &Config,
    args: &ExportArgs,
    dir: &ExportDir,
) -> CliResult<Vec<Line>> {
    let trusted = &cfg.store.trusted;
    let mut ids: Vec<String> = Vec::new();
    let select = Request::ExportSelect {
        all: args.all,
        channel: args.channel.clone(),
        ids: args.ids.clone(),
    };
    client.list(&select, |page| {
        for id in page {
            ids.push(serde_json::from_value(id).map_err(Failure::failed)?);
        }
        Ok(())
    })?;
    let mut lines = Vec::with_capacity(ids.len());
    let count = ids.len();
    let last = count.saturating_sub(1);
    // The listing names ids only: the bar grows by each segment's length as its stream begins.
    let bar = progress::bytes(0, "exporting", args.json);
    for (i, id) in ids.into_iter().enumerate() {
        bar.set_message(format!("{} of {count}", i + 1));
        // After any failure the next segment goes over a new connection: a daemon that found
        // its copy corrupt while streaming it quarantines it and closes the connection, even
        // when every byte was sent.
        let failed = match export_one(&mut client, &id, dir, trusted, &bar) {
            Ok(Ok(exported)) => {
                lines.push(Line::of(id, Ok(exported)));
                false
            }
            Ok(Err(e)) => {
                lines.push(Line::of(id, Err(e)));
                true
            }
            Err(cut) => {
                lines.push(Line::of(id, Err(format!("{:#}", cut.error))));
                true
            }
        };
        if failed && i < last {
            client = super::client::require(cfg)?;
        }
    }
    bar.finish_and_clear();
    Ok(lines)
}

/// The outer error ends the connection (it is out of step); the inner one is this file's.
pub(super) fn export_one(
    client: &mut super::client::Client,
    id_text: &str,
    dir: &ExportDir,
    trusted: &TrustedPublishers,
    bar: &indicatif::ProgressBar,
) -> CliResult<Result<Exported, String>> {
    let Ok(id) = id_text.parse::<SegmentId>() else {
        return Ok(Err(format!("the daemon named a bad id {id_text}")));
    };
    // A copy already there needs nothing from the daemon.
    match dir.holds(&id, trusted) {
        Ok(true) => return Ok(Ok(Exported::AlreadyThere(dir.target(&id)))),
        Ok(false) => {}
        Err(e) => return Ok(Err(e.to_string())),
    }
    client.send(&Request::Export {
        id: id_text.to_owned(),
    })?;
    let len = match client.receive()? {
        Response::ExportStream { len, .. } => len,
        Response::Error { message, .. } => return Ok(Err(message)),
        Response::Ok { .. } | Response::Page { .. } | Response::End { .. } => {
            return Err(Failure::failed(anyhow::anyhow!(
                "unexpected answer from the daemon"
            )));
        }
    };
    bar.inc_length(len);
    let mut stream = (&mut client.reader).take(len);
    let written = dir.write(
        &id,
        trusted,
        Some(len),
        progress::Reading::new(&mut stream, bar),
    );
    // The connection stays in step only if exactly `len` bytes were consumed: drain what the
    // writer left (it stops at the first byte that does not verify).
    let drained = std::io::copy(&mut stream, &mut std::io::sink());
    if drained.is_err() || stream.limit() > 0 {
        let why = written.err().map(|e| format!(": {e}")).unwrap_or_default();
        return Err(Failure::failed(anyhow::anyhow!(
            "the daemon's stream of {id} ended {} bytes short of {len} (its copy failed verification?){why}",
            stream.limit()
        )));
    }
    Ok(written.map(Exported::Written).map_err(|e| e.to_string()))
}
