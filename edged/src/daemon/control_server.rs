//! The daemon's side of the control socket (protocol in [`crate::control`]).
//!
//! Blocking threads, not async tasks: every request is a short read of the store or the ledger,
//! or a streamed import/export whose disk work is blocking anyway. At most
//! [`CONTROL_CONNECTIONS_MAX`] connections are served at once.

use std::io::{BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use store::{IngestOptions, IngestOutcome, SegmentId};

use super::{Daemon, views};
use crate::control::{
    CONTROL_CONNECTIONS_MAX, CONTROL_IDLE_TIMEOUT_MS, Request, Response, read_frame, write_frame,
};
use crate::exit;

/// The running control server; [`ControlServer::stop`] closes it and removes the socket file.
pub struct ControlServer {
    path: PathBuf,
    stopping: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn start(daemon: Arc<Daemon>) -> anyhow::Result<ControlServer> {
    let path = daemon.cfg.control_socket.clone();
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            anyhow::bail!(
                "control socket {} is in use by another process",
                path.display()
            );
        }
        // Left by a daemon that did not stop cleanly.
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove stale control socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(&path).with_context(|| format!("control_socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    let thread = std::thread::Builder::new()
        .name("edged-control".into())
        .spawn(move || accept_loop(listener, daemon, flag))
        .context("cannot start the control thread")?;
    Ok(ControlServer {
        path,
        stopping,
        thread: Some(thread),
    })
}

impl ControlServer {
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop. If the socket file was removed meanwhile, nothing can reach the
        // listener any more: leave its thread (it ends with the process) instead of waiting on
        // it forever.
        let woken = UnixStream::connect(&self.path).is_ok();
        if let Some(t) = self.thread.take().filter(|_| woken) {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: UnixListener, daemon: Arc<Daemon>, stopping: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut conn) = conn else { continue };
        if active.fetch_add(1, Ordering::SeqCst) >= CONTROL_CONNECTIONS_MAX {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = write_frame(
                &mut conn,
                &Response::Error {
                    code: exit::BUSY,
                    message: "too many control connections; try again".into(),
                },
            );
            continue;
        }
        let daemon = daemon.clone();
        let active = active.clone();
        let spawned = std::thread::Builder::new()
            .name("edged-control-conn".into())
            .spawn(move || {
                serve_connection(conn, &daemon);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            tracing::error!("cannot start a control connection thread");
        }
    }
}

fn serve_connection(conn: UnixStream, daemon: &Daemon) {
    let timeout = Some(Duration::from_millis(CONTROL_IDLE_TIMEOUT_MS));
    let _ = conn.set_read_timeout(timeout);
    let _ = conn.set_write_timeout(timeout);
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let request: Request = match read_frame(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let _ = write_frame(
                    &mut writer,
                    &Response::Error {
                        code: exit::USAGE,
                        message: format!("bad control request: {e}"),
                    },
                );
                return;
            }
        };
        let keep_going = match request {
            Request::Export { id } => export(daemon, &id, &mut writer),
            Request::Import { file_name, len } => {
                let response = import(daemon, &file_name, len, &mut reader);
                write_frame(&mut writer, &response).is_ok()
            }
            other => write_frame(&mut writer, &answer(daemon, other)).is_ok(),
        };
        if !keep_going {
            return;
        }
    }
}

fn ok(body: serde_json::Value) -> Response {
    Response::Ok { body }
}

fn failed(code: u8, e: impl std::fmt::Display) -> Response {
    Response::Error {
        code,
        message: e.to_string(),
    }
}

fn answer(d: &Daemon, request: Request) -> Response {
    let result = match request {
        Request::Status => views::status(d).map(ok),
        Request::Segments => views::segments(d).map(ok),
        Request::Peers => Ok(ok(views::peers(d))),
        Request::DlqList => views::dead_letters(d).map(ok),
        Request::DlqRequeue { peer, segment } => dlq(d, &peer, segment.as_deref(), true),
        Request::DlqPurge { peer, segment } => dlq(d, &peer, segment.as_deref(), false),
        Request::ExportSelect { all, channel, ids } => select(d, all, channel, &ids),
        Request::Import { .. } | Request::Export { .. } => {
            Ok(failed(exit::USAGE, "streamed requests are handled apart"))
        }
    };
    result.unwrap_or_else(|e| failed(exit::FAILED, format!("{e:#}")))
}

fn dlq(d: &Daemon, peer: &str, segment: Option<&str>, requeue: bool) -> anyhow::Result<Response> {
    let peer: relay::PeerId = match peer.parse() {
        Ok(p) => p,
        Err(e) => return Ok(failed(exit::USAGE, format!("--peer {peer}: {e}"))),
    };
    let now = crate::clock::now_ms();
    let letters = d.relay.dead_letters()?;
    let mut keys: Vec<relay::JobKey> = letters
        .into_iter()
        .filter(|l| l.key.peer == peer)
        .filter(|l| {
            segment.is_none_or(|s| l.key.seg.to_string().starts_with(&s.to_ascii_lowercase()))
        })
        .map(|l| l.key)
        .collect();
    keys.dedup();
    if keys.is_empty() {
        return Ok(failed(
            exit::FAILED,
            format!(
                "no dead letter for peer {peer}{}",
                segment
                    .map(|s| format!(" and segment {s}"))
                    .unwrap_or_default()
            ),
        ));
    }
    let mut done = Vec::new();
    for key in keys {
        let result = if requeue {
            format!("{:?}", d.relay.requeue_blocking(&key, now)?)
        } else {
            format!("{:?}", d.relay.purge_blocking(&key, now)?)
        };
        done.push(json!({ "segment": key.seg.to_string(), "peer": key.peer.to_string(), "result": result }));
    }
    Ok(ok(serde_json::Value::Array(done)))
}

fn select(
    d: &Daemon,
    all: bool,
    channel: Option<String>,
    ids: &[String],
) -> anyhow::Result<Response> {
    let chosen: Vec<String> = if all {
        d.store
            .list()?
            .into_iter()
            .map(|s| s.id.to_string())
            .collect()
    } else if let Some(channel) = channel {
        d.store
            .list()?
            .into_iter()
            .filter(|s| s.row.channel == channel)
            .map(|s| s.id.to_string())
            .collect()
    } else {
        let mut out = Vec::new();
        for prefix in ids {
            match d.store.resolve(prefix) {
                Ok(id) => out.push(id.to_string()),
                Err(e) => return Ok(failed(exit::FAILED, e)),
            }
        }
        out
    };
    Ok(ok(json!(chosen)))
}

/// Stores `len` bytes of a `.seg` stream read from the control connection. Whatever happens,
/// exactly `len` bytes are consumed so the connection stays in step.
fn import<R: Read>(d: &Daemon, file_name: &str, len: u64, reader: &mut R) -> Response {
    let mut limited = reader.take(len);
    let now = crate::clock::now_ms();
    let result = d
        .relay
        .ingest_reader(&mut limited, &IngestOptions::import(), now);
    // Drain what the ingest did not read (a rejected header, a file longer than declared).
    let _ = std::io::copy(&mut limited, &mut std::io::sink());
    match result {
        Ok(IngestOutcome::Stored(s)) => {
            d.counters.count_stored();
            tracing::info!(seg_id = %s.id, file = file_name, bytes = s.row.file_len, "segment imported");
            ok(json!({ "status": "imported", "id": s.id.to_string(), "bytes": s.row.file_len }))
        }
        Ok(IngestOutcome::AlreadyHave { id, .. }) => {
            d.counters.count_duplicate();
            ok(json!({ "status": "already_present", "id": id.to_string() }))
        }
        Err(e) => {
            d.counters.count_rejected(reject_reason(&e));
            tracing::warn!(file = file_name, error = %e, "import rejected");
            ok(json!({ "status": "rejected", "reason": e.to_string() }))
        }
    }
}

/// A short stable label of why an ingest was refused (metrics label).
pub fn reject_reason(e: &store::IngestError) -> &'static str {
    use store::IngestError as E;
    use store::manifest::VerifyError as V;
    match e {
        E::Verify(V::UntrustedPublisher { .. }) => "untrusted_publisher",
        E::Verify(V::BadSignature) => "bad_signature",
        E::Verify(V::Expired { .. }) => "expired",
        E::Verify(V::CreatedInFuture { .. }) => "created_in_future",
        E::Format(store::segfile::SegFileError::HashMismatch { .. }) => "hash_mismatch",
        E::Format(_) => "malformed",
        E::StoreFull { .. } => "store_full",
        E::Busy(_) => "busy",
        E::Io { .. } => "io",
        E::Protocol { .. } => "protocol",
        E::CorruptCopy { .. } => "corrupt_copy",
        E::Store(_) => "store",
    }
}

/// Streams a stored segment back: a header frame with its length, then the file's bytes,
/// verified against the manifest hash as they go (a corrupt copy is quarantined and the
/// connection cut, so the client never completes the file).
fn export<W: std::io::Write>(d: &Daemon, id: &str, writer: &mut W) -> bool {
    let now = crate::clock::now_ms();
    let opened = d
        .store
        .resolve(id)
        .and_then(|id: SegmentId| d.store.open_for_read(&id, now));
    let reader = match opened {
        Ok(r) => r,
        Err(e) => return write_frame(writer, &failed(exit::FAILED, e)).is_ok(),
    };
    let header = Response::ExportStream {
        id: reader.id().to_string(),
        len: reader.row().file_len,
    };
    if write_frame(writer, &header).is_err() {
        return false;
    }
    match reader.copy_to(writer, now) {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(seg_id = id, error = %e, "export stream failed");
            false
        }
    }
}
