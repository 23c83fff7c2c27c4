//! `edged ca init` and `edged ca issue`, run as the real binary in temp dirs: the happy path, and
//! every refusal leaves what was there untouched.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
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

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The names in `dir`, sorted (empty if it does not exist).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn init(dir: &Path) {
    let o = edged(&["ca", "init", "--out", p(dir)]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn init_then_issue_gives_a_node_its_tls_section() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("fleet-ca");
    let o = edged(&["ca", "init", "--out", p(&ca)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(listing(&ca), ["ca.crt", "ca.key"]);
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    assert_eq!(mode(&ca), 0o700, "the CA directory holds the root key");
    for file in ["ca.crt", "ca.key"] {
        assert!(stdout(&o).contains(p(&ca.join(file))), "{}", stdout(&o));
    }

    let out = tmp.path().join("node-1-tls");
    let o = edged(&[
        "ca",
        "issue",
        "--ca",
        p(&ca),
        "--node",
        "node-1",
        "--out",
        p(&out),
        "--days",
        "30",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(listing(&out), ["node-1.crt", "node-1.key"]);
    assert_eq!(mode(&out.join("node-1.key")), 0o600);
    let err = stderr(&o);
    assert!(err.contains(p(&out.join("node-1.crt"))), "{err}");
    assert!(err.contains(p(&out.join("node-1.key"))), "{err}");

    // Stdout is the [tls] section, as TOML, naming the three files.
    let snippet: toml::Table = toml::from_str(&stdout(&o)).expect("stdout is TOML");
    let tls = snippet["tls"].as_table().expect("[tls]");
    for (key, file) in [
        ("ca_cert", ca.join("ca.crt")),
        ("node_cert", out.join("node-1.crt")),
        ("node_key", out.join("node-1.key")),
    ] {
        assert_eq!(tls[key].as_str(), Some(p(&file)), "{key}");
    }
    assert!(
        stdout(&o).contains("\"node-1\""),
        "names the node id it needs"
    );

    // A second node from the same CA.
    let o = edged(&[
        "ca",
        "issue",
        "--ca",
        p(&ca),
        "--node",
        "node-2",
        "--out",
        p(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        listing(&out),
        ["node-1.crt", "node-1.key", "node-2.crt", "node-2.key"]
    );
}

#[test]
fn issue_refuses_a_bad_node_id() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    init(&ca);
    let out = tmp.path().join("out");
    for bad in [
        "Node-1",
        "node_1",
        "-node",
        "node-",
        "123",
        "",
        &"a".repeat(64),
    ] {
        // `--node=VALUE`, so that clap takes "-node" as the value it is.
        let node = format!("--node={bad}");
        let o = edged(&["ca", "issue", "--ca", p(&ca), &node, "--out", p(&out)]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("invalid node id"),
            "{bad:?}: {}",
            stderr(&o)
        );
        assert!(stdout(&o).is_empty());
        assert!(listing(&out).is_empty(), "{bad:?} wrote something");
    }
    // The same holds for an out-of-range validity.
    for days in ["0", "3651"] {
        let o = edged(&[
            "ca",
            "issue",
            "--ca",
            p(&ca),
            "--node",
            "node-1",
            "--out",
            p(&out),
            "--days",
            days,
        ]);
        assert_eq!(o.status.code(), Some(2), "--days {days}: {}", stderr(&o));
        assert!(listing(&out).is_empty());
    }
}

#[test]
fn issue_never_overwrites_an_existing_output() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    init(&ca);
    let out = tmp.path().join("out");
    let args = [
        "ca",
        "issue",
        "--ca",
        p(&ca),
        "--node",
        "node-1",
        "--out",
        p(&out),
    ];
    let o = edged(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let cert = std::fs::read(out.join("node-1.crt")).unwrap();
    let key = std::fs::read(out.join("node-1.key")).unwrap();

    let again = edged(&args);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read(out.join("node-1.crt")).unwrap(), cert);
    assert_eq!(std::fs::read(out.join("node-1.key")).unwrap(), key);

    // Only one of the two present is enough to refuse, and it is left alone.
    std::fs::remove_file(out.join("node-1.crt")).unwrap();
    let o = edged(&args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(listing(&out), ["node-1.key"]);
    assert_eq!(std::fs::read(out.join("node-1.key")).unwrap(), key);
}

#[test]
fn issue_without_a_ca_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = edged(&[
        "ca",
        "issue",
        "--ca",
        p(tmp.path()),
        "--node",
        "node-1",
        "--out",
        p(&out),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no fleet CA"), "{}", stderr(&o));
    assert!(listing(&out).is_empty());
}

#[test]
fn init_refuses_an_existing_ca_or_a_non_empty_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    init(&ca);
    let cert = std::fs::read(ca.join("ca.crt")).unwrap();
    let key = std::fs::read(ca.join("ca.key")).unwrap();

    let again = edged(&["ca", "init", "--out", p(&ca)]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already holds a fleet CA"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read(ca.join("ca.crt")).unwrap(), cert);
    assert_eq!(std::fs::read(ca.join("ca.key")).unwrap(), key);

    // Half a CA (the key alone) is refused too.
    std::fs::remove_file(ca.join("ca.crt")).unwrap();
    let o = edged(&["ca", "init", "--out", p(&ca)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(listing(&ca), ["ca.key"]);

    // Any other content: refused, untouched.
    let busy = tmp.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    let o = edged(&["ca", "init", "--out", p(&busy)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    assert_eq!(listing(&busy), ["notes.txt"]);

    // A file where the directory should be.
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let o = edged(&["ca", "init", "--out", p(&file)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(std::fs::read(&file).unwrap(), b"x");

    // An existing empty directory is fine.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    init(&empty);
    assert_eq!(listing(&empty), ["ca.crt", "ca.key"]);
}
