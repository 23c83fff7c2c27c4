//! What a reload of `edge.toml` changes: [`plan`] compares the configuration in force with the
//! one just read and validated, and sorts every difference into what the running daemon applies
//! live and what only a restart puts in force. It decides only; the daemon applies the plan
//! (see `daemon::reload`).
//!
//! Live: `known_peers` (added, removed, moved to another address), `[relay]`, the trusted
//! publishers and `log_level`. Everything else needs a restart: the node's identity and
//! sockets, its files, the store's limits, `[net]`, `[control]`, `[fleet]` and the log format.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;

use crate::config::{Config, KeyChange, section_changes};

/// What a reload does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Peers added to `known_peers`: accepted and dialled, given jobs for stored segments.
    pub peers_added: Vec<String>,
    /// Peers removed: their connections closed, their pending jobs cancelled.
    pub peers_removed: Vec<String>,
    /// Peers at a new address: reconnected there.
    pub peers_moved: Vec<KeyChange>,
    /// `[relay]` keys changed.
    pub relay: Vec<KeyChange>,
    /// Publisher keys trusted from now on.
    pub publishers_added: Vec<String>,
    /// Publisher keys no longer trusted (what they signed and is stored stays).
    pub publishers_removed: Vec<String>,
    /// `log_level`, old and new.
    pub log_level: Option<KeyChange>,
    /// Keys changed in the file that only a restart puts in force.
    pub needs_restart: Vec<String>,
}

impl Plan {
    /// Whether the daemon has anything to apply now.
    pub fn changes_live(&self) -> bool {
        !(self.peers_added.is_empty()
            && self.peers_removed.is_empty()
            && self.peers_moved.is_empty()
            && self.relay.is_empty()
            && self.publishers_added.is_empty()
            && self.publishers_removed.is_empty()
            && self.log_level.is_none())
    }

    /// One line: "peers: +node-4, -node-2; relay.attempts_max 5→8; log_level info→debug;
    /// needs a restart: listen_addr".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !(self.peers_added.is_empty() && self.peers_removed.is_empty()) {
            let each = self
                .peers_added
                .iter()
                .map(|p| format!("+{p}"))
                .chain(self.peers_removed.iter().map(|p| format!("-{p}")));
            parts.push(format!("peers: {}", each.collect::<Vec<_>>().join(", ")));
        }
        let change = |c: &KeyChange| format!("{} {}→{}", c.key, c.old, c.new);
        parts.extend(self.peers_moved.iter().map(change));
        parts.extend(self.relay.iter().map(change));
        if !(self.publishers_added.is_empty() && self.publishers_removed.is_empty()) {
            let each = self
                .publishers_added
                .iter()
                .map(|p| format!("+{p}"))
                .chain(self.publishers_removed.iter().map(|p| format!("-{p}")));
            parts.push(format!(
                "trusted publishers: {}",
                each.collect::<Vec<_>>().join(", ")
            ));
        }
        parts.extend(self.log_level.iter().map(change));
        if !self.needs_restart.is_empty() {
            parts.push(format!(
                "needs a restart: {}",
                self.needs_restart.join(", ")
            ));
        }
        if parts.is_empty() {
            "nothing changed".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// Compares the configuration in force (`old`) with a new one read from the same file.
pub fn plan(old: &Config, new: &Config) -> Plan {
    let mut plan = Plan::default();
    let addrs = |c: &Config| -> BTreeMap<String, SocketAddr> {
        c.known_peers
            .iter()
            .map(|p| (p.id.clone(), p.addr))
            .collect()
    };
    let (before, after) = (addrs(old), addrs(new));
    for (id, addr) in &after {
        match before.get(id) {
            None => plan.peers_added.push(id.clone()),
            Some(was) if was != addr => plan.peers_moved.push(KeyChange {
                key: format!("known_peers.{id}.addr"),
                old: was.to_string(),
                new: addr.to_string(),
            }),
            Some(_) => {}
        }
    }
    plan.peers_removed = before
        .keys()
        .filter(|id| !after.contains_key(*id))
        .cloned()
        .collect();

    for change in section_changes(old, new) {
        if change.key.starts_with("relay.") {
            plan.relay.push(change);
        } else {
            plan.needs_restart.push(change.key);
        }
    }

    let keys =
        |c: &Config| -> Vec<String> { c.store.trusted.iter().map(|k| k.to_string()).collect() };
    let (was, now) = (keys(old), keys(new));
    plan.publishers_added = now.iter().filter(|k| !was.contains(k)).cloned().collect();
    plan.publishers_removed = was.iter().filter(|k| !now.contains(k)).cloned().collect();

    if old.log_level != new.log_level {
        plan.log_level = Some(KeyChange {
            key: "log_level".into(),
            old: old.log_level.clone(),
            new: new.log_level.clone(),
        });
    }

    let mut restart = |key: &str, changed: bool| {
        if changed {
            plan.needs_restart.push(key.to_owned());
        }
    };
    restart("node_id", old.node_id != new.node_id);
    restart("listen_addr", old.listen_addr != new.listen_addr);
    restart("data_dir", old.store.data_dir != new.store.data_dir);
    restart("control_socket", old.control_socket != new.control_socket);
    restart("log_format", old.log_format != new.log_format);
    restart("metrics_addr", old.metrics_addr != new.metrics_addr);
    restart(
        "housekeeping_interval_ms",
        old.housekeeping_interval != new.housekeeping_interval,
    );
    restart(
        "clock_skew_max_s",
        old.store.clock_skew_ms != new.store.clock_skew_ms,
    );
    restart("tls.ca_cert", old.tls.ca_cert != new.tls.ca_cert);
    restart("tls.node_cert", old.tls.node_cert != new.tls.node_cert);
    restart("tls.node_key", old.tls.node_key != new.tls.node_key);
    restart(
        "store.ceiling_bytes",
        old.store.ceiling_bytes != new.store.ceiling_bytes,
    );
    restart(
        "store.min_free_bytes",
        old.store.min_free_bytes != new.store.min_free_bytes,
    );
    restart(
        "store.pinned_channels",
        old.store.pinned_channels != new.store.pinned_channels,
    );
    restart(
        "store.tombstones_max",
        old.store.tombstones_max != new.store.tombstones_max,
    );
    restart(
        "store.partial_age_max_ms",
        old.store.partial_age_max_ms != new.store.partial_age_max_ms,
    );
    restart(
        "store.scrub_bytes_per_sec",
        old.scrub_bytes_per_sec != new.scrub_bytes_per_sec,
    );
    restart("fleet.members", old.fleet.members != new.fleet.members);
    restart("deliver", old.deliver != new.deliver);
    restart(
        "fleet.stale_after_ms",
        old.fleet.stale_after_ms != new.fleet.stale_after_ms,
    );
    let (o, n) = (&old.net, &new.net);
    restart(
        "fleet.gossip_interval_ms",
        o.receipt_interval_ms != n.receipt_interval_ms,
    );
    restart(
        "fleet.gossip_pages_per_round_max",
        o.receipt_pages_per_round_max != n.receipt_pages_per_round_max,
    );
    restart(
        "fleet.alive_interval_ms",
        o.alive_interval_ms != n.alive_interval_ms,
    );
    restart(
        "fleet.receipts_per_node_max",
        o.receipts_per_node_max != n.receipts_per_node_max,
    );
    restart("fleet.nodes_max", o.fleet_nodes_max != n.fleet_nodes_max);
    plan
}

/// The configuration in force after `new` was applied to a daemon running with `old`: the
/// live keys from `new`, everything a restart would change still from `old` (so the next
/// reload reports those keys again).
pub fn in_force(old: &Config, new: &Config) -> Config {
    let mut out = old.clone();
    out.known_peers = new.known_peers.clone();
    out.net.known_peers = new.net.known_peers.clone();
    out.relay = relay::RelayConfig {
        node_id: old.relay.node_id.clone(),
        disk_mode: old.relay.disk_mode,
        ..new.relay.clone()
    };
    out.store.trusted = new.store.trusted.clone();
    out.log_level = new.log_level.clone();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "ed25519:0cac1246fbb6b2484b83d97cf4e212ea76829d79437948a87609dc08f932b9eb";
    const KEY_B: &str = "ed25519:1cac1246fbb6b2484b83d97cf4e212ea76829d79437948a87609dc08f932b9eb";

    /// A config read from `dir/edge.toml` with these extra top-level lines, peers, relay keys
    /// and publishers (TLS files exist: validation opens them).
    fn config(
        dir: &std::path::Path,
        top: &str,
        peers: &[(&str, &str)],
        relay: &str,
        publishers: &[&str],
    ) -> Config {
        for f in ["ca.crt", "n.crt", "n.key"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let mut text = format!(
            "node_id = \"node-1\"\nlisten_addr = \"127.0.0.1:7000\"\ndata_dir = \"data\"\n{top}\n\
             [tls]\nca_cert = \"ca.crt\"\nnode_cert = \"n.crt\"\nnode_key = \"n.key\"\n"
        );
        for (id, addr) in peers {
            text += &format!("[[known_peers]]\nid = \"{id}\"\naddr = \"{addr}\"\n");
        }
        let trusted: Vec<String> = publishers.iter().map(|k| format!("\"{k}\"")).collect();
        text += &format!(
            "[publishers]\ntrusted = [{}]\n[store]\nceiling_bytes = 1073741824\n[relay]\n{relay}\n",
            trusted.join(", ")
        );
        Config::parse(&dir.join("edge.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let peers = [("node-2", "127.0.0.1:7002")];
        let a = config(dir.path(), "", &peers, "", &[KEY_A]);
        let b = config(dir.path(), "", &peers, "", &[KEY_A]);
        let p = plan(&a, &b);
        assert_eq!(p, Plan::default());
        assert!(!p.changes_live());
        assert_eq!(p.describe(), "nothing changed");
    }

    #[test]
    fn peers_relay_publishers_and_log_level_change_live() {
        let dir = tempfile::tempdir().unwrap();
        let a = config(
            dir.path(),
            "",
            &[("node-2", "127.0.0.1:7002"), ("node-3", "127.0.0.1:7003")],
            "attempts_max = 5",
            &[KEY_A],
        );
        let b = config(
            dir.path(),
            "log_level = \"debug\"",
            &[("node-3", "127.0.0.1:7033"), ("node-4", "127.0.0.1:7004")],
            "attempts_max = 8",
            &[KEY_B],
        );
        let p = plan(&a, &b);
        assert_eq!(p.peers_added, ["node-4"]);
        assert_eq!(p.peers_removed, ["node-2"]);
        assert_eq!(p.peers_moved.len(), 1);
        assert_eq!(p.peers_moved[0].key, "known_peers.node-3.addr");
        assert_eq!(p.publishers_added, [KEY_B]);
        assert_eq!(p.publishers_removed, [KEY_A]);
        assert!(p.needs_restart.is_empty(), "{:?}", p.needs_restart);
        assert!(p.changes_live());
        assert_eq!(
            p.describe(),
            format!(
                "peers: +node-4, -node-2; known_peers.node-3.addr 127.0.0.1:7003→127.0.0.1:7033; \
                 relay.attempts_max 5→8; trusted publishers: +{KEY_B}, -{KEY_A}; log_level info→debug"
            )
        );
    }

    #[test]
    fn sockets_files_and_other_sections_need_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = config(dir.path(), "", &[], "", &[KEY_A]);
        let b = config(
            dir.path(),
            "metrics_addr = \"127.0.0.1:9100\"\nlog_format = \"json\"\n[net]\nidle_timeout_ms = 60000\n[control]\nconnections_max = 3",
            &[],
            "",
            &[KEY_A],
        );
        let mut b2 = b.clone();
        b2.listen_addr = "127.0.0.1:7001".parse().unwrap();
        let p = plan(&a, &b2);
        assert!(!p.changes_live());
        for key in [
            "listen_addr",
            "metrics_addr",
            "log_format",
            "net.idle_timeout_ms",
            "control.connections_max",
        ] {
            assert!(
                p.needs_restart.iter().any(|k| k == key),
                "{key} not in {:?}",
                p.needs_restart
            );
        }
        assert!(
            p.describe().starts_with("needs a restart: "),
            "{}",
            p.describe()
        );
    }

    #[test]
    fn what_is_in_force_keeps_what_needs_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = config(
            dir.path(),
            "",
            &[("node-2", "127.0.0.1:7002")],
            "",
            &[KEY_A],
        );
        let mut b = config(
            dir.path(),
            "log_level = \"debug\"",
            &[("node-3", "127.0.0.1:7003")],
            "attempts_max = 8",
            &[KEY_B],
        );
        b.listen_addr = "127.0.0.1:7001".parse().unwrap();
        let now = in_force(&a, &b);
        let again = plan(&now, &b);
        assert!(!again.changes_live(), "{again:?}");
        assert_eq!(again.needs_restart, ["listen_addr"]);
        assert_eq!(now.relay.known_peers.len(), 1);
        assert_eq!(now.relay.attempts_max, 8);
        assert_eq!(now.listen_addr, a.listen_addr);
    }
}
