//! Values to PostgreSQL's text input format. Every column travels as text and is cast to the
//! replica column's type in SQL, so one code path serves every type the server can parse.

use chrono::{DateTime, NaiveDate, NaiveTime};
use ripple_sink::{ColumnType, Value};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo};
use sqlx::{Encode, Postgres, Type};
use std::fmt::{self, Write};

/// The text form of `v` for a replica column whose type is `cast`: as `to_text`, except that a
/// JSON object (how Debezium sends an hstore) bound for an hstore column is written in hstore's
/// own input format. Batched writes go through `TextElement`, which must write the same (the
/// tests hold it to this); single values, as a keyless row's update binds them, use this.
pub fn to_column_text(v: &Value, ty: &ColumnType, cast: &str) -> Option<String> {
    match v {
        Value::Json(json) if is_hstore(cast) => {
            Some(json_to_hstore(json).unwrap_or_else(|| json.clone()))
        }
        _ => to_text(v, ty),
    }
}

/// Whether a replica column of type `cast` (schema-qualified) is an hstore.
pub fn is_hstore(cast: &str) -> bool {
    cast.ends_with(".hstore")
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

/// Writes `v`; returns false, having written nothing, for NULL (and for `Unavailable`, which
/// callers filter out before).
fn write_value<W: Write>(out: &mut W, v: &Value, ty: &ColumnType) -> bool {
    if matches!(v, Value::Null | Value::Unavailable) {
        return false;
    }
    // Every writer here is memory: writing cannot fail.
    let _ = write_present(out, v, ty);
    true
}

fn write_present<W: Write>(out: &mut W, v: &Value, ty: &ColumnType) -> fmt::Result {
    match v {
        Value::Null | Value::Unavailable => {}
        Value::Bool(b) => out.write_str(if *b { "t" } else { "f" })?,
        Value::Int(i) => match ty {
            ColumnType::Interval => write!(out, "{i} microseconds")?,
            _ => write!(out, "{i}")?,
        },
        Value::Float(f) => {
            if f.is_nan() {
                out.write_str("NaN")?
            } else if f.is_infinite() {
                out.write_str(if *f > 0.0 { "Infinity" } else { "-Infinity" })?
            } else {
                write!(out, "{f:?}")?
            }
        }
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) => out.write_str(s)?,
        Value::Bytes(b) => {
            out.write_str("\\x")?;
            for byte in b {
                write!(out, "{byte:02x}")?;
            }
        }
        Value::Date(days) => match NaiveDate::from_num_days_from_ce_opt(days + 719_163) {
            Some(d) => write_date(out, d)?,
            None => write!(out, "{days}")?,
        },
        Value::Time(micros) => {
            let secs = micros.div_euclid(1_000_000);
            let nanos = (micros.rem_euclid(1_000_000) * 1000) as u32;
            match NaiveTime::from_num_seconds_from_midnight_opt(secs as u32, nanos) {
                Some(t) => write_time(out, t)?,
                // 24:00:00 is a valid PostgreSQL time that chrono cannot hold.
                None => out.write_str("24:00:00")?,
            }
        }
        Value::Timestamp(micros) | Value::TimestampTz(micros) => match *micros {
            i64::MAX => out.write_str("infinity")?,
            i64::MIN => out.write_str("-infinity")?,
            m => match DateTime::from_timestamp_micros(m) {
                Some(t) => {
                    let naive = t.naive_utc();
                    write_date(out, naive.date())?;
                    out.write_char(' ')?;
                    write_time(out, naive.time())?;
                    if matches!(v, Value::TimestampTz(_)) {
                        out.write_str("+00")?;
                    }
                }
                None => write!(out, "{m}")?,
            },
        },
        Value::Array(items) => {
            let inner = match ty {
                ColumnType::Array(t) => t.as_ref(),
                other => other,
            };
            out.write_char('{')?;
            let mut elem = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_char(',')?;
                }
                elem.clear();
                if write_value(&mut elem, item, inner) {
                    out.write_char('"')?;
                    for c in elem.chars() {
                        if c == '"' || c == '\\' {
                            out.write_char('\\')?;
                        }
                        out.write_char(c)?;
                    }
                    out.write_char('"')?;
                } else {
                    out.write_str("NULL")?;
                }
            }
            out.write_char('}')?;
        }
    }
    Ok(())
}

/// PostgreSQL writes years before 1 as `YYYY-MM-DD BC` with year 1 BC = chrono's year 0.
fn write_date<W: Write>(out: &mut W, d: NaiveDate) -> fmt::Result {
    use chrono::Datelike;
    if d.year() <= 0 {
        write!(
            out,
            "{:04}-{:02}-{:02} BC",
            1 - d.year(),
            d.month(),
            d.day()
        )
    } else if d.year() <= 9999 {
        // By hand: chrono's `format` parses its pattern on every call, and this runs per value.
        write!(out, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
    } else {
        write!(out, "{}", d.format("%Y-%m-%d"))
    }
}

/// `HH:MM:SS.ffffff`, as chrono's `%H:%M:%S%.6f` writes it for the times built here (from
/// microseconds, so never a leap second).
fn write_time<W: Write>(out: &mut W, t: NaiveTime) -> fmt::Result {
    use chrono::Timelike;
    write!(
        out,
        "{:02}:{:02}:{:02}.{:06}",
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 1000
    )
}

/// One element of a `text[]` parameter, written straight into the statement's buffer: a batch
/// binds a value per row and column, and a `String` for each was a tenth of the sink's time.
pub struct TextElement<'a> {
    value: &'a Value,
    ty: &'a ColumnType,
    hstore: bool,
}

impl<'a> TextElement<'a> {
    /// As `to_column_text` would write it for a column whose replica type is `cast`, given
    /// `is_hstore(cast)` (asked once per column, not per value).
    pub fn for_column(value: &'a Value, ty: &'a ColumnType, hstore: bool) -> Self {
        Self { value, ty, hstore }
    }

    /// As `to_text` would write it.
    pub fn new(value: &'a Value, ty: &'a ColumnType) -> Self {
        Self {
            value,
            ty,
            hstore: false,
        }
    }
}

/// Lets `fmt::Write` target the parameter buffer.
struct Bytes<'b>(&'b mut Vec<u8>);

impl Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl Type<Postgres> for TextElement<'_> {
    fn type_info() -> PgTypeInfo {
        <&str as Type<Postgres>>::type_info()
    }
}

impl PgHasArrayType for TextElement<'_> {
    fn array_type_info() -> PgTypeInfo {
        <&str as PgHasArrayType>::array_type_info()
    }
}

impl Encode<'_, Postgres> for TextElement<'_> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        if let (true, Value::Json(json)) = (self.hstore, self.value)
            && let Some(text) = json_to_hstore(json)
        {
            buf.extend_from_slice(text.as_bytes());
            return Ok(IsNull::No);
        }
        Ok(if write_value(&mut Bytes(buf), self.value, self.ty) {
            IsNull::No
        } else {
            IsNull::Yes
        })
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
    fn bound_elements_are_the_text_forms() {
        let values = [
            (Value::Null, ColumnType::Text, "pg_catalog.text"),
            (
                Value::Text("a\"b".into()),
                ColumnType::Text,
                "pg_catalog.text",
            ),
            (Value::Int(-7), ColumnType::Interval, "pg_catalog.interval"),
            (
                Value::Float(f64::NAN),
                ColumnType::Float64,
                "pg_catalog.float8",
            ),
            (
                Value::Bytes(vec![1, 2]),
                ColumnType::Bytes,
                "pg_catalog.bytea",
            ),
            (Value::Date(-800_000), ColumnType::Date, "pg_catalog.date"),
            (Value::Date(3_000_000), ColumnType::Date, "pg_catalog.date"),
            (
                Value::Time(86_400_000_000),
                ColumnType::Time,
                "pg_catalog.time",
            ),
            (
                Value::TimestampTz(1),
                ColumnType::TimestampTz,
                "pg_catalog.timestamptz",
            ),
            (
                Value::Json(r#"{"k": "v"}"#.into()),
                ColumnType::Json,
                "public.hstore",
            ),
            (Value::Json("[1]".into()), ColumnType::Json, "public.hstore"),
            (
                Value::Array(vec![Value::Date(0), Value::Null]),
                ColumnType::Array(Box::new(ColumnType::Date)),
                "pg_catalog._date",
            ),
        ];
        for (v, ty, cast) in &values {
            let mut buf = PgArgumentBuffer::default();
            let null = TextElement::for_column(v, ty, is_hstore(cast))
                .encode_by_ref(&mut buf)
                .unwrap();
            let bound = match null {
                IsNull::Yes => None,
                IsNull::No => Some(String::from_utf8(buf.to_vec()).unwrap()),
            };
            assert_eq!(bound, to_column_text(v, ty, cast), "{v:?} as {cast}");
        }
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
