//! `ripple verify`: proves each replica holds what the source holds. Per table, both sides are
//! streamed in the same primary-key order and merge-joined, so memory stays flat at any table size.

mod compare;
mod postgres;
mod report;
#[cfg(test)]
mod tests;

pub use report::{AbsentTable, Samples, SkippedSink, TableReport, VerifyReport};

use crate::config::Config;
use compare::{RowStore, TableName};
use postgres::{PgAddress, PgStore};
use std::time::Instant;

/// `ripple verify` options.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct VerifyArgs {
    /// A source table to check, as SCHEMA.TABLE (repeatable; a bare TABLE means public.TABLE).
    /// Names are exact and case-sensitive; double-quote a part that contains a dot. Default: every
    /// source table the replica also has, outside the system schemas and schemas named `_ripple*`.
    #[arg(long = "table", value_name = "SCHEMA.TABLE")]
    pub tables: Vec<String>,
    /// Check only this sink (repeatable). Default: every sink verify can read back (type = "postgres").
    #[arg(long = "sink", value_name = "NAME")]
    pub sinks: Vec<String>,
    /// Sample keys shown for each kind of difference (missing, extra, different).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub samples: usize,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Why verify could not produce a report. Differences between the stores are not errors: they are
/// what the report is for.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "`source.url` is not set: verify needs the source database (add a [source] section with url = \"postgres://user@host:port/db\")"
    )]
    NoSource,
    #[error(
        "no sink to verify: verify reads back sinks with type = \"postgres\", and the config has none{}",
        if .skipped.is_empty() { String::new() } else { format!(" (not readable yet: {})", .skipped.join(", ")) }
    )]
    NoSinks { skipped: Vec<String> },
    #[error("--sink {name:?} is not a configured sink (configured: {known})")]
    UnknownSink { name: String, known: String },
    #[error(
        "--sink {name:?} has type = {kind:?}, which verify cannot read back yet (it reads type = \"postgres\")"
    )]
    UnsupportedSink { name: String, kind: String },
    #[error("config key `{key}`: {message}")]
    Config { key: String, message: String },
    #[error("cannot connect to {what} at {url} (config key `{key}`): {error}")]
    Connect {
        what: String,
        key: String,
        /// With the password masked.
        url: String,
        error: sqlx::Error,
    },
    #[error("{what}: {error}")]
    Query { what: String, error: sqlx::Error },
    #[error("--table {arg:?}: {message}")]
    TableArg { arg: String, message: String },
    #[error(
        "--table {table}: the source database at {url} has no such table (names are case-sensitive)"
    )]
    NoSuchTable { table: String, url: String },
    #[error(
        "rows of {table} from {store} did not arrive in key order ({detail}), so a merge would miscount; verify stopped"
    )]
    OutOfOrder {
        table: String,
        store: String,
        detail: String,
    },
}

/// The one identifier-quoting helper, shared with the postgres sink.
pub use ripple_sink_postgres::ident as quote_ident;

/// A `[sinks.<name>]` verify reads back.
struct PostgresSink {
    name: String,
    url: String,
    password_env: Option<String>,
    /// `schema`: when set, every table lives in this schema of the replica.
    schema: Option<String>,
}

/// Compares every selected source table with every selected sink.
pub async fn run(config: &Config, args: &VerifyArgs) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let source_config = config
        .source
        .as_ref()
        .filter(|s| !s.url.trim().is_empty())
        .ok_or(VerifyError::NoSource)?;
    let (sinks, skipped_sinks) = select_sinks(config, args)?;
    let requested = args
        .tables
        .iter()
        .map(|arg| {
            TableName::parse_arg(arg).map_err(|message| VerifyError::TableArg {
                arg: arg.clone(),
                message,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let source = PgStore::connect(PgAddress {
        what: "the source database".into(),
        key: "source".into(),
        url: &source_config.url,
        password_env: source_config.password_env.as_deref(),
    })
    .await?;
    let names = if requested.is_empty() {
        source.list_tables().await?
    } else {
        requested.clone()
    };
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        match source.describe(&name).await? {
            Some(table) => tables.push(table),
            None if !requested.is_empty() => {
                return Err(VerifyError::NoSuchTable {
                    table: name.to_string(),
                    url: source.url().to_string(),
                });
            }
            // Dropped between listing and describing: nothing to verify.
            None => {}
        }
    }

    let mut report = VerifyReport {
        json: args.json,
        skipped_sinks,
        ..Default::default()
    };
    for sink in &sinks {
        let replica = PgStore::connect(PgAddress {
            what: format!("sink {:?}", sink.name),
            key: format!("sinks.{}", sink.name),
            url: &sink.url,
            password_env: sink.password_env.as_deref(),
        })
        .await?;
        for table in &tables {
            let target = TableName {
                schema: sink
                    .schema
                    .clone()
                    .unwrap_or_else(|| table.name.schema.clone()),
                name: table.name.name.clone(),
            };
            let target_columns = replica.columns(&target).await?;
            if target_columns.is_none() && requested.is_empty() {
                report.absent_tables.push(AbsentTable {
                    sink: sink.name.clone(),
                    table: table.name.to_string(),
                    target: target.to_string(),
                });
                continue;
            }
            let table_started = Instant::now();
            tracing::info!(sink = %sink.name, table = %table.name, "verifying");
            let mut result = compare::compare_table(
                &source,
                &replica,
                table,
                &target,
                target_columns,
                args.samples,
            )
            .await?;
            result.sink = sink.name.clone();
            result.elapsed_ms = table_started.elapsed().as_millis() as u64;
            tracing::info!(
                sink = %sink.name,
                table = %table.name,
                equal = result.equal(),
                rows = result.source_rows,
                elapsed_ms = result.elapsed_ms,
                "verified"
            );
            report.tables.push(result);
        }
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The postgres sinks to verify, and the other sinks left out (kinds verify cannot read back yet).
fn select_sinks(
    config: &Config,
    args: &VerifyArgs,
) -> Result<(Vec<PostgresSink>, Vec<SkippedSink>), VerifyError> {
    for name in &args.sinks {
        if !config.sinks.contains_key(name) {
            let known: Vec<&str> = config.sinks.keys().map(String::as_str).collect();
            return Err(VerifyError::UnknownSink {
                name: name.clone(),
                known: known.join(", "),
            });
        }
    }
    let mut sinks = Vec::new();
    let mut skipped = Vec::new();
    for (name, section) in &config.sinks {
        if !args.sinks.is_empty() && !args.sinks.contains(name) {
            continue;
        }
        let key = |k: &str| format!("sinks.{name}.{k}");
        let kind = section.get("type").and_then(|v| v.as_str()).unwrap_or("");
        if kind != "postgres" {
            if args.sinks.contains(name) {
                return Err(VerifyError::UnsupportedSink {
                    name: name.clone(),
                    kind: kind.into(),
                });
            }
            skipped.push(SkippedSink {
                sink: name.clone(),
                kind: kind.into(),
            });
            continue;
        }
        let text = |k: &str| -> Result<Option<String>, VerifyError> {
            match section.get(k) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(VerifyError::Config {
                    key: key(k),
                    message: "must be a string".into(),
                }),
            }
        };
        let url = text("url")?.ok_or_else(|| VerifyError::Config {
            key: key("url"),
            message: "is not set: verify needs the replica's postgres://user@host:port/db".into(),
        })?;
        let schema = text("schema")?;
        if schema.as_deref() == Some("") {
            return Err(VerifyError::Config {
                key: key("schema"),
                message: "cannot be empty: leave it out to keep each table's source schema".into(),
            });
        }
        sinks.push(PostgresSink {
            name: name.clone(),
            url,
            password_env: text("password_env")?,
            schema,
        });
    }
    if sinks.is_empty() {
        return Err(VerifyError::NoSinks {
            skipped: skipped
                .iter()
                .map(|s| format!("{} (type {:?})", s.sink, s.kind))
                .collect(),
        });
    }
    Ok((sinks, skipped))
}
