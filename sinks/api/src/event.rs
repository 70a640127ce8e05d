//! A decoded change event and the table schema it refers to.

use crate::Value;
use std::fmt;
use std::sync::Arc;

/// A table in the source, as `namespace.name` (for Postgres: schema and table).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    pub namespace: String,
    pub name: String,
}

impl TableRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

/// Where a batch of one source table's events goes in a sink: the table, and the naming its route
/// chose for it, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub table: &'a TableRef,
    /// The route's `target`: a template each sink reads in its own way (a table name for SQL, a key
    /// template for Redis, an index name for a search index). `None`: the sink's configured naming.
    pub template: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// The table under the sink's own naming.
    pub fn of(table: &'a TableRef) -> Self {
        Self {
            table,
            template: None,
        }
    }

    pub fn with_template(self, template: Option<&'a str>) -> Self {
        Self { template, ..self }
    }
}

/// The logical type of a column, as far as the change stream tells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// Exact decimal; `scale` is `None` for a numeric without a declared scale.
    Decimal {
        precision: Option<u32>,
        scale: Option<u32>,
    },
    Text,
    Bytes,
    Json,
    Uuid,
    Date,
    /// Time of day without zone.
    Time,
    TimeTz,
    /// Wall-clock timestamp without zone.
    Timestamp,
    TimestampTz,
    Interval,
    Array(Box<ColumnType>),
    /// Anything else, by the name the stream gave it; carried as text.
    Other(String),
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
    /// The column's type as the source database declares it (`VARCHAR(255)`, `NUMERIC`), when the
    /// stream carries it. Lets a SQL sink create the same column instead of a close relative.
    pub source_type: Option<String>,
    /// The column's default in the source, as text (what `to_text` writes), when the stream
    /// carries it: a column added with a default fills the rows already there without a single
    /// change event, so a store that adds the column must declare the same default.
    pub default: Option<String>,
}

impl Column {
    /// A nullable column without a declared source type or default.
    pub fn new(name: &str, ty: ColumnType) -> Self {
        Column {
            name: name.to_string(),
            ty,
            nullable: true,
            source_type: None,
            default: None,
        }
    }
}

/// A table's columns and primary key, shared by every event decoded with the same schema.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableSchema {
    pub table: TableRef,
    pub columns: Vec<Column>,
    /// Positions in `columns` of the primary-key columns, in key order.
    pub key: Vec<usize>,
}

impl TableSchema {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn key_columns(&self) -> impl Iterator<Item = &Column> {
        self.key.iter().map(|&i| &self.columns[i])
    }
}

/// What a change does to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Insert, update or snapshot read: the row now holds `ChangeEvent::row`.
    Upsert,
    /// The row with this key no longer exists.
    Delete,
    /// Every row of the table is gone.
    Truncate,
}

/// The position of a change in the source's commit order. Changes compare by commit first, then by
/// their position inside the commit, so a later commit always wins even when its changes were
/// written to the log before an earlier commit's (interleaved transactions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// The log position of the commit that precedes this change in commit order.
    pub commit: u64,
    /// The log position of the change itself.
    pub change: u64,
}

impl Version {
    /// The version a repair writes over a row whose store holds `held` (its row's, tombstone's or
    /// table truncation's version): newer than it, so the stored copy is replaced, and older than
    /// every change that follows it. A later change to the same row has a later commit, or the
    /// same commit and a change position at least one log record further on; log records are
    /// many bytes long, so no change sits one byte after another.
    pub fn just_after(held: Option<Version>) -> Version {
        let held = held.unwrap_or_default();
        Version {
            commit: held.commit,
            change: held.change.saturating_add(1),
        }
    }
}

/// Where an event came from in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub topic: Arc<str>,
    pub partition: i32,
    /// Negative for an event no Kafka record carried (a repair's): it moves no stored offset.
    pub offset: i64,
}

/// One change to one row (or, for a truncate, to a whole table).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub schema: Arc<TableSchema>,
    pub op: Op,
    /// The row after the change, one value per `schema.columns`; `None` for deletes and truncates.
    pub row: Option<Vec<Value>>,
    /// The primary key, one value per `schema.key`; empty for truncates.
    pub key: Vec<Value>,
    /// For a table without a primary key (see [`ROW_COLUMN`]), an update or delete names its row by
    /// the whole row before the change (REPLICA IDENTITY FULL), one value per `schema.columns`
    /// (the position column `Unavailable`): the store changes one row that holds exactly these
    /// values. `key` is then unknown (`Unavailable`). `None` for every other change.
    pub before: Option<Vec<Value>>,
    pub version: Version,
    /// When the source committed the change, in milliseconds since the Unix epoch.
    pub source_ts_ms: i64,
    pub origin: Origin,
}

impl ChangeEvent {
    pub fn table(&self) -> &TableRef {
        &self.schema.table
    }
}

/// The column Ripple adds to a table that has no primary key in the stream, and makes its key: the
/// source position of the insert that created the row (`<commit>:<change>`, or for a snapshot row
/// `<lsn>:<partition>:<offset>`). Each insert is then applied once whatever is replayed, and
/// `verify` leaves the column out (as every `_ripple*` column).
pub const ROW_COLUMN: &str = "_ripple_row";

/// Why a store that finds rows only by their key refuses an update or delete of a table without
/// one ([`ChangeEvent::before`]): the row it changes is known only by its old values.
pub fn keyless_refused(store: &str) -> String {
    format!(
        "{store} finds rows only by key and the table has no primary key: its updates and deletes \
         can be applied by the postgres sink only (route the table's updates there, or give it a primary key)"
    )
}
