//! Sneakernet need-lists (INV-32) between two nodes of one fleet (same CA, same publisher) with
//! no network link between them: no `known_peers`, only a directory standing for the stick.
//!
//! Every daemon and CLI process is SIGKILLed when its test ends, also on panic; every wait is
//! bounded in time.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{Fleet, NodeOptions, p, stderr, stdout};

const A: usize = 1;
const B: usize = 2;

fn fleet() -> Fleet {
    Fleet::new(2, &[], |_| NodeOptions::default())
}

fn mkdir(f: &Fleet, name: &str) -> std::path::PathBuf {
    let d = f.path(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `edged ARGS --json` on node `i`, whatever its exit code: (success, stdout as JSON).
fn json_any(f: &Fleet, i: usize, args: &[&str]) -> (bool, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let o = f.cli(i, &all);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        f.fail(format!(
            "edged {args:?}: stdout is not JSON ({e}): {}\nstderr: {}",
            stdout(&o),
            stderr(&o)
        ))
    });
    (o.status.success(), v)
}

/// The line of `item` in `export --for`'s report.
fn line<'a>(f: &Fleet, lines: &'a Value, item: &str) -> &'a Value {
    lines
        .as_array()
        .and_then(|a| a.iter().find(|l| l["item"] == item))
        .unwrap_or_else(|| f.fail(format!("no line for {item} in {lines:#}")))
}

/// Node `i`'s need-list written into a fresh directory: what it holds and knows.
fn need_list(f: &Fleet, i: usize, tag: &str) -> Value {
    let dir = mkdir(f, &format!("look-{i}-{tag}"));
    f.json(i, &["export", "--need-list", p(&dir)])
}

fn receipts_of(list: &Value, node: &str) -> u64 {
    list["receipts_by_node"][node].as_u64().unwrap_or(0)
}

fn import(f: &Fleet, i: usize, dir: &Path) -> Value {
    f.json(i, &["import", p(dir)])
}

fn import_line<'a>(f: &Fleet, lines: &'a Value, file: &str) -> &'a Value {
    lines
        .as_array()
        .and_then(|a| a.iter().find(|l| l["file"] == file))
        .unwrap_or_else(|| f.fail(format!("no line for {file} in {lines:#}")))
}

#[test]
fn inv_32_need_lists_carry_exactly_the_missing_segments_and_the_receipts_both_ways() {
    let mut f = fleet();
    let (a_in, b_in, stick) = (mkdir(&f, "a-in"), mkdir(&f, "b-in"), mkdir(&f, "stick"));
    let (_, shared) = f.make_segment("shared", 10_000, &a_in);
    std::fs::copy(a_in.join("shared.seg"), b_in.join("shared.seg")).unwrap();
    let (_, only_b1) = f.make_segment("only-b1", 20_000, &b_in);
    let (_, only_b2) = f.make_segment("only-b2", 3 << 20, &b_in);
    f.start(A);
    f.start(B);
    import(&f, A, &a_in);
    import(&f, B, &b_in);

    // A's need-list onto the stick, once A's daemon has made its receipt about what it holds.
    f.wait_for(
        "node-1's receipt about its segment",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || (receipts_of(&need_list(&f, A, "wait"), "node-1") >= 1).then_some(()),
    );
    let written = f.json(A, &["export", "--need-list", p(&stick)]);
    f.check(written["held"] == 1, || format!("{written:#}"));
    f.check(stick.join("node-1.need").is_file(), || {
        "no node-1.need".into()
    });
    f.wait_for(
        "node-2's receipts about its segments",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || (receipts_of(&need_list(&f, B, "wait"), "node-2") >= 3).then_some(()),
    );

    // B answers: exactly the two segments A lacks, the largest-priority-then-newest first,
    // and its own need-list.
    let lines = f.json(B, &["export", "--for", p(&stick)]);
    f.check(line(&f, &lines, "node-1.need")["result"] == "read", || {
        format!("{lines:#}")
    });
    for id in [&only_b1, &only_b2] {
        let l = line(&f, &lines, id);
        f.check(
            l["result"] == "written" && l["detail"] == "for node-1",
            || format!("{lines:#}"),
        );
        f.check(stick.join(format!("{id}.seg")).is_file(), || {
            format!("{id}.seg not on the stick")
        });
    }
    f.check(!stick.join(format!("{shared}.seg")).exists(), || {
        "a segment node-1 holds was written".into()
    });
    f.check(stick.join("node-2.need").is_file(), || {
        "node-2 did not write its own need-list".into()
    });

    // A imports: both segments, and B's receipts (A's own need-list is not merged).
    let imported = import(&f, A, &stick);
    for id in [&only_b1, &only_b2] {
        let l = import_line(&f, &imported, &format!("{id}.seg"));
        f.check(l["status"] == "imported", || format!("{imported:#}"));
    }
    let merged = import_line(&f, &imported, "node-2.need");
    f.check(
        merged["status"] == "receipts" && merged["merged"].as_u64() >= Some(3),
        || format!("{imported:#}"),
    );
    f.check(
        import_line(&f, &imported, "node-1.need")["status"] == "skipped",
        || format!("{imported:#}"),
    );
    let mut held = f.segment_ids(A);
    held.sort();
    let mut want = vec![shared.clone(), only_b1.clone(), only_b2.clone()];
    want.sort();
    f.check(held == want, || format!("node-1 holds {held:?}"));
    let a_knows = need_list(&f, A, "after");
    f.check(receipts_of(&a_knows, "node-2") >= 3, || {
        format!("node-1's book lacks node-2's receipts: {a_knows:#}")
    });

    // A second trip with the same, now old, need-list: what is on the stick is not written
    // again; with the stick emptied the same segments go again, and A answers "already
    // present" and learns nothing new. Harmless both ways.
    let again = f.json(B, &["export", "--for", p(&stick)]);
    for id in [&only_b1, &only_b2] {
        f.check(line(&f, &again, id)["result"] == "already there", || {
            format!("{again:#}")
        });
    }
    for id in [&only_b1, &only_b2] {
        std::fs::remove_file(stick.join(format!("{id}.seg"))).unwrap();
    }
    let third = f.json(B, &["export", "--for", p(&stick)]);
    f.check(line(&f, &third, &only_b1)["result"] == "written", || {
        format!("{third:#}")
    });
    let second = import(&f, A, &stick);
    for id in [&only_b1, &only_b2] {
        let l = import_line(&f, &second, &format!("{id}.seg"));
        f.check(l["status"] == "already_present", || format!("{second:#}"));
    }
    let merged = import_line(&f, &second, "node-2.need");
    f.check(
        merged["status"] == "receipts" && merged["refused"] == 0,
        || format!("{second:#}"),
    );
    f.sigterm(A);
    f.sigterm(B);
}

/// Offline on both sides (no daemon): the budget is exact, N bytes fit a segment of N bytes,
/// N - 1 do not; and the offline import merges the receipts.
#[test]
fn inv_32_max_bytes_is_exact_offline() {
    let f = fleet();
    let (a_in, b_in, stick) = (mkdir(&f, "a-in"), mkdir(&f, "b-in"), mkdir(&f, "stick"));
    f.make_segment("seed", 1_000, &a_in);
    let (seg, id) = f.make_segment("wanted", 50_000, &b_in);
    let n = std::fs::metadata(&seg).unwrap().len();
    import(&f, A, &a_in);
    import(&f, B, &b_in);
    f.json(A, &["export", "--need-list", p(&stick)]);

    let short = (n - 1).to_string();
    let lines = f.json(B, &["export", "--for", p(&stick), "--max-bytes", &short]);
    let l = line(&f, &lines, &id);
    f.check(l["result"] == "skipped", || format!("{lines:#}"));
    f.check(!stick.join(format!("{id}.seg")).exists(), || {
        "written past the budget".into()
    });
    let exact = n.to_string();
    let lines = f.json(B, &["export", "--for", p(&stick), "--max-bytes", &exact]);
    let l = line(&f, &lines, &id);
    f.check(l["result"] == "written" && l["bytes"] == n, || {
        format!("{lines:#}")
    });

    let imported = import(&f, A, &stick);
    let merged = import_line(&f, &imported, "node-2.need");
    f.check(
        merged["status"] == "receipts" && merged["merged"].as_u64() >= Some(1),
        || format!("{imported:#}"),
    );
    let a_knows = need_list(&f, A, "after");
    f.check(receipts_of(&a_knows, "node-2") >= 1, || {
        format!("{a_knows:#}")
    });
}

/// A truncated, corrupt, oversized or unknown-version need-list is refused with its reason;
/// the good one beside them is still answered.
#[test]
fn inv_32_bad_need_lists_are_refused_one_by_one() {
    let f = fleet();
    let (a_in, b_in, stick) = (mkdir(&f, "a-in"), mkdir(&f, "b-in"), mkdir(&f, "stick"));
    f.make_segment("seed", 1_000, &a_in);
    let (_, id) = f.make_segment("wanted", 5_000, &b_in);
    import(&f, A, &a_in);
    import(&f, B, &b_in);
    f.json(A, &["export", "--need-list", p(&stick)]);
    let good = std::fs::read(stick.join("node-1.need")).unwrap();
    std::fs::write(stick.join("cut.need"), &good[..good.len() - 1]).unwrap();
    std::fs::write(stick.join("garbage.need"), b"not a need-list at all").unwrap();
    let mut future = good.clone();
    future[8] = future[8].wrapping_add(1);
    std::fs::write(stick.join("future.need"), &future).unwrap();
    let mut padded = good.clone();
    padded.push(0);
    std::fs::write(stick.join("padded.need"), &padded).unwrap();
    // Sparse, far past the bound: refused from its size, never read.
    std::fs::File::create(stick.join("huge.need"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();

    let (ok, lines) = json_any(&f, B, &["export", "--for", p(&stick)]);
    f.check(!ok, || "bad need-lists must fail the command".into());
    for (file, says) in [
        ("cut.need", "truncated"),
        ("garbage.need", "magic"),
        ("future.need", "version"),
        ("padded.need", "trailing"),
        ("huge.need", "more than a need-list may hold"),
    ] {
        let l = line(&f, &lines, file);
        f.check(
            l["result"] == "rejected" && l["detail"].as_str().is_some_and(|d| d.contains(says)),
            || format!("{file}: {lines:#}"),
        );
    }
    f.check(line(&f, &lines, &id)["result"] == "written", || {
        format!("{lines:#}")
    });
}
