//! Verify's own reading of values, apart from the sinks' write path: a source value (PostgreSQL's
//! text, as `PgStore::text_rows` selects it) and a stored field (a Redis hash field's text, a JSON
//! document's field) are each brought to one canonical text per column type, by rules written from
//! the stores' documented formats, and compared. A rendering bug in a sink therefore shows up as a
//! difference instead of being repeated by the check.

use base64::Engine as _;
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::Value as Json;

/// A column's type as verify reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Integer,
    Real,
    Double,
    Numeric,
    /// json, jsonb, and hstore (read as JSON).
    Json,
    Bytes,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    /// Everything else: the source's text is what every store holds.
    Text,
}

/// A column: its kind, and whether it is an array of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ColumnKind {
    pub kind: Kind,
    pub array: bool,
}

impl ColumnKind {
    /// From the catalog's type name (`numeric(10,2)`, `timestamp(3) with time zone`, `text[]`).
    pub fn of(type_name: &str) -> Self {
        let (base, array) = match type_name.strip_suffix("[]") {
            Some(element) => (element, true),
            None => (type_name, false),
        };
        // Without a modifier: `timestamp(3) with time zone` -> `timestamp with time zone`.
        let bare = match (base.find('('), base.find(')')) {
            (Some(open), Some(close)) if open < close => {
                format!("{}{}", &base[..open], &base[close + 1..])
            }
            _ => base.to_string(),
        };
        let kind = match bare.as_str() {
            "boolean" => Kind::Bool,
            "smallint" | "integer" | "bigint" => Kind::Integer,
            "real" => Kind::Real,
            "double precision" => Kind::Double,
            "numeric" | "money" => Kind::Numeric,
            "json" | "jsonb" | "hstore" => Kind::Json,
            "bytea" => Kind::Bytes,
            "date" => Kind::Date,
            "time" | "time without time zone" => Kind::Time,
            "timestamp" | "timestamp without time zone" => Kind::Timestamp,
            "timestamp with time zone" => Kind::TimestampTz,
            _ => Kind::Text,
        };
        Self { kind, array }
    }
}

/// How a store keeps values it has no field for.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rules {
    /// NaN, ±Infinity and infinite timestamps are stored as null (the search index).
    pub non_finite_as_null: bool,
}

/// A stored field as read back.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field<'a> {
    /// The row has no such field.
    Absent,
    /// Text (a Redis hash field, the value of Redis's `string` format).
    Text(&'a str),
    /// A JSON document's field.
    Json(&'a Json),
}

/// The canonical text of a source value; `None` for NULL (and, where the store keeps them as
/// null, for non-finite values).
pub(crate) fn source(column: ColumnKind, text: Option<&str>, rules: Rules) -> Option<String> {
    let text = text?;
    if column.array {
        // Arrays are selected as PostgreSQL's `to_json` of the column.
        return match serde_json::from_str::<Json>(text) {
            Ok(Json::Array(items)) => Some(array_canon(
                items
                    .iter()
                    .map(|item| element_of_source(column.kind, item, rules)),
            )),
            _ => Some(text.to_string()),
        };
    }
    scalar(column.kind, text, rules)
}

/// The canonical text of a stored field; `None` when it is absent or null.
pub(crate) fn stored(column: ColumnKind, field: Field<'_>, rules: Rules) -> Option<String> {
    match field {
        Field::Absent | Field::Json(Json::Null) => None,
        Field::Text(text) if column.array => match serde_json::from_str::<Json>(text) {
            Ok(json) => stored(column, Field::Json(&json), rules),
            Err(_) => Some(text.to_string()),
        },
        Field::Text(text) => scalar(column.kind, text, rules),
        Field::Json(Json::Array(items)) if column.array => {
            Some(array_canon(items.iter().map(|item| {
                stored(
                    ColumnKind {
                        array: false,
                        ..column
                    },
                    Field::Json(item),
                    rules,
                )
            })))
        }
        Field::Json(json) => match column.kind {
            Kind::Json => Some(json_canon(json)),
            Kind::Bool => match json {
                Json::Bool(b) => Some(bool_canon(*b)),
                other => Some(other.to_string()),
            },
            _ => match json {
                Json::String(s) => scalar(column.kind, s, rules),
                Json::Number(n) => scalar(column.kind, &n.to_string(), rules),
                other => Some(other.to_string()),
            },
        },
    }
}

/// An element of a source array, from PostgreSQL's JSON of it: strings for most types (dates and
/// timestamps in ISO form), numbers, booleans, embedded JSON.
fn element_of_source(kind: Kind, item: &Json, rules: Rules) -> Option<String> {
    match (kind, item) {
        (_, Json::Null) => None,
        (Kind::Json, json) => Some(json_canon(json)),
        (_, Json::String(s)) => scalar(kind, s, rules),
        (_, Json::Bool(b)) => Some(bool_canon(*b)),
        (_, other) => scalar(kind, &other.to_string(), rules),
    }
}

fn array_canon(items: impl Iterator<Item = Option<String>>) -> String {
    let items: Vec<Json> = items.map(|i| i.map_or(Json::Null, Json::String)).collect();
    Json::Array(items).to_string()
}

fn bool_canon(b: bool) -> String {
    if b { "t" } else { "f" }.into()
}

/// One scalar, from any of its text forms. A text no rule reads stays as it is, so two unreadable
/// texts are still compared exactly.
fn scalar(kind: Kind, text: &str, rules: Rules) -> Option<String> {
    let canon = match kind {
        Kind::Bool => match text {
            "t" | "true" => Some(bool_canon(true)),
            "f" | "false" => Some(bool_canon(false)),
            _ => None,
        },
        Kind::Integer => text.trim().parse::<i128>().ok().map(|i| i.to_string()),
        Kind::Real | Kind::Double => match float(text) {
            Some(f) if !f.is_finite() && rules.non_finite_as_null => return None,
            Some(f) if kind == Kind::Real => Some(format!("{:?}", f as f32)),
            Some(f) => Some(format!("{f:?}")),
            None => None,
        },
        Kind::Numeric => decimal(text),
        Kind::Json => serde_json::from_str::<Json>(text)
            .ok()
            .map(|j| json_canon(&j)),
        Kind::Bytes => bytes(text).map(|b| b.iter().map(|x| format!("{x:02x}")).collect()),
        Kind::Date if is_plain_date(text) => Some(text.to_string()),
        Kind::Date => date(text).map(|d| d.format("%Y-%m-%d").to_string()),
        Kind::Time => plain_time(text).or_else(|| {
            NaiveTime::parse_from_str(text, "%H:%M:%S%.f")
                .ok()
                .map(|t| t.format("%H:%M:%S%.6f").to_string())
        }),
        Kind::Timestamp | Kind::TimestampTz => match text {
            "infinity" | "-infinity" if rules.non_finite_as_null => return None,
            "infinity" | "-infinity" => Some(text.to_string()),
            _ => plain_timestamp(text, kind == Kind::TimestampTz).or_else(|| {
                timestamp(text, kind == Kind::TimestampTz)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
            }),
        },
        Kind::Text => None,
    };
    Some(canon.unwrap_or_else(|| text.to_string()))
}

/// `YYYY-MM-DD`, four-digit year: already canonical.
fn is_plain_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
}

/// `HH:MM:SS` with an optional fraction of up to six digits, as `HH:MM:SS.ffffff`: the common
/// forms, read without a format parser (every value of a time column comes through here).
fn plain_time(text: &str) -> Option<String> {
    let b = text.as_bytes();
    if b.len() < 8
        || b[2] != b':'
        || b[5] != b':'
        || ![0, 1, 3, 4, 6, 7].iter().all(|&i| b[i].is_ascii_digit())
        || &text[..2] > "23"
    {
        return None;
    }
    let fraction = match &text[8..] {
        "" => "",
        f => f.strip_prefix('.')?,
    };
    if fraction.len() > 6 || !fraction.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut out = String::with_capacity(15);
    out.push_str(&text[..8]);
    out.push('.');
    out.push_str(fraction);
    out.extend(std::iter::repeat_n('0', 6 - fraction.len()));
    Some(out)
}

/// A four-digit-year timestamp with a space or a `T`, in the common forms, as
/// `YYYY-MM-DDTHH:MM:SS.ffffff`; a zoned one only in UTC (`+00`, `+00:00`, `Z`). Anything else is
/// left to the general reading.
fn plain_timestamp(text: &str, zoned: bool) -> Option<String> {
    let mut t = text;
    if zoned {
        t = t
            .strip_suffix('Z')
            .or_else(|| t.strip_suffix("+00:00"))
            .or_else(|| t.strip_suffix("+00"))?;
    }
    if t.len() < 19 || !is_plain_date(&t[..10]) || !matches!(t.as_bytes()[10], b' ' | b'T') {
        return None;
    }
    let time = plain_time(&t[11..])?;
    Some(format!("{}T{time}", &t[..10]))
}

fn float(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

/// An exact decimal by value: `56.50`, `056.5` and `5.65e1` are one number. `NaN` and the
/// infinities stay words.
fn decimal(text: &str) -> Option<String> {
    let t = text.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (mantissa, exponent) = match digits.find(['e', 'E']) {
        Some(i) => (&digits[..i], digits[i + 1..].parse::<i64>().ok()?),
        None => (digits, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    // All digits, and where the point goes after them.
    let all: String = format!("{whole}{fraction}");
    let point = whole.len() as i64 + exponent;
    let first = all.bytes().position(|b| b != b'0');
    let Some(first) = first else {
        return Some("0".into());
    };
    let last = all.bytes().rposition(|b| b != b'0').unwrap_or(first);
    let significant = &all[first..=last];
    // The value is 0.<significant> * 10^(point - first).
    let shift = point - first as i64;
    let body = if shift <= 0 {
        format!("0.{}{significant}", "0".repeat((-shift) as usize))
    } else if shift as usize >= significant.len() {
        format!(
            "{significant}{}",
            "0".repeat(shift as usize - significant.len())
        )
    } else {
        let (a, b) = significant.split_at(shift as usize);
        format!("{a}.{b}")
    };
    Some(if negative { format!("-{body}") } else { body })
}

/// PostgreSQL's `\x…` hex, or the stores' base64.
fn bytes(text: &str) -> Option<Vec<u8>> {
    match text.strip_prefix("\\x") {
        Some(hex) => (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            })
            .collect(),
        None => base64::engine::general_purpose::STANDARD.decode(text).ok(),
    }
}

/// `2024-01-02`, a signed ISO year (`-0043-03-15`), or PostgreSQL's era form (`0044-03-15 BC`,
/// which is ISO year -43: there is no year 0 before Christ).
fn date(text: &str) -> Option<NaiveDate> {
    match text.strip_suffix(" BC") {
        Some(ad) => {
            let d = NaiveDate::parse_from_str(ad, "%Y-%m-%d").ok()?;
            d.with_year(1 - d.year())
        }
        None => NaiveDate::parse_from_str(text, "%Y-%m-%d").ok(),
    }
}

/// A timestamp with a space or a `T`, any fraction, and for a zoned one a UTC suffix (`+00`,
/// `+00:00`, `Z`): the source session and the stores are in UTC.
fn timestamp(text: &str, zoned: bool) -> Option<NaiveDateTime> {
    let mut t = text;
    if zoned {
        t = t
            .strip_suffix('Z')
            .or_else(|| t.strip_suffix("+00:00"))
            .or_else(|| t.strip_suffix("+00"))
            .unwrap_or(t);
    }
    let (t, bc) = match t.strip_suffix(" BC") {
        Some(ad) => (ad, true),
        None => (t, false),
    };
    let parsed = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()?;
    if bc {
        parsed.with_year(1 - parsed.year())
    } else {
        Some(parsed)
    }
}

/// JSON with object keys sorted, whatever order the map type keeps them in.
fn json_canon(json: &Json) -> String {
    fn write(json: &Json, out: &mut String) {
        match json {
            Json::Object(map) => {
                let mut entries: Vec<(&String, &Json)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Json::String(k.clone()).to_string());
                    out.push(':');
                    write(v, out);
                }
                out.push('}');
            }
            Json::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(v, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(json, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PLAIN: Rules = Rules {
        non_finite_as_null: false,
    };
    const INDEX: Rules = Rules {
        non_finite_as_null: true,
    };

    fn same(type_name: &str, source_text: &str, field: Field<'_>, rules: Rules) -> bool {
        let c = ColumnKind::of(type_name);
        super::source(c, Some(source_text), rules) == stored(c, field, rules)
    }

    #[test]
    fn each_kind_reads_its_source_and_stored_forms_alike() {
        let cases: &[(&str, &str, Json)] = &[
            ("boolean", "t", json!(true)),
            ("bigint", "-9223372036854775808", json!(i64::MIN)),
            ("double precision", "0.1", json!(0.1)),
            ("real", "1.1", json!(1.100000023841858)),
            ("double precision", "NaN", json!("NaN")),
            ("numeric(10,2)", "56.50", json!("56.50")),
            ("numeric", "-0.0012300", json!("-0.00123")),
            ("money", "1234.5", json!("1234.50")),
            (
                "jsonb",
                r#"{"b": [1, "x"], "a": null}"#,
                json!({"a": null, "b": [1, "x"]}),
            ),
            ("bytea", "\\x68656c6c6f", json!("aGVsbG8=")),
            ("date", "0044-03-15 BC", json!("-0043-03-15")),
            (
                "time(3) without time zone",
                "09:26:53.5",
                json!("09:26:53.500000"),
            ),
            (
                "timestamp without time zone",
                "2025-03-14 09:26:53",
                json!("2025-03-14T09:26:53.000000"),
            ),
            (
                "timestamp(6) with time zone",
                "2025-03-14 09:26:53.589793+00",
                json!("2025-03-14T09:26:53.589793Z"),
            ),
            ("timestamp with time zone", "infinity", json!("infinity")),
            ("text[]", r#"["a",null]"#, json!(["a", null])),
            ("integer[]", "[1,2]", json!([1, 2])),
            ("numeric[]", "[1.50,2]", json!(["1.5", "2"])),
            (
                "timestamp without time zone[]",
                r#"["2025-03-14T09:26:53"]"#,
                json!(["2025-03-14T09:26:53.000000"]),
            ),
            ("boolean[]", "[true,false]", json!([true, false])),
            ("character varying(20)", "x y", json!("x y")),
            ("interval", "P0Y0M1DT0H0M0S", json!("P0Y0M1DT0H0M0S")),
        ];
        for (type_name, source_text, stored_json) in cases {
            assert!(
                same(type_name, source_text, Field::Json(stored_json), PLAIN),
                "{type_name}: {source_text} vs {stored_json}"
            );
        }
        // A hash field holds text; arrays as JSON text.
        assert!(same("boolean", "f", Field::Text("false"), PLAIN));
        assert!(same("bytea", "\\x00ff", Field::Text("AP8="), PLAIN));
        assert!(same(
            "integer[]",
            "[1,null]",
            Field::Text("[1,null]"),
            PLAIN
        ));
        assert!(same(
            "double precision",
            "-Infinity",
            Field::Text("-Infinity"),
            PLAIN
        ));
    }

    #[test]
    fn a_wrong_rendering_is_a_difference() {
        let cases: &[(&str, &str, Json)] = &[
            ("boolean", "t", json!(false)),
            ("bigint", "5", json!(6)),
            ("numeric", "56.50", json!("56.51")),
            (
                "timestamp without time zone",
                "2025-03-14 09:26:53.589793",
                json!("2025-03-14T09:26:53.589000"),
            ),
            (
                "timestamp with time zone",
                "2025-03-14 09:26:53+00",
                json!("2025-03-14T10:26:53Z"),
            ),
            ("bytea", "\\x68656c6c6f", json!("aGVsbG9=")),
            ("date", "2024-01-02", json!("2024-01-03")),
            ("text", "a", json!("A")),
            ("jsonb", r#"{"a": 1}"#, json!({"a": 2})),
            ("text[]", r#"["a"]"#, json!(["a", "b"])),
        ];
        for (type_name, source_text, stored_json) in cases {
            assert!(
                !same(type_name, source_text, Field::Json(stored_json), PLAIN),
                "{type_name}: {source_text} vs {stored_json}"
            );
        }
        assert!(!same("text", "a", Field::Absent, PLAIN));
    }

    #[test]
    fn non_finite_values_are_null_where_the_store_keeps_them_so() {
        assert!(same(
            "double precision",
            "NaN",
            Field::Json(&Json::Null),
            INDEX
        ));
        assert!(same(
            "timestamp with time zone",
            "-infinity",
            Field::Json(&Json::Null),
            INDEX
        ));
        assert!(!same(
            "double precision",
            "NaN",
            Field::Json(&Json::Null),
            PLAIN
        ));
        assert!(!same(
            "double precision",
            "1.5",
            Field::Json(&Json::Null),
            INDEX
        ));
        assert_eq!(super::source(ColumnKind::of("text"), None, PLAIN), None);
    }

    #[test]
    fn the_quick_readings_agree_with_the_general_ones() {
        for t in [
            "2025-03-14 09:26:53",
            "2025-03-14T09:26:53.5",
            "2025-03-14 09:26:53.589793",
            "0001-01-01 00:00:00.000001",
        ] {
            let general = timestamp(t, false)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.6f")
                .to_string();
            assert_eq!(
                plain_timestamp(t, false).as_deref(),
                Some(general.as_str()),
                "{t}"
            );
            let zoned = format!("{t}+00");
            assert_eq!(
                plain_timestamp(&zoned, true).as_deref(),
                Some(general.as_str()),
                "{t}"
            );
        }
        assert_eq!(plain_timestamp("2025-03-14 09:26:53+01", true), None);
        assert_eq!(plain_timestamp("12025-03-14 09:26:53", false), None);
        assert_eq!(plain_time("24:00:00"), None);
        assert_eq!(plain_time("09:26:53.1234567"), None);
        assert!(is_plain_date("2024-02-29") && !is_plain_date("2024-2-29"));
    }

    #[test]
    fn decimals_compare_by_value() {
        for (a, b) in [
            ("1.50", "1.5"),
            ("0", "-0.00"),
            ("1e3", "1000"),
            ("0.001", "1E-3"),
            ("12.0", "12"),
        ] {
            assert_eq!(decimal(a), decimal(b), "{a} {b}");
        }
        assert_ne!(decimal("1.5"), decimal("15"));
        assert_eq!(decimal("NaN"), None);
    }
}
