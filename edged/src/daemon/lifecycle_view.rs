//! The lifecycle state of stored segments as `edged segments` shows it — the kind when not
//! content, `superseded by <id>` — and the recalled ids (`edged segments --recalled`). Read from
//! the daemon's store or from the data directory alike, so both listings say the same.

use std::io::BufReader;

use serde::Serialize;
use serde_json::{Value, json};
use store::lifecycle::RecalledRow;
use store::manifest::SegmentKind;
use store::{SegmentId, Store, StoreError, segfile};

use crate::output::format_ms;

/// Most recalled ids one `edged segments --recalled` lists (the store keeps every one; the
/// listing says when it stopped at this bound).
pub const RECALLED_LIST_MAX: usize = 10_000;

/// Buffer for reading a stored segment's header: the preamble and a manifest with its
/// signatures fit in one or two reads.
const HEADER_READ_BUF_BYTES: usize = 4 * 1024;

/// A stored segment's lifecycle fields, appended to its row in both listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LifecycleFields {
    /// `content`, `recall` or `root`; `unknown` when the stored header cannot be read (the
    /// scrub reports why).
    pub kind: String,
    pub sequence: u64,
    /// The segment whose higher sequence superseded this one.
    pub superseded_by: Option<String>,
}

/// The kind of a stored segment, from its file's header (the index row does not carry it).
/// `None` when the file cannot be read as a segment.
fn stored_kind(store: &Store, id: &SegmentId) -> Option<SegmentKind> {
    let path = store.layout().segment_file(id);
    let file = store::media::open_regular(&path).ok()?;
    let signed =
        segfile::read_header(BufReader::with_capacity(HEADER_READ_BUF_BYTES, file)).ok()?;
    // A file that is not this segment's says nothing about it.
    (signed.id() == *id).then_some(signed.manifest().kind)
}

/// The lifecycle fields of one stored segment.
pub fn fields(store: &Store, s: &store::SegmentInfo) -> Result<LifecycleFields, StoreError> {
    Ok(LifecycleFields {
        kind: stored_kind(store, &s.id).map_or_else(|| "unknown".to_owned(), |k| k.to_string()),
        sequence: s.row.sequence,
        superseded_by: store.superseded_by(&s.id)?.map(|id| id.to_string()),
    })
}

/// Appends `fields` to a segment's JSON row (an object; anything else is left alone).
pub fn extend(row: &mut Value, fields: &LifecycleFields) {
    if let (Some(obj), Ok(Value::Object(add))) = (row.as_object_mut(), serde_json::to_value(fields))
    {
        obj.extend(add);
    }
}

/// Pure: the lifecycle state in words, as the listing's `state` column shows it: the kind
/// when not content, and `superseded by <short id>`.
pub fn words(kind: Option<&str>, superseded_by: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(kind) = kind.filter(|k| *k != SegmentKind::Content.as_str()) {
        out.push(kind.to_owned());
    }
    if let Some(by) = superseded_by {
        out.push(format!(
            "superseded by {}",
            by.chars().take(12).collect::<String>()
        ));
    }
    out
}

/// One recalled id as `edged segments --recalled --json` lists it.
pub fn recalled_json(id: &SegmentId, row: &RecalledRow) -> Value {
    json!({
        "id": id.to_string(),
        "channel": row.channel,
        "recall": row.recall.to_string(),
        "at_ms": row.at_ms,
        "at": format_ms(row.at_ms),
        "held": row.held,
    })
}

/// Every recalled id with its recall, in id order, at most [`RECALLED_LIST_MAX`] (a listing
/// that long says it may have stopped at the bound).
pub fn recalled(store: &Store) -> Result<Vec<Value>, StoreError> {
    Ok(store
        .recalled(RECALLED_LIST_MAX)?
        .iter()
        .map(|(id, r)| recalled_json(id, r))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_name_the_kind_unless_content_and_the_superseding_segment_short() {
        assert!(words(Some("content"), None).is_empty());
        assert!(words(None, None).is_empty());
        assert_eq!(words(Some("recall"), None), vec!["recall"]);
        let by = "ab".repeat(32);
        assert_eq!(
            words(Some("content"), Some(&by)),
            vec!["superseded by abababababab"]
        );
        assert_eq!(
            words(Some("root"), Some(&by)),
            vec!["root", "superseded by abababababab"]
        );
    }

    #[test]
    fn extend_appends_the_fields_to_an_object_row() {
        let mut row = json!({ "id": "x", "delivery": [] });
        let f = LifecycleFields {
            kind: "recall".into(),
            sequence: 7,
            superseded_by: None,
        };
        extend(&mut row, &f);
        assert_eq!(row["kind"], "recall");
        assert_eq!(row["sequence"], 7);
        assert!(row["superseded_by"].is_null());
        assert_eq!(row["delivery"], json!([]), "other fields kept");
        let mut not_object = json!([1]);
        extend(&mut not_object, &f);
        assert_eq!(not_object, json!([1]));
    }
}
