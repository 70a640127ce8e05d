//! Reading a PostgreSQL table back for `verify`: its columns and key from the catalog, and its rows
//! as (key, hash of the values' text) in a collation-independent key order.

use super::{TableReport, VerifyError, masked, quote_ident};
use futures::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Row};
use std::cmp::Ordering;
use std::str::FromStr;

pub struct Database {
    pool: PgPool,
}

fn query_error(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> VerifyError {
    let what = what.into();
    move |source| VerifyError::Query { what, source }
}

impl Database {
    pub async fn connect(
        what: &str,
        url: &str,
        password_env: Option<&str>,
        key: &str,
    ) -> Result<Self, VerifyError> {
        let mut options = PgConnectOptions::from_str(url).map_err(|e| VerifyError::Config {
            key: format!("{key}.url"),
            message: format!("is not a postgres:// URL: {e}"),
        })?;
        if let Some(var) = password_env {
            let password = std::env::var(var).map_err(|_| VerifyError::Config {
                key: format!("{key}.password_env"),
                message: format!("names environment variable {var}, which is not set"),
            })?;
            options = options.password(&password);
        }
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options.application_name("ripple-verify"))
            .await
            .map_err(|source| VerifyError::Connect {
                what: what.into(),
                url: masked(url),
                source,
            })?;
        Ok(Self { pool })
    }

    /// User tables: everything outside the system schemas and Ripple's own bookkeeping.
    pub async fn tables(&self) -> Result<Vec<(String, String)>, VerifyError> {
        let rows = sqlx::query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT LIKE '\\_ripple%' ORDER BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("list source tables"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn has_table(&self, (schema, table): &(String, String)) -> Result<bool, VerifyError> {
        Ok(!self.columns(schema, table).await?.is_empty())
    }

    /// Column names in order, and which of them form the primary key (in key order).
    async fn columns(&self, schema: &str, table: &str) -> Result<Vec<String>, VerifyError> {
        sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        )
        .bind(schema)
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(format!("read the columns of {schema}.{table}")))
    }

    async fn primary_key(&self, schema: &str, table: &str) -> Result<Vec<String>, VerifyError> {
        sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
             WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary ORDER BY k.ord",
        )
        .bind(schema)
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(format!(
            "read the primary key of {schema}.{table}"
        )))
    }

    /// Rows as (key texts, md5 of the compared columns' texts), ordered by the key texts under the
    /// "C" collation: byte order, the same on both sides and the same as Rust's `String` order.
    fn rows_sql(schema: &str, table: &str, key: &[String], columns: &[String]) -> String {
        let keys: Vec<String> = key
            .iter()
            .map(|k| format!("{}::text", quote_ident(k)))
            .collect();
        let values: Vec<String> = columns
            .iter()
            .map(|c| format!("{}::text", quote_ident(c)))
            .collect();
        let order: Vec<String> = keys.iter().map(|k| format!("{k} COLLATE \"C\"")).collect();
        format!(
            "SELECT ARRAY[{}], md5(ROW({})::text) FROM {}.{} ORDER BY {}",
            keys.join(", "),
            values.join(", "),
            quote_ident(schema),
            quote_ident(table),
            order.join(", ")
        )
    }
}

type KeyedHash = (Vec<String>, String);

pub async fn compare(
    source: &Database,
    sink: &Database,
    (schema, table): (&str, &str),
    (target_schema, target_table): (&str, &str),
    samples: usize,
) -> Result<TableReport, VerifyError> {
    let mut report = TableReport {
        table: format!("{schema}.{table}"),
        target: format!("{target_schema}.{target_table}"),
        ..Default::default()
    };
    let columns: Vec<String> = source
        .columns(schema, table)
        .await?
        .into_iter()
        .filter(|c| !c.starts_with("_ripple"))
        .collect();
    let key = source.primary_key(schema, table).await?;
    if columns.is_empty() || key.is_empty() {
        return Err(VerifyError::Query {
            what: format!("source table {schema}.{table}"),
            source: sqlx::Error::Protocol("does not exist or has no primary key".into()),
        });
    }
    let sink_columns = sink.columns(target_schema, target_table).await?;
    if sink_columns.is_empty() {
        report.missing_table = true;
        report.source_rows = count(source, schema, table).await?;
        report.missing = report.source_rows;
        return Ok(report);
    }
    report.missing_columns = columns
        .iter()
        .filter(|c| !sink_columns.contains(c))
        .cloned()
        .collect();
    if !report.missing_columns.is_empty() {
        return Ok(report);
    }

    let source_sql = Database::rows_sql(schema, table, &key, &columns);
    let sink_sql = Database::rows_sql(target_schema, target_table, &key, &columns);
    let mut left = sqlx::query_as::<_, KeyedHash>(AssertSqlSafe(source_sql)).fetch(&source.pool);
    let mut right = sqlx::query_as::<_, KeyedHash>(AssertSqlSafe(sink_sql)).fetch(&sink.pool);
    let read = |what: &str| query_error(format!("read {what}"));
    let mut l = left.try_next().await.map_err(read(&report.table))?;
    let mut r = right.try_next().await.map_err(read(&report.target))?;
    loop {
        let order = match (&l, &r) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => a.0.cmp(&b.0),
        };
        match order {
            Ordering::Less => {
                let (k, _) = l.take().expect("left row");
                report.source_rows += 1;
                report.missing += 1;
                sample(&mut report.sample_missing, samples, &k);
                l = left.try_next().await.map_err(read(&report.table))?;
            }
            Ordering::Greater => {
                let (k, _) = r.take().expect("right row");
                report.sink_rows += 1;
                report.extra += 1;
                sample(&mut report.sample_extra, samples, &k);
                r = right.try_next().await.map_err(read(&report.target))?;
            }
            Ordering::Equal => {
                let (k, a) = l.take().expect("left row");
                let (_, b) = r.take().expect("right row");
                report.source_rows += 1;
                report.sink_rows += 1;
                if a == b {
                    report.matching += 1;
                } else {
                    report.different += 1;
                    sample(&mut report.sample_different, samples, &k);
                }
                l = left.try_next().await.map_err(read(&report.table))?;
                r = right.try_next().await.map_err(read(&report.target))?;
            }
        }
    }
    Ok(report)
}

fn sample(into: &mut Vec<String>, limit: usize, key: &[String]) {
    if into.len() < limit {
        into.push(key.join(", "));
    }
}

async fn count(db: &Database, schema: &str, table: &str) -> Result<u64, VerifyError> {
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {}.{}",
        quote_ident(schema),
        quote_ident(table)
    )))
    .fetch_one(&db.pool)
    .await
    .map_err(query_error(format!("count {schema}.{table}")))?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sql_quotes_and_orders_by_text_in_c_collation() {
        let sql = Database::rows_sql(
            "public",
            "Odd \"t\"",
            &["id".into()],
            &["id".into(), "timestamp".into()],
        );
        assert_eq!(
            sql,
            "SELECT ARRAY[\"id\"::text], md5(ROW(\"id\"::text, \"timestamp\"::text)::text) FROM \"public\".\"Odd \"\"t\"\"\" \
             ORDER BY \"id\"::text COLLATE \"C\""
        );
    }
}
