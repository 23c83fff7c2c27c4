//! [`MemTransport`]: an in-memory [`Transport`] for the tokio executor, over a [`MemNet`] of
//! relays in the same process. A test double: a delivery runs the receiver's ingest inline on
//! the calling task (blocking its thread for that ingest), after sleeping the link's latency on
//! tokio's (pausable) clock.
//!
//! It also checks the executor's contract as a transfer starts: the sender's committed ledger
//! already counts the attempt (INV-14). A transfer that starts before that is noted, not failed
//! (a failure would only become one more retried attempt), and [`MemNet::unrecorded_starts`]
//! lists them for the test to assert on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use store::SegmentId;

use crate::clock::{Clock, ms};
use crate::core::{JobKey, Outcome};
use crate::peer::NodeId;
use crate::relay::Relay;
use crate::transport::Transport;

use super::sim::Link;

#[derive(Debug, Default)]
struct NetState {
    nodes: BTreeMap<NodeId, Relay>,
    links: BTreeMap<(NodeId, NodeId), Link>,
    /// Transfers that started while their sender's ledger did not count the attempt.
    unrecorded_starts: Vec<String>,
}

/// The nodes and links a [`MemTransport`] delivers over. Links not set are `Up` with 10 ms
/// latency.
#[derive(Debug, Clone, Default)]
pub struct MemNet {
    state: Arc<Mutex<NetState>>,
    connect_timeout_ms: u64,
}

fn key(a: &NodeId, b: &NodeId) -> (NodeId, NodeId) {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

impl MemNet {
    pub fn new() -> MemNet {
        MemNet {
            state: Default::default(),
            connect_timeout_ms: 1_000,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or replaces, after a restart) a node.
    pub fn add(&self, relay: Relay) {
        let id = relay.config().node_id.clone();
        self.lock().nodes.insert(id, relay);
    }

    /// Removes a node (it is down).
    pub fn remove(&self, id: &NodeId) {
        self.lock().nodes.remove(id);
    }

    pub fn set_link(&self, a: &NodeId, b: &NodeId, link: Link) {
        self.lock().links.insert(key(a, b), link);
    }

    /// Transfers that started before their attempt was committed (`sender seg>peer: row`); empty
    /// when the executor keeps its contract.
    pub fn unrecorded_starts(&self) -> Vec<String> {
        self.lock().unrecorded_starts.clone()
    }

    /// Notes a transfer whose attempt the sender's committed ledger does not count. A start
    /// always counts one ordinary attempt until its outcome is applied, whatever happens to the
    /// job meanwhile (a catch-up or a `one_peer` condition may end it), so a count of zero means
    /// the transfer started first.
    fn check_start_recorded(&self, me: &NodeId, key: &JobKey) {
        let sender = self.lock().nodes.get(me).cloned();
        let Some(sender) = sender else { return };
        let row = sender.job(key).ok().flatten();
        if row.as_ref().is_none_or(|r| r.counts.attempts == 0) {
            let line = format!("{me} {}>{}: {row:?}", key.seg.short(), key.peer);
            self.lock().unrecorded_starts.push(line);
        }
    }

    /// A transport sending as `me`.
    pub fn transport<C: Clock>(&self, me: NodeId, clock: Arc<C>) -> MemTransport<C> {
        MemTransport {
            net: self.clone(),
            me,
            clock,
        }
    }
}

/// Sends as one node over a [`MemNet`].
#[derive(Debug)]
pub struct MemTransport<C> {
    net: MemNet,
    me: NodeId,
    clock: Arc<C>,
}

impl<C: Clock> Transport for MemTransport<C> {
    async fn send(&self, peer: &NodeId, seg: SegmentId) -> Outcome {
        let job = JobKey {
            seg,
            peer: peer.clone(),
        };
        self.net.check_start_recorded(&self.me, &job);
        let link = {
            let st = self.net.lock();
            st.links
                .get(&key(&self.me, peer))
                .cloned()
                .unwrap_or(Link::Up { latency_ms: 10 })
        };
        let latency = match link {
            Link::Down => {
                tokio::time::sleep(ms(self.net.connect_timeout_ms)).await;
                return Outcome::Unreachable(format!("no route to {peer}"));
            }
            Link::Failing { latency_ms } => {
                tokio::time::sleep(ms(latency_ms)).await;
                return Outcome::TimedOut("transfer stalled".into());
            }
            Link::Up { latency_ms } | Link::Flaky { latency_ms, .. } => latency_ms,
        };
        tokio::time::sleep(ms(latency)).await;
        let (sender, receiver) = {
            let st = self.net.lock();
            (st.nodes.get(&self.me).cloned(), st.nodes.get(peer).cloned())
        };
        let (Some(sender), Some(receiver)) = (sender, receiver) else {
            return Outcome::Unreachable(format!("{peer} is down"));
        };
        let now = self.clock.now_ms();
        super::deliver(sender.store(), &self.me, &receiver, seg, now, now)
    }
}
