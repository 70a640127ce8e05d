//! The replica's (or the source's) column catalog: the PostgreSQL type of every column, for records
//! that come without schemas.

use async_trait::async_trait;
use ripple_sink::{CatalogColumn, ColumnCatalog, SinkError, TableRef};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::time::Duration;

const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A domain reads as its base type; Ripple's own schemas and the system's are left out.
const CATALOG_QUERY: &str = "\
SELECT n.nspname, c.relname, a.attname, \
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) \
            ELSE format_type(a.atttypid, a.atttypmod) END, \
       NOT a.attnotnull \
FROM pg_attribute a \
JOIN pg_class c ON c.oid = a.attrelid \
JOIN pg_namespace n ON n.oid = c.relnamespace \
JOIN pg_type t ON t.oid = a.atttypid \
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped \
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_ripple') \
  AND n.nspname NOT LIKE 'pg\\_toast%'";

/// A database's catalog, over one lazily opened connection.
pub struct PgCatalog {
    pool: PgPool,
    describe: String,
    schema: Option<String>,
}

impl PgCatalog {
    /// `schema`: the one schema every table is kept in, when not the source's (a sink's `schema`).
    pub fn new(options: PgConnectOptions, describe: String, schema: Option<String>) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(QUERY_TIMEOUT)
            .connect_lazy_with(options.application_name("ripple-types"));
        Self {
            pool,
            describe,
            schema,
        }
    }
}

#[async_trait]
impl ColumnCatalog for PgCatalog {
    fn describe(&self) -> &str {
        &self.describe
    }

    fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    async fn columns(&self) -> Result<Vec<CatalogColumn>, SinkError> {
        let rows: Vec<(String, String, String, String, bool)> = tokio::time::timeout(
            QUERY_TIMEOUT,
            sqlx::query_as(CATALOG_QUERY).fetch_all(&self.pool),
        )
        .await
        .map_err(|_| {
            SinkError::retriable(format!(
                "reading column types from {} timed out",
                self.describe
            ))
        })?
        .map_err(|e| {
            SinkError::retriable(format!(
                "cannot read column types from {}: {e}",
                self.describe
            ))
            .with_source(e)
        })?;
        Ok(rows
            .into_iter()
            .map(
                |(schema, table, column, type_name, nullable)| CatalogColumn {
                    table: TableRef::new(schema, table),
                    column,
                    type_name,
                    nullable,
                },
            )
            .collect())
    }
}
