//! Rows as the index holds them: document ids from the key, external versions, field values, and
//! the `meta_index` ids of tombstones and truncation watermarks.

use ripple_sink::{ChangeEvent, Value};
use serde_json::Value as Json;

/// The length of `doc` as JSON, counted without building the text.
pub(crate) fn json_len(doc: &Json) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, doc);
    count.0
}

/// The document id: the primary key's values, `:`-joined.
pub fn doc_id(event: &ChangeEvent) -> String {
    event
        .key
        .iter()
        .map(|v| ripple_sink::to_text(v).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(":")
}

/// The `meta_index` document recording a row's delete.
pub(crate) fn tombstone_id(index: &str, id: &str) -> String {
    format!("deleted:{index}:{id}")
}

/// The `meta_index` document recording an index's last truncate.
pub(crate) fn truncated_id(index: &str) -> String {
    format!("truncated:{index}")
}

/// External versions are one `long`. Changes to one row are serialised by the source's row locks,
/// so per document the change's log position alone grows with commit order; the commit part of
/// the version, needed to order different rows, does not fit beside it.
pub fn external_version(event: &ChangeEvent) -> i64 {
    event.version.change as i64
}

/// A value as a document field. NaN and ±Infinity have no JSON number and no date either, and the
/// index's numeric and date fields refuse them as strings: they are stored as null.
pub(crate) fn field_json(v: &Value) -> Json {
    match v {
        Value::Float(f) if !f.is_finite() => Json::Null,
        Value::Timestamp(t) | Value::TimestampTz(t) if *t == i64::MAX || *t == i64::MIN => {
            Json::Null
        }
        Value::Array(items) => Json::Array(items.iter().map(field_json).collect()),
        v => ripple_sink::to_json(v),
    }
}
