//! Looking at one node from outside, in the ways the host-environment scenarios need: its jobs
//! as `edged segments --json` shows them, the files in its data dir, its log, its `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::check::Acked;
use crate::fleet::{Fleet, WAIT_POLL_MS};

/// One relay job as `edged segments --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub state: String,
    pub attempts: u64,
    pub last_error: Option<String>,
    /// Wall-clock ms of its next attempt as the node's clock reads (pending jobs); a job in
    /// flight shows the one it started at.
    pub next_due_ms: Option<u64>,
}

/// Node `i`'s jobs towards `peer` (a node id), by segment id.
pub fn jobs_to(fleet: &Fleet, i: usize, peer: &str) -> anyhow::Result<BTreeMap<String, Job>> {
    let v = fleet.try_json(i, &["segments"])?;
    let mut out = BTreeMap::new();
    for s in v.as_array().into_iter().flatten() {
        let Some(id) = s["id"].as_str() else { continue };
        for j in s["jobs"].as_array().into_iter().flatten() {
            if j["peer"].as_str() == Some(peer) {
                out.insert(
                    id.to_owned(),
                    Job {
                        state: j["state"].as_str().unwrap_or_default().to_owned(),
                        attempts: j["attempts"].as_u64().unwrap_or(0),
                        last_error: j["last_error"].as_str().map(str::to_owned),
                        next_due_ms: j["next_due_ms"].as_u64(),
                    },
                );
            }
        }
    }
    Ok(out)
}

/// The ids node `i`'s daemon lists.
pub fn listed(fleet: &Fleet, i: usize) -> anyhow::Result<BTreeSet<String>> {
    Ok(fleet.held(i)?.into_iter().collect())
}

/// Whether node `i` holds `a` byte-identical on disk (whatever its daemon says).
pub fn file_matches(fleet: &Fleet, i: usize, a: &Acked) -> bool {
    match crate::host::hash_file(&fleet.node(i).segment_file(&a.id)) {
        Ok((hash, len)) => hash == a.file_hash && len == a.file_len,
        Err(_) => false,
    }
}

/// The `.seg` files under a data dir's `segments/`, with their lengths.
pub fn seg_files(data_dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(fanouts) = std::fs::read_dir(data_dir.join("segments")) else {
        return out;
    };
    for dir in fanouts.flatten() {
        for e in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().ends_with(".seg") {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                out.push((e.path(), len));
            }
        }
    }
    out.sort();
    out
}

/// The files in a data dir's `tmp/` (ingests in flight, partials kept for resume).
pub fn tmp_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(data_dir.join("tmp"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Waits at most `limit` for a moment at which `tmp/` holds no file: an ingest's temp file
/// lives only while it is in flight, so a file that is there at every look was left behind.
/// `None` if it was empty at some look; else what it held at the last one.
pub fn tmp_drains(data_dir: &Path, limit: Duration) -> Option<Vec<PathBuf>> {
    let started = Instant::now();
    loop {
        let files = tmp_files(data_dir);
        if files.is_empty() {
            return None;
        }
        if started.elapsed() >= limit {
            return Some(files);
        }
        std::thread::sleep(Duration::from_millis(TMP_POLL_MS));
    }
}

/// Poll interval of [`tmp_drains`]: short, so that a gap between two retries is seen.
pub const TMP_POLL_MS: u64 = 10;

/// Lines of node `i`'s log containing `needle`.
pub fn log_lines(fleet: &Fleet, i: usize, needle: &str) -> Vec<String> {
    std::fs::read_to_string(&fleet.node(i).log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// A series of node `i`'s `/metrics` (0 when absent: counters with no sample yet).
pub fn metric(fleet: &Fleet, i: usize, series: &str) -> anyhow::Result<f64> {
    Ok(fleet.metrics(i)?.get(series).copied().unwrap_or(0.0))
}

/// `edged_segments_rejected_total{reason="…"}` of node `i`.
pub fn rejected(fleet: &Fleet, i: usize, reason: &str) -> anyhow::Result<f64> {
    metric(
        fleet,
        i,
        &format!("edged_segments_rejected_total{{reason=\"{reason}\"}}"),
    )
}

/// Waits for `cond` like [`Fleet::wait_until`], with the fleet's poll interval.
pub fn wait(fleet: &Fleet, limit: Duration, cond: impl FnMut(&Fleet) -> bool) -> bool {
    fleet.wait_until(limit, cond).is_some()
}

/// Replaces the line `key = …` of a config file (the first one) with `key = value`.
pub fn set_config_value(config: &Path, key: &str, value: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)?;
    let prefix = format!("{key} =");
    let mut done = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if !done && l.starts_with(&prefix) {
                done = true;
                format!("{key} = {value}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !done {
        anyhow::bail!("{} has no `{key}` line", config.display());
    }
    std::fs::write(config, lines.join("\n") + "\n")?;
    Ok(())
}

/// One line of an `edged import --json` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportLine {
    pub file: String,
    /// `imported`, `already_present`, `rejected` or `skipped`.
    pub status: String,
    pub id: Option<String>,
    pub reason: Option<String>,
}

/// Parses an `edged import --json` report.
pub fn import_lines(stdout: &[u8]) -> anyhow::Result<Vec<ImportLine>> {
    let v: serde_json::Value = serde_json::from_slice(stdout).map_err(|e| {
        anyhow::anyhow!(
            "import report is not JSON ({e}): {}",
            String::from_utf8_lossy(stdout)
        )
    })?;
    let text = |l: &serde_json::Value, k: &str| l[k].as_str().map(str::to_owned);
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .map(|l| ImportLine {
            file: text(l, "file").unwrap_or_default(),
            status: text(l, "status").unwrap_or_default(),
            id: text(l, "id"),
            reason: text(l, "reason"),
        })
        .collect())
}

/// The outcome of one `edged import` run: its exit code and its report.
#[derive(Debug, Clone)]
pub struct ImportRun {
    pub code: Option<i32>,
    pub lines: Vec<ImportLine>,
    pub stderr: String,
}

impl ImportRun {
    pub fn line(&self, file: &str) -> Option<&ImportLine> {
        self.lines.iter().find(|l| l.file == file)
    }

    /// Ids the import stored or found already stored.
    pub fn acknowledged(&self) -> BTreeSet<String> {
        self.lines
            .iter()
            .filter(|l| matches!(l.status.as_str(), "imported" | "already_present"))
            .filter_map(|l| l.id.clone())
            .collect()
    }
}

/// Runs `cmd` (an `edged import … --json`), bounded by the CLI's timeout; a report whatever its
/// exit code (an import with rejected files exits 1).
pub fn run_import(cmd: std::process::Command) -> anyhow::Result<ImportRun> {
    let out = crate::proc::run_bounded(cmd, Duration::from_millis(crate::fleet::CLI_TIMEOUT_MS))?;
    Ok(ImportRun {
        code: out.status.code(),
        lines: import_lines(&out.stdout)?,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `edged import DIR --json` on node `i` (through its daemon when it runs, else directly into
/// its data dir).
pub fn import(fleet: &Fleet, i: usize, dir: &Path) -> anyhow::Result<ImportRun> {
    run_import(fleet.command(i, &["import", "--json", &dir.to_string_lossy()]))
}

/// Sleeps one poll interval of the fleet's waits.
pub fn pause() {
    std::thread::sleep(Duration::from_millis(WAIT_POLL_MS));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_are_replaced_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("edge.toml");
        std::fs::write(&p, "a = 1\nceiling_bytes = 5\n[x]\nceiling_bytes = 6\n").unwrap();
        set_config_value(&p, "ceiling_bytes", "42").unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "a = 1\nceiling_bytes = 42\n[x]\nceiling_bytes = 6\n"
        );
        assert!(set_config_value(&p, "nope", "1").is_err());
    }

    #[test]
    fn a_temp_dir_that_never_drains_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        assert_eq!(tmp_drains(dir.path(), Duration::from_millis(50)), None);
        std::fs::write(dir.path().join("tmp/x.part"), b"").unwrap();
        let left = tmp_drains(dir.path(), Duration::from_millis(50)).unwrap();
        assert_eq!(left.len(), 1);
    }
}
