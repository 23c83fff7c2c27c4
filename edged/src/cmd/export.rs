//! `edged export --to DIR`: USB out. Each segment is written as `<id>.seg`, atomically, with its
//! payload verified while copying; a file already there with the right content is left alone.

use serde::Serialize;
use store::{Exported, SegmentId};

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
    let failed = lines.iter().filter(|l| l.error.is_some()).count();
    if args.json {
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
