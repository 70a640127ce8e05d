//! Store-neutral renderings of a [`Value`]: plain text (for key templates, hash fields and string
//! values) and JSON (for documents). Every sink that is not SQL uses these, so a row looks the same
//! in Redis and in the search index.

use crate::Value;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveTime};

/// The value as text; `None` for NULL and for an unavailable value.
///
/// Decimals keep their exact digits, timestamps are ISO-8601 (`2024-01-02T03:04:05.123456`, with `Z`
/// when zoned), bytes are base64, JSON is its own text.
pub fn to_text(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null | Value::Unavailable => return None,
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => float_text(*f),
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) => s.clone(),
        Value::Bytes(b) => base64::engine::general_purpose::STANDARD.encode(b),
        Value::Date(d) => date_text(*d),
        Value::Time(t) => time_text(*t),
        Value::Timestamp(t) => timestamp_text(*t, false),
        Value::TimestampTz(t) => timestamp_text(*t, true),
        Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(to_json).collect()).to_string()
        }
    })
}

/// The value as JSON. Decimals become strings (JSON numbers would lose digits in most readers),
/// JSON columns are embedded as documents, NULL and unavailable values are `null`.
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null | Value::Unavailable => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) if f.is_finite() => J::from(*f),
        Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| J::String(s.clone())),
        Value::Array(items) => J::Array(items.iter().map(to_json).collect()),
        other => to_text(other).map(J::String).unwrap_or(J::Null),
    }
}

/// Whether a stored row document holds what the source row gives, column by column. A field that
/// is absent reads as NULL (a column added to the source after a row was last written is not in
/// that row's document), and fields the source row does not have are not compared (a column
/// dropped in the source stays in documents written before, as it stays in a replica table).
pub fn json_rows_equal(want: &serde_json::Value, got: &serde_json::Value) -> bool {
    match (want.as_object(), got.as_object()) {
        (Some(w), Some(g)) => w
            .iter()
            .all(|(k, v)| g.get(k).unwrap_or(&serde_json::Value::Null) == v),
        _ => want == got,
    }
}

/// Where two JSON row documents differ first, for a verify report: `field "qty": holds 5, the
/// source 6` (compared as in [`json_rows_equal`]).
pub fn json_difference(want: &serde_json::Value, got: &serde_json::Value) -> String {
    if let (Some(w), Some(g)) = (want.as_object(), got.as_object()) {
        let null = serde_json::Value::Null;
        for (n, v) in w {
            if !v.is_null() && !g.contains_key(n) {
                return absent_field(n, v);
            }
            let held = g.get(n).unwrap_or(&null);
            if held != v {
                return format!("field {n:?}: holds {held}, the source {v}");
            }
        }
    }
    format!("holds {got}, the source {want}")
}

fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        format!("{f:?}")
    }
}

fn date_text(days: i32) -> String {
    NaiveDate::from_num_days_from_ce_opt(days.saturating_add(719_163))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| days.to_string())
}

fn time_text(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000) as u32;
    let nanos = (micros.rem_euclid(1_000_000) * 1000) as u32;
    NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)
        .map(|t| t.format("%H:%M:%S%.6f").to_string())
        .unwrap_or_else(|| "24:00:00".into())
}

fn timestamp_text(micros: i64, zoned: bool) -> String {
    match micros {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        m => match DateTime::from_timestamp_micros(m) {
            Some(t) => {
                let text = t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
                if zoned { text + "Z" } else { text }
            }
            None => m.to_string(),
        },
    }
}

/// A verify report's words for a field a stored row lacks while the source row has a value. The
/// usual cause is a column added with a default: PostgreSQL fills the rows already there without
/// a change event, so a row not written since has no such field, and replaying the topic cannot
/// give it one (the events before the column do not have it).
pub fn absent_field(name: &str, source: impl std::fmt::Display) -> String {
    format!(
        "field {name:?} is absent, the source {source}: a column added with a default reaches no row \
         until the row changes; rewrite such rows in the source (UPDATE ... SET {name} = {name}) to refill them \
         (if no row has it, Debezium may not capture the column's type, e.g. an array of a domain)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms() {
        assert_eq!(to_text(&Value::Decimal("56.50".into())).unwrap(), "56.50");
        assert_eq!(
            to_text(&Value::Timestamp(1_741_944_413_589_793)).unwrap(),
            "2025-03-14T09:26:53.589793"
        );
        assert_eq!(
            to_text(&Value::TimestampTz(0)).unwrap(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(to_text(&Value::Date(1)).unwrap(), "1970-01-02");
        assert_eq!(to_text(&Value::Null), None);
        assert_eq!(to_text(&Value::Unavailable), None);
    }

    #[test]
    fn absent_fields_read_as_null() {
        use serde_json::json;
        assert!(json_rows_equal(
            &json!({"a": 1, "b": null}),
            &json!({"a": 1})
        ));
        assert!(json_rows_equal(
            &json!({"a": 1}),
            &json!({"a": 1, "b": null})
        ));
        assert!(!json_rows_equal(&json!({"a": 1, "b": 2}), &json!({"a": 1})));
        assert!(json_difference(&json!({"a": 1, "b": 2}), &json!({"a": 1})).contains("\"b\""));
    }

    #[test]
    fn json_forms() {
        assert_eq!(
            to_json(&Value::Decimal("1.10".into())),
            serde_json::json!("1.10")
        );
        assert_eq!(
            to_json(&Value::Json(r#"{"a": [1]}"#.into())),
            serde_json::json!({"a": [1]})
        );
        assert_eq!(to_json(&Value::Int(7)), serde_json::json!(7));
        assert_eq!(
            to_json(&Value::Array(vec![Value::Text("x".into()), Value::Null])),
            serde_json::json!(["x", null])
        );
    }
}
