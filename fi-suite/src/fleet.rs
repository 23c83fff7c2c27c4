//! A fleet of real `edged` daemons on loopback, built and driven only through the operator's
//! surface: `edged ca/key/segment` to make the fleet, an `edge.toml` per node, the CLI's
//! `--json`, `/metrics`, files on disk and the logs.
//!
//! Node `i` (0-based) is `node-{i+1}`, listens on `127.0.0.{10+i}` (its own loopback address, so
//! a packet capture tells nodes apart), logs JSON lines to `node-{i+1}/edged.log`, and serves
//! metrics on its address. Its peers are configured at the addresses the fleet's wiring gives
//! (a proxy side per link, or the peer's own address when the fleet runs unproxied).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::Signal;
use serde_json::Value;

use crate::proc::{self, Daemon};

/// Longest one CLI call may take (imports of several MiB in a loaded machine included).
pub const CLI_TIMEOUT_MS: u64 = 60_000;
/// Longest a daemon may take to answer on its control socket after start.
pub const START_TIMEOUT_MS: u64 = 20_000;
/// Longest a daemon may take to stop after SIGTERM before it is killed (and that is reported).
pub const STOP_TIMEOUT_MS: u64 = 20_000;
/// First octet after `127.0.0.` of node 0's address.
pub const NODE_IP_BASE: u8 = 10;
/// Most nodes in one fleet (their addresses must stay below the proxies' range).
pub const NODES_MAX: usize = 16;
/// Poll interval of the fleet's waits.
pub const WAIT_POLL_MS: u64 = 100;

/// The shapes of fleet the scenarios use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Line(usize),
    Ring(usize),
    /// Node 0 is the hub.
    Star(usize),
    Mesh(usize),
    /// Two meshes of `a` and `b` nodes joined by one bridge link between node `a-1` and `a`.
    Islands(usize, usize),
}

impl Topology {
    pub fn nodes(self) -> usize {
        match self {
            Topology::Line(n) | Topology::Ring(n) | Topology::Star(n) | Topology::Mesh(n) => n,
            Topology::Islands(a, b) => a + b,
        }
    }

    /// Undirected links, each once, lower index first, in a stable order.
    pub fn links(self) -> Vec<(usize, usize)> {
        let mesh = |from: usize, to: usize| {
            let mut out = Vec::new();
            for i in from..to {
                for j in i + 1..to {
                    out.push((i, j));
                }
            }
            out
        };
        match self {
            Topology::Line(n) => (1..n).map(|i| (i - 1, i)).collect(),
            Topology::Ring(n) => {
                let mut out: Vec<_> = (1..n).map(|i| (i - 1, i)).collect();
                if n > 2 {
                    out.push((0, n - 1));
                }
                out
            }
            Topology::Star(n) => (1..n).map(|i| (0, i)).collect(),
            Topology::Mesh(n) => mesh(0, n),
            Topology::Islands(a, b) => {
                let mut out = mesh(0, a);
                out.extend(mesh(a, a + b));
                out.push((a - 1, a));
                out
            }
        }
    }

    /// Hops between the two nodes farthest apart.
    pub fn diameter(self) -> usize {
        let n = self.nodes();
        let links = self.links();
        let mut worst = 0;
        for from in 0..n {
            let mut dist = vec![usize::MAX; n];
            dist[from] = 0;
            let mut frontier = vec![from];
            while let Some(x) = frontier.pop() {
                for &(a, b) in &links {
                    for (u, v) in [(a, b), (b, a)] {
                        if u == x && dist[v] > dist[x] + 1 {
                            dist[v] = dist[x] + 1;
                            frontier.push(v);
                        }
                    }
                }
            }
            worst = worst.max(
                dist.iter()
                    .copied()
                    .filter(|d| *d != usize::MAX)
                    .max()
                    .unwrap_or(0),
            );
        }
        worst
    }
}

/// The timings every node of a fleet runs with: short, so faults heal and converge in seconds.
/// The convergence bound of a scenario is derived from them ([`Tuning::convergence_bound_ms`]).
#[derive(Debug, Clone)]
pub struct Tuning {
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub attempts_max: u32,
    /// Raised to `attempts_max` if below it (the daemon requires it).
    pub store_full_attempts_max: u32,
    pub busy_retry_ms: u64,
    pub catchup_interval_ms: u64,
    pub redial_backoff_base_ms: u64,
    pub redial_backoff_max_ms: u64,
    pub handshake_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub keep_alive_interval_ms: u64,
    pub stall_timeout_ms: u64,
    pub response_timeout_ms: u64,
    pub ceiling_bytes: u64,
    /// Extra `key = value` lines per section (`"relay"`, `"net"`, `"store"`, `"control"`).
    pub extra: BTreeMap<&'static str, Vec<String>>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            backoff_base_ms: 200,
            backoff_max_ms: 2_000,
            attempts_max: 10,
            store_full_attempts_max: 20,
            busy_retry_ms: 200,
            catchup_interval_ms: 3_000,
            redial_backoff_base_ms: 200,
            redial_backoff_max_ms: 2_000,
            handshake_timeout_ms: 3_000,
            idle_timeout_ms: 6_000,
            keep_alive_interval_ms: 1_000,
            stall_timeout_ms: 5_000,
            response_timeout_ms: 10_000,
            ceiling_bytes: 1 << 30,
            extra: BTreeMap::new(),
        }
    }
}

impl Tuning {
    /// How long, after the last fault healed, a fleet of this diameter may take to converge:
    /// per hop, a dead connection is noticed (idle timeout), re-dialled (the longest re-dial
    /// delay plus a handshake), and the segment moves either by the relay's next attempt (the
    /// longest backoff) or by the next catch-up round (its interval), plus `transfer_ms` for
    /// the bytes themselves; doubled for scheduling noise on a loaded machine.
    pub fn convergence_bound_ms(&self, diameter: usize, transfer_ms: u64) -> u64 {
        let per_hop = self.idle_timeout_ms
            + self.redial_backoff_max_ms
            + self.handshake_timeout_ms
            + self.backoff_max_ms.max(self.catchup_interval_ms)
            + transfer_ms;
        2 * per_hop * diameter.max(1) as u64
    }
}

/// What a fleet is made of.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub topology: Topology,
    pub tuning: Tuning,
    /// Environment given to every daemon (e.g. `EDGED_MUTANT`), and per node on top.
    pub env: BTreeMap<String, String>,
    pub node_env: BTreeMap<usize, BTreeMap<String, String>>,
    /// Extra config lines of one node, per section (`"store"`, `"relay"`, `"net"`,
    /// `"control"`, and `""` for top-level keys), after the tuning's.
    pub node_extra: BTreeMap<usize, BTreeMap<&'static str, Vec<String>>>,
    /// Peers outside the fleet a node also lists (id, address): an evil peer holding a valid
    /// certificate of the fleet's CA.
    pub extra_peers: BTreeMap<usize, Vec<(String, SocketAddr)>>,
}

impl FleetSpec {
    pub fn new(topology: Topology) -> FleetSpec {
        FleetSpec {
            topology,
            tuning: Tuning::default(),
            env: BTreeMap::new(),
            node_env: BTreeMap::new(),
            node_extra: BTreeMap::new(),
            extra_peers: BTreeMap::new(),
        }
    }

    /// Adds config line `line` to section `section` of node `i`.
    pub fn node_line(&mut self, i: usize, section: &'static str, line: impl Into<String>) {
        self.node_extra
            .entry(i)
            .or_default()
            .entry(section)
            .or_default()
            .push(line.into());
    }
}

/// One node of a fleet.
#[derive(Debug)]
pub struct Node {
    pub index: usize,
    pub id: String,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Its peers' indexes.
    pub peers: Vec<usize>,
    /// The addresses its config lists for its peers (fleet peers, then extra peers): the only
    /// addresses it may send datagrams to (INV-27).
    pub peer_addrs: Vec<SocketAddr>,
    daemon: Option<Daemon>,
    /// Extra environment of this node's daemon.
    pub env: BTreeMap<String, String>,
}

impl Node {
    pub fn running(&self) -> bool {
        self.daemon.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    /// The path of a stored segment's file in this node's data dir.
    pub fn segment_file(&self, id: &str) -> PathBuf {
        self.data_dir
            .join("segments")
            .join(&id[..2])
            .join(format!("{id}.seg"))
    }
}

/// The loopback /24 a run's nodes, proxies and evil peers live in: `127.A.B.0/24`. Each run
/// picks its own, so runs at the same time on one machine never share an address (a capture
/// attributes datagrams to nodes by address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBase(pub u8, pub u8);

impl IpBase {
    /// The address `127.A.B.last`.
    pub fn ip(self, last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.0, self.1, last))
    }

    /// The address of node `index`.
    pub fn node(self, index: usize) -> IpAddr {
        // Cannot truncate: NODES_MAX keeps it far below 255.
        self.ip(NODE_IP_BASE + index as u8)
    }
}

/// A fleet of real daemons in one directory.
#[derive(Debug)]
pub struct Fleet {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub spec: FleetSpec,
    pub nodes: Vec<Node>,
    pub publisher_key: PathBuf,
}

impl Fleet {
    /// Makes the fleet's files: a CA, a publisher key, a certificate, a config and a data dir
    /// per node. `peer_addr(i, j)` is the address node `i` is configured with for peer `j`
    /// (a proxy side, or node `j`'s own address); `addrs` are the nodes' own addresses.
    pub fn create(
        dir: &Path,
        bin: &Path,
        spec: FleetSpec,
        addrs: &[SocketAddr],
        peer_addr: &dyn Fn(usize, usize) -> SocketAddr,
    ) -> anyhow::Result<Fleet> {
        let n = spec.topology.nodes();
        if n == 0 || n > NODES_MAX || addrs.len() != n {
            bail!("a fleet has 1..={NODES_MAX} nodes with one address each");
        }
        std::fs::create_dir_all(dir)?;
        let run = |args: &[&str]| -> anyhow::Result<Output> {
            let mut cmd = Command::new(bin);
            cmd.args(args)
                .env_remove("EDGED_CONFIG")
                .env_remove("EDGED_LOG");
            let out = proc::run_bounded(cmd, Duration::from_millis(CLI_TIMEOUT_MS))?;
            if !out.status.success() {
                bail!(
                    "edged {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(out)
        };
        let p = |path: &Path| path.to_string_lossy().into_owned();
        let ca = dir.join("ca");
        run(&["ca", "init", "--out", &p(&ca)])?;
        let publisher_key = dir.join("publisher.key");
        let out = run(&["key", "gen", "--out", &p(&publisher_key)])?;
        let publisher = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let links = spec.topology.links();
        let mut nodes = Vec::with_capacity(n);
        for (index, addr) in addrs.iter().enumerate() {
            let id = format!("node-{}", index + 1);
            let node_dir = dir.join(&id);
            run(&[
                "ca",
                "issue",
                "--ca",
                &p(&ca),
                "--node",
                &id,
                "--out",
                &p(&node_dir),
            ])?;
            let peers: Vec<usize> = links
                .iter()
                .filter_map(|&(a, b)| {
                    if a == index {
                        Some(b)
                    } else if b == index {
                        Some(a)
                    } else {
                        None
                    }
                })
                .collect();
            let metrics = SocketAddr::new(addr.ip(), proc::free_tcp_port(addr.ip())?);
            let mut peer_addrs: Vec<SocketAddr> =
                peers.iter().map(|&j| peer_addr(index, j)).collect();
            peer_addrs.extend(
                spec.extra_peers
                    .get(&index)
                    .into_iter()
                    .flatten()
                    .map(|(_, a)| *a),
            );
            let node = Node {
                index,
                id,
                addr: *addr,
                metrics,
                config: node_dir.join("edge.toml"),
                data_dir: node_dir.join("data"),
                log: node_dir.join("edged.log"),
                dir: node_dir,
                peers,
                peer_addrs,
                daemon: None,
                env: spec.node_env.get(&index).cloned().unwrap_or_default(),
            };
            let no_extra = BTreeMap::new();
            let text = config_text(
                &node,
                &spec.tuning,
                spec.node_extra.get(&index).unwrap_or(&no_extra),
                spec.extra_peers
                    .get(&index)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
                &publisher,
                &|j| peer_addr(index, j),
            );
            std::fs::write(&node.config, text)?;
            nodes.push(node);
        }
        Ok(Fleet {
            dir: dir.to_owned(),
            bin: bin.to_owned(),
            spec,
            nodes,
            publisher_key,
        })
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Starts node `i` and waits until its control socket answers.
    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        self.start_with(i, &BTreeMap::new())
    }

    /// Starts node `i` with `env` on top of the fleet's and the node's (e.g. a crash point),
    /// and waits until it answers, or until it exits (then returns its status as an error).
    pub fn start_with(&mut self, i: usize, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
        match self.start_or_exit(i, env)? {
            None => Ok(()),
            Some(status) => bail!("{} exited at start: {status}", self.nodes[i].id),
        }
    }

    /// Like [`Fleet::start_with`], but an exit before the node answers is an outcome: its
    /// status (a crash point armed in `env` may fire while the node starts).
    pub fn start_or_exit(
        &mut self,
        i: usize,
        env: &BTreeMap<String, String>,
    ) -> anyhow::Result<Option<ExitStatus>> {
        self.spawn(i, env)?;
        self.answers_or_exits(i)
    }

    fn spawn(&mut self, i: usize, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
        if self.nodes[i].daemon.is_some() {
            bail!("{} is already running", self.nodes[i].id);
        }
        let mut cmd = Command::new(&self.bin);
        cmd.args(["run", "--config"])
            .arg(&self.nodes[i].config)
            .args(["--log-format", "json"])
            .env_remove("EDGED_CONFIG")
            .env("EDGED_LOG", "info");
        for (k, v) in self.spec.env.iter().chain(&self.nodes[i].env).chain(env) {
            cmd.env(k, v);
        }
        let daemon = Daemon::spawn(cmd, &self.nodes[i].log)?;
        self.nodes[i].daemon = Some(daemon);
        Ok(())
    }

    /// Waits until node `i` answers on its control socket, or fails if it exits first.
    pub fn wait_ready(&mut self, i: usize) -> anyhow::Result<()> {
        match self.answers_or_exits(i)? {
            None => Ok(()),
            Some(status) => bail!("{} exited at start: {status}", self.nodes[i].id),
        }
    }

    /// Waits until node `i` answers (`None`) or exits (its status); an error if neither
    /// happens within [`START_TIMEOUT_MS`].
    fn answers_or_exits(&mut self, i: usize) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
        loop {
            if let Some(status) = self.exited(i)? {
                return Ok(Some(status));
            }
            if self.try_json(i, &["status"]).is_ok() {
                return Ok(None);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not answer within {START_TIMEOUT_MS} ms",
                    self.nodes[i].id
                );
            }
            std::thread::sleep(Duration::from_millis(WAIT_POLL_MS));
        }
    }

    /// Starts every node that is not running: all spawned first, then each waited for.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        let stopped: Vec<usize> = (0..self.len())
            .filter(|&i| !self.nodes[i].running())
            .collect();
        for &i in &stopped {
            self.spawn(i, &BTreeMap::new())?;
        }
        for &i in &stopped {
            self.wait_ready(i)?;
        }
        Ok(())
    }

    /// If node `i`'s daemon has exited on its own: its status (the node is then stopped).
    pub fn exited(&mut self, i: usize) -> anyhow::Result<Option<ExitStatus>> {
        let Some(d) = self.nodes[i].daemon.as_mut() else {
            return Ok(None);
        };
        let status = d.exited()?;
        if status.is_some() {
            self.nodes[i].daemon = None;
        }
        Ok(status)
    }

    /// Waits at most `limit` for node `i` to exit on its own (a crash point).
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let Some(d) = self.nodes[i].daemon.as_mut() else {
            return Ok(None);
        };
        let status = d.wait_exit(limit)?;
        if status.is_some() {
            self.nodes[i].daemon = None;
        }
        Ok(status)
    }

    pub fn kill9(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(d) = self.nodes[i].daemon.take() {
            d.kill9()?;
        }
        Ok(())
    }

    /// SIGTERM and wait; an error if it had to be killed or exited with a failure.
    pub fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(d) = self.nodes[i].daemon.take() {
            match d.terminate(Duration::from_millis(STOP_TIMEOUT_MS))? {
                Some(s) if s.success() => {}
                Some(s) => bail!("{} stopped with {s}", self.nodes[i].id),
                None => bail!(
                    "{} did not stop within {STOP_TIMEOUT_MS} ms of SIGTERM (killed)",
                    self.nodes[i].id
                ),
            }
        }
        Ok(())
    }

    /// SIGTERM to every running node at once, then waits for each: the problems, one per
    /// node that had to be killed or exited with a failure.
    pub fn stop_all(&mut self) -> Vec<String> {
        for node in &self.nodes {
            if let Some(d) = &node.daemon {
                let _ = d.signal(Signal::CONT);
                let _ = d.signal(Signal::TERM);
            }
        }
        let mut problems = Vec::new();
        for i in 0..self.len() {
            if let Err(e) = self.stop(i) {
                problems.push(format!("{e:#}"));
            }
        }
        problems
    }

    pub fn signal(&self, i: usize, signal: Signal) -> anyhow::Result<()> {
        match &self.nodes[i].daemon {
            Some(d) => d.signal(signal),
            None => bail!("{} is not running", self.nodes[i].id),
        }
    }

    /// The command `edged ARGS --config <node i>` (to run elsewhere, e.g. on another thread).
    pub fn command(&self, i: usize, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .arg("--config")
            .arg(&self.nodes[i].config)
            .env_remove("EDGED_CONFIG")
            .env_remove("EDGED_LOG");
        cmd
    }

    /// `edged ARGS --config <node i>`, bounded.
    pub fn cli(&self, i: usize, args: &[&str]) -> anyhow::Result<Output> {
        proc::run_bounded(self.command(i, args), Duration::from_millis(CLI_TIMEOUT_MS))
    }

    /// `edged ARGS --json` on node `i`, parsed; an error unless it exited 0.
    pub fn try_json(&self, i: usize, args: &[&str]) -> anyhow::Result<Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let out = self.cli(i, &all)?;
        if !out.status.success() {
            bail!(
                "{}: edged {}: {}",
                self.nodes[i].id,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{}: edged {}: not JSON", self.nodes[i].id, args.join(" ")))
    }

    /// The ids node `i` holds (from its daemon).
    pub fn held(&self, i: usize) -> anyhow::Result<Vec<String>> {
        let v = self.try_json(i, &["segments"])?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Node `i`'s `/metrics`, parsed.
    pub fn metrics(&self, i: usize) -> anyhow::Result<BTreeMap<String, f64>> {
        let (status, body) = proc::http_get(self.nodes[i].metrics, "/metrics")?;
        if status != 200 {
            bail!("{}: GET /metrics: {status}", self.nodes[i].id);
        }
        Ok(proc::parse_metrics(&body))
    }

    /// Signs `len` bytes of deterministic content into `dir/<name>.seg` with the fleet's
    /// publisher key. Returns the file and the segment id.
    pub fn make_segment(
        &self,
        name: &str,
        len: u64,
        dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<(PathBuf, String)> {
        std::fs::create_dir_all(dir)?;
        let input = self.dir.join("payloads").join(format!("{name}.bin"));
        std::fs::create_dir_all(input.parent().unwrap_or(&self.dir))?;
        write_payload(&input, len, name)?;
        let out_file = dir.join(format!("{name}.seg"));
        let mut cmd = Command::new(&self.bin);
        cmd.args(["segment", "create", "--key"])
            .arg(&self.publisher_key)
            .args(["--name", name, "--channel", "fi"])
            .args(extra)
            .arg(&input)
            .arg("--out")
            .arg(&out_file)
            .env_remove("EDGED_CONFIG");
        let out = proc::run_bounded(cmd, Duration::from_millis(CLI_TIMEOUT_MS))?;
        if !out.status.success() {
            bail!(
                "segment create {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        std::fs::remove_file(&input)?;
        Ok((out_file, id))
    }

    /// Polls `cond` every [`WAIT_POLL_MS`] until it holds or `limit` passes; the time it took.
    pub fn wait_until(
        &self,
        limit: Duration,
        mut cond: impl FnMut(&Fleet) -> bool,
    ) -> Option<Duration> {
        let started = Instant::now();
        loop {
            if cond(self) {
                return Some(started.elapsed());
            }
            if started.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(WAIT_POLL_MS));
        }
    }

    /// The last `lines` lines of every node's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            out.push_str(&format!("--- {} ({})\n", node.id, node.log.display()));
            for l in &all[from..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// Deterministic content: blake3 in counter mode, keyed by `name`.
pub fn write_payload(path: &Path, len: u64, name: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let file = std::fs::File::create(path)?;
    let mut w = std::io::BufWriter::new(file);
    let mut xof = blake3::Hasher::new_derive_key("edge-fi payload")
        .update(name.as_bytes())
        .finalize_xof();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        // Cannot truncate: at most the buffer's length.
        let n = left.min(buf.len() as u64) as usize;
        xof.fill(&mut buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    w.flush()?;
    Ok(())
}

/// The `edge.toml` of `node`: its own keys, the tuning, then the tuning's and the node's extra
/// lines; a later line replaces an earlier one of the same key in the same section.
fn config_text(
    node: &Node,
    t: &Tuning,
    node_extra: &BTreeMap<&'static str, Vec<String>>,
    extra_peers: &[(String, SocketAddr)],
    publisher: &str,
    peer_addr: &dyn Fn(usize) -> SocketAddr,
) -> String {
    // (section, key) → line, in first-seen order per section.
    let mut sections: Vec<(&str, Vec<(String, String)>)> = Vec::new();
    let mut set = |section: &'static str, l: String| {
        let key = l.split('=').next().unwrap_or("").trim().to_owned();
        let idx = match sections.iter().position(|(name, _)| *name == section) {
            Some(i) => i,
            None => {
                sections.push((section, Vec::new()));
                sections.len() - 1
            }
        };
        let lines = &mut sections[idx].1;
        match lines.iter_mut().find(|(k, _)| !key.is_empty() && *k == key) {
            Some(existing) => existing.1 = l,
            None => lines.push((key, l)),
        }
    };
    set("", format!("node_id = \"{}\"", node.id));
    set("", format!("listen_addr = \"{}\"", node.addr));
    set("", "data_dir = \"data\"".into());
    // Beside the config rather than in data/: socket addresses are at most 107 bytes.
    set("", "control_socket = \"ctl.sock\"".into());
    set("", "log_format = \"json\"".into());
    set("", format!("metrics_addr = \"{}\"", node.metrics));
    set("tls", "ca_cert = \"../ca/ca.crt\"".into());
    set("tls", format!("node_cert = \"{}.crt\"", node.id));
    set("tls", format!("node_key = \"{}.key\"", node.id));
    set("publishers", format!("trusted = [\"{publisher}\"]"));
    set("store", format!("ceiling_bytes = {}", t.ceiling_bytes));
    set("store", "min_free_bytes = 0".into());
    set("relay", format!("backoff_base_ms = {}", t.backoff_base_ms));
    set("relay", format!("backoff_max_ms = {}", t.backoff_max_ms));
    set("relay", format!("attempts_max = {}", t.attempts_max));
    set(
        "relay",
        format!(
            "store_full_attempts_max = {}",
            t.store_full_attempts_max.max(t.attempts_max)
        ),
    );
    set("relay", format!("busy_retry_ms = {}", t.busy_retry_ms));
    set(
        "relay",
        format!("store_full_backoff_min_ms = {}", t.backoff_max_ms),
    );
    set(
        "net",
        format!("catchup_interval_ms = {}", t.catchup_interval_ms),
    );
    set(
        "net",
        format!("redial_backoff_base_ms = {}", t.redial_backoff_base_ms),
    );
    set(
        "net",
        format!("redial_backoff_max_ms = {}", t.redial_backoff_max_ms),
    );
    set(
        "net",
        format!("handshake_timeout_ms = {}", t.handshake_timeout_ms),
    );
    set("net", format!("idle_timeout_ms = {}", t.idle_timeout_ms));
    set(
        "net",
        format!("keep_alive_interval_ms = {}", t.keep_alive_interval_ms),
    );
    set("net", format!("stall_timeout_ms = {}", t.stall_timeout_ms));
    set(
        "net",
        format!("response_timeout_ms = {}", t.response_timeout_ms),
    );
    for extra in [&t.extra, node_extra] {
        for (section, lines) in extra {
            for l in lines.iter().filter(|l| !l.trim().is_empty()) {
                set(section, l.clone());
            }
        }
    }
    let mut s = String::new();
    let mut emit = |section: &str| {
        if let Some((_, lines)) = sections.iter().find(|(name, _)| *name == section) {
            if !section.is_empty() {
                s.push_str(&format!("[{section}]\n"));
            }
            for (_, l) in lines {
                s.push_str(l);
                s.push('\n');
            }
        }
    };
    emit("");
    emit("tls");
    let mut peers = String::new();
    for &p in &node.peers {
        peers.push_str(&format!(
            "[[known_peers]]\nid = \"node-{}\"\naddr = \"{}\"\n",
            p + 1,
            peer_addr(p)
        ));
    }
    for (id, addr) in extra_peers {
        peers.push_str(&format!(
            "[[known_peers]]\nid = \"{id}\"\naddr = \"{addr}\"\n"
        ));
    }
    for section in ["publishers", "store", "relay", "net", "control"] {
        emit(section);
    }
    // Known peers after the tables: an array of tables may come anywhere after the top keys.
    s.push_str(&peers);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topologies_have_the_links_and_diameters_they_say() {
        assert_eq!(Topology::Line(4).links(), vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(Topology::Line(4).diameter(), 3);
        assert_eq!(Topology::Ring(5).links().len(), 5);
        assert_eq!(Topology::Ring(5).diameter(), 2);
        assert_eq!(Topology::Star(6).links().len(), 5);
        assert_eq!(Topology::Star(6).diameter(), 2);
        assert_eq!(Topology::Mesh(4).links().len(), 6);
        assert_eq!(Topology::Mesh(4).diameter(), 1);
        let islands = Topology::Islands(3, 3);
        assert_eq!(islands.nodes(), 6);
        assert_eq!(islands.links().len(), 3 + 3 + 1);
        assert!(islands.links().contains(&(2, 3)));
        assert_eq!(islands.diameter(), 3);
    }

    #[test]
    fn payloads_are_deterministic_per_name() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        write_payload(&a, 100_000, "x").unwrap();
        write_payload(&b, 100_000, "x").unwrap();
        write_payload(&c, 100_000, "y").unwrap();
        let read = |p: &Path| std::fs::read(p).unwrap();
        assert_eq!(read(&a), read(&b));
        assert_ne!(read(&a), read(&c));
        assert_eq!(read(&a).len(), 100_000);
    }

    #[test]
    fn the_convergence_bound_grows_with_the_diameter() {
        let t = Tuning::default();
        assert!(t.convergence_bound_ms(2, 0) > t.convergence_bound_ms(1, 0));
        assert_eq!(t.convergence_bound_ms(0, 0), t.convergence_bound_ms(1, 0));
    }
}
