//! What the daemon's log tells an operator: a refused handshake is a WARN with its reason in
//! words, at most a few per source and window however often it is tried; and colour only on a
//! terminal (a file or the journal gets plain text).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{EDGED, Fleet, NodeOptions, answers, edged, p, stderr};

/// node-2 of `f` given a certificate (and CA) of another fleet, under the same id.
fn impostor(f: &Fleet) {
    let other = f.path("other-ca");
    let o = edged(&["ca", "init", "--out", p(&other)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let node2 = &f.node(2).dir;
    let fresh = f.path("other-node-2");
    let o = edged(&[
        "ca",
        "issue",
        "--ca",
        p(&other),
        "--node",
        "node-2",
        "--out",
        p(&fresh),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for file in ["node-2.crt", "node-2.key"] {
        std::fs::copy(fresh.join(file), node2.join(file)).unwrap();
    }
    let config = &f.node(2).config;
    let text = std::fs::read_to_string(config).unwrap();
    let text = text.replace(
        "ca_cert = \"../ca/ca.crt\"",
        &format!("ca_cert = \"{}\"", p(&other.join("ca.crt"))),
    );
    std::fs::write(config, text).unwrap();
}

/// node-1's log lines (JSON) about refused handshakes: (level, fields).
fn refusals(f: &Fleet) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(f.node(1).log()).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            let m = v["fields"]["message"].as_str().unwrap_or_default();
            m.contains("handshake") || m == "dial failed"
        })
        .map(|v| {
            (
                v["level"].as_str().unwrap_or_default().to_owned(),
                v["fields"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_certificate_of_another_fleet_is_a_rate_limited_warn_in_words() {
    let mut f = Fleet::new(2, &[(1, 2)], |_| NodeOptions::default());
    impostor(&f);
    f.start(1);
    f.start(2);
    // Redials back off from 100 ms to 1 s: within 6 s node-1 tries (and is tried) well over the
    // log budget of 5 per source and minute.
    std::thread::sleep(Duration::from_secs(6));
    let lines = refusals(&f);
    let warns: Vec<&Value> = lines
        .iter()
        .filter(|(level, _)| level == "WARN")
        .map(|(_, fields)| fields)
        .collect();
    f.check(!warns.is_empty(), || {
        format!("no WARN for the refusals: {lines:?}")
    });
    f.check(
        warns.iter().all(|w| {
            w["message"] == "handshake refused"
                && w["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("not signed by") || r.contains("fleet CA"))
        }),
        || format!("each WARN says why in words: {warns:?}"),
    );
    f.check(warns.len() <= 5, || {
        format!("at most the budget of 5 per source and window: {warns:?}")
    });
    f.check(lines.iter().all(|(level, _)| level == "WARN"), || {
        format!("no refusal below WARN: {lines:?}")
    });
    let peers = f.json(1, &["peers"]);
    f.check(
        peers[0]["last_failure"]
            .as_str()
            .is_some_and(|s| s.contains("not signed by this fleet's CA")),
        || format!("edged peers says it in words: {peers}"),
    );
}

#[test]
fn a_log_file_gets_no_colour() {
    let f = Fleet::new(1, &[], |_| NodeOptions::default());
    let log = f.path("human.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(EDGED)
        .args([
            "run",
            "--config",
            p(&f.node(1).config),
            "--log-format",
            "human",
        ])
        .env_remove("EDGED_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let socket = f.node(1).control_socket();
    let up = f.wait_for(
        "the daemon to answer",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || answers(&socket).then_some(true),
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stopped = f.wait_for(
        "the daemon to stop",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || child.try_wait().ok().flatten(),
    );
    let text = std::fs::read_to_string(&log).unwrap();
    f.check(
        up && stopped.success() && text.contains("edged started"),
        || text.clone(),
    );
    f.check(!text.contains('\u{1b}'), || {
        format!("escape codes in a file: {text:?}")
    });
}
