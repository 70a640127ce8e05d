//! Column types a store can tell: how records without schemas (`[decode.schemaless] types_from`)
//! get the PostgreSQL type of each column. The source offers one, and so may any sink whose store
//! keeps typed tables.

use crate::{SinkError, TableRef};
use async_trait::async_trait;

/// One column as a catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    /// As the store names it; see [`ColumnCatalog::schema`].
    pub table: TableRef,
    pub column: String,
    /// As PostgreSQL's `format_type` prints it (`numeric(10,2)`, `text[]`); a domain as its base.
    pub type_name: String,
    pub nullable: bool,
}

/// A store's column catalog, read whole each time it is asked (the engine reads it at start-up and
/// again, at most once a second, when a record names a column it does not know yet).
#[async_trait]
pub trait ColumnCatalog: Send + Sync {
    /// What it is, for messages: `the source database`, `the database of sink "replica"`.
    fn describe(&self) -> &str;

    /// When every table is kept in this one schema, whatever its schema in the source: a source
    /// table is then looked up by its name alone, under this schema.
    fn schema(&self) -> Option<&str> {
        None
    }

    /// Every column of every user table.
    async fn columns(&self) -> Result<Vec<CatalogColumn>, SinkError>;
}
