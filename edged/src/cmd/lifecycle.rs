//! The content lifecycle from a publisher's machine: trust roots (`edged root create | sign |
//! inspect | publish`), co-signatures (`edged segment sign`) and recalls (`edged recall
//! create`). Each key signs on its own machine, one at a time; files are replaced atomically.

use std::collections::BTreeSet;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use base::Clock as _;
use serde::Deserialize;
use store::keys::{PublisherKey, PublisherSecret};
use store::limits::{MANIFEST_FORMAT_VERSION, ROOT_CHAIN_MAX, ROOT_CHANNEL, STREAM_BUF_BYTES};
use store::manifest::{Manifest, SegmentKind, SignedManifest, SuccessCondition};
use store::recall::RecallList;
use store::root::{ChannelRule, PublisherGrant, RootChain, RootDocument, SignedRoot};
use store::{SegmentId, segfile};

use crate::cmd::segment::write_atomically;
use crate::exit::{CliResult, Failure, USAGE};
use crate::output::{format_ms, outln};

/// Largest root spec or root file read.
const ROOT_FILE_BYTES_MAX: u64 = 64 * 1024;

/// A root spec, as an operator writes it (TOML).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    version: u64,
    /// RFC 3339.
    expires: Option<String>,
    root_threshold: u8,
    root_keys: Vec<String>,
    #[serde(default)]
    publisher: Vec<SpecPublisher>,
    #[serde(default)]
    channel: Vec<SpecChannel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecPublisher {
    key: String,
    channels: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecChannel {
    name: String,
    threshold: u8,
    expires: Option<String>,
}

fn usage(e: impl std::fmt::Display) -> Failure {
    Failure::new(USAGE, anyhow!("{e}"))
}

fn time_ms(what: &str, text: &str) -> Result<u64, Failure> {
    let t = humantime::parse_rfc3339_weak(text)
        .map_err(|e| usage(format!("{what} {text:?}: not an RFC 3339 time: {e}")))?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .map_err(|_| usage(format!("{what} {text:?} is before 1970")))
}

fn key(what: &str, text: &str) -> Result<PublisherKey, Failure> {
    text.parse().map_err(|e| usage(format!("{what}: {e}")))
}

/// Sorted and free of duplicates, or which one repeats.
fn distinct<T: Ord + Clone + std::fmt::Display>(
    what: &str,
    items: Vec<T>,
) -> Result<Vec<T>, Failure> {
    let mut seen = BTreeSet::new();
    for i in &items {
        if !seen.insert(i.clone()) {
            return Err(usage(format!("{what}: {i} is listed twice")));
        }
    }
    Ok(seen.into_iter().collect())
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, Failure> {
    let file = store::media::open_regular(path).map_err(Failure::failed)?;
    let mut bytes = Vec::new();
    file.take(ROOT_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(Failure::failed)?;
    if bytes.len() as u64 > ROOT_FILE_BYTES_MAX {
        return Err(Failure::failed(anyhow!(
            "{} is larger than the {ROOT_FILE_BYTES_MAX} bytes a root may have",
            path.display()
        )));
    }
    Ok(bytes)
}

fn read_root(path: &Path) -> Result<SignedRoot, Failure> {
    let bytes = read_bounded(path)?;
    SignedRoot::decode(&bytes)
        .with_context(|| format!("{} is not a root document", path.display()))
        .map_err(Failure::failed)
}

/// Writes `bytes` over `path` atomically (temp file, fsync, rename, directory fsync).
fn replace(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    replace_with(path, |out| Ok(std::io::Write::write_all(out, bytes)?))
}

/// Replaces `path` by what `fill` writes: a temp file beside it (fsynced), renamed over it,
/// then the directory fsynced, so a crash leaves the old file or the new one, never a mix.
fn replace_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> anyhow::Result<()>,
) -> Result<(), Failure> {
    let tmp = path.with_extension("edged-new");
    let _ = std::fs::remove_file(&tmp);
    if let Err(e) = write_atomically(&tmp, fill) {
        return Err(Failure::failed(e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Failure::failed(
            anyhow!(e).context(format!("cannot replace {}", path.display())),
        ));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))
        .map_err(Failure::failed)
}

/// `edged root create --spec SPEC --out FILE`: an unsigned root from a spec.
pub fn root_create(spec_path: &Path, out: &Path) -> CliResult {
    let text = String::from_utf8(read_bounded(spec_path)?)
        .map_err(|_| usage(format!("{} is not UTF-8", spec_path.display())))?;
    let spec: Spec =
        toml::from_str(&text).map_err(|e| usage(format!("{}: {e}", spec_path.display())))?;
    let root_keys = spec
        .root_keys
        .iter()
        .enumerate()
        .map(|(i, k)| key(&format!("root_keys[{i}]"), k))
        .collect::<Result<Vec<_>, _>>()?;
    let mut publishers = Vec::new();
    for (i, p) in spec.publisher.iter().enumerate() {
        publishers.push(PublisherGrant {
            key: key(&format!("publisher[{i}].key"), &p.key)?,
            channels: distinct(&format!("publisher[{i}].channels"), p.channels.clone())?,
        });
    }
    let keys = distinct("publisher keys", publishers.iter().map(|p| p.key).collect())?;
    debug_assert_eq!(keys.len(), publishers.len());
    publishers.sort_by_key(|p| p.key);
    let mut channels = Vec::new();
    for (i, c) in spec.channel.iter().enumerate() {
        channels.push(ChannelRule {
            channel: c.name.clone(),
            threshold: c.threshold,
            expires_at_ms: c
                .expires
                .as_deref()
                .map(|t| time_ms(&format!("channel[{i}].expires"), t))
                .transpose()?,
        });
    }
    distinct(
        "channel names",
        channels.iter().map(|c| c.channel.clone()).collect(),
    )?;
    channels.sort_by(|a, b| a.channel.cmp(&b.channel));
    let doc = RootDocument {
        format_version: store::root::ROOT_FORMAT_VERSION,
        version: spec.version,
        created_at_ms: base::SystemClock.now_ms(),
        expires_at_ms: spec
            .expires
            .as_deref()
            .map(|t| time_ms("expires", t))
            .transpose()?,
        root_keys: distinct("root_keys", root_keys)?,
        root_threshold: spec.root_threshold,
        publishers,
        channels,
    };
    let root = SignedRoot::new(doc).map_err(usage)?;
    write_atomically(out, |w| Ok(std::io::Write::write_all(w, &root.encode())?))
        .map_err(Failure::failed)?;
    eprintln!(
        "root version {} written to {} (unsigned): sign it with {} of its root keys (`edged root sign`)",
        root.version(),
        out.display(),
        root.document().root_threshold
    );
    Ok(())
}

/// Valid signatures by the root's own root keys, and the threshold.
fn own_count(root: &SignedRoot) -> (usize, usize) {
    let needed = usize::from(root.document().root_threshold);
    match root.verify_self() {
        Ok(()) => (needed.max(1), needed),
        Err(store::root::RootError::BelowThreshold { valid, .. }) => (valid, needed),
        Err(_) => (0, needed),
    }
}

/// `edged root sign --key KEY FILE`: adds one signature.
pub fn root_sign(key_path: &Path, file: &Path) -> CliResult {
    let secret = PublisherSecret::load(key_path).map_err(Failure::failed)?;
    let mut root = read_root(file)?;
    root.sign(&secret).map_err(Failure::failed)?;
    replace(file, &root.encode())?;
    let (valid, needed) = own_count(&root);
    eprintln!(
        "{} signed root version {}; {valid} of the {needed} root-key signature(s) it needs",
        secret.public(),
        root.version()
    );
    Ok(())
}

/// `edged root inspect FILE [--current OLD] [--json]`.
pub fn root_inspect(file: &Path, current: Option<&Path>, json: bool) -> CliResult {
    let root = read_root(file)?;
    let doc = root.document();
    let now = base::SystemClock.now_ms();
    let own = root.verify_self();
    let successor = current
        .map(|c| read_root(c).map(|old| old.verify_successor(&root, now)))
        .transpose()?;
    let verdict = match (&own, &successor) {
        (Err(e), _) => Err(e.to_string()),
        (Ok(()), Some(Err(e))) => Err(format!("not a successor of the current root: {e}")),
        (Ok(()), _) => Ok(()),
    };
    if json {
        let v = serde_json::json!({
            "version": doc.version,
            "created_at_ms": doc.created_at_ms,
            "expires_at_ms": doc.expires_at_ms,
            "root_keys": doc.root_keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            "root_threshold": doc.root_threshold,
            "publishers": doc.publishers.iter().map(|p| serde_json::json!({"key": p.key.to_string(), "channels": p.channels})).collect::<Vec<_>>(),
            "channels": doc.channels.iter().map(|c| serde_json::json!({"channel": c.channel, "threshold": c.threshold, "expires_at_ms": c.expires_at_ms})).collect::<Vec<_>>(),
            "signers": root.signers().map(|k| k.to_string()).collect::<Vec<_>>(),
            "valid": verdict.is_ok(),
            "problem": verdict.as_ref().err(),
        });
        outln!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(Failure::failed)?
        );
    } else {
        outln!("root version {}", doc.version);
        outln!("created   {}", format_ms(doc.created_at_ms));
        outln!(
            "expires   {}",
            doc.expires_at_ms
                .map(|e| store::when::rfc3339_with_age(e, now))
                .unwrap_or_else(|| "never".into())
        );
        outln!(
            "root keys ({} of them must sign the next version):",
            doc.root_threshold
        );
        for k in &doc.root_keys {
            outln!("  {k}");
        }
        outln!("publishers:");
        for p in &doc.publishers {
            outln!("  {} on {}", p.key, p.channels.join(", "));
        }
        for c in &doc.channels {
            outln!(
                "channel {}: {} signature(s){}",
                c.channel,
                c.threshold,
                c.expires_at_ms
                    .map(|e| format!(", expires {}", store::when::rfc3339_with_age(e, now)))
                    .unwrap_or_default()
            );
        }
        outln!("signed by:");
        for k in root.signers() {
            let role = if doc.root_keys.contains(k) {
                "root key"
            } else {
                "not a root key of this version"
            };
            outln!("  {k} ({role})");
        }
        match &verdict {
            Ok(()) => outln!(
                "valid{}",
                if current.is_some() {
                    ", and a successor of the current root"
                } else {
                    ""
                }
            ),
            Err(e) => outln!("NOT VALID: {e}"),
        }
    }
    verdict.map_err(|e| Failure::failed(anyhow!(e)))
}

/// A segment of `kind` carrying `body`, signed by `secret`, written to `out`.
#[allow(clippy::too_many_arguments)]
fn write_segment(
    secret: &PublisherSecret,
    kind: SegmentKind,
    channel: &str,
    name: &str,
    sequence: u64,
    body: &[u8],
    out: &Path,
) -> Result<SignedManifest, Failure> {
    let m = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        publisher: secret.public(),
        name: name.to_owned(),
        channel: channel.to_owned(),
        sequence,
        created_at_ms: base::SystemClock.now_ms(),
        expires_at_ms: None,
        condition: SuccessCondition::AllPeers,
        // Lifecycle segments travel first.
        priority: u8::MAX,
        payload_len: body.len() as u64,
        payload_hash: *blake3::hash(body).as_bytes(),
        kind,
    };
    let signed = SignedManifest::sign(m, secret).map_err(usage)?;
    write_atomically(out, |w| {
        segfile::write_seg(w, &signed, body)
            .map(drop)
            .map_err(Into::into)
    })
    .map_err(Failure::failed)?;
    Ok(signed)
}

/// `edged root publish --key KEY --out SEG ROOT...`: a root segment carrying the chain.
pub fn root_publish(key_path: &Path, out: &Path, roots: &[PathBuf]) -> CliResult {
    let secret = PublisherSecret::load(key_path).map_err(Failure::failed)?;
    if roots.is_empty() || roots.len() > ROOT_CHAIN_MAX {
        return Err(usage(format!(
            "give 1..={ROOT_CHAIN_MAX} root files, oldest first"
        )));
    }
    let chain = roots
        .iter()
        .map(|r| read_root(r))
        .collect::<Result<Vec<_>, _>>()?;
    let now = base::SystemClock.now_ms();
    for (i, r) in chain.iter().enumerate() {
        r.verify_self()
            .map_err(|e| Failure::failed(anyhow!("{}: {e}", roots[i].display())))?;
        if i > 0 {
            chain[i - 1].verify_successor(r, now).map_err(|e| {
                Failure::failed(anyhow!(
                    "{} does not follow {}: {e}",
                    roots[i].display(),
                    roots[i - 1].display()
                ))
            })?;
        }
    }
    let version = chain[chain.len() - 1].version();
    let body = RootChain(chain).encode();
    let signed = write_segment(
        &secret,
        SegmentKind::Root,
        ROOT_CHANNEL,
        "root",
        version,
        &body,
        out,
    )?;
    eprintln!(
        "root segment for version {version} written to {}: import it on any host",
        out.display()
    );
    outln!("{}", signed.id());
    Ok(())
}

/// `edged recall create --key KEY --channel C --name N [--sequence S] --out SEG ID...`.
pub fn recall_create(
    key_path: &Path,
    channel: &str,
    name: &str,
    sequence: Option<u64>,
    out: &Path,
    ids: &[String],
) -> CliResult {
    let secret = PublisherSecret::load(key_path).map_err(Failure::failed)?;
    let ids = ids
        .iter()
        .map(|t| {
            if t.len() != 64 {
                return Err(usage(format!(
                    "{t}: give full 64-hex segment ids (a recall names exact segments)"
                )));
            }
            t.parse::<SegmentId>().map_err(usage)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let list = RecallList::new(ids).map_err(usage)?;
    let sequence = sequence.unwrap_or_else(|| base::SystemClock.now_ms());
    let signed = write_segment(
        &secret,
        SegmentKind::Recall,
        channel,
        name,
        sequence,
        &list.encode(),
        out,
    )?;
    eprintln!(
        "recall of {} segment(s) of channel {channel} written to {}: import it on any host",
        list.ids().len(),
        out.display()
    );
    outln!("{}", signed.id());
    Ok(())
}

/// `edged segment sign --key KEY FILE`: adds a co-signature, rewriting the file (the header
/// grows by one signature; the payload is copied through the manifest's hash check, so a
/// damaged file is not signed again). Prints every signer, one per line.
pub fn segment_sign(key_path: &Path, file: &Path) -> CliResult {
    let secret = PublisherSecret::load(key_path).map_err(Failure::failed)?;
    let input = store::media::open_regular(file).map_err(Failure::failed)?;
    let mut input = BufReader::with_capacity(STREAM_BUF_BYTES, input);
    let mut signed = segfile::read_header(&mut input)
        .with_context(|| format!("{} is not a valid segment file", file.display()))
        .map_err(Failure::failed)?;
    if signed.manifest().format_version == store::limits::MANIFEST_FORMAT_V1 {
        return Err(Failure::failed(anyhow!(
            "{} is a manifest format 1 segment, which carries exactly one signature: \
             create it again (`edged segment create` writes format {MANIFEST_FORMAT_VERSION}) \
             to co-sign it",
            file.display()
        )));
    }
    let key = secret.public();
    if signed.signers().any(|k| *k == key) {
        return Err(Failure::failed(anyhow!(
            "{key} already signed {}: a channel threshold counts distinct keys, so sign with \
             another one",
            file.display()
        )));
    }
    signed.add_signature(&secret).map_err(Failure::failed)?;
    replace_with(file, |w| {
        segfile::write_seg(w, &signed, &mut input)
            .map(drop)
            .with_context(|| {
                format!(
                    "{}: the payload does not match its manifest (damaged or truncated); not signed",
                    file.display()
                )
            })
    })?;
    eprintln!(
        "{} signed by {key}; {} signature(s), id unchanged",
        file.display(),
        signed.signers().count()
    );
    for k in signed.signers() {
        outln!("{k}");
    }
    Ok(())
}
