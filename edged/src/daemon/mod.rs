//! `edged run`: the daemon.
//!
//! Wiring, in start order: the store (recovering from any crash), the control socket's file
//! (bound now, so a bad `control_socket` stops the start before anything runs; served later),
//! the relay ledger (cancelling jobs of peers no longer configured), the QUIC node (hooks into
//! the relay), the relay's executor (transfers through the node), the control server, the
//! metrics endpoint, and the housekeeping timer. SIGTERM or SIGINT stops them in reverse: no new transfers, in-flight ones
//! cut and their attempts refunded, partials checkpointed by the network layer, the committer
//! drained. Nothing acknowledged is lost: acknowledgements only ever follow a commit.

mod control_io;
mod control_server;
mod fsck;
pub(crate) mod lifecycle_view;
mod listing;
mod need;
mod pipeline;
pub mod reload;
mod scrub;
mod views;
pub mod wiring;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use base::{Clock, SystemClock};
use relay::Relay;
use relay::executor::Executor;

use crate::cli::RunArgs;
use crate::config::{Config, LogFormat};
use crate::exit::{CONFIG, CliResult, Failure, STORAGE};

/// Certificates closer than this to expiry are warned about, in logs and `status`.
pub const CERT_EXPIRY_WARNING_S: i64 = 30 * 24 * 3600;
/// How long shutdown waits for cut receives to keep their checkpoints (the closes themselves
/// wait at most [`net::limits::CLOSE_DRAIN_MAX_MS`]), for control clients to go, and for
/// blocking work at the end.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;
/// Worker threads of the daemon's runtime: fewer threads cost less CPU per GiB on small hosts.
pub const RUNTIME_WORKERS: usize = 2;
/// The fleet counts of `status` and the metrics are recomputed this often when the book
/// changed (a pass over every segment the book knows)...
pub const FLEET_VIEW_REFRESH_MS: u64 = 1_000;
/// ...and by `status` itself when the database changed since, if they are at least this old.
pub const FLEET_VIEW_STATUS_AGE_MIN_MS: u64 = 200;
/// ...and at least this often (silence turns verdicts `unknown` with time alone).
pub const FLEET_VIEW_REFRESH_MAX_MS: u64 = 60_000;
/// A pass over the book costs time in proportion to the segments it names; under steady
/// change the two intervals above would have a large book counted back to back. Passes are
/// therefore also spaced by this many times the last one's duration: counting takes at most
/// about a tenth of one core, whatever the book's size (the counts then lag by that spacing).
pub const FLEET_VIEW_SPACING_FACTOR: u64 = 10;

/// The fleet view's counts as last computed.
#[derive(Debug, Clone)]
pub struct FleetSummary {
    pub counts: crate::fleetview::Counts,
    pub roster: net::receipts::verdict::Roster,
    pub at_ms: u64,
    /// The database's generation it was computed at.
    pub generation: u64,
    /// How long the pass took.
    pub took_ms: u64,
}

impl FleetSummary {
    /// How long after this one the next pass may start, at the earliest `min_ms` (see
    /// [`FLEET_VIEW_SPACING_FACTOR`]).
    pub fn spacing_ms(&self, min_ms: u64) -> u64 {
        min_ms.max(self.took_ms.saturating_mul(FLEET_VIEW_SPACING_FACTOR))
    }
}

impl Daemon {
    /// Recomputes the fleet summary (a pass over the book) and keeps it.
    pub fn refresh_fleet_summary(&self) -> Result<Option<FleetSummary>, store::StoreError> {
        let Some(fleet) = self.node.fleet() else {
            return Ok(None);
        };
        let generation = self.store.writer().generation();
        let now = self.clock.now_ms();
        let started = Instant::now();
        // The roster follows `known_peers` as reloaded.
        let cfg = self.live_config().clone();
        let (counts, roster) = crate::fleetview::counts(&fleet.book, &cfg, now)?;
        let summary = FleetSummary {
            counts,
            roster,
            at_ms: now,
            generation,
            took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        *self.fleet_summary.lock().unwrap_or_else(|e| e.into_inner()) = Some(summary.clone());
        Ok(Some(summary))
    }
}

/// Counters of the segments that reached a verdict here, from peers or imports (INV-26):
/// received = stored + duplicate + rejected (by reason). Offers answered "busy", transfers cut
/// before a verdict and imports cut by their client (it closed early or sent too slowly) are
/// not received: no verdict was reached, and the sender tries again.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub stored: AtomicU64,
    pub duplicate: AtomicU64,
    pub rejected: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    /// How an offer from a peer ended.
    pub fn offer(&self, result: net::OfferResult) {
        match result {
            net::OfferResult::Stored => self.count_stored(),
            net::OfferResult::Duplicate => self.count_duplicate(),
            net::OfferResult::Rejected(reason) => self.count_rejected(reason.as_str()),
            net::OfferResult::Busy | net::OfferResult::Interrupted => {}
        }
    }

    pub fn count_stored(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.stored.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_duplicate(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        // Mutation point (INV-26): a duplicate is received but not counted as one.
        if !store::mutants::active("skip_duplicate_counter") {
            self.duplicate.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn count_rejected(&self, reason: &str) {
        self.received.fetch_add(1, Ordering::Relaxed);
        *self
            .rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason.to_owned())
            .or_insert(0) += 1;
    }
}

/// Everything the control socket and metrics read.
pub struct Daemon {
    pub cfg: Config,
    pub store: store::Store,
    pub relay: Relay,
    pub node: Arc<net::Node>,
    pub counters: Arc<Counters>,
    /// The daemon's one clock, also handed to the relay and the network layer.
    pub clock: Arc<dyn Clock>,
    pub started: Instant,
    pub cert_not_after_ms: Option<u64>,
    /// The fleet view's counts, refreshed by [`fleet_view`]; `None` until first computed or
    /// when receipts are off.
    pub fleet_summary: Mutex<Option<FleetSummary>>,
    /// What the background scrub has done (see [`crate::scrub`]).
    pub scrub: Mutex<crate::scrub::Progress>,
    /// The configuration in force: `cfg` with what reloads changed (see [`reload`]).
    pub live: Mutex<Config>,
    /// Changes the log filter (`log_level`).
    pub log_filter: crate::LogFilterHandle,
    /// EDGED_LOG sets the log filter: `log_level` is not applied.
    pub log_env_override: bool,
}

impl Daemon {
    pub fn scrub_progress(&self) -> std::sync::MutexGuard<'_, crate::scrub::Progress> {
        self.scrub.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration in force (held: one reload at a time).
    pub fn live_config(&self) -> std::sync::MutexGuard<'_, Config> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn run(args: &RunArgs) -> CliResult {
    let cfg = Config::load(&args.config.config)?;
    let format = match args.log_format.as_deref() {
        Some("json") => LogFormat::Json,
        Some(_) => LogFormat::Human,
        None => cfg.log_format,
    };
    let log_filter = crate::init_daemon_logging(format, &cfg.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_WORKERS)
        .thread_name("edged")
        .enable_all()
        .build()
        .map_err(|e| Failure::new(STORAGE, e))?;
    let result = runtime.block_on(serve(cfg, log_filter));
    // Blocking tasks (commits waited on) end with the runtime.
    runtime.shutdown_timeout(Duration::from_millis(SHUTDOWN_GRACE_MS));
    result
}

async fn serve(cfg: Config, log_filter: crate::LogFilterHandle) -> CliResult {
    // The one clock of this process: the relay, the network layer, the control socket and
    // housekeeping all read it.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now_ms();
    let store = crate::cmd::open_store_direct(&cfg, crate::cmd::Direct::Create)?;
    // After the store's lock (a second daemon on this data dir stops there, before touching the
    // socket) and before anything that would have to be stopped.
    let control_socket = match control_server::bind(&cfg) {
        Ok(socket) => socket,
        Err(e) => {
            store.close();
            return Err(Failure::new(e.exit_code(), e));
        }
    };
    let identity = cfg.node_identity()?;
    let cert_not_after_ms = identity
        .not_after
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64);
    let relay =
        Relay::open(store.clone(), cfg.relay.clone(), now).map_err(|e| Failure::new(STORAGE, e))?;
    let counters = Arc::new(Counters::default());
    let hooks = Arc::new(wiring::Hooks::new(
        relay.clone(),
        clock.clone(),
        Arc::new(wiring::Offers::new(counters.clone(), store.clone())),
    ));
    let mut setup = net::NodeSetup::new(cfg.net.clone(), identity, store.clone());
    setup.hooks = hooks;
    setup.clock = clock.clone();
    let node = Arc::new(
        net::Node::start(setup)
            .with_context(|| format!("cannot listen on {}", cfg.listen_addr))
            .map_err(|e| Failure::new(CONFIG, e))?,
    );
    let daemon = Arc::new(Daemon {
        cfg: cfg.clone(),
        store: store.clone(),
        relay: relay.clone(),
        node: node.clone(),
        counters,
        clock: clock.clone(),
        started: Instant::now(),
        cert_not_after_ms,
        fleet_summary: Mutex::new(None),
        scrub: Mutex::new(crate::scrub::Progress::default()),
        live: Mutex::new(cfg.clone()),
        log_filter,
        log_env_override: std::env::var_os("EDGED_LOG").is_some(),
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let transport = Arc::new(wiring::QuicTransport { node: node.clone() });
    let seed = now ^ u64::from(std::process::id());
    let executor = Executor::new(relay.clone(), transport, clock.clone(), seed);
    let mut exec_stop = stop_rx.clone();
    let executor = tokio::spawn(executor.run(async move {
        let _ = exec_stop.wait_for(|stop| *stop).await;
    }));

    let metrics = match cfg.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics_addr {addr}"))
                .map_err(|e| Failure::new(CONFIG, e))?;
            let d = daemon.clone();
            let source: Arc<dyn Fn() -> crate::metrics::Snapshot + Send + Sync> =
                Arc::new(move || views::metrics_snapshot(&d));
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                source,
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    // Last: once the control socket answers, the daemon is up — metrics included (scripts
    // and the service manager wait for it, then scrape).
    let control = control_server::start(control_socket, daemon.clone(), stop_rx.clone())
        .map_err(|e| Failure::new(e.exit_code(), e))?;
    let housekeeping = tokio::spawn(housekeeping(daemon.clone(), stop_rx.clone()));
    let fleet_view = tokio::spawn(fleet_view(daemon.clone(), stop_rx.clone()));
    // Local delivery on a thread of its own; it delivers at once what was stored while the
    // daemon was down. Without it the node still relays: a failure to start it is reported.
    let deliverer =
        crate::deliver::Deliverer::start(store.clone(), cfg.deliver.clone(), clock.clone())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "local delivery not started: no thread for it");
                None
            });
    // Without it the node still relays: a failure to start it is reported, not fatal.
    let scrub = scrub::start(daemon.clone(), stop_rx.clone()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "background scrub not started: no thread for it");
        None
    });

    tracing::info!(
        node_id = %cfg.node_id,
        listen_addr = %cfg.listen_addr,
        peers = cfg.known_peers.len(),
        control_socket = %crate::output::Escaped(&cfg.control_socket.to_string_lossy()),
        "edged started"
    );

    let exit = wait_for_signal_or(&executor, &daemon).await;
    let stopping = Instant::now();
    let waits = ShutdownWaits {
        connections: node.open_connections(),
        sends: relay.in_flight_count(),
        receives: node.receives_in_flight(),
    };
    tracing::info!(
        node_id = %cfg.node_id,
        reason = exit,
        peer_connections = waits.connections,
        sends_in_flight = waits.sends,
        receives_to_checkpoint = waits.receives,
        "shutting down: {}",
        waits.describe()
    );
    let _ = stop_tx.send(true);
    let mut result = Ok(());
    if let Some(why) = store.failure() {
        tracing::error!(error = %why, "the database takes no more writes; exiting so that the service manager restarts the node (the store recovers on open)");
        result = Err(Failure::new(
            STORAGE,
            anyhow::anyhow!("storage failure: {why}"),
        ));
    }
    match executor.await {
        // The executor logs its own report when it stops.
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "relay ledger failed");
            result = Err(Failure::new(STORAGE, e));
        }
        Err(e) => tracing::error!(error = %e, "relay executor panicked"),
    }
    node.shutdown(Duration::from_millis(SHUTDOWN_GRACE_MS))
        .await;
    control.stop(Duration::from_millis(SHUTDOWN_GRACE_MS)).await;
    housekeeping.abort();
    fleet_view.abort();
    if let Some(deliverer) = deliverer {
        let _ = tokio::task::spawn_blocking(move || deliverer.stop()).await;
    }
    // It notices the stop within a poll interval; joined so that the store closes after it.
    if let Some(scrub) = scrub {
        let _ = tokio::task::spawn_blocking(move || scrub.join()).await;
    }
    if let Some(m) = metrics {
        m.abort();
    }
    store.close();
    let took_ms = u64::try_from(stopping.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(node_id = %cfg.node_id, took_ms, "edged stopped in {took_ms} ms");
    result
}

/// What a shutdown has to wait for, said in its first log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ShutdownWaits {
    /// Peer connections closed (with [`net::node::SHUTDOWN_REASON`]).
    connections: usize,
    /// Sends cut (their attempts refunded).
    sends: usize,
    /// Receives cut, each keeping its checkpoint.
    receives: usize,
}

impl ShutdownWaits {
    /// "closing 3 peer connections, cutting 1 send, waiting for 1 transfer to checkpoint".
    fn describe(&self) -> String {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut parts = vec![format!(
            "closing {}",
            plural(self.connections, "peer connection", "peer connections")
        )];
        if self.sends > 0 {
            parts.push(format!("cutting {}", plural(self.sends, "send", "sends")));
        }
        if self.receives > 0 {
            parts.push(format!(
                "waiting for {} to checkpoint",
                plural(self.receives, "transfer", "transfers")
            ));
        }
        parts.join(", ")
    }
}

/// Waits for SIGTERM or SIGINT, for the executor to end on its own (a fatal ledger error), or
/// for the store to stop taking writes (a commit failed on an I/O error). A SIGHUP reloads the
/// configuration meanwhile.
async fn wait_for_signal_or(
    executor: &tokio::task::JoinHandle<Result<relay::executor::ExecutorReport, relay::RelayError>>,
    daemon: &Arc<Daemon>,
) -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let store = &daemon.store;
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return "no signal handlers";
    };
    loop {
        tokio::select! {
            _ = term.recv() => return "SIGTERM",
            _ = int.recv() => return "SIGINT",
            _ = hup.recv() => {
                // Its outcome is logged; a SIGHUP has nobody to answer.
                let d = daemon.clone();
                let _ = tokio::task::spawn_blocking(move || reload::reload(&d, "SIGHUP")).await;
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if executor.is_finished() {
                    return "relay executor ended";
                }
                if store.failure().is_some() {
                    return "storage failure";
                }
            }
        }
    }
}

/// Keeps [`Daemon::fleet_summary`] current: recomputed when the database changed (at most
/// every [`FLEET_VIEW_REFRESH_MS`], or the spacing a long pass asks for) and at least every
/// [`FLEET_VIEW_REFRESH_MAX_MS`].
async fn fleet_view(daemon: Arc<Daemon>, mut stop: tokio::sync::watch::Receiver<bool>) {
    if daemon.node.fleet().is_none() {
        return;
    }
    let mut seen = None;
    let mut last = Instant::now();
    loop {
        let generation = daemon.store.writer().generation();
        let due = last.elapsed() >= Duration::from_millis(FLEET_VIEW_REFRESH_MAX_MS);
        if seen != Some(generation) || due {
            seen = Some(generation);
            last = Instant::now();
            let d = daemon.clone();
            let computed = tokio::task::spawn_blocking(move || d.refresh_fleet_summary()).await;
            match computed {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "fleet view not computed"),
                Err(e) => tracing::warn!(error = %e, "fleet view not computed"),
            }
        }
        // Also after a pass `status` ran itself: its duration counts the same.
        let pause = daemon
            .fleet_summary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(FLEET_VIEW_REFRESH_MS, |s| {
                s.spacing_ms(FLEET_VIEW_REFRESH_MS)
            });
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
        }
    }
}

/// Expired segments go, certificate expiry is watched.
async fn housekeeping(daemon: Arc<Daemon>, mut stop: tokio::sync::watch::Receiver<bool>) {
    // Jumps of the wall clock are noticed by the relay's executor (the node's one detector);
    // the sweep below simply follows the new time.
    loop {
        let now = daemon.clock.now_ms();
        let store = daemon.store.clone();
        match tokio::task::spawn_blocking(move || store.sweep_expired(now)).await {
            Ok(Ok(gone)) if !gone.is_empty() => {
                tracing::info!(count = gone.len(), "expired segments evicted")
            }
            Ok(Err(e)) => tracing::error!(error = %e, "sweep of expired segments failed"),
            _ => {}
        }
        if let Some(left) = views::cert_expires_in_s(&daemon, now) {
            if left < CERT_EXPIRY_WARNING_S {
                tracing::warn!(
                    node_id = %daemon.cfg.node_id,
                    expires_in_days = left / 86_400,
                    "node certificate expires soon; issue a new one with `edged ca issue`"
                );
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(daemon.cfg.housekeeping_interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_says_what_it_waits_for() {
        let waits = |connections, sends, receives| ShutdownWaits {
            connections,
            sends,
            receives,
        };
        assert_eq!(waits(0, 0, 0).describe(), "closing 0 peer connections");
        assert_eq!(
            waits(3, 0, 1).describe(),
            "closing 3 peer connections, waiting for 1 transfer to checkpoint"
        );
        assert_eq!(
            waits(1, 2, 2).describe(),
            "closing 1 peer connection, cutting 2 sends, waiting for 2 transfers to checkpoint"
        );
    }

    #[test]
    fn a_long_fleet_pass_spaces_the_next_one() {
        let summary = |took_ms| FleetSummary {
            counts: Default::default(),
            roster: net::receipts::verdict::Roster::new(
                &[],
                &"node-1".parse().unwrap(),
                &[],
                std::iter::empty(),
            ),
            at_ms: 0,
            generation: 0,
            took_ms,
        };
        // A quick pass leaves the interval as it is...
        assert_eq!(
            summary(3).spacing_ms(FLEET_VIEW_REFRESH_MS),
            FLEET_VIEW_REFRESH_MS
        );
        // ...a long one keeps counting to a tenth of a core.
        assert_eq!(summary(400).spacing_ms(FLEET_VIEW_REFRESH_MS), 4_000);
        assert_eq!(summary(u64::MAX).spacing_ms(1), u64::MAX);
    }
}
