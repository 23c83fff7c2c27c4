//! `edged key gen`.

use crate::output::outln;
use std::path::Path;

use store::keys::PublisherSecret;

use crate::exit::{CliResult, Failure};

pub fn generate(out: &Path) -> CliResult {
    let secret = PublisherSecret::generate().map_err(Failure::failed)?;
    secret.save(out).map_err(Failure::failed)?;
    eprintln!(
        "secret key written to {} (mode 0600); keep it off the fleet",
        crate::output::path(out)
    );
    eprintln!("add the public key to each node's edge.toml under [publishers] trusted:");
    outln!("{}", secret.public());
    Ok(())
}
