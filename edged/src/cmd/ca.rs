//! `edged ca init` and `edged ca issue`: the fleet CA and node certificates.
//!
//! Thin wrappers over [`net::ca_init`] and [`net::ca_issue`] (which write every file with
//! `create_new`, fsync it and its directory, keys at mode 0600). What they add: a CA goes only
//! into a new or empty directory (created 0700: it holds the fleet's root key), the node id and
//! validity are checked before anything is read or written, an issued certificate is loaded back
//! and checked against the CA, and the operator is told which files were written and what the
//! node's `edge.toml` needs.

use crate::output::{out, outln};
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use net::pki::{CA_CERT_FILE, CA_KEY_FILE, NODE_VALIDITY_DAYS_MAX};
use net::{NodeId, PkiError};

use crate::exit::{CliResult, Failure, USAGE};
use crate::output;

/// Mode of a CA directory created here.
const CA_DIR_MODE: u32 = 0o700;

/// `edged ca init --out DIR`.
pub fn init(out: &Path) -> CliResult {
    prepare_ca_dir(out)?;
    let files = net::ca_init(out).map_err(pki_failure)?;
    outln!("wrote {}", output::path(&shown(&files.cert)));
    outln!("wrote {}", output::path(&shown(&files.key)));
    eprintln!(
        "fleet CA created. {} goes to every node ([tls] ca_cert); {} (mode 0600) signs node certificates: keep it offline, never on a node.",
        CA_CERT_FILE, CA_KEY_FILE
    );
    eprintln!(
        "next: edged ca issue --ca {} --node <node-id> --out <dir>",
        output::path(out)
    );
    Ok(())
}

/// `edged ca issue --ca DIR --node ID --out DIR [--days N]`.
pub fn issue(ca: &Path, node: &str, out: &Path, days: u32) -> CliResult {
    let node_id: NodeId = node.parse().map_err(|e| Failure::new(USAGE, e))?;
    if days == 0 || days > NODE_VALIDITY_DAYS_MAX {
        return Err(Failure::new(
            USAGE,
            anyhow::anyhow!(
                "--days {days}: a node certificate is valid for 1 to {NODE_VALIDITY_DAYS_MAX} days"
            ),
        ));
    }
    let ca_cert = ca.join(CA_CERT_FILE);
    let ca_key = ca.join(CA_KEY_FILE);
    for file in [&ca_cert, &ca_key] {
        if !file.exists() {
            return Err(Failure::failed(anyhow::anyhow!(
                "no fleet CA in {}: {} is missing (create one with `edged ca init --out {}`)",
                ca.display(),
                file.display(),
                ca.display()
            )));
        }
    }
    let files = net::ca_issue(ca, &node_id, out, days).map_err(pki_failure)?;
    // Prove the three files work together as the daemon will load them.
    let identity = net::load_node_identity(&ca_cert, &files.cert, &files.key).map_err(|e| {
        Failure::failed(anyhow::anyhow!(
            "the certificate just issued does not load as node {node_id}: {e}"
        ))
    })?;
    if identity.id != node_id {
        return Err(Failure::failed(anyhow::anyhow!(
            "the certificate just issued names {}, not {node_id}",
            identity.id
        )));
    }
    let (ca_cert, cert, key) = (shown(&ca_cert), shown(&files.cert), shown(&files.key));
    eprintln!("wrote {}", output::path(&cert));
    eprintln!("wrote {} (mode 0600)", output::path(&key));
    eprintln!(
        "certificate for node {node_id}, valid {days} days; copy the three files named below to the node and put this section in its edge.toml:"
    );
    out!("{}", tls_snippet(&node_id, &ca_cert, &cert, &key));
    Ok(())
}

/// The `[tls]` section a node needs, with a reminder of the `node_id` it must have.
fn tls_snippet(node_id: &NodeId, ca_cert: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "# node_id must be \"{node_id}\": the certificate names this node (paths as written here; adjust them where the node keeps the files)\n\
         [tls]\n\
         ca_cert = {}\n\
         node_cert = {}\n\
         node_key = {}\n",
        toml_string(ca_cert),
        toml_string(cert),
        toml_string(key),
    )
}

/// A path as a TOML basic string, quoted and escaped.
fn toml_string(path: &Path) -> String {
    toml::Value::String(path.to_string_lossy().into_owned()).to_string()
}

/// A path as the operator should see it: absolute, so the snippet works from any directory.
fn shown(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// A fleet CA goes into a new or empty directory: never next to, or over, anything else.
fn prepare_ca_dir(out: &Path) -> CliResult {
    match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(CA_DIR_MODE)
            .create(out)
            .map_err(|e| Failure::failed(anyhow::anyhow!("create {}: {e}", out.display()))),
        Err(e) => Err(Failure::failed(anyhow::anyhow!("{}: {e}", out.display()))),
        Ok(meta) if !meta.is_dir() => Err(Failure::failed(anyhow::anyhow!(
            "{} exists and is not a directory; a fleet CA goes into a new or empty directory",
            out.display()
        ))),
        Ok(_) => {
            if out.join(CA_CERT_FILE).exists() || out.join(CA_KEY_FILE).exists() {
                return Err(Failure::failed(anyhow::anyhow!(
                    "{} already holds a fleet CA; refusing to overwrite it (every node certificate depends on it)",
                    out.display()
                )));
            }
            let mut entries = std::fs::read_dir(out)
                .map_err(|e| Failure::failed(anyhow::anyhow!("{}: {e}", out.display())))?;
            if entries.next().is_some() {
                return Err(Failure::failed(anyhow::anyhow!(
                    "{} is not empty; a fleet CA goes into a new or empty directory",
                    out.display()
                )));
            }
            Ok(())
        }
    }
}

fn pki_failure(e: PkiError) -> Failure {
    match e {
        PkiError::InvalidNodeId { .. } | PkiError::Validity(_) => Failure::new(USAGE, e),
        _ => Failure::failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_is_toml_with_the_three_paths() {
        let id: NodeId = "node-1".parse().unwrap();
        let text = tls_snippet(
            &id,
            Path::new("/ca/ca.crt"),
            Path::new("/n/node-1.crt"),
            Path::new("/n/we\"ird.key"),
        );
        let table: toml::Table = toml::from_str(&text).unwrap();
        let tls = table["tls"].as_table().unwrap();
        assert_eq!(tls["ca_cert"].as_str(), Some("/ca/ca.crt"));
        assert_eq!(tls["node_cert"].as_str(), Some("/n/node-1.crt"));
        assert_eq!(tls["node_key"].as_str(), Some("/n/we\"ird.key"));
        assert!(text.contains("\"node-1\""));
    }
}
