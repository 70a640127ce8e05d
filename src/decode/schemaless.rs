//! JSON without schemas (the JsonConverter's `schemas.enable=false`): records carry values but no
//! types, so each column's PostgreSQL type comes from a database catalog (the source's, or a
//! replica's) or from `[decode.schemaless.tables]`, and the connector's handling modes say how
//! Debezium encoded a value of that type. From the two, the Connect schema Debezium would have
//! sent is rebuilt, and decoding then goes exactly as for JSON with schemas.

use super::schema::ConnectSchema;
use super::{
    DecodeError, Decoded, Decoder, FlatMeta, Kind, Need, Record, Skip, Source, decode_change,
    decode_flat, envelope_for, flat_table, source_table,
};
use ahash::AHashMap;
use ripple_sink::{CatalogColumn, ColumnCatalog, TableRef};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

/// The connector's `time.precision.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimePrecisionMode {
    #[default]
    Adaptive,
    AdaptiveTimeMicroseconds,
    Connect,
    Microseconds,
    Nanoseconds,
    Isostring,
}

/// The connector's `decimal.handling.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecimalHandlingMode {
    #[default]
    Precise,
    String,
    Double,
}

/// The connector's `interval.handling.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalHandlingMode {
    #[default]
    Numeric,
    String,
}

/// The connector's `hstore.handling.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HstoreHandlingMode {
    #[default]
    Json,
    Map,
}

/// The connector settings that decide how a value of a given PostgreSQL type is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modes {
    pub time: TimePrecisionMode,
    pub decimal: DecimalHandlingMode,
    pub interval: IntervalHandlingMode,
    pub hstore: HstoreHandlingMode,
}

/// A PostgreSQL column type as `format_type` prints it (`character varying(20)`,
/// `timestamp(3) without time zone`, `integer[]`) or as people write it (`varchar(20)`,
/// `timestamptz`, `int4[]`), reduced to PostgreSQL's internal name and its modifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgType {
    /// Internal name (`int4`, `varchar`, `bpchar`, `timestamptz`, ...); any other name (an enum,
    /// a domain, an extension's type) is kept as written, lower-cased, and read as text.
    pub name: String,
    pub args: Vec<u32>,
    pub array: bool,
}

/// A column type that cannot be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgTypeError {
    #[error("{0:?} has an unclosed parenthesis")]
    Unclosed(String),
    #[error("{0:?}: type modifiers must be numbers, as in numeric(10,2)")]
    Modifier(String),
    #[error("{0:?} names no type")]
    Empty(String),
}

impl PgType {
    pub fn parse(text: &str) -> Result<PgType, PgTypeError> {
        let mut rest = text.trim().to_ascii_lowercase();
        let mut array = false;
        while let Some(r) = rest.strip_suffix("[]") {
            rest = r.trim_end().to_string();
            array = true;
        }
        let mut args = Vec::new();
        if let Some(open) = rest.find('(') {
            let close = rest[open..]
                .find(')')
                .map(|c| open + c)
                .ok_or_else(|| PgTypeError::Unclosed(text.to_string()))?;
            for a in rest[open + 1..close].split(',') {
                args.push(
                    a.trim()
                        .parse::<u32>()
                        .map_err(|_| PgTypeError::Modifier(text.to_string()))?,
                );
            }
            rest = format!("{} {}", &rest[..open], &rest[close + 1..]);
        }
        let words = rest.split_whitespace().collect::<Vec<_>>().join(" ");
        if words.is_empty() {
            return Err(PgTypeError::Empty(text.to_string()));
        }
        let name = match words.as_str() {
            "smallint" | "int2" | "smallserial" | "serial2" => "int2",
            "integer" | "int" | "int4" | "serial" | "serial4" => "int4",
            "bigint" | "int8" | "bigserial" | "serial8" => "int8",
            "real" | "float4" => "float4",
            "double precision" | "float8" => "float8",
            "float" if args.first().is_some_and(|p| *p <= 24) => "float4",
            "float" => "float8",
            "numeric" | "decimal" => "numeric",
            "boolean" | "bool" => "bool",
            "character varying" | "varchar" => "varchar",
            "character" | "char" | "bpchar" => "bpchar",
            "timestamp" | "timestamp without time zone" => "timestamp",
            "timestamptz" | "timestamp with time zone" => "timestamptz",
            "time" | "time without time zone" => "time",
            "timetz" | "time with time zone" => "timetz",
            "bit varying" | "varbit" => "varbit",
            other => other,
        };
        if name == "float4" || name == "float8" {
            args.clear();
        }
        Ok(PgType {
            name: name.to_string(),
            args,
            array,
        })
    }

    /// The Connect schema Debezium's PostgreSQL connector gives a column of this type under
    /// `modes` (and `binary.handling.mode`, which the decoder applies on its own).
    pub fn connect_schema(&self, field: &str, optional: bool, modes: &Modes) -> ConnectSchema {
        let element = PgType {
            array: false,
            ..self.clone()
        };
        let mut schema = element.element_schema(modes);
        schema.optional = optional;
        if self.array {
            schema = ConnectSchema {
                ty: "array".into(),
                optional,
                name: None,
                parameters: None,
                fields: None,
                items: Some(Box::new(ConnectSchema {
                    optional: true,
                    ..schema
                })),
                field: None,
                default: None,
            };
        }
        schema.field = Some(field.to_string());
        schema
    }

    fn element_schema(&self, modes: &Modes) -> ConnectSchema {
        let precision = self.args.first().copied();
        let scale = self.args.get(1).copied();
        let mut params: Vec<(&str, String)> = vec![(
            "__debezium.source.column.type",
            self.name.to_ascii_uppercase(),
        )];
        if let Some(p) = precision {
            params.push(("__debezium.source.column.length", p.to_string()));
            params.push((
                "__debezium.source.column.scale",
                scale.unwrap_or(0).to_string(),
            ));
        }
        let time_micros = |p: Option<u32>| p.unwrap_or(6) > 3;
        let (ty, name): (&str, Option<&str>) = match self.name.as_str() {
            "bool" => ("boolean", None),
            "int2" => ("int16", None),
            "int4" => ("int32", None),
            "int8" => ("int64", None),
            "float4" => ("float", None),
            "float8" => ("double", None),
            "numeric" | "money" => match modes.decimal {
                DecimalHandlingMode::String => ("string", None),
                DecimalHandlingMode::Double => ("double", None),
                DecimalHandlingMode::Precise if self.name == "money" => {
                    params.push(("scale", "2".into()));
                    ("bytes", Some("org.apache.kafka.connect.data.Decimal"))
                }
                DecimalHandlingMode::Precise => match precision {
                    Some(p) => {
                        params.push(("scale", scale.unwrap_or(0).to_string()));
                        params.push(("connect.decimal.precision", p.to_string()));
                        ("bytes", Some("org.apache.kafka.connect.data.Decimal"))
                    }
                    None => ("struct", Some("io.debezium.data.VariableScaleDecimal")),
                },
            },
            "date" => match modes.time {
                TimePrecisionMode::Connect => ("int32", Some("org.apache.kafka.connect.data.Date")),
                TimePrecisionMode::Isostring => ("string", Some("io.debezium.time.IsoDate")),
                _ => ("int32", Some("io.debezium.time.Date")),
            },
            "time" => match modes.time {
                TimePrecisionMode::Adaptive if !time_micros(precision) => {
                    ("int32", Some("io.debezium.time.Time"))
                }
                TimePrecisionMode::Connect => ("int32", Some("org.apache.kafka.connect.data.Time")),
                TimePrecisionMode::Nanoseconds => ("int64", Some("io.debezium.time.NanoTime")),
                TimePrecisionMode::Isostring => ("string", Some("io.debezium.time.IsoTime")),
                _ => ("int64", Some("io.debezium.time.MicroTime")),
            },
            "timestamp" => match modes.time {
                TimePrecisionMode::Adaptive | TimePrecisionMode::AdaptiveTimeMicroseconds
                    if !time_micros(precision) =>
                {
                    ("int64", Some("io.debezium.time.Timestamp"))
                }
                TimePrecisionMode::Connect => {
                    ("int64", Some("org.apache.kafka.connect.data.Timestamp"))
                }
                TimePrecisionMode::Nanoseconds => ("int64", Some("io.debezium.time.NanoTimestamp")),
                TimePrecisionMode::Isostring => ("string", Some("io.debezium.time.IsoTimestamp")),
                _ => ("int64", Some("io.debezium.time.MicroTimestamp")),
            },
            "timestamptz" => ("string", Some("io.debezium.time.ZonedTimestamp")),
            "timetz" => ("string", Some("io.debezium.time.ZonedTime")),
            "interval" => match modes.interval {
                IntervalHandlingMode::Numeric => ("int64", Some("io.debezium.time.MicroDuration")),
                IntervalHandlingMode::String => ("string", Some("io.debezium.time.Interval")),
            },
            "uuid" => ("string", Some("io.debezium.data.Uuid")),
            "json" | "jsonb" => ("string", Some("io.debezium.data.Json")),
            "hstore" => match modes.hstore {
                HstoreHandlingMode::Json => ("string", Some("io.debezium.data.Json")),
                HstoreHandlingMode::Map => ("map", None),
            },
            "bytea" => ("bytes", None),
            // Debezium sends a bit(1) as a boolean, longer bit strings as bytes.
            "bit" if precision.unwrap_or(1) == 1 => ("boolean", None),
            "bit" | "varbit" => {
                if let Some(p) = precision {
                    params.push(("length", p.to_string()));
                }
                ("bytes", Some("io.debezium.data.Bits"))
            }
            _ => ("string", None),
        };
        ConnectSchema {
            ty: ty.into(),
            optional: true,
            name: name.map(str::to_string),
            parameters: Some(
                params
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<HashMap<_, _>>(),
            ),
            fields: None,
            items: None,
            field: None,
            default: None,
        }
    }
}

/// One column's type and whether it may be null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgColumn {
    pub ty: PgType,
    pub nullable: bool,
}

type Tables = AHashMap<TableRef, AHashMap<String, PgColumn>>;

/// The column types a store's catalog gave (the source's, or a replica's), as the decoder holds
/// them. Reading the catalog again is asked for ([`Need::Catalog`]) and done in the async step
/// before decoding (`resolve.rs`).
pub struct Catalog {
    /// What the catalog is, for messages: `the source database`, `the database of sink "replica"`.
    describe: String,
    /// The one schema the store keeps every table in, when not the source's.
    schema: Option<String>,
    tables: Tables,
    refreshed: Option<Instant>,
}

/// A column the catalog did not know a moment ago may have just been added there: look again, but
/// not more often than this, so an unknown table does not turn every record into a query.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

impl Catalog {
    /// An empty catalog for `source`'s tables, to be filled by [`Catalog::install`].
    pub fn new(source: &dyn ColumnCatalog) -> Self {
        Catalog {
            describe: source.describe().to_string(),
            schema: source.schema().map(str::to_string),
            tables: Tables::default(),
            refreshed: None,
        }
    }

    /// Replaces what the catalog holds by `columns`, as just read.
    pub fn install(&mut self, columns: Vec<CatalogColumn>) {
        let mut tables = Tables::default();
        for c in columns {
            let Ok(ty) = PgType::parse(&c.type_name) else {
                continue;
            };
            tables.entry(c.table).or_default().insert(
                c.column,
                PgColumn {
                    ty,
                    nullable: c.nullable,
                },
            );
        }
        self.tables = tables;
        self.refreshed = Some(Instant::now());
    }

    /// A failed read counts as a read: the next one waits its turn too.
    pub fn read_failed(&mut self) {
        self.refreshed = Some(Instant::now());
    }

    fn due(&self) -> bool {
        self.refreshed.is_none_or(|t| t.elapsed() >= REFRESH_EVERY)
    }

    fn column(&self, table: &TableRef, column: &str) -> Option<&PgColumn> {
        let key;
        let table = match &self.schema {
            Some(s) => {
                key = TableRef::new(s.clone(), table.name.clone());
                &key
            }
            None => table,
        };
        self.tables.get(table)?.get(column)
    }
}

/// Where the decoder looks up the types of a schemaless record's columns: declared tables first,
/// then the catalog.
pub struct ColumnTypes {
    pub modes: Modes,
    declared: Tables,
    catalog: Option<Catalog>,
}

impl ColumnTypes {
    pub fn new(modes: Modes, catalog: Option<Catalog>) -> Self {
        Self {
            modes,
            declared: Tables::default(),
            catalog,
        }
    }

    /// Declares one column's type (from config, or in tests).
    pub fn declare(&mut self, table: TableRef, column: &str, ty: PgType) {
        self.declared
            .entry(table)
            .or_default()
            .insert(column.to_string(), PgColumn { ty, nullable: true });
    }

    /// The catalog, for the async step that reads it again.
    pub fn catalog_mut(&mut self) -> Option<&mut Catalog> {
        self.catalog.as_mut()
    }

    /// The types of `columns` of `table`, or a reason naming the first column with none (or the
    /// need to read the catalog again first, when it may have the column by now).
    pub fn resolve(
        &self,
        table: &TableRef,
        columns: &[&str],
    ) -> Result<Vec<PgColumn>, DecodeError> {
        if columns.iter().any(|c| self.lookup(table, c).is_none())
            && self.catalog.as_ref().is_some_and(Catalog::due)
        {
            return Err(DecodeError::needs(Need::Catalog));
        }
        columns
            .iter()
            .map(|c| {
                self.lookup(table, c).cloned().ok_or_else(|| {
                    let from = match &self.catalog {
                        Some(catalog) => format!(
                            "{} (add the column there) or [decode.schemaless.tables.\"{table}\"]",
                            catalog.describe
                        ),
                        None => format!("[decode.schemaless.tables.\"{table}\"]"),
                    };
                    DecodeError::new(format!(
                        "column {c:?} of table {table} has no known type: records without schemas take column types from {from}; then replay the dead letters"
                    ))
                })
            })
            .collect()
    }

    fn lookup(&self, table: &TableRef, column: &str) -> Option<&PgColumn> {
        self.declared
            .get(table)
            .and_then(|t| t.get(column))
            .or_else(|| self.catalog.as_ref()?.column(table, column))
    }
}

/// The parts of a schemaless change envelope needed before its decoder is known.
#[derive(Deserialize)]
struct Shape<'a> {
    #[serde(borrow, default)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    before: Option<&'a RawValue>,
    #[serde(borrow, default)]
    after: Option<&'a RawValue>,
    #[serde(borrow, default)]
    source: Option<Source<'a>>,
}

/// A JSON object's field names, in order; `None` for null.
fn field_names(text: &str) -> Result<Option<Vec<Cow<'_, str>>>, serde_json::Error> {
    struct Names;
    impl<'de> Visitor<'de> for Names {
        type Value = Option<Vec<Cow<'de, str>>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object or null")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut names = Vec::new();
            while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                map.next_value::<IgnoredAny>()?;
                names.push(k);
            }
            Ok(Some(names))
        }
    }
    serde_json::Deserializer::from_str(text).deserialize_any(Names)
}

impl Decoder {
    /// A record without schemas: its table and field names pick (or build, from the column
    /// types) a decoder, which then reads it as if the schema had been there.
    pub(super) fn decode_schemaless(
        &mut self,
        record: &Record<'_>,
        value: &[u8],
    ) -> Result<Decoded, DecodeError> {
        let text =
            std::str::from_utf8(value).map_err(|_| DecodeError::new("value is not UTF-8 JSON"))?;
        let top = field_names(text)
            .map_err(|e| DecodeError::new(format!("value is not a JSON object: {e}")))?
            .ok_or_else(|| DecodeError::new("value is JSON null"))?;
        let key_raw: Option<&RawValue> = match record.key {
            Some(k) => serde_json::from_slice(k)
                .map_err(|e| DecodeError::new(format!("key is not JSON: {e}")))?,
            None => None,
        };
        let key_names = match key_raw {
            Some(k) => field_names(k.get())
                .map_err(|e| DecodeError::new(format!("key is not a JSON object: {e}")))?
                .unwrap_or_default(),
            None => Vec::new(),
        };

        let flat = top.iter().any(|n| n.starts_with("__"));
        let (table, row_names) = if flat {
            let meta: FlatMeta = serde_json::from_str(text)
                .map_err(|e| DecodeError::new(format!("flattened row is malformed: {e}")))?;
            let table = flat_table(&meta, record.topic)?;
            (
                table,
                top.into_iter().filter(|n| !n.starts_with("__")).collect(),
            )
        } else if top.iter().any(|n| n == "op") {
            let shape: Shape = serde_json::from_str(text)
                .map_err(|e| DecodeError::new(format!("change envelope is malformed: {e}")))?;
            if shape.op.as_deref() == Some("m") {
                return Ok(Decoded::Skip(Skip::Message));
            }
            let source = shape
                .source
                .ok_or_else(|| DecodeError::new("payload has no `source` block"))?;
            let table = source_table(&source)?;
            let row = match shape.after.or(shape.before) {
                Some(r) => field_names(r.get())
                    .map_err(|e| DecodeError::new(format!("row is not a JSON object: {e}")))?
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            (table, row)
        } else if top.iter().any(|n| n == "status") && top.iter().any(|n| n == "id") {
            return Ok(Decoded::Skip(Skip::TransactionMarker));
        } else if top.len() == 1 && top[0] == "ts_ms" {
            return Ok(Decoded::Skip(Skip::Heartbeat));
        } else {
            return Err(DecodeError::new(
                "value is neither a Debezium change envelope (no `op`) nor a row flattened by ExtractNewRecordState (no `__` fields such as `__lsn`)",
            ));
        };

        let id = self.hasher.hash_one((flat, &table, &row_names, &key_names));
        if !self.untyped.contains_key(&id) {
            let types = self
                .schemaless
                .as_ref()
                .expect("decode_schemaless is only called with column types");
            let names: Vec<&str> = row_names.iter().map(|n| n.as_ref()).collect();
            let keys: Vec<&str> = key_names.iter().map(|n| n.as_ref()).collect();
            let columns = types.resolve(&table, &names)?;
            let key_columns = types.resolve(&table, &keys)?;
            let modes = types.modes;
            let row: Vec<ConnectSchema> = names
                .iter()
                .zip(&columns)
                .map(|(n, c)| c.ty.connect_schema(n, c.nullable, &modes))
                .collect();
            let key: Vec<ConnectSchema> = keys
                .iter()
                .zip(&key_columns)
                .map(|(n, c)| c.ty.connect_schema(n, false, &modes))
                .collect();
            let envelope = envelope_for(row.iter(), key.iter(), self.binary)?;
            let kind = if flat {
                Kind::Flat(envelope)
            } else {
                Kind::Envelope(envelope)
            };
            self.untyped.insert(id, kind);
        }
        match self.untyped.get_mut(&id) {
            Some(Kind::Envelope(e)) => decode_change(e, record, text, key_raw),
            Some(Kind::Flat(e)) => decode_flat(e, record, text, key_raw),
            Some(Kind::Skip(s)) => Ok(Decoded::Skip(*s)),
            None => unreachable!("inserted above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> PgType {
        PgType::parse(t).unwrap()
    }

    #[test]
    fn format_type_output_and_aliases_parse_alike() {
        assert_eq!(parse("character varying(20)"), parse("varchar(20)"));
        assert_eq!(
            parse("timestamp(3) without time zone"),
            parse("timestamp(3)")
        );
        assert_eq!(parse("timestamp with time zone").name, "timestamptz");
        assert_eq!(parse("double precision").name, "float8");
        let a = parse("integer[]");
        assert!(a.array);
        assert_eq!(a.name, "int4");
        let n = parse("NUMERIC(12, 4)");
        assert_eq!(
            (n.name.as_str(), n.args.as_slice()),
            ("numeric", &[12, 4][..])
        );
        assert_eq!(parse("e2e_types_mood").name, "e2e_types_mood");
        assert!(PgType::parse("numeric(1").is_err());
        assert!(PgType::parse("numeric(a,b)").is_err());
        assert!(PgType::parse("  ").is_err());
    }

    fn schema(t: &str, modes: Modes) -> (String, Option<String>) {
        let s = parse(t).connect_schema("c", true, &modes);
        (s.ty, s.name)
    }

    #[test]
    fn times_follow_the_precision_mode() {
        let adaptive = Modes::default();
        assert_eq!(
            schema("timestamp(3)", adaptive).1.as_deref(),
            Some("io.debezium.time.Timestamp")
        );
        assert_eq!(
            schema("timestamp", adaptive).1.as_deref(),
            Some("io.debezium.time.MicroTimestamp")
        );
        assert_eq!(
            schema("time(2)", adaptive).1.as_deref(),
            Some("io.debezium.time.Time")
        );
        let micro = Modes {
            time: TimePrecisionMode::AdaptiveTimeMicroseconds,
            ..adaptive
        };
        assert_eq!(
            schema("time(2)", micro).1.as_deref(),
            Some("io.debezium.time.MicroTime")
        );
        let iso = Modes {
            time: TimePrecisionMode::Isostring,
            ..adaptive
        };
        assert_eq!(
            schema("date", iso).1.as_deref(),
            Some("io.debezium.time.IsoDate")
        );
        assert_eq!(
            schema("timestamptz", iso).1.as_deref(),
            Some("io.debezium.time.ZonedTimestamp")
        );
    }

    #[test]
    fn decimals_follow_the_decimal_mode() {
        let precise = Modes::default();
        assert_eq!(
            schema("numeric(10,2)", precise).1.as_deref(),
            Some("org.apache.kafka.connect.data.Decimal")
        );
        assert_eq!(
            schema("numeric", precise).1.as_deref(),
            Some("io.debezium.data.VariableScaleDecimal")
        );
        let string = Modes {
            decimal: DecimalHandlingMode::String,
            ..precise
        };
        assert_eq!(schema("numeric(10,2)", string), ("string".into(), None));
        assert_eq!(schema("bit(1)", precise).0, "boolean");
        assert_eq!(
            schema("bit(4)", precise).1.as_deref(),
            Some("io.debezium.data.Bits")
        );
        let arr = parse("numeric(5,1)[]").connect_schema("c", true, &precise);
        assert_eq!(arr.ty, "array");
        assert_eq!(
            arr.items.unwrap().name.as_deref(),
            Some("org.apache.kafka.connect.data.Decimal")
        );
    }

    #[test]
    fn unknown_columns_name_the_table_and_the_fix() {
        let mut types = ColumnTypes::new(Modes::default(), None);
        let t = TableRef::new("public", "t");
        types.declare(t.clone(), "id", parse("int4"));
        assert_eq!(types.resolve(&t, &["id"]).unwrap()[0].ty.name, "int4");
        let err = types.resolve(&t, &["id", "extra"]).unwrap_err().reason;
        assert!(
            err.contains("\"extra\"") && err.contains("decode.schemaless.tables"),
            "{err}"
        );
    }
}
