//! Reading a PostgreSQL database back for verify: its tables, columns and keys from the catalog, and
//! a table's rows as (key texts, md5 of the values' texts) streamed in an agreed key order.

use super::VerifyError;
use super::compare::{
    Checksum, Column, Key, KeyOrder, KeyRange, KeyType, KeyedRow, RowStore, RowStream, Scan,
    SourceTable, TableName, is_timetz,
};
use super::quote_ident;
use crate::config::mask_url;
use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection, PgPool, Row};
use std::time::Duration;

/// Session settings that decide how values print as text. Both sides must print identically, and a
/// server's or role's defaults (a `TimeZone` of Europe/Paris, `IntervalStyle` iso_8601, a German
/// `lc_monetary`) would otherwise make equal values look different. Parallel workers are off:
/// verify runs its own queries side by side, and workers only add overhead to them.
const SESSION_SETTINGS: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
     SET lc_monetary = 'C'; SET default_transaction_read_only = on; \
     SET max_parallel_workers_per_gather = 0";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where to connect and what to call it in messages.
pub(crate) struct PgAddress<'a> {
    /// "the source database", "sink \"replica\"".
    pub what: String,
    /// The config section: `source`, `sinks.replica`.
    pub key: String,
    /// For messages, masked before use.
    pub url: &'a str,
    /// Built from the section's keys (password, `sslmode`, `tls`).
    pub options: Result<PgConnectOptions, ripple_sink::ConfigError>,
}

pub(crate) struct PgStore {
    pool: PgPool,
    /// "the source database (postgres://user:****@host/db)".
    label: String,
    masked_url: String,
}

fn query_error(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> VerifyError {
    let what = what.into();
    move |error| VerifyError::Query { what, error }
}

impl PgStore {
    pub async fn connect(address: PgAddress<'_>) -> Result<Self, VerifyError> {
        let masked_url = mask_url(address.url);
        let options = address.options.map_err(|e| VerifyError::Config {
            key: e.key,
            message: e.message,
        })?;
        // A streamed read lasts as long as the comparison reading it: not a slow statement.
        let options = options
            .application_name("ripple-verify")
            .log_slow_statements(tracing::log::LevelFilter::Debug, Duration::from_secs(3600));
        let connect_error = |error| VerifyError::Connect {
            what: address.what.clone(),
            key: format!("{}.url", address.key),
            url: masked_url.clone(),
            error,
        };
        // One direct attempt first: the pool retries a refused connection until its acquire timeout,
        // which would turn a wrong port into a silent 15-second wait.
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| connect_error(sqlx::Error::PoolTimedOut))?
            .map_err(connect_error)?;
        probe.close().await.ok();
        let pool = PgPoolOptions::new()
            // One connection streams rows; the other answers catalog questions meanwhile.
            // Two segment checksums at once while a third connection answers catalog questions,
            // or one connection streaming rows while another reads by key.
            .max_connections(3)
            .acquire_timeout(CONNECT_TIMEOUT)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql(SESSION_SETTINGS).execute(conn).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        Ok(Self {
            pool,
            label: format!("{} ({masked_url})", address.what),
            masked_url,
        })
    }

    pub fn url(&self) -> &str {
        &self.masked_url
    }

    /// User tables, without partitions (their parent covers their rows), system schemas and
    /// Ripple's own `_ripple*` schemas.
    pub async fn list_tables(&self) -> Result<Vec<TableName>, VerifyError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT n.nspname::text, c.relname::text \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)' \
               AND left(n.nspname::text, 7) <> '_ripple' \
             ORDER BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(format!("listing the tables of {}", self.label)))?;
        Ok(rows
            .into_iter()
            .map(|(schema, name)| TableName { schema, name })
            .collect())
    }

    async fn table_oid(&self, table: &TableName) -> Result<Option<i64>, VerifyError> {
        sqlx::query_scalar(
            "SELECT c.oid::int8 FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
        )
        .bind(&table.schema)
        .bind(&table.name)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error(format!("looking up {table} in {}", self.label)))
    }

    /// Columns in order, with whether each is generated.
    async fn catalog_columns(
        &self,
        oid: i64,
        table: &TableName,
    ) -> Result<Vec<(Column, bool)>, VerifyError> {
        // A domain reads as its base type (a domain over integer compares as a number), and so
        // does an array of a domain's elements; domains over domains are followed to the bottom.
        let rows: Vec<(String, String, i64, bool)> = sqlx::query_as(
            "WITH RECURSIVE chain(col, oid, base, typmod, typtype, depth) AS ( \
               SELECT a.attnum, t.oid, t.typbasetype, t.typtypmod, t.typtype, 0 \
               FROM pg_catalog.pg_attribute a \
               JOIN pg_catalog.pg_type t0 ON t0.oid = a.atttypid \
               JOIN pg_catalog.pg_type t ON t.oid = CASE WHEN t0.typelem <> 0 AND t0.typcategory = 'A' \
                                                         THEN t0.typelem ELSE t0.oid END \
               WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped AND t.typtype = 'd' \
               UNION ALL \
               SELECT c.col, p.oid, p.typbasetype, p.typtypmod, p.typtype, c.depth + 1 \
               FROM chain c JOIN pg_catalog.pg_type p ON p.oid = c.base WHERE c.typtype = 'd'), \
             resolved AS ( \
               SELECT DISTINCT ON (b.col) b.col, \
                      format_type(b.oid, (SELECT d.typmod FROM chain d WHERE d.col = b.col AND d.typtype = 'd' \
                                          ORDER BY d.depth DESC LIMIT 1)) AS name, b.oid \
               FROM chain b WHERE b.typtype <> 'd' ORDER BY b.col, b.depth DESC) \
             SELECT a.attname::text, \
                    CASE WHEN r.col IS NULL THEN format_type(a.atttypid, a.atttypmod) \
                         WHEN t0.typcategory = 'A' THEN r.name || '[]' ELSE r.name END, \
                    CASE WHEN r.col IS NULL OR t0.typcategory = 'A' THEN a.atttypid ELSE r.oid END::int8, \
                    a.attgenerated <> '' \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_type t0 ON t0.oid = a.atttypid \
             LEFT JOIN resolved r ON r.col = a.attnum \
             WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
        )
        .bind(oid)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(format!(
            "reading the columns of {table} in {}",
            self.label
        )))?;
        Ok(rows
            .into_iter()
            .map(|(name, type_name, type_oid, generated)| {
                let key_type = match type_oid {
                    20 | 21 | 23 => KeyType::Integer,
                    2950 => KeyType::Uuid,
                    _ => KeyType::Other,
                };
                (
                    Column {
                        name,
                        type_name,
                        key_type,
                    },
                    generated,
                )
            })
            .collect())
    }

    /// The table as verify compares it, or `None` when there is no such table. Generated columns
    /// are left out: logical decoding does not publish them, so a replica never receives them.
    pub async fn describe(&self, table: &TableName) -> Result<Option<SourceTable>, VerifyError> {
        let Some(oid) = self.table_oid(table).await? else {
            return Ok(None);
        };
        let columns = self
            .catalog_columns(oid, table)
            .await?
            .into_iter()
            .filter(|(c, generated)| !generated && !c.name.starts_with("_ripple"))
            .map(|(c, _)| c)
            .collect();
        let key: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_catalog.pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1::oid AND i.indisprimary ORDER BY k.ord",
        )
        .bind(oid)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(format!(
            "reading the primary key of {table} in {}",
            self.label
        )))?;
        Ok(Some(SourceTable {
            name: table.clone(),
            columns,
            key,
        }))
    }
}

/// The scan as one query: key texts, then the fingerprint, sorted as `scan.order` says. NULLs sort
/// last, as in an ascending primary-key index, so a typed key order can stream straight from the
/// index without a sort (a source key is never NULL; a replica without a key may have some). ORDER
/// BY names the table's columns
/// through an alias: a bare name would pick the output column of that name, i.e. the key's text,
/// and sort integers as text.
pub(crate) fn rows_sql(scan: &Scan<'_>) -> String {
    let column = |name: &str| format!("t.{}", quote_ident(name));
    let texts = |values: &[String]| row_text_sql(values, scan.utc_times);
    if scan.by_row {
        let row = texts(scan.values.unwrap_or_default());
        return format!(
            "SELECT {row} AS k0, NULL::text AS fingerprint FROM {} AS t ORDER BY {row} COLLATE \"C\"",
            scan.table.sql()
        );
    }
    let mut select: Vec<String> = scan
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{}::text AS k{i}", column(k)))
        .collect();
    select.push(match scan.values {
        Some(values) => format!("md5({}) AS fingerprint", texts(values)),
        None => "NULL::text AS fingerprint".into(),
    });
    let order: Vec<String> = scan
        .key
        .iter()
        .zip(scan.order)
        .map(|(k, how)| match how {
            KeyOrder::Integer | KeyOrder::Uuid => column(k),
            KeyOrder::Text => format!("{}::text COLLATE \"C\"", column(k)),
        })
        .collect();
    format!(
        "SELECT {} FROM {} AS t{} ORDER BY {}",
        select.join(", "),
        scan.table.sql(),
        range_sql(scan),
        order.join(", ")
    )
}

/// ` WHERE <key> BETWEEN lo AND hi` for a scan of a key range (the values are integers).
fn range_sql(scan: &Scan<'_>) -> String {
    match (scan.range, scan.key.first()) {
        (Some(KeyRange::Between(lo, hi)), Some(k)) => {
            format!(" WHERE t.{} BETWEEN {lo} AND {hi}", quote_ident(k))
        }
        (Some(KeyRange::Null), Some(k)) => format!(" WHERE t.{} IS NULL", quote_ident(k)),
        _ => String::new(),
    }
}

/// The record text of `values` (of table alias `t`) whose md5 is a row's fingerprint; `timetz`
/// columns among `utc_times` in UTC.
fn row_text_sql(values: &[String], utc_times: &[String]) -> String {
    let texts: Vec<String> = values
        .iter()
        .map(|v| {
            let column = format!("t.{}", quote_ident(v));
            if utc_times.contains(v) {
                format!("({column} AT TIME ZONE 'UTC')::text")
            } else {
                format!("{column}::text")
            }
        })
        .collect();
    format!("ROW({})::text", texts.join(", "))
}

/// A table to read rows of by key: which columns are the key, with the types to cast key texts
/// to, and which are fingerprinted.
pub(crate) struct ByKey<'a> {
    pub table: &'a TableName,
    pub key: &'a [String],
    pub casts: &'a [String],
    pub values: &'a [String],
    pub utc_times: &'a [String],
}

impl PgStore {
    /// The fingerprint (as a merge-join scan computes it) of the row of each key, `None` where
    /// the table has no such row.
    pub async fn fingerprints_by_key(
        &self,
        by: &ByKey<'_>,
        keys: &[Key],
    ) -> Result<Vec<Option<String>>, VerifyError> {
        let arrays: Vec<String> = (0..by.key.len())
            .map(|i| format!("${}::text[]", i + 1))
            .collect();
        let aliases: Vec<String> = (0..by.key.len()).map(|i| format!("k{i}")).collect();
        let joins: Vec<String> = by
            .key
            .iter()
            .zip(by.casts)
            .enumerate()
            .map(|(i, (k, cast))| format!("t.{} = u.k{i}::{cast}", quote_ident(k)))
            .collect();
        let sql = format!(
            "SELECT u.i::int8, md5({}) FROM unnest({}) WITH ORDINALITY AS u({}, i) JOIN {} AS t ON {}",
            row_text_sql(by.values, by.utc_times),
            arrays.join(", "),
            aliases.join(", "),
            by.table.sql(),
            joins.join(" AND ")
        );
        let mut query = sqlx::query_as::<_, (i64, Option<String>)>(AssertSqlSafe(sql));
        for i in 0..by.key.len() {
            query = query.bind(keys.iter().map(|k| k[i].clone()).collect::<Vec<_>>());
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(query_error(format!(
                "reading rows of {} by key from {}",
                by.table, self.label
            )))?;
        let mut out = vec![None; keys.len()];
        for (at, fingerprint) in rows {
            if let Some(slot) = out.get_mut((at as usize).wrapping_sub(1)) {
                *slot = fingerprint;
            }
        }
        Ok(out)
    }
}

fn decode(row: &PgRow, keys: usize) -> Result<KeyedRow, sqlx::Error> {
    let mut key = Vec::with_capacity(keys);
    for i in 0..keys {
        key.push(row.try_get::<Option<String>, _>(i)?);
    }
    Ok(KeyedRow {
        key,
        fingerprint: row.try_get(keys)?,
    })
}

impl PgStore {
    /// The rows of `table` with these keys (key texts in key order), each column in `text_rows`'
    /// form; `None` where the source has no such row. Keys are cast to the key columns' types, so
    /// the primary key's index finds them.
    pub async fn rows_by_key(
        &self,
        table: &SourceTable,
        keys: &[Key],
    ) -> Result<Vec<Option<Vec<Option<String>>>>, VerifyError> {
        let key_columns: Vec<&Column> = table
            .key
            .iter()
            .filter_map(|k| table.columns.iter().find(|c| &c.name == k))
            .collect();
        let select: Vec<String> = table
            .columns
            .iter()
            .map(|c| select_expression(&format!("t.{}", quote_ident(&c.name)), &c.type_name))
            .collect();
        let arrays: Vec<String> = (0..key_columns.len())
            .map(|i| format!("${}::text[]", i + 1))
            .collect();
        let aliases: Vec<String> = (0..key_columns.len()).map(|i| format!("k{i}")).collect();
        let joins: Vec<String> = key_columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("t.{} = u.k{i}::{}", quote_ident(&c.name), c.type_name))
            .collect();
        let sql = format!(
            "SELECT u.i::int8, {} FROM unnest({}) WITH ORDINALITY AS u({}, i) \
             JOIN {} AS t ON {}",
            if select.is_empty() {
                "1".to_string()
            } else {
                select.join(", ")
            },
            arrays.join(", "),
            aliases.join(", "),
            table.name.sql(),
            joins.join(" AND ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for i in 0..key_columns.len() {
            query = query.bind(keys.iter().map(|k| k[i].clone()).collect::<Vec<_>>());
        }
        let what = format!("reading rows of {} by key from {}", table.name, self.label);
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(query_error(what.clone()))?;
        let mut out = vec![None; keys.len()];
        for row in rows {
            let texts = (1..=table.columns.len())
                .map(|i| row.try_get::<Option<String>, _>(i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(query_error(what.clone()))?;
            let at: i64 = row.try_get(0).map_err(query_error(what.clone()))?;
            if let Some(slot) = out.get_mut((at as usize).wrapping_sub(1)) {
                *slot = Some(texts);
            }
        }
        Ok(out)
    }

    /// The planner's estimate of the table's rows (0 when it has none yet): enough to size
    /// buckets and a progress bar without a count.
    pub async fn estimate_rows(&self, table: &TableName) -> Result<u64, VerifyError> {
        let estimate: Option<f64> = sqlx::query_scalar(
            "SELECT sum(greatest(c.reltuples, 0))::float8 FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_catalog.pg_inherits i ON i.inhrelid = c.oid \
             LEFT JOIN pg_catalog.pg_class p ON p.oid = i.inhparent \
             WHERE n.nspname = $1 AND (c.relname = $2 OR p.relname = $2)",
        )
        .bind(&table.schema)
        .bind(&table.name)
        .fetch_one(&self.pool)
        .await
        .map_err(query_error(format!(
            "estimating the rows of {table} in {}",
            self.label
        )))?;
        Ok(estimate.unwrap_or(0.0) as u64)
    }

    /// Every row of `table`, each column in the text form read-back verification parses (see
    /// `select_expression`), in no particular order.
    pub fn text_rows<'a>(
        &'a self,
        table: &'a SourceTable,
    ) -> BoxStream<'a, Result<Vec<Option<String>>, VerifyError>> {
        self.text_rows_sorted(table, false)
    }

    /// `text_rows` in ascending primary-key order, each key column by its own type's order.
    pub fn text_rows_in_key_order<'a>(
        &'a self,
        table: &'a SourceTable,
    ) -> BoxStream<'a, Result<Vec<Option<String>>, VerifyError>> {
        self.text_rows_sorted(table, true)
    }

    fn text_rows_sorted<'a>(
        &'a self,
        table: &'a SourceTable,
        sorted: bool,
    ) -> BoxStream<'a, Result<Vec<Option<String>>, VerifyError>> {
        let select: Vec<String> = table
            .columns
            .iter()
            .map(|c| select_expression(&format!("t.{}", quote_ident(&c.name)), &c.type_name))
            .collect();
        let order = if sorted && !table.key.is_empty() {
            let keys: Vec<String> = table
                .key
                .iter()
                .map(|k| format!("t.{}", quote_ident(k)))
                .collect();
            format!(" ORDER BY {}", keys.join(", "))
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT {} FROM {} AS t{order}",
            if select.is_empty() {
                "1".to_string()
            } else {
                select.join(", ")
            },
            table.name.sql()
        );
        let n = table.columns.len();
        let what = format!("reading {} from {}", table.name, self.label);
        sqlx::query(AssertSqlSafe(sql))
            .fetch(&self.pool)
            .map(move |row| {
                row.and_then(|row| {
                    (0..n)
                        .map(|i| row.try_get::<Option<String>, _>(i))
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(|error| VerifyError::Query {
                    what: what.clone(),
                    error,
                })
            })
            .boxed()
    }
}

impl RowStore for PgStore {
    fn label(&self) -> &str {
        &self.label
    }

    async fn columns(&self, table: &TableName) -> Result<Option<Vec<Column>>, VerifyError> {
        let Some(oid) = self.table_oid(table).await? else {
            return Ok(None);
        };
        Ok(Some(
            self.catalog_columns(oid, table)
                .await?
                .into_iter()
                .map(|(c, _)| c)
                .collect(),
        ))
    }

    fn rows<'a>(&'a self, scan: Scan<'a>) -> RowStream<'a> {
        let keys = if scan.by_row { 1 } else { scan.key.len() };
        let what = format!("reading {} from {}", scan.table, self.label);
        sqlx::query(AssertSqlSafe(rows_sql(&scan)))
            .fetch(&self.pool)
            .map(move |row| {
                row.and_then(|row| decode(&row, keys))
                    .map_err(|error| VerifyError::Query {
                        what: what.clone(),
                        error,
                    })
            })
            .boxed()
    }

    async fn key_bounds(
        &self,
        table: &TableName,
        key: &str,
    ) -> Result<Option<(i64, i64)>, VerifyError> {
        let k = quote_ident(key);
        let (lo, hi): (Option<i64>, Option<i64>) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT min({k})::int8, max({k})::int8 FROM {}",
            table.sql()
        )))
        .fetch_one(&self.pool)
        .await
        .map_err(query_error(format!(
            "reading the key range of {table} in {}",
            self.label
        )))?;
        Ok(lo.zip(hi))
    }

    async fn checksum(&self, scan: Scan<'_>) -> Result<Checksum, VerifyError> {
        // hashtextextended is PostgreSQL's own 64-bit text hash, the one hash partitioning relies
        // on staying the same across versions; two and a half times cheaper than md5 here. The
        // sum is numeric, so exact at any size.
        let sql = format!(
            "SELECT count(*)::int8, coalesce(sum(hashtextextended({}, 0)), 0)::text FROM {} AS t{}",
            row_text_sql(scan.values.unwrap_or_default(), scan.utc_times),
            scan.table.sql(),
            range_sql(&scan)
        );
        let (rows, sum): (i64, String) = sqlx::query_as(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .map_err(query_error(format!(
                "checksumming a segment of {} in {}",
                scan.table, self.label
            )))?;
        Ok(Checksum {
            rows: rows as u64,
            sum,
        })
    }

    async fn count(&self, table: &TableName) -> Result<u64, VerifyError> {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            table.sql()
        )))
        .fetch_one(&self.pool)
        .await
        .map_err(query_error(format!("counting {table} in {}", self.label)))?;
        Ok(n as u64)
    }
}

/// The text form verify reads a column in: PostgreSQL's output function (blank-padded `char(n)`
/// keeps its padding, as Debezium sends it), and JSON for arrays.
pub(crate) fn select_expression(column: &str, type_name: &str) -> String {
    if type_name.ends_with("[]") {
        format!("to_json({column})::text")
    } else if type_name == "hstore" {
        // Debezium sends an hstore as a JSON object (or a Connect map, the same JSON).
        format!("hstore_to_json({column})::text")
    } else if type_name == "money" {
        // Debezium sends money as a decimal, without the currency symbol.
        format!("{column}::numeric::text")
    } else if type_name.starts_with("interval") {
        // Debezium's interval.handling.mode=string form: every part present, seconds trimmed.
        format!(
            "CASE WHEN {column} IS NULL THEN NULL ELSE format('P%sY%sM%sDT%sH%sM%sS', \
             extract(year from {column})::int, extract(month from {column})::int, \
             extract(day from {column})::int, extract(hour from {column})::int, \
             extract(minute from {column})::int, trim_scale(extract(second from {column}))) END"
        )
    } else if is_timetz(type_name) {
        // Debezium's ZonedTime: the time of day in UTC, fraction without trailing zeros, `Z`.
        format!(
            "CASE WHEN {column} IS NULL THEN NULL ELSE \
             rtrim(rtrim(to_char(({column} AT TIME ZONE 'UTC')::time, 'HH24:MI:SS.US'), '0'), '.') || 'Z' END"
        )
    } else {
        format!("CASE WHEN {column} IS NULL THEN NULL ELSE concat({column}) END")
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn rows_sql_quotes_names_and_orders_by_the_agreed_key_order() {
        let table = TableName {
            schema: "public".into(),
            name: "Odd \"t\" x".into(),
        };
        let key = ["Id".to_string(), "part".to_string()];
        let values = ["Id".to_string(), "part".to_string(), "my col".to_string()];
        let sql = rows_sql(&Scan {
            table: &table,
            key: &key,
            order: &[KeyOrder::Integer, KeyOrder::Text],
            values: Some(&values),
            utc_times: &[],
            by_row: false,
            range: None,
        });
        assert_eq!(
            sql,
            "SELECT t.\"Id\"::text AS k0, t.\"part\"::text AS k1, \
             md5(ROW(t.\"Id\"::text, t.\"part\"::text, t.\"my col\"::text)::text) AS fingerprint \
             FROM \"public\".\"Odd \"\"t\"\" x\" AS t \
             ORDER BY t.\"Id\", t.\"part\"::text COLLATE \"C\""
        );
        let keys_only = rows_sql(&Scan {
            table: &table,
            key: &key[..1],
            order: &[KeyOrder::Text],
            values: None,
            utc_times: &[],
            by_row: false,
            range: None,
        });
        assert!(
            keys_only.starts_with("SELECT t.\"Id\"::text AS k0, NULL::text AS fingerprint FROM"),
            "{keys_only}"
        );
    }
}
