//! Processes the suite runs: bounded commands, daemons it can signal, ports, HTTP scrapes.
//!
//! Every wait is bounded; every daemon is SIGKILLed and reaped when its handle drops, also when
//! a scenario panics.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal};

/// Poll interval of every bounded wait on a process.
pub const PROCESS_POLL_MS: u64 = 10;
/// Longest a scrape of `/metrics` may take.
pub const HTTP_TIMEOUT_MS: u64 = 5_000;
/// Largest `/metrics` body read.
pub const HTTP_BODY_BYTES_MAX: u64 = 4 << 20;

/// Runs `cmd` with no stdin, capturing its output, killing it after `limit`.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> anyhow::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = match wait_bounded(&mut child, limit)? {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {limit:?}");
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Waits for `child` at most `limit`: `None` if it is still running.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(PROCESS_POLL_MS));
    }
}

/// A process the suite started; SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
}

impl Daemon {
    pub fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Daemon> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = cmd.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
        Ok(Daemon { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = Pid::from_raw(self.child.id() as i32).context("pid 0")?;
        rustix::process::kill_process(pid, signal)
            .with_context(|| format!("cannot send {signal:?} to {}", self.child.id()))
    }

    /// Has it exited? (Reaps it if so.)
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// SIGKILL, and reap.
    pub fn kill9(mut self) -> anyhow::Result<ExitStatus> {
        let _ = self.child.kill();
        Ok(self.child.wait()?)
    }

    /// SIGTERM, then wait at most `limit`; SIGKILL if it did not stop. `Ok(None)` means it had
    /// to be killed.
    pub fn terminate(mut self, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
        // A stopped process cannot act on SIGTERM: resume it first.
        let _ = self.signal(Signal::CONT);
        let _ = self.signal(Signal::TERM);
        match wait_bounded(&mut self.child, limit)? {
            Some(status) => Ok(Some(status)),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Ok(None)
            }
        }
    }

    /// Waits for the process to end on its own, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
        wait_bounded(&mut self.child, limit)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.signal(Signal::CONT);
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A UDP port free on `ip` right now (bound, then released).
pub fn free_udp_port(ip: IpAddr) -> anyhow::Result<u16> {
    let s = UdpSocket::bind(SocketAddr::new(ip, 0))
        .with_context(|| format!("cannot bind a UDP port on {ip}"))?;
    Ok(s.local_addr()?.port())
}

/// A TCP port free on `ip` right now (bound, then released).
pub fn free_tcp_port(ip: IpAddr) -> anyhow::Result<u16> {
    let s = std::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .with_context(|| format!("cannot bind a TCP port on {ip}"))?;
    Ok(s.local_addr()?.port())
}

/// `GET path` over HTTP/1.1 on `addr`: the status and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let timeout = Duration::from_millis(HTTP_TIMEOUT_MS);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.take(HTTP_BODY_BYTES_MAX).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP head from {addr}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line from {addr}: {head}"))?;
    Ok((status, body.to_owned()))
}

/// Parses a Prometheus text exposition into series → value (`name{labels}` as written).
pub fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_hangs_is_killed_at_its_bound() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let started = Instant::now();
        let err = run_bounded(cmd, Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let mut ok = Command::new("echo");
        ok.arg("hi");
        let out = run_bounded(ok, Duration::from_secs(10)).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    }

    #[test]
    fn metrics_text_parses_into_series() {
        let m = parse_metrics(
            "# HELP x y\n# TYPE edged_a counter\nedged_a_total 3\nedged_b{reason=\"x y\"} 4\n\n",
        );
        assert_eq!(m.get("edged_a_total"), Some(&3.0));
        assert_eq!(m.get("edged_b{reason=\"x y\"}"), Some(&4.0));
        assert_eq!(m.len(), 2);
    }
}
