//! The background scrub's thread (see [`crate::scrub`]): one segment at a time, in id order,
//! paced to `[store] scrub_bytes_per_sec`, on a thread of its own because it reads files and
//! sleeps between reads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use store::ScrubOutcome;
use tokio::sync::watch;

use super::Daemon;
use crate::scrub::{
    SCRUB_PASS_PAUSE_MS, SCRUB_SAVE_INTERVAL_MS, SCRUB_SEGMENT_COST_BYTES_MIN,
    SCRUB_STATE_BYTES_MAX, SCRUB_STOP_POLL_MS, SavedState, pace,
};

/// Starts the scrub thread, unless `scrub_bytes_per_sec` is 0.
pub(super) fn start(
    d: Arc<Daemon>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
    let rate = d.cfg.scrub_bytes_per_sec;
    if rate == 0 {
        return Ok(None);
    }
    std::thread::Builder::new()
        .name("edged-scrub".into())
        .spawn(move || run(&d, rate, &stop))
        .map(Some)
}

/// Reads through the payloads it is given at no more than the rate, and gives up (an I/O error
/// the store does not count as corruption) once the daemon stops.
struct Paced<'a> {
    rate: u64,
    since: Instant,
    budget_used: u64,
    stop: &'a watch::Receiver<bool>,
}

impl Paced<'_> {
    fn charge(&mut self, bytes: u64) -> std::io::Result<()> {
        self.budget_used = self.budget_used.saturating_add(bytes);
        let mut wait = pace(self.budget_used, self.rate, self.since.elapsed());
        while !wait.is_zero() {
            if *self.stop.borrow() {
                return Err(std::io::Error::other("the daemon is stopping"));
            }
            let slice = wait.min(Duration::from_millis(SCRUB_STOP_POLL_MS));
            std::thread::sleep(slice);
            wait = wait.saturating_sub(slice);
        }
        Ok(())
    }

    /// A fresh start of the budget (after a pause, so the pause is not spent as a burst).
    fn restart(&mut self) {
        self.since = Instant::now();
        self.budget_used = 0;
    }
}

impl Write for Paced<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.charge(buf.len() as u64)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn run(d: &Daemon, rate: u64, stop: &watch::Receiver<bool>) {
    let store = &d.store;
    let state_path = store.layout().scrub_state();
    let saved = load(&state_path);
    {
        let mut p = d.scrub_progress();
        p.rate_bytes_per_sec = rate;
        p.position = saved.position();
        p.pass_started_ms = saved.pass_started_ms;
        p.last_full_pass_ms = saved.last_full_pass_ms;
    }
    tracing::info!(
        bytes_per_sec = rate,
        resumes_after = %saved
            .position
            .map_or_else(|| "the start".to_owned(), |id| id.to_string()),
        "background scrub started"
    );
    let mut paced = Paced {
        rate,
        since: Instant::now(),
        budget_used: 0,
        stop,
    };
    let mut saved_at = Instant::now();
    let stopped = || *stop.borrow();
    while !stopped() {
        let position = d.scrub_progress().position;
        let next = match store.list_after(position.as_ref(), 1) {
            Ok(page) => page.into_iter().next(),
            Err(e) => {
                tracing::warn!(error = %e, "background scrub: the index did not read; trying again");
                sleep_unless_stopped(stop, SCRUB_PASS_PAUSE_MS);
                continue;
            }
        };
        let Some(info) = next else {
            // The end of the store: a pass is complete if one was under way.
            let finished = {
                let mut p = d.scrub_progress();
                let finished = p.pass_started_ms.is_some();
                if finished {
                    p.last_full_pass_ms = Some(d.clock.now_ms());
                    p.passes_completed += 1;
                }
                p.position = None;
                p.pass_started_ms = None;
                finished.then(|| p.clone())
            };
            if let Some(p) = finished {
                tracing::info!(
                    segments_checked = p.segments_checked,
                    quarantined = p.quarantined,
                    "background scrub: pass complete"
                );
                save(&state_path, &SavedState::of(&p));
                saved_at = Instant::now();
            }
            sleep_unless_stopped(stop, SCRUB_PASS_PAUSE_MS);
            paced.restart();
            continue;
        };
        let id = info.id;
        {
            let mut p = d.scrub_progress();
            if p.pass_started_ms.is_none() {
                p.pass_started_ms = Some(d.clock.now_ms());
            }
        }
        let before = paced.budget_used;
        let outcome = store.scrub_one_into(&id, d.clock.now_ms(), &mut paced);
        if stopped() {
            break;
        }
        // Every segment costs at least the minimum, read or not.
        let spent = paced.budget_used - before;
        if spent < SCRUB_SEGMENT_COST_BYTES_MIN
            && paced.charge(SCRUB_SEGMENT_COST_BYTES_MIN - spent).is_err()
        {
            break;
        }
        {
            let mut p = d.scrub_progress();
            match outcome {
                Ok(ScrubOutcome::Intact { bytes }) => {
                    p.bytes_checked += bytes;
                    p.segments_checked += 1;
                }
                Ok(ScrubOutcome::Quarantined { .. }) => {
                    p.bytes_checked += spent;
                    p.segments_checked += 1;
                    p.quarantined += 1;
                }
                Ok(ScrubOutcome::Untrusted { .. } | ScrubOutcome::Gone) => {}
                Err(e) => {
                    tracing::warn!(seg_id = %id, error = %e, "background scrub: segment not checked; moving on");
                }
            }
            p.position = Some(id);
        }
        if saved_at.elapsed() >= Duration::from_millis(SCRUB_SAVE_INTERVAL_MS) {
            save(&state_path, &SavedState::of(&d.scrub_progress()));
            saved_at = Instant::now();
        }
    }
    save(&state_path, &SavedState::of(&d.scrub_progress()));
}

fn sleep_unless_stopped(stop: &watch::Receiver<bool>, ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    while !*stop.borrow() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(SCRUB_STOP_POLL_MS)));
    }
}

fn load(path: &Path) -> SavedState {
    let Ok(file) = std::fs::File::open(path) else {
        return SavedState::default();
    };
    let mut bytes = Vec::new();
    use std::io::Read as _;
    match file.take(SCRUB_STATE_BYTES_MAX + 1).read_to_end(&mut bytes) {
        Ok(n) if n as u64 <= SCRUB_STATE_BYTES_MAX => SavedState::parse(&bytes),
        _ => SavedState::default(),
    }
}

/// Replaces the state file (renamed into place, so never half-written). Not fsynced: losing
/// it in a power cut only starts a pass over.
fn save(path: &Path, state: &SavedState) {
    let tmp: PathBuf = path.with_extension("json.new");
    let written = serde_json::to_vec(state)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "background scrub: position not saved");
    }
}
