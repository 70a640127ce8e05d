//! `ripple verify`: proves each replica holds what the source holds. Per table, both sides are
//! streamed in the same primary-key order and merge-joined, so memory stays flat at any table size.

pub mod background;
mod canonical;
mod compare;
mod live;
mod postgres;
mod readback;
mod repair;
mod report;
mod segments;
#[cfg(test)]
mod tests;

pub use report::{
    AbsentTable, LiveReport, RepairReport, Samples, SkippedSink, TableReport, VerifyReport,
};

use crate::config::Config;
use crate::route::{RouteOptions, Router};
use compare::{ColumnMap, Keep, RowStore, SourceTable, TableName};
use postgres::{PgAddress, PgStore};
use ripple_sink::{Sink, TableRef, Target};
use std::sync::Arc;
use std::time::Instant;

/// `ripple verify` options (the CLI's `--table`, `--sink`, `--samples`, `--json`).
#[derive(Debug, Clone)]
pub struct VerifyArgs {
    /// Source tables to check, as SCHEMA.TABLE (a bare TABLE means public.TABLE). Names are exact
    /// and case-sensitive; double-quote a part that contains a dot. Empty: every source table the
    /// replica also has, outside the system schemas and schemas named `_ripple*`.
    pub tables: Vec<String>,
    /// Only these sinks; empty: every sink verify can read back.
    pub sinks: Vec<String>,
    /// Sample keys shown for each kind of difference (missing, extra, different).
    pub samples: usize,
    /// The report as JSON instead of text.
    pub json: bool,
    /// Memory one comparison may use for what it holds (chunks of rows, the ids it reads again),
    /// in MiB, whatever the table's size.
    pub max_memory_mb: usize,
    /// Rewrite the rows found different from a fresh read of the source, through each sink's
    /// versioned write path, then compare again.
    pub repair: bool,
    /// Live verification: read each difference again (after 1 s, then doubling) until it agrees
    /// or this much time is spent, and report only what still differs.
    pub settle: Option<std::time::Duration>,
    /// Without `tables`: only the tables a route is known to give each sink (by their topics),
    /// not every table the sink happens to hold (background verification).
    pub routed_only: bool,
    /// Compare nothing: write every source row into the sinks (`ripple backfill`), each just
    /// after the version the sink holds for it.
    pub backfill: bool,
}

impl Default for VerifyArgs {
    fn default() -> Self {
        Self {
            tables: Vec::new(),
            sinks: Vec::new(),
            samples: 5,
            json: false,
            max_memory_mb: 128,
            repair: false,
            settle: None,
            routed_only: false,
            backfill: false,
        }
    }
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
        "no sink to verify: the config has no sink verify can read back (postgres, redis, elasticsearch){}",
        if .skipped.is_empty() { String::new() } else { format!(" (not readable yet: {})", .skipped.join(", ")) }
    )]
    NoSinks { skipped: Vec<String> },
    #[error("--sink {name:?} is not a configured sink (configured: {known})")]
    UnknownSink { name: String, known: String },
    #[error(
        "--sink {name:?} has type = {kind:?}, which verify cannot read back (it reads postgres, redis and elasticsearch sinks)"
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
    #[error(
        "sink {sink:?} cannot say which versions it holds, so --repair cannot write to it safely"
    )]
    CannotRepair { sink: String },
    /// The store's own words come as the source (printed after this by `{:#}`).
    #[error("reading {table} back from a sink")]
    Sink {
        table: String,
        #[source]
        error: ripple_sink::SinkError,
    },
    #[error("{table}: the route's column options do not fit it")]
    Shape {
        table: String,
        #[source]
        error: crate::route::ShapeError,
    },
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

/// An SQL identifier in double quotes (a quote inside doubled), as PostgreSQL reads it.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A sink verify can read back.
enum VerifySink {
    /// A replica database (`Sink::postgres_replica`): compared by a merge-join of both sides in
    /// key order.
    Postgres { name: String, sink: Arc<dyn Sink> },
    /// Any other sink that implements `ReadBack`.
    ReadBack { name: String, sink: Arc<dyn Sink> },
}

impl VerifySink {
    fn name(&self) -> &str {
        match self {
            VerifySink::Postgres { name, .. } | VerifySink::ReadBack { name, .. } => name,
        }
    }

    fn sink(&self) -> &dyn Sink {
        match self {
            VerifySink::Postgres { sink, .. } | VerifySink::ReadBack { sink, .. } => sink.as_ref(),
        }
    }
}

/// Compares every selected source table with every selected sink.
pub async fn run(config: &Config, args: &VerifyArgs) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let source_config = config
        .source
        .as_ref()
        .filter(|s| !s.url.trim().is_empty())
        .ok_or(VerifyError::NoSource)?;
    let (sinks, skipped_sinks) = select_sinks(config, args).await?;
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
        options: source_config.connect_options(),
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

    let sink_names: Vec<String> = config.sinks.keys().cloned().collect();
    let mut router = Router::new(config, &sink_names).map_err(|e| VerifyError::Config {
        key: e.key,
        message: e.message,
    })?;
    let mut report = VerifyReport {
        json: args.json,
        skipped_sinks,
        ..Default::default()
    };
    // Source rows read, over every comparison, on a terminal only (and never with --json); the
    // length is the planner's estimate, so the bar and its ETA are close, not exact.
    let mut estimate = 0u64;
    for table in &tables {
        estimate += source.estimate_rows(&table.name).await?;
    }
    let progress = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        crate::progress::bar(
            estimate * sinks.len() as u64,
            "{spinner} verify [{bar:30}] {human_pos}/~{human_len} rows, {elapsed}, ETA {eta}: {msg}",
        )
    };
    let budget = readback::Budget {
        bytes: args.max_memory_mb.max(1) << 20,
    };
    progress.enable_steady_tick(std::time::Duration::from_millis(200));
    let fixes = if args.repair || args.settle.is_some() {
        budget.bytes / 4 / FIX_BYTES
    } else {
        0
    };
    for sink in &sinks {
        let sink_id = sink_names.iter().position(|n| n == sink.name());
        let replica = match sink {
            VerifySink::Postgres { name, sink } => {
                let replica = sink.postgres_replica().expect("selected as a replica");
                let address = replica.address();
                Some(
                    PgStore::connect(PgAddress {
                        what: format!("sink {name:?}"),
                        key: replica.key_prefix().to_string(),
                        url: &address.url,
                        options: crate::registry::postgres_options(replica.key_prefix(), address),
                    })
                    .await?,
                )
            }
            VerifySink::ReadBack { .. } => None,
        };
        for table in &tables {
            progress.set_message(format!("{} {}", sink.name(), table.name));
            let source_ref = TableRef::new(&table.name.schema, &table.name.name);
            // The route that brings this table to this sink, when the table's topic is known; a
            // sink no route gives the table to has nothing to hold.
            let route = match topic_of(config, &table.name) {
                Some(topic) => {
                    let assigned = router.sinks_for(&Arc::from(topic.as_str()));
                    match assigned.iter().find(|a| Some(a.sink) == sink_id) {
                        Some(a) => Some(a.options.clone()),
                        None => continue,
                    }
                }
                None => None,
            };
            // A backfill writes only what a route is known to give the sink, or a table named.
            if (args.backfill || args.routed_only) && route.is_none() && requested.is_empty() {
                continue;
            }
            let options = route.unwrap_or_default();
            let comparison = Comparison {
                source: &source,
                sink,
                replica: replica.as_ref(),
                table,
                target: Target::of(&source_ref).with_template(options.target.as_deref()),
                options: &options,
                budget,
            };
            let keep = Keep {
                samples: args.samples,
                fixes,
                progress: &progress,
                bisection: Default::default(),
            };
            let table_started = Instant::now();
            if args.backfill {
                tracing::info!(sink = %sink.name(), table = %table.name, "backfilling");
                let written = repair::backfill(
                    &source,
                    sink.sink(),
                    comparison.target,
                    table,
                    &options,
                    &progress,
                )
                .await?;
                report.tables.push(TableReport {
                    sink: sink.name().to_string(),
                    table: table.name.to_string(),
                    target: table.name.to_string(),
                    key_columns: table.key.clone(),
                    source_rows: written.found,
                    elapsed_ms: table_started.elapsed().as_millis() as u64,
                    backfill: Some(written),
                    ..Default::default()
                });
                continue;
            }
            let mut result = match comparison.run(keep).await? {
                Compared::Absent(target) if requested.is_empty() => {
                    report.absent_tables.push(AbsentTable {
                        sink: sink.name().to_string(),
                        table: table.name.to_string(),
                        target,
                    });
                    continue;
                }
                Compared::Absent(_) => comparison.run_anyway(keep).await?,
                Compared::Done(result) => *result,
            };
            if let Some(within) = args.settle
                && !result.equal()
                && result.problem.is_none()
                && result.missing_columns.is_empty()
                && !table.key.is_empty()
            {
                let comparison = &comparison;
                live::settle(&mut result, within, args.samples, |fixes| async move {
                    comparison.recheck(&fixes).await
                })
                .await?;
            }
            if args.repair && !result.equal() {
                tracing::info!(sink = %sink.name(), table = %table.name, rows = result.fixes.len(), "repairing");
                let found = result.missing + result.extra + result.different;
                let mut repaired = repair::repair(
                    &source,
                    sink.sink(),
                    comparison.target,
                    table,
                    &options,
                    &result.fixes,
                )
                .await?;
                repaired.found = found;
                if result.fixes_incomplete {
                    repaired.problems.push(format!(
                        "more rows differed than --max-memory-mb holds the keys of ({}): run the repair again",
                        result.fixes.len()
                    ));
                }
                // The report is the comparison after the repair: what still differs.
                progress.inc_length(result.source_rows);
                result = match comparison.run(Keep { fixes: 0, ..keep }).await? {
                    Compared::Done(r) => *r,
                    Compared::Absent(_) => comparison.run_anyway(keep).await?,
                };
                result.repair = Some(repaired);
            }
            result.fixes = Vec::new();
            result.sink = sink.name().to_string();
            result.elapsed_ms = table_started.elapsed().as_millis() as u64;
            tracing::info!(
                sink = %sink.name(),
                table = %table.name,
                equal = result.equal(),
                rows = result.source_rows,
                elapsed_ms = result.elapsed_ms,
                "verified"
            );
            report.tables.push(result);
        }
    }
    progress.finish_and_clear();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report.peak_rss_mb = peak_rss_mb();
    Ok(report)
}

/// What a repair keeps per differing row (its key's texts, the id it was found at, the vector).
const FIX_BYTES: usize = 128;

/// One source table against one sink.
struct Comparison<'a> {
    source: &'a PgStore,
    sink: &'a VerifySink,
    /// The replica's database, for a replica sink.
    replica: Option<&'a PgStore>,
    table: &'a SourceTable,
    target: Target<'a>,
    options: &'a RouteOptions,
    budget: readback::Budget,
}

/// A comparison's outcome: the report, or that the sink has no such table (named as the sink
/// names it).
enum Compared {
    Done(Box<TableReport>),
    Absent(String),
}

impl Comparison<'_> {
    /// Reads the rows `fixes` name again on both sides (live verification).
    async fn recheck(&self, fixes: &[report::Fix]) -> Result<Vec<live::State>, VerifyError> {
        match (self.sink, self.replica) {
            (VerifySink::Postgres { sink, .. }, Some(replica)) => {
                let target = replica_table(sink.as_ref(), self.target);
                let columns = column_map(self.table, self.options)?;
                live::recheck_replica(self.source, replica, self.table, &target, &columns, fixes)
                    .await
            }
            (VerifySink::ReadBack { sink, .. }, _) => {
                let read_back = sink.read_back().expect("selected for read-back");
                readback::recheck(
                    self.source,
                    read_back,
                    self.target,
                    self.table,
                    self.options,
                    fixes,
                )
                .await
            }
            (VerifySink::Postgres { .. }, None) => unreachable!("connected before"),
        }
    }

    async fn run(&self, keep: Keep<'_>) -> Result<Compared, VerifyError> {
        self.compare(keep, false).await
    }

    /// Compares even when the sink lacks the table (a table asked for by name): every row missing.
    async fn run_anyway(&self, keep: Keep<'_>) -> Result<TableReport, VerifyError> {
        match self.compare(keep, true).await? {
            Compared::Done(r) => Ok(*r),
            Compared::Absent(_) => unreachable!("compared anyway"),
        }
    }

    async fn compare(&self, keep: Keep<'_>, anyway: bool) -> Result<Compared, VerifyError> {
        let table = self.table;
        match (self.sink, self.replica) {
            (VerifySink::Postgres { sink, .. }, Some(replica)) => {
                let target_name = replica_table(sink.as_ref(), self.target);
                let target_columns = replica.columns(&target_name).await?;
                if target_columns.is_none() && !anyway {
                    return Ok(Compared::Absent(target_name.to_string()));
                }
                tracing::info!(sink = %self.sink.name(), table = %table.name, "verifying");
                compare::compare_table(
                    self.source,
                    replica,
                    table,
                    &target_name,
                    target_columns,
                    &column_map(table, self.options)?,
                    keep,
                )
                .await
                .map(|r| Compared::Done(Box::new(r)))
            }
            (VerifySink::ReadBack { sink, .. }, _) => {
                let read_back = sink.read_back().expect("selected for read-back");
                let has =
                    read_back
                        .has_table(self.target)
                        .await
                        .map_err(|error| VerifyError::Sink {
                            table: table.name.to_string(),
                            error,
                        })?;
                let target_text = read_back.target_name(self.target);
                if !has && !anyway {
                    return Ok(Compared::Absent(target_text));
                }
                tracing::info!(sink = %self.sink.name(), table = %table.name, "verifying");
                let mut r = readback::compare_table(
                    self.source,
                    read_back,
                    self.target,
                    table,
                    self.options,
                    keep,
                    self.budget,
                )
                .await?;
                r.target = target_text;
                Ok(Compared::Done(Box::new(r)))
            }
            (VerifySink::Postgres { .. }, None) => unreachable!("connected before"),
        }
    }
}

/// Where a replica sink keeps the table `target` names.
fn replica_table(sink: &dyn Sink, target: Target<'_>) -> TableName {
    let into = sink
        .postgres_replica()
        .expect("selected as a replica")
        .table_for(target);
    TableName {
        schema: into.namespace,
        name: into.name,
    }
}

/// The most memory this process has held (Linux's VmHWM), in MiB; `None` where it cannot be read.
fn peak_rss_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// The topic Debezium writes `table` to: from `source.topic_prefix`, else the one exact topic
/// among the routes' and `kafka.topics` that ends in `.<schema>.<table>`.
fn topic_of(config: &Config, table: &TableName) -> Option<String> {
    let suffix = format!(".{}.{}", table.schema, table.name);
    if let Some(prefix) = config
        .source
        .as_ref()
        .and_then(|s| s.topic_prefix.as_deref())
    {
        return Some(format!("{prefix}{suffix}"));
    }
    config
        .routes
        .iter()
        .flat_map(|r| r.topics.iter())
        .chain(&config.kafka.topics)
        .find(|t| !t.starts_with('^') && t.ends_with(&suffix))
        .cloned()
}

/// The source columns a route writes to a replica table, under the names it gives them.
fn column_map(table: &SourceTable, options: &RouteOptions) -> Result<ColumnMap, VerifyError> {
    let schema = Arc::new(readback::table_schema(table));
    let shape = options.shape(&schema).map_err(|error| VerifyError::Shape {
        table: table.name.to_string(),
        error,
    })?;
    if shape.keep.len() == table.columns.len()
        && shape
            .schema
            .columns
            .iter()
            .zip(&table.columns)
            .all(|(a, b)| a.name == b.name)
    {
        return Ok(ColumnMap::identity(table));
    }
    Ok(ColumnMap {
        pairs: shape
            .keep
            .iter()
            .zip(&shape.schema.columns)
            .map(|(&i, c)| (table.columns[i].name.clone(), c.name.clone()))
            .collect(),
    })
}

/// The sinks to verify, and the other sinks left out (kinds verify cannot read back).
async fn select_sinks(
    config: &Config,
    args: &VerifyArgs,
) -> Result<(Vec<VerifySink>, Vec<SkippedSink>), VerifyError> {
    for name in &args.sinks {
        if !config.sinks.contains_key(name) {
            let known: Vec<&str> = config.sinks.keys().map(String::as_str).collect();
            return Err(VerifyError::UnknownSink {
                name: name.clone(),
                known: known.join(", "),
            });
        }
    }
    let factories = crate::registry::builtin();
    let mut sinks = Vec::new();
    let mut skipped = Vec::new();
    for (name, section) in &config.sinks {
        if !args.sinks.is_empty() && !args.sinks.contains(name) {
            continue;
        }
        let kind = section.get("type").and_then(|v| v.as_str()).unwrap_or("");
        if !args.sinks.contains(name) && !config.routes.iter().any(|r| r.sinks.contains(name)) {
            skipped.push(SkippedSink {
                sink: name.clone(),
                kind: kind.into(),
                reason: "no route sends it anything".into(),
            });
            continue;
        }
        let factory = factories.iter().find(|f| f.kind() == kind);
        let built = match factory {
            Some(f) => Some(
                f.build(name, &format!("sinks.{name}"), section.clone())
                    .await
                    .map_err(|e| VerifyError::Config {
                        key: e.key,
                        message: e.message,
                    })?,
            ),
            None => None,
        };
        match built {
            Some(sink) if sink.postgres_replica().is_some() => {
                sinks.push(VerifySink::Postgres {
                    name: name.clone(),
                    sink,
                });
            }
            Some(sink) if sink.read_back().is_some() => {
                sinks.push(VerifySink::ReadBack {
                    name: name.clone(),
                    sink,
                });
            }
            _ if args.sinks.contains(name) => {
                return Err(VerifyError::UnsupportedSink {
                    name: name.clone(),
                    kind: kind.into(),
                });
            }
            _ => skipped.push(SkippedSink {
                sink: name.clone(),
                kind: kind.into(),
                reason: format!("verify cannot read back type = {kind:?}"),
            }),
        }
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
