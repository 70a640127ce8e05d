//! Rows as Redis holds them: the `json` format's document (JSON columns embedded as the source
//! wrote them).

use ripple_sink::Value;

/// The `json` format's document for `row`, and the names of its unavailable columns (JSON-encoded,
/// as the document writes them, for the script to copy from the stored one). A JSON column goes
/// in as the source wrote it, not through a parse: a number beyond a double keeps its digits.
pub(crate) fn json_document(
    columns: &[ripple_sink::Column],
    row: &[Value],
) -> (String, Vec<String>) {
    let mut doc = String::from("{");
    let mut unavailable = Vec::new();
    for (c, v) in columns.iter().zip(row) {
        let name = serde_json::Value::from(c.name.as_str()).to_string();
        if *v == Value::Unavailable {
            unavailable.push(name);
            continue;
        }
        if doc.len() > 1 {
            doc.push(',');
        }
        doc.push_str(&name);
        doc.push(':');
        match v {
            Value::Json(text)
                if serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok() =>
            {
                doc.push_str(text.trim())
            }
            v => doc.push_str(&ripple_sink::to_json(v).to_string()),
        }
    }
    doc.push('}');
    (doc, unavailable)
}
