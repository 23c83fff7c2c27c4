//! The scenario catalogue. Each module groups scenarios by the kind of fault they apply.

mod basic;
mod clock;
mod crash;
mod disk;
mod evil;
mod media;
mod network;
mod process;
mod relay;
mod trust;

use crate::scenario::Scenario;

/// Every scenario, in a stable order.
pub fn all() -> Vec<Scenario> {
    let mut out = Vec::new();
    out.extend(basic::scenarios());
    out.extend(crash::scenarios());
    out.extend(network::scenarios());
    out.extend(process::scenarios());
    out.extend(relay::scenarios());
    out.extend(trust::scenarios());
    out.extend(evil::scenarios());
    out.extend(disk::scenarios());
    out.extend(clock::scenarios());
    out.extend(media::scenarios());
    out
}

/// The scenario named `name`.
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}
