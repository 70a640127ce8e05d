//! Per-table plans: the replica table (created or extended from the stream's schema), the SQL that
//! applies a reduced batch to it, and the reduction itself (last change per key wins, unchanged
//! TOAST columns filled from earlier changes in the batch or left as the replica holds them).

use crate::config::PostgresSinkConfig;
use crate::encode::{TextElement, is_hstore, to_column_text, to_text};
use crate::sql::{classify, ident, qualified};
use ahash::AHashMap;
use ripple_sink::{
    ChangeEvent, Column, ColumnType, Op, ROW_COLUMN, Rejection, SinkError, TableSchema, Template,
    TemplateError, Value, Version,
};
// Every dynamic statement here is assembled from `ident`-quoted names and whitelisted type names;
// values are always bound.
use sqlx::postgres::PgBindIterExt;
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// Plans by schema identity. The decoder hands out one `Arc<TableSchema>` per distinct schema, so the
/// pointer is a cheap key; the cache holds the Arc so the pointer cannot be reused.
/// Plans by (schema pointer, target); the schema is kept so its pointer stays unique.
type Plans = AHashMap<(usize, TargetTable), (Arc<TableSchema>, Arc<Plan>)>;

#[derive(Default)]
pub struct PlanCache {
    plans: Mutex<Plans>,
}

impl PlanCache {
    pub fn get(&self, schema: &Arc<TableSchema>, target: &TargetTable) -> Option<Arc<Plan>> {
        let plans = self.plans.lock().expect("plan cache lock");
        plans
            .get(&(Arc::as_ptr(schema) as usize, target.clone()))
            .map(|(_, p)| p.clone())
    }

    pub fn insert(&self, schema: &Arc<TableSchema>, target: &TargetTable, plan: Arc<Plan>) {
        let mut plans = self.plans.lock().expect("plan cache lock");
        plans.insert(
            (Arc::as_ptr(schema) as usize, target.clone()),
            (schema.clone(), plan),
        );
    }

    pub fn clear(&self) {
        self.plans.lock().expect("plan cache lock").clear();
    }
}

/// The replica table a source table is written to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetTable {
    pub namespace: String,
    pub name: String,
}

impl TargetTable {
    /// Where `target.table` goes: the route's template (`{schema}` and `{table}` replaced; a dot
    /// separates schema and table), else the source's name, in the sink's `schema` when set.
    pub fn resolve(target: ripple_sink::Target<'_>, config: &PostgresSinkConfig) -> Self {
        let table = target.table;
        let default_namespace = || {
            config
                .schema
                .clone()
                .unwrap_or_else(|| table.namespace.clone())
        };
        let Some(t) = target.template else {
            return Self {
                namespace: default_namespace(),
                name: table.name.clone(),
            };
        };
        // Split the template, not the result: a substituted name may itself hold a dot. A part
        // that does not parse was refused at start-up (`check`); it is taken literally.
        let fill = |part: &str| match Template::parse(part) {
            Ok(p) => p.render_table(table),
            Err(_) => part.to_string(),
        };
        match t.split_once('.') {
            Some((ns, name)) => Self {
                namespace: fill(ns),
                name: fill(name),
            },
            None => Self {
                namespace: default_namespace(),
                name: fill(t),
            },
        }
    }

    /// Refuses a template that cannot name a table.
    pub fn check(template: &str) -> Result<(), TemplateError> {
        let (ns, name) = template.split_once('.').unwrap_or(("x", template));
        for part in [ns, name] {
            Template::parse_table_level(part).map_err(|e| match e {
                TemplateError::Placeholder { name, .. } => TemplateError::Placeholder {
                    template: template.to_string(),
                    name,
                },
                other => other,
            })?;
        }
        if ns.is_empty() || name.is_empty() || name.contains('.') {
            return Err(TemplateError::Refused {
                template: template.to_string(),
                reason: "is not TABLE or SCHEMA.TABLE ({schema} and {table} are replaced)",
            });
        }
        Ok(())
    }

    pub fn sql(&self) -> String {
        qualified(&self.namespace, &self.name)
    }
}

/// What one table of one schema version needs to be written.
pub struct Plan {
    target: String,
    /// The target's name in Ripple's bookkeeping tables (tombstones, truncation watermarks).
    pub table_name: String,
    /// The replica's type for each schema column (schema-qualified, without modifier): the cast target.
    casts: Vec<String>,
    types: Vec<ColumnType>,
    names: Vec<String>,
    key: Vec<usize>,
    /// By (unavailable columns, has deletes, has upserts).
    statements: Mutex<AHashMap<StatementShape, Arc<str>>>,
}

impl Plan {
    /// Makes sure the replica table exists with every column of `schema`, then reads back the
    /// column types the replica really has.
    pub async fn prepare(
        tx: &mut Transaction<'_, Postgres>,
        schema: &TableSchema,
        into: &TargetTable,
        config: &PostgresSinkConfig,
    ) -> Result<Plan, SinkError> {
        let TargetTable { namespace, name } = into.clone();
        let target = qualified(&namespace, &name);
        if schema.key.is_empty() {
            return Err(SinkError::permanent(format!(
                "table {} has no primary key",
                schema.table
            )));
        }
        let mut existing = catalog_types(tx, &namespace, &name).await?;
        if existing.is_empty() {
            if !config.create_tables {
                return Err(SinkError::permanent(format!(
                    "replica table {target} does not exist and create_tables is false"
                )));
            }
            lock_ddl(tx).await?;
            let ddl = create_table_sql(&target, schema);
            tracing::info!(table = %target, "creating replica table");
            sqlx::query(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                ident(&namespace)
            )))
            .execute(&mut **tx)
            .await
            .map_err(|e| classify(e, "create schema"))?;
            sqlx::query(AssertSqlSafe(ddl))
                .execute(&mut **tx)
                .await
                .map_err(|e| classify(e, "create table"))?;
            existing = catalog_types(tx, &namespace, &name).await?;
        }
        let mut casts = Vec::with_capacity(schema.columns.len());
        for col in &schema.columns {
            let cast = match existing.get(&col.name) {
                Some(t) => t.clone(),
                None if config.create_tables => {
                    let t = pg_type(col);
                    tracing::info!(table = %target, column = %col.name, r#type = %t, "adding column to replica table");
                    // The source's default fills the rows already there, as the source's
                    // ALTER did: no change event will ever carry their value.
                    let default = col
                        .default
                        .as_deref()
                        .map(|d| format!(" DEFAULT {}::{t}", crate::sql::literal(d)))
                        .unwrap_or_default();
                    sqlx::query(AssertSqlSafe(format!(
                        "ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {} {t}{default}",
                        ident(&col.name)
                    )))
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| classify(e, "add column"))?;
                    catalog_types(tx, &namespace, &name)
                        .await?
                        .remove(&col.name)
                        .unwrap_or(t)
                }
                None => {
                    return Err(SinkError::permanent(format!(
                        "replica table {target} has no column {:?} and create_tables is false",
                        col.name
                    )));
                }
            };
            casts.push(cast);
        }
        // Columns the stream no longer carries (dropped in the source, or left out by a route)
        // stay with their data; rows written from now on leave them NULL, so they must allow it.
        let gone: Vec<&String> = existing
            .keys()
            .filter(|c| !c.starts_with("_ripple") && schema.column_index(c).is_none())
            .collect();
        if !gone.is_empty() {
            let not_null: Vec<String> = sqlx::query_scalar(
                "SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = to_regclass($1) \
                 AND a.attnum > 0 AND NOT a.attisdropped AND a.attnotnull",
            )
            .bind(&target)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| classify(e, "read catalog"))?;
            for column in gone {
                let relaxed = not_null.contains(column);
                if relaxed {
                    sqlx::query(AssertSqlSafe(format!(
                        "ALTER TABLE {target} ALTER COLUMN {} DROP NOT NULL",
                        ident(column)
                    )))
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| classify(e, "relax a dropped column"))?;
                }
                tracing::warn!(table = %target, column = %column, now_nullable = relaxed,
                    "the change stream no longer carries this column: the replica keeps it (with its data); new rows leave it NULL");
            }
        }
        for version_column in [COMMIT_COLUMN, CHANGE_COLUMN] {
            if !existing.contains_key(version_column) {
                sqlx::query(AssertSqlSafe(format!(
                    "ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {version_column} bigint"
                )))
                .execute(&mut **tx)
                .await
                .map_err(|e| classify(e, "add version columns"))?;
            }
        }
        let table_name = bookkeeping_name(tx, &target).await?.ok_or_else(|| {
            SinkError::retriable(format!(
                "replica table {target} disappeared while Ripple prepared to write it"
            ))
        })?;
        Ok(Plan {
            table_name,
            target,
            casts,
            types: schema.columns.iter().map(|c| c.ty.clone()).collect(),
            names: schema.columns.iter().map(|c| c.name.clone()).collect(),
            key: schema.key.clone(),
            statements: Mutex::default(),
        })
    }

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
                crate::sql::outage_condition("SQLSTATE"),
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

/// Version columns Ripple adds to every replica table; `verify` ignores `_ripple*` columns.
pub const COMMIT_COLUMN: &str = "_ripple_commit";
pub const CHANGE_COLUMN: &str = "_ripple_change";
/// Versions of deleted keys, so a late, older insert cannot resurrect a row.
pub const TOMBSTONES: &str = "_ripple.tombstones";
/// Per table without a key, the version of the last update or delete applied to it.
pub const KEYLESS: &str = "_ripple.keyless";
/// Per table, the version of its last truncate: nothing older may land afterwards.
pub const TRUNCATIONS: &str = "_ripple.truncations";

/// Creates Ripple's bookkeeping tables in the replica if they are missing.
pub async fn ensure_bookkeeping(tx: &mut Transaction<'_, Postgres>) -> Result<(), SinkError> {
    // A writer with only the privileges it needs (no CREATE on the database, not the owner of the
    // tables) cannot run even `IF NOT EXISTS` DDL: PostgreSQL checks the privilege first. So the
    // DDL runs only when something is missing.
    let present: bool = sqlx::query_scalar(
        "SELECT to_regclass('_ripple.tombstones') IS NOT NULL \
         AND to_regclass('_ripple.tombstones_newest') IS NOT NULL \
         AND to_regclass('_ripple.truncations') IS NOT NULL \
         AND to_regclass('_ripple.offsets') IS NOT NULL",
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| classify(e, "look up bookkeeping tables"))?;
    if present {
        return Ok(());
    }
    lock_ddl(tx).await?;
    for ddl in [
        "CREATE SCHEMA IF NOT EXISTS _ripple",
        "CREATE TABLE IF NOT EXISTS _ripple.tombstones (table_name text NOT NULL, key text NOT NULL, \
         commit_lsn bigint NOT NULL, change_lsn bigint NOT NULL, PRIMARY KEY (table_name, key))",
        // A table's newest tombstone, read once per write to skip the per-row probe.
        "CREATE INDEX IF NOT EXISTS tombstones_newest ON _ripple.tombstones (table_name, commit_lsn, change_lsn)",
        "CREATE TABLE IF NOT EXISTS _ripple.truncations (table_name text PRIMARY KEY, \
         commit_lsn bigint NOT NULL, change_lsn bigint NOT NULL)",
        "CREATE TABLE IF NOT EXISTS _ripple.offsets (topic text NOT NULL, partition int NOT NULL, \
         table_name text NOT NULL, next_offset bigint NOT NULL, PRIMARY KEY (topic, partition, table_name))",
    ] {
        sqlx::query(ddl)
            .execute(&mut **tx)
            .await
            .map_err(|e| classify(e, "create bookkeeping tables"))?;
    }
    Ok(())
}

/// `_ripple.keyless`, created when a table without a key first has an update or delete (so a
/// writer without the privilege to create it is only asked to when it needs it).
async fn ensure_keyless_marks(tx: &mut Transaction<'_, Postgres>) -> Result<(), SinkError> {
    let present: bool = sqlx::query_scalar("SELECT to_regclass('_ripple.keyless') IS NOT NULL")
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| classify(e, "look up bookkeeping tables"))?;
    if present {
        return Ok(());
    }
    lock_ddl(tx).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS _ripple.keyless (table_name text PRIMARY KEY, \
         commit_lsn bigint NOT NULL, change_lsn bigint NOT NULL)",
    )
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "create bookkeeping tables"))?;
    Ok(())
}

/// The table's key in the bookkeeping tables: its name and OID, so a table dropped and created again
/// starts with no tombstones or watermark. `None` when the table does not exist.
pub async fn bookkeeping_name(
    tx: &mut Transaction<'_, Postgres>,
    target: &str,
) -> Result<Option<String>, SinkError> {
    let oid: Option<i64> = sqlx::query_scalar("SELECT to_regclass($1)::oid::int8")
        .bind(target)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| classify(e, "look up table"))?;
    Ok(oid.map(|oid| format!("{target}#{oid}")))
}

/// Serializes Ripple's DDL across sinks and instances until the transaction ends: concurrent
/// `CREATE ... IF NOT EXISTS` of the same object otherwise fails on a catalog unique index.
async fn lock_ddl(tx: &mut Transaction<'_, Postgres>) -> Result<(), SinkError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('ripple ddl'))")
        .execute(&mut **tx)
        .await
        .map_err(|e| classify(e, "lock for DDL"))?;
    Ok(())
}

/// Versions as the two bigint arrays the statements take. LSNs fit in an i64 by a wide margin.
fn versions(it: impl Iterator<Item = Version>) -> (Vec<i64>, Vec<i64>) {
    it.map(|v| (v.commit as i64, v.change as i64)).unzip()
}

async fn catalog_types(
    tx: &mut Transaction<'_, Postgres>,
    namespace: &str,
    name: &str,
) -> Result<AHashMap<String, String>, SinkError> {
    let rows = sqlx::query(
        // The cast target is the type without its modifier: an explicit cast to varchar(n) or
        // char(n) truncates silently, while assigning to the column checks the length and fails.
        "SELECT a.attname::text, format('%I.%I', tn.nspname, t.typname) \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace \
         WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .bind(namespace)
    .bind(name)
    .fetch_all(&mut **tx)
    .await
    .map_err(|e| classify(e, "read catalog"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
        .collect())
}

fn create_table_sql(target: &str, schema: &TableSchema) -> String {
    let mut cols: Vec<String> = schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let not_null = if schema.key.contains(&i) {
                " NOT NULL"
            } else {
                ""
            };
            format!("{} {}{not_null}", ident(&c.name), pg_type(c))
        })
        .collect();
    cols.push(format!("{COMMIT_COLUMN} bigint"));
    cols.push(format!("{CHANGE_COLUMN} bigint"));
    let key: Vec<String> = schema.key_columns().map(|c| ident(&c.name)).collect();
    cols.push(format!("PRIMARY KEY ({})", key.join(", ")));
    format!("CREATE TABLE IF NOT EXISTS {target} ({})", cols.join(", "))
}

/// The replica column type: the source's own declaration when the stream carries it and it is one
/// Ripple knows to be safe to repeat, else the closest type for the logical type.
pub fn pg_type(col: &Column) -> String {
    if let Some(t) = col.source_type.as_deref().and_then(from_source_type) {
        return t;
    }
    logical_pg_type(&col.ty)
}

fn logical_pg_type(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Bool => "boolean".into(),
        ColumnType::Int16 => "smallint".into(),
        ColumnType::Int32 => "integer".into(),
        ColumnType::Int64 => "bigint".into(),
        ColumnType::Float32 => "real".into(),
        ColumnType::Float64 => "double precision".into(),
        ColumnType::Decimal {
            precision: Some(p),
            scale: Some(s),
        } if *p > 0 => format!("numeric({p},{s})"),
        ColumnType::Decimal { .. } => "numeric".into(),
        ColumnType::Text | ColumnType::Other(_) => "text".into(),
        ColumnType::Bytes => "bytea".into(),
        ColumnType::Json => "jsonb".into(),
        ColumnType::Uuid => "uuid".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time => "time".into(),
        ColumnType::TimeTz => "timetz".into(),
        ColumnType::Timestamp => "timestamp".into(),
        ColumnType::TimestampTz => "timestamptz".into(),
        ColumnType::Interval => "interval".into(),
        ColumnType::Array(inner) => format!("{}[]", logical_pg_type(inner)),
    }
}

/// Source declarations repeated verbatim: only plain type names and lengths Ripple recognises, so a
/// propagated type can never smuggle SQL into DDL.
fn from_source_type(source: &str) -> Option<String> {
    let (name, args) = match source.find('(') {
        Some(i) => (&source[..i], Some(source[i + 1..].trim_end_matches(')'))),
        None => (source, None),
    };
    let numbers: Vec<u32> = match args {
        Some(a) => a
            .split(',')
            .map(|p| p.trim().parse().ok())
            .collect::<Option<Vec<u32>>>()?,
        None => Vec::new(),
    };
    let lower = name.to_ascii_lowercase();
    match (lower.as_str(), numbers.as_slice()) {
        ("varchar", [n]) if *n > 0 && *n < 10_485_760 => Some(format!("varchar({n})")),
        ("bpchar", [n]) if *n > 0 && *n < 10_485_760 => Some(format!("char({n})")),
        ("numeric", [p, s]) if *p > 0 && *p <= 1000 && s <= p => Some(format!("numeric({p},{s})")),
        ("bit", [n]) if *n > 0 && *n <= 83_886_080 => Some(format!("bit({n})")),
        ("varbit", [n]) if *n > 0 && *n <= 83_886_080 => Some(format!("varbit({n})")),
        ("varbit", []) => Some("varbit".into()),
        (
            "varchar" | "text" | "json" | "jsonb" | "uuid" | "xml" | "inet" | "cidr" | "macaddr"
            | "macaddr8" | "money" | "citext" | "ltree" | "hstore" | "tsvector" | "int4range"
            | "int8range" | "numrange" | "tsrange" | "tstzrange" | "daterange" | "interval"
            | "timetz",
            _,
        ) => Some(lower),
        _ => None,
    }
}

/// The reduced changes of one schema version that share the same set of unavailable columns.
pub struct Group<'a> {
    pub schema: &'a Arc<TableSchema>,
    /// Columns that no upsert of this group carries (unchanged TOAST values): left as they are.
    pub unavailable: Vec<bool>,
    /// Rows with the version of the change that produced them.
    pub upserts: Vec<(Cow<'a, [Value]>, Version)>,
    pub deletes: Vec<&'a ChangeEvent>,
    first: &'a ChangeEvent,
    /// A hash of each upsert's and each delete's key, in order: see `split`.
    upsert_keys: Vec<u64>,
    delete_keys: Vec<u64>,
    /// The index, in the events `reduce` was given, of the change behind each upsert and delete.
    upsert_at: Vec<usize>,
    delete_at: Vec<usize>,
}

impl<'a> Group<'a> {
    fn empty(schema: &'a Arc<TableSchema>, first: &'a ChangeEvent, unavailable: Vec<bool>) -> Self {
        Group {
            schema,
            unavailable,
            upserts: Vec::new(),
            deletes: Vec::new(),
            first,
            upsert_keys: Vec::new(),
            delete_keys: Vec::new(),
            upsert_at: Vec::new(),
            delete_at: Vec::new(),
        }
    }

    pub fn first_event(&self) -> &'a ChangeEvent {
        self.first
    }

    /// Splits the group into `n` by key, so each part can be written by its own connection: a
    /// key's change is in exactly one part, and parts share no row.
    pub fn split(self, n: usize) -> Vec<Group<'a>> {
        let mut parts: Vec<Group<'a>> = (0..n)
            .map(|_| Group::empty(self.schema, self.first, self.unavailable.clone()))
            .collect();
        let upserts = self.upserts.into_iter().zip(self.upsert_keys);
        for ((u, k), at) in upserts.zip(self.upsert_at) {
            let p = &mut parts[(k % n as u64) as usize];
            p.upserts.push(u);
            p.upsert_keys.push(k);
            p.upsert_at.push(at);
        }
        let deletes = self.deletes.into_iter().zip(self.delete_keys);
        for ((d, k), at) in deletes.zip(self.delete_at) {
            let p = &mut parts[(k % n as u64) as usize];
            p.deletes.push(d);
            p.delete_keys.push(k);
            p.delete_at.push(at);
        }
        parts
    }
}

type StatementShape = (Vec<bool>, bool, bool);

/// Groups a truncate-free run of events without reducing it: every change stays, for writing one
/// by one. Order between the groups does not matter: every write is guarded by version, so the
/// changes of one key land as they would in order, and a refused one leaves the key as the
/// changes before it made it.
pub fn singles(events: &[ChangeEvent]) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let unavailable: Vec<bool> = match (&e.op, &e.row) {
            (Op::Upsert, Some(r)) => r.iter().map(|v| *v == Value::Unavailable).collect(),
            _ => Vec::new(),
        };
        let delete = e.op != Op::Upsert;
        let slot = groups.iter().position(|g| {
            Arc::ptr_eq(g.schema, &e.schema)
                && if delete {
                    g.upserts.is_empty()
                } else {
                    g.deletes.is_empty() && g.unavailable == unavailable
                }
        });
        let g = match slot {
            Some(s) => &mut groups[s],
            None => {
                groups.push(Group::empty(&e.schema, e, unavailable));
                groups.last_mut().expect("just pushed")
            }
        };
        if delete {
            g.deletes.push(e);
            g.delete_keys.push(0);
            g.delete_at.push(i);
        } else {
            g.upserts.push((
                Cow::Borrowed(e.row.as_deref().unwrap_or_default()),
                e.version,
            ));
            g.upsert_keys.push(0);
            g.upsert_at.push(i);
        }
    }
    groups
}

/// Reduces a truncate-free run of events to the newest change per key and groups the result.
pub fn reduce(events: &[ChangeEvent]) -> Vec<Group<'_>> {
    // Keys compare as the replica's text, so values the replica cannot tell apart are one key.
    let newest = ripple_sink::segment::newest_per_key(events, |e| {
        e.key
            .iter()
            .map(|v| to_text(v, &ColumnType::Text))
            .collect::<Vec<Option<String>>>()
    });
    let hasher = ahash::RandomState::with_seeds(1, 2, 3, 4);
    let finals = newest
        .into_iter()
        .map(|n| (n.at, n.row, hasher.hash_one(&n.key)));

    let mut groups: Vec<Group<'_>> = Vec::new();
    for (i, row, key_hash) in finals {
        let e = &events[i];
        let unavailable: Vec<bool> = match &row {
            Some(r) => r.iter().map(|v| *v == Value::Unavailable).collect(),
            None => Vec::new(),
        };
        let slot = groups.iter().position(|g| {
            Arc::ptr_eq(g.schema, &e.schema)
                && (row.is_none() || g.upserts.is_empty() || g.unavailable == unavailable)
        });
        let g = match slot {
            Some(s) => &mut groups[s],
            None => {
                groups.push(Group::empty(&e.schema, e, Vec::new()));
                groups.last_mut().expect("just pushed")
            }
        };
        match row {
            Some(r) => {
                if g.upserts.is_empty() {
                    g.unavailable = unavailable;
                }
                g.upserts.push((r, e.version));
                g.upsert_keys.push(key_hash);
                g.upsert_at.push(i);
            }
            None => {
                g.deletes.push(e);
                g.delete_keys.push(key_hash);
                g.delete_at.push(i);
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use ripple_sink::{Origin, TableRef, Version};

    fn schema() -> Arc<TableSchema> {
        let col = Column::new;
        Arc::new(TableSchema {
            table: TableRef::new("public", "t"),
            columns: vec![col("id", ColumnType::Int32), col("note", ColumnType::Text)],
            key: vec![0],
        })
    }

    fn ev(schema: &Arc<TableSchema>, op: Op, id: i64, note: Option<Value>) -> ChangeEvent {
        ChangeEvent {
            schema: schema.clone(),
            op,
            row: note.map(|n| vec![Value::Int(id), n]),
            key: vec![Value::Int(id)],
            before: None,
            version: Version::default(),
            source_ts_ms: 0,
            origin: Origin {
                topic: Arc::from("t"),
                partition: 0,
                offset: 0,
            },
        }
    }

    #[test]
    fn last_change_per_key_wins() {
        let s = schema();
        let events = vec![
            ev(&s, Op::Upsert, 1, Some(Value::Text("a".into()))),
            ev(&s, Op::Upsert, 2, Some(Value::Text("b".into()))),
            ev(&s, Op::Delete, 1, None),
            ev(&s, Op::Upsert, 2, Some(Value::Text("c".into()))),
        ];
        let groups = reduce(&events);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].deletes.len(), 1);
        assert_eq!(groups[0].upserts.len(), 1);
        assert_eq!(groups[0].upserts[0].0[1], Value::Text("c".into()));
    }

    #[test]
    fn split_puts_each_key_in_one_part_and_keeps_every_change() {
        let s = schema();
        let mut events = Vec::new();
        for id in 0..300 {
            events.push(ev(&s, Op::Upsert, id, Some(Value::Text(format!("v{id}")))));
        }
        for id in (0..300).step_by(3) {
            events.push(ev(&s, Op::Delete, id, None));
        }
        let groups = reduce(&events);
        let (ups, dels): (usize, usize) = (groups[0].upserts.len(), groups[0].deletes.len());
        assert_eq!((ups, dels), (200, 100));
        let parts = groups.into_iter().next().unwrap().split(3);
        assert_eq!(parts.iter().map(|p| p.upserts.len()).sum::<usize>(), 200);
        assert_eq!(parts.iter().map(|p| p.deletes.len()).sum::<usize>(), 100);
        assert!(
            parts.iter().all(|p| !p.upserts.is_empty()),
            "keys spread over the parts"
        );
        // A key's part does not depend on whether its last change was an upsert or a delete.
        let part_of = |id: i64| {
            parts.iter().position(|p| {
                p.upserts.iter().any(|(r, _)| r[0] == Value::Int(id))
                    || p.deletes.iter().any(|e| e.key[0] == Value::Int(id))
            })
        };
        let again = reduce(&events[..300]).into_iter().next().unwrap().split(3);
        for id in (0..300).step_by(3) {
            let upsert_part = again
                .iter()
                .position(|p| p.upserts.iter().any(|(r, _)| r[0] == Value::Int(id)));
            assert_eq!(part_of(id), upsert_part, "key {id}");
        }
    }

    #[test]
    fn a_stale_duplicate_later_in_the_batch_does_not_win() {
        let s = schema();
        let mut newer = ev(&s, Op::Upsert, 1, Some(Value::Text("new".into())));
        newer.version = Version {
            commit: 9,
            change: 1,
        };
        let mut stale = ev(&s, Op::Upsert, 1, Some(Value::Text("old".into())));
        stale.version = Version {
            commit: 3,
            change: 1,
        };
        let events = vec![newer, stale];
        let groups = reduce(&events);
        assert_eq!(groups[0].upserts[0].0[1], Value::Text("new".into()));
    }

    #[test]
    fn unavailable_takes_the_earlier_value_in_the_batch() {
        let s = schema();
        let events = vec![
            ev(&s, Op::Upsert, 1, Some(Value::Text("big".into()))),
            ev(&s, Op::Upsert, 1, Some(Value::Unavailable)),
        ];
        let groups = reduce(&events);
        assert_eq!(groups[0].upserts[0].0[1], Value::Text("big".into()));
        assert_eq!(groups[0].unavailable, vec![false, false]);
    }

    #[test]
    fn unavailable_columns_form_their_own_group() {
        let s = schema();
        let events = vec![
            ev(&s, Op::Upsert, 1, Some(Value::Unavailable)),
            ev(&s, Op::Upsert, 2, Some(Value::Text("x".into()))),
        ];
        let groups = reduce(&events);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].unavailable, vec![false, true]);
    }

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

    #[test]
    fn source_types_are_whitelisted() {
        assert_eq!(
            from_source_type("VARCHAR(255)").as_deref(),
            Some("varchar(255)")
        );
        assert_eq!(
            from_source_type("NUMERIC(10,2)").as_deref(),
            Some("numeric(10,2)")
        );
        assert_eq!(from_source_type("jsonb").as_deref(), Some("jsonb"));
        assert_eq!(from_source_type("int4; drop table x").as_deref(), None);
        assert_eq!(from_source_type("varchar(1); drop").as_deref(), None);
    }
}
