//! Every bound of the relay, named with its unit last, and [`RelayConfig`]: the relay's knobs
//! with their documented defaults.
//!
//! Defaults are chosen for an airgapped fleet whose links drop for minutes (a reboot, a cable
//! pulled for maintenance) and whose peers fill up: with the defaults a job retries for about
//! 1.8 hours of ordinary failures (16 attempts, 1 s doubling to a 15 min cap) and for about
//! 10 hours of "store full" answers before it becomes a dead letter; catch-up covers the rest.
//! [`RelayConfig::validate`] refuses a configuration whose bounds contradict each other, naming
//! the key.

use std::collections::BTreeSet;

use base::DiskMode;

use crate::peer::NodeId;

/// Most known peers a node may have. The scheduler looks at every peer with ready jobs when it
/// picks the next job, so this bounds the cost of one pick.
pub const KNOWN_PEERS_MAX: usize = 1024;
/// Longest error text kept in a job or dead letter, in bytes (longer text is cut at a character
/// boundary and marked with `…`).
pub const ERROR_BYTES_MAX: usize = 512;
/// Most jobs whose starts the executor records in one ledger transaction.
pub const START_BATCH_MAX: usize = 256;
/// Most outcomes the executor folds into one ledger transaction.
pub const OUTCOME_BATCH_MAX: usize = 256;
/// Most dead letters aged (pins released) in one transaction.
pub const AGE_BATCH_MAX: usize = 256;
/// Largest exponent used in `backoff_base_ms · 2^n`: beyond it the cap applies anyway, and the
/// shift cannot overflow.
pub const BACKOFF_EXPONENT_MAX: u32 = 40;
/// Largest value of `jitter_percent`.
pub const JITTER_PERCENT_MAX: u32 = 100;

/// Default of [`RelayConfig::attempts_max`].
pub const ATTEMPTS_MAX_DEFAULT: u32 = 16;
/// Default of [`RelayConfig::backoff_base_ms`]: 1 s.
pub const BACKOFF_BASE_MS_DEFAULT: u64 = 1_000;
/// Default of [`RelayConfig::backoff_max_ms`]: 15 min.
pub const BACKOFF_MAX_MS_DEFAULT: u64 = 15 * 60 * 1_000;
/// Default of [`RelayConfig::jitter_percent`].
pub const JITTER_PERCENT_DEFAULT: u32 = 20;
/// Default of [`RelayConfig::store_full_backoff_min_ms`]: 1 min.
pub const STORE_FULL_BACKOFF_MIN_MS_DEFAULT: u64 = 60 * 1_000;
/// Default of [`RelayConfig::store_full_attempts_max`].
pub const STORE_FULL_ATTEMPTS_MAX_DEFAULT: u32 = 48;
/// Default of [`RelayConfig::busy_retry_ms`]: 2 s.
pub const BUSY_RETRY_MS_DEFAULT: u64 = 2_000;
/// Default of [`RelayConfig::busy_retries_max`].
pub const BUSY_RETRIES_MAX_DEFAULT: u32 = 100;
/// Default of [`RelayConfig::per_peer_concurrency_max`]. Many small segments in flight to one
/// peer share its round trips and its commits (its committer groups what arrives together);
/// sends of large ones are held to a few per peer by the network layer
/// (`net::NetConfig::large_sends_per_peer_max`), so this does not multiply buffers. 1,000
/// segments of 4 KiB reach a peer in 0.1 s after their import at 32-64, 1.6 s at 4.
pub const PER_PEER_CONCURRENCY_MAX_DEFAULT: usize = 32;
/// Default of [`RelayConfig::global_concurrency_max`].
pub const GLOBAL_CONCURRENCY_MAX_DEFAULT: usize = 64;
/// Default of [`RelayConfig::dead_letter_pin_max_age_ms`]: 7 days.
pub const DEAD_LETTER_PIN_MAX_AGE_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1_000;
/// Default of [`RelayConfig::attempt_timeout_ms`]: 6 hours.
pub const ATTEMPT_TIMEOUT_MS_DEFAULT: u64 = 6 * 3600 * 1_000;
/// Default of [`RelayConfig::wake_interval_max_ms`]: 1 min.
pub const WAKE_INTERVAL_MAX_MS_DEFAULT: u64 = 60 * 1_000;

/// The relay's configuration. Build it with [`RelayConfig::new`] (every knob at its default) and
/// check it with [`RelayConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// This node's id. Never a job target.
    pub node_id: NodeId,
    /// The peers this node relays to. At most [`KNOWN_PEERS_MAX`]; jobs for peers no longer
    /// listed are cancelled when the relay opens.
    pub known_peers: BTreeSet<NodeId>,
    /// Attempts (ordinary failures: unreachable, timed out, failed) before a job becomes a dead
    /// letter. Default [`ATTEMPTS_MAX_DEFAULT`].
    pub attempts_max: u32,
    /// First retry delay; the n-th retry waits `min(backoff_max_ms, backoff_base_ms · 2^(n-1))`
    /// before jitter. Default [`BACKOFF_BASE_MS_DEFAULT`].
    pub backoff_base_ms: u64,
    /// Cap of every retry delay, and of how far in the future a loaded due time may lie.
    /// Default [`BACKOFF_MAX_MS_DEFAULT`].
    pub backoff_max_ms: u64,
    /// Jitter: a delay `d` becomes a uniform draw from `[d − d·jitter_percent/100, d]`, so jitter
    /// only ever shortens a delay and no delay exceeds `backoff_max_ms`. 0..=100. Default
    /// [`JITTER_PERCENT_DEFAULT`].
    pub jitter_percent: u32,
    /// Floor of the delay after the peer answered "store full" (its store needs time to free
    /// space); the delay doubles from `max(floor, base · 2^(n-1))` up to `backoff_max_ms`.
    /// Default [`STORE_FULL_BACKOFF_MIN_MS_DEFAULT`].
    pub store_full_backoff_min_ms: u64,
    /// "Store full" answers before a job becomes a dead letter (counted apart from
    /// `attempts_max`, and larger). Default [`STORE_FULL_ATTEMPTS_MAX_DEFAULT`].
    pub store_full_attempts_max: u32,
    /// Delay after the peer answered "busy" (it is receiving the same segment from another
    /// peer). A busy answer does not count as an attempt. Default [`BUSY_RETRY_MS_DEFAULT`].
    pub busy_retry_ms: u64,
    /// Consecutive busy answers that are not counted; beyond it a busy answer counts as an
    /// ordinary failed attempt, so a peer stuck at "busy" still ends in a dead letter. Default
    /// [`BUSY_RETRIES_MAX_DEFAULT`].
    pub busy_retries_max: u32,
    /// Transfers in flight to one peer. Default [`PER_PEER_CONCURRENCY_MAX_DEFAULT`].
    pub per_peer_concurrency_max: usize,
    /// Transfers in flight in total. Default [`GLOBAL_CONCURRENCY_MAX_DEFAULT`].
    pub global_concurrency_max: usize,
    /// How long a dead letter keeps its segment pinned (safe from eviction) after it died. The
    /// dead-letter record itself stays until purged. Default
    /// [`DEAD_LETTER_PIN_MAX_AGE_MS_DEFAULT`].
    pub dead_letter_pin_max_age_ms: u64,
    /// Safety net on one transfer as the executor sees it; the transport's own stall timeout
    /// normally ends a stuck transfer long before. Default [`ATTEMPT_TIMEOUT_MS_DEFAULT`].
    pub attempt_timeout_ms: u64,
    /// Longest the executor sleeps while jobs are pending, so a jump of the wall clock is noticed
    /// within this. With nothing pending it sleeps until woken. Default
    /// [`WAKE_INTERVAL_MAX_MS_DEFAULT`].
    pub wake_interval_max_ms: u64,
    /// Forward a segment to the peers it would be scheduled for while it still arrives,
    /// verified group by verified group (cut-through), instead of only once stored. The ledger
    /// is unchanged either way. Default `true`.
    pub cut_through: bool,
    /// Where the async ledger operations wait for their commit: on a blocking thread
    /// ([`DiskMode::Threads`], the default and the only mode for a daemon) or on the calling
    /// task ([`DiskMode::Inline`], for deterministic simulations on one thread). Not an
    /// `edge.toml` key.
    pub disk_mode: DiskMode,
}

/// A configuration that contradicts itself: the key and why (see [`base::setting::Refused`]).
pub type ConfigError = base::setting::Refused;

impl RelayConfig {
    /// A configuration for `node_id` and its peers with every knob at its default.
    pub fn new(node_id: NodeId, known_peers: impl IntoIterator<Item = NodeId>) -> RelayConfig {
        RelayConfig {
            node_id,
            known_peers: known_peers.into_iter().collect(),
            attempts_max: ATTEMPTS_MAX_DEFAULT,
            backoff_base_ms: BACKOFF_BASE_MS_DEFAULT,
            backoff_max_ms: BACKOFF_MAX_MS_DEFAULT,
            jitter_percent: JITTER_PERCENT_DEFAULT,
            store_full_backoff_min_ms: STORE_FULL_BACKOFF_MIN_MS_DEFAULT,
            store_full_attempts_max: STORE_FULL_ATTEMPTS_MAX_DEFAULT,
            busy_retry_ms: BUSY_RETRY_MS_DEFAULT,
            busy_retries_max: BUSY_RETRIES_MAX_DEFAULT,
            per_peer_concurrency_max: PER_PEER_CONCURRENCY_MAX_DEFAULT,
            global_concurrency_max: GLOBAL_CONCURRENCY_MAX_DEFAULT,
            dead_letter_pin_max_age_ms: DEAD_LETTER_PIN_MAX_AGE_MS_DEFAULT,
            attempt_timeout_ms: ATTEMPT_TIMEOUT_MS_DEFAULT,
            wake_interval_max_ms: WAKE_INTERVAL_MAX_MS_DEFAULT,
            cut_through: true,
            disk_mode: DiskMode::Threads,
        }
    }

    /// Checks every bound and the relations between them; the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every bound and relation this configuration breaks, each once, so that a file with
    /// several mistakes is corrected in one go.
    pub fn problems(&self) -> Vec<ConfigError> {
        use base::setting::{Bound, Conflict};
        let mut problems = Vec::new();
        if self.known_peers.len() > KNOWN_PEERS_MAX {
            problems.push(ConfigError::new(
                "known_peers",
                format!(
                    "{} peers, at most {KNOWN_PEERS_MAX}",
                    self.known_peers.len()
                ),
            ));
        }
        if self.known_peers.contains(&self.node_id) {
            problems.push(ConfigError::new(
                "known_peers",
                format!("lists this node's own id {}", self.node_id),
            ));
        }
        let positive: [(&'static str, u64); 10] = [
            ("attempts_max", self.attempts_max.into()),
            ("backoff_base_ms", self.backoff_base_ms),
            ("backoff_max_ms", self.backoff_max_ms),
            (
                "store_full_attempts_max",
                self.store_full_attempts_max.into(),
            ),
            ("busy_retry_ms", self.busy_retry_ms),
            (
                "per_peer_concurrency_max",
                self.per_peer_concurrency_max as u64,
            ),
            ("global_concurrency_max", self.global_concurrency_max as u64),
            ("attempt_timeout_ms", self.attempt_timeout_ms),
            ("wake_interval_max_ms", self.wake_interval_max_ms),
            ("store_full_backoff_min_ms", self.store_full_backoff_min_ms),
        ];
        let mut zero = BTreeSet::new();
        for (key, value) in positive {
            if value == 0 {
                zero.insert(key);
                problems.push(ConfigError::new(key, "must be greater than 0".into()));
            }
        }
        let backoff_max = ("backoff_max_ms", self.backoff_max_ms);
        let conflicts = [
            Conflict::check(
                ("backoff_base_ms", self.backoff_base_ms),
                Bound::AtMost,
                backoff_max,
                "",
            ),
            Conflict::check(
                ("store_full_backoff_min_ms", self.store_full_backoff_min_ms),
                Bound::AtMost,
                backoff_max,
                "due times are clamped to backoff_max_ms",
            ),
            Conflict::check(
                ("busy_retry_ms", self.busy_retry_ms),
                Bound::AtMost,
                backoff_max,
                "",
            ),
            Conflict::check(
                (
                    "store_full_attempts_max",
                    self.store_full_attempts_max.into(),
                ),
                Bound::AtLeast,
                ("attempts_max", self.attempts_max.into()),
                "store-full is retried longer, not shorter",
            ),
            Conflict::check(
                (
                    "per_peer_concurrency_max",
                    self.per_peer_concurrency_max as u64,
                ),
                Bound::AtMost,
                ("global_concurrency_max", self.global_concurrency_max as u64),
                "",
            ),
        ];
        // A zero already reported is not reported again as a conflict.
        problems.extend(
            conflicts
                .into_iter()
                .flatten()
                .filter(|c| !zero.contains(c.key) && !zero.contains(c.other))
                .map(ConfigError::from),
        );
        if self.jitter_percent > JITTER_PERCENT_MAX {
            problems.push(ConfigError::new(
                "jitter_percent",
                format!("{} is above {JITTER_PERCENT_MAX}", self.jitter_percent),
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RelayConfig {
        RelayConfig::new(
            NodeId::new("a").unwrap(),
            [NodeId::new("b").unwrap(), NodeId::new("c").unwrap()],
        )
    }

    #[test]
    fn defaults_are_valid() {
        cfg().validate().unwrap();
    }

    #[test]
    fn each_contradiction_names_its_key() {
        type Edit = fn(&mut RelayConfig);
        let cases: &[(Edit, &str)] = &[
            (|c| c.attempts_max = 0, "attempts_max"),
            (
                |c| c.backoff_base_ms = c.backoff_max_ms + 1,
                "backoff_base_ms",
            ),
            (
                |c| c.store_full_backoff_min_ms = c.backoff_max_ms + 1,
                "store_full_backoff_min_ms",
            ),
            (
                |c| c.jitter_percent = JITTER_PERCENT_MAX + 1,
                "jitter_percent",
            ),
            (
                |c| c.store_full_attempts_max = c.attempts_max - 1,
                "store_full_attempts_max",
            ),
            (
                |c| c.per_peer_concurrency_max = c.global_concurrency_max + 1,
                "per_peer_concurrency_max",
            ),
            (|c| c.busy_retry_ms = c.backoff_max_ms + 1, "busy_retry_ms"),
            (
                |c| {
                    c.known_peers.insert(c.node_id.clone());
                },
                "known_peers",
            ),
        ];
        for (edit, key) in cases {
            let mut c = cfg();
            edit(&mut c);
            assert_eq!(c.validate().unwrap_err().key, *key);
        }
        // N is fine where N+1 is not.
        let mut c = cfg();
        c.jitter_percent = JITTER_PERCENT_MAX;
        c.backoff_base_ms = c.backoff_max_ms;
        c.store_full_backoff_min_ms = c.backoff_max_ms;
        c.store_full_attempts_max = c.attempts_max;
        c.per_peer_concurrency_max = c.global_concurrency_max;
        c.validate().unwrap();
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut c = cfg();
        c.backoff_max_ms = 100;
        c.jitter_percent = JITTER_PERCENT_MAX + 1;
        let problems = c.problems();
        let keys: Vec<_> = problems.iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            [
                "backoff_base_ms",
                "store_full_backoff_min_ms",
                "busy_retry_ms",
                "jitter_percent"
            ]
        );
        let busy = problems[2].conflict.as_ref().unwrap();
        assert_eq!(
            (busy.value, busy.other, busy.other_value),
            (BUSY_RETRY_MS_DEFAULT, "backoff_max_ms", 100)
        );
        // validate() is the first of them.
        assert_eq!(c.validate().unwrap_err(), problems[0]);
        // A zero is reported once, not again as a conflict.
        let mut c = cfg();
        c.backoff_max_ms = 0;
        let keys: Vec<_> = c.problems().iter().map(|e| e.key).collect();
        assert_eq!(keys, ["backoff_max_ms"]);
    }

    #[test]
    fn known_peers_bound_at_n_and_n_plus_1() {
        let mut c = cfg();
        c.known_peers = (0..KNOWN_PEERS_MAX)
            .map(|i| NodeId::new(&format!("p{i}")).unwrap())
            .collect();
        c.validate().unwrap();
        c.known_peers
            .insert(NodeId::new(&format!("p{KNOWN_PEERS_MAX}")).unwrap());
        assert_eq!(c.validate().unwrap_err().key, "known_peers");
    }
}
