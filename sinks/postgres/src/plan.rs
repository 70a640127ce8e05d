//! Per-table plans: the replica table (created or extended from the stream's schema), the SQL that
//! applies a reduced batch to it, and the reduction itself (last change per key wins, unchanged
//! TOAST columns filled from earlier changes in the batch or left as the replica holds them).

use crate::config::PostgresSinkConfig;
use crate::encode::to_text;
use crate::sql::{classify, ident, qualified};
use ahash::AHashMap;
use ripple_sink::{ChangeEvent, Column, ColumnType, Op, SinkError, TableSchema, Value};
// Every dynamic statement here is assembled from `ident`-quoted names and whitelisted type names;
// values are always bound.
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// Plans by schema identity. The decoder hands out one `Arc<TableSchema>` per distinct schema, so the
/// pointer is a cheap key; the cache holds the Arc so the pointer cannot be reused.
#[derive(Default)]
pub struct PlanCache {
    plans: Mutex<AHashMap<usize, (Arc<TableSchema>, Arc<Plan>)>>,
}

impl PlanCache {
    pub fn get(&self, schema: &Arc<TableSchema>) -> Option<Arc<Plan>> {
        let plans = self.plans.lock().expect("plan cache lock");
        plans
            .get(&(Arc::as_ptr(schema) as usize))
            .map(|(_, p)| p.clone())
    }

    pub fn insert(&self, schema: &Arc<TableSchema>, plan: Arc<Plan>) {
        let mut plans = self.plans.lock().expect("plan cache lock");
        plans.insert(Arc::as_ptr(schema) as usize, (schema.clone(), plan));
    }

    pub fn clear(&self) {
        self.plans.lock().expect("plan cache lock").clear();
    }
}

/// What one table of one schema version needs to be written.
pub struct Plan {
    target: String,
    /// The replica's type for each schema column (schema-qualified, without modifier): the cast target.
    casts: Vec<String>,
    types: Vec<ColumnType>,
    names: Vec<String>,
    key: Vec<usize>,
    statements: Mutex<AHashMap<(Vec<bool>, bool, bool), Arc<str>>>,
}

impl Plan {
    /// Makes sure the replica table exists with every column of `schema`, then reads back the
    /// column types the replica really has.
    pub async fn prepare(
        tx: &mut Transaction<'_, Postgres>,
        schema: &TableSchema,
        config: &PostgresSinkConfig,
    ) -> Result<Plan, SinkError> {
        let namespace = config
            .schema
            .as_deref()
            .unwrap_or(&schema.table.namespace)
            .to_string();
        let name = schema.table.name.clone();
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
                    sqlx::query(AssertSqlSafe(format!(
                        "ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {} {t}",
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
        Ok(Plan {
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
        let mut query = sqlx::query(AssertSqlSafe(sql));
        if has_del {
            for (k, &col) in self.key.iter().enumerate() {
                let values: Vec<Option<String>> = group
                    .deletes
                    .iter()
                    .map(|e| to_text(&e.key[k], &self.types[col]))
                    .collect();
                query = query.bind(values);
            }
        }
        if has_up {
            for col in 0..self.casts.len() {
                let values: Vec<Option<String>> = group
                    .upserts
                    .iter()
                    .map(|row| to_text(&row[col], &self.types[col]))
                    .collect();
                query = query.bind(values);
            }
        }
        query
            .execute(&mut **tx)
            .await
            .map_err(|e| classify(e, &format!("write {}", self.target)))?;
        Ok(())
    }

    fn statement(&self, unavailable: &[bool], has_del: bool, has_up: bool) -> Arc<str> {
        let cache_key = (unavailable.to_vec(), has_del, has_up);
        let mut statements = self.statements.lock().expect("statement cache lock");
        statements
            .entry(cache_key)
            .or_insert_with(|| self.build_statement(unavailable, has_del, has_up).into())
            .clone()
    }

    fn build_statement(&self, unavailable: &[bool], has_del: bool, has_up: bool) -> String {
        let mut param = 0;
        let mut next = || {
            param += 1;
            param
        };
        let mut sql = String::new();
        if has_del {
            let arrays: Vec<String> = self
                .key
                .iter()
                .map(|_| format!("${}::text[]", next()))
                .collect();
            let aliases: Vec<String> = (0..self.key.len()).map(|i| format!("k{i}")).collect();
            let conds: Vec<String> = self
                .key
                .iter()
                .enumerate()
                .map(|(i, &c)| format!("t.{} = d.k{i}::{}", ident(&self.names[c]), self.casts[c]))
                .collect();
            let delete = format!(
                "DELETE FROM {} t USING unnest({}) AS d({}) WHERE {}",
                self.target,
                arrays.join(", "),
                aliases.join(", "),
                conds.join(" AND ")
            );
            if !has_up {
                return delete;
            }
            sql.push_str(&format!("WITH deleted AS ({delete}) "));
        }
        let n = self.casts.len();
        let arrays: Vec<String> = (0..n).map(|_| format!("${}::text[]", next())).collect();
        let aliases: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
        let columns: Vec<String> = self.names.iter().map(|c| ident(c)).collect();
        let values: Vec<String> = (0..n)
            .map(|i| format!("s.v{i}::{}", self.casts[i]))
            .collect();
        let conflict: Vec<String> = self.key.iter().map(|&c| ident(&self.names[c])).collect();
        let updates: Vec<String> = (0..n)
            .filter(|i| !self.key.contains(i) && !unavailable.get(*i).copied().unwrap_or(false))
            .map(|i| format!("{0} = EXCLUDED.{0}", ident(&self.names[i])))
            .collect();
        let action = if updates.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        sql.push_str(&format!(
            "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS s({}) ON CONFLICT ({}) {}",
            self.target,
            columns.join(", "),
            values.join(", "),
            arrays.join(", "),
            aliases.join(", "),
            conflict.join(", "),
            action
        ));
        sql
    }
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
        (
            "varchar" | "text" | "json" | "jsonb" | "uuid" | "xml" | "inet" | "cidr" | "macaddr"
            | "macaddr8" | "money" | "citext" | "ltree" | "hstore" | "tsvector" | "int4range"
            | "int8range" | "numrange" | "tsrange" | "tstzrange" | "daterange",
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
    pub upserts: Vec<Cow<'a, [Value]>>,
    pub deletes: Vec<&'a ChangeEvent>,
    first: &'a ChangeEvent,
}

impl<'a> Group<'a> {
    pub fn first_event(&self) -> &'a ChangeEvent {
        self.first
    }
}

/// Reduces a truncate-free run of events to the last change per key and groups the result.
pub fn reduce(events: &[ChangeEvent]) -> Vec<Group<'_>> {
    // Last state per key, with its row merged over earlier upserts' values where it was unavailable.
    let mut last: AHashMap<Vec<Option<String>>, (usize, Option<Cow<'_, [Value]>>)> =
        AHashMap::new();
    for (i, e) in events.iter().enumerate() {
        let key: Vec<Option<String>> = e
            .key
            .iter()
            .map(|v| to_text(v, &ColumnType::Text))
            .collect();
        let row = match e.op {
            Op::Upsert => {
                let row = e.row.as_deref().unwrap_or_default();
                let merged = match last.get(&key) {
                    Some((_, Some(prev)))
                        if row.contains(&Value::Unavailable) && prev.len() == row.len() =>
                    {
                        let mut m = row.to_vec();
                        for (v, p) in m.iter_mut().zip(prev.iter()) {
                            if *v == Value::Unavailable {
                                *v = p.clone();
                            }
                        }
                        Cow::Owned(m)
                    }
                    _ => Cow::Borrowed(row),
                };
                Some(merged)
            }
            _ => None,
        };
        last.insert(key, (i, row));
    }
    let mut finals: Vec<(usize, Option<Cow<'_, [Value]>>)> = last.into_values().collect();
    finals.sort_by_key(|(i, _)| *i);

    let mut groups: Vec<Group<'_>> = Vec::new();
    for (i, row) in finals {
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
                groups.push(Group {
                    schema: &e.schema,
                    unavailable: Vec::new(),
                    upserts: Vec::new(),
                    deletes: Vec::new(),
                    first: e,
                });
                groups.last_mut().expect("just pushed")
            }
        };
        match row {
            Some(r) => {
                if g.upserts.is_empty() {
                    g.unavailable = unavailable;
                }
                g.upserts.push(r);
            }
            None => g.deletes.push(e),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use ripple_sink::{Origin, TableRef, Version};

    fn schema() -> Arc<TableSchema> {
        let col = |name: &str, ty| Column {
            name: name.into(),
            ty,
            nullable: true,
            source_type: None,
        };
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
        assert_eq!(groups[0].upserts[0][1], Value::Text("c".into()));
    }

    #[test]
    fn unavailable_takes_the_earlier_value_in_the_batch() {
        let s = schema();
        let events = vec![
            ev(&s, Op::Upsert, 1, Some(Value::Text("big".into()))),
            ev(&s, Op::Upsert, 1, Some(Value::Unavailable)),
        ];
        let groups = reduce(&events);
        assert_eq!(groups[0].upserts[0][1], Value::Text("big".into()));
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
            casts: vec!["integer".into(), "text".into()],
            types: s.columns.iter().map(|c| c.ty.clone()).collect(),
            names: vec!["id".into(), "note".into()],
            key: vec![0],
            statements: Mutex::default(),
        };
        let sql = plan.build_statement(&[false, true], true, true);
        assert!(
            sql.starts_with(
                "WITH deleted AS (DELETE FROM \"public\".\"t\" t USING unnest($1::text[]) AS d(k0)"
            ),
            "{sql}"
        );
        assert!(sql.contains("unnest($2::text[], $3::text[])"), "{sql}");
        assert!(sql.ends_with("DO NOTHING"), "{sql}");
        let sql = plan.build_statement(&[false, false], false, true);
        assert!(
            sql.ends_with("DO UPDATE SET \"note\" = EXCLUDED.\"note\""),
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
