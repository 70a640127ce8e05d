//! Per-table plans: the replica table created or extended from the stream's schema, the column
//! types the replica really has (the casts), and the cache of plans by schema and target. The
//! statements a plan runs are `statement.rs`'s.

use crate::bookkeeping::{CHANGE_COLUMN, COMMIT_COLUMN, bookkeeping_name, lock_ddl};
use crate::config::PostgresSinkConfig;
use crate::errors::classify;
use crate::sql::{ident, qualified};
use crate::target::TargetTable;
use ahash::AHashMap;
use ripple_sink::{Column, ColumnType, SinkError, TableSchema};
// Every dynamic statement here is assembled from `ident`-quoted names and whitelisted type names;
// values are always bound.
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};
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

/// What one table of one schema version needs to be written.
pub struct Plan {
    pub(crate) target: String,
    /// The target's name in Ripple's bookkeeping tables (tombstones, truncation watermarks).
    pub table_name: String,
    /// The replica's type for each schema column (schema-qualified, without modifier): the cast target.
    pub(crate) casts: Vec<String>,
    pub(crate) types: Vec<ColumnType>,
    pub(crate) names: Vec<String>,
    pub(crate) key: Vec<usize>,
    /// By (unavailable columns, has deletes, has upserts).
    pub(crate) statements: Mutex<AHashMap<StatementShape, Arc<str>>>,
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
}

pub(crate) type StatementShape = (Vec<bool>, bool, bool);

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

#[cfg(test)]
mod tests {
    use super::*;

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
