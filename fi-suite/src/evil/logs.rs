//! What a victim's log says about its evil peer, and whether that stays within the victim's
//! log budget (INV-18: what a remote party can make a node log is bounded).
//!
//! The victim logs JSON lines. A line is *about* a party when one of its field values names it
//! (its node id, or an address of it). The lines that count are the warnings (and errors)
//! about it, and every line that the victim's log limiter governs (it carries `kind`): the
//! limiter lets at most `log_warnings_per_window` of them out per (party, kind) and
//! `log_window_ms`, so over a run of `elapsed`, a (party, kind) group may hold at most that
//! many times `elapsed / log_window_ms + 1` lines. A warning without a `kind` about the party
//! is a warning it can trigger unlimited: it forms a group of its own with the same budget.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// Longest log read (a flooded log is read up to here, which is far beyond any budget).
pub const LOG_BYTES_MAX: u64 = 64 << 20;
/// The group of lines about a party that carry no `kind`.
pub const NO_KIND: &str = "(no kind)";

/// The log budget of a victim: its `log_warnings_per_window` and `log_window_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub per_window: u64,
    pub window_ms: u64,
}

impl Budget {
    /// Lines one (party, kind) group may hold after `elapsed_ms` of the victim's life.
    pub fn lines_max(&self, elapsed_ms: u64) -> u64 {
        self.per_window * (elapsed_ms / self.window_ms.max(1) + 1)
    }
}

/// The counted lines about the parties, by (party, kind).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counted {
    pub groups: BTreeMap<(String, String), u64>,
    /// Warnings and errors among them.
    pub warnings: u64,
    /// All counted lines.
    pub lines: u64,
}

impl Counted {
    /// Groups holding more than `max` lines.
    pub fn over(&self, max: u64) -> Vec<(String, String, u64)> {
        self.groups
            .iter()
            .filter(|(_, n)| **n > max)
            .map(|((party, kind), n)| (party.clone(), kind.clone(), *n))
            .collect()
    }
}

/// A party the log may talk about.
#[derive(Debug, Clone)]
pub struct Party {
    pub name: String,
    /// Field values that are it (a node id).
    pub ids: Vec<String>,
    /// Strings that, inside a field value, name it (an address, an IP).
    pub addrs: Vec<String>,
}

impl Party {
    fn named_by(&self, value: &str) -> bool {
        self.ids.iter().any(|id| id == value) || self.addrs.iter().any(|a| value.contains(a))
    }
}

/// Reads the JSON log at `path` and counts the lines about `parties`.
pub fn count(path: &Path, parties: &[Party]) -> std::io::Result<Counted> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(LOG_BYTES_MAX)
        .read_to_string(&mut text)?;
    Ok(count_text(&text, parties))
}

/// [`count`] over the log's text.
pub fn count_text(text: &str, parties: &[Party]) -> Counted {
    let mut out = Counted::default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let level = v["level"].as_str().unwrap_or_default();
        let warning = matches!(level, "WARN" | "ERROR");
        let fields = &v["fields"];
        let kind = fields["kind"].as_str();
        if !warning && kind.is_none() {
            continue;
        }
        let Some(party) = party_of(fields, parties) else {
            continue;
        };
        out.lines += 1;
        if warning {
            out.warnings += 1;
        }
        *out.groups
            .entry((party.name.clone(), kind.unwrap_or(NO_KIND).to_owned()))
            .or_default() += 1;
    }
    out
}

/// The first party (in the order given) that one of the line's field values names.
fn party_of<'a>(fields: &Value, parties: &'a [Party]) -> Option<&'a Party> {
    let map = fields.as_object()?;
    let values: Vec<&str> = map
        .iter()
        .filter(|(k, _)| k.as_str() != "message")
        .filter_map(|(_, v)| v.as_str())
        .collect();
    parties
        .iter()
        .find(|p| values.iter().any(|v| p.named_by(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parties() -> Vec<Party> {
        vec![
            Party {
                name: "evil".into(),
                ids: vec!["evil".into()],
                addrs: vec!["127.0.0.66:4000".into()],
            },
            Party {
                name: "stranger".into(),
                ids: Vec::new(),
                addrs: vec!["127.0.0.67".into()],
            },
        ]
    }

    #[test]
    fn lines_are_grouped_by_party_and_kind() {
        let log = [
            r#"{"level":"WARN","fields":{"message":"stream ended","kind":"bad_first_frame","peer":"evil"}}"#,
            r#"{"level":"WARN","fields":{"message":"stream ended","kind":"bad_first_frame","peer":"evil","suppressed":3}}"#,
            r#"{"level":"INFO","fields":{"message":"connected","kind":"connected","peer":"evil"}}"#,
            // Not governed by the limiter and not a warning: not counted.
            r#"{"level":"INFO","fields":{"message":"segment delivered","peer_id":"evil"}}"#,
            // A warning without a kind: a group of its own.
            r#"{"level":"WARN","fields":{"message":"odd","remote":"127.0.0.66:4000"}}"#,
            r#"{"level":"WARN","fields":{"message":"refused","kind":"handshake_not_answered","remote":"127.0.0.67:5000"}}"#,
            // About someone else.
            r#"{"level":"WARN","fields":{"message":"stream ended","kind":"bad_first_frame","peer":"node-2"}}"#,
            // The message itself does not name a party, nor a value that merely contains an id.
            r#"{"level":"WARN","fields":{"message":"evil things","kind":"x","name":"evil-7"}}"#,
            "not json",
        ]
        .join("\n");
        let c = count_text(&log, &parties());
        assert_eq!(c.lines, 5);
        assert_eq!(c.warnings, 4);
        let g = |p: &str, k: &str| c.groups.get(&(p.to_owned(), k.to_owned())).copied();
        assert_eq!(g("evil", "bad_first_frame"), Some(2));
        assert_eq!(g("evil", "connected"), Some(1));
        assert_eq!(g("evil", NO_KIND), Some(1));
        assert_eq!(g("stranger", "handshake_not_answered"), Some(1));
        assert_eq!(
            c.over(1),
            vec![("evil".into(), "bad_first_frame".into(), 2)]
        );
        assert!(c.over(2).is_empty());
    }

    #[test]
    fn the_budget_grows_by_window() {
        let b = Budget {
            per_window: 3,
            window_ms: 60_000,
        };
        assert_eq!(b.lines_max(0), 3);
        assert_eq!(b.lines_max(59_999), 3);
        assert_eq!(b.lines_max(60_000), 6);
    }
}
