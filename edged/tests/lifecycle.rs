//! A daemon's life with its peers: a SIGTERM with peers connected closes them at once with the
//! shutdown reason and says what it waits for; `edged reload` and SIGHUP apply a changed
//! `edge.toml` without a restart, and refuse an invalid one whole.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{Fleet, NodeOptions, p, stderr, stdout};

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

/// Node `i`'s `[[known_peers]]` block naming `peer`, as the fleet wrote it.
fn peer_block(f: &Fleet, i: usize, peer: usize) -> String {
    let text = std::fs::read_to_string(&f.node(i).config).expect("read edge.toml");
    let head = format!("[[known_peers]]\nid = \"node-{peer}\"\n");
    let at = text.find(&head).expect("the peer's block");
    let end = text[at + head.len()..]
        .find('\n')
        .map(|n| at + head.len() + n + 1)
        .expect("the block's addr line");
    text[at..end].to_owned()
}

/// Rewrites node `i`'s config with `edit`.
fn edit_config(f: &Fleet, i: usize, edit: impl FnOnce(String) -> String) {
    let path = &f.node(i).config;
    let text = std::fs::read_to_string(path).expect("read edge.toml");
    std::fs::write(path, edit(text)).expect("write edge.toml");
}

/// The state of node `i`'s job of `seg` for `peer`, if it has one.
fn job_state(f: &Fleet, i: usize, seg: &str, peer: &str) -> Option<String> {
    let row = f.segment_row(i, seg)?;
    row["jobs"]
        .as_array()?
        .iter()
        .find(|j| j["peer"] == peer)
        .and_then(|j| j["state"].as_str().map(str::to_owned))
}

fn peer_ids(f: &Fleet, i: usize) -> Vec<String> {
    f.json(i, &["peers"])
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn sighup(f: &Fleet, i: usize) {
    let sent = Command::new("kill")
        .args(["-HUP", &f.pid(i).to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -HUP failed");
}

#[test]
fn reload_swaps_peers_with_their_jobs_refuses_an_invalid_file_and_sighup_does_the_same() {
    // node-1 knows node-2 (down: its job stays pending) and not yet node-3, which knows node-1.
    let mut f = Fleet::new(3, &[(1, 2), (1, 3)], |_| NodeOptions::default());
    let block2 = peer_block(&f, 1, 2);
    let block3 = peer_block(&f, 1, 3);
    edit_config(&f, 1, |t| t.replace(&block3, ""));
    f.start(3);
    f.start(1);
    let usb = f.path("usb");
    std::fs::create_dir(&usb).expect("create the stick");
    let (_, id) = f.make_segment("policy", 4096, &usb);
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || format!("import: {}", stderr(&o)));
    f.check(
        job_state(&f, 1, &id, "node-2").as_deref() == Some("pending"),
        || format!("node-2's job: {:?}", f.segment_row(1, &id)),
    );
    f.check(!f.segment_ids(3).contains(&id), || {
        "node-3 has the segment before node-1 knows it".into()
    });

    // An invalid file (the peers swapped, and a relay key out of range) changes nothing.
    let valid = std::fs::read_to_string(&f.node(1).config).expect("read");
    edit_config(&f, 1, |t| {
        t.replace(&block2, &block3)
            .replace("[relay]\n", "[relay]\nattempts_max = 0\n")
    });
    let o = f.cli(1, &["reload"]);
    f.check(o.status.code() == Some(3), || {
        format!("invalid reload: {} {}", o.status, stderr(&o))
    });
    f.check(stderr(&o).contains("attempts_max"), || {
        format!("the error does not name the key: {}", stderr(&o))
    });
    let from = f.log_len(1);
    sighup(&f, 1);
    let refused = f.wait_for(
        "the SIGHUP's refusal in the log",
        SETTLE_TIMEOUT,
        POLL,
        || {
            f.events(
                1,
                from,
                "configuration not reloaded: the file is invalid; nothing changed",
            )
            .into_iter()
            .next()
        },
    );
    f.check(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("attempts_max")),
        || format!("the logged refusal does not name the key: {refused}"),
    );
    // The commands below read the file too.
    std::fs::write(&f.node(1).config, &valid).expect("write");
    f.check(peer_ids(&f, 1) == ["node-2"], || {
        format!("an invalid file changed the peers: {:?}", peer_ids(&f, 1))
    });
    f.check(
        job_state(&f, 1, &id, "node-2").as_deref() == Some("pending"),
        || "an invalid file changed node-2's job".into(),
    );

    // The valid swap: node-3 gets the stored segment, node-2's job is cancelled.
    std::fs::write(&f.node(1).config, valid.replace(&block2, &block3)).expect("write");
    let o = f.cli(1, &["reload"]);
    f.check(o.status.success(), || {
        format!("reload: {} {}", o.status, stderr(&o))
    });
    f.check(stdout(&o).contains("peers: +node-3, -node-2"), || {
        format!("reload output: {}", stdout(&o))
    });
    f.check(
        job_state(&f, 1, &id, "node-2").as_deref() == Some("cancelled"),
        || {
            format!(
                "node-2's job after its removal: {:?}",
                f.segment_row(1, &id)
            )
        },
    );
    f.wait_for(
        "node-3 to receive the stored segment",
        SETTLE_TIMEOUT,
        POLL,
        || f.segment_ids(3).contains(&id).then_some(()),
    );
    f.wait_for(
        "node-1's job for node-3 to end delivered",
        SETTLE_TIMEOUT,
        POLL,
        || (job_state(&f, 1, &id, "node-3").as_deref() == Some("delivered")).then_some(()),
    );
    f.check(peer_ids(&f, 1) == ["node-3"], || {
        format!("peers after the reload: {:?}", peer_ids(&f, 1))
    });

    // A segment of a second publisher is refused while it is not trusted.
    let key2 = f.path("second.key");
    let o = support::edged(&["key", "gen", "--out", p(&key2)]);
    f.check(o.status.success(), || format!("key gen: {}", stderr(&o)));
    let publisher2 = stdout(&o).trim().to_owned();
    let usb2 = f.path("usb2");
    std::fs::create_dir(&usb2).expect("create the second stick");
    let payload = f.path("second.payload");
    support::write_payload(&payload, 4096, 2);
    let o = support::edged(&[
        "segment",
        "create",
        "--key",
        p(&key2),
        "--name",
        "second",
        "--channel",
        "test",
        p(&payload),
        "--out",
        p(&usb2.join("second.seg")),
    ]);
    f.check(o.status.success(), || {
        format!("segment create: {}", stderr(&o))
    });
    let id2 = stdout(&o).trim().to_owned();
    let o = f.cli(1, &["import", p(&usb2)]);
    f.check(!o.status.success(), || {
        format!(
            "a segment of an untrusted publisher was imported: {}",
            stdout(&o)
        )
    });
    f.check(f.events(1, 0, "relay jobs scheduled").is_empty(), || {
        "debug lines logged at log_level info".into()
    });

    // SIGHUP applies changes the same way: a relay limit, a trusted publisher, the log level.
    let from = f.log_len(1);
    edit_config(&f, 1, |t| {
        t.replace("busy_retry_ms = 200", "busy_retry_ms = 300")
            .replace("trusted = [", &format!("trusted = [\"{publisher2}\", "))
            .replace(
                "data_dir = \"data\"\n",
                "data_dir = \"data\"\nlog_level = \"debug\"\n",
            )
    });
    sighup(&f, 1);
    let done = f.wait_for(
        "the SIGHUP's reload in the log",
        SETTLE_TIMEOUT,
        POLL,
        || {
            let text = std::fs::read(f.node(1).log()).unwrap_or_default();
            let from = (from as usize).min(text.len());
            String::from_utf8_lossy(&text[from..])
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .map(|v| v["fields"]["message"].as_str().unwrap_or("").to_owned())
                .find(|m| m.starts_with("configuration reloaded: "))
        },
    );
    f.check(
        done == format!(
            "configuration reloaded: relay.busy_retry_ms 200→300; trusted publishers: +{publisher2}; log_level info→debug"
        ),
        || format!("the SIGHUP reload said: {done}"),
    );
    let o = f.cli(1, &["import", p(&usb2)]);
    f.check(o.status.success(), || {
        format!(
            "the newly trusted publisher's segment: {} {}",
            stdout(&o),
            stderr(&o)
        )
    });
    f.check(f.segment_ids(1).contains(&id2), || "not stored".into());
    f.check(
        !f.events(1, from, "relay jobs scheduled").is_empty(),
        || "no debug line after log_level became debug".into(),
    );

    // A key that needs a restart is named, and nothing else happens.
    let listen = std::fs::read_to_string(&f.node(1).config).expect("read");
    let line = listen
        .lines()
        .find(|l| l.starts_with("listen_addr"))
        .expect("listen_addr line")
        .to_owned();
    edit_config(&f, 1, |t| t.replace(&line, "listen_addr = \"127.0.0.1:1\""));
    let o = f.cli(1, &["reload"]);
    f.check(o.status.success(), || format!("reload: {}", stderr(&o)));
    f.check(stdout(&o).contains("needs a restart: listen_addr"), || {
        format!("reload output: {}", stdout(&o))
    });
    let status = f.sigterm(1);
    f.check(status.success(), || format!("node-1 exited with {status}"));
}

#[test]
fn a_peer_removed_by_a_reload_sees_its_connection_closed_with_the_reason() {
    let mut f = Fleet::new(2, &[(1, 2)], |_| NodeOptions::default());
    f.start(1);
    f.start(2);
    wait_connected(&f, 1, "node-2");
    let block2 = peer_block(&f, 1, 2);
    edit_config(&f, 1, |t| t.replace(&block2, ""));
    let from2 = f.log_len(2);
    let o = f.cli(1, &["reload"]);
    f.check(o.status.success(), || format!("reload: {}", stderr(&o)));
    f.check(stdout(&o).contains("peers: -node-2"), || {
        format!("reload output: {}", stdout(&o))
    });
    f.wait_for(
        "node-2 to see its connection closed for the removal",
        SETTLE_TIMEOUT,
        POLL,
        || {
            f.events(2, from2, "disconnected")
                .iter()
                .any(|e| {
                    e["peer"] == "node-1"
                        && e["reason"]
                            .as_str()
                            .is_some_and(|r| r.contains("peer removed from known_peers"))
                })
                .then_some(())
        },
    );
    f.check(peer_ids(&f, 1).is_empty(), || {
        format!("node-1's peers after the removal: {:?}", peer_ids(&f, 1))
    });
}
