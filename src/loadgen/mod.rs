//! `ripple loadgen`: the seed workload. Sets up the seed's `transactions` table (REPLICA IDENTITY
//! FULL, audit columns, update triggers) and writes fake card transactions, amount updates and
//! deletes into it at a chosen rate, the same changes for the same seed and starting table.

mod ddl;
mod generate;
mod write;

pub use ddl::{SETUP_LOCK_SQL, create_table_sql, drop_table_sql};
pub use generate::{Change, Generator, Transaction};

use crate::config::mask_url;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use std::fmt;
use std::time::{Duration, Instant};

/// `ripple loadgen` options; the defaults are the CLI's.
#[derive(Debug, Clone)]
pub struct LoadgenArgs {
    /// The source PostgreSQL.
    pub url: String,
    /// Table name, in schema `public`.
    pub table: String,
    /// Drop the table first, for a fresh start.
    pub drop: bool,
    /// Create the table, replica identity, audit columns and triggers where missing.
    pub setup: bool,
    /// Changes to write (inserts + updates + deletes + truncates); 0 only sets up.
    pub count: u64,
    /// Changes per second; 0 writes as fast as the database takes them.
    pub rate: u64,
    /// Same seed and same starting table: same changes (the table's existing keys are mixed into
    /// the seed, so running again on a filled table inserts new keys).
    pub seed: u64,
    /// Percentages of inserts, updates and deletes.
    pub mix: Mix,
    /// Updates go only to the table's first this many keys (hot keys); `None`: to any row.
    pub hot_keys: Option<usize>,
    /// Truncate the table once, after this many changes (the truncate counts as one change).
    pub truncate_after: Option<u64>,
    /// Changes per source transaction (at least 1).
    pub batch: u64,
}

impl Default for LoadgenArgs {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:15432/app".into(),
            table: "transactions".into(),
            drop: false,
            setup: false,
            count: 10_000,
            rate: 0,
            seed: 42,
            mix: Mix::default(),
            hot_keys: None,
            truncate_after: None,
            batch: 100,
        }
    }
}

/// Percentages of inserts, updates and deletes; they add up to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub inserts: u32,
    pub updates: u32,
    pub deletes: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            inserts: 60,
            updates: 30,
            deletes: 10,
        }
    }
}

/// Parses `inserts,updates,deletes`, e.g. `60,30,10`.
pub fn parse_mix(text: &str) -> Result<Mix, String> {
    let parts: Vec<u32> = text
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<u32>()
                .map_err(|_| format!("{:?} is not a whole number", p.trim()))
        })
        .collect::<Result<_, _>>()?;
    match parts.as_slice() {
        [i, u, d] if i + u + d == 100 => Ok(Mix {
            inserts: *i,
            updates: *u,
            deletes: *d,
        }),
        [i, u, d] => Err(format!(
            "the three percentages must add up to 100, not {}",
            i + u + d
        )),
        _ => Err("expected three percentages: inserts,updates,deletes (e.g. 60,30,10)".into()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("cannot connect to the source at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot connect to the source at {url}: no answer within {secs} s")]
    ConnectTimeout { url: String, secs: u64 },
    #[error("{doing}: {source}")]
    Sql { doing: String, source: sqlx::Error },
    #[error("table public.{0} does not exist: run with --setup first")]
    NoTable(String),
    #[error("--batch must be at least 1")]
    Batch,
    #[error(
        "{what} affected {affected} rows, expected {expected}: is something else writing to the table?"
    )]
    LostRows {
        what: &'static str,
        expected: u64,
        affected: u64,
    },
}

fn sql_error(doing: impl Into<String>) -> impl FnOnce(sqlx::Error) -> LoadgenError {
    let doing = doing.into();
    move |source| LoadgenError::Sql { doing, source }
}

/// What a run wrote.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadgenSummary {
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub truncates: u64,
    pub elapsed: Duration,
}

impl LoadgenSummary {
    pub fn changes(&self) -> u64 {
        self.inserts + self.updates + self.deletes + self.truncates
    }

    pub fn per_second(&self) -> f64 {
        self.changes() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for LoadgenSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loadgen: {} changes (inserts {}, updates {}, deletes {}, truncates {}) in {:.1} s, {:.0} changes/s",
            self.changes(),
            self.inserts,
            self.updates,
            self.deletes,
            self.truncates,
            self.elapsed.as_secs_f64(),
            self.per_second()
        )
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn run(args: &LoadgenArgs) -> Result<LoadgenSummary, LoadgenError> {
    if args.batch == 0 {
        return Err(LoadgenError::Batch);
    }
    // One plain connection: the writes are sequential, and unlike a pool it reports a refused
    // connection at once instead of retrying until an acquire timeout.
    let url = mask_url(&args.url);
    let mut conn =
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(&args.url)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(source)) => return Err(LoadgenError::Connect { url, source }),
            Err(_) => {
                return Err(LoadgenError::ConnectTimeout {
                    url,
                    secs: CONNECT_TIMEOUT.as_secs(),
                });
            }
        };
    let table = ddl::qualified(&args.table);

    if args.drop || args.setup {
        // One transaction, so a failed setup leaves nothing half made; the lock keeps concurrent
        // setups (parallel tests) from replacing the shared trigger functions at the same time.
        let mut tx = conn.begin().await.map_err(sql_error("begin the setup"))?;
        exec(&mut tx, SETUP_LOCK_SQL, "wait for other setups").await?;
        // IF [NOT] EXISTS would otherwise log a "skipping" notice per statement on every run.
        exec(
            &mut tx,
            "SET LOCAL client_min_messages = warning",
            "quiet the setup",
        )
        .await?;
        if args.drop {
            exec(&mut tx, &drop_table_sql(&args.table), "drop the table").await?;
        }
        if args.setup {
            for stmt in create_table_sql(&args.table) {
                exec(&mut tx, &stmt, "set up the seed table").await?;
            }
        }
        tx.commit().await.map_err(sql_error("commit the setup"))?;
        tracing::info!(table = %table, drop = args.drop, setup = args.setup, "loadgen: table ready");
    }
    if args.count == 0 {
        return Ok(LoadgenSummary::default());
    }

    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&table)
        .fetch_one(&mut conn)
        .await
        .map_err(sql_error("look up the table"))?;
    if !exists {
        return Err(LoadgenError::NoTable(args.table.clone()));
    }
    // Byte order, not the database's collation, so the same rows give the same key list, and
    // with it the same updates and deletes, on any server.
    let live: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT transaction_id FROM {table} ORDER BY transaction_id COLLATE \"C\""
    )))
    .fetch_all(&mut conn)
    .await
    .map_err(sql_error("read the existing keys"))?;
    tracing::info!(table = %table, existing_rows = live.len(), count = args.count, "loadgen: writing");

    let statements = write::Statements::new(&table);
    let mut generator = Generator::new(args.seed, args.mix, live).with_hot_keys(args.hot_keys);
    let batch = batch_size(args.batch, args.rate);
    let mut summary = LoadgenSummary::default();
    let started = Instant::now();
    let mut written = 0u64;
    let mut next_report = started + Duration::from_secs(5);
    let mut changes = Vec::with_capacity(batch as usize);
    while written < args.count {
        changes.clear();
        let mut truncate = false;
        while written + (changes.len() as u64) < args.count && (changes.len() as u64) < batch {
            if args.truncate_after == Some(written + changes.len() as u64) {
                // The truncate gets a transaction of its own, so it is not mixed with rows.
                truncate = true;
                break;
            }
            changes.push(generator.next_change());
        }
        if truncate && changes.is_empty() {
            changes.push(generator.truncate());
        }
        write::write_batch(&mut conn, &statements, &changes, &mut summary).await?;
        written += changes.len() as u64;
        if args.rate > 0 {
            // Pace whole batches against the start, so the rate holds on average and a slow
            // batch is caught up rather than lost.
            let due = started + Duration::from_secs_f64(written as f64 / args.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(5);
            tracing::info!(
                written,
                of = args.count,
                live_rows = generator.live_rows(),
                per_second = written as f64 / started.elapsed().as_secs_f64(),
                "loadgen progress"
            );
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// At low rates a full batch would be one burst every few seconds; smaller transactions keep
/// roughly ten a second so the stream looks steady.
fn batch_size(batch: u64, rate: u64) -> u64 {
    if rate == 0 {
        batch
    } else {
        batch.min((rate / 10).max(1))
    }
}

async fn exec(conn: &mut PgConnection, stmt: &str, doing: &str) -> Result<(), LoadgenError> {
    sqlx::raw_sql(AssertSqlSafe(stmt.to_string()))
        .execute(conn)
        .await
        .map_err(sql_error(doing))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn mix_parses_and_checks_the_sum() {
        assert_eq!(parse_mix("60,30,10").unwrap(), Mix::default());
        assert_eq!(
            parse_mix(" 100 , 0 ,0").unwrap(),
            Mix {
                inserts: 100,
                updates: 0,
                deletes: 0
            }
        );
        assert!(
            parse_mix("60,30,20")
                .unwrap_err()
                .contains("add up to 100, not 110")
        );
        assert!(parse_mix("a,b,c").unwrap_err().contains("\"a\""));
        assert!(parse_mix("-1,50,51").is_err());
        assert!(parse_mix("100").unwrap_err().contains("three"));
        assert!(parse_mix("50,25,25,0").is_err());
    }

    #[test]
    fn summary_prints_one_line_with_every_count() {
        let s = LoadgenSummary {
            inserts: 6,
            updates: 3,
            deletes: 1,
            truncates: 1,
            elapsed: Duration::from_millis(500),
        };
        let line = s.to_string();
        assert_eq!(
            line,
            "loadgen: 11 changes (inserts 6, updates 3, deletes 1, truncates 1) in 0.5 s, 22 changes/s"
        );
        assert!(!line.contains('\n'));
        assert!(
            LoadgenSummary::default()
                .to_string()
                .contains("0 changes/s")
        );
    }

    #[test]
    fn low_rates_get_smaller_batches() {
        assert_eq!(batch_size(100, 0), 100);
        assert_eq!(batch_size(100, 4000), 100);
        assert_eq!(batch_size(100, 200), 20);
        assert_eq!(batch_size(100, 3), 1);
    }
}
