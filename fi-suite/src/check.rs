//! The checker: looks at a fleet from outside — the CLI's `--json`, `/metrics`, files on disk,
//! the logs — and turns what it sees into [`CheckResult`]s.
//!
//! Every check says how much it saw (`observed` of `out_of`), so the report can add them up; a
//! check that could not look (no node running, nothing acknowledged) is UNKNOWN, never PASS.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fleet::Fleet;
use crate::results::{CheckResult, Verdict, check};

/// A segment acknowledged to someone (an importer, a peer): it must never be lost.
#[derive(Debug, Clone)]
pub struct Acked {
    pub id: String,
    /// blake3 of the whole `.seg` file as it was signed.
    pub file_hash: [u8; 32],
    pub file_len: u64,
    /// Who acknowledged it (`import on node-1`).
    pub by: String,
}

impl Acked {
    /// A segment file that an import acknowledged.
    pub fn of_file(id: &str, file: &Path, by: &str) -> anyhow::Result<Acked> {
        let bytes = std::fs::read(file)?;
        Ok(Acked {
            id: id.to_owned(),
            file_hash: *blake3::hash(&bytes).as_bytes(),
            file_len: bytes.len() as u64,
            by: by.to_owned(),
        })
    }
}

fn result(
    name: &str,
    invariants: &[&str],
    verdict: Verdict,
    detail: String,
    observed: Option<u64>,
    out_of: Option<u64>,
) -> CheckResult {
    CheckResult {
        name: name.to_owned(),
        invariants: invariants.iter().map(|s| (*s).to_owned()).collect(),
        verdict,
        detail,
        observed,
        out_of,
    }
}

/// Whether node `i` holds `a` byte-identical: listed by its daemon (when running) and its
/// stored file hashing to the original.
fn holds(fleet: &Fleet, i: usize, listed: Option<&BTreeSet<String>>, a: &Acked) -> bool {
    if listed.is_some_and(|l| !l.contains(&a.id)) {
        return false;
    }
    match std::fs::read(fleet.node(i).segment_file(&a.id)) {
        Ok(bytes) => {
            bytes.len() as u64 == a.file_len && *blake3::hash(&bytes).as_bytes() == a.file_hash
        }
        Err(_) => false,
    }
}

/// The ids each running node lists (not running: `None`).
fn listings(fleet: &Fleet, nodes: &[usize]) -> BTreeMap<usize, Option<BTreeSet<String>>> {
    nodes
        .iter()
        .map(|&i| {
            let listed = if fleet.node(i).running() {
                fleet.held(i).ok().map(|v| v.into_iter().collect())
            } else {
                None
            };
            (i, listed)
        })
        .collect()
}

/// Nodes among `nodes` that do not hold every segment of `acked`, with what they lack.
pub fn missing(fleet: &Fleet, acked: &[Acked], nodes: &[usize]) -> BTreeMap<usize, Vec<String>> {
    let listed = listings(fleet, nodes);
    let mut out = BTreeMap::new();
    for &i in nodes {
        let lacks: Vec<String> = acked
            .iter()
            .filter(|a| !holds(fleet, i, listed[&i].as_ref(), a))
            .map(|a| a.id.clone())
            .collect();
        if !lacks.is_empty() {
            out.insert(i, lacks);
        }
    }
    out
}

/// Waits until every node of `nodes` holds every segment of `acked` byte-identical, at most
/// `bound`: the time it took, or `None`.
pub fn converge(
    fleet: &Fleet,
    acked: &[Acked],
    nodes: &[usize],
    bound: Duration,
) -> Option<Duration> {
    fleet.wait_until(bound, |f| missing(f, acked, nodes).is_empty())
}

/// `lost`: every acknowledged segment is held byte-identical by every node of `nodes` (those
/// that can reach it).
pub fn lost(fleet: &Fleet, acked: &[Acked], nodes: &[usize]) -> CheckResult {
    let inv = ["INV-03", "INV-05", "INV-15"];
    if acked.is_empty() {
        return result(
            check::LOST,
            &inv,
            Verdict::Unknown,
            "nothing was acknowledged".into(),
            None,
            Some(0),
        );
    }
    let missing = missing(fleet, acked, nodes);
    let lost: BTreeSet<&String> = missing.values().flatten().collect();
    let detail = if missing.is_empty() {
        format!(
            "{} segment(s) held byte-identical by all {} node(s)",
            acked.len(),
            nodes.len()
        )
    } else {
        let first: Vec<String> = missing
            .iter()
            .take(3)
            .map(|(i, ids)| {
                let by = acked
                    .iter()
                    .find(|a| a.id == ids[0])
                    .map_or("?", |a| a.by.as_str());
                format!(
                    "{} lacks {} (acknowledged by {by})",
                    fleet.node(*i).id,
                    short(&ids[0])
                )
            })
            .collect();
        format!(
            "{} of {} acknowledged segment(s) not held everywhere: {}",
            lost.len(),
            acked.len(),
            first.join("; ")
        )
    };
    let verdict = if missing.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    result(
        check::LOST,
        &inv,
        verdict,
        detail,
        Some(lost.len() as u64),
        Some(acked.len() as u64),
    )
}

pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The `.seg` files of a node's `segments/` and the ids their names say.
fn stored_files(data_dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(fanouts) = std::fs::read_dir(data_dir.join("segments")) else {
        return out;
    };
    for dir in fanouts.flatten() {
        let Ok(entries) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".seg") {
                out.push((e.path(), id.to_owned()));
            }
        }
    }
    out
}

/// `duplicate_copies`: no node stores a segment twice (as files, or as listed rows).
pub fn duplicates(fleet: &Fleet) -> CheckResult {
    let inv = ["INV-10"];
    let mut extras = 0u64;
    let mut seen_total = 0u64;
    let mut first = None;
    for node in &fleet.nodes {
        let mut count: BTreeMap<String, u64> = BTreeMap::new();
        for (_, id) in stored_files(&node.data_dir) {
            *count.entry(id).or_default() += 1;
        }
        if node.running() {
            if let Ok(v) = fleet.try_json(node.index, &["segments"]) {
                let ids: Vec<&str> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["id"].as_str())
                    .collect();
                let unique: BTreeSet<&str> = ids.iter().copied().collect();
                extras += (ids.len() - unique.len()) as u64;
            }
        }
        seen_total += count.len() as u64;
        for (id, n) in count {
            if n > 1 {
                extras += n - 1;
                first.get_or_insert_with(|| format!("{} holds {} {n} times", node.id, short(&id)));
            }
        }
    }
    let verdict = if extras == 0 {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let detail = first.unwrap_or_else(|| {
        format!("{seen_total} stored segment(s) across the fleet, each once per node")
    });
    result(
        check::DUPLICATE_COPIES,
        &inv,
        verdict,
        detail,
        Some(extras),
        Some(seen_total),
    )
}

/// `panics`: no `panicked at` in any node's log.
pub fn panics(fleet: &Fleet) -> CheckResult {
    let mut n = 0u64;
    let mut first = None;
    for node in &fleet.nodes {
        let text = std::fs::read_to_string(&node.log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("panicked at")) {
            n += 1;
            first.get_or_insert_with(|| {
                format!(
                    "{}: {}",
                    node.id,
                    line.chars().take(300).collect::<String>()
                )
            });
        }
    }
    let verdict = if n == 0 { Verdict::Pass } else { Verdict::Fail };
    let detail = first.unwrap_or_else(|| format!("{} log(s) read", fleet.len()));
    result(
        check::PANICS,
        &[],
        verdict,
        detail,
        Some(n),
        Some(fleet.len() as u64),
    )
}

/// `counters_reconcile` (INV-26) on every running node's real `/metrics`: received = stored +
/// duplicate + Σ rejected; attempts = deliveries + failures is the relay's own identity and is
/// checked through its counters when they are exposed.
pub fn counters(fleet: &Fleet) -> CheckResult {
    let inv = ["INV-26"];
    let mut bad = Vec::new();
    let mut looked = 0u64;
    for node in fleet.nodes.iter().filter(|n| n.running()) {
        let m = match fleet.metrics(node.index) {
            Ok(m) => m,
            Err(e) => {
                bad.push(format!("{}: {e}", node.id));
                continue;
            }
        };
        looked += 1;
        let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
        let received = get("edged_segments_received_total");
        let rejected: f64 = m
            .iter()
            .filter(|(k, _)| k.starts_with("edged_segments_rejected_total{"))
            .map(|(_, v)| *v)
            .sum();
        let sum =
            get("edged_segments_stored_total") + get("edged_segments_duplicate_total") + rejected;
        if received != sum {
            bad.push(format!(
                "{}: received {received} ≠ stored + duplicate + rejected = {sum}",
                node.id
            ));
        }
    }
    let verdict = if looked == 0 {
        Verdict::Unknown
    } else if bad.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let detail = if bad.is_empty() {
        format!("{looked} node(s) reconcile")
    } else {
        bad.join("; ")
    };
    result(
        check::COUNTERS,
        &inv,
        verdict,
        detail,
        Some(bad.len() as u64),
        Some(looked),
    )
}

/// The final state of a fleet: for each node, the segments it stores (by name) and the state
/// of each of its jobs (peer → state), for INV-25.
pub type FinalState = BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>;

pub fn final_state(fleet: &Fleet) -> anyhow::Result<FinalState> {
    let mut out = BTreeMap::new();
    for node in fleet.nodes.iter().filter(|n| n.running()) {
        let v = fleet.try_json(node.index, &["segments"])?;
        let mut segs = BTreeMap::new();
        for s in v.as_array().into_iter().flatten() {
            // By name: two runs of one workload sign the same contents at different times, so
            // their ids differ while their names are the same.
            let id = s["name"].as_str().unwrap_or_default().to_owned();
            let jobs: BTreeMap<String, String> = s["jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|j| {
                    (
                        j["peer"].as_str().unwrap_or_default().to_owned(),
                        j["state"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            segs.insert(id, jobs);
        }
        out.insert(node.id.clone(), segs);
    }
    Ok(out)
}

/// `same_state_as_without_kills` (INV-25).
pub fn same_state(with: &FinalState, without: &FinalState) -> CheckResult {
    let inv = ["INV-25"];
    let mut diffs = Vec::new();
    let nodes: BTreeSet<&String> = with.keys().chain(without.keys()).collect();
    for node in &nodes {
        let a = with.get(*node);
        let b = without.get(*node);
        if a != b {
            let ids_a: BTreeSet<&String> = a.map(|m| m.keys().collect()).unwrap_or_default();
            let ids_b: BTreeSet<&String> = b.map(|m| m.keys().collect()).unwrap_or_default();
            if ids_a != ids_b {
                diffs.push(format!(
                    "{node}: holds {} segment(s), {} without kills",
                    ids_a.len(),
                    ids_b.len()
                ));
            } else {
                diffs.push(format!("{node}: same segments, different job states"));
            }
        }
    }
    let verdict = if nodes.is_empty() {
        Verdict::Unknown
    } else if diffs.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let detail = if diffs.is_empty() {
        format!(
            "{} node(s) end in the same segments and job states",
            nodes.len()
        )
    } else {
        diffs.join("; ")
    };
    result(
        check::SAME_STATE_AS_WITHOUT_KILLS,
        &inv,
        verdict,
        detail,
        Some(diffs.len() as u64),
        Some(nodes.len() as u64),
    )
}

/// INV-11 and INV-13 on every running node, from `segments --json`: each stored segment has
/// one job per known peer except the one it came from, and is marked propagated exactly when
/// its condition holds (`all_peers`: every job delivered; `one_peer`: one delivered, the others
/// cancelled).
pub fn jobs_and_propagation(fleet: &Fleet) -> Vec<CheckResult> {
    let mut wrong_jobs = Vec::new();
    let mut wrong_marks = Vec::new();
    let mut seen = 0u64;
    for node in fleet.nodes.iter().filter(|n| n.running()) {
        let Ok(v) = fleet.try_json(node.index, &["segments"]) else {
            wrong_jobs.push(format!("{}: cannot list", node.id));
            continue;
        };
        let mut peers: BTreeSet<String> = node
            .peers
            .iter()
            .map(|p| fleet.node(*p).id.clone())
            .collect();
        for (id, _) in fleet
            .spec
            .extra_peers
            .get(&node.index)
            .into_iter()
            .flatten()
        {
            peers.insert(id.clone());
        }
        for s in v.as_array().into_iter().flatten() {
            seen += 1;
            let id = s["id"].as_str().unwrap_or_default();
            let source = s["source"].as_str().unwrap_or_default();
            let jobs: BTreeMap<String, String> = s["jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|j| {
                    (
                        j["peer"].as_str().unwrap_or_default().to_owned(),
                        j["state"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let want: BTreeSet<String> = peers
                .iter()
                .filter(|p| p.as_str() != source)
                .cloned()
                .collect();
            let have: BTreeSet<String> = jobs.keys().cloned().collect();
            if want != have {
                wrong_jobs.push(format!(
                    "{} {}: jobs for {have:?}, peers but the source {want:?}",
                    node.id,
                    short(id)
                ));
            }
            let delivered = jobs.values().filter(|s| *s == "delivered").count();
            let holds = match s["condition"].as_str() {
                Some("one_peer") => delivered >= 1 || jobs.is_empty(),
                _ => delivered == jobs.len(),
            };
            let marked = !s["propagated_at_ms"].is_null();
            if holds != marked {
                wrong_marks.push(format!(
                    "{} {}: condition holds {holds}, marked {marked}",
                    node.id,
                    short(id)
                ));
            }
        }
    }
    let verdict = |bad: &Vec<String>| {
        if seen == 0 {
            Verdict::Unknown
        } else if bad.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    };
    vec![
        result(
            "jobs_one_per_peer_but_the_source",
            &["INV-11"],
            verdict(&wrong_jobs),
            if wrong_jobs.is_empty() {
                format!("{seen} stored segment(s) checked")
            } else {
                wrong_jobs.join("; ")
            },
            Some(wrong_jobs.len() as u64),
            Some(seen),
        ),
        result(
            "propagated_exactly_when_the_condition_holds",
            &["INV-13"],
            verdict(&wrong_marks),
            if wrong_marks.is_empty() {
                format!("{seen} stored segment(s) checked")
            } else {
                wrong_marks.join("; ")
            },
            Some(wrong_marks.len() as u64),
            Some(seen),
        ),
    ]
}
