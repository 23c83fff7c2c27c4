//! A reader that goes away (`edged segments --json | head -c 200`) ends a command quietly:
//! exit code 0, nothing on stderr, never a panic — with the daemon running and without it. Any
//! other failure to write the output is an error said in words, exit 1.

mod support;

use std::process::Output;

use support::{Fleet, NodeOptions, p, stderr};

/// Commands whose output goes to a pipe nobody reads; each must end quietly.
const COMMANDS: &[&[&str]] = &[
    &["segments", "--json"],
    &["segments"],
    &["status"],
    &["status", "--json"],
    &["peers"],
    &["dlq", "list"],
    &["fleet"],
    &["fsck"],
    &["quarantine", "list", "--json"],
];

fn check_quiet(f: &Fleet, what: &str, args: &[&str], o: &Output) {
    f.check(o.status.code() == Some(0) && stderr(o).is_empty(), || {
        format!(
            "{what}: edged {args:?} into a closed pipe ends quietly, exit 0 (got {:?}): {}",
            o.status.code(),
            stderr(o)
        )
    });
}

#[test]
fn a_closed_pipe_ends_every_listing_quietly() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    let dir = f.path("stick");
    std::fs::create_dir_all(&dir).unwrap();
    f.make_segment("one", 1000, &dir);
    let o = f.cli(1, &["import", p(&dir)]);
    f.check(o.status.success(), || stderr(&o));

    for args in [&["segments", "--json"][..], &["segments"], &["fsck"]] {
        let o = f.cli_into_closed_pipe(1, args);
        check_quiet(&f, "no daemon", args, &o);
    }
    f.start(1);
    for args in COMMANDS {
        let o = f.cli_into_closed_pipe(1, args);
        check_quiet(&f, "daemon running", args, &o);
    }
}

#[test]
fn output_that_cannot_be_written_is_an_error_in_words() {
    let f = Fleet::new(1, &[], |_| NodeOptions::default());
    let dir = f.path("stick");
    std::fs::create_dir_all(&dir).unwrap();
    f.make_segment("one", 1000, &dir);
    let o = f.cli(1, &["import", p(&dir)]);
    f.check(o.status.success(), || stderr(&o));
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full: a device that is always full");
    let o = f.cli_to(1, &["segments", "--json"], std::process::Stdio::from(full));
    f.check(
        o.status.code() == Some(1)
            && stderr(&o).contains("cannot write the output")
            && !stderr(&o).contains("panicked"),
        || format!("a full device: {:?} {}", o.status.code(), stderr(&o)),
    );
}
