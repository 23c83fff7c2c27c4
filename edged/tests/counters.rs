//! INV-26 with real daemons: what a node received reconciles, read from its real `/metrics`,
//! after imports of every kind of file and a duplicate offered by a peer.
//!
//! Every daemon is SIGKILLed when its test ends, also on panic; every wait is bounded.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{Fleet, NodeOptions, p, stderr};

const POLL: Duration = Duration::from_millis(100);

/// Every sample of `/metrics` whose name starts with `prefix`: series (with labels) → value.
fn samples(body: &str, prefix: &str) -> BTreeMap<String, u64> {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A copy of `seg` at `to` with one byte flipped at `at` (from the end when negative).
fn flipped(seg: &Path, to: &Path, at: i64) {
    let mut bytes = std::fs::read(seg).unwrap();
    let i = if at < 0 {
        bytes.len() - at.unsigned_abs() as usize
    } else {
        at as usize
    };
    bytes[i] ^= 0x01;
    std::fs::write(to, bytes).unwrap();
}

#[test]
fn inv_26_received_reconciles_after_imports_of_every_kind_and_a_peer_duplicate() {
    // Jobs die after one attempt and catch-up is off: node-2 gets nothing from node-1, so the
    // only offer node-1 receives is node-2's own job, for a segment node-1 already holds.
    let mut f = Fleet::new(2, &[(1, 2)], |i| {
        let o = NodeOptions::default()
            .relay("attempts_max", 1)
            .net("catchup_on_connect", false)
            .net("catchup_interval_ms", 0);
        if i == 1 { o.metrics() } else { o }
    });
    let made = f.path("made");
    std::fs::create_dir(&made).unwrap();
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    let (good, good_id) = f.make_segment("good", 64 * 1024, &made);
    let (other, _) = f.make_segment("other", 32 * 1024, &made);
    let (signed, _) = f.make_segment("signed", 16 * 1024, &made);
    let (hashed, _) = f.make_segment("hashed", 16 * 1024, &made);
    let (cut, _) = f.make_segment("cut", 16 * 1024, &made);
    std::fs::copy(&good, usb.join("good.seg")).unwrap();
    std::fs::copy(&good, usb.join("good-again.seg")).unwrap();
    std::fs::copy(&other, usb.join("other.seg")).unwrap();
    // The signature is the last 64 bytes of the header (after magic, version and its length).
    let header = std::fs::read(&signed).unwrap();
    let header_len = u32::from_le_bytes(header[8..12].try_into().unwrap()) as i64;
    flipped(
        &signed,
        &usb.join("bad-signature.seg"),
        12 + header_len - 64,
    );
    flipped(&hashed, &usb.join("hash-mismatch.seg"), -1);
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(usb.join("truncated.seg"), &bytes[..bytes.len() - 10]).unwrap();
    std::fs::write(
        usb.join("malformed.seg"),
        b"this is not a segment file at all",
    )
    .unwrap();
    // A segment signed by a publisher node-1 does not trust.
    let stranger = f.path("stranger.key");
    let o = support::edged(&["key", "gen", "--out", p(&stranger)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let input = f.path("stranger.payload");
    std::fs::write(&input, b"from nobody we know").unwrap();
    let o = support::edged(&[
        "segment",
        "create",
        "--key",
        p(&stranger),
        "--name",
        "stranger",
        p(&input),
        "--out",
        p(&usb.join("untrusted.seg")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    f.start(1);
    let o = f.cli(1, &["import", p(&usb), "--json"]);
    f.check(o.status.code() == Some(1), || {
        format!("import with rejections: {} {}", o.status, stderr(&o))
    });
    let lines: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let status_of = |file: &str| {
        lines
            .iter()
            .find(|l| l["file"] == file)
            .map(|l| l["status"].as_str().unwrap_or("").to_owned())
    };
    // Two copies of one segment in one pipelined import: they are ingested at the same time,
    // so either may be the one stored; the other then finds it there.
    let copies = [status_of("good.seg"), status_of("good-again.seg")];
    f.check(
        copies.contains(&Some("imported".into()))
            && copies.contains(&Some("already_present".into())),
        || format!("one copy imported, the other already present: {lines:?}"),
    );
    for (file, status) in [
        ("other.seg", "imported"),
        ("bad-signature.seg", "rejected"),
        ("untrusted.seg", "rejected"),
        ("hash-mismatch.seg", "rejected"),
        ("truncated.seg", "rejected"),
        ("malformed.seg", "rejected"),
    ] {
        f.check(status_of(file).as_deref() == Some(status), || {
            format!("{file}: expected {status}: {lines:?}")
        });
    }
    // node-2 is down: both jobs die, so node-1 never sends node-2 anything.
    f.wait_for(
        "node-1's two jobs to die",
        Duration::from_secs(30),
        POLL,
        || {
            let dead = f.json(1, &["dlq", "list"]);
            (dead.as_array().map_or(0, Vec::len) == 2).then_some(())
        },
    );

    // node-2 comes up and imports `good` itself; its job offers it to node-1, which has it.
    f.start(2);
    f.wait_for(
        "node-1 and node-2 connected",
        Duration::from_secs(30),
        POLL,
        || {
            let peers = f.json(1, &["peers"]);
            peers
                .as_array()?
                .iter()
                .any(|p| p["id"] == "node-2" && p["connected"] == true)
                .then_some(())
        },
    );
    let usb2 = f.path("usb2");
    std::fs::create_dir(&usb2).unwrap();
    std::fs::copy(&good, usb2.join("good.seg")).unwrap();
    let o = f.cli(2, &["import", p(&usb2)]);
    f.check(o.status.success(), || {
        format!("import on node-2: {}", stderr(&o))
    });
    f.wait_for(
        "node-2's job for node-1 to end delivered (node-1 answered have)",
        Duration::from_secs(30),
        POLL,
        || {
            let row = f.segment_row(2, &good_id)?;
            row["jobs"]
                .as_array()?
                .iter()
                .any(|j| j["peer"] == "node-1" && j["state"] == "delivered")
                .then_some(())
        },
    );

    let port = f.node(1).metrics_port.unwrap();
    let (code, body) = support::http_get(port, "/metrics").unwrap_or_else(|e| f.fail(e));
    f.check(code == 200, || format!("GET /metrics: {code}\n{body}"));
    let one = |name: &str| samples(&body, name).get(name).copied();
    let rejected = samples(&body, "edged_segments_rejected_total{");
    let expected_rejected: BTreeMap<String, u64> = [
        ("bad_signature", 1),
        ("untrusted_publisher", 1),
        ("hash_mismatch", 1),
        ("length_mismatch", 1), // the truncated file, refused before anything was reserved
        ("malformed", 1),       // the one that is no segment at all
    ]
    .into_iter()
    .map(|(reason, n)| {
        (
            format!("edged_segments_rejected_total{{reason=\"{reason}\"}}"),
            n,
        )
    })
    .collect();
    f.check(rejected == expected_rejected, || {
        format!("rejections by reason: {rejected:?}\n{body}")
    });
    let (received, stored, duplicate) = (
        one("edged_segments_received_total"),
        one("edged_segments_stored_total"),
        one("edged_segments_duplicate_total"),
    );
    // Stored: good and other. Duplicate: the second copy on the stick, and node-2's offer.
    f.check(stored == Some(2) && duplicate == Some(2), || {
        format!("stored {stored:?}, duplicate {duplicate:?}\n{body}")
    });
    let rejected_sum: u64 = rejected.values().sum();
    f.check(
        received == Some(9) && received == Some(2 + 2 + rejected_sum),
        || {
            format!(
                "INV-26: received {received:?} = stored {stored:?} + duplicate {duplicate:?} + rejected {rejected_sum}\n{body}"
            )
        },
    );
}
