//! The sink API: the types every sink receives (`ChangeEvent`, `Value`, `TableSchema`), the `Sink`
//! trait it implements, and the errors it answers with. This crate depends on nothing else of Ripple's,
//! so a store can be added in a crate of its own, in Ripple's tree or a user's.

mod catalog;
mod error;
mod event;
pub mod in_flight;
mod render;
mod replica;
mod secret;
pub mod segment;
pub mod template;
#[cfg(feature = "testkit")]
pub mod testkit;
mod value;

pub use catalog::{CatalogColumn, ColumnCatalog};
pub use error::{ConfigError, FailureKind, Rejection, SinkError};
pub use event::{
    ChangeEvent, Column, ColumnType, Op, Origin, ROW_COLUMN, TableRef, TableSchema, Target,
    Version, keyless_refused,
};
pub use render::{absent_field, to_json, to_text, write_json, write_json_str};
pub use replica::{PostgresAddress, PostgresReplica};
pub use secret::{Secret, TlsFiles, TlsMaterial, read_secret};
pub use template::{Template, TemplateError};
pub use value::Value;

use async_trait::async_trait;
use std::sync::Arc;

/// A store that Ripple keeps in step with the source.
///
/// The contract:
/// - **Order.** `apply` receives the events of one table in the order they were committed in the
///   source, and the engine never calls `apply` for a table again before the previous call returned.
///   Calls for different tables may run concurrently.
///   Within a call a sink may reduce the batch (for example to the last event per key) as long as the
///   store ends in the state that applying every event in order would give.
/// - **At least once.** After a crash the engine re-delivers everything after the last committed Kafka
///   offset, so a sink sees events it has already applied. Applying an event twice must leave the
///   store as applying it once.
/// - **Durability.** `Ok(())` means the whole batch is durable in the store: the engine commits the
///   Kafka offsets right after, and never delivers those events again.
/// - **Failure.** An error says whether trying again may help ([`FailureKind::Retriable`]: a
///   connection drop, a timeout, a deadlock) or not ([`FailureKind::Permanent`]: a value the store
///   rejects). The engine owns retries, backoff and dead-lettering; a sink never retries by itself.
/// - **Rejections.** When the store answers event by event, a sink applies what it can and reports
///   every refused event at once ([`SinkError::rejected`]): the engine dead-letters those and counts
///   the rest as applied. When the store names one culprit, [`SinkError::at_event`]; when it names
///   none, a plain permanent error, and the engine narrows the batch down itself.
/// - **Backpressure.** The engine waits for `apply` to return before it gives the sink more work, so
///   a slow store slows consumption rather than filling memory.
///
/// What every sink of Ripple's also guarantees (each of the three does it its own way; the store's
/// crate says how):
/// - **Never back in time.** Each key keeps the [`Version`] of the last change applied to it, and a
///   change not newer than that is ignored: a replay from offset 0, a stale redelivery or a change
///   from another partition that arrives late changes nothing.
/// - **Deletes leave a tombstone.** A deleted key keeps its version, so a late, older insert of it
///   does not bring the row back.
/// - **Truncates leave a watermark.** A truncate removes what is older than it and records its
///   version; nothing older lands after it, and a truncate delivered again removes nothing newer.
/// - **Unavailable values are kept.** A [`Value::Unavailable`] column (an unchanged TOASTed value
///   Debezium left out) keeps what the store holds for it, or what an earlier change in the same
///   call gave it.
/// - **Rows without a key.** An event with [`ChangeEvent::before`] changes the one stored row holding
///   those old values; a store that finds rows only by key refuses it ([`keyless_refused`]).
/// - **`ready` may run while `apply` does** (health checks run concurrently with writes).
#[async_trait]
pub trait Sink: Send + Sync {
    /// The name given to this sink in the configuration (`[sinks.<name>]`).
    fn name(&self) -> &str;

    /// Checks that the store is reachable and usable. Called at start-up and by health checks.
    async fn ready(&self) -> Result<(), SinkError>;

    /// Applies `events`, all of which belong to `target.table`, in order. See the trait's contract.
    async fn apply(&self, target: Target<'_>, events: &[ChangeEvent]) -> Result<(), SinkError>;

    /// Checks a route's `target` template before any event flows, so a bad one stops start-up with
    /// the route's key named. A sink that names things from a template overrides this; the default
    /// refuses every template.
    fn check_target(&self, template: &str) -> Result<(), TemplateError> {
        Err(TemplateError::NotTaken {
            sink: self.name().to_string(),
            template: template.to_string(),
        })
    }

    /// For `ripple verify --repair`: the newest version the store holds against each event's row
    /// (the row's own, its tombstone's, the table's truncation watermark), `None` where nothing
    /// does. A repair writes the source's current row at [`Version::just_after`] it, through
    /// `apply`, so the stored copy is replaced while every later change still wins. `Ok(None)`:
    /// the store cannot tell, and verify does not repair it.
    async fn held_versions(
        &self,
        _target: Target<'_>,
        _events: &[ChangeEvent],
    ) -> Result<Option<Vec<Option<Version>>>, SinkError> {
        Ok(None)
    }

    /// For `ripple verify --repair`: writes `events`, each at [`Version::just_after`] what
    /// `held_versions` gave for it (`held`, in the same order). The default is `apply`. A store
    /// that may remember a version it cannot tell overrides it: the index keeps a deleted
    /// document's version for a while without showing it, so a document it holds nothing for is
    /// created only if absent, under the version the index gives it.
    async fn repair(
        &self,
        target: Target<'_>,
        events: &[ChangeEvent],
        _held: &[Option<Version>],
    ) -> Result<(), SinkError> {
        self.apply(target, events).await
    }

    /// Reading rows back, for `ripple verify`; `None` when this sink cannot.
    fn read_back(&self) -> Option<&dyn ReadBack> {
        None
    }

    /// For a sink whose store is a PostgreSQL database of the source's tables: how `ripple
    /// verify` reaches it to merge-join it with the source (it wins over `read_back`).
    fn postgres_replica(&self) -> Option<&dyn PostgresReplica> {
        None
    }

    /// Offsets the store keeps with the data, written in the same transaction as the changes
    /// (exactly-once delivery): for each topic partition it holds changes of, the offset of the
    /// next record to apply. `None` (the default) for a store that does not keep them; Kafka's
    /// committed offsets are then the only ones. A partition owned only by sinks that keep offsets
    /// starts from the smallest of theirs when it is assigned.
    async fn stored_offsets(&self) -> Result<Option<Vec<StoredOffset>>, SinkError> {
        Ok(None)
    }
}

/// One partition's offset as a store keeps it: the next record to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOffset {
    pub topic: String,
    pub partition: i32,
    pub next: i64,
}

/// A row exactly as the store holds it, read without interpreting it: `ripple verify` decodes it
/// on its own, apart from the code that wrote it, so a rendering bug shared by the write and the
/// check cannot hide itself.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredRow {
    /// Field name to text (a Redis hash).
    Fields(std::collections::HashMap<String, String>),
    /// A JSON document, as text (Redis's `json` format).
    JsonText(String),
    /// A JSON document, parsed by the store's client (an index's `_source`).
    Document(serde_json::Value),
    /// The text of one column (Redis's `string` format).
    Text { column: String, text: String },
    /// Something is stored under the id, but not in the form the sink writes (a key of another
    /// type); the text says what.
    Unreadable(String),
}

/// How a sorted read orders one key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    /// By value as an integer.
    Integer,
    /// By the bytes of its text (a uuid's text sorts as its value does).
    Bytes,
}

/// A key column a sorted read orders by: its name in the store, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub field: String,
    pub by: SortBy,
}

/// One page of a sorted read.
#[derive(Debug, Clone, Default)]
pub struct SortedPage {
    /// Rows in ascending key order: each with its id, what is stored, and the values it was
    /// sorted by (JSON, one per key column; `null` for a row that lacks one, sorted last).
    pub rows: Vec<(String, StoredRow, Vec<serde_json::Value>)>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<serde_json::Value>,
}

/// Lets `ripple verify` prove a sink holds what the source holds. Verify reads every source row,
/// works out where the sink keeps it (`row_id`), reads what is stored there (`fetch`) and decodes
/// it by its own rules; then it lists what the sink holds (`stored_ids`), to find rows the source
/// no longer has.
#[async_trait]
pub trait ReadBack: Send + Sync {
    /// Where the table's rows live, for the report: a key template, an index name.
    fn target_name(&self, target: Target<'_>) -> String;

    /// Whether the store holds anything at all for this table (a table, an index, a key set).
    async fn has_table(&self, target: Target<'_>) -> Result<bool, SinkError>;

    /// What is stored under each id, in order; `None` where nothing is.
    async fn fetch(
        &self,
        target: Target<'_>,
        ids: &[String],
    ) -> Result<Vec<Option<StoredRow>>, SinkError>;

    /// Every stored row of the table in ascending order of `key`, a page at a time (start with
    /// `after = None`, then pass the page's `next`), when the store can sort by those columns as
    /// PostgreSQL orders them; `Ok(None)` when it cannot (a column it does not hold sortably).
    /// Verify then merge-joins it with the source in one pass, instead of reading rows by id.
    async fn sorted_rows(
        &self,
        _target: Target<'_>,
        _key: &[SortKey],
        _after: Option<serde_json::Value>,
    ) -> Result<Option<SortedPage>, SinkError> {
        Ok(None)
    }

    /// How many rows the store holds for this table when it can count them exactly and cheaply
    /// (every counted row is one `stored_ids` would list); `None` otherwise.
    async fn count(&self, _target: Target<'_>) -> Result<Option<u64>, SinkError> {
        Ok(None)
    }

    /// Whether NaN, ±Infinity and infinite timestamps are stored as null (no field of the store
    /// takes them).
    fn stores_non_finite_as_null(&self) -> bool {
        false
    }

    /// The id under which the row of `event` is stored (a key, a document id).
    fn row_id(&self, target: Target<'_>, event: &ChangeEvent) -> Result<String, SinkError>;

    /// One page of the ids the store holds for this table, and the cursor of the next page
    /// (`None` after the last one). Start with `cursor = None`.
    async fn stored_ids(
        &self,
        target: Target<'_>,
        cursor: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), SinkError>;

    /// When the store keeps one column's value per row (Redis's `string` format), that column's
    /// name: a row whose value is NULL then has nothing stored.
    fn stored_column(&self) -> Option<String> {
        None
    }
}

/// Builds sinks of one kind from their configuration section. Registering a factory on the engine is
/// the one line that makes a new sink kind usable from `ripple.toml` (`type = "<kind>"`).
#[async_trait]
pub trait SinkFactory: Send + Sync {
    /// The value of `type` that selects this factory, e.g. `"postgres"`.
    fn kind(&self) -> &'static str;

    /// Builds the sink named `name` from its section, without the `type` key. `key_prefix` is the
    /// section's path (e.g. `sinks.replica`) so errors can name the exact key to fix.
    async fn build(
        &self,
        name: &str,
        key_prefix: &str,
        section: toml::Table,
    ) -> Result<Arc<dyn Sink>, ConfigError>;

    /// The column catalog of the store a section of this kind names, for records without schemas
    /// (`[decode.schemaless] types_from = "<sink>"`); `None` (the default) when the store has none.
    async fn column_catalog(
        &self,
        _name: &str,
        _key_prefix: &str,
        _section: toml::Table,
    ) -> Result<Option<Box<dyn ColumnCatalog>>, ConfigError> {
        Ok(None)
    }
}

/// Deserializes a sink's section into its typed config, naming the offending key on error.
pub fn parse_section<T: serde::de::DeserializeOwned>(
    key_prefix: &str,
    section: toml::Table,
) -> Result<T, ConfigError> {
    T::deserialize(toml::Value::Table(section))
        .map_err(|e| ConfigError::new(key_prefix, e.to_string()))
}
