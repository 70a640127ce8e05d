//! The replica PostgreSQL sink: creates each table from the change stream's schema if missing and
//! applies every batch as set-based statements (UNNEST of text arrays, one statement per table per
//! batch), so the replica ends in the source's state however often a batch is re-delivered.

mod config;
mod encode;
mod plan;
mod sql;

pub use config::PostgresSinkConfig;
pub use sql::ident;

use async_trait::async_trait;
use plan::{Plan, PlanCache};
use ripple_sink::{ChangeEvent, ConfigError, Op, Sink, SinkError, SinkFactory, TableRef};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};
use std::sync::Arc;

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
}

pub struct PostgresSink {
    name: String,
    pool: PgPool,
    options: PgConnectOptions,
    config: PostgresSinkConfig,
    plans: PlanCache,
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
        Ok(Self {
            name: name.to_string(),
            pool,
            options,
            config,
            plans: PlanCache::default(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn apply_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[ChangeEvent],
    ) -> Result<(), SinkError> {
        // A truncate splits the batch: what came before it is wiped, what comes after it stays.
        let mut start = 0;
        for (i, e) in events.iter().enumerate() {
            if e.op == Op::Truncate {
                let tail = &events[start..i];
                if !tail.is_empty() {
                    self.apply_segment(tx, tail).await?;
                }
                self.truncate(tx, e).await?;
                start = i + 1;
            }
        }
        if start < events.len() {
            self.apply_segment(tx, &events[start..]).await?;
        }
        Ok(())
    }

    async fn apply_segment(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[ChangeEvent],
    ) -> Result<(), SinkError> {
        for group in plan::reduce(events) {
            let plan = self.plan(tx, group.first_event()).await?;
            plan.execute(tx, &group).await?;
        }
        Ok(())
    }

    /// Truncate records carry no key schema, so they get no plan: the table is emptied if it exists.
    async fn truncate(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &ChangeEvent,
    ) -> Result<(), SinkError> {
        let table = event.table();
        let target = sql::qualified(
            self.config.schema.as_deref().unwrap_or(&table.namespace),
            &table.name,
        );
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&target)
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| sql::classify(e, "look up table"))?;
        if exists {
            sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE {target}")))
                .execute(&mut **tx)
                .await
                .map_err(|e| sql::classify(e, "truncate"))?;
        }
        Ok(())
    }

    async fn plan(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &ChangeEvent,
    ) -> Result<Arc<Plan>, SinkError> {
        if let Some(p) = self.plans.get(&event.schema) {
            return Ok(p);
        }
        let plan = Arc::new(Plan::prepare(tx, &event.schema, &self.config).await?);
        self.plans.insert(&event.schema, plan.clone());
        Ok(plan)
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
        let conn = PgConnection::connect_with(&self.options)
            .await
            .map_err(|e| sql::classify(e, "connect"))?;
        conn.close()
            .await
            .map_err(|e| sql::classify(e, "connect"))?;
        Ok(())
    }

    async fn apply(&self, _table: &TableRef, events: &[ChangeEvent]) -> Result<(), SinkError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| sql::classify(e, "begin"))?;
        let result = self.apply_in(&mut tx, events).await;
        match result {
            Ok(()) => tx.commit().await.map_err(|e| sql::classify(e, "commit")),
            Err(e) => {
                // A failed DDL may have left a plan for a table state that was rolled back.
                self.plans.clear();
                Err(e)
            }
        }
    }
}
