//! The daemon's side of the control socket (protocol and bounds in [`crate::control`]).
//!
//! # The socket file
//!
//! [`bind`] never removes what it did not make: whatever exists at `control_socket` is examined
//! without following it. A socket nobody answers on (left by a daemon that did not stop
//! cleanly) is removed; a socket that answers is in use (exit 4); anything else — a regular
//! file, a directory, a symlink, a FIFO, a device — is a config error naming the key and the
//! file (exit 3), and is left untouched. At shutdown the socket file is removed only if it is
//! still the one this daemon bound (same device and inode).
//!
//! # Connections
//!
//! Accepting runs on the runtime; each admitted connection is served by a blocking thread
//! (every request is a short read of the store or the ledger, or a streamed import/export whose
//! disk work is blocking anyway). What one connection may hold is bounded in time from the
//! first byte of a request, not by an idle gap that each byte restarts: see
//! [`crate::control`] for the rules, [`crate::control::ControlLimits`] for the knobs and
//! `control_io` for the bounded reads and writes. Admission keeps at most `connections_max`
//! connections; at the cap it closes the one waiting longest for a request of its own, never
//! one executing a request, and otherwise waits until one ends.
//! Warnings a client can cause (bad requests, late requests, slow or cut streams, rejected
//! imports, closed connections) go through one [`LogLimiter`], per client uid and reason.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use net::logcap::LogLimiter;
use serde_json::json;
use store::{IngestOptions, IngestOutcome, SegmentId};
use tokio::sync::{Notify, watch};

use super::control_io::{BodyReader, Cut, RateWriter, RequestRead, read_request};
use super::listing::{self, ListError, Pages};
use super::pipeline::{CONTROL_IMPORT_PIPELINED_BYTES_MAX, Pipeline};
use super::{Daemon, views};
use super::{fsck, need};
use crate::control::{
    CONTROL_FILE_NAME_BYTES_MAX, CONTROL_IMPORT_BYTES_MAX, CONTROL_IMPORT_OUTBOARD_BYTES_MAX,
    ControlLimits, Request, Response, write_frame,
};
use crate::exit;
use crate::output::Escaped;

/// Pause after a failed `accept` (out of file descriptors, …) before the next one.
pub const CONTROL_ACCEPT_RETRY_MS: u64 = 100;
/// While every connection slot is executing a request, how often admission looks again even
/// without a wake-up.
pub const CONTROL_ADMIT_RECHECK_MS: u64 = 100;
/// Buffer of each connection's reader, in bytes.
pub const CONTROL_READ_BUF_BYTES: usize = 64 * 1024;
/// How long a pipelined import waits for another ingest of the same segment to end before it
/// is answered "busy".
pub const CONTROL_IMPORT_BUSY_WAIT_MS: u64 = 10_000;
/// While it waits, how often it tries again.
pub const CONTROL_IMPORT_BUSY_RETRY_MS: u64 = 5;
/// Threads of connections (served, or closed and still ending) at most, as a multiple of
/// `connections_max`: a closed connection's thread ends at its next read, but a flood of
/// admissions must not outrun that.
pub const CONTROL_THREADS_PER_CONNECTION_MAX: usize = 2;

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlSocketError {
    /// Something that is not a socket is at the path: never removed.
    #[error(
        "{config}: key `control_socket`: {path} is {kind}, not a socket; it was left as it is (set control_socket to a free path)"
    )]
    NotASocket {
        config: PathBuf,
        path: PathBuf,
        kind: &'static str,
    },
    /// A socket at the path answers: another process serves it.
    #[error(
        "{config}: key `control_socket`: {path} is in use by another process (another edged daemon?)"
    )]
    InUse { config: PathBuf, path: PathBuf },
    /// A file system operation on the path failed.
    #[error("{config}: key `control_socket`: cannot {op} {path}: {source}")]
    Io {
        config: PathBuf,
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
}

impl ControlSocketError {
    /// The documented exit code: in use is "held by another process", the rest is config.
    pub fn exit_code(&self) -> u8 {
        match self {
            ControlSocketError::InUse { .. } => exit::BUSY,
            _ => exit::CONFIG,
        }
    }
}

/// What a file type is, for messages.
fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

/// (device, inode) of what is at `path` now, if it is a socket; never follows a symlink.
fn socket_ident(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.file_type()
        .is_socket()
        .then(|| (meta.dev(), meta.ino()))
}

/// The bound control socket, not yet served. Dropping it removes the socket file if it is
/// still the one bound here.
#[derive(Debug)]
pub struct BoundSocket {
    path: PathBuf,
    ident: (u64, u64),
    listener: Option<UnixListener>,
}

impl BoundSocket {
    /// Removes the socket file if it is still ours (same device and inode): a file someone put
    /// at the path since is not ours to remove.
    fn remove_if_ours(&self) {
        let path = Escaped(&self.path.to_string_lossy()).to_string();
        if socket_ident(&self.path) == Some(self.ident) {
            let _ = std::fs::remove_file(&self.path);
        } else if std::fs::symlink_metadata(&self.path).is_ok() {
            tracing::warn!(
                path = %path,
                "control socket file was replaced while the daemon ran; left as it is"
            );
        } else {
            tracing::debug!(path = %path, "control socket file already gone");
        }
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        self.remove_if_ours();
    }
}

/// Examines `cfg.control_socket` (without following it), removes only a stale socket, and binds
/// a new one with mode 0600.
pub fn bind(cfg: &crate::config::Config) -> Result<BoundSocket, ControlSocketError> {
    let path = cfg.control_socket.clone();
    let io = |op: &'static str| {
        let (config, path) = (cfg.path.clone(), path.clone());
        move |source| ControlSocketError::Io {
            config,
            path,
            op,
            source,
        }
    };
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("examine")(e)),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ControlSocketError::NotASocket {
                config: cfg.path.clone(),
                path,
                kind: kind_of(meta.file_type()),
            });
        }
        Ok(_) => match UnixStream::connect(&path) {
            Ok(_) => {
                return Err(ControlSocketError::InUse {
                    config: cfg.path.clone(),
                    path,
                });
            }
            // Nobody listens: left by a daemon that did not stop cleanly.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(&path).map_err(io("remove the stale socket"))?;
                tracing::info!(path = %Escaped(&path.to_string_lossy()), "stale control socket removed");
            }
            Err(e) => return Err(io("probe the socket")(e)),
        },
    }
    let listener = UnixListener::bind(&path).map_err(io("bind"))?;
    let ident = socket_ident(&path).ok_or_else(|| {
        io("examine the bound socket")(std::io::Error::other("it is gone or not a socket"))
    })?;
    let socket = BoundSocket {
        path: path.clone(),
        ident,
        listener: Some(listener),
    };
    // On failure `socket` is dropped, which removes the file bound above.
    std::fs::set_permissions(&socket.path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("restrict the permissions of"))?;
    Ok(socket)
}

/// The running control server; [`ControlServer::stop`] ends it and removes the socket file.
#[derive(Debug)]
pub struct ControlServer {
    socket: BoundSocket,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts serving `socket` until `stop` becomes true.
pub fn start(
    mut socket: BoundSocket,
    daemon: Arc<Daemon>,
    stop: watch::Receiver<bool>,
) -> Result<ControlServer, ControlSocketError> {
    let io = |op: &'static str| {
        let (config, path) = (daemon.cfg.path.clone(), socket.path.clone());
        move |source| ControlSocketError::Io {
            config,
            path,
            op,
            source,
        }
    };
    let listener = socket
        .listener
        .take()
        .ok_or_else(|| io("serve")(std::io::Error::other("the socket is already being served")))?;
    listener.set_nonblocking(true).map_err(io("serve"))?;
    let listener = tokio::net::UnixListener::from_std(listener).map_err(io("serve"))?;
    let shared = Arc::new(Shared::new(daemon.cfg.control));
    let task = tokio::spawn(accept_loop(listener, daemon, shared.clone(), stop));
    Ok(ControlServer {
        socket,
        shared,
        task,
    })
}

impl ControlServer {
    /// Stops accepting (the stop signal must have been sent), closes every connection, waits
    /// at most `grace` for their threads to end, and removes the socket file if it is ours.
    pub async fn stop(self, grace: Duration) {
        let ControlServer {
            socket,
            shared,
            task,
        } = self;
        let _ = task.await;
        shared.close_all();
        let deadline = Instant::now() + grace;
        while shared.threads() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Removes the file if it is still ours.
        drop(socket);
    }
}

// ---------------------------------------------------------------------------------------------
// Admission.

/// State shared by the accept task and the connection threads.
#[derive(Debug)]
struct Shared {
    limits: ControlLimits,
    conns: Mutex<Conns>,
    /// A connection ended or started waiting for a request: admission may find room.
    changed: Notify,
    /// Imports and exports streaming now.
    streams: AtomicUsize,
    log: LogLimiter,
}

#[derive(Debug, Default)]
struct Conns {
    next_id: u64,
    /// Admitted connections, by admission order.
    live: BTreeMap<u64, Conn>,
    /// Connection threads still running, admitted or closed.
    threads: usize,
}

#[derive(Debug)]
struct Conn {
    /// A handle on the socket, to close it from outside its thread.
    stream: UnixStream,
    who: String,
    /// Since when it waits for a request of its own (idle, or still sending its frame); `None`
    /// while a request is executed.
    waiting_since: Option<Instant>,
}

/// What admitting a connection gave.
enum Admit {
    /// Admitted under this id; `shed` names the client of a connection closed to make room.
    In { id: u64, shed: Option<String> },
    /// Every slot executes a request: wait until one ends or starts waiting.
    Full,
}

impl Shared {
    fn new(limits: ControlLimits) -> Shared {
        Shared {
            limits,
            conns: Mutex::new(Conns::default()),
            changed: Notify::new(),
            streams: AtomicUsize::new(0),
            log: LogLimiter::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits `stream`, closing the connection that has waited longest for a request when
    /// every slot is taken.
    fn admit(&self, stream: &UnixStream, who: &str) -> std::io::Result<Admit> {
        let mut conns = self.lock();
        let threads_max = self.limits.connections_max * CONTROL_THREADS_PER_CONNECTION_MAX;
        if conns.threads >= threads_max {
            return Ok(Admit::Full);
        }
        let mut shed = None;
        if conns.live.len() >= self.limits.connections_max {
            let victim = conns
                .live
                .iter()
                .filter_map(|(id, c)| c.waiting_since.map(|since| (since, *id)))
                .min();
            let Some((_, victim)) = victim else {
                return Ok(Admit::Full);
            };
            if let Some(c) = conns.live.remove(&victim) {
                let _ = c.stream.shutdown(Shutdown::Both);
                shed = Some(c.who);
            }
        }
        let handle = stream.try_clone()?;
        let id = conns.next_id;
        conns.next_id += 1;
        conns.live.insert(
            id,
            Conn {
                stream: handle,
                who: who.to_owned(),
                waiting_since: Some(Instant::now()),
            },
        );
        conns.threads += 1;
        Ok(Admit::In { id, shed })
    }

    /// Marks `id` as waiting for its next request; false if it was closed meanwhile.
    fn set_waiting(&self, id: u64) -> bool {
        let present = match self.lock().live.get_mut(&id) {
            Some(c) => {
                c.waiting_since = Some(Instant::now());
                true
            }
            None => false,
        };
        self.changed.notify_one();
        present
    }

    /// Marks `id` as executing a request (not to be closed for room); false if it was closed
    /// meanwhile.
    fn set_executing(&self, id: u64) -> bool {
        match self.lock().live.get_mut(&id) {
            Some(c) => {
                c.waiting_since = None;
                true
            }
            None => false,
        }
    }

    /// The thread of `id` ends.
    fn leave(&self, id: u64) {
        {
            let mut conns = self.lock();
            conns.live.remove(&id);
            conns.threads = conns.threads.saturating_sub(1);
        }
        self.changed.notify_one();
    }

    fn threads(&self) -> usize {
        self.lock().threads
    }

    /// Closes every connection (shutdown): their threads end at their next read or write.
    fn close_all(&self) {
        for c in self.lock().live.values() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }

    /// A slot for an import or export, if fewer than `streams_max` run.
    fn stream_slot(&self) -> Option<StreamSlot<'_>> {
        let taken = self
            .streams
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.limits.streams_max).then_some(n + 1)
            });
        // Built only when taken: dropping a slot gives one back.
        taken.is_ok().then(|| StreamSlot(self))
    }
}

/// One of the `streams_max` stream slots, released when dropped.
struct StreamSlot<'a>(&'a Shared);

impl Drop for StreamSlot<'_> {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Leaves the registry when a connection thread ends, however it ends.
struct Leave<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.shared.leave(self.id);
    }
}

async fn accept_loop(
    listener: tokio::net::UnixListener,
    daemon: Arc<Daemon>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _addr)) => stream,
            Err(e) => {
                net::warn_limited!(shared.log, "accept", "accept_failed", error = %e, "control socket: accept failed");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    () = tokio::time::sleep(Duration::from_millis(CONTROL_ACCEPT_RETRY_MS)) => {}
                }
                continue;
            }
        };
        // The socket is 0600, so this is the daemon's own user or root; the uid still tells
        // clients apart in the logs and in the log budget.
        let who = stream
            .peer_cred()
            .map(|c| format!("uid {}", c.uid()))
            .unwrap_or_else(|_| "unknown".into());
        let stream = match stream.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "control connection unusable");
                continue;
            }
        };
        let id = loop {
            match shared.admit(&stream, &who) {
                Ok(Admit::In { id, shed }) => {
                    if let Some(victim) = shed {
                        net::warn_limited!(
                            shared.log,
                            &victim,
                            "shed",
                            client = %victim,
                            "control socket: every connection slot taken; closed the connection that waited longest for a request"
                        );
                    }
                    break Some(id);
                }
                Ok(Admit::Full) => {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        () = shared.changed.notified() => {}
                        () = tokio::time::sleep(Duration::from_millis(CONTROL_ADMIT_RECHECK_MS)) => {}
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "control connection unusable");
                    break None;
                }
            }
        };
        let Some(id) = id else { continue };
        let (d, s) = (daemon.clone(), shared.clone());
        let runtime = tokio::runtime::Handle::current();
        let spawned = std::thread::Builder::new()
            .name("edged-control-conn".into())
            .spawn(move || serve_connection(&d, &s, &runtime, id, stream, &who));
        if spawned.is_err() {
            shared.leave(id);
            tracing::error!("cannot start a control connection thread");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Serving one connection.

fn serve_connection(
    daemon: &Arc<Daemon>,
    shared: &Arc<Shared>,
    runtime: &tokio::runtime::Handle,
    id: u64,
    conn: UnixStream,
    who: &str,
) {
    let _leave = Leave { shared, id };
    let limits = shared.limits;
    let Ok(writer) = conn.try_clone() else {
        return;
    };
    let respond =
        |response: &Response| write_frame(&mut RateWriter::new(&writer, &limits), response).is_ok();
    let mut reader = BufReader::with_capacity(CONTROL_READ_BUF_BYTES, conn);
    // Pipelined imports in flight, answered in order by a thread of their own; anything written
    // directly on the connection waits until they are (`settled`).
    let mut pipeline: Option<Pipeline> = None;
    let settled = |pipeline: &Option<Pipeline>| pipeline.as_ref().is_none_or(Pipeline::drain);
    // Held while pipelined imports are in flight: the connection counts as one stream.
    let mut slot: Option<StreamSlot<'_>> = None;
    loop {
        let importing = pipeline.as_ref().is_some_and(|p| p.in_flight() > 0);
        if !importing {
            slot = None;
        }
        // A connection with imports in flight is executing them: never closed to make room.
        let present = if importing {
            shared.set_executing(id)
        } else {
            shared.set_waiting(id)
        };
        if !present {
            return;
        }
        let request = match read_request(&mut reader, &limits) {
            RequestRead::Request(r) => r,
            RequestRead::Closed => {
                settled(&pipeline);
                return;
            }
            RequestRead::Idle => {
                settled(&pipeline);
                tracing::debug!(client = who, "control connection idle; closed");
                return;
            }
            RequestRead::Late => {
                net::warn_limited!(
                    shared.log,
                    who,
                    "request_late",
                    client = who,
                    deadline_ms = limits.request_deadline_ms,
                    "control socket: request not complete by its deadline; connection closed"
                );
                if settled(&pipeline) {
                    respond(&failed(
                        exit::USAGE,
                        format!(
                            "request not complete within {} ms of its first byte",
                            limits.request_deadline_ms
                        ),
                    ));
                }
                return;
            }
            RequestRead::Bad(why) => {
                net::warn_limited!(
                    shared.log,
                    who,
                    "bad_request",
                    client = who,
                    why = %Escaped(&why),
                    "control socket: bad request; connection closed"
                );
                if settled(&pipeline) {
                    respond(&failed(exit::USAGE, format!("bad control request: {why}")));
                }
                return;
            }
        };
        if !shared.set_executing(id) {
            return;
        }
        let keep_going = match request {
            Request::Import {
                file_name,
                len,
                outboard_len: 0,
            } if len <= CONTROL_IMPORT_PIPELINED_BYTES_MAX => {
                if pipeline.is_none() {
                    pipeline = writer
                        .try_clone()
                        .and_then(|w| Pipeline::start(w, &limits))
                        .ok();
                }
                let Some(p) = pipeline.as_ref() else {
                    return;
                };
                if slot.is_none() {
                    slot = shared.stream_slot();
                }
                let import = Pipelined {
                    daemon,
                    shared,
                    runtime,
                    who,
                    holds_slot: slot.is_some(),
                };
                import.one(p, file_name, len, &mut reader)
            }
            Request::Import {
                file_name,
                len,
                outboard_len,
            } => {
                if !settled(&pipeline) {
                    return;
                }
                let streaming = slot.take().or_else(|| shared.stream_slot());
                match streaming {
                    Some(_slot) => {
                        let body = Body { len, outboard_len };
                        let (response, keep) =
                            import(daemon, shared, who, &file_name, body, &mut reader);
                        respond(&response) && keep
                    }
                    None => {
                        // The body that follows is not read: answer and close.
                        respond(&busy(&limits));
                        false
                    }
                }
            }
            Request::Export { id } => {
                if !settled(&pipeline) {
                    return;
                }
                match shared.stream_slot() {
                    Some(_slot) => export(daemon, &id, &mut RateWriter::new(&writer, &limits)),
                    None => respond(&busy(&limits)),
                }
            }
            other if other.is_listing() => {
                settled(&pipeline)
                    && list(
                        daemon,
                        shared,
                        who,
                        other,
                        &mut RateWriter::new(&writer, &limits),
                    )
            }
            other => settled(&pipeline) && respond(&answer(daemon, other)),
        };
        if !keep_going {
            settled(&pipeline);
            return;
        }
    }
}

/// One pipelined import on a connection (see [`pipeline`](super::pipeline)).
struct Pipelined<'a> {
    daemon: &'a Arc<Daemon>,
    shared: &'a Arc<Shared>,
    runtime: &'a tokio::runtime::Handle,
    who: &'a str,
    /// The connection holds one of the `streams_max` stream slots.
    holds_slot: bool,
}

impl Pipelined<'_> {
    /// Waits for room in the window, reads the whole body and hands it to an ingest of its own;
    /// its answer is queued in request order. Returns whether the connection can carry another
    /// request: not once the body was cut or the connection broke.
    fn one(
        &self,
        p: &Pipeline,
        file_name: String,
        len: u64,
        reader: &mut BufReader<UnixStream>,
    ) -> bool {
        let (shared, who) = (self.shared, self.who);
        if !p.admit(len) {
            return false;
        }
        let body = match read_body(reader, len, &shared.limits) {
            Ok(body) => body,
            Err(cut) => {
                let file = Escaped(&file_name);
                net::warn_limited!(shared.log, who, "import_cut", client = who, file = %file, why = %cut, "control socket: import cut before its verdict; nothing stored");
                p.push_now(len, failed(exit::FAILED, format!("import cut: {cut}")));
                return false;
            }
        };
        // Refusals are answered in order like any verdict; the body was read, so the
        // connection stays in step.
        if let Some(refused) = refuse_import(shared, who, &file_name, len) {
            p.push_now(len, refused);
            return true;
        }
        if !self.holds_slot {
            p.push_now(len, busy(&shared.limits));
            return true;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (d, s, who) = (self.daemon.clone(), self.shared.clone(), who.to_owned());
        // Dropped unsent if the runtime is shutting down: the answer then says so.
        drop(self.runtime.spawn_blocking(move || {
            let _ = tx.send(import_whole(&d, &s, &who, &file_name, &body));
        }));
        p.push(len, rx);
        true
    }
}

/// Reads exactly `len` bytes of an import body (at most
/// [`CONTROL_IMPORT_PIPELINED_BYTES_MAX`], checked by the caller) under the minimum-rate rule.
fn read_body(
    reader: &mut BufReader<UnixStream>,
    len: u64,
    limits: &ControlLimits,
) -> Result<Vec<u8>, Cut> {
    let mut body = BodyReader::new(reader, len, limits).map_err(|e| Cut::Failed(e.to_string()))?;
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    match std::io::Read::read_to_end(&mut body, &mut out) {
        Ok(_) if body.left == 0 => Ok(out),
        Ok(_) => Err(Cut::Closed {
            received: out.len() as u64,
        }),
        Err(e) => Err(body.cut.take().unwrap_or(Cut::Failed(e.to_string()))),
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

fn busy(limits: &ControlLimits) -> Response {
    failed(
        exit::FAILED,
        format!(
            "the daemon already runs {} imports and exports (control.streams_max); try again",
            limits.streams_max
        ),
    )
}

fn answer(d: &Daemon, request: Request) -> Response {
    let result = match request {
        Request::Status => views::status(d).map(ok),
        Request::Peers => Ok(ok(views::peers(d))),
        Request::Segments
        | Request::DlqList
        | Request::DlqRequeue { .. }
        | Request::DlqPurge { .. }
        | Request::ExportSelect { .. } => Ok(failed(exit::USAGE, "listings are handled apart")),
        Request::Import { .. } | Request::Export { .. } => {
            Ok(failed(exit::USAGE, "streamed requests are handled apart"))
        }
        Request::NeedHeld | Request::NeedStored | Request::NeedReceipts | Request::Fleet { .. } => {
            Ok(failed(exit::USAGE, "listings are handled apart"))
        }
        Request::NeedMerge { receipts, certs } => Ok(need::merge(d, &receipts, &certs)),
        Request::QuarantineList | Request::Sequences { .. } | Request::Recalled => {
            Ok(failed(exit::USAGE, "listings are handled apart"))
        }
        Request::Fsck { repair } => fsck::check(d, repair).map(ok),
        Request::QuarantineShow { id } => fsck::quarantine_show(d, &id).map(ok),
        Request::QuarantinePurge { ids, all } => fsck::quarantine_purge(d, &ids, all).map(ok),
        Request::Reload => Ok(match super::reload::reload(d, "edged reload") {
            Ok(applied) => ok(serde_json::to_value(&applied).unwrap_or_default()),
            Err(e) => failed(e.code, format!("{:#}", e.error)),
        }),
    };
    result.unwrap_or_else(|e| failed(exit::FAILED, format!("{e:#}")))
}

/// Answers a listing in pages (see [`listing`]). Returns whether the connection can carry
/// another request: not once writing to the client failed.
fn list<W: std::io::Write>(
    d: &Daemon,
    shared: &Shared,
    who: &str,
    request: Request,
    writer: &mut W,
) -> bool {
    let mut pages = Pages::new(writer, &shared.limits);
    let listed = match &request {
        Request::Segments => listing::segments(d, &mut pages),
        Request::DlqList => listing::dead_letters(d, &mut pages),
        Request::ExportSelect { all, channel, ids } => {
            listing::export_select(d, &mut pages, *all, channel.as_deref(), ids)
        }
        Request::DlqRequeue { peer, segment } => {
            listing::dlq_act(d, &mut pages, peer, segment.as_deref(), true)
        }
        Request::DlqPurge { peer, segment } => {
            listing::dlq_act(d, &mut pages, peer, segment.as_deref(), false)
        }
        Request::NeedHeld => need::held(d, &mut pages),
        Request::NeedStored => need::stored(d, &mut pages),
        Request::NeedReceipts => need::receipts(d, &mut pages),
        Request::Fleet { query } => listing::fleet(d, &mut pages, query),
        Request::QuarantineList => fsck::quarantine_list(d, &mut pages),
        Request::Sequences { channel } => listing::sequences(d, &mut pages, channel.as_deref()),
        Request::Recalled => listing::recalled(d, &mut pages),
        _ => Err(ListError::Failed {
            code: exit::USAGE,
            message: "not a listing".into(),
        }),
    };
    let ended = listed.and_then(|()| pages.finish().map(|_| ()));
    match ended {
        Ok(()) => true,
        Err(ListError::Failed { code, message }) => {
            write_frame(writer, &failed(code, message)).is_ok()
        }
        Err(ListError::Client(e)) => {
            net::warn_limited!(
                shared.log,
                who,
                "listing_cut",
                client = who,
                error = %e,
                "control socket: listing cut (client gone or too slow); connection closed"
            );
            false
        }
    }
}

/// What follows an import request: the outboard, then the `.seg` file.
struct Body {
    len: u64,
    outboard_len: u64,
}

/// Stores the `len` bytes of a `.seg` stream that follow an `Import` request (after its
/// `outboard_len` bytes of outboard). Returns the answer and whether the connection can carry
/// another request: only if the whole body was read (otherwise the rest of it is still on its
/// way, and the connection is closed after the answer). An import cut by the client (it closed
/// early or sent too slowly) reached no verdict: it is answered as cut, stores nothing and is
/// not counted as received (INV-26).
fn import(
    d: &Daemon,
    shared: &Shared,
    who: &str,
    file_name: &str,
    Body { len, outboard_len }: Body,
    reader: &mut BufReader<UnixStream>,
) -> (Response, bool) {
    if let Some(refused) = refuse_import(shared, who, file_name, len) {
        return (refused, false);
    }
    if outboard_len > CONTROL_IMPORT_OUTBOARD_BYTES_MAX {
        net::warn_limited!(shared.log, who, "import_outboard_too_large", client = who, file = %Escaped(file_name), outboard_len, "control socket: import with an outboard larger than any segment's refused");
        return (
            failed(
                exit::USAGE,
                format!(
                    "an outboard of {outboard_len} bytes is larger than any segment's ({CONTROL_IMPORT_OUTBOARD_BYTES_MAX} bytes)"
                ),
            ),
            false,
        );
    }
    let mut body = match BodyReader::new(reader, outboard_len + len, &shared.limits) {
        Ok(b) => b,
        Err(e) => return (failed(exit::FAILED, e), false),
    };
    // Cannot truncate: at most CONTROL_IMPORT_OUTBOARD_BYTES_MAX (2 MiB), checked above.
    let mut outboard = vec![0u8; outboard_len as usize];
    if let Err(e) = body.read_exact(&mut outboard) {
        return (
            failed(exit::FAILED, format!("import cut in its outboard: {e}")),
            false,
        );
    }
    let now = d.clock.now_ms();
    let opts = IngestOptions::import().with_file_len(len);
    let result = if outboard_len == 0 {
        d.relay.ingest_reader(&mut body, &opts, now)
    } else {
        // Forwarded to the peers as soon as it is in flight, verified group by group.
        let node = d.node.clone();
        let mut forward = move |id| node.forward_in_flight(id);
        d.relay
            .ingest_reader_forwarding(&mut body, &opts, now, &outboard, &mut forward)
    };
    let whole = body.left == 0;
    let cut = body.cut.take();
    let file = Escaped(file_name);
    match (result, cut) {
        (Err(_), Some(cut)) => {
            net::warn_limited!(shared.log, who, "import_cut", client = who, file = %file, why = %cut, "control socket: import cut before its verdict; nothing stored");
            (failed(exit::FAILED, format!("import cut: {cut}")), false)
        }
        (result, _) => (verdict(d, shared, who, file_name, result), whole),
    }
}

/// Stores a whole `.seg` file received in memory (a pipelined import).
fn import_whole(d: &Daemon, shared: &Shared, who: &str, file_name: &str, body: &[u8]) -> Response {
    let opts = IngestOptions::import().with_file_len(body.len() as u64);
    let waiting_since = Instant::now();
    loop {
        let result = d.relay.ingest_reader(body, &opts, d.clock.now_ms());
        // The same segment is being stored by another ingest: a copy earlier in the same
        // pipeline (a stick may hold one segment under two names), or a peer's transfer. Its
        // verdict comes soon; then this copy is checked against what it stored.
        let busy = matches!(result, Err(store::IngestError::Busy(_)));
        if busy && waiting_since.elapsed() < Duration::from_millis(CONTROL_IMPORT_BUSY_WAIT_MS) {
            std::thread::sleep(Duration::from_millis(CONTROL_IMPORT_BUSY_RETRY_MS));
            continue;
        }
        return verdict(d, shared, who, file_name, result);
    }
}

/// Why an import is refused before its body is looked at: a file name or a length beyond
/// their bounds.
fn refuse_import(shared: &Shared, who: &str, file_name: &str, len: u64) -> Option<Response> {
    if file_name.len() > CONTROL_FILE_NAME_BYTES_MAX {
        net::warn_limited!(
            shared.log,
            who,
            "import_name_too_long",
            client = who,
            bytes = file_name.len(),
            "control socket: import with an oversized file name refused"
        );
        return Some(failed(
            exit::USAGE,
            format!(
                "a file name of {} bytes is longer than {CONTROL_FILE_NAME_BYTES_MAX}",
                file_name.len()
            ),
        ));
    }
    if len > CONTROL_IMPORT_BYTES_MAX {
        let file = Escaped(file_name);
        net::warn_limited!(shared.log, who, "import_too_large", client = who, file = %file, len, "control socket: import larger than any segment refused");
        return Some(failed(
            exit::USAGE,
            format!(
                "an import of {len} bytes is larger than any segment ({CONTROL_IMPORT_BYTES_MAX} bytes)"
            ),
        ));
    }
    None
}

/// The answer to an import that reached a verdict, counted (INV-26) and logged.
fn verdict(
    d: &Daemon,
    shared: &Shared,
    who: &str,
    file_name: &str,
    result: Result<IngestOutcome<relay::Scheduled>, store::IngestError>,
) -> Response {
    let file = Escaped(file_name);
    match result {
        Ok(IngestOutcome::Stored(s)) => {
            d.counters.count_stored();
            tracing::info!(seg_id = %s.id, file = %file, bytes = s.row.file_len, "segment imported");
            ok(json!({ "status": "imported", "id": s.id.to_string(), "bytes": s.row.file_len }))
        }
        Ok(IngestOutcome::AlreadyHave { id, .. }) => {
            d.counters.count_duplicate();
            ok(json!({ "status": "already_present", "id": id.to_string() }))
        }
        Err(store::IngestError::StoreFull {
            needed_bytes,
            available_bytes,
        }) => {
            d.counters
                .count_rejected(reject_reason(&store::IngestError::StoreFull {
                    needed_bytes,
                    available_bytes,
                }));
            let reason = crate::storefull::reason(&d.store, needed_bytes, available_bytes);
            net::warn_limited!(shared.log, who, "import_store_full", client = who, file = %file, needed_bytes, available_bytes, "import did not fit: store full");
            ok(json!({ "status": "store_full", "reason": reason }))
        }
        Err(e) => {
            d.counters.count_rejected(reject_reason(&e));
            net::warn_limited!(shared.log, who, "import_rejected", client = who, file = %file, error = %Escaped(&e.to_string()), "import rejected");
            ok(json!({ "status": "rejected", "reason": e.to_string() }))
        }
    }
}

/// A short stable label of why an ingest was refused (metrics label).
pub fn reject_reason(e: &store::IngestError) -> &'static str {
    use store::IngestError as E;
    use store::manifest::VerifyError as V;
    use store::segfile::SegFileError;
    match e {
        E::Verify(V::UntrustedPublisher { .. }) => "untrusted_publisher",
        E::Verify(V::BelowThreshold { .. }) => "below_threshold",
        E::Verify(V::RootExpired { .. } | V::ChannelExpired { .. }) => "stale",
        E::Verify(V::BadSignature) => "bad_signature",
        E::Verify(V::Expired { .. }) => "expired",
        E::Verify(V::CreatedInFuture { .. }) => "created_in_future",
        E::Format(
            SegFileError::HashMismatch { .. }
            | SegFileError::GroupMismatch(_)
            | SegFileError::BadOutboard(_),
        ) => "hash_mismatch",
        E::Format(
            SegFileError::TruncatedPayload { .. }
            | SegFileError::PayloadTooLong
            | SegFileError::FileLengthMismatch { .. },
        ) => "length_mismatch",
        E::Format(_) => "malformed",
        E::StoreFull { .. } => "store_full",
        E::Busy(_) => "busy",
        E::Io { .. } => "io",
        E::Protocol { .. } => "protocol",
        E::CorruptCopy { .. } => "corrupt_copy",
        E::Store(_) => "store",
        E::Superseded { .. } => "superseded",
        E::Recalled { .. } => "recalled",
        E::RootRefused { .. } => "root_refused",
        E::RecallRefused { .. } => "recall_refused",
    }
}

/// Streams a stored segment back: a header frame with its length, then the file's bytes,
/// verified against the manifest hash as they go (a corrupt copy is quarantined and the
/// connection cut, so the client never completes the file).
fn export<W: std::io::Write>(d: &Daemon, id: &str, writer: &mut W) -> bool {
    let now = d.clock.now_ms();
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
            tracing::error!(seg_id = %Escaped(id), error = %e, "export stream failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn admission_sheds_the_longest_waiting_and_never_an_executing_request() {
        let shared = Shared::new(ControlLimits {
            connections_max: 2,
            ..ControlLimits::default()
        });
        let (a, mut a_client) = UnixStream::pair().unwrap();
        let (b, _b_client) = UnixStream::pair().unwrap();
        let admitted = |s: &UnixStream, who: &str| match shared.admit(s, who).unwrap() {
            Admit::In { id, shed } => (id, shed),
            Admit::Full => panic!("{who} not admitted"),
        };
        let (a_id, shed) = admitted(&a, "a");
        assert_eq!(shed, None);
        std::thread::sleep(Duration::from_millis(5));
        let (b_id, shed) = admitted(&b, "b");
        assert_eq!(shed, None);
        // Both wait for a request: the third client closes the one waiting longest (a).
        let (c, _c_client) = UnixStream::pair().unwrap();
        let (c_id, shed) = admitted(&c, "c");
        assert_eq!(shed.as_deref(), Some("a"));
        a_client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(a_client.read(&mut [0u8; 1]).unwrap(), 0, "a was shut down");
        assert!(!shared.set_waiting(a_id), "a learns it was closed");
        // While b and c execute requests, nobody is closed: the next client waits.
        assert!(shared.set_executing(b_id) && shared.set_executing(c_id));
        let (d, _d_client) = UnixStream::pair().unwrap();
        assert!(matches!(shared.admit(&d, "d").unwrap(), Admit::Full));
        // c goes back to waiting for its next request: it may now make room.
        assert!(shared.set_waiting(c_id));
        let (_, shed) = admitted(&d, "d");
        assert_eq!(shed.as_deref(), Some("c"));
        // Threads of closed connections still count until they end, within a bound.
        assert_eq!(shared.threads(), 4);
        shared.leave(a_id);
        shared.leave(c_id);
        assert_eq!(shared.threads(), 2);
    }

    #[test]
    fn admission_waits_while_closed_connections_still_end() {
        let shared = Shared::new(ControlLimits {
            connections_max: 1,
            ..ControlLimits::default()
        });
        let mut pairs = Vec::new();
        for i in 0..CONTROL_THREADS_PER_CONNECTION_MAX {
            let (s, c) = UnixStream::pair().unwrap();
            assert!(matches!(
                shared.admit(&s, &i.to_string()).unwrap(),
                Admit::In { .. }
            ));
            pairs.push((s, c));
        }
        // Each admission shed the one before; their threads have not ended yet.
        let (s, _c) = UnixStream::pair().unwrap();
        assert!(matches!(shared.admit(&s, "late").unwrap(), Admit::Full));
    }

    #[test]
    fn stream_slots_bound_imports_and_exports() {
        let shared = Shared::new(ControlLimits {
            streams_max: 2,
            ..ControlLimits::default()
        });
        let first = shared.stream_slot().expect("first");
        let second = shared.stream_slot().expect("second");
        assert!(shared.stream_slot().is_none(), "a third stream waits");
        drop(first);
        let third = shared.stream_slot().expect("a slot was released");
        drop((second, third));
        assert_eq!(shared.streams.load(Ordering::SeqCst), 0);
    }
}
