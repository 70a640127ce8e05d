//! Rows as Redis holds them: the `json` format's document (JSON columns embedded as the source
//! wrote them).

use ripple_sink::Value;

/// The `json` format's document for `row`, and the names of its unavailable columns (JSON-encoded,
/// as the document writes them, for the script to copy from the stored one). A JSON column goes
/// in as the source wrote it, not through a parse: a number beyond a double keeps its digits.
pub(crate) fn json_document(
    columns: &[ripple_sink::Column],
    row: &[Value],
) -> (Vec<u8>, Vec<String>) {
    // Written straight into the bytes Redis gets: one buffer per row, no value built per column.
    let mut doc = Vec::with_capacity(64 + 32 * columns.len());
    doc.push(b'{');
    let mut unavailable = Vec::new();
    for (c, v) in columns.iter().zip(row) {
        if *v == Value::Unavailable {
            unavailable.push(serde_json::Value::from(c.name.as_str()).to_string());
            continue;
        }
        if doc.len() > 1 {
            doc.push(b',');
        }
        ripple_sink::write_json_str(&mut doc, &c.name);
        doc.push(b':');
        match v {
            Value::Json(text)
                if serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok() =>
            {
                doc.extend_from_slice(text.trim().as_bytes())
            }
            v => ripple_sink::write_json(&mut doc, v),
        }
    }
    doc.push(b'}');
    (doc, unavailable)
}
