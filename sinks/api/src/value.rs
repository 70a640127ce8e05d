//! Column values, already decoded from the stream's encodings into plain typed values.

/// A column value. Decoders turn every wire encoding (base64 decimals, epoch days, micros) into these
/// once, so sinks never see the stream's encodings.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// The source did not send this column because it did not change (an unchanged TOASTed value).
    /// A sink must keep the value it already holds.
    Unavailable,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// An exact decimal in canonical text form (`-12.3400`, `NaN`, `Infinity`); the scale is kept.
    Decimal(String),
    Text(String),
    Bytes(Vec<u8>),
    /// JSON document as text, exactly as the source rendered it.
    Json(String),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds past midnight.
    Time(i64),
    /// Wall-clock microseconds since 1970-01-01 00:00, no zone. `i64::MAX`/`i64::MIN` are ±infinity.
    Timestamp(i64),
    /// Microseconds since the Unix epoch, UTC. `i64::MAX`/`i64::MIN` are ±infinity.
    TimestampTz(i64),
    Array(Vec<Value>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}
