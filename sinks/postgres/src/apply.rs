//! The write path: one transaction per call (or several connections for a large batch of one
//! table), split at truncates and keyless changes, reduced to the newest change per key, and the
//! partition offsets stored with the rows when `exactly_once` is on.

use crate::plan::Plan;
use crate::target::TargetTable;
use crate::{MAX_PARTS, PARALLEL_FROM, PostgresSink, bookkeeping, errors, reduce};
use ripple_sink::segment::{self, Step};
use ripple_sink::{ChangeEvent, Op, Rejection, SinkError};
use sqlx::{Postgres, Transaction};
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl PostgresSink {
    /// `Sink::apply`, into the resolved target table.
    pub(crate) async fn write(
        &self,
        into: TargetTable,
        events: &[ChangeEvent],
    ) -> Result<(), SinkError> {
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
        let mut per_part: Vec<Vec<reduce::Group<'_>>> = (0..parts).map(|_| Vec::new()).collect();
        for group in reduce::reduce(events) {
            for (i, part) in group.split(parts).into_iter().enumerate() {
                per_part[i].push(part);
            }
        }
        let writes = per_part.into_iter().map(|groups| async move {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(|e| errors::classify(e, "begin"))?;
            for group in &groups {
                let plan = self
                    .plans
                    .get(group.schema, into)
                    .ok_or_else(|| SinkError::retriable("a table plan was dropped meanwhile"))?;
                plan.execute(&mut tx, group).await?;
            }
            tx.commit().await.map_err(|e| errors::classify(e, "commit"))
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
            .map_err(|e| errors::classify(e, "begin"))?;
        if let Err(e) = self.apply_in(&mut tx, into, events, each).await {
            // A failed DDL may have left a plan for a table state that was rolled back.
            self.plans.clear();
            return Err(e);
        }
        tx.commit()
            .await
            .map_err(|e| errors::classify(e, "commit"))?;
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
            bookkeeping::ensure_bookkeeping(tx).await?;
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
            Some(_) => reduce::singles(events),
            None => reduce::reduce(events),
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
        let Some(name) = bookkeeping::bookkeeping_name(tx, &target).await? else {
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
        .map_err(|e| errors::classify(e, "record truncate"))?;
        if advanced.is_none() {
            return Ok(());
        }
        sqlx::query("DELETE FROM _ripple.tombstones WHERE table_name = $1 AND (commit_lsn, change_lsn) < ($2, $3)")
            .bind(&name)
            .bind(commit)
            .bind(change)
            .execute(&mut **tx)
            .await
            .map_err(|e| errors::classify(e, "truncate"))?;
        let has_versions: bool = sqlx::query_scalar(
            "SELECT count(*) = 2 FROM pg_attribute WHERE attrelid = to_regclass($1) \
             AND attname IN ('_ripple_commit', '_ripple_change') AND NOT attisdropped",
        )
        .bind(&target)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| errors::classify(e, "look up table"))?;
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
            .map_err(|e| errors::classify(e, "truncate"))?;
        Ok(())
    }

    pub(crate) async fn plan(
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
    // A repair's events come from no Kafka record (a negative offset): they move no offset.
    for e in events.iter().filter(|e| e.origin.offset >= 0) {
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
    .map_err(|e| errors::classify(e, "store offsets"))?;
    Ok(())
}
