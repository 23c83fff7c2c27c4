//! The CLI's side of the control socket.

use std::io::BufReader;
use std::os::unix::net::UnixStream;

use serde_json::Value;

use crate::config::Config;
use crate::control::{Request, Response, read_frame, write_frame};
use crate::exit::{CliResult, DAEMON_DOWN, Failure};

/// A connection to the running daemon.
pub struct Client {
    pub reader: BufReader<UnixStream>,
    pub writer: UnixStream,
}

/// Connects to the daemon if one is running. `None` when nothing listens on the socket.
pub fn connect(cfg: &Config) -> CliResult<Option<Client>> {
    match UnixStream::connect(&cfg.control_socket) {
        Ok(stream) => {
            let writer = stream
                .try_clone()
                .map_err(|e| Failure::failed(anyhow::anyhow!("control socket: {e}")))?;
            Ok(Some(Client {
                reader: BufReader::new(stream),
                writer,
            }))
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(Failure::failed(anyhow::anyhow!(
            "cannot reach the daemon at {}: {e}",
            cfg.control_socket.display()
        ))),
    }
}

/// Connects, or explains that this command needs the daemon.
pub fn require(cfg: &Config) -> CliResult<Client> {
    connect(cfg)?.ok_or_else(|| {
        Failure::new(
            DAEMON_DOWN,
            anyhow::anyhow!(
                "edged is not running (no daemon on {}); start it with `edged run --config {}`",
                cfg.control_socket.display(),
                cfg.path.display()
            ),
        )
    })
}

impl Client {
    pub fn send(&mut self, request: &Request) -> CliResult {
        write_frame(&mut self.writer, request)
            .map_err(|e| Failure::failed(anyhow::anyhow!("control socket: {e}")))
    }

    pub fn receive(&mut self) -> CliResult<Response> {
        match read_frame(&mut self.reader) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(Failure::failed(anyhow::anyhow!(
                "the daemon closed the control connection"
            ))),
            Err(e) => Err(Failure::failed(anyhow::anyhow!("control socket: {e}"))),
        }
    }

    /// One request, one JSON answer.
    pub fn call(&mut self, request: &Request) -> CliResult<Value> {
        self.send(request)?;
        match self.receive()? {
            Response::Ok { body } => Ok(body),
            Response::Error { code, message } => Err(Failure::new(code, anyhow::anyhow!(message))),
            Response::ExportStream { .. } | Response::Page { .. } | Response::End { .. } => Err(
                Failure::failed(anyhow::anyhow!("unexpected stream from the daemon")),
            ),
        }
    }

    /// One listing request; `page` is called with each page of items as it arrives (the daemon
    /// sends pages until the end, see [`crate::control`]). Returns the number of items. A
    /// listing that failed part-way is an error, after the pages that came before it.
    pub fn list(
        &mut self,
        request: &Request,
        mut page: impl FnMut(Vec<Value>) -> CliResult,
    ) -> CliResult<u64> {
        self.send(request)?;
        let mut received = 0u64;
        loop {
            match self.receive()? {
                Response::Page { items } => {
                    received += items.len() as u64;
                    page(items)?;
                }
                Response::End { count } if count == received => return Ok(count),
                Response::End { count } => {
                    return Err(Failure::failed(anyhow::anyhow!(
                        "the daemon listed {received} items but said {count}"
                    )));
                }
                Response::Error { code, message } => {
                    return Err(Failure::new(code, anyhow::anyhow!(message)));
                }
                Response::Ok { .. } | Response::ExportStream { .. } => {
                    return Err(Failure::failed(anyhow::anyhow!(
                        "unexpected answer from the daemon in the middle of a listing"
                    )));
                }
            }
        }
    }
}
