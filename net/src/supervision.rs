//! Which connection with a peer to keep when another one is established: the pure rule of
//! connection supervision ([`crate::node`] applies it and does the I/O).
//!
//! - **No connection yet**: the new one is taken.
//! - **A fresh connection replaces one established more than a handshake window ago**, whoever
//!   opened either: a supervisor dials only when it has no connection, so a new connection
//!   from a peer means the peer lost the old one (it restarted after a crash, or its end timed
//!   out); the old one is closed at once, even mid-transfer — its streams are dead at the
//!   other end — and so is any retired one still draining (older still), which also frees
//!   their places under `connections_per_peer_max`. Without this, a peer killed while
//!   receiving could not reconnect until the dead connection's idle timeout.
//! - **Two connections opened by the same side** within the window: the newer wins, the older
//!   closes at once (that side gave it up).
//! - **A fresh connection from the peer whose handshake began well after the current one was
//!   established here** (more than a crossing margin: some round trips, at least a floor) also
//!   replaces it at once, young or not: the peer had the current connection before it dialled,
//!   so it lost it (it restarted right after connecting).
//! - **Both sides dialled at once** (the connections were opened by different sides, within the
//!   window, and an inbound one began within the crossing margin; this node's own dial always
//!   crossed, since its supervisor dials only without a connection): both ends keep the one
//!   opened by the lower id, so they agree without talking; the
//!   other one is **retired when idle**: it serves the streams already on it, takes no new
//!   ones from this node, and is closed once no stream has been in flight on it for a grace
//!   period. A transfer that started on it before both ends saw the second connection is
//!   never cut.
//!
//! The window is the dial timeout: two handshakes that cross complete within it of each other.
//! If the two ends see the ages differently (one handshake took nearly the whole window), one
//! end may replace while the other retires; then both connections close and the supervisors
//! dial again — a rare extra round trip, never a lost acknowledgement.

use std::time::Duration;

/// The connection in use, as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    pub opened_by_me: bool,
    /// Since it was established at this node.
    pub age: Duration,
}

/// What to do with a connection that is not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    /// Close it now.
    Now,
    /// Let the streams on it finish, then close it.
    WhenIdle,
}

/// The newly established connection, as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct New {
    pub opened_by_me: bool,
    /// How long after the current connection was established here the new one's handshake
    /// reached this node (zero if before).
    pub began_after_current: Duration,
}

/// The decision for a newly established connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The new connection becomes the current one; the old one (if any) is retired so.
    New { retire_current: Option<Retire> },
    /// The current connection stays; the new one is retired so.
    Current { retire_new: Retire },
}

/// The rule of the module docs. `lower_is_me`: this node's id is the lower of the two;
/// `window`: the handshake window (the dial timeout); `crossing`: the crossing margin.
pub fn keep(
    current: Option<Current>,
    new: New,
    lower_is_me: bool,
    window: Duration,
    crossing: Duration,
) -> Keep {
    let new_opened_by_me = new.opened_by_me;
    let Some(cur) = current else {
        return Keep::New {
            retire_current: None,
        };
    };
    let began_later = !new.opened_by_me && new.began_after_current >= crossing;
    if cur.age >= window || cur.opened_by_me == new_opened_by_me || began_later {
        return Keep::New {
            retire_current: Some(Retire::Now),
        };
    }
    let preferred = |opened_by_me: bool| opened_by_me == lower_is_me;
    if preferred(new_opened_by_me) {
        Keep::New {
            retire_current: Some(Retire::WhenIdle),
        }
    } else {
        Keep::Current {
            retire_new: Retire::WhenIdle,
        }
    }
}

/// The crossing margin: `rtts` round trips of the current connection, at least `min`.
pub fn crossing_margin(rtt: Duration, rtts: u32, min: Duration) -> Duration {
    rtt.saturating_mul(rtts).max(min)
}

/// How long a retired connection must have had no stream in flight before it is closed:
/// `rtts` round trips (streams the peer opened before it saw the other connection arrive
/// within about one), at least `min`.
pub fn retire_grace(rtt: Duration, rtts: u32, min: Duration) -> Duration {
    rtt.saturating_mul(rtts).max(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);
    const CROSSING: Duration = Duration::from_secs(1);

    /// A new connection: opened here, or inbound and begun `began_ms` after the current one.
    fn new(opened_by_me: bool, began_ms: u64) -> New {
        New {
            opened_by_me,
            began_after_current: Duration::from_millis(began_ms),
        }
    }

    fn keep(current: Option<Current>, by_me: bool, lower_is_me: bool, window: Duration) -> Keep {
        super::keep(current, new(by_me, 0), lower_is_me, window, CROSSING)
    }

    fn cur(opened_by_me: bool, age_ms: u64) -> Option<Current> {
        Some(Current {
            opened_by_me,
            age: Duration::from_millis(age_ms),
        })
    }

    #[test]
    fn the_first_connection_is_taken() {
        for (by_me, lower) in [(true, true), (false, true), (true, false), (false, false)] {
            assert_eq!(
                keep(None, by_me, lower, WINDOW),
                Keep::New {
                    retire_current: None
                }
            );
        }
    }

    /// Both ends of a crossed dial decide alike: the lower id's dial is kept at both, the other
    /// one retired when idle at both, whichever order each end saw them in.
    #[test]
    fn crossed_dials_converge_on_the_lower_ids_connection_without_cutting_the_other() {
        // Node "a" (lower) dialled X, "b" dialled Y. At a: X is opened_by_me, Y not; at b the
        // reverse. Each end may see either first.
        let young = 300;
        // a saw X first, then Y arrives: keep X, retire Y when idle.
        assert_eq!(
            keep(cur(true, young), false, true, WINDOW),
            Keep::Current {
                retire_new: Retire::WhenIdle
            }
        );
        // a saw Y first, then X: X replaces Y, Y retired when idle.
        assert_eq!(
            keep(cur(false, young), true, true, WINDOW),
            Keep::New {
                retire_current: Some(Retire::WhenIdle)
            }
        );
        // b saw Y (its own) first, then X: X replaces Y, Y retired when idle.
        assert_eq!(
            keep(cur(true, young), false, false, WINDOW),
            Keep::New {
                retire_current: Some(Retire::WhenIdle)
            }
        );
        // b saw X first, then Y: keep X, retire Y when idle.
        assert_eq!(
            keep(cur(false, young), true, false, WINDOW),
            Keep::Current {
                retire_new: Retire::WhenIdle
            }
        );
    }

    #[test]
    fn a_fresh_connection_replaces_one_older_than_the_window_at_once() {
        for by_me in [true, false] {
            for lower in [true, false] {
                for cur_by_me in [true, false] {
                    assert_eq!(
                        keep(cur(cur_by_me, 10_000), by_me, lower, WINDOW),
                        Keep::New {
                            retire_current: Some(Retire::Now)
                        },
                        "new by_me={by_me} lower={lower} current by_me={cur_by_me}"
                    );
                }
            }
        }
        // Just inside the window, a crossed dial is still a crossed dial.
        assert_eq!(
            keep(cur(true, 9_999), false, true, WINDOW),
            Keep::Current {
                retire_new: Retire::WhenIdle
            }
        );
    }

    #[test]
    fn an_inbound_connection_begun_well_after_a_young_current_one_replaces_it() {
        // "a" (lower) holds its own young dial; "b" restarted and dials 3 s later.
        assert_eq!(
            super::keep(cur(true, 3_000), new(false, 3_000), true, WINDOW, CROSSING),
            Keep::New {
                retire_current: Some(Retire::Now)
            }
        );
        // Within the crossing margin it is a crossed dial.
        assert_eq!(
            super::keep(cur(true, 900), new(false, 900), true, WINDOW, CROSSING),
            Keep::Current {
                retire_new: Retire::WhenIdle
            }
        );
        // This node's own dial always crossed (it dials only without a connection).
        assert_eq!(
            super::keep(cur(false, 5_000), new(true, 5_000), false, WINDOW, CROSSING),
            Keep::Current {
                retire_new: Retire::WhenIdle
            }
        );
        assert_eq!(
            crossing_margin(Duration::from_millis(300), 8, CROSSING),
            Duration::from_millis(2_400)
        );
        assert_eq!(
            crossing_margin(Duration::from_millis(1), 8, CROSSING),
            CROSSING
        );
    }

    #[test]
    fn the_same_side_dialling_again_gave_the_old_connection_up() {
        for lower in [true, false] {
            for by_me in [true, false] {
                assert_eq!(
                    keep(cur(by_me, 5), by_me, lower, WINDOW),
                    Keep::New {
                        retire_current: Some(Retire::Now)
                    }
                );
            }
        }
    }

    #[test]
    fn the_retire_grace_is_some_round_trips_and_never_below_its_floor() {
        let min = Duration::from_millis(100);
        assert_eq!(retire_grace(Duration::from_millis(1), 4, min), min);
        assert_eq!(
            retire_grace(Duration::from_millis(200), 4, min),
            Duration::from_millis(800)
        );
        assert_eq!(retire_grace(Duration::MAX, 4, min), Duration::MAX);
    }
}
