//! SIGHUP and `edged reload`: read `edge.toml` again and apply what [`crate::reload::plan`]
//! says can change live. An invalid file changes nothing; the error is logged and answered.

use std::collections::BTreeMap;

use anyhow::anyhow;
use serde::Serialize;

use super::Daemon;
use crate::config::Config;
use crate::exit::{CONFIG, Failure, STORAGE};
use crate::reload::{self, Plan};

/// What a reload did: the plan, in words too, and its effect on the relay jobs.
#[derive(Debug, Serialize)]
pub struct Applied {
    pub summary: String,
    pub plan: Plan,
    /// Pending jobs cancelled because their peer was removed.
    pub jobs_cancelled: usize,
    /// Jobs scheduled for added peers (one per stored segment each).
    pub jobs_scheduled: usize,
    /// `log_level` changed in the file but EDGED_LOG sets the filter: not applied.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub log_level_overridden: bool,
}

/// Reads the file again and applies it; `by` says who asked (for the log). Errors: the file is
/// invalid (CONFIG, nothing changed), or the ledger failed (STORAGE).
pub fn reload(d: &Daemon, by: &str) -> Result<Applied, Failure> {
    // One reload at a time: the second one compares with what the first put in force.
    let mut live = d.live_config();
    let path = live.path.clone();
    let new = match Config::load(&path) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(by, error = %e, "configuration not reloaded: the file is invalid; nothing changed");
            return Err(Failure::new(
                CONFIG,
                anyhow!("{e}; the daemon keeps the configuration it runs with"),
            ));
        }
    };
    let plan = reload::plan(&live, &new);
    let mut applied = Applied {
        summary: plan.describe(),
        plan,
        jobs_cancelled: 0,
        jobs_scheduled: 0,
        log_level_overridden: false,
    };
    let plan = &applied.plan;
    let peers_changed = !(plan.peers_added.is_empty()
        && plan.peers_removed.is_empty()
        && plan.peers_moved.is_empty());
    if peers_changed || !plan.relay.is_empty() {
        let mut relay_cfg = new.relay.clone();
        // Only a restart changes these (the plan says so).
        relay_cfg.node_id = live.relay.node_id.clone();
        relay_cfg.disk_mode = live.relay.disk_mode;
        let done = d
            .relay
            .reconfigure_blocking(relay_cfg, d.clock.now_ms())
            .map_err(|e| {
                tracing::error!(by, error = %e, "configuration reload failed in the relay ledger");
                Failure::new(STORAGE, anyhow!("the relay ledger failed: {e}"))
            })?;
        applied.jobs_cancelled = done.cancelled;
        applied.jobs_scheduled = done.scheduled;
    }
    if peers_changed {
        let known: BTreeMap<_, _> = new
            .net
            .known_peers
            .iter()
            .map(|(id, addr)| (id.clone(), *addr))
            .collect();
        d.node.set_known_peers(&known);
    }
    if !(plan.publishers_added.is_empty() && plan.publishers_removed.is_empty()) {
        d.store.set_trusted(new.store.trusted.clone());
    }
    if plan.log_level.is_some() {
        if d.log_env_override {
            applied.log_level_overridden = true;
        } else if let Err(e) = (d.log_filter)(&new.log_level) {
            // Validation parsed the same filter: this is the subscriber refusing it.
            tracing::warn!(by, error = %e, "log_level not changed");
        }
    }
    *live = reload::in_force(&live, &new);
    drop(live);
    tracing::info!(
        by,
        applied_live = applied.plan.changes_live(),
        jobs_cancelled = applied.jobs_cancelled,
        jobs_scheduled = applied.jobs_scheduled,
        "configuration reloaded: {}",
        applied.summary
    );
    if applied.log_level_overridden {
        tracing::warn!(
            by,
            "log_level changed in the file, but EDGED_LOG sets the log filter: not applied"
        );
    }
    if !applied.plan.needs_restart.is_empty() {
        tracing::warn!(
            by,
            keys = %applied.plan.needs_restart.join(", "),
            "changed keys need a restart to take effect: {}",
            applied.plan.needs_restart.join(", ")
        );
    }
    Ok(applied)
}
