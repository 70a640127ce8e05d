//! `ripple verify`: proves each sink holds what the source holds. For every source table and every
//! replica, both sides are streamed in the same key order and merge-joined, comparing each row's
//! values in their text form, so memory stays flat however large the table.

mod postgres;

use crate::config::{Config, mask_url};
use serde::Serialize;
use std::fmt;

pub use ripple_sink_postgres::ident as quote_ident;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct VerifyArgs {
    /// A source table to check, as schema.table (repeatable). Default: every source table that
    /// the replica also has.
    #[arg(long = "table", value_name = "SCHEMA.TABLE")]
    pub tables: Vec<String>,
    /// Sample keys shown per kind of difference.
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("`source.url` is not set: verify needs to read the source database")]
    NoSource,
    #[error("no sink to verify: add a [sinks.<name>] with type = \"postgres\"")]
    NoSinks,
    #[error("config key `{key}`: {message}")]
    Config { key: String, message: String },
    #[error("cannot connect to {what} at {url}: {source}")]
    Connect {
        what: String,
        url: String,
        source: sqlx::Error,
    },
    #[error("{what}: {source}")]
    Query { what: String, source: sqlx::Error },
    #[error("--table {0:?} is not schema.table")]
    TableName(String),
}

/// The outcome for one table in one sink.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableReport {
    pub sink: String,
    pub table: String,
    pub target: String,
    pub source_rows: u64,
    pub sink_rows: u64,
    pub matching: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// Source columns the sink's table lacks (every row then differs).
    pub missing_columns: Vec<String>,
    /// Set when the sink has no such table at all.
    pub missing_table: bool,
    pub sample_missing: Vec<String>,
    pub sample_extra: Vec<String>,
    pub sample_different: Vec<String>,
    pub elapsed_ms: u64,
}

impl TableReport {
    pub fn equal(&self) -> bool {
        !self.missing_table
            && self.missing_columns.is_empty()
            && self.missing == 0
            && self.extra == 0
            && self.different == 0
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub tables: Vec<TableReport>,
    #[serde(skip)]
    pub json: bool,
}

impl VerifyReport {
    pub fn all_equal(&self) -> bool {
        !self.tables.is_empty() && self.tables.iter().all(TableReport::equal)
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.json {
            return writeln!(
                f,
                "{}",
                serde_json::to_string_pretty(self).map_err(|_| fmt::Error)?
            );
        }
        if self.tables.is_empty() {
            return writeln!(
                f,
                "verify: no table to compare (none in both the source and the sinks)"
            );
        }
        for t in &self.tables {
            let verdict = if t.equal() { "EQUAL" } else { "DIFFERENT" };
            writeln!(
                f,
                "{verdict}  {} -> {} {}  ({:.1} s)",
                t.table,
                t.sink,
                t.target,
                t.elapsed_ms as f64 / 1000.0
            )?;
            if t.missing_table {
                writeln!(
                    f,
                    "    the sink has no table {}: all {} source rows are missing",
                    t.target, t.source_rows
                )?;
                continue;
            }
            if !t.missing_columns.is_empty() {
                writeln!(
                    f,
                    "    the sink's table lacks columns: {}",
                    t.missing_columns.join(", ")
                )?;
                continue;
            }
            writeln!(
                f,
                "    source {} rows, sink {} rows: matching {}, missing {}, extra {}, different {}",
                t.source_rows, t.sink_rows, t.matching, t.missing, t.extra, t.different
            )?;
            for (label, keys) in [
                ("missing", &t.sample_missing),
                ("extra", &t.sample_extra),
                ("different", &t.sample_different),
            ] {
                if !keys.is_empty() {
                    writeln!(f, "    {label}, e.g.: {}", keys.join("; "))?;
                }
            }
        }
        let equal = self.tables.iter().filter(|t| t.equal()).count();
        writeln!(
            f,
            "verify: {equal} of {} table comparisons equal",
            self.tables.len()
        )
    }
}

pub async fn run(config: &Config, args: &VerifyArgs) -> Result<VerifyReport, VerifyError> {
    let source = config.source.as_ref().ok_or(VerifyError::NoSource)?;
    let source_db = postgres::Database::connect(
        "the source",
        &source.url,
        source.password_env.as_deref(),
        "source",
    )
    .await?;
    let mut tables = Vec::new();
    for t in &args.tables {
        let (schema, name) = t
            .split_once('.')
            .ok_or_else(|| VerifyError::TableName(t.clone()))?;
        tables.push((schema.to_string(), name.to_string()));
    }
    let mut report = VerifyReport {
        tables: Vec::new(),
        json: args.json,
    };
    let mut sinks = 0;
    for (name, section) in &config.sinks {
        if section.get("type").and_then(|v| v.as_str()) != Some("postgres") {
            continue;
        }
        sinks += 1;
        let key = format!("sinks.{name}");
        let text = |k: &str| section.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let url = text("url").ok_or_else(|| VerifyError::Config {
            key: format!("{key}.url"),
            message: "is missing".into(),
        })?;
        let replica = postgres::Database::connect(
            &format!("sink {name:?}"),
            &url,
            text("password_env").as_deref(),
            &key,
        )
        .await?;
        let target_schema = text("schema");
        let candidates = if tables.is_empty() {
            source_db.tables().await?
        } else {
            tables.clone()
        };
        for (schema, table) in candidates {
            let target = (
                target_schema.clone().unwrap_or_else(|| schema.clone()),
                table.clone(),
            );
            if args.tables.is_empty() && !replica.has_table(&target).await? {
                continue;
            }
            let started = std::time::Instant::now();
            let mut r = postgres::compare(
                &source_db,
                &replica,
                (&schema, &table),
                (&target.0, &target.1),
                args.samples,
            )
            .await?;
            r.sink = name.clone();
            r.elapsed_ms = started.elapsed().as_millis() as u64;
            report.tables.push(r);
        }
    }
    if sinks == 0 {
        return Err(VerifyError::NoSinks);
    }
    Ok(report)
}

fn masked(url: &str) -> String {
    mask_url(url)
}
