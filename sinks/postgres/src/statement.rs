//! The SQL that applies a group of reduced changes to a replica table (one data-modifying
//! statement per group, guarded by version), row by row for a batch that must find its refused
//! change, and matching old values for tables without a key.

use crate::bookkeeping::{
    CHANGE_COLUMN, COMMIT_COLUMN, KEYLESS, TOMBSTONES, TRUNCATIONS, ensure_keyless_marks,
};
use crate::encode::{TextElement, is_hstore, to_column_text};
use crate::errors::classify;
use crate::plan::Plan;
use crate::reduce::Group;
use crate::sql::ident;
use ripple_sink::{ChangeEvent, Op, ROW_COLUMN, Rejection, SinkError, Value, Version};
use sqlx::postgres::PgBindIterExt;
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};
use std::sync::Arc;

impl Plan {
    /// Applies a group in one statement: deletes and upserts touch disjoint keys after reduction,
    /// so a data-modifying CTE can carry both.
    pub async fn execute(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        group: &Group<'_>,
    ) -> Result<(), SinkError> {
        let has_del = !group.deletes.is_empty();
        let has_up = !group.upserts.is_empty();
        if !has_del && !has_up {
            return Ok(());
        }
        let sql = self.statement(&group.unavailable, has_del, has_up);
        let query = sqlx::query(AssertSqlSafe(sql)).bind(&self.table_name);
        self.bind(query, group, has_del, has_up)
            .execute(&mut **tx)
            .await
            .map_err(|e| classify(e, &format!("write {}", self.target)))?;
        Ok(())
    }

    /// Applies a group change by change, each in a subtransaction of its own, in one round trip:
    /// for a batch the replica refused without saying which row was to blame. The changes it
    /// refuses for their data are added to `rejected` (as indices into the events `reduce` was
    /// given, plus `offset`); an outage still fails the whole call.
    pub async fn execute_each(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        group: &Group<'_>,
        offset: usize,
        rejected: &mut Vec<Rejection>,
    ) -> Result<(), SinkError> {
        for deletes in [true, false] {
            let (rows, at) = if deletes {
                (group.deletes.len(), &group.delete_at)
            } else {
                (group.upserts.len(), &group.upsert_at)
            };
            if rows == 0 {
                continue;
            }
            // The arrays are unnested once, each row's values then read as scalars: subscripting
            // a large array parameter inside the loop would walk it from the start every time.
            let (body, types) =
                self.build_statement(&group.unavailable, deletes, !deletes, &mut |k| {
                    format!("ARRAY[_ripple_r.a{k}]")
                });
            let params: Vec<String> = (2..types.len() + 2).map(|k| format!("${k}")).collect();
            let columns: Vec<String> = (2..types.len() + 2).map(|k| format!("a{k}")).collect();
            let create = format!(
                "CREATE OR REPLACE FUNCTION pg_temp.ripple_each(text, {}) RETURNS SETOF text \
                 LANGUAGE plpgsql AS $ripple_each$\n#variable_conflict use_column\n\
                 DECLARE _ripple_r record;\nBEGIN\n\
                 FOR _ripple_r IN SELECT * FROM unnest({}) WITH ORDINALITY AS x({}, _ripple_i) LOOP\n\
                 BEGIN\n{body};\n\
                 EXCEPTION WHEN OTHERS THEN\n\
                 IF {} THEN RAISE; END IF;\n\
                 RETURN NEXT _ripple_r._ripple_i::text || ' ' || SQLSTATE || ' ' || SQLERRM;\n\
                 END;\nEND LOOP;\nEND\n$ripple_each$",
                types.join(", "),
                params.join(", "),
                columns.join(", "),
                crate::errors::outage_condition("SQLSTATE"),
            );
            sqlx::query(AssertSqlSafe(create))
                .execute(&mut **tx)
                .await
                .map_err(|e| classify(e, "prepare a row-by-row write"))?;
            let placeholders: Vec<String> =
                (1..=types.len() + 1).map(|k| format!("${k}")).collect();
            let call = format!("SELECT pg_temp.ripple_each({})", placeholders.join(", "));
            let query = sqlx::query(AssertSqlSafe(call)).bind(&self.table_name);
            let refused: Vec<String> = self
                .bind(query, group, deletes, !deletes)
                .fetch_all(&mut **tx)
                .await
                .map_err(|e| classify(e, &format!("write {} row by row", self.target)))?
                .iter()
                .map(|row| row.get::<String, _>(0))
                .collect();
            for line in refused {
                let (i, rest) = line.split_once(' ').unwrap_or(("1", &line));
                let (code, message) = rest.split_once(' ').unwrap_or(("", rest));
                let i: usize = i.parse().unwrap_or(1);
                let Some(&event) = at.get(i.saturating_sub(1)) else {
                    continue;
                };
                rejected.push(Rejection::new(
                    offset + event,
                    format!(
                        "postgres write {}: {message} (SQLSTATE {code})",
                        self.target
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Applies an update or delete of a table without a key ([`ChangeEvent::before`]): one row
    /// that holds exactly the old values (compared as text, so any type compares) is changed, the
    /// one with the lowest position when several are equal. Changes of such a table are applied
    /// in their order; a change not newer than the last one applied (`_ripple.keyless`), or older
    /// than the table's last truncate, changes nothing, so a replay cannot change a row twice. A
    /// deleted row leaves a tombstone under its position, so its insert cannot come back.
    pub async fn execute_matching(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &ChangeEvent,
    ) -> Result<(), SinkError> {
        ensure_keyless_marks(tx).await?;
        let before = event.before.as_deref().unwrap_or_default();
        let position = self.key.first().copied().unwrap_or(usize::MAX);
        let mut values: Vec<Option<String>> = Vec::new();
        let mut param = |v: Option<String>, cast: &str| {
            values.push(v);
            format!("${}::{cast}", values.len() + 3)
        };
        let mut conds: Vec<String> = Vec::new();
        for (i, v) in before.iter().enumerate() {
            if i == position || *v == Value::Unavailable || i >= self.casts.len() {
                continue;
            }
            let column = ident(&self.names[i]);
            match to_column_text(v, &self.types[i], &self.casts[i]) {
                None => conds.push(format!("t.{column} IS NULL")),
                Some(text) => {
                    let p = param(Some(text), &self.casts[i]);
                    conds.push(format!("t.{column}::text = ({p})::text"));
                }
            }
        }
        let conds = if conds.is_empty() {
            "true".to_string()
        } else {
            conds.join(" AND ")
        };
        let ctes = format!(
            "WITH mark AS (INSERT INTO {KEYLESS} AS m (table_name, commit_lsn, change_lsn) VALUES ($1, $2, $3) \
             ON CONFLICT (table_name) DO UPDATE SET commit_lsn = EXCLUDED.commit_lsn, change_lsn = EXCLUDED.change_lsn \
             WHERE (m.commit_lsn, m.change_lsn) < (EXCLUDED.commit_lsn, EXCLUDED.change_lsn) RETURNING 1), \
             target AS (SELECT t.ctid AS at, t.{row} AS position FROM {target} t WHERE EXISTS (SELECT 1 FROM mark) \
             AND NOT EXISTS (SELECT 1 FROM {TRUNCATIONS} w WHERE w.table_name = $1 AND (w.commit_lsn, w.change_lsn) >= ($2, $3)) \
             AND {conds} ORDER BY t.{row} LIMIT 1 FOR UPDATE)",
            row = ident(ROW_COLUMN),
            target = self.target,
        );
        let sql = match (event.op, event.row.as_deref()) {
            (Op::Upsert, Some(after)) => {
                let mut sets: Vec<String> = Vec::new();
                for (i, v) in after.iter().enumerate() {
                    if i == position || *v == Value::Unavailable || i >= self.casts.len() {
                        continue;
                    }
                    let p = param(
                        to_column_text(v, &self.types[i], &self.casts[i]),
                        &self.casts[i],
                    );
                    sets.push(format!("{} = {p}", ident(&self.names[i])));
                }
                sets.extend(
                    [COMMIT_COLUMN, CHANGE_COLUMN]
                        .iter()
                        .zip(["$2", "$3"])
                        .map(|(c, p)| format!("{c} = {p}")),
                );
                format!(
                    "{ctes} UPDATE {} t SET {} FROM target WHERE t.ctid = target.at",
                    self.target,
                    sets.join(", ")
                )
            }
            _ => format!(
                "{ctes}, gone AS (DELETE FROM {} t USING target WHERE t.ctid = target.at RETURNING target.position) \
                 INSERT INTO {TOMBSTONES} AS tb (table_name, key, commit_lsn, change_lsn) \
                 SELECT $1, ARRAY[gone.position]::text, $2, $3 FROM gone \
                 ON CONFLICT (table_name, key) DO UPDATE SET commit_lsn = EXCLUDED.commit_lsn, change_lsn = EXCLUDED.change_lsn \
                 WHERE (tb.commit_lsn, tb.change_lsn) < (EXCLUDED.commit_lsn, EXCLUDED.change_lsn)",
                self.target
            ),
        };
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(&self.table_name)
            .bind(event.version.commit as i64)
            .bind(event.version.change as i64);
        for v in values {
            query = query.bind(v);
        }
        query
            .execute(&mut **tx)
            .await
            .map_err(|e| classify(e, "change a row of a table without a key"))?;
        Ok(())
    }

    /// Binds a group's values, in the order `build_statement` numbers them.
    fn bind<'q>(
        &'q self,
        mut query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
        group: &'q Group<'_>,
        has_del: bool,
        has_up: bool,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        if has_del {
            for (k, &col) in self.key.iter().enumerate() {
                let ty = &self.types[col];
                query = query.bind(
                    group
                        .deletes
                        .iter()
                        .map(move |e| TextElement::new(&e.key[k], ty))
                        .bind_iter(),
                );
            }
            let (commits, changes) = versions(group.deletes.iter().map(|e| e.version));
            query = query.bind(commits).bind(changes);
        }
        if has_up {
            for col in 0..self.casts.len() {
                let (ty, hstore) = (&self.types[col], is_hstore(&self.casts[col]));
                query = query.bind(
                    group
                        .upserts
                        .iter()
                        .map(move |(row, _)| TextElement::for_column(&row[col], ty, hstore))
                        .bind_iter(),
                );
            }
            let (commits, changes) = versions(group.upserts.iter().map(|(_, v)| *v));
            query = query.bind(commits).bind(changes);
        }
        query
    }

    fn statement(&self, unavailable: &[bool], has_del: bool, has_up: bool) -> Arc<str> {
        let cache_key = (unavailable.to_vec(), has_del, has_up);
        let mut statements = self.statements.lock().expect("statement cache lock");
        statements
            .entry(cache_key)
            .or_insert_with(|| {
                let (sql, _) =
                    self.build_statement(unavailable, has_del, has_up, &mut |k| format!("${k}"));
                sql.into()
            })
            .clone()
    }

    /// One statement for a reduced group. Every write is guarded by version: a row is only
    /// replaced by a newer change, a delete leaves a tombstone so an older insert delivered again
    /// cannot bring the row back, and nothing at or below the table's truncation watermark lands.
    /// `arg(k)` writes parameter `k` (2 and up; `$1`, the bookkeeping name, is always `$1`); the
    /// types of those parameters come back with the statement, in order.
    fn build_statement(
        &self,
        unavailable: &[bool],
        has_del: bool,
        has_up: bool,
        arg: &mut dyn FnMut(usize) -> String,
    ) -> (String, Vec<&'static str>) {
        let mut param = 1; // $1 is the bookkeeping table name
        let mut types: Vec<&'static str> = Vec::new();
        let mut next = |ty: &'static str| {
            param += 1;
            types.push(ty);
            format!("{}::{ty}", arg(param))
        };
        let older = |alias: &str, vc: &str, vh: &str| {
            format!(
                "(COALESCE({alias}.{COMMIT_COLUMN}, -1), COALESCE({alias}.{CHANGE_COLUMN}, -1)) < ({vc}, {vh})"
            )
        };
        let watermark = |alias: &str| {
            format!(
                "NOT EXISTS (SELECT 1 FROM {TRUNCATIONS} w WHERE w.table_name = $1 \
                 AND (w.commit_lsn, w.change_lsn) >= ({alias}.vc, {alias}.vh))"
            )
        };
        let mut ctes: Vec<String> = Vec::new();
        if has_del {
            let arrays: Vec<String> = self.key.iter().map(|_| next("text[]")).collect();
            let (vc, vh) = (next("int8[]"), next("int8[]"));
            let aliases: Vec<String> = (0..self.key.len()).map(|i| format!("k{i}")).collect();
            let conds: Vec<String> = self
                .key
                .iter()
                .enumerate()
                .map(|(i, &c)| format!("t.{} = d.k{i}::{}", ident(&self.names[c]), self.casts[c]))
                .collect();
            ctes.push(format!(
                "d AS (SELECT * FROM unnest({}, {vc}, {vh}) AS u({}, vc, vh) WHERE {})",
                arrays.join(", "),
                aliases.join(", "),
                watermark("u")
            ));
            ctes.push(format!(
                "deleted AS (DELETE FROM {} t USING d WHERE {} AND {})",
                self.target,
                conds.join(" AND "),
                older("t", "d.vc", "d.vh")
            ));
            let tombstone = format!(
                "INSERT INTO {TOMBSTONES} (table_name, key, commit_lsn, change_lsn) \
                 SELECT $1, ARRAY[{}]::text, d.vc, d.vh FROM d \
                 ON CONFLICT (table_name, key) DO UPDATE SET commit_lsn = EXCLUDED.commit_lsn, change_lsn = EXCLUDED.change_lsn \
                 WHERE (tombstones.commit_lsn, tombstones.change_lsn) < (EXCLUDED.commit_lsn, EXCLUDED.change_lsn)",
                aliases
                    .iter()
                    .map(|a| format!("d.{a}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if !has_up {
                // The tombstones are the main statement: a function body cannot run a bare SELECT.
                return (format!("WITH {} {tombstone}", ctes.join(", ")), types);
            }
            ctes.push(format!("tombstoned AS ({tombstone})"));
        }
        let n = self.casts.len();
        let arrays: Vec<String> = (0..n).map(|_| next("text[]")).collect();
        let (vc, vh) = (next("int8[]"), next("int8[]"));
        let aliases: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
        let key_text: Vec<String> = self.key.iter().map(|&c| format!("u.v{c}")).collect();
        // A tombstone only blocks changes at or below its own version, so a change newer than the
        // table's newest tombstone (read once per statement, from an index) needs no probe: in a
        // stream that is every change but redeliveries and stragglers from other partitions.
        let newest = |column: &str| {
            format!(
                "COALESCE((SELECT n.{column} FROM {TOMBSTONES} n WHERE n.table_name = $1 \
                 ORDER BY n.commit_lsn DESC, n.change_lsn DESC LIMIT 1), -1)"
            )
        };
        ctes.push(format!(
            "s AS (SELECT * FROM unnest({}, {vc}, {vh}) AS u({}, vc, vh) WHERE {} \
             AND ((u.vc, u.vh) > ({}, {}) \
             OR NOT EXISTS (SELECT 1 FROM {TOMBSTONES} tb WHERE tb.table_name = $1 AND tb.key = ARRAY[{}]::text \
             AND (tb.commit_lsn, tb.change_lsn) >= (u.vc, u.vh))))",
            arrays.join(", "),
            aliases.join(", "),
            watermark("u"),
            newest("commit_lsn"),
            newest("change_lsn"),
            key_text.join(", ")
        ));
        let mut columns: Vec<String> = self.names.iter().map(|c| ident(c)).collect();
        columns.extend([COMMIT_COLUMN.to_string(), CHANGE_COLUMN.to_string()]);
        let mut values: Vec<String> = (0..n)
            .map(|i| format!("s.v{i}::{}", self.casts[i]))
            .collect();
        values.extend(["s.vc".to_string(), "s.vh".to_string()]);
        let conflict: Vec<String> = self.key.iter().map(|&c| ident(&self.names[c])).collect();
        let mut updates: Vec<String> = (0..n)
            .filter(|i| !self.key.contains(i) && !unavailable.get(*i).copied().unwrap_or(false))
            .map(|i| format!("{0} = EXCLUDED.{0}", ident(&self.names[i])))
            .collect();
        updates.extend([COMMIT_COLUMN, CHANGE_COLUMN].map(|c| format!("{c} = EXCLUDED.{c}")));
        let sql = format!(
            "WITH {} INSERT INTO {} AS t ({}) SELECT {} FROM s ON CONFLICT ({}) DO UPDATE SET {} WHERE {}",
            ctes.join(", "),
            self.target,
            columns.join(", "),
            values.join(", "),
            conflict.join(", "),
            updates.join(", "),
            older("t", "EXCLUDED._ripple_commit", "EXCLUDED._ripple_change")
        );
        (sql, types)
    }
}

/// Versions as the two bigint arrays the statements take. LSNs fit in an i64 by a wide margin.
fn versions(it: impl Iterator<Item = Version>) -> (Vec<i64>, Vec<i64>) {
    it.map(|v| (v.commit as i64, v.change as i64)).unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reduce::tests::schema;
    use std::sync::Mutex;

    #[test]
    fn upsert_sql_skips_unavailable_columns() {
        let s = schema();
        let plan = Plan {
            target: "\"public\".\"t\"".into(),
            table_name: "\"public\".\"t\"".into(),
            casts: vec!["integer".into(), "text".into()],
            types: s.columns.iter().map(|c| c.ty.clone()).collect(),
            names: vec!["id".into(), "note".into()],
            key: vec![0],
            statements: Mutex::default(),
        };
        let (sql, _) = plan.build_statement(&[false, true], true, true, &mut |k| format!("${k}"));
        assert!(
            sql.contains("unnest($2::text[], $3::int8[], $4::int8[]) AS u(k0, vc, vh)"),
            "{sql}"
        );
        assert!(
            sql.contains(
                "unnest($5::text[], $6::text[], $7::int8[], $8::int8[]) AS u(v0, v1, vc, vh)"
            ),
            "{sql}"
        );
        assert!(
            !sql.contains("\"note\" = EXCLUDED"),
            "unavailable columns are left as they are: {sql}"
        );
        assert!(
            sql.contains("INSERT INTO _ripple.tombstones"),
            "deletes leave tombstones: {sql}"
        );
        assert!(sql.ends_with("WHERE (COALESCE(t._ripple_commit, -1), COALESCE(t._ripple_change, -1)) < (EXCLUDED._ripple_commit, EXCLUDED._ripple_change)"), "{sql}");
        let (sql, _) = plan.build_statement(&[false, false], false, true, &mut |k| format!("${k}"));
        assert!(
            sql.contains("DO UPDATE SET \"note\" = EXCLUDED.\"note\", _ripple_commit"),
            "{sql}"
        );
    }
}
