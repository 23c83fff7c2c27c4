//! "Is it everywhere yet?" through real daemons: five nodes on a line with a chord (1-2-3-4-5,
//! 5-1), a segment imported on node-3; `edged fleet` on every node must say `everywhere`
//! within a bound derived from the gossip interval, and a stopped node stays listed as
//! missing (INV-31).

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// `[fleet] gossip_interval_ms` of these nodes.
const GOSSIP_MS: u64 = 300;
/// A ring of five: every node is at most two hops from every other.
const DIAMETER: u64 = 2;
/// One gossip round on loopback: a few request/answer exchanges of a few KiB.
const ROUND_MS: u64 = 200;
/// How often a node compares its store with its own receipts (`net::limits`).
const RECONCILE_MS: u64 = net::limits::RECEIPT_RECONCILE_MS;

/// After the last node stored the segment, its receipt exists within one reconcile tick, and
/// crosses a hop within one gossip interval and one round; the farthest node is `DIAMETER`
/// hops away. Five times that, for a machine running other tests at the same time (each
/// probe is itself a process start and a control-socket listing).
fn everywhere_bound() -> Duration {
    Duration::from_millis(5 * (RECONCILE_MS + DIAMETER * (GOSSIP_MS + ROUND_MS)))
}

fn ring() -> Fleet {
    Fleet::new(5, &[(1, 2), (2, 3), (3, 4), (4, 5), (5, 1)], |_| {
        NodeOptions::default().fleet("gossip_interval_ms", GOSSIP_MS)
    })
}

fn segment_view(f: &Fleet, i: usize, id: &str) -> Value {
    let v = f.json(i, &["fleet", "--segment", id]);
    v["segments"][0].clone()
}

/// Node `i`'s view of the segment; `None` while no receipt names it yet (the node's own
/// receipt is made within a reconcile tick of storing it).
fn try_view(f: &Fleet, i: usize, id: &str) -> Option<Value> {
    let o = f.cli(i, &["fleet", "--segment", id, "--json"]);
    if !o.status.success() {
        f.check(stderr(&o).contains("no receipt names a segment"), || {
            format!("edged fleet on node-{i}: {}", stderr(&o))
        });
        return None;
    }
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    Some(v["segments"][0].clone())
}

/// The verdict node `i` gives the segment; empty while no receipt names it.
fn verdict(f: &Fleet, i: usize, id: &str) -> String {
    try_view(f, i, id)
        .and_then(|v| v["verdict"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn import_on(f: &Fleet, i: usize, name: &str) -> String {
    let usb = f.path(&format!("usb-{name}"));
    std::fs::create_dir_all(&usb).unwrap();
    let (_, id) = f.make_segment(name, 200_000, &usb);
    let o = f.cli(i, &["import", p(&usb)]);
    f.check(o.status.success(), || format!("import: {}", stderr(&o)));
    id
}

fn wait_stored(f: &Fleet, nodes: &[usize], id: &str) {
    f.wait_for(
        "every node to store the segment",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            nodes
                .iter()
                .all(|&i| f.segment_ids(i).iter().any(|s| s == id))
                .then_some(())
        },
    );
}

#[test]
fn inv_31_every_daemon_reports_everywhere_within_the_bound_and_a_stopped_node_stays_missing() {
    let mut f = ring();
    for i in 1..=5 {
        f.start(i);
    }
    let first = import_on(&f, 3, "first");
    wait_stored(&f, &[1, 2, 3, 4, 5], &first);
    let stored = Instant::now();
    let bound = everywhere_bound();
    f.wait_for(
        "every node to report the segment everywhere",
        bound,
        Duration::from_millis(50),
        || {
            (1..=5)
                .all(|i| verdict(&f, i, &first) == "everywhere")
                .then_some(())
        },
    );
    eprintln!(
        "every node reported `everywhere` {:?} after the last stored it (bound {bound:?})",
        stored.elapsed()
    );
    // The roster was learned: this node, its peers and the nodes receipts came from.
    let all = f.json(1, &["fleet"]);
    f.check(all["roster"]["source"] == "learned", || format!("{all:#}"));
    f.check(
        all["roster"]["members"].as_array().map(Vec::len) == Some(5),
        || format!("{all:#}"),
    );
    // `status` says it in one line. Its counts are kept, not walked per request: recomputed
    // at least every second after a change by the daemon, and by `status` itself when older
    // than 200 ms (`FLEET_VIEW_REFRESH_MS`, `FLEET_VIEW_STATUS_AGE_MIN_MS`), so it may lag the
    // listing by that much. Five times the longer of the two, for a loaded machine.
    f.wait_for(
        "status to count the segment everywhere",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || {
            let status = f.json(1, &["status"]);
            (status["fleet"]["everywhere"] == 1).then_some(())
        },
    );

    // node-4 stops; a second segment reaches the four others.
    f.sigterm(4);
    let second = import_on(&f, 3, "second");
    wait_stored(&f, &[1, 2, 3, 5], &second);
    f.wait_for(
        "node-1 to hear of the four copies",
        bound,
        Duration::from_millis(50),
        || (verdict(&f, 1, &second) == "partial (4/5)").then_some(()),
    );
    // Still so a few gossip rounds later: nothing makes it `everywhere`.
    std::thread::sleep(Duration::from_millis(3 * GOSSIP_MS));
    let view = segment_view(&f, 1, &second);
    f.check(view["verdict"] == "partial (4/5)", || format!("{view:#}"));
    f.check(view["missing"] == serde_json::json!(["node-4"]), || {
        format!("{view:#}")
    });
    let node4 = view["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["node"] == "node-4"))
        .cloned()
        .unwrap_or_default();
    f.check(node4["state"] == "no_receipt", || format!("{view:#}"));
    // What node-4 holds and lacks, as node-1 knows it.
    let of4 = f.json(1, &["fleet", "--node", "node-4"]);
    let state_of = |id: &str| {
        of4["segments"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["segment"] == id))
            .map(|s| s["state"].clone())
            .unwrap_or_default()
    };
    f.check(state_of(&first) == "holds", || format!("{of4:#}"));
    f.check(state_of(&second) == "no_receipt", || format!("{of4:#}"));
    // The table says the same.
    let table = stdout(&f.cli(1, &["fleet"]));
    f.check(
        table.contains("partial (4/5)") && table.contains("node-4"),
        || table.clone(),
    );
    // Well-formed names the book does not know: the command failed (1), as for a segment
    // prefix the store does not know; malformed ones are a bad command line (2).
    for (args, code, says) in [
        (&["fleet", "--node", "node-9"][..], 1, "not in the roster"),
        (
            &["fleet", "--segment", "abcdef"][..],
            1,
            "no receipt names a segment",
        ),
        (&["fleet", "--node", "Node_9"][..], 2, "node `Node_9`"),
        (&["fleet", "--segment", "xyz!"][..], 2, "segment `xyz!`"),
    ] {
        let o = f.cli(1, args);
        f.check(
            o.status.code() == Some(code) && stderr(&o).contains(says),
            || format!("{args:?}: {} {}", o.status, stderr(&o)),
        );
    }
}

#[test]
fn inv_31_without_a_daemon_fleet_reads_the_nodes_own_book() {
    let mut f = ring();
    f.start(1);
    f.start(2);
    let id = import_on(&f, 1, "offline");
    wait_stored(&f, &[1, 2], &id);
    f.wait_for(
        "node-1 to hear node-2's receipt",
        everywhere_bound(),
        Duration::from_millis(50),
        || try_view(&f, 1, &id).filter(|v| v["held"] == 2).map(|_| ()),
    );
    f.sigterm(1);
    // node-1's learned roster: itself, its peers node-2 and node-5, and whom it heard from;
    // two of them hold the segment (node-5 never ran).
    let v = segment_view(&f, 1, &id);
    f.check(v["held"] == 2, || format!("{v:#}"));
    f.check(v["kind"] != "everywhere", || format!("{v:#}"));
}

#[test]
fn inv_31_a_segment_stored_here_before_any_receipt_is_listed_and_not_everywhere() {
    // node-1 never runs: `edged import` stores the segment directly, and no receipt is made
    // until a daemon compares its store with its receipts.
    let f = ring();
    let id = import_on(&f, 1, "early");
    let all = f.json(1, &["fleet"]);
    let listed = all["segments"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["segment"] == id.as_str()))
        .cloned()
        .unwrap_or_default();
    f.check(listed["name"] == "early", || format!("{all:#}"));
    f.check(
        listed["held"] == 0 && listed["kind"] != "everywhere",
        || format!("{all:#}"),
    );
    // The table's footer adds up: the segment is counted apart from the verdicts.
    let table = stdout(&f.cli(1, &["fleet"]));
    f.check(
        table.contains("1 segment(s): 0 everywhere, 0 partial, 0 unknown, 1 held by no member"),
        || table.clone(),
    );
    // A prefix finds it too; this node is listed as having sent no receipt for it.
    let v = segment_view(&f, 1, &id[..8]);
    let me = v["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["node"] == "node-1"))
        .cloned()
        .unwrap_or_default();
    f.check(me["state"] == "no_receipt", || format!("{v:#}"));
}
