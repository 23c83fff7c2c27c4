//! What a peer can make a node write to its log is bounded (INV-18): a known peer triggering
//! thousands of refusals gets at most the budget of lines per (peer, reason) and window, and
//! the next line logged for that pair says how many were suppressed. The node's events are
//! counted by a `tracing` layer installed for this test binary.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use net::wire::{Msg, encode_frame};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

/// One event the node logged, with the fields the limiter adds.
#[derive(Debug, Clone, Default)]
struct Line {
    level: String,
    kind: Option<String>,
    peer: Option<String>,
    suppressed: Option<u64>,
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Line>>);

struct Visitor<'a>(&'a mut Line);

impl Visit for Visitor<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "suppressed" {
            self.0.suppressed = Some(value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}").trim_matches('"').to_owned();
        match field.name() {
            "kind" => self.0.kind = Some(text),
            "peer" => self.0.peer = Some(text),
            _ => {}
        }
    }
}

struct CountLayer(Arc<Recorder>);

impl<S: tracing::Subscriber> Layer<S> for CountLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut line = Line {
            level: event.metadata().level().to_string(),
            ..Line::default()
        };
        event.record(&mut Visitor(&mut line));
        self.0.0.lock().unwrap().push(line);
    }
}

/// The process-wide recorder (the node's tasks run on every worker thread).
fn recorder() -> Arc<Recorder> {
    static RECORDER: OnceLock<Arc<Recorder>> = OnceLock::new();
    RECORDER
        .get_or_init(|| {
            let recorder = Arc::new(Recorder::default());
            let subscriber = tracing_subscriber::registry()
                .with(CountLayer(recorder.clone()).with_filter(LevelFilter::INFO));
            tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
            recorder
        })
        .clone()
}

/// The lines logged about `peer` for `kind`.
fn lines(recorder: &Recorder, peer: &str, kind: &str) -> Vec<Line> {
    recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.peer.as_deref() == Some(peer) && l.kind.as_deref() == Some(kind))
        .cloned()
        .collect()
}

/// Opens `count` streams on `conn` (at most 32 at once), each starting with a garbage frame,
/// and waits (bounded) until the node has ended each.
async fn garbage_streams(conn: &quinn::Connection, count: usize) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..count {
        while set.len() >= 32 {
            set.join_next().await;
        }
        let conn = conn.clone();
        set.spawn(async move {
            let Ok((mut send, mut recv)) = conn.open_bi().await else {
                return;
            };
            let _ = send.write_all(&[5, 0, 0, 0, 200, 1, 2, 3, 4]).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), recv.read(&mut [0u8; 8])).await;
        });
    }
    while set.join_next().await.is_some() {}
}

/// Offers `count` segments whose signature does not verify, one after another.
async fn bad_offers(conn: &quinn::Connection, count: u64) {
    for tag in 0..count {
        let mut manifest = segment(1000 + tag, 1000).encode();
        *manifest.last_mut().unwrap() ^= 1;
        let Ok((mut send, mut recv)) = conn.open_bi().await else {
            return;
        };
        let _ = send
            .write_all(&encode_frame(&Msg::Offer { manifest }))
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(5), recv.read(&mut [0u8; 64])).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv_18_a_peer_triggering_thousands_of_refusals_gets_its_log_budget_and_a_count() {
    let recorder = recorder();
    const PER_WINDOW: u32 = 3;
    const WINDOW_MS: u64 = 1_500;
    let fleet = Fleet::new();
    let planned = plan(&["n"], 1 << 30);
    let n_addr = planned[0].addr;
    let liar_socket = raw_socket();
    let nodes = start(&fleet, planned, &[], |cfg| {
        cfg.known_peers.insert(id("liar"), liar_socket.addr);
        cfg.log_warnings_per_window = PER_WINDOW;
        cfg.log_window_ms = WINDOW_MS;
    });
    let n = &nodes[0];
    let raw = Raw::on(&fleet.identity("liar"), &liar_socket);
    let conn = raw.connect(n_addr, "n").await.expect("the liar connects");

    // Thousands of refusals of two reasons, as fast as the node takes them.
    let started = Instant::now();
    let failed_before = n.node.stats().streams_failed;
    garbage_streams(&conn, 2_000).await;
    bad_offers(&conn, 300).await;
    let took = started.elapsed();
    let failed = n.node.stats().streams_failed - failed_before;
    assert!(
        failed >= 2_000,
        "every garbage stream was refused: {failed}"
    );
    let windows = took.as_millis() as u64 / WINDOW_MS + 1;
    for kind in ["bad_first_frame", "offer_refused"] {
        let logged = lines(&recorder, "liar", kind);
        assert!(!logged.is_empty(), "{kind}: the first ones are logged");
        assert!(
            logged.len() as u64 <= u64::from(PER_WINDOW) * windows,
            "{kind}: {} lines in {windows} windows of {WINDOW_MS} ms",
            logged.len()
        );
        assert!(logged.iter().all(|l| l.level == "WARN"), "{logged:?}");
    }

    // A window later, the next refusal is logged with the count of what was suppressed.
    tokio::time::sleep(Duration::from_millis(WINDOW_MS + 100)).await;
    garbage_streams(&conn, 1).await;
    let logged = lines(&recorder, "liar", "bad_first_frame");
    let last = logged.last().expect("a line");
    assert!(
        last.suppressed.unwrap_or(0) > 1_000,
        "the later line carries the suppressed count: {last:?}"
    );
    // Every refusal is accounted for: logged, or counted in a later line's `suppressed`.
    let accounted: u64 = logged.len() as u64
        + logged
            .iter()
            .map(|l| l.suppressed.unwrap_or(0))
            .sum::<u64>();
    assert_eq!(accounted, 2_001);
    // The whole log stayed small: no line per refusal.
    let total = recorder.0.lock().unwrap().len();
    assert!(total < 200, "{total} lines for 2,301 refusals");
}
