//! Kafka Connect schemas (the `schema` half of a JSON-with-schemas message) and what Ripple derives
//! from them once per distinct schema: the table's columns and how to decode each field.

use ripple_sink::{Column, ColumnType};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A Connect schema as the JsonConverter writes it.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectSchema {
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub parameters: Option<HashMap<String, String>>,
    #[serde(default)]
    pub fields: Option<Vec<ConnectSchema>>,
    #[serde(default)]
    pub items: Option<Box<ConnectSchema>>,
    /// Set on struct fields: the field's name.
    #[serde(default)]
    pub field: Option<String>,
    /// The field's default, in the same representation as its values.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
}

impl ConnectSchema {
    pub fn field(&self, name: &str) -> Option<&ConnectSchema> {
        self.fields
            .as_ref()?
            .iter()
            .find(|f| f.field.as_deref() == Some(name))
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.parameters.as_ref()?.get(key).map(String::as_str)
    }
}

/// How bytea values arrive: the connector's `binary.handling.mode`. Only `bytes` says so in the
/// schema; the others arrive as strings that look alike, so Ripple must be told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BinaryMode {
    #[default]
    Bytes,
    Base64,
    Base64UrlSafe,
    Hex,
}

/// How one field's JSON value becomes a [`ripple_sink::Value`].
#[derive(Debug, Clone, PartialEq)]
pub enum FieldDecoder {
    Bool,
    Int,
    Float,
    Text,
    Json,
    /// `org.apache.kafka.connect.data.Decimal`: base64 big-endian unscaled value.
    Decimal {
        scale: u32,
    },
    /// `io.debezium.data.VariableScaleDecimal`: `{scale, value}`.
    VariableScaleDecimal,
    /// A decimal that arrives as a JSON number or string (`decimal.handling.mode` double/string).
    DecimalText,
    Bytes,
    /// A bytea column sent as a string, in the given encoding.
    BytesText(BinaryMode),
    /// A Connect `map` (hstore with `hstore.handling.mode=map`): kept as a JSON object.
    JsonMap,
    /// `io.debezium.time.IsoDate` (`time.precision.mode=isostring`).
    IsoDate,
    /// `io.debezium.time.IsoTime`.
    IsoTime,
    /// `io.debezium.time.IsoTimestamp`: a timestamp without zone, as UTC.
    IsoTimestamp,
    /// `io.debezium.time.Date`: days since epoch.
    Date,
    /// Time of day in the given number of microseconds per unit (ms = 1000, µs = 1, ns = 1/1000).
    Time(TimeUnit),
    /// Timestamp without zone, epoch-based, in the given unit.
    Timestamp(TimeUnit),
    /// `io.debezium.time.ZonedTimestamp`: ISO-8601 string in UTC.
    ZonedTimestamp,
    /// `io.debezium.time.ZonedTime`: ISO time string with offset; kept as text.
    ZonedTime,
    /// `io.debezium.time.MicroDuration`: microseconds; kept as an integer.
    MicroDuration,
    /// `io.debezium.data.Bits`: a little-endian bit set, as the bit string PostgreSQL reads
    /// (`1010`), left-padded with zeros to `pad` bits for a fixed-length `bit(n)`.
    Bits {
        pad: Option<usize>,
    },
    Array(Box<FieldDecoder>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Millis,
    Micros,
    Nanos,
}

impl TimeUnit {
    pub fn to_micros(self, v: i64) -> i64 {
        match self {
            TimeUnit::Millis => v.saturating_mul(1000),
            TimeUnit::Micros => v,
            TimeUnit::Nanos => v.div_euclid(1000),
        }
    }
}

/// The column type and decoder for one field of a row struct.
pub fn column_for(field: &ConnectSchema, binary: BinaryMode) -> (Column, FieldDecoder) {
    let (ty, decoder) = type_of(field, binary);
    let column = Column {
        name: field.field.clone().unwrap_or_default(),
        ty,
        nullable: field.optional,
        source_type: source_type(field),
        // Filled by the caller, which decodes it as a value of the field (`value.rs`).
        default: None,
    };
    (column, decoder)
}

fn type_of(s: &ConnectSchema, binary: BinaryMode) -> (ColumnType, FieldDecoder) {
    // With decimal.handling.mode=string (or double) a numeric column arrives as a plain string or
    // double; only the propagated source type tells it apart from text. String mode is the one that
    // keeps a numeric's exact text: Debezium's VariableScaleDecimal drops trailing zeros (56.50 -> 56.5).
    let source = s
        .param("__debezium.source.column.type")
        .map(str::to_ascii_uppercase);
    if matches!(source.as_deref(), Some("NUMERIC" | "DECIMAL" | "MONEY"))
        && matches!(s.ty.as_str(), "string" | "double")
    {
        let length: Option<u32> = s
            .param("__debezium.source.column.length")
            .and_then(|v| v.parse().ok());
        let scale: Option<u32> = s
            .param("__debezium.source.column.scale")
            .and_then(|v| v.parse().ok());
        let (precision, scale) = match length {
            Some(p) if p > 0 && p <= 1000 => (Some(p), scale),
            _ => (None, None),
        };
        return (
            ColumnType::Decimal { precision, scale },
            FieldDecoder::DecimalText,
        );
    }
    if source.as_deref() == Some("BYTEA") && s.ty == "string" {
        return (ColumnType::Bytes, FieldDecoder::BytesText(binary));
    }
    match s.name.as_deref() {
        Some("org.apache.kafka.connect.data.Decimal") => {
            let scale = s.param("scale").and_then(|v| v.parse().ok()).unwrap_or(0);
            let precision = s
                .param("connect.decimal.precision")
                .and_then(|v| v.parse().ok());
            (
                ColumnType::Decimal {
                    precision,
                    scale: Some(scale),
                },
                FieldDecoder::Decimal { scale },
            )
        }
        Some("io.debezium.data.VariableScaleDecimal") => (
            ColumnType::Decimal {
                precision: None,
                scale: None,
            },
            FieldDecoder::VariableScaleDecimal,
        ),
        Some("io.debezium.time.Date") | Some("org.apache.kafka.connect.data.Date") => {
            (ColumnType::Date, FieldDecoder::Date)
        }
        Some("io.debezium.time.Time") | Some("org.apache.kafka.connect.data.Time") => {
            (ColumnType::Time, FieldDecoder::Time(TimeUnit::Millis))
        }
        Some("io.debezium.time.IsoDate") => (ColumnType::Date, FieldDecoder::IsoDate),
        Some("io.debezium.time.IsoTime") => (ColumnType::Time, FieldDecoder::IsoTime),
        Some("io.debezium.time.IsoTimestamp") => {
            (ColumnType::Timestamp, FieldDecoder::IsoTimestamp)
        }
        Some("io.debezium.time.MicroTime") => {
            (ColumnType::Time, FieldDecoder::Time(TimeUnit::Micros))
        }
        Some("io.debezium.time.NanoTime") => {
            (ColumnType::Time, FieldDecoder::Time(TimeUnit::Nanos))
        }
        Some("io.debezium.time.ZonedTime") => (ColumnType::TimeTz, FieldDecoder::ZonedTime),
        Some("io.debezium.time.Timestamp") | Some("org.apache.kafka.connect.data.Timestamp") => (
            ColumnType::Timestamp,
            FieldDecoder::Timestamp(TimeUnit::Millis),
        ),
        Some("io.debezium.time.MicroTimestamp") => (
            ColumnType::Timestamp,
            FieldDecoder::Timestamp(TimeUnit::Micros),
        ),
        Some("io.debezium.time.NanoTimestamp") => (
            ColumnType::Timestamp,
            FieldDecoder::Timestamp(TimeUnit::Nanos),
        ),
        Some("io.debezium.time.ZonedTimestamp") => {
            (ColumnType::TimestampTz, FieldDecoder::ZonedTimestamp)
        }
        Some("io.debezium.time.MicroDuration") => {
            (ColumnType::Interval, FieldDecoder::MicroDuration)
        }
        Some("io.debezium.data.Json") => (ColumnType::Json, FieldDecoder::Json),
        Some("io.debezium.data.Uuid") => (ColumnType::Uuid, FieldDecoder::Text),
        Some("io.debezium.data.Bits") => {
            // A varbit's own length is not in the stream (only the declared maximum), so its
            // leading zeros cannot be restored; a bit(n) is always n long.
            let pad = (source.as_deref() == Some("BIT"))
                .then(|| s.param("length").and_then(|l| l.parse().ok()))
                .flatten();
            (ColumnType::Other("bit".into()), FieldDecoder::Bits { pad })
        }
        _ => match s.ty.as_str() {
            "boolean" => (ColumnType::Bool, FieldDecoder::Bool),
            "int8" | "int16" => (ColumnType::Int16, FieldDecoder::Int),
            "int32" => (ColumnType::Int32, FieldDecoder::Int),
            "int64" => (ColumnType::Int64, FieldDecoder::Int),
            "float" => (ColumnType::Float32, FieldDecoder::Float),
            "double" => (ColumnType::Float64, FieldDecoder::Float),
            "bytes" => (ColumnType::Bytes, FieldDecoder::Bytes),
            "array" => {
                let (inner_ty, inner_dec) = match &s.items {
                    Some(items) => type_of(items, binary),
                    None => (ColumnType::Text, FieldDecoder::Text),
                };
                (
                    ColumnType::Array(Box::new(inner_ty)),
                    FieldDecoder::Array(Box::new(inner_dec)),
                )
            }
            "string" => (ColumnType::Text, FieldDecoder::Text),
            "map" => (ColumnType::Json, FieldDecoder::JsonMap),
            other => (ColumnType::Other(other.to_string()), FieldDecoder::Text),
        },
    }
}

/// The source column's declared type, as Debezium propagates it with `column.propagate.source.type`
/// (`VARCHAR(255)`, `NUMERIC(10,2)`, `TEXT`). Debezium always sends a length and a scale; only the
/// types whose declaration uses them keep them, and an unconstrained numeric (length 131089) stays
/// `NUMERIC`. Absent when the connector does not propagate types.
fn source_type(s: &ConnectSchema) -> Option<String> {
    let name = s.param("__debezium.source.column.type")?.to_string();
    let length: Option<u32> = s
        .param("__debezium.source.column.length")
        .and_then(|v| v.parse().ok());
    let scale: Option<u32> = s
        .param("__debezium.source.column.scale")
        .and_then(|v| v.parse().ok());
    Some(match (name.to_ascii_uppercase().as_str(), length, scale) {
        ("VARCHAR" | "BPCHAR" | "CHAR" | "BIT" | "VARBIT", Some(l), _)
            if l > 0 && l < 10_485_760 =>
        {
            format!("{name}({l})")
        }
        ("NUMERIC" | "DECIMAL", Some(p), Some(sc)) if p > 0 && p <= 1000 => {
            format!("{name}({p},{sc})")
        }
        _ => name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(ty: &str, len: &str, scale: &str) -> ConnectSchema {
        let json = format!(
            r#"{{"type":"string","optional":true,"field":"c","parameters":{{"__debezium.source.column.type":"{ty}","__debezium.source.column.length":"{len}","__debezium.source.column.scale":"{scale}"}}}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    fn type_of_bytes(s: &ConnectSchema) -> (ColumnType, FieldDecoder) {
        type_of(s, BinaryMode::Bytes)
    }

    #[test]
    fn string_mode_numerics_are_decimals() {
        let (ty, dec) = type_of_bytes(&field("NUMERIC", "131089", "0"));
        assert_eq!(
            ty,
            ColumnType::Decimal {
                precision: None,
                scale: None
            }
        );
        assert_eq!(dec, FieldDecoder::DecimalText);
        let (ty, _) = type_of_bytes(&field("NUMERIC", "10", "2"));
        assert_eq!(
            ty,
            ColumnType::Decimal {
                precision: Some(10),
                scale: Some(2)
            }
        );
        assert_eq!(
            type_of_bytes(&field("VARCHAR", "10", "0")).1,
            FieldDecoder::Text
        );
    }

    #[test]
    fn source_types_keep_only_meaningful_modifiers() {
        assert_eq!(
            source_type(&field("VARCHAR", "255", "0")).as_deref(),
            Some("VARCHAR(255)")
        );
        assert_eq!(
            source_type(&field("NUMERIC", "131089", "0")).as_deref(),
            Some("NUMERIC")
        );
        assert_eq!(
            source_type(&field("NUMERIC", "10", "2")).as_deref(),
            Some("NUMERIC(10,2)")
        );
        assert_eq!(
            source_type(&field("TEXT", "2147483647", "0")).as_deref(),
            Some("TEXT")
        );
        assert_eq!(
            source_type(&field("TIMESTAMP", "29", "6")).as_deref(),
            Some("TIMESTAMP")
        );
        assert_eq!(
            source_type(&field("VARCHAR", "2147483647", "0")).as_deref(),
            Some("VARCHAR")
        );
    }
}
