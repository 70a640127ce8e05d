//! What a record's schemas say it is: a Debezium change envelope (and how to decode its rows), a
//! row flattened by `ExtractNewRecordState`, or something to skip; worked out once per distinct
//! (key schema, value schema) pair.

use super::*;

/// What the decoder derived from one (key schema, value schema) pair.
pub(super) struct Envelope {
    pub(super) table: Arc<TableSchema>,
    pub(super) decoders: Vec<FieldDecoder>,
    /// Field name -> column position; rows are JSON objects, so fields are matched by name.
    pub(super) positions: AHashMap<String, usize>,
    pub(super) key_decoders: Vec<FieldDecoder>,
    pub(super) key_positions: AHashMap<String, usize>,
    /// For a table without a key: `table` with the position column added as its key.
    pub(super) keyless: Option<Arc<TableSchema>>,
}

impl Envelope {
    /// The schema events of a keyless table carry: its columns, then [`ROW_COLUMN`] as the key.
    pub(super) fn keyless_schema(&mut self) -> Arc<TableSchema> {
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

pub(super) enum Kind {
    Envelope(Box<Envelope>),
    /// A row flattened by Debezium's `ExtractNewRecordState` transform: the row's fields, plus
    /// the transform's `__`-prefixed ones (`__deleted`, `__op`, `__lsn`, `__table`, ...).
    Flat(Box<Envelope>),
    Skip(Skip),
}

/// Works out what a record with these schemas is and, for change envelopes, how to decode it.
pub(super) fn analyse(
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
pub(super) fn analyse_schema(
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
pub(super) const ARRAY_MAX_DIMENSIONS: usize = 6;

/// How to decode rows with these fields (the flattening transform's `__` fields left out) and
/// keys with these.
pub(super) fn envelope_for<'a>(
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
pub(super) fn is_meta(field: &ConnectSchema) -> bool {
    field.field.as_deref().is_some_and(|n| n.starts_with("__"))
}
