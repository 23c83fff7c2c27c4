//! Progress bars of the long commands (import, export, `segment create`, fsck): on stderr, drawn
//! only when stderr is a terminal, and never when the command prints JSON, so scripts, pipes and
//! logs stay clean.

use std::io::{IsTerminal, Read};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Redraws per second at most: a bar must not cost the transfer it shows.
const REDRAWS_PER_SEC_MAX: u8 = 10;

/// A bar counting `total` bytes, labelled `what` ("exporting", "hashing").
pub fn bytes(total: u64, what: &str, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(
        Some(total),
        ProgressDrawTarget::stderr_with_hz(REDRAWS_PER_SEC_MAX),
    );
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// How often a spinner moves while the command waits on the daemon.
const SPINNER_TICK_MS: u64 = 200;

/// A spinner saying `what` while the command waits on work it cannot count (the daemon's).
pub fn spinner(what: &str, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(SPINNER_TICK_MS));
    bar
}

/// A reader that advances `bar` by what it reads.
#[derive(Debug)]
pub struct Reading<'a, R> {
    inner: R,
    bar: &'a ProgressBar,
}

impl<'a, R> Reading<'a, R> {
    pub fn new(inner: R, bar: &'a ProgressBar) -> Self {
        Reading { inner, bar }
    }
}

impl<R: Read> Read for Reading<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}
