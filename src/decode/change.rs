//! The Debezium protocol: an envelope's `op`, `before`, `after` and `source` (or a flattened row's
//! `__` fields) become one change with its table, key and version. How each value is decoded is
//! `value.rs`'s.

use super::*;

/// What `ExtractNewRecordState` adds to a row: `delete.tombstone.handling.mode=rewrite` sets
/// `__deleted`, `add.fields=op,lsn,source.ts_ms,schema,table` the others.
#[derive(Deserialize)]
pub(super) struct FlatMeta<'a> {
    #[serde(rename = "__deleted", borrow, default)]
    pub(super) deleted: Option<Cow<'a, str>>,
    #[serde(rename = "__op", borrow, default)]
    pub(super) op: Option<Cow<'a, str>>,
    #[serde(rename = "__lsn", default)]
    pub(super) lsn: Option<i64>,
    #[serde(rename = "__source_ts_ms", default)]
    pub(super) source_ts_ms: Option<i64>,
    #[serde(rename = "__schema", borrow, default)]
    pub(super) schema: Option<Cow<'a, str>>,
    #[serde(rename = "__table", borrow, default)]
    pub(super) table: Option<Cow<'a, str>>,
}

/// A flattened row: an upsert, or with `__deleted: "true"` (or `__op: "d"`) a delete. Its order
/// is `__lsn`, which must be there: without it nothing says which of two changes is newer. The
/// table comes from `__schema` / `__table`, else from the topic (`<prefix>.<schema>.<table>`).
pub(super) fn decode_flat(
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
pub(super) fn flat_table(meta: &FlatMeta<'_>, topic: &str) -> Result<TableRef, DecodeError> {
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

pub(super) fn decode_change(
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
pub(super) fn keyless_change(
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
pub(super) fn source_table(source: &Source<'_>) -> Result<TableRef, DecodeError> {
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
pub(super) fn check_key(schema: &TableSchema, key: &[Value]) -> Result<(), DecodeError> {
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
pub(super) fn version_of(source: &Source<'_>) -> Result<Version, DecodeError> {
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

pub(super) fn decode_key(envelope: &Envelope, key: &RawValue) -> Result<Vec<Value>, DecodeError> {
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

pub(super) struct Payload<'a> {
    pub(super) op: Option<Cow<'a, str>>,
    pub(super) before: Option<Vec<Value>>,
    pub(super) after: Option<Vec<Value>>,
    pub(super) source: Option<Source<'a>>,
}

pub(super) struct PayloadSeed<'e> {
    pub(super) envelope: &'e Envelope,
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
pub(super) struct RowSeed<'e> {
    pub(super) decoders: &'e [FieldDecoder],
    pub(super) positions: &'e AHashMap<String, usize>,
    /// Skip the `__` fields a flattening transform adds.
    pub(super) skip_meta: bool,
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
