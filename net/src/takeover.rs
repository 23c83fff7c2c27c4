//! Who receives which segment, and the takeover rule: a slow sender does not keep the others
//! waiting (INV-18).
//!
//! Every receive (a push offered to this node, or a segment it pulls) first claims its segment
//! id here, before the store is asked for an ingest. At most one peer holds a claim per id;
//! another peer offering the same id:
//!
//! - is answered `Busy` at once if it is the holder itself, or if another peer is already
//!   waiting for that id;
//! - otherwise waits (at most `wait_max`, a little more than one rate window, and never more
//!   than half the response timeout) as **the** waiter: the id is then reserved for it, so a
//!   holder that gives up and offers again at once cannot slip back in before it;
//! - and takes over when the holder's rate over its last full window (published by the
//!   holder's minimum-rate rule, [`crate::transfer`]) is below `takeover_below_rate_bytes_per_s`:
//!   the holder is told to stop, it checkpoints what it received (its ingest keeps the partial),
//!   releases the claim, and the waiter's ingest resumes from that checkpoint.
//!
//! A holder that has not finished one full window yet cannot be preempted, so two slow senders
//! hand the segment over at most once per window, and no byte received is lost either way.
//! The table holds one entry per id being received or waited for; entries go with their last
//! claim or waiter (drop guards, also when a task is cancelled).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use store::SegmentId;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::limits::TAKEOVER_RELEASE_WAIT_MS;
use crate::pki::NodeId;

/// What a holder shows waiters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HolderState {
    /// Payload rate over the holder's last full window, in bytes per second.
    pub last_window_bytes_per_s: Option<u64>,
    /// A waiter took over: stop, checkpoint, release.
    pub preempt: bool,
    /// The claim was released.
    pub gone: bool,
}

#[derive(Debug)]
struct Holder {
    peer: NodeId,
    serial: u64,
    state: Arc<watch::Sender<HolderState>>,
}

#[derive(Debug, Default)]
struct Slot {
    holder: Option<Holder>,
    waiter: Option<(NodeId, u64)>,
}

#[derive(Debug, Default)]
struct Table {
    slots: BTreeMap<SegmentId, Slot>,
    next_serial: u64,
}

/// The node's table of receives. Cheap to share.
#[derive(Debug, Default)]
pub(crate) struct Receiving {
    table: Mutex<Table>,
}

/// The right to receive one segment. Released on drop (after the ingest was dropped or
/// finished, so that the next claimer's ingest finds the store free).
#[derive(Debug)]
pub(crate) struct Claim {
    receiving: Arc<Receiving>,
    id: SegmentId,
    serial: u64,
    state: Arc<watch::Sender<HolderState>>,
}

impl Claim {
    /// Publishes the rate of the window that just ended.
    pub fn publish_rate(&self, bytes_per_s: u64) {
        self.state.send_if_modified(|s| {
            let changed = s.last_window_bytes_per_s != Some(bytes_per_s);
            s.last_window_bytes_per_s = Some(bytes_per_s);
            changed
        });
    }

    /// Resolves when a waiter has taken over.
    pub async fn preempted(&self) {
        let mut rx = self.state.subscribe();
        // The sender lives in this claim, so `wait_for` only ends with the condition.
        let _ = rx.wait_for(|s| s.preempt).await;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut table = self.receiving.lock();
        if let Some(slot) = table.slots.get_mut(&self.id) {
            if slot
                .holder
                .as_ref()
                .is_some_and(|h| h.serial == self.serial)
            {
                slot.holder = None;
            }
            if slot.holder.is_none() && slot.waiter.is_none() {
                table.slots.remove(&self.id);
            }
        }
        drop(table);
        self.state.send_modify(|s| s.gone = true);
    }
}

/// Clears a waiter's reservation if it gives up or is cancelled.
struct Waiting<'a> {
    receiving: &'a Receiving,
    id: SegmentId,
    serial: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut table = self.receiving.lock();
        if let Some(slot) = table.slots.get_mut(&self.id) {
            if slot.waiter.as_ref().is_some_and(|(_, s)| *s == self.serial) {
                slot.waiter = None;
            }
            if slot.holder.is_none() && slot.waiter.is_none() {
                table.slots.remove(&self.id);
            }
        }
    }
}

/// What one look at the table decided.
enum Look {
    Claimed(Claim),
    Busy,
    /// Wait on the holder's state as the waiter (with a new reservation, on the first look).
    Wait {
        rx: watch::Receiver<HolderState>,
        holder: Arc<watch::Sender<HolderState>>,
        reservation: Option<u64>,
    },
}

/// Whether a holder showing `state` may be preempted under `below_bytes_per_s`.
pub(crate) fn preemptible(state: &HolderState, below_bytes_per_s: u64) -> bool {
    below_bytes_per_s > 0
        && state
            .last_window_bytes_per_s
            .is_some_and(|r| r < below_bytes_per_s)
}

impl Receiving {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Receives holding a claim now (each checkpoints its partial when it ends).
    pub fn holders(&self) -> usize {
        self.lock()
            .slots
            .values()
            .filter(|s| s.holder.is_some())
            .count()
    }

    /// Claims `id` for `peer`, waiting and taking over as the module docs say. `None`: answer
    /// `Busy`.
    pub async fn claim(
        self: &Arc<Self>,
        id: SegmentId,
        peer: &NodeId,
        wait_max: Duration,
        takeover_below_bytes_per_s: u64,
    ) -> Option<Claim> {
        let deadline = Instant::now() + wait_max;
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            let look = {
                let mut table = self.lock();
                let serial = table.next_serial;
                table.next_serial += 1;
                let my_wait = waiting.as_ref().map(|w| w.serial);
                let slot = table.slots.entry(id).or_default();
                let reserved_for_other = slot
                    .waiter
                    .as_ref()
                    .is_some_and(|(_, s)| Some(*s) != my_wait);
                match &slot.holder {
                    None if reserved_for_other => Look::Busy,
                    None => {
                        let state = Arc::new(watch::channel(HolderState::default()).0);
                        slot.holder = Some(Holder {
                            peer: peer.clone(),
                            serial,
                            state: state.clone(),
                        });
                        if my_wait.is_some() {
                            slot.waiter = None;
                        }
                        Look::Claimed(Claim {
                            receiving: self.clone(),
                            id,
                            serial,
                            state,
                        })
                    }
                    Some(h) if &h.peer == peer || reserved_for_other => Look::Busy,
                    Some(h) => {
                        let reservation = my_wait.is_none().then_some(serial);
                        let wait = Look::Wait {
                            rx: h.state.subscribe(),
                            holder: h.state.clone(),
                            reservation,
                        };
                        if reservation.is_some() {
                            slot.waiter = Some((peer.clone(), serial));
                        }
                        wait
                    }
                }
            };
            let (mut rx, holder) = match look {
                Look::Claimed(claim) => {
                    // The reservation became the claim: nothing for the guard to undo.
                    if let Some(w) = waiting.take() {
                        std::mem::forget(w);
                    }
                    return Some(claim);
                }
                Look::Busy => return None,
                Look::Wait {
                    rx,
                    holder,
                    reservation,
                } => {
                    if let Some(serial) = reservation {
                        waiting = Some(Waiting {
                            receiving: self,
                            id,
                            serial,
                        });
                    }
                    (rx, holder)
                }
            };
            // Wait for the holder to go, or to show a rate that lets this waiter take over.
            let seen = tokio::time::timeout_at(
                deadline,
                rx.wait_for(|s| s.gone || preemptible(s, takeover_below_bytes_per_s)),
            )
            .await
            // The holder's state went away with it (`Err` inside): look again as if gone.
            .map(|r| r.map_or(true, |state| state.gone));
            let gone = match seen {
                // Out of time: busy (the guard clears the reservation).
                Err(_) => return None,
                Ok(gone) => gone,
            };
            if !gone {
                holder.send_modify(|s| s.preempt = true);
                let released = tokio::time::timeout_at(
                    deadline.max(Instant::now() + Duration::from_millis(TAKEOVER_RELEASE_WAIT_MS)),
                    rx.wait_for(|s| s.gone),
                )
                .await
                .is_ok();
                if !released {
                    return None;
                }
            }
        }
    }

    /// Ids claimed or waited for (for tests and status).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> NodeId {
        s.parse().unwrap()
    }

    const ID: SegmentId = SegmentId([7; 32]);

    #[tokio::test(start_paused = true)]
    async fn one_holder_per_id_and_the_holder_itself_is_busy() {
        let r = Arc::new(Receiving::default());
        let a = r.claim(ID, &peer("a"), Duration::ZERO, 1000).await;
        assert!(a.is_some());
        assert!(
            r.claim(ID, &peer("a"), Duration::ZERO, 1000)
                .await
                .is_none()
        );
        // Another id is free.
        assert!(
            r.claim(SegmentId([8; 32]), &peer("b"), Duration::ZERO, 1000)
                .await
                .is_some()
        );
        drop(a);
        assert!(
            r.claim(ID, &peer("b"), Duration::ZERO, 1000)
                .await
                .is_some()
        );
        assert_eq!(r.len(), 0, "entries go with their claims");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_takes_over_a_slow_holder_after_its_window_and_is_reserved() {
        let r = Arc::new(Receiving::default());
        let a = r.claim(ID, &peer("a"), Duration::ZERO, 1000).await.unwrap();
        // No full window yet: b waits; c, a second waiter, is busy at once.
        let rb = r.clone();
        let b =
            tokio::spawn(
                async move { rb.claim(ID, &peer("b"), Duration::from_secs(5), 1000).await },
            );
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            r.claim(ID, &peer("c"), Duration::from_secs(5), 1000)
                .await
                .is_none()
        );
        // a's window ends fast enough: no takeover.
        a.publish_rate(5000);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!b.is_finished());
        // Then slowly: a is told to stop, releases, and b holds the id.
        a.publish_rate(10);
        tokio::time::timeout(Duration::from_secs(1), a.preempted())
            .await
            .expect("a preempted");
        drop(a);
        let b = b.await.unwrap().expect("b took over");
        // a, offering again, is busy now.
        assert!(
            r.claim(ID, &peer("a"), Duration::ZERO, 1000)
                .await
                .is_none()
        );
        drop(b);
        assert_eq!(r.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_id_is_reserved_for_the_waiter() {
        let r = Arc::new(Receiving::default());
        let a = r.claim(ID, &peer("a"), Duration::ZERO, 0).await.unwrap();
        let rb = r.clone();
        let b =
            tokio::spawn(async move { rb.claim(ID, &peer("b"), Duration::from_secs(5), 0).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // a gives up; whoever comes before b wakes finds the id reserved.
        drop(a);
        assert!(r.claim(ID, &peer("a"), Duration::ZERO, 0).await.is_none());
        assert!(b.await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_times_out_or_is_cancelled_leaves_no_reservation() {
        let r = Arc::new(Receiving::default());
        let a = r.claim(ID, &peer("a"), Duration::ZERO, 0).await.unwrap();
        // Takeovers disabled: b waits its full time and is busy.
        assert!(
            r.claim(ID, &peer("b"), Duration::from_secs(2), 0)
                .await
                .is_none()
        );
        let rc = r.clone();
        let c =
            tokio::spawn(async move { rc.claim(ID, &peer("c"), Duration::from_secs(60), 0).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        c.abort();
        let _ = c.await;
        drop(a);
        assert_eq!(r.len(), 0);
        assert!(r.claim(ID, &peer("d"), Duration::ZERO, 0).await.is_some());
    }
}
