//! Imports pipelined on one control connection: the client sends small segments one after
//! another without waiting for each answer; the daemon takes each body whole into memory
//! (at most [`CONTROL_IMPORT_PIPELINED_BYTES_MAX`]), hands it to an ingest of its own on the
//! runtime's blocking pool, and reads the next request at once. Concurrent ingests overlap
//! their file and directory fsyncs, and the store's committer folds their index transactions
//! into group commits: one durable commit pays for many segments.
//!
//! Answers go out in the order of the requests, each only once its ingest returned (after its
//! commit: the durability contract is the store's own, unchanged). A writer thread of the
//! connection waits for them in order and writes them under the minimum-rate rule, so answers
//! keep flowing while the connection's thread waits for the next request.
//!
//! What a client can make the daemon hold on one connection is bounded: at most
//! `[control] import_window` imports in flight and at most `import_window_bytes` of their
//! bodies in memory; beyond that the daemon stops reading the connection until the oldest
//! answer is written (the client's writes then wait: back-pressure through the socket).

use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::control_io::RateWriter;
use crate::control::{ControlLimits, Response, write_frame};
use crate::exit;

pub use crate::control::CONTROL_IMPORT_PIPELINED_BYTES_MAX;

/// An answer on its way: known now, or coming from an ingest.
enum Pending {
    Ready(Response),
    Coming(Receiver<Response>),
}

#[derive(Debug, Default)]
struct Window {
    /// Answers not written yet.
    count: usize,
    /// Body bytes those imports hold.
    bytes: u64,
    /// Writing to the client failed: nothing more can be answered on this connection.
    broken: bool,
}

/// The in-flight imports of one connection and the thread that answers them in order.
pub(super) struct Pipeline {
    window: Arc<(Mutex<Window>, Condvar)>,
    queue: Option<Sender<(u64, Pending)>>,
    writer: Option<JoinHandle<()>>,
    count_max: usize,
    bytes_max: u64,
}

fn lock(m: &Mutex<Window>) -> MutexGuard<'_, Window> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pipeline {
    /// Starts the answer writer on `stream` (a handle on the connection's socket).
    pub(super) fn start(stream: UnixStream, limits: &ControlLimits) -> std::io::Result<Pipeline> {
        let window: Arc<(Mutex<Window>, Condvar)> = Arc::default();
        let (queue, answers) = channel::<(u64, Pending)>();
        let (w, l) = (window.clone(), *limits);
        let writer = std::thread::Builder::new()
            .name("edged-control-answers".into())
            .spawn(move || write_answers(&stream, &l, &answers, &w))?;
        Ok(Pipeline {
            window,
            queue: Some(queue),
            writer: Some(writer),
            count_max: limits.import_window,
            bytes_max: limits.import_window_bytes,
        })
    }

    /// Imports whose answer is not written yet.
    pub(super) fn in_flight(&self) -> usize {
        lock(&self.window.0).count
    }

    /// Waits for room for one more import of `bytes` (one import always fits when nothing is in
    /// flight) and takes it. False when the connection broke.
    pub(super) fn admit(&self, bytes: u64) -> bool {
        let (m, changed) = &*self.window;
        let mut w = lock(m);
        while !w.broken
            && w.count > 0
            && (w.count >= self.count_max || w.bytes.saturating_add(bytes) > self.bytes_max)
        {
            w = changed.wait(w).unwrap_or_else(|e| e.into_inner());
        }
        if w.broken {
            return false;
        }
        w.count += 1;
        w.bytes += bytes;
        true
    }

    /// Queues the answer of an admitted import of `bytes`, in request order.
    pub(super) fn push(&self, bytes: u64, answer: Receiver<Response>) {
        self.send(bytes, Pending::Coming(answer));
    }

    /// Queues the answer of an admitted import of `bytes` that is known now (refused, cut),
    /// in request order.
    pub(super) fn push_now(&self, bytes: u64, response: Response) {
        self.send(bytes, Pending::Ready(response));
    }

    fn send(&self, bytes: u64, pending: Pending) {
        let sent = self
            .queue
            .as_ref()
            .is_some_and(|q| q.send((bytes, pending)).is_ok());
        if !sent {
            // The writer is gone: give the room back so nobody waits for it.
            let (m, changed) = &*self.window;
            let mut w = lock(m);
            w.broken = true;
            w.count = w.count.saturating_sub(1);
            w.bytes = w.bytes.saturating_sub(bytes);
            changed.notify_all();
        }
    }

    /// Waits until every queued answer is written. False when the connection broke.
    pub(super) fn drain(&self) -> bool {
        let (m, changed) = &*self.window;
        let mut w = lock(m);
        while w.count > 0 {
            w = changed.wait(w).unwrap_or_else(|e| e.into_inner());
        }
        !w.broken
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // The writer answers what was queued (every ingest sends its answer), then ends.
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn write_answers(
    stream: &UnixStream,
    limits: &ControlLimits,
    answers: &Receiver<(u64, Pending)>,
    window: &(Mutex<Window>, Condvar),
) {
    let (m, changed) = window;
    while let Ok((bytes, pending)) = answers.recv() {
        let response = match pending {
            Pending::Ready(response) => response,
            Pending::Coming(answer) => answer.recv().unwrap_or_else(|_| Response::Error {
                code: exit::FAILED,
                message: "the import ended without an answer".into(),
            }),
        };
        let broken = lock(m).broken;
        let written =
            !broken && write_frame(&mut RateWriter::new(stream, limits), &response).is_ok();
        let mut w = lock(m);
        if !written && !w.broken {
            w.broken = true;
            // The connection's thread may be reading the next request: end it.
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        w.count = w.count.saturating_sub(1);
        w.bytes = w.bytes.saturating_sub(bytes);
        changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::read_frame;
    use std::io::BufReader;
    use std::sync::mpsc::sync_channel;
    use std::time::Duration;

    fn limits(window: usize, bytes: u64) -> ControlLimits {
        ControlLimits {
            import_window: window,
            import_window_bytes: bytes,
            ..ControlLimits::default()
        }
    }

    fn read_answers(client: &UnixStream, n: usize) -> Vec<Response> {
        let mut r = BufReader::new(client.try_clone().unwrap());
        (0..n)
            .map(|_| read_frame::<_, Response>(&mut r).unwrap().unwrap())
            .collect()
    }

    fn text(message: &str) -> Response {
        Response::Error {
            code: 1,
            message: message.into(),
        }
    }

    #[test]
    fn answers_go_out_in_request_order_whatever_order_ingests_end_in() {
        let (server, client) = UnixStream::pair().unwrap();
        let p = Pipeline::start(server, &limits(8, 1 << 20)).unwrap();
        let mut senders = Vec::new();
        for _ in 0..3 {
            assert!(p.admit(10));
            let (tx, rx) = sync_channel(1);
            p.push(10, rx);
            senders.push(tx);
        }
        assert!(p.admit(10));
        p.push_now(10, text("refused"));
        // The last ingest ends first.
        for (i, tx) in senders.iter().enumerate().rev() {
            tx.send(text(&format!("import {i}"))).unwrap();
        }
        assert!(p.drain());
        assert_eq!(p.in_flight(), 0);
        assert_eq!(
            read_answers(&client, 4),
            vec![
                text("import 0"),
                text("import 1"),
                text("import 2"),
                text("refused")
            ]
        );
    }

    #[test]
    fn the_window_bounds_imports_and_bytes_in_flight() {
        let (server, client) = UnixStream::pair().unwrap();
        let p = Arc::new(Pipeline::start(server, &limits(2, 100)).unwrap());
        let (a, a_rx) = sync_channel(1);
        let (b, b_rx) = sync_channel(1);
        assert!(p.admit(60));
        p.push(60, a_rx);
        // 60 + 50 > 100 bytes: waits until the first answer is written.
        let waiting = {
            let p = p.clone();
            std::thread::spawn(move || {
                assert!(p.admit(50));
                p.push(50, b_rx);
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(p.in_flight(), 1, "the second import waits for room");
        a.send(text("a")).unwrap();
        waiting.join().unwrap();
        b.send(text("b")).unwrap();
        assert!(p.drain());
        assert_eq!(read_answers(&client, 2), vec![text("a"), text("b")]);
        // Nothing in flight: one import always fits, however large.
        assert!(p.admit(1_000));
        let (c, c_rx) = sync_channel(1);
        p.push(1_000, c_rx);
        c.send(text("c")).unwrap();
        assert!(p.drain());
    }

    #[test]
    fn a_client_gone_breaks_the_pipeline_without_leaving_anyone_waiting() {
        let (server, client) = UnixStream::pair().unwrap();
        let p = Pipeline::start(server, &limits(1, 100)).unwrap();
        drop(client);
        assert!(p.admit(10));
        let (tx, rx) = sync_channel(1);
        p.push(10, rx);
        tx.send(text("lost")).unwrap();
        assert!(!p.drain(), "the answer could not be written");
        assert!(!p.admit(10), "no more imports on a broken connection");
    }
}
