//! `edged export --to DIR`: USB out. Each segment is written as `<id>.seg`, atomically, with its
//! payload verified while copying; a file already there with the right content is left alone.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use store::{Exported, SegmentId};

use crate::control::{Request, Response};

use crate::cli::ExportArgs;
use crate::config::Config;
use crate::exit::{CliResult, Failure, USAGE};
use crate::output;

#[derive(Debug, Serialize)]
struct Line {
    id: String,
    status: &'static str,
    path: Option<String>,
    error: Option<String>,
}

pub fn run(args: &ExportArgs) -> CliResult {
    if !args.all && args.channel.is_none() && args.ids.is_empty() {
        return Err(Failure::new(
            USAGE,
            anyhow::anyhow!("say what to export: --all, --channel C, or segment ids"),
        ));
    }
    let meta = args
        .to
        .symlink_metadata()
        .map_err(|e| Failure::failed(anyhow::anyhow!("{}: {e}", args.to.display())))?;
    if !meta.is_dir() {
        return Err(Failure::failed(anyhow::anyhow!(
            "{} is not a directory",
            args.to.display()
        )));
    }
    let cfg = Config::load(&args.config.config)?;
    if let Some(client) = super::client::connect(&cfg)? {
        let lines = export_through_daemon(client, args)?;
        return report(&lines, args.json);
    }
    let store = super::open_store_direct(&cfg)?;
    let ids: Vec<SegmentId> = if args.all {
        store.list()?.into_iter().map(|s| s.id).collect()
    } else if let Some(channel) = &args.channel {
        store
            .list()?
            .into_iter()
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
    let now = crate::clock::now_ms();
    let mut lines = Vec::new();
    for id in ids {
        let line = match store.export_to_dir(&id, &args.to, now) {
            Ok(Exported::Written(p)) => Line {
                id: id.to_string(),
                status: "written",
                path: Some(p.display().to_string()),
                error: None,
            },
            Ok(Exported::AlreadyThere(p)) => Line {
                id: id.to_string(),
                status: "already there",
                path: Some(p.display().to_string()),
                error: None,
            },
            Err(e) => Line {
                id: id.to_string(),
                status: "FAILED",
                path: None,
                error: Some(e.to_string()),
            },
        };
        lines.push(line);
    }
    store.close();
    report(&lines, args.json)
}

fn report(lines: &[Line], json: bool) -> CliResult {
    let failed = lines.iter().filter(|l| l.error.is_some()).count();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&lines).map_err(Failure::failed)?
        );
    } else {
        let rows: Vec<Vec<String>> = lines
            .iter()
            .map(|l| {
                vec![
                    l.id[..12].to_owned(),
                    l.status.to_owned(),
                    l.path
                        .clone()
                        .or_else(|| l.error.clone())
                        .unwrap_or_default(),
                ]
            })
            .collect();
        print!("{}", output::table(&["segment", "result", "file"], &rows));
        println!("{} exported, {failed} failed", lines.len() - failed);
    }
    if failed > 0 {
        return Err(Failure::failed(anyhow::anyhow!(
            "{failed} segment(s) not exported"
        )));
    }
    Ok(())
}

/// Asks the daemon for each segment's bytes and writes them here: temp file, fsync, verified by
/// reading it back (header id and payload hash), rename, directory fsync.
fn export_through_daemon(
    mut client: super::client::Client,
    args: &ExportArgs,
) -> CliResult<Vec<Line>> {
    let chosen = client.call(&Request::ExportSelect {
        all: args.all,
        channel: args.channel.clone(),
        ids: args.ids.clone(),
    })?;
    let ids: Vec<String> = serde_json::from_value(chosen).map_err(Failure::failed)?;
    let mut lines = Vec::with_capacity(ids.len());
    for id in ids {
        let line = match export_one(&mut client, &id, &args.to)? {
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
                error: Some(format!("{e:#}")),
            },
        };
        lines.push(line);
    }
    Ok(lines)
}

/// The outer error ends the connection (it is out of step); the inner one is this file's.
fn export_one(
    client: &mut super::client::Client,
    id_text: &str,
    dir: &Path,
) -> CliResult<anyhow::Result<Exported>> {
    let Ok(id) = id_text.parse::<SegmentId>() else {
        return Ok(Err(anyhow::anyhow!("the daemon named a bad id {id_text}")));
    };
    let target = dir.join(format!("{id}.seg"));
    client.send(&Request::Export {
        id: id_text.to_owned(),
    })?;
    let len = match client.receive()? {
        Response::ExportStream { len, .. } => len,
        Response::Error { message, .. } => return Ok(Err(anyhow::anyhow!(message))),
        Response::Ok { .. } => {
            return Err(Failure::failed(anyhow::anyhow!(
                "unexpected answer from the daemon"
            )));
        }
    };
    let tmp = dir.join(format!(".{id}.seg.tmp"));
    let written = (|| -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let copied = std::io::copy(&mut (&mut client.reader).take(len), &mut file)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        if copied != len {
            anyhow::bail!(
                "the daemon sent {copied} of {len} bytes (its copy failed verification?)"
            );
        }
        file.sync_all()
            .with_context(|| format!("cannot fsync {}", tmp.display()))?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        // A short stream leaves the connection out of step.
        return Err(Failure::failed(e));
    }
    let result = (|| -> anyhow::Result<Exported> {
        if store::read::file_holds_segment(&target, &id, len) {
            std::fs::remove_file(&tmp).ok();
            return Ok(Exported::AlreadyThere(target.clone()));
        }
        if !store::read::file_holds_segment(&tmp, &id, len) {
            anyhow::bail!("the copy written to {} does not verify", tmp.display());
        }
        std::fs::rename(&tmp, &target)
            .with_context(|| format!("cannot create {}", target.display()))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot fsync {}", dir.display()))?;
        Ok(Exported::Written(target.clone()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(result)
}
