//! The daemon's side of need-lists (see [`crate::needlist`]): listings of what it holds and
//! the receipts it knows, paged like every listing, and merging receipts brought on a stick.

use std::io::Write;

use serde_json::json;

use super::Daemon;
use super::listing::{ListError, Pages};
use crate::control::{CONTROL_NEED_MERGE_CERTS_MAX, CONTROL_NEED_MERGE_RECEIPTS_MAX, Response};
use crate::exit;
use crate::needlist::{self, ReceiptItem};

/// Every id held (stored or tombstoned), hex, in id order.
pub(super) fn held<W: Write>(d: &Daemon, pages: &mut Pages<'_, W>) -> Result<(), ListError> {
    let items = pages.page_items();
    needlist::walk_held(&d.store, items, |id| pages.push(&id.to_string()))
}

/// Every stored segment with what `export --for` orders by, in id order.
pub(super) fn stored<W: Write>(d: &Daemon, pages: &mut Pages<'_, W>) -> Result<(), ListError> {
    let items = pages.page_items();
    needlist::walk_stored(&d.store, items, |c| pages.push(&c))
}

/// The receipts this node knows, its own first, each node's certificates before its receipts.
/// Nothing when fleet receipts are off.
pub(super) fn receipts<W: Write>(d: &Daemon, pages: &mut Pages<'_, W>) -> Result<(), ListError> {
    let Some(fleet) = d.node.fleet() else {
        return Ok(());
    };
    let (items, bytes) = (pages.page_items(), pages.page_bytes());
    needlist::walk_receipts(&fleet.book, fleet.node(), items, bytes, |item| {
        match item {
            ReceiptItem::Cert(der) => pages.push(&json!({ "cert": hex::encode(der) }))?,
            ReceiptItem::Receipt(r) => pages.push(&json!({ "receipt": hex::encode(r) }))?,
        }
        Ok(true)
    })
}

/// Verifies and merges receipts brought on a stick; refused ones are counted, never fatal.
pub(super) fn merge(d: &Daemon, receipts: &[String], certs: &[String]) -> Response {
    let failed = |code, message: String| Response::Error { code, message };
    let Some(fleet) = d.node.fleet() else {
        return failed(
            exit::FAILED,
            "fleet receipts are off on this node (net.receipt_interval_ms = 0)".into(),
        );
    };
    if receipts.len() > CONTROL_NEED_MERGE_RECEIPTS_MAX
        || certs.len() > CONTROL_NEED_MERGE_CERTS_MAX
    {
        return failed(
            exit::USAGE,
            format!(
                "at most {CONTROL_NEED_MERGE_RECEIPTS_MAX} receipts and \
                 {CONTROL_NEED_MERGE_CERTS_MAX} certificates per request"
            ),
        );
    }
    // A receipt or certificate that is not hex is refused like one that does not verify.
    let mut refused = 0u64;
    let mut decode = |items: &[String]| -> Vec<Vec<u8>> {
        items
            .iter()
            .filter_map(|h| hex::decode(h).map_err(|_| refused += 1).ok())
            .collect()
    };
    let receipts = decode(receipts);
    let certs = decode(certs);
    match fleet.merge_foreign(&receipts, &certs) {
        Ok((report, bad)) => Response::Ok {
            body: json!({
                "merged": report.merged,
                "known": report.known,
                "refused": refused + bad,
                "refused_nodes": report.refused_nodes,
                "forgotten": report.forgotten,
            }),
        },
        Err(e) => failed(exit::FAILED, format!("receipts not merged: {e}")),
    }
}
