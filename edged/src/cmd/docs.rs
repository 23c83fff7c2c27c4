//! `edged completions SHELL` and `edged man --out DIR`: generated from the command line's own
//! definition ([`crate::cli::Cli`]), so they never disagree with `--help`. The package ships both
//! (`make deb`); an airgapped host can also regenerate them from the binary alone.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::{CliResult, Failure};

pub fn completions(shell: clap_complete::Shell) -> CliResult {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "edged", &mut script);
    let mut out = crate::output::stdout();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .context("cannot write the completion script to stdout")
        .map_err(Failure::failed)
}

/// One page per command and subcommand, named like git's: `edged.1`, `edged-dlq-requeue.1`.
pub fn man(out: &Path) -> CliResult {
    if !out.is_dir() {
        return Err(Failure::failed(anyhow::anyhow!(
            "{} is not a directory",
            crate::output::path(out)
        )));
    }
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = 0usize;
    write_pages(&cmd, out, &mut written).map_err(Failure::failed)?;
    eprintln!(
        "{written} manual pages written to {}",
        crate::output::path(out)
    );
    Ok(())
}

fn write_pages(cmd: &clap::Command, out: &Path, written: &mut usize) -> anyhow::Result<()> {
    // `build` named every subcommand after its parents (`edged-dlq-requeue`).
    // clap's own `help` subcommands would only repeat the pages.
    let pages = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help");
    for sub in pages {
        write_pages(sub, out, written)?;
    }
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    let path = out.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    *written += 1;
    Ok(())
}
