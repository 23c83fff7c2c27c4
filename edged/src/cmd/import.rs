//! `edged import DIR`: USB in.
//!
//! Reads only regular files directly in DIR: the directory itself and every entry are examined
//! without following symlinks, and symlinks, FIFOs, devices and sockets are skipped from the
//! listing alone, without being opened (skipped entries never fail the import; the summary
//! counts them by kind). Files are opened with `O_NOFOLLOW | O_NONBLOCK` (a FIFO cannot
//! block the import) and checked again on the open descriptor, so a file swapped for a symlink
//! or a FIFO between listing and opening is refused. Nothing is ever written to the medium.
//! Every segment is verified by the store before anything is stored; importing twice changes
//! nothing (INV-19).
//!
//! Each file ends with one line of the report, whatever happens to it: a file that cannot be
//! opened, that shrinks while it is read, or that the daemon refuses or cuts is reported as
//! rejected with its reason, and the import goes on with the next file. Through the daemon,
//! small files (at most [`CONTROL_IMPORT_PIPELINED_BYTES_MAX`]) are read whole first and
//! pipelined on one connection, so a file that shrinks is never sent and never leaves the
//! connection out of step; a larger file travels alone on a connection of its own, streamed
//! from the medium.

use crate::output::{out, outln};
use base::Clock as _;
use std::fs::File;
use std::io::{BufReader, Read, Write as _};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use indicatif::ProgressBar;
use serde::Serialize;
use store::limits::STREAM_BUF_BYTES;
use store::{IngestOptions, IngestOutcome};

use crate::cli::ImportArgs;
use crate::config::Config;
use crate::control::{CONTROL_IMPORT_PIPELINED_BYTES_MAX, Request, Response};
use crate::exit::{CliResult, Failure};
use crate::output;

/// Largest number of directory entries examined in one import.
pub const IMPORT_ENTRIES_MAX: usize = 100_000;
/// After a file came up short, how long the CLI waits for the daemon's answer on that file's
/// connection (the daemon answers as soon as it sees the end of the stream).
pub const IMPORT_CUT_ANSWER_TIMEOUT_MS: u64 = 5_000;

/// What happened to one entry of the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FileResult {
    Imported {
        id: String,
        bytes: u64,
    },
    AlreadyPresent {
        id: String,
    },
    Rejected {
        reason: String,
    },
    /// Did not fit: the space is held by segments still owed to peers. Retryable.
    StoreFull {
        reason: String,
    },
    /// Not a segment file to import (a symlink, a FIFO or device, a directory, another file):
    /// counted by `kind` in the summary, never a failure.
    Skipped {
        kind: String,
        reason: String,
    },
    /// A need-list of another node whose receipts were merged (see [`super::needs`]).
    Receipts {
        merged: u64,
        known: u64,
        refused: u64,
    },
}

impl FileResult {
    fn skipped(kind: &str, reason: &str) -> FileResult {
        FileResult::Skipped {
            kind: kind.to_owned(),
            reason: reason.to_owned(),
        }
    }

    fn rejected(reason: impl std::fmt::Display) -> FileResult {
        FileResult::Rejected {
            reason: reason.to_string(),
        }
    }
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
    if !entries
        .iter()
        .any(|e| matches!(e.kind, Kind::Candidate | Kind::NeedList))
    {
        eprintln!(
            "edged: no .seg file in {} ({} other entr{} skipped): nothing to import",
            output::path(&args.dir),
            entries.len(),
            if entries.len() == 1 { "y" } else { "ies" }
        );
    }
    let total: u64 = entries.iter().map(|e| e.len).sum();
    let bar = crate::progress::bytes(total, "importing", args.json);
    let target = match super::client::connect(&cfg)? {
        // Each file opens a connection of its own; this one only told that a daemon answers.
        Some(_probe) => Target::Daemon(&cfg),
        None => {
            let store = super::open_store_direct(&cfg, super::Direct::Create)?;
            // Jobs for the peers are scheduled in the same transaction as each segment, as the
            // daemon would; it sends them when it starts.
            let relay = relay::Relay::open(store, cfg.relay.clone(), base::SystemClock.now_ms())?;
            Target::Direct(relay)
        }
    };
    let results = match &target {
        Target::Daemon(cfg) => through_daemon(cfg, &entries, &bar),
        Target::Direct(relay) => entries
            .iter()
            .map(|entry| {
                bar.set_message(output::escape(&entry.name).into_owned());
                match &entry.kind {
                    Kind::Candidate => import_file(relay, &entry.path, &bar),
                    Kind::Skip(reason) => reason.clone(),
                    Kind::NeedList => FileResult::skipped("need-list", "need-list"),
                }
            })
            .collect(),
    };
    // After the segments: receipts of other nodes that travelled with them, so this node
    // learns what the other side holds (including what it sent here).
    let merge_target = match &target {
        Target::Daemon(cfg) => super::needs::MergeTarget::Daemon(cfg),
        Target::Direct(relay) => super::needs::MergeTarget::Direct(relay.store()),
    };
    let results: Vec<FileResult> = entries
        .iter()
        .zip(results)
        .map(|(entry, result)| match entry.kind {
            Kind::NeedList => match super::needs::merge(&cfg, &merge_target, &entry.path) {
                Ok(Ok(m)) => FileResult::Receipts {
                    merged: m.merged,
                    known: m.known,
                    refused: m.refused,
                },
                Ok(Err(reason)) => FileResult::Skipped {
                    kind: "need-list".into(),
                    reason,
                },
                Err(reason) => FileResult::Rejected { reason },
            },
            _ => result,
        })
        .collect();
    let lines: Vec<Line> = entries
        .into_iter()
        .zip(results)
        .map(|(entry, result)| Line {
            file: entry.name,
            result,
        })
        .collect();
    bar.finish_and_clear();
    if let Target::Direct(relay) = target {
        relay.store().close();
    }
    report(&lines, args.json)
}

/// Where segments go: the running daemon (over the control socket), or the data directory.
enum Target<'a> {
    Daemon(&'a Config),
    Direct(relay::Relay),
}

/// The file's reason when it came up short: it shrank after its length was taken.
fn shrank(path: &Path, read: u64, len: u64) -> String {
    format!(
        "{} shrank while being imported ({read} of {len} bytes read)",
        path.display()
    )
}

/// Every entry through the daemon, a result for each, in order. Files of at most
/// [`CONTROL_IMPORT_PIPELINED_BYTES_MAX`] are read whole and sent one after another on one
/// connection, up to `[control] import_window` of them waiting for their answers (the daemon
/// stores them concurrently and answers in order); a larger file goes alone on a connection of
/// its own, streamed from the medium, after the answers before it.
fn through_daemon(cfg: &Config, entries: &[Entry], bar: &ProgressBar) -> Vec<FileResult> {
    let mut results: Vec<Option<FileResult>> = entries
        .iter()
        .map(|e| match &e.kind {
            Kind::Skip(reason) => Some(reason.clone()),
            Kind::NeedList => Some(FileResult::skipped("need-list", "need-list")),
            Kind::Candidate => None,
        })
        .collect();
    let mut conn: Option<Pipelined> = None;
    for (i, entry) in entries.iter().enumerate() {
        if results[i].is_some() {
            continue;
        }
        bar.set_message(output::escape(&entry.name).into_owned());
        let bytes = match read_small(&entry.path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                if let Some(c) = conn.take() {
                    c.finish(&mut results);
                }
                results[i] = Some(import_through_daemon(cfg, entry, bar));
                continue;
            }
            Err(rejected) => {
                bar.inc(entry.len);
                results[i] = Some(rejected);
                continue;
            }
        };
        if conn.is_none() {
            match Pipelined::open(cfg) {
                Ok(c) => conn = Some(c),
                Err(reason) => {
                    results[i] = Some(FileResult::Rejected { reason });
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        bar.inc(bytes.len() as u64);
        if let Err(e) = c.send(i, &entry.name, &bytes) {
            // The daemon closed the connection: the answers it sent are kept, the next files
            // go over a new one.
            if let Some(c) = conn.take() {
                c.finish(&mut results);
            }
            results[i].get_or_insert(FileResult::rejected(format!(
                "the daemon closed the connection: {e}"
            )));
        }
    }
    if let Some(c) = conn.take() {
        c.finish(&mut results);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| FileResult::rejected("no answer from the daemon")))
        .collect()
}

/// A file of at most [`CONTROL_IMPORT_PIPELINED_BYTES_MAX`] bytes, read whole (opened as
/// [`open_regular`] does); `None` for a larger one. A file that shrinks while it is read is
/// refused here: nothing of it is sent.
fn read_small(path: &Path) -> Result<Option<Vec<u8>>, FileResult> {
    let file = open_regular(path).map_err(|e| FileResult::rejected(format!("{e:#}")))?;
    let len = file
        .metadata()
        .map_err(|e| FileResult::rejected(format!("cannot stat {}: {e}", path.display())))?
        .len();
    if len > CONTROL_IMPORT_PIPELINED_BYTES_MAX {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(|e| FileResult::rejected(format!("cannot read {}: {e}", path.display())))?;
    if (bytes.len() as u64) < len {
        return Err(FileResult::rejected(shrank(path, bytes.len() as u64, len)));
    }
    Ok(Some(bytes))
}

/// One connection carrying pipelined imports: requests go out from this thread, answers are
/// read in order by a thread of their own, so neither side waits for the other.
struct Pipelined {
    writer: std::os::unix::net::UnixStream,
    /// The entry index of each request sent, in order; bounded by the window.
    sent: Option<std::sync::mpsc::SyncSender<usize>>,
    answers: std::sync::mpsc::Receiver<(usize, FileResult)>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Pipelined {
    fn open(cfg: &Config) -> Result<Pipelined, String> {
        let client = match super::client::connect(cfg) {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(format!(
                    "the daemon no longer answers on {}",
                    cfg.control_socket.display()
                ));
            }
            Err(f) => return Err(format!("{:#}", f.error)),
        };
        let super::client::Client { reader, writer } = client;
        let (sent, to_answer) = std::sync::mpsc::sync_channel::<usize>(cfg.control.import_window);
        let (answered, answers) = std::sync::mpsc::channel();
        let reader = std::thread::Builder::new()
            .name("import-answers".into())
            .spawn(move || read_answers(reader, &to_answer, &answered))
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        Ok(Pipelined {
            writer,
            sent: Some(sent),
            answers,
            reader: Some(reader),
        })
    }

    /// Sends one import; waits first while the window is full.
    fn send(&mut self, index: usize, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let sent = self.sent.as_ref().is_some_and(|s| s.send(index).is_ok());
        if !sent {
            return Err(std::io::Error::other("no more answers are read"));
        }
        // Small files are one group at most: no outboard.
        let request = Request::Import {
            file_name: name.to_owned(),
            len: bytes.len() as u64,
            outboard_len: 0,
        };
        crate::control::write_frame(&mut self.writer, &request)?;
        self.writer.write_all(bytes)
    }

    /// Ends the requests and collects every answer (or why none came) into `results`.
    fn finish(mut self, results: &mut [Option<FileResult>]) {
        let _ = self.writer.shutdown(std::net::Shutdown::Write);
        drop(self.sent.take());
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        for (index, result) in self.answers.try_iter() {
            if let Some(slot) = results.get_mut(index) {
                *slot = Some(result);
            }
        }
    }
}

/// Reads the answer of each request sent, in order, until the requests end; once the
/// connection fails, each request still unanswered gets that as its result.
fn read_answers(
    mut reader: BufReader<std::os::unix::net::UnixStream>,
    sent: &std::sync::mpsc::Receiver<usize>,
    answered: &std::sync::mpsc::Sender<(usize, FileResult)>,
) {
    let mut failure: Option<String> = None;
    for index in sent {
        let result = match &failure {
            Some(why) => FileResult::rejected(why),
            None => match crate::control::read_frame::<_, Response>(&mut reader) {
                Ok(Some(response)) => answer_of(response),
                Ok(None) => {
                    let why = "the daemon closed the connection before answering".to_owned();
                    failure = Some(why.clone());
                    FileResult::rejected(why)
                }
                Err(e) => {
                    let why = format!("control socket: {e}");
                    failure = Some(why.clone());
                    FileResult::rejected(why)
                }
            },
        };
        if answered.send((index, result)).is_err() {
            return;
        }
    }
}

/// Streams one file to the daemon on a connection of its own; the daemon verifies and stores
/// it. The daemon never opens the medium itself. Every outcome is a line of the report.
fn import_through_daemon(cfg: &Config, entry: &Entry, bar: &ProgressBar) -> FileResult {
    let file = match open_regular(&entry.path) {
        Ok(f) => f,
        Err(e) => return FileResult::rejected(format!("{e:#}")),
    };
    let len = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => {
            return FileResult::rejected(format!("cannot stat {}: {e}", entry.path.display()));
        }
    };
    let mut client = match super::client::connect(cfg) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return FileResult::rejected(format!(
                "the daemon no longer answers on {}",
                cfg.control_socket.display()
            ));
        }
        Err(f) => return FileResult::rejected(format!("{:#}", f.error)),
    };
    // The daemon forwards a segment to its peers while it still arrives only if it can check
    // each group as it comes: that needs the outboard first, hashed here from the file (on
    // every core; the second read of the file mostly comes from the page cache). Without one
    // (a file whose header does not read) the import goes on the ordinary way.
    let outboard = outboard_of(&file).unwrap_or_default();
    let request = Request::Import {
        file_name: entry.name.clone(),
        len,
        outboard_len: outboard.len() as u64,
    };
    if let Err(f) = client.send(&request) {
        return FileResult::rejected(format!("{:#}", f.error));
    }
    if let Err(e) = std::io::Write::write_all(&mut client.writer, &outboard) {
        return match client.receive() {
            Ok(response) => answer_of(response),
            Err(_) => FileResult::rejected(format!("the daemon closed the connection: {e}")),
        };
    }
    let mut reader = Counting::new(
        BufReader::with_capacity(STREAM_BUF_BYTES, file).take(len),
        bar,
    );
    let copied = std::io::copy(&mut reader, &mut client.writer);
    let sent = reader.bytes;
    // Bytes the daemon did not need (its verdict came from the header) or that never came
    // still count as done for the bar.
    bar.inc(len.saturating_sub(sent));
    match copied {
        Ok(_) if sent == len => answer(&mut client),
        Ok(_) => {
            // The file shrank after its length was announced. Half-close: the daemon sees the
            // end of the stream, stores nothing, and answers; this connection ends with it.
            let _ = client.writer.shutdown(std::net::Shutdown::Write);
            let _ = client
                .writer
                .set_read_timeout(Some(Duration::from_millis(IMPORT_CUT_ANSWER_TIMEOUT_MS)));
            match answer(&mut client) {
                // The header and payload were complete before the file's end moved: the daemon
                // stored the segment, and says so.
                imported @ FileResult::Imported { .. } => imported,
                _ => FileResult::rejected(shrank(&entry.path, sent, len)),
            }
        }
        Err(e) => match reader.read_error.take() {
            Some(read) => {
                let _ = client.writer.shutdown(std::net::Shutdown::Write);
                FileResult::rejected(format!("cannot read {}: {read}", entry.path.display()))
            }
            // Writing failed: the daemon answered before taking the whole body (its verdict
            // needed only the header, or it refused the request) and closed. Its answer waits
            // in this end's buffer.
            None => match client.receive() {
                Ok(response) => answer_of(response),
                Err(_) => FileResult::rejected(format!("the daemon closed the connection: {e}")),
            },
        },
    }
}

/// The outboard of the segment file's payload (see `store::outboard`), hashed on every core;
/// `None` for a payload of one group (nothing to send) or a file that does not read as a
/// segment (the daemon will say why). Leaves the file's offset untouched (positioned reads).
fn outboard_of(file: &File) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    use store::outboard::{CV_BYTES, GROUP_BYTES, group_cv, outboard_len};

    struct At<'f>(&'f File, u64);
    impl Read for At<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read_at(buf, self.1)?;
            self.1 += n as u64;
            Ok(n)
        }
    }
    let mut at = At(file, 0);
    let signed = store::segfile::read_header(&mut at).ok()?;
    let (payload_at, len) = (at.1, signed.manifest().payload_len);
    if outboard_len(len) == 0 {
        return None;
    }
    let groups = len.div_ceil(GROUP_BYTES);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(IMPORT_HASH_THREADS_MAX) as u64;
    let per = groups.div_ceil(threads);
    let parts: Vec<Option<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut buf = vec![0u8; GROUP_BYTES as usize];
                    let mut cvs = Vec::new();
                    for index in t * per..((t + 1) * per).min(groups) {
                        let start = index * GROUP_BYTES;
                        // Cannot truncate: at most GROUP_BYTES.
                        let want = (len - start).min(GROUP_BYTES) as usize;
                        file.read_exact_at(&mut buf[..want], payload_at + start)
                            .ok()?;
                        cvs.extend_from_slice(&group_cv(index, &buf[..want]));
                    }
                    Some(cvs)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect()
    });
    let mut outboard = Vec::with_capacity(groups as usize * CV_BYTES);
    for part in parts {
        outboard.extend_from_slice(&part?);
    }
    Some(outboard)
}

/// Threads hashing a file's outboard before its import.
const IMPORT_HASH_THREADS_MAX: usize = 4;

/// The daemon's answer to an import, as a line of the report.
fn answer(client: &mut super::client::Client) -> FileResult {
    match client.receive() {
        Ok(response) => answer_of(response),
        Err(f) => FileResult::rejected(format!("{:#}", f.error)),
    }
}

fn answer_of(response: Response) -> FileResult {
    let body = match response {
        Response::Ok { body } => body,
        Response::Error { message, .. } => return FileResult::Rejected { reason: message },
        Response::ExportStream { .. } | Response::Page { .. } | Response::End { .. } => {
            return FileResult::rejected("unexpected answer from the daemon");
        }
    };
    let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
    match body["status"].as_str() {
        Some("imported") => FileResult::Imported {
            id: text("id"),
            bytes: body["bytes"].as_u64().unwrap_or(0),
        },
        Some("already_present") => FileResult::AlreadyPresent { id: text("id") },
        Some("store_full") => FileResult::StoreFull {
            reason: text("reason"),
        },
        _ => FileResult::Rejected {
            reason: text("reason"),
        },
    }
}

/// The first 12 characters of an id (all of it if shorter: it came from the daemon).
fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

fn report(lines: &[Line], json: bool) -> CliResult {
    let count = |f: fn(&FileResult) -> bool| lines.iter().filter(|l| f(&l.result)).count();
    let imported = count(|r| matches!(r, FileResult::Imported { .. }));
    let present = count(|r| matches!(r, FileResult::AlreadyPresent { .. }));
    let rejected = count(|r| matches!(r, FileResult::Rejected { .. }));
    let skipped = count(|r| matches!(r, FileResult::Skipped { .. }));
    let full = count(|r| matches!(r, FileResult::StoreFull { .. }));
    if json {
        outln!(
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
                    format!("{} {}", short(id), output::bytes(*bytes)),
                ],
                FileResult::AlreadyPresent { id } => {
                    vec![l.file.clone(), "already present".into(), short(id)]
                }
                FileResult::Rejected { reason } => {
                    vec![l.file.clone(), "REJECTED".into(), reason.clone()]
                }
                FileResult::StoreFull { reason } => {
                    vec![l.file.clone(), "STORE FULL".into(), reason.clone()]
                }
                FileResult::Skipped { reason, .. } => {
                    vec![l.file.clone(), "skipped".into(), reason.clone()]
                }
                FileResult::Receipts {
                    merged,
                    known,
                    refused,
                } => vec![
                    l.file.clone(),
                    "receipts".into(),
                    format!("{merged} merged, {known} already known, {refused} refused"),
                ],
            })
            .collect();
        out!("{}", output::table(&["file", "result", "detail"], &rows));
        let full = match full {
            0 => String::new(),
            n => format!(", {n} did not fit (store full)"),
        };
        outln!(
            "{imported} imported, {present} already present, {rejected} rejected{full}, {skipped} skipped{}",
            skipped_kinds(lines)
        );
        if imported == 0 && rejected == 0 && present > 0 {
            outln!("nothing new: every segment was already stored");
        }
    }
    if rejected > 0 {
        return Err(Failure::failed(anyhow::anyhow!(
            "{rejected} file(s) rejected"
        )));
    }
    if full > 0 {
        return Err(Failure::new(
            crate::exit::STORE_FULL,
            anyhow::anyhow!(
                "{full} segment(s) did not fit: the store is full of segments still owed to peers (retryable; see above)"
            ),
        ));
    }
    Ok(())
}

/// " (2 symlink, 1 FIFO)": the skipped entries by kind, for the summary line.
fn skipped_kinds(lines: &[Line]) -> String {
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for l in lines {
        if let FileResult::Skipped { kind, .. } = &l.result {
            *kinds.entry(kind.as_str()).or_default() += 1;
        }
    }
    if kinds.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!(" ({})", parts.join(", "))
}

#[derive(Debug)]
enum Kind {
    Candidate,
    Skip(FileResult),
    /// A need-list: its receipts are merged after the segments are stored.
    NeedList,
}

#[derive(Debug)]
struct Entry {
    name: String,
    path: PathBuf,
    len: u64,
    kind: Kind,
}

/// Why an entry that is neither a regular file nor a directory is refused, from its listed
/// type alone (it is never opened: opening a device can act on the hardware, and reading a
/// FIFO takes its bytes from whoever writes them).
fn special_file(ft: std::fs::FileType) -> Option<(&'static str, &'static str)> {
    if ft.is_fifo() {
        Some(("FIFO", "FIFO: not a regular file (not opened)"))
    } else if ft.is_char_device() {
        Some((
            "device",
            "character device: not a regular file (not opened)",
        ))
    } else if ft.is_block_device() {
        Some(("device", "block device: not a regular file (not opened)"))
    } else if ft.is_socket() {
        Some(("socket", "socket: not a regular file (not opened)"))
    } else {
        None
    }
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
        let skipped = |kind: &str, reason: &str| Kind::Skip(FileResult::skipped(kind, reason));
        let is_seg = name.ends_with(".seg");
        let is_need = super::needs::is_need_list(&name);
        let (kind, len) = if ft.is_symlink() {
            (skipped("symlink", "symlink: not followed"), 0)
        } else if let Some((kind, reason)) = special_file(ft) {
            (skipped(kind, reason), 0)
        } else if ft.is_dir() {
            (
                skipped("directory", "directory (import is not recursive)"),
                0,
            )
        } else if is_need {
            (Kind::NeedList, 0)
        } else if !is_seg {
            (skipped("not a .seg file", "not a .seg file"), 0)
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
        Err(e) => return FileResult::rejected(format!("{e:#}")),
    };
    let len = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return FileResult::rejected(format!("cannot stat {}: {e}", path.display())),
    };
    let mut reader = Counting::new(
        BufReader::with_capacity(STREAM_BUF_BYTES, file).take(len),
        bar,
    );
    let result = relay.ingest_reader(
        &mut reader,
        &IngestOptions::import().with_file_len(len),
        base::SystemClock.now_ms(),
    );
    match result {
        Ok(IngestOutcome::Stored(s)) => FileResult::Imported {
            id: s.id.to_string(),
            bytes: s.row.file_len,
        },
        Ok(IngestOutcome::AlreadyHave { id, .. }) => {
            FileResult::AlreadyPresent { id: id.to_string() }
        }
        Err(_) if reader.short => FileResult::rejected(shrank(path, reader.bytes, len)),
        Err(store::IngestError::StoreFull {
            needed_bytes,
            available_bytes,
        }) => store_full(relay.store(), needed_bytes, available_bytes),
        Err(e) => FileResult::rejected(e),
    }
}

/// A segment that did not fit, with who holds the space (see [`crate::storefull`]).
pub fn store_full(store: &store::Store, needed: u64, available: u64) -> FileResult {
    FileResult::StoreFull {
        reason: crate::storefull::reason(store, needed, available),
    }
}

/// Reads a file for an import: advances the progress bar, counts the bytes, and remembers
/// whether the file ended before its length (it shrank) or a read failed.
struct Counting<'a, R> {
    inner: std::io::Take<R>,
    bar: &'a ProgressBar,
    bytes: u64,
    /// The file ended before the length it had when opened.
    short: bool,
    read_error: Option<std::io::Error>,
}

impl<'a, R: Read> Counting<'a, R> {
    fn new(inner: std::io::Take<R>, bar: &'a ProgressBar) -> Self {
        Counting {
            inner,
            bar,
            bytes: 0,
            short: false,
            read_error: None,
        }
    }
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() && self.inner.limit() > 0 => {
                self.short = true;
                Ok(0)
            }
            Ok(n) => {
                self.bytes += n as u64;
                self.bar.inc(n as u64);
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let kind = e.kind();
                let message = e.to_string();
                self.read_error = Some(e);
                Err(std::io::Error::new(kind, message))
            }
        }
    }
}
