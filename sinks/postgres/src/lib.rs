//! The replica PostgreSQL sink: creates each table from the change stream's schema if missing and
//! applies every batch as set-based statements (UNNEST of text arrays, one statement per table per
//! batch), so the replica ends in the source's state however often a batch is re-delivered.

mod apply;
mod bookkeeping;
mod catalog;
mod config;
mod encode;
mod errors;
mod plan;
mod read_back;
mod reduce;
mod sql;
mod statement;
mod target;

pub use catalog::PgCatalog;
pub use config::{ConnectKeys, PostgresSinkConfig, address, connect_options};
pub use sql::ident;

use async_trait::async_trait;
use plan::PlanCache;
use ripple_sink::{ChangeEvent, ConfigError, Sink, SinkError, SinkFactory, StoredOffset, Target};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
pub use target::TargetTable;

/// Batches of a table at least this large are written over several connections.
const PARALLEL_FROM: usize = 1_000;
/// At most this many connections write one table's batch.
const MAX_PARTS: usize = 4;

/// Registers `type = "postgres"`.
pub struct PostgresFactory;

#[async_trait]
impl SinkFactory for PostgresFactory {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn build(
        &self,
        name: &str,
        key_prefix: &str,
        section: toml::Table,
    ) -> Result<Arc<dyn Sink>, ConfigError> {
        let config: PostgresSinkConfig = ripple_sink::parse_section(key_prefix, section)?;
        Ok(Arc::new(PostgresSink::new(name, key_prefix, config)?))
    }

    async fn column_catalog(
        &self,
        name: &str,
        key_prefix: &str,
        section: toml::Table,
    ) -> Result<Option<Box<dyn ripple_sink::ColumnCatalog>>, ConfigError> {
        let config: PostgresSinkConfig = ripple_sink::parse_section(key_prefix, section)?;
        let options = config.connect_options(key_prefix)?;
        Ok(Some(Box::new(PgCatalog::new(
            options,
            format!("the database of sink {name:?}"),
            config.schema,
        ))))
    }
}

pub struct PostgresSink {
    name: String,
    pool: PgPool,
    options: PgConnectOptions,
    /// Set once the `_ripple` bookkeeping tables are known to exist (after a committed apply).
    bookkeeping_ready: AtomicBool,
    config: PostgresSinkConfig,
    plans: PlanCache,
    /// For verify: the section's connection keys, and its path.
    address: ripple_sink::PostgresAddress,
    key_prefix: String,
}

impl PostgresSink {
    pub fn new(
        name: &str,
        key_prefix: &str,
        config: PostgresSinkConfig,
    ) -> Result<Self, ConfigError> {
        let options = config.connect_options(key_prefix)?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_lazy_with(options.clone());
        let address = config.address();
        Ok(Self {
            name: name.to_string(),
            pool,
            options,
            address,
            key_prefix: key_prefix.to_string(),
            config,
            plans: PlanCache::default(),
            bookkeeping_ready: AtomicBool::new(false),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Sink for PostgresSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn ready(&self) -> Result<(), SinkError> {
        // A direct connection reports the real cause (refused, auth, unknown database), where the
        // pool would only say it timed out.
        let doing = format!("connect to {}", config::address(&self.options));
        let conn = PgConnection::connect_with(&self.options)
            .await
            .map_err(|e| errors::classify(e, &doing))?;
        conn.close()
            .await
            .map_err(|e| errors::classify(e, &doing))?;
        Ok(())
    }

    fn check_target(&self, template: &str) -> Result<(), ripple_sink::TemplateError> {
        TargetTable::check(template)
    }

    fn postgres_replica(&self) -> Option<&dyn ripple_sink::PostgresReplica> {
        Some(self)
    }

    async fn stored_offsets(&self) -> Result<Option<Vec<StoredOffset>>, SinkError> {
        if !self.config.exactly_once {
            return Ok(None);
        }
        // Several tables may share a partition (one topic for many tables): the partition is
        // only as far as its least advanced table.
        let rows: Vec<(String, i32, i64)> = sqlx::query_as(
            "SELECT topic, partition, min(next_offset)::int8 FROM _ripple.offsets \
             GROUP BY topic, partition",
        )
        .fetch_all(&self.pool)
        .await
        .or_else(|e| match &e {
            // A replica Ripple never wrote to has no bookkeeping yet.
            sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01") => Ok(Vec::new()),
            _ => Err(e),
        })
        .map_err(|e| errors::classify(e, "read stored offsets"))?;
        Ok(Some(
            rows.into_iter()
                .map(|(topic, partition, next)| StoredOffset {
                    topic,
                    partition,
                    next,
                })
                .collect(),
        ))
    }

    async fn apply(&self, target: Target<'_>, events: &[ChangeEvent]) -> Result<(), SinkError> {
        self.write(TargetTable::resolve(target, &self.config), events)
            .await
    }

    async fn held_versions(
        &self,
        target: Target<'_>,
        events: &[ChangeEvent],
    ) -> Result<Option<Vec<Option<ripple_sink::Version>>>, SinkError> {
        self.versions_of(TargetTable::resolve(target, &self.config), events)
            .await
            .map(Some)
    }
}
