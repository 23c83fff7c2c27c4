//! The simulator's own event trace: one line per thing it did or saw, hashed as it goes; the
//! last lines are kept for a failing run's report.

use std::collections::VecDeque;

/// Trace lines kept for printing (the digest covers every line).
pub const TRACE_TAIL_LINES: usize = 200;

/// An append-only, hashed log of a run's events.
#[derive(Debug, Clone)]
pub struct Trace {
    hasher: blake3::Hasher,
    tail: VecDeque<String>,
    lines: u64,
}

impl Default for Trace {
    fn default() -> Self {
        Trace::new()
    }
}

impl Trace {
    pub fn new() -> Trace {
        Trace {
            hasher: blake3::Hasher::new(),
            tail: VecDeque::new(),
            lines: 0,
        }
    }

    /// Appends one line, stamped with the run's virtual time in ms.
    pub fn line(&mut self, at_ms: u64, text: impl AsRef<str>) {
        let line = format!("{at_ms:>9} {}", text.as_ref());
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        self.lines += 1;
        if self.tail.len() == TRACE_TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// blake3 of every line so far.
    pub fn digest(&self) -> [u8; 32] {
        *self.hasher.clone().finalize().as_bytes()
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// The last [`TRACE_TAIL_LINES`] lines.
    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }
}
