//! A daemon's life with its peers: a SIGTERM with peers connected closes them at once with the
//! shutdown reason and says what it waits for.

mod support;

use std::time::Duration;

use support::{Fleet, NodeOptions};

const POLL: Duration = Duration::from_millis(100);
/// Longest wait for peers to connect or for a log line to appear.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until node `i`'s daemon reports a live connection to `peer`.
fn wait_connected(f: &Fleet, i: usize, peer: &str) {
    f.wait_for(
        &format!("node-{i} to connect to {peer}"),
        SETTLE_TIMEOUT,
        POLL,
        || {
            let peers = f.json(i, &["peers"]);
            peers
                .as_array()?
                .iter()
                .any(|p| p["id"] == peer && p["connected"] == true)
                .then_some(())
        },
    );
}

/// The `fields` of node `i`'s log events whose message starts with `prefix`, from byte `from`.
fn events_starting(f: &Fleet, i: usize, from: u64, prefix: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read(f.node(i).log()).unwrap_or_default();
    let from = (from as usize).min(text.len());
    String::from_utf8_lossy(&text[from..])
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("fields").cloned())
        .filter(|e| e["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
        .collect()
}

#[test]
fn sigterm_with_peers_connected_closes_them_with_the_reason_and_says_what_it_waited_for() {
    let mut f = Fleet::new(3, &[(1, 2), (1, 3), (2, 3)], |_| NodeOptions::default());
    for i in 1..=3 {
        f.start(i);
    }
    wait_connected(&f, 1, "node-2");
    wait_connected(&f, 1, "node-3");
    let from2 = f.log_len(2);
    let status = f.sigterm(1);
    f.check(status.success(), || {
        format!("node-1 exited with {status} after SIGTERM")
    });

    let said = events_starting(&f, 1, 0, "shutting down");
    f.check(said.len() == 1, || {
        format!("node-1 logged {} shutdown lines: {said:?}", said.len())
    });
    let line = &said[0];
    f.check(
        line["peer_connections"] == 2
            && line["message"]
                .as_str()
                .is_some_and(|m| m.contains("closing 2 peer connections")),
        || format!("the shutdown line does not name the 2 peer connections: {line}"),
    );
    let stopped = events_starting(&f, 1, 0, "edged stopped in ");
    f.check(stopped.len() == 1 && stopped[0]["took_ms"].is_u64(), || {
        format!("no \"edged stopped in … ms\" line with took_ms: {stopped:?}")
    });

    // The peer reads why the connection went.
    f.wait_for(
        "node-2 to see node-1's connection closed for the shutdown",
        SETTLE_TIMEOUT,
        POLL,
        || {
            f.events(2, from2, "disconnected")
                .iter()
                .any(|e| {
                    e["peer"] == "node-1"
                        && e["reason"]
                            .as_str()
                            .is_some_and(|r| r.contains("node shutting down"))
                })
                .then_some(())
        },
    );
    for i in 2..=3 {
        let status = f.sigterm(i);
        f.check(status.success(), || {
            format!("node-{i} exited with {status} after SIGTERM")
        });
    }
}
