//! Store-neutral renderings of a [`Value`]: plain text (for key templates, hash fields and string
//! values) and JSON (for documents). Every sink that is not SQL uses these, so a row looks the same
//! in Redis and in the search index.

use crate::Value;
use base64::Engine as _;
use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike};

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

/// Appends the value as JSON text to `out`: the same text as `to_json(v).to_string()`, written
/// without building a `serde_json::Value` (a document of every row goes through here).
pub fn write_json(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null | Value::Unavailable => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::Float(f) if f.is_finite() => write_json_value(out, &serde_json::Value::from(*f)),
        Value::Decimal(s) | Value::Text(s) => write_json_str(out, s),
        Value::Json(_) | Value::Array(_) => write_json_value(out, &to_json(v)),
        other => match to_text(other) {
            Some(text) => write_json_str(out, &text),
            None => out.extend_from_slice(b"null"),
        },
    }
}

/// Appends `s` as a JSON string, quoted and escaped.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    write_json_value(out, &s)
}

fn write_json_value(out: &mut Vec<u8>, v: &(impl serde::Serialize + ?Sized)) {
    // Writing into a Vec cannot fail, and these values always serialize.
    serde_json::to_writer(out, v).expect("JSON into memory")
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
                let t = t.naive_utc();
                let mut text = if (0..=9999).contains(&t.year()) {
                    // Every row of a timestamp column comes through here: the digits are written
                    // directly, as `%Y-%m-%dT%H:%M:%S%.6f` would write them, without parsing the
                    // format each time.
                    let mut text = String::with_capacity(27);
                    push_digits(&mut text, t.year() as u32, 4);
                    text.push('-');
                    push_digits(&mut text, t.month(), 2);
                    text.push('-');
                    push_digits(&mut text, t.day(), 2);
                    text.push('T');
                    push_digits(&mut text, t.hour(), 2);
                    text.push(':');
                    push_digits(&mut text, t.minute(), 2);
                    text.push(':');
                    push_digits(&mut text, t.second(), 2);
                    text.push('.');
                    push_digits(&mut text, t.nanosecond() / 1000, 6);
                    text
                } else {
                    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
                };
                if zoned {
                    text.push('Z');
                }
                text
            }
            None => m.to_string(),
        },
    }
}

/// Appends the last `width` decimal digits of `n`, zero-padded.
fn push_digits(out: &mut String, n: u32, width: u32) {
    for i in (0..width).rev() {
        out.push(char::from(b'0' + (n / 10u32.pow(i) % 10) as u8));
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
    fn timestamps_match_the_format_they_replace() {
        // Across the years the fast path writes, and either side of it (year 0 and 9999's edges,
        // before the epoch, negative years, beyond 9999).
        let mut micros: i64 = -377_705_116_800_000_000 - 86_400_000_000; // before year -10000
        let step = 1_234_567_891_234_567;
        while micros < 253_402_300_800_000_000 + 400 * 365 * 86_400_000_000 {
            let want = DateTime::from_timestamp_micros(micros)
                .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
                .unwrap();
            assert_eq!(timestamp_text(micros, false), want, "{micros}");
            assert_eq!(timestamp_text(micros, true), want + "Z", "{micros}");
            micros += step;
        }
        for m in [
            -62_167_219_200_000_000,
            -62_167_219_200_000_001,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
        ] {
            let want = DateTime::from_timestamp_micros(m)
                .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
                .unwrap();
            assert_eq!(timestamp_text(m, false), want, "{m}");
        }
    }

    #[test]
    fn written_json_is_the_json_value_as_text() {
        let values = [
            Value::Null,
            Value::Unavailable,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(i64::MIN),
            Value::Int(42),
            Value::Float(0.1),
            Value::Float(-1e300),
            Value::Float(f64::NAN),
            Value::Float(f64::NEG_INFINITY),
            Value::Decimal("12345678901234567890.000001".into()),
            Value::Text("quote \" backslash \\ tab \t nul \u{0} é 𝄞".into()),
            Value::Json(r#"{"a": [1, 2.50, "x"]}"#.into()),
            Value::Json("not json".into()),
            Value::Bytes(vec![0, 255, 7]),
            Value::Date(-800_000),
            Value::Time(3_600_000_001),
            Value::Timestamp(1_741_944_413_589_793),
            Value::TimestampTz(-1),
            Value::Array(vec![Value::Int(1), Value::Null, Value::Text("b".into())]),
        ];
        for v in &values {
            let mut out = Vec::new();
            write_json(&mut out, v);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                to_json(v).to_string(),
                "{v:?}"
            );
        }
    }

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
