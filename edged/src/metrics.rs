//! Prometheus metrics of the daemon: what it exposes ([`Snapshot`]), how it is written
//! ([`render`]), and the loopback-only HTTP endpoint that serves it ([`serve`]).
//!
//! # What is exposed
//!
//! Every name starts with `edged_` and ends with its unit (`_bytes`, `_seconds`); counters end
//! with `_total`. Gauges say how things are now (segments stored, jobs by state, peers
//! connected); counters only grow while the process runs (they restart at zero with it). The
//! counters reconcile (INV-26):
//!
//! ```text
//! edged_segments_received_total = edged_segments_stored_total
//!                               + edged_segments_duplicate_total
//!                               + sum(edged_segments_rejected_total{reason=…})
//! ```
//!
//! # Format
//!
//! The body is encoded by `prometheus-client`, i.e. OpenMetrics text 1.0. It is also valid
//! Prometheus text 0.0.4: its only OpenMetrics-specific lines (`# UNIT …`, `# EOF`) are
//! comments there, and no `info` or `stateset` type (unknown to 0.0.4) is used. It is served as
//! `application/openmetrics-text` to a scraper that asks for it in `Accept` (Prometheus does) and
//! as `text/plain; version=0.0.4` otherwise (`curl`).
//!
//! # The endpoint
//!
//! A deliberately small HTTP/1.1 responder on tokio rather than an HTTP stack: it answers one
//! `GET /metrics` per connection and closes it. The config refuses a non-loopback
//! `metrics_addr`, so only local processes reach it. Everything a client controls is bounded:
//! the request head ([`METRICS_REQUEST_HEAD_BYTES_MAX`]), the time to send it, measured from
//! the accept however slowly its bytes come ([`METRICS_REQUEST_TIMEOUT_MS`]), the time to take
//! the answer ([`METRICS_RESPONSE_TIMEOUT_MS`]), and the connections open at once
//! ([`METRICS_CONNECTIONS_MAX`]).
//!
//! Idle or slow clients cannot delay a scrape: the endpoint keeps accepting, and when a new
//! connection finds every slot taken it closes the oldest connection that has not yet sent a
//! complete request head. Only connections already being answered are never cut; they are
//! bounded by the response and drain timeouts, and a new connection waits for one of them only
//! when every slot is one. Garbage gets a 4xx and a closed connection, never a panic; the
//! snapshot is taken on a blocking thread (it may read the store), so a slow one never stalls
//! the runtime.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

/// Prefix of every metric name.
pub const METRIC_PREFIX: &str = "edged";
/// The one path served.
pub const METRICS_PATH: &str = "/metrics";
/// Largest request head (request line and headers) read, in bytes; a larger one gets 431.
pub const METRICS_REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// A client has this long from its accept to send its request head; then it gets 408 and is
/// disconnected.
pub const METRICS_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// A client has this long to take the whole response.
pub const METRICS_RESPONSE_TIMEOUT_MS: u64 = 10_000;
/// Connections open at once; at the cap a new one closes the oldest that has not sent its
/// request head yet.
pub const METRICS_CONNECTIONS_MAX: usize = 4;
/// After the response, bytes of an unread request body read and dropped before closing (so the
/// close does not reset the connection under the client's feet).
pub const METRICS_DRAIN_BYTES_MAX: usize = 64 * 1024;
/// Longest wait for the client to close after the response (it was told `Connection: close`).
pub const METRICS_DRAIN_TIMEOUT_MS: u64 = 1_000;
/// Pause after a failed `accept` (out of file descriptors, …) before the next one.
pub const METRICS_ACCEPT_RETRY_MS: u64 = 100;

/// `Content-Type` of the body for Prometheus text 0.0.4 scrapers and humans.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of the body when the scraper accepts OpenMetrics.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything the daemon exposes, gathered at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub node_id: String,
    pub uptime_s: u64,
    pub segments_stored: u64,
    pub segments_propagated: u64,
    pub bytes_stored: u64,
    pub ceiling_bytes: u64,
    pub bytes_reserved: u64,
    pub bytes_partial: u64,
    pub peers_known: u64,
    pub peers_connected: u64,
    pub jobs_pending: u64,
    pub jobs_in_flight: u64,
    pub jobs_delivered: u64,
    pub jobs_refused: u64,
    pub jobs_cancelled: u64,
    pub jobs_dead: u64,
    pub attempts_total: u64,
    pub deliveries_total: u64,
    pub retries_total: u64,
    pub dead_lettered_total: u64,
    pub bytes_sent_total: u64,
    pub bytes_received_total: u64,
    /// INV-26: received = stored + duplicate + rejected (all reasons).
    pub segments_received_total: u64,
    pub segments_stored_total: u64,
    pub segments_duplicate_total: u64,
    pub segments_rejected_total: BTreeMap<String, u64>, // by reason
    pub cert_expires_in_s: Option<i64>,
    /// The network layer's own counters since start.
    pub net: net::StatsSnapshot,
    /// Fleet receipts; `None` when they are off.
    pub fleet: Option<FleetMetrics>,
    /// The background scrub (see [`crate::scrub`]).
    pub scrub: ScrubMetrics,
}

/// The background scrub's rate and progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubMetrics {
    /// `[store] scrub_bytes_per_sec`; 0: off.
    pub rate_bytes_per_sec: u64,
    pub bytes_checked_total: u64,
    pub segments_checked_total: u64,
    pub quarantined_total: u64,
    pub passes_total: u64,
    /// When the last full pass ended, in seconds since 1970; `None`: none yet.
    pub last_full_pass_s: Option<u64>,
    /// How far the current pass is.
    pub pass_percent: u64,
}

/// What the fleet view says and what receipts cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetMetrics {
    /// Segments by verdict (the last computed view).
    pub counts: crate::fleetview::Counts,
    pub stats: net::receipts::gossip::FleetStatsSnapshot,
}

// ---------------------------------------------------------------------------------------------
// Rendering.

/// The Prometheus text exposition of `snap` (see the module docs for the format).
pub fn render(snap: &Snapshot) -> String {
    let mut registry = Registry::with_prefix(METRIC_PREFIX);
    registry.register_collector(Box::new(Exposition::of(snap)));
    let mut out = String::new();
    // Writing into a String cannot fail and every value here encodes; should the encoder still
    // refuse something, serve what was written rather than nothing.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "encoding metrics failed; the exposition is incomplete");
    }
    out
}

/// One metric family, in the order it is written. Built only through the typed constructors
/// of [`Exposition`], so a counter always carries [`Value::Counter`] values.
#[derive(Debug)]
struct Family {
    /// Without prefix, unit or `_total`: the encoder appends those.
    name: &'static str,
    /// Without the final full stop (appended when encoded), and without `\`, `"` or a line
    /// break, which HELP text would have to escape.
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    samples: Samples,
}

#[derive(Debug)]
enum Samples {
    One(Value),
    /// One sample per label set, in this order (none is fine: the family is still described).
    Labelled(Vec<(Vec<(&'static str, String)>, Value)>),
}

#[derive(Debug, Clone, Copy)]
enum Value {
    Counter(u64),
    Gauge(i64),
}

impl Value {
    fn encode(self, encoder: MetricEncoder) -> fmt::Result {
        match self {
            Value::Counter(v) => ConstCounter::new(v).encode(encoder),
            Value::Gauge(v) => ConstGauge::new(v).encode(encoder),
        }
    }
}

/// Gauges are signed in the exposition; a u64 beyond i64::MAX (8 EiB, 292 billion years) is
/// shown as i64::MAX.
fn gauge_value(v: u64) -> Value {
    Value::Gauge(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Every family of one snapshot, ready to encode.
#[derive(Debug, Default)]
struct Exposition(Vec<Family>);

impl Exposition {
    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        unit: Option<Unit>,
        kind: MetricType,
        samples: Samples,
    ) {
        self.0.push(Family {
            name,
            help,
            unit,
            kind,
            samples,
        });
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, unit: Option<Unit>, v: u64) {
        self.push(
            name,
            help,
            unit,
            MetricType::Gauge,
            Samples::One(gauge_value(v)),
        );
    }

    fn signed_gauge(&mut self, name: &'static str, help: &'static str, unit: Option<Unit>, v: i64) {
        self.push(
            name,
            help,
            unit,
            MetricType::Gauge,
            Samples::One(Value::Gauge(v)),
        );
    }

    fn counter(&mut self, name: &'static str, help: &'static str, unit: Option<Unit>, v: u64) {
        self.push(
            name,
            help,
            unit,
            MetricType::Counter,
            Samples::One(Value::Counter(v)),
        );
    }

    fn gauge_by(
        &mut self,
        name: &'static str,
        help: &'static str,
        samples: Vec<(Vec<(&'static str, String)>, u64)>,
    ) {
        let samples = samples
            .into_iter()
            .map(|(labels, v)| (labels, gauge_value(v)))
            .collect();
        self.push(
            name,
            help,
            None,
            MetricType::Gauge,
            Samples::Labelled(samples),
        );
    }

    fn counter_by(
        &mut self,
        name: &'static str,
        help: &'static str,
        samples: Vec<(Vec<(&'static str, String)>, u64)>,
    ) {
        let samples = samples
            .into_iter()
            .map(|(labels, v)| (labels, Value::Counter(v)))
            .collect();
        self.push(
            name,
            help,
            None,
            MetricType::Counter,
            Samples::Labelled(samples),
        );
    }

    fn of(s: &Snapshot) -> Exposition {
        let mut e = Exposition::default();
        e.gauge_by(
            "node_info",
            "This node: its id (the DNS name in its certificate) and the edged version; always 1",
            vec![(
                vec![
                    ("node_id", s.node_id.clone()),
                    ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ],
                1,
            )],
        );
        e.gauge(
            "uptime",
            "Time since the daemon started",
            Some(Unit::Seconds),
            s.uptime_s,
        );
        if let Some(expires_in) = s.cert_expires_in_s {
            e.signed_gauge(
                "node_cert_expires_in",
                "Time until this node's certificate expires (negative once expired: peers then refuse it)",
                Some(Unit::Seconds),
                expires_in,
            );
        }

        // The store, now.
        e.gauge(
            "store_segments",
            "Segments stored (complete and verified)",
            None,
            s.segments_stored,
        );
        e.gauge(
            "store_segments_propagated",
            "Stored segments whose propagation condition holds",
            None,
            s.segments_propagated,
        );
        e.gauge(
            "store_used",
            "Bytes of stored segments",
            Some(Unit::Bytes),
            s.bytes_stored,
        );
        e.gauge(
            "store_reserved",
            "Bytes reserved for ingests in flight, counted against the ceiling (INV-06)",
            Some(Unit::Bytes),
            s.bytes_reserved,
        );
        e.gauge(
            "store_partial",
            "Bytes of partial segments kept for resumed transfers",
            Some(Unit::Bytes),
            s.bytes_partial,
        );
        e.gauge(
            "store_ceiling",
            "Configured store ceiling (store.ceiling_bytes)",
            Some(Unit::Bytes),
            s.ceiling_bytes,
        );

        // The background scrub.
        e.gauge(
            "store_scrub_rate_bytes_per_second",
            "Configured background scrub rate (store.scrub_bytes_per_sec); 0 is off",
            None,
            s.scrub.rate_bytes_per_sec,
        );
        e.counter(
            "store_scrub_checked",
            "Bytes of stored segments the background scrub read and verified",
            Some(Unit::Bytes),
            s.scrub.bytes_checked_total,
        );
        e.counter(
            "store_scrub_segments_checked",
            "Stored segments the background scrub verified",
            None,
            s.scrub.segments_checked_total,
        );
        e.counter(
            "store_scrub_quarantined",
            "Stored segments the background scrub found corrupt and quarantined",
            None,
            s.scrub.quarantined_total,
        );
        e.counter(
            "store_scrub_passes",
            "Complete passes of the background scrub over the store",
            None,
            s.scrub.passes_total,
        );
        e.gauge(
            "store_scrub_pass_percent",
            "How far the background scrub's current pass is, in percent of the id space",
            None,
            s.scrub.pass_percent,
        );
        if let Some(at) = s.scrub.last_full_pass_s {
            e.gauge(
                "store_scrub_last_full_pass_timestamp",
                "When the background scrub last completed a pass, in seconds since 1970",
                Some(Unit::Seconds),
                at,
            );
        }

        // Peers and relay jobs, now.
        e.gauge(
            "peers_known",
            "Peers configured in known_peers",
            None,
            s.peers_known,
        );
        e.gauge(
            "peers_connected",
            "Known peers with an established connection",
            None,
            s.peers_connected,
        );
        let state = |name: &str, v: u64| (vec![("state", name.to_owned())], v);
        e.gauge_by(
            "relay_jobs",
            "Relay jobs (one per segment and peer) by state",
            vec![
                state("pending", s.jobs_pending),
                state("in_flight", s.jobs_in_flight),
                state("delivered", s.jobs_delivered),
                state("refused", s.jobs_refused),
                state("cancelled", s.jobs_cancelled),
                state("dead", s.jobs_dead),
            ],
        );

        // Relay activity since start.
        e.counter(
            "relay_attempts",
            "Transfer attempts started by the relay",
            None,
            s.attempts_total,
        );
        e.counter(
            "relay_deliveries",
            "Transfer attempts that delivered the segment",
            None,
            s.deliveries_total,
        );
        e.counter(
            "relay_retries",
            "Retries scheduled after a failed attempt",
            None,
            s.retries_total,
        );
        e.counter(
            "relay_dead_lettered",
            "Jobs that exhausted their attempts and became dead letters",
            None,
            s.dead_lettered_total,
        );
        e.counter(
            "payload_sent",
            "Segment payload bytes sent to peers",
            Some(Unit::Bytes),
            s.bytes_sent_total,
        );
        e.counter(
            "payload_received",
            "Segment payload bytes received from peers",
            Some(Unit::Bytes),
            s.bytes_received_total,
        );

        // Segments offered to this node since start (INV-26: received = stored + duplicate +
        // rejected).
        e.counter(
            "segments_received",
            "Segments that reached this node (from peers and imports); equals stored + duplicate + rejected",
            None,
            s.segments_received_total,
        );
        e.counter(
            "segments_stored",
            "Received segments stored",
            None,
            s.segments_stored_total,
        );
        e.counter(
            "segments_duplicate",
            "Received segments already held (or tombstoned), not stored again",
            None,
            s.segments_duplicate_total,
        );
        e.counter_by(
            "segments_rejected",
            "Received segments rejected, by reason",
            s.segments_rejected_total
                .iter()
                .map(|(reason, n)| (vec![("reason", reason.clone())], *n))
                .collect(),
        );
        e.net(&s.net);
        if let Some(f) = &s.fleet {
            e.fleet(f);
        }
        e
    }

    /// The fleet view and the receipts behind it.
    fn fleet(&mut self, f: &FleetMetrics) {
        self.gauge_by(
            "fleet_segments",
            "Segments by fleet verdict: held by every roster member, by some, or unknown (a member that lacks it has been silent)",
            [
                ("everywhere", f.counts.everywhere),
                ("partial", f.counts.partial),
                ("unknown", f.counts.unknown),
            ]
            .into_iter()
            .map(|(v, n)| (vec![("verdict", v.to_owned())], n))
            .collect(),
        );
        let st = &f.stats;
        self.counter(
            "fleet_receipts_made",
            "Receipts this node made about itself",
            None,
            st.made,
        );
        self.counter(
            "fleet_receipts_merged",
            "Receipts of other nodes merged (new or newer than those held)",
            None,
            st.merged,
        );
        self.counter(
            "fleet_receipts_refused",
            "Receipt batches refused: malformed, bad certificate or signature, out of order",
            None,
            st.refused,
        );
        self.counter(
            "fleet_receipts_refused_nodes",
            "Receipt batches refused because the book holds fleet nodes_max nodes",
            None,
            st.refused_nodes,
        );
        self.counter(
            "fleet_receipts_forgotten",
            "Old receipts forgotten to stay within fleet receipts_per_node_max",
            None,
            st.forgotten,
        );
        self.counter(
            "fleet_gossip_sent",
            "Receipt gossip bytes sent (frames, both roles)",
            Some(Unit::Bytes),
            st.bytes_sent,
        );
        self.counter(
            "fleet_gossip_received",
            "Receipt gossip bytes received (frames, both roles)",
            Some(Unit::Bytes),
            st.bytes_received,
        );
    }

    /// What peers and strangers made the network layer do, and what it refused them.
    fn net(&mut self, n: &net::StatsSnapshot) {
        let reason = |name: &str, v: u64| (vec![("reason", name.to_owned())], v);
        self.counter(
            "net_streams_failed",
            "Streams this node ended because of the peer (bad frame, stall, length, protocol)",
            None,
            n.streams_failed,
        );
        self.counter(
            "net_transfers_resumed",
            "Transfers sent from an offset above 0 (the peer kept a partial)",
            None,
            n.transfers_resumed,
        );
        self.counter(
            "net_transfers_stalled",
            "Transfers cut for falling below the minimum rate over a window",
            None,
            n.transfers_stalled,
        );
        self.counter(
            "net_transfers_preempted",
            "Receptions handed over from a slow sender to another one offering the same segment",
            None,
            n.transfers_preempted,
        );
        self.counter(
            "net_connections_closed",
            "Connections closed as duplicates or over the per-peer cap",
            None,
            n.connections_closed,
        );
        self.counter(
            "net_handshakes_retried",
            "Inbound handshakes answered with a QUIC Retry to validate their address first",
            None,
            n.handshakes_retried,
        );
        self.counter_by(
            "net_handshakes_refused",
            "Inbound handshakes refused before or during TLS, by reason",
            vec![
                reason("cap", n.handshakes_refused_cap),
                reason("addr_cap", n.handshakes_refused_addr_cap),
                reason("timed_out", n.handshakes_timed_out),
            ],
        );
        self.counter(
            "net_datagrams_dropped_unknown",
            "Datagrams dropped unread because their source is no configured peer's address",
            None,
            n.datagrams_dropped_unknown,
        );
        self.counter(
            "net_datagrams_blocked_send",
            "Datagrams this node tried to send to an address that is no peer's; dropped (INV-27: stays 0)",
            None,
            n.datagrams_blocked_send,
        );
        self.counter(
            "net_catchup_pulls",
            "Segments requested from peers by catch-up",
            None,
            n.catchup_pulls,
        );
        self.counter(
            "net_catchup_rounds_cut",
            "Catch-up rounds that ended at one of their bounds (pulls, pages, wasted pulls)",
            None,
            n.catchup_rounds_cut,
        );
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for family in &self.0 {
            // HELP text ends with a full stop, as prometheus-client's own registrations do.
            let help = format!("{}.", family.help);
            let mut metric =
                encoder.encode_descriptor(family.name, &help, family.unit.as_ref(), family.kind)?;
            match &family.samples {
                Samples::One(value) => value.encode(metric)?,
                Samples::Labelled(samples) => {
                    for (labels, value) in samples {
                        value.encode(metric.encode_family(labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Serving.

/// Serves [`render`]`(source())` on `GET /metrics` until `shutdown` becomes true (or its sender
/// is dropped), then stops accepting, ends the connections in progress and returns `Ok`.
/// Failed `accept`s are logged and retried after [`METRICS_ACCEPT_RETRY_MS`]; nothing a client
/// sends ends the server.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn Fn() -> Snapshot + Send + Sync>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_with(listener, source, shutdown, Limits::default()).await
}

/// The endpoint's bounds; tests shorten them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    connections_max: usize,
    request_head_bytes_max: usize,
    request_timeout: Duration,
    response_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_max: METRICS_CONNECTIONS_MAX,
            request_head_bytes_max: METRICS_REQUEST_HEAD_BYTES_MAX,
            request_timeout: Duration::from_millis(METRICS_REQUEST_TIMEOUT_MS),
            response_timeout: Duration::from_millis(METRICS_RESPONSE_TIMEOUT_MS),
        }
    }
}

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    // An error means the sender is gone: the daemon is going away, so stop as well.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn serve_with(
    listener: TcpListener,
    source: Arc<dyn Fn() -> Snapshot + Send + Sync>,
    shutdown: watch::Receiver<bool>,
    limits: Limits,
) -> std::io::Result<()> {
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    let open = Arc::new(Open::default());
    let mut connections = JoinSet::new();
    'serve: loop {
        // Reap finished connections so the set does not grow with the ones already gone.
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::select! {
                    () = &mut stop => break,
                    () = tokio::time::sleep(Duration::from_millis(METRICS_ACCEPT_RETRY_MS)) => {}
                }
                continue;
            }
        };
        // Make room: shed the oldest connection still sending its head; if every one is being
        // answered, wait for one to end (bounded by the response and drain timeouts).
        while open.len() >= limits.connections_max {
            if open.shed_oldest_reading() {
                continue;
            }
            tokio::select! {
                biased;
                () = &mut stop => break 'serve,
                _ = connections.join_next() => {}
            }
        }
        let source = source.clone();
        // Registered under the lock, so the handler cannot mark or remove itself before it is
        // in the table.
        let mut table = open.lock();
        let seq = table.next;
        table.next += 1;
        let guard = Leave {
            open: open.clone(),
            seq,
        };
        let abort = connections.spawn(async move {
            let guard = guard;
            handle(stream, source, limits, &guard).await;
            tracing::trace!(%peer, "metrics connection closed");
        });
        table.live.insert(
            seq,
            Slot {
                accepted: Instant::now(),
                head_done: false,
                abort,
            },
        );
    }
    connections.shutdown().await;
    Ok(())
}

/// The connections open now, in accept order.
#[derive(Debug, Default)]
struct Open(Mutex<Table>);

#[derive(Debug, Default)]
struct Table {
    next: u64,
    live: BTreeMap<u64, Slot>,
}

#[derive(Debug)]
struct Slot {
    accepted: Instant,
    /// The request head is complete: the connection is being answered and is not shed.
    head_done: bool,
    abort: AbortHandle,
}

impl Open {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Closes the oldest connection that has not completed its request head; false if there is
    /// none.
    fn shed_oldest_reading(&self) -> bool {
        let mut table = self.lock();
        let oldest = table
            .live
            .iter()
            .filter(|(_, s)| !s.head_done)
            .min_by_key(|(seq, s)| (s.accepted, **seq))
            .map(|(seq, _)| *seq);
        match oldest.and_then(|seq| table.live.remove(&seq)) {
            Some(slot) => {
                slot.abort.abort();
                tracing::debug!(
                    "metrics endpoint: every slot taken; closed the oldest connection still sending its request"
                );
                true
            }
            None => false,
        }
    }
}

/// A connection's place in [`Open`]: marks its head complete, and leaves when the handler ends
/// however it ends (finished, panicked or aborted).
struct Leave {
    open: Arc<Open>,
    seq: u64,
}

impl Leave {
    fn head_done(&self) {
        if let Some(slot) = self.open.lock().live.get_mut(&self.seq) {
            slot.head_done = true;
        }
    }
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.open.lock().live.remove(&self.seq);
    }
}

/// What reading a request head gave.
enum Head {
    /// The head, up to and including its blank line.
    Complete(Vec<u8>),
    /// No blank line within the bound.
    TooLarge,
    /// The client closed first, after sending this many bytes.
    Closed(usize),
}

/// One connection: read the head (by its deadline from the accept), answer, close.
async fn handle(
    mut stream: TcpStream,
    source: Arc<dyn Fn() -> Snapshot + Send + Sync>,
    limits: Limits,
    slot: &Leave,
) {
    let head = tokio::time::timeout(
        limits.request_timeout,
        read_head(&mut stream, limits.request_head_bytes_max),
    )
    .await;
    slot.head_done();
    let response = match head {
        Err(_elapsed) => Response::error(408, "Request Timeout"),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "metrics request: read failed");
            return;
        }
        Ok(Ok(Head::Closed(0))) => return,
        Ok(Ok(Head::Closed(_))) => Response::error(400, "Bad Request"),
        Ok(Ok(Head::TooLarge)) => Response::error(431, "Request Header Fields Too Large"),
        Ok(Ok(Head::Complete(head))) => respond(&head, source).await,
    };
    let written = tokio::time::timeout(limits.response_timeout, async {
        stream.write_all(&response.into_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    match written {
        Ok(Ok(())) => {
            // Whatever happens here, the answer is out; the close follows either way.
            let _ = tokio::time::timeout(
                Duration::from_millis(METRICS_DRAIN_TIMEOUT_MS),
                drain(&mut stream),
            )
            .await;
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics response: write failed"),
        Err(_elapsed) => tracing::debug!("metrics response: client too slow, disconnected"),
    }
}

/// Reads until the blank line that ends the head, at most `max` bytes.
async fn read_head(stream: &mut TcpStream, max: usize) -> std::io::Result<Head> {
    let mut buf = vec![0u8; max];
    let mut len = 0;
    loop {
        if len == max {
            return Ok(Head::TooLarge);
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(Head::Closed(len));
        }
        // Only the new bytes (and the three before them) can complete the terminator.
        let from = len.saturating_sub(3);
        len += n;
        if let Some(end) = head_end(&buf[from..len]) {
            buf.truncate(from + end);
            return Ok(Head::Complete(buf));
        }
    }
}

/// Where the head ends in `bytes` (just past `\r\n\r\n`, or a lenient `\n\n`).
fn head_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|i| {
        let rest = &bytes[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// After the response: drop what the client may still send (a body, a pipelined request), so
/// closing does not reset the connection before the client read the answer. Bounded.
async fn drain(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut sink = [0u8; 4096];
    let mut total = 0;
    while total < METRICS_DRAIN_BYTES_MAX {
        match stream.read(&mut sink).await? {
            0 => break,
            n => total += n,
        }
    }
    Ok(())
}

/// The answer to a complete request head.
async fn respond(head: &[u8], source: Arc<dyn Fn() -> Snapshot + Send + Sync>) -> Response {
    let request = match Request::parse(head) {
        Ok(request) => request,
        Err(why) => {
            tracing::debug!(why, "metrics request: malformed");
            return Response::error(400, "Bad Request");
        }
    };
    if request.method != "GET" {
        let mut response = Response::error(405, "Method Not Allowed");
        response.allow_get = true;
        return response;
    }
    if request.path != METRICS_PATH {
        return Response::error(404, "Not Found");
    }
    // The source may read the store: keep it off the runtime's worker threads. A panic in it
    // is this scrape's 500, not the server's end.
    match tokio::task::spawn_blocking(move || render(&source())).await {
        Ok(body) => Response {
            status: 200,
            reason: "OK",
            content_type: if request.accepts_openmetrics {
                CONTENT_TYPE_OPENMETRICS
            } else {
                CONTENT_TYPE_TEXT
            },
            allow_get: false,
            body,
        },
        Err(e) => {
            tracing::error!(error = %e, "metrics snapshot failed");
            Response::error(500, "Internal Server Error")
        }
    }
}

/// The parts of a request the endpoint looks at.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    /// The target without its query.
    path: &'a str,
    accepts_openmetrics: bool,
}

impl<'a> Request<'a> {
    fn parse(head: &'a [u8]) -> Result<Request<'a>, &'static str> {
        let text = std::str::from_utf8(head).map_err(|_| "not UTF-8")?;
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let request_line = lines.next().ok_or("empty")?;
        let mut parts = request_line.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("request line is not `METHOD TARGET VERSION`");
        };
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err("bad method");
        }
        if !target.starts_with('/') {
            return Err("target is not a path");
        }
        if !version.starts_with("HTTP/1.") {
            return Err("not HTTP/1.x");
        }
        let path = target.split_once('?').map_or(target, |(path, _query)| path);
        let mut accepts_openmetrics = false;
        for line in lines.take_while(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').ok_or("header line without ':'")?;
            if name.trim().eq_ignore_ascii_case("accept")
                && value.contains("application/openmetrics-text")
            {
                accepts_openmetrics = true;
            }
        }
        Ok(Request {
            method,
            path,
            accepts_openmetrics,
        })
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    /// Adds `Allow: GET` (405).
    allow_get: bool,
    body: String,
}

impl Response {
    fn error(status: u16, reason: &'static str) -> Response {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            allow_get: false,
            body: format!("{status} {reason}\n"),
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        let allow = if self.allow_get { "Allow: GET\r\n" } else { "" };
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len(),
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field set, each to a different value, so a value found proves which field it
    /// came from.
    fn full() -> Snapshot {
        Snapshot {
            node_id: "node-7".into(),
            uptime_s: 101,
            segments_stored: 102,
            segments_propagated: 103,
            bytes_stored: 104,
            ceiling_bytes: 105,
            bytes_reserved: 106,
            bytes_partial: 107,
            peers_known: 108,
            peers_connected: 109,
            jobs_pending: 110,
            jobs_in_flight: 111,
            jobs_delivered: 112,
            jobs_refused: 113,
            jobs_cancelled: 114,
            jobs_dead: 115,
            attempts_total: 116,
            deliveries_total: 117,
            retries_total: 118,
            dead_lettered_total: 119,
            bytes_sent_total: 120,
            bytes_received_total: 121,
            segments_received_total: 130,
            segments_stored_total: 122,
            segments_duplicate_total: 4,
            segments_rejected_total: [("bad_signature".to_owned(), 3), ("expired".to_owned(), 1)]
                .into(),
            cert_expires_in_s: Some(-42),
            net: net::StatsSnapshot {
                streams_failed: 140,
                transfers_resumed: 141,
                transfers_stalled: 142,
                transfers_preempted: 143,
                connections_closed: 144,
                handshakes_retried: 145,
                handshakes_refused_cap: 146,
                handshakes_refused_addr_cap: 147,
                handshakes_timed_out: 148,
                datagrams_dropped_unknown: 149,
                datagrams_blocked_send: 150,
                catchup_pulls: 151,
                catchup_rounds_cut: 152,
                ..Default::default()
            },
            fleet: Some(FleetMetrics {
                counts: crate::fleetview::Counts {
                    everywhere: 160,
                    partial: 161,
                    unknown: 162,
                },
                stats: net::receipts::gossip::FleetStatsSnapshot {
                    made: 163,
                    merged: 164,
                    refused: 165,
                    refused_nodes: 166,
                    forgotten: 167,
                    bytes_sent: 168,
                    bytes_received: 169,
                    rounds: 0,
                    rounds_in_sync: 0,
                },
            }),
            scrub: ScrubMetrics {
                rate_bytes_per_sec: 170,
                bytes_checked_total: 171,
                segments_checked_total: 172,
                quarantined_total: 173,
                passes_total: 174,
                last_full_pass_s: Some(175),
                pass_percent: 76,
            },
        }
    }

    /// Parses an exposition as a Prometheus text 0.0.4 reader would, checking its shape on the
    /// way: `# HELP`/`# TYPE` come before their samples; every other `#` line is `# UNIT` or
    /// `# EOF`; every sample line is `name[{labels}] value`. Returns series → value.
    fn parse(text: &str) -> BTreeMap<String, i64> {
        let mut series = BTreeMap::new();
        let mut typed = BTreeMap::new();
        assert!(text.ends_with("# EOF\n"), "no EOF marker:\n{text}");
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                let mut words = comment.splitn(3, ' ');
                let (kind, name) = (words.next().unwrap(), words.next().unwrap_or(""));
                match kind {
                    "HELP" => assert!(words.next().is_some_and(|h| h.ends_with('.')), "{line}"),
                    "TYPE" => {
                        let t = words.next().unwrap();
                        assert!(
                            ["counter", "gauge"].contains(&t),
                            "type unknown to 0.0.4: {line}"
                        );
                        assert!(
                            typed.insert(name.to_owned(), t.to_owned()).is_none(),
                            "{line}"
                        );
                    }
                    "UNIT" => {}
                    "EOF" => {}
                    _ => panic!("unexpected comment {line}"),
                }
                continue;
            }
            let (name_labels, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            let name = name_labels.split('{').next().unwrap();
            assert!(name.starts_with("edged_"), "{line}");
            let family = typed
                .iter()
                .find(|(f, t)| {
                    name == f.as_str() || (t.as_str() == "counter" && name == format!("{f}_total"))
                })
                .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
            if family.1 == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
            let value: i64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            assert!(
                series.insert(name_labels.to_owned(), value).is_none(),
                "duplicate {line}"
            );
        }
        series
    }

    #[test]
    fn render_shows_every_metric_with_its_value() {
        let text = render(&full());
        let series = parse(&text);
        let version = env!("CARGO_PKG_VERSION");
        let node_info = format!("edged_node_info{{node_id=\"node-7\",version=\"{version}\"}}");
        let expected: &[(&str, i64)] = &[
            (&node_info, 1),
            ("edged_uptime_seconds", 101),
            ("edged_node_cert_expires_in_seconds", -42),
            ("edged_store_segments", 102),
            ("edged_store_segments_propagated", 103),
            ("edged_store_used_bytes", 104),
            ("edged_store_ceiling_bytes", 105),
            ("edged_store_reserved_bytes", 106),
            ("edged_store_partial_bytes", 107),
            ("edged_peers_known", 108),
            ("edged_peers_connected", 109),
            ("edged_relay_jobs{state=\"pending\"}", 110),
            ("edged_relay_jobs{state=\"in_flight\"}", 111),
            ("edged_relay_jobs{state=\"delivered\"}", 112),
            ("edged_relay_jobs{state=\"refused\"}", 113),
            ("edged_relay_jobs{state=\"cancelled\"}", 114),
            ("edged_relay_jobs{state=\"dead\"}", 115),
            ("edged_relay_attempts_total", 116),
            ("edged_relay_deliveries_total", 117),
            ("edged_relay_retries_total", 118),
            ("edged_relay_dead_lettered_total", 119),
            ("edged_payload_sent_bytes_total", 120),
            ("edged_payload_received_bytes_total", 121),
            ("edged_segments_received_total", 130),
            ("edged_segments_stored_total", 122),
            ("edged_segments_duplicate_total", 4),
            ("edged_segments_rejected_total{reason=\"bad_signature\"}", 3),
            ("edged_segments_rejected_total{reason=\"expired\"}", 1),
            ("edged_net_streams_failed_total", 140),
            ("edged_net_transfers_resumed_total", 141),
            ("edged_net_transfers_stalled_total", 142),
            ("edged_net_transfers_preempted_total", 143),
            ("edged_net_connections_closed_total", 144),
            ("edged_net_handshakes_retried_total", 145),
            ("edged_net_handshakes_refused_total{reason=\"cap\"}", 146),
            (
                "edged_net_handshakes_refused_total{reason=\"addr_cap\"}",
                147,
            ),
            (
                "edged_net_handshakes_refused_total{reason=\"timed_out\"}",
                148,
            ),
            ("edged_net_datagrams_dropped_unknown_total", 149),
            ("edged_net_datagrams_blocked_send_total", 150),
            ("edged_net_catchup_pulls_total", 151),
            ("edged_net_catchup_rounds_cut_total", 152),
            ("edged_fleet_segments{verdict=\"everywhere\"}", 160),
            ("edged_fleet_segments{verdict=\"partial\"}", 161),
            ("edged_fleet_segments{verdict=\"unknown\"}", 162),
            ("edged_fleet_receipts_made_total", 163),
            ("edged_fleet_receipts_merged_total", 164),
            ("edged_fleet_receipts_refused_total", 165),
            ("edged_fleet_receipts_refused_nodes_total", 166),
            ("edged_fleet_receipts_forgotten_total", 167),
            ("edged_fleet_gossip_sent_bytes_total", 168),
            ("edged_fleet_gossip_received_bytes_total", 169),
            ("edged_store_scrub_rate_bytes_per_second", 170),
            ("edged_store_scrub_checked_bytes_total", 171),
            ("edged_store_scrub_segments_checked_total", 172),
            ("edged_store_scrub_quarantined_total", 173),
            ("edged_store_scrub_passes_total", 174),
            ("edged_store_scrub_last_full_pass_timestamp_seconds", 175),
            ("edged_store_scrub_pass_percent", 76),
        ];
        for (name, value) in expected {
            assert_eq!(series.get(*name), Some(value), "{name} in\n{text}");
        }
        assert_eq!(series.len(), expected.len(), "unexpected series in\n{text}");
        // Units are declared, and each family is described.
        assert!(
            text.contains("# UNIT edged_store_used_bytes bytes\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE edged_segments_rejected counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP edged_relay_jobs Relay jobs"),
            "{text}"
        );
    }

    #[test]
    fn render_omits_an_unknown_cert_expiry_and_describes_empty_families() {
        let text = render(&Snapshot::default());
        let series = parse(&text);
        assert!(!text.contains("cert_expires"), "{text}");
        assert_eq!(series.get("edged_segments_received_total"), Some(&0));
        // No rejection yet: the family is described, with no sample.
        assert!(
            text.contains("# TYPE edged_segments_rejected counter\n"),
            "{text}"
        );
        assert!(!text.contains("edged_segments_rejected_total"), "{text}");
        // Values beyond i64 saturate instead of wrapping.
        let big = Snapshot {
            bytes_stored: u64::MAX,
            attempts_total: u64::MAX,
            ..Snapshot::default()
        };
        let text = render(&big);
        assert!(
            text.contains(&format!("edged_store_used_bytes {}\n", i64::MAX)),
            "{text}"
        );
        assert!(
            text.contains(&format!("edged_relay_attempts_total {}\n", u64::MAX)),
            "{text}"
        );
    }

    #[test]
    fn help_texts_need_no_escaping() {
        for family in Exposition::of(&full()).0 {
            assert!(
                !family.help.is_empty() && !family.help.ends_with('.'),
                "{}",
                family.name
            );
            assert!(!family.help.contains(['\\', '"', '\n']), "{}", family.name);
        }
    }

    #[test]
    fn render_escapes_label_values() {
        let mut snap = Snapshot::default();
        snap.segments_rejected_total
            .insert("we\"ird\\reason\n".into(), 1);
        let text = render(&snap);
        assert!(
            text.contains(r#"edged_segments_rejected_total{reason="we\"ird\\reason\n"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn inv_26_received_equals_stored_plus_duplicate_plus_rejected_in_the_exposition() {
        let series = parse(&render(&full()));
        let get = |name: &str| series[name];
        let rejected: i64 = series
            .iter()
            .filter(|(name, _)| name.starts_with("edged_segments_rejected_total{"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(rejected, 4);
        assert_eq!(
            get("edged_segments_received_total"),
            get("edged_segments_stored_total") + get("edged_segments_duplicate_total") + rejected
        );
    }

    #[test]
    fn request_parsing() {
        let check = |head: &str, expected: Result<(&str, &str, bool), ()>| {
            let got = Request::parse(head.as_bytes())
                .map(|r| (r.method, r.path, r.accepts_openmetrics))
                .map_err(|_| ());
            assert_eq!(got, expected, "{head:?}");
        };
        check(
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            Ok(("GET", "/metrics", false)),
        );
        check(
            "GET /metrics?x=1 HTTP/1.0\n\n",
            Ok(("GET", "/metrics", false)),
        );
        check(
            "GET /metrics HTTP/1.1\r\naccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
            Ok(("GET", "/metrics", true)),
        );
        check(
            "POST /metrics HTTP/1.1\r\n\r\n",
            Ok(("POST", "/metrics", false)),
        );
        check("GET /metrics\r\n\r\n", Err(()));
        check("GET /metrics HTTP/2.0\r\n\r\n", Err(()));
        check("GET  /metrics HTTP/1.1\r\n\r\n", Err(()));
        check("get /metrics HTTP/1.1\r\n\r\n", Err(()));
        check("GET http://x/metrics HTTP/1.1\r\n\r\n", Err(()));
        check("GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", Err(()));
        check("\r\n\r\n", Err(()));
        assert!(Request::parse(b"GET /\xff HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn head_end_finds_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    // -----------------------------------------------------------------------------------------
    // The endpoint, over real loopback TCP.

    struct Server {
        addr: std::net::SocketAddr,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    async fn start(limits: Limits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let source: Arc<dyn Fn() -> Snapshot + Send + Sync> = Arc::new(full);
        let task = tokio::spawn(serve_with(listener, source, rx, limits));
        Server { addr, stop, task }
    }

    /// Sends `request` (then half-closes), returns everything the server answered.
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("answer within 10 s")
            .expect("read answer");
        String::from_utf8(answer).unwrap()
    }

    fn status(answer: &str) -> &str {
        answer.split("\r\n").next().unwrap_or("")
    }

    #[tokio::test]
    async fn serve_answers_get_metrics_404_and_405() {
        let server = start(Limits::default()).await;
        let answer = exchange(
            server.addr,
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert_eq!(status(&answer), "HTTP/1.1 200 OK");
        assert!(
            head.contains(&format!("\r\nContent-Type: {CONTENT_TYPE_TEXT}")),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
            "{head}"
        );
        assert!(head.contains("\r\nConnection: close"), "{head}");
        assert_eq!(body, render(&full()));
        assert!(body.contains("edged_store_segments 102\n"));

        let answer = exchange(
            server.addr,
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
        )
        .await;
        assert_eq!(status(&answer), "HTTP/1.1 200 OK");
        assert!(
            answer.contains(&format!("Content-Type: {CONTENT_TYPE_OPENMETRICS}\r\n")),
            "{answer}"
        );

        let answer = exchange(server.addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&answer), "HTTP/1.1 404 Not Found");
        let answer = exchange(
            server.addr,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        )
        .await;
        assert_eq!(status(&answer), "HTTP/1.1 405 Method Not Allowed");
        assert!(answer.contains("\r\nAllow: GET\r\n"), "{answer}");

        server.stop.send(true).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn serve_survives_garbage() {
        let server = start(Limits::default()).await;
        for garbage in [
            &b"\x00\xff\xfe garbage\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a TLS ClientHello, no blank line
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",             // an HTTP/2 preface
            b"GET /metrics HTTP/1.1\r\nHost\r\n\r\n",        // a header without ':'
            b"",                                             // connect and close
        ] {
            let answer = exchange(server.addr, garbage).await;
            assert!(
                answer.is_empty() || status(&answer) == "HTTP/1.1 400 Bad Request",
                "{garbage:?} → {answer}"
            );
        }
        // Still serving.
        let answer = exchange(server.addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&answer), "HTTP/1.1 200 OK");
        server.stop.send(true).unwrap();
        server.task.await.unwrap().unwrap();
    }

    /// A request head of exactly `len` bytes.
    fn head_of(len: usize) -> Vec<u8> {
        let start = b"GET /metrics HTTP/1.1\r\nX-Pad: ";
        let end = b"\r\n\r\n";
        let mut head = start.to_vec();
        head.resize(len - end.len(), b'a');
        head.extend_from_slice(end);
        assert_eq!(head.len(), len);
        head
    }

    #[tokio::test]
    async fn request_head_bound_at_n_and_n_plus_1() {
        let server = start(Limits::default()).await;
        let answer = exchange(server.addr, &head_of(METRICS_REQUEST_HEAD_BYTES_MAX)).await;
        assert_eq!(status(&answer), "HTTP/1.1 200 OK");
        let answer = exchange(server.addr, &head_of(METRICS_REQUEST_HEAD_BYTES_MAX + 1)).await;
        assert_eq!(
            status(&answer),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        // Far more than the bound, as one stream: the server stops reading (the client may see
        // its writes fail and the connection reset), and goes on serving others.
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let flood = vec![b'x'; 4 << 20];
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&flood)).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || status(&answer).contains(" 431 "),
            "{answer}"
        );
        drop(stream);
        let answer = exchange(server.addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&answer), "HTTP/1.1 200 OK");
        server.stop.send(true).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_silent_client_times_out_with_408() {
        let server = start(Limits {
            request_timeout: Duration::from_millis(200),
            ..Limits::default()
        })
        .await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("disconnected after the request timeout")
            .unwrap();
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408 "));
        server.stop.send(true).unwrap();
        server.task.await.unwrap().unwrap();
    }

    /// Whether the server closed `stream` (EOF or reset) within `limit`.
    async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
        let mut rest = Vec::new();
        match tokio::time::timeout(limit, stream.read_to_end(&mut rest)).await {
            Ok(_) => true,
            Err(_elapsed) => false,
        }
    }

    #[tokio::test]
    async fn connections_bound_at_n_and_n_plus_1() {
        let server = start(Limits::default()).await;
        // N silent connections fill every slot…
        let mut idle = Vec::new();
        for _ in 0..METRICS_CONNECTIONS_MAX {
            idle.push(TcpStream::connect(server.addr).await.unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // …and the N+1-th is answered at once: the oldest silent one makes room.
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            exchange(server.addr, b"GET /metrics HTTP/1.1\r\n\r\n"),
        )
        .await
        .expect("answered while silent connections held every slot");
        assert_eq!(status(&answer), "HTTP/1.1 200 OK");
        assert!(
            closed_within(&mut idle[0], Duration::from_secs(5)).await,
            "the oldest silent connection was closed"
        );
        for later in &mut idle[1..] {
            assert!(
                !closed_within(later, Duration::from_millis(50)).await,
                "only the oldest was closed"
            );
        }
        server.stop.send(true).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn connections_being_answered_are_never_shed() {
        let server = start(Limits::default()).await;
        // N clients send a whole request and keep their end open: each is answered, then held
        // (at most the drain timeout) while the server waits for the client to close.
        let mut answered = Vec::new();
        for _ in 0..METRICS_CONNECTIONS_MAX {
            let mut c = TcpStream::connect(server.addr).await.unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
            let mut first = [0u8; 1];
            tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut first))
                .await
                .expect("answered")
                .unwrap();
            answered.push(c);
        }
        // The N+1-th waits for one of them rather than cutting an answer short…
        let started = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            exchange(server.addr, b"GET /metrics HTTP/1.1\r\n\r\n"),
        )
        .await
        .expect("served once an answered connection ended");
        assert_eq!(status(&answer), "HTTP/1.1 200 OK");
        // …which happens within the drain timeout, never before the answer went out.
        assert!(started.elapsed() < Duration::from_millis(METRICS_DRAIN_TIMEOUT_MS) * 5);
        for mut c in answered {
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
                .await
                .expect("closed after the drain timeout")
                .unwrap();
            assert!(
                String::from_utf8_lossy(&rest).contains("200 OK"),
                "the answer arrived whole"
            );
        }
        server.stop.send(true).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_scrape_is_answered_at_once_past_40_idle_connections() {
        // The default limits: a silent client would hold its slot for the whole request
        // timeout, so waiting for slots would take 40 / N timeouts.
        let server = start(Limits::default()).await;
        let mut idle = Vec::new();
        for _ in 0..40 {
            idle.push(TcpStream::connect(server.addr).await.unwrap());
        }
        let started = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_millis(METRICS_REQUEST_TIMEOUT_MS),
            exchange(server.addr, b"GET /metrics HTTP/1.1\r\n\r\n"),
        )
        .await
        .expect("a scrape waited on idle connections");
        assert_eq!(status(&answer), "HTTP/1.1 200 OK");
        eprintln!("scrape past 40 idle connections: {:?}", started.elapsed());
        // The server holds at most N of them.
        let mut open = 0;
        for c in &mut idle {
            if !closed_within(c, Duration::from_millis(20)).await {
                open += 1;
            }
        }
        assert!(
            open <= METRICS_CONNECTIONS_MAX,
            "{open} idle connections still open"
        );
        server.stop.send(true).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_trickling_client_gets_408_at_the_deadline_from_its_accept() {
        let server = start(Limits {
            request_timeout: Duration::from_millis(300),
            ..Limits::default()
        })
        .await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let started = Instant::now();
        // One byte every 50 ms never completes a head, and never restarts the deadline.
        let mut answer = Vec::new();
        for b in b"GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if stream.write_all(&[*b]).await.is_err() {
                break;
            }
            let mut buf = [0u8; 256];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await
            {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        let took = started.elapsed();
        assert!(
            String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408 "),
            "{answer:?}"
        );
        assert!(took < Duration::from_secs(3), "{took:?}");
        server.stop.send(true).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_panicking_source_is_a_500_not_the_end() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = calls.clone();
        let source: Arc<dyn Fn() -> Snapshot + Send + Sync> = Arc::new(move || {
            if counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                panic!("first snapshot fails");
            }
            full()
        });
        let task = tokio::spawn(serve(listener, source, rx));
        let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&answer), "HTTP/1.1 500 Internal Server Error");
        let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&answer), "HTTP/1.1 200 OK");
        stop.send(true).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_ends_serve_and_open_connections() {
        let server = start(Limits::default()).await;
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server.task)
            .await
            .expect("serve returns at shutdown")
            .unwrap()
            .unwrap();
        // The connection in progress was closed with it, and nothing listens any more.
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "open connection not closed at shutdown");
        assert!(TcpStream::connect(server.addr).await.is_err());

        // A dropped sender counts as shutdown too.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(serve(listener, Arc::new(Snapshot::default), rx));
        drop(stop);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
