//! Two settings that contradict each other, kept as data so that whoever reads the
//! configuration file can name both keys as the operator wrote them, and say which of them is
//! a default the operator never set.

use std::fmt;

/// How a setting must compare with another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    AtMost,
    LessThan,
    AtLeast,
    MoreThan,
}

impl Bound {
    /// Whether `value` stands in this relation to `other`.
    pub fn holds(self, value: u64, other: u64) -> bool {
        match self {
            Bound::AtMost => value <= other,
            Bound::LessThan => value < other,
            Bound::AtLeast => value >= other,
            Bound::MoreThan => value > other,
        }
    }

    /// The rule in words: "must be at most".
    pub fn words(self) -> &'static str {
        match self {
            Bound::AtMost => "must be at most",
            Bound::LessThan => "must be less than",
            Bound::AtLeast => "must be at least",
            Bound::MoreThan => "must be more than",
        }
    }

    /// What to do to the other setting instead: "raise" it when it is an upper bound.
    pub fn other_fix(self) -> &'static str {
        match self {
            Bound::AtMost | Bound::LessThan => "raise",
            Bound::AtLeast | Bound::MoreThan => "lower",
        }
    }
}

/// `key` (= `value`) breaks `bound` against `other` (= `other_value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub key: &'static str,
    pub value: u64,
    pub bound: Bound,
    pub other: &'static str,
    pub other_value: u64,
    /// Why the rule exists, in words; empty when it goes without saying.
    pub why: &'static str,
}

impl Conflict {
    /// The conflict, when `value` breaks `bound` against `other_value`.
    pub fn check(
        (key, value): (&'static str, u64),
        bound: Bound,
        (other, other_value): (&'static str, u64),
        why: &'static str,
    ) -> Option<Conflict> {
        (!bound.holds(value, other_value)).then_some(Conflict {
            key,
            value,
            bound,
            other,
            other_value,
            why,
        })
    }
}

/// "500 must be at most backoff_max_ms (100)", and the reason when there is one.
impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} ({})",
            self.value,
            self.bound.words(),
            self.other,
            self.other_value
        )?;
        if !self.why.is_empty() {
            write!(f, "; {}", self.why)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_is_found_only_when_the_bound_is_broken() {
        let at_most = |v| Conflict::check(("a", v), Bound::AtMost, ("b", 100), "");
        assert_eq!(at_most(100), None);
        let c = at_most(101).unwrap();
        assert_eq!(c.to_string(), "101 must be at most b (100)");
        assert!(Conflict::check(("a", 100), Bound::LessThan, ("b", 100), "").is_some());
        assert!(Conflict::check(("a", 100), Bound::AtLeast, ("b", 100), "").is_none());
        assert!(Conflict::check(("a", 100), Bound::MoreThan, ("b", 100), "x").is_some());
    }
}

/// One setting a library refuses: its key (as in the configuration file, without the section),
/// what is wrong, and, when it contradicts another setting, both with their values, so that the
/// reader of the file can say which of them the operator set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct Refused {
    pub key: &'static str,
    pub reason: String,
    /// Boxed: errors stay small.
    pub conflict: Option<Box<Conflict>>,
}

impl Refused {
    pub fn new(key: &'static str, reason: String) -> Refused {
        Refused {
            key,
            reason,
            conflict: None,
        }
    }
}

impl From<Conflict> for Refused {
    fn from(c: Conflict) -> Refused {
        Refused {
            key: c.key,
            reason: c.to_string(),
            conflict: Some(Box::new(c)),
        }
    }
}
