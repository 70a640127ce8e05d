//! How `ripple verify` reaches the replica: its address and where each source table lands (it
//! merge-joins the two databases in key order itself), and the versions a repair writes above.

use crate::PostgresSink;
use crate::bookkeeping::{
    CHANGE_COLUMN, COMMIT_COLUMN, TOMBSTONES, TRUNCATIONS, ensure_bookkeeping,
};
use crate::encode::to_column_text;
use crate::errors::classify;
use crate::sql::ident;
use crate::target::TargetTable;
use ripple_sink::{ChangeEvent, SinkError, Target, Version};
use sqlx::{AssertSqlSafe, Row};

impl PostgresSink {
    /// The version of each event's row in the replica, of its tombstone, or of the table's last
    /// truncate, whichever is newest. Keys are bound as the write path binds them, so a tombstone
    /// is found under the same key text.
    pub(crate) async fn versions_of(
        &self,
        into: TargetTable,
        events: &[ChangeEvent],
    ) -> Result<Vec<Option<Version>>, SinkError> {
        let Some(first) = events.first() else {
            return Ok(Vec::new());
        };
        let mut tx = self.pool.begin().await.map_err(|e| classify(e, "begin"))?;
        ensure_bookkeeping(&mut tx).await?;
        let plan = self.plan(&mut tx, &into, first).await?;
        let keys: Vec<Vec<Option<String>>> = plan
            .key
            .iter()
            .map(|&c| {
                events
                    .iter()
                    .map(|e| {
                        let i = e.schema.key.iter().position(|&k| k == c)?;
                        to_column_text(&e.key[i], &plan.types[c], &plan.casts[c])
                    })
                    .collect()
            })
            .collect();
        let aliases: Vec<String> = (0..plan.key.len()).map(|i| format!("k{i}")).collect();
        let arrays: Vec<String> = (0..plan.key.len())
            .map(|i| format!("${}::text[]", i + 2))
            .collect();
        let joins: Vec<String> = plan
            .key
            .iter()
            .enumerate()
            .map(|(i, &c)| format!("t.{} = u.k{i}::{}", ident(&plan.names[c]), plan.casts[c]))
            .collect();
        let sql = format!(
            "SELECT u.i::int8, t.{COMMIT_COLUMN}, t.{CHANGE_COLUMN}, ts.commit_lsn, ts.change_lsn \
             FROM unnest({}) WITH ORDINALITY AS u({}, i) \
             LEFT JOIN {} t ON {} \
             LEFT JOIN {TOMBSTONES} ts ON ts.table_name = $1 AND ts.key = ARRAY[{}]::text \
             ORDER BY u.i",
            arrays.join(", "),
            aliases.join(", "),
            plan.target,
            joins.join(" AND "),
            aliases
                .iter()
                .map(|a| format!("u.{a}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(&plan.table_name);
        for k in &keys {
            query = query.bind(k);
        }
        let rows = query
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| classify(e, "read row versions"))?;
        let truncated: Option<(i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT commit_lsn, change_lsn FROM {TRUNCATIONS} WHERE table_name = $1"
        )))
        .bind(&plan.table_name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| classify(e, "read the truncation watermark"))?;
        tx.commit().await.map_err(|e| classify(e, "commit"))?;
        let version = |c: Option<i64>, h: Option<i64>| {
            Some(Version {
                commit: c?.max(0) as u64,
                change: h?.max(0) as u64,
            })
        };
        let watermark = truncated.and_then(|(c, h)| version(Some(c), Some(h)));
        let mut out = vec![watermark; events.len()];
        for row in rows {
            let read = |i: usize| row.try_get::<Option<i64>, _>(i);
            let at = read(0).ok().flatten().unwrap_or(0) as usize;
            let stored = version(
                read(1).map_err(|e| classify(e, "read row versions"))?,
                read(2).map_err(|e| classify(e, "read row versions"))?,
            );
            let tombstone = version(
                read(3).map_err(|e| classify(e, "read row versions"))?,
                read(4).map_err(|e| classify(e, "read row versions"))?,
            );
            if let Some(slot) = at.checked_sub(1).and_then(|i| out.get_mut(i)) {
                *slot = (*slot).max(stored).max(tombstone);
            }
        }
        Ok(out)
    }
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
