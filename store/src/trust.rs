//! What a node trusts now: publisher keys with their channels, the signatures each channel
//! needs, and the expiries that keep a frozen node from serving stale content.
//!
//! Two sources make a [`TrustedPublishers`]:
//! - `[publishers] trusted` in `edge.toml` (the simple case): every key on every channel,
//!   threshold 1, no expiry, no root document — so no key rotation over the fleet either;
//! - a [`SignedRoot`] ([`crate::root`]): the node starts from the root file named in
//!   `edge.toml` and moves to each newer root it receives and accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::keys::PublisherKey;
use crate::manifest::VerifyError;
use crate::root::{ALL_CHANNELS, PublisherGrant, SignedRoot};

/// The publisher keys a node accepts segments from, per channel, with thresholds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedPublishers {
    /// Each key and the channels it may sign (`None`: every channel).
    grants: BTreeMap<PublisherKey, Option<BTreeSet<String>>>,
    /// The root these grants come from, if any.
    root: Option<Arc<SignedRoot>>,
}

impl TrustedPublishers {
    /// The trust of a root document (which the caller has verified).
    pub fn from_root(root: SignedRoot) -> TrustedPublishers {
        let grants = root
            .document()
            .publishers
            .iter()
            .map(|PublisherGrant { key, channels }| {
                let all = channels.iter().any(|c| c == ALL_CHANNELS);
                (*key, (!all).then(|| channels.iter().cloned().collect()))
            })
            .collect();
        TrustedPublishers {
            grants,
            root: Some(Arc::new(root)),
        }
    }

    /// Whether `key` may sign something (on some channel).
    pub fn contains(&self, key: &PublisherKey) -> bool {
        self.grants.contains_key(key)
    }

    /// Whether `key` may sign manifests of `channel`.
    pub fn authorizes(&self, key: &PublisherKey, channel: &str) -> bool {
        match self.grants.get(key) {
            Some(None) => true,
            Some(Some(channels)) => channels.contains(channel),
            None => false,
        }
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    /// Whether no key is trusted (then no segment is accepted).
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The trusted keys, in order.
    pub fn iter(&self) -> impl Iterator<Item = &PublisherKey> {
        self.grants.keys()
    }

    /// The root document these grants come from (`None`: `[publishers] trusted`).
    pub fn root(&self) -> Option<&SignedRoot> {
        self.root.as_deref()
    }

    /// The version of the root in force (0 without a root document).
    pub fn root_version(&self) -> u64 {
        self.root.as_ref().map_or(0, |r| r.version())
    }

    /// Distinct trusted signatures a manifest of `channel` needs.
    pub fn threshold(&self, channel: &str) -> u8 {
        self.root
            .as_ref()
            .map_or(1, |r| r.document().rule(channel).0)
    }

    /// Checks the (already verified) signers of a manifest of `channel` published by
    /// `publisher`: at least the channel's threshold of distinct keys trusted for it.
    pub fn check_signers<'a>(
        &self,
        channel: &str,
        publisher: &PublisherKey,
        signers: impl Iterator<Item = &'a PublisherKey>,
    ) -> Result<(), VerifyError> {
        let valid: BTreeSet<&PublisherKey> =
            signers.filter(|k| self.authorizes(k, channel)).collect();
        if valid.is_empty() {
            return Err(VerifyError::UntrustedPublisher {
                publisher: *publisher,
            });
        }
        // Mutation point (INV-36): one trusted signature is taken as enough on any channel.
        let needed = if crate::mutants::active("ignore_channel_threshold") {
            1
        } else {
            usize::from(self.threshold(channel))
        };
        if valid.len() < needed {
            return Err(VerifyError::BelowThreshold {
                channel: channel.to_owned(),
                valid: valid.len(),
                needed,
            });
        }
        Ok(())
    }

    /// Whether content of `channel` is stale at `now_ms` (allowing `skew_ms`): the root in force
    /// or the channel's rule expired. Freeze protection: a node cut off from newer roots stops
    /// taking new content instead of trusting keys forever.
    pub fn check_fresh(&self, channel: &str, now_ms: u64, skew_ms: u64) -> Result<(), VerifyError> {
        let Some(root) = &self.root else {
            return Ok(());
        };
        let doc = root.document();
        // Mutation point (INV-38): a node past its root's expiry goes on taking content.
        if crate::mutants::active("ignore_root_expiry") {
            return Ok(());
        }
        if let Some(expires_at_ms) = doc.expires_at_ms {
            if expires_at_ms.saturating_add(skew_ms) <= now_ms {
                return Err(VerifyError::RootExpired {
                    version: doc.version,
                    expires_at_ms,
                    now_ms,
                });
            }
        }
        if let (_, Some(expires_at_ms)) = doc.rule(channel) {
            if expires_at_ms.saturating_add(skew_ms) <= now_ms {
                return Err(VerifyError::ChannelExpired {
                    channel: channel.to_owned(),
                    expires_at_ms,
                    now_ms,
                });
            }
        }
        Ok(())
    }

    /// The earliest expiry ahead (the root's or a channel's), for warnings: `(what, when)`.
    pub fn next_expiry(&self) -> Option<(String, u64)> {
        let doc = self.root.as_ref()?.document();
        let root = doc
            .expires_at_ms
            .map(|e| (format!("root version {}", doc.version), e));
        let channels = doc.channels.iter().filter_map(|r| {
            r.expires_at_ms
                .map(|e| (format!("channel {}", r.channel), e))
        });
        root.into_iter().chain(channels).min_by_key(|(_, e)| *e)
    }
}

impl FromIterator<PublisherKey> for TrustedPublishers {
    /// Every key on every channel, threshold 1: `[publishers] trusted`.
    fn from_iter<I: IntoIterator<Item = PublisherKey>>(iter: I) -> Self {
        Self {
            grants: iter.into_iter().map(|k| (k, None)).collect(),
            root: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root::tests::{doc, key, signed};
    use crate::root::{ChannelRule, PublisherGrant};

    #[test]
    fn inv_36_threshold_k_minus_1_refused_k_accepted() {
        let t = TrustedPublishers::from_root(signed(doc(1, &[1], 1, &[10, 11, 12], 2), &[1]));
        let (a, b, c) = (key(10).public(), key(11).public(), key(12).public());
        assert_eq!(
            t.check_signers("rel", &a, [a].iter()),
            Err(VerifyError::BelowThreshold {
                channel: "rel".into(),
                valid: 1,
                needed: 2
            })
        );
        // The same key twice counts once.
        assert!(t.check_signers("rel", &a, [a, a].iter()).is_err());
        t.check_signers("rel", &a, [a, b].iter()).unwrap();
        t.check_signers("rel", &a, [a, b, c].iter()).unwrap();
        // Other channels need one.
        t.check_signers("ops", &a, [a].iter()).unwrap();
        let stranger = key(99).public();
        assert_eq!(
            t.check_signers("ops", &stranger, [stranger].iter()),
            Err(VerifyError::UntrustedPublisher {
                publisher: stranger
            })
        );
    }

    #[test]
    fn a_key_counts_only_on_its_channels() {
        let mut d = doc(1, &[1], 1, &[10], 1);
        d.publishers.push(PublisherGrant {
            key: key(11).public(),
            channels: vec!["ops".into()],
        });
        d.publishers.sort_by_key(|p| p.key);
        d.channels = vec![];
        let t = TrustedPublishers::from_root(signed(d, &[1]));
        let ops = key(11).public();
        t.check_signers("ops", &ops, [ops].iter()).unwrap();
        assert!(t.check_signers("rel", &ops, [ops].iter()).is_err());
        assert!(t.authorizes(&key(10).public(), "anything"));
    }

    #[test]
    fn freeze_protection_by_root_and_by_channel() {
        let now = crate::root::tests::NOW_MS;
        let mut d = doc(1, &[1], 1, &[10], 1);
        d.expires_at_ms = Some(now + 100);
        d.channels = vec![ChannelRule {
            channel: "rel".into(),
            threshold: 1,
            expires_at_ms: Some(now + 50),
        }];
        let t = TrustedPublishers::from_root(signed(d, &[1]));
        t.check_fresh("ops", now + 99, 0).unwrap();
        assert!(matches!(
            t.check_fresh("ops", now + 100, 0),
            Err(VerifyError::RootExpired { .. })
        ));
        t.check_fresh("ops", now + 100, 1).unwrap();
        assert!(matches!(
            t.check_fresh("rel", now + 50, 0),
            Err(VerifyError::ChannelExpired { .. })
        ));
        assert_eq!(t.next_expiry(), Some(("channel rel".into(), now + 50)));
        let simple: TrustedPublishers = [key(10).public()].into_iter().collect();
        simple.check_fresh("rel", u64::MAX, 0).unwrap();
        assert_eq!(simple.root_version(), 0);
    }
}
