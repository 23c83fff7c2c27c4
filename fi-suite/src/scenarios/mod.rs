//! The scenario catalogue. Each module groups scenarios by the kind of fault they apply.

mod basic;
mod clock;
mod disk;
mod media;
mod process;

use crate::scenario::Scenario;

/// Every scenario, in a stable order.
pub fn all() -> Vec<Scenario> {
    let mut out = Vec::new();
    out.extend(basic::scenarios());
    out.extend(process::scenarios());
    out.extend(disk::scenarios());
    out.extend(clock::scenarios());
    out.extend(media::scenarios());
    out
}

/// The scenario named `name`.
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}
