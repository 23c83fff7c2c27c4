//! The peer of a relay job is a node of the fleet: a [`NodeId`], the same type the network
//! layer authenticates, validated once where it is parsed.

pub use base::NodeId;

/// The store pin owner of a job for `peer`: `relay:<peer>`. The store knows owners only as
/// opaque strings.
pub fn pin_owner(peer: &NodeId) -> String {
    format!("relay:{peer}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_owner_names_the_peer() {
        assert_eq!(pin_owner(&NodeId::new("node-7").unwrap()), "relay:node-7");
    }
}
