//! `edged import DIR`: USB in.
//!
//! Reads only regular files directly in DIR: the directory itself and every entry are examined
//! without following symlinks, files are opened with `O_NOFOLLOW | O_NONBLOCK` (a FIFO cannot
//! block the import) and checked again on the open descriptor, so a file swapped for a symlink
//! between listing and opening is refused. Nothing is ever written to the medium. Every segment
//! is verified by the store before anything is stored; importing twice changes nothing (INV-19).

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use store::limits::STREAM_BUF_BYTES;
use store::{IngestOptions, IngestOutcome};

use crate::cli::ImportArgs;
use crate::config::Config;
use crate::exit::{CliResult, Failure};
use crate::output;

/// Largest number of directory entries examined in one import.
pub const IMPORT_ENTRIES_MAX: usize = 100_000;

/// What happened to one entry of the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FileResult {
    Imported { id: String, bytes: u64 },
    AlreadyPresent { id: String },
    Rejected { reason: String },
    Skipped { reason: String },
}

#[derive(Debug, Serialize)]
struct Line {
    file: String,
    #[serde(flatten)]
    result: FileResult,
}

pub fn run(args: &ImportArgs) -> CliResult {
    let cfg = Config::load(&args.config.config)?;
    let entries = scan(&args.dir).map_err(Failure::failed)?;
    let total: u64 = entries.iter().map(|e| e.len).sum();
    let bar = progress(total);
    let mut target = match super::client::connect(&cfg)? {
        Some(client) => Target::Daemon(client),
        None => {
            let store = super::open_store_direct(&cfg)?;
            // Jobs for the peers are scheduled in the same transaction as each segment, as the
            // daemon would; it sends them when it starts.
            let relay = relay::Relay::open(store, cfg.relay.clone(), crate::clock::now_ms())
                .map_err(|e| Failure::new(crate::exit::STORAGE, e))?;
            Target::Direct(relay)
        }
    };
    let mut lines = Vec::with_capacity(entries.len());
    for entry in entries {
        bar.set_message(entry.name.clone());
        let result = match entry.kind {
            Kind::Candidate => match &mut target {
                Target::Direct(relay) => import_file(relay, &entry.path, &bar),
                Target::Daemon(client) => import_through_daemon(client, &entry, &bar)?,
            },
            Kind::Skip(reason) => reason,
        };
        lines.push(Line {
            file: entry.name,
            result,
        });
    }
    bar.finish_and_clear();
    if let Target::Direct(relay) = target {
        relay.store().close();
    }
    report(&lines, args.json)
}

/// Where segments go: the running daemon (over the control socket), or the data directory.
enum Target {
    Daemon(super::client::Client),
    Direct(relay::Relay),
}

/// Streams one file to the daemon, which verifies and stores it. The daemon never opens the
/// medium itself.
fn import_through_daemon(
    client: &mut super::client::Client,
    entry: &Entry,
    bar: &ProgressBar,
) -> CliResult<FileResult> {
    let file = match open_regular(&entry.path) {
        Ok(f) => f,
        Err(e) => {
            return Ok(FileResult::Rejected {
                reason: format!("{e:#}"),
            });
        }
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    client.send(&crate::control::Request::Import {
        file_name: entry.name.clone(),
        len,
    })?;
    let mut reader = Counting {
        inner: BufReader::with_capacity(STREAM_BUF_BYTES, file).take(len),
        bar,
    };
    let copied = std::io::copy(&mut reader, &mut client.writer)
        .map_err(|e| Failure::failed(anyhow::anyhow!("{}: {e}", entry.path.display())))?;
    if copied != len {
        // The daemon waits for the announced bytes: this connection cannot continue.
        return Err(Failure::failed(anyhow::anyhow!(
            "{} shrank while being imported ({copied} of {len} bytes)",
            entry.path.display()
        )));
    }
    let body = match client.receive()? {
        crate::control::Response::Ok { body } => body,
        crate::control::Response::Error { code, message } => {
            return Err(Failure::new(code, anyhow::anyhow!(message)));
        }
        crate::control::Response::ExportStream { .. } => {
            return Err(Failure::failed(anyhow::anyhow!(
                "unexpected answer from the daemon"
            )));
        }
    };
    let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
    Ok(match body["status"].as_str() {
        Some("imported") => FileResult::Imported {
            id: text("id"),
            bytes: body["bytes"].as_u64().unwrap_or(0),
        },
        Some("already_present") => FileResult::AlreadyPresent { id: text("id") },
        _ => FileResult::Rejected {
            reason: text("reason"),
        },
    })
}

fn report(lines: &[Line], json: bool) -> CliResult {
    let count = |f: fn(&FileResult) -> bool| lines.iter().filter(|l| f(&l.result)).count();
    let imported = count(|r| matches!(r, FileResult::Imported { .. }));
    let present = count(|r| matches!(r, FileResult::AlreadyPresent { .. }));
    let rejected = count(|r| matches!(r, FileResult::Rejected { .. }));
    let skipped = count(|r| matches!(r, FileResult::Skipped { .. }));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(lines).map_err(Failure::failed)?
        );
    } else {
        let rows: Vec<Vec<String>> = lines
            .iter()
            .map(|l| match &l.result {
                FileResult::Imported { id, bytes } => vec![
                    l.file.clone(),
                    "imported".into(),
                    format!("{} {}", &id[..12], output::bytes(*bytes)),
                ],
                FileResult::AlreadyPresent { id } => {
                    vec![
                        l.file.clone(),
                        "already present".into(),
                        id[..12].to_owned(),
                    ]
                }
                FileResult::Rejected { reason } => {
                    vec![l.file.clone(), "REJECTED".into(), reason.clone()]
                }
                FileResult::Skipped { reason } => {
                    vec![l.file.clone(), "skipped".into(), reason.clone()]
                }
            })
            .collect();
        print!("{}", output::table(&["file", "result", "detail"], &rows));
        println!(
            "{imported} imported, {present} already present, {rejected} rejected, {skipped} skipped"
        );
        if imported == 0 && rejected == 0 && present > 0 {
            println!("nothing new: every segment was already stored");
        }
    }
    if rejected > 0 {
        return Err(Failure::failed(anyhow::anyhow!(
            "{rejected} file(s) rejected"
        )));
    }
    Ok(())
}

fn progress(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {wide_msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[derive(Debug)]
enum Kind {
    Candidate,
    Skip(FileResult),
}

#[derive(Debug)]
struct Entry {
    name: String,
    path: PathBuf,
    len: u64,
    kind: Kind,
}

/// Lists DIR without following anything, sorted by name.
fn scan(dir: &Path) -> anyhow::Result<Vec<Entry>> {
    let meta = dir
        .symlink_metadata()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    if meta.file_type().is_symlink() {
        anyhow::bail!(
            "{} is a symlink; give the real directory (symlinks are never followed)",
            dir.display()
        );
    }
    if !meta.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        if out.len() >= IMPORT_ENTRIES_MAX {
            anyhow::bail!(
                "{} holds more than {IMPORT_ENTRIES_MAX} entries",
                dir.display()
            );
        }
        let item = item.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = item.file_name().to_string_lossy().into_owned();
        let path = item.path();
        let ft = item
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        let rejected = |reason: &str| {
            Kind::Skip(FileResult::Rejected {
                reason: reason.into(),
            })
        };
        let skipped = |reason: &str| {
            Kind::Skip(FileResult::Skipped {
                reason: reason.into(),
            })
        };
        let is_seg = name.ends_with(".seg");
        let (kind, len) = if ft.is_symlink() {
            (rejected("symlink: not followed"), 0)
        } else if ft.is_fifo() || ft.is_block_device() || ft.is_char_device() || ft.is_socket() {
            (rejected("not a regular file (FIFO, device or socket)"), 0)
        } else if ft.is_dir() {
            (skipped("directory (import is not recursive)"), 0)
        } else if !is_seg {
            (skipped("not a .seg file"), 0)
        } else {
            let len = item.metadata().map(|m| m.len()).unwrap_or(0);
            (Kind::Candidate, len)
        };
        out.push(Entry {
            name,
            path,
            len,
            kind,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Opens a regular file for reading without following a symlink or blocking on a FIFO, and
/// checks the opened descriptor is a regular file (the store's one such function).
pub fn open_regular(path: &Path) -> anyhow::Result<File> {
    Ok(store::media::open_regular(path)?)
}

fn import_file(relay: &relay::Relay, path: &Path, bar: &ProgressBar) -> FileResult {
    let file = match open_regular(path) {
        Ok(f) => f,
        Err(e) => {
            return FileResult::Rejected {
                reason: format!("{e:#}"),
            };
        }
    };
    let reader = Counting {
        inner: BufReader::with_capacity(STREAM_BUF_BYTES, file),
        bar,
    };
    match relay.ingest_reader(reader, &IngestOptions::import(), crate::clock::now_ms()) {
        Ok(IngestOutcome::Stored(s)) => FileResult::Imported {
            id: s.id.to_string(),
            bytes: s.row.file_len,
        },
        Ok(IngestOutcome::AlreadyHave { id, .. }) => {
            FileResult::AlreadyPresent { id: id.to_string() }
        }
        Err(e) => FileResult::Rejected {
            reason: e.to_string(),
        },
    }
}

/// Advances the progress bar as bytes are read.
struct Counting<'a, R> {
    inner: R,
    bar: &'a ProgressBar,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}
