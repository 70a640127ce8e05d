//! Decoding: a Kafka record from a Debezium topic becomes a [`ChangeEvent`], or a reason to skip it
//! (tombstones, transaction markers, heartbeats), or a [`DecodeError`] saying why it is malformed.
//! Schemas are parsed once per distinct schema text and cached; rows are decoded in one pass.

pub mod avro;
mod resolve;
pub use resolve::{Resolver, ResolvingDecoder};
mod schema;
pub mod schemaless;
pub(crate) mod value;

pub use schema::{BinaryMode, ConnectSchema, FieldDecoder};
use schemaless::ColumnTypes;
pub use value::{UNAVAILABLE, decode_decimal, parse_zoned_timestamp};

use ahash::AHashMap;
use ripple_sink::{
    ChangeEvent, Column, ColumnType, Op, Origin, ROW_COLUMN, TableRef, TableSchema, Value, Version,
};
use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use value::FieldSeed;

/// Why a well-formed record carries no row change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A null value after a delete, which only exists for Kafka log compaction.
    Tombstone,
    /// A BEGIN/END record of Debezium's transaction topic.
    TransactionMarker,
    Heartbeat,
    /// A logical decoding message (`op: m`).
    Message,
}

/// What a record decodes to.
#[derive(Debug)]
pub enum Decoded {
    Change(ChangeEvent),
    Skip(Skip),
}

/// A record Ripple cannot turn into a change. It says what is wrong in words a person can act on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    pub reason: String,
    /// Set when the record may decode once something is fetched (see `resolve.rs`).
    need: Option<Need>,
}

/// What the decoder, which does no I/O, needs fetched before it can decode a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The Avro writer schema with this id, from the schema registry.
    Schema(u32),
    /// The column catalog read again: a schemaless record names a column it does not know.
    Catalog,
}

impl DecodeError {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            need: None,
        }
    }

    fn needs(need: Need) -> Self {
        let reason = match need {
            Need::Schema(id) => {
                format!("Avro schema {id} is not known yet (it is fetched before decoding)")
            }
            Need::Catalog => "the column catalog must be read again".to_string(),
        };
        Self {
            reason,
            need: Some(need),
        }
    }

    /// What would let the record decode, if anything.
    pub fn need(&self) -> Option<Need> {
        self.need
    }
}

/// The record's key and value bytes, as read from Kafka.
pub struct Record<'a> {
    pub topic: &'a Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// What the decoder derived from one (key schema, value schema) pair.
struct Envelope {
    table: Arc<TableSchema>,
    decoders: Vec<FieldDecoder>,
    /// Field name -> column position; rows are JSON objects, so fields are matched by name.
    positions: AHashMap<String, usize>,
    key_decoders: Vec<FieldDecoder>,
    key_positions: AHashMap<String, usize>,
    /// For a table without a key: `table` with the position column added as its key.
    keyless: Option<Arc<TableSchema>>,
}

impl Envelope {
    /// The schema events of a keyless table carry: its columns, then [`ROW_COLUMN`] as the key.
    fn keyless_schema(&mut self) -> Arc<TableSchema> {
        if let Some(s) = &self.keyless
            && s.table == self.table.table
        {
            return s.clone();
        }
        let mut columns = self.table.columns.clone();
        columns.push(Column {
            nullable: false,
            ..Column::new(ROW_COLUMN, ColumnType::Text)
        });
        let schema = Arc::new(TableSchema {
            table: self.table.table.clone(),
            key: vec![columns.len() - 1],
            columns,
        });
        self.keyless = Some(schema.clone());
        schema
    }
}

enum Kind {
    Envelope(Box<Envelope>),
    /// A row flattened by Debezium's `ExtractNewRecordState` transform: the row's fields, plus
    /// the transform's `__`-prefixed ones (`__deleted`, `__op`, `__lsn`, `__table`, ...).
    Flat(Box<Envelope>),
    Skip(Skip),
}

/// How large a record, and one value in it, may be (`[decode] max_record_bytes`,
/// `max_value_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_record_bytes: usize,
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record_bytes: 128 << 20,
            max_value_bytes: 64 << 20,
        }
    }
}

/// Decodes Debezium's JSON-with-schemas records. Holds the schema cache, so keep one per consumer.
#[derive(Default)]
pub struct Decoder {
    limits: Limits,
    cache: AHashMap<(u64, u64), Kind>,
    hasher: ahash::RandomState,
    /// Per topic, the last value schema's bytes and hash: see `split_known_schema`.
    last_schema: AHashMap<Arc<str>, (Vec<u8>, u64)>,
    binary: BinaryMode,
    /// Set when records may come without schemas: where their column types come from.
    schemaless: Option<ColumnTypes>,
    /// Schemaless records' decoders, by table, row fields and key fields: see `schemaless.rs`.
    untyped: AHashMap<u64, Kind>,
    /// Set when records may be Avro: where their schemas come from.
    avro: Option<avro::Registry>,
    /// Avro records' decoders, by (value schema id, key schema id or `u64::MAX`).
    avro_kinds: AHashMap<(u64, u64), Kind>,
}

const SCHEMA_PREFIX: &[u8] = b"{\"schema\":";
const PAYLOAD_PREFIX: &[u8] = b",\"payload\":";

/// The JsonConverter writes `{"schema":S,"payload":P}`, and a topic's records repeat the same S
/// byte for byte, which is most of each record. When the bytes after `{"schema":` start with the
/// topic's last schema, the payload is sliced out without parsing S again.
fn split_known_schema<'a>(value: &'a [u8], schema: &[u8]) -> Option<&'a [u8]> {
    let rest = value
        .strip_prefix(SCHEMA_PREFIX)?
        .strip_prefix(schema)?
        .strip_prefix(PAYLOAD_PREFIX)?;
    rest.strip_suffix(b"}")
}

#[derive(Deserialize)]
struct Framed<'a> {
    #[serde(borrow, default)]
    schema: Option<&'a RawValue>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Source<'a> {
    #[serde(borrow, default)]
    schema: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    table: Option<Cow<'a, str>>,
    #[serde(default)]
    ts_ms: Option<i64>,
    #[serde(default)]
    lsn: Option<i64>,
    #[serde(borrow, default)]
    sequence: Option<Cow<'a, str>>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// How the connector sends bytea values (its `binary.handling.mode`).
    pub fn binary_mode(mut self, binary: BinaryMode) -> Self {
        self.binary = binary;
        self.cache.clear();
        self.untyped.clear();
        self.avro_kinds.clear();
        self
    }

    /// Also reads records without schemas (`schemas.enable=false`), typing their columns from
    /// `types`.
    pub fn schemaless(mut self, types: ColumnTypes) -> Self {
        self.schemaless = Some(types);
        self.cache.clear();
        self
    }

    /// Also reads Avro records in the Confluent wire format, with schemas from `registry`.
    pub fn avro(mut self, registry: avro::Registry) -> Self {
        self.avro = Some(registry);
        self
    }

    /// Size limits other than the defaults.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn decode(&mut self, record: &Record<'_>) -> Result<Decoded, DecodeError> {
        let size = record.key.map_or(0, <[u8]>::len) + record.value.map_or(0, <[u8]>::len);
        if size > self.limits.max_record_bytes {
            return Err(DecodeError::new(format!(
                "record of {size} bytes is over decode.max_record_bytes ({}); raise it to take such records",
                self.limits.max_record_bytes
            )));
        }
        let decoded = self.decode_record(record)?;
        if let Decoded::Change(e) = &decoded {
            let rows = [e.row.as_deref(), e.before.as_deref()];
            for (column, v) in rows
                .into_iter()
                .flatten()
                .flat_map(|row| e.schema.columns.iter().zip(row))
            {
                let size = value_bytes(v);
                if size > self.limits.max_value_bytes {
                    return Err(DecodeError::new(format!(
                        "column {:?} holds {size} bytes, over decode.max_value_bytes ({}); raise it to take such values",
                        column.name, self.limits.max_value_bytes
                    )));
                }
            }
        }
        Ok(decoded)
    }

    fn decode_record(&mut self, record: &Record<'_>) -> Result<Decoded, DecodeError> {
        let Some(value) = record.value else {
            return Ok(Decoded::Skip(Skip::Tombstone));
        };
        // JSON never starts with a zero byte; the Avro wire format always does.
        if value.first() == Some(&0) {
            return self.decode_avro(record, value);
        }
        if self.schemaless.is_some() && !value.starts_with(SCHEMA_PREFIX) {
            return self.decode_schemaless(record, value);
        }
        let key: Option<Framed> = match record.key {
            Some(k) => Some(
                serde_json::from_slice(k)
                    .map_err(|e| DecodeError::new(format!("key is not JSON: {e}")))?,
            ),
            None => None,
        };
        let key_schema = key.as_ref().and_then(|k| k.schema);
        let key_hash = key_schema.map_or(0, |s| self.hash(s.get()));

        let known = self
            .last_schema
            .get(record.topic)
            .and_then(|(schema, hash)| {
                let payload = split_known_schema(value, schema)?;
                Some((std::str::from_utf8(payload).ok()?, *hash))
            });
        let (payload, value_hash) = match known {
            Some(found) => found,
            None => {
                let framed: Framed = serde_json::from_slice(value).map_err(|e| {
                    DecodeError::new(format!(
                        "value is not JSON with schema and payload (JsonConverter, schemas.enable=true): {e}"
                    ))
                })?;
                let (Some(schema), Some(payload)) = (framed.schema, framed.payload) else {
                    if self.schemaless.is_some() {
                        return self.decode_schemaless(record, value);
                    }
                    return Err(DecodeError::new(
                        "value has no `schema` and `payload`: for the JsonConverter with schemas.enable=false, configure [decode.schemaless] so Ripple knows the column types",
                    ));
                };
                let hash = self.hash(schema.get());
                if !self.cache.contains_key(&(hash, key_hash)) {
                    let kind = analyse(schema, key_schema, self.binary)?;
                    self.cache.insert((hash, key_hash), kind);
                }
                self.last_schema.insert(
                    record.topic.clone(),
                    (schema.get().as_bytes().to_vec(), hash),
                );
                (payload.get(), hash)
            }
        };
        if !self.cache.contains_key(&(value_hash, key_hash)) {
            // A known value schema met with another key schema (a truncate's null key, say).
            let framed: Framed = serde_json::from_slice(value)
                .map_err(|e| DecodeError::new(format!("value is not JSON: {e}")))?;
            let schema = framed
                .schema
                .ok_or_else(|| DecodeError::new("value has no `schema`"))?;
            let kind = analyse(schema, key_schema, self.binary)?;
            self.cache.insert((value_hash, key_hash), kind);
        }
        match self.cache.get_mut(&(value_hash, key_hash)) {
            Some(Kind::Envelope(e)) => {
                decode_change(e, record, payload, key.and_then(|k| k.payload))
            }
            Some(Kind::Flat(e)) => decode_flat(e, record, payload, key.and_then(|k| k.payload)),
            Some(Kind::Skip(s)) => Ok(Decoded::Skip(*s)),
            None => unreachable!("inserted above"),
        }
    }

    fn hash(&self, text: &str) -> u64 {
        self.hasher.hash_one(text)
    }
}

/// The bytes a value holds, as a store would be asked to take them.
fn value_bytes(v: &Value) -> usize {
    match v {
        Value::Text(s) | Value::Json(s) | Value::Decimal(s) => s.len(),
        Value::Bytes(b) => b.len(),
        Value::Array(items) => items.iter().map(|i| 8 + value_bytes(i)).sum(),
        _ => 8,
    }
}

/// Works out what a record with these schemas is and, for change envelopes, how to decode it.
fn analyse(
    value_schema: &RawValue,
    key_schema: Option<&RawValue>,
    binary: BinaryMode,
) -> Result<Kind, DecodeError> {
    let schema: ConnectSchema = serde_json::from_str(value_schema.get())
        .map_err(|e| DecodeError::new(format!("value schema is not a Connect schema: {e}")))?;
    let key = match key_schema {
        Some(ks) => Some(
            serde_json::from_str::<ConnectSchema>(ks.get()).map_err(|e| {
                DecodeError::new(format!("key schema is not a Connect schema: {e}"))
            })?,
        ),
        None => None,
    };
    analyse_schema(&schema, key.as_ref(), binary)
}

/// `analyse` for schemas already parsed (from JSON, or derived from an Avro schema).
fn analyse_schema(
    schema: &ConnectSchema,
    key: Option<&ConnectSchema>,
    binary: BinaryMode,
) -> Result<Kind, DecodeError> {
    match schema.name.as_deref() {
        Some("io.debezium.connector.common.TransactionMetadataValue") => {
            return Ok(Kind::Skip(Skip::TransactionMarker));
        }
        Some(n) if n.ends_with(".Heartbeat") || n == "io.debezium.connector.common.Heartbeat" => {
            return Ok(Kind::Skip(Skip::Heartbeat));
        }
        _ => {}
    }
    let flat = schema.field("op").is_none() && schema.field("source").is_none();
    if flat && !schema.fields.iter().flatten().any(is_meta) {
        return Err(DecodeError::new(format!(
            "value schema {:?} is neither a Debezium change envelope (no `op` and `source` fields) nor a row flattened by ExtractNewRecordState (no `__` fields such as `__lsn`)",
            schema.name.as_deref().unwrap_or("(unnamed)")
        )));
    }
    let row = if flat {
        schema
    } else {
        schema
            .field("after")
            .or_else(|| schema.field("before"))
            .ok_or_else(|| {
                DecodeError::new("change envelope schema has neither `before` nor `after`")
            })?
    };
    let envelope = envelope_for(
        row.fields.iter().flatten(),
        key.into_iter().flat_map(|k| k.fields.iter().flatten()),
        binary,
    )?;
    Ok(if flat {
        Kind::Flat(envelope)
    } else {
        Kind::Envelope(envelope)
    })
}

/// PostgreSQL's MAXDIM: no array column has more dimensions.
const ARRAY_MAX_DIMENSIONS: usize = 6;

/// How to decode rows with these fields (the flattening transform's `__` fields left out) and
/// keys with these.
fn envelope_for<'a>(
    row: impl Iterator<Item = &'a ConnectSchema>,
    key_fields: impl Iterator<Item = &'a ConnectSchema>,
    binary: BinaryMode,
) -> Result<Box<Envelope>, DecodeError> {
    let (columns, decoders): (Vec<Column>, Vec<FieldDecoder>) = row
        .filter(|f| !is_meta(f))
        .map(|f| {
            let (mut column, decoder) = schema::column_for(f, binary);
            column.default = value::default_text(f, &decoder);
            (column, decoder)
        })
        .unzip();
    for c in &columns {
        let mut depth = 0;
        let mut ty = &c.ty;
        while let ColumnType::Array(inner) = ty {
            depth += 1;
            ty = inner;
        }
        if depth > ARRAY_MAX_DIMENSIONS {
            return Err(DecodeError::new(format!(
                "column {:?} is an array of {depth} dimensions; PostgreSQL holds at most {ARRAY_MAX_DIMENSIONS}",
                c.name
            )));
        }
    }
    let positions = columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.clone(), i))
        .collect();

    let mut key = Vec::new();
    let mut key_decoders = Vec::new();
    let mut key_positions = AHashMap::new();
    for (i, f) in key_fields.enumerate() {
        let name = f.field.clone().unwrap_or_default();
        let pos = columns.iter().position(|c| c.name == name).ok_or_else(|| {
            DecodeError::new(format!("key field {name:?} is not a column of the row"))
        })?;
        key.push(pos);
        key_decoders.push(schema::column_for(f, binary).1);
        key_positions.insert(name, i);
    }
    // The table name is filled from the first record's `source` block; see `decode_change`.
    let table = Arc::new(TableSchema {
        table: TableRef::new("", ""),
        columns,
        key,
    });
    Ok(Box::new(Envelope {
        table,
        decoders,
        positions,
        key_decoders,
        key_positions,
        keyless: None,
    }))
}

/// Fields `ExtractNewRecordState` adds to a flattened row (its default `add.fields.prefix`).
fn is_meta(field: &ConnectSchema) -> bool {
    field.field.as_deref().is_some_and(|n| n.starts_with("__"))
}

/// What `ExtractNewRecordState` adds to a row: `delete.tombstone.handling.mode=rewrite` sets
/// `__deleted`, `add.fields=op,lsn,source.ts_ms,schema,table` the others.
#[derive(Deserialize)]
struct FlatMeta<'a> {
    #[serde(rename = "__deleted", borrow, default)]
    deleted: Option<Cow<'a, str>>,
    #[serde(rename = "__op", borrow, default)]
    op: Option<Cow<'a, str>>,
    #[serde(rename = "__lsn", default)]
    lsn: Option<i64>,
    #[serde(rename = "__source_ts_ms", default)]
    source_ts_ms: Option<i64>,
    #[serde(rename = "__schema", borrow, default)]
    schema: Option<Cow<'a, str>>,
    #[serde(rename = "__table", borrow, default)]
    table: Option<Cow<'a, str>>,
}

/// A flattened row: an upsert, or with `__deleted: "true"` (or `__op: "d"`) a delete. Its order
/// is `__lsn`, which must be there: without it nothing says which of two changes is newer. The
/// table comes from `__schema` / `__table`, else from the topic (`<prefix>.<schema>.<table>`).
fn decode_flat(
    envelope: &mut Envelope,
    record: &Record<'_>,
    payload: &str,
    key_payload: Option<&RawValue>,
) -> Result<Decoded, DecodeError> {
    let meta: FlatMeta = serde_json::from_str(payload)
        .map_err(|e| DecodeError::new(format!("flattened row is not a JSON object: {e}")))?;
    let lsn = meta.lsn.ok_or_else(|| {
        DecodeError::new(
            "flattened row without `__lsn`: add lsn to the ExtractNewRecordState transform's add.fields, so changes can be ordered",
        )
    })?;
    let deleted = meta.deleted.as_deref() == Some("true") || meta.op.as_deref() == Some("d");
    let table = flat_table(&meta, record.topic)?;
    if envelope.table.table != table {
        envelope.table = Arc::new(TableSchema {
            table,
            ..(*envelope.table).clone()
        });
    }
    let schema = envelope.table.clone();
    let mut d = serde_json::Deserializer::from_str(payload);
    let row = RowSeed {
        decoders: &envelope.decoders,
        positions: &envelope.positions,
        skip_meta: true,
    }
    .deserialize(&mut d)
    .map_err(|e| DecodeError::new(format!("payload does not match its schema: {e}")))?
    .ok_or_else(|| DecodeError::new("flattened row is null"))?;
    let key = match key_payload {
        Some(k) => decode_key(envelope, k)?,
        None => schema.key.iter().map(|&i| row[i].clone()).collect(),
    };
    check_key(&schema, &key)?;
    Ok(Decoded::Change(ChangeEvent {
        schema,
        op: if deleted { Op::Delete } else { Op::Upsert },
        row: (!deleted).then_some(row),
        key,
        before: None,
        version: Version {
            commit: 0,
            change: lsn.max(0) as u64,
        },
        source_ts_ms: meta.source_ts_ms.unwrap_or_default(),
        origin: Origin {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
        },
    }))
}

/// A flattened row's table: from `__schema` / `__table`, else from the topic
/// (`<prefix>.<schema>.<table>`).
fn flat_table(meta: &FlatMeta<'_>, topic: &str) -> Result<TableRef, DecodeError> {
    if let (Some(schema), Some(table)) = (meta.schema.as_deref(), meta.table.as_deref()) {
        return Ok(TableRef::new(schema, table));
    }
    let mut parts = topic.rsplitn(3, '.');
    match (parts.next(), parts.next()) {
        (Some(t), Some(s)) if !s.is_empty() && !t.is_empty() => Ok(TableRef::new(s, t)),
        _ => Err(DecodeError::new(format!(
            "flattened row without `__schema` and `__table`, and topic {topic:?} is not <prefix>.<schema>.<table>: add schema,table to the transform's add.fields"
        ))),
    }
}

fn decode_change(
    envelope: &mut Envelope,
    record: &Record<'_>,
    payload: &str,
    key_payload: Option<&RawValue>,
) -> Result<Decoded, DecodeError> {
    let mut d = serde_json::Deserializer::from_str(payload);
    let p = PayloadSeed { envelope }
        .deserialize(&mut d)
        .and_then(|p| d.end().map(|()| p))
        .map_err(|e| DecodeError::new(format!("payload does not match its schema: {e}")))?;
    let op = match p.op.as_deref() {
        Some("c") | Some("u") | Some("r") => Op::Upsert,
        Some("d") => Op::Delete,
        Some("t") => Op::Truncate,
        Some("m") => return Ok(Decoded::Skip(Skip::Message)),
        Some(other) => {
            return Err(DecodeError::new(format!(
                "unknown op {other:?} (expected c, u, d, r, t or m)"
            )));
        }
        None => return Err(DecodeError::new("payload has no `op`")),
    };
    let source = p
        .source
        .ok_or_else(|| DecodeError::new("payload has no `source` block"))?;
    let table = source_table(&source)?;
    if envelope.table.table != table {
        // The first record with this schema names its table; events then share one Arc, which
        // sinks use to cache their per-schema plans.
        envelope.table = Arc::new(TableSchema {
            table,
            ..(*envelope.table).clone()
        });
    }
    let schema = envelope.table.clone();
    let version = version_of(&source)?;
    let origin = Origin {
        topic: record.topic.clone(),
        partition: record.partition,
        offset: record.offset,
    };
    let source_ts_ms = source.ts_ms.unwrap_or_default();

    if schema.key.is_empty() && op != Op::Truncate {
        let code = p.op.as_deref().unwrap_or_default();
        let (before, after) = (p.before, p.after);
        return keyless_change(
            envelope,
            code,
            before,
            after,
            op,
            version,
            source_ts_ms,
            origin,
        );
    }
    let (row, key) = match op {
        Op::Truncate => (None, Vec::new()),
        Op::Upsert => {
            let row = p
                .after
                .ok_or_else(|| DecodeError::new("insert/update without `after`"))?;
            let key = match key_payload {
                Some(k) => decode_key(envelope, k)?,
                None => schema.key.iter().map(|&i| row[i].clone()).collect(),
            };
            (Some(row), key)
        }
        Op::Delete => {
            let key = match key_payload {
                Some(k) => decode_key(envelope, k)?,
                None => {
                    let before = p
                        .before
                        .ok_or_else(|| DecodeError::new("delete without key or `before`"))?;
                    schema.key.iter().map(|&i| before[i].clone()).collect()
                }
            };
            (None, key)
        }
    };
    if op != Op::Truncate {
        check_key(&schema, &key)?;
    }
    Ok(Decoded::Change(ChangeEvent {
        schema,
        op,
        row,
        key,
        before: None,
        version,
        source_ts_ms,
        origin,
    }))
}

/// A change to a table without a primary key. An insert (or snapshot read) becomes a row keyed by
/// its source position ([`ROW_COLUMN`]), so applying it again changes nothing. An update or delete
/// names its row by the whole row before it, which Debezium has only with REPLICA IDENTITY FULL.
#[allow(clippy::too_many_arguments)]
fn keyless_change(
    envelope: &mut Envelope,
    code: &str,
    before: Option<Vec<Value>>,
    after: Option<Vec<Value>>,
    op: Op,
    version: Version,
    source_ts_ms: i64,
    origin: Origin,
) -> Result<Decoded, DecodeError> {
    let schema = envelope.keyless_schema();
    let with = |mut row: Vec<Value>, position: Value| {
        row.push(position);
        row
    };
    let event = |row, key, before| {
        Decoded::Change(ChangeEvent {
            schema: schema.clone(),
            op,
            row,
            key,
            before,
            version,
            source_ts_ms,
            origin: origin.clone(),
        })
    };
    if code == "c" || code == "r" {
        let after = after.ok_or_else(|| DecodeError::new("insert without `after`"))?;
        // Rows of one snapshot share its LSN: their Kafka position tells them apart.
        let position = if code == "r" {
            format!("{}:{}:{}", version.change, origin.partition, origin.offset)
        } else {
            format!("{}:{}", version.commit, version.change)
        };
        let position = Value::Text(position);
        return Ok(event(
            Some(with(after, position.clone())),
            vec![position],
            None,
        ));
    }
    let before = before.ok_or_else(|| {
        DecodeError::new(format!(
            "table {} has no primary key and its {} carries no old row: with REPLICA IDENTITY FULL \
             (ALTER TABLE {} REPLICA IDENTITY FULL) Debezium sends the whole old row and Ripple \
             changes the row that holds it; or give the table a primary key",
            schema.table,
            if op == Op::Delete { "delete" } else { "update" },
            schema.table
        ))
    })?;
    let row = match op {
        Op::Upsert => Some(with(
            after.ok_or_else(|| DecodeError::new("update without `after`"))?,
            Value::Unavailable,
        )),
        _ => None,
    };
    Ok(event(
        row,
        vec![Value::Unavailable],
        Some(with(before, Value::Unavailable)),
    ))
}

/// The table a change envelope's `source` block names.
fn source_table(source: &Source<'_>) -> Result<TableRef, DecodeError> {
    let table = TableRef::new(
        source.schema.as_deref().unwrap_or_default(),
        source.table.as_deref().unwrap_or_default(),
    );
    if table.name.is_empty() {
        return Err(DecodeError::new("`source.table` is missing or empty"));
    }
    Ok(table)
}

/// A row change needs a whole key: sinks apply changes per key, in order.
fn check_key(schema: &TableSchema, key: &[Value]) -> Result<(), DecodeError> {
    if schema.key.is_empty() || key.is_empty() {
        return Err(DecodeError::new(format!(
            "table {} has no primary key in the stream (null record key): Ripple needs a key to apply changes in order",
            schema.table
        )));
    }
    if key
        .iter()
        .any(|v| matches!(v, Value::Null | Value::Unavailable))
    {
        return Err(DecodeError::new(
            "record key has a null or unavailable column",
        ));
    }
    Ok(())
}

/// Debezium's `source.sequence` is `["<last commit LSN>","<this change's LSN>"]`: ordering by that
/// pair follows commit order, which the raw LSN alone does not when transactions interleave.
fn version_of(source: &Source<'_>) -> Result<Version, DecodeError> {
    let lsn = source.lsn.unwrap_or_default().max(0) as u64;
    let Some(seq) = source.sequence.as_deref() else {
        return Ok(Version {
            commit: 0,
            change: lsn,
        });
    };
    let parts: Vec<Option<String>> = serde_json::from_str(seq).map_err(|e| {
        DecodeError::new(format!(
            "`source.sequence` {seq:?} is not a JSON array of strings: {e}"
        ))
    })?;
    let num = |i: usize| -> Result<Option<u64>, DecodeError> {
        match parts.get(i).cloned().flatten() {
            Some(s) => s.parse::<u64>().map(Some).map_err(|_| {
                DecodeError::new(format!("`source.sequence` entry {s:?} is not a number"))
            }),
            None => Ok(None),
        }
    };
    Ok(Version {
        commit: num(0)?.unwrap_or(0),
        change: num(1)?.unwrap_or(lsn),
    })
}

fn decode_key(envelope: &Envelope, key: &RawValue) -> Result<Vec<Value>, DecodeError> {
    let mut d = serde_json::Deserializer::from_str(key.get());
    RowSeed {
        decoders: &envelope.key_decoders,
        positions: &envelope.key_positions,
        skip_meta: false,
    }
    .deserialize(&mut d)
    .map_err(|e| DecodeError::new(format!("key does not match its schema: {e}")))?
    .ok_or_else(|| DecodeError::new("record key payload is null"))
}

struct Payload<'a> {
    op: Option<Cow<'a, str>>,
    before: Option<Vec<Value>>,
    after: Option<Vec<Value>>,
    source: Option<Source<'a>>,
}

struct PayloadSeed<'e> {
    envelope: &'e Envelope,
}

impl<'de> DeserializeSeed<'de> for PayloadSeed<'_> {
    type Value = Payload<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PayloadSeed<'_> {
    type Value = Payload<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Debezium envelope object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut p = Payload {
            op: None,
            before: None,
            after: None,
            source: None,
        };
        let row = RowSeed {
            decoders: &self.envelope.decoders,
            positions: &self.envelope.positions,
            skip_meta: false,
        };
        while let Some(k) = map.next_key::<Cow<'de, str>>()? {
            match k.as_ref() {
                "op" => p.op = map.next_value()?,
                "after" => p.after = map.next_value_seed(row.clone())?,
                "before" => p.before = map.next_value_seed(row.clone())?,
                "source" => p.source = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(p)
    }
}

/// Decodes a row object into values in column order; `None` for a JSON null.
#[derive(Clone)]
struct RowSeed<'e> {
    decoders: &'e [FieldDecoder],
    positions: &'e AHashMap<String, usize>,
    /// Skip the `__` fields a flattening transform adds.
    skip_meta: bool,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Option<Vec<Value>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Option<Vec<Value>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row object or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut row = vec![Value::Null; self.decoders.len()];
        let mut seen = 0usize;
        while let Some(k) = map.next_key::<Cow<'de, str>>()? {
            match self.positions.get(k.as_ref()) {
                Some(&i) => {
                    row[i] = map.next_value_seed(FieldSeed(&self.decoders[i]))?;
                    seen += 1;
                }
                None if self.skip_meta && k.starts_with("__") => {
                    map.next_value::<IgnoredAny>()?;
                }
                None => {
                    return Err(serde::de::Error::custom(format!(
                        "field {k:?} is not in the schema"
                    )));
                }
            }
        }
        if seen != self.decoders.len() {
            return Err(serde::de::Error::custom(format!(
                "row has {seen} of the schema's {} fields",
                self.decoders.len()
            )));
        }
        Ok(Some(row))
    }
}

#[cfg(test)]
mod tests;
