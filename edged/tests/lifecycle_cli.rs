//! The lifecycle commands as an operator runs them: a root made from a spec and signed one key
//! at a time, a channel threshold met by co-signing, a recall, the sequence history, and a root
//! rotation published as a segment — all through the real binary and daemon.

mod support;

use std::path::{Path, PathBuf};

use support::*;

fn ok(o: std::process::Output) -> std::process::Output {
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    o
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{name}.key"));
    let o = ok(edged(&["key", "gen", "--out", p(&path)]));
    (path, stdout(&o).trim().to_owned())
}

fn segment(f: &Fleet, key: &Path, name: &str, channel: &str, seq: u64) -> (PathBuf, String) {
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let usb = f.path(&format!("usb-{name}-{seq}-{n}"));
    std::fs::create_dir_all(&usb).unwrap();
    let input = f.path(&format!("{name}-{seq}-{n}.in"));
    std::fs::write(&input, format!("{name} {seq} {n}")).unwrap();
    let seg = usb.join(format!("{name}.seg"));
    let seq = seq.to_string();
    let o = ok(edged(&[
        "segment",
        "create",
        "--key",
        p(key),
        "--name",
        name,
        "--channel",
        channel,
        "--sequence",
        &seq,
        "--out",
        p(&seg),
        p(&input),
    ]));
    (seg, stdout(&o).trim().to_owned())
}

fn import(f: &Fleet, seg: &Path) -> (bool, String) {
    let o = f.cli(1, &["import", p(seg.parent().unwrap())]);
    (o.status.success(), format!("{}{}", stdout(&o), stderr(&o)))
}

#[test]
fn inv_36_inv_37_inv_39_roots_co_signing_recalls_and_sequences_from_the_command_line() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    let keys = f.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (r1, r1_pub) = keygen(&keys, "r1");
    let (r2, r2_pub) = keygen(&keys, "r2");
    let (_r3, r3_pub) = keygen(&keys, "r3");
    let (p1, p1_pub) = keygen(&keys, "p1");
    let (p2, p2_pub) = keygen(&keys, "p2");

    // Version 1: channel rel needs two signatures (p1 and p2 may sign it).
    let spec = f.path("root-v1.toml");
    std::fs::write(
        &spec,
        format!(
            "version = 1\nroot_threshold = 2\nroot_keys = [\"{r1_pub}\", \"{r2_pub}\", \"{r3_pub}\"]\n\
             [[publisher]]\nkey = \"{p1_pub}\"\nchannels = [\"*\"]\n\
             [[publisher]]\nkey = \"{p2_pub}\"\nchannels = [\"ops\", \"rel\"]\n\
             [[channel]]\nname = \"rel\"\nthreshold = 2\n"
        ),
    )
    .unwrap();
    let v1 = f.path("root-v1.root");
    ok(edged(&[
        "root",
        "create",
        "--spec",
        p(&spec),
        "--out",
        p(&v1),
    ]));
    ok(edged(&["root", "sign", "--key", p(&r1), p(&v1)]));
    let o = edged(&["root", "inspect", p(&v1)]);
    assert!(!o.status.success(), "k-1 signatures: not valid");
    assert!(stdout(&o).contains("NOT VALID"), "{}", stdout(&o));
    ok(edged(&["root", "sign", "--key", p(&r2), p(&v1)]));
    ok(edged(&["root", "inspect", p(&v1)]));

    // The node starts from it.
    let text = std::fs::read_to_string(&f.node(1).config).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("trusted = [") {
                format!("root = \"{}\"\n", v1.display())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&f.node(1).config, text).unwrap();
    f.start(1);

    // One signature on rel is below its threshold; the co-signature meets it.
    let (seg, id) = segment(&f, &p1, "app", "rel", 1);
    let (stored, out) = import(&f, &seg);
    assert!(!stored && out.contains("needs 2 signatures"), "{out}");
    ok(edged(&["segment", "sign", "--key", p(&p2), p(&seg)]));
    let o = ok(edged(&["segment", "inspect", "--json", p(&seg)]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["signers"].as_array().unwrap().len(), 2);
    assert_eq!(v["id"], id.as_str(), "co-signing keeps the id");
    let (stored, out) = import(&f, &seg);
    assert!(stored, "{out}");

    // The sequence history shows it; an equal sequence with other content is refused.
    let seqs = f.json(1, &["sequences", "--channel", "rel"]);
    assert_eq!(seqs[0]["name"], "app");
    assert_eq!(seqs[0]["highest"], 1);
    let (again, _) = segment(&f, &p1, "app", "rel", 1);
    ok(edged(&["segment", "sign", "--key", p(&p2), p(&again)]));
    let (stored, out) = import(&f, &again);
    assert!(!stored && out.contains("superseded"), "{out}");

    // A recall (co-signed: rel needs two) withdraws it and it is refused from then on.
    let recall = f.path("usb-recall/recall.seg");
    std::fs::create_dir_all(recall.parent().unwrap()).unwrap();
    ok(edged(&[
        "recall",
        "create",
        "--key",
        p(&p1),
        "--channel",
        "rel",
        "--name",
        "recall-app",
        "--out",
        p(&recall),
        &id,
    ]));
    ok(edged(&["segment", "sign", "--key", p(&p2), p(&recall)]));
    let (stored, out) = import(&f, &recall);
    assert!(stored, "{out}");
    assert!(!f.segment_ids(1).contains(&id), "withdrawn");
    let (stored, out) = import(&f, &seg);
    assert!(!stored && out.contains("recalled"), "{out}");

    // Version 2 drops p2; signed by r1 and r3 (and so its own threshold of its own keys).
    let spec2 = f.path("root-v2.toml");
    std::fs::write(
        &spec2,
        format!(
            "version = 2\nroot_threshold = 2\nroot_keys = [\"{r1_pub}\", \"{r2_pub}\", \"{r3_pub}\"]\n\
             [[publisher]]\nkey = \"{p1_pub}\"\nchannels = [\"*\"]\n"
        ),
    )
    .unwrap();
    let v2 = f.path("root-v2.root");
    ok(edged(&[
        "root",
        "create",
        "--spec",
        p(&spec2),
        "--out",
        p(&v2),
    ]));
    ok(edged(&["root", "sign", "--key", p(&r1), p(&v2)]));
    let o = edged(&["root", "inspect", "--current", p(&v1), p(&v2)]);
    assert!(
        !o.status.success(),
        "one signature of the current root keys is not enough"
    );
    ok(edged(&[
        "root",
        "sign",
        "--key",
        p(&keys.join("r3.key")),
        p(&v2),
    ]));
    ok(edged(&["root", "inspect", "--current", p(&v1), p(&v2)]));
    let root_seg = f.path("usb-root/root.seg");
    std::fs::create_dir_all(root_seg.parent().unwrap()).unwrap();
    ok(edged(&[
        "root",
        "publish",
        "--key",
        p(&r1),
        "--out",
        p(&root_seg),
        p(&v1),
        p(&v2),
    ]));
    let (stored, out) = import(&f, &root_seg);
    assert!(stored, "{out}");
    let (ops, _) = segment(&f, &p2, "tool", "ops", 1);
    let (stored, out) = import(&f, &ops);
    assert!(
        !stored && out.contains("not trusted"),
        "p2 was removed: {out}"
    );
}

/// `edged import DIR --json` of the one segment file `seg`: the exit code and its line.
fn import_json(f: &Fleet, seg: &Path) -> (Option<i32>, serde_json::Value) {
    let o = f.cli(1, &["import", "--json", p(seg.parent().unwrap())]);
    let lines: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", stdout(&o), stderr(&o)));
    let line = lines
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|v| v["file"].as_str().is_some_and(|n| n.ends_with(".seg")))
                .cloned()
        })
        .unwrap_or_else(|| panic!("no line for {}: {lines}", seg.display()));
    (o.status.code(), line)
}

/// Asserts that importing `seg` is refused for `why` (exit 1, status `rejected`).
fn refused(f: &Fleet, seg: &Path, why: &str) {
    let (code, line) = import_json(f, seg);
    assert_eq!(code, Some(1), "{line}");
    assert_eq!(line["status"], "rejected", "{line}");
    let reason = line["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(why), "refused for {why:?}? {line}");
}

fn imported(f: &Fleet, seg: &Path) {
    let (code, line) = import_json(f, seg);
    assert_eq!(code, Some(0), "{line}");
    assert_eq!(line["status"], "imported", "{line}");
}

/// The `edged segments --json` row of `id` on node 1 (daemon or data directory).
fn row(f: &Fleet, id: &str) -> serde_json::Value {
    let v = f.json(1, &["segments"]);
    v.as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == id).cloned())
        .unwrap_or_else(|| panic!("{id} is not listed: {v}"))
}

fn short(id: &str) -> &str {
    &id[..12]
}

#[test]
fn inv_35_sequence_equal_and_lower_refused_at_import_and_the_highest_survives_restart() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    let key = f.publisher_key.clone();

    // Without a daemon: the data directory applies the same rules.
    let (s1, id1) = segment(&f, &key, "app", "c", 1);
    let (s2, id2) = segment(&f, &key, "app", "c", 2);
    imported(&f, &s1);
    imported(&f, &s2);
    let r1 = row(&f, &id1);
    assert_eq!(r1["superseded_by"], id2.as_str(), "{r1}");
    assert_eq!(r1["kind"], "content");
    assert!(row(&f, &id2)["superseded_by"].is_null());
    let text = stdout(&ok(f.cli(1, &["segments"])));
    assert!(
        text.contains(&format!("superseded by {}", short(&id2))),
        "{text}"
    );
    let (s2_other, _) = segment(&f, &key, "app", "c", 2);
    refused(&f, &s2_other, "superseded");
    let (s1_other, _) = segment(&f, &key, "app", "c", 1);
    refused(&f, &s1_other, "superseded");

    // Through the daemon, started on that store: still refused.
    f.start(1);
    refused(&f, &s2_other, "superseded");
    refused(&f, &s1_other, "superseded");
    assert_eq!(row(&f, &id1)["superseded_by"], id2.as_str());

    // The highest outlives its segment: seq 2 recalled (gone), then a restart.
    let recall = f.path("usb-recall-2/recall.seg");
    std::fs::create_dir_all(recall.parent().unwrap()).unwrap();
    ok(edged(&[
        "recall",
        "create",
        "--key",
        p(&key),
        "--channel",
        "c",
        "--name",
        "recall-app",
        "--out",
        p(&recall),
        &id2,
    ]));
    imported(&f, &recall);
    assert!(!f.segment_ids(1).contains(&id2), "seq 2 withdrawn");
    f.sigterm(1);
    f.start(1);
    refused(&f, &s2_other, "superseded");
    refused(&f, &s1_other, "superseded");
    let seqs = f.json(1, &["sequences", "--channel", "c"]);
    let app = seqs
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "app"))
        .unwrap_or_else(|| panic!("{seqs}"));
    assert_eq!(app["highest"], 2, "{app}");
    assert_eq!(app["highest_id"], id2.as_str());
    // Only a higher sequence goes on.
    let (s3, _) = segment(&f, &key, "app", "c", 3);
    imported(&f, &s3);
}

#[test]
fn inv_39_a_recall_withdraws_and_refuses_its_segments() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    let key = f.publisher_key.clone();
    f.start(1);
    let (a, id_a) = segment(&f, &key, "a", "c", 1);
    let (b, id_b) = segment(&f, &key, "b", "d", 1);
    imported(&f, &a);
    imported(&f, &b);
    let never = "ab".repeat(32);

    // A prefix is refused: a recall names exact segments.
    let recall = f.path("usb-recall/recall.seg");
    std::fs::create_dir_all(recall.parent().unwrap()).unwrap();
    let o = edged(&[
        "recall",
        "create",
        "--key",
        p(&key),
        "--channel",
        "c",
        "--name",
        "recall-1",
        "--out",
        p(&recall),
        short(&id_a),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("full 64-hex"), "{}", stderr(&o));

    // It names A, an id never seen here, and B of another channel (which it cannot withdraw).
    let o = ok(edged(&[
        "recall",
        "create",
        "--key",
        p(&key),
        "--channel",
        "c",
        "--name",
        "recall-1",
        "--out",
        p(&recall),
        &id_a,
        &never,
        &id_b,
    ]));
    let recall_id = stdout(&o).trim().to_owned();
    let v: serde_json::Value =
        serde_json::from_slice(&ok(edged(&["segment", "inspect", "--json", p(&recall)])).stdout)
            .unwrap();
    assert_eq!(v["kind"], "recall");
    assert_eq!(v["format_version"], 2);
    assert_eq!(v["priority"], 255, "recalls travel first");
    let named: Vec<&str> = v["recalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.as_str())
        .collect();
    assert!(
        named.contains(&id_a.as_str()) && named.contains(&never.as_str()),
        "{v}"
    );
    imported(&f, &recall);

    let ids = f.segment_ids(1);
    assert!(!ids.contains(&id_a), "A withdrawn");
    assert!(ids.contains(&id_b), "B is of channel d: untouched");
    assert_eq!(row(&f, &recall_id)["kind"], "recall");
    let text = stdout(&ok(f.cli(1, &["segments"])));
    let line = text
        .lines()
        .find(|l| l.starts_with(short(&recall_id)))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("recall"), "{line}");

    let check_recalled = |f: &Fleet| {
        let listed = f.json(1, &["segments", "--recalled"]);
        let find = |id: &str| {
            listed
                .as_array()
                .and_then(|a| a.iter().find(|r| r["id"] == id).cloned())
                .unwrap_or_else(|| panic!("{id} not listed as recalled: {listed}"))
        };
        let ra = find(&id_a);
        assert_eq!(ra["recall"], recall_id.as_str());
        assert_eq!(ra["channel"], "c");
        assert_eq!(ra["held"], true);
        assert!(ra["at"].as_str().unwrap().ends_with('Z'), "{ra}");
        assert_eq!(find(&never)["held"], false);
        let text = stdout(&ok(f.cli(1, &["segments", "--recalled"])));
        assert!(
            text.contains(short(&id_a)) && text.contains(short(&never)),
            "{text}"
        );
    };
    check_recalled(&f);

    // Refused from then on, as recalled.
    refused(&f, &a, "recalled");

    // A recall by a key the node does not trust withdraws nothing.
    let keys = f.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (stranger, _) = keygen(&keys, "stranger");
    let bad = f.path("usb-bad/recall.seg");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    ok(edged(&[
        "recall",
        "create",
        "--key",
        p(&stranger),
        "--channel",
        "d",
        "--name",
        "recall-b",
        "--out",
        p(&bad),
        &id_b,
    ]));
    refused(&f, &bad, "not trusted");
    assert!(f.segment_ids(1).contains(&id_b), "B still stored");

    // The data directory says the same once the daemon stops.
    f.sigterm(1);
    check_recalled(&f);
    refused(&f, &a, "recalled");
}

/// A root (made and signed with `edged root`) where channel rel needs two of p1, p2; the node
/// started from it. Returns the fleet and the keys (p1, p2, stranger).
fn threshold_node() -> (Fleet, PathBuf, PathBuf, PathBuf) {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    let keys = f.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (r1, r1_pub) = keygen(&keys, "r1");
    let (p1, p1_pub) = keygen(&keys, "p1");
    let (p2, p2_pub) = keygen(&keys, "p2");
    let (stranger, _) = keygen(&keys, "stranger");
    let spec = f.path("root.toml");
    std::fs::write(
        &spec,
        format!(
            "version = 1\nroot_threshold = 1\nroot_keys = [\"{r1_pub}\"]\n\
             [[publisher]]\nkey = \"{p1_pub}\"\nchannels = [\"rel\"]\n\
             [[publisher]]\nkey = \"{p2_pub}\"\nchannels = [\"rel\"]\n\
             [[channel]]\nname = \"rel\"\nthreshold = 2\n"
        ),
    )
    .unwrap();
    let root = f.path("root.root");
    ok(edged(&[
        "root",
        "create",
        "--spec",
        p(&spec),
        "--out",
        p(&root),
    ]));
    ok(edged(&["root", "sign", "--key", p(&r1), p(&root)]));
    let text = std::fs::read_to_string(&f.node(1).config).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("trusted = [") {
                format!("root = \"{}\"\n", root.display())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&f.node(1).config, text).unwrap();
    f.start(1);
    (f, p1, p2, stranger)
}

#[test]
fn inv_36_a_channel_threshold_is_met_by_co_signing() {
    let (f, p1, p2, stranger) = threshold_node();
    let (seg, id) = segment(&f, &p1, "app", "rel", 1);
    refused(&f, &seg, "needs 2 signatures");

    // The same key again is refused and leaves the file as it was.
    let before = std::fs::read(&seg).unwrap();
    let o = edged(&["segment", "sign", "--key", p(&p1), p(&seg)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already signed"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&seg).unwrap(), before, "file untouched");

    // A co-signature by a key the root does not grant counts for nothing.
    ok(edged(&["segment", "sign", "--key", p(&stranger), p(&seg)]));
    refused(&f, &seg, "needs 2 signatures");

    // The second granted key meets the threshold; the id is the same.
    let o = ok(edged(&["segment", "sign", "--key", p(&p2), p(&seg)]));
    assert_eq!(
        stdout(&o).lines().count(),
        3,
        "every signer: {}",
        stdout(&o)
    );
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        before.len() as u64 + 2 * 96,
        "each signature adds 96 bytes to the header"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&ok(edged(&["segment", "inspect", "--json", p(&seg)])).stdout)
            .unwrap();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["signers"].as_array().unwrap().len(), 3);
    let text = stdout(&ok(edged(&["segment", "inspect", p(&seg)])));
    assert!(text.contains("content (manifest format 2)"), "{text}");
    imported(&f, &seg);
    assert!(f.segment_ids(1).contains(&id));
    // No temp file left beside it.
    let left: Vec<_> = std::fs::read_dir(seg.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[test]
fn segment_sign_refuses_a_format_1_file_and_a_damaged_payload() {
    use store::keys::PublisherSecret;
    use store::manifest::{Manifest, SegmentKind, SignedManifest, SuccessCondition};
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keygen(dir.path(), "p");
    let (other, _) = keygen(dir.path(), "q");
    let secret = PublisherSecret::load(&key).unwrap();
    let body = b"format one";
    let m = Manifest {
        format_version: store::limits::MANIFEST_FORMAT_V1,
        publisher: secret.public(),
        name: "old".into(),
        channel: "c".into(),
        sequence: 1,
        created_at_ms: 1_767_225_600_000,
        expires_at_ms: None,
        condition: SuccessCondition::AllPeers,
        priority: 0,
        payload_len: body.len() as u64,
        payload_hash: *blake3::hash(body).as_bytes(),
        kind: SegmentKind::Content,
    };
    let signed = SignedManifest::sign(m, &secret).unwrap();
    let v1 = dir.path().join("v1.seg");
    let mut out = std::fs::File::create(&v1).unwrap();
    store::segfile::write_seg(&mut out, &signed, &body[..]).unwrap();
    drop(out);
    let o = edged(&["segment", "sign", "--key", p(&other), p(&v1)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("format 1"), "{}", stderr(&o));

    // A format-2 file whose payload was damaged is not signed again.
    let input = dir.path().join("in");
    std::fs::write(&input, b"payload to damage").unwrap();
    let seg = dir.path().join("v2.seg");
    ok(edged(&[
        "segment",
        "create",
        "--key",
        p(&key),
        "--name",
        "x",
        "--channel",
        "c",
        "--out",
        p(&seg),
        p(&input),
    ]));
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let o = edged(&["segment", "sign", "--key", p(&other), p(&seg)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not match"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "file untouched");
}

#[test]
fn sequences_lists_the_history_with_and_without_the_daemon() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    let key = f.publisher_key.clone();
    let (s1, id1) = segment(&f, &key, "app", "c", 1);
    let (s2, id2) = segment(&f, &key, "app", "c", 2);
    let (t, id_t) = segment(&f, &key, "tool", "d", 5);
    for s in [&s1, &s2, &t] {
        imported(&f, s);
    }
    let offline = f.json(1, &["sequences"]);
    let rows = offline.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{offline}");
    let app = &rows[0];
    assert_eq!(
        (app["channel"].as_str(), app["name"].as_str()),
        (Some("c"), Some("app"))
    );
    assert_eq!(app["highest"], 2);
    assert_eq!(app["highest_id"], id2.as_str());
    let history: Vec<(u64, String)> = app["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["sequence"].as_u64().unwrap(),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(history, vec![(1, id1.clone()), (2, id2.clone())]);
    assert_eq!(rows[1]["highest_id"], id_t.as_str());
    let text = stdout(&ok(f.cli(1, &["sequences", "--channel", "c"])));
    assert!(
        text.contains("c / app") && text.contains("highest 2"),
        "{text}"
    );
    assert!(
        text.contains(short(&id1)) && text.contains(short(&id2)),
        "{text}"
    );
    assert!(!text.contains("tool"), "only channel c: {text}");
    assert!(
        text.lines().filter(|l| l.trim_end().ends_with('Z')).count() == 2,
        "a time in RFC 3339 per change: {text}"
    );

    f.start(1);
    assert_eq!(
        f.json(1, &["sequences"]),
        offline,
        "the daemon says the same"
    );
    let text_daemon = stdout(&ok(f.cli(1, &["sequences", "--channel", "c"])));
    assert_eq!(text_daemon, text);
    assert_eq!(
        f.json(1, &["sequences", "--channel", "none"]),
        serde_json::json!([])
    );
}
