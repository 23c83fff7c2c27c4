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
//! [`serve`] answers `GET /metrics` on the loopback `metrics_addr` with hyper's HTTP/1 server,
//! one request per connection, every client-controlled quantity bounded (see [`endpoint`]).

use std::collections::BTreeMap;
use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// Prefix of every metric name.
pub const METRIC_PREFIX: &str = "edged";

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

mod endpoint;

pub use endpoint::serve;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field set, each to a different value, so a value found proves which field it
    /// came from.
    pub(super) fn full() -> Snapshot {
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
}
