//! Space decisions without I/O: how many bytes must be freed, and which segments to evict.
//!
//! The store gathers the facts (usage, free space, candidate rows with their pin and busy
//! state) and applies the plan; this module only decides, so every rule is tested directly.

use crate::id::SegmentId;

/// Bytes the store counts against its ceiling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// `.seg` files in `segments/`.
    pub stored_bytes: u64,
    /// Grants of the ingests in flight: at least what each has written (its header and the
    /// payload received), at most its full length.
    pub reserved_bytes: u64,
    /// Checkpointed bytes of idle partials kept for resume.
    pub partial_bytes: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.stored_bytes + self.reserved_bytes + self.partial_bytes
    }
}

/// Space limits of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub ceiling_bytes: u64,
    pub min_free_bytes: u64,
}

/// Bytes that must be freed before `need_bytes` more can be reserved: the larger of what the
/// ceiling and the free-space floor demand. Zero when it fits.
pub fn shortfall(usage: Usage, need_bytes: u64, limits: Limits, available_bytes: u64) -> u64 {
    let over_ceiling = (usage.total() + need_bytes).saturating_sub(limits.ceiling_bytes);
    // Reservations in flight will still be written: they consume free space too.
    let over_floor =
        (limits.min_free_bytes + usage.reserved_bytes + need_bytes).saturating_sub(available_bytes);
    over_ceiling.max(over_floor)
}

/// Bytes that can be reserved now without evicting anything: the largest `need_bytes` whose
/// [`shortfall`] is zero.
pub fn headroom(usage: Usage, limits: Limits, available_bytes: u64) -> u64 {
    let under_ceiling = limits.ceiling_bytes.saturating_sub(usage.total());
    let above_floor = available_bytes
        .saturating_sub(limits.min_free_bytes)
        .saturating_sub(usage.reserved_bytes);
    under_ceiling.min(above_floor)
}

/// A stored segment as eviction sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: SegmentId,
    pub file_len: u64,
    pub priority: u8,
    pub last_used_ms: u64,
    pub expires_at_ms: Option<u64>,
    /// Pinned by an owner (the relay, while a peer is owed it): never evicted.
    pub pinned: bool,
    /// In a channel this host consumes: kept unless expired.
    pub channel_pinned: bool,
    /// Being read for sending or export: never evicted.
    pub busy: bool,
    /// A higher sequence of its publisher, channel and name is stored: evicted before anything
    /// still current, even in a pinned channel.
    pub superseded: bool,
}

impl Candidate {
    fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// May a plan choose it: not pinned, not busy, and channel-pinned only once expired.
    fn evictable(&self, now_ms: u64) -> bool {
        !self.pinned
            && !self.busy
            && (self.expired(now_ms) || self.superseded || !self.channel_pinned)
    }
}

/// The bytes every eviction a plan may make would free: what a "store full" refusal can
/// honestly say could be made available.
pub fn evictable_bytes(candidates: &[Candidate], now_ms: u64) -> u64 {
    candidates
        .iter()
        .filter(|c| c.evictable(now_ms))
        .map(|c| c.file_len)
        .sum()
}

/// Which segments to evict to free `need_bytes`: expired ones first (soonest expiry first), then
/// superseded ones, then the rest by lowest priority, least recently used, id. Pinned and busy segments are never
/// chosen; channel-pinned ones only when expired. All or nothing: if the evictable segments
/// cannot free enough, the plan is empty, because evicting without making room loses content
/// for no gain.
pub fn plan(candidates: &[Candidate], need_bytes: u64, now_ms: u64) -> Vec<SegmentId> {
    if need_bytes == 0 {
        return Vec::new();
    }
    let mut order: Vec<&Candidate> = candidates.iter().filter(|c| c.evictable(now_ms)).collect();
    order.sort_by_key(|c| {
        let expired = c.expired(now_ms);
        (
            !expired,
            if expired { c.expires_at_ms } else { None },
            !c.superseded,
            c.priority,
            c.last_used_ms,
            c.id,
        )
    });
    let mut freed = 0u64;
    let mut chosen = Vec::new();
    for c in order {
        if freed >= need_bytes {
            break;
        }
        freed += c.file_len;
        chosen.push(c.id);
    }
    if freed >= need_bytes {
        chosen
    } else {
        Vec::new()
    }
}

/// Expired segments that may go now (not pinned by an owner, not busy), in id order.
pub fn expired(candidates: &[Candidate], now_ms: u64) -> Vec<SegmentId> {
    candidates
        .iter()
        .filter(|c| c.expired(now_ms) && !c.pinned && !c.busy)
        .map(|c| c.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> SegmentId {
        SegmentId([n; 32])
    }

    fn cand(n: u8, len: u64, priority: u8, last_used_ms: u64) -> Candidate {
        Candidate {
            id: id(n),
            file_len: len,
            priority,
            last_used_ms,
            expires_at_ms: None,
            pinned: false,
            channel_pinned: false,
            busy: false,
            superseded: false,
        }
    }

    fn check(candidates: &[Candidate], need: u64, now: u64, expected: &[u8]) {
        let got = plan(candidates, need, now);
        let want: Vec<SegmentId> = expected.iter().map(|n| id(*n)).collect();
        assert_eq!(got, want, "need {need} at {now}");
    }

    #[test]
    fn shortfall_takes_the_larger_of_ceiling_and_floor() {
        let limits = Limits {
            ceiling_bytes: 100,
            min_free_bytes: 10,
        };
        let usage = Usage {
            stored_bytes: 60,
            reserved_bytes: 10,
            partial_bytes: 10,
        };
        assert_eq!(shortfall(usage, 20, limits, 1_000), 0);
        assert_eq!(shortfall(usage, 21, limits, 1_000), 1);
        // Free space: 10 floor + 10 reserved + 20 needed = 40 > 35 available.
        assert_eq!(shortfall(usage, 20, limits, 35), 5);
        assert_eq!(shortfall(usage, 30, limits, 1_000), 10);
    }

    #[test]
    fn inv_06_headroom_is_the_largest_need_without_shortfall() {
        let limits = Limits {
            ceiling_bytes: 100,
            min_free_bytes: 10,
        };
        let usage = Usage {
            stored_bytes: 60,
            reserved_bytes: 10,
            partial_bytes: 10,
        };
        // (available, headroom): the ceiling binds, then the floor.
        for (available, want) in [(1_000, 20), (35, 15), (20, 0)] {
            let room = headroom(usage, limits, available);
            assert_eq!(room, want, "available {available}");
            assert_eq!(shortfall(usage, room, limits, available), 0);
            assert_eq!(shortfall(usage, room + 1, limits, available), 1);
        }
        // Below the floor already: no room, and a shortfall even for nothing.
        assert_eq!(headroom(usage, limits, 0), 0);
        assert_eq!(shortfall(usage, 0, limits, 0), 20);
        // Over the ceiling already (a lowered ceiling): no room, and the shortfall says by how
        // much more than asked.
        let over = Usage {
            stored_bytes: 120,
            ..Usage::default()
        };
        assert_eq!(headroom(over, limits, 1_000), 0);
        assert_eq!(shortfall(over, 1, limits, 1_000), 21);
    }

    #[test]
    fn inv_07_lowest_priority_then_least_recently_used_goes_first() {
        let c = [
            cand(1, 10, 5, 100),
            cand(2, 10, 1, 300),
            cand(3, 10, 1, 200),
        ];
        check(&c, 10, 0, &[3]);
        check(&c, 11, 0, &[3, 2]);
        check(&c, 30, 0, &[3, 2, 1]);
        check(&c, 31, 0, &[]);
    }

    #[test]
    fn inv_07_evictable_bytes_counts_what_a_plan_may_choose() {
        let mut c = [
            cand(1, 10, 0, 0),
            cand(2, 20, 0, 0),
            cand(3, 40, 0, 0),
            cand(4, 80, 0, 0),
            cand(5, 160, 0, 0),
        ];
        c[1].pinned = true;
        c[2].busy = true;
        c[3].channel_pinned = true;
        c[4].channel_pinned = true;
        c[4].expires_at_ms = Some(50);
        // Before the expiry only segment 1 may go; after it, the expired channel-pinned one too.
        assert_eq!(evictable_bytes(&c, 49), 10);
        assert_eq!(evictable_bytes(&c, 50), 170);
        // The same set a plan for everything chooses.
        let all: u64 = c.iter().map(|c| c.file_len).sum();
        assert!(plan(&c, 11, 49).is_empty());
        assert_eq!(plan(&c, 170, 50).len(), 2);
        assert!(plan(&c, all, 50).is_empty());
    }

    #[test]
    fn inv_07_expired_go_first_even_if_high_priority_or_channel_pinned() {
        let mut c = [
            cand(1, 10, 0, 0),
            cand(2, 10, 255, 500),
            cand(3, 10, 200, 9),
        ];
        c[1].expires_at_ms = Some(50);
        c[1].channel_pinned = true;
        c[2].expires_at_ms = Some(40);
        check(&c, 15, 100, &[3, 2]);
        // Not yet expired: the channel pin protects segment 2.
        check(&c, 20, 45, &[3, 1]);
        check(&c, 21, 45, &[]);
        assert_eq!(expired(&c, 100), vec![id(2), id(3)]);
    }

    #[test]
    fn inv_07_pinned_and_busy_are_never_evicted() {
        let mut c = [cand(1, 10, 0, 0), cand(2, 10, 0, 0), cand(3, 10, 9, 9)];
        c[0].pinned = true;
        c[1].busy = true;
        c[1].expires_at_ms = Some(1);
        c[0].expires_at_ms = Some(1);
        check(&c, 10, 100, &[3]);
        check(&c, 11, 100, &[]);
        assert!(expired(&c, 100).is_empty());
    }

    #[test]
    fn nothing_to_free_plans_nothing() {
        check(&[cand(1, 10, 0, 0)], 0, 0, &[]);
    }

    #[test]
    fn superseded_segments_go_after_expired_and_before_the_rest_even_when_channel_pinned() {
        let mut old = cand(1, 10, 255, 9_000);
        old.superseded = true;
        old.channel_pinned = true;
        let cheap = cand(2, 10, 0, 0);
        let mut expired = cand(3, 10, 255, 9_000);
        expired.expires_at_ms = Some(5);
        let all = [cheap.clone(), old.clone(), expired.clone()];
        assert_eq!(plan(&all, 30, 10), vec![id(3), id(1), id(2)]);
        assert_eq!(plan(&all, 10, 0), vec![id(1)]);
        // Superseded is not expired: the sweep leaves it.
        assert!(expired_ids_exclude_superseded(&all));
    }

    fn expired_ids_exclude_superseded(all: &[Candidate]) -> bool {
        !super::expired(all, 10).contains(&id(1))
    }
}
