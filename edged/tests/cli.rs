//! The real `edged` binary, run in temp dirs: each command's happy path and its refusals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn edged(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edged"))
        .args(args)
        .env_remove("EDGED_CONFIG")
        .env_remove("EDGED_LOG")
        .output()
        .expect("run edged")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A publisher key, its public key line, and a node config trusting it.
struct Fixture {
    dir: tempfile::TempDir,
    key: PathBuf,
    public: String,
    config: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("publisher.key");
        let out = edged(&["key", "gen", "--out", p(&key)]);
        assert!(out.status.success(), "{}", stderr(&out));
        let public = stdout(&out).trim().to_owned();
        assert!(public.starts_with("ed25519:"), "{public}");
        for f in ["ca.pem", "node.pem", "node.key"] {
            std::fs::write(dir.path().join(f), "placeholder").unwrap();
        }
        let config = dir.path().join("edge.toml");
        std::fs::write(&config, config_text(&public, "")).unwrap();
        Fixture {
            dir,
            key,
            public,
            config,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn create(&self, name: &str, body: &[u8], extra: &[&str]) -> PathBuf {
        let input = self.path(&format!("{name}.in"));
        std::fs::write(&input, body).unwrap();
        let out = self.path(&format!("{name}.seg"));
        let mut args = vec!["segment", "create", "--key", p(&self.key), "--name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[p(&input), "--out", p(&out)]);
        let o = edged(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        out
    }
}

fn config_text(public: &str, extra: &str) -> String {
    format!(
        r#"
node_id = "node-1"
listen_addr = "127.0.0.1:7401"
data_dir = "data"
{extra}
[tls]
ca_cert = "ca.pem"
node_cert = "node.pem"
node_key = "node.key"

[[known_peers]]
id = "node-2"
addr = "127.0.0.1:7402"

[publishers]
trusted = ["{public}"]

[store]
ceiling_bytes = 1073741824
min_free_bytes = 0
"#
    )
}

#[test]
fn key_gen_never_overwrites() {
    let f = Fixture::new();
    let again = edged(&["key", "gen", "--out", p(&f.key)]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));
}

#[test]
fn segment_create_inspect_verify() {
    let f = Fixture::new();
    let seg = f.create(
        "policy",
        b"allow all\n",
        &[
            "--channel",
            "policy",
            "--expires",
            "30d",
            "--priority",
            "200",
        ],
    );
    let o = edged(&["segment", "inspect", "--json", p(&seg)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["name"], "policy");
    assert_eq!(v["channel"], "policy");
    assert_eq!(v["priority"], 200);
    assert_eq!(v["payload_bytes"], 10);
    assert_eq!(v["file_length_ok"], true);
    assert!(v["expires_at"].is_string());

    let ok = edged(&["segment", "verify", "--trust", &f.public, p(&seg)]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let other = Fixture::new();
    let bad = edged(&["segment", "verify", "--trust", &other.public, p(&seg)]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("not trusted") || stderr(&bad).contains("untrusted"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn inv_01_inv_19_import_good_and_bad_files() {
    let f = Fixture::new();
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    let good = f.create("good", &vec![7u8; 100_000], &[]);
    std::fs::copy(&good, usb.join("good.seg")).unwrap();
    // Untrusted publisher.
    let stranger = Fixture::new();
    let untrusted = stranger.create("untrusted", b"x", &[]);
    std::fs::copy(&untrusted, usb.join("untrusted.seg")).unwrap();
    // Truncated and corrupted copies of another good segment.
    let other = std::fs::read(f.create("other", &vec![9u8; 50_000], &[])).unwrap();
    std::fs::write(usb.join("truncated.seg"), &other[..other.len() - 10]).unwrap();
    let mut corrupt = other.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    std::fs::write(usb.join("corrupt.seg"), &corrupt).unwrap();
    // Expired.
    let expired = f.create("expired", b"old", &["--expires", "1ms"]);
    std::thread::sleep(std::time::Duration::from_millis(5));
    // Beyond the default skew: rewrite through a config with no skew allowance.
    std::fs::copy(&expired, usb.join("expired.seg")).unwrap();
    std::fs::write(&f.config, config_text(&f.public, "clock_skew_max_s = 0")).unwrap();
    // A symlink pointing outside, and a file that is not a segment.
    std::os::unix::fs::symlink(&good, usb.join("link.seg")).unwrap();
    std::fs::write(usb.join("README.txt"), "hello").unwrap();
    let before: Vec<_> = std::fs::read_dir(&usb)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();

    let o = edged(&["import", "--config", p(&f.config), "--json", p(&usb)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).unwrap();
    let status = |file: &str| {
        lines
            .iter()
            .find(|l| l["file"] == file)
            .unwrap_or_else(|| panic!("{file} missing"))["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status("good.seg"), "imported");
    for bad in [
        "untrusted.seg",
        "truncated.seg",
        "corrupt.seg",
        "expired.seg",
    ] {
        assert_eq!(status(bad), "rejected", "{bad}");
    }
    // The expiry is a time in words, with its age: never milliseconds since the epoch.
    let reason = |file: &str| {
        lines.iter().find(|l| l["file"] == file).unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let expired_reason = reason("expired.seg");
    assert!(
        expired_reason.contains("manifest expired at 20")
            && expired_reason.contains("Z (")
            && expired_reason.contains("ago)")
            && !expired_reason.contains(" ms"),
        "{expired_reason}"
    );
    // Not segment files: skipped, never a failure of their own.
    assert_eq!(status("link.seg"), "skipped");
    assert_eq!(status("README.txt"), "skipped");
    let after: Vec<_> = std::fs::read_dir(&usb)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(before.len(), after.len(), "nothing written to the medium");

    // Idempotent: a second run changes nothing and says so.
    std::fs::remove_file(usb.join("link.seg")).unwrap();
    for bad in [
        "untrusted.seg",
        "truncated.seg",
        "corrupt.seg",
        "expired.seg",
    ] {
        std::fs::remove_file(usb.join(bad)).unwrap();
    }
    let again = edged(&["import", "--config", p(&f.config), p(&usb)]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("0 imported, 1 already present"),
        "{}",
        stdout(&again)
    );

    let list = edged(&["segments", "--config", p(&f.config), "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&list)).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "good");
}

#[test]
fn export_then_import_elsewhere_round_trips() {
    let f = Fixture::new();
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    let seg = f.create("bundle", &vec![3u8; 300_000], &["--channel", "models"]);
    std::fs::copy(&seg, usb.join("bundle.seg")).unwrap();
    assert!(
        edged(&["import", "--config", p(&f.config), p(&usb)])
            .status
            .success()
    );

    let out = f.path("out");
    std::fs::create_dir(&out).unwrap();
    let o = edged(&[
        "export",
        "--config",
        p(&f.config),
        "--to",
        p(&out),
        "--channel",
        "models",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(
        std::fs::read(&files[0]).unwrap(),
        std::fs::read(&seg).unwrap(),
        "byte-identical"
    );
    // Again: already there.
    let o = edged(&["export", "--config", p(&f.config), "--to", p(&out), "--all"]);
    assert!(stdout(&o).contains("already there"), "{}", stdout(&o));

    // Another node imports the exported file.
    let g = Fixture::new();
    std::fs::write(&g.config, config_text(&f.public, "")).unwrap();
    let o = edged(&["import", "--config", p(&g.config), p(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("1 imported"), "{}", stdout(&o));
}

#[test]
fn inv_21_config_errors_name_the_key_and_the_file() {
    let f = Fixture::new();
    let cases: &[(&str, &str)] = &[("colour = \"blue\"", "colour"), ("", "tls.node_key")];
    // Unknown key.
    std::fs::write(&f.config, config_text(&f.public, cases[0].0)).unwrap();
    let o = edged(&["segments", "--config", p(&f.config)]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(cases[0].1) && stderr(&o).contains("edge.toml"),
        "{}",
        stderr(&o)
    );
    // Missing certificate file.
    std::fs::write(&f.config, config_text(&f.public, cases[1].0)).unwrap();
    std::fs::remove_file(f.path("node.key")).unwrap();
    let o = edged(&["segments", "--config", p(&f.config)]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("tls.node_key") && stderr(&o).contains("edge.toml"),
        "{}",
        stderr(&o)
    );
    std::fs::write(f.path("node.key"), "placeholder").unwrap();
    // Duplicate peer.
    let dup = config_text(&f.public, "")
        + "\n[[known_peers]]\nid = \"node-2\"\naddr = \"127.0.0.1:7403\"\n";
    std::fs::write(&f.config, dup).unwrap();
    let o = edged(&["segments", "--config", p(&f.config)]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("known_peers[1].id") && stderr(&o).contains("twice"),
        "{}",
        stderr(&o)
    );
    // Own id among peers.
    let own = config_text(&f.public, "").replace("id = \"node-2\"", "id = \"node-1\"");
    std::fs::write(&f.config, own).unwrap();
    let o = edged(&["segments", "--config", p(&f.config)]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("own id"), "{}", stderr(&o));
}

/// A file with several mistakes is refused with all of them at once, one line each naming the
/// key and the file; a default that conflicts with a value the file sets is called a default,
/// with the key to set.
#[test]
fn inv_21_config_errors_come_all_at_once_and_name_the_defaults() {
    let f = Fixture::new();
    let refused = |text: String| {
        std::fs::write(&f.config, text).unwrap();
        let o = edged(&["segments", "--config", p(&f.config)]);
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        let lines: Vec<String> = stderr(&o).lines().map(str::to_owned).collect();
        for line in &lines {
            assert!(
                line.starts_with("edged: error: ") && line.contains("edge.toml: key `"),
                "{line}"
            );
        }
        lines
    };
    // Two independent mistakes: both reported in one run.
    let two = config_text(&f.public, "housekeeping_interval_ms = 1")
        + "\n[relay]\njitter_percent = 1000\n";
    let lines = refused(two);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("`relay.jitter_percent`"), "{lines:?}");
    assert!(lines[1].contains("`housekeeping_interval_ms`"), "{lines:?}");
    // Lowering backoff_max_ms alone: every default above it is named as a default, with the
    // key to set.
    let lowered = config_text(&f.public, "") + "\n[relay]\nbackoff_max_ms = 100\n";
    let lines = refused(lowered);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for key in [
        "backoff_base_ms",
        "store_full_backoff_min_ms",
        "busy_retry_ms",
    ] {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("`relay.{key}` (default ")))
            .unwrap_or_else(|| panic!("relay.{key} not named as a default: {lines:?}"));
        assert!(
            line.contains("must be at most `relay.backoff_max_ms` (100)")
                && line.contains(&format!("set relay.{key}")),
            "{line}"
        );
    }
    // A set value against a default: the default is named, and the key to set.
    let base_high = config_text(&f.public, "") + "\n[relay]\nbackoff_base_ms = 100000000\n";
    let lines = refused(base_high);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(
            "`relay.backoff_base_ms`: 100000000 must be at most `relay.backoff_max_ms` (default "
        ) && lines[0].contains("set relay.backoff_max_ms"),
        "{lines:?}"
    );
}

#[test]
fn data_dir_held_by_another_process_is_reported_clearly() {
    let f = Fixture::new();
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    // Hold the database the way a running daemon does.
    let cfg_dir = f.path("data");
    let trusted: store::keys::TrustedPublishers =
        std::iter::once(f.public.parse::<store::keys::PublisherKey>().unwrap()).collect();
    let mut cfg = store::StoreConfig::new(&cfg_dir, 1 << 30, trusted);
    cfg.min_free_bytes = 0;
    let (held, _) = store::Store::open(cfg, std::sync::Arc::new(store::fs::RealFs), 0).unwrap();
    let o = edged(&["import", "--config", p(&f.config), p(&usb)]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("held by another process"),
        "{}",
        stderr(&o)
    );
    drop(held);
}

/// With no daemon and no store yet, a listing or an export says so (exit 6) and creates
/// nothing: a read must not make a store a daemon's first start would then race to create.
#[test]
fn reads_without_a_daemon_or_a_store_create_nothing() {
    let f = Fixture::new();
    let out = f.path("out");
    std::fs::create_dir(&out).unwrap();
    for args in [
        vec!["segments", "--config", p(&f.config)],
        vec!["export", "--config", p(&f.config), "--to", p(&out), "--all"],
    ] {
        let o = edged(&args);
        assert_eq!(o.status.code(), Some(6), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("holds no store yet"), "{}", stderr(&o));
        assert!(
            !f.path("data").exists(),
            "{args:?} created the data directory"
        );
    }
    // An import seeds a node before its first start: it creates the store.
    let seg = f.create("seed", b"seed", &[]);
    let stick = f.path("stick");
    std::fs::create_dir(&stick).unwrap();
    std::fs::rename(&seg, stick.join("seed.seg")).unwrap();
    let o = edged(&["import", "--config", p(&f.config), p(&stick)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = edged(&["segments", "--config", p(&f.config)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("seed"), "{}", stdout(&o));
}
