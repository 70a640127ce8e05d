//! Decoding: a Kafka record from a Debezium topic becomes a [`ChangeEvent`], or a reason to skip it
//! (tombstones, transaction markers, heartbeats), or a [`DecodeError`] saying why it is malformed.
//! Schemas are parsed once per distinct schema text and cached; rows are decoded in one pass.

pub mod avro;
mod resolve;
pub use resolve::{Resolver, ResolvingDecoder};
mod change;
mod envelope;
mod schema;
pub mod schemaless;
pub(crate) mod value;

pub use schema::{BinaryMode, ConnectSchema, FieldDecoder};
use schemaless::ColumnTypes;
pub use value::{UNAVAILABLE, decode_decimal, parse_zoned_timestamp};

use ahash::AHashMap;
use change::{FlatMeta, decode_change, decode_flat, flat_table, source_table};
use envelope::{Envelope, Kind, analyse, analyse_schema, envelope_for};
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
    /// The same for keys: per topic, its last key schema's bytes and hash.
    last_key_schema: AHashMap<Arc<str>, (Vec<u8>, u64)>,
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

    fn decode_record<'a>(&mut self, record: &Record<'a>) -> Result<Decoded, DecodeError> {
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
        // The key's schema repeats too: when it is the topic's last one, only the payload is read
        // (and the key's schema is parsed again only if a new kind must be worked out).
        let fast_key = record.key.and_then(|k| {
            let (schema, hash) = self.last_key_schema.get(record.topic)?;
            let payload: &RawValue = serde_json::from_slice(split_known_schema(k, schema)?).ok()?;
            Some(((payload.get() != "null").then_some(payload), *hash))
        });
        let (key, key_payload, key_hash) = match fast_key {
            Some((payload, hash)) => (None, payload, hash),
            None => {
                let key: Option<Framed> = match record.key {
                    Some(k) => Some(
                        serde_json::from_slice(k)
                            .map_err(|e| DecodeError::new(format!("key is not JSON: {e}")))?,
                    ),
                    None => None,
                };
                let schema = key.as_ref().and_then(|k| k.schema);
                let hash = schema.map_or(0, |s| self.hash(s.get()));
                if let Some(s) = schema {
                    self.last_key_schema
                        .insert(record.topic.clone(), (s.get().as_bytes().to_vec(), hash));
                }
                let payload = key.as_ref().and_then(|k| k.payload);
                (key, payload, hash)
            }
        };
        // The key's schema, for working out a new kind: parsed again after the fast path.
        let key_schema = |key: &Option<Framed<'a>>| -> Result<Option<&'a RawValue>, DecodeError> {
            match (key, record.key) {
                (Some(k), _) => Ok(k.schema),
                (None, None) => Ok(None),
                (None, Some(bytes)) => serde_json::from_slice::<Framed>(bytes)
                    .map(|f| f.schema)
                    .map_err(|e| DecodeError::new(format!("key is not JSON: {e}"))),
            }
        };

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
                    let kind = analyse(schema, key_schema(&key)?, self.binary)?;
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
            let kind = analyse(schema, key_schema(&key)?, self.binary)?;
            self.cache.insert((value_hash, key_hash), kind);
        }
        match self.cache.get_mut(&(value_hash, key_hash)) {
            Some(Kind::Envelope(e)) => decode_change(e, record, payload, key_payload),
            Some(Kind::Flat(e)) => decode_flat(e, record, payload, key_payload),
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

#[cfg(test)]
mod tests;
