//! The content lifecycle across real daemons: a release superseded by a higher sequence on
//! every host (and `current` of local delivery moving with it), a recall withdrawing it
//! everywhere, and a trust root carried in on one host reaching every host, after which a
//! segment signed only by the removed key is refused everywhere.
//!
//! Segments and roots are built here with the store crate (as a publisher's machine would),
//! then imported through the daemons like any file from a stick.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use store::keys::{PublisherKey, PublisherSecret};
use store::limits::{MANIFEST_FORMAT_VERSION, ROOT_CHANNEL};
use store::manifest::{Manifest, SegmentKind, SignedManifest, SuccessCondition};
use store::recall::RecallList;
use store::root::{ALL_CHANNELS, PublisherGrant, RootChain, RootDocument, SignedRoot};
use support::*;

/// How long a change may take to cross these small fleets on a busy test machine.
const SPREAD_LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Writes a `.seg` of `kind` into `dir` and returns its path and id.
#[allow(clippy::too_many_arguments)]
fn write_seg(
    dir: &Path,
    file: &str,
    by: &PublisherSecret,
    kind: SegmentKind,
    channel: &str,
    name: &str,
    sequence: u64,
    body: &[u8],
) -> (PathBuf, String) {
    let m = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        publisher: by.public(),
        name: name.to_owned(),
        channel: channel.to_owned(),
        sequence,
        created_at_ms: now_ms() - 1_000,
        expires_at_ms: None,
        condition: SuccessCondition::AllPeers,
        priority: 200,
        payload_len: body.len() as u64,
        payload_hash: *blake3::hash(body).as_bytes(),
        kind,
    };
    let signed = SignedManifest::sign(m, by).unwrap();
    let mut bytes = Vec::new();
    store::segfile::write_seg(&mut bytes, &signed, body).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, bytes).unwrap();
    (path, signed.id().to_string())
}

fn import(f: &Fleet, i: usize, file: &Path) -> std::process::Output {
    let dir = file.parent().unwrap();
    let o = f.cli(i, &["import", p(dir)]);
    std::fs::remove_file(file).unwrap();
    o
}

fn import_ok(f: &Fleet, i: usize, file: &Path) {
    let o = import(f, i, file);
    f.check(o.status.success(), || {
        format!("import on node-{i}: {}{}", stdout(&o), stderr(&o))
    });
}

fn wait_all(f: &Fleet, n: usize, what: &str, mut on: impl FnMut(usize) -> bool) {
    f.wait_for(what, SPREAD_LIMIT, POLL, || {
        (1..=n).all(&mut on).then_some(())
    });
}

fn holds(f: &Fleet, i: usize, id: &str) -> bool {
    f.segment_ids(i).iter().any(|s| s == id)
}

/// Appends a `[[deliver]]` of channel `rel` into `<node dir>/deliver` to every node's config.
fn with_delivery(f: &Fleet) {
    for node in &f.nodes {
        let dir = node.dir.join("deliver");
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = std::fs::read_to_string(&node.config).unwrap();
        text.push_str(&format!(
            "[[deliver]]\nchannel = \"rel\"\ndir = \"{}\"\n",
            dir.display()
        ));
        std::fs::write(&node.config, text).unwrap();
    }
}

/// What `<deliver>/<name>/current` points at on node `i` (a file name), if anything.
fn current(f: &Fleet, i: usize, name: &str) -> Option<String> {
    let link = f.node(i).dir.join("deliver").join(name).join("current");
    std::fs::read_link(link)
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

/// The delivered file of segment `id` (`<sequence>-<first 16 hex of id>`).
fn delivered_name(sequence: u64, id: &str) -> String {
    format!("{sequence}-{}", &id[..16])
}

#[test]
fn inv_35_inv_39_a_release_supersedes_and_a_recall_withdraws_across_four_hosts() {
    // A line with a chord: 1-2-3-4, 4-1.
    let mut f = Fleet::new(4, &[(1, 2), (2, 3), (3, 4), (4, 1)], |_| {
        NodeOptions::default()
    });
    with_delivery(&f);
    for i in 1..=4 {
        f.start(i);
    }
    let publisher = PublisherSecret::load(&f.publisher_key).unwrap();
    let usb = f.path("usb");
    let (v1_file, v1) = write_seg(
        &usb,
        "v1.seg",
        &publisher,
        SegmentKind::Content,
        "rel",
        "app",
        1,
        b"release one",
    );
    import_ok(&f, 1, &v1_file);
    wait_all(&f, 4, "v1 on every host", |i| holds(&f, i, &v1));
    wait_all(&f, 4, "v1 current on every host", |i| {
        current(&f, i, "app") == Some(delivered_name(1, &v1))
    });

    // v2 carried in on another host supersedes v1 everywhere; `current` moves.
    let (v2_file, v2) = write_seg(
        &usb,
        "v2.seg",
        &publisher,
        SegmentKind::Content,
        "rel",
        "app",
        2,
        b"release two",
    );
    import_ok(&f, 3, &v2_file);
    wait_all(&f, 4, "v2 current on every host", |i| {
        current(&f, i, "app") == Some(delivered_name(2, &v2))
    });
    for i in 1..=4 {
        let file = f
            .node(i)
            .dir
            .join("deliver/app")
            .join(delivered_name(2, &v2));
        f.check(
            std::fs::read(&file).ok().as_deref() == Some(&b"release two"[..]),
            || format!("node-{i}: {} holds the payload", file.display()),
        );
    }
    // A rollback to sequence 1 with other content is refused on every host.
    for i in 1..=4 {
        let (old_file, _) = write_seg(
            &usb,
            &format!("rollback-{i}.seg"),
            &publisher,
            SegmentKind::Content,
            "rel",
            "app",
            1,
            b"an older build",
        );
        let o = import(&f, i, &old_file);
        let out = format!("{}{}", stdout(&o), stderr(&o));
        f.check(!o.status.success() && out.contains("superseded"), || {
            format!("rollback on node-{i} was not refused as superseded: {out}")
        });
    }

    // A recall of v2 carried in on node 4 withdraws it everywhere; `current` goes back to v1.
    let body = RecallList::new(vec![v2.parse().unwrap()]).unwrap().encode();
    let (recall_file, recall) = write_seg(
        &usb,
        "recall.seg",
        &publisher,
        SegmentKind::Recall,
        "rel",
        "recall-app-2",
        1,
        &body,
    );
    import_ok(&f, 4, &recall_file);
    wait_all(&f, 4, "the recall on every host, v2 gone", |i| {
        holds(&f, i, &recall) && !holds(&f, i, &v2)
    });
    wait_all(&f, 4, "current back on v1 on every host", |i| {
        current(&f, i, "app") == Some(delivered_name(1, &v1))
    });
    for i in 1..=4 {
        let file = f
            .node(i)
            .dir
            .join("deliver/app")
            .join(delivered_name(2, &v2));
        f.check(!file.exists(), || {
            format!(
                "node-{i}: the recalled delivery {} is still there",
                file.display()
            )
        });
    }
}

/// A root document of `version`: root keys `roots` (threshold `k`), `publishers` on every
/// channel.
fn root_doc(
    version: u64,
    roots: &[&PublisherSecret],
    k: u8,
    publishers: &[PublisherKey],
) -> RootDocument {
    let mut root_keys: Vec<PublisherKey> = roots.iter().map(|s| s.public()).collect();
    root_keys.sort();
    let mut grants: Vec<PublisherGrant> = publishers
        .iter()
        .map(|key| PublisherGrant {
            key: *key,
            channels: vec![ALL_CHANNELS.to_owned()],
        })
        .collect();
    grants.sort_by_key(|g| g.key);
    RootDocument {
        format_version: store::root::ROOT_FORMAT_VERSION,
        version,
        created_at_ms: now_ms() - 60_000,
        expires_at_ms: None,
        root_keys,
        root_threshold: k,
        publishers: grants,
        channels: vec![],
    }
}

fn sign_root(doc: RootDocument, by: &[&PublisherSecret]) -> SignedRoot {
    let mut r = SignedRoot::new(doc).unwrap();
    for s in by {
        r.sign(s).unwrap();
    }
    r
}

/// Gives every node of `f` the root `v1` (`[publishers] root` instead of the fixed list).
fn with_root(f: &Fleet, v1: &SignedRoot) {
    let file = f.path("root-v1.root");
    std::fs::write(&file, v1.encode()).unwrap();
    for node in &f.nodes {
        let text = std::fs::read_to_string(&node.config).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("trusted = [") {
                    format!("root = \"{}\"\n", file.display())
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&node.config, text).unwrap();
    }
}

/// Imports a root segment carrying `v2` on node 1 and returns how long it took until every
/// one of the `n` nodes logged the new root in force.
fn rotate(f: &Fleet, n: usize, by: &PublisherSecret, chain: Vec<SignedRoot>) -> Duration {
    let version = chain.last().unwrap().version();
    let body = RootChain(chain).encode();
    let (file, _) = write_seg(
        &f.path("usb-root"),
        "root.seg",
        by,
        SegmentKind::Root,
        ROOT_CHANNEL,
        "root",
        version,
        &body,
    );
    let from: Vec<u64> = (1..=n).map(|i| f.log_len(i)).collect();
    let start = Instant::now();
    import_ok(f, 1, &file);
    f.wait_for(
        "the new root on every host",
        SPREAD_LIMIT,
        Duration::from_millis(10),
        || {
            (1..=n)
                .all(|i| {
                    f.events(i, from[i - 1], "trust root updated")
                        .iter()
                        .any(|e| e["version"].as_u64() == Some(version))
                })
                .then_some(())
        },
    );
    start.elapsed()
}

#[test]
fn inv_37_a_root_rotation_carried_in_on_one_host_reaches_every_host_and_the_removed_key_is_refused_everywhere()
 {
    let mut f = Fleet::new(4, &[(1, 2), (2, 3), (3, 4)], |_| NodeOptions::default());
    let fleet_publisher = PublisherSecret::load(&f.publisher_key).unwrap();
    let (r1, r2, r3) = (
        PublisherSecret::from_seed([71; 32]),
        PublisherSecret::from_seed([72; 32]),
        PublisherSecret::from_seed([73; 32]),
    );
    let compromised = PublisherSecret::from_seed([74; 32]);
    let v1 = sign_root(
        root_doc(
            1,
            &[&r1, &r2, &r3],
            2,
            &[fleet_publisher.public(), compromised.public()],
        ),
        &[&r1, &r2],
    );
    with_root(&f, &v1);
    for i in 1..=4 {
        f.start(i);
    }
    let usb = f.path("usb");
    let (before, before_id) = write_seg(
        &usb,
        "before.seg",
        &compromised,
        SegmentKind::Content,
        "ops",
        "before",
        1,
        b"signed while trusted",
    );
    import_ok(&f, 4, &before);
    wait_all(
        &f,
        4,
        "the segment of the soon-removed key everywhere",
        |i| holds(&f, i, &before_id),
    );

    // Version 2 removes the compromised key; two of the three root keys sign it.
    let v2 = sign_root(
        root_doc(2, &[&r1, &r2, &r3], 2, &[fleet_publisher.public()]),
        &[&r2, &r3],
    );
    let took = rotate(&f, 4, &r2, vec![v1, v2]);
    eprintln!("rotation reached 4 hosts (line) in {} ms", took.as_millis());

    for i in 1..=4 {
        let (file, _) = write_seg(
            &usb,
            &format!("after-{i}.seg"),
            &compromised,
            SegmentKind::Content,
            "ops",
            &format!("after-{i}"),
            1,
            b"signed after removal",
        );
        let o = import(&f, i, &file);
        let out = format!("{}{}", stdout(&o), stderr(&o));
        f.check(!o.status.success() && out.contains("not trusted"), || {
            format!("node-{i} took a segment of the removed key: {out}")
        });
        // The fleet's publisher is still trusted.
        let (ok, _) = write_seg(
            &usb,
            &format!("ok-{i}.seg"),
            &fleet_publisher,
            SegmentKind::Content,
            "ops",
            &format!("ok-{i}"),
            1,
            b"still trusted",
        );
        import_ok(&f, i, &ok);
    }
    // A restart keeps the new root, although edge.toml still names version 1.
    f.sigterm(2);
    f.start(2);
    let (file, _) = write_seg(
        &usb,
        "after-restart.seg",
        &compromised,
        SegmentKind::Content,
        "ops",
        "after-restart",
        1,
        b"x",
    );
    let o = import(&f, 2, &file);
    f.check(!o.status.success(), || {
        format!(
            "after a restart node-2 took the removed key: {}",
            stdout(&o)
        )
    });
}

/// What a rotation costs on a 7-node line (1-2-…-7), carried in at one end: the time until
/// the far end has the new root in force. Printed, not asserted (figures come from runs of
/// this test; see the closing notes).
#[test]
fn a_root_rotation_crosses_a_seven_node_line() {
    let n = 7;
    let links: Vec<(usize, usize)> = (1..n).map(|i| (i, i + 1)).collect();
    let mut f = Fleet::new(n, &links, |_| NodeOptions::default());
    let fleet_publisher = PublisherSecret::load(&f.publisher_key).unwrap();
    let r1 = PublisherSecret::from_seed([81; 32]);
    let r2 = PublisherSecret::from_seed([82; 32]);
    let v1 = sign_root(root_doc(1, &[&r1], 1, &[fleet_publisher.public()]), &[&r1]);
    with_root(&f, &v1);
    for i in 1..=n {
        f.start(i);
    }
    // Every link up before the clock starts: one segment crosses the whole line first.
    let (warm, warm_id) = write_seg(
        &f.path("usb"),
        "warm.seg",
        &fleet_publisher,
        SegmentKind::Content,
        "ops",
        "warm",
        1,
        b"warm",
    );
    import_ok(&f, 1, &warm);
    wait_all(&f, n, "the warm-up segment everywhere", |i| {
        holds(&f, i, &warm_id)
    });
    let v2 = sign_root(
        root_doc(2, &[&r2], 1, &[fleet_publisher.public()]),
        &[&r1, &r2],
    );
    let took = rotate(&f, n, &r1, vec![v2]);
    // From the node that took the import to the far end, by their own log clocks (the same
    // machine's): what the fleet adds to the import itself.
    let first = logged_update(&f, 1).unwrap_or_else(|| f.fail("node-1 logged no root update"));
    let last = logged_update(&f, n).unwrap_or_else(|| f.fail("node-7 logged no root update"));
    eprintln!(
        "ROTATION_7_LINE import-to-far-end={} ms node-1-to-node-7={:.1} ms",
        took.as_millis(),
        last - first
    );
}

/// When node `i` logged the root update (ms since the epoch).
fn logged_update(f: &Fleet, i: usize) -> Option<f64> {
    let text = std::fs::read_to_string(f.node(i).log()).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "trust root updated")
        .and_then(|v| {
            let t = humantime::parse_rfc3339(v["timestamp"].as_str()?).ok()?;
            Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64() * 1000.0)
        })
}
