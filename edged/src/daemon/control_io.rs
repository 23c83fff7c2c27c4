//! Reading from and writing to a control client under bounds in time, not in idle gaps.
//!
//! - [`read_request`]: the first byte of a request within the idle timeout, then the whole
//!   frame within the request deadline from that byte; every read gets only what is left of the
//!   deadline, so bytes that trickle in never extend it. The frame's memory grows with the
//!   bytes that arrived ([`CONTROL_FRAME_STEP_BYTES`] at a time), not with the announced length.
//! - [`RateGuard`]: the minimum-rate rule of a stream, judged over windows of time spent waiting
//!   for the client; [`BodyReader`] (an import body) and [`RateWriter`] (responses, export
//!   streams) apply it, so a slow client is cut while the daemon's own disk time never counts
//!   against it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::control::{CONTROL_FRAME_BYTES_MAX, ControlLimits, Request};

/// A request frame's body is read in steps of at most this many bytes, so memory grows with the
/// bytes that arrived, not with the length a client announced.
pub const CONTROL_FRAME_STEP_BYTES: usize = 64 * 1024;
/// Shortest read or write timeout set on a socket: a zero timeout means "none" to the OS.
const SOCKET_TIMEOUT_MIN: Duration = Duration::from_millis(1);

/// What reading a request gave.
#[derive(Debug)]
pub(super) enum RequestRead {
    Request(Request),
    /// The client closed before a request began.
    Closed,
    /// No request began within the idle timeout.
    Idle,
    /// The request was not complete by its deadline.
    Late,
    /// Malformed, oversized, or cut short.
    Bad(String),
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Fills `buf` from `reader`, all of it by `deadline`. `Err(true)` on the deadline, `Err(false)`
/// when the client closed or failed first.
fn read_exact_by<R: BufRead>(
    reader: &mut R,
    stream: &UnixStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<(), bool> {
    let mut filled = 0;
    while filled < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(true);
        }
        // The deadline runs from the request's first byte: every read gets only what is left
        // of it, so trickling bytes never extend it.
        if stream
            .set_read_timeout(Some(left.max(SOCKET_TIMEOUT_MIN)))
            .is_err()
        {
            return Err(false);
        }
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Err(false),
            Ok(n) => filled += n,
            Err(e) if is_timeout(&e) || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(false),
        }
    }
    Ok(())
}

/// Reads one request frame: the first byte within the idle timeout, then the whole frame within
/// the request deadline from that byte.
pub(super) fn read_request(
    reader: &mut BufReader<UnixStream>,
    limits: &ControlLimits,
) -> RequestRead {
    let stream = match reader.get_ref().try_clone() {
        Ok(s) => s,
        Err(e) => return RequestRead::Bad(e.to_string()),
    };
    let idle = Duration::from_millis(limits.idle_timeout_ms).max(SOCKET_TIMEOUT_MIN);
    if stream.set_read_timeout(Some(idle)).is_err() {
        return RequestRead::Closed;
    }
    loop {
        match reader.fill_buf() {
            Ok([]) => return RequestRead::Closed,
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return RequestRead::Idle,
            Err(_) => return RequestRead::Closed,
        }
    }
    let deadline = Instant::now() + Duration::from_millis(limits.request_deadline_ms);
    let cut = |late: bool| {
        if late {
            RequestRead::Late
        } else {
            RequestRead::Bad("the connection ended in the middle of a request".into())
        }
    };
    let mut len = [0u8; 4];
    if let Err(late) = read_exact_by(reader, &stream, &mut len, deadline) {
        return cut(late);
    }
    let len = u32::from_le_bytes(len);
    if len > CONTROL_FRAME_BYTES_MAX {
        return RequestRead::Bad(format!(
            "control frame of {len} bytes exceeds {CONTROL_FRAME_BYTES_MAX}"
        ));
    }
    let len = len as usize;
    let mut body = Vec::with_capacity(len.min(CONTROL_FRAME_STEP_BYTES));
    while body.len() < len {
        let step = (len - body.len()).min(CONTROL_FRAME_STEP_BYTES);
        let at = body.len();
        body.resize(at + step, 0);
        if let Err(late) = read_exact_by(reader, &stream, &mut body[at..], deadline) {
            return cut(late);
        }
    }
    match serde_json::from_slice(&body) {
        Ok(request) => RequestRead::Request(request),
        Err(e) => RequestRead::Bad(e.to_string()),
    }
}

/// The minimum-rate rule of a stream: over every window of `window` spent waiting for the
/// client, at least `min_bytes` must move. Time the daemon spends elsewhere (its own disk) is
/// not counted, so only the client's slowness can trip it.
#[derive(Debug, Clone, Copy)]
struct RateGuard {
    window: Duration,
    min_bytes: u64,
    waited: Duration,
    bytes: u64,
}

/// A stream moved fewer than the minimum bytes in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooSlow {
    bytes: u64,
    window_ms: u64,
}

impl std::fmt::Display for TooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "only {} bytes moved in {} ms of waiting for the client",
            self.bytes, self.window_ms
        )
    }
}

impl RateGuard {
    fn new(limits: &ControlLimits) -> RateGuard {
        RateGuard {
            window: Duration::from_millis(limits.stream_rate_window_ms),
            min_bytes: limits.stream_window_bytes_min(),
            waited: Duration::ZERO,
            bytes: 0,
        }
    }

    /// Longest the next wait may take before the window must be judged.
    fn wait_left(&self) -> Duration {
        self.window
            .saturating_sub(self.waited)
            .max(SOCKET_TIMEOUT_MIN)
    }

    /// Counts `bytes` moved after waiting `waited`; judges the window once it is full.
    fn record(&mut self, bytes: usize, waited: Duration) -> Result<(), TooSlow> {
        self.bytes = self.bytes.saturating_add(bytes as u64);
        self.waited += waited;
        if self.waited >= self.window {
            if self.bytes < self.min_bytes {
                return Err(TooSlow {
                    bytes: self.bytes,
                    window_ms: self.window.as_millis() as u64,
                });
            }
            self.waited = Duration::ZERO;
            self.bytes = 0;
        }
        Ok(())
    }
}

/// Why an import body stopped before the announced length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cut {
    /// The client closed (or half-closed) its side after this many bytes.
    Closed { received: u64 },
    /// The client sent too slowly.
    Slow(TooSlow),
    /// Reading the socket failed.
    Failed(String),
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cut::Closed { received } => {
                write!(f, "the client stopped sending after {received} bytes")
            }
            Cut::Slow(slow) => write!(f, "the client sent too slowly: {slow}"),
            Cut::Failed(e) => write!(f, "reading from the client failed: {e}"),
        }
    }
}

/// The `len` bytes of an import body, read under the minimum-rate rule. Ends with `Ok(0)` after
/// exactly `len` bytes; a cut (client gone, too slow) is an error and is remembered.
pub(super) struct BodyReader<'a> {
    inner: &'a mut BufReader<UnixStream>,
    stream: UnixStream,
    len: u64,
    /// Bytes of the body not read yet.
    pub(super) left: u64,
    rate: RateGuard,
    /// Why the body stopped short, once it did.
    pub(super) cut: Option<Cut>,
}

impl<'a> BodyReader<'a> {
    pub(super) fn new(
        inner: &'a mut BufReader<UnixStream>,
        len: u64,
        limits: &ControlLimits,
    ) -> std::io::Result<BodyReader<'a>> {
        let stream = inner.get_ref().try_clone()?;
        Ok(BodyReader {
            inner,
            stream,
            len,
            left: len,
            rate: RateGuard::new(limits),
            cut: None,
        })
    }

    fn fail(&mut self, cut: Cut) -> std::io::Error {
        let e = std::io::Error::new(std::io::ErrorKind::TimedOut, cut.to_string());
        self.cut = Some(cut);
        e
    }
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        if let Some(cut) = &self.cut {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                cut.to_string(),
            ));
        }
        let want = usize::try_from(self.left).map_or(buf.len(), |left| left.min(buf.len()));
        loop {
            if let Err(e) = self.stream.set_read_timeout(Some(self.rate.wait_left())) {
                return Err(self.fail(Cut::Failed(e.to_string())));
            }
            let started = Instant::now();
            match self.inner.read(&mut buf[..want]) {
                Ok(0) => {
                    let received = self.len - self.left;
                    return Err(self.fail(Cut::Closed { received }));
                }
                Ok(n) => {
                    self.left -= n as u64;
                    if let Err(slow) = self.rate.record(n, started.elapsed()) {
                        return Err(self.fail(Cut::Slow(slow)));
                    }
                    return Ok(n);
                }
                Err(e) if is_timeout(&e) => {
                    if let Err(slow) = self.rate.record(0, started.elapsed()) {
                        return Err(self.fail(Cut::Slow(slow)));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.fail(Cut::Failed(e.to_string()))),
            }
        }
    }
}

/// Writes to a client under the minimum-rate rule (responses and export streams).
pub(super) struct RateWriter<'a> {
    stream: &'a UnixStream,
    rate: RateGuard,
}

impl<'a> RateWriter<'a> {
    pub(super) fn new(stream: &'a UnixStream, limits: &ControlLimits) -> RateWriter<'a> {
        RateWriter {
            stream,
            rate: RateGuard::new(limits),
        }
    }
}

impl Write for RateWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            self.stream.set_write_timeout(Some(self.rate.wait_left()))?;
            let started = Instant::now();
            let mut stream = self.stream;
            match stream.write(buf) {
                Ok(n) => {
                    self.rate.record(n, started.elapsed()).map_err(|slow| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, slow.to_string())
                    })?;
                    return Ok(n);
                }
                Err(e) if is_timeout(&e) => {
                    self.rate.record(0, started.elapsed()).map_err(|slow| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, slow.to_string())
                    })?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(window_ms: u64, rate: u64) -> ControlLimits {
        ControlLimits {
            stream_rate_window_ms: window_ms,
            stream_rate_min_bytes_per_s: rate,
            ..ControlLimits::default()
        }
    }

    #[test]
    fn rate_guard_judges_each_full_window_at_n_and_n_minus_1() {
        let ms = Duration::from_millis;
        // 1000 B/s over 100 ms: at least 100 bytes per window.
        let mut g = RateGuard::new(&limits(100, 1000));
        assert_eq!(g.wait_left(), ms(100));
        assert_eq!(g.record(60, ms(40)), Ok(()));
        assert_eq!(g.wait_left(), ms(60));
        assert_eq!(g.record(40, ms(60)), Ok(()), "exactly 100 bytes pass");
        assert_eq!(g.wait_left(), ms(100), "a new window began");
        assert_eq!(
            g.record(99, ms(100)),
            Err(TooSlow {
                bytes: 99,
                window_ms: 100
            })
        );
        // Time not spent waiting never judges a window.
        let mut g = RateGuard::new(&limits(100, 1000));
        for _ in 0..1000 {
            assert_eq!(g.record(0, Duration::ZERO), Ok(()));
        }
        assert_eq!(
            g.record(0, ms(100)),
            Err(TooSlow {
                bytes: 0,
                window_ms: 100
            })
        );
        // The timeout never reaches zero (which means "none" to the OS).
        let mut g = RateGuard::new(&limits(100, 0));
        assert_eq!(g.record(1, ms(99)), Ok(()));
        assert_eq!(g.wait_left(), ms(1));
        g.waited = ms(150);
        assert_eq!(g.wait_left(), SOCKET_TIMEOUT_MIN);
    }

    /// A connected pair: the server's buffered reader and the client's end.
    fn pair() -> (BufReader<UnixStream>, UnixStream) {
        let (server, client) = UnixStream::pair().unwrap();
        (BufReader::new(server), client)
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn inv_17_read_request_takes_a_whole_frame_and_refuses_garbage_and_oversize() {
        let l = ControlLimits::default();
        let (mut server, mut client) = pair();
        client.write_all(&frame(br#"{"op":"status"}"#)).unwrap();
        assert!(matches!(
            read_request(&mut server, &l),
            RequestRead::Request(Request::Status)
        ));
        client.write_all(&frame(b"{not json")).unwrap();
        assert!(matches!(read_request(&mut server, &l), RequestRead::Bad(_)));
        client
            .write_all(&(CONTROL_FRAME_BYTES_MAX + 1).to_le_bytes())
            .unwrap();
        assert!(
            matches!(read_request(&mut server, &l), RequestRead::Bad(m) if m.contains("exceeds"))
        );
        // A frame cut by the client's close.
        let (mut server, mut client) = pair();
        client
            .write_all(&frame(br#"{"op":"status"}"#)[..6])
            .unwrap();
        drop(client);
        assert!(
            matches!(read_request(&mut server, &l), RequestRead::Bad(m) if m.contains("ended"))
        );
        let (mut server, client) = pair();
        drop(client);
        assert!(matches!(read_request(&mut server, &l), RequestRead::Closed));
    }

    #[test]
    fn a_silent_client_is_idle_and_a_trickling_one_is_late() {
        let l = ControlLimits {
            idle_timeout_ms: 100,
            request_deadline_ms: 300,
            ..ControlLimits::default()
        };
        let (mut server, _client) = pair();
        let started = Instant::now();
        assert!(matches!(read_request(&mut server, &l), RequestRead::Idle));
        assert!(started.elapsed() < Duration::from_secs(5));
        // One byte every 50 ms: each byte would restart an idle gap of 100 ms, but the request
        // has 300 ms from its first byte.
        let (mut server, mut client) = pair();
        let trickle = std::thread::spawn(move || {
            let bytes = frame(&[b' '; 200]);
            for b in bytes.iter().take(100) {
                if client.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let started = Instant::now();
        assert!(matches!(read_request(&mut server, &l), RequestRead::Late));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{took:?}"
        );
        drop(server);
        trickle.join().unwrap();
    }

    #[test]
    fn body_reader_reads_exactly_len_and_remembers_a_cut() {
        let l = limits(200, 1000);
        let (mut server, mut client) = pair();
        client.write_all(b"0123456789tail").unwrap();
        let mut body = BodyReader::new(&mut server, 10, &l).unwrap();
        let mut got = Vec::new();
        body.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"0123456789");
        assert!(body.cut.is_none());
        // The client closes after 4 of 10 bytes.
        let (mut server, mut client) = pair();
        client.write_all(b"0123").unwrap();
        drop(client);
        let mut body = BodyReader::new(&mut server, 10, &l).unwrap();
        let mut got = Vec::new();
        assert!(body.read_to_end(&mut got).is_err());
        assert_eq!(body.cut, Some(Cut::Closed { received: 4 }));
        // The client sends nothing: cut after one window of waiting.
        let (mut server, _client) = pair();
        let mut body = BodyReader::new(&mut server, 10, &l).unwrap();
        let started = Instant::now();
        assert!(body.read(&mut [0u8; 10]).is_err());
        assert!(matches!(body.cut, Some(Cut::Slow(_))), "{:?}", body.cut);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn rate_writer_cuts_a_client_that_stops_reading() {
        let l = limits(200, 1000);
        let (server, client) = UnixStream::pair().unwrap();
        // A client that reads nothing: once the socket buffers are full, writes wait, and one
        // window of waiting without enough bytes ends the stream.
        let (done, wait) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            let big = vec![7u8; 16 << 20];
            let result = RateWriter::new(&server, &l).write_all(&big);
            let _ = done.send(result.map_err(|e| e.kind()));
        });
        let result = wait
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer gave up on a client that does not read");
        assert_eq!(result, Err(std::io::ErrorKind::TimedOut));
        writer.join().unwrap();
        drop(client);
        // A client that reads keeps the stream going.
        let (server, mut client) = UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).map(|_| got.len())
        });
        let big = vec![7u8; 4 << 20];
        RateWriter::new(&server, &l).write_all(&big).unwrap();
        drop(server);
        assert_eq!(reader.join().unwrap().unwrap(), 4 << 20);
    }
}
