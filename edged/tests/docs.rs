//! The operator's comforts of the real binary: shell completions and manual pages generated from
//! the command line's definition, and progress bars drawn on a terminal only.

mod support;

use std::path::Path;
use std::process::Command;

use support::{Fleet, NodeOptions, edged, p};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The commands `edged --help` lists (clap's own `help` aside).
fn commands() -> Vec<String> {
    let out = edged(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    let listed = help
        .split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("a Commands: section");
    let names: Vec<String> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    names
}

#[test]
fn completions_cover_every_command_in_every_shell() {
    let commands = commands();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = edged(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for command in &commands {
            assert!(script.contains(command.as_str()), "{shell} lacks {command}");
        }
    }
    let bad = edged(&["completions", "cmd.exe"]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn bash_completion_loads_and_completes_commands() {
    let out = edged(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("edged.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // What bash offers after `edged imp<TAB>`.
    let probe = format!(
        "source {}; COMP_WORDS=(edged imp); COMP_CWORD=1; COMP_LINE='edged imp'; COMP_POINT=9; \
         _edged edged imp edged; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        p(&script)
    );
    let run = Command::new("bash")
        .args(["--norc", "-c", &probe])
        .output()
        .expect("bash");
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout).trim(), "import");
}

#[test]
fn man_writes_a_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = edged(&["man", "--out", p(dir.path())]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let main = std::fs::read_to_string(dir.path().join("edged.1")).unwrap();
    assert!(main.contains(".TH edged 1"), "{main}");
    assert!(
        main.contains("Exit codes"),
        "the exit codes are in the page"
    );
    for command in commands() {
        let page = dir.path().join(format!("edged-{command}.1"));
        let body =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(body.contains(&format!(".TH edged-{command} 1")), "{body}");
    }
    let nested = std::fs::read_to_string(dir.path().join("edged-dlq-requeue.1")).unwrap();
    assert!(nested.contains("\\-\\-peer"), "{nested}");
    assert!(
        !dir.path().join("edged-help.1").exists(),
        "clap's help command gets no page"
    );

    let missing = edged(&["man", "--out", p(&dir.path().join("nope"))]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("is not a directory"));
}

/// A publisher key and a 4 MiB file to sign, in a temp dir.
fn key_and_input(dir: &Path) -> (String, String) {
    let key = dir.join("publisher.key");
    assert!(edged(&["key", "gen", "--out", p(&key)]).status.success());
    let input = dir.join("payload.bin");
    std::fs::write(&input, vec![7u8; 4 << 20]).unwrap();
    (p(&key).to_owned(), p(&input).to_owned())
}

#[test]
fn progress_bars_stay_off_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let (key, input) = key_and_input(dir.path());
    let seg = dir.path().join("out.seg");
    let out = edged(&[
        "segment",
        "create",
        "--key",
        &key,
        "--name",
        "big",
        "--out",
        p(&seg),
        &input,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        !err.contains('\r') && !err.contains('\u{1b}') && !err.contains("hashing"),
        "a pipe gets no progress bar: {err:?}"
    );
    assert!(err.contains("written"), "{err}");
}

/// On a terminal (a pseudo-terminal from `script`, util-linux) the same command draws its bar.
#[test]
fn progress_bars_are_drawn_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (key, input) = key_and_input(dir.path());
    let seg = dir.path().join("out.seg");
    let command = format!(
        "{} segment create --key {key} --name big --out {} {input}",
        env!("CARGO_BIN_EXE_edged"),
        p(&seg)
    );
    let run = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .output()
        .expect("script (util-linux) runs the command on a pseudo-terminal");
    assert!(run.status.success(), "{}", text(&run.stderr));
    let screen = text(&run.stdout);
    assert!(screen.contains("hashing"), "{screen:?}");
    assert!(screen.contains("writing"), "{screen:?}");
    assert!(seg.exists());
}

/// Export on a terminal draws its bar, unless the output is JSON for a script.
#[test]
fn export_bar_is_drawn_on_a_terminal_but_not_with_json() {
    let f = Fleet::new(1, &[], |_| NodeOptions::default());
    let stick = f.path("stick");
    std::fs::create_dir(&stick).unwrap();
    f.make_segment("big", 4 << 20, &stick);
    let imported = f.cli(1, &["import", p(&stick)]);
    assert!(imported.status.success(), "{}", text(&imported.stderr));

    let config = p(&f.node(1).config).to_owned();
    let on_terminal = |out: &Path, json: &str| {
        std::fs::create_dir(out).unwrap();
        let command = format!(
            "{} export --config {config} --all --to {} {json}",
            env!("CARGO_BIN_EXE_edged"),
            p(out)
        );
        let run = Command::new("script")
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .output()
            .expect("script (util-linux)");
        assert!(run.status.success(), "{}", text(&run.stdout));
        text(&run.stdout)
    };
    let screen = on_terminal(&f.path("out-1"), "");
    assert!(screen.contains("exporting"), "{screen:?}");
    let screen = on_terminal(&f.path("out-2"), "--json");
    assert!(!screen.contains("exporting"), "{screen:?}");
    assert!(screen.contains("\"written\""), "{screen:?}");
}
