//! `edged segment create | inspect | verify`.
//!
//! `inspect` and `verify` open the file with [`store::media::open_regular`]: a symlink is not
//! followed, and a FIFO or device is refused at once instead of blocking the command. Times are
//! bounded by [`TIME_MS_MAX`] (the end of year 9999 UTC): `create --expires` refuses an expiry
//! beyond it, and `inspect` shows any time without panicking.

use crate::output::{out, outln};
use base::Clock as _;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use store::keys::{PublisherKey, PublisherSecret, TrustedPublishers};
use store::limits::{
    LIFECYCLE_PAYLOAD_BYTES_MAX, MANIFEST_FORMAT_VERSION, STREAM_BUF_BYTES, TIME_MS_MAX,
};
use store::manifest::{Manifest, SegmentKind, SignedManifest, SuccessCondition};
use store::recall::RecallList;
use store::root::RootChain;
use store::segfile;

use crate::cli::CreateArgs;
use crate::exit::{CliResult, Failure, USAGE};
use crate::output::format_ms;
use crate::{output, progress};

/// The expiry `lifetime` after `now_ms`, if it is no later than [`TIME_MS_MAX`].
fn expiry_ms(now_ms: u64, lifetime: std::time::Duration) -> Option<u64> {
    u64::try_from(lifetime.as_millis())
        .ok()
        .and_then(|ms| now_ms.checked_add(ms))
        .filter(|&at| at <= TIME_MS_MAX)
}

pub fn create(args: &CreateArgs) -> CliResult {
    let secret = PublisherSecret::load(&args.key).map_err(Failure::failed)?;
    let condition: SuccessCondition = args.condition.parse().map_err(Failure::failed)?;
    let now = base::SystemClock.now_ms();
    let expires_at_ms = match args.expires {
        None => None,
        Some(lifetime) => Some(expiry_ms(now, *lifetime).ok_or_else(|| {
            Failure::new(
                USAGE,
                anyhow::anyhow!(
                    "--expires {lifetime}: the segment would expire after 9999-12-31T23:59:59Z, the latest time a segment can carry"
                ),
            )
        })?),
    };
    let open =
        || File::open(&args.input).with_context(|| format!("cannot read {}", args.input.display()));
    // Two passes over the input: the manifest (signed first) carries the payload's hash.
    let input = open().map_err(Failure::failed)?;
    let input_len = input.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress::bytes(input_len, "hashing", false);
    let hashed = segfile::hash_reader(BufReader::new(progress::Reading::new(input, &bar)));
    bar.finish_and_clear();
    let (payload_len, payload_hash) = hashed
        .with_context(|| format!("cannot read {}", args.input.display()))
        .map_err(Failure::failed)?;
    let manifest = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        publisher: secret.public(),
        name: args.name.clone(),
        channel: args.channel.clone(),
        sequence: args.sequence.unwrap_or(now),
        created_at_ms: now,
        expires_at_ms,
        condition,
        priority: args.priority,
        payload_len,
        payload_hash,
        kind: store::manifest::SegmentKind::Content,
    };
    let signed = SignedManifest::sign(manifest, &secret).map_err(Failure::failed)?;
    let bar = progress::bytes(payload_len, "writing", false);
    let written = write_atomically(&args.out, |out| {
        // The copy re-hashes the input: a file changed between the passes is refused.
        let input = progress::Reading::new(open()?, &bar);
        segfile::write_seg(out, &signed, BufReader::new(input)).with_context(|| {
            format!(
                "{} changed while it was being signed, or cannot be read",
                args.input.display()
            )
        })?;
        Ok(())
    });
    bar.finish_and_clear();
    written.map_err(Failure::failed)?;
    eprintln!(
        "{} ({}) written",
        output::path(&args.out),
        output::bytes(payload_len)
    );
    outln!("{}", signed.id());
    Ok(())
}

/// Writes `path` through a temp file in the same directory: fsync, then a hard link (which
/// refuses an existing target), so a crash never leaves a half-written file under `path`.
pub(crate) fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&mut File>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if path.symlink_metadata().is_ok() {
        anyhow::bail!("{} already exists; not overwriting it", path.display());
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        {
            let mut w = BufWriter::with_capacity(STREAM_BUF_BYTES, &mut file);
            fill(&mut w)?;
            w.flush()
                .with_context(|| format!("cannot write {}", tmp.display()))?;
        }
        file.sync_all()
            .with_context(|| format!("cannot fsync {}", tmp.display()))?;
        std::fs::hard_link(&tmp, path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot fsync {}", dir.display()))?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[derive(Debug, Serialize)]
struct Inspected {
    id: String,
    format_version: u16,
    kind: String,
    signers: Vec<String>,
    name: String,
    channel: String,
    sequence: u64,
    publisher: String,
    created_at: String,
    expires_at: Option<String>,
    condition: String,
    priority: u8,
    payload_bytes: u64,
    payload_blake3: String,
    file_bytes: u64,
    file_length_ok: bool,
    /// A recall's payload: the ids it withdraws.
    #[serde(skip_serializing_if = "Option::is_none")]
    recalls: Option<Vec<String>>,
    /// A root segment's payload: the versions of its chain, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    root_versions: Option<Vec<u64>>,
    /// Why a recall's or root segment's payload could not be shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_problem: Option<String>,
}

/// What a recall's or root segment's payload carries, read after the header (at most
/// [`LIFECYCLE_PAYLOAD_BYTES_MAX`] bytes, checked against the manifest's hash first), or why
/// it cannot be shown. `None` for content: its payload is the operator's own business.
fn lifecycle_payload(
    signed: &SignedManifest,
    payload: impl Read,
) -> Option<Result<LifecyclePayload, String>> {
    let m = signed.manifest();
    let decode: fn(&[u8]) -> Result<LifecyclePayload, String> = match m.kind {
        SegmentKind::Content => return None,
        SegmentKind::Recall => |b| {
            RecallList::decode(b)
                .map(|l| {
                    LifecyclePayload::Recall(l.ids().iter().map(|id| id.to_string()).collect())
                })
                .map_err(|e| format!("not a recall list: {e}"))
        },
        SegmentKind::Root => |b| {
            RootChain::decode(b)
                .map(|c| LifecyclePayload::Root(c.0.iter().map(|r| r.version()).collect()))
                .map_err(|e| format!("not a root chain: {e}"))
        },
    };
    if m.payload_len > LIFECYCLE_PAYLOAD_BYTES_MAX {
        return Some(Err(format!(
            "the payload declares {} bytes, more than the {LIFECYCLE_PAYLOAD_BYTES_MAX} a {} may have",
            m.payload_len, m.kind
        )));
    }
    let mut bytes = Vec::new();
    if let Err(e) = payload.take(m.payload_len).read_to_end(&mut bytes) {
        return Some(Err(format!("cannot read the payload: {e}")));
    }
    if bytes.len() as u64 != m.payload_len || *blake3::hash(&bytes).as_bytes() != m.payload_hash {
        return Some(Err(
            "the payload does not match the manifest's length and hash".into(),
        ));
    }
    Some(decode(&bytes))
}

/// A lifecycle segment's payload as `inspect` shows it.
#[derive(Debug, PartialEq, Eq)]
enum LifecyclePayload {
    /// The ids a recall withdraws.
    Recall(Vec<String>),
    /// The versions of a root chain.
    Root(Vec<u64>),
}

pub fn inspect(path: &Path, json: bool) -> CliResult {
    let file = store::media::open_regular(path).map_err(Failure::failed)?;
    let file_bytes = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(Failure::failed)?
        .len();
    let mut file = BufReader::with_capacity(STREAM_BUF_BYTES, file);
    let signed = segfile::read_header(&mut file)
        .with_context(|| format!("{} is not a valid segment file", path.display()))
        .map_err(Failure::failed)?;
    let m = signed.manifest();
    let expected = segfile::file_len_of(&signed);
    let (mut recalls, mut root_versions, mut payload_problem) = (None, None, None);
    match lifecycle_payload(&signed, &mut file) {
        None => {}
        Some(Ok(LifecyclePayload::Recall(ids))) => recalls = Some(ids),
        Some(Ok(LifecyclePayload::Root(versions))) => root_versions = Some(versions),
        Some(Err(problem)) => payload_problem = Some(problem),
    }
    let info = Inspected {
        id: signed.id().to_string(),
        format_version: m.format_version,
        kind: m.kind.to_string(),
        signers: signed.signers().map(|k| k.to_string()).collect(),
        name: m.name.clone(),
        channel: m.channel.clone(),
        sequence: m.sequence,
        publisher: m.publisher.to_string(),
        created_at: format_ms(m.created_at_ms),
        expires_at: m.expires_at_ms.map(format_ms),
        condition: m.condition.to_string(),
        priority: m.priority,
        payload_bytes: m.payload_len,
        payload_blake3: hex::encode(m.payload_hash),
        file_bytes,
        file_length_ok: expected == file_bytes,
        recalls,
        root_versions,
        payload_problem,
    };
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&info).map_err(Failure::failed)?
        );
    } else {
        let mut rows = vec![
            vec!["id".into(), info.id.clone()],
            vec!["name".into(), info.name.clone()],
            vec![
                "kind".into(),
                format!("{} (manifest format {})", info.kind, info.format_version),
            ],
            vec!["channel".into(), info.channel.clone()],
            vec!["signed by".into(), info.signers.join(", ")],
            vec!["sequence".into(), info.sequence.to_string()],
            vec!["publisher".into(), info.publisher.clone()],
            vec!["created".into(), info.created_at.clone()],
            vec![
                "expires".into(),
                info.expires_at.clone().unwrap_or_else(|| "never".into()),
            ],
            vec!["condition".into(), info.condition.clone()],
            vec!["priority".into(), info.priority.to_string()],
            vec![
                "payload".into(),
                format!(
                    "{} ({} bytes)",
                    output::bytes(info.payload_bytes),
                    info.payload_bytes
                ),
            ],
            vec!["blake3".into(), info.payload_blake3.clone()],
            vec![
                "file length".into(),
                if info.file_length_ok {
                    format!("{} bytes, as declared", file_bytes)
                } else {
                    format!("{file_bytes} bytes, header declares {expected}: truncated or padded")
                },
            ],
            vec![
                "signature".into(),
                "not checked (use `edged segment verify`)".into(),
            ],
        ];
        if let Some(ids) = &info.recalls {
            // One id a row: full ids, as a recall names exact segments.
            for (i, id) in ids.iter().enumerate() {
                let field = if i == 0 {
                    format!("recalls ({})", ids.len())
                } else {
                    String::new()
                };
                rows.push(vec![field, id.clone()]);
            }
        }
        if let Some(versions) = &info.root_versions {
            let versions: Vec<String> = versions.iter().map(u64::to_string).collect();
            rows.push(vec!["root versions".into(), versions.join(", ")]);
        }
        if let Some(problem) = &info.payload_problem {
            rows.push(vec!["payload problem".into(), problem.clone()]);
        }
        out!("{}", output::table(&["field", "value"], &rows));
    }
    Ok(())
}

pub fn verify(trust: &[String], path: &Path) -> CliResult {
    let mut keys = Vec::with_capacity(trust.len());
    for text in trust {
        let key: PublisherKey = text
            .parse()
            .with_context(|| format!("--trust {text}"))
            .map_err(|e| Failure::new(crate::exit::USAGE, e))?;
        keys.push(key);
    }
    let trusted: TrustedPublishers = keys.into_iter().collect();
    let file = store::media::open_regular(path).map_err(Failure::failed)?;
    let skew_ms = crate::config::CLOCK_SKEW_MAX_S_DEFAULT * 1000;
    let signed = segfile::verify_seg_file(
        BufReader::with_capacity(STREAM_BUF_BYTES, file),
        &trusted,
        base::SystemClock.now_ms(),
        skew_ms,
    )
    .with_context(|| format!("{} does not verify", path.display()))
    .map_err(Failure::failed)?;
    outln!(
        "{}  OK  {} ({})",
        signed.id(),
        output::escape(&signed.manifest().name),
        signed.manifest().publisher
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn signed_of(kind: SegmentKind, body: &[u8]) -> SignedManifest {
        let secret = PublisherSecret::generate().unwrap();
        let m = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            publisher: secret.public(),
            name: "n".into(),
            channel: if kind == SegmentKind::Root {
                store::limits::ROOT_CHANNEL.into()
            } else {
                "c".into()
            },
            sequence: 1,
            created_at_ms: 1_767_225_600_000,
            expires_at_ms: None,
            condition: SuccessCondition::AllPeers,
            priority: 255,
            payload_len: body.len() as u64,
            payload_hash: *blake3::hash(body).as_bytes(),
            kind,
        };
        SignedManifest::sign(m, &secret).unwrap()
    }

    #[test]
    fn inspect_shows_what_a_recall_names_and_refuses_a_payload_not_matching_its_hash() {
        let ids = vec![store::SegmentId::from_bytes([7; 32])];
        let body = RecallList::new(ids.clone()).unwrap().encode();
        let signed = signed_of(SegmentKind::Recall, &body);
        assert_eq!(
            lifecycle_payload(&signed, &body[..]),
            Some(Ok(LifecyclePayload::Recall(vec![ids[0].to_string()])))
        );
        let mut damaged = body.clone();
        damaged[0] ^= 1;
        assert!(matches!(
            lifecycle_payload(&signed, &damaged[..]),
            Some(Err(e)) if e.contains("does not match")
        ));
        assert!(matches!(
            lifecycle_payload(&signed, &body[..body.len() - 1]),
            Some(Err(_))
        ));
        // Content: nothing to show, nothing read.
        let content = signed_of(SegmentKind::Content, b"x");
        assert_eq!(lifecycle_payload(&content, &b"x"[..]), None);
        // A root kind whose payload is not a chain says so.
        let root = signed_of(SegmentKind::Root, b"junk");
        assert!(matches!(
            lifecycle_payload(&root, &b"junk"[..]),
            Some(Err(e)) if e.contains("not a root chain")
        ));
    }

    #[test]
    fn inv_17_expiry_bound_n_and_n_plus_1() {
        let now = 1_767_225_600_000;
        let to_bound = Duration::from_millis(TIME_MS_MAX - now);
        assert_eq!(expiry_ms(now, to_bound), Some(TIME_MS_MAX));
        assert_eq!(expiry_ms(now, to_bound + Duration::from_millis(1)), None);
        assert_eq!(
            expiry_ms(now, Duration::from_secs(30 * 86_400)),
            Some(now + 2_592_000_000)
        );
        // 9000 years, and more milliseconds than a u64 holds: refused, not wrapped or saturated.
        assert_eq!(
            expiry_ms(now, Duration::from_secs(9000 * 365 * 86_400)),
            None
        );
        assert_eq!(expiry_ms(now, Duration::MAX), None);
        assert_eq!(expiry_ms(TIME_MS_MAX, Duration::ZERO), Some(TIME_MS_MAX));
    }
}
