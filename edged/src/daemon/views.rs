//! What the control socket and the metrics endpoint show: plain JSON values built from the
//! store, the relay and the node. The CLI renders them as tables.

use serde_json::{Value, json};

use super::Daemon;

pub fn cert_expires_in_s(d: &Daemon, now_ms: u64) -> Option<i64> {
    d.cert_not_after_ms
        .map(|at| (at as i64 - now_ms as i64) / 1000)
}

/// Warns of the trust root's or a channel's expiry within [`ROOT_EXPIRY_WARNING_MS`], and says
/// once it has passed (freeze protection refuses content then).
pub fn trust_warning(trusted: &store::keys::TrustedPublishers, now_ms: u64) -> Option<String> {
    let (what, at) = trusted.next_expiry()?;
    let when = store::when::rfc3339_with_age(at, now_ms);
    if at <= now_ms {
        Some(format!(
            "{what} expired at {when}: new content is refused until a newer root is imported"
        ))
    } else if at - now_ms <= ROOT_EXPIRY_WARNING_MS {
        Some(format!(
            "{what} expires at {when}: import a newer root before then"
        ))
    } else {
        None
    }
}

/// How long before a root's or channel's expiry `edged status` warns: 7 days.
pub const ROOT_EXPIRY_WARNING_MS: u64 = 7 * 24 * 3600 * 1000;

pub fn status(d: &Daemon) -> Result<Value, anyhow::Error> {
    let now = d.clock.now_ms();
    let counts = d.store.segment_counts()?;
    let usage = d.store.usage();
    let peers = d.node.peers();
    let dead = d.relay.dead_letter_count()?;
    let jobs = d.relay.counters()?.jobs;
    let mut warnings = Vec::new();
    if let Some(left) = cert_expires_in_s(d, now) {
        if left < super::CERT_EXPIRY_WARNING_S {
            warnings.push(format!(
                "node certificate expires in {} days",
                left.max(0) / 86_400
            ));
        }
    }
    if let Some(relay::ClockJump { at_ms: at, jump_ms }) = d.relay.last_clock_jump() {
        warnings.push(format!(
            "wall clock jumped by {jump_ms} ms at {}",
            crate::output::format_ms(at)
        ));
    }
    if dead > 0 {
        warnings.push(format!("{dead} dead letter(s): see `edged dlq list`"));
    }
    let trusted = d.store.trusted();
    warnings.extend(trust_warning(&trusted, now));
    let fleet = fleet_summary_now(d).map(|f| {
        json!({
            "everywhere": f.counts.everywhere,
            "partial": f.counts.partial,
            "unknown": f.counts.unknown,
            "roster": f.roster.source,
            "roster_size": f.roster.members.len(),
            "computed_at_ms": f.at_ms,
        })
    });
    Ok(json!({
        "trust": match trusted.root() {
            Some(r) => format!("root version {}", r.version()),
            None => format!("fixed list of {} key(s)", trusted.len()),
        },
        "fleet": fleet,
        "node_id": d.cfg.node_id,
        "uptime_s": d.started.elapsed().as_secs(),
        "peers_connected": peers.iter().filter(|p| p.connected).count(),
        "peers_known": peers.len(),
        "segments_stored": counts.stored,
        "segments_propagated": counts.propagated,
        "segments_pending": counts.stored - counts.propagated,
        // One job, one state: `pending` is every job not ended (what `edged segments` sums
        // per segment), of which `in_flight` are being tried now (a transfer, or waiting for
        // the peer's connection) and `waiting` wait for their turn or a retry. All three from
        // one reading of the ledger, so they add up.
        "jobs_pending": jobs.pending + jobs.in_flight,
        "jobs_in_flight": jobs.in_flight,
        "jobs_waiting": jobs.pending,
        "bytes_used": usage.total(),
        "bytes_stored": usage.stored_bytes,
        "ceiling_bytes": d.cfg.store.ceiling_bytes,
        "dead_letters": dead,
        "cert_expires_in_s": cert_expires_in_s(d, now),
        "warnings": warnings,
        "scrub": scrub_status(d),
    }))
}

/// The background scrub's progress (see [`crate::scrub`]), with its `status` line.
fn scrub_status(d: &Daemon) -> Value {
    let p = d.scrub_progress().clone();
    json!({
        "line": p.line(),
        "bytes_per_sec": p.rate_bytes_per_sec,
        "position": p.position.map(|id| id.to_string()),
        "percent": p.percent(),
        "last_full_pass_ms": p.last_full_pass_ms,
        "bytes_checked": p.bytes_checked,
        "segments_checked": p.segments_checked,
        "quarantined": p.quarantined,
        "passes_completed": p.passes_completed,
    })
}

/// One stored segment with its propagation, as `edged segments` lists it.
pub fn segment(d: &Daemon, s: &store::SegmentInfo) -> Result<Value, anyhow::Error> {
    {
        let status = d.relay.status(&s.id)?;
        let (acked, pending, dead, refused, peers) = match &status {
            Some(st) => (
                st.tally.delivered,
                st.tally.pending,
                st.tally.dead,
                st.tally.refused,
                st.jobs
                    .iter()
                    .map(|j| {
                        json!({
                            "peer": j.peer.to_string(),
                            "state": j.state.as_str(),
                            "attempts": j.attempts,
                            "next_due_ms": j.next_due_ms,
                            "last_error": j.last_error,
                        })
                    })
                    .collect::<Vec<_>>(),
            ),
            None => (0, 0, 0, 0, Vec::new()),
        };
        Ok(json!({
            "id": s.id.to_string(),
            "name": s.row.name,
            "channel": s.row.channel,
            "bytes": s.row.file_len,
            "priority": s.row.priority,
            "condition": s.row.condition.to_string(),
            "source": s.row.source,
            "stored_at_ms": s.row.stored_at_ms,
            "propagated_at_ms": s.row.propagated_at_ms,
            "peers_acked": acked,
            "peers_pending": pending,
            "peers_dead": dead,
            "peers_refused": refused,
            "jobs": peers,
            "pinned_by": s.pins,
            "sequence": s.row.sequence,
            "superseded_by": d.store.superseded_by(&s.id)?.map(|id| id.to_string()),
            "delivery": crate::deliver::states(&d.store, &d.cfg.deliver, &s.id)
                .into_iter()
                .map(|(dir, row)| json!({ "dir": dir, "state": row.describe(), "file": row.file, "exit_status": row.exit_status }))
                .collect::<Vec<_>>(),
        }))
    }
}

pub fn peers(d: &Daemon) -> Value {
    Value::Array(
        d.node
            .peers()
            .into_iter()
            .map(|p| {
                json!({
                    "id": p.id.to_string(),
                    "addr": p.addr.to_string(),
                    "connected": p.connected,
                    "remote": p.remote.map(|r| r.to_string()),
                    "last_failure": p.last_failure.map(|f| f.to_string()),
                })
            })
            .collect(),
    )
}

/// One dead letter, as `edged dlq list` lists it.
pub fn dead_letter(dl: &relay::DeadLetter) -> Value {
    json!({
        "segment": dl.key.seg.to_string(),
        "peer": dl.key.peer.to_string(),
        "attempts": dl.attempts,
        "store_full_attempts": dl.store_full_attempts,
        "last_error": dl.last_error,
        "dead_at_ms": dl.dead_at_ms,
        "pin_release_at_ms": dl.pin_release_at_ms,
    })
}

fn fleet_summary(d: &Daemon) -> Option<super::FleetSummary> {
    d.fleet_summary
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// The fleet summary for `status`: the kept one, or a fresh one when the database changed
/// since it was computed and it is older than [`super::FLEET_VIEW_STATUS_AGE_MIN_MS`] or the
/// spacing its pass asks for ([`super::FleetSummary::spacing_ms`]) (an
/// operator asking right after a change sees it; a script polling status cannot make the
/// daemon walk the book more often than that).
fn fleet_summary_now(d: &Daemon) -> Option<super::FleetSummary> {
    let kept = fleet_summary(d);
    let now = d.clock.now_ms();
    let stale = kept.as_ref().is_none_or(|k| {
        k.generation != d.store.writer().generation()
            && now.saturating_sub(k.at_ms) >= k.spacing_ms(super::FLEET_VIEW_STATUS_AGE_MIN_MS)
    });
    if !stale {
        return kept;
    }
    match d.refresh_fleet_summary() {
        Ok(fresh) => fresh,
        Err(e) => {
            tracing::warn!(error = %e, "fleet view not computed");
            kept
        }
    }
}

pub fn metrics_snapshot(d: &Daemon) -> crate::metrics::Snapshot {
    let now = d.clock.now_ms();
    let counts = d.store.segment_counts().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "segment counts unavailable");
        Default::default()
    });
    let usage = d.store.usage();
    let peers = d.node.peers();
    let net = d.node.stats();
    let rc = d.relay.counters().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "relay counters unavailable");
        Default::default()
    });
    let c = &d.counters;
    use std::sync::atomic::Ordering::Relaxed;
    crate::metrics::Snapshot {
        node_id: d.cfg.node_id.clone(),
        uptime_s: d.started.elapsed().as_secs(),
        segments_stored: counts.stored,
        segments_propagated: counts.propagated,
        bytes_stored: usage.stored_bytes,
        ceiling_bytes: d.cfg.store.ceiling_bytes,
        bytes_reserved: usage.reserved_bytes,
        bytes_partial: usage.partial_bytes,
        peers_known: peers.len() as u64,
        peers_connected: peers.iter().filter(|p| p.connected).count() as u64,
        jobs_pending: rc.jobs.pending,
        jobs_in_flight: rc.jobs.in_flight,
        jobs_delivered: rc.jobs.delivered,
        jobs_refused: rc.jobs.refused,
        jobs_cancelled: rc.jobs.cancelled,
        jobs_dead: rc.jobs.dead,
        attempts_total: rc.totals.attempts_started,
        deliveries_total: rc.totals.deliveries,
        retries_total: rc.totals.retries_scheduled,
        dead_lettered_total: rc.totals.dead_lettered,
        bytes_sent_total: net.payload_bytes_sent,
        bytes_received_total: net.payload_bytes_received,
        segments_received_total: c.received.load(Relaxed),
        segments_stored_total: c.stored.load(Relaxed),
        segments_duplicate_total: c.duplicate.load(Relaxed),
        segments_rejected_total: c.rejected.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        cert_expires_in_s: cert_expires_in_s(d, now),
        net,
        fleet: d.node.fleet().map(|f| crate::metrics::FleetMetrics {
            counts: fleet_summary(d).map(|s| s.counts).unwrap_or_default(),
            stats: f.stats.snapshot(),
        }),
        scrub: {
            let p = d.scrub_progress();
            crate::metrics::ScrubMetrics {
                rate_bytes_per_sec: p.rate_bytes_per_sec,
                bytes_checked_total: p.bytes_checked,
                segments_checked_total: p.segments_checked,
                quarantined_total: p.quarantined,
                passes_total: p.passes_completed,
                last_full_pass_s: p.last_full_pass_ms.map(|ms| ms / 1000),
                pass_percent: p.percent(),
            }
        },
    }
}

#[cfg(test)]
mod trust_tests {
    use super::*;
    use store::keys::PublisherSecret;
    use store::root::{ALL_CHANNELS, PublisherGrant, RootDocument, SignedRoot};

    #[test]
    fn inv_38_status_warns_before_the_root_expires_and_says_when_it_has() {
        let r = PublisherSecret::from_seed([1; 32]);
        let now = 1_800_000_000_000;
        let doc = RootDocument {
            format_version: store::root::ROOT_FORMAT_VERSION,
            version: 3,
            created_at_ms: now - 1,
            expires_at_ms: Some(now + ROOT_EXPIRY_WARNING_MS),
            root_keys: vec![r.public()],
            root_threshold: 1,
            publishers: vec![PublisherGrant {
                key: r.public(),
                channels: vec![ALL_CHANNELS.into()],
            }],
            channels: vec![],
        };
        let mut root = SignedRoot::new(doc).unwrap();
        root.sign(&r).unwrap();
        let t = store::keys::TrustedPublishers::from_root(root);
        assert_eq!(trust_warning(&t, now - 1), None);
        assert!(trust_warning(&t, now).unwrap().contains("expires at"));
        assert!(
            trust_warning(&t, now + ROOT_EXPIRY_WARNING_MS)
                .unwrap()
                .contains("refused")
        );
        let fixed: store::keys::TrustedPublishers = [r.public()].into_iter().collect();
        assert_eq!(trust_warning(&fixed, now), None);
    }
}
