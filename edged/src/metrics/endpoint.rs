//! The loopback HTTP endpoint that serves the exposition: hyper's HTTP/1 server on the daemon's
//! tokio runtime, one request per connection.
//!
//! The config refuses a non-loopback `metrics_addr`, so only local processes reach it. hyper
//! parses the requests; what is left here is the policy around it. Everything a client controls
//! is bounded: the request head ([`METRICS_REQUEST_HEAD_BYTES_MAX`], a larger one gets 431), the
//! time to send it, measured from the accept however slowly its bytes come
//! ([`METRICS_REQUEST_TIMEOUT_MS`]), the whole connection including taking the answer
//! ([`METRICS_CONNECTION_TIMEOUT_MS`]), and the connections open at once
//! ([`METRICS_CONNECTIONS_MAX`]).
//!
//! Idle or slow clients cannot delay a scrape: the endpoint keeps accepting, and when a new
//! connection finds every slot taken it closes the oldest connection that has not yet sent a
//! complete request head. Only connections already being answered are never cut; they are
//! bounded by the connection deadline, and a new connection waits for one of them only when
//! every slot is one. Garbage gets a 400 (or, when it is not even a request, a closed
//! connection), never a panic; the snapshot is taken on a blocking thread (it may read the
//! store), so a slow one never stalls the runtime.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

use super::{Snapshot, render};

/// The one path served.
pub const METRICS_PATH: &str = "/metrics";
/// Largest request head (request line and headers), in bytes; a larger one gets 431.
pub const METRICS_REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// Largest read or write buffer of one connection, in bytes. Never below hyper's floor of
/// 8 KiB, nor below the head it must hold.
pub const METRICS_BUFFER_BYTES_MAX: usize = 16 * 1024;
/// A client has this long from its accept to send its request head; then it is disconnected.
pub const METRICS_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// A connection, from its accept to its close, lasts at most this long: a client that takes
/// its answer too slowly is disconnected.
pub const METRICS_CONNECTION_TIMEOUT_MS: u64 = 15_000;
/// Connections open at once; at the cap a new one closes the oldest that has not sent its
/// request head yet.
pub const METRICS_CONNECTIONS_MAX: usize = 4;
/// Pause after a failed `accept` (out of file descriptors, …) before the next one.
pub const METRICS_ACCEPT_RETRY_MS: u64 = 100;

const _: () = assert!(METRICS_BUFFER_BYTES_MAX >= 8 * 1024);
const _: () = assert!(METRICS_BUFFER_BYTES_MAX >= METRICS_REQUEST_HEAD_BYTES_MAX);
const _: () = assert!(METRICS_CONNECTION_TIMEOUT_MS > METRICS_REQUEST_TIMEOUT_MS);

/// `Content-Type` of the body for Prometheus text 0.0.4 scrapers and humans.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of the body when the scraper accepts OpenMetrics.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where the snapshot served comes from.
pub type Source = Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// Serves [`render`]`(source())` on `GET /metrics` until `shutdown` becomes true (or its sender
/// is dropped), then stops accepting, ends the connections in progress and returns `Ok`.
/// Failed `accept`s are logged and retried after [`METRICS_ACCEPT_RETRY_MS`]; nothing a client
/// sends ends the server.
pub async fn serve(
    listener: TcpListener,
    source: Source,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_with(listener, source, shutdown, Limits::default()).await
}

/// The endpoint's bounds; tests shorten them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    connections_max: usize,
    request_timeout: Duration,
    connection_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_max: METRICS_CONNECTIONS_MAX,
            request_timeout: Duration::from_millis(METRICS_REQUEST_TIMEOUT_MS),
            connection_timeout: Duration::from_millis(METRICS_CONNECTION_TIMEOUT_MS),
        }
    }
}

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    // An error means the sender is gone: the daemon is going away, so stop as well.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn serve_with(
    listener: TcpListener,
    source: Source,
    shutdown: watch::Receiver<bool>,
    limits: Limits,
) -> std::io::Result<()> {
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(false)
        // A client may shut its sending side once the request is out (`nc -N`, scripts); it
        // still gets its answer.
        .half_close(true)
        .max_header_size(METRICS_REQUEST_HEAD_BYTES_MAX)
        .max_buf_size(METRICS_BUFFER_BYTES_MAX)
        // hyper starts it when it starts reading the head, i.e. at the accept; it never
        // restarts with the bytes that trickle in.
        .header_read_timeout(limits.request_timeout)
        .timer(TokioTimer::new());
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
        // answered, wait for one to end (bounded by the connection deadline).
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
        // Registered under the lock, so the handler cannot mark or remove itself before it is
        // in the table.
        let mut table = open.lock();
        let seq = table.next;
        table.next += 1;
        let guard = Leave {
            open: open.clone(),
            seq,
        };
        let source = source.clone();
        let http = http.clone();
        let abort = connections.spawn(async move {
            let slot = Arc::new(guard);
            let marked = slot.clone();
            let service = hyper::service::service_fn(move |request| {
                // hyper calls the service once the head is complete: from now on this
                // connection is being answered.
                marked.head_done();
                answer(request, source.clone())
            });
            let connection = http.serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(limits.connection_timeout, connection).await {
                Ok(Ok(())) => {}
                // A timed-out head, garbage, a client gone: hyper answered what deserves an
                // answer (400, 431); the connection is over either way.
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics connection ended"),
                Err(_elapsed) => {
                    tracing::debug!(%peer, "metrics connection: deadline passed, disconnected");
                }
            }
            drop(slot);
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

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Metrics { openmetrics: bool },
    MethodNotAllowed,
    NotFound,
}

/// The decision for a request, from its method, path and headers alone.
fn route(method: &Method, path: &str, headers: &HeaderMap) -> Route {
    if path != METRICS_PATH {
        Route::NotFound
    } else if method != Method::GET {
        Route::MethodNotAllowed
    } else {
        Route::Metrics {
            openmetrics: accepts_openmetrics(headers),
        }
    }
}

/// Whether any `Accept` header names OpenMetrics (Prometheus's does; `curl`'s does not).
fn accepts_openmetrics(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.contains("application/openmetrics-text"))
    })
}

async fn answer(
    request: Request<Incoming>,
    source: Source,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match route(request.method(), request.uri().path(), request.headers()) {
        Route::NotFound => error(StatusCode::NOT_FOUND),
        Route::MethodNotAllowed => {
            let mut response = error(StatusCode::METHOD_NOT_ALLOWED);
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            response
        }
        // The source may read the store: keep it off the runtime's worker threads. A panic in
        // it is this scrape's 500, not the server's end.
        Route::Metrics { openmetrics } => {
            match tokio::task::spawn_blocking(move || render(&source())).await {
                Ok(body) => {
                    let content_type = if openmetrics {
                        CONTENT_TYPE_OPENMETRICS
                    } else {
                        CONTENT_TYPE_TEXT
                    };
                    with_body(StatusCode::OK, content_type, body)
                }
                Err(e) => {
                    tracing::error!(error = %e, "metrics snapshot failed");
                    error(StatusCode::INTERNAL_SERVER_ERROR)
                }
            }
        }
    };
    Ok(response)
}

fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An error answer: its status line again as the body.
fn error(status: StatusCode) -> Response<Full<Bytes>> {
    let body = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    with_body(status, "text/plain; charset=utf-8", body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[test]
    fn routing() {
        let accept = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.append(ACCEPT, HeaderValue::from_static("text/plain"));
            headers.append(ACCEPT, HeaderValue::from_static(value));
            headers
        };
        let none = HeaderMap::new();
        let check = |method: Method, path: &str, headers: &HeaderMap, expected: Route| {
            assert_eq!(route(&method, path, headers), expected, "{method} {path}");
        };
        check(
            Method::GET,
            "/metrics",
            &none,
            Route::Metrics { openmetrics: false },
        );
        check(
            Method::GET,
            "/metrics",
            &accept("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
            Route::Metrics { openmetrics: true },
        );
        check(
            Method::GET,
            "/metrics",
            &accept("*/*"),
            Route::Metrics { openmetrics: false },
        );
        check(Method::POST, "/metrics", &none, Route::MethodNotAllowed);
        check(Method::HEAD, "/metrics", &none, Route::MethodNotAllowed);
        check(Method::GET, "/", &none, Route::NotFound);
        check(Method::GET, "/metrics/", &none, Route::NotFound);
        check(Method::DELETE, "/other", &none, Route::NotFound);
    }

    // -----------------------------------------------------------------------------------------
    // The endpoint, over real loopback TCP.

    struct Server {
        addr: std::net::SocketAddr,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    async fn start_with(limits: Limits, source: Source) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(serve_with(listener, source, rx, limits));
        Server { addr, stop, task }
    }

    async fn start(limits: Limits) -> Server {
        start_with(limits, Arc::new(full)).await
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

    /// The value of header `name` in the head of `answer` (names compare without case).
    fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
        let (head, _) = answer.split_once("\r\n\r\n")?;
        head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[tokio::test]
    async fn serve_answers_get_metrics_404_and_405() {
        let server = start(Limits::default()).await;
        let answer = exchange(
            server.addr,
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .await;
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        assert_eq!(status(&answer), "HTTP/1.1 200 OK");
        assert_eq!(header(&answer, "content-type"), Some(CONTENT_TYPE_TEXT));
        assert_eq!(
            header(&answer, "content-length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(header(&answer, "connection"), Some("close"));
        assert_eq!(header(&answer, "cache-control"), Some("no-store"));
        assert_eq!(body, render(&full()));
        assert!(body.contains("edged_store_segments 102\n"));

        // HTTP/1.0 and a query are fine too.
        let answer = exchange(server.addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
        assert!(status(&answer).ends_with(" 200 OK"), "{answer}");

        let answer = exchange(
            server.addr,
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
        )
        .await;
        assert_eq!(status(&answer), "HTTP/1.1 200 OK");
        assert_eq!(
            header(&answer, "content-type"),
            Some(CONTENT_TYPE_OPENMETRICS)
        );

        let answer = exchange(server.addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&answer), "HTTP/1.1 404 Not Found");
        let answer = exchange(
            server.addr,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        )
        .await;
        assert_eq!(status(&answer), "HTTP/1.1 405 Method Not Allowed");
        assert_eq!(header(&answer, "allow"), Some("GET"));

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
            b"GET /metrics HTTP/2.0\r\n\r\n",                // not HTTP/1
            b"get /metrics HTTP/1.1\r\n\r\n",                // an unknown method
            b"",                                             // connect and close
        ] {
            let answer = exchange(server.addr, garbage).await;
            assert!(
                answer.is_empty()
                    || status(&answer) == "HTTP/1.1 400 Bad Request"
                    || status(&answer) == "HTTP/1.1 405 Method Not Allowed",
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

    /// Whether the server closed `stream` (EOF or reset) within `limit`.
    async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
        let mut rest = Vec::new();
        match tokio::time::timeout(limit, stream.read_to_end(&mut rest)).await {
            Ok(_) => true,
            Err(_elapsed) => false,
        }
    }

    #[tokio::test]
    async fn a_silent_client_is_disconnected_at_the_head_deadline() {
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
        assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
        server.stop.send(true).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_trickling_client_is_cut_at_the_deadline_from_its_accept() {
        let server = start(Limits {
            request_timeout: Duration::from_millis(300),
            ..Limits::default()
        })
        .await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let started = Instant::now();
        // One byte every 50 ms never completes a head, and never restarts the deadline.
        let mut answer = Vec::new();
        let mut cut = false;
        for b in b"GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if stream.write_all(&[*b]).await.is_err() {
                cut = true;
                break;
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => {
                    cut = true;
                    break;
                }
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_elapsed) => {}
            }
        }
        let took = started.elapsed();
        assert!(cut, "never disconnected");
        assert!(answer.is_empty(), "{answer:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        server.stop.send(true).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_slow_answer_is_cut_at_the_connection_deadline() {
        // The source takes longer than the whole-connection deadline.
        let slow: Source = Arc::new(|| {
            std::thread::sleep(Duration::from_millis(1_000));
            full()
        });
        let server = start_with(
            Limits {
                request_timeout: Duration::from_millis(100),
                connection_timeout: Duration::from_millis(300),
                ..Limits::default()
            },
            slow,
        )
        .await;
        let started = Instant::now();
        let answer = exchange(server.addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        let took = started.elapsed();
        assert!(answer.is_empty(), "{answer}");
        assert!(took < Duration::from_millis(900), "{took:?}");
        server.stop.send(true).unwrap();
        server.task.await.unwrap().unwrap();
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
        // Every answer takes a while, so N requests hold every slot while being answered.
        let answer_ms = 400;
        let slow: Source = Arc::new(move || {
            std::thread::sleep(Duration::from_millis(answer_ms));
            full()
        });
        let server = start_with(Limits::default(), slow).await;
        let mut answered = Vec::new();
        for _ in 0..METRICS_CONNECTIONS_MAX {
            let mut c = TcpStream::connect(server.addr).await.unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
            answered.push(c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The N+1-th waits for one of them rather than cutting an answer short…
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            exchange(server.addr, b"GET /metrics HTTP/1.1\r\n\r\n"),
        )
        .await
        .expect("served once an answered connection ended");
        assert_eq!(status(&answer), "HTTP/1.1 200 OK");
        // …and every one of them got its whole answer.
        for mut c in answered {
            let mut all = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut all))
                .await
                .expect("closed after the answer")
                .unwrap();
            let all = String::from_utf8_lossy(&all);
            assert_eq!(status(&all), "HTTP/1.1 200 OK", "{all}");
            assert!(all.ends_with("# EOF\n"), "the answer arrived whole");
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
    async fn a_panicking_source_is_a_500_not_the_end() {
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = calls.clone();
        let source: Source = Arc::new(move || {
            if counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                panic!("first snapshot fails");
            }
            full()
        });
        let server = start_with(Limits::default(), source).await;
        let answer = exchange(server.addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&answer), "HTTP/1.1 500 Internal Server Error");
        let answer = exchange(server.addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&answer), "HTTP/1.1 200 OK");
        server.stop.send(true).unwrap();
        server.task.await.unwrap().unwrap();
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
        assert!(
            closed_within(&mut idle, Duration::from_secs(5)).await,
            "open connection not closed at shutdown"
        );
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
