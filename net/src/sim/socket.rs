//! [`SimSocket`]: one bound address of a [`SimNet`], as quinn's abstract socket.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::time::{Instant, Sleep};

use super::network::SimNet;

/// A socket of a [`SimNet`]. Sending never blocks (the network queues); receiving waits on
/// tokio's clock for the next datagram due at this address.
pub(crate) struct SimSocket {
    net: SimNet,
    addr: SocketAddr,
    /// Which binding of `addr` this is: a socket whose address was bound again or unbound is
    /// stale and hears nothing.
    generation: u64,
    /// Wakes the receiving task when the next datagram in flight is due.
    timer: Mutex<Option<Pin<Box<Sleep>>>>,
}

impl SimSocket {
    pub(crate) fn new(net: SimNet, addr: SocketAddr, generation: u64) -> SimSocket {
        SimSocket {
            net,
            addr,
            generation,
            timer: Mutex::new(None),
        }
    }
}

impl fmt::Debug for SimSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimSocket")
            .field("addr", &self.addr)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Always writable.
#[derive(Debug)]
struct Writable;

impl UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for SimSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let mut state = self.net.lock();
        // One datagram per segment when quinn batches (it does not: one segment per transmit).
        let size = transmit
            .segment_size
            .filter(|&s| s > 0)
            .unwrap_or(transmit.contents.len().max(1));
        for datagram in transmit.contents.chunks(size) {
            state.send(self.addr, self.generation, transmit.destination, datagram);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut timer = self.timer.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let mut state = self.net.lock();
            if !state.is_current(self.addr, self.generation) {
                // A crashed or replaced node's socket: silent for good.
                return Poll::Pending;
            }
            let due = state.due(self.addr, Instant::now(), bufs.len().min(meta.len()));
            if !due.is_empty() {
                let n = due.len();
                for (i, d) in due.into_iter().enumerate() {
                    let len = d.bytes.len().min(bufs[i].len());
                    bufs[i][..len].copy_from_slice(&d.bytes[..len]);
                    meta[i] = RecvMeta {
                        addr: d.from,
                        len,
                        stride: len,
                        ecn: None,
                        dst_ip: Some(self.addr.ip()),
                    };
                }
                return Poll::Ready(Ok(n));
            }
            state.park(self.addr, cx.waker());
            let Some(next) = state.next_arrival(self.addr) else {
                return Poll::Pending;
            };
            drop(state);
            match timer.as_mut() {
                Some(t) => t.as_mut().reset(next),
                None => *timer = Some(Box::pin(tokio::time::sleep_until(next))),
            }
            if let Some(t) = timer.as_mut() {
                if t.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}
