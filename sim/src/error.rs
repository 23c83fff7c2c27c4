//! What stops a simulation run before its checks (a broken setup, not a finding).

/// A run could not be set up or driven.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("node identities: {0}")]
    Identity(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("store of {node}: {source}")]
    Store {
        node: String,
        source: store::StoreError,
    },
    #[error("relay of {node}: {source}")]
    Relay {
        node: String,
        source: relay::RelayError,
    },
    #[error("network node {node}: {source}")]
    Net { node: String, source: net::NetError },
}
