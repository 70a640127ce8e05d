//! Field values: turns each JSON value of a Debezium row into a typed [`Value`] in one pass over the
//! text, guided by the field's [`FieldDecoder`], without building an intermediate JSON tree.

use super::schema::{BinaryMode, ConnectSchema, FieldDecoder, TimeUnit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use num_bigint::BigInt;
use ripple_sink::Value;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// Debezium's default `unavailable.value.placeholder`: an unchanged TOASTed column.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";
/// The same placeholder as bytes, base64-encoded, as it arrives in a bytea column.
const UNAVAILABLE_BASE64: &str = "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==";

/// Decodes one field.
pub struct FieldSeed<'a>(pub &'a FieldDecoder);

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a value for a {:?} field", self.0)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        match self.0 {
            FieldDecoder::Bool => Ok(Value::Bool(v)),
            other => Err(E::custom(format!(
                "boolean where a {other:?} value was expected"
            ))),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        let v = i64::try_from(v).map_err(|_| E::custom(format!("integer {v} out of range")))?;
        self.visit_i64(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(match self.0 {
            FieldDecoder::Int | FieldDecoder::MicroDuration => Value::Int(v),
            FieldDecoder::Float => Value::Float(v as f64),
            FieldDecoder::DecimalText => Value::Decimal(v.to_string()),
            FieldDecoder::Date => Value::Date(
                i32::try_from(v).map_err(|_| E::custom(format!("date {v} days out of range")))?,
            ),
            FieldDecoder::Time(unit) => Value::Time(unit.to_micros(v)),
            FieldDecoder::Timestamp(unit) => Value::Timestamp(timestamp_micros(*unit, v)),
            other => {
                return Err(E::custom(format!(
                    "integer where a {other:?} value was expected"
                )));
            }
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        match self.0 {
            FieldDecoder::Float => Ok(Value::Float(v)),
            FieldDecoder::DecimalText => Ok(Value::Decimal(v.to_string())),
            other => Err(E::custom(format!(
                "number {v} where a {other:?} value was expected"
            ))),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.string(Cow::Borrowed(v))
    }

    // Escaped strings arrive owned; keeping the Cow lets us reuse that allocation.
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.string(Cow::Owned(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        if *self.0 == FieldDecoder::JsonMap {
            let mut object = serde_json::Map::new();
            while let Some(k) = map.next_key::<String>()? {
                object.insert(k, map.next_value()?);
            }
            return Ok(Value::Json(serde_json::Value::Object(object).to_string()));
        }
        if *self.0 != FieldDecoder::VariableScaleDecimal {
            return Err(de::Error::custom(format!(
                "object where a {:?} value was expected",
                self.0
            )));
        }
        let mut scale: Option<u32> = None;
        let mut value: Option<String> = None;
        while let Some(k) = map.next_key::<Cow<'de, str>>()? {
            match k.as_ref() {
                "scale" => scale = Some(map.next_value()?),
                "value" => value = map.next_value::<Option<String>>()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match (scale, value) {
            (Some(scale), Some(value)) => decode_decimal(&value, scale).map_err(de::Error::custom),
            // Debezium sends a null unscaled value for NaN and infinities it cannot express.
            _ => Ok(Value::Null),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let FieldDecoder::Array(inner) = self.0 else {
            return Err(de::Error::custom(format!(
                "array where a {:?} value was expected",
                self.0
            )));
        };
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(v) = seq.next_element_seed(FieldSeed(inner))? {
            items.push(v);
        }
        if items.len() == 1 && items[0] == Value::Unavailable {
            return Ok(Value::Unavailable);
        }
        Ok(Value::Array(items))
    }
}

impl FieldSeed<'_> {
    fn string<E: de::Error>(self, v: Cow<'_, str>) -> Result<Value, E> {
        match self.0 {
            FieldDecoder::Text | FieldDecoder::ZonedTime => {
                if v == UNAVAILABLE {
                    Ok(Value::Unavailable)
                } else {
                    Ok(Value::Text(v.into_owned()))
                }
            }
            FieldDecoder::Json => {
                if v == UNAVAILABLE {
                    Ok(Value::Unavailable)
                } else {
                    Ok(Value::Json(v.into_owned()))
                }
            }
            FieldDecoder::Decimal { scale } => decode_decimal(&v, *scale).map_err(E::custom),
            FieldDecoder::DecimalText => Ok(Value::Decimal(canonical_decimal(v.into_owned()))),
            FieldDecoder::Bytes => {
                if v == UNAVAILABLE_BASE64 {
                    return Ok(Value::Unavailable);
                }
                BASE64
                    .decode(v.as_bytes())
                    .map(Value::Bytes)
                    .map_err(|e| E::custom(format!("invalid base64 in a bytes field: {e}")))
            }
            FieldDecoder::BytesText(mode) => {
                let bytes = decode_binary(&v, *mode).map_err(E::custom)?;
                if bytes == UNAVAILABLE.as_bytes() {
                    return Ok(Value::Unavailable);
                }
                Ok(Value::Bytes(bytes))
            }
            FieldDecoder::IsoDate => parse_iso_date(&v).map(Value::Date).map_err(E::custom),
            FieldDecoder::IsoTime => parse_iso_time(&v).map(Value::Time).map_err(E::custom),
            FieldDecoder::IsoTimestamp => parse_iso_timestamp(&v)
                .map(Value::Timestamp)
                .map_err(E::custom),
            FieldDecoder::Bits { pad } => {
                let length = pad.unwrap_or(0).max(v.len() / 4 * 3 * 8);
                if length > BIT_MAX_LENGTH {
                    return Err(E::custom(format!(
                        "bit string of {length} bits is beyond what PostgreSQL holds ({BIT_MAX_LENGTH})"
                    )));
                }
                BASE64
                    .decode(v.as_bytes())
                    .map(|bytes| Value::Text(bit_string(&bytes, *pad)))
                    .map_err(|e| E::custom(format!("invalid base64 in a bits field: {e}")))
            }
            FieldDecoder::ZonedTimestamp => parse_zoned_timestamp(&v)
                .map(Value::TimestampTz)
                .map_err(E::custom),
            FieldDecoder::Float => match v.as_ref() {
                "NaN" => Ok(Value::Float(f64::NAN)),
                "Infinity" => Ok(Value::Float(f64::INFINITY)),
                "-Infinity" => Ok(Value::Float(f64::NEG_INFINITY)),
                _ => Err(E::custom(format!(
                    "string {v:?} where a number was expected"
                ))),
            },
            other => Err(E::custom(format!(
                "string where a {other:?} value was expected"
            ))),
        }
    }
}

/// Debezium writes ±infinity timestamps as these sentinels (Long.MAX_VALUE / MIN_VALUE in µs/ms).
fn timestamp_micros(unit: TimeUnit, v: i64) -> i64 {
    if v == i64::MAX || v == i64::MIN {
        return v;
    }
    unit.to_micros(v)
}

/// PostgreSQL's `numeric` holds at most 131,072 digits before the point and 16,383 after it.
pub const NUMERIC_MAX_SCALE: u32 = 16_383;
const NUMERIC_MAX_DIGITS: usize = 131_072 + 16_383;
/// The bytes of a two's-complement integer of NUMERIC_MAX_DIGITS digits (log2(10) / 8 per digit).
const NUMERIC_MAX_BYTES: usize = NUMERIC_MAX_DIGITS * 416 / 1000 + 2;
/// PostgreSQL's longest `bit(n)` / `bit varying(n)`.
pub const BIT_MAX_LENGTH: usize = 83_886_080;

/// Turns a base64 big-endian two's-complement unscaled value and a scale into decimal text.
/// Values no PostgreSQL numeric can hold are refused before any digit is written: the text of a
/// scale of 2^31 would take gigabytes.
pub fn decode_decimal(b64: &str, scale: u32) -> Result<Value, String> {
    if scale > NUMERIC_MAX_SCALE {
        return Err(format!(
            "decimal scale {scale} is beyond what a PostgreSQL numeric holds ({NUMERIC_MAX_SCALE})"
        ));
    }
    if b64.len() / 4 * 3 > NUMERIC_MAX_BYTES + 3 {
        return Err(format!(
            "decimal of {} base64 characters is beyond what a PostgreSQL numeric holds ({NUMERIC_MAX_DIGITS} digits)",
            b64.len()
        ));
    }
    let bytes = BASE64
        .decode(b64)
        .map_err(|e| format!("invalid base64 decimal {b64:?}: {e}"))?;
    let unscaled = BigInt::from_signed_bytes_be(&bytes);
    Ok(Value::Decimal(scale_digits(&unscaled.to_string(), scale)))
}

/// Places a decimal point `scale` digits from the right of an integer's text (`-1234`, 2 → `-12.34`).
fn scale_digits(int_text: &str, scale: u32) -> String {
    let scale = scale as usize;
    if scale == 0 {
        return int_text.to_string();
    }
    let (sign, digits) = match int_text.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", int_text),
    };
    let padded = if digits.len() <= scale {
        format!("{}{}", "0".repeat(scale + 1 - digits.len()), digits)
    } else {
        digits.to_string()
    };
    let point = padded.len() - scale;
    format!("{sign}{}.{}", &padded[..point], &padded[point..])
}

/// Parses `2025-03-14T09:26:53.589793Z` (0–9 fraction digits, `Z` or an offset) into UTC micros;
/// `infinity` / `-infinity` become the `i64` extremes.
pub fn parse_zoned_timestamp(v: &str) -> Result<i64, String> {
    match v {
        "infinity" => return Ok(i64::MAX),
        "-infinity" => return Ok(i64::MIN),
        _ => {}
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_micros())
        .map_err(|e| format!("invalid zoned timestamp {v:?}: {e}"))
}

/// A bytea column's value sent as a string (`binary.handling.mode` other than `bytes`).
fn decode_binary(v: &str, mode: BinaryMode) -> Result<Vec<u8>, String> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    match mode {
        BinaryMode::Base64 => BASE64
            .decode(v.as_bytes())
            .map_err(|e| format!("invalid base64 in a bytea field: {e}")),
        BinaryMode::Base64UrlSafe => URL_SAFE
            .decode(v.as_bytes())
            .map_err(|e| format!("invalid url-safe base64 in a bytea field: {e}")),
        BinaryMode::Hex => {
            let digits = v.as_bytes();
            if !digits.len().is_multiple_of(2) {
                return Err(format!("odd-length hex in a bytea field: {v:?}"));
            }
            let nibble = |c: u8| match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(format!("invalid hex in a bytea field: {v:?}")),
            };
            digits
                .chunks(2)
                .map(|p| Ok(nibble(p[0])? << 4 | nibble(p[1])?))
                .collect()
        }
        BinaryMode::Bytes => Err(
            "a bytea column arrives as a string: set [decode] binary_handling_mode to the connector's binary.handling.mode"
                .into(),
        ),
    }
}

/// `2024-02-29` (a trailing `Z` allowed) as days since the epoch.
fn parse_iso_date(v: &str) -> Result<i32, String> {
    let text = v.trim_end_matches('Z');
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|e| format!("invalid ISO date {v:?}: {e}"))?;
    Ok((date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32)
}

/// `12:34:56.789Z` as microseconds past midnight.
fn parse_iso_time(v: &str) -> Result<i64, String> {
    let text = v.trim_end_matches('Z');
    if text.starts_with("24:00:00") {
        return Ok(86_400_000_000);
    }
    let time = chrono::NaiveTime::parse_from_str(text, "%H:%M:%S%.f")
        .map_err(|e| format!("invalid ISO time {v:?}: {e}"))?;
    use chrono::Timelike;
    Ok(time.num_seconds_from_midnight() as i64 * 1_000_000 + (time.nanosecond() / 1000) as i64)
}

/// `2024-02-29T12:34:56.789012Z` (a timestamp without zone, read as UTC) as microseconds since the
/// epoch; `infinity` / `-infinity` as the sentinels the other modes use.
fn parse_iso_timestamp(v: &str) -> Result<i64, String> {
    match v {
        "infinity" | "+infinity" => return Ok(i64::MAX),
        "-infinity" => return Ok(i64::MIN),
        _ => {}
    }
    let text = v.trim_end_matches('Z');
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|t| t.and_utc().timestamp_micros())
        .map_err(|e| format!("invalid ISO timestamp {v:?}: {e}"))
}

/// Debezium's string mode spells a numeric NaN `NAN`; PostgreSQL's own text is `NaN` (and
/// `Infinity`), which is what every sink should hold.
fn canonical_decimal(text: String) -> String {
    // Digits are the rule: only a value starting with a letter (or a signed one) is looked at.
    let special = |t: &str| {
        if t.eq_ignore_ascii_case("nan") {
            Some("NaN")
        } else if t.eq_ignore_ascii_case("infinity") || t.eq_ignore_ascii_case("+infinity") {
            Some("Infinity")
        } else if t.eq_ignore_ascii_case("-infinity") {
            Some("-Infinity")
        } else {
            None
        }
    };
    match text.bytes().next() {
        Some(b) if b.is_ascii_digit() => text,
        _ => special(&text).map_or(text, str::to_string),
    }
}

/// A little-endian bit set (Java's `BitSet.toByteArray`: bit 0 is the lowest bit of byte 0) as a
/// bit string, most significant bit first, without leading zeros beyond `pad` bits.
fn bit_string(bytes: &[u8], pad: Option<usize>) -> String {
    let bits = bytes.len() * 8;
    let text: String = (0..bits)
        .rev()
        .map(|i| {
            if bytes[i / 8] >> (i % 8) & 1 == 1 {
                '1'
            } else {
                '0'
            }
        })
        .collect();
    let significant = text.trim_start_matches('0');
    match pad {
        Some(n) if n > significant.len() => format!("{significant:0>n$}"),
        _ => significant.to_string(),
    }
}

/// A column's default as text, decoded like a value of the field, so a logical type's default
/// reads as its values do; one that does not decode is left out rather than guessed.
pub(crate) fn default_text(field: &ConnectSchema, decoder: &FieldDecoder) -> Option<String> {
    let d = field.default.as_ref()?;
    FieldSeed(decoder)
        .deserialize(d)
        .ok()
        .and_then(|v| ripple_sink::to_text(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(dec: &FieldDecoder, json: &str) -> Result<Value, serde_json::Error> {
        let mut d = serde_json::Deserializer::from_str(json);
        FieldSeed(dec).deserialize(&mut d)
    }

    #[test]
    fn bytea_strings_in_every_binary_mode() {
        let bytes = |mode, json| decode(&FieldDecoder::BytesText(mode), json).unwrap();
        let want = Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef, 0xfb]);
        assert_eq!(bytes(BinaryMode::Hex, r#""deadbeefFB""#), want);
        assert_eq!(bytes(BinaryMode::Base64, r#""3q2+7/s=""#), want);
        assert_eq!(bytes(BinaryMode::Base64UrlSafe, r#""3q2-7_s=""#), want);
        assert_eq!(bytes(BinaryMode::Base64UrlSafe, r#""3q2-7_s""#), want);
        let placeholder = format!(
            "{:?}",
            UNAVAILABLE
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        assert_eq!(bytes(BinaryMode::Hex, &placeholder), Value::Unavailable);
        let err = decode(&FieldDecoder::BytesText(BinaryMode::Bytes), r#""00ff""#).unwrap_err();
        assert!(err.to_string().contains("binary_handling_mode"), "{err}");
        assert!(decode(&FieldDecoder::BytesText(BinaryMode::Hex), r#""0g""#).is_err());
    }

    /// A scale or a length no PostgreSQL value can have is refused before anything of its size is
    /// written: `"0".repeat(scale)` once made one record grow Ripple to 7.8 GB.
    #[test]
    fn values_beyond_postgres_limits_are_refused_not_expanded() {
        let vsd = |scale: u64| {
            decode(
                &FieldDecoder::VariableScaleDecimal,
                &format!(r#"{{"scale": {scale}, "value": "AQ=="}}"#),
            )
        };
        let err = vsd(2_147_483_647).unwrap_err();
        assert!(err.to_string().contains("16383"), "{err}");
        let Value::Decimal(text) = vsd(16_383).unwrap() else {
            panic!("a decimal");
        };
        assert_eq!(
            text.len(),
            16_385,
            "0.000…1 at the largest scale PostgreSQL has"
        );
        let err = decode(
            &FieldDecoder::Decimal {
                scale: 4_000_000_000,
            },
            r#""AQ==""#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("numeric"), "{err}");
        let digits = format!("\"{}\"", "A".repeat(90_000));
        let err = decode(&FieldDecoder::Decimal { scale: 0 }, &digits).unwrap_err();
        assert!(err.to_string().contains("digits"), "{err}");
        let err = decode(&FieldDecoder::Bits { pad: Some(1 << 40) }, r#""AQ==""#).unwrap_err();
        assert!(err.to_string().contains("83886080"), "{err}");
        assert_eq!(
            decode(&FieldDecoder::Bits { pad: Some(8) }, r#""AQ==""#).unwrap(),
            Value::Text("00000001".into())
        );
    }

    #[test]
    fn iso_temporals_and_maps() {
        assert_eq!(
            decode(&FieldDecoder::IsoDate, r#""2024-02-29Z""#).unwrap(),
            Value::Date(19782)
        );
        assert_eq!(
            decode(&FieldDecoder::IsoTime, r#""00:00:01.5Z""#).unwrap(),
            Value::Time(1_500_000)
        );
        assert_eq!(
            decode(
                &FieldDecoder::IsoTimestamp,
                r#""1970-01-01T00:00:00.000001Z""#
            )
            .unwrap(),
            Value::Timestamp(1)
        );
        assert_eq!(
            decode(&FieldDecoder::IsoTimestamp, r#""-infinity""#).unwrap(),
            Value::Timestamp(i64::MIN)
        );
        assert_eq!(
            decode(&FieldDecoder::JsonMap, r#"{"a": "1", "b": null}"#).unwrap(),
            Value::Json(r#"{"a":"1","b":null}"#.into())
        );
    }

    #[test]
    fn bit_sets_become_bit_strings() {
        assert_eq!(bit_string(&[0x0a], Some(4)), "1010");
        assert_eq!(bit_string(&[], Some(4)), "0000");
        assert_eq!(bit_string(&[0x05], None), "101");
        assert_eq!(bit_string(&[0xf0, 0x01], None), "111110000");
        assert_eq!(bit_string(&[0x01], Some(12)), "000000000001");
    }

    #[test]
    fn fixed_scale_decimal() {
        // 49.99 with scale 2 is the unscaled 4999 = 0x138F.
        assert_eq!(
            decode(&FieldDecoder::Decimal { scale: 2 }, r#""E4c=""#).unwrap(),
            Value::Decimal("49.99".into())
        );
        // -0.05: unscaled -5 = 0xFB.
        assert_eq!(
            decode(&FieldDecoder::Decimal { scale: 2 }, r#""+w==""#).unwrap(),
            Value::Decimal("-0.05".into())
        );
        assert_eq!(
            decode(&FieldDecoder::Decimal { scale: 0 }, r#""AA==""#).unwrap(),
            Value::Decimal("0".into())
        );
    }

    #[test]
    fn variable_scale_decimal_keeps_its_scale() {
        // 123.40 as scale 2, unscaled 12340 = 0x3034.
        let v = decode(
            &FieldDecoder::VariableScaleDecimal,
            r#"{"scale":2,"value":"MDQ="}"#,
        )
        .unwrap();
        assert_eq!(v, Value::Decimal("123.40".into()));
        let v = decode(
            &FieldDecoder::VariableScaleDecimal,
            r#"{"value":"MDQ=","scale":4}"#,
        )
        .unwrap();
        assert_eq!(v, Value::Decimal("1.2340".into()));
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            decode(
                &FieldDecoder::Timestamp(TimeUnit::Micros),
                "1741944413589793"
            )
            .unwrap(),
            Value::Timestamp(1741944413589793)
        );
        assert_eq!(
            decode(&FieldDecoder::Timestamp(TimeUnit::Millis), "1741944413589").unwrap(),
            Value::Timestamp(1741944413589000)
        );
        assert_eq!(
            decode(
                &FieldDecoder::ZonedTimestamp,
                r#""2025-03-14T09:26:53.589793Z""#
            )
            .unwrap(),
            Value::TimestampTz(1741944413589793)
        );
        assert_eq!(
            decode(&FieldDecoder::ZonedTimestamp, r#""infinity""#).unwrap(),
            Value::TimestampTz(i64::MAX)
        );
    }

    #[test]
    fn placeholders_become_unavailable() {
        assert_eq!(
            decode(&FieldDecoder::Text, r#""__debezium_unavailable_value""#).unwrap(),
            Value::Unavailable
        );
        assert_eq!(
            decode(&FieldDecoder::Bytes, &format!("\"{UNAVAILABLE_BASE64}\"")).unwrap(),
            Value::Unavailable
        );
        let arr = FieldDecoder::Array(Box::new(FieldDecoder::Text));
        assert_eq!(
            decode(&arr, r#"["__debezium_unavailable_value"]"#).unwrap(),
            Value::Unavailable
        );
    }

    #[test]
    fn escaped_strings_are_kept() {
        assert_eq!(
            decode(&FieldDecoder::Text, r#""a\"b\u00e9""#).unwrap(),
            Value::Text("a\"bé".into())
        );
    }

    #[test]
    fn type_mismatch_is_an_error() {
        assert!(decode(&FieldDecoder::Int, r#""x""#).is_err());
        assert!(decode(&FieldDecoder::Decimal { scale: 2 }, r#""not base64!""#).is_err());
    }

    #[test]
    fn scale_digits_pads() {
        assert_eq!(scale_digits("5", 3), "0.005");
        assert_eq!(scale_digits("-5", 3), "-0.005");
        assert_eq!(scale_digits("12345", 2), "123.45");
    }
}
