//! Helpers for tests that run real `edged` daemons on 127.0.0.1.
//!
//! A [`Fleet`] lives in one temp dir: a fleet CA, a publisher key, and per node a certificate, an
//! `edge.toml` and a data dir. Daemons log JSON lines to `node-N/edged.log`; every failure
//! message carries the tail of each node's log, and every daemon is SIGKILLed and reaped when
//! the fleet is dropped, also on panic. Every wait is bounded in time; every CLI call too.

// Each test file uses a part of these helpers.
#![allow(dead_code)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// The binary under test.
pub const EDGED: &str = env!("CARGO_BIN_EXE_edged");
/// Longest a CLI command may run (a 256 MiB import in the debug profile included).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a daemon may take to open its control socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a daemon may take to stop after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of each node's log shown in a failure message.
const LOG_TAIL_LINES: usize = 40;
/// Chunk used to write and compare big files.
const CHUNK_BYTES: usize = 1 << 20;

pub const MIB: u64 = 1 << 20;

/// `path` as a `&str` (temp dirs are UTF-8).
pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `cmd` with no stdin, capturing its output, and kills it after `limit`.
pub fn run_bounded(cmd: Command, limit: Duration) -> Result<Output, String> {
    run_bounded_to(cmd, limit, Stdio::piped())
}

/// [`run_bounded`] with stdout going to `stdout` (then `Output::stdout` is empty).
pub fn run_bounded_to(mut cmd: Command, limit: Duration, stdout: Stdio) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
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
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{cmd:?} did not finish within {limit:?}"));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{cmd:?}: {e}"));
            }
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Runs `edged ARGS` (outside any fleet), bounded.
pub fn edged(args: &[&str]) -> Output {
    let mut cmd = Command::new(EDGED);
    cmd.args(args)
        .env_remove("EDGED_CONFIG")
        .env_remove("EDGED_LOG");
    run_bounded(cmd, CLI_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// `n` distinct free UDP ports on 127.0.0.1 (bound together, then released).
pub fn free_udp_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().expect("local addr").port())
        .collect()
}

/// A free TCP port on 127.0.0.1.
pub fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    l.local_addr().expect("local addr").port()
}

/// Writes `len` pseudo-random bytes (xorshift64*, seeded) to `path`, one chunk at a time.
pub fn write_payload(path: &Path, len: u64, seed: u64) {
    let mut out = BufWriter::new(File::create(path).expect("create payload"));
    let mut state = seed | 1;
    let mut chunk = vec![0u8; CHUNK_BYTES];
    let mut left = len;
    while left > 0 {
        for word in chunk.chunks_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
        let n = left.min(CHUNK_BYTES as u64) as usize;
        out.write_all(&chunk[..n]).expect("write payload");
        left -= n as u64;
    }
    out.flush().expect("flush payload");
}

/// Whether two files hold the same bytes, compared a chunk at a time.
pub fn files_equal(a: &Path, b: &Path) -> bool {
    let (Ok(fa), Ok(fb)) = (File::open(a), File::open(b)) else {
        return false;
    };
    let (Ok(ma), Ok(mb)) = (fa.metadata(), fb.metadata()) else {
        return false;
    };
    if ma.len() != mb.len() {
        return false;
    }
    let (mut ra, mut rb) = (
        std::io::BufReader::with_capacity(CHUNK_BYTES, fa),
        std::io::BufReader::with_capacity(CHUNK_BYTES, fb),
    );
    let (mut ba, mut bb) = (vec![0u8; CHUNK_BYTES], vec![0u8; CHUNK_BYTES]);
    let mut left = ma.len();
    while left > 0 {
        let n = left.min(CHUNK_BYTES as u64) as usize;
        if ra.read_exact(&mut ba[..n]).is_err() || rb.read_exact(&mut bb[..n]).is_err() {
            return false;
        }
        if ba[..n] != bb[..n] {
            return false;
        }
        left -= n as u64;
    }
    true
}

/// The names, sizes and modification times in `dir`: what "nothing written" compares.
pub fn dir_snapshot(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| {
            let e = e.expect("dir entry");
            let m = e.path().symlink_metadata().expect("stat");
            (
                e.file_name().to_string_lossy().into_owned(),
                m.len(),
                m.modified().expect("mtime"),
            )
        })
        .collect();
    out.sort();
    out
}

/// Peak resident set size of a process (`VmHWM` in `/proc/PID/status`), in bytes.
pub fn vm_hwm_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// A plain HTTP/1.1 GET on 127.0.0.1:`port`: (status code, body).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    let limit = Some(Duration::from_secs(10));
    s.set_read_timeout(limit).map_err(|e| e.to_string())?;
    s.set_write_timeout(limit).map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.take(16 << 20)
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of head in {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((code, body.to_owned()))
}

/// A child process that is SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Per-node settings: the `[relay]`, `[net]` and `[control]` keys written into its config.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub relay: BTreeMap<&'static str, String>,
    pub net: BTreeMap<&'static str, String>,
    pub control: BTreeMap<&'static str, String>,
    pub fleet: BTreeMap<&'static str, String>,
    pub metrics: bool,
}

impl Default for NodeOptions {
    /// Quick retries and quick re-dials, so tests do not wait on production backoffs.
    fn default() -> Self {
        let relay = [
            ("backoff_base_ms", "100"),
            ("backoff_max_ms", "1000"),
            ("store_full_backoff_min_ms", "500"),
            ("busy_retry_ms", "200"),
        ];
        let net = [
            ("redial_backoff_base_ms", "100"),
            ("redial_backoff_max_ms", "1000"),
            ("handshake_timeout_ms", "2000"),
        ];
        NodeOptions {
            relay: relay.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            net: net.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            control: BTreeMap::new(),
            fleet: BTreeMap::new(),
            metrics: false,
        }
    }
}

impl NodeOptions {
    pub fn relay(mut self, key: &'static str, value: impl ToString) -> Self {
        self.relay.insert(key, value.to_string());
        self
    }

    pub fn net(mut self, key: &'static str, value: impl ToString) -> Self {
        self.net.insert(key, value.to_string());
        self
    }

    pub fn control(mut self, key: &'static str, value: impl ToString) -> Self {
        self.control.insert(key, value.to_string());
        self
    }

    pub fn fleet(mut self, key: &'static str, value: impl ToString) -> Self {
        self.fleet.insert(key, value.to_string());
        self
    }

    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }
}

/// One node of a fleet: its files and, while it runs, its daemon.
#[derive(Debug)]
pub struct Node {
    pub id: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub metrics_port: Option<u16>,
    child: Option<Child>,
}

impl Node {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.data_dir().join("control.sock")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("edged.log")
    }
}

/// Nodes `node-1` … `node-N` in one temp dir; indices are 1-based, as in the node ids.
#[derive(Debug)]
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub publisher_key: PathBuf,
    pub nodes: Vec<Node>,
    logs_shown: Cell<bool>,
}

impl Fleet {
    /// Makes the CA, the publisher key and `n` nodes linked as `links` (pairs of 1-based
    /// indices, both directions), with `options(i)` for node `i`. Starts nothing.
    pub fn new(
        n: usize,
        links: &[(usize, usize)],
        options: impl Fn(usize) -> NodeOptions,
    ) -> Fleet {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let ok = |o: Output| {
            assert!(o.status.success(), "{}", stderr(&o));
            o
        };
        ok(edged(&["ca", "init", "--out", p(&root.join("ca"))]));
        let publisher_key = root.join("publisher.key");
        let publisher = stdout(&ok(edged(&["key", "gen", "--out", p(&publisher_key)])))
            .trim()
            .to_owned();
        assert!(publisher.starts_with("ed25519:"), "{publisher}");
        let ports = free_udp_ports(n);
        let mut nodes = Vec::with_capacity(n);
        for i in 1..=n {
            let id = format!("node-{i}");
            let node_dir = root.join(&id);
            ok(edged(&[
                "ca",
                "issue",
                "--ca",
                p(&root.join("ca")),
                "--node",
                &id,
                "--out",
                p(&node_dir),
            ]));
            let opts = options(i);
            let metrics_port = opts.metrics.then(free_tcp_port);
            let mut text = format!(
                "node_id = \"{id}\"\nlisten_addr = \"127.0.0.1:{}\"\ndata_dir = \"data\"\n",
                ports[i - 1]
            );
            if let Some(port) = metrics_port {
                let _ = writeln!(text, "metrics_addr = \"127.0.0.1:{port}\"");
            }
            let _ = write!(
                text,
                "[tls]\nca_cert = \"../ca/ca.crt\"\nnode_cert = \"{id}.crt\"\nnode_key = \"{id}.key\"\n"
            );
            for &(a, b) in links {
                let peer = if a == i {
                    b
                } else if b == i {
                    a
                } else {
                    continue;
                };
                let _ = write!(
                    text,
                    "[[known_peers]]\nid = \"node-{peer}\"\naddr = \"127.0.0.1:{}\"\n",
                    ports[peer - 1]
                );
            }
            let _ = write!(
                text,
                "[publishers]\ntrusted = [\"{publisher}\"]\n[store]\nceiling_bytes = 2147483648\nmin_free_bytes = 0\n"
            );
            for (section, keys) in [
                ("relay", &opts.relay),
                ("net", &opts.net),
                ("control", &opts.control),
                ("fleet", &opts.fleet),
            ] {
                let _ = writeln!(text, "[{section}]");
                for (k, v) in keys {
                    let _ = writeln!(text, "{k} = {v}");
                }
            }
            let config = node_dir.join("edge.toml");
            std::fs::write(&config, text).expect("write edge.toml");
            nodes.push(Node {
                id,
                dir: node_dir,
                config,
                metrics_port,
                child: None,
            });
        }
        Fleet {
            dir,
            publisher_key,
            nodes,
            logs_shown: Cell::new(false),
        }
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i - 1]
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The tail of every node's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(n.log()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            let _ = writeln!(
                out,
                "----- {} log (last {} lines)",
                n.id,
                lines.len() - from
            );
            for l in &lines[from..] {
                let _ = writeln!(out, "{l}");
            }
        }
        out
    }

    /// Fails the test with `msg` and every node's log tail.
    pub fn fail(&self, msg: impl std::fmt::Display) -> ! {
        self.logs_shown.set(true);
        panic!("{msg}\n{}", self.logs())
    }

    /// Asserts `cond`, failing with `msg()` and the logs.
    pub fn check(&self, cond: bool, msg: impl FnOnce() -> String) {
        if !cond {
            self.fail(msg());
        }
    }

    /// Polls `probe` (every `every`) until it gives a value; fails after `limit`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        every: Duration,
        mut probe: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = probe() {
                return v;
            }
            if Instant::now() >= deadline {
                self.fail(format!("timed out after {limit:?} waiting for {what}"));
            }
            std::thread::sleep(every);
        }
    }

    /// Starts node `i`'s daemon (JSON logs appended to its log file) and waits until its
    /// control socket answers.
    pub fn start(&mut self, i: usize) {
        let socket = self.nodes[i - 1].control_socket();
        self.start_waiting_on(i, &socket);
    }

    /// [`Fleet::start`] for a node whose config names another control socket: waits until
    /// `socket` answers.
    pub fn start_waiting_on(&mut self, i: usize, socket: &Path) {
        self.spawn_waiting_on(i, socket, &[]);
    }

    /// [`Fleet::start`] with extra environment variables for the daemon (e.g. a crash point).
    pub fn start_with_env(&mut self, i: usize, env: &[(&str, &str)]) {
        let socket = self.nodes[i - 1].control_socket();
        self.spawn_waiting_on(i, &socket, env);
    }

    fn spawn_waiting_on(&mut self, i: usize, socket: &Path, env: &[(&str, &str)]) {
        assert!(self.nodes[i - 1].child.is_none(), "node-{i} already runs");
        let node = &self.nodes[i - 1];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log())
            .expect("open log");
        let err = log.try_clone().expect("clone log");
        let child = Command::new(EDGED)
            .args(["run", "--config", p(&node.config), "--log-format", "json"])
            .env_remove("EDGED_CONFIG")
            .env_remove("EDGED_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn edged run");
        self.nodes[i - 1].child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = self.nodes[i - 1]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.nodes[i - 1].child = None;
                self.fail(format!("node-{i} exited at start with {status}"));
            }
            if answers(socket) {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(format!(
                    "node-{i} did not open {} within {START_TIMEOUT:?}",
                    socket.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self, i: usize) -> u32 {
        match &self.nodes[i - 1].child {
            Some(c) => c.id(),
            None => self.fail(format!("node-{i} is not running")),
        }
    }

    /// Waits (at most `limit`) for node `i`'s daemon to exit by itself, and reaps it.
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            let Some(child) = self.nodes[i - 1].child.as_mut() else {
                self.fail(format!("node-{i} is not running"));
            };
            if let Some(status) = child.try_wait().expect("wait") {
                self.nodes[i - 1].child = None;
                return status;
            }
            if Instant::now() >= deadline {
                self.kill9(i);
                self.fail(format!("node-{i} did not exit within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs node `i`'s daemon and reaps it.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i - 1].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs node `i`'s daemon and waits (bounded) for it to exit.
    pub fn sigterm(&mut self, i: usize) -> ExitStatus {
        let pid = self.pid(i);
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let child = self.nodes[i - 1].child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("wait") {
                self.nodes[i - 1].child = None;
                return status;
            }
            if Instant::now() >= deadline {
                self.kill9(i);
                self.fail(format!(
                    "node-{i} did not stop within {STOP_TIMEOUT:?} of SIGTERM"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `edged ARGS --config <node i's config>`, bounded.
    pub fn cli(&self, i: usize, args: &[&str]) -> Output {
        self.cli_to(i, args, Stdio::piped())
    }

    /// `edged ARGS --config <node i's config>` writing into a pipe whose reader has already
    /// gone (as `| head` leaves it), bounded.
    pub fn cli_into_closed_pipe(&self, i: usize, args: &[&str]) -> Output {
        let (reader, writer) = rustix::pipe::pipe().unwrap_or_else(|e| self.fail(e));
        drop(reader);
        self.cli_to(i, args, Stdio::from(writer))
    }

    /// [`Fleet::cli`] with stdout going to `stdout`.
    pub fn cli_to(&self, i: usize, args: &[&str], stdout: Stdio) -> Output {
        let mut cmd = Command::new(EDGED);
        cmd.args(args)
            .args(["--config", p(&self.nodes[i - 1].config)])
            .env_remove("EDGED_CONFIG")
            .env_remove("EDGED_LOG");
        run_bounded_to(cmd, CLI_TIMEOUT, stdout).unwrap_or_else(|e| self.fail(e))
    }

    /// `edged ARGS --json` on node `i`, which must succeed; its stdout parsed.
    pub fn json(&self, i: usize, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let o = self.cli(i, &all);
        self.check(o.status.success(), || {
            format!(
                "edged {args:?} on node-{i} failed ({}): {}",
                o.status,
                stderr(&o)
            )
        });
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            self.fail(format!(
                "edged {args:?}: stdout is not JSON ({e}): {}",
                stdout(&o)
            ))
        })
    }

    /// Ids of the segments node `i` holds (from its daemon, or its data dir when stopped).
    pub fn segment_ids(&self, i: usize) -> Vec<String> {
        let v = self.json(i, &["segments"]);
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Node `i`'s row of segment `id` in `edged segments --json` (from its daemon).
    pub fn segment_row(&self, i: usize, id: &str) -> Option<Value> {
        let v = self.json(i, &["segments"]);
        v.as_array()?.iter().find(|s| s["id"] == id).cloned()
    }

    /// Size of node `i`'s log file now (to read only what a later run adds).
    pub fn log_len(&self, i: usize) -> u64 {
        std::fs::metadata(self.nodes[i - 1].log()).map_or(0, |m| m.len())
    }

    /// The `fields` of node `i`'s JSON log events with this `message`, from byte `from` on.
    pub fn events(&self, i: usize, from: u64, message: &str) -> Vec<Value> {
        let text = std::fs::read(self.nodes[i - 1].log()).unwrap_or_default();
        let from = (from as usize).min(text.len());
        String::from_utf8_lossy(&text[from..])
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v.get("fields").cloned())
            .filter(|f| f["message"] == message)
            .collect()
    }

    /// [`Fleet::events`] with the time of each event (the log line's `timestamp`).
    pub fn events_at(&self, i: usize, from: u64, message: &str) -> Vec<(SystemTime, Value)> {
        let text = std::fs::read(self.nodes[i - 1].log()).unwrap_or_default();
        let from = (from as usize).min(text.len());
        String::from_utf8_lossy(&text[from..])
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["message"] == message)
            .map(|v| {
                let at = v["timestamp"]
                    .as_str()
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                    .unwrap_or_else(|| self.fail(format!("no timestamp in {v}")));
                (at, v["fields"].clone())
            })
            .collect()
    }

    /// Writes a `len`-byte payload, signs it as segment `name` into `dir/<name>.seg`, removes
    /// the payload, and returns the segment file and its id.
    pub fn make_segment(&self, name: &str, len: u64, dir: &Path) -> (PathBuf, String) {
        let input = self.path(&format!("{name}.payload"));
        write_payload(&input, len, len ^ name.len() as u64 ^ 0x5eed);
        let seg = dir.join(format!("{name}.seg"));
        let o = edged(&[
            "segment",
            "create",
            "--key",
            p(&self.publisher_key),
            "--name",
            name,
            "--channel",
            "test",
            p(&input),
            "--out",
            p(&seg),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::remove_file(&input).expect("remove payload");
        let id = stdout(&o).trim().to_owned();
        assert_eq!(id.len(), 64, "segment id: {id}");
        (seg, id)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.logs_shown.get() {
            eprintln!("{}", self.logs());
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Whether a daemon answers a `status` request on `socket` (bounded): the socket file is
/// bound and connectable before the daemon serves it, so a connect alone says too little.
pub fn answers(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let limit = Some(Duration::from_secs(2));
    if stream.set_read_timeout(limit).is_err() || stream.set_write_timeout(limit).is_err() {
        return false;
    }
    let body = br#"{"op":"status"}"#;
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(body);
    if stream.write_all(&frame).is_err() {
        return false;
    }
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).is_ok()
}
