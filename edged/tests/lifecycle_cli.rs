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
