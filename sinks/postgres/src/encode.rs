//! Values to PostgreSQL's text input format. Every column travels as text and is cast to the
//! replica column's type in SQL, so one code path serves every type the server can parse.

use chrono::{DateTime, NaiveDate, NaiveTime};
use ripple_sink::{ColumnType, Value};
use std::fmt::Write;

/// The text form of `v` for a replica column whose type is `cast`: as `to_text`, except that a
/// JSON object (how Debezium sends an hstore) bound for an hstore column is written in hstore's
/// own input format.
pub fn to_column_text(v: &Value, ty: &ColumnType, cast: &str) -> Option<String> {
    match v {
        Value::Json(json) if cast.ends_with(".hstore") => {
            Some(json_to_hstore(json).unwrap_or_else(|| json.clone()))
        }
        _ => to_text(v, ty),
    }
}

/// `{"a": "1", "b": null}` -> `"a"=>"1", "b"=>NULL`; `None` when `json` is not a flat object.
fn json_to_hstore(json: &str) -> Option<String> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).ok()?;
    let quote = |s: &str| {
        let mut q = String::with_capacity(s.len() + 2);
        q.push('"');
        for c in s.chars() {
            if c == '"' || c == '\\' {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        q
    };
    let mut pairs = Vec::with_capacity(map.len());
    for (k, v) in &map {
        let value = match v {
            serde_json::Value::Null => "NULL".to_string(),
            serde_json::Value::String(s) => quote(s),
            other => quote(&other.to_string()),
        };
        pairs.push(format!("{}=>{value}", quote(k)));
    }
    Some(pairs.join(", "))
}

/// The text form of `v` for a column of type `ty`; `None` is SQL NULL.
pub fn to_text(v: &Value, ty: &ColumnType) -> Option<String> {
    let mut out = String::new();
    if write_value(&mut out, v, ty) {
        Some(out)
    } else {
        None
    }
}

/// Writes `v`; returns false for NULL (and for `Unavailable`, which callers filter out before).
fn write_value(out: &mut String, v: &Value, ty: &ColumnType) -> bool {
    match v {
        Value::Null | Value::Unavailable => return false,
        Value::Bool(b) => out.push_str(if *b { "t" } else { "f" }),
        Value::Int(i) => match ty {
            ColumnType::Interval => {
                let _ = write!(out, "{i} microseconds");
            }
            _ => {
                let _ = write!(out, "{i}");
            }
        },
        Value::Float(f) => {
            if f.is_nan() {
                out.push_str("NaN")
            } else if f.is_infinite() {
                out.push_str(if *f > 0.0 { "Infinity" } else { "-Infinity" })
            } else {
                let _ = write!(out, "{f:?}");
            }
        }
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) => out.push_str(s),
        Value::Bytes(b) => {
            out.push_str("\\x");
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
        }
        Value::Date(days) => match NaiveDate::from_num_days_from_ce_opt(days + 719_163) {
            Some(d) => write_date(out, d),
            None => {
                let _ = write!(out, "{days}");
            }
        },
        Value::Time(micros) => {
            let secs = micros.div_euclid(1_000_000);
            let nanos = (micros.rem_euclid(1_000_000) * 1000) as u32;
            match NaiveTime::from_num_seconds_from_midnight_opt(secs as u32, nanos) {
                Some(t) => {
                    let _ = write!(out, "{}", t.format("%H:%M:%S%.6f"));
                }
                // 24:00:00 is a valid PostgreSQL time that chrono cannot hold.
                None => out.push_str("24:00:00"),
            }
        }
        Value::Timestamp(micros) | Value::TimestampTz(micros) => match *micros {
            i64::MAX => out.push_str("infinity"),
            i64::MIN => out.push_str("-infinity"),
            m => match DateTime::from_timestamp_micros(m) {
                Some(t) => {
                    let naive = t.naive_utc();
                    write_date(out, naive.date());
                    let _ = write!(out, " {}", naive.time().format("%H:%M:%S%.6f"));
                    if matches!(v, Value::TimestampTz(_)) {
                        out.push_str("+00");
                    }
                }
                None => {
                    let _ = write!(out, "{m}");
                }
            },
        },
        Value::Array(items) => {
            let inner = match ty {
                ColumnType::Array(t) => t.as_ref(),
                other => other,
            };
            out.push('{');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let mut elem = String::new();
                if write_value(&mut elem, item, inner) {
                    out.push('"');
                    for c in elem.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                } else {
                    out.push_str("NULL");
                }
            }
            out.push('}');
        }
    }
    true
}

/// PostgreSQL writes years before 1 as `YYYY-MM-DD BC` with year 1 BC = chrono's year 0.
fn write_date(out: &mut String, d: NaiveDate) {
    use chrono::Datelike;
    if d.year() <= 0 {
        let _ = write!(
            out,
            "{:04}-{:02}-{:02} BC",
            1 - d.year(),
            d.month(),
            d.day()
        );
    } else {
        let _ = write!(out, "{}", d.format("%Y-%m-%d"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars() {
        assert_eq!(
            to_text(&Value::Decimal("123.40".into()), &ColumnType::Text).unwrap(),
            "123.40"
        );
        assert_eq!(to_text(&Value::Bool(true), &ColumnType::Bool).unwrap(), "t");
        assert_eq!(
            to_text(&Value::Bytes(vec![0, 255]), &ColumnType::Bytes).unwrap(),
            "\\x00ff"
        );
        assert_eq!(
            to_text(&Value::Float(0.1), &ColumnType::Float64).unwrap(),
            "0.1"
        );
        assert_eq!(to_text(&Value::Null, &ColumnType::Text), None);
    }

    #[test]
    fn temporals() {
        assert_eq!(
            to_text(&Value::Date(0), &ColumnType::Date).unwrap(),
            "1970-01-01"
        );
        assert_eq!(
            to_text(&Value::Timestamp(1741944413589793), &ColumnType::Timestamp).unwrap(),
            "2025-03-14 09:26:53.589793"
        );
        assert_eq!(
            to_text(&Value::TimestampTz(-1), &ColumnType::TimestampTz).unwrap(),
            "1969-12-31 23:59:59.999999+00"
        );
        assert_eq!(
            to_text(&Value::Timestamp(i64::MAX), &ColumnType::Timestamp).unwrap(),
            "infinity"
        );
        assert_eq!(
            to_text(&Value::Time(3_600_000_001), &ColumnType::Time).unwrap(),
            "01:00:00.000001"
        );
    }

    #[test]
    fn hstore_from_json() {
        let v = Value::Json(r#"{"a": "1", "q\"k": "x\\y", "n": null}"#.into());
        assert_eq!(
            to_column_text(&v, &ColumnType::Json, "public.hstore").unwrap(),
            r#""a"=>"1", "n"=>NULL, "q\"k"=>"x\\y""#
        );
        assert_eq!(
            to_column_text(&v, &ColumnType::Json, "pg_catalog.jsonb").unwrap(),
            r#"{"a": "1", "q\"k": "x\\y", "n": null}"#
        );
    }

    #[test]
    fn arrays_are_quoted() {
        let v = Value::Array(vec![
            Value::Text("a\"b".into()),
            Value::Null,
            Value::Text("c,d".into()),
        ]);
        assert_eq!(
            to_text(&v, &ColumnType::Array(Box::new(ColumnType::Text))).unwrap(),
            r#"{"a\"b",NULL,"c,d"}"#
        );
    }
}
