//! The replica PostgreSQL sink: creates each table from the change stream's schema if missing and
//! applies every batch as set-based statements (UNNEST of text arrays, one statement per table per
//! batch), so the replica ends in the source's state however often a batch is re-delivered.

mod catalog;
mod config;
mod encode;
mod plan;
mod sql;

pub use catalog::PgCatalog;
pub use config::{ConnectKeys, PostgresSinkConfig, address, connect_options};
pub use sql::ident;

use async_trait::async_trait;
pub use plan::TargetTable;
use plan::{Plan, PlanCache};
use ripple_sink::segment::{self, Step};
use ripple_sink::{
    ChangeEvent, ConfigError, Op, Rejection, Sink, SinkError, SinkFactory, StoredOffset, Target,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

    /// How many connections may write `events` at once: one per part of the keys, when the batch
    /// is large, holds no truncate, needs no DDL (every plan is prepared) and its offsets need not
    /// share one transaction with its rows (`exactly_once`). One connection leaves the replica's
    /// other cores idle; rows of different keys never conflict, and a failed part is retried with
    /// the batch, where the version guards make the parts already written change nothing.
    fn parallel_parts(&self, into: &TargetTable, events: &[ChangeEvent]) -> Option<usize> {
        let parts = (self.config.max_connections as usize).min(MAX_PARTS);
        if parts < 2
            || events.len() < PARALLEL_FROM
            || self.config.exactly_once
            || !self.bookkeeping_ready.load(Ordering::Relaxed)
        {
            return None;
        }
        let mut last: Option<&Arc<ripple_sink::TableSchema>> = None;
        for e in events {
            if e.op == Op::Truncate || e.before.is_some() {
                return None;
            }
            if last.is_none_or(|s| !Arc::ptr_eq(s, &e.schema)) {
                self.plans.get(&e.schema, into)?;
                last = Some(&e.schema);
            }
        }
        Some(parts)
    }

    async fn apply_parallel(
        &self,
        into: &TargetTable,
        events: &[ChangeEvent],
        parts: usize,
    ) -> Result<(), SinkError> {
        let mut per_part: Vec<Vec<plan::Group<'_>>> = (0..parts).map(|_| Vec::new()).collect();
        for group in plan::reduce(events) {
            for (i, part) in group.split(parts).into_iter().enumerate() {
                per_part[i].push(part);
            }
        }
        let writes = per_part.into_iter().map(|groups| async move {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(|e| sql::classify(e, "begin"))?;
            for group in &groups {
                let plan = self
                    .plans
                    .get(group.schema, into)
                    .ok_or_else(|| SinkError::retriable("a table plan was dropped meanwhile"))?;
                plan.execute(&mut tx, group).await?;
            }
            tx.commit().await.map_err(|e| sql::classify(e, "commit"))
        });
        futures::future::try_join_all(writes).await?;
        Ok(())
    }

    /// One transaction over `events`; with `each`, see `apply_in`.
    async fn apply_batch(
        &self,
        into: &TargetTable,
        events: &[ChangeEvent],
        each: Option<&mut Vec<Rejection>>,
    ) -> Result<(), SinkError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| sql::classify(e, "begin"))?;
        if let Err(e) = self.apply_in(&mut tx, into, events, each).await {
            // A failed DDL may have left a plan for a table state that was rolled back.
            self.plans.clear();
            return Err(e);
        }
        tx.commit().await.map_err(|e| sql::classify(e, "commit"))?;
        self.bookkeeping_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// With `each`, every change is written in a subtransaction of its own and the refused ones
    /// are collected there instead of failing the transaction.
    async fn apply_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        into: &TargetTable,
        events: &[ChangeEvent],
        mut each: Option<&mut Vec<Rejection>>,
    ) -> Result<(), SinkError> {
        if !self.bookkeeping_ready.load(Ordering::Relaxed) {
            plan::ensure_bookkeeping(tx).await?;
        }
        // A truncate splits the batch: what came before it is wiped, what comes after it stays.
        // So does an update or delete of a table without a key: it finds its row by the old
        // values, which an earlier change of the batch may have written.
        for step in segment::split_at(events, |e| e.op == Op::Truncate || e.before.is_some()) {
            match step {
                Step::Run { events, offset } => {
                    self.apply_segment(tx, into, events, offset, each.as_deref_mut())
                        .await?;
                }
                Step::Split { event, .. } if event.op == Op::Truncate => {
                    self.truncate(tx, into, event).await?;
                }
                Step::Split { event, .. } => {
                    self.plan(tx, into, event)
                        .await?
                        .execute_matching(tx, event)
                        .await?;
                }
            }
        }
        if self.config.exactly_once {
            store_offsets(tx, into, events).await?;
        }
        Ok(())
    }

    async fn apply_segment(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        into: &TargetTable,
        events: &[ChangeEvent],
        offset: usize,
        mut each: Option<&mut Vec<Rejection>>,
    ) -> Result<(), SinkError> {
        // Row by row, nothing is reduced: a refused change must not take the earlier changes of
        // its key with it.
        let groups = match each {
            Some(_) => plan::singles(events),
            None => plan::reduce(events),
        };
        for group in groups {
            let plan = self.plan(tx, into, group.first_event()).await?;
            match each.as_deref_mut() {
                Some(rejected) => plan.execute_each(tx, &group, offset, rejected).await?,
                None => plan.execute(tx, &group).await?,
            }
        }
        Ok(())
    }

    /// Writes `events` again change by change after the replica refused the batch without saying
    /// which row was to blame (a CHECK, a NOT NULL, a value too long): one transaction, one
    /// round trip per group, every refused change named.
    async fn apply_each(
        &self,
        into: &TargetTable,
        events: &[ChangeEvent],
    ) -> Result<(), SinkError> {
        let mut rejected = Vec::new();
        self.apply_batch(into, events, Some(&mut rejected)).await?;
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(SinkError::rejected(rejected))
        }
    }

    /// Truncate records carry no key schema, so they get no plan: the table is emptied if it exists.
    /// Truncate records carry no key schema, so they get no plan. The truncate moves the table's
    /// watermark; only if it really is newer are the rows (and tombstones) older than it removed.
    /// Rows are deleted by version rather than TRUNCATEd, so a truncate delivered again after
    /// newer rows landed removes none of them.
    async fn truncate(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        into: &TargetTable,
        event: &ChangeEvent,
    ) -> Result<(), SinkError> {
        let target = into.sql();
        let (commit, change) = (event.version.commit as i64, event.version.change as i64);
        // A table that does not exist yet has nothing to remove.
        let Some(name) = plan::bookkeeping_name(tx, &target).await? else {
            return Ok(());
        };
        let advanced: Option<i32> = sqlx::query_scalar(
            "INSERT INTO _ripple.truncations AS w (table_name, commit_lsn, change_lsn) VALUES ($1, $2, $3) \
             ON CONFLICT (table_name) DO UPDATE SET commit_lsn = EXCLUDED.commit_lsn, change_lsn = EXCLUDED.change_lsn \
             WHERE (w.commit_lsn, w.change_lsn) < (EXCLUDED.commit_lsn, EXCLUDED.change_lsn) RETURNING 1",
        )
        .bind(&name)
        .bind(commit)
        .bind(change)
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| sql::classify(e, "record truncate"))?;
        if advanced.is_none() {
            return Ok(());
        }
        sqlx::query("DELETE FROM _ripple.tombstones WHERE table_name = $1 AND (commit_lsn, change_lsn) < ($2, $3)")
            .bind(&name)
            .bind(commit)
            .bind(change)
            .execute(&mut **tx)
            .await
            .map_err(|e| sql::classify(e, "truncate"))?;
        let has_versions: bool = sqlx::query_scalar(
            "SELECT count(*) = 2 FROM pg_attribute WHERE attrelid = to_regclass($1) \
             AND attname IN ('_ripple_commit', '_ripple_change') AND NOT attisdropped",
        )
        .bind(&target)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| sql::classify(e, "look up table"))?;
        let statement = if has_versions {
            format!(
                "DELETE FROM {target} WHERE (COALESCE(_ripple_commit, -1), COALESCE(_ripple_change, -1)) < ($1, $2)"
            )
        } else {
            format!("DELETE FROM {target} WHERE $1::int8 IS NOT NULL AND $2::int8 IS NOT NULL")
        };
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(commit)
            .bind(change)
            .execute(&mut **tx)
            .await
            .map_err(|e| sql::classify(e, "truncate"))?;
        Ok(())
    }

    async fn plan(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        into: &TargetTable,
        event: &ChangeEvent,
    ) -> Result<Arc<Plan>, SinkError> {
        if let Some(p) = self.plans.get(&event.schema, into) {
            return Ok(p);
        }
        let plan = Arc::new(Plan::prepare(tx, &event.schema, into, &self.config).await?);
        self.plans.insert(&event.schema, into, plan.clone());
        Ok(plan)
    }
}

/// Records, in the transaction that applies `events`, the offset after the last of them per
/// partition. Offsets only move forward: a stale re-delivery leaves them as they are.
async fn store_offsets(
    tx: &mut Transaction<'_, Postgres>,
    into: &TargetTable,
    events: &[ChangeEvent],
) -> Result<(), SinkError> {
    let mut next: Vec<(&str, i32, i64)> = Vec::new();
    for e in events {
        let (topic, partition) = (&*e.origin.topic, e.origin.partition);
        match next
            .iter_mut()
            .find(|(t, p, _)| *t == topic && *p == partition)
        {
            Some(slot) => slot.2 = slot.2.max(e.origin.offset + 1),
            None => next.push((topic, partition, e.origin.offset + 1)),
        }
    }
    let (topics, partitions, offsets): (Vec<&str>, Vec<i32>, Vec<i64>) =
        next.into_iter()
            .fold(Default::default(), |mut acc, (t, p, o)| {
                acc.0.push(t);
                acc.1.push(p);
                acc.2.push(o);
                acc
            });
    sqlx::query(
        "INSERT INTO _ripple.offsets AS o (topic, partition, table_name, next_offset) \
         SELECT t, p, $4, n FROM UNNEST($1::text[], $2::int[], $3::int8[]) AS u(t, p, n) \
         ON CONFLICT (topic, partition, table_name) DO UPDATE SET next_offset = EXCLUDED.next_offset \
         WHERE o.next_offset < EXCLUDED.next_offset",
    )
    .bind(topics)
    .bind(partitions)
    .bind(offsets)
    .bind(into.sql())
    .execute(&mut **tx)
    .await
    .map_err(|e| sql::classify(e, "store offsets"))?;
    Ok(())
}

impl ripple_sink::PostgresReplica for PostgresSink {
    fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    fn address(&self) -> &ripple_sink::PostgresAddress {
        &self.address
    }

    fn table_for(&self, target: Target<'_>) -> ripple_sink::TableRef {
        let into = TargetTable::resolve(target, &self.config);
        ripple_sink::TableRef::new(into.namespace, into.name)
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
            .map_err(|e| sql::classify(e, &doing))?;
        conn.close().await.map_err(|e| sql::classify(e, &doing))?;
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
        .map_err(|e| sql::classify(e, "read stored offsets"))?;
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
        let into = TargetTable::resolve(target, &self.config);
        let result = match self.parallel_parts(&into, events) {
            Some(parts) => self.apply_parallel(&into, events, parts).await,
            None => self.apply_batch(&into, events, None).await,
        };
        match result {
            // The replica refused something and did not say which row: find out in one pass.
            Err(e) if !e.is_retriable() && e.event_index.is_none() && events.len() > 1 => {
                tracing::debug!(sink = self.name, error = %e, "batch refused; writing it change by change");
                self.apply_each(&into, events).await
            }
            result => result,
        }
    }
}
