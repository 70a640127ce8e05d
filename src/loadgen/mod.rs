//! `ripple loadgen`: the seed workload. Creates the seed's `transactions` table (with REPLICA
//! IDENTITY FULL, the audit columns and their update triggers) and writes fake card transactions,
//! then updates of their amounts and deletes, at a chosen rate, deterministically for a seed.

mod generate;

pub use generate::{Change, Generator, Transaction};

use crate::config::mask_url;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};
use std::fmt;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// The source PostgreSQL.
    #[arg(
        long,
        env = "RIPPLE_SOURCE_URL",
        default_value = "postgres://postgres@127.0.0.1:15432/app"
    )]
    pub url: String,
    /// Table name, in schema `public`.
    #[arg(long, default_value = "transactions")]
    pub table: String,
    /// Drop the table first.
    #[arg(long)]
    pub drop: bool,
    /// Create the table, replica identity, audit columns and triggers if they are missing.
    #[arg(long)]
    pub setup: bool,
    /// Changes to write (inserts + updates + deletes + truncates).
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Changes per second; 0 writes as fast as the database takes them.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Same seed and same starting table: same changes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Percentages of inserts, updates and deletes.
    #[arg(long, default_value = "60,30,10", value_parser = parse_mix)]
    pub mix: Mix,
    /// Truncate the table once, after this many changes.
    #[arg(long)]
    pub truncate_after: Option<u64>,
    /// Changes per source transaction.
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
}

/// Percentages of inserts, updates and deletes; they add up to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub inserts: u32,
    pub updates: u32,
    pub deletes: u32,
}

pub fn parse_mix(text: &str) -> Result<Mix, String> {
    let parts: Vec<u32> = text
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<u32>()
                .map_err(|_| format!("{p:?} is not a whole number"))
        })
        .collect::<Result<_, _>>()?;
    match parts.as_slice() {
        [i, u, d] if i + u + d == 100 => Ok(Mix {
            inserts: *i,
            updates: *u,
            deletes: *d,
        }),
        [_, _, _] => Err("the three percentages must add up to 100".into()),
        _ => Err("expected three percentages: inserts,updates,deletes (e.g. 60,30,10)".into()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("cannot connect to the source at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("{doing}: {source}")]
    Sql { doing: String, source: sqlx::Error },
    #[error("table {0:?} does not exist: run with --setup first")]
    NoTable(String),
    #[error("--batch must be at least 1")]
    Batch,
}

fn sql(doing: impl Into<String>) -> impl FnOnce(sqlx::Error) -> LoadgenError {
    let doing = doing.into();
    move |source| LoadgenError::Sql { doing, source }
}

/// What a run wrote.
#[derive(Debug, Default, Clone)]
pub struct LoadgenSummary {
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub truncates: u64,
    pub elapsed: Duration,
}

impl fmt::Display for LoadgenSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.inserts + self.updates + self.deletes + self.truncates;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "loadgen: {total} changes (inserts {}, updates {}, deletes {}, truncates {}) in {secs:.1} s, {:.0} changes/s",
            self.inserts,
            self.updates,
            self.deletes,
            self.truncates,
            total as f64 / secs
        )
    }
}

/// The seed's DDL for `table`, in order. Idempotent, so `--setup` can run against an existing table.
pub fn create_table_sql(table: &str) -> Vec<String> {
    let t = crate::verify::quote_ident(table);
    let f1 = crate::verify::quote_ident(&format!("{table}_record_change_user"));
    let f2 = crate::verify::quote_ident(&format!("{table}_record_changed_columns"));
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS public.{t} (transaction_id varchar(255) PRIMARY KEY, user_id varchar(255), \
             \"timestamp\" timestamp, amount decimal, currency varchar(255), city varchar(255), country varchar(255), \
             merchant_name varchar(255), payment_method varchar(255), ip_address varchar(255), \
             voucher_code varchar(255), affiliate_id varchar(255))"
        ),
        format!("ALTER TABLE public.{t} REPLICA IDENTITY FULL"),
        format!("ALTER TABLE public.{t} ADD COLUMN IF NOT EXISTS modified_by TEXT"),
        format!("ALTER TABLE public.{t} ADD COLUMN IF NOT EXISTS modified_at TIMESTAMP"),
        format!("ALTER TABLE public.{t} ADD COLUMN IF NOT EXISTS change_info JSONB"),
        format!(
            "CREATE OR REPLACE FUNCTION public.{f1}() RETURNS TRIGGER AS $$ \
             BEGIN NEW.modified_by := current_user; NEW.modified_at := CURRENT_TIMESTAMP; RETURN NEW; END; \
             $$ LANGUAGE plpgsql"
        ),
        format!("DROP TRIGGER IF EXISTS trigger_record_user_update ON public.{t}"),
        format!(
            "CREATE TRIGGER trigger_record_user_update BEFORE UPDATE ON public.{t} FOR EACH ROW EXECUTE FUNCTION public.{f1}()"
        ),
        format!(
            "CREATE OR REPLACE FUNCTION public.{f2}() RETURNS TRIGGER AS $$ \
             DECLARE change_details JSONB; \
             BEGIN \
               change_details := '{{}}'::JSONB; \
               IF NEW.amount IS DISTINCT FROM OLD.amount THEN \
                 change_details := jsonb_insert(change_details, '{{amount}}', jsonb_build_object('old', OLD.amount, 'new', NEW.amount)); \
               END IF; \
               change_details := change_details || jsonb_build_object('modified_by', current_user, 'modified_at', now()); \
               NEW.change_info := change_details; \
               RETURN NEW; \
             END; $$ LANGUAGE plpgsql"
        ),
        format!("DROP TRIGGER IF EXISTS trigger_record_change_info ON public.{t}"),
        format!(
            "CREATE TRIGGER trigger_record_change_info BEFORE UPDATE ON public.{t} FOR EACH ROW EXECUTE FUNCTION public.{f2}()"
        ),
    ]
}

pub async fn run(args: &LoadgenArgs) -> Result<LoadgenSummary, LoadgenError> {
    if args.batch == 0 {
        return Err(LoadgenError::Batch);
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.url)
        .await
        .map_err(|source| LoadgenError::Connect {
            url: mask_url(&args.url),
            source,
        })?;
    let t = crate::verify::quote_ident(&args.table);
    if args.drop {
        exec(
            &pool,
            &format!("DROP TABLE IF EXISTS public.{t}"),
            "drop table",
        )
        .await?;
    }
    if args.setup {
        for stmt in create_table_sql(&args.table) {
            exec(&pool, &stmt, "create the seed table").await?;
        }
    }
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("public.{t}"))
        .fetch_one(&pool)
        .await
        .map_err(sql("look up the table"))?;
    if !exists {
        return Err(LoadgenError::NoTable(args.table.clone()));
    }
    let live: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT transaction_id FROM public.{t} ORDER BY transaction_id"
    )))
    .fetch_all(&pool)
    .await
    .map_err(sql("read existing keys"))?;

    let mut generator = Generator::new(args.seed, args.mix, live);
    let mut summary = LoadgenSummary::default();
    let started = Instant::now();
    let mut written = 0u64;
    let mut truncated = false;
    while written < args.count {
        let size = args.batch.min(args.count - written);
        let mut changes = Vec::with_capacity(size as usize);
        for _ in 0..size {
            if !truncated
                && args
                    .truncate_after
                    .is_some_and(|n| written + changes.len() as u64 >= n)
            {
                truncated = true;
                changes.push(generator.truncate());
            } else {
                changes.push(generator.next_change());
            }
        }
        write_batch(&pool, &t, &changes, &mut summary).await?;
        written += size;
        if args.rate > 0 {
            // Pace whole batches against the wall clock, so the rate holds on average.
            let due = Duration::from_secs_f64(written as f64 / args.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        if written % 10_000 < size {
            tracing::info!(written, "loadgen progress");
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

async fn exec(pool: &PgPool, stmt: &str, doing: &str) -> Result<(), LoadgenError> {
    sqlx::raw_sql(AssertSqlSafe(stmt.to_string()))
        .execute(pool)
        .await
        .map_err(sql(doing))?;
    Ok(())
}

/// Writes one source transaction: consecutive inserts go in one multi-row statement, updates and
/// deletes one statement each, so the source sees them in the generated order.
async fn write_batch(
    pool: &PgPool,
    t: &str,
    changes: &[Change],
    summary: &mut LoadgenSummary,
) -> Result<(), LoadgenError> {
    let mut tx = pool.begin().await.map_err(sql("begin"))?;
    let mut i = 0;
    while i < changes.len() {
        match &changes[i] {
            Change::Insert(_) => {
                let run: Vec<&Transaction> = changes[i..]
                    .iter()
                    .map_while(|c| match c {
                        Change::Insert(t) => Some(t),
                        _ => None,
                    })
                    .collect();
                insert_rows(&mut tx, t, &run).await?;
                summary.inserts += run.len() as u64;
                i += run.len();
                continue;
            }
            Change::Update { id, amount } => {
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE public.{t} SET amount = $2::numeric WHERE transaction_id = $1"
                )))
                .bind(id)
                .bind(amount)
                .execute(&mut *tx)
                .await
                .map_err(sql("update"))?;
                summary.updates += 1;
            }
            Change::Delete { id } => {
                sqlx::query(AssertSqlSafe(format!(
                    "DELETE FROM public.{t} WHERE transaction_id = $1"
                )))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(sql("delete"))?;
                summary.deletes += 1;
            }
            Change::Truncate => {
                sqlx::query(AssertSqlSafe(format!("TRUNCATE public.{t}")))
                    .execute(&mut *tx)
                    .await
                    .map_err(sql("truncate"))?;
                summary.truncates += 1;
            }
        }
        i += 1;
    }
    tx.commit().await.map_err(sql("commit"))?;
    Ok(())
}

async fn insert_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    t: &str,
    rows: &[&Transaction],
) -> Result<(), LoadgenError> {
    let col = |f: fn(&Transaction) -> &str| {
        rows.iter()
            .map(|r| f(r).to_string())
            .collect::<Vec<String>>()
    };
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO public.{t} (transaction_id, user_id, \"timestamp\", amount, currency, city, country, merchant_name, \
         payment_method, ip_address, voucher_code, affiliate_id) \
         SELECT a, b, c::timestamp, d::numeric, e, f, g, h, i, j, k, l \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
                     $9::text[], $10::text[], $11::text[], $12::text[]) AS s(a, b, c, d, e, f, g, h, i, j, k, l)"
    )))
    .bind(col(|r| &r.transaction_id))
    .bind(col(|r| &r.user_id))
    .bind(col(|r| &r.timestamp))
    .bind(col(|r| &r.amount))
    .bind(col(|r| &r.currency))
    .bind(col(|r| &r.city))
    .bind(col(|r| &r.country))
    .bind(col(|r| &r.merchant_name))
    .bind(col(|r| &r.payment_method))
    .bind(col(|r| &r.ip_address))
    .bind(col(|r| &r.voucher_code))
    .bind(col(|r| &r.affiliate_id))
    .execute(&mut **tx)
    .await
    .map_err(sql("insert"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_checks_the_sum() {
        assert_eq!(
            parse_mix("60,30,10").unwrap(),
            Mix {
                inserts: 60,
                updates: 30,
                deletes: 10
            }
        );
        assert!(parse_mix("60,30,20").unwrap_err().contains("100"));
        assert!(parse_mix("a,b,c").is_err());
        assert!(parse_mix("100").is_err());
    }

    #[test]
    fn ddl_quotes_the_table_and_the_timestamp_column() {
        let ddl = create_table_sql("Weird \"name\"");
        assert!(
            ddl[0].contains("public.\"Weird \"\"name\"\"\""),
            "{}",
            ddl[0]
        );
        assert!(ddl[0].contains("\"timestamp\" timestamp"));
        assert!(
            ddl[0].contains("amount decimal,"),
            "the seed's unscaled decimal: {}",
            ddl[0]
        );
    }
}
